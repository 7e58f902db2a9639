//! The run's shared state ([`Shared`], the counters) and the threads that are not walker
//! drivers, a file each: `engine/mover.rs`, `engine/mutator.rs`, `engine/events.rs` (the uffd
//! event reader) and `engine/audit.rs` (the final audit).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use remap::inspect::{Pagemap, PM_PRESENT, PM_SWAPPED};
use uffd::Uffd;

use crate::model::{self, Content, Pair, Slot, Window};
use crate::oplog::OpLog;
use crate::report::{Violation, ViolationKind};
use crate::sys::Mapping;
use crate::Config;

mod audit;
mod events;
mod mover;
mod mutator;

pub(crate) use audit::audit;
pub(crate) use events::event_reader;
pub(crate) use mover::{move_checked, mover};
pub(crate) use mutator::mutator;

/// The result buckets of the histogram, in print order.
pub(crate) const BUCKETS: [&str; 10] = [
    "ok",
    "partial",
    "eexist",
    "enoent",
    "ebusy",
    "eagain-events",
    "enomem",
    "einval",
    "efault",
    "other",
];

/// Violations kept in full (all are counted).
const KEPT_VIOLATIONS: usize = 100;

remap::counters! {
    /// A snapshot of the run's [`Stats`], what the report is made from.
    pub(crate) struct StatsSnapshot;
    /// Counters every thread adds to.
    pub(crate) struct Stats {
        /// Pages the movers (and the huge-zero and flip drivers) moved.
        pages_moved,
        /// Holes moved with `ALLOW_SRC_HOLES`.
        holes_moved,
        /// Swapped-out pages moved without swap-in.
        swapped_moved,
        /// MOVE ioctls issued.
        moves,
        /// Page tags checked (mutators and the final audit).
        checked,
        /// New generations written by mutators.
        written,
        /// Logical pages dropped on purpose (`MADV_DONTNEED` of the flip region, a page the flip
        /// could not move back).
        dropped,
        /// Windows not locked because another thread held a block of them.
        contention,
        /// uffd events read.
        events,
        /// MOVE results judged by the oracle.
        oracle_judged,
        /// MOVE results judged by the torture rules alone.
        rules_judged,
        /// How often the oracle and the torture rules disagreed.
        disagreements,
    }
}

/// MOVE results by bucket ([`BUCKETS`]): a histogram, which `counters!` does not declare.
#[derive(Debug, Default)]
pub(crate) struct ResultCounts([AtomicU64; BUCKETS.len()]);

impl ResultCounts {
    /// Counts one result in `bucket` (`other` when the name is not a bucket).
    pub(crate) fn count(&self, bucket: &str) {
        let i = BUCKETS
            .iter()
            .position(|b| *b == bucket)
            .unwrap_or(BUCKETS.len() - 1);
        remap::counters::bump(&self.0[i]);
    }

