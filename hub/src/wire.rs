//! The MQTT contract v2, shared by the site agent and the central hub: topics, payloads and the
//! cryptography that lets both sides treat the broker as untrusted.
//!
//! A change to the contract is a change to this file only. Root: `socer/v2/{community}`.
//!
//! ## Sealed envelope (site ↔ hub, private)
//! Readings batches and status (site → hub), acks and monthly summaries (hub → site) travel in an
//! [`Envelope`], encrypted and authenticated with XChaCha20-Poly1305:
//!
//! ```json
//! {"v":2,"site":"domus-1","nonce":"<base64, 24 random bytes>","ct":"<base64 ciphertext+tag>"}
//! ```
//!
//! The key is derived from the site key with HKDF-SHA256 (salt `socer/v2`, info
//! `socer/v2 {direction} {leaf}`, e.g. `socer/v2 site-to-hub readings`): a distinct key per
//! direction and purpose, so an ack can never be passed off as a batch. The associated data is
//! `socer/v2\n{site}\n{topic}`: a message sealed for one topic or site does not open under
//! another, and the version is bound too. A subscriber to `#` sees only ciphertext. Replays of a
//! genuine message are harmless: batches are deduplicated by (site, seq), acks only move forward,
//! a status carries an (epoch, n) order and the hub keeps the newest ([`Status::order`]).
//!
//! ## Signed broadcast (hub → every site)
//! `signal`, `alerts`, `site/{site}/alerts` and `balance` are public within the community but only
//! the hub may write them. They travel in a [`Signed`] envelope with an Ed25519 signature by the
//! hub's key, which only the hub holds; sites verify with the hub's public key from their config:
//!
//! ```json
//! {"v":2,"body":"{…}","sig":"<hex, 64 bytes>"}
//! ```
//!
//! `sig` = Ed25519(hub key, `socer/v2 signed\n{topic}\n{body}`): binding the topic stops a site's
//! alert from being replayed on another site's topic. `body` is carried as a string so that the
//! bytes signed are the bytes verified.
//!
//! Tag and signature checks are constant-time (the `chacha20poly1305` and `ed25519-dalek` crates).

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer};
use hkdf::Hkdf;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use socer_drivers::reading::{Missing, Quality, Values};

pub const VERSION: u32 = 2;

/// Largest envelope a receiver accepts, bytes (a batch of about 1,000 readings fits).
pub const MAX_ENVELOPE_BYTES: usize = 512 * 1024;

/// Topic names under `socer/v2/{community}`.
#[derive(Debug, Clone)]
pub struct Topics {
    root: String,
}

