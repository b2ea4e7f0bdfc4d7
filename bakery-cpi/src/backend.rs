//! The bakery operations the CPI uses, as a small trait, and its implementation over HTTP.

use std::path::Path;
use std::time::Duration;

use bakery_client::{
    BakeRequest, Bakeform, CreateDiskRequest, Disk, ErrorKind, Metadata, PiInfo, Snapshot,
};

/// A failed bakery operation, reduced to what the CPI decides on.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The server answered with an error status.
    #[error("bakery answered {status} ({kind}): {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// What kind of failure: the server's code, else the status's generic kind.
        kind: ErrorKind,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached or did not answer in time.
    #[error("bakery unreachable: {0}")]
    Unreachable(String),
    /// Anything else (broken reply, unreadable local file).
    #[error("{0}")]
    Other(String),
}

impl BackendError {
    /// A refusal of `kind`, answered with the kind's status.
    pub fn refused(kind: ErrorKind, message: impl Into<String>) -> BackendError {
        BackendError::Status {
            status: kind.status(),
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure the server reported, if it answered.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            BackendError::Status { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether the server reported `kind`, or (a server without codes) the generic kind of its
    /// status ([`ErrorKind::reports`]).
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind().is_some_and(|reported| reported.reports(kind))
    }

    /// Whether the server answered 404 (any kind of "not there").
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::Status { status: 404, .. })
    }

    /// Whether the server could not be reached (retrying may help).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, BackendError::Unreachable(_))
    }
}

/// Shorthand for results of [`Bakery`] operations.
pub type BackendResult<T> = Result<T, BackendError>;

/// Exactly the bakery operations the CPI uses (routes in `/tmp/briefs/api-ext.md`).
pub trait Bakery {
    /// `POST /bakeforms/{name}`: upload an image file (403 when the name exists).
    fn upload_bakeform(&self, name: &str, image: &Path) -> BackendResult<Bakeform>;
    /// `GET /bakeforms/{name}`: whether the bakeform exists.
    fn bakeform_exists(&self, name: &str) -> BackendResult<bool>;
    /// `DELETE /bakeforms/{name}` (404 unknown, 409 in use).
    fn delete_bakeform(&self, name: &str) -> BackendResult<()>;
    /// `POST /fridge`: start baking a Pi (404 no free Pi, 400 unknown bakeform).
    fn bake(&self, request: &BakeRequest) -> BackendResult<PiInfo>;
    /// Wait until the Pi is baked (409 bake failed, timeout → [`BackendError::Unreachable`]).
    fn wait_baked(&self, pi: &str, timeout: Duration) -> BackendResult<PiInfo>;
    /// `DELETE /oven/{pi}`: unbake (403 not baked, 404 unknown).
    fn unbake(&self, pi: &str) -> BackendResult<()>;
    /// `GET /pis/{pi}`: any known Pi (404 unknown).
    fn pi(&self, pi: &str) -> BackendResult<PiInfo>;
    /// `POST /oven/{pi}/powercycle`.
    fn power_cycle(&self, pi: &str) -> BackendResult<()>;
    /// `PUT /oven/{pi}/metadata`.
    fn set_pi_metadata(&self, pi: &str, metadata: &Metadata) -> BackendResult<PiInfo>;
    /// `POST /oven/{pi}/upload/{filename}`: store `piConfig/{filename}` on the Pi's root.
    fn upload_pi_file(&self, pi: &str, filename: &str, bytes: Vec<u8>) -> BackendResult<()>;
    /// `GET /oven/{pi}/download/{filename}` (404 missing).
    fn download_pi_file(&self, pi: &str, filename: &str) -> BackendResult<Vec<u8>>;
    /// `POST /disks`.
    fn create_disk(&self, request: &CreateDiskRequest) -> BackendResult<Disk>;
    /// `GET /disks/{id}` (404 unknown).
    fn disk(&self, id: &str) -> BackendResult<Disk>;
    /// `DELETE /disks/{id}` (200 also when unknown, 409 attached).
    fn delete_disk(&self, id: &str) -> BackendResult<()>;
    /// `POST /oven/{pi}/disks`.
    fn attach_disk(&self, pi: &str, disk: &str) -> BackendResult<()>;
    /// `DELETE /oven/{pi}/disks/{disk}`.
    fn detach_disk(&self, pi: &str, disk: &str) -> BackendResult<()>;
    /// `POST /disks/{id}/resize`.
    fn resize_disk(&self, id: &str, size_mib: i64) -> BackendResult<Disk>;
    /// `PUT /disks/{id}/metadata`.
    fn set_disk_metadata(&self, id: &str, metadata: &Metadata) -> BackendResult<Disk>;
    /// `POST /disks/{id}/snapshots` (404 unknown disk, 507 no space).
    fn snapshot_disk(&self, id: &str, metadata: &Metadata) -> BackendResult<Snapshot>;
    /// `DELETE /snapshots/{id}` (404 unknown).
    fn delete_snapshot(&self, id: &str) -> BackendResult<()>;
}

