//! The kernel selftests' MOVE semantics (`tools/testing/selftests/mm/uffd-unit-tests.c`: `move`,
//! `move-pmd`, `move-pmd-split`, and the MOVE part of `mmap-changing`), `docs/move-contract.md` §4.1.

use std::sync::Arc;
use std::time::Duration;

use test_support::mem::{Advice, Mapping, HUGE_PAGE};
use test_support::{require, Need};
use uffd::{
    Event, EventBuffer, Features, MoveFlags, PagefaultFlags, RangeError, RegisterMode, Uffd,
};

use crate::{assert_nothing_lost, move_pages, next_event, page, readable, registered, FaultServer};

/// The common part of the three `move*` tests (`uffd_move_test_common`): a poll thread resolves
/// read faults on `dst` by moving the `chunk` around the fault from `src` (ALLOW_SRC_HOLES; EEXIST
/// wakes the range); the main thread reads `dst` chunk by chunk and checks each page's contents,
/// then that the source reads zero. Returns the number of faults.
fn move_test_common(
    uffd: Arc<Uffd>,
    src: &Mapping,
    dst: &Mapping,
    chunk: usize,
    seed: u64,
) -> usize {
    let pages = src.len() / page();
    let (src_addr, dst_addr) = (src.addr(), dst.addr());
    let server = FaultServer::spawn(uffd.clone(), move |uffd, fault| {
        assert!(
            !fault
                .flags
                .intersects(PagefaultFlags::WRITE | PagefaultFlags::WP | PagefaultFlags::MINOR),
            "only read faults are expected, got {:?}",
            fault.flags
        );
        let off = (usize::try_from(fault.address).unwrap() - dst_addr) & !(chunk - 1);
        let dst = (dst_addr + off) as *mut u8;
        let src = (src_addr + off) as *mut u8;
        match move_pages(uffd, dst, src, chunk, MoveFlags::ALLOW_SRC_HOLES) {
            Ok(moved) => assert_eq!(moved, chunk),
            Err(RangeError::Exists { .. }) => uffd.wake(dst, chunk).unwrap(),
            Err(e) => panic!("resolving the fault at {:#x}: {e}", fault.address),
        }
    });
    let per_chunk = chunk / page();
    for c in 0..pages / per_chunk {
        let range = c * per_chunk..(c + 1) * per_chunk;
        for i in range.clone() {
            assert!(
                src.page_holds(i, seed + i as u64),
                "src page {i} changed before its move"
            );
        }
        for i in range.clone() {
            assert!(
                dst.page_holds(i, seed + i as u64),
                "dst page {i} has wrong contents"
            );
        }
        for i in range {
            assert!(
                src.page_is_zero(i),
                "src page {i} still holds data after the move"
            );
        }
    }
    server.finish()
}

#[test]
fn move_4k_pages_on_faults() {
    require!(Need::Move);
    let pages = 32;
    let src = Mapping::new(pages * page()).unwrap();
    // The selftest's `prevent_hugepages`: before the source is populated.
    src.madvise(Advice::NoHugePage).unwrap();
    src.madvise(Advice::DontFork).unwrap();
    src.fill_pages(pages, 100);
    let uffd = Arc::new(crate::polled_uffd(Uffd::builder()));
    let dst = registered(&uffd, pages);
    let faults = move_test_common(uffd, &src, &dst, page(), 100);
    assert_eq!(faults, pages, "one missing fault per page");
}

/// Two 2 MiB-aligned THP mappings of `huges` huge pages, the source filled and THP-backed.
fn thp_pair(uffd: &Uffd, huges: usize, dst_advice: Advice, seed: u64) -> (Mapping, Mapping) {
    let len = huges * HUGE_PAGE;
    let src = Mapping::huge_aligned(len).unwrap();
    src.madvise(Advice::HugePage).unwrap();
    src.fill_pages(len / page(), seed);
    assert_eq!(
        src.anon_huge_kb().unwrap(),
        (len / 1024) as u64,
        "the source did not get THPs (memory too fragmented?)"
    );
    let dst = Mapping::huge_aligned(len).unwrap();
    dst.madvise(dst_advice).unwrap();
    uffd.register(dst.as_ptr(), len, RegisterMode::MISSING)
        .unwrap();
    (src, dst)
}

