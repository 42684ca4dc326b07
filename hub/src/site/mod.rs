//! `socer site`: the building agent. Meters are polled (`poll`), every reading is stamped
//! (`timesync`) and kept in the SQLite outbox (`outbox`) until the central hub acknowledges it
//! through the MQTT uplink (`uplink`); the resident page and health are served by `web`.
//!
//! This module only wires the parts together and handles start-up and shutdown (systemd
//! readiness, watchdog, SIGTERM flush); it holds no data of its own.

pub mod config;
pub mod ha;
pub mod mqtt_devices;
pub mod outbox;
pub mod poll;
pub mod signal;
pub mod timesync;
pub mod uplink;
pub mod web;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, watch};

use socer_drivers::clock::{Clock, SystemClock};

use crate::wire;
use outbox::{Outbox, Store};
use timesync::TimeKeeper;
use web::{MeterInfo, View};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The site config (TOML; see config/site.example.toml).
    #[arg(long)]
    pub config: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let stop_signals = StopSignals::install();
    let loaded = match config::load(&args.config) {
        Ok(l) => l,
        Err(e) => {
            eprint!("{e}");
            if !e.to_string().ends_with('\n') {
                eprintln!();
            }
            return Ok(ExitCode::from(2));
        }
    };
    let cfg = loaded.config.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let run_info = TimeKeeper::system_run(clock.as_ref());
    let time = Arc::new(TimeKeeper::new(
        clock.clone(),
        timesync::probe_for(cfg.site.clock),
        run_info.clone(),
    ));

    let store = match Store::open(&cfg.storage.path, loaded.budget_bytes, &run_info) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("socer site: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    tracing::info!(
        path = %store.path().display(),
        last_seq = store.last_seq(),
        acked = store.acked(),
        "outbox open"
    );
    let wall = {
        let t = time.clone();
        Arc::new(move || t.wall_ms())
    };
    let outbox = Outbox::start(store, wall);
    if let Some(ev) = time.poll() {
        // Readings of earlier runs may still wait for a wall time.
        outbox.retime(ev.boot, ev.offset_ms, ev.now_ms);
    } else {
        tracing::warn!(
            "the system clock is not synchronised: readings keep a monotonic stamp until it is"
        );
    }

    let listen = cfg.web.listen.get_ref().clone();
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("socer site: cannot listen on {listen}: {e}");
            outbox.shutdown().await;
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("serving http://{addr}/");
    }

    let (events, _) = broadcast::channel(256);
    let profiles = socer_drivers::ProfileSet::builtin().unwrap_or_default();
    let view = Arc::new(View {
        site: cfg.site.id.get_ref().clone(),
        community: cfg.site.community.get_ref().clone(),
        name: cfg.site.name.clone(),
        timezone: cfg.site.timezone.get_ref().clone(),
        meters: cfg
            .meters
            .iter()
            .map(|m| {
                let bus = cfg
                    .buses
                    .iter()
                    .find(|b| b.name.get_ref() == m.bus.get_ref());
                let (interval_s, counter_interval_s) = if bus.is_some_and(|b| b.mqtt.is_some()) {
                    // A device that publishes itself: its period is both.
                    let s = mqtt_devices::expected_period(m).as_secs_f64();
                    (s, s)
                } else {
                    intervals_of(m, bus.is_some_and(|b| b.simulated), &profiles)
                };
                MeterInfo {
                    name: m.name().to_string(),
                    model: m.model.get_ref().clone(),
                    role: m.role(),
                    pod: m.pod.clone(),
                    bus: m.bus.get_ref().clone(),
                    unit: *m.unit.get_ref(),
                    endpoint: bus.map(endpoint_of).unwrap_or_default(),
                    interval_s,
                    counter_interval_s,
                }
            })
            .collect(),
        latest: Mutex::new(BTreeMap::new()),
        health: Arc::default(),
        lines: Arc::default(),
        outbox: outbox.clone(),
        uplink: Arc::default(),
        time: time.clone(),
        events,
        started: Instant::now(),
        signal: Arc::default(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, rx) = mpsc::channel::<poll::Polled>(4096);
    let pollers = poll::spawn_all(&cfg, clock.clone(), tx, view.lines.clone(), stop_rx.clone());
    // Home Assistant's counters see every reading (a poll's reading may hold no counter).
    let ha_book = cfg.homeassistant.as_ref().filter(|h| h.enabled).map(|_| {
        Arc::new(ha::CounterBook::load(Some(
            cfg.storage.path.join("ha-counters.json"),
        )))
    });
    let ingest = tokio::spawn(ingest(rx, view.clone(), ha_book.clone()));

    let clock_task = {
        let (time, outbox, mut stop) = (time.clone(), outbox.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                if let Some(ev) = time.poll() {
                    tracing::info!("system clock synchronised");
                    outbox.retime(ev.boot, ev.offset_ms, ev.now_ms);
                }
            }
        })
    };

    // One id per install (kept with the outbox), in every client id this agent uses.
    let instance_file = cfg.storage.path.join(crate::instance::FILE);
    let instance = match crate::instance::load_or_create(&instance_file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("socer site: instance id {}: {e}", instance_file.display());
            return Ok(ExitCode::from(2));
        }
    };
    let uplink_cfg = uplink::UplinkConfig {
        brokers: loaded.brokers.clone(),
        instance: instance.clone(),
        username: cfg.mqtt.username.clone(),
        password: cfg.mqtt.password.clone(),
        ca_pem: match &cfg.mqtt.ca_file {
            Some(p) => match std::fs::read(p) {
                Ok(b) => Some(b),
                Err(e) => {
                    eprintln!("socer site: ca_file {}: {e}", p.display());
                    return Ok(ExitCode::from(2));
                }
            },
            None => None,
        },
        key: loaded.key.clone(),
        community: view.community.clone(),
        site: view.site.clone(),
        batch_readings: cfg.mqtt.batch_readings,
        window: cfg.mqtt.window,
        ack_timeout: Duration::from_secs(30),
        status_every: Duration::from_secs(30),
        epoch_file: Some(cfg.storage.path.join("uplink-epoch")),
        subscribe_qos: if cfg.mqtt.subscribe_qos == 0 {
            rumqttc::QoS::AtMostOnce
        } else {
            rumqttc::QoS::AtLeastOnce
        },
        // The signal listener rides on the uplink's connection: one connection per account.
        inbox: Some(signal::inbox(
            &view.community,
            &view.site,
            loaded.key.clone(),
            loaded.hub_public_key,
            view.signal.clone(),
        )),
    };
    if loaded.hub_public_key.is_none() {
        tracing::warn!(
            "no [mqtt] hub_public_key: the community's signal and alerts cannot be verified and are not shown"
        );
    }
    if loaded.brokers.iter().any(|b| b.tls) {
        // Refuse to start on a CA file that trusts nothing, rather than retry connects forever.
        if let Err(e) = crate::tls::client_config(uplink_cfg.ca_pem.as_deref()) {
            eprintln!("socer site: [mqtt] {e}");
            return Ok(ExitCode::from(2));
        }
    }
    let status_fn: uplink::StatusFn = {
        let v = view.clone();
        Arc::new(move || status_of(&v))
    };
    let uplink_ca = uplink_cfg.ca_pem.clone();
    let uplink_task = uplink::spawn(
        uplink_cfg,
        outbox.clone(),
        clock.clone(),
        status_fn,
        view.uplink.clone(),
        stop_rx.clone(),
    );

    let ha_task = match ha_link(&cfg, &loaded.broker, uplink_ca, &view, ha_book, &instance) {
        Ok(Some(link)) => Some(ha::spawn(link, stop_rx.clone())),
        Ok(None) => None,
        Err(e) => {
            eprintln!("socer site: homeassistant: {e}");
            return Ok(ExitCode::from(2));
        }
    };

    let web_task = {
        let mut stop = stop_rx.clone();
        tokio::spawn(web::serve(view.clone(), listener, async move {
            let _ = stop.changed().await;
        }))
    };

    crate::systemd::notify_ready();
    // Ping only while the outbox writer answers: a stuck writer gets us restarted.
    let watchdog = {
        let outbox = outbox.clone();
        crate::systemd::spawn_watchdog(
            move || {
                let outbox = outbox.clone();
                async move { outbox.flush().await.is_ok() }
            },
            stop_rx.clone(),
        )
    };

    stop_signals.wait().await;
    tracing::info!("stopping: flushing the outbox");
    crate::systemd::notify_stopping();
    let _ = stop_tx.send(true);
    for p in pollers {
        let _ = tokio::time::timeout(Duration::from_secs(1), p).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ingest).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), uplink_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), clock_task).await;
    if let Some(t) = ha_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), outbox.shutdown()).await;
    web_task.abort();
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and SIGINT, listened to from the start of `run`: a signal that arrives while the agent
/// is still starting stops it cleanly instead of killing it (the default action).
struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn wait(mut self) {
        match (self.term.as_mut(), self.int.as_mut()) {
            (Some(term), Some(int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Readings from the pollers: health, latest values, live events, then the outbox.
async fn ingest(
    mut rx: mpsc::Receiver<poll::Polled>,
    view: Arc<View>,
    ha_book: Option<Arc<ha::CounterBook>>,
) {
    while let Some((mut r, latency, kind)) = rx.recv().await {
        if view
            .meters
            .iter()
            .any(|m| m.name == r.meter && m.role == config::Role::Storage)
        {
            // A battery's own counters are its exchange with the building (charge in, discharge out).
            r.values.storage_as_exchange();
        }
        poll::record(&view.health, &r, latency, kind);
        if let Some(book) = &ha_book {
            if let Some(m) = view.meters.iter().find(|m| m.name == r.meter) {
                book.observe(m.role, &r);
            }
        }
        if r.quality != socer_drivers::reading::Quality::Failed {
            if let Ok(mut l) = view.latest.lock() {
                l.insert(r.meter.clone(), r.clone());
            }
        }
        if view.events.receiver_count() > 0 {
            if let Ok(j) = serde_json::to_string(&r) {
                let _ = view.events.send(j);
            }
        }
        if view.outbox.push(view.time.stamp(r)).is_err() {
            tracing::error!("the outbox writer has stopped; readings cannot be kept");
            return;
        }
    }
}

/// The Home Assistant link, when `[homeassistant]` enables it.
fn ha_link(
    cfg: &config::SiteConfig,
    broker: &config::BrokerUrl,
    ca_pem: Option<Vec<u8>>,
    view: &Arc<View>,
    book: Option<Arc<ha::CounterBook>>,
    instance: &str,
) -> Result<Option<ha::HaLink>, String> {
    let (Some(h), Some(book)) = (cfg.homeassistant.as_ref().filter(|h| h.enabled), book) else {
        return Ok(None);
    };
    let (broker, username, password) = match &h.url {
        Some(u) => (
            config::parse_mqtt_url(u)?,
            h.username.clone(),
            h.password.clone(),
        ),
        None => (
            broker.clone(),
            cfg.mqtt.username.clone(),
            cfg.mqtt.password.clone(),
        ),
    };
    // Its own id (role `ha`), bound to its account like the uplink's: never a PID.
    let account = username
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("socer-site-{}", view.site));
    let client_id = crate::instance::client_id(
        &account,
        &view.community,
        crate::instance::Role::HomeAssistant,
        Some(&view.site),
        instance,
    );
    let topics = ha::HaTopics::new(&h.discovery_prefix, &view.community, &view.site);
    let state = {
        let (v, t) = (view.clone(), topics.clone());
        Arc::new(move || {
            let latest = v.latest.lock().map(|l| l.clone()).unwrap_or_default();
            let signal = v.signal.lock().ok().and_then(|s| s.signal.clone());
            let now = v
                .time
                .wall_ms()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .unwrap_or_else(chrono::Utc::now);
            ha::messages(&t, &v.meters, &latest, signal.as_ref(), &book, now)
        })
    };
    Ok(Some(ha::HaLink {
        broker,
        client_id,
        ca_pem,
        username,
        password,
        discovery: ha::discovery(&topics, &view.name, &view.meters),
        topics,
        state_every: Duration::from_secs(h.state_every_s.max(1)),
        state,
    }))
}

/// Where a bus is, as the technician view shows it.
fn endpoint_of(b: &config::BusConfig) -> String {
    if let Some(addr) = &b.tcp {
        format!("tcp {}", addr.get_ref())
    } else if let Some(addr) = &b.rtu_over_tcp {
        format!("rtu-over-tcp {} {}", addr.get_ref(), b.baud)
    } else if let Some(url) = &b.mqtt {
        format!("mqtt {}", url.get_ref())
    } else if let Some(port) = &b.serial {
        let parity = match b.parity {
            config::Parity::None => 'N',
            config::Parity::Even => 'E',
            config::Parity::Odd => 'O',
        };
        format!(
            "serial {} {} 8{parity}{}",
            port.get_ref(),
            b.baud,
            b.stop_bits.get_ref()
        )
    } else {
        "simulated".into()
    }
}

/// A meter's poll interval and counter interval, seconds: its own `interval`, else its profile's
/// defaults (5 s and 60 s when the model is resolved at run time, as SunSpec devices are). A
/// simulated meter reads everything at each poll.
fn intervals_of(
    m: &config::MeterConfig,
    simulated: bool,
    profiles: &socer_drivers::ProfileSet,
) -> (f64, f64) {
    let defaults = profiles
        .get(m.model.get_ref())
        .map(|p| (p.defaults.fast_interval_s, p.defaults.counter_interval_s));
    if simulated {
        let s = m.interval().map_or(1.0, |d| d.as_secs_f64());
        return (s, s);
    }
    let (fast, counter) = defaults.unwrap_or((5, 60));
    let fast = m.interval().map_or(fast as f64, |d| d.as_secs_f64());
    (fast, (counter as f64).max(fast))
}

/// The retained status payload.
fn status_of(v: &View) -> wire::Status {
    let health = v.health.lock().map(|h| h.clone()).unwrap_or_default();
    let latest: BTreeMap<String, chrono::DateTime<chrono::Utc>> = v
        .latest
        .lock()
        .map(|l| l.iter().map(|(k, r)| (k.clone(), r.ts)).collect())
        .unwrap_or_default();
    let soc: BTreeMap<String, f64> = v
        .latest
        .lock()
        .map(|l| {
            l.iter()
                .filter_map(|(k, r)| Some((k.clone(), r.values.soc_pct?)))
                .collect()
        })
        .unwrap_or_default();
    let now = v
        .time
        .wall_ms()
        .and_then(chrono::DateTime::from_timestamp_millis);
    let up_since =
        now.map(|t| t - chrono::Duration::from_std(v.started.elapsed()).unwrap_or_default());
    wire::Status {
        state: "online".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ts: v
            .time
            .wall_ms()
            .and_then(chrono::DateTime::from_timestamp_millis),
        meters: v
            .meters
            .iter()
            .map(|m| {
                let h = health.get(&m.name);
                wire::MeterStatus {
                    name: m.name.clone(),
                    model: m.model.clone(),
                    role: m.role.as_str().into(),
                    pod: m.pod.clone(),
                    health: h.map(|h| h.state()).unwrap_or("unknown").into(),
                    last_error: h.and_then(|h| h.last_error.clone()),
                    silent_since: now.zip(up_since).and_then(|(now, up)| {
                        poll::silent_since(h, latest.get(&m.name).copied(), m.interval_s, now, up)
                    }),
                    last_reading: latest.get(&m.name).copied(),
                    error_kind: h.and_then(|h| h.last_error_kind),
                    consecutive_failures: h.map(|h| h.consecutive_failures).unwrap_or(0),
                    soc_pct: soc.get(&m.name).copied(),
                }
            })
            .collect(),
        backlog: v.outbox.stats().backlog,
        clock_synced: v.time.is_synced(),
        // The uplink orders its statuses (epoch, n) as it publishes them.
        epoch: 0,
        n: 0,
    }
}
