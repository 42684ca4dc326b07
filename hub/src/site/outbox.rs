//! The outbox: every reading is kept in SQLite, under a per-site `seq`, until the central hub has
//! acknowledged it; acknowledged readings are compacted into 1-minute and 15-minute aggregates.
//!
//! It must never reuse a seq, never forget an unacknowledged reading except beyond the disk budget
//! (then counted, logged and reported), and never fsync per reading (the SD card wears out).
//!
//! One writer thread owns the connection ([`Outbox`]); [`Store`] is its synchronous core.
//! Durability: readings are grouped in one transaction every [`SYNC_EVERY`] (2 s), committed with
//! `synchronous=NORMAL` and then synced at once: a reading is safe against a crash of the process
//! and against a power cut within 2 s of being taken (the same power-cut window as one commit a
//! second with a sync every other one; a crash of the process alone now loses up to 2 s instead of
//! 1 s of readings not yet stored, never a seq). Only readings up to the last sync (`durable`) are
//! handed to the uplink, so a seq the hub may have seen can never be lost and reassigned by a
//! power cut.
//!
//! SD-card wear: every sync re-dirties at least the WAL's last 4 KiB page, so at 16 readings a
//! second the page cache is written at least 4096 / 32 = 128 B per reading whatever the encoding;
//! what is above that floor is kept small by one transaction per sync, the acknowledged seq
//! written once a minute (with the compaction) rather than with every commit, and WAL checkpoints
//! at 2,048 pages or [`CHECKPOINT_EVERY`] instead of every 1,000 pages, the WAL index kept in memory
//! (exclusive locking, no `-shm` file): the raw readings live about a minute
//! (acknowledged, aggregated, pruned), so their pages are reused and a checkpoint copies the
//! database's few hot pages once instead of every reading once.
//!
//! The next seq is never stored on its own: it is one more than the highest row, and pruning always
//! keeps the highest row. This saves one page write per commit.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use socer_drivers::reading::{Missing, Quality, Reading, Values};

use crate::wire::WireReading;

/// How often pending readings are committed and made power-cut safe (one transaction, then the
/// WAL fsync): the power-cut window.
pub const SYNC_EVERY: Duration = Duration::from_secs(2);
/// The longest between two copies of the WAL into the database (a passive checkpoint, then the
/// WAL restarts), when [`WAL_AUTOCHECKPOINT_PAGES`] is not reached first.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(600);
/// SQLite's own checkpoint threshold, in pages (1 MiB of WAL at 512-byte pages): about every
/// 6 min at 16 readings a second, at once under bulk writes (a backlog, a backfill).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 2048;
/// A WAL grown by a bulk write is truncated back to this at its next restart; in steady state the
/// WAL stays below it and is overwritten in place (no block allocation on the card).
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 2 << 20;
/// Readings kept in memory while the disk refuses writes; beyond this the oldest are dropped.
pub const MAX_PENDING: usize = 20_000;
/// 1-minute aggregates are kept this long; 15-minute ones [`KEEP_15M_DAYS`].
pub const KEEP_1M_DAYS: i64 = 35;
pub const KEEP_15M_DAYS: i64 = 400;
/// Acknowledged seq is written at most this often, with the minute's compaction when the clock is
/// synchronised (losing it only re-sends acknowledged readings, which the hub takes once).
const ACK_PERSIST_EVERY: Duration = Duration::from_secs(60);

const FLAG_QUALITY_MASK: i64 = 0b11;
const FLAG_RETIMED: i64 = 0b100;
const FLAG_INTEGRATED: i64 = 0b1000;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("outbox: disk full or over quota: {0}")]
    DiskFull(String),
    #[error("outbox: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("outbox writer has stopped")]
    Stopped,
}

impl OutboxError {
    fn classify(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::DiskFull
                    || f.extended_code == rusqlite::ffi::SQLITE_IOERR_WRITE
                    || f.extended_code == rusqlite::ffi::SQLITE_IOERR_FSYNC =>
            {
                OutboxError::DiskFull(e.to_string())
            }
            _ => OutboxError::Sqlite(e),
        }
    }
}

/// A reading on its way in, with whether its wall timestamp can be trusted.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub reading: Reading,
    /// The wall clock was synchronised when the reading was taken; otherwise it is re-timed later
    /// from `reading.mono_ms`.
    pub synced: bool,
}

/// This process's place in monotonic time, to re-time readings taken before clock sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// The kernel's boot id: monotonic stamps of another boot cannot be re-timed.
    pub boot: String,
    /// Boot-time milliseconds at which this process's `mono_ms` was zero.
    pub origin_ms: i64,
}

/// Readings fetched for sending and the outbox's marks at that same moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fetched {
    pub readings: Vec<WireReading>,
    pub acked: u64,
    /// Every seq at or below was dropped unsent; every fetched reading is above it.
    pub dropped_through: u64,
}

/// What the outbox reports to health and metrics.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OutboxStats {
    /// Highest seq assigned so far (0: none yet).
    pub last_seq: u64,
    /// Highest seq the central hub acknowledged.
    pub acked: u64,
    /// Highest seq safe against a power cut (handed to the uplink).
    pub durable: u64,
    /// Readings stored and not acknowledged.
    pub backlog: u64,
    /// Readings taken before clock sync, waiting to be re-timed.
    pub untimed: u64,
    pub oldest_unacked: Option<DateTime<Utc>>,
    /// Bytes of the database in use (pages in use × page size) plus the WAL.
    pub disk_bytes: u64,
    pub budget_bytes: u64,
    /// Unacknowledged readings dropped for lack of disk (since the outbox was created).
    pub dropped: u64,
    /// Every seq up to this one that is not stored was dropped for lack of disk.
    pub dropped_through: u64,
    /// Readings waiting in memory because the disk refused them.
    pub pending: u64,
    pub last_error: Option<String>,
}

/// One row of history for the page: a meter's aggregate over one step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryRow {
    pub meter: String,
    pub start: DateTime<Utc>,
    pub step_s: i64,
    pub samples: i64,
    pub p_avg_w: Option<f64>,
    pub p_min_w: Option<f64>,
    pub p_max_w: Option<f64>,
    /// Counter increase over the step (first to last sample inside it), Wh.
    pub e_imp_wh: Option<f64>,
    pub e_exp_wh: Option<f64>,
}

/// Quantities other than power and the counters (`v_v`, `i_a`, `f_hz`, `pf`), packed losslessly:
/// a byte saying which are present, then per value a tag and its payload. A value that is an exact
/// decimal with up to 3 places (what scaled integer registers give: 230.1) is stored as a zigzag
/// varint of value × 10^k (tag k); else as f32 when that is exact (f32 registers), else as f64.
fn pack_extra(v: &Values) -> Option<Vec<u8>> {
    let vals = [
        v.v_v[0], v.v_v[1], v.v_v[2], v.i_a[0], v.i_a[1], v.i_a[2], v.f_hz, v.pf,
    ];
    if vals.iter().all(Option::is_none) {
        return None;
    }
    let mut out = Vec::with_capacity(32);
    out.push(0u8);
    for (k, x) in vals.iter().enumerate() {
        let Some(x) = *x else { continue };
        out[0] |= 1 << k;
        pack_value(x, &mut out);
    }
    Some(out)
}

