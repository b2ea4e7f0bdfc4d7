//! The PPI protocol with a real executable: arguments, stdin, `ok`, failures, hangs; the
//! `status` action, the last known power state and its start-up reconcile; the shipped
//! simpleweb PPI against a relay board simulator.

use std::time::Duration;

use bakery_client::{ErrorBody, PiInfo, PiState, PowerState};
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

/// How a simulated relay board answers `GET /status/<port>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusPage {
    /// 200 with body `on` or `off`.
    Words,
    /// 200 with body `1` or `0`, sent chunked.
    Digits,
    /// No status page: 404, as the boards of the first bakery's days.
    Missing,
}

/// A relay board like simpleweb's: answers `GET /poweron/<port>` and `GET /poweroff/<port>`
/// with 200 (ports up to 8) and switches that relay, `GET /status/<port>` as its
/// [`StatusPage`] says (a relay never switched is off; port 7's status page is broken and
/// answers `dunno`), anything else with 404, and records each request line.
struct RelayBoard {
    addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RelayBoard {
    fn start() -> RelayBoard {
        RelayBoard::with_status(StatusPage::Words)
    }

    fn with_status(page: StatusPage) -> RelayBoard {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&requests);
        std::thread::spawn(move || {
            let mut relays = std::collections::HashMap::<u32, bool>::new();
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
                let (action, port) = target
                    .trim_start_matches('/')
                    .split_once('/')
                    .and_then(|(a, p)| Some((a.to_owned(), p.parse::<u32>().ok()?)))
                    .filter(|(_, p)| *p <= 8)
                    .unwrap_or_default();
                let on = relays.get(&port).copied().unwrap_or(false);
                let (status, body) = match (action.as_str(), page) {
                    ("poweron" | "poweroff", _) => {
                        relays.insert(port, action == "poweron");
                        ("200 OK", "")
                    }
                    ("status", StatusPage::Missing) => ("404 Not Found", ""),
                    ("status", _) if port == 7 => ("200 OK", "dunno"),
                    ("status", StatusPage::Words) => ("200 OK", if on { "on\n" } else { "off\n" }),
                    ("status", StatusPage::Digits) => {
                        let digit = if on { "1" } else { "0" };
                        let _ = write!(
                            reader.get_mut(),
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\n{digit}\r\n0\r\n\r\n"
                        );
                        continue;
                    }
                    _ => ("404 Not Found", ""),
                };
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        RelayBoard { addr, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// A simpleweb config for this board at `path`: Pi `00000001` on port 3, `00000002` on
    /// 9 (the board has 8), `00000007` on 7.
    fn config(&self, path: &std::path::Path) {
        std::fs::write(
            path,
            format!(
                r#"{{"url": "http://{}", "pis": {{"00000001": 3, "00000002": 9, "00000007": 7}}}}"#,
                self.addr
            ),
        )
        .unwrap();
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
    board.config(&config);

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

/// The simpleweb PPI's answer to `status` for `pi`: (exit code, stdout, stderr).
fn simpleweb_status(config: &std::path::Path, pi: &str) -> (Option<i32>, String, String) {
    let out = simpleweb(config, &format!(r#"{{"piId":"{pi}","action":"status"}}"#));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_simpleweb_ppi_reads_the_relay_state_and_says_unknown_without_a_status_page() {
    let env = Env::new();
    let switch = |config: &std::path::Path, action: &str| {
        let out = simpleweb(
            config,
            &format!(r#"{{"piId":"00000001","action":"{action}"}}"#),
        );
        assert_eq!(out.stdout, b"ok", "{action}");
    };

    // `on`/`off` bodies: what the relay is, exactly the word on stdout.
    let board = RelayBoard::start();
    let config = env.path("words.json");
    board.config(&config);
    let ok = |state: &str| (Some(0), state.to_owned(), String::new());
    assert_eq!(simpleweb_status(&config, "00000001"), ok("off"));
    switch(&config, "poweron");
    assert_eq!(simpleweb_status(&config, "00000001"), ok("on"));
    switch(&config, "poweroff");
    assert_eq!(simpleweb_status(&config, "00000001"), ok("off"));
    assert_eq!(
        board.requests(),
        [
            "/status/3",
            "/poweron/3",
            "/status/3",
            "/poweroff/3",
            "/status/3"
        ]
    );
    // A port the board answers 404 for: unknown. A status page saying something else, or a
    // Pi without a port: a failure naming it.
    assert_eq!(simpleweb_status(&config, "00000002"), ok("unknown"));
    let (code, stdout, stderr) = simpleweb_status(&config, "00000007");
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    assert!(
        stderr.contains("answered \"dunno\", expected on, off, 1 or 0"),
        "{stderr}"
    );
    let (code, _, stderr) = simpleweb_status(&config, "0000000f");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("pi 0000000f has no port"), "{stderr}");

    // `1`/`0` bodies, sent chunked.
    let digits = RelayBoard::with_status(StatusPage::Digits);
    let config = env.path("digits.json");
    digits.config(&config);
    assert_eq!(simpleweb_status(&config, "00000001"), ok("off"));
    switch(&config, "poweron");
    assert_eq!(simpleweb_status(&config, "00000001"), ok("on"));

    // A board without a status page: unknown, and switching still works.
    let old = RelayBoard::with_status(StatusPage::Missing);
    let config = env.path("old.json");
    old.config(&config);
    switch(&config, "poweron");
    assert_eq!(simpleweb_status(&config, "00000001"), ok("unknown"));

    // As bakery's PPI: the power state follows the board.
    let config = env.path("words.json");
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
    assert!(eventually(Duration::from_secs(10), || server.log_contains(
        "power states reconciled: 0 on, 0 off, 0 unknown"
    )));
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    server.add_pis(1);
    let baked = server.bake_ready(true);
    assert_eq!(baked.id, "00000001");
    let info = power_status(&server, "00000001");
    assert_eq!(info.power_state, Some(PowerState::On), "{info:?}");
    assert_eq!(
        board.requests().last().map(String::as_str),
        Some("/status/3")
    );
    // Switched off behind bakery's back: asked now, bakery says so.
    switch(&config, "poweroff");
    let info = power_status(&server, "00000001");
    assert_eq!(info.power_state, Some(PowerState::Off), "{info:?}");
}

fn pi(server: &Server, serial: &str) -> PiInfo {
    let resp = server.get(&format!("/pis/{serial}"));
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().unwrap()
}

/// `POST /pis/{serial}/power/status`: the raw answer.
fn ask_power(server: &Server, serial: &str) -> reqwest::blocking::Response {
    server
        .client
        .post(server.url(&format!("/pis/{serial}/power/status")))
        .send()
        .unwrap()
}

/// `POST /pis/{serial}/power/status`, expecting 200 and the Pi.
fn power_status(server: &Server, serial: &str) -> PiInfo {
    let resp = ask_power(server, serial);
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn status_tells_on_off_and_unknown_and_switches_through_bakery_set_the_state() {
    let env = Env::new();
    env.make_ppi_stateful();
    let (server, _) = ready_server(&env, 2);
    // Registration powered both off: known without asking.
    for serial in ["00000001", "00000002"] {
        assert!(
            eventually(Duration::from_secs(5), || pi(&server, serial).power_state
                == Some(PowerState::Off)),
            "{:?}",
            pi(&server, serial)
        );
    }
    let before = now_ms();
    let baked = server.bake_ready(true);
    let other = if baked.id == "00000001" {
        "00000002"
    } else {
        "00000001"
    };
    let info = pi(&server, &baked.id);
    assert_eq!(info.power_state, Some(PowerState::On));
    let at = info.power_state_at.unwrap();
    assert!(at >= before && at <= now_ms(), "{info:?}");
    assert_eq!(env.power_of(&baked.id).as_deref(), Some("on"));

    // Asked now: what the PPI says, when someone flipped the switch by hand too, and
    // `unknown` when it cannot tell.
    env.set_power(other, Some("on"));
    assert_eq!(
        power_status(&server, other).power_state,
        Some(PowerState::On)
    );
    env.set_power(other, None);
    let info = power_status(&server, other);
    assert_eq!(info.power_state, Some(PowerState::Unknown));
    assert!(info.power_state_at.unwrap() >= at);
    let config = env.path("ppi.json").display().to_string();
    assert_eq!(
        env.ppi_status_calls().last().cloned(),
        Some(format!(
            r#"-c {config} {{"piId":"{other}","action":"status"}}"#
        ))
    );
    // The list shows the same.
    let all: bakery_client::PiMap = server.get("/pis").json().unwrap();
    assert_eq!(all[other].power_state, Some(PowerState::Unknown));
    assert_eq!(all[&baked.id].power_state, Some(PowerState::On));

    // Unbake powers off.
    assert_eq!(
        server.delete(&format!("/oven/{}", baked.id)).status(),
        StatusCode::OK
    );
    assert!(eventually(Duration::from_secs(10), || pi(
        &server, &baked.id
    )
    .power_state
        == Some(PowerState::Off)));

    // An unknown Pi is 404, a serial that is none 400, as the other Pi routes answer.
    let resp = ask_power(&server, "0000abcd");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(
        resp.json::<ErrorBody>().unwrap().error.contains("0000abcd"),
        "names the pi"
    );
    assert_eq!(
        ask_power(&server, "NOT-A-PI").status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        env.ppi_status_calls().len(),
        2,
        "no PPI call for refused requests"
    );
}

#[test]
fn an_old_ppi_without_status_leaves_the_power_unknown_warns_once_and_bakes_still_work() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    drop(server);
    let server = Server::start(&env);
    // Reconciled at start-up: the PPI failed `status`, so unknown, with one warning naming
    // what it said.
    assert!(
        eventually(Duration::from_secs(10), || server
            .log_contains("power states reconciled: 0 on, 0 off, 1 unknown")),
        "{:?}",
        server.log.lock().unwrap()
    );
    let warnings = || {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("ppi cannot tell the power state") && l.contains("00000001"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let warned = warnings();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("WARN"), "{warned:?}");
    assert!(warned[0].contains("unknown action status"), "{warned:?}");
    assert_eq!(
        pi(&server, "00000001").power_state,
        Some(PowerState::Unknown)
    );
    let info = power_status(&server, "00000001");
    assert_eq!(info.power_state, Some(PowerState::Unknown));
    assert_eq!(warnings().len(), 1, "warned once per pi");

    // Bakes work as before; the power-on teaches the state, and a failing `status` does not
    // unlearn it.
    env.clear_ppi_calls();
    let baked = server.bake_ready(true);
    assert_eq!(env.ppi_calls().len(), 2, "{:?}", env.ppi_calls());
    let on = pi(&server, &baked.id);
    assert_eq!(on.power_state, Some(PowerState::On));
    let asked = power_status(&server, &baked.id);
    assert_eq!(
        (asked.power_state, asked.power_state_at),
        (on.power_state, on.power_state_at)
    );
    assert_eq!(warnings().len(), 1);
}

#[test]
fn start_up_reconciles_every_pis_power_state_without_delaying_serving() {
    let env = Env::new();
    env.make_ppi_stateful();
    let (server, _) = ready_server(&env, 3);
    let baked = server.bake_ready(true);
    drop(server);
    let others: Vec<String> = ["00000001", "00000002", "00000003"]
        .into_iter()
        .filter(|s| *s != baked.id)
        .map(String::from)
        .collect();
    // While bakery was down one Pi's relay lost its state, and the PPI became slow.
    env.set_power(&others[0], None);
    std::fs::write(env.path("ppi.status-delay"), "3").unwrap();
    env.clear_ppi_calls();
    let server = Server::start_with(&env, &["--ppi-timeout", "10"]);
    // Serving does not wait for the PPI's answers.
    let early = pi(&server, &others[1]);
    assert_eq!(early.power_state, None, "{early:?}");
    assert!(
        !server.log_contains("power states reconciled"),
        "{:?}",
        server.log.lock().unwrap()
    );
    assert!(
        eventually(Duration::from_secs(20), || server
            .log_contains("power states reconciled: 1 on, 1 off, 1 unknown")),
        "{:?}",
        server.log.lock().unwrap()
    );
    assert_eq!(
        pi(&server, &others[0]).power_state,
        Some(PowerState::Unknown)
    );
    assert_eq!(pi(&server, &others[1]).power_state, Some(PowerState::Off));
    assert_eq!(pi(&server, &baked.id).power_state, Some(PowerState::On));
    // The baked Pi was powered on again first, then every Pi asked once.
    assert_eq!(
        env.ppi_calls(),
        [format!(
            r#"-c {} {{"piId":"{}","action":"poweron"}}"#,
            env.path("ppi.json").display(),
            baked.id
        )]
    );
    let mut asked: Vec<String> = env
        .ppi_status_calls()
        .iter()
        .rev()
        .take(3)
        .map(|l| l.split("\"piId\":\"").nth(1).unwrap()[..8].to_owned())
        .collect();
    asked.sort();
    assert_eq!(asked, ["00000001", "00000002", "00000003"]);
}

/// `bakery pi list` (POWER column), `pi show` and `pi power-status` against the real server.
#[test]
fn the_cli_shows_and_asks_the_power_state() {
    let cli = std::path::Path::new(env!("CARGO_BIN_EXE_bakery-server")).with_file_name("bakery");
    if !cli.exists() {
        eprintln!(
            "\n!!!! SKIPPED bakery power CLI test: no {} (cargo build -p bakery-client) !!!!\n",
            cli.display()
        );
        return;
    }
    let env = Env::new();
    env.make_ppi_stateful();
    let (server, _) = ready_server(&env, 1);
    let ok = |args: &[&str]| {
        let out = std::process::Command::new(&cli)
            .args(["--url", &server.base])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(eventually(Duration::from_secs(5), || pi(
        &server, "00000001"
    )
    .power_state
        == Some(PowerState::Off)));
    let list = ok(&["pi", "list"]);
    assert!(list.starts_with("ID        STATE   POWER  MODEL"), "{list}");
    assert!(list.contains("00000001  fridge  off "), "{list}");
    let show = ok(&["pi", "show", "00000001"]);
    assert!(show.contains("\npower       off since 20"), "{show}");
    assert!(show.contains(" UTC\n"), "{show}");
    env.set_power("00000001", Some("on"));
    let asked = ok(&["pi", "power-status", "00000001"]);
    assert!(asked.starts_with("00000001  on since 20"), "{asked}");
    let json: PiInfo =
        serde_json::from_str(&ok(&["-o", "json", "pi", "power-status", "00000001"])).unwrap();
    assert_eq!(json.power_state, Some(PowerState::On));
}
