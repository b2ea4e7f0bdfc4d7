//! The lifecycle of a Pi in the store: bakes, resets and unbakes, each step checked against
//! the state machine of `domain::lifecycle` inside its transaction.

use bakery_client::{BakeformState, PiState, RootKind, StaticNetwork};
use rusqlite::{Transaction, params};

use super::bakeforms::get_bakeform;
use super::disks::{DISK_COLUMNS, DiskRow, disk_from_raw, insert_disk};
use super::pis::{PI_COLUMNS, PiRow, get_pi, pi_from_raw};
use super::{DbError, NewEvent, Store, fetch_all, json, snapshots};
use crate::domain::hardware::Constraints;
use crate::domain::lifecycle::{Event, transition};
use crate::domain::names::{BakeformName, DiskId, Serial};

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

pub(super) fn set_state(
    tx: &Transaction<'_>,
    serial: &Serial,
    state: PiState,
) -> Result<(), DbError> {
    tx.execute(
        "UPDATE pis SET state = ?2 WHERE serial = ?1",
        params![serial, state.as_str()],
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
    /// Moves the Pi `serial` through `event` and runs `then`, in one transaction that also
    /// writes `record` when `then` is done; an unknown Pi or one in a state `event` does not
    /// apply to is left as it is.
    fn advance<T>(
        &self,
        serial: &Serial,
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

    /// Picks a Pi from the fridge for `bakeform` and moves it to preparing, with the id its
    /// root disk will get; writes `event`, its `pi` set to the Pi picked, when it started.
    pub fn start_bake(
        &self,
        bakeform: &BakeformName,
        network: Option<&StaticNetwork>,
        power_on: bool,
        root: (&DiskId, RootKind),
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
            event.pi = Some(serial.into());
            events.push(event);
            Ok(StartBake::Started(Box::new(pi)))
        })
    }

    /// Moves a baked Pi to preparing for a reset of its root, writing `event`.
    pub fn start_reset(
        &self,
        serial: &Serial,
        event: NewEvent,
    ) -> Result<PiChange<PiRow>, DbError> {
        self.advance(serial, Event::StartReset, event, |tx| {
            tx.execute(
                "UPDATE pis SET operation = 'reset', last_error = NULL WHERE serial = ?1",
                params![serial],
            )?;
            pi_now(tx, serial)
        })
    }

    /// Adds the root disk of a Pi being baked (still preparing).
    pub fn add_root_disk(&self, serial: &Serial, root: &DiskRow) -> Result<PiChange<()>, DbError> {
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
        serial: &Serial,
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
        serial: &Serial,
        error: &str,
        event: NewEvent,
    ) -> Result<PiChange<Vec<DiskRow>>, DbError> {
        self.advance(serial, Event::PrepareFailed, event, |tx| {
            back_to_fridge(tx, serial, Some(error))
        })
    }

    /// Moves a baked Pi to unbaking, writing `event`.
    pub fn start_unbake(
        &self,
        serial: &Serial,
        event: NewEvent,
    ) -> Result<PiChange<PiRow>, DbError> {
        self.advance(serial, Event::StartUnbake, event, |tx| pi_now(tx, serial))
    }

    /// Finishes an unbake: the root and ephemeral disks' rows are deleted (returned, so their
    /// directories can be trashed), other disks detached, the Pi back in the fridge.
    /// `error` is recorded as the Pi's `last_error` (a bake that failed after its root was made).
    /// Writes `event`.
    pub fn finish_unbake(
        &self,
        serial: &Serial,
        error: Option<&str>,
        event: NewEvent,
    ) -> Result<PiChange<Vec<DiskRow>>, DbError> {
        self.advance(serial, Event::Unbaked, event, |tx| {
            back_to_fridge(tx, serial, error)
        })
    }
}

/// The Pi `serial` as it is now in `tx`.
fn pi_now(tx: &Transaction<'_>, serial: &Serial) -> Result<PiChange<PiRow>, DbError> {
    Ok(get_pi(tx, serial)?.map_or(PiChange::UnknownPi, PiChange::Done))
}

/// Puts a Pi back in the fridge: its root and ephemeral disks' rows deleted (returned), its
/// other disks detached, its bake settings cleared and `error` kept as its `last_error`.
fn back_to_fridge(
    tx: &Transaction<'_>,
    serial: &Serial,
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
fn release_disks(tx: &Transaction<'_>, serial: &Serial) -> Result<Vec<DiskRow>, DbError> {
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
