//! Every workload with each publication and fault mode, on the engine, mutators running during
//! compaction, verified. Each scenario runs in a child process with a timeout
//! (`test_support::child::run_in_child`: a lost wake-up would otherwise hang the test binary).

use std::time::Duration;

use remap::Region;
use remap_compact::{Engine, Publication};
use remap_heap::collector::CycleOptions;
use remap_heap::engine::{EngineBackend, FaultMode};
use remap_heap::runner::{Session, SessionConfig};
use remap_heap::workload::graph::Graph;
use remap_heap::workload::kv::Cache;
use remap_heap::workload::trees::Trees;
use remap_heap::workload::NewWorkload;
use test_support::{require, Need};

fn run<W: NewWorkload>(publication: Publication, faults: FaultMode) {
    let c = SessionConfig {
        heap_bytes: 8 << 20,
        live_ratio: 0.5,
        mutators: 2,
        seed: 11,
    };
    let region = Region::builder(c.heap_bytes)
        .huge_aligned(true)
        .build()
        .unwrap();
    let engine = Engine::builder(region)
        .publication(publication)
        .build()
        .unwrap();
    let session = Session::<W>::start(&c, engine).unwrap();
    let mut backend = EngineBackend { faults };
    for cycle in 0..2 {
        assert!(
            session.wait_full(Duration::from_secs(60)),
            "cycle {cycle}: never full"
        );
        let r = session
            .cycle(&mut backend, CycleOptions::default())
            .unwrap();
        assert_eq!(r.verified, Ok(()), "cycle {cycle}");
        let stats = r.backend.as_ref().unwrap();
        assert_eq!(stats.pages, r.pages);
        assert_eq!(
            usize::try_from(stats.published()).unwrap(),
            r.pages,
            "every page published once"
        );
        match publication {
            Publication::Copy => assert_eq!(stats.published_move, 0),
            _ => assert!(stats.published_move > 0, "{stats:?}"),
        }
        // Each page was filled once, by the compaction thread or on a fault; which of them
        // wins a page is a race, so only the sum is certain (and no fault fills two pages).
        assert_eq!(
            stats.by_compactor + stats.by_faults(),
            r.pages as u64,
            "{stats:?}"
        );
        assert!(stats.by_faults() <= stats.faults, "{stats:?}");
        match faults {
            FaultMode::Sigbus => assert_eq!(stats.by_handlers, 0),
            FaultMode::Threads => assert_eq!(stats.by_mutators, 0),
        }
    }
    let errors = session.finish();
    assert!(errors.is_empty(), "{errors:?}");
}

/// Runs scenario `name` ("workload/publication/faults").
fn scenario(name: &str) {
    let mut parts = name.split('/');
    let (workload, publication, faults) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let publication = match publication {
        "move" => Publication::Move,
        "move-single" => Publication::MoveSingle,
        _ => Publication::Copy,
    };
    let faults = if faults == "sigbus" {
        FaultMode::Sigbus
    } else {
        FaultMode::Threads
    };
    match workload {
        "trees" => run::<Trees>(publication, faults),
        "kv" => run::<Cache>(publication, faults),
        _ => run::<Graph>(publication, faults),
    }
}

macro_rules! scenarios {
    ($($name:ident: $s:literal,)*) => {$(
        #[test]
        fn $name() {
            require!(Need::Move);
            // A child process with a timeout: a lost wake-up would otherwise hang the binary.
            if test_support::child::run_in_child(Duration::from_secs(240)) {
                return;
            }
            scenario($s);
        }
    )*};
}

scenarios! {
    trees_move_threads: "trees/move/threads",
    trees_move_sigbus: "trees/move/sigbus",
    trees_move_single_threads: "trees/move-single/threads",
    trees_move_single_sigbus: "trees/move-single/sigbus",
    trees_copy_threads: "trees/copy/threads",
    trees_copy_sigbus: "trees/copy/sigbus",
    kv_move_threads: "kv/move/threads",
    kv_move_sigbus: "kv/move/sigbus",
    kv_move_single_threads: "kv/move-single/threads",
    kv_move_single_sigbus: "kv/move-single/sigbus",
    kv_copy_threads: "kv/copy/threads",
    kv_copy_sigbus: "kv/copy/sigbus",
    graph_move_threads: "graph/move/threads",
    graph_move_sigbus: "graph/move/sigbus",
    graph_move_single_threads: "graph/move-single/threads",
    graph_move_single_sigbus: "graph/move-single/sigbus",
    graph_copy_threads: "graph/copy/threads",
    graph_copy_sigbus: "graph/copy/sigbus",
}
