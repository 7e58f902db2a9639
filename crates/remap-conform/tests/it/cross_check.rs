//! The hand-written errno tests of `crates/uffd/tests/it` (`errno.rs`, `fork.rs`, `thp.rs`,
//! `selftest.rs`) against the oracle: for each Appendix A row they pin, the value they assert
//! (transcribed here with the test's name) must be what the oracle expects for this kernel and
//! what this kernel returned in the matching conformance case.

use remap_conform::cases;
use test_support::{require, Need};

use crate::{harness, run_in_child};

/// `(case name, hand-written test, the outcome it asserts)`.
const HANDWRITTEN: &[(&str, &str, &str)] = &[
    (
        "present page",
        "errno::present_page_moves_and_src_reads_zero",
        "0 / 4096",
    ),
    (
        "hole, no flag",
        "errno::hole_without_allow_src_holes_is_missing",
        "ENOENT / -2",
    ),
    (
        "hole, ALLOW_SRC_HOLES",
        "errno::hole_with_allow_src_holes_moves_and_dst_stays_empty",
        "0 / 4096",
    ),
    (
        "populated dst",
        "errno::populated_dst_is_exists",
        "EEXIST / -17",
    ),
    (
        "4 pages, 4th dst populated",
        "errno::partial_progress_then_exists",
        "EAGAIN / 12288",
    ),
    (
        "len=0",
        "errno::bad_arguments_are_invalid_and_leave_move_untouched",
        "EINVAL / untouched",
    ),
    (
        "unaligned dst",
        "errno::bad_arguments_are_invalid_and_leave_move_untouched",
        "EINVAL / untouched",
    ),
    (
        "unaligned src",
        "errno::bad_arguments_are_invalid_and_leave_move_untouched",
        "EINVAL / untouched",
    ),
    (
        "mode bit 4",
        "errno::bad_arguments_are_invalid_and_leave_move_untouched",
        "EINVAL / untouched",
    ),
    (
        "dst not registered",
        "errno::dst_not_registered_is_invalid",
        "EINVAL / -22",
    ),
    (
        "dst registered to another uffd",
        "errno::dst_registered_to_another_uffd_is_invalid",
        "EINVAL / -22",
    ),
    (
        "dst start unmapped",
        "errno::unmapped_dst_or_src_start_is_missing",
        "ENOENT / -2",
    ),
    (
        "src start unmapped",
        "errno::unmapped_dst_or_src_start_is_missing",
        "ENOENT / -2",
    ),
    (
        "src range beyond its VMA",
        "errno::range_beyond_its_vma_is_invalid",
        "EINVAL / -22",
    ),
    (
        "dst range beyond its VMA",
        "errno::range_beyond_its_vma_is_invalid",
        "EINVAL / -22",
    ),
    (
        "dst range spans two VMAs",
        "errno::dst_range_spanning_two_vmas_is_invalid",
        "EINVAL / -22",
    ),
    (
        "PROT mismatch",
        "errno::prot_mismatch_is_invalid",
        "EINVAL / -22",
    ),
    (
        "src MAP_SHARED|ANON",
        "errno::shared_anonymous_src_is_invalid",
        "EINVAL / -22",
    ),
    (
        "mlock mismatch",
        "errno::mlock_mismatch_is_invalid",
        "EINVAL / -22",
    ),
    ("zero-page src", "errno::zero_page_src_moves", "0 / 4096"),
    (
        "COW-shared with live child",
        "fork::cow_shared_with_live_child_is_busy",
        "EBUSY / -16",
    ),
    (
        "after child exit, before write",
        "fork::after_child_exit_busy_until_written",
        "EBUSY / -16",
    ),
    (
        "after child exit, after write",
        "fork::after_child_exit_busy_until_written",
        "0 / 8192",
    ),
    (
        "MADV_DONTFORK",
        "fork::dontfork_src_moves_with_live_child",
        "0 / 8192",
    ),
    (
        "child using parent's uffd",
        "fork::uffd_used_from_forked_child_is_invalid",
        "EINVAL / untouched",
    ),
    (
        "same-VMA overlap upward",
        "errno::same_vma_overlap_upward_is_exists",
        "EEXIST / -17",
    ),
    (
        "same-VMA overlap downward",
        "errno::same_vma_overlap_downward_moves",
        "0 / 8192",
    ),
    (
        "THP 2 MiB aligned",
        "thp::thp_2m_aligned_moves_whole_pmd",
        "0 / 2097152",
    ),
    (
        "THP 4 MiB aligned",
        "thp::thp_4m_aligned_moves_whole_pmds",
        "0 / 4194304",
    ),
    (
        "THP unaligned (+4 KiB)",
        "thp::thp_to_unaligned_dst_splits_and_moves",
        "0 / 2097152",
    ),
    ("huge zero page", "thp::huge_zero_page_moves", "0 / 2097152"),
    (
        "src THP, len 1 MiB",
        "thp::thp_src_half_length_moves",
        "0 / 1048576",
    ),
    (
        "8 paged-out pages",
        "errno::swapped_out_pages_move_without_swap_in",
        "0 / 32768",
    ),
    (
        "dst WP marker",
        "errno::dst_wp_marker_is_exists",
        "EEXIST / -17",
    ),
    (
        "src guard region",
        "errno::src_guard_region_is_fault_even_with_allow_src_holes",
        "EFAULT / -14",
    ),
    (
        "pending EVENT_REMOVE",
        "selftest::mmap_changing_move_returns_events_pending",
        "EAGAIN / -11",
    ),
    (
        "dst registered WP-only",
        "errno::dst_registered_wp_only_moves",
        "0 / 8192",
    ),
    (
        "src also registered",
        "errno::src_also_registered_moves",
        "0 / 8192",
    ),
    (
        "UFFD_USER_MODE_ONLY fd with features=MOVE",
        "errno::user_mode_only_fd_with_move_feature_moves",
        "0 / 4096",
    ),
    (
        "second UFFDIO_API",
        "errno::second_api_is_invalid",
        "EINVAL",
    ),
];

#[test]
fn every_handwritten_expectation_is_the_oracles_and_the_kernels() {
    // Swap held for the run: the swap cases (and swap-out steps) run, not skip.
    require!(Need::Move, Need::Swap);
    if run_in_child() {
        return;
    }
    let (h, m) = harness();
    let report = cases::run_all(&h, &m).unwrap();
    let mut checked = 0;
    for (name, test, want) in HANDWRITTEN {
        let c = report
            .cases
            .iter()
            .find(|c| c.name == *name)
            .unwrap_or_else(|| panic!("no conformance case {name:?}"));
        if let Some(why) = &c.skipped {
            test_support::skip(name, why.trim_start_matches("needs "));
            continue;
        }
        assert!(
            c.expected.iter().any(|e| e == want),
            "{name}: {test} asserts {want}, the oracle ({}) expects {:?}",
            m.behaviour.name,
            c.expected
        );
        assert_eq!(
            c.kernel.as_deref(),
            Some(*want),
            "{name}: {test} asserts {want}"
        );
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} rows cross-checked");
}
