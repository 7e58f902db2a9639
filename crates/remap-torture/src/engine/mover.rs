//! The movers: one MOVE per run of movable pages in a locked window, judged against the state
//! before and checked against pagemap after ([`move_checked`], which the flip driver uses too).

use std::sync::atomic::Ordering;
use std::time::Duration;

use remap::inspect::PM_PRESENT;
use uffd::{MoveFlags, RangeError};

use crate::allowed::{self, Context, Outcome, PageCase, Seen};
use crate::model::{self, Content, Pair, Slot, Window};
use crate::report::ViolationKind;
use crate::rng::Rng;
use crate::sys::{self, Advice, Mapping};
use crate::Inject;

use super::{occupied, swapped, Shared};

/// What a mover thread does, until the run stops.
pub(crate) fn mover(sh: &Shared, tid: usize, mut rng: Rng) {
    let name = format!("mover-{tid}");
    let mut misreport_next = false;
    while !sh.stopping() {
        let pair = &sh.pairs[rng.below(sh.pairs.len())];
        let pages = pair.pages();
        // Batches of every size 1-512 (log-uniform), PMD-aligned whole PMDs, and long runs.
        let (k, w) = match rng.below(8) {
            0 | 1 => (rng.below(pages / 512) * 512, 512),
            2..=4 => {
                let w = rng.batch_len(512);
                (rng.below(pages - w + 1), w)
            }
            _ => {
                let w = rng.range(128, 512);
                (rng.below(pages - w + 1), w)
            }
        };
        let Some(mut win) = Window::try_lock(pair, &[0, 1], k, w) else {
            remap::counters::bump(&sh.stats.contention);
            std::thread::yield_now();
            continue;
        };
        if let Some(inject) = sh.cfg.inject {
            if sh.elapsed() >= sh.cfg.inject_after.as_secs_f64()
                && !sh.injected.swap(true, Ordering::SeqCst)
            {
                misreport_next = inject_fault(sh, tid, pair, &mut win, k, w, inject);
            }
        }
        let s0 = win.slot(0, k).content.occupied();
        let s1 = win.slot(1, k).content.occupied();
        let src = match (s0, s1) {
            (true, false) => 0,
            (false, true) => 1,
            _ => rng.below(2),
        };
        let dst = 1 - src;
        let holes = rng.one_in(3);
        // Gather the window on `dst`: one MOVE per run of movable pages, so runs grow long and
        // later windows move many pages per ioctl.
        let mut i = 0;
        let mut ioctls = 0;
        let mut moved_any = false;
        while i < w && ioctls < 16 && !sh.stopping() {
            let movable = |win: &Window<'_>, j: usize| {
                let a = win.slot(src, k + j).content;
                !win.slot(dst, k + j).content.occupied() && (a.occupied() || holes)
            };
            if !movable(&win, i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < w && movable(&win, i) {
                i += 1;
            }
            let mut n = i - start;
            if i < w && rng.one_in(10) {
                // Overshoot on purpose: the kernel must stop exactly at the first unmovable page.
                n = (n + rng.range(1, 16)).min(w - start);
            }
            let mut flags = MoveFlags::empty();
            if holes {
                flags |= MoveFlags::ALLOW_SRC_HOLES;
            }
            if rng.one_in(2) {
                flags |= MoveFlags::DONTWAKE;
            }
            let at = k + start;
            let outcome = move_checked(
                sh,
                &name,
                tid,
                pair,
                &mut win,
                src,
                at,
                n,
                flags,
                &mut misreport_next,
            );
            ioctls += 1;
            let done = outcome.moved(n);
            moved_any |= done > 0;
            if flags.contains(MoveFlags::DONTWAKE) && done > 0 && rng.one_in(4) {
                let d = &pair.sides[dst].map;
                let _ = sh.uffd.wake(d.page_ptr(at), done * sh.page);
            }
            if done < n && outcome != Outcome::Failed(rustix::io::Errno::AGAIN) {
                // Refused (EBUSY after a fork or a KSM merge, most likely): write the rest of
                // the run, as a runtime would, which makes its pages exclusive again.
                for j in at + done..at + n {
                    make_exclusive(sh, tid, pair, &mut win, src, j);
                }
            }
            i = start + done.max(1);
        }
        if !moved_any {
            clear_zero_pages(sh, tid, pair, &mut win, k, w, &mut rng);
        }
        drop(win);
        if rng.one_in(64) {
            std::thread::yield_now();
        }
        if rng.one_in(2048) {
            std::thread::sleep(Duration::from_micros(rng.range(10, 2000) as u64));
        }
    }
}

