//! Time integrity: decides whether the wall clock can be trusted, stamps readings accordingly, and
//! re-times those taken before synchronisation once it can (a Pi has no real-time clock).
//!
//! It must never let a reading leave with a 1970 (or any pre-build) timestamp, and never reorder
//! readings when the wall clock jumps: the outbox's seq is the order, not the timestamp.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use socer_drivers::clock::Clock;
use socer_drivers::reading::Reading;

use super::config::ClockPolicy;
use super::outbox::{Incoming, RunInfo};

/// No reading of this software can be older than this: a wall clock before it is certainly wrong.
pub fn earliest_valid() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// What the kernel says of the clock: synchronised by NTP (`Some(true)`), explicitly not
/// (`STA_UNSYNC` set, or `TIME_ERROR`), or unknown (the call failed).
pub fn kernel_clock_synced() -> Option<bool> {
    // SAFETY: adjtimex with modes = 0 only reads the kernel's clock state into the struct.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    Some(state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0)
}

/// The kernel's id of this boot (monotonic stamps of different boots cannot be compared).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("unknown-{}", std::process::id()))
}

/// Milliseconds since boot, counting suspend (`CLOCK_BOOTTIME`).
#[allow(clippy::useless_conversion)] // the `from`s are needed where time_t is i32
pub fn boottime_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    // time_t and c_long are i32 on 32-bit ARM (armv7 Pis): widen before multiplying.
    i64::from(ts.tv_sec) * 1000 + i64::from(ts.tv_nsec) / 1_000_000
}

/// A source of "is the clock synchronised now?".
pub type SyncProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// The probe for a policy: the kernel flag, or always trusted.
pub fn probe_for(policy: ClockPolicy) -> SyncProbe {
    match policy {
        ClockPolicy::Trust => Arc::new(|| true),
        ClockPolicy::Kernel => Arc::new(|| kernel_clock_synced().unwrap_or(false)),
    }
}

/// Stamps readings and notices when the clock becomes trustworthy.
pub struct TimeKeeper {
    clock: Arc<dyn Clock>,
    probe: SyncProbe,
    run: RunInfo,
    synced: AtomicBool,
}

/// The clock became synchronised: re-time what was stamped before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEvent {
    pub boot: String,
    /// Wall milliseconds minus boot-time milliseconds.
    pub offset_ms: i64,
    pub now_ms: i64,
}

impl TimeKeeper {
    /// `run.origin_ms` is the boot time at which `clock.mono()` was zero.
    pub fn new(clock: Arc<dyn Clock>, probe: SyncProbe, run: RunInfo) -> Self {
        Self {
            clock,
            probe,
            run,
            synced: AtomicBool::new(false),
        }
    }

    /// This process's run, for the system clock: origin = boot time now − monotonic now.
    pub fn system_run(clock: &dyn Clock) -> RunInfo {
        RunInfo {
            boot: boot_id(),
            origin_ms: boottime_ms() - clock.mono().as_millis() as i64,
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    fn wall_trusted_now(&self) -> bool {
        (self.probe)() && self.clock.now_utc() >= earliest_valid()
    }

    /// Check the clock; returns the re-timing to apply when it has just become synchronised.
    pub fn poll(&self) -> Option<SyncEvent> {
        if self.is_synced() || !self.wall_trusted_now() {
            return None;
        }
        self.synced.store(true, Ordering::Relaxed);
        let now = self.clock.now_utc().timestamp_millis();
        let boot_now = self.run.origin_ms + self.clock.mono().as_millis() as i64;
        Some(SyncEvent {
            boot: self.run.boot.clone(),
            offset_ms: now - boot_now,
            now_ms: now,
        })
    }

    /// Whether a reading's wall stamp may be stored as is. A stamp before [`earliest_valid`] is
    /// never trusted, even on a clock said to be synchronised.
    pub fn stamp(&self, reading: Reading) -> Incoming {
        let synced = self.is_synced() && reading.ts >= earliest_valid();
        Incoming { reading, synced }
    }

    /// Wall milliseconds, when trusted.
    pub fn wall_ms(&self) -> Option<i64> {
        self.is_synced()
            .then(|| self.clock.now_utc().timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use socer_drivers::clock::ManualClock;
    use socer_drivers::reading::{Quality, Values};

    use super::*;

    fn reading(clock: &ManualClock) -> Reading {
        Reading {
            meter: "grid".into(),
            ts: clock.now_utc(),
            mono_ms: socer_drivers::clock::saturating_ms(clock.mono()),
            values: Values {
                p_w: Some(1.0),
                ..Values::default()
            },
            quality: Quality::Good,
            missing: vec![],
            energy_integrated: false,
        }
    }

    #[test]
    fn readings_before_sync_are_unstamped_and_the_sync_offset_retimes_them_exactly() {
        // A Pi boots believing it is 1970; NTP later steps the clock to the real time.
        let clock = ManualClock::new(Utc.timestamp_opt(0, 0).single().unwrap());
        let ntp = Arc::new(AtomicBool::new(false));
        let probe_flag = ntp.clone();
        let tk = TimeKeeper::new(
            Arc::new(clock.clone()),
            Arc::new(move || probe_flag.load(Ordering::Relaxed)),
            RunInfo {
                boot: "b".into(),
                origin_ms: 5_000,
            },
        );
        clock.advance(Duration::from_secs(10));
        let early = tk.stamp(reading(&clock));
        assert!(!early.synced);
        assert_eq!(tk.poll(), None);
        clock.advance(Duration::from_secs(20));
        let real = Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, 0).single().unwrap();
        clock.set_wall(real);
        ntp.store(true, Ordering::Relaxed);
        let ev = tk.poll().expect("sync noticed");
        assert_eq!(tk.poll(), None, "noticed once");
        // The early reading was taken 20 s before the sync: origin + mono + offset says so.
        let retimed = 5_000 + early.reading.mono_ms as i64 + ev.offset_ms;
        assert_eq!(retimed, real.timestamp_millis() - 20_000);
        assert!(tk.stamp(reading(&clock)).synced);
    }

    #[test]
    fn a_clock_said_synchronised_but_before_the_build_date_is_not_trusted() {
        let clock = ManualClock::new(Utc.timestamp_opt(0, 0).single().unwrap());
        let tk = TimeKeeper::new(
            Arc::new(clock.clone()),
            Arc::new(|| true),
            RunInfo {
                boot: "b".into(),
                origin_ms: 0,
            },
        );
        assert_eq!(tk.poll(), None);
        assert!(!tk.stamp(reading(&clock)).synced);
    }

    #[test]
    fn a_backward_jump_after_sync_still_stamps_and_keeps_arrival_order() {
        let start = Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, 0).single().unwrap();
        let clock = ManualClock::new(start);
        let tk = TimeKeeper::new(
            Arc::new(clock.clone()),
            Arc::new(|| true),
            RunInfo {
                boot: "b".into(),
                origin_ms: 0,
            },
        );
        assert!(tk.poll().is_some());
        let a = tk.stamp(reading(&clock));
        clock.set_wall(start - chrono::Duration::minutes(5));
        let b = tk.stamp(reading(&clock));
        assert!(a.synced && b.synced);
        assert!(
            b.reading.ts < a.reading.ts,
            "the stamp follows the clock; the outbox seq keeps the order"
        );
    }

    #[test]
    fn kernel_state_and_boot_time_are_readable_here() {
        assert!(kernel_clock_synced().is_some());
        assert!(boottime_ms() > 0);
        assert!(!boot_id().is_empty());
    }
}
