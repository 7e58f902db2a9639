//! The userfaultfd ABI, written out by hand, and the only place that calls into the kernel.
//!
//! # Safety
//!
//! This module holds every `unsafe` block of the crate. They are of three kinds:
//!
//! - **Creating the fd** (`userfaultfd(2)`, `ioctl(USERFAULTFD_IOC_NEW)`): the calls themselves only
//!   allocate a file descriptor; the danger is what the fd lets its owner do to the address space
//!   later, and the crate confines that to the `unsafe fn`s of [`Uffd`](crate::Uffd).
//! - **ioctls with a struct argument**: each is issued through [`rustix::ioctl::Updater`] with the
//!   opcode computed from the struct it names, so the kernel reads and writes exactly
//!   `size_of::<T>()` bytes of a live, exclusively borrowed value of the type it expects. The structs
//!   below are `#[repr(C)]` (or `packed`) copies of `include/uapi/linux/userfaultfd.h`, pinned by the
//!   layout tests in `sys/tests.rs`.
//! - **ioctls that rewrite memory** (COPY, ZEROPAGE, MOVE, CONTINUE, POISON): the kernel changes the
//!   page tables of the ranges named by raw addresses. Their wrappers here are `unsafe fn` and pass
//!   the obligation on, unchanged, to the caller: no Rust reference may point into a range whose
//!   contents or mapping the call changes.
//!
//! Nothing here keeps state; the wrappers only translate between Rust values and the kernel's.
//!
//! # What leaves this module
//!
//! The module is private. The ABI structs and request numbers are pinned against the kernel's
//! header by the unit tests in `sys/tests.rs`. The few items with a user outside the crate are
//! re-exported, by name, from [`crate::raw`]: the raw range ioctls ([`api`], [`copy`],
//! [`zeropage`], [`move_`]) with their structs, for a conformance checker (`remap-conform`) and
//! the binding's own kernel-pinning tests, which must see the struct's result field exactly as the
//! kernel left it, untouched or written, which [`Uffd`](crate::Uffd)'s decoded errors deliberately
//! hide; and `uffd_msg`, which [`Event::Unknown`](crate::Event::Unknown) carries and
//! [`EventBuffer::load`](crate::EventBuffer::load) takes. Everything else should use `Uffd`.

#![allow(unsafe_code)]

use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::ioctl::{opcode, Opcode, Updater};

/// `UFFD_API`: the only API version the kernel knows.
pub const UFFD_API: u64 = 0xAA;
/// The ioctl type byte of userfaultfd (`UFFDIO`).
pub(crate) const UFFDIO: u8 = 0xAA;
/// `UFFD_USER_MODE_ONLY`: only faults taken in user mode are handled (no privilege needed).
pub(crate) const UFFD_USER_MODE_ONLY: u32 = 1;

/// `_UFFDIO_REGISTER`, the ioctl number (bit position in [`Ioctls`](crate::Ioctls)).
pub(crate) const _UFFDIO_REGISTER: u8 = 0x00;
/// `_UFFDIO_UNREGISTER`.
pub(crate) const _UFFDIO_UNREGISTER: u8 = 0x01;
/// `_UFFDIO_WAKE`.
pub(crate) const _UFFDIO_WAKE: u8 = 0x02;
/// `_UFFDIO_COPY`.
pub(crate) const _UFFDIO_COPY: u8 = 0x03;
/// `_UFFDIO_ZEROPAGE`.
pub(crate) const _UFFDIO_ZEROPAGE: u8 = 0x04;
/// `_UFFDIO_MOVE` (Linux 6.8).
pub(crate) const _UFFDIO_MOVE: u8 = 0x05;
/// `_UFFDIO_WRITEPROTECT`.
pub(crate) const _UFFDIO_WRITEPROTECT: u8 = 0x06;
/// `_UFFDIO_CONTINUE`.
pub(crate) const _UFFDIO_CONTINUE: u8 = 0x07;
/// `_UFFDIO_POISON`.
pub(crate) const _UFFDIO_POISON: u8 = 0x08;
/// `_UFFDIO_API`.
pub(crate) const _UFFDIO_API: u8 = 0x3F;

