//! The hub's live table of sites: which key opens a site's messages (two during a key rotation),
//! which key its acks and summaries are sealed with, and the pick-up of sites added to or removed
//! from `sites.d/` (or the main file) while the hub runs, without a restart.
//!
//! Never guesses a key and never drops a stored reading: a removed site's messages are refused
//! from then on, what the store holds of it stays.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::config::{CentralConfig, SiteConfig};
use crate::wire::{self, Envelope, WireError};

/// How often the hub looks for a change in its config and `sites.d` (SIGHUP: at once).
pub const RESCAN_EVERY: Duration = Duration::from_secs(3);

/// One site's keys.
#[derive(Debug)]
struct Entry {
    current: Vec<u8>,
    /// The key before a rotation, still accepted until the rotation is finished.
    previous: Option<Vec<u8>>,
    /// The last message that opened did so with `previous`: the site has not switched yet, so
    /// acks and summaries are sealed with `previous`. Starts true while a rotation is on (a
    /// site runs its old key until its new bundle is installed).
    on_previous: AtomicBool,
}

/// Site id → keys, shared by the ingest (opening), the acks and summaries (sealing) and the
/// reloader (replacing).
#[derive(Debug, Default)]
pub struct SiteKeys {
    inner: RwLock<HashMap<String, Entry>>,
}

/// A site's keys as the config gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub current: Vec<u8>,
    pub previous: Option<Vec<u8>>,
}

impl KeyPair {
    pub fn of(site: &SiteConfig) -> KeyPair {
        KeyPair {
            current: site.key.clone(),
            previous: site.previous_key.clone(),
        }
    }
}

impl SiteKeys {
    pub fn new(keys: impl IntoIterator<Item = (String, KeyPair)>) -> SiteKeys {
        let t = SiteKeys::default();
        t.replace(keys);
        t
    }

    /// From the configured sites.
    pub fn of(cfg: &CentralConfig) -> SiteKeys {
        SiteKeys::new(cfg.sites.iter().map(|s| (s.id.clone(), KeyPair::of(s))))
    }

