//! The machine around the run: the memory cgroup its regions are charged to, KSM, zram swap, and the
//! counters that show the walkers ran (`/proc/vmstat`, the cgroup's `memory.stat`, KSM's
//! `pages_*`), the kernel log, and the fd count.
//!
//! [`MachineGuard`] records every change it makes and undoes it in [`MachineGuard::restore`],
//! which its `Drop` calls too (on an error, a panic, or after Ctrl-C stopped the run). It never
//! writes under `/sys/kernel/mm/damon`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KSM: &str = "/sys/kernel/mm/ksm";
const MEMCG_V1: &str = "/sys/fs/cgroup/memory";
/// What a run changed, written as it changes it, removed when restored: a run killed outright
/// (SIGKILL, the OOM killer) is undone by the next one.
const STATE: &str = "/run/remap-torture.state";

/// What the run wants changed on the machine.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wanted {
    /// Put the process in a new memory cgroup with this limit.
    pub(crate) cgroup_limit: Option<u64>,
    /// Run KSM.
    pub(crate) ksm: bool,
    /// Make sure swap is on (zram when none is), held for the run ([`remap_swap::SwapHold`]).
    pub(crate) swap: bool,
}

/// Every change made, so it can be undone.
#[derive(Debug, Default)]
pub(crate) struct MachineGuard {
    cgroup: Option<PathBuf>,
    /// The limit set on `cgroup`.
    limit: Option<u64>,
    /// The memory cgroup the process came from.
    home: Option<PathBuf>,
    ksm_saved: Vec<(String, String)>,
    /// Swap held for the run: a zram set-up (ours or another remap process's) is undone by the
    /// last hold to end.
    swap: Option<remap_swap::SwapHold>,
    /// Recovering a killed run that held swap: its set-up may be left for us to undo.
    earlier_swap: bool,
    restored: bool,
    pub(crate) notes: Vec<String>,
}

/// Why changing the machine for a run (or restoring it) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MachineError {
    /// A file of `/proc`, `/sys`, `/dev` or `/run` could not be read, written or created.
    #[error("{action} {}", path.display())]
    File {
        /// What was being done, e.g. `writing "1" to`.
        action: String,
        /// The file.
        path: PathBuf,
        /// The error, with its errno.
        #[source]
        source: io::Error,
    },
    /// Swap could not be set up, or the set-up undone.
    #[error(transparent)]
    Swap(#[from] remap_swap::SwapError),
    /// Another run is going: two runs would fight over the cgroup, KSM and swap.
    #[error("another remap torture (pid {pid}) is running")]
    AnotherRun {
        /// The other run's pid.
        pid: u32,
    },
    /// The reclaim walker needs the cgroup v1 memory controller, and the process in it.
    #[error("the reclaim walker needs the cgroup v1 memory controller at {MEMCG_V1}: {why}")]
    NoMemcg {
        /// What is missing.
        why: &'static str,
    },
}

fn file_error(action: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> MachineError {
    let (action, path) = (action.into(), path.to_path_buf());
    move |source| MachineError::File {
        action,
        path,
        source,
    }
}

fn write(path: impl AsRef<Path>, value: &str) -> Result<(), MachineError> {
    let path = path.as_ref();
    fs::write(path, value).map_err(file_error(format!("writing {value:?} to"), path))
}

fn read(path: impl AsRef<Path>) -> Result<String, MachineError> {
    let path = path.as_ref();
    fs::read_to_string(path).map_err(file_error("reading", path))
}

/// The memory cgroup (v1) the process is in, from `/proc/self/cgroup`.
fn own_memcg() -> Result<PathBuf, MachineError> {
    let text = read("/proc/self/cgroup")?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        if let (Some(c), Some(p)) = (controllers, path) {
            if c.split(',').any(|c| c == "memory") {
                return Ok(Path::new(MEMCG_V1).join(p.trim_start_matches('/')));
            }
        }
    }
    Err(MachineError::NoMemcg {
        why: "/proc/self/cgroup names no memory controller",
    })
}

impl MachineGuard {
    /// Makes the changes `wanted` asks for. On an error the guard of what was already changed
    /// comes back with the error, so the caller can restore it (dropping it does too).
    pub(crate) fn apply(
        wanted: &Wanted,
    ) -> Result<MachineGuard, Box<(MachineGuard, MachineError)>> {
        let mut guard = MachineGuard::default();
        if let Err(e) = guard.apply_inner(wanted) {
            return Err(Box::new((guard, e)));
        }
        Ok(guard)
    }

