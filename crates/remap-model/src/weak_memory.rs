//! The weak-memory dimension: a small loom model of the walker's fast path against a V0–V2 mover,
//! run by [`run_config`](crate::run_config) for the configurations with
//! [`Config::weak_memory`] set.
//!
//! The SC explorer and shuttle interleave whole steps under sequential consistency, so they
//! cannot see a walker read a *stale* `folio->index`. Here `folio->mapping` and `folio->index`
//! are loom atomics accessed `Relaxed` (`WRITE_ONCE`/`READ_ONCE`), each root's rwsem word is
//! taken with Acquire and released with Release, and the PTL is a loom `Mutex`. loom explores the
//! C11 executions of the two threads within a preemption bound:
//!
//! - **A, walker** (`folio_referenced`, `try_lock`): S1 reads the mapping, S5 trylocks that
//!   slot's root rwsem, S6 re-checks the mapping (V2), returns; `rmap_walk_anon` reads the index
//!   (`folio_pgoff`, a plain load: `Relaxed`) and visits the tree VMA covering it the way the
//!   non-sync `map_pte` does (a `Relaxed` load of the PTE word, the PTL only when it is present;
//!   `PVMW_SYNC` takes the PTL first); at the end it checks invariant 8 under the PTL (in its
//!   happens-before form for `PtlOverlap`), then `up_read`.
//! - **B, mover** (`move_pages_pte` with the anon_vma write lock of V0–V2): `down_write(root
//!   X)`, `double_pt_lock`, clears S, stores mapping and index in the protocol's order, sets D,
//!   unlocks.
//!
//! Violations are *recorded*, not asserted (the model never panics); a ghost log (plain `std` data, which loom does not schedule) keeps what each
//! thread read and wrote, and "the latest value in coherence order" for the checks.
//!
//! loom does not produce every `Relaxed` behaviour (no load buffering) and its `SeqCst` does not
//! forbid store buffering (tokio-rs/loom#180; this model uses no `SeqCst`), so a pass is weaker
//! than a proof. A failure is a real C11 execution (message passing without a barrier), which the
//! Linux kernel memory model also allows.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool as GhostBool, AtomicUsize as GhostUsize, Ordering as G};
use std::sync::{Arc as StdArc, Mutex as StdMutex};
use std::time::Instant;

use loom::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};

use crate::config::{Completeness, Config, Protocol, WalkerMode};
use crate::explore::{Checker, Trace, TraceStep};
use crate::invariant::{Invariant, Violation};
use crate::state::Role;

/// Default loom preemption bound used by [`Bounds`](crate::Bounds): above the point (6) where
/// the number of executions stops growing, so the bounded search is the whole space of loom's
/// model (96 executions for v0 and v2, 75 for mut-index-first).
pub const DEFAULT_LOOM_PREEMPTIONS: usize = 8;

/// The invariants the loom model checks (the others are left to the SC explorer).
pub const WEAK_MEMORY_INVARIANTS: [Invariant; 2] = [
    Invariant::FolioLockAnonVmaReadCurrent,
    Invariant::RmapWalkAnonComplete,
];

/// Why the check cannot run in a `panic = "abort"` build.
///
/// loom runs each model thread as a `generator` coroutine that ends by unwinding (`generator::done`
/// panics with `Error::Done`), so any loom model aborts a binary built with `panic = "abort"`
/// (the workspace's `[profile.release]`). The check then reports this instead of running.
pub const LOOM_NEEDS_UNWIND: &str =
    "loom needs unwinding (its threads end by panicking) but this binary is built with \
     panic = \"abort\"; rerun without --release, or with CARGO_PROFILE_RELEASE_PANIC=unwind";

const X: usize = 0;
const Y: usize = 1;
const IDX_S: usize = 0x10;
const IDX_D: usize = 0x20;

/// Result of the loom check of one configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WeakMemoryReport {
    /// loom preemption bound.
    pub preemption_bound: usize,
    /// Executions loom ran.
    pub executions: usize,
    /// loom explored the whole bounded space (false on an internal loom failure or an
    /// unsupported configuration; see `error`).
    pub complete: bool,
    /// Why the check is incomplete.
    pub error: Option<String>,
    /// Wall-clock time, in milliseconds.
    pub elapsed_ms: u128,
    /// Invariants this model checks.
    pub checked: Vec<Invariant>,
    /// The first violating execution found for each broken invariant, in invariant order.
    pub traces: Vec<(Invariant, Trace)>,
}

