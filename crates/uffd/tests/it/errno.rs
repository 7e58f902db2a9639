//! The errno contract of `UFFDIO_MOVE`: one test per row of `docs/move-contract.md` Appendix A (results
//! on 6.18), except the THP rows (`thp`) and the fork rows (`fork`). After every failed move,
//! `assert_nothing_lost` checks that each page is at its source or its destination, intact.

use test_support::mem::{self, Advice, Mapping, PM_PRESENT, PM_SWAPPED};
use test_support::{require, Need};
use uffd::{Errno, Features, MoveFlags, RangeError, RegisterMode, Uffd, WriteProtectFlags};

use crate::{
    assert_nothing_lost, empty, filled, move_all, move_pages, new_uffd, page, present, raw_move,
    registered, UNTOUCHED,
};

const NONE: MoveFlags = MoveFlags::empty();

#[test]
fn present_page_moves_and_src_reads_zero() {
    require!(Need::Move);
    let uffd = new_uffd();
    let (src, dst) = (filled(1, 1), registered(&uffd, 1));
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), page(), 0);
    assert_eq!((rc, out), (Ok(()), page() as i64));
    assert_nothing_lost(&src, &dst, 1, 1, page());
}

#[test]
fn hole_without_allow_src_holes_is_missing() {
    require!(Need::Move);
    let uffd = new_uffd();
    let src = Mapping::new(page()).unwrap();
    let dst = registered(&uffd, 1);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), page(), 0);
    assert_eq!((rc, out), (Err(Errno::NOENT), -2));
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Missing { done: 0 });
    assert!(empty(&dst, 0) && empty(&src, 0));
}

#[test]
fn hole_with_allow_src_holes_moves_and_dst_stays_empty() {
    require!(Need::Move);
    let uffd = new_uffd();
    let pages = 3;
    let src = Mapping::new(pages * page()).unwrap();
    src.fill_page(1, 11); // pages 0 and 2 are holes
    let dst = registered(&uffd, pages);
    let moved = move_pages(
        &uffd,
        dst.as_ptr(),
        src.as_ptr(),
        pages * page(),
        MoveFlags::ALLOW_SRC_HOLES,
    );
    assert_eq!(moved, Ok(pages * page()));
    assert!(
        empty(&dst, 0) && empty(&dst, 2),
        "a hole was filled at the destination"
    );
    assert!(present(&dst, 1) && dst.page_holds(1, 11));
    assert!(empty(&src, 1));
}

#[test]
fn populated_dst_is_exists() {
    require!(Need::Move);
    let uffd = new_uffd();
    let src = filled(1, 20);
    let dst = filled(1, 99); // populated before registration
    uffd.register(dst.as_ptr(), page(), RegisterMode::MISSING)
        .unwrap();
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), page(), 0);
    assert_eq!((rc, out), (Err(Errno::EXIST), -17));
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Exists { done: 0 });
    assert_nothing_lost(&src, &dst, 1, 20, 0);
    assert!(
        dst.page_holds(0, 99),
        "the populated destination was overwritten"
    );
}

/// Four source pages; the 4th destination page is populated (tag 999).
fn fourth_dst_populated(uffd: &Uffd) -> (Mapping, Mapping) {
    let src = filled(4, 30);
    let dst = Mapping::new(4 * page()).unwrap();
    dst.fill_page(3, 999);
    uffd.register(dst.as_ptr(), dst.len(), RegisterMode::MISSING)
        .unwrap();
    (src, dst)
}

#[test]
fn partial_progress_then_exists() {
    require!(Need::Move);
    let uffd = new_uffd();
    let (src, dst) = fourth_dst_populated(&uffd);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), 4 * page(), 0);
    assert_eq!((rc, out), (Err(Errno::AGAIN), 3 * page() as i64));
    assert_nothing_lost(&src, &dst, 3, 30, 3 * page());
    assert!(src.page_holds(3, 33) && dst.page_holds(3, 999));

    // The same through the binding, on a fresh pair: Partial, then the retry reports what
    // stopped the kernel.
    let (src, dst) = fourth_dst_populated(&uffd);
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 4 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Partial { done: 3 * page() });
    let rest = move_pages(&uffd, dst.page(3), src.page(3), page(), NONE).unwrap_err();
    assert_eq!(rest, RangeError::Exists { done: 0 });
    assert_nothing_lost(&src, &dst, 3, 30, 3 * page());
    assert!(src.page_holds(3, 33) && dst.page_holds(3, 999));

    // And move_all accumulates: Exists after 12288 bytes.
    let (src, dst) = fourth_dst_populated(&uffd);
    let err = move_all(&uffd, dst.as_ptr(), src.as_ptr(), 4 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Exists { done: 3 * page() });
    assert_nothing_lost(&src, &dst, 3, 30, 3 * page());
    assert!(src.page_holds(3, 33) && dst.page_holds(3, 999));
}

