//! Disks: their rows, attaching and detaching, sizes and metadata.

use bakery_client::{Metadata, PiState};
use rusqlite::{Connection, params};

use super::pis::get_pi;
use super::{
    DbError, NewEvent, Store, checked, checked_opt, corrupt, fetch_all, fetch_one, json, snapshots,
};
use crate::domain::names::{DiskId, Serial};

/// A disk as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskRow {
    /// The id (a UUID).
    pub id: DiskId,
    /// The exported directory.
    pub location: String,
    /// Size in MiB (0 for root disks).
    pub size: i64,
    /// Destroyed with its Pi on unbake.
    pub ephemeral: bool,
    /// A Pi's root disk.
    pub is_root: bool,
    /// The Pi it is attached to.
    pub pi: Option<Serial>,
    /// Attach order (root disks 0).
    pub position: i64,
    /// Caller metadata.
    pub metadata: Metadata,
}

/// What [`Store::delete_disk`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteDisk {
    /// Deleted; the row it had.
    Deleted(DiskRow),
    /// No such disk.
    NotFound,
    /// Attached to this Pi.
    Attached(Serial),
}

/// What [`Store::attach_disk`] / [`Store::detach_disk`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DiskLink {
    /// Done (or already so).
    Done,
    /// No such Pi.
    UnknownPi,
    /// The Pi is not baked.
    PiNotBaked(PiState),
    /// No such disk (or, for detach, not attached to that Pi).
    UnknownDisk,
    /// Attached to another Pi.
    AttachedElsewhere(Serial),
    /// The Pi's root disk.
    RootDisk,
}

pub(super) const DISK_COLUMNS: &str =
    "id, location, size, ephemeral, is_root, pi, position, metadata";

type RawDisk = (String, String, i64, bool, bool, Option<String>, i64, String);

pub(super) fn disk_from_raw(raw: RawDisk) -> Result<DiskRow, DbError> {
    let (id, location, size, ephemeral, is_root, pi, position, metadata) = raw;
    let metadata =
        serde_json::from_str(&metadata).map_err(|_| corrupt("disks.metadata", &metadata))?;
    Ok(DiskRow {
        id: checked("disks.id", id)?,
        location,
        size,
        ephemeral,
        is_root,
        pi: checked_opt("disks.pi", pi)?,
        position,
        metadata,
    })
}

pub(super) fn get_disk(tx: &Connection, id: &DiskId) -> Result<Option<DiskRow>, DbError> {
    fetch_one(
        tx,
        &format!("SELECT {DISK_COLUMNS} FROM disks WHERE id = ?1"),
        params![id],
        disk_from_raw,
    )
}

pub(super) fn insert_disk(tx: &Connection, disk: &DiskRow) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO disks (id, location, size, ephemeral, is_root, pi, position, metadata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            disk.id,
            disk.location,
            disk.size,
            disk.ephemeral,
            disk.is_root,
            disk.pi,
            disk.position,
            json(&disk.metadata)
        ],
    )?;
    Ok(())
}

impl Store {
    /// Adds a disk, writing `event`.
    pub fn insert_disk(&self, disk: &DiskRow, event: NewEvent) -> Result<(), DbError> {
        self.change(|tx, events| {
            insert_disk(tx, disk)?;
            events.push(event);
            Ok(())
        })
    }

    /// One disk.
    pub fn disk(&self, id: &DiskId) -> Result<Option<DiskRow>, DbError> {
        get_disk(&self.conn(), id)
    }

    /// Every disk.
    pub fn disks(&self) -> Result<Vec<DiskRow>, DbError> {
        self.query_disks("ORDER BY id", params![])
    }

    /// The disks of a Pi, root first then in attach order.
    pub fn disks_of(&self, serial: &Serial) -> Result<Vec<DiskRow>, DbError> {
        self.query_disks(
            "WHERE pi = ?1 ORDER BY is_root DESC, position, id",
            params![serial],
        )
    }

