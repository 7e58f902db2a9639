//! The shared kernel state of the model and the per-thread program counters.
//!
//! Everything is small `Copy`-ish plain data so a state can be hashed and cloned cheaply by the
//! explorer. Slot and VMA ids are `u8`; thread ids index [`State::threads`].

use std::fmt::Write as _;

/// anon_vma slot of the source VMA's anon_vma (X in `docs/rmap-protocol.md` section 3).
pub const SLOT_X: u8 = 0;
/// anon_vma slot of the destination VMA's anon_vma (Y).
pub const SLOT_Y: u8 = 1;
/// anon_vma slot of an unrelated process's root anon_vma (R'); a reused X becomes its child.
pub const SLOT_R: u8 = 2;
/// A free anon_vma slot that `anon_vma_fork` allocates when X is not free (Z).
pub const SLOT_Z: u8 = 3;
/// Number of anon_vma slots.
pub const NSLOT: usize = 4;
/// The source VMA (S).
pub const VMA_S: u8 = 0;
/// The destination VMA (D).
pub const VMA_D: u8 = 1;
/// The fork child's copy of D (D'), in the child's mm, with its own page table and PTL.
pub const VMA_DC: u8 = 2;
/// Number of VMAs (one PTE slot each).
pub const NVMA: usize = 3;

/// Name of an anon_vma slot as used in traces.
pub fn slot_name(slot: u8) -> &'static str {
    match slot {
        SLOT_X => "X",
        SLOT_Y => "Y",
        SLOT_R => "R'",
        _ => "Z",
    }
}

/// Name of a VMA as used in traces.
pub fn vma_name(vma: u8) -> &'static str {
    match vma {
        VMA_S => "S",
        VMA_D => "D",
        _ => "D'",
    }
}

/// Name of a thread as used in traces (A walker, B mover, C munmap, E second mover, G GUP).
pub fn thread_name(role: Role) -> &'static str {
    match role {
        Role::Walker => "A",
        Role::Mover => "B",
        Role::Munmap => "C",
        Role::MoverBack => "E",
        Role::Gup => "G",
        Role::Fork => "K",
    }
}

/// What a model thread does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reclaim (or page_idle/DAMON): `folio_referenced` -> `folio_lock_anon_vma_read` -> `rmap_walk_anon`.
    Walker,
    /// `UFFDIO_MOVE` of the folio from S to D (`move_pages_pte` -> `move_present_pte`).
    Mover,
    /// `munmap(S)`, then slab reuse of the freed anon_vma slot.
    Munmap,
    /// A second `UFFDIO_MOVE`, from D back to S (the ABA case).
    MoverBack,
    /// GUP-fast pinning the folio (`folio_maybe_dma_pinned` becomes true).
    Gup,
    /// `fork()` of the process after the move (`dup_mmap` -> `anon_vma_fork` ->
    /// `copy_pte_range`), the parent's `MADV_DONTNEED(D)`, then the child's write fault on D'
    /// (`do_wp_page` -> `wp_can_reuse_anon_folio` -> `folio_move_anon_rmap`: a same-root move).
    Fork,
}

/// A `rw_semaphore`: `count` > 0 readers, -1 writer; `readers`/`writer` are ghost holders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rwsem {
    /// Number of readers, or -1 when write-locked.
    pub count: i8,
    /// Ghost: bit `t` set when thread `t` holds it for reading.
    pub readers: u8,
    /// Ghost: the thread holding it for writing.
    pub writer: Option<u8>,
}

impl Rwsem {
    /// `rwsem_is_locked`.
    pub fn is_locked(&self) -> bool {
        self.count != 0
    }
}

/// One anon_vma slab slot (`SLAB_TYPESAFE_BY_RCU`: reused at once, rwsem survives reuse).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnonVma {
    /// Allocated (`anon_vma_alloc`) rather than freed (`anon_vma_free`).
    pub live: bool,
    /// Ghost generation, bumped on every reuse of the slot.
    pub gen: u8,
    /// `anon_vma->root` (a slot id).
    pub root: u8,
    /// `anon_vma->refcount`.
    pub refcount: i8,
    /// `anon_vma->rb_root`: bit `v` set when VMA `v` is linked (one avc per VMA).
    pub tree: u8,
    /// `anon_vma->rwsem` (only meaningful on roots; never reset by reuse).
    pub rwsem: Rwsem,
}

