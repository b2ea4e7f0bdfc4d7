//! The test harness: a temp environment (data dir, exports file, recording exportfs and PPI
//! scripts) and the real `bakery-server` binary started on a loopback port.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bakery_client::{BakeRequest, PiInfo};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};

#[path = "../../image/tests/common/sdcard.rs"]
mod sdcard;
pub use sdcard::{build_image_from_tree, build_image_with_boot, count_tree, run_ok};

/// A bakeform name every test can bake from (uploaded by [`Server::upload_sample`]).
pub const OS: &str = "raspios";

/// A test environment: everything under one temp dir.
pub struct Env {
    pub dir: tempfile::TempDir,
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("bakery-api-")
            .tempdir()
            .unwrap();
        let env = Env { dir };
        std::fs::create_dir_all(env.data()).unwrap();
        let root = env.dir.path().display().to_string();
        write_script(
            &env.path("exportfs.sh"),
            &format!("#!/bin/sh\necho \"$*\" >> {root}/exportfs.log\n"),
        );
        // The PPI records `<args> <stdin>` per call and answers as `ppi.mode` says. A `status`
        // call is recorded in `ppi-status.log` and fails as an old PPI's would, unless
        // `ppi.stateful` exists: then switches write `power.<serial>` and `status` prints it
        // (`unknown` without one), after `ppi.status-delay` seconds when that file exists.
        write_script(
            &env.path("ppi.sh"),
            &format!(
                r#"#!/bin/sh
input=$(cat)
serial=$(printf %s "$input" | sed 's/.*"piId":"\([^"]*\)".*/\1/')
case "$input" in
  *'"action":"status"'*)
    echo "$* $input" >> {root}/ppi-status.log
    if [ -f {root}/ppi.stateful ]; then
      [ -f {root}/ppi.status-delay ] && sleep "$(cat {root}/ppi.status-delay)"
      cat {root}/power.$serial 2>/dev/null || echo unknown
      exit 0
    fi
    echo "unknown action status" >&2; exit 1 ;;
esac
echo "$* $input" >> {root}/ppi.log
mode=$(cat {root}/ppi.mode 2>/dev/null || echo ok)
case "$mode" in
  ok) printf ok ;;
  okline) echo ok ;;
  fail) echo "relay board 10.9.9.9 unreachable" >&2; exit 3 ;;
  garbage) echo "maybe later" ;;
  stderr) printf ok; echo "warning: port 7 flaky" >&2 ;;
  hang) sleep 30; printf ok ;;
  slowoff) case "$input" in *poweroff*) sleep 30 ;; esac; printf ok ;;
  slowon) case "$input" in *poweron*) sleep 30 ;; esac; printf ok ;;
esac
if [ -f {root}/ppi.stateful ]; then
  case "$input" in
    *poweron*) echo on > {root}/power.$serial ;;
    *poweroff*) echo off > {root}/power.$serial ;;
  esac
