//! The client against wiremock: every method's request (method, path, body, headers) as the
//! contract says, every documented status mapped to the right error, plus a streamed upload
//! to a real raw-HTTP server that counts the bytes it receives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bakery_client::{
    BakeRequest, BakeformState, Client, ClientBuilder, CreateDiskRequest, Error, ErrorKind,
    Metadata, PiStatus, Progress, StaticNetwork, blocking,
};
use serde_json::{Value, json};
use wiremock::matchers::{bearer_token, body_bytes, body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "t0ken";

async fn setup() -> (MockServer, Client) {
    let server = MockServer::start().await;
    let client = ClientBuilder::new(format!("{}/api/v1/", server.uri()))
        .token(TOKEN)
        .build()
        .expect("client builds");
    (server, client)
}

fn pi(id: &str, status: u8) -> Value {
    json!({"id": id, "status": status})
}

fn disk(id: &str) -> Value {
    json!({"id": id, "location": format!("/srv/bakery/disks/{id}"), "size": 1024, "nfsAddress": "10.0.0.2"})
}

fn bakeform(name: &str) -> Value {
    json!({"name": name, "location": format!("/srv/bakery/bakeforms/{name}"), "state": "ready"})
}

fn error(message: &str) -> Value {
    json!({"error": message})
}

/// Mounts a mock for `verb path` that must be called exactly once, with the bearer token.
async fn expect(server: &MockServer, verb: &str, route: &str, reply: ResponseTemplate) {
    Mock::given(method(verb))
        .and(path(format!("/api/v1{route}")))
        .and(bearer_token(TOKEN))
        .respond_with(reply)
        .expect(1)
        .mount(server)
        .await;
}

fn assert_status(result: Result<impl std::fmt::Debug, Error>, code: u16, message: &str) {
    match result {
        Err(Error::Status {
            status,
            message: got,
            ..
        }) => {
            assert_eq!(status, code);
            assert_eq!(got, message);
        }
        other => panic!("expected status {code} {message:?}, got {other:?}"),
    }
}

// ----- Pis -----

#[tokio::test]
async fn bake_posts_bakeform_name_and_expects_202() {
    let (server, client) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/fridge"))
        .and(bearer_token(TOKEN))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"bakeformName": "raspios"})))
        .respond_with(ResponseTemplate::new(202).set_body_json(pi("1a2b3c4d", 3)))
        .expect(1)
        .mount(&server)
        .await;
    let baked = client.bake_from("raspios").await.expect("bake accepted");
    assert_eq!(baked.id, "1a2b3c4d");
    assert_eq!(baked.status, PiStatus::Preparing);
}

#[tokio::test]
async fn bake_sends_network_and_power_on() {
    let (server, client) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/fridge"))
        .and(body_json(json!({
            "bakeformName": "raspios",
            "network": {"ip": "10.0.0.21", "netmask": "255.255.255.0", "gateway": "10.0.0.1"},
            "powerOn": false
        })))
        .respond_with(ResponseTemplate::new(202).set_body_json(pi("1a2b3c4d", 3)))
        .expect(1)
        .mount(&server)
        .await;
    let request = BakeRequest {
        bakeform_name: "raspios".into(),
        network: Some(StaticNetwork {
            ip: "10.0.0.21".into(),
            netmask: "255.255.255.0".into(),
            gateway: Some("10.0.0.1".into()),
            dns: vec![],
            hostname: None,
        }),
        power_on: Some(false),
        root_kind: None,
        model: None,
        labels: Default::default(),
    };
    client.bake(&request).await.expect("bake accepted");
}

#[tokio::test]
async fn bake_errors_surface_the_server_message() {
    let (server, client) = setup().await;
    Mock::given(method("POST"))
        .and(body_json(json!({"bakeformName": "nope"})))
        .respond_with(ResponseTemplate::new(400).set_body_json(error("unknown bakeform nope")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_json(json!({"bakeformName": "raspios"})))
        .respond_with(ResponseTemplate::new(404).set_body_json(error("no available Pi found")))
        .mount(&server)
        .await;
    assert_status(client.bake_from("nope").await, 400, "unknown bakeform nope");
    let err = client.bake_from("raspios").await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.server_message(), Some("no available Pi found"));
    // The Go server sends no code: the kind is the status's generic one.
    assert_eq!(err.kind(), Some(ErrorKind::NotFound));
}

