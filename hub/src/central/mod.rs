//! `socer central`: the community hub — broker, authenticated ingest, store, period energy, live
//! balance, API.
//!
//! This module only wires the parts together; the energy rules (`energy`, `balance`, `incentive`)
//! are pure and the I/O lives in `broker`, `ingest`, `store` and `web`.

pub mod balance;
pub mod broker;
pub mod compute;
pub mod config;
pub mod energy;
pub mod incentive;
pub mod ingest;
pub mod plausible;
pub mod report;
pub mod retained;
pub mod signal;
pub mod status;
pub mod store;
pub mod summary;
pub mod tariff;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, QoS};

use config::CentralConfig;
use status::{Metrics, Sites};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The central config (see config/central.example.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Write the password, ACL and config files an external Mosquitto needs into DIR, then exit.
    #[arg(long, value_name = "DIR")]
    pub mosquitto_files: Option<PathBuf>,
}

/// How often live figures are published and dirty closed periods recomputed.
pub const COMPUTE_EVERY: Duration = Duration::from_secs(5);
/// Dirty periods recomputed at most per tick: a tick that recomputes this many is working
/// through a backlog.
pub const RECOMPUTE_BATCH: usize = 48;
/// How often the still-open period is recomputed.
pub const OPEN_PERIOD_EVERY: Duration = Duration::from_secs(60);

/// The state the API and the loops share.
pub struct Hub {
    pub cfg: CentralConfig,
    pub model: compute::Model,
    pub metrics: Arc<Metrics>,
    pub sites: Arc<Sites>,
    pub balance: Mutex<Option<crate::wire::Balance>>,
    /// The load-shift signal last published (None until live data arrives).
    pub signal: Mutex<Option<crate::wire::Signal>>,
    pub broker_connected: AtomicBool,
    pub started: Instant,
    /// What the hub keeps retained on the broker (restored when another account changes it).
    pub retained: Arc<retained::Retained>,
    /// Signs the broadcasts (signal, alerts, balance); held by the hub only.
    signing_key: crate::wire::HubSigningKey,
    reader: Mutex<store::Reader>,
}

impl Hub {
    pub fn signing_key(&self) -> &crate::wire::HubSigningKey {
        &self.signing_key
    }

    /// The public key the sites verify the broadcasts with.
    pub fn public_key(&self) -> crate::wire::HubPublicKey {
        self.signing_key.verifying_key()
    }

