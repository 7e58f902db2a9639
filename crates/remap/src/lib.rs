//! remap: moving memory with UFFDIO_MOVE, safely and fast.
//!
//! (Crate docs are completed as the modules land.)

#![deny(unsafe_code)]

pub mod inspect;
pub mod mover;
pub mod region;
pub mod server;
pub mod system;

pub use mover::{
    BatchError, BusyPolicy, HolePolicy, MoveError, MoveOptions, MoveReport, Mover, MoverStats,
    Wake,
};
