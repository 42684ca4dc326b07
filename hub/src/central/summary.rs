//! Each site's part of the month's shared energy, published to the site (retained, sealed with
//! its key) so that a building without internet can show its residents their share.
//!
//! It only reads the stored period results; it never changes them, and never publishes a figure
//! for one site under another site's topic or key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use rumqttc::{AsyncClient, QoS};

use super::balance::PodShare;
use super::incentive::{self, MemberMonth};
use super::{report, Hub};
use crate::wire::{self, SiteSummary, Topics};

/// Shortest time between two recomputations once the first summaries are out.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// mWh → kWh.
fn kwh(mwh: u64) -> f64 {
    mwh as f64 / 1e6
}

/// µ€ → €.
fn eur(ueur: u64) -> f64 {
    ueur as f64 / 1e6
}

/// The month as stored, for every site alike.
#[derive(Debug, Clone, Copy)]
pub struct Month<'a> {
    /// `YYYY-MM`.
    pub label: &'a str,
    /// Every POD's rows of the month's periods.
    pub pods: &'a [PodShare],
    pub community_shared_mwh: u64,
    /// Periods with a stored result.
    pub periods: u32,
    /// The member figures with the incentive (None when it could not be computed).
    pub members: Option<&'a [MemberMonth]>,
    /// POD → member.
    pub pod_member: &'a HashMap<String, String>,
}

/// The summary of one site: its PODs' rows of the month summed. Pure.
pub fn site_summary(
    month: &Month,
    site_pods: &BTreeSet<String>,
    updated: DateTime<Utc>,
) -> SiteSummary {
    let (mut cons, mut prod, mut inj, mut wd) = (0u64, 0u64, 0u64, 0u64);
    for p in month.pods.iter().filter(|p| site_pods.contains(&p.pod)) {
        cons += p.shared_as_consumer_mwh;
        prod += p.shared_as_producer_mwh;
        inj += p.injection_mwh;
        wd += p.withdrawal_mwh;
    }
    let ours: BTreeSet<&str> = site_pods
        .iter()
        .filter_map(|p| month.pod_member.get(p).map(String::as_str))
        .collect();
    let incentive = month.members.map(|ms| {
        ms.iter()
            .filter(|m| ours.contains(m.member.as_str()))
            .fold((0u64, 0u64), |(c, p), m| {
                (
                    c + m.incentive_as_consumer_ueur,
                    p + m.incentive_as_producer_ueur,
                )
            })
    });
    SiteSummary {
        month: month.label.to_string(),
        pods: site_pods.iter().cloned().collect(),
        shared_as_consumer_kwh: kwh(cons),
        shared_as_producer_kwh: kwh(prod),
        community_shared_kwh: kwh(month.community_shared_mwh),
        injection_kwh: kwh(inj),
        withdrawal_kwh: kwh(wd),
        incentive_as_consumer_eur: incentive.map(|(c, _)| eur(c)),
        incentive_as_producer_eur: incentive.map(|(_, p)| eur(p)),
        periods: month.periods,
        updated,
    }
}

/// The community month containing `now`, `YYYY-MM`.
pub fn month_of(now: DateTime<Utc>, tz: &chrono_tz::Tz) -> String {
    let local = now.with_timezone(tz);
    format!("{:04}-{:02}", local.year(), local.month())
}

