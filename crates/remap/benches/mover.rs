//! Mover benches: the mover's overhead against a raw `UFFDIO_MOVE` loop, same sizes, same run.
//!
//! - `mover_4k`: 256 pages moved one 4 KiB page per call, raw `Uffd::move_pages` versus
//!   `Mover::move_range`.
//! - `mover_2m`: 8 THPs moved one 2 MiB aligned PMD per call (whole-PMD moves).
//! - `mover_coalesce`: 2 MiB of 4 KiB pages (THP off): the raw ioctl page by page, the mover's
//!   batch of 512 pushed pages (one coalesced ioctl), and one raw 2 MiB ioctl (the floor).
//!
//! Pages move back and forth between two regions, both registered, so mmap, registration and
//! population stay out of the timed part. Moves use `DONTWAKE` on both sides and the mover runs
//! with `Wake::None`, so both issue the same ioctls. After criterion, an interleaved A/B pass
//! prints mover/raw ratios measured side by side (the targets: within 5% at 4 KiB, 2% at 2 MiB).
//!
//! Run: `cargo bench -p remap --bench mover -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use remap::mover::{MoveOptions, Mover, Wake};
use remap::region::{Region, Thp, HUGE_PAGE_SIZE};
use test_support::Need;
use uffd::{MoveFlags, Uffd};

/// Two registered regions and a direction: each pass moves every chunk from `from` to `to`, then
/// the roles swap.
struct PingPong {
    mover: Mover,
    a: Region,
    b: Region,
    a_to_b: bool,
    chunk: usize,
}

impl PingPong {
    fn new(len: usize, chunk: usize, thp: Thp, huge_aligned: bool) -> PingPong {
        let uffd = Uffd::new().expect("userfaultfd");
        let mover = Mover::new(uffd).with_options(MoveOptions::default().wake(Wake::None));
        let build = |populate| {
            Region::builder(len)
                .thp(thp)
                .huge_aligned(huge_aligned)
                .populate(populate)
                .build()
                .expect("region")
        };
        let (a, b) = (build(true), build(false));
        remap::pattern::fill(&a, 1);
        mover.register(&a).expect("register");
        mover.register(&b).expect("register");
        PingPong {
            mover,
            a,
            b,
            a_to_b: true,
            chunk,
        }
    }

    fn ends(&self) -> (&Region, &Region) {
        if self.a_to_b {
            (&self.b, &self.a)
        } else {
            (&self.a, &self.b)
        }
    }

    /// One pass through the raw binding, one ioctl per chunk.
    fn raw_pass(&mut self) {
        let (dst, src) = self.ends();
        let uffd = self.mover.uffd();
        for off in (0..dst.len()).step_by(self.chunk) {
            // SAFETY: `move_pages` requires no Rust reference into either range and memory the
            // caller controls: both are `Region`s this bench mapped and owns, which never hand out
            // references into their mappings, and `off + chunk` stays inside both.
            let moved = unsafe {
                uffd.move_pages(
                    dst.as_ptr().wrapping_add(off),
                    src.as_ptr().wrapping_add(off),
                    self.chunk,
                    MoveFlags::DONTWAKE,
                )
            };
            black_box(moved.expect("raw move"));
        }
        self.a_to_b = !self.a_to_b;
    }

    /// One pass through `Mover::move_range`, one call per chunk.
    fn mover_pass(&mut self) {
        let (dst, src) = self.ends();
        for off in (0..dst.len()).step_by(self.chunk) {
            let report = self.mover.move_range(dst, off, src, off, self.chunk);
            black_box(report.expect("mover move"));
        }
        self.a_to_b = !self.a_to_b;
    }

    /// One pass through a mover batch of single pages (coalesced into one ioctl).
    fn batch_pass(&mut self) {
        let (dst, src) = self.ends();
        let mut batch = self.mover.batch();
        for page in 0..dst.pages() {
            batch.push_page(dst, page, src, page).expect("push");
        }
        black_box(batch.flush().expect("flush"));
        self.a_to_b = !self.a_to_b;
    }

    /// One pass as a single raw ioctl over the whole region.
    fn raw_whole_pass(&mut self) {
        let (dst, src) = self.ends();
        // SAFETY: as in `raw_pass`, over the whole of both regions.
        let moved = unsafe {
            self.mover
                .uffd()
                .move_pages(dst.as_ptr(), src.as_ptr(), dst.len(), MoveFlags::DONTWAKE)
        };
        black_box(moved.expect("raw move"));
        self.a_to_b = !self.a_to_b;
    }
}

