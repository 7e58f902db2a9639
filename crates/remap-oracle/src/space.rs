//! The abstract address space: VMAs with their flags and registration, and one [`Page`] per
//! virtual page.

use std::collections::{BTreeMap, BTreeSet};

/// The page size the oracle models (x86_64 and arm64 with 4 KiB pages).
pub const PAGE_SIZE: u64 = 4096;
/// The size a PMD maps: one PMD-mapped THP.
pub const PMD_SIZE: u64 = 2 << 20;
/// Pages per PMD.
pub const PAGES_PER_PMD: u64 = PMD_SIZE / PAGE_SIZE;
/// x86_64's user address-space limit with 4-level page tables (`TASK_SIZE_MAX`).
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// `PROT_READ`.
pub const PROT_READ: u8 = 1;
/// `PROT_WRITE`.
pub const PROT_WRITE: u8 = 2;
/// `PROT_EXEC`.
pub const PROT_EXEC: u8 = 4;

/// Names a userfaultfd: the oracle only tells them apart.
pub type UffdId = u32;

/// The start of the PMD containing `addr`.
pub fn pmd_base(addr: u64) -> u64 {
    addr & !(PMD_SIZE - 1)
}

/// What backs a VMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum VmaKind {
    /// `MAP_PRIVATE | MAP_ANONYMOUS`: the only kind MOVE accepts.
    PrivateAnon,
    /// `MAP_SHARED | MAP_ANONYMOUS` (shmem): MOVE gives EINVAL.
    SharedAnon,
    /// `MAP_PRIVATE` of a file: MOVE gives EINVAL even over COW'd anonymous pages.
    PrivateFile,
}

/// The VMA's `madvise` THP setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ThpAdvice {
    /// Neither `MADV_HUGEPAGE` nor `MADV_NOHUGEPAGE`.
    Default,
    /// `MADV_HUGEPAGE`.
    Huge,
    /// `MADV_NOHUGEPAGE`.
    NoHuge,
}

/// The system THP mode (`/sys/kernel/mm/transparent_hugepage/enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ThpMode {
    /// `always`.
    Always,
    /// `madvise`.
    Madvise,
    /// `never`.
    Never,
}

/// The machine facts the predictions depend on besides the kernel version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Environment {
    /// The system THP mode.
    pub thp: ThpMode,
    /// `transparent_hugepage/use_zero_page`: read faults on THP-eligible ranges map the huge zero
    /// page.
    pub huge_zero_page: bool,
}

impl Default for Environment {
    /// This project's machines: THP `madvise`, huge zero page on.
    fn default() -> Self {
        Environment {
            thp: ThpMode::Madvise,
            huge_zero_page: true,
        }
    }
}

/// A VMA's userfaultfd registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Registration {
    /// The userfaultfd it is registered with.
    pub uffd: UffdId,
    /// `UFFDIO_REGISTER_MODE_MISSING`: touching a missing page raises a userfault.
    pub missing: bool,
    /// `UFFDIO_REGISTER_MODE_WP`.
    pub wp: bool,
}

/// The folio a present page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Folio {
    /// An order-0 folio.
    Small,
    /// A PMD-sized THP folio.
    Large {
        /// Tells folios apart.
        id: u64,
        /// Mapped by one PMD (true) or by PTEs after a PMD split (false).
        pmd_mapped: bool,
    },
}

/// A present anonymous (or shmem) page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Present {
    /// The contents: the tag written last (0: zero-filled).
    pub tag: u64,
    /// The physical frame, abstractly: MOVE keeps it, COPY, COW and swap-in make new ones.
    pub frame: u64,
    /// `PageAnonExclusive`: cleared by fork, set again only by a write fault (or a swap-in of an
    /// exclusive entry). MOVE needs it.
    pub exclusive: bool,
    /// A live forked child maps the page too (the pagemap exclusive bit is `!shared`).
    pub shared: bool,
    /// The folio.
    pub folio: Folio,
}

/// The state of one virtual page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub enum Page {
    /// `pte_none`: never touched, zapped, or moved away.
    #[default]
    None,
    /// A page in RAM.
    Present(Present),
    /// The shared zero page (a special PTE).
    Zero,
    /// Part of the huge zero page (a PMD).
    HugeZero,
    /// A swap PTE.
    Swapped {
        /// The contents.
        tag: u64,
        /// `pte_swp_exclusive`.
        exclusive: bool,
        /// A live child maps the entry too.
        shared: bool,
    },
    /// A uffd-wp PTE marker (`UFFDIO_WRITEPROTECT` on an unpopulated page, `WP_UNPOPULATED`).
    WpMarker,
    /// A guard-region PTE marker (`MADV_GUARD_INSTALL`).
    Guard,
}

impl Page {
    /// Whether the PTE is `pte_none` (MOVE and COPY see an empty slot).
    pub fn is_none(&self) -> bool {
        matches!(self, Page::None)
    }

