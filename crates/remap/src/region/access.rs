//! Content access: reading and writing a region's bytes as relaxed atomic 8-byte words (the
//! raw-memory rule of the [module docs](crate::region#safety)).

use std::sync::atomic::{AtomicU64, Ordering};

use super::Region;

/// Loads the 8-byte word at `p` (relaxed atomic).
///
/// # Safety
///
/// `p` must be 8-byte aligned and lie, with the 7 bytes after it, inside a live region mapping
/// (readable and writable) for the duration of the call, and every concurrent access to those
/// bytes from Rust must be an 8-byte atomic access (all of this module's are).
#[inline(always)]
unsafe fn load_word(p: *mut u8) -> u64 {
    // SAFETY: `AtomicU64::from_ptr` requires `p` aligned to 8, valid for reads and writes for the
    // reference's lifetime, and no non-atomic or different-size access racing with atomic
    // accesses through it; the caller guarantees all three, and the reference lives for this one
    // load only.
    unsafe { AtomicU64::from_ptr(p.cast::<u64>()) }.load(Ordering::Relaxed)
}

/// Stores `v` to the 8-byte word at `p` (relaxed atomic).
///
/// # Safety
///
/// As for [`load_word`].
#[inline(always)]
unsafe fn store_word(p: *mut u8, v: u64) {
    // SAFETY: as in `load_word`; the caller guarantees alignment, validity for writes and
    // same-size atomic access by everyone else; the reference lives for this one store only.
    unsafe { AtomicU64::from_ptr(p.cast::<u64>()) }.store(v, Ordering::Relaxed)
}

