//! The built-in meter profiles and profile validation: every shipped file loads, the addresses
//! match the manufacturers' documents, and a broken file is reported at its FILE:LINE:COL.

use socer_drivers::decode::{decode, decode_checked, encode, DecodeError};
use socer_drivers::profile::{
    ByteOrder, Defaults, Function, Identify, Profile, ProfileError, ProfileSet, QuantityMap,
    ValueType, WordOrder,
};
use socer_drivers::Quantity;

fn builtin() -> ProfileSet {
    match ProfileSet::builtin() {
        Ok(set) => set,
        Err(e) => panic!("a built-in profile does not validate: {e}"),
    }
}

fn map<'a>(
    set: &'a ProfileSet,
    id: &str,
    q: Quantity,
    phase: u8,
) -> (&'a Profile, &'a QuantityMap) {
    let p = set.get(id).unwrap_or_else(|| panic!("no profile {id}"));
    let m = p
        .quantity(q, phase)
        .unwrap_or_else(|| panic!("{id} maps no {}[{phase}]", q.name()));
    (p, m)
}

/// (function, address, type, word order, scale) of one quantity, defaults applied.
fn location(
    set: &ProfileSet,
    id: &str,
    q: Quantity,
    phase: u8,
) -> (Function, u16, ValueType, WordOrder, f64) {
    let (p, m) = map(set, id, q, phase);
    (
        m.resolved_function(&p.defaults),
        m.address,
        m.value_type,
        m.word_order.unwrap_or(p.defaults.word_order),
        m.scale,
    )
}

#[test]
fn every_builtin_profile_validates_and_the_required_models_ship() {
    let set = builtin();
    for id in [
        "eastron-sdm120",
        "eastron-sdm630",
        "eastron-sdm72d",
        "carlo-gavazzi-em24",
        "carlo-gavazzi-em340",
        "abb-b23",
        "schneider-iem3155",
        "huawei-sun2000",
    ] {
        let p = set
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not built in"));
        assert!(!p.source.trim().is_empty());
        assert!(p.quantity(Quantity::PW, 1).is_some(), "{id} has no p_w");
    }
    // One profile per file, ids unique.
    let mut ids = set.ids();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    assert_eq!(n, ProfileSet::builtin_files().len());
}

#[test]
fn every_builtin_file_validates_on_its_own() {
    for (file, text) in ProfileSet::builtin_files() {
        if let Err(errors) = Profile::check(file, text) {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("{}", all.join("\n"));
        }
    }
}

#[test]
fn eastron_addresses_match_the_eastron_documents() {
    let set = builtin();
    // SDM630: "30053 Total system power" = input 0x0034; "30073 Total import kWh" = 0x0048;
    // "30075 Total export kWh" = 0x004A; "30001 Phase 1 line to neutral volts" = 0x0000;
    // "30011 Phase 3 current" = 0x000A; "30071 Frequency" = 0x0046. All float, high word first.
    let f = |a| {
        (
            Function::Input,
            a,
            ValueType::F32,
            WordOrder::HighFirst,
            1.0,
        )
    };
    let kwh = |a| {
        (
            Function::Input,
            a,
            ValueType::F32,
            WordOrder::HighFirst,
            1000.0,
        )
    };
    assert_eq!(location(&set, "eastron-sdm630", Quantity::PW, 1), f(0x0034));
    assert_eq!(
        location(&set, "eastron-sdm630", Quantity::EImpWh, 1),
        kwh(0x0048)
    );
    assert_eq!(
        location(&set, "eastron-sdm630", Quantity::EExpWh, 1),
        kwh(0x004A)
    );
    assert_eq!(location(&set, "eastron-sdm630", Quantity::VV, 1), f(0x0000));
    assert_eq!(location(&set, "eastron-sdm630", Quantity::IA, 3), f(0x000A));
    assert_eq!(
        location(&set, "eastron-sdm630", Quantity::FHz, 1),
        f(0x0046)
    );
    assert_eq!(location(&set, "eastron-sdm630", Quantity::Pf, 1), f(0x003E));
    // SDM120: "30013 Active power" = 0x000C, "30031 Power factor" = 0x001E.
    assert_eq!(location(&set, "eastron-sdm120", Quantity::PW, 1), f(0x000C));
    assert_eq!(location(&set, "eastron-sdm120", Quantity::Pf, 1), f(0x001E));
    assert_eq!(
        location(&set, "eastron-sdm120", Quantity::EImpWh, 1),
        kwh(0x0048)
    );
    // SDM72D: same system registers as the SDM630.
    assert_eq!(location(&set, "eastron-sdm72d", Quantity::PW, 1), f(0x0034));
    assert_eq!(
        location(&set, "eastron-sdm72d", Quantity::EExpWh, 1),
        kwh(0x004A)
    );
    // Meter codes at holding 0xFC02: SDM630 0x0070, SDM72D-M V2 0x0089.
    let sdm630 = set
        .get("eastron-sdm630")
        .map(|p| p.identify.clone())
        .unwrap_or_default();
    assert_eq!(
        (sdm630[0].function, sdm630[0].address),
        (Function::Holding, 0xFC02)
    );
    assert!(sdm630[0].values.contains(&0x0070));
    let sdm72 = set
        .get("eastron-sdm72d")
        .map(|p| p.identify.clone())
        .unwrap_or_default();
    assert!(sdm72[0].values.contains(&0x0089));
}

