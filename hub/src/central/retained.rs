//! The hub's retained messages (acks, summaries, signal, balance) and their upkeep: any account
//! can replace or delete a retained message on a broker without a topic ACL (rumqttd 0.20), so
//! the hub remembers what it last published on each topic, watches those topics, and publishes
//! its own message again when what the broker holds differs.
//!
//! A restore never invents anything: it republishes the exact bytes the hub last published.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, ClientError, QoS};

use super::status::Metrics;

/// How often tampered topics are put back (at most once per topic per period).
pub const RESTORE_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    qos: QoS,
    bytes: Vec<u8>,
    tampered: bool,
}

/// What the hub keeps retained, by topic.
#[derive(Default)]
pub struct Retained {
    inner: Mutex<HashMap<String, Entry>>,
}

impl Retained {
    fn record(&self, topic: &str, qos: QoS, bytes: &[u8]) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.insert(
            topic.to_string(),
            Entry {
                qos,
                bytes: bytes.to_vec(),
                tampered: false,
            },
        );
    }

    /// Publish `bytes` retained on `topic` and remember them.
    pub async fn publish(
        &self,
        client: &AsyncClient,
        topic: String,
        qos: QoS,
        bytes: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.record(&topic, qos, &bytes);
        client.publish(topic, qos, true, bytes).await
    }

    /// As [`Retained::publish`], without waiting for room in the client's queue.
    pub fn try_publish(
        &self,
        client: &AsyncClient,
        topic: String,
        qos: QoS,
        bytes: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.record(&topic, qos, &bytes);
        client.try_publish(topic, qos, true, bytes)
    }

    /// A message seen on one of the hub's retained topics: the broker now holds it. If it is not
    /// what the hub published last (another account wrote or deleted it), mark the topic for
    /// restoring; if it is (our own message coming back, after an older one of ours or a
    /// stranger's), the broker holds ours again and the mark goes. Returns whether it is marked.
    /// Topics the hub never published on are left alone.
    pub fn observe(&self, topic: &str, payload: &[u8]) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match g.get_mut(topic) {
            Some(e) => {
                e.tampered = e.bytes != payload;
                e.tampered
            }
            None => false,
        }
    }

    /// What the hub last published on each topic `pred` selects (to publish again to a site
    /// that came online, or after the hub subscribed again: brokers that lose retained messages).
    pub fn matching(&self, pred: impl Fn(&str) -> bool) -> Vec<(String, QoS, Vec<u8>)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.iter()
            .filter(|(t, _)| pred(t))
            .map(|(t, e)| (t.clone(), e.qos, e.bytes.clone()))
            .collect()
    }

    /// The topics to publish again, with their bytes; clears the marks.
    pub fn take_tampered(&self) -> Vec<(String, QoS, Vec<u8>)> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.iter_mut()
            .filter(|(_, e)| e.tampered)
            .map(|(t, e)| {
                e.tampered = false;
                (t.clone(), e.qos, e.bytes.clone())
            })
            .collect()
    }
}

/// Every [`RESTORE_EVERY`], publish again what another account changed.
pub async fn run_restore(retained: Arc<Retained>, client: AsyncClient, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(RESTORE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (topic, qos, bytes) in retained.take_tampered() {
            tracing::warn!("{topic}: the broker held another account's message; restoring ours");
            match client.publish(topic.clone(), qos, true, bytes).await {
                Ok(()) => {
                    metrics.retained_restored.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!("cannot restore {topic}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_changed_or_deleted_message_of_ours_is_marked() {
        let r = Retained::default();
        r.record("t/ack", QoS::AtLeastOnce, b"ours");
        assert!(!r.observe("t/ack", b"ours"));
        assert!(!r.observe("t/other", b"theirs"));
        assert!(r.take_tampered().is_empty());
        assert!(r.observe("t/ack", b"theirs"));
        assert!(r.observe("t/ack", b""));
        let back = r.take_tampered();
        assert_eq!(back.len(), 1);
        // Our own older message, then the newest coming back: nothing to restore.
        r.record("t/ack", QoS::AtLeastOnce, b"ours");
        assert!(r.observe("t/ack", b"older of ours"));
        assert!(!r.observe("t/ack", b"ours"));
        assert!(r.take_tampered().is_empty());
        assert_eq!(
            back,
            vec![("t/ack".to_string(), QoS::AtLeastOnce, b"ours".to_vec())]
        );
        // Deleted again: marked until taken.
        assert!(r.observe("t/ack", b""));
        assert_eq!(r.take_tampered().len(), 1);
        assert!(r.take_tampered().is_empty());
    }
}
