//! Tests of `remap::region`, against the real kernel.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use remap::inspect::{self, PageState, Pagemap};
use remap::pattern::{pattern_word, Mismatch};
use remap::region::{Region, RegionError, Thp, HUGE_PAGE_SIZE};
use test_support::{require, Need};

fn page() -> usize {
    rustix::param::page_size()
}

#[test]
fn rejects_zero_and_unaligned_lengths() {
    assert_eq!(Region::new(0).unwrap_err(), RegionError::ZeroLength);
    assert_eq!(
        Region::new(page() + 1).unwrap_err(),
        RegionError::UnalignedLength {
            len: page() + 1,
            page_size: page()
        }
    );
    assert!(matches!(
        Region::builder(usize::MAX - page() + 1)
            .huge_aligned(true)
            .build(),
        Err(RegionError::TooLarge { .. })
    ));
}

#[test]
fn geometry_and_address_helpers() {
    let region = Region::new(5 * page()).unwrap();
    assert_eq!(region.addr() % page(), 0);
    assert_eq!(region.as_ptr() as usize, region.addr());
    assert_eq!(region.len(), 5 * page());
    assert!(!region.is_empty());
    assert_eq!(region.pages(), 5);
    assert_eq!(region.page_size(), page());
    assert_eq!(region.page_addr(3), region.addr() + 3 * page());
    assert!(region.contains(region.addr()));
    assert!(region.contains(region.addr() + region.len() - 1));
    assert!(!region.contains(region.addr() + region.len()));
    assert!(!region.contains(region.addr() - 1));
    assert_eq!(region.offset_of(region.addr() + 17), Some(17));
    assert_eq!(region.offset_of(region.addr() + region.len()), None);
    assert_eq!(region.range(), region.addr()..region.addr() + 5 * page());
    // The kernel has the whole region mapped.
    let vma = inspect::mapping_range(region.addr()).unwrap().unwrap();
    assert!(vma.start <= region.addr() && vma.end >= region.addr() + region.len());
}

#[test]
#[should_panic(expected = "out of range")]
fn page_addr_past_the_end_panics() {
    let region = Region::new(2 * page()).unwrap();
    region.page_addr(2);
}

#[test]
fn huge_aligned_regions_are_aligned_and_fully_mapped() {
    for len in [page(), HUGE_PAGE_SIZE, 3 * HUGE_PAGE_SIZE + 5 * page()] {
        let region = Region::builder(len).huge_aligned(true).build().unwrap();
        assert_eq!(region.addr() % HUGE_PAGE_SIZE, 0, "len {len:#x}");
        assert_eq!(region.len(), len);
        let vma = inspect::mapping_range(region.addr()).unwrap().unwrap();
        assert!(vma.end >= region.addr() + len, "len {len:#x}: {vma:x?}");
        // The whole region is usable.
        region.write_u64(len - 8, 7);
        assert_eq!(region.read_u64(len - 8), 7);
    }
}

#[test]
fn thp_huge_region_is_mapped_by_a_thp() {
    require!(Need::Thp);
    let region = Region::builder(2 * HUGE_PAGE_SIZE)
        .huge_aligned(true)
        .thp(Thp::Huge)
        .populate(true)
        .build()
        .unwrap();
    assert_eq!(region.thp(), Thp::Huge);
    let vma = inspect::vma_info(region.addr()).unwrap();
    assert!(vma.has_flag("hg"), "VmFlags {:?}", vma.vm_flags);
    assert!(inspect::is_thp_mapped(region.addr()).unwrap());
    assert!(inspect::is_thp_mapped(region.addr() + HUGE_PAGE_SIZE + 5 * page()).unwrap());
    assert_eq!(
        inspect::anon_huge_bytes(region.addr()).unwrap(),
        2 * HUGE_PAGE_SIZE as u64
    );
}

#[test]
fn thp_nohuge_region_is_not_mapped_by_a_thp() {
    let region = Region::builder(HUGE_PAGE_SIZE)
        .huge_aligned(true)
        .thp(Thp::NoHuge)
        .populate(true)
        .build()
        .unwrap();
    let vma = inspect::vma_info(region.addr()).unwrap();
    assert!(vma.has_flag("nh"), "VmFlags {:?}", vma.vm_flags);
    // Every page is there, but as small pages.
    let counts = Pagemap::open()
        .unwrap()
        .counts(region.addr(), region.pages())
        .unwrap();
    assert_eq!(counts.present, region.pages());
    assert!(!inspect::is_thp_mapped(region.addr()).unwrap());
    assert_eq!(inspect::anon_huge_bytes(region.addr()).unwrap(), 0);
}

