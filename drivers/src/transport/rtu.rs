//! Modbus RTU client over a serial line (RS-485 adapter, UART, or a pty in tests).
//!
//! This is a compact client with its own framing and CRC16 rather than tokio-modbus's RTU client,
//! because the bus must control what tokio-modbus does not expose: the 3.5-character silence
//! before every request, draining late or stray bytes before a request is sent, and telling a
//! stale answer (valid CRC, another unit/function/length) from a damaged one. It must never take
//! bytes that belong to an earlier request as the answer to the current one, and never has more
//! than one transaction on the line.
//!
//! RTU has no transaction id: a late answer from the same unit, with the same function and length
//! as the next request, arriving after that request was sent, cannot be told apart. The drain
//! before each request, the longer settle after a fault, and the bus polling another unit after a
//! timeout make that case rare; it is a limit of the protocol, not something retried away.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use tokio_serial::{DataBits, Parity, SerialPortBuilderExt, SerialStream, StopBits};

use crate::link::{Link, LinkError};
use crate::plan::rtu_silence;
use crate::profile::Function;

use super::check_count;
use super::rs485::{self, Rs485Settings};

/// How to open a serial port.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialSettings {
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub stop_bits: StopBits,
    /// Put the port in RS-485 mode after opening it (a UART behind a transceiver; never a USB
    /// adapter). `None`: leave the port as the driver has it.
    pub rs485: Option<Rs485Settings>,
}

impl SerialSettings {
    /// 8N1 at `baud`.
    pub fn new(path: impl Into<String>, baud: u32) -> Self {
        SerialSettings {
            path: path.into(),
            baud,
            parity: Parity::None,
            stop_bits: StopBits::One,
            rs485: None,
        }
    }

    /// Bits on the wire per character: start, 8 data, parity, stop.
    pub fn bits_per_char(&self) -> u32 {
        let parity = if self.parity == Parity::None { 0 } else { 1 };
        let stop = if self.stop_bits == StopBits::Two {
            2
        } else {
            1
        };
        1 + 8 + parity + stop
    }

    fn open(&self) -> Result<SerialStream, LinkError> {
        let rs485_error = |e: rs485::Rs485Error| LinkError::Transport(format!("RS-485 mode: {e}"));
        if let Some(r) = &self.rs485 {
            // Refused before the port is touched: a USB adapter is never opened in RS-485 mode.
            rs485::check(&self.path, r).map_err(rs485_error)?;
        }
        let port = tokio_serial::new(&self.path, self.baud)
            .data_bits(DataBits::Eight)
            .parity(self.parity)
            .stop_bits(self.stop_bits)
            .open_native_async()
            .map_err(|e| LinkError::Transport(format!("cannot open {}: {e}", self.path)))?;
        if let Some(r) = &self.rs485 {
            use std::os::unix::io::AsRawFd;
            rs485::apply(port.as_raw_fd(), &self.path, r).map_err(rs485_error)?;
        }
        Ok(port)
    }
}

