//! remap: moving memory with `UFFDIO_MOVE`, safely and fast.
//!
//! Linux's userfaultfd `UFFDIO_MOVE` (Linux 6.8) moves anonymous pages between address ranges by
//! rewriting page tables: no byte copied, no page allocated, no VMA split. This crate turns the
//! raw ioctl of the [`uffd`] binding into three things most users need:
//!
//! - [`Region`]: private anonymous memory that remap maps and owns, with THP and `MADV_DONTFORK`
//!   choices, and content access that never creates a Rust reference into memory the kernel
//!   rewrites ([`region`]); [`PageRange`], a bounds-checked page range of a region, with the safe
//!   userfaultfd operations on it (move, copy, zero, wake, register, whether pages are
//!   populated); plus page-state inspection through `/proc` ([`inspect`]) and pattern fill and
//!   verification for tests and benches ([`pattern`]).
//! - [`Mover`]: batched, THP-aware moves between regions: contiguous runs coalesced into one ioctl,
//!   whole-PMD moves when aligned, `DONTWAKE` plus one wake per range, the kernel's retry contract,
//!   policies for refused pages, statistics ([`mover`]).
//! - [`FaultServer`]: handler threads serving the missing-page faults of a region from a
//!   [`PageSource`] (zero pages, a buffer, a pool of recycled pages moved in, a closure), with
//!   non-cooperative events, clean shutdown, a panic policy, a SIGBUS mode and a tokio variant
//!   ([`server`]).
//!
//! # Example: publish pages, the way a compactor does
//!
//! ```
//! use remap::{Mover, Region};
//!
//! let uffd = uffd::Uffd::new()?;
//! if !uffd.supports_move() {
//!     return Ok(()); // a kernel before 6.8
//! }
//! let page = uffd::page_size();
//! let from_space = Region::builder(64 * page).populate(true).build()?;
//! let to_space = Region::new(64 * page)?;
//! remap::pattern::fill(&from_space, 42);
//!
//! let mover = Mover::new(uffd);
//! mover.register(&to_space)?;
//! let mut batch = mover.batch();
//! for i in 0..64 {
//!     batch.push_page(&to_space, i, &from_space, 63 - i)?; // reverse the order
//! }
//! let report = batch.flush()?;
//! assert_eq!(report.moved_bytes(), 64 * page as u64);
//! assert_eq!(remap::pattern::verify_page(&to_space, 0, 42, 63), Ok(()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Example: serve faults of a region
//!
//! ```
//! use remap::server::{FaultServer, ZeroSource};
//! use remap::Region;
//!
//! let region = Region::new(16 * uffd::page_size())?;
//! let server = FaultServer::builder(region, ZeroSource).threads(2).start()?;
//! assert_eq!(server.region().read_u64(0), 0); // faulted in and served by a handler thread
//! let region = server.stop()?;
//! # drop(region);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Examples to start from
//!
//! `crates/remap/examples/` holds complete small programs, each run by CI (`cargo run --release
//! -p remap --example NAME`):
//!
//! - `handoff`: hands a 64 MiB buffer (THPs where available) from one region to another with
//!   the [`Mover`], without copying, verifies it, and prints the bytes moved, the ioctls, the
//!   whole-PMD bytes and the time next to a `memcpy` of the same size.
//! - `lazy_restore`: a region served lazily from a snapshot file, as a VMM restores a guest.
//! - `sigbus_server`: faults resolved in the faulting thread's SIGBUS handler. See the
//!   [`server`] docs.
//!
//! # Where `unsafe` lives
//!
//! The crate denies `unsafe` except in [`region`] (mapping code and the [`PageRange`] ioctl calls,
//! bounds-checked against regions remap owns), in the process-wide SIGBUS handler and its
//! registry ([`sigbus`], which [`server::SigbusServer`] and remap-compact share), in the
//! async-signal-safety promises of [`server::SignalSafeSource`], and in one tokio registration
//! call; each block says why it is sound.

#![deny(unsafe_code)]

pub mod counters;
pub mod inspect;
pub mod mover;
pub mod pattern;
pub mod region;
pub mod server;
pub mod sigbus;
pub mod system;

pub use mover::{
    BatchError, BusyPolicy, HolePolicy, MoveError, MoveOptions, MoveReport, Mover, MoverStats, Wake,
};
pub use region::{PageRange, Region, RegionBuilder, Thp};
pub use server::{FaultServer, PageSource};
