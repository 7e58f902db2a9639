//! Tests of `remap::server` for the defects of issue 8: each failed (hung, crashed or asserted)
//! before its fix. Scenarios that can hang or crash run in a child process with a timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use remap::region::{Region, Thp, HUGE_PAGE_SIZE};
use remap::server::{
    FailurePolicy, Fault, FaultServer, MovePool, PageSource, PoolError, Resolution, ServerError,
    SigbusServer, SignalSafeSource, ZeroSource,
};
use test_support::{require, Need};
use uffd::Features;

use crate::child::{self, Outcome, Scenario};

const SEED: u64 = 0x8a2d;

fn page() -> usize {
    rustix::param::page_size()
}

const DISPATCHER: &str = "server_hardening::child_scenarios";

const EVENTS: Features = Features::EVENT_REMOVE
    .union(Features::EVENT_UNMAP)
    .union(Features::EVENT_REMAP);

/// Every child scenario of this file (replayed by a hand run of [`child_scenarios`]).
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "grow-in-place",
        outcome: Outcome::Pass,
        needs: &[Need::Feature(EVENTS)],
    },
    Scenario {
        name: "grow-and-move",
        outcome: Outcome::Pass,
        needs: &[Need::Feature(EVENTS)],
    },
    Scenario {
        name: "fork-one-handler",
        outcome: Outcome::Pass,
        needs: &[Need::Root, Need::Feature(Features::EVENT_FORK)],
    },
    Scenario {
        name: "sigbus-dontneed-race",
        outcome: Outcome::Pass,
        needs: &[Need::Feature(Features::SIGBUS)],
    },
    Scenario {
        name: "sigbus-swapped-race",
        outcome: Outcome::Pass,
        needs: &[Need::Feature(Features::SIGBUS), Need::Swap],
    },
    Scenario {
        name: "pool-dropped-resolution",
        outcome: Outcome::Pass,
        needs: &[Need::Move],
    },
    Scenario {
        name: "pool-foreign-region",
        outcome: Outcome::Pass,
        needs: &[Need::Move],
    },
    #[cfg(feature = "tokio")]
    Scenario {
        name: "async-no-time-driver",
        outcome: Outcome::Pass,
        needs: &[Need::Feature(EVENTS)],
    },
];

#[track_caller]
fn run_child_ok(scenario: &str) {
    child::expect_listed(DISPATCHER, SCENARIOS, scenario, Outcome::Pass);
}

/// The body of the child processes of this file. Ignored in a normal run; run by hand
/// (`--ignored`, not as a child) it replays every scenario as a child and checks each outcome.
#[test]
#[ignore = "the body of child processes: run by the tests that spawn them"]
fn child_scenarios() {
    let Some(scenario) = child::scenario() else {
        child::run_table(DISPATCHER, SCENARIOS);
        return;
    };
    match scenario.as_str() {
        "grow-in-place" => grow_in_place_child(),
        "grow-and-move" => grow_and_move_child(),
        "fork-one-handler" => fork_one_handler_child(),
        "sigbus-dontneed-race" => sigbus_dontneed_race_child(),
        "sigbus-swapped-race" => sigbus_swapped_race_child(),
        "pool-dropped-resolution" => pool_dropped_resolution_child(),
        "pool-foreign-region" => pool_foreign_region_child(),
        #[cfg(feature = "tokio")]
        "async-no-time-driver" => async_no_time_driver_child(),
        other => panic!("unknown scenario {other}"),
    }
}

/// Reads the u64 at `addr` on a new thread; the receiver gets the value.
fn read_on_thread(addr: usize) -> mpsc::Receiver<u64> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: `addr` is inside a mapping the child keeps until this thread has answered (or
        // the child has failed); a volatile read of an aligned u64 creates no reference.
        let v = unsafe { (addr as *const u64).read_volatile() };
        let _ = tx.send(v);
    });
    rx
}

fn mmap_reservation(len: usize) -> usize {
    // SAFETY: a fresh private anonymous reservation that only the calling test uses.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p as usize
}

fn munmap_raw(addr: usize, len: usize) {
    // SAFETY: callers pass a range this child process mapped itself and no longer touches.
    assert_eq!(unsafe { libc::munmap(addr as *mut libc::c_void, len) }, 0);
}

