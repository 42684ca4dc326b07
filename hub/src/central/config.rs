//! The central hub's config (`central.toml`): community, broker, web, storage, prices, substations,
//! sites, members, plants and which site meter measures which POD.
//!
//! Parsing keeps byte spans so that `socer check` can point at the offending line; [`load`] turns a
//! valid file into a plain [`CentralConfig`]. It never opens sockets or databases.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Deserialize;
use toml::Spanned;

use crate::diag::Diag;

/// Shortest accepted HMAC key, bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// A validated central config.
#[derive(Debug, Clone)]
pub struct CentralConfig {
    pub community: String,
    pub name: String,
    pub timezone: chrono_tz::Tz,
    pub latitude: f64,
    pub longitude: f64,
    /// Settlement period: 60 (the CER rule) or 15 minutes.
    pub period_minutes: u32,
    pub raw_retention_days: u32,
    pub broker: BrokerConfig,
    pub web: WebConfig,
    pub storage_path: PathBuf,
    pub prices: PricesConfig,
    pub substations: Vec<Substation>,
    pub sites: Vec<SiteConfig>,
    pub members: Vec<Member>,
    pub plants: Vec<Plant>,
    pub meters: Vec<MeterMap>,
    /// `[[replacement]]`: meters replaced, as declared by the technician.
    pub replacements: Vec<MeterReplacement>,
    /// `[signal]`: load-shift levels, forecast and alerts (all defaults when absent).
    pub signal: crate::central::signal::config::SignalConfig,
    /// `[[flex]]`: the sites' flexible loads, for targeted alerts.
    pub flex: Vec<crate::central::signal::config::FlexLoad>,
    /// `[keys] signing_key_file`: the hub's Ed25519 key that signs the broadcasts (`None`: the
    /// hub signs with a temporary key no site knows, and says so).
    pub signing_key: Option<crate::wire::HubSigningKey>,
}

#[derive(Debug, Clone)]
pub enum BrokerConfig {
    /// The broker runs inside the hub (rumqttd).
    Embedded {
        listen: std::net::SocketAddr,
        tls: Option<TlsFiles>,
        hub_user: String,
        hub_password: String,
        /// Largest MQTT payload the broker accepts, bytes.
        max_payload_bytes: usize,
    },
    /// Mosquitto, EMQX or another broker reached by URL.
    External {
        /// The first of `urls`.
        url: String,
        /// Every broker (the nodes of a cluster), in order: the hub moves to the next when one
        /// fails (`[broker] url = "…"` or `urls = ["…", …]`).
        urls: Vec<String>,
        username: String,
        password: String,
        /// PEM of the CA that signed the broker's certificate (`mqtts://` only); `None` trusts
        /// the system's root certificates.
        ca_file: Option<PathBuf>,
        /// QoS of the hub's subscriptions: 1, or 0 on a NATS cluster (see the site's
        /// `[mqtt] subscribe_qos`).
        subscribe_qos: u8,
    },
}

/// The embedded broker's TLS listener: where it listens and its certificate and key (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub listen: std::net::SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: std::net::SocketAddr,
    /// Bearer token for reports with per-member data; `None` disables those reports.
    pub report_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PricesConfig {
    /// Zonal price Pz (€/MWh) without a price file, and for the periods the file does not cover.
    pub zonal_eur_mwh: Option<f64>,
    /// CSV file `time,eur_mwh`, hourly or quarter-hour rows (`tariff::parse_price_csv`).
    pub zonal_file: Option<PathBuf>,
    /// ARERA unit valorisation (TRASe + BTAU), €/MWh.
    pub cuaf_eur_mwh: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Substation {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub id: String,
    pub name: String,
    /// The site key: its messages are sealed with it (`wire`), the hub's acks and summaries too.
    pub key: Vec<u8>,
    /// During a key rotation, the key the site used before (`previous_key`): the hub opens
    /// messages with `key` first, then with this one, and seals its acks and summaries with the
    /// one the site used last (`central::sites`). `None` outside a rotation.
    pub previous_key: Option<Vec<u8>>,
    /// The site's broker password (embedded broker / Mosquitto password file).
    pub password: String,
    pub members: Vec<String>,
    /// The primary substation the building is on (`substation` of a `sites.d` entry), if given.
    pub substation: Option<String>,
    /// The `sites.d/ID.toml` file the site comes from; `None` for a `[[site]]` of the main file.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    Household,
    Sme,
    Public,
    ThirdSector,
    Business,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub kind: MemberKind,
    pub pod: String,
    pub substation: String,
    pub site: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plant {
    pub id: String,
    pub pod: String,
    pub kind: String,
    pub peak_kw: f64,
    pub commissioned: NaiveDate,
    pub region: String,
    /// Share of the investment covered by a capital grant, 0..=0.4.
    pub grant_share: f64,
    /// Whether the plant's injection counts for shared energy (new plant, within the CER rules).
    pub eligible: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Grid,
    Production,
    Consumption,
    Storage,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "grid" => Some(Role::Grid),
            "production" => Some(Role::Production),
            "consumption" => Some(Role::Consumption),
            "storage" => Some(Role::Storage),
            _ => None,
        }
    }
}

/// Which POD a site meter measures, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterMap {
    pub site: String,
    pub meter: String,
    pub pod: String,
    pub role: Role,
    /// The most the meter can physically count, W (`max_power_kw` in the file, or the default of
    /// [`default_max_power_w`]). Counters that rise faster than this are not believed.
    pub max_power_w: f64,
}

/// A meter replacement declared by the technician (`[[replacement]]`): readings of the mapped
/// meter before `at` are the old device's, from `at` the new one's; the energy across it is
/// exact from the old final and new initial counters (Wh here, kWh in the file).
#[derive(Debug, Clone, PartialEq)]
pub struct MeterReplacement {
    pub site: String,
    pub meter: String,
    pub at: chrono::DateTime<chrono::Utc>,
    pub imp: Option<crate::central::energy::Handover>,
    pub exp: Option<crate::central::energy::Handover>,
}

/// Largest `max_power_kw` a meter may be given (a 100 MW connection is far beyond any member).
pub const MAX_METER_POWER_KW: f64 = 100_000.0;
/// A meter's maximum power when its mapping names none: 2 MW, the upper end of a member's
/// medium-voltage supply; production meters default to 1.5 × the peak of the plants on their POD.
pub const DEFAULT_METER_MAX_KW: f64 = 2_000.0;

/// The default maximum power of a meter of `role` on a POD whose plants sum to `plants_peak_kw`.
pub fn default_max_power_w(role: Role, plants_peak_kw: f64) -> f64 {
    if role == Role::Production && plants_peak_kw > 0.0 {
        plants_peak_kw * 1.5 * 1000.0
    } else {
        DEFAULT_METER_MAX_KW * 1000.0
    }
}

impl CentralConfig {
    pub fn site(&self, id: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.id == id)
    }
    /// (site, meter) → mapping, for fast lookup in the ingest path.
    pub fn meter_index(&self) -> HashMap<(String, String), MeterMap> {
        self.meters
            .iter()
            .map(|m| ((m.site.clone(), m.meter.clone()), m.clone()))
            .collect()
    }
    /// POD → substation id, from the members.
    pub fn pod_substation(&self) -> HashMap<String, String> {
        self.members
            .iter()
            .map(|m| (m.pod.clone(), m.substation.clone()))
            .collect()
    }
    pub fn period_seconds(&self) -> i64 {
        i64::from(self.period_minutes) * 60
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config:\n{0}")]
    Invalid(String),
}

