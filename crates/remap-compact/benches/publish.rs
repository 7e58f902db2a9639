//! Per-page publication cost of the engine against the raw batched `UFFDIO_MOVE` floor of the
//! same runs, and the flip pause of both flip methods.
//!
//! `publish/engine`: one cycle (SIGBUS mode, so no handler thread lives) over a populated 16 MiB
//! heap (4 KiB pages, no THP) with an identity plan (to-space page `i` is from-space page `i`,
//! read by no one, so every page is its own recycled buffer): the compaction thread claims each page, "fills" it (a no-op), marks it
//! processed and publishes aligned 512-page windows with one MOVE each. Timed: the compaction
//! thread's walk (`CycleStats::compaction_cpu`, its CPU time; wall time is printed too), not
//! the flip or the cycle's teardown.
//!
//! `publish/raw`: the same pages moved by hand from a populated region into a registered empty
//! one, in the same 512-page runs, one `UFFDIO_MOVE` each: the floor (the thread's CPU time).
//!
//! Besides criterion's own report the bench prints, from one side-by-side run of both,
//! `ratio engine/raw` per page (target <= 1.10) and the median flip pause of each flip method.
//!
//! Run: `cargo bench -p remap-compact --bench publish`.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use remap::{Region, Thp};
use remap_compact::{
    Compactor, Engine, FlipMethod, FromSpace, PageBuffer, Publication, SignalSafeCompactor,
};

const PAGES: usize = 4096;
const RUN: usize = 512;

/// To-space page `i` is from-space page `i` as it is.
struct Identity(usize);

impl Compactor for Identity {
    fn pages(&self) -> usize {
        self.0
    }
    fn reads(&self, _: usize) -> Range<usize> {
        0..0
    }
    fn fill(&self, _: usize, _: &FromSpace<'_>, _: &mut PageBuffer<'_>) {}
}

// SAFETY: `reads` returns a constant and `fill` does nothing.
unsafe impl SignalSafeCompactor for Identity {}

fn page() -> usize {
    uffd::page_size()
}

fn populated(pages: usize, thp: Thp) -> Region {
    let region = Region::builder(pages * page())
        .huge_aligned(true)
        .thp(thp)
        .populate(true)
        .build()
        .unwrap();
    region.fill(0, region.len(), 0x5a);
    region
}

/// One measurement: wall time and the measuring thread's CPU time.
#[derive(Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

