//! The simulator over Modbus RTU on a pty pair: CRC-framed answers, silence for other units, the
//! line time of 9600 baud, faults, and survival of garbage on the line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socer_drivers::decode::decode;
use socer_drivers::sim::rtu::{crc_ok, serve_rtu, LineConfig};
use socer_drivers::sim::{Corruption, Faults, SimDevice};
use socer_drivers::transport::rtu::with_crc;
use socer_drivers::ManualClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialStream;

mod sim_support;
use sim_support::{device, profile, t0, HOUR};

const LINE: LineConfig = LineConfig {
    baud: 9600,
    parity: socer_drivers::sim::rtu::Parity::None,
    stop_bits: 1,
    turnaround: Duration::from_millis(5),
};

/// Start a simulator on one end of a pty pair; return the other end (the master's side).
fn serve(devices: Vec<(u8, SimDevice)>) -> SerialStream {
    let (master, slave) = SerialStream::pair().expect("a pty pair");
    let devices: BTreeMap<u8, SimDevice> = devices.into_iter().collect();
    tokio::spawn(serve_rtu(slave, Arc::new(devices), LINE));
    master
}

fn request(unit: u8, fc: u8, address: u16, count: u16) -> Vec<u8> {
    let mut body = vec![unit, fc];
    body.extend_from_slice(&address.to_be_bytes());
    body.extend_from_slice(&count.to_be_bytes());
    with_crc(body.to_vec())
}

/// Read what arrives until `quiet` passes without a byte (or `limit` in all).
async fn receive(port: &mut SerialStream, quiet: Duration, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    let mut wait = limit;
    while Instant::now() < deadline {
        match tokio::time::timeout(wait, port.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                out.extend_from_slice(&buf[..n]);
                wait = quiet;
            }
            _ => break,
        }
    }
    out
}

/// Send a frame and collect the answer, waiting up to `limit` for its first byte.
async fn exchange(port: &mut SerialStream, frame: &[u8], limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    port.write_all(frame).await.unwrap();
    let answer = receive(port, Duration::from_millis(30), limit).await;
    (answer, started.elapsed())
}

/// A request that expects an answer: a loaded machine gets time to give it.
async fn ask(port: &mut SerialStream, frame: &[u8]) -> (Vec<u8>, Duration) {
    exchange(port, frame, Duration::from_secs(2)).await
}

/// A frame that must get no answer: 300 ms is over twice the longest answer time at 9600 baud.
async fn no_answer(port: &mut SerialStream, frame: &[u8]) -> Vec<u8> {
    exchange(port, frame, Duration::from_millis(300)).await.0
}