#[test]
fn bad_arguments_are_invalid_and_leave_move_untouched() {
    require!(Need::Move);
    let uffd = new_uffd();
    let (src, dst) = (filled(2, 40), registered(&uffd, 2));
    let (d, s, len) = (dst.as_ptr(), src.as_ptr(), page());
    let cases: [(&str, *mut u8, *mut u8, usize, u64); 4] = [
        ("len=0", d, s, 0, 0),
        ("unaligned dst", d.wrapping_add(8), s, len, 0),
        ("unaligned src", d, s.wrapping_add(8), len, 0),
        ("mode bit 4", d, s, len, 1 << 4),
    ];
    for (what, d, s, len, mode) in cases {
        let (rc, out) = raw_move(&uffd, d, s, len, mode);
        assert_eq!((rc, out), (Err(Errno::INVAL), UNTOUCHED), "{what}");
        let flags = MoveFlags::from_bits_retain(mode);
        let err = move_pages(&uffd, d, s, len, flags).unwrap_err();
        assert_eq!(err, RangeError::Invalid { done: 0 }, "{what}");
        // The retrying move answers as the ioctl does, an empty range included.
        let err = move_all(&uffd, d, s, len, flags).unwrap_err();
        assert_eq!(err, RangeError::Invalid { done: 0 }, "move_all, {what}");
        assert_nothing_lost(&src, &dst, 2, 40, 0);
    }
}

#[test]
fn dst_not_registered_is_invalid() {
    require!(Need::Move);
    let uffd = new_uffd();
    let (src, dst) = (filled(1, 50), Mapping::new(page()).unwrap());
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), page(), 0);
    assert_eq!((rc, out), (Err(Errno::INVAL), -22));
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Invalid { done: 0 });
    assert!(src.page_holds(0, 50) && empty(&dst, 0));
}

#[test]
fn dst_registered_to_another_uffd_is_invalid() {
    require!(Need::Move);
    let (ours, theirs) = (new_uffd(), new_uffd());
    let src = filled(1, 60);
    let dst = registered(&theirs, 1);
    let (rc, out) = raw_move(&ours, dst.as_ptr(), src.as_ptr(), page(), 0);
    assert_eq!((rc, out), (Err(Errno::INVAL), -22));
    let err = move_pages(&ours, dst.as_ptr(), src.as_ptr(), page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Invalid { done: 0 });
    assert_nothing_lost(&src, &dst, 1, 60, 0);
    // The owner can.
    assert_eq!(
        move_pages(&theirs, dst.as_ptr(), src.as_ptr(), page(), NONE),
        Ok(page())
    );
}

#[test]
fn unmapped_dst_or_src_start_is_missing() {
    require!(Need::Move);
    let uffd = new_uffd();
    let (src, dst) = (filled(1, 70), registered(&uffd, 1));
    let hole = mem::unmapped_range(page());

    let (rc, out) = raw_move(&uffd, hole, src.as_ptr(), page(), 0);
    assert_eq!((rc, out), (Err(Errno::NOENT), -2), "dst start unmapped");
    let err = move_pages(&uffd, hole, src.as_ptr(), page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Missing { done: 0 });

    let (rc, out) = raw_move(&uffd, dst.as_ptr(), hole, page(), 0);
    assert_eq!((rc, out), (Err(Errno::NOENT), -2), "src start unmapped");
    let err = move_pages(
        &uffd,
        dst.as_ptr(),
        hole,
        page(),
        MoveFlags::ALLOW_SRC_HOLES,
    )
    .unwrap_err();
    assert_eq!(err, RangeError::Missing { done: 0 });
    assert_nothing_lost(&src, &dst, 1, 70, 0);
}

