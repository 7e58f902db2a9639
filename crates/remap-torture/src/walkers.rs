//! The walker drivers: one thread each, making the kernel walk (or rewrite) the pages the movers
//! move: reclaim under a memory limit, `MADV_PAGEOUT` / `MADV_COLD`, compaction, KSM, fork, THP
//! collapse and the huge zero page, and ART's flip.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use uffd::{MoveFlags, RangeError, RegisterMode};

use crate::allowed::{self, Context, Outcome, PageCase};
use crate::engine::{occupied, Shared};
use crate::model::{self, Content, Slot, Window, BLOCK_PAGES};
use crate::report::ViolationKind;
use crate::rng::Rng;
use crate::sys::{self, Advice, Mapping};
use crate::Walker;

/// What a driver did: operations, refusals, named counts.
#[derive(Debug, Default, Clone)]
pub(crate) struct DriverStats {
    pub(crate) ops: u64,
    pub(crate) refused: u64,
    pub(crate) detail: BTreeMap<String, i64>,
}

impl DriverStats {
    fn bump(&mut self, key: &str) {
        *self.detail.entry(key.to_owned()).or_default() += 1;
    }

    fn result(&mut self, r: Result<(), rustix::io::Errno>, what: &str) {
        self.ops += 1;
        match r {
            Ok(()) => self.bump(&format!("{what}_ok")),
            Err(e) => {
                self.refused += 1;
                self.bump(&format!("{what}_{}", errno_name(e)));
            }
        }
    }
}

fn errno_name(e: rustix::io::Errno) -> String {
    format!("{e:?}").to_lowercase().replace(' ', "_")
}

fn nap(sh: &Shared, rng: &mut Rng, lo_ms: usize, hi_ms: usize) {
    let until = std::time::Instant::now() + Duration::from_millis(rng.range(lo_ms, hi_ms) as u64);
    while !sh.stopping() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5).min(until - std::time::Instant::now()));
    }
}

/// Runs driver `walker` until the run stops.
pub(crate) fn drive(
    sh: &Shared,
    walker: Walker,
    tid: usize,
    rng: Rng,
    cgroup: Option<(&Path, u64)>,
) -> DriverStats {
    match walker {
        Walker::Reclaim => reclaim(sh, rng, cgroup),
        Walker::Pageout => pageout(sh, tid, rng),
        Walker::Compact => compact(sh, rng),
        Walker::Ksm => ksm(sh, rng),
        Walker::Fork => fork(sh, tid, rng),
        Walker::Thp => thp(sh, tid, rng),
        Walker::Flip => flip(sh, tid, rng),
    }
}

/// Reclaim without the folio lock: the run lives under a memory limit below its working set;
/// this driver re-touches pages so they stay on the active list that `shrink_active_list` scans
/// with `folio_referenced()`, and now and then lowers the limit for a moment to force a burst.
///
/// `cgroup` is the cgroup and the limit the run set: the limit file is not read back, since the
/// OOM guard may be lifting it at that moment (every squeeze would then restore the lifted one).
fn reclaim(sh: &Shared, mut rng: Rng, cgroup: Option<(&Path, u64)>) -> DriverStats {
    let mut st = DriverStats::default();
    let mut squeeze_at = std::time::Instant::now() + Duration::from_millis(500);
    let mut touched = 0i64;
    while !sh.stopping() {
        let pair = &sh.pairs[rng.below(sh.pairs.len())];
        let side = rng.below(2);
        let b = rng.below(pair.sides[side].blocks.len());
        if let Some(win) = Window::try_lock(pair, &[side], b * BLOCK_PAGES, BLOCK_PAGES) {
            let map = &pair.sides[side].map;
            let first = b * BLOCK_PAGES;
            // Swap the block out and fault it straight back: a refault at a short distance
            // activates the page (and counts a workingset activation, which lets memcg reclaim
            // deactivate: `shrink_active_list` then walks these pages with `folio_referenced()`).
            if rng.one_in(2) {
                let r = map.madvise(first, BLOCK_PAGES, Advice::PageOut);
                st.result(r, "pageout");
            }
            for _ in 0..2 {
                for page in first..first + BLOCK_PAGES {
                    if win.slot(side, page).content.occupied() {
                        map.read_word(page, 0);
                        touched += 1;
                    }
                }
            }
        }
        if let Some((dir, limit)) = cgroup {
            if std::time::Instant::now() >= squeeze_at {
                let lower = limit / 8 * 7;
                let r = std::fs::write(dir.join("memory.limit_in_bytes"), lower.to_string());
                st.bump(if r.is_ok() {
                    "squeeze_ok"
                } else {
                    "squeeze_failed"
                });
                std::thread::sleep(Duration::from_millis(20));
                let _ = std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string());
                squeeze_at =
                    std::time::Instant::now() + Duration::from_millis(rng.range(300, 900) as u64);
            }
        }
        if rng.one_in(8) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    st.detail.insert("pages_touched".into(), touched);
    st
}

