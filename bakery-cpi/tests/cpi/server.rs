//! The binary against a real `bakery-server`: a director's deploy and delete, v1 and v2, and
//! failure injection at each step of create_vm.
//!
//! The server binary is taken from next to `bakery-cpi` (`cargo test --workspace` builds it;
//! for `cargo test -p bakery-cpi` run `cargo build -p bakery-server` first). Without it these
//! tests print SKIP and pass.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bakery_client::blocking::Client;
use serde_json::{Value, json};

use crate::{Run, call};

/// A running bakery-server with a temp data dir, a recording PPI and a recording exportfs.
pub struct Bakery {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    client: Client,
    config: PathBuf,
}

const PPI: &str = r#"#!/bin/sh
dir=$(dirname "$0")
input=$(cat)
echo "$input" >> "$dir/ppi.log"
case "$input" in
  *poweron*) if [ -e "$dir/fail-poweron" ]; then echo "relay board unreachable"; exit 1; fi ;;
esac
printf ok
"#;

const EXPORTFS: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$@" >> "$dir/exportfs.log"
if [ -e "$dir/fail-exportfs" ]; then echo "exportfs: broken" >&2; exit 1; fi
exit 0
"#;

fn server_binary() -> Option<PathBuf> {
    let cpi = Path::new(env!("CARGO_BIN_EXE_bakery-cpi"));
    let server = cpi.with_file_name("bakery-server");
    if server.is_file() {
        Some(server)
    } else {
        eprintln!(
            "SKIP: {} not built; run `cargo build -p bakery-server` (cargo test --workspace does)",
            server.display()
        );
        None
    }
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write script");
    let mut permissions = std::fs::metadata(path).expect("script").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(path, permissions).expect("chmod");
}

