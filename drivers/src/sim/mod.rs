//! The meter simulator: devices built from profiles (or any register image) whose registers are
//! computed from a physical state on each request, served over Modbus TCP and RTU with faults.
//!
//! It is a test peer and the demo's meters: it must never share decoding logic with the poller
//! other than `decode::encode`, the exact inverse of what the poller uses, and the RTU CRC
//! (`transport::rtu::crc16`, checked against the specification's example; the independent
//! peers, pymodbus and mbpoll, check both sides of our framing).

pub mod faults;
pub mod image;
pub mod physics;
pub mod rtu;
pub mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use faults::{Corruption, Fault, FaultSpec, Faults};
pub use image::RegisterImage;
pub use physics::{NoisyPower, Physics, PhysicsConfig, PowerSource, Rng};

use crate::clock::Clock;
use crate::profile::{Function, Profile};
use crate::reading::Values;

/// What a device does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response PDU (function code first), or `None` to stay silent.
    pub pdu: Option<Vec<u8>>,
    /// Added to the response time (a slow device).
    pub latency: Duration,
    /// How the frame is damaged on the wire, if it is.
    pub corrupt: Option<Corruption>,
}

struct DeviceState {
    image: RegisterImage,
    physics: Physics,
    faults: Faults,
    /// The values served while frozen.
    frozen: Option<Values>,
}

/// One simulated device: a register image over a physical state, with faults. Cloning gives
/// another handle on the same device (tests keep one to inject faults while a server runs).
#[derive(Clone)]
pub struct SimDevice {
    state: Arc<Mutex<DeviceState>>,
}

impl SimDevice {
    pub fn new(image: RegisterImage, physics: Physics) -> Self {
        SimDevice {
            state: Arc::new(Mutex::new(DeviceState {
                image,
                physics,
                faults: Faults::default(),
                frozen: None,
            })),
        }
    }

    /// A device of a profile's model: its register map over a physics state with the profile's
    /// number of phases.
    pub fn from_profile(
        profile: &Profile,
        clock: Arc<dyn Clock>,
        source: Box<dyn PowerSource>,
        mut config: PhysicsConfig,
    ) -> Self {
        config.phases = profile.phases;
        SimDevice::new(
            RegisterImage::from_profile(profile),
            Physics::new(clock, source, config),
        )
    }

    fn lock(&self) -> MutexGuard<'_, DeviceState> {
        // A panic while holding the lock leaves a consistent state (every update is one assignment).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the standing faults.
    pub fn set_faults(&self, faults: Faults) {
        let mut s = self.lock();
        if faults.frozen && s.frozen.is_none() {
            let v = s.physics.values();
            s.frozen = Some(v);
        }
        if !faults.frozen {
            s.frozen = None;
        }
        s.faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Energy counters go back to 0 (a meter replacement or a keypad reset).
    pub fn reset_counters(&self) {
        self.lock().physics.reset_counters();
    }

    /// The physical state now (what a healthy device would serve), advancing the clock-driven
    /// integration.
    pub fn values(&self) -> Values {
        self.lock().physics.values()
    }

    /// Answer one request PDU (function code first) as the device would.
    pub fn respond(&self, request: &[u8]) -> Reply {
        let mut s = self.lock();
        let faults = s.faults.clone();
        let reply = |pdu: Option<Vec<u8>>| Reply {
            pdu,
            latency: faults.latency,
            corrupt: faults.corrupt,
        };
        if faults.silent {
            return reply(None);
        }
        let Some(&code) = request.first() else {
            return reply(None);
        };
        if let Some(ex) = faults.exception {
            return reply(Some(exception_pdu(code, ex)));
        }
        let function = match code {
            3 => Function::Holding,
            4 => Function::Input,
            _ => return reply(Some(exception_pdu(code, image::ILLEGAL_FUNCTION))),
        };
        if request.len() != 5 {
            return reply(Some(exception_pdu(code, image::ILLEGAL_DATA_VALUE)));
        }
        let address = u16::from_be_bytes([request[1], request[2]]);
        let count = u16::from_be_bytes([request[3], request[4]]);
        if let Err(ex) = s.image.check(function, address, count) {
            return reply(Some(exception_pdu(code, ex)));
        }
        let values = match &s.frozen {
            Some(v) => v.clone(),
            None => s.physics.values(),
        };
        match s.image.read(function, address, count, &values) {
            Ok(words) => {
                let mut pdu = Vec::with_capacity(2 + 2 * words.len());
                pdu.push(code);
                pdu.push((2 * words.len()) as u8);
                for w in words {
                    pdu.extend_from_slice(&w.to_be_bytes());
                }
                reply(Some(pdu))
            }
            Err(ex) => reply(Some(exception_pdu(code, ex))),
        }
    }
}

fn exception_pdu(function_code: u8, exception: u8) -> Vec<u8> {
    vec![function_code | 0x80, exception]
}

/// The devices one endpoint serves, by unit id.
pub type Devices = BTreeMap<u8, SimDevice>;
