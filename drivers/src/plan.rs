//! Read planning: which registers of a device are due now, and the fewest, cheapest requests that
//! cover them. Pure: no I/O, no clock of its own (time comes in as a monotonic instant).
//!
//! A plan never splits a value across requests, never exceeds the device's request limit and never
//! reads across a range the device marks unreadable; a gap is read only while that is cheaper than
//! a new request.

use std::time::Duration;

use crate::profile::{Function, Profile, QuantityMap, Unreadable};

/// Registers that must be read together: one value (1, 2 or 4 words) or a scale-factor register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Need {
    pub function: Function,
    pub address: u16,
    pub words: u16,
}

impl Need {
    /// One past the last address (u32: a value may end at 65535).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.words)
    }
}

/// One Modbus read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub function: Function,
    pub start: u16,
    pub count: u16,
}

impl Request {
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }

    /// Whether the request reads every register of `need`.
    pub fn covers(&self, need: &Need) -> bool {
        self.function == need.function
            && u32::from(self.start) <= u32::from(need.address)
            && need.end() <= self.end()
    }
}

/// What a device accepts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    /// Largest request in registers; clamped to 1..=125 (the Modbus limit for 0x03/0x04).
    pub max_registers: u16,
    pub unreadable: Vec<Unreadable>,
}

impl Limits {
    pub fn of(profile: &Profile) -> Self {
        Limits {
            max_registers: profile.defaults.max_registers,
            unreadable: profile.unreadable.clone(),
        }
    }

    fn max(&self) -> u16 {
        self.max_registers.clamp(1, 125)
    }

    /// Whether any register in `[start, end)` of `function` is unreadable.
    pub fn touches_unreadable(&self, function: Function, start: u32, end: u32) -> bool {
        self.unreadable.iter().any(|u| {
            u.function == function && u32::from(u.start) < end && start <= u32::from(u.end)
        })
    }
}

/// What a request costs in wire time, so that gaps are merged only when that is cheaper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CostModel {
    /// A serial line: every byte takes `bits_per_char / baud` seconds, frames are separated by a
    /// 3.5-character silence (1.75 ms above 19200 baud), and the device takes `turnaround` (at
    /// least that silence) from the end of the request to its answer.
    Rtu {
        baud: u32,
        bits_per_char: u32,
        turnaround: Duration,
    },
    /// Modbus TCP: a request costs a network round trip; bytes are almost free.
    Tcp {
        round_trip: Duration,
        bytes_per_s: u32,
    },
}

/// Bytes of an RTU read request: unit, function, address (2), count (2), CRC (2).
pub const RTU_REQUEST_BYTES: u64 = 8;
/// Bytes of an RTU read response besides the data: unit, function, byte count, CRC (2).
pub const RTU_RESPONSE_OVERHEAD_BYTES: u64 = 5;

impl CostModel {
    /// An 8N1 line with a typical 5 ms device turnaround.
    pub fn rtu(baud: u32) -> Self {
        CostModel::Rtu {
            baud,
            bits_per_char: 10,
            turnaround: Duration::from_millis(5),
        }
    }

    /// A LAN round trip of 2 ms.
    pub fn tcp() -> Self {
        CostModel::Tcp {
            round_trip: Duration::from_millis(2),
            bytes_per_s: 1_000_000,
        }
    }

    /// Time to move `bytes` bytes on the wire.
    fn bytes_time(&self, bytes: u64) -> Duration {
        match *self {
            CostModel::Rtu {
                baud,
                bits_per_char,
                ..
            } => Duration::from_nanos(
                bytes * u64::from(bits_per_char) * 1_000_000_000 / u64::from(baud.max(1)),
            ),
            CostModel::Tcp { bytes_per_s, .. } => {
                Duration::from_nanos(bytes * 1_000_000_000 / u64::from(bytes_per_s.max(1)))
            }
        }
    }

    /// The silence required between two RTU frames: 3.5 characters, fixed at 1.75 ms above 19200
    /// baud (Modbus over serial line, §2.5.1.1). Zero for TCP.
    pub fn inter_frame_silence(&self) -> Duration {
        match *self {
            CostModel::Rtu {
                baud,
                bits_per_char,
                ..
            } => rtu_silence(baud, bits_per_char),
            CostModel::Tcp { .. } => Duration::ZERO,
        }
    }