impl Topics {
    pub fn new(community: &str) -> Self {
        Self {
            root: format!("socer/v{VERSION}/{community}"),
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
    /// Wildcard for a leaf of every site (`ack`, `summary`, …).
    pub fn all_sites(&self, leaf: &str) -> String {
        format!("{}/site/+/{leaf}", self.root)
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
    /// Since when the meter has not answered (silent for more than three poll intervals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_since: Option<DateTime<Utc>>,
    /// Time of its last reading with values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reading: Option<DateTime<Utc>>,
    /// The category of `last_error`: `{"kind": "timeout"}`, `{"kind": "exception", "code": 2}`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<socer_drivers::link::ErrorKind>,
    /// Polls in a row that read nothing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: u32,
    /// A battery's state of charge, %, from the meter's last reading (storage meters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soc_pct: Option<f64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Payload of the retained `site/{site}/status`, sealed like a batch; the last will is a sealed
/// `offline` status of the connection's epoch with `n` = [`Status::END_OF_EPOCH`].
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
    /// The connection this status belongs to: strictly increasing per site across connections
    /// and restarts (kept on the site's disk, not taken from its clock alone).
    #[serde(default)]
    pub epoch: u64,
    /// Order within the epoch: 1, 2, … for online statuses; [`Status::END_OF_EPOCH`] for the
    /// offline status that ends it (last will or orderly shutdown).
    #[serde(default)]
    pub n: u64,
}

impl Status {
    /// `n` of the status that closes an epoch: nothing of that epoch may follow it.
    pub const END_OF_EPOCH: u64 = u64::MAX;

    pub fn offline() -> Self {
        Status {
            state: "offline".into(),
            version: String::new(),
            ts: None,
            meters: vec![],
            backlog: 0,
            clock_synced: false,
            epoch: 0,
            n: Self::END_OF_EPOCH,
        }
    }

    /// The receiver keeps the status with the highest order and ignores an older or equal one,
    /// so a replayed old status (an old offline will, say) never overrides a newer one.
    pub fn order(&self) -> (u64, u64) {
        (self.epoch, self.n)
    }
}

/// The sealed envelope around a batch, status, ack or summary (see the module text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub site: String,
    /// Base64 (standard, padded) of the 24-byte random nonce.
    pub nonce: String,
    /// Base64 of the ciphertext followed by the 16-byte Poly1305 tag.
    pub ct: String,
}

/// The signed envelope around what the hub broadcasts (signal, alerts, balance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub v: u32,
    pub body: String,
    /// Hex of the 64-byte Ed25519 signature.
    pub sig: String,
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
    /// The AEAD tag does not verify: forged, altered, sealed with another key or for another
    /// topic or site.
    #[error("authentication failed")]
    BadMac,
    /// The Ed25519 signature does not verify with the hub's public key.
    #[error("signature does not verify with the hub's public key")]
    BadSignature,
    #[error("malformed body: {0}")]
    MalformedBody(String),
}

/// A key given as text that is not what it should be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("expected {0} hexadecimal digits, found {1} characters")]
    Length(usize, usize),
    #[error("not hexadecimal")]
    Hex,
    #[error("not a valid Ed25519 public key")]
    NotAPoint,
}

pub use ed25519_dalek::{SigningKey as HubSigningKey, VerifyingKey as HubPublicKey};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const NONCE_BYTES: usize = 24;

/// Which way a topic's messages go: part of the key derivation.
fn direction(leaf: &str) -> &'static str {
    match leaf {
        "readings" | "status" => "site-to-hub",
        "ack" | "summary" => "hub-to-site",
        _ => "other",
    }
}

/// The AEAD for `topic` under a site key: HKDF-SHA256, one key per direction and purpose.
fn aead_for(site_key: &[u8], topic: &str) -> XChaCha20Poly1305 {
    let leaf = topic.rsplit('/').next().unwrap_or_default();
    let info = format!("socer/v{VERSION} {} {leaf}", direction(leaf));
    let hk = Hkdf::<Sha256>::new(Some(format!("socer/v{VERSION}").as_bytes()), site_key);
    let mut okm = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8,160-byte output limit: expand cannot fail.
    if hk.expand(info.as_bytes(), &mut okm).is_err() {
        unreachable!("HKDF-SHA256 yields 32 bytes");
    }
    XChaCha20Poly1305::new(&okm.into())
}

fn associated_data(site: &str, topic: &str) -> Vec<u8> {
    format!("socer/v{VERSION}\n{site}\n{topic}").into_bytes()
}

/// Seal a payload for `topic` with the site's key: encrypted and authenticated, random nonce.
pub fn seal<T: Serialize>(key: &[u8], site: &str, topic: &str, payload: &T) -> Vec<u8> {
    let body = serde_json::to_vec(payload).unwrap_or_default();
    let mut nonce = [0u8; NONCE_BYTES];
    rand::thread_rng().fill_bytes(&mut nonce);
    let aad = associated_data(site, topic);
    // Encryption fails only beyond 256 GiB of plaintext.
    let ct = aead_for(key, topic)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &body,
                aad: &aad,
            },
        )
        .unwrap_or_default();
    let env = Envelope {
        v: VERSION,
        site: site.to_string(),
        nonce: B64.encode(nonce),
        ct: B64.encode(ct),
    };
    serde_json::to_vec(&env).unwrap_or_default()
}

