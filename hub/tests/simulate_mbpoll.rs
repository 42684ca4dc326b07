//! Interop: mbpoll, a Modbus master we did not write, reads the real `socer simulate` binary over
//! TCP and over RTU (a socat pty pair) and gets the values the simulator was told to show.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{require, socat_pty_pair, Reaped};

const WAIT: Duration = Duration::from_secs(10);

/// Start `socer simulate ARGS` and wait (bounded) for the line saying where it serves.
fn simulate(args: &[&str]) -> (Reaped, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_socer"))
        .arg("simulate")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("socer starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let child = Reaped(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("serving ") => return (child, line),
            Ok(_) => continue,
            Err(e) => panic!("socer simulate did not say where it serves within {WAIT:?}: {e}"),
        }
    }
}

/// Run mbpoll once (`-1`) with a bounded wait.
fn mbpoll(args: &[&str]) -> Output {
    let child = Command::new("mbpoll")
        .args(args)
        .arg("-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mbpoll starts");
    let mut child = Reaped(child);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("mbpoll status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "mbpoll {args:?} did not finish within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The output is small: it fits the pipe buffers, so reading after exit cannot block.
    let mut out = Output {
        status,
        stdout: vec![],
        stderr: vec![],
    };
    if let Some(mut s) = child.0.stdout.take() {
        s.read_to_end(&mut out.stdout).expect("mbpoll stdout");
    }
    if let Some(mut s) = child.0.stderr.take() {
        s.read_to_end(&mut out.stderr).expect("mbpoll stderr");
    }
    out
}

/// The values mbpoll printed, in order (`[13]: \t1500`; `[40083]: \t65535 (-1)` for a
/// negative 16-bit register, of which the first number is taken).
fn values(out: &Output) -> Vec<f64> {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mbpoll failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split_once(':'))
        .map(|(_, v)| {
            let first = v.split_whitespace().next().unwrap_or_default();
            first.parse::<f64>().unwrap_or_else(|_| {
                i64::from_str_radix(first.trim_start_matches("0x"), 16)
                    .map(|x| x as f64)
                    .unwrap_or_else(|_| panic!("not a number in `{v}`"))
            })
        })
        .collect()
}

/// One float input register (big-endian words), at a 1-based reference as mbpoll counts.
fn read_float(target: &[&str], unit: u8, reference: u16) -> Output {
    let unit = unit.to_string();
    let reference = reference.to_string();
    let mut args: Vec<&str> = vec![
        "-a", &unit, "-r", &reference, "-t", "3:float", "-B", "-c", "1",
    ];
    args.extend(target);
    mbpoll(&args)
}

#[test]
fn mbpoll_reads_the_simulator_over_tcp() {
    require("mbpoll");
    let (_sim, line) = simulate(&[
        "--model",
        "eastron-sdm120",
        "--tcp",
        "127.0.0.1:0",
        "--noise",
        "0",
        "--power-w",
        "1500",
        "--import-wh",
        "123456",
        "--device",
        "2:eastron-sdm630:-4000",
    ]);
    let addr = line
        .split_whitespace()
        .nth(4)
        .expect("serving Modbus TCP on ADDR");
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    let target = ["-m", "tcp", "-p", port, host];

    // SDM120 (Eastron's input-register table, 1-based references): 30013 power, 30001 voltage,
    // 30071 frequency, 30031 power factor, 30073 import kWh.
    assert_eq!(values(&read_float(&target, 1, 13)), vec![1500.0]);
    assert_eq!(values(&read_float(&target, 1, 1)), vec![230.0]);
    assert_eq!(values(&read_float(&target, 1, 71)), vec![50.0]);
    assert_eq!(values(&read_float(&target, 1, 31)), vec![0.95]);
    let import_kwh = values(&read_float(&target, 1, 73))[0];
    // 123.456 kWh at start; 1.5 kW for the few seconds of this test adds well under 0.01 kWh.
    assert!(
        (123.456..123.466).contains(&import_kwh),
        "import {import_kwh} kWh"
    );
    // Unit 2, an SDM630 exporting 4 kW: total power at 30053.
    assert_eq!(values(&read_float(&target, 2, 53)), vec![-4000.0]);
}

fn pty_pair(dir: &Path) -> (Reaped, PathBuf, PathBuf) {
    let (a, b) = (dir.join("sim"), dir.join("master"));
    let child = socat_pty_pair(&a, &b, WAIT);
    (child, a, b)
}

