//! The final audit, after every thread stopped: each slot against pagemap and its tag, every
//! logical page exactly once.

use crate::model::{Content, Window};
use crate::report::ViolationKind;

use super::Shared;

/// The final audit, single-threaded after every thread stopped: each slot against pagemap and
/// its tag, and every logical page exactly once.
pub(crate) fn audit(sh: &Shared) {
    let mut seen = vec![0u8; sh.pair_ids as usize];
    for pair in &sh.pairs {
        for side in 0..2 {
            let map = &pair.sides[side].map;
            let pages = map.pages();
            let Some(mut win) = Window::try_lock(pair, &[side], 0, pages) else {
                sh.violation(
                    ViolationKind::Harness,
                    "audit",
                    "a block is still locked".into(),
                    vec![],
                );
                continue;
            };
            sh.check_block_occupancy("audit", map, &mut win, side, 0, pages);
            for page in 0..pages {
                let content = win.slot(side, page).content;
                if let Content::Page { id, .. } = content {
                    if let Some(c) = seen.get_mut(id as usize) {
                        *c = c.saturating_add(1);
                    }
                }
                if let Err(why) = sh.check_page(map, page, content) {
                    sh.violation(
                        ViolationKind::WrongContent,
                        "audit",
                        why,
                        vec![map.addr() + page * sh.page],
                    );
                }
            }
        }
    }
    for (id, &count) in seen.iter().enumerate() {
        if count != 1 {
            let kind = if count == 0 {
                ViolationKind::LostPage
            } else {
                ViolationKind::DuplicatePage
            };
            sh.violation(
                kind,
                "audit",
                format!("logical page {id} is held by {count} slots"),
                vec![],
            );
        }
    }
}
