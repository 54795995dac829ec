//! The lb agent: control path and operator commands.
