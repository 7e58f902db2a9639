//! Pins every flag bit to the uapi header's value (`docs/move-contract.md` §1.2-1.3).

use super::*;

#[test]
fn feature_bits_match_the_uapi_header() {
    let expected: [(Features, u64); 17] = [
        (Features::PAGEFAULT_FLAG_WP, 0x1),
        (Features::EVENT_FORK, 0x2),
        (Features::EVENT_REMAP, 0x4),
        (Features::EVENT_REMOVE, 0x8),
        (Features::MISSING_HUGETLBFS, 0x10),
        (Features::MISSING_SHMEM, 0x20),
        (Features::EVENT_UNMAP, 0x40),
        (Features::SIGBUS, 0x80),
        (Features::THREAD_ID, 0x100),
        (Features::MINOR_HUGETLBFS, 0x200),
        (Features::MINOR_SHMEM, 0x400),
        (Features::EXACT_ADDRESS, 0x800),
        (Features::WP_HUGETLBFS_SHMEM, 0x1000),
        (Features::WP_UNPOPULATED, 0x2000),
        (Features::POISON, 0x4000),
        (Features::WP_ASYNC, 0x8000),
        (Features::MOVE, 0x10000),
    ];
    for (flag, bits) in expected {
        assert_eq!(flag.bits(), bits, "{flag:?}");
    }
    // Reports name the bits by bitflags' iteration: every known bit once, in bit order.
    let named: Vec<Features> = Features::all().iter_names().map(|(_, f)| f).collect();
    let known: Vec<Features> = expected.iter().map(|&(f, _)| f).collect();
    assert_eq!(
        named, known,
        "Features::all().iter_names() is every known bit, in bit order"
    );
    let names: Vec<&str> = Features::all().iter_names().map(|(n, _)| n).collect();
    assert_eq!(names.first(), Some(&"PAGEFAULT_FLAG_WP"));
    assert_eq!(names.last(), Some(&"MOVE"));
}

#[test]
fn ioctl_bits_are_one_shifted_by_the_ioctl_number() {
    assert_eq!(Ioctls::REGISTER.bits(), 1 << 0x00);
    assert_eq!(Ioctls::UNREGISTER.bits(), 1 << 0x01);
    assert_eq!(Ioctls::WAKE.bits(), 1 << 0x02);
    assert_eq!(Ioctls::COPY.bits(), 1 << 0x03);
    assert_eq!(Ioctls::ZEROPAGE.bits(), 1 << 0x04);
    assert_eq!(Ioctls::MOVE.bits(), 1 << 0x05);
    assert_eq!(Ioctls::WRITEPROTECT.bits(), 1 << 0x06);
    assert_eq!(Ioctls::CONTINUE.bits(), 1 << 0x07);
    assert_eq!(Ioctls::POISON.bits(), 1 << 0x08);
    assert_eq!(Ioctls::API.bits(), 1 << 0x3F);
    let names: Vec<&str> = Ioctls::all().iter_names().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "REGISTER",
            "UNREGISTER",
            "WAKE",
            "COPY",
            "ZEROPAGE",
            "MOVE",
            "WRITEPROTECT",
            "CONTINUE",
            "POISON",
            "API"
        ],
        "Ioctls::all().iter_names() is every known bit, in bit order"
    );
    // UFFD_API_RANGE_IOCTLS and its BASIC variant (hugetlb ranges: no ZEROPAGE, no MOVE).
    let range = Ioctls::WAKE
        | Ioctls::COPY
        | Ioctls::ZEROPAGE
        | Ioctls::MOVE
        | Ioctls::WRITEPROTECT
        | Ioctls::CONTINUE
        | Ioctls::POISON;
    assert_eq!(range.bits(), 0x1FC);
    assert_eq!((range - Ioctls::ZEROPAGE - Ioctls::MOVE).bits(), 0x1CC);
}

#[test]
fn mode_bits_match_the_uapi_header() {
    assert_eq!(RegisterMode::MISSING.bits(), 1 << 0);
    assert_eq!(RegisterMode::WP.bits(), 1 << 1);
    assert_eq!(RegisterMode::MINOR.bits(), 1 << 2);
    assert_eq!(MoveFlags::DONTWAKE.bits(), 1 << 0);
    assert_eq!(MoveFlags::ALLOW_SRC_HOLES.bits(), 1 << 1);
    assert_eq!(CopyFlags::DONTWAKE.bits(), 1 << 0);
    assert_eq!(CopyFlags::WP.bits(), 1 << 1);
    assert_eq!(ZeropageFlags::DONTWAKE.bits(), 1 << 0);
    assert_eq!(WriteProtectFlags::WP.bits(), 1 << 0);
    assert_eq!(WriteProtectFlags::DONTWAKE.bits(), 1 << 1);
    assert_eq!(ContinueFlags::DONTWAKE.bits(), 1 << 0);
    assert_eq!(ContinueFlags::WP.bits(), 1 << 1);
    assert_eq!(PoisonFlags::DONTWAKE.bits(), 1 << 0);
}

#[test]
fn pagefault_flags_match_the_uapi_header() {
    assert_eq!(PagefaultFlags::WRITE.bits(), 1 << 0);
    assert_eq!(PagefaultFlags::WP.bits(), 1 << 1);
    assert_eq!(PagefaultFlags::MINOR.bits(), 1 << 2);
}
