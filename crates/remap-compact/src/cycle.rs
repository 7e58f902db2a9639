//! One cycle's shared state and the page protocol: claiming, filling, consuming from-space,
//! choosing buffers, publishing (with the error policy), and giving surplus back.
//!
//! Everything reachable from [`Shared::fault`] is async-signal-safe (atomics, the compactor's
//! `reads`/`fill`, ioctls, `sched_yield`, `clock_gettime`): the SIGBUS handler calls it. Logging
//! happens only on the compaction thread and the handler threads, outside it.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remap::inspect::{Pagemap, PM_PRESENT, PM_SWAPPED};
use remap::Region;
use uffd::{RangeError, Uffd};

use crate::compactor::{Compactor, Filler, FromSpace, PageBuffer};
use crate::config::Publication;
use crate::error::{CompactError, PublishOp};
use crate::raw::{self, Mapping};
use crate::state::{
    buf_of, owner_of, pack, state_of, Buf, FreeStack, BUFFER, FREE, GONE, LIVE, MAPPED, MAPPING,
    PROCESSED, PROCESSING, STACKED, SURPLUS, UNPROCESSED,
};
use crate::stats::{CompactorTime, PhaseClock};

remap::counters! {
    /// The counts of one cycle, read from [`Counters`] at its end; each is the
    /// [`CycleStats`](crate::CycleStats) field of the same name, documented there.
    pub(crate) struct Counts;
    /// The live counters behind [`CycleStats`](crate::CycleStats), bumped by the compaction
    /// thread, handler threads and SIGBUS handlers (relaxed atomics: async-signal-safe).
    pub(crate) struct Counters {
        by_compactor,
        by_handlers,
        by_mutators,
        published_move,
        published_copy,
        busy_fallbacks,
        error_fallbacks,
        zero_pages,
        ioctls,
        runs,
        pmd_runs,
        recycled_buffers,
        fresh_buffers,
        races,
        misreported_moves,
        eagain_retries,
        events,
        faults,
        released_bytes,
        release_calls,
    }
}

pub(crate) use remap::counters::bump;

fn add(c: &AtomicU64, n: usize) {
    remap::counters::add(c, n as u64);
}

/// The first fatal publication error of the cycle, in atomics (the SIGBUS handler may record it).
#[derive(Debug, Default)]
pub(crate) struct Failure {
    failed: AtomicBool,
    op: AtomicU8,
    page: AtomicUsize,
    pages: AtomicUsize,
    errno: AtomicI32,
    done: AtomicUsize,
}

impl Failure {
    fn record(&self, op: PublishOp, page: usize, pages: usize, err: RangeError) {
        if self
            .failed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.op.store(op as u8, Ordering::Relaxed);
            self.page.store(page, Ordering::Relaxed);
            self.pages.store(pages, Ordering::Relaxed);
            self.errno
                .store(err.errno().raw_os_error(), Ordering::Relaxed);
            self.done.store(err.done(), Ordering::Release);
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn error(&self) -> Option<CompactError> {
        if !self.is_set() {
            return None;
        }
        let op = match self.op.load(Ordering::Relaxed) {
            x if x == PublishOp::Move as u8 => PublishOp::Move,
            x if x == PublishOp::Copy as u8 => PublishOp::Copy,
            _ => PublishOp::Zero,
        };
        let errno = rustix::io::Errno::from_raw_os_error(self.errno.load(Ordering::Relaxed));
        Some(CompactError::Publish {
            op,
            page: self.page.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            error: RangeError::from_errno(errno, self.done.load(Ordering::Acquire)),
        })
    }
}

/// What to do when a publication gets EAGAIN (events pending): the handler thread reads the
/// events itself, the compaction thread backs off (a handler thread reads them), a SIGBUS
/// handler yields (no events are enabled in that mode, so EAGAIN is transient).
pub(crate) trait OnEagain {
    fn wait(&mut self);
}

/// Backs off with `sched_yield` (async-signal-safe).
pub(crate) struct Yield;

impl OnEagain for Yield {
    fn wait(&mut self) {
        rustix::thread::sched_yield();
    }
}

/// Sleeps 10 µs, doubling up to 1 ms, per consecutive EAGAIN.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    next: Duration,
}

impl OnEagain for Backoff {
    fn wait(&mut self) {
        self.next = (self.next * 2).clamp(Duration::from_micros(10), Duration::from_millis(1));
        std::thread::sleep(self.next);
    }
}