/// Read, validate and resolve a central config (key files are read relative to the config's folder).
pub fn load(path: &Path) -> Result<CentralConfig, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = crate::diag::utf8_text(&bytes)
        .map_err(|d| ConfigError::Invalid(crate::diag::render_bytes(path, &bytes, &[d])))?;
    parse(path, text).map_err(|diags| ConfigError::Invalid(crate::diag::render(path, text, &diags)))
}

/// Validate a config text; an empty list means it is valid.
pub fn check(path: &Path, text: &str) -> Vec<Diag> {
    match parse(path, text) {
        Ok(_) => vec![],
        Err(d) => d,
    }
}

/// Warnings about a valid config (they do not make it invalid), each a whole
/// `FILE:LINE:COL: warning: message` line: the hours a price file leaves uncovered.
pub fn warnings(path: &Path, text: &str) -> Vec<String> {
    match parse(path, text) {
        Ok(cfg) => super::report::price_warnings(&cfg),
        Err(_) => vec![],
    }
}

/// The hub's signing key file: the 32-byte Ed25519 seed in hex, readable by its owner only.
fn read_signing_key(
    path: &Path,
    at: &S<PathBuf>,
    d: &mut Vec<Diag>,
) -> Option<crate::wire::HubSigningKey> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            d.push(Diag::new(
                sp(at),
                format!(
                    "cannot read signing key file {}: {e} (create it with `socer keygen --out FILE`)",
                    path.display()
                ),
            ));
            return None;
        }
    };
    if meta.permissions().mode() & 0o077 != 0 {
        d.push(Diag::new(
            sp(at),
            format!(
                "signing key file {} is readable by others: chmod 600 it",
                path.display()
            ),
        ));
        return None;
    }
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| crate::wire::signing_key_from_hex(&t).map_err(|e| e.to_string()));
    match parsed {
        Ok(k) => Some(k),
        Err(e) => {
            d.push(Diag::new(
                sp(at),
                format!("signing key file {}: {e}", path.display()),
            ));
            None
        }
    }
}

// ---- the file as written, with spans ----

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    central: RawCentral,
    #[serde(default)]
    broker: Option<RawBroker>,
    #[serde(default)]
    web: Option<RawWeb>,
    storage: RawStorage,
    #[serde(default)]
    prices: Option<RawPrices>,
    #[serde(default)]
    substation: Vec<RawSubstation>,
    #[serde(default)]
    site: Vec<RawSite>,
    #[serde(default)]
    member: Vec<RawMember>,
    #[serde(default)]
    plant: Vec<RawPlant>,
    #[serde(default)]
    meter: Vec<RawMeter>,
    #[serde(default)]
    replacement: Vec<RawReplacement>,
    #[serde(default)]
    signal: crate::central::signal::config::SignalConfig,
    #[serde(default)]
    flex: Vec<crate::central::signal::config::FlexLoad>,
    #[serde(default)]
    keys: Option<RawKeys>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    signing_key_file: S<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCentral {
    community: S<String>,
    name: String,
    #[serde(default = "default_tz")]
    timezone: S<String>,
    latitude: S<f64>,
    longitude: S<f64>,
    #[serde(default = "default_period")]
    period_minutes: S<u32>,
    #[serde(default = "default_retention")]
    raw_retention_days: S<u32>,
}

fn default_tz() -> S<String> {
    Spanned::new(0..0, "Europe/Rome".to_string())
}
fn default_period() -> S<u32> {
    Spanned::new(0..0, 60)
}
fn default_retention() -> S<u32> {
    Spanned::new(0..0, 35)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    #[serde(default)]
    listen: Option<S<String>>,
    #[serde(default)]
    tls_listen: Option<S<String>>,
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    #[serde(default)]
    tls_key: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    url: Option<S<String>>,
    #[serde(default)]
    urls: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    subscribe_qos: Option<S<u8>>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    max_payload_bytes: Option<S<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    listen: S<String>,
    #[serde(default)]
    report_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    #[serde(default)]
    zonal_eur_mwh: Option<S<f64>>,
    #[serde(default)]
    zonal_file: Option<S<PathBuf>>,
    #[serde(default = "default_cuaf")]
    cuaf_eur_mwh: S<f64>,
}

