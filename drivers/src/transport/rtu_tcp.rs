//! Modbus RTU over TCP: raw RTU frames, with their CRC, carried over a TCP stream. Cheap RS-485 ↔
//! Ethernet/Wi-Fi converters in "transparent" mode forward the bytes to the serial line unchanged;
//! there is no MBAP header and no transaction id, so this is an RTU master, one transaction at a
//! time, whose wire happens to be a socket.
//!
//! The framing and the CRC are the serial transport's (`rtu::request_frame`, `rtu::parse`,
//! `rtu::answer`). What differs: the gateway times the RS-485 silence itself, so the master only
//! drains stray bytes before a request; after a timeout or a damaged frame the connection is
//! dropped and reopened, so that a late answer still buffered in the gateway can never be read as
//! the answer to the next request; failed connections back off like a Modbus TCP link.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use crate::link::{Link, LinkError};
use crate::profile::Function;

use super::rtu::{answer, function_code, hex, parse, request_frame, Answer, Parsed};
use super::{check_count, Backoff};

/// An RTU master reaching its serial line through a TCP gateway at `host:port`.
#[derive(Debug)]
pub struct RtuOverTcpLink {
    addr: String,
    /// How long a device may take to answer, on top of the frames' time on the serial line.
    timeout: Duration,
    /// The gateway's serial speed: the frames' time on the line is added to the timeout.
    baud: u32,
    backoff: Backoff,
    stream: Option<TcpStream>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

impl RtuOverTcpLink {
    /// A link to `addr`; nothing is connected until the first request.
    pub fn new(addr: impl Into<String>, baud: u32, timeout: Duration, backoff: Backoff) -> Self {
        RtuOverTcpLink {
            addr: addr.into(),
            timeout,
            baud: baud.max(1),
            backoff,
            stream: None,
            failures: 0,
            retry_at: None,
            last_error: String::new(),
        }
    }

    fn line_time(&self, bytes: usize) -> Duration {
        Duration::from_nanos(
            (10 * 1_000_000_000 / u64::from(self.baud)).saturating_mul(bytes as u64),
        )
    }

    fn failed(&mut self, msg: String) -> LinkError {
        self.stream = None;
        self.failures = self.failures.saturating_add(1);
        let wait = self.backoff.delay(self.failures);
        self.retry_at = Some(Instant::now() + wait);
        self.last_error = msg.clone();
        tracing::warn!(addr = %self.addr, failures = self.failures, error = %msg, "rtu over tcp connection failed");
        LinkError::Transport(msg)
    }

    async fn connect(&mut self) -> Result<(), LinkError> {
        if self.stream.is_some() {
            return Ok(());
        }
        if let Some(at) = self.retry_at {
            let now = Instant::now();
            if now < at {
                return Err(LinkError::Transport(format!(
                    "{}: reconnecting in {} ms after: {}",
                    self.addr,
                    (at - now).as_millis(),
                    self.last_error
                )));
            }
        }
        match timeout(self.timeout, TcpStream::connect(&self.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                self.stream = Some(s);
                self.retry_at = None;
                Ok(())
            }
            Ok(Err(e)) => Err(self.failed(format!("connect {}: {e}", self.addr))),
            Err(_) => Err(self.failed(format!(
                "connect {}: no answer within {} ms",
                self.addr,
                self.timeout.as_millis()
            ))),
        }
    }

    /// One request and its answer. On a timeout or damaged frame the connection is dropped.
    async fn transact(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        self.connect().await?;
        let req = request_frame(unit, function, address, count);
        let expected_len = 5 + 2 * usize::from(count);
        let deadline = Instant::now()
            + self.timeout
            + self.line_time(req.len() + expected_len)
            + Duration::from_millis(20);
        let addr = self.addr.clone();
        let Some(stream) = self.stream.as_mut() else {
            return Err(LinkError::Transport(format!("{addr}: not connected")));
        };
        // Stray bytes (a late answer to an earlier request) are drained, never parsed as ours.
        let mut stray = [0u8; 256];
        loop {
            match stream.try_read(&mut stray) {
                Ok(0) => return Err(self.failed(format!("{addr}: gateway closed the connection"))),
                Ok(n) => {
                    tracing::debug!(bytes = n, data = %hex(&stray[..n]), "discarded stray bytes before a request")
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(self.failed(format!("{addr}: {e}"))),
            }
        }
        if let Err(e) = stream.write_all(&req).await {
            return Err(self.failed(format!("{addr}: writing: {e}")));
        }
        let mut buf: Vec<u8> = Vec::with_capacity(expected_len);
        let mut foreign: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Err(LinkError::Transport(format!("{addr}: not connected")));
            };
            let n = match timeout_at(deadline, stream.read(&mut chunk)).await {
                Ok(Ok(0)) => {
                    return Err(self.failed(format!("{addr}: gateway closed the connection")))
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(self.failed(format!("{addr}: reading: {e}"))),
                Err(_) => {
                    // Drop the connection: a late answer must not meet the next request.
                    self.stream = None;
                    return Err(if !buf.is_empty() {
                        LinkError::Frame(format!(
                            "incomplete answer, {} bytes: {}",
                            buf.len(),
                            hex(&buf)
                        ))
                    } else if !foreign.is_empty() {
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
            loop {
                match parse(&buf) {
                    Parsed::Incomplete => break,
                    Parsed::Damaged(why) => {
                        self.stream = None;
                        return Err(LinkError::Frame(format!(
                            "{why}; {} bytes: {}",
                            buf.len(),
                            hex(&buf)
                        )));
                    }
                    Parsed::Frame(len) => {
                        let frame: Vec<u8> = buf.drain(..len).collect();
                        match answer(&frame, unit, function_code(function), count) {
                            Answer::Words(words) => {
                                self.failures = 0;
                                return Ok(words);
                            }
                            Answer::Exception(code) => {
                                self.failures = 0;
                                return Err(LinkError::Exception { code });
                            }
                            Answer::Foreign => {
                                tracing::debug!(unit, data = %hex(&frame), "discarded a stale answer");
                                foreign.extend_from_slice(&frame);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Link for RtuOverTcpLink {
    async fn read_registers(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        check_count(count)?;
        match self.transact(unit, function, address, count).await {
            // One retry for a damaged frame, as on a serial line.
            Err(e) if e.is_retryable() => {
                tracing::debug!(unit, address, error = %e, "retrying after a damaged frame");
                self.transact(unit, function, address, count).await
            }
            other => other,
        }
    }
}
