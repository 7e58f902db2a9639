//! [`EventReader`]: the [`Engine`] plus what serving from the userfaultfd's event stream needs,
//! shared by the handler threads ([`FaultServer`](super::FaultServer)) and the tokio server:
//! reading events in order under one lock, applying the non-cooperative ones (REMOVE, UNMAP,
//! REMAP, FORK), dropping faults on ranges that are gone or outside the region, parking faults
//! that got EAGAIN, and logging failed resolves (rate-limited).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use rustix::io::Errno;
use uffd::{Event, EventBuffer, Pagefault, PagefaultFlags, RangeError, Uffd};

use super::engine::{Attempt, Engine, EngineConfig, Failure};
use super::holes::Holes;
use super::{bump, Fault, PageSource, ServerError};
use crate::region::Region;

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

/// The state every event reader (handler thread or async task) shares.
#[derive(Debug)]
pub(crate) struct EventReader<S> {
    pub(crate) engine: Engine<S>,
    /// Held across each `read(2)` of events and the application of the non-fault events read,
    /// so events are applied (and reported to the source) in the order the kernel queued them.
    events: Mutex<()>,
    /// Bumped after each read that applied a non-fault event: faults parked on EAGAIN retry
    /// once per generation.
    generation: AtomicU64,
    /// One eventfd per handler thread, written after each generation bump so parked threads
    /// wake up (none for the tokio server, whose single reader retries its own parked faults).
    wakers: Vec<OwnedFd>,
    /// Pages of the region unmapped or remapped away (faults there are dropped), and those
    /// that could not be re-reserved.
    holes: Holes,
    /// Failures on the readers' own path that are not logged there, since logging may
    /// allocate (a re-reservation, an unregistration or a wake that failed, an unknown event):
    /// counted, and logged once when the region is unregistered.
    quiet_failures: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn addr(a: u64) -> usize {
    usize::try_from(a).unwrap_or(usize::MAX)
}

impl<S: PageSource> EventReader<S> {
    /// Creates the engine (userfaultfd, registration) and `wakers` eventfds.
    pub(crate) fn new(
        region: Region,
        source: S,
        config: EngineConfig,
        wakers: usize,
    ) -> Result<Self, ServerError> {
        let wakers = (0..wakers)
            .map(|_| {
                rustix::event::eventfd(
                    0,
                    rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
                )
                .map_err(ServerError::Eventfd)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let engine = Engine::new(region, source, config)?;
        let pages = engine.region.pages();
        Ok(Self {
            engine,
            events: Mutex::new(()),
            generation: AtomicU64::new(0),
            wakers,
            holes: Holes::new(pages),
            quiet_failures: AtomicU64::new(0),
        })
    }

    pub(crate) fn uffd(&self) -> &Uffd {
        &self.engine.uffd
    }

    pub(crate) fn region(&self) -> &Region {
        &self.engine.region
    }

    /// Bytes of scratch buffer a handler needs: one page per page of the source's fault-around
    /// window.
    pub(crate) fn scratch_len(&self) -> usize {
        super::fault_around::scratch_len(&self.engine.region, &self.engine.source)
    }

    fn page_size(&self) -> usize {
        self.engine.page_size()
    }

    /// Handler thread `me`'s wake-up eventfd.
    pub(crate) fn waker(&self, me: usize) -> &OwnedFd {
        &self.wakers[me]
    }

    /// The event generation (see the field's docs).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Counts a failure that the reading path does not log (see `quiet_failures`).
    fn quiet_failure(&self) {
        bump(&self.quiet_failures);
    }

    /// A raw pointer naming `address` of (or beyond) the region, only ever passed to the kernel
    /// for `UFFDIO_WAKE` and `UFFDIO_UNREGISTER`, which touch no memory (and work on an address
    /// that is no longer mapped).
    fn name(&self, address: usize) -> *mut u8 {
        let region = self.region();
        region
            .as_ptr()
            .wrapping_add(address.wrapping_sub(region.addr()))
    }

    fn wake(&self, address: usize, len: usize) {
        if self.uffd().wake(self.name(address), len).is_err() {
            self.quiet_failure();
        }
    }

    /// `UFFDIO_UNREGISTER` of `start..start + len` (addresses), which need not be inside the
    /// region: a range we never registered is refused or skipped by the kernel. Errors are only
    /// counted (`quiet_failures`).
    fn unregister_addresses(&self, start: usize, len: usize) {
        if self.uffd().unregister(self.name(start), len).is_err() {
            self.quiet_failure();
        }
    }

    /// A fault the server cannot serve (its range is gone, or it is not in the region): counted
    /// as dropped, the page unregistered, then its thread woken. Unregistering first is what
    /// makes the fault end: woken into a page still registered with us, the thread would only
    /// fault again at once, for ever. It retries the access and finds what is mapped there now
    /// (nothing: SIGSEGV; our `PROT_NONE` re-reservation: SIGSEGV; anything else: that).
    ///
    /// For a fault outside the region (a mapping grown out of it, by an `mremap` that grows it
    /// in place, no event at all, or that moves and grows part of it, whose REMAP event carries
    /// the old length) only the faulting page is unregistered: it is certainly registered with
    /// us (its fault came to us), while a wider `UFFDIO_UNREGISTER` could clear another
    /// userfaultfd's registration, and finding the mapping's bounds would mean reading
    /// `/proc/self/maps`, an allocation on the fault path. Each further page ends the same way.
    fn drop_fault(&self, address: usize) -> Step {
        bump(&self.engine.counters.dropped);
        let page = self.page_size();
        self.unregister_addresses(address, page);
        self.wake(address, page);
        Step::Done
    }

    /// Resolves one fault read from the userfaultfd.
    pub(crate) fn fault(&self, pf: &Pagefault, scratch: &mut [u8]) -> Step {
        let page = self.page_size();
        let address = addr(pf.address) & !(page - 1);
        let Some(offset) = self.region().offset_of(address) else {
            // Outside the region: a range remapped away before we unregistered it, or one
            // that grew out of the region.
            return self.drop_fault(address);
        };
        if self.holes.is_gone(self.region(), offset) {
            return self.drop_fault(address);
        }
        let fault = Fault {
            offset,
            address,
            len: page,
            write: pf.flags.contains(PagefaultFlags::WRITE),
            thread_id: pf.thread_id,
        };
        match self.engine.attempt(&fault, scratch, false, &|off| {
            self.holes.is_gone(self.region(), off)
        }) {
            Attempt::Done => Step::Done,
            Attempt::Raced => {
                self.wake(address, page);
                Step::Done
            }
            Attempt::Pending => Step::Pending,
            Attempt::Failed { failure, kind } => self.failed(address, offset, kind, failure),
        }
    }

    /// A resolve failed (not a race, not EAGAIN). ENOENT and EINVAL also come from a destination
    /// unmapped or remapped between the fault and the resolve, so first: if an applied event
    /// says the range is gone, the fault is dropped. Otherwise the [`FailurePolicy`] fallback
    /// runs once; it has no source, so if it fails with ENOENT or EINVAL the destination itself
    /// is gone (its event may still be unread) and the fault is dropped too. Anything else is an
    /// error (counted, logged at most once per [`WARN_EVERY`]), and the faulting thread gets the
    /// fallback's outcome, or is woken if even that failed.
    ///
    /// [`FailurePolicy`]: super::FailurePolicy
    fn failed(&self, address: usize, offset: usize, kind: &'static str, failure: Failure) -> Step {
        if self.holes.is_gone(self.region(), offset) {
            return self.drop_fault(address);
        }
        let (errors, fallback) = self.engine.fall_back(offset);
        match fallback {
            Err(RangeError::Missing { .. } | RangeError::Invalid { .. }) => {
                self.engine.not_an_error();
                return self.drop_fault(address);
            }
            Err(RangeError::EventsPending { .. }) => {
                // Retried (source first) once the events are read.
                self.engine.not_an_error();
                bump(&self.engine.counters.retries);
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
                policy = ?self.engine.policy,
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

    fn mark_gone(&self, start: usize, end: usize) {
        let failed = self.holes.mark_gone(self.region(), start, end);
        if failed > 0 {
            self.quiet_failures.fetch_add(failed, Ordering::Relaxed);
        }
    }

    /// Applies a non-cooperative event. Called with the events lock held.
    fn event(&self, event: Event) {
        let (counters, source) = (&self.engine.counters, &self.engine.source);
        match event {
            Event::Pagefault(_) => unreachable!("faults are resolved outside the events lock"),
            Event::Remove { start, end } => {
                bump(&counters.removes);
                source.on_remove(addr(start)..addr(end));
            }
            Event::Unmap { start, end } => {
                bump(&counters.unmaps);
                self.mark_gone(addr(start), addr(end));
                source.on_unmap(addr(start)..addr(end));
            }
            Event::Remap { from, to, len } => {
                bump(&counters.remaps);
                let (from, to, len) = (addr(from), addr(to), addr(len));
                self.mark_gone(from, from.saturating_add(len));
                // Stop serving the new range: wakes threads faulting there to plain memory.
                self.unregister_addresses(to, len);
                source.on_remap(from, to, len);
            }
            Event::Fork { uffd } => {
                bump(&counters.forks);
                source.on_fork(Uffd::from_fork(uffd, self.uffd()));
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
    /// EAGAIN in `pending`. Returns how many events were read (0: none was queued).
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
            let n = match self.uffd().read_events(buf) {
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
            bump(&self.engine.counters.faults);
            if self.fault(&pf, scratch) == Step::Pending {
                self.park(pending, pf);
            }
        }
        Ok(n)
    }

    /// Parks a fault that got EAGAIN in `pending` (made with
    /// [`PARKED_FAULTS`](super::retry::PARKED_FAULTS) of room), or, when that is full, wakes its
    /// thread to fault again later: never grows the list, since an allocation here can deadlock
    /// with a `fork()` in progress (see the fork notes on [`PageSource`]).
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
        self.holes.for_each_present_run(|pages| {
            if let Err(err) =
                self.engine
                    .set_registered(pages.start * page, pages.len() * page, false)
            {
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

    /// Takes the region (see [`Holes::into_region`]) and the source out of a reader no one else
    /// holds.
    pub(crate) fn into_parts(self) -> Result<(Region, S), ServerError> {
        let Engine { region, source, .. } = self.engine;
        Ok((self.holes.into_region(region)?, source))
    }
}
