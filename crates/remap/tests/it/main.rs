//! Integration tests for `remap`, against the real kernel.

mod child;
mod fault_around;
mod inspect;
mod move_thp_eexist;
mod mover;
mod pages;
mod pattern;
mod region;
mod server;
mod server_hardening;
