//! The mover's cost per call over the bare ioctl, call by call (issue 14's P1).
//!
//! The bulk rows time a whole repetition of one method, and then one of the next: at 2 MiB with
//! THP on a repetition of 128 MiB is 64 calls of about 1 us, so one interrupt or page-table walk
//! that lands in one method's repetition moves its figure by more than the 2 % this is about. Here the two alternate call by call over one source: chunk `i` goes to `move-raw`'s
//! destination when `i + rep` is even and to `move-mover`'s when it is odd (so each method takes
//! every other chunk, the first chunk alternating between repetitions), each call is timed on
//! its own, and the figure is the ratio of the two medians over every call of every repetition.
//! A disturbance then hits one call, which a median ignores, and a drift hits both methods alike.

use std::time::Instant;

use serde::Serialize;

use crate::bulk::{self, BulkCtx};
use crate::stats::Spread;

/// One call-by-call comparison of `move-mover` with `move-raw` (the `mover-overhead` record).
#[derive(Debug, Clone, Serialize)]
pub struct OverheadMeasurement {
    /// Bytes per call.
    pub chunk_bytes: u64,
    /// Whether source and destinations are THP-backed (whole-PMD moves).
    pub thp: bool,
    /// Calls timed per method over all measured repetitions (the fewer of the two counts: they
    /// differ when a repetition has an odd number of chunks).
    pub calls: u64,
    /// Measured repetitions.
    pub reps: u32,
    /// Time of one `move-raw` call (one `UFFDIO_MOVE` ioctl, re-issued for the rest after a
    /// partial move), ns: median and spread over the calls (not over repetitions, as elsewhere).
    pub raw_ns_per_call: Spread,
    /// Time of one `move-mover` call (`Mover::move_range`), ns.
    pub mover_ns_per_call: Spread,
    /// The mover's median over the raw ioctl's (1.0: no overhead); `None` when either was not
    /// measured.
    pub vs_raw: Option<f64>,
    /// Whether every moved page arrived and every source page was emptied.
    pub verified: bool,
    /// The first verification failure or error, if any.
    pub error: Option<String>,
}

/// The repetitions of one comparison (see `crate::rounds`).
pub(crate) struct OverheadSeries<'a> {
    ctx: &'a BulkCtx<'a>,
    size: usize,
    chunk: usize,
    thp: bool,
    warmup: u32,
    reps: u32,
    raw: Vec<f64>,
    mover: Vec<f64>,
    error: Option<String>,
}

impl<'a> OverheadSeries<'a> {
    /// A comparison over `size` bytes moved `chunk` bytes per call, with `warmup` unrecorded
    /// repetitions before `reps` recorded ones.
    pub(crate) fn new(
        ctx: &'a BulkCtx<'a>,
        size: usize,
        chunk: usize,
        thp: bool,
        (warmup, reps): (u32, u32),
    ) -> Self {
        OverheadSeries {
            ctx,
            size,
            chunk,
            thp,
            warmup,
            reps,
            raw: Vec::new(),
            mover: Vec::new(),
            error: None,
        }
    }

    /// The figure, from the recorded calls.
    pub(crate) fn finish(self) -> OverheadMeasurement {
        let raw = Spread::of_or_nan(&self.raw);
        let mover = Spread::of_or_nan(&self.mover);
        OverheadMeasurement {
            chunk_bytes: self.chunk as u64,
            thp: self.thp,
            calls: self.raw.len().min(self.mover.len()) as u64,
            reps: self.reps,
            raw_ns_per_call: raw,
            mover_ns_per_call: mover,
            vs_raw: Some(mover.median / raw.median).filter(|r| r.is_finite()),
            verified: self.error.is_none(),
            error: self.error,
        }
    }

