//! `socer loadgen`: N sites × M meters × one reading per meter per second, as sealed batches through
//! the embedded broker of a `socer central` it starts; prints the sustained ingest rate, the
//! reading→stored latency (end-to-end: until the hub's ack covers the reading), hub CPU and RSS.
//! Its sites behave like real ones: they keep every batch until the hub's ack covers it and send
//! again from the ack when the hub asks (a gap) or the ack timeout passes; at the end it waits for
//! the backlog to drain and reports the batches re-sent and the readings never acknowledged.
//!
//! A measuring tool: it never runs against a real community's hub or keys.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use rand::RngCore;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::wire::{self, Ack, Batch, Topics, WireReading};
use socer_drivers::reading::{Quality, Values};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated sites (one MQTT connection each).
    #[arg(long, default_value_t = 1000)]
    pub sites: usize,
    /// Meters per site.
    #[arg(long, default_value_t = 10)]
    pub meters: usize,
    /// Seconds between a site's batches (each holds meters × seconds readings).
    #[arg(long, default_value_t = 1)]
    pub batch_seconds: u64,
    /// Warm-up before measuring, seconds.
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// Measuring window, seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Keep the generated config and database in DIR (default: a new temp dir), like `socer demo
    /// --data`. (`--dir` is the old spelling, still taken.)
    #[arg(long = "data", alias = "dir", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// A site sends again from its last ack when no ack came for this long, seconds (as a real
    /// site does).
    #[arg(long, default_value_t = 30)]
    pub ack_timeout: u64,
    /// After the window, how long to wait for every reading to be acknowledged, seconds.
    #[arg(long, default_value_t = 40)]
    pub drain: u64,
    /// Each site also publishes this many forged batches per batch (sealed with a key that is
    /// not its own): the hub must refuse and count every one (`bad_mac`) and store none.
    #[arg(long, default_value_t = 0)]
    pub forged: u32,
    /// Run the load through a 3-node NATS cluster (JetStream + MQTT) that loadgen starts on
    /// loopback instead of the hub's embedded broker: the NATS files come from the writer of
    /// `socer central --nats-files`, the hub takes the three nodes as its `[broker] urls`
    /// (`subscribe_qos = 0`) and the sites are spread round-robin over the nodes. Needs
    /// `nats-server` on PATH or at /usr/sbin/nats-server.
    #[arg(long)]
    pub nats_cluster: bool,
}

const COMMUNITY: &str = "loadgen";

struct SiteSim {
    id: String,
    /// The broker user it logs in as (the site id on the embedded broker, `{site}@{community}`
    /// on NATS).
    user: String,
    key: Vec<u8>,
    password: String,
}

/// What is in flight: per site, (last seq of a batch, when its readings were taken, how many).
type Pending = Mutex<HashMap<String, VecDeque<(u64, Instant, u64)>>>;