/// Modbus CRC16 (polynomial 0xA001 reflected, initial 0xFFFF); sent low byte first.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Append the CRC to a frame.
pub fn with_crc(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

pub(crate) fn function_code(f: Function) -> u8 {
    match f {
        Function::Holding => 0x03,
        Function::Input => 0x04,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().take(32).enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    if bytes.len() > 32 {
        s.push_str(" …");
    }
    s
}

/// What the bytes received so far amount to.
pub(crate) enum Parsed {
    /// Not enough bytes yet.
    Incomplete,
    /// A complete frame with a good CRC: its length.
    Frame(usize),
    /// Bytes that cannot start a read response, or a complete frame with a bad CRC.
    Damaged(String),
}

/// What a complete, CRC-checked frame says about the request (`unit`, function code `fc`, `count`
/// registers).
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The device refused the request with this exception code.
    Exception(u8),
    /// The registers asked for, exactly `count` of them.
    Words(Vec<u16>),
    /// A well-formed frame that answers something else (another unit, function or length).
    Foreign,
}

/// Classify a frame (as delimited by the framing, CRC included) against the request. Pure; any
/// bytes are accepted.
pub fn answer(frame: &[u8], unit: u8, fc: u8, count: u16) -> Answer {
    let words = 2 * usize::from(count);
    match frame {
        [u, f, code, _, _] if *u == unit && *f == fc | 0x80 => Answer::Exception(*code),
        [u, f, n, rest @ ..]
            if *u == unit && *f == fc && usize::from(*n) == words && rest.len() == words + 2 =>
        {
            Answer::Words(
                rest[..words]
                    .chunks_exact(2)
                    .map(|w| u16::from_be_bytes([w[0], w[1]]))
                    .collect(),
            )
        }
        _ => Answer::Foreign,
    }
}

/// Delimit the first frame of `buf` and check its CRC ([`Parsed`]). Pure; any bytes are accepted.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, String> {
    match parse(buf) {
        Parsed::Incomplete => Ok(None),
        Parsed::Frame(n) => Ok(Some(n)),
        Parsed::Damaged(why) => Err(why),
    }
}

pub(crate) fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < 3 {
        return Parsed::Incomplete;
    }
    let len = match buf[1] {
        0x83 | 0x84 => 5,
        0x03 | 0x04 => 3 + usize::from(buf[2]) + 2,
        other => {
            return Parsed::Damaged(format!("function byte {other:#04x} is not a read response"))
        }
    };
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let crc = crc16(&buf[..len - 2]);
    if buf[len - 2..len] != crc.to_le_bytes() {
        return Parsed::Damaged(format!("CRC mismatch (computed {crc:#06x})"));
    }
    Parsed::Frame(len)
}

/// The RTU frame of a read request (unit, function, address, count, CRC).
pub fn request_frame(unit: u8, function: Function, address: u16, count: u16) -> Vec<u8> {
    let mut req = vec![unit, function_code(function)];
    req.extend_from_slice(&address.to_be_bytes());
    req.extend_from_slice(&count.to_be_bytes());
    with_crc(req)
}

/// A Modbus RTU master on one serial port.
#[derive(Debug)]
pub struct RtuLink {
    port: Option<SerialStream>,
    /// How to reopen the port after an I/O error; None for a port handed in already open.
    settings: Option<SerialSettings>,
    baud: u32,
    bits_per_char: u32,
    timeout: Duration,
    /// When the line last carried a byte (sent or received), as far as this side knows.
    last_activity: Instant,
    /// A timeout or damaged frame happened: wait longer for the line to settle before sending.
    unsettled: bool,
}

impl RtuLink {
    /// Open a serial port. `timeout` is how long a device may take to start answering, on top of
    /// the time the frames take on the wire.
    pub fn open(settings: SerialSettings, timeout: Duration) -> Result<Self, LinkError> {
        let port = settings.open()?;
        let mut link = RtuLink::from_stream(port, settings.baud, timeout);
        link.bits_per_char = settings.bits_per_char();
        link.settings = Some(settings);
        Ok(link)
    }

    /// Use a port that is already open (e.g. one end of `SerialStream::pair()`), 8N1 at `baud`
    /// for timing purposes. It cannot be reopened after an I/O error.
    pub fn from_stream(port: SerialStream, baud: u32, timeout: Duration) -> Self {
        RtuLink {
            port: Some(port),
            settings: None,
            baud,
            bits_per_char: 10,
            timeout,
            last_activity: Instant::now(),
            unsettled: false,
        }
    }

    fn char_time(&self) -> Duration {
        Duration::from_nanos(
            u64::from(self.bits_per_char) * 1_000_000_000 / u64::from(self.baud.max(1)),
        )
    }

    fn silence(&self) -> Duration {
        rtu_silence(self.baud, self.bits_per_char)
    }

    /// How long the line must be quiet before a request: 3.5 characters normally, longer after a
    /// fault so that the tail of a late answer is drained rather than collided with.
    fn settle_time(&self) -> Duration {
        if self.unsettled {
            (self.silence() * 4).max(Duration::from_millis(5))
        } else {
            self.silence()
        }
    }

