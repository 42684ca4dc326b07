//! Register words ⇄ canonical values: type, word and byte order, scale, sentinels.
//!
//! Pure functions. `encode` is the inverse of `decode` and serves the simulator, so that the
//! simulator and the poller cannot disagree about a profile. [`decode_checked`] also rejects
//! physically impossible values: a nonsense register value must never become a reading.

use crate::profile::{ByteOrder, Defaults, QuantityMap, ValueType, WordOrder};
use crate::reading::Quantity;

/// Why a value could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {expected} registers, got {got}")]
    Length { expected: usize, got: usize },
    /// The raw value is one the profile marks as "not available" (or NaN/infinite).
    #[error("not available (raw {raw})")]
    NotAvailable { raw: String },
    /// The value decoded but cannot be physically true (see [`plausible`]).
    #[error(transparent)]
    Implausible(#[from] Implausible),
}

/// A decoded value outside the physical bounds of its quantity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("implausible {quantity} = {value} (valid {min}..={max})", quantity = .quantity.name())]
pub struct Implausible {
    pub quantity: Quantity,
    pub value: f64,
    pub min: f64,
    pub max: f64,
}

/// Physical bounds of each canonical quantity, in canonical units, for any device one building
/// can hold: |p_w| up to 10 MW, 0..1000 V phase voltage, 0..10 kA, 40..70 Hz, |pf| <= 1 (plus
/// rounding), counters never negative and below 10 TWh.
pub fn bounds(quantity: Quantity) -> (f64, f64) {
    match quantity {
        Quantity::PW => (-10e6, 10e6),
        Quantity::EImpWh | Quantity::EExpWh => (0.0, 1e13),
        Quantity::VV => (0.0, 1000.0),
        Quantity::IA => (0.0, 10e3),
        Quantity::FHz => (40.0, 70.0),
        Quantity::Pf => (-1.0001, 1.0001),
        Quantity::SocPct => (0.0, 100.0),
        Quantity::BatPW => (-10e6, 10e6),
        Quantity::EChargeWh | Quantity::EDischargeWh => (0.0, 1e13),
    }
}

/// `Ok(value)` when the value can be physically true for its quantity.
pub fn plausible(quantity: Quantity, value: f64) -> Result<f64, Implausible> {
    let (min, max) = bounds(quantity);
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Implausible {
            quantity,
            value,
            min,
            max,
        })
    }
}

/// Resolved encoding of one quantity (the profile's defaults applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Encoding {
    pub value_type: ValueType,
    pub word_order: WordOrder,
    pub byte_order: ByteOrder,
    pub scale: f64,
}

impl Encoding {
    pub fn of(map: &QuantityMap, defaults: &Defaults) -> Self {
        Encoding {
            value_type: map.value_type,
            word_order: map.word_order.unwrap_or(defaults.word_order),
            byte_order: map.byte_order.unwrap_or(defaults.byte_order),
            scale: map.scale,
        }
    }
}

/// Put words into most-significant-first order with big-endian bytes.
fn normalise(words: &[u16], enc: &Encoding) -> Vec<u16> {
    let mut w: Vec<u16> = match enc.byte_order {
        ByteOrder::Big => words.to_vec(),
        ByteOrder::Little => words.iter().map(|x| x.swap_bytes()).collect(),
    };
    if enc.word_order == WordOrder::LowFirst {
        w.reverse();
    }
    w
}

fn join(words: &[u16]) -> u64 {
    words
        .iter()
        .fold(0u64, |acc, &w| (acc << 16) | u64::from(w))
}

/// The raw value before scaling, and its integer bit pattern (for sentinel comparison).
fn raw(words: &[u16], enc: &Encoding) -> Result<(f64, Option<i64>), DecodeError> {
    let n = usize::from(enc.value_type.words());
    if words.len() != n {
        return Err(DecodeError::Length {
            expected: n,
            got: words.len(),
        });
    }
    let bits = join(&normalise(words, enc));
    Ok(match enc.value_type {
        ValueType::U16 => (bits as f64, Some(bits as i64)),
        ValueType::I16 => {
            let v = bits as u16 as i16;
            (f64::from(v), Some(i64::from(v)))
        }
        ValueType::U32 => (bits as f64, Some(bits as i64)),
        ValueType::I32 => {
            let v = bits as u32 as i32;
            (f64::from(v), Some(i64::from(v)))
        }
        ValueType::U64 => (bits as f64, Some(bits as i64)),
        ValueType::I64 => {
            let v = bits as i64;
            (v as f64, Some(v))
        }
        ValueType::F32 => (f64::from(f32::from_bits(bits as u32)), None),
        ValueType::F64 => (f64::from_bits(bits), None),
    })
}

