//! [`SwapError`]: why swap could not be set up, held or undone.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Why swap could not be set up, held or undone. Each variant keeps what failed: the file and its
/// `io::Error` (with the errno), or the command with its exit status and stderr.
///
/// ```
/// let e = remap_swap::SwapError::NotRoot;
/// assert_eq!(e.to_string(), "no active swap, and setting up zram swap needs root");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwapError {
    /// No swap is active and this process is not root, so it cannot set any up.
    #[error("no active swap, and setting up zram swap needs root")]
    NotRoot,
    /// A file of `/proc`, `/sys`, `/dev` or `/run` could not be read, written, locked or created.
    #[error("{action} {}: {source}", path.display())]
    File {
        /// What was being done, e.g. `writing "1G" to`.
        action: String,
        /// The file.
        path: PathBuf,
        /// The error, with its errno.
        #[source]
        source: std::io::Error,
    },
    /// The zram driver is not there (not built in, and `modprobe zram` failed or no free device
    /// could be added).
    #[error("zram is not available: {why}")]
    NoZram {
        /// What was tried.
        why: String,
        /// How it failed (the command or file error, with its errno), when something failed.
        #[source]
        source: Option<Box<SwapError>>,
    },
    /// A set-up command could not be started (other than for not being installed).
    #[error("running {command}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error, with its errno.
        #[source]
        source: std::io::Error,
    },
    /// A set-up command is not installed.
    #[error(
        "{command}: command not found (install util-linux for mkswap/swapon/swapoff, kmod for \
         modprobe)"
    )]
    NoCommand {
        /// The command.
        command: String,
    },
    /// A set-up command failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `swapon` succeeded, yet `/proc/swaps` lists no swap area.
    #[error("swapon /dev/{device} succeeded but /proc/swaps lists nothing")]
    NotListed {
        /// The zram device, e.g. `zram0`.
        device: String,
    },
}

impl SwapError {
    pub(crate) fn file(
        action: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let (action, path) = (action.into(), path.into());
        move |source| SwapError::File {
            action,
            path,
            source,
        }
    }
}
