//! Minimum mutator utilisation (Cheng and Blelloch; Printezis 2006): over every window of a given
//! length, the smallest fraction of the mutators' time spent doing their own work rather than
//! parked at a safepoint or stalled on a fault.
//!
//! What counts as a stall is exact, not inferred: a mutator's safepoint parks (it records them)
//! and each of its faults on a page not yet published, as the engine timed them (from the
//! SIGBUS handler's start, or the handler thread reading the fault, to the page being there),
//! matched to the mutator by kernel thread id. An operation that merely took long (preempted by
//! other load, or doing the work of a fault and then its own) is not counted whole: only its
//! faults are. The time line has a resolution of [`BIN_NS`]; a window is a whole number of bins.

use serde::Serialize;

use crate::heap::Stall;

/// The time line of one cycle: a span, cut-outs that do not count (the benchmark's own
/// verification pauses), and each mutator's stalls.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The span, in the heap's clock (nanoseconds).
    pub span: (u64, u64),
    /// Intervals `(start, len)` removed from the time line (verification, the floor's memcpy).
    pub excluded: Vec<(u64, u64)>,
    /// Each mutator's stalls.
    pub stalls: Vec<Vec<Stall>>,
}

/// One point of an MMU curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MmuPoint {
    /// The window, in milliseconds.
    pub window_ms: f64,
    /// The minimum utilisation over all windows of that length, 0..=1.
    pub mmu: f64,
}

/// The resolution of the time line, ns.
pub const BIN_NS: u64 = 10_000;

impl Timeline {
    /// Maps a time to the time line with the cut-outs removed.
    fn effective(&self, t: u64) -> u64 {
        let t = t.clamp(self.span.0, self.span.1);
        let cut: u64 = self
            .excluded
            .iter()
            .map(|&(s, l)| {
                let (s, e) = (s.max(self.span.0), (s + l).min(self.span.1));
                if t <= s || e <= s {
                    0
                } else {
                    t.min(e) - s
                }
            })
            .sum();
        t - self.span.0 - cut
    }

    /// The effective length of the time line, in nanoseconds.
    pub fn len_ns(&self) -> u64 {
        self.effective(self.span.1)
    }

    /// The stalled nanoseconds (summed over mutators) per bin of the effective time line.
    fn bins(&self) -> Vec<f64> {
        let n = self.len_ns().div_ceil(BIN_NS) as usize;
        let mut bins = vec![0.0f64; n.max(1)];
        for m in &self.stalls {
            for s in m {
                let (a, b) = (
                    self.effective(s.start_ns),
                    self.effective(s.start_ns + s.len_ns),
                );
                let mut t = a;
                while t < b {
                    let bin = (t / BIN_NS) as usize;
                    let end = ((bin as u64 + 1) * BIN_NS).min(b);
                    if let Some(x) = bins.get_mut(bin) {
                        *x += (end - t) as f64;
                    }
                    t = end;
                }
            }
        }
        bins
    }

