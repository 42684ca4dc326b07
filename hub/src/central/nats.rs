//! The NATS server configuration for communities on a clustered broker (`socer central
//! --nats-files DIR`): one NATS account per community (its own subjects, MQTT sessions, retained
//! messages and client ids), one user per site and two for the hub with the permissions MQTT
//! needs, and one server file per node (JetStream, MQTT, cluster routes).
//!
//! Several communities share a cluster by writing their files into the same folder: each run
//! writes its own `{community}.account.conf` and rewrites the node files to include every account
//! file present. Nothing here starts or reloads a server.

use std::path::{Path, PathBuf};

use super::broker::{publisher_account, BrokerError};
use super::config::{BrokerConfig, CentralConfig};
use crate::wire::Topics;

/// One node of the cluster: where its MQTT listener and its cluster route listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Host name or address the other nodes and the clients reach it at.
    pub host: String,
    pub mqtt_port: u16,
    pub cluster_port: u16,
    /// NATS client port (kept on loopback: socer speaks MQTT only).
    pub client_port: u16,
    /// HTTP monitoring port (`/healthz`, `/jsz`), on loopback.
    pub monitor_port: u16,
}

/// The default layout: three nodes `nats-1..3` on the standard ports.
pub fn default_nodes() -> Vec<Node> {
    (1..=3)
        .map(|i| Node {
            host: format!("nats-{i}"),
            mqtt_port: 1883,
            cluster_port: 6222,
            client_port: 4222,
            monitor_port: 8222,
        })
        .collect()
}

/// `HOST[:MQTT[:CLUSTER[:CLIENT[:MONITOR]]]]`, the ports defaulting to 1883, 6222, 4222, 8222.
pub fn parse_node(s: &str) -> Result<Node, String> {
    let mut parts = s.split(':');
    let host = parts.next().unwrap_or_default().to_string();
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{s:?}: expected HOST[:MQTT_PORT[:CLUSTER_PORT[:CLIENT_PORT[:MONITOR_PORT]]]]"
        ));
    }
    let mut ports = [1883u16, 6222, 4222, 8222];
    for (i, p) in parts.enumerate() {
        let slot = ports
            .get_mut(i)
            .ok_or_else(|| format!("{s:?}: at most four ports"))?;
        *slot = p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{s:?}: port {p:?} is not in 1..=65535"))?;
    }
    Ok(Node {
        host,
        mqtt_port: ports[0],
        cluster_port: ports[1],
        client_port: ports[2],
        monitor_port: ports[3],
    })
}

