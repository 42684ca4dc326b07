//! RS-485 mode on a port whose driver does not support it (a pty, like a USB adapter's or a
//! console's): opening fails with an error naming the device and the ioctl, never silently.

mod common;

use std::time::Duration;

use common::SocatPty;
use socer_drivers::transport::{Rs485Settings, RtuLink, SerialSettings};
use socer_drivers::LinkError;

#[tokio::test]
async fn a_pty_refuses_rs485_mode_and_the_open_fails_naming_the_device() {
    let pty = SocatPty::new();
    let mut s = SerialSettings::new(pty.a.clone(), 9600);
    // Without RS-485 mode the same port opens.
    assert!(RtuLink::open(s.clone(), Duration::from_millis(100)).is_ok());
    s.rs485 = Some(Rs485Settings {
        rts_on_send: false,
        delay_before_send_ms: 3,
        delay_after_send_ms: 4,
    });
    match RtuLink::open(s, Duration::from_millis(100)) {
        Err(LinkError::Transport(m)) => {
            assert!(
                m.contains("RS-485 mode") && m.contains(&pty.a) && m.contains("TIOCSRS485"),
                "{m}"
            );
        }
        other => panic!("expected a refused RS-485 mode, got {other:?}"),
    }
}

#[tokio::test]
async fn a_usb_adapter_is_never_opened_in_rs485_mode() {
    let mut s = SerialSettings::new("/dev/ttyUSB9", 9600);
    s.rs485 = Some(Rs485Settings::default());
    match RtuLink::open(s, Duration::from_millis(100)) {
        Err(LinkError::Transport(m)) => {
            // Refused before the open: the error is not "No such file or directory".
            assert!(
                m.contains("USB serial adapter") && m.contains("/dev/ttyUSB9"),
                "{m}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
