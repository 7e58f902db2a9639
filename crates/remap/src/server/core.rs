//! The shared fault-handling core and the threaded [`FaultServer`].

use std::any::Any;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use uffd::{
    CopyFlags, Event, EventBuffer, Features, MoveFlags, Pagefault, PagefaultFlags, RangeError,
    Uffd, ZeropageFlags,
};

use super::fault_around;
use super::page_bits::PageBits;
use super::{
    bump, Counters, FailurePolicy, Fault, PageSource, PanicPolicy, Resolution, ServerError,
    ServerStats,
};
use crate::region::{self, Region};

/// The first back-off before retrying faults parked on EAGAIN when no new events were read: the
/// window between an event's read and its producer clearing `mmap_changing` (or between the
/// producer raising it and queueing the event). Doubles per retry up to [`MAX_BACKOFF`].
pub(crate) const MIN_BACKOFF: Duration = Duration::from_micros(10);
/// The longest back-off between EAGAIN retries within one event generation.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_millis(1);

/// When to retry faults parked on EAGAIN: right away after a new event generation (someone read
/// the events that blocked them), else after a back-off that doubles within one generation.
#[derive(Debug)]
pub(crate) struct RetryClock {
    retried_at: u64,
    backoff: Duration,
}

impl RetryClock {
    pub(crate) fn new(generation: u64) -> Self {
        RetryClock {
            retried_at: generation,
            backoff: MIN_BACKOFF,
        }
    }

    /// Whether events were read since the last retry.
    pub(crate) fn new_generation(&self, generation: u64) -> bool {
        generation != self.retried_at
    }

    /// How long to wait before the next retry when no new generation arrives.
    pub(crate) fn backoff(&self) -> Duration {
        self.backoff
    }

    /// Records a retry at `generation`.
    pub(crate) fn retried(&mut self, generation: u64) {
        self.backoff = if generation == self.retried_at {
            (self.backoff * 2).min(MAX_BACKOFF)
        } else {
            MIN_BACKOFF
        };
        self.retried_at = generation;
    }
}

/// Room for faults parked on EAGAIN per handler, allocated up front: beyond it a fault's thread
/// is woken to fault again instead (see [`Core::park`]).
pub(crate) const PARKED_FAULTS: usize = 256;

/// A failed resolve is logged once, then once per this many failures (all are counted).
const WARN_EVERY: u64 = 1024;

/// What became of one fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Resolved, raced, left, dropped or failed: nothing more to do.
    Done,
    /// EAGAIN: events are pending; retry after reading them.
    Pending,
}

/// Why [`apply`] could not resolve a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The ioctl failed.
    Kernel(RangeError),
    /// The source's resolution is unusable: a [`Resolution::Copy`] of the wrong length, or a
    /// [`Resolution::Move`] offset outside (or unaligned in) its region.
    Bad,
}

