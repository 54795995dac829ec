//! End-to-end tests of lb live in `tests/`; they need root.
