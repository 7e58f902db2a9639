//! Running the table: each case on this kernel, retried where the machine is noisy, judged under
//! every behaviour row; the report of which rows this kernel matches.

use remap_oracle::{Behaviour, BEHAVIOUR_TABLE};
use uffd::Features;

use crate::check::Checker;
use crate::exec::Harness;
use crate::program::Program;
use crate::{ConformError, Machine};

use super::special::run_special;
use super::{all_cases, Body, Case, CaseResult, ConformReport, Need};

/// Runs every case.
///
/// # Errors
///
/// [`ConformError`] when the harness itself fails (not when a case disagrees).
pub fn run_all(h: &Harness, m: &Machine) -> Result<ConformReport, ConformError> {
    let mut results = Vec::new();
    for c in all_cases() {
        results.push(run_case(h, m, &c)?);
    }
    let mut rows_matched: Vec<&'static str> = BEHAVIOUR_TABLE.iter().map(|b| b.name).collect();
    let mut later = Vec::new();
    for r in results.iter().filter(|r| r.skipped.is_none()) {
        rows_matched.retain(|row| r.rows.contains(row));
        let own = m.behaviour.index();
        let matches_own = r.rows.contains(&m.behaviour.name);
        let matches_later = r
            .rows
            .iter()
            .any(|n| Behaviour::named(n).is_some_and(|b| b.index() > own));
        if !matches_own && matches_later {
            later.push(r.name);
        }
    }
    Ok(ConformReport {
        machine: m.clone(),
        cases: results,
        rows_matched,
        later_row_cases: later,
    })
}

fn missing_need(h: &Harness, m: &Machine, needs: &[Need]) -> Option<String> {
    let lacking: Vec<&str> = needs
        .iter()
        .filter(|n| match n {
            Need::Thp => !m.thp_usable(),
            Need::Swap => !m.swap,
            Need::Guard => !m.guard,
            Need::WpUnpopulated => !h.features.contains(Features::WP_UNPOPULATED),
            Need::Root => !m.root,
        })
        .map(|n| n.describe())
        .collect();
    (!lacking.is_empty()).then(|| format!("needs {}", lacking.join(", ")))
}

/// Re-runs of a program case that disagreed, before the disagreement counts.
const CASE_RETRIES: u32 = 2;

/// Runs one case. A program case that disagrees is re-run up to twice (asynchronous kernel
/// activity can change a page between steps); it agrees if a re-run agrees, and its `detail`
/// then keeps the first run's disagreement.
///
/// # Errors
///
/// [`ConformError`] when the harness fails.
pub fn run_case(h: &Harness, m: &Machine, c: &Case) -> Result<CaseResult, ConformError> {
    let mut result = CaseResult {
        name: c.name,
        spec: c.spec,
        kernel: None,
        expected: Vec::new(),
        agree: None,
        rows: Vec::new(),
        skipped: None,
        detail: None,
    };
    if let Some(why) = missing_need(h, m, &c.needs) {
        result.skipped = Some(why);
        return Ok(result);
    }
    match &c.body {
        Body::Program { program, subject } => {
            run_program_case(h, m, program, *subject, &mut result)?;
            // Asynchronous kernel work (khugepaged, compaction moving a page, reclaim) can change
            // a page between two steps; a disagreement counts only if it happens again.
            for retry in 1..=CASE_RETRIES {
                if result.agree != Some(false) {
                    break;
                }
                let first = result.detail.clone().unwrap_or_default();
                let mut again = CaseResult {
                    kernel: None,
                    expected: Vec::new(),
                    detail: None,
                    ..result.clone()
                };
                run_program_case(h, m, program, *subject, &mut again)?;
                if again.agree == Some(true) {
                    again.detail = Some(format!(
                        "agreed on retry {retry}; the first run disagreed: {first}"
                    ));
                }
                result = again;
            }
        }
        Body::Special(s) => run_special(h, m, *s, &mut result)?,
    }
    Ok(result)
}

fn run_program_case(
    h: &Harness,
    m: &Machine,
    prog: &Program,
    subject: usize,
    result: &mut CaseResult,
) -> Result<(), ConformError> {
    let mut run = h.setup(prog)?;
    let base = run.base();
    let mut checkers: Vec<(&'static Behaviour, Checker, Option<String>)> = BEHAVIOUR_TABLE
        .iter()
        .map(|b| {
            (
                b,
                Checker::new(prog.initial_space(base, m.env), b, None),
                None,
            )
        })
        .collect();
    let obs = run.observe()?;
    for (_, c, failed) in &mut checkers {
        if let Err(e) = c.check_initial(prog, &obs) {
            *failed = Some(format!("after set-up: {e}"));
        }
    }
    let own = m.behaviour.index();
    for (i, step) in prog.steps.iter().enumerate() {
        let op = prog.op(base, step);
        if let Some(why) = checkers[own].1.refuse(&op) {
            result.detail = Some(format!("step {i} not run: {why}"));
            continue;
        }
        if i == subject {
            result.expected = checkers[own]
                .1
                .predicted(&op)
                .iter()
                .map(ToString::to_string)
                .collect();
        }
        let outcome = run.exec(step);
        if i == subject {
            result.kernel = Some(outcome.to_string());
        }
        let obs = run.observe()?;
        for (_, c, failed) in &mut checkers {
            if failed.is_none() {
                if let Err(d) = c.step(prog, &op, outcome, &obs) {
                    *failed = Some(format!(
                        "step {i} ({}): kernel {}, oracle allows [{}]{}",
                        step.kind(),
                        d.observed,
                        d.predicted.join(", "),
                        d.state.map(|s| format!("; state: {s}")).unwrap_or_default()
                    ));
                }
            }
        }
    }
    result.rows = checkers
        .iter()
        .filter(|(_, _, f)| f.is_none())
        .map(|(b, _, _)| b.name)
        .collect();
    let own_failure = checkers[own].2.clone();
    result.agree = Some(own_failure.is_none() && result.kernel.is_some());
    if own_failure.is_some() {
        result.detail = own_failure;
    } else if result.kernel.is_none() {
        result
            .detail
            .get_or_insert_with(|| "the subject step did not run".into());
    }
    Ok(())
}