/// The NATS subject of an MQTT topic (`a/b/c` is `a.b.c`; `+` is `*`, a final `#` is `>`).
pub fn subject(topic: &str) -> String {
    topic
        .split('/')
        .map(|l| match l {
            "+" => "*",
            "#" => ">",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A site's NATS user name: unique across the communities of a cluster (NATS user names are
/// server-wide). The site's `[mqtt] username` must be this.
pub fn site_user(community: &str, site: &str) -> String {
    format!("{site}@{community}")
}

/// Quote a string for the NATS configuration format (JSON-style escapes).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The subscription every MQTT user needs: a QoS 1 subscription is a JetStream consumer that
/// delivers on `$MQTT.sub.<id>`; without it the SUBACK refuses the subscription.
const MQTT_DELIVERY: &str = "$MQTT.sub.>";

/// The account block of one community (an entry of the server's `accounts { }` map).
pub fn account_conf(cfg: &CentralConfig) -> Result<String, BrokerError> {
    let (hub_user, hub_password) = hub_account(cfg);
    let t = Topics::new(&cfg.community);
    let root = format!("{}.>", subject(t.root()));
    let mut users = Vec::new();
    let hub_perms = format!(
        "{{ publish: {}, subscribe: {} }}",
        list(std::slice::from_ref(&root)),
        list(&[root.clone(), MQTT_DELIVERY.to_string()])
    );
    for account in [hub_user.clone(), publisher_account(&hub_user)] {
        if cfg
            .sites
            .iter()
            .any(|s| site_user(&cfg.community, &s.id) == account)
        {
            return Err(BrokerError::AccountClash(account));
        }
        users.push(format!(
            "    {{ user: {}, password: {}, permissions: {hub_perms}, allowed_connection_types: [\"MQTT\"] }}",
            q(&account),
            q(&hub_password)
        ));
    }
    for s in cfg.sites.iter().filter(|s| !s.password.is_empty()) {
        let publish = [t.readings(&s.id), t.status(&s.id)].map(|x| subject(&x));
        let subscribe = [
            subject(&t.status(&s.id)),
            subject(&t.ack(&s.id)),
            subject(&t.site_alerts(&s.id)),
            subject(&t.summary(&s.id)),
            subject(&t.balance()),
            subject(&t.signal()),
            subject(&t.alerts()),
            MQTT_DELIVERY.to_string(),
        ];
        users.push(format!(
            "    {{ user: {}, password: {}, permissions: {{ publish: {}, subscribe: {} }}, allowed_connection_types: [\"MQTT\"] }}",
            q(&site_user(&cfg.community, &s.id)),
            q(&s.password),
            list(&publish),
            list(&subscribe)
        ));
    }
    Ok(format!(
        "# socer: generated by `socer central --nats-files` for the community {community:?}; do not\n\
         # edit by hand. One NATS account: its subjects, MQTT sessions, retained messages and\n\
         # client ids are its own. Sites log in as \"{{site}}@{community}\" (their [mqtt] username)\n\
         # with the password of their [[site]] entry; the hub as {hub:?} and {hubpub:?}.\n\
         # Passwords are in clear: keep this file readable by the NATS server's user only (0640).\n\
         {name}: {{\n  jetstream: enabled\n  users: [\n{users}\n  ]\n}}\n",
        community = cfg.community,
        hub = hub_user,
        hubpub = publisher_account(&hub_user),
        name = q(&format!("socer-{}", cfg.community)),
        users = users.join("\n"),
    ))
}

fn hub_account(cfg: &CentralConfig) -> (String, String) {
    match &cfg.broker {
        BrokerConfig::External {
            username, password, ..
        } => (username.clone(), password.clone()),
        BrokerConfig::Embedded {
            hub_user,
            hub_password,
            ..
        } => (hub_user.clone(), hub_password.clone()),
    }
}

/// The server file of node `i` of `nodes`: including every account file in `accounts` (names
/// relative to the node file's folder: nats-server resolves an include from the including
/// file's folder, even an absolute one), JetStream stored under `store_dir`.
pub fn node_conf(nodes: &[Node], i: usize, accounts: &[String], store_dir: &Path) -> String {
    let Some(me) = nodes.get(i) else {
        return String::new();
    };
    let name = format!("socer-nats-{}", i + 1);
    let file_name = format!("nats-{}.conf", i + 1);
    let routes: Vec<String> = nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, n)| format!("nats-route://{}:{}", n.host, n.cluster_port))
        .collect();
    // A node named by a loopback address (tests, one machine) listens there only.
    let bind = match me.host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_loopback() => me.host.clone(),
        _ => "0.0.0.0".to_string(),
    };
    let includes: String = accounts
        .iter()
        .map(|a| format!("  include {}\n", q(a)))
        .collect();
    format!(
        "# socer: generated by `socer central --nats-files`; start with `nats-server -c {file}`.\n\
         # Node {n} of {total}. Change permissions by restarting the nodes one at a time: NATS\n\
         # 2.9.10 (Debian 12) can crash on a reload (SIGHUP) of permissions while MQTT retained\n\
         # messages exist.\n\
         server_name: {name}\n\
         # NATS clients: loopback only (socer speaks MQTT).\n\
         listen: \"127.0.0.1:{client}\"\n\
         http: \"127.0.0.1:{monitor}\"\n\
         # MQTT: the sites and hubs connect here. Batches are up to {max} bytes.\n\
         max_payload: {max}\n\
         mqtt {{\n  listen: \"{bind}:{mqtt}\"\n  # A QoS 1 message not acknowledged within this is delivered again.\n  ack_wait: \"30s\"\n  max_ack_pending: 1000\n  # Sessions, retained and QoS 1 messages on {replicas} nodes (set, not guessed: a node that\n  # starts first would otherwise size the streams by the peers it knows yet).\n  stream_replicas: {replicas}\n}}\n\
         jetstream {{\n  store_dir: {store}\n  max_memory_store: 256MB\n  max_file_store: 10GB\n}}\n\
         cluster {{\n  name: \"socer\"\n  listen: \"{bind}:{cluster}\"\n  routes: {routes}\n}}\n\
         accounts {{\n{includes}}}\n",
        file = file_name,
        n = i + 1,
        total = nodes.len(),
        client = me.client_port,
        monitor = me.monitor_port,
        mqtt = me.mqtt_port,
        cluster = me.cluster_port,
        max = crate::wire::MAX_ENVELOPE_BYTES * 2,
        store = q(&store_dir.join(&name).display().to_string()),
        routes = list(&routes),
        replicas = nodes.len().clamp(1, 3),
    )
}

