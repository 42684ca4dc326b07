//! The site config (TOML): schema, validation with FILE:LINE:COL spans, and loading for the agent.
//!
//! `check` reports every problem it can find; `load` refuses a config `check` would refuse. Neither
//! touches a bus, the broker or the outbox.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::diag::Diag;

/// The whole site config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub site: SiteSection,
    pub mqtt: MqttSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub web: WebSection,
    #[serde(default, rename = "bus")]
    pub buses: Vec<BusConfig>,
    #[serde(default, rename = "meter")]
    pub meters: Vec<MeterConfig>,
    /// Opt-in Home Assistant MQTT discovery.
    #[serde(default)]
    pub homeassistant: Option<super::ha::HomeAssistantConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    /// Stable site id, used in MQTT topics (`[a-z0-9-]`).
    pub id: Spanned<String>,
    pub community: Spanned<String>,
    #[serde(default)]
    pub name: String,
    /// IANA zone of the building (`Europe/Rome`), for the resident page.
    #[serde(default = "default_tz")]
    pub timezone: Spanned<String>,
    /// How to decide the wall clock is trustworthy (see `timesync`).
    #[serde(default)]
    pub clock: ClockPolicy,
}

fn default_tz() -> Spanned<String> {
    Spanned::new(0..0, "Europe/Rome".to_string())
}

/// `kernel`: wait for the kernel's NTP-synchronised flag (a Pi without RTC). `trust`: the wall
/// clock is right from boot (a machine with a battery-backed RTC and no NTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClockPolicy {
    #[default]
    Kernel,
    Trust,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `mqtt://host:port` or `mqtts://host:port`: one broker.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// Several brokers (the nodes of a cluster), tried in turn: `["mqtts://a:8883", …]`.
    /// Exactly one of `url` and `urls` is given.
    #[serde(default)]
    pub urls: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the broker password (its first line), instead of `password`: what
    /// `socer central add-site` writes (0600). Relative to this file's folder; read at start.
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
    /// The site's secret key for batch authentication: hex text, or raw bytes.
    pub key_file: Spanned<PathBuf>,
    /// PEM file of the CA that signed the broker's certificate (mqtts only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The hub's Ed25519 public key (64 hex digits, printed by `socer keygen`): the signal,
    /// alerts and balance are shown only if signed by it. Without it the site shows none.
    #[serde(default)]
    pub hub_public_key: Option<Spanned<String>>,
    /// Readings per published batch.
    #[serde(default = "default_batch")]
    pub batch_readings: usize,
    /// Batches published but not yet acknowledged by the central hub, at most.
    #[serde(default = "default_window")]
    pub window: usize,
    /// QoS of the site's subscriptions (ack, signal, summary…): 1, or 0 on a NATS cluster,
    /// where a QoS 1 subscription is a JetStream consumer that can stall silently when a node
    /// dies (nats-server 2.9); the end-to-end ack makes up for a lost message either way.
    #[serde(default = "default_subscribe_qos")]
    pub subscribe_qos: u8,
}

fn default_subscribe_qos() -> u8 {
    1
}

fn default_batch() -> usize {
    500
}
fn default_window() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Folder of the outbox database.
    #[serde(default = "default_storage_path")]
    pub path: PathBuf,
    /// Largest size the outbox may take on disk (`200MB`, `1GiB`, bytes).
    #[serde(default = "default_budget")]
    pub budget: Spanned<String>,
}

fn default_storage_path() -> PathBuf {
    PathBuf::from("/var/lib/socer")
}
fn default_budget() -> Spanned<String> {
    Spanned::new(0..0, "200MB".to_string())
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            path: default_storage_path(),
            budget: default_budget(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "0.0.0.0:8080".to_string())
}

impl Default for WebSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

/// One Modbus line: a serial port (RS-485) or a Modbus TCP gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub name: Spanned<String>,
    /// Serial device, e.g. `/dev/ttyUSB0`.
    #[serde(default)]
    pub serial: Option<Spanned<String>>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: Spanned<u8>,
    /// `host:port` of a Modbus TCP device or gateway.
    #[serde(default)]
    pub tcp: Option<Spanned<String>>,
    /// `host:port` of an RS-485 gateway in transparent mode: Modbus RTU frames over TCP (`baud`
    /// is the gateway's serial speed). One scheduler per gateway, like a serial line.
    #[serde(default)]
    pub rtu_over_tcp: Option<Spanned<String>>,
    /// `mqtt://host:port` or `mqtts://host:port` of the building's broker that devices publishing
    /// their own readings use (Shelly Gen2+, Tasmota; `site::mqtt_devices`): the meters of this
    /// bus are subscribed to (`topic`, `model = "shelly-gen2" | "tasmota"`), not polled.
    #[serde(default)]
    pub mqtt: Option<Spanned<String>>,
    /// Credentials on that broker (`mqtt` buses only).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Meters on this bus are simulated in-process (tests and demos; no Modbus traffic).
    #[serde(default)]
    pub simulated: bool,
    /// Simulated bus only: unit ids that never answer (to test a failing meter).
    #[serde(default)]
    pub dead_units: Vec<i64>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Serial bus only, opt-in: put the port in RS-485 mode (`TIOCSRS485`), for a UART behind a
    /// transceiver (a Raspberry Pi HAT); refused for USB adapters.
    #[serde(default)]
    pub rs485: Option<Spanned<Rs485Config>>,
}

