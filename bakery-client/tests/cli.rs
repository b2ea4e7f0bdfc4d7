//! The real `bakery` binary against wiremock (a real HTTP server): every subcommand in both
//! output formats, and the exit codes and messages of not found, server down, bad token,
//! conflict and bad usage.

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{bearer_token, body_bytes, body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "cli-t0ken";

/// Runs `bakery` with `args`, the server's URL and the token in the environment.
async fn bakery(server_url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_bakery"))
        .args(args)
        .env("BAKERY_URL", format!("{server_url}/api/v1"))
        .env("BAKERY_TOKEN", TOKEN)
        .env_remove("BAKERY_OUTPUT")
        .kill_on_drop(true)
        .output()
        .await
        .expect("bakery runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_ok(output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
}

#[track_caller]
fn assert_exit(output: &Output, code: i32, message: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stderr: {}",
        stderr(output)
    );
    assert!(
        stderr(output).contains(message),
        "stderr {:?} should contain {message:?}",
        stderr(output)
    );
    assert!(stderr(output).starts_with("bakery: "), "{}", stderr(output));
}

/// Runs `args` with `--output json` and parses stdout.
async fn bakery_json(server_url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let output = bakery(server_url, &all).await;
    assert_ok(&output);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("stdout is not json ({e}): {}", stdout(&output));
    })
}

async fn mock(server: &MockServer, verb: &str, route: &str, reply: ResponseTemplate) {
    Mock::given(method(verb))
        .and(path(format!("/api/v1{route}")))
        .and(bearer_token(TOKEN))
        .respond_with(reply)
        .mount(server)
        .await;
}

