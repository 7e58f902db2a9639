//! Protocol versions, mutations, model configurations and the expected result table.

use crate::invariant::Invariant;

/// A kernel version of the protocol (`docs/rmap-protocol.md` section 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Version {
    /// <= 6.7: no `folio->mapping` re-check; the mover (as in 6.8) holds the folio lock and the
    /// anon_vma write lock.
    V0,
    /// Sep 2023 v2 patch: re-check only on the slow path (S12).
    V1,
    /// 6.8 as merged: re-check at S6 and S12; mover holds folio lock + anon_vma write lock.
    V2,
    /// Newest: every walker trylocks the folio first, no re-check, mover takes no anon_vma lock.
    V3,
}

/// A deliberate bug planted in a version (`docs/rmap-protocol.md` section 4, "Versions and mutations").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mutation {
    /// Only the mover side of V3 applied: the mover drops the anon_vma lock, walkers are V2
    /// (re-checks, no folio lock).
    V3MoverOnly,
    /// V3 with a walker that was not converted: no folio lock (and no re-check, as in V3).
    V3WalkerNoFolioLock,
    /// The mover stores `folio->index` before `folio->mapping` (V2).
    IndexBeforeMapping,
    /// The walker reads `folio->index` before taking any lock (V3).
    WalkerCachesPgoff,
    /// The order before Qi Zheng's fix ("mm: userfaultfd: fix unexpected change to src_folio when
    /// UFFDIO_MOVE fails"): `folio_move_anon_rmap` and the index store right after the
    /// `pte_same`/pin checks, before `ptep_clear_flush` and the pin re-check (V2, GUP on).
    PreFixPinOrder,
    /// The mover takes the two page-table locks one at a time instead of `double_pt_lock`:
    /// `ptep_clear_flush(src)` under the source PTL, unlock it, then `set_pte_at(dst)` under the
    /// destination PTL. Between the two critical sections F is mapped by no PTE (invariant 5).
    SplitPtl,
    /// The mover takes `folio_get_anon_vma` + `anon_vma_lock_write` *before* `folio_lock`,
    /// against the mm/rmap.c order (folio lock before anon_vma lock); deadlocks against a walker
    /// that holds the folio lock and sleeps in `anon_vma_lock_read` (invariant 9).
    AnonLockBeforeFolioLock,
    /// The walker holds no reference on the folio. Every real caller of `folio_referenced` and
    /// `rmap_walk` does (`isolate_lru_folios`, page_idle's and DAMON's `folio_try_get`), and
    /// `wp_can_reuse_anon_folio` refuses to reuse a folio with `folio_ref_count() != 1`: that
    /// reference is what keeps COW reuse from moving the folio during the walk.
    WalkerWithoutFolioRef,
}

/// How the walker calls `folio_lock_anon_vma_read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalkerMode {
    /// `folio_referenced`: `rwc->try_lock = true`, only the fast path S5–S7.
    TryLock,
    /// page_idle / DAMON: `try_lock` unset; fast path first, slow path when the trylock fails.
    Blocking,
    /// Like `Blocking`, but S5 always fails (models a contended root): only the slow path S8–S13.
    SlowOnly,
    /// Migration / `try_to_unmap`: the caller holds the folio lock (`folio_lock`, sleeping), then
    /// `rmap_walk` with `try_lock` unset: fast path, then the sleeping slow path S9–S13, all with
    /// the folio locked (the folio lock -> anon_vma lock order of mm/rmap.c).
    FolioLocked,
}

/// What invariant 8 (completeness of `rmap_walk_anon`) promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Completeness {
    /// Every PTE that maps the folio at the end of the walk was visited (V3: the folio lock
    /// keeps every mover out of the walk).
    Strict,
    /// What the kernel promises a walker without the folio lock (V0–V2): no miss unless the walk
    /// (`rmap_walk_anon`, from the `folio_pgoff` read to `anon_vma_unlock_read`) overlaps a
    /// page-table-lock section of another thread that changes a PTE of the folio (a mover's
    /// `double_pt_lock` .. `double_pt_unlock`, a zap, a fork's copy, a COW reuse).
    PtlOverlap,
    /// The model's earlier, narrower excuse: a miss only when the walker read `folio->index`
    /// between a mover's mapping store and index store. It held only because the walk waited for
    /// the PTL (`PVMW_SYNC`); with the real lockless `map_pte` V2 breaks it.
    IndexWindow,
}

