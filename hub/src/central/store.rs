//! The central store (SQLite, WAL): raw readings, per-minute aggregates with the counter samples that
//! period energy is computed from, dirty settlement periods, period results, per-site ack state.
//!
//! One writer thread owns the ingest connection and groups batches into one transaction; readers open
//! their own connections. Raw readings are kept `raw_retention_days`, per-minute aggregates
//! [`MINUTE_RETENTION_DAYS`] (or longer), period results for good. It never verifies anything:
//! only authenticated batches reach it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::mpsc;

use super::balance::{Balance, PodShare, SubstationPeriod};
use super::energy::{Flags, PeriodEnergy};
use super::status::Metrics;
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
  contiguous INTEGER NOT NULL DEFAULT 0);
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
}

/// What the writer reports after each transaction: the new contiguous seq of the sites it touched.
#[derive(Debug, Default)]
pub struct Committed {
    pub acks: Vec<(String, u64)>,
}

/// A handle to send batches to the writer thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Incoming>,
}

impl StoreHandle {
    /// Queue a batch; waits when the writer is behind (back-pressure up to the broker).
    pub async fn write(&self, batch: Incoming) -> Result<(), StoreError> {
        self.tx.send(batch).await.map_err(|_| StoreError::Stopped)
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

struct SiteState {
    id: i64,
    contiguous: u64,
    /// Stored seqs above `contiguous` (there is a gap below them).
    pending: BTreeSet<u64>,
}

/// The writer: owns the ingest connection and the per-site contiguous seq.
pub struct Writer {
    conn: Connection,
    sites: HashMap<String, SiteState>,
    meters: HashMap<(i64, String), i64>,
    /// Latest counter-sample time per meter, to mark the periods a new sample closes.
    last_sample_ms: HashMap<i64, i64>,
    periods: Periods,
    metrics: Arc<Metrics>,
    retention_days: u32,
    last_prune: Option<Instant>,
}

/// Start the writer thread. Committed acks go to `acks`.
pub fn spawn_writer(
    path: &Path,
    periods: Periods,
    retention_days: u32,
    metrics: Arc<Metrics>,
    acks: mpsc::UnboundedSender<Committed>,
) -> Result<(StoreHandle, std::thread::JoinHandle<()>), StoreError> {
    let mut w = Writer::open(path, periods, retention_days, metrics)?;
    let (tx, mut rx) = mpsc::channel::<Incoming>(4096);
    let handle = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut group = vec![first];
                let mut n = group[0].readings.len();
                while n < MAX_GROUP_READINGS {
                    match rx.try_recv() {
                        Ok(b) => {
                            n += b.readings.len();
                            group.push(b);
                        }
                        Err(_) => break,
                    }
                }
                match w.write_group(&group) {
                    Ok(c) => {
                        if !c.acks.is_empty() && acks.send(c).is_err() {
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
    Ok((StoreHandle { tx }, handle))
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
            let mut q = conn.prepare("SELECT id, name, contiguous FROM site")?;
            let rows = q.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (id, name, contiguous) = row?;
                let contiguous = contiguous as u64;
                let mut pending = BTreeSet::new();
                let mut p =
                    conn.prepare("SELECT seq FROM reading WHERE site_id = ?1 AND seq > ?2")?;
                for s in p.query_map(params![id, contiguous as i64], |r| r.get::<_, i64>(0))? {
                    pending.insert(s? as u64);
                }
                sites.insert(
                    name,
                    SiteState {
                        id,
                        contiguous,
                        pending,
                    },
                );
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
            periods,
            metrics,
            retention_days,
            last_prune: None,
        })
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
        self.sites.insert(
            site.to_string(),
            SiteState {
                id,
                contiguous: 0,
                pending: BTreeSet::new(),
            },
        );
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
    pub fn write_group(&mut self, group: &[Incoming]) -> Result<Committed, StoreError> {
        let t0 = Instant::now();
        let now_ms = chrono::Utc::now().timestamp_millis();
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
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO reading
                 (site_id, seq, meter_id, ts_ms, p_w, e_imp_wh, e_exp_wh, quality, extra, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for (b, (site_id, meter_ids)) in group.iter().zip(&ids) {
                let Some(state) = self.sites.get_mut(&b.site) else {
                    continue;
                };
                // A site seen for the first time starts its ack from its first batch (a re-created
                // central database must not leave an old site's outbox unacknowledged forever).
                if state.contiguous == 0 && state.pending.is_empty() {
                    if let Some(min) = b.readings.iter().map(|r| r.seq).min() {
                        state.contiguous = min.saturating_sub(1);
                    }
                }
                for (r, meter_id) in b.readings.iter().zip(meter_ids) {
                    if r.seq <= state.contiguous || state.pending.contains(&r.seq) {
                        duplicates += 1;
                        continue;
                    }
                    let ts_ms = r.ts.timestamp_millis();
                    let extra = extra_json(r);
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
                    state.pending.insert(r.seq);
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
                if let Some(through) = b.dropped_through.filter(|&d| d > state.contiguous) {
                    let kept = state.pending.range(..=through).count() as u64;
                    let lost = through - state.contiguous - kept;
                    tracing::warn!(
                        site = %b.site,
                        through,
                        lost,
                        "the site dropped unacknowledged readings for lack of disk; the ack moves past them"
                    );
                    self.metrics
                        .readings_lost_by_sites
                        .fetch_add(lost, Ordering::Relaxed);
                    state.pending = state.pending.split_off(&(through + 1));
                    state.contiguous = through;
                }
                while state.pending.first() == Some(&(state.contiguous + 1)) {
                    state.pending.pop_first();
                    state.contiguous += 1;
                }
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
            let mut c = tx.prepare_cached("UPDATE site SET contiguous = ?2 WHERE id = ?1")?;
            let mut acks = Vec::new();
            for site in &touched {
                if let Some(state) = self.sites.get(site) {
                    c.execute(params![state.id, state.contiguous as i64])?;
                    acks.push((site.clone(), state.contiguous));
                }
            }
            drop((ins, up, d, c));
            tx.commit()?;
            let m = &self.metrics;
            m.readings_stored.fetch_add(stored, Ordering::Relaxed);
            m.dedup_hits.fetch_add(duplicates, Ordering::Relaxed);
            m.store_transactions.fetch_add(1, Ordering::Relaxed);
            m.observe_store_latency(t0.elapsed());
            for b in group {
                m.observe_ingest_latency(b.received.elapsed());
            }
            Ok(Committed { acks })
        }
    }

    /// Drop raw readings older than the retention (aggregates and period results stay).
    fn maybe_prune(&mut self) {
        if self
            .last_prune
            .is_some_and(|t| t.elapsed() < Duration::from_secs(3600))
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        let cutoff =
            chrono::Utc::now().timestamp_millis() - i64::from(self.retention_days) * 86_400_000;
        match self
            .conn
            .execute("DELETE FROM reading WHERE ts_ms < ?1", [cutoff])
        {
            Ok(n) if n > 0 => tracing::info!(
                "store: pruned {n} raw readings older than {} days",
                self.retention_days
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("store: pruning failed: {e}"),
        }
        // Per-minute counter samples are what late periods are recomputed from: keep them at
        // least MINUTE_RETENTION_DAYS (settled periods stay in the period tables for good).
        let days = i64::from(self.retention_days).max(MINUTE_RETENTION_DAYS);
        let cutoff_min = chrono::Utc::now().timestamp() / 60 - days * 1440;
        match self
            .conn
            .execute("DELETE FROM minute WHERE minute < ?1", [cutoff_min])
        {
            Ok(n) if n > 0 => {
                tracing::info!("store: pruned {n} per-minute rows older than {days} days")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("store: pruning per-minute rows failed: {e}"),
        }
    }

    pub fn contiguous(&self, site: &str) -> Option<u64> {
        self.sites.get(site).map(|s| s.contiguous)
    }
}

fn quality_code(q: Quality) -> i64 {
    match q {
        Quality::Good => 0,
        Quality::Partial => 1,
        Quality::Failed => 2,
    }
}

/// The quantities without their own column (voltages, currents, frequency, power factor, flags).
fn extra_json(r: &WireReading) -> Option<String> {
    let v = &r.values;
    let has = v.v_v.iter().any(Option::is_some)
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
        let tx = self.conn.transaction()?;
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
        let tx = self.conn.transaction()?;
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
        let tx = self.conn.transaction()?;
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