fn ok_json(body: &Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn error(message: &str) -> Value {
    json!({"error": message})
}

fn disk(id: &str, size: i64, attached: Option<&str>) -> Value {
    let mut disk = json!({"id": id, "location": format!("/srv/bakery/disks/{id}"), "size": size, "nfsAddress": "10.0.0.2"});
    if let Some(pi) = attached {
        disk["attachedTo"] = json!(pi);
    }
    disk
}

// ----- pi -----

#[tokio::test]
async fn pi_list_in_both_formats() {
    let server = MockServer::start().await;
    let pis = json!({
        "1a2b3c4d": {"id": "1a2b3c4d", "status": 2, "state": "baked", "address": "10.0.0.21",
                     "rootKind": "nbd", "model": "pi4", "powerState": "on",
                     "powerStateAt": 1_700_000_000_000_i64,
                     "sourceBakeform": {"name": "raspios", "location": "/l"},
                     "disks": [disk("root1", 0, Some("1a2b3c4d"))]},
        "ffff0001": {"id": "ffff0001", "status": 1}
    });
    mock(&server, "GET", "/pis", ok_json(&pis)).await;
    let table = bakery(&server.uri(), &["pi", "list"]).await;
    assert_ok(&table);
    assert_eq!(
        stdout(&table),
        "ID        STATE   POWER  MODEL  BAKEFORM  ROOT  ADDRESS    DISKS\n\
         1a2b3c4d  baked   on     pi4    raspios   nbd   10.0.0.21  1\n\
         ffff0001  fridge  -      -      -         -     -          0\n"
    );
    assert_eq!(bakery_json(&server.uri(), &["pi", "list"]).await, pis);
}

#[tokio::test]
async fn pi_list_falls_back_to_fridge_and_oven_on_the_first_server() {
    let server = MockServer::start().await;
    mock(&server, "GET", "/pis", ResponseTemplate::new(404)).await;
    mock(
        &server,
        "GET",
        "/fridge",
        ok_json(&json!({"aaaa0001": {"id": "aaaa0001", "status": 1}})),
    )
    .await;
    mock(
        &server,
        "GET",
        "/oven",
        ok_json(&json!({"aaaa0002": {"id": "aaaa0002", "status": 3}})),
    )
    .await;
    let listed = bakery_json(&server.uri(), &["pi", "list"]).await;
    assert_eq!(
        listed,
        json!({"aaaa0001": {"id": "aaaa0001", "status": 1}, "aaaa0002": {"id": "aaaa0002", "status": 3}})
    );
}

#[tokio::test]
async fn pi_show_in_both_formats_and_not_found() {
    let server = MockServer::start().await;
    let info = json!({
        "id": "1a2b3c4d", "status": 2, "state": "baked", "address": "10.0.0.21",
        "sourceBakeform": {"name": "raspios", "location": "/l"},
        "disks": [disk("root1", 0, Some("1a2b3c4d")), disk("data1", 512, Some("1a2b3c4d"))],
        "network": {"ip": "10.0.0.21", "netmask": "255.255.255.0", "gateway": "10.0.0.1"},
        "metadata": {"deployment": "cf"},
        "model": "pi4", "labels": {"rack": "a", "slot": "7"},
        "powerState": "off", "powerStateAt": 1_700_000_030_000_i64,
        "firstSeen": 1_699_000_000_000_i64, "lastSeen": 1_700_000_060_000_i64,
        "lastBoot": {"started": 1_700_000_000_000_i64, "finished": 1_700_000_000_021_i64,
                     "files": 7, "bytes": 782_336, "failed": 0, "timeToLastFileMs": 21}
    });
    mock(&server, "GET", "/pis/1a2b3c4d", ok_json(&info)).await;
    mock(
        &server,
        "GET",
        "/pis/ffff0000",
        ResponseTemplate::new(404).set_body_json(error("pi ffff0000 not found")),
    )
    .await;
    mock(&server, "GET", "/pis/eeee0000", ResponseTemplate::new(404)).await;

    let table = bakery(&server.uri(), &["pi", "show", "1a2b3c4d"]).await;
    assert_ok(&table);
    let text = stdout(&table);
    // The state by name (no raw status number) and the last boot on one line.
    assert!(
        text.starts_with(
            "id          1a2b3c4d\nstate       baked\npower       off since 2023-11-14 22:13:50 UTC\nmodel       pi4\n"
        ),
        "{text}"
    );
    assert!(!text.contains("status"), "{text}");
    assert!(
        text.contains("network     10.0.0.21/255.255.255.0 via 10.0.0.1\n"),
        "{text}"
    );
    assert!(text.contains("labels      rack=a slot=7\n"), "{text}");
    assert!(
        text.contains("first seen  2023-11-03 08:26:40 UTC\nlast seen   2023-11-14 22:14:20 UTC\n"),
        "{text}"
    );
    assert!(
        text.contains("last boot   2023-11-14 22:13:20 UTC, 21 ms, 7 files, 782336 bytes\n"),
        "{text}"
    );
    assert!(text.contains("metadata    deployment=\"cf\"\n"), "{text}");
    assert!(
        text.contains("data1  512       1a2b3c4d     no         10.0.0.2  /srv/bakery/disks/data1"),
        "{text}"
    );
    assert_eq!(
        bakery_json(&server.uri(), &["pi", "show", "1a2b3c4d"]).await,
        info
    );

    let missing = bakery(&server.uri(), &["pi", "show", "ffff0000"]).await;
    assert_exit(&missing, 3, "bakery: pi ffff0000 not found");
    assert!(missing.stdout.is_empty());
    // no message from the server: the CLI names the subject itself
    let bare = bakery(&server.uri(), &["pi", "show", "eeee0000"]).await;
    assert_exit(&bare, 3, "bakery: pi eeee0000 not found");
}

#[tokio::test]
async fn pi_label_replaces_the_labels_and_pi_bake_sends_constraints() {
    let server = MockServer::start().await;
    let labelled = json!({"id": "1a2b3c4d", "status": 1, "state": "fridge",
                          "labels": {"rack": "a", "slot": "7"}});
    Mock::given(method("PUT"))
        .and(path("/api/v1/pis/1a2b3c4d/labels"))
        .and(body_json(json!({"rack": "a", "slot": "7"})))
        .respond_with(ok_json(&labelled))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v1/pis/1a2b3c4d/labels"))
        .and(body_json(json!({})))
        .respond_with(ok_json(&json!({"id": "1a2b3c4d", "status": 1})))
        .expect(1)
        .mount(&server)
        .await;
    let set = bakery(
        &server.uri(),
        &["pi", "label", "1a2b3c4d", "rack=a", "slot=7"],
    )
    .await;
    assert_ok(&set);
    assert!(
        stdout(&set).contains("labels     rack=a slot=7\n"),
        "{}",
        stdout(&set)
    );
    assert_ok(&bakery(&server.uri(), &["pi", "label", "1a2b3c4d"]).await);
    let bad = bakery(&server.uri(), &["pi", "label", "1a2b3c4d", "rack"]).await;
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("expected KEY=VALUE, got \"rack\""),
        "{bad:?}"
    );

    Mock::given(method("POST"))
        .and(path("/api/v1/fridge"))
        .and(body_json(json!({"bakeformName": "raspios", "model": "pi5",
                              "labels": {"rack": "a", "poe": "yes"}})))
        .respond_with(ResponseTemplate::new(404).set_body_json(error(
            "no available Pi found matching model pi5, labels poe=yes,rack=a",
        )))
        .expect(1)
        .mount(&server)
        .await;
    let none = bakery(
        &server.uri(),
        &[
            "pi", "bake", "raspios", "--model", "pi5", "--label", "rack=a", "--label", "poe=yes",
        ],
    )
    .await;
    assert_exit(
        &none,
        3,
        "bakery: no available Pi found matching model pi5, labels poe=yes,rack=a",
    );
}