fn default_cuaf() -> S<f64> {
    // ARERA, 2024: TRASe + BTAU.
    Spanned::new(0..0, 11.22)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubstation {
    id: S<String>,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    id: S<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    key: Option<S<String>>,
    #[serde(default)]
    previous_key: Option<S<String>>,
    #[serde(default)]
    substation: Option<S<String>>,
    #[serde(default)]
    key_file: Option<S<PathBuf>>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    members: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    id: S<String>,
    #[serde(default)]
    name: String,
    kind: MemberKind,
    pod: S<String>,
    substation: S<String>,
    #[serde(default)]
    site: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlant {
    id: S<String>,
    pod: S<String>,
    #[serde(default = "default_plant_kind")]
    kind: S<String>,
    peak_kw: S<f64>,
    commissioned: S<String>,
    #[serde(default = "default_region")]
    region: S<String>,
    #[serde(default)]
    grant_share: Option<S<f64>>,
    #[serde(default = "yes")]
    eligible: bool,
}

fn default_plant_kind() -> S<String> {
    Spanned::new(0..0, "pv".to_string())
}
fn default_region() -> S<String> {
    Spanned::new(0..0, "Lombardia".to_string())
}
fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeter {
    site: S<String>,
    name: S<String>,
    pod: S<String>,
    role: S<String>,
    #[serde(default)]
    max_power_kw: Option<S<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplacement {
    site: S<String>,
    meter: S<String>,
    at: S<String>,
    #[serde(default)]
    old_imp_kwh: Option<S<f64>>,
    #[serde(default)]
    new_imp_kwh: Option<S<f64>>,
    #[serde(default)]
    old_exp_kwh: Option<S<f64>>,
    #[serde(default)]
    new_exp_kwh: Option<S<f64>>,
}

/// Largest counter reading a replacement may declare, kWh (beyond any meter's register).
pub const MAX_COUNTER_KWH: f64 = 1.0e10;

/// A replacement's time: RFC 3339 with an offset, or `YYYY-MM-DD HH:MM[:SS]` local time in `tz`.
fn parse_replacement_time(
    text: &str,
    tz: chrono_tz::Tz,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::TimeZone;
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let local = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .ok_or_else(|| {
            "at must be a time like \"2026-03-14T10:20:00+01:00\" or \"2026-03-14 10:20\" (local)"
                .to_string()
        })?;
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => Ok(t.with_timezone(&chrono::Utc)),
        chrono::LocalResult::Ambiguous(..) => Err(format!(
            "{text} happens twice in {tz} (the clocks go back): give the offset, e.g. \"{}+02:00\"",
            local.format("%Y-%m-%dT%H:%M:%S")
        )),
        chrono::LocalResult::None => Err(format!(
            "{text} does not exist in {tz} (the clocks go forward)"
        )),
    }
}

/// One counter's handover from a replacement's pair of readings (both or neither).
fn handover(
    d: &mut Vec<Diag>,
    old: &Option<S<f64>>,
    new: &Option<S<f64>>,
    what: &str,
    at: Option<Range<usize>>,
) -> Option<crate::central::energy::Handover> {
    let ok = |k: &S<f64>, d: &mut Vec<Diag>| {
        let v = *k.get_ref();
        if !(v.is_finite() && (0.0..=MAX_COUNTER_KWH).contains(&v)) {
            d.push(Diag::new(
                sp(k),
                format!("a counter reading must be a number of kWh from 0 to {MAX_COUNTER_KWH}"),
            ));
        }
        v * 1000.0
    };
    match (old, new) {
        (Some(o), Some(n)) => Some(crate::central::energy::Handover {
            old_final_wh: ok(o, d),
            new_initial_wh: ok(n, d),
        }),
        (None, None) => None,
        (Some(k), None) | (None, Some(k)) => {
            d.push(Diag::new(
                sp(k).or(at),
                format!("give both old_{what}_kwh and new_{what}_kwh (the old meter's final and the new one's initial reading)"),
            ));
            None
        }
    }
}

fn sp<T>(s: &S<T>) -> Option<Range<usize>> {
    let r = s.span();
    if r == (0..0) {
        None
    } else {
        Some(r)
    }
}

/// Reports a second use of the same id.
fn dup_check<'a>(diags: &mut Vec<Diag>, what: &str, ids: impl Iterator<Item = &'a S<String>>) {
    let mut seen = HashSet::new();
    for id in ids {
        if !seen.insert(id.get_ref().as_str()) {
            diags.push(Diag::new(
                sp(id),
                format!("duplicate {what} id {:?}", id.get_ref()),
            ));
        }
    }
}

fn parse(path: &Path, text: &str) -> Result<CentralConfig, Vec<Diag>> {
    let raw: RawFile = toml::from_str(text).map_err(|e| vec![Diag::from_toml(&e)])?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut d = Vec::new();

    let c = &raw.central;
    let community = c.community.get_ref().clone();
    if community.is_empty() || community.contains(['/', '+', '#']) {
        d.push(Diag::new(
            sp(&c.community),
            "community id must be non-empty, without '/', '+' or '#'",
        ));
    }
    let timezone = match c.timezone.get_ref().parse::<chrono_tz::Tz>() {
        Ok(tz) => tz,
        Err(_) => {
            d.push(Diag::new(
                sp(&c.timezone),
                "unknown time zone (expected e.g. \"Europe/Rome\")",
            ));
            chrono_tz::Europe::Rome
        }
    };
    if !(-90.0..=90.0).contains(c.latitude.get_ref()) {
        d.push(Diag::new(
            sp(&c.latitude),
            "latitude must be between -90 and 90",
        ));
    }
    if !(-180.0..=180.0).contains(c.longitude.get_ref()) {
        d.push(Diag::new(
            sp(&c.longitude),
            "longitude must be between -180 and 180",
        ));
    }
    let period_minutes = *c.period_minutes.get_ref();
    if period_minutes != 60 && period_minutes != 15 {
        d.push(Diag::new(
            sp(&c.period_minutes),
            "period_minutes must be 60 or 15",
        ));
    }
    let raw_retention_days = *c.raw_retention_days.get_ref();
    if !(1..=MAX_RETENTION_DAYS).contains(&raw_retention_days) {
        d.push(Diag::new(
            sp(&c.raw_retention_days),
            format!("raw_retention_days must be in 1..={MAX_RETENTION_DAYS}"),
        ));
    }

    let broker = parse_broker(raw.broker.as_ref(), base, &mut d);
    let web = match &raw.web {
        None => WebConfig {
            listen: ([127, 0, 0, 1], 8080).into(),
            report_token: None,
        },
        Some(w) => {
            let listen = w.listen.get_ref().parse().unwrap_or_else(|_| {
                d.push(Diag::new(
                    sp(&w.listen),
                    "listen must be an address:port, e.g. \"0.0.0.0:8080\"",
                ));
                ([127, 0, 0, 1], 8080).into()
            });
            WebConfig {
                listen,
                report_token: w.report_token.clone().filter(|t| !t.is_empty()),
            }
        }
    };
    let prices = match &raw.prices {
        None => PricesConfig {
            zonal_eur_mwh: None,
            zonal_file: None,
            cuaf_eur_mwh: 11.22,
        },
        Some(p) => {
            if let Some(z) = &p.zonal_eur_mwh {
                if !(MIN_PRICE_EUR_MWH..=MAX_PRICE_EUR_MWH).contains(z.get_ref()) {
                    d.push(Diag::new(
                        sp(z),
                        format!("zonal_eur_mwh must be a number in {MIN_PRICE_EUR_MWH}..={MAX_PRICE_EUR_MWH}"),
                    ));
                }
            }
            if let Some(f) = &p.zonal_file {
                let path = base.join(f.get_ref());
                if let Err(msg) = super::report::price_file_problem(&path) {
                    d.push(Diag::new(sp(f), msg));
                }
            }
            if p.zonal_eur_mwh.is_none() && p.zonal_file.is_none() {
                d.push(Diag::new(
                    None,
                    "[prices] needs zonal_eur_mwh or zonal_file for the incentive",
                ));
            }
            if !(0.0..=MAX_CUAF_EUR_MWH).contains(p.cuaf_eur_mwh.get_ref()) {
                d.push(Diag::new(
                    sp(&p.cuaf_eur_mwh),
                    format!("cuaf_eur_mwh must be a number in 0..={MAX_CUAF_EUR_MWH}"),
                ));
            }
            PricesConfig {
                zonal_eur_mwh: p.zonal_eur_mwh.as_ref().map(|z| *z.get_ref()),
                zonal_file: p.zonal_file.as_ref().map(|f| base.join(f.get_ref())),
                cuaf_eur_mwh: *p.cuaf_eur_mwh.get_ref(),
            }
        }
    };

    dup_check(&mut d, "substation", raw.substation.iter().map(|s| &s.id));
    dup_check(&mut d, "site", raw.site.iter().map(|s| &s.id));
    dup_check(&mut d, "member", raw.member.iter().map(|s| &s.id));
    dup_check(&mut d, "plant", raw.plant.iter().map(|s| &s.id));
    dup_check(&mut d, "member POD", raw.member.iter().map(|s| &s.pod));

    let substation_ids: HashSet<&str> = raw
        .substation
        .iter()
        .map(|s| s.id.get_ref().as_str())
        .collect();
    let (dir_sites, dir_problems) = read_sites_dir(&sites_dir(path));
    let site_ids: HashSet<&str> = raw
        .site
        .iter()
        .chain(dir_sites.iter().map(|ds| &ds.raw))
        .map(|s| s.id.get_ref().as_str())
        .collect();
    let member_ids: HashSet<&str> = raw.member.iter().map(|s| s.id.get_ref().as_str()).collect();
    let pods: HashSet<&str> = raw
        .member
        .iter()
        .map(|s| s.pod.get_ref().as_str())
        .collect();

    let mut sites: Vec<SiteConfig> = raw
        .site
        .iter()
        .map(|s| site_entry(s, base, &member_ids, &substation_ids, &mut d))
        .collect();
    // `sites.d/ID.toml` beside the main file: one enrolled site each (`socer central add-site`).
    // Their problems are reported as `FILE:LINE:COL` of the site file, not of the main file.
    for ds in &dir_sites {
        let mut local = Vec::new();
        let mut entry = site_entry(&ds.raw, &ds.base, &member_ids, &substation_ids, &mut local);
        if !crate::site::config::valid_id(&entry.id) || entry.id.len() > MAX_SITE_ID_BYTES {
            local.push(Diag::new(
                sp(&ds.raw.id),
                format!(
                    "site id {:?} must be 1 to {MAX_SITE_ID_BYTES} lowercase letters, digits, '-' or '_' (the site agent's rule: it is part of MQTT topics)",
                    entry.id
                ),
            ));
        }
        if let Some(first) = raw.site.iter().find(|m| m.id.get_ref() == &entry.id) {
            local.push(Diag::new(
                sp(&ds.raw.id),
                format!(
                    "site {:?} is also a [[site]] of {}:{}: keep one of the two",
                    entry.id,
                    path.display(),
                    sp(&first.id).map_or(1, |r| crate::diag::line_col(text, r.start).0)
                ),
            ));
        }
        if !local.is_empty() {
            d.push(Diag::new(
                None,
                crate::diag::render(&ds.path, &ds.text, &local)
                    .trim_end()
                    .to_string(),
            ));
        }
        entry.file = Some(ds.path.clone());
        sites.push(entry);
    }
    d.extend(dir_problems);

    let mut members = Vec::new();
    for m in &raw.member {
        if !substation_ids.contains(m.substation.get_ref().as_str()) {
            d.push(Diag::new(
                sp(&m.substation),
                format!(
                    "member {:?} is on undefined substation {:?}",
                    m.id.get_ref(),
                    m.substation.get_ref()
                ),
            ));
        }
        if let Some(site) = &m.site {
            if !site_ids.contains(site.get_ref().as_str()) {
                d.push(Diag::new(
                    sp(site),
                    format!("unknown site {:?}", site.get_ref()),
                ));
            }
        }
        members.push(Member {
            id: m.id.get_ref().clone(),
            name: m.name.clone(),
            kind: m.kind,
            pod: m.pod.get_ref().clone(),
            substation: m.substation.get_ref().clone(),
            site: m.site.as_ref().map(|s| s.get_ref().clone()),
        });
    }

    let mut plants = Vec::new();
    for p in &raw.plant {
        if !pods.contains(p.pod.get_ref().as_str()) {
            d.push(Diag::new(
                sp(&p.pod),
                format!(
                    "plant {:?} is on unknown POD {:?} (no member has it)",
                    p.id.get_ref(),
                    p.pod.get_ref()
                ),
            ));
        }
        if super::tariff::Region::from_name(p.region.get_ref()).is_none() {
            d.push(Diag::new(
                sp(&p.region),
                format!(
                    "{:?} is not an Italian region (e.g. \"Lombardia\")",
                    p.region.get_ref()
                ),
            ));
        }
        if p.kind.get_ref() != "pv" {
            d.push(Diag::new(sp(&p.kind), "plant kind must be \"pv\""));
        }
        let peak = *p.peak_kw.get_ref();
        if !(peak.is_finite() && peak > 0.0 && peak <= MAX_PLANT_KW) {
            d.push(Diag::new(
                sp(&p.peak_kw),
                format!("peak_kw must be a number > 0 and <= {MAX_PLANT_KW}"),
            ));
        }
        let commissioned = NaiveDate::parse_from_str(p.commissioned.get_ref(), "%Y-%m-%d")
            .unwrap_or_else(|_| {
                d.push(Diag::new(
                    sp(&p.commissioned),
                    "commissioned must be a date YYYY-MM-DD",
                ));
                NaiveDate::MIN
            });
        let grant_share = p.grant_share.as_ref().map(|g| *g.get_ref()).unwrap_or(0.0);
        if let Some(g) = &p.grant_share {
            if !(0.0..=0.4).contains(g.get_ref()) {
                d.push(Diag::new(
                    sp(g),
                    "grant_share must be between 0 and 0.4 (the PNRR grant covers at most 40 %)",
                ));
            }
        }
        plants.push(Plant {
            id: p.id.get_ref().clone(),
            pod: p.pod.get_ref().clone(),
            kind: p.kind.get_ref().clone(),
            peak_kw: peak,
            commissioned,
            region: p.region.get_ref().clone(),
            grant_share,
            eligible: p.eligible,
        });
    }

    let mut meters = Vec::new();
    let mut seen_meter = HashSet::new();
    for m in &raw.meter {
        if !site_ids.contains(m.site.get_ref().as_str()) {
            d.push(Diag::new(
                sp(&m.site),
                format!("unknown site {:?}", m.site.get_ref()),
            ));
        }
        if !pods.contains(m.pod.get_ref().as_str()) {
            d.push(Diag::new(
                sp(&m.pod),
                format!("unknown POD {:?} (no member has it)", m.pod.get_ref()),
            ));
        }
        if !seen_meter.insert((m.site.get_ref().clone(), m.name.get_ref().clone())) {
            d.push(Diag::new(
                sp(&m.name),
                format!(
                    "meter {:?} of site {:?} is mapped twice",
                    m.name.get_ref(),
                    m.site.get_ref()
                ),
            ));
        }
        let role = Role::parse(m.role.get_ref()).unwrap_or_else(|| {
            d.push(Diag::new(
                sp(&m.role),
                "role must be grid, production, consumption or storage",
            ));
            Role::Storage
        });
        let plants_peak_kw: f64 = raw
            .plant
            .iter()
            .filter(|p| p.pod.get_ref() == m.pod.get_ref())
            .map(|p| *p.peak_kw.get_ref())
            .filter(|k| k.is_finite() && *k > 0.0)
            .sum();
        let max_power_w = match &m.max_power_kw {
            Some(k) => {
                let kw = *k.get_ref();
                if !(kw.is_finite() && kw > 0.0 && kw <= MAX_METER_POWER_KW) {
                    d.push(Diag::new(
                        sp(k),
                        format!("max_power_kw must be a number > 0 and <= {MAX_METER_POWER_KW}"),
                    ));
                }
                kw * 1000.0
            }
            None => default_max_power_w(role, plants_peak_kw),
        };
        meters.push(MeterMap {
            site: m.site.get_ref().clone(),
            meter: m.name.get_ref().clone(),
            pod: m.pod.get_ref().clone(),
            role,
            max_power_w,
        });
    }
    // One grid meter per POD at most: two would double-count the exchange.
    let mut grid_by_pod: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, m) in meters.iter().enumerate() {
        if m.role == Role::Grid && grid_by_pod.insert(m.pod.as_str(), i).is_some() {
            d.push(Diag::new(
                sp(&raw.meter[i].pod),
                format!("POD {:?} has two grid meters", m.pod),
            ));
        }
    }

    let mut replacements = Vec::new();
    let mut seen_replacement = HashSet::new();
    for r in &raw.replacement {
        let (site, meter) = (r.site.get_ref(), r.meter.get_ref());
        if !meters.iter().any(|m| &m.site == site && &m.meter == meter) {
            d.push(Diag::new(
                sp(&r.meter),
                format!("meter {meter:?} of site {site:?} is not a [[meter]]"),
            ));
        }
        let at = match parse_replacement_time(r.at.get_ref(), timezone) {
            Ok(t) => t,
            Err(e) => {
                d.push(Diag::new(sp(&r.at), e));
                chrono::DateTime::<chrono::Utc>::MIN_UTC
            }
        };
        if !seen_replacement.insert((site.clone(), meter.clone(), at)) {
            d.push(Diag::new(
                sp(&r.at),
                format!("meter {meter:?} of site {site:?} is replaced twice at the same time"),
            ));
        }
        let imp = handover(&mut d, &r.old_imp_kwh, &r.new_imp_kwh, "imp", sp(&r.at));
        let exp = handover(&mut d, &r.old_exp_kwh, &r.new_exp_kwh, "exp", sp(&r.at));
        if imp.is_none()
            && exp.is_none()
            && r.old_imp_kwh.is_none()
            && r.old_exp_kwh.is_none()
            && r.new_imp_kwh.is_none()
            && r.new_exp_kwh.is_none()
        {
            d.push(Diag::new(
                sp(&r.meter),
                "a replacement needs the readings of at least one counter: old_imp_kwh and new_imp_kwh, or old_exp_kwh and new_exp_kwh",
            ));
        }
        replacements.push(MeterReplacement {
            site: site.clone(),
            meter: meter.clone(),
            at,
            imp,
            exp,
        });
    }

    for p in raw.signal.problems() {
        d.push(Diag::new(None, p));
    }
    signal_bounds(&raw.signal, &mut d);
    for f in &raw.flex {
        let power_ok = f.power_kw.is_finite() && f.power_kw > 0.0 && f.power_kw <= MAX_PLANT_KW;
        if !power_ok || !(0.0..=24.0).contains(&f.shift_hours) {
            d.push(Diag::new(
                None,
                format!(
                    "flex {:?}: power_kw must be in (0, {MAX_PLANT_KW}] and shift_hours in 0..=24",
                    f.name
                ),
            ));
        }
        if !site_ids.contains(f.site.as_str()) {
            d.push(Diag::new(
                None,
                format!("flex {:?}: unknown site {:?}", f.name, f.site),
            ));
        }
    }

    let signing_key = raw.keys.as_ref().and_then(|k| {
        read_signing_key(
            &crate::systemd::config_path(base, k.signing_key_file.get_ref()),
            &k.signing_key_file,
            &mut d,
        )
    });

    if !d.is_empty() {
        return Err(d);
    }
    Ok(CentralConfig {
        community,
        name: c.name.clone(),
        timezone,
        latitude: *c.latitude.get_ref(),
        longitude: *c.longitude.get_ref(),
        period_minutes,
        raw_retention_days,
        broker,
        web,
        storage_path: base.join(&raw.storage.path),
        prices,
        substations: raw
            .substation
            .iter()
            .map(|s| Substation {
                id: s.id.get_ref().clone(),
                name: s.name.clone(),
            })
            .collect(),
        sites,
        members,
        plants,
        meters,
        replacements,
        signal: raw.signal.clone(),
        flex: raw.flex.clone(),
        signing_key,
    })
}

