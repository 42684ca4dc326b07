//! SunSpec discovery, chain walking, resolution and the image builder, against an in-memory device.

mod sunspec_support;

use std::collections::BTreeMap;

use socer_drivers::profile::{DeviceKind, Function};
use socer_drivers::reading::{Quantity, Values};
use socer_drivers::sunspec::{
    discover, discover_profile, encode_string, image, resolve, Device, ImageSpec, ModelHeader,
    ModelSet, SunSpecError,
};
use socer_drivers::LinkError;
use sunspec_support::{read_back, MemLink};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn three_phase_values() -> Values {
    Values {
        p_w: Some(-4321.0),
        e_imp_wh: Some(1_234_567.0),
        e_exp_wh: Some(9_876_543.0),
        v_v: [Some(230.1), Some(229.8), Some(231.4)],
        i_a: [Some(6.27), Some(6.31), Some(6.19)],
        f_hz: Some(50.02),
        pf: Some(0.987),
        ..Values::default()
    }
}

/// The values a model can carry: only mapped quantities and phases survive a round trip.
fn expected_for(values: &Values, profile: &socer_drivers::Profile) -> Values {
    let mut e = Values::default();
    for q in &profile.quantities {
        let p = q.phase.unwrap_or(1);
        if let Some(v) = values.get(q.name, p) {
            e.set(q.name, p, v);
        }
    }
    e
}

fn assert_close(got: &Values, want: &Values) {
    for q in Quantity::ALL {
        for p in 1..=3u8 {
            match (got.get(q, p), want.get(q, p)) {
                (Some(g), Some(w)) => assert!(
                    (g - w).abs() < 1e-3 * w.abs().max(1.0),
                    "{q:?}{p}: {g} vs {w}"
                ),
                (None, None) => {}
                (g, w) => panic!("{q:?} phase {p}: got {g:?}, want {w:?}"),
            }
        }
    }
}

#[test]
fn inverter_103_at_40000_has_the_published_layout() {
    let set = ModelSet::builtin().unwrap();
    let mut img = image(&ImageSpec::new(103), &set).unwrap();
    let v = Values {
        p_w: Some(-1500.0),
        e_exp_wh: Some(70_000.0),
        ..Default::default()
    };
    img.set(&v);
    let r = &img.registers;
    // Marker, common model header (id 1, L 66), then model 103 at 40000 + 2 + 2 + 66 = 40070.
    assert_eq!((r[&40000], r[&40001]), (0x5375, 0x6E53));
    assert_eq!((r[&40002], r[&40003]), (1, 66));
    assert_eq!((r[&40070], r[&40071]), (103, 50));
    // W is point 14 of model 103 (int16, W_SF at 15): production is positive on the wire.
    assert_eq!(r[&40084], 1500);
    assert_eq!(r[&40085], 0);
    // WH is an acc32 at 24..25, WH_SF at 26.
    assert_eq!((r[&40094], r[&40095]), (0x0001, 0x1170));
    // End marker after the model's 50 registers.
    assert_eq!((r[&40122], r[&40123]), (0xFFFF, 0));
}

#[test]
fn discovery_walks_the_chain_and_reads_the_common_model() {
    let set = ModelSet::builtin().unwrap();
    let mut spec = ImageSpec::new(103);
    spec.common.manufacturer = "Fronius".into();
    spec.common.model = "Symo 10.0-3-M".into();
    spec.common.serial = "31234567".into();
    let img = image(&spec, &set).unwrap();
    let mut link = MemLink::holding(1, img.registers.clone());
    let device = block_on(discover(&mut link, 1)).unwrap();
    assert_eq!(device.base, 40000);
    assert_eq!(
        device.models,
        vec![
            ModelHeader {
                id: 1,
                address: 40002,
                length: 66
            },
            ModelHeader {
                id: 103,
                address: 40070,
                length: 50
            },
        ]
    );
    let c = device.common.unwrap();
    assert_eq!(
        (c.manufacturer.as_str(), c.model.as_str()),
        ("Fronius", "Symo 10.0-3-M")
    );
    assert_eq!((c.serial.as_str(), c.version.as_str()), ("31234567", "1.0"));
}

