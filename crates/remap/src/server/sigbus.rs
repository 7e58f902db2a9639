//! SIGBUS mode: faults resolved by the faulting thread itself, in a signal handler.
//!
//! # Why this module contains `unsafe`
//!
//! remap keeps `unsafe` to the region mapping code. A signal handler cannot be installed without
//! `sigaction(2)`, which no safe wrapper in our dependencies offers, and the handler must read
//! `siginfo_t::si_addr` from a raw pointer and follow a pointer from a lock-free registry: so this
//! module is a documented exception. Its `unsafe` is limited to installing the handler, reading
//! the siginfo, calling the previous handler, and dereferencing registry entries that stay alive
//! while a handler may use them (see [`Slot`]). The ioctls themselves go through the bounds-checked
//! functions of the region module like every other resolve.
//!
//! # What runs in the signal handler, and why it is async-signal-safe
//!
//! The handler runs on the faulting thread, interrupting arbitrary code (possibly inside `malloc`
//! or holding a lock). It does only this: reads `si_addr`; scans a fixed table of 16 slots with
//! atomic loads and increments; calls the registered source's [`PageSource::resolve`] with an
//! empty scratch buffer; issues one ioctl (`UFFDIO_ZEROPAGE`, `COPY`, `MOVE` or `POISON`, which are
//! system calls and so async-signal-safe) and, when the kernel says EAGAIN, `sched_yield` before
//! retrying; bumps atomic counters; saves and restores `errno`. It never allocates, locks, logs
//! (`tracing` would allocate and lock) or panics on purpose. So the source must not either, which
//! is what the `unsafe` marker trait [`SignalSafeSource`] promises: [`ZeroSource`],
//! [`CopySource`] and [`MovePool`] (whose free list is a table of atomics) implement it;
//! [`FnSource`](super::FnSource) (an arbitrary closure) does not.
//!
//! Addresses that belong to no SIGBUS-mode server go to the handler that was installed before
//! ours (Rust's own stack-overflow handler, typically), or, if that was the default action, the
//! default action is restored and the signal re-raised, so a stray SIGBUS still kills the process.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use uffd::{CopyFlags, Features, MoveFlags, RangeError, Uffd, ZeropageFlags};

use super::{
    bump, CopySource, Counters, Fault, MovePool, PageSource, Resolution, ServerError, ServerStats,
    ZeroSource,
};
use crate::region::{self, Region};

/// A [`PageSource`] whose [`resolve`](PageSource::resolve) and
/// [`move_done`](PageSource::move_done) are async-signal-safe, so [`SigbusServer`] may call them
/// from a SIGBUS handler.
///
/// # Safety
///
/// `resolve` and `move_done` must not allocate, free, take locks (including `Mutex`, `RwLock`,
/// `Once` initialisation, stdio and `tracing`), panic, or call any function that is not
/// async-signal-safe; they may read their own data and use atomics. They run inside a signal
/// handler that may have interrupted any code of the process, including the allocator. `resolve`
/// gets an empty scratch buffer and must not answer [`Resolution::Leave`] expecting the fault to
/// wait (SIGBUS mode resolves it with the zero page instead).
///
/// ```
/// use remap::server::{SignalSafeSource, ZeroSource};
/// fn assert_safe<S: SignalSafeSource>(_: &S) {}
/// assert_safe(&ZeroSource);
/// ```
pub unsafe trait SignalSafeSource: PageSource {}

// SAFETY: `ZeroSource::resolve` returns a constant; `move_done` is the no-op default.
unsafe impl SignalSafeSource for ZeroSource {}
// SAFETY: `CopySource::resolve` only slices its own image (`<[u8]>::get`, no allocation, no
// panic); `move_done` is the no-op default.
unsafe impl SignalSafeSource for CopySource {}
// SAFETY: `MovePool::resolve` and `move_done` only compare-exchange, load and store atomics of the
// pool's own slot table and read its fields: no allocation, no lock, no panic (indices come from
// the table's own bounds).
unsafe impl SignalSafeSource for MovePool {}

/// What the handler calls for an address inside a registered range.
trait SigResolve: Send + Sync {
    /// Resolves the fault at `addr`; `false` when it could not.
    fn resolve_at(&self, addr: usize) -> bool;
}

/// One registered server: its address range and its resolver.
struct Entry {
    start: usize,
    end: usize,
    resolver: Arc<dyn SigResolve>,
}

/// A registry slot. `entry` is published with a release store; a handler increments `active`
/// before loading `entry` and decrements it when done with the entry, and the unregistering thread
/// swaps `entry` to null and then waits for `active` to reach zero before freeing the entry. So an
/// entry a handler loaded stays alive until that handler is done with it.
struct Slot {
    active: AtomicUsize,
    entry: AtomicPtr<Entry>,
}

const SLOTS: usize = 16;

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        active: AtomicUsize::new(0),
        entry: AtomicPtr::new(ptr::null_mut()),
    }
}; SLOTS];

