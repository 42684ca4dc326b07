//! `socer check FILE`: validate a site or central config, a meter profile, a demo scenario or an
//! hourly price file, and point at the offending line.
//!
//! Every input gets exit 0 (`FILE: ok`) or exit 2 with `FILE:LINE:COL: message` lines, never a
//! panic: the file is read as bytes (a byte that is not UTF-8 is reported where it is), bounded in
//! size, and each kind goes through its own checks, which report rather than fail. It never
//! changes a file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::diag::{self, Diag};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file: a site or central config, a meter profile, a demo scenario (told apart by their
    /// tables) or an hourly price file (`.csv`).
    pub file: PathBuf,
    /// Print the diagnostics as one JSON object on stdout (`file`, `ok`, `diagnostics`: each
    /// with `file`, `line`, `col`, `severity`, `message`); the exit code is the same.
    #[arg(long)]
    pub json: bool,
}

/// Largest file `socer check` reads, bytes (a config of a thousand sites is far smaller).
pub use crate::diag::MAX_FILE_BYTES;

/// What a TOML file is, from its top-level tables (a price file is told by its `.csv` name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Site,
    Central,
    Profile,
    Scenario,
}

/// The kind of a TOML text from its top-level tables (`None`: not TOML, or no known table).
pub fn detect_kind(text: &str) -> Option<FileKind> {
    let table: toml::Table = text.parse().ok()?;
    if table.contains_key("central") {
        Some(FileKind::Central)
    } else if table.contains_key("site") {
        Some(FileKind::Site)
    } else if table.contains_key("community") && table.contains_key("building") {
        Some(FileKind::Scenario)
    } else if table.contains_key("manufacturer") || table.contains_key("quantity") {
        Some(FileKind::Profile)
    } else {
        None
    }
}

/// One line of `socer check`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

fn findings(text: &str, diags: &[Diag]) -> Vec<Finding> {
    diags
        .iter()
        .map(|d| {
            let (line, col) = d
                .span
                .as_ref()
                .map(|s| diag::line_col(text, s.start))
                .unwrap_or((1, 1));
            Finding {
                line,
                col,
                message: d.message.clone(),
            }
        })
        .collect()
}

/// Check a file's bytes (`path` names it and anchors the files a config refers to). An empty
/// list: the file is valid.
pub fn check_bytes(path: &Path, bytes: &[u8]) -> Vec<Finding> {
    let text = match diag::utf8_text(bytes) {
        Ok(t) => t,
        Err(d) => {
            let valid = &bytes[..d.span.as_ref().map(|s| s.start).unwrap_or(0)];
            let prefix = std::str::from_utf8(valid).unwrap_or("");
            return findings(prefix, &[d]);
        }
    };
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        return check_prices(text);
    }
    let diags = match text.parse::<toml::Table>() {
        Err(e) => vec![Diag::from_toml(&e)],
        Ok(_) => match detect_kind(text) {
            Some(FileKind::Site) => crate::site::config::check(path, text),
            Some(FileKind::Central) => crate::central::config::check(path, text),
            Some(FileKind::Scenario) => check_scenario(text),
            Some(FileKind::Profile) => return check_profile(path, text),
            None => vec![Diag::new(
                Some(0..0),
                "not a file socer knows: a site config needs a [site] table, a central config \
                 [central], a meter profile `manufacturer` and [[quantity]], a demo scenario \
                 [community] and [[building]]; an hourly price file ends in .csv",
            )],
        },
    };
    findings(text, &diags)
}

fn check_scenario(text: &str) -> Vec<Diag> {
    match crate::demo::scenario::Scenario::parse(text) {
        Ok(_) => vec![],
        Err(crate::demo::scenario::ScenarioError::Parse(e)) => vec![Diag::from_toml(&e)],
        Err(e) => vec![Diag::new(None, e.to_string())],
    }
}

fn check_profile(path: &Path, text: &str) -> Vec<Finding> {
    match socer_drivers::profile::Profile::check(&path.display().to_string(), text) {
        Ok(_) => vec![],
        Err(errors) => errors
            .into_iter()
            .map(|e| Finding {
                line: e.line,
                col: e.col,
                message: e.message,
            })
            .collect(),
    }
}

