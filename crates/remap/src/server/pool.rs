//! [`MovePool`]: a page source that moves recycled pages in with `UFFDIO_MOVE`.

use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

use rustix::thread::futex;

use uffd::{CopyFlags, MoveFlags, RangeError, Uffd};

use super::{Fault, PageSource, Resolution};
use crate::region::{self, Region, RegionError, Thp};

const EMPTY: u8 = 0;
const FREE: u8 = 1;
const BUSY: u8 = 2;

/// What a [`MovePool`] answers when it has no page left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolEmpty {
    /// Resolve with the zero page (`UFFDIO_ZEROPAGE`).
    #[default]
    Zero,
    /// Poison the page (`UFFDIO_POISON`): the faulting thread gets SIGBUS.
    Poison,
}

/// Why a [`MovePool`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Mapping the pool's region failed.
    #[error("mapping the pool")]
    Region(#[from] RegionError),
    /// Creating the pool's userfaultfd failed.
    #[error("creating the pool's userfaultfd")]
    Create(#[from] uffd::CreateError),
    /// Registering the pool's region failed.
    #[error("registering the pool")]
    Register(#[from] uffd::ControlError),
    /// A pool of no pages was asked for.
    #[error("a pool needs at least one page")]
    NoPages,
    /// Every slot of the pool holds a page: there is nowhere to give one back to.
    #[error("the pool is full")]
    Full,
    /// `UFFDIO_MOVE` (give back) or `UFFDIO_COPY` (refill) failed.
    #[error("moving a page into the pool")]
    Move(#[source] RangeError),
}

/// A pool of pages that resolves faults by moving one in (`UFFDIO_MOVE`: no copy, no allocation).
///
/// The pool is a [`Region`] of N page slots plus a lock-free free list (one atomic state per slot:
/// empty, free or in flight). A page moved into the served region is gone from the pool; pages
/// come back with [`give_back`](Self::give_back) (a MOVE from the served region into an empty
/// slot: the served page then reads as missing and faults again) or [`refill`](Self::refill)
/// (fresh zeroed pages). When no page is left the pool answers as [`PoolEmpty`] says.
///
/// Pages keep their contents: a page given back carries what it held into its next fault. The
/// pool's region is registered with the pool's own userfaultfd (a MOVE destination must be
/// registered with the fd that moves), and nothing but the pool touches it.
///
/// The pool's operations only touch atomics and issue ioctls, so it is a
/// [`SignalSafeSource`](super::SignalSafeSource).
///
/// ```
/// use remap::region::Region;
/// use remap::server::{FaultServer, MovePool};
///
/// let pool = MovePool::new(4)?;
/// let server = FaultServer::builder(Region::new(8 * 4096)?, pool).start()?;
/// server.region().write_u8(0, 1); // page 0 moved in from the pool
/// assert_eq!(server.source().available(), 3);
/// server.source().give_back(server.region(), 0)?; // and out again
/// assert_eq!(server.source().available(), 4);
/// let _ = server.region().read_u8(0); // faults again: served from the pool again
/// assert_eq!(server.stats().served_move, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MovePool {
    pub(super) region: Region,
    uffd: Uffd,
    slots: Box<[AtomicU8]>,
    cursor: AtomicUsize,
    available: AtomicUsize,
    empty: PoolEmpty,
    zero: Box<[u8]>,
    /// Bumped whenever an in-flight slot settles; [`give_back`](Self::give_back) waits on it
    /// (a futex) while every empty slot it could use is still in flight.
    settled: AtomicU32,
    /// Threads waiting on `settled`: a settling slot wakes them only when there are some.
    waiters: AtomicU32,
}

impl MovePool {
    /// A pool of `pages` fresh zeroed pages.
    ///
    /// ```
    /// let pool = remap::server::MovePool::new(16)?;
    /// assert_eq!(pool.available(), 16);
    /// # Ok::<(), remap::server::PoolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PoolError::Region`], [`PoolError::Create`], [`PoolError::Register`], or
    /// [`PoolError::Move`] if filling a slot fails.
    pub fn new(pages: usize) -> Result<Self, PoolError> {
        let page = rustix::param::page_size();
        let region = Region::builder(pages.max(1) * page)
            .thp(Thp::NoHuge)
            .build()?;
        let pool = Self::with_state(region, EMPTY)?;
        pool.refill(pool.capacity())?;
        Ok(pool)
    }

    /// A pool made of the pages of `region`, with their contents (each page is touched first so
    /// it is present and exclusive). Slot `i` is page `i`.
    ///
    /// ```
    /// use remap::region::Region;
    ///
    /// let region = Region::new(2 * 4096)?;
    /// region.fill_pattern(3);
    /// let pool = remap::server::MovePool::from_region(region)?;
    /// assert_eq!(pool.available(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PoolError::Create`], [`PoolError::Register`].
    pub fn from_region(region: Region) -> Result<Self, PoolError> {
        region.touch(0..region.len())?;
        Self::with_state(region, FREE)
    }

    fn with_state(region: Region, state: u8) -> Result<Self, PoolError> {
        let uffd = Uffd::builder().non_blocking(true).create()?;
        region::register_range(&uffd, &region, 0, region.len(), true)?;
        let n = region.pages();
        Ok(Self {
            slots: (0..n).map(|_| AtomicU8::new(state)).collect(),
            cursor: AtomicUsize::new(0),
            available: AtomicUsize::new(if state == FREE { n } else { 0 }),
            empty: PoolEmpty::Zero,
            zero: vec![0u8; region.page_size()].into_boxed_slice(),
            settled: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            uffd,
            region,
        })
    }

    /// What to answer when the pool is empty (default [`PoolEmpty::Zero`]).
    ///
    /// ```
    /// use remap::server::{MovePool, PoolEmpty};
    /// let _pool = MovePool::new(1)?.when_empty(PoolEmpty::Poison);
    /// # Ok::<(), remap::server::PoolError>(())
    /// ```
    pub fn when_empty(mut self, empty: PoolEmpty) -> Self {
        self.empty = empty;
        self
    }

    /// Pages the pool can hand out now.
    ///
    /// ```
    /// assert_eq!(remap::server::MovePool::new(2)?.available(), 2);
    /// # Ok::<(), remap::server::PoolError>(())
    /// ```
    pub fn available(&self) -> usize {
        self.available.load(Ordering::Relaxed)
    }

    /// Number of slots.
    ///
    /// ```
    /// assert_eq!(remap::server::MovePool::new(3)?.capacity(), 3);
    /// # Ok::<(), remap::server::PoolError>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Claims a slot in state `from`, starting the scan at the cursor.
    fn claim(&self, from: u8) -> Option<usize> {
        let n = self.slots.len();
        let start = self.cursor.load(Ordering::Relaxed);
        (0..n).map(|i| (start + i) % n).find(|&s| {
            self.slots[s]
                .compare_exchange(from, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Puts fresh zeroed pages (`UFFDIO_COPY`) into up to `n` empty slots; returns how many.
    ///
    /// ```
    /// let pool = remap::server::MovePool::new(2)?;
    /// assert_eq!(pool.refill(5)?, 0); // already full
    /// # Ok::<(), remap::server::PoolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PoolError::Move`] if `UFFDIO_COPY` fails (the slot stays empty).
    pub fn refill(&self, n: usize) -> Result<usize, PoolError> {
        let page = self.region.page_size();
        let mut filled = 0;
        while filled < n {
            let Some(slot) = self.claim(EMPTY) else { break };
            match region::copy_from_slice(
                &self.uffd,
                &self.region,
                slot * page,
                &self.zero,
                CopyFlags::DONTWAKE,
            ) {
                Ok(_) | Err(RangeError::Exists { .. }) => {
                    self.release(slot, FREE);
                    filled += 1;
                }
                Err(err) => {
                    self.release(slot, EMPTY);
                    return Err(PoolError::Move(err));
                }
            }
        }
        Ok(filled)
    }

    /// Moves the page at `offset` of `from` (typically the served region,
    /// [`FaultServer::region`](super::FaultServer::region)) back into an empty slot. The page
    /// must be present and mapped only there; `from` at `offset` then reads as missing, so in a
    /// served region its next access faults and is served again.
    ///
    /// # Errors
    ///
    /// [`PoolError::Full`] when no slot is empty (after waiting for slots whose page is being
    /// moved out right now to settle), [`PoolError::Move`] when the MOVE fails
    /// (`Missing` for a page not present, `Busy` for a shared one).
    ///
    /// # Panics
    ///
    /// If `offset` is not a page-aligned offset inside `from`.
    pub fn give_back(&self, from: &Region, offset: usize) -> Result<(), PoolError> {
        let page = self.region.page_size();
        let slot = self.claim_empty().ok_or(PoolError::Full)?;
        match region::move_between(
            &self.uffd,
            &self.region,
            slot * page,
            from,
            offset,
            page,
            MoveFlags::DONTWAKE,
        ) {
            Ok(_) => {
                self.release(slot, FREE);
                Ok(())
            }
            Err(err) => {
                self.release(slot, EMPTY);
                Err(PoolError::Move(err))
            }
        }
    }

    /// Claims an empty slot. A slot whose page a handler is moving out right now is in flight
    /// until the handler hears back from the kernel, which can be just after the faulting thread
    /// was woken: while such slots exist, block (on a futex, woken by the slot settling) rather
    /// than call the pool full.
    fn claim_empty(&self) -> Option<usize> {
        loop {
            let seen = self.settled.load(Ordering::SeqCst);
            if let Some(slot) = self.claim(EMPTY) {
                return Some(slot);
            }
            if !self.slots.iter().any(|s| s.load(Ordering::SeqCst) == BUSY) {
                return None;
            }
            self.waiters.fetch_add(1, Ordering::SeqCst);
            // Sleeps only if no slot settled since `seen` (else returns EAGAIN at once). The
            // timeout only guards against a handler that died between claim and settle.
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            let _ = futex::wait(&self.settled, futex::Flags::PRIVATE, seen, Some(&timeout));
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Settles a claimed slot in `state`. Async-signal-safe: atomics, and a `futex(2)` wake only
    /// when [`claim_empty`](Self::claim_empty) has a waiter.
    fn release(&self, slot: usize, state: u8) {
        self.slots[slot].store(state, Ordering::SeqCst);
        if state == FREE {
            self.available.fetch_add(1, Ordering::Relaxed);
        }
        self.settled.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _ = futex::wake(&self.settled, futex::Flags::PRIVATE, u32::MAX);
        }
    }
}

impl PageSource for MovePool {
    fn resolve<'a>(&'a self, _fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        match self.claim(FREE) {
            Some(slot) => {
                self.available.fetch_sub(1, Ordering::Relaxed);
                self.cursor.store(slot + 1, Ordering::Relaxed);
                Resolution::Move {
                    from: &self.region,
                    offset: slot * self.region.page_size(),
                }
            }
            None => match self.empty {
                PoolEmpty::Zero => Resolution::Zero,
                PoolEmpty::Poison => Resolution::Poison,
            },
        }
    }

    fn move_done(&self, from_offset: usize, used: bool) {
        let slot = from_offset / self.region.page_size();
        self.release(slot, if used { EMPTY } else { FREE });
    }
}
