//! Faults a simulated device can be told to show, so pollers can be tested against bad devices.
//!
//! Parsing of the `--fault` flag lives here too; nothing here performs I/O.

use std::time::Duration;

/// How a response frame is damaged on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// RTU: the CRC is wrong. TCP (no CRC): the byte count disagrees with the data.
    BadCrc,
    /// Only the first half of the frame is sent.
    Truncated,
}

/// The standing faults of one device. The default is a healthy device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Added to every response time.
    pub latency: Duration,
    /// The device does not answer at all.
    pub silent: bool,
    /// Every request is answered with this exception code.
    pub exception: Option<u8>,
    /// Every response frame is damaged this way.
    pub corrupt: Option<Corruption>,
    /// The device keeps serving the values it had when frozen.
    pub frozen: bool,
}

/// One `--fault` setting: `[UNIT:]KIND[=VALUE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    /// `None` applies to every device.
    pub unit: Option<u8>,
    pub fault: Fault,
}

/// One fault, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `latency=MS`
    Latency(Duration),
    /// `silent`
    Silent,
    /// `exception=CODE`
    Exception(u8),
    /// `corrupt=crc` or `corrupt=truncate`
    Corrupt(Corruption),
    /// `frozen`
    Frozen,
    /// `reset-after=SECONDS`: the energy counters go back to 0 once, that long after start.
    ResetAfter(Duration),
}

impl Fault {
    /// Apply a standing fault; `ResetAfter` is an event, scheduled by the caller, and changes nothing.
    pub fn apply(&self, faults: &mut Faults) {
        match *self {
            Fault::Latency(d) => faults.latency = d,
            Fault::Silent => faults.silent = true,
            Fault::Exception(c) => faults.exception = Some(c),
            Fault::Corrupt(c) => faults.corrupt = Some(c),
            Fault::Frozen => faults.frozen = true,
            Fault::ResetAfter(_) => {}
        }
    }
}

const FAULT_SYNTAX: &str = "expected [UNIT:]KIND[=VALUE] with KIND one of latency=MS, silent, \
     exception=CODE, corrupt=crc|truncate, frozen, reset-after=SECONDS";

impl std::str::FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (unit, rest) = match s.split_once(':') {
            Some((u, rest)) => {
                let unit = u
                    .parse::<u8>()
                    .map_err(|_| format!("`{u}` is not a unit id (1..=247); {FAULT_SYNTAX}"))?;
                (Some(unit), rest)
            }
            None => (None, s),
        };
        let (kind, value) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (rest, None),
        };
        let number = |v: Option<&str>| -> Result<u64, String> {
            let v = v.ok_or_else(|| format!("`{kind}` needs a value; {FAULT_SYNTAX}"))?;
            v.parse::<u64>()
                .map_err(|_| format!("`{v}` is not a number in `{s}`; {FAULT_SYNTAX}"))
        };
        let fault = match kind {
            "latency" => Fault::Latency(Duration::from_millis(number(value)?)),
            "silent" => Fault::Silent,
            "exception" => {
                let code = number(value)?;
                match u8::try_from(code) {
                    Ok(c) if c > 0 => Fault::Exception(c),
                    _ => return Err(format!("exception code {code} is not 1..=255")),
                }
            }
            "corrupt" => match value {
                Some("crc") => Fault::Corrupt(Corruption::BadCrc),
                Some("truncate") => Fault::Corrupt(Corruption::Truncated),
                _ => return Err(format!("`{s}`: corrupt=crc or corrupt=truncate")),
            },
            "frozen" => Fault::Frozen,
            "reset-after" => Fault::ResetAfter(Duration::from_secs(number(value)?)),
            other => return Err(format!("unknown fault `{other}`; {FAULT_SYNTAX}")),
        };
        Ok(FaultSpec { unit, fault })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_with_and_without_unit() {
        assert_eq!(
            "2:latency=250".parse::<FaultSpec>(),
            Ok(FaultSpec {
                unit: Some(2),
                fault: Fault::Latency(Duration::from_millis(250))
            })
        );
        assert_eq!(
            "silent".parse::<FaultSpec>(),
            Ok(FaultSpec {
                unit: None,
                fault: Fault::Silent
            })
        );
        assert_eq!(
            "exception=4".parse::<FaultSpec>().map(|f| f.fault),
            Ok(Fault::Exception(4))
        );
        assert_eq!(
            "corrupt=truncate".parse::<FaultSpec>().map(|f| f.fault),
            Ok(Fault::Corrupt(Corruption::Truncated))
        );
        assert_eq!(
            "reset-after=60".parse::<FaultSpec>().map(|f| f.fault),
            Ok(Fault::ResetAfter(Duration::from_secs(60)))
        );
    }

    #[test]
    fn bad_fault_specs_say_what_is_valid() {
        for bad in [
            "latency",
            "exception=0",
            "corrupt=maybe",
            "x:silent",
            "melt",
        ] {
            let err = bad.parse::<FaultSpec>().unwrap_err();
            assert!(
                err.contains("corrupt") || err.contains("exception") || err.contains("KIND"),
                "{bad}: {err}"
            );
        }
    }
}
