//! `socer demo`: the So.CER community on one machine — simulated buildings whose meters speak real
//! Modbus, a site agent per building (its own SQLite), the central hub with its embedded broker.
//! Never touches real devices or listens beyond 127.0.0.1; leaves no child process behind.
//!
//! `scenario` (data) → `model` (pure physics: `crate::solar`, `weather`, `load`) → `meters`
//! (simulators on loopback) → `backfill` (history into the site outboxes) → `configs` + `children`
//! (the real daemons) → URLs printed, Ctrl-C stops everything.

pub mod backfill;
pub mod children;
pub mod configs;
pub mod flex;
pub mod http;
pub mod load;
pub mod meters;
pub mod model;
pub mod scenario;
pub mod weather;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::files::random_hex;
use socer_drivers::sunspec::ModelSet;
use socer_drivers::{Clock, ProfileSet, SystemClock};

use children::Daemon;
use configs::{CentralPlan, SitePlan};
use model::Community;
use scenario::Scenario;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seed of the weather and the load noise: the same seed replays the same days.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the state (databases, configs, logs) in DIR; default: a temporary folder removed at exit.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// History to fill through the pipeline before going live: `7d`, `48h`, `0` for none.
    #[arg(long, default_value = "7d")]
    pub backfill: String,
    /// Use ports N (broker), N+1 (dashboard), N+2… (buildings' pages); default: free ports.
    #[arg(long, value_name = "N")]
    pub port_base: Option<u16>,
    /// Another scenario file (default: the built-in config/demo/scenario.toml).
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Run only the simulated meters (no site agents, no central hub).
    #[arg(long)]
    pub meters_only: bool,
    /// The bus depot's charging follows the hub's load-shift alerts (`on`), or keeps its fixed
    /// overnight schedule (`off`), to compare the two.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub flex: String,
    /// Stop by itself after this long (`90s`, `10m`), as Ctrl-C would.
    #[arg(long, value_name = "DURATION")]
    pub run_for: Option<String>,
    /// Make a meter stop answering once live (`BUILDING/METER`, repeatable), to see how the
    /// pages and the hub show a dead meter.
    #[arg(long, value_name = "BUILDING/METER")]
    pub silence: Vec<String>,
    /// How long after going live the `--silence` meters fall silent (`30s`, `2m`).
    #[arg(long, value_name = "DURATION", default_value = "0")]
    pub silence_after: String,
}

/// Seconds between backfilled readings, and the integration step behind them.
pub const BACKFILL_EVERY_S: i64 = 300;
pub const BACKFILL_INTEGRATE_S: i64 = 60;

/// What `demo.json` in the data folder says about a running demo (for tests and tools).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Endpoints {
    pub dashboard: String,
    pub central_web: SocketAddr,
    pub broker: SocketAddr,
    pub sites: Vec<SiteEndpoints>,
    /// Process ids of the daemons the demo started.
    pub pids: Vec<u32>,
    pub backfill_from: Option<chrono::DateTime<chrono::Utc>>,
    pub backfill_to: Option<chrono::DateTime<chrono::Utc>>,
    pub backfill_readings: u64,
    pub backfill_seconds: f64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SiteEndpoints {
    pub id: String,
    pub name: String,
    pub page: String,
    pub web: SocketAddr,
    pub modbus_tcp: Option<SocketAddr>,
    pub modbus_rtu: Option<String>,
}

