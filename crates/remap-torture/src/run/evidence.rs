//! Whether each walker driver reached the kernel: the counters (`/proc/vmstat`, KSM, the cgroup,
//! the drivers' own) that show it did, per walker.

use std::collections::BTreeMap;

use crate::report::Report;
use crate::Walker;

fn get(m: &BTreeMap<String, i64>, k: &str) -> i64 {
    m.get(k).copied().unwrap_or(0)
}

fn sum_prefix(m: &BTreeMap<String, i64>, prefix: &str) -> i64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| *v)
        .sum()
}

/// Per walker: whether the counters show it ran, and which counters.
pub(super) fn evidence(r: &Report) -> BTreeMap<Walker, (bool, String)> {
    let vm = &r.vmstat;
    let mut out = BTreeMap::new();
    let detail = |w: Walker, k: &str| {
        r.walkers
            .iter()
            .find(|x| x.walker == w)
            .map_or(0, |x| get(&x.detail, k))
    };
    let (refill, scan, steal) = (
        get(vm, "pgrefill"),
        sum_prefix(vm, "pgscan_"),
        sum_prefix(vm, "pgsteal_"),
    );
    let (deact, wsact) = (get(vm, "pgdeactivate"), get(vm, "workingset_activate_anon"));
    let failcnt = r.cgroup.as_ref().map_or(0, |c| c.failcnt);
    // /proc/vmstat's pgrefill counts only global reclaim (`if (!cgroup_reclaim(sc))` in
    // shrink_active_list), and cgroup v1's memory.stat has no pgrefill: shrink_active_list under
    // the cgroup limit shows as pgdeactivate (with MADV_COLD's share), after workingset
    // activations (which let memcg reclaim deactivate).
    out.insert(
        Walker::Reclaim,
        (
            scan > 0 && steal > 0 && failcnt > 0 && deact > 0 && wsact > 0,
            format!(
                "pgscan +{scan}, pgsteal +{steal}, pgdeactivate +{deact}, workingset_activate_anon +{wsact}, cgroup failcnt {failcnt} (pgrefill +{refill}: counts global reclaim only)"
            ),
        ),
    );
    let (swpout, swpin) = (get(vm, "pswpout"), get(vm, "pswpin"));
    out.insert(
        Walker::Pageout,
        (
            swpout > 0 && detail(Walker::Pageout, "pageout_ok") > 0,
            format!(
                "pswpout +{swpout}, pswpin +{swpin}, {} pageouts, {} colds, {} swapped pages moved without swap-in",
                detail(Walker::Pageout, "pageout_ok"),
                detail(Walker::Pageout, "cold_ok"),
                r.swapped_pages_moved
            ),
        ),
    );
    let (mscan, isolated, fscan) = (
        get(vm, "compact_migrate_scanned"),
        get(vm, "compact_isolated"),
        get(vm, "compact_free_scanned"),
    );
    out.insert(
        Walker::Compact,
        (
            mscan + isolated > 0,
            format!("compact_migrate_scanned +{mscan}, compact_isolated +{isolated}, compact_free_scanned +{fscan}, {} compactions", detail(Walker::Compact, "compact_ok")),
        ),
    );
    let (scans, sharing) = (get(&r.ksm, "full_scans"), get(&r.ksm, "max_pages_sharing"));
    out.insert(
        Walker::Ksm,
        (
            scans > 0 && sharing > 0,
            format!(
                "full_scans +{scans}, max pages_sharing {sharing}, ebusy results {}",
                r.results.get("ebusy").copied().unwrap_or(0)
            ),
        ),
    );
    let forks = detail(Walker::Fork, "forks");
    out.insert(
        Walker::Fork,
        (
            forks > 0,
            format!("{forks} sharing children forked and reaped"),
        ),
    );
    let (collapse, split, zero) = (
        get(vm, "thp_collapse_alloc"),
        get(vm, "thp_split_pmd"),
        detail(Walker::Thp, "huge_zero_moved"),
    );
    out.insert(
        Walker::Thp,
        (
            (collapse > 0 || detail(Walker::Thp, "collapse_ok") > 0) && split > 0,
            format!(
                "thp_collapse_alloc +{collapse}, {} MADV_COLLAPSE ok, thp_split_pmd +{split}, {zero} huge zero pages moved",
                detail(Walker::Thp, "collapse_ok")
            ),
        ),
    );
    let flips = detail(Walker::Flip, "flip_ok");
    let pending = r.results.get("eagain-events").copied().unwrap_or(0);
    out.insert(
        Walker::Flip,
        (
            flips > 0 && detail(Walker::Flip, "dontneed_ok") > 0,
            format!("{flips} mremap(DONTUNMAP) flips, {} MADV_DONTNEEDs, {pending} MOVEs saw events pending", detail(Walker::Flip, "dontneed_ok")),
        ),
    );
    out
}