fi
"#
            ),
        );
        std::fs::write(env.path("ppi.json"), "{\"ports\":{}}").unwrap();
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    pub fn exports(&self) -> String {
        std::fs::read_to_string(self.path("bakery.exports")).unwrap_or_default()
    }

    pub fn exportfs_calls(&self) -> Vec<String> {
        read_lines(&self.path("exportfs.log"))
    }

    pub fn ppi_calls(&self) -> Vec<String> {
        read_lines(&self.path("ppi.log"))
    }

    pub fn clear_ppi_calls(&self) {
        let _ = std::fs::remove_file(self.path("ppi.log"));
    }

    /// The `status` calls the PPI got (`<args> <stdin>` each).
    pub fn ppi_status_calls(&self) -> Vec<String> {
        read_lines(&self.path("ppi-status.log"))
    }

    /// Makes the PPI keep each Pi's power state and answer `status` from it.
    pub fn make_ppi_stateful(&self) {
        std::fs::write(self.path("ppi.stateful"), "").unwrap();
    }

    /// What the stateful PPI holds for a Pi (`None`: it answers `unknown`).
    pub fn power_of(&self, serial: &str) -> Option<String> {
        std::fs::read_to_string(self.path(&format!("power.{serial}")))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Flips a Pi's power behind bakery's back (`None`: the PPI cannot tell).
    pub fn set_power(&self, serial: &str, state: Option<&str>) {
        let path = self.path(&format!("power.{serial}"));
        match state {
            Some(state) => std::fs::write(path, format!("{state}\n")).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    pub fn set_ppi_mode(&self, mode: &str) {
        std::fs::write(self.path("ppi.mode"), mode).unwrap();
    }

    /// The base flags of a test server.
    pub fn args(&self) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--tftp-listen".into(),
            "off".into(),
            "--data-dir".into(),
            self.data().display().to_string(),
            "--nfs-address".into(),
            "10.0.0.2".into(),
            "--exports-file".into(),
            p("bakery.exports"),
            "--exportfs-cmd".into(),
            format!("{} -ra", p("exportfs.sh")),
            "--ppi".into(),
            p("ppi.sh"),
            "--ppi-config".into(),
            p("ppi.json"),
            "--ppi-timeout".into(),
            "2".into(),
            "--power-cycle-pause".into(),
            "0".into(),
        ]
    }
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A running `bakery-server`.
pub struct Server {
    child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub client: Client,
}

/// The real `bakery-server` binary with the settings it reads from the environment removed,
/// so a developer's shell cannot change what a test starts.
pub fn server_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bakery-server"));
    for var in [
        "BAKERY_ROOT",
        "NFS_ADDRESS",
        "DB_PATH",
        "PPI_PATH",
        "PPI_CONFIG_PATH",
        "BAKERY_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    // The warm pool (on by default) clones in the background, which would race the tests'
    // "tmp/ is empty" and disk-usage checks; the pool's own tests turn it on with the flag.
    cmd.env("BAKERY_WARM_POOL", "0");
    cmd
}

impl Server {
    pub fn start(env: &Env) -> Server {
        Server::start_with(env, &[])
    }

    /// Starts without the given base flags (each with its value).
    pub fn start_without(env: &Env, flags: &[&str]) -> Server {
        Server::spawn(env, env.args(), flags, &[])
    }

    /// Starts without the `drop` base flags (each with its value), with `extra` added.
    pub fn start_custom(env: &Env, drop: &[&str], extra: &[&str]) -> Server {
        let mut all = drop.to_vec();
        all.extend_from_slice(extra);
        Server::spawn(env, env.args(), &all, extra)
    }

    /// Starts without the base flags `drop` (each with its value), with `extra` added.
    pub fn start_replacing(env: &Env, drop: &[&str], extra: &[&str]) -> Server {
        Server::spawn(env, env.args(), drop, extra)
    }

    pub fn start_with(env: &Env, extra: &[&str]) -> Server {
        Server::spawn(env, env.args(), extra, extra)
    }

    fn spawn(_env: &Env, base: Vec<String>, drop: &[&str], extra: &[&str]) -> Server {
        // Flags in `extra` replace the same base flags (clap refuses repeated flags).
        let mut args = Vec::new();
        let mut i = 0;
        while i < base.len() {
            if drop.contains(&base[i].as_str()) {
                i += 2;
                continue;
            }
            args.push(base[i].clone());
            i += 1;
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = server_command()
            .args(&args)
            .env("BAKERY_LOG", "info,tower_http=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bakery-server starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not report its address: {:?}",
                    log.lock().unwrap()
                );
            }
        };
        Server {
            child,
            base: format!("{addr}/api/v1"),
            log,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The address of the built-in TFTP server, from its `tftp listening on` log line.
    pub fn tftp_addr(&self) -> std::net::SocketAddr {
        let mut addr = None;
        let logged = eventually(Duration::from_secs(10), || {
            addr = self.log.lock().unwrap().iter().find_map(|l| {
                l.split("tftp listening on ")
                    .nth(1)
                    .map(|a| a.trim().to_owned())
            });
            addr.is_some()
        });
        assert!(
            logged,
            "no tftp address logged: {:?}",
            self.log.lock().unwrap()
        );
        addr.unwrap().parse().unwrap()
    }

    pub fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().unwrap()
    }

    pub fn delete(&self, path: &str) -> Response {
        self.client.delete(self.url(path)).send().unwrap()
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Response {
        self.client.post(self.url(path)).json(body).send().unwrap()
    }

    pub fn put_json(&self, path: &str, body: &serde_json::Value) -> Response {
        self.client.put(self.url(path)).json(body).send().unwrap()
    }

    pub fn post_bytes(&self, path: &str, body: Vec<u8>) -> Response {
        self.client.post(self.url(path)).body(body).send().unwrap()
    }

    /// `POST /oven/{id}/reset` (no body).
    pub fn reset(&self, id: &str) -> Response {
        self.client
            .post(self.url(&format!("/oven/{id}/reset")))
            .send()
            .unwrap()
    }

    /// A Pi shows up on the boot path (how Pis become known), from `addr` when given.
    pub fn boot_request(&self, serial: &str, file: &str, addr: Option<&str>) -> Response {
        let mut req = self
            .client
            .get(self.url(&format!("/files/{serial}/{file}")));
        if let Some(a) = addr {
            req = req.header("X-Forwarded-For", a);
        }
        req.send().unwrap()
    }

    /// Registers Pis `00000001..=n` (serials as 8 hex digits).
    pub fn add_pis(&self, n: u32) -> Vec<String> {
        (1..=n)
            .map(|i| {
                let serial = format!("{i:08x}");
                let resp = self.boot_request(&serial, "start.elf", None);
                assert_eq!(resp.status(), StatusCode::NOT_FOUND);
                serial
            })
            .collect()
    }

    pub fn upload_sample(&self, name: &str) -> Response {
        let image = std::fs::read(sample_image()).unwrap();
        self.client
            .post(self.url(&format!("/bakeforms/{name}")))
            .header("Content-Type", bakery_client::RAW_IMAGE_CONTENT_TYPE)
            .body(image)
            .send()
            .unwrap()
    }

    pub fn bake(&self, power_on: bool) -> PiInfo {
        let req = BakeRequest {
            bakeform_name: OS.into(),
            network: None,
            power_on: Some(power_on),
            root_kind: None,
            model: None,
            labels: Default::default(),
        };
        let resp = self.post_json("/fridge", &serde_json::to_value(&req).unwrap());
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        resp.json().unwrap()
    }

    pub fn wait_baked(&self, serial: &str) -> Response {
        self.get(&format!("/oven/{serial}?wait=baked&timeout=30"))
    }

    /// Bakes a Pi and waits until it is baked.
    pub fn bake_ready(&self, power_on: bool) -> PiInfo {
        let pi = self.bake(power_on);
        let resp = self.wait_baked(&pi.id);
        assert_eq!(resp.status(), StatusCode::OK);
        let pi: PiInfo = resp.json().unwrap();
        assert_eq!(pi.status.code(), 2, "{pi:?}");
        pi
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The first `max` lines of the server's log holding `needle` (for failure messages).
    pub fn log_lines(&self, needle: &str, max: usize) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|l| l.contains(needle))
            .take(max)
            .cloned()
            .collect()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the server (e.g. SIGHUP to reload its token file).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A sample Raspberry Pi OS image, built once per test run.
pub fn sample_image() -> &'static Path {
    static IMAGE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = IMAGE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.img");
        bakery_image::build_sample_image(&path, &bakery_image::SampleSpec::default())
            .expect("sample image builds (needs mkfs.ext4, debugfs)");
        (dir, path)
    });
    path
}

