//! Minimal reproducer: in a cgroup v1 memory cgroup with `oom_kill_disable`, a full cgroup kills
//! a thread with SIGSEGV when the kernel cannot write the thread's swapped-out `rseq` area.
//!
//! `oom_kill_disable` promises that a task which cannot charge memory sleeps until there is room
//! (cgroup-v1 memory.rst, "OOM Control"). That holds for a fault in user mode only. A charge made
//! by a fault in kernel mode (a `copy_to_user`) fails instead, the access returns EFAULT, and
//! when the access is the kernel updating the thread's registered `rseq` area on the way back to
//! user space, the kernel forces SIGSEGV (`si_code` SI_KERNEL, no address) and the process dies.
//! glibc registers an `rseq` area in every thread's control block, so any thread of a process in
//! such a cgroup dies this way once its control block page was swapped out and the cgroup is
//! full: this is what killed about one `remap torture` run in ten. See
//! `docs/findings/memcg-oom-disabled-rseq-sigsegv.md`.
//!
//! The child (this test binary re-run on this test) turns glibc's `rseq` off
//! (`GLIBC_TUNABLES=glibc.pthread.rseq=0`) and registers its own area on a page of its own, enters
//! a fresh cgroup (64 MiB, `oom_kill_disable`), locks all its memory but that page
//! (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`, `munlock` of the page), pages the page out,
//! then fills the cgroup with `read(/dev/zero)` into fresh locked pages until a read fails with
//! EFAULT (first half of the finding: a kernel-mode charge fails, it does not wait), and sleeps.
//! Waking, the kernel must write the `rseq` area, which is swapped out, into a full cgroup with
//! nothing left to reclaim. It records each stage in a shared page, so the parent knows where it
//! died.
//!
//! The test passes on a kernel that kills the child (it prints that it reproduced the finding)
//! and on one that lets it sleep until there is room (a watcher in the parent raises the limit
//! once the child has been full for 5 s) or gives it the room (it prints that); it fails on
//! anything else (the fill never failing, a read failing otherwise, death at another stage or by
//! another signal, a hang). A run in which reclaim kept the rseq page resident shows nothing and
//! is run again, up to 3 times. `REMAP_EXPECT_RSEQ_SIGSEGV=1` is the replay mode: the test then
//! fails unless the child died of SIGSEGV after the cgroup filled.

#![allow(unsafe_code)] // raw syscalls on the child's own pages, to pin the kernel's behaviour

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use test_support::{require, Need};

const MEMCG_V1: &str = "/sys/fs/cgroup/memory";
const TEST: &str = "kernel_kills_a_thread_whose_rseq_area_it_cannot_charge_back_in";
/// Set in the child: the cgroup directory and the stage file.
const CHILD_CGROUP: &str = "REMAP_RSEQ_REPRO_CGROUP";
const CHILD_STAGE: &str = "REMAP_RSEQ_REPRO_STAGE";
const LIMIT: usize = 64 << 20;
/// The `rseq` signature the child registers with (any value; it never runs a critical section).
const RSEQ_SIG: u32 = 0x5305_3053;

/// How far the child got, in word 0 of the stage page; word 1 holds a detail (pages filled, or an
/// errno), word 2 the errno of the fill's failing read, word 3 is 1 once pagemap showed the rseq
/// area swapped out with the cgroup full.
mod stage {
    pub(crate) const ENTERED: u64 = 1;
    pub(crate) const REGISTERED: u64 = 2;
    pub(crate) const LOCKED: u64 = 3;
    pub(crate) const PAGED_OUT: u64 = 4;
    pub(crate) const FULL: u64 = 5;
    pub(crate) const WOKE: u64 = 6;
}

/// Exit codes of a child that did not get through (it died otherwise).
const EXIT_SETUP_FAILED: i32 = 3;
const EXIT_NEVER_FULL: i32 = 4;
const EXIT_FILL_ERROR: i32 = 5;

fn errno() -> u64 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .map_or(0, i64::from)
        .unsigned_abs()
}

