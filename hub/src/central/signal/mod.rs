//! The load-shift signal: per community and substation the level now (`level`), the hourly
//! forecast (`forecast`) and the alerts (`alerts`), published retained on `signal` and as alerts.
//!
//! `Engine` is the pure core the hub steps; `run` only moves data between the live figures, the
//! store, the engine and the broker. It never writes to the store.

pub mod alerts;
pub mod config;
pub mod forecast;
pub mod level;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, DurationRound, Utc};
use chrono_tz::Tz;
use rumqttc::{AsyncClient, QoS};

use self::alerts::{AlertConfig, Alerts};
use self::config::{FlexLoad, SignalConfig};
use self::forecast::{ForecastParams, HourSample, PvModel};
use self::level::{Hysteresis, Thresholds};
use super::balance::SubstationPeriod;
use super::config::CentralConfig;
use super::{compute, ingest, store, Hub};
use crate::solar::{Orientation, Site};
use crate::wire::{self, Alert, ForecastSlot, Signal, Topics, ZoneSignal};

/// One zone's live figures, kW.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneNow {
    pub zone: String,
    pub production_kw: f64,
    pub consumption_kw: f64,
    /// injection − withdrawal.
    pub surplus_kw: f64,
}

/// The signal's state: a level per zone, and the alerts.
#[derive(Debug, Clone)]
pub struct Engine {
    th: Thresholds,
    dwell: Duration,
    zones: HashMap<String, Hysteresis>,
    alerts: Alerts,
}