/// A VMA with one page and one PTE slot guarded by its own page-table lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vma {
    /// Still mapped (not yet removed by munmap).
    pub present: bool,
    /// `vma->anon_vma` (a slot id).
    pub anon_vma: u8,
    /// `vm_start` in pages.
    pub start: u8,
    /// `vm_pgoff`; the VMA covers exactly one page, so `vma_address` is valid iff pgoff matches.
    pub pgoff: u8,
    /// The PTE maps the folio (present).
    pub pte: bool,
    /// The split PTL holder.
    pub ptl: Option<u8>,
}

/// The folio being moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Folio {
    /// `PG_locked` holder.
    pub lock: Option<u8>,
    /// `folio->mapping`: `Some(slot)` means `slot | PAGE_MAPPING_ANON`; `None` would be NULL.
    pub mapping: Option<u8>,
    /// `folio->index`.
    pub index: u8,
    /// `folio_mapped()` count (`_mapcount + 1`).
    pub mapcount: i8,
    /// `folio->_refcount`.
    pub refcount: i8,
    /// `folio_maybe_dma_pinned()`.
    pub pinned: bool,
    /// `PageAnonExclusive` (cleared by fork's `folio_try_dup_anon_rmap_pte`, set by COW reuse).
    pub exclusive: bool,
    /// Ghost: a mover has done the first of its two stores (mapping, index) but not the second.
    pub half_moved: bool,
}

/// Program counter of the walker (`folio_referenced` and friends); see `docs/rmap-protocol.md` 2a.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalkerPc {
    /// Mutation: read `folio->index` before any lock.
    CachePgoff,
    /// `folio_referenced`'s preamble (page_idle's and DAMON's likewise): `pra.mapcount =
    /// folio_mapcount()`, return if 0; return if `!folio_raw_mapping()`; the anon/KSM test
    /// decides whether the folio is trylocked (V0–V2: only file and KSM folios; V3: all).
    Preamble,
    /// V3: `folio_trylock` in `folio_referenced`.
    FolioTrylock,
    /// Migration-style walker: `folio_lock` (sleeps) before `rmap_walk`.
    FolioLock,
    /// S1–S2: `rcu_read_lock`, read `folio->mapping`, test the ANON tag.
    S1,
    /// S3: `folio_mapped`.
    S3,
    /// S4: read `anon_vma->root`.
    S4,
    /// S5: `down_read_trylock(root)`.
    S5,
    /// S6: re-check `folio->mapping` (V2 fast path).
    S6,
    /// S7: `folio_mapped` under the read lock.
    S7,
    /// S8: `rwc->try_lock` bail-out.
    S8,
    /// S9: `atomic_inc_not_zero(&anon_vma->refcount)`.
    S9,
    /// S10: `folio_mapped` after taking the reference.
    S10,
    /// S11: `anon_vma_lock_read` (sleeps).
    S11,
    /// S12: re-check `folio->mapping` (V1, V2 slow path).
    S12,
    /// S13: `atomic_dec_and_test(&anon_vma->refcount)`.
    S13,
    /// `rmap_walk_anon` reads `folio->index` after locking.
    WalkStart,
    /// `rmap_walk_anon` visits VMA `n` of the tree: `rmap_one` -> `page_vma_mapped_walk` ->
    /// `map_pte`. Non-sync: `ptep_get` without the PTL, not present -> not found at once;
    /// `PVMW_SYNC`: `pte_offset_map_lock` (waits for the PTL), then `check_pte`.
    Walk(u8),
    /// Non-sync `map_pte` saw a present PTE in VMA `n`: `spin_lock(ptl)`, then `check_pte`.
    WalkLocked(u8),
    /// `anon_vma_unlock_read` at the end of the walk.
    WalkEnd,
    /// Return from `folio_referenced` (unlock the folio if locked).
    Out,
    /// Finished.
    Done,
}

