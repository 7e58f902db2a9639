//! What the run believes is where: every logical page (a tag: id and generation) in exactly one
//! slot, the slots grouped in blocks that a thread locks before touching them.
//!
//! The arena is a set of **pairs** of regions of equal size. Page `k` of a pair lives at offset `k`
//! of one side or the other, so movers move it back and forth between the two VMAs (two
//! `anon_vma`s): the same folio changes `mapping` and `index` again and again.

use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::sys::Mapping;

/// Pages per lock block: 256 KiB, so two movers can work on different parts of one THP.
pub(crate) const BLOCK_PAGES: usize = 64;

/// The contents of one page slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Content {
    /// Nothing mapped (`pte_none`).
    Hole,
    /// A zero page (the huge zero page moved in): present, reads as zeros, no tag.
    Zero,
    /// A tagged page.
    Page { id: u32, gen: u32 },
    /// A page the run did not place (found where it expected a hole, or with the wrong tag
    /// after a violation was reported): movable, never checked again.
    Foreign,
}

impl Content {
    /// Whether something occupies the slot (present or swapped, as pagemap reports it).
    pub(crate) fn occupied(self) -> bool {
        !matches!(self, Content::Hole)
    }
}

/// One slot: its contents and the fork generation the page was last made exclusive in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) content: Content,
    /// `forks_done` read before the page was last written: a fork started later may have
    /// shared it (then MOVE may answer EBUSY).
    pub(crate) excl_mark: u32,
}

impl Slot {
    pub(crate) const HOLE: Slot = Slot {
        content: Content::Hole,
        excl_mark: 0,
    };
}

/// Whether page `id` is a KSM twin: its contents equal every other twin of its class, so KSM can
/// merge it (and MOVE may then answer EBUSY).
pub(crate) fn is_twin(id: u32) -> bool {
    id % 8 == 7
}

/// The word offsets the tag occupies: first, second and last word of the page.
pub(crate) fn tag_word_offsets(page_size: usize) -> [usize; 3] {
    [0, 1, page_size / 8 - 1]
}

/// The three tag words of `content` under `key` (the run's seed-derived key).
pub(crate) fn tag_words(key: u64, content: Content) -> [u64; 3] {
    match content {
        Content::Hole | Content::Zero | Content::Foreign => [0; 3],
        Content::Page { id, .. } if is_twin(id) => {
            let class = u64::from(id / 8 % 4);
            let w = ((key ^ 0x7457_494e_0000_0000) & !7) | (class + 1);
            [w, w, w]
        }
        Content::Page { id, gen } => {
            let w0 = (u64::from(id) << 32 | u64::from(gen)) | 1 << 63;
            [w0, w0 ^ key, !w0 ^ key.rotate_left(17)]
        }
    }
}

/// The words a check expects to read for `content`: `None` when nothing is to be checked (a
/// hole is never read, a foreign page has no known tag).
pub(crate) fn expected_words(key: u64, content: Content) -> Option<[u64; 3]> {
    match content {
        Content::Hole | Content::Foreign => None,
        Content::Zero | Content::Page { .. } => Some(tag_words(key, content)),
    }
}

/// One region of a pair: its mapping and its blocks of slots.
#[derive(Debug)]
pub(crate) struct Side {
    pub(crate) map: Mapping,
    pub(crate) thp: bool,
    pub(crate) blocks: Vec<Mutex<Vec<Slot>>>,
}

/// Two regions of the same size; page `k` is at offset `k` of one of them.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) sides: [Side; 2],
}

impl Pair {
    pub(crate) fn pages(&self) -> usize {
        self.sides[0].map.pages()
    }
}

/// The locked blocks covering pages `[first, first + len)` of both sides of a pair (or one side).
#[derive(Debug)]
pub(crate) struct Window<'a> {
    pub(crate) first_block: usize,
    guards: [Vec<MutexGuard<'a, Vec<Slot>>>; 2],
}

impl<'a> Window<'a> {
    /// Try-locks the blocks of pages `[first, first + len)` on the sides in `sides`; `None` if any
    /// is taken (everything is released again, so threads never wait on each other in a cycle).
    pub(crate) fn try_lock(
        pair: &'a Pair,
        sides: &[usize],
        first: usize,
        len: usize,
    ) -> Option<Window<'a>> {
        let first_block = first / BLOCK_PAGES;
        let last_block = (first + len - 1) / BLOCK_PAGES;
        let mut guards: [Vec<MutexGuard<'a, Vec<Slot>>>; 2] = [Vec::new(), Vec::new()];
        for &side in sides {
            for b in first_block..=last_block {
                match pair.sides[side].blocks[b].try_lock() {
                    Ok(g) => guards[side].push(g),
                    // A thread that panicked while holding a block already failed the run.
                    Err(TryLockError::Poisoned(p)) => guards[side].push(p.into_inner()),
                    Err(TryLockError::WouldBlock) => return None,
                }
            }
        }
        Some(Window {
            first_block,
            guards,
        })
    }

    pub(crate) fn slot(&self, side: usize, page: usize) -> Slot {
        let b = page / BLOCK_PAGES - self.first_block;
        self.guards[side][b][page % BLOCK_PAGES]
    }

    pub(crate) fn slot_mut(&mut self, side: usize, page: usize) -> &mut Slot {
        let b = page / BLOCK_PAGES - self.first_block;
        &mut self.guards[side][b][page % BLOCK_PAGES]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_by_id_and_generation_and_twins_collide_by_class() {
        let key = 0x1234_5678_9abc_def0;
        let a = tag_words(key, Content::Page { id: 1, gen: 0 });
        let b = tag_words(key, Content::Page { id: 1, gen: 1 });
        let c = tag_words(key, Content::Page { id: 2, gen: 0 });
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a[0], 0, "a tagged page never reads as a hole");
        let t1 = tag_words(key, Content::Page { id: 7, gen: 0 });
        let t2 = tag_words(key, Content::Page { id: 7 + 32, gen: 5 });
        assert!(is_twin(7) && is_twin(39));
        assert_eq!(t1, t2, "twins of one class have identical contents");
        assert_eq!(tag_words(key, Content::Zero), [0; 3]);
    }
}