/// Longest site id `socer central add-site` and `sites.d` accept, bytes.
pub const MAX_SITE_ID_BYTES: usize = 64;

/// The folder of enrolled sites beside a central config: `sites.d/` next to `central.toml`.
pub fn sites_dir(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("sites.d")
}

/// One `sites.d/ID.toml` file as read.
struct DirSite {
    path: PathBuf,
    text: String,
    base: PathBuf,
    raw: RawSite,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSiteFile {
    site: Vec<RawSite>,
}

/// The `*.toml` files of a `sites.d` folder (names in order; others, and names starting with a
/// dot, ignored), each holding exactly one `[[site]]` whose id is the file's name. A missing
/// folder is no site; a file that cannot be read or parsed is a problem naming it.
fn read_sites_dir(dir: &Path) -> (Vec<DirSite>, Vec<Diag>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (found, problems),
        Err(e) => {
            problems.push(Diag::new(
                None,
                format!("{}: cannot read the folder: {e}", dir.display()),
            ));
            return (found, problems);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    paths.sort();
    for path in paths {
        let problem = |m: String| Diag::new(None, format!("{}: {m}", path.display()));
        let bytes = match crate::diag::read_bounded(&path, crate::diag::MAX_FILE_BYTES) {
            Ok(b) => b,
            Err(e) => {
                problems.push(problem(format!("cannot read as a site file: {e}")));
                continue;
            }
        };
        let text = match crate::diag::utf8_text(&bytes) {
            Ok(t) => t.to_string(),
            Err(d) => {
                problems.push(Diag::new(
                    None,
                    crate::diag::render_bytes(&path, &bytes, &[d])
                        .trim_end()
                        .to_string(),
                ));
                continue;
            }
        };
        let parsed: RawSiteFile = match toml::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                problems.push(Diag::new(
                    None,
                    crate::diag::render(&path, &text, &[Diag::from_toml(&e)])
                        .trim_end()
                        .to_string(),
                ));
                continue;
            }
        };
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let mut sites = parsed.site.into_iter();
        let (Some(raw), None) = (sites.next(), sites.next()) else {
            problems.push(problem(
                "a site file holds exactly one [[site]] (one file per site)".into(),
            ));
            continue;
        };
        if raw.id.get_ref() != stem {
            let msg = format!(
                "the site's id is {:?} but the file is named {stem:?}.toml: a site file is named after its site (sites.d/ID.toml)",
                raw.id.get_ref()
            );
            problems.push(Diag::new(
                None,
                crate::diag::render(&path, &text, &[Diag::new(sp(&raw.id), msg)])
                    .trim_end()
                    .to_string(),
            ));
            continue;
        }
        found.push(DirSite {
            base: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            path,
            text,
            raw,
        });
    }
    (found, problems)
}

