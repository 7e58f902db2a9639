//! `remap bench`: MOVE against COPY, memcpy and mremap, and fault service, side by side.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use remap_bench::{AroundSource, BenchConfig, FaultMethod, Method};

use crate::Outcome;

/// Options of `remap bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// A short run (8 MiB, 3 repetitions) that finishes in under 20 seconds; it leaves the
    /// compaction section out unless `--only compaction` asks for it (then a 16 MiB heap).
    #[arg(long)]
    quick: bool,

    /// Bytes moved per run, a multiple of 2 MiB (suffixes K, M, G); default 128M (8M with --quick).
    #[arg(long, value_parser = parse_size)]
    size: Option<usize>,

    /// Measured repetitions per figure (after one warm-up), bulk and fault service alike;
    /// default 5 for bulk and 7 for fault service and fault-around (3 for both with --quick).
    #[arg(long)]
    reps: Option<u32>,

    /// Only these methods, comma-separated (bulk and fault-service methods alike; `compaction`
    /// for the compaction section).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<MethodName>,

    /// Write the SVG chart here (default: remap-bench.svg in the workspace's target directory:
    /// CARGO_TARGET_DIR if set, else the target/ beside the nearest Cargo.lock above the current
    /// directory, else ./target).
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,

    /// Testing the harness: flip a destination byte after every repetition of this bulk method,
    /// so that its verification fails (and the run exits 1).
    #[arg(long, value_name = "METHOD", hide = true, value_enum)]
    inject_corruption: Option<BulkMethodName>,
}

/// A method of `remap bench` as the command line names it. Every name is the one the report
/// prints (`Method::name`, `FaultMethod::name`); a test holds the two lists together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MethodName {
    /// Bulk: raw UFFDIO_MOVE ioctls.
    MoveRaw,
    /// Bulk: remap's Mover.
    MoveMover,
    /// Bulk: UFFDIO_COPY.
    Copy,
    /// Bulk: memcpy into prefaulted memory.
    MemcpyPrefaulted,
    /// Bulk: memcpy into fresh memory.
    MemcpyFresh,
    /// Bulk: mremap.
    Mremap,
    /// Bulk: the peer crate's COPY (needs the `peer` feature).
    PeerCopy,
    /// Faults: a raw handler loop.
    RawLoop,
    /// Faults: a raw handler loop moving pages in (UFFDIO_MOVE).
    RawMoveLoop,
    /// Faults: the FaultServer with zero pages.
    ServerZero,
    /// Faults: the FaultServer copying from a buffer.
    ServerCopy,
    /// Faults: the FaultServer moving from a pool.
    ServerMove,
    /// Faults: the FaultServer with an FnSource (a closure fills each page).
    ServerFn,
    /// Faults: SIGBUS mode.
    ServerSigbus,
    /// Faults: the peer crate's loop (needs the `peer` feature).
    PeerLoop,
    /// Faults: server-copy with adaptive waiting (handlers spin before they park).
    ServerCopySpin,
    /// Faults: server-copy with handler threads pinned one per CPU.
    ServerCopyPin,
    /// Faults: server-copy with adaptive waiting and pinning.
    ServerCopySpinPin,
    /// Faults: server-copy with handlers and mutators pinned one per CPU (a fault served where
    /// it happened).
    ServerCopyColocated,
    /// The compaction section: a small heap compacted by MOVE, MOVE page by page and COPY.
    Compaction,
    /// Fault-around: MovePool, window 1 and 16, sequential and random touches.
    AroundMove,
    /// Fault-around: CopySource, window 1 and 16, sequential and random touches.
    AroundCopy,
    /// Fault-around: FnSource, window 1 and 16, sequential and random touches.
    AroundFn,
}

/// A bulk method or a fault-service method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnyMethod {
    Bulk(Method),
    Fault(FaultMethod),
    /// The compaction section (one name for the three publication modes).
    Compaction,
    Around(AroundSource),
}

