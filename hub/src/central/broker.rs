//! The MQTT broker side: run the embedded rumqttd (memory bounded, one account per site and one for
//! the hub, client ids bound to accounts), or write the files an external Mosquitto needs.
//!
//! The hub always talks to the broker through rumqttc, so embedded and external brokers share one
//! code path. Confidentiality and integrity of data never rest on the broker: site messages are
//! sealed, broadcasts signed (`wire`). The broker's part is to keep accounts from taking each
//! other's sessions, and (Mosquitto only: rumqttd 0.20 has no topic ACL) each site to its topics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha512;

use super::config::{BrokerConfig, CentralConfig};
pub use super::sites::Accounts;
use crate::files::random_hex;
use crate::wire::Topics;

/// Per-topic in-memory log of the embedded broker: a subscriber that falls further behind than
/// this loses messages, which the end-to-end ack makes the site send again.
pub const SEGMENT_BYTES: usize = 64 * 1024;
pub const SEGMENT_COUNT: usize = 3;
/// Most simultaneous connections to the embedded broker.
pub const MAX_CONNECTIONS: usize = 5000;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the embedded broker's TLS listener needs a running tokio runtime")]
    NoRuntime,
    #[error("the embedded broker cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("broker url {0:?}: expected mqtt://host:port or mqtts://host:port")]
    BadUrl(String),
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
    #[error("account {0:?} is both a site and the hub's (rename the site or the hub's username)")]
    AccountClash(String),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the hub reaches the broker.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: String,
    pub password: String,
    /// PEM of the CA that signed the broker's certificate (`tls` only); `None`: system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The embedded broker (client ids `{account}` and `{account}.{suffix}`), or an external one
    /// (client id = username, as Mosquitto's `use_username_as_clientid` makes it).
    pub embedded: bool,
    /// Further brokers (the other nodes of a cluster), tried in turn after this one: (tls, host,
    /// port). Empty for the embedded broker and a single `url`.
    pub others: Vec<(bool, String, u16)>,
}

/// The hub's two connections: one subscribes (ingest), one publishes (acks, summaries, signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Hub,
    Publisher,
}

/// The account the hub's publishing connection uses on an external broker: under
/// `use_username_as_clientid` two connections of one account would take each other's session.
pub fn publisher_account(hub_user: &str) -> String {
    format!("{hub_user}-pub")
}

impl Endpoint {
    /// Where and as whom the hub's publishing connection logs in.
    pub fn publisher(&self) -> Endpoint {
        let mut ep = self.clone();
        if !self.embedded && !self.username.is_empty() {
            ep.username = publisher_account(&self.username);
        }
        ep
    }

    /// The client id of one of the hub's connections: `{account}.{community}.{hub|pub}.{instance}`
    /// ([`crate::instance::client_id`]), the same on every node of a cluster and every reconnect.
    /// (Under Mosquitto's `use_username_as_clientid` the broker replaces it by the username.)
    pub fn client_id(&self, role: Role, community: &str, instance: &str) -> String {
        let hub_account = if self.username.is_empty() {
            "socer-central"
        } else {
            self.username.as_str()
        };
        let (account, role) = match (role, self.embedded) {
            (Role::Hub, _) => (hub_account.to_string(), crate::instance::Role::Hub),
            // The embedded broker binds `{account}.…` to the hub's own account.
            (Role::Publisher, true) => {
                (hub_account.to_string(), crate::instance::Role::HubPublisher)
            }
            (Role::Publisher, false) => (
                publisher_account(hub_account),
                crate::instance::Role::HubPublisher,
            ),
        };
        crate::instance::client_id(&account, community, role, None, instance)
    }

    /// Every broker to try, in order: (tls, host, port).
    pub fn nodes(&self) -> Vec<(bool, String, u16)> {
        std::iter::once((self.tls, self.host.clone(), self.port))
            .chain(self.others.iter().cloned())
            .collect()
    }

    /// Parse `mqtt://host:port` or `mqtts://host:port`.
    pub fn from_url(url: &str, username: &str, password: &str) -> Option<Endpoint> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            (false, url.strip_prefix("mqtt://")?)
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (rest.to_string(), if tls { 8883 } else { 1883 }),
        };
        Some(Endpoint {
            host,
            port,
            tls,
            username: username.into(),
            password: password.into(),
            ca_pem: None,
            embedded: false,
            others: Vec::new(),
        })
    }
}

