//! The session's start: a mutator that fails or panics while building its live part stops the
//! start with an error, and no other mutator is left waiting for it (run in a child process with
//! a timeout: the failure this guards against is a hang).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use remap::Region;
use remap_heap::heap::Mutator;
use remap_heap::runner::{Session, SessionConfig, SessionError};
use remap_heap::shape::ShapeTable;
use remap_heap::workload::{NewWorkload, Rng, Workload, WorkloadError};

/// A workload whose first set-up call panics; the others build nothing and succeed.
#[derive(Debug)]
struct PanicsOnce {
    calls: AtomicUsize,
}

impl Workload for PanicsOnce {
    type State = ();

    fn name(&self) -> &'static str {
        "panics-once"
    }

    fn roots(&self) -> usize {
        1
    }

    fn setup(&self, _: &mut Mutator, _: &mut Rng) -> Result<(), WorkloadError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("set-up fails on purpose");
        }
        Ok(())
    }

    fn step(&self, _: &mut Mutator, _: &mut (), _: &mut Rng) -> Result<(), WorkloadError> {
        std::thread::sleep(Duration::from_millis(1));
        Ok(())
    }
}

impl NewWorkload for PanicsOnce {
    fn new(_: &mut ShapeTable, _: usize) -> Self {
        PanicsOnce {
            calls: AtomicUsize::new(0),
        }
    }
}

#[test]
fn a_mutator_panicking_in_setup_fails_the_start_without_a_hang() {
    if test_support::child::run_in_child(Duration::from_secs(60)) {
        return;
    }
    for mutators in [1, 2, 4] {
        let config = SessionConfig {
            heap_bytes: 4 << 20,
            mutators,
            ..SessionConfig::default()
        };
        let started =
            Session::<PanicsOnce>::start(&config, Region::new(config.heap_bytes).unwrap());
        match started {
            Err(SessionError::SetupPanicked(finished)) => {
                assert!(finished < mutators, "{mutators} mutators: {finished}");
            }
            other => panic!("{mutators} mutators: expected SetupPanicked, got {other:?}"),
        }
    }
}
