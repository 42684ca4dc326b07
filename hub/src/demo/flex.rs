//! The bus depot's charging controller in `socer demo`: it listens as a building automation would
//! (its site's targeted alerts and the retained signal, over MQTT) and moves part of the buses'
//! night charge into announced green windows. Planning is pure (`plan`); the task only carries
//! messages to it and its result into the model. A plan never charges less than the night needs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::watch;

use socer_drivers::Clock;

use super::load::{hhmm, ChargeWindow, LoadKind};
use super::model::Community;
use super::scenario::BuildingSpec;
use crate::wire::{Alert, AlertKind, Level, Signal, Topics};

/// Hours of the night's charge the depot can move into the day (buses rotated back at midday);
/// also what the demo declares in the central config's `[[flex]]`.
pub const SHIFT_HOURS: f64 = 4.0;
/// The `[[flex]]` name of the depot's charging.
pub const FLEX_NAME: &str = "bus charging";
/// Moved charge is planned in steps of this many minutes.
const STEP_MIN: i64 = 15;

/// What the depot must do, read from its load in the scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Depot {
    /// Power of the night chargers, kW: also what a green window's charge draws.
    pub charger_kw: f64,
    /// Buses are back and may charge from this local time (minutes after midnight).
    pub night_from_min: u32,
    /// Latest completion: the buses leave at this local time (minutes after midnight).
    pub ready_by_min: u32,
    /// At most this many hours of the night's charge may move into the day.
    pub shift_hours: f64,
    /// Other charging kept as it is (the weekday midday top-up).
    pub fixed: Vec<ChargeWindow>,
}

impl Depot {
    /// The depot of a building whose load is a `bus_depot` with a night window (one that wraps
    /// past midnight); `None` for any other building.
    pub fn of(spec: &BuildingSpec) -> Option<Depot> {
        spec.loads.iter().find_map(|l| {
            let LoadKind::BusDepot { charging, .. } = &l.kind else {
                return None;
            };
            let night = charging.iter().find(|c| {
                matches!((hhmm(&c.from), hhmm(&c.to)), (Some(a), Some(b)) if b < a) && c.kw > 0.0
            })?;
            Some(Depot {
                charger_kw: night.kw,
                night_from_min: hhmm(&night.from)?,
                ready_by_min: hhmm(&night.to)?,
                shift_hours: SHIFT_HOURS,
                fixed: charging.iter().filter(|c| *c != night).cloned().collect(),
            })
        })
    }

    fn night_hours(&self) -> f64 {
        f64::from((self.ready_by_min + 1440 - self.night_from_min) % 1440) / 60.0
    }

    /// The energy one night's charge must deliver, kWh.
    pub fn night_kwh(&self) -> f64 {
        self.charger_kw * self.night_hours()
    }

    /// The schedule with nothing moved.
    pub fn fixed_schedule(&self) -> Vec<ChargeWindow> {
        let mut w = vec![ChargeWindow {
            from: clock_text(self.night_from_min),
            to: clock_text(self.ready_by_min),
            kw: self.charger_kw,
            weekdays_only: false,
        }];
        w.extend(self.fixed.iter().cloned());
        w
    }
}

/// A green window the depot was told of, and how many hours of its load the hub suggested.
#[derive(Debug, Clone, PartialEq)]
pub struct GreenWindow {
    pub id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub suggested_hours: f64,
    /// When the depot first heard of it: charge cannot be moved into the time before that.
    pub heard: DateTime<Utc>,
}

impl GreenWindow {
    /// The window an alert announces for `load`, heard at `heard`; a close ends it at the
    /// alert's time.
    pub fn from_alert(a: &Alert, load: &str, heard: DateTime<Utc>) -> GreenWindow {
        let suggested = a
            .loads
            .iter()
            .find(|l| l.name == load)
            .map_or(0.0, |l| l.hours);
        let end = match a.kind {
            AlertKind::Close => a.ts.clamp(a.window_start, a.window_end),
            AlertKind::Expected | AlertKind::Open => a.window_end,
        };
        GreenWindow {
            id: a.id.clone(),
            start: a.window_start,
            end,
            suggested_hours: suggested,
            heard,
        }
    }

    /// Fold a later alert about the same window in: a close or a red signal only ends it (what
    /// was planned before keeps its suggestion and when it was first heard).
    pub fn update(&mut self, later: GreenWindow, kind: AlertKind) {
        match kind {
            AlertKind::Close => self.end = self.end.min(later.end),
            AlertKind::Expected | AlertKind::Open => {
                self.end = later.end;
                if later.suggested_hours > 0.0 {
                    self.suggested_hours = later.suggested_hours;
                }
            }
        }
    }
}

/// The charging plan for the service day that contains `now`, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    #[serde(skip)]
    pub windows: Vec<ChargeWindow>,
    /// Local `HH:MM–HH:MM @ kW` of each charging window, for the log.
    pub schedule: Vec<String>,
    /// Charge moved into green windows, kWh; the night delivers the rest of its need.
    pub moved_kwh: f64,
    pub night_kwh: f64,
    /// The alerts (window ids) the plan follows.
    pub following: Vec<String>,
    pub reason: String,
}