impl MethodName {
    fn method(self) -> AnyMethod {
        use AnyMethod::{Bulk, Fault};
        match self {
            MethodName::MoveRaw => Bulk(Method::MoveRaw),
            MethodName::MoveMover => Bulk(Method::MoveMover),
            MethodName::Copy => Bulk(Method::Copy),
            MethodName::MemcpyPrefaulted => Bulk(Method::MemcpyPrefaulted),
            MethodName::MemcpyFresh => Bulk(Method::MemcpyFresh),
            MethodName::Mremap => Bulk(Method::Mremap),
            MethodName::PeerCopy => Bulk(Method::PeerCopy),
            MethodName::RawLoop => Fault(FaultMethod::RawLoop),
            MethodName::RawMoveLoop => Fault(FaultMethod::RawMoveLoop),
            MethodName::ServerZero => Fault(FaultMethod::ServerZero),
            MethodName::ServerCopy => Fault(FaultMethod::ServerCopy),
            MethodName::ServerMove => Fault(FaultMethod::ServerMove),
            MethodName::ServerFn => Fault(FaultMethod::ServerFn),
            MethodName::ServerSigbus => Fault(FaultMethod::ServerSigbus),
            MethodName::PeerLoop => Fault(FaultMethod::PeerLoop),
            MethodName::ServerCopySpin => Fault(FaultMethod::ServerCopySpin),
            MethodName::ServerCopyPin => Fault(FaultMethod::ServerCopyPin),
            MethodName::ServerCopySpinPin => Fault(FaultMethod::ServerCopySpinPin),
            MethodName::ServerCopyColocated => Fault(FaultMethod::ServerCopyColocated),
            MethodName::Compaction => AnyMethod::Compaction,
            MethodName::AroundMove => AnyMethod::Around(AroundSource::AroundMove),
            MethodName::AroundCopy => AnyMethod::Around(AroundSource::AroundCopy),
            MethodName::AroundFn => AnyMethod::Around(AroundSource::AroundFn),
        }
    }
}

/// A bulk method, for the hidden corruption hook (which only bulk methods have).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BulkMethodName {
    MoveRaw,
    MoveMover,
    Copy,
    MemcpyPrefaulted,
    MemcpyFresh,
    Mremap,
    PeerCopy,
}

impl BulkMethodName {
    fn method(self) -> Method {
        match self {
            BulkMethodName::MoveRaw => Method::MoveRaw,
            BulkMethodName::MoveMover => Method::MoveMover,
            BulkMethodName::Copy => Method::Copy,
            BulkMethodName::MemcpyPrefaulted => Method::MemcpyPrefaulted,
            BulkMethodName::MemcpyFresh => Method::MemcpyFresh,
            BulkMethodName::Mremap => Method::Mremap,
            BulkMethodName::PeerCopy => Method::PeerCopy,
        }
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1usize << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("not a size: {s:?} (examples: 64M, 1G, 4194304)"))
}

/// The default chart path: `remap-bench.svg` in [`target_dir`] of the environment's
/// `CARGO_TARGET_DIR` and the current directory.
fn default_chart() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    target_dir(std::env::var_os("CARGO_TARGET_DIR"), &cwd).join("remap-bench.svg")
}

/// The workspace's target directory as cargo would pick it: `cargo_target_dir` if set (relative
/// to `cwd`), else `target/` in the workspace root: the nearest directory at or above `cwd`
/// holding a `Cargo.lock` or a `Cargo.toml` that declares a `[workspace]` (a member's own
/// `Cargo.toml` does not count), else `cwd/target`.
fn target_dir(cargo_target_dir: Option<OsString>, cwd: &Path) -> PathBuf {
    if let Some(dir) = cargo_target_dir.filter(|d| !d.is_empty()) {
        return cwd.join(dir);
    }
    let is_root = |d: &Path| {
        d.join("Cargo.lock").is_file()
            || std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
    };
    cwd.ancestors()
        .find(|d| is_root(d))
        .unwrap_or(cwd)
        .join("target")
}

fn config(args: &BenchArgs) -> BenchConfig {
    let mut c = if args.quick {
        BenchConfig::quick()
    } else {
        BenchConfig::standard()
    };
    if let Some(size) = args.size {
        c.size = size;
    }
    c.corrupt = args.inject_corruption.map(BulkMethodName::method);
    if let Some(reps) = args.reps {
        c.reps = reps;
        c.fault_reps = reps;
    }
    if !args.only.is_empty() {
        let chosen: Vec<AnyMethod> = args.only.iter().map(|m| m.method()).collect();
        c.methods = chosen
            .iter()
            .filter_map(|m| match m {
                AnyMethod::Bulk(m) => Some(*m),
                _ => None,
            })
            .collect();
        c.fault_methods = chosen
            .iter()
            .filter_map(|m| match m {
                AnyMethod::Fault(m) => Some(*m),
                _ => None,
            })
            .collect();
        c.fault_around = chosen
            .iter()
            .filter_map(|m| match m {
                AnyMethod::Around(s) => Some(*s),
                _ => None,
            })
            .collect();
        c.compaction = chosen.contains(&AnyMethod::Compaction).then(|| {
            if args.quick {
                remap_bench::CompactionConfig::quick()
            } else {
                remap_bench::CompactionConfig::standard()
            }
        });
    }
    c
}

