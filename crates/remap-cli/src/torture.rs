//! `remap torture`: UFFDIO_MOVE raced against the kernel's reverse-map walkers, with every page
//! accounted for. The engine is `remap-torture`; this module parses options, shows progress,
//! confirms and shrinks a failure, and renders the report.
//!
//! # JSON output (`--json`)
//!
//! JSON Lines, each `{"type": ..., "data": ...}`:
//! - `config`: first line: `seed`, `duration_secs`, `movers`, `mutators`, `walkers`,
//!   `replay` (the command that replays the run).
//! - `violation`: one per broken invariant kept: `kind`, `message`, `thread`, `at_secs`, `addrs`,
//!   `ops` (the shrunk operation log of those pages).
//! - `confirmation`: after a failure: `hits` of `runs` re-runs, and the shrunk `replay` command.
//! - `summary`: last line: the whole `remap_torture::Report` (pages moved, moves per second,
//!   `results` histogram, `walkers` with their evidence, `vmstat` / `ksm` deltas, `cgroup`,
//!   `kernel_log`, `fds`, `violation_count`) plus `clean`, `replay` and `elapsed_total`.
//!
//! ```text
//! {"type":"config","data":{"seed":42,"duration_secs":60.0,"movers":3,"mutators":3,"walkers":["reclaim",...],"replay":"remap torture --seed 0x2a ..."}}
//! {"type":"summary","data":{"seed":42,"pages_moved":1834000,"moves_per_sec":9100.0,"results":{"ok":...},...,"clean":true,"elapsed_total":61.2}}
//! ```

use std::io::Write as _;
use std::time::{Duration, Instant};

use remap_torture::{Config, Inject, Report, TortureError, Walker};

use crate::output::json_line;
use crate::{Outcome, Output};

/// One value of `--walkers`: a walker driver (the library's [`Walker`], whose `clap::ValueEnum`
/// names and documents the choices), or `all`, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalkerChoice {
    All,
    None,
    One(Walker),
}

impl clap::ValueEnum for WalkerChoice {
    fn value_variants<'a>() -> &'a [Self] {
        static VARIANTS: std::sync::LazyLock<Vec<WalkerChoice>> = std::sync::LazyLock::new(|| {
            [WalkerChoice::All, WalkerChoice::None]
                .into_iter()
                .chain(
                    Walker::value_variants()
                        .iter()
                        .map(|&w| WalkerChoice::One(w)),
                )
                .collect()
        });
        &VARIANTS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        match self {
            WalkerChoice::All => Some(PossibleValue::new("all").help("Every driver")),
            WalkerChoice::None => {
                Some(PossibleValue::new("none").help("No walker driver: movers and mutators only"))
            }
            WalkerChoice::One(w) => w.to_possible_value(),
        }
    }
}

impl WalkerChoice {
    fn walkers(self) -> Vec<Walker> {
        match self {
            WalkerChoice::All => Walker::ALL.to_vec(),
            WalkerChoice::None => Vec::new(),
            WalkerChoice::One(w) => vec![w],
        }
    }
}

/// Options of `remap torture`.
#[derive(Debug, clap::Args)]
pub(crate) struct TortureArgs {
    /// How long to run: seconds, or with a unit (`20s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,

    /// The master seed (decimal or 0x-hex); random when not given. Printed first.
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,

    /// Mover and mutator threads together (default: two per CPU plus two, half of them movers).
    #[arg(long)]
    threads: Option<usize>,

    /// Walker drivers, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    walkers: Vec<WalkerChoice>,

    /// Walkers whose counters show no activity are reported, but do not fail the run.
    #[arg(long)]
    idle_walkers_ok: bool,

    /// Re-runs of a failing seed for its hit rate (0: none, no shrinking).
    #[arg(long, default_value_t = 3)]
    reruns: usize,

    /// Where to write the operation log on a failure (default: the temporary directory).
    #[arg(long)]
    log_dir: Option<std::path::PathBuf>,

    /// Region pairs (each two regions of --region-mib).
    #[arg(long, default_value_t = 4)]
    pairs: usize,

    /// Size of each region in MiB (a multiple of 2).
    #[arg(long, default_value_t = 32)]
    region_mib: usize,

    /// Fault injection, to show that the invariants catch a fault.
    #[arg(long, value_enum, hide = true)]
    inject: Option<Inject>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    if !(v * mult).is_finite() || v < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

fn parse_seed(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|_| format!("not a seed: {s:?}"))
}

