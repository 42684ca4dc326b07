//! Test support for SunSpec and scan tests: an in-memory device behind the `Link` trait, and a
//! one-shot decoder of a resolved profile from a register map.
//!
//! Test-only; it never touches a socket or a port.

#![allow(dead_code)] // each test file uses part of it

use std::collections::BTreeMap;

use socer_drivers::decode::{apply_scale_factor, decode, DecodeError};
use socer_drivers::profile::{Function, Profile};
use socer_drivers::reading::Values;
use socer_drivers::{Link, LinkError};

/// A device answering one unit id from register maps; unknown addresses raise exception 2 and
/// other unit ids stay silent (as on RS-485).
#[derive(Debug, Default)]
pub struct MemLink {
    pub unit: u8,
    pub holding: BTreeMap<u16, u16>,
    pub input: BTreeMap<u16, u16>,
    /// Requests seen, as (unit, function, address, count).
    pub requests: Vec<(u8, Function, u16, u16)>,
    pub timeout_ms: u64,
}

impl MemLink {
    pub fn holding(unit: u8, holding: BTreeMap<u16, u16>) -> Self {
        MemLink {
            unit,
            holding,
            timeout_ms: 100,
            ..Default::default()
        }
    }
}

impl Link for MemLink {
    async fn read_registers(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        self.requests.push((unit, function, address, count));
        if unit != self.unit {
            return Err(LinkError::Timeout {
                timeout_ms: self.timeout_ms,
            });
        }
        let map = match function {
            Function::Holding => &self.holding,
            Function::Input => &self.input,
        };
        (0..count)
            .map(|i| address.checked_add(i).and_then(|a| map.get(&a).copied()))
            .collect::<Option<Vec<u16>>>()
            .ok_or(LinkError::Exception { code: 2 })
    }
}

/// Decode every quantity of `profile` from `regs` (holding), applying scale-factor registers, the
/// way a poller would. Returns the values and the quantities that were not available.
pub fn read_back(regs: &BTreeMap<u16, u16>, profile: &Profile) -> (Values, Vec<String>) {
    let mut values = Values::default();
    let mut missing = Vec::new();
    for map in &profile.quantities {
        let words: Vec<u16> = (0..map.value_type.words())
            .map(|i| regs.get(&(map.address + i)).copied().unwrap_or(0))
            .collect();
        match decode(&words, map, &profile.defaults) {
            Ok(v) => {
                let sf = map
                    .scale_register
                    .map_or(0, |a| regs.get(&a).copied().unwrap_or(0) as i16);
                values.set(map.name, map.phase.unwrap_or(1), apply_scale_factor(v, sf));
            }
            Err(DecodeError::NotAvailable { .. }) => missing.push(map.name.name().to_string()),
            Err(e) => missing.push(format!("{}: {e}", map.name.name())),
        }
    }
    (values, missing)
}
