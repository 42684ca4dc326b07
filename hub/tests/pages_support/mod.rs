//! Test peers for the pages: headless Debian Chromium driven over the DevTools protocol (one page
//! target, spoken to over its websocket), and the `socer demo` as the fixture. Every wait is
//! bounded; the browser and the demo are killed when dropped.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{stream::MaybeTlsStream, Message, WebSocket};

pub const CHROMIUM: &str = "/usr/bin/chromium";

pub fn require_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run tools/install-test-deps (it installs Debian's chromium)"
    );
}

/// A headless Chromium with one page; killed (and its profile removed) when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
}

impl Browser {
    /// Start a headless Chromium and attach to its page. A start that writes no DevTools port in
    /// 30 s (seen once on a loaded machine) is killed and tried again, up to three times.
    pub fn launch() -> Browser {
        require_chromium();
        let mut why = String::new();
        for attempt in 1..=3 {
            let profile = tempfile::tempdir().expect("a temporary profile folder");
            let log = tempfile::NamedTempFile::new().expect("a temporary log file");
            let stderr = log
                .reopen()
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null());
            let mut child = Command::new(CHROMIUM)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    "--remote-debugging-port=0",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {CHROMIUM} ({e}): run tools/install-test-deps")
                });
            match devtools_port(profile.path(), &mut child, Duration::from_secs(30)) {
                Some(port) => {
                    let mut b = Browser {
                        child,
                        ws: connect_page(port),
                        _profile: profile,
                        next_id: 0,
                        events: Vec::new(),
                    };
                    for domain in ["Page", "Runtime", "Log", "Network"] {
                        b.call(&format!("{domain}.enable"), json!({}));
                    }
                    return b;
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                    why = text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                    eprintln!(
                        "Chromium start {attempt} wrote no DevToolsActivePort in 30 s: {why}"
                    );
                }
            }
        }
        panic!("Chromium wrote no DevToolsActivePort in three starts of 30 s: {why}");
    }

    /// Send a command and wait (at most 20 s) for its answer; events meanwhile are kept.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws
            .send(Message::text(msg))
            .unwrap_or_else(|e| panic!("{method}: cannot send to Chromium: {e}"));
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < until,
                "{method}: no answer from Chromium in 20 s"
            );
            let Some(v) = self.read() else { continue };
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = v.get("error") {
                    panic!("{method}: Chromium answered an error: {err}");
                }
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    /// One message, or None after a short read timeout.
    fn read(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(Message::Text(t)) => serde_json::from_str(t.as_str()).ok(),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("the DevTools connection failed: {e}"),
        }
    }

    /// Collect events for a while.
    pub fn pump(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if let Some(v) = self.read() {
                self.events.push(v);
            }
        }
    }

    /// Evaluate an expression (promises awaited), returning its JSON value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Poll an expression until it is `true` (at most `within`).
    pub fn wait_for(&mut self, expr: &str, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.eval(expr) == Value::Bool(true) {
                return true;
            }
            self.pump(Duration::from_millis(200));
        }
        false
    }

    /// Load a page and wait until its script says it is ready (`body[data-ready]`).
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        let ready = self.wait_for(
            "document.readyState === 'complete' && document.body && document.body.dataset.ready === '1'",
            Duration::from_secs(20),
        );
        assert!(
            ready,
            "{url} did not become ready in 20 s; console: {:#?}",
            self.console_errors()
        );
    }

    /// The browser's language preference (navigator.languages and Accept-Language).
    pub fn set_language(&mut self, accept: &str) {
        let ua = self.eval("navigator.userAgent");
        self.call(
            "Emulation.setUserAgentOverride",
            json!({ "userAgent": ua, "acceptLanguage": accept }),
        );
    }

    pub fn set_width(&mut self, width: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600 }),
        );
    }

    /// A full-page PNG at the current width, written to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        self.pump(Duration::from_millis(500)); // let a resize re-draw the charts
        let m = self.call("Page.getLayoutMetrics", json!({}));
        let w = m["cssContentSize"]["width"].as_f64().unwrap_or(360.0);
        let h = m["cssContentSize"]["height"].as_f64().unwrap_or(800.0);
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": w, "height": h, "scale": 1 } }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or(""))
            .expect("a base64 PNG from Chromium");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the screenshot folder");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Console errors, uncaught exceptions and failed loads seen so far, as text.
    pub fn console_errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.events {
            let p = &e["params"];
            match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => out.push(format!(
                    "exception: {}",
                    p["exceptionDetails"]["exception"]["description"]
                        .as_str()
                        .or(p["exceptionDetails"]["text"].as_str())
                        .unwrap_or("?")
                )),
                Some("Runtime.consoleAPICalled")
                    if matches!(p["type"].as_str(), Some("error" | "assert")) =>
                {
                    out.push(format!("console.{}: {}", p["type"], p["args"]))
                }
                Some("Log.entryAdded") if p["entry"]["level"] == "error" => out.push(format!(
                    "{}: {} {}",
                    p["entry"]["source"].as_str().unwrap_or("log"),
                    p["entry"]["text"].as_str().unwrap_or(""),
                    p["entry"]["url"].as_str().unwrap_or("")
                )),
                _ => {}
            }
        }
        out
    }

    /// Bytes on the wire (compressed, headers included) of the requests that finished after
    /// event index `since`: (url, bytes) per request.
    pub fn transferred_since(&self, since: usize) -> Vec<(String, f64)> {
        let mut urls = std::collections::HashMap::new();
        let mut out = Vec::new();
        for e in &self.events[since..] {
            let p = &e["params"];
            match e["method"].as_str() {
                Some("Network.requestWillBeSent") => {
                    urls.insert(
                        p["requestId"].as_str().unwrap_or("").to_string(),
                        p["request"]["url"].as_str().unwrap_or("").to_string(),
                    );
                }
                Some("Network.loadingFinished") => {
                    let id = p["requestId"].as_str().unwrap_or("");
                    out.push((
                        urls.get(id).cloned().unwrap_or_default(),
                        p["encodedDataLength"].as_f64().unwrap_or(0.0),
                    ));
                }
                _ => {}
            }
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port Chromium wrote to DevToolsActivePort, or None if it wrote none within `limit` (or
/// exited).
fn devtools_port(profile: &Path, child: &mut Child, limit: Duration) -> Option<u16> {
    let file = profile.join("DevToolsActivePort");
    let until = Instant::now() + limit;
    loop {
        if let Some(p) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        {
            return Some(p);
        }
        if Instant::now() >= until || matches!(child.try_wait(), Ok(Some(_))) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Find the page target on Chromium's DevTools port and open its websocket.
fn connect_page(port: u16) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let until = Instant::now() + Duration::from_secs(20);
    let ws_url = loop {
        let list = http_get(port, "/json/list").unwrap_or_default();
        let targets: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
        if let Some(u) = targets.as_array().and_then(|a| {
            a.iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["id"].as_str())
                .map(|id| format!("ws://127.0.0.1:{port}/devtools/page/{id}"))
        }) {
            break u;
        }
        assert!(
            Instant::now() < until,
            "Chromium showed no page target in 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (ws, _) = tungstenite::connect(ws_url.as_str()).expect("the page's DevTools websocket");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout on the DevTools socket");
    }
    ws
}

/// A plain HTTP GET on loopback: the body of a 200, or None. Reads by Content-Length, since
/// Chromium's DevTools server keeps the connection open.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// The status code of a GET.
pub fn http_status(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `socer demo` in a temporary folder, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Demo {
    child: Child,
    _data: tempfile::TempDir,
    pub info: Value,
}

impl Demo {
    pub fn start(backfill: &str) -> Demo {
        Demo::start_with(backfill, &[])
    }

    /// The demo with more arguments (`--silence BUILDING/METER`, …); it runs for at most 8 min.
    pub fn start_with(backfill: &str, extra: &[&str]) -> Demo {
        let data = tempfile::tempdir().expect("a temporary demo folder");
        let child = Command::new(env!("CARGO_BIN_EXE_socer"))
            .args(["demo", "--backfill", backfill, "--run-for", "480s"])
            .args(extra)
            .arg("--data")
            .arg(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socer demo");
        let file: PathBuf = data.path().join("demo.json");
        let until = Instant::now() + Duration::from_secs(60);
        let info = loop {
            if let Some(v) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            {
                break v;
            }
            assert!(
                Instant::now() < until,
                "the demo wrote no demo.json in 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        Demo {
            child,
            _data: data,
            info,
        }
    }

    pub fn dashboard_port(&self) -> u16 {
        port_of(&self.info["central_web"])
    }

    /// The report token of the demo's central hub (from its generated config).
    pub fn report_token(&self) -> String {
        let conf = std::fs::read_to_string(self._data.path().join("central.toml"))
            .expect("the demo's central.toml");
        conf.lines()
            .find_map(|l| l.trim().strip_prefix("report_token"))
            .and_then(|r| r.split('"').nth(1))
            .expect("a report_token in the demo's central.toml")
            .to_string()
    }

    /// The web port of the demo's first site.
    pub fn site_port(&self) -> u16 {
        port_of(&self.info["sites"][0]["web"])
    }

    /// The web port of the demo's site `id`.
    pub fn site_port_of(&self, id: &str) -> u16 {
        let sites = self.info["sites"].as_array().cloned().unwrap_or_default();
        let site = sites
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no site {id} in demo.json"));
        port_of(&site["web"])
    }
}

fn port_of(v: &Value) -> u16 {
    v.as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("an address with a port in demo.json")
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child this struct owns.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
