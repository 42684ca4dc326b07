//! TODO(owner): describe this module.

pub mod config;
pub mod outbox;

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`socer site` is not built yet")
}