/// What a fault on a to-space page came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultOutcome {
    /// This thread filled and published it, or published a processed page.
    Published,
    /// Someone else is filling or publishing it; their ioctl wakes the faulting thread.
    InProgress,
    /// Answered with the zero page (outside the compacted pages, or discarded by the program).
    Zeroed,
    /// A stale fault: the page is there already.
    Present,
    /// Publication failed for good (recorded in [`Shared::failure`]).
    Failed,
}

/// The state one cycle shares between the compaction thread, handler threads and SIGBUS
/// handlers.
pub(crate) struct Shared<C> {
    pub(crate) compactor: Arc<C>,
    pub(crate) uffd: Uffd,
    pub(crate) heap: Arc<Region>,
    pub(crate) from: Arc<Mapping>,
    /// The compaction thread's staging window (`batch` pages, THP like the heap).
    pub(crate) staging: Arc<Mapping>,
    /// Buffers for fault-time fills (no THP: a fault must not zero 2 MiB).
    pub(crate) fault_bufs: Arc<Mapping>,
    pub(crate) publication: Publication,
    pub(crate) page: usize,
    /// To-space pages filled this cycle.
    pub(crate) pages: usize,
    /// Heap (and from-space) pages.
    pub(crate) heap_pages: usize,
    /// Staging slots of the compaction thread: `Buf::Spare(0..batch)`.
    pub(crate) batch: usize,
    /// Claims of the fault-time buffers: `Buf::Spare(batch..batch + slots.len())`.
    slots: Box<[AtomicBool]>,
    reserve: usize,
    release_chunk_pages: usize,
    states: Box<[AtomicU64]>,
    deps: Box<[AtomicU32]>,
    from_state: Box<[AtomicU8]>,
    stack: FreeStack,
    surplus: AtomicUsize,
    surplus_lo: AtomicUsize,
    pub(crate) counters: Counters,
    stalls: Box<[AtomicU64]>,
    /// When each stall of `stalls` began (ns since `began`) and the faulting thread (0: unknown).
    stall_starts: Box<[AtomicU64]>,
    stall_threads: Box<[AtomicU32]>,
    stall_len: AtomicUsize,
    /// The clock of `stall_starts`.
    pub(crate) began: Instant,
    pub(crate) failure: Failure,
    /// Set once the heap is unregistered: fault paths stop waiting then.
    pub(crate) finished: AtomicBool,
    /// `/proc/self/pagemap`, to settle a failed MOVE from its source ([`Shared::buffer_left`]);
    /// `None` where it cannot be opened (then a failed MOVE is believed).
    pagemap: Option<Pagemap>,
}

impl<C> std::fmt::Debug for Shared<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("pages", &self.pages)
            .field("heap_pages", &self.heap_pages)
            .field("publication", &self.publication)
            .finish_non_exhaustive()
    }
}

/// Inputs of [`Shared::new`].
pub(crate) struct SharedParts<C> {
    pub(crate) compactor: Arc<C>,
    pub(crate) uffd: Uffd,
    pub(crate) heap: Arc<Region>,
    pub(crate) from: Arc<Mapping>,
    pub(crate) staging: Arc<Mapping>,
    pub(crate) fault_bufs: Arc<Mapping>,
    pub(crate) publication: Publication,
    pub(crate) batch: usize,
    pub(crate) fault_buffers: usize,
    pub(crate) reserve: usize,
    pub(crate) release_chunk: usize,
}

fn u32_index(n: usize) -> u32 {
    u32::try_from(n).expect("page index fits in u32 (checked when the cycle was set up)")
}

