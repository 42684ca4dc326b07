//! socer-drivers: everything between an RS-485 / Modbus TCP wire and a canonical [`Reading`].
//!
//! Profiles (data files) say where a meter keeps each quantity; the planner turns them into as few
//! requests as possible; a bus scheduler performs them with the timing a shared line needs; the
//! decoder turns words into canonical values. This crate knows nothing of MQTT, SQLite or HTTP.

pub mod bus;
pub mod clock;
pub mod decode;
#[doc(hidden)]
pub mod fuzz;
pub mod link;
pub mod plan;
pub mod profile;
pub mod reading;
pub mod scan;
pub mod schedule;
pub mod sim;
pub mod sunspec;
pub mod transport;

pub use clock::{Clock, ManualClock, SystemClock};
pub use link::{Link, LinkError};
pub use profile::{Profile, ProfileSet};
pub use reading::{Quality, Quantity, Reading};