/// A site key given inline: hex, at least [`MIN_KEY_BYTES`].
fn inline_key(k: &S<String>, what: &str, d: &mut Vec<Diag>) -> Vec<u8> {
    match hex::decode(k.get_ref().trim()) {
        Ok(k) if k.len() >= MIN_KEY_BYTES => k,
        Ok(_) => {
            d.push(Diag::new(
                sp(k),
                format!(
                    "{what} must be at least {MIN_KEY_BYTES} bytes ({} hex digits)",
                    MIN_KEY_BYTES * 2
                ),
            ));
            vec![]
        }
        Err(_) => {
            d.push(Diag::new(sp(k), format!("{what} must be hex digits")));
            vec![]
        }
    }
}

/// One `[[site]]` entry, checked (diagnostics with spans in the text it was read from).
fn site_entry(
    s: &RawSite,
    base: &Path,
    member_ids: &HashSet<&str>,
    substation_ids: &HashSet<&str>,
    d: &mut Vec<Diag>,
) -> SiteConfig {
    let id = s.id.get_ref();
    if id.is_empty() || id.contains(['/', '+', '#']) {
        d.push(Diag::new(
            sp(&s.id),
            "site id must be non-empty, without '/', '+' or '#'",
        ));
    }
    let key = match (&s.key, &s.key_file) {
        (Some(k), None) => inline_key(k, "key", d),
        (None, Some(f)) => {
            let p = crate::systemd::config_path(base, f.get_ref());
            match std::fs::read_to_string(&p) {
                Ok(t) => match hex::decode(t.trim()) {
                    Ok(k) if k.len() >= MIN_KEY_BYTES => k,
                    _ => {
                        d.push(Diag::new(
                            sp(f),
                            format!(
                                "{} must hold at least {} hex digits",
                                p.display(),
                                MIN_KEY_BYTES * 2
                            ),
                        ));
                        vec![]
                    }
                },
                Err(e) => {
                    d.push(Diag::new(
                        sp(f),
                        format!("cannot read key file {}: {e}", p.display()),
                    ));
                    vec![]
                }
            }
        }
        (Some(k), Some(_)) => {
            d.push(Diag::new(sp(k), "give either key or key_file, not both"));
            vec![]
        }
        (None, None) => {
            d.push(Diag::new(
                sp(&s.id),
                format!("site {id:?} has no key (add key = \"<hex>\" or key_file)"),
            ));
            vec![]
        }
    };
    let previous_key = s.previous_key.as_ref().map(|k| {
        let pk = inline_key(k, "previous_key", d);
        if !key.is_empty() && pk == key {
            d.push(Diag::new(
                sp(k),
                "previous_key is the same as key: remove it (the rotation is over)",
            ));
        }
        pk
    });
    for m in &s.members {
        if !member_ids.contains(m.get_ref().as_str()) {
            d.push(Diag::new(
                sp(m),
                format!("unknown member {:?} (not a [[member]] id)", m.get_ref()),
            ));
        }
    }
    if let Some(sub) = &s.substation {
        if !substation_ids.contains(sub.get_ref().as_str()) {
            d.push(Diag::new(
                sp(sub),
                format!(
                    "unknown substation {:?} (not a [[substation]] id of the central config)",
                    sub.get_ref()
                ),
            ));
        }
    }
    SiteConfig {
        id: id.clone(),
        name: s.name.clone(),
        key,
        previous_key,
        password: s.password.clone().unwrap_or_default(),
        members: s.members.iter().map(|m| m.get_ref().clone()).collect(),
        substation: s.substation.as_ref().map(|x| x.get_ref().clone()),
        file: None,
    }
}

