use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use remap::Region;
use test_support::{require, Need};

use super::*;
use crate::{Compactor, Engine, FromSpace, PageBuffer, Publication};

/// To-space page `i` is from-space page `i` with every byte complemented.
struct Complement {
    pages: usize,
}

impl Compactor for Complement {
    fn pages(&self) -> usize {
        self.pages
    }

    fn reads(&self, page: usize) -> Range<usize> {
        page..page + 1
    }

    fn fill(&self, page: usize, src: &FromSpace<'_>, dst: &mut PageBuffer<'_>) {
        let size = dst.len();
        for off in (0..size).step_by(8) {
            dst.write_u64(off, !src.read_u64(page * size + off));
        }
    }
}

/// Heap pages of the tests below; their plans compact half of them.
const HEAP_PAGES: usize = 8;

/// An engine publishing by MOVE (one handler thread, batches of 4) over a populated heap of
/// [`HEAP_PAGES`] pages, written by `init` first.
fn move_engine(init: impl FnOnce(&Region)) -> Engine {
    let heap = Region::builder(HEAP_PAGES * uffd::page_size())
        .populate(true)
        .build()
        .unwrap();
    init(&heap);
    Engine::builder(heap)
        .publication(Publication::Move)
        .handler_threads(1)
        .batch_pages(4)
        .build()
        .unwrap()
}

/// A MOVE engine over a heap whose word `j` is `0x1000 + j`, and a plan complementing its first
/// half (to-space word `w` becomes `!(0x1000 + w)`).
fn tagged_engine_and_half_plan() -> (Engine, Arc<Complement>) {
    let engine = move_engine(|heap| {
        for j in 0..heap.len() / 8 {
            heap.write_u64(j * 8, 0x1000 + j as u64);
        }
    });
    let plan = Arc::new(Complement {
        pages: HEAP_PAGES / 2,
    });
    (engine, plan)
}

/// Takes page 0 the compaction thread's way: claim, fill, `Mapping`; returns its buffer.
fn map_page_0_as_the_compactor<C: Compactor>(shared: &Shared<C>) -> Buf {
    let claimed = pack(PROCESSING, Filler::Compactor, None);
    assert!(shared.states[0]
        .compare_exchange(UNPROCESSED, claimed, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok());
    let (buf, recycled) = shared.take_buffer(0, Filler::Compactor);
    shared.fill(0, buf, Filler::Compactor, true);
    shared.count_fills(
        Filler::Compactor,
        usize::from(recycled),
        usize::from(!recycled),
    );
    shared.states[0].store(
        pack(MAPPING, Filler::Compactor, Some(buf)),
        Ordering::Release,
    );
    buf
}

/// The same lie with a thread faulting on the page: the kernel wakes only the pages it counted,
/// and a handler thread that finds the page `Mapping` leaves the wake to the publisher's ioctl.
/// So the engine wakes a page it finds moved behind a failed MOVE; without that, the faulting
/// thread slept until the cycle unregistered the heap.
#[test]
fn move_that_moved_the_page_but_failed_wakes_the_thread_faulting_on_it() {
    require!(Need::Move);
    if test_support::child::run_in_child(std::time::Duration::from_secs(60)) {
        return;
    }
    let page = uffd::page_size();
    let (engine, plan) = tagged_engine_and_half_plan();
    let cycle = engine.flip(Arc::clone(&plan)).unwrap();
    let shared = Arc::clone(cycle.shared());
    let buf = map_page_0_as_the_compactor(&shared);
    let heap = engine.heap();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || tx.send(heap.read_u64(0)).unwrap());
        // The handler thread read the fault and found the page `Mapping` (a race, no wake).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while shared.counters.races.load(Ordering::Relaxed) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no handler saw the fault"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // The kernel moves the page and wakes no one...
        let (map, off) = shared.buf_place(buf);
        let moved = raw::publish_in(
            raw::Publish::MoveUnwoken,
            &shared.uffd,
            &shared.heap,
            0,
            map,
            off,
            page,
        );
        assert_eq!(moved.unwrap(), page);
        // ... and the engine's MOVE of it fails: it must wake the faulting thread.
        assert!(shared.publish(0, 1, buf, &mut Backoff::default()));
        assert_eq!(shared.counters.misreported_moves.load(Ordering::Relaxed), 1);
        let read = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(read, Ok(!0x1000), "the faulting thread was not woken");
    });
    drop(shared);
    let stats = cycle.compact().unwrap();
    assert_eq!(stats.published(), plan.pages as u64, "{stats:?}");
}

