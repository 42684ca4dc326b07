//! `socer central`: the community hub — broker, authenticated ingest, store, period energy, live
//! balance, API.
//!
//! This module only wires the parts together; the energy rules (`energy`, `balance`, `tariff`,
//! `incentive`) are the pure `socer-rules` crate and the I/O lives in `broker`, `ingest`, `store`
//! and `web`.

// The CER rules live in their own pure crate; re-exported so the daemon reads `central::energy`.
pub use socer_rules::{balance, energy, incentive, tariff};

pub mod broker;
pub mod compute;
pub mod config;
pub mod enrol;
pub mod ingest;
pub mod nats;
pub mod plausible;
pub mod report;
pub mod retained;
pub mod signal;
pub mod sites;
pub mod status;
pub mod store;
pub mod summary;
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
#[command(subcommand_negates_reqs = true)]
pub struct Args {
    /// The central config (see config/central.example.toml).
    #[arg(long, required = true)]
    pub config: Option<PathBuf>,
    /// Write the password, ACL and config files an external Mosquitto needs into DIR, then exit.
    #[arg(long, value_name = "DIR")]
    pub mosquitto_files: Option<PathBuf>,
    /// Enrol, remove or re-key a site (docs/enrol.md); without one, run the hub.
    #[command(subcommand)]
    pub command: Option<enrol::Command>,
    /// Write this community's NATS account and the server files of a NATS cluster into DIR,
    /// then exit (run once per community into the same DIR to put several on one cluster).
    #[arg(long, value_name = "DIR")]
    pub nats_files: Option<PathBuf>,
    /// A node of the NATS cluster, `HOST[:MQTT[:CLUSTER[:CLIENT[:MONITOR]]]]` (repeat; default
    /// three nodes nats-1..3 on ports 1883, 6222, 4222, 8222).
    #[arg(long = "nats-node", value_name = "NODE", requires = "nats_files")]
    pub nats_nodes: Vec<String>,
    /// Where each node keeps its JetStream store (a folder per node inside).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/nats",
        requires = "nats_files"
    )]
    pub nats_store: PathBuf,
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
    /// Which key opens each site's messages and seals what goes to it (live: `sites`).
    pub site_keys: Arc<sites::SiteKeys>,
    /// The embedded broker's accounts, changed live when sites are added or removed.
    pub broker_accounts: Option<sites::Accounts>,
    /// The hub's own account on the embedded broker.
    hub_account: Option<(String, String)>,
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

    /// What the sites reloader changes in this hub, for the config at `config_path`.
    pub fn live(&self, config_path: PathBuf) -> sites::Live {
        sites::Live {
            config_path,
            keys: self.site_keys.clone(),
            sites: self.sites.clone(),
            accounts: self.broker_accounts.clone(),
            hub_account: self.hub_account.clone(),
        }
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
    if let Some(cmd) = args.command {
        return enrol::run(cmd, args.config);
    }
    let Some(config_path) = args.config else {
        anyhow::bail!("--config FILE is required");
    };
    let cfg = config::load(&config_path)?;
    if let Some(dir) = args.mosquitto_files {
        for p in broker::write_mosquitto_files(&cfg, &dir)? {
            println!("{}", p.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = args.nats_files {
        let nodes = if args.nats_nodes.is_empty() {
            nats::default_nodes()
        } else {
            args.nats_nodes
                .iter()
                .map(|n| nats::parse_node(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--nats-node {e}"))?
        };
        for p in nats::write_nats_files(&cfg, &dir, &nodes, &args.nats_store)? {
            println!("{}", p.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let listener = tokio::net::TcpListener::bind(cfg.web.listen)
        .await
        .with_context(|| format!("web: cannot listen on {}", cfg.web.listen))?;
    let started = cfg.clone();
    let running = start(cfg, listener).await?;
    tracing::info!("central hub up: http://{}/", running.web_addr);
    // Sites added to, removed from or re-keyed in the config or its sites.d are picked up live.
    tokio::spawn(sites::watch(running.hub.live(config_path), started));
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
    let (endpoint, broker_accounts) = broker::start_live(&cfg)?;
    let hub_account = broker_accounts
        .as_ref()
        .map(|_| (endpoint.username.clone(), endpoint.password.clone()));
    let site_keys = Arc::new(sites::SiteKeys::of(&cfg));

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
        site_keys: site_keys.clone(),
        broker_accounts,
        hub_account,
        signing_key,
        reader: Mutex::new(reader),
        cfg,
    });

    let latest = Arc::new(ingest::Latest::default());
    let (republish_tx, republish_rx) = tokio::sync::mpsc::unbounded_channel();
    let ingest = Arc::new(ingest::Ingest {
        gate: ingest::Gate::with_keys(&hub.cfg.community, site_keys),
        metrics: metrics.clone(),
        sites: sites.clone(),
        latest: latest.clone(),
        store: store_handle,
        retained: retained.clone(),
        republish: republish_tx,
    });
    // One id per install, the same on every broker of the list and every reconnect.
    let instance_file = {
        let mut f = hub.cfg.storage_path.clone().into_os_string();
        f.push(".instance-id");
        PathBuf::from(f)
    };
    let instance = crate::instance::load_or_create(&instance_file)
        .with_context(|| format!("instance id {}", instance_file.display()))?;
    let hub_nodes = ingest::mqtt_options_all(
        &endpoint,
        &endpoint.client_id(broker::Role::Hub, &hub.cfg.community, &instance),
    );
    let first = hub_nodes
        .first()
        .cloned()
        .context("no broker to connect to")?;
    let (client, events) = AsyncClient::new(first, 4096);
    let sub_qos = match hub.cfg.broker {
        config::BrokerConfig::External {
            subscribe_qos: 0, ..
        } => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    };
    {
        let (client, ingest, hub) = (client.clone(), ingest.clone(), hub.clone());
        tokio::spawn(async move {
            ingest::run_client(client, events, hub_nodes, sub_qos, ingest, move |up| {
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
    let pub_nodes = ingest::mqtt_options_all(
        &endpoint.publisher(),
        &endpoint.client_id(broker::Role::Publisher, &hub.cfg.community, &instance),
    );
    let first = pub_nodes
        .first()
        .cloned()
        .context("no broker to connect to")?;
    let (publisher, pub_events) = AsyncClient::new(first, 4096);
    tokio::spawn(ingest::drive(pub_events, pub_nodes));
    // The embedded broker keeps retained messages in memory only: republish every ack at start.
    for (site, seq) in contiguous {
        ingest::publish_ack(&publisher, &ingest, &site, seq).await;
    }
    tokio::spawn(ingest::run_acks(publisher.clone(), ingest.clone(), acks_rx));
    tokio::spawn(ingest::run_republish(
        ingest.clone(),
        publisher.clone(),
        republish_rx,
    ));
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
