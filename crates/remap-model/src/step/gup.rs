//! The GUP-fast thread: a lockless walk that pins F when a PTE maps it.

use super::Ctx;
use crate::state::*;

/// The GUP-fast thread's only step: pin F if some PTE maps it.
pub(super) fn gup_step(st: &mut State, tid: usize, ctx: &mut Ctx) -> bool {
    let mapped = st.vma.iter().any(|v| v.pte);
    if mapped {
        st.folio.pinned = true;
        ctx.say(|| {
            "GUP-fast: lockless walk finds F; try_grab_folio(FOLL_PIN) (folio_maybe_dma_pinned)"
                .into()
        });
    } else {
        ctx.say(|| "GUP-fast: no present PTE, nothing pinned".into());
    }
    st.threads[tid] = Thread::Gup(true);
    true
}
