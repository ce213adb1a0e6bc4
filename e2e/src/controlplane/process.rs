//! One process of the control plane: its output goes to a log file in the state dir, and
//! it is stopped the way a kubelet stops a container (SIGTERM, a grace period, SIGKILL).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::Error;

/// How many lines of a process's log an error quotes: enough for the fatal message and
/// the flag or file it names, short enough to read in a test failure.
const LOG_TAIL_LINES: usize = 15;

/// A running control-plane process.
#[derive(Debug)]
pub(crate) struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program args` with stdout and stderr appended to `log`. The child is
    /// killed if this value is dropped (a panicking test does not leak an apiserver).
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self, Error> {
        let out = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Spawn {
                program: program.to_path_buf(),
                source: e,
            })?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started");
        Ok(Self { name, child, log })
    }

    /// The exit status, if the process has already stopped.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The error for a process that stopped while it should be serving.
    pub(crate) fn exited_error(&self, status: ExitStatus) -> Error {
        Error::Exited {
            name: self.name,
            status,
            log: self.log.clone(),
            tail: log_tail(&self.log),
        }
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILLs.
    pub(crate) async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
            tracing::warn!(name = self.name, "did not stop on SIGTERM; killing");
        }
        let _ = self.child.kill().await;
    }
}

/// The error lines of a log (klog's `E`/`F` lines, etcd's error and fatal JSON lines),
/// then its last lines: Go servers often log the fatal reason before a burst of
/// shutdown noise, so the tail alone can miss it. Empty if the log cannot be read.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let errors: Vec<&str> = lines.iter().copied().filter(|l| is_error(l)).collect();
    let errors = &errors[errors.len().saturating_sub(LOG_TAIL_LINES)..];
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!(
        "errors:\n{}\nlast lines:\n{}",
        errors.join("\n"),
        tail.join("\n")
    )
}

fn is_error(line: &str) -> bool {
    let klog = matches!(line.as_bytes(), [b'E' | b'F', d, ..] if d.is_ascii_digit());
    klog || line.contains(r#""level":"error""#) || line.contains(r#""level":"fatal""#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klog_and_etcd_errors_are_recognised_and_info_is_not() {
        assert!(is_error(
            "E1201 22:53:50.376418   10916 run.go:72] \"command failed\""
        ));
        assert!(is_error("F1201 22:53:50.376418   1 server.go:1] boom"));
        assert!(is_error(
            r#"{"level":"fatal","msg":"listen tcp: address in use"}"#
        ));
        assert!(!is_error(
            "I1201 22:53:42.908982   10814 handler.go:309] Adding"
        ));
        assert!(!is_error("Error is a word, not a klog prefix"));
    }
}
