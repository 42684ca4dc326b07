//! `socer read`: one readout of one meter, printed with units or as JSON with the canonical names.
//!
//! Reads only. A value that cannot be read is reported with its reason (bus, unit, register, what
//! came back), never replaced by zero.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use socer_drivers::decode::{apply_scale_factor, decode};
use socer_drivers::plan::{needs_of, plan, CostModel, Limits};
use socer_drivers::profile::{Function, Profile, ProfileSet};
use socer_drivers::reading::{Missing, Quantity, Values};
use socer_drivers::{sunspec, Link, LinkError};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;

/// Where the bus is: a serial port with its line settings, or a Modbus TCP endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct BusArgs {
    /// Serial device of an RS-485 adapter (Modbus RTU), e.g. /dev/ttyUSB0.
    #[arg(long, conflicts_with = "tcp", required_unless_present = "tcp")]
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
        match (&self.serial, &self.tcp) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(t)) => format!("tcp {t}"),
            (None, None) => "no bus".into(),
        }
    }

    /// Open the bus. The connection is made on the first request (and again after a timeout).
    pub fn link(&self, timeout: Duration) -> anyhow::Result<ModbusLink> {
        let target = match (&self.serial, &self.tcp) {
            (Some(path), _) => Target::Serial {
                path: path.display().to_string(),
                baud: self.baud,
                parity: self.parity,
                stop_bits: self.stop_bits,
            },
            (None, Some(t)) => Target::Tcp(t.clone()),
            (None, None) => anyhow::bail!("give --serial DEV or --tcp HOST:PORT"),
        };
        Ok(ModbusLink {
            target,
            ctx: None,
            timeout,
            last_frame: None,
        })
    }

    /// The planner's cost model for this kind of bus.
    pub fn cost(&self) -> CostModel {
        if self.serial.is_some() {
            CostModel::rtu(self.baud)
        } else {
            CostModel::tcp()
        }
    }
}

#[derive(Debug, Clone)]
enum Target {
    Tcp(String),
    Serial {
        path: String,
        baud: u32,
        parity: Parity,
        stop_bits: u8,
    },
}

/// A Modbus RTU or TCP client behind the [`Link`] trait, with a timeout on every request. After a
/// timeout or a mismatched answer the connection is reopened, so a late answer is never taken for
/// the next one.
pub struct ModbusLink {
    target: Target,
    ctx: Option<Context>,
    timeout: Duration,
    last_frame: Option<Instant>,
}

impl ModbusLink {
    /// Open the connection or port (owned arguments: the future must be `Send`, and the link
    /// holds a client that is not `Sync`).
    async fn connect(target: Target, timeout: Duration) -> Result<Context, LinkError> {
        let transport = |e: std::io::Error| LinkError::Transport(e.to_string());
        match &target {
            Target::Tcp(endpoint) => {
                let addr = tokio::net::lookup_host(endpoint.as_str())
                    .await
                    .map_err(transport)?
                    .next()
                    .ok_or_else(|| LinkError::Transport(format!("{endpoint}: no address")))?;
                let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| LinkError::Transport(format!("{endpoint}: connect timed out")))?
                    .map_err(|e| LinkError::Transport(format!("{endpoint}: {e}")))?;
                Ok(tokio_modbus::client::tcp::attach(stream))
            }
            Target::Serial {
                path,
                baud,
                parity,
                stop_bits,
            } => {
                use tokio_serial::SerialPortBuilderExt;
                let port = tokio_serial::new(path, *baud)
                    .data_bits(tokio_serial::DataBits::Eight)
                    .parity(match parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .stop_bits(if *stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    })
                    .open_native_async()
                    .map_err(|e| LinkError::Transport(format!("{path}: {e}")))?;
                Ok(tokio_modbus::client::rtu::attach(port))
            }
        }
    }

    /// What remains of the 3.5-character silence an RTU line needs between frames (none on TCP).
    fn silence_left(&self) -> Duration {
        match (&self.target, self.last_frame) {
            (
                Target::Serial {
                    baud,
                    parity,
                    stop_bits,
                    ..
                },
                Some(last),
            ) => {
                let bits = 1 + 8 + u32::from(*parity != Parity::None) + u32::from(*stop_bits);
                socer_drivers::plan::rtu_silence(*baud, bits).saturating_sub(last.elapsed())
            }
            _ => Duration::ZERO,
        }
    }
}