#[tokio::test]
async fn error_kind_is_the_code_else_the_status_class() {
    let (server, client) = setup().await;
    for (pi, status, body) in [
        (
            "00000001",
            404,
            json!({"error": "no available Pi found", "code": "no_free_pi"}),
        ),
        (
            "00000002",
            409,
            json!({"error": "later", "code": "a_code_from_the_future"}),
        ),
        ("00000003", 507, json!({"error": "full", "code": 17})),
        (
            "00000004",
            403,
            json!({"error": "pi 00000004 is fridge, not baked", "code": "not_baked"}),
        ),
    ] {
        Mock::given(method("DELETE"))
            .and(path(format!("/api/v1/oven/{pi}")))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&server)
            .await;
    }
    let kind = |result: Result<(), Error>| result.unwrap_err().kind();
    assert_eq!(
        kind(client.unbake("00000001").await),
        Some(ErrorKind::NoFreePi)
    );
    // An unknown code parses and falls back to the status.
    assert_eq!(
        kind(client.unbake("00000002").await),
        Some(ErrorKind::Conflict)
    );
    // A body that breaks the shape keeps its excerpt as the message, the kind from the status.
    let err = client.unbake("00000003").await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::InsufficientStorage));
    assert!(err.server_message().unwrap().contains("full"), "{err}");
    assert_eq!(
        kind(client.unbake("00000004").await),
        Some(ErrorKind::NotBaked)
    );
    // No answer, no kind.
    let gone = ClientBuilder::new("http://127.0.0.1:9").build().unwrap();
    assert_eq!(gone.unbake("00000001").await.unwrap_err().kind(), None);
}

#[tokio::test]
async fn bake_answered_200_breaks_the_contract() {
    let (server, client) = setup().await;
    expect(
        &server,
        "POST",
        "/fridge",
        ResponseTemplate::new(200).set_body_json(pi("1a2b3c4d", 3)),
    )
    .await;
    match client.bake_from("raspios").await {
        Err(Error::Contract { status, detail, .. }) => {
            assert_eq!(status, 200);
            assert!(detail.contains("expected status 202"), "{detail}");
        }
        other => panic!("expected a contract error, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_json_is_a_contract_error_with_excerpt() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/oven/1a2b3c4d",
        ResponseTemplate::new(200).set_body_string("<html>proxy error</html>"),
    )
    .await;
    match client.pi("1a2b3c4d").await {
        Err(Error::Contract {
            status,
            detail,
            body_excerpt,
            method,
            url,
        }) => {
            assert_eq!(status, 200);
            assert!(detail.starts_with("invalid json"), "{detail}");
            assert_eq!(body_excerpt, "<html>proxy error</html>");
            assert_eq!(method, "GET");
            assert!(url.ends_with("/api/v1/oven/1a2b3c4d"), "{url}");
        }
        other => panic!("expected a contract error, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_status_number_is_a_contract_error() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/pis/1a2b3c4d",
        ResponseTemplate::new(200).set_body_json(pi("1a2b3c4d", 9)),
    )
    .await;
    let err = client.any_pi("1a2b3c4d").await.unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err:?}");
    assert!(err.to_string().contains("unknown pi status 9"), "{err}");
}

#[tokio::test]
async fn unbake_deletes_and_maps_403_and_404() {
    let (server, client) = setup().await;
    expect(
        &server,
        "DELETE",
        "/oven/aaaa0001",
        ResponseTemplate::new(200),
    )
    .await;
    expect(
        &server,
        "DELETE",
        "/oven/aaaa0002",
        ResponseTemplate::new(403).set_body_json(error("pi aaaa0002 is not baked")),
    )
    .await;
    expect(
        &server,
        "DELETE",
        "/oven/aaaa0003",
        ResponseTemplate::new(404).set_body_json(error("pi aaaa0003 not found")),
    )
    .await;
    client.unbake("aaaa0001").await.expect("unbaked");
    assert_status(
        client.unbake("aaaa0002").await,
        403,
        "pi aaaa0002 is not baked",
    );
    let err = client.unbake("aaaa0003").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn pi_and_any_pi_read_their_routes() {
    let (server, client) = setup().await;
    let full = json!({
        "id": "1a2b3c4d", "status": 2, "state": "baked", "address": "10.0.0.21",
        "disks": [disk("d1")], "sourceBakeform": bakeform("raspios"),
        "metadata": {"vm": "x"}
    });
    expect(
        &server,
        "GET",
        "/oven/1a2b3c4d",
        ResponseTemplate::new(200).set_body_json(full.clone()),
    )
    .await;
    expect(
        &server,
        "GET",
        "/pis/1a2b3c4d",
        ResponseTemplate::new(200).set_body_json(full.clone()),
    )
    .await;
    let from_oven = client.pi("1a2b3c4d").await.expect("pi");
    assert_eq!(from_oven.disks[0].id, "d1");
    assert_eq!(from_oven.address.as_deref(), Some("10.0.0.21"));
    assert_eq!(serde_json::to_value(&from_oven).expect("serializes"), full);
    assert_eq!(client.any_pi("1a2b3c4d").await.expect("any pi"), from_oven);
}

#[tokio::test]
async fn is_baked_means_200_and_status_2() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/oven/aaaa0002",
        ResponseTemplate::new(200).set_body_json(pi("aaaa0002", 2)),
    )
    .await;
    expect(
        &server,
        "GET",
        "/oven/aaaa0003",
        ResponseTemplate::new(200).set_body_json(pi("aaaa0003", 3)),
    )
    .await;
    expect(
        &server,
        "GET",
        "/oven/aaaa0004",
        ResponseTemplate::new(404).set_body_json(error("pi aaaa0004 not found")),
    )
    .await;
    expect(
        &server,
        "GET",
        "/oven/aaaa0005",
        ResponseTemplate::new(500).set_body_string("database is locked"),
    )
    .await;
    assert!(client.is_baked("aaaa0002").await.expect("answer"));
    assert!(!client.is_baked("aaaa0003").await.expect("answer"));
    assert!(!client.is_baked("aaaa0004").await.expect("answer"));
    assert_status(client.is_baked("aaaa0005").await, 500, "database is locked");
}

