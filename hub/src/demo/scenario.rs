//! The demo scenario (`config/demo/scenario.toml`): the community's buildings, plants, loads and
//! meters, parsed and checked. Pure data: nothing here simulates, listens or spawns.

use std::collections::HashSet;

use chrono::NaiveDate;
use serde::Deserialize;

use super::load::LoadSpec;
use super::weather::WeatherParams;

/// The scenario shipped with the binary (the file in `config/demo/`).
pub const BUILTIN: &str = include_str!("../../../config/demo/scenario.toml");

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("scenario: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub community: CommunitySpec,
    #[serde(default)]
    pub weather: WeatherParams,
    #[serde(rename = "substation")]
    pub substations: Vec<SubstationSpec>,
    #[serde(rename = "building")]
    pub buildings: Vec<BuildingSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunitySpec {
    pub id: String,
    pub name: String,
    pub latitude: f64,
    pub longitude: f64,
    pub timezone: String,
    /// Italian region of the plants (the incentive's geographic correction).
    pub region: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubstationSpec {
    pub id: String,
    pub name: String,
}

/// The kinds of CER member (they decide where the incentive above the threshold goes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    Household,
    Business,
    Sme,
    Public,
    ThirdSector,
}

impl MemberKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::Household => "household",
            MemberKind::Business => "business",
            MemberKind::Sme => "sme",
            MemberKind::Public => "public",
            MemberKind::ThirdSector => "third_sector",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildingSpec {
    /// Site id (MQTT topics, URLs): `[a-z0-9-]`.
    pub id: String,
    pub name: String,
    pub member_kind: MemberKind,
    /// Point of delivery of the grid connection.
    pub pod: String,
    pub substation: String,
    pub contract_kw: f64,
    #[serde(default)]
    pub pv: Option<PvSpec>,
    #[serde(rename = "load")]
    pub loads: Vec<LoadSpec>,
    #[serde(rename = "meter")]
    pub meters: Vec<MeterSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PvSpec {
    pub peak_kw: f64,
    #[serde(default = "default_tilt")]
    pub tilt_deg: f64,
    #[serde(default = "default_azimuth")]
    pub azimuth_deg: f64,
    pub commissioned: NaiveDate,
    /// Capital grant as a share of the investment (0–0.4), lowers the incentive.
    #[serde(default)]
    pub grant_share: f64,
    #[serde(default = "default_pr")]
    pub performance_ratio: f64,
}

fn default_tilt() -> f64 {
    30.0
}
fn default_azimuth() -> f64 {
    180.0
}
fn default_pr() -> f64 {
    0.82
}

/// Which line a meter is on: the building's Modbus TCP simulator, or its RS-485 line (RTU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    Tcp,
    Rtu,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterSpec {
    pub name: String,
    /// Profile id (`eastron-sdm630`, `sunspec`, …).
    pub model: String,
    pub bus: BusKind,
    pub unit: u8,
    /// `grid`, `production` or `consumption` (the site config's roles).
    pub role: String,
    /// `grid`, `pv`, or the name of one of the building's loads.
    pub measures: String,
}

/// What a meter sees, resolved against its building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    /// Consumption − production: the POD exchange.
    Grid,
    /// The PV plant (exports).
    Pv,
    /// One load, by index in the building's list.
    Load(usize),
}

impl BuildingSpec {
    /// What meter `m` measures; `None` if it names nothing in this building.
    pub fn measured(&self, m: &MeterSpec) -> Option<Measured> {
        match m.measures.as_str() {
            "grid" => Some(Measured::Grid),
            "pv" => self.pv.as_ref().map(|_| Measured::Pv),
            name => self
                .loads
                .iter()
                .position(|l| l.name == name)
                .map(Measured::Load),
        }
    }

    pub fn has_rtu(&self) -> bool {
        self.meters.iter().any(|m| m.bus == BusKind::Rtu)
    }
}

impl Scenario {
    /// Parse and check a scenario text.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text)?;
        s.validate().map_err(ScenarioError::Invalid)?;
        Ok(s)
    }

    /// The scenario shipped with the binary.
    pub fn builtin() -> Result<Self, ScenarioError> {
        Self::parse(BUILTIN)
    }

    fn validate(&self) -> Result<(), String> {
        self.weather.validate()?;
        if !(-90.0..=90.0).contains(&self.community.latitude)
            || !(-180.0..=180.0).contains(&self.community.longitude)
        {
            return Err("community latitude/longitude out of range".into());
        }
        if self.community.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(format!(
                "community.timezone `{}` is not an IANA zone",
                self.community.timezone
            ));
        }
        let subs: HashSet<&str> = self.substations.iter().map(|s| s.id.as_str()).collect();
        let mut ids = HashSet::new();
        let mut pods = HashSet::new();
        for b in &self.buildings {
            let here = |msg: String| format!("building `{}`: {msg}", b.id);
            if b.id.is_empty()
                || !b
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(here("id must be lowercase letters, digits and '-'".into()));
            }
            if !ids.insert(b.id.as_str()) {
                return Err(here("id used twice".into()));
            }
            if !pods.insert(b.pod.as_str()) {
                return Err(here(format!("POD `{}` used twice", b.pod)));
            }
            if !subs.contains(b.substation.as_str()) {
                return Err(here(format!(
                    "substation `{}` is not declared",
                    b.substation
                )));
            }
            if let Some(pv) = &b.pv {
                let valid = pv.peak_kw.is_finite()
                    && pv.peak_kw > 0.0
                    && (0.0..=0.4).contains(&pv.grant_share)
                    && (0.3..=1.0).contains(&pv.performance_ratio);
                if !valid {
                    return Err(here(
                        "pv needs peak_kw > 0, grant_share 0–0.4, performance_ratio 0.3–1".into(),
                    ));
                }
            }
            for l in &b.loads {
                l.kind
                    .validate()
                    .map_err(|e| here(format!("load `{}`: {e}", l.name)))?;
            }
            let mut names = HashSet::new();
            let mut units = HashSet::new();
            let mut grid = 0;
            for m in &b.meters {
                if !names.insert(m.name.as_str()) {
                    return Err(here(format!("meter name `{}` used twice", m.name)));
                }
                if !(1..=247).contains(&m.unit) || !units.insert((m.bus, m.unit)) {
                    return Err(here(format!(
                        "meter `{}`: unit {} is out of 1–247 or taken on its bus",
                        m.name, m.unit
                    )));
                }
                let what = b.measured(m).ok_or_else(|| here(format!("meter `{}` measures `{}`, which is not `grid`, `pv` (with a pv plant) or a load name", m.name, m.measures)))?;
                let role_fits = matches!(
                    (what, m.role.as_str()),
                    (Measured::Grid, "grid")
                        | (Measured::Pv, "production")
                        | (Measured::Load(_), "consumption")
                );
                if !role_fits {
                    return Err(here(format!(
                        "meter `{}`: role `{}` does not fit what it measures",
                        m.name, m.role
                    )));
                }
                grid += usize::from(what == Measured::Grid);
            }
            if grid != 1 {
                return Err(here(
                    "needs exactly one grid meter (the POD exchange)".into(),
                ));
            }
        }
        if self.buildings.is_empty() {
            return Err("no buildings".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_scenario_has_every_so_cer_member_on_two_substations() {
        let s = Scenario::builtin().unwrap();
        let ids: Vec<&str> = s.buildings.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "domus-1",
                "domus-2",
                "domus-3",
                "iperal",
                "tessuti",
                "stps",
                "comune-municipio",
                "comune-scuola",
                "bps"
            ]
        );
        assert_eq!(s.substations.len(), 2);
        for sub in &s.substations {
            assert!(
                s.buildings.iter().any(|b| b.substation == sub.id),
                "{} has no building",
                sub.id
            );
        }
        // At least one building on RS-485 (RTU) and the model mix the issue asks for.
        assert!(s.buildings.iter().any(BuildingSpec::has_rtu));
        let models: HashSet<&str> = s
            .buildings
            .iter()
            .flat_map(|b| b.meters.iter().map(|m| m.model.as_str()))
            .collect();
        for m in [
            "eastron-sdm630",
            "eastron-sdm120",
            "carlo-gavazzi-em24",
            "sunspec",
            "huawei-sun2000",
        ] {
            assert!(models.contains(m), "{m} missing");
        }
        let domus_pv: Vec<f64> = s.buildings[..3]
            .iter()
            .map(|b| b.pv.as_ref().unwrap().peak_kw)
            .collect();
        assert!(
            domus_pv.iter().all(|p| (15.0..=30.0).contains(p)),
            "{domus_pv:?}"
        );
        assert!(
            s.buildings
                .iter()
                .filter(|b| b.pv.as_ref().is_some_and(|p| p.grant_share > 0.0))
                .count()
                >= 1
        );
    }

    #[test]
    fn a_meter_measuring_an_unknown_load_is_refused_with_its_name() {
        let text = BUILTIN.replacen("measures = \"common\"", "measures = \"lifts\"", 1);
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("building `domus-1`") && err.contains("`lifts`"),
            "{err}"
        );
    }

    #[test]
    fn a_building_on_an_undeclared_substation_is_refused() {
        let text = BUILTIN.replacen("substation = \"AC001E01002\"", "substation = \"AC999\"", 1);
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(err.contains("substation `AC999` is not declared"), "{err}");
    }

    #[test]
    fn two_meters_with_one_unit_on_a_bus_are_refused() {
        let text = BUILTIN.replacen("bus = \"tcp\", unit = 2", "bus = \"tcp\", unit = 1", 1);
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(err.contains("unit 1 is out of 1–247 or taken"), "{err}");
    }

    #[test]
    fn a_misspelt_load_field_is_refused() {
        let text = BUILTIN.replacen("apartments = 18", "apartmens = 18", 1);
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("apartmens") || err.contains("apartments"),
            "{err}"
        );
    }
}
