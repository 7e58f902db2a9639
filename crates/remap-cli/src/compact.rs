//! `remap compact`: a real object heap compacted by MOVE (batched), MOVE page by page and COPY,
//! side by side in one run, with mutator threads reading and writing it during compaction, and
//! a memcpy of the live bytes in every cycle as the floor.
//!
//! # `--json`
//!
//! JSON Lines in the project's envelope, `{"type": ..., "data": {...}}`: one `config` record,
//! one `cycle` record per cycle (warm-ups included, flagged), one `mode` record per publication
//! mode (the summary over the measured repetitions), one `summary` record last:
//!
//! ```text
//! {"type":"config","data":{"heap_bytes":33554432,"live_ratio":0.5,"workload":"trees","mutators":1,"faults":"sigbus","modes":["move","move-single","copy"],"reps":2,"thp":false,"seed":42,"corruption":null,"machine":{"kernel_release":"6.18.0","cores":2,...}}}
//! {"type":"cycle","data":{"mode":"move","rep":0,"warmup":true,"compaction_wall_ns":...,...}}
//! {"type":"mode","data":{"mode":"move","reps":2,"compaction_wall_ms":{"median":..,"min":..,"max":..},"vs_copy":{...},...}}
//! {"type":"summary","data":{"cycles":9,"verified":true,"mutator_errors":[],"seed":42,"elapsed_total":12.5}}
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use remap_heap::bench::{BenchConfig, BenchError, BenchReport, Mode, ModeSummary, Spread};
use remap_heap::engine::FaultMode;
use remap_heap::plan::Corruption;
use remap_heap::workload::WorkloadKind;
use serde::Serialize;

mod sweep;

/// Options of `remap compact`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompactArgs {
    /// A small run (32 MiB heap, 2 repetitions) that finishes in seconds.
    #[arg(long)]
    quick: bool,

    /// Heap size per publication mode (suffixes K, M, G); default 1G (32M with --quick).
    #[arg(long, value_parser = parse_size)]
    heap_size: Option<usize>,

    /// Live fraction of the heap at each cycle, as a fraction or a percentage (0.5, 50%).
    #[arg(long, default_value = "50%", value_parser = parse_ratio)]
    live: f64,

    /// The mutator workload.
    #[arg(long, value_enum, default_value_t = WorkloadArg::Trees)]
    workload: WorkloadArg,

    /// Mutator threads per heap.
    #[arg(long, default_value_t = 1)]
    mutators: usize,

    /// How mutator faults on unpublished pages are served.
    #[arg(long, value_enum, default_value_t = FaultsArg::Sigbus)]
    faults: FaultsArg,

    /// Publication modes, comma-separated, interleaved in one run (default: all three).
    #[arg(long, value_enum, value_delimiter = ',')]
    publication: Vec<ModeArg>,

    /// Measured cycles per mode, after one warm-up cycle; default 3 (2 with --quick).
    #[arg(long)]
    reps: Option<usize>,

    /// Transparent huge pages on the heap: on (MADV_HUGEPAGE) or off (MADV_NOHUGEPAGE).
    #[arg(long, value_enum, default_value_t = OnOff::Off)]
    thp: OnOff,

    /// The seed of the mutators' generators.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// The `move` mode's batch in pages (the longest run one ioctl publishes; default 512), the
    /// other modes keeping theirs: for the crossover between batched MOVE and COPY.
    #[arg(long)]
    batch_pages: Option<usize>,

    /// Keep the mutators stopped during compaction (the crossover without live mutators).
    #[arg(long)]
    idle_mutators: bool,

    /// How cost grows with the work: run the comparison at every heap size of `--sweep-heaps`
    /// (with the first of `--sweep-mutators`) and at every mutator count of `--sweep-mutators`
    /// (at the first heap size), and print per-page costs in one table. Default modes move and
    /// copy, 2 repetitions (1 with --quick); --heap-size and --mutators are not used.
    #[arg(long)]
    sweep: bool,

    /// Heap sizes of `--sweep`, comma-separated; default 256M,1G,4G (8M,16M with --quick).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, requires = "sweep")]
    sweep_heaps: Vec<usize>,

    /// Mutator counts of `--sweep`, comma-separated; default 1,2,4 (1,2 with --quick).
    #[arg(long, value_delimiter = ',', requires = "sweep")]
    sweep_mutators: Vec<usize>,

    /// Write an SVG chart here: MMU curves and stall distributions per mode.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,

    /// Testing the harness: break every compacted heap (a wrong byte or a dangling reference),
    /// so that verification fails and the run exits 1.
    #[arg(long, value_enum, hide = true)]
    inject_corruption: Option<CorruptionArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WorkloadArg {
    /// Binary trees: long-lived trees, temporary trees, replaced subtrees.
    Trees,
    /// A key-value cache: random reads, updates, evictions.
    Kv,
    /// A graph traversal with rewired edges.
    Graph,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FaultsArg {
    /// Handler threads.
    Threads,
    /// The faulting mutator compacts the page in its SIGBUS handler.
    Sigbus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    /// MOVE, contiguous runs per ioctl.
    Move,
    /// MOVE, one page per ioctl.
    MoveSingle,
    /// COPY, then MADV_DONTNEED of from-space in 8 MiB chunks.
    Copy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CorruptionArg {
    WrongByte,
    DanglingRef,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1usize << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("not a size: {s:?} (examples: 256M, 1G)"))?;
    if n < (4 << 20) || n % (2 << 20) != 0 {
        return Err(format!(
            "the heap must be a multiple of 2 MiB, at least 4 MiB: {s:?}"
        ));
    }
    Ok(n)
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("not a ratio: {s:?} (examples: 50%, 0.3)"))?;
    if !(0.05..=0.9).contains(&v) {
        return Err(format!("the live ratio must be between 5% and 90%: {s:?}"));
    }
    Ok(v)
}

