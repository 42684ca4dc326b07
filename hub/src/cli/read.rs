//! `socer read`: one readout of one meter, printed with units or as JSON with the canonical names.
//!
//! Reads only. A value that cannot be read is reported with its reason (bus, unit, register, what
//! came back), never replaced by zero.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use socer_drivers::bus::{read_once, MeterConfig, TransportConfig};
use socer_drivers::plan::{CostModel, Intervals};
use socer_drivers::profile::ProfileSet;
use socer_drivers::reading::Quantity;
use socer_drivers::transport::{AnyLink, Backoff, SerialSettings};
use socer_drivers::{sunspec, SystemClock};

/// Where the bus is: a serial port with its line settings, or a Modbus TCP endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct BusArgs {
    /// Serial device of an RS-485 adapter (Modbus RTU), e.g. /dev/ttyUSB0.
    #[arg(long)]
    pub serial: Option<PathBuf>,
    /// Serial line speed.
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// Serial parity.
    #[arg(long, value_enum, default_value_t = Parity::None)]
    pub parity: Parity,
    /// Serial stop bits (1 or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop_bits: u8,
    /// Modbus TCP endpoint HOST:PORT.
    #[arg(long)]
    pub tcp: Option<String>,
    /// An RS-485 gateway in transparent mode at HOST:PORT: Modbus RTU frames over TCP (`--baud`
    /// is its serial speed, used for timing).
    #[arg(long, value_name = "HOST:PORT")]
    pub rtu_over_tcp: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl BusArgs {
    /// A name for the bus in messages: the port or the endpoint.
    pub fn name(&self) -> String {
        match (&self.serial, &self.tcp, &self.rtu_over_tcp) {
            (Some(p), _, _) => p.display().to_string(),
            (None, Some(t), _) => format!("tcp {t}"),
            (None, None, Some(g)) => format!("rtu-over-tcp {g}"),
            (None, None, None) => "no bus".into(),
        }
    }

    pub fn transport(&self) -> anyhow::Result<TransportConfig> {
        Ok(match (&self.serial, &self.tcp) {
            (Some(path), _) => {
                let mut s = SerialSettings::new(path.display().to_string(), self.baud);
                s.parity = match self.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                };
                s.stop_bits = if self.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                };
                TransportConfig::Serial(s)
            }
            (None, Some(t)) => TransportConfig::Tcp { addr: t.clone() },
            (None, None) => match &self.rtu_over_tcp {
                Some(g) => TransportConfig::RtuOverTcp {
                    addr: g.clone(),
                    baud: self.baud,
                },
                None => {
                    anyhow::bail!("give --serial DEV, --tcp HOST:PORT or --rtu-over-tcp HOST:PORT")
                }
            },
        })
    }

    /// Open the bus with the bus engineer's transports; a TCP link connects on first use.
    pub fn open(&self, timeout: Duration) -> anyhow::Result<(AnyLink, CostModel)> {
        let t = self.transport()?;
        // A one-shot command does not wait between reconnection attempts.
        let backoff = Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        };
        let link = t
            .open(timeout, backoff)
            .with_context(|| format!("bus {}", self.name()))?;
        Ok((link, t.cost_model()))
    }
}

/// The built-in profiles and those in `dir` (a file there replaces a built-in of the same id).
pub fn load_profiles(dir: Option<&Path>) -> anyhow::Result<ProfileSet> {
    let mut set = ProfileSet::builtin()?;
    if let Some(dir) = dir {
        set.load_dir(dir)?;
    }
    Ok(set)
}

fn unit_of(q: Quantity) -> &'static str {
    match q {
        Quantity::PW | Quantity::BatPW => "W",
        Quantity::EImpWh | Quantity::EExpWh | Quantity::EChargeWh | Quantity::EDischargeWh => "Wh",
        Quantity::SocPct => "%",
        Quantity::VV => "V",
        Quantity::IA => "A",
        Quantity::FHz => "Hz",
        Quantity::Pf => "",
    }
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["serial", "tcp", "rtu_over_tcp"])))]
pub struct Args {
    #[command(flatten)]
    pub bus: BusArgs,
    /// Modbus unit id of the meter (default: the profile's `unit_id`, if it has one).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=247))]
    pub unit: Option<u8>,
    /// Profile id (`eastron-sdm630`, …), or `sunspec` (discovered from the device; `sunspec:203`
    /// picks one model of a device that carries several).
    #[arg(long)]
    pub model: String,
    /// Print JSON with the canonical field names.
    #[arg(long)]
    pub json: bool,
    /// A folder of extra profiles (TOML). (`--dir` is the old spelling, still taken.)
    #[arg(long = "profiles", alias = "dir", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

pub async fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let bus = args.bus.name();
    let (mut link, cost) = args.bus.open(Duration::from_millis(args.timeout_ms))?;
    if args.unit.is_none() && sunspec::model_choice(&args.model).is_none() {
        let set = load_profiles(args.dir.as_deref())?;
        args.unit = set.get(&args.model).and_then(|p| p.defaults.unit_id);
    }
    let Some(unit) = args.unit else {
        anyhow::bail!(
            "give --unit N: model `{}` has no default unit id",
            args.model
        );
    };
    let profile = if let Some(want) = sunspec::model_choice(&args.model) {
        let (_, resolved) = sunspec::discover_profile(&mut link, unit, want)
            .await
            .with_context(|| format!("bus {bus}: SunSpec discovery"))?;
        resolved.profile
    } else {
        let set = load_profiles(args.dir.as_deref())?;
        match set.get(&args.model) {
            Some(p) => p.clone(),
            None => anyhow::bail!(
                "unknown model `{}`; known: {}, {}",
                args.model,
                sunspec::PROFILE_ID,
                set.ids().join(", ")
            ),
        }
    };
    let meter = MeterConfig {
        name: format!("unit {unit}"),
        unit,
        profile: Arc::new(profile),
        reverse: false,
        intervals: Intervals::default(),
    };
    let outcome = read_once(&mut link, &bus, &meter, &cost, &SystemClock::new()).await;
    let r = outcome.reading;
    let profile = &meter.profile;
    if args.json {
        let mut j = serde_json::to_value(&r)?;
        if let Some(o) = j.as_object_mut() {
            o.insert("unit".into(), unit.into());
            o.insert("model".into(), args.model.clone().into());
            o.insert(
                "profile".into(),
                format!("{} {}", profile.manufacturer, profile.model).into(),
            );
            o.insert("missing".into(), serde_json::to_value(&r.missing)?);
        }
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "unit {} on {bus}: {} {} ({}), {}",
            unit,
            profile.manufacturer,
            profile.model,
            profile.id,
            r.ts.to_rfc3339()
        );
        for q in Quantity::ALL {
            let phases: &[u8] = if q.per_phase() { &[1, 2, 3] } else { &[1] };
            for &p in phases {
                if let Some(v) = r.values.get(q, p) {
                    let label = if q.per_phase() {
                        format!("{}_l{p}", q.name())
                    } else {
                        q.name().to_string()
                    };
                    println!("  {label:<10} {v:>14.3} {}", unit_of(q));
                }
            }
        }
        for m in &r.missing {
            println!("  {:<10} missing: {}", m.quantity, m.reason);
        }
    }
    Ok(if r.values.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
