//! `remap compact --sweep`: the MOVE/COPY comparison at several heap sizes and mutator counts,
//! reduced to per-page costs in one table.
//!
//! # `--json`
//!
//! One `config` record (the base configuration, the points, the machine), one `page_cost`
//! record per point and mode ([`PageCost`]), one `summary` record last:
//!
//! ```text
//! {"type":"config","data":{"heap_bytes":..,"modes":["move","copy"],..,"points":[{"heap_bytes":8388608,"mutators":1},..],"machine":{..}}}
//! {"type":"page_cost","data":{"point":{"heap_bytes":8388608,"mutators":1},"mode":"move","pages":..,"compactor_share":0.71,"cpu_ns_per_page":{"median":..,"min":..,"max":..},"vs_copy_cpu":{..},"vs_floor_cpu":{..},..}}
//! {"type":"summary","data":{"points":3,"cycles":12,"verified":true,"failures":[],"seed":42,"elapsed_total":21.5}}
//! ```

use std::io::Write;

use remap_heap::bench::{BenchConfig, Mode, Spread};
use remap_heap::sweep::{PageCost, SweepPoint, SweepReport};
use serde::Serialize;

use super::{config, remap_bench_bytes, CompactArgs};

#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum Record<'a> {
    Config(ConfigRecord<'a>),
    PageCost(&'a PageCost),
    Summary(SummaryRecord<'a>),
}

#[derive(Debug, Serialize)]
struct ConfigRecord<'a> {
    #[serde(flatten)]
    config: &'a BenchConfig,
    points: &'a [SweepPoint],
    machine: remap::system::Machine,
}

#[derive(Debug, Serialize)]
struct SummaryRecord<'a> {
    points: usize,
    cycles: usize,
    verified: bool,
    failures: Vec<&'a str>,
    mutator_errors: Vec<&'a str>,
    seed: u64,
    elapsed_total: f64,
}

/// The points of the sweep `args` asks for ([`SweepPoint::axes`]).
fn points(args: &CompactArgs) -> Vec<SweepPoint> {
    use remap_heap::sweep::{QUICK_HEAPS, QUICK_MUTATORS, STANDARD_HEAPS, STANDARD_MUTATORS};
    let pick = |given: &[usize], quick: &[usize], standard: &[usize]| -> Vec<usize> {
        if !given.is_empty() {
            given.iter().map(|&x| x.max(1)).collect()
        } else if args.quick {
            quick.to_vec()
        } else {
            standard.to_vec()
        }
    };
    SweepPoint::axes(
        &pick(&args.sweep_heaps, &QUICK_HEAPS, &STANDARD_HEAPS),
        &pick(&args.sweep_mutators, &QUICK_MUTATORS, &STANDARD_MUTATORS),
    )
}

/// Runs `remap compact --sweep`.
pub(super) fn run(args: &CompactArgs, out: crate::Output) -> anyhow::Result<crate::Outcome> {
    let mut base = config(args);
    if args.publication.is_empty() {
        base.modes = vec![Mode::Move, Mode::Copy];
    }
    if args.reps.is_none() {
        base.reps = if args.quick { 1 } else { 2 };
    }
    let points = points(args);
    let report = match super::run_and_print(
        out,
        |progress| remap_heap::sweep::sweep(&base, &points, progress),
        |r, w| write_json(r, &points, w),
        write_table,
    )? {
        Ok(report) => report,
        Err(outcome) => return Ok(outcome),
    };
    Ok(crate::Outcome::found_unless(report.all_verified()))
}

fn write_json(r: &SweepReport, points: &[SweepPoint], w: &mut impl Write) -> anyhow::Result<()> {
    let mut line = |rec: Record<'_>| super::write_record(w, &rec);
    line(Record::Config(ConfigRecord {
        config: &r.base,
        points,
        machine: remap::system::Machine::read(),
    }))?;
    for c in &r.costs {
        line(Record::PageCost(c))?;
    }
    line(Record::Summary(SummaryRecord {
        points: r.runs.len(),
        cycles: r.runs.iter().map(|(_, run)| run.cycles.len()).sum(),
        verified: r.all_verified(),
        failures: r
            .runs
            .iter()
            .flat_map(|(_, run)| run.cycles.iter().filter_map(|c| c.failure.as_deref()))
            .collect(),
        mutator_errors: r
            .runs
            .iter()
            .flat_map(|(_, run)| run.mutator_errors.iter().map(String::as_str))
            .collect(),
        seed: r.base.seed,
        elapsed_total: r.elapsed_s,
    }))
}

