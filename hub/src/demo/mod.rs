//! `socer demo`: the So.CER community on one machine — simulated buildings whose meters speak real
//! Modbus, a site agent per building, the central hub. Never touches real devices or the network
//! beyond 127.0.0.1.

pub mod configs;
pub mod load;
pub mod meters;
pub mod model;
pub mod scenario;
pub mod weather;

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`socer demo` is not built yet")
}
