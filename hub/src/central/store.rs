//! The central store (SQLite, WAL): raw readings, per-minute aggregates with the counter samples that
//! period energy is computed from, dirty settlement periods, period results, per-site ack state.
//!
//! One writer thread owns the ingest connection and groups batches into one transaction; readers open
//! their own connections. It never verifies envelopes (only authenticated batches reach it), but
//! it holds each batch to [`super::plausible`]'s rules against what it already holds (seq jumps,
//! counter rises), since only it knows that state in order.
//!
//! Acks: a site's contiguous seq moves only over seqs stored here or declared by the site
//! (`dropped_through`, `unacked_from`); first contact guesses nothing. A gap that does not fill
//! within [`GAP_WAIT`] is reported so the ack can ask the site to re-send from it.
//!
//! Retention: raw readings are kept `raw_retention_days` after they were received, per-minute
//! aggregates [`MINUTE_RETENTION_DAYS`] (or longer), period results for good; and neither is ever
//! deleted while the month it belongs to is open ([`closed_before`]).
//!
//! Every write transaction is `IMMEDIATE`: the compute loop writes too (period results, dirty
//! marks), and a deferred transaction that has read first fails at once with "database is
//! locked" when the other connection committed meanwhile, instead of waiting its busy timeout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::mpsc;

use super::balance::{Balance, PodShare, SubstationPeriod};
use super::energy::{Flags, PeriodEnergy};
use super::plausible::{self, MeterPrior, SitePrior};
use super::status::{Metrics, Reject};
use crate::wire::WireReading;
use socer_drivers::reading::Quality;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the store writer has stopped")]
    Stopped,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS site (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
  contiguous INTEGER NOT NULL DEFAULT 0, contiguous_ts_ms INTEGER);
CREATE TABLE IF NOT EXISTS meter (
  id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL, name TEXT NOT NULL,
  UNIQUE (site_id, name));
