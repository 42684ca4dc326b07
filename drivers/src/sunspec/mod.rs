//! SunSpec: find the `SunS` marker, walk the model chain, read the common model, and resolve the
//! first inverter or meter model into an ordinary [`Profile`] with absolute addresses.
//!
//! Discovery only reads (through a [`Link`]); resolution and the image builder are pure. Point
//! offsets come from the model table (data), never from code.

mod image;
pub mod models;

pub use image::{image, ImageSpec, SunSpecImage};
pub use models::{ModelDef, ModelKind, ModelSet, ModelsError, Point, PointType};

use crate::link::{Link, LinkError};
use crate::profile::{Defaults, DeviceKind, Function, Identify, Profile, QuantityMap, ValueType};

/// The profile id a site config uses for any SunSpec device.
pub const PROFILE_ID: &str = "sunspec";
/// Whether a model id names SunSpec: `sunspec` (the first mapped model of the chain) gives
/// `Some(None)`, `sunspec:203` (that model, for a device carrying several) `Some(Some(203))`.
pub fn model_choice(id: &str) -> Option<Option<u16>> {
    match id.split_once(':') {
        None if id == PROFILE_ID => Some(None),
        Some((PROFILE_ID, n)) => n.parse().ok().map(Some),
        _ => None,
    }
}

/// "SunS" as two big-endian registers.
pub const MARKER: [u16; 2] = [0x5375, 0x6E53];
/// Where the marker may be, in the order the specification says to look.
pub const BASES: [u16; 3] = [40000, 50000, 0];
/// The model id that ends the chain.
pub const END_ID: u16 = 0xFFFF;
/// A chain longer than this is taken as a broken device, not walked further.
const MAX_MODELS: usize = 64;

/// Where one model of the chain sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelHeader {
    pub id: u16,
    /// Address of the model's ID register.
    pub address: u16,
    /// The model's L (registers after ID and L).
    pub length: u16,
}

/// The common model's identity strings (model 1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Common {
    pub manufacturer: String,
    pub model: String,
    pub options: String,
    pub version: String,
    pub serial: String,
}

/// What discovery found on a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub unit: u8,
    /// Address of the marker's first register.
    pub base: u16,
    /// Model 1, if the chain starts with it (the specification says it must).
    pub common: Option<Common>,
    /// The chain in device order, the end marker excluded.
    pub models: Vec<ModelHeader>,
}

/// Why discovery or resolution failed. Each names the unit and, where one is involved, the register.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SunSpecError {
    #[error("unit {unit}: no SunS marker ({})", evidence.join("; "))]
    NotFound { unit: u8, evidence: Vec<String> },
    #[error("unit {unit}, register {address}: {error}")]
    Link {
        unit: u8,
        address: u16,
        error: LinkError,
    },
    #[error("unit {unit}: model chain broken at register {address}: {why}")]
    Chain { unit: u8, address: u16, why: String },
    #[error("unit {unit}: no inverter or meter model socer maps (chain: {chain})")]
    NoSupportedModel { unit: u8, chain: String },
    #[error(transparent)]
    Models(#[from] ModelsError),
}

/// Look for the marker at 40000, 50000, then 0; walk the chain; read the common model.
pub async fn discover<L: Link>(link: &mut L, unit: u8) -> Result<Device, SunSpecError> {
    let mut evidence = Vec::new();
    let mut base = None;
    for b in BASES {
        match link.read_registers(unit, Function::Holding, b, 2).await {
            Ok(w) if w == MARKER => {
                base = Some(b);
                break;
            }
            Ok(w) => evidence.push(format!("{b}: {}", hex_words(&w))),
            // A dead connection will not answer the next base either.
            Err(e @ LinkError::Transport(_)) => {
                return Err(SunSpecError::Link {
                    unit,
                    address: b,
                    error: e,
                })
            }
            Err(e) => evidence.push(format!("{b}: {e}")),
        }
    }
    let Some(base) = base else {
        return Err(SunSpecError::NotFound { unit, evidence });
    };
    let models = walk_chain(link, unit, base).await?;
    let common = match models.first() {
        Some(h) if h.id == 1 => Some(read_common(link, unit, h).await?),
        _ => None,
    };
    Ok(Device {
        unit,
        base,
        common,
        models,
    })
}