    /// Cost of one request with no data (the part a merge saves).
    pub fn request_cost(&self) -> Duration {
        match *self {
            // The device answers no sooner than a 3.5-character silence after the request (its
            // turnaround usually exceeds that), and the next request waits for one more.
            CostModel::Rtu { turnaround, .. } => {
                let silence = self.inter_frame_silence();
                self.bytes_time(RTU_REQUEST_BYTES + RTU_RESPONSE_OVERHEAD_BYTES)
                    + silence
                    + turnaround.max(silence)
            }
            // MBAP header (7) + PDU (5) out, header (7) + function and byte count (2) back.
            CostModel::Tcp { round_trip, .. } => round_trip + self.bytes_time(21),
        }
    }

    /// The least line time of one transaction that moved `request_bytes` out and `response_bytes`
    /// back: the bytes, plus on RTU the silence before the request and the silence the device
    /// must leave before answering (plus a round trip on TCP). What a bus's efficiency is
    /// measured against.
    pub fn wire_time(&self, request_bytes: u64, response_bytes: u64) -> Duration {
        let bytes = self.bytes_time(request_bytes + response_bytes);
        match *self {
            CostModel::Rtu { .. } => bytes + self.inter_frame_silence() * 2,
            CostModel::Tcp { round_trip, .. } => bytes + round_trip,
        }
    }

    /// Cost of each register read.
    pub fn register_cost(&self) -> Duration {
        self.bytes_time(2)
    }

    /// Cost of one request of `count` registers.
    pub fn cost(&self, count: u16) -> Duration {
        self.request_cost() + u32::from(count) * self.register_cost()
    }

    /// Cost of a whole plan.
    pub fn plan_cost(&self, requests: &[Request]) -> Duration {
        requests.iter().map(|r| self.cost(r.count)).sum()
    }
}

/// The 3.5-character silence between RTU frames.
pub fn rtu_silence(baud: u32, bits_per_char: u32) -> Duration {
    if baud > 19_200 {
        Duration::from_micros(1750)
    } else {
        Duration::from_nanos(35 * u64::from(bits_per_char) * 100_000_000 / u64::from(baud.max(1)))
    }
}

/// Why a needed value cannot be planned at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("lies in a range the profile marks unreadable")]
    Unreadable,
    #[error("needs {words} registers, more than the device's limit of {max} per request")]
    TooLarge { words: u16, max: u16 },
    #[error("runs past the last register address 65535")]
    PastEnd,
}

/// Requests covering the needs, and the needs that cannot be read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub requests: Vec<Request>,
    pub rejected: Vec<(Need, Rejected)>,
}

