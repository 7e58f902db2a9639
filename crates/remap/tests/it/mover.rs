//! Tests of `remap::mover`.