    fn apply_inner(&mut self, wanted: &Wanted) -> Result<(), MachineError> {
        self.recover_earlier_run()?;
        if wanted.swap {
            let hold = remap_swap::SwapHold::acquire()?;
            if let Some(device) = hold.set_up() {
                self.notes.push(format!(
                    "set up zram swap on {device} (removed when its last user ends)"
                ));
            }
            self.swap = Some(hold);
            self.save_state();
        }
        if wanted.ksm {
            for (name, value) in [
                ("pages_to_scan", "4000"),
                ("sleep_millisecs", "10"),
                ("run", "1"),
            ] {
                let path = Path::new(KSM).join(name);
                let old = read(&path)?.trim().to_owned();
                self.ksm_saved.push((name.to_owned(), old));
                self.save_state();
                write(&path, value)?;
            }
        }
        if let Some(limit) = wanted.cgroup_limit {
            if !Path::new(MEMCG_V1).join("memory.limit_in_bytes").exists() {
                return Err(MachineError::NoMemcg {
                    why: "memory.limit_in_bytes is not there",
                });
            }
            let home = own_memcg()?;
            let pid = std::process::id();
            let dir = Path::new(MEMCG_V1).join(format!("remap-torture-{pid}"));
            fs::create_dir(&dir).map_err(file_error("creating", &dir))?;
            self.cgroup = Some(dir.clone());
            self.home = Some(home);
            self.save_state();
            // Swap freely (zram). No OOM kill: a task that cannot charge waits, and the run's
            // OOM guard (`oom_guard`) lifts the limit for a moment; the limit only forces reclaim.
            // The process is not put in it here: only the regions' pages are charged to it
            // (`charged_to_cgroup`).
            let _ = write(dir.join("memory.swappiness"), "100");
            write(dir.join("memory.oom_control"), "1")?;
            write(dir.join("memory.limit_in_bytes"), &limit.to_string())?;
            self.limit = Some(limit);
        }
        Ok(())
    }

    /// Runs `populate` with the process in the run's cgroup (if it made one) and moves the
    /// process back to its own cgroup afterwards, so that what `populate` faults in is charged to
    /// the cgroup and nothing else the run allocates is.
    ///
    /// Charges stay with the cgroup when the process leaves it (cgroup v1 does not move them), and
    /// a page swapped out of it is charged to it again when it is swapped back in, so the regions
    /// stay under the limit. The harness must not be: with `oom_kill_disable` a charge that fails
    /// in a kernel-mode fault is not waited for but fails, and when that fault is the kernel
    /// writing a thread's `rseq` area (glibc registers one in each thread's control block) on
    /// the way back to user space, the kernel kills the process with SIGSEGV; and a charge that
    /// waits in a user fault after the OOM guard stopped waits for ever.
    /// `docs/findings/memcg-oom-disabled-rseq-sigsegv.md`.
    pub(crate) fn charged_to_cgroup<T>(
        &self,
        populate: impl FnOnce() -> T,
    ) -> Result<T, MachineError> {
        let (Some(dir), Some(home)) = (&self.cgroup, &self.home) else {
            return Ok(populate());
        };
        let pid = std::process::id().to_string();
        write(dir.join("cgroup.procs"), &pid)?;
        let populated = populate();
        write(home.join("cgroup.procs"), &pid)?;
        Ok(populated)
    }

    /// The switch that puts the process's main thread, alone, in the run's cgroup and takes it
    /// out again ([`CgroupOwner`]); it starts outside. Without a cgroup it does nothing.
    pub(crate) fn mm_owner(&self) -> CgroupOwner {
        CgroupOwner {
            dirs: self.cgroup.clone().zip(self.home.clone()),
            inside: std::sync::Mutex::new(false),
            forks_at_home: !rseq_off_in(&std::env::var("GLIBC_TUNABLES").unwrap_or_default()),
        }
    }

    fn save_state(&self) {
        // The start time goes with the pid: a pid alone is reused, and a stale state file must
        // not make a later run believe an unrelated process is a torture run still going.
        let pid = std::process::id();
        let mut text = format!("pid {pid} {}\n", start_time(pid).unwrap_or(0));
        for (name, old) in &self.ksm_saved {
            text.push_str(&format!("ksm {name} {old}\n"));
        }
        if self.swap.is_some() {
            text.push_str("swap held\n");
        }
        if let (Some(c), Some(h)) = (&self.cgroup, &self.home) {
            text.push_str(&format!("cgroup {} {}\n", c.display(), h.display()));
        }
        if let Err(e) = write(STATE, &text) {
            tracing::warn!("{}", error_chain(&e));
        }
    }

