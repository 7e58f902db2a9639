//! Tests of `remap::server`, against the real kernel.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use remap::pattern::pattern_word;
use remap::region::Region;
use remap::server::{
    CopySource, Fault, FaultServer, FnSource, MovePool, PageSource, PanicPolicy, Resolution,
    ServerError, SigbusServer, SignalSafeSource, ZeroSource,
};
use test_support::{require, Need};

use crate::child::{self, Outcome, Scenario};
use crate::pattern::{fill_pattern, page, pattern_image, pattern_pool};
use uffd::Features;

const SEED: u64 = 0x5eed;

/// The mark mutator `m` writes into the last word of the pages it owns.
fn mark(m: usize, index: usize) -> u64 {
    ((m as u64 + 1) << 32) | index as u64
}

/// Mutators touch every page of the region concurrently, each in its own order: mutator `m`
/// writes the last word of pages `i % mutators == m` and reads word 0 of the others.
fn run_mutators(region: &Region, mutators: usize) {
    let pages = region.pages();
    let last = page() - 8;
    std::thread::scope(|s| {
        for m in 0..mutators {
            s.spawn(move || {
                for k in 0..pages {
                    // Different strides make the mutators meet on the same pages.
                    let i = (k * (2 * m + 1) + m * 7) % pages;
                    if i % mutators == m {
                        region.write_u64(i * page() + last, mark(m, i));
                    } else {
                        let _ = region.read_u64(i * page());
                    }
                }
            });
        }
    });
}

/// Checks page `i`: all words but the last from `word(w)`, the last word the owner's mark.
fn check_page(region: &Region, i: usize, mutators: usize, word: impl Fn(u64) -> u64) {
    let words = page() / 8;
    for w in 0..words - 1 {
        assert_eq!(
            region.read_u64(i * page() + w * 8),
            word(w as u64),
            "page {i} word {w}"
        );
    }
    assert_eq!(
        region.read_u64(i * page() + (words - 1) * 8),
        mark(i % mutators, i),
        "page {i} mark"
    );
}

const PAGES: usize = 192;
const MUTATORS: usize = 3;
const HANDLERS: usize = 3;

fn served_once<S: PageSource>(server: &FaultServer<S>) {
    // A duplicate fault event (two threads faulted on one page) may still be unread, or on its
    // way to EEXIST, after every mutator is done: let the counters settle (20 ms unchanged).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = server.stats();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_millis(20) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        let now = server.stats();
        if now != last || now.faults != now.served() + now.races {
            since = Instant::now();
        }
        last = now;
    }
    let stats = server.stats();
    assert_eq!(stats.served(), PAGES as u64, "{stats}");
    assert_eq!(stats.faults, stats.served() + stats.races, "{stats}");
    assert_eq!(stats.errors + stats.dropped + stats.left, 0, "{stats}");
}

/// Serves [`PAGES`] pages from `source` with [`HANDLERS`] threads to [`MUTATORS`] concurrent
/// mutators; checks each page was served once (by the counter `kind` picks) with `word(i, w)`.
fn serves_each_page_once<S: PageSource>(
    source: S,
    kind: fn(&remap::server::ServerStats) -> u64,
    word: fn(usize, u64) -> u64,
) {
    let server = FaultServer::builder(Region::new(PAGES * page()).unwrap(), source)
        .threads(HANDLERS)
        .start()
        .unwrap();
    run_mutators(server.region(), MUTATORS);
    served_once(&server);
    assert_eq!(kind(&server.stats()), PAGES as u64);
    for i in 0..PAGES {
        check_page(server.region(), i, MUTATORS, |w| word(i, w));
    }
}

#[test]
fn zero_source_serves_each_page_once_under_concurrency() {
    require!(Need::Uffd);
    serves_each_page_once(ZeroSource, |s| s.served_zero, |_, _| 0);
}

#[test]
fn copy_source_serves_each_page_once_under_concurrency() {
    require!(Need::Uffd);
    serves_each_page_once(
        CopySource::new(pattern_image(SEED, PAGES)),
        |s| s.served_copy,
        |i, w| pattern_word(SEED, i as u64, w),
    );
}

#[test]
fn fn_source_serves_each_page_once_under_concurrency() {
    require!(Need::Uffd);
    serves_each_page_once(
        FnSource::new(|offset, buf| fill_pattern(SEED, offset, buf)),
        |s| s.served_copy,
        |i, w| pattern_word(SEED, i as u64, w),
    );
}

/// Which pool page (by its pattern) page `i` of `region` holds.
fn pool_page_of(region: &Region, i: usize, pool_pages: usize) -> usize {
    let word1 = region.read_u64(i * page() + 8);
    (0..pool_pages)
        .find(|&p| pattern_word(SEED, p as u64, 1) == word1)
        .unwrap_or_else(|| panic!("page {i} holds no pool page"))
}

#[test]
fn move_pool_serves_each_page_once_under_concurrency() {
    require!(Need::Move);
    // A spare page per handler: a duplicate fault's lease is out until its MOVE loses the race,
    // and a fault that finds no free page waits for it, but at most 100 ms, and a handler
    // preempted that long under the full suite on two CPUs makes the pool answer a zero page
    // (as documented). The race that made it answer one with a free page in hand is pinned by
    // the unit test `a_page_handed_back_while_another_thread_looks_is_found_not_reported_empty`.
    let pool_pages = PAGES + HANDLERS;
    let pool = pattern_pool(SEED, Region::new(pool_pages * page()).unwrap());
    let server = FaultServer::builder(Region::new(PAGES * page()).unwrap(), pool)
        .threads(HANDLERS)
        .start()
        .unwrap();
    run_mutators(server.region(), MUTATORS);
    served_once(&server);
    let stats = server.stats();
    assert_eq!(
        (stats.served_move, stats.served_zero),
        (PAGES as u64, 0),
        "{stats}"
    );
    assert_eq!(server.source().available(), HANDLERS);
    // Every page is a distinct pool page, moved in whole.
    let mut seen = HashSet::new();
    for i in 0..PAGES {
        let p = pool_page_of(server.region(), i, pool_pages);
        assert!(seen.insert(p), "pool page {p} served twice");
        check_page(server.region(), i, MUTATORS, |w| {
            pattern_word(SEED, p as u64, w)
        });
    }
}

