//! The physical floor of a compaction: one plain `memcpy` of the live bytes.
//!
//! Whatever publishes the compacted pages, the live bytes must be copied once. [`memcpy_live`]
//! copies the live objects of a plan (the same objects, in the same order, as contiguous runs of
//! live words) from the heap region into an ordinary buffer with `memcpy`, so that the
//! benchmark can print each publication mode's compaction-thread time as a ratio to it.
//!
//! This is the crate's one `unsafe` module: the floor must not go through the word-at-a-time
//! accessors of [`Region`] (relaxed atomic loads the compiler may not vectorise), or it would not
//! be a floor.
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

use remap::Region;

use crate::heap::StopTheWorld;
use crate::plan::Plan;

/// The time a floor copy took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloorTime {
    /// Wall time.
    pub wall: Duration,
    /// The copying thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): on a loaded machine the fair
    /// comparison with the compaction thread's CPU time.
    pub cpu: Duration,
}

/// The calling thread's CPU time.
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Copies every run of live words of `plan` from `region` into `buf` (at least
/// `plan.live_words() * 8` bytes), in address order; returns the time the copies took. The
/// [`StopTheWorld`] guard proves no mutator writes the heap meanwhile.
///
/// # Panics
///
/// If `buf` is too small or the plan does not fit the region.
pub fn memcpy_live(
    _stopped: &StopTheWorld<'_>,
    region: &Region,
    plan: &Plan,
    buf: &mut [u8],
) -> FloorTime {
    assert!(buf.len() >= plan.live_words() * 8, "buffer too small");
    assert!(
        plan.live.len() * 8 <= region.len(),
        "plan larger than the region"
    );
    let src = region.as_ptr();
    let dst = buf.as_mut_ptr();
    let cpu = thread_cpu_time();
    let started = Instant::now();
    let mut out = 0usize;
    let mut run: Option<usize> = None;
    let flush = |s: usize, e: usize, out: &mut usize| {
        // SAFETY: `copy` needs `s..e` inside the region and `*out + (e - s)` words inside
        // `buf`. Runs lie inside the live bitmap, which `memcpy_live` checked is no longer than
        // the region; the runs hold `plan.live_words()` words in all, which `buf` holds. The
        // caller's `StopTheWorld` keeps writers away (see `copy`).
        unsafe { copy(src, s, dst, *out, e - s) };
        *out += e - s;
    };
    for c in 0..plan.live.word_count() {
        let word = plan.live.word(c);
        let mut at = 0u32;
        while at < 64 {
            let rest = word >> at;
            if rest & 1 == 1 {
                run.get_or_insert(c * 64 + at as usize);
                at += rest.trailing_ones();
            } else {
                if let Some(s) = run.take() {
                    flush(s, c * 64 + at as usize, &mut out);
                }
                at += if rest == 0 {
                    64 - at
                } else {
                    rest.trailing_zeros()
                };
            }
        }
    }
    if let Some(s) = run.take() {
        flush(s, plan.live.len(), &mut out);
    }
    let elapsed = FloorTime {
        wall: started.elapsed(),
        cpu: thread_cpu_time().saturating_sub(cpu),
    };
    debug_assert_eq!(out, plan.live_words());
    elapsed
}

/// Copies `words` words from word `from` of the region at `src` to word `to` of the buffer `dst`.
///
/// # Safety
///
/// `src` must be the start of a live mapping holding words `from..from + words`, `dst` a buffer
/// holding words `to..to + words`, the two not overlapping, and nothing may write the source
/// words or move their pages during the call.
#[inline]
unsafe fn copy(src: *mut u8, from: usize, dst: *mut u8, to: usize, words: usize) {
    // SAFETY: `add` and `copy_nonoverlapping` need both ranges inside their allocations and
    // disjoint, and no concurrent writer: all four are this function's own preconditions.
    unsafe {
        std::ptr::copy_nonoverlapping(src.add(from * 8), dst.add(to * 8), words * 8);
    }
}
