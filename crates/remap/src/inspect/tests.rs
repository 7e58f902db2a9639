//! Unit tests of the `/proc` parsers and of the smaps-only THP check.

use super::*;
use crate::region::{Region, Thp, HUGE_PAGE_SIZE};

#[test]
fn parses_mapping_headers() {
    assert_eq!(
        parse_header("7f0000000000-7f0000200000 rw-p 00000000 00:00 0"),
        Some(0x7f00_0000_0000..0x7f00_0020_0000)
    );
    assert_eq!(
        parse_header("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]"),
        Some(0xffff_ffff_ff60_0000..0xffff_ffff_ff60_1000)
    );
    assert_eq!(parse_header("AnonHugePages:      2048 kB"), None);
    assert_eq!(parse_header("VmFlags: rd wr mr mw me dc ac"), None);
}

#[test]
fn parses_kilobyte_values() {
    let line = "AnonHugePages:      2048 kB";
    let (_, rest) = line.split_once(':').unwrap();
    assert_eq!(parse_kb(line, rest).unwrap(), 2048 * 1024);
    assert!(matches!(
        parse_kb("Rss: lots", " lots"),
        Err(InspectError::Parse { path: SMAPS, .. })
    ));
    assert!(parse_kb("Rss: 12 MB", " 12 MB").is_err());
}

#[test]
fn smaps_fallback_detects_thp_and_its_absence() {
    test_support::require!(test_support::Need::Thp);
    let huge = Region::builder(HUGE_PAGE_SIZE)
        .huge_aligned(true)
        .thp(Thp::Huge)
        .populate(true)
        .build()
        .unwrap();
    assert!(is_thp_mapped_with(huge.addr(), false).unwrap());
    let small = Region::builder(HUGE_PAGE_SIZE)
        .huge_aligned(true)
        .thp(Thp::NoHuge)
        .populate(true)
        .build()
        .unwrap();
    assert!(!is_thp_mapped_with(small.addr(), false).unwrap());
}