/// Replaces the bytes `bytes` of the 8-byte word at `p` starting at byte `at` (in memory order),
/// keeping the others: a compare-and-swap loop, so bytes of the word that other threads write
/// concurrently are not lost.
///
/// The first attempt assumes the word is zero, so the first access is the locked
/// compare-and-swap itself: on a missing page that is a write fault, as a plain store would
/// take, not a read fault followed by a write fault.
///
/// # Safety
///
/// As for [`load_word`]; also `at + bytes.len() <= 8`.
#[inline]
unsafe fn merge_word(p: *mut u8, at: usize, bytes: &[u8]) {
    let (mut value, mut mask) = ([0u8; 8], [0u8; 8]);
    value[at..at + bytes.len()].copy_from_slice(bytes);
    mask[at..at + bytes.len()].fill(0xff);
    let (value, mask) = (u64::from_ne_bytes(value), u64::from_ne_bytes(mask));
    // SAFETY: as in `load_word`; the caller guarantees alignment, validity and same-size atomic
    // access by everyone else; the reference lives for this loop only.
    let word = unsafe { AtomicU64::from_ptr(p.cast::<u64>()) };
    let mut current = 0;
    loop {
        let new = (current & !mask) | value;
        match word.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

/// Reads bytes `at..at + out.len()` of the 8-byte word at `p` into `out`.
///
/// # Safety
///
/// As for [`load_word`]; also `at + out.len() <= 8`.
#[inline]
unsafe fn load_bytes(p: *mut u8, at: usize, out: &mut [u8]) {
    // SAFETY: forwarded from the caller.
    let word = unsafe { load_word(p) }.to_ne_bytes();
    out.copy_from_slice(&word[at..at + out.len()]);
}

/// The native-endian word of an 8-byte chunk.
#[inline(always)]
fn ne_word(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(chunk);
    u64::from_ne_bytes(bytes)
}

/// Part of a byte range split at word boundaries: `len` bytes starting at byte `at` of the
/// 8-byte word at `word` (for the body, `len` is a multiple of 8 and `at` is 0).
#[derive(Clone, Copy)]
struct Part {
    word: *mut u8,
    at: usize,
    len: usize,
}

impl Region {
    /// The pointer to `off` when `off..off + len` lies inside the region, `None` otherwise.
    ///
    /// Never panics, allocates or formats: the fault-resolution helpers call it from a signal
    /// handler.
    #[inline]
    pub(crate) fn range_ptr(&self, off: usize, len: usize) -> Option<*mut u8> {
        let end = off.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: `add` requires the result to stay inside the same allocation (or one past it);
        // `off <= end <= self.len`, and the mapping is `self.len` bytes long.
        Some(unsafe { self.ptr.as_ptr().add(off) })
    }

    /// [`range_ptr`](Self::range_ptr) for the page-granular ioctls: also `None` unless `off` and
    /// `len` are multiples of the page size. Never panics. (`pub(crate)`: [`PageRange`](super::PageRange)'s constructors are built on it.)
    #[inline]
    pub(crate) fn page_range_ptr(&self, off: usize, len: usize) -> Option<*mut u8> {
        // A mask, not `%`: the page size is a power of two (checked when the region was made),
        // and this runs twice per MOVE and per served fault, where four 64-bit divisions cost
        // more than the rest of the mover's fast path.
        let mask = self.page_size - 1;
        if (off | len) & mask != 0 {
            return None;
        }
        self.range_ptr(off, len)
    }

    /// Panics unless `off..off + len` lies inside the region and `off` is a multiple of `align`;
    /// returns the pointer to `off`.
    #[track_caller]
    pub(super) fn at(&self, off: usize, len: usize, align: usize) -> *mut u8 {
        let Some(p) = self.range_ptr(off, len) else {
            panic!(
                "offset {off:#x} + {len:#x} bytes is outside the region of {:#x} bytes",
                self.len
            );
        };
        assert!(
            off % align == 0,
            "offset {off:#x} is not {align}-byte aligned"
        );
        p
    }

    /// The word containing byte `off` (the region start is page-aligned, so word boundaries are
    /// multiples of 8 from it) and the byte's index in it.
    #[inline(always)]
    fn word_of(&self, p: *mut u8, off: usize) -> (*mut u8, usize) {
        let at = off % 8;
        (p.wrapping_sub(at), at)
    }

    /// Reads the byte at `off` (a relaxed atomic load of the 8-byte word containing it).
    ///
    /// # Panics
    ///
    /// If `off` is outside the region.
    #[track_caller]
    pub fn read_u8(&self, off: usize) -> u8 {
        let (word, at) = self.word_of(self.at(off, 1, 1), off);
        let mut byte = [0u8];
        // SAFETY: `load_bytes` requires an 8-byte aligned word inside a live region mapping,
        // accessed by everyone else only with 8-byte atomics, and `at + 1 <= 8`. The byte is
        // inside the region (checked by `at`); its word starts at a multiple of 8 from the
        // page-aligned region start, so it is aligned and, since the region length is a page
        // multiple, wholly inside; this module accesses region memory only with 8-byte atomics.
        unsafe { load_bytes(word, at, &mut byte) };
        byte[0]
    }

    /// Writes the byte `v` at `off`, leaving the other bytes of its 8-byte word as they are,
    /// even when other threads write them concurrently (a compare-and-swap on that word).
    ///
    /// # Panics
    ///
    /// If `off` is outside the region.
    #[track_caller]
    pub fn write_u8(&self, off: usize, v: u8) {
        let (word, at) = self.word_of(self.at(off, 1, 1), off);
        // SAFETY: `merge_word` requires what `read_u8` establishes for its `load_bytes` (same
        // reasoning) and `at + 1 <= 8`.
        unsafe { merge_word(word, at, &[v]) }
    }

    /// Reads the native-endian `u64` at `off` (one relaxed atomic load: never torn).
    ///
    /// # Panics
    ///
    /// If `off` is not 8-byte aligned or `off + 8` exceeds the region.
    #[track_caller]
    pub fn read_u64(&self, off: usize) -> u64 {
        let p = self.at(off, 8, 8);
        // SAFETY: `load_word` requires an 8-byte aligned word inside a live region mapping that
        // everyone else accesses with 8-byte atomics: `at` checked bounds and alignment (the
        // region start is page-aligned), and this module only uses 8-byte atomics on it.
        unsafe { load_word(p) }
    }

    /// Writes the native-endian `u64` `v` at `off` (one relaxed atomic store).
    ///
    /// # Panics
    ///
    /// If `off` is not 8-byte aligned or `off + 8` exceeds the region.
    #[track_caller]
    pub fn write_u64(&self, off: usize, v: u64) {
        let p = self.at(off, 8, 8);
        // SAFETY: as in `read_u64`, for `store_word`.
        unsafe { store_word(p, v) }
    }

    /// Copies `src` into the region at `off`.
    ///
    /// Word by word: relaxed atomic 8-byte stores, with the partial words at an unaligned head or
    /// tail merged by compare-and-swap (see the [module docs](crate::region#safety)), so concurrent use
    /// from several threads is sound; each 8-byte word ends up with one writer's bytes for the
    /// bytes that writer covered. If the kernel moves or zaps a page of the destination
    /// concurrently, the words written to that page before the move went with it.
    ///
    /// ```
    /// let region = remap::region::Region::new(4096)?;
    /// region.copy_in(100, b"hello");
    /// let mut out = [0u8; 5];
    /// region.copy_out(100, &mut out);
    /// assert_eq!(&out, b"hello");
    /// # Ok::<(), remap::region::RegionError>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If `off + src.len()` exceeds the region.
    #[track_caller]
    pub fn copy_in(&self, off: usize, src: &[u8]) {
        let start = self.at(off, src.len(), 1);
        let (head, body, tail) = self.split_words(start, off, src.len());
        let (src_head, rest) = src.split_at(head.len);
        let (src_body, src_tail) = rest.split_at(body.len);
        // SAFETY (all three blocks below): `merge_word` and `store_word` require 8-byte aligned
        // words inside a live region mapping, accessed by everyone else only with 8-byte
        // atomics, and `merge_word` bytes within the word. `split_words` returns aligned words
        // covering exactly `off..off + src.len()`, which `at` checked lies inside the region;
        // words are wholly inside since the region start and length are page multiples; this
        // module accesses region memory only with 8-byte atomics.
        if head.len > 0 {
            // SAFETY: see above.
            unsafe { merge_word(head.word, head.at, src_head) };
        }
        let mut p = body.word;
        for chunk in src_body.chunks_exact(8) {
            // SAFETY: see above; `p` advances by 8 over the body words.
            unsafe { store_word(p, ne_word(chunk)) };
            p = p.wrapping_add(8);
        }
        if tail.len > 0 {
            // SAFETY: see above.
            unsafe { merge_word(tail.word, 0, src_tail) };
        }
    }

    /// Splits `off..off + len` (at `start`, checked inside the region) into a partial head word,
    /// whole aligned body words and a partial tail word.
    #[inline(always)]
    fn split_words(&self, start: *mut u8, off: usize, len: usize) -> (Part, Part, Part) {
        let (head_word, at) = self.word_of(start, off);
        let head_len = if at == 0 { 0 } else { (8 - at).min(len) };
        let body_len = (len - head_len) / 8 * 8;
        let tail_len = len - head_len - body_len;
        let body = start.wrapping_add(head_len);
        (
            Part {
                word: head_word,
                at,
                len: head_len,
            },
            Part {
                word: body,
                at: 0,
                len: body_len,
            },
            Part {
                word: body.wrapping_add(body_len),
                at: 0,
                len: tail_len,
            },
        )
    }

    /// Copies `dst.len()` bytes of the region starting at `off` into `dst`.
    ///
    /// Word by word, relaxed atomic 8-byte loads, like [`copy_in`](Self::copy_in). Each aligned
    /// word read is a value some access stored whole; different words may come from different
    /// moments. If pages of the range are moved out concurrently, each word read is either its
    /// old value or what the address holds afterwards (zero, or the page a fault handler
    /// installs).
    ///
    /// # Panics
    ///
    /// If `off + dst.len()` exceeds the region.
    #[track_caller]
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) {
        let start = self.at(off, dst.len(), 1);
        let (head, body, tail) = self.split_words(start, off, dst.len());
        let (dst_head, rest) = dst.split_at_mut(head.len);
        let (dst_body, dst_tail) = rest.split_at_mut(body.len);
        // SAFETY (all three blocks below): `load_bytes` and `load_word` require what `copy_in`
        // establishes for its stores (same reasoning: aligned words covering exactly the checked
        // range, wholly inside the region, 8-byte atomics only).
        if head.len > 0 {
            // SAFETY: see above.
            unsafe { load_bytes(head.word, head.at, dst_head) };
        }
        let mut p = body.word;
        for chunk in dst_body.chunks_exact_mut(8) {
            // SAFETY: see above; `p` advances by 8 over the body words.
            chunk.copy_from_slice(&unsafe { load_word(p) }.to_ne_bytes());
            p = p.wrapping_add(8);
        }
        if tail.len > 0 {
            // SAFETY: see above.
            unsafe { load_bytes(tail.word, 0, dst_tail) };
        }
    }

    /// Sets `len` bytes starting at `off` to `byte`: relaxed atomic 8-byte stores, partial words
    /// at the ends merged by compare-and-swap, like [`copy_in`](Self::copy_in).
    ///
    /// # Panics
    ///
    /// If `off + len` exceeds the region.
    #[track_caller]
    pub fn fill(&self, off: usize, len: usize, byte: u8) {
        let start = self.at(off, len, 1);
        let (head, body, tail) = self.split_words(start, off, len);
        let bytes = [byte; 8];
        let word = u64::from_ne_bytes(bytes);
        // SAFETY (all three blocks below): as in `copy_in`.
        if head.len > 0 {
            // SAFETY: see above.
            unsafe { merge_word(head.word, head.at, &bytes[..head.len]) };
        }
        let mut p = body.word;
        for _ in 0..body.len / 8 {
            // SAFETY: see above; `p` advances by 8 over the body words.
            unsafe { store_word(p, word) };
            p = p.wrapping_add(8);
        }
        if tail.len > 0 {
            // SAFETY: see above.
            unsafe { merge_word(tail.word, 0, &bytes[..tail.len]) };
        }
    }
}
