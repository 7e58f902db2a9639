//! Tests of `remap::server`, against the real kernel.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use remap::region::{pattern_word, Region};
use remap::server::{
    CopySource, Fault, FaultServer, FnSource, MovePool, PageSource, PanicPolicy, Resolution,
    ServerError, SigbusServer, ZeroSource,
};
use test_support::{require, Need};
use uffd::Features;

const SEED: u64 = 0x5eed;
/// Set in a re-run of this test binary to run one child scenario.
const CHILD_ENV: &str = "REMAP_SERVER_CHILD";

fn page() -> usize {
    rustix::param::page_size()
}

/// An image whose page `i` holds the pattern of logical page `i`.
fn pattern_image(pages: usize) -> Vec<u8> {
    let mut image = Vec::with_capacity(pages * page());
    for p in 0..pages {
        for w in 0..page() / 8 {
            image.extend_from_slice(&pattern_word(SEED, p as u64, w as u64).to_ne_bytes());
        }
    }
    image
}

fn fill_pattern(offset: usize, buf: &mut [u8]) {
    let p = (offset / page()) as u64;
    for (w, chunk) in buf.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&pattern_word(SEED, p, w as u64).to_ne_bytes());
    }
}

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
    let stats = server.stats();
    assert_eq!(stats.served(), PAGES as u64, "{stats}");
    assert_eq!(stats.faults, stats.served() + stats.races, "{stats}");
    assert_eq!(stats.errors + stats.dropped + stats.left, 0, "{stats}");
}

#[test]
fn zero_source_serves_each_page_once_under_concurrency() {
    require!(Need::Uffd);
    let server = FaultServer::builder(Region::new(PAGES * page()).unwrap(), ZeroSource)
        .threads(HANDLERS)
        .start()
        .unwrap();
    run_mutators(server.region(), MUTATORS);
    served_once(&server);
    assert_eq!(server.stats().served_zero, PAGES as u64);
    for i in 0..PAGES {
        check_page(server.region(), i, MUTATORS, |_| 0);
    }
}

#[test]
fn copy_source_serves_each_page_once_under_concurrency() {
    require!(Need::Uffd);
    let source = CopySource::new(pattern_image(PAGES));
    let server = FaultServer::builder(Region::new(PAGES * page()).unwrap(), source)
        .threads(HANDLERS)
        .start()
        .unwrap();
    run_mutators(server.region(), MUTATORS);
    served_once(&server);
    assert_eq!(server.stats().served_copy, PAGES as u64);
    for i in 0..PAGES {
        check_page(server.region(), i, MUTATORS, |w| {
            pattern_word(SEED, i as u64, w)
        });
    }
}

#[test]
fn fn_source_serves_each_page_once_under_concurrency() {
    require!(Need::Uffd);
    let server = FaultServer::builder(
        Region::new(PAGES * page()).unwrap(),
        FnSource::new(fill_pattern),
    )
    .threads(HANDLERS)
    .start()
    .unwrap();
    run_mutators(server.region(), MUTATORS);
    served_once(&server);
    assert_eq!(server.stats().served_copy, PAGES as u64);
    for i in 0..PAGES {
        check_page(server.region(), i, MUTATORS, |w| {
            pattern_word(SEED, i as u64, w)
        });
    }
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
    let pool_region = Region::new(PAGES * page()).unwrap();
    pool_region.fill_pattern(SEED);
    let pool = MovePool::from_region(pool_region).unwrap();
    let server = FaultServer::builder(Region::new(PAGES * page()).unwrap(), pool)
        .threads(HANDLERS)
        .start()
        .unwrap();
    run_mutators(server.region(), MUTATORS);
    served_once(&server);
    assert_eq!(server.stats().served_move, PAGES as u64);
    assert_eq!(server.source().available(), 0);
    // Every page is a distinct pool page, moved in whole.
    let mut seen = HashSet::new();
    for i in 0..PAGES {
        let p = pool_page_of(server.region(), i, PAGES);
        assert!(seen.insert(p), "pool page {p} served twice");
        check_page(server.region(), i, MUTATORS, |w| {
            pattern_word(SEED, p as u64, w)
        });
    }
}

#[test]
fn move_pool_recycles_given_back_pages_and_falls_back_to_zero() {
    require!(Need::Move);
    let pool_region = Region::new(2 * page()).unwrap();
    pool_region.fill_pattern(SEED);
    let pool = MovePool::from_region(pool_region).unwrap();
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
        fill_pattern(fault.offset, page);
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
        assert_eq!(region.verify_page(i, SEED, i as u64), Ok(()), "page {i}");
    }
}

#[test]
fn remove_unmap_and_remap_events_while_faults_are_in_flight() {
    require!(Need::Feature(
        Features::EVENT_REMOVE | Features::EVENT_UNMAP | Features::EVENT_REMAP
    ));
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
    assert_eq!(
        recorder.unmaps.lock().unwrap().as_slice(),
        std::slice::from_ref(&(unmapped..unmapped + 8 * page()))
    );

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
    server.stop().unwrap();
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

/// Re-runs this test binary for one child scenario; returns its exit status.
fn run_child(test: &str, scenario: &str) -> std::process::ExitStatus {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
}

fn child_scenario() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

#[test]
fn panic_abort_policy_aborts_the_process() {
    use std::os::unix::process::ExitStatusExt;
    require!(Need::Uffd);
    let status = run_child("server::child_scenarios", "abort");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
}

#[test]
fn fork_without_the_fork_event_child_sees_plain_memory() {
    require!(Need::Uffd);
    let status = run_child("server::child_scenarios", "fork-plain");
    assert!(status.success(), "{status:?}");
}

#[test]
fn fork_event_hands_the_child_uffd_to_the_source() {
    require!(Need::Root, Need::Feature(Features::EVENT_FORK));
    let status = run_child("server::child_scenarios", "fork-event");
    assert!(status.success(), "{status:?}");
}

/// Not a test on its own: the body of the child processes above (does nothing otherwise).
#[test]
fn child_scenarios() {
    let Some(scenario) = child_scenario() else {
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
        CopySource::new(pattern_image(pages)),
    )
    .unwrap();
    std::thread::scope(|s| {
        for m in 0..2 {
            let region = server.region();
            s.spawn(move || {
                for i in (m..pages).step_by(2) {
                    assert_eq!(region.verify_page(i, SEED, i as u64), Ok(()), "page {i}");
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
        let pool_region = Region::new(8 * page()).unwrap();
        pool_region.fill_pattern(SEED);
        let pool = SigbusServer::start(
            Region::new(8 * page()).unwrap(),
            MovePool::from_region(pool_region).unwrap(),
        )
        .unwrap();
        let mut seen = HashSet::new();
        for i in 0..8 {
            let p = pool_page_of(pool.region(), i, 8);
            assert!(seen.insert(p));
            assert_eq!(pool.region().verify_page(i, SEED, p as u64), Ok(()));
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
            CopySource::new(pattern_image(pages)),
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
