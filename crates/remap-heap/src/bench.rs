//! The benchmark behind `remap compact`: the same heap, workload and seed compacted by MOVE
//! (batched), MOVE page by page and COPY, interleaved in one run, with a memcpy of the live bytes
//! measured in every cycle as the physical floor.
//!
//! Each publication mode gets its own heap and engine, built from the same seed (so the same
//! objects), and only one heap's mutators run at a time: the others are parked at a safepoint.
//! The library returns a [`BenchReport`]; the binary prints it.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use remap::{Region, Thp};
use remap_compact::{CompactError, Engine, Publication};
use serde::Serialize;

use crate::collector::{CycleError, CycleOptions, CycleReport};
use crate::engine::{EngineBackend, FaultMode};
use crate::heap::StopTheWorld;
use crate::mmu::MmuPoint;
use crate::plan::Corruption;
use crate::runner::{Session, SessionConfig, SessionError};
use crate::workload::graph::Graph;
use crate::workload::kv::Cache;
use crate::workload::trees::Trees;
use crate::workload::{NewWorkload, WorkloadKind};

/// A publication mode under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// [`Publication::Move`]: batched runs.
    Move,
    /// [`Publication::MoveSingle`]: one page per ioctl.
    MoveSingle,
    /// [`Publication::Copy`]: ART's baseline.
    Copy,
}

impl Mode {
    /// Every mode, in the order printed.
    pub const ALL: [Mode; 3] = [Mode::Move, Mode::MoveSingle, Mode::Copy];