// ---- defect 2: faults the server cannot serve must end ----

#[test]
fn a_fault_beyond_a_region_grown_in_place_ends() {
    require!(Need::Feature(EVENTS));
    run_child_ok("grow-in-place");
}

/// Child: the region's mapping grows in place (`mremap` without `MREMAP_MAYMOVE`: no event at
/// all); the new tail is still registered. A fault there is outside the region: the server must
/// unregister it and wake the thread, which then reads a zero page, instead of waking it into
/// the same fault for ever.
fn grow_in_place_child() {
    let pages = 16;
    let len = pages * page();
    // Make room above the region: mappings are placed top-down, so a region made right after a
    // reservation sits just below it. The reservation stays until the server has started:
    // starting it maps small things (each handler thread's signal stack, 16 KiB where
    // AT_MINSIGSTKSZ is large), which the kernel would put in a free gap right above the region.
    let (region, above) = (0..8)
        .find_map(|_| {
            let above = mmap_reservation(len);
            let region = Region::new(len).unwrap();
            if region.range().end == above {
                Some((region, above))
            } else {
                munmap_raw(above, len);
                None
            }
        })
        .expect("no reservation right above a fresh region");
    let base = region.addr();
    let server = FaultServer::builder(region, ZeroSource).start().unwrap();
    munmap_raw(above, len);
    // SAFETY: grows the served mapping in place over the range just freed above it (no
    // MAYMOVE: it fails rather than move); nothing references the region's memory.
    let grown = unsafe { libc::mremap(base as *mut libc::c_void, len, 2 * len, 0) };
    assert_eq!(grown as usize, base, "in-place grow failed");
    let beyond = read_on_thread(base + len + 4 * page() + 8);
    assert_eq!(
        beyond.recv_timeout(Duration::from_secs(5)),
        Ok(0),
        "a fault beyond the region livelocks: {}",
        server.stats()
    );
    // The region itself is still served.
    assert_eq!(server.region().read_u64(2 * page()), 0);
    assert_eq!(server.stats().served_zero, 1, "{}", server.stats());
    let region = server.stop().unwrap();
    assert_eq!(region.len(), len);
    drop(region);
    munmap_raw(base + len, len);
}

#[test]
fn a_fault_beyond_the_old_length_of_a_grown_and_moved_part_ends() {
    require!(Need::Feature(EVENTS));
    run_child_ok("grow-and-move");
}

/// Child: `mremap` moves the region's last 8 pages elsewhere and grows them to 16. The REMAP
/// event carries the old length, so the server unregisters only the first 8 pages of the new
/// mapping; a fault in the other 8 must end too (unregistered, woken: a zero page).
fn grow_and_move_child() {
    let server = FaultServer::builder(Region::new(16 * page()).unwrap(), ZeroSource)
        .threads(2)
        .start()
        .unwrap();
    let base = server.region().addr();
    let target = mmap_reservation(16 * page());
    // SAFETY: moves the served region's pages 8..16 (nothing references them) over our own
    // reservation, growing them to 16 pages.
    let moved = unsafe {
        libc::mremap(
            (base + 8 * page()) as *mut libc::c_void,
            8 * page(),
            16 * page(),
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target as *mut libc::c_void,
        )
    };
    assert_eq!(moved as usize, target);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().remaps == 0 {
        assert!(Instant::now() < deadline, "no REMAP event");
        std::thread::sleep(Duration::from_millis(1));
    }
    for p in [2, 12] {
        let reader = read_on_thread(target + p * page());
        assert_eq!(
            reader.recv_timeout(Duration::from_secs(5)),
            Ok(0),
            "a fault on page {p} of the moved range livelocks: {}",
            server.stats()
        );
    }
    assert_eq!(server.region().read_u64(page()), 0);
    server.stop().unwrap();
    munmap_raw(target, 16 * page());
}

// ---- defect 3: FailurePolicy::Poison without UFFDIO_POISON ----

