//! Load-shift alerts: a state machine that announces green windows (forecast, then opening), closes
//! one that ends early, targets the sites that declared flexible loads, and keeps each target
//! within its daily budget.
//!
//! Pure: it is stepped with the time, the live level and the forecast; it returns the alerts to
//! publish and never publishes them itself.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use super::config::FlexLoad;
use crate::wire::{Alert, AlertKind, FlexSuggestion, ForecastSlot, Level};

/// Settings of the alert engine.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    pub community: String,
    pub tz: Tz,
    pub max_per_day: u32,
    pub lookahead: Duration,
    pub min_window: Duration,
    pub flex: Vec<FlexLoad>,
}

/// A green window: from the forecast, or open now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub surplus_kwh: f64,
}

impl Window {
    fn overlaps(&self, o: &Window) -> bool {
        self.start < o.end && o.start < self.end
    }
    fn hours(&self) -> f64 {
        (self.end - self.start).num_seconds() as f64 / 3600.0
    }
}

/// An open window ending this much before its announced end has ended early.
const EARLY: Duration = Duration::minutes(15);
/// A load is suggested when it can run at least this long in the window, hours.
const MIN_LOAD_HOURS: f64 = 0.5;

/// Runs of consecutive green slots, each at least `min` long.
pub fn green_windows(slots: &[ForecastSlot], min: Duration) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    let mut cur: Option<Window> = None;
    for s in slots {
        let end = s.start + Duration::hours(1);
        cur = match (cur, s.level == Level::Green) {
            (Some(w), true) if w.end == s.start => Some(Window {
                end,
                surplus_kwh: w.surplus_kwh + s.surplus_kwh,
                ..w
            }),
            (prev, green) => {
                out.extend(prev);
                green.then_some(Window {
                    start: s.start,
                    end,
                    surplus_kwh: s.surplus_kwh,
                })
            }
        };
    }
    out.extend(cur);
    out.retain(|w| w.end - w.start >= min);
    out
}

/// The alert engine of one community.
#[derive(Debug, Clone)]
pub struct Alerts {
    cfg: AlertConfig,
    /// Forecast windows already announced, by start, and the targets told of each.
    announced: BTreeMap<DateTime<Utc>, (Window, Vec<Option<String>>)>,
    /// The window open now and the targets that were told it opened.
    open: Option<(Window, Vec<Option<String>>)>,
    /// Alerts sent per target and local day.
    sent: HashMap<(Option<String>, NaiveDate), u32>,
}

impl Alerts {
    pub fn new(cfg: AlertConfig) -> Self {
        Alerts {
            cfg,
            announced: BTreeMap::new(),
            open: None,
            sent: HashMap::new(),
        }
    }

    /// Alerts sent to `target` (None: the community topic) on the local day of `t`.
    pub fn sent_on(&self, target: Option<&str>, t: DateTime<Utc>) -> u32 {
        let day = t.with_timezone(&self.cfg.tz).date_naive();
        self.sent
            .get(&(target.map(str::to_string), day))
            .copied()
            .unwrap_or(0)
    }

    /// One step: the live community level and surplus at `now`, and the current forecast.
    pub fn step(
        &mut self,
        now: DateTime<Utc>,
        live: Level,
        live_surplus_kw: f64,
        forecast: &[ForecastSlot],
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        self.announced.retain(|_, (w, _)| w.end > now);
        let day = now.with_timezone(&self.cfg.tz).date_naive();
        self.sent.retain(|(_, d), _| *d >= day);

        // A window open now.
        match (&self.open, live == Level::Green) {
            (None, true) => {
                let w = self.opening_window(now, live_surplus_kw, forecast);
                self.announced.retain(|_, (a, _)| !a.overlaps(&w));
                let told = self.emit(&mut out, now, AlertKind::Open, w, None);
                self.open = Some((w, told));
            }
            (Some((w, told)), false) => {
                let (w, told) = (*w, told.clone());
                if now < w.end - EARLY {
                    self.emit(&mut out, now, AlertKind::Close, w, Some(&told));
                }
                self.open = None;
            }
            (Some((w, told)), true) if now >= w.end => {
                // Still green past the announced end: extend the window quietly.
                let ext = self.opening_window(now, live_surplus_kw, forecast);
                self.open = Some((
                    Window {
                        start: w.start,
                        ..ext
                    },
                    told.clone(),
                ));
            }
            _ => {}
        }

        // Windows the forecast expects.
        let horizon = now + self.cfg.lookahead;
        for w in green_windows(forecast, self.cfg.min_window) {
            if w.start <= now || w.start >= horizon {
                continue;
            }
            if self.open.as_ref().is_some_and(|(o, _)| o.overlaps(&w)) {
                continue;
            }
            // A target told of an overlapping window is not told again; one the window did not
            // suit before (it has grown) or whose budget was spent is told now if it can be.
            let overlapping: Vec<DateTime<Utc>> = self
                .announced
                .iter()
                .filter(|(_, (a, _))| a.overlaps(&w))
                .map(|(k, _)| *k)
                .collect();
            let mut told: Vec<Option<String>> = Vec::new();
            for k in &overlapping {
                if let Some((_, t)) = self.announced.remove(k) {
                    told.extend(t);
                }
            }
            let reached = self.emit_except(&mut out, now, AlertKind::Expected, w, &told);
            told.extend(reached);
            self.announced.insert(w.start, (w, told));
        }
        out
    }

