//! Throwaway certificates for the TLS tests, made with the `openssl` command line: a test CA, a
//! broker certificate it signs for `localhost` and 127.0.0.1, and a second CA nobody trusts.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pki {
    /// The CA the clients trust.
    pub ca: PathBuf,
    /// The broker's certificate (signed by `ca`) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A CA that did not sign the broker's certificate.
    pub rogue_ca: PathBuf,
}

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl is missing ({e}): run tools/install-test-deps"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn new_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-config",
            "openssl.cnf",
            "-extensions",
            "ca_ext",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// Make the CA, the broker certificate and the rogue CA in `dir`.
pub fn make(dir: &Path) -> Pki {
    std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
    new_ca(dir, "ca");
    new_ca(dir, "rogue");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-config",
            "openssl.cnf",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "broker.key",
            "-out",
            "broker.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "server_ext",
            "-out",
            "broker.crt",
        ],
    );
    Pki {
        ca: dir.join("ca.crt"),
        cert: dir.join("broker.crt"),
        key: dir.join("broker.key"),
        rogue_ca: dir.join("rogue.crt"),
    }
}
