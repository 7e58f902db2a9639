//! One run from set-up to report, and the re-runs that confirm and shrink a failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use remap::inspect::Pagemap;
use uffd::{Features, RegisterMode, Uffd};

use crate::engine::{self, ResultCounts, Shared, Stats};
use crate::machine::{self, KernelLog, MachineGuard, Wanted};
use crate::model::{self, Content, Pair, Side, Slot, BLOCK_PAGES};
use crate::oplog::OpLog;
use crate::report::{CgroupReport, Report, ViolationKind, WalkerReport};
use crate::rng::{self, Rng};
use crate::sys::{self, Advice, Mapping, SignalGuard};
use crate::walkers::{self, DriverStats};
use crate::{Config, TortureError, Walker};

mod confirm;
mod evidence;

pub use confirm::{confirm, Confirmation};
use evidence::evidence;

/// How the run is going, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Seconds run.
    pub elapsed_secs: f64,
    /// Seconds planned.
    pub duration_secs: f64,
    /// Pages moved so far.
    pub pages_moved: u64,
    /// MOVE ioctls so far.
    pub moves: u64,
    /// Violations so far.
    pub violations: u64,
}

/// How long threads get to finish their operation once told to stop.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Maps the region pairs and places a tagged page in every slot; the pages are faulted in
/// (and so charged) in the run's cgroup, if it has one, everything else outside it.
fn build_pairs(
    cfg: &Config,
    key: u64,
    page: usize,
    ksm: bool,
    machine: &MachineGuard,
) -> Result<(Vec<Pair>, u32), TortureError> {
    let pairs = map_pairs(cfg, page, ksm)?;
    let placed = machine
        .charged_to_cgroup(|| place_pages(cfg, key, page, &pairs))
        .map_err(|source| TortureError::Machine {
            source,
            not_restored: Vec::new(),
        })?;
    Ok((pairs, placed))
}

/// Maps the region pairs, empty: their model says every slot is a hole.
fn map_pairs(cfg: &Config, page: usize, ksm: bool) -> Result<Vec<Pair>, TortureError> {
    let mut pairs = Vec::new();
    for p in 0..cfg.pairs {
        let mut sides = Vec::new();
        for s in 0..2 {
            let map = Mapping::new(cfg.region_pages * page).map_err(setup("mapping a region"))?;
            // Side 0 always THP, side 1 on even pairs: moves between THP and non-THP VMAs too.
            let thp = s == 0 || p % 2 == 0;
            map.madvise(
                0,
                map.pages(),
                if thp {
                    Advice::HugePage
                } else {
                    Advice::NoHugePage
                },
            )
            .map_err(setup("madvise(HUGEPAGE)"))?;
            if ksm {
                map.madvise(0, map.pages(), Advice::Mergeable)
                    .map_err(setup("madvise(MERGEABLE)"))?;
            }
            let blocks = (0..cfg.region_pages / BLOCK_PAGES)
                .map(|_| Mutex::new(vec![Slot::HOLE; BLOCK_PAGES]))
                .collect();
            sides.push(Side { map, thp, blocks });
        }
        pairs.push(Pair {
            sides: [sides.remove(0), sides.remove(0)],
        });
    }
    Ok(pairs)
}

/// Writes a tagged page into every slot of `pairs` and records it in the model; returns how many
/// logical pages it placed (ids `0..` that).
fn place_pages(cfg: &Config, key: u64, page: usize, pairs: &[Pair]) -> u32 {
    let mut next_id: u32 = 0;
    let offs = model::tag_word_offsets(page);
    for pair in pairs {
        // Page k starts on side 0 in even PMDs, side 1 in odd ones: THPs on both sides.
        for k in 0..cfg.region_pages {
            let side = (k / 512) % 2;
            let content = Content::Page {
                id: next_id,
                gen: 0,
            };
            next_id += 1;
            let map = &pair.sides[side].map;
            for (w, v) in offs.iter().zip(model::tag_words(key, content)) {
                map.write_word(k, *w, v);
            }
            let mut block = pair.sides[side].blocks[k / BLOCK_PAGES]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            block[k % BLOCK_PAGES] = Slot {
                content,
                excl_mark: 0,
            };
        }
    }
    next_id
}

/// Maps a set-up system call's error to [`TortureError::Setup`], errno kept.
fn setup<E: Into<std::io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> TortureError {
    let what = what.into();
    move |e| TortureError::Setup {
        what,
        source: e.into(),
    }
}

