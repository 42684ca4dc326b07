//! What the hub knows about itself and its sites right now: ingest counters, rejects by reason and
//! site, latencies, each site's status (from its retained status topic and last will; a site
//! silent for about two status intervals is `stale`, whatever the broker says).
//!
//! In memory only, shared by ingest, store and API; it never blocks on I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::metrics::AtomicLatencies;
use crate::wire::{MeterStatus, Status};

/// Why an incoming message was refused (the label in `/metrics` and `/api/v1/sites`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    /// Larger than the envelope limit.
    Oversized,
    /// Not an envelope (not JSON, missing fields), or a body that does not decode as a batch.
    Malformed,
    /// An envelope version we do not speak.
    Version,
    /// The topic names a site that is not in the config.
    UnknownSite,
    /// The envelope's site differs from the topic's.
    SiteMismatch,
    /// The seal does not open: forged, altered, sealed with another key or for another topic.
    BadMac,
    /// The batch says it was sent, or holds readings taken, too far in the future.
    FarFuture,
    /// The batch's own `site` field differs from the topic's, or it is empty.
    Inconsistent,
    /// Seqs not strictly increasing inside the batch.
    SeqOrder,
    /// A seq of 0 or above [`crate::central::plausible::MAX_SEQ`].
    SeqRange,
    /// `dropped_through` or `unacked_from` outside the batch's own seq range.
    SeqClaim,
    /// Seqs further above the hub's contiguous seq than the site could have numbered readings
    /// since ([`crate::central::plausible::MAX_SEQS_PER_SECOND`]).
    SeqJump,
    /// Sent, or holding a reading taken, before [`crate::central::plausible::min_ts`].
    TooOld,
    /// A meter name that is empty, too long or holds control characters.
    MeterName,
    // The reasons below count values quarantined inside an accepted reading (the value is not
    // stored, the reading and its seq are), not refused messages.
    /// A counter that is negative, not finite, or beyond what the meter could count in its life.
    CounterInvalid,
    /// A counter that rose faster than the meter's maximum power could count.
    CounterRise,
    /// A power, voltage, current, frequency or power factor outside physical bounds.
    ValueBounds,
}

impl Reject {
    pub fn label(self) -> &'static str {
        match self {
            Reject::Oversized => "oversized",
            Reject::Malformed => "malformed",
            Reject::Version => "version",
            Reject::UnknownSite => "unknown_site",
            Reject::SiteMismatch => "site_mismatch",
            Reject::BadMac => "bad_mac",
            Reject::FarFuture => "far_future",
            Reject::Inconsistent => "inconsistent",
            Reject::SeqOrder => "seq_order",
            Reject::SeqRange => "seq_range",
            Reject::SeqClaim => "seq_claim",
            Reject::SeqJump => "seq_jump",
            Reject::TooOld => "too_old",
            Reject::MeterName => "meter_name",
            Reject::CounterInvalid => "counter_invalid",
            Reject::CounterRise => "counter_rise",
            Reject::ValueBounds => "value_bounds",
        }
    }
}

/// Counters of the hub (monotonic, read by `/metrics`).
#[derive(Debug, Default)]
pub struct Metrics {
    pub messages_received: AtomicU64,
    pub batches_accepted: AtomicU64,
    pub readings_received: AtomicU64,
    pub readings_stored: AtomicU64,
    pub dedup_hits: AtomicU64,
    /// Readings sites reported dropped (out of disk) before the hub had them.
    pub readings_lost_by_sites: AtomicU64,
    /// Readings a site declared acknowledged before (`unacked_from`) that this hub's database
    /// does not hold (a rebuilt or restored database).
    pub readings_acked_not_held: AtomicU64,
    /// Acks sent with a re-send hint (a gap the missing batches did not fill in time).
    pub resend_hints: AtomicU64,
    /// Batches (and their readings) shed because the store writer was a full queue behind.
    pub batches_shed: AtomicU64,
    pub readings_shed: AtomicU64,
    pub store_transactions: AtomicU64,
    pub store_errors: AtomicU64,
    pub acks_published: AtomicU64,
    /// Time to write and commit a group of batches.
    pub store_latency: AtomicLatencies,
    /// Time from a batch's arrival at the hub to its commit.
    pub ingest_latency: AtomicLatencies,
    pub periods_computed: AtomicU64,
    /// Monthly site summaries published (`site/{site}/summary`).
    pub summaries_published: AtomicU64,
    /// Retained messages of the hub put back after another account changed or deleted them.
    pub retained_restored: AtomicU64,
    /// Subscriptions the broker refused (SUBACK failure), over the hub's life.
    pub subscriptions_refused: AtomicU64,
    /// Filters the broker refused on the hub's current connection (health is degraded while any).
    pub refused_filters: Mutex<Vec<String>>,
    /// Connections to a broker lost or failed (each moves to the next broker of the list).
    pub broker_failures: AtomicU64,
    rejects: Mutex<BTreeMap<(String, Reject), u64>>,
}