fn config(args: &CompactArgs) -> BenchConfig {
    let mut c = if args.quick {
        BenchConfig::quick()
    } else {
        BenchConfig::standard()
    };
    if let Some(size) = args.heap_size {
        c.heap_bytes = size;
    }
    if let Some(reps) = args.reps {
        c.reps = reps.max(1);
    }
    c.live_ratio = args.live;
    c.workload = match args.workload {
        WorkloadArg::Trees => WorkloadKind::Trees,
        WorkloadArg::Kv => WorkloadKind::Kv,
        WorkloadArg::Graph => WorkloadKind::Graph,
    };
    c.mutators = args.mutators.max(1);
    c.faults = match args.faults {
        FaultsArg::Threads => FaultMode::Threads,
        FaultsArg::Sigbus => FaultMode::Sigbus,
    };
    if !args.publication.is_empty() {
        c.modes = Mode::ALL
            .into_iter()
            .filter(|m| {
                args.publication.contains(&match m {
                    Mode::Move => ModeArg::Move,
                    Mode::MoveSingle => ModeArg::MoveSingle,
                    Mode::Copy => ModeArg::Copy,
                })
            })
            .collect();
    }
    c.thp = args.thp == OnOff::On;
    c.batch_pages = args.batch_pages.map(|n| n.max(1));
    c.idle_mutators = args.idle_mutators;
    c.seed = args.seed;
    c.corruption = args.inject_corruption.map(|k| match k {
        CorruptionArg::WrongByte => Corruption::WrongByte,
        CorruptionArg::DanglingRef => Corruption::DanglingRef,
    });
    c
}

/// Runs `remap compact`.
pub(crate) fn run(args: &CompactArgs, out: crate::Output) -> anyhow::Result<crate::Outcome> {
    if args.sweep {
        return sweep::run(args, out);
    }
    let config = config(args);
    let report = match run_and_print(
        out,
        |progress| remap_heap::bench::run(&config, progress),
        write_json,
        write_table,
    )? {
        Ok(report) => report,
        Err(outcome) => return Ok(outcome),
    };
    if let Some(chart) = &args.chart {
        write_chart(&report, chart)?;
        if out.json {
            eprintln!("chart: {}", chart.display());
        } else {
            writeln!(std::io::stdout().lock(), "chart: {}", chart.display())?;
        }
    }
    Ok(crate::Outcome::found_unless(report.all_verified()))
}

