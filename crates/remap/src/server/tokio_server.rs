//! [`AsyncFaultServer`]: serving faults from a tokio runtime (cargo feature `tokio`).
//!
//! # Why this module contains `unsafe`
//!
//! Registering a raw fd with tokio's reactor is `AsyncFd::register_with_interest`, an `unsafe fn`
//! since tokio 1.5x (its safe predecessor is deprecated as unsound: nothing stops the caller from
//! closing the fd while it is registered). The two `unsafe` blocks below uphold that contract:
//! the userfaultfd belongs to the server's event reader, which the `AsyncFd` itself owns through an
//! `Arc`, and the back-off timer's fd is an `OwnedFd` the `AsyncFd` owns.
//!
//! # Only the IO driver
//!
//! The server needs a runtime with IO enabled and nothing else: the back-off between EAGAIN
//! retries is a `timerfd` registered with the reactor like the userfaultfd, not tokio's timer
//! (which panics on a runtime built without `enable_time`). tokio gives no way to ask whether IO
//! is enabled; registering on a runtime without it panics, so [`AsyncFaultServer::start`]
//! registers the timer first, catches that panic and answers [`ServerError::Reactor`] before it
//! has touched the region.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use uffd::{EventBuffer, Pagefault};

use super::engine::{check_policy, panic_message, reader_features, EngineConfig};
use super::reader::EventReader;
use super::retry::{RetryClock, PARKED_FAULTS};
use super::{FailurePolicy, PageSource, PanicPolicy, ServerError, ServerStats};
use crate::region::Region;

/// Lends the reader's userfaultfd to tokio's reactor.
#[derive(Debug)]
struct UffdHandle<S>(Arc<EventReader<S>>);

impl<S: PageSource> AsRawFd for UffdHandle<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.uffd().as_fd().as_raw_fd()
    }
}

/// The back-off timer: a non-blocking monotonic `timerfd`, armed once per wait.
#[derive(Debug)]
struct Timer(OwnedFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Timer {
    /// Creates the timer and registers it with the current runtime's reactor: the first
    /// registration, so a runtime without IO (tokio panics then) is caught here.
    fn register() -> Result<AsyncFd<Timer>, ServerError> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .map_err(|errno| ServerError::Reactor(errno.into()))?;
        let registered = panic::catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `register_with_interest` requires `as_raw_fd()` to return the same valid,
            // open fd for the whole life of the `AsyncFd`: `Timer` owns its `OwnedFd`, never
            // replaces it, and the `AsyncFd` owns the `Timer`.
            unsafe { AsyncFd::register_with_interest(Timer(fd), tokio::io::Interest::READABLE) }
        }));
        match registered {
            Ok(Ok(timer)) => Ok(timer),
            Ok(Err(err)) => Err(ServerError::Reactor(err.into())),
            Err(payload) => Err(ServerError::Reactor(std::io::Error::other(panic_message(
                &*payload,
            )))),
        }
    }

    /// Arms the timer to fire once after `after`.
    fn arm(&self, after: Duration) -> Result<(), ServerError> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags};
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = rustix::time::Timespec {
            tv_sec: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            // At least 1 ns: an all-zero value disarms the timer instead.
            tv_nsec: i64::from(after.subsec_nanos().max(1)),
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: value,
        };
        timerfd_settime(&self.0, TimerfdTimerFlags::empty(), &spec)
            .map(drop)
            .map_err(|errno| ServerError::Handler { errno })
    }
}

/// A fault server driven by a tokio runtime instead of its own threads: [`serve`](Self::serve)
/// waits for the userfaultfd to become readable through [`AsyncFd`], reads a batch of events and
/// resolves them exactly like a [`FaultServer`](super::FaultServer) handler thread (same event
/// ordering, EEXIST and EAGAIN rules; see the [module docs](super)).
///
/// The threads that touch the region must not be the runtime's worker threads: a worker blocked
/// in a fault cannot serve it. Resolves are ioctls that do not block, so running them on the
/// runtime is fine.
///
/// `serve` is cancel-safe: faults read but not yet resolved (waiting on EAGAIN) are kept in the
/// server and retried by the next `serve`, right after any read that applied an event, else
/// after a back-off that starts at 10 µs and doubles up to 1 ms (the window in which the kernel
/// still reports the event as pending after its read). A failed resolve falls back to the zero
/// page ([`FailurePolicy::Zero`]). A panic in the source follows the [`PanicPolicy`] (see
/// [`on_panic`](Self::on_panic)): by default the process aborts, since a faulting thread would
/// otherwise wait for ever. Dropping the server (or [`into_region`](Self::into_region))
/// unregisters the region, which wakes every faulting thread to zero-fill behaviour.
///
/// ```
/// use remap::region::Region;
/// use remap::server::{AsyncFaultServer, ZeroSource};
///
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// rt.block_on(async {
///     let server = AsyncFaultServer::start(Region::new(4096)?, ZeroSource)?;
///     let addr = server.region().addr();
///     let _ = addr;
///     let region = server.into_region()?;
///     region.write_u8(0, 1);
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AsyncFaultServer<S: PageSource> {
    fd: Option<AsyncFd<UffdHandle<S>>>,
    timer: AsyncFd<Timer>,
    pending: Mutex<Vec<Pagefault>>,
    policy: PanicPolicy,
    /// Set when a panic stopped the server (under [`PanicPolicy::UnregisterAndStop`]).
    stopped: AtomicBool,
}

