//! Modbus RTU for the simulator: frames delimited by line silence, CRC-16, and the timing of an
//! RS-485 line at the configured baud rate: a response is handed over when its last byte would
//! be on the wire (both frames at 1 start + 8 data + parity + stop bits per byte, and the
//! device's turnaround, never shorter than the 3.5-character silence that ends the request), and
//! a master that starts a request inside the silence after an answer is reported.
//!
//! Garbage on the line is dropped at the next silence; the server never exits on a bad frame and
//! stays silent for unit ids it does not serve, as a real device on a shared bus does.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Corruption, Devices};
use crate::transport::rtu::{crc16, with_crc};

/// Whether `frame` ends with the CRC of what precedes it (and has room for unit, function, CRC).
pub fn crc_ok(frame: &[u8]) -> bool {
    frame.len() >= 4 && {
        let (body, crc) = frame.split_at(frame.len() - 2);
        crc16(body).to_le_bytes() == [crc[0], crc[1]]
    }
}

/// Serial parity; with parity each character takes one more bit on the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// The RS-485 line the simulator emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineConfig {
    pub baud: u32,
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    /// How long the device takes to start answering after the request's last byte.
    pub turnaround: Duration,
}

impl Default for LineConfig {
    fn default() -> Self {
        LineConfig {
            baud: 9600,
            parity: Parity::None,
            stop_bits: 1,
            turnaround: Duration::from_millis(5),
        }
    }
}

impl LineConfig {
    /// Start + 8 data + parity + stop bits: 10 for 8N1, 11 with parity or two stop bits.
    pub fn bits_per_char(&self) -> u32 {
        1 + 8 + u32::from(self.parity != Parity::None) + u32::from(self.stop_bits.clamp(1, 2))
    }

    /// Time `bytes` characters occupy the line.
    pub fn char_time(&self, bytes: usize) -> Duration {
        let bits = bytes as u64 * u64::from(self.bits_per_char());
        Duration::from_nanos(bits * 1_000_000_000 / u64::from(self.baud.max(1)))
    }

    /// The silence that ends a frame: 3.5 characters, fixed at 1.75 ms above 19200 baud (Modbus
    /// over serial line, §2.5.1.1).
    pub fn frame_gap(&self) -> Duration {
        if self.baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            self.char_time(7) / 2
        }
    }

    /// When the response's last byte is on the line, counted from the request's first byte
    /// reaching us: both frames' line time plus the turnaround, which is at least the silence a
    /// device needs to see that the request has ended.
    pub fn response_time(&self, request_bytes: usize, response_bytes: usize) -> Duration {
        self.char_time(request_bytes + response_bytes) + self.turnaround.max(self.frame_gap())
    }
}

/// Longest frame Modbus RTU allows; anything longer is noise and only its tail is kept.
const MAX_FRAME: usize = 256;