    /// The buckets with at least one result.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        BUCKETS
            .iter()
            .zip(&self.0)
            .map(|(b, n)| ((*b).to_owned(), remap::counters::get(n)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Everything the threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    /// Seed-derived key mixed into every tag.
    pub(crate) key: u64,
    pub(crate) page: usize,
    pub(crate) uffd: Uffd,
    pub(crate) pagemap: Pagemap,
    pub(crate) pairs: Vec<Pair>,
    /// Logical pages placed in the pairs (ids `0..pair_ids`).
    pub(crate) pair_ids: u32,
    pub(crate) start: Instant,
    pub(crate) stop: AtomicBool,
    pub(crate) stop_events: AtomicBool,
    /// Where the main thread is, and so where new pages are charged (the fork driver forks with
    /// it at home).
    pub(crate) owner: crate::machine::CgroupOwner,
    pub(crate) forks_started: AtomicU32,
    pub(crate) forks_done: AtomicU32,
    pub(crate) ksm_on: bool,
    pub(crate) ctx_events: bool,
    pub(crate) ctx_nomem: bool,
    pub(crate) stats: Stats,
    pub(crate) results: ResultCounts,
    pub(crate) violations: Mutex<Vec<Violation>>,
    pub(crate) violation_count: AtomicU64,
    pub(crate) oplog: OpLog,
    pub(crate) injected: AtomicBool,
    /// The oracle's behaviour row for this kernel (None: judge by the torture rules alone).
    pub(crate) oracle: Option<&'static remap_oracle::Behaviour>,
}

/// Whether a pagemap entry is populated (present or swapped).
pub(crate) fn occupied(entry: u64) -> bool {
    entry & (PM_PRESENT | PM_SWAPPED) != 0
}

fn swapped(entry: u64) -> bool {
    entry & PM_PRESENT == 0 && entry & PM_SWAPPED != 0
}

impl Shared {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Records a broken invariant (and stops the run when asked to stop at the first).
    pub(crate) fn violation(
        &self,
        kind: ViolationKind,
        thread: &str,
        message: String,
        addrs: Vec<usize>,
    ) {
        tracing::warn!(?kind, thread, "{message}");
        self.violation_count.fetch_add(1, Ordering::SeqCst);
        let kept = self
            .violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        if kept < KEPT_VIOLATIONS {
            // Shrink the log now: the rings keep only each thread's latest operations.
            let ops = self.oplog.shrink(&addrs, self.page, 40);
            let mut v = self.violations.lock().unwrap_or_else(|p| p.into_inner());
            v.push(Violation {
                kind,
                message,
                thread: thread.to_owned(),
                at_secs: self.elapsed(),
                addrs,
                ops,
            });
        }
        if self.cfg.stop_at_first_violation {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    /// Pagemap entries of `pages` pages from page `first` of `map`.
    pub(crate) fn entries(&self, map: &Mapping, first: usize, pages: usize) -> Vec<u64> {
        self.pagemap
            .entries(map.addr() + first * self.page, pages)
            .unwrap_or_else(|_| vec![0; pages])
    }

    /// Whether MOVE may refuse the page in `slot` with EBUSY.
    fn may_busy(&self, slot: Slot, thp: bool, entry_before: u64, entry_after: u64) -> bool {
        let fork_shared = self.forks_started.load(Ordering::SeqCst) > slot.excl_mark;
        let ksm = self.ksm_on
            && match slot.content {
                Content::Page { id, .. } => model::is_twin(id),
                Content::Zero | Content::Foreign => true,
                Content::Hole => false,
            };
        // A swapped-out page of a THP region may belong to a large folio still in the swap
        // cache, which MOVE refuses (spec 2.3).
        let large_swapcache = thp && (swapped(entry_before) || swapped(entry_after));
        fork_shared || ksm || large_swapcache
    }

    /// Reads the tag words of page `page` of `map` and compares them with `content`.
    pub(crate) fn check_page(
        &self,
        map: &Mapping,
        page: usize,
        content: Content,
    ) -> Result<(), String> {
        let Some(expected) = model::expected_words(self.key, content) else {
            return Ok(());
        };
        let offs = model::tag_word_offsets(self.page);
        let got = offs.map(|w| map.read_word(page, w));
        remap::counters::bump(&self.stats.checked);
        if got == expected {
            Ok(())
        } else {
            Err(format!(
                "page at {:#x} should hold {content:?} (words {expected:#x?}) but holds {got:#x?}",
                map.addr() + page * self.page
            ))
        }
    }

    /// Compares the model of one block side with pagemap; reconciles the model with what is
    /// there (so one lost page is reported once) and reports every difference.
    pub(crate) fn check_block_occupancy(
        &self,
        thread: &str,
        map: &Mapping,
        win: &mut Window<'_>,
        side: usize,
        first: usize,
        len: usize,
    ) {
        let entries = self.entries(map, first, len);
        for (j, &e) in entries.iter().enumerate() {
            let page = first + j;
            let slot = win.slot(side, page);
            let addr = map.addr() + page * self.page;
            match (slot.content.occupied(), occupied(e)) {
                (true, false) => {
                    self.violation(
                        ViolationKind::LostPage,
                        thread,
                        format!(
                            "{:?} at {addr:#x} is gone: the slot is a hole",
                            slot.content
                        ),
                        vec![addr],
                    );
                    win.slot_mut(side, page).content = Content::Hole;
                }
                (false, true) => {
                    let words = model::tag_word_offsets(self.page).map(|w| map.read_word(page, w));
                    self.violation(
                        ViolationKind::DuplicatePage,
                        thread,
                        format!(
                            "a page appeared at {addr:#x} where the run placed none (words {words:#x?})"
                        ),
                        vec![addr],
                    );
                    win.slot_mut(side, page).content = Content::Foreign;
                }
                _ => {}
            }
        }
    }
}
