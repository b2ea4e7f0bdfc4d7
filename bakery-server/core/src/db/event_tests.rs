//! A change and its event commit together or not at all; the sink hears committed events
//! only, in id order.

use std::sync::{Arc, Mutex};

use bakery_client::{Metadata, PiState, RootKind};
use rusqlite::params;

use super::lifecycle::set_state;
use super::tests::{attach, bf, detach, did, ev, ser, started_bake, store};
use super::*;
use crate::domain::hardware::Constraints;

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
        id: did(id),
        location: format!("/d/disks/{id}"),
        size: 0,
        ephemeral: true,
        is_root: true,
        pi: Some(ser(serial)),
        position: 0,
        metadata: Metadata::new(),
    }
}

#[test]
fn a_failing_change_writes_no_event() {
    let (_d, s, heard) = with_sink();
    assert_eq!(
        s.register_pi_within(&ser("00000001"), 8, ev("registered"))
            .unwrap(),
        Some(true)
    );
    // Known already, or refused by the state machine: no event.
    assert_eq!(
        s.register_pi_within(&ser("00000001"), 8, ev("registered"))
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        s.start_unbake(&ser("00000001"), ev("unbakeStarted"))
            .unwrap(),
        PiChange::WrongState(PiState::Fridge)
    );
    assert_eq!(
        s.finish_prepare(&ser("00000001"), ev("bakeFinished"))
            .unwrap(),
        PiChange::WrongState(PiState::Fridge)
    );
    assert_eq!(
        s.start_bake(
            &bf("os"),
            None,
            true,
            (&did("r1"), RootKind::Nfs),
            &Constraints::default(),
            ev("bakeStarted")
        )
        .unwrap(),
        StartBake::UnknownBakeform
    );
    assert_eq!(kinds(&s), ["registered"]);

    // A constraint violation (a second disk with the same id) rolls back disk and event.
    s.insert_bakeform(&bf("os"), "/d/bakeforms/os", ev("bakeformImporting"))
        .unwrap();
    s.set_bakeform_ready(&bf("os"), ev("bakeformImported"))
        .unwrap();
    let pi = started_bake(&s, "r1");
    s.add_root_disk(&pi.serial, &root("r1", pi.serial.as_str()))
        .unwrap();
    let err = s.insert_disk(&root("r1", pi.serial.as_str()), ev("diskCreated"));
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
        set_state(tx, &ser("00000001"), PiState::Baked)?;
        events.push(ev("bakeFinished"));
        tx.execute(
            "UPDATE pis SET state = 'nonsense' WHERE serial = ?1",
            params!["00000001"],
        )?;
        Ok(())
    });
    assert!(matches!(failed, Err(DbError::Query(_))), "{failed:?}");
    assert_eq!(
        s.pi(&ser("00000001")).unwrap().unwrap().state,
        PiState::Preparing
    );
    assert_eq!(kinds(&s).len(), 4);
    // And a failing event insert (its table gone) rolls back the state change.
    let failed = s.change(|tx, events| {
        set_state(tx, &ser("00000001"), PiState::Baked)?;
        events.push(ev("bakeFinished"));
        tx.execute("DROP TABLE events", [])?;
        Ok(())
    });
    assert!(matches!(failed, Err(DbError::Query(_))), "{failed:?}");
    assert_eq!(
        s.pi(&ser("00000001")).unwrap().unwrap().state,
        PiState::Preparing
    );
    assert_eq!(kinds(&s).len(), 4);

    // The sink heard exactly the committed events, with their ids.
    assert_eq!(*heard.0.lock().unwrap(), s.events_since(0, 100).unwrap());

    assert!(matches!(
        s.finish_prepare(&ser("00000001"), ev("bakeFinished"))
            .unwrap(),
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
        ..root(id, "00000000")
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
