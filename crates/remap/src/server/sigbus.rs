//! SIGBUS mode: faults resolved by the faulting thread itself, in a signal handler.
//!
//! # Why this module contains `unsafe`
//!
//! Two promises, both about async-signal-safety: the `unsafe` marker trait
//! [`SignalSafeSource`] (and its impls for the crate's own sources), and the one call of
//! [`crate::sigbus::register`], which needs that promise. The handler itself, its installation
//! and its registry are [`crate::sigbus`]'s, shared with every other user of SIGBUS mode in the
//! process (remap-compact's cycles). The ioctls go through the [`Engine`] like every other
//! resolve.
//!
//! # What runs in the signal handler, and why it is async-signal-safe
//!
//! The handler runs on the faulting thread, interrupting arbitrary code (possibly inside `malloc`
//! or holding a lock). It does only this: reads `si_addr`; scans the fixed table of
//! [`crate::sigbus`] with atomic loads and increments; calls the registered source's
//! [`PageSource::resolve`] with an
//! empty scratch buffer; issues one ioctl (`UFFDIO_ZEROPAGE`, `COPY`, `MOVE` or `POISON`, which are
//! system calls and so async-signal-safe) and, when the kernel says EAGAIN, `sched_yield` before
//! retrying; bumps atomic counters; saves and restores `errno`. It never allocates, locks, logs
//! (`tracing` would allocate and lock) or panics on purpose. So the source must not either, which
//! is what the `unsafe` marker trait [`SignalSafeSource`] promises: [`ZeroSource`],
//! [`CopySource`] and [`MovePool`] (whose free list is a table of atomics) implement it;
//! [`FnSource`](super::FnSource) (an arbitrary closure) does not.
//!
//! Only a SIGBUS with `si_code == BUS_ADRERR` at an address of a registered server is ours: that
//! is what the kernel sends for a missing page under `UFFD_FEATURE_SIGBUS` (`VM_FAULT_SIGBUS`).
//! Everything else, including `BUS_MCEERR_AR` from touching a page poisoned with `UFFDIO_POISON`,
//! goes to the handler that was installed before ours (see [`crate::sigbus`]), so a stray SIGBUS
//! still kills the process.
//!
//! A SIGBUS that is ours is never passed on because its resolve failed: a resolve that lost its
//! race (EEXIST: another thread resolved the page first) may find the page gone again by the time
//! it looks (zapped by `MADV_DONTNEED`, which the region allows, or swapped out), and that is
//! benign. The handler returns and the access is retried: it faults again and is served, swaps
//! the page in, or (a page poisoned meanwhile) raises `BUS_MCEERR_AR`, which is passed on. Only
//! when one thread takes 64 such unresolved SIGBUSes in a row at one address, none finding the
//! page present (a page state that no resolve fixes and that every access reports as missing),
//! is the signal passed on, rather than retried for ever.
//!
//! # Bounds of the work done in the handler
//!
//! A SIGBUS-mode userfaultfd enables no non-cooperative events, so nothing raises the kernel's
//! `mmap_changing` and a resolve should never see EAGAIN; should it anyway (a transient
//! condition inside `UFFDIO_MOVE`), the handler retries at most 64 times (`EAGAIN_RETRIES`) with a
//! `sched_yield` between tries, then treats the fault as failed. A failed resolve falls back once
//! to the zero page ([`FailurePolicy::Zero`](super::FailurePolicy::Zero)), counted in
//! `errors` and `fallbacks`; if that fails too, the access is retried like a lost race (above).
//!
//! # Events
//!
//! Nothing reads a SIGBUS-mode userfaultfd, so it enables no events: `MADV_DONTNEED` on the
//! region is fine (the pages fault again and are served again), but do not `munmap` or `mremap`
//! part of it while it is served, since the server cannot learn of it (stop the server first,
//! then do what you like with the returned region). Use a [`FaultServer`](super::FaultServer)
//! when the region's layout changes underneath.
//!
//! # Stopping while threads fault
//!
//! Stopping first marks the server as stopping, then unregisters the region, then retires the
//! registry entry (waiting for handlers still using it). A handler whose resolve fails once the
//! server is stopping (the range was just unregistered: ENOENT or EINVAL) reports the fault as
//! handled, so the access is retried and finds ordinary memory. A SIGBUS raised just before the
//! unregistration but delivered after the entry was retired finds the range among the registry's
//! retired ranges and is retried the same way (a bounded number of times in a row at one
//! address, [`crate::sigbus::RETIRED_RETRIES`], so a genuine bus error there cannot loop).

