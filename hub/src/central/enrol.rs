//! `socer central add-site | remove-site | rotate-key`: enrol a building with one command.
//!
//! The hub's side of a site is one file, `sites.d/ID.toml` beside the central config (its key
//! and broker password; the hub picks it up live, `central::sites`); the site's side is a bundle
//! folder (its `site.toml` from the commented example, its key and password files, 0600) for the
//! technician to copy to the Raspberry Pi. Keys and passwords come from the operating system's
//! random source. Nothing here ever overwrites a key or deletes a stored reading.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::config::{self, BrokerConfig, CentralConfig};
use crate::files::random_hex;

/// Where the hub's config is when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/socer/central.toml";
/// Longest site name accepted, characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The commented site example the bundle's `site.toml` is filled in from.
const SITE_EXAMPLE: &str = include_str!("../../../config/site.example.toml");

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Enrol a site: make its key and broker password, add `sites.d/ID.toml` to the hub's
    /// config, write the bundle for its Raspberry Pi, refresh the Mosquitto files.
    AddSite(AddSite),
    /// Remove an enrolled site (`sites.d/ID.toml`): the hub refuses it from then on; what the
    /// hub stored of it is kept.
    RemoveSite(RemoveSite),
    /// Give a site a new key without losing unacknowledged readings: the hub accepts the old and
    /// the new key until `--finish`.
    RotateKey(RotateKey),
}

