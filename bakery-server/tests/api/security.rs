//! Security: bearer tokens (admin, read-only, rotation by SIGHUP), the boot path's token
//! policy, HTTPS with a certificate made here, input limits, the Pi cap, and isolation of Pis.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bakery_client::{ClientBuilder, CreateDiskRequest, ErrorBody, ErrorKind, PiInfo, PiMap};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::json;

use crate::common::{Env, OS, Server, eventually, ready_server, sample_image};

const ADMIN: &str = "admin-token-for-the-api-tests";
const READER: &str = "reader-token-for-the-api-tests";

fn write_tokens(env: &Env, text: &str) -> String {
    let path = env.path("tokens");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn token_server(env: &Env, extra: &[&str]) -> Server {
    let file = write_tokens(env, &format!("# test tokens\n\n{ADMIN}\nro:{READER}\n"));
    let mut args = vec!["--token-file", file.as_str()];
    args.extend_from_slice(extra);
    Server::start_with(env, &args)
}

fn error_of(resp: reqwest::blocking::Response) -> (StatusCode, Option<String>, String) {
    let (status, challenge, body) = error_body_of(resp);
    (status, challenge, body.error)
}

fn error_body_of(resp: reqwest::blocking::Response) -> (StatusCode, Option<String>, ErrorBody) {
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, resp.json().unwrap())
}

fn with(req: RequestBuilder, token: &str) -> RequestBuilder {
    req.bearer_auth(token)
}

