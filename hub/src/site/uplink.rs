//! The uplink: publishes the outbox's readings to the community broker in authenticated batches
//! and lets them go only when the central hub's authenticated ack covers them.
//!
//! It must never treat a broker PUBACK as delivery, never skip a seq, and never spin on a broker
//! that is down (back-off with jitter). It holds a list of brokers (the nodes of a cluster) and
//! moves to the next when one fails ([`crate::mqttlink`]). After an outage it replays from the
//! last ack at once, in seq order, with at most `window` unacknowledged batches in flight.
//!
//! It is the site's only connection to the community broker (under Mosquitto's
//! `use_username_as_clientid` a second one would take this one's session): it also carries the
//! subscriptions of the signal listener ([`Inbox`]). Its status is sealed and ordered by
//! (epoch, n): each connection gets a new epoch, kept on disk so that it only ever grows, and its
//! sealed last will closes it. If another account replaces or deletes the retained status, the
//! uplink publishes its own again.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use socer_drivers::clock::Clock;

use super::config::BrokerUrl;
use super::outbox::Outbox;
use crate::wire::{self, Ack, Batch, Status, Topics};

/// Everything the uplink needs to know.
#[derive(Clone)]
pub struct UplinkConfig {
    /// The brokers, in order (the nodes of a cluster): on a failure the uplink moves to the next.
    pub brokers: Vec<BrokerUrl>,
    /// The install's instance id ([`crate::instance`]), part of the client id.
    pub instance: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM of the broker's CA, for mqtts.
    pub ca_pem: Option<Vec<u8>>,
    pub key: Vec<u8>,
    pub community: String,
    pub site: String,
    pub batch_readings: usize,
    pub window: usize,
    /// A batch not acknowledged within this time is sent again (with everything after it).
    pub ack_timeout: Duration,
    pub status_every: Duration,
    /// Where the last status epoch is kept (`None`: the wall clock alone orders epochs).
    pub epoch_file: Option<PathBuf>,
    /// Other subscriptions carried on this connection.
    pub inbox: Option<Inbox>,
    /// QoS of every subscription (`[mqtt] subscribe_qos`).
    pub subscribe_qos: QoS,
}

/// Where an [`Inbox`]'s messages go: (topic, payload).
pub type Deliver = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// Topics another part of the agent listens to on the uplink's connection, and where their
/// messages go.
#[derive(Clone)]
pub struct Inbox {
    pub topics: Vec<String>,
    pub deliver: Deliver,
}

/// Restores of the retained status happen at most this often.
const RESTORE_EVERY: Duration = Duration::from_secs(1);

/// Status epochs: strictly increasing across connections and restarts. An epoch is the larger of
/// the wall clock in ms and the last one + 1, and is written to `file` before it is used.
struct Epochs {
    file: Option<PathBuf>,
    current: AtomicU64,
}

impl Epochs {
    fn new(file: Option<PathBuf>) -> Self {
        let stored = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Epochs {
            file,
            current: AtomicU64::new(stored),
        }
    }

    /// Begin a new epoch and return it.
    fn next(&self) -> u64 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, socer_drivers::clock::saturating_ms);
        let e = now_ms.max(self.current.load(Ordering::Relaxed).saturating_add(1));
        self.current.store(e, Ordering::Relaxed);
        if let Some(f) = &self.file {
            let tmp = f.with_extension("tmp");
            let res =
                std::fs::write(&tmp, format!("{e}\n")).and_then(|()| std::fs::rename(&tmp, f));
            if let Err(err) = res {
                tracing::warn!("status epoch file {}: {err}", f.display());
            }
        }
        e
    }

    fn current(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }
}

