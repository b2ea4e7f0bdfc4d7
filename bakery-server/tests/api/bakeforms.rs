//! Bakeforms over HTTP: upload and import, conflicts, bad images, limits, deletion.

use bakery_client::{Bakeform, BakeformMap, BakeformState, ErrorBody};
use reqwest::StatusCode;

use crate::common::*;

#[test]
fn upload_list_get_delete() {
    let env = Env::new();
    let server = Server::start(&env);
    let resp = server.upload_sample(OS);
    assert_eq!(resp.status(), StatusCode::CREATED);
    let bakeform: Bakeform = resp.json().unwrap();
    assert_eq!(bakeform.name, OS);
    assert_eq!(
        bakeform.location,
        env.data().join("bakeforms").join(OS).display().to_string()
    );
    assert_eq!(bakeform.state, Some(BakeformState::Ready));
    let dir = env.data().join("bakeforms").join(OS);
    assert!(dir.join("boot/start.elf").is_file());
    assert!(dir.join("boot/overlays/vc4-kms-v3d.dtbo").is_file());
    assert!(dir.join("root/etc/hostname").is_file());
    assert!(
        entries(&env.data().join("tmp")).is_empty(),
        "the raw image is not kept"
    );

    // The old CPI deletes and re-uploads on 403.
    let resp = server.upload_sample(OS);
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(
        resp.json::<ErrorBody>()
            .unwrap()
            .error
            .contains("already exists")
    );

    let list: BakeformMap = server.get("/bakeforms").json().unwrap();
    assert_eq!(list.keys().collect::<Vec<_>>(), [OS]);
    let got: Bakeform = server.get(&format!("/bakeforms/{OS}")).json().unwrap();
    assert_eq!(got, bakeform);
    assert_eq!(
        server.get("/bakeforms/other").status(),
        StatusCode::NOT_FOUND
    );

    // In use by a baked Pi: 409.
    server.add_pis(1);
    let pi = server.bake_ready(false);
    assert_eq!(
        server.delete(&format!("/bakeforms/{OS}")).status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        server.delete(&format!("/oven/{}", pi.id)).status(),
        StatusCode::OK
    );

    assert_eq!(
        server.delete(&format!("/bakeforms/{OS}")).status(),
        StatusCode::OK
    );
    assert_eq!(
        server.delete(&format!("/bakeforms/{OS}")).status(),
        StatusCode::NOT_FOUND
    );
    assert!(!dir.exists());
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
}

#[test]
fn bad_images_are_refused_and_leave_nothing_behind() {
    let env = Env::new();
    let server = Server::start(&env);
    let resp = server.post_bytes("/bakeforms/junk", vec![0x5a; 64 * 1024]);
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err = resp.json::<ErrorBody>().unwrap().error;
    assert!(
        err.starts_with("invalid image for bakeform junk: "),
        "{err}"
    );
    assert!(err.contains("partition"), "{err}");
    let resp = server.post_bytes("/bakeforms/empty", Vec::new());
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // A truncated image names the problem.
    let mut image = std::fs::read(sample_image()).unwrap();
    image.truncate(image.len() / 2);
    let resp = server.post_bytes("/bakeforms/half", image);
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().unwrap().contains("truncated"));

    let list: BakeformMap = server.get("/bakeforms").json().unwrap();
    assert!(list.is_empty());
    assert!(entries(&env.data().join("tmp")).is_empty());
    assert!(entries(&env.data().join("bakeforms")).is_empty());
    // The names are free again.
    assert_eq!(server.upload_sample("junk").status(), StatusCode::CREATED);
}

#[test]
fn images_over_the_limit_get_413() {
    let env = Env::new();
    let server = Server::start_with(&env, &["--max-image-size", "1M"]);
    let resp = server.upload_sample(OS);
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        resp.text()
            .unwrap()
            .contains("larger than the limit of 1048576 bytes")
    );
    assert!(entries(&env.data().join("tmp")).is_empty());
    assert_eq!(
        server.get(&format!("/bakeforms/{OS}")).status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn a_relative_data_dir_is_reported_absolute() {
    let env = Env::new();
    let cwd = std::env::current_dir().unwrap();
    let ups = "../".repeat(cwd.components().count() - 1);
    let relative = format!(
        "{ups}{}",
        env.data().display().to_string().trim_start_matches('/')
    );
    assert!(std::path::Path::new(&relative).is_relative());
    let server = Server::start_with(&env, &["--data-dir", &relative]);
    let bakeform: Bakeform = server.upload_sample(OS).json().unwrap();
    let canonical = std::fs::canonicalize(env.data()).unwrap();
    assert_eq!(
        bakeform.location,
        canonical.join("bakeforms").join(OS).display().to_string()
    );
}