/// Serve `devices` on a serial port (or pty) until it fails or closes. Returns `Ok(())` at end of
/// input; bad frames are dropped, never fatal.
pub async fn serve_rtu<S>(
    mut port: S,
    devices: Arc<Devices>,
    line: LineConfig,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_FRAME);
    let mut chunk = [0u8; MAX_FRAME];
    // When our last answer's last byte left: the line must then stay silent for a frame gap.
    let mut answered_at: Option<tokio::time::Instant> = None;
    loop {
        buf.clear();
        let n = port.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        let first_byte_at = tokio::time::Instant::now();
        if let Some(at) = answered_at.take() {
            let quiet = first_byte_at.saturating_duration_since(at);
            if quiet < line.frame_gap() {
                tracing::warn!(
                    quiet_us = crate::clock::saturating_us(quiet),
                    gap_us = crate::clock::saturating_us(line.frame_gap()),
                    "simulator rtu: a request began inside the 3.5-character silence after an answer"
                );
            }
        }
        buf.extend_from_slice(&chunk[..n]);
        // Gather until the line has been silent for a frame gap.
        loop {
            match tokio::time::timeout(line.frame_gap(), port.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > MAX_FRAME {
                        buf.drain(..buf.len() - MAX_FRAME);
                    }
                }
                Ok(Err(e)) => return Err(e),
            }
        }
        let Some(request) = find_frame(&buf) else {
            tracing::debug!(
                "simulator rtu: dropped {} bytes without a valid frame",
                buf.len()
            );
            continue;
        };
        let unit = request[0];
        let Some(device) = devices.get(&unit) else {
            continue;
        };
        let reply = device.respond(&request[1..request.len() - 2]);
        let Some(pdu) = reply.pdu else { continue };
        let mut body = Vec::with_capacity(pdu.len() + 1);
        body.push(unit);
        body.extend_from_slice(&pdu);
        let mut frame = with_crc(body);
        match reply.corrupt {
            Some(Corruption::BadCrc) => {
                let last = frame.len() - 1;
                frame[last] ^= 0xA5;
            }
            Some(Corruption::Truncated) => frame.truncate(frame.len() / 2),
            None => {}
        }
        crate::clock::sleep_until_precise(
            first_byte_at + line.response_time(request.len(), frame.len()) + reply.latency,
        )
        .await;
        // Stamped before the write: a stall after it must not look like a master that did not
        // wait (the master cannot see the answer before it is written).
        let writing_at = tokio::time::Instant::now();
        port.write_all(&frame).await?;
        port.flush().await?;
        answered_at = Some(writing_at);
    }
}

/// The request in what arrived between two silences: the whole buffer when its CRC holds, else the
/// longest valid tail (a request that followed noise without a gap). Broadcasts (unit 0) get no
/// answer, so they are not returned.
fn find_frame(buf: &[u8]) -> Option<&[u8]> {
    (0..buf.len().saturating_sub(3))
        .map(|i| &buf[i..])
        .find(|f| crc_ok(f) && f[0] != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_specification_example() {
        // Modbus over serial line V1.02, §6.2.2 example: 02 07 → CRC 0x1241, sent 41 12.
        assert_eq!(with_crc(vec![0x02, 0x07]), vec![0x02, 0x07, 0x41, 0x12]);
        assert!(crc_ok(&[0x02, 0x07, 0x41, 0x12]));
        assert!(!crc_ok(&[0x02, 0x07, 0x12, 0x41]));
    }

    #[test]
    fn line_time_counts_bits_per_character() {
        let l = LineConfig {
            baud: 9600,
            ..LineConfig::default()
        };
        assert_eq!(l.bits_per_char(), 10);
        // 96 characters of 10 bits at 9600 baud take 100 ms.
        assert_eq!(l.char_time(96), Duration::from_millis(100));
        let even = LineConfig {
            parity: Parity::Even,
            ..l
        };
        assert_eq!(even.bits_per_char(), 11);
        assert_eq!(LineConfig { stop_bits: 2, ..l }.bits_per_char(), 11);
        assert_eq!(
            LineConfig { baud: 115_200, ..l }.frame_gap(),
            Duration::from_micros(1750)
        );
    }

    #[test]
    fn a_device_never_answers_inside_the_silence_that_ends_the_request() {
        let quick = LineConfig {
            baud: 9600,
            parity: Parity::Even,
            turnaround: Duration::ZERO,
            ..LineConfig::default()
        };
        // 8 + 9 characters of 11 bits at 9600 baud, then 3.5 characters of silence.
        assert_eq!(
            quick.response_time(8, 9),
            quick.char_time(17) + quick.char_time(7) / 2
        );
        let slow = LineConfig {
            turnaround: Duration::from_millis(20),
            ..quick
        };
        assert_eq!(
            slow.response_time(8, 9),
            slow.char_time(17) + Duration::from_millis(20)
        );
    }

    #[test]
    fn a_request_after_noise_without_a_gap_is_still_found() {
        let request = with_crc(vec![1, 4, 0, 0, 0, 2]);
        let mut buf = vec![0xFF, 0x13, 0x00];
        buf.extend_from_slice(&request);
        assert_eq!(find_frame(&buf), Some(&request[..]));
        assert_eq!(find_frame(&[0xFF, 0x13, 0x00, 0x42]), None);
    }
}