/// Issues one MOVE of pages `[k, k + n)` from side `src` to the other side, judges the result
/// against the state and against what pagemap shows happened, and updates the model. With
/// `misreport_pending` (fault injection) a MOVE that moved everything is reported as EEXIST, and
/// the flag cleared.
#[allow(clippy::too_many_arguments)]
pub(crate) fn move_checked(
    sh: &Shared,
    name: &str,
    tid: usize,
    pair: &Pair,
    win: &mut Window<'_>,
    src: usize,
    k: usize,
    n: usize,
    flags: MoveFlags,
    misreport_pending: &mut bool,
) -> Outcome {
    let dst = 1 - src;
    let (smap, dmap) = (&pair.sides[src].map, &pair.sides[dst].map);
    let thp = pair.sides[src].thp;
    let pre_src = sh.entries(smap, k, n);
    let pre_dst = sh.entries(dmap, k, n);
    // The model and pagemap must agree before the move, or the judging below is meaningless.
    for i in 0..n {
        for (side, map, entry) in [(src, smap, pre_src[i]), (dst, dmap, pre_dst[i])] {
            if win.slot(side, k + i).content.occupied() != occupied(entry) {
                sh.check_block_occupancy(name, map, win, side, k + i, 1);
            }
        }
    }
    let result = sys::move_pages(&sh.uffd, dmap, k, smap, k, n, flags);
    let post_src = sh.entries(smap, k, n);
    let post_dst = sh.entries(dmap, k, n);
    remap::counters::bump(&sh.stats.moves);
    let mut outcome = Outcome::from_result(&result, sh.page);
    // The injected misreport applies to the first MOVE that moves everything (one that stops
    // early has nothing to mis-report), so it is never used up by a partial or refused MOVE.
    let misreport = *misreport_pending && outcome == Outcome::All;
    if misreport {
        *misreport_pending = false;
        outcome = Outcome::Failed(rustix::io::Errno::EXIST);
    }
    sh.results.count(outcome.bucket());
    let mut cases: Vec<PageCase> = (0..n)
        .map(|i| {
            let s = win.slot(src, k + i);
            PageCase {
                dst_occupied: win.slot(dst, k + i).content.occupied(),
                src_occupied: s.content.occupied(),
                may_busy: sh.may_busy(s, thp, pre_src[i], post_src[i]),
            }
        })
        .collect();
    let ctx = Context {
        allow_src_holes: flags.contains(MoveFlags::ALLOW_SRC_HOLES),
        events_possible: sh.ctx_events,
        nomem_possible: sh.ctx_nomem,
    };
    let (src_addr, dst_addr) = (smap.addr() + k * sh.page, dmap.addr() + k * sh.page);
    let moved = outcome.moved(n);
    let seq = sh.oplog.record(
        tid,
        "move",
        dst_addr,
        src_addr,
        n,
        flags.bits(),
        match result {
            Ok(_) => n as i64,
            Err(RangeError::Partial { done }) => (done / sh.page) as i64,
            Err(e) => -i64::from(e.errno().raw_os_error()),
        },
    );
    let describe = |cases: &[PageCase]| {
        let occ = |e: &[u64]| {
            e.iter()
                .map(|&x| {
                    if x & PM_PRESENT != 0 && x & remap::inspect::PM_EXCLUSIVE != 0 {
                        'P'
                    } else if x & PM_PRESENT != 0 {
                        'p'
                    } else if swapped(x) {
                        'S'
                    } else {
                        '.'
                    }
                })
                .collect::<String>()
        };
        format!(
            "op #{seq}: MOVE {n} pages {src_addr:#x} -> {dst_addr:#x} flags {flags:?} (src VMA THP-enabled {thp}) gave {result:?}{}; \
             src before {} after {}; dst before {} after {}; may-busy {}",
            if misreport { " (mis-reported as EEXIST by fault injection)" } else { "" },
            occ(&pre_src),
            occ(&post_src),
            occ(&pre_dst),
            occ(&post_dst),
            cases.iter().map(|c| if c.may_busy { 'b' } else { '-' }).collect::<String>(),
        )
    };
    let mut judged = allowed::judge(&cases, ctx, outcome);
    if judged.is_err() && moved < n && !cases[moved].may_busy && large_folio(pre_src[moved]) {
        // The page was part of a large folio (a THP, PTE- or PMD-mapped): MOVE splits it first,
        // and a split error propagates (spec 2.3), EBUSY included.
        cases[moved].may_busy = true;
        judged = allowed::judge(&cases, ctx, outcome);
    }
    // The oracle judges what it models; ENOMEM under the memory limit (and anything it reports
    // as unmodelled) stays with the rules of `allowed`.
    let by_oracle = match (sh.oracle, outcome) {
        (_, Outcome::Failed(e)) if e == rustix::io::Errno::NOMEM => None,
        (Some(b), _) if !misreport => {
            let known: Vec<crate::oracle::Known> = (0..n)
                .map(|i| crate::oracle::Known {
                    src_zero: win.slot(src, k + i).content == Content::Zero,
                    src_swapped: swapped(pre_src[i]),
                })
                .collect();
            crate::oracle::judge(
                b,
                dst_addr as u64,
                src_addr as u64,
                flags.bits(),
                &cases,
                &known,
                ctx.events_possible,
                &result,
            )
        }
        _ => None,
    };
    match by_oracle {
        Some(verdict) => {
            remap::counters::bump(&sh.stats.oracle_judged);
            if verdict.is_ok() != judged.is_ok() {
                remap::counters::bump(&sh.stats.disagreements);
                tracing::debug!(
                    ?verdict,
                    ?judged,
                    "the oracle and the torture rules disagree"
                );
            }
            judged = verdict;
        }
        None => {
            remap::counters::bump(&sh.stats.rules_judged);
        }
    }
    let seen: Vec<Seen> = (0..n)
        .map(|i| Seen {
            src_before: occupied(pre_src[i]),
            dst_before: occupied(pre_dst[i]),
            src_after: occupied(post_src[i]),
            dst_after: occupied(post_dst[i]),
        })
        .collect();
    let consistent = allowed::consistent(&seen, moved);
    match (&consistent, &judged) {
        (Err(why), judged) => {
            let known = if matches!(outcome, Outcome::Failed(e) if e == rustix::io::Errno::EXIST) {
                " (the pattern of the known 6.18 bug: MOVE says EEXIST although it moved the page)"
            } else {
                ""
            };
            let also = judged.as_ref().err().map_or(String::new(), |j| {
                format!("; the result is not allowed either: {j}")
            });
            sh.violation(
                ViolationKind::KernelMisreport,
                name,
                format!(
                    "kernel result disagrees with the page tables: {why}{known}{also}: {}; {}",
                    describe(&cases),
                    page_kinds(sh, dmap, k, n)
                ),
                vec![src_addr, dst_addr],
            );
        }
        (Ok(()), Err(why)) => sh.violation(
            ViolationKind::DisallowedResult,
            name,
            format!("{why}: {}", describe(&cases)),
            vec![src_addr, dst_addr],
        ),
        (Ok(()), Ok(())) => {}
    }
    // Update the model: by the result when it is consistent, else by what pagemap shows.
    for i in 0..n {
        let s = win.slot(src, k + i);
        let went = match consistent {
            Ok(()) => i < moved,
            Err(_) if s.content.occupied() => seen[i].moved(),
            Err(_) => i < moved,
        };
        if !went {
            continue;
        }
        *win.slot_mut(dst, k + i) = s;
        *win.slot_mut(src, k + i) = Slot::HOLE;
        if s.content.occupied() {
            remap::counters::bump(&sh.stats.pages_moved);
            if swapped(pre_src[i]) {
                remap::counters::bump(&sh.stats.swapped_moved);
            }
            // Check the tag of every page that arrived present (reading a swapped one would
            // swap it in; the mutators and the audit check those).
            if post_dst[i] & PM_PRESENT != 0 {
                if let Err(why) = sh.check_page(dmap, k + i, s.content) {
                    sh.violation(
                        ViolationKind::WrongContent,
                        name,
                        format!("after op #{seq}: {why}"),
                        vec![dst_addr + i * sh.page],
                    );
                    win.slot_mut(dst, k + i).content = Content::Foreign;
                }
            }
        } else {
            remap::counters::bump(&sh.stats.holes_moved);
        }
    }
    outcome
}