/// Program counter of a mover (`move_pages_pte` / `move_present_pte`); see `docs/rmap-protocol.md` 2b.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MoverPc {
    /// `mmap_read_lock`.
    MmapLock,
    /// `validate_move_areas`: both VMAs still exist.
    Validate,
    /// `retry:` read both PTEs under their PTLs (and, with the folio held, `pte_same` against the
    /// PTE it was taken from).
    ReadPtes,
    /// Mutation `AnonLockBeforeFolioLock` only: a sleeping `folio_lock` (+ `folio_get`) after
    /// the anon_vma lock.
    FolioLock,
    /// Under the source PTL: `pte_same`, `vm_normal_folio`, `PageAnonExclusive`, `folio_get`,
    /// `folio_trylock`; unlock the PTL.
    SrcFolioTrylock,
    /// `folio_trylock` failed: `pte_unmap` both, `folio_lock` (sleeps), `goto retry` (keeps it).
    FolioLockSleep,
    /// `anon_vma_trylock_write(src_anon_vma)`.
    AnonTrylock,
    /// `anon_vma_trylock_write` failed: `pte_unmap` both, `anon_vma_lock_write` (sleeps),
    /// `goto retry` (keeps it).
    AnonLockSleep,
    /// `folio_get_anon_vma`.
    GetAnonVma,
    /// Mutation `AnonLockBeforeFolioLock` only: a sleeping `anon_vma_lock_write`.
    AnonLockWrite,
    /// `double_pt_lock`.
    DoublePtLock,
    /// `pte_same` checks and first `folio_maybe_dma_pinned` check.
    PteSame,
    /// `ptep_clear_flush`.
    Clear,
    /// Second `folio_maybe_dma_pinned` check (undo on pin).
    PinRecheck,
    /// `folio_move_anon_rmap` (store to `folio->mapping`).
    StoreMapping,
    /// `WRITE_ONCE(folio->index, linear_page_index(dst))`.
    StoreIndex,
    /// Mutation `SplitPtl`: unlock the source PTL after the clear and the stores.
    SrcUnlock,
    /// Newest (batched): `check_ptes_for_batched_move` for F, the batch's next folio, with both
    /// PTLs held: dst none, src present, `PageAnonExclusive`, not large, `folio_trylock(F)`.
    BatchTrylock,
    /// Newest (batched): `folio_unlock(F)` under the PTLs before the next folio is checked.
    BatchUnlock,
    /// Newest: one `flush_tlb_range` for the batch, with the PTLs held.
    FlushTlbRange,
    /// Newest: `folio_unlock` of the batch's last folio, still under the PTLs.
    FolioUnlockInPtl,
    /// Mutation `SplitPtl`: lock the destination PTL (spins).
    DstLock,
    /// `set_pte_at(dst)`.
    SetDst,
    /// `double_pt_unlock` (success or error).
    DoublePtUnlock,
    /// `anon_vma_unlock_write`.
    AnonUnlock,
    /// `put_anon_vma`.
    AnonPut,
    /// `folio_unlock` + `folio_put`.
    FolioUnlock,
    /// `mmap_read_unlock`.
    MmapUnlock,
    /// Finished.
    Done,
}

/// Program counter of the munmap thread (`unmap_region` / `free_pgtables`) and reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MunmapPc {
    /// `mmap_write_lock`.
    MmapWriteLock,
    /// `zap_pte_range` on S under its PTL.
    Zap,
    /// `unlink_anon_vmas`: `anon_vma_lock_write`.
    UnlinkLock,
    /// `anon_vma_interval_tree_remove`.
    Unlink,
    /// `anon_vma_unlock_write`.
    UnlinkUnlock,
    /// `put_anon_vma`.
    Put,
    /// `remove_vma` + `mmap_write_unlock`.
    RemoveVma,
    /// `anon_vma_alloc` in another process reusing the slot.
    Reuse,
    /// Finished.
    Done,
}

/// Steps of `put_anon_vma` -> `__put_anon_vma` -> `anon_vma_free`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PutPc {
    /// `atomic_dec_and_test`.
    Dec,
    /// `rwsem_is_locked(&anon_vma->root->rwsem)`.
    IsLocked,
    /// `anon_vma_lock_write` + `anon_vma_unlock_write` handshake.
    Handshake,
    /// `kmem_cache_free` (slot becomes Free) and drop of the root's reference.
    Free,
}

/// Program counter of the fork thread (K).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForkPc {
    /// `dup_mmap`: `mmap_write_lock` of the parent.
    MmapWriteLock,
    /// `anon_vma_fork` -> `anon_vma_clone(D', D)`: link D' into Y's tree under root Y.
    AnonVmaClone,
    /// `anon_vma_fork`: `anon_vma_alloc` (slab reuse of a free slot), `root = D's root`,
    /// `get_anon_vma(root)`, link D' into it under the root's rwsem.
    AnonVmaAlloc,
    /// `copy_pte_range`: copy D's PTE to D' (`folio_try_dup_anon_rmap_pte`).
    CopyPte,
    /// `mmap_write_unlock` of the parent.
    MmapWriteUnlock,
    /// The parent's `MADV_DONTNEED(D)`: `zap_pte_range` under D's PTL.
    ParentZap,
    /// The child's write fault on D': `do_wp_page` under D''s PTL, `wp_can_reuse_anon_folio`.
    CowFault,
    /// `folio_move_anon_rmap(F, D')` (same root), `SetPageAnonExclusive`.
    CowMove,
    /// `folio_unlock`; `pte_unmap_unlock(D')`.
    CowUnlock,
    /// Finished.
    Done,
}