/// `MADV_PAGEOUT` (reclaim with the folio trylock, swaps out) and `MADV_COLD` (no rmap walk) on
/// random ranges; the movers then move swapped pages without swapping them in.
fn pageout(sh: &Shared, tid: usize, mut rng: Rng) -> DriverStats {
    let mut st = DriverStats::default();
    while !sh.stopping() {
        let pair = &sh.pairs[rng.below(sh.pairs.len())];
        let map = &pair.sides[rng.below(2)].map;
        let n = rng.batch_len(512);
        let first = rng.below(map.pages() - n + 1);
        let (advice, what) = if rng.one_in(3) {
            (Advice::Cold, "cold")
        } else {
            (Advice::PageOut, "pageout")
        };
        let r = map.madvise(first, n, advice);
        sh.oplog.record(
            tid,
            what,
            map.addr() + first * sh.page,
            0,
            n,
            0,
            i64::from(r.is_ok()),
        );
        st.result(r, what);
        nap(sh, &mut rng, 1, 6);
    }
    st
}

/// Migration: `/proc/sys/vm/compact_memory` (folio-locked migration of everything movable).
fn compact(sh: &Shared, mut rng: Rng) -> DriverStats {
    let mut st = DriverStats::default();
    while !sh.stopping() {
        let r = std::fs::write("/proc/sys/vm/compact_memory", "1")
            .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO));
        st.result(r, "compact");
        nap(sh, &mut rng, 150, 600);
    }
    st
}

/// KSM: the pair regions are `MADV_MERGEABLE` (set up by the run) and ksmd runs fast; twins
/// (pages with equal contents) merge, and MOVE of a merged page must say EBUSY. Now and then a
/// whole region is unmerged and marked mergeable again.
fn ksm(sh: &Shared, mut rng: Rng) -> DriverStats {
    let mut st = DriverStats::default();
    let mut max_sharing = 0i64;
    while !sh.stopping() {
        let sharing = crate::machine::ksm_counters()
            .get("pages_sharing")
            .copied()
            .unwrap_or(0);
        max_sharing = max_sharing.max(sharing);
        if rng.one_in(20) {
            let pair = &sh.pairs[rng.below(sh.pairs.len())];
            let map = &pair.sides[rng.below(2)].map;
            st.result(map.madvise(0, map.pages(), Advice::Unmergeable), "unmerge");
            st.result(map.madvise(0, map.pages(), Advice::Mergeable), "merge");
        }
        nap(sh, &mut rng, 100, 300);
    }
    st.detail.insert("max_pages_sharing".into(), max_sharing);
    st
}

/// Fork: a child shares every page for a while (MOVE says EBUSY meanwhile, and afterwards until
/// the parent writes the page), touching some, then `_exit`s.
fn fork(sh: &Shared, tid: usize, mut rng: Rng) -> DriverStats {
    let mut st = DriverStats::default();
    while !sh.stopping() {
        nap(sh, &mut rng, 200, 1000);
        if sh.stopping() {
            break;
        }
        let touch: Vec<usize> = (0..16)
            .map(|_| {
                let pair = &sh.pairs[rng.below(sh.pairs.len())];
                let map = &pair.sides[rng.below(2)].map;
                map.addr() + rng.below(map.pages()) * sh.page
            })
            .collect();
        let hold = Duration::from_millis(rng.range(5, 80) as u64);
        // While the child lives, every page the parent writes is copied, threads' control blocks
        // too: charged at home (`CgroupOwner`) unless the process has no rseq.
        let shared = sh
            .owner
            .around_fork(|| fork_and_reap(sh, tid, hold, &touch, &mut st));
        if let Err(e) = shared {
            sh.violation(
                ViolationKind::Harness,
                "fork",
                format!(
                    "moving the main thread for a fork: {}",
                    crate::machine::error_chain(&e)
                ),
                vec![],
            );
        }
    }
    st
}

