//! [`CycleStats`]: what one compaction cycle did and what it cost.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::config::{FlipMethod, Publication};

/// Statistics of one cycle, returned by [`Cycle::compact`](crate::Cycle::compact).
///
/// Page counts satisfy: `by_compactor + by_handlers + by_mutators == pages` (each page is filled
/// exactly once) and `published_move + published_copy == pages` (each page is published exactly
/// once; `busy_fallbacks` and `error_fallbacks` are the part of `published_copy` that MOVE
/// refused).
#[derive(Clone)]
pub struct CycleStats {
    /// The cycle's number on this engine, from 1.
    pub cycle: u64,
    /// The publication used.
    pub publication: Publication,
    /// The flip used.
    pub flip_method: FlipMethod,
    /// Whether faults were served in SIGBUS mode.
    pub sigbus: bool,
    /// To-space pages filled ([`Compactor::pages`](crate::Compactor::pages)).
    pub pages: usize,
    /// The flip pause: register plus `mremap` (or MOVE), the part during which mutators must be
    /// stopped.
    pub flip_pause: Duration,
    /// Setting the cycle up inside [`Engine::flip`](crate::Engine::flip) after the flip proper:
    /// the dependency counts (one [`reads`](crate::Compactor::reads) per page), handler start.
    pub setup: Duration,
    /// Wall time of the compaction thread (in [`Cycle::compact`](crate::Cycle::compact)).
    pub compaction_wall: Duration,
    /// CPU time of the compaction thread (`CLOCK_THREAD_CPUTIME_ID`).
    pub compaction_cpu: Duration,
    /// Wall time from the start of the flip to the end of the cycle.
    pub cycle_wall: Duration,
    /// Pages filled by the compaction thread.
    pub by_compactor: u64,
    /// Pages filled by handler threads on a mutator's fault.
    pub by_handlers: u64,
    /// Pages filled by faulting mutators in their SIGBUS handler.
    pub by_mutators: u64,
    /// Pages published with `UFFDIO_MOVE`.
    pub published_move: u64,
    /// Pages published with `UFFDIO_COPY` (all of them with [`Publication::Copy`]).
    pub published_copy: u64,
    /// Pages MOVE refused with EBUSY (shared after a fork, pinned) and COPY then published.
    pub busy_fallbacks: u64,
    /// Pages MOVE refused with another error and COPY then published.
    pub error_fallbacks: u64,
    /// Faults outside the compacted pages (or on pages the program discarded) answered with the
    /// zero page.
    pub zero_pages: u64,
    /// Publication ioctls issued (MOVE and COPY, including retries).
    pub ioctls: u64,
    /// Runs published (a run is contiguous pages published by one ioctl when it succeeds whole).
    pub runs: u64,
    /// Runs issued as a whole, 2 MiB-aligned PMD (an upper bound on whole-PMD moves: the kernel
    /// takes that path only when the source is a huge page).
    pub pmd_runs: u64,
    /// Buffers that were recycled from-space pages (or pages kept from the previous cycle).
    pub recycled_buffers: u64,
    /// Buffers that were fresh pages (faulted into the engine's spare buffers).
    pub fresh_buffers: u64,
    /// Faults on a page someone else was filling or publishing, and publications that found the
    /// page already there (EEXIST).
    pub races: u64,
    /// MOVEs that failed (EEXIST, or stopped one page short) at a page they had in fact moved,
    /// as Linux 6.18 does under migration or a THP split (`docs/findings/move-thp-eexist.md`,
    /// `move-undercounts-a-moved-page.md`): the engine settles each from the buffer's pagemap
    /// entry and counts the page in `published_move`.
    pub misreported_moves: u64,
    /// Publications retried after EAGAIN (events pending, or transient).
    pub eagain_retries: u64,
    /// Non-cooperative events read during the cycle (`MADV_DONTNEED` of the heap).
    pub events: u64,
    /// Page faults taken on the heap during the cycle (events read, or SIGBUSes).
    pub faults: u64,
    /// Bytes of from-space given back with `MADV_DONTNEED` or `munmap`.
    pub released_bytes: u64,
    /// `MADV_DONTNEED` calls that gave from-space back.
    pub release_calls: u64,
    /// Per-fault mutator stall in nanoseconds: from the handler reading the fault (or the SIGBUS
    /// handler starting) to the page being published (or found published).
    pub stall_ns: Histogram<u64>,
    /// Every fault's stall as an interval on the monotonic clock, with the faulting thread, in
    /// the order recorded (for minimum mutator utilisation per thread).
    pub fault_spans: Vec<FaultSpan>,
    /// Where the compaction thread's wall time went.
    pub compactor_time: CompactorTime,
    /// TLB shootdown interrupts during the cycle, all CPUs (the `TLB` line of
    /// `/proc/interrupts`, read before the flip and after the cycle), when counted and readable.
    pub tlb_shootdowns: Option<u64>,
}

impl CycleStats {
    /// Pages published (MOVE plus COPY).
    pub fn published(&self) -> u64 {
        self.published_move + self.published_copy
    }

    /// Pages filled on a fault (handler threads plus SIGBUS mutators).
    pub fn by_faults(&self) -> u64 {
        self.by_handlers + self.by_mutators
    }

