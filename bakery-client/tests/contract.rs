//! Contract tests against the REAL `bakery-server` binary (temp data dir, loopback, no PPI,
//! no TFTP): a whole life cycle through the client, and the `bakery` CLI against it.
//!
//! This crate cannot depend on bakery-server (it depends on us), so the binary is looked up
//! next to `bakery` in the target dir (or at `$BAKERY_SERVER_BIN`); build it first with
//! `cargo build -p bakery-server` (`cargo test --workspace` does). Without it the tests say so
//! loudly on stderr and pass without checking anything.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bakery_client::blocking::Client;
use bakery_client::{
    BakeformState, ClientBuilder, CreateDiskRequest, Error, ErrorKind, PiState, PiStatus, Progress,
};
use serde_json::Value;

/// The server binary, if it has been built.
fn server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BAKERY_SERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    let bakery = Path::new(env!("CARGO_BIN_EXE_bakery"));
    let candidate = bakery.parent()?.join("bakery-server");
    candidate.is_file().then_some(candidate)
}

/// A running server; killed (and its data dir removed) on drop.
struct Server {
    child: Child,
    base_url: String,
    log: Arc<Mutex<String>>,
    data: tempfile::TempDir,
}

impl Server {
    /// Starts the server on 127.0.0.1:0 and waits for its "listening on" line.
    fn start(binary: &Path) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let exports = data.path().join("bakery.exports");
        let data_dir = data.path().join("data");
        let mut child = Command::new(binary)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--tftp-listen")
            .arg("off")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--nfs-address")
            .arg("127.0.0.1")
            .arg("--exports-file")
            .arg(&exports)
            .arg("--exportfs-cmd")
            .arg("")
            .env("BAKERY_LOG", "info")
            .env_remove("BAKERY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bakery-server starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        // keep draining stderr for the whole run, so the server never blocks on a full pipe
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let addr = line[at + "listening on http://".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().expect("not poisoned");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "bakery-server did not say where it listens; its log:\n{}",
                    log.lock().expect("not poisoned")
                );
            }
        };
        Server {
            child,
            base_url: format!("http://{addr}/api/v1"),
            log,
            data,
        }
    }

    fn client(&self) -> Client {
        Client::from_builder(ClientBuilder::new(self.base_url.clone())).expect("client")
    }

    /// Makes a Pi known the only way Pis become known: asking for a boot file.
    fn register_pi(&self, serial: &str) {
        let url = format!("{}/files/{serial}/start.elf", self.base_url);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let status = runtime
            .block_on(async { reqwest::get(&url).await.map(|r| r.status().as_u16()) })
            .expect("GET /files answered");
        assert_eq!(status, 404, "a Pi that is not baked gets no boot files");
    }

    fn log(&self) -> String {
        self.log.lock().expect("not poisoned").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "bakery-server log (data dir {}):\n{}",
                self.data.path().display(),
                self.log()
            );
        }
    }
}

macro_rules! server_or_skip {
    () => {
        match server_binary() {
            Some(binary) => Server::start(&binary),
            None => {
                eprintln!(
                    "\n!!!! SKIPPED: no bakery-server binary next to {} (run `cargo build -p bakery-server`, or set BAKERY_SERVER_BIN) !!!!\n",
                    env!("CARGO_BIN_EXE_bakery")
                );
                return;
            }
        }
    };
}

fn sample_image(dir: &Path) -> PathBuf {
    let image = dir.join("sample.img");
    bakery_image::sample::build_sample_image(&image, &bakery_image::sample::SampleSpec::default())
        .expect("sample image builds");
    image
}

