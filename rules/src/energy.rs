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
//! - [`meter_periods_with`]`(&MeterData, range, period, opts)`: the same with the meter's power
//!   samples (for estimates) and its declared replacements. Glitches and spikes are judged on up
//!   to [`MAX_ANOMALY_RUN`] samples after them: pass at least [`CONTEXT_SAMPLES`] samples on each
//!   side of `range` so that its periods come out as they would from the whole history.
//! - [`affected_range`]`(prev, first_new, last_new, next, period) -> Range`: after late samples
//!   arrive, the periods whose energy may have changed and must be recomputed.
//! - [`Period`] (1 h by default, 15 min or any divisor of a day), [`Range`] (half-open, aligned),
//!   [`EnergyOptions`] (the gap threshold, the meter's maximum power), [`Flags`], and the
//!   inputs of [`meter_periods_with`]: [`PowerSample`], [`Replacement`], [`Handover`].
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
//! - **What a meter can count** ([`EnergyOptions::max_power_w`], the hub passes each meter's
//!   `max_power_kw`): a counter may rise by at most `max_power_w × (1 +` [`POWER_MARGIN`]`)` over
//!   time, plus a small allowance for the register's resolution ([`COUNTER_SLACK_WH`] and 1 ppm
//!   of the counter). The allowance is a token bucket: honest counters never exhaust it, and no
//!   sequence of counters, however wrong, can give any period more than
//!   `max_power_w × (1 + POWER_MARGIN) × period + COUNTER_SLACK_WH + 1 ppm`. An interval whose
//!   counted energy is beyond the bound is **estimated** from the meter's power samples
//!   ([`PowerSample`], the mean power over the interval × its length) when there are any, else
//!   at the rate of the meter's previous interval, never above the bound; such periods are
//!   flagged `estimated` and `implausible`.
//! - **Counter reset**: a counter lower than the highest value since the last reset, by more than
//!   the read-noise tolerance below, and which does not return to its course (see glitch), is a
//!   reset (meter replaced without a declaration, counter cleared, overflow). The interval's
//!   energy is the new value itself — the energy counted since the reset, which is certain —
//!   when the meter could have counted that much in the interval (the bound above); else the
//!   new counter did not start from 0 and the interval is estimated. Whatever was counted between
//!   the previous sample and the reset is lost and not guessed. The periods that interval touches
//!   are flagged `counter_reset`.
//! - **Glitch**: a counter that drops (to 0 or anywhere below its course) for at most
//!   [`MAX_ANOMALY_RUN`] samples and then returns to its course is not a reset (devices answer
//!   zeroed registers while rebooting): those samples are refused, the counter runs straight
//!   from the sample before them to the one after, and the periods touched are flagged
//!   `implausible`. A drop among the last samples counts as a reset until later samples show it
//!   was a glitch (the hub recomputes the periods they touch).
//! - **Spike**: a counter that jumps above its course for at most [`MAX_ANOMALY_RUN`] samples and
//!   falls back to it is refused the same way (a counter never goes back), flagged `implausible`.
//! - **Declared replacement** ([`Replacement`]: time, the old meter's final reading and the new
//!   one's initial reading, per counter): samples before its time are the old meter's, from its
//!   time the new one's. The interval across it counts
//!   `(old final − last old sample) + (first new sample − new initial)`: exact, no flag (still
//!   within the bound; a declaration below the samples it should exceed is clamped at 0 and the
//!   periods flagged `estimated`).
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

/// The meter's mean active power over `[start, end)`, W, import positive (a generator's output
/// is negative): what estimates an interval whose counters cannot be believed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerSample {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub p_w: f64,
}

/// One counter's readings at a declared meter replacement, Wh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Handover {
    /// The old meter's counter when it was removed.
    pub old_final_wh: f64,
    /// The new meter's counter when it was installed.
    pub new_initial_wh: f64,
}

/// A meter replacement declared by the technician: samples before `at` are the old meter's,
/// samples from `at` the new one's. A counter without a handover follows the ordinary rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replacement {
    pub at: DateTime<Utc>,
    pub imp: Option<Handover>,
    pub exp: Option<Handover>,
}

/// Everything known about one meter for [`meter_periods_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MeterData<'a> {
    pub samples: &'a [CounterSample],
    /// Mean power per interval (the hub's per-minute aggregates), in any order.
    pub power: &'a [PowerSample],
    pub replacements: &'a [Replacement],
}

/// How samples are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyOptions {
    /// An interval between samples longer than this is a gap: spread, and flagged estimated.
    pub max_gap: Duration,
    /// The most the meter can count, W: counters rising faster are not believed (see the module
    /// doc). Not finite or not above 0: no bound.
    pub max_power_w: f64,
}

/// Relative margin over a meter's maximum power before its counters are disbelieved.
pub const POWER_MARGIN: f64 = 0.10;
/// Allowance for a counter register's resolution (0.1 kWh registers step by 100 Wh; a rounded
/// reading may run one step ahead), on top of 1 ppm of the counter (float registers of big
/// counters): the depth of the token bucket of the maximum-power bound.
pub const COUNTER_SLACK_WH: f64 = 200.0;
/// Samples a glitch or a spike may last: beyond that, a drop is a reset and a rise is a rise.
pub const MAX_ANOMALY_RUN: usize = 3;
/// Samples to pass on each side of the range so that glitches and spikes at its edges are
/// judged as from the whole history.
pub const CONTEXT_SAMPLES: usize = 2 * MAX_ANOMALY_RUN + 2;
/// The bound when none is given: 2 MW, the upper end of a member's medium-voltage supply (the
/// central config's default for a meter without `max_power_kw`).
pub const DEFAULT_MAX_POWER_W: f64 = 2.0e6;