/// Carries out `resolution` for the page at `offset` of `region`: one ioctl that also wakes the
/// faulting thread. Counts the serve (taken back on failure) and reports a move to the source.
/// [`Resolution::Leave`] counts as left and does nothing.
///
/// Shared by the handler threads, the tokio server and the SIGBUS handler, so it must stay
/// async-signal-safe: no allocation, lock, log or panic (bounds are checked with
/// `Region::page_range_ptr`, never asserted), only atomics, the source's own (signal-safe, in SIGBUS mode)
/// `move_done`, and ioctls.
pub(crate) fn apply<S: PageSource + ?Sized>(
    uffd: &Uffd,
    region: &Region,
    counters: &Counters,
    source: &S,
    offset: usize,
    resolution: Resolution<'_>,
) -> Result<(), Failure> {
    let page = region.page_size();
    // Counted first, so a thread woken by the ioctl already sees its fault counted.
    let counter = counters.counter(&resolution);
    counter.fetch_add(1, Ordering::Relaxed);
    let result = match resolution {
        Resolution::Leave => return Ok(()),
        Resolution::Zero => {
            region::resolve_zero(uffd, region, offset, page, ZeropageFlags::empty())
                .map_err(Failure::Kernel)
        }
        Resolution::Copy(bytes) if bytes.len() == page => {
            region::copy_from_slice(uffd, region, offset, bytes, CopyFlags::empty())
                .map_err(Failure::Kernel)
        }
        Resolution::Copy(_) => Err(Failure::Bad),
        Resolution::Move { from, offset: src } => {
            let result = if from.page_range_ptr(src, page).is_some() {
                region::move_between(uffd, region, offset, from, src, page, MoveFlags::empty())
                    .map_err(Failure::Kernel)
            } else {
                Err(Failure::Bad)
            };
            source.move_done(src, result.is_ok());
            result
        }
        Resolution::Lease(lease) => {
            let outcome = region::move_between(
                uffd,
                region,
                offset,
                lease.region(),
                lease.offset(),
                page,
                MoveFlags::empty(),
            );
            if lease.settle(&outcome) && outcome.is_err() {
                // The MOVE failed, yet the page left the pool: it is in place (EEXIST from a
                // MOVE that moved, docs/findings/move-thp-eexist.md). A failed MOVE wakes
                // nobody, so wake the faulting thread; the fault was served.
                let _ = region::wake_in(uffd, region, offset, page);
                Ok(page)
            } else {
                outcome.map_err(Failure::Kernel)
            }
        }
        Resolution::Poison => {
            region::resolve_poison(uffd, region, offset, page).map_err(Failure::Kernel)
        }
    };
    if result.is_err() {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
    result.map(drop)
}

/// The [`FailurePolicy`] fallback for the page at `offset` after a failed resolve. Async-signal-
/// safe like [`apply`]. Counts a success in `fallbacks`.
pub(crate) fn fall_back(
    uffd: &Uffd,
    region: &Region,
    counters: &Counters,
    offset: usize,
    policy: FailurePolicy,
) -> Result<(), RangeError> {
    let page = region.page_size();
    // Counted first, like a serve, so the woken thread already sees it.
    bump(&counters.fallbacks);
    let result = match policy {
        FailurePolicy::Zero => {
            region::resolve_zero(uffd, region, offset, page, ZeropageFlags::empty()).map(drop)
        }
        FailurePolicy::Poison => region::resolve_poison(uffd, region, offset, page).map(drop),
    };
    if result.is_err() {
        counters.fallbacks.fetch_sub(1, Ordering::Relaxed);
    }
    result
}

/// The state every handler (thread or async task) shares.
#[derive(Debug)]
pub(crate) struct Core<S> {
    pub(crate) uffd: Uffd,
    pub(crate) region: Region,
    pub(crate) source: S,
    pub(crate) counters: Counters,
    policy: FailurePolicy,
    /// Held across each `read(2)` of events and the application of the non-fault events read,
    /// so events are applied (and reported to the source) in the order the kernel queued them.
    events: Mutex<()>,
    /// Bumped after each read that applied a non-fault event: faults parked on EAGAIN retry
    /// once per generation.
    generation: AtomicU64,
    /// One eventfd per handler thread, written after each generation bump so parked threads
    /// wake up (none for the tokio server, whose single reader retries its own parked faults).
    wakers: Vec<OwnedFd>,
    /// Pages of the region unmapped or remapped away: faults there are dropped. A bitmap
    /// allocated up front, like `lost`: applying an event never allocates (see the fork notes
    /// on [`PageSource`]).
    gone: PageBits,
    any_gone: AtomicBool,
    /// Gone pages that could not be re-reserved (someone mapped there first).
    lost: PageBits,
    /// Failures on the handler threads' own path that are not logged there, since logging may
    /// allocate (a re-reservation, an unregistration or a wake that failed, an unknown event):
    /// counted, and logged once when the region is unregistered.
    quiet_failures: AtomicU64,
}

/// What [`Core::new`] needs besides the region and the source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CoreConfig {
    pub(crate) features: Features,
    pub(crate) kernel_faults: bool,
    pub(crate) policy: FailurePolicy,
    pub(crate) wakers: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: PageSource> Core<S> {
    /// Creates the userfaultfd and registers the region.
    pub(crate) fn new(region: Region, source: S, config: CoreConfig) -> Result<Self, ServerError> {
        let uffd = Uffd::builder()
            .features(config.features)
            .kernel_faults(config.kernel_faults)
            .non_blocking(true)
            .create()?;
        let wakers = (0..config.wakers)
            .map(|_| {
                rustix::event::eventfd(
                    0,
                    rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
                )
                .map_err(ServerError::Eventfd)
            })
            .collect::<Result<Vec<_>, _>>()?;
        region::register_range(&uffd, &region, 0, region.len(), true)?;
        let pages = region.pages();
        Ok(Self {
            uffd,
            region,
            source,
            counters: Counters::default(),
            policy: config.policy,
            events: Mutex::new(()),
            generation: AtomicU64::new(0),
            wakers,
            gone: PageBits::new(pages),
            any_gone: AtomicBool::new(false),
            lost: PageBits::new(pages),
            quiet_failures: AtomicU64::new(0),
        })
    }

    fn page_size(&self) -> usize {
        self.region.page_size()
    }

    /// The event generation (see [`Core::generation`]'s field docs).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn is_gone(&self, off: usize) -> bool {
        self.any_gone.load(Ordering::Acquire) && self.gone.get(off / self.page_size())
    }

    /// Counts a failure that the handler path does not log (see `quiet_failures`).
    fn quiet_failure(&self) {
        bump(&self.quiet_failures);
    }

    /// Marks the part of `start..end` (addresses) inside the region as gone, and re-reserves it
    /// so the region's drop never unmaps memory mapped there by someone else. Allocation-free.
    fn mark_gone(&self, start: usize, end: usize) {
        let page = self.page_size();
        let (lo, hi) = (
            start.max(self.region.addr()),
            end.min(self.region.range().end),
        );
        if lo >= hi {
            return;
        }
        let base = self.region.addr();
        self.any_gone.store(true, Ordering::Release);
        // Re-reserve only the pages not gone already: an `mremap` reports its old range twice
        // (UNMAP and REMAP), and the second report must not mistake our own reservation for a
        // foreign one. Each page is marked before its run is re-reserved.
        let mut run: Option<Range<usize>> = None;
        for p in (lo - base) / page..(hi - base).div_ceil(page) {
            if self.gone.set(p) {
                continue;
            }
            match &mut run {
                Some(r) if r.end == p => r.end = p + 1,
                _ => {
                    if let Some(done) = run.replace(p..p + 1) {
                        self.rereserve_pages(done);
                    }
                }
            }
        }
        if let Some(done) = run {
            self.rereserve_pages(done);
        }
    }

    /// Re-reserves the gone pages `pages` (indices); marks them lost when someone else mapped
    /// memory there first.
    fn rereserve_pages(&self, pages: Range<usize>) {
        let page = self.page_size();
        let (off, len) = (pages.start * page, pages.len() * page);
        if region::rereserve(&self.region, off, len).is_err() {
            self.quiet_failure();
            for p in pages {
                self.lost.set(p);
            }
        }
    }

    fn wake(&self, address: usize, len: usize) {
        // A raw address is only formed for `UFFDIO_WAKE`, which touches no memory (and works on
        // an address that is no longer mapped: it only wakes waiters).
        let start = self
            .region
            .as_ptr()
            .wrapping_add(address.wrapping_sub(self.region.addr()));
        if self.uffd.wake(start, len).is_err() {
            self.quiet_failure();
        }
    }

    /// `UFFDIO_UNREGISTER` of `start..end` (addresses), which need not be inside the region:
    /// no memory is touched, and a range we never registered is refused or skipped by the
    /// kernel. Errors are only counted (`quiet_failures`).
    fn unregister_addresses(&self, start: usize, end: usize) {
        // As for `wake`: the pointer only names the range for the kernel.
        let ptr = self
            .region
            .as_ptr()
            .wrapping_add(start.wrapping_sub(self.region.addr()));
        if self.uffd.unregister(ptr, end - start).is_err() {
            self.quiet_failure();
        }
    }

    /// A fault the server cannot serve (its range is gone, or it is not in the region): counted
    /// as dropped, the page unregistered, then its thread woken. Unregistering first is what
    /// makes the fault end: woken into a page still registered with us, the thread would only
    /// fault again at once, for ever. It retries the access and finds what is mapped there now
    /// (nothing: SIGSEGV; our `PROT_NONE` re-reservation: SIGSEGV; anything else: that).
    fn drop_fault(&self, address: usize) -> Step {
        bump(&self.counters.dropped);
        let page = self.page_size();
        self.unregister_addresses(address, address + page);
        self.wake(address, page);
        Step::Done
    }

    /// A fault outside the region, in memory still registered with our userfaultfd: a mapping
    /// that grew out of the region, by an `mremap` that grows it in place (no event at all) or
    /// that moves and grows part of it (the REMAP event carries the old length, so only that
    /// much of the new mapping was unregistered). None of it is ours: the faulting page is
    /// unregistered, then its thread woken, as in [`drop_fault`](Self::drop_fault).
    ///
    /// Only that page: it is certainly registered with us (its fault came to us), while a wider
    /// `UFFDIO_UNREGISTER` could clear another userfaultfd's registration (the kernel does not
    /// check whose it is), and finding the mapping's bounds would mean reading
    /// `/proc/self/maps`, an allocation on the fault path (see the fork notes on
    /// [`PageSource`]). Each further page of such a mapping ends the same way on its first
    /// fault; the unregistered pages merge back into one mapping.
    fn foreign_fault(&self, address: usize) -> Step {
        self.drop_fault(address)
    }

    /// Resolves one fault.
    pub(crate) fn fault(&self, pf: &Pagefault, scratch: &mut [u8]) -> Step {
        let page = self.page_size();
        let address = usize::try_from(pf.address).unwrap_or(usize::MAX) & !(page - 1);
        let Some(offset) = self.region.offset_of(address) else {
            // Outside the region: a range remapped away before we unregistered it, or one
            // that grew out of the region.
            return self.foreign_fault(address);
        };
        if self.is_gone(offset) {
            return self.drop_fault(address);
        }
        let fault = Fault {
            offset,
            address,
            len: page,
            write: pf.flags.contains(PagefaultFlags::WRITE),
            thread_id: pf.thread_id,
        };
        let (kind, outcome) = fault_around::resolve(
            &self.uffd,
            &self.region,
            &self.counters,
            &self.source,
            &fault,
            scratch,
            fault_around::Caller::Handler(&|off| self.is_gone(off)),
        );
        match outcome {
            Ok(()) => Step::Done,
            Err(Failure::Kernel(RangeError::Exists { .. })) => {
                bump(&self.counters.races);
                self.wake(address, page);
                Step::Done
            }
            Err(Failure::Kernel(RangeError::EventsPending { .. })) => {
                bump(&self.counters.retries);
                Step::Pending
            }
            Err(failure) => self.failed(address, offset, kind, failure),
        }
    }

    /// A resolve failed (not a race, not EAGAIN). ENOENT and EINVAL also come from a destination
    /// unmapped or remapped between the fault and the resolve, so first: if an applied event
    /// says the range is gone, the fault is dropped. Otherwise the [`FailurePolicy`] fallback
    /// runs once; it has no source, so if it fails with ENOENT or EINVAL the destination itself
    /// is gone (its event may still be unread) and the fault is dropped too. Anything else is an
    /// error (counted, logged at most once per [`WARN_EVERY`]), and the faulting thread gets the
    /// fallback's outcome, or is woken if even that failed.
    fn failed(&self, address: usize, offset: usize, kind: &'static str, failure: Failure) -> Step {
        if self.is_gone(offset) {
            return self.drop_fault(address);
        }
        // Counted before the fallback wakes the thread; taken back if it was no error after all.
        let errors = self.counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let fallback = fall_back(
            &self.uffd,
            &self.region,
            &self.counters,
            offset,
            self.policy,
        );
        match fallback {
            Err(RangeError::Missing { .. } | RangeError::Invalid { .. }) => {
                self.counters.errors.fetch_sub(1, Ordering::Relaxed);
                return self.drop_fault(address);
            }
            Err(RangeError::EventsPending { .. }) => {
                // Retried (source first) once the events are read.
                self.counters.errors.fetch_sub(1, Ordering::Relaxed);
                bump(&self.counters.retries);
                return Step::Pending;
            }
            _ => {}
        }
        if errors == 1 || errors % WARN_EVERY == 0 {
            tracing::warn!(
                ?failure,
                offset,
                kind,
                errors,
                policy = ?self.policy,
                fallback = ?fallback,
                "resolving a fault failed (logged once per {WARN_EVERY})"
            );
        }
        if fallback.is_err() {
            // A race (EEXIST: resolved meanwhile) or the fallback failed too (out of memory):
            // wake the thread to retry the access rather than leave it blocked for ever.
            self.wake(address, self.page_size());
        }
        Step::Done
    }

    /// Applies a non-cooperative event. Called with the events lock held.
    fn event(&self, event: Event) {
        match event {
            Event::Pagefault(_) => unreachable!("faults are resolved outside the events lock"),
            Event::Remove { start, end } => {
                bump(&self.counters.removes);
                self.source.on_remove(addr(start)..addr(end));
            }
            Event::Unmap { start, end } => {
                bump(&self.counters.unmaps);
                self.mark_gone(addr(start), addr(end));
                self.source.on_unmap(addr(start)..addr(end));
            }
            Event::Remap { from, to, len } => {
                bump(&self.counters.remaps);
                let (from, to, len) = (addr(from), addr(to), addr(len));
                self.mark_gone(from, from.saturating_add(len));
                // Stop serving the new range: wakes threads faulting there to plain memory.
                let start = self
                    .region
                    .as_ptr()
                    .wrapping_add(to.wrapping_sub(self.region.addr()));
                if self.uffd.unregister(start, len).is_err() {
                    self.quiet_failure();
                }
                self.source.on_remap(from, to, len);
            }
            Event::Fork { uffd } => {
                bump(&self.counters.forks);
                self.source.on_fork(Uffd::from_fork(uffd, &self.uffd));
            }
            // An event this server did not enable (or a newer kernel's): ignored.
            _ => self.quiet_failure(),
        }
    }

    /// Retries the faults that got EAGAIN; keeps those that get it again.
    pub(crate) fn retry(&self, pending: &mut Vec<Pagefault>, scratch: &mut [u8]) {
        pending.retain(|pf| self.fault(pf, scratch) == Step::Pending);
    }

    /// Reads one batch of events: under the events lock, applies the non-fault events in order
    /// and collects the faults; then (lock released) resolves the faults, parking those that get
    /// EAGAIN in `pending`. Returns how many events were read.
    pub(crate) fn batch(
        &self,
        buf: &mut EventBuffer,
        faults: &mut Vec<Pagefault>,
        pending: &mut Vec<Pagefault>,
        scratch: &mut [u8],
    ) -> Result<usize, Errno> {
        let mut applied = false;
        let n = {
            let _order = lock(&self.events);
            let n = match self.uffd.read_events(buf) {
                Ok(n) => n,
                Err(uffd::ReadError::Read { errno }) if errno == Errno::INTR => 0,
                Err(uffd::ReadError::Read { errno }) => return Err(errno),
                Err(_) => return Err(Errno::IO),
            };
            while let Some(event) = buf.next_event() {
                if let Event::Pagefault(pf) = event {
                    faults.push(pf);
                } else {
                    applied = true;
                    self.event(event);
                }
            }
            if applied {
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            n
        };
        if applied {
            for waker in &self.wakers {
                if rustix::io::write(waker, &1u64.to_ne_bytes()).is_err() {
                    self.quiet_failure();
                }
            }
        }
        for pf in faults.drain(..) {
            bump(&self.counters.faults);
            if self.fault(&pf, scratch) == Step::Pending {
                self.park(pending, pf);
            }
        }
        Ok(n)
    }

    /// Parks a fault that got EAGAIN in `pending` (made with [`PARKED_FAULTS`] of room), or, when
    /// that is full, wakes its thread to fault again later: never grows the list, since an
    /// allocation here can deadlock with a `fork()` in progress (see the fork notes on
    /// [`PageSource`]).
    fn park(&self, pending: &mut Vec<Pagefault>, pf: Pagefault) {
        if pending.len() < pending.capacity() {
            pending.push(pf);
        } else {
            let page = self.page_size();
            self.wake(addr(pf.address) & !(page - 1), page);
        }
    }

    /// Unregisters whatever is left of the region, waking every thread blocked on it.
    pub(crate) fn unregister(&self) {
        let page = self.page_size();
        self.gone.for_each_run(false, |pages| {
            if let Err(err) = region::register_range(
                &self.uffd,
                &self.region,
                pages.start * page,
                pages.len() * page,
                false,
            ) {
                tracing::warn!(%err, "unregistering the served region");
            }
        });
        let quiet = self.quiet_failures.swap(0, Ordering::Relaxed);
        if quiet > 0 {
            tracing::debug!(
                quiet,
                "failed wakes, unregistrations or re-reservations, or unknown events, while \
                 serving (not logged as they happened: logging may allocate)"
            );
        }
    }

    /// Takes the region out of a core no one else holds: whole, or, when part of it was
    /// unmapped and someone else mapped memory there that we could not re-reserve, cut short
    /// before that hole (the rest is leaked, never unmapped).
    pub(crate) fn into_region(self) -> Result<Region, ServerError> {
        let page = self.page_size();
        let mut keep = self.region.len();
        self.lost.for_each_run(true, |pages| {
            // The foreign mapping may be gone by now: try once more.
            let (off, len) = (pages.start * page, pages.len() * page);
            if region::rereserve(&self.region, off, len).is_err() {
                keep = keep.min(off);
            }
        });
        if keep == self.region.len() {
            return Ok(self.region);
        }
        let addr = self.region.addr();
        region::truncate_leaking(self.region, keep).ok_or(ServerError::RegionLost { addr })
    }
}

fn addr(a: u64) -> usize {
    usize::try_from(a).unwrap_or(usize::MAX)
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// What the handler threads share besides the core.
#[derive(Debug)]
struct Control {
    stop: OwnedFd,
    policy: PanicPolicy,
    failure: Mutex<Option<ServerError>>,
}

impl Control {
    fn signal_stop(&self) {
        // The eventfd counter only grows, so it stays readable and every thread sees the stop.
        if let Err(errno) = rustix::io::write(&self.stop, &1u64.to_ne_bytes()) {
            tracing::error!(%errno, "signalling the fault server to stop");
        }
    }

    fn fail(&self, err: ServerError) {
        let mut slot = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(err);
        }
    }
}

/// Builds a [`FaultServer`]; see [`FaultServer::builder`].
#[derive(Debug)]
pub struct FaultServerBuilder<S> {
    region: Region,
    source: S,
    threads: usize,
    features: Option<Features>,
    policy: PanicPolicy,
    failure: FailurePolicy,
    kernel_faults: bool,
    events_per_read: usize,
    capabilities: Option<uffd::Capabilities>,
}

impl<S: PageSource> FaultServerBuilder<S> {
    /// Number of handler threads (default 1, at least 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// The non-cooperative events to enable. Default: `EVENT_REMOVE | EVENT_UNMAP | EVENT_REMAP`,
    /// those the kernel supports. `EVENT_FORK` is opt-in (it needs CAP_SYS_PTRACE);
    /// `THREAD_ID` is added when supported. Asking for a feature the kernel lacks fails
    /// [`start`](Self::start).
    pub fn features(mut self, features: Features) -> Self {
        self.features = Some(features);
        self
    }

    /// What to do when the page source panics (default [`PanicPolicy::Abort`]).
    pub fn on_panic(mut self, policy: PanicPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// What to do when resolving a fault fails (default [`FailurePolicy::Zero`]); see the
    /// [module docs](super#failed-resolves). [`FailurePolicy::Poison`] needs `UFFDIO_POISON`
    /// (Linux 6.6): without it [`start`](Self::start) fails with [`ServerError::Unsupported`].
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// Also serve faults taken by the kernel on the process's behalf, for example a `read(2)`
    /// into the region (default `false`: user-mode faults only, and such a kernel access fails
    /// with EFAULT). Needs CAP_SYS_PTRACE or `vm.unprivileged_userfaultfd=1`, else
    /// [`start`](Self::start) fails with [`ServerError::Create`].
    pub fn kernel_faults(mut self, on: bool) -> Self {
        self.kernel_faults = on;
        self
    }

    /// Events read per `read(2)` by each thread (default 64).
    pub fn events_per_read(mut self, n: usize) -> Self {
        self.events_per_read = n.max(1);
        self
    }

    /// Decide the configuration from these capabilities instead of probing the kernel: the
    /// default features and the checks of [`start`](Self::start) follow them. For exercising,
    /// on a new kernel, what a server does on an older one ([`uffd::Capabilities::without`]).
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{FaultServer, ZeroSource};
    ///
    /// let caps = uffd::Capabilities::probe()?.without(uffd::Features::EVENT_REMAP);
    /// let server = FaultServer::builder(Region::new(4096)?, ZeroSource).capabilities(caps).start()?;
    /// assert!(!server.features().contains(uffd::Features::EVENT_REMAP));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capabilities(mut self, capabilities: uffd::Capabilities) -> Self {
        self.capabilities = Some(capabilities);
        self
    }

    /// Creates the userfaultfd, registers the region and starts the handler threads.
    ///
    /// # Errors
    ///
    /// [`ServerError::Create`] (no userfaultfd, a missing feature, `EVENT_FORK` without the
    /// privilege), [`ServerError::Unsupported`] ([`FailurePolicy::Poison`] on a kernel without
    /// `UFFDIO_POISON`), [`ServerError::Register`], [`ServerError::Eventfd`], [`ServerError::Spawn`].
    pub fn start(self) -> Result<FaultServer<S>, ServerError> {
        let supported = match self.capabilities {
            Some(caps) => caps,
            None => uffd::Capabilities::probe()?,
        }
        .features();
        // Checked here, where the policy takes effect: without `UFFDIO_POISON` (before Linux
        // 6.6) the fallback would fail with EINVAL, taken for "destination gone", and the
        // fault would never end.
        if self.failure == FailurePolicy::Poison && !supported.contains(Features::POISON) {
            return Err(ServerError::Unsupported {
                what: "FailurePolicy::Poison",
                missing: Features::POISON,
            });
        }
        let wanted = self.features.unwrap_or(
            (Features::EVENT_REMOVE | Features::EVENT_UNMAP | Features::EVENT_REMAP) & supported,
        ) | (Features::THREAD_ID & supported);
        let config = CoreConfig {
            features: wanted,
            kernel_faults: self.kernel_faults,
            policy: self.failure,
            wakers: self.threads,
        };
        let core = Arc::new(Core::new(self.region, self.source, config)?);
        let stop = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(ServerError::Eventfd)?;
        let control = Arc::new(Control {
            stop,
            policy: self.policy,
            failure: Mutex::new(None),
        });
        let mut server = FaultServer {
            core,
            control,
            threads: Vec::new(),
        };
        let (ready_tx, ready) = std::sync::mpsc::channel();
        for i in 0..self.threads {
            let core = Arc::clone(&server.core);
            let control = Arc::clone(&server.control);
            let cap = self.events_per_read;
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("remap-fault-{i}"))
                .spawn(move || handler_thread(&core, &control, i, cap, ready))
                .map_err(ServerError::Spawn)?;
            server.threads.push(handle);
        }
        drop(ready_tx);
        // Return only once every handler thread has started and allocated all it needs: a
        // thread's first allocations (the standard library's own, at thread start, included)
        // must not wait for a `fork()` that the caller starts right after this returns, since
        // that fork waits for a handler to read its event (see the fork notes on `PageSource`).
        // A thread that died first just ends the wait early.
        for _ in 0..self.threads {
            if ready.recv().is_err() {
                break;
            }
        }
        tracing::debug!(
            addr = server.core.region.addr(),
            len = server.core.region.len(),
            threads = self.threads,
            features = ?wanted,
            "fault server started"
        );
        Ok(server)
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

fn handler_thread<S: PageSource>(
    core: &Core<S>,
    control: &Control,
    me: usize,
    cap: usize,
    ready: std::sync::mpsc::Sender<()>,
) {
    // Everything the loop needs is allocated here, once, before `start` returns: see the fork
    // notes on `PageSource`.
    let mut buf = EventBuffer::new(cap);
    let mut scratch = vec![0u8; fault_around::scratch_len(&core.region, &core.source)];
    let mut faults = Vec::with_capacity(cap);
    let mut pending = Vec::with_capacity(PARKED_FAULTS.max(cap));
    let mut clock = RetryClock::new(core.generation());
    let waker = &core.wakers[me];
    let _ = ready.send(());
    drop(ready);
    loop {
        // The generation is loaded after the last wake-up was consumed (below, after poll): a
        // bump after this load writes the eventfd again, so the poll below cannot miss it.
        let wait = if pending.is_empty() {
            None
        } else if clock.new_generation(core.generation()) {
            Some(Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            })
        } else {
            Some(timespec(clock.backoff()))
        };
        let mut fds = [
            PollFd::new(&core.uffd, PollFlags::IN),
            PollFd::new(&control.stop, PollFlags::IN),
            PollFd::new(waker, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, wait.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => {
                control.fail(ServerError::Handler { errno });
                return;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        // Consume a wake-up only when there is one: a read of an empty eventfd on every
        // fault is one system call more than a plain handler loop makes.
        if fds[2].revents().contains(PollFlags::IN) {
            let _ = rustix::io::read(waker, &mut [0u8; 8]);
        }
        if fds[0]
            .revents()
            .intersects(PollFlags::ERR | PollFlags::NVAL)
        {
            control.fail(ServerError::Handler { errno: Errno::BADF });
            return;
        }
        let readable = fds[0].revents().contains(PollFlags::IN);
        let step = panic::catch_unwind(AssertUnwindSafe(|| {
            if readable {
                core.batch(&mut buf, &mut faults, &mut pending, &mut scratch)?;
            }
            if !pending.is_empty() {
                // Once per generation right away; within one, after a doubling back-off (the
                // window around an event's read in which `mmap_changing` is still raised).
                clock.retried(core.generation());
                core.retry(&mut pending, &mut scratch);
            }
            Ok(())
        }));
        match step {
            Ok(Ok(())) => {}
            Ok(Err(errno)) => {
                tracing::error!(%errno, "reading userfaultfd events");
                control.fail(ServerError::Handler { errno });
                return;
            }
            Err(payload) => {
                let message = panic_message(&*payload);
                tracing::error!(%message, "a page source panicked in a fault handler thread");
                match control.policy {
                    PanicPolicy::Abort => std::process::abort(),
                    PanicPolicy::UnregisterAndStop => {
                        core.unregister();
                        control.fail(ServerError::HandlerPanicked { message });
                        control.signal_stop();
                        return;
                    }
                }
            }
        }
    }
}

/// Handler threads serving the page faults of a [`Region`] it owns; see the
/// [module docs](super).
///
/// ```
/// use remap::region::Region;
/// use remap::server::{FaultServer, ZeroSource};
///
/// let server = FaultServer::builder(Region::new(8 * 4096)?, ZeroSource).threads(2).start()?;
/// let region = server.region();
/// region.write_u64(0, 7); // faults, served with a zero page, then written
/// assert_eq!(region.read_u64(0), 7);
/// assert_eq!(server.stats().served_zero, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FaultServer<S: PageSource> {
    core: Arc<Core<S>>,
    control: Arc<Control>,
    threads: Vec<JoinHandle<()>>,
}

impl<S: PageSource> FaultServer<S> {
    /// Starts building a server for `region` (moved in: the server owns it, so its threads never
    /// outlive the mapping) with pages from `source`.
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{FaultServer, PanicPolicy, ZeroSource};
    ///
    /// let server = FaultServer::builder(Region::new(4096)?, ZeroSource)
    ///     .threads(1)
    ///     .on_panic(PanicPolicy::UnregisterAndStop)
    ///     .start()?;
    /// assert_eq!(server.region().read_u8(0), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(region: Region, source: S) -> FaultServerBuilder<S> {
        FaultServerBuilder {
            region,
            source,
            threads: 1,
            features: None,
            policy: PanicPolicy::Abort,
            failure: FailurePolicy::Zero,
            kernel_faults: false,
            events_per_read: 64,
            capabilities: None,
        }
    }

    /// The served region. Touch it only through its accessors (no references into it exist).
    ///
    /// ```
    /// # let server = remap::server::FaultServer::builder(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource).start()?;
    /// assert_eq!(server.region().len(), 4096);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn region(&self) -> &Region {
        &self.core.region
    }

    /// The page source (for example to give pages back to a [`MovePool`](super::MovePool)).
    ///
    /// ```
    /// # let server = remap::server::FaultServer::builder(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource).start()?;
    /// let _source: &remap::server::ZeroSource = server.source();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn source(&self) -> &S {
        &self.core.source
    }

    /// The features enabled on the server's userfaultfd.
    ///
    /// ```
    /// # let server = remap::server::FaultServer::builder(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource).start()?;
    /// let _ = server.features().contains(uffd::Features::EVENT_REMOVE);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn features(&self) -> Features {
        self.core.uffd.features()
    }

    /// A snapshot of the counters.
    ///
    /// ```
    /// # let server = remap::server::FaultServer::builder(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource).start()?;
    /// assert_eq!(server.stats().faults, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> ServerStats {
        self.core.counters.snapshot()
    }

    /// Whether the server still serves faults (false after a handler failed or panicked).
    ///
    /// ```
    /// # let server = remap::server::FaultServer::builder(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource).start()?;
    /// assert!(server.is_running());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_running(&self) -> bool {
        self.control
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
            && self.threads.iter().all(|t| !t.is_finished())
    }

    fn shutdown(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.control.signal_stop();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                // The loop catches panics; only a panic in the catch path itself gets here.
                self.control.fail(ServerError::HandlerPanicked {
                    message: "handler thread died".to_owned(),
                });
            }
        }
        self.core.unregister();
        tracing::debug!(stats = %self.stats(), "fault server stopped");
    }

    /// Stops the handler threads, unregisters the region (waking every thread still blocked in a
    /// fault there: it sees a zero page) and returns it, now ordinary memory.
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{FaultServer, ZeroSource};
    ///
    /// let server = FaultServer::builder(Region::new(4096)?, ZeroSource).start()?;
    /// let region = server.stop()?;
    /// region.write_u8(0, 1); // no fault handling any more
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ServerError::HandlerPanicked`] if the source panicked under
    /// [`PanicPolicy::UnregisterAndStop`], [`ServerError::Handler`] if a handler thread failed
    /// (the region is unmapped in both cases), [`ServerError::RegionLost`] if part of the region
    /// at its start was unmapped and someone else mapped memory there since (see the
    /// [module docs](super#shutdown): a region cut short before such a hole further in is
    /// returned as `Ok`).
    pub fn stop(mut self) -> Result<Region, ServerError> {
        self.shutdown();
        if let Some(err) = self
            .control
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(err);
        }
        let core = Arc::clone(&self.core);
        drop(self);
        match Arc::try_unwrap(core) {
            Ok(core) => core.into_region(),
            Err(_) => unreachable!("every handler thread was joined"),
        }
    }
}

impl<S: PageSource> Drop for FaultServer<S> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