#[test]
fn move_pool_recycles_given_back_pages_and_falls_back_to_zero() {
    require!(Need::Move);
    let pool = pattern_pool(SEED, Region::new(2 * page()).unwrap());
    let server = FaultServer::builder(Region::new(4 * page()).unwrap(), pool)
        .start()
        .unwrap();
    let region = server.region();
    let (a, b) = (pool_page_of(region, 0, 2), pool_page_of(region, 1, 2));
    assert_ne!(a, b);
    // Empty pool: the zero-page fallback.
    assert_eq!(region.read_u64(2 * page() + 8), 0);
    assert_eq!(server.stats().served_zero, 1);
    // Give page 0 back: it leaves the region (faults again) and is served to the next fault.
    server.source().give_back(region, 0).unwrap();
    assert_eq!(server.source().available(), 1);
    assert_eq!(pool_page_of(region, 3, 2), a);
    let _ = region.read_u64(0);
    let stats = server.stats();
    assert_eq!((stats.served_move, stats.served_zero), (3, 2), "{stats}");
}

/// Records the non-cooperative events the source is told about.
#[derive(Debug, Default)]
struct Recorder {
    removes: Mutex<Vec<Range<usize>>>,
    unmaps: Mutex<Vec<Range<usize>>>,
    remaps: Mutex<Vec<(usize, usize, usize)>>,
    forks: AtomicUsize,
}

impl PageSource for Recorder {
    fn resolve<'a>(&'a self, fault: &Fault, page: &'a mut [u8]) -> Resolution<'a> {
        fill_pattern(SEED, fault.offset, page);
        Resolution::Copy(page)
    }
    fn on_remove(&self, range: Range<usize>) {
        self.removes.lock().unwrap().push(range);
    }
    fn on_unmap(&self, range: Range<usize>) {
        self.unmaps.lock().unwrap().push(range);
    }
    fn on_remap(&self, from: usize, to: usize, len: usize) {
        self.remaps.lock().unwrap().push((from, to, len));
    }
    fn on_fork(&self, child: uffd::Uffd) {
        self.forks.fetch_add(1, Ordering::SeqCst);
        drop(child);
    }
}

fn verify_served(region: &Region, pages: Range<usize>) {
    for i in pages {
        assert_eq!(
            remap::pattern::verify_page(region, i, SEED, i as u64),
            Ok(()),
            "page {i}"
        );
    }
}

/// Polls `cond` for up to 10 s.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

const EVENTS: Features = Features::EVENT_REMOVE
    .union(Features::EVENT_UNMAP)
    .union(Features::EVENT_REMAP);

#[test]
fn remove_unmap_and_remap_events_while_faults_are_in_flight() {
    require!(Need::Feature(EVENTS));
    run_child_ok("events");
}

/// Child: DONTNEED concurrently with faults, then munmap and mremap of parts of the region.
fn events_child() {
    let recorder = Arc::new(Recorder::default());
    let server = FaultServer::builder(Region::new(64 * page()).unwrap(), Arc::clone(&recorder))
        .threads(2)
        .start()
        .unwrap();
    let region = server.region();
    // MADV_DONTNEED on pages 0..32 over and over while two threads keep faulting them in.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for m in 0..2 {
            let stop = &stop;
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for i in (m..32).step_by(2) {
                        // Any value read is a served page (pattern) or a fresh fault.
                        let v = region.read_u64(i * page() + 16);
                        assert_eq!(v, pattern_word(SEED, i as u64, 2), "page {i}");
                    }
                }
            });
        }
        for _ in 0..50 {
            region.madvise_dontneed(0..32 * page()).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let stats = server.stats();
    assert!(stats.removes >= 50, "{stats}");
    assert!(stats.served_copy > 32, "pages were served again: {stats}");
    assert_eq!(stats.errors, 0, "{stats}");
    assert!(recorder
        .removes
        .lock()
        .unwrap()
        .contains(&(region.addr()..region.addr() + 32 * page())));
    verify_served(region, 0..32);

    // Deterministic: a removed page faults again and is served again. (First let faults that
    // were read before a remove and are waiting for their EAGAIN retry drain: their retry serves
    // a page too.)
    std::thread::sleep(Duration::from_millis(50));
    let before = server.stats().served_copy;
    region.madvise_dontneed(0..8 * page()).unwrap();
    verify_served(region, 0..8);
    assert_eq!(server.stats().served_copy, before + 8);

    // munmap pages 48..56: the source hears of it, the server keeps working.
    let unmapped = region.addr() + 48 * page();
    // SAFETY: the range is part of the served region, which this test owns; nothing references it
    // and nothing touches it afterwards (the region's own munmap on drop tolerates the hole).
    unsafe { libc::munmap(unmapped as *mut libc::c_void, 8 * page()) };
    wait_until("on_unmap", || !recorder.unmaps.lock().unwrap().is_empty());
    assert_eq!(
        recorder.unmaps.lock().unwrap().as_slice(),
        std::slice::from_ref(&(unmapped..unmapped + 8 * page()))
    );
    // The server re-reserved the hole: nothing else can be mapped there now.
    assert_eq!(probe_free(unmapped, 8 * page()), Err(libc::EEXIST));

    // mremap pages 56..64 elsewhere: the server stops serving them; their contents move along.
    verify_served(region, 56..58); // present pages move with the mapping
    let old = region.addr() + 56 * page();
    // SAFETY: a fresh anonymous reservation, used only as the mremap target below.
    let target = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8 * page(),
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(target, libc::MAP_FAILED);
    // SAFETY: moves part of the served region (nothing references it) over our own reservation.
    let moved = unsafe {
        libc::mremap(
            old as *mut libc::c_void,
            8 * page(),
            8 * page(),
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target,
        )
    };
    assert_eq!(moved, target);
    let to = target as usize;
    wait_until("on_remap", || !recorder.remaps.lock().unwrap().is_empty());
    assert_eq!(probe_free(old, 8 * page()), Err(libc::EEXIST));
    assert_eq!(
        recorder.remaps.lock().unwrap().as_slice(),
        &[(old, to, 8 * page())]
    );
    // SAFETY: reads inside the mapping just moved to `to`, which this test owns.
    let (kept, fresh) = unsafe {
        (
            ((to + 8) as *const u64).read_volatile(),
            ((to + 4 * page()) as *const u64).read_volatile(),
        )
    };
    assert_eq!(kept, pattern_word(SEED, 56, 1));
    assert_eq!(fresh, 0, "the remapped range is ordinary memory now");
    // SAFETY: unmaps the moved range, which only this test uses.
    unsafe { libc::munmap(target, 8 * page()) };

    // The rest still works.
    verify_served(region, 32..40);
    let stats = server.stats();
    assert_eq!(
        (stats.unmaps, stats.remaps, stats.errors),
        (2, 1, 0),
        "{stats}"
    );
    let region = server.stop().unwrap();
    assert_eq!(
        region.len(),
        64 * page(),
        "no foreign mapping: the region comes back whole"
    );
    let (start, len) = (region.addr(), region.len());
    drop(region);
    assert_eq!(
        probe_free(start, len),
        Ok(()),
        "dropping unmapped our reservations too"
    );
}

