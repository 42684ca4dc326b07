//! The simulator over Modbus TCP, read by tokio-modbus's client: values decode to the device
//! state, units are routed, and every fault shows as specified.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socer_drivers::decode::decode;
use socer_drivers::sim::server::serve_tcp;
use socer_drivers::sim::{Corruption, Faults, SimDevice};
use socer_drivers::ManualClock;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;

mod sim_support;
use sim_support::{device, profile, t0, HOUR};

const WAIT: Duration = Duration::from_secs(2);

async fn serve(devices: Vec<(u8, SimDevice)>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let devices: BTreeMap<u8, SimDevice> = devices.into_iter().collect();
    tokio::spawn(serve_tcp(listener, Arc::new(devices)));
    addr
}

async fn client(addr: SocketAddr, unit: u8) -> Context {
    tcp::connect_slave(addr, Slave(unit)).await.unwrap()
}

/// Decode a quantity of the test profile from a TCP read.
async fn read_quantity(ctx: &mut Context, index: usize) -> f64 {
    let p = profile();
    let q = &p.quantities[index];
    let words = tokio::time::timeout(
        WAIT,
        ctx.read_input_registers(q.address, q.value_type.words()),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    decode(&words, q, &p.defaults).unwrap()
}

/// Energy travels as f32 kWh: 7 significant digits.
fn assert_f32_close(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= want.abs() * 1e-7 + 1e-3,
        "{got} vs {want}"
    );
}

#[tokio::test]
async fn a_tcp_client_reads_values_that_decode_to_the_device_state() {
    let clock = ManualClock::new(t0());
    let meter = device(&clock, 2300.0, 1_000_000.0);
    let pv = device(&clock, -4100.0, 0.0);
    let addr = serve(vec![(1, meter.clone()), (2, pv.clone())]).await;
    clock.advance(HOUR);

    let mut ctx = client(addr, 1).await;
    let p = profile();
    let state = meter.values();
    for (i, q) in p
        .quantities
        .iter()
        .enumerate()
        .filter(|(_, q)| q.function.is_none())
    {
        let got = read_quantity(&mut ctx, i).await;
        let want = state.get(q.name, q.phase.unwrap_or(1)).unwrap();
        assert!(
            (got - want).abs() <= want.abs() * 1e-7,
            "{:?}: {got} vs {want}",
            q.name
        );
    }
    // The holding-register power of the same device, low word first, 0.1 W.
    let words = ctx.read_holding_registers(0x10, 2).await.unwrap().unwrap();
    assert_eq!(
        decode(&words, &p.quantities[7], &p.defaults).unwrap(),
        2300.0
    );

    // Unit 2 is the PV inverter's meter: exporting.
    ctx.set_slave(Slave(2));
    assert_eq!(read_quantity(&mut ctx, 2).await, -4100.0);
    // One hour at 4.1 kW exported.
    assert_f32_close(read_quantity(&mut ctx, 6).await, 4100.0);
    assert_eq!(read_quantity(&mut ctx, 5).await, 0.0);
}

#[tokio::test]
async fn exceptions_reach_the_client_and_unknown_units_get_the_gateway_exception() {
    let clock = ManualClock::new(t0());
    let addr = serve(vec![
        (1, device(&clock, 100.0, 0.0)),
        (3, device(&clock, 100.0, 0.0)),
    ])
    .await;
    let mut ctx = client(addr, 1).await;
    assert_eq!(
        ctx.read_input_registers(0x20, 2).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_coils(0, 1).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    ctx.set_slave(Slave(2));
    assert_eq!(
        ctx.read_input_registers(0, 2).await.unwrap(),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    // The connection survives exceptions: unit 3 still answers.
    ctx.set_slave(Slave(3));
    assert_eq!(
        ctx.read_input_registers(0x0C, 2)
            .await
            .unwrap()
            .map(|w| w.len()),
        Ok(2)
    );
}

#[tokio::test]
async fn a_lone_device_answers_unit_255_as_tcp_clients_address_it() {
    let clock = ManualClock::new(t0());
    let addr = serve(vec![(7, device(&clock, 100.0, 0.0))]).await;
    let mut ctx = client(addr, 255).await;
    assert_eq!(read_quantity(&mut ctx, 2).await, 100.0);
}

#[tokio::test]
async fn latency_fault_delays_the_answer() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 100.0, 0.0);
    let addr = serve(vec![(1, dev.clone())]).await;
    let mut ctx = client(addr, 1).await;
    dev.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let started = Instant::now();
    assert_eq!(read_quantity(&mut ctx, 2).await, 100.0);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_silent_device_times_out_and_answers_again_once_healed() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 100.0, 0.0);
    let addr = serve(vec![(1, dev.clone())]).await;
    dev.set_faults(Faults {
        silent: true,
        ..Faults::default()
    });
    let mut ctx = client(addr, 1).await;
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        ctx.read_input_registers(0x0C, 2),
    )
    .await;
    assert!(r.is_err(), "a silent device gives no answer: {r:?}");
    dev.set_faults(Faults::default());
    let mut ctx = client(addr, 1).await;
    assert_eq!(read_quantity(&mut ctx, 2).await, 100.0);
}