    /// The MMU for each window (in milliseconds). A window longer than the time line gets the
    /// utilisation of the whole time line.
    pub fn mmu(&self, windows_ms: &[f64]) -> Vec<MmuPoint> {
        let mutators = self.stalls.len().max(1) as f64;
        let bins = self.bins();
        let mut prefix = Vec::with_capacity(bins.len() + 1);
        prefix.push(0.0);
        for b in &bins {
            prefix.push(prefix.last().unwrap() + b);
        }
        windows_ms
            .iter()
            .map(|&w| {
                let wbins = ((w * 1e6) / BIN_NS as f64).round().max(1.0) as usize;
                let wbins = wbins.min(bins.len());
                let capacity = wbins as f64 * BIN_NS as f64 * mutators;
                let worst = (0..=bins.len() - wbins)
                    .map(|i| prefix[i + wbins] - prefix[i])
                    .fold(0.0f64, f64::max);
                MmuPoint {
                    window_ms: w,
                    mmu: (1.0 - worst / capacity).clamp(0.0, 1.0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stall(start_ns: u64, len_ns: u64) -> Stall {
        Stall {
            start_ns,
            len_ns,
            parked: true,
        }
    }

    #[test]
    fn a_pause_zeroes_windows_shorter_than_it() {
        // 100 ms of time, one mutator, a 5 ms pause at 50 ms.
        let t = Timeline {
            span: (0, 100_000_000),
            excluded: vec![],
            stalls: vec![vec![stall(50_000_000, 5_000_000)]],
        };
        let m = t.mmu(&[1.0, 10.0, 100.0]);
        assert_eq!(m[0].mmu, 0.0);
        assert!((m[1].mmu - 0.5).abs() < 1e-9, "{m:?}");
        assert!((m[2].mmu - 0.95).abs() < 1e-9, "{m:?}");
    }

    fn fault(start_ns: u64, len_ns: u64) -> Stall {
        Stall {
            start_ns,
            len_ns,
            parked: false,
        }
    }

    #[test]
    fn short_faults_take_only_their_own_time() {
        // 100 ms, one mutator faulting every 100 us for 20 us (a bin-aligned trace): it works 80 %
        // of every window, however short, as long as the window holds whole periods.
        let stalls = (0..1000).map(|k| fault(k * 100_000, 20_000)).collect();
        let t = Timeline {
            span: (0, 100_000_000),
            excluded: vec![],
            stalls: vec![stalls],
        };
        for p in t.mmu(&[0.1, 1.0, 10.0, 100.0]) {
            assert!((p.mmu - 0.8).abs() < 1e-9, "{p:?}");
        }
    }

    #[test]
    fn one_mutator_stalled_leaves_the_others_utilisation() {
        // Two mutators; one stalls 5 ms from 20 ms, the other never: every window up to 5 ms
        // inside the stall is half used.
        let t = Timeline {
            span: (0, 100_000_000),
            excluded: vec![],
            stalls: vec![vec![fault(20_000_000, 5_000_000)], vec![]],
        };
        let m = t.mmu(&[1.0, 5.0, 10.0]);
        assert!((m[0].mmu - 0.5).abs() < 1e-9, "{m:?}");
        assert!((m[1].mmu - 0.5).abs() < 1e-9, "{m:?}");
        assert!((m[2].mmu - 0.75).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn a_stall_before_the_span_counts_only_inside_it() {
        // The park that ends 1 ms into the concurrent phase began long before it: only its last
        // millisecond is inside the span.
        let t = Timeline {
            span: (50_000_000, 150_000_000),
            excluded: vec![],
            stalls: vec![vec![stall(0, 51_000_000)]],
        };
        let m = t.mmu(&[1.0, 2.0, 100.0]);
        assert_eq!(m[0].mmu, 0.0);
        assert!((m[1].mmu - 0.5).abs() < 1e-9, "{m:?}");
        assert!((m[2].mmu - 0.99).abs() < 1e-9, "{m:?}");
    }

    #[test]
    fn no_stall_is_full_utilisation() {
        let t = Timeline {
            span: (0, 10_000_000),
            excluded: vec![],
            stalls: vec![vec![], vec![]],
        };
        assert!(t.mmu(&[0.1, 1.0, 100.0]).iter().all(|p| p.mmu == 1.0));
    }

    #[test]
    fn excluded_time_is_cut_out() {
        // The pause is entirely inside a cut-out: utilisation is full.
        let t = Timeline {
            span: (0, 100_000_000),
            excluded: vec![(50_000_000, 5_000_000)],
            stalls: vec![vec![stall(50_000_000, 5_000_000)], vec![]],
        };
        assert_eq!(t.len_ns(), 95_000_000);
        assert_eq!(t.mmu(&[1.0])[0].mmu, 1.0);
    }
}
