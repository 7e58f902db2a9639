//! remap-model (docs written below)
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod explore;
pub mod invariant;
pub mod shuttle_check;
pub mod state;
pub mod step;

pub use config::{expected_table, Config, Expect, Expected, Mutation, Protocol, Version, WalkerMode};
pub use explore::{explore, replay, run_config, Bounds, Exploration, InvariantResult, Outcome, Report, Trace, TraceStep};
pub use invariant::{Invariant, Violation};
