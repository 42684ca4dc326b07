//! Modbus TCP for the simulator: MBAP framing over a listener, one task per connection, requests
//! routed to devices by unit id.
//!
//! Our own framing (not tokio-modbus's server) so that latency, silence and damaged frames are
//! under the simulator's control. A bad frame closes that connection only, never the server.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Corruption, Devices, Reply};

/// Exception 0x0B: what a gateway answers for a unit id nobody behind it serves.
pub const GATEWAY_TARGET_FAILED: u8 = 0x0B;

/// Serve `devices` on `listener` until the task is dropped.
pub async fn serve_tcp(listener: TcpListener, devices: Arc<Devices>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!("simulator: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let devices = devices.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &devices).await {
                tracing::debug!("simulator: connection from {peer} ended: {e}");
            }
        });
    }
}

async fn serve_connection(mut stream: TcpStream, devices: &Devices) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let mut header = [0u8; 7];
        stream.read_exact(&mut header).await?;
        let transaction = [header[0], header[1]];
        let protocol = u16::from_be_bytes([header[2], header[3]]);
        let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let unit = header[6];
        if protocol != 0 || !(2..=254).contains(&length) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad MBAP header {header:02x?}"),
            ));
        }
        let mut pdu = vec![0u8; length - 1];
        stream.read_exact(&mut pdu).await?;
        let reply = route(devices, unit, &pdu);
        if !reply.latency.is_zero() {
            tokio::time::sleep(reply.latency).await;
        }
        let Some(mut body) = reply.pdu else { continue };
        if reply.corrupt == Some(Corruption::BadCrc) && body.len() > 1 {
            // No CRC on TCP: damage what a client checks instead, the byte count.
            body[1] = body[1].wrapping_add(2);
        }
        let mut frame = Vec::with_capacity(7 + body.len());
        frame.extend_from_slice(&transaction);
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&((body.len() + 1) as u16).to_be_bytes());
        frame.push(unit);
        frame.extend_from_slice(&body);
        if reply.corrupt == Some(Corruption::Truncated) {
            frame.truncate(frame.len() / 2);
        }
        stream.write_all(&frame).await?;
    }
}

/// Route a request to its device. A lone device also answers the "any unit" ids 0 and 255 that
/// TCP clients use; a unit nobody serves gets the gateway exception.
fn route(devices: &Devices, unit: u8, pdu: &[u8]) -> Reply {
    let device = devices.get(&unit).or_else(|| match (devices.len(), unit) {
        (1, 0 | 255) => devices.values().next(),
        _ => None,
    });
    match device {
        Some(d) => d.respond(pdu),
        None => Reply {
            pdu: Some(vec![
                pdu.first().copied().unwrap_or(0) | 0x80,
                GATEWAY_TARGET_FAILED,
            ]),
            latency: std::time::Duration::ZERO,
            corrupt: None,
        },
    }
}
