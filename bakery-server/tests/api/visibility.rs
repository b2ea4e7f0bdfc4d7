//! Operator visibility against the real binary: boot timelines from a pi-sim boot over TFTP
//! and from HTTP `/files`, the event log and its SSE stream, `/metrics`, the OpenAPI document
//! against the router, and the status page in headless Chromium.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use bakery_client::{BootList, BootOutcome, Event, EventList, PiInfo};
use bakery_tftp::{FetchOptions, fetch};
use pi_sim::{BootOptions, Model};
use reqwest::StatusCode;

use crate::common::*;

fn boots(server: &Server, path: &str) -> BootList {
    let resp = server.get(path);
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.json().unwrap()
}

/// The value of the sample `name` (with its labels, exactly as exposed) in a scrape.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn scrape(server: &Server) -> String {
    let resp = server
        .client
        .get(server.base.replace("/api/v1", "/metrics"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    resp.text().unwrap()
}

#[test]
fn a_pi_sim_boot_appears_in_the_timeline_with_every_file_and_refusals_are_recorded() {
    let env = Env::new();
    let mut server =
        Server::start_replacing(&env, &["--tftp-listen"], &["--tftp-listen", "127.0.0.1:0"]);
    let tftp = server.tftp_addr();
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    let boot_dir = env.data().join("bakeforms").join(OS).join("boot");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let serial = "1a2b3c4d";
    let opts = BootOptions::default();

    // Unknown: the first boot fails (not found), the Pi lands in the fridge with a timeline.
    let err = runtime
        .block_on(pi_sim::boot(tftp, serial, Model::Pi4, &boot_dir, &opts))
        .unwrap_err();
    assert!(matches!(err, pi_sim::SimError::Missing { .. }), "{err}");
    // The TFTP server reports a transfer just after its last packet: give it a moment.
    let mut fridge = BootList::default();
    assert!(
        eventually(Duration::from_secs(5), || {
            fridge = boots(&server, &format!("/pis/{serial}/boots"));
            !fridge.boots.is_empty()
        }),
        "{:?}",
        server.log.lock().unwrap()
    );
    assert_eq!(fridge.boots.len(), 1, "{fridge:?}");
    assert_eq!(fridge.boots[0].requests[0].outcome, BootOutcome::NotFound);
    assert_eq!(fridge.boots[0].summary.files, 0);
    // Not in the oven: the oven route says so.
    assert_eq!(
        server.get(&format!("/oven/{serial}/boots")).status(),
        StatusCode::NOT_FOUND
    );

    let pi = server.bake_ready(true);
    assert_eq!(pi.id, serial);
    let report = runtime
        .block_on(pi_sim::boot(tftp, serial, Model::Pi4, &boot_dir, &opts))
        .unwrap();
    let sent_by_sim: BTreeSet<String> = report
        .files
        .iter()
        .filter(|f| f.found)
        .map(|f| f.path.trim_start_matches('/').to_owned())
        .collect();
    assert!(sent_by_sim.len() >= 7, "{report:?}");

    let mut list = BootList::default();
    assert!(
        eventually(Duration::from_secs(5), || {
            list = boots(&server, &format!("/oven/{serial}/boots"));
            list.boots.len() == 2 && list.boots[0].summary.files as usize >= sent_by_sim.len()
        }),
        "{list:?}"
    );
    // The failed boot from the fridge is kept apart, older.
    assert_eq!(list.boots[1], fridge.boots[0]);
    let newest = &list.boots[0];
    let sent: BTreeSet<String> = newest
        .requests
        .iter()
        .filter(|r| r.outcome == BootOutcome::Sent)
        .map(|r| r.file.clone())
        .collect();
    for file in &sent_by_sim {
        let full = if file.contains('/') {
            file.clone()
        } else {
            format!("{serial}/{file}")
        };
        assert!(
            sent.contains(&full) || sent.contains(file),
            "{file} missing from {sent:?}"
        );
    }
    assert!(
        newest.summary.files as usize >= sent_by_sim.len(),
        "{:?}",
        newest.summary
    );
    assert_eq!(newest.summary.bytes, report.bytes(), "{:?}", newest.summary);
    assert_eq!(newest.summary.failed, 0, "{newest:?}");
    // The firmware's size queries before each fetch are folded into the fetch.
    assert!(newest.requests.iter().any(|r| r.size_probed), "{newest:?}");
    assert!(newest.requests.iter().all(|r| r.via == "tftp"));
    // Files the Pi probes for but the bakeform lacks are "not found", not failures.
    assert!(
        newest
            .requests
            .iter()
            .any(|r| r.outcome == BootOutcome::NotFound)
    );

    // A refused request (a path out of the boot directory) is recorded as refused.
    let fetch_opts = FetchOptions {
        tsize: true,
        ..FetchOptions::default()
    };
    let err = runtime
        .block_on(fetch(
            tftp,
            &format!("{serial}/../../bakery.db"),
            &fetch_opts,
        ))
        .unwrap_err();
    assert!(!err.is_not_found(), "{err}");
    // And over HTTP (what HookTFTP forwards): a file sent, one refused.
    let resp = server.boot_request(serial, "config.txt", None);
    assert_eq!(resp.status(), StatusCode::OK);
    let config_len = resp.bytes().unwrap().len() as u64;
    let resp = server.boot_request(serial, "a%5Cb", None);
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let mut latest = None;
    assert!(eventually(Duration::from_secs(5), || {
        let list = boots(&server, &format!("/pis/{serial}/boots"));
        let done = list.boots[0].requests.len() >= newest.requests.len() + 3;
        latest = Some(list);
        done
    }));
    let latest = latest.unwrap();
    let tail: Vec<_> = latest.boots[0]
        .requests
        .iter()
        .rev()
        .take(3)
        .rev()
        .collect();
    assert_eq!(tail[0].file, format!("{serial}/../../bakery.db"));
    assert_eq!(tail[0].outcome, BootOutcome::Refused);
    assert_eq!(
        (tail[1].via.as_str(), tail[1].outcome),
        ("http", BootOutcome::Sent)
    );
    assert_eq!(tail[1].bytes, config_len);
    assert_eq!(tail[2].file, format!("{serial}/a\\b"));
    assert_eq!(tail[2].outcome, BootOutcome::Refused);
    assert_eq!(latest.boots[0].summary.failed, 2);

    // The Pi's info carries the summary of its latest boot.
    let info: PiInfo = server.get(&format!("/pis/{serial}")).json().unwrap();
    let last = info.last_boot.expect("lastBoot");
    assert_eq!(last, latest.boots[0].summary);
    assert!(
        last.time_to_last_file_ms >= 0 && last.finished >= last.started,
        "{last:?}"
    );

    // Metrics saw the transfers and the kernel's delivery.
    let text = scrape(&server);
    let sent_tftp = metric(&text, "bakery_tftp_transfers_total{outcome=\"sent\"}").unwrap();
    assert!(sent_tftp >= sent_by_sim.len() as f64, "{text}");
    assert!(metric(&text, "bakery_tftp_transfers_total{outcome=\"refused\"}").unwrap() >= 1.0);
    assert!(metric(&text, "bakery_tftp_transfers_total{outcome=\"probe\"}").unwrap() >= 1.0);
    assert!(metric(&text, "bakery_tftp_bytes_total").unwrap() >= report.bytes() as f64);
    assert!(
        metric(&text, "bakery_time_to_boot_seconds_count").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "bakery_http_boot_files_total{outcome=\"refused\"}"),
        Some(1.0)
    );

    // Timelines survive a restart (written behind to the database).
    std::thread::sleep(Duration::from_millis(300));
    server.stop();
    let server = Server::start(&env);
    let again = boots(&server, &format!("/pis/{serial}/boots"));
    assert_eq!(again, latest);
}