    /// Whether the page belongs to a PMD mapping (a PMD-mapped THP or the huge zero page).
    pub fn is_pmd_mapped(&self) -> bool {
        matches!(
            self,
            Page::HugeZero
                | Page::Present(Present {
                    folio: Folio::Large {
                        pmd_mapped: true,
                        ..
                    },
                    ..
                })
        )
    }

    /// The contents tag, if the page holds data (present or swapped).
    pub fn tag(&self) -> Option<u64> {
        match self {
            Page::Present(p) => Some(p.tag),
            Page::Swapped { tag, .. } => Some(*tag),
            _ => None,
        }
    }
}

/// One VMA and its pages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Vma {
    /// First address (page aligned).
    pub start: u64,
    /// Length in bytes (page multiple).
    pub len: u64,
    /// `PROT_*` bits.
    pub prot: u8,
    /// What backs it.
    pub kind: VmaKind,
    /// `VM_LOCKED` (the oracle assumes `MLOCK_ONFAULT`: locking populates nothing).
    pub mlocked: bool,
    /// The THP advice.
    pub thp: ThpAdvice,
    /// `MADV_DONTFORK` (`VM_DONTCOPY`).
    pub dontfork: bool,
    /// The userfaultfd registration.
    pub registration: Option<Registration>,
    /// One entry per page.
    pub pages: Vec<Page>,
    /// For shared mappings: the shmem contents that outlive `MADV_DONTNEED` (tag per page, 0 for
    /// never written). Empty for private mappings.
    pub backing: Vec<u64>,
}

impl Vma {
    /// A private anonymous read-write VMA of `len` bytes at `start`: no THP advice, no lock, no
    /// registration, `MADV_DONTFORK` off, every page none.
    ///
    /// ```
    /// use remap_oracle::{Vma, PAGE_SIZE};
    /// let vma = Vma::anon(0x10_0000, 4 * PAGE_SIZE).huge(true).dontfork(true);
    /// assert_eq!(vma.pages.len(), 4);
    /// ```
    pub fn anon(start: u64, len: u64) -> Vma {
        assert!(
            start % PAGE_SIZE == 0 && len % PAGE_SIZE == 0 && len > 0,
            "VMA not page aligned"
        );
        Vma {
            start,
            len,
            prot: PROT_READ | PROT_WRITE,
            kind: VmaKind::PrivateAnon,
            mlocked: false,
            thp: ThpAdvice::Default,
            dontfork: false,
            registration: None,
            pages: vec![Page::None; usize::try_from(len / PAGE_SIZE).expect("usize")],
            backing: Vec::new(),
        }
    }

    /// Sets the kind (a shared mapping gets a backing store).
    pub fn kind(mut self, kind: VmaKind) -> Vma {
        self.kind = kind;
        self.backing = if kind == VmaKind::SharedAnon {
            vec![0; self.pages.len()]
        } else {
            Vec::new()
        };
        self
    }

    /// Sets the protection.
    pub fn prot(mut self, prot: u8) -> Vma {
        self.prot = prot;
        self
    }

    /// `MADV_HUGEPAGE` (true) or no advice.
    pub fn huge(mut self, yes: bool) -> Vma {
        self.thp = if yes {
            ThpAdvice::Huge
        } else {
            ThpAdvice::Default
        };
        self
    }

    /// Sets the THP advice.
    pub fn thp(mut self, thp: ThpAdvice) -> Vma {
        self.thp = thp;
        self
    }

    /// `MADV_DONTFORK`.
    pub fn dontfork(mut self, yes: bool) -> Vma {
        self.dontfork = yes;
        self
    }

    /// `mlock2(MLOCK_ONFAULT)`.
    pub fn mlocked(mut self, yes: bool) -> Vma {
        self.mlocked = yes;
        self
    }

    /// Registered with `uffd` (modes MISSING and/or WP).
    pub fn registered(mut self, uffd: UffdId, missing: bool, wp: bool) -> Vma {
        self.registration = Some(Registration { uffd, missing, wp });
        self
    }

    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end()).contains(&addr)
    }

    /// The index of the page containing `addr` (which must be inside).
    pub fn index(&self, addr: u64) -> usize {
        usize::try_from((addr - self.start) / PAGE_SIZE).expect("usize")
    }

    /// Whether a fault here may allocate a THP (by the advice and the system mode); the PMD must
    /// also lie inside the VMA.
    pub fn thp_eligible(&self, env: &Environment) -> bool {
        self.kind == VmaKind::PrivateAnon
            && match (env.thp, self.thp) {
                (ThpMode::Never, _) | (_, ThpAdvice::NoHuge) => false,
                (ThpMode::Always, _) => true,
                (ThpMode::Madvise, advice) => advice == ThpAdvice::Huge,
            }
    }

    /// Whether the whole PMD at `base` lies inside the VMA.
    pub fn covers_pmd(&self, base: u64) -> bool {
        base >= self.start && base + PMD_SIZE <= self.end()
    }

    /// Bytes mapped by PMD-mapped anonymous THPs (smaps `AnonHugePages`; the huge zero page is
    /// not counted).
    pub fn anon_huge_bytes(&self) -> u64 {
        let pages = self
            .pages
            .iter()
            .filter(|p| p.is_pmd_mapped() && !matches!(p, Page::HugeZero))
            .count();
        pages as u64 * PAGE_SIZE
    }
}