#[test]
fn range_beyond_its_vma_is_invalid() {
    require!(Need::Move);
    let uffd = new_uffd();
    // The source VMA is pages 0-1 of a 4-page mapping whose pages 2-3 are read-only (a VMA of
    // our own), so "beyond the VMA" never reaches anyone else's memory.
    let src = filled(4, 80);
    src.mprotect(2 * page(), 2 * page(), libc::PROT_READ)
        .unwrap();
    let dst = registered(&uffd, 4);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), 4 * page(), 0);
    assert_eq!(
        (rc, out),
        (Err(Errno::INVAL), -22),
        "src range beyond its VMA"
    );
    assert_nothing_lost(&src, &dst, 4, 80, 0);

    // The destination VMA is 2 registered pages followed by 2 unregistered ones.
    let src = filled(4, 90);
    let dst = Mapping::new(4 * page()).unwrap();
    uffd.register(dst.as_ptr(), 2 * page(), RegisterMode::MISSING)
        .unwrap();
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), 4 * page(), 0);
    assert_eq!(
        (rc, out),
        (Err(Errno::INVAL), -22),
        "dst range beyond its VMA"
    );
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 4 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Invalid { done: 0 });
    assert_nothing_lost(&src, &dst, 4, 90, 0);
}

#[test]
fn dst_range_spanning_two_vmas_is_invalid() {
    require!(Need::Move);
    let uffd = new_uffd();
    let src = filled(4, 100);
    let dst = registered(&uffd, 4);
    // Split the registered destination into two VMAs that differ only in VM_DONTCOPY.
    dst.madvise_range(2 * page(), 2 * page(), Advice::DoFork)
        .unwrap();
    assert_eq!(mem::vma_count(dst.addr(), dst.len()).unwrap(), 2);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), 4 * page(), 0);
    assert_eq!((rc, out), (Err(Errno::INVAL), -22));
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 4 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Invalid { done: 0 });
    assert_nothing_lost(&src, &dst, 4, 100, 0);
    // Each half on its own moves.
    assert_eq!(
        move_all(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE),
        Ok(2 * page())
    );
    assert_eq!(
        move_all(&uffd, dst.page(2), src.page(2), 2 * page(), NONE),
        Ok(2 * page())
    );
    assert_nothing_lost(&src, &dst, 4, 100, 4 * page());
}

#[test]
fn prot_mismatch_is_invalid() {
    require!(Need::Move);
    let uffd = new_uffd();
    let src = filled(2, 110);
    src.mprotect(0, src.len(), libc::PROT_READ).unwrap();
    let dst = registered(&uffd, 2);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), 0);
    assert_eq!((rc, out), (Err(Errno::INVAL), -22));
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Invalid { done: 0 });
    assert_nothing_lost(&src, &dst, 2, 110, 0);
}

#[test]
fn shared_anonymous_src_is_invalid() {
    require!(Need::Move);
    let uffd = new_uffd();
    let src = Mapping::with_flags(
        2 * page(),
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
    )
    .unwrap();
    src.fill_pages(2, 120);
    let dst = registered(&uffd, 2);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), 0);
    assert_eq!((rc, out), (Err(Errno::INVAL), -22));
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Invalid { done: 0 });
    assert_nothing_lost(&src, &dst, 2, 120, 0);
}

#[test]
fn mlock_mismatch_is_invalid() {
    require!(Need::Move);
    let uffd = new_uffd();
    let src = filled(2, 130);
    src.mlock().unwrap();
    let dst = registered(&uffd, 2);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), 0);
    assert_eq!((rc, out), (Err(Errno::INVAL), -22));
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Invalid { done: 0 });
    assert_nothing_lost(&src, &dst, 2, 130, 0);
}

#[test]
fn zero_page_src_moves() {
    require!(Need::Move);
    let uffd = new_uffd();
    let src = Mapping::new(page()).unwrap();
    src.madvise(Advice::NoHugePage).unwrap();
    assert_eq!(src.read_u64(64), 0); // a read fault maps the shared zero page
    assert!(present(&src, 0));
    let dst = registered(&uffd, 1);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), page(), 0);
    assert_eq!((rc, out), (Ok(()), page() as i64));
    assert!(
        present(&dst, 0),
        "the zero page did not arrive at the destination"
    );
    assert!(dst.page_is_zero(0));
    assert!(empty(&src, 0));
}

