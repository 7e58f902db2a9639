//! Page state from `/proc`: present, swapped or absent pages, exclusivity, PFNs and THPs.
//!
//! These readers are for tests, diagnostics and benches: they tell whether a move really moved a
//! page, whether a region is backed by a transparent huge page, whether `MADV_PAGEOUT` pushed a
//! page to swap.
//!
//! - [`Pagemap`] reads `/proc/self/pagemap`, one 64-bit entry per virtual page
//!   (see the kernel's `admin-guide/mm/pagemap.rst`).
//! - [`vma_info`] parses the `/proc/self/smaps` block of the mapping that contains an address
//!   (`AnonHugePages`, `Rss`, `Swap`, `VmFlags`).
//! - [`is_thp_mapped`] combines both, with `/proc/kpageflags` when it is readable (root).
//!
//! ```
//! use remap::inspect::{PageState, Pagemap};
//! use remap::region::Region;
//!
//! let region = Region::builder(2 * 4096).build()?;
//! region.write_u8(0, 1); // fault in page 0 only
//! let states = Pagemap::open()?.states(region.addr(), 2)?;
//! assert!(matches!(states[0], PageState::Present { .. }));
//! assert_eq!(states[1], PageState::Absent);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The files describe the process that *opened* them: a `Pagemap` opened before a `fork()` still
//! describes the parent in the child.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

#[cfg(test)]
mod tests;

const PAGEMAP: &str = "/proc/self/pagemap";
const KPAGEFLAGS: &str = "/proc/kpageflags";
const SMAPS: &str = "/proc/self/smaps";
const MAPS: &str = "/proc/self/maps";

/// Pagemap entry bit: the page is present in RAM.
pub const PM_PRESENT: u64 = 1 << 63;
/// Pagemap entry bit: the page is in swap.
pub const PM_SWAPPED: u64 = 1 << 62;
/// Pagemap entry bit: the page is exclusively mapped (Linux 4.2+).
pub const PM_EXCLUSIVE: u64 = 1 << 56;
/// Pagemap entry bits 0–54: the page frame number of a present page (zero without
/// `CAP_SYS_ADMIN`).
pub const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// `/proc/kpageflags` bit: the page is the head of a compound page.
pub const KPF_COMPOUND_HEAD: u64 = 1 << 15;
/// `/proc/kpageflags` bit: the page is a tail of a compound page.
pub const KPF_COMPOUND_TAIL: u64 = 1 << 16;
/// `/proc/kpageflags` bit: the page is part of a transparent huge page.
pub const KPF_THP: u64 = 1 << 22;

/// The size of a PMD-mapped THP, which [`is_thp_mapped`] looks for.
const THP_SIZE: usize = crate::region::HUGE_PAGE_SIZE;

/// Why reading page state failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Opening a `/proc` file failed (for `/proc/kpageflags`: `EPERM`/`EACCES` without root).
    #[error("opening {path}: {source}")]
    Open {
        /// The file.
        path: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Reading a `/proc` file failed.
    #[error("reading {path} at offset {offset:#x}: {source}")]
    Read {
        /// The file.
        path: &'static str,
        /// The file offset of the read (0 for whole-file text reads).
        offset: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A line of a text `/proc` file did not parse.
    #[error("parsing {path}: unexpected line {line:?}")]
    Parse {
        /// The file.
        path: &'static str,
        /// The offending line.
        line: String,
    },
    /// No mapping contains the address.
    #[error("no mapping contains address {addr:#x}")]
    NotMapped {
        /// The address.
        addr: usize,
    },
}

/// The state of one virtual page, from its pagemap entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Backed by a page in RAM.
    Present {
        /// Mapped only here (`PM_MMAP_EXCLUSIVE`), so `UFFDIO_MOVE` can move it; `false` for a
        /// page shared with a forked child, KSM or the shared zero page.
        exclusive: bool,
        /// The page frame number: visible only with `CAP_SYS_ADMIN`, `None` when the kernel
        /// reports zero.
        pfn: Option<u64>,
    },
    /// Swapped out (a swap PTE).
    Swapped,
    /// Neither: never touched, zapped by `MADV_DONTNEED`, or moved out.
    Absent,
}

