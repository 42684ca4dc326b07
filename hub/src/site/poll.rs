//! Polling: turns the config's buses and meters into a stream of [`Reading`]s on a channel, and
//! keeps per-meter health counters.
//!
//! One task per meter of a simulated bus; each Modbus bus is driven by the drivers' bus scheduler
//! (`socer_drivers::bus`), which also orients reversed meters.
//! A failing meter produces failed readings at its own pace and never delays the others.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use socer_drivers::clock::Clock;
use socer_drivers::link::ErrorKind;
use socer_drivers::reading::{Missing, Quality, Reading, Values};

use socer_drivers::bus as drivers_bus;
use socer_drivers::bus::TransportConfig;
use socer_drivers::plan::Intervals;
use socer_drivers::sunspec;
use socer_drivers::transport::{Backoff, SerialSettings};
use socer_drivers::ProfileSet;

use super::config::{BusConfig, MeterConfig, Parity, Role, SiteConfig};

/// Per-meter counters for health and metrics.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MeterHealth {
    pub reads_ok: u64,
    pub reads_failed: u64,
    /// Readings with some quantities missing.
    pub reads_partial: u64,
    pub latency_ms_last: f64,
    pub latency_ms_sum: f64,
    /// The distribution of poll durations, for `/metrics` (not in the health JSON).
    #[serde(skip)]
    pub latency: crate::metrics::Latencies,
    pub last_ok: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The category of `last_error` (timeout, CRC, exception and its code, refused…).
    pub last_error_kind: Option<ErrorKind>,
    /// Polls in a row that read nothing (0 after any reading with a value).
    pub consecutive_failures: u32,
    /// The first of those failed polls: since when the meter has not answered.
    pub failing_since: Option<DateTime<Utc>>,
}

impl MeterHealth {
    /// `ok`, `degraded` or `failed`, from the last reading.
    pub fn state(&self) -> &'static str {
        match (&self.last_error, self.reads_ok + self.reads_partial) {
            (None, _) => "ok",
            (Some(_), 0) => "failed",
            (Some(_), _) if self.reads_partial > 0 && self.last_ok.is_some() => "degraded",
            (Some(_), _) => "failed",
        }
    }
}

pub type HealthMap = Arc<Mutex<BTreeMap<String, MeterHealth>>>;

/// What each Modbus bus's line carried since it started (requests, timeouts, wire and busy time),
/// by bus name: the drivers' own counters, copied at each reading, for `/metrics`.
pub type LineMap = Arc<Mutex<BTreeMap<String, socer_drivers::bus::LineUse>>>;

/// A meter not heard from for longer than this many poll intervals is "not answering".
pub const SILENT_AFTER_INTERVALS: f64 = 3.0;

/// Since when a meter has not answered, if its last reading with values is older than
/// [`SILENT_AFTER_INTERVALS`] poll intervals at `now` (or it never answered and the agent has
/// been up that long): the first failed poll after that reading, else the reading's time. Pure.
pub fn silent_since(
    health: Option<&MeterHealth>,
    last_reading: Option<DateTime<Utc>>,
    interval_s: f64,
    now: DateTime<Utc>,
    up_since: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let limit =
        chrono::Duration::milliseconds((SILENT_AFTER_INTERVALS * interval_s * 1000.0) as i64);
    let heard = last_reading.unwrap_or(up_since);
    if now - heard <= limit {
        return None;
    }
    let failing = health.and_then(|h| h.failing_since);
    Some(match (failing, last_reading) {
        (Some(f), Some(r)) if f >= r => f,
        (_, Some(r)) => r,
        (Some(f), None) => f,
        (None, None) => up_since,
    })
}

/// What a poller sends: the reading, how long the poll took and, when something failed, its kind.
pub type Polled = (Reading, Duration, Option<ErrorKind>);

