//! The per-page state words, and the lock-free reserve of recycled from-space pages.
//!
//! # To-space pages
//!
//! One `AtomicU64` per to-space page holds its state (ART's, merged where ART's distinction does
//! not matter here), who claimed it, and where its compacted contents are:
//!
//! ```text
//! Unprocessed --claim--> Processing(by) --fill--> Processed(buf) --> Mapping(buf) --> Mapped
//!                                  \__(fault fillers publish at once)__/
//! ```
//!
//! A claim is a compare-exchange from `Unprocessed`, so exactly one filler fills a page. The
//! compaction thread leaves its pages `Processed` until it publishes their batch; a fault on a
//! `Processed` page moves it to `Mapping` itself (compare-exchange again) and publishes it at
//! once, and the compaction thread's own compare-exchange then fails and it skips the page. Only
//! the thread that moved a page to `Mapping` publishes it: exactly once.
//!
//! # From-space pages
//!
//! One `AtomicU8` per from-space page: `Live` while some to-space page that reads it is not yet
//! filled; then `Free` (kept as the buffer of the to-space page at the same index, which then
//! publishes in place: same offsets, so runs stay contiguous and PMD-aligned), `Stacked` (in the
//! bounded reserve for fault-time fills) or `Surplus` (to be given back); `Buffer` once claimed
//! to hold a page's contents; `Gone` once moved into to-space or given back.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::compactor::Filler;

pub(crate) const UNPROCESSED: u64 = 0;
pub(crate) const PROCESSING: u64 = 1;
pub(crate) const PROCESSED: u64 = 2;
pub(crate) const MAPPING: u64 = 3;
pub(crate) const MAPPED: u64 = 4;

const STATE_MASK: u64 = 0x7;
const OWNER_SHIFT: u32 = 3;
const SPARE_BIT: u64 = 1 << 5;
const INDEX_SHIFT: u32 = 32;

/// Where a page's compacted contents are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buf {
    /// From-space page `n`.
    From(u32),
    /// Spare slot `n` of the engine's buffer mapping.
    Spare(u32),
}

impl Buf {
    /// Whether `next` follows `self` in the same mapping (so the two can go in one ioctl).
    pub(crate) fn is_followed_by(self, next: Buf) -> bool {
        match (self, next) {
            (Buf::From(a), Buf::From(b)) | (Buf::Spare(a), Buf::Spare(b)) => {
                a.checked_add(1) == Some(b)
            }
            _ => false,
        }
    }
}

pub(crate) fn pack(state: u64, owner: Filler, buf: Option<Buf>) -> u64 {
    let owner = match owner {
        Filler::Compactor => 1u64,
        Filler::Handler => 2,
        Filler::Mutator => 3,
    };
    let buf = match buf {
        None => 0,
        Some(Buf::From(n)) => u64::from(n) << INDEX_SHIFT,
        Some(Buf::Spare(n)) => (u64::from(n) << INDEX_SHIFT) | SPARE_BIT,
    };
    state | (owner << OWNER_SHIFT) | buf
}

pub(crate) fn state_of(word: u64) -> u64 {
    word & STATE_MASK
}

pub(crate) fn owner_of(word: u64) -> Option<Filler> {
    match (word >> OWNER_SHIFT) & 0x3 {
        1 => Some(Filler::Compactor),
        2 => Some(Filler::Handler),
        3 => Some(Filler::Mutator),
        _ => None,
    }
}

pub(crate) fn buf_of(word: u64) -> Buf {
    #[allow(clippy::cast_possible_truncation)] // the index was packed from a u32
    let n = (word >> INDEX_SHIFT) as u32;
    if word & SPARE_BIT != 0 {
        Buf::Spare(n)
    } else {
        Buf::From(n)
    }
}

pub(crate) const LIVE: u8 = 0;
pub(crate) const FREE: u8 = 1;
pub(crate) const STACKED: u8 = 2;
pub(crate) const BUFFER: u8 = 3;
pub(crate) const GONE: u8 = 4;
pub(crate) const SURPLUS: u8 = 5;

/// A bounded lock-free stack (Treiber, with an ABA tag in the head word) of from-space page
/// indices: the reserve of recycled pages. Push and pop are a few atomics each, so SIGBUS
/// handlers may use them.
#[derive(Debug)]
pub(crate) struct FreeStack {
    /// Low 32 bits: top index + 1 (0: empty); high 32 bits: a tag bumped on every change.
    head: AtomicU64,
    /// Per page: the index + 1 of the page below it on the stack.
    next: Box<[AtomicU32]>,
    len: AtomicUsize,
}

impl FreeStack {
    pub(crate) fn new(pages: usize) -> Self {
        FreeStack {
            head: AtomicU64::new(0),
            next: (0..pages).map(|_| AtomicU32::new(0)).collect(),
            len: AtomicUsize::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Pushes page `n` (not on the stack now).
    pub(crate) fn push(&self, n: u32) {
        // Counted before it is on the stack, as a pop uncounts it after: `len` may read high for
        // a moment, never below the pages there (a pop between a push and its count would
        // wrap it to `usize::MAX`).
        self.len.fetch_add(1, Ordering::Relaxed);
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            #[allow(clippy::cast_possible_truncation)] // the low half
            self.next[n as usize].store((head & 0xffff_ffff) as u32, Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(n + 1);
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
    }

    /// Pops a page, if any.
    pub(crate) fn pop(&self) -> Option<u32> {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            #[allow(clippy::cast_possible_truncation)] // the low half
            let top = (head & 0xffff_ffff) as u32;
            if top == 0 {
                return None;
            }
            let below = u64::from(self.next[(top - 1) as usize].load(Ordering::Relaxed));
            let new = ((head >> 32).wrapping_add(1) << 32) | below;
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    return Some(top - 1);
                }
                Err(h) => head = h,
            }
        }
    }
}

#[cfg(test)]
mod tests;
