//! Scanning a bus of in-memory devices: who answers, what it is, and what it costs.

mod sunspec_support;

use std::collections::{BTreeMap, HashMap};

use socer_drivers::profile::{
    Defaults, DeviceKind, Function, Identify, Profile, ProfileSet, ValueType,
};
use socer_drivers::scan::{probe, scan};
use socer_drivers::sunspec::{image, ImageSpec, ModelSet};
use socer_drivers::{Link, LinkError};
use sunspec_support::MemLink;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// An RS-485 line: several devices; an id nobody has stays silent. Optionally a TCP gateway
/// that answers absent ids with exception 0x0B.
#[derive(Default)]
struct Bus {
    devices: HashMap<u8, MemLink>,
    gateway: bool,
    requests: Vec<(u8, Function, u16)>,
}

impl Link for Bus {
    async fn read_registers(
        &mut self,
        unit: u8,
        function: Function,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        self.requests.push((unit, function, address));
        match self.devices.get_mut(&unit) {
            Some(d) => d.read_registers(unit, function, address, count).await,
            None if self.gateway => Err(LinkError::Exception { code: 0x0B }),
            None => Err(LinkError::Timeout { timeout_ms: 200 }),
        }
    }
}

fn meter_profile(id: &str, identify: Vec<Identify>) -> Profile {
    Profile {
        id: id.into(),
        manufacturer: "Test".into(),
        model: id.to_uppercase(),
        kind: DeviceKind::Meter,
        phases: 3,
        source: "test".into(),
        verified: None,
        defaults: Defaults {
            function: Function::Input,
            word_order: Default::default(),
            byte_order: Default::default(),
            fast_interval_s: 5,
            counter_interval_s: 60,
            max_registers: 125,
            min_interval_s: 0,
            unit_id: None,
        },
        unreadable: vec![],
        identify,
        quantities: vec![],
    }
}

fn ident(address: u16, value_type: ValueType, values: Vec<i64>) -> Identify {
    Identify::integer(Function::Input, address, value_type, values)
}

/// A meter whose input register 28 holds its model code 0x0070 and 30..31 a u32 0x00010002.
fn coded_meter(unit: u8) -> MemLink {
    let mut input = BTreeMap::new();
    input.insert(28, 0x0070);
    input.insert(30, 0x0001);
    input.insert(31, 0x0002);
    MemLink {
        unit,
        input,
        timeout_ms: 200,
        ..Default::default()
    }
}

fn profiles() -> ProfileSet {
    ProfileSet {
        profiles: vec![
            meter_profile(
                "meter-a",
                vec![ident(28, ValueType::U16, vec![0x0070, 0x0071])],
            ),
            meter_profile("meter-b", vec![ident(28, ValueType::U16, vec![0x0099])]),
            meter_profile(
                "meter-c",
                vec![
                    ident(28, ValueType::U16, vec![0x0070]),
                    ident(30, ValueType::U32, vec![0x0001_0002]),
                ],
            ),
            meter_profile(
                "meter-d",
                vec![
                    ident(28, ValueType::U16, vec![0x0070]),
                    ident(30, ValueType::U32, vec![7]),
                ],
            ),
        ],
    }
}

fn sunspec_inverter(unit: u8) -> MemLink {
    let mut spec = ImageSpec::new(103);
    spec.common.manufacturer = "SMA".into();
    spec.common.model = "STP 10.0".into();
    spec.common.serial = "3001234567".into();
    let img = image(&spec, &ModelSet::builtin().unwrap()).unwrap();
    MemLink::holding(unit, img.registers)
}

#[test]
fn scan_finds_sunspec_and_identified_meters_and_skips_silent_ids() {
    let mut bus = Bus::default();
    bus.devices.insert(2, sunspec_inverter(2));
    bus.devices.insert(4, coded_meter(4));
    let found = block_on(scan(&mut bus, 1..=5, &profiles())).unwrap();
    let units: Vec<u8> = found.iter().map(|f| f.unit).collect();
    assert_eq!(units, vec![2, 4]);

    assert_eq!(found[0].guesses, vec!["sunspec"]);
    let d = found[0].description.as_deref().unwrap();
    assert!(d.starts_with("SMA STP 10.0 serial 3001234567"), "{d}");
    assert!(found[0]
        .evidence
        .iter()
        .any(|e| e == "SunS marker at 40000, models [1, 103]"));

    // meter-b's value and meter-d's second register do not match; meter-c needs both to.
    assert_eq!(found[1].guesses, vec!["meter-a", "meter-c"]);
    assert_eq!(found[1].description.as_deref(), Some("Test METER-A"));
    assert!(
        found[1].evidence[0].contains("exception 0x02"),
        "{:?}",
        found[1].evidence
    );
    assert!(found[1]
        .evidence
        .iter()
        .any(|e| e == "meter-c: input 28 = 112, input 30 = 65538"));
}

#[test]
fn a_silent_unit_costs_exactly_one_request() {
    let mut bus = Bus::default();
    bus.devices.insert(4, coded_meter(4));
    block_on(scan(&mut bus, [1, 3, 4, 5], &profiles())).unwrap();
    for silent in [1u8, 3, 5] {
        assert_eq!(
            bus.requests.iter().filter(|r| r.0 == silent).count(),
            1,
            "unit {silent}"
        );
    }
    // The identify register shared by four profiles is read once.
    let reads_28 = bus
        .requests
        .iter()
        .filter(|r| **r == (4, Function::Input, 28))
        .count();
    assert_eq!(reads_28, 1);
}

#[test]
fn a_gateway_saying_target_absent_is_not_a_device() {
    let mut bus = Bus {
        gateway: true,
        ..Default::default()
    };
    bus.devices.insert(9, sunspec_inverter(9));
    let found = block_on(scan(&mut bus, 8..=10, &ProfileSet::default())).unwrap();
    assert_eq!(found.iter().map(|f| f.unit).collect::<Vec<_>>(), vec![9]);
}

#[test]
fn an_exception_proves_a_device_even_of_unknown_model() {
    let mut bus = Bus::default();
    bus.devices.insert(
        1,
        MemLink {
            unit: 1,
            ..Default::default()
        },
    );
    let f = block_on(probe(&mut bus, 1, &profiles())).unwrap().unwrap();
    assert!(f.guesses.is_empty());
    assert_eq!(f.description, None);
    assert_eq!(
        f.evidence,
        vec!["holding 40000: exception 0x02 (illegal data address), so a device is there"]
    );
}

#[test]
fn a_dead_link_stops_the_scan_naming_the_unit() {
    struct Dead;
    impl Link for Dead {
        async fn read_registers(
            &mut self,
            _: u8,
            _: Function,
            _: u16,
            _: u16,
        ) -> Result<Vec<u16>, LinkError> {
            Err(LinkError::Transport("port closed".into()))
        }
    }
    let e = block_on(scan(&mut Dead, 5..=6, &profiles())).unwrap_err();
    assert_eq!(e.to_string(), "unit 5: transport: port closed");
}
