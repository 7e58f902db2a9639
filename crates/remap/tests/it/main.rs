//! Integration tests for `remap`, against the real kernel.

mod child;
mod inspect;
mod mover;
mod region;
mod server;