impl<C: Compactor> Shared<C> {
    /// Sets the cycle up: checks the plan and counts each from-space page's readers.
    pub(crate) fn new(parts: SharedParts<C>) -> Result<Self, CompactError> {
        let page = parts.heap.page_size();
        let heap_pages = parts.heap.pages();
        let pages = parts.compactor.pages();
        if pages > heap_pages {
            return Err(CompactError::Plan {
                what: format!("{pages} pages to fill in a heap of {heap_pages}"),
            });
        }
        if u32::try_from(heap_pages + parts.batch + parts.fault_buffers).is_err() {
            return Err(CompactError::Plan {
                what: format!("a heap of {heap_pages} pages is too large (at most 2^32)"),
            });
        }
        let mut deps: Box<[AtomicU32]> = (0..heap_pages).map(|_| AtomicU32::new(0)).collect();
        for i in 0..pages {
            let r = parts.compactor.reads(i);
            if r.start > r.end || r.end > heap_pages {
                return Err(CompactError::Plan {
                    what: format!("page {i} reads from-space pages {r:?} outside 0..{heap_pages}"),
                });
            }
            for d in &mut deps[r] {
                *d.get_mut() += 1;
            }
        }
        let shared = Shared {
            compactor: parts.compactor,
            uffd: parts.uffd,
            heap: parts.heap,
            from: parts.from,
            staging: parts.staging,
            fault_bufs: parts.fault_bufs,
            publication: parts.publication,
            page,
            pages,
            heap_pages,
            batch: parts.batch,
            slots: (0..parts.fault_buffers)
                .map(|_| AtomicBool::new(false))
                .collect(),
            reserve: parts.reserve,
            release_chunk_pages: (parts.release_chunk / page).max(1),
            states: (0..pages).map(|_| AtomicU64::new(UNPROCESSED)).collect(),
            from_state: (0..heap_pages).map(|_| AtomicU8::new(LIVE)).collect(),
            stack: FreeStack::new(heap_pages),
            surplus: AtomicUsize::new(0),
            surplus_lo: AtomicUsize::new(heap_pages),
            counters: Counters::default(),
            stalls: (0..pages + 4096).map(|_| AtomicU64::new(0)).collect(),
            stall_starts: (0..pages + 4096).map(|_| AtomicU64::new(0)).collect(),
            stall_threads: (0..pages + 4096).map(|_| AtomicU32::new(0)).collect(),
            stall_len: AtomicUsize::new(0),
            began: Instant::now(),
            failure: Failure::default(),
            finished: AtomicBool::new(false),
            pagemap: Pagemap::open().ok(),
            deps,
        };
        // From-space pages no one reads are free from the start.
        for j in 0..heap_pages {
            if shared.deps[j].load(Ordering::Relaxed) == 0 {
                shared.freed(j);
            }
        }
        Ok(shared)
    }

    // ---- from-space bookkeeping ----

    /// From-space page `j` has no unfilled reader left.
    fn freed(&self, j: usize) {
        if self.publication != Publication::Copy {
            if j < self.pages && state_of(self.states[j].load(Ordering::Acquire)) == UNPROCESSED {
                // The buffer of to-space page `j`: published in place, same offsets.
                self.from_state[j].store(FREE, Ordering::Release);
                // Its claimant may have claimed it between our look and the store, and looked
                // for this buffer before it was free (the fence and `take_buffer`'s make one of
                // us see the other). Then it is recycled here, unless the claimant took it
                // after all; else it would sit free, neither a buffer nor given back, until
                // the cycle ends.
                std::sync::atomic::fence(Ordering::SeqCst);
                if state_of(self.states[j].load(Ordering::Relaxed)) == UNPROCESSED
                    || self.from_state[j]
                        .compare_exchange(FREE, STACKED, Ordering::AcqRel, Ordering::Relaxed)
                        .is_err()
                {
                    return;
                }
                // Ours again (`Stacked` for the moment): as any other freed page.
                if self.stack.len() < self.reserve {
                    self.stack.push(u32_index(j));
                } else {
                    self.to_surplus(j);
                }
                return;
            }
            if self.stack.len() < self.reserve {
                self.from_state[j].store(STACKED, Ordering::Release);
                self.stack.push(u32_index(j));
                return;
            }
        }
        self.to_surplus(j);
    }

    fn to_surplus(&self, j: usize) {
        self.from_state[j].store(SURPLUS, Ordering::Release);
        self.surplus.fetch_add(1, Ordering::Relaxed);
        self.surplus_lo.fetch_min(j, Ordering::Relaxed);
    }

    /// After `fill(page)`: its from-space pages have one reader less.
    fn consume(&self, reads: Range<usize>) {
        for j in reads {
            if self.deps[j].fetch_sub(1, Ordering::AcqRel) == 1 {
                self.freed(j);
            }
        }
    }