    /// Put in place exactly these sites. A site whose keys did not change keeps which of them
    /// it was last seen using.
    pub fn replace(&self, keys: impl IntoIterator<Item = (String, KeyPair)>) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::new();
        for (site, pair) in keys {
            let entry = match g.remove(&site) {
                Some(e) if e.current == pair.current && e.previous == pair.previous => e,
                _ => Entry {
                    on_previous: AtomicBool::new(pair.previous.is_some()),
                    current: pair.current,
                    previous: pair.previous,
                },
            };
            next.insert(site, entry);
        }
        *g = next;
    }

    pub fn contains(&self, site: &str) -> bool {
        self.read().contains_key(site)
    }

    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// The keys of `site` now (`None`: not a configured site).
    pub fn pair(&self, site: &str) -> Option<KeyPair> {
        self.read().get(site).map(|e| KeyPair {
            current: e.current.clone(),
            previous: e.previous.clone(),
        })
    }

    /// The key to seal a message to `site` with: the one its last message used.
    pub fn sealing_key(&self, site: &str) -> Option<Vec<u8>> {
        let g = self.read();
        let e = g.get(site)?;
        match &e.previous {
            Some(p) if e.on_previous.load(Ordering::Relaxed) => Some(p.clone()),
            _ => Some(e.current.clone()),
        }
    }

    /// Whether `site`'s last message opened with its previous key (a rotation not yet taken up).
    pub fn uses_previous(&self, site: &str) -> bool {
        self.read()
            .get(site)
            .is_some_and(|e| e.previous.is_some() && e.on_previous.load(Ordering::Relaxed))
    }

    /// Open a message of `site` received on `topic`: with the current key, else (during a
    /// rotation) with the previous one. `None`: not a configured site. A failure is the current
    /// key's (`BadMac` for a message that opens with neither).
    pub fn open<T: for<'de> Deserialize<'de>>(
        &self,
        site: &str,
        topic: &str,
        env: &Envelope,
    ) -> Option<Result<T, WireError>> {
        let g = self.read();
        let e = g.get(site)?;
        let first = wire::open(&e.current, site, topic, env);
        if first.is_ok() {
            if e.on_previous.swap(false, Ordering::Relaxed) && e.previous.is_some() {
                tracing::info!(
                    "site {site} now uses its new key; finish the rotation with `socer central rotate-key {site} --finish`"
                );
            }
            return Some(first);
        }
        if let (Some(prev), Err(WireError::BadMac)) = (&e.previous, &first) {
            if let Ok(v) = wire::open(prev, site, topic, env) {
                e.on_previous.store(true, Ordering::Relaxed);
                return Some(Ok(v));
            }
        }
        Some(first)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The embedded broker's accounts (username → password), read by its login check at every
/// connect: changing it changes who may log in from the next connect on.
pub type Accounts = Arc<RwLock<HashMap<String, String>>>;

/// What changed between two configs, for the log and for what the hub applies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Sites whose keys changed (a rotation started, finished, or a key replaced).
    pub rekeyed: Vec<String>,
    /// Sites whose broker password changed.
    pub repassworded: Vec<String>,
    /// Parts the hub takes only at start, changed: members, meters, substations, plants…
    pub need_restart: Vec<&'static str>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// Compare the sites and the energy mapping of two configs (pure).
pub fn diff(old: &CentralConfig, new: &CentralConfig) -> Changes {
    let before: BTreeMap<&str, &SiteConfig> =
        old.sites.iter().map(|s| (s.id.as_str(), s)).collect();
    let after: BTreeMap<&str, &SiteConfig> = new.sites.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut c = Changes::default();
    for (id, s) in &after {
        match before.get(id) {
            None => c.added.push(id.to_string()),
            Some(o) => {
                if KeyPair::of(o) != KeyPair::of(s) {
                    c.rekeyed.push(id.to_string());
                }
                if o.password != s.password {
                    c.repassworded.push(id.to_string());
                }
            }
        }
    }
    c.removed = before
        .keys()
        .filter(|id| !after.contains_key(*id))
        .map(|id| id.to_string())
        .collect();
    let mut restart = |changed: bool, what: &'static str| {
        if changed {
            c.need_restart.push(what);
        }
    };
    restart(old.substations != new.substations, "substations");
    restart(old.members != new.members, "members");
    restart(old.meters != new.meters, "meter mapping");
    restart(old.plants != new.plants, "plants");
    restart(old.replacements != new.replacements, "meter replacements");
    let members_of = |cfg: &CentralConfig| -> BTreeMap<String, Vec<String>> {
        cfg.sites
            .iter()
            .map(|s| (s.id.clone(), s.members.clone()))
            .collect()
    };
    let (mo, mn) = (members_of(old), members_of(new));
    let kept_members_changed = mn.iter().any(|(id, m)| mo.get(id).is_some_and(|o| o != m));
    restart(kept_members_changed, "site members");
    restart(
        old.community != new.community
            || old.period_minutes != new.period_minutes
            || old.timezone != new.timezone,
        "[central]",
    );
    restart(
        format!("{:?}", old.broker) != format!("{:?}", new.broker),
        "[broker]",
    );
    restart(
        old.web.listen != new.web.listen || old.storage_path != new.storage_path,
        "[web] or [storage]",
    );
    c
}

/// What the reloader changes in the running hub.
pub struct Live {
    pub config_path: PathBuf,
    pub keys: Arc<SiteKeys>,
    pub sites: Arc<super::status::Sites>,
    /// The embedded broker's accounts (`None` with an external broker: Mosquitto reads its
    /// password file, refreshed by `socer central add-site`, on its own reload).
    pub accounts: Option<Accounts>,
    /// The hub's own account on the embedded broker (kept whatever the sites do).
    pub hub_account: Option<(String, String)>,
}

/// A cheap fingerprint of the config and its `sites.d`: names, sizes, modification times.
fn fingerprint(config: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut v = Vec::new();
    let mut add = |p: PathBuf| {
        let meta = std::fs::metadata(&p).ok();
        v.push((
            p,
            meta.as_ref().map_or(0, |m| m.len()),
            meta.and_then(|m| m.modified().ok()),
        ));
    };
    add(config.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(super::config::sites_dir(config)) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        paths.into_iter().for_each(&mut add);
    }
    v
}

