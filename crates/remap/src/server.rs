//! A multi-threaded fault server: handler threads that resolve the page faults of a [`Region`]
//! from a [`PageSource`].
//!
//! A [`FaultServer`] owns the region it serves (moved in with [`FaultServer::builder`], lent back
//! with [`FaultServer::region`], returned by [`FaultServer::stop`]), so its handler threads can
//! never outlive the mapping. It creates its own non-blocking userfaultfd, registers the region for
//! MISSING faults and starts N threads. Each polls the userfaultfd together with an eventfd used
//! for shutdown, reads events in batches into its own [`uffd::EventBuffer`], and resolves each
//! fault with the [`Resolution`] the source picks: `UFFDIO_ZEROPAGE`, `UFFDIO_COPY` from the
//! source's own buffer, `UFFDIO_MOVE` from a pool of pages ([`MovePool`], which leases a page to
//! each fault: [`PoolLease`]), or `UFFDIO_POISON`.
//!
//! ```
//! use remap::region::Region;
//! use remap::server::{CopySource, FaultServer};
//!
//! let page = remap::region::Region::new(4096)?.page_size();
//! let image: Vec<u8> = (0..4 * page).map(|i| (i / page) as u8 + 1).collect();
//! let server = FaultServer::builder(Region::new(4 * page)?, CopySource::new(image))
//!     .threads(2)
//!     .start()?;
//! // Each first touch faults; a handler thread copies the page in and wakes us.
//! assert_eq!(server.region().read_u8(2 * page + 5), 3);
//! assert_eq!(server.stats().served_copy, 1);
//! let region = server.stop()?; // unregistered: ordinary memory again
//! assert_eq!(region.read_u8(2 * page), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Two complete programs to start from, each run by CI: `crates/remap/examples/lazy_restore.rs`
//! (serve a region lazily from a snapshot file, the way a VMM restores a guest: a
//! [`PageSource`] that `pread`s the faulting page into its scratch page and answers
//! [`Resolution::Copy`]) and `crates/remap/examples/sigbus_server.rs` (a [`SigbusServer`] over a
//! [`CopySource`] and a [`MovePool`], pages given back and served again). Run them with
//! `cargo run --release -p remap --example lazy_restore` (or `sigbus_server`).
//!
//! Each resolve is one ioctl that also wakes the faulting thread: faults arrive one page at a
//! time, so `DONTWAKE` plus a separate `UFFDIO_WAKE` would cost two ioctls per fault for nothing.
//! A fault that another thread resolved first (EEXIST: two threads faulted on the same page and
//! both events were read) is answered with `UFFDIO_WAKE` and counted as a race
//! ([`ServerStats::races`]), never as a second serve.
//!
//! # Choosing a mode: latency against CPU
//!
//! A handler-thread fault is two wake-ups (the handler's, then the faulting thread's), and what
//! a wake-up costs depends on where the woken thread runs: on a CPU that is busy or still
//! polling it is a context switch, on an idle one of a VM that halts its idle vCPUs at once it
//! is the host waking the vCPU. [`crate::system::cpu_idle`] (and `remap probe`) tells which
//! kind of machine this is. Figures from the default `scripts/bench.sh` run on a 2-vCPU KVM
//! guest with `haltpoll` and `guest_halt_poll_ns=0` (medians of 7, p50 of the fault round trip
//! seen by the faulting thread):
//!
//! - **SIGBUS mode** ([`SigbusServer`]) is the fastest and costs no thread: the faulting
//!   thread resolves its own fault (2.4 us with one faulting thread, 3.8 us with two; about
//!   0.1 us of CPU outside the faulting threads per fault). It needs an async-signal-safe
//!   source and gives up the non-cooperative events.
//! - **One handler thread, parked in `poll`** (the default) costs CPU only per fault and
//!   nothing while idle, but its latency is the scheduler's choice: about 4 us when the
//!   handler runs on the faulting thread's CPU, 60-70 us when it runs on the other one and
//!   both vCPUs halt between faults (every minimal handler loop measures the same, the peer
//!   crate's included; see `docs/performance.md`).
//! - **One handler pinned per CPU** ([`FaultServerBuilder::pin_cpus`] with
//!   [`threads`](FaultServerBuilder::threads) set to the CPU count): every fault finds a handler
//!   on its own CPU, which takes it while the others find nothing. 5.7 us with one faulting
//!   thread (2.4x SIGBUS mode: the fault also wakes the handler on the other CPU, since one
//!   userfaultfd wakes every poller) and 6.4 us with two (1.7x), 6-7 us of handler CPU per
//!   fault. The mode to choose when latency matters and SIGBUS mode cannot be used.
//! - **Handler and faulting thread on one CPU**: where the faulting threads are pinned (vCPU
//!   threads, a runtime's workers), a handler pinned to the same CPU serves without any
//!   cross-CPU wake-up: 4.1 us with one handler and one faulting thread both on CPU 0 (1.6x
//!   SIGBUS mode), 13x the faults per second of the unpinned handler. Pin the faulting thread
//!   to [`crate::system::allowed_cpu`]`(i)` to put it beside handler `i`.
//! - **Adaptive waiting** ([`FaultServerBuilder::spin`]) takes the handler's wake-up out of a
//!   burst of faults: a handler thread keeps reading for a bounded time before it parks. It
//!   pays only with a CPU to spare for the spinner: on this 2-vCPU guest one faulting thread
//!   waits 24-27 us (the faulting thread's own vCPU still halts while it waits), two 5.6-5.7 us
//!   (1.5x SIGBUS mode) with two spinning pinned handlers, and every spinning handler burns its
//!   CPU for the spin after each fault.
//!
//! On the same guest polling before it halts (`guest_halt_poll_ns=200000`) the other-CPU case
//! shrinks: one handler 7 us, two pinned 4.8 us (2.0x SIGBUS mode). Measure on
//! yours: `scripts/bench.sh --only raw-loop,server-copy,server-copy-pin,server-copy-spin,
//! server-sigbus`.
//!
//! # Event ordering
//!
//! With `EVENT_REMOVE`, `EVENT_UNMAP` and `EVENT_REMAP` enabled (the default, where the kernel
//! supports them), the server reads the non-cooperative events and applies them in the order the
//! kernel queued them, reporting each to the source ([`PageSource::on_remove`],
//! [`PageSource::on_unmap`], [`PageSource::on_remap`], [`PageSource::on_fork`]). Events go to
//! whichever handler thread reads first, so the server serialises that: a thread holds one lock
//! across its `read(2)` and the application of the non-fault events it read (callbacks
//! included), and releases it before resolving the faults it read. A callback therefore never
//! runs concurrently with another event's, and an event read later (say the UNMAP of a range
//! whose REMOVE another thread is still reporting) waits for the earlier one; keep the callbacks
//! short, since reading waits for them too.
//!
//! - While such an event is queued and unread, every resolve fails with EAGAIN
//!   ([`uffd::RangeError::EventsPending`]) and the event's producer (the thread in `madvise`,
//!   `munmap`, `mremap` or `fork`) is blocked until the event is read. A handler thread that gets
//!   EAGAIN parks the fault in its own list and goes back to poll: whichever thread reads the
//!   events then bumps an event *generation* and signals every handler thread's eventfd, and a
//!   thread with parked faults retries them once per generation, right away. The kernel keeps
//!   reporting EAGAIN for a short window after the read (until the woken producer lowers its
//!   `mmap_changing` count), so a retry in the same generation that fails again backs off,
//!   10 µs doubling up to 1 ms, until it succeeds or a new generation comes. Without parked
//!   faults a thread waits in `poll` with no timeout. Each EAGAIN counts in
//!   [`ServerStats::retries`].
//! - A REMOVE (`MADV_DONTNEED`) can arrive while faults on the same range are still queued.
//!   Resolving such a fault afterwards is correct: the faulting thread wanted the page, and gets
//!   it. After a REMOVE the range reads as missing again, so its next access faults again and is
//!   served again.
//! - After an UNMAP (`munmap` of part of the region) that range is gone: the server remembers it,
//!   re-reserves it (`PROT_NONE`, `MAP_FIXED_NOREPLACE`, so the region's own unmap on drop never
//!   hits memory someone else mapped there since; see [Shutdown](#shutdown)), and drops queued
//!   faults there without resolving them, waking their threads (which retry the access and find
//!   no memory: SIGSEGV, or EFAULT for a kernel access). A resolve that raced with the unmap fails
//!   with ENOENT or EINVAL; if the range is gone by an event already applied, or the
//!   source-free fallback resolve (see [Failed resolves](#failed-resolves)) fails the same way
//!   there, that fault too is dropped ([`ServerStats::dropped`]), never an error.
//! - After a REMAP (`mremap` that moves part of the region) the old range is gone as for UNMAP
//!   (and re-reserved likewise), and the server unregisters the new range: threads faulting
//!   there are woken and get ordinary anonymous memory. The region is not resized or moved; the
//!   source learns of it through `on_remap`.
//! - A fault outside the region can still reach the server: the REMAP event of an `mremap` that
//!   moves *and grows* part of the region carries the old length, so the rest of the new mapping
//!   is still registered, and an `mremap` that grows the region in place sends no event at all.
//!   None of that memory is ours. The server unregisters the faulting page and then wakes the
//!   thread, which gets ordinary anonymous memory ([`ServerStats::dropped`]); every fault the
//!   server drops ends that way, never by a bare wake into the same fault.
//! - A FORK (only with `EVENT_FORK`, which needs CAP_SYS_PTRACE, opt-in through
//!   [`FaultServerBuilder::features`]) hands the child's userfaultfd to [`PageSource::on_fork`].
//!   The forking thread waits (holding the allocator's locks) until a handler thread reads the
//!   event, so nothing on the handler threads may allocate meanwhile: see
//!   [Forks](PageSource#forks-event_fork) for what the server does and what a source may do.
//!   The default drops it, which unregisters the child's ranges: the child then sees ordinary
//!   anonymous memory. Without `EVENT_FORK` a child does not inherit the registration at all.
//!   Regions are `MADV_DONTFORK` by default, and then the child gets no mapping and there is no
//!   event.
//!
//! Without `EVENT_UNMAP` / `EVENT_REMAP` the server cannot know about an `munmap` or `mremap` of
//! part of the region: do not do either then.
//!
//! # Failed resolves
//!
//! A resolve can fail for reasons other than a race or pending events: a [`Resolution::Move`]
//! from a hole (ENOENT) or from a page shared after `fork` (EBUSY), a source region whose
//! protection or mlock differs (EINVAL), an unusable resolution (a `Copy` of the wrong length, a
//! `Move` offset outside its region). Waking the faulting thread would only make it fault again
//! into the same failure, for ever. So the server falls back, once per failed resolve, to the
//! [`FailurePolicy`] set with [`FaultServerBuilder::on_failure`]: by default the zero page
//! ([`FailurePolicy::Zero`]), or poisoning the page ([`FailurePolicy::Poison`]). The failure
//! counts in [`ServerStats::errors`], a successful fallback in [`ServerStats::fallbacks`], and
//! a `tracing` warning is logged for the first failure and then once per 1024.
//!
//! # Shutdown
//!
//! [`FaultServer::stop`] (and `Drop`) writes the shutdown eventfd, joins every handler thread, and
//! then unregisters the region. `UFFDIO_UNREGISTER` wakes every thread still blocked in a fault
//! there (a fault the source left unresolved, or one queued after the handlers stopped); they
//! retry the access and get normal anonymous-memory behaviour: a zero page. `stop` returns the
//! region, so such threads can finish their access before it is unmapped; dropping the server
//! unmaps it, so only drop it when no thread touches the region any more.
//!
//! Threads that borrow the region from the server ([`FaultServer::region`], in
//! `std::thread::scope`, say) keep `stop` from being called, since it consumes the server: call
//! [`FaultServer::stop_serving`] (`&self`) instead, which stops and unregisters the same way
//! but leaves the region in the server, so the borrowers finish their accesses on mapped,
//! ordinary memory; then `stop` hands the region back. [`FaultServer::into_parts`] returns the
//! source as well (a [`MovePool`] can then give its own region back with
//! [`MovePool::into_region`]). [`SigbusServer`] has the same pair of methods.
//!
//! Ranges of the region that were unmapped or remapped away while it was served are re-reserved
//! by the server as they go, so the returned region (or the dropped server) unmaps only its own
//! reservations there; they are `PROT_NONE`, and touching them raises SIGSEGV. If someone mapped
//! memory into such a hole before the server could re-reserve it (between the `munmap` and the
//! server reading its event), `stop` returns the region cut short before that hole, leaking the
//! rest with a `tracing` warning, or [`ServerError::RegionLost`] if the hole is at its start.
//!
//! # Panics in a page source
//!
//! A thread blocked in a fault waits until someone resolves it, so a handler thread that dies
//! silently could hang the process. By default ([`PanicPolicy::Abort`]) a panic in a handler
//! thread (in practice: in the page source) is caught, logged with `tracing`, and the process is
//! aborted. With [`PanicPolicy::UnregisterAndStop`] the server unregisters the region (waking every
//! faulting thread to zero-fill behaviour), stops all handler threads, and reports the panic from
//! [`FaultServer::stop`] as [`ServerError::HandlerPanicked`]. The tokio server
//! (`AsyncFaultServer`, feature `tokio`) follows the same policy, reporting from `serve`.
//!
//! # SIGBUS mode
//!
//! [`SigbusServer`] uses `UFFD_FEATURE_SIGBUS` instead of handler threads: the faulting thread
//! gets SIGBUS and resolves its own fault inside the signal handler; see its docs for what that
//! requires of the source ([`SignalSafeSource`]). It shares the resolve code with the handler
//! threads (one engine under all three servers, kept async-signal-safe for it). Nothing reads its userfaultfd, so it enables no
//! events: do not `munmap` or `mremap` part of its region while it is served. A failed resolve
//! falls back to the zero page; a page poisoned by the source raises a SIGBUS that the server
//! leaves to the previous handler (normally fatal). Stopping it while threads fault is safe:
//! they retry their access and find ordinary memory.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::AtomicU64;