    fn port(&mut self) -> Result<&mut SerialStream, LinkError> {
        if self.port.is_none() {
            match &self.settings {
                Some(s) => {
                    self.port = Some(s.open()?);
                    self.unsettled = true;
                }
                None => {
                    return Err(LinkError::Transport(
                        "serial port closed after an I/O error".into(),
                    ))
                }
            }
        }
        self.port
            .as_mut()
            .ok_or_else(|| LinkError::Transport("serial port not open".into()))
    }

    fn io_error(&mut self, what: &str, e: std::io::Error) -> LinkError {
        // Drop the port: the next request reopens it (when we know how).
        self.port = None;
        LinkError::Transport(format!("{what}: {e}"))
    }

    /// Wait until the line has been silent for the settle time, discarding whatever arrives.
    async fn settle(&mut self) -> Result<(), LinkError> {
        let give_up = Instant::now() + self.timeout * 2 + Duration::from_millis(50);
        let mut discarded: Vec<u8> = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let settle = self.settle_time();
            let port = self.port()?;
            match port.try_read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    discarded.extend_from_slice(&buf[..n]);
                    self.last_activity = Instant::now();
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.io_error("reading serial port", e)),
            }
            let now = Instant::now();
            let quiet_until = self.last_activity + settle;
            if now >= quiet_until {
                break;
            }
            if now >= give_up {
                self.unsettled = true;
                return Err(LinkError::Frame(format!(
                    "line never fell silent; discarded {} bytes: {}",
                    discarded.len(),
                    hex(&discarded)
                )));
            }
            crate::clock::sleep_until_precise(quiet_until).await;
        }
        if !discarded.is_empty() {
            tracing::debug!(bytes = discarded.len(), data = %hex(&discarded), "discarded stray bytes before a request");
        }
        self.unsettled = false;
        Ok(())
    }

    /// One request and its answer, without retry.
    async fn transact(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        self.settle().await?;
        let fc = function_code(function);
        let mut req = vec![unit, fc];
        req.extend_from_slice(&address.to_be_bytes());
        req.extend_from_slice(&count.to_be_bytes());
        let req = with_crc(req);

        let char_time = self.char_time();
        let port = self.port()?;
        let written = async {
            port.write_all(&req).await?;
            port.flush().await
        }
        .await;
        if let Err(e) = written {
            return Err(self.io_error("writing serial port", e));
        }
        let sent_at = Instant::now();
        let request_on_wire = char_time * req.len() as u32;
        self.last_activity = sent_at + request_on_wire;

        let expected_len = 5 + 2 * usize::from(count);
        let deadline = sent_at + request_on_wire + self.timeout + char_time * expected_len as u32;
        let mut buf: Vec<u8> = Vec::with_capacity(expected_len);
        // Well-formed frames that answer something else (a late answer, a wrong length).
        let mut foreign: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            let port = self.port()?;
            let n = match timeout_at(deadline, port.read(&mut chunk)).await {
                Ok(Ok(0)) => {
                    return Err(self.io_error(
                        "reading serial port",
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ))
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(self.io_error("reading serial port", e)),
                Err(_) => {
                    self.unsettled = true;
                    return Err(if !buf.is_empty() {
                        LinkError::Frame(format!(
                            "incomplete answer, {} bytes: {}",
                            buf.len(),
                            hex(&buf)
                        ))
                    } else if !foreign.is_empty() {
                        // Something answered, but never this request (wrong unit, function or
                        // length): a damaged exchange rather than a silent device.
                        LinkError::Frame(format!(
                            "no answer to this request within {} ms, only {} bytes answering another: {}",
                            self.timeout.as_millis(),
                            foreign.len(),
                            hex(&foreign)
                        ))
                    } else {
                        LinkError::Timeout {
                            timeout_ms: crate::clock::saturating_ms(self.timeout),
                        }
                    });
                }
            };
            buf.extend_from_slice(&chunk[..n]);
            self.last_activity = Instant::now();
            loop {
                match parse(&buf) {
                    Parsed::Incomplete => break,
                    Parsed::Damaged(why) => {
                        self.unsettled = true;
                        // Collect the rest of the burst so the error shows what was received.
                        self.collect_burst(&mut buf, deadline).await;
                        return Err(LinkError::Frame(format!(
                            "{why}; {} bytes: {}",
                            buf.len(),
                            hex(&buf)
                        )));
                    }
                    Parsed::Frame(len) => {
                        let frame: Vec<u8> = buf.drain(..len).collect();
                        match answer(&frame, unit, fc, count) {
                            Answer::Exception(code) => return Err(LinkError::Exception { code }),
                            Answer::Words(words) => return Ok(words),
                            Answer::Foreign => {
                                // A well-formed answer to some other request (a late one).
                                tracing::debug!(unit, data = %hex(&frame), "discarded a stale answer");
                                foreign.extend_from_slice(&frame);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Read until the line is quiet for 3.5 characters (or the deadline), appending to `buf`.
    async fn collect_burst(&mut self, buf: &mut Vec<u8>, deadline: Instant) {
        let silence = self.silence().max(Duration::from_millis(2));
        let mut chunk = [0u8; 256];
        while let Some(port) = self.port.as_mut() {
            let until = (Instant::now() + silence).min(deadline);
            match timeout_at(until, port.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => {
                    buf.extend_from_slice(&chunk[..n]);
                    self.last_activity = Instant::now();
                }
                _ => break,
            }
        }
    }
}

impl Link for RtuLink {
    async fn read_registers(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        check_count(count)?;
        match self.transact(unit, function, address, count).await {
            // One retry for a damaged frame: noise on a long RS-485 line is usually brief.
            Err(e) if e.is_retryable() => {
                tracing::debug!(unit, address, error = %e, "retrying after a damaged frame");
                self.transact(unit, function, address, count).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_modbus_specification_example() {
        // Modbus over serial line V1.02, appendix B: 01 03 00 00 00 0A → CRC C5 CD (low first).
        let f = with_crc(vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]);
        assert_eq!(&f[6..], &[0xC5, 0xCD]);
    }

    #[test]
    fn parse_tells_frames_from_damage() {
        let good = with_crc(vec![0x01, 0x04, 0x02, 0x12, 0x34]);
        assert!(matches!(parse(&good), Parsed::Frame(7)));
        assert!(matches!(parse(&good[..5]), Parsed::Incomplete));
        let mut bad = good.clone();
        bad[3] ^= 0xFF;
        assert!(matches!(parse(&bad), Parsed::Damaged(_)));
        assert!(matches!(parse(&[0x01, 0x10, 0x00]), Parsed::Damaged(_)));
        let exc = with_crc(vec![0x01, 0x84, 0x02]);
        assert!(matches!(parse(&exc), Parsed::Frame(5)));
    }

    #[test]
    fn answer_matches_unit_function_and_length() {
        let good = with_crc(vec![0x01, 0x04, 0x02, 0x12, 0x34]);
        assert_eq!(answer(&good, 1, 0x04, 1), Answer::Words(vec![0x1234]));
        assert_eq!(answer(&good, 2, 0x04, 1), Answer::Foreign);
        assert_eq!(answer(&good, 1, 0x03, 1), Answer::Foreign);
        assert_eq!(answer(&good, 1, 0x04, 2), Answer::Foreign);
        let exc = with_crc(vec![0x01, 0x84, 0x02]);
        assert_eq!(answer(&exc, 1, 0x04, 1), Answer::Exception(2));
        assert_eq!(answer(&[], 1, 0x04, 0), Answer::Foreign);
    }

    #[test]
    fn bits_per_char_counts_parity_and_stop_bits() {
        let mut s = SerialSettings::new("/dev/null", 9600);
        assert_eq!(s.bits_per_char(), 10);
        s.parity = Parity::Even;
        assert_eq!(s.bits_per_char(), 11);
    }
}