fn config(args: &TortureArgs) -> anyhow::Result<Config> {
    let seed = args.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()) ^ d.as_secs() << 30);
        t ^ u64::from(std::process::id()) << 40
    });
    let mut cfg = Config {
        duration: args.duration,
        seed,
        ..Config::default()
    };
    if let Some(t) = args.threads {
        anyhow::ensure!(t >= 2, "--threads needs at least 2 (a mover and a mutator)");
        cfg.movers = t.div_ceil(2);
        cfg.mutators = t / 2;
    }
    let mut walkers: Vec<Walker> = args.walkers.iter().flat_map(|w| w.walkers()).collect();
    walkers.sort();
    walkers.dedup();
    cfg.walkers = walkers;
    cfg.idle_walkers_ok = args.idle_walkers_ok;
    cfg.pairs = args.pairs;
    anyhow::ensure!(
        args.region_mib >= 2 && args.region_mib % 2 == 0,
        "--region-mib must be a positive multiple of 2"
    );
    cfg.region_pages = args.region_mib * (1 << 20) / uffd::page_size();
    cfg.log_dir = args.log_dir.clone();
    cfg.inject = args.inject;
    Ok(cfg)
}

#[derive(Debug, serde::Serialize)]
struct ConfigRecord {
    machine: remap::system::Machine,
    seed: u64,
    duration_secs: f64,
    movers: usize,
    mutators: usize,
    walkers: Vec<Walker>,
    replay: String,
}

#[derive(Debug, serde::Serialize)]
struct Summary<'a> {
    #[serde(flatten)]
    report: &'a Report,
    clean: bool,
    kernel_findings: usize,
    replay: String,
    elapsed_total: f64,
}

/// Runs `remap torture`.
pub(crate) fn run(args: &TortureArgs, out: Output) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let cfg = config(args)?;
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    let rec = ConfigRecord {
        machine: remap::system::Machine::read(),
        seed: cfg.seed,
        duration_secs: cfg.duration.as_secs_f64(),
        movers: cfg.movers,
        mutators: cfg.mutators,
        walkers: cfg.walkers.clone(),
        replay: cfg.replay_command(),
    };
    if out.json {
        writeln!(w, "{}", json_line("config", &rec)?)?;
    } else {
        writeln!(w, "seed {:#x}", cfg.seed)?;
        writeln!(w, "replay: {}", rec.replay)?;
        let names: Vec<&str> = cfg.walkers.iter().map(|w| w.name()).collect();
        writeln!(
            w,
            "{} movers, {} mutators, walkers: {}",
            cfg.movers,
            cfg.mutators,
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )?;
    }
    w.flush()?;
    let bar = progress_bar(out.progress, cfg.duration);
    let result = remap_torture::run(&cfg, &mut |p| {
        bar.set_position(tenths(p.elapsed_secs));
        bar.set_message(format!(
            "{} pages moved, {} moves, {} violations",
            p.pages_moved, p.moves, p.violations
        ));
    });
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(
            e @ (TortureError::NotRoot
            | TortureError::NoMove
            | TortureError::Create(_)
            | TortureError::Machine { .. }
            | TortureError::Setup { .. }
            | TortureError::Pagemap(_)
            | TortureError::Register(_)),
        ) => {
            // The whole chain: the errno of a set-up failure is in the error's source.
            return Ok(Outcome::CannotRun(format!("{:#}", anyhow::Error::from(e))));
        }
        Err(e) => return Err(e.into()),
    };
    if report.interrupted {
        eprintln!("interrupted: the machine was restored; the report below is partial");
    }
    if out.json {
        for v in &report.violations {
            writeln!(w, "{}", json_line("violation", v)?)?;
        }
    } else {
        w.write_all(render(&report, &cfg).as_bytes())?;
    }
    w.flush()?;
    let mut replay = cfg.replay_command();
    if !report.clean() && !report.interrupted && args.reruns > 0 {
        if !out.json {
            writeln!(
                w,
                "\nre-running seed {:#x} {} times for the hit rate, then shrinking ...",
                cfg.seed, args.reruns
            )?;
            w.flush()?;
        }
        match remap_torture::confirm(&cfg, args.reruns, Duration::from_secs(120)) {
            Ok(c) => {
                replay = c.replay.clone();
                if out.json {
                    writeln!(w, "{}", json_line("confirmation", &c)?)?;
                } else {
                    writeln!(w, "hit rate: {} of {} re-runs failed", c.hits, c.runs)?;
                }
            }
            Err(e) => eprintln!("re-running failed: {e}"),
        }
    }
    let summary = Summary {
        report: &report,
        clean: report.clean(),
        kernel_findings: report.kernel_findings(),
        replay: replay.clone(),
        elapsed_total: started.elapsed().as_secs_f64(),
    };
    if out.json {
        writeln!(w, "{}", json_line("summary", &summary)?)?;
    } else if report.clean() {
        writeln!(w, "\nclean: every page accounted for, every result allowed")?;
    } else {
        writeln!(
            w,
            "\nFAILED: {} invariant violations ({} kernel findings)\nreplay: {replay}",
            report.violation_count,
            report.kernel_findings()
        )?;
    }
    w.flush()?;
    Ok(if report.interrupted {
        Outcome::CannotRun("interrupted before the run's end (the machine was restored)".into())
    } else {
        Outcome::found_unless(report.clean())
    })
}

