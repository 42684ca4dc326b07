//! Modbus TCP client on tokio-modbus: one connection per bus, shared by every unit id behind a
//! gateway, with a timeout on every call (tokio-modbus has none) and capped exponential back-off
//! between reconnection attempts.
//!
//! After a timeout the connection is dropped and reopened on the next request, so that a late
//! answer can never be read as the answer to a later request.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;

use crate::link::{Link, LinkError};
use crate::profile::Function;

use super::{check_count, exception, Backoff};

/// A Modbus TCP master connected to one host:port.
pub struct TcpLink {
    addr: String,
    timeout: Duration,
    backoff: Backoff,
    ctx: Option<Context>,
    /// Consecutive failed connection attempts or transport errors.
    failures: u32,
    /// No connection attempt before this instant (after a failure).
    retry_at: Option<Instant>,
    last_error: String,
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink")
            .field("addr", &self.addr)
            .field("connected", &self.ctx.is_some())
            .field("failures", &self.failures)
            .finish()
    }
}

impl TcpLink {
    /// A link to `addr` ("host:port"). Nothing is connected until the first request.
    pub fn new(addr: impl Into<String>, timeout: Duration, backoff: Backoff) -> Self {
        TcpLink {
            addr: addr.into(),
            timeout,
            backoff,
            ctx: None,
            failures: 0,
            retry_at: None,
            last_error: String::new(),
        }
    }

    fn timeout_error(&self) -> LinkError {
        LinkError::Timeout {
            timeout_ms: crate::clock::saturating_ms(self.timeout),
        }
    }

    fn transport_failed(&mut self, msg: String) -> LinkError {
        self.ctx = None;
        self.failures = self.failures.saturating_add(1);
        let wait = self.backoff.delay(self.failures);
        self.retry_at = Some(Instant::now() + wait);
        self.last_error = msg.clone();
        tracing::warn!(addr = %self.addr, failures = self.failures, retry_in_ms = crate::clock::saturating_ms(wait), error = %msg, "modbus tcp connection failed");
        LinkError::Transport(msg)
    }

    async fn connect(&mut self) -> Result<&mut Context, LinkError> {
        if self.ctx.is_none() {
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
            let stream = match timeout(self.timeout, TcpStream::connect(&self.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(self.transport_failed(format!("connect {}: {e}", self.addr)))
                }
                Err(_) => {
                    return Err(self.transport_failed(format!(
                        "connect {}: no answer within {} ms",
                        self.addr,
                        self.timeout.as_millis()
                    )))
                }
            };
            let _ = stream.set_nodelay(true);
            self.ctx = Some(tokio_modbus::client::tcp::attach_slave(stream, Slave(0)));
            self.retry_at = None;
        }
        self.ctx
            .as_mut()
            .ok_or_else(|| LinkError::Transport("not connected".into()))
    }
}

impl Link for TcpLink {
    async fn read_registers(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        check_count(count)?;
        let limit = self.timeout;
        let ctx = self.connect().await?;
        ctx.set_slave(Slave(unit));
        let call = async {
            match function {
                Function::Holding => ctx.read_holding_registers(address, count).await,
                Function::Input => ctx.read_input_registers(address, count).await,
            }
        };
        match timeout(limit, call).await {
            Err(_) => {
                // The answer may still come: never let it meet the next request.
                self.ctx = None;
                Err(self.timeout_error())
            }
            Ok(Ok(Ok(words))) => {
                self.failures = 0;
                if words.len() == usize::from(count) {
                    Ok(words)
                } else {
                    Err(LinkError::Frame(format!(
                        "asked for {count} registers, got {}",
                        words.len()
                    )))
                }
            }
            Ok(Ok(Err(code))) => {
                self.failures = 0;
                Err(exception(code))
            }
            Ok(Err(tokio_modbus::Error::Protocol(p))) => {
                // Header or function mismatch: the stream is out of step; start a fresh one.
                self.ctx = None;
                Err(LinkError::Frame(p.to_string()))
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                Err(self.transport_failed(format!("{}: {e}", self.addr)))
            }
        }
    }
}
