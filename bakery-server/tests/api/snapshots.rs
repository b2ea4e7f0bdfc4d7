//! Disk snapshots over HTTP against the real server: taken (a sparse copy on ext4, holes
//! kept; a reflink sharing extents on loop-mounted btrfs and XFS), listed, restored (the
//! data read back is the snapshot's), refused where unsafe, deleted alone and with their
//! disk (also an ephemeral disk unbaked with its Pi), orphans cleaned at start-up.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bakery_client::{Disk, ErrorBody, EventList, Snapshot, SnapshotList};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;
use crate::strategies::loopfs::{FsKind, LoopFs, shared_bytes};

const MIB: u64 = 1 << 20;
const UNKNOWN: &str = "6f1c1f2e-3d4b-4c5a-9e8f-0123456789ab";

fn create(server: &Server, size: i64, ephemeral: bool) -> Disk {
    let resp = server.post_json("/disks", &json!({"size": size, "ephemeral": ephemeral}));
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().unwrap()
}

fn image(disk: &Disk) -> PathBuf {
    Path::new(&disk.location).join("disk.img")
}

/// Writes `len` bytes of `byte` at `offset` into the disk's image, synced.
fn write(disk: &Disk, offset: u64, byte: u8, len: usize) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(image(disk))
        .unwrap();
    f.write_all_at(&vec![byte; len], offset).unwrap();
    f.sync_all().unwrap();
}

