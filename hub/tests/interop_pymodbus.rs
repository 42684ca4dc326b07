//! Interop with an independent Modbus stack: pymodbus 3.16 serves an Eastron SDM630 image and a
//! SunSpec inverter image (built in Python from the published maps, `peers/modbus_peer.py`), over
//! TCP and over RTU on a socat pty pair; the real `socer read --json` must decode the exact values.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, socat_pty_pair, Reaped};
use serde_json::Value;

const INSTALL_HINT: &str = "run tools/install-test-deps (pymodbus 3.16 venv, socat)";

fn python() -> PathBuf {
    let py = PathBuf::from(
        std::env::var("SOCER_PYTHON").unwrap_or_else(|_| "/opt/socer-venv/bin/python".into()),
    );
    let ok = Command::new(&py)
        .args([
            "-c",
            "import pymodbus, serial; assert pymodbus.__version__.startswith('3.')",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import pymodbus 3 and pyserial: {INSTALL_HINT}",
        py.display()
    );
    py
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/modbus_peer.py")
}

/// Start the pymodbus peer and wait (bounded) for its READY line.
fn start_peer(image: &str, transport: &[String], unit: u8) -> Reaped {
    let mut child = Command::new(python())
        .arg(peer_script())
        .arg(image)
        .args(transport)
        .args(["--unit", &unit.to_string()])
        .stdin(Stdio::piped()) // closed when the test drops the child: the peer exits then too
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the pymodbus peer: {e}; {INSTALL_HINT}"));
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
    rx.recv_timeout(Duration::from_secs(15))
        .expect("pymodbus peer did not become ready within 15 s");
    guard
}

/// A socat pty pair: (peer side, socer side).
fn pty_pair(dir: &Path) -> (Reaped, String, String) {
    let a = dir.join("peer");
    let b = dir.join("socer");
    let guard = socat_pty_pair(&a, &b, Duration::from_secs(5));
    (guard, a.display().to_string(), b.display().to_string())
}

/// Run the real binary with a bounded wait; returns (exit success, stdout, stderr).
fn socer(args: &[String]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("socer {args:?} did not finish within 30 s");
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

/// The SDM630 map the test reads with: Eastron SDM630 Modbus protocol, input registers, float32
/// big-endian (30001 → address 0); energy in kWh, hence × 1000 to Wh.
const SDM630_PROFILE: &str = r#"
id = "interop-sdm630"
manufacturer = "Eastron"
model = "SDM630 (interop test map)"
kind = "meter"
phases = 3
source = "Eastron SDM630 Modbus protocol, input register table"

[defaults]
function = "input"

[[quantity]]
name = "p_w"
address = 52
type = "f32"
[[quantity]]
name = "e_imp_wh"
address = 72
type = "f32"
scale = 1000.0
[[quantity]]
name = "e_exp_wh"
address = 74
type = "f32"
scale = 1000.0
[[quantity]]
name = "v_v"
phase = 1
address = 0
type = "f32"
[[quantity]]
name = "v_v"
phase = 2
address = 2
type = "f32"
[[quantity]]
name = "v_v"
phase = 3
address = 4
type = "f32"
[[quantity]]
name = "i_a"
phase = 1
address = 6
type = "f32"
[[quantity]]
name = "i_a"
phase = 2
address = 8
type = "f32"
[[quantity]]
name = "i_a"
phase = 3
address = 10
type = "f32"
[[quantity]]
name = "f_hz"
address = 70
type = "f32"
[[quantity]]
name = "pf"
address = 62
type = "f32"
"#;

fn read_json(bus: &[String], unit: u8, model: &str, dir: &Path) -> Value {
    let mut args: Vec<String> = vec!["read".into()];
    args.extend_from_slice(bus);
    args.extend([
        "--unit".into(),
        unit.to_string(),
        "--model".into(),
        model.into(),
        "--json".into(),
    ]);
    args.extend([
        "--dir".into(),
        dir.display().to_string(),
        "--timeout-ms".into(),
        "2000".into(),
    ]);
    let (ok, out, err) = socer(&args);
    assert!(ok, "socer read failed: {err}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn assert_sdm630(j: &Value) {
    assert_eq!(j["p_w"], 3456.5);
    assert_eq!(j["e_imp_wh"], 12_345_500.0);
    assert_eq!(j["e_exp_wh"], 678_250.0);
    assert_eq!(j["v_v"], serde_json::json!([230.5, 231.25, 229.75]));
    assert_eq!(j["i_a"], serde_json::json!([5.5, 6.25, 4.75]));
    assert_eq!(j["f_hz"], 49.875);
    assert_eq!(j["pf"], 0.9375);
    assert_eq!(j["missing"], serde_json::json!([]));
}

fn assert_sunspec_inverter(j: &Value) {
    // W 512 × 10^1 produced → −5120 W; WH 1 234 567 × 10^1 Wh exported.
    assert_eq!(j["p_w"], -5120.0);
    assert_eq!(j["e_exp_wh"], 12_345_670.0);
    assert!(
        j.get("e_imp_wh").is_none(),
        "model 103 has no import counter: {j}"
    );
    assert_eq!(j["v_v"], serde_json::json!([230.1, 229.8, 231.4]));
    assert_eq!(j["i_a"], serde_json::json!([7.42, 7.51, 7.33]));
    assert_eq!(j["f_hz"], 50.01);
    assert_eq!(j["pf"], 0.985);
    assert_eq!(j["missing"], serde_json::json!([]));
    assert!(
        j["profile"]
            .as_str()
            .unwrap()
            .starts_with("Fronius Symo 8.2-3-M (SunSpec model 103"),
        "{j}"
    );
}

fn profile_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::File::create(dir.path().join("interop-sdm630.toml"))
        .and_then(|mut f| f.write_all(SDM630_PROFILE.as_bytes()))
        .unwrap();
    dir
}

fn tcp_bus(port: u16) -> Vec<String> {
    vec!["--tcp".into(), format!("127.0.0.1:{port}")]
}

fn scan_json(bus: &[String], units: &str) -> Value {
    let mut args: Vec<String> = vec!["scan".into()];
    args.extend_from_slice(bus);
    args.extend([
        "--units".into(),
        units.into(),
        "--timeout-ms".into(),
        "300".into(),
        "--json".into(),
    ]);
    let (ok, out, err) = socer(&args);
    assert!(ok, "socer scan failed: {err}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn builtin_eastron_sdm630_profile_reads_the_pymodbus_meter_exactly() {
    let port = free_port();
    let _peer = start_peer("sdm630", &["--tcp".into(), port.to_string()], 1);
    let empty = tempfile::tempdir().unwrap();
    let j = read_json(&tcp_bus(port), 1, "eastron-sdm630", empty.path());
    assert_sdm630(&j);
    assert!(
        j["profile"].as_str().unwrap().starts_with("Eastron SDM630"),
        "{j}"
    );
}

#[test]
fn scan_over_rtu_finds_only_the_answering_meter_and_names_its_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (_socat, peer_dev, socer_dev) = pty_pair(tmp.path());
    let _peer = start_peer(
        "sdm630",
        &["--serial".into(), peer_dev, "--silent-others".into()],
        2,
    );
    let found = scan_json(&["--serial".into(), socer_dev], "1-3");
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["unit"], 2);
    assert_eq!(found[0]["guesses"], serde_json::json!(["eastron-sdm630"]));
    let evidence = found[0]["evidence"].to_string();
    assert!(
        evidence.contains("eastron-sdm630: holding 64514 = 112"),
        "{evidence}"
    );
}

#[test]
fn scan_over_tcp_recognises_the_sunspec_inverter() {
    let port = free_port();
    let _peer = start_peer("sunspec103", &["--tcp".into(), port.to_string()], 3);
    let found = scan_json(&tcp_bus(port), "3");
    assert_eq!(found[0]["unit"], 3);
    assert_eq!(found[0]["guesses"], serde_json::json!(["sunspec"]));
    let d = found[0]["description"].as_str().unwrap();
    assert!(d.starts_with("Fronius Symo 8.2-3-M serial 28123456"), "{d}");
}

#[test]
fn sdm630_served_by_pymodbus_over_tcp_reads_exactly() {
    let port = free_port();
    let _peer = start_peer("sdm630", &["--tcp".into(), port.to_string()], 1);
    let dir = profile_dir();
    assert_sdm630(&read_json(&tcp_bus(port), 1, "interop-sdm630", dir.path()));
}

#[test]
fn sunspec_inverter_served_by_pymodbus_over_tcp_is_discovered_and_read_exactly() {
    let port = free_port();
    let _peer = start_peer("sunspec103", &["--tcp".into(), port.to_string()], 3);
    let dir = profile_dir();
    assert_sunspec_inverter(&read_json(&tcp_bus(port), 3, "sunspec", dir.path()));
    // The text form names each quantity with its unit.
    let mut args: Vec<String> = vec!["read".into()];
    args.extend(tcp_bus(port));
    args.extend(["--unit", "3", "--model", "sunspec"].map(String::from));
    let (ok, out, err) = socer(&args);
    assert!(ok, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(lines.contains(&vec!["p_w", "-5120.000", "W"]), "{out}");
    assert!(
        lines.contains(&vec!["e_exp_wh", "12345670.000", "Wh"]),
        "{out}"
    );
    assert!(lines.contains(&vec!["v_v_l2", "229.800", "V"]), "{out}");
}

#[test]
fn sdm630_and_sunspec_served_by_pymodbus_over_rtu_read_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = profile_dir();
    for (image, unit) in [("sdm630", 1u8), ("sunspec103", 7)] {
        let sub = tmp.path().join(image);
        std::fs::create_dir(&sub).unwrap();
        let (_socat, peer_dev, socer_dev) = pty_pair(&sub);
        let _peer = start_peer(image, &["--serial".into(), peer_dev], unit);
        let bus = vec!["--serial".into(), socer_dev, "--baud".into(), "9600".into()];
        let j = read_json(
            &bus,
            unit,
            if image == "sdm630" {
                "interop-sdm630"
            } else {
                "sunspec"
            },
            dir.path(),
        );
        if image == "sdm630" {
            assert_sdm630(&j);
        } else {
            assert_sunspec_inverter(&j);
        }
    }
}

#[test]
fn a_silent_unit_over_rtu_is_reported_missing_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (_socat, peer_dev, socer_dev) = pty_pair(tmp.path());
    let _peer = start_peer(
        "sdm630",
        &["--serial".into(), peer_dev, "--silent-others".into()],
        2,
    );
    let args: Vec<String> = [
        "read",
        "--serial",
        &socer_dev,
        "--unit",
        "5",
        "--model",
        "eastron-sdm630",
        "--json",
        "--timeout-ms",
        "300",
    ]
    .map(String::from)
    .to_vec();
    let (ok, out, _) = socer(&args);
    assert!(!ok, "a readout with no value must fail: {out}");
    let j: Value = serde_json::from_str(&out).unwrap();
    assert!(j.get("p_w").is_none(), "{j}");
    assert_eq!(j["quality"], "failed");
    let missing = j["missing"].as_array().unwrap();
    assert_eq!(
        missing.len(),
        11,
        "every mapped quantity is accounted for: {j}"
    );
    let p_w = missing.iter().find(|m| m["quantity"] == "p_w").unwrap();
    let reason = p_w["reason"].as_str().unwrap();
    assert!(
        reason.contains("unit 5") && reason.contains("register 52"),
        "{reason}"
    );
    assert!(reason.contains("no answer within 300 ms"), "{reason}");
}
