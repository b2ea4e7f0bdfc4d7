//! What must be exported over NFS, each directory with its stable export number (schema 3):
//! a disk gets a number the first time it is exported and keeps it while it exists (attached,
//! detached, re-attached, across restarts); numbers are handed out round-robin, so a number
//! comes back only after all [`EXPORT_NUMBERS`] have been used. nfs-ganesha's `Export_Id` is
//! derived from it, and must neither change for a mounted directory nor be reused at once for
//! another path (ganesha refuses a reload that gives an existing id a new path).

use std::collections::BTreeSet;

use rusqlite::{Transaction, params};

use super::{DbError, Store, corrupt};
use crate::domain::exports::{EXPORT_NUMBERS, ExportEntry};
use crate::domain::nbd::NbdRoot;

impl Store {
    /// Every directory that must be exported: the disks of Pis that are preparing or baked,
    /// each with its Pi's address and stable export number (numbered below).
    pub fn export_entries(&self) -> Result<Vec<ExportEntry>, DbError> {
        self.write(export_entries)
    }

    /// The Pis preparing or baked with an NBD root that is in place, with their addresses.
    pub fn nbd_roots(&self) -> Result<Vec<NbdRoot>, DbError> {
        self.write(nbd_roots)
    }
}

/// The disks of Pis that are preparing or baked, each with its Pi's address and its export
/// number, numbering first-time exports and forgetting the numbers of destroyed disks.
fn export_entries(tx: &Transaction<'_>) -> Result<Vec<ExportEntry>, DbError> {
    tx.execute(
        "DELETE FROM export_numbers WHERE disk NOT IN (SELECT id FROM disks)",
        [],
    )?;
    let unnumbered = {
        let mut stmt = tx.prepare(
            "SELECT d.id FROM disks d JOIN pis p ON d.pi = p.serial
             LEFT JOIN export_numbers n ON n.disk = d.id
             WHERE p.state IN ('preparing', 'baked') AND n.disk IS NULL
             ORDER BY d.rowid",
        )?;
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?
    };
    if !unnumbered.is_empty() {
        number(tx, &unnumbered)?;
    }
    let mut stmt = tx.prepare(
        "SELECT p.serial, d.location, p.address, n.number, d.is_root
         FROM disks d JOIN pis p ON d.pi = p.serial JOIN export_numbers n ON n.disk = d.id
         WHERE p.state IN ('preparing', 'baked') ORDER BY d.location",
    )?;
    let raws = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter()
        .map(|(serial, path, address, number, root)| {
            let address = match address {
                Some(a) => Some(a.parse().map_err(|_| corrupt("pis.address", &a))?),
                None => None,
            };
            Ok(ExportEntry {
                number,
                root,
                serial,
                path,
                address,
            })
        })
        .collect()
}

/// The root disks of Pis preparing or baked with `root_kind = 'nbd'`, with their addresses.
fn nbd_roots(tx: &Transaction<'_>) -> Result<Vec<NbdRoot>, DbError> {
    let mut stmt = tx.prepare(
        "SELECT p.serial, d.location, p.address FROM pis p JOIN disks d ON d.pi = p.serial
         WHERE d.is_root = 1 AND p.root_kind = 'nbd' AND p.state IN ('preparing', 'baked')
         ORDER BY p.serial",
    )?;
    let raws = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter()
        .map(|(serial, location, address)| {
            let address = match address {
                Some(a) => Some(a.parse().map_err(|_| corrupt("pis.address", &a))?),
                None => None,
            };
            Ok(NbdRoot {
                serial,
                root_dir: location.into(),
                address,
            })
        })
        .collect()
}

