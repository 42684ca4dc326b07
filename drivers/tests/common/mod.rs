//! Small Modbus devices for the bus tests: a tokio-modbus TCP/RTU server over register images
//! built with `decode::encode`, and a hand-rolled RTU device on a pty that can also stay silent,
//! answer late or send garbage. Test support only: it never decides what a test asserts.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socer_drivers::decode::encode;
use socer_drivers::profile::*;
use socer_drivers::reading::Quantity;
use socer_drivers::transport::rtu::with_crc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_serial::SerialStream;

/// A small three-phase meter profile: f32 power and voltages, u32 energy in 0.01 kWh steps.
pub fn test_profile() -> Profile {
    let q = |name: Quantity, phase: Option<u8>, address: u16, value_type: ValueType, scale: f64| {
        QuantityMap {
            name,
            phase,
            function: None,
            address,
            value_type,
            word_order: None,
            byte_order: None,
            scale,
            scale_register: None,
            unit: None,
            sentinels: vec![],
            interval_s: None,
            plus: vec![],
            minus: vec![],
        }
    };
    Profile {
        id: "test-meter".into(),
        manufacturer: "Test".into(),
        model: "T3".into(),
        kind: DeviceKind::Meter,
        phases: 3,
        source: "test fixture".into(),
        verified: None,
        defaults: Defaults::of(Function::Input),
        unreadable: vec![],
        identify: vec![],
        quantities: vec![
            q(Quantity::PW, None, 0, ValueType::F32, 1.0),
            q(Quantity::VV, Some(1), 6, ValueType::F32, 1.0),
            q(Quantity::VV, Some(2), 8, ValueType::F32, 1.0),
            q(Quantity::EImpWh, None, 40, ValueType::U32, 10.0),
            q(Quantity::EExpWh, None, 42, ValueType::U32, 10.0),
        ],
    }
}

/// The register words of a profile holding the given canonical values.
pub fn image(
    profile: &Profile,
    values: &[(Quantity, Option<u8>, f64)],
) -> HashMap<(Function, u16), u16> {
    let mut img = HashMap::new();
    for (q, phase, v) in values {
        let map = profile
            .quantities
            .iter()
            .find(|m| m.name == *q && m.phase == *phase)
            .unwrap_or_else(|| panic!("profile has no {q:?} {phase:?}"));
        let f = map.function.unwrap_or(profile.defaults.function);
        for (i, w) in encode(*v, map, &profile.defaults).into_iter().enumerate() {
            img.insert((f, map.address + i as u16), w);
        }
    }
    img
}

/// What one unit id does with a request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answers from its register image (unknown registers read 0).
    Answer(HashMap<(Function, u16), u16>),
    /// Never answers.
    Silent,
    /// Answers every request with this exception code.
    Exception(u8),
    /// Answers with bytes that are not a valid frame (RTU device only).
    Garbage,
    /// Answers correctly, but only after this delay.
    Late(Duration, HashMap<(Function, u16), u16>),
    /// Answers with a valid frame one register short (RTU device only).
    Short,
}

/// A request a device received: unit, address, count, when.
pub type Logged = (u8, u16, u16, Instant);

/// The devices behind one bus, and a log of the requests each unit received.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    pub units: Arc<HashMap<u8, Behaviour>>,
    pub log: Arc<Mutex<Vec<Logged>>>,
    /// When each answer finished being written (hand-rolled RTU device only).
    pub answered: Arc<Mutex<Vec<Instant>>>,
}

impl Devices {
    pub fn new(units: Vec<(u8, Behaviour)>) -> Self {
        Devices {
            units: Arc::new(units.into_iter().collect()),
            log: Arc::default(),
            answered: Arc::default(),
        }
    }

    /// Instants at which `unit` received a request.
    pub fn requests_to(&self, unit: u8) -> Vec<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == unit)
            .map(|r| r.3)
            .collect()
    }

    fn record(&self, unit: u8, address: u16, count: u16) {
        self.log
            .lock()
            .unwrap()
            .push((unit, address, count, Instant::now()));
    }
}

fn words(img: &HashMap<(Function, u16), u16>, f: Function, address: u16, count: u16) -> Vec<u16> {
    (0..count)
        .map(|i| img.get(&(f, address.wrapping_add(i))).copied().unwrap_or(0))
        .collect()
}

impl tokio_modbus::server::Service for Devices {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let unit = req.slave;
        let (f, address, count) = match req.request {
            Request::ReadHoldingRegisters(a, c) => (Function::Holding, a, c),
            Request::ReadInputRegisters(a, c) => (Function::Input, a, c),
            _ => return Box::pin(async { Err(ExceptionCode::IllegalFunction) }),
        };
        self.record(unit, address, count);
        let respond = move |w: Vec<u16>| match f {
            Function::Holding => Response::ReadHoldingRegisters(w),
            Function::Input => Response::ReadInputRegisters(w),
        };
        match self.units.get(&unit).cloned() {
            None | Some(Behaviour::Silent) | Some(Behaviour::Garbage) | Some(Behaviour::Short) => {
                Box::pin(async { Ok(None) })
            }
            Some(Behaviour::Exception(code)) => {
                Box::pin(async move { Err(ExceptionCode::new(code)) })
            }
            Some(Behaviour::Answer(img)) => {
                let w = words(&img, f, address, count);
                Box::pin(async move { Ok(Some(respond(w))) })
            }
            Some(Behaviour::Late(delay, img)) => {
                let w = words(&img, f, address, count);
                Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    Ok(Some(respond(w)))
                })
            }
        }
    }
}

