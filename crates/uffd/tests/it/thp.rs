//! The THP rows of `docs/move-contract.md` Appendix A: whole-PMD moves, splits, the huge zero page, partial THPs.

use test_support::mem::{self, Advice, Mapping, HUGE_PAGE};
use test_support::{require, Need};
use uffd::{MoveFlags, RegisterMode, Uffd};

use crate::{assert_nothing_lost, empty, move_all, new_uffd, page, present, raw_move};

/// A 2 MiB-aligned `MADV_HUGEPAGE` source of `len` bytes, filled, checked to be THP-backed.
fn thp_src(len: usize, seed: u64) -> Mapping {
    let src = Mapping::huge_aligned(len).unwrap();
    src.madvise(Advice::HugePage).unwrap();
    src.fill_pages(len / page(), seed);
    assert_eq!(
        src.anon_huge_kb().unwrap(),
        (len / HUGE_PAGE * 2048) as u64,
        "the source did not get THPs (memory too fragmented?)"
    );
    src
}

/// A 2 MiB-aligned `MADV_HUGEPAGE` destination of `len` bytes registered with `uffd`.
fn thp_dst(uffd: &Uffd, len: usize) -> Mapping {
    let dst = Mapping::huge_aligned(len).unwrap();
    dst.madvise(Advice::HugePage).unwrap();
    uffd.register(dst.as_ptr(), len, RegisterMode::MISSING)
        .unwrap();
    dst
}

fn root() -> bool {
    test_support::met(Need::Root).is_ok()
}

#[test]
fn thp_2m_aligned_moves_whole_pmd() {
    require!(Need::Move, Need::Thp);
    let uffd = new_uffd();
    let src = thp_src(HUGE_PAGE, 1000);
    let dst = thp_dst(&uffd, HUGE_PAGE);
    let before = dst.anon_huge_kb().unwrap();
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), HUGE_PAGE, 0);
    assert_eq!((rc, out), (Ok(()), HUGE_PAGE as i64));
    assert_eq!(
        dst.anon_huge_kb().unwrap() - before,
        2048,
        "dst did not gain a PMD-mapped THP"
    );
    assert_eq!(src.anon_huge_kb().unwrap(), 0);
    if root() {
        assert!(mem::is_thp(dst.addr()).unwrap());
    }
    assert_nothing_lost(&src, &dst, HUGE_PAGE / page(), 1000, HUGE_PAGE);
}

#[test]
fn thp_4m_aligned_moves_whole_pmds() {
    require!(Need::Move, Need::Thp);
    let uffd = new_uffd();
    let len = 2 * HUGE_PAGE;
    let src = thp_src(len, 2000);
    let dst = thp_dst(&uffd, len);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), len, 0);
    assert_eq!((rc, out), (Ok(()), len as i64));
    // Two PMDs: 4096 kB of AnonHugePages at the 4 MiB destination (`docs/move-contract.md`
    // Appendix A, note 1).
    assert_eq!(dst.anon_huge_kb().unwrap(), 4096, "dst not PMD-mapped");
    if root() {
        assert!(mem::is_thp(dst.addr()).unwrap() && mem::is_thp(dst.addr() + HUGE_PAGE).unwrap());
    }
    assert_nothing_lost(&src, &dst, len / page(), 2000, len);
}

#[test]
fn thp_to_unaligned_dst_splits_and_moves() {
    require!(Need::Move, Need::Thp);
    let uffd = new_uffd();
    let src = thp_src(HUGE_PAGE, 3000);
    // The destination range starts 4 KiB past a PMD boundary.
    let dst_map = Mapping::huge_aligned(2 * HUGE_PAGE).unwrap();
    dst_map.madvise(Advice::HugePage).unwrap();
    uffd.register(dst_map.as_ptr(), dst_map.len(), RegisterMode::MISSING)
        .unwrap();
    let dst = dst_map.page(1);
    let moved = move_all(&uffd, dst, src.as_ptr(), HUGE_PAGE, MoveFlags::empty());
    assert_eq!(moved, Ok(HUGE_PAGE));
    assert_eq!(src.anon_huge_kb().unwrap(), 0);
    assert_eq!(
        dst_map.anon_huge_kb().unwrap(),
        0,
        "an unaligned destination cannot hold a PMD"
    );
    assert!(empty(&dst_map, 0));
    for i in 0..HUGE_PAGE / page() {
        assert!(present(&dst_map, i + 1));
        assert!(
            dst_map.page_holds(i + 1, 3000 + i as u64),
            "page {i} lost in the split"
        );
        assert!(src.page_is_zero(i));
    }
}

#[test]
fn huge_zero_page_moves() {
    require!(Need::Move, Need::Thp);
    let uffd = new_uffd();
    let src = Mapping::huge_aligned(HUGE_PAGE).unwrap();
    src.madvise(Advice::HugePage).unwrap();
    // A read fault on an aligned MADV_HUGEPAGE range maps the huge zero page (when
    // `use_zero_page` is on; otherwise the small zero page, which moves as well).
    assert_eq!(src.read_u64(0), 0);
    assert!(present(&src, 0) && present(&src, 511));
    let huge_zero = root()
        && std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/use_zero_page")
            .is_ok_and(|v| v.trim() == "1");
    if huge_zero {
        // kpageflags marks the huge zero page as a THP (and a zero page).
        assert!(
            mem::is_thp(src.addr()).unwrap(),
            "the read fault did not map the huge zero page"
        );
    }
    let dst = thp_dst(&uffd, HUGE_PAGE);
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), HUGE_PAGE, 0);
    assert_eq!((rc, out), (Ok(()), HUGE_PAGE as i64));
    assert!(present(&dst, 0) && present(&dst, 511));
    if huge_zero {
        assert!(
            mem::is_thp(dst.addr()).unwrap(),
            "the huge zero page did not move as a PMD"
        );
    }
    for i in (0..HUGE_PAGE / page()).step_by(37) {
        assert!(dst.page_is_zero(i));
    }
    assert!(empty(&src, 0));
}

#[test]
fn thp_src_half_length_moves() {
    require!(Need::Move, Need::Thp);
    let uffd = new_uffd();
    let src = thp_src(HUGE_PAGE, 4000);
    let dst = thp_dst(&uffd, HUGE_PAGE);
    let half = HUGE_PAGE / 2;
    let (rc, out) = raw_move(&uffd, dst.as_ptr(), src.as_ptr(), half, 0);
    assert_eq!((rc, out), (Ok(()), half as i64));
    // The first 256 pages are at the destination, the other 256 still at the source.
    assert_nothing_lost(&src, &dst, HUGE_PAGE / page(), 4000, half);
    assert!(empty(&dst, HUGE_PAGE / page() - 1));
}
