//! The re-runs that confirm a failure (its hit rate) and shrink it to a minimal replay command.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{sys, Config, TortureError, Walker};

use super::run;

/// What re-running a failing configuration showed.
#[derive(Debug, Clone, Serialize)]
pub struct Confirmation {
    /// Re-runs that failed, of `runs`.
    pub hits: usize,
    /// Re-runs done.
    pub runs: usize,
    /// The shrunk configuration's replay command (fewer walkers, shorter), still failing.
    pub replay: String,
    /// The walkers the shrunk configuration keeps.
    pub walkers: Vec<Walker>,
}

/// Re-runs a failing `cfg` `runs` times (each stopping at its first violation) for the hit rate,
/// then shrinks it: drops walkers one at a time and halves the duration while it still fails.
///
/// # Errors
///
/// As [`run`].
pub fn confirm(cfg: &Config, runs: usize, budget: Duration) -> Result<Confirmation, TortureError> {
    let started = Instant::now();
    let mut trial = cfg.clone();
    trial.stop_at_first_violation = true;
    trial.idle_walkers_ok = true;
    let mut hits = 0;
    let mut first_at: f64 = cfg.duration.as_secs_f64();
    for _ in 0..runs {
        let r = run(&trial, &mut |_| {})?;
        if sys::interrupted() {
            break;
        }
        if !r.clean() {
            hits += 1;
            if let Some(v) = r.violations.first() {
                first_at = first_at.min(v.at_secs);
            }
        }
    }
    let mut best = cfg.clone();
    if hits > 0 {
        // Shorter: about twice the time the failure took to show.
        best.duration = Duration::from_secs_f64((first_at * 2.0).ceil().max(2.0)).min(cfg.duration);
        let mut i = 0;
        while i < best.walkers.len() && started.elapsed() < budget && !sys::interrupted() {
            let mut fewer = best.clone();
            fewer.walkers.remove(i);
            let mut t = fewer.clone();
            t.stop_at_first_violation = true;
            t.idle_walkers_ok = true;
            if !run(&t, &mut |_| {})?.clean() {
                best = fewer;
            } else {
                i += 1;
            }
        }
    }
    Ok(Confirmation {
        hits,
        runs,
        replay: best.replay_command(),
        walkers: best.walkers,
    })
}