    fn query_disks(
        &self,
        clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<DiskRow>, DbError> {
        fetch_all(
            &self.conn(),
            &format!("SELECT {DISK_COLUMNS} FROM disks {clause}"),
            args,
            disk_from_raw,
        )
    }

    /// Deletes a detached disk's row and its snapshots' rows, writing `event` when deleted.
    pub fn delete_disk(&self, id: &DiskId, event: NewEvent) -> Result<DeleteDisk, DbError> {
        self.change(|tx, events| {
            let Some(disk) = get_disk(tx, id)? else {
                return Ok(DeleteDisk::NotFound);
            };
            if let Some(pi) = disk.pi.clone() {
                return Ok(DeleteDisk::Attached(pi));
            }
            snapshots::delete_snapshots_of(tx, id)?;
            tx.execute("DELETE FROM disks WHERE id = ?1", params![id])?;
            events.push(event);
            Ok(DeleteDisk::Deleted(disk))
        })
    }

    /// Attaches a disk to a baked Pi (idempotent for the same Pi), writing `event` when it
    /// was not attached yet.
    pub fn attach_disk(
        &self,
        serial: &Serial,
        id: &DiskId,
        event: NewEvent,
    ) -> Result<DiskLink, DbError> {
        self.change(|tx, events| {
            let Some(pi) = get_pi(tx, serial)? else {
                return Ok(DiskLink::UnknownPi);
            };
            let Some(disk) = get_disk(tx, id)? else {
                return Ok(DiskLink::UnknownDisk);
            };
            match disk.pi {
                Some(owner) if owner == *serial => return Ok(DiskLink::Done),
                Some(owner) => return Ok(DiskLink::AttachedElsewhere(owner)),
                None => {}
            }
            if pi.state != PiState::Baked {
                return Ok(DiskLink::PiNotBaked(pi.state));
            }
            let next: i64 = tx.query_row(
                "SELECT COALESCE(MAX(position), 0) + 1 FROM disks WHERE pi = ?1",
                params![serial],
                |r| r.get(0),
            )?;
            tx.execute(
                "UPDATE disks SET pi = ?2, position = ?3 WHERE id = ?1",
                params![id, serial, next],
            )?;
            events.push(event);
            Ok(DiskLink::Done)
        })
    }

    /// Detaches a disk from a Pi, writing `event`; the root disk is refused.
    pub fn detach_disk(
        &self,
        serial: &Serial,
        id: &DiskId,
        event: NewEvent,
    ) -> Result<DiskLink, DbError> {
        self.change(|tx, events| {
            if get_pi(tx, serial)?.is_none() {
                return Ok(DiskLink::UnknownPi);
            }
            let Some(disk) = get_disk(tx, id)? else {
                return Ok(DiskLink::UnknownDisk);
            };
            if disk.pi.as_ref() != Some(serial) {
                return Ok(DiskLink::UnknownDisk);
            }
            if disk.is_root {
                return Ok(DiskLink::RootDisk);
            }
            tx.execute(
                "UPDATE disks SET pi = NULL, position = 0 WHERE id = ?1",
                params![id],
            )?;
            events.push(event);
            Ok(DiskLink::Done)
        })
    }

    /// Records a new size of a detached disk; `Err(owner)` if it got attached meanwhile.
    pub fn set_disk_size(
        &self,
        id: &DiskId,
        size: i64,
    ) -> Result<Option<Result<DiskRow, Serial>>, DbError> {
        self.write(|tx| {
            let Some(disk) = get_disk(tx, id)? else {
                return Ok(None);
            };
            if let Some(pi) = disk.pi {
                return Ok(Some(Err(pi)));
            }
            tx.execute(
                "UPDATE disks SET size = ?2 WHERE id = ?1",
                params![id, size],
            )?;
            Ok(get_disk(tx, id)?.map(Ok))
        })
    }

    /// Replaces a disk's metadata; `None` if no such disk.
    pub fn set_disk_metadata(
        &self,
        id: &DiskId,
        metadata: &Metadata,
    ) -> Result<Option<DiskRow>, DbError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE disks SET metadata = ?2 WHERE id = ?1",
                params![id, json(metadata)],
            )?;
            if n == 0 {
                return Ok(None);
            }
            get_disk(tx, id)
        })
    }
}
