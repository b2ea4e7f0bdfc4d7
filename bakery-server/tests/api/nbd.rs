//! NBD roots on the wire: `bakery-server --nbd-config` with a real `nbd-server` (Debian
//! nbd-server) reading the config bakery wrote, and qemu's userspace NBD client (`qemu-img`,
//! Debian qemu-utils; this machine has no /dev/nbd*) reading each Pi's export, its ext4
//! checked with `debugfs`. As in `nfs.rs`, nbd-server and the clients run in a network
//! namespace where connecting to 127.0.0.3 comes from 127.0.0.2, so each Pi is tried from its
//! own address and from the other's; and that an NBD Pi's sparse image counts as space
//! promised when disks are made. Without the tools or a namespace the tests say why and pass,
//! unless `CI` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bakery_client::{PiInfo, RootKind};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;
use crate::nfs::{Netns, command_in, free_ports, which};

const A: &str = "000000a1";
const B: &str = "000000b2";

/// An nbd-server started (daemonized) in `netns` (`None`: the calling thread's namespace),
/// killed by its pid on drop.
pub(crate) struct NbdServer<'a> {
    netns: Option<&'a Netns>,
    pid_file: PathBuf,
    port: u16,
}

impl NbdServer<'_> {
    pub(crate) fn start<'a>(
        netns: Option<&'a Netns>,
        config: &Path,
        pid_file: PathBuf,
        port: u16,
    ) -> NbdServer<'a> {
        let out = command_in(netns, "nbd-server")
            .arg("-C")
            .arg(config)
            .arg("-p")
            .arg(&pid_file)
            .output()
            .unwrap();
        assert!(out.status.success(), "nbd-server: {out:?}");
        let server = NbdServer {
            netns,
            pid_file,
            port,
        };
        assert!(
            eventually(Duration::from_secs(5), || server.pid().is_some()),
            "nbd-server wrote no pid file"
        );
        server
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `qemu-img convert` of the export as seen from `from` (127.0.0.1, or 127.0.0.2 by
    /// connecting to 127.0.0.3) into `out`.
    fn read_export(&self, from: &str, out: &Path) -> Output {
        let to = if from == "127.0.0.2" {
            "127.0.0.3"
        } else {
            "127.0.0.1"
        };
        let _ = std::fs::remove_file(out);
        command_in(self.netns, "qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(format!("nbd://{to}:{}/bakery", self.port))
            .arg(out)
            .output()
            .unwrap()
    }
}

impl Drop for NbdServer<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the nbd-server this test started (its pid file).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

/// The content of `path` in the ext4 image `image` (debugfs), `None` if it has none.
pub(crate) fn cat_in(image: &Path, path: &str) -> Option<Vec<u8>> {
    let out = Command::new(which("debugfs").unwrap())
        .args(["-R", &format!("cat {path}")])
        .arg(image)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.success() && !err.contains("File not found")).then_some(out.stdout)
}

