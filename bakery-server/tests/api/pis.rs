//! The Pi lifecycle over HTTP: registration, bake, long-poll, unbake, reset, concurrency.

use std::collections::HashSet;
use std::time::Duration;

use bakery_client::{ErrorBody, ErrorKind, PiInfo, PiMap, PiState};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

#[test]
fn pis_register_through_the_boot_path_only() {
    let env = Env::new();
    let server = Server::start(&env);
    let fridge: PiMap = server.get("/fridge").json().unwrap();
    assert!(fridge.is_empty());
    let serials = server.add_pis(3);
    let fridge: PiMap = server.get("/fridge").json().unwrap();
    assert_eq!(fridge.keys().cloned().collect::<Vec<_>>(), serials);
    assert!(fridge.values().all(|p| p.status.code() == 1));
    let all: PiMap = server.get("/pis").json().unwrap();
    assert_eq!(all.len(), 3);
    let one: PiInfo = server.get("/pis/00000002").json().unwrap();
    assert_eq!(one.state, Some(PiState::Fridge));
    assert_eq!(server.get("/pis/0000000f").status(), StatusCode::NOT_FOUND);
    let oven: PiMap = server.get("/oven").json().unwrap();
    assert!(oven.is_empty());
    // `GET /oven/{id}` answers for a fridge Pi too (status 1), as the first Go server did.
    let resp = server.get("/oven/00000001");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<PiInfo>().unwrap().status.code(), 1);
    let resp = server.get("/oven/0000000f");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body = resp.json::<ErrorBody>().unwrap();
    assert!(body.error.contains("0000000f"));
    assert_eq!(body.code, Some(ErrorKind::PiNotFound));
    // Every new Pi was powered off through the PPI.
    assert!(eventually(Duration::from_secs(5), || env.ppi_calls().len() == 3));
    for serial in &serials {
        assert!(
            env.ppi_calls()
                .iter()
                .any(|c| c.contains(serial) && c.contains("poweroff"))
        );
    }
}

#[test]
fn bake_wait_and_unbake() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    env.clear_ppi_calls();
    let pi = server.bake(true);
    assert_eq!(pi.id, "00000001");
    assert_eq!(pi.status.code(), 3);
    assert_eq!(pi.source_bakeform.as_ref().unwrap().name, OS);

    let resp = server.wait_baked(&pi.id);
    assert_eq!(resp.status(), StatusCode::OK);
    let pi: PiInfo = resp.json().unwrap();
    assert_eq!(pi.status.code(), 2);
    assert_eq!(pi.disks.len(), 1);
    let root = &pi.disks[0];
    assert_eq!(root.size, 0);
    assert_eq!(root.nfs_address, "10.0.0.2");
    let root_dir = std::path::PathBuf::from(&root.location);
    assert_eq!(root_dir.parent().unwrap(), env.data().join("disks"));
    assert_eq!(
        std::fs::read_to_string(root_dir.join("etc/hostname")).unwrap(),
        "raspberrypi\n"
    );
    assert!(root_dir.join("piConfig").is_dir());
    let oven: PiMap = server.get("/oven").json().unwrap();
    assert_eq!(oven.len(), 1);
    let fridge: PiMap = server.get("/fridge").json().unwrap();
    assert!(fridge.is_empty());

    // Power: off before the clone, on once baked.
    let calls = env.ppi_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].contains("poweroff") && calls[1].contains("poweron"));

    assert_eq!(server.delete("/oven/00000001").status(), StatusCode::OK);
    let pi: PiInfo = server.get("/pis/00000001").json().unwrap();
    assert_eq!(pi.status.code(), 1);
    assert!(pi.disks.is_empty());
    assert!(pi.source_bakeform.is_none());
    assert!(!root_dir.exists());
    assert!(eventually(Duration::from_secs(5), || entries(
        &env.data().join("trash")
    )
    .is_empty()));
    assert!(env.ppi_calls().last().unwrap().contains("poweroff"));
    // Unbake of a Pi that is not baked: 403; unknown: 404.
    assert_eq!(
        server.delete("/oven/00000001").status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server.delete("/oven/0000abcd").status(),
        StatusCode::NOT_FOUND
    );
    // A Pi in the fridge is still answered (200, status 1), as the first Go server did: the
    // Go client reads it after an unbake. Only unknown serials are 404.
    let resp = server.get("/oven/00000001");
    assert_eq!(resp.status(), StatusCode::OK);
    let fridge: PiInfo = resp.json().unwrap();
    assert_eq!(fridge.status.code(), 1);
    assert_eq!(fridge.state, Some(bakery_client::PiState::Fridge));
    assert_eq!(fridge.id, "00000001");
    assert_eq!(server.get("/oven/0000abcd").status(), StatusCode::NOT_FOUND);
    // A long-poll on a Pi that is not being baked answers at once with its status.
    let resp = server.get("/oven/00000001?wait=baked&timeout=30");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<PiInfo>().unwrap().status.code(), 1);
    assert_eq!(
        server.get("/oven/0000abcd?wait=baked").status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn bake_errors_follow_the_contract() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    let resp = server.post_json("/fridge", &json!({"bakeformName": "nope"}));
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().unwrap().contains("unknown bakeform nope"));
    let resp = server.post_json("/fridge", &json!({"bakeformName": "../etc"}));
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    server.bake_ready(false);
    let resp = server.post_json("/fridge", &json!({"bakeformName": OS}));
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // The contract's body, with bakery's additive `code` beside it (the Go client ignores it).
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["error"], "no available Pi found");
    assert_eq!(body["code"], "no_free_pi");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");

    let resp = server
        .client
        .post(server.url("/fridge"))
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.json::<ErrorBody>()
            .unwrap()
            .error
            .contains("invalid json")
    );
    let resp = server.post_json("/fridge", &json!({"name": OS}));
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().unwrap().contains("bakeformName"));
    let big = json!({"bakeformName": OS, "pad": "x".repeat(70 * 1024)});
    assert_eq!(
        server.post_json("/fridge", &big).status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let resp = server.get("/no/such/route");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body = resp.json::<ErrorBody>().unwrap();
    assert!(body.error.contains("no route"));
    assert_eq!(body.code, Some(ErrorKind::NotFound));
    let resp = server.client.patch(server.url("/fridge")).send().unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        resp.json::<ErrorBody>().unwrap().code,
        Some(ErrorKind::MethodNotAllowed)
    );
    for query in [
        "wait=cooked",
        "wait=baked&timeout=soon",
        "wait=baked&timeout=-1",
    ] {
        let resp = server.get(&format!("/oven/00000001?{query}"));
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(resp.json::<ErrorBody>().is_ok());
    }
}

