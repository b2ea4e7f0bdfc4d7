//! Disks: sparse `disk.img` files in their own exported directories; attach, detach, resize.

use bakery_client::{Disk, DiskList, Metadata};

use super::{Bakery, ServiceError, io_err};
use crate::db::{DeleteDisk, DiskLink, DiskRow};
use crate::domain::disks::{check_new_size, check_resize, mib_to_bytes};
use crate::domain::names::{DiskId, Serial};
use crate::domain::nbd::ROOT_IMAGE;
use crate::events::EventKind;
use crate::fsutil;

/// The image file inside a disk's directory.
pub const DISK_IMAGE: &str = "disk.img";

impl Bakery {
    /// Refuses making `what`, which may grow to `bytes`, when that together with what the
    /// existing sparse disks and NBD root images may still grow into and `--min-free-space`
    /// exceeds the free space: disks are never overcommitted.
    pub(crate) async fn check_space(&self, what: &str, bytes: u64) -> Result<(), ServiceError> {
        let locations: Vec<String> = self
            .db(|s| s.disks())
            .await?
            .into_iter()
            .map(|d| d.location)
            .collect();
        let dir = self.layout.disks.clone();
        let (free, promised) = self
            .blocking(move || {
                let free = fsutil::free_bytes(&dir)
                    .map_err(io_err(format!("cannot stat {}", dir.display())))?;
                Ok((free, promised_bytes(&locations)))
            })
            .await?;
        let minimum = self.config.min_free_space;
        let total = bytes.saturating_add(promised).saturating_add(minimum);
        if total > free {
            return Err(ServiceError::DiskOvercommit {
                what: what.to_owned(),
                needed: bytes,
                promised,
                free,
                minimum,
            });
        }
        Ok(())
    }

    /// Every disk.
    pub async fn disks(&self) -> Result<DiskList, ServiceError> {
        let rows = self.db(|s| s.disks()).await?;
        Ok(DiskList {
            disks: rows
                .iter()
                .map(|d| (d.id.to_string(), self.disk_view(d)))
                .collect(),
        })
    }

    /// One disk.
    pub async fn disk(&self, id: &DiskId) -> Result<Disk, ServiceError> {
        let key = id.clone();
        self.db(move |s| s.disk(&key))
            .await?
            .map(|d| self.disk_view(&d))
            .ok_or_else(|| ServiceError::DiskNotFound(id.to_string()))
    }

    /// Creates a detached disk of `size` MiB: `<data>/disks/<uuid>/disk.img`, sparse.
    pub async fn create_disk(&self, size: i64, ephemeral: bool) -> Result<Disk, ServiceError> {
        check_new_size(size)?;
        let bytes = mib_to_bytes(size);
        self.check_space(&format!("a {size} MiB disk"), bytes)
            .await?;
        let id = DiskId::random();
        let tmp = self.layout.tmp.join(id.as_str());
        let dest = self.layout.disk(&id);
        let row = DiskRow {
            id: id.clone(),
            location: dest.display().to_string(),
            size,
            ephemeral,
            is_root: false,
            pi: None,
            position: 0,
            metadata: Metadata::new(),
        };
        let (t, d) = (tmp.clone(), dest.clone());
        let made = self
            .blocking(move || {
                std::fs::create_dir(&t)
                    .map_err(io_err(format!("cannot create {}", t.display())))?;
                let file = std::fs::File::create_new(t.join(DISK_IMAGE))
                    .map_err(io_err("cannot create disk image"))?;
                file.set_len(bytes)
                    .map_err(io_err("cannot size disk image"))?;
                std::fs::rename(&t, &d)
                    .map_err(io_err(format!("cannot move disk to {}", d.display())))?;
                Ok(())
            })
            .await;
        if let Err(e) = made {
            self.trash(&tmp);
            return Err(e);
        }
        let (insert, event) = (row.clone(), EventKind::DiskCreated.disk(&id));
        if let Err(e) = self.db(move |s| s.insert_disk(&insert, event)).await {
            self.trash(&dest);
            return Err(e);
        }
        tracing::info!(disk = %id, size, ephemeral, "disk created");
        Ok(self.disk_view(&row))
    }

    /// Deletes a detached disk; an unknown disk is fine (idempotent).
    pub async fn delete_disk(&self, id: &DiskId) -> Result<(), ServiceError> {
        let (key, event) = (id.clone(), EventKind::DiskDeleted.disk(id));
        match self.db(move |s| s.delete_disk(&key, event)).await? {
            DeleteDisk::Deleted(row) => {
                self.trash(std::path::Path::new(&row.location));
                self.trash(&self.layout.disk_snapshots(id));
                tracing::info!(disk = %id, "disk deleted");
                Ok(())
            }
            DeleteDisk::NotFound => Ok(()),
            DeleteDisk::Attached(serial) => Err(ServiceError::DiskAttached {
                disk: id.to_string(),
                serial: serial.to_string(),
            }),
        }
    }

