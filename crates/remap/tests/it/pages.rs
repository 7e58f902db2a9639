//! Tests of `remap::region::PageRange`, the checked page ranges and the userfaultfd operations on
//! them, against the real kernel.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use remap::inspect::Pagemap;
use remap::pattern;
use remap::region::{Region, RegionError, Thp};
use test_support::{require, Need};
use uffd::{CopyFlags, MoveFlags, RangeError, RegisterMode, Uffd, ZeropageFlags};

fn page() -> usize {
    rustix::param::page_size()
}

#[test]
fn page_ranges_are_checked_once_when_made() {
    let p = page();
    let region = Region::new(4 * p).unwrap();
    let range = region.page_range(p..3 * p).unwrap();
    assert_eq!(range.offset(), p);
    assert_eq!(range.len(), 2 * p);
    assert_eq!(range.pages(), 2);
    assert_eq!(range.addr(), region.addr() + p);
    assert_eq!(range.as_ptr() as usize, range.addr());
    assert_eq!(range.offsets(), p..3 * p);
    assert!(std::ptr::eq(range.region(), &region));
    assert!(region.page_range(2 * p..2 * p).unwrap().is_empty());
    for bad in [1..p, 0..p + 1, 3 * p..5 * p, 0..usize::MAX] {
        assert_eq!(
            region.page_range(bad.clone()).unwrap_err(),
            RegionError::BadRange {
                start: bad.start,
                end: bad.end,
                region_len: 4 * p
            }
        );
    }
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 2 * p..p;
    assert!(region.page_range(reversed).is_err());
    // Sub-ranges are relative to the range and stay inside it.
    assert_eq!(range.get(p..2 * p).unwrap().offset(), 2 * p);
    assert!(range.get(p..3 * p).is_none());
    assert!(range.get(1..p).is_none());
    assert_eq!(region.all_pages().len(), 4 * p);
}

#[test]
fn move_copy_zero_and_wake_take_the_destination_first() {
    require!(Need::Move);
    let p = page();
    let uffd = Uffd::new().unwrap();
    let src = Region::builder(4 * p)
        .thp(Thp::NoHuge)
        .populate(true)
        .build()
        .unwrap();
    let dst = Region::builder(4 * p).thp(Thp::NoHuge).build().unwrap();
    let ioctls = dst
        .all_pages()
        .register(&uffd, RegisterMode::MISSING)
        .unwrap();
    assert!(ioctls.contains(uffd::Ioctls::MOVE));
    pattern::fill(&src, 5);

    // MOVE: source pages 2..4 into destination pages 0..2.
    let to = dst.page_range(0..2 * p).unwrap();
    let from = src.page_range(2 * p..4 * p).unwrap();
    assert_eq!(to.move_from(&uffd, from, MoveFlags::empty()), Ok(2 * p));
    assert_eq!(pattern::verify_page(&dst, 0, 5, 2), Ok(()));
    assert_eq!(pattern::verify_page(&dst, 1, 5, 3), Ok(()));
    assert_eq!(src.read_u64(2 * p), 0, "the page left the source");
    // Moving onto present pages: EEXIST, nothing done.
    let again = src.page_range(0..2 * p).unwrap();
    assert_eq!(
        to.move_from(&uffd, again, MoveFlags::empty()),
        Err(RangeError::Exists { done: 0 })
    );
    // Lengths that differ are refused without an ioctl.
    assert_eq!(
        to.move_from(&uffd, src.page_range(0..p).unwrap(), MoveFlags::empty()),
        Err(RangeError::Invalid { done: 0 })
    );

    // COPY from another region: destination page 2 gets source page 0's contents.
    let page2 = dst.page_range(2 * p..3 * p).unwrap();
    assert_eq!(
        page2.copy_from(&uffd, src.page_range(0..p).unwrap(), CopyFlags::empty()),
        Ok(p)
    );
    assert_eq!(pattern::verify_page(&dst, 2, 5, 0), Ok(()));
    assert_eq!(
        pattern::verify_page(&src, 0, 5, 0),
        Ok(()),
        "COPY only reads"
    );

    // ZEROPAGE on the last page, then WAKE (nobody waits: still succeeds).
    let page3 = dst.page_range(3 * p..4 * p).unwrap();
    assert_eq!(page3.zero(&uffd, ZeropageFlags::empty()), Ok(p));
    assert_eq!(
        page3.zero(&uffd, ZeropageFlags::empty()),
        Err(RangeError::Exists { done: 0 })
    );
    page3.wake(&uffd).unwrap();
    assert_eq!(dst.read_u64(3 * p), 0);
    dst.all_pages().unregister(&uffd).unwrap();
}