/// Woken (set to 1, FUTEX_WAKE) when the sleeper may return to user space.
static GO: AtomicU32 = AtomicU32::new(0);

/// The child's side: never returns (it ends with an exit code saying where it stopped, or dies). The sleeper thread registers the rseq area and sleeps in
/// FUTEX_WAIT (so the kernel has no reason to touch the area) while this thread pages the area out
/// and fills the cgroup, then wakes it.
#[allow(clippy::exit)]
fn child(cgroup: &Path, stage_file: &Path) -> ! {
    let page = rustix::param::page_size();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(stage_file)
        .expect("the stage file");
    let zero = std::fs::File::open("/dev/zero").expect("/dev/zero");
    let pagemap = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
    // SAFETY: a fresh shared mapping of the stage file (one page, the parent sized it); reached
    // only through the atomics below, never through a reference.
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(shared, libc::MAP_FAILED, "mapping the stage file");
    let shared = shared as usize;
    let word = move |i: usize| {
        // SAFETY: words 0..3 of the live, page-sized, 8-aligned shared mapping, only ever
        // accessed atomically (here and, after the child is gone, by the parent's read(2)).
        unsafe { AtomicU64::from_ptr((shared as *mut u64).add(i)) }
    };
    let set = move |s: u64, detail: u64| {
        word(1).store(detail, Ordering::SeqCst);
        word(0).store(s, Ordering::SeqCst);
    };
    let fail = move |s: u64, code: i32| -> ! {
        set(s, errno());
        std::process::exit(code)
    };
    set(0, 0);
    // A core dump of a full cgroup is useless and slow; the default SIGSEGV action (std installs
    // a handler for stack overflows) makes the kernel's SIGSEGV kill at once.
    // SAFETY: plain syscalls on this process's own limits and signal disposition.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
    }
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .expect("entering the cgroup");
    set(stage::ENTERED, 0);
    // SAFETY: a fresh private anonymous page of our own.
    let area = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if area == libc::MAP_FAILED {
        fail(stage::ENTERED, EXIT_SETUP_FAILED);
    }
    let area = area as usize;
    let sleeper = std::thread::spawn(move || {
        // No wrapper for rseq(2) in rustix or uffd: the reproducer must register its own area.
        // SAFETY: registers the first 32 bytes (the original `struct rseq` size) of our own
        // zeroed, page-aligned page as this thread's rseq area; the page stays mapped until the
        // process ends.
        #[allow(clippy::disallowed_methods)]
        let rc = unsafe { libc::syscall(libc::SYS_rseq, area, 32u32, 0, RSEQ_SIG) };
        if rc != 0 {
            // EBUSY: glibc registered one anyway (the tunable was not honoured).
            fail(stage::ENTERED, EXIT_SETUP_FAILED);
        }
        set(stage::REGISTERED, 0);
        while GO.load(Ordering::SeqCst) == 0 {
            let _ =
                rustix::thread::futex::wait(&GO, rustix::thread::futex::Flags::PRIVATE, 0, None);
        }
        // Back in user space: the kernel has written (or failed to write) the rseq area.
        set(stage::WOKE, word(1).load(Ordering::SeqCst));
    });
    while word(0).load(Ordering::SeqCst) < stage::REGISTERED {
        std::thread::yield_now();
    }
    // Give the sleeper time to reach FUTEX_WAIT.
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: locking our own address space; the rseq page is left evictable.
    let locked = unsafe {
        libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) == 0
            && libc::munlock(area as *mut libc::c_void, page) == 0
    };
    if !locked {
        fail(stage::REGISTERED, EXIT_SETUP_FAILED);
    }
    set(stage::LOCKED, 0);
    // Fresh pages, locked as they are faulted in (MCL_FUTURE | MCL_ONFAULT): twice the limit.
    let fill_len = 2 * LIMIT;
    // SAFETY: a fresh private anonymous mapping of our own, written only by read(2) below.
    let fill = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            fill_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if fill == libc::MAP_FAILED {
        fail(stage::LOCKED, EXIT_SETUP_FAILED);
    }
    let mut filled = 0usize;
    // Page the area out, fill until a read fails with EFAULT; again while the area is not swapped
    // out at that point (reclaim found it referenced).
    for _ in 0..16 {
        // SAFETY: our own page, which nothing but the kernel's rseq updates touches.
        if unsafe { libc::madvise(area as *mut libc::c_void, page, libc::MADV_PAGEOUT) } != 0 {
            fail(stage::LOCKED, EXIT_SETUP_FAILED);
        }
        set(stage::PAGED_OUT, 0);
        loop {
            if filled * page >= fill_len {
                set(stage::PAGED_OUT, filled as u64);
                std::process::exit(EXIT_NEVER_FULL);
            }
            // SAFETY: page `filled` of our own fill mapping, in bounds; the kernel writes it.
            let n = unsafe {
                libc::read(
                    zero.as_raw_fd(),
                    (fill as *mut u8).add(filled * page).cast(),
                    page,
                )
            };
            if n == page as isize {
                filled += 1;
                continue;
            }
            let e = errno();
            word(2).store(e, Ordering::SeqCst);
            if n < 0 && e == libc::EFAULT as u64 {
                break;
            }
            set(stage::PAGED_OUT, filled as u64);
            std::process::exit(EXIT_FILL_ERROR);
        }
        let mut entry = [0u8; 8];
        let at = (area / page * 8) as u64;
        let swapped = pagemap.read_exact_at(&mut entry, at).is_ok()
            && u64::from_ne_bytes(entry) >> 62 & 0b11 == 0b01;
        if swapped {
            word(3).store(1, Ordering::SeqCst);
            set(stage::FULL, filled as u64);
            break;
        }
    }
    GO.store(1, Ordering::SeqCst);
    let _ = rustix::thread::futex::wake(&GO, rustix::thread::futex::Flags::PRIVATE, 1);
    let _ = sleeper.join();
    // SAFETY: `_exit` allocates nothing (printing might need a page the cgroup cannot give).
    unsafe { libc::_exit(0) }
}