#[derive(Debug, clap::Args)]
pub struct AddSite {
    /// The site's id: lowercase letters, digits, '-' or '_' (it is part of MQTT topics).
    pub id: String,
    /// Shown on the dashboard and the resident page.
    #[arg(long)]
    pub name: String,
    /// The primary substation the building is on (a [[substation]] id of the central config).
    #[arg(long)]
    pub substation: String,
    /// The central config (default: /etc/socer/central.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to write the site's bundle (default: ./ID); must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The broker URL the site dials (default: from the hub's [broker], with this machine's
    /// host name for an address that listens everywhere).
    #[arg(long, value_name = "URL")]
    pub broker_url: Option<String>,
    /// Also (re)write the Mosquitto files into DIR (with an external broker: default
    /// `mosquitto/` beside the config).
    #[arg(long, value_name = "DIR")]
    pub mosquitto_files: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RemoveSite {
    /// The site's id.
    pub id: String,
    /// The central config (default: /etc/socer/central.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also (re)write the Mosquitto files into DIR (see add-site).
    #[arg(long, value_name = "DIR")]
    pub mosquitto_files: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RotateKey {
    /// The site's id.
    pub id: String,
    /// The central config (default: /etc/socer/central.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to write the site's new key file (default: ./ID-new-key); must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// End the rotation: drop the previous key (once the hub logged that the site uses its new
    /// key; a site still on the old key is refused from then on, its readings wait on its disk).
    #[arg(long)]
    pub finish: bool,
}

/// Run a command; `config` is `socer central --config` when given before the command.
pub fn run(cmd: Command, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let pick = |own: &Option<PathBuf>| {
        own.clone()
            .or_else(|| config.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    };
    match cmd {
        Command::AddSite(a) => add_site(&a, &pick(&a.config)),
        Command::RemoveSite(a) => remove_site(&a, &pick(&a.config)),
        Command::RotateKey(a) => rotate_key(&a, &pick(&a.config)),
    }
    .map(|report| {
        print!("{report}");
        ExitCode::SUCCESS
    })
}

// ---- rules (pure) ----

/// Why a site id cannot be enrolled in `cfg` (`None`: it can). The site agent's rule (lowercase
/// letters, digits, `-`, `_`; nothing a topic, TOML or a file name could be steered with), at
/// most [`config::MAX_SITE_ID_BYTES`], not an id already used, not one of the hub's accounts.
pub fn id_problem(id: &str, cfg: &CentralConfig) -> Option<String> {
    if !crate::site::config::valid_id(id) || id.len() > config::MAX_SITE_ID_BYTES {
        return Some(format!(
            "site id {id:?}: use 1 to {} lowercase letters, digits, '-' or '_' (it is part of MQTT topics and file names)",
            config::MAX_SITE_ID_BYTES
        ));
    }
    if let Some(s) = cfg.site(id) {
        let place = s
            .file
            .as_ref()
            .map_or("the main config".to_string(), |f| f.display().to_string());
        return Some(format!("site {id:?} is already enrolled (in {place})"));
    }
    let hub_user = match &cfg.broker {
        BrokerConfig::Embedded { hub_user, .. } => hub_user.clone(),
        BrokerConfig::External { username, .. } => username.clone(),
    };
    if id == hub_user || id == super::broker::publisher_account(&hub_user) {
        return Some(format!(
            "site id {id:?} is the hub's own broker account: choose another"
        ));
    }
    None
}

/// Why a site name is refused (`None`: fine): 1 to [`MAX_NAME_CHARS`] characters, no control
/// characters (line breaks, escapes) and no bidirectional-text overrides.
pub fn name_problem(name: &str) -> Option<String> {
    let n = name.chars().count();
    if name.trim().is_empty() || n > MAX_NAME_CHARS {
        return Some(format!(
            "--name: give 1 to {MAX_NAME_CHARS} characters (found {n})"
        ));
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_control()
            || ('\u{202a}'..='\u{202e}').contains(c)
            || ('\u{2066}'..='\u{2069}').contains(c)
    }) {
        return Some(format!(
            "--name: no control or text-direction characters (found U+{:04X})",
            c as u32
        ));
    }
    None
}

/// Why a substation is refused (`None`: it is one of the config's).
pub fn substation_problem(sub: &str, cfg: &CentralConfig) -> Option<String> {
    if cfg.substations.iter().any(|s| s.id == sub) {
        return None;
    }
    let known: Vec<&str> = cfg.substations.iter().map(|s| s.id.as_str()).collect();
    Some(format!(
        "--substation {sub:?} is not a [[substation]] of the central config (known: {}). A new \
         substation goes into the main config as a [[substation]] and needs a hub restart",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// A TOML string literal of `s` (quoted and escaped).
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The hub's `sites.d/ID.toml` for a site (pure).
pub fn site_file_text(
    id: &str,
    name: &str,
    substation: &str,
    key_hex: &str,
    password: &str,
) -> String {
    format!(
        "# Enrolled with `socer central add-site` on {now}. One file per site; the hub picks up\n\
         # changes to sites.d within seconds (SIGHUP: at once). Holds the site's key and broker\n\
         # password: readable by the hub only (0640 root:socer or 0600).\n\
         [[site]]\n\
         id = {id}\n\
         name = {name}\n\
         substation = {substation}\n\
         key = {key}\n\
         password = {password}\n\
         # The [[member]] ids of the central config whose PODs this site's meters measure:\n\
         # members = [\"...\"]\n",
        now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        id = q(id),
        name = q(name),
        substation = q(substation),
        key = q(key_hex),
        password = q(password),
    )
}

/// The bundle's `site.toml`: the commented site example with this site's values filled in
/// (comments kept). Its buses and meters are the example's, to be edited on the Pi (`socer scan`).
pub fn site_toml(
    id: &str,
    community: &str,
    name: &str,
    broker_url: &str,
    hub_public_key: Option<&str>,
) -> anyhow::Result<String> {
    // The password goes in its own file (0600), on the example's password line.
    let example = SITE_EXAMPLE.replacen(
        "\npassword = \"credential:mqtt-password\"\n",
        &format!("\npassword_file = {}\n", q(&format!("{id}.password"))),
        1,
    );
    let mut doc: toml_edit::DocumentMut = example
        .parse()
        .context("the built-in site example does not parse")?;
    doc["site"]["id"] = toml_edit::value(id);
    doc["site"]["community"] = toml_edit::value(community);
    doc["site"]["name"] = toml_edit::value(name);
    let mqtt = doc["mqtt"]
        .as_table_mut()
        .context("the built-in site example has no [mqtt]")?;
    mqtt["url"] = toml_edit::value(broker_url);
    mqtt["username"] = toml_edit::value(id);
    mqtt.remove("password");
    mqtt["password_file"] = toml_edit::value(format!("{id}.password"));
    mqtt["key_file"] = toml_edit::value(format!("{id}.key"));
    match hub_public_key {
        Some(k) => mqtt["hub_public_key"] = toml_edit::value(k),
        None => {
            mqtt.remove("hub_public_key");
        }
    }
    if !broker_url.starts_with("mqtts://") {
        mqtt.remove("ca_file");
    }
    Ok(doc.to_string())
}

// ---- files ----

/// Write a new file with `mode` from the start (never briefly readable by others); refuses to
/// replace one.
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    crate::files::create_new(path, text.as_bytes(), mode)
        .with_context(|| format!("{}: cannot create", path.display()))
}

/// Replace `path` with `text` atomically (a hidden temporary file renamed over it, which the
/// hub's loader ignores), with `mode` and, when run as root, the owner of `like`.
fn write_replace(path: &Path, text: &str, mode: u32, like: &Path) -> anyhow::Result<()> {
    crate::files::replace(path, text.as_bytes(), mode, |tmp| same_owner(tmp, like))
        .with_context(|| format!("{}: cannot write", path.display()))
}

/// When run as root, give `path` the owner and group of `like` (the hub's config), so that the
/// hub, running as its own user, reads what root wrote.
fn same_owner(path: &Path, like: &Path) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    if let Ok(m) = std::fs::metadata(like) {
        if let Err(e) = std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid())) {
            eprintln!("warning: cannot chown {}: {e}", path.display());
        }
    }
}

/// A folder to write secrets into: created 0700, or an existing empty one.
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut e) => {
            if e.next().is_some() {
                bail!(
                    "{} exists and is not empty: give another --out (nothing is overwritten)",
                    dir.display()
                );
            }
        }
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?,
    }
    Ok(())
}

