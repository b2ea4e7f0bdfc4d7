//! Power: the PPI protocol (an external executable, like a BOSH CPI) behind the [`Power`] trait.
//!
//! Bakery runs `<ppi> -c <config>`, writes `{"piId": "<serial>", "action": "poweron"}` (or
//! `poweroff`) to its stdin and expects stdout to be exactly `ok` (a trailing newline is
//! tolerated) and stderr empty. Anything else is a failure quoting that output.
//!
//! The optional `status` action asks what the Pi's power is: stdout exactly `on`, `off` or
//! `unknown` (a trailing newline tolerated), stderr empty. A PPI that does not know the action
//! fails it, and the caller takes that as `unknown`.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use bakery_client::PowerState;
use serde::Serialize;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// What to do with a Pi's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    /// Switch it on.
    PowerOn,
    /// Switch it off.
    PowerOff,
}

impl PowerAction {
    /// The action's name in the PPI protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::PowerOn => "poweron",
            PowerAction::PowerOff => "poweroff",
        }
    }
}

/// A failure to switch a Pi's power.
#[derive(Debug, Error)]
pub enum PowerError {
    /// The PPI could not be started.
    #[error("cannot run ppi {ppi} for {action} of pi {serial}: {source}")]
    Spawn {
        /// The executable.
        ppi: PathBuf,
        /// The action.
        action: &'static str,
        /// The Pi.
        serial: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The PPI did not finish in time and was killed.
    #[error("ppi {ppi} timed out after {timeout:?} on {action} of pi {serial} and was killed")]
    Timeout {
        /// The executable.
        ppi: PathBuf,
        /// The action.
        action: &'static str,
        /// The Pi.
        serial: String,
        /// The limit.
        timeout: Duration,
    },
    /// The PPI answered something other than `ok` (or, to `status`, `on`, `off` or `unknown`).
    #[error(
        "ppi {ppi} failed on {action} of pi {serial} ({status}): stdout {stdout:?}, stderr {stderr:?}"
    )]
    Failed {
        /// The executable.
        ppi: PathBuf,
        /// The action.
        action: &'static str,
        /// The Pi.
        serial: String,
        /// Its exit status.
        status: String,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// A boxed future returned by [`Power`] (keeps the trait usable as `dyn Power`).
pub type PowerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PowerError>> + Send + 'a>>;

/// A boxed future returned by [`Power::status`].
pub type StatusFuture<'a> =
    Pin<Box<dyn Future<Output = Result<PowerState, PowerError>> + Send + 'a>>;

/// The protocol's name of the status action.
pub const STATUS_ACTION: &str = "status";

/// Switches Pis on and off and tells their power state.
pub trait Power: Send + Sync {
    /// Runs `action` for the Pi `serial`.
    fn power<'a>(&'a self, serial: &'a str, action: PowerAction) -> PowerFuture<'a>;
    /// Asks what the power of the Pi `serial` is; an error when the backend cannot answer
    /// (an old PPI without the `status` action).
    fn status<'a>(&'a self, serial: &'a str) -> StatusFuture<'a>;
    /// Whether power is really managed (false for [`NoPower`]).
    fn is_managed(&self) -> bool;
}

/// Power is not managed: every action succeeds without doing anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPower;

impl Power for NoPower {
    fn power<'a>(&'a self, serial: &'a str, action: PowerAction) -> PowerFuture<'a> {
        Box::pin(async move {
            tracing::debug!(
                serial,
                action = action.as_str(),
                "power not managed, nothing to do"
            );
            Ok(())
        })
    }

    fn status<'a>(&'a self, _serial: &'a str) -> StatusFuture<'a> {
        Box::pin(async { Ok(PowerState::Unknown) })
    }

    fn is_managed(&self) -> bool {
        false
    }
}

/// The external-executable PPI.
#[derive(Debug, Clone)]
pub struct ProcessPpi {
    program: PathBuf,
    config: Option<PathBuf>,
    timeout: Duration,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PpiRequest<'a> {
    pi_id: &'a str,
    action: &'a str,
}

impl ProcessPpi {
    /// A PPI running `program -c config` with `timeout` per call.
    pub fn new(program: PathBuf, config: Option<PathBuf>, timeout: Duration) -> ProcessPpi {
        ProcessPpi {
            program,
            config,
            timeout,
        }
    }

    /// Runs the PPI with `action` for `serial`; its stdout (newline stripped) when it exits
    /// 0 with nothing on stderr and `accept` takes that answer.
    async fn run<T>(
        &self,
        serial: &str,
        action: &'static str,
        accept: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, PowerError> {
        let mut cmd = Command::new(&self.program);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawn_err = |source| PowerError::Spawn {
            ppi: self.program.clone(),
            action,
            serial: serial.to_owned(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let request = serde_json::to_vec(&PpiRequest {
            pi_id: serial,
            action,
        })
        .unwrap_or_default();
        let talk = async move {
            if let Some(mut stdin) = child.stdin.take() {
                // A PPI that does not read its stdin is not an error in itself: its answer counts.
                let _ = stdin.write_all(&request).await;
                let _ = stdin.shutdown().await;
            }
            child.wait_with_output().await
        };
        let output = match tokio::time::timeout(self.timeout, talk).await {
            Err(_) => {
                return Err(PowerError::Timeout {
                    ppi: self.program.clone(),
                    action,
                    serial: serial.to_owned(),
                    timeout: self.timeout,
                });
            }
            Ok(result) => result.map_err(spawn_err)?,
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let answer = stdout.strip_suffix('\n').unwrap_or(&stdout);
        let accepted = (output.status.success() && stderr.is_empty())
            .then(|| accept(answer))
            .flatten();
        accepted.ok_or_else(|| PowerError::Failed {
            ppi: self.program.clone(),
            action,
            serial: serial.to_owned(),
            status: output.status.to_string(),
            stdout,
            stderr,
        })
    }
}

impl Power for ProcessPpi {
    fn power<'a>(&'a self, serial: &'a str, action: PowerAction) -> PowerFuture<'a> {
        Box::pin(self.run(serial, action.as_str(), |answer| {
            (answer == "ok").then_some(())
        }))
    }

    fn status<'a>(&'a self, serial: &'a str) -> StatusFuture<'a> {
        Box::pin(self.run(serial, STATUS_ACTION, |answer| answer.parse().ok()))
    }

    fn is_managed(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PPI script answering `body` (shell) in a temp dir kept alive by the returned guard.
    ///
    /// A child `sh` writes the file, so this test process never holds it open for writing: a
    /// write descriptor here could be inherited by a child another test forks at that moment,
    /// and running the script would then fail with ETXTBSY ("text file busy").
    fn script(body: &str) -> (tempfile::TempDir, ProcessPpi) {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ppi.sh");
        let mut writer = std::process::Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = writer.stdin.take().unwrap();
        write!(stdin, "#!/bin/sh\ninput=$(cat)\n{body}\n").unwrap();
        drop(stdin);
        assert!(
            writer.wait().unwrap().success(),
            "writing {}",
            path.display()
        );
        let ppi = ProcessPpi::new(path, None, Duration::from_millis(500));
        (dir, ppi)
    }

    #[tokio::test]
    async fn status_answers_on_off_and_unknown_with_or_without_a_newline() {
        for (body, state) in [
            ("printf on", PowerState::On),
            ("echo off", PowerState::Off),
            ("echo unknown", PowerState::Unknown),
            (
                r#"case "$input" in *'"action":"status"'*) printf on ;; esac"#,
                PowerState::On,
            ),
        ] {
            let (_dir, ppi) = script(body);
            assert_eq!(ppi.status("1a2b3c4d").await.unwrap(), state, "{body}");
        }
    }

    #[tokio::test]
    async fn a_status_answer_other_than_a_state_is_a_failure_naming_the_output() {
        for (body, names) in [
            ("printf ok", "stdout \"ok\""),
            ("echo 1", "stdout \"1\\n\""),
            ("printf on; echo flaky >&2", "stderr \"flaky\\n\""),
            ("echo 'unknown action status' >&2; exit 1", "exit status: 1"),
        ] {
            let (_dir, ppi) = script(body);
            let err = ppi.status("1a2b3c4d").await.unwrap_err().to_string();
            assert!(err.contains("status of pi 1a2b3c4d"), "{body}: {err}");
            assert!(err.contains(names), "{body}: {err}");
        }
        let (_dir, ppi) = script("sleep 5; printf on");
        let err = ppi.status("1a2b3c4d").await.unwrap_err();
        assert!(matches!(err, PowerError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn power_still_wants_exactly_ok() {
        let (_dir, ppi) = script("printf ok");
        ppi.power("1a2b3c4d", PowerAction::PowerOn).await.unwrap();
        let (_dir, ppi) = script("printf on");
        let err = ppi.power("1a2b3c4d", PowerAction::PowerOff).await;
        assert!(err.is_err());
    }
}
