//! The keys in the configs: the hub's signing key file (`[keys] signing_key_file`, made by
//! `socer keygen`) and each site's `[mqtt] hub_public_key`, checked with a line and a reason.

mod central_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use central_support::config_text;
use socer::central::config as central;
use socer::site::config as site;
use socer::wire;

fn central_diags(dir: &Path, keys: &str) -> String {
    let text = format!(
        "{}\n{keys}",
        config_text(dir, "listen = \"127.0.0.1:1883\"")
    );
    let path = dir.join("central.toml");
    let d = central::check(&path, &text);
    socer::diag::render(&path, &text, &d)
}

#[test]
fn the_hub_signing_key_file_must_exist_be_private_and_hold_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = "[keys]\nsigning_key_file = \"hub.key\"\n";
    let out = central_diags(dir.path(), keys);
    assert!(out.contains("cannot read signing key file"), "{out}");
    assert!(out.contains("socer keygen"), "{out}");

    // Made by `socer keygen`: accepted, and the public key it prints is the file's.
    let made = Command::new(env!("CARGO_BIN_EXE_socer"))
        .args(["keygen", "--out"])
        .arg(dir.path().join("hub.key"))
        .output()
        .unwrap();
    assert!(made.status.success());
    let printed = String::from_utf8_lossy(&made.stdout).to_string();
    assert_eq!(central_diags(dir.path(), keys), "");
    let path = dir.path().join("central.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n{keys}",
            config_text(dir.path(), "listen = \"127.0.0.1:1883\"")
        ),
    )
    .unwrap();
    let cfg = central::load(&path).unwrap();
    let public = cfg.signing_key.unwrap().verifying_key();
    assert_eq!(
        printed.trim(),
        format!("hub_public_key = \"{}\"", wire::public_key_hex(&public))
    );

    // Readable by others: refused, at the line of the setting.
    let key_file = dir.path().join("hub.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = central_diags(dir.path(), keys);
    assert!(out.contains("readable by others"), "{out}");
    assert!(out.contains("central.toml:"), "{out}");
    // Not a key.
    std::fs::write(&key_file, "not a key\n").unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = central_diags(dir.path(), keys);
    assert!(out.contains("expected 64 hexadecimal digits"), "{out}");
}

#[test]
fn a_site_hub_public_key_must_be_an_ed25519_key_in_hex() {
    let base = "[site]\nid = \"domus-1\"\ncommunity = \"socer\"\nname = \"D\"\n\n[mqtt]\n\
                url = \"mqtt://127.0.0.1:1883\"\nkey_file = \"site.key\"\n";
    let diags = |extra: &str| {
        let text = format!("{base}{extra}");
        let d = site::check(Path::new("s.toml"), &text);
        socer::diag::render(Path::new("s.toml"), &text, &d)
    };
    let good = wire::public_key_hex(&wire::generate_signing_key().verifying_key());
    assert_eq!(diags(&format!("hub_public_key = \"{good}\"\n")), "");
    assert_eq!(diags(""), "");
    for (bad, why) in [
        ("abcd", "expected 64 hexadecimal digits"),
        (&"zz".repeat(32)[..], "not hexadecimal"),
    ] {
        let out = diags(&format!("hub_public_key = \"{bad}\"\n"));
        assert!(out.starts_with("s.toml:9:"), "{out}");
        assert!(out.contains(why), "{out}");
    }
}