/// A server with the sample bakeform uploaded and `n` Pis registered.
pub fn ready_server(env: &Env, n: u32) -> (Server, Vec<String>) {
    let server = Server::start(env);
    let resp = server.upload_sample(OS);
    assert_eq!(resp.status(), StatusCode::CREATED, "{:?}", resp.text());
    let pis = server.add_pis(n);
    // New Pis are powered off in the background: let that finish before tests count calls.
    assert!(eventually(Duration::from_secs(10), || env
        .ppi_calls()
        .len()
        >= n as usize));
    (server, pis)
}

/// Every path under `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Type, mode, owner, size, mtime and link target of every entry under `dir`, `piConfig`
/// (made per Pi) left out.
pub fn fingerprint(dir: &Path) -> Vec<String> {
    fingerprint_with(dir, false)
}

/// [`fingerprint`] to the nanosecond, with device numbers and file contents.
pub fn exact_fingerprint(dir: &Path) -> Vec<String> {
    fingerprint_with(dir, true)
}

fn fingerprint_with(dir: &Path, exact: bool) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|p| !p.starts_with("piConfig"))
        .map(|p| {
            let path = dir.join(&p);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let target = std::fs::read_link(&path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let size = if meta.is_dir() { 0 } else { meta.size() };
            let owned = format!("{p} {:o} {}:{} {size}", meta.mode(), meta.uid(), meta.gid());
            if !exact {
                return format!("{owned} {} {target}", meta.mtime());
            }
            let content = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            format!(
                "{owned} {}.{} {:x} {target} {content:?}",
                meta.mtime(),
                meta.mtime_nsec(),
                meta.rdev(),
            )
        })
        .collect()
}

pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Time from `POST /fridge` to `?wait=baked` answering baked.
pub fn timed_bake(server: &Server) -> (Duration, PiInfo) {
    let started = Instant::now();
    let pi = server.bake_ready(false);
    (started.elapsed(), pi)
}

/// xorshift64*: enough randomness to pick moments, replayable from the seed.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }

    /// A moment to kill the server at while an operation taking about `window_ms` runs
    /// (up to a quarter past its end).
    pub fn moment_within(&mut self, window_ms: u64) -> Duration {
        Duration::from_millis(self.below(window_ms + window_ms / 4 + 5))
    }
}

/// The trial count and seed of a random crash test: `{var}_TRIALS` (else `default_trials`)
/// and `{var}_SEED` (else from the clock), printed under `label` so a run can be replayed.
pub fn trials_and_seed(var: &str, label: &str, default_trials: u64) -> (u64, u64) {
    let number = |suffix: &str| {
        std::env::var(format!("{var}_{suffix}"))
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
    };
    let trials = number("TRIALS").unwrap_or(default_trials);
    let seed = number("SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    println!("{label}: {trials} trials, {var}_SEED={seed}");
    (trials, seed)
}

/// Times one bake and one unbake (ms), so kills can be aimed inside them.
pub fn time_bake_and_unbake(server: &Server) -> (u64, u64) {
    let (bake, pi) = timed_bake(server);
    let t = Instant::now();
    assert_eq!(
        server.delete(&format!("/oven/{}", pi.id)).status(),
        StatusCode::OK
    );
    (bake.as_millis() as u64, t.elapsed().as_millis() as u64)
}

/// Lets `job` run for `delay`, SIGKILLs the server, waits for the job to end and starts the
/// server again on the same data.
pub fn kill_and_restart(
    server: &mut Server,
    env: &Env,
    job: std::thread::JoinHandle<()>,
    delay: Duration,
) {
    kill_and_restart_with(server, env, job, delay, &[]);
}

/// [`kill_and_restart`], restarting with the `extra` flags (see [`Server::start_with`]).
pub fn kill_and_restart_with(
    server: &mut Server,
    env: &Env,
    job: std::thread::JoinHandle<()>,
    delay: Duration,
    extra: &[&str],
) {
    std::thread::sleep(delay);
    server.kill9();
    let _ = job.join();
    *server = Server::start_with(env, extra);
}

/// The median of `times` (the upper one of an even count).
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Waits up to `timeout` until the warm pool dir `pool` holds exactly one entry other than
/// `not` and returns its name (entries are renamed in only when complete).
pub fn wait_one_pool_entry(pool: &Path, not: Option<&str>, timeout: Duration) -> String {
    let mut found = Vec::new();
    let filled = eventually(timeout, || {
        found = entries(pool);
        found.len() == 1 && Some(found[0].as_str()) != not
    });
    assert!(filled, "pool {} not filled: {found:?}", pool.display());
    found.remove(0)
}

/// The sample image's spec with `files` more 4 KiB files in directories of 500.
pub fn bulk_sample_spec(files: usize) -> bakery_image::SampleSpec {
    let mut spec = bakery_image::SampleSpec::default();
    spec.root_files.extend((0..files).map(|i| {
        (
            format!("usr/share/bulk/d{}/f{i}", i / 500),
            vec![b'x'; 4096],
        )
    }));
    spec
}
