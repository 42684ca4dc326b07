//! Authenticated ingest: every message on `site/+/readings` is opened (size, envelope, topic, site,
//! AEAD with that site's key, timestamps) before it may reach the store; site status, sealed the
//! same way, is tracked (newest first); the hub's own retained topics are watched for tampering.
//!
//! A refused message is counted by reason and site, logged, and dropped: it must never be stored,
//! acknowledged, or crash the hub.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use super::broker::Endpoint;
use super::retained::Retained;
use super::sites::{KeyPair, SiteKeys};
use super::status::{Metrics, Reject, Sites};
use super::store::{Committed, Incoming, StoreHandle};
use crate::wire::{self, Ack, Batch, Status, Topics, WireError};

/// How far ahead of the hub's clock a batch may be sent or a reading taken.
pub const MAX_FUTURE: Duration = Duration::from_secs(300);
/// Largest status message accepted, bytes.
pub const MAX_STATUS_BYTES: usize = 64 * 1024;
/// Name under which messages for sites not in the config are counted (a bounded label set).
pub const UNKNOWN_SITE_LABEL: &str = "(unknown)";

/// (site, meter) → (time, power W) of its latest reading.
pub type LatestPower = HashMap<(String, String), (DateTime<Utc>, f64)>;

/// Refusals are all counted, but a flood of them (thousands a second from one forging account)
/// must not become a flood of log lines: one line per (site label, reason) a minute at most.
/// The keys are bounded: configured sites plus [`UNKNOWN_SITE_LABEL`], times the reasons.
struct RefusalLog {
    last: Mutex<BTreeMap<(String, &'static str), Instant>>,
}

const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

static REFUSAL_LOG: RefusalLog = RefusalLog {
    last: Mutex::new(BTreeMap::new()),
};

impl RefusalLog {
    fn due(&self, site: &str, reason: &'static str, now: Instant) -> bool {
        let mut g = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match g.get_mut(&(site.to_string(), reason)) {
            Some(t) if now.duration_since(*t) < REFUSAL_LOG_EVERY => false,
            Some(t) => {
                *t = now;
                true
            }
            None => {
                g.insert((site.to_string(), reason), now);
                true
            }
        }
    }
}

/// The latest power per (site, meter), for the live community figures.
#[derive(Default)]
pub struct Latest {
    inner: Mutex<LatestPower>,
}

impl Latest {
    pub fn update(&self, site: &str, batch: &Batch) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for r in &batch.readings {
            // An impossible power never reaches the live figures (the store quarantines it too).
            let Some(p) = r.values.p_w.filter(|p| super::plausible::power_ok(*p)) else {
                continue;
            };
            let key = (site.to_string(), r.meter.clone());
            match g.get_mut(&key) {
                Some(v) if v.0 >= r.ts => {}
                Some(v) => *v = (r.ts, p),
                None => {
                    g.insert(key, (r.ts, p));
                }
            }
        }
    }

