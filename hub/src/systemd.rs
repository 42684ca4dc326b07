//! What both daemons take from systemd: readiness and the watchdog (sd_notify), and secrets handed
//! over as credentials (`LoadCredential=`). Outside systemd every call here is a no-op or falls
//! back to the files the packaged units load; nothing here may stop a daemon that runs without it.

use std::future::Future;
use std::path::{Path, PathBuf};

/// A config value `credential:NAME` names the systemd credential NAME instead of a file or a
/// literal secret.
pub const CREDENTIAL_PREFIX: &str = "credential:";

/// Where the packaged units load their credentials from (root-only), and so where a credential is
/// looked for when the process was not started by systemd (`socer check` run by hand as root).
pub const CREDENTIAL_STORE: &str = "/etc/socer/credentials";

/// Tells systemd the daemon is up (`Type=notify`).
pub fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// When the unit has `WatchdogSec=`, pings the watchdog at half its period, but only while
/// `alive` answers `true` within a quarter of it: a stuck part gets the daemon restarted instead
/// of a daemon that merely runs. Ends when `stop` changes. `None` without a watchdog.
pub fn spawn_watchdog<F, Fut>(
    alive: F,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let period = sd_notify::watchdog_enabled()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if tokio::time::timeout(period / 4, alive())
                .await
                .unwrap_or(false)
            {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::warn!(
                    "watchdog: not pinged, a part of the daemon did not answer within {:?}",
                    period / 4
                );
            }
        }
    }))
}

/// `$CREDENTIALS_DIRECTORY` as systemd sets it for a unit with credentials.
pub fn credentials_dir() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// The credential name of a `credential:NAME` value (`None` for any other value).
pub fn credential_name(value: &str) -> Option<&str> {
    value.strip_prefix(CREDENTIAL_PREFIX)
}

/// The file of credential `name`: in `dir` (the unit's `$CREDENTIALS_DIRECTORY`), else in the
/// packaged store.
pub fn credential_path_in(name: &str, dir: Option<&Path>) -> PathBuf {
    dir.unwrap_or(Path::new(CREDENTIAL_STORE)).join(name)
}

/// A credential name systemd accepts and that stays inside its folder.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
    {
        return Err(format!(
            "{CREDENTIAL_PREFIX}{name}: a credential name is ASCII letters, digits, '-', '_', '.' or '@'"
        ));
    }
    Ok(())
}

/// A path from a config: `credential:NAME` is the credential's file, any other path is taken from
/// `base` (the config's folder) when relative.
pub fn config_path(base: &Path, path: &Path) -> PathBuf {
    config_path_in(base, path, credentials_dir().as_deref())
}

/// [`config_path`] with the credentials folder given (for tests).
pub fn config_path_in(base: &Path, path: &Path, dir: Option<&Path>) -> PathBuf {
    match path.to_str().and_then(credential_name) {
        Some(name) if check_name(name).is_ok() => credential_path_in(name, dir),
        _ => base.join(path),
    }
}

/// A secret from a config (a password): `credential:NAME` is the credential's content (one
/// trailing newline removed), any other value is the secret itself.
pub fn secret(value: &str) -> Result<String, String> {
    secret_in(value, credentials_dir().as_deref())
}

/// [`secret`] with the credentials folder given (for tests).
pub fn secret_in(value: &str, dir: Option<&Path>) -> Result<String, String> {
    let Some(name) = credential_name(value) else {
        return Ok(value.to_string());
    };
    check_name(name)?;
    let path = credential_path_in(name, dir);
    let raw = std::fs::read(&path).map_err(|e| {
        format!(
            "credential {name}: cannot read {}: {e} (install it as {CREDENTIAL_STORE}/{name}, mode 0600 root)",
            path.display()
        )
    })?;
    let text = String::from_utf8(raw)
        .map_err(|_| format!("credential {name} ({}) is not UTF-8 text", path.display()))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if text.trim().is_empty() {
        return Err(format!(
            "credential {name} is empty: install it as {CREDENTIAL_STORE}/{name} (mode 0600 root)"
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_path_is_the_file_in_the_credentials_folder() {
        let base = Path::new("/etc/socer");
        let run = Path::new("/run/credentials/socer-site.service");
        assert_eq!(
            config_path_in(base, Path::new("credential:site.key"), Some(run)),
            run.join("site.key")
        );
        assert_eq!(
            config_path_in(base, Path::new("credential:site.key"), None),
            Path::new(CREDENTIAL_STORE).join("site.key")
        );
        // Ordinary paths keep their meaning.
        assert_eq!(
            config_path_in(base, Path::new("domus-1.key"), Some(run)),
            base.join("domus-1.key")
        );
        assert_eq!(
            config_path_in(base, Path::new("/srv/k.key"), Some(run)),
            Path::new("/srv/k.key")
        );
        // A name that would leave the folder is not a credential: it stays a (relative) path.
        assert_eq!(
            config_path_in(base, Path::new("credential:../shadow"), Some(run)),
            base.join("credential:../shadow")
        );
    }

    #[test]
    fn a_credential_secret_is_read_and_a_literal_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mqtt-password"), "s3cret pass\n").unwrap();
        assert_eq!(
            secret_in("credential:mqtt-password", Some(dir.path())).unwrap(),
            "s3cret pass"
        );
        assert_eq!(
            secret_in("plain-password", Some(dir.path())).unwrap(),
            "plain-password"
        );
        let missing = secret_in("credential:nope", Some(dir.path())).unwrap_err();
        assert!(
            missing.contains("credential nope") && missing.contains("/etc/socer/credentials/nope"),
            "{missing}"
        );
        // The unit's fallback for a file that was not installed is a lone newline.
        std::fs::write(dir.path().join("blank"), "\n").unwrap();
        let blank = secret_in("credential:blank", Some(dir.path())).unwrap_err();
        assert!(blank.contains("is empty"), "{blank}");
        let bad = secret_in("credential:a/b", Some(dir.path())).unwrap_err();
        assert!(bad.contains("credential name"), "{bad}");
    }
}