/// Whether `len` bytes at `addr` are free: maps them with `MAP_FIXED_NOREPLACE` (and unmaps
/// them again); the errno when something is mapped there.
fn probe_free(addr: usize, len: usize) -> Result<(), i32> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: it fails with EEXIST if
    // anything is mapped in the range, else maps a fresh range that only this function uses.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: unmaps the probe mapping made just above, which nothing else uses.
    unsafe { libc::munmap(p, len) };
    assert_eq!(p as usize, addr, "a kernel without MAP_FIXED_NOREPLACE");
    Ok(())
}

/// A source that leaves page 0 unresolved on purpose and zero-fills the rest.
struct LeavePageZero;

impl PageSource for LeavePageZero {
    fn resolve<'a>(&'a self, fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        if fault.offset == 0 {
            Resolution::Leave
        } else {
            Resolution::Zero
        }
    }
}

/// Reads the u64 at `addr` on a new thread; the receiver gets the value.
fn read_on_thread(addr: usize) -> mpsc::Receiver<u64> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: `addr` is inside a region the test keeps mapped until this thread has answered
        // (or the test has failed); a volatile read of an aligned u64 creates no reference.
        let v = unsafe { (addr as *const u64).read_volatile() };
        let _ = tx.send(v);
    });
    rx
}

#[test]
fn stop_wakes_a_thread_blocked_on_an_unserved_page() {
    require!(Need::Uffd);
    let region = Region::new(4 * page()).unwrap();
    let server = FaultServer::builder(region, LeavePageZero)
        .threads(2)
        .start()
        .unwrap();
    assert_eq!(server.region().read_u64(page()), 0);
    let blocked = read_on_thread(server.region().addr() + 8);
    assert!(
        blocked.recv_timeout(Duration::from_millis(200)).is_err(),
        "nobody serves page 0"
    );
    assert!(server.stats().left >= 1);
    let region = server.stop().unwrap(); // unregisters: the blocked thread sees a zero page
    assert_eq!(blocked.recv_timeout(Duration::from_secs(10)), Ok(0));
    drop(region);
}

#[test]
fn panic_with_unregister_and_stop_is_reported_and_wakes_faulting_threads() {
    require!(Need::Uffd);
    let source = FnSource::new(|offset, _page: &mut [u8]| {
        assert_ne!(offset, 0, "boom: the source refuses page 0");
    });
    let server = FaultServer::builder(Region::new(4 * page()).unwrap(), source)
        .on_panic(PanicPolicy::UnregisterAndStop)
        .start()
        .unwrap();
    let woken = read_on_thread(server.region().addr());
    assert_eq!(woken.recv_timeout(Duration::from_secs(10)), Ok(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!server.is_running());
    match server.stop() {
        Err(ServerError::HandlerPanicked { message }) => {
            assert!(message.contains("boom"), "{message}")
        }
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
}

/// The dispatcher of this file's child scenarios.
const DISPATCHER: &str = "server::child_scenarios";

/// Every child scenario of this file, with its outcome and needs (replayed by a hand run of
/// [`child_scenarios`]).
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "abort",
        outcome: Outcome::Killed(libc::SIGABRT),
        needs: &[Need::Uffd],
    },
    Scenario {
        name: "fork-plain",
        outcome: Outcome::Pass,
        needs: &[Need::Uffd],
    },
    Scenario {
        name: "fork-event",
        outcome: Outcome::Pass,
        needs: &[Need::Root, Need::Feature(Features::EVENT_FORK)],
    },
    Scenario {
        name: "fork-shared-move",
        outcome: Outcome::Pass,
        needs: &[Need::Move],
    },
    Scenario {
        name: "events",
        outcome: Outcome::Pass,
        needs: &[Need::Feature(EVENTS)],
    },
    Scenario {
        name: "poison-policy",
        outcome: Outcome::Killed(libc::SIGBUS),
        needs: &[Need::Move],
    },
    Scenario {
        name: "ordering",
        outcome: Outcome::Pass,
        needs: &[Need::Feature(EVENTS)],
    },
    Scenario {
        name: "foreign-hole",
        outcome: Outcome::Pass,
        needs: &[Need::Feature(EVENTS)],
    },
    Scenario {
        name: "unmap-race",
        outcome: Outcome::Pass,
        needs: &[Need::Root, Need::Feature(EVENTS)],
    },
    Scenario {
        name: "sigbus-poison",
        outcome: Outcome::Killed(libc::SIGBUS),
        needs: &[Need::Feature(Features::SIGBUS.union(Features::POISON))],
    },
    Scenario {
        name: "sigbus-stop",
        outcome: Outcome::Pass,
        needs: &[Need::Feature(Features::SIGBUS)],
    },
    Scenario {
        name: "sigbus-bad-move",
        outcome: Outcome::Pass,
        needs: &[Need::Feature(Features::SIGBUS)],
    },
    Scenario {
        name: "stop-serving",
        outcome: Outcome::Pass,
        needs: &[Need::Uffd],
    },
    Scenario {
        name: "spin-stop",
        outcome: Outcome::Pass,
        needs: &[Need::Uffd],
    },
    Scenario {
        name: "spin-many",
        outcome: Outcome::Pass,
        needs: &[Need::Uffd],
    },
    Scenario {
        name: "pool-into-region",
        outcome: Outcome::Pass,
        needs: &[Need::Move],
    },
    #[cfg(feature = "tokio")]
    Scenario {
        name: "async-abort",
        outcome: Outcome::Killed(libc::SIGABRT),
        needs: &[Need::Uffd],
    },
];