#[tokio::test]
async fn wait_baked_long_polls_until_baked() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/oven/1a2b3c4d"))
        .and(query_param("wait", "baked"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(pi("1a2b3c4d", 3)))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/oven/1a2b3c4d"))
        .and(query_param("wait", "baked"))
        .respond_with(ResponseTemplate::new(200).set_body_json(pi("1a2b3c4d", 2)))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    let baked = client
        .wait_baked("1a2b3c4d", Duration::from_secs(30))
        .await
        .expect("baked");
    assert_eq!(baked.status, PiStatus::InUse);
    let requests = server.received_requests().await.expect("recorded");
    let timeouts: Vec<u64> = requests
        .iter()
        .filter_map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "timeout")
                .and_then(|(_, v)| v.parse().ok())
        })
        .collect();
    assert_eq!(timeouts.len(), 2);
    assert!(
        timeouts.iter().all(|t| (1..=30).contains(t)),
        "{timeouts:?}"
    );
}

#[tokio::test]
async fn wait_baked_reports_a_failed_bake() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/oven/1a2b3c4d",
        ResponseTemplate::new(409).set_body_json(error(
            "bake of pi 1a2b3c4d failed: bakeform raspios is gone",
        )),
    )
    .await;
    assert_status(
        client.wait_baked("1a2b3c4d", Duration::from_secs(30)).await,
        409,
        "bake of pi 1a2b3c4d failed: bakeform raspios is gone",
    );
}

