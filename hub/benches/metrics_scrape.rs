//! Cost of one hub `/metrics` scrape with many sites: the registry rendered for 1,000 sites (each
//! seen, acknowledged and with two reject reasons counted) — time, size and heap allocations per
//! scrape, against the copies of the site table and the reject map that the hand-written text
//! made before it formatted anything.
//!
//! Run: `cargo bench -p socer --bench metrics_scrape` (`SCRAPE_SITES=N`, default 1000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socer::central::status::{Metrics, Reject, Sites};
use socer::central::web::HubMetrics;
use socer::http::server::{Stats, StatsCollector};

/// The system allocator, counting allocations.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let n: usize = std::env::var("SCRAPE_SITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let ids: Vec<(String, String)> = (0..n)
        .map(|i| (format!("site-{i:04}"), format!("Building {i}")))
        .collect();
    let sites = Arc::new(Sites::new(
        ids.iter().map(|(a, b)| (a.as_str(), b.as_str())),
    ));
    let metrics = Arc::new(Metrics::default());
    let now = chrono::Utc::now();
    for (i, (id, _)) in ids.iter().enumerate() {
        sites.seen(id, now);
        sites.acked(id, i as u64 * 100);
        metrics.reject(id, Reject::BadMac);
        metrics.reject(id, Reject::SeqJump);
        metrics.observe_store_latency(Duration::from_micros(200 + i as u64));
        metrics.observe_ingest_latency(Duration::from_millis(3));
    }
    let registry = socer::metrics::registry(
        "central",
        vec![
            Box::new(HubMetrics {
                metrics: metrics.clone(),
                sites: sites.clone(),
            }),
            Box::new(StatsCollector {
                server: "central",
                stats: Arc::new(Stats::default()),
            }),
        ],
    );
    let rounds = 200;
    let bytes = socer::metrics::render(&registry).len();
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let t0 = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(socer::metrics::render(&registry));
    }
    let per = t0.elapsed() / rounds;
    let allocs = (ALLOCS.load(Ordering::Relaxed) - a0) / u64::from(rounds);

    let a0 = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..rounds {
        std::hint::black_box((sites.all(), metrics.rejects()));
    }
    let copies = (ALLOCS.load(Ordering::Relaxed) - a0) / u64::from(rounds);

    println!(
        "{n} sites: {bytes} bytes per scrape, {:.2} ms per scrape, {allocs} allocations per scrape \
         (the old copies of the site table and reject map alone: {copies})",
        per.as_secs_f64() * 1e3
    );
}