/// Runs a child scenario that must pass.
#[track_caller]
fn run_child_ok(scenario: &str) {
    child::expect_listed(DISPATCHER, SCENARIOS, scenario, Outcome::Pass);
}

/// Runs a child scenario that must die of `signal`.
#[track_caller]
fn run_child_killed_by(scenario: &str, signal: i32) {
    child::expect_listed(DISPATCHER, SCENARIOS, scenario, Outcome::Killed(signal));
}

#[test]
fn panic_abort_policy_aborts_the_process() {
    require!(Need::Uffd);
    run_child_killed_by("abort", libc::SIGABRT);
}

#[test]
fn fork_without_the_fork_event_child_sees_plain_memory() {
    require!(Need::Uffd);
    run_child_ok("fork-plain");
}

#[test]
fn fork_event_hands_the_child_uffd_to_the_source() {
    require!(Need::Root, Need::Feature(Features::EVENT_FORK));
    run_child_ok("fork-event");
}

/// The body of the child processes above. Ignored in a normal run (it is no test of its own);
/// run by hand (`--ignored`, not as a child) it replays every scenario as a child and checks
/// each outcome.
#[test]
#[ignore = "the body of child processes: run by the tests that spawn them"]
fn child_scenarios() {
    let Some(scenario) = child::scenario() else {
        child::run_table(DISPATCHER, SCENARIOS);
        return;
    };
    match scenario.as_str() {
        "abort" => {
            let source = FnSource::new(|_, _: &mut [u8]| panic!("boom"));
            let server = FaultServer::builder(Region::new(page()).unwrap(), source)
                .start()
                .unwrap();
            let _ = server.region().read_u64(0); // never returns: the handler aborts
            unreachable!("the process should have aborted");
        }
        "fork-plain" | "fork-event" => fork_child(scenario == "fork-event"),
        "fork-shared-move" => fork_shared_move_child(),
        "events" => events_child(),
        "poison-policy" => poison_policy_child(),
        "ordering" => ordering_child(),
        "foreign-hole" => foreign_hole_child(),
        "unmap-race" => unmap_race_child(),
        "sigbus-poison" => sigbus_poison_child(),
        "sigbus-stop" => sigbus_stop_child(),
        "sigbus-bad-move" => sigbus_bad_move_child(),
        "stop-serving" => stop_serving_child(),
        "pool-into-region" => pool_into_region_child(),
        "spin-stop" => spin_stop_child(),
        "spin-many" => spin_many_child(),
        #[cfg(feature = "tokio")]
        "async-abort" => async_abort_child(),
        other => panic!("unknown scenario {other}"),
    }
}

fn fork_child(with_event: bool) {
    let recorder = Arc::new(Recorder::default());
    let region = Region::builder(4 * page()).dontfork(false).build().unwrap();
    let mut builder = FaultServer::builder(region, Arc::clone(&recorder)).threads(2);
    if with_event {
        builder = builder.features(Features::EVENT_FORK);
    }
    let server = builder.start().unwrap();
    let region = server.region();
    region.write_u64(8, 7); // page 0 served and present; page 1 missing
    let present_addr = region.addr() + 8;
    let missing_addr = region.addr() + page();
    // SAFETY: the child only reads memory with volatile loads and calls `_exit`, both
    // async-signal-safe, as required after fork() in a multi-threaded process.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: both addresses are inside the child's copy of the region (not MADV_DONTFORK).
        let (present, missing) = unsafe {
            (
                (present_addr as *const u64).read_volatile(),
                (missing_addr as *const u64).read_volatile(),
            )
        };
        // Without EVENT_FORK the child's copy is not registered: the missing page reads zero.
        // With it, the child faults into its own uffd, which the source drops: woken, zero.
        let ok = present == 7 && missing == 0;
        // SAFETY: `_exit` is async-signal-safe and ends the child without running destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert!(Instant::now() < deadline, "the child hangs");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
    let expected = usize::from(with_event);
    assert_eq!(recorder.forks.load(Ordering::SeqCst), expected);
    assert_eq!(server.stats().forks, expected as u64);
}

