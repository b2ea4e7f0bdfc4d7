//! The boot path over TFTP: [`TftpBootFiles`], the core's [`BootFiles`] as a `bakery-tftp`
//! [`FileProvider`], so the TFTP server answers exactly what `GET /files/...` answers, with the
//! Pi's real address.

use bakery_tftp::{FileProvider, FileSource, Outcome, ReadRequest, Refusal, TransferReport};

use bakery_core::boot::{BootError, BootFile, BootFiles};

/// What a Pi is told (TFTP error 0) when the boot path fails for a reason of the server's.
pub const SERVER_FAULT: &str = "server error, try again";

/// The boot path as the TFTP server's file provider.
#[derive(Debug, Clone)]
pub struct TftpBootFiles(pub BootFiles);

impl FileProvider for TftpBootFiles {
    async fn open(&self, request: &ReadRequest) -> Result<FileSource, Refusal> {
        let peer = Some(request.peer.ip());
        match self.0.open_path(&request.filename, peer).await {
            Ok(BootFile::Bytes(bytes)) => Ok(FileSource::Bytes(bytes.into())),
            Ok(BootFile::File { file, len }) => Ok(FileSource::File { file, len }),
            Err(BootError::NotFound(_)) => Err(Refusal::NotFound),
            Err(BootError::InvalidPath(e)) => Err(Refusal::AccessViolation(e.to_string())),
            Err(BootError::Service(e)) => {
                tracing::error!(file = request.filename, error = %e, "boot file lookup failed");
                // Not "file not found": the file may well be there. The cause stays in the
                // server's log; the Pi (unauthenticated) gets no paths or internals.
                Err(Refusal::Failed(SERVER_FAULT.to_owned()))
            }
        }
    }

    fn finished(&self, report: &TransferReport) {
        self.0.observer().tftp_finished(report);
        match report.outcome {
            Outcome::Sent | Outcome::Unconfirmed => {
                let done = if report.outcome == Outcome::Sent {
                    "tftp transfer done"
                } else {
                    "tftp transfer sent, final ack lost"
                };
                tracing::debug!(
                    file = report.filename,
                    peer = %report.peer,
                    bytes = report.bytes,
                    elapsed = ?report.elapsed,
                    "{done}"
                );
            }
            Outcome::Failed | Outcome::GaveUp => tracing::warn!(
                file = report.filename,
                peer = %report.peer,
                outcome = ?report.outcome,
                "tftp transfer did not complete"
            ),
            Outcome::NotFound | Outcome::Refused | Outcome::Aborted => {}
        }
    }
}