fn check_prices(text: &str) -> Vec<Finding> {
    match crate::central::tariff::parse_price_csv(text) {
        Ok(_) => vec![],
        Err(crate::central::tariff::TariffError::PriceLine { line, col, msg }) => vec![Finding {
            line,
            col,
            message: msg,
        }],
        Err(e) => vec![Finding {
            line: 1,
            col: 1,
            message: e.to_string(),
        }],
    }
}

/// Render findings as `FILE:LINE:COL: message` lines, in file order, one line each.
pub fn render(path: &Path, found: &[Finding]) -> String {
    let mut rows: Vec<&Finding> = found.iter().collect();
    rows.sort_by_key(|f| (f.line, f.col));
    rows.iter()
        .map(|f| {
            let message = f
                .message
                .split(['\n', '\r'])
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            format!("{}:{}:{}: {message}\n", path.display(), f.line, f.col)
        })
        .collect()
}

/// The answer of `socer check --json`: the findings (errors) and warnings of `path`, in file
/// order, as one JSON object.
pub fn render_json(path: &Path, found: &[Finding], warnings: &[String]) -> String {
    use diag::{Located, Severity};
    let mut rows: Vec<&Finding> = found.iter().collect();
    rows.sort_by_key(|f| (f.line, f.col));
    let mut diagnostics: Vec<Located> = rows
        .iter()
        .map(|f| Located::new(path, f.line, f.col, Severity::Error, &f.message))
        .collect();
    diagnostics.extend(warnings.iter().map(|w| {
        Located::parse_warning(w).unwrap_or_else(|| Located::new(path, 1, 1, Severity::Warning, w))
    }));
    serde_json::json!({
        "file": path.display().to_string(),
        "ok": found.is_empty(),
        "diagnostics": diagnostics,
    })
    .to_string()
}