#[test]
fn sigbus_mode_resolves_faults_in_the_faulting_thread() {
    require!(Need::Feature(Features::SIGBUS));
    let pages = 64;
    let server = SigbusServer::start(
        Region::new(pages * page()).unwrap(),
        CopySource::new(pattern_image(SEED, pages)),
    )
    .unwrap();
    std::thread::scope(|s| {
        for m in 0..2 {
            let region = server.region();
            s.spawn(move || {
                for i in (m..pages).step_by(2) {
                    assert_eq!(
                        remap::pattern::verify_page(region, i, SEED, i as u64),
                        Ok(()),
                        "page {i}"
                    );
                }
            });
        }
    });
    let stats = server.stats();
    assert_eq!(
        (stats.faults, stats.served_copy),
        (pages as u64, pages as u64),
        "{stats}"
    );
    let region = server.stop();
    region.write_u8(0, 1);

    // Zero and move-pool sources, from another thread each.
    let zero = SigbusServer::start(Region::new(8 * page()).unwrap(), ZeroSource).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| (0..8).for_each(|i| assert_eq!(zero.region().read_u64(i * page()), 0)));
    });
    assert_eq!(zero.stats().served_zero, 8);
    if test_support::met(Need::Move).is_ok() {
        let pool = SigbusServer::start(
            Region::new(8 * page()).unwrap(),
            pattern_pool(SEED, Region::new(8 * page()).unwrap()),
        )
        .unwrap();
        let mut seen = HashSet::new();
        for i in 0..8 {
            let p = pool_page_of(pool.region(), i, 8);
            assert!(seen.insert(p));
            assert_eq!(
                remap::pattern::verify_page(pool.region(), i, SEED, p as u64),
                Ok(())
            );
        }
        assert_eq!(pool.stats().served_move, 8);
    }
}

#[cfg(feature = "tokio")]
#[test]
fn async_server_serves_faults_from_a_tokio_runtime() {
    use remap::server::AsyncFaultServer;
    require!(Need::Uffd);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pages = 32;
        let server = AsyncFaultServer::start(
            Region::new(pages * page()).unwrap(),
            CopySource::new(pattern_image(SEED, pages)),
        )
        .unwrap();
        let addr = server.region().addr();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let ok = (0..pages).all(|i| {
                // SAFETY: the region stays mapped until this thread has answered.
                let v = unsafe { ((addr + i * page() + 8) as *const u64).read_volatile() };
                v == pattern_word(SEED, i as u64, 1)
            });
            let _ = tx.send(ok);
        });
        let answer = tokio::select! {
            result = server.serve() => panic!("serve ended: {result:?}"),
            answer = async {
                loop {
                    if let Ok(ok) = rx.try_recv() {
                        break ok;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            } => answer,
        };
        assert!(answer, "every page holds its pattern");
        assert_eq!(server.stats().served_copy, pages as u64);
        let region = server.into_region().unwrap();
        region.write_u8(0, 1);
    });
}

// ---- failed resolves (C1, C2) ----

/// Resolves every fault by moving page 0 of its own region in.
struct MoveFrom(Region);

impl PageSource for MoveFrom {
    fn resolve<'a>(&'a self, _fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        Resolution::Move {
            from: &self.0,
            offset: 0,
        }
    }
}

/// A failed `Move` leaves the faulting thread with the fallback zero page, once: no hang, no
/// livelock, counted as an error, never as dropped.
fn failed_move_falls_back_once(from: Region) {
    let server = FaultServer::builder(Region::new(4 * page()).unwrap(), MoveFrom(from))
        .threads(2)
        .start()
        .unwrap();
    let reader = read_on_thread(server.region().addr() + page() + 8);
    assert_eq!(
        reader.recv_timeout(Duration::from_secs(10)),
        Ok(0),
        "the reader finishes with the fallback zero page: {}",
        server.stats()
    );
    let stats = server.stats();
    assert_eq!(
        (stats.faults, stats.errors, stats.fallbacks, stats.dropped),
        (1, 1, 1, 0),
        "{stats}"
    );
    assert_eq!(stats.served(), 0, "{stats}");
    server.stop().unwrap();
}

#[test]
fn move_from_a_hole_falls_back_to_the_zero_page() {
    require!(Need::Move);
    // Never touched: the source page is a hole, so the MOVE fails with ENOENT.
    failed_move_falls_back_once(Region::new(page()).unwrap());
}

#[test]
fn move_of_a_page_shared_after_fork_falls_back_once_instead_of_livelocking() {
    require!(Need::Move);
    // fork() only in a child process of its own: a fork elsewhere in the shared test process
    // could re-share (or un-share) the pages under test.
    run_child_ok("fork-shared-move");
}

/// Child: MOVE of a page shared with a forked child fails with EBUSY; the fault falls back once.
fn fork_shared_move_child() {
    let from = Region::builder(page()).dontfork(false).build().unwrap();
    from.write_u64(0, 1);
    // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: ends the child at once, without running any destructor.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    // The page is no longer exclusive: MOVE fails with EBUSY for as long as it is not written.
    failed_move_falls_back_once(from);
}

#[test]
fn poison_failure_policy_poisons_the_page() {
    require!(Need::Move);
    run_child_killed_by("poison-policy", libc::SIGBUS);
}

/// Child: a failed MOVE under `FailurePolicy::Poison`: the reader dies of SIGBUS.
fn poison_policy_child() {
    let server = FaultServer::builder(
        Region::new(2 * page()).unwrap(),
        MoveFrom(Region::new(page()).unwrap()),
    )
    .on_failure(remap::server::FailurePolicy::Poison)
    .start()
    .unwrap();
    let _ = server.region().read_u64(0);
    unreachable!("the poisoned page should have raised SIGBUS");
}

// ---- event ordering and holes (C5, C6, A3) ----

/// Logs the event callbacks; the first `on_remove` takes `remove_delay`.
#[derive(Debug, Default)]
struct SlowRemove {
    log: Mutex<Vec<&'static str>>,
    remove_delay: Duration,
    slowed: std::sync::atomic::AtomicBool,
}

impl PageSource for SlowRemove {
    fn resolve<'a>(&'a self, _fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        Resolution::Zero
    }
    fn on_remove(&self, _range: Range<usize>) {
        self.log.lock().unwrap().push("remove");
        if !self.slowed.swap(true, Ordering::SeqCst) {
            std::thread::sleep(self.remove_delay);
        }
        self.log.lock().unwrap().push("remove done");
    }
    fn on_unmap(&self, _range: Range<usize>) {
        self.log.lock().unwrap().push("unmap");
    }
}