impl PageState {
    /// Decodes a raw pagemap entry.
    ///
    /// ```
    /// use remap::inspect::{PageState, PM_EXCLUSIVE, PM_PRESENT, PM_SWAPPED};
    ///
    /// assert_eq!(PageState::from_entry(0), PageState::Absent);
    /// assert_eq!(PageState::from_entry(PM_SWAPPED | 0x1234), PageState::Swapped);
    /// assert_eq!(
    ///     PageState::from_entry(PM_PRESENT | PM_EXCLUSIVE | 42),
    ///     PageState::Present { exclusive: true, pfn: Some(42) }
    /// );
    /// ```
    pub fn from_entry(entry: u64) -> PageState {
        if entry & PM_PRESENT != 0 {
            let pfn = entry & PM_PFN_MASK;
            PageState::Present {
                exclusive: entry & PM_EXCLUSIVE != 0,
                pfn: (pfn != 0).then_some(pfn),
            }
        } else if entry & PM_SWAPPED != 0 {
            PageState::Swapped
        } else {
            PageState::Absent
        }
    }

    /// Whether the page is [`PageState::Present`].
    pub fn is_present(&self) -> bool {
        matches!(self, PageState::Present { .. })
    }
}

/// How many pages of a range are in each [`PageState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageCounts {
    /// Present pages.
    pub present: usize,
    /// Present pages that are exclusively mapped (a subset of `present`).
    pub exclusive: usize,
    /// Swapped-out pages.
    pub swapped: usize,
    /// Absent pages.
    pub absent: usize,
}

/// A reader of `/proc/self/pagemap`, opened once and queried with one `pread` per range.
///
/// ```
/// use remap::inspect::Pagemap;
/// use remap::region::Region;
///
/// let region = Region::builder(4 * 4096).populate(true).build()?;
/// let counts = Pagemap::open()?.counts(region.addr(), region.pages())?;
/// assert_eq!(counts.present, region.pages());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Pagemap {
    file: File,
    page_size: usize,
}

impl Pagemap {
    /// Opens `/proc/self/pagemap`.
    ///
    /// # Errors
    ///
    /// [`InspectError::Open`] if the file cannot be opened (no procfs, or a hardened kernel).
    pub fn open() -> Result<Pagemap, InspectError> {
        let file = File::open(PAGEMAP).map_err(|source| InspectError::Open {
            path: PAGEMAP,
            source,
        })?;
        Ok(Pagemap {
            file,
            page_size: rustix::param::page_size(),
        })
    }

