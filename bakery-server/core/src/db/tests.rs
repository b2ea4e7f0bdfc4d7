//! Tests of the store across its resources, and the helpers the other tests of `db/` use.

use bakery_client::{BakeformState, Labels, Metadata, PiModel, PiState, RootKind};

use super::*;
use crate::domain::hardware::Constraints;

/// The serial `s`, a test's literal.
pub(super) fn ser(s: &str) -> Serial {
    Serial::parse(s).unwrap()
}

/// The bakeform name `s`, a test's literal.
pub(super) fn bf(s: &str) -> BakeformName {
    BakeformName::parse(s).unwrap()
}

/// A UUID made from a short tag (`r1`, `d3-49`): the tag's bytes in hex at its end.
fn tag_uuid(tag: &str) -> String {
    let hex: String = tag.bytes().map(|b| format!("{b:02x}")).collect();
    format!("00000000-0000-4000-8000-{hex:0>12}")
}

/// The disk id of tag `tag` (tests name disks `r1`, `p1`).
pub(super) fn did(tag: &str) -> DiskId {
    DiskId::parse(&tag_uuid(tag)).unwrap()
}

/// The snapshot id of tag `tag`.
pub(super) fn snid(tag: &str) -> SnapshotId {
    SnapshotId::parse(&tag_uuid(tag)).unwrap()
}

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

/// Starts a bake of bakeform `os` with root `root` (a disk tag); panics unless it started.
pub(super) fn started_bake(s: &Store, root: &str) -> Box<PiRow> {
    let StartBake::Started(pi) = s
        .start_bake(
            &bf("os"),
            None,
            true,
            (&did(root), RootKind::Nfs),
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
    s.attach_disk(&ser(serial), &did(id), ev("diskAttached"))
        .unwrap()
}

/// Detaches disk `id` from Pi `serial`, writing `diskDetached`.
pub(super) fn detach(s: &Store, serial: &str, id: &str) -> DiskLink {
    s.detach_disk(&ser(serial), &did(id), ev("diskDetached"))
        .unwrap()
}

fn disk(id: &str, pi: Option<&str>, is_root: bool, ephemeral: bool) -> DiskRow {
    DiskRow {
        id: did(id),
        location: format!("/d/disks/{id}"),
        size: if is_root { 0 } else { 8 },
        ephemeral,
        is_root,
        pi: pi.map(ser),
        position: 0,
        metadata: Metadata::new(),
    }
}

#[test]
fn a_failed_bakeform_is_kept_shown_and_replaced_by_a_new_upload() {
    let (_d, s) = store();
    assert!(
        s.insert_bakeform(&bf("os"), "/d/bakeforms/os", ev("bakeformImporting"))
            .unwrap()
    );
    let failed = s
        .set_bakeform_failed(&bf("os"), "no ext4", ev("bakeformFailed"))
        .unwrap()
        .unwrap();
    assert_eq!(failed.state, BakeformState::Failed);
    assert_eq!(failed.error.as_deref(), Some("no ext4"));
    assert_eq!(s.bakeforms().unwrap(), [failed]);
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
        StartBake::BakeformNotReady(BakeformState::Failed)
    );
    assert!(
        s.insert_bakeform(&bf("os"), "/d/bakeforms/os", ev("bakeformImporting"))
            .unwrap()
    );
    let again = s.bakeform(&bf("os")).unwrap().unwrap();
    assert_eq!((again.state, again.error), (BakeformState::Importing, None));
    assert!(
        !s.insert_bakeform(&bf("os"), "/d/bakeforms/os", ev("bakeformImporting"))
            .unwrap()
    );
    s.set_bakeform_ready(&bf("os"), ev("bakeformImported"))
        .unwrap();
    assert!(
        s.set_bakeform_failed(&bf("os"), "late", ev("bakeformFailed"))
            .unwrap()
            .unwrap()
            .state
            == BakeformState::Ready,
        "only an importing bakeform can fail"
    );
    assert!(
        !s.insert_bakeform(&bf("os"), "/d/bakeforms/os", ev("bakeformImporting"))
            .unwrap()
    );
    s.insert_bakeform(&bf("bad"), "/d/bakeforms/bad", ev("bakeformImporting"))
        .unwrap();
    s.set_bakeform_failed(&bf("bad"), "no fat", ev("bakeformFailed"))
        .unwrap();
    assert!(matches!(
        s.delete_bakeform(&bf("bad"), ev("bakeformDeleted"))
            .unwrap(),
        DeleteBakeform::Deleted(_)
    ));
    assert_eq!(s.bakeform(&bf("bad")).unwrap(), None);
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
    store.register_pi(&ser("1a2b3c4d")).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.pis().unwrap().len(), 1);
}