#[test]
fn tokens_guard_the_api_and_read_only_tokens_only_read() {
    let env = Env::new();
    let server = token_server(&env, &[]);
    let c = &server.client;

    let (status, challenge, body) = error_body_of(server.get("/pis"));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body.error, "missing bearer token");
    assert_eq!(body.code, Some(ErrorKind::Unauthorized));
    assert!(challenge.unwrap().starts_with("Bearer"));
    let (status, challenge, error) = error_of(
        with(c.get(server.url("/pis")), "not-a-token-we-know-at-all")
            .send()
            .unwrap(),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error, "invalid token");
    assert!(challenge.unwrap().contains("invalid_token"));
    // Another scheme is no token; a token prefix is not the token.
    let resp = c
        .get(server.url("/pis"))
        .header("Authorization", format!("Basic {ADMIN}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = with(c.get(server.url("/pis")), &ADMIN[..ADMIN.len() - 1])
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Unknown routes under /api are refused before routing (nothing to learn without a token).
    assert_eq!(server.get("/nope").status(), StatusCode::UNAUTHORIZED);
    // The status page itself is open (it asks for a token); its data and /metrics are not.
    assert_eq!(raw_get(&server, "/"), 200);
    assert_eq!(raw_get(&server, "/metrics"), 401);
    let origin = server.base.trim_end_matches("/api/v1");
    let resp = with(c.get(format!("{origin}/metrics")), READER)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Spellings that do not start with /api/ reach no API route.
    for path in [
        "/%61pi/v1/pis",
        "//api/v1/pis",
        "/API/v1/pis",
        "/api/v1/%66iles/../pis",
    ] {
        let status = raw_get(&server, path);
        assert!(status == 401 || status == 404, "{path}: {status}");
    }

    // Admin: everything.
    let resp = with(c.get(server.url("/pis")), ADMIN).send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = with(c.post(server.url("/disks")), ADMIN)
        .json(&json!({"size": 8}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let disk: bakery_client::Disk = resp.json().unwrap();

    // Read-only: GET yes, writes 403.
    let resp = with(c.get(server.url(&format!("/disks/{}", disk.id))), READER)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for req in [
        c.post(server.url("/disks")).json(&json!({"size": 8})),
        c.delete(server.url(&format!("/disks/{}", disk.id))),
        c.put(server.url(&format!("/disks/{}/metadata", disk.id)))
            .json(&json!({"a": 1})),
        c.post(server.url("/fridge"))
            .json(&json!({"bakeformName": OS})),
    ] {
        let (status, challenge, body) = error_body_of(with(req, READER).send().unwrap());
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            body.error.starts_with("read-only token may not"),
            "{body:?}"
        );
        assert_eq!(body.code, Some(ErrorKind::InsufficientScope));
        assert!(challenge.unwrap().contains("insufficient_scope"));
    }
    assert_eq!(
        with(c.get(server.url(&format!("/disks/{}", disk.id))), ADMIN)
            .send()
            .unwrap()
            .status(),
        StatusCode::OK,
        "the refused delete did not happen"
    );

    // The boot path stays open (Pis cannot send tokens): an unknown Pi registers.
    let resp = server.boot_request("0000abcd", "start4.elf", None);
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = with(c.get(server.url("/pis/0000abcd")), READER)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // The typed client passes its token through; without one it gets 401.
    let typed = bakery_client::blocking::Client::from_builder(
        ClientBuilder::new(server.base.clone()).token(READER),
    )
    .unwrap();
    let pis: PiMap = typed.pis().unwrap();
    assert!(pis.contains_key("0000abcd"));
    let anonymous = bakery_client::blocking::Client::new(&server.base).unwrap();
    assert_eq!(anonymous.pis().unwrap_err().status(), Some(401));
    let err = typed
        .create_disk(&CreateDiskRequest {
            size: 8,
            ephemeral: false,
        })
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    // The server never logs a token.
    assert!(!server.log_contains(ADMIN) && !server.log_contains(READER));
}

#[test]
fn tokens_rotate_on_sighup_and_a_bad_file_keeps_the_old_ones() {
    let env = Env::new();
    let server = token_server(&env, &[]);
    let c = &server.client;
    let status = |token: &str| {
        with(c.get(server.url("/pis")), token)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(status(ADMIN), StatusCode::OK);
    const NEW: &str = "the-next-admin-token-after-rotation";
    write_tokens(&env, &format!("{NEW}\n"));
    server.signal(libc::SIGHUP);
    assert!(
        eventually(Duration::from_secs(10), || status(ADMIN)
            == StatusCode::UNAUTHORIZED),
        "old token still accepted"
    );
    assert_eq!(status(NEW), StatusCode::OK);
    assert!(server.log_contains("api bearer tokens reloaded"));

    // A broken file (a short token) and then a missing file: the tokens in force stay.
    write_tokens(&env, "zq9\n");
    server.signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(10), || server
        .log_contains("token file not reloaded")));
    assert_eq!(status(NEW), StatusCode::OK);
    std::fs::remove_file(env.path("tokens")).unwrap();
    server.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(NEW), StatusCode::OK);
    assert!(!server.log_contains("zq9"), "a refused token is not logged");
}

#[test]
fn sighup_without_anything_to_reload_does_not_stop_the_server() {
    let env = Env::new();
    let server = Server::start(&env);
    // Once it answers, the handler is in place (it is set up before serving).
    assert_eq!(server.get("/pis").status(), StatusCode::OK);
    server.signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(10), || server
        .log_contains("SIGHUP: no token file")));
    assert_eq!(server.get("/pis").status(), StatusCode::OK);
}

#[test]
fn the_boot_path_can_require_a_token_too() {
    let env = Env::new();
    let server = token_server(&env, &["--boot-files-require-token"]);
    let c = &server.client;
    let resp = server.boot_request("0000abcd", "start4.elf", None);
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = with(c.get(server.url("/files/bootcode.bin")), ADMIN)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = with(c.get(server.url("/pis/0000abcd")), ADMIN)
        .send()
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "refused requests register nobody"
    );
    let resp = with(c.get(server.url("/files/0000abcd/start4.elf")), READER)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "read-only is enough");
}

