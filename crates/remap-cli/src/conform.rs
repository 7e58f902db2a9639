//! `remap conform`: the running kernel's UFFDIO_MOVE against the oracle (`remap-oracle`), case
//! by case or on random programs (`--differential`).
//!
//! The work lives in `remap-conform`; this module selects, renders and picks the exit code's
//! input. The process must stay single-threaded while it runs (fork steps and cases fork it):
//! no progress-bar thread, progress lines on stderr instead.
//!
//! # JSON output (`--json`)
//!
//! JSON Lines, each `{"type": ..., "data": ...}`:
//! - `machine`: the kernel release, the behaviour row used, THP mode, root, swap, guard support.
//! - cases mode: one `case` per case (`name`, `spec`, `kernel`, `expected`, `agree`, `rows`,
//!   `skipped`, `detail`), then `summary` (`cases`, `agree`, `disagree`, `skipped`,
//!   `rows_matched`, `own_row`, `later_row_cases`).
//! - `--differential`: one `mismatch` per reproducible mismatch and one `flaky` per mismatch
//!   that did not reproduce (with the program, the shrunk program and its `replay` command),
//!   then `summary` (`seed`, `programs`, `steps_run`, `steps_skipped`, `mismatches`, `flaky`,
//!   `elapsed_s`).
//! - `--replay`: one `replay` record (`steps_run`, `skipped`, `mismatch`).

use std::io::Write as _;

use anyhow::Context as _;
use remap_conform::cases::{self, ConformReport};
use remap_conform::check::Injection;
use remap_conform::diff::{self, DiffConfig, DiffReport, MismatchReport};
use remap_conform::exec::Harness;
use remap_conform::program::Program;
use remap_conform::{ConformError, Machine};

use crate::output::json_line;
use crate::{Outcome, Output};

/// Options of `remap conform`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConformArgs {
    /// Run random programs against the oracle instead of the case table.
    #[arg(long)]
    differential: bool,

    /// Programs in a differential run.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    programs: u64,

    /// Master seed of a differential run.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,

    /// Replay one program (the JSON a mismatch report prints) and judge it.
    #[arg(long, value_name = "JSON", conflicts_with = "differential")]
    replay: Option<String>,

    /// Report mismatches without shrinking them.
    #[arg(long)]
    no_shrink: bool,

    /// Deliberately break the oracle (shows that a mismatch is caught and shrunk).
    #[arg(long, hide = true, value_enum)]
    inject: Option<Injection>,
}

/// What `remap conform` found, for `main`'s exit code.
fn code(found_something: bool) -> Outcome {
    Outcome::found_unless(!found_something)
}

