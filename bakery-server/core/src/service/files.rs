//! Per-Pi config files (`piConfig/` on the Pi's root disk) and streaming request bodies to disk.

use std::fmt::Display;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::bake::PI_CONFIG_DIR;
use super::{Bakery, ServiceError, io_err};
use crate::domain::names::{Serial, validate_file_name};

/// Why streaming a body to a file stopped.
pub(crate) enum StreamError {
    /// More than the limit arrived.
    TooLarge,
    /// The body broke off.
    Body(String),
    /// Writing failed.
    Io(std::io::Error),
}

/// Streams `body` into a new file at `path`, at most `limit` bytes; returns the length.
/// The file is removed on failure.
pub(crate) async fn stream_to_file<S, E>(
    mut body: S,
    path: &Path,
    limit: u64,
) -> Result<u64, StreamError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: Display,
{
    let result = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await
            .map_err(StreamError::Io)?;
        let mut len: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StreamError::Body(e.to_string()))?;
            len += chunk.len() as u64;
            if len > limit {
                return Err(StreamError::TooLarge);
            }
            file.write_all(&chunk).await.map_err(StreamError::Io)?;
        }
        file.sync_all().await.map_err(StreamError::Io)?;
        Ok(len)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}

impl Bakery {
    /// The `piConfig` dir of a baked Pi's root disk, refusing anything but a plain directory.
    async fn pi_config_dir(&self, serial: &Serial, create: bool) -> Result<PathBuf, ServiceError> {
        let pi = self.pi(serial).await?;
        if pi.state != Some(bakery_client::PiState::Baked) {
            return Err(ServiceError::NotBaked {
                serial: serial.to_string(),
                state: pi.state.map_or("unknown", |s| s.as_str()),
            });
        }
        let root = pi
            .disks
            .first()
            .map(|d| PathBuf::from(&d.location))
            .ok_or_else(|| ServiceError::PiNotInOven(serial.to_string()))?;
        let dir = root.join(PI_CONFIG_DIR);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => Ok(dir),
            Ok(_) => Err(ServiceError::PiConfigNotDir(serial.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                std::fs::create_dir(&dir)
                    .map_err(io_err(format!("cannot create {}", dir.display())))?;
                Ok(dir)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(dir),
            Err(e) => Err(io_err(format!("cannot inspect {}", dir.display()))(e)),
        }
    }

    /// Stores `body` as `piConfig/<name>` on a baked Pi's root disk, atomically.
    pub async fn upload_pi_file<S, E>(
        &self,
        serial: &Serial,
        name: &str,
        body: S,
    ) -> Result<(), ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Display,
    {
        validate_file_name(name)?;
        let dir = self.pi_config_dir(serial, true).await?;
        let tmp = dir.join(format!(".{name}.upload-{}", uuid::Uuid::new_v4()));
        let what = format!("file {name} for pi {serial}");
        match stream_to_file(body, &tmp, super::MAX_PI_FILE).await {
            Ok(_) => {}
            Err(StreamError::TooLarge) => {
                return Err(ServiceError::BodyTooLarge {
                    limit: super::MAX_PI_FILE,
                });
            }
            Err(StreamError::Body(reason)) => return Err(ServiceError::Upload { what, reason }),
            Err(StreamError::Io(e)) => return Err(io_err(format!("cannot write {what}"))(e)),
        }
        let dest = dir.join(name);
        if let Err(e) = std::fs::rename(&tmp, &dest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(format!("cannot store {}", dest.display()))(e));
        }
        tracing::info!(%serial, file = name, "pi config file stored");
        Ok(())
    }

    /// Reads `piConfig/<name>` of a baked Pi (never following a symlink).
    pub async fn download_pi_file(
        &self,
        serial: &Serial,
        name: &str,
    ) -> Result<Vec<u8>, ServiceError> {
        validate_file_name(name)?;
        let dir = self.pi_config_dir(serial, false).await?;
        let path = dir.join(name);
        let (serial, name) = (serial.to_string(), name.to_owned());
        self.blocking(move || {
            let not_found = || ServiceError::PiFileNotFound {
                serial: serial.clone(),
                name: name.clone(),
            };
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            let file = match file {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(not_found()),
                Err(e) => return Err(io_err(format!("cannot open {}", path.display()))(e)),
            };
            let meta = file
                .metadata()
                .map_err(io_err(format!("cannot stat {}", path.display())))?;
            if !meta.is_file() {
                return Err(not_found());
            }
            let mut bytes = Vec::new();
            file.take(super::MAX_PI_FILE + 1)
                .read_to_end(&mut bytes)
                .map_err(io_err(format!("cannot read {}", path.display())))?;
            if bytes.len() as u64 > super::MAX_PI_FILE {
                return Err(ServiceError::BodyTooLarge {
                    limit: super::MAX_PI_FILE,
                });
            }
            Ok(bytes)
        })
        .await
    }
}
