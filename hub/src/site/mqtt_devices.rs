//! Devices that publish their own readings on the building's MQTT broker: Shelly Gen2+ energy
//! meters (status notifications) and Tasmota `SENSOR` telemetry, the `[[bus]] mqtt` kind. Each
//! meter's payloads are mapped to canonical values and sent down the same channel, health and
//! plausibility path as Modbus readings.
//!
//! Every byte here comes from the network and is untrusted: payloads are bounded in size, a
//! malformed one is counted and logged once a minute, and nothing in it can make the agent panic.
//! A meter that has not published within [`SILENT_AFTER_PERIODS`] of its expected period yields
//! failed readings, so its last values are never shown as fresh. The payload mapping
//! ([`parse`]) and the per-meter window ([`Track`]) are pure; [`spawn`] only moves bytes.
//!
//! Sources of the payload formats:
//! - Shelly Gen2 API (shelly-api-docs.shelly.cloud/gen2): `EM.GetStatus` (`total_act_power` W,
//!   `a_/b_/c_voltage` V, `a_/b_/c_current` A, `a_/b_/c_act_power` W, `a_freq` Hz on newer
//!   firmware), `EMData.GetStatus` (`total_act` and `total_act_ret`, Wh, all phases; evcc's
//!   pull request #7335 confirms they are Wh), `EM1.GetStatus` (`act_power`, `voltage`,
//!   `current`, `pf`, `freq`) and `EM1Data.GetStatus` (`total_act_energy`,
//!   `total_act_ret_energy`, Wh); over MQTT (Gen2 "MQTT" component) a status change is
//!   published on `<prefix>/events/rpc` as a `NotifyStatus` (only the changed fields) or
//!   `NotifyFullStatus` frame whose `params` hold the components, and, with "generic status
//!   update" on, the component's whole status on `<prefix>/status/<component>:<id>`.
//! - Tasmota (tasmota.github.io/docs, "MQTT" and "Power Monitoring"): telemetry every
//!   `TelePeriod` (300 s by default) on `tele/<topic>/SENSOR`, an object whose `ENERGY` holds
//!   `Total` (kWh since `TotalStartTime`), `Power` (W), `Voltage` (V), `Current` (A), `Factor`,
//!   `Frequency` (Hz), `Today`/`Yesterday` (kWh, daily: never used as counters) and, on meters
//!   that measure export, `ExportActive` (kWh); three-phase drivers give arrays per phase.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use socer_drivers::clock::Clock;
use socer_drivers::decode;
use socer_drivers::link::ErrorKind;
use socer_drivers::reading::{Missing, Quality, Quantity, Reading, Values};

use super::config::{BusConfig, MeterConfig};
use super::poll::Polled;

/// A payload larger than this is refused (a Shelly Pro 3EM's full status is about 3 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 32 * 1024;
/// What rumqttc accepts before it drops the connection; above [`MAX_PAYLOAD_BYTES`] so that an
/// oversized payload is refused and counted here instead of costing a reconnection.
const MAX_PACKET_BYTES: usize = 256 * 1024;
/// A meter silent for longer than this many expected periods yields failed readings.
pub const SILENT_AFTER_PERIODS: f64 = super::poll::SILENT_AFTER_INTERVALS;
/// Messages of one meter arriving within this span make one reading (Shelly sends power and
/// energy as separate notifications); it also bounds the readings to one a second per meter.
pub const COALESCE: Duration = Duration::from_secs(1);
/// Malformed payloads are logged at most this often, with their count.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What a meter on an MQTT bus publishes (its `model` in the site config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Shelly Gen2+ energy meter (Pro 3EM: `em`/`emdata`; Pro EM, EM Gen3: `em1`/`em1data`).
    ShellyGen2,
    /// Tasmota energy telemetry (`tele/<topic>/SENSOR`).
    Tasmota,
}

