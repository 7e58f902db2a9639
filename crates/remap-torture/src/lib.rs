//! remap-torture: `UFFDIO_MOVE` raced against the kernel's reverse-map walkers, replayably, with
//! nothing lost. The engine of `remap torture`.
//!
//! The seed patch of MOVE exists because reclaim walks the reverse map of anonymous folios
//! without the folio lock while MOVE rewrites `folio->mapping` and `folio->index`. A run drives
//! the real kernel into that race and judges what it did:
//!
//! - **movers** (more threads than CPUs, with the mutators) MOVE batches of 1-512 pages back and
//!   forth between the two regions of a pair (random `ALLOW_SRC_HOLES` and `DONTWAKE`, PMD-aligned
//!   runs one time in eight, overshooting on purpose), so the same folios change `mapping` again
//!   and again; **mutators** check tags and write new generations into pages they hold;
//! - **walker drivers** ([`Walker`]): reclaim under a memory cgroup limit with swap on zram,
//!   `MADV_PAGEOUT`/`MADV_COLD`, compaction, KSM, fork, THP collapse and the huge zero page, and
//!   ART's flip (`mremap(MREMAP_DONTUNMAP)`, `MADV_DONTNEED` with events pending);
//! - **invariants** (see `torture.md`): every logical page exactly once with its tag; every
//!   MOVE result allowed for the state (module `allowed`); a moved source reads as a hole and
//!   the reported count is what moved (a kernel finding otherwise, never an allowed result); no
//!   new bad kernel log line; cgroup usage and the fd count back to their baseline; and evidence
//!   from the counters that every walker ran.
//!
//! Every choice and delay comes from [`Config::seed`]; every operation is logged, and a violation
//! carries the shrunk log of the pages involved. [`confirm`] re-runs a failing configuration
//! for its hit rate and shrinks the walker set and duration to a minimal replay command. The
//! machine is left as it was found: the cgroup removed, KSM and the swap restored, on failure,
//! panic and SIGINT/SIGTERM too.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let config = remap_torture::Config {
//!     duration: Duration::from_secs(5),
//!     ..remap_torture::Config::default()
//! };
//! let report = remap_torture::run(&config, &mut |_progress| {})?;
//! println!("{} pages moved, clean: {}", report.pages_moved, report.clean());
//! # Ok::<(), remap_torture::TortureError>(())
//! ```
//!
//! # Where `unsafe` lives
//!
//! Only in the `sys` module: the run's own mappings, `madvise`, `mremap`, word accesses, the
//! range ioctls on those mappings, the sharing child's fork, and the signal flag.

#![deny(unsafe_code)]

mod allowed;
mod engine;
mod machine;
mod model;
mod oplog;
mod oracle;
pub mod report;
mod rng;
mod run;
mod sys;
mod walkers;

use std::time::Duration;

use serde::Serialize;

pub use machine::MachineError;
pub use report::{CgroupReport, Report, Violation, ViolationKind, WalkerReport};
pub use run::{confirm, run, Confirmation, Progress};

/// A walker driver: what makes the kernel walk or rewrite the pages the movers move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Walker {
    /// Reclaim without the folio lock: a memory cgroup limit below the working set (the regions'
    /// pages, and the kernel's copies of them during the run but while a fork's child lives,
    /// are charged to the cgroup; the harness's threads were started, and charged, outside it;
    /// with `GLIBC_TUNABLES=glibc.pthread.rseq=0` the copies made while a child lives too), swap
    /// on zram, pages re-touched so `shrink_active_list` finds them referenced.
    Reclaim,
    /// `MADV_PAGEOUT` and `MADV_COLD` on random ranges; swapped pages moved without swap-in.
    Pageout,
    /// Migration through `/proc/sys/vm/compact_memory`.
    Compact,
    /// KSM running over mergeable regions with twin pages (EBUSY allowed for merged pages).
    Ksm,
    /// Children that share every page for a while, then exit (EBUSY allowed).
    Fork,
    /// `MADV_COLLAPSE` of random PMDs and the huge zero page moved PMD-aligned.
    Thp,
    /// ART's flip: `mremap(MREMAP_DONTUNMAP)` of a registered range, `MADV_DONTNEED` with
    /// events pending.
    Flip,
}

impl Walker {
    /// Every driver.
    pub const ALL: [Walker; 7] = [
        Walker::Reclaim,
        Walker::Pageout,
        Walker::Compact,
        Walker::Ksm,
        Walker::Fork,
        Walker::Thp,
        Walker::Flip,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Walker::Reclaim => "reclaim",
            Walker::Pageout => "pageout",
            Walker::Compact => "compact",
            Walker::Ksm => "ksm",
            Walker::Fork => "fork",
            Walker::Thp => "thp",
            Walker::Flip => "flip",
        }
    }
}

/// A deliberate fault, to show that the invariants catch one (hidden in the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Inject {
    /// `MADV_DONTNEED` one tagged page behind the model's back (a lost page).
    Drop,
    /// `UFFDIO_COPY` a copy of one page into a hole behind the model's back (a page twice).
    Duplicate,
    /// Report one successful MOVE as EEXIST (a mis-reported result).
    Misreport,
}