impl Live {
    /// Put the sites of `cfg` in place: keys, status entries, broker accounts.
    pub fn apply(&self, cfg: &CentralConfig) {
        self.keys
            .replace(cfg.sites.iter().map(|s| (s.id.clone(), KeyPair::of(s))));
        self.sites
            .retain_and_add(cfg.sites.iter().map(|s| (s.id.as_str(), s.name.as_str())));
        if let Some(accounts) = &self.accounts {
            let mut users = super::broker::site_accounts(cfg);
            if let Some((user, password)) = &self.hub_account {
                if users.contains_key(user) {
                    tracing::error!(
                        "site {user:?} has the hub's broker account name: it cannot log in (rename it)"
                    );
                }
                users.insert(user.clone(), password.clone());
            }
            *accounts.write().unwrap_or_else(|e| e.into_inner()) = users;
        }
    }

    /// Log what a reload changed, saying what takes effect now and what at the next restart.
    fn report(&self, c: &Changes, started: &CentralConfig) {
        for id in &c.added {
            tracing::info!(
                "site {id} added: its messages are accepted and acknowledged from now on{}",
                if self.accounts.is_some() {
                    ", and it may log in to the embedded broker"
                } else {
                    " (reload the external broker for its account: `socer central add-site` refreshed its files)"
                }
            );
        }
        for id in &c.removed {
            tracing::info!(
                "site {id} removed: its messages are refused from now on{}; what the hub stored of it is kept",
                if self.accounts.is_some() {
                    " and it cannot log in again (a connection it holds stays until it drops)"
                } else {
                    ""
                }
            );
        }
        for id in &c.rekeyed {
            match self.keys.pair(id) {
                Some(KeyPair {
                    previous: Some(_), ..
                }) => tracing::info!(
                    "site {id}: key rotation started: its messages are accepted with its new and its previous key"
                ),
                _ => tracing::info!("site {id}: key replaced; only the current key is accepted"),
            }
        }
        for id in &c.repassworded {
            tracing::info!("site {id}: broker password changed");
        }
        if !c.need_restart.is_empty() {
            tracing::warn!(
                "config changed in {}: these take effect only when the hub restarts (sites, keys and broker accounts were picked up now)",
                c.need_restart.join(", ")
            );
        }
        if !c.added.is_empty() && !started.meters.iter().any(|m| c.added.contains(&m.site)) {
            tracing::info!(
                "the new site's readings are stored and acknowledged; for the energy figures map its meters ([[member]], [[meter]] in {}) and restart the hub",
                self.config_path.display()
            );
        }
    }
}