impl Format {
    /// The model names a site config may give a meter on an MQTT bus.
    pub const MODELS: [&'static str; 2] = ["shelly-gen2", "tasmota"];

    pub fn from_model(model: &str) -> Option<Format> {
        match model {
            "shelly-gen2" => Some(Format::ShellyGen2),
            "tasmota" => Some(Format::Tasmota),
            _ => None,
        }
    }

    /// How often the device publishes unless the meter's `interval` says otherwise: a Shelly
    /// updates its energy data every minute, Tasmota's `TelePeriod` is 300 s.
    pub fn default_period(self) -> Duration {
        match self {
            Format::ShellyGen2 => Duration::from_secs(60),
            Format::Tasmota => Duration::from_secs(300),
        }
    }
}

/// The expected publishing period of a meter on an MQTT bus: its `interval`, else its format's.
pub fn expected_period(m: &MeterConfig) -> Duration {
    m.interval()
        .or_else(|| Format::from_model(m.model.get_ref()).map(Format::default_period))
        .unwrap_or(Duration::from_secs(60))
}

/// The topic filters to subscribe for a device whose topic (Shelly: its topic prefix; Tasmota:
/// its `%topic%`) is `topic`.
pub fn subscriptions(format: Format, topic: &str) -> Vec<String> {
    match format {
        Format::ShellyGen2 => vec![
            format!("{topic}/events/rpc"),
            format!("{topic}/status/em:0"),
            format!("{topic}/status/emdata:0"),
            format!("{topic}/status/em1:0"),
            format!("{topic}/status/em1data:0"),
        ],
        Format::Tasmota => vec![format!("tele/{topic}/SENSOR")],
    }
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not the expected shape: {0}")]
    Shape(&'static str),
}

/// The canonical values a device's message on `topic` carries: `Ok(None)` for a message of the
/// device that carries no reading (another component, an event, a `SENSOR` without `ENERGY`).
/// Only the fields present are set; a field of the wrong type is left out. Pure.
pub fn parse(
    format: Format,
    device_topic: &str,
    topic: &str,
    payload: &[u8],
) -> Result<Option<Values>, PayloadError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge(payload.len()));
    }
    let json = || -> Result<Value, PayloadError> {
        serde_json::from_slice(payload).map_err(|e| PayloadError::Json(e.to_string()))
    };
    match format {
        Format::ShellyGen2 => {
            let Some(rest) = topic
                .strip_prefix(device_topic)
                .and_then(|r| r.strip_prefix('/'))
            else {
                return Ok(None);
            };
            if rest == "events/rpc" {
                let v = json()?;
                let method = v.get("method").and_then(Value::as_str).unwrap_or("");
                if method != "NotifyStatus" && method != "NotifyFullStatus" {
                    return Ok(None);
                }
                let params = v
                    .get("params")
                    .and_then(Value::as_object)
                    .ok_or(PayloadError::Shape("NotifyStatus without a params object"))?;
                let mut out = Values::default();
                let mut any = false;
                for (component, status) in params {
                    if let Some(v) = shelly_component(component, status) {
                        merge(&mut out, &v);
                        any = true;
                    }
                }
                Ok(any.then_some(out))
            } else if let Some(component) = rest.strip_prefix("status/") {
                let v = json()?;
                if !v.is_object() {
                    return Err(PayloadError::Shape("a component status is a JSON object"));
                }
                Ok(shelly_component(component, &v))
            } else {
                Ok(None)
            }
        }
        Format::Tasmota => {
            if topic != format!("tele/{device_topic}/SENSOR") {
                return Ok(None);
            }
            let v = json()?;
            let obj = v
                .as_object()
                .ok_or(PayloadError::Shape("SENSOR is a JSON object"))?;
            let Some(energy) = obj.get("ENERGY") else {
                return Ok(None);
            };
            let e = energy
                .as_object()
                .ok_or(PayloadError::Shape("ENERGY is a JSON object"))?;
            Ok(Some(tasmota_energy(e)))
        }
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64).filter(|x| x.is_finite())
}

/// One Shelly component's status (whole or the changed fields of a notification).
fn shelly_component(component: &str, s: &Value) -> Option<Values> {
    if !s.is_object() {
        return None;
    }
    let mut v = Values::default();
    match component {
        "em:0" => {
            v.p_w = num(s, "total_act_power");
            for (k, ph) in ["a", "b", "c"].iter().enumerate() {
                v.v_v[k] = num(s, &format!("{ph}_voltage"));
                v.i_a[k] = num(s, &format!("{ph}_current"));
            }
            v.f_hz = num(s, "a_freq");
        }
        "emdata:0" => {
            v.e_imp_wh = num(s, "total_act");
            v.e_exp_wh = num(s, "total_act_ret");
        }
        "em1:0" => {
            v.p_w = num(s, "act_power");
            v.v_v[0] = num(s, "voltage");
            v.i_a[0] = num(s, "current");
            v.pf = num(s, "pf");
            v.f_hz = num(s, "freq");
        }
        "em1data:0" => {
            v.e_imp_wh = num(s, "total_act_energy");
            v.e_exp_wh = num(s, "total_act_ret_energy");
        }
        _ => return None,
    }
    Some(v)
}

