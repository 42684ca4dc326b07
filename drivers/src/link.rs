//! A Modbus link: something that reads registers of a unit. Transports implement it; read
//! planning, SunSpec discovery and scanning are written against it so they can be tested with an
//! in-memory device.

use std::future::Future;

use crate::profile::Function;

/// Why a read failed. `Display` says what was received; callers add bus, unit and register.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("no answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// The device answered with a Modbus exception (code 1 illegal function, 2 illegal address…).
    #[error("exception {code:#04x} ({})", exception_name(*code))]
    Exception { code: u8 },
    /// A frame arrived but was damaged (CRC, length, mismatched header).
    #[error("bad frame: {0}")]
    Frame(String),
    /// The connection or port failed (refused, closed, I/O error).
    #[error("transport: {0}")]
    Transport(String),
}

impl LinkError {
    /// Whether retrying the same request at once may help (a damaged frame on a noisy line).
    pub fn is_retryable(&self) -> bool {
        matches!(self, LinkError::Frame(_))
    }
}

pub fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        10 => "gateway path unavailable",
        11 => "gateway target failed to respond",
        _ => "unknown exception",
    }
}

/// Reads registers from a unit on a bus.
pub trait Link: Send {
    /// Read `count` (1..=125) registers starting at `address` with function 0x03 or 0x04.
    fn read_registers(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> impl Future<Output = Result<Vec<u16>, LinkError>> + Send;
}
