//! Every built-in profile, simulated: what the device serves decodes (with the poller's checked
//! decode) to the device's state, to the resolution of the register.

use std::sync::Arc;
use std::time::Duration;

use socer_drivers::decode::decode_checked;
use socer_drivers::profile::{DeviceKind, Function, ProfileSet, ValueType};
use socer_drivers::sim::{NoisyPower, PhysicsConfig, SimDevice};
use socer_drivers::ManualClock;

mod sim_support;
use sim_support::t0;

fn read(dev: &SimDevice, function: Function, address: u16, count: u16) -> Vec<u16> {
    let fc = if function == Function::Holding { 3 } else { 4 };
    let mut pdu = vec![fc];
    pdu.extend_from_slice(&address.to_be_bytes());
    pdu.extend_from_slice(&count.to_be_bytes());
    let reply = dev.respond(&pdu).pdu.expect("an answer");
    assert_eq!(
        reply[0],
        fc,
        "exception {:?} at {function:?} {address:#x}",
        reply.get(1)
    );
    reply[2..]
        .chunks(2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .collect()
}

#[test]
fn every_builtin_profile_serves_values_the_poller_decodes_to_the_state() {
    let set = ProfileSet::builtin().expect("built-in profiles load");
    assert!(set.profiles.len() >= 8, "{:?}", set.ids());
    for profile in &set.profiles {
        let clock = ManualClock::new(t0());
        // A generator, or a register that can only show production (scale < 0 on p_w).
        let produces = profile
            .quantities
            .iter()
            .any(|q| q.name == socer_drivers::Quantity::PW && q.scale < 0.0);
        let power_w = if profile.kind == DeviceKind::Inverter || produces {
            -4321.5
        } else {
            2345.6
        };
        let config = PhysicsConfig {
            import_wh: 1_234_567.0,
            export_wh: 76_543.0,
            ..PhysicsConfig::default()
        };
        let source = Box::new(NoisyPower::new(power_w, 0.02, 5));
        let dev = SimDevice::from_profile(profile, Arc::new(clock.clone()), source, config);
        clock.advance(Duration::from_secs(3 * 3600 + 17));
        let state = dev.values();
        for q in &profile.quantities {
            let function = q.resolved_function(&profile.defaults);
            let words = read(&dev, function, q.address, q.value_type.words());
            let got = decode_checked(&words, q, &profile.defaults)
                .unwrap_or_else(|e| panic!("{} {}: {e}", profile.id, q.label()));
            let want = state
                .get(q.name, q.resolved_phase())
                .expect("the state has every quantity");
            let resolution = match q.value_type {
                ValueType::F32 => want.abs() * 1e-7,
                ValueType::F64 => want.abs() * 1e-15,
                _ => q.scale.abs() / 2.0,
            };
            assert!(
                (got - want).abs() <= resolution * 1.0001 + 1e-9,
                "{} {} at {:#x}: served {got}, state {want}",
                profile.id,
                q.label(),
                q.address
            );
        }
    }
}
