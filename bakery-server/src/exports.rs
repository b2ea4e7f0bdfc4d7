//! NFS exports: the [`Exporter`] trait and the kernel backend, which rewrites bakery's exports
//! file atomically and runs the configured command (default `exportfs -ra`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use thiserror::Error;
use tokio::process::Command;

use crate::fsutil;

/// A failure to publish the exports.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The exports file could not be written.
    #[error("cannot write exports file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The command could not be run.
    #[error("cannot run exports command {command:?}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The command failed.
    #[error("exports command {command:?} failed ({status}): {output:?}")]
    Failed {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The command hung.
    #[error("exports command {command:?} timed out after {timeout:?}")]
    Timeout {
        /// The command.
        command: String,
        /// The limit.
        timeout: Duration,
    },
}

/// A boxed future returned by [`Exporter`].
pub type ExportFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ExportError>> + Send + 'a>>;

/// Publishes the exports file content.
pub trait Exporter: Send + Sync {
    /// Makes `content` the exports in force.
    fn publish<'a>(&'a self, content: &'a str) -> ExportFuture<'a>;
}

/// The kernel NFS server: an exports file plus a reload command.
#[derive(Debug, Clone)]
pub struct KernelExporter {
    file: PathBuf,
    command: Vec<String>,
    timeout: Duration,
}

impl KernelExporter {
    /// Writes `file` and runs `command` (split on whitespace, no shell; empty: none).
    pub fn new(file: PathBuf, command: &str) -> KernelExporter {
        KernelExporter {
            file,
            command: command.split_whitespace().map(str::to_owned).collect(),
            timeout: Duration::from_secs(60),
        }
    }

    async fn run(&self, content: &str) -> Result<(), ExportError> {
        let file = self.file.clone();
        let bytes = content.as_bytes().to_vec();
        let written = tokio::task::spawn_blocking(move || fsutil::write_atomic(&file, &bytes))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        written.map_err(|source| ExportError::Write {
            path: self.file.clone(),
            source,
        })?;
        let Some((program, args)) = self.command.split_first() else {
            return Ok(());
        };
        let command = self.command.join(" ");
        let run = Command::new(program).args(args).kill_on_drop(true).output();
        let output = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| ExportError::Timeout {
                command: command.clone(),
                timeout: self.timeout,
            })?
            .map_err(|source| ExportError::Spawn {
                command: command.clone(),
                source,
            })?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            return Err(ExportError::Failed {
                command,
                status: output.status.to_string(),
                output: text.trim().to_owned(),
            });
        }
        Ok(())
    }
}

impl Exporter for KernelExporter {
    fn publish<'a>(&'a self, content: &'a str) -> ExportFuture<'a> {
        Box::pin(self.run(content))
    }
}
