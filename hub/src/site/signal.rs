//! The community's load-shift signal and alerts as the building receives them: the retained
//! `signal`, the community `alerts` and this site's `site/{site}/alerts`, each signed by the hub
//! and shown only once verified with the hub's public key; and this site's monthly share of the
//! shared energy (`site/{site}/summary`, sealed by the hub). Anything unsigned, forged or sealed
//! with another key is refused, counted, and never shown (nor passed to Home Assistant).
//!
//! Read-only: it never publishes to the community. On the agent its subscriptions ride on the
//! uplink's connection ([`inbox`]); [`spawn`] runs it on a connection of its own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::watch;

use super::config::BrokerUrl;
use super::uplink::Inbox;
use crate::wire::{self, Alert, HubPublicKey, Signal, SiteSummary, Topics};

/// Alerts kept for the page, newest last.
pub const KEEP_ALERTS: usize = 20;

/// What the building knows of the community's signal.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Received {
    pub signal: Option<Signal>,
    pub alerts: VecDeque<Alert>,
    /// This site's share of the month's shared energy, as the hub last sealed it.
    pub summary: Option<SiteSummary>,
    /// Summaries refused: bad seal, wrong site or malformed (someone else writes to our topic).
    pub summaries_refused: u64,
    /// Signals and alerts refused: unsigned, not signed by the hub's key, or malformed.
    pub broadcasts_refused: u64,
}

pub type SharedSignal = Arc<Mutex<Received>>;

impl Received {
    /// Take a signed message from one of the three broadcast topics if it verifies with `hub`;
    /// refuse and count anything else on them (without the hub's key, everything). An older
    /// signal than the one held (a replay) is ignored. Returns whether it was taken.
    pub fn accept(
        &mut self,
        hub: Option<&HubPublicKey>,
        topics: &Topics,
        site: &str,
        topic: &str,
        payload: &[u8],
    ) -> bool {
        let is_alerts = topic == topics.alerts() || topic == topics.site_alerts(site);
        if topic != topics.signal() && !is_alerts {
            return false;
        }
        if payload.is_empty() {
            return false; // a cleared retained message: nothing to show, nothing forged
        }
        let Some(hub) = hub else {
            self.broadcasts_refused += 1;
            tracing::warn!("{topic}: refused, no [mqtt] hub_public_key to verify it with");
            return false;
        };
        if is_alerts {
            match wire::verify::<Alert>(hub, topic, payload) {
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
                Err(e) => tracing::warn!("alert refused on {topic}: {e}"),
            }
        } else {
            match wire::verify::<Signal>(hub, topic, payload) {
                Ok(s) => {
                    if self.signal.as_ref().is_some_and(|held| held.ts > s.ts) {
                        tracing::debug!("an older signal ignored (replayed?)");
                        return false;
                    }
                    self.signal = Some(s);
                    return true;
                }
                Err(e) => tracing::warn!("signal refused: {e}"),
            }
        }
        self.broadcasts_refused += 1;
        false
    }
}