/// The raw integer of an integer register in its signed and its unsigned view (`0xFFFF` and
/// `-1` alike), compared exactly: through `f64` a 64-bit value would lose its low bits. `None`
/// for a float type or the wrong number of words.
pub fn raw_integer(
    words: &[u16],
    value_type: ValueType,
    defaults: &Defaults,
) -> Option<(i64, i64)> {
    if words.len() != usize::from(value_type.words()) {
        return None;
    }
    let enc = Encoding {
        value_type,
        word_order: defaults.word_order,
        byte_order: defaults.byte_order,
        scale: 1.0,
    };
    let bits = join(&normalise(words, &enc));
    let width: u32 = match value_type {
        ValueType::U16 | ValueType::I16 => 16,
        ValueType::U32 | ValueType::I32 => 32,
        ValueType::U64 | ValueType::I64 => 64,
        ValueType::F32 | ValueType::F64 => return None,
    };
    let signed = if width == 64 {
        bits as i64
    } else {
        let shift = 64 - width;
        ((bits << shift) as i64) >> shift
    };
    Some((signed, bits as i64))
}

/// The words an integer register of `value_type` holds for the raw `value` (the inverse of
/// [`raw_integer`]), in the defaults' word and byte order.
pub fn encode_raw_integer(value: i64, value_type: ValueType, defaults: &Defaults) -> Vec<u16> {
    let n = usize::from(value_type.words());
    let bits = value as u64;
    let mut words: Vec<u16> = (0..n).rev().map(|i| (bits >> (16 * i)) as u16).collect();
    if defaults.word_order == WordOrder::LowFirst {
        words.reverse();
    }
    if defaults.byte_order == ByteOrder::Little {
        for w in &mut words {
            *w = w.swap_bytes();
        }
    }
    words
}

/// Decode the words of one quantity into its canonical value (scale applied, not the scale
/// register: see [`apply_scale_factor`]).
pub fn decode(words: &[u16], map: &QuantityMap, defaults: &Defaults) -> Result<f64, DecodeError> {
    let enc = Encoding::of(map, defaults);
    let (value, int_bits) = raw(words, &enc)?;
    if !value.is_finite() {
        return Err(DecodeError::NotAvailable {
            raw: format!("{value}"),
        });
    }
    if let Some(bits) = int_bits {
        // Sentinels are written as the register shows them: compare both signed and unsigned views.
        let unsigned = join(&normalise(words, &enc)) as i64;
        if map.sentinels.iter().any(|&s| s == bits || s == unsigned) {
            return Err(DecodeError::NotAvailable {
                raw: format!("{unsigned:#x}"),
            });
        }
    }
    Ok(value * enc.scale)
}

/// [`decode`], then reject a value outside the physical bounds of the quantity. This is what the
/// poller uses: a value that fails here is reported missing, never published.
pub fn decode_checked(
    words: &[u16],
    map: &QuantityMap,
    defaults: &Defaults,
) -> Result<f64, DecodeError> {
    let value = decode(words, map, defaults)?;
    Ok(plausible(map.name, value)?)
}

/// Apply a SunSpec-style power-of-ten scale factor (`value × 10^sf`).
pub fn apply_scale_factor(value: f64, sf: i16) -> f64 {
    // Dividing by an exact power of ten gives the nearest double (2301 × 10^-1 = 230.1, where
    // multiplying by 0.1 gives 230.10000000000002).
    if sf < 0 {
        value / 10f64.powi(-i32::from(sf))
    } else {
        value * 10f64.powi(i32::from(sf))
    }
}

