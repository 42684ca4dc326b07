//! The command line's conventions as a packager and a script see them: completion scripts for
//! bash, zsh and fish, the manual pages, `socer check --json`, and one spelling per concept with
//! the old spellings still taken.

use std::path::Path;
use std::process::Command;

use clap::Parser;

fn socer(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run socer: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The subcommands `socer --help` lists (so the checks follow new ones).
fn subcommands() -> Vec<String> {
    let (code, help, _) = socer(&["--help"]);
    assert_eq!(code, 0);
    let names: Vec<String> = help
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("Options:").next())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(String::from)
        .collect();
    for expected in ["site", "central", "check", "completions", "man", "profiles"] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {help}");
    }
    names
}

#[test]
fn completions_for_each_shell_name_every_subcommand() {
    let subs = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, stderr) = socer(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(script.len() > 1000, "{shell}: {script}");
        for sub in &subs {
            assert!(script.contains(sub.as_str()), "{shell} script lacks {sub}");
        }
        assert!(script.contains("profiles"), "{shell}");
        assert!(script.contains("json"), "{shell}: flags are completed too");
    }
    let (code, _, stderr) = socer(&["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {stderr}");
}

#[test]
fn the_manual_has_a_page_for_socer_and_each_subcommand() {
    let (code, page, _) = socer(&["man"]);
    assert_eq!(code, 0);
    assert!(page.contains(".TH socer 1"), "{page}");
    assert!(page.contains(".SH NAME") && page.contains(".SH SYNOPSIS"));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let (code, listed, stderr) = socer(&["man", "--out", &out.display().to_string()]);
    assert_eq!(code, 0, "{stderr}");
    let root = std::fs::read_to_string(out.join("socer.1")).unwrap();
    assert!(root.contains(".TH socer 1"));
    for sub in subcommands() {
        let file = out.join(format!("socer-{sub}.1"));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}; listed:\n{listed}", file.display()));
        assert!(text.contains(&format!(".TH socer-{sub} 1")), "{text}");
        assert!(listed.contains(&file.display().to_string()), "{listed}");
    }
    let check = std::fs::read_to_string(out.join("socer-check.1")).unwrap();
    assert!(check.contains("json"), "{check}");
    assert!(!out.join("socer-help.1").exists());
}

fn check_json(file: &Path) -> (i32, serde_json::Value) {
    let (code, stdout, stderr) = socer(&["check", "--json", &file.display().to_string()]);
    let v = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout} / {stderr}"));
    (code, v)
}

#[test]
fn check_json_locates_each_problem_and_keeps_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    // A TOML syntax error on line 4: the value after `name =` is missing.
    let broken = dir.path().join("site.toml");
    std::fs::write(&broken, "[site]\nid = \"a\"\n\nname = \n").unwrap();
    let (code, v) = check_json(&broken);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["file"], broken.display().to_string());
    let d = v["diagnostics"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{v}");
    assert_eq!(d[0]["file"], broken.display().to_string());
    assert_eq!(
        (d[0]["line"].as_u64(), d[0]["col"].as_u64()),
        (Some(4), Some(8))
    );
    assert_eq!(d[0]["severity"], "error");
    // The plain answer names the same place.
    let (code, _, stderr) = socer(&["check", &broken.display().to_string()]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with(&format!("{}:4:8: ", broken.display())),
        "{stderr}"
    );

    // A byte that is not UTF-8, line 3 column 12.
    let bytes = dir.path().join("bytes.toml");
    std::fs::write(&bytes, b"[site]\nid = \"ok\"\nname = \"Caf\xe9\"\n").unwrap();
    let (code, v) = check_json(&bytes);
    assert_eq!(code, 2);
    let d = &v["diagnostics"][0];
    assert_eq!((d["line"].as_u64(), d["col"].as_u64()), (Some(3), Some(12)));
    assert!(d["message"].as_str().unwrap().contains("0xe9"), "{v}");

    // A valid file: ok, no diagnostics, exit 0.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo/scenario.toml");
    let (code, v) = check_json(&example);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["diagnostics"].as_array().map(Vec::len), Some(0));

    // A file that cannot be read is still one located error.
    let (code, v) = check_json(&dir.path().join("missing.toml"));
    assert_eq!(code, 2);
    assert_eq!(v["diagnostics"][0]["line"], 1);
}

#[test]
fn the_profiles_folder_is_profiles_everywhere_and_dir_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let text = "id = \"x\"\nmanufacturer = \"T\"\nmodel = \"T\"\nkind = \"meter\"\nphases = 2\nsource = \"doc\"\n\n[defaults]\nfunction = \"input\"\n";
    let path = dir.path().join("x.toml");
    std::fs::write(&path, text).unwrap();
    let d = dir.path().display().to_string();
    let expected = format!("{}:5:10: phases must be 1 or 3, not 2", path.display());
    for flag in ["--profiles", "--dir"] {
        let (code, _, stderr) = socer(&["profiles", flag, &d]);
        assert_eq!(code, 2, "{flag}: {stderr}");
        assert_eq!(stderr.trim(), expected, "{flag}");
        // `read` loads the folder before it opens the bus.
        let (code, _, stderr) = socer(&["read", "--tcp", "127.0.0.1:9", "--model", "x", flag, &d]);
        assert_ne!(code, 0, "{flag}");
        assert!(stderr.contains(&expected), "read {flag}: {stderr}");
    }
    // The old spelling is not advertised.
    let (_, help, _) = socer(&["read", "--help"]);
    assert!(help.contains("--profiles <DIR>"), "{help}");
    assert!(!help.contains("--dir <"), "{help}");
}

#[derive(Parser)]
struct Loadgen {
    #[command(flatten)]
    args: socer::cli::loadgen::Args,
}

#[derive(Parser)]
struct Scan {
    #[command(flatten)]
    args: socer::cli::scan::Args,
}

#[derive(Parser)]
struct Simulate {
    #[command(flatten)]
    args: socer::cli::simulate::Args,
}

#[test]
fn every_spelling_of_a_folder_flag_parses_to_the_same_setting() {
    for flag in ["--data", "--dir"] {
        let l = Loadgen::try_parse_from(["loadgen", flag, "/tmp/lg"]).unwrap();
        assert_eq!(l.args.dir.as_deref(), Some(Path::new("/tmp/lg")), "{flag}");
    }
    for flag in ["--profiles", "--dir"] {
        let s = Scan::try_parse_from(["scan", "--tcp", "127.0.0.1:502", flag, "/p"]).unwrap();
        assert_eq!(s.args.dir.as_deref(), Some(Path::new("/p")), "{flag}");
    }
    let s =
        Simulate::try_parse_from(["simulate", "--model", "m", "--tcp", "x", "--profiles", "/p"])
            .unwrap();
    assert_eq!(s.args.profiles.as_deref(), Some(Path::new("/p")));
}