#[tokio::test]
async fn pi_bake_sends_the_root_kind_and_shows_it() {
    let server = MockServer::start().await;
    let baked = json!({"id": "1a2b3c4d", "status": 3, "state": "preparing", "rootKind": "nbd"});
    Mock::given(method("POST"))
        .and(path("/api/v1/fridge"))
        .and(body_json(
            json!({"bakeformName": "raspios", "rootKind": "nbd"}),
        ))
        .respond_with(ResponseTemplate::new(202).set_body_json(&baked))
        .expect(2)
        .mount(&server)
        .await;
    let args = ["pi", "bake", "raspios", "--root-kind", "nbd"];
    let table = bakery(&server.uri(), &args).await;
    assert_ok(&table);
    assert!(
        stdout(&table).contains("1a2b3c4d  preparing  -      -      -         nbd "),
        "{}",
        stdout(&table)
    );
    assert_eq!(bakery_json(&server.uri(), &args).await, baked);
    let bad = bakery(
        &server.uri(),
        &["pi", "bake", "raspios", "--root-kind", "iscsi"],
    )
    .await;
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

#[tokio::test]
async fn pi_bake_with_wait_in_both_formats() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/fridge"))
        .and(bearer_token(TOKEN))
        .and(body_json(json!({"bakeformName": "raspios"})))
        .respond_with(
            ResponseTemplate::new(202).set_body_json(json!({"id": "1a2b3c4d", "status": 3})),
        )
        .expect(3)
        .mount(&server)
        .await;
    let baked = json!({"id": "1a2b3c4d", "status": 2, "state": "baked",
                       "sourceBakeform": {"name": "raspios", "location": "/l"}});
    Mock::given(method("GET"))
        .and(path("/api/v1/oven/1a2b3c4d"))
        .and(query_param("wait", "baked"))
        .respond_with(ok_json(&baked))
        .expect(2)
        .mount(&server)
        .await;

    let table = bakery(&server.uri(), &["pi", "bake", "raspios", "--wait"]).await;
    assert_ok(&table);
    assert_eq!(
        stdout(&table),
        "ID        STATE  POWER  MODEL  BAKEFORM  ROOT  ADDRESS  DISKS\n1a2b3c4d  baked  -      -      raspios   nfs   -        0\n"
    );
    assert_eq!(
        bakery_json(&server.uri(), &["pi", "bake", "raspios", "--wait"]).await,
        baked
    );
    // without --wait: the accepted Pi, still preparing
    assert_eq!(
        bakery_json(&server.uri(), &["pi", "bake", "raspios"]).await,
        json!({"id": "1a2b3c4d", "status": 3})
    );
}

#[tokio::test]
async fn pi_bake_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/fridge"))
        .and(body_json(json!({"bakeformName": "raspios"})))
        .respond_with(ResponseTemplate::new(404).set_body_json(error("no available Pi found")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/fridge"))
        .and(body_json(json!({"bakeformName": "broken"})))
        .respond_with(
            ResponseTemplate::new(202).set_body_json(json!({"id": "1a2b3c4d", "status": 3})),
        )
        .mount(&server)
        .await;
    mock(
        &server,
        "GET",
        "/oven/1a2b3c4d",
        ResponseTemplate::new(409).set_body_json(error(
            "bake of pi 1a2b3c4d failed: bakeform broken has no root",
        )),
    )
    .await;
    let none = bakery(&server.uri(), &["pi", "bake", "raspios"]).await;
    assert_exit(&none, 3, "bakery: no available Pi found");
    let failed = bakery(&server.uri(), &["pi", "bake", "broken", "--wait"]).await;
    assert_exit(
        &failed,
        6,
        "bakery: conflict: bake of pi 1a2b3c4d failed: bakeform broken has no root",
    );
}

#[tokio::test]
async fn pi_unbake_and_power_cycle_in_both_formats() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/oven/1a2b3c4d"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/oven/1a2b3c4d/powercycle"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    mock(
        &server,
        "DELETE",
        "/oven/aaaa0001",
        ResponseTemplate::new(403).set_body_json(error("pi aaaa0001 is not baked")),
    )
    .await;

    let unbaked = bakery(&server.uri(), &["pi", "unbake", "1a2b3c4d"]).await;
    assert_ok(&unbaked);
    assert_eq!(stdout(&unbaked), "unbaking pi 1a2b3c4d\n");
    let quiet = bakery(&server.uri(), &["-o", "json", "pi", "unbake", "1a2b3c4d"]).await;
    assert_ok(&quiet);
    assert!(quiet.stdout.is_empty());

    let cycled = bakery(&server.uri(), &["pi", "power-cycle", "1a2b3c4d"]).await;
    assert_ok(&cycled);
    assert_eq!(stdout(&cycled), "power-cycled pi 1a2b3c4d\n");
    let quiet = bakery(
        &server.uri(),
        &["pi", "power-cycle", "1a2b3c4d", "--output", "json"],
    )
    .await;
    assert_ok(&quiet);
    assert!(quiet.stdout.is_empty());

    let refused = bakery(&server.uri(), &["pi", "unbake", "aaaa0001"]).await;
    assert_exit(&refused, 5, "bakery: refused: pi aaaa0001 is not baked");
}