#[test]
fn inverter_production_becomes_negative_power_and_exported_energy() {
    let set = ModelSet::builtin().unwrap();
    let mut img = image(&ImageSpec::new(103), &set).unwrap();
    img.set(&three_phase_values());
    let mut link = MemLink::holding(3, img.registers.clone());
    let (_, resolved) = block_on(discover_profile(&mut link, 3, None)).unwrap();
    let p = &resolved.profile;
    assert_eq!(p.id, "sunspec");
    assert_eq!(p.kind, DeviceKind::Inverter);
    let pw = p
        .quantities
        .iter()
        .find(|q| q.name == Quantity::PW)
        .unwrap();
    assert_eq!((pw.address, pw.scale_register), (40084, Some(40085)));
    assert_eq!(pw.sentinels, vec![-0x8000]);
    let (got, missing) = read_back(&link.holding, p);
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(got.p_w, Some(-4321.0));
    assert_eq!(got.e_exp_wh, Some(9_876_543.0));
    assert_eq!(
        got.e_imp_wh, None,
        "an inverter has no import counter in model 103"
    );
    assert_close(&got, &expected_for(&three_phase_values(), p));
}

#[test]
fn every_supported_model_round_trips_through_image_and_discovery() {
    let set = ModelSet::builtin().unwrap();
    for id in [101, 102, 103, 111, 112, 113, 201, 202, 203, 204] {
        let mut img = image(&ImageSpec::new(id), &set).unwrap();
        img.set(&three_phase_values());
        let mut link = MemLink::holding(1, img.registers.clone());
        let (device, resolved) = block_on(discover_profile(&mut link, 1, None)).unwrap();
        assert_eq!(device.models[1].id, id);
        assert_eq!(resolved.profile, img.profile, "model {id}");
        let (got, missing) = read_back(&link.holding, &resolved.profile);
        assert!(missing.is_empty(), "model {id}: {missing:?}");
        assert_close(
            &got,
            &expected_for(&three_phase_values(), &resolved.profile),
        );
        let phases = resolved
            .profile
            .quantities
            .iter()
            .filter(|q| q.name == Quantity::VV)
            .count();
        let want_phases = match id % 10 {
            1 => 1,
            2 => 2,
            _ => 3,
        };
        assert_eq!(phases, want_phases, "model {id} voltage legs");
    }
}

#[test]
fn meter_power_keeps_its_sign_and_maps_both_counters() {
    let set = ModelSet::builtin().unwrap();
    let mut img = image(&ImageSpec::new(203), &set).unwrap();
    let v = Values {
        p_w: Some(2500.0),
        e_imp_wh: Some(5000.0),
        e_exp_wh: Some(700.0),
        ..Default::default()
    };
    img.set(&v);
    // Model 203 at 40070: W at +18, TotWhExp at +38, TotWhImp at +46.
    assert_eq!(img.registers[&40088], 2500);
    assert_eq!((img.registers[&40108], img.registers[&40109]), (0, 700));
    assert_eq!((img.registers[&40116], img.registers[&40117]), (0, 5000));
    let (got, _) = read_back(&img.registers, &img.profile);
    assert_eq!(
        (got.p_w, got.e_imp_wh, got.e_exp_wh),
        (Some(2500.0), Some(5000.0), Some(700.0))
    );
}

#[test]
fn float_inverter_decodes_ieee_points() {
    let set = ModelSet::builtin().unwrap();
    let mut img = image(&ImageSpec::new(113), &set).unwrap();
    let v = Values {
        p_w: Some(-2500.5),
        f_hz: Some(49.98),
        ..Default::default()
    };
    img.set(&v);
    // Model 113 W is a float32 at +22: 2500.5 = 0x451C4800.
    assert_eq!(
        (img.registers[&40092], img.registers[&40093]),
        (0x451C, 0x4800)
    );
    let (got, missing) = read_back(&img.registers, &img.profile);
    assert_eq!(got.p_w, Some(-2500.5));
    assert!((got.f_hz.unwrap() - 49.98).abs() < 1e-4);
    // Everything not set is NaN on the wire: not available, never zero.
    assert!(missing.contains(&"e_exp_wh".to_string()) && missing.contains(&"v_v".to_string()));
}

