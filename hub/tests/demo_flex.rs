//! The demo's bus depot following the load-shift alerts: the pure plan (charge moved into the
//! announced green window within the depot's limits, the day's energy unchanged, the fixed schedule
//! without a window), and the controller through a real broker changing the model's charging.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use rumqttc::{AsyncClient, MqttOptions, QoS};

use socer::demo::flex::{self, plan, Depot, GreenWindow, Link};
use socer::demo::load::{hhmm, ChargeWindow};
use socer::demo::model::Community;
use socer::demo::scenario::Scenario;
use socer::wire::{Alert, AlertKind, FlexSuggestion, Topics};
use socer_drivers::clock::ManualClock;
use socer_drivers::Clock;

const ROME: chrono_tz::Tz = chrono_tz::Europe::Rome;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn community() -> Community {
    Community::new(Scenario::builtin().unwrap(), 3)
}

fn depot(c: &Community) -> Depot {
    let stps = c.buildings().iter().find(|b| b.id == "stps").unwrap();
    Depot::of(stps).unwrap()
}

fn window(start: &str, end: &str, hours: f64, heard: &str) -> GreenWindow {
    GreenWindow {
        id: format!("socer-{start}-expected"),
        start: t(start),
        end: t(end),
        suggested_hours: hours,
        heard: t(heard),
    }
}

/// Minutes a time-of-day window lasts (wrapping past midnight).
fn minutes(w: &ChargeWindow) -> u32 {
    let (a, b) = (hhmm(&w.from).unwrap(), hhmm(&w.to).unwrap());
    (b + 1440 - a) % 1440
}

/// Energy of every window but the fixed top-up, kWh.
fn flexible_kwh(d: &Depot, windows: &[ChargeWindow]) -> f64 {
    windows
        .iter()
        .filter(|w| !d.fixed.contains(w))
        .map(|w| w.kw * f64::from(minutes(w)) / 60.0)
        .sum()
}

/// The depot chargers' energy over one service day (05:30 local to 05:30 the next day), kWh,
/// integrated from the model at one-minute steps.
fn chargers_kwh(c: &Community, from: DateTime<Utc>) -> f64 {
    let b = c.buildings().iter().position(|b| b.id == "stps").unwrap();
    let chargers = c.buildings()[b]
        .loads
        .iter()
        .position(|l| l.name == "chargers")
        .unwrap();
    (0..24 * 60)
        .map(|m| {
            c.building_power(b, from + Duration::minutes(m) + Duration::seconds(30))
                .loads_w[chargers]
                / 60_000.0
        })
        .sum()
}

// Wednesday 10 June 2026: Rome is UTC+2, so 11:00 local is 09:00 UTC.

#[test]
fn charge_moves_into_the_announced_window_and_the_night_gives_back_the_same_energy() {
    let c = community();
    let d = depot(&c);
    let now = t("2026-06-10T06:00:00Z");
    let w = window(
        "2026-06-10T09:00:00Z",
        "2026-06-10T13:00:00Z",
        3.0,
        "2026-06-09T20:00:00Z",
    );
    let p = plan(&d, &[w], now, ROME);
    let green = p
        .windows
        .iter()
        .find(|x| x.from == "11:00" && x.kw == 180.0)
        .expect("a charging window at the green window's start");
    assert_eq!((green.to.as_str(), green.kw), ("14:00", 180.0));
    // The night ends three hours early: still done before the buses leave at 05:30.
    assert!(p
        .windows
        .iter()
        .any(|x| x.from == "21:30" && x.to == "02:30" && x.kw == 180.0));
    assert_eq!(p.moved_kwh, 540.0);
    assert_eq!(p.night_kwh, 900.0);
    assert_eq!(flexible_kwh(&d, &p.windows), d.night_kwh());
    assert_eq!(p.following, vec!["socer-2026-06-10T09:00:00Z-expected"]);
    // In the model: the same charger energy over the service day, more of it at midday.
    let day = t("2026-06-10T03:30:00Z");
    c.set_charging("stps", d.fixed_schedule());
    let fixed = chargers_kwh(&c, day);
    c.set_charging("stps", p.windows.clone());
    let moved = chargers_kwh(&c, day);
    assert!(
        (moved - fixed).abs() < 0.03 * fixed,
        "fixed {fixed:.0} kWh, moved {moved:.0} kWh"
    );
    let b = c.buildings().iter().position(|b| b.id == "stps").unwrap();
    let noon = c
        .building_power(b, t("2026-06-10T10:30:00Z"))
        .consumption_w();
    c.set_charging("stps", d.fixed_schedule());
    let noon_fixed = c
        .building_power(b, t("2026-06-10T10:30:00Z"))
        .consumption_w();
    assert!(noon - noon_fixed > 170_000.0, "{noon} vs {noon_fixed}");
}