impl Metrics {
    pub fn reject(&self, site: &str, why: Reject) {
        let mut g = self.rejects.lock().unwrap_or_else(|e| e.into_inner());
        *g.entry((site.to_string(), why)).or_insert(0) += 1;
    }

    /// (site, reason) → count; unknown sites are reported under the name they claimed.
    pub fn rejects(&self) -> BTreeMap<(String, Reject), u64> {
        self.rejects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn rejects_of(&self, site: &str) -> BTreeMap<&'static str, u64> {
        self.rejects()
            .into_iter()
            .filter(|((s, _), _)| s == site)
            .map(|((_, r), n)| (r.label(), n))
            .collect()
    }

    /// Run `f` on the (site, reason) → count map under its lock (a scrape copies nothing).
    pub fn with_rejects<R>(&self, f: impl FnOnce(&BTreeMap<(String, Reject), u64>) -> R) -> R {
        f(&self.rejects.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn observe_store_latency(&self, d: Duration) {
        self.store_latency.observe(d);
    }

    /// Time from a batch's arrival at the hub to its commit.
    pub fn observe_ingest_latency(&self, d: Duration) {
        self.ingest_latency.observe(d);
    }
}

/// What the hub knows of one site.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SiteView {
    pub id: String,
    pub name: String,
    /// `online`, `offline` or `unknown` (never heard of).
    pub state: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub backlog: u64,
    pub clock_synced: bool,
    pub version: String,
    pub meters: Vec<MeterStatus>,
    /// Highest contiguous seq stored (the ack).
    pub acked_seq: u64,
    /// (epoch, n) of the newest status taken: an older one is a replay and is ignored.
    #[serde(skip)]
    pub status_order: Option<(u64, u64)>,
}

/// The live status of every configured site.
#[derive(Debug)]
pub struct Sites {
    inner: Mutex<HashMap<String, SiteView>>,
}

impl Sites {
    pub fn new<'a>(sites: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let inner = sites
            .map(|(id, name)| {
                (
                    id.to_string(),
                    SiteView {
                        id: id.into(),
                        name: name.into(),
                        state: "unknown".into(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        Sites {
            inner: Mutex::new(inner),
        }
    }

    fn with<R>(&self, site: &str, f: impl FnOnce(&mut SiteView) -> R) -> Option<R> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.get_mut(site).map(f)
    }

    /// An opened status message (or the last will); taken only if newer than the last one taken
    /// ([`Status::order`]), so a replayed old status changes nothing. Returns whether it was taken.
    pub fn status(&self, site: &str, st: Status, now: DateTime<Utc>) -> bool {
        self.with(site, |v| {
            if v.status_order.is_some_and(|o| st.order() <= o) {
                return false;
            }
            v.status_order = Some(st.order());
            v.state = st.state;
            if v.state == "online" {
                v.last_seen = Some(v.last_seen.map_or(now, |l| l.max(now)));
                v.version = st.version;
                v.meters = st.meters;
                v.backlog = st.backlog;
                v.clock_synced = st.clock_synced;
            }
            true
        })
        .unwrap_or(false)
    }

    /// An authenticated batch arrived.
    pub fn seen(&self, site: &str, now: DateTime<Utc>) {
        self.with(site, |v| {
            v.last_seen = Some(now);
            if v.state == "unknown" {
                v.state = "online".into();
            }
        });
    }

    /// The epoch of the newest status taken from `site` (each connection of a site is one).
    pub fn epoch(&self, site: &str) -> Option<u64> {
        self.with(site, |v| v.status_order.map(|o| o.0)).flatten()
    }

    pub fn acked(&self, site: &str, seq: u64) {
        self.with(site, |v| v.acked_seq = v.acked_seq.max(seq));
    }

    /// Track exactly these sites from now on: new ones start `unknown`, the others keep what is
    /// known of them, sites no longer configured are dropped (`central::sites` reload).
    pub fn retain_and_add<'a>(&self, sites: impl Iterator<Item = (&'a str, &'a str)>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: HashMap<&str, &str> = sites.collect();
        g.retain(|id, _| wanted.contains_key(id.as_str()));
        for (id, name) in wanted {
            let v = g.entry(id.to_string()).or_insert_with(|| SiteView {
                id: id.into(),
                state: "unknown".into(),
                ..Default::default()
            });
            v.name = name.into();
        }
    }

    /// Run `f` on every site, sorted by id, under the lock (a scrape copies no site).
    pub fn with_all<R>(&self, f: impl FnOnce(&[&SiteView]) -> R) -> R {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<&SiteView> = g.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        f(&v)
    }

    /// Every site as of now, a silent one shown `stale` ([`liveness`]).
    pub fn all(&self) -> Vec<SiteView> {
        self.all_at(Utc::now())
    }

    /// Every site as of `now`.
    pub fn all_at(&self, now: DateTime<Utc>) -> Vec<SiteView> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<SiteView> = g
            .values()
            .cloned()
            .map(|mut s| {
                s.state = liveness(&s.state, s.last_seen, now).to_string();
                s
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

/// How often a site publishes its status (`site::uplink`'s `status_every`).
pub const STATUS_EVERY: Duration = Duration::from_secs(30);
/// A site whose last status or batch is older than this is `stale`: about twice the status
/// interval, so one late status is not an outage.
pub const STALE_AFTER: Duration = Duration::from_secs(2 * 30 + 5);

/// The state to show (pure): what the site's last status said, except that a site said
/// `online` and heard from neither by status nor by batch for [`STALE_AFTER`] is `stale`,
/// whatever the broker (or a last will that died with a broker node) says.
pub fn liveness(state: &str, last_seen: Option<DateTime<Utc>>, now: DateTime<Utc>) -> &str {
    let limit = chrono::Duration::from_std(STALE_AFTER).unwrap_or(chrono::Duration::MAX);
    match (state, last_seen) {
        ("online", Some(t)) if now.signed_duration_since(t) > limit => "stale",
        ("online", None) => "stale",
        (s, _) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, epoch: u64, n: u64) -> Status {
        Status {
            state: state.into(),
            epoch,
            n,
            backlog: n,
            ..Status::offline()
        }
    }

    #[test]
    fn a_site_silent_for_twice_the_status_interval_is_stale_whatever_the_will_says() {
        let sites = Sites::new([("iperal", "Iperal"), ("domus", "Domus")].into_iter());
        let t0 = Utc::now();
        assert!(sites.status("iperal", status("online", 10, 1), t0));
        let at = |secs: i64| {
            sites
                .all_at(t0 + chrono::Duration::seconds(secs))
                .into_iter()
                .map(|v| v.state)
                .collect::<Vec<_>>()
        };
        // `domus` never spoke: unknown, not stale.
        assert_eq!(at(0), ["unknown", "online"]);
        assert_eq!(at(40), ["unknown", "online"]);
        assert_eq!(at(66), ["unknown", "stale"]);
        // A batch is a sign of life too.
        sites.seen("iperal", t0 + chrono::Duration::seconds(60));
        assert_eq!(at(100), ["unknown", "online"]);
        // An offline status stays offline, however old.
        assert!(sites.status("iperal", status("offline", 10, Status::END_OF_EPOCH), t0));
        assert_eq!(at(10_000), ["unknown", "offline"]);
        assert_eq!(liveness("online", None, t0), "stale");
        assert_eq!(sites.epoch("iperal"), Some(10));
        assert_eq!(sites.epoch("domus"), None);
    }

    #[test]
    fn the_newest_status_wins_and_a_replayed_older_one_changes_nothing() {
        let sites = Sites::new([("iperal", "Iperal")].into_iter());
        let now = Utc::now();
        let state = || sites.all()[0].state.clone();
        assert!(sites.status("iperal", status("online", 10, 1), now));
        assert!(sites.status("iperal", status("online", 10, 2), now));
        assert_eq!(sites.all()[0].backlog, 2);
        // An old online status of the same epoch, then the same one again: ignored.
        assert!(!sites.status("iperal", status("online", 10, 1), now));
        assert!(!sites.status("iperal", status("online", 10, 2), now));
        // The will closes epoch 10; nothing of epoch 10 reopens it.
        assert!(sites.status("iperal", status("offline", 10, Status::END_OF_EPOCH), now));
        assert!(!sites.status("iperal", status("online", 10, 3), now));
        assert_eq!(state(), "offline");
        // A new epoch is online; the old will replayed does not mark it offline.
        assert!(sites.status("iperal", status("online", 11, 1), now));
        assert!(!sites.status("iperal", status("offline", 10, Status::END_OF_EPOCH), now));
        assert!(!sites.status("iperal", status("offline", 9, Status::END_OF_EPOCH), now));
        assert_eq!(state(), "online");
        // Unknown sites are not tracked.
        assert!(!sites.status("intruder", status("online", 99, 1), now));
    }
}
