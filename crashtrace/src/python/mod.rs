//! CPython, read from outside the process.

pub mod linetable;