/// `7d`, `48h`, `30m`, `0`.
pub fn parse_span(s: &str) -> Option<chrono::Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(chrono::Duration::zero());
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    match unit {
        "d" => Some(chrono::Duration::days(n)),
        "h" => Some(chrono::Duration::hours(n)),
        "m" | "min" => Some(chrono::Duration::minutes(n)),
        "s" => Some(chrono::Duration::seconds(n)),
        _ => None,
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// The hub's signing key for the demo, made like `socer keygen` does (kept in the data folder, so
/// `--data DIR` keeps it); its public key goes into every site config.
fn demo_signing_key(path: &Path) -> anyhow::Result<crate::wire::HubPublicKey> {
    if path.exists() {
        let text = std::fs::read_to_string(path)?;
        return crate::wire::signing_key_from_hex(&text)
            .map(|k| k.verifying_key())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    crate::cli::keygen::write_new(path)
}

/// The data folder, and whether the demo owns it (a temporary one, removed at exit).
fn data_dir(arg: &Option<PathBuf>) -> anyhow::Result<(PathBuf, bool)> {
    match arg {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            Ok((d.clone(), false))
        }
        None => {
            let d = std::env::temp_dir().join(format!(
                "socer-demo-{}-{}",
                std::process::id(),
                random_hex(4)
            ));
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            Ok((d, true))
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let scenario = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Scenario::parse(&text).with_context(|| path.display().to_string())?
        }
        None => Scenario::builtin()?,
    };
    let backfill = parse_span(&args.backfill).ok_or_else(|| {
        anyhow::anyhow!("--backfill `{}`: expected like 7d, 48h, 0", args.backfill)
    })?;
    let run_for = match &args.run_for {
        Some(s) => Some(
            parse_span(s)
                .and_then(|d| d.to_std().ok())
                .ok_or_else(|| anyhow::anyhow!("--run-for `{s}`: expected like 90s, 10m"))?,
        ),
        None => None,
    };
    let (data, owned) = data_dir(&args.data)?;
    let result = run_in(&args, scenario, backfill, run_for, &data, started).await;
    if owned {
        let _ = std::fs::remove_dir_all(&data);
    }
    result
}

async fn run_in(
    args: &Args,
    scenario: Scenario,
    backfill: chrono::Duration,
    run_for: Option<Duration>,
    data: &Path,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let community = Arc::new(Community::new(scenario, args.seed));
    let profiles = ProfileSet::builtin().context("built-in meter profiles")?;
    let models = ModelSet::builtin().context("built-in SunSpec models")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let n = community.buildings().len();

    // History first, so the live meters continue from where the backfilled counters end. A data
    // folder kept from a clean stop carries on from its counters (never backwards).
    let now = clock.now_utc();
    let site_dir = |b: usize| data.join("sites").join(&community.buildings()[b].id);
    let state_path = data.join("state.json");
    let resume = load_state(
        &state_path,
        &community,
        args.seed,
        (0..n).any(|b| site_dir(b).join("outbox.sqlite").exists()),
    )?;
    let bf_started = Instant::now();
    let filled = match (
        &resume,
        backfill > chrono::Duration::zero() && !args.meters_only,
    ) {
        (_, true) => {
            let dirs: Vec<PathBuf> = (0..n).map(site_dir).collect();
            let c = community.clone();
            let saved = resume.clone();
            let registers = meters::registers(&community, &profiles, &models)?;
            tokio::task::spawn_blocking(move || {
                backfill::fill(&c, &registers, &dirs, now, backfill, saved.as_ref())
            })
            .await
            .context("backfill task")??
        }
        // No history asked: the counters carry on as if the meters had been switched off meanwhile.
        (Some(saved), false) => backfill::Filled {
            from: None,
            to: now,
            counters: saved.counters.clone(),
            readings: 0,
        },
        (None, false) => backfill::Filled::fresh(&community, now),
    };
    let backfill_seconds = bf_started.elapsed().as_secs_f64();
    // Bring the counters from the end of the history up to this instant, then go live.
    let counters = backfill::catch_up(&community, &filled, clock.now_utc());

    let mut meters = Vec::with_capacity(n);
    for (b, start) in counters.iter().enumerate() {
        meters.push(
            meters::start_building(&community, b, &profiles, &models, clock.clone(), start).await?,
        );
    }

    // Ports: given, or free ones on loopback.
    let port = |i: u16| -> anyhow::Result<u16> {
        match args.port_base {
            Some(base) => base
                .checked_add(i)
                .ok_or_else(|| anyhow::anyhow!("--port-base {base} is too high")),
            None => free_port(),
        }
    };
    let local = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    let central = CentralPlan {
        broker: local(port(0)?),
        web: local(port(1)?),
    };
    let mut plans = Vec::with_capacity(n);
    for (b, m) in meters.iter().enumerate() {
        plans.push(SitePlan {
            building: community.buildings()[b].id.clone(),
            web: local(port(2 + b as u16)?),
            modbus_tcp: m.tcp,
            rtu_path: m.rtu_path.clone(),
            password: random_hex(12),
            key_hex: random_hex(32),
        });
    }

    let exe = std::env::current_exe().context("cannot find the socer binary")?;
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut daemons: Vec<Daemon> = Vec::new();
    let mut hub_public_key: Option<crate::wire::HubPublicKey> = None;
    if !args.meters_only {
        let central_cfg = data.join("central.toml");
        let token = random_hex(16);
        let db = data.join("central").join("central.db");
        std::fs::create_dir_all(data.join("central"))?;
        let signing_key_file = data.join("central").join("hub-signing.key");
        hub_public_key = Some(demo_signing_key(&signing_key_file)?);
        std::fs::write(
            &central_cfg,
            configs::central_toml(
                &community.scenario,
                &central,
                &plans,
                &db,
                &token,
                &signing_key_file,
            ),
        )?;
        let cfg = central_cfg.display().to_string();
        daemons.push(Daemon::spawn(
            "central",
            &exe,
            &["central", "--config", &cfg],
            &logs.join("central.log"),
        )?);
        wait_http(
            central.web,
            "/api/v1/health",
            Duration::from_secs(30),
            &mut daemons[0],
        )
        .await?;
        for (b, plan) in plans.iter().enumerate() {
            let dir = site_dir(b);
            std::fs::create_dir_all(&dir)?;
            let key_file = dir.join("site.key");
            std::fs::write(&key_file, &plan.key_hex)?;
            let cfg_path = dir.join("site.toml");
            std::fs::write(
                &cfg_path,
                configs::site_toml(
                    &community.scenario,
                    b,
                    plan,
                    &central,
                    &dir,
                    &key_file,
                    &hub_public_key
                        .as_ref()
                        .map(crate::wire::public_key_hex)
                        .unwrap_or_default(),
                ),
            )?;
            let cfg = cfg_path.display().to_string();
            let log = logs.join(format!("site-{}.log", plan.building));
            daemons.push(Daemon::spawn(
                &format!("site {}", plan.building),
                &exe,
                &["site", "--config", &cfg],
                &log,
            )?);
        }
    }

    let endpoints = Endpoints {
        dashboard: format!("http://{}/", central.web),
        central_web: central.web,
        broker: central.broker,
        sites: plans
            .iter()
            .zip(community.buildings())
            .map(|(p, b)| SiteEndpoints {
                id: b.id.clone(),
                name: b.name.clone(),
                page: format!("http://{}/", p.web),
                web: p.web,
                modbus_tcp: p.modbus_tcp,
                modbus_rtu: p.rtu_path.clone(),
            })
            .collect(),
        pids: daemons.iter().filter_map(Daemon::pid).collect(),
        backfill_from: filled.from,
        backfill_to: filled.from.map(|_| filled.to),
        backfill_readings: filled.readings,
        backfill_seconds,
    };
    std::fs::write(
        data.join("demo.json"),
        serde_json::to_string_pretty(&endpoints)?,
    )?;
    print_banner(&endpoints, args, data, started.elapsed(), args.meters_only);

    let (stop_flex, flex_stopped) = tokio::sync::watch::channel(false);
    let mut controllers = Vec::new();
    if let (true, Some(hub_public_key)) = (args.flex == "on", hub_public_key) {
        for (b, plan) in plans.iter().enumerate() {
            let Some(depot) = flex::Depot::of(&community.buildings()[b]) else {
                continue;
            };
            println!(
                "  {:<18} charging follows the load-shift alerts (--flex off: fixed schedule); plan in {}",
                plan.building,
                data.join(format!("flex-{}.json", plan.building)).display()
            );
            controllers.push(flex::spawn(
                community.clone(),
                depot,
                flex::Link {
                    broker: central.broker,
                    community: community.scenario.community.id.clone(),
                    site: plan.building.clone(),
                    password: plan.password.clone(),
                    hub_public_key,
                },
                community.tz(),
                clock.clone(),
                Duration::from_secs(30),
                Some(data.join(format!("flex-{}.json", plan.building))),
                flex_stopped.clone(),
            ));
        }
    }

    let silencer = silence(args, &community, &meters)?;
    let code = supervise(&mut daemons, run_for).await;
    if let Some(t) = silencer {
        t.abort();
    }
    let _ = stop_flex.send(true);
    for c in controllers {
        let _ = tokio::time::timeout(Duration::from_secs(2), c).await;
    }
    children::stop_all(&mut daemons, Duration::from_secs(5)).await;
    save_state(&state_path, &community, args.seed, &meters, clock.now_utc());
    drop(meters);
    println!("socer demo: stopped.");
    Ok(code)
}

/// Schedule `--silence`: the named meters' simulated devices stop answering after
/// `--silence-after`.
fn silence(
    args: &Args,
    c: &Community,
    meters: &[meters::BuildingMeters],
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if args.silence.is_empty() {
        return Ok(None);
    }
    let after = match args.silence_after.trim() {
        "0" => Duration::ZERO,
        s => crate::site::config::parse_duration(s).ok_or_else(|| {
            anyhow::anyhow!("--silence-after {s:?}: expected a duration such as 30s")
        })?,
    };
    let mut devices = Vec::new();
    for name in &args.silence {
        let found = name.split_once('/').and_then(|(b, m)| {
            let i = c.buildings().iter().position(|x| x.id == b)?;
            meters.get(i)?.devices.get(m).cloned()
        });
        match found {
            Some(d) => devices.push((name.clone(), d)),
            None => anyhow::bail!("--silence {name:?}: no such BUILDING/METER in the scenario"),
        }
    }
    Ok(Some(tokio::spawn(async move {
        tokio::time::sleep(after).await;
        for (name, d) in devices {
            let mut f = d.faults();
            f.silent = true;
            d.set_faults(f);
            println!("  {name} no longer answers (--silence)");
        }
    })))
}

/// The state a previous clean stop left in the data folder, if it fits this scenario and seed.
/// Outboxes without a state (a killed demo) cannot be continued without counters going back.
fn load_state(
    path: &Path,
    c: &Community,
    seed: u64,
    outboxes: bool,
) -> anyhow::Result<Option<backfill::Saved>> {
    let folder = path.parent().unwrap_or(path).display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(_) if !outboxes => return Ok(None),
        Err(_) => anyhow::bail!(
            "{folder} holds a demo that did not stop cleanly (no state.json): remove it or choose another --data folder"
        ),
    };
    let saved: backfill::Saved =
        serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    if !saved.fits(c, seed) {
        anyhow::bail!(
            "{folder} holds a demo of another scenario or seed (seed {}): remove it, choose another --data folder, or pass --seed {}",
            saved.seed,
            saved.seed
        );
    }
    Ok(Some(saved))
}

