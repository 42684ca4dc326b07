//! Every fuzz target (`socer::fuzz` and `socer_drivers::fuzz`) run briefly: every seed of `fuzz/corpus/`,
//! then random and mutated inputs. Long coverage-guided runs: `tools/fuzz` (BENCHMARKS.md).
//! `SOCER_FUZZ_CASES` sets the number of generated cases per target (default 1000).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use socer::fuzz::TARGETS;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                out.push(b);
            }
        }
    }
    out
}

fn cases() -> u32 {
    std::env::var("SOCER_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

/// Seeds, then random bytes, then seeds with random bytes flipped, inserted and cut.
fn run(name: &str, f: fn(&[u8])) {
    let seeds = corpus(name);
    for s in &seeds {
        f(s);
    }
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..512), |b| {
            f(&b);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    if seeds.is_empty() {
        return;
    }
    let mutated = (
        0..seeds.len(),
        proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..8),
    );
    runner
        .run(&mutated, |(i, edits)| {
            let mut b = seeds[i].clone();
            for (at, byte, op) in edits {
                let at = if b.is_empty() {
                    0
                } else {
                    usize::from(at) % b.len()
                };
                match op {
                    0 if !b.is_empty() => b[at] = byte,
                    1 => b.insert(at.min(b.len()), byte),
                    _ if !b.is_empty() => {
                        b.remove(at);
                    }
                    _ => {}
                }
            }
            f(&b);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name} (mutated seeds): {e}"));
}

#[test]
fn every_hub_fuzz_target_survives_its_corpus_and_random_input() {
    for (name, f) in TARGETS {
        run(name, *f);
    }
}

#[test]
fn every_drivers_fuzz_target_survives_its_corpus_and_random_input() {
    for (name, f) in socer_drivers::fuzz::TARGETS {
        run(name, *f);
    }
}

/// Every value line of both example configs, each given every kind of hostile value.
#[test]
fn every_config_value_survives_hostile_values() {
    // One value per class: huge, beyond u64/i64, negative, NaN/inf, a duration that overflows,
    // a negative duration, an empty and a mistyped value, a comma-joined URL, a control byte.
    let values = [
        "1e30",
        "18446744073709551615.0",
        "-9223372036854775809",
        "-1",
        "nan",
        "-inf",
        "\"100000000000000000000s\"",
        "\"-5s\"",
        "\"1e400ms\"",
        "\"\"",
        "[1, 2]",
        "{ a = 1 }",
        "\"mqtt://a:1883,b:1884\"",
        "\"\\u0000\"",
    ];
    for example in socer::fuzz::EXAMPLES {
        for line in socer::fuzz::assignment_lines(example) {
            for v in values {
                socer::fuzz::config_value_at(example, line, v);
            }
        }
    }
}