fn munmap_raw(addr: usize, len: usize) {
    // SAFETY: callers pass a page-aligned part of a region this child process owns and no longer
    // touches (the server re-reserves it; the region tolerates the hole).
    assert_eq!(unsafe { libc::munmap(addr as *mut libc::c_void, len) }, 0);
}

#[test]
fn events_are_applied_in_the_order_they_were_read() {
    require!(Need::Feature(EVENTS));
    run_child_ok("ordering");
}

/// Child: a REMOVE whose callback is slow, then an UNMAP released by its read: with two handler
/// threads the second reads the UNMAP while the first still reports the REMOVE; it must wait.
fn ordering_child() {
    let source = Arc::new(SlowRemove {
        remove_delay: Duration::from_millis(200),
        ..SlowRemove::default()
    });
    let server = FaultServer::builder(Region::new(16 * page()).unwrap(), Arc::clone(&source))
        .threads(2)
        .start()
        .unwrap();
    let region = server.region();
    region.madvise_dontneed(0..4 * page()).unwrap(); // returns once a thread read the REMOVE
    munmap_raw(region.addr() + 8 * page(), 4 * page());
    wait_until("on_unmap", || source.log.lock().unwrap().contains(&"unmap"));
    assert_eq!(
        source.log.lock().unwrap().as_slice(),
        &["remove", "remove done", "unmap"]
    );
    server.stop().unwrap();
}

#[test]
fn stop_never_hands_back_memory_someone_mapped_into_an_unmapped_hole() {
    require!(Need::Feature(EVENTS));
    run_child_ok("foreign-hole");
}

/// Child: someone moves their own mapping over part of the served region (`mremap` with
/// `MREMAP_FIXED` unmaps the region's pages there: an UNMAP event). The server cannot re-reserve
/// that range, so `stop` hands back the region cut short before it, and dropping that leaves the
/// foreign memory alone.
fn foreign_hole_child() {
    let source = Arc::new(Recorder::default());
    let server = FaultServer::builder(Region::new(32 * page()).unwrap(), Arc::clone(&source))
        .threads(2)
        .start()
        .unwrap();
    let hole = server.region().addr() + 16 * page();
    // SAFETY: a fresh private mapping of our own.
    let foreign = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8 * page(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(foreign, libc::MAP_FAILED);
    // SAFETY: our own fresh mapping, written with a volatile store.
    unsafe { foreign.cast::<u64>().write_volatile(0xf0e1) };
    // SAFETY: moves our own mapping over pages 16..24 of the region, which nothing touches.
    let moved = unsafe {
        libc::mremap(
            foreign,
            8 * page(),
            8 * page(),
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            hole as *mut libc::c_void,
        )
    };
    assert_eq!(moved as usize, hole);
    wait_until("on_unmap", || !source.unmaps.lock().unwrap().is_empty());
    let region = server.stop().unwrap();
    assert_eq!(region.len(), 16 * page(), "cut short before the hole");
    drop(region);
    // SAFETY: the foreign mapping is still ours and mapped (the point of the test).
    assert_eq!(unsafe { (hole as *const u64).read_volatile() }, 0xf0e1);
    munmap_raw(hole, 8 * page());
}

#[test]
fn munmap_and_mremap_race_with_faults_in_flight() {
    require!(Need::Root, Need::Feature(EVENTS));
    run_child_ok("unmap-race");
}

/// Resolves after a delay, so faults are still in flight when their range goes away.
struct Slow(Duration);

impl PageSource for Slow {
    fn resolve<'a>(&'a self, fault: &Fault, page: &'a mut [u8]) -> Resolution<'a> {
        std::thread::sleep(self.0);
        fill_pattern(SEED, fault.offset, page);
        Resolution::Copy(page)
    }
}

/// Reads 8 bytes of /dev/zero into `addr`: a kernel-mode write fault that reports a vanished
/// mapping as EFAULT instead of SIGSEGV. Returns the errno, or 0.
fn kernel_touch(zero: &std::fs::File, addr: usize) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: `read(2)` into 8 bytes at `addr`, inside a range this child owns (or owned: the
    // kernel then fails with EFAULT rather than touch anything else); no reference is formed.
    let n = unsafe { libc::read(zero.as_raw_fd(), addr as *mut libc::c_void, 8) };
    if n == 8 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

/// Child: threads fault (kernel-mode) on pages whose resolves are slow while the main thread
/// munmaps one part of the region and mremaps another: every thread comes back (served, or
/// EFAULT for a vanished page), none hangs, and nothing counts as an error.
fn unmap_race_child() {
    let server = FaultServer::builder(
        Region::new(32 * page()).unwrap(),
        Slow(Duration::from_millis(30)),
    )
    .threads(2)
    .kernel_faults(true)
    .start()
    .unwrap();
    let base = server.region().addr();
    let (done_tx, done_rx) = mpsc::channel();
    for i in 8..24 {
        let done_tx = done_tx.clone();
        std::thread::spawn(move || {
            let zero = std::fs::File::open("/dev/zero").unwrap();
            let errno = kernel_touch(&zero, base + i * page() + 64);
            let _ = done_tx.send((i, errno));
        });
    }
    drop(done_tx);
    std::thread::sleep(Duration::from_millis(10)); // the faults are read and being resolved
    munmap_raw(base + 8 * page(), 8 * page());
    // SAFETY: a fresh reservation, used only as the mremap target below.
    let target = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8 * page(),
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(target, libc::MAP_FAILED);
    // SAFETY: moves pages 16..24 of the region (touched only through the kernel above) over our
    // own reservation.
    let moved = unsafe {
        libc::mremap(
            (base + 16 * page()) as *mut libc::c_void,
            8 * page(),
            8 * page(),
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target,
        )
    };
    assert_eq!(moved, target);
    let mut results = Vec::new();
    for _ in 8..24 {
        let r = done_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("a faulting thread hangs: {}", server.stats()));
        results.push(r);
    }
    for &(i, errno) in &results {
        assert!(
            errno == 0 || errno == libc::EFAULT,
            "page {i}: errno {errno}"
        );
    }
    let stats = server.stats();
    assert_eq!(stats.errors, 0, "{stats}");
    assert!(
        stats.dropped > 0,
        "some faults were in flight when their range went: {stats}"
    );
    // Pages 0..8 still work.
    verify_served(server.region(), 0..2);
    drop(server);
    munmap_raw(target as usize, 8 * page());
}

// ---- SIGBUS mode (C3, C4, B2) ----

/// Poisons every page.
struct PoisonAll;

impl PageSource for PoisonAll {
    fn resolve<'a>(&'a self, _fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        Resolution::Poison
    }
}