/// A Tasmota value: a number, or per phase an array of numbers.
fn phases(v: Option<&Value>) -> Vec<f64> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .take(3)
            .map(|x| x.as_f64().filter(|x| x.is_finite()))
            .collect::<Option<Vec<f64>>>()
            .unwrap_or_default(),
        Some(x) => x.as_f64().filter(|x| x.is_finite()).into_iter().collect(),
        None => Vec::new(),
    }
}

fn sum(v: Option<&Value>) -> Option<f64> {
    let p = phases(v);
    (!p.is_empty()).then(|| p.iter().sum())
}

fn tasmota_energy(e: &serde_json::Map<String, Value>) -> Values {
    let mut v = Values {
        p_w: sum(e.get("Power")),
        e_imp_wh: sum(e.get("Total")).map(|kwh| kwh * 1000.0),
        e_exp_wh: sum(e.get("ExportActive").or(e.get("TotalReturned"))).map(|kwh| kwh * 1000.0),
        ..Values::default()
    };
    for (k, x) in phases(e.get("Voltage")).into_iter().enumerate() {
        v.v_v[k] = Some(x);
    }
    for (k, x) in phases(e.get("Current")).into_iter().enumerate() {
        v.i_a[k] = Some(x);
    }
    // A power factor per phase is not the meter's total power factor.
    v.pf = match e.get("Factor") {
        Some(Value::Array(_)) => None,
        f => f.and_then(Value::as_f64).filter(|x| x.is_finite()),
    };
    v.f_hz = sum(e.get("Frequency")).filter(|_| phases(e.get("Frequency")).len() == 1);
    v
}

/// Set in `into` every value present in `from`.
pub fn merge(into: &mut Values, from: &Values) {
    for q in Quantity::ALL {
        for phase in 1..=if q.per_phase() { 3 } else { 1 } {
            if let Some(x) = from.get(q, phase) {
                into.set(q, phase, x);
            }
        }
    }
}

/// Values outside their physical bounds (`decode::plausible`, as for Modbus readings) taken out
/// of `v`, each with why.
pub fn screen(v: &mut Values) -> Vec<Missing> {
    let mut out = Vec::new();
    for q in Quantity::ALL {
        for phase in 1..=if q.per_phase() { 3 } else { 1 } {
            let Some(x) = v.get(q, phase) else { continue };
            if let Err(e) = decode::plausible(q, x) {
                match q {
                    Quantity::VV => v.v_v[usize::from(phase - 1)] = None,
                    Quantity::IA => v.i_a[usize::from(phase - 1)] = None,
                    _ => clear(v, q),
                }
                out.push(Missing {
                    quantity: q.name().to_string(),
                    reason: e.to_string(),
                });
            }
        }
    }
    out
}

fn clear(v: &mut Values, q: Quantity) {
    match q {
        Quantity::PW => v.p_w = None,
        Quantity::EImpWh => v.e_imp_wh = None,
        Quantity::EExpWh => v.e_exp_wh = None,
        Quantity::FHz => v.f_hz = None,
        Quantity::Pf => v.pf = None,
        Quantity::SocPct => v.soc_pct = None,
        Quantity::BatPW => v.bat_p_w = None,
        Quantity::EChargeWh => v.e_charge_wh = None,
        Quantity::EDischargeWh => v.e_discharge_wh = None,
        Quantity::VV => v.v_v = [None; 3],
        Quantity::IA => v.i_a = [None; 3],
    }
}

/// What a meter's track says at a moment.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one at a time, never stored
pub enum Due {
    /// The values of the messages of the window just closed, stamped with the last one's time.
    Reading {
        values: Values,
        ts: DateTime<Utc>,
        mono: Duration,
    },
    /// Nothing heard for longer than the meter's silence limit (since the agent started, or
    /// since the last message): a failed reading is due, `silent_for` long.
    Silent { silent_for: Duration },
}

