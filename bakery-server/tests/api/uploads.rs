//! Uploads and their limits against the real binary: refusals the request's head decides
//! answer at once (raw `TcpStream` and curl), a stalled upload is timed out and fails, the
//! concurrent-upload cap answers 503, a bad or interrupted import leaves one kind of failed
//! row, and no failed upload's error or event names a server path.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bakery_client::{Bakeform, BakeformState, ErrorBody};
use reqwest::StatusCode;

use crate::common::*;

/// The `host:port` of the server.
fn authority(server: &Server) -> String {
    server
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api/v1")
        .to_owned()
}

/// Sends `head` and then `body` (the head must announce more than `body`), and reads what
/// the server answers within `within`, while the client sends nothing more.
fn raw_answer(server: &Server, head: &str, body: &[u8], within: Duration) -> (String, Duration) {
    let mut stream = TcpStream::connect(authority(server)).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    let started = Instant::now();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// Whether curl is installed; skips (loudly) when not, fails instead under CI.
pub fn curl_or_skip(test: &str) -> bool {
    let found = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("{test}: curl is missing under CI (apt-get install curl)");
    }
    if !found {
        eprintln!("SKIPPED {test} (its curl part): curl is not installed (apt-get install curl)");
    }
    found
}

fn post_head(name: &str, length: u64, extra: &str) -> String {
    format!(
        "POST /api/v1/bakeforms/{name} HTTP/1.1\r\nHost: bakery\r\nContent-Length: {length}\r\n{extra}\r\n"
    )
}