    /// The name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Move => "move",
            Mode::MoveSingle => "move-single",
            Mode::Copy => "copy",
        }
    }

    fn publication(self) -> Publication {
        match self {
            Mode::Move => Publication::Move,
            Mode::MoveSingle => Publication::MoveSingle,
            Mode::Copy => Publication::Copy,
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// Heap size in bytes (per mode).
    pub heap_bytes: usize,
    /// Live fraction of the heap at each cycle.
    pub live_ratio: f64,
    /// The workload.
    pub workload: WorkloadKind,
    /// Mutator threads.
    pub mutators: usize,
    /// How faults are served.
    pub faults: FaultMode,
    /// The modes, interleaved.
    pub modes: Vec<Mode>,
    /// Measured cycles per mode (after one warm-up cycle).
    pub reps: usize,
    /// THP on the heap (`MADV_HUGEPAGE`) or off (`MADV_NOHUGEPAGE`).
    pub thp: bool,
    /// The seed.
    pub seed: u64,
    /// Testing the harness: break every compacted heap this way.
    pub corruption: Option<Corruption>,
    /// The batch of the `move` mode's engine (the longest run one MOVE publishes), pages; None:
    /// the engine's default (512, one PMD). The other modes keep the default.
    pub batch_pages: Option<usize>,
    /// Keep the mutators stopped during compaction (the crossover's "without live mutators").
    pub idle_mutators: bool,
}

impl BenchConfig {
    /// The defaults of a full run: 1 GiB, 50 % live, trees, one mutator, SIGBUS faults, every
    /// mode, three repetitions, THP off.
    pub fn standard() -> Self {
        BenchConfig {
            heap_bytes: 1 << 30,
            live_ratio: 0.5,
            workload: WorkloadKind::Trees,
            mutators: 1,
            faults: FaultMode::Sigbus,
            modes: Mode::ALL.to_vec(),
            reps: 3,
            thp: false,
            seed: 42,
            corruption: None,
            batch_pages: None,
            idle_mutators: false,
        }
    }

    /// A run of seconds: 32 MiB, two repetitions.
    pub fn quick() -> Self {
        BenchConfig {
            heap_bytes: 32 << 20,
            reps: 2,
            ..Self::standard()
        }
    }
}

/// A median with its range over the repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `xs` (None when empty).
    pub fn of(xs: &[f64]) -> Option<Spread> {
        if xs.is_empty() {
            return None;
        }
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One cycle's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct CycleRecord {
    /// The mode.
    pub mode: Mode,
    /// The repetition (0 is the warm-up).
    pub rep: usize,
    /// Whether this was the warm-up cycle (not in the summaries).
    pub warmup: bool,
    /// Mutator threads running during compaction (0 with idle mutators).
    pub mutators: usize,
    /// Compaction-thread wall time.
    pub compaction_wall_ns: u64,
    /// Compaction-thread CPU time.
    pub compaction_cpu_ns: u64,
    /// The memcpy of the live bytes, same cycle: wall time.
    pub floor_ns: u64,
    /// The memcpy's thread CPU time.
    pub floor_cpu_ns: u64,
    /// The engine's flip (register plus mremap).
    pub flip_pause_ns: u64,
    /// The engine's set-up after the flip (dependency counts, handlers).
    pub engine_setup_ns: u64,
    /// Marking plus the plan.
    pub mark_pause_ns: u64,
    /// Time for the mutators to reach the safepoint.
    pub safepoint_ns: u64,
    /// The mutators' whole pause (without the benchmark's verification and floor).
    pub pause_ns: u64,
    /// Heap bytes in use before the cycle.
    pub used_bytes: u64,
    /// Live bytes.
    pub live_bytes: u64,
    /// To-space pages compacted.
    pub pages: u64,
    /// Pages filled by the compaction thread.
    pub by_compactor: u64,
    /// Pages filled on a mutator's fault (handler threads or SIGBUS).
    pub by_faults: u64,
    /// Pages published by MOVE.
    pub published_move: u64,
    /// Pages published by COPY.
    pub published_copy: u64,
    /// Publication ioctls.
    pub ioctls: u64,
    /// Mutator faults on the heap during the cycle.
    pub faults: u64,
    /// TLB shootdowns during the cycle, all CPUs.
    pub tlb_shootdowns: Option<u64>,
    /// TLB shootdowns per published page.
    pub tlb_per_page: Option<f64>,
    /// Resident memory at the flip.
    pub rss_at_flip: Option<u64>,
    /// Peak resident memory from the flip to the end of compaction.
    pub rss_peak: Option<u64>,
    /// Stall per fault, percentiles in ns.
    pub stall_p50_ns: u64,
    /// See `stall_p50_ns`.
    pub stall_p99_ns: u64,
    /// See `stall_p50_ns`.
    pub stall_max_ns: u64,
    /// Minimum mutator utilisation over the whole cycle (the stop-the-world pause included) at
    /// the windows of [`MMU_WINDOWS_MS`].
    pub mmu: Vec<MmuPoint>,
    /// The same over the concurrent phase only (from the mutators' resumption after the flip to
    /// the end of compaction): what the publication mode changes.
    pub mmu_concurrent: Vec<MmuPoint>,
    /// The length of the concurrent phase, ns.
    pub concurrent_ns: u64,
    /// Where the compaction thread's time went ([`remap_compact::CompactorTime`]): claiming and
    /// filling pages (relocation and reference rewriting), thread CPU ns.
    pub compactor_fill_cpu_ns: u64,
    /// The publication ioctls, thread CPU ns.
    pub compactor_publish_cpu_ns: u64,
    /// Waiting for pages mutators took over, and for the last pages, thread CPU ns.
    pub compactor_wait_cpu_ns: u64,
    /// `MADV_DONTNEED` of surplus from-space, thread CPU ns.
    pub compactor_release_cpu_ns: u64,
    /// The same four phases in wall time, ns: fill, publish, wait, release.
    pub compactor_phase_wall_ns: [u64; 4],
    /// Minor page faults the compaction thread took.
    pub compactor_minor_faults: Option<u64>,
    /// The sum of every fault's stall (all mutators), ns.
    pub fault_stall_total_ns: u64,
    /// Whether the heap verified before and after.
    pub verified: bool,
    /// What failed verification.
    pub failure: Option<String>,
}

/// One mode over its measured repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct ModeSummary {
    /// The mode.
    pub mode: Mode,
    /// Measured cycles.
    pub reps: usize,
    /// Compaction-thread wall time, ms.
    pub compaction_wall_ms: Spread,
    /// Compaction-thread CPU time, ms.
    pub compaction_cpu_ms: Spread,
    /// Compaction-thread wall time over COPY's, per repetition.
    pub vs_copy: Option<Spread>,
    /// Compaction-thread CPU time over COPY's, per repetition.
    pub vs_copy_cpu: Option<Spread>,
    /// Compaction-thread wall time over the memcpy floor of the same cycle.
    pub vs_floor: Spread,
    /// Compaction-thread CPU time over the memcpy's CPU time, same cycle.
    pub vs_floor_cpu: Spread,
    /// The memcpy floor, ms.
    pub floor_ms: Spread,
    /// The memcpy floor's CPU time, ms.
    pub floor_cpu_ms: Spread,
    /// The engine's flip pause, µs.
    pub flip_pause_us: Spread,
    /// Marking pause, ms.
    pub mark_pause_ms: Spread,
    /// The whole mutator pause, ms.
    pub pause_ms: Spread,
    /// Stall per fault over all repetitions: p50, µs.
    pub stall_p50_us: f64,
    /// p99, µs.
    pub stall_p99_us: f64,
    /// max, µs.
    pub stall_max_us: f64,
    /// Stall percentiles (percentile, µs) for the chart.
    pub stall_curve: Vec<(f64, f64)>,
    /// MMU over the whole cycle at each window (ms), median over repetitions.
    pub mmu: Vec<(f64, Spread)>,
    /// MMU over the concurrent phase at each window (ms), median over repetitions.
    pub mmu_concurrent: Vec<(f64, Spread)>,
    /// Largest peak RSS, bytes.
    pub rss_peak: Option<u64>,
    /// Largest growth of RSS over the flip, bytes.
    pub rss_growth: Option<u64>,
    /// Live bytes (median).
    pub live_bytes: u64,
    /// TLB shootdowns per published page (median).
    pub tlb_per_page: Option<f64>,
    /// Pages filled by the compaction thread, all repetitions.
    pub by_compactor: u64,
    /// Pages filled on mutator faults, all repetitions.
    pub by_faults: u64,
    /// The compaction thread's wall time per page it published, phase by phase (medians).
    pub per_page: PerPage,
    /// The share of the concurrent phase the mutators spent stalled in faults (the sum of
    /// every fault's stall over mutators times the phase), median.
    pub fault_stall_share: f64,
    /// Every cycle of this mode verified, warm-up included.
    pub verified: bool,
}

