//! Fault round-trip benchmarks (in progress).

fn main() {}
