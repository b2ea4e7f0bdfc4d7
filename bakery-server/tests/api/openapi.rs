//! The OpenAPI document against the server's real answers: every documented (route, status)
//! is produced here over the real binary (or, for the few that need a stalled client, a
//! failing PPI or a nearly full disk, by the named test that asserts it), and every status the
//! server answered here is documented. What was answered is read from the server's own
//! request metrics (`bakery_http_requests_total{method,route,status}`).

use std::collections::BTreeSet;
use std::io::{Read, Write};

use reqwest::StatusCode;
use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};

use crate::common::*;

const ADMIN: &str = "admin-token-for-the-openapi-test";
const READER: &str = "reader-token-for-the-openapi-test";

/// Documented statuses produced by other tests (they need a stalled upload, a nearly full
/// data dir or more uploads than the cap): (method, route, status, the test that asserts it).
const ELSEWHERE: &[(&str, &str, u16, &str)] = &[
    (
        "post",
        "/api/v1/bakeforms/{name}",
        408,
        "uploads::a_stalled_upload_times_out_fails_and_leaves_no_file",
    ),
    (
        "post",
        "/api/v1/bakeforms/{name}",
        503,
        "uploads::a_stalled_upload_times_out_fails_and_leaves_no_file",
    ),
    (
        "post",
        "/api/v1/bakeforms/{name}",
        507,
        "uploads::an_announced_length_beyond_the_free_space_is_refused_at_once",
    ),
    ("post", "/api/v1/fridge", 507, "space::names_the_numbers"),
    (
        "post",
        "/api/v1/oven/{pi_id}/reset",
        507,
        "space::names_the_numbers",
    ),
    (
        "post",
        "/api/v1/disks",
        507,
        "disks::sparse_disks_are_not_overcommitted",
    ),
    (
        "post",
        "/api/v1/disks/{disk_id}/resize",
        507,
        "disks::sparse_disks_are_not_overcommitted",
    ),
    (
        "post",
        "/api/v1/disks/{disk_id}/snapshots",
        507,
        "snapshots::snapshots_and_restores_do_not_overcommit_the_data_dir",
    ),
    (
        "post",
        "/api/v1/disks/{disk_id}/restore",
        507,
        "snapshots::snapshots_and_restores_do_not_overcommit_the_data_dir",
    ),
];