/// Reads an SSE stream in a thread; each event's JSON arrives on the channel.
fn follow(server: &Server, query: &str, last_event_id: Option<i64>) -> mpsc::Receiver<Event> {
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap();
    let mut req = client.get(server.url(&format!("/events/stream{query}")));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut id = None;
        for line in BufReader::new(resp).lines().map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse::<i64>().ok();
            } else if let Some(data) = line.strip_prefix("data:") {
                let event: Event = serde_json::from_str(data.trim()).unwrap();
                assert_eq!(Some(event.id), id, "the SSE id is the event id");
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn next_kind(rx: &mpsc::Receiver<Event>, kind: &str) -> Event {
    loop {
        let e = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no {kind} event"));
        if e.kind == kind {
            return e;
        }
    }
}

#[test]
fn state_changes_are_events_listed_by_id_and_streamed_live() {
    let env = Env::new();
    let (mut server, pis) = ready_server(&env, 2);
    let all: EventList = server.get("/events").json().unwrap();
    let kinds: Vec<&str> = all.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        &kinds[..2],
        ["bakeformImporting", "bakeformImported"],
        "{kinds:?}"
    );
    let registered: Vec<&str> = all
        .events
        .iter()
        .filter(|e| e.kind == "registered")
        .filter_map(|e| e.pi.as_deref())
        .collect();
    assert_eq!(
        registered,
        pis.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        all.events.windows(2).all(|w| w[0].id < w[1].id),
        "ids increase"
    );
    assert_eq!(all.last_id, all.events.last().unwrap().id);

    // Live: a follower from now on, and one replaying from the start.
    let live = follow(&server, "", None);
    let replay = follow(&server, "?since=0", None);
    assert_eq!(
        replay.recv_timeout(Duration::from_secs(5)).unwrap().id,
        all.events[0].id
    );

    let pi = server.bake_ready(true);
    let started = next_kind(&live, "bakeStarted");
    assert_eq!(started.pi.as_deref(), Some(pi.id.as_str()));
    assert_eq!(started.bakeform.as_deref(), Some(OS));
    let on = next_kind(&live, "powerOn");
    let finished = next_kind(&live, "bakeFinished");
    assert!(started.id < on.id && on.id < finished.id);
    assert_eq!(next_kind(&replay, "bakeFinished"), finished);

    let disk: bakery_client::Disk = server
        .post_json("/disks", &serde_json::json!({"size": 8}))
        .json()
        .unwrap();
    assert_eq!(
        server
            .post_json(
                &format!("/oven/{}/disks", pi.id),
                &serde_json::json!({"diskId": disk.id})
            )
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        next_kind(&live, "diskCreated").disk.as_deref(),
        Some(disk.id.as_str())
    );
    let attached = next_kind(&live, "diskAttached");
    assert_eq!(
        (attached.pi.as_deref(), attached.disk.as_deref()),
        (Some(pi.id.as_str()), Some(disk.id.as_str()))
    );
    assert_eq!(
        server.delete(&format!("/oven/{}", pi.id)).status(),
        StatusCode::OK
    );
    next_kind(&live, "unbakeStarted");
    next_kind(&live, "unbaked");

    // A failed bakeform import is an event with the reason.
    let resp = server.post_bytes("/bakeforms/broken", b"not an image".to_vec());
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let failed = next_kind(&live, "bakeformFailed");
    assert_eq!(failed.bakeform.as_deref(), Some("broken"));
    assert!(failed.message.unwrap().contains("broken"));

    // Resuming: Last-Event-ID wins over since, and pages follow `limit`.
    let page: EventList = server
        .get(&format!("/events?since={}&limit=2", started.id))
        .json()
        .unwrap();
    assert_eq!(page.events.len(), 2);
    assert!(page.events[0].id > started.id && page.events[0].id <= on.id);
    let resumed = follow(&server, "?since=0", Some(started.id));
    assert_eq!(
        resumed.recv_timeout(Duration::from_secs(5)).unwrap(),
        page.events[0]
    );
    assert!(page.last_id > page.events[1].id);
    let resp = server.get("/events?since=abc");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Open streams do not hold up a graceful stop: they end, and the server exits.
    let started = std::time::Instant::now();
    server.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        live.recv_timeout(Duration::from_secs(5)).is_err(),
        "the stream ended"
    );
}

