//! `socer keygen`: make the hub's Ed25519 signing key file (mode 0600) and print the public key
//! every site config needs as `[mqtt] hub_public_key`.
//!
//! It never overwrites an existing key file: replacing the key means editing every site config.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::wire;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the new signing key (the central config names it as
    /// `[keys] signing_key_file`). Refused if the file exists.
    #[arg(long, value_name = "FILE", conflicts_with = "show")]
    pub out: Option<PathBuf>,
    /// Print the public key of an existing signing key file instead.
    #[arg(long, value_name = "FILE")]
    pub show: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let public = match (&args.out, &args.show) {
        (Some(out), _) => write_new(out)?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            wire::signing_key_from_hex(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
                .verifying_key()
        }
        (None, None) => anyhow::bail!("give --out FILE (a new key) or --show FILE"),
    };
    println!("hub_public_key = \"{}\"", wire::public_key_hex(&public));
    Ok(ExitCode::SUCCESS)
}

/// Write a new signing key to `path` (created 0600, never overwritten); its public key.
pub fn write_new(path: &Path) -> anyhow::Result<wire::HubPublicKey> {
    let key = wire::generate_signing_key();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    f.write_all(format!("{}\n", wire::signing_key_hex(&key)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(key.verifying_key())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_key_file_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.key");
        let public = write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            wire::signing_key_from_hex(&text).unwrap().verifying_key(),
            public
        );
        assert!(write_new(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
