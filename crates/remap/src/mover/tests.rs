//! Unit tests of the mover's pure logic (geometry, flags); the kernel-facing behaviour is tested
//! in `tests/it/mover.rs`.

use uffd::{CopyFlags, Errno, MoveFlags, RangeError};

use super::drive::aligned_span;
use super::report::AtomicStats;
use super::verify::{is_hole, walk_holes};
use super::*;
use crate::inspect::{PM_PRESENT, PM_SWAPPED};
use crate::region::HUGE_PAGE_SIZE;

const H: usize = HUGE_PAGE_SIZE;
const P: usize = 4096;

#[test]
fn aligned_span_counts_only_whole_aligned_chunks() {
    // Both aligned, exactly one chunk.
    assert_eq!(aligned_span(H, 3 * H, 0, H), (0, H));
    // Both aligned, a chunk and a tail.
    assert_eq!(aligned_span(H, 3 * H, 0, H + P), (0, H));
    // Head, two chunks, tail: the run starts one page before an aligned boundary on both sides.
    assert_eq!(
        aligned_span(H - P, 5 * H - P, 0, P + 2 * H + P),
        (P, P + 2 * H)
    );
    // Different phases (dst aligned, src off by a page): never whole-PMD.
    assert_eq!(aligned_span(H, 3 * H + P, 0, 4 * H), (0, 0));
    // Too short to hold a chunk.
    assert_eq!(aligned_span(H, 3 * H, 0, H - P), (0, 0));
    // Offsets inside a run: the ioctl starts mid-run, so only chunks starting at or after it.
    assert_eq!(aligned_span(H, 3 * H, P, 2 * H), (H, 2 * H));
    assert_eq!(aligned_span(H, 3 * H, H, H), (H, 2 * H));
    // Empty call.
    assert_eq!(aligned_span(H, 3 * H, 0, 0), (0, 0));
}

#[test]
fn options_map_to_kernel_flags() {
    let o = MoveOptions::default();
    assert_eq!(o.move_flags(), MoveFlags::DONTWAKE);
    assert_eq!(o.copy_flags(), CopyFlags::DONTWAKE);
    let o = o.wake(Wake::Kernel);
    assert_eq!(o.move_flags(), MoveFlags::empty());
    assert_eq!(o.copy_flags(), CopyFlags::empty());
    let o = o.holes(HolePolicy::Skip).wake(Wake::Kernel);
    assert_eq!(o.move_flags(), MoveFlags::ALLOW_SRC_HOLES);
    assert_eq!(o.copy_flags(), CopyFlags::empty());
    let o = o.wake(Wake::None);
    assert_eq!(
        o.move_flags(),
        MoveFlags::ALLOW_SRC_HOLES | MoveFlags::DONTWAKE
    );
}

#[test]
fn holes_are_entries_neither_present_nor_swapped() {
    assert!(is_hole(0));
    assert!(is_hole(PM_SWAPPED >> 10)); // soft-dirty-like low bits only
    assert!(!is_hole(PM_PRESENT | 42));
    assert!(!is_hole(PM_SWAPPED | 7));
}

#[test]
fn walk_holes_follows_pages_moved_on_through_an_overlapping_run() {
    let (x, o) = (PM_PRESENT, 0);
    // No overlap from above: the pagemap as read.
    assert_eq!(walk_holes(&[x, o, o], None), [false, true, true]);
    // One page above: page 0 cascades through every later step.
    assert_eq!(walk_holes(&[x, o, o], Some(1)), [false, false, false]);
    // Two pages above: each populated page is met again every second step.
    assert_eq!(
        walk_holes(&[x, o, o, o], Some(2)),
        [false, true, false, true]
    );
    assert_eq!(walk_holes(&[x, x, o, o], Some(2)), [false; 4]);
    // A swapped page moves like a present one.
    assert_eq!(
        walk_holes(&[o, PM_SWAPPED, o], Some(1)),
        [true, false, false]
    );
    // Shift 0 (same addresses) is no overlap from above.
    assert_eq!(walk_holes(&[x, o], Some(0)), [false, true]);
}

#[test]
fn reports_add_up() {
    let mut a = MoveReport {
        aligned_bytes: 1,
        whole_pmd_bytes: 1,
        pte_bytes: 2,
        copied_bytes: 3,
        hole_bytes: 4,
        runs: 5,
        move_ioctls: 6,
        copy_ioctls: 7,
        wake_ioctls: 8,
        discards: 9,
        retries: 10,
        kernel_undercounts: 11,
    };
    a += a;
    assert_eq!(a.moved_bytes(), 12);
    assert_eq!(a.ioctls(), 42);
    assert_eq!(a.retries, 20);
    assert_eq!(a.kernel_undercounts, 22);
    let stats = AtomicStats::default();
    stats.add(&a, true);
    stats.add(&MoveReport::default(), false);
    let s = stats.snapshot();
    assert_eq!(s.totals, a);
    assert_eq!((s.operations, s.errors), (1, 1));
    // The single-ioctl shortcut counts one operation, run and move ioctl.
    let single = MoveReport {
        pte_bytes: 4096,
        runs: 1,
        move_ioctls: 1,
        ..MoveReport::default()
    };
    stats.add(&single, false);
    let t = stats.snapshot();
    a += single;
    assert_eq!(t.totals, a);
    assert_eq!((t.operations, t.errors), (2, 1));
}

#[test]
fn errors_keep_errno_and_done() {
    let e = MoveError::Move {
        done: 3 * P,
        source: RangeError::Exists { done: 0 },
    };
    assert_eq!(e.done(), 3 * P);
    assert_eq!(e.errno(), Some(Errno::EXIST));
    let bad = MoveError::BadRange {
        side: Side::Source,
        off: 1,
        len: P,
        region_len: P,
    };
    assert_eq!((bad.done(), bad.errno()), (0, None));
    assert!(bad.to_string().starts_with("source range 0x1+0x1000"));
}

#[test]
fn mover_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Mover>();
}
