//! 1, 2 and 4 mutator threads reading and writing random pages during a cycle, for each
//! publication and each fault mode: every page's contents right afterwards, every page filled
//! and published exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use remap_compact::{Engine, Publication};
use test_support::{require, Need};

use crate::child;
use crate::common::{heap, mutate, verify, Synthetic};

pub(crate) fn publication(name: &str) -> Publication {
    match name {
        "move" => Publication::Move,
        "single" => Publication::MoveSingle,
        "copy" => Publication::Copy,
        other => panic!("unknown publication {other}"),
    }
}

/// One cycle with `mutators` threads; returns the stats after checking everything.
pub(crate) fn one_cycle(
    publication: Publication,
    sigbus: bool,
    mutators: usize,
    stride: usize,
) -> remap_compact::CycleStats {
    let heap_pages = 1024;
    let engine = Engine::builder(heap(heap_pages, true))
        .publication(publication)
        .handler_threads(2)
        .batch_pages(64)
        .build()
        .unwrap();
    let plan = Arc::new(Synthetic::new(stride, heap_pages));
    let cycle = if sigbus {
        engine.flip_sigbus(Arc::clone(&plan)).unwrap()
    } else {
        engine.flip(Arc::clone(&plan)).unwrap()
    };
    let stop = AtomicBool::new(false);
    let (stats, written) = std::thread::scope(|s| {
        let threads: Vec<_> = (0..mutators)
            .map(|m| {
                let (engine, plan, stop) = (&engine, &plan, &stop);
                s.spawn(move || mutate(engine.heap(), plan, m, 4000, stop))
            })
            .collect();
        let stats = cycle.compact().unwrap();
        stop.store(true, Ordering::Relaxed);
        let written: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (stats, written)
    });
    verify(engine.heap(), &plan, &written);
    plan.assert_each_filled_once();
    let pages = plan.pages as u64;
    assert_eq!(stats.pages as u64, pages);
    assert_eq!(
        stats.by_compactor + stats.by_handlers + stats.by_mutators,
        pages,
        "{stats:?}"
    );
    assert_eq!(
        stats.published(),
        pages,
        "each page published exactly once: {stats:?}"
    );
    match publication {
        Publication::Copy => assert_eq!(stats.published_copy, pages),
        _ => assert_eq!(stats.published_move, pages, "{stats:?}"),
    }
    if sigbus {
        assert_eq!(stats.by_handlers, 0);
    } else {
        assert_eq!(stats.by_mutators, 0);
    }
    if publication == Publication::MoveSingle {
        assert!(stats.ioctls >= pages);
    }
    stats
}

pub(crate) fn child(publication_name: &str, mode: &str) {
    let publication = publication(publication_name);
    let sigbus = mode == "sigbus";
    for mutators in [1, 2, 4] {
        for stride in [1, 2] {
            let stats = one_cycle(publication, sigbus, mutators, stride);
            println!(
                "{publication_name}/{mode} mutators {mutators} stride {stride}: compactor {} faults {} \
                 (handlers {} mutators {}), move {} copy {}, ioctls {} runs {}, recycled {} fresh {}, races {}, \
                 misreported moves {}",
                stats.by_compactor,
                stats.by_faults(),
                stats.by_handlers,
                stats.by_mutators,
                stats.published_move,
                stats.published_copy,
                stats.ioctls,
                stats.runs,
                stats.recycled_buffers,
                stats.fresh_buffers,
                stats.races,
                stats.misreported_moves
            );
            if stride == 2 && publication != Publication::Copy {
                assert!(
                    stats.recycled_buffers > 0,
                    "stride 2 recycles from-space: {stats:?}"
                );
            }
        }
    }
}

macro_rules! matrix_test {
    ($name:ident, $publication:literal, $mode:literal) => {
        #[test]
        fn $name() {
            require!(Need::Move);
            child::run_ok(concat!("matrix:", $publication, ":", $mode));
        }
    };
}

matrix_test!(move_with_handler_threads, "move", "handler");
matrix_test!(move_in_sigbus_mode, "move", "sigbus");
matrix_test!(move_single_with_handler_threads, "single", "handler");
matrix_test!(move_single_in_sigbus_mode, "single", "sigbus");
matrix_test!(copy_with_handler_threads, "copy", "handler");
matrix_test!(copy_in_sigbus_mode, "copy", "sigbus");

/// A THP heap, 2 MiB aligned, compacted by half with 512-page windows: recycled from-space
/// pages are the buffers of the to-space pages at the same index, so whole windows go out as
/// aligned 2 MiB runs (whole-PMD moves where the source is still a huge page).
pub(crate) fn thp_child() {
    let heap_pages = 4096; // 16 MiB
    let region = remap::Region::builder(heap_pages * crate::common::page())
        .huge_aligned(true)
        .thp(remap::Thp::Huge)
        .populate(true)
        .build()
        .unwrap();
    remap::pattern::fill(&region, crate::common::SEED);
    let engine = Engine::builder(region).batch_pages(512).build().unwrap();
    let plan = Arc::new(Synthetic::new(2, heap_pages));
    let stats = engine.run(Arc::clone(&plan)).unwrap();
    verify(engine.heap(), &plan, &[]);
    plan.assert_each_filled_once();
    println!("thp: {stats:?}");
    assert_eq!(stats.published_move, plan.pages as u64);
    assert!(stats.pmd_runs > 0, "no aligned 2 MiB run: {stats:?}");
    assert!(
        stats.ioctls < plan.pages as u64 / 8,
        "runs were not batched: {stats:?}"
    );
}

#[test]
fn thp_heap_publishes_aligned_2mib_runs() {
    require!(Need::Move, Need::Thp);
    child::run_ok("thp");
}