/// Parse an envelope without opening it (to learn which site's key to use).
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

/// Open an envelope received on `topic` for `site`: authenticate, decrypt, decode.
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
    let nonce = B64
        .decode(&env.nonce)
        .ok()
        .filter(|n| n.len() == NONCE_BYTES)
        .ok_or_else(|| WireError::Malformed("nonce: expected 24 bytes in base64".into()))?;
    let ct = B64
        .decode(&env.ct)
        .map_err(|e| WireError::Malformed(format!("ct: {e}")))?;
    let aad = associated_data(site, topic);
    let plain = aead_for(key, topic)
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &ct,
                aad: &aad,
            },
        )
        .map_err(|_| WireError::BadMac)?;
    serde_json::from_slice(&plain).map_err(|e| WireError::MalformedBody(e.to_string()))
}

/// [`open_unverified`] then [`open`], for a message whose site the receiver already knows.
pub fn open_bytes<T: for<'de> Deserialize<'de>>(
    key: &[u8],
    site: &str,
    topic: &str,
    bytes: &[u8],
) -> Result<T, WireError> {
    open(key, site, topic, &open_unverified(bytes)?)
}

fn signed_message(topic: &str, body: &str) -> Vec<u8> {
    format!("socer/v{VERSION} signed\n{topic}\n{body}").into_bytes()
}

/// Sign a broadcast payload for `topic` with the hub's key.
pub fn sign<T: Serialize>(key: &HubSigningKey, topic: &str, payload: &T) -> Vec<u8> {
    let body = serde_json::to_string(payload).unwrap_or_default();
    let sig = key.sign(&signed_message(topic, &body));
    let env = Signed {
        v: VERSION,
        body,
        sig: hex::encode(sig.to_bytes()),
    };
    serde_json::to_vec(&env).unwrap_or_default()
}

/// Verify a broadcast received on `topic` with the hub's public key and decode its payload.
pub fn verify<T: for<'de> Deserialize<'de>>(
    key: &HubPublicKey,
    topic: &str,
    bytes: &[u8],
) -> Result<T, WireError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(WireError::Oversized(bytes.len()));
    }
    let env: Signed =
        serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if env.v != VERSION {
        return Err(WireError::Version(env.v));
    }
    // Lowercase only: one signature has exactly one spelling.
    if env.sig.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(WireError::BadSignature);
    }
    let sig: [u8; 64] = hex::decode(&env.sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::BadSignature)?;
    key.verify_strict(
        &signed_message(topic, &env.body),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| WireError::BadSignature)?;
    serde_json::from_str(&env.body).map_err(|e| WireError::MalformedBody(e.to_string()))
}

/// A new hub signing key from the operating system's random source.
pub fn generate_signing_key() -> HubSigningKey {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    HubSigningKey::from_bytes(&seed)
}

fn hex32(text: &str) -> Result<[u8; 32], KeyError> {
    let t = text.trim();
    if t.len() != 64 {
        return Err(KeyError::Length(64, t.len()));
    }
    let b = hex::decode(t).map_err(|_| KeyError::Hex)?;
    b.try_into().map_err(|_| KeyError::Hex)
}

/// The hub's signing key from its key file's text (the 32-byte seed in hex).
pub fn signing_key_from_hex(text: &str) -> Result<HubSigningKey, KeyError> {
    hex32(text).map(|seed| HubSigningKey::from_bytes(&seed))
}

/// The hub's public key as a site config gives it (32 bytes in hex).
pub fn public_key_from_hex(text: &str) -> Result<HubPublicKey, KeyError> {
    HubPublicKey::from_bytes(&hex32(text)?).map_err(|_| KeyError::NotAPoint)
}