#![allow(unsafe_code)]

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use uffd::Features;

use super::engine::{Attempt, Engine, EngineConfig};
use super::{
    bump, CopySource, FailurePolicy, Fault, MovePool, PageSource, ServerError, ServerStats,
    ZeroSource,
};
use crate::region::Region;
use crate::sigbus::{SigbusHandler, SigbusRegistration};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// This thread's streak of SIGBUSes at one address that the server could not resolve
    /// (address, count); reset by any resolved fault. A `Cell` with a const initialiser: no
    /// lazy set-up, no destructor, so reading it in a signal handler is a plain thread-local
    /// access.
    static UNRESOLVED: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// How many SIGBUSes in a row at one address a thread may take without the server resolving
/// one before the handler stops retrying the access and passes the signal on: a bound for a
/// page state that no resolve fixes yet every access raises `BUS_ADRERR` for (see the module
/// docs).
pub(crate) const UNRESOLVED_RETRIES: usize = 64;

/// How many times the SIGBUS handler retries a resolve that got EAGAIN before treating it as
/// failed (see the module docs).
pub(crate) const EAGAIN_RETRIES: usize = 64;

/// A [`PageSource`] whose [`resolve`](PageSource::resolve),
/// [`resolve_around`](PageSource::resolve_around), [`fault_around`](PageSource::fault_around)
/// and [`move_done`](PageSource::move_done) are async-signal-safe, so [`SigbusServer`] may call
/// them from a SIGBUS handler.
///
/// # Safety
///
/// `resolve`, `resolve_around`, `fault_around` and `move_done` must not allocate, free, take
/// locks (including `Mutex`, `RwLock`, `Once` initialisation, stdio and `tracing`), panic, or
/// call any function that is not async-signal-safe; they may read their own data and use
/// atomics. They run inside a signal handler that may have interrupted any code of the process,
/// including the allocator. `resolve` gets an empty scratch buffer and must not answer
/// [`Resolution::Leave`](super::Resolution::Leave) expecting the fault to wait (SIGBUS mode
/// resolves it with the zero page instead).
///
/// ```
/// use remap::server::{SignalSafeSource, ZeroSource};
/// fn assert_safe<S: SignalSafeSource>(_: &S) {}
/// assert_safe(&ZeroSource);
/// ```
pub unsafe trait SignalSafeSource: PageSource {}

// SAFETY: `ZeroSource::resolve` returns a constant; `move_done` is the no-op default.
unsafe impl SignalSafeSource for ZeroSource {}
// SAFETY: `CopySource::resolve` and `resolve_around` only slice its own image, padded to whole
// pages when it was built (`<[u8]>::get`, no allocation, no panic); `fault_around` reads a
// field; `move_done` is the no-op default.
unsafe impl SignalSafeSource for CopySource {}
// SAFETY: `MovePool::resolve`, `resolve_around` (a run of slots claimed the same way) and the
// settling of its `PoolLease` (by the server after its MOVE, or by dropping the lease) only
// compare-exchange, load and store atomics of the pool's own slot table, read its fields, read
// the clock (`clock_gettime`), and make system calls: `futex(2)` waits (bounded) and wakes, and
// one `pread(2)` of pagemap (`Pagemap::entry` or `Pagemap::entries_into`) into a stack buffer.
// No allocation, no lock, no panic (indices come from the table's own bounds, and a lease only
// ever holds slots the pool's own `resolve` or `resolve_around` handed out). `move_done` is the
// no-op default.
unsafe impl SignalSafeSource for MovePool {}