#[test]
fn carlo_gavazzi_addresses_match_the_protocol_documents() {
    let set = builtin();
    let i32l = |a, s| (Function::Holding, a, ValueType::I32, WordOrder::LowFirst, s);
    // EM24-DIN: 0028h W sys (W*10), 003Eh kWh(+) TOT and 005Ch kWh(-) TOT (kWh*10 = Wh/100),
    // 0037h Hz (INT16, Hz*10), 000Ch A L1 (A*1000).
    assert_eq!(
        location(&set, "carlo-gavazzi-em24", Quantity::PW, 1),
        i32l(0x0028, 0.1)
    );
    assert_eq!(
        location(&set, "carlo-gavazzi-em24", Quantity::EImpWh, 1),
        i32l(0x003E, 100.0)
    );
    assert_eq!(
        location(&set, "carlo-gavazzi-em24", Quantity::EExpWh, 1),
        i32l(0x005C, 100.0)
    );
    assert_eq!(
        location(&set, "carlo-gavazzi-em24", Quantity::IA, 1),
        i32l(0x000C, 0.001)
    );
    let (_, hz) = map(&set, "carlo-gavazzi-em24", Quantity::FHz, 1);
    assert_eq!(
        (hz.address, hz.value_type, hz.scale),
        (0x0037, ValueType::I16, 0.1)
    );
    // EM340: 0028h W sys, 0034h kWh(+) TOT, 004Eh kWh(-) TOT, 0033h Hz.
    assert_eq!(
        location(&set, "carlo-gavazzi-em340", Quantity::PW, 1),
        i32l(0x0028, 0.1)
    );
    assert_eq!(
        location(&set, "carlo-gavazzi-em340", Quantity::EImpWh, 1),
        i32l(0x0034, 100.0)
    );
    assert_eq!(
        location(&set, "carlo-gavazzi-em340", Quantity::EExpWh, 1),
        i32l(0x004E, 100.0)
    );
    assert_eq!(
        location(&set, "carlo-gavazzi-em340", Quantity::VV, 3),
        i32l(0x0004, 0.1)
    );
    let (_, hz) = map(&set, "carlo-gavazzi-em340", Quantity::FHz, 1);
    assert_eq!(hz.address, 0x0033);
    // Identification code register 000Bh on both.
    for id in ["carlo-gavazzi-em24", "carlo-gavazzi-em340"] {
        let ident = set.get(id).map(|p| p.identify.clone()).unwrap_or_default();
        assert_eq!(
            (ident[0].address, ident[0].value_type),
            (0x000B, Some(ValueType::U16)),
            "{id}"
        );
    }
    let em24 = set
        .get("carlo-gavazzi-em24")
        .map(|p| p.identify[0].values.clone())
        .unwrap_or_default();
    assert_eq!(em24, vec![70, 71, 72, 73]);
    // EM24: "maximum 11 register (word) with a single request"; EM300 series: 50.
    let max = |id: &str| set.get(id).map(|p| p.defaults.max_registers);
    assert_eq!(max("carlo-gavazzi-em24"), Some(11));
    assert_eq!(max("carlo-gavazzi-em340"), Some(50));
}