#[test]
fn same_vma_overlap_upward_is_exists() {
    require!(Need::Move);
    let uffd = new_uffd();
    // One registered VMA of 3 pages; pages 0 and 1 populated; move [0, 2) to [1, 3).
    let m = Mapping::new(3 * page()).unwrap();
    m.fill_page(0, 140);
    m.fill_page(1, 141);
    uffd.register(m.as_ptr(), m.len(), RegisterMode::MISSING)
        .unwrap();
    let err = move_pages(&uffd, m.page(1), m.page(0), 2 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Exists { done: 0 });
    assert!(m.page_holds(0, 140) && m.page_holds(1, 141) && empty(&m, 2));
}

#[test]
fn same_vma_overlap_downward_moves() {
    require!(Need::Move);
    let uffd = new_uffd();
    // Pages 1 and 2 populated; move [1, 3) to [0, 2): page 1 is emptied before it is needed.
    let m = Mapping::new(3 * page()).unwrap();
    m.fill_page(1, 151);
    m.fill_page(2, 152);
    uffd.register(m.as_ptr(), m.len(), RegisterMode::MISSING)
        .unwrap();
    assert_eq!(
        move_pages(&uffd, m.page(0), m.page(1), 2 * page(), NONE),
        Ok(2 * page())
    );
    assert!(m.page_holds(0, 151) && m.page_holds(1, 152));
    assert!(empty(&m, 2));
}

#[test]
fn swapped_out_pages_move_without_swap_in() {
    require!(Need::Move, Need::Swap);
    let uffd = new_uffd();
    let pages = 8;
    let src = Mapping::new(pages * page()).unwrap();
    src.madvise(Advice::NoHugePage).unwrap();
    src.fill_pages(pages, 160);
    let mut swapped = false;
    for _ in 0..10 {
        src.madvise(Advice::PageOut).unwrap();
        let entries = src.pagemap(0, pages).unwrap();
        if entries
            .iter()
            .all(|e| e & PM_SWAPPED != 0 && e & PM_PRESENT == 0)
        {
            swapped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        swapped,
        "MADV_PAGEOUT did not swap the pages out: {:x?}",
        src.pagemap(0, pages)
    );
    let dst = registered(&uffd, pages);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), pages * page(), 0);
    assert_eq!((rc, out), (Ok(()), (pages * page()) as i64));
    // The swap entries moved: the destination is still swapped out, not swapped in.
    let entries = dst.pagemap(0, pages).unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e & PM_SWAPPED != 0 && e & PM_PRESENT == 0),
        "dst pages were swapped in by the move: {entries:x?}"
    );
    assert!((0..pages).all(|i| empty(&src, i)));
    // Reading swaps them in at the destination, intact.
    for i in 0..pages {
        assert!(
            dst.page_holds(i, 160 + i as u64),
            "page {i} lost across swap + move"
        );
    }
}

#[test]
fn dst_wp_marker_is_exists() {
    require!(Need::Move, Need::Feature(Features::WP_UNPOPULATED));
    let uffd = Uffd::builder()
        .features(Features::PAGEFAULT_FLAG_WP | Features::WP_UNPOPULATED)
        .create()
        .unwrap();
    let src = filled(2, 170);
    let dst = Mapping::new(2 * page()).unwrap();
    uffd.register(
        dst.as_ptr(),
        dst.len(),
        RegisterMode::MISSING | RegisterMode::WP,
    )
    .unwrap();
    // Write-protecting unpopulated pages installs PTE markers there.
    uffd.writeprotect(dst.as_ptr(), dst.len(), WriteProtectFlags::WP)
        .unwrap();
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), 0);
    assert_eq!((rc, out), (Err(Errno::EXIST), -17));
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Exists { done: 0 });
    assert_nothing_lost(&src, &dst, 2, 170, 0);
}

