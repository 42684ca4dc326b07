//! The bus task (`bus::spawn`) on a paced line in tokio's virtual time: eight SDM630 at 9600 baud
//! 8E1, every request and answer taking its wire time, a dead meter costing a 300 ms timeout. The
//! line never waits while a meter is due, a dead meter leaves no hole in the others' cycle, and
//! no meter is polled sooner than its interval. Virtual time makes every figure exact, so nothing
//! here depends on the machine's load.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use socer_drivers::bus::{self, BusConfig, MeterConfig};
use socer_drivers::plan::{CostModel, Intervals, RTU_REQUEST_BYTES, RTU_RESPONSE_OVERHEAD_BYTES};
use socer_drivers::profile::{Function, ProfileSet};
use socer_drivers::transport::Backoff;
use socer_drivers::{Link, LinkError, ManualClock};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

const TIMEOUT: Duration = Duration::from_millis(300);

fn cost() -> CostModel {
    CostModel::Rtu {
        baud: 9600,
        bits_per_char: 11,
        turnaround: Duration::from_millis(5),
    }
}

/// One request on the line and its answer (or its timeout).
#[derive(Debug, Clone, Copy)]
struct Transaction {
    unit: u8,
    start: Duration,
    end: Duration,
}

/// A line that takes the wire time of every frame; `dead` never answers.
struct PacedLine {
    origin: Instant,
    dead: Option<u8>,
    log: Arc<Mutex<Vec<Transaction>>>,
}

impl Link for PacedLine {
    async fn read_registers(
        &mut self,
        unit: u8,
        _function: Function,
        _address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        let start = self.origin.elapsed();
        let answer = if Some(unit) == self.dead {
            tokio::time::sleep(cost().wire_time(RTU_REQUEST_BYTES, 0) + TIMEOUT).await;
            Err(LinkError::Timeout {
                timeout_ms: TIMEOUT.as_millis() as u64,
            })
        } else {
            let answer_bytes = RTU_RESPONSE_OVERHEAD_BYTES + 2 * u64::from(count);
            tokio::time::sleep(cost().wire_time(RTU_REQUEST_BYTES, answer_bytes)).await;
            // 0x4000 0x0000 is 2.0 as a float: a plausible value for every quantity.
            Ok((0..count)
                .map(|i| if i % 2 == 0 { 0x4000 } else { 0 })
                .collect())
        };
        let end = self.origin.elapsed();
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Transaction { unit, start, end });
        answer
    }
}

