//! The site's HTTP side: live values and totals, local history, health, Prometheus metrics and
//! server-sent events for the resident page.
//!
//! It only reads the agent's state; it must never block the outbox or the pollers, and it keeps
//! answering when the disk or the broker fail (that is when a technician looks at it).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use warp::Filter;

use socer_drivers::reading::Reading;

use super::config::Role;
use super::outbox::{Outbox, OutboxStats};
use super::poll::{HealthMap, MeterHealth};
use super::timesync::TimeKeeper;
use super::uplink::{SharedUplink, UplinkState};
use crate::http::query;

/// A meter as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MeterInfo {
    pub name: String,
    pub model: String,
    pub role: Role,
    pub pod: Option<String>,
    /// The bus it is read on, and its Modbus unit id (for the technician view).
    pub bus: String,
    pub unit: i64,
    /// Where the bus is: `tcp 192.0.2.10:502`, `serial /dev/ttyUSB0 9600 8E1`, `simulated`.
    pub endpoint: String,
    /// How often the meter is polled, and its energy counters read, seconds.
    pub interval_s: f64,
    pub counter_interval_s: f64,
}

/// What the web side reads: shared with the agent.
pub struct View {
    pub site: String,
    pub community: String,
    pub name: String,
    pub timezone: String,
    pub meters: Vec<MeterInfo>,
    pub latest: Mutex<BTreeMap<String, Reading>>,
    pub health: HealthMap,
    /// Each Modbus bus's line use (requests, timeouts, wire and busy time).
    pub lines: super::poll::LineMap,
    pub outbox: Outbox,
    pub uplink: SharedUplink,
    pub time: Arc<TimeKeeper>,
    /// JSON of each new reading, for `/api/v1/events`.
    pub events: broadcast::Sender<String>,
    pub started: Instant,
    /// The community's signal and alerts as received (`site::signal`).
    pub signal: super::signal::SharedSignal,
}

/// Building totals from the latest readings, W. Production is positive when producing; grid is
/// positive when withdrawing from the grid, negative when injecting.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub production_w: f64,
    pub consumption_w: f64,
    pub grid_w: f64,
    pub storage_w: f64,
    /// What the building uses in all: grid exchange + production + storage discharge.
    pub building_load_w: f64,
}

pub fn totals(meters: &[MeterInfo], latest: &BTreeMap<String, Reading>) -> Totals {
    let mut t = Totals::default();
    for m in meters {
        let Some(p) = latest.get(&m.name).and_then(|r| r.values.p_w) else {
            continue;
        };
        match m.role {
            Role::Production => t.production_w += -p,
            Role::Consumption => t.consumption_w += p,
            Role::Grid => t.grid_w += p,
            Role::Storage => t.storage_w += -p,
        }
    }
    t.building_load_w = t.grid_w + t.production_w + t.storage_w;
    t
}

/// The building's battery as the page shows it, from the latest readings of its `storage`
/// meters: state of charge (the mean of those that report one) and power (W, positive charging,
/// negative discharging), and the oldest of their readings, so the page can tell a stale figure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Battery {
    pub soc_pct: Option<f64>,
    pub power_w: Option<f64>,
    pub ts: Option<DateTime<Utc>>,
    pub meters: Vec<String>,
}

/// `None` when the building has no storage meter.
pub fn battery(meters: &[MeterInfo], latest: &BTreeMap<String, Reading>) -> Option<Battery> {
    let storage: Vec<&MeterInfo> = meters.iter().filter(|m| m.role == Role::Storage).collect();
    if storage.is_empty() {
        return None;
    }
    let mut b = Battery {
        soc_pct: None,
        power_w: None,
        ts: None,
        meters: storage.iter().map(|m| m.name.clone()).collect(),
    };
    let mut socs = Vec::new();
    for m in storage {
        let Some(r) = latest.get(&m.name) else {
            continue;
        };
        if let Some(s) = r.values.soc_pct {
            socs.push(s);
        }
        if let Some(p) = r.values.p_w.or(r.values.bat_p_w) {
            *b.power_w.get_or_insert(0.0) += p;
        }
        b.ts = Some(b.ts.map_or(r.ts, |t| t.min(r.ts)));
    }
    if !socs.is_empty() {
        b.soc_pct = Some(socs.iter().sum::<f64>() / socs.len() as f64);
    }
    Some(b)
}