/// `UFFD_EVENT_PAGEFAULT`.
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// `UFFD_EVENT_FORK`.
pub(crate) const UFFD_EVENT_FORK: u8 = 0x13;
/// `UFFD_EVENT_REMAP`.
pub(crate) const UFFD_EVENT_REMAP: u8 = 0x14;
/// `UFFD_EVENT_REMOVE`.
pub(crate) const UFFD_EVENT_REMOVE: u8 = 0x15;
/// `UFFD_EVENT_UNMAP`.
pub(crate) const UFFD_EVENT_UNMAP: u8 = 0x16;

/// `struct uffdio_api`: negotiates the API and features; the kernel writes back what it supports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct uffdio_api {
    /// In: [`UFFD_API`].
    pub api: u64,
    /// In: features to enable. Out: every feature the kernel supports.
    pub features: u64,
    /// Out: bit `1 << _UFFDIO_*` for each ioctl available on the fd itself.
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct uffdio_range {
    /// Page-aligned start address.
    pub start: u64,
    /// Length in bytes, a multiple of the page size.
    pub len: u64,
}

/// `struct uffdio_register`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct uffdio_register {
    /// The range to register.
    pub range: uffdio_range,
    /// `UFFDIO_REGISTER_MODE_*`.
    pub mode: u64,
    /// Out: bit `1 << _UFFDIO_*` for each ioctl usable on the range.
    pub ioctls: u64,
}

/// `struct uffdio_copy`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct uffdio_copy {
    /// Destination start.
    pub dst: u64,
    /// Source start (any readable memory).
    pub src: u64,
    /// Length in bytes.
    pub len: u64,
    /// `UFFDIO_COPY_MODE_*`.
    pub mode: u64,
    /// Out: bytes copied, or a negative errno.
    pub copy: i64,
}

/// `struct uffdio_zeropage`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct uffdio_zeropage {
    /// The range to fill with zero pages.
    pub range: uffdio_range,
    /// `UFFDIO_ZEROPAGE_MODE_*`.
    pub mode: u64,
    /// Out: bytes zero-mapped, or a negative errno.
    pub zeropage: i64,
}

/// `struct uffdio_move` (Linux 6.8).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct uffdio_move {
    /// Destination start.
    pub dst: u64,
    /// Source start.
    pub src: u64,
    /// Length in bytes.
    pub len: u64,
    /// `UFFDIO_MOVE_MODE_*`.
    pub mode: u64,
    /// Out: bytes moved, or a negative errno. Left untouched on the early error paths.
    pub move_: i64,
}

/// `struct uffdio_writeprotect`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct uffdio_writeprotect {
    /// The range to (un)protect.
    pub range: uffdio_range,
    /// `UFFDIO_WRITEPROTECT_MODE_*`.
    pub mode: u64,
}

/// `struct uffdio_continue`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct uffdio_continue {
    /// The range to map from the page cache.
    pub range: uffdio_range,
    /// `UFFDIO_CONTINUE_MODE_*`.
    pub mode: u64,
    /// Out: bytes mapped, or a negative errno.
    pub mapped: i64,
}

/// `struct uffdio_poison`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct uffdio_poison {
    /// The range to mark poisoned.
    pub range: uffdio_range,
    /// `UFFDIO_POISON_MODE_*`.
    pub mode: u64,
    /// Out: bytes marked, or a negative errno.
    pub updated: i64,
}

/// `struct uffd_msg`: one event as `read(2)` returns it (32 bytes, packed).
///
/// The `arg` union is kept as three raw words; [`Event`](crate::Event) decodes it by `event`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
pub struct uffd_msg {
    /// `UFFD_EVENT_*`.
    pub event: u8,
    /// Reserved.
    pub reserved1: u8,
    /// Reserved.
    pub reserved2: u16,
    /// Reserved.
    pub reserved3: u32,
    /// The union's three 64-bit words.
    pub arg: [u64; 3],
}

/// The ioctl request numbers, computed from the structs with the kernel's `_IOC` layout.
pub(crate) mod request {
    use super::*;

