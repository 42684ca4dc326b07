//! The community's load-shift signal and alerts as the building receives them: the retained
//! `signal`, the community `alerts` and this site's `site/{site}/alerts`, kept for the resident
//! page (`GET /api/v1/signal`) and Home Assistant; and this site's monthly share of the shared
//! energy (`site/{site}/summary`, sealed by the hub: a forged one is refused and counted).
//!
//! Read-only: it subscribes on its own connection and never publishes to the community.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::watch;

use super::config::BrokerUrl;
use crate::wire::{self, Alert, Signal, SiteSummary, Topics};

/// Alerts kept for the page, newest last.
pub const KEEP_ALERTS: usize = 20;

/// What the building knows of the community's signal.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Received {
    pub signal: Option<Signal>,
    pub alerts: VecDeque<Alert>,
    /// This site's share of the month's shared energy, as the hub last sealed it.
    pub summary: Option<SiteSummary>,
    /// Summaries refused: bad MAC, wrong site or malformed (someone else writes to our topic).
    pub summaries_refused: u64,
}

pub type SharedSignal = Arc<Mutex<Received>>;

impl Received {
    /// Take a message from one of the three topics; anything else or malformed is ignored (and
    /// says so). Returns whether it was taken.
    pub fn accept(&mut self, topics: &Topics, site: &str, topic: &str, payload: &[u8]) -> bool {
        if topic == topics.signal() {
            match serde_json::from_slice::<Signal>(payload) {
                Ok(s) => {
                    self.signal = Some(s);
                    return true;
                }
                Err(e) => tracing::warn!("malformed signal: {e}"),
            }
        } else if topic == topics.alerts() || topic == topics.site_alerts(site) {
            match serde_json::from_slice::<Alert>(payload) {
                Ok(a) => {
                    // QoS 1 may deliver twice: one copy per id and target.
                    if !self.alerts.iter().any(|x| x.id == a.id && x.site == a.site) {
                        self.alerts.push_back(a);
                        while self.alerts.len() > KEEP_ALERTS {
                            self.alerts.pop_front();
                        }
                    }
                    return true;
                }
                Err(e) => tracing::warn!("malformed alert on {topic}: {e}"),
            }
        }
        false
    }
}

impl Received {
    /// Take this site's sealed summary if it verifies with `key`; refuse, count and log anything
    /// else on that topic. Returns whether it was taken.
    pub fn accept_summary(
        &mut self,
        key: &[u8],
        topics: &Topics,
        site: &str,
        topic: &str,
        payload: &[u8],
    ) -> bool {
        if topic != topics.summary(site) {
            return false;
        }
        let opened = wire::open_unverified(payload)
            .and_then(|env| wire::open::<SiteSummary>(key, site, topic, &env));
        match opened {
            Ok(s) => {
                self.summary = Some(s);
                true
            }
            Err(e) => {
                self.summaries_refused += 1;
                tracing::warn!("summary refused on {topic}: {e}");
                false
            }
        }
    }
}

/// How to reach the community broker.
pub struct ListenConfig {
    pub broker: BrokerUrl,
    pub ca_pem: Option<Vec<u8>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub community: String,
    pub site: String,
    /// The site's key: the hub seals `site/{site}/summary` with it.
    pub key: Vec<u8>,
}

/// Subscribe and keep `shared` up to date until `shutdown` turns true.
pub fn spawn(
    cfg: ListenConfig,
    shared: SharedSignal,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let id = format!("socer-site-{}-signal-{}", cfg.site, std::process::id());
    let mut o = MqttOptions::new(id, cfg.broker.host.clone(), cfg.broker.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some(u) = &cfg.username {
        o.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
    }
    if cfg.broker.tls {
        o.set_transport(crate::tls::client_transport(cfg.ca_pem.as_deref()));
    }
    let topics = Topics::new(&cfg.community);
    let (client, mut events) = AsyncClient::new(o, 16);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = Duration::from_millis(500);
                        for t in [topics.signal(), topics.alerts(), topics.site_alerts(&cfg.site), topics.summary(&cfg.site)] {
                            if let Err(e) = client.subscribe(&t, QoS::AtLeastOnce).await {
                                tracing::warn!("subscribe to {t}: {e}");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(mut r) = shared.lock() {
                            if !r.accept(&topics, &cfg.site, &p.topic, &p.payload) {
                                r.accept_summary(&cfg.key, &topics, &cfg.site, &p.topic, &p.payload);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("signal listener: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                },
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        let _ = client.disconnect().await;
                        return;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AlertKind, Level, ZoneSignal};

    fn alert(id: &str, site: Option<&str>) -> Alert {
        let t = chrono::DateTime::UNIX_EPOCH;
        Alert {
            id: id.into(),
            kind: AlertKind::Open,
            site: site.map(str::to_string),
            ts: t,
            window_start: t,
            window_end: t,
            expected_surplus_kwh: 10.0,
            loads: vec![],
            text_it: "it".into(),
            text_en: "en".into(),
        }
    }

    #[test]
    fn signal_and_alerts_are_kept_duplicates_and_strangers_are_not() {
        let topics = Topics::new("socer");
        let mut r = Received::default();
        let t = chrono::DateTime::UNIX_EPOCH;
        let s = Signal {
            ts: t,
            community: ZoneSignal {
                zone: "socer".into(),
                level: Level::Red,
                openadr_level: 2,
                surplus_kw: -3.0,
                production_kw: 0.0,
                consumption_kw: 3.0,
                since: t,
            },
            substations: vec![],
            forecast: vec![],
        };
        let sig = serde_json::to_vec(&s).unwrap();
        assert!(r.accept(&topics, "stps", &topics.signal(), &sig));
        assert_eq!(
            r.signal.as_ref().map(|s| s.community.level),
            Some(Level::Red)
        );
        let a = serde_json::to_vec(&alert("w1-open", Some("stps"))).unwrap();
        assert!(r.accept(&topics, "stps", &topics.site_alerts("stps"), &a));
        assert!(r.accept(&topics, "stps", &topics.site_alerts("stps"), &a));
        assert_eq!(r.alerts.len(), 1);
        // Another site's alerts and garbage are not ours.
        assert!(!r.accept(&topics, "stps", &topics.site_alerts("iperal"), &a));
        assert!(!r.accept(&topics, "stps", &topics.alerts(), b"not json"));
        for i in 0..30 {
            let a = serde_json::to_vec(&alert(&format!("w{i}"), None)).unwrap();
            r.accept(&topics, "stps", &topics.alerts(), &a);
        }
        assert_eq!(r.alerts.len(), KEEP_ALERTS);
        assert_eq!(r.alerts.back().map(|a| a.id.as_str()), Some("w29"));
    }
}
