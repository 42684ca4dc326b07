//! The incentive tariff (TIP) of one plant for one hour, and the hourly zonal price it depends on.
//!
//! Pure: no I/O, no clock (the price file is parsed from text the caller read). It must never
//! return a negative tariff, nor silently treat an unknown region or a missing price as zero.
//!
//! # API (called by the central hub and by `incentive`)
//! - [`tip_eur_per_mwh`]`(&PlantTariff, pz_eur_per_mwh) -> f64`: the TIP in €/MWh.
//! - [`grant_factor`]`(grant_share) -> f64`: the reduction F.
//! - [`Region::from_name`]`("Lombardia") -> Option<Region>`.
//! - [`Prices`] (a constant, or a price file with its fallback) with
//!   [`Prices::pz_for`]`(period_start, period_minutes) -> Result<Option<Pz>, _>` (the price and
//!   whether it came from the file, the constant or the fallback; `None`: no price), and
//!   [`parse_price_csv`]`(text)` / [`parse_price_bytes`]`(bytes) -> Result<PriceSeries, _>`, with
//!   [`PriceSeries::gaps`] for the hours a file leaves uncovered.
//!
//! # Prices per quarter-hour
//! Since 1 October 2025 the Italian day-ahead market (GME, in the European single day-ahead
//! coupling) clears a price every 15 minutes (MTU of 15 minutes; ARERA 304/2024/R/eel). A price
//! file may hold hourly rows, quarter-hour rows, or both (hourly before the change, quarters
//! after). For an hourly settlement period the price of an hour priced per quarter is the
//! arithmetic mean of its four quarters (the hour's reference price as an equal-weight average of
//! its MTUs); with `period_minutes = 15` each quarter uses its own price. An hour is covered only
//! when the file gives its hourly price or all four quarters.
//!
//! # The rule (DM MASE 7 December 2023 n. 414, Allegato 1, as DESIGN.md states it)
//! 1. Fixed part by plant power P: 80 €/MWh (P ≤ 200 kW), 70 (200 < P ≤ 600 kW), 60 (P > 600 kW).
//! 2. Variable part max(0, 180 − Pz), Pz the hourly zonal price (NORD for Sondrio); the sum of the
//!    two is capped at 120 / 110 / 100 €/MWh for the same classes.
//! 3. Photovoltaic plants get a geographic correction added after the cap: +10 €/MWh in the
//!    northern regions (Emilia-Romagna, Friuli-Venezia Giulia, Liguria, Lombardia, Piemonte,
//!    Trentino-Alto Adige, Valle d'Aosta, Veneto), +4 €/MWh in the central ones (Lazio, Marche,
//!    Toscana, Umbria, Abruzzo), nothing elsewhere.
//! 4. A plant with a capital grant (PNRR) gets the whole tariff × (1 − F), F = 0.5 × s / 0.40 where
//!    s is the grant's share of the eligible cost. The grant is at most 40 %, so s is clamped to
//!    [0, 0.40] and F to [0, 0.5]: F is 0 without grant and 0.5 at the 40 % maximum.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use crate::energy::Period;

/// Errors of the tariff inputs, naming what is wrong and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TariffError {
    #[error("zonal price {price} for the period starting {hour} is not a finite number")]
    BadPrice { hour: DateTime<Utc>, price: f64 },
    /// A price file problem at a 1-based line and column (characters); rendered `LINE:COL: msg`
    /// so that the caller prefixes the file name.
    #[error("{line}:{col}: {msg}")]
    PriceLine {
        line: usize,
        col: usize,
        msg: String,
    },
}

/// The three regional groups of the geographic correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    North,
    Centre,
    South,
}

impl Region {
    /// The group of an Italian region by its Italian name (case, accents, spaces, hyphens and
    /// apostrophes ignored); `None` for a name that is not a region.
    pub fn from_name(name: &str) -> Option<Region> {
        let key: String = name
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .map(|c| match c {
                'à' | 'á' => 'a',
                'è' | 'é' => 'e',
                'ì' => 'i',
                'ò' => 'o',
                'ù' | 'ü' => 'u',
                c => c,
            })
            .collect();
        const NORTH: [&str; 9] = [
            "emiliaromagna",
            "friuliveneziagiulia",
            "liguria",
            "lombardia",
            "piemonte",
            "trentinoaltoadige",
            "trentinoaltoadigesudtirol",
            "valledaosta",
            "veneto",
        ];
        const CENTRE: [&str; 5] = ["lazio", "marche", "toscana", "umbria", "abruzzo"];
        const SOUTH: [&str; 7] = [
            "molise",
            "campania",
            "puglia",
            "basilicata",
            "calabria",
            "sicilia",
            "sardegna",
        ];
        if NORTH.contains(&key.as_str()) {
            Some(Region::North)
        } else if CENTRE.contains(&key.as_str()) {
            Some(Region::Centre)
        } else if SOUTH.contains(&key.as_str()) {
            Some(Region::South)
        } else {
            None
        }
    }
}

