//! The mutators: check every page of a locked block against the model and pagemap, and write
//! new generations into some.

use std::sync::atomic::Ordering;

use crate::model::{self, Content, Window, BLOCK_PAGES};
use crate::report::ViolationKind;
use crate::rng::Rng;

use super::Shared;

/// What a mutator thread does: lock a block, check every page against the model and pagemap,
/// write new generations into some (its own: it holds the block).
pub(crate) fn mutator(sh: &Shared, tid: usize, mut rng: Rng) {
    let name = format!("mutator-{tid}");
    let offs = model::tag_word_offsets(sh.page);
    while !sh.stopping() {
        let pair = &sh.pairs[rng.below(sh.pairs.len())];
        let side = rng.below(2);
        let b = rng.below(pair.sides[side].blocks.len());
        let first = b * BLOCK_PAGES;
        let Some(mut win) = Window::try_lock(pair, &[side], first, BLOCK_PAGES) else {
            remap::counters::bump(&sh.stats.contention);
            continue;
        };
        let map = &pair.sides[side].map;
        sh.check_block_occupancy(&name, map, &mut win, side, first, BLOCK_PAGES);
        let write_odds = rng.range(2, 8);
        for page in first..first + BLOCK_PAGES {
            let slot = win.slot(side, page);
            if !slot.content.occupied() {
                continue;
            }
            if let Err(why) = sh.check_page(map, page, slot.content) {
                sh.violation(
                    ViolationKind::WrongContent,
                    &name,
                    why,
                    vec![map.addr() + page * sh.page],
                );
                win.slot_mut(side, page).content = Content::Foreign;
                continue;
            }
            if let Content::Page { id, gen } = slot.content {
                if rng.one_in(write_odds) {
                    let forks_done = sh.forks_done.load(Ordering::SeqCst);
                    let next = if model::is_twin(id) {
                        slot.content
                    } else {
                        Content::Page {
                            id,
                            gen: gen.wrapping_add(1),
                        }
                    };
                    let words = model::tag_words(sh.key, next);
                    for (w, v) in offs.iter().zip(words) {
                        map.write_word(page, *w, v);
                    }
                    let s = win.slot_mut(side, page);
                    s.content = next;
                    s.excl_mark = forks_done;
                    remap::counters::bump(&sh.stats.written);
                    sh.oplog
                        .record(tid, "write", map.addr() + page * sh.page, 0, 1, 0, 1);
                }
            }
        }
        drop(win);
        if rng.one_in(4) {
            std::thread::yield_now();
        }
    }
}
