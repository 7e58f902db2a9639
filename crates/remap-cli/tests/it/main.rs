//! Integration tests of the `remap` binary: each module runs the built binary as a user would.

mod bench;
mod conform;
mod compact;
mod probe;
mod torture;