use crate::region::Region;

mod engine;
mod fault_around;
mod holes;
mod page_bits;
mod pool;
mod reader;
mod retry;
mod sigbus;
mod sources;
mod threads;
#[cfg(feature = "tokio")]
mod tokio_server;

#[cfg(test)]
mod tests;

pub use self::pool::{MovePool, PoolEmpty, PoolError, PoolLease};
pub use self::sigbus::{SigbusServer, SignalSafeSource};
pub use self::sources::{CopySource, FnSource, ZeroSource};
pub use self::threads::{FaultServer, FaultServerBuilder};
#[cfg(feature = "tokio")]
pub use self::tokio_server::AsyncFaultServer;

/// A page fault for a [`PageSource`] to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Offset of the faulting page from the start of the region (page-aligned).
    pub offset: usize,
    /// Address of the faulting page.
    pub address: usize,
    /// Bytes to resolve: the page size.
    pub len: usize,
    /// Whether the fault was a write (always `false` in SIGBUS mode, which cannot tell).
    pub write: bool,
    /// The faulting thread's id, when the kernel reports it (`UFFD_FEATURE_THREAD_ID`).
    pub thread_id: Option<u32>,
}

/// How to resolve a fault: what [`PageSource::resolve`] returns.
///
/// Not `Clone`: a [`Resolution::Lease`] owns a pool slot until it settles.
#[derive(Debug)]
pub enum Resolution<'a> {
    /// Map the shared zero page (`UFFDIO_ZEROPAGE`); a later write allocates a private page.
    Zero,
    /// Copy these bytes, exactly [`Fault::len`] of them, into a fresh page (`UFFDIO_COPY`).
    /// Answering [`PageSource::resolve_around`], a whole number of pages up to the `pages`
    /// offered: copied in one ioctl from the faulting page on (see
    /// [fault-around](PageSource#fault-around)).
    Copy(&'a [u8]),
    /// Move the page at `offset` of `from` into place (`UFFDIO_MOVE`): zero-copy. The page must be
    /// present and mapped only there. If the server cannot use it (another thread resolved the
    /// fault first) it stays where it is; either way the server then calls
    /// [`PageSource::move_done`].
    Move {
        /// The region holding the page (the source's own, for example a [`MovePool`]).
        from: &'a Region,
        /// Page-aligned offset of the page in `from`.
        offset: usize,
    },
    /// Move a page leased from a [`MovePool`] into place (`UFFDIO_MOVE`), as
    /// [`Move`](Self::Move) does, then settle the lease: what a `MovePool` answers. A lease
    /// dropped unused settles by itself (the page stays in the pool), so a source that wraps a
    /// pool can pass the lease on or drop it. [`PageSource::move_done`] is not called for it.
    /// A lease of several pages ([`PoolLease::pages`], from a pool with
    /// [`MovePool::fault_around`]) moves them in one ioctl from the faulting page on.
    Lease(PoolLease<'a>),
    /// Poison the page (`UFFDIO_POISON`): the faulting access, and every later one, gets SIGBUS.
    Poison,
    /// Leave the fault unresolved: the faulting thread keeps waiting until something else
    /// resolves or wakes it, or the server stops (which wakes it to a zero page).
    Leave,
}

impl Resolution<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Resolution::Zero => "zero",
            Resolution::Copy(_) => "copy",
            Resolution::Move { .. } | Resolution::Lease(_) => "move",
            Resolution::Poison => "poison",
            Resolution::Leave => "leave",
        }
    }
}