/// What `remap compact` and `remap compact --sweep` share: runs `bench` with a progress bar
/// (on a terminal only), then prints its report on stdout, as JSON Lines with `--json`, else as
/// a table. A set-up, region or engine error means the comparison could not run
/// (`Err(Outcome::CannotRun)`); any other error is the command's.
fn run_and_print<R>(
    out: crate::Output,
    bench: impl FnOnce(&dyn Fn(&str, u64, u64)) -> Result<R, BenchError>,
    write_json: impl FnOnce(&R, &mut std::io::StdoutLock<'static>) -> anyhow::Result<()>,
    write_table: impl FnOnce(&R, &mut std::io::StdoutLock<'static>) -> anyhow::Result<()>,
) -> anyhow::Result<Result<R, crate::Outcome>> {
    let bar = remap_bench::progress_bar(out.progress);
    let progress = |msg: &str, done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(msg.to_owned());
    };
    let report = bench(&progress);
    bar.finish_and_clear();
    let report = match report {
        Ok(r) => r,
        Err(e @ (BenchError::Engine(_) | BenchError::Setup(_) | BenchError::Region(_))) => {
            return Ok(Err(crate::Outcome::CannotRun(e.to_string())));
        }
        Err(e) => return Err(e.into()),
    };
    let mut stdout = std::io::stdout().lock();
    if out.json {
        write_json(&report, &mut stdout)?;
    } else {
        write_table(&report, &mut stdout)?;
    }
    Ok(Ok(report))
}

/// Writes `record` as one line of JSON.
fn write_record(w: &mut impl Write, record: &impl Serialize) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *w, record)?;
    writeln!(w)?;
    Ok(())
}

/// One JSON Lines record.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
enum Record<'a> {
    Config(ConfigRecord<'a>),
    Cycle(&'a remap_heap::bench::CycleRecord),
    Mode(&'a ModeSummary),
    Summary(SummaryRecord<'a>),
}

#[derive(Debug, Serialize)]
struct ConfigRecord<'a> {
    #[serde(flatten)]
    config: &'a BenchConfig,
    machine: remap::system::Machine,
}

#[derive(Debug, Serialize)]
struct SummaryRecord<'a> {
    cycles: usize,
    verified: bool,
    mutator_errors: &'a [String],
    failures: Vec<&'a str>,
    seed: u64,
    elapsed_total: f64,
}

fn write_json(r: &BenchReport, w: &mut impl Write) -> anyhow::Result<()> {
    let mut line = |rec: Record<'_>| write_record(w, &rec);
    line(Record::Config(ConfigRecord {
        config: &r.config,
        machine: remap::system::Machine::read(),
    }))?;
    for c in &r.cycles {
        line(Record::Cycle(c))?;
    }
    for m in &r.modes {
        line(Record::Mode(m))?;
    }
    line(Record::Summary(SummaryRecord {
        cycles: r.cycles.len(),
        verified: r.all_verified(),
        mutator_errors: &r.mutator_errors,
        failures: r
            .cycles
            .iter()
            .filter_map(|c| c.failure.as_deref())
            .collect(),
        seed: r.config.seed,
        elapsed_total: r.elapsed_s,
    }))
}

fn spread(s: &Spread, digits: usize) -> String {
    if s.median.is_nan() {
        return "-".into();
    }
    format!(
        "{:.digits$} ({:.digits$}..{:.digits$})",
        s.median, s.min, s.max
    )
}

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| {
        format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
    })
}

fn mmu_at(m: &ModeSummary, concurrent: bool, window: f64) -> String {
    let curve = if concurrent {
        &m.mmu_concurrent
    } else {
        &m.mmu
    };
    curve
        .iter()
        .find(|(w, _)| (*w - window).abs() < 1e-9)
        .map_or("-".into(), |(_, s)| format!("{:.0}%", s.median * 100.0))
}