    /// `UFFDIO_API = _IOWR(0xAA, 0x3F, struct uffdio_api)`.
    pub(crate) const UFFDIO_API: Opcode = opcode::read_write::<uffdio_api>(UFFDIO, _UFFDIO_API);
    /// `UFFDIO_REGISTER = _IOWR(0xAA, 0x00, struct uffdio_register)`.
    pub(crate) const UFFDIO_REGISTER: Opcode =
        opcode::read_write::<uffdio_register>(UFFDIO, _UFFDIO_REGISTER);
    /// `UFFDIO_UNREGISTER = _IOR(0xAA, 0x01, struct uffdio_range)` (`_IOR` for historical reasons).
    pub(crate) const UFFDIO_UNREGISTER: Opcode =
        opcode::read::<uffdio_range>(UFFDIO, _UFFDIO_UNREGISTER);
    /// `UFFDIO_WAKE = _IOR(0xAA, 0x02, struct uffdio_range)`.
    pub(crate) const UFFDIO_WAKE: Opcode = opcode::read::<uffdio_range>(UFFDIO, _UFFDIO_WAKE);
    /// `UFFDIO_COPY = _IOWR(0xAA, 0x03, struct uffdio_copy)`.
    pub(crate) const UFFDIO_COPY: Opcode = opcode::read_write::<uffdio_copy>(UFFDIO, _UFFDIO_COPY);
    /// `UFFDIO_ZEROPAGE = _IOWR(0xAA, 0x04, struct uffdio_zeropage)`.
    pub(crate) const UFFDIO_ZEROPAGE: Opcode =
        opcode::read_write::<uffdio_zeropage>(UFFDIO, _UFFDIO_ZEROPAGE);
    /// `UFFDIO_MOVE = _IOWR(0xAA, 0x05, struct uffdio_move)`.
    pub(crate) const UFFDIO_MOVE: Opcode = opcode::read_write::<uffdio_move>(UFFDIO, _UFFDIO_MOVE);
    /// `UFFDIO_WRITEPROTECT = _IOWR(0xAA, 0x06, struct uffdio_writeprotect)`.
    pub(crate) const UFFDIO_WRITEPROTECT: Opcode =
        opcode::read_write::<uffdio_writeprotect>(UFFDIO, _UFFDIO_WRITEPROTECT);
    /// `UFFDIO_CONTINUE = _IOWR(0xAA, 0x07, struct uffdio_continue)`.
    pub(crate) const UFFDIO_CONTINUE: Opcode =
        opcode::read_write::<uffdio_continue>(UFFDIO, _UFFDIO_CONTINUE);
    /// `UFFDIO_POISON = _IOWR(0xAA, 0x08, struct uffdio_poison)`.
    pub(crate) const UFFDIO_POISON: Opcode =
        opcode::read_write::<uffdio_poison>(UFFDIO, _UFFDIO_POISON);
    /// `USERFAULTFD_IOC_NEW = _IO(0xAA, 0x00)`, issued on `/dev/userfaultfd`.
    pub(crate) const USERFAULTFD_IOC_NEW: Opcode = opcode::none(UFFDIO, 0x00);
}

/// Issues an updater-style ioctl on `fd`.
///
/// # Safety
///
/// `OPCODE` must be the request whose argument is a `T`, and the call must not change memory the
/// caller holds Rust references into (see the module docs).
unsafe fn update<const OPCODE: Opcode, T>(fd: BorrowedFd<'_>, arg: &mut T) -> Result<(), Errno> {
    // SAFETY: the caller guarantees that OPCODE takes a `T`; `arg` is a live, exclusive `T`, so the
    // kernel reads and writes `size_of::<T>()` valid bytes and nothing else of ours.
    unsafe { rustix::ioctl::ioctl(fd, Updater::<OPCODE, T>::new(arg)) }
}

/// `userfaultfd(2)`, always with `O_CLOEXEC`.
pub(crate) fn userfaultfd(user_mode_only: bool, nonblock: bool) -> Result<OwnedFd, Errno> {
    let mut bits = rustix::mm::UserfaultfdFlags::CLOEXEC.bits();
    if nonblock {
        bits |= rustix::mm::UserfaultfdFlags::NONBLOCK.bits();
    }
    if user_mode_only {
        bits |= UFFD_USER_MODE_ONLY;
    }
    let flags = rustix::mm::UserfaultfdFlags::from_bits_retain(bits);
    // SAFETY: `userfaultfd(2)` only allocates a file descriptor here. What the fd can later do to
    // the address space is reached only through this module's `unsafe fn`s.
    unsafe { rustix::mm::userfaultfd(flags) }
}