impl From<bakery_client::Error> for BackendError {
    fn from(error: bakery_client::Error) -> Self {
        match &error {
            bakery_client::Error::Status {
                status, message, ..
            } => BackendError::Status {
                status: *status,
                kind: error.kind().unwrap_or(ErrorKind::Unknown),
                message: message.clone(),
            },
            _ if error.is_unreachable() => BackendError::Unreachable(error.to_string()),
            _ => BackendError::Other(error.to_string()),
        }
    }
}

impl Bakery for bakery_client::blocking::Client {
    fn upload_bakeform(&self, name: &str, image: &Path) -> BackendResult<Bakeform> {
        Ok(bakery_client::blocking::Client::upload_bakeform(
            self, name, image, None,
        )?)
    }

    fn bakeform_exists(&self, name: &str) -> BackendResult<bool> {
        match bakery_client::blocking::Client::bakeform(self, name) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn delete_bakeform(&self, name: &str) -> BackendResult<()> {
        Ok(bakery_client::blocking::Client::delete_bakeform(
            self, name,
        )?)
    }

    fn bake(&self, request: &BakeRequest) -> BackendResult<PiInfo> {
        Ok(bakery_client::blocking::Client::bake(self, request)?)
    }

    fn wait_baked(&self, pi: &str, timeout: Duration) -> BackendResult<PiInfo> {
        Ok(bakery_client::blocking::Client::wait_baked(
            self, pi, timeout,
        )?)
    }

    fn unbake(&self, pi: &str) -> BackendResult<()> {
        Ok(bakery_client::blocking::Client::unbake(self, pi)?)
    }

    fn pi(&self, pi: &str) -> BackendResult<PiInfo> {
        Ok(bakery_client::blocking::Client::any_pi(self, pi)?)
    }

    fn power_cycle(&self, pi: &str) -> BackendResult<()> {
        Ok(bakery_client::blocking::Client::power_cycle(self, pi)?)
    }

    fn set_pi_metadata(&self, pi: &str, metadata: &Metadata) -> BackendResult<PiInfo> {
        Ok(bakery_client::blocking::Client::set_pi_metadata(
            self, pi, metadata,
        )?)
    }

    fn upload_pi_file(&self, pi: &str, filename: &str, bytes: Vec<u8>) -> BackendResult<()> {
        Ok(bakery_client::blocking::Client::upload_pi_file(
            self, pi, filename, bytes,
        )?)
    }

    fn download_pi_file(&self, pi: &str, filename: &str) -> BackendResult<Vec<u8>> {
        Ok(bakery_client::blocking::Client::download_pi_file(
            self, pi, filename,
        )?)
    }

    fn create_disk(&self, request: &CreateDiskRequest) -> BackendResult<Disk> {
        Ok(bakery_client::blocking::Client::create_disk(self, request)?)
    }

    fn disk(&self, id: &str) -> BackendResult<Disk> {
        Ok(bakery_client::blocking::Client::disk(self, id)?)
    }

    fn delete_disk(&self, id: &str) -> BackendResult<()> {
        Ok(bakery_client::blocking::Client::delete_disk(self, id)?)
    }

    fn attach_disk(&self, pi: &str, disk: &str) -> BackendResult<()> {
        Ok(bakery_client::blocking::Client::attach_disk(
            self, pi, disk,
        )?)
    }

    fn detach_disk(&self, pi: &str, disk: &str) -> BackendResult<()> {
        Ok(bakery_client::blocking::Client::detach_disk(
            self, pi, disk,
        )?)
    }

    fn resize_disk(&self, id: &str, size_mib: i64) -> BackendResult<Disk> {
        Ok(bakery_client::blocking::Client::resize_disk(
            self, id, size_mib,
        )?)
    }

    fn set_disk_metadata(&self, id: &str, metadata: &Metadata) -> BackendResult<Disk> {
        Ok(bakery_client::blocking::Client::set_disk_metadata(
            self, id, metadata,
        )?)
    }

    fn snapshot_disk(&self, id: &str, metadata: &Metadata) -> BackendResult<Snapshot> {
        Ok(bakery_client::blocking::Client::snapshot_disk(
            self, id, metadata,
        )?)
    }

    fn delete_snapshot(&self, id: &str) -> BackendResult<()> {
        Ok(bakery_client::blocking::Client::delete_snapshot(self, id)?)
    }
}
