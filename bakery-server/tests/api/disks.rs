//! Disks over HTTP: create, get, list, attach, detach, resize, delete, unbake rules, exports.

use std::os::unix::fs::MetadataExt;

use bakery_client::{Disk, DiskList, ErrorBody, PiInfo};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

fn create(server: &Server, size: i64, ephemeral: bool) -> Disk {
    let resp = server.post_json("/disks", &json!({"size": size, "ephemeral": ephemeral}));
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().unwrap()
}

#[test]
fn disk_routes_follow_the_contract() {
    let env = Env::new();
    let server = Server::start(&env);
    let list: serde_json::Value = server.get("/disks").json().unwrap();
    assert_eq!(list, json!({"disks": {}}));

    let disk = create(&server, 64, false);
    assert_eq!(disk.size, 64);
    assert_eq!(disk.nfs_address, "10.0.0.2");
    let dir = env.data().join("disks").join(&disk.id);
    assert_eq!(disk.location, dir.display().to_string());
    let meta = std::fs::metadata(dir.join("disk.img")).unwrap();
    assert_eq!(meta.len(), 64 << 20);
    assert!(meta.blocks() * 512 < 1 << 20, "disk.img is sparse");

    let got: Disk = server.get(&format!("/disks/{}", disk.id)).json().unwrap();
    assert_eq!(got, disk);
    let list: DiskList = server.get("/disks").json().unwrap();
    assert_eq!(list.disks.len(), 1);

    for bad in [
        json!({"size": 0}),
        json!({"size": -3}),
        json!({"size": "big"}),
        json!({}),
    ] {
        let resp = server.post_json("/disks", &bad);
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let resp = server.post_json("/disks", &json!({"size": 1i64 << 40}));
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // 15 TiB is allowed by the rules but not by this disk's free space: 507, clear message.
    let resp = server.post_json("/disks", &json!({"size": 15i64 << 20}));
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert!(
        resp.json::<ErrorBody>()
            .unwrap()
            .error
            .contains("not enough space")
    );

    let unknown = "6f1c1f2e-3d4b-4c5a-9e8f-0123456789ab";
    assert_eq!(
        server.get(&format!("/disks/{unknown}")).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.delete(&format!("/disks/{unknown}")).status(),
        StatusCode::OK
    );

    // Resize: grow only.
    let resp = server.post_json(&format!("/disks/{}/resize", disk.id), &json!({"size": 32}));
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = server.post_json(&format!("/disks/{}/resize", disk.id), &json!({"size": 128}));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Disk>().unwrap().size, 128);
    assert_eq!(
        std::fs::metadata(dir.join("disk.img")).unwrap().len(),
        128 << 20
    );
    let resp = server.post_json(&format!("/disks/{unknown}/resize"), &json!({"size": 128}));
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let resp = server.put_json(
        &format!("/disks/{}/metadata", disk.id),
        &json!({"name": "data"}),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Disk>().unwrap().metadata["name"], "data");

    assert_eq!(
        server.delete(&format!("/disks/{}", disk.id)).status(),
        StatusCode::OK
    );
    assert_eq!(
        server.get(&format!("/disks/{}", disk.id)).status(),
        StatusCode::NOT_FOUND
    );
    assert!(!dir.exists());
}

#[test]
fn attach_detach_and_unbake_keep_persistent_disks() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 2);
    let pi = server.bake_ready(true);
    let persistent = create(&server, 8, false);
    let ephemeral = create(&server, 8, true);
    let attach =
        |disk: &str| server.post_json(&format!("/oven/{}/disks", pi.id), &json!({"diskId": disk}));
    assert_eq!(attach(&persistent.id).status(), StatusCode::OK);
    assert_eq!(attach(&ephemeral.id).status(), StatusCode::OK);
    assert_eq!(
        attach(&persistent.id).status(),
        StatusCode::OK,
        "attach is idempotent"
    );
    assert_eq!(
        attach("6f1c1f2e-3d4b-4c5a-9e8f-0123456789ab").status(),
        StatusCode::NOT_FOUND
    );
    let resp = server.post_json("/oven/0000dead/disks", &json!({"diskId": persistent.id}));
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = server.post_json("/oven/00000002/disks", &json!({"diskId": persistent.id}));
    assert_eq!(resp.status(), StatusCode::CONFLICT, "attached elsewhere");
    let spare = create(&server, 8, false);
    let resp = server.post_json("/oven/00000002/disks", &json!({"diskId": spare.id}));
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "pi in the fridge");

    let got: PiInfo = server.get(&format!("/oven/{}", pi.id)).json().unwrap();
    let ids: Vec<_> = got.disks.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [pi.disks[0].id.as_str(), &persistent.id, &ephemeral.id]
    );
    assert_eq!(got.disks[1].attached_to.as_deref(), Some(pi.id.as_str()));

    assert_eq!(
        server.delete(&format!("/disks/{}", persistent.id)).status(),
        StatusCode::CONFLICT
    );
    let resp = server.post_json(
        &format!("/disks/{}/resize", persistent.id),
        &json!({"size": 16}),
    );
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = server.delete(&format!("/oven/{}/disks/{}", pi.id, pi.disks[0].id));
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(
        resp.json::<ErrorBody>()
            .unwrap()
            .error
            .contains("root disk")
    );
    assert_eq!(
        server
            .delete(&format!("/disks/{}", pi.disks[0].id))
            .status(),
        StatusCode::CONFLICT
    );

    // Detach and re-attach the persistent disk.
    assert_eq!(
        server
            .delete(&format!("/oven/{}/disks/{}", pi.id, persistent.id))
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        server
            .delete(&format!("/oven/{}/disks/{}", pi.id, persistent.id))
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(attach(&persistent.id).status(), StatusCode::OK);

    std::fs::write(format!("{}/disk.img", persistent.location), b"precious").unwrap();
    assert_eq!(
        server.delete(&format!("/oven/{}", pi.id)).status(),
        StatusCode::OK
    );
    // Root and ephemeral destroyed; persistent detached and kept with its data.
    assert_eq!(
        server.get(&format!("/disks/{}", ephemeral.id)).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get(&format!("/disks/{}", pi.disks[0].id)).status(),
        StatusCode::NOT_FOUND
    );
    let kept: Disk = server
        .get(&format!("/disks/{}", persistent.id))
        .json()
        .unwrap();
    assert_eq!(kept.attached_to, None);
    assert!(
        std::fs::read(format!("{}/disk.img", persistent.location))
            .unwrap()
            .starts_with(b"precious")
    );
    let mut left = vec![persistent.id.clone(), spare.id.clone()];
    left.sort();
    assert_eq!(entries(&env.data().join("disks")), left);
}

