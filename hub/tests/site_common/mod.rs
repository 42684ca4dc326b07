//! Test peers for the site agent: a real Mosquitto broker on a free loopback port, an "acker" that
//! verifies batches and acknowledges them like the central hub does, and the real `socer site`
//! binary with a simulated bus.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use socer::wire::{self, Ack, Batch, Topics, WireReading};

use crate::common::{free_port, start_mosquitto, wait_port, Reaped};

pub const KEY: &str = "5f0c3a9e1d2b4c6a8e7f90123456789abcdef0123456789abcdef0123456789a";
pub const SITE: &str = "t1";
pub const COMMUNITY: &str = "test";

/// A Mosquitto open to anonymous clients; killed when dropped.
pub struct Broker {
    _process: Reaped,
    pub port: u16,
}

impl Broker {
    pub fn start(dir: &Path, port: u16) -> Broker {
        let conf = "allow_anonymous true\nmax_inflight_messages 0\n";
        Broker {
            _process: start_mosquitto(dir, port, conf),
            port,
        }
    }
}

/// A broker on `port` and the agent of a default `SiteSpec` uplinked to it, its web API up.
pub fn broker_and_default_agent(dir: &Path, port: u16) -> (Broker, Agent) {
    let broker = Broker::start(dir, port);
    let spec = SiteSpec::new(dir, port);
    let cfg = spec.write(dir);
    let agent = Agent::start(&cfg, spec.web_port, &dir.join("agent.log"));
    agent.wait_web();
    (broker, agent)
}

/// What the acker has seen.
#[derive(Default)]
pub struct Seen {
    /// Every seq received, with its reading (the first copy).
    pub readings: BTreeMap<u64, WireReading>,
    /// Seqs in order of first arrival.
    pub arrival: Vec<u64>,
    /// A seq that arrived again with different content (must never happen).
    pub conflicts: Vec<u64>,
    pub duplicates: u64,
    pub contiguous: u64,
    pub dropped_through: u64,
    /// Seqs that arrived at or below a dropped-through mark already announced (in an earlier
    /// batch or their own): the site sent what it had said it dropped (must never happen).
    pub after_drop: Vec<u64>,
    pub rejected: u64,
}

