//! Home Assistant MQTT discovery for a building, fit for HA's Energy dashboard: power sensors,
//! one energy sensor per meter counter, role totals, the community's load-shift level and a
//! `binary_sensor` "community surplus".
//!
//! HA reads any decrease of a `total_increasing` sensor as a meter reset and books the new value
//! as fresh energy, so nothing published here may ever go down: each meter counter is published as
//! the highest value seen on its course ([`CounterTrack`]: a glitch or a lone spike is held, a
//! confirmed jump is bridged so the published counter carries on), and a role total only when
//! every meter of the role has a fresh counter. Opt-in (`[homeassistant]`). The payload builders
//! are pure; `spawn` only publishes them and re-announces when HA says `online`. It never writes
//! anything back to the meters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use socer_drivers::reading::Reading;

use super::config::{BrokerUrl, Role};
use super::web::{totals, MeterInfo};
use crate::wire::{Level, Signal};

/// `[homeassistant]` in the site config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// Announce the building to Home Assistant (off unless set).
    #[serde(default)]
    pub enabled: bool,
    /// The broker Home Assistant listens to: `mqtt://host:port`; the site's `[mqtt]` broker when
    /// absent.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_prefix")]
    pub discovery_prefix: String,
    /// How often states are published, seconds.
    #[serde(default = "default_every")]
    pub state_every_s: u64,
}

fn default_prefix() -> String {
    "homeassistant".into()
}
fn default_every() -> u64 {
    10
}

/// Topics of one building's Home Assistant device.
#[derive(Debug, Clone, PartialEq)]
pub struct HaTopics {
    pub prefix: String,
    pub site: String,
    /// `socer/{community}/{site}/ha`
    pub base: String,
}

impl HaTopics {
    pub fn new(prefix: &str, community: &str, site: &str) -> Self {
        HaTopics {
            prefix: prefix.to_string(),
            site: site.to_string(),
            base: format!("socer/{community}/{site}/ha"),
        }
    }
    /// Power, the level and the surplus flag (JSON).
    pub fn state(&self) -> String {
        format!("{}/state", self.base)
    }
    /// One energy counter (a plain number, kWh), published only when its value is known.
    pub fn energy(&self, field: &str) -> String {
        format!("{}/energy/{field}", self.base)
    }
    pub fn availability(&self) -> String {
        format!("{}/availability", self.base)
    }
    /// Home Assistant's birth and will topic.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.prefix)
    }
    fn node(&self) -> String {
        slug(&format!("socer_{}", self.site))
    }
    pub fn config(&self, component: &str, object: &str) -> String {
        format!(
            "{}/{component}/{}/{object}/config",
            self.prefix,
            self.node()
        )
    }
}

/// Lower-case letters, digits and `_`: what HA accepts in an entity id.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Which register of a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Register {
    Import,
    Export,
}

/// The counters a meter of this role contributes, with the role total's field and name.
fn counters_of(role: Role) -> &'static [(Register, &'static str, &'static str)] {
    match role {
        Role::Grid => &[
            (Register::Import, "grid_import_kwh", "Grid import"),
            (Register::Export, "grid_export_kwh", "Grid export"),
        ],
        Role::Production => &[(Register::Export, "production_kwh", "Energy produced")],
        Role::Consumption => &[(Register::Import, "consumption_kwh", "Energy consumed")],
        Role::Storage => &[
            (Register::Import, "storage_charge_kwh", "Battery charged"),
            (
                Register::Export,
                "storage_discharge_kwh",
                "Battery discharged",
            ),
        ],
    }
}

fn meter_field(meter: &str, register: Register) -> String {
    let r = match register {
        Register::Import => "import",
        Register::Export => "export",
    };
    format!("meter_{}_{r}_kwh", slug(meter))
}

/// The highest power a building meter can count, W: an increase beyond it over the time since the
/// last accepted value is off course (a misread or a replaced device), never energy.
pub const MAX_POWER_W: f64 = 2_000_000.0;

/// Readings in a row that must agree with each other before a counter that left its course is
/// taken as a real jump (a replacement, a wrapped register) rather than a glitch.
pub const CONFIRM_READINGS: u32 = 5;