/// Locals of the fork thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fork {
    /// Program counter.
    pub pc: ForkPc,
    /// `copy_pte_range` copied F into D'.
    pub copied: bool,
}

/// Why a move failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MoveErr {
    /// -EAGAIN (retried).
    Again,
    /// -EBUSY (pinned).
    Busy,
    /// -ENOENT (no source PTE or VMA gone).
    NoEnt,
    /// -EEXIST (destination PTE present).
    Exist,
}

impl MoveErr {
    /// errno name.
    pub fn name(self) -> &'static str {
        match self {
            MoveErr::Again => "-EAGAIN",
            MoveErr::Busy => "-EBUSY",
            MoveErr::NoEnt => "-ENOENT",
            MoveErr::Exist => "-EEXIST",
        }
    }
}

/// Snapshot of what a failed move must leave unchanged (taken under the folio lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Snap {
    /// `folio->mapping`.
    pub mapping: Option<u8>,
    /// `folio->index`.
    pub index: u8,
    /// PTE of each VMA.
    pub ptes: [bool; NVMA],
    /// `folio_mapped` count.
    pub mapcount: i8,
}

/// Locals of a walker thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Walker {
    /// Program counter.
    pub pc: WalkerPc,
    /// `anon_vma` read at S1.
    pub av: u8,
    /// Ghost: generation of that slot at S1.
    pub gen: u8,
    /// `root_anon_vma` saved at S4.
    pub root: u8,
    /// The rwsem slot this thread down_read.
    pub locked: Option<u8>,
    /// Holds a reference from S9.
    pub has_ref: bool,
    /// Holds the folio lock.
    pub folio_locked: bool,
    /// Cached pgoff (mutation) and whether it was read mid-move.
    pub cached: Option<(u8, bool)>,
    /// `pgoff` of the walk.
    pub pgoff: u8,
    /// Ghost: pgoff was read between a mover's two stores.
    pub pgoff_half: bool,
    /// Ghost: [`State::ptl_epoch`] when the walk started (the `folio_pgoff` read).
    pub walk_epoch: u8,
    /// Ghost: another thread held a page-table lock of S or D when the walk started.
    pub ptl_busy_at_start: bool,
    /// Ghost: VMAs whose PTE `rmap_one` found.
    pub visited: u8,
    /// `pra.mapcount` of `folio_referenced` (`folio_mapcount` at the preamble), decremented per
    /// mapping found; the walk stops at 0 (`folio_referenced_one` returns false). `None`: the
    /// caller does not count (page_idle, DAMON, migration).
    pub budget: Option<i8>,
    /// Active `put_anon_vma` on a slot.
    pub put: Option<(u8, PutPc)>,
}

/// Locals of a mover thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mover {
    /// Program counter.
    pub pc: MoverPc,
    /// Source VMA.
    pub src: u8,
    /// Destination VMA.
    pub dst: u8,
    /// `src_anon_vma` with a reference held.
    pub av: Option<u8>,
    /// The root rwsem slot this thread down_write.
    pub locked: Option<u8>,
    /// Holds the folio lock.
    pub folio_locked: bool,
    /// Holds a folio reference (`folio_get` in `move_pages_pte`; the newest kernel drops it
    /// under the PTLs, the page table holding one).
    pub has_ref: bool,
    /// Newest kernel, batched: F is not the first folio of its `move_present_ptes` batch.
    pub batch: bool,
    /// Inside the PTL section (both PTLs; with `SplitPtl`, one of them at a time).
    pub in_ptl: bool,
    /// Snapshot for failure atomicity.
    pub snap: Option<Snap>,
    /// Pending error.
    pub err: Option<MoveErr>,
    /// Final result, when done.
    pub result: Option<Result<(), MoveErr>>,
    /// Active `put_anon_vma`.
    pub put: Option<(u8, PutPc)>,
}

/// Locals of the munmap thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Munmap {
    /// Program counter.
    pub pc: MunmapPc,
    /// The root slot write-locked.
    pub locked: Option<u8>,
    /// Active `put_anon_vma`.
    pub put: Option<(u8, PutPc)>,
}

/// One model thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Thread {
    /// The rmap walker.
    Walker(Walker),
    /// A mover (B or E).
    Mover(Mover),
    /// The munmap thread.
    Munmap(Munmap),
    /// GUP-fast: `true` once done.
    Gup(bool),
    /// The fork thread.
    Fork(Fork),
}

