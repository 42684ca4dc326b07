//! How efficiently one RS-485 line is used: 8 Eastron SDM630 + 1 SunSpec-like inverter on a
//! simulated 9600-baud 8N1 line (the simulator's RTU server on a pty, which answers no sooner than
//! the frames and a 5 ms turnaround take). Prints, per kind of cycle, the requests the planner
//! makes and the one-request-per-quantity count, the measured cycle time and the wire-time minimum.
//!
//! Run: `cargo bench -p socer-drivers --bench bus_efficiency` (times are dominated by the line,
//! so `--profile dev` gives the same figures without a release build).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socer_drivers::bus::{self, MeterConfig};
use socer_drivers::plan::{needs_of, plan, CostModel, Intervals, Limits, Need, Schedule};
use socer_drivers::profile::{Function, Profile, ProfileSet};
use socer_drivers::reading::Quality;
use socer_drivers::sim::rtu::{serve_rtu, LineConfig};
use socer_drivers::sim::{NoisyPower, PhysicsConfig, SimDevice};
use socer_drivers::transport::RtuLink;
use socer_drivers::{Link, LinkError, SystemClock};
use tokio_serial::SerialStream;

const BAUD: u32 = 9600;
const TURNAROUND: Duration = Duration::from_millis(5);
const CYCLES: usize = 3;

/// A three-phase inverter laid out as SunSpec model 103 with the map starting at 40000
/// (SunSpec Information Model Reference, model 103 point offsets: A at +2, A_SF +6, PhVphA..C
/// +10..12, V_SF +13, W +14, W_SF +15, Hz +16, Hz_SF +17, PF +22, PF_SF +23, WH +24 (acc32),
/// WH_SF +26), with the model block at 40069.
const SUNSPEC_LIKE: &str = r#"
id = "sunspec-like-103"
manufacturer = "Bench"
model = "SunSpec 103 layout"
kind = "inverter"
phases = 3
source = "SunSpec Information Model Reference, model 103 (three-phase inverter) point offsets"

[defaults]
function = "holding"

[[quantity]]
name = "i_a"
phase = 1
address = 40072
type = "u16"
scale_register = 40075

[[quantity]]
name = "v_v"
phase = 1
address = 40079
type = "u16"
scale_register = 40082

[[quantity]]
name = "v_v"
phase = 2
address = 40080
type = "u16"
scale_register = 40082

[[quantity]]
name = "v_v"
phase = 3
address = 40081
type = "u16"
scale_register = 40082

[[quantity]]
name = "p_w"
address = 40083
type = "i16"
scale_register = 40084

[[quantity]]
name = "f_hz"
address = 40085
type = "u16"
scale_register = 40086

[[quantity]]
name = "pf"
address = 40091
type = "i16"
scale_register = 40092

[[quantity]]
name = "e_exp_wh"
address = 40093
type = "u32"
scale_register = 40095
"#;

/// Counts the requests that reach the line.
struct Counting<L> {
    inner: L,
    requests: usize,
}

impl<L: Link> Link for Counting<L> {
    async fn read_registers(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        self.requests += 1;
        self.inner
            .read_registers(unit, function, address, count)
            .await
    }
}

fn inverter_device(profile: &Profile, clock: Arc<SystemClock>) -> SimDevice {
    let mut image = socer_drivers::sim::RegisterImage::from_profile(profile);
    // Scale factors: A ×0.01, V ×0.1, W ×1, Hz ×0.01, PF ×0.001, Wh ×1.
    for (addr, sf) in [
        (40075u16, -2i16),
        (40082, -1),
        (40084, 0),
        (40086, -2),
        (40092, -3),
        (40095, 0),
    ] {
        image.add_static(Function::Holding, addr, &[sf as u16]);
    }
    let physics = socer_drivers::sim::Physics::new(
        clock,
        Box::new(NoisyPower::new(-6000.0, 0.01, 3)),
        PhysicsConfig {
            phases: 3,
            export_wh: 12_345_000.0,
            ..PhysicsConfig::default()
        },
    );
    SimDevice::new(image, physics)
}

struct Row {
    planned: usize,
    sent: usize,
    naive: usize,
    wire_min: Duration,
    naive_wire: Duration,
    measured: Duration,
    good: usize,
    meters: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let set = ProfileSet::builtin()?;
    let sdm630 = Arc::new(set.require("eastron-sdm630")?.clone());
    let inverter = Arc::new(Profile::from_toml("sunspec-like-103.toml", SUNSPEC_LIKE)?);
    let clock = Arc::new(SystemClock::new());