#[test]
fn not_implemented_points_are_missing_not_zero() {
    let set = ModelSet::builtin().unwrap();
    let mut img = image(&ImageSpec::new(103), &set).unwrap();
    img.set(&Values::default());
    assert_eq!(img.registers[&40084], 0x8000, "int16 W not implemented");
    assert_eq!(img.registers[&40073], 0xFFFF, "uint16 AphA not implemented");
    let (got, missing) = read_back(&img.registers, &img.profile);
    assert!(got.is_empty());
    assert_eq!(missing.len(), img.profile.quantities.len());
}

fn marker_at(base: u16) -> BTreeMap<u16, u16> {
    let mut r = BTreeMap::new();
    let words = [0x5375, 0x6E53, 1, 66];
    for (i, w) in words.iter().enumerate() {
        r.insert(base + i as u16, *w);
    }
    for (i, w) in encode_string("ACME", 16).iter().enumerate() {
        r.insert(base + 4 + i as u16, *w);
    }
    for i in 20..70 {
        r.entry(base + i).or_insert(0);
    }
    // model 203 header and body, then the end marker
    r.insert(base + 70, 203);
    r.insert(base + 71, 105);
    for i in 72..72 + 105 {
        r.insert(base + i, 0);
    }
    r.insert(base + 177, 0xFFFF);
    r.insert(base + 178, 0);
    r
}

#[test]
fn marker_is_sought_at_50000_then_0_after_40000() {
    for base in [50000u16, 0] {
        let mut link = MemLink::holding(7, marker_at(base));
        let d = block_on(discover(&mut link, 7)).unwrap();
        assert_eq!(d.base, base);
        assert_eq!(
            d.models.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1, 203]
        );
        assert_eq!(d.common.unwrap().manufacturer, "ACME");
        let firsts: Vec<u16> = link.requests.iter().take(3).map(|r| r.2).collect();
        let want: Vec<u16> = [40000, 50000, 0]
            .into_iter()
            .take(if base == 0 { 3 } else { 2 })
            .collect();
        assert_eq!(&firsts[..want.len()], &want[..]);
    }
}

#[test]
fn no_marker_reports_what_each_base_answered() {
    let mut regs = BTreeMap::new();
    regs.insert(0, 0x1234);
    regs.insert(1, 0x5678);
    let mut link = MemLink::holding(2, regs);
    let e = block_on(discover(&mut link, 2)).unwrap_err();
    let SunSpecError::NotFound { unit, evidence } = &e else {
        panic!("{e}")
    };
    assert_eq!(*unit, 2);
    assert_eq!(evidence.len(), 3);
    assert!(
        evidence[0].starts_with("40000: exception 0x02"),
        "{}",
        evidence[0]
    );
    assert_eq!(evidence[2], "0: 0x1234 0x5678");
}

#[test]
fn a_chain_without_end_marker_ends_at_the_illegal_address() {
    let mut regs = marker_at(40000);
    regs.remove(&40177);
    regs.remove(&40178);
    let mut link = MemLink::holding(1, regs);
    let d = block_on(discover(&mut link, 1)).unwrap();
    assert_eq!(d.models.len(), 2);
}