async fn walk_chain<L: Link>(
    link: &mut L,
    unit: u8,
    base: u16,
) -> Result<Vec<ModelHeader>, SunSpecError> {
    let mut models = Vec::new();
    let chain_err = |address, why: String| SunSpecError::Chain { unit, address, why };
    let mut address = base + 2;
    loop {
        let header = match link
            .read_registers(unit, Function::Holding, address, 2)
            .await
        {
            Ok(w) if w.len() == 2 => w,
            Ok(w) => {
                return Err(chain_err(
                    address,
                    format!("header read gave {} words", w.len()),
                ))
            }
            // Some devices omit the end marker: an illegal address after a model ends the chain.
            Err(LinkError::Exception { code: 2 }) if !models.is_empty() => break,
            Err(e) => {
                return Err(SunSpecError::Link {
                    unit,
                    address,
                    error: e,
                })
            }
        };
        let (id, length) = (header[0], header[1]);
        if id == END_ID {
            break;
        }
        if models.len() == MAX_MODELS {
            return Err(chain_err(address, format!("more than {MAX_MODELS} models")));
        }
        models.push(ModelHeader {
            id,
            address,
            length,
        });
        address = address
            .checked_add(2)
            .and_then(|a| a.checked_add(length))
            .ok_or_else(|| {
                chain_err(
                    address,
                    format!("model {id} length {length} runs past 65535"),
                )
            })?;
    }
    Ok(models)
}

async fn read_common<L: Link>(
    link: &mut L,
    unit: u8,
    h: &ModelHeader,
) -> Result<Common, SunSpecError> {
    let set = ModelSet::builtin()?;
    let Some(def) = set.get(1) else {
        return Err(ModelsError("model 1 (common) missing from the table".into()).into());
    };
    // Only the strings are needed; they end before register 66 of the model.
    let count = def
        .points
        .iter()
        .filter(|p| p.point_type == PointType::String)
        .map(|p| p.offset + p.words())
        .max()
        .unwrap_or(2)
        .min(h.length + 2);
    let words = link
        .read_registers(unit, Function::Holding, h.address, count)
        .await
        .map_err(|error| SunSpecError::Link {
            unit,
            address: h.address,
            error,
        })?;
    let text = |name: &str| {
        def.point(name)
            .and_then(|p| words.get(usize::from(p.offset)..usize::from(p.offset + p.words())))
            .map(decode_string)
            .unwrap_or_default()
    };
    Ok(Common {
        manufacturer: text("Mn"),
        model: text("Md"),
        options: text("Opt"),
        version: text("Vr"),
        serial: text("SN"),
    })
}