fn write_table(r: &BenchReport, w: &mut impl Write) -> anyhow::Result<()> {
    let c = &r.config;
    let machine = remap::system::Machine::read();
    writeln!(
        w,
        "remap compact: Linux {}, {} cores; {} heap per mode, {:.0}% live, workload {}, {} mutator(s){}, faults {}, THP {}, batch {}, {} rep(s) + 1 warm-up, seed {}",
        machine.kernel_release,
        machine.cores,
        remap_bench_bytes(c.heap_bytes as u64),
        c.live_ratio * 100.0,
        c.workload.name(),
        c.mutators,
        if c.idle_mutators { " (stopped during compaction)" } else { "" },
        match c.faults {
            FaultMode::Threads => "threads",
            FaultMode::Sigbus => "sigbus",
        },
        if c.thp { "on" } else { "off" },
        c.batch_pages.map_or("512 pages".to_owned(), |n| format!("{n} pages")),
        c.reps,
        c.seed
    )?;
    writeln!(w, "medians (min..max) over the repetitions\n")?;
    let modes = &r.modes;
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&ModeSummary) -> String| {
        rows.push((name.to_owned(), modes.iter().map(f).collect()));
    };
    row("compaction thread wall (ms)", &|m| {
        spread(&m.compaction_wall_ms, 1)
    });
    row("compaction thread CPU (ms)", &|m| {
        spread(&m.compaction_cpu_ms, 1)
    });
    row("  wall / COPY (same rep)", &|m| {
        m.vs_copy.map_or("-".into(), |s| spread(&s, 2))
    });
    row("  CPU / COPY (same rep)", &|m| {
        m.vs_copy_cpu.map_or("-".into(), |s| spread(&s, 2))
    });
    row("  wall / memcpy floor (same cycle)", &|m| {
        spread(&m.vs_floor, 2)
    });
    row("  CPU / memcpy floor (same cycle)", &|m| {
        spread(&m.vs_floor_cpu, 2)
    });
    row("compaction thread CPU per page it published (ns)", &|m| {
        format!("{:.0}", m.per_page.cpu)
    });
    row("  claiming and filling (relocation, references)", &|m| {
        format!("{:.0}", m.per_page.fill)
    });
    row("  publication ioctls", &|m| {
        format!("{:.0}", m.per_page.publish)
    });
    row("  waiting for pages mutators took", &|m| {
        format!("{:.0}", m.per_page.wait)
    });
    row("  MADV_DONTNEED of from-space", &|m| {
        format!("{:.0}", m.per_page.release)
    });
    row("  minor faults per page", &|m| {
        format!("{:.2}", m.per_page.minor_faults)
    });
    row("memcpy floor CPU per page (ns)", &|m| {
        format!("{:.0}", m.per_page.floor_cpu)
    });
    row("memcpy of the live bytes, wall (ms)", &|m| {
        spread(&m.floor_ms, 1)
    });
    row("memcpy of the live bytes, CPU (ms)", &|m| {
        spread(&m.floor_cpu_ms, 1)
    });
    row("live bytes", &|m| mib(Some(m.live_bytes)));
    row("flip pause (us)", &|m| spread(&m.flip_pause_us, 0));
    row("marking pause (ms)", &|m| spread(&m.mark_pause_ms, 1));
    row("whole pause (ms)", &|m| spread(&m.pause_ms, 1));
    row("stall per fault p50 (us)", &|m| {
        format!("{:.1}", m.stall_p50_us)
    });
    row("stall per fault p99 (us)", &|m| {
        format!("{:.1}", m.stall_p99_us)
    });
    row("stall per fault max (us)", &|m| {
        format!("{:.1}", m.stall_max_us)
    });
    row("mutator time stalled in faults", &|m| {
        format!("{:.0}%", m.fault_stall_share * 100.0)
    });
    for wms in [1.0, 10.0, 100.0] {
        row(&format!("MMU {wms:.0} ms, concurrent phase"), &|m| {
            mmu_at(m, true, wms)
        });
    }
    for wms in [1.0, 10.0, 100.0] {
        row(&format!("MMU {wms:.0} ms, whole cycle"), &|m| {
            mmu_at(m, false, wms)
        });
    }
    row("peak RSS (process)", &|m| mib(m.rss_peak));
    row("  growth over the flip", &|m| mib(m.rss_growth));
    row("TLB shootdowns / page", &|m| {
        m.tlb_per_page.map_or("-".into(), |t| format!("{t:.3}"))
    });
    row("pages by compaction thread", &|m| {
        m.by_compactor.to_string()
    });
    row("pages by mutator faults", &|m| m.by_faults.to_string());
    row("verified", &|m| {
        if m.verified {
            "yes".into()
        } else {
            "NO".into()
        }
    });
    let name_w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let col_w: Vec<usize> = (0..modes.len())
        .map(|i| {
            rows.iter()
                .map(|(_, v)| v[i].len())
                .chain([modes[i].mode.name().len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    write!(w, "{:name_w$}", "")?;
    for (m, cw) in modes.iter().zip(&col_w) {
        write!(w, "  {:>cw$}", m.mode.name())?;
    }
    writeln!(w)?;
    for (name, vals) in &rows {
        write!(w, "{name:name_w$}")?;
        for (v, cw) in vals.iter().zip(&col_w) {
            write!(w, "  {v:>cw$}")?;
        }
        writeln!(w)?;
    }
    for c in r.cycles.iter().filter(|c| !c.verified) {
        writeln!(
            w,
            "verification FAILED: {} cycle {}: {}",
            c.mode.name(),
            c.rep,
            c.failure.as_deref().unwrap_or("?")
        )?;
    }
    for e in &r.mutator_errors {
        writeln!(w, "mutator check FAILED: {e}")?;
    }
    writeln!(w, "\nelapsed {:.1} s", r.elapsed_s)?;
    Ok(())
}

fn remap_bench_bytes(b: u64) -> String {
    if b >= 1 << 30 && b % (1 << 30) == 0 {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b >> 20)
    }
}

/// The SVG: MMU over the concurrent phase against the window (log), and stall per fault against
/// the percentile, one colour per mode.
fn write_chart(r: &BenchReport, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let colours = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
    ];
    let mut mmu = ChartBuilder::on(&left)
        .caption("MMU, concurrent phase", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0.1f64..500.0).log_scale(), 0.0f64..1.0)?;
    mmu.configure_mesh()
        .x_desc("window (ms)")
        .y_desc("utilisation")
        .draw()?;
    for (m, colour) in r.modes.iter().zip(colours.iter().cycle()) {
        let pts: Vec<(f64, f64)> = m
            .mmu_concurrent
            .iter()
            .filter(|(_, s)| !s.median.is_nan())
            .map(|(w, s)| (*w, s.median))
            .collect();
        mmu.draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
            .label(m.mode.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        mmu.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
    }
    mmu.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    let max_us = r
        .modes
        .iter()
        .flat_map(|m| m.stall_curve.iter().map(|(_, v)| *v))
        .fold(1.0f64, f64::max);
    let mut stalls = ChartBuilder::on(&right)
        .caption("stall per fault", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0f64..100.0, (0.1f64..max_us * 1.5).log_scale())?;
    stalls
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("stall (us)")
        .draw()?;
    for (m, colour) in r.modes.iter().zip(colours.iter().cycle()) {
        let pts: Vec<(f64, f64)> = m
            .stall_curve
            .iter()
            .map(|(p, v)| (*p, v.max(0.1)))
            .collect();
        stalls
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
            .label(m.mode.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        stalls.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
    }
    stalls
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_ratio, parse_size};

    #[test]
    fn ratios_and_sizes_parse() {
        assert_eq!(parse_ratio("50%"), Ok(0.5));
        assert_eq!(parse_ratio("0.3"), Ok(0.3));
        assert!(parse_ratio("95%").is_err());
        assert!(parse_ratio("x").is_err());
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert!(parse_size("3M").is_err());
    }
}
