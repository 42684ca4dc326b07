//! Which meter of a bus goes on the line next. Work-conserving: whenever some meter is due, the
//! line goes to the one due earliest (ties to the one polled least recently), so it never idles
//! while something is due, and a meter that is backed off is simply not due until its back-off
//! ends; then it gets one probe, slotted like any other poll.
//!
//! Pure: time is an offset from the bus's start, passed in; no I/O, no clock.

use std::time::Duration;

use crate::plan::Schedule;
use crate::transport::Backoff;

/// How long a bus with nothing ever due (no meters, or none with a quantity) waits before
/// looking again.
pub const IDLE_RECHECK: Duration = Duration::from_secs(60);

/// What the bus does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Poll meter `meter` now, reading these quantities (indices into its profile's quantities).
    Poll {
        meter: usize,
        quantities: Vec<usize>,
    },
    /// Nothing is due before this instant.
    WaitUntil(Duration),
}

#[derive(Debug, Clone)]
struct Slot {
    schedule: Schedule,
    consecutive_failures: u32,
    /// Not polled before this instant (ZERO when not backed off).
    backed_off_until: Duration,
    /// When the meter's last poll started, for ties.
    last_polled: Option<Duration>,
}

impl Slot {
    fn due_at(&self) -> Duration {
        self.schedule.poll_due().max(self.backed_off_until)
    }
}

/// The due times of every meter on one bus, and their back-off.
#[derive(Debug, Clone)]
pub struct BusQueue {
    slots: Vec<Slot>,
    backoff: Backoff,
}

impl BusQueue {
    /// One schedule per meter, in the bus's meter order.
    pub fn new(schedules: Vec<Schedule>, backoff: Backoff) -> Self {
        BusQueue {
            slots: schedules
                .into_iter()
                .map(|schedule| Slot {
                    schedule,
                    consecutive_failures: 0,
                    backed_off_until: Duration::ZERO,
                    last_polled: None,
                })
                .collect(),
            backoff,
        }
    }