    /// TLB shootdowns per published page, when counted.
    pub fn tlb_per_page(&self) -> Option<f64> {
        let published = self.published();
        self.tlb_shootdowns
            .filter(|_| published > 0)
            .map(|t| t as f64 / published as f64)
    }
}

/// Where the compaction thread's time went in one cycle ([`CycleStats::compactor_time`]), phase
/// by phase, in wall and thread CPU time. The thread walks the heap in windows of
/// [`batch_pages`](crate::EngineBuilder::batch_pages) pages and reads both clocks between the
/// phases of each window (four `clock_gettime` pairs per window, not per page); on a loaded
/// machine the CPU times are the ones to compare (wall time includes time descheduled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactorTime {
    /// Claiming and filling a window's pages: the runtime's
    /// [`Compactor::fill`](crate::Compactor::fill) (relocation and reference rewriting,
    /// including the page faults of writing a fresh buffer for the first time) and choosing
    /// each page's buffer.
    pub fill: Phase,
    /// Publishing the window: the MOVE or COPY ioctls (COPY: the kernel's allocation, zeroing
    /// and copy; MOVE: the page-table moves and TLB flushes), retries and COPY fallbacks.
    pub publish: Phase,
    /// Waiting for pages a mutator's fault took over (it publishes from our staging slot), and
    /// at the end for every page to be mapped.
    pub wait: Phase,
    /// Giving surplus from-space back (`MADV_DONTNEED`).
    pub release: Phase,
    /// Minor page faults the compaction thread took during the cycle (first touches of fresh
    /// buffer pages, mostly), from `/proc/thread-self/stat`, when readable.
    pub minor_faults: Option<u64>,
}

/// One mutator fault's stall ([`CycleStats::fault_spans`]): from the handler reading the fault
/// (handler threads; the time the fault waited in the queue before is not seen) or the SIGBUS
/// handler starting, to the page being published or found published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSpan {
    /// When the stall began.
    pub start: std::time::Instant,
    /// How long it lasted.
    pub len: Duration,
    /// The faulting thread's kernel id (`gettid`), when known (SIGBUS mode; handler threads
    /// with `UFFD_FEATURE_THREAD_ID`).
    pub thread: Option<u32>,
}

/// Time spent in one phase: wall and thread CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phase {
    /// Wall time.
    pub wall: Duration,
    /// The thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
    pub cpu: Duration,
}

/// Both clocks at the end of the last phase.
pub(crate) struct PhaseClock {
    wall: std::time::Instant,
    cpu: Duration,
}

impl PhaseClock {
    pub(crate) fn start() -> Self {
        PhaseClock {
            wall: std::time::Instant::now(),
            cpu: thread_cpu_time(),
        }
    }

    /// Adds the time since the last lap to `phase` and starts the next.
    pub(crate) fn lap(&mut self, phase: &mut Phase) {
        let now = PhaseClock::start();
        phase.wall += now.wall - self.wall;
        phase.cpu += now.cpu.saturating_sub(self.cpu);
        *self = now;
    }
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
pub(crate) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The stall histogram summarised (count and percentiles): the derived `Debug` of a histogram
/// prints every bucket.
struct Stalls<'a>(&'a Histogram<u64>);

impl std::fmt::Debug for Stalls<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.0;
        if h.is_empty() {
            return f.write_str("none");
        }
        write!(
            f,
            "{} faults, p50 {} ns, p99 {} ns, max {} ns",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        )
    }
}

impl std::fmt::Debug for CycleStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CycleStats")
            .field("cycle", &self.cycle)
            .field("publication", &self.publication)
            .field("flip_method", &self.flip_method)
            .field("sigbus", &self.sigbus)
            .field("pages", &self.pages)
            .field("flip_pause", &self.flip_pause)
            .field("setup", &self.setup)
            .field("compaction_wall", &self.compaction_wall)
            .field("compaction_cpu", &self.compaction_cpu)
            .field("cycle_wall", &self.cycle_wall)
            .field("by_compactor", &self.by_compactor)
            .field("by_handlers", &self.by_handlers)
            .field("by_mutators", &self.by_mutators)
            .field("published_move", &self.published_move)
            .field("published_copy", &self.published_copy)
            .field("busy_fallbacks", &self.busy_fallbacks)
            .field("error_fallbacks", &self.error_fallbacks)
            .field("zero_pages", &self.zero_pages)
            .field("ioctls", &self.ioctls)
            .field("runs", &self.runs)
            .field("pmd_runs", &self.pmd_runs)
            .field("recycled_buffers", &self.recycled_buffers)
            .field("fresh_buffers", &self.fresh_buffers)
            .field("races", &self.races)
            .field("misreported_moves", &self.misreported_moves)
            .field("eagain_retries", &self.eagain_retries)
            .field("events", &self.events)
            .field("faults", &self.faults)
            .field("released_bytes", &self.released_bytes)
            .field("release_calls", &self.release_calls)
            .field("stall_ns", &Stalls(&self.stall_ns))
            .field("fault_spans", &self.fault_spans.len())
            .field("compactor_time", &self.compactor_time)
            .field("tlb_shootdowns", &self.tlb_shootdowns)
            .finish()
    }
}