/// A tokio-modbus TCP server for the devices on loopback, and how many connections it accepted.
pub struct TcpServer {
    pub addr: std::net::SocketAddr,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Serve the devices over Modbus TCP (tokio-modbus server) on a free loopback port.
pub async fn tcp_server(devices: Devices) -> TcpServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_tcp(listener, devices)
}

/// Serve the devices on an already bound listener.
pub fn serve_tcp(listener: tokio::net::TcpListener, devices: Devices) -> TcpServer {
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let task = tokio::spawn(async move {
        let on_connected = move |stream, _addr| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let d = devices.clone();
            async move { Ok(Some((d, stream))) }
        };
        let _ = server.serve(&on_connected, |_e| {}).await;
    });
    TcpServer {
        addr,
        connections,
        task,
    }
}

/// A pty pair made by socat at two paths in a fresh temporary directory (a real device path, as a
/// site config names one). Killed on drop.
pub struct SocatPty {
    pub a: String,
    pub b: String,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl SocatPty {
    pub fn new() -> SocatPty {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("socer-bus-pty-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let child = std::process::Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("socat is needed for this test ({e}); run tools/install-test-deps")
            });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(a.exists() && b.exists()) {
            assert!(
                Instant::now() < deadline,
                "socat did not create the pty pair"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        SocatPty {
            a: a.display().to_string(),
            b: b.display().to_string(),
            child,
            dir,
        }
    }
}

impl Drop for SocatPty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serve the devices with tokio-modbus's RTU server on one end of a pty pair; returns the other.
pub fn rtu_server(devices: Devices) -> SerialStream {
    let (master, slave) = SerialStream::pair().expect("pty pair");
    tokio::spawn(async move {
        let server = tokio_modbus::server::rtu::Server::new(slave);
        let _ = server.serve_forever(devices).await;
    });
    master
}

/// A hand-rolled RTU device on one end of a pty pair (it can send garbage, which a real server
/// cannot be made to do); returns the master end.
pub fn rtu_device(devices: Devices) -> SerialStream {
    let (master, slave) = SerialStream::pair().expect("pty pair");
    let (mut rd, wr) = tokio::io::split(slave);
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 64];
        loop {
            let n = match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while buf.len() >= 8 {
                let frame: Vec<u8> = buf.drain(..8).collect();
                if with_crc(frame[..6].to_vec()) != frame {
                    buf.clear();
                    break;
                }
                let (unit, fc) = (frame[0], frame[1]);
                let address = u16::from_be_bytes([frame[2], frame[3]]);
                let count = u16::from_be_bytes([frame[4], frame[5]]);
                devices.record(unit, address, count);
                let f = if fc == 3 {
                    Function::Holding
                } else {
                    Function::Input
                };
                let answer = |img: &HashMap<(Function, u16), u16>| {
                    let mut out = vec![unit, fc, (count * 2) as u8];
                    for w in words(img, f, address, count) {
                        out.extend_from_slice(&w.to_be_bytes());
                    }
                    with_crc(out)
                };
                let reply = match devices.units.get(&unit) {
                    None | Some(Behaviour::Silent) => continue,
                    Some(Behaviour::Exception(code)) => with_crc(vec![unit, fc | 0x80, *code]),
                    Some(Behaviour::Garbage) => {
                        vec![unit, fc, 0x04, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00]
                    }
                    Some(Behaviour::Answer(img)) => answer(img),
                    Some(Behaviour::Short) => {
                        let mut out = vec![unit, fc, (count * 2 - 2) as u8];
                        out.resize(3 + usize::from(count * 2 - 2), 0x11);
                        with_crc(out)
                    }
                    Some(Behaviour::Late(delay, img)) => {
                        // Another device's lateness must not hold up the line: answer from a task.
                        let (delay, reply, wr) = (*delay, answer(img), wr.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = wr.lock().await.write_all(&reply).await;
                        });
                        continue;
                    }
                };
                if wr.lock().await.write_all(&reply).await.is_err() {
                    return;
                }
                devices.answered.lock().unwrap().push(Instant::now());
            }
        }
    });
    master
}

/// Every reading that arrives on `rx` within `window`.
pub async fn collect(
    rx: &mut tokio::sync::mpsc::Receiver<socer_drivers::Reading>,
    window: Duration,
) -> Vec<socer_drivers::Reading> {
    let end = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout_at(end, rx.recv()).await {
        out.push(r);
    }
    out
}
