//! Fuzz targets: what a hostile device or file can hand the drivers, as functions of bytes.
//!
//! Each target takes arbitrary bytes, feeds them to one entry point that meets untrusted input
//! (a serial frame, the registers a device answers, a SunSpec model chain, a profile file) and
//! checks the invariants that must hold whatever the input. They are called by the property
//! tests in `hub/tests/fuzz_targets.rs` (briefly, in CI) and by the coverage-guided harness in
//! `fuzz/` (`tools/fuzz`, long runs). A panic or a broken invariant is a bug.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use futures_util::FutureExt;

use crate::bus::{read_once, MeterConfig};
use crate::decode;
use crate::link::{Link, LinkError};
use crate::plan::CostModel;
use crate::plan::Intervals;
use crate::profile::{Function, Profile, ProfileSet};
use crate::sunspec::{self, ModelSet};
use crate::transport::rtu;
use crate::ManualClock;

/// A device whose answers come from the fuzz input: each request takes one control byte (answer,
/// exception, timeout, damaged frame, wrong length) and then as many words as it needs.
struct BytesLink {
    data: VecDeque<u8>,
}

impl BytesLink {
    fn word(&mut self) -> u16 {
        let hi = self.data.pop_front().unwrap_or(0);
        let lo = self.data.pop_front().unwrap_or(0);
        u16::from_be_bytes([hi, lo])
    }
}

impl Link for BytesLink {
    async fn read_registers(
        &mut self,
        _unit: u8,
        _function: Function,
        _address: u16,
        count: u16,
    ) -> Result<Vec<u16>, LinkError> {
        let Some(control) = self.data.pop_front() else {
            return Err(LinkError::Timeout { timeout_ms: 1 });
        };
        match control % 8 {
            0 => Err(LinkError::Exception { code: control / 8 }),
            1 => Err(LinkError::Timeout { timeout_ms: 1 }),
            2 => Err(LinkError::Frame("fuzz".into())),
            3 => {
                // A wrong number of words: a link must never hand this on, but a decoder must
                // survive it.
                let n = usize::from(control / 8);
                Ok((0..n).map(|_| self.word()).collect())
            }
            _ => Ok((0..count).map(|_| self.word()).collect()),
        }
    }
}

/// The built-in profiles, parsed once (parsing them is not what is being fuzzed).
fn builtin() -> Option<&'static ProfileSet> {
    static SET: OnceLock<Option<ProfileSet>> = OnceLock::new();
    SET.get_or_init(|| ProfileSet::builtin().ok()).as_ref()
}

fn models() -> Option<&'static ModelSet> {
    static SET: OnceLock<Option<ModelSet>> = OnceLock::new();
    SET.get_or_init(|| ModelSet::builtin().ok()).as_ref()
}

fn clock() -> ManualClock {
    ManualClock::new(DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap_or_default())
}

/// The serial framing and the answer classification of the RTU master.
pub fn rtu_frame(data: &[u8]) {
    let (head, buf) = data.split_at(data.len().min(4));
    let unit = head.first().copied().unwrap_or(1);
    let fc = head.get(1).copied().unwrap_or(3);
    let count = u16::from_be_bytes([
        head.get(2).copied().unwrap_or(0),
        head.get(3).copied().unwrap_or(1),
    ]);
    let mut rest = buf;
    while !rest.is_empty() {
        match rtu::frame_len(rest) {
            Ok(None) | Err(_) => break,
            Ok(Some(n)) => {
                assert!(
                    n >= 5 && n <= rest.len(),
                    "frame of {n} bytes in {}",
                    rest.len()
                );
                assert_eq!(
                    rtu::crc16(&rest[..n - 2]).to_le_bytes(),
                    [rest[n - 2], rest[n - 1]]
                );
                if let rtu::Answer::Words(w) = rtu::answer(&rest[..n], unit, fc, count) {
                    assert_eq!(w.len(), usize::from(count));
                }
                rest = &rest[n..];
            }
        }
    }
}

/// A built-in profile's meter answering arbitrary registers (and errors): one full readout, as
/// `socer read` and the bus scheduler do it. Every value reported must be finite and within the
/// physical bounds of its quantity.
pub fn meter_answers(data: &[u8]) {
    let Some(set) = builtin() else {
        return;
    };
    let ids = set.ids();
    if ids.is_empty() || data.is_empty() {
        return;
    }
    let Some(profile) = set.get(ids[usize::from(data[0]) % ids.len()]) else {
        return;
    };
    let meter = MeterConfig {
        name: "fuzz".into(),
        unit: 1,
        profile: Arc::new(profile.clone()),
        reverse: data.len() > 1 && data[1] & 1 == 1,
        intervals: Intervals::default(),
    };
    let mut link = BytesLink {
        data: data.iter().skip(2).copied().collect(),
    };
    let cost = if data.len() > 1 && data[1] & 2 == 2 {
        CostModel::rtu(9600)
    } else {
        CostModel::tcp()
    };
    let clock = clock();
    let Some(outcome) = read_once(&mut link, "fuzz", &meter, &cost, &clock).now_or_never() else {
        panic!("a readout over an in-memory link must complete without waiting");
    };
    let v = &outcome.reading.values;
    for x in [v.p_w, v.e_imp_wh, v.e_exp_wh, v.f_hz, v.pf]
        .into_iter()
        .flatten()
    {
        assert!(x.is_finite(), "reported a non-finite value {x}");
    }
}

/// Register words decoded by every quantity map of every built-in profile.
pub fn register_words(data: &[u8]) {
    let Some(set) = builtin() else {
        return;
    };
    let words: Vec<u16> = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
        .collect();
    for id in set.ids() {
        let Some(p) = set.get(id) else { continue };
        for q in &p.quantities {
            if let Ok(x) = decode::decode_checked(&words, q, &p.defaults) {
                assert!(x.is_finite());
                let (lo, hi) = decode::bounds(q.name);
                assert!(
                    x >= lo && x <= hi,
                    "{x} outside [{lo}, {hi}] for {:?}",
                    q.name
                );
            }
        }
        if let Some(sf) = words.first() {
            let _ = decode::apply_scale_factor(1.0, *sf as i16);
        }
    }
    let _ = sunspec::decode_string(&words);
}

/// A SunSpec device whose marker, model chain and common model come from the input: discovery
/// must end (an error is fine) and resolution must never panic.
pub fn sunspec_chain(data: &[u8]) {
    let mut link = BytesLink {
        data: data.iter().copied().collect(),
    };
    let Some(found) = sunspec::discover(&mut link, 1).now_or_never() else {
        panic!("discovery over an in-memory link must complete without waiting");
    };
    if let (Ok(device), Some(set)) = (found, models()) {
        let want = data.first().map(|b| u16::from(*b) + 100);
        let _ = sunspec::resolve(&device, set, want);
        let _ = sunspec::resolve(&device, set, None);
    }
}

/// A profile file: any bytes give a profile or `FILE:LINE:COL` errors.
pub fn profile_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Profile::check("fuzz.toml", &text) {
        Ok(p) => {
            for q in &p.quantities {
                let _ = q.label();
                let _ = q.last_address();
            }
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
}

/// A fuzz target: its name and the function that takes the fuzzer's bytes.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name (for the harness and the tests).
pub const TARGETS: &[Target] = &[
    ("rtu_frame", rtu_frame),
    ("meter_answers", meter_answers),
    ("register_words", register_words),
    ("sunspec_chain", sunspec_chain),
    ("profile_file", profile_file),
];
