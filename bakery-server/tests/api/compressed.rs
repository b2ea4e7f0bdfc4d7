//! Compressed uploads over HTTP: `.img.gz`, `.img.xz` and `.zip` versions of the sample image
//! import and bake like the raw one; corrupt or oversized archives are refused.

use std::io::{Read, Write};
use std::path::Path;

use bakery_client::{Bakeform, BakeformState, ErrorBody, PiInfo};
use reqwest::StatusCode;

use crate::common::*;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    liblzma::read::XzEncoder::new(data, 1)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn zip(data: &[u8]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut out);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    w.start_file("2025-01-01-raspios-lite.img", opts).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap();
    out.into_inner()
}

fn upload(
    server: &Server,
    name: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::blocking::Response {
    server
        .client
        .post(server.url(&format!("/bakeforms/{name}")))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .unwrap()
}

/// Every entry under `dir` with its type, mode and content (or link target).
fn snapshot(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    tree(dir)
        .into_iter()
        .map(|rel| {
            let path = dir.join(&rel);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            (rel, meta.permissions().mode(), content)
        })
        .collect()
}

fn bake_from(server: &Server, bakeform: &str) -> PiInfo {
    let resp = server.post_json("/fridge", &serde_json::json!({"bakeformName": bakeform}));
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{bakeform}");
    let pi: PiInfo = resp.json().unwrap();
    let resp = server.wait_baked(&pi.id);
    assert_eq!(resp.status(), StatusCode::OK);
    let pi: PiInfo = resp.json().unwrap();
    assert_eq!(pi.status.code(), 2, "{pi:?}");
    pi
}

#[test]
fn gzip_xz_and_zip_images_import_and_bake_like_the_raw_one() {
    let env = Env::new();
    let server = Server::start(&env);
    server.add_pis(4);
    let raw = std::fs::read(sample_image()).unwrap();
    assert_eq!(server.upload_sample("raw").status(), StatusCode::CREATED);
    // By magic bytes under the raw content type, and by content type.
    let packed = [
        ("gz", bakery_client::RAW_IMAGE_CONTENT_TYPE, gzip(&raw)),
        ("xz", "application/x-xz", xz(&raw)),
        ("zip", "application/octet-stream", zip(&raw)),
    ];
    for (name, content_type, body) in packed {
        assert!(body.len() < raw.len() / 2, "{name} compresses");
        let resp = upload(&server, name, content_type, body);
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "{name}: {:?}",
            resp.text()
        );
        let bakeform: Bakeform = resp.json().unwrap();
        assert_eq!(bakeform.state, Some(BakeformState::Ready));
    }
    let bakeforms = env.data().join("bakeforms");
    let want = snapshot(&bakeforms.join("raw"));
    assert!(want.len() > 10);
    for name in ["gz", "xz", "zip"] {
        assert!(
            snapshot(&bakeforms.join(name)) == want,
            "{name} imports like raw"
        );
    }
    assert!(entries(&env.data().join("tmp")).is_empty());

    let roots: Vec<Vec<String>> = ["raw", "gz", "xz", "zip"]
        .into_iter()
        .map(|name| {
            let pi = bake_from(&server, name);
            assert_eq!(pi.source_bakeform.unwrap().name, name);
            tree(Path::new(&pi.disks[0].location))
        })
        .collect();
    assert!(
        roots.iter().all(|r| *r == roots[0]),
        "every bake has the same root"
    );
}

#[test]
fn a_truncated_gzip_is_refused_naming_it_and_leaves_nothing() {
    let env = Env::new();
    let server = Server::start(&env);
    let gz = gzip(&std::fs::read(sample_image()).unwrap());
    let resp = upload(&server, OS, "application/gzip", gz[..gz.len() / 2].to_vec());
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err = resp.json::<ErrorBody>().unwrap().error;
    assert!(
        err.starts_with(&format!(
            "invalid image for bakeform {OS}: corrupt gzip archive"
        )),
        "{err}"
    );
    assert!(entries(&env.data().join("tmp")).is_empty());
    assert!(entries(&env.data().join("bakeforms")).is_empty());
    let got: Bakeform = server.get(&format!("/bakeforms/{OS}")).json().unwrap();
    assert_eq!(got.state, Some(BakeformState::Failed));
    assert!(got.error.unwrap().starts_with("corrupt gzip archive"));

    // A zip without an image names that.
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut out);
    w.start_file("README.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"no image here").unwrap();
    w.finish().unwrap();
    let resp = upload(&server, "notes", "application/zip", out.into_inner());
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().unwrap().contains("holds no .img file"));
    assert!(entries(&env.data().join("tmp")).is_empty());
}

#[test]
fn the_limit_applies_to_the_decompressed_image() {
    let env = Env::new();
    let raw = std::fs::read(sample_image()).unwrap();
    let limit = (raw.len() - 1).to_string();
    let server = Server::start_with(&env, &["--max-image-size", &limit]);
    let xz = xz(&raw);
    assert!((xz.len() as u64) < raw.len() as u64 - 1);
    let resp = upload(&server, OS, "application/octet-stream", xz);
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        resp.text()
            .unwrap()
            .contains(&format!("larger than the limit of {limit} bytes"))
    );
    assert!(entries(&env.data().join("tmp")).is_empty());
}