/// A SIGBUS-mode server's state: the engine, and what the signal handler needs besides.
struct SigbusResolver<S> {
    engine: Engine<S>,
    /// Set (before the region is unregistered) when the server stops.
    stopping: AtomicBool,
    /// `/proc/self/pagemap`, to check that a page is present after EEXIST (`None` if it could
    /// not be opened: EEXIST is then trusted).
    pagemap: Option<OwnedFd>,
}

impl<S: PageSource> SigbusResolver<S> {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Whether the page at `address` is present (pagemap bit 63), with one `pread(2)`:
    /// async-signal-safe; `true` when pagemap cannot be read. Not present after a lost race
    /// means zapped, swapped out or poisoned meanwhile, or a page state no resolve fixes (see
    /// [`unresolved`](Self::unresolved)).
    fn present(&self, address: usize) -> bool {
        let Some(pagemap) = &self.pagemap else {
            return true;
        };
        let mut entry = [0u8; 8];
        let at = (address / self.engine.page_size()) as u64 * 8;
        match rustix::io::pread(pagemap, &mut entry, at) {
            Ok(8) => u64::from_ne_bytes(entry) & (1 << 63) != 0,
            _ => true,
        }
    }
}

impl<S: PageSource> SigbusResolver<S> {
    /// The outcome of a SIGBUS whose fault this server resolved.
    fn resolved(&self) -> bool {
        UNRESOLVED.set((0, 0));
        true
    }

    /// The outcome of a SIGBUS at `address` that the server did not resolve: another thread
    /// resolved it first (EEXIST), or the resolve and its fallback failed. The address is ours
    /// and the signal said "missing page" (`BUS_ADRERR`), so it is never somebody else's
    /// signal: retry the access. After a lost race the page may well be gone again (zapped by
    /// `MADV_DONTNEED`, swapped out: pagemap says "not present" then), which the retried
    /// access sorts out (it faults again, is served again, or swaps in); a page poisoned
    /// meanwhile raises `BUS_MCEERR_AR`, which is passed on. Only a streak of
    /// [`UNRESOLVED_RETRIES`] unresolved SIGBUSes in a row at one address, none present, is
    /// passed on: something no resolve fixes.
    fn unresolved(&self, address: usize) -> bool {
        if self.stopping() || self.present(address) {
            return self.resolved();
        }
        let (last, count) = UNRESOLVED.get();
        let count = if last == address { count + 1 } else { 1 };
        if count >= UNRESOLVED_RETRIES {
            UNRESOLVED.set((0, 0));
            return false;
        }
        UNRESOLVED.set((address, count));
        true
    }
}

impl<S: SignalSafeSource> SigbusHandler for SigbusResolver<S> {
    fn on_sigbus(&self, addr: usize) -> bool {
        let engine = &self.engine;
        let page = engine.page_size();
        let address = addr & !(page - 1);
        let Some(offset) = engine.region.offset_of(address) else {
            return false;
        };
        bump(&engine.counters.faults);
        let fault = Fault {
            offset,
            address,
            len: page,
            write: false,
            thread_id: None,
        };
        let mut scratch: [u8; 0] = [];
        for _ in 0..EAGAIN_RETRIES {
            match engine.attempt(&fault, &mut scratch, true, &|_| false) {
                Attempt::Done => return self.resolved(),
                Attempt::Raced => return self.unresolved(address),
                Attempt::Pending => rustix::thread::sched_yield(),
                Attempt::Failed { .. } => break,
            }
        }
        if self.stopping() {
            // Unregistered under us (ENOENT/EINVAL), or about to be: once it is, the retried
            // access is an ordinary one.
            return self.resolved();
        }
        match engine.fall_back(offset).1 {
            Ok(()) => self.resolved(),
            Err(_) => self.unresolved(address),
        }
    }
}

