//! How compaction cost grows with the work: the benchmark of [`crate::bench`] at several heap
//! sizes and mutator counts, reduced to per-page costs.
//!
//! Each point of a sweep is one [`crate::bench::run`] (its modes interleaved, side by side, as
//! always); a point's per-page figures divide the compaction thread's time by the pages *it*
//! compacted and published (the mutators publish the rest on their faults), and the memcpy floor
//! by every page of the cycle (it copies all live bytes). Ratios are taken cycle by cycle against
//! the same repetition's COPY cycle and the same cycle's floor, then summarised by their median
//! and range.
//!
//! ```no_run
//! use remap_heap::bench::BenchConfig;
//! use remap_heap::sweep::{sweep, SweepPoint};
//!
//! let base = BenchConfig::quick();
//! let points = [SweepPoint { heap_bytes: 16 << 20, mutators: 1 }];
//! let report = sweep(&base, &points, &|_, _, _| {})?;
//! for cost in &report.costs {
//!     println!("{} {} ns/page", cost.mode.name(), cost.cpu_ns_per_page.median);
//! }
//! # Ok::<(), remap_heap::bench::BenchError>(())
//! ```

use serde::Serialize;

use crate::bench::{run, BenchConfig, BenchError, BenchReport, CycleRecord, Mode, PerPage, Spread};

/// One point of a sweep: a heap size and a number of mutator threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SweepPoint {
    /// Heap size per mode, bytes.
    pub heap_bytes: usize,
    /// Mutator threads per heap.
    pub mutators: usize,
}

/// The heap sizes of a full sweep: 256 MiB, 1 GiB, 4 GiB.
pub const STANDARD_HEAPS: [usize; 3] = [256 << 20, 1 << 30, 4 << 30];
/// The mutator counts of a full sweep: 1, 2, 4.
pub const STANDARD_MUTATORS: [usize; 3] = [1, 2, 4];
/// The heap sizes of a sweep of seconds: 8 and 16 MiB.
pub const QUICK_HEAPS: [usize; 2] = [8 << 20, 16 << 20];
/// The mutator counts of a sweep of seconds: 1, 2.
pub const QUICK_MUTATORS: [usize; 2] = [1, 2];

impl SweepPoint {
    /// The points along two axes: every heap size with the first mutator count, then every
    /// further mutator count at the first heap size (the mutator axis at the size that is
    /// cheapest to repeat). Empty if either list is.
    ///
    /// ```
    /// use remap_heap::sweep::SweepPoint;
    /// let p = SweepPoint::axes(&[8 << 20, 16 << 20], &[1, 2]);
    /// assert_eq!(p.len(), 3);
    /// assert_eq!(p[2], SweepPoint { heap_bytes: 8 << 20, mutators: 2 });
    /// ```
    pub fn axes(heaps: &[usize], mutators: &[usize]) -> Vec<SweepPoint> {
        let (Some(&first_heap), Some(&first_m)) = (heaps.first(), mutators.first()) else {
            return Vec::new();
        };
        heaps
            .iter()
            .map(|&heap_bytes| SweepPoint {
                heap_bytes,
                mutators: first_m,
            })
            .chain(mutators[1..].iter().map(|&mutators| SweepPoint {
                heap_bytes: first_heap,
                mutators,
            }))
            .collect()
    }
}

/// Per-page costs of one mode at one point, over the measured repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct PageCost {
    /// The point.
    pub point: SweepPoint,
    /// The mode.
    pub mode: Mode,
    /// To-space pages per cycle (median).
    pub pages: u64,
    /// The share of them the compaction thread compacted and published (the rest: mutator
    /// faults), median.
    pub compactor_share: f64,
    /// Compaction-thread CPU time per page it published, ns.
    pub cpu_ns_per_page: Spread,
    /// Compaction-thread wall time per page it published, ns.
    pub wall_ns_per_page: Spread,
    /// The memcpy floor's CPU time per page of the cycle, ns.
    pub floor_cpu_ns_per_page: Spread,
    /// `cpu_ns_per_page` over the floor's per-page CPU time, same cycle.
    pub vs_floor_cpu: Spread,
    /// `cpu_ns_per_page` over COPY's in the same repetition (None without COPY).
    pub vs_copy_cpu: Option<Spread>,
    /// The compaction thread's whole CPU time over COPY's in the same repetition (the P3
    /// ratio; it differs from the per-page one when the mutators' faults take a different share
    /// of the pages in the two modes).
    pub vs_copy_cpu_total: Option<Spread>,
    /// `wall_ns_per_page` over COPY's in the same repetition.
    pub vs_copy_wall: Option<Spread>,
    /// The compaction thread's wall time per page it published, phase by phase (medians): what
    /// grows when `cpu_ns_per_page` grows.
    pub breakdown: PerPage,
    /// TLB shootdowns per published page (median).
    pub tlb_per_page: Option<f64>,
    /// Stall per fault, p50 over the repetitions, µs.
    pub stall_p50_us: f64,
    /// Every cycle of this mode at this point verified.
    pub verified: bool,
}