#[derive(Serialize)]
struct Now<'a> {
    site: &'a str,
    name: &'a str,
    ts: Option<DateTime<Utc>>,
    clock_synced: bool,
    totals: Totals,
    /// The battery, when the building has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    battery: Option<Battery>,
    meters: Vec<NowMeter<'a>>,
    /// This site's share of the month's shared energy, from the hub (`site/{site}/summary`).
    community_share: Option<crate::wire::SiteSummary>,
}

#[derive(Serialize)]
struct NowMeter<'a> {
    #[serde(flatten)]
    info: &'a MeterInfo,
    health: &'static str,
    reading: Option<Reading>,
    /// Since when the meter has not answered (silent longer than three poll intervals).
    silent_since: Option<DateTime<Utc>>,
    /// Age after which its last reading no longer counts as current, seconds.
    stale_after_s: f64,
    consecutive_failures: u32,
    error_kind: Option<socer_drivers::link::ErrorKind>,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct Health<'a> {
    site: &'a str,
    status: &'static str,
    uptime_s: u64,
    clock_synced: bool,
    outbox: OutboxStats,
    uplink: UplinkState,
    meters: BTreeMap<String, MeterHealthOut>,
}

#[derive(Serialize)]
struct MeterHealthOut {
    state: &'static str,
    #[serde(flatten)]
    counters: MeterHealth,
}

fn now_json(v: &View) -> String {
    let latest = v.latest.lock().map(|l| l.clone()).unwrap_or_default();
    let health = v.health.lock().map(|h| h.clone()).unwrap_or_default();
    let ts = v
        .time
        .wall_ms()
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    let up_since =
        ts.map(|t| t - chrono::Duration::from_std(v.started.elapsed()).unwrap_or_default());
    let now = Now {
        site: &v.site,
        name: &v.name,
        ts,
        clock_synced: v.time.is_synced(),
        totals: totals(&v.meters, &latest),
        battery: battery(&v.meters, &latest),
        meters: v
            .meters
            .iter()
            .map(|m| {
                let h = health.get(&m.name);
                let reading = latest.get(&m.name).cloned();
                NowMeter {
                    info: m,
                    health: h.map(MeterHealth::state).unwrap_or("unknown"),
                    silent_since: ts.zip(up_since).and_then(|(now, up)| {
                        super::poll::silent_since(
                            h,
                            reading.as_ref().map(|r| r.ts),
                            m.interval_s,
                            now,
                            up,
                        )
                    }),
                    stale_after_s: super::poll::SILENT_AFTER_INTERVALS * m.interval_s,
                    consecutive_failures: h.map(|h| h.consecutive_failures).unwrap_or(0),
                    error_kind: h.and_then(|h| h.last_error_kind),
                    last_error: h.and_then(|h| h.last_error.clone()),
                    reading,
                }
            })
            .collect(),
        community_share: v.signal.lock().ok().and_then(|s| s.summary.clone()),
    };
    serde_json::to_string(&now).unwrap_or_default()
}