const TAG_F32: u8 = 4;
const TAG_F64: u8 = 5;

fn pack_value(x: f64, out: &mut Vec<u8>) {
    for k in 0..=3u8 {
        let m = 10f64.powi(i32::from(k));
        let n = (x * m).round();
        if n.abs() < 1e15 && n / m == x {
            out.push(k);
            let n = n as i64;
            let mut z = ((n << 1) ^ (n >> 63)) as u64;
            loop {
                let b = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    out.push(b);
                    break;
                }
                out.push(b | 0x80);
            }
            return;
        }
    }
    let narrow = x as f32;
    if f64::from(narrow) == x {
        out.push(TAG_F32);
        out.extend(narrow.to_le_bytes());
    } else {
        out.push(TAG_F64);
        out.extend(x.to_le_bytes());
    }
}

fn unpack_value(b: &[u8], at: &mut usize) -> Option<f64> {
    let tag = *b.get(*at)?;
    *at += 1;
    match tag {
        0..=3 => {
            let (mut z, mut shift) = (0u64, 0u32);
            loop {
                let byte = *b.get(*at)?;
                *at += 1;
                z |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 63 {
                    return None;
                }
            }
            let n = ((z >> 1) as i64) ^ -((z & 1) as i64);
            Some(n as f64 / 10f64.powi(i32::from(tag)))
        }
        TAG_F32 => {
            let v = f32::from_le_bytes(b.get(*at..*at + 4)?.try_into().ok()?);
            *at += 4;
            Some(f64::from(v))
        }
        TAG_F64 => {
            let v = f64::from_le_bytes(b.get(*at..*at + 8)?.try_into().ok()?);
            *at += 8;
            Some(v)
        }
        _ => None,
    }
}

fn unpack_extra(b: &[u8]) -> [Option<f64>; 8] {
    let mut out = [None; 8];
    let Some(&present) = b.first() else {
        return out;
    };
    let mut at = 1usize;
    for (k, slot) in out.iter_mut().enumerate() {
        if present & (1 << k) == 0 {
            continue;
        }
        match unpack_value(b, &mut at) {
            Some(v) => *slot = Some(v),
            None => return [None; 8],
        }
    }
    out
}

fn quality_code(q: Quality) -> i64 {
    match q {
        Quality::Good => 0,
        Quality::Partial => 1,
        Quality::Failed => 2,
    }
}

fn quality_of(flags: i64) -> Quality {
    match flags & FLAG_QUALITY_MASK {
        0 => Quality::Good,
        1 => Quality::Partial,
        _ => Quality::Failed,
    }
}

