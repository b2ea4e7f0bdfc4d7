//! The warm pool (`--warm-pool`) against the real binary: it fills after an upload, a bake
//! takes its root (identical to the golden root) and it refills, a reset takes from it too,
//! a restart keeps valid entries and drops those of gone bakeforms, deleting the bakeform
//! removes its pool, the pool gauges follow; and the bake latency with and without a pool (printed, not asserted).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::{
    Env, OS, Server, bulk_sample_spec, entries, eventually, fingerprint, median, timed_bake,
    wait_one_pool_entry,
};

fn pool_of(env: &Env) -> PathBuf {
    env.data().join("pool").join(OS)
}

/// Waits until the bakeform's pool holds exactly one entry other than `not` and returns it.
fn wait_one_entry(env: &Env, not: Option<&str>) -> String {
    wait_one_pool_entry(&pool_of(env), not, Duration::from_secs(60))
}

/// Whether the server logged taking pool entry `entry`.
fn took(server: &Server, entry: &str) -> bool {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("warm pool root taken") && l.contains(entry))
}

/// The value of the metric `name` (without labels) from `GET /metrics`.
pub fn metric(server: &Server, name: &str) -> Option<f64> {
    let text = server
        .client
        .get(server.base.replace("/api/v1", "/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn start_pooled(env: &Env) -> Server {
    Server::start_with(env, &["--warm-pool", "1"])
}

#[test]
fn warm_pool_fills_is_taken_refills_survives_restart_and_goes_with_its_bakeform() {
    let env = Env::new();
    let mut server = start_pooled(&env);
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    server.add_pis(1);
    let golden = env.data().join("bakeforms").join(OS).join("root");
    let first = wait_one_entry(&env, None);
    assert_eq!(
        fingerprint(&pool_of(&env).join(&first)),
        fingerprint(&golden)
    );
    // The gauges follow the pool and the data dir's free space (the default minimum, 1G,
    // is far below what a test machine has free).
    let counted = eventually(Duration::from_secs(10), || {
        metric(&server, "bakery_pool_roots") == Some(1.0)
    });
    assert!(counted, "bakery_pool_roots is not 1");
    assert!(metric(&server, "bakery_data_free_bytes").is_some_and(|b| b > 0.0));
    assert_eq!(metric(&server, "bakery_pool_short_of_space"), Some(0.0));

    let pi = server.bake_ready(false);
    assert!(took(&server, &first), "no take of {first} logged");
    let root = PathBuf::from(&pi.disks[0].location);
    assert_eq!(root.parent().unwrap(), env.data().join("disks"));
    assert!(root.join("piConfig").is_dir());
    assert_eq!(fingerprint(&root), fingerprint(&golden));
    let second = wait_one_entry(&env, Some(&first));

    // A reset takes the next pooled root and keeps piConfig.
    std::fs::write(root.join("piConfig/marker"), "kept").unwrap();
    std::fs::write(root.join("etc/hostname"), "changed\n").unwrap();
    let resp = server.reset(&pi.id);
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{:?}", resp.text());
    assert_eq!(server.wait_baked(&pi.id).status(), StatusCode::OK);
    assert!(took(&server, &second), "no take of {second} logged");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "raspberrypi\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("piConfig/marker")).unwrap(),
        "kept"
    );
    let third = wait_one_entry(&env, Some(&second));

    // A restart keeps the complete entry, drops the pool of a bakeform that does not exist.
    server.stop();
    let ghost = env.data().join("pool").join("ghost").join("entry");
    std::fs::create_dir_all(&ghost).unwrap();
    server = start_pooled(&env);
    assert_eq!(server.get("/bakeforms").status(), StatusCode::OK);
    assert!(!ghost.exists());
    assert_eq!(entries(&pool_of(&env)), vec![third.clone()]);
    assert_eq!(entries(&env.data().join("pool")), vec![OS.to_owned()]);

    // Deleting the bakeform (once no Pi uses it) removes its pool.
    assert_eq!(
        server.delete(&format!("/oven/{}", pi.id)).status(),
        StatusCode::OK
    );
    assert_eq!(
        server.delete(&format!("/bakeforms/{OS}")).status(),
        StatusCode::OK
    );
    assert!(!pool_of(&env).exists());
}

#[test]
fn bake_latency_with_and_without_warm_pool() {
    let env = Env::new();
    let mut server = Server::start(&env);
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    server.add_pis(2);
    let (cold, pi) = timed_bake(&server);
    assert_eq!(
        server.delete(&format!("/oven/{}", pi.id)).status(),
        StatusCode::OK
    );
    server.stop();

    server = start_pooled(&env);
    wait_one_entry(&env, None);
    let (warm, _) = timed_bake(&server);
    println!(
        "bake request -> baked, sample image: without pool {:?}, with --warm-pool 1 {:?}",
        cold, warm
    );
    assert!(server.log_contains("warm pool root taken"));
}

/// Bake latency over a root of 20 000 files, 3 bakes each without and with a pool (pool
/// refilled before each): `cargo test -p bakery-server --test api pool::bake_latency_big --
/// --ignored --nocapture`.
#[test]
#[ignore = "benchmark: builds an image of 20 000 files"]
fn bake_latency_big_root_with_and_without_warm_pool() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("big.img");
    bakery_image::build_sample_image(&image, &bulk_sample_spec(20_000)).unwrap();
    let upload = |server: &Server| {
        let resp = server
            .client
            .post(server.url(&format!("/bakeforms/{OS}")))
            .header("Content-Type", bakery_client::RAW_IMAGE_CONTENT_TYPE)
            .body(std::fs::read(&image).unwrap())
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    };
    let env = Env::new();
    let mut server = Server::start(&env);
    upload(&server);
    server.add_pis(3);
    let mut cold = Vec::new();
    for _ in 0..3 {
        let (t, pi) = timed_bake(&server);
        cold.push(t);
        assert_eq!(
            server.delete(&format!("/oven/{}", pi.id)).status(),
            StatusCode::OK
        );
    }
    server.stop();
    let golden = env.data().join("bakeforms").join(OS).join("root");
    let copies = tempfile::tempdir_in(env.data()).unwrap();
    let mut cp = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&golden)
            .arg(copies.path().join(i.to_string()))
            .status()
            .unwrap();
        assert!(status.success());
        cp.push(started.elapsed());
    }
    drop(copies);
    server = start_pooled(&env);
    let mut warm = Vec::new();
    let mut last: Option<String> = None;
    for _ in 0..3 {
        last = Some(wait_one_entry(&env, last.as_deref()));
        let (t, pi) = timed_bake(&server);
        warm.push(t);
        assert_eq!(
            server.delete(&format!("/oven/{}", pi.id)).status(),
            StatusCode::OK
        );
    }
    println!(
        "bake request -> baked, 20 000-file root, median of 3: without pool {:?}, with --warm-pool 1 {:?}; cp -a of the golden root {:?}",
        median(cold),
        median(warm),
        median(cp)
    );
}