/// The text of a public key for a site config.
pub fn public_key_hex(key: &HubPublicKey) -> String {
    hex::encode(key.as_bytes())
}

/// The text of a signing key for the hub's key file.
pub fn signing_key_hex(key: &HubSigningKey) -> String {
    hex::encode(key.to_bytes())
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
    fn wrong_key_altered_ciphertext_other_topic_or_site_is_refused() {
        let t = Topics::new("socer");
        let topic = t.readings("domus-1");
        let bytes = seal(b"k1", "domus-1", &topic, &batch());
        let env = open_unverified(&bytes).unwrap();
        assert_eq!(
            open::<Batch>(b"k2", "domus-1", &topic, &env),
            Err(WireError::BadMac)
        );
        let mut altered = env.clone();
        let mut ct = B64.decode(&altered.ct).unwrap();
        ct[3] ^= 1;
        altered.ct = B64.encode(ct);
        assert_eq!(
            open::<Batch>(b"k1", "domus-1", &topic, &altered),
            Err(WireError::BadMac)
        );
        // Another leaf means another key and other associated data.
        assert_eq!(
            open::<Batch>(b"k1", "domus-1", &t.ack("domus-1"), &env),
            Err(WireError::BadMac)
        );
        assert_eq!(
            open::<Batch>(b"k1", "domus-1", &t.status("domus-1"), &env),
            Err(WireError::BadMac)
        );
        assert!(matches!(
            open::<Batch>(b"k1", "iperal", &t.readings("iperal"), &env),
            Err(WireError::SiteMismatch { .. })
        ));
        // The same key used by two sites still does not let one's message open as the other's.
        let mut renamed = env.clone();
        renamed.site = "iperal".into();
        assert_eq!(
            open::<Batch>(b"k1", "iperal", &t.readings("iperal"), &renamed),
            Err(WireError::BadMac)
        );
    }

    #[test]
    fn a_sealed_message_shows_no_plaintext() {
        let topic = Topics::new("socer").readings("domus-1");
        let bytes = seal(b"k1", "domus-1", &topic, &batch());
        let text = String::from_utf8_lossy(&bytes);
        for clear in ["1234.5", "grid", "seq", "readings", "e_imp_wh"] {
            assert!(!text.contains(clear), "{clear} in {text}");
        }
        // Two seals of the same payload differ (random nonce).
        assert_ne!(bytes, seal(b"k1", "domus-1", &topic, &batch()));
    }

    #[test]
    fn signed_broadcast_verifies_only_with_the_hub_key_and_its_topic() {
        let t = Topics::new("socer");
        let hub = signing_key_from_hex(&"07".repeat(32)).unwrap();
        let public = hub.verifying_key();
        let alert_of = |site: &str| Ack {
            seq: site.len() as u64,
            ..Ack::default()
        };
        let bytes = sign(&hub, &t.site_alerts("stps"), &alert_of("stps"));
        let got: Ack = verify(&public, &t.site_alerts("stps"), &bytes).unwrap();
        assert_eq!(got, alert_of("stps"));
        assert_eq!(
            verify::<Ack>(&public, &t.site_alerts("iperal"), &bytes),
            Err(WireError::BadSignature)
        );
        let other = generate_signing_key();
        assert_eq!(
            verify::<Ack>(&other.verifying_key(), &t.site_alerts("stps"), &bytes),
            Err(WireError::BadSignature)
        );
        let forged = sign(&other, &t.signal(), &alert_of("x"));
        assert_eq!(
            verify::<Ack>(&public, &t.signal(), &forged),
            Err(WireError::BadSignature)
        );
        assert!(matches!(
            verify::<Ack>(&public, &t.signal(), br#"{"seq":1}"#),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(
            public_key_from_hex(&public_key_hex(&public)).unwrap(),
            public
        );
        assert!(matches!(
            public_key_from_hex("abc"),
            Err(KeyError::Length(64, 3))
        ));
        assert_eq!(public_key_from_hex(&"zz".repeat(32)), Err(KeyError::Hex));
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
            open_unverified(br#"{"v":1,"site":"a","nonce":"","ct":""}"#),
            Err(WireError::Version(1))
        ));
        // A v1 HMAC envelope is not a v2 one.
        assert!(matches!(
            open_unverified(br#"{"v":1,"site":"a","body":"{}","mac":"00"}"#),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn site_topics_parse_back() {
        let t = Topics::new("socer");
        assert_eq!(
            t.parse_site_topic(&t.readings("stps")),
            Some(("stps", "readings"))
        );
        assert_eq!(t.parse_site_topic("socer/v2/socer/site//readings"), None);
        assert_eq!(t.parse_site_topic("other/v2/socer/site/a/readings"), None);
        assert_eq!(t.parse_site_topic("socer/v2/socer/site/a/b/c"), None);
        assert_eq!(t.parse_site_topic("socer/v1/socer/site/a/readings"), None);
    }

    mod opening {
        //! Property tests of the opening path: whatever arrives, opening answers, never panics;
        //! any single-byte change of a sealed or signed message is refused. 256 cases each by
        //! default; `PROPTEST_CASES=1000000` for the long run (BENCHMARKS.md).
        use super::*;
        use proptest::prelude::*;

        fn hub() -> HubSigningKey {
            signing_key_from_hex(&"5a".repeat(32)).unwrap()
        }

        proptest! {
            #[test]
            fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let t = Topics::new("socer");
                let topic = t.readings("domus-1");
                let _ = open_bytes::<Batch>(b"k1", "domus-1", &topic, &bytes);
                let _ = open_bytes::<Status>(b"k1", "domus-1", &t.status("domus-1"), &bytes);
                let _ = verify::<Signal>(&hub().verifying_key(), &t.signal(), &bytes);
            }

            #[test]
            fn opening_arbitrary_envelopes_never_panics(
                site in "[a-z0-9-]{0,12}", nonce in "[A-Za-z0-9+/=]{0,40}",
                ct in "[A-Za-z0-9+/=]{0,80}", sig in "[0-9a-fA-F]{0,130}", body in ".{0,60}",
            ) {
                let t = Topics::new("socer");
                let env = Envelope { v: VERSION, site: site.clone(), nonce, ct };
                let _ = open::<Batch>(b"k1", &site, &t.readings(&site), &env);
                let signed = serde_json::to_vec(&Signed { v: VERSION, body, sig }).unwrap();
                let _ = verify::<Signal>(&hub().verifying_key(), &t.signal(), &signed);
            }

            #[test]
            fn any_single_byte_change_of_a_sealed_batch_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
                let topic = Topics::new("socer").readings("domus-1");
                let mut bytes = seal(b"k1", "domus-1", &topic, &batch());
                let i = at.index(bytes.len());
                bytes[i] ^= flip;
                prop_assert!(open_bytes::<Batch>(b"k1", "domus-1", &topic, &bytes).is_err());
            }

            #[test]
            fn any_single_byte_change_of_a_sealed_status_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
                let topic = Topics::new("socer").status("domus-1");
                let mut bytes = seal(b"k1", "domus-1", &topic, &Status::offline());
                let i = at.index(bytes.len());
                bytes[i] ^= flip;
                prop_assert!(open_bytes::<Status>(b"k1", "domus-1", &topic, &bytes).is_err());
            }

            #[test]
            fn any_single_byte_change_of_a_signed_broadcast_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
                let topic = Topics::new("socer").site_alerts("stps");
                let mut bytes = sign(&hub(), &topic, &batch());
                let i = at.index(bytes.len());
                bytes[i] ^= flip;
                prop_assert!(verify::<Batch>(&hub().verifying_key(), &topic, &bytes).is_err());
            }
        }
    }
}
