//! How both daemons hold their broker connection: a list of brokers (the nodes of a cluster)
//! tried in turn with back-off and jitter, and the broker's answer to every subscription checked.
//!
//! rumqttc's event loop connects to whatever its `mqtt_options` say at the next poll after an
//! error, so moving to the next broker is replacing them there; requests queued in the client
//! stay queued. The rules here take the random draw as an input and do no I/O.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{MqttOptions, SubscribeReasonCode};

/// First wait after a whole round of brokers failed.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two rounds: with the jitter below a site is connecting again at most
/// `2 × MAX_BACKOFF` after its broker is back (the 5 s promise of a prompt reconnect).
pub const MAX_BACKOFF: Duration = Duration::from_millis(2000);
/// Wait before trying the next broker of the list after one failed (a dead node costs this
/// much, not a back-off).
pub const NEXT_BROKER_WAIT: Duration = Duration::from_millis(100);

/// How often refused subscriptions are tried again.
pub const SUBSCRIBE_RETRY: Duration = Duration::from_secs(5);

/// Where the next connection goes and how long to wait before it.
#[derive(Debug)]
pub struct Failover {
    nodes: Vec<MqttOptions>,
    current: usize,
    /// Brokers tried since the last good connection, in this round.
    failed_in_round: usize,
    backoff: Duration,
}

impl Failover {
    /// `nodes` in the configured order (at least one).
    pub fn new(nodes: Vec<MqttOptions>) -> Self {
        Failover {
            nodes,
            current: 0,
            failed_in_round: 0,
            backoff: FIRST_BACKOFF,
        }
    }

    /// The options of the broker to connect to now.
    pub fn current(&self) -> Option<&MqttOptions> {
        self.nodes.get(self.current)
    }

    /// Index of the broker in use (for logs and health).
    pub fn index(&self) -> usize {
        self.current
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `host:port` of the broker in use.
    pub fn address(&self) -> String {
        self.current().map_or_else(String::new, |o| {
            let (h, p) = o.broker_address();
            format!("{h}:{p}")
        })
    }

    /// The connection to the current broker is up: the next failure starts a new round.
    pub fn connected(&mut self) {
        self.failed_in_round = 0;
        self.backoff = FIRST_BACKOFF;
    }

    /// The connection failed (or was lost): move to the next broker and say how long to wait.
    /// `draw` is a random number in `[0, 1)`: after a whole round failed, the wait is the
    /// back-off plus up to as much again of jitter, so that many sites do not come back at once.
    pub fn failed(&mut self, draw: f64) -> Duration {
        self.failed_in_round += 1;
        if !self.nodes.is_empty() {
            self.current = (self.current + 1) % self.nodes.len();
        }
        if self.failed_in_round < self.nodes.len() {
            return NEXT_BROKER_WAIT;
        }
        // A whole round failed: back off, then start the round again.
        self.failed_in_round = 0;
        let wait = self.backoff + self.backoff.mul_f64(draw.clamp(0.0, 1.0));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }
}

/// A subscription the broker answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubResult {
    pub filter: String,
    pub granted: bool,
}

/// Matches SUBACKs to the filters they answer. Subscribes are queued in order; rumqttc reports
/// each one's packet id as it goes out (`Outgoing::Subscribe(pkid)`), in the same order.
#[derive(Debug, Default)]
pub struct SubTracker {
    queued: VecDeque<Vec<String>>,
    sent: HashMap<u16, Vec<String>>,
    /// Filters refused on the current connection.
    refused: Vec<String>,
}

impl SubTracker {
    /// A new connection: what was pending belongs to the old one.
    pub fn reset(&mut self) {
        self.queued.clear();
        self.sent.clear();
        self.refused.clear();
    }

    /// One SUBSCRIBE with these filters was handed to the client.
    pub fn queued(&mut self, filters: Vec<String>) {
        self.queued.push_back(filters);
    }

    /// The next queued SUBSCRIBE went out with packet id `pkid`.
    pub fn sent(&mut self, pkid: u16) {
        if let Some(f) = self.queued.pop_front() {
            self.sent.insert(pkid, f);
        }
    }

    /// The broker's answer; returns each filter with whether it was granted. A SUBACK whose
    /// return codes do not match the filters one to one counts every filter as refused.
    pub fn answered(&mut self, pkid: u16, codes: &[SubscribeReasonCode]) -> Vec<SubResult> {
        let Some(filters) = self.sent.remove(&pkid) else {
            return Vec::new();
        };
        let same_len = codes.len() == filters.len();
        let out: Vec<SubResult> = filters
            .into_iter()
            .enumerate()
            .map(|(i, filter)| SubResult {
                granted: same_len && matches!(codes.get(i), Some(SubscribeReasonCode::Success(_))),
                filter,
            })
            .collect();
        for r in &out {
            if r.granted {
                self.refused.retain(|f| *f != r.filter);
            } else if !self.refused.contains(&r.filter) {
                self.refused.push(r.filter.clone());
            }
        }
        out
    }