fn read(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

fn snapshot(server: &Server, disk: &str, body: Option<serde_json::Value>) -> Snapshot {
    let url = server.url(&format!("/disks/{disk}/snapshots"));
    let req = server.client.post(url);
    let resp = match body {
        Some(body) => req.json(&body),
        None => req,
    }
    .send()
    .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().unwrap()
}

fn snapshot_file(data: &Path, s: &Snapshot) -> PathBuf {
    data.join("snapshots")
        .join(&s.disk)
        .join(format!("{}.img", s.id))
}

/// MiB available under `dir`.
fn free_mib(dir: &Path) -> u64 {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path and a zeroed out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64 / MIB
}

fn restore(server: &Server, disk: &str, snapshot: &str) -> reqwest::blocking::Response {
    server.post_json(
        &format!("/disks/{disk}/restore"),
        &json!({"snapshot": snapshot}),
    )
}

fn error(resp: reqwest::blocking::Response) -> String {
    resp.json::<ErrorBody>().unwrap().error
}

fn kinds(server: &Server) -> Vec<String> {
    let events: EventList = server.get("/events?since=0").json().unwrap();
    events.events.into_iter().map(|e| e.kind).collect()
}

#[test]
fn snapshots_are_sparse_restorable_listed_and_deleted_with_their_disk() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    let disk = create(&server, 64, false);
    write(&disk, MIB, b'a', 4 * MIB as usize);
    write(&disk, 40 * MIB, b'b', MIB as usize);

    let first = snapshot(&server, &disk.id, Some(json!({"metadata": {"job": "db"}})));
    assert_eq!(first.disk, disk.id);
    assert_eq!(first.size, 64);
    assert_eq!(first.metadata["job"], "db");
    let file = snapshot_file(&env.data(), &first);
    let md = std::fs::metadata(&file).unwrap();
    assert_eq!(md.len(), 64 * MIB);
    let allocated = md.blocks() * 512;
    assert!(
        (5 * MIB..=6 * MIB).contains(&allocated),
        "the snapshot holds the 5 MiB written, holes kept: {allocated} bytes allocated"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(image(&disk)).unwrap()
    );
    // Outside the exported directory: a Pi never sees (or changes) its disk's snapshots.
    assert_eq!(entries(Path::new(&disk.location)), ["disk.img"]);
    assert!(
        eventually(Duration::from_secs(5), || server
            .log_contains("disk snapshot taken")
            && server.log_contains("how=sparse-copy")),
        "{:?}",
        server.log.lock().unwrap()
    );

    // The body may be left out; a wrong one is refused naming the field.
    let second = snapshot(&server, &disk.id, None);
    assert!(second.metadata.is_empty());
    let resp = server.post_json(
        &format!("/disks/{}/snapshots", disk.id),
        &json!({"metadta": {}}),
    );
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(error(resp).contains("metadta"));
    let list: SnapshotList = server
        .get(&format!("/disks/{}/snapshots", disk.id))
        .json()
        .unwrap();
    let ids: Vec<&str> = list.snapshots.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [first.id.as_str(), second.id.as_str()], "oldest first");
    let got: Snapshot = server
        .get(&format!("/snapshots/{}", first.id))
        .json()
        .unwrap();
    assert_eq!(got, first);

    // Change the data and grow the disk; the restore brings back the snapshot's bytes and
    // size, and the holes stay holes.
    write(&disk, MIB, b'z', MIB as usize);
    write(&disk, 20 * MIB, b'y', MIB as usize);
    let grown = server.post_json(&format!("/disks/{}/resize", disk.id), &json!({"size": 96}));
    assert_eq!(grown.status(), StatusCode::OK);
    let resp = restore(&server, &disk.id, &first.id);
    assert_eq!(resp.status(), StatusCode::OK);
    let restored: Disk = resp.json().unwrap();
    assert_eq!(restored.size, 64);
    let md = std::fs::metadata(image(&disk)).unwrap();
    assert_eq!(md.len(), 64 * MIB);
    assert!(
        md.blocks() * 512 <= 6 * MIB,
        "{} allocated",
        md.blocks() * 512
    );
    assert_eq!(read(&image(&disk), MIB, 4), b"aaaa");
    assert_eq!(read(&image(&disk), 20 * MIB, 4), [0u8; 4]);
    assert_eq!(
        std::fs::read(image(&disk)).unwrap(),
        std::fs::read(&file).unwrap()
    );
    let on_disk: Disk = server.get(&format!("/disks/{}", disk.id)).json().unwrap();
    assert_eq!(on_disk.size, 64);

    // Unknown and malformed ids; another disk's snapshot; a Pi's root disk.
    for path in [
        format!("/snapshots/{UNKNOWN}"),
        format!("/disks/{UNKNOWN}/snapshots"),
    ] {
        assert_eq!(server.get(&path).status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        server.get("/snapshots/..%2F..").status(),
        StatusCode::BAD_REQUEST
    );
    let resp = server.post_json(&format!("/disks/{UNKNOWN}/snapshots"), &json!({}));
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        restore(&server, &disk.id, UNKNOWN).status(),
        StatusCode::NOT_FOUND
    );
    let other = create(&server, 8, false);
    let resp = restore(&server, &other.id, &first.id);
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        error(resp),
        format!(
            "snapshot {} is not a snapshot of disk {}",
            first.id, other.id
        )
    );
    let pi = server.bake_ready(false);
    let root = &pi.disks[0];
    let resp = server.post_json(&format!("/disks/{}/snapshots", root.id), &json!({}));
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(error(resp).contains("root disk"));

    // Attached: a snapshot is taken (crash-consistent); a restore is refused.
    let attach = server.post_json(
        &format!("/oven/{}/disks", pi.id),
        &json!({"diskId": disk.id}),
    );
    assert_eq!(attach.status(), StatusCode::OK);
    let third = snapshot(&server, &disk.id, None);
    let resp = restore(&server, &disk.id, &third.id);
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(
        error(resp),
        format!("disk {} is attached to pi {}", disk.id, pi.id)
    );
    let detach = server.delete(&format!("/oven/{}/disks/{}", pi.id, disk.id));
    assert_eq!(detach.status(), StatusCode::OK);

    // Delete one snapshot: row and file; again is 404.
    assert_eq!(
        server.delete(&format!("/snapshots/{}", second.id)).status(),
        StatusCode::OK
    );
    assert!(!snapshot_file(&env.data(), &second).exists());
    assert_eq!(
        server.get(&format!("/snapshots/{}", second.id)).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.delete(&format!("/snapshots/{}", second.id)).status(),
        StatusCode::NOT_FOUND
    );

    // Deleting the disk deletes its snapshots, rows and files.
    assert_eq!(
        server.delete(&format!("/disks/{}", disk.id)).status(),
        StatusCode::OK
    );
    for s in [&first, &third] {
        assert_eq!(
            server.get(&format!("/snapshots/{}", s.id)).status(),
            StatusCode::NOT_FOUND
        );
    }
    assert!(!env.data().join("snapshots").join(&disk.id).exists());
    assert!(eventually(Duration::from_secs(10), || entries(
        &env.data().join("trash")
    )
    .is_empty()));

    let kinds = kinds(&server);
    for kind in ["snapshotCreated", "diskRestored", "snapshotDeleted"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind}: {kinds:?}");
    }
}

