//! Swap for tests, through [`remap_swap`]: use active swap, or set up zram swap when running as
//! root, and undo that set-up when the last test using it (in any process) is done.
//!
//! [`require!`](crate::require)`(Need::Swap)` holds a [`SwapHold`] until the test returns, so
//! tests running at once share one set-up and the last one's end removes it. Needs the zram
//! driver (built in, or the `zram` module and `modprobe`) and `mkswap`, `swapon` and `swapoff`
//! (Debian/Ubuntu package `util-linux`; `modprobe` is in `kmod`).

use std::sync::Mutex;

pub use remap_swap::{swap_active, SwapHold};

/// Holds taken by [`met`](crate::met), kept until the process exits: a child process checking
/// its needs (its parent test holds swap for it) must not undo the set-up as it checks.
static KEPT: Mutex<Vec<SwapHold>> = Mutex::new(Vec::new());

/// Makes sure swap is active (setting up zram swap as root when none is) and holds it.
///
/// # Errors
///
/// A message saying what is missing: not root, no zram driver, a missing tool, or the failing
/// step and its output.
pub fn ensure_swap() -> Result<SwapHold, String> {
    SwapHold::acquire().map_err(|e| e.to_string())
}

/// [`ensure_swap`], with the hold kept until the process exits.
pub(crate) fn ensure_swap_kept() -> Result<(), String> {
    let hold = ensure_swap()?;
    KEPT.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(hold);
    Ok(())
}
