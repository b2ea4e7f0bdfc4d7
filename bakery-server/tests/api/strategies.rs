//! The real server with its data dir on a loop-mounted btrfs and XFS: it logs the clone
//! strategy it chose, a baked Pi's root is identical to the golden root (on btrfs a snapshot
//! subvolume, on XFS sharing extents), a reset re-clones it keeping piConfig, unbaking and
//! reclaiming the trash leaves no root (no subvolume) behind, and a second bake works.
//! Skipped with a printed reason where this machine cannot loop-mount. Also the benchmark of
//! bake latency (request → baked) per file system against `cp -a` and `rsync -xa`
//! (`#[ignore]`d; see [`bake_latency_per_filesystem`]).

#[allow(dead_code)]
#[path = "../../image/tests/common/loopfs.rs"]
pub(crate) mod loopfs;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bakery_client::PiInfo;
use reqwest::StatusCode;

use crate::common::{
    Env, OS, Server, build_image_from_tree, bulk_sample_spec, count_tree, entries, eventually,
    exact_fingerprint, median, run_ok, timed_bake, wait_one_pool_entry,
};
use loopfs::{FsKind, LoopFs, btrfs_subvolumes, shared_bytes};

/// Inode number of every btrfs subvolume's root directory.
const SUBVOLUME_INO: u64 = 256;

fn root_of(pi: &PiInfo) -> PathBuf {
    PathBuf::from(&pi.disks[0].location)
}

/// A server whose data dir is on a loop-mounted `kind`, with the sample bakeform and one Pi.
/// Fields drop in order: the server stops before its file system is unmounted.
struct OnLoop {
    server: Server,
    _env: Env,
    kind: FsKind,
    strategy: &'static str,
    data: PathBuf,
    golden: PathBuf,
    lfs: LoopFs,
}

impl OnLoop {
    /// Starts, checks the logged strategy and uploads the sample; `None` when skipped.
    fn start(kind: FsKind, strategy: &'static str) -> Option<OnLoop> {
        // Sparse, so only what is written takes space; large enough for the server's default
        // free-space reserve.
        let lfs = LoopFs::mount(kind, 4096)?;
        let data = lfs.path().join("data");
        let env = Env::new();
        let server = Server::start_replacing(
            &env,
            &["--data-dir"],
            &["--data-dir", data.to_str().unwrap()],
        );
        assert!(
            eventually(Duration::from_secs(10), || server.log_contains(&format!(
                "clone strategy chosen strategy={strategy}"
            ))),
            "no clone strategy {strategy} logged: {:?}",
            server.log.lock().unwrap()
        );
        let resp = server.upload_sample(OS);
        assert_eq!(resp.status(), StatusCode::CREATED, "{:?}", resp.text());
        server.add_pis(1);
        let golden = data.join("bakeforms").join(OS).join("root");
        Some(OnLoop {
            server,
            _env: env,
            kind,
            strategy,
            data,
            golden,
            lfs,
        })
    }

    fn log(&self) -> Vec<String> {
        self.server.log.lock().unwrap().clone()
    }

    /// The root is identical to the golden root and made by the strategy.
    fn assert_cloned(&self, root: &Path) {
        assert!(root.starts_with(&self.data), "{}", root.display());
        assert_eq!(exact_fingerprint(root), exact_fingerprint(&self.golden));
        let cloned: Vec<String> = self
            .log()
            .into_iter()
            .filter(|l| l.contains("root cloned"))
            .collect();
        assert!(
            !cloned.is_empty()
                && cloned
                    .iter()
                    .all(|l| l.contains(&format!("strategy={}", self.strategy))),
            "{cloned:?}"
        );
        assert!(!self.server.log_contains("snapshot failed"));
        match self.kind {
            FsKind::Btrfs => {
                assert_eq!(self.golden.metadata().unwrap().ino(), SUBVOLUME_INO);
                assert_eq!(root.metadata().unwrap().ino(), SUBVOLUME_INO);
            }
            FsKind::Xfs => {
                let busybox = Path::new("bin/busybox");
                let size = self.golden.join(busybox).metadata().unwrap().len();
                assert!(
                    shared_bytes(&root.join(busybox)) >= size,
                    "the Pi's busybox is not a reflink of the golden one"
                );
            }
            FsKind::Ext4 => {}
        }
    }

