//! Running a [`Program`] on the real kernel, and observing the state after each step: contents
//! (two words per present page), `/proc/self/pagemap` (present, swapped, exclusive, PFN),
//! `/proc/kpageflags` (zero page, large folio; root only) and `/proc/self/smaps`
//! (`AnonHugePages`, and that every VMA is still one VMA).
//!
//! Set-up and steps run in this process; `Fork` forks it, so call [`Run::exec`] only from a
//! single-threaded process (the `remap conform` binary, or a test re-run as a child).

#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;

use remap::inspect::{Pagemap, PM_EXCLUSIVE, PM_PFN_MASK, PM_PRESENT, PM_SWAPPED};
use remap_oracle::{Errno, Field, Outcome, PAGE_SIZE};
use uffd::{Features, RegisterMode, Uffd};

use crate::program::{Program, Reg, Step, VmaSpec, OTHER, OURS};
use crate::sys::{self, Child, Window, UNTOUCHED};
use crate::ConformError;

const MADV_DONTNEED: i32 = 4;
const MADV_DONTFORK: i32 = 10;
const MADV_HUGEPAGE: i32 = 14;
const MADV_NOHUGEPAGE: i32 = 15;
const MADV_PAGEOUT: i32 = 21;
const MADV_COLLAPSE: i32 = 25;
const MADV_GUARD_INSTALL: i32 = 102;
const KPF_ZERO_PAGE: u64 = 1 << 24;
const KPF_THP: u64 = 1 << 22;
const KPF_COMPOUND: u64 = (1 << 15) | (1 << 16);
const PM_UFFD_WP: u64 = 1 << 57;
const PM_GUARD_REGION: u64 = 1 << 58;
/// The page size as a `usize` (4096 fits every target).
#[allow(clippy::cast_possible_truncation)]
const PAGE: usize = PAGE_SIZE as usize;
/// The offset of a page's last word.
const LAST_WORD: usize = PAGE - 8;

/// What the contents of a present page say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Content {
    /// First and last words zero.
    Zero,
    /// First word `tag`, last word `!tag`: a page the program wrote or copied.
    Tag(u64),
    /// Anything else.
    Torn {
        /// The first word.
        first: u64,
        /// The last word.
        last: u64,
    },
}

/// A present page as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SeenPresent {
    /// The contents.
    pub content: Content,
    /// The pagemap exclusive bit (mapped once).
    pub exclusive: bool,
    /// The PFN (0 without root).
    pub pfn: u64,
    /// kpageflags says zero page (`None` without root).
    pub zero: Option<bool>,
    /// kpageflags says part of a large folio (`None` without root).
    pub large: Option<bool>,
}

/// One page as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Seen {
    /// Neither present nor swapped (none, or a marker).
    Absent,
    /// A swap entry.
    Swapped,
    /// A uffd-wp PTE marker (pagemap: swap bit with `PM_UFFD_WP`).
    WpMarker,
    /// A guard region (pagemap: swap bit with `PM_GUARD_REGION`, 6.15+).
    Guard,
    /// In RAM.
    Present(SeenPresent),
}

/// One VMA as observed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeenVma {
    /// Per page.
    pub pages: Vec<Seen>,
    /// smaps `AnonHugePages` in bytes.
    pub anon_huge: u64,
    /// smaps shows a mapping starting here and ending where the VMA ends.
    pub intact: bool,
}

/// The observed state of all of a program's VMAs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Observation {
    /// Per VMA, in program order.
    pub vmas: Vec<SeenVma>,
}

/// What lasts across programs: the two userfaultfds and the `/proc` files.
#[derive(Debug)]
pub struct Harness {
    uffds: [Uffd; 2],
    pagemap: Pagemap,
    kpageflags: Option<File>,
    /// The features the userfaultfds have (WP markers need `WP_UNPOPULATED`).
    pub features: Features,
}

fn uffd_with_best_features() -> Result<Uffd, ConformError> {
    let wanted = [
        Features::SIGBUS | Features::PAGEFAULT_FLAG_WP | Features::WP_UNPOPULATED,
        Features::SIGBUS,
    ];
    let mut last = None;
    for f in wanted {
        match Uffd::builder().features(f).create() {
            Ok(u) => return Ok(u),
            Err(e) => last = Some(e),
        }
    }
    Err(ConformError::Create(last.expect("tried")))
}

fn outcome_of(rc: Result<(), rustix::io::Errno>, field: i64) -> Outcome {
    let field = if field == UNTOUCHED {
        Field::Untouched
    } else {
        Field::Value(field)
    };
    match rc {
        Ok(()) => Outcome::Ioctl { errno: None, field },
        Err(e) => Outcome::Ioctl {
            errno: Some(errno(e)),
            field,
        },
    }
}

