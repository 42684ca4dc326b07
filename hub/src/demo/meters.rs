//! The demo's meters: one simulated device per scenario meter, its power taken from the community
//! model, served over Modbus TCP on 127.0.0.1 (one endpoint per building) and over RTU on a pty
//! pair for buildings whose meters share an RS-485 line. Listens on loopback only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_serial::{SerialPort, SerialStream};

use socer_drivers::decode::{apply_scale_factor, decode};
use socer_drivers::profile::{Profile, ProfileSet};
use socer_drivers::reading::{Quantity, Values};
use socer_drivers::sim::rtu::{serve_rtu, LineConfig};
use socer_drivers::sim::server::serve_tcp;
use socer_drivers::sim::{Devices, Physics, PhysicsConfig, RegisterImage, SimDevice};
use socer_drivers::sunspec::{self, ImageSpec, ModelSet};
use socer_drivers::Clock;

use super::model::{Community, Counter};
use super::scenario::{BusKind, MeterSpec};

/// SunSpec inverter model served for `model = "sunspec"`: 103, three-phase, integer + scale factors.
pub const SUNSPEC_INVERTER_MODEL: u16 = 103;

/// Baud rate of the simulated RS-485 lines.
pub const RTU_BAUD: u32 = 9600;

#[derive(Debug, thiserror::Error)]
pub enum MetersError {
    #[error("building `{building}`, meter `{meter}`: no profile `{model}` (see `socer profiles`)")]
    UnknownModel {
        building: String,
        meter: String,
        model: String,
    },
    #[error("building `{building}`, meter `{meter}`: SunSpec image: {reason}")]
    SunSpec {
        building: String,
        meter: String,
        reason: String,
    },
    #[error("building `{building}`: cannot listen on 127.0.0.1: {source}")]
    Listen {
        building: String,
        source: std::io::Error,
    },
    #[error("building `{building}`: cannot open a pty pair for its RS-485 line: {reason}")]
    Pty { building: String, reason: String },
}

/// Where a building's simulated meters answer.
pub struct BuildingMeters {
    pub building: String,
    /// Modbus TCP endpoint of the building's TCP meters.
    pub tcp: Option<SocketAddr>,
    /// The pty device a site agent opens as its RS-485 port.
    pub rtu_path: Option<String>,
    /// Handles on the devices by meter name (to read their state or inject faults).
    pub devices: BTreeMap<String, SimDevice>,
    tasks: Vec<JoinHandle<()>>,
    /// The pty's far end, held open so that the line stays up while agents reconnect.
    _slave: Option<SerialStream>,
}