    fn bake(&self) -> PiInfo {
        let pi = self.server.bake_ready(false);
        self.assert_cloned(&root_of(&pi));
        pi
    }

    /// Waits until the trash is empty; on btrfs the subvolumes are the golden root's and
    /// `pis` more.
    fn assert_reclaimed(&self, pis: usize) {
        let trash = self.data.join("trash");
        assert!(
            eventually(Duration::from_secs(20), || entries(&trash).is_empty()),
            "trash not reclaimed: {:?}",
            entries(&trash)
        );
        if self.kind == FsKind::Btrfs {
            let subvolumes = btrfs_subvolumes(self.lfs.path());
            assert_eq!(subvolumes.len(), 1 + pis, "{subvolumes:?}");
            assert_eq!(subvolumes[0], format!("data/bakeforms/{OS}/root"));
        }
    }

    /// A reset re-clones the root, keeping piConfig.
    fn reset(&self, pi: &PiInfo) {
        let root = root_of(pi);
        std::fs::write(root.join("etc/hostname"), "pi-one\n").unwrap();
        std::fs::write(root.join("piConfig/marker"), "kept").unwrap();
        let resp = self.server.reset(&pi.id);
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{:?}", resp.text());
        let resp = self.server.wait_baked(&pi.id);
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{:?} {:#?}",
            resp.text(),
            self.log()
        );
        self.assert_cloned(&root);
        assert_eq!(
            std::fs::read_to_string(root.join("piConfig/marker")).unwrap(),
            "kept"
        );
        self.assert_reclaimed(1);
    }

    /// Unbake: the root goes to the trash at once and is reclaimed in the background.
    fn unbake(&self, pi: &PiInfo) {
        let root = root_of(pi);
        std::fs::write(root.join("etc/hostname"), "pi-one\n").unwrap();
        let resp = self.server.delete(&format!("/oven/{}", pi.id));
        assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text());
        assert!(
            eventually(Duration::from_secs(20), || !root.exists()),
            "root {} left",
            root.display()
        );
        self.assert_reclaimed(0);
        assert_eq!(
            std::fs::read_to_string(self.golden.join("etc/hostname")).unwrap(),
            "raspberrypi\n"
        );
    }

    /// Stops the server and unmounts, checking no loop device is left.
    fn finish(mut self) {
        self.server.stop();
        assert!(
            self.lfs.unmount(),
            "loop device left: {:?}",
            self.lfs.loop_devices()
        );
    }
}

#[test]
fn btrfs_data_dir_bakes_by_snapshot_and_unbakes_without_leftover_subvolumes() {
    let Some(s) = OnLoop::start(FsKind::Btrfs, "btrfs-snapshot") else {
        return;
    };
    let pi = s.bake();
    s.assert_reclaimed(1);
    s.unbake(&pi);
    let again = s.bake();
    s.assert_reclaimed(1);
    s.unbake(&again);
    s.finish();
}

/// A reset keeps `piConfig` from the old root in the new one; on btrfs those are two
/// subvolumes, and rename(2) across subvolumes is EXDEV, so the server clones it instead.
#[test]
fn btrfs_reset_keeps_pi_config() {
    let Some(s) = OnLoop::start(FsKind::Btrfs, "btrfs-snapshot") else {
        return;
    };
    let pi = s.bake();
    s.reset(&pi);
    s.unbake(&pi);
    s.finish();
}

#[test]
fn xfs_data_dir_bakes_resets_and_unbakes_by_reflink() {
    let Some(s) = OnLoop::start(FsKind::Xfs, "reflink") else {
        return;
    };
    let pi = s.bake();
    s.reset(&pi);
    s.unbake(&pi);
    let again = s.bake();
    s.unbake(&again);
    s.finish();
}

/// The image a bake-latency benchmark uploads, and how large a loop file system it needs.
struct BenchImage {
    _dir: tempfile::TempDir,
    path: PathBuf,
    what: String,
    loop_mib: u64,
}