fn fork_and_reap(sh: &Shared, tid: usize, hold: Duration, touch: &[usize], st: &mut DriverStats) {
    sh.forks_started.fetch_add(1, Ordering::SeqCst);
    let r = sys::fork_sharer(hold, touch);
    sh.forks_done.fetch_add(1, Ordering::SeqCst);
    match r {
        Ok(pid) => {
            sh.oplog.record(tid, "fork", 0, 0, 0, 0, i64::from(pid));
            match sys::wait_child(pid) {
                Ok(0) => st.result(Ok(()), "fork"),
                Ok(status) => {
                    st.result(Ok(()), "fork");
                    sh.violation(
                        ViolationKind::Harness,
                        "fork",
                        format!("a sharing child ended with status {status:#x}"),
                        vec![],
                    );
                }
                Err(e) => st.result(Err(e), "wait"),
            }
        }
        Err(e) => st.result(Err(e), "fork"),
    }
}

/// THP: `MADV_COLLAPSE` of random PMDs of the THP regions (khugepaged's copy, refused where a
/// registered range has holes), and the huge zero page moved into a hole PMD. Splits come from
/// the movers' partial-PMD moves.
fn thp(sh: &Shared, tid: usize, mut rng: Rng) -> DriverStats {
    let mut st = DriverStats::default();
    let mut zero_src =
        if std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/use_zero_page")
            .is_ok_and(|s| s.trim() == "1")
        {
            Mapping::new(sys::PMD_BYTES)
                .ok()
                .filter(|m| m.madvise(0, m.pages(), Advice::HugePage).is_ok())
        } else {
            st.bump("huge_zero_page_unavailable");
            None
        };
    while !sh.stopping() {
        nap(sh, &mut rng, 10, 60);
        let pair = &sh.pairs[rng.below(sh.pairs.len())];
        let side = if pair.sides[1].thp { rng.below(2) } else { 0 };
        let pmd = rng.below(pair.pages() / 512);
        let first = pmd * 512;
        let Some(mut win) = Window::try_lock(pair, &[0, 1], first, 512) else {
            continue;
        };
        // Gather the PMD's pages on one side (so that side is a full PMD and the other a hole
        // PMD), the way a compactor packs a region.
        let (from, to) = (1 - side, side);
        let mut i = 0;
        while i < 512 && !sh.stopping() {
            let movable = |w: &Window<'_>, i: usize| {
                w.slot(from, first + i).content.occupied()
                    && !w.slot(to, first + i).content.occupied()
            };
            if !movable(&win, i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < 512 && movable(&win, i) {
                i += 1;
            }
            crate::engine::move_checked(
                sh,
                "thp",
                tid,
                pair,
                &mut win,
                from,
                first + start,
                i - start,
                MoveFlags::empty(),
                &mut false,
            );
        }
        let full =
            (0..512).all(|i| matches!(win.slot(side, first + i).content, Content::Page { .. }));
        let empty_other = (0..512).all(|i| !win.slot(1 - side, first + i).content.occupied());
        if full {
            let map = &pair.sides[side].map;
            let r = map.madvise(first, 512, Advice::Collapse);
            sh.oplog.record(
                tid,
                "collapse",
                map.addr() + first * sh.page,
                0,
                512,
                0,
                i64::from(r.is_ok()),
            );
            st.result(r, "collapse");
        } else {
            st.bump("collapse_skipped_not_full");
        }
        if let (Some(z), true) = (&zero_src, empty_other && rng.one_in(2)) {
            huge_zero(sh, tid, &mut st, z, pair, &mut win, 1 - side, pmd);
            // A fresh PMD for the next round: the old one keeps the page table a split left.
            zero_src = Mapping::new(sys::PMD_BYTES)
                .ok()
                .filter(|m| m.madvise(0, m.pages(), Advice::HugePage).is_ok());
        }
    }
    st
}

