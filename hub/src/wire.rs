//! The MQTT contract v1, shared by the site agent and the central hub: topics and payloads.
//!
//! A change to the contract is a change to this file only. Root: `socer/v1/{community}`.
//!
//! ## Authenticated envelope
//! Readings batches (site → central), acks and monthly summaries (central → site) travel in an
//! [`Envelope`]:
//!
//! ```json
//! {"v":1,"site":"domus-1","body":"{…}","mac":"<hex HMAC-SHA256>"}
//! ```
//!
//! `body` is the JSON text of the payload, carried as a string so that the exact bytes signed are
//! the bytes verified (no canonicalisation). `mac` = HMAC-SHA256(site key, topic ‖ "\n" ‖ body):
//! binding the topic means a batch of one site cannot be replayed under another site's topic, and
//! an ack cannot be passed off as a batch. Replays of a genuine batch are harmless: the receiver
//! deduplicates by (site, seq). The broker's own authentication is a first gate only; rumqttd has no
//! per-topic ACL, so this MAC is what authorises a message.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use socer_drivers::reading::{Missing, Quality, Values};

pub const VERSION: u32 = 1;

/// Largest envelope a receiver accepts, bytes (a batch of about 1,000 readings fits).
pub const MAX_ENVELOPE_BYTES: usize = 512 * 1024;

/// Topic names under `socer/v1/{community}`.
#[derive(Debug, Clone)]
pub struct Topics {
    root: String,
}

impl Topics {
    pub fn new(community: &str) -> Self {
        Self {
            root: format!("socer/v1/{community}"),
        }
    }
    pub fn root(&self) -> &str {
        &self.root
    }
    pub fn readings(&self, site: &str) -> String {
        format!("{}/site/{site}/readings", self.root)
    }
    pub fn status(&self, site: &str) -> String {
        format!("{}/site/{site}/status", self.root)
    }
    pub fn ack(&self, site: &str) -> String {
        format!("{}/site/{site}/ack", self.root)
    }
    /// `site/{site}/summary`: the site's part of the month's shared energy ([`SiteSummary`]).
    pub fn summary(&self, site: &str) -> String {
        format!("{}/site/{site}/summary", self.root)
    }
    pub fn site_alerts(&self, site: &str) -> String {
        format!("{}/site/{site}/alerts", self.root)
    }
    pub fn balance(&self) -> String {
        format!("{}/balance", self.root)
    }
    pub fn signal(&self) -> String {
        format!("{}/signal", self.root)
    }
    pub fn alerts(&self) -> String {
        format!("{}/alerts", self.root)
    }
    /// Wildcard for every site's readings.
    pub fn all_readings(&self) -> String {
        format!("{}/site/+/readings", self.root)
    }
    pub fn all_status(&self) -> String {
        format!("{}/site/+/status", self.root)
    }

    /// The site id and the leaf (`readings`, `status`, …) of a site topic, if it is one of ours.
    pub fn parse_site_topic<'a>(&self, topic: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = topic
            .strip_prefix(self.root.as_str())?
            .strip_prefix("/site/")?;
        let (site, leaf) = rest.split_once('/')?;
        if site.is_empty() || leaf.contains('/') {
            return None;
        }
        Some((site, leaf))
    }
}

/// One reading on the wire: the drivers' reading plus the site's sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireReading {
    /// Per site, strictly increasing, never reused.
    pub seq: u64,
    pub meter: String,
    /// RFC 3339 UTC.
    pub ts: DateTime<Utc>,
    #[serde(flatten)]
    pub values: Values,
    pub quality: Quality,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Missing>,
    /// The timestamp was reconstructed from the monotonic clock (taken before NTP sync).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retimed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub energy_integrated: bool,
}