/// Runs `remap bench`.
pub(crate) fn run(args: &BenchArgs, out: crate::Output) -> anyhow::Result<Outcome> {
    let config = config(args);
    let progress = remap_bench::progress_bar(out.progress);
    let report = match remap_bench::run(&config, &progress) {
        Ok(r) => r,
        // Every BenchError stops the run before any figure: it could not do its job.
        Err(e) => return Ok(Outcome::CannotRun(error_chain(&e))),
    };
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    if out.json {
        report.write_json(&mut stdout)?;
    } else {
        report.write_table(&mut stdout)?;
    }
    let chart = args.chart.clone().unwrap_or_else(default_chart);
    remap_bench::chart::write_chart(&report, &chart)?;
    print_chart_path(&chart, out.json, &mut stdout)?;
    Ok(Outcome::found_unless(report.all_verified()))
}

/// An error and its sources on one line, the way `anyhow`'s `{:#}` prints them.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn print_chart_path(chart: &Path, json: bool, stdout: &mut impl Write) -> std::io::Result<()> {
    if json {
        eprintln!("chart: {}", chart.display());
        Ok(())
    } else {
        writeln!(stdout, "chart: {}", chart.display())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::ValueEnum;
    use remap_bench::{AroundSource, FaultMethod, Method};

    use super::{parse_size, target_dir, AnyMethod, BulkMethodName, MethodName};

    /// The command line's names are the report's names, for every method, both ways.
    #[test]
    fn method_names_are_the_report_s() {
        for name in MethodName::value_variants() {
            let spelled = name.to_possible_value().unwrap().get_name().to_owned();
            let reported = match name.method() {
                AnyMethod::Bulk(m) => m.name(),
                AnyMethod::Fault(m) => m.name(),
                AnyMethod::Compaction => "compaction",
                AnyMethod::Around(s) => s.name(),
            };
            assert_eq!(spelled, reported);
        }
        let listed: Vec<AnyMethod> = MethodName::value_variants()
            .iter()
            .map(|n| n.method())
            .collect();
        for m in Method::ALL {
            assert!(listed.contains(&AnyMethod::Bulk(m)), "{m} has no name");
        }
        for m in FaultMethod::ALL {
            assert!(listed.contains(&AnyMethod::Fault(m)), "{m} has no name");
        }
        for s in AroundSource::ALL {
            assert!(listed.contains(&AnyMethod::Around(s)), "{s} has no name");
        }
        for name in BulkMethodName::value_variants() {
            let spelled = name.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(spelled, name.method().name());
        }
        assert_eq!(BulkMethodName::value_variants().len(), Method::ALL.len());
    }

    #[test]
    fn the_target_dir_is_the_workspace_s() {
        let tmp = std::env::temp_dir().join(format!("remap-target-dir-{}", std::process::id()));
        let sub = tmp.join("ws/crates/a");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(
            target_dir(None, &sub),
            sub.join("target"),
            "no workspace above"
        );
        std::fs::write(tmp.join("Cargo.lock"), "").unwrap();
        assert_eq!(
            target_dir(None, &sub),
            tmp.join("target"),
            "a Cargo.lock above"
        );
        std::fs::write(sub.join("Cargo.toml"), "[package]\nname = \"a\"\n").unwrap();
        std::fs::write(tmp.join("ws/Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        assert_eq!(
            target_dir(None, &sub),
            tmp.join("ws/target"),
            "the nearest workspace root, not the member"
        );
        assert_eq!(
            target_dir(Some("/x/t".into()), &sub),
            Path::new("/x/t"),
            "CARGO_TARGET_DIR wins"
        );
        assert_eq!(target_dir(Some("t".into()), &sub), sub.join("t"));
        std::fs::remove_dir_all(&tmp).ok();
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("x").is_err());
    }
}