impl Bakery {
    /// Start a server, or None (SKIP) when its binary is not built.
    pub fn start() -> Option<Bakery> {
        let binary = server_binary()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        script(&dir.path().join("ppi"), PPI);
        script(&dir.path().join("exportfs"), EXPORTFS);
        std::fs::write(dir.path().join("ppi.json"), "{}").expect("ppi config");
        let mut child = Command::new(binary)
            .arg("--listen=127.0.0.1:0")
            .arg("--tftp-listen=off")
            .arg(format!("--data-dir={}", data.display()))
            .arg("--nfs-address=127.0.0.1")
            .arg(format!("--ppi={}", dir.path().join("ppi").display()))
            .arg(format!(
                "--ppi-config={}",
                dir.path().join("ppi.json").display()
            ))
            .arg("--power-cycle-pause=0")
            .arg(format!(
                "--exports-file={}",
                dir.path().join("bakery.exports").display()
            ))
            .arg(format!(
                "--exportfs-cmd={}",
                dir.path().join("exportfs").display()
            ))
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bakery-server starts");
        let (lines, found) = mpsc::channel::<String>();
        let log = dir.path().join("server.log");
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = lines.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("server log");
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                    let _ = lines.send(line);
                }
            });
        }
        let address = loop {
            let line = found
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!(
                        "bakery-server did not say where it listens: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                });
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().expect("address").to_string();
            }
        };
        let url = format!("http://{address}/api/v1");
        let client = Client::new(&url).expect("client");
        let config = dir.path().join("cpi.json");
        std::fs::write(
            &config,
            json!({
                "url": url,
                "agent": {"mbus": "nats://nats:secret@10.0.0.3:4222",
                          "blobstore": {"provider": "dav", "options": {"endpoint": "http://10.0.0.3:25250"}},
                          "ntp": ["0.pool.ntp.org"]},
                "default_ephemeral_disk_mib": 16,
                "bake_timeout_seconds": 60
            })
            .to_string(),
        )
        .expect("cpi config");
        Some(Bakery {
            child,
            dir,
            url,
            client,
            config,
        })
    }

    /// Make a Pi known the only way Pis become known: it asks for a boot file.
    pub fn register(&self, serial: &str) {
        let address = self
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/api/v1");
        let mut stream = TcpStream::connect(address).expect("connect");
        write!(
            stream,
            "GET /api/v1/files/{serial}/start.elf HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        assert!(
            reply.starts_with("HTTP/1.1 404"),
            "unknown pi gets 404: {reply}"
        );
        assert!(self.client.any_pi(serial).is_ok(), "pi {serial} registered");
    }

    /// A sample SD-card image built with the bakeform tests' builder.
    pub fn image(&self) -> PathBuf {
        let path = self.dir.path().join("stemcell.img");
        if !path.exists() {
            bakery_image::sample::build_sample_image(
                &path,
                &bakery_image::sample::SampleSpec::default(),
            )
            .expect("sample image");
        }
        path
    }

    /// Call the CPI binary with the rendered config file and a director context.
    pub fn cpi(&self, method: &str, arguments: Value, api_version: u64) -> Run {
        let request = json!({
            "method": method, "arguments": arguments, "api_version": api_version,
            "context": {"director_uuid": "dir-1", "request_id": format!("req-{method}"),
                        "vm": {"stemcell": {"api_version": 2}}}
        });
        let run = call(Some(&self.config), &request);
        assert!(run.success, "{method}: exit code");
        run
    }

    /// Call and expect success; returns the result.
    pub fn ok(&self, method: &str, arguments: Value, api_version: u64) -> Value {
        let run = self.cpi(method, arguments, api_version);
        assert!(
            run.response["error"].is_null(),
            "{method} failed: {}\nserver log:\n{}",
            run.response,
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
        run.response["result"].clone()
    }

    /// Turn failure of a recording script on or off.
    pub fn fail(&self, what: &str, on: bool) {
        let flag = self.dir.path().join(format!("fail-{what}"));
        if on {
            std::fs::write(flag, "").expect("flag");
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }

    /// Ids of Pis not in the fridge.
    pub fn oven(&self) -> BTreeSet<String> {
        self.client.oven().expect("oven").into_keys().collect()
    }

    /// Ids of all disks.
    pub fn disks(&self) -> BTreeSet<String> {
        self.client
            .disks()
            .expect("disks")
            .disks
            .into_keys()
            .collect()
    }

    /// Names of all bakeforms.
    pub fn bakeforms(&self) -> BTreeSet<String> {
        self.client
            .bakeforms()
            .expect("bakeforms")
            .into_keys()
            .collect()
    }

    /// A file from a Pi's piConfig, as JSON.
    pub fn pi_file(&self, pi: &str, name: &str) -> Value {
        let bytes = self.client.download_pi_file(pi, name).expect("pi file");
        serde_json::from_slice(&bytes).expect("pi file is json")
    }
}

impl Drop for Bakery {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manual_network() -> Value {
    json!({"default": {"type": "manual", "ip": "10.0.0.21", "netmask": "255.255.255.0",
                       "gateway": "10.0.0.1", "dns": ["10.0.0.1"], "default": ["dns", "gateway"],
                       "cloud_properties": {}}})
}

fn deploy_and_delete(api_version: u64) {
    let Some(bakery) = Bakery::start() else {
        return;
    };
    bakery.register("1a2b3c4d");
    bakery.register("5e6f7a8b");
    let image = bakery.image();
    let image = image.to_str().expect("utf-8");
    let stemcell_props =
        json!({"name": "bosh-raspberrypi-ubuntu", "version": "1.5", "infrastructure": "bakery"});

    // stemcell, twice: the second upload replaces the first (bosh --fix)
    let stemcell = bakery.ok(
        "create_stemcell",
        json!([image, stemcell_props]),
        api_version,
    );
    assert_eq!(stemcell, json!("bosh-raspberrypi-ubuntu-1.5"));
    assert_eq!(
        bakery.ok(
            "create_stemcell",
            json!([image, stemcell_props]),
            api_version
        ),
        stemcell
    );
    assert_eq!(
        bakery.bakeforms(),
        BTreeSet::from(["bosh-raspberrypi-ubuntu-1.5".to_string()])
    );

    // the VM
    let env = json!({"bosh": {"group": "dir-dep-web", "groups": ["dir", "dep", "web"]}});
    let created = bakery.ok(
        "create_vm",
        json!(["agent-7", stemcell, {"ephemeral_disk": 32}, manual_network(), [], env]),
        api_version,
    );
    let vm = if api_version >= 2 {
        assert_eq!(created[1], manual_network(), "v2 returns the networks");
        assert_eq!(created.as_array().map(Vec::len), Some(2));
        created[0].as_str().expect("vm cid").to_string()
    } else {
        created.as_str().expect("v1 returns the vm cid").to_string()
    };
    assert!(
        ["1a2b3c4d", "5e6f7a8b"].contains(&vm.as_str()),
        "vm cid is a pi serial: {vm}"
    );
    assert_eq!(bakery.ok("has_vm", json!([vm]), api_version), json!(true));
    // the same from the context alone (a CPI config's properties), without a config file
    let from_context = call(
        None,
        &json!({"method": "has_vm", "arguments": [vm], "api_version": api_version,
                "context": {"director_uuid": "dir-1", "request_id": "r", "url": bakery.url}}),
    );
    assert_eq!(
        from_context.response["result"],
        json!(true),
        "{}",
        from_context.response
    );
    let pi = bakery.client.pi(&vm).expect("pi");
    assert_eq!(pi.status.code(), 2);
    let network = pi.network.as_ref().expect("static network recorded");
    assert_eq!(
        (network.ip.as_str(), network.netmask.as_str()),
        ("10.0.0.21", "255.255.255.0")
    );
    assert_eq!(pi.disks.len(), 2, "root + ephemeral");
    let ephemeral = pi.disks[1].clone();
    assert!(ephemeral.ephemeral);
    assert_eq!(ephemeral.size, 32);

    let settings = bakery.pi_file(&vm, "settings.json");
    assert_eq!(
        settings,
        json!({
            "agent_id": "agent-7",
            "vm": {"name": vm, "id": vm},
            "networks": {"default": {"type": "manual", "ip": "10.0.0.21", "netmask": "255.255.255.0",
                                     "gateway": "10.0.0.1", "dns": ["10.0.0.1"], "default": ["dns", "gateway"],
                                     "cloud_properties": {}, "preconfigured": true}},
            "disks": {"system": "/dev/nfs", "ephemeral": format!("/dev/disk/bakery/{}", ephemeral.id), "persistent": {}},
            "env": env,
            "mbus": "nats://nats:secret@10.0.0.3:4222",
            "blobstore": {"provider": "dav", "options": {"endpoint": "http://10.0.0.3:25250"}},
            "ntp": ["0.pool.ntp.org"]
        })
    );
    assert_eq!(
        bakery.pi_file(&vm, "disks.json"),
        json!([{"id": ephemeral.id, "location": ephemeral.location, "nfsAddress": "127.0.0.1",
                "size": 32, "ephemeral": true, "path": format!("/dev/disk/bakery/{}", ephemeral.id)}])
    );
    let ppi_log = std::fs::read_to_string(bakery.dir.path().join("ppi.log")).unwrap_or_default();
    assert!(
        ppi_log.contains(&format!("\"piId\":\"{vm}\"")) && ppi_log.contains("poweron"),
        "the pi was powered on: {ppi_log}"
    );

    // metadata
    bakery.ok(
        "set_vm_metadata",
        json!([vm, {"director": "dir", "deployment": "dep", "name": "web/0"}]),
        api_version,
    );
    let pi = bakery.client.any_pi(&vm).expect("pi");
    assert_eq!(pi.metadata.get("name"), Some(&json!("web/0")));

    // a persistent disk
    let disk = bakery.ok("create_disk", json!([64, {}, vm]), api_version);
    let disk = disk.as_str().expect("disk cid").to_string();
    assert_eq!(
        bakery.ok("has_disk", json!([disk]), api_version),
        json!(true)
    );
    let hint = bakery.ok("attach_disk", json!([vm, disk]), api_version);
    let path = format!("/dev/disk/bakery/{disk}");
    if api_version >= 2 {
        assert_eq!(hint, json!({ "path": path }));
    } else {
        assert_eq!(hint, Value::Null);
    }
    let settings = bakery.pi_file(&vm, "settings.json");
    assert_eq!(
        settings["disks"]["persistent"],
        json!({ disk.as_str(): {"path": path} })
    );
    let disks_json = bakery.pi_file(&vm, "disks.json");
    let ids: Vec<&str> = disks_json
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, [ephemeral.id.as_str(), disk.as_str()], "attach order");
    assert_eq!(
        bakery.ok("get_disks", json!([vm]), api_version),
        json!([disk])
    );
    bakery.ok(
        "set_disk_metadata",
        json!([disk, {"director": "dir", "instance_index": "0"}]),
        api_version,
    );
    assert_eq!(
        bakery
            .client
            .disk(&disk)
            .expect("disk")
            .metadata
            .get("instance_index"),
        Some(&json!("0"))
    );

    // a snapshot of the attached disk, with the director's metadata; deleted twice
    let snapshot = bakery.ok(
        "snapshot_disk",
        json!([disk, {"deployment": "dep", "job": "web", "index": 0}]),
        api_version,
    );
    let snapshot = snapshot.as_str().expect("snapshot cid").to_string();
    let taken = bakery.client.snapshot(&snapshot).expect("snapshot");
    assert_eq!(taken.disk, disk);
    assert_eq!(taken.metadata.get("job"), Some(&json!("web")));
    bakery.ok("delete_snapshot", json!([snapshot]), api_version);
    bakery.ok("delete_snapshot", json!([snapshot]), api_version);
    assert!(
        bakery
            .client
            .snapshot(&snapshot)
            .unwrap_err()
            .is_not_found()
    );

    // get_disks of another VM does not list it
    if api_version >= 2 {
        let other = bakery.ok(
            "create_vm",
            json!(["agent-8", stemcell, {"ephemeral_disk": 0}, {}, [], {}]),
            2,
        );
        assert_eq!(bakery.ok("get_disks", json!([other[0]]), 2), json!([]));
        bakery.ok("delete_vm", json!([other[0]]), 2);
    }
    bakery.ok("reboot_vm", json!([vm]), api_version);

    // the director's delete: v2 detaches first; v1 deletes the VM with the disk still
    // attached (the director may), which must detach and keep it
    if api_version >= 2 {
        bakery.ok("detach_disk", json!([vm, disk]), api_version);
        assert_eq!(bakery.ok("get_disks", json!([vm]), api_version), json!([]));
        assert_eq!(
            bakery.pi_file(&vm, "settings.json")["disks"]["persistent"],
            json!({})
        );
    }
    bakery.ok("delete_vm", json!([vm]), api_version);
    assert_eq!(bakery.client.disk(&disk).expect("kept").attached_to, None);
    let run = bakery.cpi("get_disks", json!([vm]), api_version);
    assert_eq!(run.error_type(), Some("Bosh::Clouds::VMNotFound"));
    assert_eq!(bakery.ok("has_vm", json!([vm]), api_version), json!(false));
    bakery.ok("delete_vm", json!([vm]), api_version);
    assert!(bakery.oven().is_empty());
    assert_eq!(
        bakery.disks(),
        BTreeSet::from([disk.clone()]),
        "ephemeral gone, persistent kept"
    );
    bakery.ok("resize_disk", json!([disk, 128]), api_version);
    assert_eq!(bakery.client.disk(&disk).expect("disk").size, 128);
    // update_disk grows in place and answers the same cid; shrinking is NotSupported, on
    // which the director falls back to create, migrate and orphan
    assert_eq!(
        bakery.ok("update_disk", json!([disk, 192, {}]), api_version),
        json!(disk)
    );
    assert_eq!(bakery.client.disk(&disk).expect("disk").size, 192);
    let run = bakery.cpi("update_disk", json!([disk, 64, {}]), api_version);
    assert_eq!(run.error_type(), Some("Bosh::Clouds::NotSupported"));
    assert!(run.message().contains("cannot shrink"), "{}", run.message());
    assert_eq!(bakery.client.disk(&disk).expect("disk").size, 192);
    let gone = "0f0f0f0f-0000-4000-8000-000000000000";
    let run = bakery.cpi("update_disk", json!([gone, 64, {}]), api_version);
    assert_eq!(run.error_type(), Some("Bosh::Clouds::DiskNotFound"));
    bakery.ok("delete_disk", json!([disk]), api_version);
    bakery.ok("delete_disk", json!([disk]), api_version);
    assert_eq!(
        bakery.ok("has_disk", json!([disk]), api_version),
        json!(false)
    );
    bakery.ok("delete_stemcell", json!([stemcell]), api_version);
    bakery.ok("delete_stemcell", json!([stemcell]), api_version);
    assert!(bakery.bakeforms().is_empty());
    assert!(bakery.disks().is_empty());
}

#[test]
fn director_deploy_and_delete_api_v2() {
    deploy_and_delete(2);
}

#[test]
fn director_deploy_and_delete_api_v1() {
    deploy_and_delete(1);
}

/// Each injected failure: create_vm answers VMCreationFailed and leaves nothing behind.
#[test]
fn create_vm_failures_leave_nothing_behind() {
    let Some(bakery) = Bakery::start() else {
        return;
    };
    bakery.register("1a2b3c4d");
    let image = bakery.image();
    let stemcell = bakery.ok(
        "create_stemcell",
        json!([image.to_str().expect("utf-8"), {"name": "s", "version": "1"}]),
        2,
    );
    let kept = bakery.ok("create_disk", json!([8, {}, null]), 2);
    let disks = bakery.disks();
    let bakeforms = bakery.bakeforms();
    let create = |cloud_properties: Value, stemcell: &Value| {
        bakery.cpi(
            "create_vm",
            json!([
                "agent-1",
                stemcell,
                cloud_properties,
                manual_network(),
                [kept],
                {}
            ]),
            2,
        )
    };
    let check = |what: &str, run: &Run, retry: bool| {
        assert_eq!(
            run.error_type(),
            Some("Bosh::Clouds::VMCreationFailed"),
            "{what}: {}",
            run.response
        );
        assert_eq!(run.response["error"]["ok_to_retry"], json!(retry), "{what}");
        assert!(
            !run.message().contains("undo incomplete"),
            "{what}: {}",
            run.message()
        );
        assert!(bakery.oven().is_empty(), "{what}: a pi is left in the oven");
        assert_eq!(bakery.disks(), disks, "{what}: disks changed");
        assert_eq!(bakery.bakeforms(), bakeforms, "{what}: bakeforms changed");
    };

    // the PPI cannot power the Pi on
    bakery.fail("poweron", true);
    let run = create(json!({}), &stemcell);
    check("ppi failing", &run, false);
    assert!(
        run.message().contains("relay board unreachable"),
        "{}",
        run.message()
    );
    bakery.fail("poweron", false);

    // the NFS export fails, so the bake fails (409 from the long-poll)
    bakery.fail("exportfs", true);
    let run = create(json!({}), &stemcell);
    check("exportfs failing", &run, false);
    assert!(
        run.message().contains("exportfs: broken"),
        "{}",
        run.message()
    );
    bakery.fail("exportfs", false);

    // no space for the ephemeral disk
    let run = create(json!({"ephemeral_disk": 1i64 << 40}), &stemcell);
    check("disk too large", &run, false);

    // an unknown stemcell
    let run = create(json!({}), &json!("no-such-stemcell"));
    check("unknown stemcell", &run, false);

    // no free Pi: the only one is baked by an earlier create_vm
    let vm = bakery.ok("create_vm", json!(["agent-0", stemcell, {}, {}, [], {}]), 2);
    let oven = bakery.oven();
    let disks_with_vm = bakery.disks();
    let run = create(json!({}), &stemcell);
    assert_eq!(run.error_type(), Some("Bosh::Clouds::VMCreationFailed"));
    assert_eq!(
        run.response["error"]["ok_to_retry"],
        json!(true),
        "no free pi may be retried"
    );
    assert_eq!(bakery.oven(), oven);
    assert_eq!(bakery.disks(), disks_with_vm);
    bakery.ok("delete_vm", json!([vm[0]]), 2);
    assert!(bakery.oven().is_empty());
    assert_eq!(bakery.disks(), disks);
}