CREATE TABLE IF NOT EXISTS reading (
  site_id INTEGER NOT NULL, seq INTEGER NOT NULL, meter_id INTEGER NOT NULL,
  ts_ms INTEGER NOT NULL, p_w REAL, e_imp_wh REAL, e_exp_wh REAL, quality INTEGER NOT NULL,
  extra TEXT, received_ms INTEGER NOT NULL,
  PRIMARY KEY (site_id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reading_ts ON reading (ts_ms);
CREATE TABLE IF NOT EXISTS minute (
  meter_id INTEGER NOT NULL, minute INTEGER NOT NULL, n INTEGER NOT NULL,
  p_sum REAL NOT NULL, p_n INTEGER NOT NULL, p_min REAL, p_max REAL,
  first_ms INTEGER, imp_first REAL, exp_first REAL,
  last_ms INTEGER, imp_last REAL, exp_last REAL,
  PRIMARY KEY (meter_id, minute)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirty_period (start_s INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS period_meter (
  start_s INTEGER NOT NULL, meter_id INTEGER NOT NULL,
  imp_mwh INTEGER NOT NULL, exp_mwh INTEGER NOT NULL, flags INTEGER NOT NULL,
  PRIMARY KEY (start_s, meter_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS period_substation (
  start_s INTEGER NOT NULL, substation TEXT NOT NULL,
  injection_mwh INTEGER NOT NULL, eligible_injection_mwh INTEGER NOT NULL,
  withdrawal_mwh INTEGER NOT NULL, shared_mwh INTEGER NOT NULL,
  production_mwh INTEGER NOT NULL, consumption_mwh INTEGER NOT NULL, flags INTEGER NOT NULL,
  PRIMARY KEY (start_s, substation)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS period_pod (
  start_s INTEGER NOT NULL, pod TEXT NOT NULL, member TEXT NOT NULL, substation TEXT NOT NULL,
  injection_mwh INTEGER NOT NULL, withdrawal_mwh INTEGER NOT NULL, eligible INTEGER NOT NULL,
  shared_consumer_mwh INTEGER NOT NULL, shared_producer_mwh INTEGER NOT NULL, flags INTEGER NOT NULL,
  PRIMARY KEY (start_s, pod)) WITHOUT ROWID;
";

/// Open a connection with the pragmas every user of the store needs.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let wrap = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path).map_err(wrap)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(wrap)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(wrap)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(wrap)?;
    conn.execute_batch(SCHEMA).map_err(wrap)?;
    // Databases made before `contiguous_ts_ms` existed.
    let has_ts: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('site') WHERE name = 'contiguous_ts_ms'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(wrap)?;
    if !has_ts {
        conn.execute_batch("ALTER TABLE site ADD COLUMN contiguous_ts_ms INTEGER")
            .map_err(wrap)?;
    }
    Ok(conn)
}

/// What the ingest hands to the writer: an authenticated batch of one site.
#[derive(Debug)]
pub struct Incoming {
    pub site: String,
    pub readings: Vec<WireReading>,
    pub received: Instant,
    /// The site dropped unacknowledged readings up to this seq for lack of disk
    /// ([`crate::wire::Batch::dropped_through`]): they will never come, so the ack moves past them.
    pub dropped_through: Option<u64>,
    /// The site holds nothing unacknowledged below this seq ([`crate::wire::Batch::unacked_from`]).
    pub unacked_from: Option<u64>,
}

/// What the writer reports after each transaction (or gap check): the new contiguous seq of the
/// sites it touched, and the sites whose gap has waited long enough to ask for a re-send.
#[derive(Debug, Default)]
pub struct Committed {
    pub acks: Vec<(String, u64)>,
    /// (site, contiguous seq): re-send from the seq after it.
    pub resend: Vec<(String, u64)>,
}

enum Msg {
    Batch(Incoming),
    /// Once a second: look at the sites' gaps.
    Tick,
}

/// A handle to send batches to the writer thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
}

impl StoreHandle {
    /// Queue a batch without waiting. When the writer is a full queue ([`QUEUE_BATCHES`]) behind,
    /// the batch is shed and counted: nothing of it is stored or acknowledged, and the gap it
    /// leaves makes the hub ask its site to send it again. Waiting instead would stop the hub
    /// reading from the broker, which then drops messages bound for it uncounted (rumqttd skips a
    /// slow subscriber's backlog), refusals included.
    pub async fn write(&self, batch: Incoming) -> Result<(), StoreError> {
        let n = batch.readings.len() as u64;
        match self.tx.try_send(Msg::Batch(batch)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let shed = self.metrics.batches_shed.fetch_add(1, Ordering::Relaxed);
                self.metrics.readings_shed.fetch_add(n, Ordering::Relaxed);
                if shed % 1000 == 0 {
                    tracing::warn!(
                        "store: writer {QUEUE_BATCHES} batches behind; shedding (counted, the sites are asked to re-send)"
                    );
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::Stopped),
        }
    }
}

/// Batches queued for the writer before new ones are shed.
pub const QUEUE_BATCHES: usize = 4096;

/// What the writer needs from the config: each meter's maximum power (counter rises are judged
/// against it) and the community's time zone (months close in local time).
#[derive(Debug, Clone)]
pub struct Limits {
    /// (site, meter) → W.
    pub max_power_w: HashMap<(String, String), f64>,
    /// For meters the config does not map.
    pub default_max_power_w: f64,
    pub timezone: chrono_tz::Tz,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_power_w: HashMap::new(),
            default_max_power_w: super::config::DEFAULT_METER_MAX_KW * 1000.0,
            timezone: chrono_tz::Europe::Rome,
        }
    }
}

impl Limits {
    pub fn of(cfg: &super::config::CentralConfig) -> Self {
        Limits {
            max_power_w: cfg
                .meters
                .iter()
                .map(|m| ((m.site.clone(), m.meter.clone()), m.max_power_w))
                .collect(),
            timezone: cfg.timezone,
            ..Limits::default()
        }
    }

    fn max_power(&self, site: &str, meter: &str) -> f64 {
        self.max_power_w
            .get(&(site.to_string(), meter.to_string()))
            .copied()
            .unwrap_or(self.default_max_power_w)
    }
}

/// Settlement-period arithmetic (periods start on multiples of the period in UTC; 60 and 15 minutes
/// divide the hour, so local hours and UTC hours share boundaries in Italy).
#[derive(Debug, Clone, Copy)]
pub struct Periods {
    pub seconds: i64,
}

impl Periods {
    pub fn start_of(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(1000).div_euclid(self.seconds) * self.seconds
    }
}

/// Longest gap, in periods, whose periods are all marked for recomputation by one late reading.
const MAX_DIRTY_SPAN: i64 = 24 * 4 * 62;
/// Days of per-minute aggregates kept (at least; more when raw readings are kept longer).
pub const MINUTE_RETENTION_DAYS: i64 = 62;
/// Most readings grouped into one transaction.
const MAX_GROUP_READINGS: usize = 50_000;
/// How long a gap below stored seqs may stay open before the site is asked to re-send.
pub const GAP_WAIT: Duration = Duration::from_secs(3);
/// Least time between two re-send requests for the same gap.
pub const RESEND_EVERY: Duration = Duration::from_secs(10);
/// A month is not closed before this many days after its end (late data, the period computation).
pub const CLOSE_GRACE_DAYS: i64 = 7;
/// A month stays open for a site that has not yet sent readings past its end for at most this
/// many days after that end; then it closes without it.
pub const SITE_WAIT_DAYS: i64 = 180;

struct SiteState {
    id: i64,
    contiguous: u64,
    /// Newest reading time among the seqs up to `contiguous`.
    contiguous_ts_ms: i64,
    /// Stored seqs above `contiguous` (there is a gap below them), with their reading times.
    pending: BTreeMap<u64, i64>,
    /// Since when the gap above `contiguous` is open, and when a re-send was last asked.
    gap: Option<Gap>,
}

#[derive(Debug, Clone, Copy)]
struct Gap {
    at: u64,
    since: Instant,
    asked: Option<Instant>,
}

impl SiteState {
    fn new(id: i64) -> Self {
        SiteState {
            id,
            contiguous: 0,
            contiguous_ts_ms: plausible::min_ts().timestamp_millis(),
            pending: BTreeMap::new(),
            gap: None,
        }
    }

    /// Move `contiguous` over the stored seqs that follow it.
    fn advance(&mut self) {
        while let Some(ts) = self.pending.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
            self.contiguous_ts_ms = self.contiguous_ts_ms.max(ts);
        }
    }
}

/// The writer: owns the ingest connection and the per-site contiguous seq.
pub struct Writer {
    conn: Connection,
    sites: HashMap<String, SiteState>,
    meters: HashMap<(i64, String), i64>,
    /// Latest counter-sample time per meter, to mark the periods a new sample closes.
    last_sample_ms: HashMap<i64, i64>,
    /// Latest counter sample seen per meter (stored, or refused only for its rise), the prior a
    /// new sample's rise is judged against; loaded from the store on a meter's first reading.
    counters: HashMap<i64, MeterPrior>,
    periods: Periods,
    metrics: Arc<Metrics>,
    retention_days: u32,
    limits: Limits,
    last_prune: Option<Instant>,
}

/// Start the writer thread. Committed acks go to `acks`.
pub fn spawn_writer(
    path: &Path,
    periods: Periods,
    retention_days: u32,
    limits: Limits,
    metrics: Arc<Metrics>,
    acks: mpsc::UnboundedSender<Committed>,
) -> Result<(StoreHandle, std::thread::JoinHandle<()>), StoreError> {
    let mut w = Writer::open(path, periods, retention_days, metrics)?.with_limits(limits);
    let shed_metrics = w.metrics.clone();
    let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE_BATCHES);
    let ticks = tx.clone();
    let _ = std::thread::Builder::new()
        .name("store-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            // A full queue means batches are flowing and gaps are looked at after each of them.
            if let Err(mpsc::error::TrySendError::Closed(_)) = ticks.try_send(Msg::Tick) {
                return;
            }
        });
    let handle = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut group = Vec::new();
                let mut n = 0;
                if let Msg::Batch(b) = first {
                    n += b.readings.len();
                    group.push(b);
                }
                while n < MAX_GROUP_READINGS {
                    match rx.try_recv() {
                        Ok(Msg::Batch(b)) => {
                            n += b.readings.len();
                            group.push(b);
                        }
                        Ok(Msg::Tick) => {}
                        Err(_) => break,
                    }
                }
                if group.is_empty() {
                    let resend = w.gaps_due(Instant::now());
                    if !resend.is_empty()
                        && acks
                            .send(Committed {
                                acks: vec![],
                                resend,
                            })
                            .is_err()
                    {
                        break;
                    }
                    w.maybe_prune();
                    continue;
                }
                match w.write_group(&group) {
                    Ok(mut c) => {
                        c.resend = w.gaps_due(Instant::now());
                        if !(c.acks.is_empty() && c.resend.is_empty()) && acks.send(c).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        // The batches are not acked, so the sites will send them again.
                        tracing::error!(
                            "store: transaction failed, {} batches not stored: {e}",
                            group.len()
                        );
                        w.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                w.maybe_prune();
            }
        })
        .map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
    Ok((
        StoreHandle {
            tx,
            metrics: shed_metrics,
        },
        handle,
    ))
}

