//! The conformance checker's system calls: its own memory window, madvise/mprotect/mlock, plain
//! loads and stores, the raw range ioctls (to see what the kernel leaves in the result field,
//! which the binding decodes away), and fork.
//!
//! # Safety
//!
//! This is the crate's only module besides `exec` with `unsafe`. Everything here acts on a
//! [`Window`] the checker mapped itself (never `MAP_FIXED` over memory it does not own), and no
//! Rust reference ever points into the window: contents are reached through volatile loads and
//! stores only. The raw range ioctls go through the wrappers `uffd::raw` re-exports (defined in
//! `uffd::sys`, the only place that issues userfaultfd ioctls), not through `Uffd`, because a conformance checker must see the
//! result field exactly as the kernel wrote it (including "untouched").

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::io::Errno;

/// The value the raw ioctls preset the result field to: if it survives, the kernel did not write
/// the field.
pub const UNTOUCHED: i64 = 0x5eed_5eed;

const PMD: usize = 2 << 20;

/// A PMD-aligned address range the checker owns: reserved `PROT_NONE`, then partly mapped with
/// VMAs of its own and partly unmapped again (the gaps between VMAs). Unmapped as a whole on
/// drop.
#[derive(Debug)]
pub struct Window {
    base: usize,
    len: usize,
}

impl Window {
    /// Reserves `len` bytes (a multiple of 2 MiB) at a 2 MiB-aligned address.
    ///
    /// # Errors
    ///
    /// The `mmap(2)` error.
    pub fn reserve(len: usize) -> io::Result<Window> {
        assert!(
            len % PMD == 0 && len > 0,
            "window length not a PMD multiple"
        );
        // SAFETY: a fresh PROT_NONE anonymous reservation at an address the kernel picks; it
        // replaces nothing.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + PMD,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = raw as usize;
        let base = start.next_multiple_of(PMD);
        // SAFETY: both trims lie inside the reservation just made and are not the window.
        unsafe {
            if base > start {
                libc::munmap(raw, base - start);
            }
            let tail = base + len;
            let end = start + len + PMD;
            if end > tail {
                libc::munmap(tail as *mut libc::c_void, end - tail);
            }
        }
        Ok(Window { base, len })
    }

    /// The first address.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty (never: `reserve` refuses 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, off: usize, len: usize) {
        assert!(
            off.checked_add(len).is_some_and(|end| end <= self.len),
            "range {off:#x}+{len:#x} outside the window of {:#x}",
            self.len
        );
    }

    /// Maps `len` bytes at `off` (page aligned) with `prot`, private or shared anonymous,
    /// replacing what the window holds there.
    ///
    /// # Errors
    ///
    /// The `mmap(2)` error.
    pub fn map(&self, off: usize, len: usize, prot: i32, shared: bool) -> io::Result<()> {
        self.check(off, len);
        let share = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // SAFETY: MAP_FIXED over part of our own window, which no Rust reference points into.
        let raw = unsafe {
            libc::mmap(
                (self.base + off) as *mut libc::c_void,
                len,
                prot,
                share | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Maps `len` bytes at `off` as a private mapping of `file` (offset 0).
    ///
    /// # Errors
    ///
    /// The `mmap(2)` error.
    pub fn map_file(&self, off: usize, len: usize, file: impl AsFd) -> io::Result<()> {
        self.check(off, len);
        // SAFETY: MAP_FIXED over part of our own window, which no Rust reference points into.
        let raw = unsafe {
            libc::mmap(
                (self.base + off) as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_fd().as_raw_fd(),
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Unmaps `len` bytes at `off`: the gaps between VMAs become real holes.
    ///
    /// # Errors
    ///
    /// The `munmap(2)` error.
    pub fn unmap(&self, off: usize, len: usize) -> io::Result<()> {
        self.check(off, len);
        // SAFETY: part of our own window; nothing references it.
        let rc = unsafe { libc::munmap((self.base + off) as *mut libc::c_void, len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the whole window is ours; nothing references it once the Window is gone.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.len);
        }
    }
}

fn errno_of(rc: libc::c_int) -> Result<(), Errno> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(
            io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    }
}

/// `madvise(addr, len, advice)`.
///
/// # Errors
///
/// The errno.
pub fn madvise(addr: usize, len: usize, advice: i32) -> Result<(), Errno> {
    // SAFETY: madvise changes no memory Rust code references: callers pass ranges of a Window
    // (or ranges no one maps, which the kernel rejects).
    errno_of(unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) })
}

/// `mprotect(addr, len, prot)`.
///
/// # Errors
///
/// The errno.
pub fn mprotect(addr: usize, len: usize, prot: i32) -> Result<(), Errno> {
    // SAFETY: as for `madvise`: a range of a Window, which no reference points into.
    errno_of(unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) })
}