fn assert_refused_at_once(answer: &str, elapsed: Duration, status: &str, needle: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{answer:?}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );
    assert!(answer.contains(needle), "{answer:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn refusals_the_head_decides_answer_before_the_body() {
    let env = Env::new();
    let server = Server::start_with(&env, &["--max-image-size", "1G"]);
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    let huge = 1_000_000_000_000_000;
    let wait = Duration::from_secs(5);

    let (a, t) = raw_answer(&server, &post_head("new", huge, ""), b"hello", wait);
    assert_refused_at_once(&a, t, "413", "larger than the limit of 1073741824 bytes");
    let (a, t) = raw_answer(&server, &post_head(OS, huge, ""), b"hello", wait);
    assert_refused_at_once(&a, t, "403", "already exists");
    let (a, t) = raw_answer(&server, &post_head("-bad", 1 << 20, ""), b"hello", wait);
    assert_refused_at_once(&a, t, "400", "-bad");
    // A client that asks first gets the refusal instead of 100 Continue.
    let expect = post_head(OS, 1 << 20, "Expect: 100-continue\r\n");
    let (a, t) = raw_answer(&server, &expect, b"", wait);
    assert_refused_at_once(&a, t, "403", "already exists");
    assert!(!a.contains("100 Continue"), "{a:?}");
    // Nothing was started by any of them.
    let new = server.get("/bakeforms/new");
    assert_eq!(new.status(), StatusCode::NOT_FOUND);

    // curl sends a large body without asking (or asks and waits): either way it gets the
    // refusal at once, not after sending 64 MiB.
    if !curl_or_skip("refusals_the_head_decides_answer_before_the_body") {
        return;
    }
    let file = env.path("big.img");
    std::fs::write(&file, vec![0x5a; 64 << 20]).unwrap();
    for expect in ["Expect:", "Expect: 100-continue"] {
        let started = Instant::now();
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-H", expect])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(server.url(&format!("/bakeforms/{OS}")))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.ends_with("\n403"), "{expect}: {text:?} {out:?}");
        assert!(text.contains("already exists"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(5), "{expect}");
    }
}

#[test]
fn an_announced_length_beyond_the_free_space_is_refused_at_once() {
    let env = Env::new();
    let server = Server::start_with(
        &env,
        &["--min-free-space", "1M", "--max-image-size", "1000T"],
    );
    let free = fs_free(&env.data());
    let (a, t) = raw_answer(
        &server,
        &post_head("big", free + (1 << 30), ""),
        b"hello",
        Duration::from_secs(5),
    );
    assert_refused_at_once(&a, t, "507", "not enough free space");
    assert!(!a.contains(&env.data().display().to_string()), "{a}");
}

fn fs_free(dir: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs writes into the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Starts an upload of `name` that sends a few bytes and then nothing; returns its stream.
fn stalled_upload(server: &Server, name: &str) -> TcpStream {
    let mut stream = TcpStream::connect(authority(server)).unwrap();
    stream
        .write_all(post_head(name, 10 << 20, "").as_bytes())
        .unwrap();
    stream.write_all(&[0u8; 512]).unwrap();
    stream
}

#[test]
fn a_stalled_upload_times_out_fails_and_leaves_no_file() {
    let env = Env::new();
    let server = Server::start_with(
        &env,
        &[
            "--upload-idle-timeout",
            "1",
            "--max-concurrent-uploads",
            "1",
        ],
    );
    let mut stream = stalled_upload(&server, "slow");
    assert!(eventually(Duration::from_secs(5), || {
        server
            .get("/bakeforms/slow")
            .json::<Bakeform>()
            .is_ok_and(|b| b.state == Some(BakeformState::Importing))
    }));
    // The cap is reached: another upload is refused before its body, with Retry-After.
    let resp = server.post_bytes("/bakeforms/other", vec![0; 1024]);
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let err = resp.json::<ErrorBody>().unwrap().error;
    assert!(err.contains("--max-concurrent-uploads"), "{err}");

    // The stalled one ends failed, answered 408 while its connection is still open.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let slow: Bakeform = server.get("/bakeforms/slow").json().unwrap();
    assert_eq!(slow.state, Some(BakeformState::Failed));
    let why = slow.error.unwrap();
    assert!(
        why.contains("stalled") && why.contains("--upload-idle-timeout"),
        "{why}"
    );
    assert_eq!(slow.location, "");
    assert!(entries(&env.data().join("tmp")).is_empty());
    // The permit came back.
    assert_eq!(server.upload_sample("other").status(), StatusCode::CREATED);
}

/// The text of every event about bakeform `name`.
fn event_texts(server: &Server, name: &str) -> Vec<String> {
    let events: serde_json::Value = server.get("/events?limit=1000").json().unwrap();
    let list = events
        .get("events")
        .and_then(|e| e.as_array().cloned())
        .or_else(|| events.as_array().cloned())
        .unwrap_or_default();
    list.into_iter()
        .filter(|e| e.to_string().contains(name))
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn failed_uploads_name_no_server_path() {
    let env = Env::new();
    let server = Server::start(&env);
    let data = env.data().display().to_string();
    let mut image = std::fs::read(sample_image()).unwrap();
    image.truncate(image.len() / 2);
    for (name, body) in [("junk", vec![0x5a; 64 * 1024]), ("half", image)] {
        let resp = server.post_bytes(&format!("/bakeforms/{name}"), body);
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let err = resp.json::<ErrorBody>().unwrap().error;
        assert!(err.contains(name), "{err}");
        assert!(!err.contains(&data) && !err.contains("tmp/"), "{err}");
        let row: Bakeform = server.get(&format!("/bakeforms/{name}")).json().unwrap();
        assert_eq!(
            (row.state, row.location.as_str()),
            (Some(BakeformState::Failed), "")
        );
        let why = row.error.unwrap();
        assert!(!why.contains(&data) && !why.contains("tmp/"), "{why}");
        let events = event_texts(&server, name);
        assert!(
            events.iter().any(|e| e.contains("bakeformFailed")),
            "{events:?}"
        );
        for e in events {
            assert!(!e.contains(&data) && !e.contains("tmp/"), "{e}");
        }
    }
}

#[test]
fn an_import_killed_midway_is_the_same_failed_row_after_restart() {
    let env = Env::new();
    let mut server = Server::start(&env);
    // Headers and part of the body, then the server is killed while it reads the rest.
    let stream = stalled_upload(&server, "cut");
    assert!(eventually(Duration::from_secs(5), || {
        server
            .get("/bakeforms/cut")
            .json::<Bakeform>()
            .is_ok_and(|b| b.state == Some(BakeformState::Importing))
    }));
    server.kill9();
    drop(stream);
    let server = Server::start(&env);
    let row: Bakeform = server.get("/bakeforms/cut").json().unwrap();
    assert_eq!(row.state, Some(BakeformState::Failed));
    assert_eq!(row.location, "");
    let why = row.error.unwrap();
    assert_eq!(
        why,
        "upload of bakeform cut: the server stopped during the import"
    );
    assert!(entries(&env.data().join("tmp")).is_empty());
    assert!(
        event_texts(&server, "cut")
            .iter()
            .any(|e| e.contains("stopped during the import"))
    );
    // A new upload of the name replaces the failed row.
    assert_eq!(server.upload_sample("cut").status(), StatusCode::CREATED);
    let row: Bakeform = server.get("/bakeforms/cut").json().unwrap();
    assert_eq!((row.state, row.error), (Some(BakeformState::Ready), None));
}
