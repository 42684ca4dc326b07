//! Monthly and yearly reports and incentive answers (the I/O side): gathers the stored period
//! figures, hands them to the pure incentive rules (`incentive::{monthly_report,yearly_report}`),
//! renders JSON and CSV. A plant without data is a figure of 0 with `no_data`; a month or year
//! outside [`YEARS`] or a malformed query is 400; only a store or price-file failure is 500.
//!
//! It computes no energy or incentive rule itself, and never writes to the store.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};
use warp::http::{Response, StatusCode};

use super::balance::{Balance, CommunityPeriod};
use super::config::CentralConfig;
use super::energy::Range;
use super::incentive::{self, IncentiveParams, MonthlyReport, Plant, YearlyReport};
use super::tariff::{self, PlantTariff, Prices, Region, Technology};
use super::Hub;

/// Calendar years the hub answers for: from the first CER rules (2020) to beyond the last TIP
/// (20 years from plants built up to 2027), within the HTTP layer's years. Anything else is refused with 400, never computed.
pub const YEARS: RangeInclusive<i32> = 2020..=crate::http::query::MAX_YEAR;

/// Largest price file read, bytes (a century of quarter-hour rows is about 130 MB).
const MAX_PRICE_FILE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("month must be YYYY-MM with YYYY in {lo}–{hi}, got {0:?}", lo = YEARS.start(), hi = YEARS.end())]
    BadMonth(String),
    #[error("year must be YYYY in {lo}–{hi}, got {0:?}", lo = YEARS.start(), hi = YEARS.end())]
    BadYear(String),
    #[error("give exactly one of month=YYYY-MM or year=YYYY")]
    BadQuery,
    #[error("no zonal price configured: set [prices] zonal_eur_mwh or zonal_file")]
    NoPrices,
    #[error("price file {path}: {msg}")]
    PriceFile { path: String, msg: String },
    #[error("plant {plant}: region {region:?} is not an Italian region")]
    Region { plant: String, region: String },
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    #[error(transparent)]
    Incentive(#[from] incentive::IncentiveError),
}