impl<S: PageSource> AsyncFaultServer<S> {
    /// Creates the userfaultfd (non-blocking, with `EVENT_REMOVE | EVENT_UNMAP | EVENT_REMAP`
    /// where supported), registers `region` and registers the fd with the current runtime's
    /// reactor. Call it from within a tokio runtime with IO enabled (the time driver is not
    /// needed).
    ///
    /// # Errors
    ///
    /// [`ServerError::Create`], [`ServerError::Register`], [`ServerError::Eventfd`], and
    /// [`ServerError::Reactor`] when the fd cannot be registered with the reactor: no runtime,
    /// or a runtime without IO (tokio panics then; the panic is caught, but the process's panic
    /// hook still reports it, on stderr by default).
    pub fn start(region: Region, source: S) -> Result<Self, ServerError> {
        let supported = uffd::Capabilities::probe()?.features();
        let policy = FailurePolicy::Zero;
        check_policy(policy, supported)?;
        let config = EngineConfig {
            features: reader_features(None, supported),
            kernel_faults: false,
            non_blocking: true,
            policy,
        };
        // Without a runtime, or on one without IO, tokio panics on registration: check first
        // (the timer's registration catches the second case).
        if let Err(err) = tokio::runtime::Handle::try_current() {
            return Err(ServerError::Reactor(std::io::Error::other(err)));
        }
        let timer = Timer::register()?;
        let reader = Arc::new(EventReader::new(region, source, config, 0)?);
        // SAFETY: `register_with_interest` requires `as_raw_fd()` to return the same valid, open
        // fd for the whole life of the `AsyncFd`. `UffdHandle` returns the fd of the `Uffd` inside
        // the `EventReader` it holds an `Arc` to; the `Uffd` (an `OwnedFd`) is never replaced and is
        // closed only when the last `Arc` goes, which the `AsyncFd` keeps alive until it is
        // dropped or `into_inner` hands the handle back.
        let fd = unsafe {
            AsyncFd::register_with_interest(UffdHandle(reader), tokio::io::Interest::READABLE)
        }
        .map_err(|err| ServerError::Reactor(err.into()))?;
        Ok(Self {
            fd: Some(fd),
            timer,
            pending: Mutex::new(Vec::with_capacity(PARKED_FAULTS)),
            policy: PanicPolicy::Abort,
            stopped: AtomicBool::new(false),
        })
    }

