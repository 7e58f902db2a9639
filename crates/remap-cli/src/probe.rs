//! `remap probe` (placeholder while the subcommand is built).

use std::process::ExitCode;

use crate::Output;

/// Options of `remap probe`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProbeArgs {}

/// Runs `remap probe`.
pub(crate) fn run(_args: &ProbeArgs, _out: Output) -> anyhow::Result<ExitCode> {
    anyhow::bail!("remap probe is not built yet")
}
