//! One collection cycle: stop the mutators, verify, mark, plan, flip, let them go, compact while
//! they run, stop them again, verify.
//!
//! The compaction itself is a [`Backend`]: the `remap-compact` engine in its publication and
//! fault modes, or [`StopTheWorld`] (compaction inside the pause, with the same fill; the
//! reference the concurrent modes are checked against).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fill::fill_page;
use crate::floor::{memcpy_live, FloorTime};
use crate::heap::{Heap, Stall};
use crate::mark::{mark, MarkError};
use crate::mmu::Timeline;
use crate::plan::{Corruption, Plan};
use crate::rss;
use crate::verify::{check, Sums, VerifyError};

/// How a cycle's compaction is done once the plan exists.
pub trait Backend {
    /// What the backend measured.
    type Stats;
    /// Why it failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// A cycle in progress between the flip and the end of compaction.
    type Running<'h>
    where
        Self: 'h;

    /// In the pause, after the roots were forwarded: make the heap's pages the compacted ones
    /// (now, or on demand as mutators touch them). The mutators resume when this returns.
    ///
    /// # Errors
    ///
    /// The backend's.
    fn flip<'h>(
        &'h mut self,
        heap: &'h Heap,
        plan: Arc<Plan>,
    ) -> Result<Self::Running<'h>, Self::Error>;

    /// With the mutators running: compact every remaining page and finish the cycle.
    ///
    /// # Errors
    ///
    /// The backend's.
    fn compact(running: Self::Running<'_>) -> Result<Self::Stats, Self::Error>;

    /// The mutators' fault stalls the backend measured: (kernel thread id, start, length).
    /// None by default (a backend whose mutators never fault).
    fn fault_stalls(_stats: &Self::Stats) -> Vec<(u32, Instant, Duration)> {
        Vec::new()
    }
}

/// Compaction inside the pause with the same plan and fill: a snapshot of the heap is the
/// from-space, every page is filled and written back before the mutators resume.
#[derive(Debug, Default)]
pub struct StopTheWorld;

impl Backend for StopTheWorld {
    type Stats = Duration;
    type Error = std::convert::Infallible;
    type Running<'h> = Duration;

    fn flip<'h>(&'h mut self, heap: &'h Heap, plan: Arc<Plan>) -> Result<Duration, Self::Error> {
        let started = Instant::now();
        let region = heap.region();
        let top = plan.live.len().min(heap.words());
        let mut snapshot = vec![0u8; top * 8];
        region.copy_out(0, &mut snapshot);
        let snapshot: Vec<u64> = snapshot
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let pw = plan.page_words();
        let mut page = vec![0u64; pw];
        let mut bytes = vec![0u8; pw * 8];
        for p in 0..plan.pages() {
            fill_page(&plan, p, &snapshot[..], &mut page[..]);
            for (b, w) in bytes.chunks_exact_mut(8).zip(&page) {
                b.copy_from_slice(&w.to_ne_bytes());
            }
            region.copy_in(p * pw * 8, &bytes);
        }
        let end = plan.pages() * pw * 8;
        if end < region.len() {
            region
                .madvise_dontneed(end..region.len())
                .expect("MADV_DONTNEED of the heap's own tail");
        }
        Ok(started.elapsed())
    }

    fn compact(running: Duration) -> Result<Duration, Self::Error> {
        Ok(running)
    }
}

/// Options of one cycle.
#[derive(Debug, Clone, Copy, Default)]
pub struct CycleOptions {
    /// Break the compacted heap on purpose (tests that verification catches it).
    pub corruption: Option<Corruption>,
    /// Measure the memcpy floor of the live bytes in the pause (excluded from the time line).
    pub floor: bool,
    /// Keep the mutators stopped through compaction (the "no live mutators" side of the
    /// comparison: nothing faults, no other CPU runs the heap's address space).
    pub idle_mutators: bool,
}

