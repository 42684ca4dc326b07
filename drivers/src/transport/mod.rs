//! Modbus transports implementing [`Link`]: TCP (one connection per bus, shared by every unit id
//! behind a gateway), RTU over a serial line (one transaction at a time, with the line timing) and
//! RTU frames carried over TCP by a transparent RS-485 gateway.
//!
//! A transport never retries beyond one damaged frame and never invents a value: every failure
//! comes back as a [`LinkError`] saying what was (or was not) received.

use std::time::Duration;

use crate::link::{Link, LinkError};
use crate::profile::Function;

pub mod rs485;
pub mod rtu;
pub mod rtu_tcp;
pub mod tcp;

pub use rs485::Rs485Settings;
pub use rtu::{RtuLink, SerialSettings};
pub use rtu_tcp::RtuOverTcpLink;
pub use tcp::TcpLink;

/// Exponential back-off: `initial`, doubled per consecutive failure, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th consecutive failure (1-based; 0 means no wait).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Map a Modbus exception code from tokio-modbus into a [`LinkError`].
pub(crate) fn exception(code: tokio_modbus::ExceptionCode) -> LinkError {
    LinkError::Exception {
        code: u8::from(code),
    }
}

/// The largest count a read request may carry (Modbus application protocol, 6.3/6.4).
pub const MAX_READ_REGISTERS: u16 = 125;

pub(crate) fn check_count(count: u16) -> Result<(), LinkError> {
    if (1..=MAX_READ_REGISTERS).contains(&count) {
        Ok(())
    } else {
        Err(LinkError::Transport(format!(
            "refused to send a read of {count} registers (1..=125)"
        )))
    }
}

/// Either transport, for a bus whose kind is chosen by configuration.
#[derive(Debug)]
pub enum AnyLink {
    Tcp(TcpLink),
    Rtu(RtuLink),
    /// RTU frames over a TCP stream (an RS-485 gateway in transparent mode).
    RtuOverTcp(RtuOverTcpLink),
}

impl Link for AnyLink {
    async fn read_registers(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        match self {
            AnyLink::Tcp(l) => l.read_registers(unit, function, address, count).await,
            AnyLink::Rtu(l) => l.read_registers(unit, function, address, count).await,
            AnyLink::RtuOverTcp(l) => l.read_registers(unit, function, address, count).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.delay(0), Duration::ZERO);
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(3), Duration::from_secs(4));
        assert_eq!(b.delay(7), Duration::from_secs(60));
        assert_eq!(b.delay(200), Duration::from_secs(60));
    }
}
