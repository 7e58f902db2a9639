//! One process-wide SIGBUS handler, dispatching missing-page SIGBUSes to registered address
//! ranges.
//!
//! A process has one SIGBUS action, so everything that resolves faults in the faulting thread
//! (`UFFD_FEATURE_SIGBUS`) must share one handler: remap's [`SigbusServer`](crate::server::SigbusServer)
//! and `remap-compact`'s SIGBUS-mode cycles both register here. [`register`] installs the
//! handler on first use (keeping the action installed before it, to pass on what is not ours)
//! and enters an address range with its [`SigbusHandler`] in a fixed table of
//! [`SLOTS`] slots; dropping the returned [`SigbusRegistration`] retires it, waiting for handlers
//! still using it.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use remap::sigbus::{self, SigbusHandler};
//!
//! /// Counts the SIGBUSes of a range (and does nothing else: async-signal-safe).
//! struct Count(AtomicUsize);
//!
//! impl SigbusHandler for Count {
//!     fn on_sigbus(&self, _addr: usize) -> bool {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         false // not resolved: passed on to the previous handler
//!     }
//! }
//!
//! let range = 0x1000..0x2000; // an address range nothing is mapped at here
//! let handler = Arc::new(Count(AtomicUsize::new(0)));
//! // SAFETY: `Count::on_sigbus` only increments an atomic.
//! let registration = unsafe { sigbus::register(range, handler.clone()) }?;
//! drop(registration); // retired: the slot is free again
//! # Ok::<(), remap::sigbus::SigbusError>(())
//! ```
//!
//! # What the handler does
//!
//! Only a SIGBUS with `si_code == BUS_ADRERR` (what the kernel sends for a missing page under
//! `UFFD_FEATURE_SIGBUS`) at an address of a registered range is dispatched: the range's
//! [`SigbusHandler::on_sigbus`] runs, and when it answers `true` the handler returns and the
//! access is retried. Everything else (`BUS_MCEERR_AR` from a poisoned page, an address no range
//! holds, a `false` answer) goes to the action installed before ours (Rust's own stack-overflow
//! handler, typically), or, if that was the default action, the default is restored and the
//! signal re-raised, so a stray SIGBUS still kills the process. `errno` is saved and restored
//! around the dispatch.
//!
//! A SIGBUS raised just before a range was retired (its owner unregistered the memory from its
//! userfaultfd, then dropped the registration) can be delivered after: an address in the last
//! range retired from some slot is retried with a `sched_yield`, since the memory is ordinary
//! again or registered by a newer owner whose entry then handles it; only
//! [`RETIRED_RETRIES`] such SIGBUSes in a row at one address are passed on (a genuine bus error
//! at an address that happens to lie there).
//!
//! # Stack
//!
//! The handler is installed without `SA_ONSTACK`: it runs on the faulting thread's own stack,
//! which is healthy (a missing-page SIGBUS is an ordinary access, not a stack overflow, which
//! is SIGSEGV on Linux), so a registered handler may use more than the few KiB of the alternate
//! signal stack that Rust installs for its overflow reports (remap-compact's fill does).
//!
//! # Why this module contains `unsafe`
//!
//! A signal handler cannot be installed without `sigaction(2)`, which no safe wrapper in our
//! dependencies offers; the handler reads `siginfo_t` from a raw pointer, calls the previous
//! handler through a function pointer, and follows pointers of a lock-free table whose entries
//! stay alive while a handler uses them (see `Slot`).

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::c_void;
use std::ops::Range;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use uffd::Errno;

/// How many ranges can be registered at once.
pub const SLOTS: usize = 16;

/// How many SIGBUSes in a row one thread may take at one address of a retired range, each
/// retried after a `sched_yield`, before the signal is passed on.
pub const RETIRED_RETRIES: u32 = 1000;

/// What the process-wide SIGBUS handler calls for a missing-page SIGBUS in a registered range.
///
/// `on_sigbus` runs inside a signal handler that may have interrupted any code of the process,
/// the allocator included, so it must be async-signal-safe: no allocation or free, no lock
/// (`Mutex`, `RwLock`, `Once` initialisation, stdio, `tracing`), no panic; atomics, its own
/// data and async-signal-safe system calls (the userfaultfd ioctls are) only. [`register`] is
/// `unsafe` because it cannot check that.
pub trait SigbusHandler: Send + Sync {
    /// Handles the missing-page SIGBUS at `addr` (inside the registered range). `true`: handled,
    /// the access is retried; `false`: passed on to the previous handler (normally fatal).
    fn on_sigbus(&self, addr: usize) -> bool;
}

/// Why [`register`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigbusError {
    /// `sigaction(2)` failed installing the handler.
    #[error("installing the SIGBUS handler: {0}")]
    Install(Errno),
    /// All [`SLOTS`] slots are taken.
    #[error("every one of the {SLOTS} SIGBUS registry slots is taken")]
    Full,
}

impl SigbusError {
    /// The errno: `sigaction`'s, or ENOSPC for [`SigbusError::Full`].
    pub fn errno(&self) -> Errno {
        match self {
            SigbusError::Install(errno) => *errno,
            SigbusError::Full => Errno::NOSPC,
        }
    }
}