/// Watch the config and `sites.d` (every [`RESCAN_EVERY`], and at once on SIGHUP): on a change,
/// load the whole config; if it is valid, put its sites in place; if not, say why and keep the
/// sites as they were.
pub async fn watch(live: Live, started: CentralConfig) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(
                "no SIGHUP handler ({e}): the config is rescanned every {RESCAN_EVERY:?}"
            );
            None
        }
    };
    // Nothing seen yet: the first look loads the config again, so that a site added between
    // the hub's start and this task's is not missed.
    let mut seen = Vec::new();
    let mut current = started.clone();
    let mut tick = tokio::time::interval(RESCAN_EVERY);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = fingerprint(&live.config_path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match super::config::load(&live.config_path) {
            Ok(cfg) => {
                let c = diff(&current, &cfg);
                live.apply(&cfg);
                let since_start = diff(&started, &cfg);
                if c.is_empty() {
                    if forced {
                        tracing::info!("SIGHUP: config re-read, no site changed");
                    }
                } else {
                    live.report(
                        &Changes {
                            need_restart: since_start.need_restart,
                            ..c
                        },
                        &started,
                    );
                }
                current = cfg;
            }
            Err(e) => {
                tracing::error!("config changed but is not valid, sites kept as they were: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ack, Topics};

    fn pair(current: &[u8], previous: Option<&[u8]>) -> KeyPair {
        KeyPair {
            current: current.to_vec(),
            previous: previous.map(<[u8]>::to_vec),
        }
    }

    const CENTRAL: &str =
        "[central]\ncommunity = \"socer\"\nname = \"t\"\nlatitude = 46.1\nlongitude = 9.8\n\
        [storage]\npath = \"db\"\n[[substation]]\nid = \"S1\"\nname = \"Nord\"\n";

    fn site_file(id: &str, key: &str, previous: Option<&str>) -> String {
        format!(
            "[[site]]\nid = \"{id}\"\nkey = \"{key}\"\npassword = \"pw\"\n{}",
            previous.map_or(String::new(), |p| format!("previous_key = \"{p}\"\n"))
        )
    }

    #[test]
    fn a_reload_tells_sites_added_removed_rekeyed_from_what_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("central.toml");
        std::fs::write(&main, CENTRAL).unwrap();
        let before = super::super::config::load(&main).unwrap();
        let sites_d = dir.path().join("sites.d");
        std::fs::create_dir(&sites_d).unwrap();
        let (k1, k2) = ("11".repeat(32), "22".repeat(32));
        std::fs::write(
            sites_d.join("domus-9.toml"),
            site_file("domus-9", &k1, None),
        )
        .unwrap();
        let added = super::super::config::load(&main).unwrap();
        let c = diff(&before, &added);
        assert_eq!(c.added, vec!["domus-9".to_string()]);
        assert!(c.removed.is_empty() && c.rekeyed.is_empty() && c.need_restart.is_empty());
        assert_eq!(
            added.sites[0].file.as_deref(),
            Some(sites_d.join("domus-9.toml").as_path())
        );

        std::fs::write(
            sites_d.join("domus-9.toml"),
            site_file("domus-9", &k2, Some(&k1)),
        )
        .unwrap();
        let rotated = super::super::config::load(&main).unwrap();
        let c = diff(&added, &rotated);
        assert_eq!(c.rekeyed, vec!["domus-9".to_string()]);
        assert!(c.added.is_empty() && c.removed.is_empty());
        let keys = SiteKeys::of(&rotated);
        assert_eq!(
            keys.pair("domus-9"),
            Some(pair(
                &hex::decode(&k2).unwrap(),
                Some(&hex::decode(&k1).unwrap())
            ))
        );

        std::fs::write(
            &main,
            format!("{CENTRAL}[[substation]]\nid = \"S2\"\nname = \"Sud\"\n"),
        )
        .unwrap();
        std::fs::remove_file(sites_d.join("domus-9.toml")).unwrap();
        let removed = super::super::config::load(&main).unwrap();
        let c = diff(&rotated, &removed);
        assert_eq!(c.removed, vec!["domus-9".to_string()]);
        assert_eq!(c.need_restart, vec!["substations"]);
    }

    #[test]
    fn during_a_rotation_both_keys_open_and_acks_follow_the_key_last_used() {
        let t = Topics::new("socer");
        let topic = t.readings("domus-9");
        let (old, new) = (
            b"old-key-0123456789".as_slice(),
            b"new-key-0123456789".as_slice(),
        );
        let keys = SiteKeys::new([("domus-9".to_string(), pair(new, Some(old)))]);
        // Before the site has switched, its acks are sealed with the old key.
        assert_eq!(keys.sealing_key("domus-9").as_deref(), Some(old));
        let open = |k: &[u8]| {
            let env =
                wire::open_unverified(&wire::seal(k, "domus-9", &topic, &Ack::default())).unwrap();
            keys.open::<Ack>("domus-9", &topic, &env).unwrap()
        };
        assert!(open(old).is_ok());
        assert_eq!(keys.sealing_key("domus-9").as_deref(), Some(old));
        assert!(open(new).is_ok());
        assert_eq!(keys.sealing_key("domus-9").as_deref(), Some(new));
        assert!(!keys.uses_previous("domus-9"));
        // A third key opens nothing and changes nothing.
        assert_eq!(open(b"other-key-0123456789"), Err(WireError::BadMac));
        assert_eq!(keys.sealing_key("domus-9").as_deref(), Some(new));
        // An unchanged reload keeps what was learnt; finishing the rotation drops the old key.
        keys.replace([("domus-9".to_string(), pair(new, Some(old)))]);
        assert_eq!(keys.sealing_key("domus-9").as_deref(), Some(new));
        keys.replace([("domus-9".to_string(), pair(new, None))]);
        assert_eq!(open(old), Err(WireError::BadMac));
        assert!(open(new).is_ok());
        // Removed: unknown.
        keys.replace([]);
        assert!(!keys.contains("domus-9"));
        assert_eq!(keys.sealing_key("domus-9"), None);
    }
}
