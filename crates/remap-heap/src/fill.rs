//! The fill: the compacted contents of one to-space page, as a pure function over word accessors.
//!
//! [`fill_page`] writes every word of to-space page `page`: the parts of the live objects that
//! land on it (an object that straddles a page boundary is written in part by each page's fill,
//! each reading the object's header from from-space to know which of its words are references),
//! with every reference rewritten to its target's new address by [`Plan::forward`], and zeros
//! after the last live word. It allocates nothing, takes no lock and never panics on a heap the
//! plan was built from, so it is async-signal-safe and can run in a faulting mutator's SIGBUS
//! handler; it only reads the plan and from-space and only writes the page buffer.

use crate::mark::SourceWords;
use crate::object::{header_shape, header_size, HEADER_WORDS};
use crate::plan::{Corruption, Plan};

/// Where a fill writes: one page of words, indexed from the page's start.
pub trait PageSink<S: SourceWords + ?Sized> {
    /// Writes `v` at word `i` of the page.
    fn write_word(&mut self, i: usize, v: u64);

    /// Copies `n` words of `src` starting at heap word `src_word` to words `i..i + n` of the page
    /// (override with a memcpy when both sides allow it).
    fn copy_words(&mut self, i: usize, src: &S, src_word: usize, n: usize) {
        for k in 0..n {
            self.write_word(i + k, src.read_word(src_word + k));
        }
    }

    /// Zeroes words `i..i + n` of the page.
    fn zero_words(&mut self, i: usize, n: usize) {
        for k in 0..n {
            self.write_word(i + k, 0);
        }
    }
}

impl<S: SourceWords + ?Sized> PageSink<S> for [u64] {
    #[inline]
    fn write_word(&mut self, i: usize, v: u64) {
        self[i] = v;
    }
}

/// Fills to-space page `page` from `src` (the pre-compaction heap, by heap word index) into
/// `dst` (the page's words, `plan.page_words()` of them).
pub fn fill_page<S, D>(plan: &Plan, page: usize, src: &S, dst: &mut D)
where
    S: SourceWords + ?Sized,
    D: PageSink<S> + ?Sized,
{
    let pw = plan.page_words();
    let start = page * pw;
    let (d0, d1) = plan.live_span(page);
    if d0 > start {
        dst.zero_words(0, (d0 - start).min(pw));
    }
    if d0 < d1 {
        fill_live(plan, start, d0, d1, src, dst);
    }
    let zero_from = d1.max(d0).max(start);
    if zero_from < start + pw {
        dst.zero_words(zero_from - start, start + pw - zero_from);
    }
}

/// How many references ahead the fill prefetches their plan entries: enough misses in flight to
/// cover a memory latency (each reference costs a few nanoseconds of work), few enough to stay
/// within the CPU's outstanding-miss buffers.
const FORWARD_AHEAD: usize = 16;

/// Writes the live words landing on to-space words `d0..d1` (of the page starting at `start`):
/// first every run of objects that are adjacent in from-space (they stay adjacent) with one copy,
/// then the reference fields of each object, rewritten.
///
/// The fill is bound by memory latency, not by work: the from-space objects are read once, and
/// every reference looks up the plan at a random place. So it first prefetches every from-space
/// cache line holding a live word it will read, and forwards references through a small ring:
/// a reference's plan entry is prefetched when it is read and used [`FORWARD_AHEAD`] references
/// later, so the misses overlap instead of coming one after another.
fn fill_live<S, D>(plan: &Plan, start: usize, d0: usize, d1: usize, src: &S, dst: &mut D)
where
    S: SourceWords + ?Sized,
    D: PageSink<S> + ?Sized,
{
    let page = start / plan.page_words();
    let first = plan.first_object_of_page(page);
    // The header of the first object (which may start pages earlier, inside a large object),
    // then only the live words landing on this page: never the lines of a large object's
    // earlier pages, which this fill does not read.
    src.prefetch_word(first);
    prefetch_live_lines(
        plan,
        plan.live_start_of_page(page),
        plan.live_end_of_page(page),
        src,
    );
    let first_dest = plan.forward(first);
    // Pass 1: the bytes, one copy per from-space run of live objects.
    let (mut obj, mut dest) = (first, first_dest);
    let mut run: Option<(usize, usize)> = None; // (from-space word, page word) of the run start
    let mut run_end = 0; // from-space word one past the run
    loop {
        let size = header_size(src.read_word(obj));
        let lo = dest.max(d0);
        let hi = (dest + size).min(d1);
        let from = obj + (lo - dest);
        match run {
            Some(_) if from == run_end => {}
            Some((s, at)) => {
                dst.copy_words(at, src, s, run_end - s);
                run = Some((from, lo - start));
            }
            None => run = Some((from, lo - start)),
        }
        run_end = obj + (hi - dest);
        if dest + size >= d1 {
            break;
        }
        dest += size;
        obj = next_object(plan, obj + size);
    }
    if let Some((s, at)) = run {
        dst.copy_words(at, src, s, run_end - s);
    }
    // Pass 2: the references, through the plan, FORWARD_AHEAD of them in flight.
    let mut pending = ForwardRing::new();
    let (mut obj, mut dest) = (first, first_dest);
    loop {
        let h = src.read_word(obj);
        let size = header_size(h);
        let refs = plan
            .shapes
            .get(header_shape(h))
            .map_or(0, |s| s.ref_count());
        let (a, b) = (dest.max(d0) - dest, (dest + size).min(d1) - dest);
        for f in a.max(HEADER_WORDS)..b.min(HEADER_WORDS + refs) {
            let r = src.read_word(obj + f);
            match usize::try_from(r) {
                Ok(0) | Err(_) => {}
                Ok(t) => plan.prefetch_forward(t),
            }
            if let Some((at, old)) = pending.push(dest + f - start, r) {
                dst.write_word(at, forwarded(plan, old));
            }
        }
        let data_lo = a.max(HEADER_WORDS + refs);
        if data_lo < b && plan.take_corruption(Corruption::WrongByte) {
            let v = src.read_word(obj + data_lo);
            dst.write_word(dest + data_lo - start, v ^ 0x10);
        }
        if dest + size >= d1 {
            break;
        }
        dest += size;
        obj = next_object(plan, obj + size);
    }
    while let Some((at, old)) = pending.pop() {
        dst.write_word(at, forwarded(plan, old));
    }
}

