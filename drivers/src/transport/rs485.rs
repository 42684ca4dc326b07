//! RS-485 mode of a UART (a Raspberry Pi's own serial port behind a transceiver HAT): the kernel
//! drives the transceiver's direction pin from RTS around each frame when the port is put in
//! RS-485 mode with the `TIOCSRS485` ioctl (Linux `Documentation/driver-api/serial/serial-rs485.rst`).
//!
//! It must never be applied to a USB adapter (ttyUSB*, ttyACM*: they switch direction in
//! hardware and reject or misread the ioctl), and a failure is an error naming the device, never
//! ignored: the technician asked for RS-485 mode, and a line without it garbles every frame.

use std::path::{Path, PathBuf};

/// The largest RTS delay the kernel accepts (`RS485_MAX_RTS_DELAY` in serial_core.c clamps to
/// 100 ms).
pub const MAX_DELAY_MS: u32 = 100;

/// How the kernel drives the transceiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rs485Settings {
    /// RTS is active (high) while sending, the usual wiring of a transceiver's DE pin; `false`
    /// inverts it (RTS active after sending).
    pub rts_on_send: bool,
    /// Milliseconds between raising RTS and the first bit.
    pub delay_before_send_ms: u32,
    /// Milliseconds between the last bit and dropping RTS.
    pub delay_after_send_ms: u32,
}

impl Default for Rs485Settings {
    fn default() -> Self {
        Rs485Settings {
            rts_on_send: true,
            delay_before_send_ms: 0,
            delay_after_send_ms: 0,
        }
    }
}

/// Why RS-485 mode was not set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rs485Error {
    #[error("{path} is a USB serial adapter ({device}): it switches direction in hardware; remove `rs485` from this bus")]
    UsbAdapter { path: String, device: String },
    #[error("RS-485 delays must be 0..={MAX_DELAY_MS} ms (before {before}, after {after})")]
    Delay { before: u32, after: u32 },
    #[error("{path}: the driver refused RS-485 mode (TIOCSRS485: {reason}); is this a UART with RS-485 support (not a pty or USB adapter)?")]
    Refused { path: String, reason: String },
}

/// The kernel's `struct serial_rs485` (include/uapi/linux/serial.h): 32 bytes.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SerialRs485 {
    flags: u32,
    delay_rts_before_send: u32,
    delay_rts_after_send: u32,
    padding: [u32; 5],
}

const SER_RS485_ENABLED: u32 = 1 << 0;
const SER_RS485_RTS_ON_SEND: u32 = 1 << 1;
const SER_RS485_RTS_AFTER_SEND: u32 = 1 << 2;

/// The device name behind `path` (symlinks such as `/dev/serial/by-id/…` resolved when they
/// exist) if it is a USB serial adapter: ttyUSB* (FTDI, CH340, CP210x…), ttyACM* (CDC-ACM), or a
/// `/dev/serial/by-id|by-path` name that says usb.
pub fn usb_adapter(path: &Path) -> Option<String> {
    // A link whose target is missing (adapter unplugged) still names it.
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| match std::fs::read_link(path) {
        Ok(t) if t.is_relative() => path.parent().map(|d| d.join(&t)).unwrap_or(t),
        Ok(t) => t,
        Err(_) => PathBuf::from(path),
    });
    for p in [path, resolved.as_path()] {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let by_link = p
            .parent()
            .is_some_and(|d| d.ends_with("serial/by-id") || d.ends_with("serial/by-path"));
        if name.starts_with("ttyUSB")
            || name.starts_with("ttyACM")
            || (by_link && name.to_ascii_lowercase().contains("usb"))
        {
            return Some(resolved.display().to_string());
        }
    }
    None
}

/// Check the settings against the device path before opening it.
pub fn check(path: &str, s: &Rs485Settings) -> Result<(), Rs485Error> {
    if let Some(device) = usb_adapter(Path::new(path)) {
        return Err(Rs485Error::UsbAdapter {
            path: path.to_string(),
            device,
        });
    }
    if s.delay_before_send_ms > MAX_DELAY_MS || s.delay_after_send_ms > MAX_DELAY_MS {
        return Err(Rs485Error::Delay {
            before: s.delay_before_send_ms,
            after: s.delay_after_send_ms,
        });
    }
    Ok(())
}