impl WeakMemoryReport {
    /// Invariants found broken.
    pub fn broken(&self) -> Vec<Invariant> {
        self.traces.iter().map(|(i, _)| *i).collect()
    }
}

/// Whether the loom model covers `cfg`: a V0–V2 mover (anon_vma write lock), a `try_lock`
/// walker without the folio lock or cached pgoff, no GUP and no munmap (the slot is never freed
/// here; invariants 1, 2 and 7 stay with the SC explorer).
pub fn supported(cfg: &Config) -> bool {
    let p = cfg.protocol();
    p.mover_anon_lock
        && !p.walker_folio_lock
        && !p.cache_pgoff
        && !p.prefix_pin_order
        && cfg.walker == WalkerMode::TryLock
        && !cfg.gup
}

/// Runs the loom model of `cfg` with `preemption_bound`.
///
/// ```
/// use remap_model::expected_table;
/// use remap_model::weak_memory::weak_memory_check;
/// use remap_model::Invariant;
/// let row = expected_table().into_iter().find(|e| e.config.name == "mut-index-first").unwrap();
/// let r = weak_memory_check(&row.config, 3);
/// assert!(r.complete);
/// assert_eq!(r.broken(), [Invariant::RmapWalkAnonComplete]);
/// ```
pub fn weak_memory_check(cfg: &Config, preemption_bound: usize) -> WeakMemoryReport {
    let start = Instant::now();
    let mut report = WeakMemoryReport {
        preemption_bound,
        executions: 0,
        complete: false,
        error: None,
        elapsed_ms: 0,
        checked: WEAK_MEMORY_INVARIANTS.to_vec(),
        traces: Vec::new(),
    };
    if cfg!(panic = "abort") {
        report.error = Some(LOOM_NEEDS_UNWIND.into());
        return report;
    }
    if !supported(cfg) {
        report.error = Some(format!(
            "configuration {} is outside the loom model (needs a V0-V2 mover and a try-lock walker without GUP)",
            cfg.name
        ));
        return report;
    }
    let p = cfg.protocol();
    let sync = cfg.sync_walk();
    let executions = StdArc::new(GhostUsize::new(0));
    let found: StdArc<StdMutex<Vec<(Invariant, Trace)>>> = StdArc::default();
    let body = {
        let (executions, found) = (StdArc::clone(&executions), StdArc::clone(&found));
        move || {
            let n = executions.fetch_add(1, G::Relaxed) + 1;
            one_execution(&p, sync, n, preemption_bound, &found);
        }
    };
    let mut b = loom::model::Builder::new();
    // Builder::new() reads LOOM_* from the environment; pin everything so the result does not
    // depend on it (LOOM_CHECKPOINT_FILE would panic: loom's `checkpoint` feature is off).
    b.preemption_bound = Some(preemption_bound);
    b.max_branches = 10_000;
    b.max_duration = None;
    b.max_permutations = None;
    b.checkpoint_file = None;
    b.log = false;
    b.location = false;
    // An internal loom failure (deadlock, branch limit) becomes an incomplete report. The model
    // itself never panics.
    let r = catch_unwind(AssertUnwindSafe(|| b.check(body)));
    report.executions = executions.load(G::Relaxed);
    match r {
        Ok(()) => report.complete = true,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "loom panicked".into());
            report.error = Some(format!("loom failed: {msg}"));
        }
    }
    let mut traces = found.lock().map(|g| g.clone()).unwrap_or_default();
    traces.sort_by_key(|(inv, _)| *inv);
    report.traces = traces;
    report.elapsed_ms = start.elapsed().as_millis();
    report
}

/// The ghost side of one execution: a log in schedule order and the latest stores.
struct Ghost {
    log: StdMutex<Vec<TraceStep>>,
    /// Latest `folio->mapping` in coherence order (B is the only writer).
    mapping: GhostUsize,
    mapping_stored: GhostBool,
    index_stored: GhostBool,
    /// B holds the PTLs (`double_pt_lock` .. `double_pt_unlock`).
    in_ptl: GhostBool,
    /// Number of PTL sections B has entered.
    ptl_sections: GhostUsize,
    /// B is about to `up_write(root X)` (or has): a later successful trylock of X reads that
    /// Release, so all of B's move happens-before the walk.
    x_released: GhostBool,
}

impl Ghost {
    fn say(&self, role: Role, step: String, changes: Vec<String>) {
        if let Ok(mut log) = self.log.lock() {
            let n = log.len() + 1;
            log.push(TraceStep {
                n,
                thread: crate::state::thread_name(role),
                role,
                step,
                changes,
            });
        }
    }

