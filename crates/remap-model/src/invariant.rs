//! The nine invariants of `docs/rmap-protocol.md` section 4, each named after the kernel rule it checks.

use std::fmt;

/// One invariant of the rmap / UFFDIO_MOVE protocol.
///
/// The number is the one used in `docs/rmap-protocol.md` section 4 and in the `remap model` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// Invariant 1, Lock balance: every `up_read`/`up_write` releases an rwsem this thread holds, the walker
    /// unlocks the rwsem it locked, the interval tree is only read or written with the root rwsem
    /// held, and nobody exits holding one.
    ///
    /// Kernel rule: `anon_vma_unlock_read` re-reads `anon_vma->root`, so the `folio_lock_anon_vma_read`
    /// caller must still own the anon_vma it returned; the failure branch of S6 releases the *saved*
    /// root instead. `rmap_walk_anon` walks `anon_vma->rb_root` under `anon_vma_lock_read`.
    AnonVmaUnlockMatchesLock,
    /// Invariant 2, No freed walk: while walking or unlocking an anon_vma, its slot is live and has the
    /// generation seen at S1, unless the slot was reused and the folio has since moved into it
    /// (then it is the folio's current anon_vma, and whether the walker holds its root is
    /// invariant 1's and 3's question).
    ///
    /// Kernel rule: `anon_vma_free` pairs its `rwsem_is_locked` check with the walker's
    /// "trylock, then `folio_mapped`" in `folio_lock_anon_vma_read`, so `rmap_walk_anon` never walks a
    /// `SLAB_TYPESAFE_BY_RCU` slot that was freed or reused.
    RmapWalkAnonVmaAlive,
    /// Invariant 3, Currency: when `folio_lock_anon_vma_read` returns `av`, `folio->mapping == av|ANON`, and
    /// during the walk the root of `folio->mapping` stays the root the walker locked.
    ///
    /// Kernel rule: the `folio->mapping` re-check after `down_read_trylock`/`anon_vma_lock_read` in
    /// `folio_lock_anon_vma_read` (V2), or the folio lock held by every walker (V3,
    /// `rmap_walk_anon` asserts `folio_test_locked`).
    FolioLockAnonVmaReadCurrent,
    /// Invariant 4, Mover discipline: every store to `folio->mapping` or `folio->index` is made with the folio
    /// locked and, when walkers run without the folio lock, with the old root's rwsem held for
    /// writing (unless the folio is unmapped).
    ///
    /// Kernel rule: `folio_move_anon_rmap` asserts the folio lock; `move_pages_pte` takes
    /// `anon_vma_lock_write(src_anon_vma)` in 6.8.
    FolioMoveAnonRmapLocked,
    /// Invariant 5, PTE atomicity: in every state in which no page-table lock of S or D is held (so
    /// any thread could take the PTLs and look), the number of PTEs mapping the folio equals
    /// `folio_mapped`'s count (0 or 1), and a move never changes the mapcount.
    ///
    /// Kernel rule: `move_present_pte` clears the source and sets the destination under
    /// `double_pt_lock` with no rmap add or remove.
    MovePresentPteAtomic,
    /// Invariant 6, Failure atomicity: a move that returns an error leaves `mapping`, `index` and both PTEs
    /// as they were when it took the folio lock.
    ///
    /// Kernel rule: `move_present_pte` after Qi Zheng's "fix unexpected change to src_folio when
    /// UFFDIO_MOVE fails" updates mapping and index only after the last `folio_maybe_dma_pinned`
    /// check.
    MovePresentPteFailureAtomic,
    /// Invariant 7, Refcount sanity: anon_vma refcounts never go negative, a slot is freed only at 0 and only
    /// once, and the walker's slow-path reference is balanced.
    ///
    /// Kernel rule: `put_anon_vma` / `__put_anon_vma` / `anon_vma_free`, and the
    /// `atomic_inc_not_zero` / `atomic_dec_and_test` pair in `folio_lock_anon_vma_read`.
    PutAnonVmaBalanced,
    /// Invariant 8, Completeness: a walk that obtained an anon_vma visits every VMA whose PTE maps the folio
    /// at the end of the walk. Strict for V3; weak for V0–V2: a miss is excused when the walker
    /// read `folio->index` between a mover's mapping store and index store.
    ///
    /// Kernel rule: `rmap_walk_anon` computes `pgoff_start = folio_pgoff(folio)` after locking and
    /// `vma_address` for each avc; `folio_referenced` relies on it to see every young PTE.
    RmapWalkAnonComplete,
    /// Invariant 9, No deadlock: some thread can always run until all finish, and blocking acquisitions
    /// follow the order mmap_lock, folio lock, anon_vma root rwsem, PTL.
    ///
    /// Kernel rule: the lock order documented at the top of `mm/rmap.c`, followed by
    /// `move_pages_pte` (`folio_lock`, `anon_vma_lock_write`, `double_pt_lock`).
    LockOrderNoDeadlock,
}

