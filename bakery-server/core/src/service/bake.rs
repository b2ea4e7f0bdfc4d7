//! Bake, reset, unbake, power cycle and waiting for a bake: the Pi lifecycle's orchestration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bakery_client::{BakeRequest, Metadata, PiInfo, PiState, RootKind};

use super::{Bakery, ServiceError, io_err};
use crate::db::{DiskRow, PiChange, StartBake};
use crate::domain::names::{BakeformName, DiskId, Serial};
use crate::events::EventKind;
use crate::imaging;
use crate::ppi::PowerAction;

/// The configuration directory on a Pi's root disk.
pub const PI_CONFIG_DIR: &str = "piConfig";

impl Bakery {
    /// Takes a Pi from the fridge and starts baking it from `request.bakeform_name` in the
    /// background; returns the Pi (preparing).
    pub async fn bake(self: &Arc<Self>, request: BakeRequest) -> Result<PiInfo, ServiceError> {
        // The wire type's name is checked here, where it enters: a bad one names no bakeform.
        let name = BakeformName::parse(&request.bakeform_name)
            .map_err(|_| ServiceError::UnknownBakeform(request.bakeform_name.clone()))?;
        if let Some(net) = &request.network {
            crate::domain::network::check_network(net)
                .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        }
        let kind = request.root_kind.unwrap_or_default();
        if kind == RootKind::Nbd && self.nbd().is_none() {
            return Err(ServiceError::BadRequest(
                "rootKind nbd: nbd roots are not enabled on this server (start bakery-server with --nbd-config)".to_owned(),
            ));
        }
        let constraints = crate::domain::hardware::Constraints {
            model: request.model,
            labels: request.labels.clone(),
        };
        crate::domain::hardware::check_labels(&constraints.labels)
            .map_err(|e| ServiceError::BadRequest(format!("labels constraint: {e}")))?;
        self.ensure_bake_space(&name).await?;
        let root_id = DiskId::random();
        let power_on = request.power_on.unwrap_or(true);
        let (n, net, id) = (name.clone(), request.network.clone(), root_id.clone());
        let wanted = constraints.clone();
        let event = EventKind::BakeStarted.bakeform(&name);
        let started = self
            .db(move |s| s.start_bake(&n, net.as_ref(), power_on, (&id, kind), &wanted, event))
            .await?;
        let pi = match started {
            StartBake::Started(pi) => pi,
            StartBake::UnknownBakeform => {
                return Err(ServiceError::UnknownBakeform(name.to_string()));
            }
            StartBake::BakeformNotReady(state) => {
                return Err(self.bakeform_not_ready(name, state).await);
            }
            StartBake::NoFreePi if constraints.is_empty() => return Err(ServiceError::NoFreePi),
            StartBake::NoFreePi => {
                return Err(ServiceError::NoMatchingPi(constraints.to_string()));
            }
        };
        let serial = pi.serial.clone();
        tracing::info!(%serial, state = PiState::Preparing.as_str(), bakeform = %name, root_kind = %kind, "bake started");
        self.notify_change();
        let this = self.clone();
        let job_serial = serial.clone();
        tokio::spawn(async move {
            this.run_bake(job_serial, name, (root_id, kind), power_on)
                .await;
        });
        self.pi(&serial).await
    }