impl ReportError {
    fn status(&self) -> StatusCode {
        match self {
            ReportError::BadMonth(_) | ReportError::BadYear(_) | ReportError::BadQuery => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Why a month's figures are provisional.
pub const MONTH_PROVISIONAL: &str =
    "the 55 %/45 % excess (social part) is settled by the GSE over \
    the calendar year: a month's social part is an estimate, see /api/v1/incentive?year=YYYY";

/// The zonal prices of the config: the price file (with `zonal_eur_mwh` for the periods it does
/// not cover) when given, else the constant.
pub fn prices(cfg: &CentralConfig) -> Result<Prices, ReportError> {
    if let Some(path) = &cfg.prices.zonal_file {
        let fail = |msg: String| ReportError::PriceFile {
            path: path.display().to_string(),
            msg,
        };
        let mut series = price_file_problem(path).map_err(fail)?;
        series.fallback = cfg.prices.zonal_eur_mwh;
        return Ok(Prices::Series(series));
    }
    cfg.prices
        .zonal_eur_mwh
        .map(Prices::Constant)
        .ok_or(ReportError::NoPrices)
}

pub use crate::diag::read_bounded;

/// Read and parse a price file as the hub will: `Err` with `FILE:LINE:COL: message` (or
/// `cannot read FILE: …`) when it would be refused.
pub fn price_file_problem(path: &std::path::Path) -> Result<tariff::PriceSeries, String> {
    let bytes = read_bounded(path, MAX_PRICE_FILE_BYTES)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    tariff::parse_price_bytes(&bytes).map_err(|e| format!("{}:{e}", path.display()))
}

/// Most gap warnings listed for one price file (the rest are counted in one more line).
const MAX_GAP_WARNINGS: usize = 20;

/// `FILE:LINE:1: warning: …` lines naming the hours the config's price file leaves uncovered
/// between its first and last row, and what they are paid at.
pub fn price_warnings(cfg: &CentralConfig) -> Vec<String> {
    let Some(path) = &cfg.prices.zonal_file else {
        return vec![];
    };
    let Ok(series) = price_file_problem(path) else {
        return vec![];
    };
    let then = match cfg.prices.zonal_eur_mwh {
        Some(p) => format!("zonal_eur_mwh = {p} €/MWh is used for them (flagged price_fallback)"),
        None => "no zonal_eur_mwh is set, so shared energy in them is not paid (flagged \
                 price_missing)"
            .to_string(),
    };
    let gaps = series.gaps();
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%MZ").to_string();
    let mut out: Vec<String> = gaps
        .iter()
        .take(MAX_GAP_WARNINGS)
        .map(|g| {
            let what = if g.hours == 1 {
                format!("the hour {}", fmt(g.from))
            } else {
                format!("{} hours, {} to {}", g.hours, fmt(g.from), fmt(g.to))
            };
            format!(
                "{}:{}:1: warning: no price (or not all four quarter-hours) for {what} (UTC); {then}",
                path.display(),
                g.line
            )
        })
        .collect();
    if gaps.len() > MAX_GAP_WARNINGS {
        let rest: u64 = gaps.iter().skip(MAX_GAP_WARNINGS).map(|g| g.hours).sum();
        out.push(format!(
            "{}:1:1: warning: and {} more gaps ({rest} hours)",
            path.display(),
            gaps.len() - MAX_GAP_WARNINGS
        ));
    }
    out
}

/// The eligible plants of the config, as the incentive rules take them.
pub fn plants(cfg: &CentralConfig) -> Result<Vec<Plant>, ReportError> {
    cfg.plants
        .iter()
        .filter(|p| p.eligible)
        .map(|p| {
            let region = Region::from_name(&p.region).ok_or_else(|| ReportError::Region {
                plant: p.id.clone(),
                region: p.region.clone(),
            })?;
            Ok(Plant {
                id: p.id.clone(),
                pod: p.pod.clone(),
                commissioned: p.commissioned,
                tariff: PlantTariff {
                    power_kw: p.peak_kw,
                    technology: if p.kind == "pv" {
                        Technology::Photovoltaic
                    } else {
                        Technology::Other
                    },
                    region,
                    grant_share: p.grant_share,
                },
            })
        })
        .collect()
}

/// `YYYY` (four digits, inside [`YEARS`]) → the year.
pub fn parse_year(s: &str) -> Option<i32> {
    if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i32 = s.parse().ok()?;
    YEARS.contains(&y).then_some(y)
}

/// `YYYY-MM` (the year inside [`YEARS`]) → (year, month).
pub fn parse_month(s: &str) -> Option<(i32, u32)> {
    let (y, m) = s.split_once('-')?;
    if m.len() != 2 || !m.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m): (i32, u32) = (parse_year(y)?, m.parse().ok()?);
    (1..=12).contains(&m).then_some((y, m))
}

/// The stored periods of `range` as a balance.
fn stored_balance(hub: &Hub, range: Range) -> Result<Balance, ReportError> {
    let (from, to) = (range.from.timestamp(), range.to.timestamp());
    let (substations, pods) = {
        let r = hub.reader();
        (r.substation_periods(from, to)?, r.pod_periods(from, to)?)
    };
    // The community figure of a period is the sum of its substations'.
    let mut community: BTreeMap<i64, CommunityPeriod> = BTreeMap::new();
    for s in &substations {
        let c = community
            .entry(s.start.timestamp())
            .or_insert(CommunityPeriod {
                start: s.start,
                injection_mwh: 0,
                eligible_injection_mwh: 0,
                withdrawal_mwh: 0,
                shared_mwh: 0,
                production_mwh: 0,
                consumption_mwh: 0,
                flags: Default::default(),
            });
        c.injection_mwh += s.injection_mwh;
        c.eligible_injection_mwh += s.eligible_injection_mwh;
        c.withdrawal_mwh += s.withdrawal_mwh;
        c.shared_mwh += s.shared_mwh;
        c.production_mwh += s.production_mwh;
        c.consumption_mwh += s.consumption_mwh;
        c.flags = c.flags.merge(s.flags);
    }
    Ok(Balance {
        substations,
        community: community.into_values().collect(),
        pods,
    })
}

fn params(hub: &Hub) -> Result<IncentiveParams, ReportError> {
    Ok(IncentiveParams {
        prices: prices(&hub.cfg)?,
        cuaf_eur_per_mwh: hub.cfg.prices.cuaf_eur_mwh,
        period_minutes: hub.cfg.period_minutes,
    })
}

/// The monthly report of `month` (local calendar month) from the stored periods, marked
/// provisional (the social part is settled yearly).
pub fn monthly(hub: &Hub, month: &str) -> Result<MonthlyReport, ReportError> {
    let (y, m) = parse_month(month).ok_or_else(|| ReportError::BadMonth(month.to_string()))?;
    let range = incentive::month_range(y, m, &hub.cfg.timezone)
        .ok_or_else(|| ReportError::BadMonth(month.to_string()))?;
    let balance = stored_balance(hub, range)?;
    let mut r =
        incentive::monthly_report(month, range, &balance, &plants(&hub.cfg)?, &params(hub)?)?;
    r.provisional = Some(MONTH_PROVISIONAL.to_string());
    Ok(r)
}

/// The report of calendar year `year` from the stored periods; provisional while the year is not
/// over at `now`.
pub fn yearly(hub: &Hub, year: &str, now: DateTime<Utc>) -> Result<YearlyReport, ReportError> {
    let bad = || ReportError::BadYear(year.to_string());
    let y = parse_year(year).ok_or_else(bad)?;
    let (first, last) = (
        incentive::month_range(y, 1, &hub.cfg.timezone).ok_or_else(bad)?,
        incentive::month_range(y, 12, &hub.cfg.timezone).ok_or_else(bad)?,
    );
    let range = Range {
        from: first.from,
        to: last.to,
    };
    let balance = stored_balance(hub, range)?;
    let mut r = incentive::yearly_report(
        y,
        &hub.cfg.timezone,
        &balance,
        &plants(&hub.cfg)?,
        &params(hub)?,
    )
    .ok_or_else(bad)??;
    if now < range.to {
        r.report.provisional = Some(format!(
            "the year is not over: the figures cover the periods stored until {}",
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    Ok(r)
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body)
        .unwrap_or_else(|_| Response::new(String::new()))
}

fn error(e: &ReportError) -> Response<String> {
    if e.status() == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::warn!("incentive/report: {e}");
    }
    respond(
        e.status(),
        "application/json",
        serde_json::json!({ "error": e.to_string() }).to_string(),
    )
}

/// The public part of a report (no per-member data).
fn public(r: &MonthlyReport) -> serde_json::Map<String, serde_json::Value> {
    let j = serde_json::json!({
        "range": r.range, "provisional": r.provisional.is_some(),
        "provisional_reason": r.provisional, "cuaf_eur_per_mwh": r.cuaf_eur_per_mwh,
        "community": r.community, "substations": r.substations, "plants": r.plants,
        "social_sets": r.social_sets, "flagged_periods": r.flagged_periods,
    });
    match j {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// `/api/v1/incentive?month=YYYY-MM` or `?year=YYYY`: the community, substation and plant
/// figures (public: no per-member data). Exactly one of the two parameters.
pub fn incentive_response(hub: &Hub, q: &BTreeMap<String, String>) -> Response<String> {
    let answer = match (q.get("month"), q.get("year")) {
        (Some(month), None) => monthly(hub, month).map(|r| {
            let mut j = public(&r);
            j.insert("month".into(), r.label.clone().into());
            j
        }),
        (None, Some(year)) => yearly(hub, year, Utc::now()).map(|y| {
            let mut j = public(&y.report);
            j.insert("year".into(), y.year.into());
            j.insert("months".into(), serde_json::json!(y.months));
            j.insert(
                "plants_yearly_vs_monthly".into(),
                serde_json::json!(y.plants_yearly_vs_monthly),
            );
            j
        }),
        _ => Err(ReportError::BadQuery),
    };
    match answer {
        Ok(j) => respond(
            StatusCode::OK,
            "application/json",
            serde_json::Value::Object(j).to_string(),
        ),
        Err(e) => error(&e),
    }
}

/// `/api/v1/report/YYYY-MM.{csv,json}` (a month) or `/api/v1/report/YYYY.{csv,json}` (a year):
/// the full report with per-member data (the caller has checked the bearer token).
pub fn report_response(hub: &Hub, file: &str) -> Response<String> {
    let (name, csv) = match (file.strip_suffix(".csv"), file.strip_suffix(".json")) {
        (Some(m), _) => (m, true),
        (_, Some(m)) => (m, false),
        _ => return error(&ReportError::BadMonth(file.to_string())),
    };
    if name.len() == 4 {
        return match yearly(hub, name, Utc::now()) {
            Err(e) => error(&e),
            Ok(y) if csv => respond(
                StatusCode::OK,
                "text/csv; charset=utf-8",
                incentive::yearly_csv(&y),
            ),
            Ok(y) => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&y).unwrap_or_default(),
            ),
        };
    }
    match monthly(hub, name) {
        Err(e) => error(&e),
        Ok(r) if csv => respond(
            StatusCode::OK,
            "text/csv; charset=utf-8",
            incentive::report_csv(&r),
        ),
        Ok(r) => respond(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&r).unwrap_or_default(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_strictly() {
        assert_eq!(parse_month("2026-06"), Some((2026, 6)));
        assert_eq!(parse_month("2026-13"), None);
        assert_eq!(parse_month("2026-00"), None);
        assert_eq!(parse_month("2026-6"), None);
        assert_eq!(parse_month("2026-+6"), None);
        assert_eq!(parse_month("june"), None);
        assert_eq!(parse_month("0000-01"), None);
        assert_eq!(parse_month("9999-12"), None);
        assert_eq!(parse_month("2019-12"), None);
        assert_eq!(parse_month("2099-12"), Some((2099, 12)));
        assert_eq!(parse_month("2100-01"), None);
    }

    #[test]
    fn years_parse_inside_the_supported_range() {
        assert_eq!(parse_year("2026"), Some(2026));
        assert_eq!(parse_year("2020"), Some(2020));
        assert_eq!(parse_year("2019"), None);
        assert_eq!(parse_year("2100"), None);
        assert_eq!(parse_year("+202"), None);
        assert_eq!(parse_year("-202"), None);
        assert_eq!(parse_year("20260"), None);
        assert_eq!(parse_year(""), None);
        assert_eq!(parse_year("２０２６"), None);
    }
}