    /// The window that opens at `now`: to the end of the forecast's green run that starts with the
    /// next slot, or one hour of the live surplus when the forecast does not see it.
    fn opening_window(
        &self,
        now: DateTime<Utc>,
        live_surplus_kw: f64,
        forecast: &[ForecastSlot],
    ) -> Window {
        let hour = Duration::hours(1);
        let live = live_surplus_kw.max(0.0);
        let mut slots = forecast.iter().filter(|s| s.start + hour > now).peekable();
        // The part of the hour before the first slot runs on the live surplus.
        let (mut t, mut surplus) = match slots.peek() {
            Some(s) if s.start > now && s.start - now <= hour => (
                s.start,
                live * (s.start - now).num_seconds() as f64 / 3600.0,
            ),
            _ => (now, 0.0),
        };
        let mut used = 0;
        for s in slots {
            if s.level != Level::Green || s.start > t {
                break;
            }
            let from = s.start.max(now);
            let share = (s.start + hour - from).num_seconds() as f64 / 3600.0;
            surplus += s.surplus_kwh.max(0.0) * share;
            t = s.start + hour;
            used += 1;
        }
        if used == 0 {
            // The forecast does not see it: one hour of what there is now.
            return Window {
                start: now,
                end: now + hour,
                surplus_kwh: live,
            };
        }
        Window {
            start: now,
            end: t,
            surplus_kwh: surplus,
        }
    }

    /// `emit` to every target but those in `except`.
    fn emit_except(
        &mut self,
        out: &mut Vec<Alert>,
        now: DateTime<Utc>,
        kind: AlertKind,
        w: Window,
        except: &[Option<String>],
    ) -> Vec<Option<String>> {
        let mut all: Vec<Option<String>> = vec![None];
        all.extend(self.cfg.flex.iter().map(|f| Some(f.site.clone())));
        all.retain(|t| !except.contains(t));
        self.emit(out, now, kind, w, Some(&all))
    }

    /// Send `kind` for `w` to the community and to each flex site it suits, within the budgets;
    /// `only` restricts the targets (a close goes to those told of the opening). Returns the
    /// targets reached.
    fn emit(
        &mut self,
        out: &mut Vec<Alert>,
        now: DateTime<Utc>,
        kind: AlertKind,
        w: Window,
        only: Option<&[Option<String>]>,
    ) -> Vec<Option<String>> {
        let mut targets: Vec<(Option<String>, Vec<FlexSuggestion>)> = vec![(None, vec![])];
        let mut sites: Vec<&str> = self.cfg.flex.iter().map(|f| f.site.as_str()).collect();
        sites.sort_unstable();
        sites.dedup();
        for site in sites {
            let loads: Vec<FlexSuggestion> = self
                .cfg
                .flex
                .iter()
                .filter(|f| f.site == site && f.power_kw > 0.0)
                .filter_map(|f| {
                    let hours = f
                        .shift_hours
                        .min(w.hours())
                        .min(w.surplus_kwh.max(0.0) / f.power_kw);
                    (kind == AlertKind::Close || hours >= MIN_LOAD_HOURS).then(|| FlexSuggestion {
                        name: f.name.clone(),
                        power_kw: f.power_kw,
                        hours: (hours * 10.0).round() / 10.0,
                    })
                })
                .collect();
            if !loads.is_empty() {
                targets.push((Some(site.to_string()), loads));
            }
        }
        let day = now.with_timezone(&self.cfg.tz).date_naive();
        let mut reached = Vec::new();
        for (target, loads) in targets {
            if only.is_some_and(|o| !o.contains(&target)) {
                continue;
            }
            let count = self.sent.entry((target.clone(), day)).or_insert(0);
            // An opening keeps room in the budget for its close; a close needs one.
            let room = if kind == AlertKind::Close { 1 } else { 2 };
            if *count + room > self.cfg.max_per_day {
                continue;
            }
            *count += 1;
            out.push(self.alert(now, kind, w, target.clone(), loads));
            reached.push(target);
        }
        reached
    }

