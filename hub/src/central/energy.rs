//! Energy per meter per settlement period, from the meter's own cumulative counters.
//!
//! Pure: no I/O, no clock. It must never yield negative energy, and never invent energy a counter
//! did not count (a gap is spread, never extrapolated beyond the samples).
//!
//! # API (called by the central hub)
//! - [`meter_periods`]`(samples, range, period, opts) -> Result<Vec<PeriodEnergy>, EnergyError>`:
//!   one [`PeriodEnergy`] per period of `range` (in order), for one meter. Pass every sample of
//!   the meter inside `range` **plus the last sample before it and the first after it** (more is
//!   harmless), so the intervals crossing the range's edges are split correctly.
//! - [`affected_range`]`(prev, first_new, last_new, next, period) -> Range`: after late samples
//!   arrive, the periods whose energy may have changed and must be recomputed.
//! - [`Period`] (1 h by default, 15 min or any divisor of a day), [`Range`] (half-open, aligned),
//!   [`EnergyOptions`] (the gap threshold), [`Flags`].
//!
//! # Units and rounding
//! Energy is an integer number of **milliwatt-hours** (`u64`, fields named `_mwh`), so sums are
//! exact: the energy of the periods adds up to the counter increase to the last mWh. A counter in
//! Wh (f64) is rounded to the nearest mWh once, on input.
//!
//! # Rules
//! - Periods are aligned to multiples of the period length since the Unix epoch (UTC); Italian
//!   local time differs from UTC by whole hours, so hour and quarter-hour boundaries coincide.
//! - Between two consecutive samples the counter is taken to rise linearly in time. The counter's
//!   value at a period boundary is interpolated on that line and rounded down to the mWh; a
//!   period's energy is the difference of its two boundary values. So a 10:50→11:10 interval with
//!   20 Wh gives 10 Wh to each hour, and adding a sample that lies on the line changes nothing.
//! - **Counter reset**: a counter lower than the highest value since the last reset, by more than
//!   the read-noise tolerance below, is a reset (meter replaced, counter cleared, overflow). The interval's energy is the new value itself: the energy counted
//!   since the reset, which is certain; whatever was counted between the previous sample and the
//!   reset is lost and not guessed. The periods that interval touches are flagged `counter_reset`.
//! - **Read noise**: a counter that goes back by at most [`NOISE_TOLERANCE_WH`] (1 Wh) or 1 ppm
//!   of its value is not a reset: that interval counts nothing, and the next
//!   increase counts from the higher value seen before, so nothing is counted twice.
//! - **Gap**: an interval longer than [`EnergyOptions::max_gap`] is spread over its span by time
//!   like any other, and the periods it touches are flagged `estimated`. So are the periods touched
//!   by an interval that starts or ends on a sample that says it is estimated.
//! - **Coverage**: a period not wholly inside [first sample, last sample] is flagged `incomplete`;
//!   it holds only the energy measured in its covered part (zero when it has none).
//! - Import and export are two independent counters. A counter that no sample carries is taken as
//!   absent (that direction is zero, without flags); when no sample carries either, every period
//!   is `incomplete`. Samples with a non-finite or negative counter are ignored for that counter.
//!   Samples may come in any order; of two samples with the same timestamp the later in the slice
//!   wins.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;

/// Errors of the energy computation: all are caller mistakes, named with the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnergyError {
    #[error("period of {secs} s does not divide a day into whole periods")]
    BadPeriod { secs: u32 },
    #[error("range start {ts} is not on a {secs} s period boundary")]
    RangeNotAligned { ts: DateTime<Utc>, secs: u32 },
    #[error("range end {to} is before its start {from}")]
    RangeReversed {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error("step of {step_secs} s does not divide the period of {period_secs} s")]
    StepNotDivisor { step_secs: u32, period_secs: u32 },
}

/// The length of a settlement period: a whole number of seconds that divides a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Period {
    secs: u32,
}

impl Period {
    /// The settlement period of the CER rules.
    pub const HOUR: Period = Period { secs: 3600 };
    /// The quarter-hour period of the electricity market since 2025.
    pub const QUARTER_HOUR: Period = Period { secs: 900 };
    /// A one-minute step, for netting production against consumption.
    pub const MINUTE: Period = Period { secs: 60 };