#[test]
fn abb_b23_addresses_match_the_manual() {
    let set = builtin();
    let hf = |a, t, s| (Function::Holding, a, t, WordOrder::HighFirst, s);
    // 0x5000 active import and 0x5004 active export, u64 in 0.01 kWh (= 10 Wh).
    assert_eq!(
        location(&set, "abb-b23", Quantity::EImpWh, 1),
        hf(0x5000, ValueType::U64, 10.0)
    );
    assert_eq!(
        location(&set, "abb-b23", Quantity::EExpWh, 1),
        hf(0x5004, ValueType::U64, 10.0)
    );
    // 0x5B14 active power total s32 0.01 W; 0x5B00 voltage L1-N u32 0.1 V; 0x5B2C frequency.
    assert_eq!(
        location(&set, "abb-b23", Quantity::PW, 1),
        hf(0x5B14, ValueType::I32, 0.01)
    );
    assert_eq!(
        location(&set, "abb-b23", Quantity::VV, 1),
        hf(0x5B00, ValueType::U32, 0.1)
    );
    assert_eq!(
        location(&set, "abb-b23", Quantity::IA, 2),
        hf(0x5B0E, ValueType::U32, 0.01)
    );
    assert_eq!(
        location(&set, "abb-b23", Quantity::FHz, 1),
        hf(0x5B2C, ValueType::U16, 0.01)
    );
    // Type designation "B23 " at 0x8960.
    let ident = set
        .get("abb-b23")
        .map(|p| p.identify.clone())
        .unwrap_or_default();
    assert_eq!(ident[0].address, 0x8960);
    assert!(ident[0]
        .values
        .contains(&i64::from(u32::from_be_bytes(*b"B23 "))));
}

#[test]
fn schneider_iem3155_addresses_are_the_documented_registers_minus_one() {
    let set = builtin();
    // Register list (1-based): 3060 Total Active Power (kW), 3204/3208 energy import/export
    // (INT64 Wh), 3028 V L1-N, 3000 I1, 3110 frequency.
    let hf = |a, t, s| (Function::Holding, a, t, WordOrder::HighFirst, s);
    assert_eq!(
        location(&set, "schneider-iem3155", Quantity::PW, 1),
        hf(3060 - 1, ValueType::F32, 1000.0)
    );
    assert_eq!(
        location(&set, "schneider-iem3155", Quantity::EImpWh, 1),
        hf(3204 - 1, ValueType::I64, 1.0)
    );
    assert_eq!(
        location(&set, "schneider-iem3155", Quantity::EExpWh, 1),
        hf(3208 - 1, ValueType::I64, 1.0)
    );
    assert_eq!(
        location(&set, "schneider-iem3155", Quantity::VV, 1),
        hf(3028 - 1, ValueType::F32, 1.0)
    );
    assert_eq!(
        location(&set, "schneider-iem3155", Quantity::IA, 1),
        hf(3000 - 1, ValueType::F32, 1.0)
    );
    assert_eq!(
        location(&set, "schneider-iem3155", Quantity::FHz, 1),
        hf(3110 - 1, ValueType::F32, 1.0)
    );
}

#[test]
fn huawei_sun2000_reports_production_as_negative_power_and_export_energy() {
    let set = builtin();
    // 32080 active power I32 gain 1000 kW; 32106 accumulated yield U32 gain 100 kWh.
    let hf = |a, t, s| (Function::Holding, a, t, WordOrder::HighFirst, s);
    assert_eq!(
        location(&set, "huawei-sun2000", Quantity::PW, 1),
        hf(32080, ValueType::I32, -1.0)
    );
    assert_eq!(
        location(&set, "huawei-sun2000", Quantity::EExpWh, 1),
        hf(32106, ValueType::U32, 10.0)
    );
    assert_eq!(
        location(&set, "huawei-sun2000", Quantity::FHz, 1),
        hf(32085, ValueType::U16, 0.01)
    );
    assert_eq!(
        location(&set, "huawei-sun2000", Quantity::VV, 1),
        hf(32069, ValueType::U16, 0.1)
    );
    let (p, power) = map(&set, "huawei-sun2000", Quantity::PW, 1);
    // Producing 4.321 kW: the inverter holds 4321 (0x000010E1).
    assert_eq!(decode(&[0x0000, 0x10E1], power, &p.defaults), Ok(-4321.0));
    let (_, yield_map) = map(&set, "huawei-sun2000", Quantity::EExpWh, 1);
    // 12345.67 kWh = raw 1234567 = 0x0012D687 -> 12_345_670 Wh.
    assert_eq!(
        decode(&[0x0012, 0xD687], yield_map, &p.defaults),
        Ok(12_345_670.0)
    );
    assert!(p.quantity(Quantity::EImpWh, 1).is_none());
}

