//! Cycles in a row on one heap.

pub(crate) fn ten_cycles_child(_p: &str, _m: &str) {}
