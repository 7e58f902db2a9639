//! The `remap` binary: probe the machine, benchmark zero-copy moving, check the rmap model.
//!
//! Exit codes follow ripgrep's meanings: 0 when the run finished clean, 1 when it finished and found
//! something (a model result that differs from the expected table, a failed verification), 2 when it
//! could not do its job (bad usage, userfaultfd or MOVE unavailable). With `--json`, stdout carries
//! nothing but JSON; logs and progress go to stderr.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod compact;
mod conform;
mod model;
mod output;
mod probe;
mod torture;

use output::{Outcome, Output};

/// Zero-copy page moving for Linux: userfaultfd and UFFDIO_MOVE, measured.
#[derive(Debug, Parser)]
#[command(name = "remap", version, long_about = None)]
struct Cli {
    /// Print machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// More logging on stderr (repeat for more); `UFFD_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report what this machine offers: userfaultfd, features, THP, swap, and whether MOVE works.
    Probe(probe::ProbeArgs),
    /// Measure MOVE against COPY, memcpy and mremap, and fault service latency, side by side.
    Bench(bench::BenchArgs),
    /// Compact a real object heap with MOVE, MOVE page by page and COPY, mutators running.
    Compact(compact::CompactArgs),
    /// Model-check every version of the rmap / UFFDIO_MOVE protocol and print the result table.
    Model(model::ModelArgs),
    /// Check this kernel's UFFDIO_MOVE against the oracle: case by case, or on random programs.
    Conform(conform::ConformArgs),
    /// Race UFFDIO_MOVE against the kernel's reverse-map walkers and check that nothing is lost.
    Torture(torture::TortureArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let out = Output::new(cli.json, cli.quiet, std::io::stderr().is_terminal());
    let name = cli.command.name();
    match run(cli.command, out) {
        Ok(outcome) => {
            if let Outcome::CannotRun(reason) = &outcome {
                eprintln!("remap {name}: cannot run: {reason}");
            }
            ExitCode::from(outcome.exit_status())
        }
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("remap {name}: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

impl Command {
    /// The subcommand's name, for messages.
    fn name(&self) -> &'static str {
        match self {
            Command::Probe(_) => "probe",
            Command::Bench(_) => "bench",
            Command::Model(_) => "model",
            Command::Conform(_) => "conform",
            Command::Torture(_) => "torture",
            Command::Compact(_) => "compact",
        }
    }
}

/// Runs one subcommand. Only `main` turns the result into an exit code.
fn run(command: Command, out: Output) -> anyhow::Result<Outcome> {
    match command {
        Command::Probe(args) => probe::run(&args, out),
        Command::Bench(args) => bench::run(&args, out),
        Command::Model(args) => model::run(&args, out),
        Command::Conform(args) => conform::run(&args, out),
        Command::Torture(args) => torture::run(&args, out),
        Command::Compact(args) => compact::run(&args, out),
    }
}

fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("UFFD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal())
        .init();
}

/// A closed stdout (`remap bench | head`) is the reader's choice, not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_names_the_subcommands() {
        let help = Cli::command().render_help().to_string();
        for word in ["probe", "bench", "model", "--json"] {
            assert!(help.contains(word), "{word} missing from:\n{help}");
        }
        assert!(help.contains("Zero-copy page moving"), "{help}");
    }
}
