//! The PPI protocol with a real executable: arguments, stdin, `ok`, failures, hangs.

use std::time::Duration;

use bakery_client::{ErrorBody, PiInfo, PiState};
use reqwest::StatusCode;

use crate::common::*;

#[test]
fn ppi_gets_config_flag_and_json_on_stdin() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    env.clear_ppi_calls();
    server.bake_ready(true);
    let config = env.path("ppi.json").display().to_string();
    assert_eq!(
        env.ppi_calls(),
        vec![
            format!(r#"-c {config} {{"piId":"00000001","action":"poweroff"}}"#),
            format!(r#"-c {config} {{"piId":"00000001","action":"poweron"}}"#),
        ]
    );
}

fn failed_bake(mode: &str) -> String {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    env.set_ppi_mode(mode);
    let pi = server.bake(true);
    let resp = server.wait_baked(&pi.id);
    assert_eq!(resp.status(), StatusCode::CONFLICT, "mode {mode}");
    let pi: PiInfo = server.get(&format!("/pis/{}", pi.id)).json().unwrap();
    assert_eq!(pi.state, Some(PiState::Fridge));
    assert!(entries(&env.data().join("disks")).is_empty());
    resp.json::<ErrorBody>().unwrap().error
}

#[test]
fn ppi_failure_text_is_quoted() {
    let err = failed_bake("fail");
    assert!(err.contains("relay board 10.9.9.9 unreachable"), "{err}");
    assert!(err.contains("exit status: 3"), "{err}");
}

#[test]
fn ppi_answer_other_than_ok_is_a_failure() {
    let err = failed_bake("garbage");
    assert!(err.contains("maybe later"), "{err}");
    let err = failed_bake("stderr");
    assert!(err.contains("port 7 flaky"), "{err}");
}

#[test]
fn ppi_ok_with_newline_is_accepted_and_a_hang_is_killed() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 2);
    env.set_ppi_mode("okline");
    let pi = server.bake_ready(true);

    env.set_ppi_mode("hang");
    let started = std::time::Instant::now();
    let resp = server
        .client
        .post(server.url(&format!("/oven/{}/powercycle", pi.id)))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = resp.json::<ErrorBody>().unwrap().error;
    assert!(err.contains("timed out after 2s"), "{err}");
    assert!(err.contains("poweroff of pi 00000001"), "{err}");
    // The hung child was killed: no `sleep 30` left running from this ppi.
    env.set_ppi_mode("fail");
    let resp = server
        .client
        .post(server.url(&format!("/oven/{}/powercycle", pi.id)))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    // Power cycle of a Pi that is not baked.
    let resp = server
        .client
        .post(server.url("/oven/00000002/powercycle"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[test]
fn without_ppi_power_is_not_managed() {
    let env = Env::new();
    let server = Server::start_without(&env, &["--ppi", "--ppi-config"]);
    assert!(
        server.log_contains("power is not managed"),
        "{:?}",
        server.log.lock().unwrap()
    );
    server.add_pis(1);
    assert!(env.ppi_calls().is_empty());
}

/// A relay board like simpleweb's: answers `GET /poweron/<port>` and `GET /poweroff/<port>`
/// with 200 (ports up to 8), anything else with 404, and records each request line.
struct RelayBoard {
    addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RelayBoard {
    fn start() -> RelayBoard {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // The rest of the head, up to its blank line.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let target = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(target.clone());
                let ok = target
                    .strip_prefix("/poweron/")
                    .or_else(|| target.strip_prefix("/poweroff/"))
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|p| p <= 8);
                let status = if ok { "200 OK" } else { "404 Not Found" };
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        RelayBoard { addr, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Runs the shipped simpleweb PPI with `config` and `request` on stdin.
fn simpleweb(config: &std::path::Path, request: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bakery-ppi-simpleweb"))
        .arg("-c")
        .arg(config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_shipped_simpleweb_ppi_switches_relay_ports_and_says_why_it_cannot() {
    let board = RelayBoard::start();
    let env = Env::new();
    let config = env.path("simpleweb.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"url": "http://{}", "pis": {{"00000001": 3, "00000002": 9}}}}"#,
            board.addr
        ),
    )
    .unwrap();

    // The PPI protocol by hand: exactly `ok` on stdout, nothing on stderr.
    let out = simpleweb(&config, r#"{"piId":"00000001","action":"poweron"}"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"ok");
    assert!(out.stderr.is_empty());
    assert_eq!(board.requests(), ["/poweron/3"]);
    // Failures name what failed: an unmapped Pi, a port the board refuses, a bad action.
    for (request, says) in [
        (
            r#"{"piId":"0000000f","action":"poweron"}"#,
            "pi 0000000f has no port",
        ),
        (
            r#"{"piId":"00000002","action":"poweroff"}"#,
            "answered HTTP/1.1 404",
        ),
        (
            r#"{"piId":"00000001","action":"reboot"}"#,
            "unknown action \"reboot\"",
        ),
    ] {
        let out = simpleweb(&config, request);
        assert_eq!(out.status.code(), Some(1), "{request}");
        assert!(out.stdout.is_empty(), "{request}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{request}: {stderr}");
    }

    // As bakery's PPI: a bake powers the Pi off and on through the board.
    let server = Server::start_replacing(
        &env,
        &["--ppi", "--ppi-config"],
        &[
            "--ppi",
            env!("CARGO_BIN_EXE_bakery-ppi-simpleweb"),
            "--ppi-config",
            &config.display().to_string(),
        ],
    );
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    server.add_pis(1);
    let before = board.requests().len();
    server.bake_ready(true);
    assert!(eventually(Duration::from_secs(5), || board
        .requests()
        .len()
        >= before + 2));
    let calls = board.requests()[before..].to_vec();
    assert!(calls.contains(&"/poweroff/3".to_owned()), "{calls:?}");
    assert_eq!(
        calls.last().map(String::as_str),
        Some("/poweron/3"),
        "{calls:?}"
    );
}
