//! The shared fault-handling core and the threaded [`FaultServer`].

use std::any::Any;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use uffd::{
    CopyFlags, Event, EventBuffer, Features, MoveFlags, Pagefault, PagefaultFlags, RangeError,
    Uffd, ZeropageFlags,
};

use super::{bump, Counters, Fault, PageSource, PanicPolicy, Resolution, ServerError, ServerStats};
use crate::region::{self, Region};

/// How long a thread with faults waiting on EAGAIN sleeps in `poll` before retrying them when no
/// event is readable (the producer of the event decrements `mmap_changing` just after the read).
pub(crate) const RETRY_WAIT: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 200_000,
};

/// What became of one fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Resolved, raced, left, dropped or failed: nothing more to do.
    Done,
    /// EAGAIN: events are pending; retry after reading them.
    Pending,
}

/// The state every handler (thread, async task or signal handler) shares.
#[derive(Debug)]
pub(crate) struct Core<S> {
    pub(crate) uffd: Uffd,
    pub(crate) region: Region,
    pub(crate) source: S,
    pub(crate) counters: Counters,
    /// Offsets of the region unmapped or remapped away: faults there are dropped.
    gone: Mutex<Vec<Range<usize>>>,
    any_gone: AtomicBool,
}

impl<S: PageSource> Core<S> {
    /// Creates the userfaultfd and registers the region.
    pub(crate) fn new(region: Region, source: S, features: Features) -> Result<Self, ServerError> {
        let uffd = Uffd::builder()
            .features(features)
            .non_blocking(true)
            .create()?;
        region::register_range(&uffd, &region, 0, region.len(), true)?;
        Ok(Self {
            uffd,
            region,
            source,
            counters: Counters::default(),
            gone: Mutex::new(Vec::new()),
            any_gone: AtomicBool::new(false),
        })
    }

    fn page_size(&self) -> usize {
        self.region.page_size()
    }

    fn is_gone(&self, off: usize) -> bool {
        if !self.any_gone.load(Ordering::Acquire) {
            return false;
        }
        let gone = self.gone.lock().unwrap_or_else(PoisonError::into_inner);
        gone.iter().any(|r| r.contains(&off))
    }

    /// Marks the part of `start..end` (addresses) inside the region as gone.
    fn mark_gone(&self, start: usize, end: usize) {
        let (lo, hi) = (
            start.max(self.region.addr()),
            end.min(self.region.range().end),
        );
        if lo < hi {
            let r = lo - self.region.addr()..hi - self.region.addr();
            self.gone
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(r);
            self.any_gone.store(true, Ordering::Release);
        }
    }

    fn wake(&self, address: usize, len: usize) {
        // A raw address is only formed for `UFFDIO_WAKE`, which touches no memory.
        let start = self
            .region
            .as_ptr()
            .wrapping_add(address.wrapping_sub(self.region.addr()));
        if let Err(err) = self.uffd.wake(start, len) {
            tracing::trace!(%err, "wake failed");
        }
    }

    /// Resolves one fault.
    pub(crate) fn fault(&self, pf: &Pagefault, scratch: &mut [u8]) -> Step {
        let page = self.page_size();
        let address = usize::try_from(pf.address).unwrap_or(usize::MAX) & !(page - 1);
        let Some(offset) = self.region.offset_of(address) else {
            // Outside the region: a range remapped away before we unregistered it.
            bump(&self.counters.dropped);
            return Step::Done;
        };
        if self.is_gone(offset) {
            bump(&self.counters.dropped);
            return Step::Done;
        }
        let fault = Fault {
            offset,
            address,
            len: page,
            write: pf.flags.contains(PagefaultFlags::WRITE),
            thread_id: pf.thread_id,
        };
        let resolution = self.source.resolve(&fault, scratch);
        self.counters.served(&resolution);
        let result = match resolution {
            Resolution::Zero => region::resolve_zero(
                &self.uffd,
                &self.region,
                offset,
                page,
                ZeropageFlags::empty(),
            ),
            Resolution::Copy(bytes) => {
                assert_eq!(
                    bytes.len(),
                    page,
                    "Resolution::Copy needs exactly one page of bytes"
                );
                region::resolve_copy(&self.uffd, &self.region, offset, bytes, CopyFlags::empty())
            }
            Resolution::Move { from, offset: src } => region::resolve_move(
                &self.uffd,
                &self.region,
                offset,
                from,
                src,
                page,
                MoveFlags::empty(),
            ),
            Resolution::Poison => region::resolve_poison(&self.uffd, &self.region, offset, page),
            Resolution::Leave => return Step::Done,
        };
        if let Resolution::Move { offset: src, .. } = resolution {
            self.source.move_done(src, result.is_ok());
        }
        if result.is_err() {
            self.counters.unserved(&resolution);
        }
        match result {
            Ok(_) => Step::Done,
            Err(RangeError::Exists { .. }) => {
                bump(&self.counters.races);
                self.wake(address, page);
                Step::Done
            }
            Err(RangeError::EventsPending { .. }) => {
                bump(&self.counters.retries);
                Step::Pending
            }
            Err(RangeError::Missing { .. } | RangeError::Invalid { .. }) => {
                // The VMA went away (munmap, mremap) between the fault and its resolve.
                bump(&self.counters.dropped);
                Step::Done
            }
            Err(err) => {
                bump(&self.counters.errors);
                tracing::warn!(%err, offset, kind = resolution.kind(), "resolving a fault failed");
                // The thread retries the access and faults again: a fresh attempt.
                self.wake(address, page);
                Step::Done
            }
        }
    }

