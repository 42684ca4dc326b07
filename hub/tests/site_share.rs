//! The building's side of the monthly share with the real `socer site` binary and a real
//! Mosquitto: a summary sealed with the site's key appears in `GET /api/v1/now` as
//! `community_share`, a forged one is refused and counted in `/metrics`; and `GET
//! /api/v1/history?step=1d` answers in local days.

mod common;
mod site_common;

use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use site_common::*;
use socer::wire::{self, SiteSummary, Topics};

fn summary(consumer_kwh: f64) -> SiteSummary {
    SiteSummary {
        month: "2026-11".into(),
        pods: vec!["IT001E00000001".into()],
        shared_as_consumer_kwh: consumer_kwh,
        shared_as_producer_kwh: 0.0,
        community_shared_kwh: 120.0,
        injection_kwh: 0.0,
        withdrawal_kwh: 300.0,
        incentive_as_consumer_eur: Some(13.2),
        incentive_as_producer_eur: Some(0.0),
        periods: 600,
        updated: chrono::DateTime::parse_from_rfc3339("2026-11-26T08:00:00Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_summary_becomes_the_community_share_and_a_forged_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let (_broker, a) = broker_and_default_agent(dir.path(), port);

    let (client, mut el) = AsyncClient::new(MqttOptions::new("hub", "127.0.0.1", port), 16);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let topic = Topics::new(COMMUNITY).summary(SITE);
    let key = hex::decode(KEY).expect("hex key");
    let genuine = summary(30.0);
    client
        .publish(
            topic.clone(),
            QoS::AtLeastOnce,
            true,
            wire::seal(&key, SITE, &topic, &genuine),
        )
        .await
        .expect("publish");
    let now = || -> serde_json::Value {
        serde_json::from_str(&a.get("/api/v1/now").unwrap_or_default()).unwrap_or_default()
    };
    let shown = eventually(Duration::from_secs(15), || {
        now()["community_share"]["shared_as_consumer_kwh"] == 30.0
    })
    .await;
    assert!(shown, "the summary never reached /api/v1/now: {}", now());
    let share = now()["community_share"].clone();
    assert_eq!(share["community_shared_kwh"], 120.0);
    assert_eq!(share["month"], "2026-11");
    assert_eq!(share["incentive_as_consumer_eur"], 13.2);

    // Someone without the key claims a bigger share: refused, counted, the genuine one stays.
    let forged = wire::seal(b"not the site key", SITE, &topic, &summary(99.0));
    client
        .publish(topic.clone(), QoS::AtLeastOnce, true, forged)
        .await
        .expect("publish");
    let metric = || {
        a.get("/metrics")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("socer_summaries_refused_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(eventually(Duration::from_secs(10), || metric() >= 1).await);
    assert_eq!(now()["community_share"]["shared_as_consumer_kwh"], 30.0);

    // Local days: `1d` is accepted, a day starts at midnight in Rome; nonsense is refused.
    let h: serde_json::Value = serde_json::from_str(
        &a.get("/api/v1/history?from=2026-03-28T12:00:00Z&to=2026-03-30T12:00:00Z&step=1d")
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert!(h["rows"].is_array(), "{h}");
    let live = a
        .get(&format!(
            "/api/v1/history?from={}&step=1d",
            (chrono::Utc::now() - chrono::Duration::days(2))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
        .unwrap_or_default();
    let live: serde_json::Value = serde_json::from_str(&live).unwrap_or_default();
    for r in live["rows"].as_array().into_iter().flatten() {
        let start = chrono::DateTime::parse_from_rfc3339(r["start"].as_str().unwrap_or(""))
            .expect("start")
            .with_timezone(&chrono_tz::Europe::Rome);
        assert_eq!(start.format("%H:%M").to_string(), "00:00", "{r}");
        assert!(
            [82_800, 86_400, 90_000].contains(&r["step_s"].as_i64().unwrap_or(0)),
            "{r}"
        );
    }
    assert!(
        a.get("/api/v1/history?step=1w").is_none(),
        "an unknown step is a 400"
    );
}