#[test]
fn fifty_concurrent_bakes_for_ten_pis() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 10);
    let base = server.base.clone();
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let url = format!("{base}/fridge");
            std::thread::spawn(move || {
                let resp = reqwest::blocking::Client::new()
                    .post(url)
                    .json(&json!({"bakeformName": OS, "powerOn": false}))
                    .send()
                    .unwrap();
                let status = resp.status();
                let body = resp.text().unwrap();
                (status, body)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let accepted: Vec<PiInfo> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    let refused = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::NOT_FOUND)
        .count();
    assert_eq!(accepted.len(), 10, "{results:?}");
    assert_eq!(refused, 40);
    let answered = started.elapsed();
    let ids: HashSet<_> = accepted.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids.len(), 10, "a pi was given twice");
    for id in &ids {
        assert_eq!(server.wait_baked(id).status(), StatusCode::OK);
    }
    eprintln!(
        "50 concurrent bake requests answered in {answered:?}; 10 Pis baked after {:?}",
        started.elapsed()
    );
    let oven: PiMap = server.get("/oven").json().unwrap();
    assert_eq!(oven.len(), 10);
    let roots: HashSet<_> = oven.values().map(|p| p.disks[0].location.clone()).collect();
    assert_eq!(roots.len(), 10);
    assert!(entries(&env.data().join("tmp")).is_empty());
}

#[test]
fn long_poll_times_out_then_reports_the_failure() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    env.set_ppi_mode("slowoff");
    let pi = server.bake(true);
    let started = std::time::Instant::now();
    let resp = server.get(&format!("/oven/{}?wait=baked&timeout=0.5s", pi.id));
    assert_eq!(resp.status(), StatusCode::OK);
    let still: PiInfo = resp.json().unwrap();
    assert_eq!(still.status.code(), 3);
    assert!(started.elapsed() >= Duration::from_millis(450));
    // The PPI hangs on poweroff: killed after --ppi-timeout (2 s), the bake fails.
    let resp = server.get(&format!("/oven/{}?wait=baked&timeout=20", pi.id));
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let err: ErrorBody = resp.json().unwrap();
    assert!(
        err.error.starts_with("bake of pi 00000001 failed: "),
        "{}",
        err.error
    );
    assert!(err.error.contains("timed out"), "{}", err.error);
    let pi: PiInfo = server.get("/pis/00000001").json().unwrap();
    assert_eq!(pi.state, Some(PiState::Fridge));
    assert!(pi.last_error.unwrap().contains("timed out"));
    assert!(entries(&env.data().join("disks")).is_empty());
    // A later successful bake clears the error.
    env.set_ppi_mode("ok");
    let pi = server.bake_ready(true);
    assert!(pi.last_error.is_none());
}

