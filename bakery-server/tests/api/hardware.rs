//! The hardware inventory over HTTP: the model the boot path reveals, first/last seen,
//! operator labels, and bakes constrained to a model and labels.

use bakery_client::{ErrorBody, PiInfo, PiModel};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

fn pi(server: &Server, serial: &str) -> PiInfo {
    let resp = server.get(&format!("/pis/{serial}"));
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().unwrap()
}

fn error_of(resp: reqwest::blocking::Response) -> (StatusCode, String) {
    let status = resp.status();
    (status, resp.json::<ErrorBody>().unwrap().error)
}

#[test]
fn the_boot_path_records_models_labels_pick_pis_and_both_survive_a_restart() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 0);
    // A Pi 4 asks for start4.elf, a Pi 5 for config.txt then its kernel, and a board that
    // only asked for config.txt so far is of unknown model.
    for (serial, file) in [
        ("a0000004", "start4.elf"),
        ("a0000005", "config.txt"),
        ("a0000005", "kernel_2712.img"),
        ("a000000f", "config.txt"),
    ] {
        assert_eq!(
            server.boot_request(serial, file, None).status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(pi(&server, "a0000004").model, Some(PiModel::Pi4));
    assert_eq!(pi(&server, "a0000005").model, Some(PiModel::Pi5));
    let unknown = pi(&server, "a000000f");
    assert_eq!(unknown.model, None);
    let (first, last) = (unknown.first_seen.unwrap(), unknown.last_seen.unwrap());
    assert!(first > 1_700_000_000_000 && first <= last, "{unknown:?}");

    // Labels: replaced as a whole, checked, 404 for an unknown Pi.
    let resp = server.put_json(
        "/pis/a0000004/labels",
        &json!({"rack": "b", "poe/port": "7"}),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    let labelled: PiInfo = resp.json().unwrap();
    assert_eq!(labelled.labels.get("rack").map(String::as_str), Some("b"));
    for (bad, names) in [
        (json!({"rack a": "b"}), "invalid label key \"rack a\""),
        (
            json!({"rack": "b c"}),
            "invalid value \"b c\" of label \"rack\"",
        ),
        (json!({"rack": 7}), "expected a string"),
        (json!(["rack"]), ""),
    ] {
        let (status, error) = error_of(server.put_json("/pis/a0000005/labels", &bad));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {error}");
        assert!(error.contains(names), "{bad}: {error}");
    }
    assert!(
        pi(&server, "a0000005").labels.is_empty(),
        "a refused set writes nothing"
    );
    let (status, error) = error_of(server.put_json("/pis/0000beef/labels", &json!({})));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error.contains("0000beef"), "{error}");

    // Constraints: only a matching Pi is baked; none free → 404 naming what was asked.
    let bake = |body: serde_json::Value| server.post_json("/fridge", &body);
    let (status, error) = error_of(bake(
        json!({"bakeformName": OS, "model": "pi4", "labels": {"rack": "a"}}),
    ));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        error,
        "no available Pi found matching model pi4, labels rack=a"
    );
    let (status, error) = error_of(bake(json!({"bakeformName": OS, "model": "pi6"})));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, error) = error_of(bake(json!({"bakeformName": OS, "labels": {"rack": "b c"}})));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error.contains("labels constraint"), "{error}");
    let resp = bake(
        json!({"bakeformName": OS, "model": "pi4", "labels": {"rack": "b"}, "powerOn": false}),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.json::<PiInfo>().unwrap().id, "a0000004");
    let resp = bake(json!({"bakeformName": OS, "model": "pi5", "powerOn": false}));
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.json::<PiInfo>().unwrap().id, "a0000005");
    let (status, error) = error_of(bake(json!({"bakeformName": OS, "model": "pi5"})));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error, "no available Pi found matching model pi5");
    for serial in ["a0000004", "a0000005"] {
        assert_eq!(server.wait_baked(serial).status(), StatusCode::OK);
    }

    // The inventory is in the database: model and labels survive a restart and an unbake.
    drop(server);
    let server = Server::start(&env);
    let again = pi(&server, "a0000004");
    assert_eq!(again.model, Some(PiModel::Pi4));
    assert_eq!(again.labels, labelled.labels);
    assert_eq!(again.first_seen, labelled.first_seen);
    let resp = server
        .client
        .delete(server.url("/oven/a0000004"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let unbaked = pi(&server, "a0000004");
    assert_eq!((unbaked.model, unbaked.labels), (again.model, again.labels));
}
