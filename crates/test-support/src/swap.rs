//! Swap for tests, through [`remap_swap`]: use active swap, or set up zram swap when running as
//! root, and undo that set-up when the last test using it (in any process) is done.
//!
//! [`require!`](crate::require)`(Need::Swap)` (or [`hold`](crate::hold)) holds a [`SwapHold`]
//! until the test returns, so tests running at once share one set-up and the last one's end
//! removes it. Needs the zram driver (built in, or the `zram` module and `modprobe`) and
//! `mkswap`, `swapon` and `swapoff` (Debian/Ubuntu package `util-linux`; `modprobe` is in `kmod`).

pub use remap_swap::{swap_active, SwapHold};

/// Makes sure swap is active (setting up zram swap as root when none is) and holds it.
///
/// # Errors
///
/// A message saying what is missing: not root, no zram driver, a missing tool, or the failing
/// step and its output.
pub fn ensure_swap() -> Result<SwapHold, String> {
    SwapHold::acquire().map_err(|e| e.to_string())
}