#[test]
fn drop_unmaps_the_region() {
    // Other test threads may map memory into the freed range at any time, so check that no
    // single mapping still covers the whole (large, unpopulated) region, and retry a few times.
    let len = 64 << 20;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let region = Region::builder(len).huge_aligned(true).build().unwrap();
        let addr = region.addr();
        let before = inspect::mapping_range(addr).unwrap().unwrap();
        assert!(before.start <= addr && before.end >= addr + len);
        drop(region);
        match inspect::mapping_range(addr).unwrap() {
            None => return,
            Some(r) if r.start > addr || r.end < addr + len => return,
            Some(r) => seen.push(r),
        }
    }
    panic!("dropped regions still mapped: {seen:x?}");
}

#[test]
fn dontfork_is_on_by_default() {
    let region = Region::new(page()).unwrap();
    assert!(region.dontfork());
    let vma = inspect::vma_info(region.addr()).unwrap();
    assert!(vma.has_flag("dc"), "VmFlags {:?}", vma.vm_flags);
}

#[test]
fn dontfork_can_be_turned_off_and_on() {
    let mut region = Region::builder(page()).dontfork(false).build().unwrap();
    assert!(!region.dontfork());
    let vma = inspect::vma_info(region.addr()).unwrap();
    assert!(!vma.has_flag("dc"), "VmFlags {:?}", vma.vm_flags);

    region.set_dontfork(true).unwrap();
    assert!(region.dontfork());
    assert!(inspect::vma_info(region.addr()).unwrap().has_flag("dc"));
    region.set_dontfork(false).unwrap();
    assert!(!inspect::vma_info(region.addr()).unwrap().has_flag("dc"));
}

#[test]
fn volatile_words_bytes_copies_and_fills() {
    let region = Region::new(2 * page()).unwrap();
    assert_eq!(region.read_u64(0), 0, "fresh anonymous memory reads zero");

    region.write_u64(page() - 8, 0x0123_4567_89ab_cdef);
    assert_eq!(region.read_u64(page() - 8), 0x0123_4567_89ab_cdef);
    assert_eq!(
        region.read_u8(page() - 8),
        0xef,
        "little-endian low byte first"
    );
    region.write_u8(page(), 0x5a);
    assert_eq!(region.read_u8(page()), 0x5a);

    // A copy that straddles the page boundary.
    let data: Vec<u8> = (0..64u8).collect();
    region.copy_in(page() - 32, &data);
    let mut out = vec![0u8; 64];
    region.copy_out(page() - 32, &mut out);
    assert_eq!(out, data);

    region.fill(10, 100, 0xee);
    assert_eq!(region.read_u8(9), 0);
    assert_eq!(region.read_u8(10), 0xee);
    assert_eq!(region.read_u8(109), 0xee);
    assert_eq!(region.read_u8(110), 0);
}

#[test]
#[should_panic(expected = "outside the region")]
fn read_past_the_end_panics() {
    let region = Region::new(page()).unwrap();
    region.read_u64(page() - 4);
}

#[test]
#[should_panic(expected = "not 8-byte aligned")]
fn misaligned_u64_panics() {
    let region = Region::new(page()).unwrap();
    region.write_u64(4, 1);
}

#[test]
#[should_panic(expected = "outside the region")]
fn copy_in_past_the_end_panics() {
    let region = Region::new(page()).unwrap();
    region.copy_in(page() - 1, &[1, 2]);
}

#[test]
fn pattern_round_trip_and_mismatch_report() {
    let region = Region::new(4 * page()).unwrap();
    remap::pattern::fill(&region, 99);
    assert_eq!(remap::pattern::verify(&region, 99), Ok(()));
    assert_eq!(region.read_u64(8), pattern_word(99, 0, 1));
    assert_eq!(region.read_u64(2 * page()), pattern_word(99, 2, 0));
    assert!(
        remap::pattern::verify(&region, 98).is_err(),
        "another seed must not verify"
    );

    let off = 3 * page() + 16;
    region.write_u64(off, 0);
    assert_eq!(
        remap::pattern::verify(&region, 99),
        Err(Mismatch {
            offset: off,
            expected: pattern_word(99, 3, 2),
            found: 0
        })
    );
    assert_eq!(remap::pattern::verify_page(&region, 2, 99, 2), Ok(()));
}

#[test]
fn pattern_verifies_at_a_destination_page() {
    let src = Region::new(3 * page()).unwrap();
    let dst = Region::new(page()).unwrap();
    remap::pattern::fill(&src, 5);
    let mut buf = vec![0u8; page()];
    src.copy_out(2 * page(), &mut buf);
    dst.copy_in(0, &buf);
    assert_eq!(remap::pattern::verify_page(&dst, 0, 5, 2), Ok(()));
    assert!(remap::pattern::verify_page(&dst, 0, 5, 1).is_err());

    remap::pattern::fill_page(&dst, 0, 6, 40);
    assert_eq!(remap::pattern::verify_page(&dst, 0, 6, 40), Ok(()));
}

