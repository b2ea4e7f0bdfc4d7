//! Crash recovery: kill -9 the server mid-bake, restart, the state is repaired; a baked Pi
//! survives restarts and gets its power back.

use std::time::Duration;

use bakery_client::{PiInfo, PiMap, PiState};
use reqwest::StatusCode;

use crate::common::*;

#[test]
fn kill_9_mid_bake_then_restart_repairs() {
    let env = Env::new();
    let (mut server, _) = ready_server(&env, 3);
    let baked = server.bake_ready(true);
    let disk: bakery_client::Disk = server
        .post_json("/disks", &serde_json::json!({"size": 4}))
        .json()
        .unwrap();
    // The PPI hangs on power-off: bakes stay preparing until killed.
    env.set_ppi_mode("slowoff");
    let a = server.bake(true);
    let b = server.bake(true);
    let oven: PiMap = server.get("/oven").json().unwrap();
    assert_eq!(oven.values().filter(|p| p.status.code() == 3).count(), 2);
    // Leftovers of work in flight, as a crash mid-clone leaves them.
    let half = env.data().join("tmp").join("half-cloned-root/etc");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("hostname"), "x").unwrap();
    let orphan = env
        .data()
        .join("disks")
        .join("3f0c8a1e-0000-4000-8000-000000000000");
    std::fs::create_dir_all(orphan.join("usr")).unwrap();
    server.kill9();

    env.set_ppi_mode("ok");
    env.clear_ppi_calls();
    let server = Server::start_with(&env, &["--ppi-timeout", "10"]);
    for id in [&a.id, &b.id] {
        let pi: PiInfo = server.get(&format!("/pis/{id}")).json().unwrap();
        assert_eq!(pi.state, Some(PiState::Fridge), "{pi:?}");
        assert!(pi.last_error.unwrap().contains("interrupted"));
        assert!(pi.disks.is_empty());
        // A long-poll on it reports the failed bake.
        assert_eq!(server.wait_baked(id).status(), StatusCode::CONFLICT);
    }
    // The baked Pi and the disk are untouched, and the baked Pi gets its power back.
    let still: PiInfo = server.get(&format!("/oven/{}", baked.id)).json().unwrap();
    assert_eq!(still.status.code(), 2);
    assert!(
        std::path::Path::new(&still.disks[0].location)
            .join("etc/hostname")
            .is_file()
    );
    assert_eq!(
        server.get(&format!("/disks/{}", disk.id)).status(),
        StatusCode::OK
    );
    assert!(eventually(Duration::from_secs(5), || env
        .ppi_calls()
        .iter()
        .any(|c| c.contains(&baked.id) && c.contains("poweron"))));
    // No orphans: tmp empty, disks/ holds exactly the known disks, trash reclaimed.
    assert!(entries(&env.data().join("tmp")).is_empty());
    let mut known = vec![still.disks[0].id.clone(), disk.id.clone()];
    known.sort();
    assert_eq!(entries(&env.data().join("disks")), known);
    assert!(eventually(Duration::from_secs(5), || entries(
        &env.data().join("trash")
    )
    .is_empty()));
    assert!(env.exports().starts_with("# managed by bakery"));
    // And baking works again.
    let again = server.bake_ready(true);
    assert!(again.id == a.id || again.id == b.id);
}

#[test]
fn kill_9_with_the_root_made_but_not_powered_removes_the_root() {
    let env = Env::new();
    let (mut server, _) = ready_server(&env, 1);
    // The PPI hangs on power-on: the root is cloned and exported, the Pi still preparing.
    env.set_ppi_mode("slowon");
    let pi = server.bake(true);
    assert!(eventually(Duration::from_secs(10), || entries(
        &env.data().join("disks")
    )
    .len()
        == 1));
    let root = env
        .data()
        .join("disks")
        .join(&entries(&env.data().join("disks"))[0]);
    assert!(root.join("etc/hostname").is_file());
    let preparing: PiInfo = server.get(&format!("/pis/{}", pi.id)).json().unwrap();
    assert_eq!(preparing.state, Some(PiState::Preparing));
    server.kill9();

    env.set_ppi_mode("ok");
    let server = Server::start(&env);
    let pi: PiInfo = server.get(&format!("/pis/{}", pi.id)).json().unwrap();
    assert_eq!(pi.state, Some(PiState::Fridge));
    assert!(pi.disks.is_empty());
    assert!(!root.exists(), "the half-made root is removed");
    assert!(entries(&env.data().join("disks")).is_empty());
    let disks: bakery_client::DiskList = server.get("/disks").json().unwrap();
    assert!(disks.disks.is_empty());
    assert!(eventually(Duration::from_secs(5), || entries(
        &env.data().join("trash")
    )
    .is_empty()));
    assert!(!env.exports().contains("/disks/"));
}

#[test]
fn kill_9_mid_upload_leaves_a_failed_bakeform() {
    use std::io::Write;
    let env = Env::new();
    let mut server = Server::start(&env);
    let addr = server
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api/v1")
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /api/v1/bakeforms/partial HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000000\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&vec![0u8; 1 << 20]).unwrap();
    assert!(eventually(Duration::from_secs(5), || !entries(
        &env.data().join("tmp")
    )
    .is_empty()));
    let listed: serde_json::Value = server.get("/bakeforms/partial").json().unwrap();
    assert_eq!(listed["state"], "importing");
    server.kill9();
    drop(stream);

    let server = Server::start(&env);
    let listed: serde_json::Value = server.get("/bakeforms/partial").json().unwrap();
    assert_eq!(listed["state"], "failed");
    assert_eq!(
        listed["error"],
        "upload of bakeform partial: the server stopped during the import"
    );
    assert!(entries(&env.data().join("tmp")).is_empty());
    assert!(entries(&env.data().join("bakeforms")).is_empty());
    assert_eq!(
        server.upload_sample("partial").status(),
        StatusCode::CREATED
    );
}

#[test]
fn state_survives_a_graceful_restart() {
    let env = Env::new();
    let (mut server, _) = ready_server(&env, 2);
    let pi = server.bake_ready(true);
    server.put_json(
        &format!("/oven/{}/metadata", pi.id),
        &serde_json::json!({"k": "v"}),
    );
    let disks: serde_json::Value = server.get("/disks").json().unwrap();
    // The power state is not inventory: learnt again after the restart (the baked Pi is
    // powered on again, the PPI asked), so it is left out of the comparison.
    let inventory = |server: &Server| {
        let mut pis: serde_json::Value = server.get("/pis").json().unwrap();
        for pi in pis.as_object_mut().unwrap().values_mut() {
            let pi = pi.as_object_mut().unwrap();
            pi.remove("powerState");
            pi.remove("powerStateAt");
        }
        pis
    };
    let pis = inventory(&server);
    server.stop();
    let server = Server::start(&env);
    assert_eq!(
        server.get("/disks").json::<serde_json::Value>().unwrap(),
        disks
    );
    assert_eq!(inventory(&server), pis);
    assert_eq!(
        server
            .get("/bakeforms")
            .json::<serde_json::Value>()
            .unwrap()[OS]["state"],
        "ready"
    );
}
