//! The demo's simulated meters, read the way a site agent reads them: the drivers' RTU link on the
//! pty path of an RS-485 building, SunSpec discovery over Modbus TCP, and values that match the
//! community model.

use std::sync::Arc;
use std::time::Duration;

use socer::demo::meters::{start_building, RTU_BAUD};
use socer::demo::model::Community;
use socer::demo::scenario::{BusKind, Scenario};
use socer_drivers::decode::decode;
use socer_drivers::profile::Function;
use socer_drivers::sunspec::{self, ModelSet};
use socer_drivers::transport::{Backoff, RtuLink, SerialSettings, TcpLink};
use socer_drivers::{Clock, Link, ProfileSet, SystemClock};

fn setup() -> (Arc<Community>, ProfileSet, ModelSet, Arc<dyn Clock>) {
    let c = Arc::new(Community::new(Scenario::builtin().unwrap(), 21));
    (
        c,
        ProfileSet::builtin().unwrap(),
        ModelSet::builtin().unwrap(),
        Arc::new(SystemClock::new()),
    )
}

fn close(got: f64, want: f64) -> bool {
    // The model's load noise steps every five minutes: allow a step between the two instants.
    (got - want).abs() <= 0.1 * want.abs() + 2.0
}

#[tokio::test]
async fn the_rs485_building_answers_on_its_pty_path_as_each_of_its_models() {
    let (c, profiles, models, clock) = setup();
    let b = c.buildings().iter().position(|b| b.has_rtu()).unwrap();
    let meters = start_building(&c, b, &profiles, &models, clock.clone(), &[])
        .await
        .unwrap();
    let path = meters.rtu_path.clone().unwrap();
    let mut link = RtuLink::open(
        SerialSettings::new(path.clone(), RTU_BAUD),
        Duration::from_secs(1),
    )
    .unwrap();
    for (m, spec) in c.buildings()[b].meters.iter().enumerate() {
        assert_eq!(spec.bus, BusKind::Rtu);
        let profile = profiles.get(&spec.model).unwrap();
        let map = profile
            .quantities
            .iter()
            .find(|q| q.name.name() == "p_w")
            .unwrap();
        let function = map.function.unwrap_or(profile.defaults.function);
        let words = link
            .read_registers(spec.unit, function, map.address, map.value_type.words())
            .await
            .unwrap();
        let got = decode(&words, map, &profile.defaults).unwrap();
        let want = c.meter_power_w(b, m, clock.now_utc());
        assert!(
            close(got, want),
            "{} ({}) on {path}: {got} W vs model {want} W",
            spec.name,
            spec.model
        );
    }
}

#[tokio::test]
async fn a_sunspec_inverter_is_discovered_over_tcp_and_reports_the_pv_output() {
    let (c, profiles, models, clock) = setup();
    let b = c
        .buildings()
        .iter()
        .position(|b| b.meters.iter().any(|m| m.model == "sunspec"))
        .unwrap();
    let m = c.buildings()[b]
        .meters
        .iter()
        .position(|m| m.model == "sunspec")
        .unwrap();
    let unit = c.buildings()[b].meters[m].unit;
    let meters = start_building(&c, b, &profiles, &models, clock.clone(), &[])
        .await
        .unwrap();
    let addr = meters.tcp.unwrap().to_string();
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let mut link = TcpLink::new(addr, Duration::from_secs(1), backoff);
    let (device, resolved) = sunspec::discover_profile(&mut link, unit, None)
        .await
        .unwrap();
    assert_eq!(device.base, 40000);
    assert_eq!(
        resolved.model.id,
        socer::demo::meters::SUNSPEC_INVERTER_MODEL
    );
    let map = resolved
        .profile
        .quantities
        .iter()
        .find(|q| q.name.name() == "p_w")
        .unwrap();
    let words = link
        .read_registers(unit, Function::Holding, map.address, map.value_type.words())
        .await
        .unwrap();
    let mut got = decode(&words, map, &resolved.profile.defaults).unwrap();
    if let Some(sf_addr) = map.scale_register {
        let sf = link
            .read_registers(unit, Function::Holding, sf_addr, 1)
            .await
            .unwrap()[0] as i16;
        got = socer_drivers::decode::apply_scale_factor(got, sf);
    }
    let want = c.meter_power_w(b, m, clock.now_utc());
    // The inverter's power register is whole watts (W_SF = 0).
    assert!(
        (got - want).abs() <= 0.02 * want.abs() + 2.0,
        "{got} W vs model {want} W"
    );
    assert!(want <= 0.0, "a generator's output is negative p_w");
}

#[tokio::test]
async fn moving_the_depot_charging_window_changes_what_its_meter_serves() {
    use chrono::Timelike;
    use socer::demo::load::ChargeWindow;

    let (c, profiles, models, clock) = setup();
    let b = c.buildings().iter().position(|b| b.id == "stps").unwrap();
    let m = c.buildings()[b]
        .meters
        .iter()
        .position(|m| m.measures == "chargers")
        .unwrap();
    let unit = c.buildings()[b].meters[m].unit;
    let meters = start_building(&c, b, &profiles, &models, clock.clone(), &[])
        .await
        .unwrap();
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let mut link = TcpLink::new(
        meters.tcp.unwrap().to_string(),
        Duration::from_secs(1),
        backoff,
    );
    let profile = profiles.get(&c.buildings()[b].meters[m].model).unwrap();
    let map = profile
        .quantities
        .iter()
        .find(|q| q.name.name() == "p_w")
        .unwrap();
    let function = map.function.unwrap_or(profile.defaults.function);

    let local = clock.now_utc().with_timezone(&chrono_tz::Europe::Rome);
    let minute = local.hour() * 60 + local.minute();
    let hhmm = |m: u32| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    let around_now = ChargeWindow {
        from: hhmm(minute + 1440 - 60),
        to: hhmm(minute + 60),
        kw: 150.0,
        weekdays_only: false,
    };
    let far_away = ChargeWindow {
        from: hhmm(minute + 360),
        to: hhmm(minute + 420),
        kw: 150.0,
        weekdays_only: false,
    };

    for (window, charging) in [(around_now, true), (far_away, false)] {
        assert!(c.set_charging("stps", vec![window]));
        // The simulator samples its power source once a second.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let words = link
            .read_registers(unit, function, map.address, map.value_type.words())
            .await
            .unwrap();
        let w = decode(&words, map, &profile.defaults).unwrap();
        if charging {
            assert!(w > 140_000.0, "charging now: {w} W");
        } else {
            assert!(w < 5_000.0, "not charging now: {w} W");
        }
    }
}