/// The compaction thread's time per page it published, phase by phase, ns (medians over the
/// repetitions; see [`remap_compact::CompactorTime`]). The phases are thread CPU time.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PerPage {
    /// Thread CPU time, all of it.
    pub cpu: f64,
    /// Wall time, all of it.
    pub wall: f64,
    /// Claiming and filling pages (relocation, reference rewriting, first touches of fresh
    /// buffers), CPU.
    pub fill: f64,
    /// The MOVE or COPY ioctls, CPU.
    pub publish: f64,
    /// Waiting for pages mutators took over, CPU (spinning and yielding).
    pub wait: f64,
    /// `MADV_DONTNEED` of surplus from-space, CPU.
    pub release: f64,
    /// The memcpy floor per page of the cycle (CPU time).
    pub floor_cpu: f64,
    /// Minor faults of the compaction thread per page it published.
    pub minor_faults: f64,
}

impl PerPage {
    /// The per-page figures of one cycle.
    pub fn of(c: &CycleRecord) -> PerPage {
        let own = c.by_compactor.max(1) as f64;
        let per = |ns: u64| ns as f64 / own;
        PerPage {
            cpu: per(c.compaction_cpu_ns),
            wall: per(c.compaction_wall_ns),
            fill: per(c.compactor_fill_cpu_ns),
            publish: per(c.compactor_publish_cpu_ns),
            wait: per(c.compactor_wait_cpu_ns),
            release: per(c.compactor_release_cpu_ns),
            floor_cpu: c.floor_cpu_ns as f64 / c.pages.max(1) as f64,
            minor_faults: c.compactor_minor_faults.map_or(f64::NAN, per),
        }
    }