/// The whole modelled address space.
///
/// ```
/// use remap_oracle::{Space, Vma, PAGE_SIZE};
/// let space = Space::new(Default::default(), vec![Vma::anon(0x20_0000, 2 * PAGE_SIZE)]);
/// assert!(space.page(0x20_0000).unwrap().is_none());
/// assert!(space.page(0x10_0000).is_none(), "no VMA there");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Space {
    /// The VMAs, sorted by start, not overlapping.
    pub vmas: Vec<Vma>,
    /// The PMD slots (by base address) that have a PTE table. A PMD-mapped THP has none (its
    /// deposited table is not a mapping).
    pub tables: BTreeSet<u64>,
    /// Unread non-cooperative events per userfaultfd (`mmap_changing`).
    pub pending_events: BTreeMap<UffdId, u32>,
    /// A forked child is alive.
    pub child_alive: bool,
    /// The next abstract frame number.
    pub next_frame: u64,
    /// The next large-folio id.
    pub next_folio: u64,
    /// Machine facts.
    pub env: Environment,
}

impl Space {
    /// A space of these VMAs (sorted here), no page tables, no events, no child.
    pub fn new(env: Environment, mut vmas: Vec<Vma>) -> Space {
        vmas.sort_by_key(|v| v.start);
        for w in vmas.windows(2) {
            assert!(w[0].end() <= w[1].start, "overlapping VMAs");
        }
        Space {
            vmas,
            tables: BTreeSet::new(),
            pending_events: BTreeMap::new(),
            child_alive: false,
            next_frame: 1,
            next_folio: 1,
            env,
        }
    }

    /// The index of the VMA containing `addr`.
    pub fn vma_index(&self, addr: u64) -> Option<usize> {
        self.vmas.iter().position(|v| v.contains(addr))
    }

    /// The VMA containing `addr`.
    pub fn vma(&self, addr: u64) -> Option<&Vma> {
        self.vma_index(addr).map(|i| &self.vmas[i])
    }

    /// The page at `addr`, if a VMA contains it.
    pub fn page(&self, addr: u64) -> Option<&Page> {
        self.vma(addr).map(|v| &v.pages[v.index(addr)])
    }

    /// The page at `addr` for writing (a VMA must contain it).
    pub(crate) fn page_mut(&mut self, addr: u64) -> &mut Page {
        let i = self.vma_index(addr).expect("a VMA contains the address");
        let v = &mut self.vmas[i];
        let idx = v.index(addr);
        &mut v.pages[idx]
    }

    /// The page at `addr`, `Page::None` outside every VMA.
    pub(crate) fn get(&self, addr: u64) -> Page {
        self.page(addr).copied().unwrap_or_default()
    }

    /// Whether the PMD slot containing `addr` is PMD-mapped (THP or huge zero page).
    pub fn pmd_is_huge(&self, addr: u64) -> bool {
        self.get(pmd_base(addr)).is_pmd_mapped() && self.vma(pmd_base(addr)).is_some()
    }

    /// Whether the PMD slot containing `addr` is `pmd_none`: no PTE table and no huge mapping.
    pub fn pmd_is_none(&self, addr: u64) -> bool {
        !self.pmd_is_huge(addr) && !self.tables.contains(&pmd_base(addr))
    }

    /// The addresses of the PMD slot containing `addr` that some VMA covers, with their pages.
    pub(crate) fn pmd_pages(&self, addr: u64) -> Vec<(u64, Page)> {
        let base = pmd_base(addr);
        (0..PAGES_PER_PMD)
            .map(|i| base + i * PAGE_SIZE)
            .filter_map(|a| self.page(a).map(|p| (a, *p)))
            .collect()
    }

    /// A fresh abstract frame.
    pub(crate) fn new_frame(&mut self) -> u64 {
        let f = self.next_frame;
        self.next_frame += 1;
        f
    }

    /// A fresh large-folio id.
    pub(crate) fn new_folio(&mut self) -> u64 {
        let f = self.next_folio;
        self.next_folio += 1;
        f
    }

    /// Every tag the space holds (present or swapped pages, and shmem backing), with its address:
    /// for conservation checks.
    pub fn tags(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for v in &self.vmas {
            for (i, p) in v.pages.iter().enumerate() {
                if let Some(tag) = p.tag().filter(|t| *t != 0) {
                    out.push((v.start + i as u64 * PAGE_SIZE, tag));
                }
            }
        }
        out
    }
}