/// `rs485 = { rts_on_send = true, delay_before_send_ms = 0, delay_after_send_ms = 0 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rs485Config {
    /// RTS (the transceiver's DE pin) active while sending; false inverts it.
    #[serde(default = "default_rts_on_send")]
    pub rts_on_send: bool,
    #[serde(default)]
    pub delay_before_send_ms: u32,
    #[serde(default)]
    pub delay_after_send_ms: u32,
}

impl Rs485Config {
    pub fn settings(&self) -> socer_drivers::transport::Rs485Settings {
        socer_drivers::transport::Rs485Settings {
            rts_on_send: self.rts_on_send,
            delay_before_send_ms: self.delay_before_send_ms,
            delay_after_send_ms: self.delay_after_send_ms,
        }
    }
}

fn default_rts_on_send() -> bool {
    true
}

fn default_baud() -> u32 {
    9600
}
fn default_stop_bits() -> Spanned<u8> {
    Spanned::new(0..0, 1)
}
fn default_timeout_ms() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// What a meter measures, for the building's totals and the community balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The POD exchange meter: import = withdrawal, export = injection.
    Grid,
    /// A generator: produced = export.
    Production,
    /// A load: consumed = import.
    Consumption,
    Storage,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Grid => "grid",
            Role::Production => "production",
            Role::Consumption => "consumption",
            Role::Storage => "storage",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// Unique within the site; appears in readings.
    pub name: Spanned<String>,
    pub bus: Spanned<String>,
    /// Modbus unit id, 1..=247 (not given for a meter on an `mqtt` bus).
    #[serde(default = "no_unit")]
    pub unit: Spanned<i64>,
    /// On an `mqtt` bus: the device's topic (a Shelly's topic prefix, a Tasmota's `%topic%`).
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// Profile id (`socer profiles` lists them).
    pub model: Spanned<String>,
    pub role: Spanned<String>,
    /// Point of delivery code (IT001E…), for grid meters.
    #[serde(default)]
    pub pod: Option<String>,
    /// Poll interval override: seconds, or `"500ms"`, `"15s"`, `"1m"`.
    #[serde(default)]
    pub interval: Option<Spanned<IntervalValue>>,
    /// The meter is wired the other way round: swap import and export, negate power.
    #[serde(default)]
    pub reverse: bool,
}

fn no_unit() -> Spanned<i64> {
    Spanned::new(0..0, 0)
}

impl MeterConfig {
    pub fn role(&self) -> Role {
        parse_role(self.role.get_ref()).unwrap_or(Role::Consumption)
    }
    pub fn interval(&self) -> Option<Duration> {
        self.interval.as_ref().and_then(|i| i.get_ref().duration())
    }
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
}

/// An interval as written: a number of seconds or a string with a unit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum IntervalValue {
    Seconds(f64),
    Text(String),
}

impl IntervalValue {
    /// The interval, or `None` when it is not a positive finite duration that fits a `Duration`
    /// (bounds are [`MIN_INTERVAL`]..=[`MAX_INTERVAL`], checked by [`validate`]).
    pub fn duration(&self) -> Option<Duration> {
        match self {
            IntervalValue::Seconds(s) if *s > 0.0 => Duration::try_from_secs_f64(*s).ok(),
            IntervalValue::Seconds(_) => None,
            IntervalValue::Text(t) => parse_duration(t),
        }
    }
}

/// Shortest and longest poll interval of a meter.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

impl fmt::Display for IntervalValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntervalValue::Seconds(s) => write!(f, "{s}"),
            IntervalValue::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// `"500ms"`, `"15s"`, `"2m"`, `"1h"`; zero is not an interval, nor anything that does not fit
/// a `Duration` (`"100000000000000000000s"`). Never panics.
pub fn parse_duration(t: &str) -> Option<Duration> {
    let t = t.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    if secs > 0.0 {
        Duration::try_from_secs_f64(secs).ok()
    } else {
        None
    }
}

/// `"200MB"`, `"1GiB"`, `"500kB"`, or plain bytes.
pub fn parse_size(t: &str) -> Option<u64> {
    let t = t.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mul = match unit.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * mul;
    (bytes >= 1.0 && bytes.is_finite()).then_some(bytes as u64)
}

pub fn parse_role(s: &str) -> Option<Role> {
    match s {
        "grid" => Some(Role::Grid),
        "production" => Some(Role::Production),
        "consumption" => Some(Role::Consumption),
        "storage" => Some(Role::Storage),
        _ => None,
    }
}

