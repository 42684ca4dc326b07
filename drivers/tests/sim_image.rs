//! The simulator's register image: what a device answers to a read, decoded with the poller's
//! own `decode`.

use socer_drivers::decode::{apply_scale_factor, decode};
use socer_drivers::profile::{Defaults, Function, QuantityMap, ValueType};
use socer_drivers::reading::{Quantity, Values};
use socer_drivers::sim::image::RegisterImage;
use socer_drivers::ManualClock;

mod sim_support;
use sim_support::{device, profile, t0, HOUR};

/// Read through the device's request path (a function 3/4 PDU) and return the words, or the
/// exception code.
fn read(
    dev: &socer_drivers::sim::SimDevice,
    fc: u8,
    address: u16,
    count: u16,
) -> Result<Vec<u16>, u8> {
    let mut pdu = vec![fc];
    pdu.extend_from_slice(&address.to_be_bytes());
    pdu.extend_from_slice(&count.to_be_bytes());
    let reply = dev.respond(&pdu).pdu.expect("a healthy device answers");
    if reply[0] & 0x80 != 0 {
        assert_eq!(reply[0], fc | 0x80);
        return Err(reply[1]);
    }
    assert_eq!(reply[0], fc);
    assert_eq!(usize::from(reply[1]), 2 * usize::from(count));
    Ok(reply[2..]
        .chunks(2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .collect())
}

#[test]
fn every_profile_quantity_decodes_to_the_device_state() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 1840.0, 12_345_000.0);
    clock.advance(HOUR);
    let p = profile();
    let state = dev.values();
    assert!(
        (state.e_imp_wh.unwrap() - 12_346_840.0).abs() < 1e-7,
        "{state:?}"
    );
    for q in &p.quantities {
        let f = if q.function == Some(Function::Holding) {
            3
        } else {
            4
        };
        let words = read(&dev, f, q.address, q.value_type.words()).unwrap();
        let got = decode(&words, q, &p.defaults).unwrap();
        let want = state.get(q.name, q.phase.unwrap_or(1)).unwrap();
        // f32 keeps 7 significant digits; 12346.84 kWh is exact to 1 Wh.
        let tolerance = want.abs() * 1e-7 + 0.05;
        assert!(
            (got - want).abs() <= tolerance,
            "{:?} at {:#x}: {got} vs {want}",
            q.name,
            q.address
        );
    }
}

#[test]
fn one_read_spanning_several_quantities_and_holes_matches_single_reads() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 500.0, 0.0);
    let block = read(&dev, 4, 0, 0x10).unwrap();
    assert_eq!(&block[0..2], &read(&dev, 4, 0, 2).unwrap()[..]);
    assert_eq!(&block[0x0C..0x0E], &read(&dev, 4, 0x0C, 2).unwrap()[..]);
    // Registers the profile does not map read as 0.
    assert_eq!(&block[2..6], &[0, 0, 0, 0]);
    assert_eq!(read(&dev, 4, 0x30, 3).unwrap(), vec![0, 0, 0]);
    // Half of a float: the word the device holds at that address.
    assert_eq!(read(&dev, 4, 0x0D, 1).unwrap()[0], block[0x0D]);
}

#[test]
fn unreadable_ranges_and_addresses_beyond_the_map_answer_exception_2() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 500.0, 0.0);
    assert_eq!(read(&dev, 4, 0x20, 1), Err(2));
    assert_eq!(
        read(&dev, 4, 0x1E, 4),
        Err(2),
        "a read overlapping the refused range"
    );
    assert_eq!(
        read(&dev, 4, 0x22, 2),
        Ok(vec![0, 0]),
        "just after it is fine"
    );
    // The last mapped input register is 0x4B (export energy).
    assert!(read(&dev, 4, 0x4A, 2).is_ok());
    assert_eq!(read(&dev, 4, 0x4B, 2), Err(2));
    assert_eq!(read(&dev, 4, 0xFFFF, 1), Err(2));
}

#[test]
fn a_function_the_device_lacks_answers_exception_1() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 500.0, 0.0);
    for fc in [1u8, 2, 6, 16, 0x2B] {
        let reply = dev.respond(&[fc, 0, 0, 0, 1]).pdu.unwrap();
        assert_eq!(reply, vec![fc | 0x80, 1], "function {fc}");
    }
    // An image with input registers only has no holding registers at all.
    let mut only_input = RegisterImage::new(profile().defaults);
    only_input.add_live(profile().quantities[0].clone());
    assert_eq!(only_input.check(Function::Holding, 0, 1), Err(1));
    assert_eq!(only_input.check(Function::Input, 0, 2), Ok(()));
}

#[test]
fn a_count_of_zero_or_above_125_answers_exception_3() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 500.0, 0.0);
    assert_eq!(read(&dev, 4, 0, 0), Err(3));
    assert_eq!(read(&dev, 4, 0, 126), Err(3));
}

#[test]
fn identification_values_are_served_from_the_profile() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, 500.0, 0.0);
    assert_eq!(read(&dev, 3, 0xFC02, 1), Ok(vec![0x0020]));
}

#[test]
fn holding_power_is_low_word_first_tenths_of_a_watt() {
    let clock = ManualClock::new(t0());
    let dev = device(&clock, -1234.5, 0.0);
    // -12345 = 0xFFFFCFC7, low word first.
    assert_eq!(read(&dev, 3, 0x10, 2), Ok(vec![0xCFC7, 0xFFFF]));
}

#[test]
fn a_scale_factor_register_scales_the_live_value_as_sunspec_does() {
    let defaults: Defaults = toml::from_str("function = \"holding\"").unwrap();
    let mut image = RegisterImage::new(defaults.clone());
    image.add_static(Function::Holding, 40000, &[0x5375, 0x6E53]); // "SunS"
    image.add_static(Function::Holding, 40101, &[(-1i16) as u16]);
    let map = QuantityMap {
        name: Quantity::VV,
        phase: Some(1),
        function: None,
        address: 40100,
        value_type: ValueType::U16,
        word_order: None,
        byte_order: None,
        scale: 1.0,
        scale_register: Some(40101),
        unit: Some("V".into()),
        sentinels: vec![0xFFFF],
        interval_s: None,
        plus: vec![],
        minus: vec![],
    };
    image.add_live(map.clone());
    let mut state = Values::default();
    state.set(Quantity::VV, 1, 231.4);
    let words = image.read(Function::Holding, 40000, 102, &state).unwrap();
    assert_eq!(&words[0..2], &[0x5375, 0x6E53]);
    assert_eq!(words[100], 2314);
    let raw = decode(&words[100..101], &map, &defaults).unwrap();
    assert!((apply_scale_factor(raw, words[101] as i16) - 231.4).abs() < 1e-9);
    // Below the marker nothing is mapped yet, but the extent starts at 0: reads give zeros.
    assert_eq!(image.read(Function::Holding, 0, 2, &state), Ok(vec![0, 0]));
    assert_eq!(image.read(Function::Holding, 40101, 2, &state), Err(2));
}