    /// Undoes what an earlier run recorded in [`STATE`] and could not restore (it was killed);
    /// refuses to run next to a live one.
    fn recover_earlier_run(&mut self) -> Result<(), MachineError> {
        let Ok(text) = fs::read_to_string(STATE) else {
            return Ok(());
        };
        let mut earlier = MachineGuard::default();
        let mut pid = 0u32;
        let mut started = None;
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["pid", p] => pid = p.parse().unwrap_or(0),
                ["pid", p, s] => {
                    pid = p.parse().unwrap_or(0);
                    started = s.parse::<u64>().ok();
                }
                ["ksm", name, old] => earlier
                    .ksm_saved
                    .push(((*name).to_owned(), (*old).to_owned())),
                // "zram <device>" from runs before swap was held.
                ["swap", "held"] | ["zram", _] => earlier.earlier_swap = true,
                ["cgroup", c, h] => {
                    earlier.cgroup = Some(PathBuf::from(c));
                    earlier.home = Some(PathBuf::from(h));
                }
                _ => {}
            }
        }
        // Alive only if that pid still runs the same process (same start time): pids are reused.
        let alive = pid != 0
            && pid != std::process::id()
            && start_time(pid).is_some_and(|now| started.is_none_or(|then| then == now));
        if alive {
            earlier.restored = true;
            return Err(MachineError::AnotherRun { pid });
        }
        let errors = earlier.restore_inner(false);
        self.notes.push(format!(
            "restored what an earlier run (pid {pid}, killed) left changed{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        ));
        let _ = fs::remove_file(STATE);
        Ok(())
    }

    /// The cgroup the run is in, if it made one.
    pub(crate) fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }

    /// The cgroup and the limit the run set on it, if it made one.
    pub(crate) fn cgroup_and_limit(&self) -> Option<(&Path, u64)> {
        Some((self.cgroup.as_deref()?, self.limit?))
    }

    /// Undoes every change, in reverse order; returns what could not be undone.
    pub(crate) fn restore(&mut self) -> Vec<String> {
        self.restore_inner(true)
    }

    fn restore_inner(&mut self, own: bool) -> Vec<String> {
        let mut errors = Vec::new();
        let mut failed = |e: MachineError| errors.push(error_chain(&e));
        if self.restored {
            return Vec::new();
        }
        self.restored = true;
        if let (Some(dir), Some(home)) = (self.cgroup.take(), self.home.take()) {
            // Normally home already (`charged_to_cgroup`); not after a failure inside it.
            if own {
                if let Err(e) = write(home.join("cgroup.procs"), &std::process::id().to_string()) {
                    failed(e);
                }
            }
            // Charges of freed memory drain asynchronously; rmdir succeeds once no task is left.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if Instant::now() > deadline => {
                        failed(file_error("removing", &dir)(e));
                        break;
                    }
                    Err(_) => {
                        let _ = write(dir.join("memory.force_empty"), "0");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
        for (name, old) in self.ksm_saved.drain(..).rev() {
            if let Err(e) = write(Path::new(KSM).join(&name), &old) {
                failed(e);
            }
        }
        if let Some(hold) = self.swap.take() {
            if let Err(e) = hold.release() {
                failed(e.into());
            }
        }
        if std::mem::take(&mut self.earlier_swap) {
            // The killed run's hold ended with it; undo its set-up unless someone holds swap.
            if let Err(e) = remap_swap::undo_if_unused() {
                failed(e.into());
            }
        }
        if own && errors.is_empty() {
            let _ = fs::remove_file(STATE);
        }
        errors
    }
}

impl Drop for MachineGuard {
    fn drop(&mut self) {
        for e in self.restore() {
            tracing::error!("restoring the machine: {e}");
        }
    }
}