impl MqttSection {
    /// The broker URLs as written, in order (`url`, or each of `urls`).
    pub fn url_list(&self) -> Vec<&Spanned<String>> {
        match (&self.url, &self.urls) {
            (Some(u), _) => vec![u],
            (None, Some(us)) => us.get_ref().iter().collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// Most broker URLs in `urls`.
pub const MAX_BROKER_URLS: usize = 16;

/// The checks of `[mqtt] url`/`urls` (shared with the hub's `[broker]`): exactly one of them, a
/// non-empty list of at most [`MAX_BROKER_URLS`], each a valid MQTT URL, none repeated.
pub fn check_url_list(
    section: &str,
    url: Option<&Spanned<String>>,
    urls: Option<&Spanned<Vec<Spanned<String>>>>,
    required: bool,
    d: &mut Vec<Diag>,
) -> Vec<BrokerUrl> {
    let list: Vec<&Spanned<String>> = match (url, urls) {
        (Some(_), Some(us)) => {
            d.push(Diag::new(
                span(us),
                format!("[{section}] has both url and urls: give one broker as url = \"mqtt://host:port\" or several as urls = [\"mqtt://a:1883\", \"mqtt://b:1883\"]"),
            ));
            return Vec::new();
        }
        (Some(u), None) => vec![u],
        (None, Some(us)) => {
            if us.get_ref().is_empty() || us.get_ref().len() > MAX_BROKER_URLS {
                d.push(Diag::new(
                    span(us),
                    format!(
                        "[{section}] urls holds {} URLs: give 1..={MAX_BROKER_URLS}",
                        us.get_ref().len()
                    ),
                ));
                return Vec::new();
            }
            us.get_ref().iter().collect()
        }
        (None, None) => {
            if required {
                d.push(Diag::new(
                    None,
                    format!("[{section}] needs url = \"mqtt://host:port\" (or urls = [\"mqtt://a:1883\", \"mqtt://b:1883\"] for several brokers)"),
                ));
            }
            return Vec::new();
        }
    };
    let mut out: Vec<BrokerUrl> = Vec::new();
    for u in list {
        match parse_mqtt_url(u.get_ref()) {
            Ok(b) if out.contains(&b) => d.push(Diag::new(
                span(u),
                format!("{:?} is listed twice", u.get_ref()),
            )),
            Ok(b) => out.push(b),
            Err(e) => d.push(Diag::new(span(u), e)),
        }
    }
    out
}

/// Broker address from an MQTT URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883); no path, no credentials in the URL.
pub fn parse_mqtt_url(s: &str) -> Result<BrokerUrl, String> {
    let (tls, rest) = if let Some(r) = s.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = s.strip_prefix("mqtts://") {
        (true, r)
    } else {
        return Err(format!(
            "{s:?} is not an MQTT URL: expected mqtt://host:port or mqtts://host:port"
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('@') || rest.contains('?') {
        return Err(format!(
            "{s:?}: only scheme, host and port belong in the URL (credentials go in username/password)"
        ));
    }
    if rest.contains(',') || rest.contains(';') || rest.chars().any(char::is_whitespace) {
        return Err(format!(
            "{s:?} is several addresses in one URL: give each broker its own URL, as urls = [\"mqtt://a:1883\", \"mqtt://b:1884\"]"
        ));
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h, p),
            _ => return Err(format!("{s:?}: port {p:?} is not a number in 1..=65535")),
        },
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s:?}: no host"));
    }
    let bracketed = rest.starts_with('[');
    let host_ok = if bracketed {
        host.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    if !host_ok {
        return Err(format!(
            "{s:?}: {host:?} is not a host name, an IPv4 address or a bracketed IPv6 address"
        ));
    }
    Ok(BrokerUrl {
        tls,
        host: host.to_string(),
        port,
    })
}

/// The meter models a config may name: the built-in profiles, and `sunspec` (resolved on the
/// device by discovery).
pub fn known_models() -> Vec<String> {
    let mut ids: Vec<String> = match socer_drivers::ProfileSet::builtin() {
        Ok(set) => set.ids().into_iter().map(str::to_string).collect(),
        Err(e) => {
            tracing::error!("built-in profiles do not load: {e}");
            Vec::new()
        }
    };
    if !ids.iter().any(|i| i == "sunspec") {
        ids.push("sunspec".into());
    }
    ids
}

fn span<T>(s: &Spanned<T>) -> Option<std::ops::Range<usize>> {
    let r = s.span();
    (r.end > 0).then_some(r)
}

/// An id the site agent accepts (site, community): lowercase letters, digits, `-` or `_`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Bounds of the site config's numbers (each diagnostic names the one it breaks).
pub const MAX_BATCH_READINGS: usize = 10_000;
pub const MAX_WINDOW: usize = 1_000;
pub const MIN_BUDGET_BYTES: u64 = 100_000;
pub const MAX_BUDGET_BYTES: u64 = 1_000_000_000_000;
pub const MIN_BAUD: u32 = 300;
pub const MAX_BAUD: u32 = 1_000_000;
pub const MIN_TIMEOUT_MS: u64 = 10;
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// Validate a config text; an empty list means it is valid.
pub fn check(_path: &Path, text: &str) -> Vec<Diag> {
    let cfg: SiteConfig = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => return vec![Diag::from_toml(&e)],
    };
    validate(&cfg, &known_models())
}

/// The semantic checks, given the model ids that exist.
pub fn validate(cfg: &SiteConfig, models: &[String]) -> Vec<Diag> {
    let mut d = Vec::new();
    for (what, v) in [
        ("site id", &cfg.site.id),
        ("community", &cfg.site.community),
    ] {
        if !valid_id(v.get_ref()) {
            d.push(Diag::new(
                span(v),
                format!("{what} {:?} must be lowercase letters, digits, '-' or '_' (it is part of MQTT topics)", v.get_ref()),
            ));
        }
    }
    if cfg
        .site
        .timezone
        .get_ref()
        .parse::<chrono_tz::Tz>()
        .is_err()
    {
        d.push(Diag::new(
            span(&cfg.site.timezone),
            format!(
                "unknown time zone {:?}: use an IANA name such as \"Europe/Rome\"",
                cfg.site.timezone.get_ref()
            ),
        ));
    }
    check_url_list(
        "mqtt",
        cfg.mqtt.url.as_ref(),
        cfg.mqtt.urls.as_ref(),
        true,
        &mut d,
    );
    if let (Some(_), Some(f)) = (&cfg.mqtt.password, &cfg.mqtt.password_file) {
        d.push(Diag::new(
            span(f),
            "give either password or password_file in [mqtt], not both",
        ));
    }
    if let Some(k) = &cfg.mqtt.hub_public_key {
        if let Err(e) = crate::wire::public_key_from_hex(k.get_ref()) {
            d.push(Diag::new(span(k), format!("hub_public_key: {e}")));
        }
    }
    if !(1..=MAX_BATCH_READINGS).contains(&cfg.mqtt.batch_readings) {
        d.push(Diag::new(
            None,
            format!(
                "[mqtt] batch_readings is {}: it must be in 1..={MAX_BATCH_READINGS}",
                cfg.mqtt.batch_readings
            ),
        ));
    }
    if cfg.mqtt.subscribe_qos > 1 {
        d.push(Diag::new(
            None,
            format!(
                "[mqtt] subscribe_qos is {}: it must be 0 or 1",
                cfg.mqtt.subscribe_qos
            ),
        ));
    }
    if !(1..=MAX_WINDOW).contains(&cfg.mqtt.window) {
        d.push(Diag::new(
            None,
            format!(
                "[mqtt] window is {}: it must be in 1..={MAX_WINDOW}",
                cfg.mqtt.window
            ),
        ));
    }
    match parse_size(cfg.storage.budget.get_ref()) {
        None => d.push(Diag::new(
            span(&cfg.storage.budget),
            format!(
                "disk budget {:?} is not a size: write e.g. \"200MB\" or \"1GiB\"",
                cfg.storage.budget.get_ref()
            ),
        )),
        Some(b) if !(MIN_BUDGET_BYTES..=MAX_BUDGET_BYTES).contains(&b) => d.push(Diag::new(
            span(&cfg.storage.budget),
            format!(
                "disk budget {:?} is outside 100kB..=1TB",
                cfg.storage.budget.get_ref()
            ),
        )),
        Some(_) => {}
    }
    if let Some(ha) = &cfg.homeassistant {
        if !(1..=86_400).contains(&ha.state_every_s) {
            d.push(Diag::new(
                None,
                format!(
                    "[homeassistant] state_every_s is {}: it must be in 1..=86400 seconds",
                    ha.state_every_s
                ),
            ));
        }
    }
    if cfg
        .web
        .listen
        .get_ref()
        .parse::<std::net::SocketAddr>()
        .is_err()
    {
        d.push(Diag::new(
            span(&cfg.web.listen),
            format!(
                "listen address {:?} is not IP:PORT (e.g. \"0.0.0.0:8080\")",
                cfg.web.listen.get_ref()
            ),
        ));
    }

    let mut buses: HashMap<&str, &BusConfig> = HashMap::new();
    for b in &cfg.buses {
        let name = b.name.get_ref().as_str();
        if buses.insert(name, b).is_some() {
            d.push(Diag::new(
                span(&b.name),
                format!("duplicate bus name {name:?}"),
            ));
        }
        let kinds = usize::from(b.serial.is_some())
            + usize::from(b.tcp.is_some())
            + usize::from(b.rtu_over_tcp.is_some())
            + usize::from(b.mqtt.is_some())
            + usize::from(b.simulated);
        if kinds != 1 {
            d.push(Diag::new(
                span(&b.name),
                format!("bus {name:?} needs exactly one of serial = \"/dev/ttyUSB0\", tcp = \"host:port\", rtu_over_tcp = \"host:port\", mqtt = \"mqtt://host:port\" or simulated = true"),
            ));
        }
        if let Some(u) = &b.mqtt {
            if let Err(e) = parse_mqtt_url(u.get_ref()) {
                d.push(Diag::new(span(u), format!("bus {name:?}: {e}")));
            }
        } else if b.username.is_some() || b.password.is_some() {
            d.push(Diag::new(
                span(&b.name),
                format!("bus {name:?}: username and password are only for an mqtt bus"),
            ));
        }
        if let Some(t) = b.tcp.as_ref().or(b.rtu_over_tcp.as_ref()) {
            let ok = t
                .get_ref()
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                d.push(Diag::new(
                    span(t),
                    format!("tcp address {:?} is not host:port", t.get_ref()),
                ));
            }
        }
        if !b.dead_units.is_empty() && !b.simulated {
            d.push(Diag::new(
                span(&b.name),
                format!("bus {name:?}: dead_units is only for a simulated bus"),
            ));
        }
        if !matches!(b.stop_bits.get_ref(), 1 | 2) {
            d.push(Diag::new(span(&b.stop_bits), "stop_bits must be 1 or 2"));
        }
        if !(MIN_BAUD..=MAX_BAUD).contains(&b.baud) {
            d.push(Diag::new(
                span(&b.name),
                format!(
                    "bus {name:?}: baud {} is outside {MIN_BAUD}..={MAX_BAUD}",
                    b.baud
                ),
            ));
        }
        if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&b.timeout_ms) {
            d.push(Diag::new(
                span(&b.name),
                format!(
                    "bus {name:?}: timeout_ms {} is outside {MIN_TIMEOUT_MS}..={MAX_TIMEOUT_MS}",
                    b.timeout_ms
                ),
            ));
        }
        if let Some(r) = &b.rs485 {
            match &b.serial {
                None => d.push(Diag::new(
                    span(r),
                    format!("bus {name:?}: rs485 is only for a serial bus"),
                )),
                Some(port) => {
                    if let Err(e) = socer_drivers::transport::rs485::check(
                        port.get_ref(),
                        &r.get_ref().settings(),
                    ) {
                        d.push(Diag::new(span(r), format!("bus {name:?}: rs485: {e}")));
                    }
                }
            }
        }
        if let Some(u) = b.dead_units.iter().find(|u| !(1..=247).contains(*u)) {
            d.push(Diag::new(
                span(&b.name),
                format!("bus {name:?}: dead unit {u} is outside 1..=247"),
            ));
        }
    }

    let mut names: HashSet<&str> = HashSet::new();
    let mut units: HashSet<(&str, i64)> = HashSet::new();
    for m in &cfg.meters {
        let name = m.name.get_ref().as_str();
        if !names.insert(name) {
            d.push(Diag::new(
                span(&m.name),
                format!("duplicate meter name {name:?}"),
            ));
        }
        if name.is_empty() {
            d.push(Diag::new(span(&m.name), "meter name is empty"));
        }
        let bus = m.bus.get_ref().as_str();
        if !buses.contains_key(bus) {
            let known: Vec<&str> = cfg
                .buses
                .iter()
                .map(|b| b.name.get_ref().as_str())
                .collect();
            d.push(Diag::new(
                span(&m.bus),
                format!(
                    "meter {name:?} is on bus {bus:?}, which is not defined (buses: {})",
                    list(&known)
                ),
            ));
        }
        let on_mqtt = buses.get(bus).is_some_and(|b| b.mqtt.is_some());
        if on_mqtt || m.topic.is_some() {
            check_mqtt_meter(m, on_mqtt, &mut d);
            continue;
        }
        let unit = *m.unit.get_ref();
        if m.unit.span().end == 0 {
            d.push(Diag::new(
                span(&m.name),
                format!("meter {name:?} needs its Modbus unit id: unit = 1..=247"),
            ));
        } else if !(1..=247).contains(&unit) {
            d.push(Diag::new(
                span(&m.unit),
                format!("unit id {unit} is outside 1..=247"),
            ));
        } else if !units.insert((bus, unit)) {
            d.push(Diag::new(
                span(&m.unit),
                format!("unit id {unit} is already used on bus {bus:?}"),
            ));
        }
        if !models.iter().any(|x| x == m.model.get_ref())
            && socer_drivers::sunspec::model_choice(m.model.get_ref()).is_none()
        {
            let ids: Vec<&str> = models.iter().map(String::as_str).collect();
            d.push(Diag::new(
                span(&m.model),
                format!(
                    "unknown model {:?}; known: {}",
                    m.model.get_ref(),
                    list(&ids)
                ),
            ));
        }
        if parse_role(m.role.get_ref()).is_none() {
            d.push(Diag::new(
                span(&m.role),
                format!(
                    "unknown role {:?}: grid, production, consumption or storage",
                    m.role.get_ref()
                ),
            ));
        }
        if let Some(i) = &m.interval {
            let ok = i
                .get_ref()
                .duration()
                .is_some_and(|d| (MIN_INTERVAL..=MAX_INTERVAL).contains(&d));
            if !ok {
                d.push(Diag::new(
                    span(i),
                    format!(
                        "interval {} is not a duration in 10ms..=24h: seconds, or \"500ms\", \"15s\", \"1m\"",
                        i.get_ref()
                    ),
                ));
            }
        }
    }
    d
}

/// Longest device topic of an `mqtt` bus meter, bytes.
pub const MAX_DEVICE_TOPIC: usize = 200;

/// A meter on an `mqtt` bus: a device format, a topic that is a plain MQTT topic name, a role and
/// an interval (its expected publishing period) like any meter, and no Modbus unit id.
fn check_mqtt_meter(m: &MeterConfig, on_mqtt: bool, d: &mut Vec<Diag>) {
    let name = m.name.get_ref();
    let Some(topic) = m.topic.as_ref().filter(|_| on_mqtt) else {
        let at = m.topic.as_ref().map_or_else(|| span(&m.name), span);
        d.push(Diag::new(
            at,
            if on_mqtt {
                format!(
                    "meter {name:?} is on an mqtt bus and needs topic = \"…\" (the device's topic)"
                )
            } else {
                format!("meter {name:?}: topic is only for a meter on an mqtt bus")
            },
        ));
        return;
    };
    let t = topic.get_ref();
    if t.is_empty()
        || t.len() > MAX_DEVICE_TOPIC
        || t.contains(['+', '#', '\0'])
        || t.starts_with('/')
        || t.ends_with('/')
    {
        d.push(Diag::new(
            span(topic),
            format!("topic {t:?} must be 1..={MAX_DEVICE_TOPIC} bytes, without wildcards (+, #) or a leading or trailing /"),
        ));
    }
    if super::mqtt_devices::Format::from_model(m.model.get_ref()).is_none() {
        d.push(Diag::new(
            span(&m.model),
            format!(
                "meter {name:?} on an mqtt bus: model {:?} is not a device format; known: {}",
                m.model.get_ref(),
                super::mqtt_devices::Format::MODELS.join(", ")
            ),
        ));
    }
    if m.unit.span().end != 0 {
        d.push(Diag::new(
            span(&m.unit),
            format!("meter {name:?} on an mqtt bus has no Modbus unit id"),
        ));
    }
    if parse_role(m.role.get_ref()).is_none() {
        d.push(Diag::new(
            span(&m.role),
            format!(
                "unknown role {:?}: grid, production, consumption or storage",
                m.role.get_ref()
            ),
        ));
    }
    if let Some(i) = &m.interval {
        let ok = i
            .get_ref()
            .duration()
            .is_some_and(|d| (Duration::from_secs(1)..=MAX_INTERVAL).contains(&d));
        if !ok {
            d.push(Diag::new(
                span(i),
                format!(
                    "interval {} (how often the device publishes) is not a duration in 1s..=24h",
                    i.get_ref()
                ),
            ));
        }
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Why the agent cannot start with a config.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
}

/// A validated config, ready for the agent.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: SiteConfig,
    /// The first broker of [`Loaded::brokers`].
    pub broker: BrokerUrl,
    /// Every broker, in the order given: the uplink moves to the next when one fails.
    pub brokers: Vec<BrokerUrl>,
    pub key: Vec<u8>,
    /// `[mqtt] hub_public_key`, parsed.
    pub hub_public_key: Option<crate::wire::HubPublicKey>,
    pub budget_bytes: u64,
}

/// Read, validate, and read the batch key. Relative paths are taken from the config's folder.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = crate::diag::utf8_text(&bytes)
        .map_err(|d| LoadError::Invalid(crate::diag::render_bytes(path, &bytes, &[d])))?;
    let mut config: SiteConfig = toml::from_str(text)
        .map_err(|e| LoadError::Invalid(crate::diag::render(path, text, &[Diag::from_toml(&e)])))?;
    let diags = validate(&config, &known_models());
    if !diags.is_empty() {
        return Err(LoadError::Invalid(crate::diag::render(path, text, &diags)));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    // `credential:NAME` (key_file, ca_file, password): a systemd credential (crate::systemd).
    let key_path = crate::systemd::config_path(base, config.mqtt.key_file.get_ref());
    let key = read_key(&key_path)?;
    if let Some(f) = &config.mqtt.password_file {
        let p = base.join(f.get_ref());
        let text = std::fs::read_to_string(&p).map_err(|e| LoadError::Key {
            path: p.clone(),
            reason: format!("password file: {e}"),
        })?;
        config.mqtt.password = Some(text.lines().next().unwrap_or("").to_string());
    }
    config.storage.path = base.join(&config.storage.path);
    if let Some(ca) = &config.mqtt.ca_file {
        config.mqtt.ca_file = Some(crate::systemd::config_path(base, ca));
    }
    if let Some(p) = &config.mqtt.password {
        config.mqtt.password = Some(
            crate::systemd::secret(p)
                .map_err(|e| LoadError::Invalid(format!("[mqtt] password: {e}")))?,
        );
    }
    if let Some(h) = config.homeassistant.as_mut() {
        if let Some(p) = &h.password {
            let p = crate::systemd::secret(p)
                .map_err(|e| LoadError::Invalid(format!("[homeassistant] password: {e}")))?;
            h.password = Some(p);
        }
    }
    let brokers = config
        .mqtt
        .url_list()
        .into_iter()
        .map(|u| parse_mqtt_url(u.get_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(LoadError::Invalid)?;
    let broker = brokers
        .first()
        .cloned()
        .ok_or_else(|| LoadError::Invalid("[mqtt] needs url or urls".into()))?;
    let budget_bytes = parse_size(config.storage.budget.get_ref())
        .ok_or_else(|| LoadError::Invalid("bad disk budget".into()))?;
    let hub_public_key = match &config.mqtt.hub_public_key {
        Some(k) => Some(
            crate::wire::public_key_from_hex(k.get_ref())
                .map_err(|e| LoadError::Invalid(format!("[mqtt] hub_public_key: {e}")))?,
        ),
        None => None,
    };
    Ok(Loaded {
        config,
        broker,
        brokers,
        key,
        hub_public_key,
        budget_bytes,
    })
}

/// A key file holds hex text (whitespace ignored) or, failing that, raw bytes; at least 16 bytes.
pub fn read_key(path: &Path) -> Result<Vec<u8>, LoadError> {
    let raw = std::fs::read(path).map_err(|e| LoadError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let text: String = String::from_utf8_lossy(&raw).split_whitespace().collect();
    let key = match hex::decode(&text) {
        Ok(k) if !text.is_empty() => k,
        _ => raw,
    };
    if key.len() < 16 {
        return Err(LoadError::Key {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes; a key needs at least 16 (e.g. `openssl rand -hex 32`)",
                key.len()
            ),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[site]
id = "domus-1"
community = "socer"
name = "Condominio Domus 1"
timezone = "Europe/Rome"

[mqtt]
url = "mqtt://127.0.0.1:1883"
key_file = "site.key"

[storage]
path = "data"
budget = "200MB"

[web]
listen = "127.0.0.1:8080"

[[bus]]
name = "rs485"
serial = "/dev/ttyUSB0"
baud = 9600
parity = "none"

[[bus]]
name = "gw"
tcp = "192.168.1.20:502"

[[meter]]
name = "grid"
bus = "rs485"
unit = 1
model = "eastron-sdm630"
role = "grid"
pod = "IT001E12345678"

[[meter]]
name = "pv"
bus = "gw"
unit = 1
model = "sunspec"
role = "production"
interval = "2s"

[[meter]]
name = "battery-inverter"
bus = "gw"
unit = 2
model = "sunspec:203"
role = "storage"
"#;

    fn diags(text: &str) -> String {
        let d = check(Path::new("s.toml"), text);
        crate::diag::render(Path::new("s.toml"), text, &d)
    }

    #[test]
    fn a_good_config_has_no_diagnostics() {
        assert_eq!(diags(GOOD), "");
    }

    const MQTT_BUS: &str = r#"
[[bus]]
name = "wifi"
mqtt = "mqtt://192.168.1.5:1883"
username = "socer"
password = "secret"

[[meter]]
name = "lavanderia"
bus = "wifi"
model = "shelly-gen2"
topic = "shellypro3em-lavanderia"
role = "consumption"
interval = "10s"

[[meter]]
name = "pompa"
bus = "wifi"
model = "tasmota"
topic = "pow-pompa"
role = "consumption"
"#;

    #[test]
    fn an_mqtt_bus_takes_devices_by_topic_and_format_without_unit_ids() {
        assert_eq!(diags(&format!("{GOOD}{MQTT_BUS}")), "");
        let line_of = |t: &str, pat: &str| t.lines().position(|l| l.contains(pat)).unwrap_or(0) + 1;
        for (from, to, at, says) in [
            (
                "model = \"tasmota\"",
                "model = \"eastron-sdm120\"",
                "eastron-sdm120",
                "is not a device format",
            ),
            (
                "topic = \"pow-pompa\"",
                "topic = \"pow/#\"",
                "pow/#",
                "without wildcards",
            ),
            (
                "topic = \"pow-pompa\"",
                "unit = 3",
                "name = \"pompa\"",
                "needs topic",
            ),
            (
                "mqtt = \"mqtt://192.168.1.5:1883\"",
                "mqtt = \"http://192.168.1.5\"",
                "http://",
                "not an MQTT URL",
            ),
            (
                "interval = \"10s\"",
                "interval = \"100ms\"",
                "100ms",
                "1s..=24h",
            ),
        ] {
            let t = format!("{GOOD}{MQTT_BUS}").replace(from, to);
            let out = diags(&t);
            assert!(
                out.starts_with(&format!("s.toml:{}:", line_of(&t, at))),
                "{to}: {out}"
            );
            assert!(out.contains(says), "{to}: {out}");
        }
        // A Modbus meter with a topic, and one without its unit id.
        let t = GOOD.replace("unit = 2\n", "unit = 2\ntopic = \"x\"\n");
        assert!(
            diags(&t).contains("topic is only for a meter on an mqtt bus"),
            "{}",
            diags(&t)
        );
        let t = GOOD.replace("unit = 2\n", "");
        assert!(
            diags(&t).contains("needs its Modbus unit id"),
            "{}",
            diags(&t)
        );
        // Credentials belong to an mqtt bus, and a bus has one kind.
        let t = GOOD.replace(
            "tcp = \"192.168.1.20:502\"",
            "tcp = \"192.168.1.20:502\"\nusername = \"u\"",
        );
        assert!(diags(&t).contains("only for an mqtt bus"), "{}", diags(&t));
        let t = GOOD.replace(
            "tcp = \"192.168.1.20:502\"",
            "tcp = \"192.168.1.20:502\"\nmqtt = \"mqtt://h:1\"",
        );
        assert!(diags(&t).contains("needs exactly one of"), "{}", diags(&t));
    }

    #[test]
    fn unknown_key_points_at_its_line() {
        let t = GOOD.replace("pod = \"IT001E12345678\"", "pdo = \"IT001E12345678\"");
        let out = diags(&t);
        let line = t.lines().position(|l| l.starts_with("pdo")).unwrap() + 1;
        assert!(out.starts_with(&format!("s.toml:{line}:")), "{out}");
        assert!(out.contains("pdo"), "{out}");
    }

    #[test]
    fn duplicate_meter_name_and_unit_are_both_reported_at_the_second_meter() {
        let t = format!(
            "{GOOD}\n[[meter]]\nname = \"grid\"\nbus = \"rs485\"\nunit = 1\nmodel = \"eastron-sdm120\"\nrole = \"consumption\"\n"
        );
        let out = diags(&t);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let name_line = t
            .lines()
            .enumerate()
            .filter(|(_, l)| *l == "name = \"grid\"")
            .nth(1)
            .unwrap()
            .0
            + 1;
        assert!(
            lines[0].starts_with(&format!("s.toml:{name_line}:8: duplicate meter name")),
            "{out}"
        );
        assert!(
            lines[1].contains("unit id 1 is already used on bus \"rs485\""),
            "{out}"
        );
    }

    #[test]
    fn meter_on_undefined_bus_bad_url_model_and_role_are_named() {
        let t = GOOD
            .replace("bus = \"gw\"", "bus = \"gateway\"")
            .replace("mqtt://127.0.0.1:1883", "http://broker")
            .replace("model = \"sunspec\"", "model = \"sdm999\"")
            .replace("role = \"production\"", "role = \"producer\"");
        let out = diags(&t);
        assert!(
            out.contains("bus \"gateway\", which is not defined (buses: rs485, gw)"),
            "{out}"
        );
        assert!(out.contains("is not an MQTT URL"), "{out}");
        assert!(
            out.contains("unknown model \"sdm999\"; known: abb-b23"),
            "{out}"
        );
        assert!(out.contains("unknown role \"producer\""), "{out}");
        let url_line = t.lines().position(|l| l.starts_with("url")).unwrap() + 1;
        assert!(out.contains(&format!("s.toml:{url_line}:7: ")), "{out}");
    }

    #[test]
    fn sizes_durations_and_urls_parse() {
        assert_eq!(parse_size("200MB"), Some(200_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(
            parse_mqtt_url("mqtts://hub.socer.it"),
            Ok(BrokerUrl {
                tls: true,
                host: "hub.socer.it".into(),
                port: 8883
            })
        );
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:18830"),
            Ok(BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 18830
            })
        );
        assert!(parse_mqtt_url("mqtt://u:p@host").is_err());
        assert!(parse_mqtt_url("mqtt://host:99999").is_err());
    }

    #[test]
    fn a_comma_joined_url_is_an_error_at_its_line_and_a_list_goes_in_urls() {
        let joined = GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://a:1883,b:1884");
        let out = diags(&joined);
        let url_line = joined.lines().position(|l| l.starts_with("url")).unwrap() + 1;
        assert!(
            out.contains(&format!("s.toml:{url_line}:7: ")) && out.contains("urls = ["),
            "{out}"
        );
        for bad in [
            "mqtt://a:1883;b",
            "mqtt://a b:1883",
            "mqtt://a..b:1883",
            "mqtt://[zz]:1",
        ] {
            assert!(parse_mqtt_url(bad).is_err(), "{bad}");
        }
        assert!(parse_mqtt_url("mqtt://[::1]:1883").is_ok());
        assert!(parse_mqtt_url("mqtt://nats-1.cer.example:1883").is_ok());
        let list = GOOD.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "urls = [\"mqtt://n1:1883\", \"mqtts://n2:8883\", \"mqtt://n3\"]",
        );
        assert_eq!(diags(&list), "");
        let cfg: SiteConfig = toml::from_str(&list).unwrap();
        let mut d = Vec::new();
        let got = check_url_list(
            "mqtt",
            cfg.mqtt.url.as_ref(),
            cfg.mqtt.urls.as_ref(),
            true,
            &mut d,
        );
        assert_eq!(
            got.iter()
                .map(|b| (b.tls, b.host.as_str(), b.port))
                .collect::<Vec<_>>(),
            [(false, "n1", 1883), (true, "n2", 8883), (false, "n3", 1883)]
        );
        // One bad entry in the list is pointed at on its own line.
        let one_bad = GOOD.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "urls = [\n  \"mqtt://n1:1883\",\n  \"mqtt://n2:1883,n3:1883\",\n]",
        );
        let out = diags(&one_bad);
        let bad_line = one_bad
            .lines()
            .position(|l| l.contains("n2:1883,n3"))
            .unwrap()
            + 1;
        assert!(out.contains(&format!("s.toml:{bad_line}:3: ")), "{out}");
        // Both, neither, an empty list and a repeated URL are refused.
        let both = GOOD.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"mqtt://n1:1883\"\nurls = [\"mqtt://n2:1883\"]",
        );
        assert!(diags(&both).contains("both url and urls"));
        let neither = GOOD.replace("url = \"mqtt://127.0.0.1:1883\"\n", "");
        assert!(diags(&neither).contains("needs url ="));
        let empty = GOOD.replace("url = \"mqtt://127.0.0.1:1883\"", "urls = []");
        assert!(diags(&empty).contains("holds 0 URLs"));
        let twice = GOOD.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "urls = [\"mqtt://n1:1883\", \"mqtt://n1\"]",
        );
        assert!(diags(&twice).contains("listed twice"));
    }

    #[test]
    fn key_file_takes_hex_or_raw_and_refuses_short_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "00112233445566778899aabbccddeeff\n").unwrap();
        assert_eq!(read_key(&p).unwrap().len(), 16);
        std::fs::write(&p, b"a raw key of enough bytes").unwrap();
        assert_eq!(read_key(&p).unwrap(), b"a raw key of enough bytes");
        std::fs::write(&p, "abcd").unwrap();
        assert!(matches!(read_key(&p), Err(LoadError::Key { .. })));
    }

    #[test]
    fn loading_a_config_that_is_not_utf8_names_the_line_and_column_of_the_bad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, b"[site]\nid = \"d\xf6mus\"\n").unwrap();
        match load(&p) {
            Err(LoadError::Invalid(msg)) => {
                assert!(
                    msg.starts_with(&format!("{}:2:8: byte 0xf6", p.display())),
                    "{msg}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../config/site.example.toml");
        assert_eq!(diags(text), "");
    }
}
