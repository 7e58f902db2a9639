//! Tests of `remap::server`.
