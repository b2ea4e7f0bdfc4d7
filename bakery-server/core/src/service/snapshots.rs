//! Disk snapshots: a reflink (btrfs, XFS) or sparse copy (ext4) of a data disk's `disk.img`
//! under `<data>/snapshots/<disk>/<snapshot>.img`, outside the exported directory; listed,
//! restored into the disk (a clone of the snapshot renamed over `disk.img`), deleted alone or
//! with the disk.
//!
//! A snapshot of a disk attached to a running Pi is crash-consistent only: it holds what had
//! reached the server's file when it was taken, as if the Pi had lost power then.

use std::path::PathBuf;

use bakery_client::{Disk, Metadata, Snapshot, SnapshotList};

use super::disks::{DISK_IMAGE, allocated_bytes};
use super::{Bakery, ServiceError, io_err};
use crate::db::{DiskRow, SnapshotRow};
use crate::domain::names::{DiskId, SnapshotId};
use crate::events::EventKind;
use crate::imaging;

fn snapshot_view(row: &SnapshotRow) -> Snapshot {
    Snapshot {
        id: row.id.to_string(),
        disk: row.disk.to_string(),
        size: row.size,
        created_at: row.created_at,
        metadata: row.metadata.clone(),
    }
}

impl Bakery {
    /// Disk `id` as stored, or `DiskNotFound`.
    async fn disk_row(&self, id: &DiskId) -> Result<DiskRow, ServiceError> {
        let key = id.clone();
        self.db(move |s| s.disk(&key))
            .await?
            .ok_or_else(|| ServiceError::DiskNotFound(id.to_string()))
    }

