//! What a run found and what it did: the types [`run`](crate::run) returns, serialisable as the
//! CLI's JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Walker;

/// Which invariant a [`Violation`] broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    /// A page the run placed is gone (invariant 1).
    LostPage,
    /// A page exists twice, or where the run placed nothing (invariant 1).
    DuplicatePage,
    /// A page holds the wrong tag (invariant 1).
    WrongContent,
    /// A MOVE result the contract does not allow for the state (invariant 2).
    DisallowedResult,
    /// The kernel reported a result that is not what it did: an error although pages moved, or
    /// bytes counted that did not move (invariants 2 and 3). A kernel finding.
    KernelMisreport,
    /// A moved source did not read as a hole (invariant 3).
    SourceNotHole,
    /// A thread faulted on a page the run believed present (the page was lost).
    UnexpectedFault,
    /// A new BUG / WARNING / bad page / list corruption / hung task line (invariant 4).
    KernelLog,
    /// Cgroup usage or the fd count did not return to its baseline (invariant 5).
    Baseline,
    /// A walker driver shows no evidence that its walker ran.
    IdleWalker,
    /// The run's own machinery failed (a thread panicked, a system call it relies on failed).
    Harness,
}

impl ViolationKind {
    /// Whether this is a finding about the kernel rather than about the pages' bookkeeping.
    pub fn is_kernel_finding(self) -> bool {
        matches!(
            self,
            ViolationKind::KernelMisreport
                | ViolationKind::KernelLog
                | ViolationKind::DisallowedResult
        )
    }
}

/// One broken invariant.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// Which invariant.
    pub kind: ViolationKind,
    /// What happened, with the state.
    pub message: String,
    /// The thread that saw it (`mover-2`, `audit`, ...).
    pub thread: String,
    /// Seconds into the run.
    pub at_secs: f64,
    /// The page addresses involved.
    pub addrs: Vec<usize>,
    /// The shrunk operation log: the logged operations that touched these pages, oldest first.
    pub ops: Vec<String>,
}

/// What one walker driver did, and the evidence that its walker ran.
#[derive(Debug, Clone, Serialize)]
pub struct WalkerReport {
    /// The driver.
    pub walker: Walker,
    /// Operations issued (madvise calls, compactions, forks, flips, ...).
    pub ops: u64,
    /// Operations the kernel refused (their errnos are in `detail`).
    pub refused: u64,
    /// Named counts specific to the driver.
    pub detail: BTreeMap<String, i64>,
    /// Whether the counters show the walker ran.
    pub ran: bool,
    /// The counters that show it (or why they do not).
    pub evidence: String,
}

/// The memory cgroup the run lived in.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupReport {
    /// Its directory (removed at the end).
    pub path: String,
    /// `memory.limit_in_bytes`.
    pub limit_bytes: u64,
    /// The pages the run kept in its regions at the start, in bytes (above the limit).
    pub working_set_bytes: u64,
    /// `memory.failcnt`: how often usage hit the limit.
    pub failcnt: u64,
    /// `memory.max_usage_in_bytes`.
    pub max_usage_bytes: u64,
    /// `memory.usage_in_bytes` after the process joined, before it mapped anything.
    pub baseline_usage_bytes: u64,
    /// `memory.usage_in_bytes` after everything was unmapped.
    pub final_usage_bytes: u64,
    /// `memory.stat` at the end of the run (before unmapping).
    pub stat: BTreeMap<String, i64>,
}

/// Everything a run did and found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The master seed.
    pub seed: u64,
    /// How long the threads ran, in seconds.
    pub elapsed_secs: f64,
    /// Tagged pages (and zero pages) moved.
    pub pages_moved: u64,
    /// Hole pages "moved" with `ALLOW_SRC_HOLES`.
    pub holes_moved: u64,
    /// Pages moved while swapped out (moved without swap-in).
    pub swapped_pages_moved: u64,
    /// MOVE ioctls issued.
    pub moves: u64,
    /// MOVE ioctls per second.
    pub moves_per_sec: f64,
    /// Pages moved per second.
    pub pages_per_sec: f64,
    /// MOVE results by kind: `ok`, `partial`, `eexist`, `enoent`, `ebusy`, `eagain-events`, ...
    pub results: BTreeMap<String, u64>,
    /// Page checks by mutators and the final audit (tags read and compared).
    pub pages_checked: u64,
    /// Pages written by mutators (a new generation).
    pub pages_written: u64,
    /// Logical pages at the end (and at the start).
    pub logical_pages: u64,
    /// Logical pages dropped on purpose (`MADV_DONTNEED` of the flip region) and re-created.
    pub pages_dropped: u64,
    /// The walker drivers.
    pub walkers: Vec<WalkerReport>,
    /// `/proc/vmstat` deltas over the run (`pgrefill`, `pgscan_*`, `pgsteal_*`, `pswp*`,
    /// `compact_*`, `thp_*`).
    pub vmstat: BTreeMap<String, i64>,
    /// KSM counter deltas, plus `max_pages_sharing` seen during the run.
    pub ksm: BTreeMap<String, i64>,
    /// The memory cgroup, when the reclaim driver ran.
    pub cgroup: Option<CgroupReport>,
    /// Open fds before the run and after it.
    pub fds: (usize, usize),
    /// New kernel log lines matching a bad pattern.
    pub kernel_log: Vec<String>,
    /// Whether the kernel log could be read.
    pub kernel_log_checked: bool,
    /// Every broken invariant (at most 100 kept; `violation_count` has them all).
    pub violations: Vec<Violation>,
    /// How many invariants broke.
    pub violation_count: u64,
    /// Stopped by SIGINT / SIGTERM.
    pub interrupted: bool,
    /// What could not be restored on the machine.
    pub restore_errors: Vec<String>,
    /// Notes on the set-up (zram created, THP zero page off, ...).
    pub notes: Vec<String>,
    /// Where the full operation log was written, when a violation made it worth keeping.
    pub log_path: Option<String>,
}

impl Report {
    /// No invariant broke (idle walkers count, unless the config said they are expected).
    pub fn clean(&self) -> bool {
        self.violation_count == 0
    }

    /// How many violations are kernel findings.
    pub fn kernel_findings(&self) -> usize {
        self.violations
            .iter()
            .filter(|v| v.kind.is_kernel_finding())
            .count()
    }
}
