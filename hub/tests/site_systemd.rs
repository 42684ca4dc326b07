//! The agent under a (stand-in) service manager: `Type=notify` readiness, watchdog pings while
//! the outbox writer answers, and STOPPING on SIGTERM, over a real `NOTIFY_SOCKET` datagram socket.

mod common;
mod site_common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use site_common::*;

#[test]
fn the_agent_reports_ready_pings_the_watchdog_and_says_it_is_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    // No broker: readiness and the watchdog must not depend on the network.
    let spec = SiteSpec::new(dir.path(), free_port());
    let cfg = spec.write(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(["site", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agent");
    let mut seen: Vec<String> = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < until && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() < 3 {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let ready_at = seen.iter().position(|m| m.contains("READY=1"));
    assert!(ready_at.is_some(), "no READY=1: {seen:?}");
    let pings = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        pings >= 3,
        "watchdog pinged {pings} times in 10 s with a 2 s period: {seen:?}"
    );
    assert!(
        http_get(spec.web_port, "/api/v1/health").is_some(),
        "page not served once ready"
    );

    // SAFETY: kill(2) on the pid of a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let mut stopping = false;
    while t.elapsed() < Duration::from_secs(5) && !stopping {
        if let Ok(n) = sock.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    let status = child.wait().expect("wait");
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    assert!(status.success(), "exit {status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        t.elapsed()
    );
}
