//! `socer check` on site configs, through the binary: exit codes and FILE:LINE:COL lines.

use std::process::Command;

fn check(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_socer"))
        .arg("check")
        .arg(path)
        .output()
        .expect("run socer check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_site_config_checks_clean_and_a_broken_copy_names_file_line_and_column() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/site.example.toml");
    assert_eq!(check(&example).0, 0);

    let text = std::fs::read_to_string(&example).expect("example");
    let broken = text
        .replacen("unit = 2", "unit = 1", 1)
        .replacen("bus = \"inverter-lan\"\nunit", "bus = \"lan2\"\nunit", 1)
        .replacen("url = \"mqtts://", "url = \"https://", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("site.toml");
    std::fs::write(&path, &broken).expect("write");
    let (code, err) = check(&path);
    assert_eq!(code, 2, "{err}");
    let line_of = |needle: &str| {
        broken
            .lines()
            .position(|l| l.contains(needle))
            .expect("needle")
            + 1
    };
    let p = path.display();
    assert!(
        err.contains(&format!(
            "{p}:{}:7: \"https://",
            line_of("url = \"https://")
        )),
        "{err}"
    );
    assert!(
        err.contains("unit id 1 is already used on bus \"rs485\""),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:{}:7: meter \"pv-roof\" is on bus \"lan2\"",
            line_of("bus = \"lan2\"")
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 3, "{err}");
}
