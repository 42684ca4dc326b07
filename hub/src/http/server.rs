//! The HTTP/1 server both daemons run their warp routes on: header-read and idle timeouts, a
//! bounded header size, a connection cap that evicts the connections doing nothing rather than
//! turning a fresh client away, and a handler panic answered as a 500 with one log line.
//!
//! It must never stop accepting (an accept error is waited out) and never let one connection,
//! slow or silent or panicking, take the daemon or the other connections down.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use warp::http::{Request, StatusCode};
use warp::Reply;

/// What a server holds a client to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once, at most (further bounded by the open-file limit).
    pub max_connections: usize,
    /// A request head must arrive whole within this time, counted from the connection's accept
    /// or from the end of the previous answer: it is also the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Longest request head (request line and headers), bytes.
    pub max_header_bytes: usize,
    /// Under a full cap, a request in flight this long (a live event stream) may be closed to let
    /// a new client in; the client's `EventSource` reconnects.
    pub stream_yield_after: Duration,
}

impl Limits {
    /// The site agent on a Raspberry Pi: a handful of residents and a technician.
    pub const SITE: Limits = Limits {
        max_connections: 256,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_header_bytes: 16 * 1024,
        stream_yield_after: Duration::from_secs(10),
    };
    /// The central hub: every member's browser and the community's dashboards.
    pub const CENTRAL: Limits = Limits {
        max_connections: 1024,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_header_bytes: 16 * 1024,
        stream_yield_after: Duration::from_secs(10),
    };
}

/// File descriptors kept for everything else (SQLite, MQTT, serial ports, logs).
const RESERVED_FDS: u64 = 128;

/// Counters of a server, for its owner's `/metrics` and for tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    /// Connections closed to make room under the cap.
    pub evicted: AtomicU64,
    /// Connections refused because the cap was full of requests in flight.
    pub refused: AtomicU64,
    /// Handler panics answered with 500.
    pub panics: AtomicU64,
    pub open: AtomicUsize,
}

/// The counters of one server for `/metrics`, labelled with the daemon's `server` name.
#[derive(Debug)]
pub struct StatsCollector {
    pub server: &'static str,
    pub stats: Arc<Stats>,
}

impl prometheus_client::collector::Collector for StatsCollector {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use crate::metrics::{counter, family, gauge};
        use prometheus_client::metrics::MetricType::{Counter, Gauge};
        let labels = [("server", self.server)];
        let s = &self.stats;
        for (name, help, c) in [
            (
                "socer_http_connections_accepted",
                "HTTP connections accepted.",
                &s.accepted,
            ),
            (
                "socer_http_connections_evicted",
                "Connections closed to make room under the cap.",
                &s.evicted,
            ),
            (
                "socer_http_connections_refused",
                "Connections refused: the cap was full of requests in flight.",
                &s.refused,
            ),
            (
                "socer_http_handler_panics",
                "Handler panics answered with 500.",
                &s.panics,
            ),
        ] {
            family(&mut enc, name, help, Counter, |m| {
                counter(m, &labels, c.load(Ordering::Relaxed))
            })?;
        }
        family(
            &mut enc,
            "socer_http_connections_open",
            "HTTP connections open now.",
            Gauge,
            |m| gauge(m, &labels, s.open.load(Ordering::Relaxed) as u64),
        )
    }
}

/// Raise this process's open-file soft limit to its hard limit; returns the soft limit now in
/// effect (`None` when it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    // rlim_t is 32 bits on 32-bit ARM.
    #[allow(clippy::useless_conversion)]
    Some(u64::from(lim.rlim_cur))
}

/// The cap in effect: `limits.max_connections`, lowered to fit the open-file limit.
pub fn connection_cap(limits: &Limits, nofile: Option<u64>) -> usize {
    let by_fds = nofile
        .map(|n| n.saturating_sub(RESERVED_FDS).max(16))
        .unwrap_or(u64::MAX);
    limits
        .max_connections
        .min(usize::try_from(by_fds).unwrap_or(usize::MAX))
        .max(1)
}

struct ConnState {
    /// Requests whose answer has been sent whole.
    served: AtomicU64,
    in_flight: AtomicUsize,
    /// When the oldest request in flight started, or the last one ended (ms since `epoch`).
    since_ms: AtomicU64,
    close: Notify,
}