    /// The raw entries of `pages` pages starting at the page containing `addr`.
    ///
    /// # Errors
    ///
    /// [`InspectError::Read`] if the read fails or comes up short.
    pub fn entries(&self, addr: usize, pages: usize) -> Result<Vec<u64>, InspectError> {
        let first = (addr / self.page_size) as u64;
        let offset = first * 8;
        let mut buf = vec![0u8; pages * 8];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| InspectError::Read {
                path: PAGEMAP,
                offset,
                source,
            })?;
        Ok(buf
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("chunks of 8 bytes")))
            .collect())
    }

    /// The raw entry of the page containing `addr`, read with one `pread(2)` into a stack
    /// buffer: no allocation, no lock, so it may run in a signal handler (the fault server's
    /// SIGBUS mode does). `None` if the read fails or comes up short.
    ///
    /// ```
    /// use remap::inspect::{PageState, Pagemap};
    ///
    /// let region = remap::region::Region::new(4096)?;
    /// region.write_u8(0, 1);
    /// let entry = Pagemap::open()?.entry(region.addr()).expect("a pagemap entry");
    /// assert!(PageState::from_entry(entry).is_present());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn entry(&self, addr: usize) -> Option<u64> {
        let mut buf = [0u8; 8];
        match rustix::io::pread(&self.file, &mut buf, (addr / self.page_size) as u64 * 8) {
            Ok(8) => Some(u64::from_ne_bytes(buf)),
            _ => None,
        }
    }

    /// The raw entries of `out.len()` pages from the page containing `addr`, read with one
    /// `pread(2)` per 64 entries into a stack buffer: no allocation, no lock, so it may run in a
    /// signal handler (the fault server's pool settles a fault-around run with it). Returns how
    /// many entries were read (fewer on a failed or short read).
    ///
    /// ```
    /// use remap::inspect::{Pagemap, PM_PRESENT};
    ///
    /// let region = remap::region::Region::new(2 * 4096)?;
    /// region.write_u8(4096, 1);
    /// let mut entries = [0u64; 2];
    /// assert_eq!(Pagemap::open()?.entries_into(region.addr(), &mut entries), 2);
    /// assert_eq!(entries.map(|e| e & PM_PRESENT != 0), [false, true]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn entries_into(&self, addr: usize, out: &mut [u64]) -> usize {
        const CHUNK: usize = 64;
        let first = (addr / self.page_size) as u64;
        let mut done = 0;
        for chunk in out.chunks_mut(CHUNK) {
            let mut buf = [0u8; CHUNK * 8];
            let want = chunk.len() * 8;
            let at = (first + done as u64) * 8;
            let got = match rustix::io::pread(&self.file, &mut buf[..want], at) {
                Ok(n) => n / 8,
                Err(_) => 0,
            };
            for (slot, bytes) in chunk.iter_mut().zip(buf.chunks_exact(8)).take(got) {
                *slot = u64::from_ne_bytes([
                    bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                ]);
            }
            done += got;
            if got < chunk.len() {
                break;
            }
        }
        done
    }

    /// The state of the page containing `addr`.
    ///
    /// # Errors
    ///
    /// As for [`entries`](Self::entries).
    pub fn state(&self, addr: usize) -> Result<PageState, InspectError> {
        Ok(PageState::from_entry(self.entries(addr, 1)?[0]))
    }

    /// The states of `pages` pages starting at the page containing `addr`.
    ///
    /// # Errors
    ///
    /// As for [`entries`](Self::entries).
    pub fn states(&self, addr: usize, pages: usize) -> Result<Vec<PageState>, InspectError> {
        Ok(self
            .entries(addr, pages)?
            .into_iter()
            .map(PageState::from_entry)
            .collect())
    }

    /// Counts the states of `pages` pages starting at the page containing `addr`.
    ///
    /// # Errors
    ///
    /// As for [`entries`](Self::entries).
    pub fn counts(&self, addr: usize, pages: usize) -> Result<PageCounts, InspectError> {
        let mut counts = PageCounts::default();
        for state in self.states(addr, pages)? {
            match state {
                PageState::Present { exclusive, .. } => {
                    counts.present += 1;
                    counts.exclusive += usize::from(exclusive);
                }
                PageState::Swapped => counts.swapped += 1,
                PageState::Absent => counts.absent += 1,
            }
        }
        Ok(counts)
    }
}

/// The `/proc/kpageflags` word of page frame `pfn` (readable by root only).
///
/// # Errors
///
/// [`InspectError::Open`] without `CAP_SYS_ADMIN`; [`InspectError::Read`] for a PFN past the end.
pub fn kpageflags(pfn: u64) -> Result<u64, InspectError> {
    let file = File::open(KPAGEFLAGS).map_err(|source| InspectError::Open {
        path: KPAGEFLAGS,
        source,
    })?;
    kpageflags_in(&file, pfn)
}

fn kpageflags_in(file: &File, pfn: u64) -> Result<u64, InspectError> {
    let offset = pfn * 8;
    let mut buf = [0u8; 8];
    file.read_exact_at(&mut buf, offset)
        .map_err(|source| InspectError::Read {
            path: KPAGEFLAGS,
            offset,
            source,
        })?;
    Ok(u64::from_ne_bytes(buf))
}

