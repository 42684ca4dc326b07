//! `socer check` on hostile files, through the real binary: every input is answered with exit 0
//! (`FILE: ok`) or exit 2 and well-formed `FILE:LINE:COL: message` lines, never a panic (101)
//! or a crash (a signal).

use std::path::{Path, PathBuf};
use std::process::Command;

fn check(path: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_socer"))
        .arg("check")
        .arg(path)
        .output()
        .expect("run socer check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Exit 0 with `FILE: ok`, or exit 2 with only `FILE:LINE:COL: message` lines (LINE, COL ≥ 1).
fn assert_answered(path: &Path, what: &str) -> String {
    let (code, out, err) = check(path);
    let name = path.display().to_string();
    match code {
        Some(0) => assert_eq!(out.trim_end(), format!("{name}: ok"), "{what}"),
        Some(2) => {
            assert!(!err.is_empty(), "{what}: exit 2 without a message");
            for line in err.lines() {
                let rest = line
                    .strip_prefix(&format!("{name}:"))
                    .unwrap_or_else(|| panic!("{what}: not FILE:LINE:COL: {line:?}"));
                let mut parts = rest.splitn(3, ':');
                let l: usize = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let c: usize = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let msg = parts.next().unwrap_or("");
                assert!(l >= 1 && c >= 1, "{what}: bad LINE:COL in {line:?}");
                assert!(
                    msg.starts_with(' ') && msg.trim().len() > 3,
                    "{what}: no message in {line:?}"
                );
            }
        }
        other => panic!("{what}: exit {other:?} (101 is a panic, None a signal)\n{err}"),
    }
    err
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn site_example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/site.example.toml"
    ))
    .unwrap()
}

fn central_example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/central.example.toml"
    ))
    .unwrap()
}

/// `text` with the first `key = …` line given `value`, or the line added after `header`.
fn set(text: &str, header: &str, key: &str, value: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if let Some(l) = lines
        .iter_mut()
        .find(|l| l.trim_start().starts_with(&format!("{key} =")))
    {
        *l = format!("{key} = {value}");
    } else if let Some(i) = lines.iter().position(|l| l.trim() == header) {
        lines.insert(i + 1, format!("{key} = {value}"));
    }
    lines.join("\n") + "\n"
}

const HOSTILE_NUMBERS: [&str; 12] = [
    "1e30",
    "\"100000000000000000000s\"",
    "18446744073709551615.0",
    "18446744073709551615",
    "-9223372036854775808",
    "-1",
    "nan",
    "-inf",
    "inf",
    "1e-320",
    "\"-5s\"",
    "\"1e400h\"",
];

#[test]
fn huge_negative_and_non_finite_numbers_in_a_site_config_are_located_never_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let base = site_example();
    for v in HOSTILE_NUMBERS {
        for key in [
            "interval",
            "timeout_ms",
            "baud",
            "unit",
            "batch_readings",
            "window",
        ] {
            let header = match key {
                "interval" | "unit" => "[[meter]]",
                "timeout_ms" | "baud" => "[[bus]]",
                _ => "[mqtt]",
            };
            let text = set(&base, header, key, v);
            let p = write(dir.path(), "site.toml", text.as_bytes());
            let err = assert_answered(&p, &format!("site {key} = {v}"));
            assert!(!err.is_empty(), "site {key} = {v} was accepted");
        }
    }
    // The budget and the Home Assistant period have stated bounds too.
    for (from, to) in [
        (
            "budget = \"200MB\"",
            "budget = \"100000000000000000000000GB\"",
        ),
        ("budget = \"200MB\"", "budget = \"1B\""),
    ] {
        let p = write(dir.path(), "site.toml", base.replace(from, to).as_bytes());
        let err = assert_answered(&p, to);
        assert!(err.contains("100kB..=1TB"), "{to}: {err}");
    }
}

#[test]
fn hostile_numbers_in_a_central_config_are_located_never_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let base = central_example();
    for v in HOSTILE_NUMBERS {
        for key in [
            "latitude",
            "period_minutes",
            "raw_retention_days",
            "peak_kw",
            "zonal_eur_mwh",
            "alert_lookahead_hours",
        ] {
            let header = match key {
                "peak_kw" => "[[plant]]",
                "zonal_eur_mwh" => "[prices]",
                "alert_lookahead_hours" => "[signal]",
                _ => "[central]",
            };
            let text = set(&base, header, key, v);
            let p = write(dir.path(), "central.toml", text.as_bytes());
            assert_answered(&p, &format!("central {key} = {v}"));
        }
    }
    let p = write(
        dir.path(),
        "central.toml",
        base.replacen(
            "alert_lookahead_hours = 24",
            "alert_lookahead_hours = 4294967295",
            1,
        )
        .as_bytes(),
    );
    let err = assert_answered(&p, "a lookahead of 2^32 hours");
    assert!(
        err.contains("alert_lookahead_hours is 4294967295: it must be in 1..=168"),
        "{err}"
    );
}