/// One meter register as published to HA: never decreasing. `published_wh` = raw + `offset_wh`
/// while the counter is on course; a value off course (below what was published, or above it by
/// more than [`MAX_POWER_W`] could count) is held back; [`CONFIRM_READINGS`] consistent, growing
/// values off course move the offset so the published counter carries on from where it was
/// (the jump itself is never counted).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CounterTrack {
    pub published_wh: f64,
    pub offset_wh: f64,
    /// When the last value on course was read.
    #[serde(skip)]
    pub last_on_course: Option<DateTime<Utc>>,
    /// Off-course values in a row: (first raw, last raw, last time, count).
    #[serde(skip)]
    off: Option<(f64, f64, DateTime<Utc>, u32)>,
    #[serde(skip)]
    started: bool,
}

fn plausible_rise(rise_wh: f64, from: Option<DateTime<Utc>>, to: DateTime<Utc>) -> bool {
    let dt_h = from.map_or(0.0, |f| ((to - f).num_milliseconds().max(0) as f64) / 3.6e6);
    // A margin of half again, and 1 Wh for the registers' resolution.
    rise_wh <= MAX_POWER_W * dt_h * 1.5 + 1.0
}

impl CounterTrack {
    /// Take one raw counter value (Wh) read at `ts`; returns whether the published value changed
    /// course (the offset moved, worth keeping across restarts). Pure.
    pub fn observe(&mut self, raw_wh: f64, ts: DateTime<Utc>) -> bool {
        if !raw_wh.is_finite() || raw_wh < 0.0 {
            return false;
        }
        if !self.started {
            self.started = true;
            if self.published_wh == 0.0 && self.offset_wh == 0.0 {
                self.published_wh = raw_wh;
                self.last_on_course = Some(ts);
                return false;
            }
            // Restored from disk: the next value on course continues from there.
        }
        let v = raw_wh + self.offset_wh;
        let on_course = v >= self.published_wh
            && (self.last_on_course.is_none()
                || plausible_rise(v - self.published_wh, self.last_on_course, ts));
        if on_course {
            self.published_wh = v;
            self.last_on_course = Some(ts);
            self.off = None;
            return false;
        }
        self.off = match self.off {
            Some((first, last, at, n))
                if raw_wh >= last && plausible_rise(raw_wh - last, Some(at), ts) =>
            {
                Some((first, raw_wh, ts, n + 1))
            }
            _ => Some((raw_wh, raw_wh, ts, 1)),
        };
        if let Some((first, last, _, n)) = self.off {
            if n >= CONFIRM_READINGS && last > first {
                // A real jump: carry on from what was published, counting only the rise since.
                self.offset_wh = self.published_wh - first;
                self.published_wh = last + self.offset_wh;
                self.last_on_course = Some(ts);
                self.off = None;
                return true;
            }
        }
        false
    }
}

