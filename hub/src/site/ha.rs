//! Home Assistant MQTT discovery for a building: sensors for power, production, consumption, the
//! energy counters and the community's load-shift level, and a `binary_sensor` "community surplus".
//!
//! Opt-in (`[homeassistant]`). The payload builders are pure; `spawn` only publishes them and
//! re-announces when Home Assistant says `online`. It never writes anything back to the meters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::Deserialize;
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
    pub fn state(&self) -> String {
        format!("{}/state", self.base)
    }
    pub fn availability(&self) -> String {
        format!("{}/availability", self.base)
    }
    /// Home Assistant's birth and will topic.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.prefix)
    }
    fn node(&self) -> String {
        format!("socer_{}", self.site.replace('-', "_"))
    }
    pub fn config(&self, component: &str, object: &str) -> String {
        format!(
            "{}/{component}/{}/{object}/config",
            self.prefix,
            self.node()
        )
    }
}

struct Entity {
    component: &'static str,
    object: &'static str,
    name: &'static str,
    field: &'static str,
    unit: Option<&'static str>,
    device_class: Option<&'static str>,
    state_class: Option<&'static str>,
}

const fn power(object: &'static str, name: &'static str, field: &'static str) -> Entity {
    Entity {
        component: "sensor",
        object,
        name,
        field,
        unit: Some("W"),
        device_class: Some("power"),
        state_class: Some("measurement"),
    }
}

const fn energy(object: &'static str, name: &'static str, field: &'static str) -> Entity {
    Entity {
        component: "sensor",
        object,
        name,
        field,
        unit: Some("kWh"),
        device_class: Some("energy"),
        state_class: Some("total_increasing"),
    }
}

/// The entities of a building with these meters: power always; an energy counter only where a
/// meter of the right role measures it.
fn entities(meters: &[MeterInfo]) -> Vec<Entity> {
    let has = |r: Role| meters.iter().any(|m| m.role == r);
    let mut e = vec![
        power("building_power", "Building power", "building_load_w"),
        power("production_power", "Production", "production_w"),
        power("consumption_power", "Consumption", "consumption_w"),
        power("grid_power", "Grid exchange", "grid_w"),
    ];
    if has(Role::Grid) {
        e.push(energy("grid_import", "Grid import", "grid_import_kwh"));
        e.push(energy("grid_export", "Grid export", "grid_export_kwh"));
    }
    if has(Role::Production) {
        e.push(energy(
            "production_energy",
            "Energy produced",
            "production_kwh",
        ));
    }
    if has(Role::Consumption) {
        e.push(energy(
            "consumption_energy",
            "Energy consumed",
            "consumption_kwh",
        ));
    }
    e.push(Entity {
        component: "sensor",
        object: "community_level",
        name: "Community level",
        field: "community_level",
        unit: None,
        device_class: Some("enum"),
        state_class: None,
    });
    e.push(Entity {
        component: "sensor",
        object: "community_surplus_power",
        name: "Community surplus",
        field: "community_surplus_kw",
        unit: Some("kW"),
        device_class: Some("power"),
        state_class: Some("measurement"),
    });
    e
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
            let mut c = json!({
                "name": e.name,
                "unique_id": format!("{}_{}", t.node(), e.object),
                "object_id": format!("{}_{}", t.node(), e.object),
                "state_topic": t.state(),
                "availability_topic": t.availability(),
                "value_template": format!("{{{{ value_json.{} }}}}", e.field),
                "device": device.clone(),
            });
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
            (t.config(e.component, e.object), c)
        })
        .collect();
    out.push((
        t.config("binary_sensor", "community_surplus"),
        json!({
            "name": "Community surplus",
            "unique_id": format!("{}_community_surplus", t.node()),
            "object_id": format!("{}_community_surplus", t.node()),
            "state_topic": t.state(),
            "availability_topic": t.availability(),
            "value_template": "{{ value_json.community_surplus }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "power",
            "device": device,
        }),
    ));
    out
}

/// The state message: the building's totals, its counters (kWh) and the community's signal.
pub fn state(
    meters: &[MeterInfo],
    latest: &BTreeMap<String, Reading>,
    signal: Option<&Signal>,
) -> Value {
    let t = totals(meters, latest);
    let mut counters: BTreeMap<&str, f64> = BTreeMap::new();
    for m in meters {
        let Some(r) = latest.get(&m.name) else {
            continue;
        };
        let (imp, exp) = (r.values.e_imp_wh, r.values.e_exp_wh);
        let mut add = |k: &'static str, wh: Option<f64>| {
            if let Some(wh) = wh {
                *counters.entry(k).or_default() += wh / 1000.0;
            }
        };
        match m.role {
            Role::Grid => {
                add("grid_import_kwh", imp);
                add("grid_export_kwh", exp);
            }
            Role::Production => add("production_kwh", exp),
            Role::Consumption => add("consumption_kwh", imp),
            Role::Storage => {}
        }
    }
    let mut v = json!({
        "building_load_w": t.building_load_w,
        "production_w": t.production_w,
        "consumption_w": t.consumption_w,
        "grid_w": t.grid_w,
    });
    for (k, kwh) in counters {
        v[k] = json!((kwh * 1000.0).round() / 1000.0);
    }
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