/// Record the outcome of one poll.
pub fn record(health: &HealthMap, r: &Reading, latency: Duration, kind: Option<ErrorKind>) {
    let Ok(mut h) = health.lock() else { return };
    let m = h.entry(r.meter.clone()).or_default();
    let ms = latency.as_secs_f64() * 1000.0;
    m.latency_ms_last = ms;
    m.latency_ms_sum += ms;
    m.latency.observe(latency);
    match r.quality {
        Quality::Good => {
            m.reads_ok += 1;
            m.last_ok = Some(r.ts);
            m.last_error = None;
            m.last_error_kind = None;
            m.consecutive_failures = 0;
            m.failing_since = None;
        }
        Quality::Partial => {
            m.reads_partial += 1;
            m.last_ok = Some(r.ts);
            m.last_error = r
                .missing
                .first()
                .map(|x| format!("{}: {}", x.quantity, x.reason));
            m.last_error_kind = kind;
            m.consecutive_failures = 0;
            m.failing_since = None;
        }
        Quality::Failed => {
            m.reads_failed += 1;
            m.last_error = Some(
                r.missing
                    .first()
                    .map(|x| x.reason.clone())
                    .unwrap_or_else(|| "no answer".into()),
            );
            m.last_error_kind = kind.or(Some(ErrorKind::Timeout));
            m.consecutive_failures = m.consecutive_failures.saturating_add(1);
            m.failing_since.get_or_insert(r.ts);
        }
    }
}

/// A meter wired the other way round: power negated, import and export swapped.
pub fn apply_reverse(r: &mut Reading) {
    r.values.p_w = r.values.p_w.map(|p| -p);
    std::mem::swap(&mut r.values.e_imp_wh, &mut r.values.e_exp_wh);
    r.values.i_a = r.values.i_a.map(|i| i.map(|x| -x));
}

/// Start polling every meter; readings go to `tx` until `stop` turns true.
pub fn spawn_all(
    cfg: &SiteConfig,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Polled>,
    lines: LineMap,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let profiles = match ProfileSet::builtin() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("built-in profiles do not load: {e}");
            ProfileSet::default()
        }
    };
    for bus in &cfg.buses {
        let meters: Vec<&MeterConfig> = cfg
            .meters
            .iter()
            .filter(|m| m.bus.get_ref() == bus.name.get_ref())
            .collect();
        if bus.simulated {
            for m in meters {
                tasks.push(tokio::spawn(simulated_meter(
                    bus.clone(),
                    m.clone(),
                    clock.clone(),
                    tx.clone(),
                    stop.clone(),
                )));
            }
            continue;
        }
        if bus.mqtt.is_some() {
            tasks.push(spawn_mqtt_bus(bus, &meters, &clock, &tx, &stop));
            continue;
        }
        let (known, unknown): (Vec<&MeterConfig>, Vec<&MeterConfig>) =
            meters.into_iter().partition(|m| {
                profiles.get(m.model.get_ref()).is_some()
                    || sunspec::model_choice(m.model.get_ref()).is_some()
            });
        if !unknown.is_empty() {
            let reason = format!("bus {}: model has no built-in profile", bus.name.get_ref());
            tasks.push(tokio::spawn(unavailable(
                unknown.into_iter().cloned().collect(),
                reason,
                clock.clone(),
                tx.clone(),
                stop.clone(),
            )));
        }
        if known.is_empty() {
            continue;
        }
        let (bus, known): (BusConfig, Vec<MeterConfig>) =
            (bus.clone(), known.into_iter().cloned().collect());
        let (profiles, clock, stop, tx, lines) = (
            profiles.clone(),
            clock.clone(),
            stop.clone(),
            tx.clone(),
            lines.clone(),
        );
        tasks.push(tokio::spawn(async move {
            run_modbus_bus(bus, known, profiles, clock, tx, lines, stop).await;
        }));
    }
    tasks
}

/// Devices that publish their own readings on an MQTT broker (`site::mqtt_devices`).
fn spawn_mqtt_bus(
    bus: &BusConfig,
    meters: &[&MeterConfig],
    clock: &Arc<dyn Clock>,
    tx: &mpsc::Sender<Polled>,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    super::mqtt_devices::spawn(
        bus.clone(),
        meters.iter().map(|m| (*m).clone()).collect(),
        clock.clone(),
        tx.clone(),
        stop.clone(),
    )
}