#[test]
fn exports_go_only_to_each_pis_address() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 2);
    let a = server.bake_ready(true);
    let b = server.bake_ready(true);
    let header = "# managed by bakery: rewritten after every change, do not edit\n";
    // Addresses not known yet: nothing exported.
    assert_eq!(env.exports(), header);
    assert!(!env.exportfs_calls().is_empty());
    assert!(env.exportfs_calls().iter().all(|c| c == "-ra"));

    let resp = server.boot_request(&a.id, "start.elf", Some("10.0.0.21"));
    assert_eq!(resp.status(), StatusCode::OK);
    let disk = create(&server, 8, false);
    let resp = server.post_json(
        &format!("/oven/{}/disks", a.id),
        &json!({"diskId": disk.id}),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    let opts = "(rw,sync,no_subtree_check,no_root_squash)";
    let mut lines = [
        format!("{} 10.0.0.21{opts}", a.disks[0].location),
        format!("{} 10.0.0.21{opts}", disk.location),
    ];
    lines.sort();
    assert_eq!(env.exports(), format!("{header}{}\n", lines.join("\n")));

    server.boot_request(&b.id, "start.elf", Some("10.0.0.22"));
    assert!(
        env.exports()
            .contains(&format!("{} 10.0.0.22{opts}\n", b.disks[0].location))
    );
    assert!(!env.exports().contains('*'));

    // The Pi moved: exports follow, and the log says so loudly.
    server.boot_request(&a.id, "start.elf", Some("10.0.0.99"));
    assert!(
        env.exports()
            .contains(&format!("{} 10.0.0.99{opts}\n", a.disks[0].location))
    );
    assert!(!env.exports().contains("10.0.0.21"));
    assert!(server.log_contains("two different addresses use one pi serial"));

    assert_eq!(
        server.delete(&format!("/oven/{}", a.id)).status(),
        StatusCode::OK
    );
    assert!(!env.exports().contains("10.0.0.99"));
    assert!(
        !env.exports().contains(&disk.location),
        "a detached disk is not exported"
    );
}

#[test]
fn export_to_any_and_custom_options() {
    let env = Env::new();
    let server = Server::start_with(&env, &["--export-to-any", "--export-options", "rw,async"]);
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    server.add_pis(1);
    let pi = server.bake_ready(true);
    assert!(
        env.exports()
            .ends_with(&format!("{} *(rw,async)\n", pi.disks[0].location))
    );
}

/// Bytes free to unprivileged users on the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs writes into the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

#[test]
fn sparse_disks_are_not_overcommitted() {
    let env = Env::new();
    std::fs::create_dir_all(env.data()).unwrap();
    // Leave 3 GiB above the minimum: one 2 GiB sparse disk fits, a second does not, although
    // the first one takes almost nothing yet.
    let minimum = free_bytes(&env.data()).saturating_sub(3 << 30) >> 20;
    let flag = format!("{minimum}M");
    let server = Server::start_with(&env, &["--min-free-space", &flag]);
    let first = create(&server, 2048, false);
    let resp = server.post_json("/disks", &json!({"size": 2048}));
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    let err = resp.json::<ErrorBody>().unwrap().error;
    assert!(
        err.contains("2.0 GiB (2147483648 bytes) needed")
            && err.contains("already promised to sparse disks")
            && err.contains("free")
            && err.contains("--min-free-space"),
        "{err}"
    );
    let promised = err
        .split(" needed, ")
        .nth(1)
        .and_then(|r| r.split(" already promised").next())
        .unwrap();
    assert!(
        promised.starts_with("2.0 GiB") || promised.starts_with("1.9"),
        "{err}"
    );
    // Growing the first disk is the same promise: refused too; deleting it frees it.
    let resp = server.post_json(
        &format!("/disks/{}/resize", first.id),
        &json!({"size": 4096}),
    );
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        server.delete(&format!("/disks/{}", first.id)).status(),
        StatusCode::OK
    );
    create(&server, 2048, false);
}
