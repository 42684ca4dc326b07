//! The TCP transport and the bus scheduler against tokio-modbus's TCP server on loopback: a
//! gateway with several unit ids, timeouts, reconnection, SunSpec-style scale factors.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use socer_drivers::bus::{self, BusConfig, MeterConfig};
use socer_drivers::plan::{CostModel, Intervals};
use socer_drivers::profile::{Function, Profile, QuantityMap, Unreadable, ValueType};
use socer_drivers::reading::{Quality, Quantity, Reading};
use socer_drivers::transport::{Backoff, TcpLink};
use socer_drivers::{Link, LinkError, SystemClock};
use tokio::sync::{mpsc, watch};

/// Poll interval of power in the bus tests: longer than a timeout, as on a real bus.
const FAST: Duration = Duration::from_millis(200);

fn reconnect() -> Backoff {
    Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(2),
    }
}

fn meter(name: &str, unit: u8, profile: Profile, reverse: bool) -> MeterConfig {
    MeterConfig {
        name: name.into(),
        unit,
        profile: Arc::new(profile),
        reverse,
        intervals: Intervals {
            fast: Some(FAST),
            counter: Some(FAST * 3),
        },
    }
}

fn values(p_w: f64, e_imp_wh: f64, e_exp_wh: f64) -> Vec<(Quantity, Option<u8>, f64)> {
    vec![
        (Quantity::PW, None, p_w),
        (Quantity::VV, Some(1), 229.0),
        (Quantity::VV, Some(2), 230.0),
        (Quantity::EImpWh, None, e_imp_wh),
        (Quantity::EExpWh, None, e_exp_wh),
    ]
}

#[tokio::test]
async fn gateway_units_share_one_connection_and_decode_to_canonical_values() {
    let p = test_profile();
    let devices = Devices::new(vec![
        (
            1,
            Behaviour::Answer(image(&p, &values(1200.0, 5000.0, 10.0))),
        ),
        (
            2,
            Behaviour::Answer(image(&p, &values(-3000.0, 20.0, 88_000.0))),
        ),
        (7, Behaviour::Answer(image(&p, &values(75.5, 1.0, 2.0)))),
    ]);
    let server = tcp_server(devices.clone()).await;
    let link = TcpLink::new(
        server.addr.to_string(),
        Duration::from_millis(300),
        reconnect(),
    );
    let config = BusConfig::new(
        "gw",
        Duration::from_millis(300),
        CostModel::tcp(),
        vec![
            meter("house", 1, p.clone(), false),
            meter("pv", 2, p.clone(), true),
            meter("pump", 7, p, false),
        ],
    );
    let (tx, mut rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = bus::spawn(config, link, Arc::new(SystemClock::new()), tx, stop_rx);
    let readings = collect(&mut rx, Duration::from_millis(700)).await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), handle.task)
        .await
        .unwrap()
        .unwrap();

    let first = |m: &str| readings.iter().find(|r| r.meter == m).unwrap().clone();
    let house = first("house");
    assert_eq!(house.quality, Quality::Good);
    assert_eq!(house.values.p_w, Some(1200.0));
    assert_eq!(house.values.v_v, [Some(229.0), Some(230.0), None]);
    assert_eq!(house.values.e_imp_wh, Some(5000.0));
    // Reversed: the inverter's meter reads import for what it produces.
    let pv = first("pv");
    assert_eq!(pv.values.p_w, Some(3000.0));
    assert_eq!(
        (pv.values.e_imp_wh, pv.values.e_exp_wh),
        (Some(88_000.0), Some(20.0))
    );
    assert_eq!(first("pump").values.p_w, Some(75.5));
    // Counters are polled every 600 ms, power every 200 ms: some readings lack counters.
    let house_all: Vec<&Reading> = readings.iter().filter(|r| r.meter == "house").collect();
    assert!((3..=5).contains(&house_all.len()), "{}", house_all.len());
    assert!(house_all
        .iter()
        .any(|r| r.values.e_imp_wh.is_none() && r.quality == Quality::Good));
    // Whole map in one request per poll on TCP (0..44), and one connection for all three units.
    let log = devices.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|&(u, a, c, _)| u == 1 && a == 0 && c == 44),
        "{log:?}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn timeout_drops_the_connection_so_a_late_answer_is_never_read() {
    let p = test_profile();
    let img_a = image(&p, &values(111.0, 1.0, 1.0));
    let img_b = image(&p, &values(222.0, 2.0, 2.0));
    let devices = Devices::new(vec![
        (1, Behaviour::Answer(img_a.clone())),
        (2, Behaviour::Late(Duration::from_millis(200), img_b)),
    ]);
    let server = tcp_server(devices).await;
    let mut link = TcpLink::new(
        server.addr.to_string(),
        Duration::from_millis(100),
        reconnect(),
    );
    assert_eq!(
        link.read_registers(2, Function::Input, 0, 2).await,
        Err(LinkError::Timeout { timeout_ms: 100 })
    );
    for _ in 0..3 {
        let w = link.read_registers(1, Function::Input, 0, 2).await.unwrap();
        assert_eq!(
            w,
            vec![img_a[&(Function::Input, 0)], img_a[&(Function::Input, 1)]]
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        2,
        "reconnected once after the timeout"
    );
}