/// Tenths of a second, for the progress bar's position (negative and NaN clamp to 0).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn tenths(secs: f64) -> u64 {
    (secs.max(0.0) * 10.0) as u64
}

fn progress_bar(show: bool, duration: Duration) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(tenths(duration.as_secs_f64())),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}") {
        bar.set_style(style);
    }
    bar
}

/// The human report.
fn render(r: &Report, cfg: &Config) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "\nran {:.1} s", r.elapsed_secs);
    let _ = writeln!(
        s,
        "pages moved          {} ({:.0}/s), {} holes, {} swapped pages moved without swap-in",
        r.pages_moved, r.pages_per_sec, r.holes_moved, r.swapped_pages_moved
    );
    let _ = writeln!(
        s,
        "MOVE ioctls          {} ({:.0}/s)",
        r.moves, r.moves_per_sec
    );
    let _ = writeln!(
        s,
        "pages checked        {} (written {}, dropped on purpose {})",
        r.pages_checked, r.pages_written, r.pages_dropped
    );
    let _ = writeln!(s, "results:");
    for (k, v) in &r.results {
        let _ = writeln!(s, "  {k:<16} {v:>10}");
    }
    let _ = writeln!(s, "walkers:");
    for w in &r.walkers {
        let _ = writeln!(
            s,
            "  {:<8} {:<4} {:>8} ops {:>6} refused  {}",
            w.walker.name(),
            if w.ran { "ran" } else { "IDLE" },
            w.ops,
            w.refused,
            w.evidence
        );
    }
    let _ = writeln!(s, "/proc/vmstat deltas:");
    for (k, v) in r.vmstat.iter().filter(|(_, v)| **v != 0) {
        let _ = writeln!(s, "  {k:<32} {v:>12}");
    }
    if !r.ksm.is_empty() {
        let _ = writeln!(s, "KSM:");
        for (k, v) in &r.ksm {
            let _ = writeln!(s, "  {k:<32} {v:>12}");
        }
    }
    if let Some(c) = &r.cgroup {
        let _ = writeln!(
            s,
            "cgroup {}: limit {} MiB, working set {} MiB, failcnt {}, max usage {} MiB, usage {} -> {} KiB",
            c.path,
            c.limit_bytes >> 20,
            c.working_set_bytes >> 20,
            c.failcnt,
            c.max_usage_bytes >> 20,
            c.baseline_usage_bytes >> 10,
            c.final_usage_bytes >> 10
        );
        if let Some(w) = r.walkers.iter().find(|w| w.walker == Walker::Reclaim) {
            if let Some(n) = w.detail.get("oom_rescues") {
                let _ = writeln!(s, "  {:<32} {n:>12}", "limit lifted for a moment (OOM)");
            }
        }
        for key in [
            "swap",
            "rss",
            "rss_huge",
            "pgmajfault",
            "pgpgout",
            "active_anon",
            "inactive_anon",
        ] {
            if let Some(v) = c.stat.get(key) {
                let _ = writeln!(s, "  {key:<32} {v:>12}");
            }
        }
    }
    let _ = writeln!(
        s,
        "fds {} -> {}; kernel log {}",
        r.fds.0,
        r.fds.1,
        if !r.kernel_log_checked {
            "not readable".to_owned()
        } else if r.kernel_log.is_empty() {
            "clean".to_owned()
        } else {
            format!("{} bad lines", r.kernel_log.len())
        }
    );
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    for v in &r.violations {
        let _ = writeln!(
            s,
            "\nVIOLATION {:?} ({} at {:.2} s): {}",
            v.kind, v.thread, v.at_secs, v.message
        );
        if !v.ops.is_empty() {
            let _ = writeln!(s, "  operations on these pages (shrunk log):");
            for op in &v.ops {
                let _ = writeln!(s, "    {op}");
            }
        }
    }
    if r.violation_count > r.violations.len() as u64 {
        let _ = writeln!(s, "... {} violations in all", r.violation_count);
    }
    if let Some(p) = &r.log_path {
        let _ = writeln!(s, "operation log: {p}");
    }
    let _ = cfg;
    s
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_seed};
    use std::time::Duration;

    #[test]
    fn durations_and_seeds_parse() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_seed("0x2a"), Ok(42));
        assert_eq!(parse_seed("42"), Ok(42));
        assert!(parse_seed("zz").is_err());
    }
}
