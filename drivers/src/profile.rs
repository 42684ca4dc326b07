//! Meter profiles: where a device model keeps each canonical quantity, as data (TOML).
//!
//! Profiles ship in `drivers/profiles/` (embedded at build time by `build.rs`) and a technician may
//! add more from a folder. Loading validates everything and reports `FILE:LINE:COL: message`;
//! nothing here touches a bus.

use serde::{Deserialize, Serialize};

use crate::reading::Quantity;

/// Modbus function family a register is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Function 0x03.
    Holding,
    /// Function 0x04.
    Input,
}

/// Register value type. Multi-word types span 2 (32-bit) or 4 (64-bit) registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl ValueType {
    /// Number of 16-bit registers the value occupies.
    pub fn words(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 4,
        }
    }
}

/// Order of the 16-bit words of a multi-word value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// Most significant word at the lowest address (Modbus "big endian").
    #[default]
    HighFirst,
    /// Least significant word first (Carlo Gavazzi, some Schneider registers).
    LowFirst,
}

/// Order of the two bytes inside each 16-bit register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ByteOrder {
    #[default]
    Big,
    Little,
}

/// What kind of device a profile describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Meter,
    Inverter,
}

/// One canonical quantity's location and encoding on a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantityMap {
    /// Canonical name (`p_w`, `e_imp_wh`, `e_exp_wh`, `v_v`, `i_a`, `f_hz`, `pf`).
    pub name: Quantity,
    /// 1..=3 for per-phase quantities.
    #[serde(default)]
    pub phase: Option<u8>,
    /// Function; defaults to the profile's.
    #[serde(default)]
    pub function: Option<Function>,
    /// 0-based protocol address (what goes on the wire), not the "30001"-style reference.
    pub address: u16,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    #[serde(default)]
    pub word_order: Option<WordOrder>,
    #[serde(default)]
    pub byte_order: Option<ByteOrder>,
    /// Multiplier from the raw value to the canonical unit (e.g. 1000 for kWh → Wh).
    #[serde(default = "one")]
    pub scale: f64,
    /// A register holding a power-of-ten scale factor (signed 16-bit), applied after `scale`.
    #[serde(default)]
    pub scale_register: Option<u16>,
    /// The device's own unit, as the manufacturer's document writes it (documentation).
    #[serde(default)]
    pub unit: Option<String>,
    /// Raw values meaning "not available" (compared before scaling; NaN always is).
    #[serde(default)]
    pub sentinels: Vec<i64>,
    /// Poll interval in seconds; defaults to the profile's (counters slower than power).
    #[serde(default)]
    pub interval_s: Option<u32>,
}

fn one() -> f64 {
    1.0
}

/// An address range the device refuses or answers badly: the planner never reads across it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unreadable {
    pub function: Function,
    /// First address of the range.
    pub start: u16,
    /// Last address of the range (inclusive).
    pub end: u16,
}

/// Profile-wide defaults and device limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub function: Function,
    #[serde(default)]
    pub word_order: WordOrder,
    #[serde(default)]
    pub byte_order: ByteOrder,
    /// Poll interval of power-like quantities, seconds.
    #[serde(default = "default_fast_s")]
    pub fast_interval_s: u32,
    /// Poll interval of energy counters, seconds.
    #[serde(default = "default_counter_s")]
    pub counter_interval_s: u32,
    /// Largest request the device accepts, in registers (Modbus allows 125).
    #[serde(default = "default_max_regs")]
    pub max_registers: u16,
}

fn default_fast_s() -> u32 {
    5
}
fn default_counter_s() -> u32 {
    60
}
fn default_max_regs() -> u16 {
    125
}

/// A register read by `socer scan` to recognise the model, and the values that identify it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identify {
    pub function: Function,
    pub address: u16,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Raw values that identify this model.
    pub values: Vec<i64>,
}

/// A device model's register map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Stable id (`eastron-sdm630`), referenced by site configs.
    pub id: String,
    pub manufacturer: String,
    pub model: String,
    pub kind: DeviceKind,
    /// 1 or 3.
    pub phases: u8,
    /// The manufacturer's document the addresses come from (title, version, date, section).
    pub source: String,
    pub defaults: Defaults,
    #[serde(default)]
    pub unreadable: Vec<Unreadable>,
    #[serde(default)]
    pub identify: Vec<Identify>,
    #[serde(default, rename = "quantity")]
    pub quantities: Vec<QuantityMap>,
}

/// All known profiles: the embedded ones plus any loaded from a folder.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    pub profiles: Vec<Profile>,
}

impl ProfileSet {
    pub fn get(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.profiles.iter().map(|p| p.id.as_str()).collect()
    }
}
