//! Hostile HTTP against the real daemons (`socer site` and `socer central` as child processes):
//! absurd query values of every class are answered 400 naming the limit, 2,000 held-open
//! connections (partial headers, or connected and silent) leave `/api/v1/health` answering, live
//! event streams survive the attack, and memory stays bounded. The server's timeouts and its
//! panic-to-500 guard are tested in-process on `socer::http::server` with short limits.

mod central_support;
mod common;
mod site_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, wait_for, wait_port, Reaped};

const HELD: usize = 2000;
/// The open-file limit the daemons run under here: systemd's default soft limit, made hard so
/// the daemon cannot raise it, so the connection cap (not a large limit) is what is tested.
const DAEMON_NOFILE: u64 = 1024;

/// Run `cmd` with soft and hard RLIMIT_NOFILE of [`DAEMON_NOFILE`].
fn with_nofile_limit(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: DAEMON_NOFILE as libc::rlim_t,
                rlim_max: DAEMON_NOFILE as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

/// Raise the soft open-file limit to the hard one; returns the soft limit now in effect.
fn raise_nofile() -> u64 {
    socer::http::server::raise_nofile_limit().unwrap_or(0)
}

/// GET `path` on loopback `port`; (status, body), or `None` when no answer came in 10 s.
fn get(port: u16, path: &str, bearer: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    socer::demo::http::parse(&raw).ok()
}

/// Kilobytes of resident memory of a process.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

struct Central {
    process: Reaped,
    web: u16,
}

fn start_central(dir: &Path) -> Central {
    let (web, broker) = (free_port(), free_port());
    let text = central_support::config_text(dir, &format!("listen = \"127.0.0.1:{broker}\""))
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{web}\""),
        );
    let cfg = dir.join("central.toml");
    std::fs::write(&cfg, text).unwrap();
    let log = std::fs::File::create(dir.join("central.log")).unwrap();
    let child = with_nofile_limit(&mut Command::new(env!("CARGO_BIN_EXE_socer")))
        .args(["central", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start socer central");
    let process = Reaped(child);
    assert!(
        wait_port(web, Duration::from_secs(30)),
        "central web port never opened"
    );
    assert!(
        wait_for(Duration::from_secs(30), || get(web, "/api/v1/health", None)
            .is_some_and(|(s, _)| s == 200)),
        "central never healthy"
    );
    Central { process, web }
}

/// The site agent, uplinked to a port nobody listens on (its web side does not need a broker).
fn start_site(dir: &Path) -> site_common::Agent {
    let spec = site_common::SiteSpec::new(dir, free_port());
    let cfg = spec.write(dir);
    let log = std::fs::File::create(dir.join("site.log")).unwrap();
    let child = with_nofile_limit(&mut Command::new(env!("CARGO_BIN_EXE_socer")))
        .args(["site", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start socer site");
    let agent = site_common::Agent {
        child,
        web_port: spec.web_port,
    };
    agent.wait_web();
    agent
}

/// Every value is answered 400 with a JSON error naming `param` and containing `names`.
fn assert_refused(port: u16, path: &str, bearer: Option<&str>, param: &str, names: &str) {
    let (status, body) = get(port, path, bearer).unwrap_or_else(|| panic!("{path}: no answer"));
    assert_eq!(status, 400, "{path}: {body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    let error = v["error"].as_str().unwrap_or_default();
    assert_eq!(v["param"], param, "{path}: {body}");
    assert!(
        error.contains(names),
        "{path}: the error should name {names:?}: {body}"
    );
}

fn assert_healthy(port: u16, what: &str) {
    let (status, body) = get(port, "/api/v1/health", None)
        .unwrap_or_else(|| panic!("{what}: health did not answer"));
    assert_eq!(status, 200, "{what}: {body}");
}

const HUGE_STEPS: [&str; 6] = [
    "9223372036854775807d",
    "4611686018427387844m",
    "100000000000000000000s",
    "18446744073709551615",
    "99999999999999999999999999h",
    "1000d",
];
const GARBAGE_STEPS: [&str; 9] = [
    "-1h",
    "-9223372036854775808s",
    "NaN",
    "nan",
    "inf",
    "",
    "abc",
    "1.5h",
    "%00",
];
const BAD_MONTHS: [&str; 8] = [
    "0000-01", "9999-12", "2026-13", "2026-00", "", "june", "2026-6", "-2026-01",
];

#[test]
fn absurd_queries_are_refused_naming_the_limit_and_both_daemons_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let central = start_central(&dir.path().join("c").tap_mkdir());
    let site = start_site(&dir.path().join("s").tap_mkdir());
    let (c, s) = (central.web, site.web_port);
    let day = "from=2026-06-01&to=2026-06-02";

    for step in HUGE_STEPS {
        assert_refused(
            c,
            &format!("/api/v1/energy?{day}&step={step}"),
            None,
            "step",
            "92d1h",
        );
        assert_refused(
            s,
            &format!("/api/v1/history?step={step}"),
            None,
            "step",
            "400d1h",
        );
    }
    for step in GARBAGE_STEPS {
        assert_refused(
            c,
            &format!("/api/v1/energy?{day}&step={step}"),
            None,
            "step",
            "between 1h and 92d1h",
        );
        assert_refused(
            s,
            &format!("/api/v1/history?step={step}"),
            None,
            "step",
            "between 1m and 400d1h",
        );
    }
    assert_healthy(c, "central after the steps");
    assert_healthy(s, "site after the steps");

    // Times: garbage, negative, out of the stated years, inverted, too long.
    for t in [
        "yesterday",
        "NaN",
        "",
        "-2026-01-01",
        "2026-13-01",
        "99999999999",
    ] {
        assert_refused(
            c,
            &format!("/api/v1/energy?from={t}&to=2026-06-02"),
            None,
            "from",
            "RFC 3339",
        );
        assert_refused(
            s,
            &format!("/api/v1/history?from={t}"),
            None,
            "from",
            "RFC 3339",
        );
    }
    for t in ["0000-01-01", "9999-12-31", "1970-01-01T00:00:00Z"] {
        assert_refused(
            c,
            &format!("/api/v1/energy?from={t}&to=2026-06-02"),
            None,
            "from",
            "2000..=2099",
        );
        assert_refused(
            s,
            &format!("/api/v1/history?from={t}"),
            None,
            "from",
            "2000..=2099",
        );
    }
    assert_refused(
        c,
        "/api/v1/energy?from=2026-06-02&to=2026-06-01",
        None,
        "to",
        "after from",
    );
    assert_refused(
        s,
        "/api/v1/history?from=2026-06-02T00:00:00Z&to=2026-06-01T00:00:00Z",
        None,
        "to",
        "after from",
    );
    assert_refused(
        c,
        "/api/v1/energy?from=2020-01-01&to=2026-01-01&step=1d",
        None,
        "to",
        "92d1h",
    );
    assert_refused(
        s,
        "/api/v1/history?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&step=1d",
        None,
        "to",
        "400d1h",
    );
    assert_refused(c, "/api/v1/energy?to=2026-06-02", None, "from", "required");
    // More points than an answer may have.
    assert_refused(
        s,
        "/api/v1/history?from=2026-05-01T00:00:00Z&to=2026-05-04T00:00:00Z&step=1m",
        None,
        "step",
        "at most 3000 points",
    );
    // A parameter given twice is ambiguous.
    assert_refused(
        c,
        &format!("/api/v1/energy?{day}&step=1h&step=2h"),
        None,
        "step",
        "more than once",
    );

    for m in BAD_MONTHS {
        assert_refused(
            c,
            &format!("/api/v1/incentive?month={m}"),
            None,
            "month",
            "2000..=2099",
        );
        assert_refused(
            c,
            &format!("/api/v1/report/{m}.csv"),
            Some(central_support::TOKEN),
            "month",
            "2000..=2099",
        );
    }
    assert_refused(c, "/api/v1/incentive", None, "month", "required");

    // Honest queries still answer.
    let (status, body) = get(c, &format!("/api/v1/energy?{day}&step=1h"), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["slots"].as_array().map(Vec::len), Some(24));
    let (status, body) = get(s, "/api/v1/history?step=30m", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _) = get(c, "/api/v1/incentive?month=2026-06", None).unwrap();
    assert_ne!(status, 400, "a valid month is not a bad request");
    assert_healthy(c, "central after the attack");
    assert_healthy(s, "site after the attack");
}

trait Mkdir {
    fn tap_mkdir(self) -> Self;
}

impl Mkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// Open `n` connections to `port`: every other one sends half a request head, the rest nothing.
fn hold(port: u16, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut c) => {
                if i % 2 == 0 {
                    let _ = c.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                }
                held.push(c);
            }
            Err(e) => panic!("connection {i} to {port}: {e}"),
        }
    }
    held
}