/// The bakeform of [`bake_latency_per_filesystem`]: the sample image with 20 000 files of
/// 4 KiB, or with `BAKERY_BENCH_SOURCE` a root made from a staged copy of that directory
/// (kept at its own path, e.g. `usr/share`, next to the sample's `etc` files).
fn bench_image() -> BenchImage {
    let dir = tempfile::Builder::new()
        .prefix("bakery-bench-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("bench.img");
    let started = Instant::now();
    let what = match std::env::var_os("BAKERY_BENCH_SOURCE") {
        None => {
            bakery_image::build_sample_image(&path, &bulk_sample_spec(20_000)).unwrap();
            "sample image + 20 000 files of 4 KiB".to_owned()
        }
        Some(source) => {
            let source = PathBuf::from(source);
            let stage = dir.path().join("stage");
            let rel = source.strip_prefix("/").unwrap_or(&source).to_path_buf();
            let at = stage.join(&rel);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            run_ok(Command::new("cp").arg("-a").arg(&source).arg(&at));
            for (name, data) in bakery_image::SampleSpec::default().root_files {
                let file = stage.join(name);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, data).unwrap();
            }
            let (entries, bytes) = count_tree(&stage);
            build_image_from_tree(&path, &stage, (entries, bytes));
            std::fs::remove_dir_all(&stage).unwrap();
            format!(
                "{} ({entries} entries, {:.2} GiB)",
                source.display(),
                bytes as f64 / f64::from(1 << 30)
            )
        }
    };
    let image_mib = path.metadata().unwrap().len() >> 20;
    println!(
        "bakeform: {what}, image {image_mib} MiB, built in {:.1?}",
        started.elapsed()
    );
    BenchImage {
        _dir: dir,
        path,
        what,
        // Sparse: the uploaded image, the golden root, a pool entry, a baked root, one copy
        // and the trash, plus the server's 1 GiB free-space minimum.
        loop_mib: (image_mib * 8 + 2048).max(4096),
    }
}

/// `sync`: the previous run's writeback is not billed to the next.
fn sync() {
    run_ok(&mut Command::new("sync"));
}

/// A `Duration`'s `Debug` text as tracing logs it (`850.2µs`, `1.5ms`, `2.1s`).
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "ns" => 1e-9,
        "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(number * scale))
}

/// A bake timed request → baked, with the server's own time for placing the root (its
/// `root cloned` log line, logged after line `from`: the clone, or taking a pooled root).
fn timed_bake_with_clone(server: &Server) -> (Duration, Duration, PiInfo) {
    let from = server.log.lock().unwrap().len();
    let (total, pi) = timed_bake(server);
    let mut clone = None;
    let logged = eventually(Duration::from_secs(5), || {
        clone = server.log.lock().unwrap()[from..]
            .iter()
            .filter(|l| l.contains("root cloned"))
            .find_map(|l| {
                l.split_once("elapsed=")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .and_then(parse_debug_duration)
            });
        clone.is_some()
    });
    assert!(
        logged,
        "no 'root cloned' with elapsed= logged for {}",
        pi.id
    );
    (total, clone.unwrap(), pi)
}

/// Medians measured on one file system.
struct FsResult {
    fs: FsKind,
    strategy: String,
    cold: Duration,
    cold_clone: Duration,
    warm: Duration,
    warm_clone: Duration,
    cp: Duration,
    rsync: Duration,
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.3}", a.as_secs_f64() / b.as_secs_f64())
}

/// One result line: a bake mode's median (and the server's root placing within it) against
/// the copies'.
fn result_line(r: &FsResult, mode: &str, bake: Duration, clone: Duration) -> String {
    format!(
        "{:<5} {:<14} {:<14} bake {:>9} (root placed in {:>10})  cp -a {:>9}  rsync -xa {:>9}  bake/cp {:>7}  bake/rsync {:>7}",
        format!("{:?}", r.fs).to_lowercase(),
        r.strategy,
        mode,
        secs(bake),
        format!("{:.1} ms", clone.as_secs_f64() * 1e3),
        secs(r.cp),
        secs(r.rsync),
        ratio(bake, r.cp),
        ratio(bake, r.rsync),
    )
}

/// Starts the real server with its data dir `data` and `extra` flags; returns it and the
/// clone strategy it logged.
fn start_on(env: &Env, data: &Path, extra: &[&str]) -> (Server, String) {
    let mut flags = vec!["--data-dir", data.to_str().unwrap()];
    flags.extend_from_slice(extra);
    let server = Server::start_replacing(env, &["--data-dir"], &flags);
    let mut strategy = None;
    let logged = eventually(Duration::from_secs(10), || {
        strategy = server.log.lock().unwrap().iter().find_map(|l| {
            l.split_once("clone strategy chosen strategy=")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .map(str::to_owned)
        });
        strategy.is_some()
    });
    assert!(
        logged,
        "no clone strategy logged: {:?}",
        server.log.lock().unwrap()
    );
    (server, strategy.unwrap())
}