#[test]
fn bytes_that_are_not_utf8_are_reported_at_their_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let base = site_example().into_bytes();
    // At the start, inside a key, inside a string, in a comment, at the very end.
    let at_string = base.windows(7).position(|w| w == b"domus-1").unwrap_or(10) + 2;
    let at_key = base
        .windows(8)
        .position(|w| w == b"\nbaud = ")
        .unwrap_or(10)
        + 3;
    let mid_line = base[base.len() / 2..]
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(0)
        + base.len() / 2
        + 1;
    for (at, bad) in [
        (0usize, &b"\xff"[..]),
        (at_string, b"\xc3"),
        (at_key, b"\xe2\x82"),
        (mid_line, b"\x80\x80"),
        (base.len(), b"\xfe"),
    ] {
        let mut bytes = base.clone();
        bytes.splice(at..at, bad.iter().copied());
        let p = write(dir.path(), "site.toml", &bytes);
        let err = assert_answered(&p, &format!("non-UTF-8 at byte {at}"));
        let valid = &bytes[..at];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let col = String::from_utf8_lossy(
            &valid[valid
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|i| i + 1)
                .unwrap_or(0)..],
        )
        .chars()
        .count()
            + 1;
        assert!(
            err.starts_with(&format!(
                "{}:{line}:{col}: byte 0x{:02x} is not UTF-8",
                p.display(),
                bad[0]
            )),
            "at {at}: {err}"
        );
    }
}

#[test]
fn empty_nested_binary_and_oversized_files_of_every_kind_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let deep_array = format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_table = format!("a = {}{}", "{b = ".repeat(20_000), "}".repeat(20_000));
    let deep_key = format!("{} = 1", vec!["k"; 50_000].join("."));
    let mut noise = Vec::new();
    let mut x: u32 = 0x2545_f491;
    for _ in 0..65_536 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.toml", vec![]),
        ("blank.toml", b"   \n\n\t\n".to_vec()),
        ("nul.toml", vec![0; 1000]),
        ("noise.toml", noise.clone()),
        ("noise.csv", noise.clone()),
        ("deep-array.toml", deep_array.into_bytes()),
        ("deep-table.toml", deep_table.into_bytes()),
        ("deep-key.toml", deep_key.into_bytes()),
        ("site-deep.toml", format!("[site]\nid = {}{}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes()),
        ("unknown.toml", b"answer = 42\n".to_vec()),
        ("prices.csv", b"hour,eur_per_mwh\n2024-06-03T12:00:00Z,1e400\n2024-06-03T13:00:00Z,-inf\n".to_vec()),
        ("prices-bad.csv", b"hour,eur_per_mwh\n9999-12-31T23:00:00Z,100\n\xff,1\n".to_vec()),
        (
            "profile.toml",
            b"id = \"x\"\nmanufacturer = \"x\"\nmodel = \"x\"\nkind = \"meter\"\n[[quantity]]\nname = \"p_w\"\naddress = 99999999999999999999\n".to_vec(),
        ),
        (
            "profile-neg.toml",
            b"id = \"x\"\nmanufacturer = \"x\"\nmodel = \"x\"\nkind = \"meter\"\n[[quantity]]\nname = \"p_w\"\naddress = -1\nscale = nan\n".to_vec(),
        ),
        (
            "scenario.toml",
            b"[community]\nid = \"x\"\nname = \"x\"\nlatitude = 1e308\nlongitude = nan\ntimezone = \"Europe/Rome\"\nregion = \"Lombardia\"\n[[building]]\nid = \"b\"\n".to_vec(),
        ),
    ];
    for (name, bytes) in &cases {
        let p = write(dir.path(), name, bytes);
        assert_answered(&p, name);
    }
    // Larger than socer reads, a folder, and a file that is not there.
    let big = write(dir.path(), "big.toml", &vec![b'#'; 17 * 1024 * 1024]);
    let err = assert_answered(&big, "17 MiB");
    assert!(err.contains("larger than 16777216 bytes"), "{err}");
    assert_answered(dir.path(), "a folder");
    assert_answered(&dir.path().join("missing.toml"), "a missing file");
}

#[test]
fn the_shipped_examples_of_every_kind_check_clean() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    for f in [
        "config/site.example.toml",
        "config/central.example.toml",
        "config/demo/scenario.toml",
        "drivers/profiles/eastron-sdm630.toml",
    ] {
        let (code, out, err) = check(&root.join(f));
        assert_eq!(code, Some(0), "{f}: {out}{err}");
    }
}
