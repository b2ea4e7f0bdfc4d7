//! Load: 200 concurrent API clients (reads, disk create/metadata/delete, Pi metadata, bakes
//! and unbakes, long-polls) plus a boot storm of 50 simulated Pis over TFTP (every byte
//! checked by pi-sim), for a bounded time. Checks: no 5xx, only the 4xx the contract allows
//! for the races clients lose, every request answered within a bound (no deadlock), and the
//! server's resident memory bounded.
//!
//! `BAKERY_LOAD_SECS` (default 10) sets how long the load runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bakery_client::{PiInfo, PiMap, PiState};
use pi_sim::{BootOptions, Model};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Env, OS, Server};

const CLIENTS: usize = 200;
const STORM_PIS: usize = 50;
/// More than this for one answer counts as a hang.
const ANSWER_BOUND: Duration = Duration::from_secs(20);

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What the clients saw: count per (request kind, status); failures with their reason.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<(&'static str, u16), u64>,
    failures: Vec<String>,
    slowest: Duration,
    slowest_kind: &'static str,
    answers: u64,
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The 4xx a request kind may meet when clients race each other.
fn allowed(kind: &str, status: u16) -> bool {
    match status {
        200..=202 => true,
        // No free Pi left; a Pi baked by this client was taken back by a failed bake.
        404 => matches!(kind, "bake" | "unbake" | "wait"),
        // Unbake of a Pi still preparing.
        403 => kind == "unbake",
        // A bake that failed (long-poll).
        409 => kind == "wait",
        _ => false,
    }
}

async fn client_loop(
    id: usize,
    base: String,
    baked: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let http = reqwest::Client::builder()
        .timeout(ANSWER_BOUND)
        .build()
        .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) * 0x1000_0001));
    let mut tally = Tally::default();
    let mut mine: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let pi = &baked[rng.below(baked.len() as u64) as usize];
        let (kind, req) = match rng.below(20) {
            0..=11 => {
                let path = match rng.below(6) {
                    0 => "/pis".to_owned(),
                    1 => "/oven".to_owned(),
                    2 => "/fridge".to_owned(),
                    3 => "/disks".to_owned(),
                    4 => "/bakeforms".to_owned(),
                    _ => format!("/pis/{pi}"),
                };
                ("read", http.get(format!("{base}{path}")))
            }
            12..=14 => (
                "disk",
                http.post(format!("{base}/disks")).json(&json!({"size": 4})),
            ),
            15 | 16 => (
                "metadata",
                http.put(format!("{base}/oven/{pi}/metadata"))
                    .json(&json!({"client": id})),
            ),
            17 => (
                "wait",
                http.get(format!("{base}/oven/{pi}?wait=baked&timeout=1")),
            ),
            18 if mine.len() < 2 => (
                "bake",
                http.post(format!("{base}/fridge"))
                    .json(&json!({"bakeformName": OS, "powerOn": false})),
            ),
            _ => match mine.pop() {
                Some(own) => ("unbake", http.delete(format!("{base}/oven/{own}"))),
                None => ("read", http.get(format!("{base}/oven"))),
            },
        };
        let started = Instant::now();
        let reply = req.send().await;
        let took = started.elapsed();
        if took > tally.slowest {
            tally.slowest = took;
            tally.slowest_kind = kind;
        }
        let resp = match reply {
            Ok(resp) => resp,
            Err(e) => {
                tally
                    .failures
                    .push(format!("{kind}: no answer after {took:?}: {e}"));
                continue;
            }
        };
        let status = resp.status().as_u16();
        tally.answers += 1;
        *tally.statuses.entry((kind, status)).or_insert(0) += 1;
        if !allowed(kind, status) {
            let body = resp.text().await.unwrap_or_default();
            tally.failures.push(format!("{kind}: {status} {body}"));
            continue;
        }
        match (kind, status) {
            ("bake", 202) => {
                if let Ok(pi) = resp.json::<PiInfo>().await {
                    mine.push(pi.id);
                }
            }
            ("disk", 201) => {
                // Half the disks are deleted again, so the inventory keeps moving.
                if let Ok(disk) = resp.json::<bakery_client::Disk>().await
                    && rng.below(2) == 0
                {
                    let r = http
                        .delete(format!("{base}/disks/{}", disk.id))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == StatusCode::OK => {
                            *tally.statuses.entry(("delete", 200)).or_insert(0) += 1;
                        }
                        Ok(r) => tally.failures.push(format!("delete: {}", r.status())),
                        Err(e) => tally.failures.push(format!("delete: {e}")),
                    }
                }
            }
            ("unbake", 403) => mine.push(req_id_of_unbake(&resp)),
            _ => {}
        }
    }
    tally
}