/// Runs the torture test described by `cfg`, calling `progress` about four times a second.
///
/// # Errors
///
/// [`TortureError`] when the run cannot be done at all (not root, no MOVE, set-up failed). A run
/// that found something returns `Ok` with the violations in the [`Report`].
pub fn run(cfg: &Config, progress: &mut dyn FnMut(&Progress)) -> Result<Report, TortureError> {
    if !rustix::process::geteuid().is_root() {
        return Err(TortureError::NotRoot);
    }
    if cfg.region_pages == 0 || cfg.region_pages % 512 != 0 || cfg.pairs == 0 {
        return Err(TortureError::Config(
            "regions must be a positive multiple of 512 pages".into(),
        ));
    }
    if cfg.movers == 0 {
        return Err(TortureError::Config("at least one mover".into()));
    }
    let caps = uffd::Capabilities::probe().map_err(TortureError::Create)?;
    if !caps.supports_move() {
        return Err(TortureError::NoMove);
    }
    let signals = SignalGuard::install();
    let page = sys::page_size();
    let has = |w: Walker| cfg.walkers.contains(&w);
    let working_set = (cfg.pairs * cfg.region_pages * page) as u64;
    let wanted = Wanted {
        cgroup_limit: has(Walker::Reclaim).then_some(fraction_of(working_set, cfg.limit_fraction)),
        ksm: has(Walker::Ksm),
        swap: has(Walker::Reclaim) || has(Walker::Pageout),
    };
    let mut guard = MachineGuard::apply(&wanted).map_err(|failed| {
        let (mut g, e) = *failed;
        TortureError::Machine {
            not_restored: g.restore(),
            source: e,
        }
    })?;
    // After the machine's changes: the guard holds files open for the run (the swap hold's
    // lock), and the check is of what the run itself leaves open.
    let fds_baseline = machine::fd_count();
    let cgroup = guard.cgroup().map(std::path::Path::to_path_buf);
    let baseline_usage = cgroup
        .as_deref()
        .and_then(|d| machine::cgroup_value(d, "memory.usage_in_bytes"));
    let rss_baseline = machine::rss_anon();
    let mut kmsg = KernelLog::open();
    let vm_before = machine::vmstat();
    let ksm_before = machine::ksm_counters();

    let result = run_threads(cfg, page, &guard, &cgroup, progress);
    let (mut report, shared) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = guard.restore();
            return Err(e);
        }
    };
    report.notes.append(&mut guard.notes);
    report.vmstat = machine::delta(&vm_before, &machine::vmstat());
    let mut ksm = machine::delta(&ksm_before, &machine::ksm_counters());
    if let Some(w) = report.walkers.iter().find(|w| w.walker == Walker::Ksm) {
        if let Some(max) = w.detail.get("max_pages_sharing") {
            ksm.insert("max_pages_sharing".into(), *max);
        }
    }
    report.ksm = ksm;
    let cgroup_stat = cgroup.as_deref().map(machine::cgroup_stat);
    let cgroup_values = cgroup.as_deref().map(|d| {
        (
            // The configured limit (the OOM guard may be lifting the file's value right now).
            wanted.cgroup_limit.unwrap_or(0),
            machine::cgroup_value(d, "memory.failcnt").unwrap_or(0),
            machine::cgroup_value(d, "memory.max_usage_in_bytes").unwrap_or(0),
        )
    });
    // Unmap everything, then the baselines.
    let leaked = match shared {
        Some(sh) => match Arc::try_unwrap(sh) {
            Ok(sh) => {
                drop(sh);
                false
            }
            Err(_) => true,
        },
        None => true,
    };
    let final_usage = cgroup
        .as_deref()
        .map(|d| settle_usage(d, baseline_usage.unwrap_or(0)));
    report.kernel_log_checked = kmsg.available();
    report.kernel_log = kmsg.bad_lines();
    drop(kmsg);
    report.fds = (fds_baseline, machine::fd_count());
    let mut late = Vec::new();
    if !leaked && report.fds.1 > report.fds.0 {
        late.push((
            ViolationKind::Baseline,
            format!(
                "{} fds open after the run, {} before",
                report.fds.1, report.fds.0
            ),
        ));
    }
    if let (Some(dir), Some((limit, failcnt, max_usage))) = (cgroup.as_deref(), cgroup_values) {
        let base = baseline_usage.unwrap_or(0);
        let fin = final_usage.unwrap_or(0);
        // Slack for what the process itself grew meanwhile: what the harness faulted in for the
        // first time while its main thread was in the cgroup is charged there.
        let grown = machine::rss_anon().saturating_sub(rss_baseline);
        if !leaked && fin > base + grown + (4 << 20) {
            late.push((
                ViolationKind::Baseline,
                format!("cgroup usage {fin} bytes after the run, {base} before (the process's own anonymous memory grew {grown})"),
            ));
        }
        report.cgroup = Some(CgroupReport {
            path: dir.display().to_string(),
            limit_bytes: limit,
            working_set_bytes: working_set,
            failcnt,
            max_usage_bytes: max_usage,
            baseline_usage_bytes: base,
            final_usage_bytes: fin,
            stat: cgroup_stat.unwrap_or_default(),
        });
    }
    for line in &report.kernel_log {
        late.push((ViolationKind::KernelLog, format!("kernel log: {line}")));
    }
    // Evidence that the walkers ran.
    let evidence = evidence(&report);
    for w in &mut report.walkers {
        if let Some((ran, text)) = evidence.get(&w.walker) {
            w.ran = *ran;
            w.evidence = text.clone();
        }
        if !w.ran && !cfg.idle_walkers_ok {
            late.push((
                ViolationKind::IdleWalker,
                format!(
                    "walker {} shows no evidence of running: {}",
                    w.walker.name(),
                    w.evidence
                ),
            ));
        }
    }
    report.restore_errors = guard.restore();
    for e in &report.restore_errors {
        late.push((
            ViolationKind::Harness,
            format!("restoring the machine: {e}"),
        ));
    }
    for (kind, message) in late {
        report.violation_count += 1;
        report.violations.push(crate::Violation {
            kind,
            message,
            thread: "run".into(),
            at_secs: report.elapsed_secs,
            addrs: Vec::new(),
            ops: Vec::new(),
        });
    }
    report.interrupted = sys::interrupted();
    drop(signals);
    Ok(report)
}

