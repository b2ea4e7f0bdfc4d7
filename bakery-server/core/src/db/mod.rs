//! The inventory in SQLite: the one source of truth for Pis, bakeforms and disks.
//!
//! Every state change runs in one `BEGIN IMMEDIATE` transaction, which also writes the change's
//! event (passed in by the caller, written only when the change happens), so the event log
//! never disagrees with the state, crash or not. Once committed, the events go to the store's
//! [`EventSink`] in id order. The connection sits behind a mutex; callers on the async runtime
//! reach it through `spawn_blocking`.

mod exports;
mod observe;
mod schema;
mod snapshots;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use bakery_client::{BakeformState, Labels, Metadata, PiModel, PiState, RootKind, StaticNetwork};

use rusqlite::{
    Connection, OptionalExtension, Params, Row, Transaction, TransactionBehavior, params,
};
use thiserror::Error;

use crate::domain::exports::ExportEntry;
use crate::domain::hardware::Constraints;
use crate::domain::lifecycle::{Event, parse_state, transition};

pub use observe::{BootRecordChange, BootRecordRow, EVENTS_KEPT, EventSink, NewEvent, outcome_str};
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
}

/// A Pi as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PiRow {
    /// The serial.
    pub serial: String,
    /// The lifecycle state.
    pub state: PiState,
    /// The bakeform it is (being) baked from.
    pub bakeform: Option<String>,
    /// The address it was last seen at on the boot path.
    pub address: Option<IpAddr>,
    /// Its static network, if any.
    pub network: Option<StaticNetwork>,
    /// Caller metadata.
    pub metadata: Metadata,
    /// Why the last bake failed.
    pub last_error: Option<String>,
    /// Whether to power it on once baked.
    pub power_on: bool,
    /// The operation in flight while preparing: `bake` or `reset`.
    pub operation: Option<String>,
    /// The id of the root disk being made while preparing a bake.
    pub pending_root: Option<String>,
    /// How its root reaches it (the last bake's choice; `nfs` in the fridge).
    pub root_kind: RootKind,
    /// The model the boot path revealed, if it did.
    pub model: Option<PiModel>,
    /// The operator's labels.
    pub labels: Labels,
    /// When it was registered (unix ms).
    pub created_at: i64,
    /// When it last asked for a boot file (unix ms, to the minute).
    pub last_seen: Option<i64>,
}

/// A disk as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskRow {
    /// The id (a UUID).
    pub id: String,
    /// The exported directory.
    pub location: String,
    /// Size in MiB (0 for root disks).
    pub size: i64,
    /// Destroyed with its Pi on unbake.
    pub ephemeral: bool,
    /// A Pi's root disk.
    pub is_root: bool,
    /// The Pi it is attached to.
    pub pi: Option<String>,
    /// Attach order (root disks 0).
    pub position: i64,
    /// Caller metadata.
    pub metadata: Metadata,
}

/// A bakeform as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BakeformRow {
    /// The name.
    pub name: String,
    /// Its directory (`<data>/bakeforms/<name>`).
    pub location: String,
    /// Import state.
    pub state: BakeformState,
    /// Why the import failed.
    pub error: Option<String>,
}

/// What [`Store::start_bake`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum StartBake {
    /// This Pi moved from the fridge to preparing.
    Started(Box<PiRow>),
    /// No such bakeform.
    UnknownBakeform,
    /// The bakeform is still importing or failed.
    BakeformNotReady(BakeformState),
    /// Every Pi is in use.
    NoFreePi,
}

/// The outcome of a change that needs a Pi in a given state.
#[derive(Debug, Clone, PartialEq)]
pub enum PiChange<T> {
    /// Done.
    Done(T),
    /// No such Pi.
    UnknownPi,
    /// The Pi is in the wrong state for it.
    WrongState(PiState),
}

/// What [`Store::delete_disk`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteDisk {
    /// Deleted; the row it had.
    Deleted(DiskRow),
    /// No such disk.
    NotFound,
    /// Attached to this Pi.
    Attached(String),
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
    AttachedElsewhere(String),
    /// The Pi's root disk.
    RootDisk,
}

/// What [`Store::delete_bakeform`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteBakeform {
    /// Deleted; the row it had.
    Deleted(BakeformRow),
    /// No such bakeform.
    NotFound,
    /// A Pi in the oven uses it.
    InUse(String),
    /// It is being imported.
    Importing,
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

fn state_str(state: PiState) -> &'static str {
    state.as_str()
}

fn bakeform_state_str(state: BakeformState) -> &'static str {
    match state {
        BakeformState::Importing => "importing",
        BakeformState::Ready => "ready",
        BakeformState::Failed => "failed",
    }
}

fn corrupt(what: &'static str, value: impl Into<String>) -> DbError {
    DbError::Corrupt {
        what,
        value: value.into(),
    }
}

const PI_COLUMNS: &str = "serial, state, bakeform, address, network, metadata, last_error, power_on, operation, pending_root, root_kind, model, labels, created_at, last_seen";
const DISK_COLUMNS: &str = "id, location, size, ephemeral, is_root, pi, position, metadata";
const BAKEFORM_COLUMNS: &str = "name, location, state, error";

/// Raw column values of a Pi, converted after the query (conversion can fail with a DbError).
type RawPi = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    bool,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    String,
    i64,
    Option<i64>,
);

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