    fn alert(
        &self,
        now: DateTime<Utc>,
        kind: AlertKind,
        w: Window,
        site: Option<String>,
        loads: Vec<FlexSuggestion>,
    ) -> Alert {
        let tz = self.cfg.tz;
        let hm = |t: DateTime<Utc>| t.with_timezone(&tz).format("%H:%M").to_string();
        let kwh = w.surplus_kwh.max(0.0).round();
        let (mut it, mut en) = match kind {
            AlertKind::Expected => (
                format!(
                    "Finestra verde prevista dalle {} alle {}: circa {kwh} kWh di energia in eccesso nella comunità. Sposta lì i consumi flessibili.",
                    hm(w.start),
                    hm(w.end)
                ),
                format!(
                    "Green window expected from {} to {}: about {kwh} kWh of community surplus. Move flexible loads there.",
                    hm(w.start),
                    hm(w.end)
                ),
            ),
            AlertKind::Open => (
                format!(
                    "Finestra verde aperta ora, fino alle {} circa: usa adesso i consumi flessibili (circa {kwh} kWh disponibili).",
                    hm(w.end)
                ),
                format!(
                    "Green window open now, until about {}: run flexible loads now (about {kwh} kWh available).",
                    hm(w.end)
                ),
            ),
            AlertKind::Close => (
                format!(
                    "La finestra verde è finita in anticipo alle {}: rimanda i consumi flessibili.",
                    hm(now)
                ),
                format!(
                    "The green window ended early at {}: postpone flexible loads.",
                    hm(now)
                ),
            ),
        };
        if kind != AlertKind::Close {
            for l in &loads {
                it.push_str(&format!(
                    " {} ({} kW): fino a {} h.",
                    l.name, l.power_kw, l.hours
                ));
                en.push_str(&format!(
                    " {} ({} kW): up to {} h.",
                    l.name, l.power_kw, l.hours
                ));
            }
        }
        let kind_id = match kind {
            AlertKind::Expected => "expected",
            AlertKind::Open => "open",
            AlertKind::Close => "close",
        };
        Alert {
            id: format!(
                "{}-{}-{kind_id}",
                self.cfg.community,
                w.start.format("%Y%m%dT%H%M")
            ),
            kind,
            site,
            ts: now,
            window_start: w.start,
            window_end: w.end,
            expected_surplus_kwh: (w.surplus_kwh.max(0.0) * 10.0).round() / 10.0,
            loads,
            text_it: it,
            text_en: en,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cfg(max: u32) -> AlertConfig {
        AlertConfig {
            community: "socer".into(),
            tz: chrono_tz::Europe::Rome,
            max_per_day: max,
            lookahead: Duration::hours(24),
            min_window: Duration::hours(1),
            flex: vec![
                FlexLoad {
                    site: "stps".into(),
                    name: "bus charging".into(),
                    power_kw: 50.0,
                    shift_hours: 3.0,
                },
                FlexLoad {
                    site: "domus-1".into(),
                    name: "heat pump".into(),
                    power_kw: 400.0,
                    shift_hours: 2.0,
                },
            ],
        }
    }

    /// 24 hourly slots from `from`, green where `green(hour index)` and 40 kWh of surplus each.
    fn slots(from: DateTime<Utc>, green: impl Fn(i64) -> bool) -> Vec<ForecastSlot> {
        (0..24)
            .map(|i| {
                let g = green(i);
                ForecastSlot {
                    start: from + Duration::hours(i),
                    production_kwh: if g { 60.0 } else { 0.0 },
                    consumption_kwh: 20.0,
                    surplus_kwh: if g { 40.0 } else { -20.0 },
                    level: if g { Level::Green } else { Level::Red },
                    openadr_level: if g { 0 } else { 2 },
                }
            })
            .collect()
    }

    #[test]
    fn windows_are_runs_of_green_slots() {
        let from = t("2026-06-10T00:00:00Z");
        let s = slots(from, |i| (8..12).contains(&i) || i == 14);
        let w = green_windows(&s, Duration::hours(1));
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[0].start, w[0].end),
            (from + Duration::hours(8), from + Duration::hours(12))
        );
        assert_eq!(w[0].surplus_kwh, 160.0);
        assert_eq!(green_windows(&s, Duration::hours(2)).len(), 1);
    }