/// A SunSpec string: two ASCII characters per register, high byte first, NUL or space padded.
pub fn decode_string(words: &[u16]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

/// Encode a string into `size` registers (truncated, NUL padded): the inverse of [`decode_string`].
pub fn encode_string(s: &str, size: u16) -> Vec<u16> {
    let mut bytes: Vec<u8> = s.bytes().take(usize::from(size) * 2).collect();
    bytes.resize(usize::from(size) * 2, 0);
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

fn hex_words(w: &[u16]) -> String {
    w.iter()
        .map(|x| format!("{x:#06x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A device's chosen model, resolved into a profile the generic poller can use.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub model: ModelHeader,
    pub profile: Profile,
}

/// Pick the model to poll — `want` if given, else the first inverter or meter model of the chain
/// that the table maps — and turn it into a [`Profile`] with absolute addresses, absolute
/// scale-factor registers and the not-implemented sentinels of each point type.
pub fn resolve(
    device: &Device,
    set: &ModelSet,
    want: Option<u16>,
) -> Result<Resolved, SunSpecError> {
    let unit = device.unit;
    let chosen = device.models.iter().find_map(|h| {
        let def = set.get(h.id).filter(|d| d.kind != ModelKind::Common)?;
        (want.is_none() || want == Some(h.id)).then_some((h, def))
    });
    let Some((header, def)) = chosen else {
        let chain = device
            .models
            .iter()
            .map(|h| h.id.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(SunSpecError::NoSupportedModel { unit, chain });
    };
    if header.length < def.needed_length() {
        return Err(SunSpecError::Chain {
            unit,
            address: header.address,
            why: format!(
                "model {} has length {}, its points need {}",
                def.id,
                header.length,
                def.needed_length()
            ),
        });
    }
    Ok(Resolved {
        model: *header,
        profile: profile_of(device, header, def),
    })
}

fn profile_of(device: &Device, header: &ModelHeader, def: &ModelDef) -> Profile {
    let common = device.common.clone().unwrap_or_default();
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s.to_string()
        }
    };
    let quantities = def
        .points
        .iter()
        .filter_map(|p| {
            let q = p.quantity?;
            let value_type = p.point_type.value_type()?;
            Some(QuantityMap {
                name: q,
                phase: p.phase,
                function: None,
                address: header.address + p.offset,
                value_type,
                word_order: None,
                byte_order: None,
                scale: p.scale,
                scale_register: def.sf_offset(p).map(|o| header.address + o),
                unit: p.unit.clone(),
                sentinels: p.point_type.sentinels(),
                interval_s: None,
                plus: vec![],
                minus: vec![],
            })
        })
        .collect();
    Profile {
        id: PROFILE_ID.to_string(),
        manufacturer: or_unknown(&common.manufacturer),
        model: format!("{} (SunSpec model {} {})", or_unknown(&common.model), def.id, def.name),
        kind: match def.kind {
            ModelKind::Meter => DeviceKind::Meter,
            ModelKind::Inverter | ModelKind::Common => DeviceKind::Inverter,
        },
        // The profile schema knows 1 or 3 phases; a split-phase model maps its two legs as 1 and 2.
        phases: if def.phases <= 1 { 1 } else { 3 },
        source: format!(
            "SunSpec model {} discovered on unit {} at register {} (marker at {}); offsets from the \
             SunSpec Information Model definitions (drivers/profiles/sunspec/models.toml)",
            def.id, device.unit, header.address, device.base
        ),
        verified: None,
        defaults: Defaults::of(Function::Holding),
        unreadable: vec![],
        identify: vec![Identify::integer(
            Function::Holding,
            device.base,
            ValueType::U32,
            vec![0x5375_6E53],
        )],
        quantities,
    }
}

/// Discover and resolve in one go: what `socer read --model sunspec` and the site poller need.
pub async fn discover_profile<L: Link>(
    link: &mut L,
    unit: u8,
    want: Option<u16>,
) -> Result<(Device, Resolved), SunSpecError> {
    let device = discover(link, unit).await?;
    let resolved = resolve(&device, &ModelSet::builtin()?, want)?;
    Ok((device, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_choice_reads_sunspec_with_an_optional_model_id() {
        assert_eq!(model_choice("sunspec"), Some(None));
        assert_eq!(model_choice("sunspec:203"), Some(Some(203)));
        assert_eq!(model_choice("sunspec:x"), None);
        assert_eq!(model_choice("eastron-sdm630"), None);
    }

    #[test]
    fn strings_round_trip_and_stop_at_nul() {
        let w = encode_string("Fronius", 16);
        assert_eq!(w.len(), 16);
        assert_eq!(w[0], 0x4672); // "Fr"
        assert_eq!(decode_string(&w), "Fronius");
        assert_eq!(decode_string(&[0x4142, 0x0043]), "AB");
    }
}