    /// Takes a snapshot of data disk `id` (attached or not), keeping `metadata` with it.
    pub async fn snapshot_disk(
        &self,
        id: &DiskId,
        metadata: Metadata,
    ) -> Result<Snapshot, ServiceError> {
        let disk = self.disk_row(id).await?;
        if disk.is_root {
            return Err(ServiceError::RootDiskSnapshot {
                disk: id.to_string(),
                serial: disk.pi.map(String::from).unwrap_or_default(),
            });
        }
        let image = PathBuf::from(&disk.location).join(DISK_IMAGE);
        let probe = image.clone();
        let allocated = self.blocking(move || allocated_bytes(&probe)).await?;
        self.check_space(&format!("a snapshot of disk {id}"), allocated)
            .await?;
        let sid = SnapshotId::random();
        let tmp = self.layout.tmp.join(format!("snapshot-{sid}.img"));
        let dest = self.layout.snapshot(id, &sid);
        let (t, d) = (tmp.clone(), dest.clone());
        let made = self
            .blocking(move || {
                let made = imaging::clone_disk_image(&image, &t)?;
                if let Some(dir) = d.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(io_err(format!("cannot create {}", dir.display())))?;
                }
                std::fs::rename(&t, &d)
                    .map_err(io_err(format!("cannot move snapshot to {}", d.display())))?;
                Ok(made)
            })
            .await;
        let made = match made {
            Ok(made) => made,
            Err(e) => {
                self.trash(&tmp);
                return Err(self.no_space(format!("taking a snapshot of disk {id}"), e));
            }
        };
        let row = SnapshotRow {
            id: sid.clone(),
            disk: id.clone(),
            size: disk.size,
            created_at: crate::observe::unix_ms(),
            metadata,
        };
        let insert = row.clone();
        let event = EventKind::SnapshotCreated
            .disk(id)
            .with_message(format!("snapshot {sid} ({})", made.kind));
        if !self.db(move |s| s.insert_snapshot(&insert, event)).await? {
            self.trash(&dest);
            return Err(ServiceError::DiskNotFound(id.to_string()));
        }
        tracing::info!(
            disk = %id,
            snapshot = %sid,
            how = %made.kind,
            bytes = made.len,
            allocated = made.allocated,
            attached_to = disk.pi.as_ref().map_or("", |pi| pi.as_str()),
            "disk snapshot taken"
        );
        Ok(snapshot_view(&row))
    }

    /// The snapshots of disk `id`, oldest first.
    pub async fn disk_snapshots(&self, id: &DiskId) -> Result<SnapshotList, ServiceError> {
        self.disk_row(id).await?;
        let key = id.clone();
        let rows = self.db(move |s| s.snapshots_of(&key)).await?;
        Ok(SnapshotList {
            snapshots: rows.iter().map(snapshot_view).collect(),
        })
    }

    /// One snapshot.
    pub async fn snapshot(&self, sid: &SnapshotId) -> Result<Snapshot, ServiceError> {
        self.snapshot_row(sid).await.map(|r| snapshot_view(&r))
    }

    /// Snapshot `sid` as stored, or `SnapshotNotFound`.
    async fn snapshot_row(&self, sid: &SnapshotId) -> Result<SnapshotRow, ServiceError> {
        let key = sid.clone();
        self.db(move |s| s.snapshot(&key))
            .await?
            .ok_or_else(|| ServiceError::SnapshotNotFound(sid.to_string()))
    }

    /// Deletes a snapshot: its row, then its file to the trash.
    pub async fn delete_snapshot(&self, sid: &SnapshotId) -> Result<(), ServiceError> {
        let snapshot = self.snapshot_row(sid).await?;
        let key = sid.clone();
        let event = EventKind::SnapshotDeleted
            .disk(&snapshot.disk)
            .with_message(format!("snapshot {sid}"));
        let Some(row) = self.db(move |s| s.delete_snapshot(&key, event)).await? else {
            return Err(ServiceError::SnapshotNotFound(sid.to_string()));
        };
        self.trash(&self.layout.snapshot(&row.disk, sid));
        tracing::info!(disk = %row.disk, snapshot = %sid, "disk snapshot deleted");
        Ok(())
    }

    /// Replaces the image of detached disk `id` with a copy of its snapshot `sid`: a clone
    /// of the snapshot made under `tmp/` and renamed over `disk.img` (atomic: the disk holds
    /// the old image or the restored one, never a mix). The disk takes the snapshot's size.
    /// Refused while the disk is attached: a Pi holding the old image open would go on
    /// writing into a file no longer the disk's.
    pub async fn restore_disk(&self, id: &DiskId, sid: &SnapshotId) -> Result<Disk, ServiceError> {
        let _images = self.disk_images.lock().await;
        let disk = self.disk_row(id).await?;
        if let Some(serial) = disk.pi {
            return Err(ServiceError::DiskAttached {
                disk: id.to_string(),
                serial: serial.to_string(),
            });
        }
        let snapshot = self.snapshot_row(sid).await?;
        if snapshot.disk != *id {
            return Err(ServiceError::SnapshotOfOtherDisk {
                snapshot: sid.to_string(),
                disk: id.to_string(),
            });
        }
        let src = self.layout.snapshot(id, sid);
        let probe = src.clone();
        let allocated = self.blocking(move || allocated_bytes(&probe)).await?;
        self.check_space(
            &format!("restoring disk {id} from snapshot {sid}"),
            allocated,
        )
        .await?;
        let tmp = self
            .layout
            .tmp
            .join(format!("restore-{}.img", uuid::Uuid::new_v4()));
        let image = PathBuf::from(&disk.location).join(DISK_IMAGE);
        let t = tmp.clone();
        let made = self
            .blocking(move || {
                let made = imaging::clone_disk_image(&src, &t)?;
                std::fs::rename(&t, &image)
                    .map_err(io_err(format!("cannot replace {}", image.display())))?;
                Ok(made)
            })
            .await;
        let made = match made {
            Ok(made) => made,
            Err(e) => {
                self.trash(&tmp);
                return Err(self.no_space(format!("restoring disk {id}"), e));
            }
        };
        let (key, size) = (id.clone(), snapshot.size);
        let event = EventKind::DiskRestored
            .disk(id)
            .with_message(format!("from snapshot {sid} ({})", made.kind));
        match self.db(move |s| s.restored_disk(&key, size, event)).await? {
            Some(Ok(row)) => {
                tracing::info!(disk = %id, snapshot = %sid, how = %made.kind, size, "disk restored");
                Ok(self.disk_view(&row))
            }
            Some(Err(serial)) => Err(ServiceError::DiskAttached {
                disk: id.to_string(),
                serial: serial.to_string(),
            }),
            None => Err(ServiceError::DiskNotFound(id.to_string())),
        }
    }
}
