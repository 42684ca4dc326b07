//! Every built-in profile proven against a register image typed from its document, not generated
//! from the profile: `drivers/tests/images/*.toml` hold the raw words (typed from the register
//! tables the files cite) and the document's own type, word order and unit factor of each value.
//! pymodbus 3.16 serves each image (`peers/image_peer.py`), the real `socer read --json` reads it,
//! and every quantity must match the value computed from the image's definitions; a pymodbus
//! client decoding the same registers from the image (an independent reader) must agree too.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, Reaped};
use serde_json::Value;

const INSTALL_HINT: &str = "run tools/install-test-deps (pymodbus 3.16 venv)";

fn python() -> PathBuf {
    PathBuf::from(
        std::env::var("SOCER_PYTHON").unwrap_or_else(|_| "/opt/socer-venv/bin/python".into()),
    )
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/image_peer.py")
}

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../drivers/tests/images")
}

/// Run a command with a bounded wait; returns (success, stdout, stderr).
fn run(mut cmd: Command, what: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within 30 s");
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

fn serve(image: &Path, port: u16) -> Reaped {
    let mut child = Command::new(python())
        .arg(peer_script())
        .arg("serve")
        .arg(image)
        .args(["--tcp", &port.to_string()])
        .stdin(Stdio::piped())
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
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            panic!(
                "pymodbus peer for {} not ready; {INSTALL_HINT}",
                image.display()
            )
        });
    guard
}

/// Canonical key of a value: `p_w`, `v_v[2]`.
fn key(q: &str, phase: Option<i64>) -> String {
    match phase {
        Some(p) => format!("{q}[{p}]"),
        None => q.to_string(),
    }
}

/// The values the document's definitions give: sum of sign × raw × factor per quantity.
fn expected(image: &toml::Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for r in image["register"].as_array().unwrap() {
        let Some(q) = r.get("quantity").and_then(|q| q.as_str()) else {
            continue;
        };
        let num = |k: &str| {
            r.get(k)
                .map(|v| v.as_float().or(v.as_integer().map(|i| i as f64)).unwrap())
        };
        let v = num("raw").unwrap() * num("factor").unwrap() * num("sign").unwrap_or(1.0);
        *out.entry(key(q, r.get("phase").and_then(|p| p.as_integer())))
            .or_insert(0.0) += v;
    }
    out
}

/// Canonical values of a JSON reading (socer's or the independent reader's).
fn values_of(j: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (k, v) in j.as_object().unwrap() {
        match v {
            Value::Array(a) if k == "v_v" || k == "i_a" => {
                for (i, x) in a.iter().enumerate() {
                    if let Some(x) = x.as_f64() {
                        out.insert(format!("{k}[{}]", i + 1), x);
                    }
                }
            }
            Value::Number(n) if !matches!(k.as_str(), "unit" | "mono_ms") => {
                out.insert(k.clone(), n.as_f64().unwrap());
            }
            _ => {}
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

fn compare(who: &str, file: &str, got: &BTreeMap<String, f64>, want: &BTreeMap<String, f64>) {
    for (k, w) in want {
        match got.get(k) {
            Some(g) if close(*g, *w) => {}
            other => panic!("{file}: {who} {k} = {other:?}, document says {w}"),
        }
    }
    for k in got.keys() {
        assert!(
            want.contains_key(k),
            "{file}: {who} reports {k}, which the image does not type"
        );
    }
}

#[test]
fn every_builtin_profile_reads_its_document_typed_image_exactly() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(images_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 24, "only {} images", files.len());

    // Every profile that claims a typed image has one, and every image names a profile.
    let set = socer_drivers::ProfileSet::builtin().unwrap();
    let mut imaged: Vec<String> = Vec::new();
    for f in &files {
        let image: toml::Value = toml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        imaged.push(image["profile"].as_str().unwrap().to_string());
    }
    for p in &set.profiles {
        if let Some(v) = &p.verified {
            if v.starts_with("typed image") {
                assert!(
                    imaged.contains(&p.id),
                    "{} claims a typed image but has none",
                    p.id
                );
            }
        }
    }

    // The independent reader must agree on at least these (and does on all).
    let mut independently: Vec<String> = Vec::new();
    for f in &files {
        let file = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).unwrap();
        let image: toml::Value = toml::from_str(&text).unwrap();
        let model = image["profile"].as_str().unwrap().to_string();
        let unit = image["unit"].as_integer().unwrap();
        let want = expected(&image);
        assert!(!want.is_empty(), "{file} types no value");

        let port = free_port();
        let _peer = serve(f, port);

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_socer"));
        cmd.args([
            "read",
            "--tcp",
            &format!("127.0.0.1:{port}"),
            "--unit",
            &unit.to_string(),
            "--model",
            &model,
            "--json",
            "--timeout-ms",
            "3000",
        ]);
        let (ok, out, err) = run(cmd, "socer read");
        assert!(ok, "{file}: socer read failed: {err}\n{out}");
        let j: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{file}: {e}: {out}"));
        assert_eq!(j["quality"], "good", "{file}: {j}");
        assert_eq!(j["missing"], serde_json::json!([]), "{file}: {j}");
        let socer = values_of(&j);
        compare("socer read", &file, &socer, &want);

        // A model that identifies itself is recognised by `socer scan`.
        if set.get(&model).is_some_and(|p| !p.identify.is_empty()) {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_socer"));
            cmd.args([
                "scan",
                "--tcp",
                &format!("127.0.0.1:{port}"),
                "--units",
                &unit.to_string(),
                "--timeout-ms",
                "3000",
                "--json",
            ]);
            let (ok, out, err) = run(cmd, "socer scan");
            assert!(ok, "{file}: socer scan failed: {err}\n{out}");
            let found: Value = serde_json::from_str(&out).unwrap();
            let guesses = &found[0]["guesses"];
            assert!(
                guesses
                    .as_array()
                    .is_some_and(|g| g.iter().any(|x| x == model.as_str())),
                "{file}: scan did not recognise {model}: {out}"
            );
        }

        let mut cmd = Command::new(python());
        cmd.arg(peer_script())
            .arg("read")
            .arg(f)
            .args(["--tcp", &port.to_string()]);
        let (ok, out, err) = run(cmd, "independent reader");
        assert!(ok, "{file}: independent reader failed: {err}");
        let indep = values_of(&serde_json::from_str(&out).unwrap());
        compare("independent reader", &file, &indep, &want);
        compare("socer vs independent reader", &file, &socer, &indep);
        independently.push(model);
    }
    for must in [
        "sinapsi-alfa",
        "chint-dtsu666",
        "sungrow-sh-grid",
        "sungrow-sg",
        "sunspec",
    ] {
        assert!(
            independently.iter().any(|m| m == must),
            "no independent read of {must}"
        );
    }
}