#[test]
fn metrics_are_exposed_and_change_with_bakes_and_requests() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 2);
    // The two new Pis were powered off through the PPI (counted once each call returned).
    let mut before = String::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            before = scrape(&server);
            metric(&before, "bakery_ppi_calls_total{action=\"poweroff\"}") == Some(2.0)
        }),
        "{before}"
    );
    assert_eq!(
        metric(&before, "bakery_pis{state=\"fridge\"}"),
        Some(2.0),
        "{before}"
    );
    assert_eq!(metric(&before, "bakery_pis{state=\"baked\"}"), Some(0.0));
    assert_eq!(metric(&before, "bakery_bakes_total"), Some(0.0));
    for family in [
        "# TYPE bakery_bake_duration_seconds histogram",
        "# TYPE bakery_time_to_boot_seconds histogram",
        "# TYPE bakery_tftp_transfers counter",
        "# TYPE bakery_tftp_bytes counter",
        "# TYPE bakery_tftp_errors counter",
        "# TYPE bakery_tftp_retransmissions counter",
        "# TYPE bakery_ppi_failures counter",
        "# TYPE bakery_http_requests counter",
    ] {
        assert!(before.contains(family), "{family} in {before}");
    }

    server.bake_ready(true);
    env.set_ppi_mode("fail");
    let failing = server.bake(true);
    let resp = server.wait_baked(&failing.id);
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    env.set_ppi_mode("ok");
    assert_eq!(server.get("/oven/00000099").status(), StatusCode::NOT_FOUND);

    let after = scrape(&server);
    assert_eq!(
        metric(&after, "bakery_pis{state=\"baked\"}"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(metric(&after, "bakery_pis{state=\"fridge\"}"), Some(1.0));
    assert_eq!(metric(&after, "bakery_bakes_total"), Some(2.0));
    assert_eq!(metric(&after, "bakery_bake_failures_total"), Some(1.0));
    assert_eq!(
        metric(&after, "bakery_bake_duration_seconds_count"),
        Some(1.0)
    );
    assert!(
        metric(&after, "bakery_ppi_failures_total{action=\"poweroff\"}").unwrap_or(0.0)
            + metric(&after, "bakery_ppi_failures_total{action=\"poweron\"}").unwrap_or(0.0)
            >= 1.0,
        "{after}"
    );
    assert!(
        metric(
            &after,
            "bakery_http_requests_total{method=\"POST\",route=\"/api/v1/fridge\",status=\"202\"}"
        ) == Some(2.0),
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "bakery_http_requests_total{method=\"GET\",route=\"/api/v1/oven/{pi_id}\",status=\"404\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        after.contains("bakery_events_total{kind=\"bakeFailed\"} 1"),
        "{after}"
    );
}

#[test]
fn requests_refused_by_the_token_check_are_counted_by_route_and_status() {
    const ADMIN: &str = "admin-token-for-the-metrics-test";
    let env = Env::new();
    let tokens = env.path("tokens");
    std::fs::write(&tokens, format!("{ADMIN}\n")).unwrap();
    let server = Server::start_with(
        &env,
        &[
            "--token-file",
            tokens.to_str().unwrap(),
            "--boot-files-require-token",
        ],
    );
    let c = &server.client;
    let bad = c
        .get(server.url("/oven/00000001"))
        .bearer_auth("not-a-token-we-know-at-all")
        .send()
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let missing = c.post(server.url("/fridge")).send().unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    // No route: one fixed label, never the raw path (the label set stays bounded).
    let unrouted = c.get(server.url("/no/such/route/x1y2z3")).send().unwrap();
    assert_eq!(unrouted.status(), StatusCode::UNAUTHORIZED);
    // A boot request without the token the server asks for: counted, but no boot record.
    let boot = server.boot_request("0000abcd", "start4.elf", None);
    assert_eq!(boot.status(), StatusCode::UNAUTHORIZED);
    let resp = c
        .get(server.base.replace("/api/v1", "/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().unwrap();
    assert_eq!(
        metric(
            &text,
            "bakery_http_requests_total{method=\"GET\",route=\"/api/v1/oven/{pi_id}\",status=\"401\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "bakery_http_requests_total{method=\"POST\",route=\"/api/v1/fridge\",status=\"401\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "bakery_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"401\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("x1y2z3"), "{text}");
    assert_eq!(
        metric(
            &text,
            "bakery_http_requests_total{method=\"GET\",route=\"/api/v1/files/{pi_id}/{*path}\",status=\"401\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("bakery_http_boot_files_total{"), "{text}");
    let boots = c
        .get(server.url("/pis/0000abcd/boots"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(boots.status(), StatusCode::NOT_FOUND, "nobody registered");
    assert!(
        metric(
            &text,
            "bakery_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/oven/{pi_id}\"}"
        )
        .is_some(),
        "{text}"
    );
}

/// Every (method, path) the router serves, read from its `Debug` form: axum prints each
/// route id with its path (`RouteId(6): "/api/v1/fridge"`) and with its method router
/// (`RouteId(6): MethodRouter(MethodRouter { get: Route, head: None, ... })`).
fn router_routes(router: &axum::Router) -> BTreeSet<(String, String)> {
    let text = format!("{router:?}");
    // Only the path router: the fallback router numbers its own routes.
    let text = text
        .split("fallback_router:")
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut paths = std::collections::HashMap::new();
    let mut methods: std::collections::HashMap<String, Vec<String>> = Default::default();
    for chunk in text.split("RouteId(").skip(1) {
        let Some((id, rest)) = chunk.split_once("): ") else {
            continue;
        };
        if let Some(path) = rest.strip_prefix('"') {
            paths.insert(id.to_owned(), path.split('"').next().unwrap().to_owned());
        } else if rest.starts_with("MethodRouter(") {
            for m in ["get", "post", "put", "delete", "patch"] {
                if rest.contains(&format!(" {m}: ")) && !rest.contains(&format!(" {m}: None")) {
                    methods.entry(id.to_owned()).or_default().push(m.to_owned());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    // The router's catch-all fallback is not a route.
    paths.retain(|_, path: &mut String| !path.contains("__private__axum_fallback"));
    for (id, path) in paths {
        for m in methods.get(&id).into_iter().flatten() {
            out.insert((m.clone(), path.clone()));
        }
    }
    out
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_the_router_serves() {
    use bakery_server::http::openapi::{OPERATIONS, openapi_path};
    let env = Env::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let served = runtime.block_on(async {
        let mut config = bakery_server::Config::new(env.data(), "10.0.0.2".into());
        config.settings.exports_file = env.path("bakery.exports");
        config.settings.exportfs_cmd = format!("{} -ra", env.path("exportfs.sh").display());
        let app = bakery_server::App::new(config).await.unwrap();
        router_routes(&bakery_server::http::router(app.bakery().clone(), None))
    });
    assert!(
        served.len() > 20,
        "the router walk found too little: {served:?}"
    );
    assert!(served.contains(&("get".to_owned(), "/api/v1/files/{pi_id}/{*path}".to_owned())));
    let documented: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|o| (o.method.to_owned(), o.path.to_owned()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in openapi.rs OPERATIONS: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in OPERATIONS but not served: {unserved:?}"
    );

    // The document the binary serves has every one of them.
    let server = Server::start(&env);
    let doc: serde_json::Value = server.get("/openapi.json").json().unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for (method, path) in &documented {
        let op = &doc["paths"][openapi_path(path)][method];
        assert!(
            op.is_object(),
            "{method} {path} missing from the served document"
        );
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
    }
    let served_doc: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(served_doc, documented.len());

    // What the server sends fits the schemas: every key of a real PiInfo is a property.
    assert_eq!(
        server.boot_request("1a2b3c4d", "start4.elf", None).status(),
        StatusCode::NOT_FOUND
    );
    let pi: serde_json::Value = server.get("/pis/1a2b3c4d").json().unwrap();
    let schema = &doc["components"]["schemas"]["PiInfo"]["properties"];
    for key in pi.as_object().unwrap().keys() {
        assert!(
            schema.get(key).is_some(),
            "PiInfo.{key} is not in the schema: {schema}"
        );
    }
    assert!(pi.get("lastBoot").is_some(), "{pi}");
}

#[test]
fn the_cli_lists_and_follows_events() {
    let cli = std::path::Path::new(env!("CARGO_BIN_EXE_bakery-server")).with_file_name("bakery");
    if !cli.exists() {
        eprintln!(
            "\n!!!! SKIPPED bakery events CLI test: no {} (cargo build -p bakery-client) !!!!\n",
            cli.display()
        );
        return;
    }
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    // Runs the CLI against the server; its standard output, after checking it succeeded.
    let run = |args: &[&str]| -> String {
        let out = std::process::Command::new(&cli)
            .args(["--url", &server.base])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&["events", "--since", "0"]);
    assert!(
        text.contains("bakeformImported") && text.contains("bakeform=raspios"),
        "{text}"
    );
    assert!(
        text.contains("registered") && text.contains("pi=00000001"),
        "{text}"
    );

    let mut follow = std::process::Command::new(&cli)
        .args([
            "--url",
            &server.base,
            "-o",
            "json",
            "events",
            "--last",
            "0",
            "--follow",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str::<Event>(&line).unwrap());
        }
    });
    // Give the follower a moment to connect, then bake: its events arrive as JSON lines.
    std::thread::sleep(Duration::from_millis(500));
    let pi = server.bake_ready(true);
    let finished = next_kind(&rx, "bakeFinished");
    assert_eq!(finished.pi.as_deref(), Some(pi.id.as_str()));
    let _ = follow.kill();
    let _ = follow.wait();

    // `bakery pi boots` shows the timeline. The body is read to its end: a reply dropped
    // half-read is recorded as aborted, which is what the timeline must then say.
    let reply = server.boot_request(&pi.id, "config.txt", None);
    assert_eq!(reply.status(), StatusCode::OK);
    assert!(!reply.bytes().unwrap().is_empty());
    let text = run(&["pi", "boots", &pi.id]);
    assert!(text.starts_with("boot started "), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("config.txt"))
        .unwrap_or_default();
    assert!(line.contains("http") && line.contains("sent"), "{text}");
}

#[test]
fn a_poke_after_a_finished_boot_does_not_stretch_that_boot() {
    let env = Env::new();
    let server =
        Server::start_replacing(&env, &["--tftp-listen"], &["--tftp-listen", "127.0.0.1:0"]);
    let tftp = server.tftp_addr();
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    server.add_pis(1);
    let pi = server.bake_ready(true);
    let boot_dir = env.data().join("bakeforms").join(OS).join("boot");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime
        .block_on(pi_sim::boot(
            tftp,
            &pi.id,
            Model::Pi4,
            &boot_dir,
            &BootOptions::default(),
        ))
        .unwrap();
    let path = format!("/oven/{}/boots", pi.id);
    let mut list = BootList::default();
    assert!(eventually(Duration::from_secs(5), || {
        list = boots(&server, &path);
        list.boots
            .first()
            .is_some_and(|b| b.requests.iter().any(|r| r.file.ends_with("kernel8.img")))
    }));
    let booted = list.boots[0].summary.clone();
    // What the README suggests trying next: fetch the Pi's cmdline.txt, 3 s later.
    std::thread::sleep(Duration::from_secs(3));
    let resp = server.get(&format!("/files/{}/cmdline.txt", pi.id));
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(5), || {
            list = boots(&server, &path);
            list.boots.len() >= 2 && list.boots[1].summary == booted
        }),
        "{list:#?}"
    );
    // The boot keeps its own short duration; the poke is a one-request boot of its own.
    let duration = booted.finished - booted.started;
    assert!(duration < 2_000, "boot took {duration} ms: {report:?}");
    assert_eq!(list.boots[0].requests.len(), 1, "{:?}", list.boots[0]);
    assert!(list.boots[0].requests[0].file.ends_with("cmdline.txt"));
}