/// Plan the fewest, cheapest requests that read every need exactly once.
///
/// Needs that overlap (two quantities sharing a register) are read as one span. Adjacent needs are
/// always merged; a gap of `g` registers is read when `g × register cost < request cost`, the
/// merged request fits `max_registers`, and the gap touches no unreadable range.
pub fn plan(needs: &[Need], limits: &Limits, cost: &CostModel) -> Plan {
    let max = limits.max();
    let mut out = Plan::default();

    let mut sorted: Vec<Need> = Vec::with_capacity(needs.len());
    for n in needs {
        if n.words == 0 {
            continue;
        }
        if n.end() > 65_536 {
            out.rejected.push((*n, Rejected::PastEnd));
        } else if n.words > max {
            out.rejected.push((
                *n,
                Rejected::TooLarge {
                    words: n.words,
                    max,
                },
            ));
        } else if limits.touches_unreadable(n.function, u32::from(n.address), n.end()) {
            out.rejected.push((*n, Rejected::Unreadable));
        } else {
            sorted.push(*n);
        }
    }
    sorted.sort();
    sorted.dedup();

    // Overlapping needs become one span that must stay in one request.
    let mut spans: Vec<(Function, u32, u32)> = Vec::new();
    let mut span_needs: Vec<Vec<Need>> = Vec::new();
    for n in sorted {
        match spans.last_mut() {
            Some((f, _, end)) if *f == n.function && u32::from(n.address) < *end => {
                *end = (*end).max(n.end());
                if let Some(v) = span_needs.last_mut() {
                    v.push(n);
                }
            }
            _ => {
                spans.push((n.function, u32::from(n.address), n.end()));
                span_needs.push(vec![n]);
            }
        }
    }

    let request_cost = cost.request_cost();
    let register_cost = cost.register_cost();
    let mut current: Option<(Function, u32, u32)> = None;
    for ((function, start, end), members) in spans.into_iter().zip(span_needs) {
        if end - start > u32::from(max) {
            // Overlapping needs that together exceed the limit: read each value on its own.
            for n in members {
                flush(&mut out, current.take());
                current = Some((n.function, u32::from(n.address), n.end()));
            }
            continue;
        }
        current = match current {
            Some((f, s, e)) if f == function => {
                let gap = start - e;
                let gap_cost = register_cost * gap;
                let fits = end - s <= u32::from(max);
                let cheaper = gap == 0 || gap_cost < request_cost;
                if fits && cheaper && !limits.touches_unreadable(f, e, start) {
                    Some((f, s, end))
                } else {
                    flush(&mut out, Some((f, s, e)));
                    Some((function, start, end))
                }
            }
            other => {
                flush(&mut out, other);
                Some((function, start, end))
            }
        };
    }
    flush(&mut out, current);
    out
}

fn flush(out: &mut Plan, current: Option<(Function, u32, u32)>) {
    if let Some((function, start, end)) = current {
        // Bounds were checked when the needs were accepted: start ≤ 65535 and end - start ≤ 125.
        out.requests.push(Request {
            function,
            start: start as u16,
            count: (end - start) as u16,
        });
    }
}

/// The registers a quantity needs: its value, and its scale-factor register if it has one.
pub fn needs_of(map: &QuantityMap, profile: &Profile) -> Vec<Need> {
    let function = map.function.unwrap_or(profile.defaults.function);
    let mut v = vec![Need {
        function,
        address: map.address,
        words: map.value_type.words(),
    }];
    if let Some(sf) = map.scale_register {
        v.push(Need {
            function,
            address: sf,
            words: 1,
        });
    }
    for &address in map.plus.iter().chain(&map.minus) {
        v.push(Need {
            function,
            address,
            words: map.value_type.words(),
        });
    }
    v
}

/// When each quantity of one meter is next due. Intervals come from the profile (counters slowly,
/// power fast), a quantity's own `interval_s`, or the meter's overrides.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Per profile quantity (same index): interval and next due instant (None: never read yet).
    entries: Vec<(Duration, Option<Duration>)>,
}

/// A meter's overrides of the profile's poll intervals.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Intervals {
    /// Replaces the interval of power-like quantities.
    pub fast: Option<Duration>,
    /// Replaces the interval of energy counters.
    pub counter: Option<Duration>,
}

impl Schedule {
    pub fn new(profile: &Profile, overrides: Intervals) -> Self {
        let floor = Duration::from_secs(u64::from(profile.defaults.min_interval_s));
        let entries = profile
            .quantities
            .iter()
            .map(|q| {
                let own = q.interval_s.map(|s| Duration::from_secs(u64::from(s)));
                let interval = if q.name.is_counter() {
                    overrides
                        .counter
                        .or(own)
                        .unwrap_or(Duration::from_secs(u64::from(
                            profile.defaults.counter_interval_s,
                        )))
                } else {
                    overrides
                        .fast
                        .or(own)
                        .unwrap_or(Duration::from_secs(u64::from(
                            profile.defaults.fast_interval_s,
                        )))
                };
                // The device's own limit wins over any override: some devices (a Chain 2 reader)
                // stop answering when polled faster.
                (interval.max(floor).max(Duration::from_millis(10)), None)
            })
            .collect();
        Schedule { entries }
    }