    /// A buffer for to-space page `page`, filled by `filler` (which claimed the page): the
    /// buffer, and whether it is a recycled page (else fresh). Counted by the caller.
    fn take_buffer(&self, page: usize, filler: Filler) -> (Buf, bool) {
        // From-space page `page` becomes a buffer only for to-space page `page`, whose one
        // claimant we are; but `freed` takes a `Free` page back when it sees the claim, so a
        // compare-exchange decides who has it. The fence orders our claim before the look, as
        // `freed`'s orders its store before its look at the claim. The acquire pairs with
        // `freed`'s release store, after every reader's fill.
        if self.publication != Publication::Copy {
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.from_state[page]
                .compare_exchange(FREE, BUFFER, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return (Buf::From(u32_index(page)), true);
            }
        }
        if filler == Filler::Compactor {
            // Staging slot by position in the aligned batch window: contiguous pages get
            // contiguous slots, and a whole window lines up with a PMD of the heap.
            return (Buf::Spare(u32_index(page % self.batch)), false);
        }
        if self.publication != Publication::Copy {
            while let Some(j) = self.stack.pop() {
                if self.from_state[j as usize]
                    .compare_exchange(STACKED, BUFFER, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return (Buf::From(j), true);
                }
            }
        }
        loop {
            for (k, slot) in self.slots.iter().enumerate() {
                if !slot.load(Ordering::Relaxed)
                    && slot
                        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return (Buf::Spare(u32_index(self.batch + k)), false);
                }
            }
            rustix::thread::sched_yield();
        }
    }

    /// Counts fills by `filler`: `recycled` into recycled buffers, `fresh` into fresh ones.
    fn count_fills(&self, filler: Filler, recycled: usize, fresh: usize) {
        let by = match filler {
            Filler::Compactor => &self.counters.by_compactor,
            Filler::Handler => &self.counters.by_handlers,
            Filler::Mutator => &self.counters.by_mutators,
        };
        add(by, recycled + fresh);
        if recycled > 0 {
            add(&self.counters.recycled_buffers, recycled);
        }
        if fresh > 0 {
            add(&self.counters.fresh_buffers, fresh);
        }
    }

    /// The buffer is done with: `moved` when MOVE took its page away.
    fn release_buffer(&self, buf: Buf, moved: bool) {
        match buf {
            Buf::From(j) => {
                if moved {
                    self.from_state[j as usize].store(GONE, Ordering::Release);
                } else {
                    self.to_surplus(j as usize);
                }
            }
            Buf::Spare(k) => {
                let k = k as usize;
                if k >= self.batch {
                    self.slots[k - self.batch].store(false, Ordering::Release);
                }
                // Staging slots belong to the compaction thread, which waits for its pages.
            }
        }
    }

    fn buf_place(&self, buf: Buf) -> (&Mapping, usize) {
        match buf {
            Buf::From(j) => (&self.from, j as usize * self.page),
            Buf::Spare(k) if (k as usize) < self.batch => (&self.staging, k as usize * self.page),
            Buf::Spare(k) => (&self.fault_bufs, (k as usize - self.batch) * self.page),
        }
    }

    // ---- filling ----

    /// Fills to-space page `page` into `buf` and consumes its from-space pages. A panic aborts
    /// the process (the crate's panic policy): it must not unwind into the engine (a page
    /// half-filled, its state word stuck) nor, in SIGBUS mode, across the signal frame. With
    /// `log`, the panic is logged first (not in a signal handler, where logging may deadlock).
    fn fill(&self, page: usize, buf: Buf, filler: Filler, log: bool) {
        let reads = self.compactor.reads(page);
        {
            let (map, off) = self.buf_place(buf);
            let src = FromSpace::new(
                self.from
                    .span(reads.start * self.page, reads.len() * self.page),
                self.page,
                reads.clone(),
            );
            let mut dst = PageBuffer::new(map.span(off, self.page), page, filler);
            let run = AssertUnwindSafe(|| self.compactor.fill(page, &src, &mut dst));
            if let Err(payload) = catch_unwind(run) {
                if log {
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a non-string panic".to_owned());
                    tracing::error!(page, %message, "the compactor's fill panicked: aborting");
                }
                std::process::abort();
            }
        } // the views end here, before the pages are consumed and published
        self.consume(reads);
    }

    // ---- publishing ----

    /// Publishes `n` contiguous pages from `first`, whose buffers are contiguous from `buf`, with
    /// the configured ioctl, following the error policy: EEXIST skips the page (someone else
    /// published it), EAGAIN waits (`on_eagain`) and retries, EBUSY and other MOVE errors fall
    /// back to COPY for that page. Marks each page `Mapped` and releases its buffer. Returns
    /// `false` after a fatal error (COPY failed too; recorded in `failure`).
    fn publish(&self, first: usize, n: usize, buf: Buf, on_eagain: &mut dyn OnEagain) -> bool {
        let (map, buf_off) = self.buf_place(buf);
        let page = self.page;
        let use_move = self.publication != Publication::Copy;
        let mut done = 0; // pages handled
        let mut whole_run = true;
        while done < n {
            let len = (n - done) * page;
            let (dst, src) = ((first + done) * page, buf_off + done * page);
            bump(&self.counters.ioctls);
            let how = if use_move {
                raw::Publish::Move
            } else {
                raw::Publish::Copy
            };
            let result = raw::publish_in(how, &self.uffd, &self.heap, dst, map, src, len);
            let (ok_pages, err) = match result {
                Ok(bytes) => (bytes / page, None),
                Err(e) => (e.done() / page, Some(e)),
            };
            self.mark_published(first + done, ok_pages, buf, done, use_move);
            if whole_run && err.is_none() && ok_pages == n {
                bump(&self.counters.runs);
                let huge = remap::region::HUGE_PAGE_SIZE;
                if use_move && len % huge == 0 && (self.heap.addr() + dst) % huge == 0 {
                    bump(&self.counters.pmd_runs);
                }
            } else if ok_pages > 0 {
                bump(&self.counters.runs);
            }
            done += ok_pages;
            let Some(err) = err else { continue };
            whole_run = false;
            let at = first + done;
            match err {
                RangeError::Partial { .. } => {}
                RangeError::EventsPending { .. } => {
                    bump(&self.counters.eagain_retries);
                    if self.finished.load(Ordering::Acquire) {
                        return false;
                    }
                    on_eagain.wait();
                }
                _ if use_move && self.buffer_left(map, buf_off + done * page) => {
                    // The MOVE failed at this page, yet the page left its buffer: the MOVE moved
                    // it and did not count it (Linux 6.18 answers EEXIST, or stops one page
                    // short and then EEXIST on the retry, under migration or a THP split:
                    // docs/findings/move-undercounts-a-moved-page.md, move-thp-eexist.md). Only
                    // we publish this page (claim protocol), so it is ours, published by MOVE.
                    bump(&self.counters.misreported_moves);
                    bump(&self.counters.published_move);
                    self.finish_page(at, buf, done, true);
                    // The kernel wakes only the pages it counted: a thread faulting on this
                    // one (ours, or one waiting for the run in progress) would sleep until the
                    // cycle unregisters the heap.
                    let _ = self
                        .uffd
                        .wake(self.heap.as_ptr().wrapping_add(at * page), page);
                    done += 1;
                }
                RangeError::Exists { .. } => {
                    // Someone else published this page (a zero page after the program's
                    // MADV_DONTNEED raced a fault, say): it is there; ours is not needed.
                    bump(&self.counters.races);
                    self.finish_page(at, buf, done, false);
                    done += 1;
                }
                other if use_move => {
                    // EBUSY (shared after fork, pinned) or another MOVE failure: COPY this page.
                    if !self.copy_one(at, map, buf_off + done * page, on_eagain) {
                        self.failure.record(PublishOp::Copy, at, n - done, other);
                        return false;
                    }
                    let counter = if matches!(other, RangeError::Busy { .. }) {
                        &self.counters.busy_fallbacks
                    } else {
                        &self.counters.error_fallbacks
                    };
                    bump(counter);
                    bump(&self.counters.published_copy);
                    self.finish_page(at, buf, done, false);
                    done += 1;
                }
                other => {
                    self.failure.record(PublishOp::Copy, at, n - done, other);
                    return false;
                }
            }
        }
        true
    }

    /// Whether the buffer page at `off` of `map` is gone (neither present nor swapped out, which
    /// includes a migration entry): after a MOVE from it failed, that means the MOVE moved it.
    /// A filled buffer page is always populated (the fill wrote it, or it is a populated
    /// from-space page), so a hole there is the MOVE's doing. Without pagemap, `false` (the
    /// error is believed). One `pread`: async-signal-safe.
    fn buffer_left(&self, map: &Mapping, off: usize) -> bool {
        self.pagemap
            .as_ref()
            .and_then(|pagemap| pagemap.entry(map.addr() + off))
            .is_some_and(|entry| entry & (PM_PRESENT | PM_SWAPPED) == 0)
    }

    /// COPY of one page, retrying EAGAIN; `true` when the page is in place (copied, or EEXIST).
    fn copy_one(&self, at: usize, map: &Mapping, src: usize, on_eagain: &mut dyn OnEagain) -> bool {
        loop {
            bump(&self.counters.ioctls);
            let copied = raw::publish_in(
                raw::Publish::Copy,
                &self.uffd,
                &self.heap,
                at * self.page,
                map,
                src,
                self.page,
            );
            match copied {
                Ok(_) | Err(RangeError::Exists { .. }) => return true,
                Err(RangeError::EventsPending { .. } | RangeError::Partial { .. }) => {
                    bump(&self.counters.eagain_retries);
                    if self.finished.load(Ordering::Acquire) {
                        return false;
                    }
                    on_eagain.wait();
                }
                Err(_) => return false,
            }
        }
    }

    fn mark_published(&self, first: usize, n: usize, buf: Buf, buf_skip: usize, moved: bool) {
        let counter = if moved {
            &self.counters.published_move
        } else {
            &self.counters.published_copy
        };
        add(counter, n);
        for k in 0..n {
            self.finish_page(first + k, buf, buf_skip + k, moved);
        }
    }

    /// Page `page` is in place, from buffer `buf` + `k`: mark it mapped, release the buffer.
    fn finish_page(&self, page: usize, buf: Buf, k: usize, moved: bool) {
        let k = u32_index(k);
        let this = match buf {
            Buf::From(j) => Buf::From(j + k),
            Buf::Spare(s) => Buf::Spare(s + k),
        };
        let word = self.states[page].load(Ordering::Relaxed);
        let owner = owner_of(word).unwrap_or(Filler::Compactor);
        self.states[page].store(pack(MAPPED, owner, None), Ordering::Release);
        self.release_buffer(this, moved);
    }

    // ---- the fault path (handler threads and SIGBUS handlers) ----

    /// Resolves a fault at heap address `addr` of thread `thread` (its kernel thread id; 0 if
    /// unknown), on behalf of that mutator, by `filler` ([`Filler::Handler`] or
    /// [`Filler::Mutator`]). Async-signal-safe when `log` is false.
    pub(crate) fn fault(
        &self,
        addr: usize,
        thread: u32,
        filler: Filler,
        log: bool,
        on_eagain: &mut dyn OnEagain,
    ) -> FaultOutcome {
        let start = Instant::now();
        bump(&self.counters.faults);
        let off = addr.wrapping_sub(self.heap.addr());
        let page = off / self.page;
        let outcome = if page >= self.pages {
            self.zero(page, on_eagain)
        } else {
            self.fault_page(page, filler, log, on_eagain)
        };
        if outcome != FaultOutcome::Present {
            self.record_stall(start, start.elapsed(), thread);
        }
        outcome
    }

    fn fault_page(
        &self,
        page: usize,
        filler: Filler,
        log: bool,
        on_eagain: &mut dyn OnEagain,
    ) -> FaultOutcome {
        let state = &self.states[page];
        loop {
            let word = state.load(Ordering::Acquire);
            match state_of(word) {
                UNPROCESSED => {
                    if state
                        .compare_exchange(
                            word,
                            pack(PROCESSING, filler, None),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    let (buf, recycled) = self.take_buffer(page, filler);
                    self.fill(page, buf, filler, log);
                    self.count_fills(filler, usize::from(recycled), usize::from(!recycled));
                    state.store(pack(MAPPING, filler, Some(buf)), Ordering::Release);
                    return self.publish_one(page, buf, on_eagain);
                }
                PROCESSED => {
                    let mapping = pack(
                        MAPPING,
                        owner_of(word).unwrap_or(filler),
                        Some(buf_of(word)),
                    );
                    if state
                        .compare_exchange(word, mapping, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        continue;
                    }
                    return self.publish_one(page, buf_of(word), on_eagain);
                }
                PROCESSING => {
                    // Being filled elsewhere (a page's fill is short and waits for no one): wait
                    // for it to be processed, then publish it ourselves or find it published.
                    std::hint::spin_loop();
                    rustix::thread::sched_yield();
                }
                MAPPING => {
                    bump(&self.counters.races);
                    return FaultOutcome::InProgress;
                }
                _ => return self.zero(page, on_eagain),
            }
        }
    }

    fn publish_one(&self, page: usize, buf: Buf, on_eagain: &mut dyn OnEagain) -> FaultOutcome {
        if self.publish(page, 1, buf, on_eagain) {
            FaultOutcome::Published
        } else {
            FaultOutcome::Failed
        }
    }

    /// A fault outside the compacted pages, or on a page already mapped (then either a stale
    /// fault, or the program discarded the page and gets zeros, as it would without us).
    fn zero(&self, page: usize, on_eagain: &mut dyn OnEagain) -> FaultOutcome {
        loop {
            match raw::zero_in(&self.uffd, &self.heap, page * self.page, self.page) {
                Ok(_) => {
                    bump(&self.counters.zero_pages);
                    return FaultOutcome::Zeroed;
                }
                Err(RangeError::Exists { .. }) => {
                    // Already there: wake the faulting thread in case nobody did.
                    let _ = self
                        .uffd
                        .wake(self.heap.as_ptr().wrapping_add(page * self.page), self.page);
                    return FaultOutcome::Present;
                }
                Err(RangeError::EventsPending { .. } | RangeError::Partial { .. }) => {
                    bump(&self.counters.eagain_retries);
                    if self.finished.load(Ordering::Acquire) {
                        return FaultOutcome::Failed;
                    }
                    on_eagain.wait();
                }
                // A stale fault read after the cycle ended and the heap was unregistered: the
                // unregistration woke its thread, and the heap is ordinary memory now.
                Err(_) if self.finished.load(Ordering::Acquire) => return FaultOutcome::Present,
                Err(err) => {
                    self.failure.record(PublishOp::Zero, page, 1, err);
                    return FaultOutcome::Failed;
                }
            }
        }
    }

    fn record_stall(&self, start: Instant, d: Duration, thread: u32) {
        #[allow(clippy::cast_possible_truncation)] // a stall of 584 years saturates
        let ns = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let i = self.stall_len.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.stalls.get(i) {
            slot.store(ns(d), Ordering::Relaxed);
            self.stall_starts[i].store(
                ns(start.saturating_duration_since(self.began)),
                Ordering::Relaxed,
            );
            self.stall_threads[i].store(thread, Ordering::Relaxed);
        }
    }

    /// Every recorded stall: (start in ns since `began`, length in ns, thread id or 0).
    pub(crate) fn stall_samples(&self) -> impl Iterator<Item = (u64, u64, u32)> + '_ {
        let n = self
            .stall_len
            .load(Ordering::Acquire)
            .min(self.stalls.len());
        (0..n).map(|i| {
            (
                self.stall_starts[i].load(Ordering::Relaxed),
                self.stalls[i].load(Ordering::Relaxed),
                self.stall_threads[i].load(Ordering::Relaxed),
            )
        })
    }

    // ---- the compaction thread ----

    /// Walks every to-space page in ascending order (for a sliding compactor, whose `reads` are
    /// monotone, this frees from-space pages earliest), filling unclaimed ones into buffers and
    /// publishing each aligned window of `batch` pages in runs. Gives surplus from-space back as
    /// it goes. Returns `false` when the cycle failed.
    pub(crate) fn compact(&self, time: &mut CompactorTime) -> bool {
        let mut backoff = Backoff::default();
        let mut window: Vec<(usize, Buf)> = Vec::with_capacity(self.batch);
        let mut stolen: Vec<usize> = Vec::new();
        let mut start = 0;
        while start < self.pages {
            if self.failure.is_set() {
                return false;
            }
            let end = (start - start % self.batch + self.batch).min(self.pages);
            window.clear();
            let mut clock = PhaseClock::start();
            let (mut recycled_here, mut fresh_here) = (0, 0);
            for page in start..end {
                let claimed = self.states[page]
                    .compare_exchange(
                        UNPROCESSED,
                        pack(PROCESSING, Filler::Compactor, None),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok();
                if !claimed {
                    continue;
                }
                let (buf, recycled) = self.take_buffer(page, Filler::Compactor);
                self.fill(page, buf, Filler::Compactor, true);
                // Counted per window, not per page: shared counters cost an atomic each.
                if recycled {
                    recycled_here += 1;
                } else {
                    fresh_here += 1;
                }
                self.states[page].store(
                    pack(PROCESSED, Filler::Compactor, Some(buf)),
                    Ordering::Release,
                );
                window.push((page, buf));
            }
            self.count_fills(Filler::Compactor, recycled_here, fresh_here);
            clock.lap(&mut time.fill);
            let published = self.publish_window(&window, &mut stolen, &mut backoff);
            clock.lap(&mut time.publish);
            if !published {
                return false;
            }
            // A fault that took a processed page publishes it from our staging slot: wait for
            // it before the next window reuses the slot.
            for &page in &stolen {
                self.wait_mapped(page);
            }
            stolen.clear();
            clock.lap(&mut time.wait);
            if self.surplus.load(Ordering::Relaxed) >= self.release_chunk_pages {
                self.release_surplus();
                clock.lap(&mut time.release);
            }
            start = end;
        }
        let mut clock = PhaseClock::start();
        for page in 0..self.pages {
            if !self.wait_mapped(page) {
                return false;
            }
        }
        clock.lap(&mut time.wait);
        true
    }

    /// Publishes the processed pages of one window in runs (one ioctl per run; one per page for
    /// `MoveSingle`). A page a fault moved to `Mapping` first is left to it (`stolen`).
    fn publish_window(
        &self,
        window: &[(usize, Buf)],
        stolen: &mut Vec<usize>,
        backoff: &mut Backoff,
    ) -> bool {
        let single = self.publication == Publication::MoveSingle;
        let mut i = 0;
        while i < window.len() {
            // Claim the longest run from `i` for publication.
            let mut run = 0;
            while i + run < window.len() {
                let (page, buf) = window[i + run];
                if run > 0 {
                    let (prev_page, prev_buf) = window[i + run - 1];
                    if single || prev_page + 1 != page || !prev_buf.is_followed_by(buf) {
                        break;
                    }
                }
                let processed = pack(PROCESSED, Filler::Compactor, Some(buf));
                let mapping = pack(MAPPING, Filler::Compactor, Some(buf));
                if self.states[page]
                    .compare_exchange(processed, mapping, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    stolen.push(page);
                    break;
                }
                run += 1;
            }
            if run > 0 {
                let (page, buf) = window[i];
                if !self.publish(page, run, buf, backoff) {
                    return false;
                }
                *backoff = Backoff::default();
                i += run;
            } else {
                i += 1; // stolen
            }
        }
        true
    }

    /// Waits until `page` is mapped; `false` if the cycle failed meanwhile.
    fn wait_mapped(&self, page: usize) -> bool {
        let mut spins = 0u32;
        while state_of(self.states[page].load(Ordering::Acquire)) != MAPPED {
            if self.failure.is_set() {
                return false;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        true
    }

    /// Gives surplus from-space pages back with `MADV_DONTNEED`, in maximal runs (pages already
    /// gone may sit inside a run: giving back a hole is free). Compaction thread only.
    pub(crate) fn release_surplus(&self) {
        let lo = self.surplus_lo.swap(self.heap_pages, Ordering::Relaxed);
        let mut run: Option<(usize, usize)> = None; // [start, end of last surplus page)
        let mut released = 0;
        for j in lo..self.heap_pages {
            let s = self.from_state[j].load(Ordering::Acquire);
            if s == SURPLUS
                && self.from_state[j]
                    .compare_exchange(SURPLUS, GONE, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                released += 1;
                run = Some(match run {
                    Some((a, _)) => (a, j + 1),
                    None => (j, j + 1),
                });
            } else if s != GONE {
                if let Some((a, b)) = run.take() {
                    self.dontneed(a, b);
                }
            }
        }
        if let Some((a, b)) = run {
            self.dontneed(a, b);
        }
        self.surplus.fetch_sub(released, Ordering::Relaxed);
    }

    fn dontneed(&self, a: usize, b: usize) {
        let len = (b - a) * self.page;
        match self.from.dontneed(a * self.page, len) {
            Ok(()) => {
                bump(&self.counters.release_calls);
                add(&self.counters.released_bytes, len);
            }
            Err(e) => {
                tracing::warn!(error = %e, "giving from-space back failed; it goes at the cycle's end")
            }
        }
    }

    /// How many to-space pages are mapped now.
    pub(crate) fn mapped(&self) -> usize {
        self.states
            .iter()
            .filter(|s| state_of(s.load(Ordering::Relaxed)) == MAPPED)
            .count()
    }
}

/// SIGBUS mode: the faulting mutator resolves its own fault.
impl<C: crate::compactor::SignalSafeCompactor> raw::SigbusTarget for Shared<C> {
    fn on_sigbus(&self, addr: usize) -> bool {
        // The faulting thread is this one (gettid is a plain system call: async-signal-safe).
        let thread = rustix::thread::gettid()
            .as_raw_nonzero()
            .get()
            .unsigned_abs();
        match self.fault(addr, thread, Filler::Mutator, false, &mut Yield) {
            // Someone else's ioctl will map it: let the access retry (it faults again until then).
            FaultOutcome::InProgress => rustix::thread::sched_yield(),
            // A failed cycle: the compaction thread unregisters the heap soon; retry until then.
            FaultOutcome::Failed => rustix::thread::sched_yield(),
            FaultOutcome::Published | FaultOutcome::Zeroed | FaultOutcome::Present => {}
        }
        true
    }
}

#[cfg(test)]
mod tests;