/// The protocol switches derived from a version and an optional mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Protocol {
    /// S6: re-check `folio->mapping` on the fast path.
    pub recheck_fast: bool,
    /// S12: re-check `folio->mapping` on the slow path.
    pub recheck_slow: bool,
    /// The walker trylocks the folio before anything else (V3 `folio_referenced`).
    pub walker_folio_lock: bool,
    /// The mover takes `folio_get_anon_vma` + `anon_vma_lock_write` (V0–V2).
    pub mover_anon_lock: bool,
    /// Mapping and index stored before `ptep_clear_flush` and the pin re-check (the order before
    /// Qi Zheng's fix).
    pub prefix_pin_order: bool,
    /// Index stored before mapping.
    pub index_first: bool,
    /// The walker reads the index before locking.
    pub cache_pgoff: bool,
    /// What invariant 8 checks.
    pub completeness: Completeness,
    /// The mover locks the source PTL, clears, unlocks, then locks the destination PTL and sets
    /// (no `double_pt_lock`).
    pub split_ptl: bool,
    /// The mover takes the anon_vma reference and write lock before the folio lock.
    pub anon_lock_first: bool,
    /// The walker's caller holds a folio reference for the whole walk.
    pub walker_folio_ref: bool,
    /// S6 also re-checks `READ_ONCE(anon_vma->root) == root_anon_vma` (a proposed hardening, not
    /// in any kernel).
    pub recheck_root: bool,
}

impl Protocol {
    /// The switches for `version` with `mutation` applied.
    pub fn new(version: Version, mutation: Option<Mutation>) -> Protocol {
        let mut p = Protocol {
            recheck_fast: version == Version::V2,
            recheck_slow: matches!(version, Version::V1 | Version::V2),
            walker_folio_lock: version == Version::V3,
            mover_anon_lock: version != Version::V3,
            prefix_pin_order: false,
            index_first: false,
            cache_pgoff: false,
            completeness: if version == Version::V3 {
                Completeness::Strict
            } else {
                Completeness::PtlOverlap
            },
            split_ptl: false,
            anon_lock_first: false,
            walker_folio_ref: true,
            recheck_root: false,
        };
        match mutation {
            None => {}
            Some(Mutation::V3MoverOnly) => p.mover_anon_lock = false,
            Some(Mutation::V3WalkerNoFolioLock) => p.walker_folio_lock = false,
            Some(Mutation::IndexBeforeMapping) => p.index_first = true,
            Some(Mutation::WalkerCachesPgoff) => p.cache_pgoff = true,
            Some(Mutation::PreFixPinOrder) => p.prefix_pin_order = true,
            Some(Mutation::SplitPtl) => p.split_ptl = true,
            Some(Mutation::AnonLockBeforeFolioLock) => p.anon_lock_first = p.mover_anon_lock,
            Some(Mutation::WalkerWithoutFolioRef) => p.walker_folio_ref = false,
        }
        p
    }
}

/// One model configuration: a version, an optional mutation and the threads that run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Config {
    /// Short identifier (`--only` matches it).
    pub name: String,
    /// What the configuration shows.
    pub description: String,
    /// Kernel version of the protocol.
    pub version: Version,
    /// Planted bug, if any.
    pub mutation: Option<Mutation>,
    /// Walker flavour.
    pub walker: WalkerMode,
    /// Run a second mover, D back to S (ABA).
    pub aba: bool,
    /// Run the munmap thread.
    pub munmap: bool,
    /// Let the munmap thread reuse the freed slot as a child of R'.
    pub reuse: bool,
    /// Run a GUP-fast thread that can pin the folio.
    pub gup: bool,
    /// Newest kernel (V3): F is the middle folio of a PTE batch: the mover moves a first folio
    /// F0 (not modelled), `folio_unlock(F0)` and trylocks F under the held PTLs
    /// (`check_ptes_for_batched_move`), moves it and unlocks it before the next folio is
    /// checked, still under the PTLs and before the one `flush_tlb_range`.
    pub batched: bool,
    /// Proposed hardening: S6 re-checks the anon_vma's root as well as the pointer.
    pub s6_recheck_root: bool,
    /// Run the fork thread (fork after the move, the parent drops D, the child's COW reuse
    /// moves F into D''s anon_vma, which `anon_vma_fork` may allocate in X's freed slot).
    pub fork: bool,
    /// Check invariant 8 with this promise instead of the version's (`Strict` for V3,
    /// `PtlOverlap` for V0–V2).
    pub completeness: Option<Completeness>,
    /// The walker's `page_vma_mapped_walk` uses `PVMW_SYNC` (takes the PTL before looking at the
    /// PTE) although its caller does not: the model's earlier walk, kept as a control. The
    /// folio-locked walker (`try_to_unmap`/`try_to_migrate` with `TTU_SYNC`) always uses it.
    pub pvmw_sync: bool,
    /// Also run the loom model ([`weak_memory`](crate::weak_memory)): `folio->mapping` and
    /// `folio->index` as `Relaxed` atomics, rwsem words Acquire/Release. Set where the order of
    /// the plain `WRITE_ONCE`/`READ_ONCE` accesses matters.
    pub weak_memory: bool,
}