#[test]
fn without_an_announced_window_the_fixed_overnight_schedule_stays() {
    let c = community();
    let d = depot(&c);
    let p = plan(&d, &[], t("2026-06-10T10:00:00Z"), ROME);
    assert_eq!(p.windows, d.fixed_schedule());
    assert_eq!((p.moved_kwh, p.night_kwh), (0.0, 1440.0));
    // A window of another day, or one with nothing suggested, changes nothing either.
    let tomorrow = window(
        "2026-06-11T09:00:00Z",
        "2026-06-11T13:00:00Z",
        3.0,
        "2026-06-10T08:00:00Z",
    );
    let nothing = window(
        "2026-06-10T09:00:00Z",
        "2026-06-10T13:00:00Z",
        0.0,
        "2026-06-10T08:00:00Z",
    );
    let p = plan(&d, &[tomorrow, nothing], t("2026-06-10T10:00:00Z"), ROME);
    assert_eq!(p.windows, d.fixed_schedule());
}

#[test]
fn the_move_is_bounded_by_the_shift_hours_the_window_and_the_time_left() {
    let c = community();
    let d = depot(&c);
    // Eight green hours with six suggested: the depot moves at most its four.
    let long = window(
        "2026-06-10T07:00:00Z",
        "2026-06-10T15:00:00Z",
        6.0,
        "2026-06-10T05:00:00Z",
    );
    let p = plan(&d, &[long], t("2026-06-10T06:00:00Z"), ROME);
    assert_eq!(p.moved_kwh, 4.0 * 180.0);
    assert!(p
        .windows
        .iter()
        .any(|x| x.from == "09:00" && x.to == "13:00"));
    // 1 h 40 min of window: whole quarter hours only, 1.5 h.
    let short = window(
        "2026-06-10T09:00:00Z",
        "2026-06-10T10:40:00Z",
        4.0,
        "2026-06-10T05:00:00Z",
    );
    let p = plan(&d, &[short], t("2026-06-10T06:00:00Z"), ROME);
    assert_eq!(p.moved_kwh, 1.5 * 180.0);
    assert!(p
        .windows
        .iter()
        .any(|x| x.from == "11:00" && x.to == "12:30"));
    assert!(p
        .windows
        .iter()
        .any(|x| x.from == "21:30" && x.to == "04:00"));
    // Heard of only at noon (an opening alert): the hour already gone is not counted as charged.
    let late = window(
        "2026-06-10T09:00:00Z",
        "2026-06-10T13:00:00Z",
        4.0,
        "2026-06-10T10:00:00Z",
    );
    let p = plan(&d, &[late], t("2026-06-10T10:00:00Z"), ROME);
    assert!(p
        .windows
        .iter()
        .any(|x| x.from == "12:00" && x.to == "15:00"));
    assert_eq!(p.moved_kwh, 3.0 * 180.0);
    assert_eq!(flexible_kwh(&d, &p.windows), d.night_kwh());
}

#[test]
fn after_the_buses_leave_the_next_morning_the_plan_is_fixed_again() {
    let c = community();
    let d = depot(&c);
    let w = window(
        "2026-06-10T09:00:00Z",
        "2026-06-10T13:00:00Z",
        3.0,
        "2026-06-09T20:00:00Z",
    );
    // 03:00 local the night after: still the shortened night of that service day.
    let night = plan(
        &d,
        std::slice::from_ref(&w),
        t("2026-06-11T01:00:00Z"),
        ROME,
    );
    assert_eq!(night.moved_kwh, 540.0);
    // 05:30 local: a new service day with no window.
    let next = plan(&d, &[w], t("2026-06-11T03:30:00Z"), ROME);
    assert_eq!(next.windows, d.fixed_schedule());
}

fn alert(kind: AlertKind, ts: &str, hours: f64) -> Alert {
    Alert {
        id: format!("socer-20260610T0900-{kind:?}").to_lowercase(),
        kind,
        site: Some("stps".into()),
        ts: t(ts),
        window_start: t("2026-06-10T09:00:00Z"),
        window_end: t("2026-06-10T13:00:00Z"),
        expected_surplus_kwh: 900.0,
        loads: vec![FlexSuggestion {
            name: flex::FLEX_NAME.into(),
            power_kw: 180.0,
            hours,
        }],
        text_it: "Finestra verde".into(),
        text_en: "Green window".into(),
    }
}

/// Publish `a` on the depot's alert topic every 300 ms until `done` holds (the controller may not
/// have subscribed yet: alerts are not retained), for at most 15 s.
fn hub_key() -> socer::wire::HubSigningKey {
    socer::wire::signing_key_from_hex(&"24".repeat(32)).unwrap()
}

