//! Kernel tests of the lb datapath live in `tests/`; they need root.