/// Runs `remap conform`.
pub(crate) fn run(args: &ConformArgs, out: Output) -> anyhow::Result<Outcome> {
    let harness = match Harness::new() {
        Ok(h) => h,
        Err(e) if e.is_unavailable() => return Ok(Outcome::CannotRun(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    // Swap the machine has is held for the run (set up by another remap process, it would go
    // when that one's last user ends): the swap cases and swap-out steps see it to the end.
    // None is set up: without swap they are skipped.
    let _swap = remap_swap::SwapHold::if_active();
    let machine = Machine::detect();
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    if out.json {
        // The machine as every subcommand describes it, then the oracle's view of this kernel.
        writeln!(
            w,
            "{}",
            json_line("machine", remap::system::Machine::read())?
        )?;
        writeln!(w, "{}", json_line("kernel", &machine)?)?;
    }
    let inject = args.inject;
    if let Some(text) = &args.replay {
        let prog = Program::from_json(text).context("parsing the --replay program")?;
        let r = diff::run_program(&harness, &machine, &prog, inject)?;
        if out.json {
            let rec = serde_json::json!({
                "steps_run": r.steps_run, "skipped": r.skipped, "mismatch": r.mismatch,
            });
            writeln!(w, "{}", json_line("replay", rec)?)?;
        } else {
            writeln!(w, "replayed {} steps ({} refused)", r.steps_run, r.skipped)?;
            match &r.mismatch {
                None => writeln!(w, "agrees with the oracle ({})", machine.behaviour.name)?,
                Some(mm) => writeln!(w, "{}", render_mismatch_detail(mm))?,
            }
        }
        return Ok(code(r.mismatch.is_some()));
    }
    if args.differential {
        let cfg = DiffConfig {
            seed: args.seed,
            programs: args.programs,
            shrink: !args.no_shrink,
            inject,
            ..DiffConfig::default()
        };
        let step = (args.programs / 20).max(1);
        let report = diff::differential(&harness, &machine, &cfg, |done, r| {
            if out.progress && (done % step == 0 || done == args.programs) {
                eprintln!(
                    "  {done}/{} programs, {} steps, {} mismatches, {:.0} s",
                    args.programs,
                    r.steps_run,
                    r.mismatches.len(),
                    r.elapsed_s
                );
            }
        })
        .map_err(anyhow_conform)?;
        if out.json {
            for m in &report.mismatches {
                writeln!(w, "{}", json_line("mismatch", mismatch_record(m))?)?;
            }
            for m in &report.flaky {
                writeln!(w, "{}", json_line("flaky", mismatch_record(m))?)?;
            }
            let summary = serde_json::json!({
                "seed": report.seed, "programs": report.programs, "steps_run": report.steps_run,
                "steps_skipped": report.steps_skipped, "mismatches": report.mismatches.len(),
                "flaky": report.flaky.len(), "elapsed_s": report.elapsed_s,
            });
            writeln!(w, "{}", json_line("summary", summary)?)?;
        } else {
            w.write_all(render_diff(&report, &machine).as_bytes())?;
        }
        w.flush()?;
        return Ok(code(!report.mismatches.is_empty()));
    }
    let report = cases::run_all(&harness, &machine).map_err(anyhow_conform)?;
    let required = std::env::var("UFFD_TESTS_REQUIRED").is_ok_and(|v| v == "1");
    if out.json {
        for c in &report.cases {
            writeln!(w, "{}", json_line("case", c)?)?;
        }
        let summary = serde_json::json!({
            "cases": report.cases.len(),
            "agree": report.cases.iter().filter(|c| c.agree == Some(true)).count(),
            "disagree": report.disagreements(),
            "skipped": report.skipped(),
            "rows_matched": report.rows_matched,
            "own_row": machine.behaviour.name,
            "later_row_cases": report.later_row_cases,
        });
        writeln!(w, "{}", json_line("summary", summary)?)?;
    } else {
        w.write_all(render_cases(&report).as_bytes())?;
    }
    w.flush()?;
    if required && report.skipped() > 0 {
        eprintln!(
            "remap conform: {} cases skipped, and UFFD_TESTS_REQUIRED=1 forbids skipping",
            report.skipped()
        );
        return Ok(Outcome::Found);
    }
    Ok(code(report.disagreements() > 0))
}

fn anyhow_conform(e: ConformError) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// The shell command that replays `prog`.
pub(crate) fn replay_command(prog: &Program) -> String {
    format!("remap conform --replay '{}'", prog.to_json())
}

fn mismatch_record(m: &MismatchReport) -> serde_json::Value {
    serde_json::json!({
        "index": m.index,
        "program_seed": m.program_seed,
        "mismatch": m.mismatch,
        "reproduced": m.reproduced,
        "replays": m.replays,
        "program": m.program,
        "shrunk": m.shrunk,
        "shrunk_mismatch": m.shrunk_mismatch,
        "replay": replay_command(m.shrunk.as_ref().unwrap_or(&m.program)),
    })
}

fn render_mismatch_detail(mm: &remap_conform::diff::Mismatch) -> String {
    let mut s = String::new();
    let step = mm
        .step
        .map_or("set-up".to_string(), |i| format!("step {i}"));
    s += &format!("mismatch at {step} ({}): {}\n", mm.kind, mm.op);
    let d = &mm.disagreement;
    s += &format!("  kernel:  {}\n", d.observed);
    s += &format!("  oracle:  {}\n", d.predicted.join(" | "));
    if let Some(state) = &d.state {
        s += &format!("  state:   {state}\n");
    }
    s
}

fn render_diff(r: &DiffReport, m: &Machine) -> String {
    let mut s = format!(
        "differential: {} programs, {} operations run ({} refused), seed {}, {:.1} s, oracle row {} (kernel {})\n",
        r.programs, r.steps_run, r.steps_skipped, r.seed, r.elapsed_s, m.behaviour.name, m.release
    );
    s += &format!(
        "mismatches: {} reproducible, {} flaky (did not reproduce on replay)\n",
        r.mismatches.len(),
        r.flaky.len()
    );
    for (kind, list) in [("MISMATCH", &r.mismatches), ("flaky", &r.flaky)] {
        for mm in list {
            s += &format!(
                "\n== {kind}: program {} (seed {:#x}), reproduced {}/{} ==\n",
                mm.index, mm.program_seed, mm.reproduced, mm.replays
            );
            s += &render_mismatch_detail(&mm.mismatch);
            if let (Some(small), Some(smm)) = (&mm.shrunk, &mm.shrunk_mismatch) {
                s += &format!(
                    "shrunk from {} to {} steps, {} VMAs:\n",
                    mm.program.len(),
                    small.len(),
                    small.vmas.len()
                );
                s += &render_mismatch_detail(smm);
            }
            s += &format!(
                "replay: {}\n",
                replay_command(mm.shrunk.as_ref().unwrap_or(&mm.program))
            );
        }
    }
    s
}

fn render_cases(r: &ConformReport) -> String {
    let m = &r.machine;
    let mut s = format!(
        "remap conform: kernel {} -> oracle row {} ({}); THP {:?}, root {}, swap {}\n\n",
        m.release, m.behaviour.name, m.behaviour.change, m.env.thp, m.root, m.swap
    );
    let width = r
        .cases
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    s += &format!(
        "{:<width$}  {:<22}  {:<30}  {:<5}  rows matched\n",
        "case", "kernel", "oracle expects", "agree"
    );
    for c in &r.cases {
        let (kernel, agree) = match (&c.skipped, c.agree) {
            (Some(why), _) => (format!("skipped: {why}"), "-"),
            (None, Some(true)) => (c.kernel.clone().unwrap_or_default(), "yes"),
            (None, _) => (c.kernel.clone().unwrap_or_else(|| "-".into()), "NO"),
        };
        s += &format!(
            "{:<width$}  {:<22}  {:<30}  {:<5}  {}\n",
            c.name,
            kernel,
            c.expected.join(" | "),
            agree,
            c.rows.join(",")
        );
        let retried = c
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("agreed on retry"));
        if c.agree == Some(false) || retried {
            if let Some(d) = &c.detail {
                s += &format!("{:<width$}    -> {d}\n", "");
            }
        }
    }
    s += &format!(
        "\n{} cases: {} agree, {} disagree, {} skipped\n",
        r.cases.len(),
        r.cases.iter().filter(|c| c.agree == Some(true)).count(),
        r.disagreements(),
        r.skipped()
    );
    s += &format!(
        "behaviour rows matched by every case: {} (this kernel's row: {})\n",
        if r.rows_matched.is_empty() {
            "none".to_string()
        } else {
            r.rows_matched.join(", ")
        },
        m.behaviour.name
    );
    if !r.later_row_cases.is_empty() {
        s += &format!(
            "matching a LATER row than this kernel's (a backported change?): {}\n",
            r.later_row_cases.join(", ")
        );
    }
    s
}