/// What kind of renewable plant: only photovoltaic gets the geographic correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Technology {
    Photovoltaic,
    Other,
}

/// What the tariff of a plant depends on besides the price.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlantTariff {
    pub power_kw: f64,
    pub technology: Technology,
    pub region: Region,
    /// Capital grant as a share of the eligible cost (0.0 without grant; 0.40 at most).
    pub grant_share: f64,
}

/// Fixed part and cap (€/MWh) of the plant's size class.
pub fn size_class(power_kw: f64) -> (f64, f64) {
    if power_kw <= 200.0 {
        (80.0, 120.0)
    } else if power_kw <= 600.0 {
        (70.0, 110.0)
    } else {
        (60.0, 100.0)
    }
}

/// The grant reduction factor F = 0.5 × s / 0.40, with s clamped to [0, 0.40].
pub fn grant_factor(grant_share: f64) -> f64 {
    let s = if grant_share.is_finite() {
        grant_share.clamp(0.0, 0.40)
    } else {
        0.0
    };
    0.5 * s / 0.40
}

/// The TIP in €/MWh for a plant when the zonal price is `pz_eur_per_mwh`.
pub fn tip_eur_per_mwh(t: &PlantTariff, pz_eur_per_mwh: f64) -> f64 {
    let (fixed, cap) = size_class(t.power_kw);
    let variable = (180.0 - pz_eur_per_mwh).max(0.0);
    let mut tip = (fixed + variable).min(cap);
    if t.technology == Technology::Photovoltaic {
        tip += match t.region {
            Region::North => 10.0,
            Region::Centre => 4.0,
            Region::South => 0.0,
        };
    }
    tip * (1.0 - grant_factor(t.grant_share))
}

/// Lowest and highest zonal price a file may hold, €/MWh. The single day-ahead coupling
/// harmonised limits are −500 and +4,000 €/MWh (raised automatically in steps when reached), so
/// these leave room while refusing a unit mistake (€/kWh, c€/kWh) or a garbled number.
pub const PRICE_MIN_EUR_MWH: f64 = -1_000.0;
pub const PRICE_MAX_EUR_MWH: f64 = 10_000.0;
/// Calendar years a price may be dated in (the TIP lasts 20 years from plants built up to 2027).
pub const PRICE_YEARS: std::ops::RangeInclusive<i32> = 2000..=2100;
/// Most rows a price file may hold (a century of quarter-hours is about 3.5 million).
pub const MAX_PRICE_ROWS: usize = 4_000_000;
/// Longest line of a price file, bytes.
const MAX_LINE_BYTES: usize = 200;

/// The price of one hour as the file gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HourPrice {
    /// One price for the whole hour (markets before the 15-minute MTU of 1 October 2025).
    Hourly(f64),
    /// The four quarter-hour prices (`None` where the file has no row for that quarter).
    Quarters([Option<f64>; 4]),
}

/// Where the price of a period came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// The configured constant (no price file).
    Constant,
    /// The price file.
    File,
    /// The configured constant, because the price file does not cover the period.
    Fallback,
}

/// A zonal price and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pz {
    pub eur_per_mwh: f64,
    pub source: PriceSource,
}

/// A price file: prices per UTC hour (whole hours or quarter-hours), and the constant used for
/// periods it does not cover.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PriceSeries {
    pub hours: BTreeMap<DateTime<Utc>, HourPrice>,
    /// The 1-based file line of each hour's first row (for warnings that point into the file).
    pub lines: BTreeMap<DateTime<Utc>, usize>,
    /// The price of uncovered periods (`[prices] zonal_eur_mwh`); `None`: they have no price.
    pub fallback: Option<f64>,
}

