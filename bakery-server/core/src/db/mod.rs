//! The inventory in SQLite: the one source of truth for Pis, bakeforms and disks.
//!
//! Every state change runs in one `BEGIN IMMEDIATE` transaction, which also writes the change's
//! event (passed in by the caller, written only when the change happens), so the event log
//! never disagrees with the state, crash or not. Once committed, the events go to the store's
//! [`EventSink`] in id order. The connection sits behind a mutex; callers on the async runtime
//! reach it through [`Store::call`].
//!
//! This file holds the store itself (opening, migrations, transactions, the shared row
//! helpers); each resource's rows and queries are in their own file: `pis.rs`, `lifecycle.rs`
//! (bakes, resets, unbakes), `cloudinit.rs`, `disks.rs`, `bakeforms.rs`, `exports.rs`,
//! `snapshots.rs`, `observe.rs` (events and boot records).

mod bakeforms;
mod cloudinit;
mod disks;
mod exports;
mod lifecycle;
mod observe;
mod pis;
mod schema;
mod snapshots;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Params, Row, Transaction, TransactionBehavior};
use thiserror::Error;

use crate::domain::names::{BakeformName, DiskId, Serial, SnapshotId};

pub use bakeforms::{BakeformRow, DeleteBakeform};
pub use disks::{DeleteDisk, DiskLink, DiskRow};
pub use lifecycle::{PiChange, StartBake};
pub use observe::{BootRecordChange, BootRecordRow, EVENTS_KEPT, EventSink, NewEvent};
pub use pis::PiRow;
pub use snapshots::SnapshotRow;

/// A failure of the database.
#[derive(Debug, Error)]
pub enum DbError {
    /// Opening the database file failed.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// Applying a schema migration failed.
    #[error("cannot migrate database to schema version {version}: {source}")]
    Migrate {
        /// The version being migrated to.
        version: usize,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database has a newer schema than this binary knows.
    #[error("database schema version {found} is newer than this bakery ({known})")]
    TooNew {
        /// The version in the file.
        found: i64,
        /// The newest version this binary knows.
        known: usize,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] rusqlite::Error),
    /// More directories to export than there are export numbers.
    #[error("{wanted} directories to export, but only {max} export numbers", max = crate::domain::exports::EXPORT_NUMBERS)]
    ExportNumbersExhausted {
        /// How many numbers would be in use.
        wanted: usize,
    },
    /// A stored value could not be understood.
    #[error("corrupt database value in {what}: {value:?}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// The value found.
        value: String,
    },
    /// The blocking task running a [`Store::call`] panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Checked names are stored as their text; read back, they are checked again (a value that
/// fails is a corrupt database, never a name to join to a path).
macro_rules! sql_name {
    ($($name:ty),*) => {$(
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.as_str().to_sql()
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                <$name>::parse(value.as_str()?)
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    )*};
}

sql_name!(Serial, BakeformName, DiskId, SnapshotId);

/// Checks a name read from `what` (`pis.serial`, ...), a failure being a corrupt database.
fn checked<T: std::str::FromStr>(what: &'static str, value: String) -> Result<T, DbError> {
    value.parse().map_err(|_| corrupt(what, value))
}

/// [`checked`] for a column that may be `NULL`.
fn checked_opt<T: std::str::FromStr>(
    what: &'static str,
    value: Option<String>,
) -> Result<Option<T>, DbError> {
    value.map(|v| checked(what, v)).transpose()
}

/// The inventory database.
pub struct Store {
    conn: Mutex<Connection>,
    /// Told about each event once its transaction committed.
    sink: RwLock<Option<Weak<dyn EventSink>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn corrupt(what: &'static str, value: impl Into<String>) -> DbError {
    DbError::Corrupt {
        what,
        value: value.into(),
    }
}

/// Reads a row's columns, in `SELECT` order, into a tuple of raw values (`RawPi`, ...).
fn raw<T>(row: &Row<'_>) -> rusqlite::Result<T>
where
    T: for<'r> TryFrom<&'r Row<'r>, Error = rusqlite::Error>,
{
    T::try_from(row)
}

/// The row `sql` selects with `args`, converted from its raw columns; `None` when there is none.
fn fetch_one<R, T>(
    conn: &Connection,
    sql: &str,
    args: impl Params,
    convert: fn(R) -> Result<T, DbError>,
) -> Result<Option<T>, DbError>
where
    R: for<'r> TryFrom<&'r Row<'r>, Error = rusqlite::Error>,
{
    conn.query_row(sql, args, raw::<R>)
        .optional()?
        .map(convert)
        .transpose()
}

/// Every row `sql` selects with `args`, converted from its raw columns once all are read.
fn fetch_all<R, T>(
    conn: &Connection,
    sql: &str,
    args: impl Params,
    convert: fn(R) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError>
where
    R: for<'r> TryFrom<&'r Row<'r>, Error = rusqlite::Error>,
{
    let mut stmt = conn.prepare(sql)?;
    let raws = stmt
        .query_map(args, raw::<R>)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(convert).collect()
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store, DbError> {
        let open_err = |source| DbError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .map_err(open_err)?;
        let store = Store {
            conn: Mutex::new(conn),
            sink: RwLock::new(None),
        };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the store off the async runtime: in `tokio::task::spawn_blocking`, on a
    /// clone of the handle. This is how async code reaches the store; a task that panicked or
    /// was cancelled is [`DbError::Task`].
    pub async fn call<T, F>(self: &Arc<Self>, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, DbError> + Send + 'static,
    {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Sets who is told about committed events (replacing any earlier sink). Held weakly:
    /// the sink usually holds the store.
    pub fn set_event_sink(&self, sink: Weak<dyn EventSink>) {
        *self.sink.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction with no event.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.change(|tx, _| f(tx))
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction; the events `f` pushes are inserted in
    /// that transaction, and handed to the sink after the commit, still under the connection
    /// lock, so the sink sees committed events only and in id order. When `f` or the commit
    /// fails, nothing is written and the sink hears nothing.
    fn change<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &mut Vec<NewEvent>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.change_events(f).map(|(out, _)| out)
    }

    /// [`Store::change`], also returning the events written, with their ids.
    fn change_events<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>, &mut Vec<NewEvent>) -> Result<T, DbError>,
    ) -> Result<(T, Vec<bakery_client::Event>), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut pending = Vec::new();
        let out = f(&tx, &mut pending)?;
        let stored = pending
            .iter()
            .map(|event| observe::insert_event(&tx, event))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        if !stored.is_empty() {
            let sink = self
                .sink
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(Weak::upgrade);
            if let Some(sink) = sink {
                for event in &stored {
                    sink.committed(event);
                }
            }
        }
        drop(conn);
        Ok((out, stored))
    }

    fn migrate(&self) -> Result<(), DbError> {
        let mut conn = self.conn();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = schema::MIGRATIONS.len();
        if version > known as i64 {
            return Err(DbError::TooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in schema::MIGRATIONS
            .iter()
            .enumerate()
            .skip(version.max(0) as usize)
        {
            let to = i + 1;
            let migrate_err = |source| DbError::Migrate {
                version: to,
                source,
            };
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(migrate_err)?;
            tx.execute_batch(sql).map_err(migrate_err)?;
            tx.pragma_update(None, "user_version", to as i64)
                .map_err(migrate_err)?;
            tx.commit().map_err(migrate_err)?;
        }
        Ok(())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, DbError> {
        Ok(self
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod event_tests;
#[cfg(test)]
mod tests;