#[test]
fn energy_counters_poll_every_minute_and_power_every_five_seconds_by_default() {
    let set = builtin();
    for p in &set.profiles {
        if p.defaults.min_interval_s > 0 {
            // A device with its own poll limit (the Chain 2 reader): never faster than that.
            for q in &p.quantities {
                assert!(q.resolved_interval_s(&p.defaults) >= p.defaults.min_interval_s);
            }
            continue;
        }
        for q in &p.quantities {
            let expected = if q.name.is_counter() { 60 } else { 5 };
            assert_eq!(
                q.resolved_interval_s(&p.defaults),
                expected,
                "{} {}",
                p.id,
                q.label()
            );
        }
    }
}

/// A value each quantity can hold on any device (and that no sentinel equals).
fn sample(q: Quantity, scale: f64) -> f64 {
    match q {
        Quantity::PW if scale < 0.0 => -1520.0,
        Quantity::PW => 1520.0,
        Quantity::EImpWh => 4_567_800.0,
        Quantity::EExpWh => 1_234_500.0,
        Quantity::VV => 231.4,
        Quantity::IA => 6.58,
        Quantity::FHz => 50.01,
        Quantity::Pf => 0.97,
        Quantity::SocPct => 57.0,
        Quantity::BatPW if scale < 0.0 => -850.0,
        Quantity::BatPW => 850.0,
        Quantity::EChargeWh => 987_600.0,
        Quantity::EDischargeWh => 876_500.0,
    }
}

#[test]
fn every_builtin_quantity_survives_encode_then_decode() {
    let set = builtin();
    let mut checked = 0;
    for p in &set.profiles {
        for q in &p.quantities {
            let v = sample(q.name, q.scale);
            let words = encode(v, q, &p.defaults);
            assert_eq!(words.len(), usize::from(q.value_type.words()));
            let back = decode_checked(&words, q, &p.defaults)
                .unwrap_or_else(|e| panic!("{} {}: {e}", p.id, q.label()));
            // One raw step of the register, or float precision.
            let tolerance = q.scale.abs().max(v.abs() * 1e-6);
            assert!(
                (back - v).abs() <= tolerance,
                "{} {}: {v} -> {back}",
                p.id,
                q.label()
            );
            checked += 1;
        }
    }
    assert!(checked >= 60, "only {checked} quantities");
}

#[test]
fn a_sentinel_register_reads_as_not_available() {
    let set = builtin();
    let (p, m) = map(&set, "abb-b23", Quantity::EImpWh, 1);
    assert!(matches!(
        decode(&[0xFFFF; 4], m, &p.defaults),
        Err(DecodeError::NotAvailable { .. })
    ));
    let (p, m) = map(&set, "schneider-iem3155", Quantity::EExpWh, 1);
    assert!(matches!(
        decode(&[0x8000, 0, 0, 0], m, &p.defaults),
        Err(DecodeError::NotAvailable { .. })
    ));
    let (p, m) = map(&set, "huawei-sun2000", Quantity::PW, 1);
    assert!(matches!(
        decode(&[0x7FFF, 0xFFFF], m, &p.defaults),
        Err(DecodeError::NotAvailable { .. })
    ));
}

#[test]
fn a_nonsense_register_value_is_rejected_with_the_value_named() {
    let set = builtin();
    // EM24 frequency register reading 0 (Hz*10): 0 Hz cannot be a grid.
    let (p, hz) = map(&set, "carlo-gavazzi-em24", Quantity::FHz, 1);
    match decode_checked(&[0x0000], hz, &p.defaults) {
        Err(DecodeError::Implausible(i)) => assert_eq!((i.quantity, i.value), (Quantity::FHz, 0.0)),
        other => panic!("expected Implausible, got {other:?}"),
    }
    // SDM630 import counter reading -5 kWh.
    let (p, e) = map(&set, "eastron-sdm630", Quantity::EImpWh, 1);
    let words = encode(-5000.0, e, &p.defaults);
    let err = decode_checked(&words, e, &p.defaults).unwrap_err();
    assert_eq!(
        err.to_string(),
        "implausible e_imp_wh = -5000 (valid 0..=10000000000000)"
    );
    // EM340 power of 2^31-1 W*10 = 214 MW.
    let (p, w) = map(&set, "carlo-gavazzi-em340", Quantity::PW, 1);
    assert!(matches!(
        decode_checked(&[0xFFFF, 0x7FFF], w, &p.defaults),
        Err(DecodeError::Implausible(_))
    ));
}