/// One registered range.
struct Entry {
    range: Range<usize>,
    handler: Arc<dyn SigbusHandler>,
}

/// A registry slot. `entry` is published with a compare-exchange; a handler increments `active`
/// before loading `entry` and decrements it when done, and the retiring thread swaps `entry` to
/// null and then waits for `active` to reach zero before freeing the entry. So an entry a
/// handler loaded stays alive until that handler is done with it.
///
/// `retired_start..retired_end` is the range last retired from this slot (empty when none),
/// kept until the slot retires another (through reuse too), for SIGBUSes delivered after the
/// retirement.
struct Slot {
    active: AtomicUsize,
    entry: AtomicPtr<Entry>,
    retired_start: AtomicUsize,
    retired_end: AtomicUsize,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        active: AtomicUsize::new(0),
        entry: AtomicPtr::new(ptr::null_mut()),
        retired_start: AtomicUsize::new(0),
        retired_end: AtomicUsize::new(0),
    }
}; SLOTS];

/// The SIGBUS action installed before ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// The outcome of installing our handler (once per process).
static INSTALLED: OnceLock<Result<(), Errno>> = OnceLock::new();

thread_local! {
    /// This thread's streak of SIGBUSes answered from a retired range (address, count). A
    /// `Cell` with a const initialiser: no lazy set-up, no destructor, so reading it in a signal
    /// handler is a plain thread-local access.
    static RETIRED_HITS: Cell<(usize, u32)> = const { Cell::new((0, 0)) };
}

/// A range entered in the registry; dropping it retires the range, waiting until no handler
/// uses its [`SigbusHandler`] any more (then the handler's `Arc` is released).
///
/// Unregister the range's memory from its userfaultfd before dropping this, so that no new
/// missing-page SIGBUS is raised there; one raised just before is retried (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct SigbusRegistration {
    slot: usize,
}

impl SigbusRegistration {
    /// The registry slot (0..[`SLOTS`]) this range occupies.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # struct Never;
    /// # impl remap::sigbus::SigbusHandler for Never { fn on_sigbus(&self, _: usize) -> bool { false } }
    /// // SAFETY: the handler returns a constant.
    /// let r = unsafe { remap::sigbus::register(0x3000..0x4000, Arc::new(Never)) }?;
    /// assert!(r.slot() < remap::sigbus::SLOTS);
    /// # Ok::<(), remap::sigbus::SigbusError>(())
    /// ```
    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// Installs the process-wide SIGBUS handler (once) and registers `handler` for the addresses of
/// `range`.
///
/// # Safety
///
/// `handler.on_sigbus` must be async-signal-safe (see [`SigbusHandler`]): it runs in a signal
/// handler that may have interrupted the allocator or a lock holder.
///
/// # Errors
///
/// [`SigbusError::Install`] when `sigaction(2)` fails, [`SigbusError::Full`] when every slot is
/// taken.
pub unsafe fn register(
    range: Range<usize>,
    handler: Arc<dyn SigbusHandler>,
) -> Result<SigbusRegistration, SigbusError> {
    install()?;
    let entry = Box::into_raw(Box::new(Entry { range, handler }));
    for (i, slot) in TABLE.iter().enumerate() {
        if slot
            .entry
            .compare_exchange(ptr::null_mut(), entry, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            // The slot's retired range stays until the slot retires another: reused at once
            // (the first free slot usually is), forgetting it would pass on a late SIGBUS from
            // that range, and the process would die of it.
            return Ok(SigbusRegistration { slot: i });
        }
    }
    // SAFETY: `entry` came from `Box::into_raw` above and was published nowhere.
    drop(unsafe { Box::from_raw(entry) });
    Err(SigbusError::Full)
}

impl Drop for SigbusRegistration {
    fn drop(&mut self) {
        let slot = &TABLE[self.slot];
        let entry = slot.entry.load(Ordering::SeqCst);
        // SAFETY: the entry is ours (this registration put it there, and only its drop takes it
        // out), so it is alive until freed below.
        if let Some(e) = unsafe { entry.as_ref() } {
            slot.retired_start.store(e.range.start, Ordering::SeqCst);
            slot.retired_end.store(e.range.end, Ordering::SeqCst);
        }
        let entry = slot.entry.swap(ptr::null_mut(), Ordering::SeqCst);
        while slot.active.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        if !entry.is_null() {
            // SAFETY: `entry` came from `Box::into_raw` in `register`; it is out of the slot and
            // no handler holds it (`active` is zero after the swap), so we own it again.
            drop(unsafe { Box::from_raw(entry) });
        }
    }
}

fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL)
}