/// One meter's messages and silence, on the monotonic clock. Pure.
#[derive(Debug, Clone)]
pub struct Track {
    period: Duration,
    started: Duration,
    window: Option<(Duration, Values, DateTime<Utc>, Duration)>,
    last_heard: Option<Duration>,
    last_failed: Option<Duration>,
}

impl Track {
    pub fn new(period: Duration, now: Duration) -> Track {
        Track {
            period,
            started: now,
            window: None,
            last_heard: None,
            last_failed: None,
        }
    }

    /// A message's values arrived at `now` (wall `ts`).
    pub fn heard(&mut self, v: &Values, now: Duration, ts: DateTime<Utc>) {
        self.last_heard = Some(now);
        self.last_failed = None;
        match &mut self.window {
            Some((_, acc, at, mono)) => {
                merge(acc, v);
                *at = ts;
                *mono = now;
            }
            None => {
                let mut acc = Values::default();
                merge(&mut acc, v);
                self.window = Some((now, acc, ts, now));
            }
        }
    }

    /// Whether a reading or a failed reading is due at `now`; at most one failed reading per
    /// period while the meter stays silent.
    pub fn due(&mut self, now: Duration) -> Option<Due> {
        if let Some((opened, _, _, _)) = &self.window {
            if now.saturating_sub(*opened) >= COALESCE {
                let (_, values, ts, mono) = self.window.take()?;
                return Some(Due::Reading { values, ts, mono });
            }
            return None;
        }
        let heard = self.last_heard.unwrap_or(self.started);
        let silent_for = now.saturating_sub(heard);
        if silent_for.as_secs_f64() <= SILENT_AFTER_PERIODS * self.period.as_secs_f64() {
            return None;
        }
        if self
            .last_failed
            .is_some_and(|f| now.saturating_sub(f) < self.period)
        {
            return None;
        }
        self.last_failed = Some(now);
        Some(Due::Silent { silent_for })
    }
}

/// Count of refused payloads since the last log line, and the last refusal.
#[derive(Debug, Default)]
struct Refused {
    count: u64,
    last: Option<String>,
}

struct Device {
    meter: MeterConfig,
    format: Format,
    topic: String,
    track: Track,
}

/// Subscribe to the devices of one `[[bus]] mqtt` and send their readings to `tx` until `stop`.
/// Meters without a known format or topic report why at their period.
pub fn spawn(
    bus: BusConfig,
    meters: Vec<MeterConfig>,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Polled>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(bus, meters, clock, tx, stop))
}

