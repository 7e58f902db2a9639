//! Tests of `remap::inspect`, against the real kernel.

use remap::inspect::{
    self, InspectError, PageState, Pagemap, KPF_COMPOUND_HEAD, KPF_THP, PM_EXCLUSIVE, PM_PRESENT,
    PM_SWAPPED,
};
use remap::region::{Region, Thp, HUGE_PAGE_SIZE};
use test_support::{require, Need};

fn page() -> usize {
    rustix::param::page_size()
}

#[test]
fn decodes_pagemap_entries() {
    assert_eq!(PageState::from_entry(0), PageState::Absent);
    assert_eq!(
        PageState::from_entry(PM_SWAPPED | 0x7_0001),
        PageState::Swapped
    );
    assert_eq!(
        PageState::from_entry(PM_PRESENT),
        PageState::Present {
            exclusive: false,
            pfn: None
        }
    );
    assert_eq!(
        PageState::from_entry(PM_PRESENT | PM_EXCLUSIVE | (1 << 55) | 0x1234),
        PageState::Present {
            exclusive: true,
            pfn: Some(0x1234)
        }
    );
}

#[test]
fn untouched_pages_are_absent_and_written_pages_present_exclusive() {
    let region = Region::builder(8 * page())
        .thp(Thp::NoHuge)
        .build()
        .unwrap();
    let pagemap = Pagemap::open().unwrap();
    assert!(pagemap
        .states(region.addr(), 8)
        .unwrap()
        .iter()
        .all(|s| *s == PageState::Absent));

    region.write_u8(2 * page(), 1);
    region.write_u64(5 * page() + 64, 2);
    let states = pagemap.states(region.addr(), 8).unwrap();
    for (i, state) in states.iter().enumerate() {
        if i == 2 || i == 5 {
            assert!(
                matches!(
                    state,
                    PageState::Present {
                        exclusive: true,
                        ..
                    }
                ),
                "page {i}: {state:?}"
            );
        } else {
            assert_eq!(*state, PageState::Absent, "page {i}");
        }
    }
    let counts = pagemap.counts(region.addr(), 8).unwrap();
    assert_eq!(
        (
            counts.present,
            counts.exclusive,
            counts.swapped,
            counts.absent
        ),
        (2, 2, 0, 6)
    );
    assert_eq!(pagemap.state(region.page_addr(5) + 100).unwrap(), states[5]);
}

#[test]
fn read_fault_maps_the_shared_zero_page() {
    let region = Region::builder(page()).thp(Thp::NoHuge).build().unwrap();
    assert_eq!(region.read_u64(0), 0);
    let state = Pagemap::open().unwrap().state(region.addr()).unwrap();
    assert!(
        matches!(
            state,
            PageState::Present {
                exclusive: false,
                ..
            }
        ),
        "{state:?}"
    );
}

#[test]
fn dontneed_makes_pages_absent() {
    let region = Region::builder(4 * page()).populate(true).build().unwrap();
    let pagemap = Pagemap::open().unwrap();
    assert_eq!(pagemap.counts(region.addr(), 4).unwrap().present, 4);
    region.madvise_dontneed(0..4 * page()).unwrap();
    assert_eq!(pagemap.counts(region.addr(), 4).unwrap().absent, 4);
}

#[test]
fn pageout_with_swap_makes_pages_swapped() {
    require!(Need::Swap);
    let pages = 16;
    let region = Region::builder(pages * page())
        .thp(Thp::NoHuge)
        .populate(true)
        .build()
        .unwrap();
    remap::pattern::fill(&region, 3);
    let pagemap = Pagemap::open().unwrap();
    // Reclaim can skip a page it finds busy: ask a few times.
    let mut counts = pagemap.counts(region.addr(), pages).unwrap();
    for _ in 0..5 {
        region.pageout(0..pages * page()).unwrap();
        counts = pagemap.counts(region.addr(), pages).unwrap();
        if counts.swapped == pages {
            break;
        }
    }
    assert_eq!(counts.swapped, pages, "{counts:?}");
    assert!(inspect::vma_info(region.addr()).unwrap().swap_bytes >= (pages * page()) as u64);

    // Reading swaps the data back in, intact.
    assert_eq!(remap::pattern::verify(&region, 3), Ok(()));
    assert_eq!(pagemap.counts(region.addr(), pages).unwrap().swapped, 0);
}

#[test]
fn pfns_are_visible_as_root() {
    require!(Need::Root);
    let region = Region::builder(2 * page()).populate(true).build().unwrap();
    let states = Pagemap::open().unwrap().states(region.addr(), 2).unwrap();
    let pfn = |s: PageState| match s {
        PageState::Present { pfn, .. } => pfn,
        other => panic!("not present: {other:?}"),
    };
    let (a, b) = (pfn(states[0]), pfn(states[1]));
    assert!(a.is_some() && b.is_some(), "{states:?}");
    assert_ne!(a, b);
}

#[test]
fn kpageflags_mark_a_thp_head() {
    require!(Need::Root, Need::Thp);
    let region = Region::builder(HUGE_PAGE_SIZE)
        .huge_aligned(true)
        .thp(Thp::Huge)
        .populate(true)
        .build()
        .unwrap();
    let Ok(PageState::Present { pfn: Some(pfn), .. }) =
        Pagemap::open().unwrap().state(region.addr())
    else {
        panic!("THP head not present with a PFN");
    };
    let flags = inspect::kpageflags(pfn).unwrap();
    assert_eq!(
        flags & (KPF_THP | KPF_COMPOUND_HEAD),
        KPF_THP | KPF_COMPOUND_HEAD,
        "kpageflags {flags:#x}"
    );
}

#[test]
fn split_thp_is_not_reported_as_thp() {
    require!(Need::Thp);
    let region = Region::builder(HUGE_PAGE_SIZE)
        .huge_aligned(true)
        .thp(Thp::Huge)
        .populate(true)
        .build()
        .unwrap();
    assert!(inspect::is_thp_mapped(region.addr()).unwrap());
    // Zapping one 4 KiB page splits the PMD.
    region.madvise_dontneed(page()..2 * page()).unwrap();
    assert!(!inspect::is_thp_mapped(region.addr()).unwrap());
}

#[test]
fn vma_info_reports_sizes_and_flags() {
    let region = Region::builder(4 * page())
        .thp(Thp::Huge)
        .populate(true)
        .build()
        .unwrap();
    let vma = inspect::vma_info(region.addr() + 3 * page()).unwrap();
    assert!(vma.range.start <= region.addr() && vma.range.end >= region.addr() + region.len());
    assert!(vma.rss_bytes >= (4 * page()) as u64, "{vma:?}");
    assert!(
        vma.has_flag("hg") && vma.has_flag("dc") && vma.has_flag("rd"),
        "{vma:?}"
    );
    assert!(!vma.has_flag("nh"));
}

#[test]
fn unmapped_addresses_are_reported() {
    assert!(matches!(
        inspect::vma_info(0),
        Err(InspectError::NotMapped { addr: 0 })
    ));
    assert!(matches!(
        inspect::is_thp_mapped(0),
        Err(InspectError::NotMapped { addr: 0 })
    ));
    assert_eq!(inspect::mapping_range(0).unwrap(), None);
}
