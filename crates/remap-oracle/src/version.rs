//! Kernel versions and the one table of behaviour changes (`docs/move-contract.md` section 2.12).
//!
//! Every version difference the oracle knows is a field of [`Behaviour`], and every release that
//! changed one is a row of [`BEHAVIOUR_TABLE`]. The prediction code reads the fields; it never
//! compares version numbers itself.

use std::fmt;

use crate::Errno;

/// A kernel release, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct KernelVersion {
    /// Major number (6).
    pub major: u32,
    /// Minor number (18).
    pub minor: u32,
    /// Patch level (44).
    pub patch: u32,
}

impl KernelVersion {
    /// `major.minor.0`.
    pub const fn new(major: u32, minor: u32) -> Self {
        KernelVersion {
            major,
            minor,
            patch: 0,
        }
    }

    /// Parses a `uname -r` string such as `6.18.44-fc-v1045` (anything after the numbers is
    /// ignored; a missing patch level is 0).
    ///
    /// ```
    /// use remap_oracle::KernelVersion;
    /// let v = KernelVersion::parse("6.18.44-fc-v1045").unwrap();
    /// assert_eq!((v.major, v.minor, v.patch), (6, 18, 44));
    /// assert_eq!(KernelVersion::parse("6.9-rc1").unwrap(), KernelVersion::new(6, 9));
    /// assert!(KernelVersion::parse("linux").is_none());
    /// ```
    pub fn parse(release: &str) -> Option<Self> {
        let mut nums = release
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|p| p.parse::<u32>().ok());
        let major = nums.next()??;
        let minor = nums.next()??;
        let patch = nums.next().flatten().unwrap_or(0);
        Some(KernelVersion {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What one range of kernel releases does, wherever releases differ. One row of
/// [`BEHAVIOUR_TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Behaviour {
    /// A short name for the row (`"6.8"`, `"6.15"`).
    pub name: &'static str,
    /// The first release with this behaviour (approximate where the spec says so).
    pub since: KernelVersion,
    /// What changed in this row, in words.
    pub change: &'static str,
    /// Zero-page and huge-zero-page PTEs/PMDs move (~6.9); before, EBUSY.
    pub zero_page_moves: bool,
    /// The errno MOVE gives when no VMA contains `dst` or `src`: EINVAL on 6.8 (`find_vma` under
    /// mmap_lock), ENOENT since per-VMA locks (~6.9).
    pub missing_vma: Errno,
    /// The first `mmap_changing` check writes `-EAGAIN` to the result field (6.15); before, the
    /// field is left untouched.
    pub early_eagain_writes_field: bool,
    /// A swapped-out page whose folio is still in the swap cache moves (6.14); before, the kernel
    /// BUGs (not predicted: the oracle cannot see the swap cache).
    pub swapcache_moves: bool,
    /// The destination PTE is dirty only if the source was (6.15); before, always dirty. Not
    /// observable through pagemap, recorded for completeness.
    pub dirty_follows_src: bool,
    /// Splitting a large anonymous folio maps its zero-filled subpages to the shared zero page
    /// (6.12, "mm: remap unused subpages to shared zeropage when splitting isolated thp"),
    /// except in `VM_LOCKED` VMAs; before, they stay zero-filled private pages.
    pub split_zero_subpages_to_zero_page: bool,
    /// COPY installs over a guard-region marker (`pte_none_mostly()` took every PTE marker for
    /// none; observed on 6.18, where ZEROPAGE refuses it with EEXIST). Lorenzo Stoakes' "mm: correctly handle UFFD PTE
    /// markers" (posted 2025-11, release unverified: put in the 6.19 row) makes it EEXIST.
    pub fill_installs_over_guard: bool,
    /// `MADV_DONTNEED` may free an emptied PTE table (PT_RECLAIM, ~6.14, config-dependent), which
    /// lets a later aligned THP move take the whole-PMD path again.
    pub pt_reclaim: bool,
    /// Present PTEs move in batches under one TLB flush (~6.18); same contract.
    pub pte_batching: bool,
    /// MOVE no longer takes the anon_vma lock (~6.19); same contract.
    pub no_anon_vma_lock: bool,
}

const V6_8: Behaviour = Behaviour {
    name: "6.8",
    since: KernelVersion::new(6, 8),
    change: "initial UFFDIO_MOVE: zero pages EBUSY, missing VMA EINVAL, early EAGAIN leaves `move`",
    zero_page_moves: false,
    missing_vma: Errno::Inval,
    early_eagain_writes_field: false,
    swapcache_moves: false,
    split_zero_subpages_to_zero_page: false,
    fill_installs_over_guard: true,
    dirty_follows_src: false,
    pt_reclaim: false,
    pte_batching: false,
    no_anon_vma_lock: false,
};

const V6_9: Behaviour = Behaviour {
    name: "6.9",
    since: KernelVersion::new(6, 9),
    change: "per-VMA locks: missing VMA ENOENT; zero and huge zero pages move",
    zero_page_moves: true,
    missing_vma: Errno::NoEnt,
    ..V6_8
};

const V6_12: Behaviour = Behaviour {
    name: "6.12",
    since: KernelVersion::new(6, 12),
    change: "a split large folio maps its zero-filled subpages to the shared zero page",
    split_zero_subpages_to_zero_page: true,
    ..V6_9
};

const V6_14: Behaviour = Behaviour {
    name: "6.14",
    since: KernelVersion::new(6, 14),
    change: "swapcache folios move (large ones EBUSY); PT_RECLAIM may free emptied PTE tables",
    swapcache_moves: true,
    pt_reclaim: true,
    ..V6_12
};

const V6_15: Behaviour = Behaviour {
    name: "6.15",
    since: KernelVersion::new(6, 15),
    change: "`move = -EAGAIN` written on the early mmap_changing check; dst dirty only if src was",
    early_eagain_writes_field: true,
    dirty_follows_src: true,
    ..V6_14
};

const V6_18: Behaviour = Behaviour {
    name: "6.18",
    since: KernelVersion::new(6, 18),
    change: "PTE batching of present pages (same contract)",
    pte_batching: true,
    ..V6_15
};

const V6_19: Behaviour = Behaviour {
    name: "6.19",
    since: KernelVersion::new(6, 19),
    change: "no anon_vma lock in MOVE (same contract); COPY refuses guard markers (EEXIST)",
    no_anon_vma_lock: true,
    fill_installs_over_guard: false,
    ..V6_18
};

/// Every row, oldest first. Releases between two rows behave as the earlier one.
pub const BEHAVIOUR_TABLE: &[Behaviour] = &[V6_8, V6_9, V6_12, V6_14, V6_15, V6_18, V6_19];

impl Behaviour {
    /// The row for `version`: the last row whose `since` is not after it. `None` before 6.8 (no
    /// MOVE at all).
    ///
    /// ```
    /// use remap_oracle::{Behaviour, Errno, KernelVersion};
    /// let b = Behaviour::for_version(KernelVersion::new(6, 11)).unwrap();
    /// assert_eq!(b.name, "6.9");
    /// assert_eq!(b.missing_vma, Errno::NoEnt);
    /// assert!(Behaviour::for_version(KernelVersion::new(6, 7)).is_none());
    /// ```
    pub fn for_version(version: KernelVersion) -> Option<&'static Behaviour> {
        BEHAVIOUR_TABLE
            .iter()
            .rev()
            .find(|row| row.since <= KernelVersion::new(version.major, version.minor))
    }

    /// The row called `name`.
    pub fn named(name: &str) -> Option<&'static Behaviour> {
        BEHAVIOUR_TABLE.iter().find(|row| row.name == name)
    }

    /// The newest row.
    pub fn newest() -> &'static Behaviour {
        &BEHAVIOUR_TABLE[BEHAVIOUR_TABLE.len() - 1]
    }

    /// The index of this row in [`BEHAVIOUR_TABLE`].
    pub fn index(&self) -> usize {
        BEHAVIOUR_TABLE
            .iter()
            .position(|row| row.name == self.name)
            .expect("a row of the table")
    }
}
