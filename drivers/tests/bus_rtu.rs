//! The RTU transport and the bus scheduler on ptys: against tokio-modbus's RTU server, and against
//! a hand-rolled device that stays silent, answers late or sends garbage.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use socer_drivers::bus::{self, BusConfig, MeterConfig};
use socer_drivers::plan::{CostModel, Intervals};
use socer_drivers::profile::Function;
use socer_drivers::reading::{Quality, Quantity};
use socer_drivers::transport::{Backoff, RtuLink};
use socer_drivers::{Link, LinkError, SystemClock};
use tokio::sync::{mpsc, watch};

/// Poll interval of power in the bus tests: longer than a timeout, as on a real bus.
const FAST: Duration = Duration::from_millis(200);

const BAUD: u32 = 19_200;

fn values_a() -> Vec<(Quantity, Option<u8>, f64)> {
    vec![
        (Quantity::PW, None, 1500.5),
        (Quantity::VV, Some(1), 230.25),
        (Quantity::VV, Some(2), 231.5),
        (Quantity::EImpWh, None, 123_450.0),
        (Quantity::EExpWh, None, 670.0),
    ]
}

fn values_b() -> Vec<(Quantity, Option<u8>, f64)> {
    vec![
        (Quantity::PW, None, -42.0),
        (Quantity::EImpWh, None, 10.0),
        (Quantity::EExpWh, None, 99_990.0),
    ]
}

#[tokio::test]
async fn rtu_link_reads_words_and_exceptions_from_tokio_modbus_server() {
    let p = test_profile();
    let img = image(&p, &values_a());
    let devices = Devices::new(vec![
        (1, Behaviour::Answer(img.clone())),
        (4, Behaviour::Exception(2)),
    ]);
    let port = rtu_server(devices.clone());
    let mut link = RtuLink::from_stream(port, BAUD, Duration::from_millis(200));

    let words = link
        .read_registers(1, Function::Input, 0, 10)
        .await
        .unwrap();
    let expected: Vec<u16> = (0..10)
        .map(|a| img.get(&(Function::Input, a)).copied().unwrap_or(0))
        .collect();
    assert_eq!(words, expected);
    assert_eq!(
        link.read_registers(4, Function::Holding, 0, 2).await,
        Err(LinkError::Exception { code: 2 })
    );
    // A unit nobody answers for times out, and the line is usable afterwards.
    assert_eq!(
        link.read_registers(9, Function::Input, 0, 2).await,
        Err(LinkError::Timeout { timeout_ms: 200 })
    );
    assert_eq!(
        link.read_registers(1, Function::Input, 40, 2)
            .await
            .unwrap(),
        vec![expected_word(&img, 40), expected_word(&img, 41)]
    );
}

fn expected_word(img: &std::collections::HashMap<(Function, u16), u16>, a: u16) -> u16 {
    img.get(&(Function::Input, a)).copied().unwrap_or(0)
}

