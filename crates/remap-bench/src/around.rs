//! Fault-around figures: one mutator touches every page of a served region once, in ascending
//! or in random order, while one handler thread serves each fault with one page (window 1) or
//! with a run of pages in one ioctl (a window of N pages), from a `MovePool`, a `CopySource` or
//! an `FnSource`. What a window buys shows in pages served per second; with it, a "fault" serves
//! a run, so faults per second alone would mislead.

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use remap::pattern::pattern_word;
use remap::region::{Region, Thp};
use remap::server::{CopySource, FaultServer, FnSource, MovePool, PageSource, ServerStats};
use serde::Serialize;

use crate::stats::Spread;

/// The page source of a fault-around figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AroundSource {
    /// `MovePool::fault_around`: runs of pool pages moved in with one `UFFDIO_MOVE`.
    AroundMove,
    /// `CopySource::fault_around`: runs of the image copied in with one `UFFDIO_COPY`.
    AroundCopy,
    /// `FnSource::fault_around`: a closure fills each page of the run, one `UFFDIO_COPY`.
    AroundFn,
}

impl AroundSource {
    /// Every source, in table order.
    pub const ALL: [AroundSource; 3] = [
        AroundSource::AroundMove,
        AroundSource::AroundCopy,
        AroundSource::AroundFn,
    ];

    /// The name used on the command line (`--only`), in JSON and in the chart legend.
    pub fn name(self) -> &'static str {
        match self {
            AroundSource::AroundMove => "around-move",
            AroundSource::AroundCopy => "around-copy",
            AroundSource::AroundFn => "around-fn",
        }
    }
}

impl fmt::Display for AroundSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The order of the first touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Touch {
    /// Page 0, 1, 2, ...: what a forward window serves best.
    Sequential,
    /// A random permutation of the pages (from the run's seed).
    Random,
}

impl Touch {
    /// Both orders, in table order.
    pub const ALL: [Touch; 2] = [Touch::Sequential, Touch::Random];

    /// The name in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Touch::Sequential => "sequential",
            Touch::Random => "random",
        }
    }
}

/// One fault-around figure (the `fault-around` record).
#[derive(Debug, Clone, Serialize)]
pub struct AroundMeasurement {
    /// The page source.
    pub source: AroundSource,
    /// The order of the first touches.
    pub touch: Touch,
    /// The fault-around window in pages (1: off, one page per fault).
    pub window: u32,
    /// Pages of the region, each touched once per repetition (one mutator, one handler thread).
    pub pages: u64,
    /// Faults taken per repetition (median).
    pub faults: u64,
    /// Pages served by runs beyond their faulting page, per repetition (median):
    /// `ServerStats::pages_around`.
    pub pages_around: u64,
    /// Measured repetitions.
    pub reps: u32,
    /// The 50th percentile touch latency of each repetition, ns (as seen by the mutator, every
    /// touch, faulting or not): median and spread.
    pub p50_ns: Spread,
    /// Wall time per page (first touch to last completed touch, over the pages), ns.
    pub ns_per_page: Spread,
    /// Faults taken per second of wall time.
    pub faults_per_s: Spread,
    /// Pages served (first touches completed) per second of wall time.
    pub pages_per_s: Spread,
    /// Median pages per second over that of window 1 with the same source and touch order, in
    /// this run (`null` for window 1 itself, or when that figure is missing).
    pub vs_one_page: Option<f64>,
    /// Whether every touched page held the right bytes.
    pub verified: bool,
    /// The first verification failure or error, if any.
    pub error: Option<String>,
}

/// What one repetition measured.
struct Rep {
    latency: Histogram<u64>,
    wall: Duration,
    stats: ServerStats,
}

/// The touch order of `pages` pages: ascending, or a permutation from `seed` (xorshift64*,
/// Fisher-Yates).
fn order(touch: Touch, pages: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..pages).collect();
    if touch == Touch::Random {
        let mut x = seed | 1;
        for i in (1..pages).rev() {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            v.swap(i, usize::try_from(r % (i as u64 + 1)).unwrap_or(i));
        }
    }
    v
}

