//! The site re-sends promptly when the hub asks: a batch lost between broker and hub (as under
//! overload) is sent again on the hub's next ack carrying `resend_from`, seconds after the loss,
//! not after the 30 s ack timeout. The real `socer site` against a real Mosquitto and a hub
//! stand-in that loses one batch on purpose.

mod common;
mod site_common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::require_mosquitto;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use site_common::*;
use socer::wire::{self, Ack, Batch, Topics};

#[derive(Default)]
struct Hub {
    contiguous: u64,
    ahead: BTreeSet<u64>,
    lost: Option<(u64, u64, Instant)>,
    filled_after: Option<Duration>,
    batches: u64,
    /// Every batch's `unacked_from` was at most the hub's contiguous seq + 1 (never a guess).
    claims_ok: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lost_before_the_hub_is_sent_again_within_seconds_when_the_hub_asks() {
    require_mosquitto();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let _broker = Broker::start(dir.path(), port);
    let hub = Arc::new(Mutex::new(Hub {
        claims_ok: true,
        ..Hub::default()
    }));
    let h = hub.clone();
    tokio::spawn(async move {
        let mut o = MqttOptions::new("resend-hub", "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 1024);
        let topics = Topics::new(COMMUNITY);
        let (rt, at) = (topics.readings(SITE), topics.ack(SITE));
        let key = hex::decode(KEY).unwrap_or_default();
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe(rt.clone(), QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == rt => {
                    let Ok(b) = wire::open_unverified(&p.payload)
                        .and_then(|e| wire::open::<Batch>(&key, SITE, &rt, &e))
                    else {
                        continue;
                    };
                    let ack = {
                        let mut g = h.lock().unwrap_or_else(|e| e.into_inner());
                        g.batches += 1;
                        let (Some(first), Some(last)) = (
                            b.readings.first().map(|r| r.seq),
                            b.readings.last().map(|r| r.seq),
                        ) else {
                            continue;
                        };
                        if b.unacked_from.is_none_or(|u| u > g.contiguous + 1) {
                            g.claims_ok = false;
                        }
                        // The fourth batch is lost on its way (a broker that skipped it).
                        if g.batches == 4 && g.lost.is_none() {
                            g.lost = Some((first, last, Instant::now()));
                            continue;
                        }
                        for r in &b.readings {
                            if r.seq > g.contiguous {
                                g.ahead.insert(r.seq);
                            }
                        }
                        let g = &mut *g;
                        while g.ahead.remove(&(g.contiguous + 1)) {
                            g.contiguous += 1;
                        }
                        if let Some((_, l, t)) = g.lost {
                            if g.filled_after.is_none() && g.contiguous >= l {
                                g.filled_after = Some(t.elapsed());
                            }
                        }
                        let c = g.contiguous;
                        Ack {
                            seq: c,
                            resend_from: (!g.ahead.is_empty()).then_some(c + 1),
                        }
                    };
                    let bytes = wire::seal(&key, SITE, &at, &ack);
                    let _ = client
                        .publish(at.clone(), QoS::AtLeastOnce, true, bytes)
                        .await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let mut spec = SiteSpec::new(dir.path(), port);
    spec.batch_readings = 20;
    let cfg = spec.write(dir.path());
    let agent = Agent::start(&cfg, spec.web_port, &dir.path().join("agent.log"));
    agent.wait_web();
    // The site's ack timeout is 30 s: a recovery well inside it is the hub's request at work.
    let filled = eventually(Duration::from_secs(25), || {
        hub.lock()
            .map(|g| g.filled_after.is_some())
            .unwrap_or(false)
    })
    .await;
    let g = hub.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        filled,
        "the lost batch {:?} was not sent again within 25 s (contiguous {}); log:\n{}",
        g.lost.map(|(f, l, _)| (f, l)),
        g.contiguous,
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
    );
    assert!(
        g.claims_ok,
        "a batch declared more than the hub had acknowledged"
    );
    let health = agent.health().expect("health");
    assert!(
        health["uplink"]["resends_asked"].as_u64().unwrap_or(0) >= 1,
        "{health}"
    );
}
