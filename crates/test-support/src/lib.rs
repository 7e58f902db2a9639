//! Dev-only helpers for tests that need the real kernel.
//!
//! A test that needs something this machine lacks prints `skipping <test>: needs <what>` and passes,
//! except when `UFFD_TESTS_REQUIRED=1` is set (CI sets it): then it fails, so a skip can never turn CI
//! green by accident.
//!
//! ```
//! fn my_test() {
//!     test_support::require!(test_support::Need::Move);
//!     // ... the test body runs only where UFFDIO_MOVE works
//! }
//! # my_test();
//! ```

#![deny(unsafe_code)]

use std::fmt;

pub mod child;
pub mod mem;
pub mod swap;

/// Something a test may need from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A userfaultfd can be created (user-mode-only faults suffice).
    Uffd,
    /// The kernel reports `UFFD_FEATURE_MOVE`.
    Move,
    /// Transparent huge pages are available for `MADV_HUGEPAGE` regions.
    Thp,
    /// Root (for swap set-up, pagemap PFNs, kpageflags).
    Root,
    /// Swap is active, or can be set up on zram (needs root).
    Swap,
    /// A specific userfaultfd feature.
    Feature(uffd::Features),
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Uffd => f.write_str("userfaultfd"),
            Need::Move => f.write_str("UFFDIO_MOVE (UFFD_FEATURE_MOVE)"),
            Need::Thp => f.write_str("transparent huge pages (madvise or always)"),
            Need::Root => f.write_str("root"),
            Need::Swap => f.write_str("active swap (or root to set up zram swap)"),
            Need::Feature(features) => write!(f, "userfaultfd feature {features:?}"),
        }
    }
}

/// Whether `UFFD_TESTS_REQUIRED=1` is set: every skip becomes a failure.
pub fn required() -> bool {
    std::env::var("UFFD_TESTS_REQUIRED").is_ok_and(|v| v == "1")
}

/// What a met need holds on the machine while the test runs: for [`Need::Swap`], a
/// [`SwapHold`](swap::SwapHold), so swap set up for the test is undone once the last test using
/// it is done; nothing for the other needs.
#[derive(Debug)]
#[must_use = "dropping it ends the hold on what the test needs"]
pub struct Held {
    _swap: Option<swap::SwapHold>,
}

/// Checks `need` and holds what it needs until the returned [`Held`] is dropped; `None` when the
/// test must stop: the need is not met, and it printed `skipping <test>: needs <what> (<why>)`
/// (or panicked under `UFFD_TESTS_REQUIRED=1`). What [`require!`] uses.
///
/// ```
/// if let Some(_held) = test_support::hold("my_test", test_support::Need::Uffd) {
///     // ... the test body
/// }
/// ```
pub fn hold(test: &str, need: Need) -> Option<Held> {
    let held = match need {
        Need::Swap => swap::ensure_swap().map(|hold| Held { _swap: Some(hold) }),
        other => met(other).map(|()| Held { _swap: None }),
    };
    match held {
        Ok(held) => Some(held),
        Err(why) => {
            skip(test, &format!("{need} ({why})"));
            None
        }
    }
}

/// Skips `test` for want of `what`, or fails it under `UFFD_TESTS_REQUIRED=1`.
pub fn skip(test: &str, what: &str) {
    assert!(
        !required(),
        "{test}: needs {what}, and UFFD_TESTS_REQUIRED=1 forbids skipping"
    );
    eprintln!("skipping {test}: needs {what}");
}

/// Whether `need` is met here, and if not, why not. For [`Need::Swap`] only whether swap is
/// active now: setting it up takes a hold to undo it by ([`hold`], [`require!`]); a child
/// process whose parent test holds swap checks with this.
pub fn met(need: Need) -> Result<(), String> {
    match need {
        Need::Uffd => uffd::Capabilities::probe()
            .map(drop)
            .map_err(|e| e.to_string()),
        Need::Move => feature(uffd::Features::MOVE),
        Need::Feature(f) => feature(f),
        Need::Thp => {
            let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                .map_err(|e| format!("reading THP mode: {e}"))?;
            if mode.contains("[never]") {
                Err("THP mode is never".into())
            } else {
                Ok(())
            }
        }
        Need::Root => {
            if rustix::process::geteuid().is_root() {
                Ok(())
            } else {
                Err("not running as root".into())
            }
        }
        Need::Swap => {
            if swap::swap_active() {
                Ok(())
            } else {
                Err("no active swap (require!(Need::Swap) sets it up as root)".into())
            }
        }
    }
}

fn feature(wanted: uffd::Features) -> Result<(), String> {
    let caps = uffd::Capabilities::probe().map_err(|e| e.to_string())?;
    let missing = wanted - caps.features();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("the kernel lacks {missing:?}"))
    }
}

/// The name of the running test: libtest names each test's thread after it.
pub fn test_name(fallback: &str) -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => fallback.to_owned(),
    }
}

/// Returns from the calling test (after printing why) unless `need` is met, and holds what it
/// needs until the end of the calling block ([`hold`]: swap set up for the test stays on until
/// the last test using it is done, then is removed).
///
/// ```
/// fn needs_thp() {
///     test_support::require!(test_support::Need::Thp);
/// }
/// # needs_thp();
/// ```
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        $(
            // Bound, not dropped: lives to the end of the caller's block (shadowing keeps it).
            let Some(_held) = $crate::hold(&$crate::test_name(module_path!()), $need) else {
                return;
            };
        )+
    };
}