    /// What to do when the page source panics in [`serve`](Self::serve) (default
    /// [`PanicPolicy::Abort`]). With [`PanicPolicy::UnregisterAndStop`] the region is
    /// unregistered (faulting threads wake to zero pages) and `serve` returns
    /// [`ServerError::HandlerPanicked`], now and on every later call.
    ///
    /// ```no_run
    /// # fn f(server: remap::server::AsyncFaultServer<remap::server::ZeroSource>) {
    /// use remap::server::PanicPolicy;
    /// let _server = server.on_panic(PanicPolicy::UnregisterAndStop);
    /// # }
    /// ```
    pub fn on_panic(mut self, policy: PanicPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn reader(&self) -> &EventReader<S> {
        match &self.fd {
            Some(fd) => &fd.get_ref().0,
            None => unreachable!("the fd is taken only when the server is consumed"),
        }
    }

    /// The served region.
    ///
    /// ```no_run
    /// # fn f(server: &remap::server::AsyncFaultServer<remap::server::ZeroSource>) {
    /// let _len = server.region().len();
    /// # }
    /// ```
    pub fn region(&self) -> &Region {
        self.reader().region()
    }

    /// A snapshot of the counters.
    ///
    /// ```no_run
    /// # fn f(server: &remap::server::AsyncFaultServer<remap::server::ZeroSource>) {
    /// let _served = server.stats().served();
    /// # }
    /// ```
    pub fn stats(&self) -> ServerStats {
        self.reader().engine.counters.snapshot()
    }

    /// Serves faults until an error (or forever): await it in a task, or race it against a
    /// shutdown condition with `tokio::select!` (it is cancel-safe).
    ///
    /// ```no_run
    /// # async fn f(server: remap::server::AsyncFaultServer<remap::server::ZeroSource>) {
    /// tokio::select! {
    ///     result = server.serve() => result.expect("serving faults"),
    ///     _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ServerError::Handler`] when polling or reading the userfaultfd fails,
    /// [`ServerError::HandlerPanicked`] when the source panicked under
    /// [`PanicPolicy::UnregisterAndStop`].
    pub async fn serve(&self) -> Result<(), ServerError> {
        let Some(fd) = &self.fd else {
            return Ok(());
        };
        let reader = &fd.get_ref().0;
        let mut buf = EventBuffer::new(64);
        let mut faults = Vec::with_capacity(64);
        let mut scratch = vec![0u8; reader.scratch_len()];
        let mut clock = RetryClock::new(reader.generation());
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return Err(ServerError::HandlerPanicked {
                    message: "the page source panicked earlier".to_owned(),
                });
            }
            let has_pending = !self.lock_pending().is_empty();
            let ready = if has_pending {
                // The back-off: the userfaultfd becoming readable, or the timer firing first.
                self.timer.get_ref().arm(clock.backoff())?;
                tokio::select! {
                    biased;
                    ready = fd.readable() => Some(ready),
                    fired = self.timer.readable() => {
                        if let Ok(mut fired) = fired {
                            // Drain the expiry count; a stale readiness just retries early.
                            let _ = rustix::io::read(&fired.get_inner().0, &mut [0u8; 8]);
                            fired.clear_ready();
                        }
                        None
                    }
                }
            } else {
                Some(fd.readable().await)
            };
            let mut guard = match ready {
                None => None,
                Some(Ok(guard)) => Some(guard),
                Some(Err(err)) => {
                    return Err(ServerError::Handler {
                        errno: uffd::Errno::from_io_error(&err).unwrap_or(uffd::Errno::IO),
                    })
                }
            };
            let step = panic::catch_unwind(AssertUnwindSafe(|| {
                let mut pending = self.lock_pending();
                if let Some(guard) = &mut guard {
                    let n = reader.batch(&mut buf, &mut faults, &mut pending, &mut scratch)?;
                    if n == 0 {
                        guard.clear_ready();
                    }
                }
                if !pending.is_empty() {
                    // As a handler thread does: right away after a new event generation,
                    // else after a doubling back-off.
                    clock.retried(reader.generation());
                    reader.retry(&mut pending, &mut scratch);
                }
                Ok(())
            }));
            match step {
                Ok(Ok(())) => {}
                Ok(Err(errno)) => return Err(ServerError::Handler { errno }),
                Err(payload) => {
                    let message = panic_message(&*payload);
                    tracing::error!(%message, "a page source panicked in AsyncFaultServer::serve");
                    match self.policy {
                        PanicPolicy::Abort => std::process::abort(),
                        PanicPolicy::UnregisterAndStop => {
                            self.stopped.store(true, Ordering::SeqCst);
                            reader.unregister();
                            return Err(ServerError::HandlerPanicked { message });
                        }
                    }
                }
            }
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<Pagefault>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Unregisters the region (waking any thread still blocked in a fault: it sees a zero page)
    /// and returns it.
    ///
    /// ```no_run
    /// # fn f(server: remap::server::AsyncFaultServer<remap::server::ZeroSource>) {
    /// let region = server.into_region().expect("the region");
    /// region.write_u8(0, 1);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ServerError::RegionLost`] when part of the region was unmapped and someone else mapped
    /// memory at its start since (see the [module docs](super#shutdown)); a region cut short
    /// before such a hole is returned as `Ok`.
    pub fn into_region(self) -> Result<Region, ServerError> {
        self.into_parts().map(|(region, _)| region)
    }

    /// As [`into_region`](Self::into_region), and hands back the source too.
    ///
    /// ```no_run
    /// # fn f(server: remap::server::AsyncFaultServer<remap::server::ZeroSource>) {
    /// let (_region, _source) = server.into_parts().expect("the region");
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`into_region`](Self::into_region).
    pub fn into_parts(mut self) -> Result<(Region, S), ServerError> {
        let fd = self.fd.take();
        let Some(fd) = fd else {
            unreachable!("the fd is taken only here")
        };
        let reader = fd.into_inner().0;
        reader.unregister();
        match Arc::try_unwrap(reader) {
            Ok(reader) => reader.into_parts(),
            Err(_) => unreachable!("only the server holds the reader"),
        }
    }
}

impl<S: PageSource> Drop for AsyncFaultServer<S> {
    fn drop(&mut self) {
        if let Some(fd) = &self.fd {
            fd.get_ref().0.unregister();
        }
    }
}
