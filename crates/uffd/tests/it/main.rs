//! Integration tests of the `uffd` crate against the real kernel.
//!
//! Each module pins one area of the contract in `docs/move-contract.md`: the kernel
//! selftests' MOVE semantics (`selftest`), the errno table of its Appendix A (`errno`, `thp`,
//! `fork`), creation and capabilities (`create`), and non-cooperative events (`events`).
//!
//! Memory is owned by `test_support::mem::Mapping` and only ever touched with volatile accesses:
//! no Rust reference points into a range that `UFFDIO_MOVE` rewrites, which is the contract of
//! the binding's `unsafe fn`s. Tests that fork run in a child process of their own (the test
//! binary re-run on that one test), so a fork never shares another test's pages.

mod control;
mod create;
mod errno;
mod events;
mod fork;
mod selftest;
mod thp;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use test_support::mem::{self, Mapping, PM_PRESENT, PM_SWAPPED};
use uffd::{Event, EventBuffer, MoveFlags, Pagefault, RangeError, RegisterMode, Uffd};

/// The page size.
fn page() -> usize {
    mem::page_size()
}

/// A default (user-mode-only) userfaultfd.
fn new_uffd() -> Uffd {
    Uffd::new().expect("creating a userfaultfd")
}

/// A non-blocking userfaultfd from `builder`, for [`readable`], [`next_event`] and
/// [`FaultServer`]: `poll(2)` on a blocking userfaultfd always reports `POLLERR` (the kernel
/// cannot promise that a read will not block), so only a non-blocking one can be waited on.
fn polled_uffd(builder: uffd::UffdBuilder) -> Uffd {
    builder
        .non_blocking(true)
        .create()
        .expect("creating a userfaultfd")
}

/// A fresh mapping of `pages` pages registered with `uffd` for missing faults.
fn registered(uffd: &Uffd, pages: usize) -> Mapping {
    let m = Mapping::new(pages * page()).unwrap();
    uffd.register(m.as_ptr(), m.len(), RegisterMode::MISSING)
        .unwrap();
    m
}

/// A fresh mapping of `pages` pages filled with tags `seed + i`.
fn filled(pages: usize, seed: u64) -> Mapping {
    let m = Mapping::new(pages * page()).unwrap();
    m.fill_pages(pages, seed);
    m
}

/// `UFFDIO_MOVE` through the binding.
fn move_pages(
    uffd: &Uffd,
    dst: *mut u8,
    src: *mut u8,
    len: usize,
    flags: MoveFlags,
) -> Result<usize, RangeError> {
    // SAFETY: every range the tests move lies in a `Mapping` (or an address range no one maps),
    // which is only accessed through volatile loads and stores: no Rust reference points into it.
    unsafe { uffd.move_pages(dst, src, len, flags) }
}

/// The retrying move through the binding.
fn move_all(
    uffd: &Uffd,
    dst: *mut u8,
    src: *mut u8,
    len: usize,
    flags: MoveFlags,
) -> Result<usize, RangeError> {
    // SAFETY: as in `move_pages`.
    unsafe { uffd.move_all(dst, src, len, flags) }
}

/// A raw `UFFDIO_MOVE`, bypassing the binding, to pin what the kernel writes to the `move` field:
/// it is preset to [`UNTOUCHED`]. Returns the ioctl's result and the field.
fn raw_move(
    uffd: &Uffd,
    dst: *mut u8,
    src: *mut u8,
    len: usize,
    mode: u64,
) -> (Result<(), uffd::Errno>, i64) {
    let mut arg = uffd::raw::uffdio_move {
        dst: dst as u64,
        src: src as u64,
        len: len as u64,
        mode,
        move_: UNTOUCHED,
    };
    // SAFETY: the ranges are test-owned memory without references into it (see `move_pages`).
    let result = unsafe { uffd::raw::move_(uffd, &mut arg) };
    (result, arg.move_)
}

/// The sentinel [`raw_move`] presets the `move` field to.
const UNTOUCHED: i64 = 0x5eed;

/// Whether page `i` of `m` is present in RAM, by `/proc/self/pagemap` (never faults it in).
fn present(m: &Mapping, i: usize) -> bool {
    m.pagemap(i, 1).unwrap()[0] & PM_PRESENT != 0
}

/// Whether page `i` of `m` has no entry at all (not present, not swapped): reading it would be a
/// missing fault.
fn empty(m: &Mapping, i: usize) -> bool {
    m.pagemap(i, 1).unwrap()[0] & (PM_PRESENT | PM_SWAPPED) == 0
}