/// This machine's host name (for a broker that listens on every interface).
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&buf[..end])
        .ok()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// The URL a site dials, from the hub's [broker].
fn default_broker_url(cfg: &CentralConfig) -> String {
    let host = |addr: std::net::SocketAddr| {
        if addr.ip().is_unspecified() {
            host_name().unwrap_or_else(|| "127.0.0.1".into())
        } else {
            addr.ip().to_string()
        }
    };
    match &cfg.broker {
        BrokerConfig::External { url, .. } => url.clone(),
        BrokerConfig::Embedded { tls: Some(t), .. } => {
            format!("mqtts://{}:{}", host(t.listen), t.listen.port())
        }
        BrokerConfig::Embedded { listen, .. } => {
            format!("mqtt://{}:{}", host(*listen), listen.port())
        }
    }
}

/// Where the Mosquitto files go: `--mosquitto-files`, or with an external broker `mosquitto/`
/// beside the config; `None` with the embedded broker and no flag.
fn mosquitto_dir(cfg: &CentralConfig, config: &Path, flag: &Option<PathBuf>) -> Option<PathBuf> {
    match (flag, &cfg.broker) {
        (Some(d), _) => Some(d.clone()),
        (None, BrokerConfig::External { .. }) => {
            Some(config.parent().unwrap_or(Path::new(".")).join("mosquitto"))
        }
        (None, BrokerConfig::Embedded { .. }) => None,
    }
}

fn refresh_mosquitto(
    cfg: &CentralConfig,
    dir: Option<PathBuf>,
    out: &mut String,
) -> anyhow::Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let written = super::broker::write_mosquitto_files(cfg, &dir)?;
    out.push_str(&format!(
        "Mosquitto files refreshed in {}: make Mosquitto read them again (`systemctl reload \
         mosquitto` or `kill -HUP` its pid)\n",
        dir.display()
    ));
    for p in written {
        out.push_str(&format!("  {}\n", p.display()));
    }
    Ok(())
}

/// What the running hub does with a site file change, for the command's answer (`added`: a new
/// site, whose energy figures wait for its meters to be mapped).
fn live_note(cfg: &CentralConfig, added: bool) -> String {
    let broker = match &cfg.broker {
        BrokerConfig::Embedded { .. } => ", and its embedded broker's accounts",
        BrokerConfig::External { .. } => " (Mosquitto's accounts: once it is reloaded)",
    };
    let mut s = format!(
        "A running hub picks this up within {} s without a restart (or at once: `kill -HUP` \
         its pid): site keys, acks and status{broker}.\n",
        super::sites::RESCAN_EVERY.as_secs()
    );
    if added {
        s.push_str(
            "Its energy figures need the site's meters mapped ([[member]], [[meter]] in the main \
             config) and a hub restart.\n",
        );
    }
    s
}

fn load(config_path: &Path) -> anyhow::Result<CentralConfig> {
    config::load(config_path).with_context(|| format!("{}", config_path.display()))
}

/// Load the config again after a change to `file`; if it is no longer valid, undo with `undo`.
fn load_or_undo(
    config_path: &Path,
    undo: impl FnOnce() -> std::io::Result<()>,
) -> anyhow::Result<CentralConfig> {
    match config::load(config_path) {
        Ok(c) => Ok(c),
        Err(e) => {
            let undone = undo();
            bail!(
                "the config would no longer be valid, change undone{}:\n{e}",
                undone
                    .err()
                    .map(|u| format!(" (undo failed: {u})"))
                    .unwrap_or_default()
            )
        }
    }
}

// ---- the commands ----

