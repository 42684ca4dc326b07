//! The SunSpec model definitions socer knows, as data (`drivers/profiles/sunspec/models.toml`).
//!
//! Pure: parses and validates the table of point offsets, types and scale-factor points; it never
//! reads a device.

use serde::Deserialize;

use crate::profile::ValueType;
use crate::reading::Quantity;

/// The shipped model table, embedded at build time.
const BUILTIN: &str = include_str!("../../profiles/sunspec/models.toml");

/// A SunSpec point type (the subset the mapped models use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointType {
    Uint16,
    Int16,
    Uint32,
    Int32,
    /// A 32-bit accumulator (unsigned, wraps); 0 means "not implemented".
    Acc32,
    Float32,
    /// A signed power-of-ten scale factor.
    Sunssf,
    /// `size` registers of ASCII, two characters per register, NUL padded.
    String,
}

impl PointType {
    /// How the point decodes as a profile value, if it is numeric.
    pub fn value_type(self) -> Option<ValueType> {
        match self {
            PointType::Uint16 => Some(ValueType::U16),
            PointType::Int16 | PointType::Sunssf => Some(ValueType::I16),
            PointType::Uint32 | PointType::Acc32 => Some(ValueType::U32),
            PointType::Int32 => Some(ValueType::I32),
            PointType::Float32 => Some(ValueType::F32),
            PointType::String => None,
        }
    }

    /// Raw values meaning "not implemented" (SunSpec Information Model Specification); float
    /// NaN is caught by the decoder itself.
    pub fn sentinels(self) -> Vec<i64> {
        match self {
            PointType::Int16 | PointType::Sunssf => vec![-0x8000],
            PointType::Uint16 => vec![0xFFFF],
            PointType::Acc32 => vec![0],
            PointType::Int32 => vec![-0x8000_0000],
            PointType::Uint32 => vec![0xFFFF_FFFF],
            PointType::Float32 | PointType::String => vec![],
        }
    }

    /// The words a device holds for a point it does not implement.
    pub fn not_implemented_words(self) -> Vec<u16> {
        match self {
            PointType::Int16 | PointType::Sunssf => vec![0x8000],
            PointType::Uint16 => vec![0xFFFF],
            PointType::Acc32 => vec![0, 0],
            PointType::Int32 => vec![0x8000, 0],
            PointType::Uint32 => vec![0xFFFF, 0xFFFF],
            PointType::Float32 => vec![0x7FC0, 0],
            PointType::String => vec![],
        }
    }
}

/// What a model describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Common,
    Inverter,
    Meter,
}

/// One point of a model: where it is and, if socer maps it, which canonical quantity it feeds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// SunSpec point name (`W`, `WH`, `W_SF`, …).
    pub point: String,
    /// Registers from the model's ID register.
    pub offset: u16,
    #[serde(rename = "type")]
    pub point_type: PointType,
    /// Registers, for strings.
    #[serde(default)]
    pub size: Option<u16>,
    #[serde(default)]
    pub quantity: Option<Quantity>,
    #[serde(default)]
    pub phase: Option<u8>,
    /// Name of the scale-factor point of this model applied to this point.
    #[serde(default)]
    pub sf: Option<String>,
    /// Multiplier to the canonical unit and sign, before the scale factor.
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub unit: Option<String>,
}

fn one() -> f64 {
    1.0
}

impl Point {
    /// Registers the point occupies.
    pub fn words(&self) -> u16 {
        match self.point_type.value_type() {
            Some(t) => t.words(),
            None => self.size.unwrap_or(0),
        }
    }
}

/// One model's definition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDef {
    pub id: u16,
    pub name: String,
    pub kind: ModelKind,
    /// Phase legs the model carries (1, 2 for split phase, 3); 0 for the common model.
    pub phases: u8,
    /// The model's fixed length L (registers after ID and L).
    pub length: u16,
    pub points: Vec<Point>,
}

impl ModelDef {
    pub fn point(&self, name: &str) -> Option<&Point> {
        self.points.iter().find(|p| p.point == name)
    }

    /// Offset of the scale-factor point applied to `p`, if any.
    pub fn sf_offset(&self, p: &Point) -> Option<u16> {
        p.sf.as_deref()
            .and_then(|n| self.point(n))
            .map(|s| s.offset)
    }

