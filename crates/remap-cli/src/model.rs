//! `remap model` (placeholder while the subcommand is built).

use std::process::ExitCode;

use crate::Output;

/// Options of `remap model`.
#[derive(Debug, clap::Args)]
pub(crate) struct ModelArgs {}

/// Runs `remap model`.
pub(crate) fn run(_args: &ModelArgs, _out: Output) -> anyhow::Result<ExitCode> {
    anyhow::bail!("remap model is not built yet")
}
