//! Malformed input: every case still gets exactly one well-formed error response.

use serde_json::json;

use crate::{call, run_cpi};

#[test]
fn empty_stdin_is_a_cpi_error() {
    let run = run_cpi(&[], Vec::new());
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CpiError"));
    assert!(run.message().contains("empty"), "{}", run.message());
    assert!(run.success, "exit code 0 whenever a response was written");
    assert!(
        run.stderr.contains("request is empty"),
        "stderr: {}",
        run.stderr
    );
    assert!(
        run.response["log"]
            .as_str()
            .unwrap_or("")
            .contains("request is empty")
    );
}

#[test]
fn invalid_json_is_a_cpi_error() {
    for input in ["{-}", "{\"method\": \"info\", ", "\u{0}\u{1}", "nul"] {
        let run = run_cpi(&[], input.as_bytes().to_vec());
        assert_eq!(
            run.error_type(),
            Some("Bosh::Clouds::CpiError"),
            "{input:?}"
        );
        assert!(
            run.message().contains("not valid json"),
            "{}",
            run.message()
        );
    }
    let run = run_cpi(&[], vec![0xff, 0xfe, b'{']);
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CpiError"));
}

#[test]
fn wrong_request_shapes_are_cpi_errors() {
    for (input, needle) in [
        (json!([1, 2]), "expected a json object"),
        (json!({"arguments": []}), "'method'"),
        (json!({"method": 7, "arguments": []}), "'method'"),
        (json!({"method": "info"}), "'arguments'"),
        (json!({"method": "info", "arguments": "x"}), "'arguments'"),
        (
            json!({"method": "info", "arguments": [], "context": []}),
            "'context'",
        ),
        (
            json!({"method": "info", "arguments": [], "api_version": "two"}),
            "'api_version'",
        ),
    ] {
        let run = call(None, &input);
        assert_eq!(run.error_type(), Some("Bosh::Clouds::CpiError"), "{input}");
        assert!(run.message().contains(needle), "{input}: {}", run.message());
    }
}

#[test]
fn wrong_argument_types_are_invalid_calls() {
    let context = json!({"url": "http://127.0.0.1:9/api/v1"});
    for (method, arguments, needle) in [
        (
            "create_disk",
            json!(["ten", {}, null]),
            "argument 0 (size) must be an integer",
        ),
        (
            "has_vm",
            json!([42]),
            "argument 0 (vm_cid) must be a string",
        ),
        ("has_vm", json!([]), "argument 0 (vm_cid) is missing"),
        (
            "attach_disk",
            json!(["1a2b3c4d", null]),
            "argument 1 (disk_cid)",
        ),
        (
            "create_vm",
            json!(["a", "s", [], {}, [], {}]),
            "argument 2 (cloud_properties) must be an object",
        ),
        (
            "set_vm_metadata",
            json!(["1a2b3c4d", "tags"]),
            "argument 1 (metadata)",
        ),
        ("delete_vm", json!(["1a2b3c4d", "extra"]), "one too many"),
        (
            "calculate_vm_cloud_properties",
            json!([{"cpu": 1, "ram": "lots", "ephemeral_disk_size": 1}]),
            "ram must be an integer",
        ),
    ] {
        let run = call(
            None,
            &json!({"method": method, "arguments": arguments, "context": context}),
        );
        assert_eq!(
            run.error_type(),
            Some("InvalidCall"),
            "{method}: {}",
            run.response
        );
        assert!(
            run.message().contains(needle),
            "{method}: {}",
            run.message()
        );
        assert_eq!(run.response["error"]["ok_to_retry"], json!(false));
    }
}

#[test]
fn unknown_and_unsupported_methods_are_not_implemented() {
    let run = call(None, &json!({"method": "launch_rocket", "arguments": []}));
    assert_eq!(run.error_type(), Some("Bosh::Clouds::NotImplemented"));
    assert!(run.message().contains("launch_rocket"), "{}", run.message());
    for method in [
        "create_network",
        "delete_network",
        "current_vm_id",
        "configure_networks",
    ] {
        let run = call(
            None,
            &json!({"method": method, "arguments": [], "api_version": 2}),
        );
        assert_eq!(
            run.error_type(),
            Some("Bosh::Clouds::NotImplemented"),
            "{method}"
        );
        assert!(
            run.message()
                .starts_with(&format!("{method} is not implemented by the bakery cpi: ")),
            "{}",
            run.message()
        );
    }
}

#[test]
fn huge_input_is_refused_without_reading_it_all() {
    let mut input = b"{\"method\":\"info\",\"arguments\":[\"".to_vec();
    input.resize(17 * 1024 * 1024, b'a');
    let run = run_cpi(&[], input);
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CpiError"));
    assert!(
        run.message().contains("larger than 16777216 bytes"),
        "{}",
        run.message()
    );
}

#[test]
fn info_needs_no_config_and_says_api_version_2() {
    let run = call(
        None,
        &json!({"method": "info", "arguments": [], "context": {"director_uuid": "d"}}),
    );
    assert_eq!(
        run.response["result"],
        json!({"api_version": 2, "stemcell_formats": ["piimg", "raw"]})
    );
    assert!(run.response["error"].is_null());
}

#[test]
fn calculate_vm_cloud_properties_gives_the_ephemeral_disk() {
    let request = json!({"method": "calculate_vm_cloud_properties",
                         "arguments": [{"cpu": 2, "ram": 1024, "ephemeral_disk_size": 2048}]});
    assert_eq!(
        call(None, &request).response["result"],
        json!({"ephemeral_disk": 2048})
    );
    let request = json!({"method": "calculate_vm_cloud_properties",
                         "arguments": [{"cpu": 64, "ram": 1024, "ephemeral_disk_size": 2048}]});
    let run = call(None, &request);
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CloudError"));
    assert!(run.message().contains("64 cpus"), "{}", run.message());
}

#[test]
fn config_problems_are_cpi_errors_naming_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let request =
        json!({"method": "has_vm", "arguments": ["1a2b3c4d"], "context": {"director_uuid": "d"}});

    let missing = dir.path().join("missing.json");
    let run = call(Some(&missing), &request);
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CpiError"));
    assert!(run.message().contains("missing.json"), "{}", run.message());

    let broken = dir.path().join("cpi.json");
    std::fs::write(&broken, "{\"url\": ").expect("write");
    let run = call(Some(&broken), &request);
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CpiError"));
    assert!(
        run.message().contains("cpi.json is invalid"),
        "{}",
        run.message()
    );

    let run = call(None, &request);
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CpiError"));
    assert!(run.message().contains("no bakery url"), "{}", run.message());

    let run = call(
        None,
        &json!({"method": "has_vm", "arguments": ["1a2b3c4d"],
                                  "context": {"url": "not a url"}}),
    );
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CpiError"));
    assert!(run.message().contains("not a url"), "{}", run.message());
}

#[test]
fn a_bad_command_line_still_gets_a_json_response() {
    let run = run_cpi(&["--no-such-flag"], b"{}".to_vec());
    assert_eq!(run.error_type(), Some("Bosh::Clouds::CpiError"));
    assert!(
        run.message().contains("--no-such-flag"),
        "{}",
        run.message()
    );
}
