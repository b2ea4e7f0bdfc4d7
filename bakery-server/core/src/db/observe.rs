//! The operator-visibility tables (schema version 2): the event log and the boot records
//! behind the boot timelines.

use bakery_client::{BootOutcome, BootRequest, Event};
use rusqlite::{Connection, Row, params};

use super::{DbError, Store, corrupt, now, raw};

/// An event about to be recorded (the id and time are given by the store).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewEvent {
    /// What happened (`bakeStarted`, ...).
    pub kind: &'static str,
    /// The Pi concerned.
    pub pi: Option<String>,
    /// The bakeform concerned.
    pub bakeform: Option<String>,
    /// The disk concerned.
    pub disk: Option<String>,
    /// Details.
    pub message: Option<String>,
}

/// Who hears about events once the transaction that wrote them committed (the observer:
/// metrics and the live stream). Called in id order, under the store's lock: keep it quick
/// and never call back into the store.
pub trait EventSink: Send + Sync {
    /// `event` (with its id and time) is committed.
    fn committed(&self, event: &Event);
}

/// A boot record as stored: one request in one boot of one Pi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRecordRow {
    /// The Pi.
    pub pi: String,
    /// The boot, named by its start time (Unix ms); unique per Pi.
    pub boot: i64,
    /// The request's position in the boot.
    pub seq: i64,
    /// The request.
    pub request: BootRequest,
}

/// A change to the boot records, written behind the in-memory timelines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootRecordChange {
    /// Insert or replace the request at (pi, boot, seq).
    Put(BootRecordRow),
    /// Forget the Pi's boots that started before `boot`.
    PruneBefore {
        /// The Pi.
        pi: String,
        /// The oldest boot kept.
        boot: i64,
    },
}

/// Events kept in the log; older ones are pruned.
pub const EVENTS_KEPT: i64 = 10_000;

fn event_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: row.get(0)?,
        time: row.get(1)?,
        kind: row.get(2)?,
        pi: row.get(3)?,
        bakeform: row.get(4)?,
        disk: row.get(5)?,
        message: row.get(6)?,
    })
}

/// Appends `event` inside the caller's transaction (pruning the oldest now and then) and
/// returns it with its id and time.
pub(super) fn insert_event(tx: &Connection, event: &NewEvent) -> Result<Event, DbError> {
    let time = now();
    tx.execute(
        "INSERT INTO events (time, kind, pi, bakeform, disk, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            time,
            event.kind,
            event.pi,
            event.bakeform,
            event.disk,
            event.message
        ],
    )?;
    let id = tx.last_insert_rowid();
    if id % 100 == 0 {
        tx.execute(
            "DELETE FROM events WHERE id <= ?1",
            params![id - EVENTS_KEPT],
        )?;
    }
    Ok(Event {
        id,
        time,
        kind: event.kind.to_owned(),
        pi: event.pi.clone(),
        bakeform: event.bakeform.clone(),
        disk: event.disk.clone(),
        message: event.message.clone(),
    })
}

impl Store {
    /// Appends an event that goes with no state change (a PPI call), in a transaction of its
    /// own; the sink hears of it once committed. State changes write theirs themselves.
    pub fn insert_event(&self, event: &NewEvent) -> Result<Event, DbError> {
        let ((), stored) = self.change_events(|_, events| {
            events.push(event.clone());
            Ok(())
        })?;
        stored
            .into_iter()
            .next()
            .ok_or_else(|| corrupt("events", "no event stored"))
    }