fn ns(s: &Spread) -> String {
    super::spread(s, 0)
}

fn ratio(s: Option<&Spread>) -> String {
    s.map_or("-".into(), |s| super::spread(s, 2))
}

fn write_table(r: &SweepReport, w: &mut impl Write) -> anyhow::Result<()> {
    let c = &r.base;
    let machine = remap::system::Machine::read();
    writeln!(
        w,
        "remap compact --sweep: Linux {}, {} cores; {:.0}% live, workload {}, faults {}, THP {}, {} rep(s) + 1 warm-up per point, seed {}",
        machine.kernel_release,
        machine.cores,
        c.live_ratio * 100.0,
        c.workload.name(),
        match c.faults {
            remap_heap::engine::FaultMode::Threads => "threads",
            remap_heap::engine::FaultMode::Sigbus => "sigbus",
        },
        if c.thp { "on" } else { "off" },
        c.reps,
        c.seed
    )?;
    writeln!(
        w,
        "per page the compaction thread published (the floor: per page of the cycle); fill, publish, wait, release: the compaction thread's CPU ns/page in each phase; medians (min..max); CPU / COPY per page, total CPU / COPY of the whole thread (P3); ratios same repetition / same cycle\n"
    )?;
    let header = [
        "heap",
        "mutators",
        "mode",
        "pages",
        "by compactor",
        "CPU ns/page",
        "wall ns/page",
        "floor ns/page",
        "fill",
        "publish",
        "wait",
        "release",
        "CPU / COPY",
        "total CPU / COPY",
        "wall / COPY",
        "CPU / floor",
        "TLB/page",
        "stall p50 us",
        "verified",
    ];
    let rows: Vec<Vec<String>> = r
        .costs
        .iter()
        .map(|k| {
            vec![
                remap_bench_bytes(k.point.heap_bytes as u64),
                k.point.mutators.to_string(),
                k.mode.name().to_owned(),
                k.pages.to_string(),
                format!("{:.0}%", k.compactor_share * 100.0),
                ns(&k.cpu_ns_per_page),
                ns(&k.wall_ns_per_page),
                ns(&k.floor_cpu_ns_per_page),
                format!("{:.0}", k.breakdown.fill),
                format!("{:.0}", k.breakdown.publish),
                format!("{:.0}", k.breakdown.wait),
                format!("{:.0}", k.breakdown.release),
                ratio(k.vs_copy_cpu.as_ref()),
                ratio(k.vs_copy_cpu_total.as_ref()),
                ratio(k.vs_copy_wall.as_ref()),
                ratio(Some(&k.vs_floor_cpu)),
                k.tlb_per_page.map_or("-".into(), |t| format!("{t:.2}")),
                format!("{:.1}", k.stall_p50_us),
                if k.verified { "yes" } else { "NO" }.to_owned(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: &[&str]| -> std::io::Result<()> {
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                write!(w, "  ")?;
            }
            write!(w, "{cell:>width$}")?;
        }
        writeln!(w)
    };
    line(&header)?;
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    for (point, run) in &r.runs {
        for c in run.cycles.iter().filter(|c| !c.verified) {
            writeln!(
                w,
                "verification FAILED: {} at {} MiB, {} mutator(s), cycle {}: {}",
                c.mode.name(),
                point.heap_bytes >> 20,
                point.mutators,
                c.rep,
                c.failure.as_deref().unwrap_or("?")
            )?;
        }
        for e in &run.mutator_errors {
            writeln!(w, "mutator check FAILED: {e}")?;
        }
    }
    writeln!(w, "\nelapsed {:.1} s", r.elapsed_s)?;
    Ok(())
}