fn bake_nbd(server: &Server) -> PiInfo {
    let resp = server.post_json(
        "/fridge",
        &json!({"bakeformName": OS, "powerOn": false, "rootKind": "nbd"}),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{:?}", resp.text());
    let pi: PiInfo = resp.json().unwrap();
    let resp = server.wait_baked(&pi.id);
    assert_eq!(resp.status(), StatusCode::OK);
    let pi: PiInfo = resp.json().unwrap();
    assert_eq!(pi.status.code(), 2, "{pi:?}");
    assert_eq!(pi.root_kind, Some(RootKind::Nbd));
    pi
}

fn tools_or_skip() -> bool {
    let missing: Vec<&str> = ["nbd-server", "qemu-img", "debugfs", "ip"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nbd: missing {missing:?} in CI"
    );
    eprintln!("nbd: skipped, missing {missing:?}");
    false
}

#[test]
fn nbd_server_serves_each_pi_only_its_own_root_image() {
    if !tools_or_skip() {
        return;
    }
    let Some(netns) = Netns::make() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nbd: no network namespace in CI"
        );
        eprintln!("nbd: skipped, no network namespace");
        return;
    };
    let env = Env::new();
    let port = free_ports(1)[0];
    let config = env.path("nbd-server.conf");
    let mut flags = vec![
        "--nbd-config".to_owned(),
        config.display().to_string(),
        "--nbd-port".to_owned(),
        port.to_string(),
    ];
    flags.extend(["--warm-pool".to_owned(), "0".to_owned()]);
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_replacing(&env, &[], &refs);
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    // An NFS bake refuses nothing; an unknown kind is a 400 naming it.
    let resp = server.post_json("/fridge", &json!({"bakeformName": OS, "rootKind": "iscsi"}));
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().unwrap().contains("iscsi"));
    for (serial, addr) in [(A, "127.0.0.1"), (B, "127.0.0.2")] {
        let resp = server.boot_request(serial, "start4.elf", Some(addr));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&format!("port = {port}")), "{text}");
    let nbd = NbdServer::start(Some(&netns), &config, env.path("nbd-server.pid"), port);
    let out = env.path("export.img");

    // Nobody is served before a bake.
    assert!(!nbd.read_export("127.0.0.1", &out).status.success());

    let a = bake_nbd(&server);
    assert_eq!(a.id, A);
    let image_a = PathBuf::from(&a.disks[0].location).join("root.ext4");
    assert!(image_a.is_file(), "{}", image_a.display());
    let cmdline = server
        .boot_request(A, "cmdline.txt", Some("127.0.0.1"))
        .text()
        .unwrap();
    assert!(
        cmdline.contains(&format!("root=/dev/nbd0 nbdroot=10.0.0.2:{port}/bakery")),
        "{cmdline}"
    );
    assert!(!cmdline.contains("nfsroot="), "{cmdline}");

    let read = nbd.read_export("127.0.0.1", &out);
    assert!(read.status.success(), "{read:?}");
    let hostname = env.data().join(format!("bakeforms/{OS}/root/etc/hostname"));
    assert_eq!(
        cat_in(&out, "/etc/hostname").unwrap(),
        std::fs::read(hostname).unwrap()
    );
    // Pi B's address has no root yet: refused.
    assert!(!nbd.read_export("127.0.0.2", &out).status.success());

    let b = bake_nbd(&server);
    assert_eq!(b.id, B);
    let image_b = PathBuf::from(&b.disks[0].location).join("root.ext4");
    let marker = env.path("marker");
    std::fs::write(&marker, "pi b\n").unwrap();
    let w = Command::new(which("debugfs").unwrap())
        .args(["-w", "-R", &format!("write {} marker", marker.display())])
        .arg(&image_b)
        .output()
        .unwrap();
    assert!(w.status.success(), "{w:?}");
    assert!(nbd.read_export("127.0.0.2", &out).status.success());
    assert_eq!(cat_in(&out, "/marker").unwrap(), b"pi b\n");
    assert!(nbd.read_export("127.0.0.1", &out).status.success());
    assert_eq!(cat_in(&out, "/marker"), None, "pi a got pi b's root");

    // A reset gives A a fresh clone of the bakeform's image: a marker written into A's image
    // is gone afterwards, and B keeps its own.
    let w = Command::new(which("debugfs").unwrap())
        .args(["-w", "-R", &format!("write {} marker", marker.display())])
        .arg(&image_a)
        .output()
        .unwrap();
    assert!(w.status.success(), "{w:?}");
    assert!(nbd.read_export("127.0.0.1", &out).status.success());
    assert!(cat_in(&out, "/marker").is_some());
    assert_eq!(server.reset(A).status(), StatusCode::ACCEPTED);
    assert_eq!(server.wait_baked(A).status(), StatusCode::OK);
    assert!(nbd.read_export("127.0.0.1", &out).status.success());
    assert_eq!(cat_in(&out, "/marker"), None, "reset kept the old image");
    assert!(nbd.read_export("127.0.0.2", &out).status.success());
    assert_eq!(cat_in(&out, "/marker").unwrap(), b"pi b\n");

    // Unbaked: A's export is gone, B's stays.
    assert_eq!(
        server.delete(&format!("/oven/{A}")).status(),
        StatusCode::OK
    );
    assert!(!nbd.read_export("127.0.0.1", &out).status.success());
    assert!(nbd.read_export("127.0.0.2", &out).status.success());
    let allow = std::fs::read_to_string(env.data().join("nbd/allow")).unwrap();
    assert!(
        !allow.contains("127.0.0.1") && allow.contains("127.0.0.2"),
        "{allow}"
    );
}

/// The bytes an error names as "already promised to sparse disks" (`1.0 GiB (1073741824
/// bytes)`, or `0 bytes`).
fn promised_in(error: &str) -> u64 {
    let text = error
        .split(" needed, ")
        .nth(1)
        .and_then(|r| r.split(" already promised").next())
        .unwrap_or_else(|| panic!("no promise in {error:?}"));
    let exact = text.rsplit_once('(').map_or(text, |(_, bytes)| bytes);
    exact
        .trim_end_matches(')')
        .trim_end_matches(" bytes")
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {text:?} in {error:?}"))
}

#[test]
fn an_nbd_root_image_counts_as_promised_space() {
    if !tools_or_skip() {
        return;
    }
    let env = Env::new();
    let config = env.path("nbd-server.conf");
    let flags = ["--nbd-config", config.to_str().unwrap(), "--warm-pool", "0"];
    let server = Server::start_replacing(&env, &[], &flags);
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    server.boot_request(A, "start4.elf", Some("127.0.0.1"));
    // A disk bigger than all free space is refused whatever else is going on on this
    // machine; its message says what is promised already.
    let too_big = |server: &Server| {
        let resp = server.post_json("/disks", &json!({"size": 8u64 << 20}));
        assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
        promised_in(&resp.json::<bakery_client::ErrorBody>().unwrap().error)
    };
    assert_eq!(too_big(&server), 0);
    let pi = bake_nbd(&server);
    // The Pi's root.ext4 is sparse: 1 GiB and more of room it may still write into.
    let image = PathBuf::from(&pi.disks[0].location).join("root.ext4");
    let apparent = std::fs::metadata(&image).unwrap().len();
    let promised = too_big(&server);
    assert!(
        promised > (800 << 20) && promised <= apparent,
        "promised {promised} of an image of {apparent} bytes"
    );
    assert_eq!(
        server.delete(&format!("/oven/{A}")).status(),
        StatusCode::OK
    );
    assert_eq!(too_big(&server), 0);
}