    /// Up to `limit` events with an id above `since`, oldest first.
    pub fn events_since(&self, since: i64, limit: u32) -> Result<Vec<Event>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, time, kind, pi, bakeform, disk, message FROM events
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since, limit], event_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The newest event's id, 0 when there is none.
    pub fn last_event_id(&self) -> Result<i64, DbError> {
        let conn = self.conn();
        // The sequence survives pruning, so ids never go back even when the log is empty.
        let seq: Option<i64> = conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                [],
                |r| r.get(0),
            )
            .ok();
        Ok(seq.unwrap_or(0))
    }

    /// Applies boot-record changes in one transaction.
    pub fn apply_boot_records(&self, changes: &[BootRecordChange]) -> Result<(), DbError> {
        self.write(|tx| {
            for change in changes {
                match change {
                    BootRecordChange::Put(row) => {
                        let r = &row.request;
                        tx.execute(
                            "INSERT OR REPLACE INTO boot_records
                             (pi, boot, seq, time, file, bytes, outcome, via, elapsed_ms, size_probed)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                            params![
                                row.pi,
                                row.boot,
                                row.seq,
                                r.time,
                                r.file,
                                i64::try_from(r.bytes).unwrap_or(i64::MAX),
                                r.outcome.as_str(),
                                r.via,
                                i64::try_from(r.elapsed_ms).unwrap_or(i64::MAX),
                                r.size_probed
                            ],
                        )?;
                    }
                    BootRecordChange::PruneBefore { pi, boot } => {
                        tx.execute(
                            "DELETE FROM boot_records WHERE pi = ?1 AND boot < ?2",
                            params![pi, boot],
                        )?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Every stored boot record, by Pi, boot and position.
    pub fn boot_records(&self) -> Result<Vec<BootRecordRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT pi, boot, seq, time, file, bytes, outcome, via, elapsed_ms, size_probed
             FROM boot_records ORDER BY pi, boot, seq",
        )?;
        type Raw = (
            String,
            i64,
            i64,
            i64,
            String,
            i64,
            String,
            String,
            i64,
            bool,
        );
        let rows = stmt.query_map([], raw::<Raw>)?;
        let mut out = Vec::new();
        for raw in rows {
            let (pi, boot, seq, time, file, bytes, outcome, via, elapsed, probed) = raw?;
            let outcome = outcome
                .parse::<BootOutcome>()
                .map_err(|_| corrupt("boot_records.outcome", &outcome))?;
            out.push(BootRecordRow {
                pi,
                boot,
                seq,
                request: BootRequest {
                    time,
                    file,
                    bytes: u64::try_from(bytes).unwrap_or(0),
                    outcome,
                    via,
                    elapsed_ms: u64::try_from(elapsed).unwrap_or(0),
                    size_probed: probed,
                },
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::store;

    #[test]
    fn events_get_increasing_ids_and_page_after_since() {
        let (_dir, store) = store();
        assert_eq!(store.last_event_id().unwrap(), 0);
        let ids: Vec<i64> = (0..5)
            .map(|i| {
                let event = NewEvent {
                    kind: "diskCreated",
                    disk: Some(format!("d{i}")),
                    ..NewEvent::default()
                };
                store.insert_event(&event).unwrap().id
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(store.last_event_id().unwrap(), ids[4]);
        let page = store.events_since(ids[1], 2).unwrap();
        assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), &ids[2..4]);
        assert_eq!(page[0].disk.as_deref(), Some("d2"));
        assert_eq!(page[0].kind, "diskCreated");
        assert!(store.events_since(ids[4], 10).unwrap().is_empty());
    }

    #[test]
    fn boot_records_are_put_replaced_and_pruned() {
        let (_dir, store) = store();
        let row = |boot: i64, seq: i64, outcome: BootOutcome| BootRecordRow {
            pi: "1a2b3c4d".into(),
            boot,
            seq,
            request: BootRequest {
                time: boot + seq,
                file: format!("1a2b3c4d/f{seq}"),
                bytes: 7,
                outcome,
                via: "tftp".into(),
                elapsed_ms: 3,
                size_probed: outcome == BootOutcome::Sent,
            },
        };
        store
            .apply_boot_records(&[
                BootRecordChange::Put(row(100, 0, BootOutcome::Probe)),
                BootRecordChange::Put(row(100, 0, BootOutcome::Sent)),
                BootRecordChange::Put(row(100, 1, BootOutcome::GaveUp)),
                BootRecordChange::Put(row(200, 0, BootOutcome::Refused)),
            ])
            .unwrap();
        let rows = store.boot_records().unwrap();
        assert_eq!(
            rows,
            vec![
                row(100, 0, BootOutcome::Sent),
                row(100, 1, BootOutcome::GaveUp),
                row(200, 0, BootOutcome::Refused)
            ]
        );
        store
            .apply_boot_records(&[BootRecordChange::PruneBefore {
                pi: "1a2b3c4d".into(),
                boot: 200,
            }])
            .unwrap();
        assert_eq!(
            store.boot_records().unwrap(),
            vec![row(200, 0, BootOutcome::Refused)]
        );
    }
}
