//! The nfs-ganesha backend: bakery's exports file holds ganesha `EXPORT` blocks (the operator's
//! `ganesha.conf` `%include`s it), rewritten atomically, then ganesha is made to reload: SIGHUP
//! to the pid in its pid file, or the operator's `--exportfs-cmd`.

use std::path::PathBuf;
use std::time::Duration;

use crate::domain::exports::{self, ExportEntry, ExportScope};

use super::{ExportError, ExportFuture, Exporter, run_command, write_exports};

/// How ganesha is told that the exports changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GaneshaReload {
    /// SIGHUP to the pid written in this file (ganesha re-reads its exports on SIGHUP).
    Signal(PathBuf),
    /// Run this command (program and arguments, no shell); empty: do nothing.
    Command(Vec<String>),
}

impl GaneshaReload {
    /// `command` split on whitespace, no shell.
    pub fn command(command: &str) -> GaneshaReload {
        GaneshaReload::Command(command.split_whitespace().map(str::to_owned).collect())
    }
}

/// nfs-ganesha: an `EXPORT` blocks file plus a reload.
#[derive(Debug, Clone)]
pub struct GaneshaExporter {
    file: PathBuf,
    reload: GaneshaReload,
    id_base: u16,
    timeout: Duration,
}

impl GaneshaExporter {
    /// Writes `file` and reloads ganesha with `reload`; export ids start at `id_base`.
    pub fn new(file: PathBuf, reload: GaneshaReload, id_base: u16) -> GaneshaExporter {
        GaneshaExporter {
            file,
            reload,
            id_base,
            timeout: Duration::from_secs(60),
        }
    }

    async fn run(&self, content: &str) -> Result<(), ExportError> {
        write_exports(&self.file, content).await?;
        match &self.reload {
            GaneshaReload::Signal(pid_file) => signal_reload(pid_file).await,
            GaneshaReload::Command(command) => run_command(command, self.timeout).await,
        }
    }
}

/// Reads ganesha's pid and sends it SIGHUP, unless that pid is some other program (a stale pid
/// file after ganesha died and its pid was reused: SIGHUP would kill most programs).
async fn signal_reload(pid_file: &std::path::Path) -> Result<(), ExportError> {
    let failed = |reason: String| ExportError::Signal {
        pid_file: pid_file.to_owned(),
        reason,
    };
    let text = tokio::fs::read_to_string(pid_file)
        .await
        .map_err(|e| failed(format!("cannot read it: {e}")))?;
    let pid: libc::pid_t = text
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 1)
        .ok_or_else(|| failed(format!("{:?} is not a process id", text.trim())))?;
    if let Ok(comm) = tokio::fs::read_to_string(format!("/proc/{pid}/comm")).await {
        let comm = comm.trim();
        if !comm.contains("ganesha") {
            return Err(failed(format!(
                "process {pid} is {comm:?}, not nfs-ganesha (stale pid file?)"
            )));
        }
    }
    // SAFETY: kill(2) takes plain integers; a pid > 1 never addresses a process group.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(failed(format!("kill -HUP {pid}: {err}")));
    }
    tracing::debug!(pid, "nfs-ganesha signalled to reload its exports");
    Ok(())
}

impl Exporter for GaneshaExporter {
    fn render(
        &self,
        entries: &[ExportEntry],
        _options: &str,
        scope: ExportScope,
    ) -> Result<String, ExportError> {
        Ok(exports::render_ganesha(entries, scope, self.id_base)?)
    }

    fn publish<'a>(&'a self, content: &'a str) -> ExportFuture<'a> {
        Box::pin(self.run(content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signals_the_pid_in_the_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in whose process name is ganesha's (the name comes from the file name).
        let fake = dir.path().join("ganesha.nfsd");
        std::fs::copy("/bin/sleep", &fake).unwrap();
        let mut child = std::process::Command::new(&fake).arg("30").spawn().unwrap();
        let pid_file = dir.path().join("ganesha.pid");
        std::fs::write(&pid_file, format!("{}\n", child.id())).unwrap();
        let exporter = GaneshaExporter::new(
            dir.path().join("bakery.conf"),
            GaneshaReload::Signal(pid_file.clone()),
            1000,
        );
        exporter.publish("# nothing\n").await.unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGHUP));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("bakery.conf")).unwrap(),
            "# nothing\n"
        );

        // Another program behind the pid is left alone.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&pid_file, other.id().to_string()).unwrap();
        let err = exporter.publish("x").await.unwrap_err().to_string();
        assert!(err.contains("not nfs-ganesha"), "{err}");
        assert!(other.try_wait().unwrap().is_none(), "sleep was signalled");
        other.kill().unwrap();
        other.wait().unwrap();

        std::fs::write(&pid_file, "garbage").unwrap();
        let err = exporter.publish("x").await.unwrap_err().to_string();
        assert!(err.contains("is not a process id"), "{err}");
        std::fs::remove_file(&pid_file).unwrap();
        let err = exporter.publish("x").await.unwrap_err().to_string();
        assert!(
            err.contains("ganesha.pid") && err.contains("cannot read"),
            "{err}"
        );
    }
}