#[tokio::test]
async fn refused_connection_backs_off_before_reconnecting() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut link = TcpLink::new(addr.to_string(), Duration::from_millis(200), reconnect());
    let first = link
        .read_registers(1, Function::Input, 0, 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&first, LinkError::Transport(m) if m.contains("connect")),
        "{first:?}"
    );
    // Within the back-off no connection is attempted.
    let second = link
        .read_registers(1, Function::Input, 0, 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&second, LinkError::Transport(m) if m.contains("reconnecting in")),
        "{second:?}"
    );

    let p = test_profile();
    let img = image(&p, &values(5.0, 1.0, 1.0));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = serve_tcp(
        listener,
        Devices::new(vec![(1, Behaviour::Answer(img.clone()))]),
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let w = link.read_registers(1, Function::Input, 0, 2).await.unwrap();
    assert_eq!(
        w,
        vec![img[&(Function::Input, 0)], img[&(Function::Input, 1)]]
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dead_unit_behind_gateway_costs_one_timeout_per_backoff() {
    let p = test_profile();
    let devices = Devices::new(vec![
        (1, Behaviour::Answer(image(&p, &values(1.0, 1.0, 1.0)))),
        (2, Behaviour::Answer(image(&p, &values(2.0, 1.0, 1.0)))),
        (3, Behaviour::Silent),
        (4, Behaviour::Exception(0x0B)),
    ]);
    let server = tcp_server(devices.clone()).await;
    let link = TcpLink::new(
        server.addr.to_string(),
        Duration::from_millis(100),
        reconnect(),
    );
    let mut config = BusConfig::new(
        "gw",
        Duration::from_millis(100),
        CostModel::tcp(),
        vec![
            meter("a", 1, p.clone(), false),
            meter("b", 2, p.clone(), false),
            meter("dead", 3, p.clone(), false),
            meter("gone", 4, p, false),
        ],
    );
    config.backoff = Backoff {
        initial: Duration::from_millis(400),
        max: Duration::from_millis(800),
    };
    let (tx, mut rx) = mpsc::channel(256);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = bus::spawn(config, link, Arc::new(SystemClock::new()), tx, stop_rx);
    let readings = collect(&mut rx, Duration::from_millis(2400)).await;
    let health = handle.health.snapshot();
    drop(stop_tx); // dropping the shutdown sender stops the bus too
    tokio::time::timeout(Duration::from_secs(2), handle.task)
        .await
        .unwrap()
        .unwrap();

    let count = |m: &str| readings.iter().filter(|r| r.meter == m).count();
    for m in ["a", "b"] {
        assert!(
            (10..=13).contains(&count(m)),
            "meter {m}: {} readings in 2.4 s",
            count(m)
        );
    }
    let dead = devices.requests_to(3);
    assert!(
        (2..=4).contains(&dead.len()),
        "dead unit polled {} times",
        dead.len()
    );
    for pair in dead.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(450),
            "{:?}",
            pair[1] - pair[0]
        );
    }
    let gone = readings.iter().find(|r| r.meter == "gone").unwrap();
    assert_eq!(gone.quality, Quality::Failed);
    assert!(
        gone.missing[0]
            .reason
            .contains("exception 0x0b (gateway target failed to respond)"),
        "{:?}",
        gone.missing
    );
    let h = health.meters.iter().find(|m| m.meter == "dead").unwrap();
    assert!(h.reads_failed >= 2 && h.reads_ok == 0, "{h:?}");
    // Healthy meters kept working over the same connection (timeouts reconnect it).
    let a = health.meters.iter().find(|m| m.meter == "a").unwrap();
    assert_eq!(a.reads_failed, 0);
}

