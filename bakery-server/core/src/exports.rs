//! NFS exports: the [`Exporter`] trait and its backends. The kernel backend rewrites bakery's
//! exports file atomically and runs the configured command (default `exportfs -ra`); the
//! nfs-ganesha backend ([`GaneshaExporter`]) writes `EXPORT` blocks and makes ganesha reload.

mod ganesha;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use thiserror::Error;
use tokio::process::Command;

use crate::domain::exports::{self, ExportEntry, ExportScope, RenderError};
use crate::fsutil;

pub use ganesha::{GaneshaExporter, GaneshaReload};

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
    /// The exports could not be rendered for the backend.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// nfs-ganesha could not be told to reload.
    #[error("cannot signal nfs-ganesha to reload (pid file {pid_file}): {reason}")]
    Signal {
        /// The pid file read.
        pid_file: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A boxed future returned by [`Exporter`].
pub type ExportFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ExportError>> + Send + 'a>>;

/// An NFS server backend: renders the exports for the inventory and puts them in force.
pub trait Exporter: Send + Sync {
    /// The exports file content for `entries`: kernel `exports(5)` lines unless a backend says
    /// otherwise (`options` are the kernel export options).
    fn render(
        &self,
        entries: &[ExportEntry],
        options: &str,
        scope: ExportScope,
    ) -> Result<String, ExportError> {
        Ok(exports::render(entries, options, scope))
    }

    /// Makes `content` the exports in force.
    fn publish<'a>(&'a self, content: &'a str) -> ExportFuture<'a>;
}

/// Writes `content` to `file` atomically (temp name, then rename).
async fn write_exports(file: &Path, content: &str) -> Result<(), ExportError> {
    let path = file.to_owned();
    let bytes = content.as_bytes().to_vec();
    let written = tokio::task::spawn_blocking(move || fsutil::write_atomic(&path, &bytes))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r);
    written.map_err(|source| ExportError::Write {
        path: file.to_owned(),
        source,
    })
}

/// Runs `command` (program and arguments; nothing when empty), failing on a non-zero exit.
async fn run_command(command: &[String], timeout: Duration) -> Result<(), ExportError> {
    let Some((program, args)) = command.split_first() else {
        return Ok(());
    };
    let line = command.join(" ");
    let run = Command::new(program).args(args).kill_on_drop(true).output();
    let output = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| ExportError::Timeout {
            command: line.clone(),
            timeout,
        })?
        .map_err(|source| ExportError::Spawn {
            command: line.clone(),
            source,
        })?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        return Err(ExportError::Failed {
            command: line,
            status: output.status.to_string(),
            output: text.trim().to_owned(),
        });
    }
    Ok(())
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
        write_exports(&self.file, content).await?;
        run_command(&self.command, self.timeout).await
    }
}

impl Exporter for KernelExporter {
    fn publish<'a>(&'a self, content: &'a str) -> ExportFuture<'a> {
        Box::pin(self.run(content))
    }
}
