//! `socer central`: the community hub — broker, authenticated ingest, store, balance, API.
//!
//! Wiring only: each part lives in its own module and the pure energy rules do no I/O.

pub mod config;
pub mod energy;

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`socer central` is not built yet")
}