impl Engine {
    pub fn new(community: &str, cfg: &SignalConfig, flex: &[FlexLoad], tz: Tz) -> Self {
        Engine {
            th: Thresholds::from_config(cfg),
            dwell: Duration::minutes(i64::from(cfg.min_dwell_minutes)),
            zones: HashMap::new(),
            alerts: Alerts::new(AlertConfig {
                community: community.to_string(),
                tz,
                max_per_day: cfg.max_alerts_per_day,
                lookahead: Duration::hours(i64::from(cfg.alert_lookahead_hours)),
                min_window: Duration::hours(i64::from(cfg.min_window_hours.max(1))),
                flex: flex.to_vec(),
            }),
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.th
    }

    fn zone(&mut self, z: &ZoneNow, now: DateTime<Utc>) -> ZoneSignal {
        let dwell = self.dwell;
        let h = self
            .zones
            .entry(z.zone.clone())
            .or_insert_with(|| Hysteresis::new(dwell));
        let (level, since) = h.update(&self.th, z.surplus_kw, z.consumption_kw, now);
        ZoneSignal {
            zone: z.zone.clone(),
            level,
            openadr_level: self.th.openadr(level, z.surplus_kw, z.consumption_kw),
            surplus_kw: round3(z.surplus_kw),
            production_kw: round3(z.production_kw),
            consumption_kw: round3(z.consumption_kw),
            since,
        }
    }

    /// One step at `now`: the signal to publish and the alerts to send.
    pub fn step(
        &mut self,
        now: DateTime<Utc>,
        community: &ZoneNow,
        substations: &[ZoneNow],
        forecast: &[ForecastSlot],
    ) -> (Signal, Vec<Alert>) {
        let c = self.zone(community, now);
        let subs = substations.iter().map(|z| self.zone(z, now)).collect();
        let alerts = self
            .alerts
            .step(now, c.level, community.surplus_kw, forecast);
        let signal = Signal {
            ts: now,
            community: c,
            substations: subs,
            forecast: forecast.to_vec(),
        };
        (signal, alerts)
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The forecast parameters of a community from its config: installed PV is the sum of its `pv`
/// plants' peak power.
pub fn forecast_params(cfg: &CentralConfig) -> ForecastParams {
    ForecastParams {
        pv: PvModel {
            site: Site {
                lat_deg: cfg.latitude,
                lon_deg: cfg.longitude,
            },
            peak_kw: cfg
                .plants
                .iter()
                .filter(|p| p.kind == "pv")
                .map(|p| p.peak_kw)
                .sum(),
            performance_ratio: cfg.signal.performance_ratio,
            orientation: Orientation {
                tilt_deg: cfg.signal.tilt_deg,
                azimuth_deg: cfg.signal.azimuth_deg,
            },
        },
        tz: cfg.timezone,
        cloud_memory_hours: cfg.signal.cloud_memory_hours,
        climatology: cfg.signal.climatology,
        fallback_consumption_kw: cfg.signal.fallback_consumption_kw,
    }
}

/// Hourly community history from settled substation periods (any period length): production, and
/// consumption as what the loads used = production + withdrawal − injection.
pub fn hourly_history(periods: &[SubstationPeriod]) -> Vec<HourSample> {
    let mut by_hour: BTreeMap<DateTime<Utc>, (f64, f64)> = BTreeMap::new();
    for p in periods {
        let hour = p
            .start
            .duration_trunc(Duration::hours(1))
            .unwrap_or(p.start);
        let prod = p.production_mwh as f64 / 1e6;
        let load = (p.production_mwh as f64 + p.withdrawal_mwh as f64 - p.injection_mwh as f64)
            .max(0.0)
            / 1e6;
        let e = by_hour.entry(hour).or_default();
        e.0 += prod;
        e.1 += load;
    }
    by_hour
        .into_iter()
        .map(|(start, (p, c))| HourSample {
            start,
            production_kwh: p,
            consumption_kwh: c,
        })
        .collect()
}

/// Live figures per zone from the latest power of each meter.
fn zones_now(
    hub: &Hub,
    latest: &HashMap<(String, String), (DateTime<Utc>, f64)>,
    now: DateTime<Utc>,
) -> (ZoneNow, Vec<ZoneNow>, u32) {
    let (pods, fresh) = compute::live_pods(&hub.model, latest, now);
    let subs = compute::per_substation(&hub.model, &pods);
    let zone = |id: &str, v: &[f64; 5]| ZoneNow {
        zone: id.to_string(),
        production_kw: v[3] / 1000.0,
        consumption_kw: v[4] / 1000.0,
        surplus_kw: (v[0] - v[2]) / 1000.0,
    };
    let mut total = [0.0; 5];
    for v in subs.values() {
        for i in 0..5 {
            total[i] += v[i];
        }
    }
    (
        zone(&hub.cfg.community, &total),
        subs.iter().map(|(id, v)| zone(id, v)).collect(),
        fresh,
    )
}

/// How often the forecast is recomputed from the store.
pub const FORECAST_EVERY: Duration = Duration::minutes(15);
/// While the history behind the forecast is shorter than a week (a fresh hub, or sites' backlogs
/// still arriving: the demo's backfill), it is recomputed this often, so a forecast made from
/// the first minutes' empty store does not stand for a quarter of an hour.
pub const FORECAST_EVERY_THIN: Duration = Duration::minutes(1);
/// Hours of history below which the forecast counts as thin.
pub const THIN_HISTORY_HOURS: usize = 7 * 24;

/// How long the forecast made from `history_hours` of history stands.
pub fn forecast_interval(history_hours: usize) -> Duration {
    if history_hours < THIN_HISTORY_HOURS {
        FORECAST_EVERY_THIN
    } else {
        FORECAST_EVERY
    }
}
/// The retained signal is republished at least this often (and at every level change).
pub const REPUBLISH_EVERY: Duration = Duration::seconds(60);

/// Read two weeks of settled periods and forecast from them (blocking: the store); also how many
/// hours of history the forecast had.
fn read_forecast(
    path: &std::path::Path,
    params: &ForecastParams,
    th: &Thresholds,
    now: DateTime<Utc>,
) -> Result<(Vec<ForecastSlot>, usize), store::StoreError> {
    let reader = store::Reader::open(path)?;
    let from = now - Duration::days(15);
    let periods = reader.substation_periods(from.timestamp(), now.timestamp())?;
    // The still-open hour is partial: leave it out.
    let open = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let history: Vec<HourSample> = hourly_history(&periods)
        .into_iter()
        .filter(|h| h.start < open)
        .collect();
    Ok((forecast::forecast(params, th, &history, now), history.len()))
}

/// Every `every`: step the engine with the live figures, publish the retained signal (QoS 1) and
/// the alerts (QoS 1, not retained), and keep the signal for the API.
pub async fn run(
    hub: Arc<Hub>,
    client: AsyncClient,
    latest: Arc<ingest::Latest>,
    every: StdDuration,
) {
    let cfg = &hub.cfg;
    let topics = Topics::new(&cfg.community);
    let params = forecast_params(cfg);
    let mut engine = Engine::new(&cfg.community, &cfg.signal, &cfg.flex, cfg.timezone);
    let mut fc: Vec<ForecastSlot> = Vec::new();
    let mut fc_at: Option<DateTime<Utc>> = None;
    let mut fc_hours = 0usize;
    let mut published: Option<(crate::wire::Level, DateTime<Utc>)> = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = Utc::now();
        if fc_at.is_none_or(|t| now - t >= forecast_interval(fc_hours)) {
            let (path, th) = (cfg.storage_path.clone(), *engine.thresholds());
            match tokio::task::spawn_blocking(move || read_forecast(&path, &params, &th, now)).await
            {
                Ok(Ok((f, hours))) => {
                    fc = f;
                    fc_at = Some(now);
                    fc_hours = hours;
                }
                Ok(Err(e)) => tracing::warn!("signal: forecast: {e}"),
                Err(e) => tracing::error!("signal: forecast task failed: {e}"),
            }
        }
        // Slots that have ended drop out between recomputations.
        fc.retain(|s| s.start + Duration::hours(1) > now);
        let (community, subs, fresh) = zones_now(&hub, &latest.snapshot(), now);
        if fresh == 0 {
            // No live data: keep the last signal rather than call a level from nothing.
            continue;
        }
        let (signal, alerts) = engine.step(now, &community, &subs, &fc);
        let changed = published
            .is_none_or(|(l, at)| l != signal.community.level || now - at >= REPUBLISH_EVERY);
        if changed {
            // Signed: a site shows only what the hub's key signed.
            let topic = topics.signal();
            let payload = wire::sign(hub.signing_key(), &topic, &signal);
            if let Err(e) = hub
                .retained
                .try_publish(&client, topic, QoS::AtLeastOnce, payload)
            {
                tracing::debug!("signal not published: {e}");
            }
            published = Some((signal.community.level, now));
        }
        for a in alerts {
            let topic = match &a.site {
                Some(site) => topics.site_alerts(site),
                None => topics.alerts(),
            };
            tracing::info!(id = %a.id, topic = %topic, "alert");
            let payload = wire::sign(hub.signing_key(), &topic, &a);
            if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                tracing::warn!("alert {} not published: {e}", a.id);
            }
        }
        *hub.signal.lock().unwrap_or_else(|e| e.into_inner()) = Some(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::central::energy::Flags;
    use crate::wire::{AlertKind, Level};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn period(sub: &str, start: &str, inj: u64, wd: u64, prod: u64) -> SubstationPeriod {
        SubstationPeriod {
            substation: sub.into(),
            start: t(start),
            injection_mwh: inj,
            eligible_injection_mwh: inj,
            withdrawal_mwh: wd,
            shared_mwh: inj.min(wd),
            production_mwh: prod,
            consumption_mwh: 0,
            flags: Flags::NONE,
        }
    }

    #[test]
    fn a_thin_history_is_forecast_again_within_a_minute() {
        assert_eq!(forecast_interval(0), Duration::minutes(1));
        assert_eq!(forecast_interval(7 * 24 - 1), Duration::minutes(1));
        assert_eq!(forecast_interval(7 * 24), Duration::minutes(15));
    }

    #[test]
    fn quarter_hours_of_every_substation_make_one_community_hour() {
        let h = hourly_history(&[
            period(
                "S1",
                "2026-06-10T10:00:00Z",
                5_000_000,
                1_000_000,
                8_000_000,
            ),
            period(
                "S1",
                "2026-06-10T10:15:00Z",
                5_000_000,
                1_000_000,
                8_000_000,
            ),
            period("S2", "2026-06-10T10:30:00Z", 0, 2_000_000, 0),
            period("S1", "2026-06-10T11:00:00Z", 0, 3_000_000, 0),
        ]);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].start, t("2026-06-10T10:00:00Z"));
        assert_eq!(h[0].production_kwh, 16.0);
        // Loads used production + withdrawal − injection: 16 + 4 − 10.
        assert_eq!(h[0].consumption_kwh, 10.0);
        assert_eq!((h[1].production_kwh, h[1].consumption_kwh), (0.0, 3.0));
    }

    #[test]
    fn each_zone_keeps_its_own_level_and_the_community_level_drives_alerts() {
        let cfg = SignalConfig::default();
        let mut e = Engine::new("socer", &cfg, &[], chrono_tz::Europe::Rome);
        let zone = |z: &str, surplus: f64, cons: f64| ZoneNow {
            zone: z.into(),
            production_kw: (surplus + cons).max(0.0),
            consumption_kw: cons,
            surplus_kw: surplus,
        };
        let now = t("2026-06-10T10:00:00Z");
        let (s, alerts) = e.step(
            now,
            &zone("socer", 20.0, 100.0),
            &[zone("S1", 40.0, 40.0), zone("S2", -20.0, 60.0)],
            &[],
        );
        assert_eq!(
            (s.community.level, s.community.openadr_level),
            (Level::Green, 0)
        );
        assert_eq!(s.substations[0].level, Level::Green);
        assert_eq!(
            (s.substations[1].level, s.substations[1].openadr_level),
            (Level::Red, 2)
        );
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::Open);
        // Five minutes later the surplus is gone, but the dwell holds green: no close yet.
        let later = now + Duration::minutes(5);
        let (s, alerts) = e.step(later, &zone("socer", -30.0, 100.0), &[], &[]);
        assert_eq!(s.community.level, Level::Green);
        assert!(alerts.is_empty());
        let (s, alerts) = e.step(
            now + Duration::minutes(16),
            &zone("socer", -30.0, 100.0),
            &[],
            &[],
        );
        assert_eq!(s.community.level, Level::Red);
        assert_eq!(alerts[0].kind, AlertKind::Close);
    }
}