struct Stats {
    pending: Pending,
    latencies_ms: Mutex<Vec<u32>>,
    measuring: std::sync::atomic::AtomicBool,
    /// Sites stop producing readings (the drain after the window).
    stopped: std::sync::atomic::AtomicBool,
    readings_sent: AtomicU64,
    readings_acked: AtomicU64,
    /// Batches published again, and the re-sends (of a site's whole backlog) that caused it: asked
    /// by the hub after a gap, or after the ack timeout.
    batches_resent: AtomicU64,
    resends_asked: AtomicU64,
    resends_timeout: AtomicU64,
    /// Batches sealed with a wrong key (`--forged`).
    forged_sent: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.sites > 0 && args.meters > 0 && args.batch_seconds > 0,
        "sites, meters and batch-seconds must be > 0"
    );
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile_dir()?;
            tmp.clone()
        }
    };
    let nats_server = if args.nats_cluster {
        Some(find_nats_server().context(
            "--nats-cluster needs nats-server (on PATH or /usr/sbin/nats-server; Debian: apt-get install nats-server)",
        )?)
    } else {
        None
    };
    let nodes = if args.nats_cluster {
        Some(loopback_nodes()?)
    } else {
        None
    };
    let broker = match &nodes {
        Some(nodes) => Broker::Nats(nodes.iter().map(|n| n.mqtt_port).collect()),
        None => Broker::Embedded(free_port()?),
    };
    let web_port = free_port()?;
    let sites: Vec<SiteSim> = (0..args.sites)
        .map(|i| {
            let id = format!("site-{i:04}");
            SiteSim {
                user: match broker {
                    Broker::Embedded(_) => id.clone(),
                    Broker::Nats(_) => crate::central::nats::site_user(COMMUNITY, &id),
                },
                id,
                key: random_bytes(32),
                password: hex::encode(random_bytes(8)),
            }
        })
        .collect();
    let hub_password = hex::encode(random_bytes(8));
    let hub_user = broker.hub_user();
    let config = dir.join("central.toml");
    std::fs::write(
        &config,
        config_text(&dir, &broker, web_port, &hub_password, &sites, args.meters),
    )?;
    // The cluster (stopped when `_cluster` drops: at the end and on every early return).
    let _cluster = match (&nodes, &nats_server) {
        (Some(nodes), Some(bin)) => Some(start_cluster(bin, &config, &dir, nodes).await?),
        _ => None,
    };

    let exe = std::env::current_exe().context("cannot find the socer binary")?;
    let mut hub = std::process::Command::new(exe)
        .args(["central", "--config"])
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start `socer central`")?;
    let hub_pid = hub.id();
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], web_port));
    let up = wait_for(Duration::from_secs(20), || {
        http_get(web, "/api/v1/health").is_some_and(|(s, _)| s == 200)
    })
    .await;
    if !up {
        let _ = hub.kill();
        let _ = hub.wait();
        anyhow::bail!("the hub did not come up (health) within 20 s");
    }
    if let Broker::Nats(_) = broker {
        // An external broker: the hub answers health before it is connected.
        let connected = wait_for(Duration::from_secs(30), || {
            http_get(web, "/api/v1/health")
                .is_some_and(|(_, b)| b.contains("\"broker_connected\":true"))
        })
        .await;
        if !connected {
            let _ = hub.kill();
            let _ = hub.wait();
            anyhow::bail!("the hub did not connect to the NATS cluster within 30 s");
        }
    }
    eprintln!(
        "hub pid {hub_pid} up: {}, web {web}; {} sites × {} meters, batch every {} s",
        broker.describe(),
        args.sites,
        args.meters,
        args.batch_seconds
    );

    let stats = Arc::new(Stats {
        pending: Mutex::new(HashMap::new()),
        latencies_ms: Mutex::new(Vec::new()),
        measuring: false.into(),
        stopped: false.into(),
        readings_sent: AtomicU64::new(0),
        readings_acked: AtomicU64::new(0),
        batches_resent: AtomicU64::new(0),
        resends_asked: AtomicU64::new(0),
        resends_timeout: AtomicU64::new(0),
        forged_sent: AtomicU64::new(0),
    });
    let keys: HashMap<String, Vec<u8>> = sites
        .iter()
        .map(|s| (s.id.clone(), s.key.clone()))
        .collect();
    let mut ack_tx = HashMap::new();
    let mut ack_rx = HashMap::new();
    for s in &sites {
        let (tx, rx) = tokio::sync::watch::channel(Ack::default());
        ack_tx.insert(s.id.clone(), tx);
        ack_rx.insert(s.id.clone(), rx);
    }
    observe_acks(
        broker.port(0),
        &hub_user,
        &hub_password,
        broker.subscribe_qos(),
        keys,
        ack_tx,
        stats.clone(),
    )
    .await;

    let t0 = Instant::now();
    let n = sites.len();
    for (i, s) in sites.into_iter().enumerate() {
        let offset = Duration::from_millis((i as u64 * 1000 * args.batch_seconds) / n as u64);
        let Some(acks) = ack_rx.remove(&s.id) else {
            continue;
        };
        tokio::spawn(site_task(
            s,
            broker.port(i),
            SiteLoad {
                meters: args.meters,
                batch_seconds: args.batch_seconds,
                offset,
                ack_timeout: Duration::from_secs(args.ack_timeout.max(1)),
                forged: args.forged,
            },
            acks,
            stats.clone(),
        ));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(args.warmup).saturating_sub(t0.elapsed())).await;

    // Measure.
    let stored0 = stored_total(web).unwrap_or(0.0);
    let cpu0 = proc_cpu_ticks(hub_pid).unwrap_or(0);
    let self0 = proc_cpu_ticks(std::process::id()).unwrap_or(0);
    let sent0 = stats.readings_sent.load(Ordering::Relaxed);
    let acked0 = stats.readings_acked.load(Ordering::Relaxed);
    stats.measuring.store(true, Ordering::Relaxed);
    let m0 = Instant::now();
    let mut rss_max_kib = 0u64;
    let mut backlog_samples = Vec::new();
    while m0.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_max_kib = rss_max_kib.max(proc_rss_kib(hub_pid).unwrap_or(0));
        let sent = stats.readings_sent.load(Ordering::Relaxed);
        let acked = stats.readings_acked.load(Ordering::Relaxed);
        backlog_samples.push(sent.saturating_sub(acked));
    }
    stats.measuring.store(false, Ordering::Relaxed);
    let elapsed = m0.elapsed().as_secs_f64();
    let stored1 = stored_total(web).unwrap_or(0.0);
    let cpu1 = proc_cpu_ticks(hub_pid).unwrap_or(0);
    let self1 = proc_cpu_ticks(std::process::id()).unwrap_or(0);
    let sent = stats.readings_sent.load(Ordering::Relaxed) - sent0;
    let acked = stats.readings_acked.load(Ordering::Relaxed) - acked0;
    let ticks = clock_ticks();
    let mut lat = stats
        .latencies_ms
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    // Drain: no new readings; wait until every reading sent is acknowledged (or give up).
    stats.stopped.store(true, Ordering::Relaxed);
    let d0 = Instant::now();
    let all_acked = || {
        stats.readings_acked.load(Ordering::Relaxed) >= stats.readings_sent.load(Ordering::Relaxed)
    };
    while !all_acked() && d0.elapsed() < Duration::from_secs(args.drain) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained_s = d0.elapsed().as_secs_f64();
    let total_sent = stats.readings_sent.load(Ordering::Relaxed);
    let lost = total_sent.saturating_sub(stats.readings_acked.load(Ordering::Relaxed));
    let third = backlog_samples.len() / 3;
    let early: f64 = mean(&backlog_samples[..third.max(1).min(backlog_samples.len())]);
    let late: f64 = mean(&backlog_samples[backlog_samples.len().saturating_sub(third.max(1))..]);

    println!(
        "socer loadgen: {} sites × {} meters, 1 reading/meter/s, batch every {} s",
        n, args.meters, args.batch_seconds
    );
    println!(
        "  offered            {:>10.0} readings/s",
        sent as f64 / elapsed
    );
    println!(
        "  stored (hub)       {:>10.0} readings/s",
        (stored1 - stored0) / elapsed
    );
    println!(
        "  acked (end to end) {:>10.0} readings/s",
        acked as f64 / elapsed
    );
    println!(
        "  unacked backlog    {:>10.0} readings (first third of window) → {:.0} (last third)",
        early, late
    );
    println!(
        "  latency reading→stored+acked  p50 {} ms  p99 {} ms  max {} ms  ({} batches)",
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(0),
        lat.len()
    );
    println!(
        "  re-sent batches    {:>10} (re-sends: {} asked by the hub after a gap, {} after the {} s ack timeout)",
        stats.batches_resent.load(Ordering::Relaxed),
        stats.resends_asked.load(Ordering::Relaxed),
        stats.resends_timeout.load(Ordering::Relaxed),
        args.ack_timeout
    );
    println!(
        "  readings lost      {:>10} of {} sent in the whole run (unacknowledged {:.0} s after the window)",
        lost, total_sent, drained_s
    );
    if args.forged > 0 {
        // The hub may still be working through queued forgeries: wait until its count holds
        // still for 3 s (at most 60 s).
        let mut last = rejected_total(web, "bad_mac").unwrap_or(0.0);
        let mut still = 0;
        let f0 = Instant::now();
        while still < 3 && f0.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = rejected_total(web, "bad_mac").unwrap_or(0.0);
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        println!(
            "  forged refused     {:>10.0} counted by the hub (bad_mac) of {} forged batches sent",
            rejected_total(web, "bad_mac").unwrap_or(f64::NAN),
            stats.forged_sent.load(Ordering::Relaxed)
        );
    }
    println!(
        "  hub CPU            {:>10.0} % of one core",
        (cpu1 - cpu0) as f64 / ticks / elapsed * 100.0
    );
    println!(
        "  hub RSS (max)      {:>10.1} MiB",
        rss_max_kib as f64 / 1024.0
    );
    println!(
        "  loadgen CPU        {:>10.0} % of one core",
        (self1 - self0) as f64 / ticks / elapsed * 100.0
    );
    println!(
        "  window {elapsed:.0} s after {} s warm-up; work dir {}",
        args.warmup,
        dir.display()
    );
    let _ = hub.kill();
    let _ = hub.wait();
    drop(_cluster);
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::SUCCESS)
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    }
}

