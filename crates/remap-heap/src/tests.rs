//! The fill against a plain reference compaction, on random heaps (objects straddling pages,
//! dead runs across chunks, references in every direction).

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use crate::fill::fill_page;
use crate::mark::mark;
use crate::object::{header, header_size, RESERVED_WORDS};
use crate::plan::Plan;
use crate::shape::{DataWords, Shape, ShapeTable};

const PAGE: usize = 4096;
const PW: usize = PAGE / 8;

fn shapes() -> Arc<ShapeTable> {
    let mut t = ShapeTable::new();
    let any = None;
    t.add(Shape {
        name: "small",
        refs: vec![any, any],
        data: DataWords::Fixed(1),
    });
    t.add(Shape {
        name: "blob",
        refs: vec![],
        data: DataWords::AtLeast(0),
    });
    t.add(Shape {
        name: "wide",
        refs: vec![any; 6],
        data: DataWords::AtLeast(0),
    });
    Arc::new(t)
}

/// A heap of `objs` (shape index, data words), each reference to a random earlier or later
/// object; returns the heap, the object starts and the top.
fn build(objs: &[(u32, usize, Vec<usize>)], words: usize) -> (Vec<u64>, Vec<usize>, usize) {
    let t = shapes();
    let mut starts = Vec::new();
    let mut at = RESERVED_WORDS;
    for (shape, data, _) in objs {
        let sh = t.get(crate::shape::ShapeId(*shape)).unwrap();
        let data = if *shape == 1 { 1 } else { *data };
        starts.push(at);
        at += sh.size_for(data);
    }
    let mut heap = vec![0u64; words];
    for (i, (shape, data, targets)) in objs.iter().enumerate() {
        let s = starts[i];
        let sh = t.get(crate::shape::ShapeId(*shape)).unwrap();
        let refs = sh.ref_count();
        let data = if *shape == 1 { 1 } else { *data };
        heap[s] = header(crate::shape::ShapeId(*shape), sh.size_for(data));
        heap[s + 1] = i as u64 + 1000;
        for f in 0..refs {
            heap[s + 2 + f] = targets
                .get(f)
                .map_or(0, |&t| starts[t % starts.len()] as u64);
        }
        for d in 0..data {
            heap[s + 2 + refs + d] = (i * 31 + d) as u64 | 1 << 40;
        }
    }
    (heap, starts, at)
}

/// The plain compaction: copy the marked objects in address order, references through a map.
fn reference_compaction(heap: &[u64], live: &[usize], words: usize) -> Vec<u64> {
    let t = shapes();
    let mut new = HashMap::new();
    let mut at = RESERVED_WORDS;
    for &s in live {
        new.insert(s as u64, at as u64);
        at += header_size(heap[s]);
    }
    let mut out = vec![0u64; words];
    for &s in live {
        let d = new[&(s as u64)] as usize;
        let size = header_size(heap[s]);
        let refs = t
            .get(crate::object::header_shape(heap[s]))
            .unwrap()
            .ref_count();
        out[d..d + size].copy_from_slice(&heap[s..s + size]);
        for f in 0..refs {
            let r = heap[s + 2 + f];
            out[d + 2 + f] = if r == 0 { 0 } else { new[&r] };
        }
    }
    out
}

struct Checked<'a> {
    heap: &'a [u64],
    words: std::ops::Range<usize>,
    /// Prefetches issued, each checked to be inside `words` like a read.
    prefetches: std::cell::Cell<usize>,
}

impl<'a> Checked<'a> {
    fn new(heap: &'a [u64], words: std::ops::Range<usize>) -> Self {
        Checked {
            heap,
            words,
            prefetches: std::cell::Cell::new(0),
        }
    }
}

impl crate::mark::SourceWords for Checked<'_> {
    fn read_word(&self, word: usize) -> u64 {
        assert!(
            self.words.contains(&word),
            "read of word {word:#x} outside {:?}",
            self.words
        );
        self.heap[word]
    }

    fn prefetch_word(&self, word: usize) {
        assert!(
            self.words.contains(&word),
            "prefetch of word {word:#x} outside {:?}",
            self.words
        );
        self.prefetches.set(self.prefetches.get() + 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn fill_matches_the_reference_compaction(
        objs in prop::collection::vec((0u32..4, 0usize..600, prop::collection::vec(0usize..1000, 0..6)), 1..120),
        roots in prop::collection::vec(0usize..1000, 1..6),
    ) {
        let words = 256 * PW;
        let (heap, starts, top) = build(&objs, words);
        let root_words: Vec<u64> = roots.iter().map(|r| starts[r % starts.len()] as u64).collect();
        let marks = mark(&heap, &shapes(), root_words.iter().copied(), words, top).unwrap();
        let mut live: Vec<usize> = starts.iter().copied().filter(|&s| marks.begin.get(s)).collect();
        live.sort_unstable();
        let expected = reference_compaction(&heap, &live, words);
        let plan = Plan::new(marks, PAGE, shapes());
        let mut got = vec![0xdead_beefu64; words];
        for p in 0..words / PW {
            // The fill reads nothing outside `reads(p)` (the engine enforces it too).
            let r = plan.reads(p);
            let checked = Checked::new(&heap, r.start * PW..r.end * PW);
            fill_page(&plan, p, &checked, &mut got[p * PW..(p + 1) * PW]);
            let reads = plan.reads(p);
            if p < plan.pages() {
                prop_assert!(!reads.is_empty() || plan.live_span(p).0 >= plan.live_span(p).1);
            }
        }
        prop_assert_eq!(&got[..], &expected[..]);
        for &r in &root_words {
            let d = plan.forward(r as usize);
            prop_assert_eq!(got[d + 1], heap[r as usize + 1]);
        }
    }
}

#[test]
fn reads_cover_the_straddling_object_s_header() {
    // One blob of 1000 words at word 8 spans pages 0..2; page 1 needs page 0 for its header.
    let objs = vec![(2, 998, vec![])];
    let (heap, starts, top) = build(&objs, 8 * PW);
    let marks = mark(&heap, &shapes(), [starts[0] as u64], 8 * PW, top).unwrap();
    let plan = Plan::new(marks, PAGE, shapes());
    assert_eq!(plan.pages(), 2);
    assert_eq!(plan.reads(0), 0..1);
    assert_eq!(plan.reads(1), 0..2);
    assert_eq!(plan.reads(5), 0..0);
}

#[test]
fn a_page_inside_a_large_object_prefetches_only_its_own_lines_and_the_header() {
    // One blob of the largest size (8 pages): the fill of its last page reads from page 0 (its
    // header is there), but it must prefetch only the header's line and the page's own 64
    // lines, not all 8 pages' (which would make large objects cost quadratic time).
    let data = crate::object::MAX_OBJECT_WORDS - 8;
    let objs = vec![(2, data, vec![])];
    let (heap, starts, top) = build(&objs, 16 * PW);
    let marks = mark(&heap, &shapes(), [starts[0] as u64], 16 * PW, top).unwrap();
    let plan = Plan::new(marks, PAGE, shapes());
    let last = plan.pages() - 1;
    let r = plan.reads(last);
    assert_eq!(
        r.start, 0,
        "the last page's fill reads the header on page 0"
    );
    let checked = Checked::new(&heap, r.start * PW..r.end * PW);
    let mut page = vec![0u64; PW];
    fill_page(&plan, last, &checked, &mut page[..]);
    let prefetches = checked.prefetches.get();
    assert!(
        (1..=PW / 8 + 2).contains(&prefetches),
        "{prefetches} prefetches for one page of a large object"
    );
}