impl Config {
    /// The derived protocol switches.
    pub fn protocol(&self) -> Protocol {
        let mut p = Protocol::new(self.version, self.mutation);
        if let Some(c) = self.completeness {
            p.completeness = c;
        }
        p.recheck_root = self.s6_recheck_root && p.recheck_fast;
        p
    }

    /// Whether the walker's `map_pte` takes the PTL before reading the PTE (`PVMW_SYNC`), rather
    /// than reading it locklessly and returning at once when it is not present.
    pub fn sync_walk(&self) -> bool {
        self.pvmw_sync || self.walker == WalkerMode::FolioLocked
    }

    /// A configuration with the default thread set (walker, mover, munmap with reuse).
    pub fn new(name: &str, version: Version, walker: WalkerMode) -> Config {
        Config {
            name: name.to_string(),
            description: String::new(),
            version,
            mutation: None,
            walker,
            aba: false,
            munmap: true,
            reuse: true,
            gup: false,
            fork: false,
            s6_recheck_root: false,
            batched: false,
            completeness: None,
            pvmw_sync: false,
            weak_memory: false,
        }
    }
}

/// Expected outcome of one invariant in one configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// The checker must find no violation.
    Holds,
    /// The SC explorer (the checker of record) must find a violation.
    Broken,
    /// The SC explorer must find none and the loom model (weak memory) must find a violation:
    /// the bug only exists on a weakly ordered CPU.
    BrokenUnderWeakMemory,
    /// The invariant is not meaningful for this configuration (not checked against).
    NotApplicable,
}

/// A configuration together with its expected row of the result table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Expected {
    /// The configuration.
    pub config: Config,
    /// Expected outcome for invariants 1..=9 (index = number - 1).
    pub expect: [Expect; 9],
}

impl Expected {
    /// The expected outcome for `inv`.
    pub fn get(&self, inv: Invariant) -> Expect {
        self.expect[usize::from(inv.number() - 1)]
    }
}

fn row(config: Config, broken: &[u8]) -> Expected {
    let mut expect = [Expect::Holds; 9];
    for &n in broken {
        expect[usize::from(n - 1)] = Expect::Broken;
    }
    Expected { config, expect }
}

/// A row whose `broken_wm` invariants hold under SC but break under the weak memory model.
fn row_wm(config: Config, broken: &[u8], broken_wm: &[u8]) -> Expected {
    let mut e = row(config, broken);
    for &n in broken_wm {
        e.expect[usize::from(n - 1)] = Expect::BrokenUnderWeakMemory;
    }
    e
}

fn with(mut c: Config, description: &str, f: impl FnOnce(&mut Config)) -> Config {
    c.description = description.to_string();
    f(&mut c);
    c
}