#[test]
fn an_ephemeral_disks_snapshots_go_with_its_pi_and_orphans_are_cleaned_at_start_up() {
    let env = Env::new();
    let (mut server, _) = ready_server(&env, 1);
    let pi = server.bake_ready(false);
    let ephemeral = create(&server, 8, true);
    let kept = create(&server, 8, false);
    for disk in [&ephemeral, &kept] {
        let resp = server.post_json(
            &format!("/oven/{}/disks", pi.id),
            &json!({"diskId": disk.id}),
        );
        assert_eq!(resp.status(), StatusCode::OK);
        write(disk, 0, b'e', 4096);
    }
    let gone = snapshot(&server, &ephemeral.id, None);
    let stays = snapshot(&server, &kept.id, None);
    assert_eq!(
        server.delete(&format!("/oven/{}", pi.id)).status(),
        StatusCode::OK
    );
    assert!(eventually(Duration::from_secs(10), || server
        .get(&format!("/snapshots/{}", gone.id))
        .status()
        == StatusCode::NOT_FOUND));
    assert!(!env.data().join("snapshots").join(&ephemeral.id).exists());
    assert_eq!(
        server.get(&format!("/snapshots/{}", stays.id)).status(),
        StatusCode::OK
    );

    // Left behind by a crash: a snapshot file without a row, a directory of no disk.
    let dir = env.data().join("snapshots");
    std::fs::write(dir.join(&kept.id).join(format!("{UNKNOWN}.img")), "x").unwrap();
    std::fs::create_dir_all(dir.join(UNKNOWN)).unwrap();
    server.stop();
    let server = Server::start(&env);
    let mut left = entries(&dir.join(&kept.id));
    left.sort();
    assert_eq!(left, [format!("{}.img", stays.id)]);
    assert!(!dir.join(UNKNOWN).exists());
    let resp = restore(&server, &kept.id, &stays.id);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(read(&image(&kept), 0, 4), b"eeee");
}

/// On `kind` (loop-mounted), a snapshot and a restore are reflinks sharing the image's
/// extents; `None` when this machine cannot loop-mount.
fn reflinked_on(kind: FsKind) {
    let Some(lfs) = LoopFs::mount(kind, 1024) else {
        return;
    };
    let data = lfs.path().join("data");
    let env = Env::new();
    let mut server = Server::start_replacing(
        &env,
        &["--data-dir"],
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--min-free-space",
            "0",
        ],
    );
    let disk = create(&server, 64, false);
    write(&disk, 0, b'r', 8 * MIB as usize);
    let taken = snapshot(&server, &disk.id, None);
    let file = snapshot_file(&data, &taken);
    assert!(
        eventually(Duration::from_secs(5), || server
            .log_contains("how=reflink")),
        "{:?}",
        server.log.lock().unwrap()
    );
    assert!(
        shared_bytes(&file) >= 8 * MIB,
        "{kind:?}: the snapshot does not share the image's extents"
    );
    write(&disk, 0, b's', 4096);
    assert_eq!(
        restore(&server, &disk.id, &taken.id).status(),
        StatusCode::OK
    );
    assert_eq!(read(&image(&disk), 0, 4), b"rrrr");
    assert!(shared_bytes(&image(&disk)) >= 8 * MIB);
    server.stop();
    drop(server);
    let mut lfs = lfs;
    assert!(lfs.unmount(), "loop device left: {:?}", lfs.loop_devices());
}

#[test]
fn snapshots_are_reflinks_on_xfs() {
    reflinked_on(FsKind::Xfs);
}

#[test]
fn snapshots_are_reflinks_on_btrfs() {
    reflinked_on(FsKind::Btrfs);
}