/// The first live object at or after from-space word `w`, which must exist.
#[inline]
fn next_object(plan: &Plan, w: usize) -> usize {
    plan.begin
        .next_set(w)
        // Live words remain, so a live object follows (`Plan::new`'s invariant). The fill may
        // run in a signal handler, where a panic is not safe: a broken plan aborts.
        .unwrap_or_else(|| std::process::abort())
}

/// The new value of reference `r`: its target's new address. A reference outside the heap
/// (only in a heap that was corrupt before the cycle, which verification reports) is copied as
/// is rather than panicking in a signal handler.
#[inline]
fn forwarded(plan: &Plan, r: u64) -> u64 {
    let mut new = match usize::try_from(r) {
        Ok(0) => 0,
        Ok(t) if t < plan.live.len() => plan.forward(t) as u64,
        _ => r,
    };
    if r != 0 && plan.take_corruption(Corruption::DanglingRef) {
        new += 1;
    }
    new
}

/// Prefetches every cache line (8 words) holding a live word of from-space words `from..to`: the
/// lines the fill's two passes read, so that their misses overlap. Live words outside the range
/// (the next page's, sharing a line or beyond `reads`) are not prefetched.
#[inline]
fn prefetch_live_lines<S: SourceWords + ?Sized>(plan: &Plan, from: usize, to: usize, src: &S) {
    let mut line = from & !7;
    while line < to {
        let chunk = plan.live.word(line / 64);
        if chunk == 0 {
            line = (line | 63) + 1;
            continue;
        }
        let (lo, hi) = (from.max(line), to.min(line + 8));
        let in_range = (1u64 << (hi - lo)) - 1;
        if (chunk >> (lo % 64)) & in_range != 0 {
            src.prefetch_word(lo);
        }
        line += 8;
    }
}

/// References read but not yet forwarded: (page word, old value), oldest first, at most
/// [`FORWARD_AHEAD`]. A fixed array: the fill allocates nothing (it may run in a signal handler).
struct ForwardRing {
    slots: [(usize, u64); FORWARD_AHEAD],
    head: usize,
    len: usize,
}

impl ForwardRing {
    fn new() -> Self {
        ForwardRing {
            slots: [(0, 0); FORWARD_AHEAD],
            head: 0,
            len: 0,
        }
    }

    /// Adds a reference; once the ring is full, hands back the oldest one.
    #[inline]
    fn push(&mut self, at: usize, r: u64) -> Option<(usize, u64)> {
        let out = if self.len == FORWARD_AHEAD {
            self.pop()
        } else {
            None
        };
        self.slots[(self.head + self.len) % FORWARD_AHEAD] = (at, r);
        self.len += 1;
        out
    }

    /// Takes the oldest reference.
    #[inline]
    fn pop(&mut self) -> Option<(usize, u64)> {
        if self.len == 0 {
            return None;
        }
        let out = self.slots[self.head];
        self.head = (self.head + 1) % FORWARD_AHEAD;
        self.len -= 1;
        Some(out)
    }
}