struct SiteLoad {
    meters: usize,
    batch_seconds: u64,
    offset: Duration,
    ack_timeout: Duration,
    forged: u32,
}

/// Least time between two re-sends the hub asks for (as a real site).
const RESEND_AT_MOST_EVERY: Duration = Duration::from_secs(5);

async fn site_task(
    s: SiteSim,
    port: u16,
    load: SiteLoad,
    mut acks: tokio::sync::watch::Receiver<Ack>,
    stats: Arc<Stats>,
) {
    let SiteLoad {
        meters,
        batch_seconds,
        offset,
        ack_timeout,
        forged,
    } = load;
    let wrong_key = random_bytes(32);
    let mut o = MqttOptions::new(s.id.clone(), "127.0.0.1", port);
    o.set_credentials(s.user.clone(), s.password.clone());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(
        wire::MAX_ENVELOPE_BYTES + 4096,
        wire::MAX_ENVELOPE_BYTES + 4096,
    );
    let (client, mut events) = AsyncClient::new(o, 64);
    tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    tokio::time::sleep(offset).await;
    let topic = Topics::new(COMMUNITY).readings(&s.id);
    let mut seq = 0u64;
    let mut counters = vec![1_000_000.0f64; meters];
    let mut tick = tokio::time::interval(Duration::from_secs(batch_seconds));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The site's outbox: batches not yet covered by an ack, and when each was last published.
    let mut outbox: VecDeque<(Batch, Instant)> = VecDeque::new();
    let mut acked = 0u64;
    let mut last_asked: Option<Instant> = None;
    // Everything below `acked + 1` was acknowledged: nothing else is declared.
    let publish = |batch: &Batch, acked: u64| {
        let mut b = batch.clone();
        b.sent = Utc::now();
        b.unacked_from = Some((acked + 1).min(b.readings.first().map_or(1, |r| r.seq)));
        let payload = wire::seal(&s.key, &s.id, &topic, &b);
        let (client, topic) = (client.clone(), topic.clone());
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
        }
    };
    loop {
        let ticked = tokio::select! {
            _ = tick.tick() => true,
            changed = acks.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
        };
        let ack = *acks.borrow_and_update();
        if ack.seq > acked {
            acked = ack.seq;
            while outbox
                .front()
                .is_some_and(|(b, _)| b.readings.last().is_some_and(|r| r.seq <= acked))
            {
                outbox.pop_front();
            }
        }
        let asked = ack.resend_from.is_some_and(|f| f == acked + 1)
            && last_asked.is_none_or(|t| t.elapsed() >= RESEND_AT_MOST_EVERY)
            && !outbox.is_empty();
        let timed_out = outbox
            .front()
            .is_some_and(|(_, at)| at.elapsed() >= ack_timeout);
        if asked || timed_out {
            if asked {
                last_asked = Some(Instant::now());
                stats.resends_asked.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.resends_timeout.fetch_add(1, Ordering::Relaxed);
            }
            for (b, at) in outbox.iter_mut() {
                if publish(b, acked).await.is_err() {
                    return;
                }
                *at = Instant::now();
                stats.batches_resent.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !ticked || stats.stopped.load(Ordering::Relaxed) {
            continue;
        }
        let now = Utc::now();
        let taken = Instant::now();
        let mut readings = Vec::with_capacity(meters * batch_seconds as usize);
        for k in (0..batch_seconds).rev() {
            for (m, c) in counters.iter_mut().enumerate() {
                seq += 1;
                *c += 0.5;
                readings.push(WireReading {
                    seq,
                    meter: format!("m{m}"),
                    ts: now - chrono::Duration::seconds(k as i64),
                    values: Values {
                        p_w: Some(1800.0),
                        e_imp_wh: Some(*c),
                        e_exp_wh: Some(0.0),
                        ..Values::default()
                    },
                    quality: Quality::Good,
                    missing: vec![],
                    retimed: false,
                    energy_integrated: false,
                });
            }
        }
        let n = readings.len() as u64;
        let batch = Batch {
            site: s.id.clone(),
            sent: now,
            readings,
            dropped_through: None,
            unacked_from: None,
        };
        stats
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(s.id.clone())
            .or_default()
            .push_back((seq, taken, n));
        if publish(&batch, acked).await.is_err() {
            return;
        }
        for _ in 0..forged {
            // The same batch, sealed with a key that is not the site's: a forgery to refuse.
            let payload = wire::seal(&wrong_key, &s.id, &topic, &batch);
            if client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return;
            }
            stats.forged_sent.fetch_add(1, Ordering::Relaxed);
        }
        outbox.push_back((batch, Instant::now()));
        stats.readings_sent.fetch_add(n, Ordering::Relaxed);
    }
}

