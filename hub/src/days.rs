//! Local calendar days: the UTC bounds of each day of a time zone between two instants, so that
//! daily figures follow the residents' days (23 or 25 hours on the two DST change days).
//!
//! Pure: it never reads a clock.

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};

/// The first instant of `date` in `tz` (midnight, or the first valid time after a gap).
pub fn day_start<Tz: TimeZone>(date: NaiveDate, tz: &Tz) -> Option<DateTime<Utc>> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    if let Some(t) = tz.from_local_datetime(&midnight).earliest() {
        return Some(t.with_timezone(&Utc));
    }
    // A zone whose clocks jump over midnight: the day starts at the first valid minute.
    (1..=180).find_map(|m| {
        let t = midnight + chrono::Duration::minutes(m);
        tz.from_local_datetime(&t)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// `(start, end)` of every local day of `tz` that overlaps `[from, to)`, in order; the first
/// starts at the local midnight on or before `from`. At most `max_days` days.
pub fn local_days<Tz: TimeZone>(
    tz: &Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max_days: usize,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut date = from.with_timezone(tz).date_naive();
    while out.len() < max_days {
        let (Some(start), Some(next)) = (day_start(date, tz), date.checked_add_days(Days::new(1)))
        else {
            break;
        };
        if start >= to {
            break;
        }
        let Some(end) = day_start(next, tz) else {
            break;
        };
        out.push((start, end));
        date = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Rome;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn rome_days_are_23_hours_in_spring_and_25_in_autumn() {
        // 2026: summer time begins on 29 March, ends on 25 October.
        let spring = local_days(
            &Rome,
            utc("2026-03-28T23:00:00Z"),
            utc("2026-03-30T00:00:00Z"),
            10,
        );
        assert_eq!(
            spring,
            vec![
                (utc("2026-03-28T23:00:00Z"), utc("2026-03-29T22:00:00Z")),
                (utc("2026-03-29T22:00:00Z"), utc("2026-03-30T22:00:00Z")),
            ]
        );
        assert_eq!((spring[0].1 - spring[0].0).num_hours(), 23);
        let autumn = local_days(
            &Rome,
            utc("2026-10-25T12:00:00Z"),
            utc("2026-10-25T13:00:00Z"),
            10,
        );
        assert_eq!(
            autumn,
            vec![(utc("2026-10-24T22:00:00Z"), utc("2026-10-25T23:00:00Z"))]
        );
        assert_eq!((autumn[0].1 - autumn[0].0).num_hours(), 25);
    }

    #[test]
    fn days_cover_the_range_without_gaps_and_stop_at_the_limit() {
        let d = local_days(
            &Rome,
            utc("2026-01-01T10:00:00Z"),
            utc("2026-12-31T10:00:00Z"),
            400,
        );
        assert_eq!(d.len(), 365);
        assert!(d.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(d[0].0, utc("2025-12-31T23:00:00Z"));
        assert_eq!(
            local_days(
                &Rome,
                utc("2026-01-01T10:00:00Z"),
                utc("2026-12-31T10:00:00Z"),
                7
            )
            .len(),
            7
        );
        assert!(local_days(
            &Rome,
            utc("2026-01-02T10:00:00Z"),
            utc("2026-01-01T10:00:00Z"),
            7
        )
        .is_empty());
    }
}
