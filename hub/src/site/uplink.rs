//! The uplink: publishes the outbox's readings to the community broker in authenticated batches
//! and lets them go only when the central hub's authenticated ack covers them.
//!
//! It must never treat a broker PUBACK as delivery, never skip a seq, and never spin on a broker
//! that is down (back-off with jitter). After an outage it replays from the last ack, in seq order,
//! with at most `window` unacknowledged batches in flight.

use std::collections::VecDeque;
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
    pub broker: BrokerUrl,
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
    /// Re-sends started at the hub's request (a gap it saw: [`Ack::resend_from`]).
    pub resends_asked: u64,
}

/// Least time between two re-sends the hub asks for.
const RESEND_AT_MOST_EVERY: Duration = Duration::from_secs(5);

pub type SharedUplink = Arc<Mutex<UplinkState>>;

enum Ev {
    Connected,
    Disconnected(String),
    Message(String, Vec<u8>),
}

/// Builds the retained status on demand (the agent knows meters, backlog and clock).
pub type StatusFn = Arc<dyn Fn() -> Status + Send + Sync>;

fn options(cfg: &UplinkConfig) -> MqttOptions {
    let id = format!("socer-site-{}-{}", cfg.site, std::process::id());
    let mut o = MqttOptions::new(id, cfg.broker.host.clone(), cfg.broker.port);
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
    let topics = Topics::new(&cfg.community);
    let offline = serde_json::to_vec(&Status::offline()).unwrap_or_default();
    o.set_last_will(LastWill::new(
        topics.status(&cfg.site),
        offline,
        QoS::AtLeastOnce,
        true,
    ));
    if cfg.broker.tls {
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
    let (client, mut eventloop) = AsyncClient::new(options(&cfg), 256);
    let (ev_tx, ev_rx) = mpsc::channel::<Ev>(1024);
    let poller = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(250);
                    if ev_tx.send(Ev::Connected).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if ev_tx
                        .send(Ev::Message(p.topic, p.payload.to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if ev_tx.send(Ev::Disconnected(e.to_string())).await.is_err() {
                        return;
                    }
                    let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
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
        let mut last_asked: Option<Instant> = None;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    None => return,
                    Some(Ev::Connected) => {
                        connected = true;
                        last_connect_error = None;
                        self.inflight.clear();
                        sent_upto = acked;
                        self.with_state(|s| { s.connected = true; s.last_error = None; s.reconnects += 1; });
                        tracing::info!(host = %self.cfg.broker.host, port = self.cfg.broker.port, "connected to the broker");
                        if let Err(e) = self.client.subscribe(&ack_topic, QoS::AtLeastOnce).await {
                            tracing::warn!("subscribe to {ack_topic}: {e}");
                        }
                        self.publish_status(&status_topic).await;
                        last_status = Instant::now();
                    }
                    Some(Ev::Disconnected(e)) => {
                        if connected {
                            tracing::warn!("broker connection lost: {e}");
                        } else if last_connect_error.as_ref() != Some(&e) {
                            // Once per distinct cause: a refused certificate must show in the log.
                            tracing::warn!(host = %self.cfg.broker.host, port = self.cfg.broker.port, "cannot connect to the broker: {e}");
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
                    Some(Ev::Message(..)) => {}
                },
                res = durable.changed(), if durable_alive => {
                    // The writer has stopped (shutdown): stop listening rather than spin.
                    durable_alive = res.is_ok();
                }
                _ = tick.tick() => {
                    if connected && last_status.elapsed() >= self.cfg.status_every {
                        self.publish_status(&status_topic).await;
                        last_status = Instant::now();
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
                            let offline = serde_json::to_vec(&Status::offline()).unwrap_or_default();
                            let _ = self.client.publish(&status_topic, QoS::AtLeastOnce, true, offline).await;
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
        let env = wire::open_unverified(payload)?;
        wire::open(&self.cfg.key, &self.cfg.site, topic, &env)
    }

    async fn publish_status(&self, topic: &str) {
        let st = (self.status)();
        let body = serde_json::to_vec(&st).unwrap_or_default();
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
        let readings = self.outbox.fetch(after, self.cfg.batch_readings).await?;
        let Some(last) = readings.last().map(|r| r.seq) else {
            return Ok(None);
        };
        let n = readings.len() as u64;
        let first = readings.first().map_or(last, |r| r.seq);
        let stats = self.outbox.stats();
        let dropped_through = stats.dropped_through;
        let batch = Batch {
            site: self.cfg.site.clone(),
            sent: self.clock.now_utc(),
            readings,
            dropped_through: (dropped_through > after).then_some(dropped_through),
            // Everything below was acknowledged or dropped: the hub may ack past it, never guess.
            unacked_from: Some((stats.acked.max(dropped_through) + 1).min(first)),
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