#[test]
fn mbpoll_reads_the_simulator_over_rtu_and_other_units_stay_silent() {
    require("mbpoll");
    let dir = tempfile::tempdir().expect("temp dir");
    let (_socat, sim_end, master_end) = pty_pair(dir.path());
    let (_sim, _) = simulate(&[
        "--model",
        "eastron-sdm120",
        "--serial",
        sim_end.to_str().expect("utf-8 path"),
        "--baud",
        "9600",
        "--unit",
        "7",
        "--noise",
        "0",
        "--power-w",
        "-2000",
        "--export-wh",
        "5000",
    ]);
    let dev = master_end.to_str().expect("utf-8 path");
    let target = ["-m", "rtu", "-b", "9600", "-P", "none", dev];
    assert_eq!(values(&read_float(&target, 7, 13)), vec![-2000.0]);
    assert_eq!(values(&read_float(&target, 7, 1)), vec![230.0]);
    let export_kwh = values(&read_float(&target, 7, 75))[0];
    assert!((5.0..5.01).contains(&export_kwh), "export {export_kwh} kWh");
    // Nobody is unit 8: a real RTU bus gives no answer, so mbpoll times out.
    let silent = read_float(&target, 8, 13);
    assert!(!silent.status.success());
    assert!(
        String::from_utf8_lossy(&silent.stderr).contains("timed out"),
        "{silent:?}"
    );
    // And the simulator still answers afterwards.
    assert_eq!(values(&read_float(&target, 7, 13)), vec![-2000.0]);
}

#[test]
fn mbpoll_sees_the_exception_a_fault_injects_over_an_even_parity_line() {
    require("mbpoll");
    let dir = tempfile::tempdir().expect("temp dir");
    let (_socat, sim_end, master_end) = pty_pair(dir.path());
    let (_sim, line) = simulate(&[
        "--model",
        "eastron-sdm120",
        "--serial",
        sim_end.to_str().expect("utf-8 path"),
        "--baud",
        "19200",
        "--parity",
        "even",
        "--fault",
        "1:exception=4",
    ]);
    assert!(line.contains("19200 baud, 11 bits per character"), "{line}");
    let dev = master_end.to_str().expect("utf-8 path");
    let out = read_float(&["-m", "rtu", "-b", "19200", "-P", "even", dev], 1, 13);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Slave device or server failure"), "{err}");
}

#[test]
fn the_reset_fault_sends_the_counters_back_to_zero_once() {
    require("mbpoll");
    let (_sim, line) = simulate(&[
        "--model",
        "eastron-sdm120",
        "--tcp",
        "127.0.0.1:0",
        "--noise",
        "0",
        "--power-w",
        "1000",
        "--import-wh",
        "7000",
        "--fault",
        "reset-after=2",
    ]);
    let addr = line
        .split_whitespace()
        .nth(4)
        .expect("serving Modbus TCP on ADDR");
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    let target = ["-m", "tcp", "-p", port, host];
    let before = values(&read_float(&target, 1, 73))[0];
    assert!(
        (7.0..7.001).contains(&before),
        "import {before} kWh before the reset"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let after = values(&read_float(&target, 1, 73))[0];
    // 1 kW for at most a second since the reset: under 0.0003 kWh.
    assert!(
        (0.0..0.0003).contains(&after),
        "import {after} kWh after the reset"
    );
}

#[test]
fn mbpoll_finds_the_sunspec_marker_and_scaled_inverter_power() {
    require("mbpoll");
    let (_sim, line) = simulate(&[
        "--model",
        "sunspec",
        "--sunspec-model",
        "103",
        "--tcp",
        "127.0.0.1:0",
        "--noise",
        "0",
        "--power-w",
        "-2500",
    ]);
    let addr = line
        .split_whitespace()
        .nth(4)
        .expect("serving Modbus TCP on ADDR");
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    let holding = |start: &str, count: &str, kind: &str| {
        mbpoll(&[
            "-m", "tcp", "-p", port, "-a", "1", "-0", "-r", start, "-t", kind, "-c", count, host,
        ])
    };
    // "SunS" at 40000, then the common model (id 1), at 40070 model 103 of length 50.
    assert_eq!(
        values(&holding("40000", "3", "4:hex")),
        vec![0x5375 as f64, 0x6E53 as f64, 1.0]
    );
    assert_eq!(values(&holding("40070", "2", "4")), vec![103.0, 50.0]);
    // SunSpec model 103 (offsets from the model id): W at 14 with W_SF at 15, Hz at 16 with
    // Hz_SF at 17. An inverter producing 2.5 kW shows W = +2500 (SunSpec counts production
    // positive; our p_w is -2500), 50.00 Hz as 5000 × 10^-2.
    assert_eq!(
        values(&holding("40084", "4", "4")),
        vec![2500.0, 0.0, 5000.0, 65534.0]
    );
}
