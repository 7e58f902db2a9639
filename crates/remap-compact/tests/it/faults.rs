//! Races forced between the compaction thread and mutators, EBUSY after a fork, events pending,
//! and a panicking fill.

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remap_compact::{Cycle, Engine, Filler, Publication};
use test_support::{require, Need};

use crate::child;
use crate::common::{heap, mutate, page, pattern, verify, Hold, Synthetic};

fn held(stride: usize, heap_pages: usize, page: usize, who: Filler) -> Arc<Synthetic> {
    let mut plan = Synthetic::new(stride, heap_pages);
    plan.hold = Some(Hold {
        page,
        who,
        entered: AtomicBool::new(false),
        release: AtomicBool::new(false),
    });
    Arc::new(plan)
}

fn wait_for(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !flag.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn word(heap: &remap::Region, plan: &Synthetic, i: usize) -> (u64, u64) {
    let w = page() / 8 - 1;
    (
        heap.read_u64(i * page() + w * 8),
        plan.expected(i, w, pattern),
    )
}

/// `who` = "compactor": the compaction thread is inside the fill of page 63 (the last of its
/// first 64-page window, so pages 0..63 are processed and unpublished) when a mutator touches
/// page 62 (it publishes it itself, at once) and then page 63 (it waits until the compaction
/// thread's fill is released). `who` = "mutator": a mutator's fault is inside the fill of page
/// 10 when the compaction thread walks past it (its claim fails; it finishes the cycle by
/// waiting for the mutator's publication).
pub(crate) fn race_child(who: &str, mode: &str) {
    let sigbus = mode == "sigbus";
    let heap_pages = 256;
    let engine = Engine::builder(heap(heap_pages, true))
        .batch_pages(64)
        .build()
        .unwrap();
    match who {
        "compactor" => {
            let plan = held(2, heap_pages, 63, Filler::Compactor);
            let cycle = start(&engine, &plan, sigbus);
            let hold = plan.hold.as_ref().unwrap();
            let stats = std::thread::scope(|s| {
                let compaction = s.spawn(|| cycle.compact().unwrap());
                wait_for(&hold.entered);
                let t = Instant::now();
                let (found, expected) = word(engine.heap(), &plan, 62);
                assert_eq!(
                    found, expected,
                    "page 62, processed but unpublished, taken by a fault"
                );
                let fast = t.elapsed();
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    hold.release.store(true, Ordering::SeqCst);
                });
                let (found, expected) = word(engine.heap(), &plan, 63);
                assert_eq!(found, expected, "page 63, raced with the compaction thread");
                assert!(
                    hold.release.load(Ordering::SeqCst),
                    "page 63 served before its fill ended"
                );
                assert!(
                    fast < Duration::from_millis(100),
                    "page 62 waited for the window: {fast:?}"
                );
                compaction.join().unwrap()
            });
            verify(engine.heap(), &plan, &[]);
            plan.assert_each_filled_once();
            assert_eq!(stats.by_compactor, plan.pages as u64, "{stats:?}");
            assert_eq!(stats.published(), plan.pages as u64);
            println!("compactor race: {stats:?}");
        }
        "mutator" => {
            let faulter = if sigbus {
                Filler::Mutator
            } else {
                Filler::Handler
            };
            let plan = held(2, heap_pages, 10, faulter);
            let cycle = start(&engine, &plan, sigbus);
            let hold = plan.hold.as_ref().unwrap();
            let stats = std::thread::scope(|s| {
                let mutator = s.spawn(|| word(engine.heap(), &plan, 10));
                wait_for(&hold.entered);
                let compaction = s.spawn(|| cycle.compact().unwrap());
                std::thread::sleep(Duration::from_millis(100));
                assert!(
                    !compaction.is_finished(),
                    "the cycle ended with page 10 unpublished"
                );
                hold.release.store(true, Ordering::SeqCst);
                let (found, expected) = mutator.join().unwrap();
                assert_eq!(found, expected);
                compaction.join().unwrap()
            });
            verify(engine.heap(), &plan, &[]);
            plan.assert_each_filled_once();
            assert_eq!(stats.by_faults(), 1, "{stats:?}");
            assert_eq!(stats.by_compactor, plan.pages as u64 - 1);
            assert_eq!(stats.published(), plan.pages as u64);
            println!("mutator race: {stats:?}");
        }
        other => panic!("unknown race {other}"),
    }
}

fn start<'e>(engine: &'e Engine, plan: &Arc<Synthetic>, sigbus: bool) -> Cycle<'e, Synthetic> {
    if sigbus {
        engine.flip_sigbus(Arc::clone(plan)).unwrap()
    } else {
        engine.flip(Arc::clone(plan)).unwrap()
    }
}