impl Thread {
    /// The thread has finished.
    pub fn done(&self) -> bool {
        match self {
            Thread::Walker(w) => w.pc == WalkerPc::Done,
            Thread::Mover(m) => m.pc == MoverPc::Done,
            Thread::Munmap(c) => c.pc == MunmapPc::Done,
            Thread::Gup(done) => *done,
            Thread::Fork(k) => k.pc == ForkPc::Done,
        }
    }
}

/// The whole model state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// The folio F.
    pub folio: Folio,
    /// anon_vma slots X, Y, R', Z.
    pub av: [AnonVma; NSLOT],
    /// VMAs S, D and the fork child's D'.
    pub vma: [Vma; NVMA],
    /// `mmap_lock`: > 0 readers, -1 writer.
    pub mm: i8,
    /// The threads.
    pub threads: Vec<Thread>,
    /// Roles of the threads (same order).
    pub roles: Vec<Role>,
    /// Ghost: bumped by every step of a thread other than the walker that takes or drops a
    /// page-table lock of S or D or changes a PTE (invariant 8's `PtlOverlap`).
    pub ptl_epoch: u8,
    /// Scheduler: last thread run (`u8::MAX` initially).
    pub last: u8,
    /// Scheduler: preemptions used so far.
    pub preemptions: u8,
}

impl State {
    /// All threads finished.
    pub fn all_done(&self) -> bool {
        self.threads.iter().all(Thread::done)
    }

    /// Named, rendered view of the shared state (for trace diffs).
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let f = &self.folio;
        out.push(("F.lock".into(), self.owner(f.lock)));
        out.push((
            "F.mapping".into(),
            match f.mapping {
                Some(s) => format!("{}|ANON", slot_name(s)),
                None => "NULL".into(),
            },
        ));
        out.push(("F.index".into(), format!("{:#x}", f.index)));
        out.push(("F.mapcount".into(), f.mapcount.to_string()));
        out.push(("F.refcount".into(), f.refcount.to_string()));
        out.push(("F.pinned".into(), f.pinned.to_string()));
        out.push(("F.PageAnonExclusive".into(), f.exclusive.to_string()));
        for (i, a) in self.av.iter().enumerate() {
            let n = slot_name(u8::try_from(i).unwrap_or(u8::MAX));
            out.push((
                format!("{n}.state"),
                format!("{} gen {}", if a.live { "live" } else { "FREE" }, a.gen),
            ));
            out.push((format!("{n}.root"), slot_name(a.root).into()));
            out.push((format!("{n}.refcount"), a.refcount.to_string()));
            let mut tree = String::from("{");
            for v in 0..NVMA {
                if a.tree & (1 << v) != 0 {
                    if tree.len() > 1 {
                        tree.push(',');
                    }
                    tree.push_str(vma_name(u8::try_from(v).unwrap_or(0)));
                }
            }
            tree.push('}');
            out.push((format!("{n}.tree"), tree));
            out.push((format!("{n}.rwsem"), self.rwsem_text(&a.rwsem)));
        }
        for (i, v) in self.vma.iter().enumerate() {
            let n = vma_name(u8::try_from(i).unwrap_or(0));
            out.push((
                format!("{n}.vma"),
                if v.present { "mapped" } else { "unmapped" }.into(),
            ));
            out.push((format!("{n}.pte"), if v.pte { "F" } else { "none" }.into()));
            out.push((format!("{n}.ptl"), self.owner(v.ptl)));
        }
        out.push((
            "mmap_lock".into(),
            match self.mm {
                0 => "free".into(),
                -1 => "write".into(),
                n => format!("read x{n}"),
            },
        ));
        out
    }

    fn owner(&self, o: Option<u8>) -> String {
        match o {
            Some(t) => format!("held by {}", thread_name(self.roles[usize::from(t)])),
            None => "free".into(),
        }
    }

    fn rwsem_text(&self, r: &Rwsem) -> String {
        let mut s = match r.count {
            0 => "free".to_string(),
            -1 => "write".to_string(),
            n => format!("read x{n}"),
        };
        let mut holders = Vec::new();
        for (t, role) in self.roles.iter().enumerate() {
            if r.readers & (1 << t) != 0 {
                holders.push(format!("R:{}", thread_name(*role)));
            }
        }
        if let Some(w) = r.writer {
            holders.push(format!("W:{}", thread_name(self.roles[usize::from(w)])));
        }
        if !holders.is_empty() {
            let _ = write!(s, " [{}]", holders.join(" "));
        }
        s
    }
}