/// Subscribe to every site's ack as the hub's user; verify each and record latencies.
async fn observe_acks(
    port: u16,
    hub_user: &str,
    hub_password: &str,
    qos: QoS,
    keys: HashMap<String, Vec<u8>>,
    sites: HashMap<String, tokio::sync::watch::Sender<Ack>>,
    stats: Arc<Stats>,
) {
    let mut o = MqttOptions::new("central.lg-observer", "127.0.0.1", port);
    o.set_credentials(hub_user, hub_password);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(o, 64);
    let topics = Topics::new(COMMUNITY);
    let filter = format!("{}/site/+/ack", topics.root());
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.clone(), qos);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Some((site, "ack")) = topics.parse_site_topic(&p.topic) else {
                        continue;
                    };
                    let Some(key) = keys.get(site) else { continue };
                    let Ok(env) = wire::open_unverified(&p.payload) else {
                        continue;
                    };
                    let Ok(ack) = wire::open::<Ack>(key, site, &p.topic, &env) else {
                        continue;
                    };
                    if let Some(tx) = sites.get(site) {
                        tx.send_replace(ack);
                    }
                    let now = Instant::now();
                    let mut done = Vec::new();
                    let mut acked_readings = 0u64;
                    {
                        let mut g = stats.pending.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(q) = g.get_mut(site) {
                            while q.front().is_some_and(|(s, _, _)| *s <= ack.seq) {
                                if let Some((_, t, n)) = q.pop_front() {
                                    done.push(now.duration_since(t).as_millis() as u32);
                                    acked_readings += n;
                                }
                            }
                        }
                    }
                    if !done.is_empty() {
                        stats
                            .readings_acked
                            .fetch_add(acked_readings, Ordering::Relaxed);
                        if stats.measuring.load(Ordering::Relaxed) {
                            stats
                                .latencies_ms
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .extend(done);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    });
}