    fn len(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or(0)
    }
}

struct Ptes {
    s: bool,
    d: bool,
}

struct Shared {
    mapping: AtomicUsize,
    index: AtomicUsize,
    /// The rwsem word of root X and root Y: >0 readers, -1 writer.
    rwsem: [AtomicIsize; 2],
    /// `double_pt_lock` takes both PTLs; one loom mutex stands for the pair.
    ptl: Mutex<Ptes>,
    /// The PTE words as a lockless `ptep_get` sees them (`Relaxed`; written under the PTL).
    pte_s: AtomicBool,
    pte_d: AtomicBool,
}

fn slot(m: usize) -> &'static str {
    if m == X {
        "X"
    } else {
        "Y"
    }
}

fn one_execution(
    p: &Protocol,
    sync: bool,
    n: usize,
    bound: usize,
    found: &StdMutex<Vec<(Invariant, Trace)>>,
) {
    let sh = Arc::new(Shared {
        mapping: AtomicUsize::new(X),
        index: AtomicUsize::new(IDX_S),
        rwsem: [AtomicIsize::new(0), AtomicIsize::new(0)],
        ptl: Mutex::new(Ptes { s: true, d: false }),
        pte_s: AtomicBool::new(true),
        pte_d: AtomicBool::new(false),
    });
    let gh = StdArc::new(Ghost {
        log: StdMutex::new(Vec::new()),
        mapping: GhostUsize::new(X),
        mapping_stored: GhostBool::new(false),
        index_stored: GhostBool::new(false),
        in_ptl: GhostBool::new(false),
        ptl_sections: GhostUsize::new(0),
        x_released: GhostBool::new(false),
    });
    let mover = {
        let (sh, gh, p) = (Arc::clone(&sh), StdArc::clone(&gh), *p);
        loom::thread::spawn(move || mover(&sh, &gh, &p))
    };
    let violations = walker(&sh, &gh, p, sync);
    let _ = mover.join();
    if violations.is_empty() {
        return;
    }
    let Ok(log) = gh.log.lock() else { return };
    let Ok(mut found) = found.lock() else { return };
    for (v, at) in violations {
        if found.iter().any(|(i, _)| *i == v.invariant) {
            continue;
        }
        let trace = Trace {
            steps: log[..at.min(log.len())].to_vec(),
            violations: vec![v.clone()],
            checker: Checker::Loom,
            note: Some(format!(
                "loom execution #{n} (DFS, preemption bound {bound}; deterministic: `remap model --only <config>` \
                 finds the same one). To step through it in loom, enable loom's `checkpoint` feature and run with \
                 LOOM_CHECKPOINT_INTERVAL=1 LOOM_CHECKPOINT_FILE=<file>, LOOM_LOG=1, LOOM_LOCATION=1."
            )),
        };
        found.push((v.invariant, trace));
    }
}

fn mover(sh: &Shared, gh: &Ghost, p: &Protocol) {
    let b = Role::Mover;
    while sh.rwsem[X]
        .compare_exchange(0, -1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        loom::thread::yield_now();
    }
    gh.say(
        b,
        "folio_lock(F); folio_get_anon_vma(X); anon_vma_lock_write(X) = down_write(root X) [Acquire]"
            .into(),
        vec![],
    );
    let Ok(mut ptes) = sh.ptl.lock() else { return };
    gh.in_ptl.store(true, G::SeqCst);
    gh.ptl_sections.fetch_add(1, G::SeqCst);
    gh.say(b, "double_pt_lock(S, D)".into(), vec![]);
    ptes.s = false;
    sh.pte_s.store(false, Ordering::Relaxed);
    gh.say(
        b,
        "ptep_clear_flush(S)".into(),
        vec!["S.pte: F -> none".into()],
    );
    let store_mapping = || {
        sh.mapping.store(Y, Ordering::Relaxed);
        gh.mapping.store(Y, G::SeqCst);
        gh.mapping_stored.store(true, G::SeqCst);
        gh.say(
            b,
            "folio_move_anon_rmap(F, D): WRITE_ONCE(folio->mapping, Y|ANON) [Relaxed]".into(),
            vec!["folio->mapping: X|ANON -> Y|ANON".into()],
        );
    };
    let store_index = || {
        sh.index.store(IDX_D, Ordering::Relaxed);
        gh.index_stored.store(true, G::SeqCst);
        gh.say(
            b,
            format!(
                "WRITE_ONCE(folio->index, linear_page_index(D) = {IDX_D:#x}) [Relaxed, no smp_wmb]"
            ),
            vec![format!("folio->index: {IDX_S:#x} -> {IDX_D:#x}")],
        );
    };
    if p.index_first {
        store_index();
        store_mapping();
    } else {
        store_mapping();
        store_index();
    }
    ptes.d = true;
    sh.pte_d.store(true, Ordering::Relaxed);
    gh.say(
        b,
        "set_pte_at(D, mk_pte(F))".into(),
        vec!["D.pte: none -> F".into()],
    );
    gh.in_ptl.store(false, G::SeqCst);
    drop(ptes);
    gh.say(b, "double_pt_unlock [Release]".into(), vec![]);
    // Ghost first: a walker whose trylock then succeeds on X read this release.
    gh.x_released.store(true, G::SeqCst);
    sh.rwsem[X].store(0, Ordering::Release);
    gh.say(
        b,
        "anon_vma_unlock_write(X) = up_write(root X) [Release]; folio_unlock(F)".into(),
        vec![],
    );
}