/// Health answers on a fresh connection while the attack holds; returns the slowest answer.
fn health_under_attack(port: u16, what: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let answer = get(port, "/api/v1/health", None);
        let took = t.elapsed();
        assert!(
            answer.as_ref().is_some_and(|(s, _)| *s == 200),
            "{what}: health did not answer under {HELD} held connections ({took:?}): {answer:?}"
        );
        slowest = slowest.max(took);
    }
    slowest
}

/// A live event stream of the site: reads until it has seen `n` more `event: reading` lines.
fn read_events(stream: &mut TcpStream, n: usize) -> bool {
    let mut seen = 0;
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(20);
    while seen < n && Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(k) => {
                seen += String::from_utf8_lossy(&buf[..k])
                    .matches("event:reading")
                    .count()
                    + String::from_utf8_lossy(&buf[..k])
                        .matches("event: reading")
                        .count()
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return false,
        }
    }
    seen >= n
}

#[test]
fn two_thousand_held_connections_leave_health_answering_and_memory_bounded() {
    let soft = raise_nofile();
    if soft < (HELD as u64) + 256 {
        println!(
            "skipped: the open-file limit is {soft}; holding {HELD} connections needs {} (raise the hard limit)",
            HELD + 256
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let central = start_central(&dir.path().join("c").tap_mkdir());
    let site = start_site(&dir.path().join("s").tap_mkdir());
    let (c, s) = (central.web, site.web_port);
    let (cpid, spid) = (central.process.0.id(), site.child.id());
    let before = (rss_kb(cpid), rss_kb(spid));

    // A resident's page listens to live readings before the attack starts.
    let mut events = TcpStream::connect(("127.0.0.1", s)).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    events
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    assert!(
        read_events(&mut events, 1),
        "no live reading before the attack"
    );

    let held = hold(s, HELD);
    let site_slowest = health_under_attack(s, "site");
    let site_rss = rss_kb(spid);
    drop(held);
    assert!(
        read_events(&mut events, 2),
        "the live event stream did not survive the attack"
    );
    let held = hold(c, HELD);
    let central_slowest = health_under_attack(c, "central");
    let central_rss = rss_kb(cpid);
    drop(held);

    // The oversized-range attack: many absurd and maximal ranges at once.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                for j in 0..25 {
                    let step = HUGE_STEPS[(i + j) % HUGE_STEPS.len()];
                    let _ = get(
                        c,
                        &format!("/api/v1/energy?from=2026-01-01&to=2026-04-03&step={step}"),
                        None,
                    );
                    let _ = get(
                        c,
                        "/api/v1/energy?from=2026-01-01&to=2026-04-03&step=1h",
                        None,
                    );
                    let _ = get(s, &format!("/api/v1/history?step={step}"), None);
                    let _ = get(s, "/api/v1/history?from=2026-01-01T00:00:00Z&step=1d", None);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let after_ranges = (rss_kb(cpid), rss_kb(spid));
    // The evictions are counted where an operator looks.
    for (port, server) in [(c, "central"), (s, "site")] {
        let (_, text) = get(port, "/metrics", None).unwrap();
        let evicted: f64 = text
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "socer_http_connections_evicted_total{{server=\"{server}\"}}"
                ))
            })
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(evicted >= 1000.0, "{server}: {evicted} evictions counted");
    }
    assert_healthy(c, "central after the range attack");
    assert_healthy(s, "site after the range attack");

    println!(
        "RSS kB: central {} idle, {central_rss} under {HELD} held connections, {} after 400 oversized-range requests; \
         site {} idle, {site_rss} under {HELD} held connections, {} after 400 oversized-range requests",
        before.0, after_ranges.0, before.1, after_ranges.1
    );
    println!("slowest health under {HELD} held connections: site {site_slowest:?}, central {central_slowest:?}");
    for (what, kb) in [
        ("central held", central_rss),
        ("site held", site_rss),
        ("central ranges", after_ranges.0),
        ("site ranges", after_ranges.1),
    ] {
        assert!(kb < 512 * 1024, "{what}: {kb} kB resident");
    }
}

