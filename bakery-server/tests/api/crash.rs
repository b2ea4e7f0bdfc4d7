//! Crash safety, proven by trial: SIGKILL the real server at a random moment during a bake,
//! an unbake, a bakeform import, a disk creation or an attach, restart it, and check the
//! invariants every time: every Pi fridge or baked, baked Pis have their root, nothing left in
//! `tmp/` once the warm pool (on, as by default) has refilled, no directory in `disks/` or `bakeforms/` the inventory does not know, warm pools in
//! `pool/` only of ready bakeforms and complete, no bakeform half visible, and a persistent
//! disk's bytes intact.
//!
//! `BAKERY_CRASH_TRIALS` (default 10; 50 for the full run) sets the number of kills,
//! `BAKERY_CRASH_SEED` replays a run (the seed is printed).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use bakery_client::{BakeformMap, BakeformState, Disk, DiskList, PiMap, PiState};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{
    Env, OS, Rng, Server, entries, eventually, kill_and_restart_with, sample_image,
    time_bake_and_unbake, trials_and_seed,
};

const PATTERN_MIB: usize = 8;

/// The server runs with the warm pool on, as it does by default outside the tests: kills land
/// in the filler's clones too.
const POOL: &[&str] = &["--warm-pool", "1"];

fn pattern_byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

/// Fills a persistent disk's image with a known pattern (as a Pi would have written it).
fn write_pattern(image: &Path) {
    let bytes: Vec<u8> = (0..PATTERN_MIB << 20).map(pattern_byte).collect();
    std::fs::write(image, bytes).unwrap();
}