    pub fn snapshot(&self) -> LatestPower {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The checks of the ingest path (no I/O: testable on its own).
pub struct Gate {
    topics: Topics,
    /// The live key table (`central::sites`): sites picked up, removed or rotated while the hub
    /// runs are seen at the next message.
    keys: Arc<SiteKeys>,
}

impl Gate {
    pub fn new(community: &str, keys: HashMap<String, Vec<u8>>) -> Self {
        Self::with_keys(
            community,
            Arc::new(SiteKeys::new(keys.into_iter().map(|(site, current)| {
                (
                    site,
                    KeyPair {
                        current,
                        previous: None,
                    },
                )
            }))),
        )
    }

    /// A gate over a shared, live key table.
    pub fn with_keys(community: &str, keys: Arc<SiteKeys>) -> Self {
        Gate {
            topics: Topics::new(community),
            keys,
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The key the hub seals a message to `site` with (the one the site used last).
    pub fn key(&self, site: &str) -> Option<Vec<u8>> {
        self.keys.sealing_key(site)
    }

    /// The live key table.
    pub fn keys(&self) -> &Arc<SiteKeys> {
        &self.keys
    }

    /// Check a readings message; on refusal, the site label to count it under and why.
    pub fn check_batch(
        &self,
        topic: &str,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(String, Batch), (String, Reject)> {
        let Some((site, leaf)) = self.topics.parse_site_topic(topic) else {
            return Err((UNKNOWN_SITE_LABEL.into(), Reject::UnknownSite));
        };
        let label = |s: &str| {
            if self.keys.contains(s) {
                s.to_string()
            } else {
                UNKNOWN_SITE_LABEL.to_string()
            }
        };
        if leaf != "readings" {
            return Err((label(site), Reject::Malformed));
        }
        let env = wire::open_unverified(payload).map_err(|e| (label(site), reject_of(&e)))?;
        let Some(opened) = self.keys.open::<Batch>(site, topic, &env) else {
            return Err((UNKNOWN_SITE_LABEL.into(), Reject::UnknownSite));
        };
        let batch = opened.map_err(|e| (site.to_string(), reject_of(&e)))?;
        if batch.site != site {
            return Err((site.into(), Reject::Inconsistent));
        }
        let limit = now + chrono::Duration::from_std(MAX_FUTURE).unwrap_or_default();
        if batch.sent > limit || batch.readings.iter().any(|r| r.ts > limit) {
            return Err((site.into(), Reject::FarFuture));
        }
        Ok((site.to_string(), batch))
    }
}

fn reject_of(e: &WireError) -> Reject {
    match e {
        WireError::Oversized(_) => Reject::Oversized,
        WireError::Malformed(_) | WireError::MalformedBody(_) => Reject::Malformed,
        WireError::Version(_) => Reject::Version,
        WireError::SiteMismatch { .. } => Reject::SiteMismatch,
        WireError::BadMac | WireError::BadSignature => Reject::BadMac,
    }
}

/// MQTT options for the hub's client on each broker of `ep`, in order (same for embedded and
/// external brokers; TLS per broker, by its URL's scheme).
pub fn mqtt_options_all(ep: &Endpoint, client_id: &str) -> Vec<MqttOptions> {
    ep.nodes()
        .into_iter()
        .map(|(tls, host, port)| {
            let node = Endpoint {
                host,
                port,
                tls,
                others: Vec::new(),
                ..ep.clone()
            };
            mqtt_options(&node, client_id)
        })
        .collect()
}

/// MQTT options for the hub's client (same for embedded and external brokers).
pub fn mqtt_options(ep: &Endpoint, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, ep.host.clone(), ep.port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_clean_session(true);
    // Room above the envelope limit: an oversized batch must reach us to be counted, not drop the
    // connection.
    o.set_max_packet_size(
        wire::MAX_ENVELOPE_BYTES * 2 + 4096,
        wire::MAX_ENVELOPE_BYTES + 4096,
    );
    o.set_request_channel_capacity(4096);
    o.set_inflight(200);
    if !ep.username.is_empty() {
        o.set_credentials(ep.username.clone(), ep.password.clone());
    }
    if ep.tls {
        o.set_transport(crate::tls::client_transport(ep.ca_pem.as_deref()));
    }
    o
}

/// Everything the ingest needs.
pub struct Ingest {
    pub gate: Gate,
    pub metrics: Arc<Metrics>,
    pub sites: Arc<Sites>,
    pub latest: Arc<Latest>,
    pub store: StoreHandle,
    /// What the hub keeps retained on the broker, restored when another account changes it.
    pub retained: Arc<Retained>,
    /// Tells the republisher ([`run_republish`]) what to publish again.
    pub republish: mpsc::UnboundedSender<Republish>,
}

/// What the hub publishes again, because a broker may have lost its retained messages (a node
/// that died, RabbitMQ's per-node retained store) or never delivers them to a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Republish {
    /// The hub (re)subscribed: every ack and summary (a site whose batch went out before the
    /// hub was subscribed learns the ack, and re-sends what it does not cover).
    Everything,
    /// A site came online (a new status epoch): its ack and summary.
    Site(String),
}

/// How often the signal is published again even when it did not change.
pub const SIGNAL_REPUBLISH_EVERY: Duration = Duration::from_secs(60);

impl Ingest {
    /// Handle one publish from the broker.
    pub async fn handle(&self, topic: &str, payload: &[u8]) {
        self.metrics
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        let now = Utc::now();
        match self.gate.topics.parse_site_topic(topic) {
            Some((site, "status")) => self.handle_status(site, payload, now),
            Some((_, "readings")) => self.handle_readings(topic, payload, now).await,
            _ => {
                // The hub's own retained topics (ack, summary, signal, balance).
                self.retained.observe(topic, payload);
            }
        }
    }

    fn handle_status(&self, site: &str, payload: &[u8], now: DateTime<Utc>) {
        if !self.gate.keys.contains(site) {
            return;
        }
        if payload.is_empty() {
            return; // a cleared retained message
        }
        if payload.len() > MAX_STATUS_BYTES {
            self.metrics.reject(site, Reject::Oversized);
            return;
        }
        let topic = self.gate.topics.status(site);
        let opened = wire::open_unverified(payload).and_then(|env| {
            self.gate
                .keys
                .open::<Status>(site, &topic, &env)
                .unwrap_or(Err(WireError::BadMac))
        });
        match opened {
            Ok(st) => {
                let before = self.sites.epoch(site);
                let (epoch, online) = (st.epoch, st.state == "online");
                if !self.sites.status(site, st, now) {
                    tracing::debug!("site {site}: an older status ignored (replayed?)");
                } else if online && before != Some(epoch) {
                    // A new connection of the site: it may have missed its ack and summary.
                    let _ = self.republish.send(Republish::Site(site.to_string()));
                }
            }
            Err(e) => {
                let why = reject_of(&e);
                if REFUSAL_LOG.due(site, why.label(), Instant::now()) {
                    tracing::warn!("site {site}: status refused: {e} (refusals of this kind are counted in socer_rejected_total and logged at most once a minute)");
                }
                self.metrics.reject(site, why);
            }
        }
    }

    async fn handle_readings(&self, topic: &str, payload: &[u8], now: DateTime<Utc>) {
        let received = Instant::now();
        let checked = self
            .gate
            .check_batch(topic, payload, now)
            .and_then(
                |(site, batch)| match super::plausible::check_batch(&batch) {
                    Ok(()) => Ok((site, batch)),
                    Err(why) => Err((site, why)),
                },
            );
        match checked {
            Err((site, why)) => {
                if REFUSAL_LOG.due(&site, why.label(), received) {
                    tracing::warn!(
                        "refused a readings message on {topic}: {} (refusals of this kind are counted in socer_rejected_total and logged at most once a minute)",
                        why.label()
                    );
                }
                self.metrics.reject(&site, why);
            }
            Ok((site, batch)) => {
                self.metrics
                    .batches_accepted
                    .fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .readings_received
                    .fetch_add(batch.readings.len() as u64, Ordering::Relaxed);
                self.sites.seen(&site, now);
                self.latest.update(&site, &batch);
                let inc = Incoming {
                    site,
                    readings: batch.readings,
                    received,
                    dropped_through: batch.dropped_through,
                    unacked_from: batch.unacked_from,
                };
                if let Err(e) = self.store.write(inc).await {
                    tracing::error!("ingest: {e}");
                }
            }
        }
    }
}

/// The filters the hub subscribes to, one SUBSCRIBE per group: the readings of every site by
/// wildcard (never retained), and each configured site's status, ack and summary by exact topic
/// only (retained: some brokers deliver retained messages to exact subscriptions only; never by
/// wildcard too, or a broker that delivers once per matching subscription doubles each). The exact
/// ones are QoS 0: on NATS each QoS 1 subscription is a JetStream consumer holding up to
/// `max_ack_pending` of a session's 65,535, which a thousand sites' worth would exceed; a status
/// comes again within its interval and the acks and summaries are watched only for tampering.
/// `qos` is the wildcards' (`[broker] subscribe_qos`).
pub fn subscriptions(topics: &Topics, sites: &[String], qos: QoS) -> Vec<(QoS, Vec<String>)> {
    let mut groups = vec![(
        qos,
        vec![
            topics.all_readings(),
            // Watched so that the hub restores them if another account changes them.
            topics.signal(),
            topics.balance(),
        ],
    )];
    let per_site: Vec<String> = sites
        .iter()
        .flat_map(|s| [topics.status(s), topics.ack(s), topics.summary(s)])
        .collect();
    // At most 90 filters a packet: well inside any broker's packet limit.
    for chunk in per_site.chunks(90) {
        groups.push((QoS::AtMostOnce, chunk.to_vec()));
    }
    groups
}

/// Poll the hub's MQTT connection forever: (re)subscribe on every connection and check each
/// SUBACK, hand publishes to the ingest, move to the next broker when one fails. `nodes` are the
/// options of each broker, in order (see [`mqtt_options_all`]).
pub async fn run_client(
    client: AsyncClient,
    mut events: EventLoop,
    nodes: Vec<MqttOptions>,
    qos: QoS,
    ingest: Arc<Ingest>,
    connected: impl Fn(bool) + Send + 'static,
) {
    let topics = ingest.gate.topics.clone();
    let mut sites: Vec<String> = ingest.gate.keys.ids();
    sites.sort();
    let mut failover = crate::mqttlink::Failover::new(nodes);
    let mut subs = crate::mqttlink::SubTracker::default();
    let mut up = false;
    // The QoS each filter was subscribed with (for a retry), filled by `subscribe_group`.
    let mut qos_of: HashMap<String, QoS> = HashMap::new();
    let mut retry = tokio::time::interval(crate::mqttlink::SUBSCRIBE_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let polled = tokio::select! {
            ev = events.poll() => ev,
            _ = retry.tick() => {
                // Sites enrolled while the hub runs (`central::sites` reload) get their exact
                // subscriptions here; a removed site's messages are refused as unknown.
                let mut now_sites = ingest.gate.keys.ids();
                now_sites.sort();
                if up && now_sites != sites {
                    let added: Vec<String> = now_sites
                        .iter()
                        .filter(|s| sites.binary_search(s).is_err())
                        .cloned()
                        .collect();
                    for (q, group) in subscriptions(&topics, &added, qos).into_iter().skip(1) {
                        subscribe_group(&client, q, group, &mut subs, &mut qos_of);
                    }
                    if !added.is_empty() {
                        tracing::info!(sites = ?added, "subscribed to the status, ack and summary of sites enrolled since the start");
                    }
                    sites = now_sites;
                }
                if let Some(again) = subs.retry().filter(|_| up) {
                    tracing::info!(filters = ?again, "subscribing again to what the broker refused");
                    let many = again.iter().map(|t| {
                        let qos = qos_of.get(t).copied().unwrap_or(QoS::AtLeastOnce);
                        rumqttc::SubscribeFilter::new(t.clone(), qos)
                    });
                    if client.try_subscribe_many(many).is_ok() {
                        subs.queued(again);
                    }
                }
                continue;
            }
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failover.connected();
                up = true;
                connected(true);
                subs.reset();
                set_refused(&ingest.metrics, &[]);
                tracing::info!(broker = %failover.address(), "hub connected to the broker");
                for (q, group) in subscriptions(&topics, &sites, qos) {
                    subscribe_group(&client, q, group, &mut subs, &mut qos_of);
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Subscribe(pkid))) => subs.sent(pkid),
            Ok(Event::Incoming(Packet::SubAck(a))) => {
                let mut refused = 0;
                for r in subs.answered(a.pkid, &a.return_codes) {
                    if !r.granted {
                        refused += 1;
                        tracing::error!(broker = %failover.address(), filter = %r.filter, "the broker refused the hub's subscription: check the hub's permissions (under NATS, $MQTT.sub.> too)");
                    }
                }
                ingest
                    .metrics
                    .subscriptions_refused
                    .fetch_add(refused, Ordering::Relaxed);
                set_refused(&ingest.metrics, subs.refused());
                if subs.settled() {
                    // Subscribed: what was published while the hub was away (or on a node that
                    // died) reaches the sites again.
                    let _ = ingest.republish.send(Republish::Everything);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => ingest.handle(&p.topic, &p.payload).await,
            Ok(_) => {}
            Err(e) => {
                connected(false);
                ingest
                    .metrics
                    .broker_failures
                    .fetch_add(1, Ordering::Relaxed);
                let from = failover.address();
                let wait = failover.failed(rand::random::<f64>());
                if let Some(next) = failover.current() {
                    events.mqtt_options = next.clone();
                }
                if up {
                    tracing::warn!(broker = %from, "broker connection lost: {e}; trying {} in {wait:?}", failover.address());
                } else {
                    tracing::warn!(broker = %from, "cannot connect to the broker: {e}; trying {} in {wait:?}", failover.address());
                }
                up = false;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Subscribe to one group of filters at `qos` and track its SUBACK (and the QoS a retry uses).
fn subscribe_group(
    client: &AsyncClient,
    qos: QoS,
    group: Vec<String>,
    subs: &mut crate::mqttlink::SubTracker,
    qos_of: &mut HashMap<String, QoS>,
) {
    for t in &group {
        qos_of.insert(t.clone(), qos);
    }
    let filters = group
        .iter()
        .map(|t| rumqttc::SubscribeFilter::new(t.clone(), qos));
    match client.try_subscribe_many(filters) {
        Ok(()) => subs.queued(group),
        Err(e) => tracing::error!("cannot subscribe: {e}"),
    }
}

fn set_refused(metrics: &super::status::Metrics, filters: &[String]) {
    let mut g = metrics
        .refused_filters
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    g.clear();
    g.extend(filters.iter().cloned());
}

/// Poll a publish-only connection forever (rumqttc sends nothing unless its event loop is
/// polled), moving to the next broker when one fails.
pub async fn drive(mut events: EventLoop, nodes: Vec<MqttOptions>) {
    let mut failover = crate::mqttlink::Failover::new(nodes);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => failover.connected(),
            Ok(_) => {}
            Err(e) => {
                let from = failover.address();
                let wait = failover.failed(rand::random::<f64>());
                if let Some(next) = failover.current() {
                    events.mqtt_options = next.clone();
                }
                tracing::warn!(broker = %from, "broker connection (publisher): {e}; trying {} in {wait:?}", failover.address());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Publish again what [`Republish`] asks for, and the signal every [`SIGNAL_REPUBLISH_EVERY`]:
/// the exact bytes the hub last published on each topic (nothing is made anew here).
pub async fn run_republish(
    ingest: Arc<Ingest>,
    client: AsyncClient,
    mut asked: mpsc::UnboundedReceiver<Republish>,
) {
    let topics = ingest.gate.topics.clone();
    let signal = topics.signal();
    let mut tick = tokio::time::interval(SIGNAL_REPUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let pick: Box<dyn Fn(&str) -> bool + Send> = tokio::select! {
            a = asked.recv() => match a {
                None => return,
                Some(Republish::Everything) => {
                    // Coalesce a burst (one per SUBACK, several connections).
                    while asked.try_recv().is_ok() {}
                    let t = topics.clone();
                    Box::new(move |topic: &str| {
                        matches!(t.parse_site_topic(topic), Some((_, "ack" | "summary")))
                    })
                }
                Some(Republish::Site(site)) => {
                    let (ack, summary) = (topics.ack(&site), topics.summary(&site));
                    Box::new(move |topic: &str| topic == ack || topic == summary)
                }
            },
            _ = tick.tick() => {
                let s = signal.clone();
                Box::new(move |topic: &str| topic == s)
            }
        };
        for (topic, qos, bytes) in ingest.retained.matching(pick) {
            if let Err(e) = client.publish(topic.clone(), qos, true, bytes).await {
                tracing::warn!("cannot publish {topic} again: {e}");
            }
        }
    }
}

/// Publish the retained, sealed end-to-end ack of each site the store reports, newest only.
pub async fn run_acks(
    client: AsyncClient,
    gate: Arc<Ingest>,
    mut committed: mpsc::UnboundedReceiver<Committed>,
) {
    while let Some(first) = committed.recv().await {
        // Coalesce what has queued up: only the highest seq per site matters, and a re-send
        // request only while it still follows that seq.
        let mut latest: HashMap<String, Ack> = HashMap::new();
        let mut take = |c: Committed| {
            for (site, seq) in c.acks {
                let e = latest.entry(site).or_default();
                e.seq = e.seq.max(seq);
            }
            for (site, seq) in c.resend {
                let e = latest.entry(site).or_default();
                e.seq = e.seq.max(seq);
                e.resend_from = Some(seq + 1);
            }
        };
        take(first);
        while let Ok(c) = committed.try_recv() {
            take(c);
        }
        for (site, mut ack) in latest {
            ack.resend_from = ack.resend_from.filter(|&r| r == ack.seq + 1);
            // Republished even when unchanged: a site that replays a batch missed the last ack.
            publish(&client, &gate, &site, ack).await;
            gate.sites.acked(&site, ack.seq);
        }
    }
}

/// Seal and publish one site's ack (retained, QoS 1).
pub async fn publish_ack(client: &AsyncClient, ingest: &Ingest, site: &str, seq: u64) {
    publish(
        client,
        ingest,
        site,
        Ack {
            seq,
            resend_from: None,
        },
    )
    .await
}

async fn publish(client: &AsyncClient, ingest: &Ingest, site: &str, ack: Ack) {
    let Some(key) = ingest.gate.key(site) else {
        return;
    };
    let topic = ingest.gate.topics.ack(site);
    let payload = wire::seal(&key, site, &topic, &ack);
    match ingest
        .retained
        .publish(client, topic, QoS::AtLeastOnce, payload)
        .await
    {
        Ok(()) => {
            ingest
                .metrics
                .acks_published
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!("cannot publish the ack of {site}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_flood_of_refusals_logs_one_line_a_minute_per_site_and_reason() {
        let log = RefusalLog {
            last: Mutex::new(BTreeMap::new()),
        };
        let t0 = Instant::now();
        assert!(log.due("a", "bad_mac", t0));
        assert!(!log.due("a", "bad_mac", t0 + Duration::from_secs(59)));
        assert!(log.due("a", "malformed", t0));
        assert!(log.due("b", "bad_mac", t0));
        assert!(log.due("a", "bad_mac", t0 + Duration::from_secs(61)));
    }
    use super::*;
    use socer_drivers::reading::{Quality, Values};
    use wire::WireReading;

    fn gate() -> Gate {
        Gate::new(
            "socer",
            HashMap::from([("domus-1".to_string(), b"0123456789abcdef".to_vec())]),
        )
    }

    fn batch(site: &str, ts: DateTime<Utc>) -> Batch {
        Batch {
            site: site.into(),
            sent: ts,
            readings: vec![WireReading {
                seq: 1,
                meter: "grid".into(),
                ts,
                values: Values {
                    p_w: Some(100.0),
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
    fn genuine_batch_passes_the_gate() {
        let g = gate();
        let now = Utc::now();
        let topic = g.topics().readings("domus-1");
        let bytes = wire::seal(
            b"0123456789abcdef",
            "domus-1",
            &topic,
            &batch("domus-1", now),
        );
        let (site, b) = g.check_batch(&topic, &bytes, now).unwrap();
        assert_eq!((site.as_str(), b.readings.len()), ("domus-1", 1));
    }

    #[test]
    fn each_kind_of_bad_message_is_refused_with_its_reason() {
        let g = gate();
        let now = Utc::now();
        let topic = g.topics().readings("domus-1");
        let key = b"0123456789abcdef";
        let forged = wire::seal(
            b"another-key-0000",
            "domus-1",
            &topic,
            &batch("domus-1", now),
        );
        assert_eq!(
            g.check_batch(&topic, &forged, now).unwrap_err(),
            ("domus-1".into(), Reject::BadMac)
        );
        assert_eq!(
            g.check_batch(&topic, b"{nope", now).unwrap_err(),
            ("domus-1".into(), Reject::Malformed)
        );
        let future = wire::seal(
            key,
            "domus-1",
            &topic,
            &batch("domus-1", now + chrono::Duration::hours(2)),
        );
        assert_eq!(
            g.check_batch(&topic, &future, now).unwrap_err(),
            ("domus-1".into(), Reject::FarFuture)
        );
        let other = g.topics().readings("intruder");
        let unknown = wire::seal(key, "intruder", &other, &batch("intruder", now));
        assert_eq!(
            g.check_batch(&other, &unknown, now).unwrap_err(),
            (UNKNOWN_SITE_LABEL.into(), Reject::UnknownSite)
        );
        let inconsistent = wire::seal(key, "domus-1", &topic, &batch("domus-2", now));
        assert_eq!(
            g.check_batch(&topic, &inconsistent, now).unwrap_err(),
            ("domus-1".into(), Reject::Inconsistent)
        );
        let big = vec![b' '; wire::MAX_ENVELOPE_BYTES + 1];
        assert_eq!(
            g.check_batch(&topic, &big, now).unwrap_err(),
            ("domus-1".into(), Reject::Oversized)
        );
    }
}