/// Every meter register's track, shared by the agent (which feeds every reading) and the HA
/// publisher. The offsets are kept in a small JSON file so that a restart never lowers what HA
/// was told.
#[derive(Debug, Default)]
pub struct CounterBook {
    tracks: Mutex<BTreeMap<(String, Register), CounterTrack>>,
    file: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct SavedTrack {
    meter: String,
    register: Register,
    #[serde(flatten)]
    track: CounterTrack,
}

impl CounterBook {
    /// A book kept in `file` (read now if it exists; an unreadable file starts afresh, logged).
    pub fn load(file: Option<PathBuf>) -> CounterBook {
        let mut tracks = BTreeMap::new();
        if let Some(f) = &file {
            match std::fs::read_to_string(f) {
                Ok(text) => match serde_json::from_str::<Vec<SavedTrack>>(&text) {
                    Ok(saved) => {
                        for s in saved {
                            tracks.insert((s.meter, s.register), s.track);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("{}: {e}; Home Assistant counters start afresh", f.display())
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("{}: {e}", f.display()),
            }
        }
        CounterBook {
            tracks: Mutex::new(tracks),
            file,
        }
    }

    /// Feed one reading of a meter with this role.
    pub fn observe(&self, role: Role, r: &Reading) {
        let changed = {
            let Ok(mut g) = self.tracks.lock() else {
                return;
            };
            let mut changed = false;
            for (register, _, _) in counters_of(role) {
                let raw = match register {
                    Register::Import => r.values.e_imp_wh,
                    Register::Export => r.values.e_exp_wh,
                };
                if let Some(raw) = raw {
                    changed |= g
                        .entry((r.meter.clone(), *register))
                        .or_default()
                        .observe(raw, r.ts);
                }
            }
            changed.then(|| {
                g.iter()
                    .map(|((meter, register), t)| SavedTrack {
                        meter: meter.clone(),
                        register: *register,
                        track: t.clone(),
                    })
                    .collect::<Vec<_>>()
            })
        };
        if let (Some(saved), Some(f)) = (changed, &self.file) {
            let tmp = f.with_extension("tmp");
            let text = serde_json::to_string(&saved).unwrap_or_default();
            if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, f)) {
                tracing::warn!("{}: {e}", f.display());
            }
        }
    }

    fn snapshot(&self) -> BTreeMap<(String, Register), CounterTrack> {
        self.tracks.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// The energy values to publish at `now`, field → kWh: every meter register seen so far, and
/// each role total whose meters all have a counter on course read within three counter intervals.
pub fn energy(
    meters: &[MeterInfo],
    book: &CounterBook,
    now: DateTime<Utc>,
) -> BTreeMap<String, f64> {
    let tracks = book.snapshot();
    let mut out = BTreeMap::new();
    let kwh = |wh: f64| (wh / 1000.0 * 1000.0).round() / 1000.0;
    for m in meters {
        for (register, _, _) in counters_of(m.role) {
            if let Some(t) = tracks.get(&(m.name.clone(), *register)) {
                out.insert(meter_field(&m.name, *register), kwh(t.published_wh));
            }
        }
    }
    for role in [
        Role::Grid,
        Role::Production,
        Role::Consumption,
        Role::Storage,
    ] {
        let of_role: Vec<&MeterInfo> = meters.iter().filter(|m| m.role == role).collect();
        if of_role.is_empty() {
            continue;
        }
        for (register, field, _) in counters_of(role) {
            let mut sum = 0.0;
            let all_fresh = of_role.iter().all(|m| {
                let limit = chrono::Duration::milliseconds(
                    (super::poll::SILENT_AFTER_INTERVALS * m.counter_interval_s.max(1.0) * 1000.0)
                        as i64,
                );
                match tracks.get(&(m.name.clone(), *register)) {
                    Some(t) if t.last_on_course.is_some_and(|at| now - at <= limit) => {
                        sum += t.published_wh;
                        true
                    }
                    _ => false,
                }
            });
            if all_fresh {
                out.insert((*field).to_string(), kwh(sum));
            }
        }
    }
    out
}

struct Entity {
    component: &'static str,
    object: String,
    name: String,
    /// The JSON state's field (power, level) or, for energy, the field of its own topic.
    field: String,
    unit: Option<&'static str>,
    device_class: Option<&'static str>,
    state_class: Option<&'static str>,
    energy: bool,
}

fn power(object: &str, name: &str, field: &str) -> Entity {
    Entity {
        component: "sensor",
        object: object.into(),
        name: name.into(),
        field: field.into(),
        unit: Some("W"),
        device_class: Some("power"),
        state_class: Some("measurement"),
        energy: false,
    }
}

fn energy_entity(object: String, name: String, field: String) -> Entity {
    Entity {
        component: "sensor",
        object,
        name,
        field,
        unit: Some("kWh"),
        device_class: Some("energy"),
        state_class: Some("total_increasing"),
        energy: true,
    }
}

/// The entities of a building with these meters: power always; a role's power and totals where a
/// meter of that role measures them; one energy sensor per meter register.
fn entities(meters: &[MeterInfo]) -> Vec<Entity> {
    let has = |r: Role| meters.iter().any(|m| m.role == r);
    let mut e = vec![
        power("building_power", "Building power", "building_load_w"),
        power("production_power", "Production", "production_w"),
        power("consumption_power", "Consumption", "consumption_w"),
        power("grid_power", "Grid exchange", "grid_w"),
    ];
    if has(Role::Storage) {
        e.push(power("storage_power", "Battery power", "storage_w"));
    }
    for role in [
        Role::Grid,
        Role::Production,
        Role::Consumption,
        Role::Storage,
    ] {
        if !has(role) {
            continue;
        }
        for (_, field, name) in counters_of(role) {
            let object = field.trim_end_matches("_kwh").to_string();
            e.push(energy_entity(object, (*name).into(), (*field).into()));
        }
    }
    for m in meters {
        for (register, _, name) in counters_of(m.role) {
            let field = meter_field(&m.name, *register);
            e.push(energy_entity(
                field.trim_end_matches("_kwh").to_string(),
                format!("{name} ({})", m.name),
                field,
            ));
        }
    }
    e.push(Entity {
        component: "sensor",
        object: "community_level".into(),
        name: "Community level".into(),
        field: "community_level".into(),
        unit: None,
        device_class: Some("enum"),
        state_class: None,
        energy: false,
    });
    e.push(Entity {
        component: "sensor",
        object: "community_surplus_power".into(),
        name: "Community surplus".into(),
        field: "community_surplus_kw".into(),
        unit: Some("kW"),
        device_class: Some("power"),
        state_class: Some("measurement"),
        energy: false,
    });
    e
}

/// Who publishes the discovery messages (HA's `origin` block).
fn origin() -> Value {
    json!({
        "name": "socer",
        "sw_version": env!("CARGO_PKG_VERSION"),
    })
}

/// Every discovery message (retained config topic, JSON payload) of the building.
pub fn discovery(t: &HaTopics, name: &str, meters: &[MeterInfo]) -> Vec<(String, Value)> {
    let device = json!({
        "identifiers": [format!("socer-{}", t.site)],
        "name": if name.is_empty() { format!("socer {}", t.site) } else { name.to_string() },
        "manufacturer": "socer",
        "model": "site agent",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let mut out: Vec<(String, Value)> = entities(meters)
        .into_iter()
        .map(|e| {
            let id = format!("{}_{}", t.node(), e.object);
            let mut c = json!({
                "name": e.name,
                "unique_id": id,
                "default_entity_id": format!("{}.{id}", e.component),
                "availability_topic": t.availability(),
                "device": device.clone(),
                "origin": origin(),
            });
            if e.energy {
                c["state_topic"] = json!(t.energy(&e.field));
            } else {
                c["state_topic"] = json!(t.state());
                c["value_template"] = json!(format!("{{{{ value_json.{} }}}}", e.field));
            }
            if let Some(u) = e.unit {
                c["unit_of_measurement"] = json!(u);
            }
            if let Some(d) = e.device_class {
                c["device_class"] = json!(d);
            }
            if let Some(s) = e.state_class {
                c["state_class"] = json!(s);
            }
            if e.object == "community_level" {
                c["options"] = json!(["green", "yellow", "red"]);
            }
            (t.config(e.component, &e.object), c)
        })
        .collect();
    let id = format!("{}_community_surplus", t.node());
    out.push((
        t.config("binary_sensor", "community_surplus"),
        json!({
            "name": "Community surplus",
            "unique_id": id,
            "default_entity_id": format!("binary_sensor.{id}"),
            "state_topic": t.state(),
            "availability_topic": t.availability(),
            "value_template": "{{ value_json.community_surplus }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "power",
            "device": device,
            "origin": origin(),
        }),
    ));
    out
}

/// The JSON state message: the building's power figures and the community's signal.
pub fn state(
    meters: &[MeterInfo],
    latest: &BTreeMap<String, Reading>,
    signal: Option<&Signal>,
) -> Value {
    let t = totals(meters, latest);
    let mut v = json!({
        "building_load_w": t.building_load_w,
        "production_w": t.production_w,
        "consumption_w": t.consumption_w,
        "grid_w": t.grid_w,
        "storage_w": t.storage_w,
    });
    if let Some(s) = signal {
        let level = match s.community.level {
            Level::Green => "green",
            Level::Yellow => "yellow",
            Level::Red => "red",
        };
        v["community_level"] = json!(level);
        v["community_surplus_kw"] = json!(s.community.surplus_kw);
        v["community_surplus"] = json!(if s.community.level == Level::Green {
            "ON"
        } else {
            "OFF"
        });
    }
    v
}

/// Every state message of one tick: (topic, payload) — the JSON state, then each known counter.
pub fn messages(
    t: &HaTopics,
    meters: &[MeterInfo],
    latest: &BTreeMap<String, Reading>,
    signal: Option<&Signal>,
    book: &CounterBook,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let mut out = vec![(t.state(), state(meters, latest, signal).to_string())];
    for (field, kwh) in energy(meters, book, now) {
        out.push((t.energy(&field), format!("{kwh}")));
    }
    out
}

/// What `spawn` needs from the agent.
pub struct HaLink {
    pub broker: BrokerUrl,
    /// Its MQTT client id ([`crate::instance::client_id`], role `ha`).
    pub client_id: String,
    pub ca_pem: Option<Vec<u8>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub topics: HaTopics,
    pub state_every: Duration,
    /// Discovery messages (built once: the meters do not change while the agent runs).
    pub discovery: Vec<(String, Value)>,
    /// The state messages of this moment: (topic, payload), see [`messages`].
    pub state: Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>,
}

/// Announce the building, keep its state fresh, re-announce when Home Assistant comes online.
pub fn spawn(link: HaLink, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let mut o = MqttOptions::new(
        link.client_id.clone(),
        link.broker.host.clone(),
        link.broker.port,
    );
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    if let Some(u) = &link.username {
        o.set_credentials(u.clone(), link.password.clone().unwrap_or_default());
    }
    o.set_last_will(LastWill::new(
        link.topics.availability(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if link.broker.tls {
        o.set_transport(crate::tls::client_transport(link.ca_pem.as_deref()));
    }
    let (client, mut events) = AsyncClient::new(o, 256);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(link.state_every);
        let mut backoff = Duration::from_millis(500);
        let mut connected = false;
        loop {
            tokio::select! {
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        backoff = Duration::from_millis(500);
                        let _ = client.subscribe(link.topics.ha_status(), QoS::AtLeastOnce).await;
                        announce(&client, &link).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == link.topics.ha_status() => {
                        if p.payload.as_ref() == b"online" {
                            tracing::info!("Home Assistant is online: announcing again");
                            announce(&client, &link).await;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            tracing::warn!("Home Assistant broker: {e}");
                        }
                        connected = false;
                        // Jittered, and capped like the uplink's: back within seconds.
                        let jitter = backoff.mul_f64(rand::random::<f64>());
                        tokio::time::sleep(backoff + jitter).await;
                        backoff = (backoff * 2).min(crate::mqttlink::MAX_BACKOFF);
                    }
                },
                _ = tick.tick() => {
                    if connected {
                        for (topic, body) in (link.state)() {
                            let _ = client.try_publish(topic, QoS::AtMostOnce, false, body);
                        }
                    }
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        if connected {
                            let _ = client.publish(link.topics.availability(), QoS::AtLeastOnce, true, "offline").await;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            let _ = client.disconnect().await;
                        }
                        return;
                    }
                }
            }
        }
    })
}

async fn announce(client: &AsyncClient, link: &HaLink) {
    for (topic, payload) in &link.discovery {
        if let Err(e) =
            client.try_publish(topic.clone(), QoS::AtLeastOnce, true, payload.to_string())
        {
            tracing::warn!("discovery {topic}: {e}");
        }
    }
    let _ = client.try_publish(link.topics.availability(), QoS::AtLeastOnce, true, "online");
    for (topic, body) in (link.state)() {
        let _ = client.try_publish(topic, QoS::AtMostOnce, false, body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ZoneSignal;
    use proptest::prelude::*;
    use socer_drivers::reading::{Quality, Values};

    fn info(name: &str, role: Role) -> MeterInfo {
        MeterInfo {
            name: name.into(),
            model: "eastron-sdm630".into(),
            role,
            pod: None,
            bus: "lan".into(),
            unit: 1,
            endpoint: "tcp 127.0.0.1:502".into(),
            interval_s: 5.0,
            counter_interval_s: 60.0,
        }
    }

    fn meters() -> Vec<MeterInfo> {
        vec![info("grid", Role::Grid), info("pv", Role::Production)]
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn at(s: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(s)
    }

    fn reading(
        meter: &str,
        ts: DateTime<Utc>,
        p_w: f64,
        imp: Option<f64>,
        exp: Option<f64>,
    ) -> Reading {
        Reading {
            meter: meter.into(),
            values: Values {
                p_w: Some(p_w),
                e_imp_wh: imp,
                e_exp_wh: exp,
                ..Values::default()
            },
            quality: Quality::Good,
            ts,
            mono_ms: 0,
            missing: vec![],
            energy_integrated: false,
        }
    }

    #[test]
    fn home_assistant_is_off_unless_enabled_and_defaults_to_the_usual_prefix() {
        let c: HomeAssistantConfig = toml::from_str("enabled = true").unwrap();
        assert!(c.enabled);
        assert_eq!(
            (c.discovery_prefix.as_str(), c.state_every_s),
            ("homeassistant", 10)
        );
        assert_eq!(c.url, None);
        assert!(!toml::from_str::<HomeAssistantConfig>("").unwrap().enabled);
        assert!(toml::from_str::<HomeAssistantConfig>("enable = true").is_err());
    }

    #[test]
    fn discovery_announces_power_each_meter_counter_role_totals_level_and_surplus() {
        let t = HaTopics::new("homeassistant", "socer", "domus-1");
        let ms = vec![
            info("grid", Role::Grid),
            info("pv-east", Role::Production),
            info("pv-west", Role::Production),
            info("battery", Role::Storage),
        ];
        let d = discovery(&t, "Condominio Domus 1", &ms);
        let topics: Vec<&str> = d.iter().map(|(t, _)| t.as_str()).collect();
        for want in [
            "homeassistant/sensor/socer_domus_1/building_power/config",
            "homeassistant/sensor/socer_domus_1/grid_import/config",
            "homeassistant/sensor/socer_domus_1/production/config",
            "homeassistant/sensor/socer_domus_1/meter_pv_east_export/config",
            "homeassistant/sensor/socer_domus_1/meter_pv_west_export/config",
            "homeassistant/sensor/socer_domus_1/meter_grid_import/config",
            "homeassistant/sensor/socer_domus_1/storage_power/config",
            "homeassistant/sensor/socer_domus_1/storage_charge/config",
            "homeassistant/sensor/socer_domus_1/storage_discharge/config",
            "homeassistant/sensor/socer_domus_1/meter_battery_import/config",
            "homeassistant/sensor/socer_domus_1/community_level/config",
            "homeassistant/binary_sensor/socer_domus_1/community_surplus/config",
        ] {
            assert!(topics.contains(&want), "{want} missing from {topics:#?}");
        }
        // No consumption meter: no consumption counter.
        assert!(!topics
            .iter()
            .any(|t| t.contains("consumption_energy") || t.contains("/consumption/")));
        let (_, pv) = d.iter().find(|(t, _)| t.contains("/production/")).unwrap();
        assert_eq!(pv["device_class"], "energy");
        assert_eq!(pv["state_class"], "total_increasing");
        assert_eq!(pv["unit_of_measurement"], "kWh");
        assert_eq!(
            pv["state_topic"],
            "socer/socer/domus-1/ha/energy/production_kwh"
        );
        assert!(
            pv.get("value_template").is_none(),
            "a plain number on its own topic"
        );
        assert_eq!(pv["default_entity_id"], "sensor.socer_domus_1_production");
        assert_eq!(pv["device"]["identifiers"][0], "socer-domus-1");
        let (_, one) = d
            .iter()
            .find(|(t, _)| t.contains("meter_pv_west_export"))
            .unwrap();
        assert_eq!(
            one["state_topic"],
            "socer/socer/domus-1/ha/energy/meter_pv_west_export_kwh"
        );
        assert_eq!(one["state_class"], "total_increasing");
        let (_, p) = d
            .iter()
            .find(|(t, _)| t.contains("building_power"))
            .unwrap();
        assert_eq!(p["value_template"], "{{ value_json.building_load_w }}");
        for (topic, c) in &d {
            assert!(
                c.get("object_id").is_none(),
                "{topic}: object_id is deprecated"
            );
            assert_eq!(c["origin"]["name"], "socer", "{topic}");
            let component = topic.split('/').nth(1).unwrap();
            assert_eq!(
                c["default_entity_id"].as_str().unwrap(),
                format!("{component}.{}", c["unique_id"].as_str().unwrap()),
                "{topic}"
            );
        }
        let ids: std::collections::HashSet<&str> = d
            .iter()
            .map(|(_, c)| c["unique_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), d.len(), "unique ids are unique");
    }

    #[test]
    fn state_carries_power_and_the_community_level() {
        let latest = BTreeMap::from([
            (
                "grid".to_string(),
                reading("grid", t0(), -1500.0, Some(120_000.0), Some(45_500.0)),
            ),
            (
                "pv".to_string(),
                reading("pv", t0(), -4000.0, Some(0.0), Some(300_000.0)),
            ),
        ]);
        let signal = Signal {
            ts: t0(),
            community: ZoneSignal {
                zone: "socer".into(),
                level: Level::Green,
                openadr_level: 0,
                surplus_kw: 12.5,
                production_kw: 40.0,
                consumption_kw: 27.5,
                since: t0(),
            },
            substations: vec![],
            forecast: vec![],
        };
        let s = state(&meters(), &latest, Some(&signal));
        assert_eq!(s["production_w"], 4000.0);
        assert_eq!(s["building_load_w"], 2500.0);
        assert_eq!(s["community_level"], "green");
        assert_eq!(s["community_surplus"], "ON");
        assert_eq!(s["community_surplus_kw"], 12.5);
        let none = state(&meters(), &BTreeMap::new(), None);
        assert!(none.get("community_level").is_none());
    }

    #[test]
    fn two_pv_meters_total_only_when_both_have_a_fresh_counter_and_never_decreases() {
        // What HA was once told: 62,993 → 125,987 → absent → 62,993 kWh, because the sum ran only
        // over the meters whose latest reading held a counter.
        let ms = vec![info("pv1", Role::Production), info("pv2", Role::Production)];
        let book = CounterBook::default();
        let mut shown = Vec::new();
        // pv2's counter is read every 60 s; its fast readings in between carry no counter.
        let steps: [(i64, Option<f64>, Option<f64>); 6] = [
            (0, Some(62_993_000.0), None),
            (5, Some(62_993_010.0), Some(62_994_000.0)),
            (10, Some(62_993_020.0), None),
            (300, Some(62_993_500.0), None), // pv2 silent for 5 minutes
            (305, Some(62_993_510.0), Some(62_994_400.0)),
            (310, None, Some(62_994_410.0)),
        ];
        for (s, a, b) in steps {
            book.observe(Role::Production, &reading("pv1", at(s), -1.0, None, a));
            book.observe(Role::Production, &reading("pv2", at(s), -1.0, None, b));
            shown.push(energy(&ms, &book, at(s)).get("production_kwh").copied());
        }
        assert_eq!(shown[0], None, "pv2 never read yet: no total");
        assert_eq!(shown[1], Some(125_987.01));
        assert_eq!(
            shown[2],
            Some(125_987.02),
            "pv2's counter of 5 s ago is fresh"
        );
        assert_eq!(
            shown[3], None,
            "pv2's counter is 295 s old: no total, not pv1 alone"
        );
        assert_eq!(shown[4], Some(125_987.91));
        assert_eq!(
            shown[5],
            Some(125_987.92),
            "pv1's counter of 5 s ago still counts"
        );
        let got: Vec<f64> = shown.iter().flatten().copied().collect();
        assert!(got.windows(2).all(|w| w[1] >= w[0]), "{got:?}");
        // Each meter has its own sensor all along.
        let e = energy(&ms, &book, at(310));
        assert_eq!(e["meter_pv1_export_kwh"], 62_993.51);
        assert_eq!(e["meter_pv2_export_kwh"], 62_994.41);
    }

    #[test]
    fn a_counter_glitch_is_held_a_spike_is_refused_and_a_real_jump_is_bridged() {
        let mut t = CounterTrack::default();
        t.observe(1_000_000.0, at(0));
        t.observe(1_000_010.0, at(10));
        // A device rebooting answers zeroed registers for a while, then its old course.
        for i in 0..8 {
            t.observe(0.0, at(20 + i * 10));
            assert_eq!(t.published_wh, 1_000_010.0);
        }
        t.observe(1_000_030.0, at(110));
        assert_eq!((t.published_wh, t.offset_wh), (1_000_030.0, 0.0));
        // A lone spike (100 MWh in 10 s) is not energy.
        t.observe(101_000_000.0, at(120));
        assert_eq!(t.published_wh, 1_000_030.0);
        t.observe(1_000_040.0, at(130));
        assert_eq!(t.published_wh, 1_000_040.0);
        // A replacement meter starting at 5,000 Wh and counting on: bridged after it is confirmed,
        // counting only what the new meter counted.
        for i in 0..CONFIRM_READINGS {
            t.observe(5_000.0 + f64::from(i) * 10.0, at(140 + i64::from(i) * 10));
        }
        assert_eq!(t.published_wh, 1_000_040.0 + 40.0);
        t.observe(5_100.0, at(200));
        assert_eq!(t.published_wh, 1_000_140.0);
    }

    #[test]
    fn offsets_survive_a_restart_so_ha_is_never_told_less() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ha-counters.json");
        let book = CounterBook::load(Some(file.clone()));
        let mut wh = 9_000_000.0;
        book.observe(
            Role::Production,
            &reading("pv", at(0), -1.0, None, Some(wh)),
        );
        for i in 0..CONFIRM_READINGS {
            wh = 100.0 + f64::from(i);
            book.observe(
                Role::Production,
                &reading("pv", at(10 + i64::from(i)), -1.0, None, Some(wh)),
            );
        }
        let before = energy(&[info("pv", Role::Production)], &book, at(20))["meter_pv_export_kwh"];
        assert!(before >= 9_000.0, "{before}");
        let again = CounterBook::load(Some(file));
        again.observe(
            Role::Production,
            &reading("pv", at(30), -1.0, None, Some(wh + 1.0)),
        );
        let after = energy(&[info("pv", Role::Production)], &again, at(30))["meter_pv_export_kwh"];
        assert!(after >= before, "{after} < {before}");
    }

    proptest! {
        // No sequence of raw counters makes the published counter go down, or rise faster than
        // a building meter could count.
        #[test]
        fn the_published_counter_never_decreases_nor_outruns_max_power(
            steps in proptest::collection::vec((0u32..4, 0.0f64..2.0e9, 1i64..120), 1..60)
        ) {
            let mut t = CounterTrack::default();
            let mut last = None::<f64>;
            let mut now = 0i64;
            let mut base = None::<(f64, i64)>;
            let mut n = 0.0;
            for (kind, v, dt) in steps {
                now += dt;
                // Mostly small steady rises, with drops to 0, spikes and jumps mixed in.
                let raw = match kind {
                    0 => t.published_wh - t.offset_wh + (v % 500.0),
                    1 => 0.0,
                    2 => v,
                    _ => (t.published_wh - t.offset_wh - v).max(0.0),
                };
                t.observe(raw, at(now));
                n += 1.0;
                let (b, since) = *base.get_or_insert((t.published_wh, now));
                if let Some(l) = last {
                    prop_assert!(t.published_wh >= l);
                }
                let bound = MAX_POWER_W * 1.5 * ((now - since) as f64) / 3600.0 + n;
                prop_assert!(t.published_wh - b <= bound, "{} over {}", t.published_wh - b, bound);
                last = Some(t.published_wh);
            }
        }
    }
}