/// Payload of `site/{site}/readings`: readings in seq order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub site: String,
    /// When the batch was sent (site clock): the receiver rejects batches from the far future.
    pub sent: DateTime<Utc>,
    pub readings: Vec<WireReading>,
    /// Every seq up to and including this one that was never sent was dropped by the site for
    /// lack of disk (counted and shown in its health): the receiver treats them as gone, so its
    /// highest contiguous seq can move past them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_through: Option<u64>,
    /// The oldest seq the site still holds unacknowledged: it has nothing below it to send
    /// (acknowledged by a hub before, or dropped). At most the batch's first seq. The receiver
    /// acknowledges only what it stored or what the site declared so, never a guess; a site that
    /// omits it is acknowledged from seq 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unacked_from: Option<u64>,
}

/// Payload of `site/{site}/ack`: every seq up to and including `seq` is stored centrally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
    /// The hub holds readings above a gap that has not filled for a few seconds: send again
    /// from this seq (always `seq + 1`) now, without waiting for the ack timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_from: Option<u64>,
}

/// Payload of `site/{site}/summary` (central → site, QoS 1, retained, sealed with the site's key
/// like the ack): the site's part of the community's shared energy in the month so far, from the
/// central hub's settled periods. Energy in kWh. Republished when the figures change (about once
/// a minute at most) and when the hub starts (the embedded broker keeps retained messages in
/// memory only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteSummary {
    /// The calendar month in the community's time zone (Europe/Rome), `YYYY-MM`.
    pub month: String,
    /// The PODs the site's meters measure (the figures are theirs, summed).
    pub pods: Vec<String>,
    /// The PODs' part of the shared energy as consumers (pro rata of withdrawal).
    pub shared_as_consumer_kwh: f64,
    /// The PODs' part of the shared energy as producers (pro rata of eligible injection).
    pub shared_as_producer_kwh: f64,
    /// The community's shared energy in the month so far.
    pub community_shared_kwh: f64,
    /// The PODs' injection into the grid (*immissione*) in the month so far.
    pub injection_kwh: f64,
    /// The PODs' withdrawal from the grid (*prelievo*) in the month so far.
    pub withdrawal_kwh: f64,
    /// Estimated incentive (TIP) of the month so far apportioned to the site's PODs pro rata of
    /// their shared energy as consumers, €; `None` when the hub cannot compute it (prices
    /// missing). How the community finally divides the incentive is up to its statute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incentive_as_consumer_eur: Option<f64>,
    /// The same incentive apportioned pro rata of shared energy as producers, €.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incentive_as_producer_eur: Option<f64>,
    /// Settlement periods of the month with a stored result.
    pub periods: u32,
    /// When the central hub computed these figures.
    pub updated: DateTime<Utc>,
}

/// Payload of the retained `balance` topic (plain JSON, QoS 0): live community figures, W.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub ts: DateTime<Utc>,
    /// Power produced by the community's generators.
    pub production_w: f64,
    /// Power used by the members' loads.
    pub consumption_w: f64,
    /// Σ over PODs of the power flowing into the grid.
    pub injection_w: f64,
    /// Σ over PODs of the power drawn from the grid.
    pub withdrawal_w: f64,
    /// injection − withdrawal: positive when the community has a surplus to use now.
    pub surplus_w: f64,
    /// Σ over substations of min(injection of eligible plants' PODs, withdrawal), now.
    pub shared_w: f64,
    /// Mapped meters with a fresh reading (the figures count only those).
    pub meters_fresh: u32,
    pub meters_total: u32,
}

/// Load-shift level (DESIGN.md, "Load-shift signal"): `green` the community has a surplus (use
/// now), `yellow` balanced, `red` deficit (postpone flexible loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Red,
    Yellow,
    Green,
}

/// The signal of one zone (the community, or one primary substation) now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneSignal {
    /// The community id, or the substation id.
    pub zone: String,
    pub level: Level,
    /// OpenADR 2.0b SIMPLE signal level: 0 normal (green: use now), 1 moderate (yellow), 2 high
    /// (red), 3 special (red with a deep deficit).
    pub openadr_level: u8,
    /// Power available to use now: injection − withdrawal, kW (negative: a deficit).
    pub surplus_kw: f64,
    pub production_kw: f64,
    pub consumption_kw: f64,
    /// When the level last changed.
    pub since: DateTime<Utc>,
}