#[test]
fn poison_policy_on_a_kernel_without_uffdio_poison_is_a_typed_error() {
    require!(Need::Uffd);
    let without = uffd::Capabilities::probe()
        .unwrap()
        .without(Features::POISON);
    match FaultServer::builder(Region::new(page()).unwrap(), ZeroSource)
        .on_failure(FailurePolicy::Poison)
        .capabilities(without)
        .start()
    {
        Err(ServerError::Unsupported { what, missing }) => {
            assert_eq!(missing, Features::POISON);
            assert!(what.contains("Poison"), "{what}");
        }
        other => panic!("expected ServerError::Unsupported, got {other:?}"),
    }
    // The zero policy needs nothing: the same capabilities start a server.
    let server = FaultServer::builder(Region::new(page()).unwrap(), ZeroSource)
        .capabilities(without)
        .start()
        .unwrap();
    assert_eq!(server.region().read_u64(0), 0);
}

// ---- defect 4: FORK event and malloc ----

#[test]
fn fork_with_one_handler_thread_while_faults_are_parked_completes() {
    require!(Need::Root, Need::Feature(Features::EVENT_FORK));
    run_child_ok("fork-one-handler");
}

/// Child: one handler thread with `EVENT_FORK`; one thread keeps faulting pages in while the main
/// thread forks over and over. glibc's `fork()` holds the allocator's locks until the FORK event
/// is read, and meanwhile every resolve gets EAGAIN: a handler that allocates to park such a
/// fault (or anywhere before it reads the event) never reads it, and the fork never returns.
fn fork_one_handler_child() {
    let pages = 4096;
    let region = Region::builder(pages * page())
        .dontfork(false)
        .build()
        .unwrap();
    let server = FaultServer::builder(region, ZeroSource)
        .threads(1)
        .features(Features::EVENT_FORK)
        .start()
        .unwrap();
    let stop = AtomicBool::new(false);
    let running = AtomicBool::new(false);
    let forks = std::thread::scope(|s| {
        let region = server.region();
        let (stop, running) = (&stop, &running);
        s.spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                // The thread's own start-up allocations are behind it now: from here on it
                // only touches memory, so it can never be what blocks a fork.
                running.store(true, Ordering::Relaxed);
                let _ = region.read_u64((i % pages) * page());
                i += 1;
                if i % pages == 0 {
                    region.madvise_dontneed(0..region.len()).unwrap();
                }
            }
        });
        while !running.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut forks = 0u64;
        while Instant::now() < deadline {
            // SAFETY: the child calls only `_exit`, async-signal-safe, as required after fork()
            // in a multi-threaded process.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: ends the child at once, without running any destructor.
                unsafe { libc::_exit(0) };
            }
            assert!(pid > 0, "fork failed");
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a valid out-pointer.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            forks += 1;
        }
        stop.store(true, Ordering::Relaxed);
        forks
    });
    assert!(forks > 0);
    assert_eq!(server.stats().forks, forks, "{}", server.stats());
    server.stop().unwrap();
}

// ---- defect 5: SIGBUS mode and a benign race ----

#[test]
fn sigbus_mode_survives_a_lost_race_on_a_page_zapped_by_dontneed() {
    require!(Need::Feature(Features::SIGBUS));
    run_child_ok("sigbus-dontneed-race");
}

/// Child: two threads read the same pages while the main thread zaps them with `MADV_DONTNEED`
/// over and over for 3 s (up to 10 s, until a race was lost). A resolve that loses its race
/// (EEXIST) to the other thread and then finds the page zapped must retry the access, not pass
/// the SIGBUS on (which kills the process). A matter of timing: before the fix this died in
/// about a third of the runs; `sigbus_mode_survives_a_lost_race_on_a_page_swapped_out_meanwhile`
/// makes the same mistake certain.
fn sigbus_dontneed_race_child() {
    let pages = 8;
    let server = SigbusServer::start(Region::new(pages * page()).unwrap(), ZeroSource).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (region, stop) = (server.region(), &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..pages {
                        assert_eq!(region.read_u64(i * page()), 0);
                    }
                }
            });
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3)
            || (server.stats().races == 0 && start.elapsed() < Duration::from_secs(10))
        {
            server.region().madvise_dontneed(0..pages * page()).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let stats = server.stats();
    assert!(stats.races > 0, "the race never happened: {stats}");
}