/// One mapping's block of `/proc/self/smaps`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmaInfo {
    /// The mapping's address range.
    pub range: Range<usize>,
    /// `Rss:` in bytes.
    pub rss_bytes: u64,
    /// `AnonHugePages:` in bytes: anonymous memory mapped by PMD-sized THPs.
    pub anon_huge_bytes: u64,
    /// `Swap:` in bytes.
    pub swap_bytes: u64,
    /// The two-letter `VmFlags:` (for example `dc` for `MADV_DONTFORK`, `dd` for `MADV_DONTDUMP`, `hg` for
    /// `MADV_HUGEPAGE`, `nh` for `MADV_NOHUGEPAGE`).
    pub vm_flags: Vec<String>,
}

impl VmaInfo {
    /// Whether `VmFlags:` contains `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.vm_flags.iter().any(|f| f == flag)
    }
}

fn read_text(path: &'static str) -> Result<String, InspectError> {
    std::fs::read_to_string(path).map_err(|source| InspectError::Read {
        path,
        offset: 0,
        source,
    })
}

/// Parses a `start-end ...` mapping header line; `None` for other lines.
fn parse_header(line: &str) -> Option<Range<usize>> {
    let range = line.split_ascii_whitespace().next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    Some(start..end)
}

/// Parses the value of a `Key:   123 kB` line into bytes.
fn parse_kb(line: &str, rest: &str) -> Result<u64, InspectError> {
    let parse_err = || InspectError::Parse {
        path: SMAPS,
        line: line.to_owned(),
    };
    let mut words = rest.split_ascii_whitespace();
    let value: u64 = words
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(parse_err)?;
    match words.next() {
        Some("kB") => Ok(value * 1024),
        _ => Err(parse_err()),
    }
}

/// The `/proc/self/smaps` block of the mapping that contains `addr`.
///
/// Reads and scans the whole file: fine for tests and diagnostics, not for hot paths.
///
/// ```
/// use remap::region::Region;
///
/// let region = Region::new(4096)?; // MADV_DONTFORK by default
/// let vma = remap::inspect::vma_info(region.addr())?;
/// assert!(vma.range.contains(&region.addr()));
/// assert!(vma.has_flag("dc"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`InspectError::NotMapped`] if no mapping contains `addr`; [`InspectError::Read`] or
/// [`InspectError::Parse`] if smaps cannot be read or parsed.
pub fn vma_info(addr: usize) -> Result<VmaInfo, InspectError> {
    let text = read_text(SMAPS)?;
    let mut found: Option<VmaInfo> = None;
    for line in text.lines() {
        if let Some(range) = parse_header(line) {
            if found.is_some() {
                break;
            }
            if range.contains(&addr) {
                found = Some(VmaInfo {
                    range,
                    ..VmaInfo::default()
                });
            }
            continue;
        }
        let Some(vma) = found.as_mut() else {
            continue;
        };
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        match key {
            "Rss" => vma.rss_bytes = parse_kb(line, rest)?,
            "AnonHugePages" => vma.anon_huge_bytes = parse_kb(line, rest)?,
            "Swap" => vma.swap_bytes = parse_kb(line, rest)?,
            "VmFlags" => {
                vma.vm_flags = rest.split_ascii_whitespace().map(str::to_owned).collect();
            }
            _ => {}
        }
    }
    found.ok_or(InspectError::NotMapped { addr })
}

/// `AnonHugePages:` of the mapping containing `addr`, in bytes.
///
/// # Errors
///
/// As for [`vma_info`].
pub fn anon_huge_bytes(addr: usize) -> Result<u64, InspectError> {
    Ok(vma_info(addr)?.anon_huge_bytes)
}

/// The address range of the mapping containing `addr`, from `/proc/self/maps`; `None` if `addr`
/// is not mapped. Safe to call on addresses that may have been unmapped: it never touches them.
///
/// ```
/// use remap::region::Region;
///
/// let region = Region::new(4096)?;
/// let addr = region.addr();
/// assert!(remap::inspect::mapping_range(addr)?.is_some());
/// drop(region);
/// // (Another thread could map something new there; single-threaded doctests do not.)
/// assert!(remap::inspect::mapping_range(addr)?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`InspectError::Read`] or [`InspectError::Parse`] if maps cannot be read or parsed.
pub fn mapping_range(addr: usize) -> Result<Option<Range<usize>>, InspectError> {
    let text = read_text(MAPS)?;
    for line in text.lines() {
        let range = parse_header(line).ok_or_else(|| InspectError::Parse {
            path: MAPS,
            line: line.to_owned(),
        })?;
        if range.contains(&addr) {
            return Ok(Some(range));
        }
    }
    Ok(None)
}