fn add_site(a: &AddSite, config_path: &Path) -> anyhow::Result<String> {
    let cfg = load(config_path)?;
    let dir = config::sites_dir(config_path);
    let file = dir.join(format!("{}.toml", a.id));
    let problems: Vec<String> = [
        id_problem(&a.id, &cfg),
        name_problem(&a.name),
        substation_problem(&a.substation, &cfg),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    if file.exists() {
        bail!("{} exists already: nothing overwritten", file.display());
    }
    let broker_url = a
        .broker_url
        .clone()
        .unwrap_or_else(|| default_broker_url(&cfg));
    crate::site::config::parse_mqtt_url(&broker_url)
        .map_err(|e| anyhow::anyhow!("--broker-url: {e}"))?;
    let out_dir = a.out.clone().unwrap_or_else(|| PathBuf::from(&a.id));
    fresh_dir(&out_dir)?;

    let key = random_hex(32);
    let password = random_hex(18);
    let hub_public = cfg
        .signing_key
        .as_ref()
        .map(|k| crate::wire::public_key_hex(&k.verifying_key()));
    let site_text = site_toml(
        &a.id,
        &cfg.community,
        &a.name,
        &broker_url,
        hub_public.as_deref(),
    )?;

    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        same_owner(&dir, config_path);
    }
    write_replace(
        &file,
        &site_file_text(&a.id, &a.name, &a.substation, &key, &password),
        0o640,
        config_path,
    )?;
    let cfg = load_or_undo(config_path, || std::fs::remove_file(&file))?;

    write_new(&out_dir.join("site.toml"), &site_text, 0o640)?;
    write_new(
        &out_dir.join(format!("{}.key", a.id)),
        &format!("{key}\n"),
        0o600,
    )?;
    write_new(
        &out_dir.join(format!("{}.password", a.id)),
        &format!("{password}\n"),
        0o600,
    )?;

    let mut out = format!(
        "site {id} enrolled: {file}\n\
         bundle for its Raspberry Pi in {out}:\n  site.toml  (broker {broker_url}; edit its [[bus]] and [[meter]] with `socer scan`)\n  {id}.key  {id}.password  (0600)\n\
         On the Pi: copy the three files into /etc/socer/ (key and password readable by the agent only), \
         edit the meters, `socer check /etc/socer/site.toml`, start the agent.\n",
        id = a.id,
        file = file.display(),
        out = out_dir.display(),
    );
    if hub_public.is_none() {
        out.push_str(
            "note: the hub has no [keys] signing_key_file, so site.toml has no hub_public_key and the site will show no signal\n",
        );
    }
    refresh_mosquitto(
        &cfg,
        mosquitto_dir(&cfg, config_path, &a.mosquitto_files),
        &mut out,
    )?;
    out.push_str(&live_note(&cfg, true));
    Ok(out)
}

/// The `sites.d` file of an enrolled site, or why the command cannot touch it.
fn enrolled_file(cfg: &CentralConfig, config_path: &Path, id: &str) -> anyhow::Result<PathBuf> {
    match cfg.site(id) {
        None => bail!("no site {id:?} in {} or its sites.d", config_path.display()),
        Some(s) => match &s.file {
            Some(f) => Ok(f.clone()),
            None => bail!(
                "site {id:?} is a [[site]] of {} itself, not a sites.d file: edit that entry by hand \
                 (or move it to {}/{id}.toml first)",
                config_path.display(),
                config::sites_dir(config_path).display()
            ),
        },
    }
}

fn remove_site(a: &RemoveSite, config_path: &Path) -> anyhow::Result<String> {
    let cfg = load(config_path)?;
    let file = enrolled_file(&cfg, config_path, &a.id)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    // Set aside (a hidden name the loader ignores) and check that the rest still holds: a
    // [[member]] or [[meter]] of the main file naming the site would make it invalid.
    let aside = dir.join(format!(".{}.toml.removed", a.id));
    std::fs::rename(&file, &aside).with_context(|| format!("{}: cannot remove", file.display()))?;
    let cfg = load_or_undo(config_path, || std::fs::rename(&aside, &file))?;
    std::fs::remove_file(&aside).with_context(|| format!("{}: cannot remove", aside.display()))?;
    let mut out = format!(
        "site {id} removed ({file} deleted): the hub refuses its messages and broker login from now on.\n\
         What the hub stored of it (readings, periods, its ack) is kept in {store}; \
         the site's own outbox keeps what was never acknowledged.\n",
        id = a.id,
        file = file.display(),
        store = cfg.storage_path.display(),
    );
    refresh_mosquitto(
        &cfg,
        mosquitto_dir(&cfg, config_path, &a.mosquitto_files),
        &mut out,
    )?;
    out.push_str(&live_note(&cfg, false));
    Ok(out)
}

