//! Query parameters of both HTTP servers (site and hub): times, ranges, steps, months, years and
//! counts, each parsed with checked arithmetic against stated limits.
//!
//! Pure: no I/O, the time "now" is an argument. Every function answers any string with a value
//! inside its bounds or a [`QueryError`] naming the parameter and the limit; none may panic (the
//! property tests below and the fuzz targets hold them to it).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// Earliest and latest year a time, a month or a year parameter may name.
pub const MIN_YEAR: i32 = 2000;
pub const MAX_YEAR: i32 = 2099;
/// Longest query string, bytes (percent-encoded, as received).
pub const MAX_QUERY_BYTES: usize = 2048;
/// Most parameters in one query string.
pub const MAX_PARAMS: usize = 16;
/// Most points (slots, rows per meter) one answer may have.
pub const MAX_POINTS: i64 = 3000;

/// A parameter that cannot be answered: which one, and what would be valid. Answered as 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub param: String,
    pub message: String,
}

impl QueryError {
    pub fn new(param: &str, message: impl Into<String>) -> Self {
        QueryError {
            param: param.to_string(),
            message: message.into(),
        }
    }

    /// The body of the 400 answer: `{"error": "PARAM: message", "param": "PARAM"}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "error": self.to_string(), "param": self.param }).to_string()
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.message)
    }
}

impl std::error::Error for QueryError {}

/// The decoded parameters of a query string; a name given twice is refused (which of the two
/// would count is not something a client should have to guess).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn parse(raw: &str) -> Result<Params, QueryError> {
        if raw.len() > MAX_QUERY_BYTES {
            return Err(QueryError::new(
                "query",
                format!(
                    "{} bytes; a query string has at most {MAX_QUERY_BYTES}",
                    raw.len()
                ),
            ));
        }
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            if map.len() >= MAX_PARAMS {
                return Err(QueryError::new(
                    "query",
                    format!("at most {MAX_PARAMS} parameters"),
                ));
            }
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(QueryError::new(&k, "given more than once"));
            }
        }
        Ok(Params(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The length of an answer's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A fixed length, seconds.
    Seconds(i64),
    /// `1d`: the local days of the daemon's zone (23 or 25 hours on the DST change days).
    LocalDays,
}

/// Which steps a server takes, seconds: `min_s..=max_s` and a multiple of `multiple_of_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRule {
    pub min_s: i64,
    pub max_s: i64,
    pub multiple_of_s: i64,
}

/// Most digits of a number in a parameter (more cannot be in bounds anyway).
const MAX_DIGITS: usize = 12;

fn short(s: &str) -> String {
    let mut t: String = s.chars().take(40).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    format!("{t:?}")
}

/// `900`, `900s`, `15m`, `15min`, `1h`, `2d` (fixed lengths) or `1d` (local days), within `rule`.
pub fn parse_step(s: &str, rule: StepRule) -> Result<Step, QueryError> {
    let bounds = format!(
        "between {} and {} ({}..={} s), a multiple of {}",
        human(rule.min_s),
        human(rule.max_s),
        rule.min_s,
        rule.max_s,
        human(rule.multiple_of_s)
    );
    let garbage = || {
        QueryError::new(
            "step",
            format!(
                "{} is not a step: write N followed by s, m, h or d (1d = local days), {bounds}",
                short(s)
            ),
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(garbage());
    }
    let mul: i64 = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(garbage()),
    };
    if s == "1d" {
        return Ok(Step::LocalDays);
    }
    let too_long = || QueryError::new("step", format!("{} is too long: {bounds}", short(s)));
    if digits.len() > MAX_DIGITS {
        return Err(too_long());
    }
    let n: i64 = digits.parse().map_err(|_| too_long())?;
    let secs = n.checked_mul(mul).ok_or_else(too_long)?;
    if secs > rule.max_s {
        return Err(too_long());
    }
    if secs < rule.min_s || secs <= 0 {
        return Err(QueryError::new(
            "step",
            format!("{} is too short: {bounds}", short(s)),
        ));
    }
    if rule.multiple_of_s > 0 && secs % rule.multiple_of_s != 0 {
        return Err(QueryError::new(
            "step",
            format!("{} is not a whole number of steps: {bounds}", short(s)),
        ));
    }
    Ok(Step::Seconds(secs))
}

/// `3600` → `1h`, `5400` → `1h30m`, `92 × 86400 + 3600` → `92d1h`, `0` → `0s`.
fn human(s: i64) -> String {
    if s <= 0 {
        return format!("{s}s");
    }
    let mut out = String::new();
    let mut rest = s;
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= len {
            out += &format!("{}{unit}", rest / len);
            rest %= len;
        }
    }
    out
}

