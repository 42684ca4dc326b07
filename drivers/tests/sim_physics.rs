//! The simulator's physics: energy counters integrate power exactly over clock time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use socer_drivers::sim::{NoisyPower, Physics, PhysicsConfig, PowerSource};
use socer_drivers::ManualClock;

mod sim_support;
use sim_support::{t0, HOUR};

fn physics(clock: &ManualClock, source: impl PowerSource, config: PhysicsConfig) -> Physics {
    Physics::new(Arc::new(clock.clone()), Box::new(source), config)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn one_kilowatt_for_one_hour_imports_one_kilowatt_hour() {
    let clock = ManualClock::new(t0());
    let mut p = physics(
        &clock,
        NoisyPower::new(1000.0, 0.0, 1),
        PhysicsConfig::default(),
    );
    clock.advance(HOUR);
    let v = p.values();
    assert!(close(v.e_imp_wh.unwrap(), 1000.0), "{v:?}");
    assert_eq!(v.e_exp_wh, Some(0.0));
    // 90 more minutes in uneven steps: 1500 Wh more.
    for secs in [1, 59, 600, 3000, 1740] {
        clock.advance(Duration::from_secs(secs));
        p.advance();
    }
    assert!(close(p.energy_wh().0, 2500.0), "{:?}", p.energy_wh());
}

#[test]
fn negative_power_grows_the_export_counter_and_import_stays() {
    let clock = ManualClock::new(t0());
    let start = t0();
    // 2 kW import for the first half hour, then 1 kW export.
    let source = move |now: DateTime<Utc>| {
        if now < start + chrono::Duration::minutes(30) {
            2000.0
        } else {
            -1000.0
        }
    };
    let mut p = physics(
        &clock,
        source,
        PhysicsConfig {
            import_wh: 500.0,
            export_wh: 40.0,
            ..Default::default()
        },
    );
    clock.advance(Duration::from_secs(30 * 60));
    assert!(close(p.values().e_imp_wh.unwrap(), 1500.0));
    clock.advance(Duration::from_secs(15 * 60));
    let v = p.values();
    assert!(close(v.e_imp_wh.unwrap(), 1500.0), "{v:?}");
    assert!(close(v.e_exp_wh.unwrap(), 40.0 + 250.0), "{v:?}");
    assert_eq!(v.p_w, Some(-1000.0));
}

#[test]
fn counters_never_decrease_under_noisy_bidirectional_power() {
    let clock = ManualClock::new(t0());
    // Base near zero with large noise: the sign flips often.
    let mut p = physics(
        &clock,
        NoisyPower::new(100.0, 3.0, 42),
        PhysicsConfig::default(),
    );
    let mut rng = socer_drivers::sim::Rng::new(9);
    let (mut imp, mut exp) = p.energy_wh();
    for _ in 0..500 {
        clock.advance(Duration::from_millis(rng.next_u64() % 20_000));
        let v = p.values();
        let (i, e) = (v.e_imp_wh.unwrap(), v.e_exp_wh.unwrap());
        assert!(i >= imp && e >= exp, "went back: {imp}->{i}, {exp}->{e}");
        (imp, exp) = (i, e);
    }
    assert!(imp > 0.0 && exp > 0.0, "both directions seen: {imp} {exp}");
}

#[test]
fn counter_reset_goes_to_zero_and_grows_again() {
    let clock = ManualClock::new(t0());
    let mut p = physics(
        &clock,
        NoisyPower::new(600.0, 0.0, 1),
        PhysicsConfig {
            import_wh: 1e6,
            ..Default::default()
        },
    );
    clock.advance(HOUR);
    p.reset_counters();
    assert_eq!(p.energy_wh(), (0.0, 0.0));
    clock.advance(Duration::from_secs(600));
    assert!(close(p.values().e_imp_wh.unwrap(), 100.0));
}

#[test]
fn noisy_power_is_repeatable_per_seed_and_centred_on_its_base() {
    let now = t0();
    let mut a = NoisyPower::new(2000.0, 0.05, 3);
    let mut b = NoisyPower::new(2000.0, 0.05, 3);
    let mut c = NoisyPower::new(2000.0, 0.05, 4);
    let xs: Vec<f64> = (0..2000).map(|_| a.power_w(now)).collect();
    let ys: Vec<f64> = (0..2000).map(|_| b.power_w(now)).collect();
    let zs: Vec<f64> = (0..2000).map(|_| c.power_w(now)).collect();
    assert_eq!(xs, ys);
    assert_ne!(xs, zs);
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
    assert!((mean - 2000.0).abs() < 10.0, "mean {mean}");
    assert!((sd - 100.0).abs() < 10.0, "sd {sd}");
}

#[test]
fn grid_quantities_are_plausible_and_current_follows_power() {
    let clock = ManualClock::new(t0());
    let config = PhysicsConfig {
        phases: 3,
        ..Default::default()
    };
    let mut p = physics(&clock, NoisyPower::new(-6900.0, 0.0, 1), config);
    for _ in 0..100 {
        clock.advance(Duration::from_secs(5));
        let v = p.values();
        let pf = v.pf.unwrap();
        assert!((0.9..=1.0).contains(&pf), "pf {pf}");
        assert!((49.9..=50.1).contains(&v.f_hz.unwrap()), "{v:?}");
        for ph in 0..3 {
            let (volts, amps) = (v.v_v[ph].unwrap(), v.i_a[ph].unwrap());
            assert!((218.0..=242.0).contains(&volts), "{v:?}");
            assert!((amps - 2300.0 / (volts * pf)).abs() < 1e-9, "{v:?}");
        }
    }
}

#[test]
fn without_noise_the_grid_is_nominal() {
    let clock = ManualClock::new(t0());
    let mut p = physics(
        &clock,
        NoisyPower::new(230.0 * 0.95, 0.0, 1),
        PhysicsConfig {
            grid_noise: 0.0,
            ..Default::default()
        },
    );
    clock.advance(Duration::from_secs(1));
    let v = p.values();
    assert_eq!(
        (v.v_v[0], v.f_hz, v.pf),
        (Some(230.0), Some(50.0), Some(0.95))
    );
    assert!((v.i_a[0].unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(v.v_v[1], None, "a single-phase meter has no L2");
}

#[test]
fn power_holds_between_samples_like_a_meter_display() {
    let clock = ManualClock::new(t0());
    let mut p = physics(
        &clock,
        NoisyPower::new(1000.0, 0.1, 8),
        PhysicsConfig::default(),
    );
    let first = p.values();
    for i in 1..10 {
        clock.advance(Duration::from_millis(100));
        let mut now = p.values();
        let expected_wh = first.p_w.unwrap() * f64::from(i) * 0.1 / 3600.0;
        assert!(close(now.e_imp_wh.unwrap(), expected_wh));
        now.e_imp_wh = first.e_imp_wh;
        // The storage view's counters and state of charge are energy too.
        assert!(close(now.e_charge_wh.unwrap(), expected_wh));
        now.e_charge_wh = first.e_charge_wh;
        now.e_discharge_wh = first.e_discharge_wh;
        now.soc_pct = first.soc_pct;
        assert_eq!(
            now, first,
            "within the 1 s sample period only energy changes"
        );
    }
    clock.advance(Duration::from_millis(100));
    let next = p.values();
    assert_ne!(next.p_w, first.p_w, "a new sample after 1 s");
    assert_ne!(next.v_v, first.v_v);
    // The first second was integrated at the first sample's power.
    assert!(close(next.e_imp_wh.unwrap(), first.p_w.unwrap() / 3600.0));
}
