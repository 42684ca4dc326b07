//! The opt-in RS-485 mode of a serial bus, through the real binaries: `socer check` refuses it on a
//! USB adapter, and the agent on a port whose driver refuses `TIOCSRS485` (a pty) logs it with
//! the bus and the device, polls nothing on that bus and keeps polling the others.

mod common;
mod site_common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, socat_pty_pair};
use site_common::{eventually, Agent, Broker, COMMUNITY, KEY, SITE};

fn site_config(dir: &std::path::Path, broker_port: u16, web_port: u16, serial: &str) -> String {
    format!(
        "[site]\nid = \"{SITE}\"\ncommunity = \"{COMMUNITY}\"\nclock = \"trust\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nkey_file = \"site.key\"\n\n\
         [storage]\npath = \"{}\"\n\n[web]\nlisten = \"127.0.0.1:{web_port}\"\n\n\
         [[bus]]\nname = \"sim\"\nsimulated = true\n\n\
         [[bus]]\nname = \"hat\"\nserial = \"{serial}\"\nbaud = 9600\n\
         rs485 = {{ rts_on_send = true, delay_before_send_ms = 1, delay_after_send_ms = 2 }}\n\n\
         [[meter]]\nname = \"m1\"\nbus = \"sim\"\nunit = 1\nmodel = \"eastron-sdm630\"\nrole = \"grid\"\ninterval = \"200ms\"\n\n\
         [[meter]]\nname = \"m2\"\nbus = \"hat\"\nunit = 2\nmodel = \"eastron-sdm630\"\nrole = \"consumption\"\n",
        dir.join("data").display()
    )
}

fn check(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_socer"))
        .arg("check")
        .arg(path)
        .output()
        .expect("run socer check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_refuses_rs485_mode_on_usb_adapters_and_delays_beyond_the_kernel_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("site.key"), KEY).expect("key");
    let path = dir.path().join("site.toml");
    let uart = site_config(dir.path(), 1883, 8080, "/dev/ttyAMA0");
    std::fs::write(&path, &uart).expect("write");
    let (code, err) = check(&path);
    assert_eq!(code, 0, "{err}");

    for usb in [
        "/dev/ttyUSB0",
        "/dev/ttyACM1",
        "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K-if00-port0",
    ] {
        std::fs::write(&path, site_config(dir.path(), 1883, 8080, usb)).expect("write");
        let (code, err) = check(&path);
        assert_eq!(code, 2, "{usb}: {err}");
        assert!(
            err.contains("bus \"hat\": rs485:") && err.contains("USB serial adapter"),
            "{usb}: {err}"
        );
    }
    // A symlink of the site's own naming that points at a USB adapter.
    let link = dir.path().join("rs485-line");
    std::os::unix::fs::symlink("/dev/ttyUSB3", &link).expect("symlink");
    std::fs::write(
        &path,
        site_config(dir.path(), 1883, 8080, &link.display().to_string()),
    )
    .expect("write");
    let (code, err) = check(&path);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/dev/ttyUSB3"), "{err}");

    std::fs::write(
        &path,
        uart.replace("delay_after_send_ms = 2", "delay_after_send_ms = 101"),
    )
    .expect("write");
    let (code, err) = check(&path);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("0..=100 ms"), "{err}");

    std::fs::write(
        &path,
        uart.replace("rts_on_send = true", "rts_on_sned = true"),
    )
    .expect("write");
    assert_eq!(check(&path).0, 2, "an unknown rs485 key is refused");

    let tcp = uart.replace(
        "serial = \"/dev/ttyAMA0\"\nbaud = 9600\n",
        "tcp = \"127.0.0.1:502\"\n",
    );
    std::fs::write(&path, tcp).expect("write");
    let (code, err) = check(&path);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rs485 is only for a serial bus"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_refusing_rs485_mode_stops_its_bus_loudly_and_the_other_buses_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("pty-a"), dir.path().join("pty-b"));
    let _pty = socat_pty_pair(&a, &b, Duration::from_secs(10));
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let web_port = free_port();
    std::fs::write(dir.path().join("site.key"), KEY).expect("key");
    let cfg = dir.path().join("site.toml");
    std::fs::write(
        &cfg,
        site_config(dir.path(), port, web_port, &a.display().to_string()),
    )
    .expect("config");
    let log = dir.path().join("agent.log");
    let mut agent = Agent::start(&cfg, web_port, &log);
    agent.wait_web();
    let device = a.display().to_string();
    let mut last = None;
    let refused = eventually(Duration::from_secs(30), || {
        let h = agent.health();
        let m1_ok = h
            .as_ref()
            .and_then(|h| h["meters"]["m1"]["reads_ok"].as_u64())
            .unwrap_or(0);
        let m2_err = h
            .as_ref()
            .and_then(|h| h["meters"]["m2"]["last_error"].as_str().map(str::to_string))
            .unwrap_or_default();
        last = h;
        m1_ok >= 3 && m2_err.contains("TIOCSRS485")
    })
    .await;
    assert!(refused, "health: {last:?}");
    let h = last.unwrap_or_default();
    let m2_err = h["meters"]["m2"]["last_error"].as_str().unwrap_or_default();
    assert!(
        m2_err.contains("bus hat") && m2_err.contains(&device),
        "{m2_err}"
    );
    assert_eq!(h["meters"]["m2"]["reads_ok"].as_u64(), Some(0), "{h}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines().any(|l| l.contains("ERROR")
            && l.contains("bus hat")
            && l.contains(&device)
            && l.contains("TIOCSRS485")),
        "{text}"
    );
    assert!(
        agent.child.try_wait().ok().flatten().is_none(),
        "the agent must keep running"
    );
    let (_, clean) = agent.terminate();
    assert!(clean);
}
