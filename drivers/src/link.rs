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

/// What went wrong with a device, in categories a person can act on (the pages put them in plain
/// words): the device was silent, the line damaged a frame, the device refused the request, the
/// connection could not be made or broke, or the value read was unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorKind {
    /// No answer within the timeout.
    Timeout,
    /// A frame arrived with a wrong checksum (RTU CRC) or a byte count that disagrees.
    Crc,
    /// A frame arrived but was incomplete, answered another request or had the wrong length.
    Frame,
    /// The device answered with a Modbus exception.
    Exception { code: u8 },
    /// The connection was refused (nothing listens at the address).
    Refused,
    /// The host or network cannot be reached, or the connection attempt never completed.
    Unreachable,
    /// An open connection or port was closed or reset.
    Closed,
    /// The serial port cannot be opened or used.
    Port,
    /// Another transport failure.
    Transport,
    /// The device reports a value as not available (a sentinel).
    NotAvailable,
    /// A value outside its physical bounds.
    Implausible,
    /// The meter could not be set up (no profile, SunSpec discovery failed).
    Setup,
}

impl ErrorKind {
    /// The kind of a transport failure from its message (which carries the OS error text).
    fn of_transport(msg: &str) -> ErrorKind {
        let m = msg.to_ascii_lowercase();
        let has = |w: &[&str]| w.iter().any(|x| m.contains(x));
        if has(&["refused", "os error 111"]) {
            ErrorKind::Refused
        } else if has(&[
            "unreachable",
            "os error 113",
            "os error 101",
            "in progress",
            "os error 115",
            "timed out",
            "os error 110",
            "no answer within",
            "failed to lookup",
            "name or service",
        ]) {
            ErrorKind::Unreachable
        } else if has(&[
            "reset",
            "broken pipe",
            "closed",
            "eof",
            "os error 104",
            "os error 32",
            "not connected",
        ]) {
            ErrorKind::Closed
        } else if has(&["serial", "/dev/", "tty"]) {
            ErrorKind::Port
        } else {
            ErrorKind::Transport
        }
    }
}

impl LinkError {
    /// The category of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LinkError::Timeout { .. } => ErrorKind::Timeout,
            LinkError::Exception { code } => ErrorKind::Exception { code: *code },
            LinkError::Frame(f) => {
                let f = f.to_ascii_lowercase();
                if f.contains("crc") || f.contains("byte count") {
                    ErrorKind::Crc
                } else {
                    ErrorKind::Frame
                }
            }
            LinkError::Transport(t) => ErrorKind::of_transport(t),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_a_kind_a_person_can_act_on() {
        let t = |m: &str| LinkError::Transport(m.into()).kind();
        assert_eq!(
            LinkError::Timeout { timeout_ms: 200 }.kind(),
            ErrorKind::Timeout
        );
        assert_eq!(
            LinkError::Exception { code: 2 }.kind(),
            ErrorKind::Exception { code: 2 }
        );
        assert_eq!(
            LinkError::Frame("bad CRC 0x1234; 7 bytes: 01 03".into()).kind(),
            ErrorKind::Crc
        );
        assert_eq!(
            LinkError::Frame("incomplete answer, 3 bytes: 01 03 04".into()).kind(),
            ErrorKind::Frame
        );
        assert_eq!(
            t("connect 127.0.0.1:502: Connection refused (os error 111)"),
            ErrorKind::Refused
        );
        assert_eq!(
            t("127.0.0.1:502: Operation now in progress (os error 115)"),
            ErrorKind::Unreachable
        );
        assert_eq!(
            t("connect 10.0.0.9:502: no answer within 1000 ms"),
            ErrorKind::Unreachable
        );
        assert_eq!(
            t("127.0.0.1:502: Connection reset by peer (os error 104)"),
            ErrorKind::Closed
        );
        assert_eq!(t("cannot open /dev/ttyUSB0: No such file"), ErrorKind::Port);
        assert_eq!(t("something else"), ErrorKind::Transport);
        // Serialised with its code, for the pages.
        assert_eq!(
            serde_json::to_string(&ErrorKind::Exception { code: 2 }).unwrap(),
            r#"{"kind":"exception","code":2}"#
        );
        assert_eq!(
            serde_json::to_string(&ErrorKind::Timeout).unwrap(),
            r#"{"kind":"timeout"}"#
        );
    }
}