/// Start the configured broker if it is embedded; return where the hub connects.
pub fn start(cfg: &CentralConfig) -> Result<Endpoint, BrokerError> {
    start_live(cfg).map(|(ep, _)| ep)
}

/// [`start`], and for the embedded broker its account table, which may be changed while it
/// runs (every connect is checked against the table as it is then: `central::sites`).
pub fn start_live(cfg: &CentralConfig) -> Result<(Endpoint, Option<Accounts>), BrokerError> {
    match &cfg.broker {
        BrokerConfig::External {
            url,
            urls,
            username,
            password,
            ca_file,
            ..
        } => {
            let mut ep = Endpoint::from_url(url, username, password)
                .ok_or_else(|| BrokerError::BadUrl(url.clone()))?;
            for u in urls.iter().skip(1) {
                let b = crate::site::config::parse_mqtt_url(u)
                    .map_err(|_| BrokerError::BadUrl(u.clone()))?;
                ep.others.push((b.tls, b.host, b.port));
            }
            if ep.nodes().iter().any(|n| n.0) {
                ep.ca_pem = ca_file
                    .as_deref()
                    .map(crate::tls::read_pem_file)
                    .transpose()?;
                // A CA file that trusts nothing is reported now, not as endless refused connects.
                crate::tls::client_config(ep.ca_pem.as_deref())?;
            } else if let Some(f) = ca_file {
                tracing::warn!(
                    "broker ca_file {} is unused: url is mqtt://, not mqtts://",
                    f.display()
                );
            }
            Ok((ep, None))
        }
        BrokerConfig::Embedded {
            listen,
            tls,
            hub_user,
            hub_password,
            max_payload_bytes,
        } => {
            // Without a configured password the hub's own account gets a random one: only the
            // hub, over loopback, needs it.
            let hub_password = if hub_password.is_empty() {
                random_hex(16)
            } else {
                hub_password.clone()
            };
            let mut users = site_accounts(cfg);
            if users.contains_key(hub_user) {
                return Err(BrokerError::AccountClash(hub_user.clone()));
            }
            users.insert(hub_user.clone(), hub_password.clone());
            // Check the certificate before anything listens: a bad file stops the hub at start.
            let tls_front = match tls {
                Some(t) => Some((t.listen, crate::tls::server_config(&t.cert, &t.key)?)),
                None => None,
            };
            let accounts: Accounts = std::sync::Arc::new(std::sync::RwLock::new(users));
            start_embedded_live(*listen, accounts.clone(), *max_payload_bytes)?;
            let plain = loopback(*listen);
            if let Some((tls_listen, server)) = tls_front {
                start_tls_front(tls_listen, server, plain)?;
            }
            Ok((
                Endpoint {
                    host: plain.ip().to_string(),
                    port: plain.port(),
                    tls: false,
                    username: hub_user.clone(),
                    password: hub_password,
                    ca_pem: None,
                    embedded: true,
                    others: Vec::new(),
                },
                Some(accounts),
            ))
        }
    }
}

/// The broker account of every site that has a password: its id and password.
pub fn site_accounts(cfg: &CentralConfig) -> HashMap<String, String> {
    cfg.sites
        .iter()
        .filter(|s| !s.password.is_empty())
        .map(|s| (s.id.clone(), s.password.clone()))
        .collect()
}