/// Serves the faults of a [`Region`] without handler threads (`UFFD_FEATURE_SIGBUS`): a thread
/// touching a missing page gets SIGBUS, and remap's process-wide SIGBUS handler resolves the fault
/// right there, from the server's [`SignalSafeSource`], then returns so the access is retried.
///
/// This saves the two context switches of a handler-thread round trip. Its limits: no
/// non-cooperative events (nothing reads the userfaultfd: do not `munmap` or `mremap` part of
/// the region while it is served), no write/read distinction, at most 16 SIGBUS-mode servers per
/// process, and only async-signal-safe sources (see the module docs of this mode in
/// [`SignalSafeSource`]). A fault the source cannot resolve (an ioctl error, or an unusable
/// [`Resolution`](super::Resolution) such as a move from outside its region) gets the zero page
/// instead, counted in [`ServerStats::errors`] and [`ServerStats::fallbacks`]; if that fails
/// too, or the resolve lost its race to another thread, the access is retried (a page zapped or
/// swapped out meanwhile is benign), and only a long streak of unresolved faults at one address is passed on
/// to the previous SIGBUS handler, which normally kills the process. Touching a page the source
/// poisoned raises a SIGBUS this server does not handle (`BUS_MCEERR_AR`).
///
/// Stopping (or dropping) marks the server as stopping, unregisters the region, then removes the
/// server from the handler's registry, waiting for handlers still using it; a thread faulting
/// meanwhile retries its access, which then finds ordinary memory.
///
/// ```
/// use remap::region::Region;
/// use remap::server::{CopySource, SigbusServer};
///
/// let server = SigbusServer::start(Region::new(2 * 4096)?, CopySource::new(vec![5; 8192]))?;
/// assert_eq!(server.region().read_u8(4100), 5); // resolved in this thread's signal handler
/// assert_eq!(server.stats().served_copy, 1);
/// let _region = server.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SigbusServer<S: SignalSafeSource> {
    resolver: Arc<SigbusResolver<S>>,
    /// Taken by the first [`stop_serving`](SigbusServer::stop_serving).
    registration: Mutex<Option<SigbusRegistration>>,
}

impl<S: SignalSafeSource> std::fmt::Debug for SigbusServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigbusServer")
            .field("region", &self.resolver.engine.region)
            .field("registration", &self.registration)
            .finish_non_exhaustive()
    }
}

impl<S: SignalSafeSource> SigbusServer<S> {
    /// Installs the process-wide SIGBUS handler (once), creates a userfaultfd with
    /// `UFFD_FEATURE_SIGBUS`, registers `region` and enters it in the handler's registry.
    ///
    /// # Errors
    ///
    /// [`ServerError::Create`] (no userfaultfd, or no SIGBUS feature), [`ServerError::Register`],
    /// [`ServerError::Sigbus`] (handler installation failed, or 16 servers already exist: ENOSPC).
    pub fn start(region: Region, source: S) -> Result<Self, ServerError> {
        let config = EngineConfig {
            features: Features::SIGBUS,
            kernel_faults: false,
            non_blocking: false,
            // What the handler can do without a thread to log or retry later.
            policy: FailurePolicy::Zero,
        };
        let engine = Engine::new(region, source, config)?;
        let range = engine.region.range();
        let pagemap = rustix::fs::open(
            "/proc/self/pagemap",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        let resolver = Arc::new(SigbusResolver {
            engine,
            stopping: AtomicBool::new(false),
            pagemap,
        });
        let handler: Arc<dyn SigbusHandler> = resolver.clone();
        // SAFETY: `SigbusResolver::on_sigbus` is async-signal-safe: it reads its own fields,
        // bumps atomics, calls the source's `resolve` and `move_done` (async-signal-safe: the
        // `SignalSafeSource` promise), issues ioctls, `sched_yield` and one `pread(2)` into a
        // stack buffer, and reads and writes a const-initialised thread-local `Cell`. The
        // engine's `attempt`, `apply` and `fall_back` allocate, lock, log and panic nowhere.
        let registered = unsafe { crate::sigbus::register(range, handler) };
        let server = Self {
            resolver,
            registration: Mutex::new(None),
        };
        match registered {
            Ok(registration) => {
                *lock(&server.registration) = Some(registration);
                Ok(server)
            }
            Err(err) => {
                server.unregister();
                Err(ServerError::Sigbus {
                    what: match err {
                        crate::sigbus::SigbusError::Full => {
                            "every SIGBUS-mode registry slot is taken"
                        }
                        _ => "installing the SIGBUS handler",
                    },
                    errno: err.errno(),
                })
            }
        }
    }

    /// The served region.
    ///
    /// ```
    /// # let server = remap::server::SigbusServer::start(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource)?;
    /// assert_eq!(server.region().pages(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn region(&self) -> &Region {
        &self.resolver.engine.region
    }