    #[test]
    fn an_expected_window_is_announced_once_to_the_community_and_the_sites_it_suits() {
        let now = t("2026-06-10T05:00:00Z");
        let mut a = Alerts::new(cfg(4));
        let f = slots(now, |i| (4..8).contains(&i));
        let out = a.step(now, Level::Red, -20.0, &f);
        // 160 kWh: the 50 kW depot can charge 3 h; the 400 kW heat pumps only 0.4 h (not targeted).
        assert_eq!(out.len(), 2, "{out:#?}");
        assert!(out.iter().all(|x| x.kind == AlertKind::Expected));
        assert_eq!(out[0].site, None);
        assert_eq!(out[0].id, "socer-20260610T0900-expected");
        assert_eq!(out[0].window_end, t("2026-06-10T13:00:00Z"));
        assert_eq!(out[0].expected_surplus_kwh, 160.0);
        assert!(
            out[0].text_it.contains("dalle 11:00 alle 15:00"),
            "{}",
            out[0].text_it
        );
        assert!(
            out[0].text_en.contains("from 11:00 to 15:00"),
            "{}",
            out[0].text_en
        );
        assert_eq!(out[1].site.as_deref(), Some("stps"));
        assert_eq!(out[1].loads[0].hours, 3.0);
        // The same window in the next forecast is not announced again.
        let later = now + Duration::minutes(30);
        assert!(a.step(later, Level::Red, -20.0, &f).is_empty());
        // Grown by an hour it is still not news to those told; 200 kWh now suits the heat pumps
        // (0.5 h at 400 kW), which hear of it for the first time.
        let grown = a.step(
            later,
            Level::Red,
            -20.0,
            &slots(now, |i| (4..9).contains(&i)),
        );
        assert_eq!(grown.len(), 1, "{grown:#?}");
        assert_eq!(grown[0].site.as_deref(), Some("domus-1"));
        assert!(a
            .step(
                later,
                Level::Red,
                -20.0,
                &slots(now, |i| (4..9).contains(&i))
            )
            .is_empty());
    }