/// What went wrong in a cycle that is not the backend's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CycleFailure {
    /// The heap did not verify before the cycle.
    #[error("before the cycle: {0}")]
    Before(VerifyError),
    /// Marking found a broken heap.
    #[error("marking: {0}")]
    Mark(MarkError),
    /// The heap did not verify after the cycle.
    #[error("after the cycle: {0}")]
    After(VerifyError),
}

/// Everything one cycle measured.
#[derive(Debug, Clone)]
pub struct CycleReport<S> {
    /// Time for every mutator to reach its safepoint.
    pub safepoint_wait: Duration,
    /// Marking plus the plan (prefix sums), in the pause.
    pub mark_pause: Duration,
    /// Root forwarding plus the backend's flip, in the pause.
    pub flip_pause: Duration,
    /// The mutators' whole pause, without the benchmark's own verification and floor.
    pub pause: Duration,
    /// Verification before and after, both.
    pub verify_time: Duration,
    /// The memcpy of the live bytes, when measured.
    pub floor: Option<FloorTime>,
    /// The wall time of the backend's compaction after the mutators resumed.
    pub compact_wall: Duration,
    /// Words in use before the cycle (the allocation top).
    pub used_words: usize,
    /// Live words.
    pub live_words: usize,
    /// Live objects.
    pub objects: usize,
    /// To-space pages compacted.
    pub pages: usize,
    /// Resident memory when the flip started, and its peak until the end of compaction
    /// (`VmRSS`, `VmHWM` after a reset), when readable.
    pub rss_at_flip: Option<u64>,
    /// See `rss_at_flip`.
    pub rss_peak: Option<u64>,
    /// The backend's measurements (None if verification failed before the flip).
    pub backend: Option<S>,
    /// The mutators' time line of the cycle, for MMU.
    pub timeline: Timeline,
    /// When the mutators resumed after the flip (the heap's clock), so that MMU can also be
    /// taken over the concurrent phase alone.
    pub resumed_ns: u64,
    /// Whether the heap verified before and after, and whether an armed corruption was applied.
    pub verified: Result<(), CycleFailure>,
    /// Whether the armed corruption (if any) was actually applied.
    pub corruption_applied: bool,
}

/// Why a cycle could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum CycleError<E: std::error::Error + 'static> {
    /// The backend failed.
    #[error("compaction backend")]
    Backend(#[source] E),
}

fn ns(heap: &Heap) -> u64 {
    heap.now_ns()
}

