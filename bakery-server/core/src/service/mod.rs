//! The bakery service: the inventory's operations over the store, power, exports and the file
//! system. HTTP handlers and the boot path call it; it knows nothing of HTTP.

mod bake;
mod bakeforms;
mod cloudinit;
mod disks;
mod files;
mod pool;
mod power;
mod repair;
mod snapshots;

pub use bakeforms::UploadHead;
pub use power::PowerSummary;
pub use repair::{INTERRUPTED_IMPORT, RepairReport};

use std::collections::HashSet;
use std::fmt::Display;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bakery_client::{Bakeform, Disk, PiInfo, PiModel, PiState};
use thiserror::Error;
use tokio::sync::{Notify, watch};

use crate::db::{BakeformRow, DbError, DiskRow, PiRow, Store};
use crate::domain::disks::DiskRuleError;
use crate::domain::exports::ExportScope;
use crate::domain::names::{BakeformName, DiskId, NameError, Serial, SnapshotId};
use crate::events::EventKind;
use crate::exports::{ExportError, Exporter};
use crate::fsutil;
use crate::imaging::{CloneStrategy, ImagingError};
use crate::observe::Observer;
use crate::ppi::{Power, PowerAction, PowerError};
use crate::settings::Settings;

/// Longest a long-poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// How long a long-poll waits unless told.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// Largest file accepted into a Pi's `piConfig/`.
pub const MAX_PI_FILE: u64 = 64 << 20;