#[test]
fn sigbus_mode_survives_a_lost_race_on_a_page_swapped_out_meanwhile() {
    require!(Need::Feature(Features::SIGBUS), Need::Swap);
    run_child_ok("sigbus-swapped-race");
}

/// How many threads entered [`TwoFaults::resolve`] (child process only).
static ENTRANTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Lets the second entrant of [`TwoFaults::resolve`] go on.
static RELEASE_SECOND: AtomicBool = AtomicBool::new(false);

/// Copies a page of 0x5a bytes in. The first thread to enter waits (spinning on atomics, 5 s at
/// most) for a second one, then resolves; the second waits until released.
struct TwoFaults(Box<[u8]>);

impl PageSource for TwoFaults {
    fn resolve<'a>(&'a self, _fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        let me = ENTRANTS.fetch_add(1, Ordering::SeqCst) + 1;
        let start = Instant::now();
        let go = || match me {
            1 => ENTRANTS.load(Ordering::SeqCst) >= 2,
            2 => RELEASE_SECOND.load(Ordering::SeqCst),
            _ => true,
        };
        while !go() && start.elapsed() < Duration::from_secs(5) {
            std::hint::spin_loop();
        }
        Resolution::Copy(&self.0)
    }
}

// SAFETY: `resolve` only loads and stores atomics, reads the clock (`clock_gettime`) and slices
// its own buffer; `move_done` is the no-op default.
unsafe impl SignalSafeSource for TwoFaults {}

/// Child: two threads fault on one page at once; the first resolves it; the page is then
/// swapped out before the second resolves. The second's COPY fails with EEXIST (a swap entry is
/// not a hole) and pagemap says "not present": a lost race, not a foreign SIGBUS. The access
/// must be retried (it swaps the page in), not passed on to the previous handler, which resets
/// SIGBUS to its default action, so that the next fault kills the process.
fn sigbus_swapped_race_child() {
    let server = SigbusServer::start(
        Region::new(page()).unwrap(),
        TwoFaults(vec![0x5a; page()].into_boxed_slice()),
    )
    .unwrap();
    let addr = server.region().addr();
    let (tx, rx) = mpsc::channel();
    for _ in 0..2 {
        let tx = tx.clone();
        std::thread::spawn(move || {
            // SAFETY: the region stays mapped until both readers have answered (or the child
            // has failed); a volatile read of an aligned u64 creates no reference.
            let v = unsafe { (addr as *const u64).read_volatile() };
            let _ = tx.send(v);
        });
    }
    let expected = u64::from_ne_bytes([0x5a; 8]);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(expected));
    assert_eq!(ENTRANTS.load(Ordering::SeqCst), 2, "both threads faulted");
    let pagemap = remap::inspect::Pagemap::open().unwrap();
    let swapped = (0..100).any(|_| {
        // Swap is shared with every other process: make sure it is (still) on.
        test_support::met(Need::Swap).unwrap();
        server.region().pageout(0..page()).unwrap();
        let out = pagemap.state(addr).unwrap() == remap::inspect::PageState::Swapped;
        if !out {
            std::thread::sleep(Duration::from_millis(10));
        }
        out
    });
    assert!(swapped, "the page would not swap out");
    RELEASE_SECOND.store(true, Ordering::SeqCst);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)),
        Ok(expected),
        "the second reader"
    );
    // Passing the SIGBUS on would also have let the previous handler (the standard library's)
    // reset SIGBUS to its default action: the next fault would kill us. It must be served.
    server.region().madvise_dontneed(0..page()).unwrap();
    assert_eq!(server.region().read_u64(0), expected);
    let stats = server.stats();
    assert_eq!((stats.races, stats.served_copy), (1, 2), "{stats}");
}

// ---- defect 6: MovePool ----

fn fault_at(offset: usize) -> Fault {
    Fault {
        offset,
        address: offset,
        len: page(),
        write: false,
        thread_id: None,
    }
}

#[test]
fn pool_give_back_ends_when_a_resolution_was_dropped() {
    require!(Need::Move);
    run_child_ok("pool-dropped-resolution");
}

