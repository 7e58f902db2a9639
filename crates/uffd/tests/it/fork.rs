//! The fork rows of `docs/move-contract.md` Appendix A, and `EVENT_FORK`. Each test runs in a child process of its own
//! (`run_in_child`), so its forks share no other test's pages. After `fork(2)` the forked process
//! only makes async-signal-safe calls (`read`, `close`, the MOVE ioctl, `_exit`): the test
//! process has other threads, whose locks may be held at the fork.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use test_support::mem::Advice;
use test_support::{require, Need};
use uffd::{Event, EventBuffer, Features, MoveFlags, RangeError, Uffd};

use crate::{
    assert_nothing_lost, filled, move_pages, new_uffd, next_event, page, registered, run_in_child,
};

const NONE: MoveFlags = MoveFlags::empty();

/// Forks; the child waits until `hold` is closed by the parent (or exits at once when `hold` is
/// `None`), then `_exit(0)`s. Returns the child's pid.
fn fork_child(hold: Option<(&OwnedFd, &OwnedFd)>) -> libc::pid_t {
    let raw = hold.map(|(r, w)| (r.as_raw_fd(), w.as_raw_fd()));
    // SAFETY: the child only calls async-signal-safe functions (close, read, _exit) on values
    // computed before the fork, and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: in the forked child: plain syscalls on fds it inherited, then _exit.
        unsafe {
            if let Some((r, w)) = raw {
                libc::close(w);
                let mut byte = 0u8;
                libc::read(r, (&raw mut byte).cast(), 1);
            }
            libc::_exit(0);
        }
    }
    pid
}

/// Waits for `pid`; returns its exit code.
fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: `pid` is our own child; `status` is a live local the kernel writes.
    let rc = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status),
        "child did not exit normally: {status:#x}"
    );
    libc::WEXITSTATUS(status)
}

#[test]
fn cow_shared_with_live_child_is_busy() {
    require!(Need::Move);
    if run_in_child() {
        return;
    }
    let uffd = new_uffd();
    let src = filled(2, 500);
    src.madvise(Advice::DoFork).unwrap();
    let dst = registered(&uffd, 2);
    let (r, w) = rustix::pipe::pipe().unwrap();
    let pid = fork_child(Some((&r, &w)));
    drop(r);
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Busy { done: 0 });
    assert_nothing_lost(&src, &dst, 2, 500, 0);
    drop(w);
    assert_eq!(wait(pid), 0);
}

#[test]
fn after_child_exit_busy_until_written() {
    require!(Need::Move);
    if run_in_child() {
        return;
    }
    let uffd = new_uffd();
    let src = filled(2, 510);
    src.madvise(Advice::DoFork).unwrap();
    let dst = registered(&uffd, 2);
    let pid = fork_child(None);
    assert_eq!(wait(pid), 0);
    // The child is gone, yet the pages are no longer marked exclusive: still EBUSY.
    let err = move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE).unwrap_err();
    assert_eq!(err, RangeError::Busy { done: 0 });
    assert_nothing_lost(&src, &dst, 2, 510, 0);
    // A write (of the value already there) reuses each page and makes it exclusive again.
    for i in 0..2 {
        let off = i * page();
        src.write_u64(off, src.read_u64(off));
    }
    assert_eq!(
        move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE),
        Ok(2 * page())
    );
    assert_nothing_lost(&src, &dst, 2, 510, 2 * page());
}

#[test]
fn dontfork_src_moves_with_live_child() {
    require!(Need::Move);
    if run_in_child() {
        return;
    }
    let uffd = new_uffd();
    let src = filled(2, 520);
    src.madvise(Advice::DontFork).unwrap();
    let dst = registered(&uffd, 2);
    let (r, w) = rustix::pipe::pipe().unwrap();
    let pid = fork_child(Some((&r, &w)));
    drop(r);
    assert_eq!(
        move_pages(&uffd, dst.as_ptr(), src.as_ptr(), 2 * page(), NONE),
        Ok(2 * page())
    );
    assert_nothing_lost(&src, &dst, 2, 520, 2 * page());
    drop(w);
    assert_eq!(wait(pid), 0);
}

#[test]
fn uffd_used_from_forked_child_is_invalid() {
    require!(Need::Move);
    if run_in_child() {
        return;
    }
    let uffd = new_uffd();
    let src = filled(1, 530);
    src.madvise(Advice::DoFork).unwrap();
    let dst = registered(&uffd, 1);
    dst.madvise(Advice::DoFork).unwrap();
    let (d, s) = (dst.as_ptr(), src.as_ptr());
    // SAFETY: the child only issues the MOVE ioctl (no allocation, no lock: `move_pages` fills a
    // struct on the stack and calls ioctl) and `_exit`s with a code saying what it got.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = match move_pages(&uffd, d, s, page(), NONE) {
            Err(RangeError::Invalid { done: 0 }) => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        // SAFETY: leaving the forked child without running any Rust teardown.
        unsafe { libc::_exit(code) };
    }
    assert_eq!(
        wait(pid),
        0,
        "the child's MOVE was not EINVAL (1: it moved, 2: other error)"
    );
    // Untouched in the parent; and the parent itself can still move.
    assert_nothing_lost(&src, &dst, 1, 530, 0);
}

#[test]
fn event_fork_delivers_the_childs_uffd() {
    require!(Need::Move, Need::Root);
    if run_in_child() {
        return;
    }
    let uffd = crate::polled_uffd(Uffd::builder().features(Features::EVENT_FORK));
    let dst = registered(&uffd, 1);
    dst.madvise(Advice::DoFork).unwrap(); // only copied VMAs carry the context to the child
                                          // The forking thread waits until the fork event is read, so read it from another thread.
                                          // glibc's fork() holds the malloc locks while the kernel copies the address space, so the
                                          // reader must not allocate once the fork has begun: its buffer is made before, and the fork
                                          // starts only when the reader is ready.
    let ready = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut buf = EventBuffer::new(4);
            ready.wait();
            match next_event(&uffd, &mut buf) {
                // Only a fork event read from the kernel yields a `ForkedUffd`.
                Event::Fork { uffd: forked } => Uffd::from_fork(forked, &uffd),
                other => panic!("expected a fork event, got {other:?}"),
            }
        });
        ready.wait();
        let pid = fork_child(None);
        let child_uffd = reader.join().unwrap();
        assert_eq!(child_uffd.features(), uffd.features());
        // A live userfaultfd (not just any fd), installed with the parent's O_CLOEXEC.
        let flags = rustix::io::fcntl_getfd(&child_uffd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        let link = format!("/proc/self/fd/{}", child_uffd.as_fd().as_raw_fd());
        let target = std::fs::read_link(link).unwrap();
        assert_eq!(target.to_str(), Some("anon_inode:[userfaultfd]"));
        assert_eq!(wait(pid), 0);
    });
}
