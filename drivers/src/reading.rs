//! A reading: the canonical quantities of one meter at one moment, with what could not be read.
//!
//! Sign convention (DESIGN.md): `p_w` is positive in the import direction; a generator exports, so
//! what it produces is negative `p_w` and a growing `e_exp_wh`. Energy comes from the meter's own
//! counters; a missing value is `None` with a reason, never a stale value with a new timestamp.
//!
//! A storage system (a battery, or a hybrid inverter's battery side) adds `soc_pct`, its state of
//! charge in percent, `bat_p_w`, the battery's own power, **positive while charging** (energy
//! flowing into the battery, the same "into the device" direction as `p_w`), and its own counters
//! `e_charge_wh` (energy stored) and `e_discharge_wh` (energy given back).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The canonical quantities a profile can map. Per-phase quantities carry their phase (1..=3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Active power, W, positive importing.
    PW,
    /// Imported active energy counter, Wh.
    EImpWh,
    /// Exported active energy counter, Wh.
    EExpWh,
    /// Phase-to-neutral voltage, V.
    VV,
    /// Phase current, A.
    IA,
    /// Frequency, Hz.
    FHz,
    /// Total power factor.
    Pf,
    /// Battery state of charge, percent (0..=100).
    SocPct,
    /// Battery power, W, positive while charging.
    BatPW,
    /// Energy charged into the battery, counter, Wh.
    EChargeWh,
    /// Energy discharged from the battery, counter, Wh.
    EDischargeWh,
}

impl Quantity {
    pub const ALL: [Quantity; 11] = [
        Quantity::PW,
        Quantity::EImpWh,
        Quantity::EExpWh,
        Quantity::VV,
        Quantity::IA,
        Quantity::FHz,
        Quantity::Pf,
        Quantity::SocPct,
        Quantity::BatPW,
        Quantity::EChargeWh,
        Quantity::EDischargeWh,
    ];

    /// The canonical field name used in profiles, JSON and MQTT.
    pub fn name(self) -> &'static str {
        match self {
            Quantity::PW => "p_w",
            Quantity::EImpWh => "e_imp_wh",
            Quantity::EExpWh => "e_exp_wh",
            Quantity::VV => "v_v",
            Quantity::IA => "i_a",
            Quantity::FHz => "f_hz",
            Quantity::Pf => "pf",
            Quantity::SocPct => "soc_pct",
            Quantity::BatPW => "bat_p_w",
            Quantity::EChargeWh => "e_charge_wh",
            Quantity::EDischargeWh => "e_discharge_wh",
        }
    }

    pub fn from_name(s: &str) -> Option<Quantity> {
        Quantity::ALL.into_iter().find(|q| q.name() == s)
    }

    /// Whether the quantity is given per phase (`phase = 1..3` in a profile).
    pub fn per_phase(self) -> bool {
        matches!(self, Quantity::VV | Quantity::IA)
    }

    /// Energy counters change slowly and are polled less often than power by default.
    pub fn is_counter(self) -> bool {
        matches!(
            self,
            Quantity::EImpWh | Quantity::EExpWh | Quantity::EChargeWh | Quantity::EDischargeWh
        )
    }

    /// Quantities only a storage system has.
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            Quantity::SocPct | Quantity::BatPW | Quantity::EChargeWh | Quantity::EDischargeWh
        )
    }
}

/// How much of a reading can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Every quantity due in this poll was read.
    #[default]
    Good,
    /// Some quantities are missing (see `missing`).
    Partial,
    /// Nothing could be read; `missing` says why.
    Failed,
}

/// The canonical values of one meter at one moment. Absent fields were not due, not mapped or
/// could not be read (then `missing` names them and the reason).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Values {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_w: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_imp_wh: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_exp_wh: Option<f64>,
    /// Per phase L1, L2, L3; a single-phase meter fills only the first.
    #[serde(default, skip_serializing_if = "phases_empty")]
    pub v_v: [Option<f64>; 3],
    #[serde(default, skip_serializing_if = "phases_empty")]
    pub i_a: [Option<f64>; 3],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f_hz: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pf: Option<f64>,
    /// Battery state of charge, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soc_pct: Option<f64>,
    /// Battery power, W, positive charging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bat_p_w: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_charge_wh: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_discharge_wh: Option<f64>,
}

fn phases_empty(p: &[Option<f64>; 3]) -> bool {
    p.iter().all(Option::is_none)
}