#[test]
fn copy_from_slice_installs_contents_into_a_registered_page_once() {
    require!(Need::Uffd);
    let p = page();
    let uffd = Uffd::new().unwrap();
    let dst = Region::new(2 * p).unwrap();
    dst.all_pages()
        .register(&uffd, RegisterMode::MISSING)
        .unwrap();
    let page1 = dst.page_range(p..2 * p).unwrap();
    let contents: Vec<u8> = (0..=250u8).cycle().take(p).collect();
    assert_eq!(
        page1.copy_from_slice(&uffd, &contents, CopyFlags::empty()),
        Ok(p)
    );
    let mut out = vec![0u8; p];
    dst.copy_out(p, &mut out);
    assert_eq!(out, contents);
    // Already present: EEXIST, the errno kept, the page unchanged.
    let err = page1
        .copy_from_slice(&uffd, &vec![9u8; p], CopyFlags::empty())
        .unwrap_err();
    assert_eq!(err, RangeError::Exists { done: 0 });
    assert_eq!(err.errno(), uffd::Errno::EXIST);
    dst.copy_out(p, &mut out);
    assert_eq!(out, contents);
    // A slice of the wrong length: refused before any ioctl.
    assert_eq!(
        dst.page_range(0..p).unwrap().copy_from_slice(
            &uffd,
            &contents[..p / 2],
            CopyFlags::empty()
        ),
        Err(RangeError::Invalid { done: 0 })
    );
    // An unregistered destination: the kernel finds no registered VMA (ENOENT on 6.18).
    let unregistered = Region::new(p).unwrap();
    assert_eq!(
        unregistered
            .all_pages()
            .copy_from_slice(&uffd, &contents, CopyFlags::empty())
            .map_err(|e| e.errno()),
        Err(uffd::Errno::NOENT)
    );
}

#[test]
fn populated_answers_without_touching_a_registered_missing_page() {
    require!(Need::Uffd);
    let p = page();
    let uffd = Uffd::new().unwrap();
    let region = Region::new(3 * p).unwrap();
    region
        .all_pages()
        .register(&uffd, RegisterMode::MISSING)
        .unwrap();
    region
        .page_range(p..2 * p)
        .unwrap()
        .copy_from_slice(&uffd, &vec![1u8; p], CopyFlags::empty())
        .unwrap();
    // Nobody serves this fd's faults: touching page 0 or 2 would block for ever. Ask from another
    // thread and give up after a while, so a regression fails instead of hanging.
    let shared = Arc::new(region);
    let (tx, rx) = mpsc::channel();
    let asker = Arc::clone(&shared);
    std::thread::spawn(move || {
        let pagemap = Pagemap::open().unwrap();
        let _ = tx.send(asker.all_pages().populated(&pagemap).unwrap());
    });
    let populated = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("populated() blocked on a missing page");
    assert_eq!(populated, [false, true, false]);
    let region = &*shared;
    let all = region.all_pages();
    let pagemap = Pagemap::open().unwrap();
    assert_eq!(all.populated(&pagemap).unwrap(), [false, true, false]);
    assert_eq!(
        region
            .page_range(p..2 * p)
            .unwrap()
            .populated(&pagemap)
            .unwrap(),
        [true]
    );
    // A zero page counts as populated too.
    region
        .page_range(2 * p..3 * p)
        .unwrap()
        .zero(&uffd, ZeropageFlags::empty())
        .unwrap();
    assert_eq!(all.populated(&pagemap).unwrap(), [false, true, true]);
    all.unregister(&uffd).unwrap();
}