/// Bounds of the central config's numbers (each diagnostic names the one it breaks).
pub const MAX_RETENTION_DAYS: u32 = 3650;
pub const MAX_PLANT_KW: f64 = 100_000.0;
pub const MIN_PRICE_EUR_MWH: f64 = -1_000.0;
pub const MAX_PRICE_EUR_MWH: f64 = 10_000.0;
pub const MAX_CUAF_EUR_MWH: f64 = 1_000.0;
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// `[signal]`'s numbers within what the signal engine is built for (a lookahead of u32::MAX
/// hours would be a forecast loop of half a million years).
fn signal_bounds(s: &crate::central::signal::config::SignalConfig, d: &mut Vec<Diag>) {
    let reals: [(&str, f64, f64, f64); 10] = [
        ("green_enter", s.green_enter, -1e6, 1e6),
        ("green_exit", s.green_exit, -1e6, 1e6),
        ("red_enter", s.red_enter, -1e6, 1e6),
        ("red_exit", s.red_exit, -1e6, 1e6),
        ("special", s.special, -1e6, 1e6),
        ("tilt_deg", s.tilt_deg, 0.0, 90.0),
        ("azimuth_deg", s.azimuth_deg, 0.0, 360.0),
        ("cloud_memory_hours", s.cloud_memory_hours, 0.0, 720.0),
        ("climatology", s.climatology, 0.0, 1.5),
        (
            "fallback_consumption_kw",
            s.fallback_consumption_kw,
            0.0,
            1e6,
        ),
    ];
    for (name, v, lo, hi) in reals {
        if !(lo..=hi).contains(&v) {
            d.push(Diag::new(
                None,
                format!("signal: {name} is {v}: it must be a number in {lo}..={hi}"),
            ));
        }
    }
    let whole: [(&str, u32, u32, u32); 4] = [
        ("min_dwell_minutes", s.min_dwell_minutes, 0, 1440),
        ("max_alerts_per_day", s.max_alerts_per_day, 0, 48),
        ("alert_lookahead_hours", s.alert_lookahead_hours, 1, 168),
        ("min_window_hours", s.min_window_hours, 1, 24),
    ];
    for (name, v, lo, hi) in whole {
        if !(lo..=hi).contains(&v) {
            d.push(Diag::new(
                None,
                format!("signal: {name} is {v}: it must be in {lo}..={hi}"),
            ));
        }
    }
}

/// Relative certificate paths are taken from the config's folder, like the storage path.
fn parse_broker(b: Option<&RawBroker>, base: &Path, d: &mut Vec<Diag>) -> BrokerConfig {
    let default_listen: std::net::SocketAddr = ([127, 0, 0, 1], 1883).into();
    let Some(b) = b else {
        return BrokerConfig::Embedded {
            listen: default_listen,
            tls: None,
            hub_user: "central".into(),
            hub_password: String::new(),
            max_payload_bytes: crate::wire::MAX_ENVELOPE_BYTES,
        };
    };
    let url_span = b
        .url
        .as_ref()
        .and_then(sp)
        .or_else(|| b.urls.as_ref().and_then(sp));
    if b.url.is_some() || b.urls.is_some() {
        crate::site::config::check_url_list("broker", b.url.as_ref(), b.urls.as_ref(), false, d);
        let texts: Vec<String> = b
            .url
            .iter()
            .chain(b.urls.iter().flat_map(|u| u.get_ref().iter()))
            .map(|u| u.get_ref().clone())
            .collect();
        if let Some(l) = &b.listen {
            d.push(Diag::new(
                sp(l),
                "listen is for the embedded broker; with url the broker is external",
            ));
        }
        if let Some(l) = &b.tls_listen {
            d.push(Diag::new(
                sp(l),
                "tls_listen is for the embedded broker; with url the broker is external",
            ));
        }
        if b.tls_cert.is_some() || b.tls_key.is_some() {
            d.push(Diag::new(
                url_span,
                "tls_cert and tls_key are for the embedded broker; to trust an external broker's certificate give ca_file",
            ));
        }
        let subscribe_qos = match &b.subscribe_qos {
            None => 1,
            Some(q) if *q.get_ref() <= 1 => *q.get_ref(),
            Some(q) => {
                d.push(Diag::new(sp(q), "subscribe_qos must be 0 or 1"));
                1
            }
        };
        return BrokerConfig::External {
            url: texts.first().cloned().unwrap_or_default(),
            urls: texts,
            subscribe_qos,
            username: b.username.clone().unwrap_or_else(|| "central".into()),
            password: broker_password(b, d),
            ca_file: b
                .ca_file
                .as_ref()
                .map(|f| crate::systemd::config_path(base, f)),
        };
    }
    if let Some(q) = &b.subscribe_qos {
        d.push(Diag::new(
            sp(q),
            "subscribe_qos is for an external broker (url or urls)",
        ));
    }
    let listen = match &b.listen {
        None => default_listen,
        Some(l) => l.get_ref().parse().unwrap_or_else(|_| {
            d.push(Diag::new(
                sp(l),
                "listen must be an address:port, e.g. \"0.0.0.0:1883\"",
            ));
            default_listen
        }),
    };
    if b.ca_file.is_some() {
        d.push(Diag::new(
            b.listen.as_ref().and_then(sp),
            "ca_file is for an external broker (url = \"mqtts://…\"); the hub reaches its embedded broker over plain loopback",
        ));
    }
    let default_tls_listen: std::net::SocketAddr = ([0, 0, 0, 0], 8883).into();
    let tls_listen = match &b.tls_listen {
        None => default_tls_listen,
        Some(l) => l.get_ref().parse().unwrap_or_else(|_| {
            d.push(Diag::new(
                sp(l),
                "tls_listen must be an address:port, e.g. \"0.0.0.0:8883\"",
            ));
            default_tls_listen
        }),
    };
    let tls = match (&b.tls_cert, &b.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            listen: tls_listen,
            cert: crate::systemd::config_path(base, cert),
            key: crate::systemd::config_path(base, key),
        }),
        (None, None) => {
            if let Some(l) = &b.tls_listen {
                d.push(Diag::new(sp(l), "tls_listen needs tls_cert and tls_key"));
            }
            None
        }
        _ => {
            d.push(Diag::new(
                b.listen.as_ref().and_then(sp),
                "give both tls_cert and tls_key, or neither",
            ));
            None
        }
    };
    let max_payload_bytes = match &b.max_payload_bytes {
        None => crate::wire::MAX_ENVELOPE_BYTES,
        Some(m) if (1024..=MAX_PAYLOAD_BYTES).contains(m.get_ref()) => *m.get_ref(),
        Some(m) => {
            d.push(Diag::new(
                sp(m),
                format!("max_payload_bytes must be in 1024..={MAX_PAYLOAD_BYTES}"),
            ));
            crate::wire::MAX_ENVELOPE_BYTES
        }
    };
    BrokerConfig::Embedded {
        listen,
        tls,
        hub_user: b.username.clone().unwrap_or_else(|| "central".into()),
        hub_password: broker_password(b, d),
        max_payload_bytes,
    }
}