/// The expected table: every version and mutation `remap model` runs, with the invariants each
/// must break (all others must hold).
///
/// ```
/// use remap_model::{expected_table, Expect, Invariant};
/// let table = expected_table();
/// let v2 = table.iter().find(|e| e.config.name == "v2").unwrap();
/// assert_eq!(v2.get(Invariant::FolioLockAnonVmaReadCurrent), Expect::Holds);
/// ```
pub fn expected_table() -> Vec<Expected> {
    use Version::*;
    use WalkerMode::*;
    let nop = |_: &mut Config| {};
    vec![
        row(
            with(
                Config::new("v0", V0, TryLock),
                "<= 6.7 rmap (no re-check) against a different-root mover; folio_referenced walker",
                |c| c.weak_memory = true,
            ),
            &[1, 2, 3, 8],
        ),
        row(
            with(
                Config::new("v0-slow", V0, SlowOnly),
                "V0, walker forced onto the refcounted slow path (Trace 3 without S12)",
                nop,
            ),
            &[2, 3, 8],
        ),
        row(
            with(
                Config::new("v1", V1, TryLock),
                "Sep 2023 patch (S12 only); folio_referenced never reaches S12",
                nop,
            ),
            &[1, 2, 3, 8],
        ),
        row(
            with(
                Config::new("v1-slow", V1, SlowOnly),
                "V1, walker forced onto the slow path: S12 fixes it",
                nop,
            ),
            &[],
        ),
        row(
            with(
                Config::new("v2", V2, TryLock),
                "6.8 as merged (S6 + S12); folio_referenced walker",
                |c| c.weak_memory = true,
            ),
            &[],
        ),
        row(
            with(
                Config::new("v2-blocking", V2, Blocking),
                "6.8, page_idle/DAMON walker (fast path, then slow path)",
                nop,
            ),
            &[],
        ),
        row(
            with(
                Config::new("v2-aba", V2, TryLock),
                "6.8 with a second mover D -> S (ABA), no munmap",
                |c| {
                    c.aba = true;
                    c.munmap = false;
                    c.reuse = false;
                },
            ),
            &[],
        ),
        row(
            with(
                Config::new("v2-gup", V2, TryLock),
                "6.8 after Qi Zheng's fix, with a GUP-fast thread pinning",
                |c| {
                    c.gup = true;
                    c.munmap = false;
                    c.reuse = false;
                },
            ),
            &[],
        ),
        row(
            with(
                Config::new("v2-migration", V2, FolioLocked),
                "6.8 with a migration-style walker: folio_lock, then rmap_walk with sleeping anon_vma_lock_read",
                nop,
            ),
            &[],
        ),
        row(
            with(
                Config::new("v2-strict", V2, TryLock),
                "6.8 with invariant 8 checked strictly: a walk that overlaps the mover's PTL section misses D",
                |c| {
                    c.completeness = Some(Completeness::Strict);
                    c.aba = true;
                    c.munmap = false;
                    c.reuse = false;
                },
            ),
            &[8],
        ),
        row(
            with(
                Config::new("v2-index-window", V2, TryLock),
                "6.8 checked against the model's earlier invariant 8 (a miss excused only for an index \
                 read between the two stores): the lockless map_pte breaks it",
                |c| c.completeness = Some(Completeness::IndexWindow),
            ),
            &[8],
        ),
        row(
            with(
                Config::new("v2-pvmw-sync", V2, TryLock),
                "control of v2-index-window: the same check with the earlier PVMW_SYNC-style walk \
                 (rmap_one waits for the PTL) holds",
                |c| {
                    c.completeness = Some(Completeness::IndexWindow);
                    c.pvmw_sync = true;
                },
            ),
            &[],
        ),
        row(
            with(
                Config::new("v2-fork-aba", V2, TryLock),
                "6.8, ABA hunt for S6's pointer-only re-check: after the move X is freed by munmap(S), \
                 fork's anon_vma_fork reuses the slot as a child of Y, COW reuse moves F into it; \
                 closed: the walker's folio reference makes wp_can_reuse_anon_folio refuse",
                |c| {
                    c.fork = true;
                    c.reuse = false;
                },
            ),
            &[],
        ),
        row(
            with(
                Config::new("v3", V3, TryLock),
                "newest: walkers hold the folio lock, mover takes no anon_vma lock",
                nop,
            ),
            &[],
        ),
        row(
            with(
                Config::new("v3-blocking", V3, Blocking),
                "newest, page_idle/DAMON walker (trylocks the folio too)",
                nop,
            ),
            &[],
        ),
        row(
            with(
                Config::new("v3-aba", V3, TryLock),
                "newest, second mover D -> S (ABA), no munmap",
                |c| {
                    c.aba = true;
                    c.munmap = false;
                    c.reuse = false;
                },
            ),
            &[],
        ),
        row(
            with(
                Config::new("v3-batch", V3, TryLock),
                "newest, F in the middle of a PTE batch: folio_trylock'd and folio_unlock'ed under the \
                 held PTLs, before flush_tlb_range and double_pt_unlock",
                |c| c.batched = true,
            ),
            &[],
        ),
        row(
            with(
                Config::new("v3-fork-aba", V3, TryLock),
                "newest, the fork/COW-reuse ABA threads of v2-fork-aba (invariant 8 as for V2: fork's \
                 copy_pte_range takes no folio lock, so a walk that overlaps it may miss the child's new PTE)",
                |c| {
                    c.fork = true;
                    c.reuse = false;
                    c.completeness = Some(Completeness::PtlOverlap);
                },
            ),
            &[],
        ),
        row(
            with(
                Config::new("mut-v3-mover-only", V2, TryLock),
                "mutation: mover drops the anon_vma lock but walkers stay V2 (no folio lock)",
                |c| c.mutation = Some(Mutation::V3MoverOnly),
            ),
            &[3, 4, 8],
        ),
        row(
            with(
                Config::new("mut-v3-walker-unlocked", V3, TryLock),
                "mutation: V3 with one walker not converted to take the folio lock",
                |c| c.mutation = Some(Mutation::V3WalkerNoFolioLock),
            ),
            &[1, 2, 3, 4, 8],
        ),
        row_wm(
            with(
                Config::new("mut-index-first", V2, TryLock),
                "mutation: index stored before mapping (V2, invariant 8 strict): closes the window under SC only; \
                 without a barrier a weakly ordered CPU still shows the old index",
                |c| {
                    c.mutation = Some(Mutation::IndexBeforeMapping);
                    c.completeness = Some(Completeness::Strict);
                    // Ask the index-order question alone: a walk that waits for the PTL
                    // cannot miss D for any other reason.
                    c.pvmw_sync = true;
                    c.weak_memory = true;
                    c.aba = true;
                    c.munmap = false;
                    c.reuse = false;
                },
            ),
            &[],
            &[8],
        ),
        row(
            with(
                Config::new("mut-cached-pgoff", V3, TryLock),
                "mutation: walker reads folio->index before taking the folio lock (V3)",
                |c| c.mutation = Some(Mutation::WalkerCachesPgoff),
            ),
            &[8],
        ),
        row(
            with(
                Config::new("mut-prefix-pin", V2, TryLock),
                "mutation: the order before Qi Zheng's fix: folio_move_anon_rmap and the index store before \
                 ptep_clear_flush and the pin re-check",
                |c| {
                    c.mutation = Some(Mutation::PreFixPinOrder);
                    c.gup = true;
                    c.munmap = false;
                    c.reuse = false;
                },
            ),
            &[6, 8],
        ),
        row(
            with(
                Config::new("mut-split-ptl", V2, TryLock),
                "mutation: the mover takes the PTLs one at a time (clear src, unlock, lock dst, set): \
                 F is briefly mapped by no PTE",
                |c| c.mutation = Some(Mutation::SplitPtl),
            ),
            &[5],
        ),
        row(
            with(
                Config::new("mut-anon-before-folio", V2, FolioLocked),
                "mutation: the mover takes anon_vma_lock_write before folio_lock; a migration-style \
                 walker (folio locked, sleeping anon_vma_lock_read) deadlocks with it",
                |c| c.mutation = Some(Mutation::AnonLockBeforeFolioLock),
            ),
            &[9],
        ),
        row(
            with(
                Config::new("mut-walker-no-ref", V2, TryLock),
                "mutation: v2-fork-aba with a walker that holds no folio reference: COW reuse moves F \
                 into X's reused slot (root Y), S6's pointer compare passes, the walker holds X's \
                 rwsem and walks and unlocks the wrong root",
                |c| {
                    c.mutation = Some(Mutation::WalkerWithoutFolioRef);
                    c.fork = true;
                    c.reuse = false;
                },
            ),
            &[1, 3],
        ),
        row(
            with(
                Config::new("fix-s6-root-recheck", V2, TryLock),
                "control of mut-walker-no-ref: the same threads with S6 also re-checking \
                 anon_vma->root against the saved root (a proposed hardening) hold",
                |c| {
                    c.mutation = Some(Mutation::WalkerWithoutFolioRef);
                    c.s6_recheck_root = true;
                    c.fork = true;
                    c.reuse = false;
                },
            ),
            &[],
        ),
    ]
}
