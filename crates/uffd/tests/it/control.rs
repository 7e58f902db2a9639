//! What `UFFDIO_REGISTER` and `UFFDIO_UNREGISTER` answer for unmapped and partly mapped ranges
//! on the running kernel, which their docs (and `ControlError`'s) must say. Each test that makes
//! a hole runs in a child process of its own (`run_in_child`), so no other test's `mmap(2)` can
//! land in the hole and be registered by mistake.

use test_support::mem::{self, Mapping};
use test_support::{require, Need};
use uffd::{ControlOp, Errno, RegisterMode};

use crate::{new_uffd, page, run_in_child};

/// Three mapped pages with the middle one unmapped: `[mapped][hole][mapped]`.
fn with_hole_in_the_middle() -> Mapping {
    let m = Mapping::new(3 * page()).unwrap();
    // SAFETY: page 1 lies inside `m`, which this test owns and which nothing refers to; the
    // rest of `m` stays mapped and is unmapped on drop (unmapping a hole is not an error).
    let rc = unsafe { libc::munmap(m.page(1).cast(), page()) };
    assert_eq!(rc, 0, "munmap: {}", std::io::Error::last_os_error());
    m
}

/// Whether `[start, start + len)` is registered with some userfaultfd: a second one is refused
/// with EBUSY there (and may register it otherwise; it is dropped, which unregisters).
fn registered_elsewhere(start: *mut u8, len: usize) -> bool {
    match new_uffd().register(start, len, RegisterMode::MISSING) {
        Ok(_) => false,
        Err(err) if err.errno == Errno::BUSY => true,
        Err(err) => panic!("probing registration: {err}"),
    }
}

#[test]
fn register_and_unregister_of_an_unmapped_range_are_einval() {
    require!(Need::Uffd);
    let uffd = new_uffd();
    let hole = mem::unmapped_range(page());
    let err = uffd
        .register(hole, page(), RegisterMode::MISSING)
        .unwrap_err();
    assert_eq!((err.op, err.errno), (ControlOp::Register, Errno::INVAL));
    let err = uffd.unregister(hole, page()).unwrap_err();
    assert_eq!((err.op, err.errno), (ControlOp::Unregister, Errno::INVAL));
    // An empty range, mapped or not.
    let m = Mapping::new(page()).unwrap();
    let err = uffd
        .register(m.as_ptr(), 0, RegisterMode::MISSING)
        .unwrap_err();
    assert_eq!(err.errno, Errno::INVAL);
    assert_eq!(
        uffd.unregister(m.as_ptr(), 0).unwrap_err().errno,
        Errno::INVAL
    );
}

#[test]
fn register_of_a_partly_mapped_range_registers_the_mapped_parts() {
    require!(Need::Uffd);
    if run_in_child() {
        return;
    }
    let uffd = new_uffd();
    let m = with_hole_in_the_middle();
    // Only the hole: no VMA at all.
    let err = uffd
        .register(m.page(1), page(), RegisterMode::MISSING)
        .unwrap_err();
    assert_eq!(err.errno, Errno::INVAL);
    // Hole in the middle, at the start, at the end: accepted, and the mapped pages are registered.
    for (start, pages) in [(0, 3), (1, 2), (0, 2)] {
        uffd.register(m.page(start), pages * page(), RegisterMode::MISSING)
            .unwrap_or_else(|err| panic!("registering pages {start}..+{pages}: {err}"));
        for mapped in [0, 2]
            .into_iter()
            .filter(|&i| i >= start && i < start + pages)
        {
            assert!(
                registered_elsewhere(m.page(mapped), page()),
                "page {mapped} not registered after registering pages {start}..+{pages}"
            );
        }
        uffd.unregister(m.page(start), pages * page())
            .unwrap_or_else(|err| panic!("unregistering pages {start}..+{pages}: {err}"));
        assert!(!registered_elsewhere(m.as_ptr(), page()));
        assert!(!registered_elsewhere(m.page(2), page()));
    }
}