/// A whole sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// The configuration every point started from (its heap size and mutators are replaced).
    pub base: BenchConfig,
    /// One benchmark run per point.
    pub runs: Vec<(SweepPoint, BenchReport)>,
    /// Per-page costs, point by point, mode by mode.
    pub costs: Vec<PageCost>,
    /// Seconds.
    pub elapsed_s: f64,
}

impl SweepReport {
    /// Whether every cycle of every point verified.
    pub fn all_verified(&self) -> bool {
        self.runs.iter().all(|(_, r)| r.all_verified())
    }
}

/// Runs `base` at every point, telling `progress` which point it is at (`done`, `total`).
///
/// # Errors
///
/// The first point's [`BenchError`] that stops it.
pub fn sweep(
    base: &BenchConfig,
    points: &[SweepPoint],
    progress: &dyn Fn(&str, u64, u64),
) -> Result<SweepReport, BenchError> {
    let started = std::time::Instant::now();
    let mut runs = Vec::new();
    let mut costs = Vec::new();
    let total = points.len() as u64;
    for (k, &point) in points.iter().enumerate() {
        let config = BenchConfig {
            heap_bytes: point.heap_bytes,
            mutators: point.mutators,
            ..base.clone()
        };
        let label = format!(
            "{} MiB, {} mutator(s)",
            point.heap_bytes >> 20,
            point.mutators
        );
        let report = run(&config, &|msg, _, _| {
            progress(&format!("{label}: {msg}"), k as u64, total);
        })?;
        costs.extend(config.modes.iter().map(|&m| page_cost(point, m, &report)));
        runs.push((point, report));
    }
    progress("done", total, total);
    Ok(SweepReport {
        base: base.clone(),
        runs,
        costs,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// The compaction thread's CPU and wall time per page it published, and the floor's per page.
fn per_page(c: &CycleRecord) -> (f64, f64, f64) {
    let p = PerPage::of(c);
    (p.cpu, p.wall, p.floor_cpu)
}

fn median(v: &[f64]) -> f64 {
    Spread::of(v).map_or(f64::NAN, |s| s.median)
}

fn nan_spread() -> Spread {
    Spread {
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
    }
}

/// The per-page costs of `mode` in `report`.
pub fn page_cost(point: SweepPoint, mode: Mode, report: &BenchReport) -> PageCost {
    let measured = |m: Mode| {
        report
            .cycles
            .iter()
            .filter(move |c| c.mode == m && !c.warmup)
    };
    let mine: Vec<&CycleRecord> = measured(mode).collect();
    let copy_of = |rep: usize| measured(Mode::Copy).find(|c| c.rep == rep);
    let spread = |f: &dyn Fn(&CycleRecord) -> f64| {
        Spread::of(&mine.iter().map(|c| f(c)).collect::<Vec<_>>()).unwrap_or_else(nan_spread)
    };
    let vs_copy = |k: usize| -> Option<Spread> {
        let ratios: Vec<f64> = mine
            .iter()
            .filter_map(|c| {
                let copy = copy_of(c.rep)?;
                let (a, b) = (per_page(c), per_page(copy));
                Some(if k == 0 { a.0 / b.0 } else { a.1 / b.1 })
            })
            .collect();
        Spread::of(&ratios)
    };
    let summary = report.modes.iter().find(|s| s.mode == mode);
    PageCost {
        point,
        mode,
        pages: median(&mine.iter().map(|c| c.pages as f64).collect::<Vec<_>>()) as u64,
        compactor_share: median(
            &mine
                .iter()
                .map(|c| c.by_compactor as f64 / c.pages.max(1) as f64)
                .collect::<Vec<_>>(),
        ),
        cpu_ns_per_page: spread(&|c| per_page(c).0),
        wall_ns_per_page: spread(&|c| per_page(c).1),
        floor_cpu_ns_per_page: spread(&|c| per_page(c).2),
        vs_floor_cpu: spread(&|c| {
            let (cpu, _, floor) = per_page(c);
            cpu / floor.max(1e-9)
        }),
        vs_copy_cpu: vs_copy(0),
        vs_copy_cpu_total: summary.and_then(|s| s.vs_copy_cpu),
        vs_copy_wall: vs_copy(1),
        breakdown: PerPage::median(&mine.iter().map(|c| PerPage::of(c)).collect::<Vec<_>>()),
        tlb_per_page: summary.and_then(|s| s.tlb_per_page),
        stall_p50_us: summary.map_or(f64::NAN, |s| s.stall_p50_us),
        verified: report
            .cycles
            .iter()
            .filter(|c| c.mode == mode)
            .all(|c| c.verified),
    }
}