/// Discover SunSpec devices, start the drivers' scheduler for one Modbus bus, and forward its
/// readings with their latency. Meters that cannot be set up report why, once a minute.
async fn run_modbus_bus(
    bus: BusConfig,
    meters: Vec<MeterConfig>,
    profiles: ProfileSet,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Polled>,
    lines: LineMap,
    stop: watch::Receiver<bool>,
) {
    let bus_name = bus.name.get_ref().clone();
    match modbus_bus(&bus, &meters, &profiles, clock.clone(), stop.clone()).await {
        Ok((handle, failed_meters, mut rx)) => {
            let fails = tokio::spawn(unavailable_each(
                failed_meters,
                clock.clone(),
                tx.clone(),
                stop.clone(),
            ));
            while let Some(r) = rx.recv().await {
                let snapshot = handle.health.snapshot();
                if let Ok(mut l) = lines.lock() {
                    match l.get_mut(&bus_name) {
                        Some(line) => *line = snapshot.line.clone(),
                        None => {
                            l.insert(bus_name.clone(), snapshot.line.clone());
                        }
                    }
                }
                let (latency, kind) = snapshot
                    .meters
                    .iter()
                    .find(|h| h.meter == r.meter)
                    .map(|h| {
                        (
                            h.last_latency_us
                                .map(Duration::from_micros)
                                .unwrap_or_default(),
                            h.last_error_kind,
                        )
                    })
                    .unwrap_or_default();
                let kind = if r.quality == Quality::Good {
                    None
                } else {
                    kind
                };
                if tx.send((r, latency, kind)).await.is_err() {
                    break;
                }
            }
            let _ = handle.task.await;
            fails.abort();
        }
        Err(reason) => {
            tracing::error!("{reason}");
            unavailable(meters, reason, clock, tx, stop).await;
        }
    }
}

/// Start the drivers' scheduler for one Modbus bus. SunSpec meters are discovered first on the
/// bus's own link; those that cannot be are returned with the reason, the others are polled.
#[allow(clippy::type_complexity)]
async fn modbus_bus(
    bus: &BusConfig,
    meters: &[MeterConfig],
    profiles: &ProfileSet,
    clock: Arc<dyn Clock>,
    stop: watch::Receiver<bool>,
) -> Result<
    (
        drivers_bus::BusHandle,
        Vec<(MeterConfig, String)>,
        mpsc::Receiver<Reading>,
    ),
    String,
> {
    let name = bus.name.get_ref().clone();
    let transport = if let Some(addr) = &bus.tcp {
        TransportConfig::Tcp {
            addr: addr.get_ref().clone(),
        }
    } else if let Some(addr) = &bus.rtu_over_tcp {
        TransportConfig::RtuOverTcp {
            addr: addr.get_ref().clone(),
            baud: bus.baud,
        }
    } else if let Some(port) = &bus.serial {
        TransportConfig::Serial(SerialSettings {
            path: port.get_ref().clone(),
            baud: bus.baud,
            parity: match bus.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            },
            stop_bits: if *bus.stop_bits.get_ref() == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            },
            rs485: bus.rs485.as_ref().map(|r| r.get_ref().settings()),
        })
    } else {
        return Err(format!("bus {name}: neither serial nor tcp"));
    };
    let timeout = Duration::from_millis(bus.timeout_ms);
    let backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(30),
    };
    let mut link = transport
        .open(timeout, backoff)
        .map_err(|e| format!("bus {name}: cannot open: {e}"))?;
    let mut polled = Vec::new();
    let mut failed = Vec::new();
    for m in meters {
        let Ok(unit) = u8::try_from(*m.unit.get_ref()) else {
            continue;
        };
        let profile = if let Some(p) = profiles.get(m.model.get_ref()) {
            p.clone()
        } else if let Some(want) = sunspec::model_choice(m.model.get_ref()) {
            // Discovery reads a few hundred registers at most; bound it so one device cannot
            // hold the bus.
            let found = tokio::time::timeout(
                timeout * 40,
                sunspec::discover_profile(&mut link, unit, want),
            )
            .await;
            match found {
                Ok(Ok((_, resolved))) => {
                    tracing::info!(bus = %name, unit, meter = %m.name(), model = resolved.model.id, "SunSpec device discovered");
                    resolved.profile
                }
                Ok(Err(e)) => {
                    failed.push((m.clone(), format!("bus {name}: SunSpec discovery: {e}")));
                    continue;
                }
                Err(_) => {
                    failed.push((
                        m.clone(),
                        format!("bus {name}, unit {unit}: SunSpec discovery timed out"),
                    ));
                    continue;
                }
            }
        } else {
            continue;
        };
        polled.push(drivers_bus::MeterConfig {
            name: m.name().to_string(),
            unit,
            profile: Arc::new(profile),
            reverse: m.reverse,
            intervals: Intervals {
                fast: m.interval(),
                counter: None,
            },
        });
    }
    let config = drivers_bus::BusConfig::new(name, timeout, transport.cost_model(), polled);
    let (tx, rx) = mpsc::channel(1024);
    Ok((
        drivers_bus::spawn(config, link, clock, tx, stop),
        failed,
        rx,
    ))
}