/// A time: RFC 3339, or a local date `YYYY-MM-DD` (midnight in `tz`), in the years
/// [`MIN_YEAR`]..=[`MAX_YEAR`].
pub fn parse_time<Tz: TimeZone>(
    param: &str,
    s: &str,
    tz: &Tz,
) -> Result<DateTime<Utc>, QueryError> {
    let t = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        Some(t.with_timezone(&Utc))
    } else if s.len() == 10 {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|d| tz.from_local_datetime(&d).earliest())
            .map(|t| t.with_timezone(&Utc))
    } else {
        None
    };
    let Some(t) = t else {
        return Err(QueryError::new(
            param,
            format!(
                "{} is not a time: give RFC 3339 (2026-06-01T10:00:00Z) or a date YYYY-MM-DD",
                short(s)
            ),
        ));
    };
    if !(MIN_YEAR..=MAX_YEAR).contains(&t.year()) {
        return Err(QueryError::new(
            param,
            format!("{} is outside the years {MIN_YEAR}..={MAX_YEAR}", short(s)),
        ));
    }
    Ok(t)
}

/// `YYYY-MM` → (year, month), the year within [`MIN_YEAR`]..=[`MAX_YEAR`].
pub fn parse_month(s: &str) -> Result<(i32, u32), QueryError> {
    let bad = |why: &str| {
        QueryError::new(
            "month",
            format!(
                "{} {why}: give YYYY-MM, a year in {MIN_YEAR}..={MAX_YEAR} and a month in 01..=12",
                short(s)
            ),
        )
    };
    let b = s.as_bytes();
    if b.len() != 7
        || b[4] != b'-'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_digit())
    {
        return Err(bad("is not a month"));
    }
    let year = parse_bounded("month", &s[..4], i64::from(MIN_YEAR), i64::from(MAX_YEAR))
        .map_err(|_| bad("is out of range"))?;
    let month = parse_bounded("month", &s[5..], 1, 12).map_err(|_| bad("is out of range"))?;
    Ok((year as i32, month as u32))
}

/// `YYYY` within [`MIN_YEAR`]..=[`MAX_YEAR`].
pub fn parse_year(s: &str) -> Result<i32, QueryError> {
    if s.len() != 4 {
        return Err(QueryError::new(
            "year",
            format!(
                "{} is not a year: give YYYY in {MIN_YEAR}..={MAX_YEAR}",
                short(s)
            ),
        ));
    }
    parse_bounded("year", s, i64::from(MIN_YEAR), i64::from(MAX_YEAR)).map(|y| y as i32)
}

/// A whole number in `min..=max` (page sizes, limits, the parts of a date).
pub fn parse_bounded(param: &str, s: &str, min: i64, max: i64) -> Result<i64, QueryError> {
    let out = || {
        QueryError::new(
            param,
            format!("{} is not a whole number in {min}..={max}", short(s)),
        )
    };
    if s.is_empty() || s.len() > MAX_DIGITS + 1 {
        return Err(out());
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(out());
    }
    let n: i64 = s.parse().map_err(|_| out())?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(out())
    }
}

/// What an answer over time may span and how finely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRule {
    /// Without `from`, the answer starts this long before `to`; `None`: `from` is required.
    pub default_span_s: Option<i64>,
    /// The step without `step`, seconds.
    pub default_step_s: i64,
    pub step: StepRule,
    /// Longest `to − from`, seconds.
    pub max_span_s: i64,
    /// Most points an answer may have.
    pub max_points: i64,
}

fn div_ceil(a: i64, b: i64) -> i64 {
    if b <= 0 {
        return i64::MAX;
    }
    a / b + i64::from(a % b != 0)
}

/// A checked `from`/`to`/`step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub step: Step,
    /// Points the answer will have at most (per series).
    pub points: i64,
}