/// Touches `pages` of the served region in `order`, timing each touch; checks word 0 of every
/// page and all of every 16th page against pattern page 0 of `seed`.
fn touch_all(
    region: &Region,
    order: &[usize],
    seed: u64,
) -> Result<(Histogram<u64>, Duration), String> {
    let ps = region.page_size();
    let expected = pattern_word(seed, 0, 0);
    let mut latency =
        Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| format!("histogram: {e}"))?;
    let mut bad = None;
    let first = Instant::now();
    let mut last = first;
    for &page in order {
        let start = Instant::now();
        let word = region.read_u64(page * ps);
        last = Instant::now();
        latency.saturating_record(u64::try_from((last - start).as_nanos()).unwrap_or(u64::MAX));
        if word != expected && bad.is_none() {
            bad = Some(format!(
                "page {page} reads {word:#018x}, expected {expected:#018x}"
            ));
        }
    }
    if let Some(bad) = bad {
        return Err(bad);
    }
    for page in (0..region.pages()).step_by(16) {
        remap::pattern::verify_page(region, page, seed, 0)
            .map_err(|m| format!("page {page}: {m}"))?;
    }
    Ok((latency, last - first))
}

fn serve<S: PageSource>(
    region: Region,
    source: S,
    order: &[usize],
    seed: u64,
) -> Result<Rep, String> {
    let server = FaultServer::builder(region, source)
        .threads(1)
        .start()
        .map_err(|e| format!("FaultServer: {e}"))?;
    let touched = touch_all(server.region(), order, seed);
    let stats = server.stats();
    server
        .stop()
        .map_err(|e| format!("FaultServer::stop: {e}"))?;
    let (latency, wall) = touched?;
    Ok(Rep {
        latency,
        wall,
        stats,
    })
}

/// One repetition: a fresh region of `size` bytes and a fresh source holding pattern page 0 of
/// `seed` for every page.
fn run_rep(
    source: AroundSource,
    touch: Touch,
    window: usize,
    size: usize,
    seed: u64,
) -> Result<Rep, String> {
    let region = Region::builder(size)
        .thp(Thp::NoHuge)
        .build()
        .map_err(|e| format!("fault region: {e}"))?;
    let ps = region.page_size();
    let pages = region.pages();
    let order = order(touch, pages, seed);
    let one_page = || -> Result<Vec<u8>, String> {
        let one = Region::builder(ps)
            .populate(true)
            .build()
            .map_err(|e| format!("image page: {e}"))?;
        remap::pattern::fill_page(&one, 0, seed, 0);
        let mut buf = vec![0u8; ps];
        one.copy_out(0, &mut buf);
        Ok(buf)
    };
    match source {
        AroundSource::AroundMove => {
            let pool_pages = Region::builder(size)
                .thp(Thp::NoHuge)
                .build()
                .map_err(|e| format!("pool region: {e}"))?;
            for i in 0..pages {
                remap::pattern::fill_page(&pool_pages, i, seed, 0);
            }
            let pool = MovePool::from_region(pool_pages)
                .map_err(|e| format!("MovePool: {e}"))?
                .fault_around(window);
            serve(region, pool, &order, seed)
        }
        AroundSource::AroundCopy => {
            let image = one_page()?.repeat(pages);
            serve(
                region,
                CopySource::new(image).fault_around(window),
                &order,
                seed,
            )
        }
        AroundSource::AroundFn => {
            let one: Arc<[u8]> = one_page()?.into();
            let fill = move |_offset: usize, page: &mut [u8]| page.copy_from_slice(&one);
            serve(
                region,
                FnSource::new(fill).fault_around(window),
                &order,
                seed,
            )
        }
    }
}