/// Unbakes `pi` and waits until its root has left the trash, then syncs.
fn unbake_and_settle(server: &Server, pi: &PiInfo, data: &Path) {
    assert_eq!(
        server.delete(&format!("/oven/{}", pi.id)).status(),
        StatusCode::OK
    );
    let trash = data.join("trash");
    assert!(
        eventually(Duration::from_secs(300), || entries(&trash).is_empty()),
        "trash not reclaimed: {:?}",
        entries(&trash)
    );
    sync();
}

/// Median of `runs` runs of `tool` copying the golden root to a new path on the same file
/// system, each removed (and synced) before the next starts.
fn copy_median(tool: &[&str], golden: &Path, scratch: &Path, runs: usize) -> Duration {
    let mut times = Vec::new();
    for i in 0..runs {
        let out = scratch.join(format!("{}-{i}", tool[0]));
        sync();
        let started = Instant::now();
        let mut cmd = Command::new(tool[0]);
        cmd.args(&tool[1..]);
        if tool[0] == "rsync" {
            cmd.arg(format!("{}/", golden.display()));
        } else {
            cmd.arg(golden);
        }
        run_ok(cmd.arg(&out));
        times.push(started.elapsed());
        std::fs::remove_dir_all(&out).unwrap();
    }
    sync();
    median(times)
}

/// Measures one file system; `None` when this machine cannot loop-mount it (reason printed).
fn measure_on(kind: FsKind, image: &BenchImage, runs: usize) -> Option<FsResult> {
    // Declared first, dropped last: the server stops before the file system is unmounted.
    let mut lfs = LoopFs::mount(kind, image.loop_mib)?;
    let data = lfs.path().join("data");
    let env = Env::new();
    let (mut server, strategy) = start_on(&env, &data, &[]);
    println!(
        "{kind:?}: loop file system of {} MiB, clone strategy {strategy}",
        image.loop_mib
    );
    let started = Instant::now();
    let resp = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .post(server.url(&format!("/bakeforms/{OS}")))
        .header("Content-Type", bakery_client::RAW_IMAGE_CONTENT_TYPE)
        .body(std::fs::File::open(&image.path).unwrap())
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "{:?}", resp.text());
    println!(
        "{kind:?}: uploaded and imported in {:.1?}",
        started.elapsed()
    );
    server.add_pis(runs as u32);
    sync();

    let (mut cold, mut cold_clone) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        sync();
        let (t, clone, pi) = timed_bake_with_clone(&server);
        cold.push(t);
        cold_clone.push(clone);
        unbake_and_settle(&server, &pi, &data);
    }
    server.stop();

    let golden = data.join("bakeforms").join(OS).join("root");
    let scratch = lfs.path().join("copies");
    std::fs::create_dir(&scratch).unwrap();
    let cp = copy_median(&["cp", "-a"], &golden, &scratch, runs);
    let rsync = copy_median(&["rsync", "-xa"], &golden, &scratch, runs);

    let (server, _) = start_on(&env, &data, &["--warm-pool", "1"]);
    let pool = data.join("pool").join(OS);
    let (mut warm, mut warm_clone) = (Vec::new(), Vec::new());
    let mut last: Option<String> = None;
    for _ in 0..runs {
        last = Some(wait_one_pool_entry(
            &pool,
            last.as_deref(),
            Duration::from_secs(600),
        ));
        sync();
        let (t, clone, pi) = timed_bake_with_clone(&server);
        warm.push(t);
        warm_clone.push(clone);
        unbake_and_settle(&server, &pi, &data);
    }
    assert!(
        server.log_contains("warm pool root taken"),
        "the warm bakes did not take pooled roots"
    );
    drop(server);
    assert!(lfs.unmount(), "loop device left: {:?}", lfs.loop_devices());
    let r = FsResult {
        fs: kind,
        strategy,
        cold: median(cold),
        cold_clone: median(cold_clone),
        warm: median(warm),
        warm_clone: median(warm_clone),
        cp,
        rsync,
    };
    println!("{}", result_line(&r, "pool off", r.cold, r.cold_clone));
    println!("{}", result_line(&r, "--warm-pool 1", r.warm, r.warm_clone));
    Some(r)
}