#[tokio::test]
async fn pi_power_status_asks_the_server_in_both_formats() {
    let server = MockServer::start().await;
    let info = json!({"id": "1a2b3c4d", "status": 2, "state": "baked",
                      "powerState": "on", "powerStateAt": 1_700_000_000_000_i64});
    Mock::given(method("POST"))
        .and(path("/api/v1/pis/1a2b3c4d/power/status"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(&info))
        .expect(2)
        .mount(&server)
        .await;
    mock(
        &server,
        "POST",
        "/pis/ffff0000/power/status",
        ResponseTemplate::new(404).set_body_json(error("pi ffff0000 not found")),
    )
    .await;
    let line = bakery(&server.uri(), &["pi", "power-status", "1a2b3c4d"]).await;
    assert_ok(&line);
    assert_eq!(
        stdout(&line),
        "1a2b3c4d  on since 2023-11-14 22:13:20 UTC\n"
    );
    assert_eq!(
        bakery_json(&server.uri(), &["pi", "power-status", "1a2b3c4d"]).await,
        info
    );
    let missing = bakery(&server.uri(), &["pi", "power-status", "ffff0000"]).await;
    assert_exit(&missing, 3, "bakery: pi ffff0000 not found");
}

#[tokio::test]
async fn pi_cloud_init_set_from_a_file_and_stdin_print_and_delete() {
    let server = MockServer::start().await;
    let route = "/api/v1/oven/1a2b3c4d/cloud-init/user-data";
    let from_file = b"#cloud-config\nhostname: web-1\n".to_vec();
    let from_stdin = b"#cloud-config\nhostname: web-2\n".to_vec();
    for body in [&from_file, &from_stdin] {
        Mock::given(method("PUT"))
            .and(path(route))
            .and(bearer_token(TOKEN))
            .and(body_bytes(body.clone()))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(route))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(from_file.clone()))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(route))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    mock(
        &server,
        "PUT",
        "/oven/aaaa0001/cloud-init/user-data",
        ResponseTemplate::new(403).set_body_json(error("pi aaaa0001 is not baked")),
    )
    .await;
    mock(
        &server,
        "GET",
        "/oven/1a2b3c4d/cloud-init/vendor-data",
        ResponseTemplate::new(404)
            .set_body_json(error("cloud-init vendor-data of pi 1a2b3c4d is not set")),
    )
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("user-data");
    std::fs::write(&file, &from_file).expect("write");
    let file = file.to_str().expect("utf-8");
    let set = bakery(
        &server.uri(),
        &["pi", "cloud-init", "1a2b3c4d", "user-data", "--set", file],
    )
    .await;
    assert_ok(&set);
    assert_eq!(stdout(&set), "set cloud-init user-data of pi 1a2b3c4d\n");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bakery"))
        .args(["pi", "cloud-init", "1a2b3c4d", "user-data", "--set", "-"])
        .env("BAKERY_URL", format!("{}/api/v1", server.uri()))
        .env("BAKERY_TOKEN", TOKEN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bakery runs");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &from_stdin)
        .await
        .expect("write stdin");
    drop(stdin);
    let piped = child.wait_with_output().await.expect("bakery ends");
    assert_ok(&piped);

    let printed = bakery(
        &server.uri(),
        &["pi", "cloud-init", "1a2b3c4d", "user-data"],
    )
    .await;
    assert_ok(&printed);
    assert_eq!(printed.stdout, from_file, "the file's bytes, unchanged");

    let deleted = bakery(
        &server.uri(),
        &["pi", "cloud-init", "1a2b3c4d", "user-data", "--delete"],
    )
    .await;
    assert_ok(&deleted);
    assert_eq!(
        stdout(&deleted),
        "removed cloud-init user-data of pi 1a2b3c4d\n"
    );

    let missing = dir.path().join("missing-user-data");
    let no_file = bakery(
        &server.uri(),
        &[
            "pi",
            "cloud-init",
            "1a2b3c4d",
            "user-data",
            "--set",
            missing.to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_exit(&no_file, 2, "missing-user-data");
    let refused = bakery(
        &server.uri(),
        &["pi", "cloud-init", "aaaa0001", "user-data", "--set", file],
    )
    .await;
    assert_exit(&refused, 5, "bakery: refused: pi aaaa0001 is not baked");
    let unset = bakery(
        &server.uri(),
        &["pi", "cloud-init", "1a2b3c4d", "vendor-data"],
    )
    .await;
    assert_exit(&unset, 3, "vendor-data");
    let both = bakery(
        &server.uri(),
        &[
            "pi",
            "cloud-init",
            "1a2b3c4d",
            "user-data",
            "--set",
            file,
            "--delete",
        ],
    )
    .await;
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    assert!(stderr(&both).contains("'--set <PATH>' cannot be used with '--delete'"));
}

// ----- bakeform -----

#[tokio::test]
async fn bakeform_list_upload_delete_in_both_formats() {
    let server = MockServer::start().await;
    let forms = json!({
        "bad": {"name": "bad", "location": "/srv/bakery/bakeforms/bad", "state": "failed", "error": "no ext4 root"},
        "raspios": {"name": "raspios", "location": "/srv/bakery/bakeforms/raspios", "state": "ready"}
    });
    mock(&server, "GET", "/bakeforms", ok_json(&forms)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("raspios.img");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&image, &content).expect("image written");
    let created =
        json!({"name": "new", "location": "/srv/bakery/bakeforms/new", "state": "importing"});
    Mock::given(method("POST"))
        .and(path("/api/v1/bakeforms/new"))
        .and(bearer_token(TOKEN))
        .and(header("content-type", "application/x-raw-disk-image"))
        .and(body_bytes(content))
        .respond_with(ResponseTemplate::new(201).set_body_json(&created))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/bakeforms/old"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    mock(
        &server,
        "DELETE",
        "/bakeforms/raspios",
        ResponseTemplate::new(409).set_body_json(error("bakeform raspios is used by pi 1a2b3c4d")),
    )
    .await;
    mock(
        &server,
        "POST",
        "/bakeforms/raspios",
        ResponseTemplate::new(403).set_body_json(error("bakeform raspios exists")),
    )
    .await;

    let table = bakery(&server.uri(), &["bakeform", "list"]).await;
    assert_ok(&table);
    assert_eq!(
        stdout(&table),
        "NAME     STATE   LOCATION                       ERROR\n\
         bad      failed  /srv/bakery/bakeforms/bad      no ext4 root\n\
         raspios  ready   /srv/bakery/bakeforms/raspios  -\n"
    );
    assert_eq!(
        bakery_json(&server.uri(), &["bakeform", "list"]).await,
        forms
    );

    let file = image.to_str().expect("utf-8 path");
    let uploaded = bakery(&server.uri(), &["bakeform", "upload", "new", file]).await;
    assert_ok(&uploaded);
    assert!(
        stdout(&uploaded).contains("new   importing  /srv/bakery/bakeforms/new"),
        "{}",
        stdout(&uploaded)
    );
    // stderr is not a terminal here: no progress bar
    assert!(uploaded.stderr.is_empty(), "{}", stderr(&uploaded));
    assert_eq!(
        bakery_json(&server.uri(), &["bakeform", "upload", "new", file]).await,
        created
    );

    let deleted = bakery(&server.uri(), &["bakeform", "delete", "old"]).await;
    assert_ok(&deleted);
    assert_eq!(stdout(&deleted), "deleted bakeform old\n");
    let quiet = bakery(&server.uri(), &["-o", "json", "bakeform", "delete", "old"]).await;
    assert_ok(&quiet);
    assert!(quiet.stdout.is_empty());

    let in_use = bakery(&server.uri(), &["bakeform", "delete", "raspios"]).await;
    assert_exit(
        &in_use,
        6,
        "bakery: conflict: bakeform raspios is used by pi 1a2b3c4d",
    );
    let exists = bakery(&server.uri(), &["bakeform", "upload", "raspios", file]).await;
    assert_exit(&exists, 5, "bakery: refused: bakeform raspios exists");
    let missing = dir.path().join("missing.img");
    let no_file = bakery(
        &server.uri(),
        &["bakeform", "upload", "x", missing.to_str().expect("utf-8")],
    )
    .await;
    assert_exit(&no_file, 1, "missing.img");
}

// ----- disk -----

#[tokio::test]
async fn disk_list_and_create_in_both_formats() {
    let server = MockServer::start().await;
    let list = json!({"disks": {
        "d1": disk("d1", 1024, None),
        "d2": {"id": "d2", "location": "/srv/bakery/disks/d2", "size": 64, "nfsAddress": "10.0.0.2", "attachedTo": "1a2b3c4d", "ephemeral": true}
    }});
    mock(&server, "GET", "/disks", ok_json(&list)).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/disks"))
        .and(bearer_token(TOKEN))
        .and(body_json(json!({"size": 2048})))
        .respond_with(ResponseTemplate::new(201).set_body_json(disk("d3", 2048, None)))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/disks"))
        .and(body_json(json!({"size": 16, "ephemeral": true})))
        .respond_with(ResponseTemplate::new(201).set_body_json(disk("d4", 16, None)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/disks"))
        .and(body_json(json!({"size": -1})))
        .respond_with(ResponseTemplate::new(400).set_body_json(error("disk size -1 must be > 0")))
        .mount(&server)
        .await;

    let table = bakery(&server.uri(), &["disk", "list"]).await;
    assert_ok(&table);
    assert_eq!(
        stdout(&table),
        "ID  SIZE_MIB  ATTACHED_TO  EPHEMERAL  NFS       LOCATION\n\
         d1  1024      -            no         10.0.0.2  /srv/bakery/disks/d1\n\
         d2  64        1a2b3c4d     yes        10.0.0.2  /srv/bakery/disks/d2\n"
    );
    assert_eq!(bakery_json(&server.uri(), &["disk", "list"]).await, list);

    let created = bakery(&server.uri(), &["disk", "create", "--size", "2048"]).await;
    assert_ok(&created);
    assert!(
        stdout(&created).contains("d3  2048      -            no"),
        "{}",
        stdout(&created)
    );
    assert_eq!(
        bakery_json(&server.uri(), &["disk", "create", "--size", "2048"]).await,
        disk("d3", 2048, None)
    );
    assert_eq!(
        bakery_json(
            &server.uri(),
            &["disk", "create", "--size", "16", "--ephemeral"]
        )
        .await,
        disk("d4", 16, None)
    );
    // A request the server refuses as bad (400) is a usage error: exit 2, its message.
    let bad = bakery(&server.uri(), &["disk", "create", "--size=-1"]).await;
    assert_exit(&bad, 2, "disk size -1 must be > 0");
}

#[tokio::test]
async fn disk_attach_detach_delete_in_both_formats() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/oven/1a2b3c4d/disks"))
        .and(bearer_token(TOKEN))
        .and(body_json(
            json!({"diskId": "dddddddd-0000-4000-8000-000000000001"}),
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/oven/1a2b3c4d/disks"))
        .and(body_json(
            json!({"diskId": "dddddddd-0000-4000-8000-000000000009"}),
        ))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(error("disk dddddddd-0000-4000-8000-000000000009 not found")),
        )
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(
            "/api/v1/oven/1a2b3c4d/disks/dddddddd-0000-4000-8000-000000000001",
        ))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/disks/dddddddd-0000-4000-8000-000000000001"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    mock(
        &server,
        "GET",
        "/disks/dddddddd-0000-4000-8000-000000000001",
        ok_json(&disk("dddddddd-0000-4000-8000-000000000001", 64, None)),
    )
    .await;
    mock(
        &server,
        "GET",
        "/disks/dddddddd-0000-4000-8000-000000000002",
        ok_json(&disk(
            "dddddddd-0000-4000-8000-000000000002",
            64,
            Some("1a2b3c4d"),
        )),
    )
    .await;
    mock(
        &server,
        "GET",
        "/disks/dddddddd-0000-4000-8000-000000000003",
        ResponseTemplate::new(404)
            .set_body_json(error("disk dddddddd-0000-4000-8000-000000000003 not found")),
    )
    .await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/disks/dddddddd-0000-4000-8000-000000000003"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    mock(
        &server,
        "DELETE",
        "/disks/dddddddd-0000-4000-8000-000000000002",
        ResponseTemplate::new(409).set_body_json(error(
            "disk dddddddd-0000-4000-8000-000000000002 is attached to pi 1a2b3c4d",
        )),
    )
    .await;

    for (args, confirmation) in [
        (
            [
                "disk",
                "attach",
                "1a2b3c4d",
                "dddddddd-0000-4000-8000-000000000001",
            ]
            .as_slice(),
            "attached disk dddddddd-0000-4000-8000-000000000001 to pi 1a2b3c4d\n",
        ),
        (
            [
                "disk",
                "detach",
                "1a2b3c4d",
                "dddddddd-0000-4000-8000-000000000001",
            ]
            .as_slice(),
            "detached disk dddddddd-0000-4000-8000-000000000001 from pi 1a2b3c4d\n",
        ),
        (
            ["disk", "delete", "dddddddd-0000-4000-8000-000000000001"].as_slice(),
            "deleted disk dddddddd-0000-4000-8000-000000000001\n",
        ),
    ] {
        let table = bakery(&server.uri(), args).await;
        assert_ok(&table);
        assert_eq!(stdout(&table), confirmation);
        let mut json_args = vec!["--output", "json"];
        json_args.extend_from_slice(args);
        let quiet = bakery(&server.uri(), &json_args).await;
        assert_ok(&quiet);
        assert!(quiet.stdout.is_empty(), "{args:?}: {}", stdout(&quiet));
    }
    let unknown = bakery(
        &server.uri(),
        &[
            "disk",
            "attach",
            "1a2b3c4d",
            "dddddddd-0000-4000-8000-000000000009",
        ],
    )
    .await;
    assert_exit(
        &unknown,
        3,
        "bakery: disk dddddddd-0000-4000-8000-000000000009 not found",
    );
    // Deleting a disk that is gone says so (the API's DELETE would answer 200) and sends
    // no DELETE.
    let gone = bakery(
        &server.uri(),
        &["disk", "delete", "dddddddd-0000-4000-8000-000000000003"],
    )
    .await;
    assert_exit(
        &gone,
        3,
        "bakery: disk dddddddd-0000-4000-8000-000000000003 not found",
    );
    assert!(gone.stdout.is_empty(), "{}", stdout(&gone));
    let attached = bakery(
        &server.uri(),
        &["disk", "delete", "dddddddd-0000-4000-8000-000000000002"],
    )
    .await;
    assert_exit(
        &attached,
        6,
        "bakery: conflict: disk dddddddd-0000-4000-8000-000000000002 is attached to pi 1a2b3c4d",
    );
}