    #[test]
    fn a_site_the_window_did_not_suit_is_told_when_it_grows() {
        let now = t("2026-06-10T05:00:00Z");
        let mut a = Alerts::new(cfg(4));
        // One green hour of 20 kWh: too little for the 50 kW depot (0.4 h).
        let mut f = slots(now, |i| i == 5);
        f[5].surplus_kwh = 20.0;
        let first = a.step(now, Level::Red, -20.0, &f);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].site, None);
        // The next forecast sees three hours of 40 kWh: the depot is told, the community not again.
        let later = now + Duration::minutes(15);
        let second = a.step(
            later,
            Level::Red,
            -20.0,
            &slots(now, |i| (4..7).contains(&i)),
        );
        assert_eq!(second.len(), 1, "{second:#?}");
        assert_eq!(second[0].site.as_deref(), Some("stps"));
        assert_eq!(second[0].expected_surplus_kwh, 120.0);
        assert!(a
            .step(
                later,
                Level::Red,
                -20.0,
                &slots(now, |i| (4..7).contains(&i))
            )
            .is_empty());
    }

    #[test]
    fn a_window_that_opens_then_ends_early_is_closed_for_those_told() {
        let now = t("2026-06-10T09:00:00Z");
        let mut a = Alerts::new(cfg(4));
        let f = slots(now, |i| i < 4);
        let open = a.step(now, Level::Green, 40.0, &f);
        assert_eq!(open.len(), 2);
        assert!(open.iter().all(|x| x.kind == AlertKind::Open));
        assert_eq!(open[0].window_end, now + Duration::hours(4));
        assert_eq!(open[0].expected_surplus_kwh, 160.0);
        // Green for a while: nothing new.
        assert!(a
            .step(now + Duration::minutes(30), Level::Green, 40.0, &f)
            .is_empty());
        // Clouds at 10:10: the window closes early.
        let close = a.step(now + Duration::minutes(70), Level::Yellow, -20.0, &f[1..]);
        assert_eq!(close.len(), 2, "{close:#?}");
        assert!(close.iter().all(|x| x.kind == AlertKind::Close));
        assert!(
            close[0].text_en.contains("ended early at 12:10"),
            "{}",
            close[0].text_en
        );
        assert_eq!(close[0].id, "socer-20260610T0900-close");
    }

    #[test]
    fn a_window_opening_mid_hour_counts_the_live_surplus_until_the_first_slot() {
        let now = t("2026-06-10T09:20:00Z");
        let mut a = Alerts::new(cfg(4));
        let f = slots(t("2026-06-10T10:00:00Z"), |i| i < 2);
        let out = a.step(now, Level::Green, 30.0, &f);
        // 40 minutes at 30 kW, then two forecast hours of 40 kWh.
        assert_eq!(out[0].expected_surplus_kwh, 100.0);
        assert_eq!(out[0].window_end, t("2026-06-10T12:00:00Z"));
        // A green now the forecast does not see: one hour of the live surplus.
        let mut b = Alerts::new(cfg(4));
        let out = b.step(
            now,
            Level::Green,
            30.0,
            &slots(t("2026-06-10T10:00:00Z"), |_| false),
        );
        assert_eq!(
            (out[0].window_end, out[0].expected_surplus_kwh),
            (now + Duration::hours(1), 30.0)
        );
    }

    #[test]
    fn a_window_that_ends_on_time_is_not_closed() {
        let now = t("2026-06-10T09:00:00Z");
        let mut a = Alerts::new(cfg(4));
        let f = slots(now, |i| i < 2);
        a.step(now, Level::Green, 40.0, &f);
        let out = a.step(now + Duration::minutes(115), Level::Yellow, -20.0, &[]);
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn no_target_gets_more_than_the_daily_budget() {
        let mut a = Alerts::new(cfg(3));
        let day = t("2026-06-10T04:00:00Z");
        let mut total: HashMap<Option<String>, u32> = HashMap::new();
        // A flapping day: every 20 minutes the level flips and the forecast moves its window.
        for i in 0..(16 * 3) {
            let now = day + Duration::minutes(20 * i);
            let live = if i % 2 == 0 { Level::Green } else { Level::Red };
            let shift = i % 5;
            let f = slots(now, |h| (h + shift) % 6 < 3);
            for al in a.step(now, live, 10.0, &f) {
                *total.entry(al.site.clone()).or_default() += 1;
            }
        }
        assert!(total.get(&None).is_some_and(|n| *n >= 2), "{total:?}");
        for (target, n) in &total {
            assert!(*n <= 3, "{target:?} got {n}");
        }
        assert_eq!(a.sent_on(None, day), total[&None]);
    }

    #[test]
    fn the_budget_resets_on_the_next_local_day() {
        let mut a = Alerts::new(cfg(2));
        let d1 = t("2026-06-10T08:00:00Z");
        let f = slots(d1, |i| i < 3);
        assert_eq!(a.step(d1, Level::Green, 40.0, &f).len(), 2);
        // The budget of 2 keeps room for the close: nothing else goes out that day.
        let later = d1 + Duration::hours(4);
        assert!(a
            .step(
                later,
                Level::Red,
                -20.0,
                &slots(later, |i| (2..5).contains(&i))
            )
            .is_empty());
        let d2 = t("2026-06-11T08:00:00Z");
        let out = a.step(d2, Level::Green, 40.0, &slots(d2, |i| i < 3));
        assert!(out.iter().any(|x| x.kind == AlertKind::Open), "{out:#?}");
    }
}
