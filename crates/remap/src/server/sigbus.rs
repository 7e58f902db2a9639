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
//! Only a SIGBUS with `si_code == BUS_ADRERR` at an address of a registered server is ours: that
//! is what the kernel sends for a missing page under `UFFD_FEATURE_SIGBUS` (`VM_FAULT_SIGBUS`).
//! Everything else, including `BUS_MCEERR_AR` from touching a page poisoned with `UFFDIO_POISON`,
//! goes to the handler that was installed before ours (Rust's own stack-overflow handler,
//! typically, which resets SIGBUS to the default action), or, if that was the default action,
//! the default action is restored and the signal re-raised, so a stray SIGBUS still kills the
//! process.
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
//! unregistration but delivered after the entry was retired finds the range among the slot's
//! retired ranges and is retried once the same way (a second SIGBUS at the same address in a row
//! from a retired range is chained, so a genuine bus error there cannot loop).

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::c_void;
use std::os::fd::OwnedFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use uffd::{Features, RangeError, Uffd};

use super::core::{fall_back, Failure};
use super::fault_around;
use super::{
    bump, CopySource, Counters, FailurePolicy, Fault, MovePool, PageSource, ServerError,
    ServerStats, ZeroSource,
};
use crate::region::{self, Region};

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
///
/// `retired_start..retired_end` is the range of the last server retired from this slot (empty
/// when none), kept until the slot is reused, for SIGBUSes delivered after the retirement.
struct Slot {
    active: AtomicUsize,
    entry: AtomicPtr<Entry>,
    retired_start: AtomicUsize,
    retired_end: AtomicUsize,
}

const SLOTS: usize = 16;

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        active: AtomicUsize::new(0),
        entry: AtomicPtr::new(ptr::null_mut()),
        retired_start: AtomicUsize::new(0),
        retired_end: AtomicUsize::new(0),
    }
}; SLOTS];

thread_local! {
    /// The address of this thread's last SIGBUS answered from a retired range (0: none). A `Cell`
    /// of a `usize` with a const initialiser: no lazy set-up, no destructor, so reading it in a
    /// signal handler is a plain thread-local access.
    static RETIRED_HIT: Cell<usize> = const { Cell::new(0) };
    /// This thread's streak of SIGBUSes at one address that the server could not resolve
    /// (address, count); reset by any resolved fault. Same kind of thread-local as above.
    static UNRESOLVED: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

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
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO` handler; `si_code` is a
    // plain field, and for SIGBUS `si_addr` is the member of the union that it fills.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // Only a missing page under UFFD_FEATURE_SIGBUS (BUS_ADRERR) is ours: a poisoned page
    // (BUS_MCEERR_AR) or anything else goes on to the previous handler.
    let handled = if code == libc::BUS_ADRERR {
        dispatch(addr)
    } else {
        None
    };
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
    retired(addr)
}

/// A SIGBUS at `addr` in the range of a server retired from some slot: raised before the server
/// unregistered its region, delivered after. Retry the access once (it is ordinary memory now);
/// a second one in a row at the same address is not ours.
fn retired(addr: usize) -> Option<bool> {
    let hit = TABLE.iter().any(|slot| {
        let (start, end) = (
            slot.retired_start.load(Ordering::SeqCst),
            slot.retired_end.load(Ordering::SeqCst),
        );
        (start..end).contains(&addr)
    });
    if !hit {
        return None;
    }
    // The same faulting access repeats at the same address.
    if RETIRED_HIT.get() == addr {
        RETIRED_HIT.set(0);
        return None;
    }
    RETIRED_HIT.set(addr);
    Some(true)
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
    /// Set (before the region is unregistered) when the server stops.
    stopping: AtomicBool,
    /// `/proc/self/pagemap`, to check that a page is present after EEXIST (`None` if it could
    /// not be opened: EEXIST is then trusted).
    pagemap: Option<OwnedFd>,
}

impl<S> SigCore<S> {
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
        let at = (address / self.region.page_size()) as u64 * 8;
        match rustix::io::pread(pagemap, &mut entry, at) {
            Ok(8) => u64::from_ne_bytes(entry) & (1 << 63) != 0,
            _ => true,
        }
    }
}

impl<S> SigCore<S> {
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
        for _ in 0..EAGAIN_RETRIES {
            let (_, outcome) = fault_around::resolve(
                &self.uffd,
                &self.region,
                &self.counters,
                &self.source,
                &fault,
                &mut scratch,
                fault_around::Caller::Sigbus,
            );
            match outcome {
                Ok(()) => return self.resolved(),
                Err(Failure::Kernel(RangeError::Exists { .. })) => {
                    bump(&self.counters.races);
                    return self.unresolved(address);
                }
                Err(Failure::Kernel(RangeError::EventsPending { .. })) => {
                    bump(&self.counters.retries);
                    rustix::thread::sched_yield();
                }
                Err(_) => break,
            }
        }
        if self.stopping() {
            // Unregistered under us (ENOENT/EINVAL), or about to be: once it is, the retried
            // access is an ordinary one.
            return self.resolved();
        }
        bump(&self.counters.errors);
        match fall_back(
            &self.uffd,
            &self.region,
            &self.counters,
            offset,
            FailurePolicy::Zero,
        ) {
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
        let pagemap = rustix::fs::open(
            "/proc/self/pagemap",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        let core = Arc::new(SigCore {
            uffd,
            region,
            source,
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            pagemap,
        });
        let resolver: Arc<dyn SigResolve> = core.clone();
        let entry = Box::into_raw(Box::new(Entry {
            start,
            end,
            resolver,
        }));
        let slot = TABLE.iter().position(|slot| {
            let won = slot
                .entry
                .compare_exchange(ptr::null_mut(), entry, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if won {
                // The slot's retired range is forgotten once the slot serves again.
                slot.retired_end.store(0, Ordering::SeqCst);
                slot.retired_start.store(0, Ordering::SeqCst);
            }
            won
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
        // Mark the server stopping (a handler whose resolve now fails retries the access),
        // stop the SIGBUS faults, then retire the entry.
        self.core.stopping.store(true, Ordering::SeqCst);
        self.unregister();
        let slot = &TABLE[slot];
        let range = self.core.region.range();
        slot.retired_start.store(range.start, Ordering::SeqCst);
        slot.retired_end.store(range.end, Ordering::SeqCst);
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