fn rotate_key(a: &RotateKey, config_path: &Path) -> anyhow::Result<String> {
    let cfg = load(config_path)?;
    let file = enrolled_file(&cfg, config_path, &a.id)?;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{}: not TOML", file.display()))?;
    let entry = doc["site"]
        .as_array_of_tables_mut()
        .and_then(|t| t.get_mut(0))
        .with_context(|| format!("{}: no [[site]]", file.display()))?;
    let Some(old_key) = entry
        .get("key")
        .and_then(|k| k.as_str())
        .map(str::to_string)
    else {
        bail!(
            "{}: the site's key is not given inline (key = \"…\"): rotate a key_file by hand",
            file.display()
        );
    };
    let rotating = entry.contains_key("previous_key");
    let mut out = String::new();
    if a.finish {
        if !rotating {
            bail!(
                "site {:?} has no rotation to finish (no previous_key)",
                a.id
            );
        }
        entry.remove("previous_key");
        write_replace(&file, &doc.to_string(), 0o640, config_path)?;
        load_or_undo(config_path, || std::fs::write(&file, &text))?;
        out.push_str(&format!(
            "site {id}: rotation finished, only its current key is accepted ({file}).\n",
            id = a.id,
            file = file.display()
        ));
        out.push_str(&live_note(&cfg, false));
        return Ok(out);
    }
    if rotating {
        bail!(
            "site {id:?} is in a key rotation already: once the hub logs \"site {id} now uses its \
             new key\", run `socer central rotate-key {id} --finish`, then rotate again",
            id = a.id
        );
    }
    let out_dir = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}-new-key", a.id)));
    fresh_dir(&out_dir)?;
    let new_key = random_hex(32);
    entry["key"] = toml_edit::value(&new_key);
    entry["previous_key"] = toml_edit::value(&old_key);
    // Write the site's key first: a crash in between leaves the hub on the old key only.
    let key_path = out_dir.join(format!("{}.key", a.id));
    write_new(&key_path, &format!("{new_key}\n"), 0o600)?;
    write_replace(&file, &doc.to_string(), 0o640, config_path)?;
    let cfg = load_or_undo(config_path, || std::fs::write(&file, &text))?;
    out.push_str(&format!(
        "site {id}: new key in {key} (0600). The hub now accepts the new and the previous key.\n\
         On the Pi: replace the site's key_file with it and restart the agent; nothing \
         unacknowledged is lost (it is sent again under the new key). When the hub logs \"site \
         {id} now uses its new key\", run `socer central rotate-key {id} --finish`.\n",
        id = a.id,
        key = key_path.display()
    ));
    out.push_str(&live_note(&cfg, false));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused_and_ordinary_ones_taken() {
        for bad in [
            "",
            "   ",
            "a\nb",
            "x\"\n[[site]]\nid = \"evil\"",
            "tab\there",
            "bell\u{7}",
            "rtl\u{202e}txt",
            &"n".repeat(MAX_NAME_CHARS + 1),
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?} accepted");
        }
        for good in [
            "Condominio Via Mazzini 12",
            "Comune di Sondrio — scuola",
            "l'Osteria \"da Gino\"",
        ] {
            assert_eq!(name_problem(good), None, "{good:?}");
        }
    }

    #[test]
    fn the_site_file_quotes_what_it_is_given() {
        let t = site_file_text("domus-9", "a \"quoted\" \\ name", "AC1", "00ff", "pw");
        let v: toml::Table = t.parse().unwrap();
        let site = &v["site"].as_array().unwrap()[0];
        assert_eq!(site["name"].as_str(), Some("a \"quoted\" \\ name"));
        assert_eq!(site["id"].as_str(), Some("domus-9"));
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn the_bundle_config_is_the_example_filled_in_with_its_comments() {
        let t = site_toml(
            "domus-9",
            "socer",
            "Casa",
            "mqtt://hub.lan:1883",
            Some(&"ab".repeat(32)),
        )
        .unwrap();
        assert!(t.contains("# The community broker"), "comments kept");
        let v: toml::Table = t.parse().unwrap();
        assert_eq!(v["site"]["id"].as_str(), Some("domus-9"));
        assert_eq!(
            v["mqtt"]["password_file"].as_str(),
            Some("domus-9.password")
        );
        assert_eq!(v["mqtt"]["key_file"].as_str(), Some("domus-9.key"));
        assert!(v["mqtt"].get("password").is_none());
        assert!(v["mqtt"].get("ca_file").is_none(), "no CA for mqtt://");
        let no_pk = site_toml("domus-9", "socer", "Casa", "mqtts://hub.lan:8883", None).unwrap();
        let v: toml::Table = no_pk.parse().unwrap();
        assert!(v["mqtt"].get("hub_public_key").is_none());
        assert!(v["mqtt"].get("ca_file").is_some());
    }
}