/// Child: a source takes a page from the pool and drops the resolution (as a wrapping source
/// that changes its mind, or a panic after `resolve`, would). The slot must not stay busy:
/// `give_back` must answer (the pool is full again), not wait for it for ever.
fn pool_dropped_resolution_child() {
    let pool = MovePool::new(2).unwrap();
    let dropped = pool.resolve(&fault_at(0), &mut []);
    assert!(matches!(dropped, Resolution::Lease(_)));
    drop(dropped);
    assert_eq!(pool.available(), 2, "the dropped page is free again");
    let from = Region::new(page()).unwrap();
    from.write_u64(0, 1);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = tx.send(matches!(pool.give_back(&from, 0), Err(PoolError::Full)));
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(true),
            "give_back waits for ever on a dropped resolution's slot"
        );
    });
    // A lease still held keeps its slot in flight: give_back waits for it a bounded time only.
    let held = pool.resolve(&fault_at(0), &mut []);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = tx.send(matches!(pool.give_back(&from, 0), Err(PoolError::Full)));
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(true),
            "give_back waits for ever on a slot in flight"
        );
    });
    drop(held);
    assert_eq!(pool.available(), 2);
}

#[test]
fn pool_give_back_of_a_bad_offset_is_an_error_not_a_panic() {
    require!(Need::Move);
    let pool = MovePool::new(1).unwrap();
    let from = Region::new(2 * page()).unwrap();
    from.write_u64(0, 1);
    let page0 = pool.resolve(&fault_at(0), &mut []);
    // Give the pool room, then hand it offsets that are no page of `from`.
    let Resolution::Lease(lease) = page0 else {
        panic!("the pool has a page")
    };
    pool_region_page_out(&lease);
    drop(lease);
    assert_eq!(pool.available(), 0, "the page left: the slot is empty");
    for offset in [3, 2 * page(), usize::MAX & !(page() - 1)] {
        match pool.give_back(&from, offset) {
            Err(PoolError::Move(uffd::RangeError::Invalid { done: 0 })) => {}
            other => panic!("offset {offset:#x}: expected Invalid, got {other:?}"),
        }
    }
    pool.give_back(&from, 0).unwrap();
    assert_eq!(pool.available(), 1);
}

/// Takes the leased page out of the pool's region, as a MOVE out would (`MADV_DONTNEED` on the
/// slot): the lease, dropped, must then settle the slot as empty.
fn pool_region_page_out(lease: &remap::server::PoolLease<'_>) {
    lease
        .region()
        .madvise_dontneed(lease.offset()..lease.offset() + page())
        .unwrap();
}

#[test]
fn pool_resolve_waits_for_a_page_held_by_a_fault_that_loses_its_race() {
    require!(Need::Move);
    let pool = MovePool::new(1).unwrap();
    // A fault holds the only page and is about to lose its race (its MOVE will find the
    // destination resolved, and the page will stay in the pool).
    let held = pool.resolve(&fault_at(0), &mut []);
    let asking = AtomicBool::new(false);
    std::thread::scope(|s| {
        let pool = &pool;
        let asking = &asking;
        let other = s.spawn(move || {
            asking.store(true, Ordering::SeqCst);
            match pool.resolve(&fault_at(page()), &mut []) {
                Resolution::Zero | Resolution::Poison => "pool empty",
                _ => "a page",
            }
        });
        while !asking.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        drop(held); // the race is lost: the page stays in the pool
        assert_eq!(
            other.join().unwrap(),
            "a page",
            "the pool answered empty while its page was in flight"
        );
    });
}

#[test]
fn pool_from_a_region_registered_elsewhere_is_an_error_not_a_hang() {
    require!(Need::Move);
    run_child_ok("pool-foreign-region");
}

/// Child: `from_region` on a region registered with someone else's userfaultfd: touching its
/// missing pages would block for ever; it must fail with EBUSY from the registration.
fn pool_foreign_region_child() {
    let region = Region::new(2 * page()).unwrap();
    region.write_u64(0, 1); // one present page, one missing
    let other = uffd::Uffd::new().unwrap();
    region
        .all_pages()
        .register(&other, uffd::RegisterMode::MISSING)
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(MovePool::from_region(region).map(drop));
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Err(PoolError::Register(err))) => assert_eq!(err.errno, uffd::Errno::BUSY),
        other => panic!("expected a registration error (EBUSY), got {other:?}"),
    }
    drop(other);
}