/// Record every meter's counters so that a later run in the same folder carries on from them.
fn save_state(
    path: &Path,
    c: &Community,
    seed: u64,
    meters: &[meters::BuildingMeters],
    at: chrono::DateTime<chrono::Utc>,
) {
    let counters = c
        .buildings()
        .iter()
        .zip(meters)
        .map(|(b, live)| {
            b.meters
                .iter()
                .map(|m| {
                    let v = live
                        .devices
                        .get(&m.name)
                        .map(|d| d.values())
                        .unwrap_or_default();
                    model::Counter {
                        imp_wh: v.e_imp_wh.unwrap_or(0.0),
                        exp_wh: v.e_exp_wh.unwrap_or(0.0),
                    }
                })
                .collect()
        })
        .collect();
    let saved = backfill::Saved {
        seed,
        buildings: c.buildings().iter().map(|b| b.id.clone()).collect(),
        at,
        counters,
    };
    match serde_json::to_string(&saved) {
        Ok(text) => {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("socer demo: cannot save {}: {e}", path.display());
            }
        }
        Err(e) => eprintln!("socer demo: cannot save the state: {e}"),
    }
}

/// Wait until `GET path` answers 200, or the daemon exits, or `limit` passes.
async fn wait_http(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
    daemon: &mut Daemon,
) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    loop {
        if let Ok((200, _)) = http::get(addr, path, Duration::from_secs(2)).await {
            return Ok(());
        }
        if let Some(status) = daemon.exited() {
            anyhow::bail!(
                "{} exited ({status}) before answering:\n{}",
                daemon.name,
                daemon.log_tail(20)
            );
        }
        if Instant::now() > until {
            anyhow::bail!(
                "{} did not answer {path} within {limit:?}:\n{}",
                daemon.name,
                daemon.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Run until Ctrl-C, SIGTERM or `run_for`; report daemons that die meanwhile.
async fn supervise(daemons: &mut [Daemon], run_for: Option<Duration>) -> ExitCode {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("demo: cannot watch SIGTERM: {e}");
            None
        }
    };
    let deadline = run_for.map(|d| tokio::time::Instant::now() + d);
    let mut reported = vec![false; daemons.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => return ExitCode::SUCCESS,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return ExitCode::SUCCESS,
            _ = tick.tick() => {
                for (d, seen) in daemons.iter_mut().zip(reported.iter_mut()) {
                    if *seen { continue; }
                    if let Some(status) = d.exited() {
                        *seen = true;
                        eprintln!("socer demo: {} exited ({status}); last lines of {}:\n{}", d.name, d.log.display(), d.log_tail(10));
                    }
                }
            }
        }
    }
}

