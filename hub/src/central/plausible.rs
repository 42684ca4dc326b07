//! What a sealed batch may claim: the physical and bookkeeping limits the ingest holds every batch
//! to after its envelope verifies. Pure: no I/O; time and prior state are arguments.
//!
//! Two outcomes and never a third. A batch that breaks a batch-level rule (seq order or range, a
//! claim about dropped or acknowledged seqs outside its own range, seqs numbered faster than a
//! site can, a timestamp before [`min_ts`], a bad meter name) is refused whole: never stored,
//! never moves an ack. An implausible value inside an otherwise valid reading (a counter that is
//! negative, not finite, beyond what the meter could count in its life or rising faster than its
//! maximum power; a power, voltage, current, frequency or power factor out of bounds) is
//! quarantined: that value is dropped, the reading and its seq are kept, so one bad meter cannot
//! stall its site's outbox. A counter that goes down is not judged here: resets and glitches are
//! the energy rules' business.

use chrono::{DateTime, TimeZone, Utc};
use socer_drivers::decode;
use socer_drivers::reading::Quantity;

use super::status::Reject;
use crate::wire::{Batch, WireReading};

/// Highest seq believed: 2^53 (exact in every JSON reader; a site numbering 1,000 readings a
/// second reaches it after 285,000 years). Also keeps every seq inside SQLite's signed integers.
pub const MAX_SEQ: u64 = 1 << 53;
/// Most readings a site can number per second: 100 meters polled ten times a second, far above
/// any building (a site reads each meter every few seconds).
pub const MAX_SEQS_PER_SECOND: u64 = 1_000;
/// Clock slack allowed to the seq-rate bound (site and hub clocks, re-timed readings), seconds.
pub const SEQ_SLACK_SECONDS: i64 = 3_600;
/// A counter may rise up to maximum power × elapsed time × this margin…
pub const RISE_MARGIN: f64 = 1.25;
/// …plus one step of a register that counts whole kWh (many meters do).
pub const COUNTER_STEP_WH: f64 = 1_000.0;
/// A counter is never above maximum power × this many hours (50 years of full power).
pub const METER_LIFE_HOURS: f64 = 50.0 * 8_766.0;
/// |power| is never above the meter's maximum power × this margin (inrush, measurement peaks).
pub const POWER_MARGIN: f64 = 2.0;
/// Longest meter name, bytes.
pub const MAX_METER_NAME_BYTES: usize = 64;

/// Oldest time believed for a batch or a reading: 2020-01-01T00:00Z. Energy communities exist in
/// Italian law since DL 162/2019 (art. 42-bis, in force from March 2020), so nothing a community
/// settles can be older; an older stamp is a clock that was never set.
pub fn min_ts() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The batch-level rules that need nothing but the batch (far-future times are checked with the
/// envelope). `Err` refuses the whole batch.
pub fn check_batch(batch: &Batch) -> Result<(), Reject> {
    let min = min_ts();
    if batch.sent < min {
        return Err(Reject::TooOld);
    }
    let mut prev = 0u64;
    for r in &batch.readings {
        if r.seq == 0 || r.seq > MAX_SEQ {
            return Err(Reject::SeqRange);
        }
        if r.seq <= prev {
            return Err(Reject::SeqOrder);
        }
        prev = r.seq;
        if r.ts < min {
            return Err(Reject::TooOld);
        }
        if r.meter.is_empty()
            || r.meter.len() > MAX_METER_NAME_BYTES
            || r.meter.chars().any(char::is_control)
        {
            return Err(Reject::MeterName);
        }
    }
    let first = batch.readings.first().map(|r| r.seq);
    // What a site declares about seqs it will never send again must lie below what it sends now:
    // an empty batch declares nothing.
    if let Some(d) = batch.dropped_through {
        if first.is_none_or(|f| d >= f) {
            return Err(Reject::SeqClaim);
        }
    }
    if let Some(u) = batch.unacked_from {
        if u == 0 || first.is_none_or(|f| u > f) {
            return Err(Reject::SeqClaim);
        }
    }
    Ok(())
}

/// What the hub holds of a site when its next batch arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SitePrior {
    /// Highest contiguous seq accounted (stored or declared).
    pub contiguous: u64,
    /// Newest reading time among the seqs up to `contiguous` ([`min_ts`] when none).
    pub contiguous_ts_ms: i64,
}