impl Values {
    /// Store a value; `phase` is 1..=3 for per-phase quantities and ignored otherwise.
    pub fn set(&mut self, q: Quantity, phase: u8, v: f64) {
        let idx = usize::from(phase.clamp(1, 3) - 1);
        match q {
            Quantity::PW => self.p_w = Some(v),
            Quantity::EImpWh => self.e_imp_wh = Some(v),
            Quantity::EExpWh => self.e_exp_wh = Some(v),
            Quantity::VV => self.v_v[idx] = Some(v),
            Quantity::IA => self.i_a[idx] = Some(v),
            Quantity::FHz => self.f_hz = Some(v),
            Quantity::Pf => self.pf = Some(v),
            Quantity::SocPct => self.soc_pct = Some(v),
            Quantity::BatPW => self.bat_p_w = Some(v),
            Quantity::EChargeWh => self.e_charge_wh = Some(v),
            Quantity::EDischargeWh => self.e_discharge_wh = Some(v),
        }
    }

    pub fn get(&self, q: Quantity, phase: u8) -> Option<f64> {
        let idx = usize::from(phase.clamp(1, 3) - 1);
        match q {
            Quantity::PW => self.p_w,
            Quantity::EImpWh => self.e_imp_wh,
            Quantity::EExpWh => self.e_exp_wh,
            Quantity::VV => self.v_v[idx],
            Quantity::IA => self.i_a[idx],
            Quantity::FHz => self.f_hz,
            Quantity::Pf => self.pf,
            Quantity::SocPct => self.soc_pct,
            Quantity::BatPW => self.bat_p_w,
            Quantity::EChargeWh => self.e_charge_wh,
            Quantity::EDischargeWh => self.e_discharge_wh,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Values::default()
    }

    /// A storage meter's exchange with the building in the canonical fields: `p_w` positive
    /// charging, `e_imp_wh` the energy stored, `e_exp_wh` the energy given back (the convention
    /// of a storage meter read on its AC side, which the balance and Home Assistant use). A
    /// device that has its own AC-side fields keeps them; one that reports only the battery's
    /// own quantities (`bat_p_w`, `e_charge_wh`, `e_discharge_wh`) has them copied. Pure; the
    /// storage fields stay as they are.
    pub fn storage_as_exchange(&mut self) {
        self.p_w = self.p_w.or(self.bat_p_w);
        self.e_imp_wh = self.e_imp_wh.or(self.e_charge_wh);
        self.e_exp_wh = self.e_exp_wh.or(self.e_discharge_wh);
    }
}

/// A quantity that was due but could not be read, and why (bus, unit and register are in `reason`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Missing {
    pub quantity: String,
    pub reason: String,
}

/// One poll of one meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The meter's name in the site config.
    pub meter: String,
    /// Wall-clock time of the poll, as the clock said then (the site agent re-times readings taken
    /// before the clock was synchronised).
    pub ts: DateTime<Utc>,
    /// Monotonic milliseconds of the poll (process-local), used to re-time readings.
    #[serde(default)]
    pub mono_ms: u64,
    #[serde(flatten)]
    pub values: Values,
    pub quality: Quality,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Missing>,
    /// Set for a device with no energy counter whose energy was integrated from power.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub energy_integrated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_names_round_trip() {
        for q in Quantity::ALL {
            assert_eq!(Quantity::from_name(q.name()), Some(q));
        }
        assert_eq!(Quantity::from_name("kwh"), None);
    }

    #[test]
    fn a_battery_reports_its_charge_as_import_and_its_discharge_as_export() {
        let mut v = Values {
            soc_pct: Some(65.2),
            bat_p_w: Some(-1200.0),
            e_charge_wh: Some(4_789_000.0),
            e_discharge_wh: Some(4_321_000.0),
            ..Values::default()
        };
        v.storage_as_exchange();
        assert_eq!(
            v.p_w,
            Some(-1200.0),
            "discharging: negative, like an export"
        );
        assert_eq!(v.e_imp_wh, Some(4_789_000.0));
        assert_eq!(v.e_exp_wh, Some(4_321_000.0));
        assert_eq!(v.soc_pct, Some(65.2));
        // An AC-side meter of the battery keeps its own figures.
        let mut ac = Values {
            p_w: Some(800.0),
            e_imp_wh: Some(10.0),
            e_exp_wh: None,
            bat_p_w: Some(850.0),
            e_charge_wh: Some(12.0),
            e_discharge_wh: Some(7.0),
            ..Values::default()
        };
        ac.storage_as_exchange();
        assert_eq!(
            (ac.p_w, ac.e_imp_wh, ac.e_exp_wh),
            (Some(800.0), Some(10.0), Some(7.0))
        );
    }

    #[test]
    fn reading_json_uses_canonical_names_and_omits_absent() {
        let mut v = Values::default();
        v.set(Quantity::PW, 1, -1500.0);
        v.set(Quantity::VV, 2, 231.5);
        let r = Reading {
            meter: "pv".into(),
            ts: DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            mono_ms: 7,
            values: v,
            quality: Quality::Good,
            missing: vec![],
            energy_integrated: false,
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["p_w"], -1500.0);
        assert_eq!(j["v_v"][1], 231.5);
        assert!(j["v_v"][0].is_null());
        assert!(j.get("e_imp_wh").is_none());
        let back: Reading = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
    }
}