/// What `spawn` needs from the agent.
pub struct HaLink {
    pub broker: BrokerUrl,
    pub ca_pem: Option<Vec<u8>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub topics: HaTopics,
    pub state_every: Duration,
    /// Discovery messages (built once: the meters do not change while the agent runs).
    pub discovery: Vec<(String, Value)>,
    /// The current state message.
    pub state: Arc<dyn Fn() -> Value + Send + Sync>,
}

/// Announce the building, keep its state fresh, re-announce when Home Assistant comes online.
pub fn spawn(link: HaLink, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let id = format!("socer-ha-{}-{}", link.topics.site, std::process::id());
    let mut o = MqttOptions::new(id, link.broker.host.clone(), link.broker.port);
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
    let (client, mut events) = AsyncClient::new(o, 64);
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
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                },
                _ = tick.tick() => {
                    if connected {
                        let body = (link.state)().to_string();
                        let _ = client.try_publish(link.topics.state(), QoS::AtMostOnce, false, body);
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
    let _ = client.try_publish(
        link.topics.state(),
        QoS::AtMostOnce,
        false,
        (link.state)().to_string(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ZoneSignal;
    use socer_drivers::reading::{Quality, Values};

    fn meters() -> Vec<MeterInfo> {
        let m = |name: &str, role| MeterInfo {
            name: name.into(),
            model: "eastron-sdm630".into(),
            role,
            pod: None,
            bus: "lan".into(),
            unit: 1,
        };
        vec![m("grid", Role::Grid), m("pv", Role::Production)]
    }

    fn reading(meter: &str, p_w: f64, imp: f64, exp: f64) -> Reading {
        Reading {
            meter: meter.into(),
            values: Values {
                p_w: Some(p_w),
                e_imp_wh: Some(imp),
                e_exp_wh: Some(exp),
                ..Values::default()
            },
            quality: Quality::Good,
            ts: chrono::DateTime::UNIX_EPOCH,
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
    fn discovery_announces_power_counters_level_and_the_surplus_binary_sensor() {
        let t = HaTopics::new("homeassistant", "socer", "domus-1");
        let d = discovery(&t, "Condominio Domus 1", &meters());
        let topics: Vec<&str> = d.iter().map(|(t, _)| t.as_str()).collect();
        assert!(topics.contains(&"homeassistant/sensor/socer_domus_1/building_power/config"));
        assert!(topics.contains(&"homeassistant/sensor/socer_domus_1/grid_import/config"));
        assert!(topics.contains(&"homeassistant/sensor/socer_domus_1/production_energy/config"));
        assert!(topics.contains(&"homeassistant/sensor/socer_domus_1/community_level/config"));
        assert!(
            topics.contains(&"homeassistant/binary_sensor/socer_domus_1/community_surplus/config")
        );
        // No consumption meter: no consumption counter.
        assert!(!topics.iter().any(|t| t.contains("consumption_energy")));
        let (_, imp) = d.iter().find(|(t, _)| t.contains("grid_import")).unwrap();
        assert_eq!(imp["device_class"], "energy");
        assert_eq!(imp["state_class"], "total_increasing");
        assert_eq!(imp["unit_of_measurement"], "kWh");
        assert_eq!(imp["state_topic"], "socer/socer/domus-1/ha/state");
        assert_eq!(imp["value_template"], "{{ value_json.grid_import_kwh }}");
        assert_eq!(imp["device"]["identifiers"][0], "socer-domus-1");
        let ids: std::collections::HashSet<&str> = d
            .iter()
            .map(|(_, c)| c["unique_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), d.len(), "unique ids are unique");
    }

    #[test]
    fn state_carries_totals_counters_in_kwh_and_the_community_level() {
        let latest = BTreeMap::from([
            (
                "grid".to_string(),
                reading("grid", -1500.0, 120_000.0, 45_500.0),
            ),
            ("pv".to_string(), reading("pv", -4000.0, 0.0, 300_000.0)),
        ]);
        let ts = chrono::DateTime::UNIX_EPOCH;
        let signal = Signal {
            ts,
            community: ZoneSignal {
                zone: "socer".into(),
                level: Level::Green,
                openadr_level: 0,
                surplus_kw: 12.5,
                production_kw: 40.0,
                consumption_kw: 27.5,
                since: ts,
            },
            substations: vec![],
            forecast: vec![],
        };
        let s = state(&meters(), &latest, Some(&signal));
        assert_eq!(s["production_w"], 4000.0);
        assert_eq!(s["building_load_w"], 2500.0);
        assert_eq!(s["grid_import_kwh"], 120.0);
        assert_eq!(s["grid_export_kwh"], 45.5);
        assert_eq!(s["production_kwh"], 300.0);
        assert_eq!(s["community_level"], "green");
        assert_eq!(s["community_surplus"], "ON");
        assert_eq!(s["community_surplus_kw"], 12.5);
        let none = state(&meters(), &BTreeMap::new(), None);
        assert!(none.get("community_level").is_none());
        assert!(none.get("grid_import_kwh").is_none());
    }
}