/// What the uplink reports to health and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UplinkState {
    pub connected: bool,
    pub last_error: Option<String>,
    pub batches_sent: u64,
    pub readings_sent: u64,
    pub acks: u64,
    /// Acks refused (bad MAC, malformed): someone else is writing to our ack topic.
    pub acks_rejected: u64,
    pub last_ack_seq: u64,
    pub reconnects: u64,
    /// Times the retained status was put back after another account changed or deleted it.
    pub status_restored: u64,
    /// Re-sends started at the hub's request (a gap it saw: [`Ack::resend_from`]).
    pub resends_asked: u64,
    /// `host:port` of the broker in use (or last tried).
    pub broker: String,
    /// Subscriptions the broker refused (SUBACK failure), over the agent's life.
    pub subscriptions_refused: u64,
    /// Filters the broker refused on the current connection (health is degraded while any).
    pub refused_filters: Vec<String>,
}

/// Least time between two re-sends the hub asks for.
const RESEND_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// A batch in flight this long when the hub repeats an ack that does not cover it is taken as
/// lost (the hub answers a batch within milliseconds when it holds it, and within seconds when
/// overloaded: longer than that, so that a slow hub is not sent more).
const STALLED_AFTER: Duration = Duration::from_secs(5);

pub type SharedUplink = Arc<Mutex<UplinkState>>;

enum Ev {
    /// Connected to the broker at this address.
    Connected(String),
    Disconnected(String),
    Message(String, Vec<u8>),
    SubAck(u16, Vec<rumqttc::SubscribeReasonCode>),
    SubscribeSent(u16),
}

/// Builds the retained status on demand (the agent knows meters, backlog and clock).
pub type StatusFn = Arc<dyn Fn() -> Status + Send + Sync>;

/// The client id: `{account}.{community}.site.{site}.{instance}` ([`crate::instance::client_id`]),
/// the same on every broker and reconnect, unique across communities and identical images. The
/// embedded broker admits an account only with ids `{account}` or `{account}.…`; Mosquitto's
/// `use_username_as_clientid` replaces it by the account's name.
pub fn client_id(cfg: &UplinkConfig) -> String {
    let account = match &cfg.username {
        Some(u) if !u.is_empty() => u.clone(),
        _ => format!("socer-site-{}", cfg.site),
    };
    crate::instance::client_id(
        &account,
        &cfg.community,
        crate::instance::Role::Site,
        Some(&cfg.site),
        &cfg.instance,
    )
}

/// The sealed last will closing `epoch`.
fn last_will(cfg: &UplinkConfig, epoch: u64) -> LastWill {
    let topic = Topics::new(&cfg.community).status(&cfg.site);
    let offline = Status {
        epoch,
        ..Status::offline()
    };
    let sealed = wire::seal(&cfg.key, &cfg.site, &topic, &offline);
    LastWill::new(topic, sealed, QoS::AtLeastOnce, true)
}

/// The options for each broker, in order (the last will is set per connection).
fn options_all(cfg: &UplinkConfig) -> Vec<MqttOptions> {
    cfg.brokers.iter().map(|b| options(cfg, b)).collect()
}

