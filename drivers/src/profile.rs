//! Meter profiles: where a device model keeps each canonical quantity, as data (TOML).
//!
//! Profiles ship in `drivers/profiles/` (embedded at build time by `build.rs`) and a technician may
//! add more from a folder. Loading validates everything and reports `FILE:LINE:COL: message`;
//! nothing here touches a bus, and no profile that fails validation is ever handed out.

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

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

    /// The name used in profile files (`u16`, `f32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F32 => "f32",
            ValueType::F64 => "f64",
        }
    }
}

impl Function {
    /// The name used in profile files.
    pub fn name(self) -> &'static str {
        match self {
            Function::Holding => "holding",
            Function::Input => "input",
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
    /// A storage system (a battery, or the battery side of a hybrid inverter): maps `soc_pct`.
    Battery,
    /// A device that relays another meter's figures (a Chain 2 reader of the official meter, an
    /// energy-management controller).
    Gateway,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 4] = [
        DeviceKind::Meter,
        DeviceKind::Inverter,
        DeviceKind::Battery,
        DeviceKind::Gateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Meter => "meter",
            DeviceKind::Inverter => "inverter",
            DeviceKind::Battery => "battery",
            DeviceKind::Gateway => "gateway",
        }
    }
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
    /// Registers (same function, type and encoding) whose values are added to this one: a device
    /// that gives per-phase powers only, summed into the total.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plus: Vec<u16>,
    /// Registers (same function, type and encoding) whose values are subtracted from this one: a
    /// device that gives import and export power as two unsigned registers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub minus: Vec<u16>,
}

fn one() -> f64 {
    1.0
}

impl QuantityMap {
    /// The function this quantity is read with (its own, else the profile's).
    pub fn resolved_function(&self, defaults: &Defaults) -> Function {
        self.function.unwrap_or(defaults.function)
    }

    /// Poll interval: its own, else the profile's counter interval for energy counters and the
    /// fast interval for everything else.
    pub fn resolved_interval_s(&self, defaults: &Defaults) -> u32 {
        self.interval_s.unwrap_or(if self.name.is_counter() {
            defaults.counter_interval_s
        } else {
            defaults.fast_interval_s
        })
    }

    /// The phase a value is stored under (1 for quantities that are not per phase).
    pub fn resolved_phase(&self) -> u8 {
        self.phase.unwrap_or(1)
    }

    /// Last register address the value occupies (inclusive), if it fits the address space.
    pub fn last_address(&self) -> Option<u16> {
        self.address.checked_add(self.value_type.words() - 1)
    }

    /// `p_w`, `v_v[2]`: how the quantity is named in messages and tables.
    pub fn label(&self) -> String {
        match self.phase {
            Some(p) => format!("{}[{p}]", self.name.name()),
            None => self.name.name().to_string(),
        }
    }
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
    /// The shortest poll interval the device tolerates, seconds: no quantity of it is ever read
    /// more often, whatever a site config asks (0: no limit).
    #[serde(default)]
    pub min_interval_s: u32,
    /// The unit id the device answers on out of the box (used when none is given).
    #[serde(default)]
    pub unit_id: Option<u8>,
}

impl Defaults {
    /// The documented defaults (high word first, big-endian bytes, 5 s and 60 s, 125 registers,
    /// no minimum interval, no unit id) for registers read with `function`: what a profile
    /// that gives only `function` gets.
    pub fn of(function: Function) -> Self {
        Defaults {
            function,
            word_order: WordOrder::default(),
            byte_order: ByteOrder::default(),
            fast_interval_s: default_fast_s(),
            counter_interval_s: default_counter_s(),
            max_registers: default_max_regs(),
            min_interval_s: 0,
            unit_id: None,
        }
    }
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

/// Registers read by `socer scan` to recognise the model: an integer register and the raw values
/// that identify it (`type` and `values`), or ASCII text the registers begin with (`text`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identify {
    pub function: Function,
    pub address: u16,
    /// The register's integer type, with `values`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<ValueType>,
    /// Raw values that identify this model (signed or unsigned view, compared exactly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<i64>,
    /// ASCII text the registers begin with: two characters a register, the first in the high
    /// byte, as Modbus devices store model names (`"SUN2000"`, `"SPEM-003"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Longest identify text: 32 registers.
pub const MAX_IDENTIFY_TEXT: usize = 64;

impl Identify {
    /// An integer register and the values that identify the model.
    pub fn integer(
        function: Function,
        address: u16,
        value_type: ValueType,
        values: Vec<i64>,
    ) -> Self {
        Identify {
            function,
            address,
            value_type: Some(value_type),
            values,
            text: None,
        }
    }