#[test]
fn a_bake_with_constraints_takes_only_a_matching_pi_from_the_fridge() {
    let (_d, s) = store();
    for serial in ["00000001", "00000002", "00000003"] {
        s.register_pi(&ser(serial)).unwrap();
    }
    s.insert_bakeform(&bf("os"), "/d/bakeforms/os", ev("bakeformImporting"))
        .unwrap();
    s.set_bakeform_ready(&bf("os"), ev("bakeformImported"))
        .unwrap();
    assert!(
        s.saw_pi(&ser("00000002"), Some(PiModel::Pi4), 1_000)
            .unwrap()
    );
    assert!(
        s.saw_pi(&ser("00000003"), Some(PiModel::Pi4), 1_000)
            .unwrap()
    );
    let rack_b: Labels = [("rack".to_owned(), "b".to_owned())].into();
    let labelled = s.set_pi_labels(&ser("00000003"), &rack_b).unwrap().unwrap();
    assert_eq!(labelled.labels, rack_b);
    assert_eq!(s.set_pi_labels(&ser("0000000f"), &rack_b).unwrap(), None);
    let want = Constraints {
        model: Some(PiModel::Pi4),
        labels: rack_b.clone(),
    };
    let bake = |c: &Constraints, root: &str| {
        s.start_bake(
            &bf("os"),
            None,
            true,
            (&did(root), RootKind::Nfs),
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
    s.register_pi(&ser("00000001")).unwrap();
    let created = s.pi(&ser("00000001")).unwrap().unwrap().created_at;
    assert!(created > 0);
    assert!(s.saw_pi(&ser("00000001"), None, 100_000).unwrap());
    assert!(!s.saw_pi(&ser("00000001"), None, 130_000).unwrap());
    assert!(
        s.saw_pi(&ser("00000001"), Some(PiModel::Pi5), 130_000)
            .unwrap()
    );
    assert!(
        !s.saw_pi(&ser("00000001"), Some(PiModel::Pi5), 140_000)
            .unwrap()
    );
    assert!(!s.saw_pi(&ser("00000001"), None, 150_000).unwrap());
    let pi = s.pi(&ser("00000001")).unwrap().unwrap();
    assert_eq!(
        (pi.model, pi.last_seen),
        (Some(PiModel::Pi5), Some(130_000))
    );
    assert!(s.saw_pi(&ser("00000001"), None, 190_000).unwrap());
    let pi = s.pi(&ser("00000001")).unwrap().unwrap();
    assert_eq!(
        (pi.model, pi.last_seen),
        (Some(PiModel::Pi5), Some(190_000))
    );
    assert!(!s.saw_pi(&ser("0000000f"), Some(PiModel::Pi4), 1).unwrap());
}

#[test]
fn bake_and_unbake_cycle() {
    let (_d, s) = store();
    assert!(s.register_pi(&ser("00000001")).unwrap());
    assert!(!s.register_pi(&ser("00000001")).unwrap());
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
    assert!(
        s.insert_bakeform(&bf("os"), "/d/bakeforms/os", ev("bakeformImporting"))
            .unwrap()
    );
    assert!(
        !s.insert_bakeform(&bf("os"), "/d/bakeforms/os", ev("bakeformImporting"))
            .unwrap()
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
        StartBake::BakeformNotReady(BakeformState::Importing)
    );
    s.set_bakeform_ready(&bf("os"), ev("bakeformImported"))
        .unwrap();
    let pi = started_bake(&s, "r1");
    assert_eq!(pi.state, PiState::Preparing);
    assert_eq!(pi.pending_root, Some(did("r1")));
    assert_eq!(
        s.start_bake(
            &bf("os"),
            None,
            true,
            (&did("r2"), RootKind::Nfs),
            &Constraints::default(),
            ev("bakeStarted")
        )
        .unwrap(),
        StartBake::NoFreePi
    );
    assert_eq!(
        s.delete_bakeform(&bf("os"), ev("bakeformDeleted")).unwrap(),
        DeleteBakeform::InUse(ser("00000001"))
    );

    let root = disk("r1", Some("00000001"), true, false);
    assert_eq!(
        s.add_root_disk(&ser("00000001"), &root).unwrap(),
        PiChange::Done(())
    );
    assert!(matches!(
        s.finish_prepare(&ser("00000001"), ev("bakeFinished"))
            .unwrap(),
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
        s.delete_disk(&did("p1"), ev("diskDeleted")).unwrap(),
        DeleteDisk::Attached(ser("00000001"))
    );
    let ids: Vec<_> = s
        .disks_of(&ser("00000001"))
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, [did("r1"), did("e1"), did("p1")]);

    s.set_address(&ser("00000001"), "10.0.0.9".parse().unwrap())
        .unwrap();
    assert_eq!(s.export_entries().unwrap().len(), 3);

    assert!(matches!(
        s.start_unbake(&ser("00000001"), ev("unbakeStarted"))
            .unwrap(),
        PiChange::Done(_)
    ));
    assert_eq!(s.export_entries().unwrap().len(), 0);
    let PiChange::Done(removed) = s
        .finish_unbake(&ser("00000001"), None, ev("unbaked"))
        .unwrap()
    else {
        panic!("unbake should finish");
    };
    let removed: Vec<_> = removed.into_iter().map(|d| d.id).collect();
    assert_eq!(removed.len(), 2);
    assert!(removed.contains(&did("r1")) && removed.contains(&did("e1")));
    assert_eq!(s.disk(&did("p1")).unwrap().unwrap().pi, None);
    assert_eq!(
        s.pi(&ser("00000001")).unwrap().unwrap().state,
        PiState::Fridge
    );
    assert_eq!(
        s.start_unbake(&ser("00000001"), ev("unbakeStarted"))
            .unwrap(),
        PiChange::WrongState(PiState::Fridge)
    );
}

#[tokio::test]
async fn a_call_that_panics_is_a_task_error_and_the_store_still_works() {
    let (_d, s) = store();
    let s = std::sync::Arc::new(s);
    let failed = s
        .call(|_| -> Result<(), DbError> { panic!("a panicking store call") })
        .await;
    let Err(DbError::Task(why)) = failed else {
        panic!("a panic is a task error: {failed:?}");
    };
    assert!(why.contains("panicked"), "{why}");
    assert_eq!(
        DbError::Task(why.clone()).to_string(),
        format!("internal task failed: {why}")
    );
    assert!(s.call(|s| s.register_pi(&ser("00000001"))).await.unwrap());
    assert_eq!(s.call(|s| s.pis()).await.unwrap().len(), 1);
}