/// The broker the load goes through.
enum Broker {
    /// The hub's embedded broker, on this port.
    Embedded(u16),
    /// A NATS cluster: the MQTT port of each node (on loopback).
    Nats(Vec<u16>),
}

impl Broker {
    /// The MQTT port the `i`-th client connects to (round-robin over the nodes).
    fn port(&self, i: usize) -> u16 {
        match self {
            Broker::Embedded(p) => *p,
            Broker::Nats(ports) => ports[i % ports.len()],
        }
    }

    fn hub_user(&self) -> String {
        match self {
            Broker::Embedded(_) => "central".into(),
            Broker::Nats(_) => format!("central@{COMMUNITY}"),
        }
    }

    /// As the hub subscribes (`subscribe_qos = 0` on NATS, docs/cluster.md).
    fn subscribe_qos(&self) -> QoS {
        match self {
            Broker::Embedded(_) => QoS::AtLeastOnce,
            Broker::Nats(_) => QoS::AtMostOnce,
        }
    }

    fn describe(&self) -> String {
        match self {
            Broker::Embedded(p) => format!("broker 127.0.0.1:{p}"),
            Broker::Nats(ports) => {
                let l: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
                format!("NATS cluster MQTT {}", l.join(", "))
            }
        }
    }

    /// The `[broker]` section of the hub's config.
    fn section(&self, hub_password: &str) -> String {
        match self {
            Broker::Embedded(p) => format!(
                "[broker]\nlisten = \"127.0.0.1:{p}\"\nusername = \"central\"\npassword = \"{hub_password}\"\n"
            ),
            Broker::Nats(ports) => {
                let urls: Vec<String> = ports
                    .iter()
                    .map(|p| format!("\"mqtt://127.0.0.1:{p}\""))
                    .collect();
                format!(
                    "[broker]\nurls = [{}]\nusername = \"{}\"\npassword = \"{hub_password}\"\nsubscribe_qos = 0\n",
                    urls.join(", "),
                    self.hub_user()
                )
            }
        }
    }
}

