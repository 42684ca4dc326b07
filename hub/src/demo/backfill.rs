//! History for the demo: simulated past readings written into each site's own outbox (the site
//! agent's `Store`) before its agent starts, so they travel outbox → MQTT → central like live ones.
//! Writes only into the demo's data folder; the counters it ends with seed the live meters.

use std::path::{Path, PathBuf};

use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};

use super::meters::Register;
use super::model::{history, Community, Counter};
use super::{BACKFILL_EVERY_S, BACKFILL_INTEGRATE_S};
use crate::site::outbox::{Incoming, OutboxError, RunInfo, Store};

/// Outbox budget of a demo site, bytes.
const BUDGET_BYTES: u64 = 200_000_000;
/// Readings per outbox transaction.
const CHUNK: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("backfill of `{building}`: outbox in {dir}: {source}")]
    Outbox {
        building: String,
        dir: PathBuf,
        source: Box<OutboxError>,
    },
    #[error("backfill of `{building}`: the worker thread panicked")]
    Panicked { building: String },
}

/// Where the history ends: the counters of every meter (per building, in scenario order) at `to`.
#[derive(Debug, Clone)]
pub struct Filled {
    /// Start of the history, `None` without one.
    pub from: Option<DateTime<Utc>>,
    pub to: DateTime<Utc>,
    pub counters: Vec<Vec<Counter>>,
    /// Readings written to the outboxes.
    pub readings: u64,
}

impl Filled {
    /// No history: every meter starts at plausible counters at `now`.
    pub fn fresh(c: &Community, now: DateTime<Utc>) -> Filled {
        let counters = (0..c.buildings().len())
            .map(|b| c.initial_counters(b, now))
            .collect();
        Filled {
            from: None,
            to: now,
            counters,
            readings: 0,
        }
    }
}

/// What a cleanly stopped demo leaves in its data folder (`state.json`) to carry on from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub seed: u64,
    /// Building ids in scenario order: the counters belong to this scenario only.
    pub buildings: Vec<String>,
    /// When the counters were read.
    pub at: DateTime<Utc>,
    pub counters: Vec<Vec<Counter>>,
}

impl Saved {
    /// Whether this state belongs to `c` run with `seed`.
    pub fn fits(&self, c: &Community, seed: u64) -> bool {
        let ids: Vec<&str> = c.buildings().iter().map(|b| b.id.as_str()).collect();
        self.seed == seed
            && self.buildings == ids
            && self.counters.len() == ids.len()
            && self
                .counters
                .iter()
                .zip(c.buildings())
                .all(|(m, b)| m.len() == b.meters.len())
    }
}

/// Simulate `span` of history up to `now` (on the reading grid) for every building and store it in
/// `dirs[b]`'s outbox; buildings run in parallel. Each reading holds the counters as meter
/// `registers[b][m]` serves them, so the live meters (started from the returned counters) carry on
/// from the last backfilled reading, never below it.
/// With `resume` (a previous run's state in the same folder), the history starts where that run
/// stopped (or `span` ago if that is later) and the counters carry on from its counters.
pub fn fill(
    c: &Community,
    registers: &[Vec<Register>],
    dirs: &[PathBuf],
    now: DateTime<Utc>,
    span: chrono::Duration,
    resume: Option<&Saved>,
) -> Result<Filled, BackfillError> {
    let grid = chrono::Duration::seconds(BACKFILL_EVERY_S);
    let to = now.duration_trunc(grid).unwrap_or(now);
    let mut from = (to - span).duration_trunc(grid).unwrap_or(to - span);
    if let Some(saved) = resume {
        if saved.at >= to {
            return Ok(Filled {
                from: None,
                to: saved.at,
                counters: saved.counters.clone(),
                readings: 0,
            });
        }
        from = from.max(saved.at);
    }
    let starts: Vec<Vec<Counter>> = (0..c.buildings().len())
        .map(|b| match resume.and_then(|s| s.counters.get(b)) {
            Some(saved) => saved.clone(),
            None => c.initial_counters(b, from),
        })
        .collect();
    let results: Vec<Result<(Vec<Counter>, u64), BackfillError>> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .enumerate()
            .zip(&starts)
            .map(|((b, dir), start)| {
                let regs = registers.get(b).map(Vec::as_slice).unwrap_or(&[]);
                s.spawn(move || fill_building(c, b, regs, dir, from, to, start))
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(b, h)| {
                h.join().unwrap_or_else(|_| {
                    Err(BackfillError::Panicked {
                        building: c.buildings()[b].id.clone(),
                    })
                })
            })
            .collect()
    });
    let mut counters = Vec::with_capacity(results.len());
    let mut readings = 0;
    for r in results {
        let (end, n) = r?;
        counters.push(end);
        readings += n;
    }
    Ok(Filled {
        from: Some(from),
        to,
        counters,
        readings,
    })
}