    /// Registers a device's model must have (after ID and L) to hold every point listed here.
    pub fn needed_length(&self) -> u16 {
        self.points
            .iter()
            .map(|p| p.offset + p.words())
            .max()
            .unwrap_or(2)
            .saturating_sub(2)
    }
}

/// A model table that failed validation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("sunspec models: {0}")]
pub struct ModelsError(pub String);

/// All models socer can map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSet {
    #[serde(rename = "model")]
    pub models: Vec<ModelDef>,
}

impl ModelSet {
    /// The shipped table (parsed once per process; every discovery reads it).
    pub fn builtin() -> Result<ModelSet, ModelsError> {
        static SET: std::sync::OnceLock<Result<ModelSet, ModelsError>> = std::sync::OnceLock::new();
        SET.get_or_init(|| ModelSet::parse(BUILTIN)).clone()
    }

    /// Parse and validate a table in the `models.toml` format.
    pub fn parse(text: &str) -> Result<ModelSet, ModelsError> {
        let set: ModelSet = toml::from_str(text).map_err(|e| ModelsError(e.to_string()))?;
        set.validate()?;
        Ok(set)
    }

    pub fn get(&self, id: u16) -> Option<&ModelDef> {
        self.models.iter().find(|m| m.id == id)
    }

    fn validate(&self) -> Result<(), ModelsError> {
        let err = |m: &ModelDef, msg: String| ModelsError(format!("model {}: {msg}", m.id));
        for (i, m) in self.models.iter().enumerate() {
            if self.models[..i].iter().any(|o| o.id == m.id) {
                return Err(err(m, "defined twice".into()));
            }
            if m.needed_length() > m.length {
                return Err(err(m, format!("points reach past length {}", m.length)));
            }
            for p in &m.points {
                if p.offset < 2 {
                    return Err(err(
                        m,
                        format!("{} overlaps ID/L (offset {})", p.point, p.offset),
                    ));
                }
                if p.point_type == PointType::String && p.size.unwrap_or(0) == 0 {
                    return Err(err(m, format!("string {} needs a size", p.point)));
                }
                if let Some(sf) = &p.sf {
                    match m.point(sf) {
                        Some(s) if s.point_type == PointType::Sunssf => {}
                        Some(_) => {
                            return Err(err(m, format!("{}: {sf} is not a sunssf", p.point)))
                        }
                        None => {
                            return Err(err(
                                m,
                                format!("{}: scale factor {sf} not listed", p.point),
                            ))
                        }
                    }
                }
                if let Some(q) = p.quantity {
                    if p.point_type.value_type().is_none() || p.point_type == PointType::Sunssf {
                        return Err(err(m, format!("{} cannot carry a quantity", p.point)));
                    }
                    match (q.per_phase(), p.phase) {
                        (true, Some(1..=3)) | (false, None) => {}
                        _ => {
                            return Err(err(
                                m,
                                format!("{}: phase does not fit {}", p.point, q.name()),
                            ))
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_parses_and_holds_every_supported_model() {
        let set = ModelSet::builtin().unwrap();
        for id in [
            1, 101, 102, 103, 111, 112, 113, 201, 202, 203, 204, 211, 212, 213,
        ] {
            assert!(set.get(id).is_some(), "model {id} missing");
        }
    }

    #[test]
    fn scale_factor_must_name_a_listed_sunssf_point() {
        let text = r#"
            [[model]]
            id = 103
            name = "x"
            kind = "inverter"
            phases = 3
            length = 50
            points = [ { point = "W", offset = 14, type = "int16", quantity = "p_w", sf = "W_SF" } ]
        "#;
        let e = ModelSet::parse(text).unwrap_err();
        assert!(e.0.contains("W_SF not listed"), "{e}");
    }

    #[test]
    fn points_past_the_model_length_are_rejected() {
        let text = r#"
            [[model]]
            id = 103
            name = "x"
            kind = "inverter"
            phases = 3
            length = 10
            points = [ { point = "WH", offset = 24, type = "acc32", quantity = "e_exp_wh" } ]
        "#;
        assert!(ModelSet::parse(text)
            .unwrap_err()
            .0
            .contains("past length 10"));
    }
}