/// Gives each of `disks` the next free number after the last one handed out.
fn number(tx: &Transaction<'_>, disks: &[String]) -> Result<(), DbError> {
    let mut used: BTreeSet<i64> = {
        let mut stmt = tx.prepare("SELECT number FROM export_numbers")?;
        stmt.query_map([], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    if used.len() + disks.len() > EXPORT_NUMBERS as usize {
        return Err(DbError::ExportNumbersExhausted {
            wanted: used.len() + disks.len(),
        });
    }
    let mut next: i64 = tx.query_row(
        "SELECT next FROM export_number_next WHERE id = 0",
        [],
        |r| r.get(0),
    )?;
    for disk in disks {
        next = next.rem_euclid(EXPORT_NUMBERS);
        while used.contains(&next) {
            next = (next + 1) % EXPORT_NUMBERS;
        }
        tx.execute(
            "INSERT INTO export_numbers (disk, number) VALUES (?1, ?2)",
            params![disk, next],
        )?;
        used.insert(next);
        next = (next + 1) % EXPORT_NUMBERS;
    }
    tx.execute(
        "UPDATE export_number_next SET next = ?1 WHERE id = 0",
        params![next],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use bakery_client::{Metadata, RootKind};

    use crate::db::tests::{bf, did, ev, ser};
    use crate::db::{DiskRow, PiChange, StartBake, Store};

    fn disk(id: &str) -> DiskRow {
        DiskRow {
            id: did(id),
            location: format!("/d/disks/{id}"),
            size: 8,
            ephemeral: false,
            is_root: false,
            pi: None,
            position: 0,
            metadata: Metadata::new(),
        }
    }

    /// Bakes Pi `serial` with root disk `root`.
    fn bake(s: &Store, serial: &str, root: &str) {
        let serial = &ser(serial);
        s.register_pi(serial).unwrap();
        let StartBake::Started(_) = s
            .start_bake(
                &bf("os"),
                None,
                true,
                (&did(root), RootKind::Nfs),
                &crate::domain::hardware::Constraints::default(),
                ev("bakeStarted"),
            )
            .unwrap()
        else {
            panic!("bake should start");
        };
        let mut row = disk(root);
        row.is_root = true;
        row.pi = Some(serial.clone());
        assert_eq!(s.add_root_disk(serial, &row).unwrap(), PiChange::Done(()));
        assert!(matches!(
            s.finish_prepare(serial, ev("bakeFinished")).unwrap(),
            PiChange::Done(_)
        ));
    }

    fn numbers(s: &Store) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = s
            .export_entries()
            .unwrap()
            .into_iter()
            .map(|e| (e.path.rsplit('/').next().unwrap().to_owned(), e.number))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn numbers_stay_with_their_disk_and_are_not_reused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bakery.db");
        let s = Store::open(&path).unwrap();
        s.insert_bakeform(&bf("os"), "/d/bakeforms/os", ev("bakeformImporting"))
            .unwrap();
        s.set_bakeform_ready(&bf("os"), ev("bakeformImported"))
            .unwrap();
        bake(&s, "00000001", "r1");
        s.insert_disk(&disk("d1"), ev("diskCreated")).unwrap();
        s.attach_disk(&ser("00000001"), &did("d1"), ev("diskAttached"))
            .unwrap();
        assert_eq!(numbers(&s), [("d1".into(), 1), ("r1".into(), 0)]);

        // Detached and attached again: the same number; a reopened database: the same numbers.
        s.detach_disk(&ser("00000001"), &did("d1"), ev("diskDetached"))
            .unwrap();
        assert_eq!(numbers(&s), [("r1".into(), 0)]);
        s.attach_disk(&ser("00000001"), &did("d1"), ev("diskAttached"))
            .unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(numbers(&s), [("d1".into(), 1), ("r1".into(), 0)]);

        // Unbaked and baked again: the new root gets a new number, not the old root's.
        s.start_unbake(&ser("00000001"), ev("unbakeStarted"))
            .unwrap();
        assert_eq!(numbers(&s), []);
        s.finish_unbake(&ser("00000001"), None, ev("unbaked"))
            .unwrap();
        bake(&s, "00000001", "r2");
        s.attach_disk(&ser("00000001"), &did("d1"), ev("diskAttached"))
            .unwrap();
        assert_eq!(numbers(&s), [("d1".into(), 1), ("r2".into(), 2)]);
    }
}