    /// How many registers the check reads.
    pub fn words(&self) -> u16 {
        match (&self.text, self.value_type) {
            (Some(t), _) => u16::try_from(t.len().div_ceil(2)).unwrap_or(u16::MAX),
            (None, Some(t)) => t.words(),
            (None, None) => 1,
        }
    }

    /// Whether `words` (as read from [`Identify::address`], [`Identify::words`] long) identify
    /// the model, with what was read in words for the evidence: `Ok(evidence)` on a match,
    /// `Err(what was read)` otherwise.
    pub fn check(&self, words: &[u16], defaults: &Defaults) -> Result<String, String> {
        if let Some(text) = &self.text {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
            let shown: String = bytes
                .iter()
                .take_while(|&&b| b != 0)
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '?'
                    }
                })
                .collect();
            return if bytes.starts_with(text.as_bytes()) {
                Ok(format!("\"{shown}\""))
            } else {
                Err(format!("\"{shown}\""))
            };
        }
        let Some(value_type) = self.value_type else {
            return Err("no type".into());
        };
        let Some((signed, unsigned)) = crate::decode::raw_integer(words, value_type, defaults)
        else {
            return Err(format!("{} words", words.len()));
        };
        let shown = match value_type {
            ValueType::I16 | ValueType::I32 | ValueType::I64 => signed.to_string(),
            _ => (unsigned as u64).to_string(),
        };
        if self.values.iter().any(|&v| v == signed || v == unsigned) {
            Ok(shown)
        } else {
            Err(shown)
        }
    }

    /// The words a device identifying as this model holds (the first value, or the text
    /// zero-padded): what the simulator serves.
    pub fn example_words(&self, defaults: &Defaults) -> Vec<u16> {
        if let Some(text) = &self.text {
            let mut bytes = text.as_bytes().to_vec();
            if bytes.len() % 2 == 1 {
                bytes.push(0);
            }
            return bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
        }
        match (self.value_type, self.values.first()) {
            (Some(t), Some(&v)) => crate::decode::encode_raw_integer(v, t, defaults),
            _ => vec![],
        }
    }
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
    /// How the map was proven: e.g. "typed image from <document> table N" (`socer profiles`).
    #[serde(default)]
    pub verified: Option<String>,
    pub defaults: Defaults,
    #[serde(default)]
    pub unreadable: Vec<Unreadable>,
    #[serde(default)]
    pub identify: Vec<Identify>,
    #[serde(default, rename = "quantity")]
    pub quantities: Vec<QuantityMap>,
}

/// A problem in a profile file, located at the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct ProfileError {
    /// The file name as the technician knows it (a built-in profile's name in `drivers/profiles/`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    pub message: String,
}