fn print_banner(e: &Endpoints, args: &Args, data: &Path, took: Duration, meters_only: bool) {
    println!(
        "So.CER demo — seed {}, state in {}",
        args.seed,
        data.display()
    );
    if let (Some(from), Some(to)) = (e.backfill_from, e.backfill_to) {
        println!(
            "  history: {} readings from {} to {} written to the site outboxes in {:.1} s",
            e.backfill_readings,
            from.format("%Y-%m-%d %H:%M UTC"),
            to.format("%Y-%m-%d %H:%M UTC"),
            e.backfill_seconds
        );
    }
    if !meters_only {
        println!("  dashboard        {}", e.dashboard);
        println!("  MQTT broker      mqtt://{}", e.broker);
    }
    for s in &e.sites {
        let modbus = match (&s.modbus_tcp, &s.modbus_rtu) {
            (Some(t), Some(r)) => format!("Modbus TCP {t} + RTU {r}"),
            (Some(t), None) => format!("Modbus TCP {t}"),
            (None, Some(r)) => format!("Modbus RTU {r} ({} 8N1)", meters::RTU_BAUD),
            (None, None) => String::new(),
        };
        if meters_only {
            println!("  {:<18} {modbus}", s.id);
        } else {
            println!("  {:<18} {:<28} {modbus}", s.id, s.page);
        }
    }
    println!(
        "Ready in {:.1} s. Ctrl-C stops everything.",
        took.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_days_hours_and_zero() {
        assert_eq!(parse_span("7d"), Some(chrono::Duration::days(7)));
        assert_eq!(parse_span("48h"), Some(chrono::Duration::hours(48)));
        assert_eq!(parse_span("90s"), Some(chrono::Duration::seconds(90)));
        assert_eq!(parse_span("0"), Some(chrono::Duration::zero()));
        assert_eq!(parse_span("7 days"), None);
        assert_eq!(parse_span("d"), None);
    }
}
