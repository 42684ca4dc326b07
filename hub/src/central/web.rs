//! The hub's HTTP API (`/api/v1/…`, `/metrics`; the dashboard at `/` comes from `crate::webui`).
//!
//! Community aggregates are public; anything with per-member data needs the report bearer token.
//! Handlers only read: they never write to the store or publish.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use warp::http::{Response, StatusCode};
use warp::Filter;

use super::balance::SubstationPeriod;
use super::energy::Flags;
use super::report;
use super::status::SiteView;
use super::Hub;
use crate::http::query;

/// Longest range `/api/v1/energy` answers in one call, days (plus the hour a DST change adds).
pub const MAX_RANGE_DAYS: i64 = 92;

type Resp = Response<String>;

fn json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_string(v).unwrap_or_else(|_| "{}".into());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(String::new()))
}

fn error(status: StatusCode, msg: impl Into<String>) -> Resp {
    json(status, &serde_json::json!({ "error": msg.into() }))
}

fn text(status: StatusCode, content_type: &str, body: String) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body)
        .unwrap_or_else(|_| Response::new(String::new()))
}

/// Serve the API on an already bound listener (so tests can bind port 0), under the hub's
/// connection limits (`http::server::Limits::CENTRAL`).
pub async fn serve(hub: Arc<Hub>, listener: tokio::net::TcpListener) {
    let page = crate::webui::routes(crate::webui::Page::Dashboard);
    let stats = Arc::new(crate::http::server::Stats::default());
    crate::http::server::serve(
        "central",
        warp::service(routes(hub, stats.clone()).or(page)),
        listener,
        crate::http::server::Limits::CENTRAL,
        stats,
        std::future::pending(),
    )
    .await;
}

/// The API's routes; `/metrics` adds the HTTP server's own counters from `http`.
pub fn routes(
    hub: Arc<Hub>,
    http: Arc<crate::http::server::Stats>,
) -> impl Filter<Extract = (Resp,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let registry = Arc::new(metrics_registry(&hub, http));
    let h = move || {
        let hub = hub.clone();
        warp::any().map(move || hub.clone())
    };
    let get = warp::get();
    let api = warp::path("api").and(warp::path("v1"));

    let now = get
        .and(api)
        .and(warp::path!("community" / "now"))
        .and(h())
        .map(|hub: Arc<Hub>| community_now(&hub));
    let sites = get
        .and(api)
        .and(warp::path!("sites"))
        .and(h())
        .map(|hub: Arc<Hub>| sites(&hub));
    let health = get
        .and(api)
        .and(warp::path!("health"))
        .and(h())
        .map(|hub: Arc<Hub>| health(&hub));
    let energy = get
        .and(api)
        .and(warp::path!("energy"))
        .and(crate::http::raw_query())
        .and(h())
        .and_then(|raw: String, hub: Arc<Hub>| async move {
            let answer = match energy_window(&hub, &raw) {
                Err(e) => crate::http::bad_request(&e),
                Ok(w) => blocking(move || energy(&hub, &w)).await,
            };
            Ok::<Resp, Infallible>(answer)
        });
    let incentive = get
        .and(api)
        .and(warp::path!("incentive"))
        .and(crate::http::raw_query())
        .and(h())
        .and_then(|raw: String, hub: Arc<Hub>| async move {
            let q = match incentive_query(&raw) {
                Ok(q) => q,
                Err(e) => return Ok::<Resp, Infallible>(crate::http::bad_request(&e)),
            };
            Ok(blocking(move || report::incentive_response(&hub, &q)).await)
        });
    let report = get
        .and(api)
        .and(warp::path!("report" / String))
        .and(warp::header::optional::<String>("authorization"))
        .and(h())
        .and_then(
            |file: String, auth: Option<String>, hub: Arc<Hub>| async move {
                if !authorised(&hub, auth.as_deref()) {
                    return Ok::<Resp, Infallible>(error(
                        StatusCode::UNAUTHORIZED,
                        "per-member reports need `Authorization: Bearer <report_token>`",
                    ));
                }
                if let Err(e) = report_file(&file) {
                    return Ok(crate::http::bad_request(&e));
                }
                Ok(blocking(move || report::report_response(&hub, &file)).await)
            },
        );
    let signal = get
        .and(api)
        .and(warp::path!("signal"))
        .and(h())
        .map(|hub: Arc<Hub>| {
            match hub
                .signal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                Some(s) => json(StatusCode::OK, s),
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no signal yet: waiting for live readings",
                ),
            }
        });
    let metrics = get.and(warp::path!("metrics")).map(move || {
        text(
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            crate::metrics::render(&registry),
        )
    });
    now.or(sites)
        .unify()
        .or(health)
        .unify()
        .or(energy)
        .unify()
        .or(incentive)
        .unify()
        .or(report)
        .unify()
        .or(signal)
        .unify()
        .or(metrics)
        .unify()
}