fn fill_building(
    c: &Community,
    b: usize,
    registers: &[Register],
    dir: &Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    start: &[Counter],
) -> Result<(Vec<Counter>, u64), BackfillError> {
    let spec = &c.buildings()[b];
    let err = |source: OutboxError| BackfillError::Outbox {
        building: spec.id.clone(),
        dir: dir.to_path_buf(),
        source: Box::new(source),
    };
    // A meter without a register map (never in a checked scenario) shows whole Wh.
    let serve = |m: usize, counter: Counter| match registers.get(m) {
        Some(r) => r.counters(counter),
        None => (Some(counter.imp_wh.floor()), Some(counter.exp_wh.floor())),
    };
    let (readings, end) = history(
        c,
        b,
        from,
        to,
        BACKFILL_EVERY_S,
        BACKFILL_INTEGRATE_S,
        start,
        &serve,
    );
    let run = RunInfo {
        boot: "socer-demo-backfill".into(),
        origin_ms: 0,
    };
    let mut store = Store::open(dir, BUDGET_BYTES, &run).map_err(err)?;
    let n = readings.len() as u64;
    let incoming: Vec<Incoming> = readings
        .into_iter()
        .map(|reading| Incoming {
            reading,
            synced: true,
        })
        .collect();
    for chunk in incoming.chunks(CHUNK) {
        store.insert(chunk).map_err(err)?;
    }
    store.sync().map_err(err)?;
    Ok((end, n))
}