/// One engine cycle: the compaction thread's walk (wall and CPU), and the flip pause.
///
/// In SIGBUS mode (no fault happens here): then the engine, like the raw floor, runs with no
/// second thread in the process, so neither pays remote TLB-flush IPIs the other does not (a
/// handler thread asleep in `poll` would put the other CPU in the flush mask). The heap is
/// rewritten first (untimed), as the raw floor rewrites its source: both then move pages
/// written just before.
fn engine_once(engine: &Engine, plan: &Arc<Identity>) -> (Cost, Duration) {
    engine.heap().fill(0, engine.heap().len(), 0x5a);
    let stats = engine
        .flip_sigbus(Arc::clone(plan))
        .unwrap()
        .compact()
        .unwrap();
    assert_eq!(stats.published_move, PAGES as u64);
    let cost = Cost {
        wall: stats.compaction_wall,
        cpu: stats.compaction_cpu,
    };
    (cost, stats.flip_pause)
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.unsigned_abs(),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The raw floor: populate `src`, then MOVE it into the registered, empty `dst` in runs.
fn raw_once(uffd: &uffd::Uffd, dst: &Region, src: &Region) -> Cost {
    src.fill(0, src.len(), 0x5a);
    let run = RUN * page();
    let cpu = thread_cpu();
    let start = Instant::now();
    for off in (0..dst.len()).step_by(run) {
        // SAFETY: `move_pages` requires no Rust reference into either range and memory we
        // control: both are live `Region`s of ours (which never hand out references), `dst`
        // registered with `uffd` and empty, `src` populated; nothing else touches them.
        let moved = unsafe {
            uffd.move_pages(
                dst.as_ptr().add(off),
                src.as_ptr().add(off),
                run,
                uffd::MoveFlags::empty(),
            )
        };
        assert_eq!(moved, Ok(run));
    }
    let took = Cost {
        wall: start.elapsed(),
        cpu: thread_cpu().saturating_sub(cpu),
    };
    // Empty `dst` again for the next repetition (it stays registered: zap, no event enabled).
    dst.madvise_dontneed(0..dst.len()).unwrap();
    took
}

fn setup_engine(flip: FlipMethod, thp: Thp) -> (Engine, Arc<Identity>) {
    let engine = Engine::builder(populated(PAGES, thp))
        .publication(Publication::Move)
        .flip(flip)
        .batch_pages(RUN)
        .count_tlb(false)
        .build()
        .unwrap();
    (engine, Arc::new(Identity(PAGES)))
}

fn setup_raw() -> (uffd::Uffd, Region, Region) {
    let uffd = uffd::Uffd::new().unwrap();
    let dst = Region::builder(PAGES * page())
        .huge_aligned(true)
        .thp(Thp::NoHuge)
        .build()
        .unwrap();
    dst.all_pages()
        .register(&uffd, uffd::RegisterMode::MISSING)
        .unwrap();
    let src = populated(PAGES, Thp::NoHuge);
    (uffd, dst, src)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn per_page(d: Duration) -> f64 {
    d.as_nanos() as f64 / PAGES as f64
}

fn bench(c: &mut Criterion) {
    if !uffd::Uffd::new().is_ok_and(|u| u.supports_move()) {
        eprintln!("skipping publish bench: needs UFFDIO_MOVE");
        return;
    }
    let (engine, plan) = setup_engine(FlipMethod::Mremap, Thp::NoHuge);
    let (uffd, dst, src) = setup_raw();
    let mut group = c.benchmark_group("publish");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("engine", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| engine_once(&engine, &plan).0.cpu).sum())
    });
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| raw_once(&uffd, &dst, &src).cpu).sum())
    });
    group.finish();

    // Side by side, alternating, in one run: the figure the issue asks for. CPU time of the
    // publishing thread is the cost (on a shared machine wall time also counts preemption);
    // wall time is printed too.
    let (mut e, mut r) = (Vec::new(), Vec::new());
    for _ in 0..41 {
        e.push(engine_once(&engine, &plan).0);
        r.push(raw_once(&uffd, &dst, &src));
    }
    let cpu = |v: &[Cost]| median(v.iter().map(|c| c.cpu).collect());
    let wall = |v: &[Cost]| median(v.iter().map(|c| c.wall).collect());
    println!(
        "publish {PAGES} pages in {RUN}-page runs (median of 41, CPU time): engine {:.1} ns/page, \
         raw MOVE {:.1} ns/page, ratio engine/raw = {:.3} (target <= 1.10); wall: engine {:.1} \
         ns/page, raw {:.1} ns/page, ratio {:.3}",
        per_page(cpu(&e)),
        per_page(cpu(&r)),
        cpu(&e).as_secs_f64() / cpu(&r).as_secs_f64(),
        per_page(wall(&e)),
        per_page(wall(&r)),
        wall(&e).as_secs_f64() / wall(&r).as_secs_f64()
    );

    // Flip pause, side by side: mremap(DONTUNMAP) against MOVE of every page, 4 KiB and THP.
    for thp in [Thp::NoHuge, Thp::Huge] {
        let (mremap, _) = setup_engine(FlipMethod::Mremap, thp);
        let (moveflip, _) = setup_engine(FlipMethod::Move, thp);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..11 {
            a.push(engine_once(&mremap, &plan).1);
            b.push(engine_once(&moveflip, &plan).1);
        }
        let (a, b) = (median(a), median(b));
        println!(
            "flip pause of a populated {} MiB heap ({thp:?}): mremap {:?}, move {:?}, ratio move/mremap = {:.2}",
            (PAGES * page()) >> 20,
            a,
            b,
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