/// Run a handler on the blocking pool; a panic in it is one log line and a 500.
async fn blocking(f: impl FnOnce() -> Resp + Send + 'static) -> Resp {
    match tokio::task::spawn_blocking(move || crate::http::server::contain(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => {
            tracing::error!("central: a handler panicked, answered 500: {panic}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the request failed inside the server (logged)",
            )
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("handler failed: {e}"),
        ),
    }
}

/// The bearer token check (constant time in the token's length).
pub fn authorised(hub: &Hub, header: Option<&str>) -> bool {
    let Some(token) = hub.cfg.web.report_token.as_deref() else {
        return false;
    };
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn community_now(hub: &Hub) -> Resp {
    let balance = hub
        .balance
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let sites = hub.sites.all();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "community": hub.cfg.community,
            "name": hub.cfg.name,
            "balance": balance,
            "sites_online": sites.iter().filter(|s| s.state == "online").count(),
            "sites_total": sites.len(),
        }),
    )
}

#[derive(Serialize)]
struct SiteOut {
    #[serde(flatten)]
    view: SiteView,
    rejected: BTreeMap<&'static str, u64>,
}

fn sites(hub: &Hub) -> Resp {
    let out: Vec<SiteOut> = hub
        .sites
        .all()
        .into_iter()
        .map(|view| {
            let rejected = hub.metrics.rejects_of(&view.id);
            SiteOut { view, rejected }
        })
        .collect();
    let unknown = hub.metrics.rejects_of(super::ingest::UNKNOWN_SITE_LABEL);
    json(
        StatusCode::OK,
        &serde_json::json!({ "sites": out, "rejected_unknown_sites": unknown }),
    )
}

