//! Unit tests of the mapping code's cleanup path, with unmap failures injected through the seam
//! of `trim_to_huge_aligned`.
//!
//! Each test runs in a child process of its own (this binary re-run on that one test, with a
//! timeout): the test frees address ranges and then checks what is mapped there, which another
//! test thread's `mmap(2)` could otherwise change in between.

use std::time::Duration;

use super::*;

/// Re-runs the calling test alone in a child process (see the module docs).
fn run_in_child() -> bool {
    test_support::child::run_in_child(Duration::from_secs(60))
}

fn page() -> usize {
    rustix::param::page_size()
}

/// Whether every page of `[addr, addr + len)` is mapped (`madvise(MADV_NORMAL)` says ENOMEM for
/// an unmapped address and touches nothing).
fn mapped(addr: usize, len: usize) -> bool {
    // SAFETY: MADV_NORMAL only resets the read-ahead hint of whatever is mapped there; it changes
    // no contents and no mapping, so it is harmless on any address range.
    unsafe { rustix::mm::madvise(addr as *mut c_void, len, Advice::Normal) }.is_ok()
}

/// Whether no page of `[addr, addr + len)` is mapped.
fn unmapped(addr: usize, len: usize) -> bool {
    (addr..addr + len)
        .step_by(page())
        .all(|p| !mapped(p, page()))
}

/// A fresh mapping of `padded` bytes that starts one page past a 2 MiB boundary, so that trimming
/// it to a 2 MiB-aligned range has both a head and a tail to unmap.
fn unaligned_mapping(padded: usize) -> *mut u8 {
    let room = map(padded + HUGE_PAGE_SIZE).unwrap().as_ptr();
    let start = (room as usize).next_multiple_of(HUGE_PAGE_SIZE) + page();
    let start = if start - room as usize >= HUGE_PAGE_SIZE {
        start - HUGE_PAGE_SIZE
    } else {
        start
    };
    let skip = start - room as usize;
    if skip > 0 {
        unmap(room, skip).unwrap();
    }
    let end = room.wrapping_add(skip + padded);
    unmap(end, HUGE_PAGE_SIZE - skip).unwrap();
    room.wrapping_add(skip)
}

/// Maps `len` bytes exactly at `addr`, which must be free: stands for another thread's mapping.
fn foreign_mapping_at(addr: usize, len: usize) {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping (it fails with EEXIST), so
    // this only takes a free range.
    let got = unsafe {
        rustix::mm::mmap_anonymous(
            addr as *mut c_void,
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE,
        )
    }
    .expect("mapping the foreign range");
    assert_eq!(got as usize, addr);
}

fn injected() -> RegionError {
    RegionError::Syscall {
        op: RegionOp::Munmap,
        addr: 0,
        len: 0,
        errno: Errno::NOMEM,
    }
}

#[test]
fn failed_trim_never_unmaps_what_another_thread_mapped_into_the_freed_part() {
    if run_in_child() {
        return;
    }
    let len = page();
    let padded = len + HUGE_PAGE_SIZE;
    let base = unaligned_mapping(padded);
    let mut calls = 0;
    let mut foreign = None;
    let result = trim_to_huge_aligned(base, padded, len, |p, n| {
        calls += 1;
        match calls {
            // The first trim succeeds, and at once another thread maps into the freed range.
            1 => {
                unmap(p, n)?;
                foreign_mapping_at(p as usize, n);
                foreign = Some((p as usize, n));
                Ok(())
            }
            // The second trim fails (say ENOMEM: the VMA limit).
            2 => Err(injected()),
            // The cleanup.
            _ => unmap(p, n),
        }
    });
    assert!(result.is_err(), "the injected failure was not reported");
    let (addr, n) = foreign.expect("no trim succeeded");
    assert!(
        mapped(addr, n),
        "the cleanup unmapped the foreign mapping at {addr:#x}+{n:#x}"
    );
    // Nothing else of the padded range stays mapped.
    let base = base as usize;
    for p in (base..base + padded).step_by(page()) {
        if !(addr..addr + n).contains(&p) {
            assert!(
                unmapped(p, page()),
                "page {p:#x} of the padded range leaked"
            );
        }
    }
    unmap(addr as *mut u8, n).unwrap();
}

#[test]
fn first_trim_failing_unmaps_the_whole_padded_range() {
    if run_in_child() {
        return;
    }
    let len = page();
    let padded = len + HUGE_PAGE_SIZE;
    let base = unaligned_mapping(padded);
    let mut calls = 0;
    let result = trim_to_huge_aligned(base, padded, len, |p, n| {
        calls += 1;
        if calls == 1 {
            Err(injected())
        } else {
            unmap(p, n)
        }
    });
    assert!(result.is_err());
    assert!(unmapped(base as usize, padded), "the padded range leaked");
}

#[test]
fn trimming_keeps_exactly_the_aligned_range() {
    if run_in_child() {
        return;
    }
    let len = 2 * page();
    let padded = len + HUGE_PAGE_SIZE;
    let base = unaligned_mapping(padded);
    let aligned = trim_to_huge_aligned(base, padded, len, unmap)
        .unwrap()
        .as_ptr() as usize;
    assert_eq!(aligned % HUGE_PAGE_SIZE, 0);
    let base = base as usize;
    assert!(unmapped(base, aligned - base), "head left mapped");
    assert!(mapped(aligned, len));
    assert!(
        unmapped(aligned + len, base + padded - aligned - len),
        "tail left mapped"
    );
    unmap(aligned as *mut u8, len).unwrap();
}