// SAFETY: `resolve` returns a constant; `move_done` is the no-op default.
unsafe impl SignalSafeSource for PoisonAll {}

#[test]
fn sigbus_mode_leaves_a_poisoned_page_to_the_previous_handler() {
    require!(Need::Feature(Features::SIGBUS | Features::POISON));
    run_child_killed_by("sigbus-poison", libc::SIGBUS);
}

/// Child: the first access is poisoned in the handler; the retried access raises
/// `BUS_MCEERR_AR`, which is not ours: the process dies of SIGBUS instead of looping.
fn sigbus_poison_child() {
    let server = SigbusServer::start(Region::new(page()).unwrap(), PoisonAll).unwrap();
    let _ = server.region().read_u64(0);
    unreachable!("a poisoned page must not read");
}

/// Set by [`Gate`] when a handler is inside its `resolve` (child process only).
static GATE_ENTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Lets [`Gate`]'s `resolve` go on.
static GATE_OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Spins in `resolve` (on atomics only) until released, then answers the zero page.
struct Gate;

impl PageSource for Gate {
    fn resolve<'a>(&'a self, _fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        GATE_ENTERED.store(true, Ordering::SeqCst);
        while !GATE_OPEN.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        Resolution::Zero
    }
}

// SAFETY: `resolve` only loads and stores atomics; `move_done` is the no-op default.
unsafe impl SignalSafeSource for Gate {}

#[test]
fn stopping_a_sigbus_server_while_a_thread_faults_is_not_fatal() {
    require!(Need::Feature(Features::SIGBUS));
    run_child_ok("sigbus-stop");
}

/// Child: a thread is inside the SIGBUS handler's resolve when the server stops (and
/// unregisters); its resolve then fails, and the access must be retried as ordinary memory.
fn sigbus_stop_child() {
    let server = SigbusServer::start(Region::new(page()).unwrap(), Gate).unwrap();
    let reader = read_on_thread(server.region().addr());
    wait_until("the handler", || GATE_ENTERED.load(Ordering::SeqCst));
    let stopper = std::thread::spawn(move || server.stop());
    // stop() has marked the server stopping and unregistered; it waits for the handler.
    std::thread::sleep(Duration::from_millis(50));
    GATE_OPEN.store(true, Ordering::SeqCst);
    assert_eq!(reader.recv_timeout(Duration::from_secs(10)), Ok(0));
    let region = stopper.join().unwrap();
    drop(region);
}

/// Answers a `Move` from outside its own (one-page) region.
struct BadMove(Region);

impl PageSource for BadMove {
    fn resolve<'a>(&'a self, _fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        Resolution::Move {
            from: &self.0,
            offset: 7 * page(),
        }
    }
}

// SAFETY: `resolve` builds a value from its own fields and the cached page size (an atomic
// load in rustix); `move_done` is the no-op default.
unsafe impl SignalSafeSource for BadMove {}

#[test]
fn sigbus_mode_fails_a_bad_move_offset_without_panicking() {
    require!(Need::Feature(Features::SIGBUS));
    run_child_ok("sigbus-bad-move");
}

/// Child: a bad `Move` offset in the signal handler is a failed resolve (zero-page fallback),
/// not a panic (which would abort the process).
fn sigbus_bad_move_child() {
    let server = SigbusServer::start(
        Region::new(2 * page()).unwrap(),
        BadMove(Region::new(page()).unwrap()),
    )
    .unwrap();
    assert_eq!(server.region().read_u64(page()), 0);
    let stats = server.stats();
    assert_eq!((stats.errors, stats.fallbacks), (1, 1), "{stats}");
}

// ---- sources (C10) ----

#[test]
fn copy_source_pads_a_partial_last_page_from_the_image() {
    require!(Need::Uffd);
    let image: Vec<u8> = (0..page() + 100)
        .map(|i| u8::try_from(i % 251).unwrap() + 1)
        .collect();
    let server = FaultServer::builder(Region::new(2 * page()).unwrap(), CopySource::new(image))
        .start()
        .unwrap();
    let region = server.region();
    assert_eq!(
        region.read_u8(page() + 99),
        u8::try_from((page() + 99) % 251).unwrap() + 1
    );
    assert_eq!(region.read_u8(page() + 100), 0, "padded with zeros");
    assert_eq!(server.stats().served_copy, 1);
}

// ---- tokio (A7) ----

#[cfg(feature = "tokio")]
#[test]
fn async_server_outside_a_runtime_is_a_reactor_error() {
    use remap::server::AsyncFaultServer;
    require!(Need::Uffd);
    match AsyncFaultServer::start(Region::new(page()).unwrap(), ZeroSource) {
        Err(ServerError::Reactor(_)) => {}
        other => panic!("expected ServerError::Reactor, got {other:?}"),
    }
}

#[cfg(feature = "tokio")]
#[test]
fn async_server_panic_with_unregister_and_stop_wakes_the_faulting_thread() {
    use remap::server::AsyncFaultServer;
    require!(Need::Uffd);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let source = FnSource::new(|_, _: &mut [u8]| panic!("boom"));
        let server = AsyncFaultServer::start(Region::new(page()).unwrap(), source)
            .unwrap()
            .on_panic(PanicPolicy::UnregisterAndStop);
        let reader = read_on_thread(server.region().addr());
        match server.serve().await {
            Err(ServerError::HandlerPanicked { message }) => assert!(message.contains("boom")),
            other => panic!("expected HandlerPanicked, got {other:?}"),
        }
        assert_eq!(reader.recv_timeout(Duration::from_secs(10)), Ok(0));
        assert!(server.serve().await.is_err(), "stays stopped");
    });
}