#[test]
fn src_guard_region_is_fault_even_with_allow_src_holes() {
    require!(Need::Move);
    let uffd = new_uffd();
    let pages = 4;
    let src = Mapping::new(pages * page()).unwrap();
    src.madvise(Advice::NoHugePage).unwrap();
    for i in [0, 1, 3] {
        src.fill_page(i, 180 + i as u64);
    }
    if let Err(e) = src.madvise_range(2 * page(), page(), Advice::GuardInstall) {
        if e.raw_os_error() == Some(libc::EINVAL) {
            test_support::skip("src_guard_region", "MADV_GUARD_INSTALL (Linux 6.13)");
            return;
        }
        panic!("MADV_GUARD_INSTALL: {e}");
    }
    let dst = registered(&uffd, pages);
    // The guard at page 2 stops the move there: pages 0-1 moved (EAGAIN with 8192), then EFAULT.
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), pages * page(), 2);
    assert_eq!((rc, out), (Err(Errno::AGAIN), 2 * page() as i64));
    let (rc, out) = raw_move(&uffd, dst.page(2), src.page(2), 2 * page(), 2);
    assert_eq!(
        (rc, out),
        (Err(Errno::FAULT), -14),
        "guard page with ALLOW_SRC_HOLES"
    );
    let err = move_pages(
        &uffd,
        dst.page(2),
        src.page(2),
        2 * page(),
        MoveFlags::ALLOW_SRC_HOLES,
    )
    .unwrap_err();
    assert_eq!(err, RangeError::Fault { done: 0 });
    // Nothing lost: pages 0-1 at dst, page 2 still a guard (dst empty), page 3 still at src.
    for i in 0..2 {
        assert!(dst.page_holds(i, 180 + i as u64) && src.page_is_zero(i));
    }
    assert!(empty(&dst, 2) && empty(&dst, 3));
    assert!(src.page_holds(3, 183));
}

#[test]
fn src_guard_region_move_all_reports_fault_after_progress() {
    require!(Need::Move);
    let uffd = new_uffd();
    let src = filled(4, 190);
    if src
        .madvise_range(2 * page(), page(), Advice::GuardInstall)
        .is_err()
    {
        test_support::skip(
            "src_guard_region_move_all",
            "MADV_GUARD_INSTALL (Linux 6.13)",
        );
        return;
    }
    let dst = registered(&uffd, 4);
    let err = move_all(
        &uffd,
        dst.as_ptr(),
        src.as_ptr(),
        4 * page(),
        MoveFlags::ALLOW_SRC_HOLES,
    )
    .unwrap_err();
    assert_eq!(err, RangeError::Fault { done: 2 * page() });
    assert_nothing_lost(&src, &dst, 2, 190, 2 * page());
    assert!(src.page_holds(3, 193) && empty(&dst, 2) && empty(&dst, 3));
}

#[test]
fn dst_registered_wp_only_moves() {
    require!(Need::Move);
    let uffd = new_uffd();
    let src = filled(2, 200);
    let dst = Mapping::new(2 * page()).unwrap();
    uffd.register(dst.as_ptr(), dst.len(), RegisterMode::WP)
        .unwrap();
    assert_eq!(
        move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE),
        Ok(2 * page())
    );
    assert_nothing_lost(&src, &dst, 2, 200, 2 * page());
}

#[test]
fn src_also_registered_moves() {
    require!(Need::Move);
    let uffd = new_uffd();
    let src = filled(2, 210);
    uffd.register(src.as_ptr(), src.len(), RegisterMode::MISSING)
        .unwrap();
    let dst = registered(&uffd, 2);
    assert_eq!(
        move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE),
        Ok(2 * page())
    );
    for i in 0..2 {
        assert!(dst.page_holds(i, 210 + i as u64));
        // Reading the registered source would now be a missing fault: check the map instead.
        assert!(empty(&src, i));
    }
}

#[test]
fn user_mode_only_fd_with_move_feature_moves() {
    require!(Need::Move);
    let uffd = Uffd::builder().features(Features::MOVE).create().unwrap();
    assert!(matches!(
        uffd.path(),
        uffd::CreatePath::Syscall {
            user_mode_only: true
        } | uffd::CreatePath::Device {
            user_mode_only: true
        }
    ));
    assert!(uffd.features().contains(Features::MOVE));
    let (src, dst) = (filled(2, 220), registered(&uffd, 2));
    assert_eq!(
        move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE),
        Ok(2 * page())
    );
    assert_nothing_lost(&src, &dst, 2, 220, 2 * page());
}

#[test]
fn second_api_is_invalid() {
    require!(Need::Uffd);
    let uffd = new_uffd();
    let mut api = uffd::raw::uffdio_api {
        api: uffd::raw::UFFD_API,
        features: 0,
        ioctls: 0,
    };
    let rc = uffd::raw::api(&uffd, &mut api);
    assert_eq!(
        rc,
        Err(Errno::INVAL),
        "UFFDIO_API succeeded twice on one fd"
    );
}