/// Where the pages that resolve faults come from.
///
/// [`resolve`](Self::resolve) is called from the server's handler threads, concurrently, once per
/// fault read (again after an EAGAIN retry). The event callbacks are called in the order the
/// events are read, with addresses (not offsets: a remapped range is no longer in the region);
/// they default to doing nothing, and `on_fork` to dropping the child's userfaultfd.
///
/// ```
/// use remap::region::Region;
/// use remap::server::{Fault, FaultServer, PageSource, Resolution};
///
/// /// Odd pages read as zero, even pages hold their page number.
/// struct Numbered;
///
/// impl PageSource for Numbered {
///     fn resolve<'a>(&'a self, fault: &Fault, page: &'a mut [u8]) -> Resolution<'a> {
///         if (fault.offset / fault.len) % 2 == 1 {
///             return Resolution::Zero;
///         }
///         page.fill((fault.offset / fault.len) as u8);
///         Resolution::Copy(page)
///     }
/// }
///
/// let region = Region::new(4 * 4096)?;
/// let server = FaultServer::builder(region, Numbered).start()?;
/// let page = server.region().page_size();
/// assert_eq!(server.region().read_u8(2 * page), 2);
/// assert_eq!(server.region().read_u8(page), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Forks (`EVENT_FORK`)
///
/// glibc's `fork()` takes the allocator's locks (and stdio's) before it enters the kernel and
/// holds them until the system call returns, and with `EVENT_FORK` the kernel holds the forking
/// thread until a handler thread has *read* the FORK event. So while another thread forks, any
/// allocation, free or stdio lock on a handler thread may wait for that fork, which waits for
/// the handler: a deadlock. The server's own work between reads allocates nothing (its buffers,
/// the list of faults parked on EAGAIN and the record of unmapped ranges are allocated when it
/// starts, and `start` returns only once every handler thread has made its allocations); only
/// logging a failed resolve with `tracing` may allocate, if a subscriber records it. With
/// `EVENT_FORK` enabled, the source must do the same:
///
/// - the event callbacks ([`on_remove`](Self::on_remove), [`on_unmap`](Self::on_unmap),
///   [`on_remap`](Self::on_remap), [`on_fork`](Self::on_fork)) run under the lock that
///   serialises event reading, so another fork's event cannot be read until they return,
///   however many handler threads there are: they must not allocate, free, print or take a lock
///   that a forking thread may hold. [`on_fork`](Self::on_fork) may keep the child's `Uffd` in
///   storage made beforehand (a slot, a preallocated array, a bounded channel with room:
///   `std::sync::mpsc::sync_channel` and `try_send`), hand it to another thread that way, or
///   drop it (a `close(2)`);
/// - [`resolve`](Self::resolve) and [`move_done`](Self::move_done) run outside that lock: with
///   one handler thread they must obey the same rule (no other thread could read the event); with
///   more, an allocating `resolve` only idles its own thread until the fork completes.
///
/// Stopping the server while another thread forks can deadlock the same way (an exiting
/// handler thread frees its buffers): stop it first, or make sure no fork is under way.
///
/// # Fault-around
///
/// A source whose [`fault_around`](Self::fault_around) is more than 1 resolves a *run* of pages
/// per fault, in one `UFFDIO_COPY` or `UFFDIO_MOVE` (one ioctl, and for a MOVE one batched TLB
/// flush, for up to 64 pages): the built-in sources opt in with `.fault_around(pages)`
/// ([`CopySource::fault_around`], [`FnSource::fault_around`], [`MovePool::fault_around`]).
///
/// - **The window runs forward from the faulting page**, never before it: the ioctl has to start
///   at the faulting page, since a COPY or MOVE stops at the first page already present, and a
///   window starting at a present page before the fault would serve nothing. Forward runs serve
///   ascending sequential first touches (a file image, a snapshot restore, a scan) with one
///   fault per window, whatever the alignment of the first touch; descending or random touches
///   gain less (see the bench's fault-around rows).
/// - **Bounded** by the end of the region, by ranges unmapped or remapped away, by what the
///   source has (the end of a [`CopySource`]'s image, the contiguous free slots of a
///   [`MovePool`]) and by pages already present: the kernel stops the run at the first one,
///   which is never overwritten, and reports the pages done before it; the faulting page is
///   served (and its thread woken) as soon as one page is done.
/// - **Counted truthfully**: a run counts one fault and one serve (in `served_copy` or
///   `served_move`), and its pages beyond the faulting one in [`ServerStats::pages_around`].
/// - A run that fails at its first page for a reason other than a race or pending events (for
///   example a VMA boundary inside the window) is retried as the faulting page alone.
pub trait PageSource: Send + Sync + 'static {
    /// How to resolve `fault`. `page` is a scratch buffer of [`Fault::len`] bytes that the calling
    /// handler thread owns (empty in SIGBUS mode), for sources that build the page on demand and
    /// answer [`Resolution::Copy`] with it.
    fn resolve<'a>(&'a self, fault: &Fault, page: &'a mut [u8]) -> Resolution<'a>;

    /// The fault-around window in pages: how many pages, the faulting one first, this source
    /// wants to resolve per fault (see [fault-around](Self#fault-around)). Default 1: off. The
    /// server clamps it to 1..=64 and sizes its scratch buffers from it when it starts, so it
    /// should not grow afterwards (a filling source then gets a scratch buffer of the size at
    /// start, and fewer pages).
    fn fault_around(&self) -> usize {
        1
    }

    /// How to resolve `fault` and, in the same ioctl, up to `pages - 1` pages after it: called
    /// instead of [`resolve`](Self::resolve) when [`fault_around`](Self::fault_around) is more
    /// than 1. `pages` (at least 1) is the window clipped to the end of the region (and to
    /// ranges unmapped away); `page` is a scratch buffer of `pages` pages (empty in SIGBUS
    /// mode). Answer a [`Resolution::Copy`] of up to `pages` whole pages, a
    /// [`Resolution::Lease`] of up to `pages` pages, or any single-page resolution. The default
    /// resolves the faulting page alone.
    fn resolve_around<'a>(
        &'a self,
        fault: &Fault,
        pages: usize,
        page: &'a mut [u8],
    ) -> Resolution<'a> {
        let _ = pages;
        self.resolve(fault, page)
    }

    /// The server tried the [`Resolution::Move`] of the page at `from_offset`: `used` is true when
    /// the MOVE succeeded, false when it failed (the fault was resolved by someone else, or must
    /// be retried after EAGAIN). A failed MOVE does not always leave the page where it was:
    /// Linux 6.18 can answer EEXIST for a MOVE that did move it (two threads moving pages out of
    /// one THP; `docs/findings/move-thp-eexist.md`), so check where the page is (for example
    /// with [`Pagemap::entry`](crate::inspect::Pagemap::entry)) before counting it as still
    /// there, as [`MovePool`] does.
    fn move_done(&self, from_offset: usize, used: bool) {
        let _ = (from_offset, used);
    }

    /// `MADV_DONTNEED` / `MADV_REMOVE` dropped the pages of `range` (addresses): they read as
    /// missing again and will fault again.
    fn on_remove(&self, range: Range<usize>) {
        let _ = range;
    }

    /// `munmap` removed `range` (addresses): faults there are dropped from now on.
    fn on_unmap(&self, range: Range<usize>) {
        let _ = range;
    }

    /// `mremap` moved `len` bytes from address `from` to address `to`; the server no longer
    /// serves either range.
    fn on_remap(&self, from: usize, to: usize, len: usize) {
        let _ = (from, to, len);
    }

    /// The process forked (only with `EVENT_FORK`): the child's userfaultfd, registered for the
    /// child's copies of the served ranges. Dropping it (the default) unregisters them, so the
    /// child sees ordinary anonymous memory. Must not allocate: see
    /// [Forks](Self#forks-event_fork).
    fn on_fork(&self, child: uffd::Uffd) {
        drop(child);
    }
}

