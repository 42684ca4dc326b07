//! The one source of time for pollers, outboxes and the demo: tests and the demo drive it by hand.
//!
//! Wall time may jump (NTP, a Pi booting without an RTC); the monotonic part never does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// A handle on wall and monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, which may jump in either direction.
    fn now_utc(&self) -> DateTime<Utc>;
    /// Monotonic time since an arbitrary origin fixed for the life of the process.
    fn mono(&self) -> Duration;
}

/// The operating system's clocks.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_utc(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn mono(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock moved by hand: wall time can be set (a jump), both parts can be advanced together.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<(DateTime<Utc>, Duration)>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            inner: Arc::new(Mutex::new((start, Duration::ZERO))),
        }
    }

    /// Advance wall and monotonic time together, as real time passing does.
    pub fn advance(&self, by: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        g.1 += by;
    }

    /// Set the wall clock only (an NTP step or a bad RTC); monotonic time is untouched.
    pub fn set_wall(&self, to: DateTime<Utc>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = to;
    }
}

impl Clock for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }
    fn mono(&self) -> Duration {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_wall_jump_leaves_monotonic_alone() {
        let t0 = DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = ManualClock::new(t0);
        c.advance(Duration::from_secs(5));
        c.set_wall(
            DateTime::parse_from_rfc3339("1970-01-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        );
        assert_eq!(c.mono(), Duration::from_secs(5));
        assert_eq!(c.now_utc().timestamp(), 0);
    }
}

/// Whole milliseconds of `d`, saturating (a `Duration` holds more than a `u64` of them).
pub fn saturating_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole microseconds of `d`, saturating.
pub fn saturating_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Sleep until `deadline` to within tens of microseconds rather than tokio's millisecond tick.
///
/// tokio's timer rounds a deadline up to the next millisecond and wakes on the tick after it, so a
/// 4.01 ms RTU silence costs 5–6 ms on the line. Here the bulk of the wait is a tokio sleep that
/// ends about [`PRECISE_SLACK`] early, and the rest a `nanosleep` on the blocking pool (hrtimer
/// precision). Under tokio's paused test clock the last step is a tokio sleep again, so virtual
/// time still reaches the deadline.
pub async fn sleep_until_precise(deadline: tokio::time::Instant) {
    let now = tokio::time::Instant::now();
    if deadline <= now {
        return;
    }
    if deadline - now > PRECISE_SLACK {
        tokio::time::sleep_until(deadline - PRECISE_SLACK).await;
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !left.is_zero() {
        // A pool that refuses the task (runtime shutting down) leaves the tokio sleep below.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)).await;
    }
    if tokio::time::Instant::now() < deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// How early [`sleep_until_precise`] hands over from tokio's timer to `nanosleep`: the timer's
/// tick plus a wake-up.
pub const PRECISE_SLACK: Duration = Duration::from_millis(2);

#[cfg(test)]
mod precise_tests {
    use super::*;

    #[tokio::test]
    async fn a_precise_sleep_never_ends_before_its_deadline() {
        for micros in [0u64, 150, 1_900, 4_010, 7_300] {
            let start = tokio::time::Instant::now();
            let deadline = start + Duration::from_micros(micros);
            sleep_until_precise(deadline).await;
            assert!(tokio::time::Instant::now() >= deadline, "{micros} us");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn under_the_paused_test_clock_it_reaches_the_deadline_in_virtual_time() {
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(30);
        sleep_until_precise(deadline).await;
        assert!(tokio::time::Instant::now() >= deadline);
    }
}

#[cfg(test)]
mod saturating_tests {
    use super::*;

    #[test]
    fn durations_beyond_u64_saturate_instead_of_wrapping() {
        assert_eq!(saturating_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(saturating_us(Duration::from_micros(7)), 7);
        assert_eq!(saturating_ms(Duration::MAX), u64::MAX);
        assert_eq!(saturating_us(Duration::MAX), u64::MAX);
    }
}
