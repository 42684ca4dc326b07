//! Who a daemon is on the broker: a random instance id made once and kept in its state folder,
//! and the MQTT client ids built from it.
//!
//! A client id must be the same on every connection a daemon opens (so that a reconnect takes
//! over its own session, on whichever node of a cluster) and unique across communities and
//! identical Pi images (so that nobody else's connection takes it): never a PID.

use std::io::Write;
use std::path::Path;

/// The file in a site's state folder that holds its instance id (the hub keeps its own next to
/// its database: `{database}.instance-id`).
pub const FILE: &str = "instance-id";

/// Hex digits of a new instance id.
const LEN: usize = 12;

/// Whether `s` is an instance id we would have made (lowercase hex, [`LEN`] digits).
fn well_formed(s: &str) -> bool {
    s.len() == LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The instance id kept in the file `path`, made (and written, before it is used) on first
/// start. A file that does not hold a well-formed id is replaced, with a warning.
pub fn load_or_create(path: &Path) -> std::io::Result<String> {
    // At most a few bytes are read: a huge, binary or not-UTF-8 file is damaged, never fatal.
    let read = std::fs::File::open(path).and_then(|f| {
        let mut head = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, 4 * LEN as u64), &mut head)?;
        Ok(head)
    });
    match read {
        Ok(head) => match std::str::from_utf8(&head).map(str::trim) {
            Ok(t) if well_formed(t) => return Ok(t.to_string()),
            _ => tracing::warn!("{}: not an instance id; making a new one", path.display()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; LEN / 2];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let id = hex::encode(bytes);
    let tmp = path.with_extension("instance-tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(id)
}

/// What a connection is for, in its client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A site agent's connection to the community broker.
    Site,
    /// A site agent's connection to Home Assistant's broker (when it is another broker).
    HomeAssistant,
    /// The hub's subscribing connection.
    Hub,
    /// The hub's publishing connection.
    HubPublisher,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Site => "site",
            Role::HomeAssistant => "ha",
            Role::Hub => "hub",
            Role::HubPublisher => "pub",
        }
    }
}

/// The client id `{account}.{community}.{role}[.{site}].{instance}` (contract v2, client ids
/// rev. 2). It starts with the account and a `.`, so the embedded broker's rule (an account owns
/// its name and every id `{account}.…`) binds it to its account; the community, role, site and
/// instance make it unique across communities, images and a daemon's connections.
pub fn client_id(
    account: &str,
    community: &str,
    role: Role,
    site: Option<&str>,
    instance: &str,
) -> String {
    match site {
        Some(s) => format!("{account}.{community}.{}.{s}.{instance}", role.label()),
        None => format!("{account}.{community}.{}.{instance}", role.label()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_id_is_made_once_and_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state").join(FILE);
        let a = load_or_create(&file).unwrap();
        assert!(well_formed(&a), "{a}");
        assert_eq!(load_or_create(&file).unwrap(), a);
        // Another install (another file) gets another id.
        assert_ne!(load_or_create(&dir.path().join("other")).unwrap(), a);
        // A damaged file is replaced by a well-formed id, which is then kept.
        std::fs::write(&file, "garbage\n").unwrap();
        let b = load_or_create(&file).unwrap();
        assert!(well_formed(&b) && b != "garbage");
        assert_eq!(load_or_create(&file).unwrap(), b);
        // Not UTF-8, or huge with a valid id in front: replaced too, never an error.
        for hostile in [
            vec![0xff, 0xfe, 0x00, 0x80],
            format!("{b}{}", "x".repeat(1 << 20)).into_bytes(),
        ] {
            std::fs::write(&file, &hostile).unwrap();
            let c = load_or_create(&file).unwrap();
            assert!(well_formed(&c));
            assert_eq!(load_or_create(&file).unwrap(), c);
        }
    }

    #[test]
    fn client_ids_differ_by_community_role_site_and_instance_and_start_with_the_account() {
        let id = |acc, com, role, site, inst| client_id(acc, com, role, site, inst);
        let base = id(
            "domus-1",
            "socer",
            Role::Site,
            Some("domus-1"),
            "a1b2c3d4e5f6",
        );
        assert_eq!(base, "domus-1.socer.site.domus-1.a1b2c3d4e5f6");
        for other in [
            id(
                "domus-1",
                "valtellina",
                Role::Site,
                Some("domus-1"),
                "a1b2c3d4e5f6",
            ),
            id(
                "domus-1",
                "socer",
                Role::HomeAssistant,
                Some("domus-1"),
                "a1b2c3d4e5f6",
            ),
            id(
                "domus-1",
                "socer",
                Role::Site,
                Some("domus-2"),
                "a1b2c3d4e5f6",
            ),
            id(
                "domus-1",
                "socer",
                Role::Site,
                Some("domus-1"),
                "000000000000",
            ),
        ] {
            assert_ne!(other, base);
        }
        let hub = id("central", "socer", Role::Hub, None, "a1b2c3d4e5f6");
        let publ = id("central", "socer", Role::HubPublisher, None, "a1b2c3d4e5f6");
        assert_ne!(hub, publ);
        let accounts = ["central", "domus-1", "domus-10"];
        for (cid, acc) in [(&base, "domus-1"), (&hub, "central"), (&publ, "central")] {
            assert_eq!(
                crate::central::broker::client_id_owner(cid, accounts),
                Some(acc)
            );
        }
    }
}