/// `mlock2(addr, len, MLOCK_ONFAULT)`: `VM_LOCKED` without populating.
///
/// # Errors
///
/// The errno.
pub fn mlock_onfault(addr: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: mlock2 only changes the VMA flags of a Window range; ONFAULT populates nothing.
    unsafe {
        rustix::mm::mlock_with(
            addr as *mut libc::c_void,
            len,
            rustix::mm::MlockFlags::ONFAULT,
        )
    }
}

/// A volatile load of the `u64` at `addr`.
///
/// # Safety
///
/// `addr` is 8-byte aligned and lies in a readable mapping of a [`Window`] whose access will not
/// raise a signal or a userfault (the caller checked the page's state).
pub unsafe fn read_u64(addr: usize) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::read_volatile(addr as *const u64) }
}

/// A volatile store of `value` at `addr`.
///
/// # Safety
///
/// As [`read_u64`], for a writable mapping.
pub unsafe fn write_u64(addr: usize, value: u64) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::write_volatile(addr as *mut u64, value) }
}

/// `UFFDIO_MOVE` with the result field preset to [`UNTOUCHED`]: the ioctl's result and the field.
///
/// # Safety
///
/// Both ranges lie in [`Window`]s (or in unmapped space): no Rust reference points into them.
pub unsafe fn raw_move(
    uffd: impl AsFd,
    dst: usize,
    src: usize,
    len: usize,
    mode: u64,
) -> (Result<(), Errno>, i64) {
    let mut arg = uffd::raw::uffdio_move {
        dst: dst as u64,
        src: src as u64,
        len: len as u64,
        mode,
        move_: UNTOUCHED,
    };
    // SAFETY: no Rust reference points into either range (the caller's contract).
    let rc = unsafe { uffd::raw::move_(uffd, &mut arg) };
    (rc, arg.move_)
}

/// `UFFDIO_COPY` of `len` bytes from `src` (a buffer of ours) to `dst`, field preset to
/// [`UNTOUCHED`].
///
/// # Safety
///
/// `dst` as in [`raw_move`]; `src` is readable for `len` bytes.
pub unsafe fn raw_copy(
    uffd: impl AsFd,
    dst: usize,
    src: *const u8,
    len: usize,
    mode: u64,
) -> (Result<(), Errno>, i64) {
    let mut arg = uffd::raw::uffdio_copy {
        dst: dst as u64,
        src: src as u64,
        len: len as u64,
        mode,
        copy: UNTOUCHED,
    };
    // SAFETY: no Rust reference points into the destination, and `src` is readable (the caller's
    // contract).
    let rc = unsafe { uffd::raw::copy(uffd, &mut arg) };
    (rc, arg.copy)
}

/// `UFFDIO_ZEROPAGE` of `[dst, dst + len)`, field preset to [`UNTOUCHED`].
///
/// # Safety
///
/// As [`raw_move`] for `dst`.
pub unsafe fn raw_zeropage(
    uffd: impl AsFd,
    dst: usize,
    len: usize,
    mode: u64,
) -> (Result<(), Errno>, i64) {
    let mut arg = uffd::raw::uffdio_zeropage {
        range: uffd::raw::uffdio_range {
            start: dst as u64,
            len: len as u64,
        },
        mode,
        zeropage: UNTOUCHED,
    };
    // SAFETY: no Rust reference points into the destination (the caller's contract).
    let rc = unsafe { uffd::raw::zeropage(uffd, &mut arg) };
    (rc, arg.zeropage)
}

/// A forked child that does nothing until told to exit.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    hold: Option<OwnedFd>,
}