/// Meters that could not be set up, each with its own reason, reported once a minute.
async fn unavailable_each(
    meters: Vec<(MeterConfig, String)>,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Polled>,
    stop: watch::Receiver<bool>,
) {
    for (m, reason) in &meters {
        tracing::error!(meter = %m.name(), "{reason}");
    }
    let mut set = tokio::task::JoinSet::new();
    for (m, reason) in meters {
        set.spawn(unavailable(
            vec![m],
            reason,
            clock.clone(),
            tx.clone(),
            stop.clone(),
        ));
    }
    while set.join_next().await.is_some() {}
}

/// Meters that cannot be polled report a failed reading once a minute, with the reason.
async fn unavailable(
    meters: Vec<MeterConfig>,
    reason: String,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Polled>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        for m in &meters {
            if tx
                .send((
                    failed(m, &clock, reason.clone()),
                    Duration::ZERO,
                    Some(ErrorKind::Setup),
                ))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

fn failed(m: &MeterConfig, clock: &Arc<dyn Clock>, reason: String) -> Reading {
    Reading {
        meter: m.name().to_string(),
        ts: clock.now_utc(),
        mono_ms: socer_drivers::clock::saturating_ms(clock.mono()),
        values: Values::default(),
        quality: Quality::Failed,
        missing: vec![Missing {
            quantity: "all".into(),
            reason,
        }],
        energy_integrated: false,
    }
}

/// Values of a simulated meter at wall time `t_s` (seconds): a daily PV curve for production, an
/// evening-peaked load otherwise. Counters grow with wall time, so they survive restarts.
pub fn simulated_values(role: Role, unit: i64, t_s: f64) -> Values {
    let day = t_s.rem_euclid(86_400.0) / 3600.0;
    let scale = 1.0 + unit as f64 * 0.1;
    let (p, imp, exp) = match role {
        Role::Production => {
            let sun = ((day - 6.0) / 12.0 * std::f64::consts::PI).sin().max(0.0);
            let p = -3000.0 * scale * sun;
            (p, 10.0 * scale, t_s / 3600.0 * 1000.0 * scale)
        }
        _ => {
            let evening = 1.0
                + ((day - 14.0) / 24.0 * 2.0 * std::f64::consts::PI)
                    .sin()
                    .max(0.0);
            let p = 400.0 * scale * evening;
            (p, t_s / 3600.0 * 500.0 * scale, 0.0)
        }
    };
    let i = p.abs() / 230.0 / 3.0;
    Values {
        p_w: Some((p * 10.0).round() / 10.0),
        e_imp_wh: Some(imp.floor()),
        e_exp_wh: Some(exp.floor()),
        v_v: [Some(230.1), Some(229.8), Some(231.0)],
        i_a: [Some((i * 100.0).round() / 100.0); 3],
        f_hz: Some(50.0),
        pf: Some(0.98),
        ..Values::default()
    }
}

async fn simulated_meter(
    bus: BusConfig,
    m: MeterConfig,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Polled>,
    mut stop: watch::Receiver<bool>,
) {
    let every = m.interval().unwrap_or(Duration::from_secs(1));
    let dead = bus.dead_units.contains(m.unit.get_ref());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let started = Instant::now();
        let kind = dead.then_some(ErrorKind::Timeout);
        let r = if dead {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(bus.timeout_ms)) => {}
                _ = stop.changed() => return,
            }
            failed(
                &m,
                &clock,
                format!(
                    "bus {}, unit {}: no answer within {} ms",
                    bus.name.get_ref(),
                    m.unit.get_ref(),
                    bus.timeout_ms
                ),
            )
        } else {
            let ts = clock.now_utc();
            Reading {
                meter: m.name().to_string(),
                ts,
                mono_ms: socer_drivers::clock::saturating_ms(clock.mono()),
                values: simulated_values(
                    m.role(),
                    *m.unit.get_ref(),
                    ts.timestamp_millis() as f64 / 1000.0,
                ),
                quality: Quality::Good,
                missing: vec![],
                energy_integrated: false,
            }
        };
        if tx.send((r, started.elapsed(), kind)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_is_silent_after_three_intervals_since_its_first_failure() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = |n: i64| t0 + chrono::Duration::seconds(n);
        let h = MeterHealth {
            failing_since: Some(s(5)),
            ..MeterHealth::default()
        };
        // Read at t0 every 5 s: still answering at 15 s, not at 16 s (since the failed poll at 5 s).
        assert_eq!(silent_since(Some(&h), Some(t0), 5.0, s(15), s(-100)), None);
        assert_eq!(
            silent_since(Some(&h), Some(t0), 5.0, s(16), s(-100)),
            Some(s(5))
        );
        // No failure recorded yet (a bus backing off): since the last reading.
        assert_eq!(silent_since(None, Some(t0), 5.0, s(60), s(-100)), Some(t0));
        // Never answered: silent once the agent has been up three intervals.
        assert_eq!(silent_since(None, None, 5.0, s(10), t0), None);
        assert_eq!(silent_since(Some(&h), None, 5.0, s(16), t0), Some(s(5)));
    }

    #[test]
    fn reverse_swaps_counters_and_negates_power() {
        let mut r = Reading {
            meter: "m".into(),
            ts: Utc::now(),
            mono_ms: 0,
            values: Values {
                p_w: Some(-50.0),
                e_imp_wh: Some(1.0),
                e_exp_wh: Some(9.0),
                ..Values::default()
            },
            quality: Quality::Good,
            missing: vec![],
            energy_integrated: false,
        };
        apply_reverse(&mut r);
        assert_eq!(
            (r.values.p_w, r.values.e_imp_wh, r.values.e_exp_wh),
            (Some(50.0), Some(9.0), Some(1.0))
        );
    }

    #[test]
    fn simulated_production_exports_by_day_and_counters_grow() {
        let noon = 12.0 * 3600.0;
        let v = simulated_values(Role::Production, 1, noon);
        assert!(v.p_w.unwrap() < -1000.0);
        let night = simulated_values(Role::Production, 1, 0.0);
        assert_eq!(night.p_w, Some(0.0));
        let later = simulated_values(Role::Production, 1, noon + 3600.0);
        assert!(later.e_exp_wh > v.e_exp_wh);
    }

    #[test]
    fn health_counts_ok_and_failed_and_names_the_error() {
        let h: HealthMap = Arc::default();
        let mut r = Reading {
            meter: "m".into(),
            ts: Utc::now(),
            mono_ms: 0,
            values: Values::default(),
            quality: Quality::Good,
            missing: vec![],
            energy_integrated: false,
        };
        record(&h, &r, Duration::from_millis(20), None);
        let first_failure = r.ts + chrono::Duration::seconds(5);
        r.quality = Quality::Failed;
        r.missing = vec![Missing {
            quantity: "all".into(),
            reason: "bus a, unit 3: no answer".into(),
        }];
        r.ts = first_failure;
        record(&h, &r, Duration::from_millis(300), Some(ErrorKind::Timeout));
        r.ts = first_failure + chrono::Duration::seconds(5);
        record(
            &h,
            &r,
            Duration::from_millis(300),
            Some(ErrorKind::Exception { code: 2 }),
        );
        {
            let g = h.lock().unwrap();
            let m = &g["m"];
            assert_eq!((m.reads_ok, m.reads_failed), (1, 2));
            assert_eq!(m.latency_ms_last, 300.0);
            assert_eq!(m.last_error.as_deref(), Some("bus a, unit 3: no answer"));
            assert_eq!(m.last_error_kind, Some(ErrorKind::Exception { code: 2 }));
            assert_eq!(m.consecutive_failures, 2);
            assert_eq!(
                m.failing_since,
                Some(first_failure),
                "since the first failure"
            );
        }
        r.quality = Quality::Good;
        r.missing.clear();
        record(&h, &r, Duration::from_millis(20), None);
        let g = h.lock().unwrap();
        let m = &g["m"];
        assert_eq!((m.consecutive_failures, m.failing_since), (0, None));
        assert_eq!(m.last_error_kind, None);
    }
}