    /// When the meter should next be polled: when its quantities of the shortest interval fall
    /// due. A slower quantity (an energy counter) that falls due in between waits for that poll
    /// (at most one short interval late) instead of costing a poll of its own, so polls of a
    /// meter are never closer than its shortest interval, nor than the device's
    /// `min_interval_s`. Never read: ZERO.
    pub fn poll_due(&self) -> Duration {
        let Some(shortest) = self.entries.iter().map(|(i, _)| *i).min() else {
            return Duration::MAX;
        };
        self.entries
            .iter()
            .filter(|(i, _)| *i == shortest)
            .map(|(_, n)| n.unwrap_or(Duration::ZERO))
            .min()
            .unwrap_or(Duration::MAX)
    }

    /// Indices (into the profile's quantities) of the quantities due at `now`.
    pub fn due(&self, now: Duration) -> Vec<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, (_, next))| next.is_none_or(|n| n <= now))
            .map(|(i, _)| i)
            .collect()
    }

    /// Record that the quantities `polled` were polled at `now` (read or not: a failure waits for
    /// the next interval like a success, so a broken register cannot monopolise the bus).
    /// Each is next due one interval after this poll: its own period from when it was last read,
    /// not a slot kept from an earlier cycle. A late poll moves the next one later instead of
    /// bursting to catch up.
    pub fn mark_polled(&mut self, polled: &[usize], now: Duration) {
        for &i in polled {
            if let Some((interval, next)) = self.entries.get_mut(i) {
                *next = Some(now.saturating_add(*interval));
            }
        }
    }

    /// The earliest instant anything is due (ZERO if something was never read).
    pub fn next_due(&self) -> Duration {
        self.entries
            .iter()
            .map(|(_, n)| n.unwrap_or(Duration::ZERO))
            .min()
            .unwrap_or(Duration::MAX)
    }

    /// The interval of quantity `i`.
    pub fn interval(&self, i: usize) -> Option<Duration> {
        self.entries.get(i).map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn need(address: u16, words: u16) -> Need {
        Need {
            function: Function::Input,
            address,
            words,
        }
    }

    fn limits(max: u16) -> Limits {
        Limits {
            max_registers: max,
            unreadable: vec![],
        }
    }

    #[test]
    fn rtu_costs_follow_the_wire_at_9600_baud() {
        let c = CostModel::Rtu {
            baud: 9600,
            bits_per_char: 10,
            turnaround: Duration::ZERO,
        };
        // One register: 8 + 7 bytes at 1.0417 ms/byte = 15.625 ms, plus two 3.646 ms silences.
        let us = c.cost(1).as_micros();
        assert!((22_900..=22_950).contains(&us), "{us}");
        assert_eq!(c.register_cost().as_micros(), 2083);
        assert_eq!(rtu_silence(38_400, 10), Duration::from_micros(1750));
    }

    #[test]
    fn wire_time_is_the_bytes_and_two_silences_per_request() {
        // 8E1 at 9600 baud: 11 bits a character, 1.1458 ms; the silence is 3.5 characters.
        let c = CostModel::Rtu {
            baud: 9600,
            bits_per_char: 11,
            turnaround: Duration::from_millis(5),
        };
        // An SDM630 read of 12 registers: 8 bytes out, 5 + 24 back.
        let us = c.wire_time(8, 29).as_micros();
        assert!((50_410..=50_420).contains(&us), "{us}");
        assert_eq!(
            c.wire_time(8, 0),
            c.bytes_time(8) + c.inter_frame_silence() * 2
        );
        // TCP: the bytes and a round trip.
        let t = CostModel::tcp();
        assert_eq!(t.wire_time(12, 9), Duration::from_micros(2021));
    }

    #[test]
    fn small_gap_is_merged_on_rtu_but_large_gap_is_not() {
        let c = CostModel::rtu(9600);
        // Request cost ≈ 13 bytes + a silence + 5 ms ≈ 22.2 ms ≈ 10.6 registers.
        let p = plan(&[need(0, 2), need(10, 2)], &limits(125), &c);
        assert_eq!(
            p.requests,
            vec![Request {
                function: Function::Input,
                start: 0,
                count: 12
            }]
        );
        let p = plan(&[need(0, 2), need(40, 2)], &limits(125), &c);
        assert_eq!(p.requests.len(), 2);
    }

    #[test]
    fn tcp_merges_wide_gaps_because_round_trips_dominate() {
        let p = plan(&[need(0, 2), need(100, 2)], &limits(125), &CostModel::tcp());
        assert_eq!(
            p.requests,
            vec![Request {
                function: Function::Input,
                start: 0,
                count: 102
            }]
        );
    }

    #[test]
    fn unreadable_gap_is_never_read() {
        let l = Limits {
            max_registers: 125,
            unreadable: vec![Unreadable {
                function: Function::Input,
                start: 4,
                end: 5,
            }],
        };
        let p = plan(&[need(0, 2), need(8, 2)], &l, &CostModel::tcp());
        assert_eq!(p.requests.len(), 2);
        // The same range on the other function does not matter.
        let l2 = Limits {
            max_registers: 125,
            unreadable: vec![Unreadable {
                function: Function::Holding,
                start: 4,
                end: 5,
            }],
        };
        assert_eq!(
            plan(&[need(0, 2), need(8, 2)], &l2, &CostModel::tcp())
                .requests
                .len(),
            1
        );
    }

    #[test]
    fn needs_inside_unreadable_or_too_large_are_rejected_with_reason() {
        let l = Limits {
            max_registers: 2,
            unreadable: vec![Unreadable {
                function: Function::Input,
                start: 10,
                end: 10,
            }],
        };
        let p = plan(
            &[need(9, 2), need(20, 4), need(30, 2)],
            &l,
            &CostModel::tcp(),
        );
        assert_eq!(
            p.requests,
            vec![Request {
                function: Function::Input,
                start: 30,
                count: 2
            }]
        );
        assert_eq!(p.rejected[0], (need(9, 2), Rejected::Unreadable));
        assert_eq!(
            p.rejected[1],
            (need(20, 4), Rejected::TooLarge { words: 4, max: 2 })
        );
    }

    #[test]
    fn functions_are_never_mixed_in_one_request() {
        let n = [
            need(0, 2),
            Need {
                function: Function::Holding,
                address: 2,
                words: 2,
            },
        ];
        assert_eq!(plan(&n, &limits(125), &CostModel::tcp()).requests.len(), 2);
    }

    #[test]
    fn schedule_polls_counters_less_often_than_power() {
        use crate::profile::*;
        use crate::reading::Quantity;
        let q = |name, address| QuantityMap {
            name,
            phase: None,
            function: None,
            address,
            value_type: ValueType::F32,
            word_order: None,
            byte_order: None,
            scale: 1.0,
            scale_register: None,
            unit: None,
            sentinels: vec![],
            interval_s: None,
            plus: vec![],
            minus: vec![],
        };
        let p = Profile {
            id: "t".into(),
            manufacturer: "t".into(),
            model: "t".into(),
            kind: DeviceKind::Meter,
            phases: 1,
            source: "test".into(),
            verified: None,
            defaults: Defaults::of(Function::Input),
            unreadable: vec![],
            identify: vec![],
            quantities: vec![q(Quantity::PW, 0), q(Quantity::EImpWh, 10)],
        };
        let mut s = Schedule::new(&p, Intervals::default());
        let t = Duration::from_secs;
        assert_eq!(s.due(t(0)), vec![0, 1]);
        s.mark_polled(&[0, 1], t(0));
        assert!(s.due(t(4)).is_empty());
        assert_eq!(s.due(t(5)), vec![0]);
        s.mark_polled(&[0], t(5));
        assert_eq!(s.next_due(), t(10));
        assert_eq!(s.due(t(60)), vec![0, 1]);
        // Falling far behind restarts the cadence instead of bursting.
        s.mark_polled(&[0], t(60));
        assert_eq!(s.due(t(64)), vec![1]);
    }

    fn arb_case() -> impl Strategy<Value = (Vec<Need>, Limits)> {
        let needs = prop::collection::vec(
            (
                prop::bool::ANY,
                0u16..400,
                prop::sample::select(vec![1u16, 2, 4]),
            )
                .prop_map(|(holding, address, words)| Need {
                    function: if holding {
                        Function::Holding
                    } else {
                        Function::Input
                    },
                    address,
                    words,
                }),
            0..40,
        );
        let unreadable = prop::collection::vec(
            (prop::bool::ANY, 0u16..400, 0u16..6).prop_map(|(holding, start, len)| Unreadable {
                function: if holding {
                    Function::Holding
                } else {
                    Function::Input
                },
                start,
                end: start + len,
            }),
            0..4,
        );
        (needs, unreadable, 1u16..=130).prop_map(|(needs, unreadable, max_registers)| {
            (
                needs,
                Limits {
                    max_registers,
                    unreadable,
                },
            )
        })
    }

    fn arb_cost() -> impl Strategy<Value = CostModel> {
        prop_oneof![
            prop::sample::select(vec![1200u32, 9600, 19200, 115200]).prop_map(CostModel::rtu),
            (0u64..10).prop_map(|ms| CostModel::Tcp {
                round_trip: Duration::from_millis(ms),
                bytes_per_s: 1_000_000
            }),
        ]
    }

    /// The register span of the group of mutually overlapping accepted needs that contains `n`.
    fn overlap_cluster(needs: &[Need], n: &Need, rejected: &[(Need, Rejected)]) -> (u32, u32) {
        let (mut s, mut e) = (u32::from(n.address), n.end());
        loop {
            let before = (s, e);
            for m in needs {
                let accepted = !rejected.iter().any(|(r, _)| r == m);
                if accepted && m.function == n.function && u32::from(m.address) < e && s < m.end() {
                    s = s.min(u32::from(m.address));
                    e = e.max(m.end());
                }
            }
            if (s, e) == before {
                return (s, e);
            }
        }
    }

    proptest! {
        #[test]
        fn plan_covers_every_readable_need_exactly_once((needs, limits) in arb_case(), cost in arb_cost()) {
            let p = plan(&needs, &limits, &cost);
            let max = u32::from(limits.max_registers.clamp(1, 125));
            for n in &needs {
                let covering = p.requests.iter().filter(|r| r.covers(n)).count();
                let rejected = p.rejected.iter().any(|(r, _)| r == n);
                // Values that overlap each other over more than one request's worth of registers
                // cannot be read exactly once: each is then read whole, possibly twice.
                let cluster = overlap_cluster(&needs, n, &p.rejected);
                let tangled = cluster.1 - cluster.0 > max;
                prop_assert!(rejected || covering == 1 || (tangled && covering > 1), "{n:?} covered {covering} times by {:?}", p.requests);
                prop_assert!(!(rejected && covering > 0));
            }
            // No register is read twice, unless two needed values themselves overlap and
            // together exceed the request limit.
            let overlap = |f1: Function, s1: u32, e1: u32, f2: Function, s2: u32, e2: u32| f1 == f2 && s1 < e2 && s2 < e1;
            for (i, a) in p.requests.iter().enumerate() {
                for b in &p.requests[i + 1..] {
                    if overlap(a.function, a.start.into(), a.end(), b.function, b.start.into(), b.end()) {
                        let forced = needs.iter().filter(|n| a.covers(n)).any(|n1| {
                            needs.iter().filter(|n| b.covers(n)).any(|n2| {
                                overlap(n1.function, n1.address.into(), n1.end(), n2.function, n2.address.into(), n2.end())
                            })
                        });
                        prop_assert!(forced, "{a:?} overlaps {b:?}");
                    }
                }
            }
        }

        #[test]
        fn no_request_exceeds_the_limit_or_touches_unreadable((needs, limits) in arb_case(), cost in arb_cost()) {
            let p = plan(&needs, &limits, &cost);
            for r in &p.requests {
                prop_assert!(r.count >= 1 && r.count <= limits.max_registers.clamp(1, 125));
                prop_assert!(!limits.touches_unreadable(r.function, u32::from(r.start), r.end()), "{r:?}");
            }
        }

        #[test]
        fn plan_costs_no_more_than_one_request_per_value((needs, limits) in arb_case(), cost in arb_cost()) {
            let p = plan(&needs, &limits, &cost);
            let naive: Duration = needs
                .iter()
                .filter(|n| !p.rejected.iter().any(|(r, _)| r == *n))
                .map(|n| cost.cost(n.words))
                .sum();
            prop_assert!(cost.plan_cost(&p.requests) <= naive);
        }
    }
}