/// The walker; returns each violation with the log length at the point it was found.
fn walker(sh: &Shared, gh: &Ghost, p: &Protocol, sync: bool) -> Vec<(Violation, usize)> {
    let a = Role::Walker;
    let mut out = Vec::new();
    let m = sh.mapping.load(Ordering::Relaxed);
    let latest = gh.mapping.load(G::SeqCst);
    let how = match (m == latest, m) {
        (true, X) => "current",
        (true, _) => "new: B's store is visible",
        (false, _) => "old: B already stored Y|ANON, not yet visible to A",
    };
    gh.say(
        a,
        format!(
            "S1 READ_ONCE(folio->mapping) = {}|ANON ({how}); S4 root = {}",
            slot(m),
            slot(m)
        ),
        vec![],
    );
    let rw = &sh.rwsem[m];
    let cur = rw.load(Ordering::Relaxed);
    let released_before = gh.x_released.load(G::SeqCst);
    let locked = cur >= 0
        && rw
            .compare_exchange(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
    // The walk is ordered after B's whole move only through B's up_write(root X): the walker's
    // other accesses (mapping, index, ptep_get) are plain and pair with nothing.
    let synced_with_mover = locked && m == X && released_before;
    if !locked {
        gh.say(
            a,
            format!(
                "S5 down_read_trylock(root {}) -> fails (held for writing); returns NULL, no walk",
                slot(m)
            ),
            vec![],
        );
        return out;
    }
    gh.say(
        a,
        format!("S5 down_read_trylock(root {}) -> ok [Acquire]", slot(m)),
        vec![],
    );
    if p.recheck_fast {
        let m2 = sh.mapping.load(Ordering::Relaxed);
        if m2 != m {
            rw.fetch_sub(1, Ordering::Release);
            gh.say(
                a,
                format!(
                    "S6 READ_ONCE(folio->mapping) = {}|ANON != {}: up_read(root {}); returns NULL",
                    slot(m2),
                    slot(m),
                    slot(m)
                ),
                vec![],
            );
            return out;
        }
        gh.say(
            a,
            format!(
                "S6 READ_ONCE(folio->mapping) = {}|ANON: re-check ok",
                slot(m2)
            ),
            vec![],
        );
    }
    gh.say(
        a,
        format!(
            "S7 folio_mapped(F) -> true (mapcount 1 across the move); returns {}",
            slot(m)
        ),
        vec![],
    );
    let current = |out: &mut Vec<(Violation, usize)>, what: &str| {
        let latest = gh.mapping.load(G::SeqCst);
        if latest != m
            && !out.iter().any(|(v, _): &(Violation, usize)| {
                v.invariant == Invariant::FolioLockAnonVmaReadCurrent
            })
        {
            out.push((
                Violation {
                    invariant: Invariant::FolioLockAnonVmaReadCurrent,
                    message: format!(
                        "{what}: the walker holds root {} but folio->mapping is {}|ANON (latest store in coherence order)",
                        slot(m),
                        slot(latest)
                    ),
                },
                gh.len(),
            ));
        }
    };
    current(&mut out, "folio_lock_anon_vma_read returns");
    let pgoff = sh.index.load(Ordering::Relaxed);
    let sections_at_start = gh.ptl_sections.load(G::SeqCst);
    let busy_at_start = gh.in_ptl.load(G::SeqCst);
    let stale = pgoff == IDX_S && gh.index_stored.load(G::SeqCst);
    // "A read folio->index from before B's store" while acting on an already-moved mapping.
    let half = pgoff == IDX_S && gh.mapping_stored.load(G::SeqCst);
    let how = if pgoff == IDX_D {
        "new".to_string()
    } else if stale {
        let order = if p.index_first {
            "B stored it before the mapping, but no smp_wmb/smp_rmb (or release/acquire) orders the two WRITE_ONCEs for A's READ_ONCEs"
        } else {
            "B stores it after the mapping"
        };
        format!("old: B's store of {IDX_D:#x} is not yet visible to A; {order}")
    } else if half {
        "old: B has stored the mapping but not yet the index".into()
    } else {
        "current".into()
    };
    gh.say(
        a,
        format!(
            "rmap_walk_anon: pgoff = folio_pgoff(folio) = {pgoff:#x} (plain load; {how}); anon_vma_interval_tree_foreach over {}",
            slot(m)
        ),
        vec![],
    );
    // X's tree holds S (vm_pgoff 0x10), Y's tree holds D (vm_pgoff 0x20).
    let (vma, vpg) = if m == X { ("S", IDX_S) } else { ("D", IDX_D) };
    let mut visited = false;
    if vpg == pgoff {
        // map_pte without PVMW_SYNC: ptep_get without the PTL; the PTL only for a present PTE.
        let seen = sync
            || if m == X {
                sh.pte_s.load(Ordering::Relaxed)
            } else {
                sh.pte_d.load(Ordering::Relaxed)
            };
        let here = if seen {
            let Ok(ptes) = sh.ptl.lock() else { return out };
            let here = if m == X { ptes.s } else { ptes.d };
            drop(ptes);
            here
        } else {
            false
        };
        visited = here;
        gh.say(
            a,
            format!(
                "rmap_one({vma}): {}{}",
                if sync {
                    "page_vma_mapped_walk (PVMW_SYNC): pte_offset_map_lock; check_pte -> "
                } else if seen {
                    "map_pte: ptep_get (no PTL) -> present; spin_lock(ptl); check_pte -> "
                } else {
                    "map_pte: ptep_get (no PTL) -> none, PTL not taken"
                },
                if !seen {
                    ""
                } else if here {
                    "F found (young)"
                } else {
                    "pte none"
                }
            ),
            vec![],
        );
        current(&mut out, "during rmap_walk_anon");
    } else {
        gh.say(
            a,
            format!(
                "no VMA of {}'s tree covers pgoff {pgoff:#x} ({vma} has vm_pgoff {vpg:#x})",
                slot(m)
            ),
            vec![],
        );
    }
    let Ok(ptes) = sh.ptl.lock() else { return out };
    let (s, d) = (ptes.s, ptes.d);
    drop(ptes);
    gh.say(
        a,
        format!(
            "rmap_walk_anon done; PTEs under PTL: S {}, D {}",
            if s { "F" } else { "none" },
            if d { "F" } else { "none" }
        ),
        vec![],
    );
    current(&mut out, "at the end of rmap_walk_anon");
    // In happens-before terms: the walk overlaps B's PTL section unless the section ended
    // before the walk began in schedule order *and* the walker synchronized with it.
    let overlapped = busy_at_start
        || gh.ptl_sections.load(G::SeqCst) != sections_at_start
        || (gh.ptl_sections.load(G::SeqCst) > 0 && !synced_with_mover);
    let excused = match p.completeness {
        Completeness::Strict => false,
        Completeness::PtlOverlap => overlapped,
        Completeness::IndexWindow => half,
    };
    for (mapped, name, vm_pgoff, mine) in [(s, "S", IDX_S, m == X), (d, "D", IDX_D, m == Y)] {
        if mapped && !(mine && visited) && !excused {
            out.push((
                Violation {
                    invariant: Invariant::RmapWalkAnonComplete,
                    message: format!(
                        "F is mapped in {name} (vm_pgoff {vm_pgoff:#x}) but the walk of {} with pgoff {pgoff:#x} missed it",
                        slot(m)
                    ),
                },
                gh.len(),
            ));
        }
    }
    rw.fetch_sub(1, Ordering::Release);
    gh.say(
        a,
        format!(
            "anon_vma_unlock_read({}) = up_read(root {}) [Release]",
            slot(m),
            slot(m)
        ),
        vec![],
    );
    out
}