/// A fork during a cycle (the heap not `MADV_DONTFORK`, so neither is from-space): the fork
/// happens while the compaction thread holds a window of processed, unpublished pages in
/// recycled from-space pages. Those are now shared with the child (and stay unmovable after it
/// exits), MOVE refuses them with EBUSY, and the engine publishes them with COPY: nothing lost,
/// no deadlock. (A buffer written after the fork would be copied on write, so exclusive again:
/// only pages filled before the fork and published after it can be refused.)
pub(crate) fn fork_child() {
    let heap_pages = 1024;
    let engine = Engine::builder(heap(heap_pages, false))
        .publication(Publication::Move)
        .batch_pages(64)
        .build()
        .unwrap();
    let plan = held(2, heap_pages, 63, Filler::Compactor);
    let cycle = start(&engine, &plan, false);
    let hold = plan.hold.as_ref().unwrap();
    let stop = AtomicBool::new(false);
    let (stats, written) = std::thread::scope(|s| {
        let compaction = s.spawn(|| cycle.compact().unwrap());
        wait_for(&hold.entered);
        // SAFETY: after fork() in a multi-threaded process the child may only call
        // async-signal-safe functions: it calls `_exit` at once.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: `_exit` has no preconditions and is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: `waitpid` writes the status of our own child into a live local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        hold.release.store(true, Ordering::SeqCst);
        let m = s.spawn(|| mutate(engine.heap(), &plan, 0, 2000, &stop));
        let stats = compaction.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        (stats, m.join().unwrap())
    });
    verify(engine.heap(), &plan, &written);
    plan.assert_each_filled_once();
    println!("fork: {stats:?}");
    assert!(
        stats.busy_fallbacks > 0,
        "no EBUSY after the fork: {stats:?}"
    );
    assert_eq!(stats.published(), plan.pages as u64);
    assert_eq!(
        stats.published_copy,
        stats.busy_fallbacks + stats.error_fallbacks
    );
}

/// `MADV_DONTNEED` of the empty part of the heap during a cycle: each queues a REMOVE event,
/// and until it is read every ioctl on the heap fails with EAGAIN. The engine reads the events
/// (the `madvise` would otherwise block for ever) and retries.
pub(crate) fn events_child() {
    let heap_pages = 4096;
    let engine = Engine::builder(heap(heap_pages, true)).build().unwrap();
    let plan = Arc::new(Synthetic::new(2, heap_pages));
    let cycle = start(&engine, &plan, false);
    let done = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let (stats, written, removes) = std::thread::scope(|s| {
        let remover = s.spawn(|| {
            let mut n = 0usize;
            let (first, size) = (plan.pages * page(), page());
            while !done.load(Ordering::Relaxed) || n < 8 {
                let at = first + (n % (heap_pages - plan.pages)) * size;
                engine.heap().madvise_dontneed(at..at + size).unwrap();
                n += 1;
            }
            n
        });
        let m = s.spawn(|| mutate(engine.heap(), &plan, 1, 3000, &stop));
        let stats = cycle.compact().unwrap();
        done.store(true, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        (stats, m.join().unwrap(), remover.join().unwrap())
    });
    verify(engine.heap(), &plan, &written);
    plan.assert_each_filled_once();
    println!("events: {removes} MADV_DONTNEEDs; {stats:?}");
    assert!(stats.events > 0, "no REMOVE event read: {stats:?}");
    assert_eq!(stats.published(), plan.pages as u64);
}

/// A fill that panics: the documented policy is to abort the process, so no mutator hangs.
pub(crate) fn panic_child(mode: &str) {
    let sigbus = mode == "sigbus";
    let heap_pages = 64;
    let engine = Engine::new(heap(heap_pages, true)).unwrap();
    let mut plan = Synthetic::new(2, heap_pages);
    plan.panic_on = Some(5);
    let plan = Arc::new(plan);
    let cycle = start(&engine, &plan, sigbus);
    std::thread::scope(|s| {
        // A mutator faults on the page first (its handler, or itself, fills it and panics); if
        // it lost the race the compaction thread panics instead. Either way: abort.
        s.spawn(|| word(engine.heap(), &plan, 5));
        std::thread::sleep(Duration::from_millis(20));
        let _ = cycle.compact();
    });
    unreachable!("the process should have aborted");
}

#[test]
fn compaction_thread_and_mutators_race_for_a_page_handler_mode() {
    require!(Need::Move);
    child::run_ok("race:compactor:handler");
    child::run_ok("race:mutator:handler");
}

#[test]
fn compaction_thread_and_mutators_race_for_a_page_sigbus_mode() {
    require!(Need::Move);
    child::run_ok("race:compactor:sigbus");
    child::run_ok("race:mutator:sigbus");
}

#[test]
fn ebusy_after_fork_falls_back_to_copy() {
    require!(Need::Move);
    child::run_ok("fork");
}

#[test]
fn events_pending_are_read_and_retried() {
    require!(Need::Move, Need::Feature(uffd::Features::EVENT_REMOVE));
    child::run_ok("events");
}

#[test]
fn panicking_fill_aborts_without_hanging() {
    require!(Need::Move);
    for mode in ["handler", "sigbus"] {
        let out = child::run(&format!("panic:{mode}"), Duration::from_secs(30));
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{mode}: {:?}\n{}",
            out.status,
            out.output
        );
        assert!(
            out.output.contains("panics on purpose"),
            "{mode}: {}",
            out.output
        );
    }
}