/// The kernel's errno as the oracle's. One the oracle does not know becomes `EPERM`, which it
/// never predicts for these operations, so it always shows as a disagreement.
fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error()).unwrap_or(Errno::Perm)
}

fn call(r: Result<(), rustix::io::Errno>) -> Outcome {
    Outcome::Call(r.err().map(errno))
}

impl Harness {
    /// Opens the userfaultfds (with `SIGBUS`, so a wrongly predicted userfault kills rather than
    /// hangs, and WP markers where the kernel has them) and the `/proc` files.
    ///
    /// # Errors
    ///
    /// [`ConformError::Create`] without userfaultfd; [`ConformError::NoMove`] without MOVE.
    pub fn new() -> Result<Harness, ConformError> {
        let ours = uffd_with_best_features()?;
        if !ours.supports_move() {
            return Err(ConformError::NoMove);
        }
        let other = uffd_with_best_features()?;
        let features = ours.features();
        Ok(Harness {
            uffds: [ours, other],
            pagemap: Pagemap::open()?,
            kpageflags: File::open("/proc/kpageflags").ok(),
            features,
        })
    }

    /// Whether PFNs and kpageflags are readable (root).
    pub fn sees_frames(&self) -> bool {
        self.kpageflags.is_some()
    }

    /// Our userfaultfd (the one MOVE goes through).
    pub fn ours(&self) -> &Uffd {
        &self.uffds[0]
    }

    /// Maps and registers `prog`'s VMAs in a fresh window.
    ///
    /// # Errors
    ///
    /// [`ConformError::Setup`] when a mapping or madvise fails.
    pub fn setup<'p>(&'p self, prog: &'p Program) -> Result<Run<'p>, ConformError> {
        let window = Window::reserve(prog.window_len()).map_err(ConformError::Setup)?;
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for v in &prog.vmas {
            let (off, len) = span(v);
            window
                .map(off, len, i32::from(v.prot), v.shared)
                .map_err(ConformError::Setup)?;
            spans.push((off, off + len));
        }
        spans.sort_unstable();
        let mut at = 0;
        for (s, e) in spans.iter().copied().chain([(window.len(), window.len())]) {
            if s > at {
                window.unmap(at, s - at).map_err(ConformError::Setup)?;
            }
            at = at.max(e);
        }
        let base = window.base();
        for v in &prog.vmas {
            let (off, len) = span(v);
            let addr = base + off;
            let advice = match v.thp {
                remap_oracle::ThpAdvice::Huge => Some(MADV_HUGEPAGE),
                remap_oracle::ThpAdvice::NoHuge => Some(MADV_NOHUGEPAGE),
                remap_oracle::ThpAdvice::Default => None,
            };
            let io = |e: rustix::io::Errno| ConformError::Setup(e.into());
            if let Some(a) = advice {
                sys::madvise(addr, len, a).map_err(io)?;
            }
            if v.dontfork {
                sys::madvise(addr, len, MADV_DONTFORK).map_err(io)?;
            }
            if v.mlocked {
                sys::mlock_onfault(addr, len).map_err(io)?;
            }
            if let Some(r) = v.register {
                self.uffds[usize::try_from(r.uffd).expect("0 or 1")]
                    .register(addr as *mut u8, len, mode(r))
                    .map_err(ConformError::Register)?;
            }
        }
        Ok(Run {
            harness: self,
            prog,
            window,
            child: None,
        })
    }
}

fn span(v: &VmaSpec) -> (usize, usize) {
    let off = usize::try_from(v.offset * PAGE_SIZE).expect("usize");
    let len = usize::try_from(v.pages * PAGE_SIZE).expect("usize");
    (off, len)
}

fn mode(r: Reg) -> RegisterMode {
    let mut m = RegisterMode::empty();
    if r.missing {
        m |= RegisterMode::MISSING;
    }
    if r.wp {
        m |= RegisterMode::WP;
    }
    m
}

/// One program's mappings on the kernel.
#[derive(Debug)]
pub struct Run<'p> {
    harness: &'p Harness,
    prog: &'p Program,
    window: Window,
    child: Option<Child>,
}

