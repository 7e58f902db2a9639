//! The compaction section: the headline of `remap compact` in seconds. A small heap of the
//! `remap-heap` crate compacted by batched MOVE, MOVE page by page and COPY, interleaved in one
//! run with a mutator live, each mode's compaction-thread CPU time put against COPY's (same
//! repetition) and against a memcpy of the live bytes (same cycle).

use remap_heap::bench::{BenchConfig as HeapBenchConfig, Mode, Spread};
use remap_heap::sweep::{page_cost, SweepPoint};
use remap_heap::workload::WorkloadKind;
use serde::Serialize;

/// What the compaction section runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionConfig {
    /// Heap size per mode, bytes.
    pub heap_bytes: usize,
    /// Measured cycles per mode (after one warm-up).
    pub reps: usize,
    /// Mutator threads, live during compaction.
    pub mutators: usize,
    /// Live fraction of the heap.
    pub live_ratio: f64,
}

impl CompactionConfig {
    /// The section of the default run: a 64 MiB key-value heap, 50 % live, one mutator, three
    /// repetitions per mode (a few seconds on 2 idle cores).
    pub fn standard() -> Self {
        CompactionConfig {
            heap_bytes: 64 << 20,
            reps: 3,
            mutators: 1,
            live_ratio: 0.5,
        }
    }

    /// A section of a second or two: 16 MiB, two repetitions.
    pub fn quick() -> Self {
        CompactionConfig {
            heap_bytes: 16 << 20,
            reps: 2,
            ..Self::standard()
        }
    }

    fn heap_config(&self, seed: u64) -> HeapBenchConfig {
        HeapBenchConfig {
            heap_bytes: self.heap_bytes,
            live_ratio: self.live_ratio,
            workload: WorkloadKind::Kv,
            mutators: self.mutators,
            modes: Mode::ALL.to_vec(),
            reps: self.reps,
            seed,
            ..HeapBenchConfig::standard()
        }
    }
}

/// One publication mode of the compaction section (the `compaction` record of `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct CompactionMeasurement {
    /// `move` (batched), `move-single` or `copy`.
    pub mode: &'static str,
    /// Heap size, bytes.
    pub heap_bytes: u64,
    /// Live bytes compacted per cycle (median).
    pub live_bytes: u64,
    /// Mutator threads live during compaction.
    pub mutators: usize,
    /// Measured cycles.
    pub reps: usize,
    /// Compaction-thread CPU time, ms.
    pub compaction_cpu_ms: Spread,
    /// Compaction-thread wall time, ms.
    pub compaction_wall_ms: Spread,
    /// Compaction-thread CPU time over COPY's in the same repetition.
    pub vs_copy_cpu: Option<Spread>,
    /// Compaction-thread wall time over COPY's in the same repetition.
    pub vs_copy_wall: Option<Spread>,
    /// Compaction-thread CPU time over the memcpy of the live bytes, same cycle.
    pub vs_floor_cpu: Spread,
    /// Compaction-thread CPU time per page it published, ns.
    pub cpu_ns_per_page: Spread,
    /// The share of the pages the compaction thread published (the rest: mutator faults).
    pub compactor_share: f64,
    /// TLB shootdowns per published page (median).
    pub tlb_per_page: Option<f64>,
    /// Every cycle (warm-up included) verified: the reachable graph's checksum and every
    /// reference's target.
    pub verified: bool,
}

/// Runs the section; `Err` when it cannot run here (no MOVE, the heap does not fit).
pub(crate) fn measure(
    config: &CompactionConfig,
    seed: u64,
    progress: &dyn Fn(&str),
) -> Result<Vec<CompactionMeasurement>, String> {
    let heap_config = config.heap_config(seed);
    let report = remap_heap::bench::run(&heap_config, &|msg, _, _| progress(msg))
        .map_err(|e| e.to_string())?;
    let point = SweepPoint {
        heap_bytes: config.heap_bytes,
        mutators: config.mutators,
    };
    let verified = report.mutator_errors.is_empty();
    Ok(report
        .modes
        .iter()
        .map(|m| {
            let cost = page_cost(point, m.mode, &report);
            CompactionMeasurement {
                mode: m.mode.name(),
                heap_bytes: config.heap_bytes as u64,
                live_bytes: m.live_bytes,
                mutators: config.mutators,
                reps: m.reps,
                compaction_cpu_ms: m.compaction_cpu_ms,
                compaction_wall_ms: m.compaction_wall_ms,
                vs_copy_cpu: m.vs_copy_cpu,
                vs_copy_wall: m.vs_copy,
                vs_floor_cpu: m.vs_floor_cpu,
                cpu_ns_per_page: cost.cpu_ns_per_page,
                compactor_share: cost.compactor_share,
                tlb_per_page: m.tlb_per_page,
                verified: verified && m.verified,
            }
        })
        .collect())
}
