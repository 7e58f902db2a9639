//! `remap bench`: MOVE against COPY, memcpy and mremap, and fault service, side by side.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use remap_bench::{BenchConfig, BenchError, FaultMethod, Method};

/// Options of `remap bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// A short run (8 MiB, 3 repetitions) that finishes in under 20 seconds.
    #[arg(long)]
    quick: bool,

    /// Bytes moved per run, a multiple of 2 MiB (suffixes K, M, G); default 128M (8M with --quick).
    #[arg(long, value_parser = parse_size)]
    size: Option<usize>,

    /// Measured repetitions per figure (after one warm-up), bulk and fault service alike;
    /// default 5 for bulk and 3 for fault service (3 for both with --quick).
    #[arg(long)]
    reps: Option<u32>,

    /// Only these methods, comma-separated: move-raw, move-mover, copy, memcpy-prefaulted,
    /// memcpy-fresh, mremap, peer-copy (bulk) and raw-loop, server-zero, server-copy,
    /// server-move, server-sigbus, peer-loop (fault service).
    #[arg(long, value_delimiter = ',', value_parser = parse_method)]
    only: Vec<AnyMethod>,

    /// Write the SVG chart here (default: remap-bench.svg in the workspace's target directory:
    /// CARGO_TARGET_DIR if set, else the target/ beside the nearest Cargo.lock above the current
    /// directory, else ./target).
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,

    /// Testing the harness: flip a destination byte after every repetition of this bulk method,
    /// so that its verification fails (and the run exits 1).
    #[arg(long, value_name = "METHOD", hide = true, value_parser = parse_bulk_method)]
    inject_corruption: Option<Method>,
}

/// A bulk or a fault-service method named on the command line.
#[derive(Debug, Clone, Copy)]
enum AnyMethod {
    Bulk(Method),
    Fault(FaultMethod),
}

fn parse_method(s: &str) -> Result<AnyMethod, String> {
    if let Some(m) = Method::ALL.into_iter().find(|m| m.name() == s) {
        return Ok(AnyMethod::Bulk(m));
    }
    if let Some(m) = FaultMethod::ALL.into_iter().find(|m| m.name() == s) {
        return Ok(AnyMethod::Fault(m));
    }
    let names: Vec<&str> = Method::ALL
        .iter()
        .map(|m| m.name())
        .chain(FaultMethod::ALL.iter().map(|m| m.name()))
        .collect();
    Err(format!("unknown method {s:?}; known: {}", names.join(", ")))
}

fn parse_bulk_method(s: &str) -> Result<Method, String> {
    match parse_method(s)? {
        AnyMethod::Bulk(m) => Ok(m),
        AnyMethod::Fault(m) => Err(format!("{m} is not a bulk method")),
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
    c.corrupt = args.inject_corruption;
    if let Some(reps) = args.reps {
        c.reps = reps;
        c.fault_reps = reps;
    }
    if !args.only.is_empty() {
        c.methods = args
            .only
            .iter()
            .filter_map(|m| match m {
                AnyMethod::Bulk(m) => Some(*m),
                AnyMethod::Fault(_) => None,
            })
            .collect();
        c.fault_methods = args
            .only
            .iter()
            .filter_map(|m| match m {
                AnyMethod::Fault(m) => Some(*m),
                AnyMethod::Bulk(_) => None,
            })
            .collect();
    }
    c
}

/// Runs `remap bench`.
pub(crate) fn run(args: &BenchArgs, out: crate::Output) -> anyhow::Result<ExitCode> {
    let config = config(args);
    let progress = remap_bench::progress_bar(out.progress);
    let report = match remap_bench::run(&config, &progress) {
        Ok(r) => r,
        Err(e @ (BenchError::Unavailable(_) | BenchError::BadConfig(_))) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
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
    Ok(if report.all_verified() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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

    use super::{parse_size, target_dir};

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