impl Link for ModbusLink {
    async fn read_registers(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        let mut ctx = match self.ctx.take() {
            Some(c) => c,
            None => Self::connect(self.target.clone(), self.timeout).await?,
        };
        let silence = self.silence_left();
        if !silence.is_zero() {
            tokio::time::sleep(silence).await;
        }
        ctx.set_slave(Slave(unit));
        let call = async {
            match function {
                Function::Holding => ctx.read_holding_registers(address, count).await,
                Function::Input => ctx.read_input_registers(address, count).await,
            }
        };
        let answer = tokio::time::timeout(self.timeout, call).await;
        self.last_frame = Some(Instant::now());
        let timeout_ms = self.timeout.as_millis() as u64;
        let result = match answer {
            Err(_) => return Err(LinkError::Timeout { timeout_ms }),
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                return Err(LinkError::Transport(e.to_string()))
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                return Err(LinkError::Frame(e.to_string()))
            }
            Ok(Ok(Err(code))) => Err(LinkError::Exception {
                code: u8::from(code),
            }),
            Ok(Ok(Ok(words))) if words.len() == usize::from(count) => Ok(words),
            Ok(Ok(Ok(words))) => Err(LinkError::Frame(format!(
                "asked for {count} registers, got {}",
                words.len()
            ))),
        };
        // Only a clean exchange keeps the connection; anything else reopens it next time.
        self.ctx = Some(ctx);
        result
    }
}

/// The built-in profiles and those in `dir` (a file there replaces a built-in of the same id).
pub fn load_profiles(dir: Option<&Path>) -> anyhow::Result<ProfileSet> {
    let mut set = ProfileSet::default();
    let Some(dir) = dir else { return Ok(set) };
    let entries = std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        let profile: Profile =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        set.profiles.retain(|p| p.id != profile.id);
        set.profiles.push(profile);
    }
    Ok(set)
}

/// The values of one readout and what could not be read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Readout {
    pub values: Values,
    pub missing: Vec<Missing>,
}