#[test]
fn pool_new_with_no_pages_is_an_error() {
    require!(Need::Move);
    assert!(matches!(MovePool::new(0), Err(PoolError::NoPages)));
}

#[test]
fn thp_backed_pool_served_by_two_threads_keeps_no_phantom_free_slot() {
    require!(Need::Move, Need::Thp);
    let pages = HUGE_PAGE_SIZE / page();
    let mut thp_trials = 0;
    for trial in 0..20 {
        let pool_region = Region::builder(HUGE_PAGE_SIZE)
            .huge_aligned(true)
            .thp(Thp::Huge)
            .build()
            .unwrap();
        remap::pattern::fill(&pool_region, SEED);
        if !remap::inspect::is_thp_mapped(pool_region.addr()).unwrap_or(false) {
            continue;
        }
        thp_trials += 1;
        let pool = MovePool::from_region(pool_region).unwrap();
        let server = FaultServer::builder(Region::new(pages * page()).unwrap(), pool)
            .threads(2)
            .start()
            .unwrap();
        std::thread::scope(|s| {
            for m in 0..2 {
                let region = server.region();
                s.spawn(move || {
                    for i in (m..pages).step_by(2) {
                        let _ = region.read_u64(i * page());
                    }
                });
            }
        });
        let stats = server.stats();
        assert_eq!(stats.errors, 0, "trial {trial}: {stats}");
        assert_eq!(stats.served_move, pages as u64, "trial {trial}: {stats}");
        assert_eq!(
            server.source().available(),
            0,
            "trial {trial}: a phantom free slot"
        );
    }
    assert!(thp_trials > 0, "no trial got a PMD-mapped THP pool");
}

// ---- defect 7: tokio front-end ----

#[cfg(feature = "tokio")]
#[test]
fn async_server_on_a_runtime_without_io_is_a_reactor_error() {
    use remap::server::AsyncFaultServer;
    require!(Need::Uffd);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        match AsyncFaultServer::start(Region::new(page()).unwrap(), ZeroSource) {
            Err(ServerError::Reactor(_)) => {}
            other => panic!("expected ServerError::Reactor, got {other:?}"),
        }
    });
}

#[cfg(feature = "tokio")]
#[test]
fn async_server_on_a_runtime_without_timers_retries_parked_faults() {
    require!(Need::Feature(EVENTS));
    run_child_ok("async-no-time-driver");
}

/// Child: a runtime with IO but no time driver; faults race with `MADV_DONTNEED` so that some
/// resolves get EAGAIN and are parked. Retrying them must not need tokio's timer (which panics
/// there, leaving the faulting threads waiting until the server is dropped).
#[cfg(feature = "tokio")]
fn async_no_time_driver_child() {
    use remap::server::AsyncFaultServer;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let pages = 32;
        let server =
            AsyncFaultServer::start(Region::new(pages * page()).unwrap(), ZeroSource).unwrap();
        let addr = server.region().addr();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        // SAFETY: zaps pages of the served region, which stays mapped until
                        // this thread has answered.
                        unsafe {
                            libc::madvise(
                                addr as *mut libc::c_void,
                                pages * page(),
                                libc::MADV_DONTNEED,
                            )
                        };
                    }
                });
                let deadline = Instant::now() + Duration::from_millis(1500);
                while Instant::now() < deadline {
                    for i in 0..pages {
                        // SAFETY: the region stays mapped until this thread has answered.
                        let _ = unsafe { ((addr + i * page()) as *const u64).read_volatile() };
                    }
                }
                stop.store(true, Ordering::Relaxed);
            });
            let _ = tx.send(());
        });
        tokio::select! {
            result = server.serve() => panic!("serve ended: {result:?}"),
            () = async {
                while rx.try_recv().is_err() {
                    tokio::task::yield_now().await;
                }
            } => {}
        }
        let stats = server.stats();
        assert!(
            stats.removes > 0 && stats.retries > 0,
            "no fault was parked: {stats}"
        );
        drop(server);
    });
}