#[cfg(feature = "tokio")]
#[test]
fn async_server_panic_aborts_by_default() {
    require!(Need::Uffd);
    run_child_killed_by("async-abort", libc::SIGABRT);
}

#[cfg(feature = "tokio")]
fn async_abort_child() {
    use remap::server::AsyncFaultServer;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let source = FnSource::new(|_, _: &mut [u8]| panic!("boom"));
        let server = AsyncFaultServer::start(Region::new(page()).unwrap(), source).unwrap();
        let _reader = read_on_thread(server.region().addr());
        let _ = server.serve().await;
    });
    unreachable!("the process should have aborted");
}

/// Never resolves a fault (and counts the faults it saw).
#[derive(Default)]
struct Never(AtomicUsize);

impl PageSource for Never {
    fn resolve<'a>(&'a self, _fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Resolution::Leave
    }
}

#[test]
fn stop_serving_wakes_threads_blocked_in_faults_while_they_borrow_the_region() {
    require!(Need::Uffd);
    run_child_ok("stop-serving");
}

/// Child: three threads borrow the served region and block in faults the source leaves;
/// `stop_serving` (through `&self`) wakes them to zero pages while they still hold the borrow,
/// and `into_parts` then hands back the region and the source.
fn stop_serving_child() {
    let server = FaultServer::builder(Region::new(4 * page()).unwrap(), Never::default())
        .threads(2)
        .start()
        .unwrap();
    std::thread::scope(|s| {
        let region = server.region();
        let touchers: Vec<_> = (0..3)
            .map(|i| s.spawn(move || region.read_u64(i * page() + 8)))
            .collect();
        wait_until("three faults left", || server.stats().left == 3);
        assert!(server.is_running());
        server.stop_serving();
        assert!(!server.is_running());
        for toucher in touchers {
            assert_eq!(toucher.join().unwrap(), 0);
        }
        // Ordinary memory now, still borrowed from the server.
        region.write_u64(3 * page(), 5);
        server.stop_serving(); // a second call does nothing
    });
    let (region, source) = server.into_parts().unwrap();
    assert_eq!(region.read_u64(3 * page()), 5);
    assert_eq!(source.0.load(Ordering::SeqCst), 3);
}

#[test]
fn a_pool_comes_back_from_a_server_and_gives_back_its_region() {
    require!(Need::Move);
    run_child_ok("pool-into-region");
}

/// Child (an empty slot would block a read for ever if the pool's region stayed registered).
fn pool_into_region_child() {
    let pool = MovePool::new(3).unwrap();
    let server = FaultServer::builder(Region::new(4 * page()).unwrap(), pool)
        .start()
        .unwrap();
    server.region().write_u64(0, 1);
    server.region().write_u64(page(), 2);
    let (region, pool) = server.into_parts().unwrap();
    assert_eq!(region.read_u64(page()), 2);
    assert_eq!(pool.available(), 1);
    let pool_region = pool.into_region();
    assert_eq!(pool_region.pages(), 3);
    // Unregistered: every slot reads without blocking (moved-out slots as zero).
    for p in 0..3 {
        assert_eq!(pool_region.read_u64(p * page()), 0);
    }
}

#[test]
fn adaptive_waiting_stops_promptly_while_threads_spin() {
    require!(Need::Uffd);
    run_child_ok("spin-stop");
}

/// Child: handler threads told to spin for 30 s after each batch must still stop at once
/// (the spin checks the stop flag), both right after faults and when idle from the start.
fn spin_stop_child() {
    let spin = Duration::from_secs(30);
    for touch in [true, false] {
        let server = FaultServer::builder(Region::new(8 * page()).unwrap(), ZeroSource)
            .threads(2)
            .spin(spin)
            .start()
            .unwrap();
        if touch {
            for p in 0..8 {
                server.region().write_u64(p * page(), 1);
            }
            assert_eq!(server.stats().served_zero, 8);
        }
        let started = Instant::now();
        let region = server.stop().unwrap();
        let took = started.elapsed();
        assert!(
            took < spin / 6,
            "stopping spinning handlers took {took:?} (touched: {touch})"
        );
        assert_eq!(region.read_u64(0), u64::from(touch));
    }
}

#[test]
fn adaptive_waiting_and_pinning_never_lose_a_fault() {
    require!(Need::Uffd);
    run_child_ok("spin-many");
}

/// Child: 4096 faults from four threads, served by two spinning, pinned handler threads whose
/// spin (50 us) runs out between bursts: every page is served once with the right contents,
/// and the counters add up.
fn spin_many_child() {
    let pages = 4096;
    let server = FaultServer::builder(
        Region::new(pages * page()).unwrap(),
        CopySource::new(pattern_image(SEED, pages)),
    )
    .threads(2)
    .spin(Duration::from_micros(50))
    .pin_cpus(true)
    .start()
    .unwrap();
    let region = server.region();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for (i, p) in (t..pages).step_by(4).enumerate() {
                    if i % 64 == 63 {
                        // A pause longer than the spin: the handlers park, then must wake.
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    assert_eq!(
                        region.read_u64(p * page()),
                        pattern_word(SEED, p as u64, 0),
                        "page {p}"
                    );
                }
            });
        }
    });
    let stats = server.stats();
    assert_eq!(stats.served_copy, pages as u64, "{stats}");
    assert_eq!(stats.faults, stats.served() + stats.races, "{stats}");
    assert_eq!(stats.errors + stats.dropped + stats.left, 0, "{stats}");
    let region = server.stop().unwrap();
    for p in (0..pages).step_by(97) {
        remap::pattern::verify_page(&region, p, SEED, p as u64).unwrap();
    }
}
