//! Bulk moving: one repetition of one method at one chunk size.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use remap::pattern::pattern_word;
use remap::region::{Region, Thp};
use uffd::{RangeError, RegisterMode, Uffd};

use crate::raw;
use crate::report::Method;

/// What one repetition needs besides its own regions.
pub(crate) struct BulkCtx<'a> {
    pub(crate) uffd: &'a Uffd,
    /// remap's mover, with its own userfaultfd, configured like `move-raw` (see
    /// [`crate::bench_mover`]).
    pub(crate) mover: &'a remap::mover::Mover,
    /// 2 MiB of pattern pages, copied into every source.
    pub(crate) template: &'a Region,
    pub(crate) seed: u64,
    #[cfg(feature = "peer")]
    pub(crate) peer: Option<&'a userfaultfd::Uffd>,
}

/// What one repetition measured.
pub(crate) struct RepOutcome {
    pub(crate) elapsed: Duration,
    pub(crate) source_thp_fraction: f64,
    /// userfaultfd ioctls issued, for the methods that issue them.
    pub(crate) ioctls: Option<u64>,
    /// `Err` with a description when a destination byte is wrong.
    pub(crate) verify: Result<(), String>,
}

/// The word stamped at the start of page `page` of a source (so a page landing at the wrong
/// offset is caught; the rest of the page is template pattern).
fn stamp(seed: u64, page: usize) -> u64 {
    pattern_word(seed ^ 0x5a5a_5a5a, page as u64, 0)
}

/// A fresh 2 MiB-aligned region of `len` bytes, THP-backed when `thp` (else never).
pub(crate) fn region(len: usize, thp: bool) -> Result<Region, String> {
    Region::builder(len)
        .huge_aligned(true)
        .thp(if thp { Thp::Huge } else { Thp::NoHuge })
        .build()
        .map_err(|e| format!("mapping {len} bytes: {e}"))
}

/// Fills `src` with the template, page by page stamped with its index.
pub(crate) fn fill_source(ctx: &BulkCtx<'_>, src: &Region) {
    let t = ctx.template.len();
    let mut off = 0;
    while off < src.len() {
        let n = t.min(src.len() - off);
        raw::memcpy_range(src, off, ctx.template, 0, n);
        off += n;
    }
    let ps = src.page_size();
    for page in 0..src.pages() {
        src.write_u64(page * ps, stamp(ctx.seed, page));
    }
}

/// Checks every page's stamp, and every word of every 64th page and of the last page.
pub(crate) fn verify_dest(
    dst: &Region,
    seed: u64,
    template_pages: usize,
    what: &str,
) -> Result<(), String> {
    verify_chunk(dst, seed, template_pages, (0, dst.len()), what)
}