/// The Pi id of an unbake reply's URL (`.../oven/<id>`), to retry later.
fn req_id_of_unbake(resp: &reqwest::Response) -> String {
    resp.url()
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn two_hundred_clients_and_a_fifty_pi_boot_storm() {
    let secs: u64 = std::env::var("BAKERY_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let env = Env::new();
    let server =
        Server::start_replacing(&env, &["--tftp-listen"], &["--tftp-listen", "127.0.0.1:0"]);
    let tftp = server.tftp_addr();
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    // 50 Pis baked for the storm (serials 1..=50), then 20 more in the fridge for the clients.
    server.add_pis(STORM_PIS as u32);
    let mut baked = Vec::new();
    for _ in 0..STORM_PIS {
        baked.push(server.bake(false).id);
    }
    for id in &baked {
        assert_eq!(server.wait_baked(id).status(), StatusCode::OK);
    }
    for i in 0..20u32 {
        let resp = server.boot_request(&format!("{:08x}", 0x1000 + i), "start4.elf", None);
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let boot_dir = env.data().join("bakeforms").join(OS).join("boot");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // One storm before measuring, so the baseline includes warmed caches and pools.
    let warm = runtime.block_on(pi_sim::boot_many(
        tftp,
        STORM_PIS,
        1,
        Model::Pi4,
        &boot_dir,
        &BootOptions::default(),
    ));
    assert!(warm.iter().all(Result::is_ok), "{warm:?}");
    let rss_before = rss_kib(server.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let baked = Arc::new(baked);
    let started = Instant::now();
    let (tallies, storms) = runtime.block_on(async {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(client_loop(
                    id,
                    server.base.clone(),
                    baked.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let storm = {
            let stop = stop.clone();
            let boot_dir = boot_dir.clone();
            tokio::spawn(async move {
                let mut storms = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let results = pi_sim::boot_many(
                        tftp,
                        STORM_PIS,
                        1,
                        Model::Pi4,
                        &boot_dir,
                        // Patient Pis: the test is about the server answering, on a busy CI box.
                        &BootOptions {
                            retries: 10,
                            ..BootOptions::default()
                        },
                    )
                    .await;
                    storms.push((t.elapsed(), results));
                }
                storms
            })
        };
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut tallies = Vec::new();
        for c in clients {
            tallies.push(
                tokio::time::timeout(ANSWER_BOUND * 2, c)
                    .await
                    .expect("a client never finished: deadlock?")
                    .unwrap(),
            );
        }
        let storms = tokio::time::timeout(Duration::from_secs(120), storm)
            .await
            .expect("the boot storm never finished")
            .unwrap();
        (tallies, storms)
    });
    let elapsed = started.elapsed();
    let rss_after = rss_kib(server.pid());

    let mut statuses: BTreeMap<(&str, u16), u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut slowest_kind = "";
    let mut answers = 0;
    for t in tallies {
        for (k, v) in t.statuses {
            *statuses.entry(k).or_insert(0) += v;
        }
        failures.extend(t.failures);
        if t.slowest > slowest {
            slowest = t.slowest;
            slowest_kind = t.slowest_kind;
        }
        answers += t.answers;
    }
    let boots: usize = storms.iter().map(|(_, r)| r.len()).sum();
    let boot_failures: Vec<String> = storms
        .iter()
        .flat_map(|(_, r)| {
            r.iter()
                .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        })
        .collect();
    let storm_times: Vec<Duration> = storms.iter().map(|(t, _)| *t).collect();
    println!(
        "load: {answers} API answers in {elapsed:?} ({:.0}/s) from {CLIENTS} clients, slowest {slowest:?} ({slowest_kind})",
        answers as f64 / elapsed.as_secs_f64()
    );
    println!("load: statuses {statuses:?}");
    println!(
        "load: {} storms of {STORM_PIS} Pis ({boots} boots, {} failed), storm times {storm_times:?}",
        storms.len(),
        boot_failures.len()
    );
    println!(
        "load: server RSS {} MiB before, {} MiB after",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    assert!(
        !storms.is_empty() && boot_failures.is_empty(),
        "{boot_failures:?}; the server's errors: {:?}",
        server.log_lines("ERROR", 10)
    );
    assert!(slowest < ANSWER_BOUND, "slowest answer {slowest:?}");
    assert!(
        rss_after < rss_before + 256 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Everything still consistent: the storm's Pis baked, no Pi stuck.
    let pis: PiMap = server.get("/pis").json().unwrap();
    for id in baked.iter() {
        assert_eq!(pis[id].state, Some(PiState::Baked), "{id}");
    }
    assert!(
        server.get("/pis").status() == StatusCode::OK && !server.log_contains("panicked"),
        "server healthy after the load"
    );
}