// ---- the server itself, in-process, with short limits ----

fn test_limits() -> socer::http::server::Limits {
    socer::http::server::Limits {
        max_connections: 8,
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        max_header_bytes: 8192,
        stream_yield_after: Duration::from_secs(1),
    }
}

fn serve_test_routes(
    rt: &tokio::runtime::Runtime,
) -> (SocketAddr, Arc<socer::http::server::Stats>) {
    use warp::Filter;
    let panics = warp::path!("panic").map(|| -> String { panic!("a handler bug") });
    let ok = warp::path!("ok").map(|| "fine".to_string());
    let stats = Arc::new(socer::http::server::Stats::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(socer::http::server::serve(
        "test",
        warp::service(panics.or(ok)),
        listener,
        test_limits(),
        stats.clone(),
        std::future::pending(),
    ));
    (addr, stats)
}

/// Seconds until the server closes a connection we keep open (None: still open after 15 s).
fn closed_after(mut c: TcpStream) -> Option<Duration> {
    let t = Instant::now();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) if t.elapsed() < Duration::from_secs(15) => return Some(t.elapsed()),
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[test]
fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let rt = common::runtime();
    let (addr, stats) = serve_test_routes(&rt);
    for _ in 0..3 {
        let (status, body) = get(addr.port(), "/panic", None).expect("an answer, not a reset");
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("internal error"), "{body}");
        let (status, body) = get(addr.port(), "/ok", None).unwrap();
        assert_eq!((status, body.as_str()), (200, "fine"));
    }
    assert_eq!(stats.panics.load(std::sync::atomic::Ordering::Relaxed), 3);
}