/// Write `{community}.account.conf` (0640) and `nats-{n}.conf` for each node into `dir`;
/// returns the paths written.
pub fn write_nats_files(
    cfg: &CentralConfig,
    dir: &Path,
    nodes: &[Node],
    store_dir: &Path,
) -> Result<Vec<PathBuf>, BrokerError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let dir = std::fs::canonicalize(dir).map_err(write_err(dir))?;
    let account_file = format!("{}.account.conf", cfg.community);
    let account_path = dir.join(&account_file);
    let text = account_conf(cfg)?;
    // Readable by the server's group only, never briefly by others.
    crate::files::replace(&account_path, text.as_bytes(), 0o640, |_| {})
        .map_err(write_err(&account_path))?;
    let mut accounts: Vec<String> = std::fs::read_dir(&dir)
        .map_err(write_err(&dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".account.conf"))
        .collect();
    accounts.sort();
    let mut written = vec![account_path];
    for i in 0..nodes.len() {
        let path = dir.join(format!("nats-{}.conf", i + 1));
        std::fs::write(&path, node_conf(nodes, i, &accounts, store_dir))
            .map_err(write_err(&path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_subjects_and_wildcards_to_nats_wildcards() {
        assert_eq!(
            subject("socer/v2/a/site/d-1/readings"),
            "socer.v2.a.site.d-1.readings"
        );
        assert_eq!(
            subject("socer/v2/a/site/+/status"),
            "socer.v2.a.site.*.status"
        );
        assert_eq!(subject("socer/v2/a/#"), "socer.v2.a.>");
    }

    #[test]
    fn nodes_parse_with_default_ports_and_bad_ones_are_named() {
        assert_eq!(
            parse_node("10.0.0.1:11883:16222").unwrap(),
            Node {
                host: "10.0.0.1".into(),
                mqtt_port: 11883,
                cluster_port: 16222,
                client_port: 4222,
                monitor_port: 8222
            }
        );
        assert_eq!(parse_node("nats-1").unwrap().mqtt_port, 1883);
        for bad in ["", "a:0", "a:x", "a:1:2:3:4:5", "a,b:1883"] {
            assert!(parse_node(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_files_route_to_the_other_nodes_and_include_every_account() {
        let nodes = default_nodes();
        let c = node_conf(
            &nodes,
            1,
            &["/n/a.account.conf".into(), "/n/b.account.conf".into()],
            Path::new("/var/lib/nats"),
        );
        assert!(c.contains("server_name: socer-nats-2"), "{c}");
        assert!(
            c.contains("routes: [\"nats-route://nats-1:6222\", \"nats-route://nats-3:6222\"]"),
            "{c}"
        );
        assert!(
            c.contains("include \"/n/a.account.conf\"")
                && c.contains("include \"/n/b.account.conf\"")
        );
        assert!(
            c.contains("store_dir: \"/var/lib/nats/socer-nats-2\""),
            "{c}"
        );
        assert!(node_conf(&nodes, 9, &[], Path::new("/x")).is_empty());
    }
}