    /// The refused filters to subscribe to again, if none is waiting for an answer: a broker
    /// may refuse for a while and then accept (NATS refuses a QoS 1 subscription while the
    /// JetStream stream behind it has no leader, after a node died).
    pub fn retry(&self) -> Option<Vec<String>> {
        (!self.refused.is_empty() && self.settled()).then(|| self.refused.clone())
    }

    /// Filters the broker refused on this connection.
    pub fn refused(&self) -> &[String] {
        &self.refused
    }

    /// Whether every SUBSCRIBE sent on this connection has been answered.
    pub fn settled(&self) -> bool {
        self.queued.is_empty() && self.sent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::QoS;

    fn opts(port: u16) -> MqttOptions {
        MqttOptions::new("c", "127.0.0.1", port)
    }

    #[test]
    fn a_dead_broker_costs_a_short_wait_and_the_next_one_is_tried() {
        let mut f = Failover::new(vec![opts(1), opts(2), opts(3)]);
        assert_eq!(f.address(), "127.0.0.1:1");
        assert_eq!(f.failed(0.9), NEXT_BROKER_WAIT);
        assert_eq!(f.address(), "127.0.0.1:2");
        assert_eq!(f.failed(0.9), NEXT_BROKER_WAIT);
        assert_eq!(f.address(), "127.0.0.1:3");
        // The whole round failed: back off with jitter, from the first broker again.
        assert_eq!(f.failed(0.5), FIRST_BACKOFF + FIRST_BACKOFF / 2);
        assert_eq!(f.address(), "127.0.0.1:1");
        f.connected();
        // A lost connection moves on at once; the back-off starts over.
        assert_eq!(f.failed(0.0), NEXT_BROKER_WAIT);
        assert_eq!(f.address(), "127.0.0.1:2");
    }

    #[test]
    fn the_wait_grows_to_its_cap_and_never_exceeds_twice_it_whatever_the_draw() {
        let mut f = Failover::new(vec![opts(1)]);
        let mut last = Duration::ZERO;
        for i in 0..40 {
            let draw = f64::from(i % 7) / 7.0;
            let w = f.failed(draw);
            assert!(w >= FIRST_BACKOFF && w < MAX_BACKOFF * 2, "{w:?}");
            last = w;
        }
        assert!(last >= MAX_BACKOFF, "{last:?}");
        // Draws outside [0, 1) are clamped, never a longer wait.
        assert!(f.failed(7.0) <= MAX_BACKOFF * 2);
        assert!(f.failed(-1.0) >= MAX_BACKOFF);
        // Jitter is kept: two draws give two waits.
        assert_ne!(f.failed(0.1), f.failed(0.9));
    }

    #[test]
    fn a_refused_filter_is_reported_by_name_and_a_new_connection_forgets_it() {
        let mut t = SubTracker::default();
        t.queued(vec!["a/ack".into(), "a/status".into()]);
        t.queued(vec!["signal".into()]);
        assert!(!t.settled());
        t.sent(7);
        t.sent(8);
        let r = t.answered(
            7,
            &[
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Failure,
            ],
        );
        assert_eq!(
            r,
            vec![
                SubResult {
                    filter: "a/ack".into(),
                    granted: true
                },
                SubResult {
                    filter: "a/status".into(),
                    granted: false
                },
            ]
        );
        assert_eq!(t.refused(), ["a/status".to_string()]);
        // A SUBACK with the wrong number of codes: nothing granted.
        assert!(t.answered(8, &[]).iter().all(|r| !r.granted));
        assert!(t.settled());
        assert_eq!(t.refused().len(), 2);
        // An answer to nothing we sent is ignored.
        assert!(t.answered(99, &[SubscribeReasonCode::Failure]).is_empty());
        // Tried again: the one granted now leaves the list.
        let again = t.retry().unwrap();
        assert_eq!(again, ["a/status".to_string(), "signal".to_string()]);
        t.queued(again);
        assert_eq!(t.retry(), None, "nothing again while an answer is awaited");
        t.sent(9);
        t.answered(
            9,
            &[
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Failure,
            ],
        );
        assert_eq!(t.refused(), ["signal".to_string()]);
        t.reset();
        assert!(t.refused().is_empty());
    }
}