#[test]
fn madvise_dontneed_drops_pages() {
    let region = Region::builder(4 * page()).populate(true).build().unwrap();
    remap::pattern::fill(&region, 1);
    region.madvise_dontneed(page()..3 * page()).unwrap();
    let states = Pagemap::open()
        .unwrap()
        .states(region.addr(), region.pages())
        .unwrap();
    assert!(states[0].is_present());
    assert_eq!(states[1], PageState::Absent);
    assert_eq!(states[2], PageState::Absent);
    assert!(states[3].is_present());
    assert_eq!(remap::pattern::verify_page(&region, 0, 1, 0), Ok(()));
    assert_eq!(region.read_u64(page()), 0);
    assert_eq!(remap::pattern::verify_page(&region, 3, 1, 3), Ok(()));
}

#[test]
fn advice_helpers_reject_bad_ranges() {
    let region = Region::new(2 * page()).unwrap();
    for range in [1..page(), 0..page() + 1, 0..3 * page()] {
        assert_eq!(
            region.madvise_dontneed(range.clone()),
            Err(RegionError::BadRange {
                start: range.start,
                end: range.end,
                region_len: 2 * page()
            })
        );
    }
    assert!(
        region.pageout(page()..page()).is_ok(),
        "an empty range is fine"
    );
}

#[test]
fn populate_write_and_touch_fault_pages_in_without_changing_them() {
    let region = Region::new(4 * page()).unwrap();
    let pagemap = Pagemap::open().unwrap();
    assert_eq!(pagemap.counts(region.addr(), 4).unwrap().absent, 4);

    region.populate_write(0..2 * page()).unwrap();
    let counts = pagemap.counts(region.addr(), 4).unwrap();
    assert_eq!((counts.present, counts.exclusive, counts.absent), (2, 2, 2));

    region.write_u8(0, 3);
    region.touch(0..4 * page()).unwrap();
    assert_eq!(pagemap.counts(region.addr(), 4).unwrap().exclusive, 4);
    assert_eq!(region.read_u8(0), 3, "touch keeps contents");
}

/// Threads writing disjoint bytes that share 8-byte words (unaligned heads and tails of
/// `copy_in` and `fill`, and `write_u8`) never undo each other's bytes: the partial words are
/// merged with compare-and-swap, not a load-modify-store that could write back a stale byte.
/// Each thread checks right after every write that its own bytes hold what it wrote.
#[test]
fn concurrent_writes_to_disjoint_bytes_of_shared_words_are_not_lost() {
    let region = Region::builder(page()).populate(true).build().unwrap();
    let threads = 4;
    let rounds = 20_000u32;
    // Thread t owns bytes 8k + 2t and 8k + 2t + 1 of words k = 0..16.
    std::thread::scope(|s| {
        for t in 0..threads {
            let region = &region;
            s.spawn(move || {
                for round in 0..rounds {
                    let v = u8::try_from(round % 251).unwrap() + 1;
                    for k in 0..16 {
                        let off = 8 * k + 2 * t;
                        match round % 3 {
                            0 => region.copy_in(off, &[v, v]),
                            1 => region.fill(off, 2, v),
                            _ => {
                                region.write_u8(off, v);
                                region.write_u8(off + 1, v);
                            }
                        }
                        let mut got = [0u8; 2];
                        region.copy_out(off, &mut got);
                        assert_eq!(got, [v, v], "thread {t} round {round} word {k}");
                    }
                }
            });
        }
    });
}

/// Sets the flag when dropped: a failing reader stops the writer instead of leaving the scope
/// waiting for it forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A writer alternating two `copy_in`s of a page whose words are all-`0x11` or all-`0x22`, and a
/// reader: every aligned word `copy_out` reads is one the writer stored whole, never a mix of the
/// two. This fails if either side copies a word in parts (bytes, halves: the partial-word merge
/// used for the body, say), which tears on any CPU. It cannot see a plain, non-atomic 8-byte copy
/// (on x86-64 an aligned 8-byte access never tears): that would be a data race in Rust's model,
/// excluded by construction, since region memory is only reached through the module's 8-byte
/// atomic helpers. The reader goes on until the writer has run at least 200 rounds, so the two
/// really overlap.
#[test]
fn copy_out_never_mixes_the_bytes_of_two_copy_ins_within_a_word() {
    let region = Region::builder(page()).populate(true).build().unwrap();
    let a = vec![0x11u8; page()];
    let b = vec![0x22u8; page()];
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    std::thread::scope(|s| {
        let _stop_writer = StopOnDrop(&stop);
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                region.copy_in(0, &a);
                region.copy_in(0, &b);
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut out = vec![0u8; page()];
        let mut reads = 0u64;
        while reads < 2000 || rounds.load(Ordering::Relaxed) < 200 {
            assert!(Instant::now() < deadline, "the writer made no progress");
            region.copy_out(0, &mut out);
            reads += 1;
            for (i, word) in out.chunks_exact(8).enumerate() {
                assert!(
                    word.iter().all(|&x| x == word[0]) && [0, 0x11, 0x22].contains(&word[0]),
                    "word {i} torn: {word:x?} (read {reads}, writer round {})",
                    rounds.load(Ordering::Relaxed)
                );
            }
        }
    });
}