    /// The page source.
    ///
    /// ```
    /// # let server = remap::server::SigbusServer::start(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource)?;
    /// let _source: &remap::server::ZeroSource = server.source();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn source(&self) -> &S {
        &self.resolver.engine.source
    }

    /// A snapshot of the counters (`faults` counts SIGBUS faults taken).
    ///
    /// ```
    /// # let server = remap::server::SigbusServer::start(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource)?;
    /// assert_eq!(server.stats().faults, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> ServerStats {
        self.resolver.engine.counters.snapshot()
    }

    fn unregister(&self) {
        let region = &self.resolver.engine.region;
        if let Err(err) = self.resolver.engine.set_registered(0, region.len(), false) {
            tracing::warn!(%err, "unregistering a SIGBUS-mode region");
        }
    }

    /// Stops serving without giving up the region: marks the server stopping, unregisters the
    /// region (a thread faulting meanwhile retries its access and finds ordinary memory) and
    /// leaves the handler's registry. The region stays borrowed from the server, so threads
    /// still touching it can finish; then [`stop`](Self::stop) hands it back. Calling it again
    /// does nothing. See [`FaultServer::stop_serving`](super::FaultServer::stop_serving) for an
    /// example of the pattern.
    ///
    /// ```
    /// # let server = remap::server::SigbusServer::start(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource)?;
    /// server.stop_serving();
    /// server.region().write_u8(0, 1); // ordinary memory now
    /// assert_eq!(server.stats().faults, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop_serving(&self) {
        let Some(registration) = lock(&self.registration).take() else {
            return;
        };
        // Mark the server stopping (a handler whose resolve now fails retries the access),
        // stop the SIGBUS faults, then retire the entry (waiting for handlers using it).
        self.resolver.stopping.store(true, Ordering::SeqCst);
        self.unregister();
        drop(registration);
    }

    /// Unregisters the region (later faults are ordinary), leaves the registry, and returns the
    /// region.
    ///
    /// ```
    /// # let server = remap::server::SigbusServer::start(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource)?;
    /// let region = server.stop();
    /// region.write_u8(0, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop(self) -> Region {
        self.into_parts().0
    }

    /// Stops as [`stop`](Self::stop) does and hands back the source too.
    ///
    /// ```
    /// # let server = remap::server::SigbusServer::start(
    /// #     remap::region::Region::new(4096)?, remap::server::MovePool::new(1)?)?;
    /// let (_region, pool) = server.into_parts();
    /// assert_eq!(pool.available(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_parts(self) -> (Region, S) {
        self.stop_serving();
        let resolver = Arc::clone(&self.resolver);
        drop(self);
        match Arc::try_unwrap(resolver) {
            Ok(resolver) => (resolver.engine.region, resolver.engine.source),
            Err(_) => unreachable!("the registry entry was dropped"),
        }
    }
}

impl<S: SignalSafeSource> Drop for SigbusServer<S> {
    fn drop(&mut self) {
        self.stop_serving();
    }
}
