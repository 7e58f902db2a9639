//! Checks the running kernel's `UFFDIO_MOVE` against the [`remap_oracle`] model.
//!
//! - [`cases`]: the contract case by case (every row of `docs/move-contract.md`'s Appendix A and the errno
//!   paths of its section 2): what this kernel did, what the oracle expects for its version,
//!   and which rows of the [`remap_oracle::BEHAVIOUR_TABLE`] the kernel's behaviour matches.
//! - [`diff`]: differential testing: random [`program::Program`]s from a seed, run on the
//!   kernel with an observation after every step ([`exec`]), judged by the [`check::Checker`];
//!   a mismatch is replayed, then shrunk to a minimal program.
//!
//! Both fork (the fork steps and cases), so run them from a single-threaded process: the
//! `remap conform` binary, or a test that re-runs itself as a child.

#![deny(unsafe_code)]

use std::io;

use remap_oracle::{Behaviour, Environment, KernelVersion, ThpMode};

pub mod cases;
pub mod check;
pub mod diff;
pub mod exec;
pub mod program;
pub mod sys;

/// Why a conformance run could not run (as opposed to a disagreement, which is a result).
#[derive(Debug, thiserror::Error)]
pub enum ConformError {
    /// No userfaultfd could be created.
    #[error("userfaultfd unavailable: {0}")]
    Create(#[from] uffd::CreateError),
    /// The kernel lacks `UFFD_FEATURE_MOVE`.
    #[error("UFFDIO_MOVE unavailable (no UFFD_FEATURE_MOVE)")]
    NoMove,
    /// Mapping or configuring a program's memory failed.
    #[error("setting up a program's memory: {0}")]
    Setup(#[source] io::Error),
    /// Registering a program's VMA failed.
    #[error("registering a VMA: {0}")]
    Register(#[source] uffd::ControlError),
    /// Reading `/proc` failed.
    #[error("observing page state: {0}")]
    Inspect(#[from] remap::inspect::InspectError),
}

impl ConformError {
    /// Whether the error means userfaultfd or MOVE is missing (exit code 2 territory), rather
    /// than a failure of the run itself.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ConformError::Create(_) | ConformError::NoMove)
    }
}

/// The machine facts a run depends on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Machine {
    /// `uname -r`.
    pub release: String,
    /// Parsed from the release.
    pub version: Option<KernelVersion>,
    /// The behaviour row the oracle uses for this kernel.
    pub behaviour: &'static Behaviour,
    /// THP mode and huge zero page.
    pub env: Environment,
    /// Running as root (PFNs, kpageflags, swap set-up).
    pub root: bool,
    /// Swap is active.
    pub swap: bool,
    /// `MADV_GUARD_INSTALL` works (6.13+).
    pub guard: bool,
}

impl Machine {
    /// Reads the facts from `uname`, `/sys` and `/proc`.
    pub fn detect() -> Machine {
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let version = KernelVersion::parse(&release);
        Self::with_release(release, version)
    }

    /// As [`Machine::detect`], but for the kernel behaviour row of `version` (to ask what an
    /// older or newer kernel would do on this machine).
    pub fn with_release(release: String, version: Option<KernelVersion>) -> Machine {
        let behaviour = version
            .and_then(Behaviour::for_version)
            .unwrap_or(&remap_oracle::BEHAVIOUR_TABLE[0]);
        let thp = match remap::system::ThpMode::read() {
            remap::system::ThpMode::Always => ThpMode::Always,
            remap::system::ThpMode::Madvise => ThpMode::Madvise,
            _ => ThpMode::Never,
        };
        let huge_zero_page =
            std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/use_zero_page")
                .is_ok_and(|v| v.trim() == "1");
        Machine {
            release,
            version,
            behaviour,
            env: Environment {
                thp,
                huge_zero_page,
            },
            root: rustix::process::geteuid().is_root(),
            swap: remap::system::swap_active(),
            guard: sys::guard_supported(),
        }
    }

    /// Whether THP can be used (mode `always` or `madvise`).
    pub fn thp_usable(&self) -> bool {
        self.env.thp != ThpMode::Never
    }
}