    /// Applies a non-cooperative event (or queues a fault).
    pub(crate) fn event(&self, event: Event, pending: &mut Vec<Pagefault>, scratch: &mut [u8]) {
        match event {
            Event::Pagefault(pf) => {
                bump(&self.counters.faults);
                if self.fault(&pf, scratch) == Step::Pending {
                    pending.push(pf);
                }
            }
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
                if let Err(err) = self.uffd.unregister(start, len) {
                    tracing::debug!(%err, "unregistering a remapped range");
                }
                self.source.on_remap(from, to, len);
            }
            Event::Fork { uffd } => {
                bump(&self.counters.forks);
                self.source.on_fork(Uffd::from_fork(uffd, &self.uffd));
            }
            other => tracing::debug!(?other, "ignoring an unknown userfaultfd event"),
        }
    }

    /// Retries the faults that got EAGAIN; keeps those that get it again.
    pub(crate) fn retry(&self, pending: &mut Vec<Pagefault>, scratch: &mut [u8]) {
        pending.retain(|pf| self.fault(pf, scratch) == Step::Pending);
    }

    /// Reads one batch of events and handles it; returns how many were read.
    pub(crate) fn batch(
        &self,
        buf: &mut EventBuffer,
        pending: &mut Vec<Pagefault>,
        scratch: &mut [u8],
    ) -> Result<usize, Errno> {
        let n = match self.uffd.read_events(buf) {
            Ok(n) => n,
            Err(uffd::ReadError::Read { errno }) if errno == Errno::INTR => 0,
            Err(uffd::ReadError::Read { errno }) => return Err(errno),
            Err(_) => return Err(Errno::IO),
        };
        while let Some(event) = buf.next_event() {
            self.event(event, pending, scratch);
        }
        if !pending.is_empty() {
            self.retry(pending, scratch);
        }
        Ok(n)
    }

    /// Unregisters whatever is left of the region, waking every thread blocked on it.
    pub(crate) fn unregister(&self) {
        let page = self.page_size();
        let mut gone = self
            .gone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        gone.sort_by_key(|r| r.start);
        let mut at = 0;
        let mut pieces = Vec::new();
        for r in gone {
            if r.start > at {
                pieces.push(at..r.start);
            }
            at = at.max(r.end);
        }
        if at < self.region.len() {
            pieces.push(at..self.region.len());
        }
        for piece in pieces {
            let (start, end) = (piece.start / page * page, piece.end.div_ceil(page) * page);
            if let Err(err) =
                region::register_range(&self.uffd, &self.region, start, end - start, false)
            {
                tracing::warn!(%err, "unregistering the served region");
            }
        }
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
    events_per_read: usize,
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

    /// Events read per `read(2)` by each thread (default 64).
    pub fn events_per_read(mut self, n: usize) -> Self {
        self.events_per_read = n.max(1);
        self
    }

    /// Creates the userfaultfd, registers the region and starts the handler threads.
    ///
    /// # Errors
    ///
    /// [`ServerError::Create`] (no userfaultfd, a missing feature, `EVENT_FORK` without the
    /// privilege), [`ServerError::Register`], [`ServerError::Eventfd`], [`ServerError::Spawn`].
    pub fn start(self) -> Result<FaultServer<S>, ServerError> {
        let supported = uffd::Capabilities::probe()?.features();
        let wanted = self.features.unwrap_or(
            (Features::EVENT_REMOVE | Features::EVENT_UNMAP | Features::EVENT_REMAP) & supported,
        ) | (Features::THREAD_ID & supported);
        let core = Arc::new(Core::new(self.region, self.source, wanted)?);
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
        for i in 0..self.threads {
            let core = Arc::clone(&server.core);
            let control = Arc::clone(&server.control);
            let cap = self.events_per_read;
            let handle = std::thread::Builder::new()
                .name(format!("remap-fault-{i}"))
                .spawn(move || handler_thread(&core, &control, cap))
                .map_err(ServerError::Spawn)?;
            server.threads.push(handle);
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

fn handler_thread<S: PageSource>(core: &Core<S>, control: &Control, cap: usize) {
    let mut buf = EventBuffer::new(cap);
    let mut scratch = vec![0u8; core.page_size()];
    let mut pending = Vec::new();
    loop {
        let mut fds = [
            PollFd::new(&core.uffd, PollFlags::IN),
            PollFd::new(&control.stop, PollFlags::IN),
        ];
        let timeout = (!pending.is_empty()).then_some(&RETRY_WAIT);
        match rustix::event::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => {
                control.fail(ServerError::Handler { errno });
                return;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        if fds[0]
            .revents()
            .intersects(PollFlags::ERR | PollFlags::NVAL)
        {
            control.fail(ServerError::Handler { errno: Errno::BADF });
            return;
        }
        let step = panic::catch_unwind(AssertUnwindSafe(|| {
            core.batch(&mut buf, &mut pending, &mut scratch)
        }));
        match step {
            Ok(Ok(_)) => {}
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
            events_per_read: 64,
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
    /// [`PanicPolicy::UnregisterAndStop`], [`ServerError::Handler`] if a handler thread failed.
    /// The region is unmapped in both cases.
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
            Ok(core) => Ok(core.region),
            Err(_) => unreachable!("every handler thread was joined"),
        }
    }
}

impl<S: PageSource> Drop for FaultServer<S> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