fn pattern_intact(image: &Path) -> Result<(), String> {
    let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    if bytes.len() != PATTERN_MIB << 20 {
        return Err(format!("{}: {} bytes", image.display(), bytes.len()));
    }
    match bytes
        .iter()
        .enumerate()
        .find(|(i, b)| **b != pattern_byte(*i))
    {
        Some((i, _)) => Err(format!("{}: byte {i} changed", image.display())),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Bake,
    Unbake,
    Import,
    CreateDisk,
    Attach,
}

/// Starts `op` in the background (its outcome does not matter: the server is killed).
fn start_op(server: &Server, op: Op, pattern: &str, n: u64) -> std::thread::JoinHandle<()> {
    let base = server.base.clone();
    let pis: PiMap = server.get("/pis").json().unwrap();
    let baked: Vec<String> = pis
        .values()
        .filter(|p| p.state == Some(PiState::Baked))
        .map(|p| p.id.clone())
        .collect();
    let pattern = pattern.to_owned();
    std::thread::spawn(move || {
        let c = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let url = |p: &str| format!("{base}{p}");
        let _ = match op {
            Op::Bake => c
                .post(url("/fridge"))
                .json(&json!({"bakeformName": OS}))
                .send(),
            Op::Unbake => match baked.first() {
                Some(pi) => c.delete(url(&format!("/oven/{pi}"))).send(),
                None => return,
            },
            Op::Import => c
                .post(url(&format!("/bakeforms/crash{n}")))
                .header("Content-Type", bakery_client::RAW_IMAGE_CONTENT_TYPE)
                .body(std::fs::read(sample_image()).unwrap())
                .send(),
            Op::CreateDisk => c.post(url("/disks")).json(&json!({"size": 4})).send(),
            Op::Attach => match baked.first() {
                Some(pi) => c
                    .post(url(&format!("/oven/{pi}/disks")))
                    .json(&json!({ "diskId": pattern }))
                    .send(),
                None => return,
            },
        };
    })
}

/// Every invariant a restart must restore; `Err` names the first one broken.
fn check(env: &Env, server: &Server, pattern: &Disk) -> Result<(), String> {
    let pis: PiMap = server.get("/pis").json().unwrap();
    let mut known_disks = HashSet::new();
    for pi in pis.values() {
        match pi.state {
            Some(PiState::Fridge) => {
                if !pi.disks.is_empty() {
                    return Err(format!("pi {} in the fridge with disks", pi.id));
                }
            }
            Some(PiState::Baked) => {
                let root = pi
                    .disks
                    .first()
                    .ok_or(format!("baked pi {} without root", pi.id))?;
                if !Path::new(&root.location).join("etc/hostname").is_file() {
                    return Err(format!(
                        "baked pi {} root {} incomplete",
                        pi.id, root.location
                    ));
                }
            }
            other => return Err(format!("pi {} in state {other:?} after restart", pi.id)),
        }
        known_disks.extend(pi.disks.iter().map(|d| d.id.clone()));
    }
    let disks: DiskList = server.get("/disks").json().unwrap();
    for disk in disks.disks.values() {
        known_disks.insert(disk.id.clone());
        if !Path::new(&disk.location).is_dir() {
            return Err(format!("disk {} without its directory", disk.id));
        }
        if disk.size > 0 {
            let len = std::fs::metadata(Path::new(&disk.location).join("disk.img"))
                .map_err(|e| format!("disk {}: {e}", disk.id))?
                .len();
            if len != (disk.size as u64) << 20 {
                return Err(format!("disk {} image is {len} bytes", disk.id));
            }
        }
    }
    for name in entries(&env.data().join("disks")) {
        if !known_disks.contains(&name) {
            return Err(format!("orphan disks/{name}"));
        }
    }
    // Start-up repair empties tmp/; the warm pool then clones its refills there (`pool-*`)
    // and renames each into pool/ when complete, so tmp/ must drain once the pool is full.
    let tmp_dir = env.data().join("tmp");
    let stray: Vec<String> = entries(&tmp_dir)
        .into_iter()
        .filter(|n| !n.starts_with("pool-"))
        .collect();
    if !stray.is_empty() {
        return Err(format!("tmp/ holds more than pool refills: {stray:?}"));
    }
    if !eventually(Duration::from_secs(20), || entries(&tmp_dir).is_empty()) {
        return Err(format!(
            "tmp/ not empty after the pool refilled: {:?}",
            entries(&tmp_dir)
        ));
    }
    let bakeforms: BakeformMap = server.get("/bakeforms").json().unwrap();
    for b in bakeforms.values() {
        // An interrupted import is kept as a failed row saying so, with nothing on disk.
        let interrupted = b.state == Some(BakeformState::Failed)
            && b.location.is_empty()
            && b.error
                .as_deref()
                .is_some_and(|e| e.ends_with("the server stopped during the import"));
        if interrupted {
            if Path::new(&env.data().join("bakeforms").join(&b.name)).exists() {
                return Err(format!("failed bakeform {} left files", b.name));
            }
            continue;
        }
        if b.state.is_some_and(|s| s != BakeformState::Ready) {
            return Err(format!(
                "bakeform {} visible in state {:?}",
                b.name, b.state
            ));
        }
        let boot = Path::new(&b.location).join("boot");
        if entries(&boot).is_empty() || !Path::new(&b.location).join("root/etc").is_dir() {
            return Err(format!("bakeform {} ready but incomplete", b.name));
        }
    }
    for name in entries(&env.data().join("bakeforms")) {
        if !bakeforms.contains_key(&name) {
            return Err(format!("orphan bakeforms/{name}"));
        }
    }
    let pool = env.data().join("pool");
    for name in entries(&pool) {
        if !bakeforms
            .get(&name)
            .is_some_and(|b| b.state == Some(BakeformState::Ready))
        {
            return Err(format!("pool/{name} of a bakeform that is not ready"));
        }
        for entry in entries(&pool.join(&name)) {
            if !pool.join(&name).join(&entry).join("etc/hostname").is_file() {
                return Err(format!("pool/{name}/{entry} incomplete"));
            }
        }
    }
    let now: Disk = server
        .get(&format!("/disks/{}", pattern.id))
        .json()
        .map_err(|e| format!("pattern disk gone: {e}"))?;
    pattern_intact(&Path::new(&now.location).join("disk.img"))
}

#[test]
fn sigkill_at_random_moments_keeps_every_invariant() {
    let (trials, seed) = trials_and_seed("BAKERY_CRASH", "crash test", 10);
    let mut rng = Rng(seed);

    let env = Env::new();
    let mut server = Server::start_with(&env, POOL);
    // Warm-up, timing each operation once so kills land inside them.
    let t = Instant::now();
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    let import_ms = t.elapsed().as_millis() as u64;
    server.add_pis(4);
    assert!(eventually(Duration::from_secs(10), || env
        .ppi_calls()
        .len()
        >= 4));
    let (bake_ms, unbake_ms) = time_bake_and_unbake(&server);
    let pattern: Disk = server
        .post_json("/disks", &json!({"size": PATTERN_MIB}))
        .json()
        .unwrap();
    write_pattern(&Path::new(&pattern.location).join("disk.img"));
    println!("crash test: import {import_ms} ms, bake {bake_ms} ms, unbake {unbake_ms} ms");

    let mut counts = std::collections::BTreeMap::new();
    let mut repaired = 0;
    for trial in 0..trials {
        let pis: PiMap = server.get("/pis").json().unwrap();
        let fridge = pis
            .values()
            .filter(|p| p.state == Some(PiState::Fridge))
            .count();
        let baked = pis.len() - fridge;
        let op = match rng.below(5) {
            0 | 1 if fridge > 0 => Op::Bake,
            0 | 1 => Op::Unbake,
            2 if baked > 0 => Op::Unbake,
            2 => Op::Bake,
            3 => Op::Import,
            _ if baked > 0 && rng.below(2) == 0 => Op::Attach,
            _ => Op::CreateDisk,
        };
        let window = match op {
            Op::Bake => bake_ms,
            Op::Unbake => unbake_ms,
            Op::Import => import_ms,
            Op::CreateDisk | Op::Attach => 30,
        };
        let delay = rng.moment_within(window);
        *counts.entry(format!("{op:?}")).or_insert(0) += 1;
        let job = start_op(&server, op, &pattern.id, trial);
        kill_and_restart_with(&mut server, &env, job, delay, POOL);
        if let Err(broken) = check(&env, &server, &pattern) {
            panic!(
                "trial {trial} ({op:?} killed after {delay:?}), BAKERY_CRASH_SEED={seed}: {broken}\nlog: {:#?}",
                server.log.lock().unwrap()
            );
        }
        if ["interrupted", "orphaned directory"]
            .iter()
            .any(|w| server.log_contains(w))
        {
            repaired += 1;
        }
        // Keep the inventory moving: detach the pattern disk now and then.
        if rng.below(3) == 0 {
            let disk: Disk = server
                .get(&format!("/disks/{}", pattern.id))
                .json()
                .unwrap();
            if let Some(pi) = disk.attached_to {
                let resp = server.delete(&format!("/oven/{pi}/disks/{}", pattern.id));
                assert_eq!(resp.status(), StatusCode::OK);
            }
        }
    }
    println!("crash test: ops killed {counts:?}; {repaired} restarts had work in flight to repair");
    // After all that, the server still works end to end.
    let pis: PiMap = server.get("/pis").json().unwrap();
    if pis.values().any(|p| p.state == Some(PiState::Fridge)) {
        let pi = server.bake_ready(false);
        assert!(
            Path::new(&pi.disks[0].location)
                .join("etc/hostname")
                .is_file()
        );
    }
    check(&env, &server, &pattern).unwrap();
}
