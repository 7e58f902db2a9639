//! remap-heap against the real kernel: workloads with mutator threads, cycles, verification.

mod engine;
mod runner;
mod stop_the_world;