    /// A period of `secs` seconds; it must divide 86 400 so periods align on days.
    pub fn from_secs(secs: u32) -> Result<Period, EnergyError> {
        if secs == 0 || 86_400 % secs != 0 {
            return Err(EnergyError::BadPeriod { secs });
        }
        Ok(Period { secs })
    }

    pub fn secs(self) -> u32 {
        self.secs
    }

    fn ms(self) -> i64 {
        i64::from(self.secs) * 1000
    }

    pub fn duration(self) -> Duration {
        Duration::seconds(i64::from(self.secs))
    }

    /// The start of the period holding `ts`.
    pub fn floor(self, ts: DateTime<Utc>) -> DateTime<Utc> {
        from_ms(ts.timestamp_millis().div_euclid(self.ms()) * self.ms())
    }

    /// The first period boundary at or after `ts`.
    pub fn ceil(self, ts: DateTime<Utc>) -> DateTime<Utc> {
        let f = self.floor(ts);
        if f == ts {
            f
        } else {
            f + self.duration()
        }
    }

    /// Whether `ts` is on a period boundary.
    pub fn is_boundary(self, ts: DateTime<Utc>) -> bool {
        self.floor(ts) == ts
    }
}

impl Default for Period {
    fn default() -> Self {
        Period::HOUR
    }
}

/// A half-open time range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Range {
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Range {
        Range { from, to }
    }

    /// The period starts in this range; `from` must be aligned and `to` not before `from`
    /// (a `to` inside a period includes that period).
    pub fn starts(&self, period: Period) -> Result<Vec<DateTime<Utc>>, EnergyError> {
        if !period.is_boundary(self.from) {
            return Err(EnergyError::RangeNotAligned {
                ts: self.from,
                secs: period.secs,
            });
        }
        if self.to < self.from {
            return Err(EnergyError::RangeReversed {
                from: self.from,
                to: self.to,
            });
        }
        let mut out = Vec::new();
        let mut t = self.from;
        while t < self.to {
            out.push(t);
            t += period.duration();
        }
        Ok(out)
    }
}

/// One reading of a meter's counters, as stored by the central hub.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterSample {
    pub ts: DateTime<Utc>,
    /// Imported-energy counter, Wh.
    pub e_imp_wh: Option<f64>,
    /// Exported-energy counter, Wh.
    pub e_exp_wh: Option<f64>,
    /// The reading says its counters are estimated (e.g. quality not `good`).
    pub estimated: bool,
}

impl CounterSample {
    pub fn new(ts: DateTime<Utc>, e_imp_wh: Option<f64>, e_exp_wh: Option<f64>) -> Self {
        CounterSample {
            ts,
            e_imp_wh,
            e_exp_wh,
            estimated: false,
        }
    }
}

/// How samples are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnergyOptions {
    /// An interval between samples longer than this is a gap: spread, and flagged estimated.
    pub max_gap: Duration,
}

/// A counter that goes back by at most max(this, 1 ppm of its value) is read noise (a float
/// rounded differently), not a reset: it counts nothing and the higher value stays the reference.
/// Without this, a 0.1 Wh wobble on a 12 MWh counter would count 12 MWh.
pub const NOISE_TOLERANCE_WH: f64 = 1.0;

impl EnergyOptions {
    /// The usual threshold: twice the meter's expected reading interval.
    pub fn for_interval(interval: Duration) -> Self {
        EnergyOptions {
            max_gap: interval * 2,
        }
    }
}

impl Default for EnergyOptions {
    /// Counters read once a minute: a gap is anything over two minutes.
    fn default() -> Self {
        EnergyOptions::for_interval(Duration::seconds(60))
    }
}

/// What is uncertain about a period's figure. Flags combine by "or" ([`Flags::merge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Flags {
    /// Part of the energy was spread over a gap, or came from estimated readings.
    pub estimated: bool,
    /// A counter reset fell in an interval touching this period: some energy may be lost.
    pub counter_reset: bool,
    /// Part of the period is not covered by any reading: energy is missing, not estimated.
    pub incomplete: bool,
}

impl Flags {
    pub const NONE: Flags = Flags {
        estimated: false,
        counter_reset: false,
        incomplete: false,
    };
    pub const INCOMPLETE: Flags = Flags {
        estimated: false,
        counter_reset: false,
        incomplete: true,
    };