#[tokio::test]
async fn rtu_answers_with_a_crc_frame_whose_words_decode_to_the_state() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 1500.0, 0.0);
    let mut port = serve(vec![(1, dev.clone())]);
    clock.advance(HOUR);
    let (answer, _) = ask(&mut port, &request(1, 4, 0x0C, 2)).await;
    assert!(crc_ok(&answer), "{answer:02x?}");
    assert_eq!(&answer[..3], &[1, 4, 4]);
    assert_eq!(answer.len(), 9);
    let words: Vec<u16> = answer[3..7]
        .chunks(2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .collect();
    let p = profile();
    assert_eq!(decode(&words, &p.quantities[2], &p.defaults), Ok(1500.0));
    let (answer, _) = ask(&mut port, &request(1, 4, 0x48, 2)).await;
    let words: Vec<u16> = answer[3..7]
        .chunks(2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(decode(&words, &p.quantities[5], &p.defaults), Ok(1500.0));
}

#[tokio::test]
async fn rtu_exceptions_are_crc_framed() {
    let clock = ManualClock::new(t0());
    let mut port = serve(vec![(1, device(&clock, 1.0, 0.0))]);
    let (answer, _) = ask(&mut port, &request(1, 4, 0x20, 1)).await;
    assert_eq!(answer, with_crc(vec![1, 0x84, 2]));
    let (answer, _) = ask(&mut port, &request(1, 1, 0, 1)).await;
    assert_eq!(answer, with_crc(vec![1, 0x81, 1]));
}

#[tokio::test]
async fn rtu_stays_silent_for_units_it_does_not_serve_and_for_broadcasts() {
    let clock = ManualClock::new(t0());
    let mut port = serve(vec![
        (1, device(&clock, 1.0, 0.0)),
        (5, device(&clock, 2.0, 0.0)),
    ]);
    for unit in [0u8, 2, 4, 247] {
        let answer = no_answer(&mut port, &request(unit, 4, 0x0C, 2)).await;
        assert!(answer.is_empty(), "unit {unit}: {answer:02x?}");
    }
    let (answer, _) = ask(&mut port, &request(5, 4, 0x0C, 2)).await;
    assert_eq!(&answer[..2], &[5, 4]);
}

#[tokio::test]
async fn rtu_response_takes_at_least_the_line_time_at_9600_baud() {
    let clock = ManualClock::new(t0());
    let mut port = serve(vec![(1, device(&clock, 1.0, 0.0))]);
    // 8 request bytes + 85 response bytes (3 + 2×40 + 2): 93 × 10 bits / 9600 = 96.9 ms, + 5 ms.
    let (answer, elapsed) = ask(&mut port, &request(1, 4, 0x22, 40)).await;
    assert_eq!(answer.len(), 85);
    let line = LINE.response_time(8, 85);
    assert_eq!(
        line,
        Duration::from_nanos(93 * 10 * 1_000_000_000 / 9600) + Duration::from_millis(5)
    );
    assert!(
        elapsed >= line,
        "answered after {elapsed:?}, the line needs {line:?}"
    );
    assert!(
        elapsed < line + Duration::from_millis(300),
        "answered after {elapsed:?}"
    );
}

#[tokio::test]
async fn rtu_survives_garbage_and_answers_the_next_request() {
    let clock = ManualClock::new(t0());
    let mut port = serve(vec![(1, device(&clock, 42.0, 0.0))]);
    let mut noise = socer_drivers::sim::Rng::new(1);
    for round in 0..3 {
        let junk: Vec<u8> = (0..(37 * (round + 1)))
            .map(|_| noise.next_u64() as u8)
            .collect();
        let answer = no_answer(&mut port, &junk).await;
        assert!(
            answer.is_empty() || crc_ok(&answer),
            "noise got a damaged answer: {answer:02x?}"
        );
        // A frame too short, and one with a wrong CRC: no answer either.
        assert!(no_answer(&mut port, &[1, 4, 0]).await.is_empty());
        let mut bad = request(1, 4, 0x0C, 2);
        bad[7] ^= 1;
        assert!(no_answer(&mut port, &bad).await.is_empty());
        let (answer, _) = ask(&mut port, &request(1, 4, 0x0C, 2)).await;
        assert!(
            crc_ok(&answer) && answer[1] == 4,
            "round {round}: {answer:02x?}"
        );
    }
    // Noise immediately followed by a request, without the silence between them.
    let mut glued = vec![0x55, 0xAA, 0x13];
    glued.extend_from_slice(&request(1, 4, 0x0C, 2));
    let (answer, _) = ask(&mut port, &glued).await;
    assert!(crc_ok(&answer) && answer[..3] == [1, 4, 4], "{answer:02x?}");
}

#[tokio::test]
async fn rtu_faults_behave_as_specified() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 1.0, 0.0);
    let mut port = serve(vec![(1, dev.clone())]);
    let req = request(1, 4, 0x0C, 2);

    dev.set_faults(Faults {
        corrupt: Some(Corruption::BadCrc),
        ..Faults::default()
    });
    let (answer, _) = ask(&mut port, &req).await;
    assert_eq!(answer.len(), 9);
    assert_eq!(&answer[..3], &[1, 4, 4]);
    assert!(!crc_ok(&answer), "{answer:02x?}");

    dev.set_faults(Faults {
        corrupt: Some(Corruption::Truncated),
        ..Faults::default()
    });
    let (answer, _) = ask(&mut port, &req).await;
    assert_eq!(answer.len(), 4);
    assert!(!crc_ok(&answer));

    dev.set_faults(Faults {
        silent: true,
        ..Faults::default()
    });
    assert!(no_answer(&mut port, &req).await.is_empty());

    dev.set_faults(Faults {
        exception: Some(6),
        ..Faults::default()
    });
    assert_eq!(ask(&mut port, &req).await.0, with_crc(vec![1, 0x84, 6]));

    dev.set_faults(Faults {
        latency: Duration::from_millis(200),
        ..Faults::default()
    });
    let (answer, elapsed) = ask(&mut port, &req).await;
    assert!(crc_ok(&answer));
    assert!(
        elapsed >= LINE.response_time(8, 9) + Duration::from_millis(200),
        "{elapsed:?}"
    );

    dev.set_faults(Faults::default());
    let (answer, elapsed) = ask(&mut port, &req).await;
    assert!(crc_ok(&answer));
    assert!(elapsed < Duration::from_millis(200), "healed: {elapsed:?}");
}

#[tokio::test]
async fn tokio_modbus_rtu_client_reads_the_simulator() {
    use tokio_modbus::prelude::*;
    let clock = ManualClock::new(t0());
    let port = serve(vec![(3, device(&clock, -750.0, 0.0))]);
    let mut ctx = rtu::attach_slave(port, Slave(3));
    let words = tokio::time::timeout(Duration::from_secs(2), ctx.read_holding_registers(0x10, 2))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let p = profile();
    assert_eq!(decode(&words, &p.quantities[7], &p.defaults), Ok(-750.0));
}
