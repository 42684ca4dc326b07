//! `socer simulate`: serves simulated meters of any profile over Modbus TCP or RTU until Ctrl-C,
//! with optional faults, for bench tests of pollers and for the demo.
//!
//! Only wiring: devices, physics and framing live in `socer_drivers::sim`; this never decodes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use socer_drivers::profile::{DeviceKind, Profile, ProfileSet};
use socer_drivers::sim::rtu::{serve_rtu, LineConfig, Parity};
use socer_drivers::sim::server::serve_tcp;
use socer_drivers::sim::{
    Fault, FaultSpec, Faults, NoisyPower, Physics, PhysicsConfig, RegisterImage, SimDevice,
};
use socer_drivers::sunspec::{self, ImageSpec, ModelSet};
use socer_drivers::{Clock, SystemClock};
use tokio_serial::SerialPortBuilderExt;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile id of the device served at --unit (`socer profiles` lists them), or `sunspec`.
    #[arg(long)]
    pub model: String,
    /// The SunSpec model a `sunspec` device serves after the common model: 101-103 (inverters),
    /// 111-113 (float inverters), 201-204 (meters).
    #[arg(long, default_value_t = 103)]
    pub sunspec_model: u16,
    /// Serve Modbus TCP on this address (e.g. 127.0.0.1:5020; port 0 picks a free one).
    #[arg(long, conflicts_with = "serial", required_unless_present = "serial")]
    pub tcp: Option<String>,
    /// Serve Modbus RTU on this serial port (or one end of a socat pty pair).
    #[arg(long)]
    pub serial: Option<PathBuf>,
    /// Unit id (slave address) of the --model device, 1..=247.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=247))]
    pub unit: u8,
    /// RTU line speed; responses take the time their bytes need at this rate.
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// RTU parity; with parity a character takes 11 bits on the line instead of 10.
    #[arg(long, value_enum, default_value_t = ParityArg::None)]
    pub parity: ParityArg,
    /// RTU stop bits, 1 or 2 (2 also makes a character 11 bits long).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop_bits: u8,
    /// RTU device turnaround: how long a device thinks before answering, ms.
    #[arg(long, default_value_t = 5)]
    pub turnaround_ms: u64,
    /// Another device on the same endpoint: UNIT:MODEL or UNIT:MODEL:POWER_W (repeatable).
    #[arg(long = "device", value_name = "UNIT:MODEL[:POWER_W]")]
    pub devices: Vec<DeviceArg>,
    /// Seed of the noise; device N uses seed + N, so runs repeat exactly.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mean active power of the --model device, W, positive importing (default 1500 for a meter,
    /// -3000 for an inverter, which exports).
    #[arg(long, allow_hyphen_values = true)]
    pub power_w: Option<f64>,
    /// Relative standard deviation of power; 0 also makes voltage, frequency and power factor
    /// exactly nominal (230 V, 50 Hz, 0.95).
    #[arg(long, default_value_t = 0.02)]
    pub noise: f64,
    /// Import energy counter at start, Wh (every device).
    #[arg(long, default_value_t = 0.0)]
    pub import_wh: f64,
    /// Export energy counter at start, Wh (every device).
    #[arg(long, default_value_t = 0.0)]
    pub export_wh: f64,
    /// A fault to show: latency=MS, silent, exception=CODE, corrupt=crc|truncate, frozen,
    /// reset-after=SECONDS; prefix UNIT: for one device, else every device (repeatable).
    #[arg(long = "fault", value_name = "[UNIT:]KIND[=VALUE]")]
    pub faults: Vec<FaultSpec>,
    /// A folder of extra profile files (added to, or overriding, the built-in ones).
    #[arg(long, value_name = "DIR")]
    pub profiles: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ParityArg {
    None,
    Even,
    Odd,
}

/// `--device UNIT:MODEL[:POWER_W]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceArg {
    pub unit: u8,
    pub model: String,
    pub power_w: Option<f64>,
}

impl std::str::FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':');
        let (Some(unit), Some(model)) = (parts.next(), parts.next()) else {
            return Err(format!("`{s}`: expected UNIT:MODEL or UNIT:MODEL:POWER_W"));
        };
        let unit = match unit.parse::<u8>() {
            Ok(u) if (1..=247).contains(&u) => u,
            _ => return Err(format!("`{unit}` is not a unit id (1..=247)")),
        };
        let power_w = match parts.next() {
            Some(p) => Some(
                p.parse::<f64>()
                    .map_err(|_| format!("`{p}` is not a power in W"))?,
            ),
            None => None,
        };
        if model.is_empty() {
            return Err(format!("`{s}`: the model id is empty"));
        }
        Ok(DeviceArg {
            unit,
            model: model.to_string(),
            power_w,
        })
    }
}