/// Every `(method, route, status)` the server counted in its request metrics.
fn answered(server: &Server, seen: &mut BTreeSet<(String, String, u16)>) {
    let text = server
        .client
        .get(server.base.replace("/api/v1", "/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in text.lines() {
        let Some(labels) = line
            .strip_prefix("bakery_http_requests_total{")
            .and_then(|l| l.rsplit_once('}'))
            .map(|(l, _)| l)
        else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let status: u16 = label("status").parse().unwrap_or(0);
        seen.insert((label("method").to_lowercase(), label("route"), status));
    }
}

/// A raw upload announcing `length` bytes and sending a few: the answer's status.
fn announced_upload(server: &Server, name: &str, length: u64) -> u16 {
    let addr = server.base.trim_start_matches("http://");
    let addr = addr.split('/').next().unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /api/v1/bakeforms/{name} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: {length}\r\n\r\nabcde"
    )
    .unwrap();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).unwrap();
    String::from_utf8_lossy(&head[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap()
}

#[test]
fn every_documented_status_is_a_real_answer_and_every_answer_is_documented() {
    use bakery_server::http::openapi::{Access, OPERATIONS, access, statuses};
    let env = Env::new();
    let tokens = env.path("tokens");
    std::fs::write(&tokens, format!("{ADMIN}\nro:{READER}\n")).unwrap();
    let tokens = tokens.display().to_string();
    let server = Server::start_with(&env, &["--token-file", &tokens]);
    let c = server.client.clone();
    let url = |p: &str| server.url(p);
    let root = server.base.trim_end_matches("/api/v1").to_owned();
    let admin = |r: RequestBuilder| r.bearer_auth(ADMIN).send().unwrap();
    let status = |r: RequestBuilder| r.bearer_auth(ADMIN).send().unwrap().status().as_u16();
    let big = json!({"padding": "x".repeat(70 * 1024)});

    // The status page, its assets, the metrics and this document.
    assert_eq!(
        c.get(format!("{root}/")).send().unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(format!("{root}/assets/app.js"))
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(format!("{root}/assets/nope.js"))
            .send()
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(status(c.get(url("/openapi.json"))), 200);
    assert_eq!(status(c.get(format!("{root}/metrics"))), 200);
    // The document says how to authenticate, where the API is, and what an upload may be.
    let doc: Value = admin(c.get(url("/openapi.json"))).json().unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerToken"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], json!([{"bearerToken": []}]));
    assert_eq!(doc["servers"], json!([{"url": "/"}]));
    assert_eq!(doc["paths"]["/"]["get"]["security"], json!([{}]));
    assert_eq!(
        doc["paths"]["/api/v1/files/{name}"]["get"]["security"],
        json!([{}, {"bearerToken": []}])
    );
    let upload_types: BTreeSet<&str> =
        doc["paths"]["/api/v1/bakeforms/{name}"]["post"]["requestBody"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
    assert_eq!(
        upload_types,
        BTreeSet::from([
            "application/octet-stream",
            "application/gzip",
            "application/x-xz",
            "application/zip"
        ])
    );

    // Bakeforms: an upload, a bad image, an existing name, too large by its length.
    let image = std::fs::read(sample_image()).unwrap();
    assert_eq!(
        status(c.post(url(&format!("/bakeforms/{OS}"))).body(image.clone())),
        201
    );
    assert_eq!(
        status(c.post(url("/bakeforms/junk")).body(vec![7u8; 4096])),
        400
    );
    assert_eq!(
        status(c.post(url(&format!("/bakeforms/{OS}"))).body(vec![0u8; 16])),
        403
    );
    assert_eq!(
        announced_upload(&server, "huge", 1_000_000_000_000_000),
        413
    );
    assert_eq!(status(c.get(url(&format!("/bakeforms/{OS}")))), 200);
    assert_eq!(status(c.get(url("/bakeforms/nope"))), 404);
    assert_eq!(status(c.get(url("/bakeforms"))), 200);

    // Pis appear on the boot path (open without --boot-files-require-token).
    for serial in ["00000001", "00000002", "00000003"] {
        assert_eq!(
            server.boot_request(serial, "start4.elf", None).status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(status(c.get(url("/files/bootcode.bin"))), 200);
    assert_eq!(status(c.get(url("/files/nope.bin"))), 404);
    assert_eq!(status(c.get(url("/files/a%00b"))), 400);
    assert_eq!(status(c.get(url("/files/00000001/a%00b"))), 400);

    // Bakes: accepted, unknown bakeform, body too large, then no Pi left.
    let bake = |body: &Value| status(c.post(url("/fridge")).json(body));
    assert_eq!(bake(&json!({"bakeformName": OS})), 202);
    assert_eq!(bake(&json!({"bakeformName": "nope"})), 400);
    assert_eq!(bake(&big), 413);
    let first: bakery_client::PiInfo = admin(c.get(url("/oven/00000001?wait=baked")))
        .json()
        .unwrap();
    let baked = first.id.clone();
    assert_eq!(
        status(c.get(url(&format!("/files/{baked}/cmdline.txt")))),
        200
    );
    assert_eq!(bake(&json!({"bakeformName": OS})), 202);
    let second = ["00000001", "00000002", "00000003"]
        .into_iter()
        .find(|s| {
            *s != baked
                && admin(c.get(url(&format!("/pis/{s}"))))
                    .json::<bakery_client::PiInfo>()
                    .unwrap()
                    .state
                    != Some(bakery_client::PiState::Fridge)
        })
        .unwrap()
        .to_owned();
    assert_eq!(
        status(c.get(url(&format!("/oven/{second}?wait=baked")))),
        200
    );
    // The third fails its bake (the PPI fails): the long-poll says 409, power-cycle 502.
    env.set_ppi_mode("fail");
    assert_eq!(bake(&json!({"bakeformName": OS})), 202);
    let third = ["00000001", "00000002", "00000003"]
        .into_iter()
        .find(|s| *s != baked && *s != second)
        .unwrap();
    assert_eq!(
        status(c.get(url(&format!("/oven/{third}?wait=baked")))),
        409
    );
    assert_eq!(
        status(c.post(url(&format!("/oven/{second}/powercycle")))),
        502
    );
    env.set_ppi_mode("ok");
    assert_eq!(bake(&json!({"bakeformName": "nope-either"})), 400);
    // The third is in the fridge again; baking it now and then once more leaves none free.
    assert_eq!(bake(&json!({"bakeformName": OS})), 202);
    assert_eq!(
        status(c.get(url(&format!("/oven/{third}?wait=baked")))),
        200
    );
    assert_eq!(bake(&json!({"bakeformName": OS})), 404);

    // The oven and the inventory.
    for path in ["/fridge", "/oven", "/pis", "/disks"] {
        assert_eq!(status(c.get(url(path))), 200, "{path}");
    }
    assert_eq!(status(c.get(url(&format!("/oven/{baked}")))), 200);
    assert_eq!(status(c.get(url("/oven/0000abcd"))), 404);
    assert_eq!(status(c.get(url(&format!("/pis/{baked}")))), 200);
    assert_eq!(status(c.get(url("/pis/0000abcd"))), 404);
    assert_eq!(status(c.get(url(&format!("/pis/{baked}/boots")))), 200);
    assert_eq!(status(c.get(url("/pis/0000abcd/boots"))), 404);
    assert_eq!(status(c.get(url(&format!("/oven/{baked}/boots")))), 200);
    assert_eq!(status(c.get(url("/oven/0000abcd/boots"))), 404);
    assert_eq!(
        status(c.post(url(&format!("/oven/{baked}/powercycle")))),
        200
    );
    assert_eq!(status(c.post(url("/oven/0000abcd/powercycle"))), 404);
    let labels = format!("/pis/{baked}/labels");
    assert_eq!(status(c.put(url(&labels)).json(&json!({"rack": "a"}))), 200);
    assert_eq!(
        status(c.put(url(&labels)).json(&json!({"rack a": "b"}))),
        400
    );
    assert_eq!(status(c.put(url(&labels)).json(&big)), 413);
    assert_eq!(
        status(c.put(url("/pis/0000abcd/labels")).json(&json!({}))),
        404
    );
    let power = format!("/pis/{baked}/power/status");
    assert_eq!(status(c.post(url(&power))), 200);
    assert_eq!(status(c.post(url("/pis/NOT-A-PI/power/status"))), 400);
    assert_eq!(status(c.post(url("/pis/0000abcd/power/status"))), 404);
    let meta = format!("/oven/{baked}/metadata");
    assert_eq!(status(c.put(url(&meta)).json(&json!({"role": "web"}))), 200);
    assert_eq!(status(c.put(url(&meta)).json(&json!([1]))), 400);
    assert_eq!(status(c.put(url(&meta)).json(&big)), 413);
    assert_eq!(
        status(c.put(url("/oven/0000abcd/metadata")).json(&json!({}))),
        404
    );
    // cloud-init: set, read back, removed; served to the Pi's own address only.
    let ci = format!("/oven/{baked}/cloud-init/user-data");
    assert_eq!(status(c.put(url(&ci)).body("#cloud-config\n")), 200);
    assert_eq!(
        status(c.put(url(&format!("/oven/{baked}/cloud-init/x")))),
        400
    );
    assert_eq!(
        status(c.put(url("/oven/0000abcd/cloud-init/user-data"))),
        404
    );
    assert_eq!(
        status(c.put(url(&ci)).body("#".repeat(256 * 1024 + 1))),
        413
    );
    assert_eq!(status(c.get(url(&ci))), 200);
    assert_eq!(
        status(c.get(url(&format!("/oven/{baked}/cloud-init/x")))),
        400
    );
    assert_eq!(
        status(c.get(url("/oven/0000abcd/cloud-init/user-data"))),
        404
    );
    let booted = c
        .get(url(&format!("/files/{baked}/start4.elf")))
        .header("X-Forwarded-For", "10.0.0.31")
        .send()
        .unwrap()
        .status();
    assert_eq!(booted, StatusCode::OK);
    let nocloud = |file: &str, from: &str| {
        c.get(format!("{root}/cloud-init/{file}"))
            .header("X-Forwarded-For", from)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(nocloud("user-data", "10.0.0.31"), 200);
    assert_eq!(nocloud("userdata", "10.0.0.31"), 400);
    assert_eq!(nocloud("user-data", "10.0.0.32"), 404);
    assert_eq!(status(c.delete(url(&ci))), 200);
    assert_eq!(
        status(c.delete(url(&format!("/oven/{baked}/cloud-init/x")))),
        400
    );
    assert_eq!(
        status(c.delete(url("/oven/0000abcd/cloud-init/user-data"))),
        404
    );
    let upload = format!("/oven/{baked}/upload/settings.json");
    assert_eq!(status(c.post(url(&upload)).body("{}")), 200);
    assert_eq!(
        status(
            c.post(url(&format!("/oven/{baked}/upload/a%00b")))
                .body("{}")
        ),
        400
    );
    assert_eq!(
        status(
            c.post(url("/oven/0000abcd/upload/settings.json"))
                .body("{}")
        ),
        404
    );
    assert_eq!(
        status(c.get(url(&format!("/oven/{baked}/download/settings.json")))),
        200
    );
    assert_eq!(
        status(c.get(url(&format!("/oven/{baked}/download/nope.json")))),
        404
    );

    // Disks: create, attach, the root disk, attached elsewhere, resize, metadata, delete.
    let disk = |body: &Value| admin(c.post(url("/disks")).json(body));
    let d: bakery_client::Disk = disk(&json!({"size": 8})).json().unwrap();
    assert_eq!(disk(&json!({"size": 0})).status().as_u16(), 400);
    assert_eq!(disk(&big).status().as_u16(), 413);
    assert_eq!(status(c.get(url(&format!("/disks/{}", d.id)))), 200);
    assert_eq!(
        status(c.get(url("/disks/0f0f0f0f-0000-4000-8000-000000000000"))),
        404
    );
    let resize = format!("/disks/{}/resize", d.id);
    assert_eq!(status(c.post(url(&resize)).json(&json!({"size": 16}))), 200);
    assert_eq!(status(c.post(url(&resize)).json(&json!({"size": 1}))), 400);
    assert_eq!(status(c.post(url(&resize)).json(&big)), 413);
    assert_eq!(
        status(
            c.post(url("/disks/0f0f0f0f-0000-4000-8000-000000000000/resize"))
                .json(&json!({"size": 16}))
        ),
        404
    );
    let dmeta = format!("/disks/{}/metadata", d.id);
    assert_eq!(status(c.put(url(&dmeta)).json(&json!({"use": "db"}))), 200);
    assert_eq!(status(c.put(url(&dmeta)).json(&json!("x"))), 400);
    assert_eq!(status(c.put(url(&dmeta)).json(&big)), 413);
    assert_eq!(
        status(
            c.put(url("/disks/0f0f0f0f-0000-4000-8000-000000000000/metadata"))
                .json(&json!({}))
        ),
        404
    );
    // Snapshots: take (with and without a body), list, read, restore, delete.
    let snaps = format!("/disks/{}/snapshots", d.id);
    let no_disk = "/disks/0f0f0f0f-0000-4000-8000-000000000000";
    let no_snap = "/snapshots/0f0f0f0f-0000-4000-8000-000000000000";
    let snap: bakery_client::Snapshot =
        admin(c.post(url(&snaps)).json(&json!({"metadata": {"a": "b"}})))
            .json()
            .unwrap();
    assert_eq!(status(c.post(url(&snaps))), 201);
    assert_eq!(status(c.post(url(&snaps)).json(&json!({"x": 1}))), 400);
    assert_eq!(status(c.post(url(&snaps)).json(&big)), 413);
    assert_eq!(status(c.post(url(&format!("{no_disk}/snapshots")))), 404);
    assert_eq!(
        status(c.post(url(&format!("/disks/{}/snapshots", first.disks[0].id)))),
        403
    );
    assert_eq!(status(c.get(url(&snaps))), 200);
    assert_eq!(status(c.get(url("/disks/x/snapshots"))), 400);
    assert_eq!(status(c.get(url(&format!("{no_disk}/snapshots")))), 404);
    assert_eq!(status(c.get(url(&format!("/snapshots/{}", snap.id)))), 200);
    assert_eq!(status(c.get(url("/snapshots/x"))), 400);
    assert_eq!(status(c.get(url(no_snap))), 404);
    let restore = format!("/disks/{}/restore", d.id);
    assert_eq!(
        status(c.post(url(&restore)).json(&json!({"snapshot": snap.id}))),
        200
    );
    assert_eq!(
        status(c.post(url(&restore)).json(&json!({"snapshot": "x"}))),
        400
    );
    assert_eq!(status(c.post(url(&restore)).json(&big)), 413);
    assert_eq!(
        status(
            c.post(url(&restore))
                .json(&json!({"snapshot": no_snap.trim_start_matches("/snapshots/")}))
        ),
        404
    );
    assert_eq!(status(c.delete(url("/snapshots/x"))), 400);
    assert_eq!(status(c.delete(url(no_snap))), 404);
    let attach = |pi: &str, id: &str| {
        status(
            c.post(url(&format!("/oven/{pi}/disks")))
                .json(&json!({"diskId": id})),
        )
    };
    assert_eq!(attach(&baked, &d.id), 200);
    assert_eq!(attach(&second, &d.id), 409);
    assert_eq!(attach(&baked, "0f0f0f0f-0000-4000-8000-000000000000"), 404);
    assert_eq!(
        status(c.post(url(&format!("/oven/{baked}/disks"))).json(&big)),
        413
    );
    assert_eq!(status(c.post(url(&resize)).json(&json!({"size": 32}))), 409);
    assert_eq!(
        status(c.post(url(&restore)).json(&json!({"snapshot": snap.id}))),
        409
    );
    assert_eq!(status(c.delete(url(&format!("/disks/{}", d.id)))), 409);
    assert_eq!(status(c.delete(url(&format!("/bakeforms/{OS}")))), 409);
    let root_disk = first.disks[0].id.clone();
    assert_eq!(
        status(c.delete(url(&format!("/oven/{baked}/disks/{root_disk}")))),
        403
    );
    assert_eq!(
        status(c.delete(url(&format!(
            "/oven/{baked}/disks/0f0f0f0f-0000-4000-8000-000000000000"
        )))),
        404
    );
    assert_eq!(
        status(c.delete(url(&format!("/oven/{baked}/disks/{}", d.id)))),
        200
    );
    assert_eq!(
        status(c.delete(url(&format!("/snapshots/{}", snap.id)))),
        200
    );
    assert_eq!(status(c.delete(url(&format!("/disks/{}", d.id)))), 200);

    // Reset and unbake: accepted, not baked, unknown.
    assert_eq!(status(c.post(url(&format!("/oven/{second}/reset")))), 202);
    assert_eq!(
        status(c.get(url(&format!("/oven/{second}?wait=baked")))),
        200
    );
    assert_eq!(status(c.delete(url(&format!("/oven/{baked}")))), 200);
    assert!(eventually(std::time::Duration::from_secs(10), || {
        admin(c.get(url(&format!("/pis/{baked}"))))
            .json::<bakery_client::PiInfo>()
            .unwrap()
            .state
            == Some(bakery_client::PiState::Fridge)
    }));
    assert_eq!(status(c.post(url(&format!("/oven/{baked}/reset")))), 403);
    let ci = format!("/oven/{baked}/cloud-init/user-data");
    assert_eq!(status(c.put(url(&ci)).body("#cloud-config\n")), 403);
    assert_eq!(status(c.delete(url(&ci))), 403);
    assert_eq!(status(c.post(url("/oven/0000abcd/reset"))), 404);
    assert_eq!(status(c.delete(url(&format!("/oven/{baked}")))), 403);
    assert_eq!(status(c.delete(url("/oven/0000abcd"))), 404);
    assert_eq!(
        status(c.post(url(&format!("/oven/{baked}/powercycle")))),
        403
    );
    assert_eq!(status(c.get(url(&format!("/oven/{baked}/boots")))), 404);
    assert_eq!(status(c.delete(url("/bakeforms/junk"))), 200);
    assert_eq!(status(c.delete(url("/bakeforms/nope"))), 404);

    // Events and the live stream (its head is enough).
    assert_eq!(status(c.get(url("/events?since=0"))), 200);
    assert_eq!(status(c.get(url("/events?since=abc"))), 400);
    let stream = admin(c.get(url("/events/stream")));
    assert_eq!(stream.status(), StatusCode::OK);
    drop(stream);

    // Refusals: no token (401) on every guarded route, a read-only token on every write (403).
    for o in OPERATIONS
        .iter()
        .filter(|o| access(o.path) == Access::Token)
    {
        let path = o
            .path
            .replace("{pi_id}", &baked)
            .replace("{disk_id}", &d.id)
            .replace("{snapshot_id}", &snap.id)
            .replace("{name}", OS)
            .replace("{filename}", "settings.json")
            .replace("{file}", "user-data");
        let full = format!("{root}{path}");
        let method = reqwest::Method::from_bytes(o.method.to_uppercase().as_bytes()).unwrap();
        let none = c.request(method.clone(), &full).send().unwrap().status();
        assert_eq!(none, StatusCode::UNAUTHORIZED, "{} {}", o.method, o.path);
        if o.method != "get" {
            let ro = c
                .request(method, &full)
                .bearer_auth(READER)
                .send()
                .unwrap()
                .status();
            assert_eq!(
                ro,
                StatusCode::FORBIDDEN,
                "read-only {} {}",
                o.method,
                o.path
            );
        }
    }

    let mut seen = BTreeSet::new();
    answered(&server, &mut seen);
    drop(server);

    // The boot path with --boot-files-require-token: 401 without one.
    let locked = Server::start_with(
        &env,
        &["--token-file", &tokens, "--boot-files-require-token"],
    );
    for path in ["/files/bootcode.bin", "/files/00000001/start4.elf"] {
        let got = locked.client.get(locked.url(path)).send().unwrap().status();
        assert_eq!(got, StatusCode::UNAUTHORIZED, "{path}");
    }
    answered(&locked, &mut seen);

    // Both ways: every documented status was answered (or is asserted by the named test),
    // and every answer is documented.
    let mut missing = Vec::new();
    let mut documented = BTreeSet::new();
    for o in OPERATIONS {
        for (code, _) in statuses(o) {
            documented.insert((o.method.to_owned(), o.path.to_owned(), code));
            let here = seen.contains(&(o.method.to_owned(), o.path.to_owned(), code));
            let elsewhere = ELSEWHERE
                .iter()
                .any(|(m, p, s, _)| *m == o.method && *p == o.path && *s == code);
            if !here && !elsewhere {
                missing.push(format!("{} {} {code}", o.method, o.path));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented but never answered: {missing:#?}"
    );
    let undocumented: Vec<_> = seen
        .iter()
        .filter(|(_, route, _)| route != "unmatched")
        .filter(|key| !documented.contains(*key))
        .collect();
    assert!(
        undocumented.is_empty(),
        "answered but not documented: {undocumented:#?}"
    );
    for (method, path, code, test) in ELSEWHERE {
        assert!(
            documented.contains(&((*method).to_owned(), (*path).to_owned(), *code)),
            "{method} {path} {code} ({test}) is not documented"
        );
    }
}
