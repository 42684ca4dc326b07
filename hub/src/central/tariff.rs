//! The incentive tariff (TIP) of one plant for one hour, and the hourly zonal price it depends on.
//!
//! Pure: no I/O, no clock (the price file is parsed from text the caller read). It must never
//! return a negative tariff, nor silently treat an unknown region or a missing price as zero.
//!
//! # API (called by the central hub and by `incentive`)
//! - [`tip_eur_per_mwh`]`(&PlantTariff, pz_eur_per_mwh) -> f64`: the TIP in €/MWh.
//! - [`grant_factor`]`(grant_share) -> f64`: the reduction F.
//! - [`Region::from_name`]`("Lombardia") -> Option<Region>`.
//! - [`Prices`] (a constant or an hourly series) with [`Prices::pz_at`]`(ts)`, and
//!   [`parse_price_csv`]`(text) -> Result<Prices, TariffError>`.
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

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::energy::Period;

/// Errors of the tariff inputs, naming what is wrong and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TariffError {
    #[error("no zonal price for the hour starting {0}")]
    MissingPrice(DateTime<Utc>),
    #[error("zonal price {price} for the hour starting {hour} is not a finite number")]
    BadPrice { hour: DateTime<Utc>, price: f64 },
    #[error("price file line {line}: {msg}")]
    PriceLine { line: usize, msg: String },
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

/// The zonal price Pz, €/MWh.
#[derive(Debug, Clone, PartialEq)]
pub enum Prices {
    /// One price for every hour (a configured estimate).
    Constant(f64),
    /// Prices keyed by the UTC start of their hour.
    Hourly(BTreeMap<DateTime<Utc>, f64>),
}

impl Prices {
    /// The price of the hour holding `ts`.
    pub fn pz_at(&self, ts: DateTime<Utc>) -> Result<f64, TariffError> {
        match self {
            Prices::Constant(p) if p.is_finite() => Ok(*p),
            Prices::Constant(p) => Err(TariffError::BadPrice {
                hour: Period::HOUR.floor(ts),
                price: *p,
            }),
            Prices::Hourly(m) => {
                let hour = Period::HOUR.floor(ts);
                let p = m
                    .get(&hour)
                    .copied()
                    .ok_or(TariffError::MissingPrice(hour))?;
                if p.is_finite() {
                    Ok(p)
                } else {
                    Err(TariffError::BadPrice { hour, price: p })
                }
            }
        }
    }
}

/// Parse an hourly price file: one `hour,eur_per_mwh` per line, the hour as RFC 3339 (any offset,
/// e.g. `2024-06-03T14:00:00+02:00`, must be a whole hour), the price with a decimal point.
/// A `;` separator is accepted too, and then a decimal comma (`2024-06-03T14:00:00Z;107,35`).
/// Blank lines, `#` comments and a first line that does not parse as a time (a header) are
/// skipped. A repeated hour is an error.
pub fn parse_price_csv(text: &str) -> Result<Prices, TariffError> {
    let mut m = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |msg: String| TariffError::PriceLine { line: i + 1, msg };
        let (hour, price) = if let Some((h, p)) = line.split_once(';') {
            (h.trim(), p.trim().replace(',', "."))
        } else if let Some((h, p)) = line.split_once(',') {
            (h.trim(), p.trim().to_string())
        } else {
            return Err(err(format!("expected `hour,eur_per_mwh`, found `{line}`")));
        };
        let ts = match DateTime::parse_from_rfc3339(hour) {
            Ok(t) => t.with_timezone(&Utc),
            Err(_) if m.is_empty() && i == first_content_line(text) => continue,
            Err(e) => return Err(err(format!("`{hour}` is not an RFC 3339 time: {e}"))),
        };
        if !Period::HOUR.is_boundary(ts) {
            return Err(err(format!("`{hour}` is not the start of an hour")));
        }
        let p: f64 = price
            .parse()
            .map_err(|_| err(format!("`{price}` is not a price in €/MWh")))?;
        if !p.is_finite() {
            return Err(err(format!("`{price}` is not a finite price")));
        }
        if m.insert(ts, p).is_some() {
            return Err(err(format!("hour {ts} appears twice")));
        }
    }
    Ok(Prices::Hourly(m))
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

    #[test]
    fn price_file_parses_both_separators_and_skips_a_header() {
        let text = "# GME NORD\nhour,eur_per_mwh\n2024-06-03T12:00:00Z,107.35\n2024-06-03T15:00:00+02:00;98,5\n";
        let p = parse_price_csv(text);
        let h = |hh| {
            Utc.with_ymd_and_hms(2024, 6, 3, hh, 0, 0)
                .single()
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        let p = p.unwrap_or(Prices::Constant(f64::NAN));
        assert_eq!(p.pz_at(h(12) + chrono::Duration::minutes(45)), Ok(107.35));
        assert_eq!(p.pz_at(h(13)), Ok(98.5));
        assert_eq!(p.pz_at(h(14)), Err(TariffError::MissingPrice(h(14))));
    }

    #[test]
    fn price_file_errors_name_the_line() {
        let e = parse_price_csv("2024-06-03T12:00:00Z,100\n2024-06-03T12:30:00Z,100\n");
        assert!(matches!(e, Err(TariffError::PriceLine { line: 2, .. })));
        let e = parse_price_csv("2024-06-03T12:00:00Z,abc\n");
        assert!(matches!(e, Err(TariffError::PriceLine { line: 1, .. })));
        let e = parse_price_csv("2024-06-03T12:00:00Z,1\n2024-06-03T12:00:00Z,2\n");
        assert!(matches!(e, Err(TariffError::PriceLine { line: 2, .. })));
        let e = parse_price_csv("2024-06-03T12:00:00Z,1\nnot a time,2\n");
        assert!(matches!(e, Err(TariffError::PriceLine { line: 2, .. })));
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
    }
}