/// What a plain device draws when no power is given: a household meter imports, an inverter
/// exports.
fn default_power_w(profile: &Profile) -> f64 {
    match profile.kind {
        DeviceKind::Meter | DeviceKind::Gateway => 1500.0,
        DeviceKind::Inverter => -3000.0,
        // A hybrid's battery side: charging from the roof.
        DeviceKind::Battery => 800.0,
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut set = ProfileSet::builtin().context("built-in profiles")?;
    if let Some(dir) = &args.profiles {
        set.load_dir(dir)
            .with_context(|| format!("profiles in {}", dir.display()))?;
    }
    let models = ModelSet::builtin().context("built-in SunSpec models")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());

    let mut wanted = vec![DeviceArg {
        unit: args.unit,
        model: args.model.clone(),
        power_w: args.power_w,
    }];
    wanted.extend(args.devices.iter().cloned());
    let mut devices = BTreeMap::new();
    for d in &wanted {
        let (image, profile) = if d.model == sunspec::PROFILE_ID {
            let spec = ImageSpec {
                unit: d.unit,
                ..ImageSpec::new(args.sunspec_model)
            };
            let img = sunspec::image(&spec, &models)
                .with_context(|| format!("SunSpec model {}", args.sunspec_model))?;
            (img.register_image(), img.profile)
        } else {
            let profile = set.require(&d.model)?;
            (RegisterImage::from_profile(profile), profile.clone())
        };
        let power_w = d.power_w.unwrap_or_else(|| default_power_w(&profile));
        let seed = args.seed.wrapping_add(u64::from(d.unit));
        let config = PhysicsConfig {
            phases: profile.phases,
            seed,
            grid_noise: if args.noise > 0.0 { 1.0 } else { 0.0 },
            import_wh: args.import_wh,
            export_wh: args.export_wh,
            ..PhysicsConfig::default()
        };
        let source = Box::new(NoisyPower::new(power_w, args.noise.max(0.0), seed));
        let device = SimDevice::new(image, Physics::new(clock.clone(), source, config));
        if devices.insert(d.unit, device).is_some() {
            bail!("unit {} is given twice", d.unit);
        }
        println!(
            "unit {:>3}: {} ({} {}), {power_w} W",
            d.unit, d.model, profile.manufacturer, profile.model
        );
    }
    apply_faults(&devices, &args.faults)?;
    let devices = Arc::new(devices);

    if let Some(addr) = &args.tcp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        println!("serving Modbus TCP on {local} (Ctrl-C stops)");
        tokio::select! {
            r = serve_tcp(listener, devices) => r.context("Modbus TCP server")?,
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        }
    } else if let Some(path) = &args.serial {
        let line = LineConfig {
            baud: args.baud,
            parity: match args.parity {
                ParityArg::None => Parity::None,
                ParityArg::Even => Parity::Even,
                ParityArg::Odd => Parity::Odd,
            },
            stop_bits: args.stop_bits,
            turnaround: Duration::from_millis(args.turnaround_ms),
        };
        println!(
            "serving Modbus RTU on {} at {} baud, {} bits per character (Ctrl-C stops)",
            path.display(),
            line.baud,
            line.bits_per_char()
        );
        tokio::select! {
            r = serve_serial(path, line, devices) => r?,
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Apply the `--fault` settings; `reset-after` schedules a one-off counter reset.
fn apply_faults(devices: &BTreeMap<u8, SimDevice>, specs: &[FaultSpec]) -> anyhow::Result<()> {
    let mut standing: BTreeMap<u8, Faults> =
        devices.keys().map(|&u| (u, Faults::default())).collect();
    for spec in specs {
        let targets: Vec<u8> = match spec.unit {
            Some(u) if devices.contains_key(&u) => vec![u],
            Some(u) => bail!(
                "--fault for unit {u}, which is not served (units: {:?})",
                devices.keys()
            ),
            None => devices.keys().copied().collect(),
        };
        for unit in targets {
            match &spec.fault {
                Fault::ResetAfter(after) => {
                    let (device, after) = (devices[&unit].clone(), *after);
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        device.reset_counters();
                        tracing::info!(unit, "energy counters reset (fault)");
                    });
                }
                standing_fault => standing_fault.apply(standing.entry(unit).or_default()),
            }
        }
    }
    for (unit, faults) in standing {
        if faults != Faults::default() {
            println!("unit {unit:>3}: faults {faults:?}");
        }
        devices[&unit].set_faults(faults);
    }
    Ok(())
}

/// Serve RTU on a serial port, reopening it when it fails (a USB adapter unplugged, a pty peer
/// gone); give up only when it cannot be reopened.
async fn serve_serial(
    path: &std::path::Path,
    line: LineConfig,
    devices: Arc<socer_drivers::sim::Devices>,
) -> anyhow::Result<()> {
    let path_str = path.to_string_lossy().into_owned();
    loop {
        let port = tokio_serial::new(&path_str, line.baud)
            .parity(match line.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .stop_bits(if line.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            })
            .data_bits(tokio_serial::DataBits::Eight)
            .open_native_async()
            .with_context(|| format!("cannot open serial port {path_str}"))?;
        match serve_rtu(port, devices.clone(), line).await {
            Ok(()) => tracing::warn!("serial port {path_str} closed; reopening"),
            Err(e) => tracing::warn!("serial port {path_str}: {e}; reopening"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_args_parse_unit_model_and_optional_power() {
        assert_eq!(
            "2:eastron-sdm630".parse::<DeviceArg>(),
            Ok(DeviceArg {
                unit: 2,
                model: "eastron-sdm630".into(),
                power_w: None
            })
        );
        assert_eq!(
            "9:huawei-sun2000:-4500".parse::<DeviceArg>(),
            Ok(DeviceArg {
                unit: 9,
                model: "huawei-sun2000".into(),
                power_w: Some(-4500.0)
            })
        );
        for bad in ["0:x", "248:x", "1", "1:", "1:x:lots"] {
            assert!(bad.parse::<DeviceArg>().is_err(), "{bad}");
        }
    }
}