#[test]
fn whole_life_cycle_through_the_client() {
    let server = server_or_skip!();
    let client = server.client();
    let work = tempfile::tempdir().expect("temp dir");
    let image = sample_image(work.path());
    let size = std::fs::metadata(&image).expect("image").len();

    server.register_pi("1a2b3c4d");
    let fridge = client.fridge().expect("fridge");
    assert_eq!(fridge["1a2b3c4d"].status, PiStatus::NotInUse);

    // upload image
    let last = Arc::new(Mutex::new(None));
    let record = Arc::clone(&last);
    let form = client
        .upload_bakeform(
            "sample",
            &image,
            Some(Box::new(move |p: Progress| {
                *record.lock().expect("not poisoned") = Some(p)
            })),
        )
        .expect("bakeform uploaded");
    assert_eq!(form.name, "sample");
    assert_eq!(
        *last.lock().expect("not poisoned"),
        Some(Progress {
            sent: size,
            total: size
        })
    );
    assert_eq!(
        client.bakeform("sample").expect("bakeform").state,
        Some(BakeformState::Ready)
    );
    assert!(
        client
            .bakeforms()
            .expect("bakeforms")
            .contains_key("sample")
    );
    let again = client.upload_bakeform("sample", &image, None).unwrap_err();
    assert_eq!(again.status(), Some(403), "{again}");

    // bake, wait
    let accepted = client.bake_from("sample").expect("bake accepted");
    assert_eq!(accepted.id, "1a2b3c4d");
    let baked = client
        .wait_baked(&accepted.id, Duration::from_secs(120))
        .expect("baked");
    assert_eq!(baked.status, PiStatus::InUse);
    assert_eq!(baked.state, Some(PiState::Baked));
    assert!(client.is_baked("1a2b3c4d").expect("answer"));
    assert_eq!(
        baked.source_bakeform.as_ref().map(|b| b.name.as_str()),
        Some("sample")
    );
    let root = baked.disks.first().expect("a root disk").clone();
    assert_eq!(root.nfs_address, "127.0.0.1");
    let none_left = client.bake_from("sample").unwrap_err();
    assert!(none_left.is_not_found(), "{none_left}");
    assert_eq!(none_left.server_message(), Some("no available Pi found"));
    let in_use = client.delete_bakeform("sample").unwrap_err();
    assert_eq!(in_use.status(), Some(409), "{in_use}");

    // attach a disk
    let disk = client
        .create_disk(&CreateDiskRequest {
            size: 8,
            ephemeral: false,
        })
        .expect("disk created");
    assert_eq!(disk.size, 8);
    assert!(client.disk_exists(&disk.id).expect("answer"));
    client.attach_disk("1a2b3c4d", &disk.id).expect("attached");
    let with_disk = client.pi("1a2b3c4d").expect("pi");
    assert_eq!(with_disk.disks.len(), 2);
    assert_eq!(with_disk.disks[0].id, root.id, "root stays first");
    assert_eq!(with_disk.disks[1].id, disk.id);
    let attached = client.delete_disk(&disk.id).unwrap_err();
    assert_eq!(attached.status(), Some(409), "{attached}");
    let root_detach = client.detach_disk("1a2b3c4d", &root.id).unwrap_err();
    assert_eq!(root_detach.status(), Some(403), "{root_detach}");

    // metadata, oven, resize and disk metadata
    let mut metadata = bakery_client::Metadata::new();
    metadata.insert("deployment".into(), serde_json::json!("cf"));
    let tagged = client
        .set_pi_metadata("1a2b3c4d", &metadata)
        .expect("pi metadata set");
    assert_eq!(tagged.metadata, metadata);
    assert_eq!(client.pi("1a2b3c4d").expect("pi").metadata, metadata);
    assert!(client.oven().expect("oven").contains_key("1a2b3c4d"));
    assert!(!client.fridge().expect("fridge").contains_key("1a2b3c4d"));
    let attached_resize = client.resize_disk(&disk.id, 16).unwrap_err();
    assert_eq!(attached_resize.status(), Some(409), "{attached_resize}");
    let disk_tagged = client
        .set_disk_metadata(&disk.id, &metadata)
        .expect("disk metadata set");
    assert_eq!(disk_tagged.metadata, metadata);
    let ephemeral = client
        .create_disk(&CreateDiskRequest {
            size: 4,
            ephemeral: true,
        })
        .expect("ephemeral disk created");
    assert!(ephemeral.ephemeral);
    client
        .attach_disk("1a2b3c4d", &ephemeral.id)
        .expect("ephemeral attached");

    // config file round trip
    let settings = br#"{"agent_id":"agent-1","mbus":"nats://10.0.0.2:4222"}"#.to_vec();
    client
        .upload_pi_file("1a2b3c4d", "settings.json", settings.clone())
        .expect("file uploaded");
    assert_eq!(
        client
            .download_pi_file("1a2b3c4d", "settings.json")
            .expect("file downloaded"),
        settings
    );
    assert!(
        client
            .download_pi_file("1a2b3c4d", "missing.json")
            .unwrap_err()
            .is_not_found()
    );

    // detach, unbake, delete disk, delete image
    client.detach_disk("1a2b3c4d", &disk.id).expect("detached");
    let remaining: Vec<String> = client
        .pi("1a2b3c4d")
        .expect("pi")
        .disks
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(remaining, [root.id.clone(), ephemeral.id.clone()]);
    let shrink = client.resize_disk(&disk.id, 4).unwrap_err();
    assert_eq!(shrink.status(), Some(400), "{shrink}");
    assert_eq!(client.resize_disk(&disk.id, 16).expect("resized").size, 16);
    let reset = client.reset("1a2b3c4d").expect("reset accepted");
    assert_eq!(reset.status, PiStatus::Preparing);
    let rebaked = client
        .wait_baked("1a2b3c4d", Duration::from_secs(120))
        .expect("baked again");
    assert!(
        rebaked.disks.iter().any(|d| d.id == ephemeral.id),
        "reset keeps the other disks: {rebaked:?}"
    );
    assert_eq!(
        client
            .download_pi_file("1a2b3c4d", "settings.json")
            .expect("piConfig kept"),
        settings
    );
    client.power_cycle("1a2b3c4d").expect("power-cycled");
    client.unbake("1a2b3c4d").expect("unbaked");
    let back = wait_for_fridge(&client, "1a2b3c4d");
    assert!(back.disks.is_empty(), "{back:?}");
    assert!(
        client.disk_exists(&disk.id).expect("answer"),
        "a detached disk survives the unbake"
    );
    assert!(
        !client.disk_exists(&ephemeral.id).expect("answer"),
        "an ephemeral disk goes with the unbake"
    );
    assert!(!client.is_baked("1a2b3c4d").expect("answer"));
    let not_baked = client.unbake("1a2b3c4d").unwrap_err();
    assert!(
        matches!(not_baked.status(), Some(403) | Some(404)),
        "{not_baked}"
    );
    client.delete_disk(&disk.id).expect("disk deleted");
    assert!(!client.disk_exists(&disk.id).expect("answer"));
    client
        .delete_disk(&disk.id)
        .expect("deleting again is fine");
    client.delete_bakeform("sample").expect("bakeform deleted");
    assert!(client.bakeform("sample").unwrap_err().is_not_found());
    assert!(client.bakeforms().expect("bakeforms").is_empty());
}

