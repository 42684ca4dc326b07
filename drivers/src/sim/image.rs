//! A device's register map as the simulator serves it: static words plus live quantities encoded
//! from the device's state on each request with `decode::encode` (the poller's exact inverse).
//!
//! Pure: it never reads a clock or a socket; the state to encode is passed in.

use std::collections::BTreeMap;

use crate::decode::encode;
use crate::profile::{Defaults, Function, Profile, QuantityMap, Unreadable};
use crate::reading::Values;

/// Modbus exception codes the image answers with.
pub const ILLEGAL_FUNCTION: u8 = 1;
pub const ILLEGAL_DATA_ADDRESS: u8 = 2;
pub const ILLEGAL_DATA_VALUE: u8 = 3;

/// The registers of one simulated device.
///
/// A read succeeds when every requested address lies below the function's extent and outside every
/// unreadable range; registers the image does not define read as 0, as on real meters whose maps
/// have holes.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterImage {
    /// Encoding defaults for the live quantities (word/byte order when a quantity does not say).
    pub defaults: Defaults,
    /// Fixed words (identification, SunSpec markers and headers, scale factors).
    pub static_regs: BTreeMap<(Function, u16), u16>,
    /// Quantities computed from the device state on each request, at the absolute address and
    /// function each map names (the defaults' function when it names none).
    pub live: Vec<QuantityMap>,
    /// Ranges the device refuses (exception 2).
    pub unreadable: Vec<Unreadable>,
    /// Per function, the first address beyond the device's map (exception 2 from there on). A
    /// function absent here is one the device lacks (exception 1).
    pub extent: BTreeMap<Function, u16>,
}

impl RegisterImage {
    /// An empty image: no function answers until registers are added.
    pub fn new(defaults: Defaults) -> Self {
        RegisterImage {
            defaults,
            static_regs: BTreeMap::new(),
            live: Vec::new(),
            unreadable: Vec::new(),
            extent: BTreeMap::new(),
        }
    }

    /// The image of a profile: its quantities live, its identification values static, its
    /// unreadable ranges refused.
    pub fn from_profile(profile: &Profile) -> Self {
        let mut image = RegisterImage::new(profile.defaults.clone());
        for id in &profile.identify {
            image.add_static(
                id.function,
                id.address,
                &id.example_words(&profile.defaults),
            );
        }
        for q in &profile.quantities {
            image.add_live(q.clone());
        }
        image.unreadable = profile.unreadable.clone();
        image
    }

    /// Add fixed words starting at `address`, extending the function's extent to cover them.
    pub fn add_static(&mut self, function: Function, address: u16, words: &[u16]) {
        for (i, &w) in words.iter().enumerate() {
            self.static_regs
                .insert((function, address.wrapping_add(i as u16)), w);
        }
        self.extend_to(function, address, words.len() as u16);
    }

    /// Add a live quantity at the address its map names, extending the extent to cover it.
    pub fn add_live(&mut self, map: QuantityMap) {
        let function = map.function.unwrap_or(self.defaults.function);
        self.extend_to(function, map.address, map.value_type.words());
        for &a in map.plus.iter().chain(&map.minus) {
            self.extend_to(function, a, map.value_type.words());
        }
        self.live.push(map);
    }

    fn extend_to(&mut self, function: Function, address: u16, words: u16) {
        let end = address.saturating_add(words);
        let e = self.extent.entry(function).or_insert(0);
        *e = (*e).max(end);
    }

    /// Check a request against the map: `Err(code)` is the Modbus exception a device answers.
    pub fn check(&self, function: Function, address: u16, count: u16) -> Result<(), u8> {
        let Some(&extent) = self.extent.get(&function) else {
            return Err(ILLEGAL_FUNCTION);
        };
        if count == 0 || count > self.defaults.max_registers.min(125) {
            return Err(ILLEGAL_DATA_VALUE);
        }
        let last = u32::from(address) + u32::from(count) - 1;
        if last >= u32::from(extent) {
            return Err(ILLEGAL_DATA_ADDRESS);
        }
        let refused = self.unreadable.iter().any(|u| {
            u.function == function
                && u32::from(u.start) <= last
                && u32::from(address) <= u32::from(u.end)
        });
        if refused {
            return Err(ILLEGAL_DATA_ADDRESS);
        }
        Ok(())
    }

    /// The words of `count` registers from `address`, live quantities encoded from `state`.
    /// A quantity the state lacks reads as 0; one with a scale-factor register is divided by
    /// `10^sf` (the static word at that register) before encoding, as SunSpec devices do.
    pub fn read(
        &self,
        function: Function,
        address: u16,
        count: u16,
        state: &Values,
    ) -> Result<Vec<u16>, u8> {
        self.check(function, address, count)?;
        let start = u32::from(address);
        let end = start + u32::from(count);
        let mut words: Vec<u16> = (start..end)
            .map(|a| {
                self.static_regs
                    .get(&(function, a as u16))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        for map in &self.live {
            if map.function.unwrap_or(self.defaults.function) != function {
                continue;
            }
            let q_start = u32::from(map.address);
            let n = u32::from(map.value_type.words());
            // Skip a value none of whose registers (its own, or a subtracted one) is requested.
            let overlaps = |a: u32| a + n > start && a < end;
            if !overlaps(q_start) && !map.minus.iter().any(|&m| overlaps(u32::from(m))) {
                continue;
            }
            let Some(mut value) = state.get(map.name, map.phase.unwrap_or(1)) else {
                continue;
            };
            if let Some(sf_addr) = map.scale_register {
                let sf = self
                    .static_regs
                    .get(&(function, sf_addr))
                    .copied()
                    .unwrap_or(0) as i16;
                value /= 10f64.powi(i32::from(sf));
            }
            // A value split over registers (plus/minus): a negative one goes, as its magnitude,
            // to the first subtracted register and the main one reads 0; added ones read 0.
            let (main, minus_at) = match map.minus.first() {
                Some(&m) if value < 0.0 => (0.0, Some(m)),
                _ => (value, None),
            };
            let mut put = |at: u32, v: f64| {
                for (i, w) in encode(v, map, &self.defaults).into_iter().enumerate() {
                    let a = at + i as u32;
                    if (start..end).contains(&a) {
                        words[(a - start) as usize] = w;
                    }
                }
            };
            put(q_start, main);
            if let Some(m) = minus_at {
                put(u32::from(m), -value);
            }
        }
        Ok(words)
    }
}
