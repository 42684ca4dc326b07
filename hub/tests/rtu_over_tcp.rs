//! Modbus RTU over TCP through a simulated transparent gateway: a forwarder listens on loopback TCP
//! and passes the bytes, unchanged, to one end of a socat pty pair; on the other end pymodbus 3.16
//! serves an RTU device (a SunSpec float meter image typed from the model definitions, and silent for
//! other unit ids as an RS-485 device is). The real `socer scan` and `socer read` reach it with
//! `--rtu-over-tcp`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{require, wait_for, Reaped};
use serde_json::Value;

fn python() -> PathBuf {
    PathBuf::from(
        std::env::var("SOCER_PYTHON").unwrap_or_else(|_| "/opt/socer-venv/bin/python".into()),
    )
}

fn image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../drivers/tests/images/{name}.toml"))
}

fn start_rtu_peer(image: &Path, serial: &str) -> Reaped {
    let mut child = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/image_peer.py"))
        .arg("serve")
        .arg(image)
        .args(["--serial", serial])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the pymodbus peer: {e}"));
    let stdout = child.stdout.take().unwrap();
    let guard = Reaped(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == "READY" {
                let _ = tx.send(());
                break;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("pymodbus RTU peer not ready within 20 s");
    guard
}

/// A pty pair that survives its ends being closed and reopened (each gateway connection opens
/// the pty anew): `ignoreeof` on both sides.
fn pty_pair(a: &Path, b: &Path) -> Reaped {
    require("socat");
    let child = Command::new("socat")
        .arg(format!("pty,raw,echo=0,ignoreeof,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,ignoreeof,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start socat: {e}"));
    let guard = Reaped(child);
    assert!(
        wait_for(Duration::from_secs(5), || a.exists() && b.exists()),
        "no pty pair"
    );
    guard
}

/// The transparent gateway: TCP on loopback forwarded byte for byte to the pty, one client at a
/// time, by one long-lived forwarder that holds the pty open (as a converter holds its serial
/// port), so that no byte meant for one client can reach another.
fn start_gateway(pty: &str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind gateway");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let pty = pty.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            use tokio_serial::SerialPortBuilderExt;
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let Ok(mut serial) = tokio_serial::new(&pty, 9600).open_native_async() else {
                return;
            };
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (mut a, mut b) = ([0u8; 512], [0u8; 512]);
                loop {
                    tokio::select! {
                        n = tcp.read(&mut a) => match n {
                            Ok(n) if n > 0 => { if serial.write_all(&a[..n]).await.is_err() { return; } }
                            _ => break,
                        },
                        n = serial.read(&mut b) => match n {
                            Ok(n) if n > 0 => { if tcp.write_all(&b[..n]).await.is_err() { break; } }
                            _ => return,
                        },
                    }
                }
            }
        });
    });
    port
}

fn socer(args: &[String]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("socer {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn scan_and_read_reach_an_rtu_device_behind_a_transparent_tcp_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("device"), dir.path().join("gateway"));
    let _pty = pty_pair(&a, &b);
    let _device = start_rtu_peer(&image("sunspec-213"), &a.display().to_string());
    let port = start_gateway(&b.display().to_string());
    let gw = format!("127.0.0.1:{port}");

    // Units 1-3: only 1 answers (the others are silent, as on RS-485), recognised as SunSpec.
    let (ok, out, err) = socer(&[
        "scan".into(),
        "--rtu-over-tcp".into(),
        gw.clone(),
        "--units".into(),
        "1-3".into(),
        "--timeout-ms".into(),
        "1000".into(),
        "--json".into(),
    ]);
    assert!(ok, "scan failed: {err}\n{out}");
    let found: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{out}");
    assert_eq!(found[0]["unit"], 1, "{out}");
    assert!(out.contains("sunspec") || out.contains("SunSpec"), "{out}");

    let (ok, out, err) = socer(&[
        "read".into(),
        "--rtu-over-tcp".into(),
        gw,
        "--unit".into(),
        "1".into(),
        "--model".into(),
        "sunspec".into(),
        "--timeout-ms".into(),
        "2000".into(),
        "--json".into(),
    ]);
    assert!(ok, "read failed: {err}\n{out}");
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["quality"], "good", "{j}");
    // Values typed in the image from model 213's definition.
    assert_eq!(j["p_w"], -3120.5, "{j}");
    assert_eq!(j["e_imp_wh"], 1234567.0, "{j}");
    assert_eq!(j["e_exp_wh"], 4567890.0, "{j}");
    assert_eq!(j["v_v"][2], 229.75, "{j}");
    assert_eq!(j["i_a"][1], 5.5, "{j}");
    assert_eq!(j["f_hz"], 50.0, "{j}");
}
