//! The one output layer of every subcommand: where results go, the JSON Lines envelope, and how a
//! run ended (which only `main` turns into an exit code).
//!
//! # The JSON Lines envelope
//!
//! With `--json`, every subcommand prints one JSON object per line on stdout and nothing else:
//! `{"type": KIND, "data": {...}}`. `KIND` names the record (`probe`, `config`, `measurement`,
//! `result`, `summary`, ...); each subcommand's module documents its kinds. Records that describe
//! the machine carry [`remap::system::Machine`] serialized one way everywhere.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;

/// What every subcommand needs to know about where its output goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    /// Print JSON on stdout and nothing else.
    pub(crate) json: bool,
    /// Show progress bars (stderr is a terminal and `--json` is off).
    pub(crate) progress: bool,
}

impl Output {
    /// Progress bars only for a person watching: never with `--json` or `-q`, and only when
    /// stderr is a terminal (`docs/style.md` R15).
    pub(crate) fn new(json: bool, quiet: bool, stderr_is_terminal: bool) -> Self {
        Output {
            json,
            progress: !json && !quiet && stderr_is_terminal,
        }
    }
}

/// How a subcommand's run ended. Subcommands return it; `main` alone maps it to the exit code
/// (ripgrep's meanings) and prints the reason of a run that could not be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The run finished and found nothing wrong: exit 0.
    Clean,
    /// The run finished and found something (a failed verification, a model result that
    /// differs from the expected table, a disagreement with the oracle): exit 1.
    Found,
    /// The run could not do its job (userfaultfd or MOVE unavailable, bad settings): exit 2,
    /// with the reason on stderr.
    CannotRun(String),
}

impl Outcome {
    /// `Clean` when `ok`, else `Found`.
    pub(crate) fn found_unless(ok: bool) -> Self {
        if ok {
            Outcome::Clean
        } else {
            Outcome::Found
        }
    }

    /// The process exit status: 0, 1 or 2.
    pub(crate) fn exit_status(&self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::Found => 1,
            Outcome::CannotRun(_) => 2,
        }
    }
}

/// One record in the envelope.
#[derive(Debug, Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
}

/// `{"type": kind, "data": data}` as one line of text (no newline).
pub(crate) fn json_line<T: Serialize>(kind: &str, data: T) -> anyhow::Result<String> {
    serde_json::to_string(&Envelope { kind, data }).with_context(|| format!("serializing {kind}"))
}

/// Writes one envelope record and its newline.
pub(crate) fn write_json_line<T: Serialize>(
    w: &mut impl Write,
    kind: &str,
    data: T,
) -> anyhow::Result<()> {
    let line = json_line(kind, data)?;
    writeln!(w, "{line}").context("writing JSON")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{json_line, Outcome, Output};

    #[test]
    fn progress_only_on_a_terminal_without_json_or_quiet() {
        assert!(Output::new(false, false, true).progress);
        assert!(
            !Output::new(false, false, false).progress,
            "stderr not a terminal"
        );
        assert!(!Output::new(true, false, true).progress, "--json");
        assert!(!Output::new(false, true, true).progress, "-q");
        assert!(Output::new(true, false, false).json);
    }

    #[test]
    fn outcomes_map_to_ripgrep_exit_codes() {
        assert_eq!(Outcome::Clean.exit_status(), 0);
        assert_eq!(Outcome::Found.exit_status(), 1);
        assert_eq!(Outcome::CannotRun("no MOVE".into()).exit_status(), 2);
        assert_eq!(Outcome::found_unless(true), Outcome::Clean);
        assert_eq!(Outcome::found_unless(false), Outcome::Found);
    }

    #[test]
    fn the_envelope_has_type_and_data_only() {
        let line = json_line("summary", serde_json::json!({"n": 1})).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["data"]["n"], 1);
        assert_eq!(v.as_object().unwrap().len(), 2, "{line}");
        assert!(!line.contains('\n'));
    }
}