fn pi_from_raw(raw: RawPi) -> Result<PiRow, DbError> {
    let (
        serial,
        state,
        bakeform,
        address,
        network,
        metadata,
        last_error,
        power_on,
        op,
        pending,
        root_kind,
        model,
        labels,
        created_at,
        last_seen,
    ) = raw;
    let model = match model {
        Some(m) => Some(m.parse().map_err(|_| corrupt("pis.model", &m))?),
        None => None,
    };
    let labels = serde_json::from_str(&labels).map_err(|_| corrupt("pis.labels", &labels))?;
    let root_kind =
        RootKind::parse(&root_kind).ok_or_else(|| corrupt("pis.root_kind", &root_kind))?;
    let state = parse_state(&state).ok_or_else(|| corrupt("pis.state", &state))?;
    let address = match address {
        Some(a) => Some(a.parse().map_err(|_| corrupt("pis.address", &a))?),
        None => None,
    };
    let network = match network {
        Some(n) => Some(serde_json::from_str(&n).map_err(|_| corrupt("pis.network", &n))?),
        None => None,
    };
    let metadata =
        serde_json::from_str(&metadata).map_err(|_| corrupt("pis.metadata", &metadata))?;
    Ok(PiRow {
        serial,
        state,
        bakeform,
        address,
        network,
        metadata,
        last_error,
        power_on,
        operation: op,
        pending_root: pending,
        root_kind,
        model,
        labels,
        created_at,
        last_seen,
    })
}

type RawDisk = (String, String, i64, bool, bool, Option<String>, i64, String);

fn disk_from_raw(raw: RawDisk) -> Result<DiskRow, DbError> {
    let (id, location, size, ephemeral, is_root, pi, position, metadata) = raw;
    let metadata =
        serde_json::from_str(&metadata).map_err(|_| corrupt("disks.metadata", &metadata))?;
    Ok(DiskRow {
        id,
        location,
        size,
        ephemeral,
        is_root,
        pi,
        position,
        metadata,
    })
}

type RawBakeform = (String, String, String, Option<String>);