/// Where the process's main thread is, the run's cgroup or home ([`MachineGuard::mm_owner`]),
/// and with it where every anonymous page the process faults in is charged.
///
/// cgroup v1 charges a user page to the cgroup of its mm's owner, which is the main thread (the
/// thread-group leader), whichever thread faults it; kernel memory goes to the cgroup of the
/// thread that allocates it. With the main thread alone in the cgroup ([`CgroupOwner::enter`]),
/// the pages the kernel makes during a run (copy-on-write after a KSM merge, a THP collapse,
/// `UFFDIO_COPY`) are charged to the cgroup; with the process outside, they were charged at home
/// and the cgroup drained within seconds, leaving nothing to reclaim.
///
/// Enter only once every thread of the run is started: a thread's control block (its `rseq`
/// area) is faulted in when it starts and must stay charged at home, where no limit makes a
/// charge fail (`charged_to_cgroup`'s reasons). A fork shares it again: while a child lives,
/// the kernel's first write to it (the rseq update on the way back to user space) copies it,
/// charged to the owner's cgroup, so a fork happens with the main thread at home
/// ([`CgroupOwner::at_home`]). What the harness faults in for the first time while the main
/// thread is in the cgroup is charged to the cgroup; [`oom_guard`] takes the limit off when it
/// stops, so nothing of it can wait on the cgroup after the run.
#[derive(Debug)]
pub(crate) struct CgroupOwner {
    /// The run's cgroup and the process's own.
    dirs: Option<(PathBuf, PathBuf)>,
    /// Whether the main thread is meant to be in the cgroup (between `enter` and `leave`).
    inside: std::sync::Mutex<bool>,
    /// Whether forks need the main thread at home: not when glibc registered no rseq area.
    forks_at_home: bool,
}

/// Whether the glibc tunables `tunables` (`GLIBC_TUNABLES`, read when the process started)
/// turn rseq registration off, so the kernel never writes a thread's control block by itself.
pub(crate) fn rseq_off_in(tunables: &str) -> bool {
    tunables.split(':').any(|t| t == "glibc.pthread.rseq=0")
}

