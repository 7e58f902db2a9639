//! An executable, model-checked model of the reverse-map (rmap) protocol that `UFFDIO_MOVE`
//! depends on.
//!
//! The patch "userfaultfd: UFFDIO_REMAP: rmap preparation" made `folio_lock_anon_vma_read()`
//! re-check `folio->mapping` after taking the anon_vma lock, because `UFFDIO_MOVE` moves an anon
//! folio to an anon_vma with a *different root*. This crate models the folio, the anon_vma slab
//! slots (freed and reused at once, rwsem surviving reuse), two VMAs with one PTE each, the PTLs and
//! the mmap lock, and runs a walker (`folio_referenced` -> `folio_lock_anon_vma_read` S1–S13 ->
//! `rmap_walk_anon` with the lockless `map_pte` of `page_vma_mapped_walk`), a mover
//! (`move_pages_pte` / `move_present_pte` of 6.8 with its trylock-then-sleep retries, or the
//! newest `move_pages_ptes` / `move_present_ptes` with PTE batching), a munmap-and-reuse thread
//! and optionally a second mover (ABA), a GUP-fast pinner and a fork thread (`anon_vma_fork`
//! reusing a freed slot, COW reuse as a same-root move), for every kernel version
//! ([`Version`]) and planted bug ([`Mutation`]). The nine invariants of `docs/rmap-protocol.md`
//! section 4 are [`Invariant`] variants named after the kernel rule they check. It depends on no
//! other workspace crate and makes no syscalls. `DESIGN.md` next to `Cargo.toml` lists what is
//! abstracted and the assumptions every result rests on.
//!
//! ```
//! use remap_model::{expected_table, run_config, Bounds, Invariant, Outcome};
//!
//! // V0 (no re-check) against a different-root mover: the walker walks a freed anon_vma.
//! let v0 = expected_table().into_iter().find(|e| e.config.name == "v0").unwrap();
//! let report = run_config(&v0, &Bounds::default());
//! assert!(report.matches_expected);
//! let freed = &report.invariants[1];
//! assert_eq!(freed.invariant, Invariant::RmapWalkAnonVmaAlive);
//! assert_eq!(freed.actual, Outcome::Broken);
//! // The shortest interleaving, readable next to mm/rmap.c:
//! let trace = freed.trace.as_ref().unwrap().render();
//! assert!(trace.contains("A  S5 down_read_trylock(root X) -> ok"));
//! ```
//!
//! # How the model is checked, and why
//!
//! The model is an explicit state machine: each thread is a program counter plus locals
//! ([`state`]), and [`step::step`] executes one atomic step (one line of the pseudocode in
//! `docs/rmap-protocol.md` 2a/2b, one lock or unlock). Three checkers run the same step functions:
//!
//! - **Our exhaustive explorer** ([`explore()`]): breadth-first search over all interleavings with
//!   state hashing and an optional preemption bound. Breadth-first order makes the first trace
//!   found for each invariant a *shortest* one, so `remap model` prints minimal, deterministic
//!   traces. The state space is small (hundreds to a few thousand states per configuration), so
//!   by default it runs **unbounded** and is complete for the finite model. This is the checker
//!   of record for the expected table ([`expected_table`]).
//! - **shuttle** ([`shuttle_check`]): each model thread is a `shuttle::thread`, the state sits in a
//!   `shuttle::sync::Mutex`, so each step is a scheduling point. Random and PCT schedulers
//!   search the same space independently; for every configuration of the table the integration
//!   tests require that they find nothing in the safe ones, and in each unsafe one at least one
//!   violation and only invariants its row expects broken. shuttle explores sequentially
//!   consistent interleavings, which is what `docs/rmap-protocol.md` section 4 asks for the `anon_vma_free` handshake (a
//!   store-buffering pattern: loom's SeqCst does not forbid the SB outcome, tokio-rs/loom#180).
//! - **loom** ([`weak_memory`]), the weak-memory dimension: [`run_config`] also runs a two-thread
//!   loom model (walker fast path against a V0–V2 mover) for configurations with
//!   [`Config::weak_memory`] (v0, v2, mut-index-first). `folio->mapping`/`folio->index` are
//!   `Relaxed` (`WRITE_ONCE`/`READ_ONCE`), the rwsem words Acquire/Release, so loom answers what
//!   the SC model cannot: storing the index before the mapping (`mut-index-first`) does *not*
//!   close V2's index window without a barrier (the cell shows `broken(wm)` with a log of the
//!   values each thread read), and V2's re-check is ordered by the rwsem, not by `READ_ONCE`.
//!   loom cannot produce every `Relaxed` behaviour (load buffering), so its passes are weaker than
//!   proofs; its failures are real C11 executions. loom needs unwinding: in a `panic = "abort"`
//!   build the check reports itself as not run. The integration test `loom_memory_model` asks
//!   the same questions as litmus tests.
//!
//! # Bounds and measured run times
//!
//! Measured on the 2-core CI-like machine (dev profile, which sets opt-level 3 for this crate,
//! loom and shuttle):
//!
//! | Check | Bound | States | Time |
//! |---|---|---|---|
//! | explorer, all 27 configurations | unbounded preemptions, 4 M state cap | 603–7 651 per configuration | 0.2–0.4 s in total |
//! | loom in [`run_config`], 3 configurations | preemption bound 8 (saturated from 6: the whole space) | 132, 132, 75 executions | 20–40 ms each |
//! | shuttle, all 27 configurations | 300 random + 300 PCT (depth 3) executions each (a third for the fork ones); up to 6 seeds x 1 500 PCT (depth 4) more for an unsafe one the first budget misses | n/a | ~20–50 s |
//! | loom tests, 3 litmus models + 1 self-test | 3 preemptions | n/a | ~0.1 s |
//! | `cargo test -p remap-model` (all of it, after build) | | | ~42 s |
//!
//! # Caveats
//!
//! - **Invariant 8 in V2.** V2 satisfies what the kernel promises a walker without the folio
//!   lock ([`Completeness::PtlOverlap`]: no miss unless the walk overlaps another thread's PTL
//!   section), not more: `v2-strict` shows a miss with a shortest trace, and `v2-index-window`
//!   that the model's earlier, narrower form (a miss only for an index read between the two
//!   stores) fails once the walk's `map_pte` reads the PTE without the lock, as
//!   `folio_referenced_one` does.
//! - **The fork ABA.** S6's pointer-only re-check would pass for a reused anon_vma slot that
//!   COW reuse moved the folio into; the walker's folio reference is what closes that path
//!   (`v2-fork-aba` holds, `mut-walker-no-ref` breaks 1 and 3; `fix-s6-root-recheck` shows that
//!   re-checking the root in S6 would close it without the reference).
//! - **Walks that never start.** A walker that gets `NULL` from `folio_lock_anon_vma_read` (S2,
//!   S3, S7, S9, S10, S13, or a contended trylock) is not a walk: invariant 8 only checks walks
//!   that obtained an anon_vma, as in the kernel, where such a `folio_referenced` simply reports
//!   nothing.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod explore;
pub mod invariant;
pub mod shuttle_check;
pub mod state;
pub mod step;
pub mod weak_memory;

pub use config::{
    expected_table, Completeness, Config, Expect, Expected, Mutation, Protocol, Version, WalkerMode,
};
pub use explore::{
    explore, replay, run_config, Bounds, Checker, Exploration, InvariantResult, Outcome, Report,
    Trace, TraceStep,
};
pub use invariant::{Invariant, Violation};
