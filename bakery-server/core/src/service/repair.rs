//! Start-up repair: finish or roll back what a crash left in flight, clean tmp, reclaim the
//! trash, move orphaned directories away, rewrite the exports, restore power and reconcile the
//! power states.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use bakery_client::{BakeformState, PiState};

use super::{Bakery, ServiceError};
use crate::db::PiChange;
use crate::domain::names::{DiskId, Serial};
use crate::events::EventKind;
use crate::fsutil;
use crate::ppi::PowerAction;

/// Why a bakeform whose import a stop or crash interrupted is `failed`.
pub const INTERRUPTED_IMPORT: &str = "the server stopped during the import";

/// What the repair found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// Pis whose interrupted bake was rolled back to the fridge.
    pub bakes_rolled_back: Vec<String>,
    /// Pis whose interrupted reset was finished or rolled back.
    pub resets_repaired: Vec<String>,
    /// Pis whose interrupted unbake was finished.
    pub unbakes_finished: Vec<String>,
    /// Bakeforms whose interrupted import was marked failed.
    pub imports_failed: Vec<String>,
    /// Directories in `disks/`, `bakeforms/` or `snapshots/`, and snapshot files, that
    /// nothing referenced.
    pub orphans_trashed: usize,
    /// Warm pools in `pool/` of bakeforms that are gone or not ready.
    pub pools_dropped: usize,
}

impl Bakery {
    /// Repairs the data dir and inventory after a stop or crash. Call once before serving.
    pub async fn repair(self: &Arc<Self>) -> Result<RepairReport, ServiceError> {
        let mut report = RepairReport::default();
        let tmp = self.layout.tmp.clone();
        self.blocking(move || {
            fsutil::empty_dir(&tmp);
            Ok(())
        })
        .await?;

        for pi in self.db(|s| s.pis()).await? {
            match pi.state {
                PiState::Preparing if pi.operation.as_deref() == Some("reset") => {
                    let serial = pi.serial.clone();
                    let root_ok = self
                        .db(move |s| s.disks_of(&serial))
                        .await?
                        .iter()
                        .find(|d| d.is_root)
                        .is_some_and(|d| Path::new(&d.location).is_dir());
                    if root_ok {
                        let key = pi.serial.clone();
                        let event = EventKind::BakeFinished
                            .pi(&key)
                            .with_message("interrupted reset: old root kept");
                        if let PiChange::Done(_) =
                            self.db(move |s| s.finish_prepare(&key, event)).await?
                        {
                            tracing::warn!(
                                serial = %pi.serial,
                                state = PiState::Baked.as_str(),
                                "interrupted reset: old root kept"
                            );
                        }
                    } else {
                        self.fail_preparing(&pi.serial, "reset interrupted by a restart of bakery")
                            .await;
                    }
                    report.resets_repaired.push(pi.serial.into());
                }
                PiState::Preparing => {
                    if let Some(root) = &pi.pending_root {
                        self.trash(&self.layout.disk(root));
                    }
                    self.fail_preparing(&pi.serial, "bake interrupted by a restart of bakery")
                        .await;
                    report.bakes_rolled_back.push(pi.serial.into());
                }
                PiState::Unbaking => {
                    self.finish_unbake(&pi.serial, None).await;
                    report.unbakes_finished.push(pi.serial.into());
                }
                PiState::Fridge | PiState::Baked => {}
            }
        }

        for bakeform in self.db(|s| s.bakeforms()).await? {
            if bakeform.state == BakeformState::Importing {
                self.trash(&self.layout.bakeform(&bakeform.name));
                let key = bakeform.name.clone();
                let why = format!("upload of bakeform {key}: {INTERRUPTED_IMPORT}");
                let event = EventKind::BakeformFailed.bakeform(&key).with_message(&why);
                self.db(move |s| s.set_bakeform_failed(&key, &why, event))
                    .await?;
                tracing::warn!(bakeform = %bakeform.name, "interrupted import marked failed");
                report.imports_failed.push(bakeform.name.into());
            }
        }

        let disks: Vec<DiskId> = self
            .db(|s| s.disks())
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect();
        let disk_ids: HashSet<String> = disks.iter().map(DiskId::to_string).collect();
        let bakeform_rows = self.db(|s| s.bakeforms()).await?;
        let ready: HashSet<String> = bakeform_rows
            .iter()
            .filter(|b| b.state == BakeformState::Ready)
            .map(|b| b.name.to_string())
            .collect();
        let bakeform_names: HashSet<String> =
            bakeform_rows.into_iter().map(|b| b.name.into()).collect();
        report.pools_dropped = self.repair_pool(&ready);
        report.orphans_trashed += self.trash_orphans(&self.layout.disks.clone(), &disk_ids);
        report.orphans_trashed += self.trash_orphans(&self.layout.snapshots.clone(), &disk_ids);
        let snapshots = self.db(|s| s.snapshots()).await?;
        for disk in &disks {
            let files: HashSet<String> = snapshots
                .iter()
                .filter(|r| &r.disk == disk)
                .map(|r| format!("{}.img", r.id))
                .collect();
            report.orphans_trashed += self.trash_orphans(&self.layout.disk_snapshots(disk), &files);
        }
        report.orphans_trashed +=
            self.trash_orphans(&self.layout.bakeforms.clone(), &bakeform_names);
        self.trash_ready.notify_one();

        self.reexport_logged().await;
        let baked: Vec<Serial> = self
            .db(|s| s.pis())
            .await?
            .into_iter()
            .filter(|p| p.state == PiState::Baked && p.power_on)
            .map(|p| p.serial)
            .collect();
        // In the background, so serving starts at once: power on the baked Pis, then ask
        // every Pi's power state.
        let this = self.clone();
        tokio::spawn(async move {
            for serial in baked {
                if let Err(e) = this.power(&serial, PowerAction::PowerOn).await {
                    tracing::warn!(%serial, error = %e, "cannot restore power to baked pi");
                }
            }
            this.reconcile_power().await;
        });
        self.notify_change();
        self.wake_pool();
        Ok(report)
    }

    fn trash_orphans(&self, dir: &Path, known: &HashSet<String>) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut count = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                tracing::warn!(path = %entry.path().display(), "orphan moved to trash");
                self.trash(&entry.path());
                count += 1;
            }
        }
        count
    }
}