#[test]
fn metadata_upload_powercycle_and_reset() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    let pi = server.bake_ready(false);
    let root = std::path::PathBuf::from(&pi.disks[0].location);

    let resp = server.put_json(
        &format!("/oven/{}/metadata", pi.id),
        &json!({"deployment": "cf", "index": 3}),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    let got: PiInfo = resp.json().unwrap();
    assert_eq!(got.metadata["deployment"], "cf");
    let resp = server.put_json(&format!("/oven/{}/metadata", pi.id), &json!([1, 2]));
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let settings = b"{\"agent_id\":\"a1\"}".to_vec();
    let resp = server.post_bytes(
        &format!("/oven/{}/upload/settings.json", pi.id),
        settings.clone(),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        std::fs::read(root.join("piConfig/settings.json")).unwrap(),
        settings
    );
    let resp = server.get(&format!("/oven/{}/download/settings.json", pi.id));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().unwrap().to_vec(), settings);
    assert_eq!(
        server
            .get(&format!("/oven/{}/download/missing.json", pi.id))
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get("/oven/0000beef/download/settings.json").status(),
        StatusCode::NOT_FOUND
    );

    env.clear_ppi_calls();
    assert_eq!(
        server
            .client
            .post(server.url(&format!("/oven/{}/powercycle", pi.id)))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let calls = env.ppi_calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[0].contains("poweroff") && calls[1].contains("poweron"));

    // Reset: the root comes back from the bakeform, piConfig stays.
    std::fs::write(root.join("etc/hostname"), "changed\n").unwrap();
    let resp = server.reset(&pi.id);
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(server.wait_baked(&pi.id).status(), StatusCode::OK);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "raspberrypi\n"
    );
    assert_eq!(
        std::fs::read(root.join("piConfig/settings.json")).unwrap(),
        settings
    );
    let after: PiInfo = server.get(&format!("/oven/{}", pi.id)).json().unwrap();
    assert_eq!(after.disks[0].location, pi.disks[0].location);
    assert_eq!(after.metadata["index"], 3);
    assert!(entries(&env.data().join("tmp")).is_empty());
}

#[test]
fn request_bodies_with_unknown_fields_are_refused_naming_the_field() {
    let env = Env::new();
    let (server, serials) = ready_server(&env, 1);
    let calls_before = env.ppi_calls().len();
    let disk: bakery_client::Disk = server
        .post_json("/disks", &json!({"size": 8}))
        .json()
        .unwrap();
    let cases = [
        (
            "/fridge".to_owned(),
            json!({"bakeformName": OS, "poweron": false}),
            "poweron",
        ),
        (
            "/disks".to_owned(),
            json!({"size": 8, "ephemeal": true}),
            "ephemeal",
        ),
        (
            format!("/oven/{}/disks", serials[0]),
            json!({"diskId": disk.id, "readOnly": true}),
            "readOnly",
        ),
        (
            format!("/disks/{}/resize", disk.id),
            json!({"size": 16, "sizeMib": 16}),
            "sizeMib",
        ),
    ];
    for (path, body, field) in cases {
        let resp = server.post_json(&path, &body);
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let error = resp.json::<ErrorBody>().unwrap().error;
        assert!(
            error.contains(&format!("unknown field `{field}`")),
            "{path}: {error}"
        );
    }
    // Nothing happened: no Pi baked or powered, no second disk, the disk not grown.
    let oven: PiMap = server.get("/oven").json().unwrap();
    assert!(oven.is_empty(), "{oven:?}");
    assert_eq!(env.ppi_calls().len(), calls_before);
    let disks: bakery_client::DiskList = server.get("/disks").json().unwrap();
    assert_eq!(disks.disks.len(), 1);
    assert_eq!(disks.disks[&disk.id].size, 8);
}