    /// The meter due earliest (by `Schedule::poll_due`: its fastest quantities set the pace,
    /// counters ride along when due), if it is due at `now`, with the quantities due. Otherwise
    /// when to look again.
    pub fn next(&self, now: Duration) -> Next {
        let earliest = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(i, s)| (s.due_at(), s.last_polled, *i));
        let Some((meter, slot)) = earliest else {
            return Next::WaitUntil(now.saturating_add(IDLE_RECHECK));
        };
        let due_at = slot.due_at();
        if due_at > now {
            return Next::WaitUntil(due_at.min(now.saturating_add(IDLE_RECHECK)));
        }
        Next::Poll {
            meter,
            quantities: slot.schedule.due(now),
        }
    }

    /// Record the poll of `quantities` of `meter` that started at `started` and ended at `done`.
    /// A poll that read nothing at all because the link failed (`failed`) backs the meter off:
    /// returns how long, counted from `done`.
    pub fn polled(
        &mut self,
        meter: usize,
        quantities: &[usize],
        started: Duration,
        done: Duration,
        failed: bool,
    ) -> Option<Duration> {
        let slot = self.slots.get_mut(meter)?;
        slot.schedule.mark_polled(quantities, started);
        slot.last_polled = Some(started);
        if failed {
            slot.consecutive_failures = slot.consecutive_failures.saturating_add(1);
            let wait = self.backoff.delay(slot.consecutive_failures);
            slot.backed_off_until = done.saturating_add(wait);
            Some(wait)
        } else {
            slot.consecutive_failures = 0;
            slot.backed_off_until = Duration::ZERO;
            None
        }
    }

    /// Failed polls in a row of `meter`.
    pub fn consecutive_failures(&self, meter: usize) -> u32 {
        self.slots.get(meter).map_or(0, |s| s.consecutive_failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Intervals;
    use crate::profile::*;
    use crate::reading::Quantity;

    fn q(name: Quantity, address: u16) -> QuantityMap {
        QuantityMap {
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
        }
    }

    /// A meter with power every `fast` and an energy counter every `counter`.
    fn schedule(fast: Duration, counter: Duration) -> Schedule {
        schedule_with_floor(fast, counter, 0)
    }

    /// The same, for a device that must not be polled more often than every `min_interval_s`.
    fn schedule_with_floor(fast: Duration, counter: Duration, min_interval_s: u32) -> Schedule {
        let p = Profile {
            id: "t".into(),
            manufacturer: "t".into(),
            model: "t".into(),
            kind: DeviceKind::Meter,
            phases: 1,
            source: "test".into(),
            verified: None,
            defaults: Defaults {
                function: Function::Input,
                word_order: WordOrder::HighFirst,
                byte_order: ByteOrder::Big,
                fast_interval_s: 5,
                counter_interval_s: 60,
                max_registers: 125,
                min_interval_s,
                unit_id: None,
            },
            unreadable: vec![],
            identify: vec![],
            quantities: vec![q(Quantity::PW, 0), q(Quantity::EImpWh, 10)],
        };
        Schedule::new(
            &p,
            Intervals {
                fast: Some(fast),
                counter: Some(counter),
            },
        )
    }

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One poll on the line, as the simulated bus saw it.
    #[derive(Debug, Clone, Copy)]
    struct Poll {
        meter: usize,
        start: Duration,
        end: Duration,
        full: bool,
    }

    /// Run the queue over simulated time until `until`: a poll of meter `m` takes `cost(m, full)`
    /// (None: the meter is dead and the poll is a timeout of that length). Returns every poll and
    /// the line time spent idle while some meter was due.
    fn simulate(
        queue: &mut BusQueue,
        until: Duration,
        cost: impl Fn(usize, bool) -> (Duration, bool),
    ) -> (Vec<Poll>, Duration) {
        let mut now = Duration::ZERO;
        let mut polls = Vec::new();
        let mut idle_while_due = Duration::ZERO;
        while now < until {
            match queue.next(now) {
                Next::Poll { meter, quantities } => {
                    let full = quantities.len() == 2;
                    let (took, failed) = cost(meter, full);
                    let end = now + took;
                    queue.polled(meter, &quantities, now, end, failed);
                    polls.push(Poll {
                        meter,
                        start: now,
                        end,
                        full,
                    });
                    now = end;
                }
                Next::WaitUntil(t) => {
                    assert!(t > now, "asked to wait until {t:?} at {now:?}");
                    // Was anything due in between? Then the wait was a hole.
                    let earliest_due = queue
                        .slots
                        .iter()
                        .map(Slot::due_at)
                        .min()
                        .unwrap_or(Duration::MAX);
                    if earliest_due < t {
                        idle_while_due += t - earliest_due.max(now);
                    }
                    now = t;
                }
            }
        }
        (polls, idle_while_due)
    }

    fn eight_meters(fast: Duration) -> BusQueue {
        BusQueue::new(
            (0..8)
                .map(|_| schedule(fast, Duration::from_secs(60)))
                .collect(),
            backoff(),
        )
    }

    /// SDM630-like: a full poll (counters too) takes 133 ms, a fast one 125 ms.
    fn sdm630(_: usize, full: bool) -> (Duration, bool) {
        (if full { ms(133) } else { ms(125) }, false)
    }

    #[test]
    fn a_saturated_line_never_idles_and_every_meter_takes_its_turn() {
        // Meters want a poll every 200 ms; eight of them need about 1 s of line.
        let mut queue = eight_meters(ms(200));
        let (polls, idle) = simulate(&mut queue, Duration::from_secs(120), sdm630);
        assert_eq!(idle, Duration::ZERO);
        // The line is busy from the first poll to the last without a gap.
        for w in polls.windows(2) {
            assert_eq!(
                w[0].end, w[1].start,
                "gap between {:?} and {:?}",
                w[0], w[1]
            );
        }
        // Round robin: between two polls of a meter, every other meter is polled exactly once.
        for m in 0..8 {
            let mine: Vec<usize> = (0..polls.len()).filter(|&i| polls[i].meter == m).collect();
            for pair in mine.windows(2) {
                let between = &polls[pair[0] + 1..pair[1]];
                let mut others: Vec<usize> = between.iter().map(|p| p.meter).collect();
                others.sort_unstable();
                assert_eq!(others, (0..8).filter(|&o| o != m).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn fast_cycles_follow_each_meter_own_period_not_the_slot_of_the_first_full_cycle() {
        // Interval 1 s; the first (full) round takes 8 × 133 ms = 1064 ms, fast rounds 1000 ms:
        // each meter's cycle is its interval, however long the first round took.
        let mut queue = eight_meters(ms(1000));
        let (polls, idle) = simulate(&mut queue, Duration::from_secs(50), sdm630);
        assert_eq!(idle, Duration::ZERO);
        for m in 0..8 {
            let starts: Vec<Duration> = polls
                .iter()
                .filter(|p| p.meter == m)
                .map(|p| p.start)
                .collect();
            // From the third poll on (the first round was longer), exactly one interval apart.
            for w in starts[2..].windows(2) {
                assert_eq!(w[1] - w[0], ms(1000), "meter {m}: {starts:?}");
            }
        }
        // Only the first round read the counters (every 60 s).
        assert_eq!(polls.iter().filter(|p| p.full).count(), 8);
    }

    #[test]
    fn counters_are_read_with_power_instead_of_in_a_poll_of_their_own() {
        // Power every 1 s, counters every 60 s, on a line with room to spare: over 3 minutes, one
        // poll a second, and every counter read rides on a power read.
        let mut queue = BusQueue::new(vec![schedule(ms(1000), ms(60_000))], backoff());
        let (polls, _) = simulate(&mut queue, Duration::from_secs(180), |_, full| {
            (if full { ms(30) } else { ms(25) }, false)
        });
        assert!((180..=181).contains(&polls.len()), "{}", polls.len());
        assert_eq!(polls.iter().filter(|p| p.full).count(), 3);
    }

    #[test]
    fn a_dead_meter_leaves_no_hole_and_is_probed_once_per_back_off() {
        // Meter 3 never answers: each probe costs a 344 ms timeout, then it is backed off 1 s,
        // 2 s, 4 s … 30 s. The seven others want a poll every 200 ms (a saturated line).
        let mut queue = eight_meters(ms(200));
        let dead = |m: usize, full: bool| {
            if m == 3 {
                (ms(344), true)
            } else {
                sdm630(m, full)
            }
        };
        let (polls, idle) = simulate(&mut queue, Duration::from_secs(300), dead);
        assert_eq!(idle, Duration::ZERO);
        for w in polls.windows(2) {
            assert_eq!(
                w[0].end, w[1].start,
                "gap between {:?} and {:?}",
                w[0], w[1]
            );
        }
        let probes: Vec<&Poll> = polls.iter().filter(|p| p.meter == 3).collect();
        // Probes at about 0, 1, 3, 7, 15, 31, 61, 91, … s: never before the back-off ends.
        for w in probes.windows(2) {
            let failures = probes.iter().take_while(|p| p.start <= w[0].start).count() as u32;
            assert!(w[1].start >= w[0].end + backoff().delay(failures), "{w:?}");
        }
        assert!((11..=14).contains(&probes.len()), "{} probes", probes.len());
        assert_eq!(queue.consecutive_failures(3), probes.len() as u32);
        // Between probes, the live meters' cycle is their own line time alone: 7 × 125 ms (7 ×
        // 133 ms when the counters are read).
        let m0: Vec<&Poll> = polls.iter().filter(|p| p.meter == 0).collect();
        let without_probe: Vec<Duration> = m0
            .windows(2)
            .filter(|w| {
                !probes
                    .iter()
                    .any(|p| p.start > w[0].start && p.start < w[1].start)
            })
            .map(|w| w[1].start - w[0].start)
            .collect();
        assert!(
            without_probe.iter().all(|&c| c <= ms(7 * 133)),
            "{without_probe:?}"
        );
        let exact = without_probe.iter().filter(|&&c| c == ms(7 * 125)).count();
        assert!(exact * 10 >= without_probe.len() * 9, "{without_probe:?}");
    }

    #[test]
    fn a_backed_off_meter_is_not_due_until_its_back_off_ends_then_returns_to_its_interval() {
        let mut queue = BusQueue::new(vec![schedule(ms(200), ms(60_000))], backoff());
        assert_eq!(
            queue.polled(0, &[0, 1], ms(0), ms(344), true),
            Some(ms(1000))
        );
        // Its interval says 200 ms; the back-off says 1 s after the failed poll ended.
        assert_eq!(queue.next(ms(400)), Next::WaitUntil(ms(1344)));
        // One probe, of what is due (the counter is not, for another minute).
        assert_eq!(
            queue.next(ms(1344)),
            Next::Poll {
                meter: 0,
                quantities: vec![0]
            }
        );
        assert_eq!(
            queue.polled(0, &[0], ms(1344), ms(1688), true),
            Some(ms(2000))
        );
        assert_eq!(queue.consecutive_failures(0), 2);
        assert_eq!(queue.next(ms(1688)), Next::WaitUntil(ms(3688)));
        // The probe answers: no back-off left, due one interval after that poll began.
        assert_eq!(queue.polled(0, &[0], ms(3688), ms(3813), false), None);
        assert_eq!(queue.consecutive_failures(0), 0);
        assert_eq!(queue.next(ms(3813)), Next::WaitUntil(ms(3888)));
    }

    #[test]
    fn a_fast_meter_never_starves_a_slow_one() {
        // Meter 0 wants a poll every 10 ms (more than the line can give), meter 1 every 2 s.
        let mut queue = BusQueue::new(
            vec![schedule(ms(10), ms(60_000)), schedule(ms(2000), ms(60_000))],
            backoff(),
        );
        let (polls, idle) = simulate(&mut queue, Duration::from_secs(60), |_, _| (ms(50), false));
        assert_eq!(idle, Duration::ZERO);
        let slow: Vec<Duration> = polls
            .iter()
            .filter(|p| p.meter == 1)
            .map(|p| p.start)
            .collect();
        // Every 2 s, at most two of the other meter's polls late.
        assert!(slow.len() >= 28, "{}", slow.len());
        for w in slow.windows(2) {
            assert!(w[1] - w[0] <= ms(2100), "{w:?}");
        }
    }

    #[test]
    fn a_late_poll_never_brings_the_next_one_sooner_than_the_interval() {
        // Interval 1 s; meter 3 is dead and each probe delays the others by 344 ms. No meter is
        // ever polled twice within its interval to catch up (a device that asks for its interval
        // gets it), and the line still never idles while one is due.
        let mut queue = eight_meters(ms(1000));
        let dead = |m: usize, full: bool| {
            if m == 3 {
                (ms(344), true)
            } else {
                sdm630(m, full)
            }
        };
        let (polls, idle) = simulate(&mut queue, Duration::from_secs(120), dead);
        assert_eq!(idle, Duration::ZERO);
        for m in (0..8).filter(|&m| m != 3) {
            let starts: Vec<Duration> = polls
                .iter()
                .filter(|p| p.meter == m)
                .map(|p| p.start)
                .collect();
            assert!(starts.len() >= 100, "meter {m}: {} polls", starts.len());
            for w in starts.windows(2) {
                assert!(w[1] - w[0] >= ms(1000), "meter {m}: {w:?}");
            }
        }
    }

    #[test]
    fn a_device_with_a_minimum_interval_is_never_polled_closer_than_that() {
        // Power every 10 s, counters every 15 s, device limit 10 s: without reading the counter
        // early, polls would come 5 s apart (at 10, 15, 20, 30 …).
        let mut queue = BusQueue::new(
            vec![schedule_with_floor(ms(10_000), ms(15_000), 10)],
            backoff(),
        );
        let (polls, _) = simulate(&mut queue, Duration::from_secs(300), |_, _| (ms(40), false));
        for w in polls.windows(2) {
            assert!(w[1].start - w[0].start >= ms(10_000), "{w:?}");
        }
        assert!(polls.len() >= 29, "{}", polls.len());
    }

    proptest::proptest! {
        /// Any mix of meters (intervals 10 ms – 3 s, polls 5–200 ms, perhaps one dead): the line
        /// never idles while a meter is due; no live meter is polled sooner than its interval,
        /// nor waits longer than its interval, the poll under way when it fell due and one poll
        /// of every other meter (no starvation: a meter polled after another fell due is next
        /// due later than that one).
        #[test]
        fn the_line_never_idles_while_due_and_no_meter_starves(
            meters in proptest::collection::vec((10u64..3000, 5u64..200), 1..10),
            dead in proptest::option::of(0usize..10),
        ) {
            let mut queue = BusQueue::new(
                meters
                    .iter()
                    .map(|&(interval, _)| schedule(ms(interval), Duration::from_secs(60)))
                    .collect(),
                backoff(),
            );
            let probe = ms(344);
            let cost = |m: usize, _: bool| {
                if Some(m) == dead { (probe, true) } else { (ms(meters[m].1), false) }
            };
            let (polls, idle) = simulate(&mut queue, Duration::from_secs(60), cost);
            proptest::prop_assert_eq!(idle, Duration::ZERO);
            let round: Duration = (0..meters.len())
                .map(|m| if Some(m) == dead { probe } else { ms(meters[m].1) })
                .sum();
            let longest = probe.max(meters.iter().map(|&(_, c)| ms(c)).max().unwrap_or_default());
            for (m, &(interval, _)) in meters.iter().enumerate() {
                if Some(m) == dead {
                    continue;
                }
                let starts: Vec<Duration> =
                    polls.iter().filter(|p| p.meter == m).map(|p| p.start).collect();
                proptest::prop_assert!(!starts.is_empty());
                for w in starts.windows(2) {
                    proptest::prop_assert!(w[1] - w[0] >= ms(interval), "meter {}: {:?}", m, w);
                    proptest::prop_assert!(
                        w[1] - w[0] <= ms(interval) + round + longest,
                        "meter {} waited {:?} (interval {} ms, round {:?})", m, w[1] - w[0], interval, round
                    );
                }
            }
        }
    }

    #[test]
    fn an_empty_bus_waits_and_never_overflows() {
        let queue = BusQueue::new(vec![], backoff());
        assert_eq!(
            queue.next(Duration::MAX - ms(1)),
            Next::WaitUntil(Duration::MAX)
        );
        assert_eq!(queue.next(ms(5)), Next::WaitUntil(ms(5) + IDLE_RECHECK));
    }
}