/// Read-faults the huge zero page into the unregistered `zero` region and moves it, PMD-aligned,
/// into a PMD of holes (the caller holds the PMD's blocks on both sides).
#[allow(clippy::too_many_arguments)]
fn huge_zero(
    sh: &Shared,
    tid: usize,
    st: &mut DriverStats,
    zero: &Mapping,
    pair: &crate::model::Pair,
    win: &mut Window<'_>,
    side: usize,
    pmd: usize,
) {
    let first = pmd * 512;
    if (0..512).any(|i| win.slot(side, first + i).content.occupied()) {
        return;
    }
    // A read fault on an untouched THP-eligible range maps the huge zero page.
    let _ = zero.read_word(0, 0);
    let src_before = sh.entries(zero, 0, 512);
    if !src_before.iter().all(|&e| occupied(e)) {
        st.bump("huge_zero_not_mapped");
        return;
    }
    let dmap = &pair.sides[side].map;
    let r = sys::move_pages(&sh.uffd, dmap, first, zero, 0, 512, MoveFlags::empty());
    st.ops += 1;
    let outcome = Outcome::from_result(&r, sh.page);
    remap::counters::bump(&sh.stats.moves);
    sh.results.count(outcome.bucket());
    let dst_addr = dmap.addr() + first * sh.page;
    sh.oplog.record(
        tid,
        "move-huge-zero",
        dst_addr,
        zero.addr(),
        512,
        0,
        outcome.moved(512) as i64,
    );
    let cases = vec![
        PageCase {
            dst_occupied: false,
            src_occupied: true,
            may_busy: false,
        };
        512
    ];
    let ctx = Context {
        allow_src_holes: false,
        events_possible: sh.ctx_events,
        nomem_possible: sh.ctx_nomem,
    };
    if let Err(why) = allowed::judge(&cases, ctx, outcome) {
        sh.violation(
            ViolationKind::DisallowedResult,
            "thp",
            format!("huge zero page MOVE to {dst_addr:#x}: {why} ({r:?})"),
            vec![dst_addr],
        );
    }
    let moved = outcome.moved(512);
    let src_after = sh.entries(zero, 0, 512);
    let dst_after = sh.entries(dmap, first, 512);
    for i in 0..512 {
        let went = !occupied(src_after[i]) && occupied(dst_after[i]);
        if went != (i < moved) {
            sh.violation(
                ViolationKind::KernelMisreport,
                "thp",
                format!("huge zero page MOVE to {dst_addr:#x} reported {moved} pages, page {i} disagrees ({r:?})"),
                vec![dst_addr + i * sh.page],
            );
            break;
        }
    }
    for i in 0..moved {
        *win.slot_mut(side, first + i) = Slot {
            content: Content::Zero,
            excl_mark: 0,
        };
    }
    if moved > 0 {
        st.bump("huge_zero_moved");
        remap::counters::add(&sh.stats.pages_moved, moved as u64);
    }
    // The moved source reads as a hole: zeros (and a fresh huge zero page for the next round).
    if zero.read_word(0, 0) != 0 || zero.read_word(511, 1) != 0 {
        sh.violation(
            ViolationKind::SourceNotHole,
            "thp",
            "the huge zero page's source does not read as zeros".into(),
            vec![zero.addr()],
        );
    }
}