impl ProfileError {
    fn at(file: &str, text: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let (line, col) = span.map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ProfileError {
            file: file.to_string(),
            line,
            col,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset into `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// The same document read a second time, keeping where each checked value sits in the text.
/// Unknown keys are ignored here: the typed parse has already rejected them.
#[derive(Deserialize)]
struct Located {
    kind: Option<Spanned<toml::Value>>,
    phases: Option<Spanned<toml::Value>>,
    source: Option<Spanned<toml::Value>>,
    defaults: Option<LocatedDefaults>,
    #[serde(default)]
    unreadable: Vec<LocatedUnreadable>,
    #[serde(default)]
    identify: Vec<LocatedAddress>,
    #[serde(default)]
    quantity: Vec<LocatedQuantity>,
}

#[derive(Deserialize)]
struct LocatedDefaults {
    max_registers: Option<Spanned<toml::Value>>,
    min_interval_s: Option<Spanned<toml::Value>>,
    unit_id: Option<Spanned<toml::Value>>,
    fast_interval_s: Option<Spanned<toml::Value>>,
    counter_interval_s: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
struct LocatedUnreadable {
    start: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
struct LocatedAddress {
    address: Option<Spanned<toml::Value>>,
    #[serde(rename = "type")]
    value_type: Option<Spanned<toml::Value>>,
    values: Option<Spanned<toml::Value>>,
    text: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
struct LocatedQuantity {
    name: Option<Spanned<toml::Value>>,
    phase: Option<Spanned<toml::Value>>,
    address: Option<Spanned<toml::Value>>,
    scale: Option<Spanned<toml::Value>>,
    interval_s: Option<Spanned<toml::Value>>,
    sentinels: Option<Spanned<toml::Value>>,
    plus: Option<Spanned<toml::Value>>,
    minus: Option<Spanned<toml::Value>>,
}

/// The raw integers a register of this type can show, in its signed or its unsigned view
/// (profiles write `0xFFFF` and `-1` alike); `None` for floating-point types.
fn raw_range(t: ValueType) -> Option<(i64, i64)> {
    match t {
        ValueType::F32 | ValueType::F64 => None,
        ValueType::U16 | ValueType::I16 => Some((i64::from(i16::MIN), i64::from(u16::MAX))),
        ValueType::U32 | ValueType::I32 => Some((i64::from(i32::MIN), i64::from(u32::MAX))),
        ValueType::U64 | ValueType::I64 => Some((i64::MIN, i64::MAX)),
    }
}

fn span_of(v: &Option<Spanned<toml::Value>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}

impl Profile {
    /// Parse and validate one profile file. `file` names it in errors.
    pub fn from_toml(file: &str, text: &str) -> Result<Profile, ProfileError> {
        match Profile::check(file, text) {
            Ok(p) => Ok(p),
            Err(mut errors) => Err(errors.remove(0)),
        }
    }

    /// Parse and validate one profile file, reporting every problem found (in file order).
    /// The error list is never empty.
    pub fn check(file: &str, text: &str) -> Result<Profile, Vec<ProfileError>> {
        let profile: Profile = toml::from_str(text)
            .map_err(|e| vec![ProfileError::at(file, text, e.span(), e.message().trim())])?;
        let located: Located = toml::from_str(text)
            .map_err(|e| vec![ProfileError::at(file, text, e.span(), e.message().trim())])?;
        let mut problems = profile.problems(&located);
        if problems.is_empty() {
            return Ok(profile);
        }
        problems.sort_by_key(|(span, _)| span.as_ref().map(|s| s.start).unwrap_or(0));
        Err(problems
            .into_iter()
            .map(|(span, m)| ProfileError::at(file, text, span, m))
            .collect())
    }

    /// Semantic problems, each with the span of the value to fix.
    fn problems(&self, at: &Located) -> Vec<(Option<Range<usize>>, String)> {
        let mut out = Vec::new();
        if self.phases != 1 && self.phases != 3 {
            out.push((
                span_of(&at.phases),
                format!("phases must be 1 or 3, not {}", self.phases),
            ));
        }
        if self.source.trim().is_empty() {
            out.push((
                span_of(&at.source),
                "source is empty: name the manufacturer's document (title, version or date, table)"
                    .to_string(),
            ));
        }
        let d = &self.defaults;
        let ad = at.defaults.as_ref();
        if !(1..=125).contains(&d.max_registers) {
            out.push((
                ad.and_then(|a| span_of(&a.max_registers)),
                format!(
                    "max_registers must be 1..=125 (the Modbus limit), not {}",
                    d.max_registers
                ),
            ));
        }
        if d.fast_interval_s == 0 {
            out.push((
                ad.and_then(|a| span_of(&a.fast_interval_s)),
                "fast_interval_s must be at least 1".into(),
            ));
        }
        if d.counter_interval_s == 0 {
            out.push((
                ad.and_then(|a| span_of(&a.counter_interval_s)),
                "counter_interval_s must be at least 1".into(),
            ));
        }
        for (value, what) in [
            (d.fast_interval_s, "fast_interval_s"),
            (d.counter_interval_s, "counter_interval_s"),
        ] {
            if value < d.min_interval_s {
                let span = ad.and_then(|a| {
                    span_of(if what == "fast_interval_s" {
                        &a.fast_interval_s
                    } else {
                        &a.counter_interval_s
                    })
                    .or_else(|| span_of(&a.min_interval_s))
                });
                out.push((
                    span,
                    format!(
                        "{what} = {value} is below the device's min_interval_s = {}",
                        d.min_interval_s
                    ),
                ));
            }
        }
        if let Some(u) = d.unit_id {
            if !(1..=247).contains(&u) {
                out.push((
                    ad.and_then(|a| span_of(&a.unit_id)),
                    format!("unit_id must be 1..=247, not {u}"),
                ));
            }
        }
        if self.kind == DeviceKind::Battery
            && !self.quantities.iter().any(|q| q.name == Quantity::SocPct)
        {
            out.push((
                span_of(&at.kind),
                "kind = \"battery\" needs a soc_pct quantity (the state of charge)".into(),
            ));
        }
        for (u, a) in self.unreadable.iter().zip(&at.unreadable) {
            if u.start > u.end {
                out.push((
                    span_of(&a.start),
                    format!(
                        "unreadable range starts ({}) after it ends ({})",
                        u.start, u.end
                    ),
                ));
            }
        }
        for (i, a) in self.identify.iter().zip(&at.identify) {
            if i.address.checked_add(i.words().saturating_sub(1)).is_none() {
                out.push((
                    span_of(&a.address),
                    format!(
                        "identify register {} + {} words overflows address 65535",
                        i.address,
                        i.words()
                    ),
                ));
            }
            match (&i.text, i.value_type) {
                (Some(_), Some(_)) => out.push((
                    span_of(&a.text),
                    "identify has both text and type: one or the other".into(),
                )),
                (Some(t), None) => {
                    if !i.values.is_empty() {
                        out.push((span_of(&a.values), "identify text takes no values".into()));
                    }
                    if t.is_empty() || t.len() > MAX_IDENTIFY_TEXT {
                        out.push((
                            span_of(&a.text),
                            format!("identify text must be 1 to {MAX_IDENTIFY_TEXT} characters"),
                        ));
                    } else if !t.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                        out.push((
                            span_of(&a.text),
                            "identify text must be printable ASCII".into(),
                        ));
                    }
                }
                (None, None) => out.push((
                    span_of(&a.address),
                    "identify needs type and values, or text".into(),
                )),
                (None, Some(t)) => {
                    match raw_range(t) {
                        None => out.push((
                            span_of(&a.value_type),
                            format!(
                                "identify compares raw integers: {} is not an integer type",
                                t.name()
                            ),
                        )),
                        Some((lo, hi)) => {
                            if let Some(v) = i.values.iter().find(|v| !(lo..=hi).contains(*v)) {
                                out.push((
                                    span_of(&a.values),
                                    format!(
                                        "identify value {v} does not fit a {} register",
                                        t.name()
                                    ),
                                ));
                            }
                        }
                    }
                    if i.values.is_empty() {
                        out.push((
                            span_of(&a.values),
                            "identify has no values to compare with".into(),
                        ));
                    }
                }
            }
        }
        let mut seen: Vec<(Quantity, Option<u8>)> = Vec::new();
        for (q, a) in self.quantities.iter().zip(&at.quantity) {
            self.quantity_problems(q, a, &mut out);
            let key = (q.name, q.phase);
            if seen.contains(&key) {
                out.push((span_of(&a.name), format!("{} is mapped twice", q.label())));
            } else {
                seen.push(key);
            }
        }
        out
    }

    fn quantity_problems(
        &self,
        q: &QuantityMap,
        a: &LocatedQuantity,
        out: &mut Vec<(Option<Range<usize>>, String)>,
    ) {
        let name = q.name.name();
        match (q.name.per_phase(), q.phase) {
            (true, None) => out.push((
                span_of(&a.name),
                format!(
                    "{name} is per phase: add `phase = 1` (up to {})",
                    self.phases
                ),
            )),
            (true, Some(p)) if p == 0 || p > 3 || p > self.phases => out.push((
                span_of(&a.phase),
                format!(
                    "phase must be 1..={} for this {}-phase device, not {p}",
                    self.phases.min(3),
                    self.phases
                ),
            )),
            (false, Some(_)) => out.push((
                span_of(&a.phase),
                format!("{name} is not per phase: remove `phase` (only v_v and i_a have one)"),
            )),
            _ => {}
        }
        let words = q.value_type.words();
        let Some(last) = q.last_address() else {
            out.push((
                span_of(&a.address),
                format!(
                    "{} at {} + {words} words overflows address 65535",
                    q.label(),
                    q.address
                ),
            ));
            return;
        };
        if !q.scale.is_finite() || q.scale == 0.0 {
            out.push((
                span_of(&a.scale),
                format!("scale must be a finite non-zero number, not {}", q.scale),
            ));
        }
        if !q.sentinels.is_empty() {
            match raw_range(q.value_type) {
                None => out.push((
                    span_of(&a.sentinels),
                    format!(
                        "sentinels apply to integer registers; a {} reads NaN when not available, which is always treated so",
                        q.value_type.name()
                    ),
                )),
                Some((lo, hi)) => {
                    if let Some(v) = q.sentinels.iter().find(|v| !(lo..=hi).contains(*v)) {
                        out.push((
                            span_of(&a.sentinels),
                            format!("sentinel {v} does not fit a {} register", q.value_type.name()),
                        ));
                    }
                }
            }
        }
        if q.interval_s == Some(0) {
            out.push((
                span_of(&a.interval_s),
                "interval_s must be at least 1".into(),
            ));
        }
        if let Some(i) = q.interval_s {
            if i < self.defaults.min_interval_s {
                out.push((
                    span_of(&a.interval_s),
                    format!(
                        "interval_s = {i} is below the device's min_interval_s = {}",
                        self.defaults.min_interval_s
                    ),
                ));
            }
        }
        if (!q.plus.is_empty() || !q.minus.is_empty()) && q.scale_register.is_some() {
            out.push((
                span_of(&a.address),
                format!(
                    "{}: plus/minus cannot be combined with scale_register",
                    q.label()
                ),
            ));
        }
        for (extra, at) in [(&q.plus, &a.plus), (&q.minus, &a.minus)] {
            for &addr in extra.iter() {
                let Some(end) = addr.checked_add(words - 1) else {
                    out.push((
                        span_of(at),
                        format!(
                            "{}: register {addr} + {words} words overflows address 65535",
                            q.label()
                        ),
                    ));
                    continue;
                };
                if addr <= last && end >= q.address {
                    out.push((
                        span_of(at),
                        format!(
                            "{}: register {addr} overlaps the value's own registers",
                            q.label()
                        ),
                    ));
                }
                let function = q.resolved_function(&self.defaults);
                if let Some(u) = self
                    .unreadable
                    .iter()
                    .find(|u| u.function == function && addr <= u.end && end >= u.start)
                {
                    out.push((
                        span_of(at),
                        format!(
                            "{}: register {addr} lies in the unreadable range {}..={}",
                            q.label(),
                            u.start,
                            u.end
                        ),
                    ));
                }
            }
        }
        if words > self.defaults.max_registers {
            out.push((
                span_of(&a.address),
                format!(
                    "{} needs {words} registers but max_registers is {}",
                    q.label(),
                    self.defaults.max_registers
                ),
            ));
        }
        let function = q.resolved_function(&self.defaults);
        if let Some(u) = self
            .unreadable
            .iter()
            .find(|u| u.function == function && q.address <= u.end && last >= u.start)
        {
            out.push((
                span_of(&a.address),
                format!(
                    "{} ({} {}..={}) lies in the unreadable range {}..={}",
                    q.label(),
                    function.name(),
                    q.address,
                    last,
                    u.start,
                    u.end
                ),
            ));
        }
    }

    /// The map of one quantity (phase 1 for quantities that are not per phase).
    pub fn quantity(&self, name: Quantity, phase: u8) -> Option<&QuantityMap> {
        self.quantities
            .iter()
            .find(|q| q.name == name && q.resolved_phase() == phase)
    }
}

/// The profiles compiled into the binary: (file name, text), generated by `build.rs`.
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/builtin_profiles.rs"));
}

/// A site config names a model no profile describes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown meter model `{id}`; known models: {}", known.join(", "))]
pub struct UnknownProfile {
    pub id: String,
    pub known: Vec<String>,
}

/// All known profiles: the embedded ones plus any loaded from a folder.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    pub profiles: Vec<Profile>,
}

impl ProfileSet {
    /// The built-in profiles (`drivers/profiles/*.toml`), each validated.
    pub fn builtin() -> Result<ProfileSet, ProfileError> {
        let mut set = ProfileSet::default();
        for (file, text) in embedded::BUILTIN {
            let profile = Profile::from_toml(&format!("drivers/profiles/{file}"), text)?;
            set.insert(profile, file);
        }
        Ok(set)
    }

    /// Names and texts of the built-in profile files (for `socer profiles` and tests).
    pub fn builtin_files() -> &'static [(&'static str, &'static str)] {
        embedded::BUILTIN
    }

    /// Add every `*.toml` of a technician's folder, in file-name order. A profile whose id is
    /// already known replaces the earlier one (logged); two files of the folder with one id are an
    /// error. Nothing is added unless every file validates.
    pub fn load_dir(&mut self, dir: &Path) -> Result<(), ProfileError> {
        let io_error = |e: std::io::Error| ProfileError {
            file: dir.display().to_string(),
            line: 1,
            col: 1,
            message: format!("cannot read the profile folder: {e}"),
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io_error)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io_error)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file());
        paths.sort();
        let mut loaded: Vec<(Profile, String)> = Vec::new();
        for path in paths {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| ProfileError {
                file: file.clone(),
                line: 1,
                col: 1,
                message: format!("cannot read: {e}"),
            })?;
            let profile = Profile::from_toml(&file, &text)?;
            if let Some((_, first)) = loaded.iter().find(|(p, _)| p.id == profile.id) {
                let span = toml::from_str::<LocatedId>(&text).ok().map(|l| l.id.span());
                return Err(ProfileError::at(
                    &file,
                    &text,
                    span,
                    format!("id `{}` is already used by {first}", profile.id),
                ));
            }
            loaded.push((profile, file));
        }
        for (profile, file) in loaded {
            self.insert(profile, &file);
        }
        Ok(())
    }

    fn insert(&mut self, profile: Profile, file: &str) {
        if let Some(old) = self.profiles.iter_mut().find(|p| p.id == profile.id) {
            tracing::info!(id = %profile.id, file, "profile overrides the one known before");
            *old = profile;
        } else {
            self.profiles.push(profile);
        }
    }

    pub fn get(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// The profile of a model, or an error listing every known id.
    pub fn require(&self, id: &str) -> Result<&Profile, UnknownProfile> {
        self.get(id).ok_or_else(|| UnknownProfile {
            id: id.to_string(),
            known: self.ids().into_iter().map(str::to_string).collect(),
        })
    }

    pub fn ids(&self) -> Vec<&str> {
        self.profiles.iter().map(|p| p.id.as_str()).collect()
    }
}

#[derive(Deserialize)]
struct LocatedId {
    id: Spanned<toml::Value>,
}
