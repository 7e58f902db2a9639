//! Fault round-trip benchmarks: one page fault, from the touch to the woken access, for each
//! built-in page source through a [`FaultServer`] with one handler thread, against a minimal raw
//! loop on the same machine in the same run (one thread: poll, read, ioctl, using `uffd`
//! directly), and in SIGBUS mode.
//!
//! Each sample touches fresh pages of a registered region one at a time (`iter_custom`, timing
//! each touch); re-arming the pages (`MADV_DONTNEED`, or giving pages back to the move pool) is
//! outside the timing. The servers run without `EVENT_REMOVE`, so re-arming generates no events.
//! After criterion's report, a table of p50/p99 per-fault latencies (hdrhistogram) goes to stderr.
//!
//! `cargo bench -p remap --bench faults -- --warm-up-time 1 --measurement-time 3`

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::Criterion;
use hdrhistogram::Histogram;
use remap::region::Region;
use remap::server::{
    CopySource, FaultServer, FnSource, MovePool, PageSource, SigbusServer, ZeroSource,
};
use rustix::event::{PollFd, PollFlags};
use test_support::Need;
use uffd::{
    CopyFlags, Event, EventBuffer, Features, RangeError, RegisterMode, Uffd, ZeropageFlags,
};

/// Pages touched between two re-arms.
const K: usize = 256;

fn page() -> usize {
    rustix::param::page_size()
}

/// Results per configuration: name and per-fault latencies in ns.
type Table = Vec<(String, Histogram<u64>)>;

/// Times single-page read faults on `region`, calling `rearm` (untimed) every `K` touches.
fn measure(
    c: &mut Criterion,
    table: &mut Table,
    name: &str,
    region: &Region,
    mut rearm: impl FnMut(),
) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("histogram");
    let mut next = K; // re-arm before the first touch
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if next == K {
                    rearm();
                    next = 0;
                }
                let start = Instant::now();
                let v = region.read_u8(next * page());
                let took = start.elapsed();
                std::hint::black_box(v);
                total += took;
                let _ = hist.record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1));
                next += 1;
            }
            total
        });
    });
    table.push((name.to_owned(), hist));
}

fn dontneed(region: &Region) -> impl FnMut() + '_ {
    move || {
        region
            .madvise_dontneed(0..region.len())
            .expect("MADV_DONTNEED")
    }
}

fn served<S: PageSource>(
    c: &mut Criterion,
    table: &mut Table,
    name: &str,
    source: S,
    rearm: impl Fn(&FaultServer<S>),
) {
    let server = FaultServer::builder(Region::new(K * page()).expect("region"), source)
        .threads(1)
        .features(Features::empty())
        .start()
        .expect("fault server");
    measure(c, table, name, server.region(), || rearm(&server));
    server.stop().expect("stop");
}

/// The floor: one thread polling the uffd and a stop eventfd, reading events, one ioctl each.
struct RawLoop {
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl RawLoop {
    fn start(region: &Region, copy: bool) -> Self {
        let uffd = Uffd::builder().non_blocking(true).create().expect("uffd");
        region
            .all_pages()
            .register(&uffd, RegisterMode::MISSING)
            .expect("register");
        let stop = Arc::new(
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd"),
        );
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let bytes = vec![0x5au8; page()];
            let mut buf = EventBuffer::new(64);
            loop {
                let mut fds = [
                    PollFd::new(&uffd, PollFlags::IN),
                    PollFd::new(&*stop2, PollFlags::IN),
                ];
                let _ = rustix::event::poll(&mut fds, None);
                if !fds[1].revents().is_empty() {
                    return;
                }
                let _ = uffd.read_events(&mut buf);
                while let Some(event) = buf.next_event() {
                    let Event::Pagefault(pf) = event else {
                        continue;
                    };
                    let at = usize::try_from(pf.address).unwrap_or(usize::MAX) as *mut u8;
                    // SAFETY: `at` is a page of the benchmark's registered region, into which no
                    // reference exists; `bytes` is our own page-sized buffer, unwritten meanwhile.
                    let result = unsafe {
                        if copy {
                            uffd.copy(at, bytes.as_ptr(), page(), CopyFlags::empty())
                        } else {
                            uffd.zeropage(at, page(), ZeropageFlags::empty())
                        }
                    };
                    if let Err(RangeError::Exists { .. }) = result {
                        let _ = uffd.wake(at, page());
                    }
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RawLoop {
    fn drop(&mut self) {
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn raw(c: &mut Criterion, table: &mut Table, name: &str, copy: bool) {
    let region = Region::new(K * page()).expect("region");
    let raw = RawLoop::start(&region, copy);
    measure(c, table, name, &region, dontneed(&region));
    drop(raw);
}

fn pool_rearm(server: &FaultServer<MovePool>) {
    let region = server.region();
    for i in 0..K {
        // Pages not touched yet are holes: nothing to give back there.
        let _ = server.source().give_back(region, i * page());
    }
}

fn benches(c: &mut Criterion) -> Table {
    let mut table = Table::new();
    raw(c, &mut table, "raw loop/zero", false);
    served(c, &mut table, "server/zero", ZeroSource, |s| {
        s.region()
            .madvise_dontneed(0..s.region().len())
            .expect("dontneed");
    });
    raw(c, &mut table, "raw loop/copy", true);
    served(
        c,
        &mut table,
        "server/copy",
        CopySource::new(vec![0x5a; K * page()]),
        |s| {
            s.region()
                .madvise_dontneed(0..s.region().len())
                .expect("dontneed");
        },
    );
    served(
        c,
        &mut table,
        "server/fn",
        FnSource::new(|_, page: &mut [u8]| page[0] = 1),
        |s| {
            s.region()
                .madvise_dontneed(0..s.region().len())
                .expect("dontneed")
        },
    );
    served(
        c,
        &mut table,
        "server/move pool",
        MovePool::new(K).expect("pool"),
        pool_rearm,
    );

    let sig = SigbusServer::start(Region::new(K * page()).expect("region"), ZeroSource)
        .expect("sigbus server");
    measure(
        c,
        &mut table,
        "sigbus/zero",
        sig.region(),
        dontneed(sig.region()),
    );
    drop(sig.stop());
    let sig = SigbusServer::start(
        Region::new(K * page()).expect("region"),
        CopySource::new(vec![0x5a; K * page()]),
    )
    .expect("sigbus server");
    measure(
        c,
        &mut table,
        "sigbus/copy",
        sig.region(),
        dontneed(sig.region()),
    );
    drop(sig.stop());
    let sig = SigbusServer::start(
        Region::new(K * page()).expect("region"),
        MovePool::new(K).expect("pool"),
    )
    .expect("sigbus server");
    measure(c, &mut table, "sigbus/move pool", sig.region(), || {
        for i in 0..K {
            let _ = sig.source().give_back(sig.region(), i * page());
        }
    });
    drop(sig.stop());
    table
}

fn main() {
    if let Err(why) = test_support::met(Need::Move) {
        eprintln!("skipping fault benches: needs {} ({why})", Need::Move);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let table = benches(&mut c);
    c.final_summary();
    let kernel = rustix::system::uname();
    eprintln!(
        "\nper-fault latency (kernel {}, page {} B, {} samples each)",
        kernel.release().to_string_lossy(),
        page(),
        table.first().map_or(0, |(_, h)| h.len())
    );
    eprintln!(
        "{:<20} {:>10} {:>10} {:>10}",
        "config", "p50 ns", "p99 ns", "samples"
    );
    for (name, hist) in &table {
        eprintln!(
            "{:<20} {:>10} {:>10} {:>10}",
            name,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.len()
        );
    }
}
