//! Swap for remap's tools and tests: make sure some is active, setting up zram swap (as root)
//! when none is, share it between processes, and undo the set-up when the last user is done.
//!
//! Moving swapped-out pages, paging out under a memory cgroup limit and the torture walkers all
//! need active swap, and most machines (CI ones above all) have none. A [`SwapHold`] makes sure
//! there is some while it lives:
//!
//! - if `/proc/swaps` lists a swap area, that is used, and never touched;
//! - else, as root, a 1 GiB zram device is set up (`modprobe zram` or `hot_add` if needed,
//!   `disksize`, `mkswap`, `swapon -p 100`);
//! - whoever set it up, the last hold to end, in any process, undoes it (`swapoff`, `reset`).
//!
//! Holders share a `flock` on [`USERS_PATH`] (shared while holding; the releasing one then tries
//! it exclusively, and only the last gets it). Set-up and undoing are serialised by an exclusive
//! `flock` on [`LOCK_PATH`], which also records the device set up: a holder that was killed
//! leaves its set-up recorded, and the next release (or [`undo_if_unused`]) undoes it.
//!
//! ```
//! match remap_swap::SwapHold::acquire() {
//!     Ok(hold) => {
//!         assert!(remap_swap::swap_active());
//!         // ... page out, move swapped-out pages ...
//!         hold.release()?; // undoes a set-up if this was the last hold
//!     }
//!     Err(e) => eprintln!("no swap here: {e}"),
//! }
//! # Ok::<(), remap_swap::SwapError>(())
//! ```

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

use rustix::fs::FlockOperation;

mod error;
mod zram;

pub use error::SwapError;

/// Serialises set-up and undoing across processes, and records the zram device set up (`zram<N>`,
/// empty when none).
pub const LOCK_PATH: &str = "/run/remap-zram.lock";

/// Every [`SwapHold`] holds a shared `flock` on this file; the last one to end gets it exclusively.
pub const USERS_PATH: &str = "/run/remap-zram.users";

/// Whether some swap area is active (`/proc/swaps` lists at least one).
///
/// ```
/// let _on: bool = remap_swap::swap_active();
/// ```
pub fn swap_active() -> bool {
    std::fs::read_to_string("/proc/swaps")
        .is_ok_and(|text| text.lines().skip(1).any(|l| !l.trim().is_empty()))
}

/// Swap kept active while this lives: see the [crate docs](crate). Dropping it releases it as
/// [`release`](Self::release) does, logging a failure instead of returning it.
#[derive(Debug)]
#[must_use = "swap set up for a hold is undone when the hold is dropped"]
pub struct SwapHold {
    /// The shared lock on [`USERS_PATH`] (`None` when the file is not there or not usable: no
    /// remap set-up can exist then, and nothing is set up or undone).
    users: Option<File>,
    /// The device this hold set up, if it did.
    set_up: Option<String>,
}

impl SwapHold {
    /// Makes sure swap is active (setting up zram swap when none is, as root) and holds it.
    ///
    /// ```
    /// if let Ok(hold) = remap_swap::SwapHold::acquire() {
    ///     println!("set up here: {:?}", hold.set_up());
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SwapError::NotRoot`] with no active swap and no root; else what failed in the set-up
    /// ([`SwapError::NoZram`], [`SwapError::NoCommand`], [`SwapError::Command`],
    /// [`SwapError::File`], [`SwapError::NotListed`]).
    pub fn acquire() -> Result<SwapHold, SwapError> {
        if !rustix::process::geteuid().is_root() {
            return SwapHold::if_active().ok_or(SwapError::NotRoot);
        }
        // Shared before looking: a last holder undoing the set-up holds it exclusively, so this
        // waits for that to finish instead of finding a swap area about to go.
        let users = match lock(USERS_PATH, FlockOperation::LockShared) {
            Ok(users) => users,
            // No usable /run (some containers): active swap is then not remap's (a set-up
            // needs the lock files) and is used as it is.
            Err(_) if swap_active() => {
                return Ok(SwapHold {
                    users: None,
                    set_up: None,
                })
            }
            Err(e) => return Err(e),
        };
        if swap_active() {
            return Ok(SwapHold {
                users: Some(users),
                set_up: None,
            });
        }
        let mut setup = lock(LOCK_PATH, FlockOperation::LockExclusive)?;
        // Another process may have set it up while we waited for the lock.
        if swap_active() {
            return Ok(SwapHold {
                users: Some(users),
                set_up: None,
            });
        }
        let device = zram::set_up(&mut setup)?;
        tracing::info!(device, size = zram::DISKSIZE, "set up zram swap");
        Ok(SwapHold {
            users: Some(users),
            set_up: Some(device),
        })
    }

    /// Holds swap that is active now, setting nothing up (root or not): `None` when none is. A
    /// tool that uses swap only if the machine has it takes this, so that a remap set-up it
    /// found is not undone under it by another process's last release.
    ///
    /// ```
    /// if let Some(hold) = remap_swap::SwapHold::if_active() {
    ///     assert_eq!(hold.set_up(), None);
    /// }
    /// ```
    pub fn if_active() -> Option<SwapHold> {
        // Shared first, as `acquire` does; read-only is enough for a shared lock. The file
        // exists once root has set swap up: without it there is no set-up to keep.
        let users = File::open(USERS_PATH).ok().and_then(|file| {
            rustix::fs::flock(&file, FlockOperation::LockShared)
                .ok()
                .map(|()| file)
        });
        swap_active().then_some(SwapHold {
            users,
            set_up: None,
        })
    }

