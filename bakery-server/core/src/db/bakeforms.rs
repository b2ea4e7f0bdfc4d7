//! Bakeforms: their rows and import states.

use bakery_client::BakeformState;
use rusqlite::{Connection, OptionalExtension, params};

use super::{DbError, NewEvent, Store, checked, corrupt, fetch_all, fetch_one, now};
use crate::domain::names::{BakeformName, Serial};

/// A bakeform as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BakeformRow {
    /// The name.
    pub name: BakeformName,
    /// Its directory (`<data>/bakeforms/<name>`).
    pub location: String,
    /// Import state.
    pub state: BakeformState,
    /// Why the import failed.
    pub error: Option<String>,
}

/// What [`Store::delete_bakeform`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteBakeform {
    /// Deleted; the row it had.
    Deleted(BakeformRow),
    /// No such bakeform.
    NotFound,
    /// A Pi in the oven uses it.
    InUse(Serial),
    /// It is being imported.
    Importing,
}

const BAKEFORM_COLUMNS: &str = "name, location, state, error";

type RawBakeform = (String, String, String, Option<String>);

fn bakeform_from_raw(raw: RawBakeform) -> Result<BakeformRow, DbError> {
    let (name, location, state, error) = raw;
    let state = state
        .parse()
        .map_err(|_| corrupt("bakeforms.state", &state))?;
    Ok(BakeformRow {
        name: checked("bakeforms.name", name)?,
        location,
        state,
        error,
    })
}

pub(super) fn get_bakeform(
    tx: &Connection,
    name: &BakeformName,
) -> Result<Option<BakeformRow>, DbError> {
    fetch_one(
        tx,
        &format!("SELECT {BAKEFORM_COLUMNS} FROM bakeforms WHERE name = ?1"),
        params![name],
        bakeform_from_raw,
    )
}

impl Store {
    /// Adds a bakeform in state `importing`, replacing a failed one of that name; `false` if
    /// the name is taken by a bakeform that is importing or ready. Writes `event` when added.
    pub fn insert_bakeform(
        &self,
        name: &BakeformName,
        location: &str,
        event: NewEvent,
    ) -> Result<bool, DbError> {
        self.change(|tx, events| {
            let n = tx.execute(
                "INSERT INTO bakeforms (name, location, state, created_at)
                 VALUES (?1, ?2, 'importing', ?3)
                 ON CONFLICT (name) DO UPDATE SET location = excluded.location,
                     state = 'importing', error = NULL, created_at = excluded.created_at
                 WHERE bakeforms.state = 'failed'",
                params![name, location, now()],
            )?;
            if n == 1 {
                events.push(event);
            }
            Ok(n == 1)
        })
    }

    /// Marks an importing bakeform failed, keeping `error` to show and clearing its location
    /// (nothing of it is on disk); writes `event` when it was importing.
    pub fn set_bakeform_failed(
        &self,
        name: &BakeformName,
        error: &str,
        event: NewEvent,
    ) -> Result<Option<BakeformRow>, DbError> {
        self.change(|tx, events| {
            let n = tx.execute(
                "UPDATE bakeforms SET state = ?2, error = ?3, location = ''
                 WHERE name = ?1 AND state = 'importing'",
                params![name, BakeformState::Failed.as_str(), error],
            )?;
            if n == 1 {
                events.push(event);
            }
            get_bakeform(tx, name)
        })
    }

    /// Marks an importing bakeform ready, writing `event`.
    pub fn set_bakeform_ready(
        &self,
        name: &BakeformName,
        event: NewEvent,
    ) -> Result<Option<BakeformRow>, DbError> {
        self.change(|tx, events| {
            let n = tx.execute(
                "UPDATE bakeforms SET state = ?2, error = NULL WHERE name = ?1",
                params![name, BakeformState::Ready.as_str()],
            )?;
            if n == 1 {
                events.push(event);
            }
            get_bakeform(tx, name)
        })
    }

    /// Deletes a ready or failed bakeform that no Pi in the oven uses, writing `event`.
    pub fn delete_bakeform(
        &self,
        name: &BakeformName,
        event: NewEvent,
    ) -> Result<DeleteBakeform, DbError> {
        self.change(|tx, events| {
            let Some(bakeform) = get_bakeform(tx, name)? else {
                return Ok(DeleteBakeform::NotFound);
            };
            if bakeform.state == BakeformState::Importing {
                return Ok(DeleteBakeform::Importing);
            }
            let user: Option<Serial> = tx
                .query_row(
                    "SELECT serial FROM pis WHERE bakeform = ?1 AND state != 'fridge'
                     ORDER BY serial LIMIT 1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(serial) = user {
                return Ok(DeleteBakeform::InUse(serial));
            }
            tx.execute(
                "UPDATE pis SET bakeform = NULL WHERE bakeform = ?1",
                params![name],
            )?;
            tx.execute("DELETE FROM bakeforms WHERE name = ?1", params![name])?;
            events.push(event);
            Ok(DeleteBakeform::Deleted(bakeform))
        })
    }

    /// One bakeform.
    pub fn bakeform(&self, name: &BakeformName) -> Result<Option<BakeformRow>, DbError> {
        get_bakeform(&self.conn(), name)
    }

    /// Every bakeform, by name.
    pub fn bakeforms(&self) -> Result<Vec<BakeformRow>, DbError> {
        fetch_all(
            &self.conn(),
            &format!("SELECT {BAKEFORM_COLUMNS} FROM bakeforms ORDER BY name"),
            [],
            bakeform_from_raw,
        )
    }

    /// The most recently imported ready bakeform (root-level boot files come from it).
    pub fn newest_ready_bakeform(&self) -> Result<Option<BakeformRow>, DbError> {
        fetch_one(
            &self.conn(),
            &format!(
                "SELECT {BAKEFORM_COLUMNS} FROM bakeforms WHERE state = 'ready'
                 ORDER BY created_at DESC, name LIMIT 1"
            ),
            [],
            bakeform_from_raw,
        )
    }
}