/// On a small loop-mounted ext4 (the sparse-copy path), a snapshot or a restore that would
/// take more than the free space minus what sparse disks are promised is refused with 507
/// naming the numbers, and leaves no file behind.
#[test]
fn snapshots_and_restores_do_not_overcommit_the_data_dir() {
    let Some(mut lfs) = LoopFs::mount(FsKind::Ext4, 512) else {
        return;
    };
    let data = lfs.path().join("data");
    let env = Env::new();
    let mut server = Server::start_replacing(
        &env,
        &["--data-dir"],
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--min-free-space",
            "0",
        ],
    );
    // In units of a tenth of the free space: disk a (2) holds 1 and promises 1; its snapshot
    // takes 1; disk b (6.5) is filled; then 1.5 are free and a copy of a needs 1 + 1.
    let unit = free_mib(&data) / 10;
    let a = create(&server, 2 * unit as i64, false);
    write(&a, 0, b'a', (unit * MIB) as usize);
    let taken = snapshot(&server, &a.id, None);
    let b = create(&server, (13 * unit / 2) as i64, false);
    write(&b, 0, b'b', (13 * unit / 2 * MIB) as usize);
    let resp = server.post_json(&format!("/disks/{}/snapshots", a.id), &json!({}));
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    let err = error(resp);
    assert!(
        err.starts_with(&format!("not enough space for a snapshot of disk {}", a.id))
            && err.contains("already promised to sparse disks"),
        "{err}"
    );
    let resp = restore(&server, &a.id, &taken.id);
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(error(resp).contains("restoring disk"));
    assert_eq!(entries(&data.join("snapshots").join(&a.id)).len(), 1);
    assert!(entries(&data.join("tmp")).is_empty());
    assert_eq!(read(&image(&a), 0, 4), b"aaaa");
    server.stop();
    drop(server);
    assert!(lfs.unmount(), "loop device left: {:?}", lfs.loop_devices());
}

/// `bakery disk snapshot/snapshots/restore` and `bakery snapshot show/delete` against the
/// real server, in table and JSON output, with the not-found exit code.
#[test]
fn the_cli_takes_lists_restores_and_deletes_snapshots() {
    let cli = Path::new(env!("CARGO_BIN_EXE_bakery-server")).with_file_name("bakery");
    if !cli.exists() {
        eprintln!(
            "\n!!!! SKIPPED bakery snapshot CLI test: no {} (cargo build -p bakery-client) !!!!\n",
            cli.display()
        );
        return;
    }
    let env = Env::new();
    let server = Server::start(&env);
    let run = |args: &[&str]| {
        std::process::Command::new(&cli)
            .args(["--url", &server.base])
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let disk = create(&server, 16, false);
    write(&disk, 0, b'c', 4096);
    let taken: Snapshot = serde_json::from_str(&ok(&[
        "-o", "json", "disk", "snapshot", &disk.id, "--meta", "job=db",
    ]))
    .unwrap();
    assert_eq!(taken.metadata["job"], "db");
    let table = ok(&["disk", "snapshot", &disk.id]);
    let header = table.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["ID", "DISK", "SIZE_MIB", "CREATED", "METADATA"]
    );
    let listed = ok(&["disk", "snapshots", &disk.id]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    let first = listed.lines().nth(1).unwrap();
    assert!(
        first.starts_with(&taken.id) && first.contains(&disk.id) && first.ends_with("job=db"),
        "{listed}"
    );
    let list: SnapshotList =
        serde_json::from_str(&ok(&["-o", "json", "disk", "snapshots", &disk.id])).unwrap();
    assert_eq!(list.snapshots[0], taken);
    assert!(ok(&["snapshot", "show", &taken.id]).contains(&taken.id));

    write(&disk, 0, b'x', 4096);
    let restored: Disk =
        serde_json::from_str(&ok(&["-o", "json", "disk", "restore", &disk.id, &taken.id])).unwrap();
    assert_eq!(restored.id, disk.id);
    assert_eq!(read(&image(&disk), 0, 4), b"cccc");
    assert_eq!(
        ok(&["snapshot", "delete", &taken.id]),
        format!("deleted snapshot {}\n", taken.id)
    );
    let gone = run(&["snapshot", "delete", &taken.id]);
    assert_eq!(gone.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains(&format!("snapshot {} not found", taken.id)),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    let bad = run(&["disk", "snapshot", &disk.id, "--meta", "novalue"]);
    assert_eq!(bad.status.code(), Some(2));
}