// ----- global behaviour -----

#[tokio::test]
async fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = bakery("http://127.0.0.1:9", &["completions", shell]).await;
        assert_ok(&output);
        let script = stdout(&output);
        assert!(script.contains("bakery"), "{shell}");
        assert!(
            script.contains("power-cycle"),
            "{shell}: subcommands are completed"
        );
    }
}

#[tokio::test]
async fn server_down_exits_4() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        ["pi", "list"].as_slice(),
        ["pi", "show", "1a2b3c4d"].as_slice(),
        ["disk", "list"].as_slice(),
    ] {
        let output = bakery(&url, args).await;
        assert_exit(
            &output,
            4,
            &format!("bakery: cannot reach the bakery server at http://127.0.0.1:{port}"),
        );
    }
}

#[tokio::test]
async fn bad_token_exits_5() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(error("invalid bearer token")))
        .mount(&server)
        .await;
    let output = bakery(&server.uri(), &["pi", "list"]).await;
    assert_exit(
        &output,
        5,
        "token refused by the server (invalid bearer token)",
    );
}

#[tokio::test]
async fn url_and_token_flags_override_the_environment() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/disks"))
        .and(bearer_token("from-flag"))
        .respond_with(ok_json(&json!({"disks": {}})))
        .expect(1)
        .mount(&server)
        .await;
    let output = bakery(
        "http://127.0.0.1:9",
        &[
            "disk",
            "list",
            "--url",
            &format!("{}/api/v1/", server.uri()),
            "--token",
            "from-flag",
        ],
    )
    .await;
    assert_ok(&output);
    assert_eq!(
        stdout(&output),
        "ID  SIZE_MIB  ATTACHED_TO  EPHEMERAL  NFS  LOCATION\n"
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let no_command = bakery("http://127.0.0.1:9", &["pi"]).await;
    assert_eq!(no_command.status.code(), Some(2));
    let bad_size = bakery("http://127.0.0.1:9", &["disk", "create", "--size", "big"]).await;
    assert_eq!(bad_size.status.code(), Some(2));
    let bad_format = bakery("http://127.0.0.1:9", &["-o", "yaml", "pi", "list"]).await;
    assert_eq!(bad_format.status.code(), Some(2));
    let bad_url = bakery(
        "http://127.0.0.1:9",
        &["--url", "ftp://x/api/v1", "pi", "list"],
    )
    .await;
    assert_exit(&bad_url, 2, "invalid bakery url");
    let bad_name = bakery("http://127.0.0.1:9", &["pi", "show", ".."]).await;
    assert_eq!(bad_name.status.code(), Some(2), "{}", stderr(&bad_name));
    assert!(
        stderr(&bad_name).contains("invalid pi serial \"..\": expected 8 lowercase hex digits"),
        "{}",
        stderr(&bad_name)
    );
}

