//! Power: the PPI protocol (an external executable, like a BOSH CPI) behind the [`Power`] trait.
//!
//! Bakery runs `<ppi> -c <config>`, writes `{"piId": "<serial>", "action": "poweron"}` (or
//! `poweroff`) to its stdin and expects stdout to be exactly `ok` (a trailing newline is
//! tolerated) and stderr empty. Anything else is a failure quoting that output.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

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
    /// The PPI answered something other than `ok`.
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

/// Switches Pis on and off.
pub trait Power: Send + Sync {
    /// Runs `action` for the Pi `serial`.
    fn power<'a>(&'a self, serial: &'a str, action: PowerAction) -> PowerFuture<'a>;
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
    action: PowerAction,
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

    async fn run(&self, serial: &str, action: PowerAction) -> Result<(), PowerError> {
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
            action: action.as_str(),
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
                    action: action.as_str(),
                    serial: serial.to_owned(),
                    timeout: self.timeout,
                });
            }
            Ok(result) => result.map_err(spawn_err)?,
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let answer = stdout.strip_suffix('\n').unwrap_or(&stdout);
        if output.status.success() && answer == "ok" && stderr.is_empty() {
            Ok(())
        } else {
            Err(PowerError::Failed {
                ppi: self.program.clone(),
                action: action.as_str(),
                serial: serial.to_owned(),
                status: output.status.to_string(),
                stdout,
                stderr,
            })
        }
    }
}

impl Power for ProcessPpi {
    fn power<'a>(&'a self, serial: &'a str, action: PowerAction) -> PowerFuture<'a> {
        Box::pin(self.run(serial, action))
    }

    fn is_managed(&self) -> bool {
        true
    }
}