fn config_text(
    dir: &Path,
    broker: &Broker,
    web_port: u16,
    hub_password: &str,
    sites: &[SiteSim],
    meters: usize,
) -> String {
    let mut s = format!(
        "[central]\ncommunity = \"{COMMUNITY}\"\nname = \"socer loadgen\"\nlatitude = 46.17\nlongitude = 9.87\nraw_retention_days = 2\n\n\
         {}\n\
         [web]\nlisten = \"127.0.0.1:{web_port}\"\n\n[storage]\npath = \"{}\"\n\n\
         [[substation]]\nid = \"S1\"\nname = \"loadgen\"\n",
        broker.section(hub_password),
        dir.join("central.db").display()
    );
    for site in sites {
        let pod = format!("POD-{}", site.id);
        s += &format!(
            "\n[[site]]\nid = \"{id}\"\nkey = \"{key}\"\npassword = \"{pw}\"\nmembers = [\"{id}\"]\n\n\
             [[member]]\nid = \"{id}\"\nkind = \"household\"\npod = \"{pod}\"\nsubstation = \"S1\"\nsite = \"{id}\"\n",
            id = site.id,
            key = hex::encode(&site.key),
            pw = site.password,
        );
        for m in 0..meters {
            let role = if m == 0 { "grid" } else { "consumption" };
            s += &format!(
                "\n[[meter]]\nsite = \"{}\"\nname = \"m{m}\"\npod = \"{pod}\"\nrole = \"{role}\"\n",
                site.id
            );
        }
    }
    s
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("socer-loadgen-{}", hex::encode(random_bytes(4))));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A minimal blocking HTTP GET on loopback: (status, body).
fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: loadgen\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    Some((
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

/// Σ over sites of `socer_rejected_total{reason=…}` on the hub's `/metrics`.
fn rejected_total(web: std::net::SocketAddr, reason: &str) -> Option<f64> {
    let (_, body) = http_get(web, "/metrics")?;
    let needle = format!("reason=\"{reason}\"}}");
    Some(
        body.lines()
            .filter(|l| l.starts_with("socer_rejected_total{") && l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

fn stored_total(web: std::net::SocketAddr) -> Option<f64> {
    let (_, body) = http_get(web, "/metrics")?;
    body.lines().find_map(|l| {
        l.strip_prefix("socer_readings_stored_total ")
            .and_then(|v| v.trim().parse().ok())
    })
}

/// utime + stime of a process, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `nats-server` on PATH, else the Debian package's /usr/sbin/nats-server.
fn find_nats_server() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .chain(std::iter::once(PathBuf::from("/usr/sbin/nats-server")))
        .find(|p| is_exe(p))
        .ok_or_else(|| anyhow::anyhow!("nats-server not found"))
}

/// Three nodes on loopback, each with four distinct free ports (MQTT, cluster, client, monitor).
fn loopback_nodes() -> anyhow::Result<Vec<crate::central::nats::Node>> {
    let mut ports = std::collections::BTreeSet::new();
    let mut tries = 0;
    while ports.len() < 12 {
        tries += 1;
        anyhow::ensure!(tries < 1000, "cannot find 12 free loopback ports");
        ports.insert(free_port()?);
    }
    let ports: Vec<u16> = ports.into_iter().collect();
    Ok(ports
        .chunks(4)
        .map(|c| crate::central::nats::Node {
            host: "127.0.0.1".into(),
            mqtt_port: c[0],
            cluster_port: c[1],
            client_port: c[2],
            monitor_port: c[3],
        })
        .collect())
}

/// The nats-server processes loadgen started: killed and reaped when dropped.
struct Cluster(Vec<std::process::Child>);

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Write the NATS files for the hub's config (the writer of `socer central --nats-files`) under
/// `dir/nats`, JetStream under `dir/js`, start the nodes and wait until each is healthy.
async fn start_cluster(
    bin: &Path,
    config: &Path,
    dir: &Path,
    nodes: &[crate::central::nats::Node],
) -> anyhow::Result<Cluster> {
    let cfg = crate::central::config::load(config)?;
    let files = dir.join("nats");
    crate::central::nats::write_nats_files(&cfg, &files, nodes, &dir.join("js"))?;
    let mut cluster = Cluster(Vec::new());
    for i in 0..nodes.len() {
        let log_path = dir.join(format!("nats-{}.log", i + 1));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(files.join(format!("nats-{}.conf", i + 1)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        cluster.0.push(child);
    }
    // `/healthz` answers 200 once JetStream is up and current on the node.
    let healthy = wait_for(Duration::from_secs(60), || {
        nodes.iter().all(|n| {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], n.monitor_port));
            http_get(addr, "/healthz").is_some_and(|(s, _)| s == 200)
        })
    })
    .await;
    anyhow::ensure!(
        healthy,
        "the NATS cluster did not become healthy within 60 s (logs: {}/nats-*.log)",
        dir.display()
    );
    eprintln!(
        "NATS cluster up: {} nodes ({}), files in {}",
        nodes.len(),
        bin.display(),
        files.display()
    );
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sims(broker: &Broker) -> Vec<SiteSim> {
        (0..2)
            .map(|i| {
                let id = format!("site-{i:04}");
                SiteSim {
                    user: match broker {
                        Broker::Embedded(_) => id.clone(),
                        Broker::Nats(_) => crate::central::nats::site_user(COMMUNITY, &id),
                    },
                    id,
                    key: vec![7; 32],
                    password: format!("pw{i}"),
                }
            })
            .collect()
    }

    #[test]
    fn the_nats_config_names_the_three_nodes_and_its_files_let_each_site_and_the_hub_in() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::Nats(vec![11001, 11002, 11003]);
        let sites = sims(&broker);
        let text = config_text(dir.path(), &broker, 12000, "hubpw", &sites, 2);
        assert!(text.contains(
            "urls = [\"mqtt://127.0.0.1:11001\", \"mqtt://127.0.0.1:11002\", \"mqtt://127.0.0.1:11003\"]"
        ), "{text}");
        assert!(text.contains("subscribe_qos = 0") && !text.contains("listen = \"127.0.0.1:1100"));
        let path = dir.path().join("central.toml");
        std::fs::write(&path, &text).unwrap();
        let cfg = crate::central::config::load(&path).unwrap();
        let nodes: Vec<crate::central::nats::Node> = (0..3)
            .map(|i| crate::central::nats::Node {
                host: "127.0.0.1".into(),
                mqtt_port: 11001 + i,
                cluster_port: 11101 + i,
                client_port: 11201 + i,
                monitor_port: 11301 + i,
            })
            .collect();
        crate::central::nats::write_nats_files(&cfg, &dir.path().join("nats"), &nodes, dir.path())
            .unwrap();
        let account =
            std::fs::read_to_string(dir.path().join(format!("nats/{COMMUNITY}.account.conf")))
                .unwrap();
        for s in &sites {
            assert!(
                account.contains(&format!(
                    "user: \"{}\", password: \"{}\"",
                    s.user, s.password
                )),
                "{account}"
            );
        }
        assert!(account.contains(&format!(
            "user: \"{}\", password: \"hubpw\"",
            broker.hub_user()
        )));
        let node = std::fs::read_to_string(dir.path().join("nats/nats-2.conf")).unwrap();
        assert!(node.contains("listen: \"127.0.0.1:11002\""), "{node}");
        // Round-robin over the nodes.
        assert_eq!(
            (0..4).map(|i| broker.port(i)).collect::<Vec<_>>(),
            [11001, 11002, 11003, 11001]
        );
    }

    #[test]
    fn the_embedded_config_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::Embedded(11883);
        let sites = sims(&broker);
        let text = config_text(dir.path(), &broker, 12000, "hubpw", &sites, 1);
        assert!(text.contains(
            "[broker]\nlisten = \"127.0.0.1:11883\"\nusername = \"central\"\npassword = \"hubpw\"\n\n[web]"
        ), "{text}");
        assert_eq!(sites[0].user, "site-0000");
        assert_eq!(broker.port(5), 11883);
    }
}