fn install() -> Result<(), SigbusError> {
    let outcome = *INSTALLED.get_or_init(|| {
        // SAFETY: `sigaction` is a plain C struct for which all-zero bytes are a valid value (no
        // handler, empty flags; the mask is set below).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: with a null new action `sigaction(2)` only writes the current action into
        // `old`, a valid, writable `sigaction`.
        if unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), &mut old) } != 0 {
            return Err(last_errno());
        }
        let _ = PREVIOUS.set(old);
        // SAFETY: as above, all-zero is a valid `sigaction`.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_sigbus
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void)
            as libc::sighandler_t;
        // No SA_ONSTACK: see the module docs ("Stack").
        new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: `sigemptyset` requires a valid, writable `sigset_t`: the field of our local.
        unsafe { libc::sigemptyset(&mut new.sa_mask) };
        // SAFETY: `sigaction(2)` requires a valid `sigaction` to read (and none to write).
        // `on_sigbus` has the `SA_SIGINFO` signature and is async-signal-safe (module docs).
        if unsafe { libc::sigaction(libc::SIGBUS, &new, ptr::null_mut()) } != 0 {
            return Err(last_errno());
        }
        Ok(())
    });
    outcome.map_err(SigbusError::Install)
}

/// The handler. A panic cannot unwind out of an `extern "C"` function: it aborts the process.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot, valid for the thread's
    // life; saved here and restored below so the interrupted code sees its own errno.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: `errno_slot` is valid and aligned (above).
    let saved = unsafe { errno_slot.read() };
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO` handler; `si_code` is a
    // plain field, and for SIGBUS `si_addr` is the member of the union that it fills.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // Only a missing page under UFFD_FEATURE_SIGBUS (BUS_ADRERR) can be ours.
    let handled = code == libc::BUS_ADRERR && dispatch(addr);
    // SAFETY: as above.
    unsafe { errno_slot.write(saved) };
    if !handled {
        chain(sig, info, ctx);
    }
}

/// Finds the range holding `addr` and lets its handler answer; else the retired ranges.
fn dispatch(addr: usize) -> bool {
    for slot in &TABLE {
        slot.active.fetch_add(1, Ordering::SeqCst);
        let entry = slot.entry.load(Ordering::SeqCst);
        // SAFETY: a non-null `entry` came from `Box::into_raw` in `register`, and it is freed only
        // after it was swapped out of the slot and `active` dropped to zero; our increment above
        // happened before the load, so it stays alive until our decrement below.
        let hit = unsafe { entry.as_ref() }
            .filter(|e| e.range.contains(&addr))
            .map(|e| e.handler.on_sigbus(addr));
        slot.active.fetch_sub(1, Ordering::SeqCst);
        if let Some(handled) = hit {
            if handled {
                RETIRED_HITS.set((0, 0));
            }
            return handled;
        }
    }
    retired(addr)
}

/// A SIGBUS at `addr` in the range last retired from some slot: raised before its owner
/// unregistered the memory, delivered after. Retry the access (after a `sched_yield`), unless
/// the same address keeps faulting there.
fn retired(addr: usize) -> bool {
    let hit = TABLE.iter().any(|slot| {
        let start = slot.retired_start.load(Ordering::SeqCst);
        (start..slot.retired_end.load(Ordering::SeqCst)).contains(&addr)
    });
    if !hit {
        return false;
    }
    let (last, n) = RETIRED_HITS.get();
    let n = if last == addr { n + 1 } else { 1 };
    if n > RETIRED_RETRIES {
        RETIRED_HITS.set((0, 0));
        return false;
    }
    RETIRED_HITS.set((addr, n));
    rustix::thread::sched_yield();
    true
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Constant(bool);

    impl SigbusHandler for Constant {
        fn on_sigbus(&self, _addr: usize) -> bool {
            self.0
        }
    }

    #[test]
    fn every_slot_can_be_taken_then_the_registry_is_full_until_one_is_retired() {
        // This test binary has no other user of the registry.
        let handler: Arc<dyn SigbusHandler> = Arc::new(Constant(true));
        let registrations: Vec<_> = (0..SLOTS)
            .map(|i| {
                // SAFETY: the handler returns a constant.
                unsafe { register(i * 0x1000..(i + 1) * 0x1000, Arc::clone(&handler)) }.unwrap()
            })
            .collect();
        let mut slots: Vec<_> = registrations.iter().map(SigbusRegistration::slot).collect();
        slots.sort_unstable();
        assert_eq!(slots, (0..SLOTS).collect::<Vec<_>>());
        // SAFETY: as above.
        let full = unsafe { register(0..0x1000, Arc::clone(&handler)) }.unwrap_err();
        assert_eq!(full, SigbusError::Full);
        assert_eq!(full.errno(), Errno::NOSPC);
        // Dispatch finds the range's handler (called directly: no signal needed for that).
        assert!(dispatch(3 * 0x1000 + 8));
        drop(registrations);
        // Retired: the ranges are remembered for late signals, and the handler's Arc released.
        assert_eq!(Arc::strong_count(&handler), 1);
        assert!(retired(5 * 0x1000));
        // SAFETY: as above.
        let again = unsafe { register(100 * 0x1000..101 * 0x1000, handler) }.unwrap();
        assert!(again.slot() < SLOTS);
        // Reusing a slot keeps the range it retired: a late SIGBUS there is still retried.
        let slot = again.slot();
        assert!(
            retired(slot * 0x1000 + 8),
            "slot {slot} forgot its retired range"
        );
    }
}
