//! Integration tests of the `remap` binary: each module runs the built binary as a user would.

mod compact;
mod conform;
mod probe;