/// `open("/dev/userfaultfd")` then `ioctl(USERFAULTFD_IOC_NEW, flags)`; `O_CLOEXEC` always.
pub(crate) fn userfaultfd_dev(user_mode_only: bool, nonblock: bool) -> Result<OwnedFd, Errno> {
    use rustix::fs::{open, Mode, OFlags};
    let dev = open(
        "/dev/userfaultfd",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut flags = rustix::mm::UserfaultfdFlags::CLOEXEC.bits();
    if nonblock {
        flags |= rustix::mm::UserfaultfdFlags::NONBLOCK.bits();
    }
    if user_mode_only {
        flags |= UFFD_USER_MODE_ONLY;
    }
    // SAFETY: `USERFAULTFD_IOC_NEW` takes its flags as an integer argument and returns a new fd; it
    // touches no memory of ours.
    let fd = unsafe {
        rustix::ioctl::ioctl(
            &dev,
            NewFd(rustix::ioctl::IntegerSetter::<
                { request::USERFAULTFD_IOC_NEW },
            >::new_usize(flags as usize)),
        )
    }?;
    Ok(fd)
}

/// `USERFAULTFD_IOC_NEW` returns the new fd as the ioctl's return value, which rustix's integer
/// pattern drops; this wrapper keeps it.
struct NewFd<I>(I);

// SAFETY: every method forwards to the wrapped `IntegerSetter`, whose opcode takes an integer and
// writes no user memory; `output_from_ptr` takes ownership of the fd the successful call returned.
unsafe impl<I: rustix::ioctl::Ioctl> rustix::ioctl::Ioctl for NewFd<I> {
    type Output = OwnedFd;
    const IS_MUTATING: bool = I::IS_MUTATING;

    fn opcode(&self) -> Opcode {
        self.0.opcode()
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        self.0.as_ptr()
    }

    unsafe fn output_from_ptr(
        out: rustix::ioctl::IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<OwnedFd> {
        // SAFETY: `out` is the return value of a successful USERFAULTFD_IOC_NEW: a new, open fd
        // that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(out) })
    }
}

/// `UFFDIO_API`: negotiates the API and features (once per fd; a second call is EINVAL).
///
/// # Errors
///
/// The ioctl's errno.
pub fn api(fd: impl AsFd, arg: &mut uffdio_api) -> Result<(), Errno> {
    // SAFETY: UFFDIO_API takes a `uffdio_api` and changes no memory but `arg`.
    unsafe { update::<{ request::UFFDIO_API }, _>(fd.as_fd(), arg) }
}

/// `UFFDIO_REGISTER`.
pub(crate) fn register(fd: impl AsFd, arg: &mut uffdio_register) -> Result<(), Errno> {
    // SAFETY: UFFDIO_REGISTER takes a `uffdio_register`; registering changes how future faults in
    // the range are handled, never the contents of memory.
    unsafe { update::<{ request::UFFDIO_REGISTER }, _>(fd.as_fd(), arg) }
}

/// `UFFDIO_UNREGISTER`.
pub(crate) fn unregister(fd: impl AsFd, mut arg: uffdio_range) -> Result<(), Errno> {
    // SAFETY: UFFDIO_UNREGISTER takes a `uffdio_range` and changes no memory contents.
    unsafe { update::<{ request::UFFDIO_UNREGISTER }, _>(fd.as_fd(), &mut arg) }
}

/// `UFFDIO_WAKE`.
pub(crate) fn wake(fd: impl AsFd, mut arg: uffdio_range) -> Result<(), Errno> {
    // SAFETY: UFFDIO_WAKE takes a `uffdio_range` and only wakes threads blocked on faults.
    unsafe { update::<{ request::UFFDIO_WAKE }, _>(fd.as_fd(), &mut arg) }
}

/// `UFFDIO_WRITEPROTECT`.
pub(crate) fn writeprotect(fd: impl AsFd, arg: &mut uffdio_writeprotect) -> Result<(), Errno> {
    // SAFETY: UFFDIO_WRITEPROTECT takes a `uffdio_writeprotect`; it changes page protections,
    // never contents: a protected write blocks until resolved.
    unsafe { update::<{ request::UFFDIO_WRITEPROTECT }, _>(fd.as_fd(), arg) }
}

/// `UFFDIO_COPY`. The result field of `arg` is left as the kernel wrote it (or did not).
///
/// # Errors
///
/// The ioctl's errno; `arg`'s result field says how many bytes were done.
///
/// # Safety
///
/// No Rust reference may point into `[dst, dst + len)`, whose pages the call maps; `[src, src+len)`
/// must be readable (the kernel reports EFAULT otherwise, but the caller must not rely on that for
/// memory it does not own).
pub unsafe fn copy(fd: impl AsFd, arg: &mut uffdio_copy) -> Result<(), Errno> {
    // SAFETY: UFFDIO_COPY takes a `uffdio_copy`; the caller upholds the range contract above.
    unsafe { update::<{ request::UFFDIO_COPY }, _>(fd.as_fd(), arg) }
}

/// `UFFDIO_ZEROPAGE`. The result field of `arg` is left as the kernel wrote it (or did not).
///
/// # Errors
///
/// The ioctl's errno; `arg`'s result field says how many bytes were done.
///
/// # Safety
///
/// No Rust reference may point into the range, whose pages the call maps.
pub unsafe fn zeropage(fd: impl AsFd, arg: &mut uffdio_zeropage) -> Result<(), Errno> {
    // SAFETY: UFFDIO_ZEROPAGE takes a `uffdio_zeropage`; the caller upholds the range contract.
    unsafe { update::<{ request::UFFDIO_ZEROPAGE }, _>(fd.as_fd(), arg) }
}

/// `UFFDIO_MOVE`. The result field of `arg` is left as the kernel wrote it (or did not).
///
/// # Errors
///
/// The ioctl's errno; `arg`'s result field says how many bytes were done.
///
/// # Safety
///
/// No Rust reference may point into `[src, src + len)` or `[dst, dst + len)`: the call unmaps the
/// source pages and maps them at the destination.
pub unsafe fn move_(fd: impl AsFd, arg: &mut uffdio_move) -> Result<(), Errno> {
    // SAFETY: UFFDIO_MOVE takes a `uffdio_move`; the caller upholds the range contract above.
    unsafe { update::<{ request::UFFDIO_MOVE }, _>(fd.as_fd(), arg) }
}

/// `UFFDIO_CONTINUE`.
///
/// # Safety
///
/// No Rust reference may point into the range, whose pages the call maps from the page cache.
pub(crate) unsafe fn continue_(fd: impl AsFd, arg: &mut uffdio_continue) -> Result<(), Errno> {
    // SAFETY: UFFDIO_CONTINUE takes a `uffdio_continue`; the caller upholds the range contract.
    unsafe { update::<{ request::UFFDIO_CONTINUE }, _>(fd.as_fd(), arg) }
}

/// `UFFDIO_POISON`.
///
/// # Safety
///
/// No Rust reference may point into the range: later accesses to it raise SIGBUS.
pub(crate) unsafe fn poison(fd: impl AsFd, arg: &mut uffdio_poison) -> Result<(), Errno> {
    // SAFETY: UFFDIO_POISON takes a `uffdio_poison`; the caller upholds the range contract.
    unsafe { update::<{ request::UFFDIO_POISON }, _>(fd.as_fd(), arg) }
}

/// `read(2)` of whole `uffd_msg`s into `msgs`; returns how many were read.
///
/// The fd of each fork message is claimed at once into `fds` (same index), so that it is owned,
/// and closed if unused, from the moment it enters this process's hands.
pub(crate) fn read_msgs(
    fd: impl AsFd,
    msgs: &mut [uffd_msg],
    fds: &mut [Option<OwnedFd>],
) -> Result<usize, Errno> {
    let bytes = std::mem::size_of_val(msgs);
    // SAFETY: `uffd_msg` is plain old data (integers only, no padding, no invalid bit patterns), so
    // viewing the exclusively borrowed slice as bytes and letting the kernel fill them is sound.
    let raw = unsafe { std::slice::from_raw_parts_mut(msgs.as_mut_ptr().cast::<u8>(), bytes) };
    let n = rustix::io::read(fd, raw)? / size_of::<uffd_msg>();
    for (msg, slot) in msgs[..n].iter().zip(fds.iter_mut()) {
        *slot = None;
        if msg.event == UFFD_EVENT_FORK {
            let word = msg.arg[0].to_ne_bytes();
            let raw_fd = i32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
            // SAFETY: the kernel installed this fd in our table for the reader of this message,
            // which is us, and nothing else has seen the message.
            *slot = Some(unsafe { OwnedFd::from_raw_fd(raw_fd) });
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