    async fn run_bake(
        self: Arc<Self>,
        serial: Serial,
        bakeform: BakeformName,
        root: (DiskId, RootKind),
        power_on: bool,
    ) {
        let (root_id, kind) = root;
        let tmp = self.layout.tmp.join(root_id.as_str());
        let dest = self.layout.disk(&root_id);
        let result = async {
            self.prepare_root(&serial, &bakeform, &tmp, &dest, kind)
                .await?;
            let root = DiskRow {
                id: root_id.clone(),
                location: dest.display().to_string(),
                size: 0,
                ephemeral: true,
                is_root: true,
                pi: Some(serial.clone()),
                position: 0,
                metadata: Metadata::new(),
            };
            let key = serial.clone();
            match self.db(move |s| s.add_root_disk(&key, &root)).await? {
                PiChange::Done(()) => {}
                other => {
                    return Err(ServiceError::Task(format!(
                        "pi {serial} changed under a running bake: {other:?}"
                    )));
                }
            }
            self.finish_preparing(&serial, power_on).await
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(%serial, state = PiState::Baked.as_str(), %bakeform, "bake finished")
            }
            Err(e) => {
                self.trash(&tmp);
                self.trash(&dest);
                self.fail_preparing(&serial, &e.to_string()).await;
            }
        }
    }

    /// Powers the Pi off, clones the bakeform's golden root into `tmp` and renames it to `dest`.
    async fn prepare_root(
        &self,
        serial: &Serial,
        bakeform: &BakeformName,
        tmp: &std::path::Path,
        dest: &std::path::Path,
        kind: RootKind,
    ) -> Result<(), ServiceError> {
        self.power(serial, PowerAction::PowerOff).await?;
        let golden = self.layout.bakeform(bakeform).join("root");
        let (tmp, dest) = (tmp.to_owned(), dest.to_owned());
        let strategy = self.clone_strategy;
        let what = format!("cloning the root of pi {serial} to {}", tmp.display());
        let serial = serial.clone();
        let pooled = kind == RootKind::Nfs && self.take_pooled(bakeform, &tmp).await;
        let nbd = self.nbd_root_maker(bakeform);
        self.blocking(move || {
            let started = std::time::Instant::now();
            let strategy = if pooled {
                strategy
            } else if kind == RootKind::Nbd {
                nbd.make(&tmp)?
            } else {
                imaging::clone_root(&golden, &tmp, strategy)?
            };
            let config = tmp.join(PI_CONFIG_DIR);
            if std::fs::symlink_metadata(&config).is_err() {
                std::fs::create_dir(&config)
                    .map_err(io_err(format!("cannot create {}", config.display())))?;
            }
            std::fs::rename(&tmp, &dest).map_err(io_err(format!(
                "cannot move cloned root {} to {}",
                tmp.display(),
                dest.display()
            )))?;
            tracing::info!(%serial, %strategy, pooled, elapsed = ?started.elapsed(), "root cloned");
            Ok(())
        })
        .await
        .map_err(|e| self.no_space(what, e))
    }

    /// The last steps of preparing (its root disk is in place): export its disks, power it
    /// on if asked, then mark it baked, so a Pi reported baked is exported and powered.
    async fn finish_preparing(&self, serial: &Serial, power_on: bool) -> Result<(), ServiceError> {
        self.reexport().await?;
        if power_on {
            self.power(serial, PowerAction::PowerOn).await?;
        }
        let (key, event) = (serial.clone(), EventKind::BakeFinished.pi(serial));
        match self.db(move |s| s.finish_prepare(&key, event)).await? {
            PiChange::Done(_) => {
                self.notify_change();
                Ok(())
            }
            other => Err(ServiceError::Task(format!(
                "pi {serial} changed while preparing: {other:?}"
            ))),
        }
    }

    /// Preparing failed: the Pi goes back to the fridge with `reason`.
    pub(crate) async fn fail_preparing(&self, serial: &Serial, reason: &str) {
        tracing::error!(%serial, state = PiState::Fridge.as_str(), error = reason, "bake failed");
        let (key, why) = (serial.clone(), reason.to_owned());
        let event = EventKind::BakeFailed.pi(serial).with_message(reason);
        match self.db(move |s| s.fail_prepare(&key, &why, event)).await {
            Ok(PiChange::Done(removed)) => self.trash_disks(&removed),
            Ok(other) => {
                tracing::error!(%serial, outcome = ?other, "cannot return pi to the fridge")
            }
            Err(e) => tracing::error!(%serial, error = %e, "cannot return pi to the fridge"),
        }
        self.reexport_logged().await;
        self.notify_change();
    }

    fn trash_disks(&self, disks: &[DiskRow]) {
        for disk in disks {
            self.trash(&PathBuf::from(&disk.location));
            self.trash(&self.layout.disk_snapshots(&disk.id));
        }
    }

    /// Unbakes a baked Pi: unexport, power off, destroy its root and ephemeral disks, detach
    /// and keep the others; back to the fridge.
    pub async fn unbake(&self, serial: &Serial) -> Result<(), ServiceError> {
        let (key, event) = (serial.clone(), EventKind::UnbakeStarted.pi(serial));
        match self.db(move |s| s.start_unbake(&key, event)).await? {
            PiChange::Done(_) => {}
            PiChange::UnknownPi => return Err(ServiceError::PiNotFound(serial.to_string())),
            PiChange::WrongState(state) => {
                return Err(ServiceError::NotBaked {
                    serial: serial.to_string(),
                    state: state.as_str(),
                });
            }
        }
        tracing::info!(%serial, state = PiState::Unbaking.as_str(), "unbake started");
        self.notify_change();
        self.reexport_logged().await;
        if let Err(e) = self.power(serial, PowerAction::PowerOff).await {
            tracing::warn!(%serial, error = %e, "cannot power off pi being unbaked, unbaking anyway");
        }
        self.finish_unbake(serial, None).await;
        Ok(())
    }

    /// Second half of an unbake (also used by start-up repair).
    pub(crate) async fn finish_unbake(&self, serial: &Serial, error: Option<&str>) {
        let (key, why) = (serial.clone(), error.map(str::to_owned));
        let event = EventKind::Unbaked.pi(serial);
        let outcome = self
            .db(move |s| s.finish_unbake(&key, why.as_deref(), event))
            .await;
        match outcome {
            Ok(PiChange::Done(removed)) => {
                self.trash_disks(&removed);
                tracing::info!(
                    %serial,
                    state = PiState::Fridge.as_str(),
                    destroyed = removed.len(),
                    "unbaked"
                );
            }
            Ok(other) => tracing::error!(%serial, outcome = ?other, "cannot finish unbake"),
            Err(e) => tracing::error!(%serial, error = %e, "cannot finish unbake"),
        }
        self.reexport_logged().await;
        self.notify_change();
    }

    /// Re-clones a baked Pi's root from its bakeform in the background, keeping its other
    /// disks and its `piConfig/`.
    pub async fn reset(self: &Arc<Self>, serial: &Serial) -> Result<PiInfo, ServiceError> {
        let key = serial.clone();
        let row = self
            .db(move |s| s.pi(&key))
            .await?
            .ok_or_else(|| ServiceError::PiNotFound(serial.to_string()))?;
        if let Some(bakeform) = &row.bakeform {
            self.ensure_bake_space(bakeform).await?;
        }
        let (key, event) = (serial.clone(), EventKind::ResetStarted.pi(serial));
        let pi = match self.db(move |s| s.start_reset(&key, event)).await? {
            PiChange::Done(pi) => pi,
            PiChange::UnknownPi => return Err(ServiceError::PiNotFound(serial.to_string())),
            PiChange::WrongState(state) => {
                return Err(ServiceError::NotBaked {
                    serial: serial.to_string(),
                    state: state.as_str(),
                });
            }
        };
        tracing::info!(%serial, state = PiState::Preparing.as_str(), "reset started");
        self.notify_change();
        let this = self.clone();
        tokio::spawn(async move {
            let serial = pi.serial.clone();
            let result = async {
                this.run_reset(&serial, pi.bakeform.as_ref(), pi.root_kind)
                    .await?;
                this.finish_preparing(&serial, true).await
            }
            .await;
            match result {
                Ok(()) => {
                    tracing::info!(%serial, state = PiState::Baked.as_str(), "reset finished")
                }
                Err(e) => this.fail_preparing(&serial, &e.to_string()).await,
            }
        });
        self.pi(serial).await
    }

    async fn run_reset(
        &self,
        serial: &Serial,
        bakeform: Option<&BakeformName>,
        kind: RootKind,
    ) -> Result<(), ServiceError> {
        let bakeform = bakeform
            .ok_or_else(|| ServiceError::BadRequest(format!("pi {serial} has no bakeform")))?;
        let key = serial.clone();
        let disks = self.db(move |s| s.disks_of(&key)).await?;
        let root = disks
            .into_iter()
            .find(|d| d.is_root)
            .ok_or_else(|| ServiceError::BadRequest(format!("pi {serial} has no root disk")))?;
        let root_dir = PathBuf::from(&root.location);
        let tmp = self.layout.tmp.join(uuid::Uuid::new_v4().to_string());
        let staged = self.layout.tmp.join(uuid::Uuid::new_v4().to_string());
        self.power(serial, PowerAction::PowerOff).await?;
        let golden = self.layout.bakeform(bakeform).join("root");
        let strategy = self.clone_strategy;
        let trash = self.layout.trash.clone();
        let clone_dir = tmp.clone();
        let what = format!("cloning the root of pi {serial} to {}", tmp.display());
        let pooled = kind == RootKind::Nfs && self.take_pooled(bakeform, &tmp).await;
        let nbd = self.nbd_root_maker(bakeform);
        let result = self
            .blocking(move || {
                if kind == RootKind::Nbd {
                    nbd.make(&tmp)?;
                } else if !pooled {
                    imaging::clone_root(&golden, &tmp, strategy)?;
                }
                keep_pi_config(
                    &root_dir.join(PI_CONFIG_DIR),
                    &tmp.join(PI_CONFIG_DIR),
                    &trash,
                )?;
                std::fs::rename(&root_dir, &staged).map_err(io_err(format!(
                    "cannot move old root {}",
                    root_dir.display()
                )))?;
                std::fs::rename(&tmp, &root_dir).map_err(io_err(format!(
                    "cannot move new root to {}",
                    root_dir.display()
                )))?;
                crate::fsutil::move_to_trash(&staged, &trash)
                    .map_err(io_err("cannot trash the old root"))?;
                Ok(())
            })
            .await;
        self.trash_ready.notify_one();
        if result.is_err() {
            self.trash(&clone_dir);
        }
        result.map_err(|e| self.no_space(what, e))
    }

    /// Power-cycles a baked Pi: off, pause, on.
    pub async fn power_cycle(&self, serial: &Serial) -> Result<(), ServiceError> {
        let pi = self.pi(serial).await?;
        if pi.state != Some(PiState::Baked) {
            return Err(ServiceError::NotBaked {
                serial: serial.to_string(),
                state: pi.state.map_or("unknown", |s| s.as_str()),
            });
        }
        self.power(serial, PowerAction::PowerOff).await?;
        tokio::time::sleep(self.config.power_cycle_pause).await;
        self.power(serial, PowerAction::PowerOn).await?;
        // A Pi baked with powerOn=false is on from now: restore its power after a restart.
        let key = serial.clone();
        self.db(move |s| s.set_power_on(&key, true)).await?;
        Ok(())
    }

    /// Waits until the Pi is baked, its bake failed (`BakeFailed`, the Pi is back in the fridge
    /// with `lastError`), or `timeout` passed (the current Pi, still preparing). A Pi that is
    /// not going to be baked (unbaking, or in the fridge without a failed bake) is returned at
    /// once as it is, so the caller sees its status.
    pub async fn wait_baked(
        &self,
        serial: &Serial,
        timeout: Duration,
    ) -> Result<PiInfo, ServiceError> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout.min(super::MAX_WAIT);
        loop {
            changes.borrow_and_update();
            let pi = self.pi(serial).await?;
            match pi.state {
                // Baked; or unbaking, which will never become baked: report it as it is.
                Some(PiState::Baked | PiState::Unbaking) => return Ok(pi),
                Some(PiState::Fridge) => {
                    return match pi.last_error {
                        Some(reason) => Err(ServiceError::BakeFailed {
                            serial: serial.to_string(),
                            reason,
                        }),
                        None => Ok(pi),
                    };
                }
                _ => {}
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.pi(serial).await,
            }
        }
    }
}