/// The account that owns a client id: the longest account name `a` with `client_id == a` or
/// `client_id` starting with `a.`. Account names never overlap in what they own, so exactly one
/// account (or none) may connect with a given client id.
pub fn client_id_owner<'a>(
    client_id: &str,
    accounts: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    accounts
        .into_iter()
        .filter(|a| {
            !a.is_empty()
                && client_id
                    .strip_prefix(*a)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
        .max_by_key(|a| a.len())
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The embedded broker's login check: the password is the account's, and the client id is one
/// the account owns ([`client_id_owner`]). rumqttd checks this before the connection reaches its
/// router, so a refused connect never disturbs the session that holds the id.
pub fn login_allowed(
    users: &HashMap<String, String>,
    client_id: &str,
    username: &str,
    password: &str,
) -> bool {
    let Some(stored) = users.get(username) else {
        return false;
    };
    same_secret(stored.as_bytes(), password.as_bytes())
        && client_id_owner(client_id, users.keys().map(String::as_str)) == Some(username)
}

/// Run rumqttd on its own thread with a v4 listener and username/password accounts, each bound
/// to the client ids it owns ([`login_allowed`]).
pub fn start_embedded(
    listen: SocketAddr,
    users: HashMap<String, String>,
    max_payload_bytes: usize,
) -> Result<(), BrokerError> {
    start_embedded_live(
        listen,
        std::sync::Arc::new(std::sync::RwLock::new(users)),
        max_payload_bytes,
    )
}

/// [`start_embedded`] with an account table that may change while the broker runs: rumqttd
/// calls the login check at each connect, which reads the table as it is then.
pub fn start_embedded_live(
    listen: SocketAddr,
    users: Accounts,
    max_payload_bytes: usize,
) -> Result<(), BrokerError> {
    let mut connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5000,
        // Room above the envelope limit so that an oversized batch reaches the hub to be counted.
        max_payload_size: max_payload_bytes * 2,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |client_id, username, password| {
        let allowed = {
            let users = users.read().unwrap_or_else(|e| e.into_inner());
            login_allowed(&users, &client_id, &username, &password)
        };
        if !allowed {
            tracing::warn!(%client_id, %username, "embedded broker: login refused");
        }
        std::future::ready(allowed)
    });
    let server = rumqttd::ServerSettings {
        name: "v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT_BYTES.max(max_payload_bytes * 2),
            max_segment_count: SEGMENT_COUNT,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Default::default()
    };
    // rumqttd reports a failed bind only in its log: find out first, while we can still say why.
    std::net::TcpListener::bind(listen).map_err(|e| BrokerError::Bind(listen, e))?;
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(BrokerError::Thread)?;
    Ok(())
}

/// Where a local client reaches a listener bound to `listen` (loopback for an unspecified address).
fn loopback(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), listen.port())
    } else {
        listen
    }
}

/// Longest a client may take to finish the TLS handshake before it is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The embedded broker's TLS listener: terminate TLS and relay each connection to the plain
/// listener at `plain`. Each handshake runs in its own task with a deadline, so a client that
/// connects and stays silent cannot hold up the others (rumqttd's own TLS accept would).
pub fn start_tls_front(
    listen: SocketAddr,
    server: std::sync::Arc<rustls::ServerConfig>,
    plain: SocketAddr,
) -> Result<SocketAddr, BrokerError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| BrokerError::NoRuntime)?;
    let std_listener =
        std::net::TcpListener::bind(listen).map_err(|e| BrokerError::Bind(listen, e))?;
    let bound = std_listener
        .local_addr()
        .map_err(|e| BrokerError::Bind(listen, e))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| BrokerError::Bind(listen, e))?;
    let _guard = runtime.enter();
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| BrokerError::Bind(listen, e))?;
    let acceptor = rumqttc::tokio_rustls::TlsAcceptor::from(server);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tracing::info!("embedded broker: TLS on {bound}, relayed to {plain}");
    runtime.spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("broker TLS accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!("broker TLS: {MAX_CONNECTIONS} connections open, refusing {peer}");
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let mut tls =
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::warn!("broker TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!("broker TLS handshake with {peer} timed out");
                            return;
                        }
                    };
                let mut inner = match tokio::net::TcpStream::connect(plain).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("broker TLS: cannot reach the broker at {plain}: {e}");
                        return;
                    }
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut inner).await;
            });
        }
    });
    Ok(bound)
}

// ---- files for an external Mosquitto ----

/// Mosquitto's `$7$` password hash: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt, 64-byte key,
/// `$7$<iterations>$<base64 salt>$<base64 hash>` (the format `mosquitto_passwd` writes).
pub fn mosquitto_hash(password: &str, salt: &[u8]) -> String {
    const ITERATIONS: u32 = 101;
    let key = pbkdf2_sha512_one_block(password.as_bytes(), salt, ITERATIONS);
    format!("$7${ITERATIONS}${}${}", base64(salt), base64(&key))
}