    fn link_error(serial: &Serial, disk: &DiskId, link: DiskLink) -> Result<(), ServiceError> {
        match link {
            DiskLink::Done => Ok(()),
            DiskLink::UnknownPi => Err(ServiceError::PiNotFound(serial.to_string())),
            DiskLink::PiNotBaked(state) => Err(ServiceError::NotBaked {
                serial: serial.to_string(),
                state: state.as_str(),
            }),
            DiskLink::UnknownDisk => Err(ServiceError::DiskNotFound(disk.to_string())),
            DiskLink::AttachedElsewhere(owner) => Err(ServiceError::DiskAttached {
                disk: disk.to_string(),
                serial: owner.to_string(),
            }),
            DiskLink::RootDisk => Err(ServiceError::RootDisk {
                disk: disk.to_string(),
                serial: serial.to_string(),
            }),
        }
    }

    /// Attaches a disk to a baked Pi and exports it to that Pi.
    pub async fn attach_disk(&self, serial: &Serial, id: &DiskId) -> Result<(), ServiceError> {
        let (s, d) = (serial.clone(), id.clone());
        let event = EventKind::DiskAttached.pi(serial).with_disk(id);
        let images = self.disk_images.lock().await;
        let link = self.db(move |st| st.attach_disk(&s, &d, event)).await?;
        drop(images);
        Self::link_error(serial, id, link)?;
        tracing::info!(%serial, disk = %id, "disk attached");
        self.reexport().await?;
        self.notify_change();
        Ok(())
    }

    /// Detaches a disk from a Pi (never its root disk).
    pub async fn detach_disk(&self, serial: &Serial, id: &DiskId) -> Result<(), ServiceError> {
        let (s, d) = (serial.clone(), id.clone());
        let event = EventKind::DiskDetached.pi(serial).with_disk(id);
        let link = self.db(move |st| st.detach_disk(&s, &d, event)).await?;
        let link = match link {
            DiskLink::UnknownDisk => {
                return Err(ServiceError::DiskNotAttached {
                    disk: id.to_string(),
                    serial: serial.to_string(),
                });
            }
            other => other,
        };
        Self::link_error(serial, id, link)?;
        tracing::info!(%serial, disk = %id, "disk detached");
        self.reexport().await?;
        self.notify_change();
        Ok(())
    }

    /// Grows a detached disk to `size` MiB.
    pub async fn resize_disk(&self, id: &DiskId, size: i64) -> Result<Disk, ServiceError> {
        let current = self.disk(id).await?;
        if let Some(serial) = current.attached_to {
            return Err(ServiceError::DiskAttached {
                disk: id.to_string(),
                serial,
            });
        }
        check_resize(id.as_str(), current.size, size)?;
        let grow = mib_to_bytes(size) - mib_to_bytes(current.size);
        self.check_space(&format!("growing disk {id} to {size} MiB"), grow)
            .await?;
        let image = std::path::PathBuf::from(&current.location).join(DISK_IMAGE);
        let bytes = mib_to_bytes(size);
        self.blocking(move || {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags_nofollow()
                .open(&image)
                .map_err(io_err(format!("cannot open {}", image.display())))?;
            file.set_len(bytes)
                .map_err(io_err(format!("cannot resize {}", image.display())))
        })
        .await?;
        let key = id.clone();
        match self.db(move |s| s.set_disk_size(&key, size)).await? {
            Some(Ok(row)) => {
                tracing::info!(disk = %id, size, "disk resized");
                Ok(self.disk_view(&row))
            }
            Some(Err(serial)) => Err(ServiceError::DiskAttached {
                disk: id.to_string(),
                serial: serial.to_string(),
            }),
            None => Err(ServiceError::DiskNotFound(id.to_string())),
        }
    }

    /// Replaces a disk's metadata.
    pub async fn set_disk_metadata(
        &self,
        id: &DiskId,
        metadata: Metadata,
    ) -> Result<Disk, ServiceError> {
        let key = id.clone();
        self.db(move |s| s.set_disk_metadata(&key, &metadata))
            .await?
            .map(|d| self.disk_view(&d))
            .ok_or_else(|| ServiceError::DiskNotFound(id.to_string()))
    }
}

/// The bytes the sparse images under `locations` may still grow into: apparent size minus
/// allocated blocks of each data disk's `disk.img` and each NBD root's `root.ext4` (an NFS
/// root disk, a directory tree, has no such file and promises nothing).
fn promised_bytes(locations: &[String]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    locations
        .iter()
        .flat_map(|l| [DISK_IMAGE, ROOT_IMAGE].map(|f| std::path::Path::new(l).join(f)))
        .filter_map(|image| std::fs::symlink_metadata(image).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len().saturating_sub(m.blocks().saturating_mul(512)))
        .fold(0, u64::saturating_add)
}

/// Bytes allocated to the regular file `path` (its data, not its holes); an error naming it
/// when it is missing or not a regular file (a symlink planted in an exported directory).
pub(crate) fn allocated_bytes(path: &std::path::Path) -> Result<u64, ServiceError> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path)
        .map_err(io_err(format!("cannot stat {}", path.display())))?;
    if !md.is_file() {
        return Err(ServiceError::Io {
            context: format!("cannot use {}", path.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    Ok(md.blocks().saturating_mul(512))
}

/// `O_NOFOLLOW` for opening disk images (a disk dir is exported to a Pi, which could plant a
/// symlink named `disk.img`).
trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}