/// The zonal price Pz, €/MWh.
#[derive(Debug, Clone, PartialEq)]
pub enum Prices {
    /// One price for every period (a configured estimate).
    Constant(f64),
    /// A price file, with its fallback.
    Series(PriceSeries),
}

impl Prices {
    /// An hourly series without fallback (tests and simple callers).
    pub fn hourly(m: BTreeMap<DateTime<Utc>, f64>) -> Prices {
        Prices::Series(PriceSeries {
            hours: m
                .into_iter()
                .map(|(h, p)| (h, HourPrice::Hourly(p)))
                .collect(),
            ..PriceSeries::default()
        })
    }

    /// The price of the settlement period starting at `start`, `period_minutes` long (60 or 15):
    /// - an hour priced as a whole gives its price to the hour and to each of its quarters;
    /// - an hour priced per quarter gives a 15-minute period its own quarter's price, and an hourly
    ///   period the arithmetic mean of its four quarters (all four needed);
    /// - a period the file does not cover takes the fallback (`PriceSource::Fallback`), and
    ///   without a fallback it has no price (`Ok(None)`).
    pub fn pz_for(
        &self,
        start: DateTime<Utc>,
        period_minutes: u32,
    ) -> Result<Option<Pz>, TariffError> {
        let hour = Period::HOUR.floor(start);
        let finite = |p: f64, source| {
            if p.is_finite() {
                Ok(Some(Pz {
                    eur_per_mwh: p,
                    source,
                }))
            } else {
                Err(TariffError::BadPrice { hour, price: p })
            }
        };
        let s = match self {
            Prices::Constant(p) => return finite(*p, PriceSource::Constant),
            Prices::Series(s) => s,
        };
        let from_file = match s.hours.get(&hour) {
            None => None,
            Some(HourPrice::Hourly(p)) => Some(*p),
            Some(HourPrice::Quarters(q)) if period_minutes < 60 => {
                let i = quarter_index(start);
                q[i]
            }
            Some(HourPrice::Quarters(q)) => {
                let all: Option<Vec<f64>> = q.iter().copied().collect();
                all.map(|v| v.iter().sum::<f64>() / 4.0)
            }
        };
        match (from_file, s.fallback) {
            (Some(p), _) => finite(p, PriceSource::File),
            (None, Some(f)) => finite(f, PriceSource::Fallback),
            (None, None) => Ok(None),
        }
    }
}

/// Which quarter of its hour a time falls in (0–3).
fn quarter_index(ts: DateTime<Utc>) -> usize {
    ((ts.timestamp().rem_euclid(3600)) / 900) as usize
}

/// A run of consecutive hours a price file leaves (wholly or partly) without a price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceGap {
    /// First uncovered hour (UTC start).
    pub from: DateTime<Utc>,
    /// Last uncovered hour (UTC start).
    pub to: DateTime<Utc>,
    pub hours: u64,
    /// The file line of the first covered hour after the gap (or of the partly covered hour).
    pub line: usize,
}

impl PriceSeries {
    /// The uncovered hours between the file's first and last hour, as runs in time order: an hour
    /// with no row, or with quarter rows but not all four. Computed from the hours present (never
    /// by walking every hour), so any file answers in time proportional to its rows.
    pub fn gaps(&self) -> Vec<PriceGap> {
        let mut out: Vec<PriceGap> = Vec::new();
        let mut prev: Option<DateTime<Utc>> = None;
        for (&h, price) in &self.hours {
            let line = self.lines.get(&h).copied().unwrap_or(0);
            if let Some(p) = prev {
                let missing = (h - p).num_hours() - 1;
                if missing > 0 {
                    push_gap(
                        &mut out,
                        p + chrono::Duration::hours(1),
                        h - chrono::Duration::hours(1),
                        missing as u64,
                        line,
                    );
                }
            }
            if let HourPrice::Quarters(q) = price {
                if q.iter().any(Option::is_none) {
                    push_gap(&mut out, h, h, 1, line);
                }
            }
            prev = Some(h);
        }
        out
    }
}

/// Append a gap, merging it with the previous one when they touch.
fn push_gap(
    out: &mut Vec<PriceGap>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    hours: u64,
    line: usize,
) {
    if let Some(last) = out.last_mut() {
        if last.to + chrono::Duration::hours(1) == from {
            last.to = to;
            last.hours += hours;
            return;
        }
    }
    out.push(PriceGap {
        from,
        to,
        hours,
        line,
    });
}