/// A SunSpec-like inverter: i16/u32 values with power-of-ten scale factor registers.
fn inverter() -> Profile {
    let mut p = test_profile();
    p.id = "sunspec-like".into();
    p.defaults.function = Function::Holding;
    let q = |name, address, value_type, sf| QuantityMap {
        name,
        phase: None,
        function: None,
        address,
        value_type,
        word_order: None,
        byte_order: None,
        scale: 1.0,
        scale_register: Some(sf),
        unit: None,
        sentinels: vec![],
        interval_s: None,
        plus: vec![],
        minus: vec![],
    };
    p.quantities = vec![
        q(Quantity::PW, 40083, ValueType::I16, 40084),
        q(Quantity::EExpWh, 40093, ValueType::U32, 40095),
        q(Quantity::FHz, 40085, ValueType::U16, 40086),
    ];
    p.unreadable = vec![Unreadable {
        function: Function::Holding,
        start: 40085,
        end: 40085,
    }];
    p
}

#[tokio::test]
async fn scale_factor_registers_are_read_in_the_same_plan_and_applied() {
    let p = inverter();
    let mut img = std::collections::HashMap::new();
    img.insert((Function::Holding, 40083), (-4321i16) as u16); // -4321 × 10^-1 W
    img.insert((Function::Holding, 40084), (-1i16) as u16);
    img.insert((Function::Holding, 40093), 0x0001);
    img.insert((Function::Holding, 40094), 0x86A0); // 100000 × 10^1 Wh
    img.insert((Function::Holding, 40095), 1);
    let devices = Devices::new(vec![(1, Behaviour::Answer(img))]);
    let server = tcp_server(devices.clone()).await;
    let mut link = TcpLink::new(
        server.addr.to_string(),
        Duration::from_millis(300),
        reconnect(),
    );
    let m = meter("inv", 1, p, false);
    let out = bus::read_once(&mut link, "gw", &m, &CostModel::tcp(), &SystemClock::new()).await;
    let r = out.reading;
    assert!(
        (r.values.p_w.unwrap() + 432.1).abs() < 1e-9,
        "{:?}",
        r.values.p_w
    );
    assert_eq!(r.values.e_exp_wh, Some(1_000_000.0));
    // f_hz sits in a range the profile marks unreadable: missing with the reason, not read.
    assert_eq!(r.quality, Quality::Partial);
    assert_eq!(r.missing.len(), 1);
    assert_eq!(r.missing[0].quantity, "f_hz");
    assert!(
        r.missing[0]
            .reason
            .contains("holding register 40085 (0x9c95)"),
        "{}",
        r.missing[0].reason
    );
    assert!(
        r.missing[0].reason.contains("unreadable"),
        "{}",
        r.missing[0].reason
    );
    // Two requests: the unreadable register splits the block.
    let log = devices.log.lock().unwrap().clone();
    let reqs: Vec<(u16, u16)> = log.iter().map(|&(_, a, c, _)| (a, c)).collect();
    assert_eq!(reqs, vec![(40083, 2), (40086, 10)]);
}