/// Every configured site's summary of the month containing `now`, from the store.
pub fn summaries(
    hub: &Hub,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, SiteSummary>, report::ReportError> {
    let month = month_of(now, &hub.cfg.timezone);
    let Some((y, m)) = report::parse_month(&month) else {
        return Err(report::ReportError::BadMonth(month));
    };
    let range = incentive::month_range(y, m, &hub.cfg.timezone)
        .ok_or_else(|| report::ReportError::BadMonth(month.clone()))?;
    let (from, to) = (range.from.timestamp(), range.to.timestamp());
    let (substations, pods) = {
        let r = hub.reader();
        (r.substation_periods(from, to)?, r.pod_periods(from, to)?)
    };
    let community_shared: u64 = substations.iter().map(|s| s.shared_mwh).sum();
    let periods = substations
        .iter()
        .map(|s| s.start)
        .collect::<BTreeSet<_>>()
        .len() as u32;
    // The incentive needs prices; without them the energy figures still go out.
    let report = match report::monthly(hub, &month) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::debug!("summary: no incentive for {month}: {e}");
            None
        }
    };
    let mut site_pods: BTreeMap<&str, BTreeSet<String>> = hub
        .cfg
        .sites
        .iter()
        .map(|s| (s.id.as_str(), BTreeSet::new()))
        .collect();
    for m in hub.model.meters.values() {
        if let Some(set) = site_pods.get_mut(m.site.as_str()) {
            set.insert(m.pod.clone());
        }
    }
    let stored = Month {
        label: &month,
        pods: &pods,
        community_shared_mwh: community_shared,
        periods,
        members: report.as_ref().map(|r| r.members.as_slice()),
        pod_member: &hub.model.pod_member,
    };
    Ok(site_pods
        .into_iter()
        .map(|(site, set)| (site.to_string(), site_summary(&stored, &set, now)))
        .collect())
}

/// The figures without the time they were computed: what decides whether to republish.
fn figures(s: &SiteSummary) -> SiteSummary {
    SiteSummary {
        updated: DateTime::<Utc>::UNIX_EPOCH,
        ..s.clone()
    }
}

/// Whether to recompute now: always the first time; afterwards only when periods were
/// recomputed since, and at most once per [`SUMMARY_EVERY`] unless what went out so far had no
/// shared energy (so that a hub catching up on a backlog shows real figures within seconds).
pub fn due(
    last: Option<(Instant, u64)>,
    periods_computed: u64,
    had_figures: bool,
    now: Instant,
) -> bool {
    match last {
        None => true,
        Some((at, seen)) => {
            periods_computed != seen && (!had_figures || now.duration_since(at) >= SUMMARY_EVERY)
        }
    }
}

/// Whether the hub is still working through a backlog of periods: one of the last two ticks
/// recomputed a full batch. Until then the figures are partial and move fast, so each site's
/// summary follows them at once rather than once a minute (a site must not quote a partial
/// community total for a minute).
pub fn catching_up(last_two_deltas: (u64, u64), batch: u64) -> bool {
    last_two_deltas.0 >= batch || last_two_deltas.1 >= batch
}

