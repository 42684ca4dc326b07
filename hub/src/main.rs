//! The `socer` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "socer",
    version,
    propagate_version = true,
    about = "Software of a renewable energy community (CER)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole community on one machine: broker, central hub, sites, simulated meters.
    Demo(socer::demo::Args),
    /// The building agent: polls meters, keeps readings, publishes them.
    Site(socer::site::Args),
    /// The community hub: broker, ingest, balance, incentive, dashboard.
    Central(socer::central::Args),
    /// Validate a site or central config; exit 2 with FILE:LINE:COL lines on error.
    Check(socer::check::Args),
    /// Find devices on a bus and guess their model.
    Scan(socer::cli::scan::Args),
    /// One readout of one meter.
    Read(socer::cli::read::Args),
    /// Serve a simulated meter over Modbus TCP or RTU.
    Simulate(socer::cli::simulate::Args),
    /// List the built-in meter profiles.
    Profiles(socer::cli::profiles::Args),
    /// Benchmark the central hub: N sites × M meters of sealed batches through its embedded broker.
    Loadgen(socer::cli::loadgen::Args),
    /// Make the hub's signing key file (0600) and print the public key for the site configs.
    Keygen(socer::cli::keygen::Args),
    /// Print a shell completion script: `socer completions bash > /etc/bash_completion.d/socer`.
    Completions(socer::cli::completions::Args),
    /// The manual pages (roff): socer.1 on stdout, or all of them into --out DIR.
    Man(socer::cli::completions::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Generated from the definition above; no runtime, no logging.
    let command = match cli.command {
        Command::Completions(a) => {
            return exit(socer::cli::completions::run(Cli::command(), a));
        }
        Command::Man(a) => return exit(socer::cli::completions::run_man(Cli::command(), a)),
        other => other,
    };
    socer::logging::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("socer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match command {
            Command::Demo(a) => socer::demo::run(a).await,
            Command::Site(a) => socer::site::run(a).await,
            Command::Central(a) => socer::central::run(a).await,
            Command::Check(a) => socer::check::run(a).await,
            Command::Scan(a) => socer::cli::scan::run(a).await,
            Command::Read(a) => socer::cli::read::run(a).await,
            Command::Simulate(a) => socer::cli::simulate::run(a).await,
            Command::Profiles(a) => socer::cli::profiles::run(a).await,
            Command::Loadgen(a) => socer::cli::loadgen::run(a).await,
            Command::Keygen(a) => socer::cli::keygen::run(a).await,
            Command::Completions(_) | Command::Man(_) => Ok(ExitCode::SUCCESS), // answered above
        }
    });
    exit(result)
}

fn exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("socer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
