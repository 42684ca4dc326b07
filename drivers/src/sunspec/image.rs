//! A SunSpec register image for the simulator and tests: marker, common model, one inverter or
//! meter model with fixed scale factors and live points, end marker.
//!
//! Pure: builds and updates a register map; encoding goes through the same resolved profile the
//! poller decodes with, so the two cannot disagree.

use std::collections::BTreeMap;

use crate::decode::encode;
use crate::profile::{Function, Profile};
use crate::reading::Values;
use crate::sim::RegisterImage;

use super::models::{ModelKind, ModelSet, PointType};
use super::{encode_string, resolve, Common, Device, ModelHeader, SunSpecError, END_ID, MARKER};

/// What the image holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    /// Address of the marker (40000, 50000 or 0).
    pub base: u16,
    /// The unit id the image answers as (recorded in the resolved profile's source).
    pub unit: u8,
    /// 101–103, 111–113, 201–204 or 211–213.
    pub model_id: u16,
    pub common: Common,
    /// Scale factor per scale-factor point name (`W_SF`, …); unnamed ones are 0.
    pub scale_factors: Vec<(String, i16)>,
}

impl ImageSpec {
    /// A simulated device of the given model at base 40000, with scale factors that exercise
    /// negative exponents (current to 0.01 A, voltage to 0.1 V, frequency to 0.01 Hz, PF 0.1 %).
    pub fn new(model_id: u16) -> Self {
        ImageSpec {
            base: 40000,
            unit: 1,
            model_id,
            common: Common {
                manufacturer: "socer".into(),
                model: "simulated".into(),
                options: String::new(),
                version: "1.0".into(),
                serial: "SIM0001".into(),
            },
            scale_factors: [
                ("A_SF", -2),
                ("V_SF", -1),
                ("Hz_SF", -2),
                ("PF_SF", -1),
                ("W_SF", 0),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
        }
    }

    fn sf(&self, name: &str) -> i16 {
        self.scale_factors
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }
}

/// A built image: the registers, and the profile that reads them back.
#[derive(Debug, Clone, PartialEq)]
pub struct SunSpecImage {
    /// Holding registers by address.
    pub registers: BTreeMap<u16, u16>,
    /// The resolved profile of the image's model (what discovery on this image yields).
    pub profile: Profile,
    /// Point type of each profile quantity, in the profile's order.
    types: Vec<PointType>,
}

/// Lay out an image; live points start as "not implemented" until [`SunSpecImage::set`].
pub fn image(spec: &ImageSpec, set: &ModelSet) -> Result<SunSpecImage, SunSpecError> {
    let unknown = |why: String| SunSpecError::NoSupportedModel {
        unit: spec.unit,
        chain: why,
    };
    let common_def = set
        .get(1)
        .ok_or_else(|| unknown("model 1 not in the table".into()))?;
    let def = set
        .get(spec.model_id)
        .filter(|d| d.kind != ModelKind::Common)
        .ok_or_else(|| unknown(format!("model {} not in the table", spec.model_id)))?;

    let mut regs = BTreeMap::new();
    let mut put = |at: u16, words: &[u16]| {
        for (i, w) in words.iter().enumerate() {
            regs.insert(at + i as u16, *w);
        }
    };
    put(spec.base, &MARKER);
    let common_at = spec.base + 2;
    put(common_at, &[1, common_def.length]);
    put(common_at + 2, &vec![0; usize::from(common_def.length)]);
    let strings = [
        ("Mn", &spec.common.manufacturer),
        ("Md", &spec.common.model),
        ("Opt", &spec.common.options),
        ("Vr", &spec.common.version),
        ("SN", &spec.common.serial),
    ];
    for (name, text) in strings {
        if let Some(p) = common_def.point(name) {
            put(common_at + p.offset, &encode_string(text, p.words()));
        }
    }
    if let Some(p) = common_def.point("DA") {
        put(common_at + p.offset, &[u16::from(spec.unit)]);
    }
    let model_at = common_at + 2 + common_def.length;
    put(model_at, &[def.id, def.length]);
    put(model_at + 2, &vec![0; usize::from(def.length)]);
    for p in def
        .points
        .iter()
        .filter(|p| p.point_type == PointType::Sunssf)
    {
        put(model_at + p.offset, &[spec.sf(&p.point) as u16]);
    }
    put(model_at + 2 + def.length, &[END_ID, 0]);

    let device = Device {
        unit: spec.unit,
        base: spec.base,
        common: Some(spec.common.clone()),
        models: vec![
            ModelHeader {
                id: 1,
                address: common_at,
                length: common_def.length,
            },
            ModelHeader {
                id: def.id,
                address: model_at,
                length: def.length,
            },
        ],
    };
    let profile = resolve(&device, set, Some(def.id))?.profile;
    let types = def
        .points
        .iter()
        .filter(|p| p.quantity.is_some() && p.point_type.value_type().is_some())
        .map(|p| p.point_type)
        .collect();
    let mut img = SunSpecImage {
        registers: regs,
        profile,
        types,
    };
    img.set(&Values::default());
    Ok(img)
}

impl SunSpecImage {
    /// The image as the simulator serves it: every word static (unset points hold their
    /// "not implemented" pattern), the mapped points live over the simulator's state.
    pub fn register_image(&self) -> RegisterImage {
        let mut baseline = self.clone();
        baseline.set(&Values::default());
        let mut img = RegisterImage::new(self.profile.defaults.clone());
        for (&address, &word) in &baseline.registers {
            img.add_static(Function::Holding, address, &[word]);
        }
        for q in &self.profile.quantities {
            img.add_live(q.clone());
        }
        img
    }

    /// Write canonical values into the live points; an absent value becomes the point type's
    /// "not implemented" pattern.
    pub fn set(&mut self, values: &Values) {
        for (map, ty) in self.profile.quantities.iter().zip(&self.types) {
            let sf = map
                .scale_register
                .and_then(|a| self.registers.get(&a))
                .map_or(0, |&w| w as i16);
            let words = match values.get(map.name, map.phase.unwrap_or(1)) {
                Some(v) => encode(v * 10f64.powi(-i32::from(sf)), map, &self.profile.defaults),
                None => ty.not_implemented_words(),
            };
            for (i, w) in words.into_iter().enumerate() {
                self.registers.insert(map.address + i as u16, w);
            }
        }
    }
}
