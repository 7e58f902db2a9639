//! The `remap bench` harness (in progress).
#![forbid(unsafe_code)]