fn health_json(v: &View) -> String {
    let outbox = v.outbox.stats();
    let uplink = v.uplink.lock().map(|u| u.clone()).unwrap_or_default();
    let meters: BTreeMap<String, MeterHealthOut> = v
        .health
        .lock()
        .map(|h| {
            h.iter()
                .map(|(k, m)| {
                    (
                        k.clone(),
                        MeterHealthOut {
                            state: m.state(),
                            counters: m.clone(),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // A refused subscription (the ack's, say) stops acks: nothing would ever be released.
    let status = if outbox.last_error.is_some()
        || outbox.dropped > 0
        || !uplink.refused_filters.is_empty()
    {
        "error"
    } else if !uplink.connected || !v.time.is_synced() || meters.values().any(|m| m.state != "ok") {
        "degraded"
    } else {
        "ok"
    };
    let h = Health {
        site: &v.site,
        status,
        uptime_s: v.started.elapsed().as_secs(),
        clock_synced: v.time.is_synced(),
        outbox,
        uplink,
        meters,
    };
    serde_json::to_string(&h).unwrap_or_default()
}

/// The site's own `/metrics` families, read from the agent's state at each scrape.
pub struct SiteMetrics(pub Arc<View>);

impl std::fmt::Debug for SiteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SiteMetrics").field(&self.0.site).finish()
    }
}

impl prometheus_client::collector::Collector for SiteMetrics {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use crate::metrics::{counter, counter_f64, family, gauge};
        use prometheus_client::metrics::MetricType::{Counter, Gauge, Histogram};
        let v = &self.0;
        let site = v.site.as_str();
        {
            // Encoded under the health lock (no copy of the map): a few µs per meter.
            let health = v.health.lock().unwrap_or_else(|e| e.into_inner());
            family(
                &mut enc,
                "socer_meter_reads",
                "Polls of a meter by outcome: ok, partial (some quantities missing), failed.",
                Counter,
                |m| {
                    for (meter, h) in health.iter() {
                        for (result, n) in [
                            ("ok", h.reads_ok),
                            ("partial", h.reads_partial),
                            ("failed", h.reads_failed),
                        ] {
                            let l = [
                                ("site", site),
                                ("meter", meter.as_str()),
                                ("result", result),
                            ];
                            counter(m, &l, n)?;
                        }
                    }
                    Ok(())
                },
            )?;
            family(
                &mut enc,
                "socer_meter_read_last_latency_seconds",
                "Duration of the meter's last poll.",
                Gauge,
                |m| {
                    for (meter, h) in health.iter() {
                        let l = [("site", site), ("meter", meter.as_str())];
                        gauge(m, &l, h.latency_ms_last / 1000.0)?;
                    }
                    Ok(())
                },
            )?;
            family(
                &mut enc,
                "socer_meter_read_latency_seconds",
                "Duration of a meter's polls.",
                Histogram,
                |m| {
                    for (meter, h) in health.iter() {
                        let l = [("site", site), ("meter", meter.as_str())];
                        h.latency.encode(&mut m.encode_family(&l)?)?;
                    }
                    Ok(())
                },
            )?;
        }
        {
            let lines = v.lines.lock().unwrap_or_else(|e| e.into_inner());
            type Count = fn(&socer_drivers::bus::LineUse) -> u64;
            let counts: [(&str, &str, Count); 2] = [
                (
                    "socer_bus_requests",
                    "Requests a Modbus bus put on its line.",
                    |l| l.requests,
                ),
                (
                    "socer_bus_timeouts",
                    "Requests on a Modbus bus that got no answer in time.",
                    |l| l.timeouts,
                ),
            ];
            for (name, help, value) in counts {
                family(&mut enc, name, help, Counter, |m| {
                    for (bus, l) in lines.iter() {
                        counter(m, &[("site", site), ("bus", bus.as_str())], value(l))?;
                    }
                    Ok(())
                })?;
            }
            type Millis = fn(&socer_drivers::bus::LineUse) -> f64;
            let times: [(&str, &str, Millis); 2] = [
                (
                    "socer_bus_wire_seconds",
                    "The wire-time minimum of every request and answer on a Modbus bus: what the \
                     line must carry at its baud rate, silences included.",
                    |l| l.wire_ms,
                ),
                (
                    "socer_bus_busy_seconds",
                    "Time a Modbus bus spent polling (a poll's first request to its end); against \
                     wall time, the line's load; against the wire time, its overhead.",
                    |l| l.busy_ms,
                ),
            ];
            for (name, help, ms) in times {
                family(&mut enc, name, help, Counter, |m| {
                    for (bus, l) in lines.iter() {
                        let labels = [("site", site), ("bus", bus.as_str())];
                        counter_f64(m, &labels, ms(l) / 1000.0)?;
                    }
                    Ok(())
                })?;
            }
        }
        let s = v.outbox.stats();
        let (connected, sent, acks_rejected, subs_refused, filters_refused) = v
            .uplink
            .lock()
            .map(|u| {
                (
                    u.connected,
                    u.readings_sent,
                    u.acks_rejected,
                    u.subscriptions_refused,
                    u.refused_filters.len(),
                )
            })
            .unwrap_or_default();
        let (summaries_refused, broadcasts_refused) = v
            .signal
            .lock()
            .map(|g| (g.summaries_refused, g.broadcasts_refused))
            .unwrap_or_default();
        let oldest_age = s
            .oldest_unacked
            .zip(v.time.wall_ms())
            .map(|(t, now)| ((now - t.timestamp_millis()).max(0) as f64) / 1000.0)
            .unwrap_or(0.0);
        let l = [("site", site)];
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let seconds: [(&str, &str, f64); 2] = [
            (
                "socer_outbox_oldest_unacked_age_seconds",
                "Age of the oldest reading not yet acknowledged (0 when none).",
                oldest_age,
            ),
            (
                "socer_uptime_seconds",
                "Time since the agent started.",
                v.started.elapsed().as_secs_f64(),
            ),
        ];
        for (name, help, value) in seconds {
            family(&mut enc, name, help, Gauge, |m| gauge(m, &l, value))?;
        }
        let gauges: [(&str, &str, i64); 10] = [
            (
                "socer_uplink_refused_filters",
                "Filters the broker refuses on the current connection.",
                i64::try_from(filters_refused).unwrap_or(i64::MAX),
            ),
            (
                "socer_outbox_backlog",
                "Readings in the outbox not yet acknowledged by the hub.",
                int(s.backlog),
            ),
            (
                "socer_outbox_untimed",
                "Readings held back until the clock is synchronised.",
                int(s.untimed),
            ),
            (
                "socer_outbox_disk_bytes",
                "Size of the outbox database on disk.",
                int(s.disk_bytes),
            ),
            (
                "socer_outbox_budget_bytes",
                "Disk budget of the outbox: over it the oldest unacknowledged readings are dropped.",
                int(s.budget_bytes),
            ),
            (
                "socer_outbox_last_seq",
                "Sequence number of the newest reading kept.",
                int(s.last_seq),
            ),
            (
                "socer_outbox_acked_seq",
                "Highest sequence number the hub acknowledged.",
                int(s.acked),
            ),
            (
                "socer_outbox_write_error",
                "1 while the last write to the outbox failed (disk full or failing).",
                i64::from(s.last_error.is_some()),
            ),
            (
                "socer_uplink_connected",
                "1 while connected to the broker.",
                i64::from(connected),
            ),
            (
                "socer_clock_synced",
                "1 while the wall clock is synchronised.",
                i64::from(v.time.is_synced()),
            ),
        ];
        for (name, help, value) in gauges {
            family(&mut enc, name, help, Gauge, |m| gauge(m, &l, value))?;
        }
        let counters: [(&str, &str, u64); 6] = [
            (
                "socer_uplink_subscriptions_refused",
                "Subscriptions the broker refused (SUBACK failure).",
                subs_refused,
            ),
            (
                "socer_outbox_dropped",
                "Readings dropped unacknowledged because the outbox was over its disk budget.",
                s.dropped,
            ),
            (
                "socer_uplink_readings_sent",
                "Readings published to the broker (re-sends included).",
                sent,
            ),
            (
                "socer_uplink_acks_rejected",
                "Acks from the hub refused (bad signature, wrong site, replay).",
                acks_rejected,
            ),
            (
                "socer_summaries_refused",
                "Monthly summaries from the hub refused (bad signature or stale).",
                summaries_refused,
            ),
            (
                "socer_broadcasts_refused",
                "Community signal and alert messages refused (bad signature or stale).",
                broadcasts_refused,
            ),
        ];
        for (name, help, n) in counters {
            family(&mut enc, name, help, Counter, |m| counter(m, &l, n))?;
        }
        Ok(())
    }
}

/// The site's `/metrics` registry: build info, [`SiteMetrics`] and the HTTP server's counters.
pub fn metrics_registry(
    view: Arc<View>,
    http: Arc<crate::http::server::Stats>,
) -> prometheus_client::registry::Registry {
    crate::metrics::registry(
        "site",
        vec![
            Box::new(SiteMetrics(view)),
            Box::new(crate::http::server::StatsCollector {
                server: "site",
                stats: http,
            }),
        ],
    )
}

/// What `/api/v1/history` answers: by default the last 24 h in 15-minute steps; steps of whole
/// minutes (the outbox keeps 1-min and 15-min aggregates) or local days; at most
/// [`MAX_HISTORY_DAYS`] days and [`query::MAX_POINTS`] points per meter.
pub fn history_rule() -> query::WindowRule {
    let max_span_s = MAX_HISTORY_DAYS as i64 * 86_400 + 3600;
    query::WindowRule {
        default_span_s: Some(86_400),
        default_step_s: 900,
        step: query::StepRule {
            min_s: 60,
            max_s: max_span_s,
            multiple_of_s: 60,
        },
        max_span_s,
        max_points: query::MAX_POINTS,
    }
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    view: Arc<View>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let with_view = {
        let v = view.clone();
        warp::any().map(move || v.clone())
    };
    let json = |body: String| warp::reply::with_header(body, "content-type", "application/json");
    let now = warp::path!("api" / "v1" / "now")
        .and(warp::get())
        .and(with_view.clone())
        .map(move |v: Arc<View>| json(now_json(&v)));
    let signal = warp::path!("api" / "v1" / "signal")
        .and(warp::get())
        .and(with_view.clone())
        .map(move |v: Arc<View>| {
            let r = v.signal.lock().map(|r| r.clone()).unwrap_or_default();
            json(serde_json::to_string(&r).unwrap_or_default())
        });
    let health = warp::path!("api" / "v1" / "health")
        .and(warp::get())
        .and(with_view.clone())
        .map(move |v: Arc<View>| json(health_json(&v)));
    let stats = Arc::new(crate::http::server::Stats::default());
    let registry = Arc::new(metrics_registry(view.clone(), stats.clone()));
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            crate::metrics::render(&registry),
            "content-type",
            crate::metrics::CONTENT_TYPE,
        )
    });
    let history = warp::path!("api" / "v1" / "history")
        .and(warp::get())
        .and(crate::http::raw_query())
        .and(with_view.clone())
        .then(|raw: String, v: Arc<View>| async move {
            let tz = v
                .timezone
                .parse::<chrono_tz::Tz>()
                .unwrap_or(chrono_tz::UTC);
            let window = query::Params::parse(&raw)
                .and_then(|p| query::parse_window(&p, &history_rule(), &tz, Utc::now()));
            let (code, body) = match window {
                Err(e) => (warp::http::StatusCode::BAD_REQUEST, e.to_json()),
                Ok(w) => match w.step {
                    query::Step::LocalDays => {
                        let max = usize::try_from(w.points).unwrap_or(0);
                        let days = crate::days::local_days(&tz, w.from, w.to, max);
                        history_reply(w.from, w.to, v.outbox.history_spans(days).await)
                    }
                    query::Step::Seconds(step) => {
                        history_reply(w.from, w.to, v.outbox.history(w.from, w.to, step).await)
                    }
                },
            };
            warp::reply::with_status(
                warp::reply::with_header(body, "content-type", "application/json"),
                code,
            )
        });
    let events = warp::path!("api" / "v1" / "events")
        .and(warp::get())
        .and(with_view.clone())
        .map(|v: Arc<View>| {
            let rx = v.events.subscribe();
            let stream = tokio_stream_from(rx).map(|data| {
                Ok::<_, Infallible>(warp::sse::Event::default().event("reading").data(data))
            });
            warp::sse::reply(warp::sse::keep_alive().stream(stream))
        });
    let index = crate::webui::routes(crate::webui::Page::Resident);
    let routes = now
        .or(signal)
        .or(health)
        .or(metrics)
        .or(history)
        .or(events)
        .or(index);
    crate::http::server::serve(
        "site",
        warp::service(routes),
        listener,
        crate::http::server::Limits::SITE,
        stats,
        shutdown,
    )
    .await;
}