async fn run(
    bus: BusConfig,
    meters: Vec<MeterConfig>,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Polled>,
    mut stop: watch::Receiver<bool>,
) {
    let name = bus.name.get_ref().clone();
    let url = bus
        .mqtt
        .as_ref()
        .map(|u| u.get_ref().clone())
        .unwrap_or_default();
    let broker = match super::config::parse_mqtt_url(&url) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!("bus {name}: {e}");
            None
        }
    };
    let now = clock.mono();
    let mut devices: Vec<Device> = meters
        .into_iter()
        .map(|m| Device {
            format: Format::from_model(m.model.get_ref()).unwrap_or(Format::ShellyGen2),
            topic: m
                .topic
                .as_ref()
                .map(|t| t.get_ref().clone())
                .unwrap_or_default(),
            track: Track::new(expected_period(&m), now),
            meter: m,
        })
        .collect();
    // Topic filter → the devices it feeds (the filters are exact topics, no wildcards).
    let mut routes: HashMap<String, Vec<usize>> = HashMap::new();
    for (k, d) in devices.iter().enumerate() {
        for t in subscriptions(d.format, &d.topic) {
            routes.entry(t).or_default().push(k);
        }
    }
    let Some(broker) = broker else {
        // No broker to reach: the meters go silent and say so at their period.
        silent_until_stop(
            &mut devices,
            &name,
            "no valid broker URL",
            &clock,
            &tx,
            &mut stop,
        )
        .await;
        return;
    };
    let client_id = format!("socer-devices-{name}-{}", std::process::id());
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    o.set_clean_session(true);
    if let Some(u) = &bus.username {
        o.set_credentials(u.clone(), bus.password.clone().unwrap_or_default());
    }
    if broker.tls {
        o.set_transport(crate::tls::client_transport(None));
    }
    let (client, mut events) = AsyncClient::new(o, 64);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::from_millis(500);
    let mut broker_error: Option<String> = None;
    let mut refused = Refused::default();
    // The first refusal is logged at once, later ones at most once a minute.
    let mut last_log: Option<Duration> = None;
    loop {
        tokio::select! {
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(500);
                    if broker_error.take().is_some() {
                        tracing::info!("bus {name}: connected to {url}");
                    }
                    for t in routes.keys() {
                        if let Err(e) = client.try_subscribe(t.clone(), QoS::AtMostOnce) {
                            tracing::warn!("bus {name}: subscribe {t}: {e}");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // A retained message is of unknown age: never taken as a fresh reading.
                    if p.retain {
                        continue;
                    }
                    let Some(targets) = routes.get(p.topic.as_str()) else { continue };
                    let (mono, ts) = (clock.mono(), clock.now_utc());
                    for &k in targets {
                        let d = &mut devices[k];
                        match parse(d.format, &d.topic, &p.topic, &p.payload) {
                            Ok(Some(v)) => d.track.heard(&v, mono, ts),
                            Ok(None) => {}
                            Err(e) => {
                                refused.count += 1;
                                refused.last = Some(format!("{} on {}: {e}", d.meter.name(), p.topic));
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let msg = e.to_string();
                    if broker_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!("bus {name}: broker {url}: {msg}");
                    }
                    broker_error = Some(msg);
                    // rumqttc does not wait between attempts itself.
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => if *stop.borrow() { return },
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    if !emit_due(&mut devices, &name, broker_error.as_deref(), &clock, &tx).await {
                        return;
                    }
                }
            },
            _ = tick.tick() => {
                if !emit_due(&mut devices, &name, broker_error.as_deref(), &clock, &tx).await {
                    return;
                }
                let now = clock.mono();
                let quiet = last_log.is_some_and(|l| now.saturating_sub(l) < LOG_EVERY);
                if refused.count > 0 && !quiet {
                    tracing::warn!(
                        "bus {name}: {} device payload(s) refused since the last report (last: {})",
                        refused.count,
                        refused.last.as_deref().unwrap_or("?")
                    );
                    refused = Refused::default();
                    last_log = Some(now);
                }
            }
            _ = stop.changed() => {
                if *stop.borrow() {
                    let _ = client.try_disconnect();
                    return;
                }
            }
        }
    }
}

/// Send what is due for every device; false when the receiver is gone.
async fn emit_due(
    devices: &mut [Device],
    bus: &str,
    broker_error: Option<&str>,
    clock: &Arc<dyn Clock>,
    tx: &mpsc::Sender<Polled>,
) -> bool {
    let now = clock.mono();
    for d in devices.iter_mut() {
        let Some(due) = d.track.due(now) else {
            continue;
        };
        let polled = reading_of(d, bus, broker_error, due, clock);
        if tx.send(polled).await.is_err() {
            return false;
        }
    }
    true
}

async fn silent_until_stop(
    devices: &mut [Device],
    bus: &str,
    why: &str,
    clock: &Arc<dyn Clock>,
    tx: &mpsc::Sender<Polled>,
    stop: &mut watch::Receiver<bool>,
) {
    loop {
        if !emit_due(devices, bus, Some(why), clock, tx).await {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => if *stop.borrow() { return },
        }
    }
}

/// The reading (or failed reading) a track's verdict makes, with its error kind.
fn reading_of(
    d: &Device,
    bus: &str,
    broker_error: Option<&str>,
    due: Due,
    clock: &Arc<dyn Clock>,
) -> Polled {
    let name = d.meter.name().to_string();
    match due {
        Due::Reading {
            mut values,
            ts,
            mono,
        } => {
            let missing = screen(&mut values);
            let quality = if values.is_empty() {
                Quality::Failed
            } else if missing.is_empty() {
                Quality::Good
            } else {
                Quality::Partial
            };
            let kind = (!missing.is_empty()).then_some(ErrorKind::Implausible);
            let mut r = Reading {
                meter: name,
                ts,
                mono_ms: socer_drivers::clock::saturating_ms(mono),
                values,
                quality,
                missing,
                energy_integrated: false,
            };
            if d.meter.reverse {
                super::poll::apply_reverse(&mut r);
            }
            (r, Duration::ZERO, kind)
        }
        Due::Silent { silent_for } => {
            let topics = subscriptions(d.format, &d.topic).join(", ");
            let mut reason = format!(
                "bus {bus}: nothing published on {topics} for {} s",
                silent_for.as_secs()
            );
            if let Some(e) = broker_error {
                reason.push_str(&format!(" (broker: {e})"));
            }
            let r = Reading {
                meter: name,
                ts: clock.now_utc(),
                mono_ms: socer_drivers::clock::saturating_ms(clock.mono()),
                values: Values::default(),
                quality: Quality::Failed,
                missing: vec![Missing {
                    quantity: "all".into(),
                    reason,
                }],
                energy_integrated: false,
            };
            (r, Duration::ZERO, Some(ErrorKind::Timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A Shelly Pro 3EM's `EM.GetStatus` as the Gen2 API documentation shows it (values typed
    /// from its example response).
    const PRO3EM_EM: &str = r#"{"id":0,"a_current":4.029,"a_voltage":236.1,"a_act_power":951.2,
        "a_aprt_power":951.9,"a_pf":1,"b_current":4.027,"b_voltage":236.201,"b_act_power":-951.1,
        "b_aprt_power":951.8,"b_pf":1,"c_current":3.03,"c_voltage":236.402,"c_act_power":715.4,
        "c_aprt_power":716.2,"c_pf":1,"n_current":11.029,"total_current":11.083,
        "total_act_power":715.451,"total_aprt_power":2619.867}"#;
    /// `EMData.GetStatus` (Wh).
    const PRO3EM_EMDATA: &str = r#"{"id":0,"a_total_act_energy":2776175.19,
        "a_total_act_ret_energy":0,"b_total_act_energy":2779.76,"b_total_act_ret_energy":2771.55,
        "c_total_act_energy":2085.38,"c_total_act_ret_energy":0,"total_act":2781040.33,
        "total_act_ret":2771.55}"#;

    fn shelly(topic: &str, payload: &str) -> Result<Option<Values>, PayloadError> {
        parse(
            Format::ShellyGen2,
            "shellypro3em-home",
            topic,
            payload.as_bytes(),
        )
    }

    #[test]
    fn a_shelly_pro_3em_status_maps_power_phases_and_counters() {
        let v = shelly("shellypro3em-home/status/em:0", PRO3EM_EM)
            .unwrap()
            .unwrap();
        assert_eq!(v.p_w, Some(715.451));
        assert_eq!(v.v_v, [Some(236.1), Some(236.201), Some(236.402)]);
        assert_eq!(v.i_a, [Some(4.029), Some(4.027), Some(3.03)]);
        assert_eq!(v.e_imp_wh, None, "power and energy are separate components");
        let e = shelly("shellypro3em-home/status/emdata:0", PRO3EM_EMDATA)
            .unwrap()
            .unwrap();
        assert_eq!((e.e_imp_wh, e.e_exp_wh), (Some(2781040.33), Some(2771.55)));
        assert_eq!(e.p_w, None);
    }

    #[test]
    fn a_notify_status_carries_only_what_changed_and_other_methods_are_ignored() {
        let n = r#"{"src":"shellypro3em-home","dst":"shellypro3em-home/events","method":"NotifyStatus",
            "params":{"ts":1700000000.12,"em:0":{"id":0,"total_act_power":-1520.5,"a_voltage":231.4},
            "emdata:0":{"id":0,"total_act_ret":10500.25}}}"#;
        let v = shelly("shellypro3em-home/events/rpc", n).unwrap().unwrap();
        assert_eq!(
            v.p_w,
            Some(-1520.5),
            "returning to the grid: negative, as canonical"
        );
        assert_eq!(v.v_v, [Some(231.4), None, None]);
        assert_eq!((v.e_imp_wh, v.e_exp_wh), (None, Some(10500.25)));
        let ev = r#"{"src":"x","method":"NotifyEvent","params":{"ts":1,"events":[]}}"#;
        assert_eq!(shelly("shellypro3em-home/events/rpc", ev), Ok(None));
        let sw = r#"{"method":"NotifyStatus","params":{"ts":1,"switch:0":{"output":true}}}"#;
        assert_eq!(shelly("shellypro3em-home/events/rpc", sw), Ok(None));
        // Another device's topic carries nothing for this one.
        assert_eq!(shelly("shellyproem-other/status/em:0", PRO3EM_EM), Ok(None));
    }

    #[test]
    fn a_single_channel_shelly_maps_em1_and_em1data() {
        let em1 = r#"{"id":0,"current":22.78,"voltage":224.6,"act_power":5080.3,"aprt_power":5142.4,"pf":0.99,"freq":50.0,"calibration":"factory"}"#;
        let v = shelly("shellypro3em-home/status/em1:0", em1)
            .unwrap()
            .unwrap();
        assert_eq!(
            (v.p_w, v.v_v[0], v.i_a[0], v.pf, v.f_hz),
            (
                Some(5080.3),
                Some(224.6),
                Some(22.78),
                Some(0.99),
                Some(50.0)
            )
        );
        let d = r#"{"id":0,"total_act_energy":6644.90,"total_act_ret_energy":2595.26}"#;
        let v = shelly("shellypro3em-home/status/em1data:0", d)
            .unwrap()
            .unwrap();
        assert_eq!((v.e_imp_wh, v.e_exp_wh), (Some(6644.9), Some(2595.26)));
    }

    #[test]
    fn tasmota_sensor_telemetry_maps_kwh_counters_to_wh_and_phases_to_arrays() {
        let t = |payload: &str| {
            parse(
                Format::Tasmota,
                "pow-lavanderia",
                "tele/pow-lavanderia/SENSOR",
                payload.as_bytes(),
            )
        };
        let one = r#"{"Time":"2026-11-30T18:00:00","ENERGY":{"TotalStartTime":"2024-02-01T10:12:01",
            "Total":1234.567,"Yesterday":3.210,"Today":1.234,"Period":5,"Power":450,"ApparentPower":480,
            "ReactivePower":165,"Factor":0.94,"Voltage":229,"Current":2.096}}"#;
        let v = t(one).unwrap().unwrap();
        assert_eq!(
            v.e_imp_wh,
            Some(1_234_567.0),
            "Total is kWh; Today is never a counter"
        );
        assert_eq!(
            (v.p_w, v.pf, v.v_v[0], v.i_a[0]),
            (Some(450.0), Some(0.94), Some(229.0), Some(2.096))
        );
        assert_eq!(v.e_exp_wh, None);
        let three = r#"{"ENERGY":{"Total":[10.5,20.25,0.25],"ExportActive":[1.0,0,0.5],
            "Power":[100,-250,30],"Voltage":[230,231,232],"Current":[0.5,1.2,0.2],"Factor":[0.9,0.8,1],"Frequency":50}}"#;
        let v = t(three).unwrap().unwrap();
        assert_eq!(v.e_imp_wh, Some(31_000.0));
        assert_eq!(v.e_exp_wh, Some(1_500.0));
        assert_eq!(v.p_w, Some(-120.0));
        assert_eq!(v.v_v, [Some(230.0), Some(231.0), Some(232.0)]);
        assert_eq!((v.pf, v.f_hz), (None, Some(50.0)));
        assert_eq!(
            t(r#"{"Time":"x","DS18B20":{"Temperature":21.5}}"#),
            Ok(None)
        );
        assert!(matches!(t(r#"{"ENERGY":7}"#), Err(PayloadError::Shape(_))));
    }

    #[test]
    fn malformed_or_oversized_payloads_are_refused_with_a_reason() {
        assert!(matches!(
            shelly("shellypro3em-home/status/em:0", "{\"id\":"),
            Err(PayloadError::Json(_))
        ));
        assert!(matches!(
            shelly("shellypro3em-home/status/em:0", "[1,2]"),
            Err(PayloadError::Shape(_))
        ));
        assert!(matches!(
            shelly(
                "shellypro3em-home/events/rpc",
                r#"{"method":"NotifyStatus","params":3}"#
            ),
            Err(PayloadError::Shape(_))
        ));
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_PAYLOAD_BYTES));
        assert_eq!(
            shelly("shellypro3em-home/status/em:0", &big),
            Err(PayloadError::TooLarge(big.len()))
        );
        // A field of the wrong type is left out, the rest is kept.
        let v = shelly(
            "shellypro3em-home/status/em:0",
            r#"{"total_act_power":"lots","a_voltage":230.0}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((v.p_w, v.v_v[0]), (None, Some(230.0)));
    }

    #[test]
    fn impossible_values_are_taken_out_and_named() {
        let mut v = Values {
            p_w: Some(5e9),
            e_imp_wh: Some(1000.0),
            v_v: [Some(230.0), Some(-5.0), None],
            ..Values::default()
        };
        let m = screen(&mut v);
        assert_eq!((v.p_w, v.e_imp_wh), (None, Some(1000.0)));
        assert_eq!(v.v_v, [Some(230.0), None, None]);
        let names: Vec<&str> = m.iter().map(|m| m.quantity.as_str()).collect();
        assert_eq!(names, ["p_w", "v_v"]);
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn messages_within_a_second_make_one_reading_and_silence_makes_failed_ones() {
        let s = Duration::from_secs;
        let mut t = Track::new(s(10), s(100));
        assert_eq!(t.due(s(120)), None, "20 s of silence is within 3 periods");
        t.heard(
            &Values {
                p_w: Some(500.0),
                ..Values::default()
            },
            s(121),
            t0(),
        );
        t.heard(
            &Values {
                e_imp_wh: Some(42.0),
                ..Values::default()
            },
            Duration::from_millis(121_400),
            t0() + chrono::Duration::milliseconds(400),
        );
        assert_eq!(
            t.due(Duration::from_millis(121_500)),
            None,
            "the window is still open"
        );
        match t.due(Duration::from_millis(122_000)) {
            Some(Due::Reading { values, ts, mono }) => {
                assert_eq!((values.p_w, values.e_imp_wh), (Some(500.0), Some(42.0)));
                assert_eq!(ts, t0() + chrono::Duration::milliseconds(400));
                assert_eq!(mono, Duration::from_millis(121_400));
            }
            other => panic!("expected a reading, got {other:?}"),
        }
        assert_eq!(
            t.due(s(125)),
            None,
            "no reading without a message, and not silent yet"
        );
        // Silent for more than 3 × 10 s after the last message: one failed reading a period.
        assert_eq!(t.due(Duration::from_millis(151_400)), None);
        assert!(
            matches!(t.due(s(152)), Some(Due::Silent { silent_for }) if silent_for.as_millis() == 30_600)
        );
        assert_eq!(t.due(s(155)), None);
        assert!(matches!(t.due(s(162)), Some(Due::Silent { .. })));
        // It publishes again: readings resume, the silence is over.
        t.heard(
            &Values {
                p_w: Some(1.0),
                ..Values::default()
            },
            s(163),
            t0(),
        );
        assert!(matches!(t.due(s(164)), Some(Due::Reading { .. })));
        assert_eq!(t.due(s(170)), None);
    }

    #[test]
    fn a_meter_that_never_publishes_fails_after_three_periods_from_start() {
        let s = Duration::from_secs;
        let mut t = Track::new(s(60), s(0));
        assert_eq!(t.due(s(180)), None);
        assert!(matches!(t.due(s(181)), Some(Due::Silent { .. })));
    }

    #[test]
    fn subscriptions_name_the_documented_topics() {
        assert_eq!(subscriptions(Format::Tasmota, "pow1"), ["tele/pow1/SENSOR"]);
        let s = subscriptions(Format::ShellyGen2, "shellypro3em-a");
        assert!(s.contains(&"shellypro3em-a/events/rpc".to_string()));
        assert!(s.contains(&"shellypro3em-a/status/emdata:0".to_string()));
    }

    proptest! {
        #[test]
        fn no_payload_makes_the_mapping_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            shelly_json in "\\{\"method\":\"NotifyStatus\",\"params\":\\{\"em:0\":\\{\"total_act_power\":[-0-9.e]{0,12}\\}\\}\\}",
        ) {
            for f in [Format::ShellyGen2, Format::Tasmota] {
                for topic in ["d/events/rpc", "d/status/em:0", "tele/d/SENSOR", "d/status/emdata:0"] {
                    let _ = parse(f, "d", topic, &bytes);
                    let _ = parse(f, "d", topic, shelly_json.as_bytes());
                }
            }
        }
    }
}