#[tokio::test]
async fn wait_baked_stops_for_a_pi_that_is_not_baking() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/oven/aaaa0001",
        ResponseTemplate::new(200).set_body_json(pi("aaaa0001", 1)),
    )
    .await;
    expect(
        &server,
        "GET",
        "/oven/aaaa0002",
        ResponseTemplate::new(200)
            .set_body_json(json!({"id": "aaaa0002", "status": 3, "state": "unbaking"})),
    )
    .await;
    for (id, state) in [("aaaa0001", "fridge"), ("aaaa0002", "unbaking")] {
        match client.wait_baked(id, Duration::from_secs(30)).await {
            Err(Error::NotBaking { pi, state: got }) => {
                assert_eq!(pi, id);
                assert_eq!(got, state);
            }
            other => panic!("expected not baking, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn wait_baked_gives_up_at_its_deadline() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/oven/1a2b3c4d"))
        .respond_with(ResponseTemplate::new(200).set_body_json(pi("1a2b3c4d", 3)))
        .mount(&server)
        .await;
    let start = Instant::now();
    let err = client
        .wait_baked("1a2b3c4d", Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // the server answered at once: the client paused between polls instead of spinning
    let polls = server.received_requests().await.expect("recorded").len();
    assert!((1..=3).contains(&polls), "{polls} polls");
}

#[tokio::test]
async fn power_cycle_and_reset() {
    let (server, client) = setup().await;
    expect(
        &server,
        "POST",
        "/oven/1a2b3c4d/powercycle",
        ResponseTemplate::new(200),
    )
    .await;
    expect(
        &server,
        "POST",
        "/oven/1a2b3c4d/reset",
        ResponseTemplate::new(202).set_body_json(pi("1a2b3c4d", 3)),
    )
    .await;
    expect(
        &server,
        "POST",
        "/oven/ffff0000/powercycle",
        ResponseTemplate::new(404).set_body_json(error("pi ffff0000 not found")),
    )
    .await;
    client.power_cycle("1a2b3c4d").await.expect("power-cycled");
    assert_eq!(
        client.reset("1a2b3c4d").await.expect("reset").status,
        PiStatus::Preparing
    );
    assert!(
        client
            .power_cycle("ffff0000")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn fridge_oven_and_pis_list_maps() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/fridge",
        ResponseTemplate::new(200).set_body_json(json!({"aaaa0001": pi("aaaa0001", 1)})),
    )
    .await;
    expect(
        &server,
        "GET",
        "/oven",
        ResponseTemplate::new(200).set_body_json(json!({"aaaa0002": pi("aaaa0002", 2)})),
    )
    .await;
    expect(
        &server,
        "GET",
        "/pis",
        ResponseTemplate::new(200)
            .set_body_json(json!({"aaaa0001": pi("aaaa0001", 1), "aaaa0002": pi("aaaa0002", 2)})),
    )
    .await;
    assert_eq!(
        client.fridge().await.expect("fridge")["aaaa0001"].status,
        PiStatus::NotInUse
    );
    assert_eq!(
        client.oven().await.expect("oven")["aaaa0002"].status,
        PiStatus::InUse
    );
    let all = client.pis().await.expect("pis");
    assert_eq!(all.keys().collect::<Vec<_>>(), ["aaaa0001", "aaaa0002"]);
}

#[tokio::test]
async fn set_pi_metadata_puts_the_object() {
    let (server, client) = setup().await;
    Mock::given(method("PUT"))
        .and(path("/api/v1/oven/1a2b3c4d/metadata"))
        .and(bearer_token(TOKEN))
        .and(body_json(json!({"director": "d1", "index": 3})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "1a2b3c4d", "status": 2, "metadata": {"director": "d1", "index": 3}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let mut metadata = Metadata::new();
    metadata.insert("director".into(), json!("d1"));
    metadata.insert("index".into(), json!(3));
    let updated = client
        .set_pi_metadata("1a2b3c4d", &metadata)
        .await
        .expect("metadata set");
    assert_eq!(updated.metadata, metadata);
}

// ----- per-Pi files -----

#[tokio::test]
async fn pi_files_go_up_raw_and_come_back_raw() {
    let (server, client) = setup().await;
    let settings = br#"{"agent_id":"a1"}"#.to_vec();
    Mock::given(method("POST"))
        .and(path("/api/v1/oven/1a2b3c4d/upload/settings.json"))
        .and(bearer_token(TOKEN))
        .and(header("content-type", "application/octet-stream"))
        .and(body_bytes(settings.clone()))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    expect(
        &server,
        "GET",
        "/oven/1a2b3c4d/download/settings.json",
        ResponseTemplate::new(200).set_body_bytes(settings.clone()),
    )
    .await;
    expect(
        &server,
        "GET",
        "/oven/1a2b3c4d/download/missing",
        ResponseTemplate::new(404).set_body_json(error("file missing not found")),
    )
    .await;
    client
        .upload_pi_file("1a2b3c4d", "settings.json", settings.clone())
        .await
        .expect("uploaded");
    assert_eq!(
        client
            .download_pi_file("1a2b3c4d", "settings.json")
            .await
            .expect("downloaded"),
        settings
    );
    assert!(
        client
            .download_pi_file("1a2b3c4d", "missing")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn names_are_escaped_so_they_cannot_change_the_route() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/oven/1a2b3c4d/download/..%2F..%2Fetc%2Fpasswd",
        ResponseTemplate::new(404).set_body_json(error("no such file")),
    )
    .await;
    let err = client
        .download_pi_file("1a2b3c4d", "../../etc/passwd")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    for name in ["..", ".", ""] {
        let err = client.delete_bakeform(name).await.unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err:?}");
    }
    // nothing but the download reached the server
    assert_eq!(server.received_requests().await.expect("recorded").len(), 1);
}

// ----- disks -----

#[tokio::test]
async fn create_disk_posts_size_and_expects_201() {
    let (server, client) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/disks"))
        .and(bearer_token(TOKEN))
        .and(body_json(json!({"size": 1024})))
        .respond_with(ResponseTemplate::new(201).set_body_json(disk("d1")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/disks"))
        .and(body_json(json!({"size": 64, "ephemeral": true})))
        .respond_with(ResponseTemplate::new(201).set_body_json(disk("d2")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/disks"))
        .and(body_json(json!({"size": 0})))
        .respond_with(ResponseTemplate::new(400).set_body_json(error("disk size 0 must be > 0")))
        .expect(1)
        .mount(&server)
        .await;
    let created = client
        .create_disk(&CreateDiskRequest {
            size: 1024,
            ephemeral: false,
        })
        .await
        .expect("created");
    assert_eq!(created.id, "d1");
    assert_eq!(created.nfs_address, "10.0.0.2");
    client
        .create_disk(&CreateDiskRequest {
            size: 64,
            ephemeral: true,
        })
        .await
        .expect("created");
    assert_status(
        client
            .create_disk(&CreateDiskRequest {
                size: 0,
                ephemeral: false,
            })
            .await,
        400,
        "disk size 0 must be > 0",
    );
}

#[tokio::test]
async fn disk_and_disk_exists() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/disks/d1"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(disk("d1")))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/disks/d9"))
        .respond_with(ResponseTemplate::new(404).set_body_json(error("disk d9 not found")))
        .expect(2)
        .mount(&server)
        .await;
    assert_eq!(client.disk("d1").await.expect("disk").size, 1024);
    assert!(client.disk_exists("d1").await.expect("answer"));
    assert!(!client.disk_exists("d9").await.expect("answer"));
    let err = client.disk("d9").await.unwrap_err();
    assert!(err.is_not_found());
    assert!(err.to_string().contains("disk d9 not found"), "{err}");
}

#[tokio::test]
async fn disks_lists_the_wrapped_map() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/disks",
        ResponseTemplate::new(200)
            .set_body_json(json!({"disks": {"d1": disk("d1"), "d2": disk("d2")}})),
    )
    .await;
    let list = client.disks().await.expect("disks");
    assert_eq!(list.disks.len(), 2);
    assert_eq!(list.disks["d2"].location, "/srv/bakery/disks/d2");
}

#[tokio::test]
async fn delete_disk_200_and_409() {
    let (server, client) = setup().await;
    expect(&server, "DELETE", "/disks/d1", ResponseTemplate::new(200)).await;
    expect(
        &server,
        "DELETE",
        "/disks/d2",
        ResponseTemplate::new(409).set_body_json(error("disk d2 is attached to pi 1a2b3c4d")),
    )
    .await;
    client.delete_disk("d1").await.expect("deleted");
    assert_status(
        client.delete_disk("d2").await,
        409,
        "disk d2 is attached to pi 1a2b3c4d",
    );
}

#[tokio::test]
async fn attach_and_detach() {
    let (server, client) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/oven/1a2b3c4d/disks"))
        .and(bearer_token(TOKEN))
        .and(body_json(json!({"diskId": "d1"})))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/oven/1a2b3c4d/disks"))
        .and(body_json(json!({"diskId": "d9"})))
        .respond_with(ResponseTemplate::new(404).set_body_json(error("disk d9 not found")))
        .expect(1)
        .mount(&server)
        .await;
    expect(
        &server,
        "DELETE",
        "/oven/1a2b3c4d/disks/d1",
        ResponseTemplate::new(200),
    )
    .await;
    expect(
        &server,
        "DELETE",
        "/oven/1a2b3c4d/disks/root1",
        ResponseTemplate::new(403)
            .set_body_json(error("disk root1 is the root disk of pi 1a2b3c4d")),
    )
    .await;
    client
        .attach_disk("1a2b3c4d", "d1")
        .await
        .expect("attached");
    assert_status(
        client.attach_disk("1a2b3c4d", "d9").await,
        404,
        "disk d9 not found",
    );
    client
        .detach_disk("1a2b3c4d", "d1")
        .await
        .expect("detached");
    assert_status(
        client.detach_disk("1a2b3c4d", "root1").await,
        403,
        "disk root1 is the root disk of pi 1a2b3c4d",
    );
}

#[tokio::test]
async fn resize_and_disk_metadata() {
    let (server, client) = setup().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/disks/d1/resize"))
        .and(bearer_token(TOKEN))
        .and(body_json(json!({"size": 2048})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "d1", "location": "/l", "size": 2048, "nfsAddress": "10.0.0.2"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/disks/d1/resize"))
        .and(body_json(json!({"size": 10})))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(error("disk d1 cannot shrink to 10 MiB")),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v1/disks/d1/metadata"))
        .and(bearer_token(TOKEN))
        .and(body_json(json!({"owner": "ci"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "d1", "location": "/l", "size": 2048, "nfsAddress": "10.0.0.2", "metadata": {"owner": "ci"}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        client.resize_disk("d1", 2048).await.expect("resized").size,
        2048
    );
    assert_status(
        client.resize_disk("d1", 10).await,
        400,
        "disk d1 cannot shrink to 10 MiB",
    );
    let mut metadata = Metadata::new();
    metadata.insert("owner".into(), json!("ci"));
    assert_eq!(
        client
            .set_disk_metadata("d1", &metadata)
            .await
            .expect("set")
            .metadata,
        metadata
    );
}

// ----- bakeforms -----

#[tokio::test]
async fn upload_bakeform_streams_the_file_with_its_headers() {
    let (server, client) = setup().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("raspios.img");
    let content: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&image, &content).expect("image written");
    Mock::given(method("POST"))
        .and(path("/api/v1/bakeforms/raspios"))
        .and(bearer_token(TOKEN))
        .and(header("content-type", "application/x-raw-disk-image"))
        .and(header("content-length", content.len().to_string().as_str()))
        .and(body_bytes(content.clone()))
        .respond_with(ResponseTemplate::new(201).set_body_json(
            json!({"name": "raspios", "location": "/srv/bakery/bakeforms/raspios", "state": "importing"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let seen = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let record = Arc::clone(&seen);
    let form = client
        .upload_bakeform(
            "raspios",
            &image,
            Some(Box::new(move |p| {
                record.lock().expect("not poisoned").push(p)
            })),
        )
        .await
        .expect("uploaded");
    assert_eq!(form.state, Some(BakeformState::Importing));
    let seen = seen.lock().expect("not poisoned");
    let total = content.len() as u64;
    assert_eq!(seen.first(), Some(&Progress { sent: 0, total }));
    assert_eq!(seen.last(), Some(&Progress { sent: total, total }));
    assert!(seen.len() > 2, "several chunks: {}", seen.len());
    assert!(seen.windows(2).all(|w| w[0].sent <= w[1].sent));
}

#[tokio::test]
async fn upload_bakeform_errors() {
    let (server, client) = setup().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("tiny.img");
    std::fs::write(&image, b"not an image").expect("written");
    expect(
        &server,
        "POST",
        "/bakeforms/raspios",
        ResponseTemplate::new(403).set_body_json(error("bakeform raspios exists")),
    )
    .await;
    expect(
        &server,
        "POST",
        "/bakeforms/tiny",
        ResponseTemplate::new(400).set_body_json(error(
            "image tiny: no MBR partition table (file is 12 bytes)",
        )),
    )
    .await;
    assert_status(
        client.upload_bakeform("raspios", &image, None).await,
        403,
        "bakeform raspios exists",
    );
    assert_status(
        client.upload_bakeform("tiny", &image, None).await,
        400,
        "image tiny: no MBR partition table (file is 12 bytes)",
    );
    let missing = dir.path().join("missing.img");
    match client.upload_bakeform("x", &missing, None).await {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an io error, got {other:?}"),
    }
}

#[tokio::test]
async fn upload_of_an_existing_name_is_refused_before_streaming() {
    let (server, client) = setup().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("raspios.img");
    std::fs::write(&image, vec![7u8; 4096]).expect("written");
    expect(
        &server,
        "GET",
        "/bakeforms/raspios",
        ResponseTemplate::new(200).set_body_json(bakeform("raspios")),
    )
    .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(bakeform("raspios")))
        .expect(0)
        .mount(&server)
        .await;
    assert_status(
        client.upload_bakeform("raspios", &image, None).await,
        403,
        "bakeform raspios already exists",
    );
}

#[tokio::test]
async fn bakeform_listing_reading_and_deleting() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/bakeforms",
        ResponseTemplate::new(200).set_body_json(json!({"raspios": bakeform("raspios")})),
    )
    .await;
    expect(
        &server,
        "GET",
        "/bakeforms/raspios",
        ResponseTemplate::new(200).set_body_json(
            json!({"name": "raspios", "location": "/l", "state": "failed", "error": "no ext4 root"}),
        ),
    )
    .await;
    expect(
        &server,
        "DELETE",
        "/bakeforms/old",
        ResponseTemplate::new(200),
    )
    .await;
    expect(
        &server,
        "DELETE",
        "/bakeforms/gone",
        ResponseTemplate::new(404).set_body_json(error("bakeform gone not found")),
    )
    .await;
    expect(
        &server,
        "DELETE",
        "/bakeforms/raspios",
        ResponseTemplate::new(409).set_body_json(error("bakeform raspios is used by pi 1a2b3c4d")),
    )
    .await;
    assert_eq!(
        client.bakeforms().await.expect("list")["raspios"].state,
        Some(BakeformState::Ready)
    );
    let form = client.bakeform("raspios").await.expect("bakeform");
    assert_eq!(form.state, Some(BakeformState::Failed));
    assert_eq!(form.error.as_deref(), Some("no ext4 root"));
    client.delete_bakeform("old").await.expect("deleted");
    assert!(
        client
            .delete_bakeform("gone")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_status(
        client.delete_bakeform("raspios").await,
        409,
        "bakeform raspios is used by pi 1a2b3c4d",
    );
}

// ----- transport -----

#[tokio::test]
async fn no_token_means_no_authorization_header() {
    let server = MockServer::start().await;
    let client = Client::new(&format!("{}/api/v1", server.uri())).expect("client");
    expect_any(&server).await;
    client.pis().await.expect("pis");
    let requests = server.received_requests().await.expect("recorded");
    assert!(!requests[0].headers.contains_key("authorization"));
}

async fn expect_any(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/v1/pis"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn unauthorized_is_a_status_error() {
    let (server, client) = setup().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(error("invalid token")))
        .mount(&server)
        .await;
    assert_status(client.pis().await, 401, "invalid token");
}

#[tokio::test]
async fn error_without_json_body_keeps_an_excerpt() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/fridge",
        ResponseTemplate::new(502).set_body_string("bad gateway from nginx"),
    )
    .await;
    expect(&server, "GET", "/oven", ResponseTemplate::new(503)).await;
    assert_status(client.fridge().await, 502, "bad gateway from nginx");
    assert_status(client.oven().await, 503, "service unavailable");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (server, client) = setup().await;
    expect(
        &server,
        "GET",
        "/bakeforms",
        ResponseTemplate::new(307).insert_header("location", "http://127.0.0.1:9/elsewhere"),
    )
    .await;
    match client.bakeforms().await {
        Err(Error::Contract { status, .. }) => assert_eq!(status, 307),
        other => panic!("expected a contract error, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_refused_is_connect() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let client = Client::new(&format!("http://127.0.0.1:{port}/api/v1")).expect("client");
    let err = client.pis().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.is_unreachable());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn slow_server_is_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let client = ClientBuilder::new(format!("{}/api/v1", server.uri()))
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let start = Instant::now();
    let err = client.pis().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn blocking_client_does_the_same_calls() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(MockServer::start());
    runtime.block_on(async {
        Mock::given(method("POST"))
            .and(path("/api/v1/fridge"))
            .and(bearer_token(TOKEN))
            .and(body_json(json!({"bakeformName": "raspios"})))
            .respond_with(ResponseTemplate::new(202).set_body_json(pi("1a2b3c4d", 3)))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/oven/1a2b3c4d"))
            .and(query_param("wait", "baked"))
            .respond_with(ResponseTemplate::new(200).set_body_json(pi("1a2b3c4d", 2)))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/disks/d9"))
            .respond_with(ResponseTemplate::new(404).set_body_json(error("disk d9 not found")))
            .expect(1)
            .mount(&server)
            .await;
    });
    let client = blocking::Client::from_builder(
        ClientBuilder::new(format!("{}/api/v1", server.uri())).token(TOKEN),
    )
    .expect("client");
    let baked = client.bake_from("raspios").expect("bake");
    let baked = client
        .wait_baked(&baked.id, Duration::from_secs(10))
        .expect("baked");
    assert_eq!(baked.status, PiStatus::InUse);
    assert!(!client.disk_exists("d9").expect("answer"));
    runtime.block_on(server.verify());
}

// ----- a real HTTP server for the streamed upload -----

/// What the raw server saw of one request.
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves connections on a std listener until one request has a body: requests without one
/// (the client's existence check) get 404 and `Connection: close`; the request with a
/// Content-Length body is read as it arrives, answered `reply`, and handed back.
fn serve_upload(listener: TcpListener, reply: &'static str) -> std::thread::JoinHandle<Received> {
    std::thread::spawn(move || {
        loop {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("request line");
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header line");
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').expect("header has a colon");
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            let mut received = Received {
                request_line: request_line.trim_end().to_owned(),
                headers,
                body: Vec::new(),
            };
            let mut stream = stream;
            let Some(length) = received.header("content-length") else {
                let body = r#"{"error":"bakeform not found"}"#;
                write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .expect("reply written");
                continue;
            };
            let length: usize = length.parse().expect("numeric content-length");
            let mut chunk = [0u8; 64 * 1024];
            while received.body.len() < length {
                let want = chunk.len().min(length - received.body.len());
                let n = reader.read(&mut chunk[..want]).expect("body read");
                assert!(n > 0, "client closed after {} bytes", received.body.len());
                received.body.extend_from_slice(&chunk[..n]);
            }
            write!(
                stream,
                "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                reply.len(),
                reply
            )
            .expect("reply written");
            return received;
        }
    })
}

#[tokio::test]
async fn streamed_upload_reaches_a_real_server_intact() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = serve_upload(
        listener,
        r#"{"name":"big","location":"/srv/bakery/bakeforms/big","state":"importing"}"#,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("big.img");
    let content: Vec<u8> = (0..(24u32 << 20) + 17)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&image, &content).expect("image written");
    let client = ClientBuilder::new(format!("http://127.0.0.1:{port}/api/v1"))
        .token(TOKEN)
        .build()
        .expect("client");
    let last = Arc::new(Mutex::new(None));
    let record = Arc::clone(&last);
    let form = client
        .upload_bakeform(
            "big",
            &image,
            Some(Box::new(move |p| {
                *record.lock().expect("not poisoned") = Some(p)
            })),
        )
        .await
        .expect("uploaded");
    assert_eq!(form.name, "big");
    let received = tokio::task::spawn_blocking(move || handle.join().expect("server thread"))
        .await
        .expect("joined");
    assert_eq!(received.request_line, "POST /api/v1/bakeforms/big HTTP/1.1");
    assert_eq!(
        received.header("content-type"),
        Some("application/x-raw-disk-image")
    );
    assert_eq!(
        received.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(received.header("transfer-encoding"), None, "not chunked");
    assert_eq!(
        received.body.len(),
        content.len(),
        "server counted every byte"
    );
    assert!(received.body == content, "server got the file's bytes");
    let total = content.len() as u64;
    assert_eq!(
        *last.lock().expect("not poisoned"),
        Some(Progress { sent: total, total })
    );
}