/// Runs the server binary to its exit (it must stop by itself).
fn run_to_exit(env: &Env, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = env.args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_bakery-server"))
        .args(&args)
        .env_remove("BAKERY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server kept running with {extra:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unusable_token_files_and_certificates_stop_the_server() {
    let env = Env::new();
    let missing = env.path("no-such-tokens").display().to_string();
    let (code, err) = run_to_exit(&env, &["--token-file", &missing]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot read token file"), "{err}");

    let file = write_tokens(&env, "# rotated\nro:tiny\n");
    let (code, err) = run_to_exit(&env, &["--token-file", &file]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("line 2: token is shorter than 16"), "{err}");
    assert!(
        !err.contains("tiny"),
        "the token itself is not shown: {err}"
    );

    let file = write_tokens(&env, "# nobody\n");
    let (code, err) = run_to_exit(&env, &["--token-file", &file]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("holds no token"), "{err}");

    let cert = env.path("cert.pem").display().to_string();
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let (code, err) = run_to_exit(&env, &["--tls-cert", &cert, "--tls-key", &cert]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("certificate"), "{err}");
    let (code, err) = run_to_exit(&env, &["--tls-cert", &cert]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs --tls-key"), "{err}");
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it: (ca pem, cert
/// pem, key pem).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bakery test ca");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn https_with_a_certificate_from_our_own_ca() {
    let env = Env::new();
    let (ca, cert, key) = certificates();
    std::fs::write(env.path("ca.pem"), &ca).unwrap();
    std::fs::write(env.path("cert.pem"), &cert).unwrap();
    std::fs::write(env.path("key.pem"), &key).unwrap();
    let (c, k) = (
        env.path("cert.pem").display().to_string(),
        env.path("key.pem").display().to_string(),
    );
    let server = token_server(&env, &["--tls-cert", &c, "--tls-key", &k]);
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );

    // A client that does not know the CA refuses the server.
    let resp = with(server.client.get(server.url("/pis")), ADMIN).send();
    assert!(resp.is_err(), "{resp:?}");
    // Plain HTTP to the HTTPS port gets no API answer.
    let plain = server.base.replacen("https://", "http://", 1);
    let resp = Client::new()
        .get(format!("{plain}/pis"))
        .bearer_auth(ADMIN)
        .send();
    assert!(resp.map(|r| r.status() != StatusCode::OK).unwrap_or(true));

    // A client trusting the CA gets through, with the token rules in force.
    let trusted = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(
        trusted.get(server.url("/pis")).send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        with(trusted.get(server.url("/pis")), ADMIN)
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // A client stuck in its handshake holds up nobody else.
    let stalled =
        std::net::TcpStream::connect(server.base["https://".len()..].split('/').next().unwrap())
            .unwrap();
    let typed = bakery_client::blocking::Client::from_builder(
        ClientBuilder::new(server.base.clone())
            .token(ADMIN)
            .ca_cert(ca.as_bytes().to_vec()),
    )
    .unwrap();
    let started = Instant::now();
    let bakeform = typed.upload_bakeform(OS, sample_image(), None).unwrap();
    assert_eq!(bakeform.name, OS);
    let disk = typed
        .create_disk(&CreateDiskRequest {
            size: 8,
            ephemeral: false,
        })
        .unwrap();
    assert_eq!(typed.disk(&disk.id).unwrap().id, disk.id);
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(stalled);
    // The typed client rejects a CA that is not PEM.
    let err = bakery_client::blocking::Client::from_builder(
        ClientBuilder::new(server.base.clone()).ca_cert(b"junk".to_vec()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("invalid ca certificate"), "{err}");

    // Rotation: a certificate from another CA, then SIGHUP; a broken pair is not taken.
    let (ca2, cert2, key2) = certificates();
    std::fs::write(env.path("cert.pem"), &cert2).unwrap();
    std::fs::write(env.path("key.pem"), &key2).unwrap();
    server.signal(libc::SIGHUP);
    let trusting = |ca: &str| {
        Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    assert!(eventually(Duration::from_secs(10), || {
        with(trusting(&ca2).get(server.url("/pis")), ADMIN)
            .send()
            .is_ok_and(|r| r.status() == StatusCode::OK)
    }));
    assert!(
        with(trusting(&ca).get(server.url("/pis")), ADMIN)
            .send()
            .is_err()
    );
    std::fs::write(env.path("key.pem"), &key).unwrap();
    server.signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(10), || server
        .log_contains("tls certificate not reloaded")));
    let resp = with(trusting(&ca2).get(server.url("/pis")), ADMIN)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[test]
fn input_limits_give_clear_4xx_and_507() {
    let env = Env::new();
    let server = Server::start(&env);
    // JSON bodies are small.
    let big = json!({"size": 8, "pad": "x".repeat(100 * 1024)});
    assert_eq!(
        server.post_json("/disks", &big).status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let meta = json!({"k": "v".repeat(100 * 1024)});
    let resp = server.put_json(
        "/disks/00000000-0000-0000-0000-000000000000/metadata",
        &meta,
    );
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Disk sizes: not positive, absurd, beyond free space, not a number.
    for size in [json!(0), json!(-1), json!(i64::MIN)] {
        let (status, _, error) = error_of(server.post_json("/disks", &json!({ "size": size })));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{size}");
        assert!(error.contains("positive"), "{error}");
    }
    let (status, _, error) = error_of(server.post_json("/disks", &json!({"size": i64::MAX})));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error.contains("larger than the maximum"), "{error}");
    for size in [json!("8"), json!(1.5), json!(u64::MAX)] {
        let resp = server.post_json("/disks", &json!({ "size": size }));
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{size}");
    }
    // 15 TiB: allowed by the rules, refused by the free space of this file system.
    let (status, _, error) =
        error_of(server.post_json("/disks", &json!({"size": 15i64 * 1024 * 1024})));
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{error}");
    assert!(error.contains("free"), "{error}");
    assert!(
        crate::common::entries(&env.data().join("disks")).is_empty(),
        "nothing left behind"
    );
    let resp = server.post_json("/disks", &json!({"size": 8}));
    let disk: bakery_client::Disk = resp.json().unwrap();
    let resize = |size: serde_json::Value| {
        server
            .post_json(
                &format!("/disks/{}/resize", disk.id),
                &json!({ "size": size }),
            )
            .status()
    };
    assert_eq!(resize(json!(4)), StatusCode::BAD_REQUEST);
    assert_eq!(resize(json!(i64::MAX)), StatusCode::BAD_REQUEST);
    assert_eq!(
        resize(json!(15i64 * 1024 * 1024)),
        StatusCode::INSUFFICIENT_STORAGE
    );
    // Names: long, odd characters.
    for name in ["a".repeat(300), "a b".into(), "a/b".into(), "-x".into()] {
        let resp = server.post_bytes(
            &format!("/bakeforms/{}", urlencode(&name)),
            b"not an image".to_vec(),
        );
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{name:?}");
    }
    let resp = server.get(&format!("/pis/{}", "0".repeat(300)));
    assert!(resp.status() == StatusCode::BAD_REQUEST || resp.status() == StatusCode::NOT_FOUND);
    // A static network goes into cmdline.txt: only addresses and a host name get there.
    for network in [
        json!({"ip": "10.0.0.5 init=/bin/sh", "netmask": "255.255.255.0"}),
        json!({"ip": "10.0.0.5", "netmask": "255.255.255.0", "hostname": "pi\ninit=/bin/sh"}),
        json!({"ip": "10.0.0.5", "netmask": "255.255.255.0", "dns": ["10.0.0.53 quiet"]}),
    ] {
        let (status, _, error) =
            error_of(server.post_json("/fridge", &json!({"bakeformName": OS, "network": network})));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{network}");
        assert!(error.contains("network "), "{error}");
    }
    // The boot path: odd serials and paths register nobody.
    for (serial, file) in [("0000abcdx", "start.elf"), ("0000ABCD", "start.elf")] {
        let resp = server.boot_request(serial, file, None);
        assert!(resp.status().is_client_error(), "{serial}");
    }
    let pis: PiMap = server.get("/pis").json().unwrap();
    assert!(pis.is_empty(), "{pis:?}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_inventory_is_capped_against_a_flood_of_serials() {
    let env = Env::new();
    let server = Server::start_with(&env, &["--max-pis", "3"]);
    for i in 0..10u32 {
        let resp = server.boot_request(&format!("{:08x}", 0x1000 + i), "start4.elf", None);
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let pis: PiMap = server.get("/pis").json().unwrap();
    assert_eq!(pis.len(), 3, "{:?}", pis.keys());
    assert!(server.log_contains("inventory full (--max-pis)"));
    // Only the registered Pis were powered off: no PPI call for made-up serials.
    assert!(eventually(Duration::from_secs(5), || env.ppi_calls().len() >= 3));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.ppi_calls().len(), 3, "{:?}", env.ppi_calls());
    // Known Pis still come through.
    let resp = server.boot_request(&format!("{:08x}", 0x1000), "start4.elf", None);
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.get("/pis").json::<PiMap>().unwrap().len(), 3);
}

#[test]
fn a_pi_gets_only_its_own_boot_files_and_exports() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 3);
    let a: PiInfo = server.bake_ready(true);
    let b: PiInfo = server.bake_ready(true);
    // A's serial directory serves A's cmdline (A's root), B's serves B's.
    let cmd_a = server
        .boot_request(&a.id, "cmdline.txt", Some("10.0.0.41"))
        .text()
        .unwrap();
    let cmd_b = server
        .boot_request(&b.id, "cmdline.txt", Some("10.0.0.42"))
        .text()
        .unwrap();
    assert!(cmd_a.contains(&a.disks[0].location) && !cmd_a.contains(&b.disks[0].location));
    assert!(cmd_b.contains(&b.disks[0].location) && !cmd_b.contains(&a.disks[0].location));
    // The third Pi is not baked: its directory gives nothing, whoever asks.
    let fridge: PiMap = server.get("/fridge").json().unwrap();
    let c = fridge.keys().next().unwrap().clone();
    assert_eq!(
        server
            .boot_request(&c, "start.elf", Some("10.0.0.41"))
            .status(),
        StatusCode::NOT_FOUND
    );
    // No way out of a serial's directory into another's.
    for path in [
        format!("{}/../{}/cmdline.txt", a.id, b.id),
        format!("{}/%2e%2e/{}/cmdline.txt", a.id, b.id),
        format!("{}/..%2f{}%2fcmdline.txt", a.id, b.id),
        format!("{}/%2e%2e%2f{}%2fcmdline.txt", a.id, b.id),
    ] {
        let status = raw_get(&server, &format!("/api/v1/files/{path}"));
        assert!((400..500).contains(&status), "{path}: {status}");
    }
    // Each root is exported only to its own Pi's address; a disk only to its Pi's.
    let disk: bakery_client::Disk = server
        .post_json("/disks", &json!({"size": 8}))
        .json()
        .unwrap();
    let resp = server.post_json(
        &format!("/oven/{}/disks", a.id),
        &json!({"diskId": disk.id}),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    let exports = env.exports();
    let lines: Vec<&str> = exports.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{exports}");
    for line in &lines {
        let (path, client) = line.split_once(' ').unwrap();
        let want = if path == b.disks[0].location {
            "10.0.0.42("
        } else {
            "10.0.0.41("
        };
        assert!(client.starts_with(want), "{line}");
        assert!(!client.contains('*') && !client.contains('/'), "{line}");
    }
}

/// The status of a GET sent byte for byte (HTTP clients normalise `..` away).
fn raw_get(server: &Server, path: &str) -> u16 {
    use std::io::{Read, Write};
    let host = server.base["http://".len()..].split('/').next().unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn pinned_addresses_keep_each_pis_files_and_exports_to_itself() {
    let env = Env::new();
    let server = Server::start_with(&env, &["--pin-pi-addresses"]);
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    for (serial, addr) in [("0000000a", "10.0.0.41"), ("0000000b", "10.0.0.42")] {
        let resp = server.boot_request(serial, "start4.elf", Some(addr));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    assert!(eventually(Duration::from_secs(10), || env
        .ppi_calls()
        .len()
        >= 2));
    let first: PiInfo = server.bake_ready(true);
    server.bake_ready(true);
    let (own, other) = if first.id == "0000000a" {
        ("10.0.0.41", "10.0.0.42")
    } else {
        ("10.0.0.42", "10.0.0.41")
    };
    let root = &first.disks[0].location;
    assert_eq!(
        server
            .boot_request(&first.id, "start4.elf", Some(own))
            .status(),
        StatusCode::OK
    );
    assert!(env.exports().contains(&format!("{root} {own}(")));
    // The other Pi, and a host that is no Pi, get nothing of it; its export stays put.
    for from in [other, "10.0.0.99"] {
        let resp = server.boot_request(&first.id, "cmdline.txt", Some(from));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{from}");
        assert!(env.exports().contains(&format!("{root} {own}(")), "{from}");
        assert!(
            !env.exports().contains(&format!("{root} {from}(")),
            "{from}"
        );
    }
    assert!(server.log_contains("boot request refused (--pin-pi-addresses)"));
    // A Pi's address cannot register made-up serials.
    let resp = server.boot_request("0000000c", "start4.elf", Some(own));
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.get("/pis/0000000c").status(), StatusCode::NOT_FOUND);
    // Once unbaked, a Pi may come back from another address.
    assert_eq!(
        server.delete(&format!("/oven/{}", first.id)).status(),
        StatusCode::OK
    );
    server.boot_request(&first.id, "start4.elf", Some("10.0.0.77"));
    let pi: PiInfo = server.get(&format!("/pis/{}", first.id)).json().unwrap();
    assert_eq!(pi.address.as_deref(), Some("10.0.0.77"));
}

/// The `bakery` CLI against a server with tokens: the exit codes a script relies on (0 ok,
/// 4 unreachable, 5 refused) and a message naming the cause.
#[test]
fn the_cli_exit_codes_for_tokens_and_a_server_that_is_down() {
    let cli = std::path::Path::new(env!("CARGO_BIN_EXE_bakery-server")).with_file_name("bakery");
    if !cli.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no {} under CI: ci/test builds every binary first",
            cli.display()
        );
        eprintln!(
            "\n!!!! SKIPPED bakery CLI token test: no {} (cargo build -p bakery-client) !!!!\n",
            cli.display()
        );
        return;
    }
    let env = Env::new();
    let server = token_server(&env, &[]);
    let run = |token: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(&cli);
        cmd.env_remove("BAKERY_TOKEN")
            .env_remove("BAKERY_URL")
            .args(["--url", &server.base]);
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        let out = cmd.args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    assert_eq!(run(Some(ADMIN), &["pi", "list"]).0, Some(0));
    let (code, err) = run(None, &["pi", "list"]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("missing bearer token"), "{err}");
    let (code, err) = run(Some("not-a-token-we-know-at-all"), &["disk", "list"]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("invalid token"), "{err}");
    // A read-only token reads, and is refused a write with the server's reason.
    assert_eq!(run(Some(READER), &["disk", "list"]).0, Some(0));
    let (code, err) = run(Some(READER), &["disk", "create", "--size", "1"]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("read-only token"), "{err}");
    // Unknown Pi with a good token: not found.
    let (code, err) = run(Some(ADMIN), &["pi", "show", "0badc0de"]);
    assert_eq!(code, Some(3), "{err}");

    // The server gone: unreachable.
    let base = server.base.clone();
    drop(server);
    let out = Command::new(&cli)
        .env_remove("BAKERY_TOKEN")
        .args(["--url", &base, "--token", ADMIN, "pi", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
}