/// Benchmark: per-Pi bake time request → baked (`POST /fridge` until `?wait=baked` answers)
/// on a fresh loop-mounted journaled ext4, btrfs and XFS, with the pool off and with
/// `--warm-pool 1` (its entry ready before each bake), against `cp -a` and `rsync -xa` of the
/// golden root on the same file system; medians of `BAKERY_BENCH_RUNS` runs (default 3),
/// each bake unbaked (trash reclaimed, synced) before the next. Prints a line per file
/// system and mode as it goes (with the median of the server's own time to place the root,
/// from its `root cloned` log line: the rest is the API, power, export and database work
/// around it), then a summary block.
///
/// ```text
/// cargo test -p bakery-server --test api strategies::bake_latency -- --ignored --nocapture
/// BAKERY_BENCH_SOURCE=/usr/share cargo test -p bakery-server --test api strategies::bake_latency -- --ignored --nocapture
/// ```
///
/// The bakeform: the sample image with 20 000 files of 4 KiB, or with `BAKERY_BENCH_SOURCE`
/// a root made from a copy of that directory. Needs root, loop devices, mkfs.btrfs and
/// mkfs.xfs; a file system this machine cannot mount is skipped with the reason printed.
#[test]
#[ignore = "benchmark: loop-mounts three file systems and bakes a big root on each"]
fn bake_latency_per_filesystem() {
    let runs: usize = std::env::var("BAKERY_BENCH_RUNS")
        .ok()
        .map(|v| v.parse().expect("BAKERY_BENCH_RUNS is a number"))
        .unwrap_or(3)
        .max(1);
    let image = bench_image();
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for kind in [FsKind::Ext4, FsKind::Btrfs, FsKind::Xfs] {
        match measure_on(kind, &image, runs) {
            Some(r) => results.push(r),
            None => skipped.push(format!("{kind:?}").to_lowercase()),
        }
    }
    println!();
    println!(
        "summary: bake request -> baked vs cp -a / rsync -xa of the golden root on the same \
         file system, medians of {runs}; bakeform: {}",
        image.what
    );
    for r in &results {
        println!("  {}", result_line(r, "pool off", r.cold, r.cold_clone));
        println!(
            "  {}",
            result_line(r, "--warm-pool 1", r.warm, r.warm_clone)
        );
    }
    if !skipped.is_empty() {
        println!("  skipped (cannot loop-mount here): {}", skipped.join(", "));
    }
}

/// The byte offset of MBR partition `index` (0-based) of `image`.
fn partition_offset(image: &Path, index: usize) -> u64 {
    let mut mbr = [0u8; 512];
    std::io::Read::read_exact(&mut std::fs::File::open(image).unwrap(), &mut mbr).unwrap();
    let entry = 446 + 16 * index;
    u64::from(u32::from_le_bytes(
        mbr[entry + 8..entry + 12].try_into().unwrap(),
    )) * 512
}