#[test]
fn a_length_running_past_the_address_space_is_a_broken_chain() {
    let mut regs = marker_at(40000);
    regs.insert(40071, 30000); // model 203 "length" 30000 → next header past 65535
    let mut link = MemLink::holding(1, regs);
    let e = block_on(discover(&mut link, 1)).unwrap_err();
    assert!(
        matches!(
            e,
            SunSpecError::Chain {
                unit: 1,
                address: 40070,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_silent_unit_is_not_found_after_one_timeout_per_base() {
    let mut link = MemLink::holding(1, marker_at(40000));
    let e = block_on(discover(&mut link, 9)).unwrap_err();
    assert!(
        matches!(&e, SunSpecError::NotFound { evidence, .. } if evidence.iter().all(|x| x.contains("no answer")))
    );
    assert_eq!(link.requests.len(), 3);
}

#[test]
fn transport_failure_stops_discovery_and_names_the_register() {
    struct Dead;
    impl socer_drivers::Link for Dead {
        async fn read_registers(
            &mut self,
            _: u8,
            _: Function,
            _: u16,
            _: u16,
        ) -> Result<Vec<u16>, LinkError> {
            Err(LinkError::Transport("connection reset".into()))
        }
    }
    let e = block_on(discover(&mut Dead, 4)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unit 4, register 40000: transport: connection reset"
    );
}

#[test]
fn resolve_skips_unmapped_models_and_honours_a_requested_one() {
    let set = ModelSet::builtin().unwrap();
    let device = Device {
        unit: 1,
        base: 40000,
        common: None,
        models: vec![
            ModelHeader {
                id: 1,
                address: 40002,
                length: 66,
            },
            ModelHeader {
                id: 120,
                address: 40070,
                length: 26,
            },
            ModelHeader {
                id: 103,
                address: 40098,
                length: 50,
            },
            ModelHeader {
                id: 203,
                address: 40150,
                length: 105,
            },
        ],
    };
    let r = resolve(&device, &set, None).unwrap();
    assert_eq!(r.model.id, 103);
    assert_eq!(r.profile.manufacturer, "unknown");
    let m = resolve(&device, &set, Some(203)).unwrap();
    assert_eq!(m.profile.kind, DeviceKind::Meter);
    let pw = m
        .profile
        .quantities
        .iter()
        .find(|q| q.name == Quantity::PW)
        .unwrap();
    assert_eq!((pw.address, pw.scale_register), (40168, Some(40172)));
    assert!(matches!(
        resolve(&device, &set, Some(111)),
        Err(SunSpecError::NoSupportedModel { .. })
    ));
}

#[test]
fn a_model_shorter_than_its_points_is_refused() {
    let set = ModelSet::builtin().unwrap();
    let device = Device {
        unit: 1,
        base: 40000,
        common: None,
        models: vec![ModelHeader {
            id: 103,
            address: 40002,
            length: 20,
        }],
    };
    let e = resolve(&device, &set, None).unwrap_err();
    assert!(e.to_string().contains("model 103 has length 20"), "{e}");
}

/// The simulator's register image behind the `Link` trait.
struct ImageLink {
    image: socer_drivers::sim::RegisterImage,
    state: Values,
}

impl socer_drivers::Link for ImageLink {
    async fn read_registers(
        &mut self,
        _: u8,
        f: Function,
        a: u16,
        n: u16,
    ) -> Result<Vec<u16>, LinkError> {
        self.image
            .read(f, a, n, &self.state)
            .map_err(|code| LinkError::Exception { code })
    }
}

#[test]
fn the_simulator_image_is_discovered_and_serves_live_values() {
    let set = ModelSet::builtin().unwrap();
    for id in [103, 113, 203] {
        let img = image(&ImageSpec::new(id), &set).unwrap();
        let state = Values {
            p_w: Some(-3210.0),
            f_hz: Some(50.01),
            ..Default::default()
        };
        let mut link = ImageLink {
            image: img.register_image(),
            state: state.clone(),
        };
        let (_, resolved) = block_on(discover_profile(&mut link, 1, None)).unwrap();
        assert_eq!(resolved.profile, img.profile);
        // Word by word until the device refuses: that must be just after the end marker.
        let mut regs = BTreeMap::new();
        let mut a = 40000u16;
        while let Ok(w) = link.image.read(Function::Holding, a, 1, &link.state) {
            regs.insert(a, w[0]);
            a += 1;
        }
        let last = resolved.model.address + 2 + resolved.model.length;
        assert_eq!(a, last + 2, "model {id}: image ends after the end marker");
        assert_eq!((regs[&last], regs[&(last + 1)]), (0xFFFF, 0));
        let (got, missing) = read_back(&regs, &resolved.profile);
        assert_eq!(got.p_w, Some(-3210.0), "model {id}");
        assert!((got.f_hz.unwrap() - 50.01).abs() < 1e-4, "model {id}");
        // What the simulator's state lacks is "not implemented" on the wire, not zero.
        assert!(
            missing.iter().any(|m| m == "v_v"),
            "model {id}: {missing:?}"
        );
    }
}