impl CgroupOwner {
    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.inside.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the main thread to `dir` (`tasks` moves one thread, `cgroup.procs` all of them;
    /// the main thread's id is the pid).
    fn move_to(dir: &Path) -> Result<(), MachineError> {
        write(dir.join("tasks"), &std::process::id().to_string())
    }

    /// Puts the main thread in the run's cgroup.
    pub(crate) fn enter(&self) -> Result<(), MachineError> {
        let mut inside = self.lock();
        if let Some((dir, _)) = &self.dirs {
            Self::move_to(dir)?;
            *inside = true;
        }
        Ok(())
    }

    /// Moves the main thread back home.
    pub(crate) fn leave(&self) -> Result<(), MachineError> {
        let mut inside = self.lock();
        if let (Some((_, home)), true) = (&self.dirs, *inside) {
            Self::move_to(home)?;
            *inside = false;
        }
        Ok(())
    }

    /// Whether [`CgroupOwner::around_fork`] moves the main thread home.
    pub(crate) fn forks_at_home(&self) -> bool {
        self.forks_at_home
    }

    /// Runs `f`, a fork and its child's life, with the main thread at home
    /// ([`CgroupOwner::at_home`]) unless the process registered no rseq area: the kernel then
    /// writes no shared control block by itself, and the pages written while the child lives
    /// are copied into the cgroup, which keeps the reclaim pressure (the run's threads' syscalls
    /// into a shared buffer could still fail with EFAULT; none did in the runs measured).
    pub(crate) fn around_fork<T>(&self, f: impl FnOnce() -> T) -> Result<T, MachineError> {
        if self.forks_at_home {
            self.at_home(f)
        } else {
            Ok(f())
        }
    }

    /// Runs `f` with the main thread at home (a fork and its child's life), then puts it back
    /// where it was. `f` does not run if the main thread could not be moved home.
    pub(crate) fn at_home<T>(&self, f: impl FnOnce() -> T) -> Result<T, MachineError> {
        let inside = self.lock();
        let Some((dir, home)) = self.dirs.as_ref().filter(|_| *inside) else {
            return Ok(f());
        };
        Self::move_to(home)?;
        let done = f();
        Self::move_to(dir)?;
        Ok(done)
    }
}

impl Drop for CgroupOwner {
    fn drop(&mut self) {
        if let Err(e) = self.leave() {
            tracing::error!(
                "moving the main thread back to its cgroup: {}",
                error_chain(&e)
            );
        }
    }
}

/// An error and its sources, `: `-separated (the report keeps what could not be restored as text).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Watches the cgroup for an OOM (tasks waiting because reclaim could not keep up) and lifts the
/// limit for a moment when one happens, so the run neither hangs nor is killed. Returns how
/// often it had to. Reads and writes through files opened once, so the guard itself never needs
/// a new page while the cgroup is out of memory. When told to stop it takes the limit off for
/// good: whatever is still charged to the cgroup (the regions, what the harness faulted in while
/// its main thread was there) can then always be faulted back in without waiting on anyone.
pub(crate) fn oom_guard(dir: &Path, stop: &std::sync::atomic::AtomicBool) -> u64 {
    use std::os::unix::fs::FileExt;
    let (Ok(oom), Ok(limit_file)) = (
        fs::File::open(dir.join("memory.oom_control")),
        fs::OpenOptions::new()
            .write(true)
            .open(dir.join("memory.limit_in_bytes")),
    ) else {
        return 0;
    };
    let limit = cgroup_value(dir, "memory.limit_in_bytes").unwrap_or(u64::MAX / 2);
    let (normal, lifted) = (limit.to_string(), (limit * 2).to_string());
    let mut buf = [0u8; 256];
    let mut rescues = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let n = oom.read_at(&mut buf, 0).unwrap_or(0);
        if buf[..n].windows(11).any(|w| w == b"under_oom 1") {
            rescues += 1;
            let _ = limit_file.write_at(lifted.as_bytes(), 0);
            std::thread::sleep(Duration::from_millis(100));
            // Lowering a limit below the usage reclaims first and fails (EBUSY) when reclaim
            // made no progress: the run would go on at the lifted limit, hardly reclaiming.
            while limit_file.write_at(normal.as_bytes(), 0).is_err()
                && !stop.load(std::sync::atomic::Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = limit_file.write_at(b"-1", 0);
    rescues
}

/// `key value` lines (as `/proc/vmstat` and `memory.stat`) as a map.
pub(crate) fn parse_counters(text: &str) -> BTreeMap<String, i64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// The `/proc/vmstat` counters that show reclaim, swap, compaction and THP at work.
pub(crate) fn vmstat() -> BTreeMap<String, i64> {
    let all = parse_counters(&fs::read_to_string("/proc/vmstat").unwrap_or_default());
    all.into_iter()
        .filter(|(k, _)| {
            [
                "pgrefill",
                "pgactivate",
                "pgdeactivate",
                "workingset_",
                "pgscan_",
                "pgsteal_",
                "pswpin",
                "pswpout",
                "compact_",
                "thp_",
                "ksm_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
        })
        .collect()
}

/// KSM's global counters.
pub(crate) fn ksm_counters() -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for name in [
        "pages_shared",
        "pages_sharing",
        "pages_unshared",
        "full_scans",
        "ksm_zero_pages",
    ] {
        if let Ok(v) = read(Path::new(KSM).join(name)) {
            if let Ok(v) = v.trim().parse() {
                out.insert(name.to_owned(), v);
            }
        }
    }
    out
}

/// `after - before` for every key of `after`.
pub(crate) fn delta(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .collect()
}

/// A cgroup file as a number.
pub(crate) fn cgroup_value(dir: &Path, file: &str) -> Option<u64> {
    read(dir.join(file)).ok()?.trim().parse().ok()
}

/// The cgroup's `memory.stat`.
pub(crate) fn cgroup_stat(dir: &Path) -> BTreeMap<String, i64> {
    parse_counters(&read(dir.join("memory.stat")).unwrap_or_default())
}

/// This process's resident anonymous memory (`RssAnon` of `/proc/self/status`), in bytes: the
/// heap and stacks it grew during the run are charged to its cgroup and are not a leak.
pub(crate) fn rss_anon() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Open file descriptors of this process.
pub(crate) fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The kernel log from now on (`/dev/kmsg`, opened at its end).
#[derive(Debug)]
pub(crate) struct KernelLog {
    file: Option<fs::File>,
}

/// Kernel log lines that mean the kernel found itself broken.
const BAD_LINES: [&str; 9] = [
    "BUG",
    "WARNING",
    "bad page",
    "list_add corruption",
    "list_del corruption",
    "list corruption",
    "blocked for more than",
    "hung_task",
    "Oops",
];

impl KernelLog {
    pub(crate) fn open() -> KernelLog {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .ok();
        if let Some(f) = &file {
            let _ = rustix::fs::seek(f, rustix::fs::SeekFrom::End(0));
        }
        KernelLog { file }
    }

    pub(crate) fn available(&self) -> bool {
        self.file.is_some()
    }

    /// New lines since `open` that match a BUG / WARNING / bad page / list corruption / hung
    /// task pattern.
    pub(crate) fn bad_lines(&mut self) -> Vec<String> {
        let Some(file) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let record = String::from_utf8_lossy(&buf[..n]);
                    let message = record.split_once(';').map_or(&*record, |(_, m)| m);
                    let first = message.lines().next().unwrap_or("").to_owned();
                    if BAD_LINES.iter().any(|p| first.contains(p)) {
                        out.push(first);
                    }
                }
                // EPIPE: records were overwritten while we read; keep going.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        out
    }
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22), which with its
/// pid names one process for good.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests;