impl Writer {
    pub fn open(
        path: &Path,
        periods: Periods,
        retention_days: u32,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let conn = open(path)?;
        let mut sites = HashMap::new();
        {
            let mut q = conn.prepare("SELECT id, name, contiguous, contiguous_ts_ms FROM site")?;
            let rows = q.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })?;
            for row in rows {
                let (id, name, contiguous, ts) = row?;
                let mut state = SiteState::new(id);
                state.contiguous = contiguous.max(0) as u64;
                if let Some(ts) = ts {
                    state.contiguous_ts_ms = ts;
                } else {
                    // A database from before the column: the newest stored reading at or below.
                    let t: Option<i64> = conn.query_row(
                        "SELECT max(ts_ms) FROM reading WHERE site_id = ?1 AND seq <= ?2",
                        params![id, contiguous],
                        |r| r.get(0),
                    )?;
                    state.contiguous_ts_ms = t.unwrap_or(state.contiguous_ts_ms);
                }
                let mut p =
                    conn.prepare("SELECT seq, ts_ms FROM reading WHERE site_id = ?1 AND seq > ?2")?;
                for s in p.query_map(params![id, contiguous], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })? {
                    let (seq, ts) = s?;
                    state.pending.insert(seq as u64, ts);
                }
                sites.insert(name, state);
            }
        }
        let mut meters = HashMap::new();
        {
            let mut q = conn.prepare("SELECT id, site_id, name FROM meter")?;
            for row in q.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })? {
                let (id, site, name) = row?;
                meters.insert((site, name), id);
            }
        }
        let mut last_sample_ms = HashMap::new();
        {
            let mut q = conn.prepare("SELECT meter_id, MAX(last_ms) FROM minute WHERE last_ms IS NOT NULL GROUP BY meter_id")?;
            for row in q.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
                let (m, t) = row?;
                last_sample_ms.insert(m, t);
            }
        }
        Ok(Writer {
            conn,
            sites,
            meters,
            last_sample_ms,
            counters: HashMap::new(),
            periods,
            metrics,
            retention_days,
            limits: Limits::default(),
            last_prune: None,
        })
    }

    /// The meters' maximum power and the community's time zone (defaults: 2 MW, Europe/Rome).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    fn site_id(&mut self, site: &str) -> Result<i64, StoreError> {
        if let Some(s) = self.sites.get(site) {
            return Ok(s.id);
        }
        self.conn
            .execute("INSERT OR IGNORE INTO site (name) VALUES (?1)", [site])?;
        let id: i64 = self
            .conn
            .query_row("SELECT id FROM site WHERE name = ?1", [site], |r| r.get(0))?;
        self.sites.insert(site.to_string(), SiteState::new(id));
        Ok(id)
    }

    fn meter_id(&mut self, site_id: i64, meter: &str) -> Result<i64, StoreError> {
        if let Some(id) = self.meters.get(&(site_id, meter.to_string())) {
            return Ok(*id);
        }
        self.conn.execute(
            "INSERT OR IGNORE INTO meter (site_id, name) VALUES (?1, ?2)",
            params![site_id, meter],
        )?;
        let id: i64 = self.conn.query_row(
            "SELECT id FROM meter WHERE site_id = ?1 AND name = ?2",
            params![site_id, meter],
            |r| r.get(0),
        )?;
        self.meters.insert((site_id, meter.to_string()), id);
        Ok(id)
    }

    /// Store a group of batches in one transaction; returns the sites' new contiguous seqs.
    ///
    /// A batch whose seqs or claims run ahead of what the site could have numbered is refused
    /// whole (counted, nothing stored, its site's ack untouched); implausible values inside a
    /// reading are quarantined (counted; the reading is stored without them).
    pub fn write_group(&mut self, group: &[Incoming]) -> Result<Committed, StoreError> {
        let t0 = Instant::now();
        let now = chrono::Utc::now();
        let now_ms = now.timestamp_millis();
        // Ids first (they may insert rows): outside the main loop to keep borrows simple.
        let mut ids = Vec::with_capacity(group.len());
        for b in group {
            let site_id = self.site_id(&b.site)?;
            let mut meter_ids = Vec::with_capacity(b.readings.len());
            for r in &b.readings {
                meter_ids.push(self.meter_id(site_id, &r.meter)?);
            }
            ids.push((site_id, meter_ids));
        }
        let mut minutes: HashMap<(i64, i64), MinuteAgg> = HashMap::new();
        let mut dirty: HashSet<i64> = HashSet::new();
        let mut touched: Vec<String> = Vec::new();
        let mut stored = 0u64;
        let mut duplicates = 0u64;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO reading
                 (site_id, seq, meter_id, ts_ms, p_w, e_imp_wh, e_exp_wh, quality, extra, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let mut before = tx.prepare_cached(
                "SELECT last_ms, imp_last, exp_last FROM minute
                 WHERE meter_id = ?1 AND minute <= ?2 AND last_ms IS NOT NULL AND last_ms <= ?3
                 ORDER BY minute DESC LIMIT 1",
            )?;
            // The meter's counter samples just before `ts_ms` as stored.
            let mut stored_prior = |meter_id: i64, ts_ms: i64| -> rusqlite::Result<MeterPrior> {
                let row = before
                    .query_row(params![meter_id, ts_ms.div_euclid(60_000), ts_ms], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Option<f64>>(1)?,
                            r.get::<_, Option<f64>>(2)?,
                        ))
                    })
                    .optional()?;
                Ok(
                    row.map_or_else(MeterPrior::default, |(t, i, e)| MeterPrior {
                        imp: i.map(|wh| plausible::CounterSample { ts_ms: t, wh }),
                        exp: e.map(|wh| plausible::CounterSample { ts_ms: t, wh }),
                    }),
                )
            };
            // Counter samples seen in this group per meter (not yet in the minute table).
            type Seen = (
                Option<plausible::CounterSample>,
                Option<plausible::CounterSample>,
            );
            let mut group_seen: HashMap<i64, Vec<Seen>> = HashMap::new();
            for (b, (site_id, meter_ids)) in group.iter().zip(&ids) {
                let Some(state) = self.sites.get_mut(&b.site) else {
                    continue;
                };
                // What the site declares it will never send again (dropped, or acked before).
                let floor = b
                    .dropped_through
                    .unwrap_or(0)
                    .max(b.unacked_from.map_or(0, |u| u.saturating_sub(1)));
                let highest = b
                    .readings
                    .iter()
                    .map(|r| r.seq)
                    .max()
                    .unwrap_or(0)
                    .max(floor);
                let prior = SitePrior {
                    contiguous: state.contiguous,
                    contiguous_ts_ms: state.contiguous_ts_ms,
                };
                if let Err(why) = plausible::check_seq_jump(prior, highest, now) {
                    tracing::warn!(
                        site = %b.site,
                        highest,
                        contiguous = state.contiguous,
                        "refused a batch: {}",
                        why.label()
                    );
                    self.metrics.reject(&b.site, why);
                    continue;
                }
                for (r, meter_id) in b.readings.iter().zip(meter_ids) {
                    if r.seq <= state.contiguous || state.pending.contains_key(&r.seq) {
                        duplicates += 1;
                        continue;
                    }
                    let ts_ms = r.ts.timestamp_millis();
                    let latest = match self.counters.get(meter_id) {
                        Some(p) => *p,
                        None => {
                            let p = stored_prior(*meter_id, i64::MAX)?;
                            self.counters.insert(*meter_id, p);
                            p
                        }
                    };
                    let in_order =
                        |s: Option<plausible::CounterSample>| s.is_none_or(|s| s.ts_ms <= ts_ms);
                    let judged = if in_order(latest.imp) && in_order(latest.exp) {
                        latest
                    } else {
                        // A late reading: the sample before it, as stored or earlier in this group.
                        let mut j = stored_prior(*meter_id, ts_ms)?;
                        for (i, e) in group_seen.get(meter_id).into_iter().flatten() {
                            j.imp = nearer_before(j.imp, *i, ts_ms);
                            j.exp = nearer_before(j.exp, *e, ts_ms);
                        }
                        j
                    };
                    let orig = r;
                    let mut r = orig.clone();
                    let max_power_w = self.limits.max_power(&b.site, &r.meter);
                    let quarantined = plausible::screen(&mut r, max_power_w, judged);
                    for (field, why) in &quarantined {
                        tracing::warn!(site = %b.site, meter = %r.meter, seq = r.seq, "quarantined {field}: {}", why.label());
                        self.metrics.reject(&b.site, *why);
                    }
                    // The prior for the next sample: this one, unless it was impossible in itself
                    // (a counter refused only for its rise may be a new course, such as a
                    // replaced meter: the next sample is judged from it).
                    let seen = |field: &str, v: Option<f64>| {
                        let invalid = quarantined
                            .iter()
                            .any(|(f, w)| *f == field && *w == Reject::CounterInvalid);
                        v.filter(|_| !invalid)
                            .map(|wh| plausible::CounterSample { ts_ms, wh })
                    };
                    let (imp, exp) = (
                        seen("e_imp_wh", orig.values.e_imp_wh),
                        seen("e_exp_wh", orig.values.e_exp_wh),
                    );
                    group_seen.entry(*meter_id).or_default().push((imp, exp));
                    if let Some(latest) = self.counters.get_mut(meter_id) {
                        for (v, slot) in [(imp, &mut latest.imp), (exp, &mut latest.exp)] {
                            if v.is_some() && in_order(*slot) {
                                *slot = v;
                            }
                        }
                    }
                    let r = &r;
                    let extra = extra_json(r, &quarantined);
                    let n = ins.execute(params![
                        site_id,
                        r.seq as i64,
                        meter_id,
                        ts_ms,
                        r.values.p_w,
                        r.values.e_imp_wh,
                        r.values.e_exp_wh,
                        quality_code(r.quality),
                        extra,
                        now_ms
                    ])?;
                    if n == 0 {
                        duplicates += 1;
                        continue;
                    }
                    stored += 1;
                    state.pending.insert(r.seq, ts_ms);
                    minutes
                        .entry((*meter_id, ts_ms.div_euclid(60_000)))
                        .or_default()
                        .add(ts_ms, r);
                    if r.values.e_imp_wh.is_some() || r.values.e_exp_wh.is_some() {
                        let p = self.periods;
                        let here = p.start_of(ts_ms);
                        let last = self.last_sample_ms.get(meter_id).copied();
                        match last {
                            Some(l) if l <= ts_ms => {
                                let mut s = p.start_of(l).max(here - MAX_DIRTY_SPAN * p.seconds);
                                while s <= here {
                                    dirty.insert(s);
                                    s += p.seconds;
                                }
                                self.last_sample_ms.insert(*meter_id, ts_ms);
                            }
                            Some(_) => {
                                // Back-filled out of order: its neighbours' periods change too.
                                dirty.extend([here - p.seconds, here, here + p.seconds]);
                            }
                            None => {
                                dirty.insert(here);
                                self.last_sample_ms.insert(*meter_id, ts_ms);
                            }
                        }
                    } else {
                        dirty.insert(self.periods.start_of(ts_ms));
                    }
                }
                if floor > state.contiguous {
                    // Seqs up to the floor the hub does not hold will never come: those up to
                    // `dropped_through` the site dropped, the others a hub acknowledged before
                    // (this database was rebuilt or restored).
                    let c = state.contiguous;
                    let held = |to: u64| {
                        if to > c {
                            state.pending.range(c + 1..=to).count() as u64
                        } else {
                            0
                        }
                    };
                    let dropped_to = b.dropped_through.unwrap_or(0).clamp(c, floor);
                    let lost = dropped_to - c - held(dropped_to);
                    let not_held = (floor - c - held(floor)) - lost;
                    if lost > 0 {
                        tracing::warn!(site = %b.site, through = dropped_to, lost,
                            "the site dropped unacknowledged readings for lack of disk; the ack moves past them");
                    }
                    if not_held > 0 {
                        tracing::warn!(site = %b.site, through = floor, not_held,
                            "the site says readings this hub does not hold were acknowledged before; the ack moves past them");
                    }
                    self.metrics
                        .readings_lost_by_sites
                        .fetch_add(lost, Ordering::Relaxed);
                    self.metrics
                        .readings_acked_not_held
                        .fetch_add(not_held, Ordering::Relaxed);
                    let above = state.pending.split_off(&(floor + 1));
                    let below = std::mem::replace(&mut state.pending, above);
                    if let Some(ts) = below.values().max() {
                        state.contiguous_ts_ms = state.contiguous_ts_ms.max(*ts);
                    }
                    state.contiguous = floor;
                }
                state.advance();
                // Acked even when unchanged: a replay means the site may have missed the ack.
                if !touched.contains(&b.site) {
                    touched.push(b.site.clone());
                }
            }
            let mut up = tx.prepare_cached(
                "INSERT INTO minute (meter_id, minute, n, p_sum, p_n, p_min, p_max,
                   first_ms, imp_first, exp_first, last_ms, imp_last, exp_last)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (meter_id, minute) DO UPDATE SET
                   n = n + excluded.n, p_sum = p_sum + excluded.p_sum, p_n = p_n + excluded.p_n,
                   p_min = min(coalesce(p_min, excluded.p_min), coalesce(excluded.p_min, p_min)),
                   p_max = max(coalesce(p_max, excluded.p_max), coalesce(excluded.p_max, p_max)),
                   imp_first = CASE WHEN excluded.first_ms IS NOT NULL AND (first_ms IS NULL OR excluded.first_ms < first_ms) THEN excluded.imp_first ELSE imp_first END,
                   exp_first = CASE WHEN excluded.first_ms IS NOT NULL AND (first_ms IS NULL OR excluded.first_ms < first_ms) THEN excluded.exp_first ELSE exp_first END,
                   first_ms = CASE WHEN excluded.first_ms IS NOT NULL AND (first_ms IS NULL OR excluded.first_ms < first_ms) THEN excluded.first_ms ELSE first_ms END,
                   imp_last = CASE WHEN excluded.last_ms IS NOT NULL AND (last_ms IS NULL OR excluded.last_ms > last_ms) THEN excluded.imp_last ELSE imp_last END,
                   exp_last = CASE WHEN excluded.last_ms IS NOT NULL AND (last_ms IS NULL OR excluded.last_ms > last_ms) THEN excluded.exp_last ELSE exp_last END,
                   last_ms = CASE WHEN excluded.last_ms IS NOT NULL AND (last_ms IS NULL OR excluded.last_ms > last_ms) THEN excluded.last_ms ELSE last_ms END",
            )?;
            for ((meter_id, minute), a) in &minutes {
                up.execute(params![
                    meter_id,
                    minute,
                    a.n,
                    a.p_sum,
                    a.p_n,
                    a.p_min,
                    a.p_max,
                    a.first.map(|f| f.0),
                    a.first.and_then(|f| f.1),
                    a.first.and_then(|f| f.2),
                    a.last.map(|f| f.0),
                    a.last.and_then(|f| f.1),
                    a.last.and_then(|f| f.2)
                ])?;
            }
            let mut d =
                tx.prepare_cached("INSERT OR IGNORE INTO dirty_period (start_s) VALUES (?1)")?;
            for s in &dirty {
                d.execute([s])?;
            }
            let mut c = tx.prepare_cached(
                "UPDATE site SET contiguous = ?2, contiguous_ts_ms = ?3 WHERE id = ?1",
            )?;
            let mut acks = Vec::new();
            for site in &touched {
                if let Some(state) = self.sites.get(site) {
                    c.execute(params![
                        state.id,
                        state.contiguous as i64,
                        state.contiguous_ts_ms
                    ])?;
                    acks.push((site.clone(), state.contiguous));
                }
            }
            drop((ins, before, up, d, c));
            tx.commit()?;
            let m = &self.metrics;
            m.readings_stored.fetch_add(stored, Ordering::Relaxed);
            m.dedup_hits.fetch_add(duplicates, Ordering::Relaxed);
            m.store_transactions.fetch_add(1, Ordering::Relaxed);
            m.observe_store_latency(t0.elapsed());
            for b in group {
                m.observe_ingest_latency(b.received.elapsed());
            }
            Ok(Committed {
                acks,
                resend: vec![],
            })
        }
    }

    /// Once an hour: [`Writer::prune`] at the current time.
    fn maybe_prune(&mut self) {
        if self
            .last_prune
            .is_some_and(|t| t.elapsed() < Duration::from_secs(3600))
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        if let Err(e) = self.prune(chrono::Utc::now()) {
            tracing::warn!("store: pruning failed: {e}");
        }
    }

    /// Delete what retention allows at `now`: raw readings received more than
    /// `raw_retention_days` ago and taken as long ago, per-minute aggregates older than
    /// [`MINUTE_RETENTION_DAYS`] (or the raw retention) and than every raw reading kept, and of
    /// both only what lies in months that are closed ([`closed_before`]); period results stay
    /// for good. Returns (readings,
    /// minute rows) deleted.
    pub fn prune(&mut self, now: DateTime<Utc>) -> Result<(usize, usize), StoreError> {
        let earliest_dirty: Option<i64> =
            self.conn
                .query_row("SELECT min(start_s) FROM dirty_period", [], |r| r.get(0))?;
        let min_site_ts = self.sites.values().map(|s| s.contiguous_ts_ms).min();
        let closed = closed_before(
            now,
            &self.limits.timezone,
            earliest_dirty.map(|s| s * 1000),
            min_site_ts,
        );
        let now_ms = now.timestamp_millis();
        let raw_ms = i64::from(self.retention_days) * 86_400_000;
        let cutoff = (now_ms - raw_ms).min(closed);
        let n = self.conn.execute(
            "DELETE FROM reading WHERE ts_ms < ?1 AND received_ms < ?2",
            params![cutoff, now_ms - raw_ms],
        )?;
        if n > 0 {
            tracing::info!(
                "store: pruned {n} raw readings received over {} days ago, in closed months",
                self.retention_days
            );
        }
        // Per-minute counter samples are what late periods are recomputed from: kept at least
        // MINUTE_RETENTION_DAYS, while their month is open, and as long as raw readings of
        // their time are kept.
        let days = i64::from(self.retention_days).max(MINUTE_RETENTION_DAYS);
        let oldest_raw: Option<i64> =
            self.conn
                .query_row("SELECT min(ts_ms) FROM reading", [], |r| r.get(0))?;
        let cutoff_min = (now_ms - days * 86_400_000)
            .min(closed)
            .min(oldest_raw.unwrap_or(i64::MAX))
            .div_euclid(60_000);
        let m = self
            .conn
            .execute("DELETE FROM minute WHERE minute < ?1", [cutoff_min])?;
        if m > 0 {
            tracing::info!(
                "store: pruned {m} per-minute rows older than {days} days, in closed months"
            );
        }
        Ok((n, m))
    }

    /// Sites whose gap above the contiguous seq has stayed open [`GAP_WAIT`] (and that were not
    /// asked within [`RESEND_EVERY`]): (site, contiguous seq) to ask a re-send from the next.
    pub fn gaps_due(&mut self, now: Instant) -> Vec<(String, u64)> {
        let mut due = Vec::new();
        for (name, s) in &mut self.sites {
            if s.pending.is_empty() {
                s.gap = None;
                continue;
            }
            let g = match s.gap {
                Some(g) if g.at == s.contiguous => g,
                _ => Gap {
                    at: s.contiguous,
                    since: now,
                    asked: None,
                },
            };
            let wait_over = now.saturating_duration_since(g.since) >= GAP_WAIT;
            let not_asked = g
                .asked
                .is_none_or(|a| now.saturating_duration_since(a) >= RESEND_EVERY);
            s.gap = Some(if wait_over && not_asked {
                due.push((name.clone(), s.contiguous));
                Gap {
                    asked: Some(now),
                    ..g
                }
            } else {
                g
            });
        }
        if !due.is_empty() {
            self.metrics
                .resend_hints
                .fetch_add(due.len() as u64, Ordering::Relaxed);
        }
        due
    }

    pub fn contiguous(&self, site: &str) -> Option<u64> {
        self.sites.get(site).map(|s| s.contiguous)
    }
}

