//! Test plumbing shared by the hub's integration tests: loopback ports, bounded waits, child
//! processes reaped on drop, Mosquitto and its command-line clients, the central hub in-process.
//! Never reaches beyond 127.0.0.1 and never waits without a deadline.
#![allow(dead_code)] // each test crate uses only some of these helpers

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Poll `cond` every 50 ms for up to `secs`.
pub fn wait_until(secs: u64, cond: impl FnMut() -> bool) -> bool {
    wait_for(Duration::from_secs(secs), cond)
}

/// Poll `cond` every 50 ms until `within` has passed; false on timeout.
pub fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Wait until something accepts connections on loopback `port`.
pub fn wait_port(port: u16, within: Duration) -> bool {
    wait_for(within, || TcpStream::connect(("127.0.0.1", port)).is_ok())
}

/// Fails the test with the install hint when `program` is not on PATH.
pub fn require(program: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not installed: run tools/install-test-deps"
    );
}

/// Fails the test with the install hint when the broker or its clients are missing.
pub fn require_mosquitto() {
    for tool in ["mosquitto", "mosquitto_pub", "mosquitto_sub"] {
        require(tool);
    }
}

/// Where `start_mosquitto` logs for the broker on `port`.
pub fn mosquitto_log(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("mosquitto-{port}.log"))
}

/// Mosquitto listening on loopback `port`, configured by `conf` after the `listener` line;
/// killed when dropped. Its log goes to `mosquitto_log(dir, port)`.
pub fn start_mosquitto(dir: &Path, port: u16, conf: &str) -> Reaped {
    let path = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(&path, format!("listener {port} 127.0.0.1\n{conf}"))
        .expect("write mosquitto config");
    let log_path = mosquitto_log(dir, port);
    let log = std::fs::File::create(&log_path).expect("create mosquitto log");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start mosquitto ({e}): run tools/install-test-deps"));
    let broker = Reaped(child);
    assert!(
        wait_port(port, Duration::from_secs(5)),
        "mosquitto did not listen on {port}: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    broker
}

/// The `mosquitto` group's id, if there is one.
pub fn mosquitto_gid() -> Option<u32> {
    std::fs::read_to_string("/etc/group").ok().and_then(|g| {
        g.lines()
            .find(|l| l.starts_with("mosquitto:"))
            .and_then(|l| l.split(':').nth(2).and_then(|n| n.parse::<u32>().ok()))
    })
}

/// Mosquitto started with exactly the files `socer central --mosquitto-files` wrote into `files`
/// (`mosquitto -c files/socer.conf`), killed when dropped; its log goes to `mosquitto_log(dir,
/// port)`. As an operator would, the password and ACL files are handed to the `mosquitto` group
/// when the test runs as root (Mosquitto then drops to that user), and the folders are made
/// traversable for it.
pub fn start_generated_mosquitto(dir: &Path, files: &Path, port: u16) -> Reaped {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let gid = mosquitto_gid();
        for d in [dir, files] {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
        }
        for f in ["passwd", "acl"] {
            let _ = std::os::unix::fs::chown(files.join(f), None, gid);
        }
    }
    let log_path = mosquitto_log(dir, port);
    let log = std::fs::File::create(&log_path).expect("create mosquitto log");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(files.join("socer.conf"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start mosquitto ({e}): run tools/install-test-deps"));
    let broker = Reaped(child);
    assert!(
        wait_port(port, Duration::from_secs(5)),
        "mosquitto did not listen on {port}: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    broker
}

/// A socat pty pair linked at `a` and `b` (raw, no echo), killed when dropped; fails the test when
/// socat is missing or the links do not appear within `within`.
pub fn socat_pty_pair(a: &Path, b: &Path, within: Duration) -> Reaped {
    require("socat");
    let child = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start socat ({e}): run tools/install-test-deps"));
    let guard = Reaped(child);
    assert!(
        wait_for(within, || a.exists() && b.exists()),
        "socat made no pty pair within {within:?}"
    );
    guard
}

/// `mosquitto_pub` at QoS 1 to `host:port`, logged in as `login` (user, password) when given;
/// the caller adds the topic and the payload.
pub fn mosquitto_pub_cmd(host: &str, port: u16, login: Option<(&str, &str)>) -> Command {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", host, "-p", &port.to_string()]);
    if let Some((user, password)) = login {
        cmd.args(["-u", user, "-P", password]);
        cmd.args(["-i", &client_id(user)]);
    }
    cmd.args(["-q", "1"]);
    cmd
}

/// `mosquitto_sub` on loopback `port`, started now, for `count` messages on `topic` within
/// `secs`; stdout and stderr are piped for `wait_with_output`.
pub fn mosquitto_sub(
    port: u16,
    login: Option<(&str, &str)>,
    topic: &str,
    count: u32,
    secs: u32,
) -> Child {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((user, password)) = login {
        cmd.args(["-u", user, "-P", password]);
        cmd.args(["-i", &client_id(user)]);
    }
    cmd.args(["-t", topic])
        .args(["-C", &count.to_string(), "-W", &secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is missing: run tools/install-test-deps")
}

/// Publish with `mosquitto_pub` (QoS 1) as `user`; the payload goes through a file so that any
/// bytes and sizes pass.
pub fn mosquitto_pub(
    port: u16,
    user: &str,
    password: &str,
    topic: &str,
    payload: &[u8],
    dir: &Path,
) {
    let file = dir.join(format!("payload-{}", rand_suffix()));
    std::fs::write(&file, payload).unwrap();
    let out = mosquitto_pub_cmd("127.0.0.1", port, Some((user, password)))
        .args(["-t", topic, "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first message on `topic` (retained ones included) within 5 s, with `mosquitto_sub -C 1 -W 5`.
pub fn mosquitto_sub_one(port: u16, user: &str, password: &str, topic: &str) -> Vec<u8> {
    let out = mosquitto_sub(port, Some((user, password)), topic, 1, 5)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_sub saw nothing on {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v = out.stdout;
    if v.last() == Some(&b'\n') {
        v.pop();
    }
    v
}

/// A client id the account `user` owns on the embedded broker (`{user}.{suffix}`), distinct per
/// call so that two clients of one account do not take each other's session.
pub fn client_id(user: &str) -> String {
    format!("{user}.t{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A two-worker Tokio runtime for driving the hub or an MQTT client from a plain `#[test]`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The central hub started in-process with its web server on a free loopback port; it runs as
/// long as the returned runtime lives.
pub fn start_central(
    cfg: socer::central::config::CentralConfig,
) -> (tokio::runtime::Runtime, socer::central::Running) {
    let rt = runtime();
    let running = rt
        .block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            socer::central::start(cfg, l).await
        })
        .unwrap();
    (rt, running)
}