struct Registry {
    epoch: Instant,
    conns: Mutex<BTreeMap<u64, Arc<ConnState>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Make room for one more connection under `cap`: close, in this order, the oldest
    /// connection that never finished a request and has none in flight (slow or silent), the
    /// oldest idle keep-alive connection, the oldest request in flight longer than
    /// `stream_yield_after`. `false`: nothing may be closed.
    fn make_room(&self, cap: usize, stream_yield_after: Duration) -> bool {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() < cap {
            return true;
        }
        let now = self.now_ms();
        let yield_ms = u64::try_from(stream_yield_after.as_millis()).unwrap_or(u64::MAX);
        let idle = |c: &ConnState| c.in_flight.load(Ordering::Acquire) == 0;
        let victim = conns
            .iter()
            .find(|(_, c)| idle(c) && c.served.load(Ordering::Acquire) == 0)
            .or_else(|| conns.iter().find(|(_, c)| idle(c)))
            .or_else(|| {
                conns.iter().find(|(_, c)| {
                    now.saturating_sub(c.since_ms.load(Ordering::Acquire)) >= yield_ms
                })
            })
            .map(|(id, _)| *id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Counts a request in flight on its connection until its answer's body is dropped (sent whole,
/// or the connection closed).
struct InFlight {
    conn: Arc<ConnState>,
    registry: Arc<Registry>,
}

impl InFlight {
    fn start(conn: Arc<ConnState>, registry: Arc<Registry>) -> Self {
        if conn.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            conn.since_ms.store(registry.now_ms(), Ordering::Release);
        }
        InFlight { conn, registry }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.served.fetch_add(1, Ordering::AcqRel);
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn
                .since_ms
                .store(self.registry.now_ms(), Ordering::Release);
        }
    }
}

/// An answer's body that keeps its request counted in flight while it is being sent.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    match PANIC_AT.with(|a| a.borrow_mut().take()) {
        Some(at) => format!("{msg} (at {at})"),
        None => msg,
    }
}

thread_local! {
    /// Set while a handler runs on this thread: its panic is logged by the server, once.
    static IN_HANDLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the last contained panic happened.
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Panics inside handlers are recorded for the server's one log line instead of the default
/// multi-line report; any other panic goes to the hook that was there before.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_HANDLER.with(|h| h.get()) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC_AT.with(|a| *a.borrow_mut() = Some(at));
            } else {
                previous(info);
            }
        }));
    });
}

/// Marks the current thread as running a handler until dropped (also while unwinding).
struct HandlerScope(bool);

impl HandlerScope {
    fn enter() -> Self {
        HandlerScope(IN_HANDLER.with(|h| h.replace(true)))
    }
}

impl Drop for HandlerScope {
    fn drop(&mut self) {
        let before = self.0;
        IN_HANDLER.with(|h| h.set(before));
    }
}

/// Run a blocking handler `f`; a panic in it comes back as `Err(message and place)`, reported by
/// no one else, for the caller to answer 500 with one log line.
pub fn contain<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_panic_hook();
    let scope = HandlerScope::enter();
    let r = std::panic::catch_unwind(AssertUnwindSafe(f));
    drop(scope);
    r.map_err(|p| panic_text(p.as_ref()))
}

/// A handler's future, polled with the thread marked as running a handler.
struct InHandler<F>(Pin<Box<F>>);

impl<F: Future> Future for InHandler<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _scope = HandlerScope::enter();
        self.0.as_mut().poll(cx)
    }
}

fn internal_error() -> warp::reply::Response {
    warp::reply::with_status(
        warp::reply::with_header(
            r#"{"error":"internal error: the request failed inside the server (logged)"}"#,
            "content-type",
            "application/json",
        ),
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .into_response()
}

/// Serve `service` (`warp::service(routes)`) on `listener` under `limits` until `shutdown`
/// resolves; then stop accepting, let answers in progress finish for up to 2 s, and return.
pub async fn serve<S>(
    name: &'static str,
    service: S,
    listener: TcpListener,
    limits: Limits,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()> + Send,
) where
    S: tower_service::Service<
            Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    install_panic_hook();
    let cap = connection_cap(&limits, raise_nofile_limit());
    tracing::info!(
        "{name}: HTTP on {:?}, at most {cap} connections, {} s to send a request head",
        listener.local_addr().ok(),
        limits.header_read_timeout.as_secs()
    );
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        conns: Mutex::new(BTreeMap::new()),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(64)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait and go on.
                    tracing::warn!("{name}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !registry.make_room(cap, limits.stream_yield_after) {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(ConnState {
            served: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            since_ms: AtomicU64::new(registry.now_ms()),
            close: Notify::new(),
        });
        let before = registry
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, conn.clone());
        debug_assert!(before.is_none());
        let task = connection(
            name,
            id,
            stream,
            conn,
            registry.clone(),
            builder.clone(),
            service.clone(),
            limits,
            stats.clone(),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            if let Err(p) = AssertUnwindSafe(task).catch_unwind().await {
                tracing::error!(
                    "{name}: a connection task panicked: {}",
                    panic_text(p.as_ref())
                );
            }
        });
    }
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + Duration::from_secs(2);
    while stats.open.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Leaves the registry and the open count however the connection ends (even by a panic).