/// The cgroup made for the child, removed on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new() -> Cgroup {
        let dir = Path::new(MEMCG_V1).join(format!("remap-rseq-repro-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("creating the cgroup");
        let cgroup = Cgroup(dir);
        let _ = std::fs::write(cgroup.0.join("memory.swappiness"), "100");
        std::fs::write(cgroup.0.join("memory.oom_control"), "1").expect("oom_kill_disable");
        std::fs::write(cgroup.0.join("memory.limit_in_bytes"), LIMIT.to_string())
            .expect("the limit");
        cgroup
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The child is gone; its charges drain asynchronously.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.0).is_err() {
            if Instant::now() >= deadline {
                eprintln!(
                    "could not remove the cgroup {} (left behind)",
                    self.0.display()
                );
                return;
            }
            let _ = std::fs::write(self.0.join("memory.force_empty"), "0");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The page the child records its stages in, removed on drop (also when a run times out).
struct StageFile(PathBuf);

impl StageFile {
    fn new(attempt: u32) -> StageFile {
        let path =
            std::env::temp_dir().join(format!("remap-rseq-repro-{}-{attempt}", std::process::id()));
        std::fs::write(&path, vec![0u8; rustix::param::page_size()]).expect("the stage file");
        StageFile(path)
    }

    /// Words 0..4: the stage, its detail, the fill's errno, whether the area was swapped out.
    fn words(&self) -> [u64; 4] {
        let bytes = std::fs::read(&self.0).unwrap_or_default();
        let mut words = [0u64; 4];
        for (w, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        }
        words
    }
}

impl Drop for StageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How one child run ended.
struct Attempt {
    status: std::process::ExitStatus,
    words: [u64; 4],
    /// Whether the parent had to give the cgroup room (a kernel keeping its promise sleeps).
    gave_room: bool,
    stderr: String,
}

/// Runs the child once in a fresh cgroup. A watcher gives the cgroup room once the child has
/// been full for a few seconds: on a kernel that keeps `oom_kill_disable`'s promise the woken
/// sleeper waits for room, which nothing else would ever make; on 6.18 the child is dead by then.
fn attempt(n: u32) -> Attempt {
    let stage_file = StageFile::new(n);
    let cgroup = Cgroup::new();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = std::thread::spawn({
        let (done, limit, stage_path) = (
            std::sync::Arc::clone(&done),
            cgroup.0.join("memory.limit_in_bytes"),
            stage_file.0.clone(),
        );
        move || {
            let mut full_since: Option<Instant> = None;
            while !done.load(Ordering::SeqCst) {
                let stage = std::fs::read(&stage_path)
                    .ok()
                    .and_then(|b| {
                        b.get(..8)
                            .map(|w| u64::from_ne_bytes(w.try_into().unwrap()))
                    })
                    .unwrap_or(0);
                if stage >= stage::FULL {
                    let since = *full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(5) {
                        std::fs::write(&limit, (4 * LIMIT).to_string()).expect("raising the limit");
                        return true;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        }
    });
    let out = test_support::child::output_within(
        Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_CGROUP, &cgroup.0)
            .env(CHILD_STAGE, &stage_file.0)
            .env("GLIBC_TUNABLES", "glibc.pthread.rseq=0"),
        Duration::from_secs(60),
    );
    done.store(true, Ordering::SeqCst);
    let gave_room = watcher.join().expect("the watcher");
    drop(cgroup);
    Attempt {
        status: out.status.expect("the child finished within 60 s"),
        words: stage_file.words(),
        gave_room,
        stderr: out.stderr,
    }
}

#[test]
fn kernel_kills_a_thread_whose_rseq_area_it_cannot_charge_back_in() {
    if let (Ok(cgroup), Ok(stage_file)) = (std::env::var(CHILD_CGROUP), std::env::var(CHILD_STAGE))
    {
        child(Path::new(&cgroup), Path::new(&stage_file));
    }
    require!(Need::Root, Need::Swap);
    if !Path::new(MEMCG_V1).join("memory.limit_in_bytes").exists() {
        test_support::skip(TEST, "the cgroup v1 memory controller");
        return;
    }
    // Reclaim may find the rseq page referenced and keep it resident until the cgroup is full;
    // then the run shows nothing (the sleeper wakes on a resident area) and is run again.
    for n in 1..=3 {
        let run = attempt(n);
        let [reached, detail, fill_errno, swapped] = run.words;
        let area_swapped = swapped == 1;
        let status = run.status;
        let context = format!(
            "attempt {n}: child {status:?}, stage {reached}, detail {detail}, fill errno \
             {fill_errno}, rseq area swapped out when the cgroup was full: {area_swapped}, room \
             given: {}\n--- stderr\n{}",
            run.gave_room, run.stderr
        );
        let killed = status.signal() == Some(libc::SIGSEGV) && reached >= stage::PAGED_OUT;
        if killed {
            assert!(area_swapped && reached == stage::FULL, "{context}");
            eprintln!(
                "reproduced: SIGSEGV when the sleeper woke, its rseq area swapped out and the \
                 cgroup full ({detail} pages filled until read(2) failed with EFAULT): {context}"
            );
            return;
        }
        assert_eq!(status.code(), Some(0), "{context}");
        assert_eq!(reached, stage::WOKE, "{context}");
        if area_swapped {
            // A kernel that keeps its promise: the sleeper woke, after its rseq area had gone to
            // swap and the cgroup had filled (it slept until the watcher gave room, or the kernel
            // found room itself).
            let replay = std::env::var("REMAP_EXPECT_RSEQ_SIGSEGV").is_ok_and(|v| v == "1");
            assert!(
                !replay,
                "replay mode: the kernel did not kill the child: {context}"
            );
            eprintln!("not reproduced: the sleeper woke and the child exited: {context}");
            return;
        }
        eprintln!("inconclusive, running again: the rseq area stayed resident: {context}");
    }
    panic!("in 3 attempts the reproducer never got its rseq area swapped out with the cgroup full");
}