/// `[broker] password`: the literal password, or `credential:NAME` (a systemd credential).
fn broker_password(b: &RawBroker, d: &mut Vec<Diag>) -> String {
    match b.password.as_deref().map(crate::systemd::secret) {
        None => String::new(),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            d.push(Diag::new(None, format!("[broker] password: {e}")));
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff";

    fn minimal() -> String {
        format!(
            r#"[central]
community = "socer"
name = "So.CER"
latitude = 46.17
longitude = 9.87

[storage]
path = "central.db"

[[substation]]
id = "cp-sondrio"
name = "CP Sondrio"

[[site]]
id = "domus-1"
key = "{KEY}"
members = ["m1"]

[[member]]
id = "m1"
kind = "household"
pod = "IT001E00000001"
substation = "cp-sondrio"

[[plant]]
id = "pv1"
pod = "IT001E00000001"
peak_kw = 20.0
commissioned = "2025-03-01"

[[meter]]
site = "domus-1"
name = "grid"
pod = "IT001E00000001"
role = "grid"
"#
        )
    }

    fn lines(text: &str) -> String {
        crate::diag::render(Path::new("c.toml"), text, &check(Path::new("c.toml"), text))
    }

    #[test]
    fn minimal_config_is_valid_with_defaults() {
        let c = parse(Path::new("/etc/socer/central.toml"), &minimal()).unwrap();
        assert_eq!(c.period_minutes, 60);
        assert_eq!(c.timezone, chrono_tz::Europe::Rome);
        assert_eq!(c.sites[0].key.len(), 16);
        assert_eq!(c.storage_path, PathBuf::from("/etc/socer/central.db"));
        assert!(matches!(c.broker, BrokerConfig::Embedded { .. }));
        assert_eq!(c.meters[0].role, Role::Grid);
        assert_eq!(c.meters[0].max_power_w, DEFAULT_METER_MAX_KW * 1000.0);
    }

    #[test]
    fn meter_max_power_defaults_from_plants_and_is_bounded() {
        let pv = minimal() + "\n[[meter]]\nsite = \"domus-1\"\nname = \"pv\"\npod = \"IT001E00000001\"\nrole = \"production\"\n";
        let c = parse(Path::new("c.toml"), &pv).unwrap();
        assert_eq!(c.meters[1].max_power_w, 20.0 * 1.5 * 1000.0);
        let set = pv.replace("role = \"grid\"", "role = \"grid\"\nmax_power_kw = 6.0");
        let c = parse(Path::new("c.toml"), &set).unwrap();
        assert_eq!(c.meters[0].max_power_w, 6000.0);
        for bad in ["0.0", "-3.0", "1e30", "nan", "inf"] {
            let t = minimal().replace(
                "role = \"grid\"",
                &format!("role = \"grid\"\nmax_power_kw = {bad}"),
            );
            assert!(
                lines(&t).contains("max_power_kw must be a number > 0"),
                "{bad}: {}",
                lines(&t)
            );
        }
    }

    #[test]
    fn meter_replacements_are_read_in_local_time_and_checked() {
        let ok = minimal()
            + "\n[[replacement]]\nsite = \"domus-1\"\nmeter = \"grid\"\nat = \"2026-03-14 10:20\"\n\
               old_imp_kwh = 12345.6\nnew_imp_kwh = 0.4\n";
        let c = parse(Path::new("c.toml"), &ok).unwrap();
        let r = &c.replacements[0];
        // 10:20 in Rome in March (CET) is 09:20 UTC.
        assert_eq!(r.at.to_rfc3339(), "2026-03-14T09:20:00+00:00");
        let h = r.imp.unwrap();
        assert!(
            (h.old_final_wh - 12_345_600.0).abs() < 1e-6 && (h.new_initial_wh - 400.0).abs() < 1e-6
        );
        assert!(r.exp.is_none());
        let rfc = ok.replace("2026-03-14 10:20", "2026-03-14T10:20:00+02:00");
        let c = parse(Path::new("c.toml"), &rfc).unwrap();
        assert_eq!(
            c.replacements[0].at.to_rfc3339(),
            "2026-03-14T08:20:00+00:00"
        );

        for (bad, says) in [
            (ok.replace("meter = \"grid\"", "meter = \"nope\""), "meter \"nope\" of site \"domus-1\" is not a [[meter]]"),
            (ok.replace("new_imp_kwh = 0.4\n", ""), "give both old_imp_kwh and new_imp_kwh"),
            (ok.replace("12345.6", "-1.0"), "a counter reading must be a number of kWh"),
            (ok.replace("2026-03-14 10:20", "yesterday"), "at must be a time like"),
            // 02:30 on the last Sunday of March does not exist in Rome; 02:30 in October twice.
            (ok.replace("2026-03-14 10:20", "2026-03-29 02:30"), "does not exist in Europe/Rome"),
            (ok.replace("2026-03-14 10:20", "2026-10-25 02:30"), "happens twice in Europe/Rome"),
            (ok.replace("old_imp_kwh = 12345.6\nnew_imp_kwh = 0.4\n", ""), "needs the readings of at least one counter"),
            (ok.clone() + "\n[[replacement]]\nsite = \"domus-1\"\nmeter = \"grid\"\nat = \"2026-03-14T09:20:00Z\"\nold_exp_kwh = 1.0\nnew_exp_kwh = 0.0\n",
             "is replaced twice at the same time"),
        ] {
            let out = lines(&bad);
            assert!(out.contains(says), "{says}: {out}");
        }
        // Each problem points at its line.
        let out = lines(&ok.replace("12345.6", "-1.0"));
        assert!(out.contains("c.toml:41:15:"), "{out}");
    }

    #[test]
    fn unknown_key_points_at_its_line() {
        let t = minimal().replace("name = \"So.CER\"", "name = \"So.CER\"\ncolour = 3");
        assert!(
            lines(&t).starts_with("c.toml:4:1: unknown field `colour`"),
            "{}",
            lines(&t)
        );
    }

    #[test]
    fn duplicate_ids_member_on_undefined_substation_and_plant_on_unknown_pod_are_reported() {
        let t = minimal()
            + "\n[[member]]\nid = \"m1\"\nkind = \"sme\"\npod = \"IT2\"\nsubstation = \"cp-nowhere\"\n"
            + "\n[[plant]]\nid = \"pv2\"\npod = \"IT999\"\npeak_kw = 5.0\ncommissioned = \"2025-01-01\"\n";
        let out = lines(&t);
        assert!(out.contains(":38:6: duplicate member id \"m1\""), "{out}");
        assert!(
            out.contains(":41:14: member \"m1\" is on undefined substation \"cp-nowhere\""),
            "{out}"
        );
        assert!(
            out.contains(":45:7: plant \"pv2\" is on unknown POD \"IT999\""),
            "{out}"
        );
    }

    #[test]
    fn site_without_key_and_bad_numbers_are_reported() {
        let t = minimal()
            .replace(&format!("key = \"{KEY}\"\n"), "")
            .replace("longitude = 9.87", "longitude = 9.87\nperiod_minutes = 30")
            .replace("peak_kw = 20.0", "peak_kw = -1.0");
        let out = lines(&t);
        assert!(
            out.contains("c.toml:6:18: period_minutes must be 60 or 15"),
            "{out}"
        );
        assert!(out.contains("site \"domus-1\" has no key"), "{out}");
        assert!(out.contains("peak_kw must be a number > 0"), "{out}");
    }

    #[test]
    fn unknown_region_is_refused() {
        let t = minimal().replace("peak_kw = 20.0", "peak_kw = 20.0\nregion = \"Narnia\"");
        let out = lines(&t);
        assert!(out.contains("\"Narnia\" is not an Italian region"), "{out}");
    }

    #[test]
    fn short_or_non_hex_key_is_refused() {
        let out = lines(&minimal().replace(KEY, "abcd"));
        assert!(out.contains("key must be at least 16 bytes"), "{out}");
        let out = lines(&minimal().replace(KEY, "zz112233445566778899aabbccddeeff"));
        assert!(out.contains("key must be hex digits"), "{out}");
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/central.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let diags = check(&path, &text);
        assert!(
            diags.is_empty(),
            "{}",
            crate::diag::render(&path, &text, &diags)
        );
        let c = parse(&path, &text).unwrap();
        assert_eq!(c.substations.len(), 2);
        assert!(c.sites.len() >= 8);
    }

    #[test]
    fn broker_tls_files_are_taken_from_the_config_folder_and_listen_on_8883_by_default() {
        let t = minimal().replace(
            "[storage]",
            "[broker]\nlisten = \"127.0.0.1:1883\"\ntls_cert = \"tls/b.crt\"\ntls_key = \"/k/b.key\"\n\n[storage]",
        );
        let c = parse(Path::new("/etc/socer/central.toml"), &t).unwrap();
        let BrokerConfig::Embedded {
            listen,
            tls: Some(tls),
            ..
        } = c.broker
        else {
            panic!("expected an embedded broker with TLS");
        };
        assert_eq!(listen.to_string(), "127.0.0.1:1883");
        assert_eq!(tls.listen.to_string(), "0.0.0.0:8883");
        assert_eq!(tls.cert, PathBuf::from("/etc/socer/tls/b.crt"));
        assert_eq!(tls.key, PathBuf::from("/k/b.key"));
    }

    #[test]
    fn tls_settings_on_the_wrong_broker_kind_are_pointed_at() {
        let embedded = minimal().replace(
            "[storage]",
            "[broker]\ntls_listen = \"0.0.0.0:8883\"\nca_file = \"ca.crt\"\n\n[storage]",
        );
        let out = lines(&embedded);
        assert!(
            out.contains("tls_listen needs tls_cert and tls_key"),
            "{out}"
        );
        assert!(out.contains("ca_file is for an external broker"), "{out}");
        let external = minimal().replace(
            "[storage]",
            "[broker]\nurl = \"mqtts://b:8883\"\ntls_cert = \"c\"\ntls_key = \"k\"\n\n[storage]",
        );
        let out = lines(&external);
        assert!(
            out.contains("tls_cert and tls_key are for the embedded broker"),
            "{out}"
        );
        let ok = minimal().replace(
            "[storage]",
            "[broker]\nurl = \"mqtts://b:8883\"\nca_file = \"tls/ca.crt\"\n\n[storage]",
        );
        let c = parse(Path::new("/etc/socer/central.toml"), &ok).unwrap();
        let BrokerConfig::External { ca_file, .. } = c.broker else {
            panic!("expected an external broker");
        };
        assert_eq!(ca_file, Some(PathBuf::from("/etc/socer/tls/ca.crt")));
    }

    #[test]
    fn the_hub_takes_a_list_of_brokers_and_refuses_a_comma_joined_url_at_its_line() {
        let joined = minimal().replace(
            "[storage]",
            "[broker]\nurl = \"mqtt://a:1883,b:1884\"\n\n[storage]",
        );
        let line = joined.lines().position(|l| l.starts_with("url")).unwrap() + 1;
        let out = lines(&joined);
        assert!(
            out.contains(&format!(":{line}:7: ")) && out.contains("urls = ["),
            "{out}"
        );
        let list = minimal().replace(
            "[storage]",
            "[broker]\nurls = [\"mqtt://n1:1883\", \"mqtts://n2:8883\"]\nsubscribe_qos = 0\n\n[storage]",
        );
        let c = parse(Path::new("/etc/socer/central.toml"), &list).unwrap();
        let BrokerConfig::External {
            url,
            urls,
            subscribe_qos,
            ..
        } = c.broker
        else {
            panic!("expected an external broker");
        };
        assert_eq!(
            (url.as_str(), urls.len(), subscribe_qos),
            ("mqtt://n1:1883", 2, 0)
        );
        let bad_qos = minimal().replace(
            "[storage]",
            "[broker]\nurl = \"mqtt://n1\"\nsubscribe_qos = 2\n\n[storage]",
        );
        assert!(lines(&bad_qos).contains("subscribe_qos must be 0 or 1"));
        let both = minimal().replace(
            "[storage]",
            "[broker]\nurl = \"mqtt://n1\"\nurls = [\"mqtt://n2\"]\n\n[storage]",
        );
        assert!(lines(&both).contains("both url and urls"));
    }

    #[test]
    fn a_hostile_sites_d_file_is_a_problem_naming_it_never_read_whole_or_fatal() {
        let dir = tempfile::tempdir().unwrap();
        // Huge (read only up to the bound), not UTF-8, and a TOML that is no site.
        let huge = std::fs::File::create(dir.path().join("huge.toml")).unwrap();
        huge.set_len(crate::diag::MAX_FILE_BYTES * 4).unwrap();
        std::fs::write(dir.path().join("binary.toml"), [0xff, 0xfe, 0x00, 0x80]).unwrap();
        std::fs::write(dir.path().join("other.toml"), "x = 1e999999\n").unwrap();
        let (sites, problems) = read_sites_dir(dir.path());
        assert!(sites.is_empty());
        let text: Vec<String> = problems.iter().map(|d| d.message.clone()).collect();
        for name in ["huge.toml", "binary.toml", "other.toml"] {
            assert!(text.iter().any(|m| m.contains(name)), "{name}: {text:?}");
        }
        assert!(text.iter().any(|m| m.contains("larger than")), "{text:?}");
    }
}