/// PBKDF2 with HMAC-SHA512 for a 64-byte output (exactly one block, RFC 8018 §5.2).
fn pbkdf2_sha512_one_block(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    let mac = || match Hmac::<Sha512>::new_from_slice(password) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    let mut m = mac();
    m.update(salt);
    m.update(&1u32.to_be_bytes());
    let mut u: [u8; 64] = m.finalize().into_bytes().into();
    let mut t = u;
    for _ in 1..iterations {
        let mut m = mac();
        m.update(&u);
        u = m.finalize().into_bytes().into();
        t.iter_mut().zip(u.iter()).for_each(|(a, b)| *a ^= b);
    }
    t
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The Mosquitto ACL, per user: each site writes its own readings and status (and reads its status
/// back, to restore it if another account deletes it), reads its own ack, alerts and monthly
/// summary and the community's broadcasts; the hub reads and writes the community's tree.
pub fn mosquitto_acl(cfg: &CentralConfig, hub_user: &str) -> String {
    let t = Topics::new(&cfg.community);
    let mut s = String::from(
        "# socer: generated by `socer central --mosquitto-files`; do not edit by hand.\n\
         # A topic not listed for a user is neither readable nor writable by it.\n",
    );
    s += &format!("\nuser {hub_user}\ntopic readwrite {}/#\n", t.root());
    s += &format!(
        "\nuser {}\ntopic readwrite {}/#\n",
        publisher_account(hub_user),
        t.root()
    );
    for site in &cfg.sites {
        s += &format!(
            "\nuser {id}\ntopic write {r}\ntopic readwrite {st}\ntopic read {a}\ntopic read {al}\ntopic read {su}\n\
             topic read {b}\ntopic read {sg}\ntopic read {ca}\n",
            id = site.id,
            r = t.readings(&site.id),
            st = t.status(&site.id),
            a = t.ack(&site.id),
            al = t.site_alerts(&site.id),
            su = t.summary(&site.id),
            b = t.balance(),
            sg = t.signal(),
            ca = t.alerts(),
        );
    }
    s
}

/// The port Mosquitto should listen on: the hub's broker URL's, or the embedded listener's.
fn listener_port(cfg: &CentralConfig) -> u16 {
    match &cfg.broker {
        BrokerConfig::External { url, .. } => {
            Endpoint::from_url(url, "", "").map_or(1883, |e| e.port)
        }
        BrokerConfig::Embedded { listen, .. } => listen.port(),
    }
}

/// Write `passwd` (0640), `acl` and `socer.conf` into `dir`; returns the paths written. The
/// config works as written (`mosquitto -c DIR/socer.conf`): a listener on every interface,
/// absolute paths, client ids bound to usernames, packets large enough for a batch.
pub fn write_mosquitto_files(cfg: &CentralConfig, dir: &Path) -> Result<Vec<PathBuf>, BrokerError> {
    let (hub_user, hub_password, tls) = match &cfg.broker {
        BrokerConfig::External {
            username,
            password,
            url,
            ..
        } => (
            username.clone(),
            password.clone(),
            url.starts_with("mqtts://"),
        ),
        BrokerConfig::Embedded {
            hub_user,
            hub_password,
            tls,
            ..
        } => (hub_user.clone(), hub_password.clone(), tls.is_some()),
    };
    for account in [hub_user.clone(), publisher_account(&hub_user)] {
        if cfg.sites.iter().any(|s| s.id == account) {
            return Err(BrokerError::AccountClash(account));
        }
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let dir = std::fs::canonicalize(dir).map_err(write_err(dir))?;
    let mut passwd = String::new();
    let mut entry = |user: &str, pw: &str| {
        let mut salt = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        passwd += &format!("{user}:{}\n", mosquitto_hash(pw, &salt));
    };
    // The hub's two connections log in with the same password under two accounts.
    entry(&hub_user, &hub_password);
    entry(&publisher_account(&hub_user), &hub_password);
    for s in cfg.sites.iter().filter(|s| !s.password.is_empty()) {
        entry(&s.id, &s.password);
    }
    let tls_lines = if tls {
        "# The hub speaks mqtts://: give the broker's certificate and key (PEM) before starting.\n\
         #certfile /etc/mosquitto/certs/server.crt\n#keyfile /etc/mosquitto/certs/server.key\n"
    } else {
        ""
    };
    let conf = format!(
        "# socer: generated by `socer central --mosquitto-files`; start with\n\
         # `mosquitto -c {conf}` (or include it from mosquitto.conf).\n\
         # passwd must be readable by the user Mosquitto runs as: `chgrp mosquitto {passwd}`.\n\
         per_listener_settings false\n\
         # Every interface: the sites connect over the LAN.\n\
         listener {port}\n{tls_lines}\
         allow_anonymous false\n\
         password_file {passwd}\n\
         acl_file {acl}\n\
         # The client id is the username: no account can take another's session.\n\
         use_username_as_clientid true\n\
         # A batch of about 1,000 readings must fit.\n\
         max_packet_size {max}\n",
        conf = dir.join("socer.conf").display(),
        port = listener_port(cfg),
        passwd = dir.join("passwd").display(),
        acl = dir.join("acl").display(),
        max = crate::wire::MAX_ENVELOPE_BYTES * 2
    );
    let files = [
        ("passwd", passwd, 0o640),
        ("acl", mosquitto_acl(cfg, &hub_user), 0o644),
        ("socer.conf", conf, 0o644),
    ];
    let mut written = Vec::new();
    for (name, text, mode) in files {
        let path = dir.join(name);
        crate::files::replace(&path, text.as_bytes(), mode, |_| {}).map_err(write_err(&path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn pbkdf2_sha512_matches_the_published_test_vector() {
        // RFC 6070 style vector for PBKDF2-HMAC-SHA512 ("password", "salt", c = 1), first bytes
        // 867f70cf1ade02cf… as published with the SHA-2 PBKDF2 test vectors.
        let k = pbkdf2_sha512_one_block(b"password", b"salt", 1);
        assert_eq!(hex::encode(&k[..8]), "867f70cf1ade02cf");
        let k = pbkdf2_sha512_one_block(b"password", b"salt", 2);
        assert_eq!(hex::encode(&k[..8]), "e1d9c16aa681708a");
    }

    #[test]
    fn mosquitto_hash_has_the_dollar_seven_layout() {
        let h = mosquitto_hash("secret", &[7u8; 12]);
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "101"]);
        assert_eq!(parts[3], "BwcHBwcHBwcHBwcH");
        assert_eq!(parts[4].len(), 88);
    }

    #[test]
    fn a_client_id_belongs_to_exactly_one_account() {
        let accounts = ["central", "domus-1", "domus", "a.b"];
        let owner = |id: &str| client_id_owner(id, accounts);
        assert_eq!(owner("central"), Some("central"));
        assert_eq!(owner("central.pub"), Some("central"));
        assert_eq!(owner("domus-1"), Some("domus-1"));
        assert_eq!(owner("domus-1.flex"), Some("domus-1"));
        assert_eq!(owner("domus.x"), Some("domus"));
        assert_eq!(owner("a.b.c"), Some("a.b"));
        for nobody in [
            "",
            "centralx",
            "socer-central-socer",
            "domus-12",
            ".central",
            "x",
        ] {
            assert_eq!(owner(nobody), None, "{nobody:?}");
        }
    }

    #[test]
    fn login_needs_the_password_and_a_client_id_of_the_account() {
        let users = HashMap::from([
            ("central".to_string(), "pw-hub".to_string()),
            ("domus-1".to_string(), "pw-d".to_string()),
        ]);
        assert!(login_allowed(&users, "central", "central", "pw-hub"));
        assert!(login_allowed(&users, "central.pub", "central", "pw-hub"));
        assert!(login_allowed(&users, "domus-1", "domus-1", "pw-d"));
        assert!(!login_allowed(&users, "central", "domus-1", "pw-d"));
        assert!(!login_allowed(&users, "central.pub", "domus-1", "pw-d"));
        assert!(!login_allowed(&users, "domus-1", "domus-1", "pw-x"));
        assert!(!login_allowed(&users, "domus-1", "domus-1", "pw-d2"));
        assert!(!login_allowed(&users, "", "domus-1", "pw-d"));
        assert!(!login_allowed(&users, "other", "other", ""));
    }

    #[test]
    fn urls_parse_with_and_without_port() {
        let e = Endpoint::from_url("mqtt://broker.local:1884", "u", "p").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("broker.local", 1884, false)
        );
        let e = Endpoint::from_url("mqtts://broker.local", "u", "p").unwrap();
        assert_eq!((e.port, e.tls), (8883, true));
        assert!(Endpoint::from_url("http://x", "u", "p").is_none());
    }
}
