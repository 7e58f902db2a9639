//! remap-heap: a real compacting object heap on `remap-compact`.
//!
//! Objects live in a [`remap::Region`]: bump allocated, each with a two-word header (shape and
//! size, then an identity) followed by its reference fields and data words ([`object`]). Shapes
//! are described in a side table ([`shape`]), not in the heap. Mutator threads register a root
//! set and reach objects only through the heap's word accessors, never through Rust references
//! (the kernel moves the heap's pages underneath).
//!
//! A collection cycle marks the live objects in a stop-the-world pause ([`mark`]), computes the
//! sliding-compaction plan (per-chunk live counts and a prefix sum give every object's new
//! address, [`plan`]), and hands the engine a fill ([`fill`]) that builds each to-space page from
//! from-space with references rewritten, while the mutators keep running.
//!
//! # Example: the fill against a plain compaction
//!
//! ```
//! use std::sync::Arc;
//! use remap_heap::{fill::fill_page, mark::mark, object::*, plan::Plan, shape::*};
//!
//! let mut shapes = ShapeTable::new();
//! let pair = shapes.next_id();
//! shapes.add(Shape { name: "pair", refs: vec![Some(pair)], data: DataWords::Fixed(1) });
//! let shapes = Arc::new(shapes);
//! // Three pairs at words 8, 12, 16 (4 words each: header, identity, one reference, one value);
//! // the root reaches 16, which reaches 8; 12 is garbage.
//! let mut heap = vec![0u64; 512];
//! for (at, next, value) in [(8, 0, 7), (12, 0, 9), (16, 8, 11)] {
//!     heap[at..at + 4].copy_from_slice(&[header(pair, 4), at as u64, next, value]);
//! }
//! let marks = mark(&heap, &shapes, [16], 512, 20).unwrap();
//! let plan = Plan::new(marks, 4096, shapes);
//! assert_eq!(plan.forward(16), 12); // slid down over the dead pair
//! let mut page = vec![0u64; 512];
//! fill_page(&plan, 0, &heap, &mut page[..]);
//! assert_eq!(&page[12..16], &[header(pair, 4), 16, 8, 11]); // its reference still reaches 8
//! ```

#![deny(unsafe_code)]
// Heap words are addressed by `u64` in object fields and by `usize` in Rust; the crate is for
// 64-bit targets only (below), where the conversions are lossless. The `f64` casts are of
// non-negative, bounded measurements (window lengths, live fractions of a heap size).
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("remap-heap stores heap word indices in 64-bit fields: 64-bit targets only");

pub mod bench;
pub mod bitmap;
pub mod collector;
pub mod engine;
pub mod fill;
pub mod floor;
pub mod heap;
pub mod mark;
pub mod mmu;
pub mod object;
pub mod plan;
pub mod rss;
pub mod runner;
pub mod shape;
pub mod sweep;
pub mod verify;
pub mod workload;

#[cfg(test)]
mod tests;
