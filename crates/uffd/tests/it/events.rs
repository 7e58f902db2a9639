//! Non-cooperative events (REMAP, UNMAP, REMOVE), many events per read, and THREAD_ID.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use test_support::mem::{Advice, Mapping};
use test_support::{require, Need};
use uffd::{Event, EventBuffer, Features, MoveFlags, PagefaultFlags, Uffd};

use crate::{filled, move_pages, next_event, page, readable, registered};

fn with_features(features: Features) -> Uffd {
    crate::polled_uffd(Uffd::builder().features(features))
}

#[test]
fn mremap_of_registered_range_is_remap_event() {
    require!(Need::Feature(Features::EVENT_REMAP));
    let uffd = with_features(Features::EVENT_REMAP);
    let pages = 4;
    let from = registered(&uffd, pages);
    let to = Mapping::new(pages * page()).unwrap();
    let (from_addr, len) = (from.addr(), from.len());
    std::thread::scope(|s| {
        // mremap waits until its event is read.
        let mover = s.spawn(|| from.mremap_into(&to));
        let mut buf = EventBuffer::new(4);
        match next_event(&uffd, &mut buf) {
            Event::Remap {
                from,
                to: new,
                len: moved,
            } => {
                assert_eq!(from, from_addr as u64);
                assert_eq!(new, to.addr() as u64);
                assert_eq!(moved, len as u64);
            }
            other => panic!("expected a REMAP event, got {other:?}"),
        }
        mover.join().unwrap().unwrap();
    });
}

#[test]
fn munmap_of_registered_range_is_unmap_event() {
    require!(Need::Feature(Features::EVENT_UNMAP));
    let uffd = with_features(Features::EVENT_UNMAP);
    let m = registered(&uffd, 4);
    let (start, end) = (m.addr() as u64, (m.addr() + m.len()) as u64);
    std::thread::scope(|s| {
        let unmapper = s.spawn(|| m.unmap());
        let mut buf = EventBuffer::new(4);
        match next_event(&uffd, &mut buf) {
            Event::Unmap { start: s, end: e } => assert_eq!((s, e), (start, end)),
            other => panic!("expected an UNMAP event, got {other:?}"),
        }
        unmapper.join().unwrap().unwrap();
    });
}

#[test]
fn dontneed_of_registered_range_is_remove_event() {
    require!(Need::Feature(Features::EVENT_REMOVE));
    let uffd = with_features(Features::EVENT_REMOVE);
    let m = registered(&uffd, 4);
    let (start, end) = (m.addr() + page(), m.addr() + 3 * page());
    std::thread::scope(|s| {
        let remover = s.spawn(|| m.madvise_range(page(), 2 * page(), Advice::DontNeed));
        let mut buf = EventBuffer::new(4);
        match next_event(&uffd, &mut buf) {
            Event::Remove { start: s, end: e } => assert_eq!((s, e), (start as u64, end as u64)),
            other => panic!("expected a REMOVE event, got {other:?}"),
        }
        remover.join().unwrap().unwrap();
    });
}

/// The scheduler state of thread `tid` of this process (`R`, `S`, `D`, ...).
fn thread_state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The state follows the command name in parentheses, which may contain spaces.
    stat.rsplit_once(") ")?.1.chars().next()
}

#[test]
fn faults_from_many_threads_read_at_once_with_thread_ids() {
    require!(Need::Move, Need::Feature(Features::THREAD_ID));
    let uffd = with_features(Features::THREAD_ID);
    let threads = 4;
    let src = filled(threads, 700);
    let dst = registered(&uffd, threads);
    let tids = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let (dst, tids) = (&dst, &tids);
                s.spawn(move || {
                    let tid = rustix::thread::gettid().as_raw_nonzero().get();
                    tids.lock().unwrap().push(tid);
                    // A read fault on a registered missing page: waits for a resolution.
                    dst.page_holds(i, 700 + i as u64)
                })
            })
            .collect();
        // Wait until every worker sleeps in its fault, so their events are all queued.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let tids = tids.lock().unwrap().clone();
            if tids.len() == threads && tids.iter().all(|&t| thread_state(t) == Some('S')) {
                break;
            }
            assert!(Instant::now() < deadline, "workers did not all fault");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(readable(&uffd, Duration::from_secs(5)));
        let mut buf = EventBuffer::new(16);
        let n = uffd.read_events(&mut buf).unwrap();
        assert_eq!(n, threads, "one read did not return every queued fault");
        let mut seen = BTreeSet::new();
        for event in buf.drain() {
            let Event::Pagefault(fault) = event else {
                panic!("expected page faults, got {event:?}");
            };
            assert!(!fault.flags.contains(PagefaultFlags::WRITE));
            let tid = fault
                .thread_id
                .expect("THREAD_ID enabled, yet no thread id");
            seen.insert(i32::try_from(tid).unwrap());
            let i = (usize::try_from(fault.address).unwrap() - dst.addr()) / page();
            let moved = move_pages(&uffd, dst.page(i), src.page(i), page(), MoveFlags::empty());
            assert_eq!(moved, Ok(page()));
        }
        let expected: BTreeSet<i32> = tids.lock().unwrap().iter().copied().collect();
        assert_eq!(
            seen, expected,
            "fault thread ids do not match the faulting threads"
        );
        for (i, w) in workers.into_iter().enumerate() {
            assert!(w.join().unwrap(), "worker {i} read wrong contents");
        }
    });
}
