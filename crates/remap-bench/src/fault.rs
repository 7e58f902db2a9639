//! Fault service: mutator threads touch every page of a registered region while handler threads
//! resolve the faults; the mutators time each touch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use remap::pattern::pattern_word;
use remap::region::{Region, Thp};
use rustix::event::{PollFd, PollFlags};
use uffd::{Event, EventBuffer, RangeError, RegisterMode, Uffd};

use crate::raw;
use crate::report::FaultMethod;

/// What one repetition measured.
pub(crate) struct FaultRep {
    pub(crate) latency: Histogram<u64>,
    /// From the earliest first touch to the latest completed touch.
    pub(crate) wall: Duration,
    /// Pages touched (each once).
    pub(crate) pages: u64,
    /// Faults taken: page-fault events read by the handlers, or SIGBUS signals handled.
    pub(crate) faults: u64,
    /// CPU time outside the mutator threads while they ran: the handler threads' (process CPU
    /// clock over the run minus the mutators' thread CPU clocks).
    pub(crate) handler_cpu: Duration,
    pub(crate) verify: Result<(), String>,
}

fn cpu_clock(id: rustix::time::ClockId) -> Duration {
    let t = rustix::time::clock_gettime(id);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

/// The memory a repetition faults in, and the image its faults are resolved from.
struct Target {
    region: Region,
    /// As large as `region`, every page pattern page 0: a fault at offset `off` is resolved with
    /// the image's page at `off`, as `CopySource` does (a different source page per fault, as
    /// in any real use; copying one cache-hot page for every fault would measure less work than
    /// the server rows do).
    source: Region,
    seed: u64,
}

impl Target {
    fn new(size: usize, seed: u64) -> Result<Target, String> {
        let region = Region::builder(size)
            .thp(Thp::NoHuge)
            .build()
            .map_err(|e| format!("fault region: {e}"))?;
        let source = move_pool_pages(size, seed)?;
        Ok(Target {
            region,
            source,
            seed,
        })
    }

    /// The region offset of the page holding `addr`, if it is inside.
    fn page_off(&self, addr: u64) -> Option<usize> {
        let addr = usize::try_from(addr).ok()?;
        let off = self.region.offset_of(addr)?;
        Some(off - off % self.region.page_size())
    }

    fn mutate(&self, mutators: usize) -> Mutated {
        mutate(&self.region, mutators, false, pattern_word(self.seed, 0, 0))
    }

    /// Full check of every 16th page after the run.
    fn verify(&self) -> Result<(), String> {
        verify_pages(&self.region, Some(self.seed))
    }
}

/// Runs `mutators` threads touching every page of `region` (thread `t` takes pages `t, t + m,
/// ...`) and returns the merged latency histogram, the wall time and the first wrong word seen.
///
/// The wall time runs from the earliest first touch to the latest completed touch, each read by
/// the mutator that made it. (Reading the start on the coordinating thread after the barrier is
/// wrong on a machine with as many CPUs as mutators: when the mutators never block, as in SIGBUS
/// mode, the coordinator may not run again until they are nearly done, and the window shrinks to
/// almost nothing.)
fn mutate(region: &Region, mutators: usize, pinned: bool, expected: u64) -> Mutated {
    let ps = region.page_size();
    let pages = region.pages();
    let barrier = Barrier::new(mutators);
    let process_before = cpu_clock(rustix::time::ClockId::ProcessCPUTime);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..mutators)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    // A failed pin fails the figure, but only after the barrier: the other
                    // mutators wait there for this one.
                    let mut bad = if pinned { pin_to_nth_cpu(t) } else { Ok(()) };
                    let mut h = histogram();
                    barrier.wait();
                    let first = Instant::now();
                    let mut last = first;
                    for page in (t..pages).step_by(mutators) {
                        let start = Instant::now();
                        let word = region.read_u64(page * ps);
                        last = Instant::now();
                        let ns = (last - start).as_nanos();
                        h.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
                        if word != expected && bad.is_ok() {
                            bad = Err(format!(
                                "faulted page {page} reads {word:#018x}, expected {expected:#018x}"
                            ));
                        }
                    }
                    // Since the thread started: all of this mutator's own CPU.
                    let own = cpu_clock(rustix::time::ClockId::ThreadCPUTime);
                    (h, first, last, bad, own)
                })
            })
            .collect();
        let mut merged = histogram();
        let mut window: Option<(Instant, Instant)> = None;
        let mut verdict = Ok(());
        let mut mutator_cpu = Duration::ZERO;
        for w in workers {
            let (h, first, last, bad, own) = w.join().expect("mutator thread panicked");
            mutator_cpu += own;
            merged.add(h).expect("histograms with equal bounds merge");
            window = Some(window.map_or((first, last), |(a, b)| (a.min(first), b.max(last))));
            if verdict.is_ok() {
                verdict = bad;
            }
        }
        let wall = window.map_or(Duration::ZERO, |(a, b)| b - a);
        let process = cpu_clock(rustix::time::ClockId::ProcessCPUTime) - process_before;
        Mutated {
            latency: merged,
            wall,
            seen: verdict,
            handler_cpu: process.saturating_sub(mutator_cpu),
        }
    })
}