#[tokio::test]
async fn exception_fault_answers_that_code() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 100.0, 0.0);
    let addr = serve(vec![(1, dev.clone())]).await;
    dev.set_faults(Faults {
        exception: Some(4),
        ..Faults::default()
    });
    let mut ctx = client(addr, 1).await;
    assert_eq!(
        ctx.read_input_registers(0x0C, 2).await.unwrap(),
        Err(ExceptionCode::ServerDeviceFailure)
    );
    dev.set_faults(Faults {
        exception: Some(6),
        ..Faults::default()
    });
    assert_eq!(
        ctx.read_input_registers(0x0C, 2).await.unwrap(),
        Err(ExceptionCode::ServerDeviceBusy)
    );
}

#[tokio::test]
async fn corrupted_frames_are_rejected_by_the_client() {
    for corruption in [Corruption::BadCrc, Corruption::Truncated] {
        let clock = ManualClock::new(t0());
        let dev = device(&clock, 100.0, 0.0);
        let addr = serve(vec![(1, dev.clone())]).await;
        dev.set_faults(Faults {
            corrupt: Some(corruption),
            ..Faults::default()
        });
        let mut ctx = client(addr, 1).await;
        let r = tokio::time::timeout(
            Duration::from_millis(500),
            ctx.read_input_registers(0x0C, 2),
        )
        .await;
        assert!(
            !matches!(r, Ok(Ok(Ok(_)))),
            "{corruption:?} must not yield registers: {r:?}"
        );
    }
}

#[tokio::test]
async fn frozen_values_stay_put_while_time_passes_and_resume_when_thawed() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 1000.0, 0.0);
    let addr = serve(vec![(1, dev.clone())]).await;
    let mut ctx = client(addr, 1).await;
    clock.advance(HOUR);
    dev.set_faults(Faults {
        frozen: true,
        ..Faults::default()
    });
    clock.advance(HOUR);
    assert_f32_close(read_quantity(&mut ctx, 5).await, 1000.0);
    dev.set_faults(Faults::default());
    // The meter kept counting underneath.
    assert_f32_close(read_quantity(&mut ctx, 5).await, 2000.0);
}

#[tokio::test]
async fn counter_reset_sends_the_counters_back_to_zero() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 1000.0, 50_000.0);
    let addr = serve(vec![(1, dev.clone())]).await;
    let mut ctx = client(addr, 1).await;
    clock.advance(HOUR);
    assert_f32_close(read_quantity(&mut ctx, 5).await, 51_000.0);
    dev.reset_counters();
    assert_eq!(read_quantity(&mut ctx, 5).await, 0.0);
    clock.advance(Duration::from_secs(360));
    assert_f32_close(read_quantity(&mut ctx, 5).await, 100.0);
}

#[tokio::test]
async fn a_bad_mbap_header_closes_that_connection_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let clock = ManualClock::new(t0());
    let addr = serve(vec![(1, device(&clock, 100.0, 0.0))]).await;
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(WAIT, raw.read(&mut buf))
        .await
        .unwrap();
    // Closed (end of stream, or reset because our unread bytes were discarded).
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "the server hangs up on a non-Modbus peer: {r:?}"
    );
    let mut ctx = client(addr, 1).await;
    assert_eq!(read_quantity(&mut ctx, 2).await, 100.0);
}