#[tokio::test]
async fn late_answer_after_timeout_is_not_taken_for_the_next_request() {
    let p = test_profile();
    let img_a = image(&p, &values_a());
    let img_b = image(&p, &values_b());
    let devices = Devices::new(vec![
        (1, Behaviour::Late(Duration::from_millis(60), img_a.clone())),
        (
            2,
            Behaviour::Late(Duration::from_millis(150), img_b.clone()),
        ),
    ]);
    let port = rtu_device(devices.clone());
    let mut link = RtuLink::from_stream(port, BAUD, Duration::from_millis(100));

    // Unit 2 answers at 150 ms, after the 100 ms timeout, while the next request (same function,
    // same length, answered at about 170 ms) is pending.
    assert_eq!(
        link.read_registers(2, Function::Input, 0, 2).await,
        Err(LinkError::Timeout { timeout_ms: 100 })
    );
    let words = link.read_registers(1, Function::Input, 0, 2).await.unwrap();
    assert_eq!(
        words,
        vec![expected_word(&img_a, 0), expected_word(&img_a, 1)]
    );
    assert_ne!(
        words,
        vec![expected_word(&img_b, 0), expected_word(&img_b, 1)]
    );

    // The late answer arrives between requests: it is drained before the next one is sent.
    assert_eq!(
        link.read_registers(2, Function::Input, 0, 2).await,
        Err(LinkError::Timeout { timeout_ms: 100 })
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let words = link
        .read_registers(1, Function::Input, 40, 2)
        .await
        .unwrap();
    assert_eq!(
        words,
        vec![expected_word(&img_a, 40), expected_word(&img_a, 41)]
    );
}

#[tokio::test]
async fn garbage_frame_is_retried_once_then_reported_with_its_bytes() {
    let devices = Devices::new(vec![(5, Behaviour::Garbage)]);
    let port = rtu_device(devices.clone());
    let mut link = RtuLink::from_stream(port, BAUD, Duration::from_millis(100));
    let err = link
        .read_registers(5, Function::Input, 0, 2)
        .await
        .unwrap_err();
    let LinkError::Frame(msg) = &err else {
        panic!("expected a bad frame, got {err:?}")
    };
    assert!(msg.contains("05 04 04 de ad be ef 00 00"), "{msg}");
    assert_eq!(
        devices.requests_to(5).len(),
        2,
        "one retry after a damaged frame"
    );
}

fn meter(name: &str, unit: u8, reverse: bool) -> MeterConfig {
    MeterConfig {
        name: name.into(),
        unit,
        profile: Arc::new(test_profile()),
        reverse,
        intervals: Intervals {
            fast: Some(FAST),
            counter: Some(FAST * 3),
        },
    }
}

#[tokio::test]
async fn failing_meters_back_off_while_healthy_meters_keep_their_rate() {
    let p = test_profile();
    let devices = Devices::new(vec![
        (1, Behaviour::Answer(image(&p, &values_a()))),
        (2, Behaviour::Answer(image(&p, &values_b()))),
        (3, Behaviour::Silent),
        (4, Behaviour::Exception(2)),
        (5, Behaviour::Garbage),
    ]);
    let port = rtu_device(devices.clone());
    let link = RtuLink::from_stream(port, BAUD, Duration::from_millis(100));
    let mut config = BusConfig::new(
        "rs485-test",
        Duration::from_millis(100),
        CostModel::rtu(BAUD),
        vec![
            meter("a", 1, false),
            meter("b", 2, true),
            meter("dead", 3, false),
            meter("exc", 4, false),
            meter("junk", 5, false),
        ],
    );
    let backoff = Backoff {
        initial: Duration::from_millis(400),
        max: Duration::from_millis(800),
    };
    config.backoff = backoff;
    let (tx, mut rx) = mpsc::channel(256);
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let handle = bus::spawn(config, link, Arc::new(SystemClock::new()), tx, stop_rx);
    let window = Duration::from_millis(2400);
    let readings = collect(&mut rx, window).await;
    let health = handle.health.snapshot();
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), handle.task)
        .await
        .expect("bus stops on shutdown")
        .unwrap();

    let of = |m: &str| readings.iter().filter(|r| r.meter == m).collect::<Vec<_>>();
    // A 200 ms interval over 2.4 s is 12 polls; failures elsewhere may delay one or two.
    for m in ["a", "b"] {
        let n = of(m).len();
        assert!((10..=13).contains(&n), "meter {m}: {n} readings in 2.4 s");
        assert!(
            of(m).iter().all(|r| r.quality == Quality::Good),
            "{:?}",
            of(m)
        );
    }
    let a = of("a")[0];
    assert_eq!(a.values.p_w, Some(1500.5));
    assert_eq!(a.values.v_v[1], Some(231.5));
    assert_eq!(a.values.e_imp_wh, Some(123_450.0));
    // Meter b is mounted reversed: power negated, import and export swapped.
    let b = of("b")[0];
    assert_eq!(b.values.p_w, Some(42.0));
    assert_eq!(b.values.e_imp_wh, Some(99_990.0));
    assert_eq!(b.values.e_exp_wh, Some(10.0));

    // The dead meter: one request per poll (the poll stops at the first timeout), polls spaced
    // by the back-off (400 ms, then 800 ms).
    let dead = devices.requests_to(3);
    assert!(
        (2..=4).contains(&dead.len()),
        "dead meter polled {} times in 2.4 s",
        dead.len()
    );
    for pair in dead.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(450),
            "dead meter polled again after {gap:?}"
        );
    }
    let d = of("dead");
    // One reading per poll; a poll still waiting for its timeout when the window closed has none.
    assert!(
        d.len() == dead.len() || d.len() + 1 == dead.len(),
        "{} readings, {} polls",
        d.len(),
        dead.len()
    );
    assert!(d
        .iter()
        .all(|r| r.quality == Quality::Failed && r.values.is_empty()));
    let reason = &d[0]
        .missing
        .iter()
        .find(|m| m.quantity == "p_w")
        .unwrap()
        .reason;
    assert!(
        reason.contains("bus rs485-test: unit 3, input register 0 (0x0000)"),
        "{reason}"
    );
    assert!(reason.contains("no answer within 100 ms"), "{reason}");
    let counter_reason = &d[0]
        .missing
        .iter()
        .find(|m| m.quantity == "e_imp_wh")
        .unwrap()
        .reason;
    assert!(
        counter_reason.contains("register 40 (0x0028)"),
        "{counter_reason}"
    );

    let e = of("exc");
    assert!(
        !e.is_empty() && e.len() <= 5,
        "exception meter backs off too: {}",
        e.len()
    );
    let reason = &e[0].missing[0].reason;
    assert!(
        reason.contains("unit 4") && reason.contains("exception 0x02 (illegal data address)"),
        "{reason}"
    );

    let j = of("junk");
    assert!(
        !j.is_empty() && j.len() <= 5,
        "garbage meter backs off: {}",
        j.len()
    );
    let reason = &j[0].missing[0].reason;
    assert!(
        reason.contains("unit 5") && reason.contains("bad frame") && reason.contains("de ad be ef"),
        "{reason}"
    );

    let h = |m: &str| health.meters.iter().find(|h| h.meter == m).unwrap().clone();
    assert_eq!(h("a").reads_failed, 0);
    assert!(h("a").reads_ok >= 10);
    assert!(h("dead").backed_off_until.is_some());
    assert!(h("dead")
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("no answer"));
    assert!(h("dead").consecutive_failures >= 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn requests_keep_three_and_a_half_characters_of_silence_after_each_answer() {
    let p = test_profile();
    let devices = Devices::new(vec![(1, Behaviour::Answer(image(&p, &values_a())))]);
    let port = rtu_device(devices.clone());
    // 9600 baud: 3.5 characters of 10 bits are 3.65 ms.
    let mut link = RtuLink::from_stream(port, 9600, Duration::from_millis(200));
    for a in 0..6 {
        link.read_registers(1, Function::Input, a * 2, 2)
            .await
            .unwrap();
    }
    let requests = devices.requests_to(1);
    let answered = devices.answered.lock().unwrap().clone();
    assert_eq!((requests.len(), answered.len()), (6, 6));
    for i in 1..6 {
        let silence = requests[i] - answered[i - 1];
        assert!(
            silence >= Duration::from_micros(3500),
            "request {i} came {silence:?} after the previous answer"
        );
    }
}

#[tokio::test]
async fn bus_reads_the_simulated_sdm630_over_a_socat_pty_by_path() {
    use socer_drivers::bus::TransportConfig;
    use socer_drivers::sim::rtu::{serve_rtu, LineConfig};
    use socer_drivers::sim::{NoisyPower, PhysicsConfig, SimDevice};
    use socer_drivers::transport::SerialSettings;
    use socer_drivers::{ManualClock, ProfileSet};

    let pty = SocatPty::new();
    let set = ProfileSet::builtin().unwrap();
    let sdm630 = Arc::new(set.require("eastron-sdm630").unwrap().clone());
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock = ManualClock::new(t0);
    let device = SimDevice::from_profile(
        &sdm630,
        Arc::new(clock.clone()),
        Box::new(NoisyPower::new(-2750.0, 0.0, 1)),
        PhysicsConfig {
            grid_noise: 0.0,
            import_wh: 4_321_000.0,
            export_wh: 1_000.0,
            ..PhysicsConfig::default()
        },
    );
    let sim_port = tokio_serial::SerialStream::open(&tokio_serial::new(&pty.b, 19_200)).unwrap();
    let line = LineConfig {
        baud: 19_200,
        ..LineConfig::default()
    };
    tokio::spawn(serve_rtu(
        sim_port,
        Arc::new([(3u8, device)].into_iter().collect()),
        line,
    ));

    let transport = TransportConfig::Serial(SerialSettings::new(pty.a.clone(), 19_200));
    let timeout = Duration::from_millis(300);
    let link = transport
        .open(
            timeout,
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
            },
        )
        .unwrap();
    let m = MeterConfig {
        name: "grid".into(),
        unit: 3,
        profile: sdm630,
        reverse: false,
        intervals: Intervals {
            fast: Some(FAST),
            counter: Some(FAST),
        },
    };
    let config = BusConfig::new("ttyUSB-test", timeout, transport.cost_model(), vec![m]);
    let (tx, mut rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = bus::spawn(config, link, Arc::new(clock.clone()), tx, stop_rx);
    let r = tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .unwrap()
        .unwrap();
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), handle.task)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(r.quality, Quality::Good, "{:?}", r.missing);
    assert_eq!(r.values.p_w, Some(-2750.0));
    assert_eq!(r.values.v_v, [Some(230.0); 3]);
    assert_eq!(r.values.f_hz, Some(50.0));
    // SDM630 counters are f32 kWh: 4321 kWh is exact in f32.
    assert_eq!(r.values.e_imp_wh, Some(4_321_000.0));
    assert_eq!(r.values.e_exp_wh, Some(1_000.0));
    assert_eq!(r.ts, t0);
}

#[tokio::test]
async fn valid_frame_of_the_wrong_length_is_a_bad_frame_not_a_timeout() {
    let devices = Devices::new(vec![(6, Behaviour::Short)]);
    let port = rtu_device(devices.clone());
    let mut link = RtuLink::from_stream(port, BAUD, Duration::from_millis(80));
    let err = link
        .read_registers(6, Function::Input, 0, 3)
        .await
        .unwrap_err();
    let LinkError::Frame(msg) = &err else {
        panic!("expected a bad frame, got {err:?}")
    };
    assert!(
        msg.contains("only 9 bytes answering another: 06 04 04 11 11 11 11"),
        "{msg}"
    );
    assert_eq!(devices.requests_to(6).len(), 2, "retried once");
}
