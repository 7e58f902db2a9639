//! Cross-check: the same step functions run as real threads under shuttle's schedulers.
//!
//! Each model thread becomes a `shuttle::thread`; the shared state lives in a
//! `shuttle::sync::Mutex`, so every atomic step is one scheduling point. A blocked step yields.
//! Shuttle explores sequentially consistent interleavings, which is exactly the semantics of the
//! explorer; it is a second, independent search (random and PCT schedulers) over the same model.

use std::collections::BTreeSet;
use std::sync::Arc;

use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::{MaxSteps, Runner};

use crate::config::Config;
use crate::invariant::Invariant;
use crate::step::{any_enabled, initial_state, step, Ctx};

/// Which shuttle scheduler to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShuttleScheduler {
    /// `RandomScheduler::new_from_seed(seed, iterations)`.
    Random {
        /// Seed (printed on failure so a run can be replayed).
        seed: u64,
        /// Number of executions.
        iterations: usize,
    },
    /// `PctScheduler::new_from_seed(seed, depth, iterations)`.
    Pct {
        /// Seed.
        seed: u64,
        /// PCT bug depth (number of priority change points + 1).
        depth: usize,
        /// Number of executions.
        iterations: usize,
    },
}

/// Runs `cfg` under shuttle and returns the invariants violated in any execution.
///
/// ```
/// use remap_model::shuttle_check::{shuttle_check, ShuttleScheduler};
/// use remap_model::{expected_table, Invariant};
/// let v0 = expected_table().into_iter().find(|e| e.config.name == "v0").unwrap();
/// let found = shuttle_check(&v0.config, ShuttleScheduler::Random { seed: 1, iterations: 200 });
/// assert!(found.contains(&Invariant::FolioLockAnonVmaReadCurrent));
/// ```
pub fn shuttle_check(cfg: &Config, sched: ShuttleScheduler) -> BTreeSet<Invariant> {
    let found: Arc<std::sync::Mutex<BTreeSet<Invariant>>> = Arc::default();
    let body = {
        let found = Arc::clone(&found);
        let cfg = cfg.clone();
        move || run_once(&cfg, &found)
    };
    let mut config = shuttle::Config::new();
    config.max_steps = MaxSteps::ContinueAfter(20_000);
    config.silence_warnings = true;
    match sched {
        ShuttleScheduler::Random { seed, iterations } => {
            Runner::new(RandomScheduler::new_from_seed(seed, iterations), config).run(body);
        }
        ShuttleScheduler::Pct {
            seed,
            depth,
            iterations,
        } => {
            Runner::new(PctScheduler::new_from_seed(seed, depth, iterations), config).run(body);
        }
    }
    let set = found.lock().map(|g| g.clone()).unwrap_or_default();
    set
}

fn run_once(cfg: &Config, found: &Arc<std::sync::Mutex<BTreeSet<Invariant>>>) {
    let shared = shuttle::sync::Arc::new(shuttle::sync::Mutex::new(initial_state(cfg)));
    let n = shared.lock().map(|s| s.threads.len()).unwrap_or(0);
    let handles: Vec<_> = (0..n)
        .map(|tid| {
            let shared = shuttle::sync::Arc::clone(&shared);
            let cfg = cfg.clone();
            let found = Arc::clone(found);
            shuttle::thread::spawn(move || loop {
                let Ok(mut g) = shared.lock() else { return };
                if g.threads[tid].done() {
                    return;
                }
                let mut s = g.clone();
                let mut ctx = Ctx::default();
                if step(&mut s, tid, &cfg, &mut ctx) {
                    *g = s;
                    if !ctx.violations.is_empty() {
                        if let Ok(mut f) = found.lock() {
                            f.extend(ctx.violations.iter().map(|v| v.invariant));
                        }
                    }
                } else {
                    if !any_enabled(&g, &cfg) && !g.all_done() {
                        if let Ok(mut f) = found.lock() {
                            f.insert(Invariant::LockOrderNoDeadlock);
                        }
                        return;
                    }
                    drop(g);
                    shuttle::thread::yield_now();
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
