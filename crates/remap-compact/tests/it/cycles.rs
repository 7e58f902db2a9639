//! Ten cycles in a row on one heap, with mutators: contents right after each (checked against a
//! model of the heap), and resident memory back to its baseline (no from-space page leaked).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use remap_compact::{Engine, FlipMethod};
use test_support::{require, Need};

use crate::child;
use crate::common::{anon_rss, heap, page, pattern, Synthetic};
use crate::matrix::publication;

pub(crate) fn ten_cycles_child(publication_name: &str, mode: &str) {
    let sigbus = mode == "sigbus";
    let heap_pages = 1024;
    let size = page();
    let words = size / 8;
    let engine = Engine::builder(heap(heap_pages, true))
        .publication(publication(publication_name))
        .flip(if mode == "moveflip" {
            FlipMethod::Move
        } else {
            FlipMethod::Mremap
        })
        .batch_pages(128)
        .build()
        .unwrap();
    // The model: every word of the heap.
    let mut model: Vec<u64> = (0..heap_pages * words)
        .map(|k| pattern(k / words, k % words))
        .collect();
    // Both model buffers exist before the baseline is taken, so the test's own allocations do
    // not move resident memory.
    let mut next: Vec<u64> = vec![0; heap_pages * words];
    next.fill(1);
    let baseline = anon_rss();
    for cycle in 1..=10 {
        let plan = Arc::new(Synthetic::new(1, heap_pages));
        let c = if sigbus {
            engine.flip_sigbus(Arc::clone(&plan)).unwrap()
        } else {
            engine.flip(Arc::clone(&plan)).unwrap()
        };
        let stop = AtomicBool::new(false);
        // Two readers check what they see against the model's next state.
        let next_of = |i: usize, w: usize| plan.expected(i, w, |j, w| model[j * words + w]);
        let stats = std::thread::scope(|s| {
            for m in 0..2u64 {
                let (engine, plan, stop, next) = (&engine, &plan, &stop, &next_of);
                s.spawn(move || {
                    let mut rng = crate::common::Rng(0xabcd + m + cycle);
                    while !stop.load(Ordering::Relaxed) {
                        let (i, w) = (rng.below(plan.pages), rng.below(words));
                        assert_eq!(engine.heap().read_u64(i * size + w * 8), next(i, w));
                    }
                });
            }
            let stats = c.compact().unwrap();
            stop.store(true, Ordering::Relaxed);
            stats
        });
        for (k, slot) in next.iter_mut().enumerate() {
            let (i, w) = (k / words, k % words);
            *slot = if i < plan.pages {
                plan.expected(i, w, |j, w| model[j * words + w])
            } else {
                0
            };
        }
        for (k, want) in next.iter().enumerate() {
            assert_eq!(
                engine.heap().read_u64(k * 8),
                *want,
                "cycle {cycle}: word {k}"
            );
        }
        std::mem::swap(&mut model, &mut next);
        plan.assert_each_filled_once();
        assert_eq!(stats.cycle, cycle);
        assert_eq!(stats.published(), plan.pages as u64);
        let rss = anon_rss();
        println!(
            "cycle {cycle}: flip pause {:?}, compaction {:?} wall {:?} cpu, rss {} KiB (baseline {} KiB), released {} KiB in {} calls",
            stats.flip_pause,
            stats.compaction_wall,
            stats.compaction_cpu,
            rss / 1024,
            baseline / 1024,
            stats.released_bytes / 1024,
            stats.release_calls
        );
        // A leaked from-space would be another 4 MiB resident per cycle.
        assert!(
            rss <= baseline + 2 * 1024 * 1024,
            "cycle {cycle}: resident anonymous memory {rss} above baseline {baseline}"
        );
    }
    assert_eq!(engine.cycles(), 10);
}

#[test]
fn ten_cycles_on_one_heap_move() {
    require!(Need::Move);
    child::run_ok("cycles:move:handler");
    child::run_ok("cycles:move:sigbus");
}

#[test]
fn ten_cycles_on_one_heap_copy_and_single() {
    require!(Need::Move);
    child::run_ok("cycles:copy:handler");
    child::run_ok("cycles:single:sigbus");
}

#[test]
fn ten_cycles_on_one_heap_with_the_move_flip() {
    require!(Need::Move);
    child::run_ok("cycles:move:moveflip");
}
