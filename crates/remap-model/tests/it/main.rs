//! Integration tests of the rmap / UFFDIO_MOVE model: one binary, a module per area.

mod explorer;
mod loom_memory_model;
mod shuttle_cross_check;
mod weak_memory;

use remap_model::{expected_table, Expected};

/// The expected-table row named `name`.
pub(crate) fn row(name: &str) -> Expected {
    expected_table()
        .into_iter()
        .find(|e| e.config.name == name)
        .unwrap_or_else(|| panic!("no configuration {name}"))
}
