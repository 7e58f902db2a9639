//! Integration tests of the `remap` binary.

mod probe;