/// Longest `step=1d` answer, days.
pub const MAX_HISTORY_DAYS: usize = 400;

fn history_reply(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    rows: Result<Vec<super::outbox::HistoryRow>, super::outbox::OutboxError>,
) -> (warp::http::StatusCode, String) {
    match rows {
        Ok(rows) => (
            warp::http::StatusCode::OK,
            serde_json::json!({ "from": from, "to": to, "rows": rows }).to_string(),
        ),
        Err(e) => (
            warp::http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

/// A broadcast receiver as a stream; a slow client skips what it missed.
fn tokio_stream_from(
    rx: broadcast::Receiver<String>,
) -> impl futures_util::Stream<Item = String> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(s) => return Some((s, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use socer_drivers::reading::{Quality, Values};

    use super::*;

    fn r(p: f64) -> Reading {
        Reading {
            meter: String::new(),
            ts: Utc::now(),
            mono_ms: 0,
            values: Values {
                p_w: Some(p),
                ..Values::default()
            },
            quality: Quality::Good,
            missing: vec![],
            energy_integrated: false,
        }
    }

    #[test]
    fn totals_follow_the_sign_conventions_of_each_role() {
        let info = |name: &str, role| MeterInfo {
            name: name.into(),
            model: "x".into(),
            role,
            pod: None,
            bus: "lan".into(),
            unit: 1,
            endpoint: "tcp 127.0.0.1:502".into(),
            interval_s: 5.0,
            counter_interval_s: 60.0,
        };
        let meters = vec![
            info("grid", Role::Grid),
            info("pv", Role::Production),
            info("lift", Role::Consumption),
        ];
        let latest: BTreeMap<String, Reading> = [
            ("grid".to_string(), r(-1200.0)),
            ("pv".to_string(), r(-3000.0)),
            ("lift".to_string(), r(500.0)),
        ]
        .into_iter()
        .collect();
        let t = totals(&meters, &latest);
        assert_eq!(t.production_w, 3000.0);
        assert_eq!(t.grid_w, -1200.0, "injecting");
        assert_eq!(t.consumption_w, 500.0);
        assert_eq!(t.building_load_w, 1800.0);
    }

    #[test]
    fn the_battery_shows_its_charge_and_power_only_where_there_is_one() {
        let info = |name: &str, role| MeterInfo {
            name: name.into(),
            model: "x".into(),
            role,
            pod: None,
            bus: "lan".into(),
            unit: 1,
            endpoint: "tcp 127.0.0.1:502".into(),
            interval_s: 5.0,
            counter_interval_s: 60.0,
        };
        let mut bat = r(0.0);
        bat.values.p_w = None;
        bat.values.bat_p_w = Some(-1500.0);
        bat.values.soc_pct = Some(72.5);
        let mut bat2 = r(400.0);
        bat2.values.soc_pct = Some(40.5);
        let latest: BTreeMap<String, Reading> = [
            ("grid".to_string(), r(100.0)),
            ("bat".to_string(), bat),
            ("bat2".to_string(), bat2),
        ]
        .into_iter()
        .collect();
        assert_eq!(battery(&[info("grid", Role::Grid)], &latest), None);
        let b = battery(
            &[
                info("grid", Role::Grid),
                info("bat", Role::Storage),
                info("bat2", Role::Storage),
            ],
            &latest,
        );
        let b = b.unwrap_or_else(|| panic!("a storage meter is a battery"));
        assert_eq!(b.soc_pct, Some(56.5));
        assert_eq!(
            b.power_w,
            Some(-1100.0),
            "1500 W out of one, 400 W into the other"
        );
        assert_eq!(b.meters, ["bat", "bat2"]);
        // A storage meter not read yet: the battery is there, its figures are not.
        let none = battery(&[info("new", Role::Storage)], &latest).unwrap_or_else(|| panic!());
        assert_eq!((none.soc_pct, none.power_w, none.ts), (None, None, None));
    }

    #[test]
    fn history_takes_minutes_or_local_days_within_the_stated_limits() {
        let now = Utc::now();
        let q = |raw: &str| {
            query::parse_window(
                &query::Params::parse(raw).unwrap(),
                &history_rule(),
                &chrono_tz::Europe::Rome,
                now,
            )
        };
        let w = q("").unwrap();
        assert_eq!((w.to - w.from).num_hours(), 24);
        assert_eq!(w.step, query::Step::Seconds(900));
        assert_eq!(q("step=900").unwrap().step, query::Step::Seconds(900));
        assert_eq!(q("step=1h").unwrap().step, query::Step::Seconds(3600));
        assert_eq!(q("step=1d").unwrap().step, query::Step::LocalDays);
        for bad in [
            "soon",
            "100000000000000000000s",
            "1w",
            "30s",
            "-15m",
            "NaN",
            "",
        ] {
            assert_eq!(
                q(&format!("step={bad}")).unwrap_err().param,
                "step",
                "{bad}"
            );
        }
        let e = q("step=1m&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z").unwrap_err();
        assert!(e.message.contains("at most 3000 points"), "{e}");
    }
}