/// Read every quantity of `profile` once: plan the requests, perform them, decode, apply scale
/// factors. Failures become `missing` entries naming bus, unit, register and what was received.
pub async fn readout<L: Link>(
    link: &mut L,
    bus: &str,
    unit: u8,
    profile: &Profile,
    cost: &CostModel,
) -> Readout {
    let needs: Vec<_> = profile
        .quantities
        .iter()
        .flat_map(|q| needs_of(q, profile))
        .collect();
    let planned = plan(&needs, &Limits::of(profile), cost);
    let mut words: HashMap<(Function, u16), u16> = HashMap::new();
    let mut failed: Vec<(Function, u16, u16, String)> = Vec::new();
    for r in &planned.requests {
        match link
            .read_registers(unit, r.function, r.start, r.count)
            .await
        {
            Ok(w) => {
                for (i, x) in w.into_iter().enumerate() {
                    words.insert((r.function, r.start + i as u16), x);
                }
            }
            Err(e) => failed.push((r.function, r.start, r.count, e.to_string())),
        }
    }
    let why_absent = |function: Function, address: u16| -> String {
        let cause = failed
            .iter()
            .find(|(f, s, c, _)| *f == function && (*s..s.saturating_add(*c)).contains(&address))
            .map(|(_, s, c, e)| format!("read of {c} registers at {s} failed: {e}"))
            .unwrap_or_else(|| "not planned (see the profile's limits)".into());
        format!("bus {bus} unit {unit} register {address}: {cause}")
    };

    let mut out = Readout::default();
    for q in &profile.quantities {
        let function = q.function.unwrap_or(profile.defaults.function);
        let label = quantity_label(q.name, q.phase);
        let raw: Option<Vec<u16>> = (0..q.value_type.words())
            .map(|i| words.get(&(function, q.address + i)).copied())
            .collect();
        let Some(raw) = raw else {
            out.missing.push(Missing {
                quantity: label,
                reason: why_absent(function, q.address),
            });
            continue;
        };
        let value = match decode(&raw, q, &profile.defaults) {
            Ok(v) => v,
            Err(e) => {
                out.missing.push(Missing {
                    quantity: label,
                    reason: format!("bus {bus} unit {unit} register {}: {e}", q.address),
                });
                continue;
            }
        };
        let value = match q.scale_register {
            None => value,
            Some(sf_at) => match words.get(&(function, sf_at)) {
                // 0x8000 is SunSpec's "not implemented" scale factor.
                Some(0x8000) => {
                    out.missing.push(Missing {
                        quantity: label,
                        reason: format!(
                            "bus {bus} unit {unit} register {sf_at}: scale factor not implemented (0x8000)"
                        ),
                    });
                    continue;
                }
                Some(&sf) => apply_scale_factor(value, sf as i16),
                None => {
                    out.missing.push(Missing {
                        quantity: label,
                        reason: why_absent(function, sf_at),
                    });
                    continue;
                }
            },
        };
        out.values.set(q.name, q.phase.unwrap_or(1), value);
    }
    out
}

/// `p_w`, or `v_v_l2` for the second phase of a per-phase quantity.
fn quantity_label(q: Quantity, phase: Option<u8>) -> String {
    match phase {
        Some(p) if q.per_phase() => format!("{}_l{p}", q.name()),
        _ => q.name().to_string(),
    }
}

fn unit_of(q: Quantity) -> &'static str {
    match q {
        Quantity::PW => "W",
        Quantity::EImpWh | Quantity::EExpWh => "Wh",
        Quantity::VV => "V",
        Quantity::IA => "A",
        Quantity::FHz => "Hz",
        Quantity::Pf => "",
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub bus: BusArgs,
    /// Modbus unit id of the meter.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=247))]
    pub unit: u8,
    /// Profile id (`eastron-sdm630`, …) or `sunspec` (discovered from the device).
    #[arg(long)]
    pub model: String,
    /// Print JSON with the canonical field names.
    #[arg(long)]
    pub json: bool,
    /// A folder of extra profiles (TOML).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bus = args.bus.name();
    let mut link = args.bus.link(Duration::from_millis(args.timeout_ms))?;
    let profile = if args.model == sunspec::PROFILE_ID {
        let (_, resolved) = sunspec::discover_profile(&mut link, args.unit, None)
            .await
            .with_context(|| format!("bus {bus}: SunSpec discovery"))?;
        resolved.profile
    } else {
        let set = load_profiles(args.dir.as_deref())?;
        match set.get(&args.model) {
            Some(p) => p.clone(),
            None => anyhow::bail!(
                "unknown model `{}`; known: sunspec, {}",
                args.model,
                set.ids().join(", ")
            ),
        }
    };
    let r = readout(&mut link, &bus, args.unit, &profile, &args.bus.cost()).await;
    if args.json {
        let mut j = serde_json::to_value(&r.values)?;
        if let Some(o) = j.as_object_mut() {
            o.insert("unit".into(), args.unit.into());
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
            "unit {} on {bus}: {} {} ({})",
            args.unit, profile.manufacturer, profile.model, profile.id
        );
        for q in Quantity::ALL {
            let phases: &[u8] = if q.per_phase() { &[1, 2, 3] } else { &[1] };
            for &p in phases {
                if let Some(v) = r.values.get(q, p) {
                    let label = quantity_label(q, q.per_phase().then_some(p));
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