impl Inject {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Inject::Drop => "drop",
            Inject::Duplicate => "duplicate",
            Inject::Misreport => "misreport",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long the threads run.
    pub duration: Duration,
    /// The master seed: every choice and delay of every thread derives from it.
    pub seed: u64,
    /// Mover threads.
    pub movers: usize,
    /// Mutator threads.
    pub mutators: usize,
    /// The walker drivers, one thread each.
    pub walkers: Vec<Walker>,
    /// Region pairs.
    pub pairs: usize,
    /// Pages per region (a multiple of 512).
    pub region_pages: usize,
    /// Pages of the flip region.
    pub flip_pages: usize,
    /// The memory cgroup limit as a fraction of the working set (the reclaim driver).
    pub limit_fraction: f64,
    /// Walkers without evidence of running are reported but do not fail the run.
    pub idle_walkers_ok: bool,
    /// Stop at the first violation (re-runs for the hit rate do).
    pub stop_at_first_violation: bool,
    /// A deliberate fault (tests only).
    pub inject: Option<Inject>,
    /// When the fault is injected.
    pub inject_after: Duration,
    /// Where to write the operation log when a violation happens (a directory).
    pub log_dir: Option<std::path::PathBuf>,
}

impl Default for Config {
    /// A 60 s run on all walkers with two threads per CPU plus two (half movers, half mutators),
    /// 4 pairs of 32 MiB regions (128 MiB of pages) under a 96 MiB memory limit.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let threads = 2 * cpus + 2;
        Config {
            duration: Duration::from_secs(60),
            seed: 0,
            movers: threads.div_ceil(2),
            mutators: threads / 2,
            walkers: Walker::ALL.to_vec(),
            pairs: 4,
            region_pages: 8192,
            flip_pages: 1024,
            limit_fraction: 0.75,
            idle_walkers_ok: false,
            stop_at_first_violation: false,
            inject: None,
            inject_after: Duration::from_secs(1),
            log_dir: None,
        }
    }
}

impl Config {
    /// The command that replays this configuration.
    pub fn replay_command(&self) -> String {
        let walkers: Vec<&str> = self.walkers.iter().map(|w| w.name()).collect();
        let mut cmd = format!(
            "remap torture --seed {:#x} --duration {}s --threads {} --walkers {}",
            self.seed,
            self.duration.as_secs().max(1),
            self.movers + self.mutators,
            if walkers.is_empty() {
                "none".to_owned()
            } else {
                walkers.join(",")
            },
        );
        let default = Config::default();
        if self.pairs != default.pairs {
            cmd.push_str(&format!(" --pairs {}", self.pairs));
        }
        if self.region_pages != default.region_pages {
            cmd.push_str(&format!(
                " --region-mib {}",
                (self.region_pages * rustix::param::page_size()) >> 20
            ));
        }
        if self.idle_walkers_ok {
            cmd.push_str(" --idle-walkers-ok");
        }
        if let Some(inject) = self.inject {
            cmd.push_str(&format!(" --inject {}", inject.name()));
        }
        cmd
    }
}

/// Why a run could not be done (exit code 2 in the CLI).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TortureError {
    /// The run changes cgroups, KSM and swap, and reads the kernel log: it needs root.
    #[error("remap torture needs root (it creates a memory cgroup, runs KSM, sets up swap and reads /dev/kmsg)")]
    NotRoot,
    /// No `UFFDIO_MOVE` here: the kernel does not report `UFFD_FEATURE_MOVE` (Linux 6.8+).
    #[error(
        "UFFDIO_MOVE is not available: the kernel does not report UFFD_FEATURE_MOVE (Linux 6.8+)"
    )]
    NoMove,
    /// No userfaultfd could be created (every path tried is in the error).
    #[error("creating a userfaultfd")]
    Create(#[source] uffd::CreateError),
    /// A bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Changing the machine (memory cgroup, KSM, zram swap) failed. What was already changed has
    /// been undone, except what `not_restored` lists.
    #[error("setting up the machine{}", restore_note(not_restored))]
    Machine {
        /// What failed.
        #[source]
        source: MachineError,
        /// The changes that could not be undone afterwards (empty: the machine is as it was).
        not_restored: Vec<String>,
    },
    /// A system call setting up the run's own memory or threads failed.
    #[error("setting up the run: {what}")]
    Setup {
        /// What was being set up, e.g. `mapping a region`.
        what: String,
        /// The error, with its errno.
        #[source]
        source: std::io::Error,
    },
    /// `/proc/self/pagemap` (the after-move check) could not be opened.
    #[error("setting up the run: opening /proc/self/pagemap")]
    Pagemap(#[source] remap::inspect::InspectError),
    /// Registering a region with the run's userfaultfd failed.
    #[error("setting up the run: registering a region")]
    Register(#[source] uffd::ControlError),
}

fn restore_note(not_restored: &[String]) -> String {
    if not_restored.is_empty() {
        String::new()
    } else {
        format!(" (and restoring it failed: {})", not_restored.join("; "))
    }
}

#[cfg(all(test, feature = "clap"))]
mod tests;
