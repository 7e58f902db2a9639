//! One way of declaring statistics: a plain snapshot struct of `u64` fields and the live atomic
//! counters behind it, declared once by [`counters!`](crate::counters!).
//!
//! Every statistics type in the workspace (server, mover, pool, compaction cycle) is a set of
//! independent tallies that threads bump and a caller reads now and then. Writing each field out
//! three times (the public `u64`, the `AtomicU64`, the line in `snapshot`) is how one of them
//! goes missing; the macro writes all three from one list.
//!
//! Relaxed ordering throughout: each counter is an independent tally, and a snapshot is not a
//! consistent cut across counters (a counter bumped before another may be read after it).
//!
//! ```
//! remap::counters! {
//!     /// What a worker did.
//!     pub struct WorkerStats;
//!     /// The live counters behind `WorkerStats`.
//!     pub struct WorkerCounters {
//!         /// Jobs finished.
//!         jobs,
//!         /// Bytes written.
//!         bytes,
//!     }
//! }
//!
//! let live = WorkerCounters::default();
//! remap::counters::bump(&live.jobs);
//! remap::counters::add(&live.bytes, 4096);
//! let stats: WorkerStats = live.snapshot();
//! assert_eq!(stats, WorkerStats { jobs: 1, bytes: 4096 });
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds one to `counter` (Relaxed: an independent tally).
///
/// ```
/// let c = std::sync::atomic::AtomicU64::new(0);
/// remap::counters::bump(&c);
/// assert_eq!(c.into_inner(), 1);
/// ```
#[inline]
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to `counter`, skipping the atomic operation when `n` is zero (Relaxed).
///
/// ```
/// let c = std::sync::atomic::AtomicU64::new(0);
/// remap::counters::add(&c, 3);
/// remap::counters::add(&c, 0);
/// assert_eq!(c.into_inner(), 3);
/// ```
#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Reads `counter` (Relaxed).
///
/// ```
/// let c = std::sync::atomic::AtomicU64::new(7);
/// assert_eq!(remap::counters::get(&c), 7);
/// ```
#[inline]
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Declares a snapshot struct of `u64` counters and the live `AtomicU64` struct behind it, with
/// `snapshot()` on the live one. Each field's doc comment goes on both structs.
///
/// The snapshot derives `Debug, Clone, Copy, Default, PartialEq, Eq`; attributes written before
/// it (docs, `cfg_attr(feature = "serde", derive(serde::Serialize))`) are kept. The live struct
/// derives `Debug, Default` and its fields are `pub` (give the struct itself the visibility it
/// needs). See the [module docs](mod@crate::counters) for an example.
#[macro_export]
macro_rules! counters {
    (
        $(#[$snapshot_attr:meta])*
        $snapshot_vis:vis struct $snapshot:ident;
        $(#[$live_attr:meta])*
        $live_vis:vis struct $live:ident {
            $( $(#[$field_attr:meta])* $field:ident ),* $(,)?
        }
    ) => {
        $(#[$snapshot_attr])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $snapshot_vis struct $snapshot {
            $( $(#[$field_attr])* pub $field: u64, )*
        }

        $(#[$live_attr])*
        #[derive(Debug, Default)]
        $live_vis struct $live {
            $( $(#[$field_attr])* pub $field: ::std::sync::atomic::AtomicU64, )*
        }

        impl $live {
            /// Reads every counter (Relaxed: not a consistent cut across counters).
            #[allow(dead_code)]
            $live_vis fn snapshot(&self) -> $snapshot {
                $snapshot { $( $field: $crate::counters::get(&self.$field), )* }
            }
        }
    };
}