/// Put the open port `fd` (at `path`, for messages) in RS-485 mode.
#[cfg(target_os = "linux")]
pub fn apply(
    fd: std::os::unix::io::RawFd,
    path: &str,
    s: &Rs485Settings,
) -> Result<(), Rs485Error> {
    check(path, s)?;
    let mut conf = SerialRs485 {
        flags: SER_RS485_ENABLED
            | if s.rts_on_send {
                SER_RS485_RTS_ON_SEND
            } else {
                SER_RS485_RTS_AFTER_SEND
            },
        delay_rts_before_send: s.delay_before_send_ms,
        delay_rts_after_send: s.delay_after_send_ms,
        padding: [0; 5],
    };
    // SAFETY: TIOCSRS485 reads a `struct serial_rs485` (32 bytes, laid out as `SerialRs485`) from
    // the pointer, which is valid for the whole call; a bad fd or an unsupported device returns -1.
    let rc = unsafe {
        libc::ioctl(
            fd,
            libc::TIOCSRS485 as _,
            std::ptr::addr_of_mut!(conf) as *mut libc::c_void,
        )
    };
    if rc != 0 {
        return Err(Rs485Error::Refused {
            path: path.to_string(),
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    // The driver writes back what it applied; a driver without RS-485 support may clear the flag.
    if conf.flags & SER_RS485_ENABLED == 0 {
        return Err(Rs485Error::Refused {
            path: path.to_string(),
            reason: "the driver left RS-485 disabled".into(),
        });
    }
    tracing::info!(
        device = path,
        rts_on_send = conf.flags & SER_RS485_RTS_ON_SEND != 0,
        delay_before_send_ms = conf.delay_rts_before_send,
        delay_after_send_ms = conf.delay_rts_after_send,
        "serial port in RS-485 mode"
    );
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn apply(_fd: i32, path: &str, s: &Rs485Settings) -> Result<(), Rs485Error> {
    check(path, s)?;
    Err(Rs485Error::Refused {
        path: path.to_string(),
        reason: "RS-485 mode is set only on Linux".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_adapters_are_told_from_uarts_by_their_device_name() {
        for p in [
            "/dev/ttyUSB0",
            "/dev/ttyUSB12",
            "/dev/ttyACM0",
            "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K-if00-port0",
            "/dev/serial/by-path/platform-3f980000.usb-usb-0:1.2:1.0-port0",
        ] {
            assert!(usb_adapter(Path::new(p)).is_some(), "{p}");
        }
        for p in ["/dev/ttyAMA0", "/dev/ttyS0", "/dev/ttySC0", "/dev/serial0"] {
            assert_eq!(usb_adapter(Path::new(p)), None, "{p}");
        }
    }

    #[test]
    fn a_link_to_a_usb_adapter_is_refused_under_its_own_name() {
        let dir = tempfile_dir();
        let link = dir.join("rs485-line");
        // A symlink whose target is named like a USB adapter (the target need not exist).
        std::os::unix::fs::symlink("/dev/ttyUSB7", &link).unwrap();
        let err = check(&link.display().to_string(), &Rs485Settings::default()).unwrap_err();
        assert!(matches!(err, Rs485Error::UsbAdapter { .. }), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn delays_beyond_the_kernel_limit_are_refused() {
        let s = Rs485Settings {
            delay_after_send_ms: MAX_DELAY_MS + 1,
            ..Rs485Settings::default()
        };
        assert_eq!(
            check("/dev/ttyAMA0", &s),
            Err(Rs485Error::Delay {
                before: 0,
                after: MAX_DELAY_MS + 1
            })
        );
        let s = Rs485Settings {
            delay_before_send_ms: MAX_DELAY_MS,
            delay_after_send_ms: MAX_DELAY_MS,
            rts_on_send: false,
        };
        assert_eq!(check("/dev/ttyAMA0", &s), Ok(()));
    }

    #[test]
    fn the_kernel_struct_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<SerialRs485>(), 32);
    }

    fn tempfile_dir() -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!("socer-rs485-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