    /// The API's read connection.
    pub fn reader(&self) -> MutexGuard<'_, store::Reader> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running hub (for `run`, the demo and tests).
pub struct Running {
    pub hub: Arc<Hub>,
    pub web_addr: SocketAddr,
    pub client: AsyncClient,
    /// The store's writer thread (the watchdog pings only while it runs).
    pub store_writer: Arc<std::thread::JoinHandle<()>>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = config::load(&args.config)?;
    if let Some(dir) = args.mosquitto_files {
        for p in broker::write_mosquitto_files(&cfg, &dir)? {
            println!("{}", p.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let listener = tokio::net::TcpListener::bind(cfg.web.listen)
        .await
        .with_context(|| format!("web: cannot listen on {}", cfg.web.listen))?;
    let running = start(cfg, listener).await?;
    tracing::info!("central hub up: http://{}/", running.web_addr);
    crate::systemd::notify_ready();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Ping only while the store writer runs and the store answers a read.
    let watchdog = {
        let (hub, writer) = (running.hub.clone(), running.store_writer.clone());
        crate::systemd::spawn_watchdog(
            move || {
                let (hub, writer) = (hub.clone(), writer.clone());
                async move {
                    !writer.is_finished()
                        && tokio::task::spawn_blocking(move || hub.reader().contiguous().is_ok())
                            .await
                            .unwrap_or(false)
                }
            },
            stop_rx,
        )
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("central hub stopping");
    crate::systemd::notify_stopping();
    let _ = stop_tx.send(true);
    if let Some(w) = watchdog {
        w.abort();
    }
    let _ = running.client.disconnect().await;
    Ok(ExitCode::SUCCESS)
}

/// Longest `start` waits for the hub's own connection to the embedded broker.
const EMBEDDED_READY_WITHIN: Duration = Duration::from_secs(5);

/// Start every part of the hub on the current runtime; the web API on `listener`.
pub async fn start(
    cfg: CentralConfig,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::default());
    let sites = Arc::new(Sites::new(
        cfg.sites.iter().map(|s| (s.id.as_str(), s.name.as_str())),
    ));
    let endpoint = broker::start(&cfg)?;

    let periods = store::Periods {
        seconds: cfg.period_seconds(),
    };
    let (acks_tx, acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let (store_handle, store_writer) = store::spawn_writer(
        &cfg.storage_path,
        periods,
        cfg.raw_retention_days,
        store::Limits::of(&cfg),
        metrics.clone(),
        acks_tx,
    )?;
    let mut reader = store::Reader::open(&cfg.storage_path)?;
    // Declared replacements and meter bounds changed since the last start re-settle what they touch.
    match compute::mark_changed_settings(&mut reader, &compute::Model::new(&cfg)) {
        Ok(0) => {}
        Ok(n) => tracing::info!("energy settings changed: {n} periods to recompute"),
        Err(e) => tracing::warn!("energy settings: {e}"),
    }
    let contiguous = reader.contiguous()?;
    for (site, seq) in &contiguous {
        sites.acked(site, *seq);
    }

    let signing_key = match &cfg.signing_key {
        Some(k) => k.clone(),
        None => {
            let k = crate::wire::generate_signing_key();
            tracing::warn!(
                "no [keys] signing_key_file: signing with a temporary key (public {}); sites \
                 refuse the signal and alerts unless their hub_public_key is this one. Make a \
                 lasting key with `socer keygen --out FILE`",
                crate::wire::public_key_hex(&k.verifying_key())
            );
            k
        }
    };
    let retained = Arc::new(retained::Retained::default());
    let hub = Arc::new(Hub {
        model: compute::Model::new(&cfg),
        metrics: metrics.clone(),
        sites: sites.clone(),
        balance: Mutex::new(None),
        signal: Mutex::new(None),
        broker_connected: AtomicBool::new(false),
        started: Instant::now(),
        retained: retained.clone(),
        signing_key,
        reader: Mutex::new(reader),
        cfg,
    });

    let keys = hub
        .cfg
        .sites
        .iter()
        .map(|s| (s.id.clone(), s.key.clone()))
        .collect();
    let latest = Arc::new(ingest::Latest::default());
    let ingest = Arc::new(ingest::Ingest {
        gate: ingest::Gate::new(&hub.cfg.community, keys),
        metrics: metrics.clone(),
        sites: sites.clone(),
        latest: latest.clone(),
        store: store_handle,
        retained: retained.clone(),
    });
    let (client, events) = AsyncClient::new(
        ingest::mqtt_options(&endpoint, &endpoint.client_id(broker::Role::Hub)),
        4096,
    );
    {
        let (client, ingest, hub) = (client.clone(), ingest.clone(), hub.clone());
        tokio::spawn(async move {
            ingest::run_client(client, events, ingest, move |up| {
                hub.broker_connected.store(up, Ordering::Relaxed)
            })
            .await
        });
    }
    // The embedded broker binds on its own thread: return only once it serves the hub, so that
    // nothing started next (sites, tests, the demo) races its listener. An external broker may be
    // down for hours; the hub then starts anyway and its client keeps retrying.
    if matches!(hub.cfg.broker, config::BrokerConfig::Embedded { .. }) {
        let deadline = Instant::now() + EMBEDDED_READY_WITHIN;
        while !hub.broker_connected.load(Ordering::Relaxed) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !hub.broker_connected.load(Ordering::Relaxed) {
            tracing::warn!(
                "the embedded broker did not accept the hub within {EMBEDDED_READY_WITHIN:?}; going on, the hub keeps retrying"
            );
        }
    }
    // A second connection publishes acks and live figures, so that they never queue behind the
    // ingest when the store applies back-pressure to the subscribing connection.
    let (publisher, pub_events) = AsyncClient::new(
        ingest::mqtt_options(
            &endpoint.publisher(),
            &endpoint.client_id(broker::Role::Publisher),
        ),
        4096,
    );
    tokio::spawn(ingest::drive(pub_events));
    // The embedded broker keeps retained messages in memory only: republish every ack at start.
    for (site, seq) in contiguous {
        ingest::publish_ack(&publisher, &ingest, &site, seq).await;
    }
    tokio::spawn(ingest::run_acks(publisher.clone(), ingest.clone(), acks_rx));
    tokio::spawn(signal::run(
        hub.clone(),
        publisher.clone(),
        latest.clone(),
        COMPUTE_EVERY,
    ));
    tokio::spawn(summary::run(hub.clone(), publisher.clone()));
    tokio::spawn(retained::run_restore(
        retained,
        publisher.clone(),
        metrics.clone(),
    ));
    tokio::spawn(compute_loop(hub.clone(), publisher, latest));

    let web_addr = listener.local_addr()?;
    tokio::spawn(web::serve(hub.clone(), listener));
    Ok(Running {
        hub,
        web_addr,
        client,
        store_writer: Arc::new(store_writer),
    })
}

/// Every few seconds: publish the live figures, recompute dirty periods.
async fn compute_loop(hub: Arc<Hub>, client: AsyncClient, latest: Arc<ingest::Latest>) {
    let topic = crate::wire::Topics::new(&hub.cfg.community).balance();
    let mut writer = match store::Reader::open(&hub.cfg.storage_path) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!("compute: cannot open the store: {e}");
            None
        }
    };
    let mut last_open = Instant::now() - OPEN_PERIOD_EVERY;
    let mut tick = tokio::time::interval(COMPUTE_EVERY);
    loop {
        tick.tick().await;
        let now = chrono::Utc::now();
        let b = compute::live_balance(&hub.model, &latest.snapshot(), now);
        let payload = crate::wire::sign(hub.signing_key(), &topic, &b);
        if let Err(e) = hub
            .retained
            .try_publish(&client, topic.clone(), QoS::AtMostOnce, payload)
        {
            tracing::debug!("balance not published: {e}");
        }
        *hub.balance.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);

        let Some(mut r) = writer.take() else { continue };
        let include_open = last_open.elapsed() >= OPEN_PERIOD_EVERY;
        if include_open {
            last_open = Instant::now();
        }
        let h = hub.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let res =
                compute::recompute_dirty(&mut r, &h.model, now, RECOMPUTE_BATCH, include_open);
            (r, res)
        })
        .await;
        match joined {
            Ok((r, res)) => {
                match res {
                    Ok(n) => {
                        hub.metrics
                            .periods_computed
                            .fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!("compute: {e}"),
                }
                writer = Some(r);
            }
            Err(e) => {
                tracing::error!("compute: task failed: {e}");
                writer = store::Reader::open(&hub.cfg.storage_path).ok();
            }
        }
    }
}
