//! `socer scan`: find the devices on a bus and guess their model, printing the evidence.
//!
//! Reads only; each silent unit id costs one short timeout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use socer_drivers::scan::scan;

use super::read::{load_profiles, BusArgs};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["serial", "tcp", "rtu_over_tcp"])))]
pub struct Args {
    #[command(flatten)]
    pub bus: BusArgs,
    /// Unit ids to probe: `1-247`, `5`, or a list `1,2,10-12`.
    #[arg(long, default_value = "1-247", value_parser = parse_units)]
    pub units: Units,
    /// Per-request timeout: how long a silent unit id costs.
    #[arg(long, default_value_t = 200)]
    pub timeout_ms: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// A folder of extra profiles (TOML) whose `identify` registers are tried too. (`--dir` is the
    /// old spelling, still taken.)
    #[arg(long = "profiles", alias = "dir", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// A list of unit ids, in the order given, without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Units(pub Vec<u8>);

/// Parse `1-247`, `5`, `1,2,10-12`; ids must be 1..=247.
pub fn parse_units(s: &str) -> Result<Units, String> {
    let id = |t: &str| -> Result<u8, String> {
        match t.trim().parse::<u8>() {
            Ok(n @ 1..=247) => Ok(n),
            _ => Err(format!("`{t}` is not a unit id (1-247)")),
        }
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let ids = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (id(a)?, id(b)?);
                if a > b {
                    return Err(format!("`{part}`: range runs backwards"));
                }
                (a..=b).collect()
            }
            None => vec![id(part)?],
        };
        for i in ids {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    Ok(Units(out))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let profiles = load_profiles(args.dir.as_deref())?;
    let (mut link, _) = args.bus.open(Duration::from_millis(args.timeout_ms))?;
    let found = scan(&mut link, args.units.0.iter().copied(), &profiles)
        .await
        .map_err(|e| anyhow::anyhow!("bus {}: {e}", args.bus.name()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else if found.is_empty() {
        println!(
            "no device answered on {} (units {})",
            args.bus.name(),
            args.units.0.len()
        );
    } else {
        for f in &found {
            let guess = if f.guesses.is_empty() {
                "unknown model".to_string()
            } else {
                f.guesses.join(" or ")
            };
            println!(
                "unit {:>3}: {guess}{}",
                f.unit,
                f.description
                    .as_ref()
                    .map(|d| format!(" — {d}"))
                    .unwrap_or_default()
            );
            for e in &f.evidence {
                println!("          {e}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_accept_ranges_lists_and_single_ids() {
        assert_eq!(parse_units("1-3").unwrap(), Units(vec![1, 2, 3]));
        assert_eq!(parse_units("5,1-2,2").unwrap(), Units(vec![5, 1, 2]));
        assert_eq!(parse_units("1-247").unwrap().0.len(), 247);
    }

    #[test]
    fn units_outside_1_to_247_or_backwards_are_refused() {
        assert!(parse_units("0").is_err());
        assert!(parse_units("248").is_err());
        assert!(parse_units("9-3").unwrap_err().contains("backwards"));
        assert!(parse_units("x").is_err());
    }
}