/// ART's flip: `mremap(MREMAP_DONTUNMAP)` of a registered, tagged range (its pages go to a new
/// mapping, a remap event is queued), then the pages MOVEd back in random batches, the new
/// mapping unmapped; and `MADV_DONTNEED` of part of the range (a remove event; concurrent MOVEs
/// see EAGAIN until it is read), the dropped pages accounted and re-created with UFFDIO_COPY.
fn flip(sh: &Shared, tid: usize, mut rng: Rng) -> DriverStats {
    let mut st = DriverStats::default();
    let pages = sh.cfg.flip_pages;
    let Ok(f) = Mapping::new(pages * sh.page) else {
        sh.violation(
            ViolationKind::Harness,
            "flip",
            "mapping the flip region failed".into(),
            vec![],
        );
        return st;
    };
    let _ = f.madvise(0, pages, Advice::NoHugePage);
    let offs = model::tag_word_offsets(sh.page);
    let mut next_id = sh.pair_ids;
    let mut model: Vec<Content> = Vec::with_capacity(pages);
    for page in 0..pages {
        let c = Content::Page {
            id: next_id,
            gen: 0,
        };
        next_id += 1;
        for (w, v) in offs.iter().zip(model::tag_words(sh.key, c)) {
            f.write_word(page, *w, v);
        }
        model.push(c);
    }
    if let Err(e) = sh
        .uffd
        .register(f.page_ptr(0), f.len(), RegisterMode::MISSING)
    {
        sh.violation(
            ViolationKind::Harness,
            "flip",
            format!("registering the flip region: {e}"),
            vec![],
        );
        return st;
    }
    let occ = |m: &[Content], i: usize| m[i].occupied();
    while !sh.stopping() {
        // The flip.
        let g = match f.mremap_dontunmap() {
            Ok(g) => g,
            Err(e) => {
                st.result(Err(e), "flip");
                nap(sh, &mut rng, 50, 100);
                continue;
            }
        };
        st.result(Ok(()), "flip");
        sh.oplog
            .record(tid, "flip", g.addr(), f.addr(), pages, 0, 0);
        let f_after = sh.entries(&f, 0, pages);
        let g_after = sh.entries(&g, 0, pages);
        for i in 0..pages {
            if occupied(f_after[i]) || occupied(g_after[i]) != occ(&model, i) {
                sh.violation(
                    ViolationKind::LostPage,
                    "flip",
                    format!("after mremap(DONTUNMAP) page {i}: old populated {}, new populated {}, expected {:?} in the new", occupied(f_after[i]), occupied(g_after[i]), model[i]),
                    vec![f.addr() + i * sh.page, g.addr() + i * sh.page],
                );
            }
        }
        // Move everything back, in random batches and order of batches.
        let mut todo: Vec<(usize, usize)> = Vec::new();
        let mut i = 0;
        while i < pages {
            let n = rng.batch_len(512).min(pages - i);
            todo.push((i, n));
            i += n;
        }
        for j in (1..todo.len()).rev() {
            todo.swap(j, rng.below(j + 1));
        }
        for (first, n) in todo {
            flip_move_back(sh, tid, &mut st, &f, &g, &mut model, first, n);
        }
        drop(g);
        // Drop a few pages, accounted, and re-create them.
        let n = rng.batch_len(64);
        let first = rng.below(pages - n + 1);
        let r = f.madvise(first, n, Advice::DontNeed);
        sh.oplog.record(
            tid,
            "dontneed",
            f.addr() + first * sh.page,
            0,
            n,
            0,
            i64::from(r.is_ok()),
        );
        st.result(r, "dontneed");
        if r.is_ok() {
            for c in &mut model[first..first + n] {
                if c.occupied() {
                    remap::counters::bump(&sh.stats.dropped);
                }
                *c = Content::Hole;
            }
        }
        for (page, c) in model.iter_mut().enumerate() {
            if c.occupied() {
                continue;
            }
            let fresh = Content::Page {
                id: next_id,
                gen: 0,
            };
            let mut tries = 0;
            loop {
                match sys::copy_page(&sh.uffd, &f, page, model::tag_words(sh.key, fresh)) {
                    Ok(_) => {
                        *c = fresh;
                        next_id += 1;
                        break;
                    }
                    Err(RangeError::EventsPending { .. }) if tries < 1000 => {
                        tries += 1;
                        std::thread::yield_now();
                    }
                    Err(e) => {
                        sh.violation(
                            ViolationKind::Harness,
                            "flip",
                            format!("UFFDIO_COPY into page {page}: {e}"),
                            vec![f.addr() + page * sh.page],
                        );
                        break;
                    }
                }
            }
        }
        nap(sh, &mut rng, 5, 40);
    }
    // Audit the flip region.
    let entries = sh.entries(&f, 0, pages);
    for (i, c) in model.iter().enumerate() {
        if occupied(entries[i]) != c.occupied() {
            sh.violation(
                ViolationKind::LostPage,
                "flip",
                format!(
                    "flip page {i}: expected {c:?}, populated {}",
                    occupied(entries[i])
                ),
                vec![f.addr() + i * sh.page],
            );
        } else if let Err(why) = sh.check_page(&f, i, *c) {
            sh.violation(
                ViolationKind::WrongContent,
                "flip",
                why,
                vec![f.addr() + i * sh.page],
            );
        }
    }
    st.detail
        .insert("pages_created".into(), i64::from(next_id - sh.pair_ids));
    let _ = sh.uffd.unregister(f.page_ptr(0), f.len());
    st
}