/// Plan the depot's charging for the service day containing `now` (from the buses' departure,
/// `ready_by`, to the next one): up to `shift_hours` of the night's charge move into the green
/// windows that fall in that day's daytime (departure to `night_from`), each no longer than the
/// window and the hub's suggestion, in whole quarter hours; the night then ends that much earlier,
/// so the day's energy is the same and the buses are ready by the usual time. Charge is never
/// moved into time already past when the window was heard of. No window: the fixed schedule.
pub fn plan(depot: &Depot, green: &[GreenWindow], now: DateTime<Utc>, tz: Tz) -> Plan {
    let fixed = |reason: String| Plan {
        windows: depot.fixed_schedule(),
        schedule: schedule_text(&depot.fixed_schedule()),
        moved_kwh: 0.0,
        night_kwh: round1(depot.night_kwh()),
        following: vec![],
        reason,
    };
    let Some((day_from, day_to)) = daytime(depot, now, tz) else {
        return fixed("no local service day at this instant (clock change): fixed schedule".into());
    };
    let mut candidates: Vec<&GreenWindow> = green
        .iter()
        .filter(|w| w.end > day_from && w.start < day_to && w.suggested_hours > 0.0)
        .collect();
    candidates.sort_by_key(|w| w.start);
    let mut left_h = depot.shift_hours.min(depot.night_hours());
    let mut moved = Vec::new();
    let mut following = Vec::new();
    for w in candidates {
        let from = w.start.max(day_from).max(w.heard);
        let to = w.end.min(day_to);
        let span_h = (to - from).num_minutes() as f64 / 60.0;
        let h = quarter_hours_down(w.suggested_hours.min(span_h).min(left_h));
        if h <= 0.0 {
            continue;
        }
        left_h -= h;
        moved.push((from, h));
        following.push(w.id.clone());
    }
    if moved.is_empty() {
        return fixed("no green window announced for today: fixed overnight schedule".into());
    }
    let moved_h: f64 = moved.iter().map(|(_, h)| h).sum();
    let night_end = (depot.ready_by_min + 1440 - (moved_h * 60.0).round() as u32) % 1440;
    let mut windows = vec![ChargeWindow {
        from: clock_text(depot.night_from_min),
        to: clock_text(night_end),
        kw: depot.charger_kw,
        weekdays_only: false,
    }];
    windows.extend(depot.fixed.iter().cloned());
    for (from, h) in &moved {
        let start = from.with_timezone(&tz);
        let start_min = start.hour() * 60 + start.minute();
        windows.push(ChargeWindow {
            from: clock_text(start_min),
            to: clock_text((start_min + (h * 60.0).round() as u32) % 1440),
            kw: depot.charger_kw,
            weekdays_only: false,
        });
    }
    let moved_kwh = round1(moved_h * depot.charger_kw);
    Plan {
        schedule: schedule_text(&windows),
        windows,
        moved_kwh,
        night_kwh: round1(depot.night_kwh() - moved_kwh),
        reason: format!(
            "{moved_h:.2} h of the night's charge moved into the green window{} {}; the night ends at {}",
            if following.len() > 1 { "s" } else { "" },
            following.join(", "),
            clock_text(night_end)
        ),
        following,
    }
}

/// The daytime of the service day containing `now`: from the departure at `ready_by` to the
/// buses' return at `night_from`, as UTC instants.
fn daytime(depot: &Depot, now: DateTime<Utc>, tz: Tz) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let local = now.with_timezone(&tz);
    let ready = NaiveTime::from_hms_opt(depot.ready_by_min / 60, depot.ready_by_min % 60, 0)?;
    let mut day = local.date_naive();
    if local.time() < ready {
        day = day.pred_opt()?;
    }
    let from = tz.from_local_datetime(&day.and_time(ready)).earliest()?;
    let back = NaiveTime::from_hms_opt(
        (depot.night_from_min / 60) % 24,
        depot.night_from_min % 60,
        0,
    )?;
    let to = tz.from_local_datetime(&day.and_time(back)).earliest()?;
    (to > from).then(|| (from.with_timezone(&Utc), to.with_timezone(&Utc)))
}

fn quarter_hours_down(h: f64) -> f64 {
    if h.is_nan() || h <= 0.0 {
        return 0.0;
    }
    ((h * 60.0) as i64 / STEP_MIN * STEP_MIN) as f64 / 60.0
}