/// What making an NBD root from one bakeform needs (moved into a blocking task).
struct NbdRootMaker {
    bakeform_dir: PathBuf,
    tmp_dir: PathBuf,
    mkfs: Vec<String>,
}

impl Bakery {
    fn nbd_root_maker(&self, bakeform: &BakeformName) -> NbdRootMaker {
        NbdRootMaker {
            bakeform_dir: self.layout.bakeform(bakeform),
            tmp_dir: self.layout.tmp.clone(),
            mkfs: self
                .config()
                .mkfs_ext4_cmd
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        }
    }
}

impl NbdRootMaker {
    /// Makes the root disk directory `dir` of an NBD Pi: a clone of the bakeform's
    /// `root.ext4` (made from its `root/` tree on first use, under `tmp/`, then renamed next
    /// to it; once, however many bakes ask at the same time) as `dir/root.ext4`, reflinked
    /// where the file system can, else copied sparse.
    fn make(&self, dir: &Path) -> Result<bakery_image::CloneStrategy, ServiceError> {
        use crate::domain::nbd::{BAKEFORM_IMAGE, ROOT_IMAGE};
        let image = self.bakeform_dir.join(BAKEFORM_IMAGE);
        if std::fs::symlink_metadata(&image).is_err() {
            let started = std::time::Instant::now();
            let tmp = self.tmp_dir.join(format!("{}.ext4", uuid::Uuid::new_v4()));
            let tree = self.bakeform_dir.join("root");
            if crate::nbd::ensure_image(&self.mkfs, &tree, &tmp, &image)? {
                tracing::info!(image = %image.display(), elapsed = ?started.elapsed(), "nbd root image of bakeform made");
            }
        }
        std::fs::create_dir(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let made = bakery_image::clone_file(&image, &dir.join(ROOT_IMAGE)).map_err(|e| {
            let _ = std::fs::remove_dir_all(dir);
            ServiceError::Io {
                context: format!("cannot clone the nbd root image {}", image.display()),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        Ok(match made.kind {
            bakery_image::FileCloneKind::Reflink => bakery_image::CloneStrategy::Reflink,
            bakery_image::FileCloneKind::SparseCopy => bakery_image::CloneStrategy::Copy,
        })
    }
}

/// Moves the Pi's `piConfig/` from its old root (`old`) into the fresh clone (`new`),
/// replacing whatever the bakeform had there. Each root on btrfs is a subvolume of its own,
/// and rename across subvolumes fails with EXDEV: then the directory is cloned (reflinks
/// where the file system has them) and the old copy goes to the trash with the old root.
fn keep_pi_config(old: &Path, new: &Path, trash: &Path) -> Result<(), ServiceError> {
    let exdev = |e: &std::io::Error| e.raw_os_error() == Some(libc::EXDEV);
    if std::fs::symlink_metadata(new).is_ok() {
        match crate::fsutil::move_to_trash(new, trash) {
            Ok(_) => {}
            Err(e) if exdev(&e) => std::fs::remove_dir_all(new)
                .map_err(io_err("cannot clear piConfig of the new root"))?,
            Err(e) => return Err(io_err("cannot clear piConfig of the new root")(e)),
        }
    }
    match std::fs::symlink_metadata(old) {
        Ok(meta) if meta.is_dir() => match std::fs::rename(old, new) {
            Ok(()) => Ok(()),
            Err(e) if exdev(&e) => {
                imaging::clone_root(old, new, bakery_image::CloneStrategy::Reflink)?;
                Ok(())
            }
            Err(e) => Err(io_err("cannot keep piConfig across the reset")(e)),
        },
        _ => std::fs::create_dir(new).map_err(io_err("cannot create piConfig")),
    }
}