/// Pins the calling thread to the `n`-th CPU (wrapping) of those the process may run on: the
/// CPU `FaultServerBuilder::pin_cpus` gives handler thread `n`.
fn pin_to_nth_cpu(n: usize) -> Result<(), String> {
    let Some(cpu) = remap::system::allowed_cpu(n) else {
        return Err("the affinity mask cannot be read: no CPU to pin a mutator to".to_owned());
    };
    let mut one = rustix::thread::CpuSet::new();
    one.set(cpu);
    rustix::thread::sched_setaffinity(None, &one)
        .map_err(|e| format!("pinning mutator {n} to CPU {cpu}: {e}"))
}

/// Full check of every 16th page: pattern page 0 of `seed`, or zeros for `None`.
fn verify_pages(region: &Region, seed: Option<u64>) -> Result<(), String> {
    let ps = region.page_size();
    for page in (0..region.pages()).step_by(16) {
        match seed {
            Some(seed) => remap::pattern::verify_page(region, page, seed, 0)
                .map_err(|m| format!("faulted page {page}: {m}"))?,
            None => {
                for word in 0..ps / 8 {
                    let found = region.read_u64(page * ps + word * 8);
                    if found != 0 {
                        return Err(format!(
                            "zero-served page {page} word {word} reads {found:#018x}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// One repetition of `method` with `handlers` handler threads and `mutators` mutator threads.
pub(crate) fn run_rep(
    method: FaultMethod,
    size: usize,
    handlers: usize,
    mutators: usize,
    seed: u64,
) -> Result<FaultRep, String> {
    if matches!(
        method,
        FaultMethod::ServerZero
            | FaultMethod::ServerCopy
            | FaultMethod::ServerCopySpin
            | FaultMethod::ServerCopyPin
            | FaultMethod::ServerCopySpinPin
            | FaultMethod::ServerCopyColocated
            | FaultMethod::ServerMove
            | FaultMethod::ServerFn
            | FaultMethod::ServerSigbus
    ) {
        return server(method, size, handlers, mutators, seed);
    }
    let target = Target::new(size, seed)?;
    let faults = AtomicU64::new(0);
    let out = match method {
        FaultMethod::RawLoop => raw_loop(&target, None, handlers, mutators, &faults)?,
        FaultMethod::RawMoveLoop => {
            let pool = move_pool_pages(size, seed)?;
            raw_loop(&target, Some(&pool), handlers, mutators, &faults)?
        }
        #[cfg(feature = "peer")]
        FaultMethod::PeerLoop => peer_loop(&target, handlers, mutators, &faults)?,
        other => return Err(format!("{other} is not available in this build")),
    };
    let verify = out.seen.and_then(|()| target.verify());
    Ok(FaultRep {
        latency: out.latency,
        wall: out.wall,
        pages: target.region.pages() as u64,
        faults: faults.into_inner(),
        handler_cpu: out.handler_cpu,
        verify,
    })
}

/// Starts the server `builder` describes, runs the mutators against its region, and verifies the
/// pages (against `pattern`, or zeros) before stopping it: what every `FaultServer` row does.
fn serve<S: remap::server::PageSource>(
    builder: remap::server::FaultServerBuilder<S>,
    (mutators, pinned): (usize, bool),
    expected: u64,
    pattern: Option<u64>,
) -> Result<(Mutated, Result<(), String>, u64), String> {
    let srv = builder.start().map_err(|e| format!("FaultServer: {e}"))?;
    let out = mutate(srv.region(), mutators, pinned, expected);
    let faults = srv.stats().faults;
    let v = verify_pages(srv.region(), pattern);
    srv.stop().map_err(|e| format!("FaultServer::stop: {e}"))?;
    Ok((out, v, faults))
}

/// How long `server-copy-spin` handler threads spin before they park.
const SPIN: Duration = Duration::from_micros(100);

/// remap's `FaultServer` with a built-in source, or its `SigbusServer`.
fn server(
    method: FaultMethod,
    size: usize,
    handlers: usize,
    mutators: usize,
    seed: u64,
) -> Result<FaultRep, String> {
    use remap::server::{CopySource, FaultServer, FnSource, MovePool, SigbusServer, ZeroSource};

    let region = Region::builder(size)
        .thp(Thp::NoHuge)
        .build()
        .map_err(|e| format!("fault region: {e}"))?;
    let page = region.page_size();
    let pages = region.pages();
    // Pattern page 0, and that page repeated over the whole image.
    let image_page = || {
        let one = Region::builder(page).populate(true).build();
        one.map(|one| {
            remap::pattern::fill_page(&one, 0, seed, 0);
            let mut buf = vec![0u8; page];
            one.copy_out(0, &mut buf);
            buf
        })
        .map_err(|e| format!("image page: {e}"))
    };
    let image = || image_page().map(|one| one.repeat(pages));
    let pattern = Some(seed);
    let expected = pattern_word(seed, 0, 0);
    let (out, verify, faults) = match method {
        FaultMethod::ServerZero => {
            let srv = FaultServer::builder(region, ZeroSource).threads(handlers);
            serve(srv, (mutators, false), 0, None)?
        }
        FaultMethod::ServerCopy
        | FaultMethod::ServerCopySpin
        | FaultMethod::ServerCopyPin
        | FaultMethod::ServerCopySpinPin
        | FaultMethod::ServerCopyColocated => {
            let spin = matches!(
                method,
                FaultMethod::ServerCopySpin | FaultMethod::ServerCopySpinPin
            );
            let pin = matches!(
                method,
                FaultMethod::ServerCopyPin
                    | FaultMethod::ServerCopySpinPin
                    | FaultMethod::ServerCopyColocated
            );
            let colocated = method == FaultMethod::ServerCopyColocated;
            let srv = FaultServer::builder(region, CopySource::new(image()?))
                .threads(handlers)
                .spin(if spin { SPIN } else { Duration::ZERO })
                .pin_cpus(pin);
            serve(srv, (mutators, colocated), expected, pattern)?
        }
        FaultMethod::ServerMove => {
            let pool_pages = move_pool_pages(size, seed)?;
            let pool = MovePool::from_region(pool_pages).map_err(|e| format!("MovePool: {e}"))?;
            let srv = FaultServer::builder(region, pool).threads(handlers);
            serve(srv, (mutators, false), expected, pattern)?
        }
        FaultMethod::ServerFn => {
            // The closure copies one prepared page (pattern page 0) into the handler's page.
            let one: std::sync::Arc<[u8]> = image_page()?.into();
            let fill = move |_offset: usize, page: &mut [u8]| page.copy_from_slice(&one);
            let srv = FaultServer::builder(region, FnSource::new(fill)).threads(handlers);
            serve(srv, (mutators, false), expected, pattern)?
        }
        FaultMethod::ServerSigbus => {
            let srv = SigbusServer::start(region, CopySource::new(image()?))
                .map_err(|e| format!("SigbusServer: {e}"))?;
            let out = mutate(srv.region(), mutators, false, expected);
            let faults = srv.stats().faults;
            let v = verify_pages(srv.region(), pattern);
            drop(srv.stop());
            (out, v, faults)
        }
        other => return Err(format!("{other} is not a server method")),
    };
    Ok(FaultRep {
        latency: out.latency,
        wall: out.wall,
        pages: pages as u64,
        faults,
        handler_cpu: out.handler_cpu,
        verify: out.seen.and(verify),
    })
}

/// What the mutators of one repetition saw.
struct Mutated {
    latency: Histogram<u64>,
    wall: Duration,
    /// The first wrong word seen, if any.
    seen: Result<(), String>,
    /// CPU time outside the mutator threads while they ran.
    handler_cpu: Duration,
}

/// A region of `size` bytes whose every page holds pattern page 0 of `seed`: the pages a
/// `MovePool` (or the raw MOVE loop) moves in.
fn move_pool_pages(size: usize, seed: u64) -> Result<Region, String> {
    let pages = Region::builder(size)
        .thp(Thp::NoHuge)
        .build()
        .map_err(|e| format!("pool region: {e}"))?;
    for i in 0..pages.pages() {
        remap::pattern::fill_page(&pages, i, seed, 0);
    }
    Ok(pages)
}

/// The minimal handler: `poll` the uffd and a stop pipe, `read` the events, one `UFFDIO_COPY`
/// per fault from the image page at the fault's offset, or with `pool` one `UFFDIO_MOVE` of the
/// pool's page at the fault's offset (EEXIST: another handler won, or a MOVE moved without
/// counting it; either way a `UFFDIO_WAKE`).
fn raw_loop(
    target: &Target,
    pool: Option<&Region>,
    handlers: usize,
    mutators: usize,
    faults: &AtomicU64,
) -> Result<Mutated, String> {
    let uffd = Uffd::builder()
        .non_blocking(true)
        .create()
        .map_err(|e| format!("userfaultfd: {e}"))?;
    target
        .region
        .all_pages()
        .register(&uffd, RegisterMode::MISSING)
        .map_err(|e| format!("register: {e}"))?;
    let (stop_r, stop_w) = rustix::pipe::pipe().map_err(|e| format!("pipe: {e}"))?;
    let ps = target.region.page_size();
    std::thread::scope(|s| {
        let (started, all_started) = std::sync::mpsc::channel::<()>();
        let threads: Vec<_> = (0..handlers)
            .map(|_| {
                let (uffd, stop_r, started) = (&uffd, &stop_r, started.clone());
                s.spawn(move || -> Result<(), String> {
                    let mut buf = EventBuffer::new(64);
                    let _ = started.send(());
                    drop(started);
                    loop {
                        let mut fds = [
                            PollFd::new(uffd, PollFlags::IN),
                            PollFd::new(stop_r, PollFlags::IN),
                        ];
                        match rustix::event::poll(&mut fds, None) {
                            Ok(_) | Err(rustix::io::Errno::INTR) => {}
                            Err(e) => return Err(format!("poll: {e}")),
                        }
                        if !fds[1].revents().is_empty() {
                            return Ok(());
                        }
                        uffd.read_events(&mut buf)
                            .map_err(|e| format!("read: {e}"))?;
                        while let Some(event) = buf.next_event() {
                            let Event::Pagefault(fault) = event else {
                                continue;
                            };
                            faults.fetch_add(1, Ordering::Relaxed);
                            let off = target
                                .page_off(fault.address)
                                .ok_or_else(|| format!("fault outside: {:#x}", fault.address))?;
                            let resolved = match pool {
                                Some(pool) => raw::move_range(
                                    uffd,
                                    &target.region,
                                    off,
                                    pool,
                                    off,
                                    ps,
                                    uffd::MoveFlags::empty(),
                                ),
                                None => raw::copy_range(
                                    uffd,
                                    &target.region,
                                    off,
                                    &target.source,
                                    off,
                                    ps,
                                ),
                            };
                            match resolved {
                                Ok(_) => {}
                                // Another handler won, and its ioctl woke the thread; or (a
                                // MOVE on 6.18 under reclaim, docs/findings/
                                // move-undercounts-a-moved-page.md) the page moved anyway,
                                // and nothing woke it: wake it, or its mutator hangs for ever.
                                Err(RangeError::Exists { .. }) => {
                                    let page = target.region.as_ptr().wrapping_add(off);
                                    uffd.wake(page, ps).map_err(|e| format!("wake: {e}"))?;
                                }
                                Err(e) => return Err(format!("resolving at {off:#x}: {e}")),
                            }
                        }
                    }
                })
            })
            .collect();
        wait_until_started(started, &all_started, handlers);
        let out = target.mutate(mutators);
        stop(&stop_w)?;
        for t in threads {
            t.join().expect("handler thread panicked")?;
        }
        Ok(out)
    })
}

/// Returns once `handlers` threads have each sent on `all`'s channel (or died: each drops its
/// sender right after sending, so a thread that died first ends the wait): the mutators of
/// every handler-thread row start against handlers that are already waiting, as
/// `FaultServer::start` guarantees for the server rows. Where a fault finds its handler decides its cost on a VM, and
/// that is set by how the threads started: measured on this 2-vCPU guest, the raw loop's 1/1
/// cell served at 4 us p50 when its mutator raced the handler's start and at 66 us when the
/// handler was parked first, the server's own figure (docs/performance.md, "Where the handler
/// runs").
fn wait_until_started(
    started: std::sync::mpsc::Sender<()>,
    all: &std::sync::mpsc::Receiver<()>,
    handlers: usize,
) {
    // Our own sender goes first, so a thread that died before it sent ends the wait.
    drop(started);
    for _ in 0..handlers {
        if all.recv().is_err() {
            break;
        }
    }
}

fn stop(stop_w: &std::os::fd::OwnedFd) -> Result<(), String> {
    rustix::io::write(stop_w, b"x")
        .map(drop)
        .map_err(|e| format!("stopping the handlers: {e}"))
}

/// The peer crate's handler loop: `read_event` and `copy`, with the same poll and stop pipe.
#[cfg(feature = "peer")]
fn peer_loop(
    target: &Target,
    handlers: usize,
    mutators: usize,
    faults: &AtomicU64,
) -> Result<Mutated, String> {
    let peer = userfaultfd::UffdBuilder::new()
        .close_on_exec(true)
        .non_blocking(true)
        .user_mode_only(true)
        .create()
        .map_err(|e| format!("peer userfaultfd: {e}"))?;
    peer.register(target.region.as_ptr().cast(), target.region.len())
        .map_err(|e| format!("peer register: {e}"))?;
    let (stop_r, stop_w) = rustix::pipe::pipe().map_err(|e| format!("pipe: {e}"))?;
    let ps = target.region.page_size();
    std::thread::scope(|s| {
        let (started, all_started) = std::sync::mpsc::channel::<()>();
        let threads: Vec<_> = (0..handlers)
            .map(|_| {
                let (peer, stop_r, started) = (&peer, &stop_r, started.clone());
                s.spawn(move || -> Result<(), String> {
                    let _ = started.send(());
                    drop(started);
                    loop {
                        let mut fds = [
                            PollFd::new(peer, PollFlags::IN),
                            PollFd::new(stop_r, PollFlags::IN),
                        ];
                        match rustix::event::poll(&mut fds, None) {
                            Ok(_) | Err(rustix::io::Errno::INTR) => {}
                            Err(e) => return Err(format!("poll: {e}")),
                        }
                        if !fds[1].revents().is_empty() {
                            return Ok(());
                        }
                        let Some(event) = peer.read_event().map_err(|e| format!("read: {e}"))?
                        else {
                            continue;
                        };
                        let userfaultfd::Event::Pagefault { addr, .. } = event else {
                            continue;
                        };
                        faults.fetch_add(1, Ordering::Relaxed);
                        let off = target
                            .page_off(addr as u64)
                            .ok_or_else(|| format!("fault outside: {addr:?}"))?;
                        match raw::peer_copy_range(
                            peer,
                            &target.region,
                            off,
                            &target.source,
                            off,
                            ps,
                        ) {
                            Ok(_) => {}
                            Err(userfaultfd::Error::CopyFailed(errno))
                                if errno as i32 == libc::EEXIST => {}
                            Err(e) => return Err(format!("peer copy at {off:#x}: {e}")),
                        }
                    }
                })
            })
            .collect();
        wait_until_started(started, &all_started, handlers);
        let out = target.mutate(mutators);
        stop(&stop_w)?;
        for t in threads {
            t.join().expect("handler thread panicked")?;
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    /// The raw and peer loops' equal start: the wait returns only after every handler said it
    /// started (each counts itself first, and only once the waiter is about to wait, so a wait
    /// that returned at once would see a short count).
    #[test]
    fn wait_until_started_returns_after_every_handler_started() {
        const HANDLERS: usize = 4;
        let started = AtomicUsize::new(0);
        let waiting = std::sync::atomic::AtomicBool::new(false);
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            for _ in 0..HANDLERS {
                let (tx, started, waiting) = (tx.clone(), &started, &waiting);
                s.spawn(move || {
                    while !waiting.load(Ordering::SeqCst) {
                        std::thread::yield_now();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    started.fetch_add(1, Ordering::SeqCst);
                    tx.send(()).unwrap();
                    // Handlers keep running (and their senders drop) after they said so.
                });
            }
            waiting.store(true, Ordering::SeqCst);
            super::wait_until_started(tx, &rx, HANDLERS);
            assert_eq!(started.load(Ordering::SeqCst), HANDLERS);
        });
    }

    /// A handler that dies before it says it started ends the wait instead of hanging it.
    #[test]
    fn wait_until_started_ends_when_a_handler_dies_first() {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let handler_tx = tx.clone();
            let dead = std::thread::spawn(move || drop(handler_tx));
            dead.join().unwrap();
            super::wait_until_started(tx, &rx, 2);
            done_tx.send(()).unwrap();
        });
        let ended = done_rx.recv_timeout(std::time::Duration::from_secs(30));
        assert!(ended.is_ok(), "the wait hung on a handler that died");
        waiter.join().unwrap();
    }

    /// A pinned mutator runs on the CPU the server gives the handler of the same index.
    #[test]
    fn pin_to_nth_cpu_pins_the_thread_beside_handler_n() {
        for n in 0..3 {
            let mask = std::thread::spawn(move || {
                super::pin_to_nth_cpu(n).expect("pinning");
                rustix::thread::sched_getaffinity(None).expect("affinity mask")
            })
            .join()
            .unwrap();
            let cpu = remap::system::allowed_cpu(n).expect("an allowed CPU");
            let set: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
                .filter(|&c| mask.is_set(c))
                .collect();
            assert_eq!(set, [cpu], "mutator {n}");
        }
    }
}