fn clock_text(min: u32) -> String {
    format!("{:02}:{:02}", (min / 60) % 24, min % 60)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn schedule_text(w: &[ChargeWindow]) -> Vec<String> {
    w.iter()
        .map(|c| {
            format!(
                "{}–{} @ {} kW{}",
                c.from,
                c.to,
                c.kw,
                if c.weekdays_only { " (weekdays)" } else { "" }
            )
        })
        .collect()
}

/// How the controller reaches the community broker: as its site's account.
#[derive(Debug, Clone)]
pub struct Link {
    pub broker: SocketAddr,
    pub community: String,
    pub site: String,
    pub password: String,
    /// The hub's public key: only alerts and signals it signed move the charge.
    pub hub_public_key: crate::wire::HubPublicKey,
}

/// What `flex.json` in the demo's data folder says: the plan now and what it heard last.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub site: String,
    pub at: DateTime<Utc>,
    pub plan: Plan,
    pub windows_known: usize,
    pub level_now: Option<Level>,
}

/// Keep the depot's charging in `community` following the alerts until `shutdown` turns true:
/// re-plan at every alert or signal and every `every` (a window ends, a new day starts). Each
/// change of plan is printed and written to `report` (JSON), if given.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    community: Arc<Community>,
    depot: Depot,
    link: Link,
    tz: Tz,
    clock: Arc<dyn Clock>,
    every: StdDuration,
    report: Option<PathBuf>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    // An id the site's account owns on the embedded broker (`{account}.{suffix}`).
    let id = format!("{}.flex", link.site);
    let mut o = MqttOptions::new(id, link.broker.ip().to_string(), link.broker.port());
    o.set_keep_alive(StdDuration::from_secs(30));
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    o.set_credentials(link.site.clone(), link.password.clone());
    let topics = Topics::new(&link.community);
    let (client, mut events) = AsyncClient::new(o, 16);
    tokio::spawn(async move {
        let mut windows: BTreeMap<DateTime<Utc>, GreenWindow> = BTreeMap::new();
        let mut level_now: Option<Level> = None;
        let mut current: Option<Vec<ChargeWindow>> = None;
        let mut backoff = StdDuration::from_millis(500);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = StdDuration::from_millis(500);
                        for t in [topics.site_alerts(&link.site), topics.signal()] {
                            if let Err(e) = client.subscribe(&t, QoS::AtLeastOnce).await {
                                tracing::warn!("flex: subscribe to {t}: {e}");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == topics.signal() {
                            match crate::wire::verify::<Signal>(&link.hub_public_key, &p.topic, &p.payload) {
                                Ok(s) => level_now = Some(s.community.level),
                                Err(e) => tracing::warn!("flex: signal refused: {e}"),
                            }
                        } else {
                            match crate::wire::verify::<Alert>(&link.hub_public_key, &p.topic, &p.payload) {
                                Ok(a) => {
                                    println!(
                                        "socer demo: {} heard alert {} ({:?}, {} – {})",
                                        link.site,
                                        a.id,
                                        a.kind,
                                        a.window_start.with_timezone(&tz).format("%a %H:%M"),
                                        a.window_end.with_timezone(&tz).format("%H:%M")
                                    );
                                    let w = GreenWindow::from_alert(&a, FLEX_NAME, clock.now_utc());
                                    match windows.get_mut(&w.start) {
                                        Some(known) => known.update(w, a.kind),
                                        None if a.kind != AlertKind::Close => {
                                            windows.insert(w.start, w);
                                        }
                                        None => {}
                                    }
                                }
                                Err(e) => tracing::warn!("flex: alert refused: {e}"),
                            }
                        }
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!("flex: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(StdDuration::from_secs(30));
                        continue;
                    }
                },
                _ = tick.tick() => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        let _ = client.disconnect().await;
                        return;
                    }
                }
            }
            let now = clock.now_utc();
            // Windows of past days are done with.
            windows.retain(|_, w| w.end > now - Duration::days(1));
            let all: Vec<GreenWindow> = windows.values().cloned().collect();
            let p = plan(&depot, &all, now, tz);
            if current.as_ref() == Some(&p.windows) {
                continue;
            }
            community.set_charging(&link.site, p.windows.clone());
            current = Some(p.windows.clone());
            println!(
                "socer demo: {} charging {} — {}",
                link.site,
                p.schedule.join(", "),
                p.reason
            );
            if let Some(path) = &report {
                let r = Report {
                    site: link.site.clone(),
                    at: now,
                    plan: p,
                    windows_known: windows.len(),
                    level_now,
                };
                if let Ok(text) = serde_json::to_string_pretty(&r) {
                    if let Err(e) = std::fs::write(path, text) {
                        tracing::warn!("flex: cannot write {}: {e}", path.display());
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scenario::Scenario;

    #[test]
    fn the_builtin_depot_charges_180_kw_from_21_30_to_05_30_and_keeps_its_top_up() {
        let s = Scenario::builtin().unwrap();
        let stps = s.buildings.iter().find(|b| b.id == "stps").unwrap();
        let d = Depot::of(stps).unwrap();
        assert_eq!(
            (d.charger_kw, d.night_from_min, d.ready_by_min),
            (180.0, 1290, 330)
        );
        assert_eq!(d.night_kwh(), 1440.0);
        assert_eq!(d.fixed.len(), 1);
        assert!(s
            .buildings
            .iter()
            .filter(|b| b.id != "stps")
            .all(|b| Depot::of(b).is_none()));
    }
}