    /// One repetition: a fresh source and two fresh destinations, every chunk moved by one of
    /// the two methods, then verified; its call times are kept only once it verified.
    fn run(&mut self, rep: u32) -> Result<(), String> {
        let ctx = self.ctx;
        let what = format!(
            "mover overhead chunk {} thp {}",
            self.chunk,
            if self.thp { "on" } else { "off" }
        );
        let src = bulk::region(self.size, self.thp)?;
        bulk::fill_source(ctx, &src);
        let raw_dst = bulk::region(self.size, self.thp)?;
        bulk::register(ctx.uffd, &raw_dst)?;
        let mover_dst = bulk::region(self.size, self.thp)?;
        ctx.mover
            .register(&mover_dst)
            .map_err(|e| format!("registering the destination with the mover: {e}"))?;
        let (mut raw_ns, mut mover_ns) = (Vec::new(), Vec::new());
        let chunks = self.size / self.chunk;
        for i in 0..chunks {
            let off = i * self.chunk;
            let by_raw = (i + rep as usize) % 2 == 0;
            let started = Instant::now();
            if by_raw {
                let mut ioctls = 0;
                bulk::whole(self.chunk, &mut ioctls, |d| {
                    crate::raw::move_range(
                        ctx.uffd,
                        &raw_dst,
                        off + d,
                        &src,
                        off + d,
                        self.chunk - d,
                        crate::RAW_MOVE_FLAGS,
                    )
                })
                .map_err(|e| format!("{what}: UFFDIO_MOVE at {off:#x}: {e}"))?;
            } else {
                ctx.mover
                    .move_range(&mover_dst, off, &src, off, self.chunk)
                    .map_err(|e| format!("{what}: Mover::move_range at {off:#x}: {e}"))?;
            }
            let ns = started.elapsed().as_nanos() as f64;
            if by_raw {
                raw_ns.push(ns);
            } else {
                mover_ns.push(ns);
            }
        }
        for i in 0..chunks {
            let dst = if (i + rep as usize) % 2 == 0 {
                &raw_dst
            } else {
                &mover_dst
            };
            bulk::verify_chunk(
                dst,
                ctx.seed,
                ctx.template.pages(),
                (i * self.chunk, self.chunk),
                &what,
            )?;
        }
        bulk::verify_source_empty(&src, &what)?;
        if rep >= self.warmup {
            self.raw.append(&mut raw_ns);
            self.mover.append(&mut mover_ns);
        }
        Ok(())
    }
}

impl crate::rounds::Series for OverheadSeries<'_> {
    fn repetition(&mut self, rep: u32) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.run(rep) {
            tracing::error!(%e, "mover-overhead repetition failed");
            self.error = Some(e);
        }
    }

    fn label(&self) -> String {
        format!(
            "mover overhead {} thp {}",
            crate::report::human_bytes(self.chunk as u64),
            if self.thp { "on" } else { "off" }
        )
    }
}

/// Writes the section's table (nothing when there is no figure).
pub(crate) fn write_table(
    figures: &[OverheadMeasurement],
    w: &mut impl std::io::Write,
) -> std::io::Result<()> {
    if figures.is_empty() {
        return Ok(());
    }
    writeln!(
        w,
        "mover overhead: move-raw and move-mover alternating call by call over one source; \
         time per call, median (q1..q3) over every call of every repetition; x raw = mover's \
         median / raw's"
    )?;
    writeln!(
        w,
        "{:>7} {:>4} {:>6} {:>10} {:>17} {:>10} {:>17} {:>7} {:>4}",
        "chunk", "thp", "calls", "raw ns", "raw q1..q3", "mover ns", "mover q1..q3", "x raw", "ok"
    )?;
    for f in figures {
        writeln!(
            w,
            "{:>7} {:>4} {:>6} {:>10.0} {:>17} {:>10.0} {:>17} {:>7} {:>4}",
            crate::report::human_bytes(f.chunk_bytes),
            if f.thp { "on" } else { "off" },
            f.calls,
            f.raw_ns_per_call.median,
            format!("{:.0}..{:.0}", f.raw_ns_per_call.q1, f.raw_ns_per_call.q3),
            f.mover_ns_per_call.median,
            format!(
                "{:.0}..{:.0}",
                f.mover_ns_per_call.q1, f.mover_ns_per_call.q3
            ),
            f.vs_raw
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.3}")),
            if f.verified { "ok" } else { "FAIL" }
        )?;
    }
    writeln!(w)
}