/// One hourly forecast slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastSlot {
    pub start: DateTime<Utc>,
    pub production_kwh: f64,
    pub consumption_kwh: f64,
    /// production − consumption, kWh (negative: a deficit).
    pub surplus_kwh: f64,
    pub level: Level,
    pub openadr_level: u8,
}

/// Payload of the retained `signal` topic (plain JSON, QoS 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub ts: DateTime<Utc>,
    pub community: ZoneSignal,
    #[serde(default)]
    pub substations: Vec<ZoneSignal>,
    /// Hourly slots from the next hour on, 24 or 48 of them.
    #[serde(default)]
    pub forecast: Vec<ForecastSlot>,
}

/// What an alert announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A green window is forecast.
    Expected,
    /// A green window begins now.
    Open,
    /// The window ended before its announced end.
    Close,
}

/// A flexible load named in a targeted alert, with how long it could run in the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlexSuggestion {
    pub name: String,
    pub power_kw: f64,
    pub hours: f64,
}

/// Payload of `alerts` and `site/{site}/alerts` (plain JSON, QoS 1, not retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable per window and kind: `{community}-{window start, UTC, %Y%m%dT%H%M}-{kind}`.
    pub id: String,
    pub kind: AlertKind,
    /// `None` for the community topic; the site id for a targeted alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub ts: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub expected_surplus_kwh: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loads: Vec<FlexSuggestion>,
    pub text_it: String,
    pub text_en: String,
}