/// Forks a child that waits on a pipe and `_exit(0)`s when the parent closes it.
///
/// Call only from a single-threaded process (or one whose other threads hold no locks the child
/// could need: the child makes only async-signal-safe calls).
///
/// # Errors
///
/// The `pipe(2)` or `fork(2)` error.
pub fn fork_sleeper() -> io::Result<Child> {
    let (r, w) = rustix::pipe::pipe()?;
    let (rr, wr) = (r.as_raw_fd(), w.as_raw_fd());
    // SAFETY: the child only calls close, read and _exit on values computed before the fork,
    // and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the forked child: plain syscalls on inherited fds, then _exit.
        unsafe {
            libc::close(wr);
            let mut byte = 0u8;
            libc::read(rr, (&raw mut byte).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(r);
    Ok(Child { pid, hold: Some(w) })
}

impl Child {
    /// Lets the child exit and reaps it; returns its exit status.
    ///
    /// # Errors
    ///
    /// The `waitpid(2)` error.
    pub fn exit(mut self) -> io::Result<i32> {
        self.hold.take();
        self.reap()
    }

    fn reap(&mut self) -> io::Result<i32> {
        let mut status = 0;
        // SAFETY: our own child; `status` is a live local the kernel writes.
        let rc = unsafe { libc::waitpid(self.pid, &raw mut status, 0) };
        if rc != self.pid {
            return Err(io::Error::last_os_error());
        }
        self.pid = 0;
        Ok(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.pid != 0 {
            self.hold.take();
            let _ = self.reap();
        }
    }
}

/// Forks a child that issues one raw `UFFDIO_MOVE` on the parent's `uffd` and reports the result
/// through a pipe: the "uffd used from a forked child" case.
///
/// # Safety
///
/// As [`raw_move`]; and as [`fork_sleeper`] about threads.
///
/// # Errors
///
/// The `pipe`, `fork`, `read` or `waitpid` error.
pub unsafe fn move_in_child(
    uffd: impl AsFd,
    dst: usize,
    src: usize,
    len: usize,
) -> io::Result<(Result<(), Errno>, i64)> {
    let (r, w) = rustix::pipe::pipe()?;
    let (rr, wr) = (r.as_raw_fd(), w.as_raw_fd());
    let fd = uffd.as_fd().as_raw_fd();
    // SAFETY: the child issues one ioctl on a stack struct, writes 12 bytes and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let mut arg = uffd::raw::uffdio_move {
            dst: dst as u64,
            src: src as u64,
            len: len as u64,
            mode: 0,
            move_: UNTOUCHED,
        };
        // SAFETY: in the forked child: one ioctl on an inherited fd with a live stack struct,
        // a write to an inherited pipe, then _exit; no allocation, no lock.
        unsafe {
            libc::close(rr);
            let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
            let rc = uffd::raw::move_(fd, &mut arg);
            let errno = match rc {
                Ok(()) => 0,
                Err(e) => e.raw_os_error(),
            };
            let mut msg = [0u8; 12];
            msg[..4].copy_from_slice(&errno.to_ne_bytes());
            msg[4..].copy_from_slice(&arg.move_.to_ne_bytes());
            libc::write(wr, msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    drop(w);
    let mut msg = [0u8; 12];
    let n = rustix::io::read(&r, &mut msg)?;
    let mut status = 0;
    // SAFETY: our own child; `status` is a live local.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    if n != 12 {
        return Err(io::Error::other("the child reported nothing"));
    }
    let errno = i32::from_ne_bytes(msg[..4].try_into().expect("4 bytes"));
    let field = i64::from_ne_bytes(msg[4..].try_into().expect("8 bytes"));
    let rc = if errno == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(errno))
    };
    Ok((rc, field))
}

/// Whether `MADV_GUARD_INSTALL` (Linux 6.13) works here, tried on a scratch page.
pub fn guard_supported() -> bool {
    let Ok(w) = Window::reserve(PMD) else {
        return false;
    };
    let page = rustix::param::page_size();
    w.map(0, page, libc::PROT_READ | libc::PROT_WRITE, false)
        .is_ok()
        && madvise(w.base(), page, 102).is_ok()
}

/// A second `UFFDIO_API` on `uffd` (whose first one the binding made): its result.
pub fn second_api(uffd: impl AsFd) -> Result<(), Errno> {
    let mut api = uffd::raw::uffdio_api {
        api: uffd::raw::UFFD_API,
        features: 0,
        ioctls: 0,
    };
    uffd::raw::api(uffd, &mut api)
}
