//! Files that hold secrets (keys, broker passwords) and the random hex they are made of.
//!
//! A file is created with its final mode from the start (`O_EXCL`, never briefly readable by
//! others) and, to replace one, written beside it and renamed over it, so that a reader sees the
//! old file or the new one, never a half-written or wider-open one.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

/// `bytes` random bytes from the operating system, as lowercase hex (passwords, keys).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Create `path` (it must not exist) with exactly `mode`, write `text` and sync it.
pub fn create_new(path: &Path, text: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o600)
        .open(path)?;
    f.write_all(text)?;
    f.sync_all()?;
    // Created owner-only; the umask may also have taken bits off: set exactly the mode wanted.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The hidden temporary beside `path` that [`replace`] renames over it (loaders that read a
/// folder skip dot files).
pub fn temporary_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replace (or create) `path` with `text` and `mode`, atomically. The new file keeps the owner
/// and group of the one it replaces where the caller may set them (an admin's `chgrp mosquitto
/// passwd` survives a refresh); `prepare` may then act on the temporary file before the rename.
pub fn replace(
    path: &Path,
    text: &[u8],
    mode: u32,
    prepare: impl FnOnce(&Path),
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let tmp = temporary_for(path);
    let _ = std::fs::remove_file(&tmp);
    create_new(&tmp, text, mode)?;
    if let Ok(old) = std::fs::metadata(path) {
        // Best effort: only root may give a file away; a group the caller is in works too.
        let _ = std::os::unix::fs::chown(&tmp, Some(old.uid()), Some(old.gid()));
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode));
    }
    prepare(&tmp);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_secret_has_its_mode_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace(&p, b"new", 0o640, |_| {}).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(!temporary_for(&p).exists());
        // create_new refuses to replace.
        assert!(create_new(&p, b"x", 0o600).is_err());
        assert_eq!(random_hex(16).len(), 32);
        assert_ne!(random_hex(16), random_hex(16));
    }
}