struct Leave {
    id: u64,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.registry
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        self.stats.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection<S>(
    name: &'static str,
    id: u64,
    stream: tokio::net::TcpStream,
    conn: Arc<ConnState>,
    registry: Arc<Registry>,
    builder: Arc<hyper::server::conn::http1::Builder>,
    service: S,
    limits: Limits,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) where
    S: tower_service::Service<
            Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    stats.open.fetch_add(1, Ordering::AcqRel);
    let _leave = Leave {
        id,
        registry: registry.clone(),
        stats: stats.clone(),
    };
    let svc = {
        let conn = conn.clone();
        let registry = registry.clone();
        let stats = stats.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_flight = InFlight::start(conn.clone(), registry.clone());
            let mut service = service.clone();
            let stats = stats.clone();
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            async move {
                let call = InHandler(Box::pin(tower_service::Service::call(&mut service, req)));
                let answer = match AssertUnwindSafe(call).catch_unwind().await {
                    Ok(Ok(r)) => r,
                    Ok(Err(never)) => match never {},
                    Err(p) => {
                        stats.panics.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            "{name}: {method} {path} panicked, answered 500: {}",
                            panic_text(p.as_ref())
                        );
                        internal_error()
                    }
                };
                Ok::<_, Infallible>(answer.map(|inner| Tracked {
                    inner,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let served = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(served);
    let idle_check = Duration::from_secs(1).min(limits.idle_timeout);
    let idle_ms = u64::try_from(limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut tick = tokio::time::interval(idle_check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("{name}: connection {id} ended: {e}");
                }
                return;
            }
            _ = conn.close.notified() => {
                tracing::debug!("{name}: connection {id} closed to make room");
                stats.evicted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ = tick.tick() => {
                let idle = conn.in_flight.load(Ordering::Acquire) == 0
                    && registry.now_ms().saturating_sub(conn.since_ms.load(Ordering::Acquire)) >= idle_ms;
                if idle {
                    return;
                }
            }
            _ = stop.changed() => {
                served.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), served.as_mut()).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(served: u64, in_flight: usize, since_ms: u64) -> Arc<ConnState> {
        Arc::new(ConnState {
            served: AtomicU64::new(served),
            in_flight: AtomicUsize::new(in_flight),
            since_ms: AtomicU64::new(since_ms),
            close: Notify::new(),
        })
    }

    fn registry(conns: Vec<(u64, Arc<ConnState>)>) -> Registry {
        Registry {
            epoch: Instant::now(),
            conns: Mutex::new(conns.into_iter().collect()),
        }
    }

    #[test]
    fn a_full_cap_closes_a_silent_connection_before_an_idle_or_busy_one() {
        let r = registry(vec![
            (1, state(3, 0, 0)), // idle keep-alive
            (2, state(0, 1, 0)), // a request in flight
            (3, state(0, 0, 0)), // silent
        ]);
        assert!(r.make_room(3, Duration::from_secs(3600)));
        let left: Vec<u64> = r.conns.lock().unwrap().keys().copied().collect();
        assert_eq!(left, vec![1, 2]);
        assert!(r.make_room(2, Duration::from_secs(3600)));
        let left: Vec<u64> = r.conns.lock().unwrap().keys().copied().collect();
        assert_eq!(left, vec![2]);
        // Only a young request in flight is left: nothing may be closed.
        assert!(!r.make_room(1, Duration::from_secs(3600)));
        // An old one (an event stream) yields.
        assert!(r.make_room(1, Duration::ZERO));
        assert!(r.conns.lock().unwrap().is_empty());
    }

    #[test]
    fn a_contained_panic_comes_back_with_its_message_and_place() {
        assert_eq!(contain(|| 7), Ok(7));
        let e = contain(|| -> u8 { panic!("bad input {}", 42) }).unwrap_err();
        assert!(e.starts_with("bad input 42 (at "), "{e}");
        assert!(e.contains("server.rs:"), "{e}");
        assert!(
            !IN_HANDLER.with(|h| h.get()),
            "the scope ends with the handler"
        );
    }

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        assert_eq!(connection_cap(&Limits::CENTRAL, Some(1024)), 896);
        assert_eq!(connection_cap(&Limits::CENTRAL, Some(1 << 20)), 1024);
        assert_eq!(connection_cap(&Limits::SITE, None), 256);
        assert_eq!(connection_cap(&Limits::SITE, Some(0)), 16);
    }
}
