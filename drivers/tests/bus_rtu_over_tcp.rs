//! Modbus RTU over TCP: a transparent RS-485 gateway simulated on loopback (a tokio task that
//! forwards TCP bytes, unchanged, to one end of a pty pair) with the drivers' RTU simulator on the
//! other end. The RTU-over-TCP link must read through it exactly, tell a silent unit from a
//! damaged answer, and never take a stale answer for the current one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use socer_drivers::bus::{read_once, MeterConfig, TransportConfig};
use socer_drivers::link::{Link, LinkError};
use socer_drivers::plan::Intervals;
use socer_drivers::profile::{Function, ProfileSet};
use socer_drivers::sim::rtu::{serve_rtu, LineConfig, Parity};
use socer_drivers::sim::{NoisyPower, PhysicsConfig, SimDevice};
use socer_drivers::transport::{Backoff, RtuOverTcpLink};
use socer_drivers::ManualClock;
use tokio::net::TcpListener;
use tokio_serial::SerialStream;

const LINE: LineConfig = LineConfig {
    baud: 9600,
    parity: Parity::None,
    stop_bits: 1,
    turnaround: Duration::from_millis(5),
};

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// The RTU simulator behind a transparent gateway; returns the gateway's "host:port".
async fn gateway(devices: Vec<(u8, SimDevice)>) -> String {
    let (mut master, slave) = SerialStream::pair().expect("a pty pair");
    let devices: BTreeMap<u8, SimDevice> = devices.into_iter().collect();
    tokio::spawn(serve_rtu(slave, Arc::new(devices), LINE));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // One client at a time, as a transparent converter has one serial port; bytes pass
        // unchanged both ways until the client goes away.
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (mut a, mut b) = ([0u8; 512], [0u8; 512]);
            loop {
                tokio::select! {
                    n = tcp.read(&mut a) => match n {
                        Ok(n) if n > 0 => { if master.write_all(&a[..n]).await.is_err() { return; } }
                        _ => break,
                    },
                    n = master.read(&mut b) => match n {
                        Ok(n) if n > 0 => { if tcp.write_all(&b[..n]).await.is_err() { break; } }
                        _ => return,
                    },
                }
            }
        }
    });
    addr
}

fn alfa_device(clock: &ManualClock, power_w: f64) -> (SimDevice, Arc<socer_drivers::Profile>) {
    let set = ProfileSet::builtin().unwrap();
    let profile = set.get("sinapsi-alfa").unwrap().clone();
    let config = PhysicsConfig {
        grid_noise: 0.0,
        import_wh: 1_000_000.0,
        export_wh: 250_000.0,
        ..PhysicsConfig::default()
    };
    let dev = SimDevice::from_profile(
        &profile,
        Arc::new(clock.clone()),
        Box::new(NoisyPower::new(power_w, 0.0, 7)),
        config,
    );
    (dev, Arc::new(profile))
}

fn link(addr: &str) -> RtuOverTcpLink {
    RtuOverTcpLink::new(
        addr,
        9600,
        Duration::from_millis(1500),
        Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        },
    )
}

#[tokio::test]
async fn a_meter_behind_a_transparent_gateway_reads_exactly_and_a_silent_unit_times_out() {
    let clock = ManualClock::new(t0());
    // Exporting 1500 W: the Alfa's import register reads 0 and its export register 1500.
    let (dev, profile) = alfa_device(&clock, -1500.0);
    let addr = gateway(vec![(1, dev)]).await;
    let mut l = link(&addr);

    let meter = MeterConfig {
        name: "alfa".into(),
        unit: 1,
        profile,
        reverse: false,
        intervals: Intervals::default(),
    };
    let cost = TransportConfig::RtuOverTcp {
        addr: addr.clone(),
        baud: 9600,
    }
    .cost_model();
    let out = read_once(&mut l, "gw", &meter, &cost, &clock).await;
    let r = out.reading;
    assert!(r.missing.is_empty(), "{:?}", r.missing);
    assert_eq!(r.values.p_w, Some(-1500.0));
    assert_eq!(r.values.e_imp_wh, Some(1_000_000.0));
    assert_eq!(r.values.e_exp_wh, Some(250_000.0));

    // The raw registers: import power (2) is 0, export power (12) is 1500.
    let w = l.read_registers(1, Function::Holding, 2, 11).await.unwrap();
    assert_eq!((w[0], w[10]), (0, 1500));

    // Unit 9 is silent on the RS-485 side: a timeout, not a damaged frame.
    match l.read_registers(9, Function::Holding, 2, 1).await {
        Err(LinkError::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    // After the timeout the link reconnects and reads again.
    let w = l.read_registers(1, Function::Holding, 12, 1).await.unwrap();
    assert_eq!(w, vec![1500]);
    // An address the device refuses comes back as its exception.
    match l.read_registers(1, Function::Holding, 4000, 2).await {
        Err(LinkError::Exception { code: 2 }) => {}
        other => panic!("expected exception 2, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stale_answer_left_on_the_connection_is_never_taken_for_the_next_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A fake gateway that answers the first request twice: once correctly, then, before the next
    // request, a well-formed but stale copy (the same unit and function, other length).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let mut buf = [0u8; 8];
        let frame = |words: &[u16]| {
            let mut f = vec![1u8, 3, (2 * words.len()) as u8];
            for w in words {
                f.extend_from_slice(&w.to_be_bytes());
            }
            socer_drivers::transport::rtu::with_crc(f)
        };
        if tcp.read_exact(&mut buf).await.is_err() {
            return;
        }
        let _ = tcp.write_all(&frame(&[7])).await;
        let _ = tcp.write_all(&frame(&[9, 9])).await; // stale, arrives before the next request
        if tcp.read_exact(&mut buf).await.is_err() {
            return;
        }
        let _ = tcp.write_all(&frame(&[42])).await;
        let _ = tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let mut l = link(&addr);
    assert_eq!(
        l.read_registers(1, Function::Holding, 0, 1).await.unwrap(),
        vec![7]
    );
    // Give the stale frame time to arrive before the second request is sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        l.read_registers(1, Function::Holding, 1, 1).await.unwrap(),
        vec![42]
    );
}