/// Read a file for checking: at most [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    crate::diag::read_bounded(path, MAX_FILE_BYTES).map_err(|e| {
        if e.starts_with("larger than") {
            format!("{e}: not a file socer reads")
        } else {
            format!("cannot read: {e}")
        }
    })
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (found, bytes) = match read_bounded(&args.file) {
        Ok(bytes) => (check_bytes(&args.file, &bytes), bytes),
        Err(why) => (
            vec![Finding {
                line: 1,
                col: 1,
                message: why,
            }],
            vec![],
        ),
    };
    // A valid central config may still leave hours without a price: warnings, exit 0.
    let warnings = match std::str::from_utf8(&bytes) {
        Ok(text) if found.is_empty() && detect_kind(text) == Some(FileKind::Central) => {
            crate::central::config::warnings(&args.file, text)
        }
        _ => vec![],
    };
    let code = if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    };
    if args.json {
        println!("{}", render_json(&args.file, &found, &warnings));
    } else if found.is_empty() {
        for w in &warnings {
            eprintln!("{w}");
        }
        println!("{}: ok", args.file.display());
    } else {
        eprint!("{}", render(&args.file, &found));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(name: &str, text: &[u8]) -> String {
        render(Path::new(name), &check_bytes(Path::new(name), text))
    }

    #[test]
    fn each_kind_of_file_is_told_apart_and_checked() {
        assert_eq!(detect_kind("[site]\nid = \"a\"\n"), Some(FileKind::Site));
        assert_eq!(detect_kind("[central]\n"), Some(FileKind::Central));
        let scenario = include_str!("../../config/demo/scenario.toml");
        assert_eq!(detect_kind(scenario), Some(FileKind::Scenario));
        assert_eq!(check("s.toml", scenario.as_bytes()), "");
        let profile = socer_drivers::ProfileSet::builtin_files()[0].1;
        assert_eq!(detect_kind(profile), Some(FileKind::Profile));
        assert_eq!(check("p.toml", profile.as_bytes()), "");
        assert_eq!(
            check("p.csv", b"hour,eur_per_mwh\n2024-06-03T12:00:00Z,100\n"),
            ""
        );
        let out = check("p.csv", b"hour,eur_per_mwh\n2024-06-03T12:00:00Z,abc\n");
        assert!(out.starts_with("p.csv:2:22: "), "{out}");
        let out = check("x.toml", b"answer = 42\n");
        assert!(
            out.starts_with("x.toml:1:1: not a file socer knows"),
            "{out}"
        );
    }

    #[test]
    fn the_json_answer_locates_each_finding_and_says_its_severity() {
        let path = Path::new("s.toml");
        let found = check_bytes(path, b"[site]\nid = \"a\"\nname = \n");
        let v: serde_json::Value = serde_json::from_str(&render_json(
            path,
            &found,
            &["p.csv:4:1: warning: gap".into()],
        ))
        .unwrap();
        assert_eq!(v["file"], "s.toml");
        assert_eq!(v["ok"], false);
        let d = &v["diagnostics"][0];
        assert_eq!((d["line"].as_u64(), d["col"].as_u64()), (Some(3), Some(8)));
        assert_eq!(d["severity"], "error");
        assert_eq!(d["file"], "s.toml");
        assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()));
        let w = &v["diagnostics"][1];
        assert_eq!(
            (w["file"].as_str(), w["line"].as_u64()),
            (Some("p.csv"), Some(4))
        );
        assert_eq!(w["severity"], "warning");
        let ok: serde_json::Value = serde_json::from_str(&render_json(path, &[], &[])).unwrap();
        assert_eq!(ok["ok"], true);
        assert_eq!(ok["diagnostics"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn a_file_that_is_not_utf8_gets_the_line_and_column_of_its_first_bad_byte() {
        let out = check("s.toml", b"[site]\nid = \"ok\"\nname = \"Caf\xe9\"\n");
        assert_eq!(
            out,
            "s.toml:3:12: byte 0xe9 is not UTF-8: the file must be UTF-8 text\n"
        );
        let out = check("p.csv", b"\xff\xfe");
        assert!(out.starts_with("p.csv:1:1: byte 0xff"), "{out}");
    }

    #[test]
    fn huge_numbers_in_a_site_config_are_diagnosed_not_panicked_on() {
        let base = include_str!("../../config/site.example.toml");
        for interval in [
            "1e30",
            "\"100000000000000000000s\"",
            "18446744073709551615.0",
            "-1",
            "nan",
            "inf",
            "\"0.0000001ms\"",
        ] {
            let text = base.replacen("[[meter]]", &format!("[[meter]]\ninterval = {interval}"), 1);
            let out = check("s.toml", text.as_bytes());
            assert!(out.contains("interval"), "{interval}: {out}");
            assert!(out.starts_with("s.toml:"), "{out}");
        }
    }

    #[test]
    fn hostile_values_of_an_mqtt_device_bus_are_diagnosed_at_their_line() {
        let base = include_str!("../../config/site.example.toml");
        let long = "t".repeat(10_000);
        for (url, topic, interval, says) in [
            ("mqtt://h:1883", "a\\u0000b", "\"5s\"", "without wildcards"),
            (
                "mqtt://h:1883",
                long.as_str(),
                "\"5s\"",
                "must be 1..=200 bytes",
            ),
            (
                "mqtt://h:1883",
                "shelly",
                "1e300",
                "is not a duration in 1s..=24h",
            ),
            (
                "mqtt://h:1883",
                "shelly",
                "-5",
                "is not a duration in 1s..=24h",
            ),
            (
                "mqtt://h:99999",
                "shelly",
                "\"5s\"",
                "is not a number in 1..=65535",
            ),
            (
                "mqtt://user:pw@h",
                "shelly",
                "\"5s\"",
                "credentials go in username/password",
            ),
        ] {
            let text = format!(
                "{base}\n[[bus]]\nname = \"wifi\"\nmqtt = \"{url}\"\n\n[[meter]]\nname = \"dev\"\n\
                 bus = \"wifi\"\nmodel = \"shelly-gen2\"\ntopic = \"{topic}\"\nrole = \"consumption\"\n\
                 interval = {interval}\n"
            );
            let out = check("s.toml", text.as_bytes());
            assert!(out.starts_with("s.toml:"), "{out}");
            assert!(out.contains(says), "{topic:.20} {interval}: {out}");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_and_always_locate_their_findings(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            kind in 0usize..5,
        ) {
            let prefix: &[u8] = [&b"[site]\n"[..], b"[central]\n", b"[community]\n[[building]]\n", b"manufacturer = 1\n", b""][kind];
            let name = if kind == 4 { "f.csv" } else { "f.toml" };
            let mut text = prefix.to_vec();
            text.extend_from_slice(&bytes);
            for f in check_bytes(Path::new(name), &text) {
                prop_assert!(f.line >= 1 && f.col >= 1);
            }
        }
    }
}