/// Run eight SDM630 (units 1–8) polled every `interval` for `run` of virtual time; every
/// transaction the line carried, in order. Checks the bus's own line counters against them.
async fn run_line(interval: Duration, dead: Option<u8>, run: Duration) -> Vec<Transaction> {
    let profiles = ProfileSet::builtin().expect("built-in profiles");
    let profile = Arc::new(
        profiles
            .get("eastron-sdm630")
            .expect("SDM630 profile")
            .clone(),
    );
    let meters = (1..=8u8)
        .map(|unit| MeterConfig {
            name: format!("m{unit}"),
            unit,
            profile: profile.clone(),
            reverse: false,
            intervals: Intervals {
                fast: Some(interval),
                counter: None,
            },
        })
        .collect();
    let mut config = BusConfig::new("line", TIMEOUT, cost(), meters);
    config.backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(30),
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let link = PacedLine {
        origin: Instant::now(),
        dead,
        log: log.clone(),
    };
    let t0 = DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let (tx, mut rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handle = bus::spawn(config, link, Arc::new(ManualClock::new(t0)), tx, stop_rx);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    tokio::time::sleep(run).await;
    let _ = stop_tx.send(true);
    handle.task.await.expect("bus task");
    drain.await.expect("drain");
    let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let line = handle.health.snapshot().line;
    // The poll under way at the stop is not counted (at most its two requests).
    let counted = usize::try_from(line.requests).expect("count");
    assert!(
        counted <= log.len() && log.len() - counted <= 2,
        "{line:?}, {} on the line",
        log.len()
    );
    let log_counted = &log[..counted];
    let timeouts = log_counted.iter().filter(|t| Some(t.unit) == dead).count() as u64;
    assert_eq!(line.timeouts, timeouts);
    // Wire time counted per request; the line was busy at least that long.
    let on_line: f64 = log_counted
        .iter()
        .map(|t| (t.end - t.start).as_secs_f64() * 1000.0)
        .sum();
    assert!(
        line.wire_ms > 0.0 && line.wire_ms <= on_line + 1e-6,
        "{line:?}"
    );
    assert!(
        line.busy_ms + 1e-6 >= on_line,
        "{line:?} against {on_line} ms"
    );
    log
}

/// When each poll of `unit` began (a poll is a run of that unit's transactions).
fn poll_starts(log: &[Transaction], unit: u8) -> Vec<Duration> {
    let mut starts = Vec::new();
    for (i, t) in log.iter().enumerate() {
        if t.unit == unit && (i == 0 || log[i - 1].unit != unit) {
            starts.push(t.start);
        }
    }
    starts
}

/// Total time the line stood idle between two transactions.
fn idle(log: &[Transaction]) -> Duration {
    log.windows(2)
        .map(|w| w[1].start.saturating_sub(w[0].end))
        .sum()
}

#[tokio::test(start_paused = true)]
async fn a_saturated_line_never_idles_healthy_or_with_a_dead_meter() {
    // Every 200 ms is more than eight meters can get (a fast round is about 1 s of line).
    let run = Duration::from_secs(120);
    let healthy = run_line(Duration::from_millis(200), None, run).await;
    let dead = run_line(Duration::from_millis(200), Some(4), run).await;
    assert_eq!(idle(&healthy), Duration::ZERO);
    assert_eq!(idle(&dead), Duration::ZERO);
    let healthy_polls = poll_starts(&healthy, 1).len();
    for unit in [1u8, 2, 3, 5, 6, 7, 8] {
        let live = poll_starts(&dead, unit).len();
        // Seven meters share the line instead of eight; the probes cost less than an eighth.
        assert!(
            live > healthy_polls,
            "unit {unit}: {live} polls beside a dead meter, {healthy_polls} without"
        );
    }
    // The dead meter is probed once per back-off (1, 2, 4 … 30 s), one request each time.
    let probes = dead.iter().filter(|t| t.unit == 4).count();
    assert!((8..=14).contains(&probes), "{probes} probes");
}

#[tokio::test(start_paused = true)]
async fn a_dead_meter_leaves_no_hole_and_no_meter_is_polled_sooner_than_its_interval() {
    // Every second: about what the line can give seven meters, so the line waits sometimes,
    // but only until a meter is due.
    let interval = Duration::from_secs(1);
    let log = run_line(interval, Some(4), Duration::from_secs(120)).await;
    let live = [1u8, 2, 3, 5, 6, 7, 8];
    for &unit in &live {
        let starts = poll_starts(&log, unit);
        assert!(starts.len() >= 100, "unit {unit}: {} polls", starts.len());
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= interval, "unit {unit} polled at {w:?}");
        }
    }
    // Every wait on the line ends when a meter falls due: the poll that ends it comes exactly
    // one interval after that meter's previous poll (or is a probe after its back-off), and no
    // other live meter was due during the wait. (Virtual time rounds timers up to the
    // millisecond.)
    let slack = Duration::from_millis(2);
    for (i, w) in log.windows(2).enumerate() {
        let gap = w[1].start.saturating_sub(w[0].end);
        if gap <= slack {
            continue;
        }
        for &unit in &live {
            let before: Vec<Duration> = poll_starts(&log[..=i], unit);
            let Some(last) = before.last() else { continue };
            let due = *last + interval;
            assert!(
                due + slack >= w[1].start,
                "line idle from {:?} to {:?} while unit {unit} was due at {due:?}",
                w[0].end,
                w[1].start
            );
        }
    }
}
