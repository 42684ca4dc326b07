//! TODO(owner): describe this module.

pub mod balance;
pub mod config;
pub mod energy;
pub mod incentive;
pub mod tariff;

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`socer central` is not built yet")
}