/// A shared source is a source: keep an `Arc` clone to reach it (and its own state) from
/// outside the server.
impl<S: PageSource> PageSource for std::sync::Arc<S> {
    fn resolve<'a>(&'a self, fault: &Fault, page: &'a mut [u8]) -> Resolution<'a> {
        (**self).resolve(fault, page)
    }
    fn fault_around(&self) -> usize {
        (**self).fault_around()
    }
    fn resolve_around<'a>(
        &'a self,
        fault: &Fault,
        pages: usize,
        page: &'a mut [u8],
    ) -> Resolution<'a> {
        (**self).resolve_around(fault, pages, page)
    }
    fn move_done(&self, from_offset: usize, used: bool) {
        (**self).move_done(from_offset, used);
    }
    fn on_remove(&self, range: Range<usize>) {
        (**self).on_remove(range);
    }
    fn on_unmap(&self, range: Range<usize>) {
        (**self).on_unmap(range);
    }
    fn on_remap(&self, from: usize, to: usize, len: usize) {
        (**self).on_remap(from, to, len);
    }
    fn on_fork(&self, child: uffd::Uffd) {
        (**self).on_fork(child);
    }
}

/// What a handler thread does when the page source panics; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PanicPolicy {
    /// Log the panic and abort the process (`std::process::abort`): no faulting thread can hang.
    #[default]
    Abort,
    /// Unregister the region (faulting threads wake and see zero pages), stop every handler
    /// thread, and report the panic from [`FaultServer::stop`].
    UnregisterAndStop,
}