fn health(hub: &Hub) -> Resp {
    let broker = hub.broker_connected.load(Ordering::Relaxed);
    let store_ok = hub.reader().contiguous().is_ok();
    let refused = hub
        .metrics
        .refused_filters
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    let status = if broker && store_ok && refused.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &serde_json::json!({
            "status": if status == StatusCode::OK { "ok" } else { "degraded" },
            "broker_connected": broker,
            "subscriptions_refused": refused,
            "store_ok": store_ok,
            "uptime_s": hub.started.elapsed().as_secs(),
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// What `/api/v1/energy` answers: `from` and `to` required, steps of whole settlement periods,
/// at most [`MAX_RANGE_DAYS`] days and [`query::MAX_POINTS`] slots.
pub fn energy_rule(period_s: i64) -> query::WindowRule {
    let max_span_s = MAX_RANGE_DAYS * 86_400 + 3600;
    query::WindowRule {
        default_span_s: None,
        default_step_s: period_s,
        step: query::StepRule {
            min_s: period_s,
            max_s: max_span_s,
            multiple_of_s: period_s,
        },
        max_span_s,
        max_points: query::MAX_POINTS,
    }
}

fn energy_window(hub: &Hub, raw: &str) -> Result<query::Window, query::QueryError> {
    let params = query::Params::parse(raw)?;
    query::parse_window(
        &params,
        &energy_rule(hub.cfg.period_seconds()),
        &hub.cfg.timezone,
        Utc::now(),
    )
}

/// `?month=YYYY-MM` of `/api/v1/incentive`, in the years the query module allows.
pub fn incentive_query(raw: &str) -> Result<BTreeMap<String, String>, query::QueryError> {
    let params = query::Params::parse(raw)?;
    let mut q = BTreeMap::new();
    match (params.get("month"), params.get("year")) {
        (Some(month), None) => {
            query::parse_month(month)?;
            q.insert("month".to_string(), month.to_string());
        }
        (None, Some(year)) => {
            query::parse_year(year)?;
            q.insert("year".to_string(), year.to_string());
        }
        (Some(_), Some(_)) => {
            return Err(query::QueryError::new(
                "year",
                "give month=YYYY-MM or year=YYYY, not both",
            ))
        }
        (None, None) => {
            return Err(query::QueryError::new(
                "month",
                "required: month=YYYY-MM or year=YYYY",
            ))
        }
    }
    Ok(q)
}

/// `YYYY-MM.csv`, `YYYY-MM.json` (a month) or `YYYY.csv`, `YYYY.json` (a year) of
/// `/api/v1/report/…`.
pub fn report_file(file: &str) -> Result<(), query::QueryError> {
    let period = file
        .strip_suffix(".csv")
        .or_else(|| file.strip_suffix(".json"))
        .ok_or_else(|| {
            query::QueryError::new(
                "report",
                "ask for YYYY-MM.csv, YYYY-MM.json, YYYY.csv or YYYY.json",
            )
        })?;
    if !period.is_empty() && period.bytes().all(|b| b.is_ascii_digit()) {
        query::parse_year(period).map(|_| ())
    } else {
        query::parse_month(period).map(|_| ())
    }
}

/// A slot's figures, in milliwatt-hours (exact integers, as the energy rules compute them).
#[derive(Serialize, Default, Clone)]
struct Figures {
    injection_mwh: u64,
    eligible_injection_mwh: u64,
    withdrawal_mwh: u64,
    shared_mwh: u64,
    production_mwh: u64,
    consumption_mwh: u64,
    /// Some period in the slot is estimated, incomplete, has a counter reset, or is missing.
    estimated: bool,
    /// `estimated|counter_reset|incomplete|implausible` of the slot's periods; empty when clean.
    flags: String,
    /// Periods of the slot with a computed figure.
    periods: u32,
    #[serde(skip)]
    f: Flags,
}

impl Figures {
    fn add(&mut self, p: &SubstationPeriod) {
        self.injection_mwh += p.injection_mwh;
        self.eligible_injection_mwh += p.eligible_injection_mwh;
        self.withdrawal_mwh += p.withdrawal_mwh;
        self.shared_mwh += p.shared_mwh;
        self.production_mwh += p.production_mwh;
        self.consumption_mwh += p.consumption_mwh;
        self.f = self.f.merge(p.flags);
        self.periods += 1;
        self.finish();
    }

    fn finish(&mut self) {
        self.estimated = self.f.any();
        self.flags = self.f.label();
    }
}

#[derive(Serialize)]
struct Slot {
    start: DateTime<Utc>,
    /// Length of the slot: the step, or the local day's 82,800 / 86,400 / 90,000 s.
    seconds: i64,
    #[serde(flatten)]
    total: Figures,
    substations: BTreeMap<String, Figures>,
}

fn energy(hub: &Hub, w: &query::Window) -> Resp {
    let tz = hub.cfg.timezone;
    let period_s = hub.cfg.period_seconds();
    let (from, to) = (w.from, w.to);
    let local_days = w.step == query::Step::LocalDays;
    let step_s = match w.step {
        query::Step::Seconds(s) => s,
        query::Step::LocalDays => 86_400,
    };
    // `1d` is a local day of the community (23 or 25 hours on the DST change days); other steps
    // are fixed lengths aligned on the epoch. `w.points` bounds both.
    let max_slots = usize::try_from(w.points).unwrap_or(0);
    let spans: Vec<(i64, i64)> = if local_days {
        crate::days::local_days(&tz, from, to, max_slots)
            .into_iter()
            .map(|(a, b)| (a.timestamp(), b.timestamp()))
            .collect()
    } else {
        let mut v = Vec::new();
        let mut s = from.timestamp().div_euclid(step_s) * step_s;
        while s < to.timestamp() && v.len() < max_slots {
            v.push((s, s + step_s));
            s += step_s;
        }
        v
    };
    let Some(&(from_s, _)) = spans.first() else {
        return error(StatusCode::BAD_REQUEST, "to must be after from");
    };
    let rows = match hub.reader().substation_periods(from_s, to.timestamp()) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut slots: BTreeMap<i64, Slot> = BTreeMap::new();
    for &(s, e) in &spans {
        let start = Utc
            .timestamp_opt(s, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        slots.insert(
            s,
            Slot {
                start,
                seconds: e - s,
                total: Figures::default(),
                substations: BTreeMap::new(),
            },
        );
    }
    for r in &rows {
        let t = r.start.timestamp();
        let i = spans.partition_point(|&(s, _)| s <= t);
        let Some(&(key, end)) = i.checked_sub(1).and_then(|i| spans.get(i)) else {
            continue;
        };
        if t >= end {
            continue;
        }
        if let Some(slot) = slots.get_mut(&key) {
            slot.substations
                .entry(r.substation.clone())
                .or_default()
                .add(r);
        }
    }
    for slot in slots.values_mut() {
        let mut t = Figures::default();
        for f in slot.substations.values() {
            t.injection_mwh += f.injection_mwh;
            t.eligible_injection_mwh += f.eligible_injection_mwh;
            t.withdrawal_mwh += f.withdrawal_mwh;
            t.shared_mwh += f.shared_mwh;
            t.production_mwh += f.production_mwh;
            t.consumption_mwh += f.consumption_mwh;
            t.f = t.f.merge(f.f);
            t.periods = t.periods.max(f.periods);
        }
        // A slot with fewer computed periods than it spans is not complete.
        if i64::from(t.periods) * period_s < slot.seconds {
            t.f.incomplete = true;
        }
        t.finish();
        slot.total = t;
    }
    json(
        StatusCode::OK,
        &serde_json::json!({
            "from": from, "to": to, "step_s": step_s, "local_days": local_days,
            "period_minutes": hub.cfg.period_minutes,
            "slots": slots.into_values().collect::<Vec<_>>(),
        }),
    )
}

/// The hub's own `/metrics` families, read from its counters and site table at each scrape.
#[derive(Debug)]
pub struct HubMetrics {
    pub metrics: Arc<super::status::Metrics>,
    pub sites: Arc<super::status::Sites>,
}

impl prometheus_client::collector::Collector for HubMetrics {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use crate::metrics::{counter, family, gauge};
        use prometheus_client::metrics::MetricType::{Counter, Gauge, Histogram};
        let m = &self.metrics;
        let none: [(&str, &str); 0] = [];
        let counters: [(&str, &str, &std::sync::atomic::AtomicU64); 18] = [
            ("socer_messages_received", "MQTT messages received by the ingest.", &m.messages_received),
            ("socer_batches_accepted", "Authenticated readings batches.", &m.batches_accepted),
            ("socer_readings_received", "Readings in authenticated batches.", &m.readings_received),
            ("socer_readings_stored", "Readings newly stored.", &m.readings_stored),
            ("socer_dedup_hits", "Readings already stored (same site and seq).", &m.dedup_hits),
            (
                "socer_readings_lost_by_sites",
                "Readings sites dropped for lack of disk before the hub had them.",
                &m.readings_lost_by_sites,
            ),
            (
                "socer_readings_acked_not_held",
                "Readings a site declared acknowledged before that this hub's database does not hold.",
                &m.readings_acked_not_held,
            ),
            (
                "socer_resend_hints",
                "Acks that asked a site to re-send from a gap that did not fill.",
                &m.resend_hints,
            ),
            (
                "socer_batches_shed",
                "Batches not stored because the store writer was a full queue behind (re-sent on request).",
                &m.batches_shed,
            ),
            ("socer_readings_shed", "Readings in shed batches.", &m.readings_shed),
            ("socer_store_transactions", "Store transactions committed.", &m.store_transactions),
            ("socer_store_errors", "Store transactions that failed.", &m.store_errors),
            ("socer_acks_published", "End-to-end acks published.", &m.acks_published),
            ("socer_periods_computed", "Settlement periods (re)computed.", &m.periods_computed),
            (
                "socer_summaries_published",
                "Monthly site summaries published to the sites.",
                &m.summaries_published,
            ),
            (
                "socer_subscriptions_refused",
                "Subscriptions the broker refused (SUBACK failure).",
                &m.subscriptions_refused,
            ),
            (
                "socer_broker_connection_failures",
                "Broker connections lost or failed (each moves to the next broker of the list).",
                &m.broker_failures,
            ),
            (
                "socer_retained_restored",
                "Retained messages of the hub republished after another account changed or deleted them.",
                &m.retained_restored,
            ),
        ];
        for (name, help, c) in counters {
            family(&mut enc, name, help, Counter, |e| {
                counter(e, &none, c.load(Ordering::Relaxed))
            })?;
        }
        family(
            &mut enc,
            "socer_store_commit_seconds",
            "Time to write and commit a group of batches.",
            Histogram,
            |e| m.store_latency.snapshot().encode(e),
        )?;
        family(
            &mut enc,
            "socer_store_commit_seconds_max",
            "Longest store commit since the hub started.",
            Gauge,
            |e| e.encode_gauge(&m.store_latency.max_s()),
        )?;
        family(
            &mut enc,
            "socer_ingest_to_stored_seconds",
            "From a batch's arrival at the hub to its commit.",
            Histogram,
            |e| m.ingest_latency.snapshot().encode(e),
        )?;
        m.with_rejects(|rejects| {
            family(
                &mut enc,
                "socer_rejected",
                "Messages refused (and values quarantined), by site and reason.",
                Counter,
                |e| {
                    for ((site, why), n) in rejects {
                        counter(e, &[("site", site.as_str()), ("reason", why.label())], *n)?;
                    }
                    Ok(())
                },
            )
        })?;
        self.sites.with_all(|sites| {
            family(
                &mut enc,
                "socer_site_last_seen_timestamp_seconds",
                "Last message from the site (Unix time).",
                Gauge,
                |e| {
                    for v in sites {
                        if let Some(t) = v.last_seen {
                            gauge(e, &[("site", v.id.as_str())], t.timestamp())?;
                        }
                    }
                    Ok(())
                },
            )?;
            let now = chrono::Utc::now();
            let online = |v: &SiteView| super::status::liveness(&v.state, v.last_seen, now) == "online";
            type Of<'a> = &'a dyn Fn(&SiteView) -> i64;
            let per_site: [(&str, &str, Of); 3] = [
                (
                    "socer_site_online",
                    "1 while the site is online (its status, and heard from within the liveness bound).",
                    &|v| i64::from(online(v)),
                ),
                (
                    "socer_site_backlog",
                    "Readings the site reports not yet acknowledged.",
                    &|v| i64::try_from(v.backlog).unwrap_or(i64::MAX),
                ),
                (
                    "socer_site_acked_seq",
                    "Highest contiguous seq of the site stored (its ack).",
                    &|v| i64::try_from(v.acked_seq).unwrap_or(i64::MAX),
                ),
            ];
            for (name, help, of) in per_site {
                family(&mut enc, name, help, Gauge, |e| {
                    for v in sites {
                        gauge(e, &[("site", v.id.as_str())], of(v))?;
                    }
                    Ok(())
                })?;
            }
            Ok::<_, std::fmt::Error>(())
        })?;
        Ok(())
    }
}

/// The hub's `/metrics` registry: build info, [`HubMetrics`] and the HTTP server's counters.
pub fn metrics_registry(
    hub: &Hub,
    http: Arc<crate::http::server::Stats>,
) -> prometheus_client::registry::Registry {
    crate::metrics::registry(
        "central",
        vec![
            Box::new(HubMetrics {
                metrics: hub.metrics.clone(),
                sites: hub.sites.clone(),
            }),
            Box::new(crate::http::server::StatsCollector {
                server: "central",
                stats: http,
            }),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_windows_take_whole_periods_within_the_stated_limits() {
        let rule = energy_rule(3600);
        let q = |raw: &str| {
            query::parse_window(
                &query::Params::parse(raw).unwrap(),
                &rule,
                &chrono_tz::Europe::Rome,
                Utc::now(),
            )
        };
        let w = q("from=2026-06-01&to=2026-06-02&step=1h").unwrap();
        assert_eq!(w.step, query::Step::Seconds(3600));
        assert_eq!(w.from.to_rfc3339(), "2026-05-31T22:00:00+00:00");
        assert_eq!(
            q("from=2026-06-01&to=2026-06-02&step=1d").unwrap().step,
            query::Step::LocalDays
        );
        for bad in [
            "15m",
            "0h",
            "h",
            "9223372036854775807d",
            "4611686018427387844m",
            "-1h",
        ] {
            let e = q(&format!("from=2026-06-01&to=2026-06-02&step={bad}")).unwrap_err();
            assert_eq!(e.param, "step", "{bad}");
        }
        // A quarter across the October DST change (one hour longer) is still one answer.
        assert!(q("from=2026-09-01&to=2026-12-01&step=1d").is_ok());
        assert!(q("from=2026-01-01&to=2026-06-01&step=1d").is_err());
    }

    #[test]
    fn months_of_the_incentive_and_report_are_bounded() {
        assert_eq!(
            incentive_query("month=2026-06")
                .unwrap()
                .get("month")
                .map(String::as_str),
            Some("2026-06")
        );
        assert_eq!(
            incentive_query("year=2026")
                .unwrap()
                .get("year")
                .map(String::as_str),
            Some("2026")
        );
        assert!(incentive_query("year=2026&month=2026-01").is_err());
        assert!(incentive_query("year=99999").is_err());
        for bad in [
            "month=0000-01",
            "month=9999-12",
            "month=2026-13",
            "month=",
            "",
        ] {
            assert_eq!(incentive_query(bad).unwrap_err().param, "month", "{bad}");
        }
        assert_eq!(report_file("2026-06.csv"), Ok(()));
        assert_eq!(report_file("2026.json"), Ok(()));
        assert!(report_file("0000.json").is_err());
        assert!(report_file("0000-01.csv").is_err());
        assert!(report_file("2026-06.pdf").is_err());
    }
}