/// Parse a price file from its bytes: like [`parse_price_csv`], and a byte that is not UTF-8 is
/// reported at its line and column.
pub fn parse_price_bytes(bytes: &[u8]) -> Result<PriceSeries, TariffError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_price_csv(text),
        Err(e) => {
            let ok = &bytes[..e.valid_up_to()];
            let line = ok.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = ok.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let col = String::from_utf8_lossy(&ok[line_start..]).chars().count() + 1;
            Err(TariffError::PriceLine {
                line,
                col,
                msg: "not UTF-8 text".into(),
            })
        }
    }
}

/// Parse a price file: one `time,eur_per_mwh` per line, the time as RFC 3339 (any offset, e.g.
/// `2024-06-03T14:00:00+02:00`), at the start of an hour or of a quarter-hour, the price with a
/// decimal point. A `;` separator is accepted too, and then a decimal comma
/// (`2024-06-03T14:00:00Z;107,35`). Blank lines, `#` comments and a first line that does not
/// parse as a time (a header) are skipped.
///
/// An hour with a row at :15, :30 or :45 is priced per quarter (its :00 row is then the first
/// quarter); an hour with only a :00 row is priced as a whole. So a file may switch from hourly to
/// quarter-hour rows (the Italian day-ahead market did on 1 October 2025). A repeated time, a
/// time that is not on a quarter-hour, a year outside [`PRICE_YEARS`], a price outside
/// [`PRICE_MIN_EUR_MWH`]..=[`PRICE_MAX_EUR_MWH`], a line over 200 bytes or more than
/// [`MAX_PRICE_ROWS`] rows is an error at its line and column. Never panics.
pub fn parse_price_csv(text: &str) -> Result<PriceSeries, TariffError> {
    let mut rows: BTreeMap<DateTime<Utc>, (f64, usize)> = BTreeMap::new();
    let first = first_content_line(text);
    for (i, raw) in text.lines().enumerate() {
        let err = |col: usize, msg: String| TariffError::PriceLine {
            line: i + 1,
            col,
            msg,
        };
        if raw.len() > MAX_LINE_BYTES {
            return Err(err(1, format!("line longer than {MAX_LINE_BYTES} bytes")));
        }
        let lead = raw.chars().take_while(|c| c.is_whitespace()).count();
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Column (1-based, characters) of a byte offset into `line`.
        let col_of = |byte: usize| lead + line.get(..byte).map_or(0, |s| s.chars().count()) + 1;
        let (sep, decimal_comma) = match (line.find(';'), line.find(',')) {
            (Some(k), _) => (k, true),
            (None, Some(k)) => (k, false),
            (None, None) => {
                return Err(err(
                    col_of(0),
                    format!("expected `time,eur_per_mwh`, found `{line}`"),
                ))
            }
        };
        let (time_s, price_raw) = (line[..sep].trim(), &line[sep + 1..]);
        let price_col = col_of(sep + 1 + (price_raw.len() - price_raw.trim_start().len()));
        let ts = match DateTime::parse_from_rfc3339(time_s) {
            Ok(t) => t.with_timezone(&Utc),
            Err(_) if rows.is_empty() && i == first => continue,
            Err(e) => {
                return Err(err(
                    col_of(0),
                    format!("`{time_s}` is not an RFC 3339 time: {e}"),
                ))
            }
        };
        if !PRICE_YEARS.contains(&ts.year()) {
            return Err(err(
                col_of(0),
                format!(
                    "`{time_s}` is outside the years {}–{}",
                    PRICE_YEARS.start(),
                    PRICE_YEARS.end()
                ),
            ));
        }
        if !Period::QUARTER_HOUR.is_boundary(ts) {
            return Err(err(
                col_of(0),
                format!("`{time_s}` is not the start of an hour or a quarter-hour"),
            ));
        }
        let price_s = if decimal_comma {
            price_raw.trim().replace(',', ".")
        } else {
            price_raw.trim().to_string()
        };
        let p: f64 = price_s
            .parse()
            .ok()
            .filter(|p: &f64| p.is_finite())
            .ok_or_else(|| {
                err(
                    price_col,
                    format!("`{}` is not a price in €/MWh", price_raw.trim()),
                )
            })?;
        if !(PRICE_MIN_EUR_MWH..=PRICE_MAX_EUR_MWH).contains(&p) {
            return Err(err(
                price_col,
                format!("{p} €/MWh is outside {PRICE_MIN_EUR_MWH}..={PRICE_MAX_EUR_MWH} €/MWh (a unit mistake?)"),
            ));
        }
        if rows.len() >= MAX_PRICE_ROWS {
            return Err(err(1, format!("more than {MAX_PRICE_ROWS} price rows")));
        }
        if rows.insert(ts, (p, i + 1)).is_some() {
            return Err(err(col_of(0), format!("time {ts} appears twice")));
        }
    }
    // Hours with a row off the hour are priced per quarter; the others as a whole.
    let quartered: std::collections::BTreeSet<DateTime<Utc>> = rows
        .keys()
        .filter(|t| !Period::HOUR.is_boundary(**t))
        .map(|t| Period::HOUR.floor(*t))
        .collect();
    let mut s = PriceSeries::default();
    for (ts, (p, line)) in rows {
        let hour = Period::HOUR.floor(ts);
        s.lines.entry(hour).or_insert(line);
        if quartered.contains(&hour) {
            let e = s
                .hours
                .entry(hour)
                .or_insert(HourPrice::Quarters([None; 4]));
            if let HourPrice::Quarters(q) = e {
                q[quarter_index(ts)] = Some(p);
            }
        } else {
            s.hours.insert(hour, HourPrice::Hourly(p));
        }
    }
    Ok(s)
}

fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn pv(power_kw: f64, region: Region, grant_share: f64) -> PlantTariff {
        PlantTariff {
            power_kw,
            technology: Technology::Photovoltaic,
            region,
            grant_share,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn small_pv_in_lombardia_at_a_high_price_gets_fixed_plus_correction() {
        // 80 + max(0, 180 − 200) = 80, under the cap 120; +10 north = 90.
        assert!(close(
            tip_eur_per_mwh(&pv(50.0, Region::North, 0.0), 200.0),
            90.0
        ));
    }

    #[test]
    fn low_price_hits_the_cap_before_the_correction() {
        // 80 + (180 − 60) = 200 → cap 120; +10 north = 130.
        assert!(close(
            tip_eur_per_mwh(&pv(50.0, Region::North, 0.0), 60.0),
            130.0
        ));
        // 70 + (180 − 120) = 130 → cap 110; +4 centre = 114.
        assert!(close(
            tip_eur_per_mwh(&pv(300.0, Region::Centre, 0.0), 120.0),
            114.0
        ));
        // 60 + (180 − 150) = 90 under cap 100; south: no correction.
        assert!(close(
            tip_eur_per_mwh(&pv(900.0, Region::South, 0.0), 150.0),
            90.0
        ));
    }

    #[test]
    fn size_class_boundaries_are_inclusive_below() {
        assert_eq!(size_class(200.0), (80.0, 120.0));
        assert_eq!(size_class(200.1), (70.0, 110.0));
        assert_eq!(size_class(600.0), (70.0, 110.0));
        assert_eq!(size_class(600.5), (60.0, 100.0));
    }

    #[test]
    fn non_pv_plant_gets_no_geographic_correction() {
        let t = PlantTariff {
            power_kw: 100.0,
            technology: Technology::Other,
            region: Region::North,
            grant_share: 0.0,
        };
        assert!(close(tip_eur_per_mwh(&t, 100.0), 120.0));
    }

    #[test]
    fn grant_reduces_the_whole_tariff_by_f() {
        // 20 % grant: F = 0.5 × 0.20 / 0.40 = 0.25. (80 + 80 → 120 cap) + 10 = 130 × 0.75 = 97.5.
        assert!(close(
            tip_eur_per_mwh(&pv(100.0, Region::North, 0.20), 100.0),
            97.5
        ));
        assert!(close(grant_factor(0.40), 0.5));
        assert!(close(grant_factor(0.9), 0.5));
        assert!(close(grant_factor(-0.1), 0.0));
        assert!(close(grant_factor(f64::NAN), 0.0));
    }

    #[test]
    fn region_names_are_matched_loosely_but_not_guessed() {
        assert_eq!(Region::from_name("Lombardia"), Some(Region::North));
        assert_eq!(Region::from_name("Valle d'Aosta"), Some(Region::North));
        assert_eq!(
            Region::from_name("Trentino-Alto Adige/Südtirol"),
            Some(Region::North)
        );
        assert_eq!(Region::from_name("  toscana "), Some(Region::Centre));
        assert_eq!(Region::from_name("Sicilia"), Some(Region::South));
        assert_eq!(Region::from_name("Lombardy"), None);
    }

    fn utc(d: u32, hh: u32, mm: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, hh, mm, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn series(text: &str, fallback: Option<f64>) -> Prices {
        let mut s = parse_price_csv(text).unwrap_or_default();
        s.fallback = fallback;
        Prices::Series(s)
    }

    fn pz(p: &Prices, start: DateTime<Utc>, minutes: u32) -> Option<(f64, PriceSource)> {
        p.pz_for(start, minutes)
            .ok()
            .flatten()
            .map(|x| (x.eur_per_mwh, x.source))
    }

    #[test]
    fn price_file_parses_both_separators_and_skips_a_header() {
        let text = "# GME NORD\nhour,eur_per_mwh\n2026-03-03T12:00:00Z,107.35\n2026-03-03T15:00:00+02:00;98,5\n";
        let p = series(text, None);
        // An hourly row prices the hour and each of its quarters.
        assert_eq!(pz(&p, utc(3, 12, 0), 60), Some((107.35, PriceSource::File)));
        assert_eq!(
            pz(&p, utc(3, 12, 45), 15),
            Some((107.35, PriceSource::File))
        );
        assert_eq!(pz(&p, utc(3, 13, 0), 60), Some((98.5, PriceSource::File)));
        // 14:00 is not in the file and there is no fallback: no price, not an error.
        assert_eq!(p.pz_for(utc(3, 14, 0), 60), Ok(None));
    }

    #[test]
    fn an_uncovered_hour_takes_the_fallback_and_says_so() {
        let p = series(
            "2026-03-03T12:00:00Z,80\n2026-03-03T15:00:00Z,90\n",
            Some(110.0),
        );
        assert_eq!(pz(&p, utc(3, 12, 0), 60), Some((80.0, PriceSource::File)));
        assert_eq!(
            pz(&p, utc(3, 13, 0), 60),
            Some((110.0, PriceSource::Fallback))
        );
        assert_eq!(
            pz(&p, utc(3, 14, 30), 15),
            Some((110.0, PriceSource::Fallback))
        );
        assert_eq!(
            pz(&Prices::Constant(95.0), utc(3, 14, 0), 60),
            Some((95.0, PriceSource::Constant))
        );
    }

    #[test]
    fn quarter_hour_prices_average_into_the_hour_and_stand_alone_per_quarter() {
        // 12:00 priced per quarter: 80, 100, 120, 60 → the hour's price (80+100+120+60)/4 = 90.
        let text = "2026-03-03T12:00:00Z,80\n2026-03-03T12:15:00Z,100\n2026-03-03T12:30:00Z,120\n\
                    2026-03-03T12:45:00Z,60\n2026-03-03T13:00:00Z,70\n2026-03-03T14:15:00Z,50\n";
        let p = series(text, Some(110.0));
        assert_eq!(pz(&p, utc(3, 12, 0), 60), Some((90.0, PriceSource::File)));
        assert_eq!(pz(&p, utc(3, 12, 30), 15), Some((120.0, PriceSource::File)));
        assert_eq!(pz(&p, utc(3, 12, 0), 15), Some((80.0, PriceSource::File)));
        // 13:00 has only its :00 row: an hourly price, for the hour and its quarters.
        assert_eq!(pz(&p, utc(3, 13, 45), 15), Some((70.0, PriceSource::File)));
        // 14:00 has one quarter of four: the hour and its other quarters take the fallback.
        assert_eq!(pz(&p, utc(3, 14, 15), 15), Some((50.0, PriceSource::File)));
        assert_eq!(
            pz(&p, utc(3, 14, 30), 15),
            Some((110.0, PriceSource::Fallback))
        );
        assert_eq!(
            pz(&p, utc(3, 14, 0), 60),
            Some((110.0, PriceSource::Fallback))
        );
    }

    #[test]
    fn gaps_name_the_uncovered_hours_and_the_line_after_them() {
        let text = "2026-03-03T10:00:00Z,1\n2026-03-03T11:00:00Z,1\n2026-03-03T15:00:00Z,1\n\
                    2026-03-03T16:15:00Z,1\n2026-03-03T17:00:00Z,1\n";
        let s = parse_price_csv(text).unwrap_or_default();
        let gaps = s.gaps();
        // 12:00–14:00 have no row (3 hours, before line 3); 16:00 has one quarter of four (line 4).
        assert_eq!(
            gaps,
            vec![
                PriceGap {
                    from: utc(3, 12, 0),
                    to: utc(3, 14, 0),
                    hours: 3,
                    line: 3
                },
                PriceGap {
                    from: utc(3, 16, 0),
                    to: utc(3, 16, 0),
                    hours: 1,
                    line: 4
                },
            ]
        );
        // A file spanning the whole supported range answers at once (gaps are not walked).
        let far =
            parse_price_csv("2000-01-01T00:00:00Z,1\n2100-12-31T23:00:00Z,1\n").unwrap_or_default();
        assert_eq!(far.gaps().first().map(|g| g.hours), Some(885_358));
    }

    #[test]
    fn price_file_errors_name_the_line_and_column() {
        let at = |text: &str| match parse_price_csv(text) {
            Err(TariffError::PriceLine { line, col, .. }) => Some((line, col)),
            _ => None,
        };
        assert_eq!(
            at("2026-03-03T12:00:00Z,100\n2026-03-03T12:20:00Z,100\n"),
            Some((2, 1))
        );
        assert_eq!(at("2026-03-03T12:00:00Z,abc\n"), Some((1, 22)));
        assert_eq!(at("2026-03-03T12:00:00Z, 1e400\n"), Some((1, 23)));
        assert_eq!(at("2026-03-03T12:00:00Z,NaN\n"), Some((1, 22)));
        assert_eq!(at("2026-03-03T12:00:00Z,45000\n"), Some((1, 22)));
        assert_eq!(
            at("2026-03-03T12:00:00Z,1\n2026-03-03T12:00:00Z,2\n"),
            Some((2, 1))
        );
        assert_eq!(at("2026-03-03T12:00:00Z,1\n  not a time,2\n"), Some((2, 3)));
        assert_eq!(at("9999-03-03T12:00:00Z,1\n"), Some((1, 1)));
        assert_eq!(at("1999-12-31T23:00:00Z,1\n"), Some((1, 1)));
        assert_eq!(
            at(&format!("2026-03-03T12:00:00Z,{}\n", "1".repeat(300))),
            Some((1, 1))
        );
        match parse_price_bytes(b"2026-03-03T12:00:00Z,1\n2026-03-03T\xff") {
            Err(TariffError::PriceLine { line, col, .. }) => assert_eq!((line, col), (2, 12)),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn tip_is_within_its_bounds(
            kw in 1.0f64..1000.0, pz in -100.0f64..500.0, grant in 0.0f64..0.5,
            region in prop::sample::select(vec![Region::North, Region::Centre, Region::South]),
        ) {
            let (fixed, cap) = size_class(kw);
            let t = tip_eur_per_mwh(&pv(kw, region, grant), pz);
            prop_assert!(t >= 0.5 * fixed - 1e-9);
            prop_assert!(t <= cap + 10.0 + 1e-9);
            // A higher price never raises the tariff.
            prop_assert!(tip_eur_per_mwh(&pv(kw, region, grant), pz + 1.0) <= t + 1e-9);
        }

        #[test]
        fn price_parser_never_panics_on_any_text(text in "\\PC{0,300}") {
            let _ = parse_price_csv(&text);
        }

        #[test]
        fn price_parser_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_price_bytes(&bytes);
        }

        #[test]
        fn price_parser_never_panics_on_lines_that_look_like_prices(
            rows in prop::collection::vec(("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})", "[;,]", "-?[0-9]{0,6}[.,]?[0-9]{0,4}(e[0-9]{1,3})?"), 0..20),
        ) {
            let text: String = rows.iter().map(|(t, s, p)| format!("{t}{s}{p}\n")).collect();
            if let Ok(series) = parse_price_csv(&text) {
                let _ = series.gaps();
                for h in series.hours.keys() {
                    for m in [15, 60] {
                        let _ = Prices::Series(series.clone()).pz_for(*h, m);
                    }
                }
            }
        }
    }
}
