//! The rules of a renewable energy community (CER), as pure functions: no I/O, no clock (time is
//! always an input), no configuration files. The hub (`socer central`) feeds them what its store
//! holds and serves what they return; tests and auditors can run them on their own data.
//!
//! In the order data flows through them:
//! - [`energy`] — energy per meter per settlement period from the meter's cumulative counters
//!   (gaps, resets, replacements, glitches, the meter's power bound);
//! - [`balance`] — per substation and period: injection, withdrawal and the shared energy the
//!   incentive is paid on, and each POD's share of it;
//! - [`tariff`] — the premium tariff (TIP) of a plant from its power, region and the zonal price,
//!   and the price files that give the zonal price per hour or quarter-hour;
//! - [`incentive`] — allotment of the shared energy to plants, the incentive, the ARERA
//!   valorisation, the social part (monthly estimate and yearly as the GSE computes it) and the
//!   reports built from them.

pub mod balance;
pub mod energy;
pub mod incentive;
pub mod tariff;