#[tokio::test]
async fn bad_names_are_refused_before_any_request() {
    let server = MockServer::start().await;
    let uuid = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    for (args, refusal) in [
        (
            ["pi", "show", "1A2B3C4D"].as_slice(),
            "invalid pi serial \"1A2B3C4D\": expected 8 lowercase hex digits",
        ),
        (
            ["pi", "unbake", "../x"].as_slice(),
            "invalid pi serial \"../x\"",
        ),
        (
            ["pi", "label", "1a2b3c4", "rack=a"].as_slice(),
            "invalid pi serial \"1a2b3c4\"",
        ),
        (
            ["pi", "bake", ".hidden"].as_slice(),
            "invalid bakeform name \".hidden\": use 1 to 64 letters",
        ),
        (
            ["bakeform", "delete", "a/b"].as_slice(),
            "invalid bakeform name \"a/b\"",
        ),
        (
            ["bakeform", "upload", "..", "x.img"].as_slice(),
            "invalid bakeform name \"..\"",
        ),
        (
            ["disk", "attach", "1a2b3c4d", "d1"].as_slice(),
            "invalid disk id \"d1\": expected a uuid",
        ),
        (
            ["disk", "attach", "zz", uuid].as_slice(),
            "invalid pi serial \"zz\"",
        ),
        (
            ["disk", "delete", "../../etc"].as_slice(),
            "invalid disk id \"../../etc\"",
        ),
        (
            [
                "disk",
                "restore",
                uuid,
                "67E55044-10B1-426F-9247-BB680E5FE0C8",
            ]
            .as_slice(),
            "invalid snapshot id \"67E55044-10B1-426F-9247-BB680E5FE0C8\": expected a uuid",
        ),
        (
            ["snapshot", "show", "latest"].as_slice(),
            "invalid snapshot id \"latest\"",
        ),
        (
            ["pi", "cloud-init", "1a2b3c4d", "userdata"].as_slice(),
            "unknown cloud-init file \"userdata\": expected meta-data, user-data, vendor-data or network-config",
        ),
    ] {
        let refused = bakery(&server.uri(), args).await;
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&refused)
        );
        assert!(
            stderr(&refused).contains(refusal),
            "{args:?}: {:?} should contain {refusal:?}",
            stderr(&refused)
        );
    }
    let sent = server.received_requests().await.unwrap_or_default();
    assert!(sent.is_empty(), "requests were sent: {sent:?}");
}

