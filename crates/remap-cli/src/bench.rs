//! `remap bench` (placeholder while the subcommand is built).

use std::process::ExitCode;

use crate::Output;

/// Options of `remap bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {}

/// Runs `remap bench`.
pub(crate) fn run(_args: &BenchArgs, _out: Output) -> anyhow::Result<ExitCode> {
    anyhow::bail!("remap bench is not built yet")
}
