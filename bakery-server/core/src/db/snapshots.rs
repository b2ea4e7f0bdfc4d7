//! Disk snapshots (schema 6): one row per snapshot image, deleted with its disk (by
//! [`Store::delete_disk`] and when an ephemeral disk goes with its Pi).

use bakery_client::Metadata;
use rusqlite::{Connection, params};

use super::disks::get_disk;
use super::{DbError, DiskRow, NewEvent, Store, checked, corrupt, fetch_all, fetch_one, json};
use crate::domain::names::{DiskId, Serial, SnapshotId};

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    /// The id (a UUID).
    pub id: SnapshotId,
    /// The disk it was taken of.
    pub disk: DiskId,
    /// The disk's size when it was taken, in MiB.
    pub size: i64,
    /// When it was taken, Unix milliseconds.
    pub created_at: i64,
    /// Caller metadata (the BOSH director's snapshot metadata).
    pub metadata: Metadata,
}

const SNAPSHOT_COLUMNS: &str = "id, disk, size, created_at, metadata";

type RawSnapshot = (String, String, i64, i64, String);

fn snapshot_from_raw(raw: RawSnapshot) -> Result<SnapshotRow, DbError> {
    let (id, disk, size, created_at, metadata) = raw;
    let metadata =
        serde_json::from_str(&metadata).map_err(|_| corrupt("snapshots.metadata", &metadata))?;
    Ok(SnapshotRow {
        id: checked("snapshots.id", id)?,
        disk: checked("snapshots.disk", disk)?,
        size,
        created_at,
        metadata,
    })
}

fn get_snapshot(conn: &Connection, id: &SnapshotId) -> Result<Option<SnapshotRow>, DbError> {
    fetch_one(
        conn,
        &format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?1"),
        params![id],
        snapshot_from_raw,
    )
}

/// Deletes the snapshot rows of disk `id` (inside the transaction deleting the disk).
pub(super) fn delete_snapshots_of(conn: &Connection, id: &DiskId) -> Result<(), DbError> {
    conn.execute("DELETE FROM snapshots WHERE disk = ?1", params![id])?;
    Ok(())
}

impl Store {
    /// Records a snapshot, writing `event`; `false` (nothing written) when its disk is gone.
    pub fn insert_snapshot(&self, row: &SnapshotRow, event: NewEvent) -> Result<bool, DbError> {
        self.change(|tx, events| {
            if get_disk(tx, &row.disk)?.is_none() {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO snapshots (id, disk, size, created_at, metadata)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    row.id,
                    row.disk,
                    row.size,
                    row.created_at,
                    json(&row.metadata)
                ],
            )?;
            events.push(event);
            Ok(true)
        })
    }

    /// One snapshot.
    pub fn snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRow>, DbError> {
        get_snapshot(&self.conn(), id)
    }

    /// The snapshots of disk `disk`, oldest first.
    pub fn snapshots_of(&self, disk: &DiskId) -> Result<Vec<SnapshotRow>, DbError> {
        fetch_all(
            &self.conn(),
            &format!(
                "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE disk = ?1 ORDER BY created_at, id"
            ),
            params![disk],
            snapshot_from_raw,
        )
    }

    /// Every snapshot (start-up repair compares them with the files).
    pub fn snapshots(&self) -> Result<Vec<SnapshotRow>, DbError> {
        fetch_all(
            &self.conn(),
            &format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots ORDER BY disk, created_at, id"),
            params![],
            snapshot_from_raw,
        )
    }

    /// Deletes a snapshot's row, writing `event`; the row it had, `None` if unknown.
    pub fn delete_snapshot(
        &self,
        id: &SnapshotId,
        event: NewEvent,
    ) -> Result<Option<SnapshotRow>, DbError> {
        self.change(|tx, events| {
            let Some(row) = get_snapshot(tx, id)? else {
                return Ok(None);
            };
            tx.execute("DELETE FROM snapshots WHERE id = ?1", params![id])?;
            events.push(event);
            Ok(Some(row))
        })
    }

    /// Records that disk `disk`'s image was replaced by a clone of a snapshot of `size` MiB,
    /// writing `event`; `None` if the disk is gone, `Some(Err(owner))` if it got attached.
    pub fn restored_disk(
        &self,
        disk: &DiskId,
        size: i64,
        event: NewEvent,
    ) -> Result<Option<Result<DiskRow, Serial>>, DbError> {
        self.change(|tx, events| {
            let Some(row) = get_disk(tx, disk)? else {
                return Ok(None);
            };
            if let Some(pi) = row.pi {
                return Ok(Some(Err(pi)));
            }
            tx.execute(
                "UPDATE disks SET size = ?2 WHERE id = ?1",
                params![disk, size],
            )?;
            events.push(event);
            Ok(get_disk(tx, disk)?.map(Ok))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::{did, ev, snid, store};

    fn disk(id: &str) -> DiskRow {
        DiskRow {
            id: did(id),
            location: format!("/d/{id}"),
            size: 8,
            ephemeral: false,
            is_root: false,
            pi: None,
            position: 0,
            metadata: Metadata::new(),
        }
    }

    fn snap(id: &str, disk: &str, at: i64) -> SnapshotRow {
        SnapshotRow {
            id: snid(id),
            disk: did(disk),
            size: 8,
            created_at: at,
            metadata: Metadata::from([("job".to_owned(), serde_json::json!("db"))]),
        }
    }

    #[test]
    fn snapshots_are_listed_deleted_and_go_with_their_disk() {
        let (_dir, s) = store();
        s.insert_disk(&disk("d1"), ev("diskCreated")).unwrap();
        assert!(s.insert_snapshot(&snap("s2", "d1", 20), ev("x")).unwrap());
        assert!(s.insert_snapshot(&snap("s1", "d1", 10), ev("x")).unwrap());
        assert!(!s.insert_snapshot(&snap("s3", "gone", 5), ev("x")).unwrap());
        let ids: Vec<SnapshotId> = s
            .snapshots_of(&did("d1"))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [snid("s1"), snid("s2")]);
        assert_eq!(
            s.snapshot(&snid("s1")).unwrap().unwrap().metadata["job"],
            "db"
        );
        assert_eq!(
            s.delete_snapshot(&snid("s1"), ev("x")).unwrap().unwrap().id,
            snid("s1")
        );
        assert_eq!(s.delete_snapshot(&snid("s1"), ev("x")).unwrap(), None);
        let restored = s
            .restored_disk(&did("d1"), 4, ev("x"))
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(restored.size, 4);
        assert!(matches!(
            s.delete_disk(&did("d1"), ev("diskDeleted")).unwrap(),
            crate::db::DeleteDisk::Deleted(_)
        ));
        assert!(s.snapshots().unwrap().is_empty());
        assert_eq!(s.restored_disk(&did("d1"), 4, ev("x")).unwrap(), None);
    }
}