/// The median of per-repetition counts, 0 when there are none.
fn median_count(counts: &[u64]) -> u64 {
    let mut v = counts.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The repetitions of one fault-around figure (see `crate::rounds`).
pub(crate) struct AroundSeries {
    source: AroundSource,
    touch: Touch,
    window: u32,
    size: usize,
    warmup: u32,
    reps: u32,
    seed: u64,
    p50: Vec<f64>,
    ns: Vec<f64>,
    fps: Vec<f64>,
    pps: Vec<f64>,
    faults: Vec<u64>,
    around: Vec<u64>,
    pages: u64,
    error: Option<String>,
}

impl AroundSeries {
    /// The figure of `source` with `window`, over `size` bytes touched in `touch` order, with
    /// `warmup` unrecorded repetitions before `reps` recorded ones.
    pub(crate) fn new(
        source: AroundSource,
        touch: Touch,
        window: u32,
        size: usize,
        (warmup, reps): (u32, u32),
        seed: u64,
    ) -> Self {
        AroundSeries {
            source,
            touch,
            window,
            size,
            warmup,
            reps,
            seed,
            p50: vec![],
            ns: vec![],
            fps: vec![],
            pps: vec![],
            faults: vec![],
            around: vec![],
            pages: 0,
            error: None,
        }
    }

    /// The figure, from the recorded repetitions.
    pub(crate) fn finish(self) -> AroundMeasurement {
        AroundMeasurement {
            source: self.source,
            touch: self.touch,
            window: self.window,
            pages: self.pages,
            faults: median_count(&self.faults),
            pages_around: median_count(&self.around),
            reps: self.reps,
            p50_ns: Spread::of_or_nan(&self.p50),
            ns_per_page: Spread::of_or_nan(&self.ns),
            faults_per_s: Spread::of_or_nan(&self.fps),
            pages_per_s: Spread::of_or_nan(&self.pps),
            vs_one_page: None,
            verified: self.error.is_none(),
            error: self.error,
        }
    }
}

impl crate::rounds::Series for AroundSeries {
    fn repetition(&mut self, rep: u32) {
        if self.error.is_some() {
            return;
        }
        match run_rep(
            self.source,
            self.touch,
            self.window as usize,
            self.size,
            self.seed,
        ) {
            Ok(out) if rep >= self.warmup => {
                let n = (self.size / rustix::param::page_size()) as u64;
                let secs = out.wall.as_secs_f64();
                self.pages = n;
                self.faults.push(out.stats.faults);
                self.around.push(out.stats.pages_around);
                self.p50.push(out.latency.value_at_quantile(0.5) as f64);
                self.ns.push(secs * 1e9 / n as f64);
                self.fps.push(out.stats.faults as f64 / secs);
                self.pps.push(n as f64 / secs);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(%e, "fault-around repetition failed");
                self.error = Some(e);
            }
        }
    }

    fn label(&self) -> String {
        format!(
            "{} {} window {}",
            self.source,
            self.touch.name(),
            self.window
        )
    }
}

/// Fills in [`AroundMeasurement::vs_one_page`]: pages per second over window 1's, same source
/// and touch order.
pub(crate) fn add_ratios(figures: &mut [AroundMeasurement]) {
    let base: Vec<(AroundSource, Touch, f64)> = figures
        .iter()
        .filter(|f| f.verified && f.window == 1)
        .map(|f| (f.source, f.touch, f.pages_per_s.median))
        .collect();
    for f in figures.iter_mut().filter(|f| f.verified && f.window > 1) {
        f.vs_one_page = base
            .iter()
            .find(|(s, t, _)| *s == f.source && *t == f.touch)
            .map(|(_, _, b)| f.pages_per_s.median / b);
    }
}

/// The fault-around section of the table: a header and one row per figure, or nothing when no
/// fault-around source was selected.
pub(crate) fn write_table(
    figures: &[AroundMeasurement],
    size: u64,
    reps: u32,
    w: &mut impl Write,
) -> io::Result<()> {
    if figures.is_empty() {
        return Ok(());
    }
    writeln!(
        w,
        "fault-around: one mutator touches every page of a {} region once (sequential or random \
         order), one handler thread; window = pages per fault (1 = off); pages/s = first touches \
         completed per second; x 1 page = pages/s over window 1's (same source and order); \
         median of {reps} reps, with their (min..max)",
        crate::report::human_bytes(size)
    )?;
    writeln!(
        w,
        "{:<12} {:<10} {:>6} {:>7} {:>7} {:>12} {:>21} {:>12} {:>9} {:>8} {:>4}",
        "source",
        "touch",
        "window",
        "faults",
        "around",
        "pages/s",
        "spread pages/s",
        "faults/s",
        "ns/page",
        "x 1 page",
        "ok"
    )?;
    for f in figures {
        writeln!(
            w,
            "{:<12} {:<10} {:>6} {:>7} {:>7} {:>12.0} {:>21} {:>12.0} {:>9.0} {:>8} {:>4}",
            f.source.name(),
            f.touch.name(),
            f.window,
            f.faults,
            f.pages_around,
            f.pages_per_s.median,
            format!("{:.0}..{:.0}", f.pages_per_s.min, f.pages_per_s.max),
            f.faults_per_s.median,
            f.ns_per_page.median,
            f.vs_one_page
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
            if f.verified { "ok" } else { "FAIL" }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_order_is_a_permutation_and_sequential_is_ascending() {
        let mut r = order(Touch::Random, 1000, 42);
        assert_ne!(r, order(Touch::Sequential, 1000, 42));
        r.sort_unstable();
        assert_eq!(r, order(Touch::Sequential, 1000, 42));
        assert_eq!(
            order(Touch::Random, 1000, 42),
            order(Touch::Random, 1000, 42)
        );
    }
}