/// Subscribes to the site's readings, verifies each batch, acknowledges the highest contiguous seq.
pub struct Acker {
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Acker {
    pub fn start(port: u16) -> Acker {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut o = MqttOptions::new(format!("acker-{port}"), "127.0.0.1", port);
            o.set_max_packet_size(1 << 20, 1 << 20);
            o.set_keep_alive(Duration::from_secs(10));
            let (client, mut el) = AsyncClient::new(o, 1024);
            let topics = Topics::new(COMMUNITY);
            let readings_topic = topics.readings(SITE);
            let ack_topic = topics.ack(SITE);
            let key = hex::decode(KEY).unwrap_or_default();
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client
                            .subscribe(readings_topic.clone(), QoS::AtLeastOnce)
                            .await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == readings_topic => {
                        let batch: Result<Batch, _> = wire::open_unverified(&p.payload)
                            .and_then(|env| wire::open(&key, SITE, &readings_topic, &env));
                        let ack = {
                            let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
                            match batch {
                                Err(_) => {
                                    g.rejected += 1;
                                    None
                                }
                                Ok(b) => {
                                    if let Some(d) = b.dropped_through {
                                        g.dropped_through = g.dropped_through.max(d);
                                    }
                                    for r in b.readings {
                                        if r.seq <= g.dropped_through {
                                            g.after_drop.push(r.seq);
                                        }
                                        match g.readings.get(&r.seq) {
                                            Some(old) if *old != r => g.conflicts.push(r.seq),
                                            Some(_) => g.duplicates += 1,
                                            None => {
                                                g.arrival.push(r.seq);
                                                g.readings.insert(r.seq, r);
                                            }
                                        }
                                    }
                                    let mut c = g.contiguous.max(g.dropped_through);
                                    while g.readings.contains_key(&(c + 1)) {
                                        c += 1;
                                    }
                                    g.contiguous = c;
                                    Some(c)
                                }
                            }
                        };
                        if let Some(seq) = ack {
                            let bytes = wire::seal(
                                &key,
                                SITE,
                                &ack_topic,
                                &Ack {
                                    seq,
                                    resend_from: None,
                                },
                            );
                            let _ = client
                                .publish(ack_topic.clone(), QoS::AtLeastOnce, true, bytes)
                                .await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Acker { seen, task }
    }

    pub fn contiguous(&self) -> u64 {
        self.seen.lock().map(|g| g.contiguous).unwrap_or(0)
    }

    pub fn received(&self) -> usize {
        self.seen.lock().map(|g| g.readings.len()).unwrap_or(0)
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Verifies batches and acknowledges the highest contiguous seq, keeping only what that needs.
pub fn lean_acker(port: u16, contiguous: Arc<AtomicU64>) {
    tokio::spawn(async move {
        let mut o = MqttOptions::new("bench-acker", "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 1024);
        let topics = Topics::new(COMMUNITY);
        let (rt, at) = (topics.readings(SITE), topics.ack(SITE));
        let key = hex::decode(KEY).unwrap_or_default();
        let mut ahead = BTreeSet::new();
        let mut c = 0u64;
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
                    for r in b.readings {
                        if r.seq > c {
                            ahead.insert(r.seq);
                        }
                    }
                    while ahead.remove(&(c + 1)) {
                        c += 1;
                    }
                    contiguous.store(c, Ordering::Relaxed);
                    let bytes = wire::seal(
                        &key,
                        SITE,
                        &at,
                        &Ack {
                            seq: c,
                            resend_from: None,
                        },
                    );
                    let _ = client
                        .publish(at.clone(), QoS::AtLeastOnce, true, bytes)
                        .await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
}

/// Options of a test site.
pub struct SiteSpec {
    pub broker_port: u16,
    pub web_port: u16,
    pub meters: usize,
    pub interval: &'static str,
    pub dead_units: Vec<u32>,
    pub budget: &'static str,
    pub storage: PathBuf,
    pub batch_readings: usize,
}

impl SiteSpec {
    pub fn new(dir: &Path, broker_port: u16) -> SiteSpec {
        SiteSpec {
            broker_port,
            web_port: free_port(),
            meters: 4,
            interval: "100ms",
            dead_units: vec![],
            budget: "100MB",
            storage: dir.join("data"),
            batch_readings: 200,
        }
    }

    /// Write the config and key into `dir`; returns the config path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::write(dir.join("site.key"), KEY).expect("write key");
        let mut t = format!(
            "[site]\nid = \"{SITE}\"\ncommunity = \"{COMMUNITY}\"\nname = \"test site\"\nclock = \"trust\"\n\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nkey_file = \"site.key\"\nbatch_readings = {}\n\n\
             [storage]\npath = \"{}\"\nbudget = \"{}\"\n\n[web]\nlisten = \"127.0.0.1:{}\"\n\n\
             [[bus]]\nname = \"sim\"\nsimulated = true\ndead_units = {:?}\ntimeout_ms = 200\n",
            self.broker_port,
            self.batch_readings,
            self.storage.display(),
            self.budget,
            self.web_port,
            self.dead_units
        );
        for i in 1..=self.meters {
            let role = if i == 2 {
                "production"
            } else if i == 1 {
                "grid"
            } else {
                "consumption"
            };
            t += &format!(
                "\n[[meter]]\nname = \"m{i}\"\nbus = \"sim\"\nunit = {i}\nmodel = \"eastron-sdm630\"\nrole = \"{role}\"\ninterval = \"{}\"\n",
                self.interval
            );
        }
        let p = dir.join("site.toml");
        std::fs::write(&p, t).expect("write config");
        p
    }
}

/// The real agent binary.
pub struct Agent {
    pub child: Child,
    pub web_port: u16,
}

impl Agent {
    pub fn start(config: &Path, web_port: u16, log: &Path) -> Agent {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_socer"))
            .args(["site", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start socer site");
        Agent { child, web_port }
    }

    pub fn wait_web(&self) {
        assert!(
            wait_port(self.web_port, Duration::from_secs(10)),
            "agent web port {} never opened",
            self.web_port
        );
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM; returns how long the agent took to exit and whether it exited cleanly.
    pub fn terminate(&mut self) -> (Duration, bool) {
        let t = Instant::now();
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait();
        (t.elapsed(), status.map(|s| s.success()).unwrap_or(false))
    }

    pub fn get(&self, path: &str) -> Option<String> {
        http_get(self.web_port, path)
    }

    pub fn health(&self) -> Option<serde_json::Value> {
        self.get("/api/v1/health")
            .and_then(|b| serde_json::from_str(&b).ok())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET; returns the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.lines()
        .next()
        .is_some_and(|l| l.contains(" 200 "))
        .then(|| body.to_string())
}

/// Wait for a condition, polling; false on timeout.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

/// Seqs still in an outbox database, with the acknowledged seq recorded there.
pub fn outbox_rows(storage: &Path) -> (Vec<u64>, u64) {
    let c = rusqlite::Connection::open(storage.join("outbox.sqlite")).expect("open outbox");
    let mut st = c
        .prepare("SELECT seq FROM readings ORDER BY seq")
        .expect("query");
    let seqs = st
        .query_map([], |r| r.get::<_, i64>(0))
        .expect("rows")
        .map(|r| r.map(|v| v as u64).unwrap_or(0))
        .collect();
    let acked: i64 = c
        .query_row(
            "SELECT coalesce((SELECT v FROM meta WHERE k = 'acked'), 0)",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    (seqs, acked as u64)
}
