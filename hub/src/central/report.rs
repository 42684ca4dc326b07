//! Monthly reports and incentive answers (the I/O side): gathers the stored period figures, hands
//! them to the pure incentive rules (`incentive::monthly_report`), renders JSON and CSV.
//!
//! It computes no energy or incentive rule itself, and never writes to the store.

use std::collections::BTreeMap;

use warp::http::{Response, StatusCode};

use super::balance::{Balance, CommunityPeriod};
use super::config::CentralConfig;
use super::incentive::{self, IncentiveParams, MonthlyReport, Plant};
use super::tariff::{self, PlantTariff, Prices, Region, Technology};
use super::Hub;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("month must be YYYY-MM, got {0:?}")]
    BadMonth(String),
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
            ReportError::BadMonth(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The zonal prices of the config: the hourly file when given, else the constant.
pub fn prices(cfg: &CentralConfig) -> Result<Prices, ReportError> {
    if let Some(path) = &cfg.prices.zonal_file {
        let text = std::fs::read_to_string(path).map_err(|e| ReportError::PriceFile {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        return tariff::parse_price_csv(&text).map_err(|e| ReportError::PriceFile {
            path: path.display().to_string(),
            msg: e.to_string(),
        });
    }
    cfg.prices
        .zonal_eur_mwh
        .map(Prices::Constant)
        .ok_or(ReportError::NoPrices)
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

/// `YYYY-MM` → (year, month).
pub fn parse_month(s: &str) -> Option<(i32, u32)> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then_some((y, m))
}

/// The monthly report of `month` (local calendar month) from the stored periods.
pub fn monthly(hub: &Hub, month: &str) -> Result<MonthlyReport, ReportError> {
    let (y, m) = parse_month(month).ok_or_else(|| ReportError::BadMonth(month.to_string()))?;
    let range = incentive::month_range(y, m, &hub.cfg.timezone)
        .ok_or_else(|| ReportError::BadMonth(month.to_string()))?;
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
    let balance = Balance {
        substations,
        community: community.into_values().collect(),
        pods,
    };
    let params = IncentiveParams {
        prices: prices(&hub.cfg)?,
        cuaf_eur_per_mwh: hub.cfg.prices.cuaf_eur_mwh,
    };
    Ok(incentive::monthly_report(
        month,
        range,
        &balance,
        &plants(&hub.cfg)?,
        &params,
    )?)
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body)
        .unwrap_or_else(|_| Response::new(String::new()))
}

fn error(e: &ReportError) -> Response<String> {
    respond(
        e.status(),
        "application/json",
        serde_json::json!({ "error": e.to_string() }).to_string(),
    )
}

/// `/api/v1/incentive?month=YYYY-MM`: the community, substation and plant figures (public: no
/// per-member data).
pub fn incentive_response(hub: &Hub, month: &str) -> Response<String> {
    match monthly(hub, month) {
        Err(e) => error(&e),
        Ok(r) => {
            let body = serde_json::json!({
                "month": r.label, "range": r.range, "cuaf_eur_per_mwh": r.cuaf_eur_per_mwh,
                "community": r.community, "substations": r.substations, "plants": r.plants,
                "flagged_periods": r.flagged_periods,
            });
            respond(StatusCode::OK, "application/json", body.to_string())
        }
    }
}

/// `/api/v1/report/YYYY-MM.csv` or `.json`: the full report with per-member data (the caller has
/// checked the bearer token).
pub fn report_response(hub: &Hub, file: &str) -> Response<String> {
    let (month, csv) = match (file.strip_suffix(".csv"), file.strip_suffix(".json")) {
        (Some(m), _) => (m, true),
        (_, Some(m)) => (m, false),
        _ => return error(&ReportError::BadMonth(file.to_string())),
    };
    match monthly(hub, month) {
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
        assert_eq!(parse_month("2026-6"), None);
        assert_eq!(parse_month("june"), None);
    }
}