/// Publish every site's summary at start, then again whenever its figures change (see [`due`]).
pub async fn run(hub: Arc<Hub>, client: AsyncClient) {
    let topics = Topics::new(&hub.cfg.community);
    // What went out per site, and with which key (a site that switched keys gets it again).
    let mut sent: HashMap<String, (Vec<u8>, SiteSummary)> = HashMap::new();
    let mut last: Option<(Instant, u64)> = None;
    let mut tick = tokio::time::interval(super::COMPUTE_EVERY);
    let (mut seen_before, mut deltas) = (0u64, (0u64, 0u64));
    loop {
        tick.tick().await;
        let computed = hub.metrics.periods_computed.load(Ordering::Relaxed);
        deltas = (deltas.1, computed.saturating_sub(seen_before));
        seen_before = computed;
        let backlog = catching_up(deltas, super::RECOMPUTE_BATCH as u64);
        let had_figures = !backlog && sent.values().any(|(_, s)| s.community_shared_kwh > 0.0);
        if !due(last, computed, had_figures, Instant::now()) {
            continue;
        }
        last = Some((Instant::now(), computed));
        let h = hub.clone();
        let all = match tokio::task::spawn_blocking(move || summaries(&h, Utc::now())).await {
            Ok(Ok(all)) => all,
            Ok(Err(e)) => {
                tracing::warn!("summary: {e}");
                continue;
            }
            Err(e) => {
                tracing::error!("summary: task failed: {e}");
                continue;
            }
        };
        for (site, s) in all {
            // The key the site used last (two are live during a rotation; `central::sites`).
            let Some(key) = hub.site_keys.sealing_key(&site) else {
                continue;
            };
            let f = (key.clone(), figures(&s));
            if sent.get(&site) == Some(&f) {
                continue;
            }
            let topic = topics.summary(&site);
            let payload = wire::seal(&key, &site, &topic, &s);
            match hub
                .retained
                .publish(&client, topic, QoS::AtLeastOnce, payload)
                .await
            {
                Ok(()) => {
                    hub.metrics
                        .summaries_published
                        .fetch_add(1, Ordering::Relaxed);
                    sent.insert(site, f);
                }
                Err(e) => tracing::warn!("summary for {site} not published: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::central::energy::Flags;

    fn row(pod: &str, member: &str, inj: u64, wd: u64, cons: u64, prod: u64) -> PodShare {
        PodShare {
            pod: pod.into(),
            member: member.into(),
            substation: "S1".into(),
            start: DateTime::<Utc>::UNIX_EPOCH,
            injection_mwh: inj,
            withdrawal_mwh: wd,
            eligible_injection: prod > 0,
            shared_as_consumer_mwh: cons,
            shared_as_producer_mwh: prod,
            flags: Flags::NONE,
        }
    }

    #[test]
    fn a_site_sums_only_its_own_pods_over_every_period() {
        let rows = [
            row("P-DOMUS", "domus", 0, 500_000, 500_000, 0),
            row("P-IPERAL", "iperal", 2_000_000, 0, 0, 500_000),
            row("P-DOMUS", "domus", 0, 250_000, 250_000, 0),
            row("P-IPERAL", "iperal", 1_000_000, 0, 0, 250_000),
        ];
        let members = [MemberMonth {
            member: "domus".into(),
            incentive_as_consumer_ueur: 97_500,
            incentive_as_producer_ueur: 0,
            ..MemberMonth::default()
        }];
        let pod_member = HashMap::from([
            ("P-DOMUS".to_string(), "domus".to_string()),
            ("P-IPERAL".to_string(), "iperal".to_string()),
        ]);
        let t = DateTime::<Utc>::UNIX_EPOCH;
        let month = Month {
            label: "2026-11",
            pods: &rows,
            community_shared_mwh: 750_000,
            periods: 2,
            members: Some(&members),
            pod_member: &pod_member,
        };
        let s = site_summary(&month, &BTreeSet::from(["P-DOMUS".to_string()]), t);
        assert_eq!(s.pods, vec!["P-DOMUS".to_string()]);
        assert_eq!(
            (s.shared_as_consumer_kwh, s.shared_as_producer_kwh),
            (0.75, 0.0)
        );
        assert_eq!((s.injection_kwh, s.withdrawal_kwh), (0.0, 0.75));
        assert_eq!(s.community_shared_kwh, 0.75);
        assert_eq!(s.incentive_as_consumer_eur, Some(0.0975));
        assert_eq!(s.incentive_as_producer_eur, Some(0.0));
        let no_prices = Month {
            members: None,
            ..month
        };
        let p = site_summary(&no_prices, &BTreeSet::from(["P-IPERAL".to_string()]), t);
        assert_eq!((p.shared_as_producer_kwh, p.injection_kwh), (0.75, 3.0));
        assert_eq!(p.incentive_as_consumer_eur, None);
    }

    #[test]
    fn summaries_follow_new_periods_at_most_once_a_minute_once_they_have_figures() {
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        assert!(due(None, 0, false, t0), "always at start");
        assert!(!due(Some((t0, 5)), 5, false, later(300)), "nothing new");
        assert!(
            due(Some((t0, 5)), 6, false, later(5)),
            "still empty: at once"
        );
        assert!(!due(Some((t0, 5)), 6, true, later(30)), "within the minute");
        assert!(due(Some((t0, 5)), 6, true, later(60)));
    }

    #[test]
    fn a_hub_working_through_a_backlog_is_catching_up_until_a_tick_after_the_last_full_batch() {
        assert!(catching_up((0, 48), 48), "a full batch: more are waiting");
        assert!(
            catching_up((48, 3), 48),
            "the remainder: publish the complete figures too"
        );
        assert!(!catching_up((3, 2), 48), "live: the open period only");
        assert!(!catching_up((0, 0), 48));
    }

    #[test]
    fn the_month_is_the_community_s_local_month() {
        let t = DateTime::parse_from_rfc3339("2026-10-31T23:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(month_of(t, &chrono_tz::Europe::Rome), "2026-11");
        assert_eq!(month_of(t, &chrono_tz::UTC), "2026-10");
    }
}