/// `from`, `to` (default `now`) and `step` of `params` against `rule`: `from < to`, the span at
/// most `rule.max_span_s`, at most `rule.max_points` points (local days count as one each).
pub fn parse_window<Tz: TimeZone>(
    params: &Params,
    rule: &WindowRule,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Result<Window, QueryError> {
    let to = match params.get("to") {
        Some(s) => parse_time("to", s, tz)?,
        None if rule.default_span_s.is_some() => now,
        None => {
            return Err(QueryError::new(
                "to",
                "required: an RFC 3339 time or a date YYYY-MM-DD",
            ))
        }
    };
    let from = match (params.get("from"), rule.default_span_s) {
        (Some(s), _) => parse_time("from", s, tz)?,
        (None, Some(span)) => to
            .checked_sub_signed(chrono::Duration::seconds(span))
            .ok_or_else(|| QueryError::new("from", "before the earliest time"))?,
        (None, None) => {
            return Err(QueryError::new(
                "from",
                "required: an RFC 3339 time or a date YYYY-MM-DD",
            ))
        }
    };
    if to <= from {
        return Err(QueryError::new("to", "must be after from"));
    }
    let span_s = (to - from).num_seconds();
    if span_s > rule.max_span_s {
        return Err(QueryError::new(
            "to",
            format!(
                "the range from..to is {}; it may be at most {} ({} s)",
                human(span_s),
                human(rule.max_span_s),
                rule.max_span_s
            ),
        ));
    }
    let step = match params.get("step") {
        Some(s) => parse_step(s, rule.step)?,
        None => Step::Seconds(rule.default_step_s),
    };
    // A local day is at least 23 h; fixed slots are aligned on the step, so the first one may
    // start before `from` (one more slot).
    let points = match step {
        Step::LocalDays => div_ceil(span_s, 82_800) + 1,
        Step::Seconds(s) => div_ceil(span_s, s) + 1,
    };
    if points > rule.max_points {
        return Err(QueryError::new(
            "step",
            format!(
                "{} over {} gives up to {points} points; an answer has at most {} points (use a longer step or a shorter range)",
                params.get("step").map(short).unwrap_or_else(|| human(rule.default_step_s)),
                human(span_s),
                rule.max_points
            ),
        ));
    }
    Ok(Window {
        from,
        to,
        step,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SITE_STEP: StepRule = StepRule {
        min_s: 60,
        max_s: 400 * 86_400,
        multiple_of_s: 60,
    };

    fn rule() -> WindowRule {
        WindowRule {
            default_span_s: None,
            default_step_s: 3600,
            step: StepRule {
                min_s: 3600,
                max_s: 92 * 86_400,
                multiple_of_s: 3600,
            },
            max_span_s: 92 * 86_400,
            max_points: MAX_POINTS,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
    }

    fn window(q: &str) -> Result<Window, QueryError> {
        parse_window(&Params::parse(q)?, &rule(), &chrono_tz::Europe::Rome, now())
    }

    #[test]
    fn steps_parse_as_seconds_or_durations_within_bounds() {
        assert_eq!(parse_step("900", SITE_STEP), Ok(Step::Seconds(900)));
        assert_eq!(parse_step("15m", SITE_STEP), Ok(Step::Seconds(900)));
        assert_eq!(parse_step("1h", SITE_STEP), Ok(Step::Seconds(3600)));
        assert_eq!(parse_step("2d", SITE_STEP), Ok(Step::Seconds(172_800)));
        assert_eq!(parse_step("1d", SITE_STEP), Ok(Step::LocalDays));
        for bad in [
            "soon", "", "h", "-1h", "1.5h", "NaN", "inf", "1w", " 1h", "1h ",
        ] {
            let e = parse_step(bad, SITE_STEP).unwrap_err();
            assert_eq!(e.param, "step");
            assert!(e.message.contains("between 1m and 400d"), "{e}");
        }
    }

    #[test]
    fn a_step_that_would_overflow_is_refused_naming_the_longest_step() {
        for huge in [
            "9223372036854775807d",
            "4611686018427387844m",
            "100000000000000000000s",
            "18446744073709551615",
            "401d",
        ] {
            let e = parse_step(huge, SITE_STEP).unwrap_err();
            assert!(
                e.message.contains("too long") && e.message.contains("400d"),
                "{e}"
            );
        }
        let e = parse_step("0s", SITE_STEP).unwrap_err();
        assert!(e.message.contains("too short"), "{e}");
        let e = parse_step("90s", SITE_STEP).unwrap_err();
        assert!(e.message.contains("multiple of 1m"), "{e}");
    }

    #[test]
    fn months_and_years_have_stated_bounds() {
        assert_eq!(parse_month("2026-06"), Ok((2026, 6)));
        assert_eq!(parse_month("2000-01"), Ok((2000, 1)));
        assert_eq!(parse_month("2099-12"), Ok((2099, 12)));
        for bad in [
            "0000-01",
            "9999-12",
            "2026-13",
            "2026-00",
            "2026-6",
            "june",
            "",
            "+026-01",
            "2026-1a",
            "２０２６-01",
        ] {
            let e = parse_month(bad).unwrap_err();
            assert!(e.message.contains("2000..=2099"), "{bad}: {e}");
        }
        assert_eq!(parse_year("2026"), Ok(2026));
        assert!(
            parse_year("1999").is_err() && parse_year("-200").is_err() && parse_year("x").is_err()
        );
    }

    #[test]
    fn times_are_rfc3339_or_local_dates_in_the_stated_years() {
        let t = parse_time("from", "2026-06-01", &chrono_tz::Europe::Rome).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-05-31T22:00:00+00:00");
        assert!(parse_time("from", "yesterday", &Utc).is_err());
        let e = parse_time("from", "0000-01-01T00:00:00Z", &Utc).unwrap_err();
        assert!(e.message.contains("2000..=2099"), "{e}");
        assert!(parse_time("to", "9999-12-31", &Utc).is_err());
    }

    #[test]
    fn windows_refuse_inverted_too_long_and_too_fine_ranges() {
        let w = window("from=2026-06-01&to=2026-06-02&step=1h").unwrap();
        assert_eq!(w.step, Step::Seconds(3600));
        assert!(w.points <= MAX_POINTS);
        assert_eq!(
            window("from=2026-06-02&to=2026-06-01").unwrap_err().param,
            "to"
        );
        assert_eq!(
            window("from=2026-06-01&to=2026-06-01").unwrap_err().param,
            "to"
        );
        let e = window("from=2026-01-01&to=2026-12-31").unwrap_err();
        assert!(e.message.contains("at most 92d"), "{e}");
        let e = window("to=2026-06-02").unwrap_err();
        assert_eq!(e.param, "from");
        let e = window("from=2026-06-01&to=2026-06-02&from=2026-05-01").unwrap_err();
        assert!(e.message.contains("more than once"), "{e}");
        let fine = WindowRule {
            step: SITE_STEP,
            ..rule()
        };
        let q = Params::parse("from=2026-03-01&to=2026-06-01&step=1m").unwrap();
        let e = parse_window(&q, &fine, &Utc, now()).unwrap_err();
        assert!(e.message.contains("at most 3000"), "{e}");
    }

    #[test]
    fn lengths_are_written_as_a_person_would() {
        assert_eq!(human(3600), "1h");
        assert_eq!(human(5400), "1h30m");
        assert_eq!(human(92 * 86_400 + 3600), "92d1h");
        assert_eq!(human(59), "59s");
    }

    #[test]
    fn error_bodies_are_json_naming_the_parameter() {
        let e = parse_step("9223372036854775807d", SITE_STEP).unwrap_err();
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["param"], "step");
        assert!(v["error"].as_str().unwrap().starts_with("step: "));
    }

    proptest! {
        #[test]
        fn no_string_makes_a_parser_panic_or_leave_its_bounds(s in ".{0,40}", raw in "[a-z=&%0-9.:TZ+-]{0,80}") {
            if let Ok(Step::Seconds(n)) = parse_step(&s, SITE_STEP) {
                prop_assert!((60..=400 * 86_400).contains(&n) && n % 60 == 0);
            }
            if let Ok((y, m)) = parse_month(&s) {
                prop_assert!((MIN_YEAR..=MAX_YEAR).contains(&y) && (1..=12).contains(&m));
            }
            if let Ok(y) = parse_year(&s) {
                prop_assert!((MIN_YEAR..=MAX_YEAR).contains(&y));
            }
            if let Ok(n) = parse_bounded("limit", &s, 1, 500) {
                prop_assert!((1..=500).contains(&n));
            }
            if let Ok(t) = parse_time("from", &s, &chrono_tz::Europe::Rome) {
                prop_assert!((MIN_YEAR..=MAX_YEAR).contains(&t.year()));
            }
            for q in [raw.as_str(), s.as_str()] {
                if let Ok(w) = window(q) {
                    prop_assert!(w.from < w.to);
                    prop_assert!((w.to - w.from).num_seconds() <= 92 * 86_400);
                    prop_assert!(w.points <= MAX_POINTS);
                }
            }
        }

        #[test]
        fn any_number_with_any_unit_is_a_bounded_step_or_an_error(n in proptest::num::u64::ANY, unit in "(s|m|min|h|d|)") {
            match parse_step(&format!("{n}{unit}"), SITE_STEP) {
                Ok(Step::Seconds(s)) => prop_assert!((60..=400 * 86_400).contains(&s)),
                Ok(Step::LocalDays) => prop_assert!(n == 1 && unit == "d"),
                Err(e) => prop_assert_eq!(e.param, "step"),
            }
        }
    }
}
