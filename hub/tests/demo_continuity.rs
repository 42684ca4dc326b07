//! The demo's live meters continue its own history: at many instants and seeds, the first reading
//! a site agent takes from each live simulated device (its registers, read and decoded by the
//! drivers' poller) is never below the last reading the backfill wrote to that meter's outbox.
//! A step back would reach the hub as a counter reset.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use socer::demo::backfill::{catch_up, fill};
use socer::demo::meters::{device, registers};
use socer::demo::model::Community;
use socer::demo::scenario::Scenario;
use socer::site::outbox::{RunInfo, Store};
use socer_drivers::bus::{read_once, MeterConfig};
use socer_drivers::plan::{CostModel, Intervals};
use socer_drivers::profile::Function;
use socer_drivers::sim::SimDevice;
use socer_drivers::sunspec::{self, ModelSet};
use socer_drivers::{Link, LinkError, ManualClock, ProfileSet};

/// A link straight into one simulated device: the request PDU it would get over Modbus.
struct DeviceLink(SimDevice);

impl Link for DeviceLink {
    async fn read_registers(
        &mut self,
        _unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        let code = match function {
            Function::Holding => 3u8,
            Function::Input => 4u8,
        };
        let [ah, al] = address.to_be_bytes();
        let [ch, cl] = count.to_be_bytes();
        let pdu = self
            .0
            .respond(&[code, ah, al, ch, cl])
            .pdu
            .ok_or(LinkError::Timeout { timeout_ms: 0 })?;
        if pdu[0] & 0x80 != 0 {
            return Err(LinkError::Exception { code: pdu[1] });
        }
        Ok(pdu[2..]
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .collect())
    }
}

#[tokio::test]
async fn the_first_live_reading_of_every_meter_is_never_below_its_last_backfilled_one() {
    let profiles = ProfileSet::builtin().unwrap();
    let models = ModelSet::builtin().unwrap();
    let base: DateTime<Utc> = "2026-12-01T19:55:00Z".parse().unwrap();
    let mut checked = 0;
    for seed in [1u64, 5] {
        let c = Arc::new(Community::new(Scenario::builtin().unwrap(), seed));
        let regs = registers(&c, &profiles, &models).unwrap();
        // Instants spread over hours and seconds, so counters fall anywhere in a register step.
        for k in 0..10i64 {
            let now = base + Duration::seconds(k * 3_917 + 13);
            let dir = tempfile::tempdir().unwrap();
            let dirs: Vec<_> = c
                .buildings()
                .iter()
                .map(|b| dir.path().join(&b.id))
                .collect();
            let filled = fill(&c, &regs, &dirs, now, Duration::minutes(10), None).unwrap();
            let live_at = now + Duration::seconds(2);
            let counters = catch_up(&c, &filled, live_at);
            let clock = Arc::new(ManualClock::new(live_at));
            for (b, spec) in c.buildings().iter().enumerate() {
                let run = RunInfo {
                    boot: "test".into(),
                    origin_ms: 0,
                };
                let rows = Store::open(&dirs[b], 200_000_000, &run)
                    .unwrap()
                    .fetch(0, 100_000)
                    .unwrap();
                for (m, meter) in spec.meters.iter().enumerate() {
                    let last = rows.iter().rev().find(|r| r.meter == meter.name).unwrap();
                    let dev = device(&c, b, m, &profiles, &models, clock.clone(), counters[b][m])
                        .unwrap();
                    let mut link = DeviceLink(dev);
                    let profile = if meter.model == sunspec::PROFILE_ID {
                        sunspec::discover_profile(&mut link, meter.unit, None)
                            .await
                            .unwrap()
                            .1
                            .profile
                    } else {
                        profiles.get(&meter.model).unwrap().clone()
                    };
                    let cfg = MeterConfig {
                        name: meter.name.clone(),
                        unit: meter.unit,
                        profile: Arc::new(profile),
                        reverse: false,
                        intervals: Intervals::default(),
                    };
                    let live = read_once(&mut link, "test", &cfg, &CostModel::tcp(), &*clock)
                        .await
                        .reading;
                    for (what, before, after) in [
                        ("import", last.values.e_imp_wh, live.values.e_imp_wh),
                        ("export", last.values.e_exp_wh, live.values.e_exp_wh),
                    ] {
                        // The history only holds a counter the device has a register for.
                        assert_eq!(
                            before.is_some(),
                            after.is_some(),
                            "{}/{}",
                            spec.id,
                            meter.name
                        );
                        if let (Some(before), Some(after)) = (before, after) {
                            assert!(
                                after >= before,
                                "seed {seed}, {now}: {}/{} ({}) {what} went back from {before} to {after} Wh",
                                spec.id,
                                meter.name,
                                meter.model
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 200, "{checked} counters checked");
}