/// Runs one cycle on `heap` with `backend`.
///
/// # Errors
///
/// [`CycleError::Backend`]; verification failures are in the report, not errors.
pub fn collect<B: Backend>(
    heap: &Heap,
    backend: &mut B,
    opts: CycleOptions,
) -> Result<CycleReport<B::Stats>, CycleError<B::Error>> {
    let span_start = ns(heap);
    let mut excluded = Vec::new();
    let (stw, safepoint_wait) = heap.stop_the_world();
    let pause_started = Instant::now();
    let shapes = Arc::clone(heap.shapes());
    let roots = heap.roots();
    let top = heap.top();
    let region = heap.region();

    let v0 = (Instant::now(), ns(heap));
    let before = check(region, &shapes, top, &roots, Sums::Reachable);
    heap.take_deltas();
    let mut verify_time = v0.0.elapsed();
    excluded.push((v0.1, ns(heap) - v0.1));
    let mut report = CycleReport {
        safepoint_wait,
        mark_pause: Duration::ZERO,
        flip_pause: Duration::ZERO,
        pause: Duration::ZERO,
        verify_time,
        floor: None,
        compact_wall: Duration::ZERO,
        used_words: top,
        live_words: 0,
        objects: 0,
        pages: 0,
        rss_at_flip: None,
        rss_peak: None,
        backend: None,
        timeline: Timeline {
            span: (span_start, span_start),
            excluded: Vec::new(),
            stalls: Vec::new(),
        },
        verified: Ok(()),
        corruption_applied: false,
        resumed_ns: span_start,
    };
    let before = match before {
        Ok(b) => b,
        Err(e) => {
            report.verified = Err(CycleFailure::Before(e));
            return Ok(report);
        }
    };

    let m0 = Instant::now();
    let marks = match mark(region, &shapes, roots.iter().copied(), heap.words(), top) {
        Ok(m) => m,
        Err(e) => {
            report.verified = Err(CycleFailure::Mark(e));
            return Ok(report);
        }
    };
    let plan = Arc::new(
        Plan::new(marks, region.page_size(), Arc::clone(&shapes)).with_corruption(opts.corruption),
    );
    report.mark_pause = m0.elapsed();
    report.live_words = plan.live_words();
    report.objects = plan.objects();
    report.pages = plan.pages();

    if opts.floor {
        let f0 = ns(heap);
        let mut buf = vec![1u8; plan.live_words() * 8];
        report.floor = Some(memcpy_live(&stw, region, &plan, &mut buf));
        drop(buf);
        excluded.push((f0, ns(heap) - f0));
    }

    rss::reset_peak();
    report.rss_at_flip = rss::current();
    let f0 = Instant::now();
    heap.forward_roots(|r| plan.forward(r as usize) as u64);
    let inner = &heap.inner;
    inner.epoch.fetch_add(1, Ordering::AcqRel);
    inner.top.store(plan.live_end(), Ordering::Release);
    inner.alloc_open.store(false, Ordering::Release);
    let running = backend
        .flip(heap, Arc::clone(&plan))
        .map_err(CycleError::Backend)?;
    report.flip_pause = f0.elapsed();
    report.pause =
        pause_started.elapsed() - verify_time - report.floor.map_or(Duration::ZERO, |f| f.wall);
    let stw = if opts.idle_mutators {
        Some(stw)
    } else {
        drop(stw);
        None
    };
    report.resumed_ns = ns(heap);

    let c0 = Instant::now();
    let stats = B::compact(running).map_err(CycleError::Backend)?;
    report.compact_wall = c0.elapsed();
    report.rss_peak = rss::peak();
    let span_end = ns(heap);
    report.backend = Some(stats);
    drop(stw);

    let (stw, _) = heap.stop_the_world();
    let v1 = Instant::now();
    let roots = heap.roots();
    let deltas = heap.take_deltas();
    report.verified = check(region, &shapes, plan.live_end(), &roots, Sums::All)
        .and_then(|after| {
            if after.objects != plan.objects() {
                return Err(VerifyError::ObjectCount {
                    expected: plan.objects(),
                    found: after.objects,
                });
            }
            let expected = before.checksum_reachable.wrapping_add(deltas);
            if after.checksum_all != expected {
                return Err(VerifyError::Checksum {
                    expected,
                    found: after.checksum_all,
                });
            }
            Ok(())
        })
        .map_err(CycleFailure::After);
    verify_time += v1.elapsed();
    report.verify_time = verify_time;
    report.corruption_applied = plan.corruption_applied();
    let mut stalls: Vec<(u32, Vec<Stall>)> = heap.take_stalls();
    if let Some(stats) = &report.backend {
        // Each fault stall goes to the mutator running on the faulting thread; the slow
        // operations around them are the mutator's own work, not counted.
        for (thread, start, len) in B::fault_stalls(stats) {
            if let Some((_, list)) = stalls.iter_mut().find(|(t, _)| *t == thread && *t != 0) {
                list.push(Stall {
                    start_ns: heap.clock_ns(start),
                    len_ns: u64::try_from(len.as_nanos()).unwrap_or(u64::MAX),
                    parked: false,
                });
            }
        }
    }
    let stalls = stalls.into_iter().map(|(_, list)| list).collect();
    report.timeline = Timeline {
        span: (span_start, span_end),
        excluded,
        stalls,
    };
    inner.alloc_open.store(true, Ordering::Release);
    drop(stw);
    Ok(report)
}
