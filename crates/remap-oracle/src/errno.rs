//! The errno values the modelled operations can fail with, in the kernel's numbering (x86_64).

use std::fmt;

/// An errno the oracle predicts (the raw value is the kernel's, `-errno` is what it writes to an
/// ioctl's result field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum Errno {
    /// `EPERM` (1).
    Perm,
    /// `ENOENT` (2): no VMA at an address, or a source hole without `ALLOW_SRC_HOLES`.
    NoEnt,
    /// `ESRCH` (3): the address space is exiting.
    Srch,
    /// `EINTR` (4): a fatal signal before any progress.
    Intr,
    /// `EAGAIN` (11): partial progress, or events pending.
    Again,
    /// `ENOMEM` (12).
    NoMem,
    /// `EFAULT` (14): a source entry that cannot be moved (guard region, poison), or a bad argument.
    Fault,
    /// `EBUSY` (16): a page mapped more than once (fork, KSM), pinned, or a registration clash.
    Busy,
    /// `EEXIST` (17): the destination is populated.
    Exist,
    /// `EINVAL` (22): bad arguments or VMAs.
    Inval,
}

impl Errno {
    /// Every value, for tables and tests.
    pub const ALL: [Errno; 10] = [
        Errno::Perm,
        Errno::NoEnt,
        Errno::Srch,
        Errno::Intr,
        Errno::Again,
        Errno::NoMem,
        Errno::Fault,
        Errno::Busy,
        Errno::Exist,
        Errno::Inval,
    ];

    /// The raw errno value.
    ///
    /// ```
    /// assert_eq!(remap_oracle::Errno::Exist.raw(), 17);
    /// ```
    pub fn raw(self) -> i32 {
        match self {
            Errno::Perm => 1,
            Errno::NoEnt => 2,
            Errno::Srch => 3,
            Errno::Intr => 4,
            Errno::Again => 11,
            Errno::NoMem => 12,
            Errno::Fault => 14,
            Errno::Busy => 16,
            Errno::Exist => 17,
            Errno::Inval => 22,
        }
    }

    /// The value for a raw errno, if it is one the oracle knows.
    ///
    /// ```
    /// use remap_oracle::Errno;
    /// assert_eq!(Errno::from_raw(22), Some(Errno::Inval));
    /// assert_eq!(Errno::from_raw(99), None);
    /// ```
    pub fn from_raw(raw: i32) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.raw() == raw)
    }

    /// The C name (`"EINVAL"`).
    pub fn name(self) -> &'static str {
        match self {
            Errno::Perm => "EPERM",
            Errno::NoEnt => "ENOENT",
            Errno::Srch => "ESRCH",
            Errno::Intr => "EINTR",
            Errno::Again => "EAGAIN",
            Errno::NoMem => "ENOMEM",
            Errno::Fault => "EFAULT",
            Errno::Busy => "EBUSY",
            Errno::Exist => "EEXIST",
            Errno::Inval => "EINVAL",
        }
    }
}

impl From<Errno> for &'static str {
    fn from(e: Errno) -> Self {
        e.name()
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