impl Invariant {
    /// All invariants, in `docs/rmap-protocol.md` section 4 order.
    pub const ALL: [Invariant; 9] = [
        Invariant::AnonVmaUnlockMatchesLock,
        Invariant::RmapWalkAnonVmaAlive,
        Invariant::FolioLockAnonVmaReadCurrent,
        Invariant::FolioMoveAnonRmapLocked,
        Invariant::MovePresentPteAtomic,
        Invariant::MovePresentPteFailureAtomic,
        Invariant::PutAnonVmaBalanced,
        Invariant::RmapWalkAnonComplete,
        Invariant::LockOrderNoDeadlock,
    ];

    /// The number in `docs/rmap-protocol.md` section 4 (1..=9).
    pub fn number(self) -> u8 {
        match self {
            Invariant::AnonVmaUnlockMatchesLock => 1,
            Invariant::RmapWalkAnonVmaAlive => 2,
            Invariant::FolioLockAnonVmaReadCurrent => 3,
            Invariant::FolioMoveAnonRmapLocked => 4,
            Invariant::MovePresentPteAtomic => 5,
            Invariant::MovePresentPteFailureAtomic => 6,
            Invariant::PutAnonVmaBalanced => 7,
            Invariant::RmapWalkAnonComplete => 8,
            Invariant::LockOrderNoDeadlock => 9,
        }
    }

    /// Short name used in table headers.
    pub fn short(self) -> &'static str {
        match self {
            Invariant::AnonVmaUnlockMatchesLock => "lock-balance",
            Invariant::RmapWalkAnonVmaAlive => "no-freed-walk",
            Invariant::FolioLockAnonVmaReadCurrent => "currency",
            Invariant::FolioMoveAnonRmapLocked => "mover-discipline",
            Invariant::MovePresentPteAtomic => "pte-atomicity",
            Invariant::MovePresentPteFailureAtomic => "failure-atomicity",
            Invariant::PutAnonVmaBalanced => "refcount",
            Invariant::RmapWalkAnonComplete => "completeness",
            Invariant::LockOrderNoDeadlock => "no-deadlock",
        }
    }

    /// The kernel function(s) whose rule this invariant checks.
    pub fn kernel_function(self) -> &'static str {
        match self {
            Invariant::AnonVmaUnlockMatchesLock => {
                "folio_lock_anon_vma_read / anon_vma_unlock_read"
            }
            Invariant::RmapWalkAnonVmaAlive => "anon_vma_free / rmap_walk_anon",
            Invariant::FolioLockAnonVmaReadCurrent => "folio_lock_anon_vma_read",
            Invariant::FolioMoveAnonRmapLocked => "folio_move_anon_rmap",
            Invariant::MovePresentPteAtomic => "move_present_pte",
            Invariant::MovePresentPteFailureAtomic => "move_present_pte (error path)",
            Invariant::PutAnonVmaBalanced => "put_anon_vma / __put_anon_vma",
            Invariant::RmapWalkAnonComplete => "rmap_walk_anon / folio_referenced",
            Invariant::LockOrderNoDeadlock => "mm/rmap.c lock order / move_pages_pte",
        }
    }

    /// Index 0..9 for bitsets.
    pub fn bit(self) -> u16 {
        1 << (self.number() - 1)
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.number(), self.short())
    }
}

/// One invariant violation found while executing a step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// What exactly went wrong, in kernel terms.
    pub message: String,
}