/// Seqs cannot run ahead of the hub's contiguous seq faster than a site numbers readings: the
/// highest seq of the batch, or a floor it declares, is at most `contiguous` +
/// [`MAX_SEQS_PER_SECOND`] × (time since the contiguous reading + [`SEQ_SLACK_SECONDS`]).
pub fn check_seq_jump(prior: SitePrior, highest: u64, now: DateTime<Utc>) -> Result<(), Reject> {
    let elapsed_s = (now.timestamp_millis() - prior.contiguous_ts_ms).max(0) / 1000;
    let allowed = MAX_SEQS_PER_SECOND.saturating_mul((elapsed_s + SEQ_SLACK_SECONDS) as u64);
    if highest > prior.contiguous.saturating_add(allowed) {
        Err(Reject::SeqJump)
    } else {
        Ok(())
    }
}

/// The sample a counter is judged against: the meter's previous sample of that counter in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterSample {
    pub ts_ms: i64,
    pub wh: f64,
}

/// The previous samples of a meter's two counters (either may be unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeterPrior {
    pub imp: Option<CounterSample>,
    pub exp: Option<CounterSample>,
}

/// Is a counter value possible for a meter of `max_power_w`, given its previous sample? Only a
/// rise is judged: a decrease is a reset or a glitch, which the energy rules handle.
pub fn counter_ok(
    value: f64,
    ts_ms: i64,
    prev: Option<CounterSample>,
    max_power_w: f64,
) -> Result<(), Reject> {
    if decode::plausible(Quantity::EImpWh, value).is_err() || value > max_power_w * METER_LIFE_HOURS
    {
        return Err(Reject::CounterInvalid);
    }
    if let Some(p) = prev.filter(|p| p.ts_ms <= ts_ms && p.wh.is_finite()) {
        let hours = (ts_ms - p.ts_ms) as f64 / 3_600_000.0;
        let allowed = max_power_w * hours * RISE_MARGIN + COUNTER_STEP_WH;
        if value - p.wh > allowed {
            return Err(Reject::CounterRise);
        }
    }
    Ok(())
}

/// A power any meter could measure (the drivers' physical bound, ±10 MW); the per-meter bound
/// is applied by [`screen`].
pub fn power_ok(p_w: f64) -> bool {
    decode::plausible(Quantity::PW, p_w).is_ok()
}