fn bakeform_from_raw(raw: RawBakeform) -> Result<BakeformRow, DbError> {
    let (name, location, state, error) = raw;
    let state = match state.as_str() {
        "importing" => BakeformState::Importing,
        "ready" => BakeformState::Ready,
        "failed" => BakeformState::Failed,
        _ => return Err(corrupt("bakeforms.state", state)),
    };
    Ok(BakeformRow {
        name,
        location,
        state,
        error,
    })
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

fn get_pi(tx: &Connection, serial: &str) -> Result<Option<PiRow>, DbError> {
    fetch_one(
        tx,
        &format!("SELECT {PI_COLUMNS} FROM pis WHERE serial = ?1"),
        params![serial],
        pi_from_raw,
    )
}

fn get_disk(tx: &Connection, id: &str) -> Result<Option<DiskRow>, DbError> {
    fetch_one(
        tx,
        &format!("SELECT {DISK_COLUMNS} FROM disks WHERE id = ?1"),
        params![id],
        disk_from_raw,
    )
}

fn get_bakeform(tx: &Connection, name: &str) -> Result<Option<BakeformRow>, DbError> {
    fetch_one(
        tx,
        &format!("SELECT {BAKEFORM_COLUMNS} FROM bakeforms WHERE name = ?1"),
        params![name],
        bakeform_from_raw,
    )
}

fn set_state(tx: &Transaction<'_>, serial: &str, state: PiState) -> Result<(), DbError> {
    tx.execute(
        "UPDATE pis SET state = ?2 WHERE serial = ?1",
        params![serial, state_str(state)],
    )?;
    Ok(())
}

/// Applies `event` to the Pi's stored state inside `tx`; `Err(state)` if not allowed.
fn step(
    tx: &Transaction<'_>,
    pi: &PiRow,
    event: Event,
) -> Result<Result<PiState, PiState>, DbError> {
    match transition(pi.state, event) {
        Ok(to) => {
            set_state(tx, &pi.serial, to)?;
            Ok(Ok(to))
        }
        Err(e) => Ok(Err(e.from)),
    }
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

    /// Moves the Pi `serial` through `event` and runs `then`, in one transaction that also
    /// writes `record` when `then` is done; an unknown Pi or one in a state `event` does not
    /// apply to is left as it is.
    fn advance<T>(
        &self,
        serial: &str,
        event: Event,
        record: NewEvent,
        then: impl FnOnce(&Transaction<'_>) -> Result<PiChange<T>, DbError>,
    ) -> Result<PiChange<T>, DbError> {
        self.change(|tx, events| {
            let Some(pi) = get_pi(tx, serial)? else {
                return Ok(PiChange::UnknownPi);
            };
            if let Err(state) = step(tx, &pi, event)? {
                return Ok(PiChange::WrongState(state));
            }
            let done = then(tx)?;
            if matches!(done, PiChange::Done(_)) {
                events.push(record);
            }
            Ok(done)
        })
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

    // ---- Pis ----

    /// Registers a Pi in the fridge, writing no event (tests' shortcut); `true` if it was new.
    #[cfg(test)]
    pub(crate) fn register_pi(&self, serial: &str) -> Result<bool, DbError> {
        self.write(|tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO pis (serial, state, created_at) VALUES (?1, 'fridge', ?2)",
                params![serial, now()],
            )?;
            Ok(n == 1)
        })
    }

    /// Registers a Pi in the fridge unless the inventory already holds `max` Pis, writing
    /// `event` when it is new: `Some(true)` if it was new, `Some(false)` if it was known,
    /// `None` if the inventory is full (nothing written).
    pub fn register_pi_within(
        &self,
        serial: &str,
        max: u32,
        event: NewEvent,
    ) -> Result<Option<bool>, DbError> {
        self.change(|tx, events| {
            let known: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM pis WHERE serial = ?1)",
                params![serial],
                |r| r.get(0),
            )?;
            if known {
                return Ok(Some(false));
            }
            let count: i64 = tx.query_row("SELECT COUNT(*) FROM pis", [], |r| r.get(0))?;
            if count >= i64::from(max) {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO pis (serial, state, created_at) VALUES (?1, 'fridge', ?2)",
                params![serial, now()],
            )?;
            events.push(event);
            Ok(Some(true))
        })
    }

    /// The Pi other than `serial` last seen at `address`, if any.
    pub fn pi_serial_at(&self, address: IpAddr, serial: &str) -> Result<Option<String>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT serial FROM pis WHERE address = ?1 AND serial != ?2 LIMIT 1")?;
        let mut rows = stmt.query(params![address.to_string(), serial])?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    }

    /// One Pi.
    pub fn pi(&self, serial: &str) -> Result<Option<PiRow>, DbError> {
        get_pi(&self.conn(), serial)
    }

    /// Every Pi, by serial.
    pub fn pis(&self) -> Result<Vec<PiRow>, DbError> {
        fetch_all(
            &self.conn(),
            &format!("SELECT {PI_COLUMNS} FROM pis ORDER BY serial"),
            [],
            pi_from_raw,
        )
    }

    /// Records the address a Pi was seen at. When it changed, returns the previous address
    /// (if any) and the Pi's state; `None` when unchanged or unknown.
    pub fn set_address(
        &self,
        serial: &str,
        address: IpAddr,
    ) -> Result<Option<(Option<IpAddr>, PiState)>, DbError> {
        self.write(|tx| {
            let Some(pi) = get_pi(tx, serial)? else {
                return Ok(None);
            };
            if pi.address == Some(address) {
                return Ok(None);
            }
            tx.execute(
                "UPDATE pis SET address = ?2 WHERE serial = ?1",
                params![serial, address.to_string()],
            )?;
            Ok(Some((pi.address, pi.state)))
        })
    }

    /// Records that a Pi asked for a boot file at `at` (unix ms) and, when the request
    /// revealed it, its model. Writes only when the model is news or the last record is a
    /// minute old or more (a booting Pi asks for dozens of files); `true` if it wrote.
    pub fn saw_pi(&self, serial: &str, model: Option<PiModel>, at: i64) -> Result<bool, DbError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE pis SET last_seen = ?2, model = COALESCE(?3, model) WHERE serial = ?1
                 AND (last_seen IS NULL OR last_seen <= ?2 - ?4
                      OR (?3 IS NOT NULL AND model IS NOT ?3))",
                params![
                    serial,
                    at,
                    model.map(PiModel::as_str),
                    crate::domain::hardware::LAST_SEEN_GRANULARITY_MS
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Replaces a Pi's labels; `None` if no such Pi.
    pub fn set_pi_labels(&self, serial: &str, labels: &Labels) -> Result<Option<PiRow>, DbError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE pis SET labels = ?2 WHERE serial = ?1",
                params![serial, json(labels)],
            )?;
            if n == 0 {
                return Ok(None);
            }
            get_pi(tx, serial)
        })
    }

    /// Replaces a Pi's metadata; `None` if no such Pi.
    pub fn set_pi_metadata(
        &self,
        serial: &str,
        metadata: &Metadata,
    ) -> Result<Option<PiRow>, DbError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE pis SET metadata = ?2 WHERE serial = ?1",
                params![serial, json(metadata)],
            )?;
            if n == 0 {
                return Ok(None);
            }
            get_pi(tx, serial)
        })
    }

    /// Records whether a Pi should be powered (restored on start-up); `false` if unknown.
    pub fn set_power_on(&self, serial: &str, power_on: bool) -> Result<bool, DbError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE pis SET power_on = ?2 WHERE serial = ?1",
                params![serial, power_on],
            )?;
            Ok(n == 1)
        })
    }

    // ---- the lifecycle ----

    /// Picks a Pi from the fridge for `bakeform` and moves it to preparing, with the id its
    /// root disk will get; writes `event`, its `pi` set to the Pi picked, when it started.
    pub fn start_bake(
        &self,
        bakeform: &str,
        network: Option<&StaticNetwork>,
        power_on: bool,
        root: (&str, RootKind),
        constraints: &Constraints,
        mut event: NewEvent,
    ) -> Result<StartBake, DbError> {
        let (root_id, root_kind) = root;
        self.change(|tx, events| {
            match get_bakeform(tx, bakeform)? {
                None => return Ok(StartBake::UnknownBakeform),
                Some(b) if b.state != BakeformState::Ready => {
                    return Ok(StartBake::BakeformNotReady(b.state));
                }
                Some(_) => {}
            }
            let fridge = fetch_all(
                tx,
                &format!("SELECT {PI_COLUMNS} FROM pis WHERE state = 'fridge' ORDER BY serial"),
                [],
                pi_from_raw,
            )?;
            let Some(pi) = fridge
                .into_iter()
                .find(|p| constraints.admit(p.model, &p.labels))
            else {
                return Ok(StartBake::NoFreePi);
            };
            let serial = pi.serial.clone();
            if step(tx, &pi, Event::StartBake)?.is_err() {
                return Ok(StartBake::NoFreePi);
            }
            tx.execute(
                "UPDATE pis SET bakeform = ?2, network = ?3, power_on = ?4, last_error = NULL,
                 operation = 'bake', pending_root = ?5, root_kind = ?6 WHERE serial = ?1",
                params![
                    serial,
                    bakeform,
                    network.map(json),
                    power_on,
                    root_id,
                    root_kind.as_str()
                ],
            )?;
            let Some(pi) = get_pi(tx, &serial)? else {
                return Ok(StartBake::NoFreePi);
            };
            event.pi = Some(serial);
            events.push(event);
            Ok(StartBake::Started(Box::new(pi)))
        })
    }

    /// Moves a baked Pi to preparing for a reset of its root, writing `event`.
    pub fn start_reset(&self, serial: &str, event: NewEvent) -> Result<PiChange<PiRow>, DbError> {
        self.advance(serial, Event::StartReset, event, |tx| {
            tx.execute(
                "UPDATE pis SET operation = 'reset', last_error = NULL WHERE serial = ?1",
                params![serial],
            )?;
            pi_now(tx, serial)
        })
    }

    /// Adds the root disk of a Pi being baked (still preparing).
    pub fn add_root_disk(&self, serial: &str, root: &DiskRow) -> Result<PiChange<()>, DbError> {
        self.write(|tx| {
            let Some(pi) = get_pi(tx, serial)? else {
                return Ok(PiChange::UnknownPi);
            };
            if pi.state != PiState::Preparing {
                return Ok(PiChange::WrongState(pi.state));
            }
            insert_disk(tx, root)?;
            Ok(PiChange::Done(()))
        })
    }

    /// Finishes preparing: the Pi is baked; writes `event`.
    pub fn finish_prepare(
        &self,
        serial: &str,
        event: NewEvent,
    ) -> Result<PiChange<PiRow>, DbError> {
        self.advance(serial, Event::Prepared, event, |tx| {
            tx.execute(
                "UPDATE pis SET operation = NULL, pending_root = NULL WHERE serial = ?1",
                params![serial],
            )?;
            pi_now(tx, serial)
        })
    }

    /// Preparing failed (or was interrupted): the Pi goes back to the fridge with `error`.
    /// A reset that fails also loses the Pi's disks: returns the rows removed (root and
    /// ephemeral), others are detached. Writes `event`.
    pub fn fail_prepare(
        &self,
        serial: &str,
        error: &str,
        event: NewEvent,
    ) -> Result<PiChange<Vec<DiskRow>>, DbError> {
        self.advance(serial, Event::PrepareFailed, event, |tx| {
            back_to_fridge(tx, serial, Some(error))
        })
    }

    /// Moves a baked Pi to unbaking, writing `event`.
    pub fn start_unbake(&self, serial: &str, event: NewEvent) -> Result<PiChange<PiRow>, DbError> {
        self.advance(serial, Event::StartUnbake, event, |tx| pi_now(tx, serial))
    }

    /// Finishes an unbake: the root and ephemeral disks' rows are deleted (returned, so their
    /// directories can be trashed), other disks detached, the Pi back in the fridge.
    /// `error` is recorded as the Pi's `last_error` (a bake that failed after its root was made).
    /// Writes `event`.
    pub fn finish_unbake(
        &self,
        serial: &str,
        error: Option<&str>,
        event: NewEvent,
    ) -> Result<PiChange<Vec<DiskRow>>, DbError> {
        self.advance(serial, Event::Unbaked, event, |tx| {
            back_to_fridge(tx, serial, error)
        })
    }

    // ---- cloud-init ----

    /// Sets (`Some`) or removes (`None`) a cloud-init file of a Pi in the oven. `None` if no
    /// such Pi; `Some(Err(state))` with its state if it is in the fridge.
    pub fn set_cloud_init(
        &self,
        serial: &str,
        file: &str,
        data: Option<&[u8]>,
    ) -> Result<Option<Result<(), PiState>>, DbError> {
        self.change(|tx, _| {
            let Some(pi) = get_pi(tx, serial)? else {
                return Ok(None);
            };
            if pi.state == PiState::Fridge {
                return Ok(Some(Err(pi.state)));
            }
            match data {
                Some(data) => tx.execute(
                    "INSERT INTO cloud_init (pi, file, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT (pi, file) DO UPDATE SET data = excluded.data",
                    params![serial, file, data],
                )?,
                None => tx.execute(
                    "DELETE FROM cloud_init WHERE pi = ?1 AND file = ?2",
                    params![serial, file],
                )?,
            };
            Ok(Some(Ok(())))
        })
    }

    /// A cloud-init file a Pi's operator set, if any.
    pub fn cloud_init(&self, serial: &str, file: &str) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT data FROM cloud_init WHERE pi = ?1 AND file = ?2",
                params![serial, file],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// The Pis bakery last saw at `address` on the boot path (more than one only when an
    /// address moved from one Pi to another).
    pub fn pis_at_address(&self, address: IpAddr) -> Result<Vec<PiRow>, DbError> {
        fetch_all(
            &self.conn(),
            &format!("SELECT {PI_COLUMNS} FROM pis WHERE address = ?1 ORDER BY serial"),
            params![address.to_string()],
            pi_from_raw,
        )
    }

    // ---- disks ----

    /// Adds a disk, writing `event`.
    pub fn insert_disk(&self, disk: &DiskRow, event: NewEvent) -> Result<(), DbError> {
        self.change(|tx, events| {
            insert_disk(tx, disk)?;
            events.push(event);
            Ok(())
        })
    }

    /// One disk.
    pub fn disk(&self, id: &str) -> Result<Option<DiskRow>, DbError> {
        get_disk(&self.conn(), id)
    }

    /// Every disk.
    pub fn disks(&self) -> Result<Vec<DiskRow>, DbError> {
        self.query_disks("ORDER BY id", params![])
    }

    /// The disks of a Pi, root first then in attach order.
    pub fn disks_of(&self, serial: &str) -> Result<Vec<DiskRow>, DbError> {
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
    pub fn delete_disk(&self, id: &str, event: NewEvent) -> Result<DeleteDisk, DbError> {
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
        serial: &str,
        id: &str,
        event: NewEvent,
    ) -> Result<DiskLink, DbError> {
        self.change(|tx, events| {
            let Some(pi) = get_pi(tx, serial)? else {
                return Ok(DiskLink::UnknownPi);
            };
            let Some(disk) = get_disk(tx, id)? else {
                return Ok(DiskLink::UnknownDisk);
            };
            match disk.pi.as_deref() {
                Some(owner) if owner == serial => return Ok(DiskLink::Done),
                Some(owner) => return Ok(DiskLink::AttachedElsewhere(owner.to_owned())),
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
        serial: &str,
        id: &str,
        event: NewEvent,
    ) -> Result<DiskLink, DbError> {
        self.change(|tx, events| {
            if get_pi(tx, serial)?.is_none() {
                return Ok(DiskLink::UnknownPi);
            }
            let Some(disk) = get_disk(tx, id)? else {
                return Ok(DiskLink::UnknownDisk);
            };
            if disk.pi.as_deref() != Some(serial) {
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
        id: &str,
        size: i64,
    ) -> Result<Option<Result<DiskRow, String>>, DbError> {
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
        id: &str,
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

    // ---- bakeforms ----

    /// Adds a bakeform in state `importing`, replacing a failed one of that name; `false` if
    /// the name is taken by a bakeform that is importing or ready. Writes `event` when added.
    pub fn insert_bakeform(
        &self,
        name: &str,
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
        name: &str,
        error: &str,
        event: NewEvent,
    ) -> Result<Option<BakeformRow>, DbError> {
        self.change(|tx, events| {
            let n = tx.execute(
                "UPDATE bakeforms SET state = ?2, error = ?3, location = ''
                 WHERE name = ?1 AND state = 'importing'",
                params![name, bakeform_state_str(BakeformState::Failed), error],
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
        name: &str,
        event: NewEvent,
    ) -> Result<Option<BakeformRow>, DbError> {
        self.change(|tx, events| {
            let n = tx.execute(
                "UPDATE bakeforms SET state = ?2, error = NULL WHERE name = ?1",
                params![name, bakeform_state_str(BakeformState::Ready)],
            )?;
            if n == 1 {
                events.push(event);
            }
            get_bakeform(tx, name)
        })
    }

    /// Deletes a ready or failed bakeform that no Pi in the oven uses, writing `event`.
    pub fn delete_bakeform(&self, name: &str, event: NewEvent) -> Result<DeleteBakeform, DbError> {
        self.change(|tx, events| {
            let Some(bakeform) = get_bakeform(tx, name)? else {
                return Ok(DeleteBakeform::NotFound);
            };
            if bakeform.state == BakeformState::Importing {
                return Ok(DeleteBakeform::Importing);
            }
            let user: Option<String> = tx
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
    pub fn bakeform(&self, name: &str) -> Result<Option<BakeformRow>, DbError> {
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

    // ---- exports ----

    /// Every directory that must be exported: the disks of Pis that are preparing or baked,
    /// each with its Pi's address and stable export number (numbered in `db/exports.rs`).
    pub fn export_entries(&self) -> Result<Vec<ExportEntry>, DbError> {
        self.write(exports::export_entries)
    }

    /// The Pis preparing or baked with an NBD root that is in place, with their addresses.
    pub fn nbd_roots(&self) -> Result<Vec<crate::domain::nbd::NbdRoot>, DbError> {
        self.write(exports::nbd_roots)
    }
}

fn insert_disk(tx: &Connection, disk: &DiskRow) -> Result<(), DbError> {
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

/// The Pi `serial` as it is now in `tx`.
fn pi_now(tx: &Transaction<'_>, serial: &str) -> Result<PiChange<PiRow>, DbError> {
    Ok(get_pi(tx, serial)?.map_or(PiChange::UnknownPi, PiChange::Done))
}

/// Puts a Pi back in the fridge: its root and ephemeral disks' rows deleted (returned), its
/// other disks detached, its bake settings cleared and `error` kept as its `last_error`.
fn back_to_fridge(
    tx: &Transaction<'_>,
    serial: &str,
    error: Option<&str>,
) -> Result<PiChange<Vec<DiskRow>>, DbError> {
    let removed = release_disks(tx, serial)?;
    tx.execute("DELETE FROM cloud_init WHERE pi = ?1", params![serial])?;
    tx.execute(
        "UPDATE pis SET operation = NULL, pending_root = NULL, bakeform = NULL,
         network = NULL, metadata = '{}', last_error = ?2, root_kind = 'nfs' WHERE serial = ?1",
        params![serial, error],
    )?;
    Ok(PiChange::Done(removed))
}

/// Deletes the root and ephemeral disks of a Pi (returned) with their snapshots' rows,
/// detaches the others.
fn release_disks(tx: &Transaction<'_>, serial: &str) -> Result<Vec<DiskRow>, DbError> {
    let removed = fetch_all(
        tx,
        &format!(
            "SELECT {DISK_COLUMNS} FROM disks WHERE pi = ?1 AND (is_root = 1 OR ephemeral = 1)"
        ),
        params![serial],
        disk_from_raw,
    )?;
    for disk in &removed {
        snapshots::delete_snapshots_of(tx, &disk.id)?;
    }
    tx.execute(
        "DELETE FROM disks WHERE pi = ?1 AND (is_root = 1 OR ephemeral = 1)",
        params![serial],
    )?;
    tx.execute(
        "UPDATE disks SET pi = NULL, position = 0 WHERE pi = ?1",
        params![serial],
    )?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a fresh temporary directory (kept alive by the returned guard).
    pub(super) fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bakery.db")).unwrap();
        (dir, store)
    }

    /// An event of `kind` about nothing in particular.
    pub(super) fn ev(kind: &'static str) -> NewEvent {
        NewEvent {
            kind,
            ..NewEvent::default()
        }
    }

    /// Starts a bake of bakeform `os` with root `root`; panics unless it started.
    pub(super) fn started_bake(s: &Store, root: &str) -> Box<PiRow> {
        let StartBake::Started(pi) = s
            .start_bake(
                "os",
                None,
                true,
                (root, RootKind::Nfs),
                &Constraints::default(),
                ev("bakeStarted"),
            )
            .unwrap()
        else {
            panic!("bake should start");
        };
        pi
    }

    /// Attaches disk `id` to Pi `serial`, writing `diskAttached`.
    pub(super) fn attach(s: &Store, serial: &str, id: &str) -> DiskLink {
        s.attach_disk(serial, id, ev("diskAttached")).unwrap()
    }

    /// Detaches disk `id` from Pi `serial`, writing `diskDetached`.
    pub(super) fn detach(s: &Store, serial: &str, id: &str) -> DiskLink {
        s.detach_disk(serial, id, ev("diskDetached")).unwrap()
    }

    fn disk(id: &str, pi: Option<&str>, is_root: bool, ephemeral: bool) -> DiskRow {
        DiskRow {
            id: id.into(),
            location: format!("/d/disks/{id}"),
            size: if is_root { 0 } else { 8 },
            ephemeral,
            is_root,
            pi: pi.map(Into::into),
            position: 0,
            metadata: Metadata::new(),
        }
    }

    #[test]
    fn a_failed_bakeform_is_kept_shown_and_replaced_by_a_new_upload() {
        let (_d, s) = store();
        assert!(
            s.insert_bakeform("os", "/d/bakeforms/os", ev("bakeformImporting"))
                .unwrap()
        );
        let failed = s
            .set_bakeform_failed("os", "no ext4", ev("bakeformFailed"))
            .unwrap()
            .unwrap();
        assert_eq!(failed.state, BakeformState::Failed);
        assert_eq!(failed.error.as_deref(), Some("no ext4"));
        assert_eq!(s.bakeforms().unwrap(), [failed]);
        assert_eq!(
            s.start_bake(
                "os",
                None,
                true,
                ("r1", RootKind::Nfs),
                &Constraints::default(),
                ev("bakeStarted")
            )
            .unwrap(),
            StartBake::BakeformNotReady(BakeformState::Failed)
        );
        assert!(
            s.insert_bakeform("os", "/d/bakeforms/os", ev("bakeformImporting"))
                .unwrap()
        );
        let again = s.bakeform("os").unwrap().unwrap();
        assert_eq!((again.state, again.error), (BakeformState::Importing, None));
        assert!(
            !s.insert_bakeform("os", "/d/bakeforms/os", ev("bakeformImporting"))
                .unwrap()
        );
        s.set_bakeform_ready("os", ev("bakeformImported")).unwrap();
        assert!(
            s.set_bakeform_failed("os", "late", ev("bakeformFailed"))
                .unwrap()
                .unwrap()
                .state
                == BakeformState::Ready,
            "only an importing bakeform can fail"
        );
        assert!(
            !s.insert_bakeform("os", "/d/bakeforms/os", ev("bakeformImporting"))
                .unwrap()
        );
        s.insert_bakeform("bad", "/d/bakeforms/bad", ev("bakeformImporting"))
            .unwrap();
        s.set_bakeform_failed("bad", "no fat", ev("bakeformFailed"))
            .unwrap();
        assert!(matches!(
            s.delete_bakeform("bad", ev("bakeformDeleted")).unwrap(),
            DeleteBakeform::Deleted(_)
        ));
        assert_eq!(s.bakeform("bad").unwrap(), None);
    }

    #[test]
    fn migrations_are_recorded_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bakery.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            schema::MIGRATIONS.len() as i64
        );
        store.register_pi("1a2b3c4d").unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.pis().unwrap().len(), 1);
    }

    #[test]
    fn a_bake_with_constraints_takes_only_a_matching_pi_from_the_fridge() {
        let (_d, s) = store();
        for serial in ["00000001", "00000002", "00000003"] {
            s.register_pi(serial).unwrap();
        }
        s.insert_bakeform("os", "/d/bakeforms/os", ev("bakeformImporting"))
            .unwrap();
        s.set_bakeform_ready("os", ev("bakeformImported")).unwrap();
        assert!(s.saw_pi("00000002", Some(PiModel::Pi4), 1_000).unwrap());
        assert!(s.saw_pi("00000003", Some(PiModel::Pi4), 1_000).unwrap());
        let rack_b: Labels = [("rack".to_owned(), "b".to_owned())].into();
        let labelled = s.set_pi_labels("00000003", &rack_b).unwrap().unwrap();
        assert_eq!(labelled.labels, rack_b);
        assert_eq!(s.set_pi_labels("0000000f", &rack_b).unwrap(), None);
        let want = Constraints {
            model: Some(PiModel::Pi4),
            labels: rack_b.clone(),
        };
        let bake = |c: &Constraints, root: &str| {
            s.start_bake(
                "os",
                None,
                true,
                (root, RootKind::Nfs),
                c,
                ev("bakeStarted"),
            )
            .unwrap()
        };
        let StartBake::Started(pi) = bake(&want, "r1") else {
            panic!("a matching pi is in the fridge");
        };
        assert_eq!(pi.serial, "00000003");
        assert_eq!(bake(&want, "r2"), StartBake::NoFreePi);
        let pi4 = Constraints {
            model: Some(PiModel::Pi4),
            labels: Labels::new(),
        };
        let StartBake::Started(pi) = bake(&pi4, "r3") else {
            panic!("another pi 4 is in the fridge");
        };
        assert_eq!(pi.serial, "00000002");
        assert_eq!(bake(&pi4, "r4"), StartBake::NoFreePi);
        let StartBake::Started(pi) = bake(&Constraints::default(), "r5") else {
            panic!("the pi of unknown model is free");
        };
        assert_eq!((pi.serial.as_str(), pi.model), ("00000001", None));
    }

    #[test]
    fn the_boot_path_records_the_model_at_once_and_last_seen_once_a_minute() {
        let (_d, s) = store();
        s.register_pi("00000001").unwrap();
        let created = s.pi("00000001").unwrap().unwrap().created_at;
        assert!(created > 0);
        assert!(s.saw_pi("00000001", None, 100_000).unwrap());
        assert!(!s.saw_pi("00000001", None, 130_000).unwrap());
        assert!(s.saw_pi("00000001", Some(PiModel::Pi5), 130_000).unwrap());
        assert!(!s.saw_pi("00000001", Some(PiModel::Pi5), 140_000).unwrap());
        assert!(!s.saw_pi("00000001", None, 150_000).unwrap());
        let pi = s.pi("00000001").unwrap().unwrap();
        assert_eq!(
            (pi.model, pi.last_seen),
            (Some(PiModel::Pi5), Some(130_000))
        );
        assert!(s.saw_pi("00000001", None, 190_000).unwrap());
        let pi = s.pi("00000001").unwrap().unwrap();
        assert_eq!(
            (pi.model, pi.last_seen),
            (Some(PiModel::Pi5), Some(190_000))
        );
        assert!(!s.saw_pi("0000000f", Some(PiModel::Pi4), 1).unwrap());
    }

    #[test]
    fn bake_and_unbake_cycle() {
        let (_d, s) = store();
        assert!(s.register_pi("00000001").unwrap());
        assert!(!s.register_pi("00000001").unwrap());
        assert_eq!(
            s.start_bake(
                "os",
                None,
                true,
                ("r1", RootKind::Nfs),
                &Constraints::default(),
                ev("bakeStarted")
            )
            .unwrap(),
            StartBake::UnknownBakeform
        );
        assert!(
            s.insert_bakeform("os", "/d/bakeforms/os", ev("bakeformImporting"))
                .unwrap()
        );
        assert!(
            !s.insert_bakeform("os", "/d/bakeforms/os", ev("bakeformImporting"))
                .unwrap()
        );
        assert_eq!(
            s.start_bake(
                "os",
                None,
                true,
                ("r1", RootKind::Nfs),
                &Constraints::default(),
                ev("bakeStarted")
            )
            .unwrap(),
            StartBake::BakeformNotReady(BakeformState::Importing)
        );
        s.set_bakeform_ready("os", ev("bakeformImported")).unwrap();
        let pi = started_bake(&s, "r1");
        assert_eq!(pi.state, PiState::Preparing);
        assert_eq!(pi.pending_root.as_deref(), Some("r1"));
        assert_eq!(
            s.start_bake(
                "os",
                None,
                true,
                ("r2", RootKind::Nfs),
                &Constraints::default(),
                ev("bakeStarted")
            )
            .unwrap(),
            StartBake::NoFreePi
        );
        assert_eq!(
            s.delete_bakeform("os", ev("bakeformDeleted")).unwrap(),
            DeleteBakeform::InUse("00000001".into())
        );

        let root = disk("r1", Some("00000001"), true, false);
        assert_eq!(
            s.add_root_disk("00000001", &root).unwrap(),
            PiChange::Done(())
        );
        assert!(matches!(
            s.finish_prepare("00000001", ev("bakeFinished")).unwrap(),
            PiChange::Done(_)
        ));
        s.insert_disk(&disk("e1", None, false, true), ev("diskCreated"))
            .unwrap();
        s.insert_disk(&disk("p1", None, false, false), ev("diskCreated"))
            .unwrap();
        assert_eq!(attach(&s, "00000001", "e1"), DiskLink::Done);
        assert_eq!(attach(&s, "00000001", "p1"), DiskLink::Done);
        assert_eq!(detach(&s, "00000001", "r1"), DiskLink::RootDisk);
        assert_eq!(
            s.delete_disk("p1", ev("diskDeleted")).unwrap(),
            DeleteDisk::Attached("00000001".into())
        );
        let ids: Vec<_> = s
            .disks_of("00000001")
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids, ["r1", "e1", "p1"]);

        s.set_address("00000001", "10.0.0.9".parse().unwrap())
            .unwrap();
        assert_eq!(s.export_entries().unwrap().len(), 3);

        assert!(matches!(
            s.start_unbake("00000001", ev("unbakeStarted")).unwrap(),
            PiChange::Done(_)
        ));
        assert_eq!(s.export_entries().unwrap().len(), 0);
        let PiChange::Done(removed) = s.finish_unbake("00000001", None, ev("unbaked")).unwrap()
        else {
            panic!("unbake should finish");
        };
        let removed: Vec<_> = removed.into_iter().map(|d| d.id).collect();
        assert_eq!(removed.len(), 2);
        assert!(removed.contains(&"r1".to_owned()) && removed.contains(&"e1".to_owned()));
        assert_eq!(s.disk("p1").unwrap().unwrap().pi, None);
        assert_eq!(s.pi("00000001").unwrap().unwrap().state, PiState::Fridge);
        assert_eq!(
            s.start_unbake("00000001", ev("unbakeStarted")).unwrap(),
            PiChange::WrongState(PiState::Fridge)
        );
    }
}

#[cfg(test)]
mod event_tests {
    //! A change and its event commit together or not at all; the sink hears committed events
    //! only, in id order.

    use std::sync::{Arc, Mutex};

    use super::tests::{attach, detach, ev, started_bake, store};
    use super::*;

    /// A sink remembering what it heard.
    #[derive(Default)]
    struct Heard(Mutex<Vec<bakery_client::Event>>);

    impl EventSink for Heard {
        fn committed(&self, event: &bakery_client::Event) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    fn kinds(s: &Store) -> Vec<String> {
        s.events_since(0, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    fn with_sink() -> (tempfile::TempDir, Store, Arc<Heard>) {
        let (dir, s) = store();
        let heard = Arc::new(Heard::default());
        let sink: Weak<Heard> = Arc::downgrade(&heard);
        s.set_event_sink(sink);
        (dir, s, heard)
    }

    fn root(id: &str, serial: &str) -> DiskRow {
        DiskRow {
            id: id.into(),
            location: format!("/d/disks/{id}"),
            size: 0,
            ephemeral: true,
            is_root: true,
            pi: Some(serial.into()),
            position: 0,
            metadata: Metadata::new(),
        }
    }

    #[test]
    fn a_failing_change_writes_no_event() {
        let (_d, s, heard) = with_sink();
        assert_eq!(
            s.register_pi_within("00000001", 8, ev("registered"))
                .unwrap(),
            Some(true)
        );
        // Known already, or refused by the state machine: no event.
        assert_eq!(
            s.register_pi_within("00000001", 8, ev("registered"))
                .unwrap(),
            Some(false)
        );
        assert_eq!(
            s.start_unbake("00000001", ev("unbakeStarted")).unwrap(),
            PiChange::WrongState(PiState::Fridge)
        );
        assert_eq!(
            s.finish_prepare("00000001", ev("bakeFinished")).unwrap(),
            PiChange::WrongState(PiState::Fridge)
        );
        assert_eq!(
            s.start_bake(
                "os",
                None,
                true,
                ("r1", RootKind::Nfs),
                &Constraints::default(),
                ev("bakeStarted")
            )
            .unwrap(),
            StartBake::UnknownBakeform
        );
        assert_eq!(kinds(&s), ["registered"]);

        // A constraint violation (a second disk with the same id) rolls back disk and event.
        s.insert_bakeform("os", "/d/bakeforms/os", ev("bakeformImporting"))
            .unwrap();
        s.set_bakeform_ready("os", ev("bakeformImported")).unwrap();
        let pi = started_bake(&s, "r1");
        s.add_root_disk(&pi.serial, &root("r1", &pi.serial))
            .unwrap();
        let err = s.insert_disk(&root("r1", &pi.serial), ev("diskCreated"));
        assert!(
            matches!(err, Err(DbError::Query(_))),
            "duplicate disk id: {err:?}"
        );
        // A foreign key violation (a disk of an unknown Pi) likewise.
        let err = s.insert_disk(&root("r2", "0000ffff"), ev("diskCreated"));
        assert!(matches!(err, Err(DbError::Query(_))), "unknown pi: {err:?}");
        assert_eq!(
            kinds(&s),
            [
                "registered",
                "bakeformImporting",
                "bakeformImported",
                "bakeStarted"
            ]
        );
        let started = s.events_since(0, 100).unwrap().pop().unwrap();
        assert_eq!(started.pi.as_deref(), Some("00000001"), "pi of the bake");

        // A change that fails after its state step and its event: all of it is rolled back.
        let failed = s.change(|tx, events| {
            set_state(tx, "00000001", PiState::Baked)?;
            events.push(ev("bakeFinished"));
            tx.execute(
                "UPDATE pis SET state = 'nonsense' WHERE serial = ?1",
                params!["00000001"],
            )?;
            Ok(())
        });
        assert!(matches!(failed, Err(DbError::Query(_))), "{failed:?}");
        assert_eq!(s.pi("00000001").unwrap().unwrap().state, PiState::Preparing);
        assert_eq!(kinds(&s).len(), 4);
        // And a failing event insert (its table gone) rolls back the state change.
        let failed = s.change(|tx, events| {
            set_state(tx, "00000001", PiState::Baked)?;
            events.push(ev("bakeFinished"));
            tx.execute("DROP TABLE events", [])?;
            Ok(())
        });
        assert!(matches!(failed, Err(DbError::Query(_))), "{failed:?}");
        assert_eq!(s.pi("00000001").unwrap().unwrap().state, PiState::Preparing);
        assert_eq!(kinds(&s).len(), 4);

        // The sink heard exactly the committed events, with their ids.
        assert_eq!(*heard.0.lock().unwrap(), s.events_since(0, 100).unwrap());

        assert!(matches!(
            s.finish_prepare("00000001", ev("bakeFinished")).unwrap(),
            PiChange::Done(_)
        ));
        // Attaching a disk twice writes one event.
        s.insert_disk(&disk_of("p1"), ev("diskCreated")).unwrap();
        assert_eq!(attach(&s, "00000001", "p1"), DiskLink::Done);
        assert_eq!(attach(&s, "00000001", "p1"), DiskLink::Done);
        assert_eq!(detach(&s, "00000001", "r1"), DiskLink::RootDisk);
        assert_eq!(
            &kinds(&s)[4..],
            ["bakeFinished", "diskCreated", "diskAttached"]
        );
        assert_eq!(*heard.0.lock().unwrap(), s.events_since(0, 100).unwrap());
    }

    fn disk_of(id: &str) -> DiskRow {
        DiskRow {
            size: 8,
            ephemeral: false,
            is_root: false,
            pi: None,
            ..root(id, "")
        }
    }

    #[test]
    fn concurrent_changes_reach_the_sink_in_id_order() {
        let (_d, s, heard) = with_sink();
        let s = Arc::new(s);
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let id = format!("d{w}-{i}");
                        s.insert_disk(&disk_of(&id), ev("diskCreated")).unwrap();
                        if i % 5 == 0 {
                            s.insert_event(&ev("powerOn")).unwrap();
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let heard = heard.0.lock().unwrap();
        let ids: Vec<i64> = heard.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 4 * 60);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(*heard, s.events_since(0, 1000).unwrap());
    }
}