/// What a fault server does when resolving a fault fails for a reason other than a race (EEXIST),
/// pending events (EAGAIN) or the destination having been unmapped: for example a
/// [`Resolution::Move`] from a hole (ENOENT), from a page shared after `fork` (EBUSY), or from a
/// region whose protection differs (EINVAL). See the [module docs](self#failed-resolves).
///
/// The server never just wakes the faulting thread after such a failure: it would fault again,
/// the source would likely answer the same, and the two would livelock. It falls back, once per
/// failed resolve, to the outcome chosen here, and counts the failure in
/// [`ServerStats::errors`] (and a successful fallback in [`ServerStats::fallbacks`]).
///
/// ```
/// use remap::server::FailurePolicy;
/// assert_eq!(FailurePolicy::default(), FailurePolicy::Zero);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Map the zero page (`UFFDIO_ZEROPAGE`): the faulting thread goes on and reads zeros, as it
    /// would from fresh anonymous memory.
    #[default]
    Zero,
    /// Poison the page (`UFFDIO_POISON`): the faulting access, and every later one, gets SIGBUS
    /// (`BUS_MCEERR_AR`), which kills the process unless it handles that signal. Needs
    /// `UFFD_FEATURE_POISON` (Linux 6.6); a server asked for it on an older kernel does not
    /// start ([`ServerError::Unsupported`]).
    Poison,
}