#[allow(clippy::too_many_arguments)]
fn flip_move_back(
    sh: &Shared,
    tid: usize,
    st: &mut DriverStats,
    f: &Mapping,
    g: &Mapping,
    model: &mut [Content],
    first: usize,
    n: usize,
) {
    let flags = MoveFlags::ALLOW_SRC_HOLES;
    let mut done = 0;
    let mut retries = 0;
    while done < n {
        let at = first + done;
        let len = n - done;
        let r = sys::move_pages(&sh.uffd, f, at, g, at, len, flags);
        remap::counters::bump(&sh.stats.moves);
        let outcome = Outcome::from_result(&r, sh.page);
        sh.results.count(outcome.bucket());
        sh.oplog.record(
            tid,
            "move-back",
            f.addr() + at * sh.page,
            g.addr() + at * sh.page,
            len,
            flags.bits(),
            outcome.moved(len) as i64,
        );
        let cases: Vec<PageCase> = (at..at + len)
            .map(|i| PageCase {
                dst_occupied: false,
                src_occupied: model[i].occupied(),
                may_busy: sh.forks_started.load(Ordering::SeqCst) > 0,
            })
            .collect();
        let ctx = Context {
            allow_src_holes: true,
            events_possible: sh.ctx_events,
            nomem_possible: sh.ctx_nomem,
        };
        // What the page tables show: the reported count must be what moved (as for movers).
        let f_after = sh.entries(f, at, len);
        let g_after = sh.entries(g, at, len);
        let seen: Vec<crate::allowed::Seen> = (0..len)
            .map(|i| crate::allowed::Seen {
                src_before: model[at + i].occupied(),
                dst_before: false,
                src_after: occupied(g_after[i]),
                dst_after: occupied(f_after[i]),
            })
            .collect();
        let reported = outcome.moved(len);
        if let Err(why) = allowed::consistent(&seen, reported) {
            sh.violation(
                ViolationKind::KernelMisreport,
                "flip",
                format!("MOVE back of {len} pages at flip page {at} gave {r:?}: kernel result disagrees with the page tables: {why}"),
                vec![f.addr() + at * sh.page, g.addr() + at * sh.page],
            );
            // Go by the page tables: the pages that went, went.
            let went = (0..len)
                .find(|&i| {
                    if seen[i].src_before {
                        !seen[i].moved()
                    } else {
                        i >= reported
                    }
                })
                .unwrap_or(len);
            for &c in model.iter().skip(at).take(went) {
                if c.occupied() {
                    remap::counters::bump(&sh.stats.pages_moved);
                }
            }
            if went == 0 {
                retries += 1;
                if retries > 10_000 {
                    return;
                }
            }
            done += went;
            continue;
        }
        if let Err(why) = allowed::judge(&cases, ctx, outcome) {
            sh.violation(
                ViolationKind::DisallowedResult,
                "flip",
                format!("MOVE back of {len} pages at flip page {at}: {why} ({r:?})"),
                vec![f.addr() + at * sh.page],
            );
        }
        let moved = outcome.moved(len);
        for (i, &c) in model.iter().enumerate().skip(at).take(moved) {
            if c.occupied() {
                remap::counters::bump(&sh.stats.pages_moved);
                if let Err(why) = sh.check_page(f, i, c) {
                    sh.violation(
                        ViolationKind::WrongContent,
                        "flip",
                        why,
                        vec![f.addr() + i * sh.page],
                    );
                }
            }
        }
        done += moved;
        match outcome {
            Outcome::All | Outcome::Partial(_) => {}
            Outcome::Failed(e)
                if (e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::BUSY)
                    && retries < 10_000 =>
            {
                retries += 1;
                if e == rustix::io::Errno::BUSY {
                    // Shared by a fork child: a write makes it exclusive again.
                    let i = at;
                    if let Some(words) = model::expected_words(sh.key, model[i]) {
                        let offs = model::tag_word_offsets(sh.page);
                        g.write_word(i, offs[0], words[0]);
                    }
                    st.bump("busy_after_fork");
                }
                std::thread::yield_now();
            }
            Outcome::Failed(e) => {
                st.bump(&format!("move_back_{}", errno_name(e)));
                // Leave the page where it is: account it as dropped with the mapping.
                for c in &mut model[at..at + len] {
                    if c.occupied() {
                        remap::counters::bump(&sh.stats.dropped);
                    }
                    *c = Content::Hole;
                }
                return;
            }
        }
    }
}