/// A counter that goes back by at most max(this, 1 ppm of its value) is read noise (a float
/// rounded differently), not a reset: it counts nothing and the higher value stays the reference.
/// Without this, a 0.1 Wh wobble on a 12 MWh counter would count 12 MWh.
pub const NOISE_TOLERANCE_WH: f64 = 1.0;

impl EnergyOptions {
    /// The usual threshold: twice the meter's expected reading interval.
    pub fn for_interval(interval: Duration) -> Self {
        EnergyOptions {
            max_gap: interval * 2,
            max_power_w: DEFAULT_MAX_POWER_W,
        }
    }

    /// The same options with another gap threshold.
    pub fn with_max_gap(self, max_gap: Duration) -> Self {
        EnergyOptions { max_gap, ..self }
    }

    /// The same options with the meter's maximum power.
    pub fn with_max_power_w(self, max_power_w: f64) -> Self {
        EnergyOptions {
            max_power_w,
            ..self
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
    /// Some readings were not believed: a glitch or a spike was refused, or a counter rose
    /// beyond what the meter can count (that interval is then also `estimated`).
    pub implausible: bool,
}

impl Flags {
    pub const NONE: Flags = Flags {
        estimated: false,
        counter_reset: false,
        incomplete: false,
        implausible: false,
    };
    pub const INCOMPLETE: Flags = Flags {
        estimated: false,
        counter_reset: false,
        incomplete: true,
        implausible: false,
    };

    pub fn merge(self, other: Flags) -> Flags {
        Flags {
            estimated: self.estimated || other.estimated,
            counter_reset: self.counter_reset || other.counter_reset,
            incomplete: self.incomplete || other.incomplete,
            implausible: self.implausible || other.implausible,
        }
    }

    pub fn any(self) -> bool {
        self.estimated || self.counter_reset || self.incomplete || self.implausible
    }

    /// Short text for reports: `estimated|counter_reset|incomplete|implausible`, empty when clean.
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
        if self.implausible {
            parts.push("implausible");
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
    meter_periods_with(
        &MeterData {
            samples,
            ..MeterData::default()
        },
        range,
        period,
        opts,
    )
}

/// Energy per period of `range` for one meter, with its power samples and declared
/// replacements: see the module doc for the rules.
pub fn meter_periods_with(
    data: &MeterData<'_>,
    range: Range,
    period: Period,
    opts: &EnergyOptions,
) -> Result<Vec<PeriodEnergy>, EnergyError> {
    let starts = range.starts(period)?;
    let samples = data.samples;
    let imp = Counter::build(
        samples,
        |s| s.e_imp_wh,
        &power_of(data.power, 1.0),
        &handovers(data.replacements, |r| r.imp),
        opts,
    );
    let exp = Counter::build(
        samples,
        |s| s.e_exp_wh,
        &power_of(data.power, -1.0),
        &handovers(data.replacements, |r| r.exp),
        opts,
    );
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

/// Whether samples around `t` could be judged differently once later samples come: a counter
/// goes down (beyond the read noise) somewhere among the [`MAX_ANOMALY_RUN`]` + 1` samples before
/// `t` and as many from it. Honest counters never do, so their earlier periods never need
/// re-settling because of what came after.
pub fn unsettled_near(samples: &[CounterSample], t: DateTime<Utc>) -> bool {
    let mut sorted: Vec<&CounterSample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.ts);
    let at = sorted.partition_point(|s| s.ts < t);
    let from = at.saturating_sub(MAX_ANOMALY_RUN + 2);
    let to = (at + MAX_ANOMALY_RUN + 1).min(sorted.len());
    let window = &sorted[from..to];
    let drops = |value: fn(&CounterSample) -> Option<f64>| {
        let v: Vec<u64> = window
            .iter()
            .filter_map(|s| value(s).and_then(wh_to_mwh))
            .collect();
        v.windows(2)
            .any(|w| w[1] + noise_mwh().max(w[0] / 1_000_000) < w[0])
    };
    drops(|s| s.e_imp_wh) || drops(|s| s.e_exp_wh)
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

fn noise_mwh() -> u64 {
    (NOISE_TOLERANCE_WH * 1000.0) as u64
}

/// The energy of `[a, b]` ms at the mean power of the samples overlapping it (weighted by their
/// overlap), mWh; `None` without a sample.
fn estimate_mwh(power: &[(i64, i64, f64)], a: i64, b: i64) -> Option<f64> {
    let (mut weighted, mut weight, mut touching) = (0.0, 0.0, None);
    for &(s, e, p) in power.iter().take_while(|p| p.0 <= b) {
        if e < a {
            continue;
        }
        let overlap = (e.min(b) - s.max(a)).max(0) as f64;
        weighted += p * overlap;
        weight += overlap;
        touching.get_or_insert(p);
    }
    let mean = if weight > 0.0 {
        weighted / weight
    } else {
        touching?
    };
    Some(mean * (b - a) as f64 / 3600.0)
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

/// Power samples of one direction: (start ms, end ms, W ≥ 0), sorted by start.
fn power_of(power: &[PowerSample], sign: f64) -> Vec<(i64, i64, f64)> {
    let mut out: Vec<(i64, i64, f64)> = power
        .iter()
        .filter(|p| p.p_w.is_finite() && p.end > p.start)
        .map(|p| {
            (
                p.start.timestamp_millis(),
                p.end.timestamp_millis(),
                (p.p_w * sign).max(0.0),
            )
        })
        .collect();
    out.sort_by_key(|p| p.0);
    out
}

/// One counter's handovers: (time ms, old final mWh, new initial mWh, declaration sound), sorted.
fn handovers(
    replacements: &[Replacement],
    which: impl Fn(&Replacement) -> Option<Handover>,
) -> Vec<(i64, u64, u64, bool)> {
    let mut out: Vec<(i64, u64, u64, bool)> = replacements
        .iter()
        .filter_map(|r| {
            let h = which(r)?;
            let old = wh_to_mwh(h.old_final_wh);
            let new = wh_to_mwh(h.new_initial_wh);
            Some((
                r.at.timestamp_millis(),
                old.unwrap_or(0),
                new.unwrap_or(0),
                old.is_some() && new.is_some(),
            ))
        })
        .collect();
    out.sort_by_key(|h| h.0);
    out
}

/// The maximum-power bound of one counter as a token bucket, in mWh.
struct Bound {
    /// mWh per ms; `None`: no bound.
    rate: Option<f64>,
    /// Allowance left from before the current interval.
    level: f64,
}

impl Bound {
    fn new(opts: &EnergyOptions, first: u64) -> Bound {
        let p = opts.max_power_w;
        let rate = (p.is_finite() && p > 0.0).then(|| p * (1.0 + POWER_MARGIN) / 3600.0);
        Bound {
            rate,
            level: Bound::depth(first),
        }
    }

    /// The bucket's depth for a counter near `v` mWh.
    fn depth(v: u64) -> f64 {
        COUNTER_SLACK_WH * 1000.0 + v as f64 / 1e6
    }

    /// What the meter could have counted over `dt_ms` from now on.
    fn allowed(&self, dt_ms: i64) -> f64 {
        match self.rate {
            Some(r) => self.level + r * dt_ms as f64,
            None => f64::INFINITY,
        }
    }

    /// Count `inc` over `dt_ms` (it must be within [`Bound::allowed`]); `near` is the counter.
    fn consume(&mut self, inc: u64, dt_ms: i64, near: u64) {
        if self.rate.is_some() {
            self.level = (self.allowed(dt_ms) - inc as f64)
                .max(0.0)
                .min(Bound::depth(near));
        }
    }
}

/// One counter made monotonic: `cum[i]` is the energy counted from point 0 to point i, with
/// resets, glitches, spikes, replacements and the bound handled; segment i runs from point i to
/// point i+1.
struct Counter {
    t_ms: Vec<i64>,
    cum: Vec<u64>,
    /// Per segment (len = points − 1): it spans a gap, starts or ends on an estimated reading, or
    /// its energy is an estimate.
    seg_estimated: Vec<bool>,
    seg_reset: Vec<bool>,
    seg_implausible: Vec<bool>,
}

/// How the interval to a sample is counted.
enum Step {
    /// A rise (or nothing) from the course.
    Rise(u64),
    /// A reset: the new value is the energy since it.
    Reset(u64),
    /// Across declared replacements: the exact figure, and whether the declaration was sound.
    Handover(u64, bool),
}

impl Counter {
    fn build(
        samples: &[CounterSample],
        value: impl Fn(&CounterSample) -> Option<f64>,
        power: &[(i64, i64, f64)],
        handovers: &[(i64, u64, u64, bool)],
        opts: &EnergyOptions,
    ) -> Option<Counter> {
        let max_gap_ms = opts.max_gap.num_milliseconds();
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
        let pts = dedup;
        let n = pts.len();
        // Whether a declared replacement falls in (a, b]: no glitch or spike is judged across it.
        let handover_between = |a: i64, b: i64| handovers.iter().any(|h| h.0 > a && h.0 <= b);
        let tolerance = |reference: u64| noise_mwh().max(reference / 1_000_000);

        let mut c = Counter {
            t_ms: vec![pts[0].0],
            cum: vec![0],
            seg_estimated: Vec::with_capacity(n),
            seg_reset: Vec::with_capacity(n),
            seg_implausible: Vec::with_capacity(n),
        };
        // `reference` is the counter's course: the highest value since the last reset, which the
        // next increase counts from.
        let mut reference = pts[0].1;
        let mut last = pts[0];
        let mut bound = Bound::new(opts, reference);
        // The rate of the last interval counted as measured, mWh per ms.
        let mut last_rate: Option<f64> = None;
        let mut cum = 0u64;
        let mut i = 1;
        while i < n {
            let (t, v, est) = pts[i];
            let tol = tolerance(reference);
            let mut refused = false;
            let mut j = i;
            if !handover_between(last.0, t) {
                if v + tol < reference {
                    // A drop: a glitch if the counter is back on course within a few samples.
                    let back = (i + 1..n.min(i + 1 + MAX_ANOMALY_RUN))
                        .take_while(|&k| !handover_between(last.0, pts[k].0))
                        .find(|&k| pts[k].1 + tol >= reference);
                    // Without a return among the samples so far it counts as a reset; the
                    // samples that come later may still show a glitch (the hub recomputes).
                    if let Some(k) = back {
                        refused = true;
                        j = k;
                    }
                } else if v > reference + tol {
                    // A rise: a spike if the counter falls back to its course within a few samples.
                    let mut low = v;
                    for (k, &(tk, vk, _)) in pts
                        .iter()
                        .enumerate()
                        .take(i + 1 + MAX_ANOMALY_RUN)
                        .skip(i + 1)
                    {
                        if handover_between(last.0, tk) {
                            break;
                        }
                        if vk + tol < low && vk + tol >= reference {
                            refused = true;
                            j = k;
                            break;
                        }
                        if vk + tol < reference {
                            break;
                        }
                        low = low.min(vk);
                    }
                }
            }
            let (t, v, est) = if refused { pts[j] } else { (t, v, est) };
            let dt = t - last.0;
            let step = if handover_between(last.0, t) {
                let mut inc = 0u64;
                let mut sound = true;
                let mut from = reference;
                for h in handovers.iter().filter(|h| h.0 > last.0 && h.0 <= t) {
                    sound &= h.3 && h.1 + tolerance(from) >= from;
                    inc += h.1.saturating_sub(from);
                    from = h.2;
                }
                sound &= v + tolerance(from) >= from;
                Step::Handover(inc + v.saturating_sub(from), sound)
            } else if v + tolerance(reference) < reference {
                Step::Reset(v)
            } else {
                Step::Rise(v.saturating_sub(reference))
            };
            let (claimed, reset) = match step {
                Step::Rise(x) | Step::Handover(x, _) => (x, false),
                Step::Reset(x) => (x, true),
            };
            let mut seg_est = dt > max_gap_ms || est || last.2;
            if let Step::Handover(_, false) = step {
                seg_est = true;
            }
            let mut implausible = refused;
            let allowed = bound.allowed(dt);
            let inc = if (claimed as f64) <= allowed {
                if matches!(step, Step::Rise(_)) && dt > 0 {
                    let r = claimed as f64 / dt as f64;
                    last_rate = Some(bound.rate.map_or(r, |max| r.min(max)));
                }
                claimed
            } else {
                seg_est = true;
                implausible = true;
                let estimate = estimate_mwh(power, last.0, t).or(last_rate.map(|r| r * dt as f64));
                estimate.unwrap_or(0.0).clamp(0.0, allowed.floor()) as u64
            };
            if v >= reference || reset || matches!(step, Step::Handover(..)) {
                reference = v;
            }
            bound.consume(inc, dt, reference);
            cum += inc;
            c.t_ms.push(t);
            c.cum.push(cum);
            c.seg_estimated.push(seg_est);
            c.seg_reset.push(reset);
            c.seg_implausible.push(implausible);
            last = (t, v, est);
            i = j + 1;
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
            flags.implausible |= self.seg_implausible[i];
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
        // A drop beyond the tolerance (12 Wh = 1 ppm of 12 MWh) that comes back within it is a
        // glitch: refused, nothing counted, no reset (it once counted the whole 12 MWh).
        let s = [
            imp(at(10, 0), 12_000_000.0),
            imp(at(10, 30), 11_999_980.0),
            imp(at(11, 0), 11_999_990.0),
        ];
        let p = hours(&s, (10, 0), (11, 0), &opts_minutes(30));
        assert_eq!(p[0].imported_mwh, 0);
        assert!(!p[0].flags.counter_reset && p[0].flags.implausible);
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

    /// The most any period of `span_ms` may hold under `o`'s bound, with counters up to `most`.
    fn bound_mwh(o: &EnergyOptions, span_ms: i64, most: u64) -> f64 {
        o.max_power_w * (1.0 + POWER_MARGIN) / 3600.0 * span_ms as f64
            + COUNTER_SLACK_WH * 1000.0
            + most as f64 / 1e6
            + 2.0
    }

    fn minutes(from: DateTime<Utc>, n: i64) -> impl Iterator<Item = DateTime<Utc>> {
        (0..n).map(move |i| from + Duration::minutes(i))
    }

    fn power(ts: DateTime<Utc>, p_w: f64) -> PowerSample {
        PowerSample {
            start: ts,
            end: ts + Duration::minutes(1),
            p_w,
        }
    }

    /// A 30 kW meter read every minute, 12 kW of export (200 Wh a minute) from `from`.
    fn pv_minutes(from: DateTime<Utc>, n: i64, start_wh: f64) -> Vec<CounterSample> {
        minutes(from, n)
            .enumerate()
            .map(|(i, t)| CounterSample::new(t, None, Some(start_wh + 200.0 * i as f64)))
            .collect()
    }

    fn pv_opts() -> EnergyOptions {
        EnergyOptions::default().with_max_power_w(30_000.0)
    }

    #[test]
    fn a_reset_to_a_big_counter_counts_what_the_power_says_not_the_counter() {
        // 34 372 kWh of export counted, then at 10:30 the counter reads 12 547 kWh and goes on: a
        // meter swapped without a declaration. The night's power is 0: the interval counts 0, not
        // 12 547 kWh, flagged.
        let mut s = pv_minutes(at(10, 0), 31, 34_372_000.0);
        for (i, x) in s.iter_mut().enumerate().skip(30) {
            x.e_exp_wh = Some(12_547_000.0 + 200.0 * (i - 30) as f64);
        }
        s.extend(pv_minutes(at(10, 31), 29, 12_547_200.0));
        let mut pw: Vec<PowerSample> = minutes(at(10, 0), 60)
            .map(|t| power(t, -12_000.0))
            .collect();
        pw[29] = power(at(10, 29), 0.0);
        pw[30] = power(at(10, 30), 0.0);
        let data = MeterData {
            samples: &s,
            power: &pw,
            replacements: &[],
        };
        let p = meter_periods_with(
            &data,
            Range::new(at(10, 0), at(11, 0)),
            Period::HOUR,
            &pv_opts(),
        )
        .unwrap_or_default();
        // 29 honest minutes before (5 800 Wh), 29 after (5 800 Wh); the reset minute at 0 W.
        assert_eq!(p[0].exported_mwh, 11_600_000);
        let f = p[0].flags;
        assert!(f.counter_reset && f.estimated && f.implausible, "{f:?}");
        // Without power samples: the previous minute's rate (200 Wh).
        let p = meter_periods(
            &s,
            Range::new(at(10, 0), at(11, 0)),
            Period::HOUR,
            &pv_opts(),
        )
        .unwrap_or_default();
        assert_eq!(p[0].exported_mwh, 11_800_000);
    }

    #[test]
    fn a_reset_to_zero_still_counts_the_new_value() {
        // Within what the meter can count, the new value is the energy since the reset.
        let mut s = pv_minutes(at(10, 0), 10, 1_000_000.0);
        for (i, x) in s.iter_mut().enumerate().skip(5) {
            x.e_exp_wh = Some(150.0 + 200.0 * (i - 5) as f64);
        }
        let p = meter_periods(
            &s,
            Range::new(at(10, 0), at(11, 0)),
            Period::HOUR,
            &pv_opts(),
        )
        .unwrap_or_default();
        assert_eq!(p[0].exported_mwh, (4 * 200 + 150 + 4 * 200) * 1000);
        assert!(p[0].flags.counter_reset && !p[0].flags.implausible);
    }

    #[test]
    fn zeroed_registers_while_rebooting_are_a_glitch_not_a_reset() {
        for run in 1..=MAX_ANOMALY_RUN {
            let honest = pv_minutes(at(10, 0), 60, 5_000_000.0);
            let mut s = honest.clone();
            for x in s.iter_mut().skip(20).take(run) {
                x.e_exp_wh = Some(0.0);
            }
            let r = Range::new(at(10, 0), at(11, 0));
            let p = meter_periods(&s, r, Period::HOUR, &pv_opts()).unwrap_or_default();
            let h = meter_periods(&honest, r, Period::HOUR, &pv_opts()).unwrap_or_default();
            assert_eq!(p[0].exported_mwh, h[0].exported_mwh, "run {run}");
            assert!(
                !p[0].flags.counter_reset && p[0].flags.implausible,
                "run {run}"
            );
        }
        // Zeros for longer than a glitch lasts are a reset.
        let mut s = pv_minutes(at(10, 0), 60, 5_000_000.0);
        for x in s.iter_mut().skip(20).take(MAX_ANOMALY_RUN + 1) {
            x.e_exp_wh = Some(0.0);
        }
        let p = meter_periods(
            &s,
            Range::new(at(10, 0), at(11, 0)),
            Period::HOUR,
            &pv_opts(),
        )
        .unwrap_or_default();
        assert!(p[0].flags.counter_reset);
    }

    #[test]
    fn only_a_drop_near_a_boundary_leaves_the_periods_before_it_unsettled() {
        let honest = pv_minutes(at(10, 0), 60, 5_000_000.0);
        assert!(!unsettled_near(&honest, at(10, 30)));
        let mut glitch = honest.clone();
        glitch[29].e_exp_wh = Some(0.0);
        assert!(unsettled_near(&glitch, at(10, 30)));
        // A spike just after the boundary falls back among the samples after it.
        let mut spike = honest.clone();
        spike[30].e_exp_wh = Some(9.0e9);
        assert!(unsettled_near(&spike, at(10, 30)));
        assert!(!unsettled_near(&spike, at(10, 50)));
    }

    #[test]
    fn a_lone_spike_is_refused() {
        let honest = pv_minutes(at(10, 0), 60, 5_000_000.0);
        for spike in [5_000_000.0 + 5000.0, 4.0e9, 5_004_000.0] {
            let mut s = honest.clone();
            s[30].e_exp_wh = Some(spike);
            let r = Range::new(at(10, 0), at(11, 0));
            let p = meter_periods(&s, r, Period::HOUR, &pv_opts()).unwrap_or_default();
            assert_eq!(p[0].exported_mwh, 59 * 200_000, "spike {spike}");
            assert!(p[0].flags.implausible && !p[0].flags.counter_reset);
        }
    }

    #[test]
    fn a_declared_replacement_counts_exactly_across_the_swap() {
        // Old meter to 10:20 (5 000 + 20 × 0.2 kWh), removed reading 5 004.1 kWh; new meter
        // installed reading 0.3 kWh, first read at 10:25 with 0.8 kWh, then 0.2 kWh a minute.
        let mut s = pv_minutes(at(10, 0), 21, 5_000_000.0);
        s.extend(
            minutes(at(10, 25), 35)
                .enumerate()
                .map(|(i, t)| CounterSample::new(t, None, Some(800.0 + 200.0 * i as f64))),
        );
        let swap = [Replacement {
            at: at(10, 22),
            imp: None,
            exp: Some(Handover {
                old_final_wh: 5_004_100.0,
                new_initial_wh: 300.0,
            }),
        }];
        let data = MeterData {
            samples: &s,
            power: &[],
            replacements: &swap,
        };
        let r = Range::new(at(10, 0), at(11, 0));
        // The swap took five minutes without readings: not a gap for this test.
        let o = pv_opts().with_max_gap(Duration::minutes(10));
        let p = meter_periods_with(&data, r, Period::HOUR, &o).unwrap_or_default();
        // 4 000 before, (5 004.1 − 5 004) + (0.8 − 0.3) kWh across, 34 × 200 after (to 10:59).
        assert_eq!(
            p[0].exported_mwh,
            4_000_000 + 100_000 + 500_000 + 34 * 200_000
        );
        assert!(!p[0].flags.counter_reset && !p[0].flags.implausible && !p[0].flags.estimated);
        // Undeclared, the same counters are a reset that keeps only the new 0.8 kWh.
        let p = meter_periods(&s, r, Period::HOUR, &o).unwrap_or_default();
        assert_eq!(p[0].exported_mwh, 4_000_000 + 800_000 + 34 * 200_000);
        assert!(p[0].flags.counter_reset);
    }

    #[test]
    fn a_rise_beyond_max_power_across_a_gap_is_estimated_and_bounded() {
        // A 30 kW meter: 10:00 → 12:00 without readings, then the counter is 900 kWh higher
        // (a wrapped or misread register). Power at the gap's ends says 12 kW.
        let s = [
            CounterSample::new(at(9, 59), None, Some(1_000_000.0)),
            CounterSample::new(at(10, 0), None, Some(1_000_200.0)),
            CounterSample::new(at(12, 0), None, Some(1_900_200.0)),
            CounterSample::new(at(12, 1), None, Some(1_900_400.0)),
        ];
        let pw = [power(at(10, 0), -12_000.0), power(at(12, 0), -12_000.0)];
        let data = MeterData {
            samples: &s,
            power: &pw,
            replacements: &[],
        };
        let r = Range::new(at(10, 0), at(12, 0));
        let p = meter_periods_with(&data, r, Period::HOUR, &pv_opts()).unwrap_or_default();
        assert_eq!(
            p.iter().map(|x| x.exported_mwh).collect::<Vec<_>>(),
            vec![12_000_000, 12_000_000]
        );
        assert!(p.iter().all(|x| x.flags.estimated && x.flags.implausible));
        // With lying power samples the estimate still stops at the bound.
        let pw = [power(at(10, 0), -1.0e9)];
        let data = MeterData {
            samples: &s,
            power: &pw,
            replacements: &[],
        };
        let p = meter_periods_with(&data, r, Period::HOUR, &pv_opts()).unwrap_or_default();
        for x in &p {
            assert!(x.exported_mwh as f64 <= bound_mwh(&pv_opts(), 3_600_000, 1_900_400_000));
        }
    }

    #[test]
    fn honest_counters_at_full_power_are_not_touched_by_the_bound() {
        // 30 kW for an hour, read every 10 s, with 100 Wh register steps (rounded to nearest).
        let s: Vec<_> = (0..=360)
            .map(|i| {
                let wh: f64 = 1_000_000.0 + 30_000.0 * (i as f64 * 10.0) / 3600.0;
                let shown = (wh / 100.0).round() * 100.0;
                CounterSample::new(at(10, 0) + Duration::seconds(10 * i), Some(shown), None)
            })
            .collect();
        let o = EnergyOptions::default().with_max_power_w(30_000.0);
        let p = meter_periods(&s, Range::new(at(10, 0), at(11, 0)), Period::HOUR, &o)
            .unwrap_or_default();
        assert_eq!(p[0].imported_mwh, 30_000_000);
        assert_eq!(p[0].flags, Flags::NONE);
    }

    /// What a strategy step does to a counter.
    #[derive(Debug, Clone)]
    enum Op {
        /// An honest interval at this share of the meter's maximum power.
        Honest(f64),
        Reset(u64),
        Glitch(u64),
        Spike(u64),
        Jump(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0.0f64..1.0).prop_map(Op::Honest),
            1 => (0u64..1_000_000_000_000).prop_map(Op::Reset),
            1 => (0u64..1_000_000_000_000).prop_map(Op::Glitch),
            1 => (0u64..1_000_000_000_000).prop_map(Op::Spike),
            1 => (0u64..1_000_000_000_000).prop_map(Op::Jump),
        ]
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
            let o = EnergyOptions::default();
            let span = Range::new(base(), base() + Duration::days(4));
            let p = meter_periods(&s, span, period, &o)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // u64 cannot be negative; what must hold is that no subtraction wrapped (debug panics)
            // and that the total is bounded by what the meter could have counted.
            let total: u64 = p.iter().map(|x| x.imported_mwh).sum();
            let most = s.iter().filter_map(|x| wh_to_mwh(x.e_imp_wh.unwrap_or(-1.0))).max().unwrap_or(0);
            prop_assert!(total as f64 <= bound_mwh(&o, t, most));
        }

        #[test]
        fn periods_sum_to_the_counter_increase(
            s in monotone_samples(),
            period in prop::sample::select(vec![Period::HOUR, Period::QUARTER_HOUR, Period::MINUTE]),
        ) {
            let from = period.floor(s[0].ts);
            let to = period.ceil(s[s.len() - 1].ts);
            // Up to 2 kWh per ms: beyond the default bound, so this meter may count anything.
            let o = EnergyOptions::default().with_max_power_w(f64::INFINITY);
            let p = meter_periods(&s, Range::new(from, to), period, &o)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(p.iter().all(|x| !x.flags.counter_reset && !x.flags.implausible));
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
                let o = EnergyOptions { max_gap: Duration::days(1), max_power_w: f64::INFINITY };
                let e1 = meter_periods(&base_s, r, period, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let e2 = meter_periods(&extra, r, period, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(e1, e2);
            }
        }

        #[test]
        fn no_counters_can_count_more_than_the_meter_could(
            steps in prop::collection::vec((1i64..5_400_000, op()), 2..60),
            max_kw in 0.1f64..2000.0,
            powers in prop::collection::vec((0i64..40_000_000, -1.0e9f64..1.0e9), 0..20),
            swaps in prop::collection::vec((0i64..40_000_000, 0u64..1_000_000_000_000, 0u64..1_000_000_000_000), 0..3),
            period in prop::sample::select(vec![Period::HOUR, Period::QUARTER_HOUR, Period::MINUTE]),
        ) {
            let o = EnergyOptions::default().with_max_power_w(max_kw * 1000.0);
            let (mut t, mut course) = (0i64, 1_000_000u64);
            let mut s = Vec::new();
            for (dt, op) in &steps {
                t += dt;
                let v = match *op {
                    Op::Honest(share) => {
                        course += (max_kw * share * *dt as f64 / 3600.0) as u64;
                        course
                    }
                    Op::Reset(v) | Op::Jump(v) => {
                        course = v;
                        v
                    }
                    Op::Glitch(v) | Op::Spike(v) => v,
                };
                let ts = base() + Duration::milliseconds(t);
                s.push(CounterSample::new(ts, Some(v as f64 / 1000.0), Some(v as f64 / 1000.0)));
            }
            let pw: Vec<PowerSample> = powers.iter().map(|&(at_ms, p)| {
                let ts = base() + Duration::milliseconds(at_ms);
                PowerSample { start: ts, end: ts + Duration::minutes(1), p_w: p }
            }).collect();
            let reps: Vec<Replacement> = swaps.iter().map(|&(at_ms, old, new)| Replacement {
                at: base() + Duration::milliseconds(at_ms),
                imp: Some(Handover { old_final_wh: old as f64 / 1000.0, new_initial_wh: new as f64 / 1000.0 }),
                exp: None,
            }).collect();
            let most = s.iter().filter_map(|x| wh_to_mwh(x.e_imp_wh.unwrap_or(0.0))).max().unwrap_or(0);
            let data = MeterData { samples: &s, power: &pw, replacements: &reps };
            let r = Range::new(base(), period.ceil(base() + Duration::milliseconds(t)));
            let p = meter_periods_with(&data, r, period, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let one = bound_mwh(&o, period.ms(), most);
            for x in &p {
                prop_assert!(x.imported_mwh as f64 <= one, "{} mWh in {:?} > {one}", x.imported_mwh, x.start);
                prop_assert!(x.exported_mwh as f64 <= one);
            }
            let all: u64 = p.iter().map(|x| x.imported_mwh).sum();
            prop_assert!(all as f64 <= bound_mwh(&o, t, most));
        }

        #[test]
        fn glitches_and_spikes_count_like_their_absence(
            steps in prop::collection::vec((1_000i64..600_000, 0.0f64..1.0), 12..60),
            at_frac in 0.0f64..1.0,
            run in 1usize..=MAX_ANOMALY_RUN,
            value in 0u64..1_000_000_000_000,
            max_kw in 1.0f64..500.0,
        ) {
            let o = EnergyOptions::default().with_max_power_w(max_kw * 1000.0);
            let (mut t, mut c) = (0i64, 50_000_000u64);
            let honest: Vec<CounterSample> = steps.iter().map(|&(dt, share)| {
                t += dt;
                c += (max_kw * share * dt as f64 / 3600.0) as u64;
                CounterSample::new(base() + Duration::milliseconds(t), Some(c as f64 / 1000.0), None)
            }).collect();
            // The anomaly: `run` samples replaced by `value`, with honest samples on both sides.
            let first = 1 + ((honest.len() - run - 2) as f64 * at_frac) as usize;
            let mut bad = honest.clone();
            for x in bad.iter_mut().skip(first).take(run) {
                x.e_imp_wh = Some(value as f64 / 1000.0);
            }
            let before = wh_to_mwh(honest[first - 1].e_imp_wh.unwrap_or(0.0)).unwrap_or(0);
            let after = wh_to_mwh(honest[first + run].e_imp_wh.unwrap_or(0.0)).unwrap_or(0);
            let tol = noise_mwh().max(before / 1_000_000);
            // Only a value off the course is an anomaly (one on it is a reading like any other).
            prop_assume!(value + tol < before || value > after + tol);
            let without: Vec<CounterSample> = honest.iter().enumerate()
                .filter(|(i, _)| *i < first || *i >= first + run)
                .map(|(_, x)| x.clone()).collect();
            for period in [Period::HOUR, Period::QUARTER_HOUR] {
                let r = Range::new(base(), period.ceil(base() + Duration::milliseconds(t)));
                let got = meter_periods(&bad, r, period, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want = meter_periods(&without, r, period, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(
                    got.iter().map(|x| x.imported_mwh).collect::<Vec<_>>(),
                    want.iter().map(|x| x.imported_mwh).collect::<Vec<_>>()
                );
                prop_assert!(got.iter().all(|x| !x.flags.counter_reset));
                prop_assert!(got.iter().any(|x| x.flags.implausible));
            }
        }

        #[test]
        fn a_declared_replacement_gives_the_honest_figures(
            s in monotone_samples(),
            cut_frac in 0.0f64..1.0,
            new_start in 0u64..10_000_000,
        ) {
            // The honest counter, its meter swapped between two samples: the old one removed at
            // the counter's value on the line at that instant, the new one starting at `new_start`.
            let o = EnergyOptions::default().with_max_power_w(f64::INFINITY);
            let cut = 1 + ((s.len() - 2) as f64 * cut_frac) as usize;
            let (a, b) = (&s[cut - 1], &s[cut]);
            prop_assume!((b.ts - a.ts).num_milliseconds() >= 2);
            let swap_at = a.ts + Duration::milliseconds(1);
            let va = wh_to_mwh(a.e_imp_wh.unwrap_or(0.0)).unwrap_or(0);
            let vb = wh_to_mwh(b.e_imp_wh.unwrap_or(0.0)).unwrap_or(0);
            let old_final = va + (vb - va) / 3;
            let mut swapped = s.clone();
            for x in swapped.iter_mut().skip(cut) {
                let v = wh_to_mwh(x.e_imp_wh.unwrap_or(0.0)).unwrap_or(0);
                x.e_imp_wh = Some((v - old_final + new_start) as f64 / 1000.0);
            }
            let reps = [Replacement {
                at: swap_at,
                imp: Some(Handover { old_final_wh: old_final as f64 / 1000.0, new_initial_wh: new_start as f64 / 1000.0 }),
                exp: None,
            }];
            let period = Period::QUARTER_HOUR;
            let r = Range::new(period.floor(s[0].ts), period.ceil(s[s.len() - 1].ts));
            let data = MeterData { samples: &swapped, power: &[], replacements: &reps };
            let got = meter_periods_with(&data, r, period, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let want = meter_periods(&s, r, period, &o).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let total = |p: &[PeriodEnergy]| p.iter().map(|x| x.imported_mwh).sum::<u64>();
            prop_assert_eq!(total(&got), total(&want));
            prop_assert!(got.iter().all(|x| !x.flags.counter_reset && !x.flags.implausible));
        }
        #[test]
        fn honest_counters_within_the_bound_are_counted_as_without_it(
            steps in prop::collection::vec((1_000i64..1_800_000, 0.0f64..1.0), 2..60),
            max_kw in 0.5f64..2000.0,
            step_wh in prop::sample::select(vec![0.001, 1.0, 10.0, 100.0]),
            period in prop::sample::select(vec![Period::HOUR, Period::QUARTER_HOUR, Period::MINUTE]),
        ) {
            // A meter at up to its maximum power, its register rounding to `step_wh` (0.1 kWh at
            // most, as the coarsest profiles).
            let (mut t, mut wh) = (0i64, 12_345_678.9f64);
            let s: Vec<_> = steps.iter().map(|&(dt, share)| {
                t += dt;
                wh += max_kw * 1000.0 * share * dt as f64 / 3_600_000.0;
                let shown = (wh / step_wh).round() * step_wh;
                CounterSample::new(base() + Duration::milliseconds(t), Some(shown), None)
            }).collect();
            let r = Range::new(period.floor(s[0].ts), period.ceil(s[s.len() - 1].ts));
            let bounded = EnergyOptions::default().with_max_power_w(max_kw * 1000.0);
            let free = bounded.with_max_power_w(f64::INFINITY);
            let got = meter_periods(&s, r, period, &bounded).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let want = meter_periods(&s, r, period, &free).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&got, &want);
            prop_assert!(got.iter().all(|x| !x.flags.implausible && !x.flags.counter_reset));
            let first = wh_to_mwh(s[0].e_imp_wh.unwrap_or(0.0)).unwrap_or(0);
            let last = wh_to_mwh(s[s.len() - 1].e_imp_wh.unwrap_or(0.0)).unwrap_or(0);
            prop_assert_eq!(got.iter().map(|x| x.imported_mwh).sum::<u64>(), last - first);
        }
    }
}