#[tokio::test]
async fn slow_server_wait_is_bounded() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/fridge"))
        .respond_with(
            ResponseTemplate::new(202).set_body_json(json!({"id": "1a2b3c4d", "status": 3})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/oven/1a2b3c4d"))
        .respond_with(ok_json(&json!({"id": "1a2b3c4d", "status": 3})))
        .mount(&server)
        .await;
    let started = std::time::Instant::now();
    let output = bakery(
        &server.uri(),
        &["pi", "bake", "raspios", "--wait", "--wait-timeout", "1"],
    )
    .await;
    assert_exit(&output, 1, "bakery: pi 1a2b3c4d was not baked within 1 s");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn other_server_errors_exit_1_with_the_status() {
    let server = MockServer::start().await;
    mock(&server, "GET", "/bakeforms", ResponseTemplate::new(500)).await;
    let output = bakery(&server.uri(), &["bakeform", "list"]).await;
    assert_exit(
        &output,
        1,
        "bakery: bakeforms: server answered 500: internal server error",
    );
}

#[tokio::test]
async fn a_url_without_api_v1_is_a_usage_error_naming_the_fix() {
    for url in [
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/",
        "http://127.0.0.1:9/api",
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bakery"))
            .args(["--url", url, "pi", "list"])
            .output()
            .await
            .expect("bakery runs");
        assert_exit(&output, 2, "must end in /api/v1");
        assert!(stderr(&output).contains(url), "{}", stderr(&output));
    }
}

#[tokio::test]
async fn a_reader_that_goes_away_ends_the_output_quietly() {
    let server = MockServer::start().await;
    // Enough Pis that the table is far larger than a pipe's buffer.
    let pis: serde_json::Map<String, Value> = (0..4000)
        .map(|i| {
            let id = format!("{i:08x}");
            (
                id.clone(),
                json!({"id": id, "status": 1, "state": "fridge"}),
            )
        })
        .collect();
    mock(&server, "GET", "/pis", ok_json(&Value::Object(pis))).await;
    let url = format!("{}/api/v1", server.uri());
    let result = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bakery"))
            .args(["--url", &url, "pi", "list"])
            .env("BAKERY_TOKEN", TOKEN)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("bakery runs");
        // `| head -1`: read one line, then close the pipe.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (first, output)
    })
    .await
    .unwrap();
    let (first, output) = result;
    assert!(first.starts_with("ID"), "{first:?} {}", stderr(&output));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(output.stderr.is_empty(), "{}", stderr(&output));
}

#[tokio::test]
async fn help_describes_the_cli_and_every_command() {
    let help = |args: &'static [&'static str]| async move {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bakery"))
            .args(args)
            .output()
            .await
            .expect("bakery runs");
        assert_ok(&output);
        stdout(&output)
    };
    let top = help(&["--help"]).await;
    assert!(top.starts_with("Operate a bakery"), "{top}");
    assert!(!top.contains("Typed client"), "{top}");
    assert!(top.contains("Exit codes: 0 ok"), "{top}");
    let pi = help(&["pi", "--help"]).await;
    assert!(pi.lines().next().unwrap().contains("boots"), "{pi}");
    assert!(pi.contains("Global options (any position)"), "{pi}");
    let upload = help(&["bakeform", "upload", "--help"]).await;
    for kind in [".img.gz", ".img.xz", ".zip"] {
        assert!(upload.contains(kind), "{kind}: {upload}");
    }
}