/// Whether the page of a pagemap entry is part of a large folio (kpageflags: THP or compound).
fn large_folio(entry: u64) -> bool {
    use remap::inspect::{kpageflags, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_THP};
    entry & PM_PRESENT != 0
        && kpageflags(entry & remap::inspect::PM_PFN_MASK)
            .is_ok_and(|f| f & (KPF_THP | KPF_COMPOUND_HEAD | KPF_COMPOUND_TAIL) != 0)
}

/// What kind of pages `[k, k + n)` of `map` are now (kpageflags of the first few): THP, compound.
fn page_kinds(sh: &Shared, map: &Mapping, k: usize, n: usize) -> String {
    use remap::inspect::{kpageflags, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_THP};
    let entries = sh.entries(map, k, n.min(8));
    let kinds: Vec<&str> = entries
        .iter()
        .map(|&e| {
            if e & PM_PRESENT == 0 {
                return if swapped(e) { "swapped" } else { "hole" };
            }
            match kpageflags(e & remap::inspect::PM_PFN_MASK) {
                Ok(f) if f & (1 << 21) != 0 => "ksm",
                Ok(f) if f & KPF_THP != 0 => "thp",
                Ok(f) if f & (KPF_COMPOUND_HEAD | KPF_COMPOUND_TAIL) != 0 => "large",
                Ok(_) => "small",
                Err(_) => "?",
            }
        })
        .collect();
    format!(
        "destination pages now: {}; legend: P exclusive, p shared, S swapped, . hole",
        kinds.join(" ")
    )
}