#[test]
fn an_unknown_model_error_lists_the_known_ids() {
    let set = builtin();
    let err = set.require("eastron-sdm999").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("unknown meter model `eastron-sdm999`; known models: "),
        "{text}"
    );
    for id in set.ids() {
        assert!(text.contains(id), "{text} lacks {id}");
    }
    assert_eq!(set.require("abb-b23").map(|p| p.model.as_str()), Ok("B23"));
}

// ---- malformed profiles: each error points at the value to fix ----

const BASE: &str = r#"id = "test-meter"
manufacturer = "Test"
model = "T1"
kind = "meter"
phases = 1
source = "Test manual v1, table 2"

[defaults]
function = "input"
max_registers = 60

[[quantity]]
name = "p_w"
address = 12
type = "f32"
"#;

fn variant(replace: &[(&str, &str)], append: &str) -> String {
    let mut text = BASE.to_string();
    for (from, to) in replace {
        assert!(text.contains(from), "BASE lacks {from}");
        text = text.replacen(from, to, 1);
    }
    text + append
}

fn first_error(text: &str) -> ProfileError {
    match Profile::from_toml("meters/test.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_error_at(text: &str, line: usize, col: usize, fragment: &str) {
    let e = first_error(text);
    assert_eq!((e.line, e.col), (line, col), "{e}");
    assert!(
        e.message.contains(fragment),
        "{e} does not mention {fragment:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("meters/test.toml:{line}:{col}: {}", e.message)
    );
}

#[test]
fn the_base_test_profile_is_valid() {
    let p = Profile::from_toml("meters/test.toml", BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.id, "test-meter");
    assert_eq!(p.defaults.word_order, WordOrder::HighFirst);
    assert_eq!(p.defaults.byte_order, ByteOrder::Big);
}

#[test]
fn a_toml_syntax_error_is_located() {
    assert_error_at(
        &variant(&[("type = \"f32\"", "type = \"f32")], ""),
        15,
        12,
        "",
    );
}

#[test]
fn an_unknown_key_is_located() {
    assert_error_at(
        &variant(&[("address = 12", "adress = 12")], ""),
        14,
        1,
        "adress",
    );
}

#[test]
fn an_unknown_quantity_name_is_located() {
    assert_error_at(
        &variant(&[("name = \"p_w\"", "name = \"p_kw\"")], ""),
        13,
        8,
        "p_kw",
    );
}

#[test]
fn a_per_phase_quantity_without_phase_is_located_at_its_name() {
    let text = variant(
        &[],
        "\n[[quantity]]\nname = \"v_v\"\naddress = 0\ntype = \"f32\"\n",
    );
    assert_error_at(&text, 18, 8, "phase = 1");
}

#[test]
fn a_phase_beyond_the_profile_phases_is_located() {
    let text = variant(
        &[],
        "\n[[quantity]]\nname = \"i_a\"\nphase = 3\naddress = 6\ntype = \"f32\"\n",
    );
    assert_error_at(&text, 19, 9, "phase must be 1..=1");
}

#[test]
fn a_phase_on_a_quantity_that_has_none_is_located() {
    let text = variant(&[("address = 12", "phase = 2\naddress = 12")], "");
    assert_error_at(&text, 14, 9, "not per phase");
}

#[test]
fn the_same_quantity_twice_is_located_at_the_second() {
    let text = variant(
        &[],
        "\n[[quantity]]\nname = \"p_w\"\naddress = 52\ntype = \"f32\"\n",
    );
    assert_error_at(&text, 18, 8, "p_w is mapped twice");
}

#[test]
fn an_address_overflowing_the_register_space_is_located() {
    let text = variant(&[("address = 12", "address = 65535")], "");
    assert_error_at(&text, 14, 11, "overflows address 65535");
}

#[test]
fn a_quantity_inside_an_unreadable_range_is_located() {
    let text = variant(
        &[(
            "[[quantity]]",
            "[[unreadable]]\nfunction = \"input\"\nstart = 10\nend = 12\n\n[[quantity]]",
        )],
        "",
    );
    assert_error_at(&text, 19, 11, "unreadable range 10..=12");
    // The same range for the other function does not matter.
    let other = text.replacen(
        "function = \"input\"\nstart",
        "function = \"holding\"\nstart",
        1,
    );
    assert!(Profile::from_toml("meters/test.toml", &other).is_ok());
}

#[test]
fn a_zero_or_non_finite_scale_is_located() {
    assert_error_at(
        &variant(&[("type = \"f32\"", "type = \"f32\"\nscale = 0.0")], ""),
        16,
        9,
        "finite non-zero",
    );
    assert_error_at(
        &variant(&[("type = \"f32\"", "type = \"f32\"\nscale = nan")], ""),
        16,
        9,
        "finite non-zero",
    );
    assert_error_at(
        &variant(&[("type = \"f32\"", "type = \"f32\"\nscale = inf")], ""),
        16,
        9,
        "finite non-zero",
    );
}

#[test]
fn max_registers_outside_the_modbus_limit_is_located() {
    assert_error_at(
        &variant(&[("max_registers = 60", "max_registers = 126")], ""),
        10,
        17,
        "1..=125",
    );
    assert_error_at(
        &variant(&[("max_registers = 60", "max_registers = 0")], ""),
        10,
        17,
        "1..=125",
    );
}

#[test]
fn phases_other_than_one_or_three_are_located() {
    assert_error_at(
        &variant(&[("phases = 1", "phases = 2")], ""),
        5,
        10,
        "1 or 3",
    );
}

#[test]
fn an_empty_source_is_located() {
    assert_error_at(
        &variant(
            &[("source = \"Test manual v1, table 2\"", "source = \"  \"")],
            "",
        ),
        6,
        10,
        "source is empty",
    );
}

#[test]
fn check_reports_every_problem_in_file_order() {
    let text = variant(
        &[
            ("phases = 1", "phases = 2"),
            ("max_registers = 60", "max_registers = 200"),
        ],
        "",
    );
    let errors = match Profile::check("t.toml", &text) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(at, vec![(5, 10), (10, 17)]);
}

// ---- a technician's folder ----

fn write(dir: &std::path::Path, name: &str, text: &str) {
    if let Err(e) = std::fs::write(dir.join(name), text) {
        panic!("cannot write {name}: {e}");
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("socer-profiles-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

#[test]
fn a_folder_adds_new_models_and_overrides_a_builtin_of_the_same_id() {
    let dir = temp_dir("override");
    write(&dir, "mine.toml", BASE);
    let sdm630 = ProfileSet::builtin_files()
        .iter()
        .find(|(f, _)| *f == "eastron-sdm630.toml")
        .map(|(_, t)| {
            t.replacen(
                "model = \"SDM630-Modbus V2\"",
                "model = \"SDM630 (site copy)\"",
                1,
            )
        })
        .unwrap_or_default();
    write(&dir, "sdm630.toml", &sdm630);
    write(&dir, "notes.txt", "not a profile");
    let mut set = builtin();
    let before = set.profiles.len();
    set.load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.profiles.len(), before + 1);
    assert_eq!(set.get("test-meter").map(|p| p.model.as_str()), Some("T1"));
    assert_eq!(
        set.get("eastron-sdm630").map(|p| p.model.as_str()),
        Some("SDM630 (site copy)")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_file_in_a_folder_names_its_path_and_adds_nothing() {
    let dir = temp_dir("broken");
    write(&dir, "a-good.toml", BASE);
    write(
        &dir,
        "b-bad.toml",
        &variant(&[("phases = 1", "phases = 2")], ""),
    );
    let mut set = builtin();
    let before = set.profiles.len();
    let err = set.load_dir(&dir).unwrap_err();
    assert_eq!(err.file, dir.join("b-bad.toml").display().to_string());
    assert_eq!((err.line, err.col), (5, 10));
    assert_eq!(set.profiles.len(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_files_of_one_folder_with_the_same_id_are_an_error_at_the_second_id() {
    let dir = temp_dir("dup");
    write(&dir, "a.toml", BASE);
    write(&dir, "b.toml", BASE);
    let err = ProfileSet::default().load_dir(&dir).unwrap_err();
    assert_eq!(err.file, dir.join("b.toml").display().to_string());
    assert_eq!((err.line, err.col), (1, 6));
    assert!(err.message.contains("already used by"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_folder_is_an_error_naming_it() {
    let dir = std::env::temp_dir().join("socer-profiles-does-not-exist-7f3a");
    let err = ProfileSet::default().load_dir(&dir).unwrap_err();
    assert_eq!(err.file, dir.display().to_string());
    assert!(
        err.message.starts_with("cannot read the profile folder"),
        "{err}"
    );
}

#[test]
fn a_sentinel_on_a_float_or_out_of_range_is_located() {
    let float = variant(
        &[("type = \"f32\"", "type = \"f32\"\nsentinels = [-1]")],
        "",
    );
    assert_error_at(&float, 16, 13, "sentinels apply to integer registers");
    let wide = variant(
        &[("type = \"f32\"", "type = \"u16\"\nsentinels = [65536]")],
        "",
    );
    assert_error_at(&wide, 16, 13, "sentinel 65536 does not fit a u16 register");
    let ok = variant(
        &[(
            "type = \"f32\"",
            "type = \"i16\"\nsentinels = [0xFFFF, -32768]",
        )],
        "",
    );
    assert!(Profile::from_toml("meters/test.toml", &ok).is_ok());
}

#[test]
fn an_identify_value_that_cannot_fit_its_register_is_located() {
    let text = variant(&[], "\n[[identify]]\nfunction = \"holding\"\naddress = 11\ntype = \"u16\"\nvalues = [70, 70000]\n");
    assert_error_at(
        &text,
        21,
        10,
        "identify value 70000 does not fit a u16 register",
    );
    let float = variant(
        &[],
        "\n[[identify]]\nfunction = \"holding\"\naddress = 11\ntype = \"f32\"\nvalues = [1]\n",
    );
    assert_error_at(&float, 20, 8, "not an integer type");
}

#[test]
fn identify_text_is_checked_where_it_is_written() {
    let both = variant(
        &[],
        "\n[[identify]]\nfunction = \"input\"\naddress = 6\ntype = \"u16\"\nvalues = [1]\ntext = \"SPEM\"\n",
    );
    assert_error_at(&both, 22, 8, "both text and type");
    let not_ascii = variant(
        &[],
        "\n[[identify]]\nfunction = \"input\"\naddress = 6\ntext = \"SPÉM\"\n",
    );
    assert_error_at(&not_ascii, 20, 8, "printable ASCII");
    let empty = variant(
        &[],
        "\n[[identify]]\nfunction = \"input\"\naddress = 6\ntext = \"\"\n",
    );
    assert_error_at(&empty, 20, 8, "1 to 64 characters");
    let neither = variant(&[], "\n[[identify]]\nfunction = \"input\"\naddress = 6\n");
    assert_error_at(&neither, 19, 11, "type and values, or text");
    let overflow = variant(
        &[],
        "\n[[identify]]\nfunction = \"input\"\naddress = 65534\ntext = \"SUN2000-\"\n",
    );
    assert_error_at(&overflow, 19, 11, "overflows address 65535");
}

#[test]
fn identify_compares_text_and_wide_integers_exactly() {
    let d = |order: WordOrder| Defaults {
        word_order: order,
        ..Defaults::of(Function::Holding)
    };
    let text = Identify {
        function: Function::Input,
        address: 6,
        value_type: None,
        values: vec![],
        text: Some("SPEM-003".into()),
    };
    assert_eq!(text.words(), 4);
    // "SPEM-003CEBEU", high byte first.
    let words = [0x5350, 0x454D, 0x2D30, 0x3033];
    assert_eq!(
        text.check(&words, &d(WordOrder::LowFirst)),
        Ok("\"SPEM-003\"".into())
    );
    assert!(text
        .check(&[0x5350, 0x454D, 0x2D30, 0x3032], &d(WordOrder::HighFirst))
        .is_err());
    assert_eq!(text.example_words(&d(WordOrder::HighFirst)), words);
    // Two u64 values one bit apart are told apart (through f64 they would be equal).
    let wide = Identify::integer(
        Function::Holding,
        30000,
        ValueType::U64,
        vec![0x5355_4E32_3030_302D],
    );
    let hf = d(WordOrder::HighFirst);
    assert!(wide.check(&[0x5355, 0x4E32, 0x3030, 0x302D], &hf).is_ok());
    assert!(wide.check(&[0x5355, 0x4E32, 0x3030, 0x302C], &hf).is_err());
    assert_eq!(
        wide.example_words(&hf),
        vec![0x5355, 0x4E32, 0x3030, 0x302D]
    );
    // A low-first device: the words come reversed, and the encoder writes them so.
    let lf = d(WordOrder::LowFirst);
    let code = Identify::integer(Function::Input, 4999, ValueType::U32, vec![0x0001_0E03]);
    assert_eq!(code.example_words(&lf), vec![0x0E03, 0x0001]);
    assert!(code.check(&[0x0E03, 0x0001], &lf).is_ok());
    // Signed and unsigned views of a negative value are the same register.
    let neg = Identify::integer(Function::Input, 1, ValueType::I16, vec![-1]);
    assert!(neg.check(&[0xFFFF], &hf).is_ok());
    let unsigned = Identify::integer(Function::Input, 1, ValueType::U16, vec![0xFFFF]);
    assert!(unsigned.check(&[0xFFFF], &hf).is_ok());
}

// ---- device limits, storage and split values (issue 13) ----

#[test]
fn a_poll_interval_below_the_device_minimum_is_located() {
    // fast_interval_s = 5 (the default) is below a minimum of 10.
    let text = variant(
        &[(
            "max_registers = 60",
            "max_registers = 60\nmin_interval_s = 10",
        )],
        "",
    );
    let e = first_error(&text);
    assert!(e.message.contains("min_interval_s = 10"), "{e}");
    let ok = variant(
        &[(
            "max_registers = 60",
            "max_registers = 60\nmin_interval_s = 10\nfast_interval_s = 10",
        )],
        "",
    );
    Profile::from_toml("t.toml", &ok).unwrap();
    // A quantity's own interval may not go below it either.
    let text = variant(
        &[(
            "max_registers = 60",
            "max_registers = 60\nmin_interval_s = 10\nfast_interval_s = 30",
        )],
        "interval_s = 3\n",
    );
    assert_error_at(&text, 18, 14, "below the device's min_interval_s = 10");
}

#[test]
fn a_default_unit_id_outside_modbus_is_located() {
    assert_error_at(
        &variant(
            &[("max_registers = 60", "max_registers = 60\nunit_id = 248")],
            "",
        ),
        11,
        11,
        "unit_id must be 1..=247",
    );
}

#[test]
fn a_battery_profile_without_state_of_charge_is_located_at_its_kind() {
    assert_error_at(
        &variant(&[("kind = \"meter\"", "kind = \"battery\"")], ""),
        4,
        8,
        "soc_pct",
    );
    let ok = variant(
        &[("kind = \"meter\"", "kind = \"battery\"")],
        "\n[[quantity]]\nname = \"soc_pct\"\naddress = 20\ntype = \"u16\"\n",
    );
    let p = Profile::from_toml("t.toml", &ok).unwrap();
    assert_eq!(p.kind.name(), "battery");
}

#[test]
fn a_minus_register_overlapping_its_value_is_located() {
    // p_w at 12..=13 (f32): 13 overlaps, 14 does not.
    assert_error_at(&variant(&[], "minus = [13]\n"), 16, 9, "overlaps");
    Profile::from_toml("t.toml", &variant(&[], "minus = [14]\nplus = [16]\n")).unwrap();
    assert_error_at(&variant(&[], "minus = [65535]\n"), 16, 9, "overflows");
}

#[test]
fn the_chain2_reader_is_never_polled_faster_than_its_limit() {
    use socer_drivers::plan::{Intervals, Schedule};
    use std::time::Duration;
    let set = builtin();
    let alfa = set.get("sinapsi-alfa").unwrap();
    assert_eq!(alfa.defaults.min_interval_s, 10);
    assert_eq!(alfa.defaults.unit_id, Some(1));
    assert_eq!(alfa.kind.name(), "gateway");
    // A site asking for 2 s still gets 10 s.
    let mut s = Schedule::new(
        alfa,
        Intervals {
            fast: Some(Duration::from_secs(2)),
            counter: Some(Duration::from_secs(2)),
        },
    );
    let all: Vec<usize> = (0..alfa.quantities.len()).collect();
    assert_eq!(s.due(Duration::ZERO), all);
    s.mark_polled(&all, Duration::ZERO);
    assert!(s.due(Duration::from_secs(9)).is_empty());
    assert_eq!(s.due(Duration::from_secs(10)), all);
}

#[test]
fn storage_profiles_are_batteries_and_map_state_of_charge() {
    let set = builtin();
    let batteries: Vec<&str> = set
        .profiles
        .iter()
        .filter(|p| p.kind.name() == "battery")
        .map(|p| p.id.as_str())
        .collect();
    for id in [
        "huawei-luna2000",
        "sungrow-sh-battery",
        "sofar-hyd-battery",
        "solax-hybrid-battery",
        "growatt-hybrid-battery",
        "victron-gx-battery",
    ] {
        assert!(batteries.contains(&id), "{id} not a battery: {batteries:?}");
    }
    assert!(set.profiles.len() >= 24, "{}", set.profiles.len());
}