fn ms_to_utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The synchronous outbox: owns one SQLite connection.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    meters: HashMap<String, i64>,
    run: i64,
    budget_bytes: u64,
    last_seq: u64,
    acked: u64,
    acked_persisted: u64,
    durable: u64,
    dropped: u64,
    dropped_through: u64,
    agg_seq: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meters(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS runs(run INTEGER PRIMARY KEY, boot TEXT NOT NULL, origin_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS readings(
    seq INTEGER PRIMARY KEY,
    meter INTEGER NOT NULL,
    ts_ms INTEGER,
    run INTEGER,
    mono_ms INTEGER,
    flags INTEGER NOT NULL,
    p_w REAL, e_imp REAL, e_exp REAL,
    extra BLOB,
    missing TEXT);
CREATE TABLE IF NOT EXISTS agg(
    meter INTEGER NOT NULL, step INTEGER NOT NULL, start INTEGER NOT NULL,
    n INTEGER NOT NULL, p_sum REAL, p_min REAL, p_max REAL,
    imp_min REAL, imp_max REAL, exp_min REAL, exp_max REAL,
    PRIMARY KEY(meter, step, start)) WITHOUT ROWID;
";

impl Store {
    /// Open (or create) the outbox in `dir`, registering this process as a new run.
    pub fn open(dir: &Path, budget_bytes: u64, run: &RunInfo) -> Result<Store, OutboxError> {
        let path = dir.join("outbox.sqlite");
        let open_err = |source| OutboxError::Open {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| OutboxError::Open {
            path: path.clone(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        let conn = Connection::open(&path).map_err(open_err)?;
        // Set before the first access: the WAL index then lives in this process's memory, not in
        // a memory-mapped `-shm` file whose pages the kernel writes back and the next commit
        // dirties again (about 55 B per reading at 16 readings a second, measured). The writer thread is the
        // only connection; the database is locked while the agent runs.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(open_err)?;
        // Small pages: a commit rewrites the last, partly filled page of the table; at one commit a
        // second that partial page dominates what the SD card is written per reading.
        conn.pragma_update(None, "page_size", 512)
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(open_err)?;
        conn.query_row(
            &format!("PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}"),
            [],
            |_| Ok(()),
        )
        .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        conn.execute(
            "INSERT INTO runs(boot, origin_ms) VALUES (?1, ?2)",
            params![run.boot, run.origin_ms],
        )
        .map_err(open_err)?;
        let run_id = conn.last_insert_rowid();
        let mut meters = HashMap::new();
        {
            let mut st = conn
                .prepare("SELECT id, name FROM meters")
                .map_err(open_err)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(open_err)?;
            for row in rows {
                let (id, name) = row.map_err(open_err)?;
                meters.insert(name, id);
            }
        }
        let meta = |k: &str| -> Result<u64, rusqlite::Error> {
            conn.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|v| v.unwrap_or(0).max(0) as u64)
        };
        let acked = meta("acked").map_err(open_err)?;
        let dropped = meta("dropped").map_err(open_err)?;
        let dropped_through = meta("dropped_through").map_err(open_err)?;
        let agg_seq = meta("agg_seq").map_err(open_err)?;
        let last_seq: i64 = conn
            .query_row("SELECT coalesce(max(seq), 0) FROM readings", [], |r| {
                r.get(0)
            })
            .map_err(open_err)?;
        let last_seq = (last_seq.max(0) as u64).max(acked).max(dropped_through);
        let mut store = Store {
            conn,
            path,
            meters,
            run: run_id,
            budget_bytes,
            last_seq,
            acked,
            acked_persisted: acked,
            durable: 0,
            dropped,
            dropped_through,
            agg_seq,
        };
        // What is on disk now may still sit in the page cache after a crash: sync it before any of
        // it is published.
        store.sync()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meter_id(&mut self, name: &str) -> Result<i64, rusqlite::Error> {
        if let Some(id) = self.meters.get(name) {
            return Ok(*id);
        }
        self.conn
            .execute("INSERT OR IGNORE INTO meters(name) VALUES (?1)", [name])?;
        let id: i64 =
            self.conn
                .query_row("SELECT id FROM meters WHERE name = ?1", [name], |r| {
                    r.get(0)
                })?;
        self.meters.insert(name.to_string(), id);
        Ok(id)
    }

    /// Store readings in one transaction, assigning the next seqs in order. On error nothing is
    /// stored and no seq is consumed.
    pub fn insert(&mut self, batch: &[Incoming]) -> Result<(), OutboxError> {
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.insert_inner(batch);
        match result {
            Ok(last) => {
                self.last_seq = last;
                Ok(())
            }
            Err(e) => {
                // Meter ids inserted by the rolled-back transaction do not exist.
                self.meters.clear();
                if let Ok(mut st) = self.conn.prepare("SELECT id, name FROM meters") {
                    if let Ok(rows) =
                        st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                    {
                        for (id, name) in rows.flatten() {
                            self.meters.insert(name, id);
                        }
                    }
                }
                Err(OutboxError::classify(e))
            }
        }
    }

    fn insert_inner(&mut self, batch: &[Incoming]) -> Result<u64, rusqlite::Error> {
        self.in_tx(|s| s.insert_rows(batch))
    }

    fn insert_rows(&mut self, batch: &[Incoming]) -> Result<u64, rusqlite::Error> {
        let mut seq = self.last_seq;
        for inc in batch {
            let r = &inc.reading;
            let meter = self.meter_id(&r.meter)?;
            seq += 1;
            let v = &r.values;
            let extra = pack_extra(v);
            let missing = if r.missing.is_empty() {
                None
            } else {
                serde_json::to_string(&r.missing).ok()
            };
            let flags = quality_code(r.quality)
                | if r.energy_integrated {
                    FLAG_INTEGRATED
                } else {
                    0
                };
            let ts = inc.synced.then(|| r.ts.timestamp_millis());
            // The run and monotonic stamp only matter to re-time a reading without a wall time.
            let (run, mono) = if ts.is_some() {
                (None, None)
            } else {
                (Some(self.run), Some(r.mono_ms as i64))
            };
            self.conn
                .prepare_cached(
                    "INSERT INTO readings(seq, meter, ts_ms, run, mono_ms, flags, p_w, e_imp, e_exp, extra, missing)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(params![
                    seq as i64,
                    meter,
                    ts,
                    run,
                    mono,
                    flags,
                    v.p_w,
                    v.e_imp_wh,
                    v.e_exp_wh,
                    extra,
                    missing
                ])?;
        }
        Ok(seq)
    }

    /// Run `f` in one transaction: committed if it succeeds, rolled back otherwise.
    fn in_tx<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, rusqlite::Error>,
    ) -> Result<T, rusqlite::Error> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(v),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(e)
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn put_meta(&self, k: &str, v: u64) -> Result<(), rusqlite::Error> {
        self.conn
            .prepare_cached("INSERT INTO meta(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v")?
            .execute(params![k, v as i64])?;
        Ok(())
    }

    /// Make everything committed so far survive a power cut; returns the durable seq.
    pub fn sync(&mut self) -> Result<u64, OutboxError> {
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        for p in [&wal, &self.path] {
            if let Ok(f) = std::fs::File::open(p) {
                f.sync_data()
                    .map_err(|e| OutboxError::DiskFull(format!("fsync {}: {e}", p.display())))?;
            }
        }
        self.durable = self.last_seq;
        Ok(self.durable)
    }

    pub fn durable(&self) -> u64 {
        self.durable
    }
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The central hub has stored every seq up to `seq`. Never moves backwards; persisted lazily.
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        let seq = seq.min(self.last_seq);
        if seq > self.acked {
            self.acked = seq;
        }
        Ok(())
    }

    /// Write the acknowledged seq now (at shutdown, or when it has waited long enough).
    pub fn persist_ack(&mut self) -> Result<(), OutboxError> {
        if self.acked != self.acked_persisted {
            self.put_meta("acked", self.acked)
                .map_err(OutboxError::classify)?;
            self.acked_persisted = self.acked;
        }
        Ok(())
    }

    /// Up to `limit` readings after `after`, in seq order, that are durable and have a wall time.
    /// Stops before the first reading still waiting to be re-timed (seq is the order).
    pub fn fetch(&mut self, after: u64, limit: usize) -> Result<Vec<WireReading>, OutboxError> {
        let mut st = self.conn.prepare_cached(
            "SELECT r.seq, m.name, r.ts_ms, r.flags, r.p_w, r.e_imp, r.e_exp, r.extra, r.missing
             FROM readings r JOIN meters m ON m.id = r.meter
             WHERE r.seq > ?1 AND r.seq <= ?2 ORDER BY r.seq LIMIT ?3",
        )?;
        let mut rows = st.query(params![after as i64, self.durable as i64, limit as i64])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let ts: Option<i64> = row.get(2)?;
            let Some(ts) = ts else { break };
            let flags: i64 = row.get(3)?;
            let extra: Option<Vec<u8>> = row.get(7)?;
            let x = extra.map(|b| unpack_extra(&b)).unwrap_or_default();
            let missing: Option<String> = row.get(8)?;
            let missing: Vec<Missing> = missing
                .and_then(|m| serde_json::from_str(&m).ok())
                .unwrap_or_default();
            out.push(WireReading {
                seq: row.get::<_, i64>(0)? as u64,
                meter: row.get(1)?,
                ts: ms_to_utc(ts),
                values: Values {
                    p_w: row.get(4)?,
                    e_imp_wh: row.get(5)?,
                    e_exp_wh: row.get(6)?,
                    v_v: [x[0], x[1], x[2]],
                    i_a: [x[3], x[4], x[5]],
                    f_hz: x[6],
                    pf: x[7],
                    ..Values::default()
                },
                quality: quality_of(flags),
                missing,
                retimed: flags & FLAG_RETIMED != 0,
                energy_integrated: flags & FLAG_INTEGRATED != 0,
            });
        }
        Ok(out)
    }

    /// The wall clock is now synchronised: `offset_ms` = wall ms − boot-time ms. Readings of runs in
    /// this boot get wall = origin + mono + offset; readings of another boot cannot be re-timed and
    /// take the time of the reading before them (or `now_ms`), marked re-timed all the same.
    pub fn retime(&mut self, boot: &str, offset_ms: i64, now_ms: i64) -> Result<u64, OutboxError> {
        let tx = self.conn.unchecked_transaction()?;
        let same_boot = self.conn.execute(
            "UPDATE readings SET flags = flags | ?3,
                ts_ms = (SELECT origin_ms FROM runs WHERE runs.run = readings.run) + mono_ms + ?2
             WHERE ts_ms IS NULL AND run IN (SELECT run FROM runs WHERE boot = ?1)",
            params![boot, offset_ms, FLAG_RETIMED],
        )?;
        let other = self.conn.execute(
            "UPDATE readings SET flags = flags | ?2,
                ts_ms = coalesce((SELECT r2.ts_ms FROM readings r2 WHERE r2.seq < readings.seq
                                  AND r2.ts_ms IS NOT NULL ORDER BY r2.seq DESC LIMIT 1), ?1)
             WHERE ts_ms IS NULL",
            params![now_ms, FLAG_RETIMED],
        )?;
        tx.commit()?;
        if other > 0 {
            tracing::warn!(
                readings = other,
                "readings taken before clock sync in an earlier boot cannot be re-timed exactly; \
                 stamped with the reading before them and marked re-timed"
            );
        }
        Ok((same_boot + other) as u64)
    }

    /// Fold readings whose minute has ended (`before_ms`) into the 1-minute and 15-minute
    /// aggregates, then prune what is acknowledged and aggregated, and old aggregates.
    pub fn compact(&mut self, before_ms: i64) -> Result<(), OutboxError> {
        let first_untimed: Option<i64> = self.conn.query_row(
            "SELECT min(seq) FROM readings WHERE seq > ?1 AND ts_ms IS NULL",
            [self.agg_seq as i64],
            |r| r.get(0),
        )?;
        let hi: Option<i64> = self.conn.query_row(
            "SELECT max(seq) FROM readings WHERE seq > ?1 AND seq < ?2 AND ts_ms < ?3",
            params![
                self.agg_seq as i64,
                first_untimed.unwrap_or(i64::MAX),
                before_ms
            ],
            |r| r.get(0),
        )?;
        let cut_1m = before_ms / 1000 - KEEP_1M_DAYS * 86_400;
        let cut_15m = before_ms / 1000 - KEEP_15M_DAYS * 86_400;
        self.in_tx(|s| s.compact_rows(hi, cut_1m, cut_15m))?;
        self.acked_persisted = self.acked;
        Ok(())
    }

    fn compact_rows(
        &mut self,
        hi: Option<i64>,
        cut_1m: i64,
        cut_15m: i64,
    ) -> Result<(), rusqlite::Error> {
        if let Some(hi) = hi {
            for step in [60i64, 900] {
                self.conn.execute(
                    "INSERT INTO agg(meter, step, start, n, p_sum, p_min, p_max, imp_min, imp_max, exp_min, exp_max)
                     SELECT meter, ?3, (ts_ms / (?3 * 1000)) * ?3 AS st, count(p_w), sum(p_w), min(p_w), max(p_w),
                            min(e_imp), max(e_imp), min(e_exp), max(e_exp)
                     FROM readings WHERE seq > ?1 AND seq <= ?2 AND ts_ms IS NOT NULL
                     GROUP BY meter, st
                     ON CONFLICT(meter, step, start) DO UPDATE SET
                        n = n + excluded.n, p_sum = coalesce(p_sum, 0) + coalesce(excluded.p_sum, 0),
                        p_min = min(coalesce(p_min, excluded.p_min), coalesce(excluded.p_min, p_min)),
                        p_max = max(coalesce(p_max, excluded.p_max), coalesce(excluded.p_max, p_max)),
                        imp_min = min(coalesce(imp_min, excluded.imp_min), coalesce(excluded.imp_min, imp_min)),
                        imp_max = max(coalesce(imp_max, excluded.imp_max), coalesce(excluded.imp_max, imp_max)),
                        exp_min = min(coalesce(exp_min, excluded.exp_min), coalesce(excluded.exp_min, exp_min)),
                        exp_max = max(coalesce(exp_max, excluded.exp_max), coalesce(excluded.exp_max, exp_max))",
                    params![self.agg_seq as i64, hi, step],
                )?;
            }
            self.agg_seq = hi as u64;
            self.put_meta("agg_seq", self.agg_seq)?;
        }
        self.prune_acked()?;
        self.conn.execute(
            "DELETE FROM agg WHERE (step = 60 AND start < ?1) OR (step = 900 AND start < ?2)",
            params![cut_1m, cut_15m],
        )?;
        if self.acked != self.acked_persisted {
            self.put_meta("acked", self.acked)?;
        }
        Ok(())
    }

    /// Delete raw readings that are acknowledged and aggregated, always keeping the highest row
    /// (it carries the next seq).
    fn prune_acked(&mut self) -> Result<usize, rusqlite::Error> {
        let upto = self
            .acked
            .min(self.agg_seq)
            .min(self.last_seq.saturating_sub(1));
        self.conn
            .execute("DELETE FROM readings WHERE seq <= ?1", [upto as i64])
    }

    /// Bytes in use: database pages not on the free list, plus the WAL file.
    pub fn disk_bytes(&self) -> Result<u64, OutboxError> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let wal = std::fs::metadata(format!("{}-wal", self.path.display()))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(((pages - free).max(0) * size) as u64 + wal)
    }

    /// Keep the database within the budget: prune acknowledged history first (raw, then the oldest
    /// aggregates); only if unacknowledged readings alone exceed it, drop the oldest of them.
    /// Returns how many unacknowledged readings were dropped.
    pub fn enforce_budget(&mut self) -> Result<u64, OutboxError> {
        let db_bytes = |s: &Store| -> Result<u64, OutboxError> {
            let pages: i64 = s.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let free: i64 = s
                .conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            let size: i64 = s.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok(((pages - free).max(0) * size) as u64)
        };
        if db_bytes(self)? <= self.budget_bytes {
            return Ok(0);
        }
        let tx = self.conn.unchecked_transaction()?;
        // Acknowledged raw rows go first, aggregated or not: under budget pressure the aggregates
        // of rows not yet folded in are given up before any unacknowledged reading is.
        let upto = self.acked.min(self.last_seq.saturating_sub(1));
        self.conn
            .execute("DELETE FROM readings WHERE seq <= ?1", [upto as i64])?;
        self.agg_seq = self.agg_seq.max(upto);
        self.put_meta("agg_seq", self.agg_seq)?;
        tx.commit()?;
        // Then the oldest aggregates, a day at a time (1-minute ones before 15-minute ones).
        for step in [60i64, 900] {
            while db_bytes(self)? > self.budget_bytes {
                let oldest: Option<i64> = self.conn.query_row(
                    "SELECT min(start) FROM agg WHERE step = ?1",
                    [step],
                    |r| r.get(0),
                )?;
                let Some(oldest) = oldest else { break };
                self.conn.execute(
                    "DELETE FROM agg WHERE step = ?1 AND start < ?2",
                    params![step, oldest + 86_400],
                )?;
            }
        }
        let mut dropped = 0u64;
        while db_bytes(self)? > self.budget_bytes {
            let first = self.acked.max(self.dropped_through);
            let unacked = self.last_seq.saturating_sub(first + 1); // the last row always stays
            if unacked == 0 {
                break;
            }
            let used = db_bytes(self)?;
            let over = used - self.budget_bytes;
            // Free a tenth of the budget beyond what is over, so the next readings do not drop again.
            let share = (over + self.budget_bytes / 10) as f64 / used.max(1) as f64;
            let n = ((unacked as f64 * share).ceil() as u64).clamp(1, unacked);
            let through = first + n;
            let tx = self.conn.unchecked_transaction()?;
            let gone = self.conn.execute(
                "DELETE FROM readings WHERE seq > ?1 AND seq <= ?2",
                params![first as i64, through as i64],
            )?;
            self.dropped += gone as u64;
            self.dropped_through = through;
            self.agg_seq = self.agg_seq.max(through);
            self.put_meta("dropped", self.dropped)?;
            self.put_meta("dropped_through", self.dropped_through)?;
            self.put_meta("agg_seq", self.agg_seq)?;
            tx.commit()?;
            dropped += gone as u64;
        }
        if dropped > 0 {
            tracing::error!(
                dropped,
                through_seq = self.dropped_through,
                budget_bytes = self.budget_bytes,
                "disk budget exceeded by unacknowledged readings alone: dropped the oldest"
            );
        }
        Ok(dropped)
    }

    pub fn dropped_through(&self) -> u64 {
        self.dropped_through
    }

    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let from = self.acked.max(self.dropped_through) as i64;
        let (backlog, untimed): (i64, i64) = self.conn.query_row(
            "SELECT count(*), count(*) - count(ts_ms) FROM readings WHERE seq > ?1",
            [from],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let oldest: Option<i64> = self
            .conn
            .query_row(
                "SELECT ts_ms FROM readings WHERE seq > ?1 ORDER BY seq LIMIT 1",
                [from],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(OutboxStats {
            last_seq: self.last_seq,
            acked: self.acked,
            durable: self.durable,
            backlog: backlog as u64,
            untimed: untimed as u64,
            oldest_unacked: oldest.map(ms_to_utc),
            disk_bytes: self.disk_bytes()?,
            budget_bytes: self.budget_bytes,
            dropped: self.dropped,
            dropped_through: self.dropped_through,
            pending: 0,
            last_error: None,
        })
    }

    /// Aggregates of `step_s` (60 or 900; other steps are served from the nearest finer one,
    /// re-grouped) between `from` and `to`.
    pub fn history(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_s: i64,
    ) -> Result<Vec<HistoryRow>, OutboxError> {
        let base = if step_s >= 900 && step_s % 900 == 0 {
            900
        } else {
            60
        };
        let step_s = (step_s.max(base) / base) * base;
        let mut st = self.conn.prepare_cached(
            "SELECT m.name, (a.start / ?4) * ?4 AS st, sum(a.n), sum(a.p_sum), min(a.p_min), max(a.p_max),
                    max(a.imp_max) - min(a.imp_min), max(a.exp_max) - min(a.exp_min)
             FROM agg a JOIN meters m ON m.id = a.meter
             WHERE a.step = ?1 AND a.start >= ?2 AND a.start < ?3
             GROUP BY m.name, st ORDER BY st, m.name",
        )?;
        let rows = st.query_map(
            params![base, from.timestamp(), to.timestamp(), step_s],
            |r| {
                let n: i64 = r.get(2)?;
                let sum: Option<f64> = r.get(3)?;
                Ok(HistoryRow {
                    meter: r.get(0)?,
                    start: ms_to_utc(r.get::<_, i64>(1)? * 1000),
                    step_s,
                    samples: n,
                    p_avg_w: sum.filter(|_| n > 0).map(|s| s / n as f64),
                    p_min_w: r.get(4)?,
                    p_max_w: r.get(5)?,
                    e_imp_wh: r.get(6)?,
                    e_exp_wh: r.get(7)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Like [`Store::history`], one row per meter and span (for example the local days from
    /// [`crate::days::local_days`]), from the 15-minute aggregates; `step_s` of a row is its
    /// span's length.
    pub fn history_spans(
        &self,
        spans: &[(DateTime<Utc>, DateTime<Utc>)],
    ) -> Result<Vec<HistoryRow>, OutboxError> {
        let mut st = self.conn.prepare_cached(
            "SELECT m.name, sum(a.n), sum(a.p_sum), min(a.p_min), max(a.p_max),
                    max(a.imp_max) - min(a.imp_min), max(a.exp_max) - min(a.exp_min)
             FROM agg a JOIN meters m ON m.id = a.meter
             WHERE a.step = 900 AND a.start >= ?1 AND a.start < ?2
             GROUP BY m.name ORDER BY m.name",
        )?;
        let mut out = Vec::new();
        for (from, to) in spans {
            let step_s = (*to - *from).num_seconds();
            let rows = st.query_map(params![from.timestamp(), to.timestamp()], |r| {
                let n: i64 = r.get(1)?;
                let sum: Option<f64> = r.get(2)?;
                Ok(HistoryRow {
                    meter: r.get(0)?,
                    start: *from,
                    step_s,
                    samples: n,
                    p_avg_w: sum.filter(|_| n > 0).map(|s| s / n as f64),
                    p_min_w: r.get(3)?,
                    p_max_w: r.get(4)?,
                    e_imp_wh: r.get(5)?,
                    e_exp_wh: r.get(6)?,
                })
            })?;
            for r in rows {
                out.push(r?);
            }
        }
        Ok(out)
    }

    /// Commit the checkpoint of the WAL into the database (at shutdown).
    pub fn checkpoint(&mut self) -> Result<(), OutboxError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Copy the WAL into the database without truncating it (the writer's cadence): the next
    /// commit restarts the WAL from its beginning, overwriting it in place.
    pub fn checkpoint_passive(&mut self) -> Result<(), OutboxError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }
}

enum Cmd {
    Insert(Box<Incoming>),
    Ack(u64),
    Fetch {
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Fetched, OutboxError>>,
    },
    Retime {
        boot: String,
        offset_ms: i64,
        now_ms: i64,
    },
    History {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_s: i64,
        reply: oneshot::Sender<Result<Vec<HistoryRow>, OutboxError>>,
    },
    HistorySpans {
        spans: Vec<(DateTime<Utc>, DateTime<Utc>)>,
        reply: oneshot::Sender<Result<Vec<HistoryRow>, OutboxError>>,
    },
    Flush(oneshot::Sender<()>),
    Stop,
}

/// Handle on the writer thread. Cloneable; the thread stops when every handle is dropped or
/// [`Outbox::shutdown`] is called.
#[derive(Clone)]
pub struct Outbox {
    tx: std_mpsc::Sender<Cmd>,
    stats: Arc<Mutex<OutboxStats>>,
    durable: watch::Receiver<u64>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Wall-clock source for the writer's minute boundaries (the agent's clock).
pub type WallMs = Arc<dyn Fn() -> Option<i64> + Send + Sync>;

impl Outbox {
    /// Start the writer thread on an opened store. `wall_ms` gives the wall time when it is
    /// trusted (None before clock sync: aggregation waits).
    pub fn start(mut store: Store, wall_ms: WallMs) -> Outbox {
        let (tx, rx) = std_mpsc::channel::<Cmd>();
        let first = store.stats().unwrap_or_default();
        let (durable_tx, durable_rx) = watch::channel(store.durable());
        let stats = Arc::new(Mutex::new(first));
        let stats_w = stats.clone();
        let handle = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer(&mut store, rx, stats_w, durable_tx, wall_ms))
            .ok();
        if handle.is_none() {
            tracing::error!("cannot start the outbox writer thread");
        }
        Outbox {
            tx,
            stats,
            durable: durable_rx,
            thread: Arc::new(Mutex::new(handle)),
        }
    }

    /// Queue a reading; it is committed and synced within [`SYNC_EVERY`].
    pub fn push(&self, inc: Incoming) -> Result<(), OutboxError> {
        self.tx
            .send(Cmd::Insert(Box::new(inc)))
            .map_err(|_| OutboxError::Stopped)
    }

    pub fn ack(&self, seq: u64) {
        let _ = self.tx.send(Cmd::Ack(seq));
    }

    pub fn retime(&self, boot: String, offset_ms: i64, now_ms: i64) {
        let _ = self.tx.send(Cmd::Retime {
            boot,
            offset_ms,
            now_ms,
        });
    }

    /// The next readings after `after`, with the acknowledged and dropped marks as they stood when
    /// they were read (so a batch never announces as dropped a seq it carries).
    pub async fn fetch(&self, after: u64, limit: usize) -> Result<Fetched, OutboxError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Fetch {
                after,
                limit,
                reply,
            })
            .map_err(|_| OutboxError::Stopped)?;
        rx.await.map_err(|_| OutboxError::Stopped)?
    }

    pub async fn history(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step_s: i64,
    ) -> Result<Vec<HistoryRow>, OutboxError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::History {
                from,
                to,
                step_s,
                reply,
            })
            .map_err(|_| OutboxError::Stopped)?;
        rx.await.map_err(|_| OutboxError::Stopped)?
    }

    /// History per span (local days), see [`Store::history_spans`].
    pub async fn history_spans(
        &self,
        spans: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> Result<Vec<HistoryRow>, OutboxError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::HistorySpans { spans, reply })
            .map_err(|_| OutboxError::Stopped)?;
        rx.await.map_err(|_| OutboxError::Stopped)?
    }

    /// Commit and sync everything queued so far.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Flush(reply))
            .map_err(|_| OutboxError::Stopped)?;
        rx.await.map_err(|_| OutboxError::Stopped)
    }

    pub fn stats(&self) -> OutboxStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The durable seq, changing as commits are synced.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Commit, sync, persist the ack, checkpoint and stop the writer (other handles then get
    /// [`OutboxError::Stopped`]); waits for the thread in a blocking task.
    pub async fn shutdown(self) {
        let _ = self.flush().await;
        let _ = self.tx.send(Cmd::Stop);
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

fn writer(
    store: &mut Store,
    rx: std_mpsc::Receiver<Cmd>,
    stats: Arc<Mutex<OutboxStats>>,
    durable_tx: watch::Sender<u64>,
    wall_ms: WallMs,
) {
    let mut pending: VecDeque<Incoming> = VecDeque::new();
    let mut next_commit = Instant::now() + SYNC_EVERY;
    let mut last_checkpoint = Instant::now();
    let mut last_ack_persist = Instant::now();
    let mut last_compact_minute: i64 = 0;
    let mut last_error: Option<String> = None;
    let mut pending_dropped = 0u64;
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let wait = next_commit.saturating_duration_since(Instant::now());
        let mut stop = false;
        match rx.recv_timeout(wait) {
            Ok(Cmd::Insert(inc)) => {
                pending.push_back(*inc);
                if pending.len() > MAX_PENDING {
                    pending.pop_front();
                    if pending_dropped == 0 {
                        tracing::error!(
                            kept = MAX_PENDING,
                            "the disk refuses writes and memory is full: dropping the oldest unstored readings"
                        );
                    }
                    pending_dropped += 1;
                }
            }
            Ok(Cmd::Ack(seq)) => {
                let _ = store.ack(seq);
            }
            Ok(Cmd::Fetch {
                after,
                limit,
                reply,
            }) => {
                let fetched = store.fetch(after, limit).map(|readings| Fetched {
                    readings,
                    acked: store.acked,
                    dropped_through: store.dropped_through,
                });
                let _ = reply.send(fetched);
            }
            Ok(Cmd::History {
                from,
                to,
                step_s,
                reply,
            }) => {
                let _ = reply.send(store.history(from, to, step_s));
            }
            Ok(Cmd::HistorySpans { spans, reply }) => {
                let _ = reply.send(store.history_spans(&spans));
            }
            Ok(Cmd::Retime {
                boot,
                offset_ms,
                now_ms,
            }) => {
                // Commit first so the readings queued before sync are re-timed too.
                if store.insert(pending.make_contiguous()).is_ok() {
                    pending.clear();
                }
                match store.retime(&boot, offset_ms, now_ms) {
                    Ok(n) => tracing::info!(
                        readings = n,
                        "clock synchronised: re-timed readings taken before"
                    ),
                    Err(e) => tracing::error!("re-timing readings failed: {e}"),
                }
            }
            Ok(Cmd::Flush(reply)) => {
                flushes.push(reply);
                next_commit = Instant::now();
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Ok(Cmd::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => stop = true,
        }
        let now = Instant::now();
        let bulk = pending.len() >= 10_000 && last_error.is_none();
        if now < next_commit && !stop && !bulk {
            continue;
        }
        next_commit = now + SYNC_EVERY;
        match store.insert(pending.make_contiguous()) {
            Ok(()) => {
                pending.clear();
                if last_error.take().is_some() {
                    tracing::info!("outbox writes again");
                }
            }
            Err(e) => {
                if last_error.is_none() {
                    tracing::error!(
                        pending = pending.len(),
                        "cannot store readings: {e}; keeping them in memory and retrying"
                    );
                }
                last_error = Some(e.to_string());
            }
        }
        if let Err(e) = store.enforce_budget() {
            tracing::warn!("disk budget check failed: {e}");
        }
        // Every commit is synced at once: one fsync per SYNC_EVERY, the power-cut window.
        if store.durable() < store.last_seq() {
            match store.sync() {
                Ok(d) => {
                    let _ = durable_tx.send(d);
                }
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        if let Some(wall) = wall_ms() {
            let minute = wall / 60_000;
            if minute != last_compact_minute {
                match store.compact(minute * 60_000) {
                    Ok(()) => {
                        last_compact_minute = minute;
                        // The compaction wrote the acknowledged seq in its transaction.
                        last_ack_persist = now;
                    }
                    Err(e) => tracing::warn!("compaction failed: {e}"),
                }
            }
        }
        if stop || !flushes.is_empty() || now.duration_since(last_ack_persist) >= ACK_PERSIST_EVERY
        {
            if let Err(e) = store.persist_ack() {
                tracing::warn!("cannot persist the acknowledged seq: {e}");
            }
            last_ack_persist = now;
        }
        if now.duration_since(last_checkpoint) >= CHECKPOINT_EVERY {
            // After a sync, so the checkpoint copies only what is already power-cut safe.
            if let Err(e) = store.checkpoint_passive() {
                tracing::warn!("WAL checkpoint failed: {e}");
            }
            last_checkpoint = now;
        }
        match store.stats() {
            Ok(mut s) => {
                s.pending = pending.len() as u64;
                s.dropped += pending_dropped;
                s.last_error = last_error.clone();
                if let Ok(mut g) = stats.lock() {
                    *g = s;
                }
            }
            Err(e) => {
                if let Ok(mut g) = stats.lock() {
                    g.pending = pending.len() as u64;
                    g.last_error = Some(last_error.clone().unwrap_or_else(|| e.to_string()));
                }
            }
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
        if stop {
            let _ = store.checkpoint();
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunInfo {
        RunInfo {
            boot: "boot-a".into(),
            origin_ms: 1_000,
        }
    }

    fn reading(meter: &str, ts_ms: i64, mono_ms: u64, p: f64) -> Incoming {
        Incoming {
            reading: Reading {
                meter: meter.into(),
                ts: ms_to_utc(ts_ms),
                mono_ms,
                values: Values {
                    p_w: Some(p),
                    e_imp_wh: Some(1000.0 + p),
                    v_v: [Some(230.1), None, None],
                    ..Values::default()
                },
                quality: Quality::Good,
                missing: vec![],
                energy_integrated: false,
            },
            synced: true,
        }
    }

    const T0: i64 = 1_780_000_000_000; // 2026-05-28

    #[test]
    fn seqs_increase_and_survive_reopen_even_after_pruning_everything_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        s.insert(&[reading("a", T0, 0, 1.0), reading("b", T0, 0, 2.0)])
            .unwrap();
        s.sync().unwrap();
        let page: i64 = s
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page, 512);
        let got = s.fetch(0, 10).unwrap();
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(got[1].meter, "b");
        assert_eq!(got[1].values.v_v[0], Some(230.1));
        s.ack(2).unwrap();
        s.compact(T0 + 120_000).unwrap();
        drop(s);
        let mut s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        assert_eq!(s.acked(), 2);
        s.insert(&[reading("a", T0 + 1000, 1000, 3.0)]).unwrap();
        s.sync().unwrap();
        assert_eq!(
            s.fetch(2, 10)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            vec![3]
        );
    }

    #[test]
    fn unsynced_readings_wait_and_are_retimed_from_the_monotonic_clock() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        let mut early = reading("a", 0, 500, 1.0); // wall clock says 1970
        early.synced = false;
        s.insert(&[early]).unwrap();
        s.insert(&[reading("a", T0, 9_000, 2.0)]).unwrap();
        s.sync().unwrap();
        assert!(
            s.fetch(0, 10).unwrap().is_empty(),
            "nothing leaves before its time is known"
        );
        // Sync: wall = boot-time + offset; this run's origin is boot-time 1000 ms.
        let offset = T0 - (1_000 + 9_000);
        assert_eq!(s.retime("boot-a", offset, T0).unwrap(), 1);
        let got = s.fetch(0, 10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].ts.timestamp_millis(), T0 - 8_500);
        assert!(got[0].retimed);
        assert!(!got[1].retimed);
    }

    /// A store written by the schema and pragmas before the write-path changes
    /// (`hub/tests/fixtures/outbox-v1.sqlite`: 2 meters × 180 s from 1_780_000_020_000 ms, seqs
    /// 1..=360, the first 240 acknowledged, aggregated and pruned).
    #[test]
    fn a_store_written_by_the_previous_version_opens_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/outbox-v1.sqlite"
        );
        std::fs::copy(fixture, dir.path().join("outbox.sqlite")).unwrap();
        let t0: i64 = 1_780_000_020_000;
        let mut s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        assert_eq!((s.last_seq(), s.acked(), s.durable()), (360, 240, 360));
        let got = s.fetch(240, 1000).unwrap();
        assert_eq!(got.len(), 120);
        assert_eq!((got[0].seq, got[0].meter.as_str()), (241, "grid"));
        assert_eq!(got[0].ts.timestamp_millis(), t0 + 120_000);
        assert_eq!(got[0].values.p_w, Some(120.0));
        assert_eq!(got[0].values.e_imp_wh, Some(1120.0));
        assert_eq!(got[0].values.v_v, [Some(230.1), Some(229.9), None]);
        assert_eq!(got[0].values.pf, Some(0.97));
        assert_eq!((got[119].seq, got[119].meter.as_str()), (360, "pv"));
        let h = s
            .history(ms_to_utc(t0), ms_to_utc(t0 + 120_000), 60)
            .unwrap();
        let avg: Vec<_> = h.iter().map(|r| (r.meter.as_str(), r.p_avg_w)).collect();
        assert_eq!(
            avg,
            vec![
                ("grid", Some(29.5)),
                ("pv", Some(59.0)),
                ("grid", Some(89.5)),
                ("pv", Some(179.0))
            ]
        );
        // It goes on: the next seq, the third minute aggregated once acknowledged.
        s.insert(&[reading("grid", t0 + 180_000, 0, 7.0)]).unwrap();
        s.sync().unwrap();
        assert_eq!(s.last_seq(), 361);
        s.ack(361).unwrap();
        s.compact(t0 + 240_000).unwrap();
        let h = s
            .history(ms_to_utc(t0 + 120_000), ms_to_utc(t0 + 240_000), 60)
            .unwrap();
        let n: Vec<_> = h.iter().map(|r| (r.meter.as_str(), r.samples)).collect();
        assert_eq!(n, vec![("grid", 60), ("pv", 60), ("grid", 1)]);
        drop(s);
        let s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        assert_eq!((s.last_seq(), s.acked()), (361, 361));
    }

    #[test]
    fn commits_leave_the_acknowledged_seq_to_the_compaction_and_the_wal_to_its_cadence() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        let pragma = |s: &Store, p: &str| -> i64 {
            s.conn
                .query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(pragma(&s, "wal_autocheckpoint"), WAL_AUTOCHECKPOINT_PAGES);
        let locking: String = s
            .conn
            .query_row("PRAGMA locking_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(locking, "exclusive");
        assert_eq!(pragma(&s, "journal_size_limit"), JOURNAL_SIZE_LIMIT_BYTES);
        let stored_ack = |s: &Store| -> Option<i64> {
            s.conn
                .query_row("SELECT v FROM meta WHERE k = 'acked'", [], |r| r.get(0))
                .optional()
                .unwrap()
        };
        s.insert(&[reading("a", T0, 0, 1.0), reading("a", T0 + 1000, 1, 2.0)])
            .unwrap();
        s.ack(2).unwrap();
        // A commit with an acknowledgement pending does not rewrite the meta page...
        s.insert(&[reading("a", T0 + 2000, 2, 3.0)]).unwrap();
        assert_eq!(stored_ack(&s), None);
        // ...the minute's compaction does, in its own transaction.
        s.compact(T0 + 60_000).unwrap();
        assert_eq!(stored_ack(&s), Some(2));
        s.ack(3).unwrap();
        s.persist_ack().unwrap();
        assert_eq!(stored_ack(&s), Some(3));
        s.sync().unwrap();
        assert!(dir.path().join("outbox.sqlite-wal").exists());
        assert!(
            !dir.path().join("outbox.sqlite-shm").exists(),
            "the WAL index stays in memory"
        );
    }

    #[test]
    fn acknowledged_readings_become_aggregates_and_history_reports_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        let start = (T0 / 900_000) * 900_000;
        let batch: Vec<Incoming> = (0..120)
            .map(|i| reading("a", start + i * 1000, i as u64, i as f64))
            .collect();
        s.insert(&batch).unwrap();
        s.sync().unwrap();
        s.ack(120).unwrap();
        s.compact(start + 120_000).unwrap();
        let h = s
            .history(ms_to_utc(start), ms_to_utc(start + 120_000), 60)
            .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].samples, 60);
        assert_eq!(h[0].p_avg_w, Some(29.5));
        assert_eq!(h[1].p_max_w, Some(119.0));
        assert_eq!(h[1].e_imp_wh, Some(59.0));
        let q = s
            .history(ms_to_utc(start), ms_to_utc(start + 900_000), 900)
            .unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].samples, 120);
        let left: i64 = s
            .conn
            .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            left, 1,
            "acknowledged raw rows are pruned except the one carrying the next seq"
        );
    }

    /// One 15-minute aggregate per slot from `from` to `to`, the import counter rising 100 Wh per
    /// slot; returns the history by local day of Europe/Rome.
    fn rome_days_of_steady_import(from: &str, to: &str) -> Vec<HistoryRow> {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        let t = |x: &str| DateTime::parse_from_rfc3339(x).unwrap().with_timezone(&Utc);
        s.conn
            .execute("INSERT INTO meters(id, name) VALUES (7, 'grid')", [])
            .unwrap();
        let (from, to) = (t(from), t(to));
        let mut start = from.timestamp();
        let mut k = 0.0;
        while start < to.timestamp() {
            s.conn
                .execute(
                    "INSERT INTO agg VALUES (7, 900, ?1, 1, 400.0, 400.0, 400.0, ?2, ?3, 0.0, 0.0)",
                    params![start, k * 100.0, k * 100.0 + 100.0],
                )
                .unwrap();
            start += 900;
            k += 1.0;
        }
        let days = crate::days::local_days(&chrono_tz::Europe::Rome, from, to, 40);
        s.history_spans(&days).unwrap()
    }

    #[test]
    fn local_days_of_the_dst_changes_hold_23_and_25_hours_of_energy() {
        // Summer time begins on 29 March 2026: that day has 23 hours (92 slots).
        let spring = rome_days_of_steady_import("2026-03-27T23:00:00Z", "2026-03-30T22:00:00Z");
        let got: Vec<(String, i64, Option<f64>, i64)> = spring
            .iter()
            .map(|r| (r.start.to_rfc3339(), r.step_s, r.e_imp_wh, r.samples))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "2026-03-27T23:00:00+00:00".into(),
                    86_400,
                    Some(9_600.0),
                    96
                ),
                (
                    "2026-03-28T23:00:00+00:00".into(),
                    82_800,
                    Some(9_200.0),
                    92
                ),
                (
                    "2026-03-29T22:00:00+00:00".into(),
                    86_400,
                    Some(9_600.0),
                    96
                ),
            ]
        );
        // Summer time ends on 25 October 2026: that day has 25 hours (100 slots).
        let autumn = rome_days_of_steady_import("2026-10-23T22:00:00Z", "2026-10-26T23:00:00Z");
        let got: Vec<(String, i64, Option<f64>)> = autumn
            .iter()
            .map(|r| (r.start.to_rfc3339(), r.step_s, r.e_imp_wh))
            .collect();
        assert_eq!(
            got,
            vec![
                ("2026-10-23T22:00:00+00:00".into(), 86_400, Some(9_600.0)),
                ("2026-10-24T22:00:00+00:00".into(), 90_000, Some(10_000.0)),
                ("2026-10-25T23:00:00+00:00".into(), 86_400, Some(9_600.0)),
            ]
        );
    }

    #[test]
    fn over_budget_prunes_acknowledged_first_then_drops_the_oldest_unacknowledged_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 64 * 1024, &run()).unwrap();
        let mut seq_ts = T0;
        for _ in 0..20 {
            let batch: Vec<Incoming> = (0..100)
                .map(|_| {
                    seq_ts += 1000;
                    reading("a", seq_ts, 0, 1.0)
                })
                .collect();
            s.insert(&batch).unwrap();
        }
        s.ack(1000).unwrap();
        assert_eq!(
            s.enforce_budget().unwrap(),
            0,
            "acknowledged rows alone make room"
        );
        for _ in 0..40 {
            let batch: Vec<Incoming> = (0..100)
                .map(|_| {
                    seq_ts += 1000;
                    reading("a", seq_ts, 0, 1.0)
                })
                .collect();
            s.insert(&batch).unwrap();
            s.enforce_budget().unwrap();
        }
        let st = s.stats().unwrap();
        assert!(st.dropped > 0, "{st:?}");
        assert!(
            st.disk_bytes
                - std::fs::metadata(format!("{}-wal", s.path.display()))
                    .map(|m| m.len())
                    .unwrap_or(0)
                <= 64 * 1024
        );
        assert_eq!(st.last_seq, 6000);
        // What is left is contiguous from just after the drop to the end.
        s.sync().unwrap();
        let left = s.fetch(0, 10_000).unwrap();
        assert_eq!(left.first().unwrap().seq, st.dropped_through + 1);
        assert_eq!(left.last().unwrap().seq, 6000);
        assert_eq!(left.len() as u64, 6000 - st.dropped_through);
        assert_eq!(st.dropped, st.dropped_through - 1000);
    }

    #[test]
    fn packed_extras_round_trip_exactly_whether_or_not_f32_can_hold_them() {
        let v = Values {
            v_v: [Some(230.1), None, Some(f64::from(229.8f32))],
            i_a: [None, Some(-1.5), None],
            f_hz: Some(50.0),
            pf: Some(0.97),
            ..Values::default()
        };
        let b = pack_extra(&v).unwrap();
        // 230.1: tag + 2 varint bytes; 229.8f32: tag + 4; -1.5 and 50: tag + 1; 0.97: tag + 2.
        assert_eq!(b.len(), 1 + 3 + 5 + 2 + 2 + 3, "{b:?}");
        let x = unpack_extra(&b);
        assert_eq!([x[0], x[1], x[2]], v.v_v);
        assert_eq!([x[3], x[4], x[5]], v.i_a);
        assert_eq!((x[6], x[7]), (v.f_hz, v.pf));
        assert_eq!(
            pack_extra(&Values {
                p_w: Some(1.0),
                ..Values::default()
            }),
            None
        );
        assert_eq!(
            unpack_extra(&[0xff, 0, 1]),
            [None; 8],
            "a truncated blob yields nothing, not garbage"
        );
        for x in [
            0.0,
            -0.001,
            1e-9,
            123456.789,
            f64::MAX,
            -7.25e20,
            0.1 + 0.2,
            f64::from(0.3f32),
        ] {
            let mut b = Vec::new();
            pack_value(x, &mut b);
            assert_eq!(unpack_value(&b, &mut 0), Some(x), "{x}");
        }
    }

    #[test]
    fn only_durable_readings_are_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        s.insert(&[reading("a", T0, 0, 1.0)]).unwrap();
        assert!(s.fetch(0, 10).unwrap().is_empty());
        s.sync().unwrap();
        assert_eq!(s.fetch(0, 10).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_writer_commits_flushes_and_reports_stats() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        let ob = Outbox::start(s, Arc::new(|| Some(T0)));
        for i in 0..50 {
            ob.push(reading("a", T0 + i, i as u64, 1.0)).unwrap();
        }
        ob.flush().await.unwrap();
        assert_eq!(*ob.durable().borrow(), 50);
        let st = ob.stats();
        assert_eq!((st.last_seq, st.backlog), (50, 50));
        ob.ack(20);
        let got = ob.fetch(20, 100).await.unwrap();
        assert_eq!(got.readings.first().map(|r| r.seq), Some(21));
        assert_eq!((got.acked, got.dropped_through), (20, 0));
        ob.flush().await.unwrap();
        assert_eq!(ob.stats().backlog, 30);
        ob.shutdown().await;
        let s = Store::open(dir.path(), 1 << 30, &run()).unwrap();
        assert_eq!((s.last_seq(), s.acked()), (50, 20));
    }
}