impl Received {
    /// Take this site's sealed summary if it opens with `key`; refuse, count and log anything
    /// else on that topic. Returns whether it was taken.
    pub fn accept_summary(
        &mut self,
        key: &[u8],
        topics: &Topics,
        site: &str,
        topic: &str,
        payload: &[u8],
    ) -> bool {
        if topic != topics.summary(site) || payload.is_empty() {
            return false;
        }
        match wire::open_bytes::<SiteSummary>(key, site, topic, payload) {
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
    /// The hub's public key: the signal and alerts are shown only if signed by it.
    pub hub_public_key: Option<HubPublicKey>,
}

/// The listener's subscriptions and handler, for the uplink's connection to carry.
pub fn inbox(
    community: &str,
    site: &str,
    key: Vec<u8>,
    hub_public_key: Option<HubPublicKey>,
    shared: SharedSignal,
) -> Inbox {
    let topics = Topics::new(community);
    let list = vec![
        topics.signal(),
        topics.alerts(),
        topics.site_alerts(site),
        topics.summary(site),
    ];
    let site = site.to_string();
    Inbox {
        topics: list,
        deliver: Arc::new(move |topic: &str, payload: &[u8]| {
            if let Ok(mut r) = shared.lock() {
                if !r.accept(hub_public_key.as_ref(), &topics, &site, topic, payload) {
                    r.accept_summary(&key, &topics, &site, topic, payload);
                }
            }
        }),
    }
}

/// Subscribe on a connection of its own and keep `shared` up to date until `shutdown` turns true.
pub fn spawn(
    cfg: ListenConfig,
    shared: SharedSignal,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let id = match &cfg.username {
        Some(u) => format!("{u}.signal"),
        None => format!("socer-site-{}.signal", cfg.site),
    };
    let mut o = MqttOptions::new(id, cfg.broker.host.clone(), cfg.broker.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some(u) = &cfg.username {
        o.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
    }
    if cfg.broker.tls {
        o.set_transport(crate::tls::client_transport(cfg.ca_pem.as_deref()));
    }
    let inbox = inbox(
        &cfg.community,
        &cfg.site,
        cfg.key.clone(),
        cfg.hub_public_key,
        shared,
    );
    let (client, mut events) = AsyncClient::new(o, 16);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = Duration::from_millis(500);
                        for t in &inbox.topics {
                            if let Err(e) = client.subscribe(t, QoS::AtLeastOnce).await {
                                tracing::warn!("subscribe to {t}: {e}");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => (inbox.deliver)(&p.topic, &p.payload),
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

    fn signal(level: Level, secs: i64) -> Signal {
        let t = chrono::DateTime::UNIX_EPOCH + chrono::Duration::seconds(secs);
        Signal {
            ts: t,
            community: ZoneSignal {
                zone: "socer".into(),
                level,
                openadr_level: 2,
                surplus_kw: -3.0,
                production_kw: 0.0,
                consumption_kw: 3.0,
                since: t,
            },
            substations: vec![],
            forecast: vec![],
        }
    }

    fn hub() -> wire::HubSigningKey {
        wire::signing_key_from_hex(&"11".repeat(32)).unwrap()
    }

    #[test]
    fn signed_signal_and_alerts_are_kept_duplicates_and_strangers_are_not() {
        let topics = Topics::new("socer");
        let public = hub().verifying_key();
        let k = Some(&public);
        let mut r = Received::default();
        let sig = wire::sign(&hub(), &topics.signal(), &signal(Level::Red, 0));
        assert!(r.accept(k, &topics, "stps", &topics.signal(), &sig));
        assert_eq!(
            r.signal.as_ref().map(|s| s.community.level),
            Some(Level::Red)
        );
        let a = wire::sign(
            &hub(),
            &topics.site_alerts("stps"),
            &alert("w1-open", Some("stps")),
        );
        assert!(r.accept(k, &topics, "stps", &topics.site_alerts("stps"), &a));
        assert!(r.accept(k, &topics, "stps", &topics.site_alerts("stps"), &a));
        assert_eq!(r.alerts.len(), 1);
        // Another site's alerts are not ours; garbage is refused and counted.
        assert!(!r.accept(k, &topics, "stps", &topics.site_alerts("iperal"), &a));
        assert!(!r.accept(k, &topics, "stps", &topics.alerts(), b"not json"));
        assert_eq!(r.broadcasts_refused, 1);
        for i in 0..30 {
            let a = wire::sign(&hub(), &topics.alerts(), &alert(&format!("w{i}"), None));
            r.accept(k, &topics, "stps", &topics.alerts(), &a);
        }
        assert_eq!(r.alerts.len(), KEEP_ALERTS);
        assert_eq!(r.alerts.back().map(|a| a.id.as_str()), Some("w29"));
    }

    #[test]
    fn unsigned_forged_or_replayed_broadcasts_are_never_shown() {
        let topics = Topics::new("socer");
        let public = hub().verifying_key();
        let k = Some(&public);
        let mut r = Received::default();
        let genuine = wire::sign(&hub(), &topics.signal(), &signal(Level::Red, 100));
        assert!(r.accept(k, &topics, "stps", &topics.signal(), &genuine));
        // The v1 plain JSON, a neighbour's own key, a signature for another topic.
        let plain = serde_json::to_vec(&signal(Level::Green, 200)).unwrap();
        let other = wire::generate_signing_key();
        let forged = wire::sign(&other, &topics.signal(), &signal(Level::Green, 200));
        let moved = wire::sign(&hub(), &topics.alerts(), &signal(Level::Green, 200));
        for bad in [&plain, &forged, &moved] {
            assert!(!r.accept(k, &topics, "stps", &topics.signal(), bad));
        }
        let forged_alert = wire::sign(&other, &topics.alerts(), &alert("fake", None));
        assert!(!r.accept(k, &topics, "stps", &topics.alerts(), &forged_alert));
        let plain_alert = serde_json::to_vec(&alert("fake", None)).unwrap();
        assert!(!r.accept(k, &topics, "stps", &topics.alerts(), &plain_alert));
        assert_eq!(r.broadcasts_refused, 5);
        // A genuine but older signal (a replay) does not replace the newer one.
        let old = wire::sign(&hub(), &topics.signal(), &signal(Level::Green, 50));
        assert!(!r.accept(k, &topics, "stps", &topics.signal(), &old));
        assert_eq!(
            r.signal.as_ref().map(|s| s.community.level),
            Some(Level::Red)
        );
        assert!(r.alerts.is_empty());
        // Without the hub's public key nothing is shown.
        let mut blind = Received::default();
        assert!(!blind.accept(None, &topics, "stps", &topics.signal(), &genuine));
        assert_eq!(
            (blind.signal.is_none(), blind.broadcasts_refused),
            (true, 1)
        );
    }
}