/// Whether the [`HUGE_PAGE_SIZE`](crate::region::HUGE_PAGE_SIZE)-aligned range containing `addr` is mapped by a transparent huge
/// page.
///
/// Every page of the range must be present, and:
///
/// - **With `/proc/kpageflags` readable (root)**: the PFNs must be consecutive from a
///   `THP_SIZE`-aligned PFN whose page is a THP compound head (`KPF_THP | KPF_COMPOUND_HEAD`), and
///   the last page a tail of the same kind, so the whole range is one PMD-sized THP folio. The
///   mapping's `AnonHugePages:` must be non-zero too, which rules out a folio that was already
///   PTE-mapped (split PMD) in a mapping with no other THP.
/// - **Otherwise**: the mapping's `AnonHugePages:` must be at least `THP_SIZE`. This is exact when
///   the mapping holds one aligned 2 MiB range (or all of its THPs are in the range asked about),
///   and a heuristic otherwise.
///
/// ```no_run
/// use remap::region::{Region, Thp, HUGE_PAGE_SIZE};
///
/// let region = Region::builder(HUGE_PAGE_SIZE)
///     .huge_aligned(true)
///     .thp(Thp::Huge)
///     .populate(true)
///     .build()?;
/// // True when THP is enabled (`madvise` or `always`) and a huge page could be allocated.
/// println!("THP: {}", remap::inspect::is_thp_mapped(region.addr())?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// As for [`Pagemap::open`] and [`vma_info`] (including [`InspectError::NotMapped`]).
pub fn is_thp_mapped(addr: usize) -> Result<bool, InspectError> {
    is_thp_mapped_with(addr, true)
}

/// [`is_thp_mapped`], with the `/proc/kpageflags` path only if `use_kpageflags` (so tests can
/// exercise the smaps fallback as root).
fn is_thp_mapped_with(addr: usize, use_kpageflags: bool) -> Result<bool, InspectError> {
    let start = addr - addr % THP_SIZE;
    let vma = vma_info(addr)?;
    if start < vma.range.start || start + THP_SIZE > vma.range.end {
        return Ok(false);
    }
    let pagemap = Pagemap::open()?;
    let pages = THP_SIZE / pagemap.page_size;
    let states = pagemap.states(start, pages)?;
    if !states.iter().all(PageState::is_present) {
        return Ok(false);
    }
    if vma.anon_huge_bytes == 0 {
        return Ok(false);
    }
    let pfns: Option<Vec<u64>> = states
        .iter()
        .map(|s| match s {
            PageState::Present { pfn, .. } => *pfn,
            _ => None,
        })
        .collect();
    let kpageflags_file = if use_kpageflags {
        File::open(KPAGEFLAGS).ok()
    } else {
        None
    };
    match (pfns, kpageflags_file) {
        (Some(pfns), Some(file)) => {
            let head = pfns[0];
            if head % pages as u64 != 0 {
                return Ok(false);
            }
            if !pfns.iter().zip(head..).all(|(pfn, want)| *pfn == want) {
                return Ok(false);
            }
            let head_flags = kpageflags_in(&file, head)?;
            let tail_flags = kpageflags_in(&file, pfns[pages - 1])?;
            Ok(
                head_flags & (KPF_THP | KPF_COMPOUND_HEAD) == KPF_THP | KPF_COMPOUND_HEAD
                    && tail_flags & (KPF_THP | KPF_COMPOUND_TAIL) == KPF_THP | KPF_COMPOUND_TAIL,
            )
        }
        _ => Ok(vma.anon_huge_bytes >= THP_SIZE as u64),
    }
}