/// The counters of `filled` carried forward from its end to `now` at one-second steps.
pub fn catch_up(c: &Community, filled: &Filled, now: DateTime<Utc>) -> Vec<Vec<Counter>> {
    (0..c.buildings().len())
        .map(|b| {
            let start = filled.counters.get(b).cloned().unwrap_or_default();
            if now <= filled.to {
                return start;
            }
            history(c, b, filled.to, now, i64::MAX, 1, &start, &|_, _| {
                (None, None)
            })
            .1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scenario::Scenario;

    fn registers(c: &Community) -> Vec<Vec<Register>> {
        let profiles = socer_drivers::ProfileSet::builtin().unwrap();
        let models = socer_drivers::sunspec::ModelSet::builtin().unwrap();
        crate::demo::meters::registers(c, &profiles, &models).unwrap()
    }

    #[test]
    fn a_day_of_history_lands_in_each_outbox_in_order_and_counters_carry_on() {
        let c = Community::new(Scenario::builtin().unwrap(), 12);
        let root = std::env::temp_dir().join(format!("socer-demo-bf-{}", std::process::id()));
        let dirs: Vec<PathBuf> = c.buildings().iter().map(|b| root.join(&b.id)).collect();
        let now = DateTime::parse_from_rfc3339("2026-06-10T12:03:10Z")
            .unwrap()
            .with_timezone(&Utc);
        let filled = fill(
            &c,
            &registers(&c),
            &dirs,
            now,
            chrono::Duration::days(1),
            None,
        )
        .unwrap();
        assert_eq!(
            filled.to,
            DateTime::parse_from_rfc3339("2026-06-10T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc)
        );
        assert_eq!(filled.from, Some(filled.to - chrono::Duration::days(1)));
        let meters: usize = c.buildings().iter().map(|b| b.meters.len()).sum();
        assert_eq!(filled.readings, (288 * meters) as u64);

        // The first building's outbox holds its readings with seqs 1.. in time order.
        let run = RunInfo {
            boot: "test".into(),
            origin_ms: 0,
        };
        let mut store = Store::open(&dirs[0], BUDGET_BYTES, &run).unwrap();
        let rows = store.fetch(0, 100_000).unwrap();
        assert_eq!(rows.len(), 288 * c.buildings()[0].meters.len());
        assert_eq!(rows[0].seq, 1);
        assert!(rows
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].ts >= w[0].ts));
        // The last reading shows the end counters as the grid meter's registers serve them.
        let last_grid = rows.iter().rev().find(|r| r.meter == "grid").unwrap();
        let served = registers(&c)[0][0].counters(filled.counters[0][0]);
        assert_eq!(
            (last_grid.values.e_imp_wh, last_grid.values.e_exp_wh),
            served
        );
        assert!(served
            .0
            .is_some_and(|w| (w - filled.counters[0][0].imp_wh).abs() < 100.0));

        // Carrying on for 10 minutes only ever adds energy.
        let later = catch_up(&c, &filled, filled.to + chrono::Duration::minutes(10));
        for (a, b) in filled.counters.iter().flatten().zip(later.iter().flatten()) {
            assert!(b.imp_wh >= a.imp_wh && b.exp_wh >= a.exp_wh);
        }
        assert!(
            later[0][0].imp_wh + later[0][0].exp_wh
                > filled.counters[0][0].imp_wh + filled.counters[0][0].exp_wh
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_resumed_history_starts_where_the_last_run_stopped_and_counters_carry_on() {
        let c = Community::new(Scenario::builtin().unwrap(), 12);
        let root = std::env::temp_dir().join(format!("socer-demo-resume-{}", std::process::id()));
        let dirs: Vec<PathBuf> = c.buildings().iter().map(|b| root.join(&b.id)).collect();
        let stopped = DateTime::parse_from_rfc3339("2026-06-10T09:17:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let counters: Vec<Vec<Counter>> = c
            .buildings()
            .iter()
            .map(|b| {
                vec![
                    Counter {
                        imp_wh: 5e6,
                        exp_wh: 2e6
                    };
                    b.meters.len()
                ]
            })
            .collect();
        let saved = Saved {
            seed: 12,
            buildings: c.buildings().iter().map(|b| b.id.clone()).collect(),
            at: stopped,
            counters,
        };
        assert!(saved.fits(&c, 12));
        assert!(!saved.fits(&c, 13));
        let now = stopped + chrono::Duration::hours(3);
        let filled = fill(
            &c,
            &registers(&c),
            &dirs,
            now,
            chrono::Duration::days(7),
            Some(&saved),
        )
        .unwrap();
        assert_eq!(filled.from, Some(stopped));
        let run = RunInfo {
            boot: "test".into(),
            origin_ms: 0,
        };
        let mut store = Store::open(&dirs[0], BUDGET_BYTES, &run).unwrap();
        let rows = store.fetch(0, 100_000).unwrap();
        // 09:17 to 12:15 (the reading grid before 12:17): a reading every 5 minutes from 09:22 to 12:12.
        assert_eq!(rows.len(), 35 * c.buildings()[0].meters.len());
        // (A counter the meter's model has no register for is absent.)
        assert!(rows.iter().all(|r| r.ts > stopped
            && r.values.e_imp_wh.is_none_or(|w| w >= 5e6)
            && r.values.e_exp_wh.is_none_or(|w| w >= 2e6)));
        // Restarting right after the stop writes no history and keeps the counters.
        let again = fill(
            &c,
            &registers(&c),
            &dirs,
            stopped,
            chrono::Duration::days(7),
            Some(&saved),
        )
        .unwrap();
        assert_eq!((again.from, again.readings), (None, 0));
        assert_eq!(again.counters, saved.counters);
        let _ = std::fs::remove_dir_all(&root);
    }
}