/// Linux 6.18 can move a page and still answer EEXIST (or stop one page short, and then answer
/// EEXIST on the retry): docs/findings/move-undercounts-a-moved-page.md and move-thp-eexist.md.
/// The lie is replayed deterministically: page 0 is claimed, filled and marked `Mapping` the way
/// the compaction thread does it, its buffer is moved into place behind the engine's back (the
/// MOVE that happened), and the engine's own MOVE of it then fails on a page it has in fact
/// published. The engine must count that page as published by MOVE, once; it used to count a
/// race and no publication, so `published() == pages` failed (matrix.rs,
/// `move_with_handler_threads`, once under load).
#[test]
fn move_that_moved_the_page_but_failed_counts_it_published_once() {
    require!(Need::Move);
    // A whole cycle with handler threads: in a child process with a timeout, so that a lost
    // wake-up fails this test instead of hanging the crate's unit tests.
    if test_support::child::run_in_child(std::time::Duration::from_secs(60)) {
        return;
    }
    let page = uffd::page_size();
    let (engine, plan) = tagged_engine_and_half_plan();
    let cycle = engine.flip(Arc::clone(&plan)).unwrap();
    let shared = Arc::clone(cycle.shared());
    let buf = map_page_0_as_the_compactor(&shared);

    // The kernel moves the page...
    let (map, off) = shared.buf_place(buf);
    assert_eq!(
        raw::publish_in(
            raw::Publish::Move,
            &shared.uffd,
            &shared.heap,
            0,
            map,
            off,
            page
        )
        .unwrap(),
        page
    );
    // ... and the engine's MOVE of it fails (EEXIST: the destination is populated).
    assert!(shared.publish(0, 1, buf, &mut Backoff::default()));
    let c = &shared.counters;
    assert_eq!(c.published_move.load(Ordering::Relaxed), 1);
    assert_eq!(c.misreported_moves.load(Ordering::Relaxed), 1);
    assert_eq!(c.races.load(Ordering::Relaxed), 0);
    assert_eq!(state_of(shared.states[0].load(Ordering::Acquire)), MAPPED);
    drop(shared);

    let stats = cycle.compact().unwrap();
    assert_eq!(stats.published(), plan.pages as u64, "{stats:?}");
    assert_eq!(stats.published_move, plan.pages as u64, "{stats:?}");
    assert_eq!(stats.misreported_moves, 1, "{stats:?}");
    assert_eq!(stats.races, 0, "{stats:?}");
    for w in 0..plan.pages * page / 8 {
        assert_eq!(
            engine.heap().read_u64(w * 8),
            !(0x1000 + w as u64),
            "word {w}"
        );
    }
}

/// A MOVE that really found the page there already (someone else's, its buffer still full) is
/// a race, not a publication: settling from the buffer must not count it.
#[test]
fn move_onto_a_page_someone_else_published_is_a_race() {
    require!(Need::Move);
    // A whole cycle with handler threads: in a child process with a timeout, so that a lost
    // wake-up fails this test instead of hanging the crate's unit tests.
    if test_support::child::run_in_child(std::time::Duration::from_secs(60)) {
        return;
    }
    let page = uffd::page_size();
    let engine = move_engine(|_| {});
    let plan = Arc::new(Complement {
        pages: HEAP_PAGES / 2,
    });
    let cycle = engine.flip(Arc::clone(&plan)).unwrap();
    let shared = Arc::clone(cycle.shared());
    let buf = map_page_0_as_the_compactor(&shared);

    // Someone else maps page 0 (a zero page), the buffer stays full.
    raw::zero_in(&shared.uffd, &shared.heap, 0, page).unwrap();
    assert!(shared.publish(0, 1, buf, &mut Backoff::default()));
    let c = &shared.counters;
    assert_eq!(c.published_move.load(Ordering::Relaxed), 0);
    assert_eq!(c.misreported_moves.load(Ordering::Relaxed), 0);
    assert_eq!(c.races.load(Ordering::Relaxed), 1);
    drop(shared);

    let stats = cycle.compact().unwrap();
    assert_eq!(stats.published_move, plan.pages as u64 - 1, "{stats:?}");
    assert_eq!(stats.misreported_moves, 0, "{stats:?}");
}