/// The SIGBUS action installed before ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// The outcome of installing our handler (once per process).
static INSTALLED: OnceLock<Result<(), uffd::Errno>> = OnceLock::new();

fn install() -> Result<(), ServerError> {
    let outcome = *INSTALLED.get_or_init(|| {
        // SAFETY: `sigaction` is a plain C struct for which all-zero bytes are a valid value (no
        // handler, empty flags; the mask is set below).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `sigaction(2)` with a null new action only writes the current action into
        // `old`, a valid, writable `sigaction`.
        if unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), &mut old) } != 0 {
            return Err(uffd::Errno::from_io_error(&std::io::Error::last_os_error())
                .unwrap_or(uffd::Errno::INVAL));
        }
        let _ = PREVIOUS.set(old);
        // SAFETY: as above, all-zero is a valid `sigaction`.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_sigbus
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void)
            as libc::sighandler_t;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        // SAFETY: `sigemptyset` requires a valid, writable `sigset_t`: the field of our local.
        unsafe { libc::sigemptyset(&mut new.sa_mask) };
        // SAFETY: `sigaction(2)` requires valid pointers to a `sigaction` to read and one to
        // write (or null). `on_sigbus` has the `SA_SIGINFO` signature and is async-signal-safe
        // (see the module docs), which is what a handler must be.
        if unsafe { libc::sigaction(libc::SIGBUS, &new, ptr::null_mut()) } != 0 {
            return Err(uffd::Errno::from_io_error(&std::io::Error::last_os_error())
                .unwrap_or(uffd::Errno::INVAL));
        }
        Ok(())
    });
    outcome.map_err(|errno| ServerError::Sigbus {
        what: "installing the SIGBUS handler",
        errno,
    })
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, valid for the thread's
    // life; we save it here and restore it below so the interrupted code sees its own errno.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: `errno_slot` is valid and aligned (above).
    let saved = unsafe { errno_slot.read() };
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO` handler, and for SIGBUS
    // `si_addr` is the member of the union that it fills.
    let addr = unsafe { (*info).si_addr() } as usize;
    let handled = dispatch(addr);
    // SAFETY: as above.
    unsafe { errno_slot.write(saved) };
    if handled != Some(true) {
        chain(sig, info, ctx);
    }
}

/// Finds the server owning `addr` and resolves: `None` when no server owns it.
fn dispatch(addr: usize) -> Option<bool> {
    for slot in &TABLE {
        slot.active.fetch_add(1, Ordering::SeqCst);
        let entry = slot.entry.load(Ordering::SeqCst);
        // SAFETY: a non-null `entry` came from `Box::into_raw` in `register`, and it is freed only
        // after it was swapped out of the slot and `active` dropped to zero; our increment above
        // happened before the load, so it stays alive until our decrement below.
        let hit = unsafe { entry.as_ref() }
            .filter(|e| (e.start..e.end).contains(&addr))
            .map(|e| e.resolver.resolve_at(addr));
        slot.active.fetch_sub(1, Ordering::SeqCst);
        if hit.is_some() {
            return hit;
        }
    }
    None
}

/// Hands a SIGBUS that is not ours to the previous handler, or dies of it.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    if let Some(prev) = PREVIOUS.get() {
        let action = prev.sa_sigaction;
        if action != libc::SIG_DFL && action != libc::SIG_IGN {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: with SA_SIGINFO, `sa_sigaction` holds a three-argument handler (it is
                // neither SIG_DFL nor SIG_IGN), installed by whoever set it for this signal; we
                // pass it the kernel's own arguments.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                    unsafe { std::mem::transmute(action) };
                f(sig, info, ctx);
            } else {
                // SAFETY: without SA_SIGINFO, `sa_sigaction` holds a one-argument handler.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action) };
                f(sig);
            }
            return;
        }
    }
    // SAFETY: all-zero is a valid `sigaction` (SIG_DFL, no flags, empty mask); `sigaction(2)`
    // and `raise(3)` are async-signal-safe. Restoring the default and re-raising makes the
    // pending signal kill the process once this handler returns.
    unsafe {
        let dfl: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, &dfl, ptr::null_mut());
        libc::raise(sig);
    }
}

/// A SIGBUS-mode server's state.
struct SigCore<S> {
    uffd: Uffd,
    region: Region,
    source: S,
    counters: Counters,
}

impl<S: SignalSafeSource> SigResolve for SigCore<S> {
    fn resolve_at(&self, addr: usize) -> bool {
        let page = self.region.page_size();
        let address = addr & !(page - 1);
        let offset = address - self.region.addr();
        bump(&self.counters.faults);
        let fault = Fault {
            offset,
            address,
            len: page,
            write: false,
            thread_id: None,
        };
        let mut scratch: [u8; 0] = [];
        // EAGAIN here can only be a contended VMA lock (no events are enabled): yield and retry,
        // a bounded number of times.
        for _ in 0..10_000 {
            let resolution = match self.source.resolve(&fault, &mut scratch) {
                Resolution::Leave => Resolution::Zero,
                other => other,
            };
            self.counters.served(&resolution);
            let result = match resolution {
                Resolution::Zero | Resolution::Leave => region::resolve_zero(
                    &self.uffd,
                    &self.region,
                    offset,
                    page,
                    ZeropageFlags::empty(),
                ),
                Resolution::Copy(bytes) if bytes.len() == page => region::resolve_copy(
                    &self.uffd,
                    &self.region,
                    offset,
                    bytes,
                    CopyFlags::empty(),
                ),
                Resolution::Copy(_) => {
                    self.counters.unserved(&resolution);
                    return false;
                }
                Resolution::Move { from, offset: src } => {
                    let result = region::resolve_move(
                        &self.uffd,
                        &self.region,
                        offset,
                        from,
                        src,
                        page,
                        MoveFlags::empty(),
                    );
                    self.source.move_done(src, result.is_ok());
                    result
                }
                Resolution::Poison => {
                    region::resolve_poison(&self.uffd, &self.region, offset, page)
                }
            };
            if result.is_err() {
                self.counters.unserved(&resolution);
            }
            match result {
                Ok(_) => return true,
                Err(RangeError::Exists { .. }) => {
                    bump(&self.counters.races);
                    return true;
                }
                Err(RangeError::EventsPending { .. }) => {
                    bump(&self.counters.retries);
                    rustix::thread::sched_yield();
                }
                Err(_) => break,
            }
        }
        bump(&self.counters.errors);
        false
    }
}

/// Serves the faults of a [`Region`] without handler threads (`UFFD_FEATURE_SIGBUS`): a thread
/// touching a missing page gets SIGBUS, and remap's process-wide SIGBUS handler resolves the fault
/// right there, from the server's [`SignalSafeSource`], then returns so the access is retried.
///
/// This saves the two context switches of a handler-thread round trip. Its limits: no
/// non-cooperative events (nothing reads the userfaultfd), no write/read distinction, at most 16
/// SIGBUS-mode servers per process, and only async-signal-safe sources (see the module docs of
/// this mode in [`SignalSafeSource`]). A fault the source cannot resolve (an ioctl error) is
/// passed on to the previous SIGBUS handler, which normally kills the process.
///
/// Stopping (or dropping) unregisters the region first, then removes the server from the
/// handler's registry, waiting for handlers still using it.
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
    core: Arc<SigCore<S>>,
    slot: Option<usize>,
}

impl<S: SignalSafeSource> std::fmt::Debug for SigbusServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigbusServer")
            .field("region", &self.core.region)
            .field("slot", &self.slot)
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
        install()?;
        let uffd = Uffd::builder().features(Features::SIGBUS).create()?;
        region::register_range(&uffd, &region, 0, region.len(), true)?;
        let (start, end) = (region.addr(), region.range().end);
        let core = Arc::new(SigCore {
            uffd,
            region,
            source,
            counters: Counters::default(),
        });
        let resolver: Arc<dyn SigResolve> = core.clone();
        let entry = Box::into_raw(Box::new(Entry {
            start,
            end,
            resolver,
        }));
        let slot = TABLE.iter().position(|slot| {
            slot.entry
                .compare_exchange(ptr::null_mut(), entry, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        let server = Self { core, slot };
        if server.slot.is_none() {
            // SAFETY: `entry` came from `Box::into_raw` above and was never published.
            drop(unsafe { Box::from_raw(entry) });
            server.unregister();
            return Err(ServerError::Sigbus {
                what: "every SIGBUS-mode registry slot is taken",
                errno: uffd::Errno::NOSPC,
            });
        }
        Ok(server)
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
        &self.core.region
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
        &self.core.source
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
        self.core.counters.snapshot()
    }

    fn unregister(&self) {
        let region = &self.core.region;
        if let Err(err) = region::register_range(&self.core.uffd, region, 0, region.len(), false) {
            tracing::warn!(%err, "unregistering a SIGBUS-mode region");
        }
    }

    fn shutdown(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        // First stop the SIGBUS faults, then retire the entry.
        self.unregister();
        let slot = &TABLE[slot];
        let entry = slot.entry.swap(ptr::null_mut(), Ordering::SeqCst);
        while slot.active.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        // SAFETY: `entry` came from `Box::into_raw` in `start`, it is no longer reachable from the
        // table, and no handler still uses it (`active` is zero after the swap; see `Slot`).
        drop(unsafe { Box::from_raw(entry) });
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
    pub fn stop(mut self) -> Region {
        self.shutdown();
        let core = Arc::clone(&self.core);
        drop(self);
        match Arc::try_unwrap(core) {
            Ok(core) => core.region,
            Err(_) => unreachable!("the registry entry was dropped"),
        }
    }
}

impl<S: SignalSafeSource> Drop for SigbusServer<S> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