/// After a failed (or partial) move of `pages` pages filled with tags `seed + i` from `src` to
/// `dst`, with `done` bytes reported done: nothing was lost. Each page below `done` is at its
/// destination with its contents and its source reads zero; each page from `done` on is still at
/// its source with its contents.
#[track_caller]
fn assert_nothing_lost(src: &Mapping, dst: &Mapping, pages: usize, seed: u64, done: usize) {
    assert_eq!(done % page(), 0, "done {done} is not whole pages");
    let done_pages = done / page();
    assert!(done_pages <= pages, "done {done} beyond {pages} pages");
    for i in 0..pages {
        let tag = seed + i as u64;
        if i < done_pages {
            assert!(
                present(dst, i),
                "page {i} reported moved but dst is not present"
            );
            assert!(
                dst.page_holds(i, tag),
                "page {i} reported moved but dst lost its contents"
            );
            assert!(
                src.page_is_zero(i),
                "page {i} reported moved but src still holds data"
            );
        } else {
            assert!(
                src.page_holds(i, tag),
                "page {i} not moved, yet src lost its contents"
            );
        }
    }
}

/// Waits up to `timeout` for `uffd` to be readable.
fn readable(uffd: &Uffd, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(uffd, PollFlags::IN)];
    let ts = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap(),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    if poll(&mut fds, Some(&ts)).unwrap() == 0 {
        return false;
    }
    let revents = fds[0].revents();
    assert!(
        revents.contains(PollFlags::IN) && !revents.contains(PollFlags::ERR),
        "poll on a userfaultfd gave {revents:?} (a blocking fd always gives ERR: use polled_uffd)"
    );
    true
}

/// The next event of `uffd` (non-blocking, see [`polled_uffd`]), waiting at most five seconds.
#[track_caller]
fn next_event(uffd: &Uffd, buf: &mut EventBuffer) -> Event {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while buf.remaining() == 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(readable(uffd, left), "no userfaultfd event within 5 s");
        // A readable fd may still yield nothing: a fault can be woken before it is read.
        uffd.read_events(buf).unwrap();
    }
    buf.next_event().unwrap()
}

/// A thread that reads page faults from a userfaultfd and resolves each with a closure, until
/// [`FaultServer::finish`].
struct FaultServer {
    stop: Arc<AtomicBool>,
    faults: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl FaultServer {
    fn spawn(uffd: Arc<Uffd>, mut resolve: impl FnMut(&Uffd, Pagefault) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(AtomicUsize::new(0));
        let (stop2, faults2) = (stop.clone(), faults.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = EventBuffer::new(16);
            loop {
                if !readable(&uffd, Duration::from_millis(20)) {
                    if stop2.load(Ordering::Acquire) {
                        return;
                    }
                    continue;
                }
                uffd.read_events(&mut buf).unwrap();
                for event in buf.drain() {
                    match event {
                        Event::Pagefault(fault) => {
                            faults2.fetch_add(1, Ordering::AcqRel);
                            resolve(&uffd, fault);
                        }
                        other => panic!("unexpected event {other:?}"),
                    }
                }
            }
        });
        Self {
            stop,
            faults,
            thread: Some(thread),
        }
    }

    /// Stops the thread; returns how many faults it resolved. Panics if the thread panicked.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
        self.faults.load(Ordering::Acquire)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Runs the current test in a child process of its own (this binary, `--exact <test>`), and
/// asserts that it passed there within two minutes. Returns `true` in the parent (which should then return) and
/// `false` in the child (which should run the test body).
///
/// Tests that fork do so in such a child: a fork in the shared test process would make the
/// pages of every concurrently running test shared for a moment.
fn run_in_child() -> bool {
    test_support::child::run_in_child(Duration::from_secs(120))
}

/// Asserts that a child run of test `name` (a [`test_support::child::output_within`] run)
/// passed and really ran that one test.
#[track_caller]
fn check_child_output(name: &str, out: &test_support::child::Finished) {
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    let status = out
        .status
        .expect("output_within returns only finished runs");
    assert!(
        status.success() && stdout.contains("1 passed"),
        "child run of {name} failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // Forward a skip notice from the child, so it is visible in the parent's output.
    for line in stderr.lines().filter(|l| l.starts_with("skipping ")) {
        eprintln!("{line}");
    }
}