async fn publish_until(
    client: &AsyncClient,
    a: &Alert,
    done: impl Fn() -> bool,
) -> Result<(), String> {
    let topic = Topics::new("socer").site_alerts("stps");
    let until = Instant::now() + StdDuration::from_secs(15);
    while Instant::now() < until {
        let payload = socer::wire::sign(&hub_key(), &topic, a);
        client
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        if done() {
            return Ok(());
        }
    }
    Err(format!("no change of plan after alert {}", a.id))
}

#[test]
fn a_targeted_alert_through_the_broker_moves_the_depot_charging_in_the_model() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let users = HashMap::from([
        ("stps".to_string(), "pw-stps".to_string()),
        ("central".to_string(), "pw-central".to_string()),
    ]);
    socer::central::broker::start_embedded(broker, users, 64 * 1024).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = Arc::new(community());
    let d = depot(&c);
    let clock = Arc::new(ManualClock::new(t("2026-06-10T06:00:00Z")));
    let dir = std::env::temp_dir().join(format!("socer-demo-flex-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("flex-stps.json");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let result: Result<(), String> = rt.block_on(async {
        let task = flex::spawn(
            c.clone(),
            d.clone(),
            Link {
                broker,
                community: "socer".into(),
                site: "stps".into(),
                password: "pw-stps".into(),
                hub_public_key: hub_key().verifying_key(),
            },
            ROME,
            clock.clone() as Arc<dyn Clock>,
            StdDuration::from_millis(200),
            Some(report.clone()),
            stopped,
        );
        let mut o = MqttOptions::new("central", "127.0.0.1", port);
        o.set_credentials("central", "pw-central");
        o.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut events) = AsyncClient::new(o, 16);
        tokio::spawn(async move {
            loop {
                if events.poll().await.is_err() {
                    tokio::time::sleep(StdDuration::from_millis(200)).await;
                }
            }
        });

        // Heard the evening before: 3 h of the night move to 11:00–14:00.
        let moved = || {
            c.charging("stps")
                .iter()
                .any(|w| w.from == "11:00" && w.kw == 180.0)
        };
        // The same alert unsigned, or signed by another key, moves nothing.
        let expected = alert(AlertKind::Expected, "2026-06-09T20:00:00Z", 3.0);
        let topic = Topics::new("socer").site_alerts("stps");
        let forger = socer::wire::generate_signing_key();
        for _ in 0..5 {
            let unsigned = serde_json::to_vec(&expected).unwrap();
            let forged = socer::wire::sign(&forger, &topic, &expected);
            for p in [unsigned, forged] {
                client
                    .publish(&topic, QoS::AtLeastOnce, false, p)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            tokio::time::sleep(StdDuration::from_millis(300)).await;
        }
        assert!(!moved(), "an alert the hub did not sign moved the charging");
        publish_until(
            &client,
            &alert(AlertKind::Expected, "2026-06-09T20:00:00Z", 3.0),
            moved,
        )
        .await?;
        let now = c.charging("stps");
        assert!(now
            .iter()
            .any(|w| w.from == "11:00" && w.to == "14:00" && w.kw == 180.0));
        assert!(now.iter().any(|w| w.from == "21:30" && w.to == "02:30"));
        // The depot's meter sees it: 180 kW more at 12:30 local, 180 kW less at 03:00.
        let b = c.buildings().iter().position(|b| b.id == "stps").unwrap();
        let at = |s: &str| c.building_power(b, t(s)).consumption_w();
        let (noon, night) = (at("2026-06-10T10:30:00Z"), at("2026-06-11T01:00:00Z"));
        c.set_charging("stps", d.fixed_schedule());
        let (noon_fixed, night_fixed) = (at("2026-06-10T10:30:00Z"), at("2026-06-11T01:00:00Z"));
        c.set_charging("stps", now.clone());
        assert!(noon - noon_fixed > 170_000.0, "{noon} vs {noon_fixed}");
        assert!(night_fixed - night > 170_000.0, "{night} vs {night_fixed}");

        // The window ends early at 11:30 local: half an hour stays moved, the rest goes back.
        clock.set_wall(t("2026-06-10T09:30:00Z"));
        let closed = || c.charging("stps").iter().any(|w| w.to == "05:00");
        publish_until(
            &client,
            &alert(AlertKind::Close, "2026-06-10T09:30:00Z", 0.5),
            closed,
        )
        .await?;
        assert!(c
            .charging("stps")
            .iter()
            .any(|w| w.from == "11:00" && w.to == "11:30" && w.kw == 180.0));
        let text = std::fs::read_to_string(&report).map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        assert_eq!(v["plan"]["moved_kwh"].as_f64(), Some(90.0));

        let _ = stop.send(true);
        let _ = tokio::time::timeout(StdDuration::from_secs(3), task).await;
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}