/// Of two samples, the later one taken at or before `ts_ms`.
fn nearer_before(
    a: Option<plausible::CounterSample>,
    b: Option<plausible::CounterSample>,
    ts_ms: i64,
) -> Option<plausible::CounterSample> {
    let ok = |s: &plausible::CounterSample| s.ts_ms <= ts_ms;
    match (a.filter(ok), b.filter(ok)) {
        (Some(x), Some(y)) => Some(if y.ts_ms > x.ts_ms { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// Start (UTC ms) of the local month holding `ts_ms`.
fn month_start_ms(ts_ms: i64, tz: &chrono_tz::Tz) -> i64 {
    let Some(t) = Utc.timestamp_millis_opt(ts_ms).single() else {
        return ts_ms;
    };
    let local = t.with_timezone(tz);
    tz.with_ymd_and_hms(local.year(), local.month(), 1, 0, 0, 0)
        .earliest()
        .map_or(ts_ms, |m| m.timestamp_millis())
}

/// Every local month that ends at or before the returned time (UTC ms) is closed: settled for
/// good, so retention may delete its raw readings and per-minute samples. A month is closed when
/// it ended [`CLOSE_GRACE_DAYS`] ago, none of its settlement periods awaits recomputation
/// (`earliest_dirty_ms`), and every site the store knows has sent readings past its end
/// (`min_site_ts_ms`, the oldest of the sites' contiguous reading times) — or it ended
/// [`SITE_WAIT_DAYS`] ago, after which a silent site no longer holds it open. Pure.
pub fn closed_before(
    now: DateTime<Utc>,
    tz: &chrono_tz::Tz,
    earliest_dirty_ms: Option<i64>,
    min_site_ts_ms: Option<i64>,
) -> i64 {
    let now_ms = now.timestamp_millis();
    let day = 86_400_000;
    let by_time = month_start_ms(now_ms - CLOSE_GRACE_DAYS * day, tz);
    let by_dirty = earliest_dirty_ms.map_or(i64::MAX, |d| month_start_ms(d, tz));
    let by_sites = min_site_ts_ms.map_or(i64::MAX, |t| {
        month_start_ms(t, tz).max(month_start_ms(now_ms - SITE_WAIT_DAYS * day, tz))
    });
    by_time.min(by_dirty).min(by_sites)
}

fn quality_code(q: Quality) -> i64 {
    match q {
        Quality::Good => 0,
        Quality::Partial => 1,
        Quality::Failed => 2,
    }
}

/// The quantities without their own column (voltages, currents, frequency, power factor, flags),
/// and the names of the values quarantined by the plausibility rules.
fn extra_json(r: &WireReading, quarantined: &[(&'static str, Reject)]) -> Option<String> {
    let v = &r.values;
    let has = !quarantined.is_empty()
        || v.v_v.iter().any(Option::is_some)
        || v.i_a.iter().any(Option::is_some)
        || v.f_hz.is_some()
        || v.pf.is_some()
        || !r.missing.is_empty()
        || r.retimed
        || r.energy_integrated;
    if !has {
        return None;
    }
    serde_json::to_string(&serde_json::json!({
        "v_v": v.v_v, "i_a": v.i_a, "f_hz": v.f_hz, "pf": v.pf,
        "missing": r.missing, "retimed": r.retimed, "energy_integrated": r.energy_integrated,
        "quarantined": quarantined.iter().map(|(f, w)| format!("{f}:{}", w.label())).collect::<Vec<_>>(),
    }))
    .ok()
}

#[derive(Default)]
struct MinuteAgg {
    n: i64,
    p_sum: f64,
    p_n: i64,
    p_min: Option<f64>,
    p_max: Option<f64>,
    first: Option<(i64, Option<f64>, Option<f64>)>,
    last: Option<(i64, Option<f64>, Option<f64>)>,
}

impl MinuteAgg {
    fn add(&mut self, ts_ms: i64, r: &WireReading) {
        self.n += 1;
        if let Some(p) = r.values.p_w {
            self.p_sum += p;
            self.p_n += 1;
            self.p_min = Some(self.p_min.map_or(p, |m| m.min(p)));
            self.p_max = Some(self.p_max.map_or(p, |m| m.max(p)));
        }
        if r.values.e_imp_wh.is_some() || r.values.e_exp_wh.is_some() {
            let s = (ts_ms, r.values.e_imp_wh, r.values.e_exp_wh);
            if self.first.is_none_or(|f| ts_ms < f.0) {
                self.first = Some(s);
            }
            if self.last.is_none_or(|l| ts_ms > l.0) {
                self.last = Some(s);
            }
        }
    }
}

/// One counter sample of one meter (from the per-minute aggregates).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterSample {
    pub ts_ms: i64,
    pub imp_wh: Option<f64>,
    pub exp_wh: Option<f64>,
}

/// A meter as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterKey {
    pub id: i64,
    pub site: String,
    pub name: String,
}

/// Flags as stored: estimated = 1, counter reset = 2, incomplete = 4, implausible = 8.
pub fn flags_code(f: Flags) -> i64 {
    i64::from(f.estimated)
        | (i64::from(f.counter_reset) << 1)
        | (i64::from(f.incomplete) << 2)
        | (i64::from(f.implausible) << 3)
}

pub fn flags_of(code: i64) -> Flags {
    Flags {
        estimated: code & 1 != 0,
        counter_reset: code & 2 != 0,
        incomplete: code & 4 != 0,
        implausible: code & 8 != 0,
    }
}

fn utc(start_s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(start_s, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The counter samples of one `minute` row (`first_ms, imp_first, exp_first, last_ms, imp_last,
/// exp_last`): its first and, when later, its last.
fn minute_samples(r: &rusqlite::Row<'_>) -> rusqlite::Result<Vec<CounterSample>> {
    let f: Option<i64> = r.get(0)?;
    let l: Option<i64> = r.get(3)?;
    let mut v = Vec::with_capacity(2);
    if let Some(f) = f {
        v.push(CounterSample {
            ts_ms: f,
            imp_wh: r.get(1)?,
            exp_wh: r.get(2)?,
        });
    }
    if let Some(l) = l.filter(|l| Some(*l) != f) {
        v.push(CounterSample {
            ts_ms: l,
            imp_wh: r.get(4)?,
            exp_wh: r.get(5)?,
        });
    }
    Ok(v)
}

/// Read side: queries for the compute loop and the API (each holder opens its own connection).
pub struct Reader {
    conn: Connection,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Reader { conn: open(path)? })
    }

    pub fn meters(&self) -> Result<Vec<MeterKey>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT meter.id, site.name, meter.name FROM meter JOIN site ON site.id = meter.site_id",
        )?;
        let rows = q.query_map([], |r| {
            Ok(MeterKey {
                id: r.get(0)?,
                site: r.get(1)?,
                name: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Dirty periods, oldest first.
    pub fn dirty_periods(&self, limit: usize) -> Result<Vec<i64>, StoreError> {
        let mut q = self
            .conn
            .prepare_cached("SELECT start_s FROM dirty_period ORDER BY start_s LIMIT ?1")?;
        let rows = q.query_map([limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Counter samples of a meter covering `[from_ms, to_ms]`: those inside plus the nearest one on
    /// each side (however far), so that a gap can be spread over its whole span.
    pub fn counter_samples(
        &self,
        meter_id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<CounterSample>, StoreError> {
        let mut out = Vec::new();
        let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Vec<CounterSample>> {
            let f: Option<i64> = r.get(0)?;
            let l: Option<i64> = r.get(3)?;
            let mut v = Vec::with_capacity(2);
            if let Some(f) = f {
                v.push(CounterSample {
                    ts_ms: f,
                    imp_wh: r.get(1)?,
                    exp_wh: r.get(2)?,
                });
            }
            if let Some(l) = l {
                if Some(l) != f {
                    v.push(CounterSample {
                        ts_ms: l,
                        imp_wh: r.get(4)?,
                        exp_wh: r.get(5)?,
                    });
                }
            }
            Ok(v)
        };
        let cols = "first_ms, imp_first, exp_first, last_ms, imp_last, exp_last";
        let before: Option<Vec<CounterSample>> = self
            .conn
            .prepare_cached(&format!(
                "SELECT {cols} FROM minute WHERE meter_id = ?1 AND minute < ?2 AND last_ms IS NOT NULL
                 ORDER BY minute DESC LIMIT 1"
            ))?
            .query_row(params![meter_id, from_ms.div_euclid(60_000)], row)
            .optional()?;
        if let Some(b) = before {
            out.extend(b.last().copied());
        }
        let mut q = self.conn.prepare_cached(&format!(
            "SELECT {cols} FROM minute WHERE meter_id = ?1 AND minute BETWEEN ?2 AND ?3 AND last_ms IS NOT NULL
             ORDER BY minute"
        ))?;
        for v in q.query_map(
            params![
                meter_id,
                from_ms.div_euclid(60_000),
                to_ms.div_euclid(60_000)
            ],
            row,
        )? {
            out.extend(v?);
        }
        let after: Option<Vec<CounterSample>> = self
            .conn
            .prepare_cached(&format!(
                "SELECT {cols} FROM minute WHERE meter_id = ?1 AND minute > ?2 AND first_ms IS NOT NULL
                 ORDER BY minute LIMIT 1"
            ))?
            .query_row(params![meter_id, to_ms.div_euclid(60_000)], row)
            .optional()?;
        if let Some(a) = after {
            out.extend(a.first().copied());
        }
        out.sort_by_key(|s| s.ts_ms);
        out.dedup_by_key(|s| s.ts_ms);
        Ok(out)
    }

    /// Counter samples of a meter covering `[from_ms, to_ms]`: those inside plus up to `n` on each
    /// side (however far), so that the energy rules see a glitch or a spike at the edges.
    pub fn counter_samples_around(
        &self,
        meter_id: i64,
        from_ms: i64,
        to_ms: i64,
        n: usize,
    ) -> Result<Vec<CounterSample>, StoreError> {
        let cols = "first_ms, imp_first, exp_first, last_ms, imp_last, exp_last";
        let (from_min, to_min) = (from_ms.div_euclid(60_000), to_ms.div_euclid(60_000));
        let mut out = Vec::new();
        let queries = [
            format!("SELECT {cols} FROM minute WHERE meter_id = ?1 AND minute < ?2 AND last_ms IS NOT NULL ORDER BY minute DESC LIMIT ?3"),
            format!("SELECT {cols} FROM minute WHERE meter_id = ?1 AND minute > ?2 AND first_ms IS NOT NULL ORDER BY minute LIMIT ?3"),
        ];
        for (q, edge) in queries.iter().zip([from_min, to_min]) {
            let mut q = self.conn.prepare_cached(q)?;
            for v in q.query_map(params![meter_id, edge, n as i64], minute_samples)? {
                out.extend(v?);
            }
        }
        let mut q = self.conn.prepare_cached(&format!(
            "SELECT {cols} FROM minute WHERE meter_id = ?1 AND minute BETWEEN ?2 AND ?3 AND last_ms IS NOT NULL"
        ))?;
        for v in q.query_map(params![meter_id, from_min, to_min], minute_samples)? {
            out.extend(v?);
        }
        out.sort_by_key(|s| s.ts_ms);
        out.dedup_by_key(|s| s.ts_ms);
        Ok(out)
    }

    /// Mean power of a meter per minute over `[from_ms, to_ms]`: (minute start ms, W).
    pub fn power_samples(
        &self,
        meter_id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT minute, p_sum / p_n FROM minute WHERE meter_id = ?1 AND minute BETWEEN ?2 AND ?3 AND p_n > 0 ORDER BY minute",
        )?;
        let rows = q.query_map(
            params![
                meter_id,
                from_ms.div_euclid(60_000),
                to_ms.div_euclid(60_000)
            ],
            |r| Ok((r.get::<_, i64>(0)? * 60_000, r.get::<_, f64>(1)?)),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The first and last counter-sample times of a meter, ms.
    pub fn sample_span(&self, meter_id: i64) -> Result<Option<(i64, i64)>, StoreError> {
        let r: (Option<i64>, Option<i64>) = self.conn.query_row(
            "SELECT MIN(first_ms), MAX(last_ms) FROM minute WHERE meter_id = ?1",
            [meter_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(r.0.zip(r.1))
    }

    /// Mark the periods starting in `[from_s, to_s]` (multiples of `period_s`) for recomputation.
    pub fn mark_dirty(
        &mut self,
        from_s: i64,
        to_s: i64,
        period_s: i64,
    ) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut n = 0;
        {
            let mut d =
                tx.prepare_cached("INSERT OR IGNORE INTO dirty_period (start_s) VALUES (?1)")?;
            let mut s = from_s.div_euclid(period_s) * period_s;
            while s <= to_s {
                n += d.execute([s])?;
                s += period_s;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// The energy settings (a meter's bound and declared replacements, as text) the periods were
    /// last computed with, by meter key.
    pub fn energy_settings(&self) -> Result<HashMap<String, String>, StoreError> {
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS energy_setting (meter TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )?;
        let mut q = self
            .conn
            .prepare_cached("SELECT meter, value FROM energy_setting")?;
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replace the stored energy settings.
    pub fn save_energy_settings(
        &mut self,
        settings: &HashMap<String, String>,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS energy_setting (meter TEXT PRIMARY KEY, value TEXT NOT NULL);
             DELETE FROM energy_setting;",
        )?;
        {
            let mut ins =
                tx.prepare_cached("INSERT INTO energy_setting (meter, value) VALUES (?1, ?2)")?;
            for (k, v) in settings {
                ins.execute(params![k, v])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn substation_periods(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<SubstationPeriod>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT start_s, substation, injection_mwh, eligible_injection_mwh, withdrawal_mwh,
                    shared_mwh, production_mwh, consumption_mwh, flags
             FROM period_substation WHERE start_s >= ?1 AND start_s < ?2 ORDER BY start_s, substation",
        )?;
        let rows = q.query_map(params![from_s, to_s], |r| {
            Ok(SubstationPeriod {
                start: utc(r.get(0)?),
                substation: r.get(1)?,
                injection_mwh: r.get::<_, i64>(2)? as u64,
                eligible_injection_mwh: r.get::<_, i64>(3)? as u64,
                withdrawal_mwh: r.get::<_, i64>(4)? as u64,
                shared_mwh: r.get::<_, i64>(5)? as u64,
                production_mwh: r.get::<_, i64>(6)? as u64,
                consumption_mwh: r.get::<_, i64>(7)? as u64,
                flags: flags_of(r.get(8)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn pod_periods(&self, from_s: i64, to_s: i64) -> Result<Vec<PodShare>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT start_s, pod, member, substation, injection_mwh, withdrawal_mwh, eligible,
                    shared_consumer_mwh, shared_producer_mwh, flags
             FROM period_pod WHERE start_s >= ?1 AND start_s < ?2 ORDER BY start_s, substation, pod",
        )?;
        let rows = q.query_map(params![from_s, to_s], |r| {
            Ok(PodShare {
                start: utc(r.get(0)?),
                pod: r.get(1)?,
                member: r.get(2)?,
                substation: r.get(3)?,
                injection_mwh: r.get::<_, i64>(4)? as u64,
                withdrawal_mwh: r.get::<_, i64>(5)? as u64,
                eligible_injection: r.get::<_, i64>(6)? != 0,
                shared_as_consumer_mwh: r.get::<_, i64>(7)? as u64,
                shared_as_producer_mwh: r.get::<_, i64>(8)? as u64,
                flags: flags_of(r.get(9)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replace the results of one period and clear its dirty mark, in one transaction.
    pub fn save_period(
        &mut self,
        start_s: i64,
        meters: &[(i64, PeriodEnergy)],
        balance: &Balance,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM period_meter WHERE start_s = ?1", [start_s])?;
        tx.execute("DELETE FROM period_pod WHERE start_s = ?1", [start_s])?;
        tx.execute(
            "DELETE FROM period_substation WHERE start_s = ?1",
            [start_s],
        )?;
        {
            let mut m = tx.prepare_cached(
                "INSERT INTO period_meter (start_s, meter_id, imp_mwh, exp_mwh, flags) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (id, e) in meters {
                m.execute(params![
                    start_s,
                    id,
                    e.imported_mwh as i64,
                    e.exported_mwh as i64,
                    flags_code(e.flags)
                ])?;
            }
            let mut p = tx.prepare_cached(
                "INSERT INTO period_pod (start_s, pod, member, substation, injection_mwh, withdrawal_mwh,
                   eligible, shared_consumer_mwh, shared_producer_mwh, flags)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for r in balance
                .pods
                .iter()
                .filter(|r| r.start.timestamp() == start_s)
            {
                p.execute(params![
                    start_s,
                    r.pod,
                    r.member,
                    r.substation,
                    r.injection_mwh as i64,
                    r.withdrawal_mwh as i64,
                    r.eligible_injection as i64,
                    r.shared_as_consumer_mwh as i64,
                    r.shared_as_producer_mwh as i64,
                    flags_code(r.flags)
                ])?;
            }
            let mut s = tx.prepare_cached(
                "INSERT INTO period_substation (start_s, substation, injection_mwh, eligible_injection_mwh,
                   withdrawal_mwh, shared_mwh, production_mwh, consumption_mwh, flags)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for r in balance
                .substations
                .iter()
                .filter(|r| r.start.timestamp() == start_s)
            {
                s.execute(params![
                    start_s,
                    r.substation,
                    r.injection_mwh as i64,
                    r.eligible_injection_mwh as i64,
                    r.withdrawal_mwh as i64,
                    r.shared_mwh as i64,
                    r.production_mwh as i64,
                    r.consumption_mwh as i64,
                    flags_code(r.flags)
                ])?;
            }
        }
        tx.execute("DELETE FROM dirty_period WHERE start_s = ?1", [start_s])?;
        tx.commit()?;
        Ok(())
    }

    /// Readings stored per site (for the API and tests).
    pub fn reading_count(&self, site: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM reading JOIN site ON site.id = reading.site_id WHERE site.name = ?1",
            [site],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// The contiguous (acknowledged) seq of every site.
    pub fn contiguous(&self) -> Result<HashMap<String, u64>, StoreError> {
        let mut q = self
            .conn
            .prepare_cached("SELECT name, contiguous FROM site")?;
        let rows = q.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_writer_queue_sheds_and_counts_instead_of_blocking_the_ingest() {
        let (tx, mut rx) = mpsc::channel::<Msg>(1);
        let metrics = Arc::new(Metrics::default());
        let h = StoreHandle {
            tx,
            metrics: metrics.clone(),
        };
        let batch = |n: u64| Incoming {
            site: "stps".into(),
            readings: (1..=n)
                .map(|s| WireReading {
                    seq: s,
                    meter: "grid".into(),
                    ts: Utc::now(),
                    values: Default::default(),
                    quality: Quality::Good,
                    missing: vec![],
                    retimed: false,
                    energy_integrated: false,
                })
                .collect(),
            received: Instant::now(),
            dropped_through: None,
            unacked_from: None,
        };
        h.write(batch(3)).await.unwrap();
        h.write(batch(5)).await.unwrap();
        h.write(batch(7)).await.unwrap();
        assert_eq!(metrics.batches_shed.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.readings_shed.load(Ordering::Relaxed), 12);
        assert!(matches!(rx.recv().await, Some(Msg::Batch(b)) if b.readings.len() == 3));
        drop(rx);
        assert!(matches!(h.write(batch(1)).await, Err(StoreError::Stopped)));
    }

    #[test]
    fn a_month_closes_after_its_grace_its_dirty_periods_and_its_sites() {
        let tz = chrono_tz::Europe::Rome;
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let ms = |s: &str| t(s).timestamp_millis();
        // 1 March 00:00 in Rome is 28 Feb 23:00 UTC.
        let march = ms("2026-02-28T23:00:00Z");
        let april = ms("2026-03-31T22:00:00Z");
        let now = t("2026-04-10T12:00:00Z");
        // March ended 9.5 days ago: closed, nothing else holding it.
        assert_eq!(closed_before(now, &tz, None, None), april);
        // Within the 7-day grace it is still open.
        assert_eq!(
            closed_before(t("2026-04-05T12:00:00Z"), &tz, None, None),
            march
        );
        // A dirty period in March keeps March open.
        assert_eq!(
            closed_before(now, &tz, Some(ms("2026-03-15T10:00:00Z")), None),
            march
        );
        // So does a site whose contiguous readings stop in March…
        assert_eq!(
            closed_before(now, &tz, None, Some(ms("2026-03-20T00:00:00Z"))),
            march
        );
        // …or in January (it holds January open too), unless that was over 180 days ago.
        let jan = ms("2025-12-31T23:00:00Z");
        assert_eq!(
            closed_before(now, &tz, None, Some(ms("2026-01-20T00:00:00Z"))),
            jan
        );
        let later = t("2026-09-10T12:00:00Z");
        assert!(closed_before(later, &tz, None, Some(ms("2026-01-20T00:00:00Z"))) > jan);
    }
}