/// A meter as the site reports it in its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterStatus {
    pub name: String,
    pub model: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// `ok`, `degraded` (some quantities missing) or `failed`.
    pub health: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Payload of the retained `site/{site}/status`; the last will is `{"state":"offline"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `online` or `offline`.
    pub state: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub ts: Option<DateTime<Utc>>,
    #[serde(default)]
    pub meters: Vec<MeterStatus>,
    /// Readings not yet acknowledged by the central hub.
    #[serde(default)]
    pub backlog: u64,
    #[serde(default)]
    pub clock_synced: bool,
}

impl Status {
    pub fn offline() -> Self {
        Status {
            state: "offline".into(),
            version: String::new(),
            ts: None,
            meters: vec![],
            backlog: 0,
            clock_synced: false,
        }
    }
}

/// The authenticated envelope around a batch or an ack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub site: String,
    pub body: String,
    pub mac: String,
}

/// Why an envelope was refused. Each is counted separately by the receiver.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message of {0} bytes exceeds the {MAX_ENVELOPE_BYTES}-byte limit")]
    Oversized(usize),
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("unsupported contract version {0}")]
    Version(u32),
    #[error("envelope names site {envelope:?} but arrived on the topic of {topic:?}")]
    SiteMismatch { envelope: String, topic: String },
    #[error("authentication failed")]
    BadMac,
    #[error("malformed body: {0}")]
    MalformedBody(String),
}

type HmacSha256 = Hmac<Sha256>;

fn mac_for(key: &[u8], topic: &str, body: &str) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    m.update(topic.as_bytes());
    m.update(b"\n");
    m.update(body.as_bytes());
    m
}

/// Seal a payload for `topic` with the site's key.
pub fn seal<T: Serialize>(key: &[u8], site: &str, topic: &str, payload: &T) -> Vec<u8> {
    let body = serde_json::to_string(payload).unwrap_or_default();
    let mac = hex::encode(mac_for(key, topic, &body).finalize().into_bytes());
    let env = Envelope {
        v: VERSION,
        site: site.to_string(),
        body,
        mac,
    };
    serde_json::to_vec(&env).unwrap_or_default()
}

/// Parse an envelope without verifying it (to learn which site's key to use).
pub fn open_unverified(bytes: &[u8]) -> Result<Envelope, WireError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(WireError::Oversized(bytes.len()));
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if env.v != VERSION {
        return Err(WireError::Version(env.v));
    }
    Ok(env)
}

/// Verify an envelope received on `topic` for `site` and decode its payload.
pub fn open<T: for<'de> Deserialize<'de>>(
    key: &[u8],
    site: &str,
    topic: &str,
    env: &Envelope,
) -> Result<T, WireError> {
    if env.site != site {
        return Err(WireError::SiteMismatch {
            envelope: env.site.clone(),
            topic: site.to_string(),
        });
    }
    let expected = hex::decode(&env.mac).map_err(|_| WireError::BadMac)?;
    // verify_slice compares in constant time.
    mac_for(key, topic, &env.body)
        .verify_slice(&expected)
        .map_err(|_| WireError::BadMac)?;
    serde_json::from_str(&env.body).map_err(|e| WireError::MalformedBody(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        Batch {
            site: "domus-1".into(),
            sent: DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            readings: vec![WireReading {
                seq: 41,
                meter: "grid".into(),
                ts: DateTime::parse_from_rfc3339("2026-06-01T09:59:59Z")
                    .unwrap()
                    .with_timezone(&Utc),
                values: Values {
                    p_w: Some(-1234.5),
                    e_imp_wh: Some(1e6),
                    ..Values::default()
                },
                quality: Quality::Good,
                missing: vec![],
                retimed: false,
                energy_integrated: false,
            }],
            dropped_through: None,
            unacked_from: None,
        }
    }

    #[test]
    fn sealed_batch_opens_with_the_same_key_and_topic() {
        let t = Topics::new("socer");
        let topic = t.readings("domus-1");
        let bytes = seal(b"k1", "domus-1", &topic, &batch());
        let env = open_unverified(&bytes).unwrap();
        let got: Batch = open(b"k1", "domus-1", &topic, &env).unwrap();
        assert_eq!(got, batch());
    }

    #[test]
    fn wrong_key_altered_body_or_other_topic_is_refused() {
        let t = Topics::new("socer");
        let topic = t.readings("domus-1");
        let bytes = seal(b"k1", "domus-1", &topic, &batch());
        let env = open_unverified(&bytes).unwrap();
        assert_eq!(
            open::<Batch>(b"k2", "domus-1", &topic, &env),
            Err(WireError::BadMac)
        );
        let mut altered = env.clone();
        altered.body = altered.body.replace("-1234.5", "-9234.5");
        assert_eq!(
            open::<Batch>(b"k1", "domus-1", &topic, &altered),
            Err(WireError::BadMac)
        );
        assert_eq!(
            open::<Batch>(b"k1", "domus-1", &t.ack("domus-1"), &env),
            Err(WireError::BadMac)
        );
        assert!(matches!(
            open::<Batch>(b"k1", "iperal", &t.readings("iperal"), &env),
            Err(WireError::SiteMismatch { .. })
        ));
    }

    #[test]
    fn garbage_and_oversized_are_malformed_not_panics() {
        assert!(matches!(
            open_unverified(b"not json"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            open_unverified(&vec![b' '; MAX_ENVELOPE_BYTES + 1]),
            Err(WireError::Oversized(_))
        ));
        assert!(matches!(
            open_unverified(br#"{"v":9,"site":"a","body":"{}","mac":""}"#),
            Err(WireError::Version(9))
        ));
    }

    #[test]
    fn site_topics_parse_back() {
        let t = Topics::new("socer");
        assert_eq!(
            t.parse_site_topic(&t.readings("stps")),
            Some(("stps", "readings"))
        );
        assert_eq!(t.parse_site_topic("socer/v1/socer/site//readings"), None);
        assert_eq!(t.parse_site_topic("other/v1/socer/site/a/readings"), None);
        assert_eq!(t.parse_site_topic("socer/v1/socer/site/a/b/c"), None);
    }
}