/// One pass of a case over a [`PingPong`].
type Pass = fn(&mut PingPong);

fn timed(iters: u64, pp: &mut PingPong, pass: Pass) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        pass(pp);
    }
    start.elapsed()
}

fn group(c: &mut Criterion, name: &str, pp: &mut PingPong, cases: &[(&str, Pass)]) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(pp.a.len() as u64));
    for &(case, pass) in cases {
        g.bench_function(case, |b| b.iter_custom(|iters| timed(iters, pp, pass)));
    }
    g.finish();
}

/// Interleaved A/B: alternate short bursts of each pass for `total`, return the median time per
/// pass of each.
fn ab(
    pp: &mut PingPong,
    a: fn(&mut PingPong),
    b: fn(&mut PingPong),
    total: Duration,
) -> (f64, f64) {
    let burst = 16;
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let end = Instant::now() + total;
    while Instant::now() < end {
        ta.push(timed(burst, pp, a).as_secs_f64() / burst as f64);
        tb.push(timed(burst, pp, b).as_secs_f64() / burst as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut ta), median(&mut tb))
}

fn report_ratio(what: &str, pp: &mut PingPong, raw: fn(&mut PingPong), lib: fn(&mut PingPong)) {
    let (r, m) = ab(pp, raw, lib, Duration::from_secs(3));
    let per = pp.chunk as f64;
    let pages = pp.a.len() as f64 / per;
    println!(
        "ratio {what}: mover {:.1} ns/call, raw {:.1} ns/call, mover/raw = {:.3}",
        m / pages * 1e9,
        r / pages * 1e9,
        m / r
    );
}

fn main() {
    if let Err(why) = test_support::met(Need::Move) {
        println!("skipping mover benches: needs {} ({why})", Need::Move);
        return;
    }
    let page = rustix::param::page_size();
    let mut c = Criterion::default().configure_from_args();

    let mut small = PingPong::new(256 * page, page, Thp::NoHuge, false);
    group(
        &mut c,
        "mover_4k",
        &mut small,
        &[("raw", PingPong::raw_pass), ("mover", PingPong::mover_pass)],
    );

    let thp = test_support::met(Need::Thp).is_ok();
    let mut huge = PingPong::new(8 * HUGE_PAGE_SIZE, HUGE_PAGE_SIZE, Thp::Huge, true);
    let whole = thp && remap::inspect::is_thp_mapped(huge.a.addr()).unwrap_or(false);
    if !whole {
        println!("note: no THP for the 2 MiB bench; it measures PTE-mapped 2 MiB moves");
    }
    group(
        &mut c,
        "mover_2m",
        &mut huge,
        &[("raw", PingPong::raw_pass), ("mover", PingPong::mover_pass)],
    );
    let side = if huge.a_to_b { &huge.a } else { &huge.b };
    if whole && !remap::inspect::is_thp_mapped(side.addr()).unwrap_or(false) {
        println!("note: the THPs were split during the 2 MiB bench");
    }

    let mut coalesce = PingPong::new(HUGE_PAGE_SIZE, page, Thp::NoHuge, true);
    group(
        &mut c,
        "mover_coalesce",
        &mut coalesce,
        &[
            ("raw_page_by_page", PingPong::raw_pass),
            ("mover_batch", PingPong::batch_pass),
            ("raw_one_ioctl", PingPong::raw_whole_pass),
        ],
    );
    c.final_summary();

    report_ratio("4k", &mut small, PingPong::raw_pass, PingPong::mover_pass);
    report_ratio("2m", &mut huge, PingPong::raw_pass, PingPong::mover_pass);
    let (r, m) = ab(
        &mut coalesce,
        PingPong::raw_pass,
        PingPong::batch_pass,
        Duration::from_secs(3),
    );
    println!(
        "ratio coalesce: 512 pages, mover batch {:.1} us, raw page by page {:.1} us, speed-up {:.1}x",
        m * 1e6,
        r * 1e6,
        r / m
    );
    let (w, m) = ab(
        &mut coalesce,
        PingPong::raw_whole_pass,
        PingPong::batch_pass,
        Duration::from_secs(3),
    );
    println!(
        "ratio coalesce: mover batch {:.1} us vs one raw 2 MiB ioctl {:.1} us, mover/raw = {:.3}",
        m * 1e6,
        w * 1e6,
        m / w
    );
}