/// Drop the implausible values of a reading in place; returns, per dropped value, its field name
/// and the reason (for the reading's record and the counters).
pub fn screen(
    r: &mut WireReading,
    max_power_w: f64,
    prior: MeterPrior,
) -> Vec<(&'static str, Reject)> {
    let mut out = Vec::new();
    let ts_ms = r.ts.timestamp_millis();
    let v = &mut r.values;
    for (name, slot, prev) in [
        ("e_imp_wh", &mut v.e_imp_wh, prior.imp),
        ("e_exp_wh", &mut v.e_exp_wh, prior.exp),
    ] {
        if let Some(x) = *slot {
            if let Err(why) = counter_ok(x, ts_ms, prev, max_power_w) {
                *slot = None;
                out.push((name, why));
            }
        }
    }
    if let Some(p) = v.p_w {
        if decode::plausible(Quantity::PW, p).is_err() || p.abs() > max_power_w * POWER_MARGIN {
            v.p_w = None;
            out.push(("p_w", Reject::ValueBounds));
        }
    }
    let mut bound = |name: &'static str, q: Quantity, slot: &mut Option<f64>| {
        if slot.is_some_and(|x| decode::plausible(q, x).is_err()) {
            *slot = None;
            out.push((name, Reject::ValueBounds));
        }
    };
    for slot in v.v_v.iter_mut() {
        bound("v_v", Quantity::VV, slot);
    }
    for slot in v.i_a.iter_mut() {
        bound("i_a", Quantity::IA, slot);
    }
    bound("f_hz", Quantity::FHz, &mut v.f_hz);
    bound("pf", Quantity::Pf, &mut v.pf);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use socer_drivers::reading::{Quality, Values};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn reading(seq: u64, ts: DateTime<Utc>, imp: f64) -> WireReading {
        WireReading {
            seq,
            meter: "grid".into(),
            ts,
            values: Values {
                p_w: Some(1500.0),
                e_imp_wh: Some(imp),
                e_exp_wh: Some(0.0),
                ..Values::default()
            },
            quality: Quality::Good,
            missing: vec![],
            retimed: false,
            energy_integrated: false,
        }
    }

    fn batch(seqs: &[u64]) -> Batch {
        let ts = t("2026-06-01T10:00:00Z");
        Batch {
            site: "domus-1".into(),
            sent: ts,
            readings: seqs
                .iter()
                .enumerate()
                .map(|(i, &s)| reading(s, ts + chrono::Duration::seconds(i as i64), 5000.0))
                .collect(),
            dropped_through: None,
            unacked_from: None,
        }
    }

    #[test]
    fn honest_batches_pass() {
        assert_eq!(check_batch(&batch(&[1, 2, 3])), Ok(()));
        assert_eq!(check_batch(&batch(&[])), Ok(()));
        let mut b = batch(&[41, 42]);
        b.dropped_through = Some(40);
        b.unacked_from = Some(41);
        assert_eq!(check_batch(&b), Ok(()));
        b.dropped_through = Some(7);
        b.unacked_from = Some(8);
        assert_eq!(check_batch(&b), Ok(()));
        assert_eq!(check_batch(&batch(&[MAX_SEQ - 1, MAX_SEQ])), Ok(()));
    }

    #[test]
    fn seqs_out_of_order_or_range_refuse_the_batch() {
        for seqs in [&[2, 1][..], &[1, 1], &[5, 7, 6], &[3, 3, 4], &[10, 9, 11]] {
            assert_eq!(check_batch(&batch(seqs)), Err(Reject::SeqOrder), "{seqs:?}");
        }
        for seqs in [
            &[0][..],
            &[0, 1],
            &[MAX_SEQ + 1],
            &[1, u64::MAX],
            &[i64::MAX as u64 + 1],
        ] {
            assert_eq!(check_batch(&batch(seqs)), Err(Reject::SeqRange), "{seqs:?}");
        }
    }

    #[test]
    fn claims_outside_the_batchs_own_range_refuse_it() {
        for d in [u64::MAX, MAX_SEQ, 42, 41 + 1000, 100] {
            let mut b = batch(&[41, 42]);
            b.dropped_through = Some(d);
            assert_eq!(
                check_batch(&b),
                Err(Reject::SeqClaim),
                "dropped_through {d}"
            );
        }
        for u in [0, 42, 43, u64::MAX, 1 << 60] {
            let mut b = batch(&[41, 42]);
            b.unacked_from = Some(u);
            assert_eq!(check_batch(&b), Err(Reject::SeqClaim), "unacked_from {u}");
        }
        let mut empty = batch(&[]);
        empty.dropped_through = Some(5);
        assert_eq!(check_batch(&empty), Err(Reject::SeqClaim));
        let mut empty = batch(&[]);
        empty.unacked_from = Some(1);
        assert_eq!(check_batch(&empty), Err(Reject::SeqClaim));
    }

    #[test]
    fn times_before_2020_and_bad_meter_names_refuse_the_batch() {
        for old in [
            "1970-01-01T00:00:00Z",
            "2019-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
        ] {
            let mut b = batch(&[1, 2]);
            b.readings[1].ts = t(old);
            assert_eq!(check_batch(&b), Err(Reject::TooOld), "{old}");
            let mut b = batch(&[1, 2]);
            b.sent = t(old);
            assert_eq!(check_batch(&b), Err(Reject::TooOld), "{old}");
        }
        let mut b = batch(&[1]);
        b.readings[0].ts = t("2020-01-01T00:00:00Z");
        assert_eq!(check_batch(&b), Ok(()));
        for name in [
            String::new(),
            "x".repeat(65),
            "grid\n".into(),
            "a\u{0}b".into(),
        ] {
            let mut b = batch(&[1]);
            b.readings[0].meter = name.clone();
            assert_eq!(check_batch(&b), Err(Reject::MeterName), "{name:?}");
        }
    }

    #[test]
    fn seqs_cannot_run_ahead_faster_than_a_site_numbers_readings() {
        let now = t("2026-06-01T10:00:00Z");
        let prior = SitePrior {
            contiguous: 1000,
            contiguous_ts_ms: (now - chrono::Duration::seconds(10)).timestamp_millis(),
        };
        let allowed = 1000 + MAX_SEQS_PER_SECOND * (10 + SEQ_SLACK_SECONDS as u64);
        assert_eq!(check_seq_jump(prior, 1001, now), Ok(()));
        assert_eq!(check_seq_jump(prior, allowed, now), Ok(()));
        for jump in [allowed + 1, 1 << 40, MAX_SEQ, u64::MAX] {
            assert_eq!(
                check_seq_jump(prior, jump, now),
                Err(Reject::SeqJump),
                "{jump}"
            );
        }
        // A site silent for a year may have numbered a year of readings.
        let year_ago = SitePrior {
            contiguous: 1000,
            contiguous_ts_ms: (now - chrono::Duration::days(365)).timestamp_millis(),
        };
        assert_eq!(check_seq_jump(year_ago, 1000 + 315_000_000, now), Ok(()));
        // First contact: measured from 2020.
        let first = SitePrior {
            contiguous: 0,
            contiguous_ts_ms: min_ts().timestamp_millis(),
        };
        assert_eq!(check_seq_jump(first, 5_000_000_000, now), Ok(()));
        assert_eq!(check_seq_jump(first, MAX_SEQ, now), Err(Reject::SeqJump));
    }

    #[test]
    fn counters_must_be_finite_non_negative_and_within_a_meters_life() {
        let ts = 1_780_000_000_000;
        for bad in [
            -1.0,
            -0.001,
            -1e15,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e15,
            2e13,
        ] {
            assert_eq!(
                counter_ok(bad, ts, None, 2e6),
                Err(Reject::CounterInvalid),
                "{bad}"
            );
        }
        // A 6 kW household meter cannot have counted 3 GWh.
        assert_eq!(
            counter_ok(3e9, ts, None, 6000.0),
            Err(Reject::CounterInvalid)
        );
        for good in [0.0, 0.5, 12_345.6, 2.5e9] {
            assert_eq!(counter_ok(good, ts, None, 6000.0), Ok(()), "{good}");
        }
    }

    #[test]
    fn a_counter_cannot_rise_faster_than_the_meters_maximum_power() {
        let t0 = 1_780_000_000_000i64;
        let prev = Some(CounterSample {
            ts_ms: t0,
            wh: 10_000.0,
        });
        let max_w = 6000.0;
        // One hour at 6 kW: 6,000 Wh × 1.25 + 1,000 Wh allowed.
        let hour = t0 + 3_600_000;
        assert_eq!(counter_ok(10_000.0 + 8_500.0, hour, prev, max_w), Ok(()));
        for rise in [8_500.1, 20_000.0, 1e6, 1e9] {
            assert_eq!(
                counter_ok(10_000.0 + rise, hour, prev, max_w),
                Err(Reject::CounterRise),
                "{rise}"
            );
        }
        // Within the same second only one register step.
        assert_eq!(counter_ok(11_000.0, t0, prev, max_w), Ok(()));
        assert_eq!(counter_ok(11_002.0, t0 + 1000, prev, max_w), Ok(()));
        assert_eq!(
            counter_ok(11_010.0, t0 + 1000, prev, max_w),
            Err(Reject::CounterRise)
        );
        // A decrease is not judged here, whatever its size.
        for down in [9_999.0, 0.0, 1.0] {
            assert_eq!(counter_ok(down, hour, prev, max_w), Ok(()), "{down}");
        }
        // A previous sample later than this one (a late reading) does not bound it.
        assert_eq!(counter_ok(50_000.0, t0 - 1000, prev, max_w), Ok(()));
    }

    #[test]
    fn screening_drops_only_the_implausible_values() {
        let ts = t("2026-06-01T10:00:00Z");
        let prior = MeterPrior {
            imp: Some(CounterSample {
                ts_ms: ts.timestamp_millis() - 60_000,
                wh: 5000.0,
            }),
            exp: None,
        };
        let mut r = reading(7, ts, 1e15);
        r.values.e_exp_wh = Some(-3.0);
        r.values.v_v = [Some(231.0), Some(f64::NAN), Some(5000.0)];
        r.values.i_a = [Some(-4.0), Some(10.0), None];
        r.values.f_hz = Some(0.0);
        r.values.pf = Some(1.5);
        let out = screen(&mut r, 2e6, prior);
        assert_eq!(
            out,
            vec![
                ("e_imp_wh", Reject::CounterInvalid),
                ("e_exp_wh", Reject::CounterInvalid),
                ("v_v", Reject::ValueBounds),
                ("v_v", Reject::ValueBounds),
                ("i_a", Reject::ValueBounds),
                ("f_hz", Reject::ValueBounds),
                ("pf", Reject::ValueBounds),
            ]
        );
        assert_eq!(r.values.e_imp_wh, None);
        assert_eq!(r.values.e_exp_wh, None);
        assert_eq!(r.values.p_w, Some(1500.0));
        assert_eq!(r.values.v_v, [Some(231.0), None, None]);
        assert_eq!(r.values.i_a, [None, Some(10.0), None]);
        assert_eq!((r.values.f_hz, r.values.pf), (None, None));

        // A rise in a minute beyond a 6 kW meter, and a power beyond twice its maximum.
        let mut r = reading(8, ts, 5000.0 + 2_000.0);
        r.values.p_w = Some(-12_001.0);
        let out = screen(&mut r, 6000.0, prior);
        assert_eq!(
            out,
            vec![
                ("e_imp_wh", Reject::CounterRise),
                ("p_w", Reject::ValueBounds)
            ]
        );
        for p in [f64::NAN, 1e12, -1e12, 12_001.0] {
            let mut r = reading(9, ts, 5001.0);
            r.values.p_w = Some(p);
            assert_eq!(
                screen(&mut r, 6000.0, prior),
                vec![("p_w", Reject::ValueBounds)]
            );
        }
        // An honest reading is untouched.
        let mut r = reading(10, ts, 5050.0);
        let before = r.clone();
        assert!(screen(&mut r, 6000.0, prior).is_empty());
        assert_eq!(r, before);
    }
}
