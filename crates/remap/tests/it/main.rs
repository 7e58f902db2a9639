//! Integration tests for `remap`, against the real kernel.

mod inspect;
mod mover;
mod region;
mod server;