/// Unbake is answered before the Pi is back in the fridge: wait (bounded) until it is.
fn wait_for_fridge(client: &Client, pi: &str) -> bakery_client::PiInfo {
    for _ in 0..100 {
        let info = client.any_pi(pi).expect("any pi");
        if info.status == PiStatus::NotInUse {
            return info;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("pi {pi} did not come back to the fridge");
}

#[test]
fn errors_of_the_real_server_map_to_the_right_variants() {
    let server = server_or_skip!();
    let client = server.client();
    assert!(client.pi("ffff0000").unwrap_err().is_not_found());
    assert!(client.any_pi("ffff0000").unwrap_err().is_not_found());
    assert!(!client.is_baked("ffff0000").expect("answer"));
    assert!(
        !client
            .disk_exists("00000000-0000-4000-8000-000000000000")
            .expect("answer")
    );
    // The server answers 400 to an id that is no UUID: no such disk either.
    assert!(!client.disk_exists("not-a-disk-id").expect("answer"));
    let bad_size = client
        .create_disk(&CreateDiskRequest {
            size: 0,
            ephemeral: false,
        })
        .unwrap_err();
    assert_eq!(bad_size.status(), Some(400), "{bad_size}");
    let unknown_form = client.bake_from("nope").unwrap_err();
    assert_eq!(unknown_form.status(), Some(400), "{unknown_form}");
    assert_eq!(unknown_form.kind(), Some(ErrorKind::UnknownBakeform));
    let work = tempfile::tempdir().expect("temp dir");
    let junk = work.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 4096]).expect("written");
    match client.upload_bakeform("junk", &junk, None) {
        Err(Error::Status {
            status, message, ..
        }) => {
            assert_eq!(status, 400);
            assert!(!message.is_empty());
        }
        other => panic!("expected 400 for a junk image, got {other:?}"),
    }
    // The failed import stays listed, failed with the importer's message and no files.
    let failed = client.bakeform("junk").expect("failed bakeform listed");
    assert_eq!(failed.state, Some(bakery_client::BakeformState::Failed));
    assert!(failed.error.is_some_and(|e| !e.is_empty()));
    // Baking from it is refused, naming why; deleting it works.
    let not_ready = client.bake_from("junk").unwrap_err();
    assert_eq!(not_ready.status(), Some(400), "{not_ready}");
    client
        .delete_bakeform("junk")
        .expect("failed bakeform deleted");
    assert!(client.bakeform("junk").unwrap_err().is_not_found());
}