/// Why a fault server could not start, or what stopped it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Creating the userfaultfd failed (including `EVENT_FORK` without CAP_SYS_PTRACE).
    #[error("creating the server's userfaultfd")]
    Create(#[from] uffd::CreateError),
    /// Registering (or unregistering) the region failed.
    #[error("registering the region")]
    Register(#[from] uffd::ControlError),
    /// Creating the shutdown eventfd failed.
    #[error("creating the shutdown eventfd: {0}")]
    Eventfd(uffd::Errno),
    /// Spawning a handler thread failed.
    #[error("spawning a handler thread")]
    Spawn(#[source] std::io::Error),
    /// Registering the userfaultfd with the tokio reactor failed (no runtime with IO enabled).
    #[error("registering the userfaultfd with the tokio reactor")]
    Reactor(#[source] std::io::Error),
    /// Part of the served region was unmapped (or remapped away) and someone else mapped memory
    /// at its start since, so no part of the region can be handed back without unmapping memory
    /// that is not ours: the mapping is leaked (and a warning logged).
    #[error("the served region at {addr:#x} lost its start to another mapping; leaked")]
    RegionLost {
        /// The region's start address.
        addr: usize,
    },
    /// Installing the SIGBUS handler failed, or every SIGBUS-mode slot is taken.
    #[error("SIGBUS mode: {what}: {errno}")]
    Sigbus {
        /// What failed.
        what: &'static str,
        /// The errno (ENOSPC when the registry is full).
        errno: uffd::Errno,
    },
    /// A handler thread panicked (under [`PanicPolicy::UnregisterAndStop`]).
    #[error("a fault handler thread panicked: {message}")]
    HandlerPanicked {
        /// The panic message.
        message: String,
    },
    /// The chosen configuration needs a userfaultfd feature the kernel lacks (for example
    /// [`FailurePolicy::Poison`] without `UFFDIO_POISON`, before Linux 6.6).
    #[error("{what} needs the userfaultfd feature {missing:?}, which the kernel lacks")]
    Unsupported {
        /// What needs it.
        what: &'static str,
        /// The missing features.
        missing: uffd::Features,
    },
    /// A handler thread stopped on an error reading or polling the userfaultfd.
    #[error("a fault handler thread failed: {errno}")]
    Handler {
        /// The errno of the failed `poll` or `read`.
        errno: uffd::Errno,
    },
}

crate::counters! {
    /// A snapshot of a server's counters ([`FaultServer::stats`]).
    ///
    /// Every fault read counts once in `faults`; then it is served (one of `served_*`), lost a race
    /// (`races`: already resolved, answered with a wake), left unresolved by the source (`left`),
    /// dropped (`dropped`: its range was unmapped or remapped away, or it was outside the region),
    /// or failed (`errors`). A fault
    /// retried after EAGAIN counts once in `faults` and once per EAGAIN in `retries`.
    ///
    /// A serve is counted just before the ioctl that resolves it (and taken back if the ioctl fails),
    /// so a thread woken by it already sees its fault counted; while resolves are in flight the
    /// `served_*` counters may briefly include a fault that turns out to be a race.
    ///
    /// ```
    /// let stats = remap::server::ServerStats::default();
    /// assert_eq!(stats.served(), 0);
    /// ```
    pub struct ServerStats;
    /// The live counters behind [`ServerStats`].
    pub(crate) struct Counters {
        /// Page-fault events read (or SIGBUS faults taken).
        faults,
        /// Faults served with `UFFDIO_ZEROPAGE`.
        served_zero,
        /// Faults served with `UFFDIO_COPY`.
        served_copy,
        /// Faults served with `UFFDIO_MOVE`.
        served_move,
        /// Pages served by fault-around beyond the faulting one: a fault whose run served 16
        /// pages counts 1 in `faults` and `served_*` and 15 here. Counted, like a serve, just
        /// before the ioctl, as if the whole run will be placed, and corrected after it.
        pages_around,
        /// Faults answered with `UFFDIO_POISON`.
        poisoned,
        /// Faults already resolved by another thread (EEXIST), answered with `UFFDIO_WAKE`.
        races,
        /// Resolves that got EAGAIN (events pending) and were retried after reading events.
        retries,
        /// Faults the source chose to leave unresolved.
        left,
        /// Faults dropped because their range was unmapped or remapped away, or was outside the
        /// region (a mapping grown out of it): each page unregistered, then its thread woken.
        dropped,
        /// Resolves that failed with another error (logged, rate-limited): each is followed by one
        /// fallback resolve per the [`FailurePolicy`].
        errors,
        /// Failed resolves that the [`FailurePolicy`] fallback then resolved.
        fallbacks,
        /// `UFFD_EVENT_REMOVE` events read.
        removes,
        /// `UFFD_EVENT_UNMAP` events read.
        unmaps,
        /// `UFFD_EVENT_REMAP` events read.
        remaps,
        /// `UFFD_EVENT_FORK` events read.
        forks,
    }
}

impl ServerStats {
    /// Faults served with a page: zero, copy or move.
    pub fn served(&self) -> u64 {
        self.served_zero + self.served_copy + self.served_move
    }
}

pub(crate) use crate::counters::bump;

impl Counters {
    pub(crate) fn counter(&self, resolution: &Resolution<'_>) -> &AtomicU64 {
        match resolution {
            Resolution::Zero => &self.served_zero,
            Resolution::Copy(_) => &self.served_copy,
            Resolution::Move { .. } | Resolution::Lease(_) => &self.served_move,
            Resolution::Poison => &self.poisoned,
            Resolution::Leave => &self.left,
        }
    }
}

impl fmt::Display for ServerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "faults {} (zero {}, copy {}, move {}, poison {}), races {}, retries {}, left {}, \
             dropped {}, errors {} (fallbacks {}); events: remove {}, unmap {}, remap {}, fork {}",
            self.faults,
            self.served_zero,
            self.served_copy,
            self.served_move,
            self.poisoned,
            self.races,
            self.retries,
            self.left,
            self.dropped,
            self.errors,
            self.fallbacks,
            self.removes,
            self.unmaps,
            self.remaps,
            self.forks
        )
    }
}
