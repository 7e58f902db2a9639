//! Integration tests of remap-compact against the real kernel (one binary, modules per area).
//!
//! Every scenario that could hang (a lost wake-up leaves a mutator blocked in a fault for ever)
//! or crash runs in a child process of this binary with a timeout ([`child`]).

mod child;
mod common;
mod cycles;
mod faults;
mod matrix;