/// [`verify_dest`] for the chunk `off..off + len` of `dst` alone (what a move of that chunk
/// left there): every page's stamp, and every word of the chunk's every 64th page and last page.
pub(crate) fn verify_chunk(
    dst: &Region,
    seed: u64,
    template_pages: usize,
    (off, len): (usize, usize),
    what: &str,
) -> Result<(), String> {
    let ps = dst.page_size();
    let (first, end) = (off / ps, (off + len) / ps);
    for page in first..end {
        let found = dst.read_u64(page * ps);
        let expected = stamp(seed, page);
        if found != expected {
            return Err(format!(
                "{what}: page {page} of the destination starts with {found:#018x}, \
                 expected {expected:#018x}"
            ));
        }
        if (page - first) % 64 == 0 || page + 1 == end {
            let tpage = (page % template_pages) as u64;
            for word in 1..ps / 8 {
                let found = dst.read_u64(page * ps + word * 8);
                let expected = pattern_word(seed, tpage, word as u64);
                if found != expected {
                    return Err(format!(
                        "{what}: word {word} of destination page {page} is {found:#018x}, \
                         expected {expected:#018x}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks that every 64th page of the source reads zero afterwards (the end state of a move).
pub(crate) fn verify_source_empty(src: &Region, what: &str) -> Result<(), String> {
    let ps = src.page_size();
    for page in (0..src.pages()).step_by(64) {
        let found = src.read_u64(page * ps);
        if found != 0 {
            return Err(format!(
                "{what}: source page {page} still reads {found:#018x} after the move"
            ));
        }
    }
    Ok(())
}

/// Fraction of `r` that `smaps` reports as `AnonHugePages` (0 when unreadable).
fn thp_fraction(r: &Region) -> f64 {
    remap::inspect::anon_huge_bytes(r.addr()).map_or(0.0, |b| b as f64 / r.len() as f64)
}

/// Calls `op(off, len)` for each chunk of `size` bytes; returns the elapsed time.
fn chunked(
    size: usize,
    chunk: usize,
    mut op: impl FnMut(usize, usize) -> Result<(), String>,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut off = 0;
    while off < size {
        let n = chunk.min(size - off);
        op(off, n)?;
        off += n;
    }
    Ok(start.elapsed())
}

/// Re-issues a range ioctl after partial progress until `len` bytes are done, counting the
/// ioctls in `*ioctls`.
pub(crate) fn whole(
    len: usize,
    ioctls: &mut u64,
    mut op: impl FnMut(usize) -> Result<usize, RangeError>,
) -> Result<(), RangeError> {
    let mut done = 0;
    while done < len {
        *ioctls += 1;
        match op(done) {
            Ok(n) | Err(RangeError::Partial { done: n }) => done += n,
            Err(e) => return Err(e.after(done)),
        }
    }
    Ok(())
}

/// The byte [`corrupt_dest`] flips: in the middle of page 0, which [`verify_dest`] checks word by
/// word.
const CORRUPT_OFFSET: usize = 2001;

/// The test hook of [`crate::BenchConfig::corrupt`]: flips one byte of the destination, as a
/// method that moved a wrong byte would leave it.
fn corrupt_dest(dst: &Region) {
    let word = CORRUPT_OFFSET / 8 * 8;
    let bit = (CORRUPT_OFFSET % 8) * 8;
    dst.write_u64(word, dst.read_u64(word) ^ (0xff << bit));
}

/// One repetition of `method`: map and fill a source of `size` bytes, move it to a destination
/// `chunk` bytes per operation (timed), verify. With `corrupt`, a byte of the destination is
/// flipped between the move and the verification ([`crate::BenchConfig::corrupt`]).
pub(crate) fn run_rep(
    ctx: &BulkCtx<'_>,
    method: Method,
    size: usize,
    chunk: usize,
    thp: bool,
    interference: bool,
    corrupt: bool,
) -> Result<RepOutcome, String> {
    let what = format!(
        "{method} chunk {chunk} thp {} spin {}",
        if thp { "on" } else { "off" },
        if interference { "yes" } else { "no" }
    );
    let src = region(size, thp)?;
    fill_source(ctx, &src);
    let source_thp_fraction = if thp { thp_fraction(&src) } else { 0.0 };
    let dst = region(size, thp)?;
    let spinner = interference.then(Spinner::start).transpose()?;
    let mut ioctls = 0u64;
    let result = match method {
        Method::MoveRaw => {
            register(ctx.uffd, &dst)?;
            chunked(size, chunk, |off, n| {
                whole(n, &mut ioctls, |d| {
                    raw::move_range(
                        ctx.uffd,
                        &dst,
                        off + d,
                        &src,
                        off + d,
                        n - d,
                        crate::RAW_MOVE_FLAGS,
                    )
                })
                .map_err(|e| format!("{what}: UFFDIO_MOVE at {off:#x}: {e}"))
            })
        }
        Method::MoveMover => {
            ctx.mover
                .register(&dst)
                .map_err(|e| format!("registering the destination with the mover: {e}"))?;
            chunked(size, chunk, |off, n| {
                ctx.mover
                    .move_range(&dst, off, &src, off, n)
                    .map(|report| ioctls += report.ioctls())
                    .map_err(|e| format!("{what}: Mover::move_range at {off:#x}: {e}"))
            })
        }
        Method::Copy => {
            register(ctx.uffd, &dst)?;
            chunked(size, chunk, |off, n| {
                whole(n, &mut ioctls, |d| {
                    raw::copy_range(ctx.uffd, &dst, off + d, &src, off + d, n - d)
                })
                .map_err(|e| format!("{what}: UFFDIO_COPY at {off:#x}: {e}"))?;
                src.madvise_dontneed(off..off + n)
                    .map_err(|e| format!("{what}: {e}"))
            })
        }
        Method::MemcpyPrefaulted | Method::MemcpyFresh => {
            if method == Method::MemcpyPrefaulted {
                dst.populate_write(0..size)
                    .map_err(|e| format!("{what}: {e}"))?;
            }
            chunked(size, chunk, |off, n| {
                raw::memcpy_range(&dst, off, &src, off, n);
                src.madvise_dontneed(off..off + n)
                    .map_err(|e| format!("{what}: {e}"))
            })
        }
        Method::Mremap => {
            let src_addr = src.addr();
            let mut source = raw::MremapSource::new(src);
            let r = chunked(size, chunk, |off, n| {
                source
                    .mremap_to(off, &dst, n)
                    .map_err(|e| format!("{what}: mremap of {:#x} at {off:#x}: {e}", src_addr))
            });
            drop(spinner);
            let elapsed = r?;
            if corrupt {
                corrupt_dest(&dst);
            }
            return Ok(RepOutcome {
                elapsed,
                source_thp_fraction,
                ioctls: None,
                verify: verify_dest(&dst, ctx.seed, ctx.template.pages(), &what),
            });
        }
        #[cfg(feature = "peer")]
        Method::PeerCopy => {
            let peer = ctx.peer.ok_or("the peer userfaultfd is not open")?;
            peer.register(dst.as_ptr().cast(), dst.len())
                .map_err(|e| format!("{what}: peer register: {e}"))?;
            chunked(size, chunk, |off, n| {
                let mut d = 0;
                while d < n {
                    d += raw::peer_copy_range(peer, &dst, off + d, &src, off + d, n - d)
                        .map_err(|e| format!("{what}: peer copy at {off:#x}: {e}"))?;
                }
                src.madvise_dontneed(off..off + n)
                    .map_err(|e| format!("{what}: {e}"))
            })
        }
        #[cfg(not(feature = "peer"))]
        Method::PeerCopy => return Err("peer-copy needs the `peer` feature".into()),
    };
    drop(spinner);
    let elapsed = result?;
    if corrupt {
        corrupt_dest(&dst);
    }
    let verify = verify_dest(&dst, ctx.seed, ctx.template.pages(), &what)
        .and_then(|()| verify_source_empty(&src, &what));
    let ioctls =
        matches!(method, Method::MoveRaw | Method::MoveMover | Method::Copy).then_some(ioctls);
    Ok(RepOutcome {
        elapsed,
        source_thp_fraction,
        ioctls,
        verify,
    })
}

/// Registers all of `dst` with `uffd` for MISSING faults (a MOVE or COPY destination must be).
pub(crate) fn register(uffd: &Uffd, dst: &Region) -> Result<(), String> {
    dst.all_pages()
        .register(uffd, RegisterMode::MISSING)
        .map(drop)
        .map_err(|e| format!("registering the destination: {e}"))
}

/// A second thread of the process spinning on another CPU, writing its own memory, so that
/// every TLB flush of the process must interrupt it (the condition of a concurrent compactor).
/// The measuring thread is pinned to CPU 0 and the spinner to CPU 1 while it lives.
pub(crate) struct Spinner {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    saved: Option<rustix::thread::CpuSet>,
}

impl Spinner {
    pub(crate) fn start() -> Result<Spinner, String> {
        let saved = rustix::thread::sched_getaffinity(None).ok();
        let mut me = rustix::thread::CpuSet::new();
        me.set(0);
        rustix::thread::sched_setaffinity(None, &me)
            .map_err(|e| format!("pinning the measuring thread to CPU 0: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(false));
        let memory = Region::builder(64 * 1024)
            .populate(true)
            .build()
            .map_err(|e| format!("spinner memory: {e}"))?;
        let handle = {
            let (stop, running) = (Arc::clone(&stop), Arc::clone(&running));
            std::thread::Builder::new()
                .name("remap-bench-spinner".into())
                .spawn(move || {
                    let mut other = rustix::thread::CpuSet::new();
                    other.set(1);
                    if let Err(e) = rustix::thread::sched_setaffinity(None, &other) {
                        tracing::warn!(%e, "could not pin the spinner to CPU 1");
                    }
                    running.store(true, Ordering::Release);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for off in (0..memory.len()).step_by(64) {
                            memory.write_u64(off, i);
                        }
                        i = i.wrapping_add(1);
                    }
                })
                .map_err(|e| format!("spawning the spinner: {e}"))?
        };
        while !running.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        Ok(Spinner {
            stop,
            handle: Some(handle),
            saved,
        })
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if let Some(saved) = &self.saved {
            let _ = rustix::thread::sched_setaffinity(None, saved);
        }
    }
}
