//! Pis: their rows, registration from the boot path, addresses, labels, metadata and power
//! wishes.

use std::net::IpAddr;

use bakery_client::{Labels, Metadata, PiModel, PiState, RootKind, StaticNetwork};
use rusqlite::{Connection, params};

use super::{
    DbError, NewEvent, Store, checked, checked_opt, corrupt, fetch_all, fetch_one, json, now,
};
use crate::domain::names::{BakeformName, DiskId, Serial};

/// A Pi as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PiRow {
    /// The serial.
    pub serial: Serial,
    /// The lifecycle state.
    pub state: PiState,
    /// The bakeform it is (being) baked from.
    pub bakeform: Option<BakeformName>,
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
    pub pending_root: Option<DiskId>,
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

pub(super) const PI_COLUMNS: &str = "serial, state, bakeform, address, network, metadata, last_error, power_on, operation, pending_root, root_kind, model, labels, created_at, last_seen";

/// Raw column values of a Pi, converted after the query (conversion can fail with a DbError).
pub(super) type RawPi = (
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

pub(super) fn pi_from_raw(raw: RawPi) -> Result<PiRow, DbError> {
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
    let root_kind = root_kind
        .parse::<RootKind>()
        .map_err(|_| corrupt("pis.root_kind", &root_kind))?;
    let state = state.parse().map_err(|_| corrupt("pis.state", &state))?;
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
        serial: checked("pis.serial", serial)?,
        state,
        bakeform: checked_opt("pis.bakeform", bakeform)?,
        address,
        network,
        metadata,
        last_error,
        power_on,
        operation: op,
        pending_root: checked_opt("pis.pending_root", pending)?,
        root_kind,
        model,
        labels,
        created_at,
        last_seen,
    })
}

pub(super) fn get_pi(tx: &Connection, serial: &Serial) -> Result<Option<PiRow>, DbError> {
    fetch_one(
        tx,
        &format!("SELECT {PI_COLUMNS} FROM pis WHERE serial = ?1"),
        params![serial],
        pi_from_raw,
    )
}

impl Store {
    /// Registers a Pi in the fridge, writing no event (tests' shortcut); `true` if it was new.
    #[cfg(test)]
    pub(crate) fn register_pi(&self, serial: &Serial) -> Result<bool, DbError> {
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
        serial: &Serial,
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
    pub fn pi_serial_at(
        &self,
        address: IpAddr,
        serial: &Serial,
    ) -> Result<Option<Serial>, DbError> {
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
    pub fn pi(&self, serial: &Serial) -> Result<Option<PiRow>, DbError> {
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
        serial: &Serial,
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
    pub fn saw_pi(
        &self,
        serial: &Serial,
        model: Option<PiModel>,
        at: i64,
    ) -> Result<bool, DbError> {
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
    pub fn set_pi_labels(
        &self,
        serial: &Serial,
        labels: &Labels,
    ) -> Result<Option<PiRow>, DbError> {
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
        serial: &Serial,
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
    pub fn set_power_on(&self, serial: &Serial, power_on: bool) -> Result<bool, DbError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE pis SET power_on = ?2 WHERE serial = ?1",
                params![serial, power_on],
            )?;
            Ok(n == 1)
        })
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
}
