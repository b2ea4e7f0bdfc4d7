//! The binary against a wiremock bakery: routes, token, and how server answers map to CPI errors.

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{Run, call};

fn pi(id: &str, status: u8, state: &str) -> Value {
    json!({"id": id, "status": status, "state": state,
           "disks": [{"id": "root", "location": "/d/root", "size": 0, "nfsAddress": "10.0.0.2", "ephemeral": true}]})
}

async fn cpi(server: &MockServer, method: &str, arguments: Value, api_version: u64) -> Run {
    let request = json!({
        "method": method, "arguments": arguments, "api_version": api_version,
        "context": {"director_uuid": "d", "request_id": "r-1",
                    "url": format!("{}/api/v1", server.uri()), "token": "s3cret"}
    });
    tokio::task::spawn_blocking(move || call(None, &request))
        .await
        .expect("cpi thread")
}

#[tokio::test(flavor = "multi_thread")]
async fn has_vm_reads_the_pi_with_the_context_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/pis/1a2b3c4d"))
        .and(header("authorization", "Bearer s3cret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(pi("1a2b3c4d", 2, "baked")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/pis/5e6f7a8b"))
        .respond_with(ResponseTemplate::new(200).set_body_json(pi("5e6f7a8b", 1, "fridge")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/pis/ffffffff"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": "no pi ffffffff"})))
        .mount(&server)
        .await;
    assert_eq!(
        cpi(&server, "has_vm", json!(["1a2b3c4d"]), 2)
            .await
            .response["result"],
        json!(true)
    );
    assert_eq!(
        cpi(&server, "has_vm", json!(["5e6f7a8b"]), 2)
            .await
            .response["result"],
        json!(false)
    );
    assert_eq!(
        cpi(&server, "has_vm", json!(["ffffffff"]), 2)
            .await
            .response["result"],
        json!(false)
    );
    let run = cpi(&server, "reboot_vm", json!(["5e6f7a8b"]), 2).await;
    assert_eq!(run.error_type(), Some("Bosh::Clouds::VMNotFound"));
    assert!(
        run.message().contains("pi is fridge, not baked"),
        "{}",
        run.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_answers_map_to_cpi_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/disks"))
        .respond_with(
            ResponseTemplate::new(507)
                .set_body_json(json!({"error": "not enough space for 999999 MiB"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/disks/d-attached"))
        .respond_with(
            ResponseTemplate::new(409)
                .set_body_json(json!({"error": "disk d-attached is attached to 1a2b3c4d"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/disks/d-gone"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/disks/d-gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": "no disk d-gone"})))
        .mount(&server)
        .await;

    let run = cpi(&server, "create_disk", json!([999999, {}, null]), 2).await;
    assert_eq!(run.error_type(), Some("Bosh::Clouds::NoDiskSpace"));
    assert!(
        run.message().contains("not enough space"),
        "{}",
        run.message()
    );
    let run = cpi(&server, "delete_disk", json!(["d-attached"]), 2).await;
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CloudError"));
    assert!(
        run.message().contains("detach it first"),
        "{}",
        run.message()
    );
    let run = cpi(&server, "delete_disk", json!(["d-gone"]), 2).await;
    assert_eq!(run.response["result"], Value::Null);
    assert!(run.response["error"].is_null());
    assert_eq!(
        cpi(&server, "has_disk", json!(["d-gone"]), 2)
            .await
            .response["result"],
        json!(false)
    );
    let run = cpi(&server, "resize_disk", json!(["d-gone", 10]), 2).await;
    assert_eq!(run.error_type(), Some("Bosh::Clouds::DiskNotFound"));
}

#[tokio::test(flavor = "multi_thread")]
async fn create_vm_with_no_free_pi_may_be_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/fridge"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"error": "no available Pi found"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let run = cpi_create_vm(&server).await;
    assert_eq!(run.error_type(), Some("Bosh::Clouds::VMCreationFailed"));
    assert_eq!(run.response["error"]["ok_to_retry"], json!(true));
    assert!(
        run.message().contains("no available Pi found"),
        "{}",
        run.message()
    );
}

async fn cpi_create_vm(server: &MockServer) -> Run {
    let request = json!({
        "method": "create_vm",
        "arguments": ["agent-1", "stemcell-1", {}, {"default": {"type": "dynamic"}}, [], {}],
        "api_version": 2,
        "context": {"director_uuid": "d", "request_id": "r-1",
                    "url": format!("{}/api/v1", server.uri()),
                    "agent": {"mbus": "nats://n:4222"}}
    });
    tokio::task::spawn_blocking(move || call(None, &request))
        .await
        .expect("cpi thread")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_bakery_is_a_retryable_cloud_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/api/v1", listener.local_addr().expect("addr"));
    drop(listener);
    let request = json!({"method": "has_vm", "arguments": ["1a2b3c4d"], "context": {"url": url}});
    let run = tokio::task::spawn_blocking(move || call(None, &request))
        .await
        .expect("cpi thread");
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CloudError"));
    assert_eq!(run.response["error"]["ok_to_retry"], json!(true));
    assert!(
        run.message().contains("reading pi 1a2b3c4d"),
        "{}",
        run.message()
    );
}
