//! `socer profiles` as a technician runs it: the listing, one register map, a broken folder.

use std::process::Command;

fn socer(args: &[&str]) -> (i32, String, String) {
    let out = match Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(args)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("cannot run socer: {e}"),
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn listing_names_every_required_model() {
    let (code, stdout, _) = socer(&["profiles"]);
    assert_eq!(code, 0);
    for id in [
        "eastron-sdm630",
        "carlo-gavazzi-em24",
        "abb-b23",
        "schneider-iem3155",
        "huawei-sun2000",
        "eastron-sdm120",
        "eastron-sdm72d",
        "carlo-gavazzi-em340",
        "sunspec",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(id)),
            "{id} missing:\n{stdout}"
        );
    }
}

#[test]
fn show_prints_the_register_map_and_json_parses() {
    let (code, stdout, _) = socer(&["profiles", "--show", "abb-b23"]);
    assert_eq!(code, 0);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("e_imp_wh "))
        .unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "e_imp_wh",
            "holding",
            "20480",
            "0x5000",
            "u64",
            "high_first/big",
            "10",
            "0.01",
            "kWh"
        ]
    );

    let (code, stdout, _) = socer(&["profiles", "--show", "huawei-sun2000", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
    assert_eq!(v["id"], "huawei-sun2000");
    assert_eq!(v["quantity"].as_array().map(Vec::len), Some(10));
}

#[test]
fn an_unknown_model_exits_2_listing_the_known_ones() {
    let (code, _, stderr) = socer(&["profiles", "--show", "sdm999"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown meter model `sdm999`"), "{stderr}");
    assert!(stderr.contains("eastron-sdm630"), "{stderr}");
}

#[test]
fn a_broken_profile_folder_exits_2_with_file_line_col() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let text = "id = \"x\"\nmanufacturer = \"T\"\nmodel = \"T\"\nkind = \"meter\"\nphases = 2\nsource = \"doc\"\n\n[defaults]\nfunction = \"input\"\n";
    let path = dir.path().join("x.toml");
    if let Err(e) = std::fs::write(&path, text) {
        panic!("write: {e}");
    }
    let dir_arg = dir.path().display().to_string();
    let (code, _, stderr) = socer(&["profiles", "--dir", &dir_arg]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        format!("{}:5:10: phases must be 1 or 3, not 2", path.display())
    );
}