#[test]
fn cli_life_cycle_against_the_real_server() {
    let server = server_or_skip!();
    server.register_pi("bbbb0001");
    let work = tempfile::tempdir().expect("temp dir");
    let image = sample_image(work.path());
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_bakery"))
            .args(args)
            .env("BAKERY_URL", &server.base_url)
            .env_remove("BAKERY_TOKEN")
            .env("BAKERY_OUTPUT", "json")
            .output()
            .expect("bakery runs");
        assert_eq!(
            output.status.code(),
            Some(0),
            "bakery {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let json = |args: &[&str]| -> Value { serde_json::from_slice(&run(args)).expect("json") };
    let image = image.to_str().expect("utf-8 path");
    assert_eq!(json(&["bakeform", "upload", "cli", image])["name"], "cli");
    assert_eq!(json(&["bakeform", "list"])["cli"]["state"], "ready");
    let baked = json(&["pi", "bake", "cli", "--wait", "--wait-timeout", "120"]);
    assert_eq!(baked["id"], "bbbb0001");
    assert_eq!(baked["status"], 2);
    assert_eq!(json(&["pi", "show", "bbbb0001"])["state"], "baked");
    let disk = json(&["disk", "create", "--size", "4", "--ephemeral"]);
    let id = disk["id"].as_str().expect("disk id").to_owned();
    assert!(run(&["disk", "attach", "bbbb0001", &id]).is_empty());
    assert_eq!(
        json(&["disk", "list"])["disks"][&id]["attachedTo"],
        "bbbb0001"
    );
    assert!(run(&["disk", "detach", "bbbb0001", &id]).is_empty());
    assert!(run(&["pi", "power-cycle", "bbbb0001"]).is_empty());
    assert!(run(&["pi", "unbake", "bbbb0001"]).is_empty());
    assert!(run(&["disk", "delete", &id]).is_empty());
    let client = server.client();
    wait_for_fridge(&client, "bbbb0001");
    assert!(run(&["bakeform", "delete", "cli"]).is_empty());
    assert_eq!(json(&["bakeform", "list"]), serde_json::json!({}));
}

#[test]
fn cli_against_the_real_server() {
    let server = server_or_skip!();
    server.register_pi("aaaa0001");
    server.register_pi("aaaa0002");
    let bakery = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bakery"))
            .args(args)
            .env("BAKERY_URL", &server.base_url)
            .env_remove("BAKERY_TOKEN")
            .env_remove("BAKERY_OUTPUT")
            .output()
            .expect("bakery runs")
    };
    let listed = bakery(&["-o", "json", "pi", "list"]);
    assert_eq!(listed.status.code(), Some(0));
    let pis: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(pis["aaaa0001"]["status"], 1);
    assert_eq!(pis["aaaa0002"]["status"], 1);
    let table = bakery(&["pi", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("ID "), "{text}");
    assert!(text.contains("aaaa0001  fridge"), "{text}");

    let created = bakery(&["-o", "json", "disk", "create", "--size", "4"]);
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    let disk: Value = serde_json::from_slice(&created.stdout).expect("json");
    let id = disk["id"].as_str().expect("disk id").to_owned();
    let list = bakery(&["disk", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id));
    assert_eq!(bakery(&["disk", "delete", &id]).status.code(), Some(0));

    let missing = bakery(&["pi", "show", "ffff0000"]);
    assert_eq!(missing.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.starts_with("bakery: ") && stderr.contains("ffff0000"),
        "{stderr}"
    );
    let unbake = bakery(&["pi", "unbake", "aaaa0001"]);
    assert_eq!(unbake.status.code(), Some(5), "not baked → refused");
}
