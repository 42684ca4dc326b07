//! Shared fixtures of the simulator tests: a small profile written the way technicians write them,
//! a manual clock, and a device built on both.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use socer_drivers::profile::Profile;
use socer_drivers::sim::{NoisyPower, PhysicsConfig, SimDevice};
use socer_drivers::ManualClock;

/// An Eastron-SDM120-like layout (input registers, big-endian f32, energy in kWh), an identify
/// register in the holding space, a refused range, and a low-word-first scaled i32 power in
/// holding registers (Carlo Gavazzi style) to exercise the other encodings.
pub const PROFILE: &str = r#"
id = "test-meter"
manufacturer = "Test"
model = "T1"
kind = "meter"
phases = 1
source = "written for the simulator tests"

[defaults]
function = "input"

[[unreadable]]
function = "input"
start = 0x20
end = 0x21

[[identify]]
function = "holding"
address = 0xFC02
type = "u16"
values = [0x0020]

[[quantity]]
name = "v_v"
phase = 1
address = 0x00
type = "f32"

[[quantity]]
name = "i_a"
phase = 1
address = 0x06
type = "f32"

[[quantity]]
name = "p_w"
address = 0x0C
type = "f32"

[[quantity]]
name = "pf"
address = 0x1E
type = "f32"

[[quantity]]
name = "f_hz"
address = 0x46
type = "f32"

[[quantity]]
name = "e_imp_wh"
address = 0x48
type = "f32"
scale = 1000.0

[[quantity]]
name = "e_exp_wh"
address = 0x4A
type = "f32"
scale = 1000.0

[[quantity]]
name = "p_w"
function = "holding"
address = 0x10
type = "i32"
word_order = "low_first"
scale = 0.1
"#;

pub fn profile() -> Profile {
    toml::from_str(PROFILE).expect("the test profile parses")
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

/// A device of the test profile drawing exactly `power_w` (no noise), counters starting as given.
pub fn device(clock: &ManualClock, power_w: f64, import_wh: f64) -> SimDevice {
    let config = PhysicsConfig {
        grid_noise: 0.0,
        import_wh,
        ..PhysicsConfig::default()
    };
    SimDevice::from_profile(
        &profile(),
        Arc::new(clock.clone()),
        Box::new(NoisyPower::new(power_w, 0.0, 7)),
        config,
    )
}

pub const HOUR: Duration = Duration::from_secs(3600);
