//! Stop-the-world marking: which objects are reachable from the roots.
//!
//! The result is two bitmaps over the heap's words: `begin` (the first word of every live object)
//! and `live` (every word of every live object). The compaction plan ([`crate::plan`]) turns
//! them into new addresses; the words of dead objects simply have no bits.

use std::time::{Duration, Instant};

use crate::bitmap::Bitmap;
use crate::object::{header_shape, header_size, HEADER_WORDS, RESERVED_WORDS};
use crate::shape::ShapeTable;

/// Reads heap words by index: the heap region before a flip, or from-space during a cycle.
pub trait SourceWords {
    /// The word at heap word index `word`.
    fn read_word(&self, word: usize) -> u64;

    /// A hint that `word` will be read soon (start loading its cache line); never faults, and
    /// a word out of range is ignored. The default does nothing.
    #[inline]
    fn prefetch_word(&self, word: usize) {
        let _ = word;
    }
}

impl SourceWords for [u64] {
    #[inline]
    fn read_word(&self, word: usize) -> u64 {
        self[word]
    }

    #[inline]
    fn prefetch_word(&self, word: usize) {
        if let Some(w) = self.get(word) {
            remap_compact::prefetch(std::ptr::from_ref(w).cast());
        }
    }
}

impl SourceWords for Vec<u64> {
    #[inline]
    fn read_word(&self, word: usize) -> u64 {
        self[word]
    }

    #[inline]
    fn prefetch_word(&self, word: usize) {
        self.as_slice().prefetch_word(word);
    }
}

/// What marking found wrong: the heap is corrupt (a compaction bug or injected corruption).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkError {
    /// A reference outside the allocated part of the heap.
    #[error("reference {target:#x} (from word {from:#x}) is outside the allocated heap 0x{RESERVED_WORDS:x}..{top:#x}")]
    OutOfHeap {
        /// The word holding the reference (0 for a root).
        from: usize,
        /// The reference.
        target: u64,
        /// The allocation top, in words.
        top: usize,
    },
    /// A reference to a word that does not hold a valid header.
    #[error("word {word:#x} holds {header:#x}, not a header of a known shape and size")]
    BadHeader {
        /// The word.
        word: usize,
        /// What it holds.
        header: u64,
    },
}

/// The live objects found by [`mark`].
#[derive(Debug, Clone)]
pub struct Marks {
    /// The first word of every live object.
    pub begin: Bitmap,
    /// Every word of every live object.
    pub live: Bitmap,
    /// Live objects.
    pub objects: usize,
    /// Live words (header included).
    pub live_words: usize,
    /// The allocation top the marker saw, in words.
    pub top: usize,
    /// How long marking took.
    pub elapsed: Duration,
}

/// Marks every object reachable from `roots` in the heap words `RESERVED_WORDS..top` of `src`,
/// with an explicit stack (no recursion), checking every header against `shapes`.
///
/// # Errors
///
/// [`MarkError`] at the first reference outside the heap or to something that is not an object.
pub fn mark(
    src: &(impl SourceWords + ?Sized),
    shapes: &ShapeTable,
    roots: impl IntoIterator<Item = u64>,
    heap_words: usize,
    top: usize,
) -> Result<Marks, MarkError> {
    let started = Instant::now();
    let mut begin = Bitmap::new(heap_words);
    let mut live = Bitmap::new(heap_words);
    let mut stack: Vec<(usize, u64)> = roots
        .into_iter()
        .filter(|&r| r != 0)
        .map(|r| (0, r))
        .collect();
    let (mut objects, mut live_words) = (0, 0);
    while let Some((from, target)) = stack.pop() {
        let w = usize::try_from(target).unwrap_or(usize::MAX);
        if w < RESERVED_WORDS || w >= top {
            return Err(MarkError::OutOfHeap { from, target, top });
        }
        if begin.get(w) {
            continue;
        }
        let h = src.read_word(w);
        let size = header_size(h);
        let shape = match shapes.get(header_shape(h)) {
            Some(s) if s.allows_size(size) && w + size <= top => s,
            _ => return Err(MarkError::BadHeader { word: w, header: h }),
        };
        begin.set(w);
        live.set_range(w, w + size);
        objects += 1;
        live_words += size;
        for f in 0..shape.ref_count() {
            let at = w + HEADER_WORDS + f;
            let r = src.read_word(at);
            if r != 0 {
                stack.push((at, r));
            }
        }
    }
    Ok(Marks {
        begin,
        live,
        objects,
        live_words,
        top,
        elapsed: started.elapsed(),
    })
}