/// Rewrites the tag of the page at `page` of side `side` (same contents): the write fault makes a
/// page shared after a fork, or merged by KSM, exclusive again.
fn make_exclusive(
    sh: &Shared,
    tid: usize,
    pair: &Pair,
    win: &mut Window<'_>,
    side: usize,
    page: usize,
) {
    let slot = win.slot(side, page);
    let Content::Page { .. } = slot.content else {
        return;
    };
    let map = &pair.sides[side].map;
    let forks_done = sh.forks_done.load(Ordering::SeqCst);
    let offs = model::tag_word_offsets(sh.page);
    let words = model::tag_words(sh.key, slot.content);
    map.write_word(page, offs[0], words[0]);
    win.slot_mut(side, page).excl_mark = forks_done;
    sh.oplog
        .record(tid, "write", map.addr() + page * sh.page, 0, 1, 0, 1);
}

/// `MADV_DONTNEED` on runs of zero pages in the window, so their slots can receive pages again
/// (on a registered range this queues a remove event: MOVEs meanwhile may see EAGAIN).
#[allow(clippy::too_many_arguments)]
fn clear_zero_pages(
    sh: &Shared,
    tid: usize,
    pair: &Pair,
    win: &mut Window<'_>,
    k: usize,
    w: usize,
    rng: &mut Rng,
) {
    if !rng.one_in(2) {
        return;
    }
    for side in 0..2 {
        let map = &pair.sides[side].map;
        let mut i = 0;
        while i < w {
            if !matches!(
                win.slot(side, k + i).content,
                Content::Zero | Content::Foreign
            ) {
                i += 1;
                continue;
            }
            let start = i;
            while i < w
                && matches!(
                    win.slot(side, k + i).content,
                    Content::Zero | Content::Foreign
                )
            {
                i += 1;
            }
            let r = map.madvise(k + start, i - start, Advice::DontNeed);
            sh.oplog.record(
                tid,
                "dontneed",
                map.addr() + (k + start) * sh.page,
                0,
                i - start,
                0,
                r.map_or_else(|e| -i64::from(e.raw_os_error()), |()| 0),
            );
            if r.is_ok() {
                for j in start..i {
                    *win.slot_mut(side, k + j) = Slot::HOLE;
                }
            }
        }
    }
}

/// The hidden fault injection: breaks one page (or the next result) behind the model's back, so
/// a test can show the invariants catch it. Returns whether the next result is to be
/// mis-reported.
fn inject_fault(
    sh: &Shared,
    tid: usize,
    pair: &Pair,
    win: &mut Window<'_>,
    k: usize,
    w: usize,
    inject: Inject,
) -> bool {
    for i in 0..w {
        for side in 0..2 {
            let slot = win.slot(side, k + i);
            let other = win.slot(1 - side, k + i);
            let map = &pair.sides[side].map;
            let addr = map.addr() + (k + i) * sh.page;
            match inject {
                Inject::Drop if matches!(slot.content, Content::Page { .. }) => {
                    let _ = map.madvise(k + i, 1, Advice::DontNeed);
                    sh.oplog.record(tid, "inject-drop", addr, 0, 1, 0, 0);
                    tracing::info!("fault injection: dropped the page at {addr:#x}");
                    return false;
                }
                Inject::Duplicate
                    if slot.content == Content::Hole
                        && matches!(other.content, Content::Page { .. }) =>
                {
                    let words = model::tag_words(sh.key, other.content);
                    let r = sys::copy_page(&sh.uffd, map, k + i, words);
                    sh.oplog
                        .record(tid, "inject-duplicate", addr, 0, 1, 0, i64::from(r.is_ok()));
                    if r.is_err() {
                        // EAGAIN while a remove event is pending, most likely: try again later,
                        // so the injection does not depend on winning that race.
                        sh.injected.store(false, Ordering::SeqCst);
                        return false;
                    }
                    tracing::info!("fault injection: duplicated a page into {addr:#x}");
                    return false;
                }
                _ => {}
            }
        }
    }
    if inject == Inject::Misreport {
        tracing::info!("fault injection: the next MOVE result is reported as EEXIST");
        return true;
    }
    // Nothing suitable in this window: try again in the next one.
    sh.injected.store(false, Ordering::SeqCst);
    false
}