/// `fraction` (clamped to 0..=1) of `bytes`, rounded down.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn fraction_of(bytes: u64, fraction: f64) -> u64 {
    // In range by the clamp: the product lies in 0..=bytes.
    (bytes as f64 * fraction.clamp(0.0, 1.0)) as u64
}

/// Waits (up to 3 s) for the cgroup's usage to fall back near `baseline`: freed memory is
/// uncharged a little later (per-CPU stocks, RCU-freed page tables), and swap-cache pages whose
/// swap entries died with the mappings stay charged until reclaimed, so it reclaims what is
/// reclaimable (`memory.force_empty`) first. What is left is a leak.
fn settle_usage(dir: &std::path::Path, baseline: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let usage = machine::cgroup_value(dir, "memory.usage_in_bytes").unwrap_or(0);
        if usage <= baseline + (4 << 20) || Instant::now() > deadline {
            return usage;
        }
        let _ = std::fs::write(dir.join("memory.force_empty"), "0");
        std::thread::sleep(Duration::from_millis(50));
    }
}

type Threads = Vec<(String, JoinHandle<Option<(Walker, DriverStats)>>)>;

#[allow(clippy::type_complexity)]
fn run_threads(
    cfg: &Config,
    page: usize,
    machine: &MachineGuard,
    cgroup: &Option<std::path::PathBuf>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Report, Option<Arc<Shared>>), TortureError> {
    let has = |w: Walker| cfg.walkers.contains(&w);
    let key = rng::mix(cfg.seed ^ 0x7461_6773);
    let (pairs, pair_ids) = build_pairs(cfg, key, page, has(Walker::Ksm), machine)?;
    let mut features = Features::empty();
    if has(Walker::Flip) {
        features |= Features::EVENT_REMAP;
    }
    features |= Features::EVENT_REMOVE;
    let uffd = Uffd::builder()
        .non_blocking(true)
        .features(features)
        .create()
        .map_err(TortureError::Create)?;
    for pair in &pairs {
        for side in &pair.sides {
            uffd.register(side.map.page_ptr(0), side.map.len(), RegisterMode::MISSING)
                .map_err(TortureError::Register)?;
        }
    }
    let pagemap = Pagemap::open().map_err(TortureError::Pagemap)?;
    let threads_total = cfg.movers + cfg.mutators + cfg.walkers.len() + 2;
    let sh = Arc::new(Shared {
        cfg: cfg.clone(),
        key,
        page,
        uffd,
        pagemap,
        pairs,
        pair_ids,
        start: Instant::now(),
        stop: AtomicBool::new(false),
        stop_events: AtomicBool::new(false),
        forks_started: AtomicU32::new(0),
        forks_done: AtomicU32::new(0),
        ksm_on: has(Walker::Ksm),
        // MADV_DONTNEED of zero pages (movers) and of the flip region queue remove events.
        ctx_events: true,
        ctx_nomem: has(Walker::Reclaim),
        stats: Stats::default(),
        results: ResultCounts::default(),
        violations: Mutex::new(Vec::new()),
        violation_count: AtomicU64::new(0),
        oplog: OpLog::new(threads_total),
        injected: AtomicBool::new(false),
        owner: machine.mm_owner(),
        oracle: crate::oracle::behaviour(),
    });
    let events = {
        let sh = Arc::clone(&sh);
        std::thread::Builder::new()
            .name("torture-events".into())
            .spawn(move || engine::event_reader(&sh))
            .map_err(setup("spawning the event reader"))?
    };
    let oom = cgroup.clone().map(|dir| {
        let sh = Arc::clone(&sh);
        std::thread::Builder::new()
            .name("torture-oom-guard".into())
            .spawn(move || machine::oom_guard(&dir, &sh.stop_events))
    });
    let mut threads: Threads = Vec::new();
    let mut tid = 0usize;
    let mut spawn =
        |name: String,
         f: Box<dyn FnOnce(&Shared, usize, Rng) -> Option<(Walker, DriverStats)> + Send>,
         threads: &mut Threads| {
            let sh = Arc::clone(&sh);
            let my = tid;
            tid += 1;
            let rng = Rng::new(cfg.seed, my as u64);
            let h = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || f(&sh, my, rng))
                .map_err(setup(format!("spawning {name}")))?;
            threads.push((name, h));
            Ok::<(), TortureError>(())
        };
    for i in 0..cfg.movers {
        spawn(
            format!("mover-{i}"),
            Box::new(|sh, t, r| {
                engine::mover(sh, t, r);
                None
            }),
            &mut threads,
        )?;
    }
    for i in 0..cfg.mutators {
        spawn(
            format!("mutator-{i}"),
            Box::new(|sh, t, r| {
                engine::mutator(sh, t, r);
                None
            }),
            &mut threads,
        )?;
    }
    for &w in &cfg.walkers {
        let cg = machine
            .cgroup_and_limit()
            .map(|(dir, limit)| (dir.to_path_buf(), limit));
        spawn(
            format!("walker-{}", w.name()),
            Box::new(move |sh, t, r| {
                let cg = cg.as_ref().map(|(dir, limit)| (dir.as_path(), *limit));
                Some((w, walkers::drive(sh, w, t, r, cg)))
            }),
            &mut threads,
        )?;
    }
    // Every thread is started (their control blocks charged at home): from now on what the
    // process faults in, the kernel's copies of the regions' pages above all, is charged to the
    // cgroup.
    sh.owner.enter().map_err(|source| TortureError::Machine {
        source,
        not_restored: Vec::new(),
    })?;
    // Run.
    let deadline = sh.start + cfg.duration;
    while Instant::now() < deadline && !sh.stopping() && !sys::interrupted() {
        std::thread::sleep(
            Duration::from_millis(250).min(deadline.saturating_duration_since(Instant::now())),
        );
        progress(&Progress {
            elapsed_secs: sh.elapsed(),
            duration_secs: cfg.duration.as_secs_f64(),
            pages_moved: remap::counters::get(&sh.stats.pages_moved),
            moves: remap::counters::get(&sh.stats.moves),
            violations: sh.violation_count.load(Ordering::Relaxed),
        });
    }
    sh.stop.store(true, Ordering::SeqCst);
    let elapsed = sh.elapsed();
    if let Err(e) = sh.owner.leave() {
        sh.violation(
            ViolationKind::Harness,
            "run",
            format!(
                "moving the main thread out of the cgroup: {}",
                machine::error_chain(&e)
            ),
            vec![],
        );
    }
    // Join, with a watchdog: a thread that does not stop is hung in the kernel.
    let grace = Instant::now() + STOP_GRACE;
    let mut driver_stats: BTreeMap<Walker, DriverStats> = BTreeMap::new();
    let mut hung = Vec::new();
    for (name, h) in threads {
        while !h.is_finished() && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !h.is_finished() {
            hung.push(name);
            continue;
        }
        match h.join() {
            Ok(Some((w, st))) => {
                driver_stats.insert(w, st);
            }
            Ok(None) => {}
            Err(_) => sh.violation(
                ViolationKind::Harness,
                &name,
                format!("{name} panicked"),
                vec![],
            ),
        }
    }
    for name in &hung {
        sh.violation(
            ViolationKind::Harness,
            name,
            format!("{name} did not stop within {STOP_GRACE:?}: hung"),
            vec![],
        );
    }
    if hung.is_empty() {
        engine::audit(&sh);
    }
    sh.stop_events.store(true, Ordering::SeqCst);
    let events_ok = events.join().is_ok();
    let oom_rescues = match oom {
        Some(Ok(h)) => h.join().unwrap_or(0),
        _ => 0,
    };
    if !events_ok {
        sh.violation(
            ViolationKind::Harness,
            "events",
            "the event reader panicked".into(),
            vec![],
        );
    }
    let st = sh.stats.snapshot();
    let (pages_moved, moves) = (st.pages_moved, st.moves);
    let violations = sh
        .violations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let log_path = if violations.is_empty() {
        None
    } else {
        write_log(cfg, &sh)
    };
    let walkers = cfg
        .walkers
        .iter()
        .map(|&w| {
            let d = driver_stats.remove(&w).unwrap_or_default();
            WalkerReport {
                walker: w,
                ops: d.ops,
                refused: d.refused,
                detail: d.detail,
                ran: false,
                evidence: String::new(),
            }
        })
        .collect();
    let mut walkers_vec: Vec<WalkerReport> = walkers;
    if let Some(w) = walkers_vec.iter_mut().find(|w| w.walker == Walker::Reclaim) {
        w.detail.insert("oom_rescues".into(), oom_rescues as i64);
    }
    if let Some(w) = walkers_vec.iter_mut().find(|w| w.walker == Walker::Fork) {
        w.detail.insert(
            "forks".into(),
            i64::from(sh.forks_done.load(Ordering::SeqCst)),
        );
    }
    let mut notes = Vec::new();
    if cgroup.is_some() && has(Walker::Fork) && sh.owner.forks_at_home() {
        notes.push(
            "forks with the main thread out of the cgroup (the process registered rseq areas): \
             pages written while a child lives are charged outside it, about a tenth of the \
             reclaim pressure; GLIBC_TUNABLES=glibc.pthread.rseq=0 keeps it all \
             (docs/findings/memcg-oom-disabled-rseq-sigsegv.md)"
                .to_owned(),
        );
    }
    notes.push(format!(
        "MOVE results judged by the oracle ({}): {}, by the torture rules alone: {}, disagreements: {}",
        sh.oracle.map_or("no row for this kernel", |b| b.name),
        st.oracle_judged,
        st.rules_judged,
        st.disagreements
    ));
    let report = Report {
        seed: cfg.seed,
        elapsed_secs: elapsed,
        pages_moved,
        holes_moved: st.holes_moved,
        swapped_pages_moved: st.swapped_moved,
        moves,
        moves_per_sec: moves as f64 / elapsed.max(1e-9),
        pages_per_sec: pages_moved as f64 / elapsed.max(1e-9),
        results: sh.results.snapshot(),
        pages_checked: st.checked,
        pages_written: st.written,
        logical_pages: u64::from(pair_ids)
            + if cfg.walkers.contains(&Walker::Flip) {
                cfg.flip_pages as u64
            } else {
                0
            },
        pages_dropped: st.dropped,
        walkers: walkers_vec,
        vmstat: BTreeMap::new(),
        ksm: BTreeMap::new(),
        cgroup: None,
        fds: (0, 0),
        kernel_log: Vec::new(),
        kernel_log_checked: false,
        violation_count: sh.violation_count.load(Ordering::SeqCst),
        violations,
        interrupted: false,
        restore_errors: Vec::new(),
        notes,
        log_path,
    };
    if !hung.is_empty() {
        // Threads still use the memory: leak it rather than unmap it under them.
        std::mem::forget(Arc::clone(&sh));
        return Ok((report, None));
    }
    Ok((report, Some(sh)))
}

fn write_log(cfg: &Config, sh: &Shared) -> Option<String> {
    let dir = cfg.log_dir.clone().unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!(
        "remap-torture-{:#x}-{}.log",
        cfg.seed,
        std::process::id()
    ));
    let mut text = format!("# {}\n", cfg.replay_command());
    for op in sh.oplog.merged() {
        text.push_str(&op.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).ok()?;
    Some(path.display().to_string())
}
