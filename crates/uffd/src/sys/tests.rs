//! Pins the hand-written ABI to the kernel's: sizes, offsets and request numbers.

use std::mem::{offset_of, size_of};

use super::request::*;
use super::*;

#[test]
fn struct_sizes_match_the_uapi_header() {
    assert_eq!(size_of::<uffdio_api>(), 24);
    assert_eq!(size_of::<uffdio_range>(), 16);
    assert_eq!(size_of::<uffdio_register>(), 32);
    assert_eq!(size_of::<uffdio_copy>(), 40);
    assert_eq!(size_of::<uffdio_zeropage>(), 32);
    assert_eq!(size_of::<uffdio_move>(), 40);
    assert_eq!(size_of::<uffdio_writeprotect>(), 24);
    assert_eq!(size_of::<uffdio_continue>(), 32);
    assert_eq!(size_of::<uffdio_poison>(), 32);
    assert_eq!(size_of::<uffd_msg>(), 32);
}

#[test]
fn field_offsets_match_the_uapi_header() {
    assert_eq!(offset_of!(uffdio_api, features), 8);
    assert_eq!(offset_of!(uffdio_api, ioctls), 16);
    assert_eq!(offset_of!(uffdio_register, mode), 16);
    assert_eq!(offset_of!(uffdio_register, ioctls), 24);
    assert_eq!(offset_of!(uffdio_copy, src), 8);
    assert_eq!(offset_of!(uffdio_copy, copy), 32);
    assert_eq!(offset_of!(uffdio_zeropage, zeropage), 24);
    assert_eq!(offset_of!(uffdio_move, dst), 0);
    assert_eq!(offset_of!(uffdio_move, src), 8);
    assert_eq!(offset_of!(uffdio_move, len), 16);
    assert_eq!(offset_of!(uffdio_move, mode), 24);
    assert_eq!(offset_of!(uffdio_move, move_), 32);
    assert_eq!(offset_of!(uffdio_writeprotect, mode), 16);
    assert_eq!(offset_of!(uffdio_continue, mapped), 24);
    assert_eq!(offset_of!(uffdio_poison, updated), 24);
    assert_eq!(offset_of!(uffd_msg, event), 0);
    assert_eq!(offset_of!(uffd_msg, reserved3), 4);
    assert_eq!(offset_of!(uffd_msg, arg), 8);
}

#[test]
fn request_numbers_match_the_spec_table() {
    assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
    assert_eq!(UFFDIO_UNREGISTER, 0x8010_AA01);
    assert_eq!(UFFDIO_WAKE, 0x8010_AA02);
    assert_eq!(UFFDIO_COPY, 0xC028_AA03);
    assert_eq!(UFFDIO_ZEROPAGE, 0xC020_AA04);
    assert_eq!(UFFDIO_MOVE, 0xC028_AA05);
    assert_eq!(UFFDIO_WRITEPROTECT, 0xC018_AA06);
    assert_eq!(UFFDIO_CONTINUE, 0xC020_AA07);
    assert_eq!(UFFDIO_POISON, 0xC020_AA08);
    assert_eq!(UFFDIO_API, 0xC018_AA3F);
    assert_eq!(USERFAULTFD_IOC_NEW, 0xAA00);
}

#[test]
fn event_codes_match_the_uapi_header() {
    assert_eq!(
        [
            UFFD_EVENT_PAGEFAULT,
            UFFD_EVENT_FORK,
            UFFD_EVENT_REMAP,
            UFFD_EVENT_REMOVE,
            UFFD_EVENT_UNMAP
        ],
        [0x12, 0x13, 0x14, 0x15, 0x16]
    );
}