fn options(cfg: &UplinkConfig, broker: &BrokerUrl) -> MqttOptions {
    let mut o = MqttOptions::new(client_id(cfg), broker.host.clone(), broker.port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_clean_session(true);
    o.set_max_packet_size(
        wire::MAX_ENVELOPE_BYTES + 4096,
        wire::MAX_ENVELOPE_BYTES + 4096,
    );
    o.set_inflight(u16::try_from(cfg.window.max(1) * 2).unwrap_or(100));
    if let (Some(u), p) = (&cfg.username, &cfg.password) {
        o.set_credentials(u.clone(), p.clone().unwrap_or_default());
    }
    if broker.tls {
        o.set_transport(crate::tls::client_transport(cfg.ca_pem.as_deref()));
    }
    o
}

/// Start the uplink; it runs until `shutdown` turns true, then publishes `offline` and returns.
pub fn spawn(
    cfg: UplinkConfig,
    outbox: Outbox,
    clock: Arc<dyn Clock>,
    status: StatusFn,
    state: SharedUplink,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let epochs = Arc::new(Epochs::new(cfg.epoch_file.clone()));
    let mut failover = crate::mqttlink::Failover::new(options_all(&cfg));
    let mut first = failover
        .current()
        .cloned()
        .unwrap_or_else(|| MqttOptions::new(client_id(&cfg), "127.0.0.1", 1883));
    first.set_last_will(last_will(&cfg, epochs.next()));
    let (client, mut eventloop) = AsyncClient::new(first, 256);
    let (ev_tx, ev_rx) = mpsc::channel::<Ev>(1024);
    let (poll_epochs, will_cfg) = (epochs.clone(), cfg.clone());
    let poller = tokio::spawn(async move {
        loop {
            let ev = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failover.connected();
                    Ev::Connected(failover.address())
                }
                Ok(Event::Incoming(Packet::Publish(p))) => Ev::Message(p.topic, p.payload.to_vec()),
                Ok(Event::Incoming(Packet::SubAck(a))) => Ev::SubAck(a.pkid, a.return_codes),
                Ok(Event::Outgoing(rumqttc::Outgoing::Subscribe(pkid))) => Ev::SubscribeSent(pkid),
                Ok(_) => continue,
                Err(e) => {
                    let from = failover.address();
                    if ev_tx
                        .send(Ev::Disconnected(format!("{from}: {e}")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    // The next broker of the list (after a whole round, a back-off with
                    // jitter); the next connection is a new epoch, closed by its own will.
                    let wait = failover.failed(rand::thread_rng().gen::<f64>());
                    if let Some(next) = failover.current() {
                        eventloop.mqtt_options = next.clone();
                    }
                    let will = last_will(&will_cfg, poll_epochs.next());
                    eventloop.mqtt_options.set_last_will(will);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            if ev_tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut link = Link {
            cfg,
            outbox,
            clock,
            status,
            state,
            client,
            inflight: VecDeque::new(),
            epochs,
            status_n: 0,
            last_status: None,
        };
        link.run(ev_rx, shutdown).await;
        poller.abort();
    })
}

struct Link {
    cfg: UplinkConfig,
    outbox: Outbox,
    clock: Arc<dyn Clock>,
    status: StatusFn,
    state: SharedUplink,
    client: AsyncClient,
    /// Batches published and not yet acknowledged: (last seq, when published).
    inflight: VecDeque<(u64, Instant)>,
    epochs: Arc<Epochs>,
    /// `n` of the last status published in the current epoch.
    status_n: u64,
    /// The sealed status last published (what the broker should hold).
    last_status: Option<Vec<u8>>,
}

impl Link {
    fn with_state(&self, f: impl FnOnce(&mut UplinkState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    async fn run(&mut self, mut events: mpsc::Receiver<Ev>, mut shutdown: watch::Receiver<bool>) {
        let topics = Topics::new(&self.cfg.community);
        let ack_topic = topics.ack(&self.cfg.site);
        let status_topic = topics.status(&self.cfg.site);
        let mut durable = self.outbox.durable();
        let mut durable_alive = true;
        let mut connected = false;
        let mut last_connect_error: Option<String> = None;
        let mut acked = self.outbox.stats().acked;
        let mut sent_upto = acked;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = Instant::now();
        let mut restore_due = false;
        let mut last_restore = Instant::now() - RESTORE_EVERY;
        let mut last_asked: Option<Instant> = None;
        let mut subs = crate::mqttlink::SubTracker::default();
        let mut repeated_at: Option<Instant> = None;
        let mut last_sub_retry = Instant::now();
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    None => return,
                    Some(Ev::Connected(broker)) => {
                        connected = true;
                        last_connect_error = None;
                        // Everything unacknowledged goes again at once (below), not at the ack
                        // timeout: what was in flight may have died with the broker.
                        self.inflight.clear();
                        sent_upto = acked;
                        self.with_state(|s| {
                            s.connected = true;
                            s.last_error = None;
                            s.reconnects += 1;
                            s.broker.clone_from(&broker);
                            s.refused_filters.clear();
                        });
                        tracing::info!(%broker, "connected to the broker");
                        // The status topic too: to see another account replace or delete it.
                        let inbox = self.cfg.inbox.as_ref().map(|i| i.topics.clone()).unwrap_or_default();
                        let filters: Vec<String> = [ack_topic.clone(), status_topic.clone()].into_iter().chain(inbox).collect();
                        subs.reset();
                        let many = filters.iter().map(|t| rumqttc::SubscribeFilter::new(t.clone(), self.cfg.subscribe_qos));
                        match self.client.subscribe_many(many).await {
                            Ok(()) => subs.queued(filters),
                            Err(e) => tracing::warn!("subscribe: {e}"),
                        }
                        self.status_n = 0;
                        self.publish_status(&status_topic).await;
                        last_status = Instant::now();
                    }
                    Some(Ev::SubscribeSent(pkid)) => subs.sent(pkid),
                    Some(Ev::SubAck(pkid, codes)) => {
                        let refused: Vec<String> = subs
                            .answered(pkid, &codes)
                            .into_iter()
                            .filter(|r| !r.granted)
                            .map(|r| r.filter)
                            .collect();
                        if !refused.is_empty() {
                            last_sub_retry = Instant::now();
                        }
                        for f in &refused {
                            tracing::error!(filter = %f, "the broker refused a subscription: check this site's permissions on the broker (under NATS, $MQTT.sub.> too)");
                        }
                        let now_refused = subs.refused().to_vec();
                        self.with_state(|s| {
                            s.subscriptions_refused += refused.len() as u64;
                            s.refused_filters = now_refused;
                        });
                    }
                    Some(Ev::Disconnected(e)) => {
                        if connected {
                            tracing::warn!("broker connection lost: {e}");
                        } else if last_connect_error.as_ref() != Some(&e) {
                            // Once per distinct cause: a refused certificate must show in the log.
                            tracing::warn!("cannot connect to the broker: {e}");
                            last_connect_error = Some(e.clone());
                        }
                        connected = false;
                        self.inflight.clear();
                        self.with_state(|s| { s.connected = false; s.last_error = Some(e); });
                    }
                    Some(Ev::Message(topic, payload)) if topic == ack_topic => {
                        match self.open_ack(&ack_topic, &payload) {
                            Ok(a) => {
                                self.with_state(|s| { s.acks += 1; s.last_ack_seq = a.seq; });
                                if a.seq > acked {
                                    acked = a.seq;
                                    self.outbox.ack(a.seq);
                                }
                                while self.inflight.front().is_some_and(|(last, _)| *last <= acked) {
                                    self.inflight.pop_front();
                                }
                                sent_upto = sent_upto.max(acked);
                                // The hub holds readings above a gap that did not fill: send
                                // again from it now rather than at the ack timeout.
                                let asked = a.resend_from.is_some_and(|f| f == acked + 1 && sent_upto >= f);
                                if a.seq <= acked {
                                    // The hub says again what it holds (it subscribed anew, or
                                    // we came online): see the tick below.
                                    repeated_at = Some(Instant::now());
                                }
                                if asked && last_asked.is_none_or(|t| t.elapsed() >= RESEND_AT_MOST_EVERY) {
                                    tracing::info!(from_seq = acked + 1, "the hub saw a gap; re-sending");
                                    last_asked = Some(Instant::now());
                                    self.inflight.clear();
                                    sent_upto = acked;
                                    self.with_state(|s| s.resends_asked += 1);
                                }
                            }
                            Err(e) => {
                                tracing::warn!("refused an ack on {ack_topic}: {e}");
                                self.with_state(|s| s.acks_rejected += 1);
                            }
                        }
                    }
                    Some(Ev::Message(topic, payload)) if topic == status_topic => {
                        // The broker holds what it sent last: ours again clears the mark.
                        restore_due = self.last_status.as_ref().is_some_and(|ours| *ours != payload);
                    }
                    Some(Ev::Message(topic, payload)) => {
                        if let Some(inbox) = &self.cfg.inbox {
                            (inbox.deliver)(&topic, &payload);
                        }
                    }
                },
                res = durable.changed(), if durable_alive => {
                    // The writer has stopped (shutdown): stop listening rather than spin.
                    durable_alive = res.is_ok();
                }
                _ = tick.tick() => {
                    if connected && last_sub_retry.elapsed() >= crate::mqttlink::SUBSCRIBE_RETRY {
                        if let Some(again) = subs.retry() {
                            last_sub_retry = Instant::now();
                            tracing::info!(filters = ?again, "subscribing again to what the broker refused");
                            let many = again.iter().map(|t| rumqttc::SubscribeFilter::new(t.clone(), self.cfg.subscribe_qos));
                            if self.client.subscribe_many(many).await.is_ok() {
                                subs.queued(again);
                            }
                        }
                    }
                    if connected && last_status.elapsed() >= self.cfg.status_every {
                        self.publish_status(&status_topic).await;
                        last_status = Instant::now();
                    }
                    if connected && restore_due && last_restore.elapsed() >= RESTORE_EVERY {
                        // Another account changed our retained status: put ours back.
                        restore_due = false;
                        last_restore = Instant::now();
                        if let Some(ours) = self.last_status.clone() {
                            tracing::warn!("{status_topic}: another account changed our status; restoring it");
                            self.with_state(|s| s.status_restored += 1);
                            if let Err(e) = self.client.publish(&status_topic, QoS::AtLeastOnce, true, ours).await {
                                tracing::warn!("status restore failed: {e}");
                            }
                        }
                    }
                    // A batch sent before the hub last repeated its ack, and still not covered
                    // a while later, was lost on the way (a broker node died, or the hub was not
                    // subscribed yet): send again now rather than at the ack timeout.
                    let stalled = repeated_at.is_some_and(|rep| {
                        self.inflight.front().is_some_and(|(_, at)| *at <= rep && at.elapsed() >= STALLED_AFTER)
                    });
                    if stalled && last_asked.is_none_or(|t| t.elapsed() >= RESEND_AT_MOST_EVERY) {
                        tracing::info!(from_seq = acked + 1, "the hub's ack does not cover what was sent before it; re-sending");
                        repeated_at = None;
                        last_asked = Some(Instant::now());
                        self.inflight.clear();
                        sent_upto = acked;
                    }
                    if self.inflight.front().is_some_and(|(_, at)| at.elapsed() >= self.cfg.ack_timeout) {
                        // The hub did not confirm in time: send again from the last ack.
                        tracing::warn!(from_seq = acked + 1, "no ack in {:?}; re-sending", self.cfg.ack_timeout);
                        self.inflight.clear();
                        sent_upto = acked;
                    }
                }
                res = shutdown.changed() => {
                    if res.is_err() || *shutdown.borrow() {
                        if connected {
                            let offline = Status { epoch: self.epochs.current(), ..Status::offline() };
                            let sealed = wire::seal(&self.cfg.key, &self.cfg.site, &status_topic, &offline);
                            let _ = self.client.publish(&status_topic, QoS::AtLeastOnce, true, sealed).await;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            let _ = self.client.disconnect().await;
                        }
                        return;
                    }
                }
            }
            while connected && self.inflight.len() < self.cfg.window {
                match self.send_next(&topics, sent_upto).await {
                    Ok(Some(last)) => sent_upto = last,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("publishing a batch failed: {e}");
                        break;
                    }
                }
            }
        }
    }

    fn open_ack(&self, topic: &str, payload: &[u8]) -> Result<Ack, wire::WireError> {
        wire::open_bytes(&self.cfg.key, &self.cfg.site, topic, payload)
    }

    /// Publish the current status, sealed, as the next of this epoch.
    async fn publish_status(&mut self, topic: &str) {
        self.status_n += 1;
        let st = Status {
            epoch: self.epochs.current(),
            n: self.status_n,
            ..(self.status)()
        };
        let body = wire::seal(&self.cfg.key, &self.cfg.site, topic, &st);
        self.last_status = Some(body.clone());
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, body)
            .await
        {
            tracing::warn!("status publish failed: {e}");
        }
    }

    /// Publish the next batch after `after`; returns its last seq, or None if nothing is ready.
    async fn send_next(&mut self, topics: &Topics, after: u64) -> anyhow::Result<Option<u64>> {
        // The marks come with the readings, read together: the writer may drop more at any time,
        // and a batch must never call dropped a seq it carries.
        let fetched = self.outbox.fetch(after, self.cfg.batch_readings).await?;
        let readings = fetched.readings;
        let Some(last) = readings.last().map(|r| r.seq) else {
            return Ok(None);
        };
        let n = readings.len() as u64;
        let first = readings.first().map_or(last, |r| r.seq);
        let dropped_through = fetched.dropped_through;
        debug_assert!(first > dropped_through);
        let batch = Batch {
            site: self.cfg.site.clone(),
            sent: self.clock.now_utc(),
            readings,
            dropped_through: (dropped_through > after).then_some(dropped_through),
            // Everything below was acknowledged or dropped: the hub may ack past it, never guess.
            unacked_from: Some((fetched.acked.max(dropped_through) + 1).min(first)),
        };
        let topic = topics.readings(&self.cfg.site);
        let bytes = wire::seal(&self.cfg.key, &self.cfg.site, &topic, &batch);
        self.client
            .publish(topic, QoS::AtLeastOnce, false, bytes)
            .await?;
        self.inflight.push_back((last, Instant::now()));
        self.with_state(|s| {
            s.batches_sent += 1;
            s.readings_sent += n;
        });
        Ok(Some(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_epochs_only_grow_across_restarts_even_when_the_clock_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uplink-epoch");
        // A previous life left an epoch far in the future (a clock that was wrong then).
        std::fs::write(&file, "99999999999999\n").unwrap();
        let e = Epochs::new(Some(file.clone()));
        let a = e.next();
        let b = e.next();
        assert!(a > 99_999_999_999_999 && b > a, "{a} {b}");
        assert_eq!(e.current(), b);
        // Restarted: carries on above what was written.
        let again = Epochs::new(Some(file.clone()));
        assert!(again.next() > b);
        // Without a file, the wall clock in ms (and still strictly increasing).
        let plain = Epochs::new(None);
        let (x, y) = (plain.next(), plain.next());
        assert!(x > 1_600_000_000_000 && y > x);
    }

    #[test]
    fn the_last_will_is_a_sealed_offline_status_closing_its_epoch() {
        let cfg = UplinkConfig {
            brokers: vec![BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1883,
            }],
            instance: "a1b2c3d4e5f6".into(),
            username: Some("domus-1".into()),
            password: None,
            ca_pem: None,
            key: b"0123456789abcdef".to_vec(),
            community: "socer".into(),
            site: "domus-1".into(),
            batch_readings: 10,
            window: 1,
            ack_timeout: Duration::from_secs(30),
            status_every: Duration::from_secs(30),
            epoch_file: None,
            inbox: None,
            subscribe_qos: QoS::AtLeastOnce,
        };
        assert_eq!(client_id(&cfg), "domus-1.socer.site.domus-1.a1b2c3d4e5f6");
        let will = last_will(&cfg, 42);
        let topic = Topics::new("socer").status("domus-1");
        assert_eq!(will.topic, topic);
        assert!(!String::from_utf8_lossy(&will.message).contains("offline"));
        let st: Status = wire::open_bytes(&cfg.key, "domus-1", &topic, &will.message).unwrap();
        assert_eq!(
            (st.state.as_str(), st.order()),
            ("offline", (42, Status::END_OF_EPOCH))
        );
    }
}
