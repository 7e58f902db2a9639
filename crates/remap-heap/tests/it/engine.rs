//! Every workload with each publication and fault mode, on the engine, mutators running during
//! compaction, verified. Each scenario runs in a child process with a timeout (a lost wake-up
//! would otherwise hang the test binary).

use std::process::Command;
use std::time::{Duration, Instant};

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

const CHILD: &str = "REMAP_HEAP_ENGINE_CHILD";

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
    let mut by_faults = 0;
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
        by_faults += stats.by_faults();
        match faults {
            FaultMode::Sigbus => assert_eq!(stats.by_handlers, 0),
            FaultMode::Threads => assert_eq!(stats.by_mutators, 0),
        }
    }
    // The mutators ran during compaction and touched pages before the compaction thread did.
    assert!(by_faults > 0, "no page was compacted on a mutator's fault");
    let errors = session.finish();
    assert!(errors.is_empty(), "{errors:?}");
}

/// Runs scenario `name` in a child process (this test binary, filtered to `child_scenarios`).
fn in_child(name: &str) {
    require!(Need::Move);
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "engine::child_scenarios",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, name)
        .spawn()
        .unwrap();
    let timeout = Duration::from_secs(240);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "scenario {name} failed: {status}");
            return;
        }
        if started.elapsed() > timeout {
            child.kill().ok();
            panic!("scenario {name} hung for {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn child_scenarios() {
    let Ok(name) = std::env::var(CHILD) else {
        return; // only meaningful as a child of the tests below
    };
    let (workload, publication, faults) = {
        let mut parts = name.split('/');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };
    let publication = match publication.as_str() {
        "move" => Publication::Move,
        "move-single" => Publication::MoveSingle,
        _ => Publication::Copy,
    };
    let faults = if faults == "sigbus" {
        FaultMode::Sigbus
    } else {
        FaultMode::Threads
    };
    match workload.as_str() {
        "trees" => run::<Trees>(publication, faults),
        "kv" => run::<Cache>(publication, faults),
        _ => run::<Graph>(publication, faults),
    }
}

macro_rules! scenarios {
    ($($name:ident: $s:literal,)*) => {$(
        #[test]
        fn $name() {
            in_child($s);
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