    let mut devices = BTreeMap::new();
    let mut meters = Vec::new();
    for unit in 1..=8u8 {
        devices.insert(
            unit,
            SimDevice::from_profile(
                &sdm630,
                clock.clone(),
                Box::new(NoisyPower::new(
                    800.0 * f64::from(unit),
                    0.05,
                    u64::from(unit),
                )),
                PhysicsConfig {
                    import_wh: 1_000_000.0,
                    ..PhysicsConfig::default()
                },
            ),
        );
        meters.push(MeterConfig {
            name: format!("sdm630-{unit}"),
            unit,
            profile: sdm630.clone(),
            reverse: false,
            intervals: Intervals::default(),
        });
    }
    devices.insert(10, inverter_device(&inverter, clock.clone()));
    meters.push(MeterConfig {
        name: "inverter".into(),
        unit: 10,
        profile: inverter.clone(),
        reverse: false,
        intervals: Intervals::default(),
    });

    let (master, slave) = SerialStream::pair()?;
    let line = LineConfig {
        baud: BAUD,
        turnaround: TURNAROUND,
        ..LineConfig::default()
    };
    tokio::spawn(serve_rtu(slave, Arc::new(devices), line));
    let mut link = Counting {
        inner: RtuLink::from_stream(master, BAUD, Duration::from_millis(500)),
        requests: 0,
    };
    let cost = CostModel::Rtu {
        baud: BAUD,
        bits_per_char: 10,
        turnaround: TURNAROUND,
    };

    // The 60 s cycle reads everything; the 5 s cycles in between read only power-like quantities.
    let kinds: [(&str, Duration); 2] = [
        ("every 60 s (all quantities)", Duration::ZERO),
        ("every 5 s (power only)", Duration::from_secs(5)),
    ];
    println!("bus efficiency: 8 × eastron-sdm630 + 1 SunSpec-like inverter, simulated {BAUD} baud 8N1, {} ms turnaround", TURNAROUND.as_millis());
    let mut measured = Vec::new();
    for (label, at) in kinds {
        let mut row = Row {
            planned: 0,
            sent: 0,
            naive: 0,
            wire_min: Duration::ZERO,
            naive_wire: Duration::ZERO,
            measured: Duration::ZERO,
            good: 0,
            meters: meters.len(),
        };
        for m in &meters {
            let mut s = Schedule::new(&m.profile, m.intervals);
            if at > Duration::ZERO {
                let all: Vec<usize> = (0..m.profile.quantities.len()).collect();
                s.mark_polled(&all, Duration::ZERO);
            }
            let due = s.due(at);
            let needs: Vec<Need> = due
                .iter()
                .flat_map(|&i| needs_of(&m.profile.quantities[i], &m.profile))
                .collect();
            let p = plan(&needs, &Limits::of(&m.profile), &cost);
            row.planned += p.requests.len();
            row.wire_min += cost.plan_cost(&p.requests);
            row.naive += needs.len();
            row.naive_wire += due
                .iter()
                .flat_map(|&i| needs_of(&m.profile.quantities[i], &m.profile))
                .map(|n| cost.cost(n.words))
                .sum::<Duration>();
        }
        let mut best = Duration::MAX;
        for _ in 0..CYCLES {
            let before = link.requests;
            let started = Instant::now();
            let mut good = 0;
            for m in &meters {
                let mut s = Schedule::new(&m.profile, m.intervals);
                if at > Duration::ZERO {
                    let all: Vec<usize> = (0..m.profile.quantities.len()).collect();
                    s.mark_polled(&all, Duration::ZERO);
                }
                let out = bus::poll(&mut link, "bench", m, &s.due(at), &cost, clock.as_ref()).await;
                if out.reading.quality == Quality::Good {
                    good += 1;
                } else {
                    eprintln!(
                        "{}: {:?} {:?}",
                        m.name, out.reading.quality, out.reading.missing
                    );
                }
            }
            best = best.min(started.elapsed());
            row.sent = link.requests - before;
            row.good = good;
        }
        row.measured = best;
        println!("\n{label}");
        println!(
            "  requests per cycle (planned / sent): {} / {}",
            row.planned, row.sent
        );
        println!(
            "  one request per quantity (scale factors read separately): {} requests",
            row.naive
        );
        println!(
            "  wire-time minimum of the plan: {:.1} ms",
            row.wire_min.as_secs_f64() * 1e3
        );
        println!(
            "  wire time, one request per quantity: {:.1} ms",
            row.naive_wire.as_secs_f64() * 1e3
        );
        println!(
            "  measured cycle time (best of {CYCLES}): {:.1} ms",
            row.measured.as_secs_f64() * 1e3
        );
        println!("  meters read Good: {}/{}", row.good, row.meters);
        measured.push(row.measured);
    }
    // Per minute at the default intervals: one full cycle and eleven power-only cycles.
    if let [full, fast] = measured[..] {
        let busy = full + fast * 11;
        println!(
            "\nline busy at the default intervals (5 s power, 60 s counters): {:.1} s per minute ({:.0} %)",
            busy.as_secs_f64(),
            busy.as_secs_f64() / 60.0 * 100.0
        );
    }
    Ok(())
}