    pub fn merge(self, other: Flags) -> Flags {
        Flags {
            estimated: self.estimated || other.estimated,
            counter_reset: self.counter_reset || other.counter_reset,
            incomplete: self.incomplete || other.incomplete,
        }
    }

    pub fn any(self) -> bool {
        self.estimated || self.counter_reset || self.incomplete
    }

    /// Short text for reports: `estimated|counter_reset|incomplete`, empty when clean.
    pub fn label(self) -> String {
        let mut parts = Vec::new();
        if self.estimated {
            parts.push("estimated");
        }
        if self.counter_reset {
            parts.push("counter_reset");
        }
        if self.incomplete {
            parts.push("incomplete");
        }
        parts.join("|")
    }
}

/// The energy of one meter in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeriodEnergy {
    pub start: DateTime<Utc>,
    pub imported_mwh: u64,
    pub exported_mwh: u64,
    pub flags: Flags,
}

/// Energy per period of `range` for one meter: see the module doc for the rules.
pub fn meter_periods(
    samples: &[CounterSample],
    range: Range,
    period: Period,
    opts: &EnergyOptions,
) -> Result<Vec<PeriodEnergy>, EnergyError> {
    let starts = range.starts(period)?;
    let imp = Counter::build(samples, |s| s.e_imp_wh, opts);
    let exp = Counter::build(samples, |s| s.e_exp_wh, opts);
    let no_data = imp.is_none() && exp.is_none();
    Ok(starts
        .into_iter()
        .map(|start| {
            let a = start.timestamp_millis();
            let b = a + period.ms();
            let (imported_mwh, fi) = imp.as_ref().map_or((0, Flags::NONE), |c| c.energy(a, b));
            let (exported_mwh, fe) = exp.as_ref().map_or((0, Flags::NONE), |c| c.energy(a, b));
            let mut flags = fi.merge(fe);
            if no_data {
                flags.incomplete = true;
            }
            PeriodEnergy {
                start,
                imported_mwh,
                exported_mwh,
                flags,
            }
        })
        .collect())
}

