//! Path traversal on every route that takes a name: refused with 400 or 404, nothing written
//! outside the data dir (requests are sent raw, so `..` and `%2e%2e` reach the server as is).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

/// Sends a raw HTTP/1.1 request and returns the status code.
fn raw(server: &Server, method: &str, path: &str, body: &[u8]) -> u16 {
    let addr = server
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api/v1");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "{method} /api/v1{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in reply to {method} {path}: {reply:?}"))
}

const EVIL: &[&str] = &[
    "..",
    "%2e%2e",
    "%2E%2E",
    ".",
    "..%2f..%2f..%2f..%2fpwned",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fpwned",
    "a%2fb",
    "%2fpwned",
    "%2ftmp%2fpwned",
    "x%00y",
    "%00",
    "..%5c..%5cpwned",
    "../../../../pwned",
    "%c0%ae%c0%ae",
];

fn snapshot(env: &Env) -> Vec<String> {
    assert!(eventually(Duration::from_secs(5), || entries(
        &env.data().join("trash")
    )
    .is_empty()));
    tree(env.dir.path())
        .into_iter()
        .filter(|p| !p.ends_with(".log") && !p.starts_with("data/bakery.db"))
        .collect()
}

#[test]
fn every_named_route_refuses_traversal() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    let pi = server.bake_ready(false);
    let serial = pi.id.as_str();
    let disk = server.post_json("/disks", &serde_json::json!({"size": 1}));
    assert_eq!(disk.status(), reqwest::StatusCode::CREATED);
    let before = snapshot(&env);

    let mut checked = 0;
    for name in EVIL {
        let routes: Vec<(&str, String, &[u8])> = vec![
            ("POST", format!("/bakeforms/{name}"), b"junk image"),
            ("GET", format!("/bakeforms/{name}"), b""),
            ("DELETE", format!("/bakeforms/{name}"), b""),
            ("POST", format!("/oven/{serial}/upload/{name}"), b"owned"),
            ("GET", format!("/oven/{serial}/download/{name}"), b""),
            ("GET", format!("/files/{serial}/{name}"), b""),
            ("GET", format!("/files/{serial}/overlays/{name}"), b""),
            ("GET", format!("/files/{name}"), b""),
            ("GET", format!("/files/{name}/start.elf"), b""),
            ("GET", format!("/disks/{name}"), b""),
            ("DELETE", format!("/disks/{name}"), b""),
            ("POST", format!("/disks/{name}/resize"), br#"{"size": 2}"#),
            ("PUT", format!("/disks/{name}/metadata"), b"{}"),
            ("GET", format!("/oven/{name}"), b""),
            ("DELETE", format!("/oven/{name}"), b""),
            ("POST", format!("/oven/{name}/powercycle"), b""),
            ("POST", format!("/oven/{name}/reset"), b""),
            ("PUT", format!("/oven/{name}/metadata"), b"{}"),
            ("POST", format!("/oven/{name}/disks"), br#"{"diskId": "x"}"#),
            ("DELETE", format!("/oven/{serial}/disks/{name}"), b""),
            ("POST", format!("/oven/{name}/upload/x"), b"owned"),
            ("GET", format!("/pis/{name}"), b""),
        ];
        for (method, path, body) in routes {
            let status = raw(&server, method, &path, body);
            assert!(
                status == 400 || status == 404,
                "{method} {path} answered {status}"
            );
            checked += 1;
        }
    }
    assert!(checked > 300);
    assert_eq!(snapshot(&env), before, "something was written or removed");
    assert!(!std::path::Path::new("/tmp/pwned").exists());
    // The Pi is still fine and its piConfig holds nothing new.
    assert!(entries(&std::path::Path::new(&pi.disks[0].location).join("piConfig")).is_empty());
    assert!(!server.log_contains("panicked"));
}

#[test]
fn pi_config_symlink_planted_by_a_pi_is_not_followed() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    let pi = server.bake_ready(false);
    let root = std::path::PathBuf::from(&pi.disks[0].location);
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "secret").unwrap();
    // The Pi owns its root: it can replace files in piConfig with symlinks.
    std::os::unix::fs::symlink(outside.join("secret"), root.join("piConfig/link")).unwrap();
    assert_eq!(
        raw(
            &server,
            "GET",
            &format!("/oven/{}/download/link", pi.id),
            b""
        ),
        404
    );
    // And piConfig itself with a symlink to a directory outside.
    std::fs::remove_dir_all(root.join("piConfig")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("piConfig")).unwrap();
    assert_eq!(
        raw(
            &server,
            "POST",
            &format!("/oven/{}/upload/new", pi.id),
            b"x"
        ),
        409
    );
    assert_eq!(
        raw(
            &server,
            "GET",
            &format!("/oven/{}/download/secret", pi.id),
            b""
        ),
        409
    );
    assert_eq!(entries(&outside), vec!["secret".to_owned()]);
}