    /// The zram device this hold set up (`zram<N>`), or `None` when swap was active already.
    ///
    /// ```
    /// if let Ok(hold) = remap_swap::SwapHold::acquire() {
    ///     if let Some(device) = hold.set_up() {
    ///         assert!(device.starts_with("zram"));
    ///     }
    /// }
    /// ```
    pub fn set_up(&self) -> Option<&str> {
        self.set_up.as_deref()
    }

    /// Ends the hold; if it was the last one, undoes remap's set-up (whoever made it). Returns
    /// the device undone, if any.
    ///
    /// ```
    /// if let Ok(hold) = remap_swap::SwapHold::acquire() {
    ///     let _undone: Option<String> = hold.release()?;
    /// }
    /// # Ok::<(), remap_swap::SwapError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// What failed in undoing it ([`SwapError::Command`] for `swapoff`, [`SwapError::File`]).
    pub fn release(mut self) -> Result<Option<String>, SwapError> {
        self.end()
    }

    fn end(&mut self) -> Result<Option<String>, SwapError> {
        match self.users.take() {
            // Closing the file drops our shared lock.
            Some(users) => drop(users),
            None => return Ok(None),
        }
        undo_if_unused()
    }
}

impl Drop for SwapHold {
    fn drop(&mut self) {
        if let Err(e) = self.end() {
            tracing::warn!(error = %e, "undoing the zram swap set-up failed");
        }
    }
}

/// Undoes remap's zram swap set-up when no process holds swap: what the last [`SwapHold`] does
/// as it ends, and what a tool calls to clean up after a holder that was killed. Returns the
/// device undone; `None` when something still holds swap, nothing is recorded, or this process
/// is not root. Swap that remap did not set up is never touched.
///
/// ```
/// let _undone = remap_swap::undo_if_unused()?;
/// # Ok::<(), remap_swap::SwapError>(())
/// ```
///
/// # Errors
///
/// What failed in undoing it ([`SwapError::Command`] for `swapoff`, [`SwapError::File`]).
pub fn undo_if_unused() -> Result<Option<String>, SwapError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    // Exclusive, without waiting: held shared by anyone means swap is in use.
    let Some(_users) = try_lock(USERS_PATH, FlockOperation::NonBlockingLockExclusive)? else {
        return Ok(None);
    };
    let mut setup = lock(LOCK_PATH, FlockOperation::LockExclusive)?;
    let Some(device) = zram::recorded(&mut setup)? else {
        return Ok(None);
    };
    if !zram::is_swap(&device) {
        // Undone already, or a set-up that never got as far as swapon: forgotten, so that a
        // device that is someone else's by now is never undone.
        zram::record(&mut setup, None)?;
        return Ok(None);
    }
    zram::tear_down(&device)?;
    zram::record(&mut setup, None)?;
    tracing::info!(device, "removed the zram swap set up earlier");
    Ok(Some(device))
}

fn open(path: &str) -> Result<File, SwapError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        // Readable by all: a process without root holds swap with a shared lock on a read-only
        // descriptor (`if_active`).
        .mode(0o644)
        .open(path)
        .map_err(SwapError::file("opening", path))
}

/// `path`, locked with `op` (waiting for it).
fn lock(path: &str, op: FlockOperation) -> Result<File, SwapError> {
    let file = open(path)?;
    rustix::fs::flock(&file, op).map_err(|e| SwapError::file("locking", path)(e.into()))?;
    Ok(file)
}

/// `path`, locked with the non-blocking `op`, or `None` when someone else holds a conflicting
/// lock.
fn try_lock(path: &str, op: FlockOperation) -> Result<Option<File>, SwapError> {
    let file = open(path)?;
    match rustix::fs::flock(&file, op) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(SwapError::file("locking", path)(e.into())),
    }
}