/// The range of periods to recompute after late samples with timestamps in
/// `[first_new, last_new]` arrived for a meter whose stored samples nearest outside that span are
/// `prev` (latest before) and `next` (earliest after). The intervals from `prev` and up to `next`
/// change, so every period they touch does.
pub fn affected_range(
    prev: Option<DateTime<Utc>>,
    first_new: DateTime<Utc>,
    last_new: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    period: Period,
) -> Range {
    let from = period.floor(prev.unwrap_or(first_new).min(first_new));
    let end = next.unwrap_or(last_new).max(last_new);
    // The period holding `end` is touched too (unless `end` is exactly on its start and nothing
    // spans into it, which recomputing anyway keeps harmless).
    let to = period.floor(end) + period.duration();
    Range { from, to }
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn wh_to_mwh(wh: f64) -> Option<u64> {
    if !wh.is_finite() || wh < 0.0 {
        return None;
    }
    let mwh = (wh * 1000.0).round();
    // Beyond 2^63 mWh (9.2e12 kWh) the value is garbage, not a counter.
    if mwh >= 9.2e18 {
        return None;
    }
    Some(mwh as u64)
}

/// One counter made monotonic: `cum[i]` is the energy counted from sample 0 to sample i, with
/// resets handled; segment i runs from point i to point i+1.
struct Counter {
    t_ms: Vec<i64>,
    cum: Vec<u64>,
    /// Per segment (len = points − 1): it spans a gap, or starts or ends on an estimated reading.
    seg_estimated: Vec<bool>,
    seg_reset: Vec<bool>,
}

impl Counter {
    fn build(
        samples: &[CounterSample],
        value: impl Fn(&CounterSample) -> Option<f64>,
        opts: &EnergyOptions,
    ) -> Option<Counter> {
        let max_gap_ms = opts.max_gap.num_milliseconds();
        let jitter_mwh = (NOISE_TOLERANCE_WH * 1000.0) as u64;
        let mut pts: Vec<(i64, u64, bool)> = samples
            .iter()
            .filter_map(|s| {
                let v = wh_to_mwh(value(s)?)?;
                Some((s.ts.timestamp_millis(), v, s.estimated))
            })
            .collect();
        if pts.is_empty() {
            return None;
        }
        // Stable: among equal timestamps the slice order survives, and the last one is kept.
        pts.sort_by_key(|p| p.0);
        let mut dedup: Vec<(i64, u64, bool)> = Vec::with_capacity(pts.len());
        for p in pts {
            match dedup.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => dedup.push(p),
            }
        }
        let mut c = Counter {
            t_ms: Vec::with_capacity(dedup.len()),
            cum: Vec::with_capacity(dedup.len()),
            seg_estimated: Vec::with_capacity(dedup.len()),
            seg_reset: Vec::with_capacity(dedup.len()),
        };
        // `reference` is the highest value since the last reset: what the next increase counts from.
        let mut prev: Option<(i64, bool)> = None;
        let mut reference = 0u64;
        let mut cum = 0u64;
        for (t, v, est) in dedup {
            if let Some((pt, pest)) = prev {
                let tolerance = jitter_mwh.max(reference / 1_000_000);
                let (inc, reset) = if v >= reference {
                    (v - reference, false)
                } else if reference - v <= tolerance {
                    (0, false)
                } else {
                    (v, true)
                };
                if v >= reference || reset {
                    reference = v;
                }
                cum += inc;
                c.seg_reset.push(reset);
                c.seg_estimated.push(t - pt > max_gap_ms || est || pest);
            } else {
                reference = v;
            }
            c.t_ms.push(t);
            c.cum.push(cum);
            prev = Some((t, est));
        }
        Some(c)
    }

    /// The monotonic counter at `t`, which must lie within [first, last] sample.
    fn value_at(&self, t: i64) -> u64 {
        let idx = self.t_ms.partition_point(|&x| x <= t).saturating_sub(1);
        if idx + 1 >= self.t_ms.len() {
            return self.cum[idx];
        }
        let (t0, t1) = (self.t_ms[idx], self.t_ms[idx + 1]);
        let inc = self.cum[idx + 1] - self.cum[idx];
        let part = u128::from(inc) * (t - t0) as u128 / (t1 - t0) as u128;
        // part ≤ inc, so it fits.
        self.cum[idx] + part as u64
    }

    /// Energy and flags of the period [a, b).
    fn energy(&self, a: i64, b: i64) -> (u64, Flags) {
        let first = self.t_ms[0];
        let last = self.t_ms[self.t_ms.len() - 1];
        let mut flags = Flags::NONE;
        if a < first || b > last {
            flags.incomplete = true;
        }
        let lo = a.max(first);
        let hi = b.min(last);
        if lo >= hi {
            return (0, flags);
        }
        // Segments overlapping (lo, hi): from the one holding lo, while it starts before hi.
        let mut i = self.t_ms.partition_point(|&x| x <= lo).saturating_sub(1);
        while i + 1 < self.t_ms.len() && self.t_ms[i] < hi {
            flags.estimated |= self.seg_estimated[i];
            flags.counter_reset |= self.seg_reset[i];
            i += 1;
        }
        (self.value_at(hi) - self.value_at(lo), flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 3, h, m, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn imp(ts: DateTime<Utc>, wh: f64) -> CounterSample {
        CounterSample::new(ts, Some(wh), None)
    }

    fn opts_minutes(m: i64) -> EnergyOptions {
        EnergyOptions::for_interval(Duration::minutes(m))
    }

    fn hours(
        samples: &[CounterSample],
        from: (u32, u32),
        to: (u32, u32),
        o: &EnergyOptions,
    ) -> Vec<PeriodEnergy> {
        meter_periods(
            samples,
            Range::new(at(from.0, from.1), at(to.0, to.1)),
            Period::HOUR,
            o,
        )
        .unwrap_or_default()
    }

    #[test]
    fn interval_across_the_hour_is_split_by_time() {
        // 10:50 → 11:10, 20 Wh: 10 Wh in each hour.
        let s = [imp(at(10, 50), 1000.0), imp(at(11, 10), 1020.0)];
        let p = hours(&s, (10, 0), (12, 0), &opts_minutes(20));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].imported_mwh, 10_000);
        assert_eq!(p[1].imported_mwh, 10_000);
        // Both hours are only partly covered by readings.
        assert!(p[0].flags.incomplete && p[1].flags.incomplete);
        assert!(!p[0].flags.estimated);
    }

    #[test]
    fn fully_covered_hours_are_clean_and_exact() {
        // Every 15 min from 09:45 to 12:15; 100 Wh per quarter hour → 400 Wh per hour.
        let s: Vec<_> = (0..11)
            .map(|i| imp(at(9, 45) + Duration::minutes(15 * i), 100.0 * i as f64))
            .collect();
        let p = hours(&s, (10, 0), (12, 0), &opts_minutes(15));
        assert_eq!(
            p.iter().map(|x| x.imported_mwh).collect::<Vec<_>>(),
            vec![400_000, 400_000]
        );
        assert!(p.iter().all(|x| x.flags == Flags::NONE));
    }

    #[test]
    fn quarter_hour_periods_split_the_same_line() {
        // 10:00 → 11:00, 60 Wh on a line: 15 Wh per quarter hour.
        let s = [imp(at(10, 0), 0.0), imp(at(11, 0), 60.0)];
        let p = meter_periods(
            &s,
            Range::new(at(10, 0), at(11, 0)),
            Period::QUARTER_HOUR,
            &opts_minutes(60),
        )
        .unwrap_or_default();
        assert_eq!(
            p.iter().map(|x| x.imported_mwh).collect::<Vec<_>>(),
            vec![15_000; 4]
        );
    }

    #[test]
    fn counter_reset_counts_the_new_value_and_is_flagged() {
        // 10:00 5000 Wh, 10:30 5100 Wh, 11:00 40 Wh (reset: 40 Wh since it), 11:30 90 Wh.
        let s = [
            imp(at(10, 0), 5000.0),
            imp(at(10, 30), 5100.0),
            imp(at(11, 0), 40.0),
            imp(at(11, 30), 90.0),
        ];
        let p = hours(&s, (10, 0), (12, 0), &opts_minutes(30));
        // Hour 10: 100 + 40 = 140 Wh, reset flagged. Hour 11: 50 Wh in the covered half.
        assert_eq!(p[0].imported_mwh, 140_000);
        assert!(p[0].flags.counter_reset);
        assert!(!p[0].flags.incomplete);
        assert_eq!(p[1].imported_mwh, 50_000);
        assert!(!p[1].flags.counter_reset);
        assert!(p[1].flags.incomplete);
    }

    #[test]
    fn a_small_step_back_is_noise_not_a_reset() {
        // 12 000 000 Wh, then 11 999 999.5 (read noise), then 12 000 010: 10 Wh in all, no reset.
        let s = [
            imp(at(10, 0), 12_000_000.0),
            imp(at(10, 30), 11_999_999.5),
            imp(at(11, 0), 12_000_010.0),
        ];
        let p = hours(&s, (10, 0), (11, 0), &opts_minutes(30));
        assert_eq!(p[0].imported_mwh, 10_000);
        assert!(!p[0].flags.counter_reset);
        // A drop beyond the tolerance (12 Wh = 1 ppm of 12 MWh) is a reset.
        let s = [
            imp(at(10, 0), 12_000_000.0),
            imp(at(10, 30), 11_999_980.0),
            imp(at(11, 0), 11_999_990.0),
        ];
        let p = hours(&s, (10, 0), (11, 0), &opts_minutes(30));
        assert_eq!(p[0].imported_mwh, 11_999_990_000);
        assert!(p[0].flags.counter_reset);
    }

    #[test]
    fn gap_is_spread_over_its_span_and_flagged_estimated() {
        // Readings every minute until 10:00, then nothing until 13:00: 300 Wh over 3 h.
        let s = [
            imp(at(9, 59), 0.0),
            imp(at(10, 0), 1.0),
            imp(at(13, 0), 301.0),
            imp(at(13, 1), 302.0),
        ];
        let p = hours(&s, (10, 0), (13, 0), &EnergyOptions::default());
        assert_eq!(
            p.iter().map(|x| x.imported_mwh).collect::<Vec<_>>(),
            vec![100_000; 3]
        );
        assert!(p.iter().all(|x| x.flags.estimated && !x.flags.incomplete));
    }

    #[test]
    fn hours_without_readings_are_incomplete_and_zero() {
        let s = [imp(at(10, 0), 0.0), imp(at(11, 0), 10.0)];
        let p = hours(&s, (8, 0), (13, 0), &opts_minutes(60));
        let flags: Vec<bool> = p.iter().map(|x| x.flags.incomplete).collect();
        assert_eq!(flags, vec![true, true, false, true, true]);
        assert_eq!(p[2].imported_mwh, 10_000);
        assert_eq!(
            p[0].imported_mwh + p[1].imported_mwh + p[3].imported_mwh + p[4].imported_mwh,
            0
        );
    }

    #[test]
    fn no_samples_at_all_makes_every_period_incomplete() {
        let p = hours(&[], (10, 0), (12, 0), &EnergyOptions::default());
        assert_eq!(p.len(), 2);
        assert!(p
            .iter()
            .all(|x| x.flags.incomplete && x.imported_mwh == 0 && x.exported_mwh == 0));
    }

    #[test]
    fn estimated_reading_flags_the_intervals_it_bounds() {
        let mut s = vec![
            imp(at(10, 0), 0.0),
            imp(at(10, 30), 5.0),
            imp(at(11, 0), 10.0),
            imp(at(12, 0), 20.0),
        ];
        s[3].estimated = true;
        let p = hours(&s, (10, 0), (12, 0), &opts_minutes(60));
        assert!(!p[0].flags.estimated);
        assert!(p[1].flags.estimated);
    }

    #[test]
    fn import_and_export_are_independent_counters() {
        let s = [
            CounterSample::new(at(10, 0), Some(100.0), Some(50.0)),
            CounterSample::new(at(11, 0), Some(130.0), Some(250.0)),
        ];
        let p = hours(&s, (10, 0), (11, 0), &opts_minutes(60));
        assert_eq!((p[0].imported_mwh, p[0].exported_mwh), (30_000, 200_000));
    }

    #[test]
    fn garbage_counter_values_are_ignored() {
        let s = [
            imp(at(10, 0), 0.0),
            imp(at(10, 30), f64::NAN),
            imp(at(10, 40), -5.0),
            imp(at(11, 0), 8.0),
        ];
        let p = hours(&s, (10, 0), (11, 0), &opts_minutes(60));
        assert_eq!(p[0].imported_mwh, 8_000);
        assert!(!p[0].flags.counter_reset);
    }

    #[test]
    fn same_timestamp_keeps_the_later_sample() {
        let s = [
            imp(at(10, 0), 0.0),
            imp(at(11, 0), 50.0),
            imp(at(11, 0), 10.0),
        ];
        let p = hours(&s, (10, 0), (11, 0), &opts_minutes(60));
        assert_eq!(p[0].imported_mwh, 10_000);
    }

    #[test]
    fn unsorted_samples_give_the_same_result_as_sorted() {
        let sorted = [
            imp(at(10, 0), 0.0),
            imp(at(10, 20), 7.0),
            imp(at(11, 10), 30.0),
        ];
        let shuffled = [sorted[2].clone(), sorted[0].clone(), sorted[1].clone()];
        let o = opts_minutes(60);
        assert_eq!(
            hours(&sorted, (10, 0), (12, 0), &o),
            hours(&shuffled, (10, 0), (12, 0), &o)
        );
    }

    #[test]
    fn misaligned_range_and_bad_period_are_refused() {
        let r = meter_periods(
            &[],
            Range::new(at(10, 5), at(11, 0)),
            Period::HOUR,
            &EnergyOptions::default(),
        );
        assert!(matches!(r, Err(EnergyError::RangeNotAligned { .. })));
        assert_eq!(
            Period::from_secs(7),
            Err(EnergyError::BadPeriod { secs: 7 })
        );
        assert_eq!(Period::from_secs(900), Ok(Period::QUARTER_HOUR));
    }

    #[test]
    fn late_samples_affect_the_periods_from_the_previous_to_the_next_sample() {
        let r = affected_range(
            Some(at(9, 50)),
            at(10, 30),
            at(12, 10),
            Some(at(13, 5)),
            Period::HOUR,
        );
        assert_eq!(r, Range::new(at(9, 0), at(14, 0)));
        let r = affected_range(None, at(10, 30), at(10, 40), None, Period::HOUR);
        assert_eq!(r, Range::new(at(10, 0), at(11, 0)));
    }

    fn base() -> DateTime<Utc> {
        at(0, 0)
    }

    /// Samples at strictly increasing times (ms offsets over ~10 h) with non-decreasing counters.
    fn monotone_samples() -> impl Strategy<Value = Vec<CounterSample>> {
        prop::collection::vec((1i64..3_600_000, 0u32..2_000_000), 2..40).prop_map(|steps| {
            let mut t = 0i64;
            let mut c = 0u64;
            steps
                .into_iter()
                .map(|(dt, dc)| {
                    t += dt;
                    c += u64::from(dc);
                    CounterSample::new(
                        base() + Duration::milliseconds(t),
                        Some(c as f64 / 1000.0),
                        None,
                    )
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn energy_is_never_negative_even_with_resets(
            vals in prop::collection::vec((1i64..7_200_000, -1.0e6f64..1.0e7), 1..40),
            period in prop::sample::select(vec![Period::HOUR, Period::QUARTER_HOUR]),
        ) {
            let mut t = 0;
            let s: Vec<_> = vals.iter().map(|&(dt, v)| {
                t += dt;
                CounterSample::new(base() + Duration::milliseconds(t), Some(v), Some(-v))
            }).collect();
            let p = meter_periods(&s, Range::new(base(), base() + Duration::days(4)), period, &EnergyOptions::default())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // u64 cannot be negative; what must hold is that no subtraction wrapped (debug panics)
            // and that the total is bounded by what the counters could have counted.
            let total: u64 = p.iter().map(|x| x.imported_mwh).sum();
            let bound: u64 = s.iter().filter_map(|x| wh_to_mwh(x.e_imp_wh.unwrap_or(-1.0))).sum();
            prop_assert!(total <= bound);
        }

        #[test]
        fn periods_sum_to_the_counter_increase(
            s in monotone_samples(),
            period in prop::sample::select(vec![Period::HOUR, Period::QUARTER_HOUR, Period::MINUTE]),
        ) {
            let from = period.floor(s[0].ts);
            let to = period.ceil(s[s.len() - 1].ts);
            let p = meter_periods(&s, Range::new(from, to), period, &EnergyOptions::default())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let first = wh_to_mwh(s[0].e_imp_wh.unwrap_or(0.0)).unwrap_or(0);
            let last = wh_to_mwh(s[s.len() - 1].e_imp_wh.unwrap_or(0.0)).unwrap_or(0);
            prop_assert_eq!(p.iter().map(|x| x.imported_mwh).sum::<u64>(), last - first);
        }

        #[test]
        fn extra_samples_on_the_line_change_nothing(
            segs in prop::collection::vec((1i64..20, 1i64..400_000, 0u64..50_000, any::<u32>()), 1..20),
        ) {
            // Each interval is n sub-steps of dt ms and dc mWh, so the points at whole sub-steps
            // lie exactly on its straight line; `pick` chooses which of them to add.
            let mut base_s = vec![CounterSample::new(base(), Some(0.0), None)];
            let mut extra = base_s.clone();
            let (mut t, mut c) = (0i64, 0u64);
            for (n, dt, dc, pick) in segs {
                for j in 1..=n {
                    let ts = base() + Duration::milliseconds(t + j * dt);
                    let v = Some((c + j as u64 * dc) as f64 / 1000.0);
                    if j == n {
                        base_s.push(CounterSample::new(ts, v, None));
                        extra.push(CounterSample::new(ts, v, None));
                    } else if pick & (1 << (j % 32)) != 0 {
                        extra.push(CounterSample::new(ts, v, None));
                    }
                }
                t += n * dt;
                c += n as u64 * dc;
            }
            for period in [Period::HOUR, Period::QUARTER_HOUR, Period::MINUTE] {
                let r = Range::new(base(), period.ceil(base() + Duration::milliseconds(t)));
                let o = EnergyOptions { max_gap: Duration::days(1) };
                let e1 = meter_periods(&base_s, r, period, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let e2 = meter_periods(&extra, r, period, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(e1, e2);
            }
        }
    }
}