/// Encode a canonical value into the words a device would hold (inverse of [`decode`]).
/// Integer types round to nearest and saturate at the type's range.
pub fn encode(value: f64, map: &QuantityMap, defaults: &Defaults) -> Vec<u16> {
    let enc = Encoding::of(map, defaults);
    let raw = if enc.scale != 0.0 {
        value / enc.scale
    } else {
        value
    };
    let r = raw.round();
    let bits: u64 = match enc.value_type {
        ValueType::U16 => r.clamp(0.0, f64::from(u16::MAX)) as u64,
        ValueType::I16 => (r.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16) as u16 as u64,
        ValueType::U32 => r.clamp(0.0, f64::from(u32::MAX)) as u64,
        ValueType::I32 => (r.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32) as u32 as u64,
        ValueType::U64 => r.max(0.0) as u64,
        ValueType::I64 => (r as i64) as u64,
        ValueType::F32 => u64::from((raw as f32).to_bits()),
        ValueType::F64 => raw.to_bits(),
    };
    let n = usize::from(enc.value_type.words());
    let mut words: Vec<u16> = (0..n).rev().map(|i| (bits >> (16 * i)) as u16).collect();
    if enc.word_order == WordOrder::LowFirst {
        words.reverse();
    }
    if enc.byte_order == ByteOrder::Little {
        words.iter_mut().for_each(|w| *w = w.swap_bytes());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Function;

    fn defaults() -> Defaults {
        Defaults::of(Function::Input)
    }

    fn map(t: ValueType, scale: f64) -> QuantityMap {
        QuantityMap {
            name: Quantity::PW,
            phase: None,
            function: None,
            address: 0,
            value_type: t,
            word_order: None,
            byte_order: None,
            scale,
            scale_register: None,
            unit: None,
            sentinels: vec![],
            interval_s: None,
            plus: vec![],
            minus: vec![],
        }
    }

    #[test]
    fn f32_big_endian_decodes_ieee_bits() {
        // 230.5 = 0x43668000
        assert_eq!(
            decode(&[0x4366, 0x8000], &map(ValueType::F32, 1.0), &defaults()),
            Ok(230.5)
        );
    }

    #[test]
    fn low_word_first_i32_with_scale() {
        // Carlo Gavazzi style: INT32, LSW first, W × 0.1. -1234.5 W → raw -12345 = 0xFFFFCFC7
        let mut m = map(ValueType::I32, 0.1);
        m.word_order = Some(WordOrder::LowFirst);
        let v = decode(&[0xCFC7, 0xFFFF], &m, &defaults()).unwrap();
        assert!((v + 1234.5).abs() < 1e-9);
    }

    #[test]
    fn scale_factors_give_the_nearest_decimal() {
        assert_eq!(apply_scale_factor(2301.0, -1), 230.1);
        assert_eq!(apply_scale_factor(742.0, -2), 7.42);
        assert_eq!(apply_scale_factor(512.0, 1), 5120.0);
    }

    #[test]
    fn sentinel_and_nan_are_not_available() {
        let mut m = map(ValueType::I16, 1.0);
        m.sentinels = vec![-32768];
        assert!(matches!(
            decode(&[0x8000], &m, &defaults()),
            Err(DecodeError::NotAvailable { .. })
        ));
        let mut u = map(ValueType::U16, 1.0);
        u.sentinels = vec![0xFFFF];
        assert!(matches!(
            decode(&[0xFFFF], &u, &defaults()),
            Err(DecodeError::NotAvailable { .. })
        ));
        assert!(matches!(
            decode(&[0x7FC0, 0x0000], &map(ValueType::F32, 1.0), &defaults()),
            Err(DecodeError::NotAvailable { .. })
        ));
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert_eq!(
            decode(&[1], &map(ValueType::U32, 1.0), &defaults()),
            Err(DecodeError::Length {
                expected: 2,
                got: 1
            })
        );
    }

    #[test]
    fn encode_inverts_decode_for_every_type_and_order() {
        let types = [
            ValueType::U16,
            ValueType::I16,
            ValueType::U32,
            ValueType::I32,
            ValueType::U64,
            ValueType::I64,
            ValueType::F32,
            ValueType::F64,
        ];
        for t in types {
            for wo in [WordOrder::HighFirst, WordOrder::LowFirst] {
                for bo in [ByteOrder::Big, ByteOrder::Little] {
                    let mut m = map(t, 0.01);
                    m.word_order = Some(wo);
                    m.byte_order = Some(bo);
                    let v = 123.45;
                    let back = decode(&encode(v, &m, &defaults()), &m, &defaults()).unwrap();
                    assert!((back - v).abs() < 1e-3, "{t:?} {wo:?} {bo:?}: {back}");
                }
            }
        }
    }

    #[test]
    fn plausibility_rejects_physically_impossible_values() {
        let cases = [
            (Quantity::PW, 10.5e6),
            (Quantity::PW, -10.5e6),
            (Quantity::FHz, 0.0),
            (Quantity::FHz, 75.0),
            (Quantity::Pf, 1.2),
            (Quantity::VV, -1.0),
            (Quantity::VV, 1200.0),
            (Quantity::IA, -0.5),
            (Quantity::IA, 12e3),
            (Quantity::EImpWh, -1.0),
            (Quantity::EExpWh, -0.001),
        ];
        for (q, v) in cases {
            let err = plausible(q, v).unwrap_err();
            assert_eq!((err.quantity, err.value), (q, v));
            assert!(err.to_string().contains(q.name()), "{err}");
        }
    }

    #[test]
    fn plausibility_accepts_ordinary_values_and_edges() {
        for (q, v) in [
            (Quantity::PW, -4500.0),
            (Quantity::PW, 10e6),
            (Quantity::FHz, 50.02),
            (Quantity::Pf, -1.0),
            (Quantity::Pf, 1.00005),
            (Quantity::VV, 0.0),
            (Quantity::IA, 0.0),
            (Quantity::EImpWh, 0.0),
            (Quantity::EExpWh, 123_456_789.0),
        ] {
            assert_eq!(plausible(q, v), Ok(v));
        }
    }

    #[test]
    fn checked_decode_turns_a_nonsense_register_into_an_error() {
        // An Eastron-style float power register holding 3.0e9 W (garbage after a bus collision).
        let m = map(ValueType::F32, 1.0);
        let words = encode(3.0e9, &m, &defaults());
        match decode_checked(&words, &m, &defaults()) {
            Err(DecodeError::Implausible(i)) => {
                assert_eq!(i.quantity, Quantity::PW);
                assert_eq!(i.value, 3.0e9);
                assert_eq!(
                    i.to_string(),
                    "implausible p_w = 3000000000 (valid -10000000..=10000000)"
                );
            }
            other => panic!("expected Implausible, got {other:?}"),
        }
        let ok = encode(-2500.0, &m, &defaults());
        assert_eq!(decode_checked(&ok, &m, &defaults()), Ok(-2500.0));
    }
}