impl Run<'_> {
    /// The window's base address (where the program's offsets count from).
    pub fn base(&self) -> u64 {
        self.window.base() as u64
    }

    fn addr(&self, loc: crate::program::Loc) -> usize {
        usize::try_from(self.prog.addr(self.base(), loc)).expect("usize")
    }

    fn uffd(&self, id: u32) -> &Uffd {
        match id {
            OURS => &self.harness.uffds[0],
            OTHER => &self.harness.uffds[1],
            _ => panic!("no userfaultfd {id}"),
        }
    }

    /// Performs `step` on the kernel. The caller has checked with the oracle that no allowed
    /// outcome of the step is a signal or a userfault: this is what makes the plain loads and
    /// stores of `Write` and `Read` sound.
    pub fn exec(&mut self, step: &Step) -> Outcome {
        let bytes = |pages: u64| usize::try_from(pages * PAGE_SIZE).expect("usize");
        let ours = &self.harness.uffds[0];
        match *step {
            Step::Move {
                dst,
                src,
                pages,
                mode,
            } => {
                // SAFETY: both ranges are in our window or unmapped; no reference points there.
                let (rc, f) = unsafe {
                    sys::raw_move(ours, self.addr(dst), self.addr(src), bytes(pages), mode)
                };
                outcome_of(rc, f)
            }
            Step::MoveBytes {
                dst,
                dst_delta,
                src,
                src_delta,
                len,
                mode,
            } => {
                let d = self
                    .addr(dst)
                    .wrapping_add_signed(isize::try_from(dst_delta).expect("isize"));
                let s = self
                    .addr(src)
                    .wrapping_add_signed(isize::try_from(src_delta).expect("isize"));
                let len = usize::try_from(len).expect("usize");
                // SAFETY: as for Move: the kernel validates the (possibly bad) arguments; the
                // ranges it could touch are ours.
                let (rc, f) = unsafe { sys::raw_move(ours, d, s, len, mode) };
                outcome_of(rc, f)
            }
            Step::Copy { dst, pages, tag } => {
                let len = bytes(pages);
                let mut buf = vec![0u8; len];
                for (i, page) in buf.chunks_exact_mut(PAGE).enumerate() {
                    let t = tag + i as u64;
                    page[..8].copy_from_slice(&t.to_ne_bytes());
                    page[LAST_WORD..].copy_from_slice(&(!t).to_ne_bytes());
                }
                // SAFETY: `dst` is in our window or unmapped; `buf` is ours and readable.
                let (rc, f) = unsafe { sys::raw_copy(ours, self.addr(dst), buf.as_ptr(), len, 0) };
                outcome_of(rc, f)
            }
            Step::ZeroPage { dst, pages } => {
                // SAFETY: `dst` is in our window or unmapped.
                let (rc, f) = unsafe { sys::raw_zeropage(ours, self.addr(dst), bytes(pages), 0) };
                outcome_of(rc, f)
            }
            Step::DontNeed { at, pages } => {
                call(sys::madvise(self.addr(at), bytes(pages), MADV_DONTNEED))
            }
            Step::Write { at, tag } => {
                let a = self.addr(at);
                // SAFETY: the oracle said the page is writable without a signal or userfault,
                // and it is in our window.
                unsafe {
                    sys::write_u64(a, tag);
                    sys::write_u64(a + LAST_WORD, !tag);
                }
                Outcome::OK
            }
            Step::Read { at } => {
                // SAFETY: the oracle said the page is readable without a signal or userfault.
                let _ = unsafe { sys::read_u64(self.addr(at)) };
                Outcome::OK
            }
            Step::Fork => match sys::fork_sleeper() {
                Ok(child) => {
                    self.child = Some(child);
                    Outcome::OK
                }
                Err(e) => Outcome::Call(Some(errno(
                    rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::PERM),
                ))),
            },
            Step::ChildExit => {
                if let Some(child) = self.child.take() {
                    let _ = child.exit();
                }
                Outcome::OK
            }
            Step::SwapOut { at } => call(sys::madvise(self.addr(at), PAGE, MADV_PAGEOUT)),
            Step::Collapse { vma, pmd } => {
                let a = self.prog.pmd_addr(self.base(), vma, pmd);
                call(sys::madvise(
                    usize::try_from(a).expect("usize"),
                    PAGE * 512,
                    MADV_COLLAPSE,
                ))
            }
            Step::SplitPmd { vma, pmd } => {
                let a = usize::try_from(self.prog.pmd_addr(self.base(), vma, pmd)).expect("usize");
                let page = PAGE;
                let prot = i32::from(self.prog.vmas[vma].prot);
                let r = sys::mprotect(a + page, page, libc::PROT_NONE)
                    .and_then(|()| sys::mprotect(a + page, page, prot));
                call(r)
            }
            Step::Register { vma, reg } => {
                let (off, len) = span(&self.prog.vmas[vma]);
                let addr = (self.window.base() + off) as *mut u8;
                call(
                    self.uffd(reg.uffd)
                        .register(addr, len, mode(reg))
                        .map(drop)
                        .map_err(|e| e.errno),
                )
            }
            Step::Unregister { vma, uffd } => {
                let (off, len) = span(&self.prog.vmas[vma]);
                let addr = (self.window.base() + off) as *mut u8;
                call(self.uffd(uffd).unregister(addr, len).map_err(|e| e.errno))
            }
            Step::Guard { at, pages } => call(sys::madvise(
                self.addr(at),
                bytes(pages),
                MADV_GUARD_INSTALL,
            )),
            Step::WriteProtect { at, pages } => {
                let r = ours.writeprotect(
                    self.addr(at) as *mut u8,
                    bytes(pages),
                    uffd::WriteProtectFlags::WP,
                );
                call(r.map_err(|e| e.errno))
            }
        }
    }

    /// Observes every VMA of the program.
    ///
    /// # Errors
    ///
    /// [`ConformError::Inspect`] when a `/proc` file cannot be read.
    pub fn observe(&self) -> Result<Observation, ConformError> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(ConformError::Setup)?;
        let blocks = parse_smaps(&smaps);
        let mut vmas = Vec::with_capacity(self.prog.vmas.len());
        for v in &self.prog.vmas {
            let (off, len) = span(v);
            let start = self.window.base() + off;
            let entries = self
                .harness
                .pagemap
                .entries(start, usize::try_from(v.pages).expect("usize"))?;
            let mut pages = Vec::with_capacity(entries.len());
            for (i, e) in entries.iter().enumerate() {
                pages.push(self.seen(*e, start + i * PAGE, v));
            }
            let block = blocks.iter().find(|b| b.0 == start);
            vmas.push(SeenVma {
                pages,
                anon_huge: block.map_or(0, |b| b.2),
                intact: block.is_some_and(|b| b.1 == start + len),
            });
        }
        Ok(Observation { vmas })
    }

    fn seen(&self, entry: u64, addr: usize, v: &VmaSpec) -> Seen {
        if entry & PM_PRESENT == 0 {
            return if entry & PM_GUARD_REGION != 0 {
                Seen::Guard
            } else if entry & PM_SWAPPED != 0 && entry & PM_UFFD_WP != 0 {
                Seen::WpMarker
            } else if entry & PM_SWAPPED != 0 {
                Seen::Swapped
            } else {
                Seen::Absent
            };
        }
        let pfn = entry & PM_PFN_MASK;
        let content = if v.prot & remap_oracle::PROT_READ != 0 {
            // SAFETY: the page is present (pagemap) and readable, in our window: the load
            // neither faults nor changes its state.
            let (first, last) = unsafe { (sys::read_u64(addr), sys::read_u64(addr + LAST_WORD)) };
            match (first, last) {
                (0, 0) => Content::Zero,
                (f, l) if l == !f => Content::Tag(f),
                (first, last) => Content::Torn { first, last },
            }
        } else {
            Content::Zero
        };
        let flags = match (&self.harness.kpageflags, pfn) {
            (Some(file), pfn) if pfn != 0 => {
                let mut buf = [0u8; 8];
                file.read_exact_at(&mut buf, pfn * 8)
                    .ok()
                    .map(|()| u64::from_ne_bytes(buf))
            }
            _ => None,
        };
        Seen::Present(SeenPresent {
            content,
            exclusive: entry & PM_EXCLUSIVE != 0,
            pfn,
            zero: flags.map(|f| f & KPF_ZERO_PAGE != 0),
            large: flags.map(|f| f & (KPF_THP | KPF_COMPOUND) != 0),
        })
    }
}

/// `(start, end, AnonHugePages bytes)` per smaps block.
fn parse_smaps(text: &str) -> Vec<(usize, usize, u64)> {
    let mut out: Vec<(usize, usize, u64)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("AnonHugePages:") {
            if let Some(last) = out.last_mut() {
                let kb: u64 = rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                last.2 = kb * 1024;
            }
            continue;
        }
        let Some(range) = line.split_whitespace().next() else {
            continue;
        };
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(s), Ok(e)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)) {
            if line.split_whitespace().count() >= 5 {
                out.push((s, e, 0));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn smaps_blocks_parse() {
        let text = "7f0000000000-7f0000200000 rw-p 00000000 00:00 0 \nSize:  2048 kB\nAnonHugePages:  2048 kB\nVmFlags: rd wr\n7f0000400000-7f0000401000 rw-p 00000000 00:00 0\nAnonHugePages:  0 kB\n";
        assert_eq!(
            super::parse_smaps(text),
            vec![
                (0x7f00_0000_0000, 0x7f00_0020_0000, 2 << 20),
                (0x7f00_0040_0000, 0x7f00_0040_1000, 0)
            ]
        );
    }
}