/// The `<key>_ms=` values of the server's `bakeform imported` line for `name`.
fn import_phases(server: &Server, name: &str) -> Vec<(String, u64)> {
    let log = server.log.lock().unwrap();
    let Some(line) = log
        .iter()
        .find(|l| l.contains("bakeform imported") && l.contains(name))
    else {
        return Vec::new();
    };
    line.split_whitespace()
        .filter_map(|w| {
            let (key, value) = w.split_once("_ms=")?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Medians of upload → ready through the API and of the first bakery's way, on one file system.
struct ImportResult {
    fs: FsKind,
    api: Duration,
    old: Duration,
    phases: Vec<(String, u64)>,
}

/// Measures one file system; `None` when this machine cannot loop-mount it (reason printed).
fn import_on(kind: FsKind, image: &BenchImage, runs: usize) -> Option<ImportResult> {
    let lfs = LoopFs::mount(kind, image.loop_mib)?;
    let data = lfs.path().join("data");
    let env = Env::new();
    // The production default: a warm-pool refill follows each import.
    let (server, strategy) = start_on(&env, &data, &["--warm-pool", "1"]);
    println!("{kind:?}: clone strategy {strategy}, --warm-pool 1");
    let offset = partition_offset(&image.path, 1);
    let mnt = lfs.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut api = Vec::new();
    let mut phases: Vec<Vec<(String, u64)>> = Vec::new();
    let mut old = Vec::new();
    // Interleaved, so both ways meet the same state of the file system and of the page
    // cache. Round 0 warms up and is not counted: the first write into a fresh loop file
    // system allocates its backing file's blocks (an upload first took 3.4 s to receive
    // instead of 0.9 s).
    for i in 0..=runs {
        let name = format!("bench-{i}");
        sync();
        let started = Instant::now();
        let out = Command::new("curl")
            .args(["-sS", "-f", "-o", "/dev/null", "-X", "POST", "-H"])
            .arg(format!(
                "Content-Type: {}",
                bakery_client::RAW_IMAGE_CONTENT_TYPE
            ))
            .arg("-T")
            .arg(&image.path)
            .arg(server.url(&format!("/bakeforms/{name}")))
            .output()
            .expect("curl runs");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if i > 0 {
            api.push(took);
        }
        let p = import_phases(&server, &name);
        println!("{kind:?}: upload -> ready {took:.2?} (server: {p:?})");
        if i > 0 {
            phases.push(p);
        }
        assert_eq!(
            server.delete(&format!("/bakeforms/{name}")).status(),
            StatusCode::OK
        );
        // The next run starts on a quiet machine: this one's pool refill and trash are done.
        let (trash, pool) = (data.join("trash"), data.join("pool").join(&name));
        assert!(eventually(Duration::from_secs(300), || {
            entries(&trash).is_empty() && !pool.exists()
        }));
        let (copy, out) = (lfs.path().join("old.img"), lfs.path().join("old-root"));
        sync();
        let started = Instant::now();
        run_ok(Command::new("cp").arg(&image.path).arg(&copy));
        run_ok(
            Command::new("mount")
                .arg("-o")
                .arg(format!("loop,ro,offset={offset}"))
                .arg(&copy)
                .arg(&mnt),
        );
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", mnt.display()))
                .arg(&out),
        );
        run_ok(Command::new("umount").arg(&mnt));
        let took = started.elapsed();
        println!("{kind:?}: cp + mount + cp -a + umount {took:.2?}");
        if i > 0 {
            old.push(took);
        }
        std::fs::remove_file(&copy).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
    }
    drop(server);
    sync();
    // The phases of the run whose total is the median.
    let api_median = median(api.clone());
    let at = api.iter().position(|t| *t == api_median).unwrap_or(0);
    Some(ImportResult {
        fs: kind,
        api: api_median,
        old: median(old),
        phases: phases.swap_remove(at),
    })
}

/// Benchmark: a bakeform upload through the real API until it answers `201` (the import is
/// done and the bakeform `ready`), streamed with `curl -X POST -T` from a file, against the
/// first bakery's way on the same file system (copy the image, loop-mount its root partition,
/// `cp -a` it out, unmount), on fresh loop-mounted journaled ext4, btrfs and XFS
/// (`BAKERY_BENCH_FS=ext4,xfs` picks); medians of `BAKERY_BENCH_RUNS` (default 3) after a
/// warm-up round, the two ways interleaved, each deleted and synced before the next. Prints the ratio and the server's phases (receive,
/// import, finish) from its `bakeform imported` log line.
///
/// ```text
/// BAKERY_BENCH_SOURCE=/usr/share cargo test --release -p bakery-server --test api strategies::upload_to_ready -- --ignored --nocapture
/// ```
#[test]
#[ignore = "benchmark: loop-mounts file systems and uploads a big image to each"]
fn upload_to_ready_per_filesystem() {
    let runs: usize = std::env::var("BAKERY_BENCH_RUNS")
        .ok()
        .map(|v| v.parse().expect("BAKERY_BENCH_RUNS is a number"))
        .unwrap_or(3)
        .max(1);
    let wanted = std::env::var("BAKERY_BENCH_FS").unwrap_or_else(|_| "ext4,btrfs,xfs".into());
    let image = bench_image();
    let mut results = Vec::new();
    for kind in [FsKind::Ext4, FsKind::Btrfs, FsKind::Xfs] {
        if !wanted
            .split(',')
            .any(|w| w.trim().eq_ignore_ascii_case(&format!("{kind:?}")))
        {
            continue;
        }
        if let Some(r) = import_on(kind, &image, runs) {
            results.push(r);
        }
    }
    println!();
    println!(
        "summary: upload -> ready through the API vs cp + mount + cp -a + umount, medians of \
         {runs}; bakeform: {}",
        image.what
    );
    for r in &results {
        println!(
            "  {:?}: api {:.2?}, first bakery's way {:.2?}, ratio {:.3}x; server phases of the median run: {}",
            r.fs,
            r.api,
            r.old,
            r.api.as_secs_f64() / r.old.as_secs_f64(),
            r.phases
                .iter()
                .map(|(k, v)| format!("{k} {v} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Bakes from request to baked with `rootKind` `kind` (no power-on).
fn timed_bake_of_kind(server: &Server, kind: &str) -> (Duration, PiInfo) {
    let started = Instant::now();
    let resp = server.post_json(
        "/fridge",
        &serde_json::json!({"bakeformName": OS, "powerOn": false, "rootKind": kind}),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{:?}", resp.text());
    let pi: PiInfo = resp.json().unwrap();
    let resp = server.wait_baked(&pi.id);
    assert_eq!(resp.status(), StatusCode::OK);
    let pi: PiInfo = resp.json().unwrap();
    assert_eq!(pi.status.code(), 2, "{pi:?}");
    (started.elapsed(), pi)
}

/// Benchmark: bake time request → baked of NFS roots (a tree clone) against NBD roots (a
/// clone of the bakeform's `root.ext4`) on a fresh loop-mounted ext4, btrfs and XFS, warm
/// pool off for both, bakes of the two kinds interleaved, each unbaked (trash reclaimed,
/// synced) before the next; medians of `BAKERY_BENCH_RUNS` (default 5). The first NBD bake,
/// which also makes the bakeform's image with mkfs.ext4 -d, is reported on its own. No
/// nbd-server is needed: bakery only writes its config.
///
/// ```text
/// cargo test -p bakery-server --test api strategies::nbd_vs_nfs -- --ignored --nocapture
/// ```
#[test]
#[ignore = "benchmark: loop-mounts three file systems and bakes NFS and NBD roots on each"]
fn nbd_vs_nfs_bake_time_per_filesystem() {
    let runs: usize = std::env::var("BAKERY_BENCH_RUNS")
        .ok()
        .map(|v| v.parse().expect("BAKERY_BENCH_RUNS is a number"))
        .unwrap_or(5)
        .max(1);
    let image = bench_image();
    let mut lines = Vec::new();
    for kind in [FsKind::Ext4, FsKind::Btrfs, FsKind::Xfs] {
        let Some(mut lfs) = LoopFs::mount(kind, image.loop_mib + 4096) else {
            lines.push(format!("{kind:?}: skipped (cannot loop-mount here)"));
            continue;
        };
        let data = lfs.path().join("data");
        let env = Env::new();
        let config = env.path("nbd.conf").display().to_string();
        let (server, strategy) = start_on(
            &env,
            &data,
            &["--warm-pool", "0", "--nbd-config", config.as_str()],
        );
        let resp = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap()
            .post(server.url(&format!("/bakeforms/{OS}")))
            .header("Content-Type", bakery_client::RAW_IMAGE_CONTENT_TYPE)
            .body(std::fs::File::open(&image.path).unwrap())
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{:?}", resp.text());
        server.add_pis(1);
        sync();
        let (first, pi) = timed_bake_of_kind(&server, "nbd");
        unbake_and_settle(&server, &pi, &data);
        let (mut nfs, mut nbd) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            for (kind, times) in [("nfs", &mut nfs), ("nbd", &mut nbd)] {
                sync();
                let (t, pi) = timed_bake_of_kind(&server, kind);
                times.push(t);
                unbake_and_settle(&server, &pi, &data);
            }
        }
        drop(server);
        assert!(lfs.unmount(), "loop device left: {:?}", lfs.loop_devices());
        let (nfs, nbd) = (median(nfs), median(nbd));
        let line = format!(
            "{kind:?} ({strategy}): nfs {}, nbd {} (nbd/nfs {}), first nbd bake with mkfs.ext4 {}",
            secs(nfs),
            secs(nbd),
            ratio(nbd, nfs),
            secs(first)
        );
        println!("{line}");
        lines.push(line);
    }
    println!();
    println!(
        "summary: bake request -> baked, NFS vs NBD roots, medians of {runs}; bakeform: {}",
        image.what
    );
    for line in lines {
        println!("  {line}");
    }
}