#[test]
fn move_pmd_on_faults() {
    require!(Need::Move, Need::Thp);
    let uffd = Arc::new(crate::polled_uffd(Uffd::builder()));
    let (src, dst) = thp_pair(&uffd, 2, Advice::HugePage, 200);
    let faults = move_test_common(uffd, &src, &dst, HUGE_PAGE, 200);
    assert_eq!(faults, 2, "one missing fault per PMD");
    // The dst faults were taken at PMD level (the PMD stayed none), so each move was a whole-PMD
    // move: the destination is THP-mapped, the source holds nothing.
    assert_eq!(
        dst.anon_huge_kb().unwrap(),
        4096,
        "dst not PMD-mapped after whole-PMD moves"
    );
    assert_eq!(src.anon_huge_kb().unwrap(), 0);
    if test_support::met(Need::Root).is_ok() {
        assert!(test_support::mem::is_thp(dst.addr()).unwrap());
        assert!(test_support::mem::is_thp(dst.addr() + HUGE_PAGE + 5 * page()).unwrap());
    }
}

#[test]
fn move_pmd_split_on_faults() {
    require!(Need::Move, Need::Thp);
    let uffd = Arc::new(crate::polled_uffd(Uffd::builder()));
    let (src, dst) = thp_pair(&uffd, 1, Advice::NoHugePage, 300);
    let faults = move_test_common(uffd, &src, &dst, HUGE_PAGE, 300);
    // The dst fault was taken on the PTE path (a page table now exists), so the source THP had
    // to be split and moved page by page: data intact, no THP at the destination.
    assert_eq!(faults, 1);
    assert_eq!(
        dst.anon_huge_kb().unwrap(),
        0,
        "dst is NOHUGEPAGE, yet THP-mapped"
    );
}

#[test]
fn mmap_changing_move_returns_events_pending() {
    require!(Need::Move, Need::Feature(Features::EVENT_REMOVE));
    let uffd = crate::polled_uffd(Uffd::builder().features(Features::EVENT_REMOVE));
    let pages = 4;
    let src = crate::filled(pages, 400);
    let dst = registered(&uffd, 2 * pages);
    let dst_end = dst.addr() + dst.len();
    std::thread::scope(|s| {
        // MADV_DONTNEED on the registered upper half queues a REMOVE event and blocks the
        // thread until the event is read.
        let remover =
            s.spawn(|| dst.madvise_range(pages * page(), pages * page(), Advice::DontNeed));
        assert!(
            readable(&uffd, Duration::from_secs(5)),
            "no REMOVE event queued"
        );
        // The event is queued and unread: MOVE (into the lower half, untouched by the remove)
        // fails with EAGAIN having done nothing.
        // Since 6.15 the kernel writes `move = -EAGAIN` here; 6.8-6.14 leave the field as it was
        // (a backport may already write it). The binding reads either as "nothing done".
        let (rc, out) = crate::raw_move(&uffd, dst.as_ptr(), src.as_ptr(), pages * page(), 0);
        assert_eq!(rc, Err(uffd::Errno::AGAIN));
        if kernel_at_least(6, 15) {
            assert_eq!(out, -11, "6.15+ writes -EAGAIN to the move field");
        } else {
            assert!(
                out == -11 || out == crate::UNTOUCHED,
                "before 6.15 the move field is -EAGAIN or untouched, got {out}"
            );
        }
        let err = move_pages(
            &uffd,
            dst.as_ptr(),
            src.as_ptr(),
            pages * page(),
            MoveFlags::empty(),
        )
        .unwrap_err();
        assert_eq!(err, RangeError::EventsPending { done: 0 });
        assert_nothing_lost(&src, &dst, pages, 400, 0);
        assert!(
            !remover.is_finished(),
            "MADV_DONTNEED returned before its event was read"
        );

        let mut buf = EventBuffer::new(4);
        match next_event(&uffd, &mut buf) {
            Event::Remove { start, end } => {
                assert_eq!(start, (dst.addr() + pages * page()) as u64);
                assert_eq!(end, dst_end as u64);
            }
            other => panic!("expected a REMOVE event, got {other:?}"),
        }
        remover.join().unwrap().unwrap();
    });
    // After the event was read, MOVE succeeds.
    let moved = move_pages(
        &uffd,
        dst.as_ptr(),
        src.as_ptr(),
        pages * page(),
        MoveFlags::empty(),
    );
    assert_eq!(moved, Ok(pages * page()));
    assert_nothing_lost(&src, &dst, pages, 400, pages * page());
}

/// Whether the running kernel's release (`uname -r`, e.g. `6.18.44-...`) is at least
/// `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

#[test]
fn kernel_release_is_compared_by_number() {
    // The running kernel is at least 6.8 wherever the MOVE tests run, and no kernel is 99.0.
    require!(Need::Move);
    assert!(kernel_at_least(6, 8) && !kernel_at_least(99, 0));
}