#[test]
fn silent_slow_and_idle_connections_are_closed_and_a_full_cap_still_lets_a_client_in() {
    let rt = common::runtime();
    let (addr, stats) = serve_test_routes(&rt);
    // Connected and silent: closed by the header-read timeout (1 s here).
    let silent = TcpStream::connect(addr).unwrap();
    assert!(
        closed_after(silent).is_some(),
        "a silent connection stayed open"
    );
    // Half a request head, never finished.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    assert!(closed_after(slow).is_some(), "a half-sent head stayed open");
    // One full request on a keep-alive connection, then nothing: closed as idle.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let k = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..k]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_after(idle).is_some(),
        "an idle keep-alive connection stayed open"
    );

    // A request head over the limit (8 KiB here) is refused, not buffered.
    let mut big = TcpStream::connect(addr).unwrap();
    let head = format!(
        "GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(head.as_bytes());
    let mut answer = Vec::new();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = big.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "an oversized head was answered: {answer}"
    );

    // The cap (8 here) full of silent connections: a fresh client still gets its answer.
    let held: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let (status, body) = get(addr.port(), "/ok", None).expect("a fresh client gets in");
    assert_eq!((status, body.as_str()), (200, "fine"));
    // At least one silent connection made room (more, unless the header timeout closed them
    // first on a slow machine).
    assert!(stats.evicted.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    drop(held);
}