    /// The field-by-field median of `all` (zeros when empty).
    pub fn median(all: &[PerPage]) -> PerPage {
        let m = |f: fn(&PerPage) -> f64| {
            Spread::of(&all.iter().map(f).collect::<Vec<_>>()).map_or(0.0, |s| s.median)
        };
        PerPage {
            cpu: m(|p| p.cpu),
            wall: m(|p| p.wall),
            fill: m(|p| p.fill),
            publish: m(|p| p.publish),
            wait: m(|p| p.wait),
            release: m(|p| p.release),
            floor_cpu: m(|p| p.floor_cpu),
            minor_faults: m(|p| p.minor_faults),
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// What ran.
    pub config: BenchConfig,
    /// Every cycle.
    pub cycles: Vec<CycleRecord>,
    /// Per mode.
    pub modes: Vec<ModeSummary>,
    /// What the mutators' own checks found.
    pub mutator_errors: Vec<String>,
    /// Seconds.
    pub elapsed_s: f64,
}

impl BenchReport {
    /// Whether every cycle verified and no mutator found anything wrong.
    pub fn all_verified(&self) -> bool {
        self.mutator_errors.is_empty() && self.cycles.iter().all(|c| c.verified)
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The engine could not be built (no userfaultfd, no MOVE).
    #[error("building the engine: {0}")]
    Engine(#[source] CompactError),
    /// The heap could not be mapped.
    #[error("mapping the heap: {0}")]
    Region(#[from] remap::region::RegionError),
    /// The live structure did not fit.
    #[error(transparent)]
    Setup(#[from] SessionError),
    /// A cycle failed in the engine.
    #[error("a {mode} cycle failed: {source}")]
    Cycle {
        /// The mode.
        mode: &'static str,
        /// The engine's error.
        source: CompactError,
    },
    /// The mutators never filled the heap.
    #[error("the mutators did not fill the heap within {0:?}")]
    Stuck(Duration),
}

/// The MMU windows, ms.
pub const MMU_WINDOWS_MS: [f64; 12] = [
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0,
];

/// Runs the benchmark, telling `progress` what it is doing and how far it got (`done`, `total`).
///
/// # Errors
///
/// [`BenchError`]; a failed verification is in the report instead.
pub fn run(
    config: &BenchConfig,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<BenchReport, BenchError> {
    match config.workload {
        WorkloadKind::Trees => run_with::<Trees>(config, progress),
        WorkloadKind::Kv => run_with::<Cache>(config, progress),
        WorkloadKind::Graph => run_with::<Graph>(config, progress),
    }
}

fn run_with<W: NewWorkload>(
    config: &BenchConfig,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let session_config = SessionConfig {
        heap_bytes: config.heap_bytes,
        live_ratio: config.live_ratio,
        mutators: config.mutators,
        seed: config.seed,
    };
    let total = (config.modes.len() * (config.reps + 1)) as u64;
    let mut sessions = Vec::new();
    for &mode in &config.modes {
        progress(&format!("setting up the {} heap", mode.name()), 0, total);
        let region = Region::builder(config.heap_bytes)
            .huge_aligned(true)
            .thp(if config.thp { Thp::Huge } else { Thp::NoHuge })
            .build()?;
        let mut builder = Engine::builder(region).publication(mode.publication());
        // The crossover varies MOVE's run length against COPY at its default.
        if let (Mode::Move, Some(n)) = (mode, config.batch_pages) {
            builder = builder.batch_pages(n);
        }
        let engine = builder.build().map_err(BenchError::Engine)?;
        sessions.push((mode, Session::<W>::start(&session_config, engine)?));
    }
    let mut paused: Vec<Option<StopTheWorld<'_>>> = sessions
        .iter()
        .map(|(_, s)| Some(s.heap().stop_the_world().0))
        .collect();
    let mut cycles = Vec::new();
    let mut hists: Vec<Histogram<u64>> = config
        .modes
        .iter()
        .map(|_| Histogram::new(3).expect("3 significant digits is valid"))
        .collect();
    let mut done = 0;
    let opts = CycleOptions {
        corruption: config.corruption,
        floor: true,
        idle_mutators: config.idle_mutators,
    };
    let mut backend = EngineBackend {
        faults: config.faults,
    };
    for rep in 0..=config.reps {
        let n = sessions.len();
        for k in 0..n {
            // Rotate the order so that no mode always runs first.
            let i = (k + rep) % n;
            let (mode, session) = &sessions[i];
            progress(&format!("{} cycle {rep}", mode.name()), done, total);
            paused[i] = None;
            let timeout = Duration::from_secs(600);
            if !session.wait_full(timeout) {
                if session.failed() {
                    break;
                }
                return Err(BenchError::Stuck(timeout));
            }
            let report = session.cycle(&mut backend, opts).map_err(|e| match e {
                CycleError::Backend(source) => BenchError::Cycle {
                    mode: mode.name(),
                    source,
                },
            })?;
            paused[i] = Some(session.heap().stop_the_world().0);
            if let Some(stats) = &report.backend {
                if rep > 0 {
                    hists[i].add(&stats.stall_ns).ok();
                }
            }
            let live = if config.idle_mutators {
                0
            } else {
                config.mutators
            };
            cycles.push(record(*mode, rep, live, &report));
            done += 1;
        }
    }
    progress("done", total, total);
    drop(paused);
    let mut mutator_errors = Vec::new();
    for (_, s) in sessions {
        mutator_errors.extend(s.finish().into_iter().map(|e| e.to_string()));
    }
    let modes = config
        .modes
        .iter()
        .zip(&hists)
        .map(|(&m, h)| summarise(m, &cycles, h))
        .collect();
    Ok(BenchReport {
        config: config.clone(),
        cycles,
        modes,
        mutator_errors,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn record(
    mode: Mode,
    rep: usize,
    mutators: usize,
    r: &CycleReport<remap_compact::CycleStats>,
) -> CycleRecord {
    let s = r.backend.as_ref();
    let mmu = r.timeline.mmu(&MMU_WINDOWS_MS);
    let mut concurrent = r.timeline.clone();
    concurrent.span.0 = r.resumed_ns.min(concurrent.span.1);
    let mmu_concurrent = concurrent.mmu(&MMU_WINDOWS_MS);
    CycleRecord {
        mode,
        rep,
        warmup: rep == 0,
        mutators,
        compaction_wall_ns: s.map_or(0, |s| nanos(s.compaction_wall)),
        compaction_cpu_ns: s.map_or(0, |s| nanos(s.compaction_cpu)),
        floor_ns: r.floor.map_or(0, |f| nanos(f.wall)),
        floor_cpu_ns: r.floor.map_or(0, |f| nanos(f.cpu)),
        flip_pause_ns: s.map_or(0, |s| nanos(s.flip_pause)),
        engine_setup_ns: s.map_or(0, |s| nanos(s.setup)),
        mark_pause_ns: nanos(r.mark_pause),
        safepoint_ns: nanos(r.safepoint_wait),
        pause_ns: nanos(r.pause),
        used_bytes: r.used_words as u64 * 8,
        live_bytes: r.live_words as u64 * 8,
        pages: r.pages as u64,
        by_compactor: s.map_or(0, |s| s.by_compactor),
        by_faults: s.map_or(0, |s| s.by_faults()),
        published_move: s.map_or(0, |s| s.published_move),
        published_copy: s.map_or(0, |s| s.published_copy),
        ioctls: s.map_or(0, |s| s.ioctls),
        faults: s.map_or(0, |s| s.faults),
        tlb_shootdowns: s.and_then(|s| s.tlb_shootdowns),
        tlb_per_page: s.and_then(|s| s.tlb_per_page()),
        rss_at_flip: r.rss_at_flip,
        rss_peak: r.rss_peak,
        stall_p50_ns: s.map_or(0, |s| s.stall_ns.value_at_quantile(0.5)),
        stall_p99_ns: s.map_or(0, |s| s.stall_ns.value_at_quantile(0.99)),
        stall_max_ns: s.map_or(0, |s| s.stall_ns.max()),
        mmu,
        mmu_concurrent,
        concurrent_ns: concurrent.span.1 - concurrent.span.0,
        compactor_fill_cpu_ns: s.map_or(0, |s| nanos(s.compactor_time.fill.cpu)),
        compactor_publish_cpu_ns: s.map_or(0, |s| nanos(s.compactor_time.publish.cpu)),
        compactor_wait_cpu_ns: s.map_or(0, |s| nanos(s.compactor_time.wait.cpu)),
        compactor_release_cpu_ns: s.map_or(0, |s| nanos(s.compactor_time.release.cpu)),
        compactor_phase_wall_ns: s.map_or([0; 4], |s| {
            let t = &s.compactor_time;
            [t.fill, t.publish, t.wait, t.release].map(|p| nanos(p.wall))
        }),
        compactor_minor_faults: s.and_then(|s| s.compactor_time.minor_faults),
        fault_stall_total_ns: s.map_or(0, |s| (s.stall_ns.mean() * s.stall_ns.len() as f64) as u64),
        verified: r.verified.is_ok(),
        failure: r.verified.as_ref().err().map(|e| e.to_string()),
    }
}

fn summarise(mode: Mode, cycles: &[CycleRecord], hist: &Histogram<u64>) -> ModeSummary {
    let mine: Vec<&CycleRecord> = cycles
        .iter()
        .filter(|c| c.mode == mode && !c.warmup)
        .collect();
    let spread = |f: &dyn Fn(&CycleRecord) -> f64| {
        Spread::of(&mine.iter().map(|c| f(c)).collect::<Vec<_>>()).unwrap_or(Spread {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        })
    };
    let copy_of = |rep: usize| cycles.iter().find(|c| c.mode == Mode::Copy && c.rep == rep);
    let vs_copy: Vec<f64> = mine
        .iter()
        .filter_map(|c| {
            copy_of(c.rep).map(|copy| c.compaction_wall_ns as f64 / copy.compaction_wall_ns as f64)
        })
        .collect();
    let vs_copy_cpu: Vec<f64> = mine
        .iter()
        .filter_map(|c| {
            copy_of(c.rep).map(|copy| c.compaction_cpu_ns as f64 / copy.compaction_cpu_ns as f64)
        })
        .collect();
    let us = |ns: u64| ns as f64 / 1e3;
    let mmu = MMU_WINDOWS_MS
        .iter()
        .enumerate()
        .map(|(k, &w)| {
            (
                w,
                spread(&|c: &CycleRecord| c.mmu.get(k).map_or(f64::NAN, |p| p.mmu)),
            )
        })
        .collect();
    let mmu_concurrent = MMU_WINDOWS_MS
        .iter()
        .enumerate()
        .map(|(k, &w)| {
            (
                w,
                spread(&|c: &CycleRecord| c.mmu_concurrent.get(k).map_or(f64::NAN, |p| p.mmu)),
            )
        })
        .collect();
    let stall_curve = [
        1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0,
    ]
    .iter()
    .map(|&p| (p, us(hist.value_at_percentile(p))))
    .collect();
    let mut tlb: Vec<f64> = mine.iter().filter_map(|c| c.tlb_per_page).collect();
    tlb.sort_by(f64::total_cmp);
    let mut live: Vec<u64> = mine.iter().map(|c| c.live_bytes).collect();
    live.sort_unstable();
    ModeSummary {
        mode,
        reps: mine.len(),
        compaction_wall_ms: spread(&|c| c.compaction_wall_ns as f64 / 1e6),
        compaction_cpu_ms: spread(&|c| c.compaction_cpu_ns as f64 / 1e6),
        vs_copy: Spread::of(&vs_copy),
        vs_copy_cpu: Spread::of(&vs_copy_cpu),
        vs_floor: spread(&|c| c.compaction_wall_ns as f64 / c.floor_ns.max(1) as f64),
        vs_floor_cpu: spread(&|c| c.compaction_cpu_ns as f64 / c.floor_cpu_ns.max(1) as f64),
        floor_ms: spread(&|c| c.floor_ns as f64 / 1e6),
        floor_cpu_ms: spread(&|c| c.floor_cpu_ns as f64 / 1e6),
        flip_pause_us: spread(&|c| c.flip_pause_ns as f64 / 1e3),
        mark_pause_ms: spread(&|c| c.mark_pause_ns as f64 / 1e6),
        pause_ms: spread(&|c| c.pause_ns as f64 / 1e6),
        stall_p50_us: us(hist.value_at_quantile(0.5)),
        stall_p99_us: us(hist.value_at_quantile(0.99)),
        stall_max_us: us(hist.max()),
        stall_curve,
        mmu,
        mmu_concurrent,
        rss_peak: mine.iter().filter_map(|c| c.rss_peak).max(),
        rss_growth: mine
            .iter()
            .filter_map(|c| Some(c.rss_peak?.saturating_sub(c.rss_at_flip?)))
            .max(),
        live_bytes: live.get(live.len() / 2).copied().unwrap_or(0),
        tlb_per_page: tlb.get(tlb.len() / 2).copied(),
        by_compactor: mine.iter().map(|c| c.by_compactor).sum(),
        by_faults: mine.iter().map(|c| c.by_faults).sum(),
        per_page: PerPage::median(&mine.iter().map(|c| PerPage::of(c)).collect::<Vec<_>>()),
        fault_stall_share: spread(&|c| {
            c.fault_stall_total_ns as f64
                / (c.concurrent_ns.max(1) as f64 * c.mutators.max(1) as f64)
        })
        .median,
        verified: cycles.iter().filter(|c| c.mode == mode).all(|c| c.verified),
    }
}