/// Everything a service operation can fail with; mapped to HTTP statuses in one place
/// (`http::error`).
#[derive(Debug, Error)]
pub enum ServiceError {
    /// A name from the request is not valid.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A request body is larger than allowed.
    #[error("request body larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// No such Pi.
    #[error("pi {0} not found")]
    PiNotFound(String),
    /// The Pi is known but not in the oven.
    #[error("pi {0} is not in the oven")]
    PiNotInOven(String),
    /// No baked Pi network-booted from the address asking for its cloud-init data.
    #[error("no cloud-init {file} for {peer}: no baked pi booted from that address")]
    CloudInitNotFound {
        /// The file asked for.
        file: &'static str,
        /// The caller's address.
        peer: std::net::IpAddr,
    },
    /// A cloud-init file with no default that the Pi's operator did not set.
    #[error("pi {serial} has no cloud-init {file}")]
    CloudInitNotSet {
        /// The Pi.
        serial: String,
        /// The file.
        file: &'static str,
    },
    /// The Pi is not baked.
    #[error("pi {serial} is {state}, not baked")]
    NotBaked {
        /// The Pi.
        serial: String,
        /// Its state.
        state: &'static str,
    },
    /// No Pi in the fridge.
    #[error("no available Pi found")]
    NoFreePi,
    /// No Pi in the fridge meets a bake's constraints.
    #[error("no available Pi found matching {0}")]
    NoMatchingPi(String),
    /// A bake failed (reported to long-polls).
    #[error("bake of pi {serial} failed: {reason}")]
    BakeFailed {
        /// The Pi.
        serial: String,
        /// Why.
        reason: String,
    },
    /// A bake names a bakeform that does not exist.
    #[error("unknown bakeform {0}")]
    UnknownBakeform(String),
    /// A bake names a bakeform that is not ready.
    #[error("bakeform {name} is not ready ({state})")]
    BakeformNotReady {
        /// The bakeform.
        name: String,
        /// Its state, with the import's error when it failed (`failed: <why>`).
        state: String,
    },
    /// No such bakeform.
    #[error("bakeform {0} not found")]
    BakeformNotFound(String),
    /// The bakeform name is taken.
    #[error("bakeform {0} already exists")]
    BakeformExists(String),
    /// The bakeform is used by a Pi in the oven.
    #[error("bakeform {name} is in use by pi {serial}")]
    BakeformInUse {
        /// The bakeform.
        name: String,
        /// A Pi using it.
        serial: String,
    },
    /// The bakeform is still being imported.
    #[error("bakeform {0} is being imported")]
    BakeformImporting(String),
    /// The uploaded image is larger than `--max-image-size`.
    #[error("image for bakeform {name} is larger than the limit of {limit} bytes")]
    ImageTooLarge {
        /// The bakeform.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// The uploaded image cannot be imported.
    #[error("invalid image for bakeform {name}: {reason}")]
    BadImage {
        /// The bakeform.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The upload's body sent nothing for `--upload-idle-timeout`.
    #[error("upload of bakeform {name} stalled: no data for {after:?} (--upload-idle-timeout)")]
    UploadStalled {
        /// The bakeform.
        name: String,
        /// The idle timeout.
        after: Duration,
    },
    /// `--max-concurrent-uploads` uploads are running already.
    #[error(
        "too many uploads at once: {limit} are running (--max-concurrent-uploads), retry later"
    )]
    TooManyUploads {
        /// The limit.
        limit: usize,
    },
    /// A failed upload, told without the server's own paths; answered like its cause.
    #[error("upload of bakeform {name}: {reason}")]
    UploadFailed {
        /// The bakeform.
        name: String,
        /// The cause's message with server paths replaced by what they were.
        reason: String,
        /// The cause, which decides the status.
        cause: Box<ServiceError>,
    },
    /// The upload broke off.
    #[error("upload of {what} failed: {reason}")]
    Upload {
        /// What was uploaded.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// No such disk.
    #[error("disk {0} not found")]
    DiskNotFound(String),
    /// The disk is not attached to that Pi.
    #[error("disk {disk} is not attached to pi {serial}")]
    DiskNotAttached {
        /// The disk.
        disk: String,
        /// The Pi.
        serial: String,
    },
    /// The disk is attached.
    #[error("disk {disk} is attached to pi {serial}")]
    DiskAttached {
        /// The disk.
        disk: String,
        /// The Pi.
        serial: String,
    },
    /// The root disk cannot be detached.
    #[error("disk {disk} is the root disk of pi {serial} and cannot be detached")]
    RootDisk {
        /// The disk.
        disk: String,
        /// The Pi.
        serial: String,
    },
    /// No such snapshot.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    /// A restore names a snapshot of another disk.
    #[error("snapshot {snapshot} is not a snapshot of disk {disk}")]
    SnapshotOfOtherDisk {
        /// The snapshot.
        snapshot: String,
        /// The disk being restored.
        disk: String,
    },
    /// A Pi's root disk is a tree, not an image: it has no snapshots.
    #[error(
        "disk {disk} is the root disk of pi {serial}: only data disks (disk.img) have snapshots"
    )]
    RootDiskSnapshot {
        /// The disk.
        disk: String,
        /// Its Pi.
        serial: String,
    },
    /// A disk size rule is broken.
    #[error(transparent)]
    DiskRule(#[from] DiskRuleError),
    /// A new or grown disk would promise more space than the data dir has: the sparse parts
    /// of existing disks, what is asked for and `--min-free-space` together exceed the free
    /// space.
    #[error(
        "not enough space for {what}: {} needed, {} already promised to sparse disks, {} free, {} must stay free (--min-free-space)",
        fsutil::human_bytes(*.needed), fsutil::human_bytes(*.promised), fsutil::human_bytes(*.free), fsutil::human_bytes(*.minimum)
    )]
    DiskOvercommit {
        /// What was being made.
        what: String,
        /// Bytes it needs.
        needed: u64,
        /// Bytes existing disks may still grow into (apparent size minus allocated).
        promised: u64,
        /// Bytes free now.
        free: u64,
        /// Bytes that must stay free.
        minimum: u64,
    },
    /// Making something would take the data dir below `--min-free-space`.
    #[error(
        "not enough free space on the data dir {dir} for {what}: {} free, {} needed, {} must stay free (--min-free-space)",
        fsutil::human_bytes(*.free), fsutil::human_bytes(*.needed), fsutil::human_bytes(*.minimum)
    )]
    BelowMinFreeSpace {
        /// What was to be made.
        what: String,
        /// Bytes free now.
        free: u64,
        /// Bytes it needs (estimated).
        needed: u64,
        /// Bytes that must stay free.
        minimum: u64,
        /// The data dir.
        dir: PathBuf,
    },
    /// The data dir filled up while something was being written (ENOSPC).
    #[error("no space left on the data dir {dir} while {what}: {reason}")]
    NoSpaceLeft {
        /// What was being made.
        what: String,
        /// The data dir.
        dir: PathBuf,
        /// The failure as the writer reported it.
        reason: String,
    },
    /// No such file in the Pi's `piConfig/`.
    #[error("file {name} not found in piConfig of pi {serial}")]
    PiFileNotFound {
        /// The Pi.
        serial: String,
        /// The file.
        name: String,
    },
    /// The Pi's `piConfig` is not a plain directory (e.g. a symlink planted by the Pi).
    #[error("piConfig of pi {0} is not a plain directory")]
    PiConfigNotDir(String),
    /// No such boot file (or the Pi may not boot).
    #[error("boot file {0} not found")]
    BootFileNotFound(String),
    /// A database failure.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The event log could not be read.
    #[error(transparent)]
    Events(#[from] crate::events::EventsError),
    /// A file-system failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Cloning or importing failed for a reason on the server's side.
    #[error(transparent)]
    Imaging(#[from] ImagingError),
    /// The PPI failed.
    #[error(transparent)]
    Power(Box<PowerError>),
    /// Publishing exports failed.
    #[error(transparent)]
    Export(Box<ExportError>),
    /// Publishing the NBD roots or making a root image failed.
    #[error(transparent)]
    Nbd(#[from] crate::nbd::NbdError),
    /// A background task died.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl From<PowerError> for ServiceError {
    fn from(e: PowerError) -> ServiceError {
        ServiceError::Power(Box::new(e))
    }
}

impl From<ExportError> for ServiceError {
    fn from(e: ExportError) -> ServiceError {
        ServiceError::Export(Box::new(e))
    }
}

/// Runs a state-changing operation in its own task, so it runs to completion even when the
/// caller stops waiting (an HTTP client that goes away must not leave a Pi half unbaked).
pub async fn to_completion<T, F>(operation: F) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, ServiceError>> + Send + 'static,
{
    tokio::spawn(operation)
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io_err(context: impl Display) -> impl FnOnce(std::io::Error) -> ServiceError {
    move |source| ServiceError::Io {
        context: context.to_string(),
        source,
    }
}

/// The data directory's layout.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<data>`.
    pub data: PathBuf,
    /// `<data>/bakeforms`.
    pub bakeforms: PathBuf,
    /// `<data>/disks`.
    pub disks: PathBuf,
    /// `<data>/snapshots` (not exported: a Pi never reaches its disks' snapshots).
    pub snapshots: PathBuf,
    /// `<data>/tmp`.
    pub tmp: PathBuf,
    /// `<data>/trash`.
    pub trash: PathBuf,
}

impl Layout {
    /// The layout under `data`.
    pub fn new(data: &Path) -> Layout {
        Layout {
            data: data.to_owned(),
            bakeforms: data.join("bakeforms"),
            disks: data.join("disks"),
            snapshots: data.join("snapshots"),
            tmp: data.join("tmp"),
            trash: data.join("trash"),
        }
    }

    /// Creates the directories.
    pub fn create(&self) -> std::io::Result<()> {
        for dir in [
            &self.data,
            &self.bakeforms,
            &self.disks,
            &self.snapshots,
            &self.tmp,
            &self.trash,
        ] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    /// `<data>/bakeforms/<name>` (a checked name: one plain path component).
    pub fn bakeform(&self, name: &BakeformName) -> PathBuf {
        self.bakeforms.join(name.as_str())
    }

    /// `<data>/disks/<id>` (a checked id: one plain path component).
    pub fn disk(&self, id: &DiskId) -> PathBuf {
        self.disks.join(id.as_str())
    }

    /// `<data>/snapshots/<disk id>`: the snapshots of one disk.
    pub fn disk_snapshots(&self, disk: &DiskId) -> PathBuf {
        self.snapshots.join(disk.as_str())
    }

    /// `<data>/snapshots/<disk id>/<snapshot id>.img`.
    pub fn snapshot(&self, disk: &DiskId, snapshot: &SnapshotId) -> PathBuf {
        self.disk_snapshots(disk).join(format!("{snapshot}.img"))
    }
}

/// The bakery service. Shared as `Arc<Bakery>`.
pub struct Bakery {
    config: Settings,
    layout: Layout,
    store: Arc<Store>,
    power: Arc<dyn Power>,
    exporter: Arc<dyn Exporter>,
    export_lock: tokio::sync::Mutex<()>,
    changes: watch::Sender<u64>,
    trash_ready: Arc<Notify>,
    clone_strategy: CloneStrategy,
    /// Complete roots the warm pool keeps per ready bakeform (the configured or default size).
    warm_pool: usize,
    cmdline_template: Option<String>,
    powering_off: Mutex<HashSet<Serial>>,
    /// The last known power state of each Pi (not inventory: asked again at start-up).
    power_states: power::PowerStates,
    observer: Arc<Observer>,
    pool: pool::WarmPool,
    /// One permit per running bakeform upload (`--max-concurrent-uploads`).
    uploads: Arc<tokio::sync::Semaphore>,
    /// Held while a disk's image is replaced by a restore and while a disk is attached, so
    /// a restore never replaces the image of a disk a Pi has just been given.
    disk_images: tokio::sync::Mutex<()>,
    /// The port the API listens on, once bound (for the default `{{nocloud_url}}`).
    api_port: std::sync::atomic::AtomicU16,
    /// nbd-server's files, when NBD roots are on (`--nbd-config`).
    nbd: Option<crate::nbd::NbdServer>,
}

impl std::fmt::Debug for Bakery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bakery")
            .field("data_dir", &self.layout.data)
            .finish_non_exhaustive()
    }
}

/// The parts a [`Bakery`] is made of.
pub struct Parts {
    /// The resolved configuration.
    pub config: Settings,
    /// The open inventory.
    pub store: Store,
    /// The power backend.
    pub power: Arc<dyn Power>,
    /// The exports backend.
    pub exporter: Arc<dyn Exporter>,
    /// How roots are cloned on this data dir.
    pub clone_strategy: CloneStrategy,
    /// The operator's cmdline.txt template, read at start-up.
    pub cmdline_template: Option<String>,
}

impl Bakery {
    /// Assembles the service (call [`Bakery::repair`] before serving).
    pub fn new(parts: Parts) -> Arc<Bakery> {
        let layout = Layout::new(&parts.config.data_dir);
        let (changes, _) = watch::channel(0);
        let store = Arc::new(parts.store);
        let warm_pool = parts.config.warm_pool_for(parts.clone_strategy);
        let nbd = parts.config.nbd_config.clone().map(|file| {
            crate::nbd::NbdServer::new(file, &parts.config.data_dir, parts.config.nbd_port)
        });
        Arc::new(Bakery {
            nbd,
            uploads: Arc::new(tokio::sync::Semaphore::new(
                parts.config.max_concurrent_uploads,
            )),
            observer: Observer::new(store.clone()),
            warm_pool,
            config: parts.config,
            layout,
            store,
            power: parts.power,
            exporter: parts.exporter,
            export_lock: tokio::sync::Mutex::new(()),
            changes,
            trash_ready: Arc::new(Notify::new()),
            clone_strategy: parts.clone_strategy,
            cmdline_template: parts.cmdline_template,
            powering_off: Mutex::new(HashSet::new()),
            power_states: power::PowerStates::default(),
            pool: pool::WarmPool::default(),
            disk_images: tokio::sync::Mutex::new(()),
            api_port: std::sync::atomic::AtomicU16::new(0),
        })
    }

    /// Records the port the API is bound to (the listener's, which differs from the
    /// configured one when that was 0).
    pub fn set_api_port(&self, port: u16) {
        self.api_port
            .store(port, std::sync::atomic::Ordering::Relaxed);
    }

    /// The URL Pis fetch their cloud-init files from (`{{nocloud_url}}`).
    pub fn nocloud_url(&self) -> String {
        let bound = self.api_port.load(std::sync::atomic::Ordering::Relaxed);
        let port = if bound == 0 {
            self.config.api_port
        } else {
            bound
        };
        self.config.nocloud_url(port)
    }

    /// The configuration.
    pub fn config(&self) -> &Settings {
        &self.config
    }

    /// Events, boot timelines and metrics.
    pub fn observer(&self) -> &Arc<Observer> {
        &self.observer
    }

    /// The data dir layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Runs `f` on the store off the async runtime ([`Store::call`]).
    pub(crate) async fn db<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, DbError> + Send + 'static,
    {
        Ok(self.store.call(f).await?)
    }

    /// Runs blocking file-system work off the async runtime.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ServiceError> + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))?
    }

    /// Tells long-polls that some Pi changed.
    pub(crate) fn notify_change(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Rewrites the exports from the database and publishes them.
    pub async fn reexport(&self) -> Result<(), ServiceError> {
        let _guard = self.export_lock.lock().await;
        let entries = self.db(|s| s.export_entries()).await?;
        let scope = if self.config.export_to_any {
            ExportScope::Any
        } else {
            ExportScope::PiAddress
        };
        let content = self
            .exporter
            .render(&entries, &self.config.export_options, scope)?;
        self.exporter.publish(&content).await?;
        if let Some(nbd) = self.nbd.clone() {
            let roots = self.db(|s| s.nbd_roots()).await?;
            self.blocking(move || nbd.publish(&roots).map_err(ServiceError::from))
                .await?;
        }
        Ok(())
    }

    /// Writes nbd-server's config and an authfile letting nobody in (start-up, before the
    /// first re-export); nothing when NBD roots are off.
    pub async fn start_nbd(&self) -> Result<(), ServiceError> {
        let Some(nbd) = self.nbd.clone() else {
            return Ok(());
        };
        self.blocking(move || nbd.write_config().map_err(ServiceError::from))
            .await
    }

    /// nbd-server's files, when NBD roots are on.
    pub fn nbd(&self) -> Option<&crate::nbd::NbdServer> {
        self.nbd.as_ref()
    }

    /// [`Bakery::reexport`], logging instead of failing (for changes that must go on).
    pub(crate) async fn reexport_logged(&self) {
        if let Err(e) = self.reexport().await {
            tracing::error!(error = %e, "cannot publish nfs exports");
        }
    }

    /// Moves a tree into the trash and wakes the reclaimer.
    pub(crate) fn trash(&self, path: &Path) {
        match fsutil::move_to_trash(path, &self.layout.trash) {
            Ok(Some(_)) => self.trash_ready.notify_one(),
            Ok(None) => {}
            Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot move to trash"),
        }
    }

    /// Starts the background task that empties the trash whenever something lands in it.
    pub fn spawn_reclaimer(self: &Arc<Self>) {
        let ready = self.trash_ready.clone();
        let trash = self.layout.trash.clone();
        tokio::spawn(async move {
            loop {
                let dir = trash.clone();
                let _ = tokio::task::spawn_blocking(move || fsutil::empty_dir(&dir)).await;
                ready.notified().await;
            }
        });
    }

    // ---- views ----

    fn disk_view(&self, row: &DiskRow) -> Disk {
        Disk {
            id: row.id.to_string(),
            location: row.location.clone(),
            size: row.size,
            nfs_address: self.config.nfs_address.clone(),
            attached_to: row.pi.as_ref().map(Serial::to_string),
            ephemeral: row.ephemeral,
            metadata: row.metadata.clone(),
        }
    }

    fn bakeform_view(row: &BakeformRow) -> Bakeform {
        Bakeform {
            name: row.name.to_string(),
            location: row.location.clone(),
            state: Some(row.state),
            error: row.error.clone(),
        }
    }

    fn pi_view(&self, pi: &PiRow, disks: &[&DiskRow], bakeforms: &[BakeformRow]) -> PiInfo {
        let power = self.power_states.get(pi.serial.as_str());
        PiInfo {
            id: pi.serial.to_string(),
            status: pi.state.status(),
            disks: disks.iter().map(|d| self.disk_view(d)).collect(),
            source_bakeform: pi.bakeform.as_ref().map(|name| {
                bakeforms
                    .iter()
                    .find(|b| &b.name == name)
                    .map(Self::bakeform_view)
                    .unwrap_or_else(|| Bakeform {
                        name: name.to_string(),
                        location: self.layout.bakeform(name).display().to_string(),
                        state: None,
                        error: None,
                    })
            }),
            state: Some(pi.state),
            address: pi.address.map(|a| a.to_string()),
            network: pi.network.clone(),
            root_kind: (pi.state != PiState::Fridge).then_some(pi.root_kind),
            metadata: pi.metadata.clone(),
            last_error: pi.last_error.clone(),
            last_boot: self.observer.timelines().summary(pi.serial.as_str()),
            model: pi.model,
            labels: pi.labels.clone(),
            first_seen: Some(pi.created_at),
            last_seen: pi.last_seen,
            power_state: power.map(|(state, _)| state),
            power_state_at: power.map(|(_, at)| at),
        }
    }

    /// The Pis whose state passes `filter`, as the API shows them.
    pub async fn pis_where(
        &self,
        filter: impl Fn(PiState) -> bool + Send + 'static,
    ) -> Result<Vec<PiInfo>, ServiceError> {
        let (pis, disks, bakeforms) = self
            .db(|s| Ok((s.pis()?, s.disks()?, s.bakeforms()?)))
            .await?;
        let mut out = Vec::new();
        for pi in pis.iter().filter(|p| filter(p.state)) {
            let mut own: Vec<&DiskRow> = disks
                .iter()
                .filter(|d| d.pi.as_ref() == Some(&pi.serial))
                .collect();
            own.sort_by(|a, b| {
                b.is_root
                    .cmp(&a.is_root)
                    .then(a.position.cmp(&b.position))
                    .then(a.id.cmp(&b.id))
            });
            out.push(self.pi_view(pi, &own, &bakeforms));
        }
        Ok(out)
    }

    /// One Pi as the API shows it; `None` if unknown.
    pub async fn pi_info(&self, serial: &Serial) -> Result<Option<PiInfo>, ServiceError> {
        let key = serial.clone();
        let found = self
            .db(move |s| {
                let Some(pi) = s.pi(&key)? else {
                    return Ok(None);
                };
                let disks = s.disks_of(&key)?;
                let bakeforms = match &pi.bakeform {
                    Some(name) => s.bakeform(name)?.into_iter().collect(),
                    None => Vec::new(),
                };
                Ok(Some((pi, disks, bakeforms)))
            })
            .await?;
        Ok(found.map(|(pi, disks, bakeforms)| {
            let refs: Vec<&DiskRow> = disks.iter().collect();
            self.pi_view(&pi, &refs, &bakeforms)
        }))
    }

    /// A known Pi, or `PiNotFound`.
    pub async fn pi(&self, serial: &Serial) -> Result<PiInfo, ServiceError> {
        self.pi_info(serial)
            .await?
            .ok_or_else(|| ServiceError::PiNotFound(serial.to_string()))
    }

    /// A Pi in the oven (preparing, baked or unbaking), or 404-style errors.
    pub async fn oven_pi(&self, serial: &Serial) -> Result<PiInfo, ServiceError> {
        let pi = self.pi(serial).await?;
        if pi.state == Some(PiState::Fridge) {
            return Err(ServiceError::PiNotInOven(serial.to_string()));
        }
        Ok(pi)
    }

    /// Replaces a Pi's metadata.
    pub async fn set_pi_metadata(
        &self,
        serial: &Serial,
        metadata: bakery_client::Metadata,
    ) -> Result<PiInfo, ServiceError> {
        let key = serial.clone();
        let updated = self.db(move |s| s.set_pi_metadata(&key, &metadata)).await?;
        if updated.is_none() {
            return Err(ServiceError::PiNotFound(serial.to_string()));
        }
        self.pi(serial).await
    }

    /// Replaces a Pi's labels (checked first: 400 naming the bad key or value).
    pub async fn set_pi_labels(
        &self,
        serial: &Serial,
        labels: bakery_client::Labels,
    ) -> Result<PiInfo, ServiceError> {
        crate::domain::hardware::check_labels(&labels)
            .map_err(|e| ServiceError::BadRequest(format!("labels of pi {serial}: {e}")))?;
        let key = serial.clone();
        let updated = self.db(move |s| s.set_pi_labels(&key, &labels)).await?;
        if updated.is_none() {
            return Err(ServiceError::PiNotFound(serial.to_string()));
        }
        tracing::info!(%serial, "pi labels set");
        self.notify_change();
        self.pi(serial).await
    }

    // ---- the boot path's needs ----

    /// Registers a Pi seen on the boot path; `Some(true)` if new, `None` when the inventory
    /// already holds `max_pis` Pis (a flood of made-up serials cannot grow it without bound).
    pub(crate) async fn register(&self, serial: &Serial) -> Result<Option<bool>, ServiceError> {
        static FULL_WARNED_AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let key = serial.clone();
        let max = self.config().max_pis;
        let event = EventKind::Registered.pi(serial);
        let Some(new) = self
            .db(move |s| s.register_pi_within(&key, max, event))
            .await?
        else {
            // Warn at most once a minute: this is what a flood looks like.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let last = FULL_WARNED_AT.swap(now, std::sync::atomic::Ordering::Relaxed);
            if now.saturating_sub(last) >= 60 {
                tracing::warn!(
                    %serial,
                    max_pis = max,
                    "inventory full (--max-pis): unknown pi not registered"
                );
            }
            return Ok(None);
        };
        if new {
            tracing::info!(
                %serial,
                state = PiState::Fridge.as_str(),
                "new pi registered from the boot path"
            );
            self.notify_change();
        }
        Ok(Some(new))
    }

    /// Records that a Pi asked for a boot file at `at` (unix ms), and the model the file
    /// revealed, if any. A failure is logged, not returned: it must not stop a boot.
    pub(crate) async fn saw_pi_ask(&self, serial: &Serial, model: Option<PiModel>, at: i64) {
        let key = serial.clone();
        match self.db(move |s| s.saw_pi(&key, model, at)).await {
            Ok(wrote) => {
                if wrote && let Some(model) = model {
                    tracing::debug!(%serial, %model, "pi model recorded from the boot path");
                }
            }
            Err(e) => tracing::warn!(%serial, error = %e, "cannot record when the pi was seen"),
        }
    }

    /// Records the address a Pi was seen at, re-exporting when it changed.
    pub(crate) async fn saw_pi_at(
        &self,
        serial: &Serial,
        address: IpAddr,
    ) -> Result<(), ServiceError> {
        let key = serial.clone();
        let change = self.db(move |s| s.set_address(&key, address)).await?;
        let Some((previous, state)) = change else {
            return Ok(());
        };
        match previous {
            Some(old) => tracing::warn!(
                %serial,
                %old,
                new = %address,
                "two different addresses use one pi serial (or the pi changed address): exports follow the newest"
            ),
            None => tracing::info!(%serial, %address, "pi address learned"),
        }
        if matches!(state, PiState::Preparing | PiState::Baked) {
            self.reexport_logged().await;
        }
        self.notify_change();
        Ok(())
    }

    /// Powers off a Pi that showed up on the boot path while not baked, in the background;
    /// while one power-off of that Pi is running, further requests do not start another.
    pub(crate) fn power_off_stray(self: &Arc<Self>, serial: &Serial) {
        {
            let mut running = self.powering_off.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(serial.clone()) {
                return;
            }
        }
        let this = self.clone();
        let serial = serial.clone();
        tokio::spawn(async move {
            if let Err(e) = this.power(&serial, PowerAction::PowerOff).await {
                tracing::warn!(%serial, error = %e, "cannot power off pi that is not baked");
            }
            this.powering_off
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&serial);
        });
    }

    /// The operator's cmdline template, if any.
    pub(crate) fn cmdline_template(&self) -> Option<&str> {
        self.cmdline_template.as_deref()
    }

    /// The store (for the boot path's lookups).
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }
}
