//! The demo's child processes (central hub, site agents): started with their output in log files,
//! tied to the demo's life (they get SIGTERM if the demo dies), stopped with SIGTERM then SIGKILL.
//! Never signals a process it did not start.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A daemon the demo started.
pub struct Daemon {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Daemon {
    /// Start `exe args…`, stdout and stderr appended to `log`.
    pub fn spawn(name: &str, exe: &Path, args: &[&str], log: &Path) -> std::io::Result<Daemon> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        let parent = std::process::id();
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                // If the demo dies without cleaning up (SIGKILL), the kernel stops the child too.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The demo may have died between fork and prctl.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Daemon {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`; waits until it is gone.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
            tracing::warn!(
                "demo: {} did not stop within {grace:?}; killing it",
                self.name
            );
        }
        let _ = self.child.kill().await;
    }
}

/// Stop every daemon at once (each with its own grace period).
pub async fn stop_all(daemons: &mut [Daemon], grace: Duration) {
    let stops = daemons.iter_mut().map(|d| d.stop(grace));
    futures_util::future::join_all(stops).await;
}