impl Drop for BuildingMeters {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The register map a scenario meter's device serves: its model's profile (for SunSpec, the
/// inverter model resolved to absolute addresses) and the register image over it.
fn register_map(
    community: &Community,
    b: usize,
    m: usize,
    profiles: &ProfileSet,
    models: &ModelSet,
) -> Result<(Profile, RegisterImage), MetersError> {
    let spec = &community.buildings()[b];
    let meter: &MeterSpec = &spec.meters[m];
    if meter.model == sunspec::PROFILE_ID {
        let mut want = ImageSpec::new(SUNSPEC_INVERTER_MODEL);
        want.unit = meter.unit;
        want.common.manufacturer = "socer-demo".into();
        want.common.model = format!("PV {}", spec.id);
        want.common.serial = format!("DEMO-{}-{}", spec.id, meter.unit);
        let img = sunspec::image(&want, models).map_err(|e| MetersError::SunSpec {
            building: spec.id.clone(),
            meter: meter.name.clone(),
            reason: e.to_string(),
        })?;
        let image = img.register_image();
        return Ok((img.profile, image));
    }
    let profile = profiles
        .get(&meter.model)
        .ok_or_else(|| MetersError::UnknownModel {
            building: spec.id.clone(),
            meter: meter.name.clone(),
            model: meter.model.clone(),
        })?;
    Ok((profile.clone(), RegisterImage::from_profile(profile)))
}

/// A meter's energy registers as its device serves them: a counter goes through the register's
/// encoding and back (its type, resolution and rounding; SunSpec scale factors), as a site agent
/// reads it; a counter the model has no register for is absent. Pure.
#[derive(Debug, Clone)]
pub struct Register {
    profile: Profile,
    image: RegisterImage,
}

impl Register {
    /// The (import, export) counters, Wh, that the device shows for the exact counters `c`.
    pub fn counters(&self, c: Counter) -> (Option<f64>, Option<f64>) {
        let mut values = Values::default();
        values.set(Quantity::EImpWh, 1, c.imp_wh);
        values.set(Quantity::EExpWh, 1, c.exp_wh);
        let served = |q: Quantity| -> Option<f64> {
            let map = self.profile.quantities.iter().find(|m| m.name == q)?;
            let function = map.function.unwrap_or(self.profile.defaults.function);
            let words = self
                .image
                .read(function, map.address, map.value_type.words(), &values)
                .ok()?;
            let v = decode(&words, map, &self.profile.defaults).ok()?;
            match map.scale_register {
                Some(sf) => {
                    let w = self.image.read(function, sf, 1, &values).ok()?;
                    Some(apply_scale_factor(v, *w.first()? as i16))
                }
                None => Some(v),
            }
        };
        (served(Quantity::EImpWh), served(Quantity::EExpWh))
    }
}

/// The registers of every meter of every building (in scenario order).
pub fn registers(
    community: &Community,
    profiles: &ProfileSet,
    models: &ModelSet,
) -> Result<Vec<Vec<Register>>, MetersError> {
    (0..community.buildings().len())
        .map(|b| {
            (0..community.buildings()[b].meters.len())
                .map(|m| {
                    let (profile, image) = register_map(community, b, m, profiles, models)?;
                    Ok(Register { profile, image })
                })
                .collect()
        })
        .collect()
}

/// Build the simulated device of one meter: its model's register image over physics fed by the
/// community model, counters starting at `start`.
pub fn device(
    community: &Arc<Community>,
    b: usize,
    m: usize,
    profiles: &ProfileSet,
    models: &ModelSet,
    clock: Arc<dyn Clock>,
    start: Counter,
) -> Result<SimDevice, MetersError> {
    let (profile, image) = register_map(community, b, m, profiles, models)?;
    let source = {
        let community = community.clone();
        Box::new(move |t: DateTime<Utc>| community.meter_power_w(b, m, t))
    };
    let config = PhysicsConfig {
        seed: super::weather::hash3(0xDE70, b as u64, m as u64),
        import_wh: start.imp_wh,
        export_wh: start.exp_wh,
        phases: profile.phases,
        ..PhysicsConfig::default()
    };
    Ok(SimDevice::new(image, Physics::new(clock, source, config)))
}

/// Start building `b`'s meters: a TCP endpoint for its `tcp` meters, a pty line for its `rtu`
/// meters. `start` gives each meter's counters (in the scenario's meter order).
pub async fn start_building(
    community: &Arc<Community>,
    b: usize,
    profiles: &ProfileSet,
    models: &ModelSet,
    clock: Arc<dyn Clock>,
    start: &[Counter],
) -> Result<BuildingMeters, MetersError> {
    let spec = &community.buildings()[b];
    let mut tcp_devices = Devices::new();
    let mut rtu_devices = Devices::new();
    let mut devices = BTreeMap::new();
    for (m, meter) in spec.meters.iter().enumerate() {
        let counter = start.get(m).copied().unwrap_or_default();
        let d = device(community, b, m, profiles, models, clock.clone(), counter)?;
        match meter.bus {
            BusKind::Tcp => tcp_devices.insert(meter.unit, d.clone()),
            BusKind::Rtu => rtu_devices.insert(meter.unit, d.clone()),
        };
        devices.insert(meter.name.clone(), d);
    }
    let mut out = BuildingMeters {
        building: spec.id.clone(),
        tcp: None,
        rtu_path: None,
        devices,
        tasks: Vec::new(),
        _slave: None,
    };
    if !tcp_devices.is_empty() {
        let listener =
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| MetersError::Listen {
                    building: spec.id.clone(),
                    source,
                })?;
        out.tcp = listener.local_addr().ok();
        let devices = Arc::new(tcp_devices);
        let building = spec.id.clone();
        out.tasks.push(tokio::spawn(async move {
            if let Err(e) = serve_tcp(listener, devices).await {
                tracing::warn!("demo: {building}: Modbus TCP simulator stopped: {e}");
            }
        }));
    }
    if !rtu_devices.is_empty() {
        let pty = |reason: String| MetersError::Pty {
            building: spec.id.clone(),
            reason,
        };
        let (master, slave) = SerialStream::pair().map_err(|e| pty(e.to_string()))?;
        let path = slave
            .name()
            .ok_or_else(|| pty("the pty has no name".into()))?;
        out.rtu_path = Some(path);
        out._slave = Some(slave);
        let devices = Arc::new(rtu_devices);
        let building = spec.id.clone();
        out.tasks.push(tokio::spawn(async move {
            let line = LineConfig {
                baud: RTU_BAUD,
                ..LineConfig::default()
            };
            // The server returns on end of input and gives up after garbage: serve again.
            let mut port = master;
            loop {
                match serve_rtu(&mut port, devices.clone(), line).await {
                    Ok(()) => tracing::debug!("demo: {building}: RTU line closed; serving again"),
                    Err(e) => {
                        tracing::debug!("demo: {building}: RTU line error: {e}; serving again")
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scenario::Scenario;
    use socer_drivers::SystemClock;
    use tokio_modbus::client::{tcp, Reader};
    use tokio_modbus::Slave;

    fn community() -> Arc<Community> {
        Arc::new(Community::new(Scenario::builtin().unwrap(), 4))
    }

    #[test]
    fn every_scenario_meter_becomes_a_device_whose_power_is_the_model_power() {
        let c = community();
        let profiles = ProfileSet::builtin().unwrap();
        let models = ModelSet::builtin().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        for b in 0..c.buildings().len() {
            for m in 0..c.buildings()[b].meters.len() {
                let start = Counter {
                    imp_wh: 1000.0,
                    exp_wh: 5.0,
                };
                let d = device(&c, b, m, &profiles, &models, clock.clone(), start).unwrap();
                let v: Values = d.values();
                let expect = c.meter_power_w(b, m, clock.now_utc());
                let got = v.p_w.unwrap();
                // The model's noise steps every five minutes; allow a slot change between the calls.
                assert!(
                    (got - expect).abs() <= 0.1 * expect.abs() + 1.0,
                    "{b}/{m}: {got} vs {expect}"
                );
                assert!(v.e_imp_wh.unwrap() >= 1000.0);
                assert!(v.e_exp_wh.unwrap() >= 5.0);
            }
        }
    }

    #[tokio::test]
    async fn a_building_answers_modbus_tcp_on_loopback_with_the_grid_power() {
        let c = community();
        let profiles = ProfileSet::builtin().unwrap();
        let models = ModelSet::builtin().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let b = c.buildings().iter().position(|b| b.id == "bps").unwrap();
        let meters = start_building(&c, b, &profiles, &models, clock.clone(), &[])
            .await
            .unwrap();
        let addr = meters.tcp.unwrap();
        assert!(addr.ip().is_loopback());
        let mut ctx = tcp::connect_slave(addr, Slave(1)).await.unwrap();
        // SDM630 total system power: input registers 0x0034, float32 (Eastron protocol v1.5).
        let words = ctx.read_input_registers(0x0034, 2).await.unwrap().unwrap();
        let w = f32::from_bits((u32::from(words[0]) << 16) | u32::from(words[1]));
        let expect = c.meter_power_w(b, 0, clock.now_utc());
        assert!(
            (f64::from(w) - expect).abs() <= 0.1 * expect.abs() + 1.0,
            "{w} vs {expect}"
        );
        assert!(meters.rtu_path.is_none());
    }
}
