//! `bakery-demo` run as a newcomer runs it: the real binary from a scratch working
//! directory, with a scratch `HOME` and `TMPDIR`. Every simulated Pi must be baked and booted
//! (each boot file fetched over TFTP and checked by pi-sim), and nothing written outside the
//! data dir.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bakery_client::{PiMap, PiState};
use serde_json::Value;

/// A scratch working dir, home and temp dir.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("bakery-demo-")
            .tempdir()
            .unwrap();
        for d in ["cwd", "home", "tmp"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The names in `dir`.
    fn names(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn demo(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bakery-demo"));
        for (var, _) in std::env::vars() {
            if var.starts_with("BAKERY_")
                || ["NFS_ADDRESS", "DB_PATH", "PPI_PATH", "PPI_CONFIG_PATH"].contains(&var.as_str())
            {
                cmd.env_remove(var);
            }
        }
        cmd.current_dir(self.path("cwd"))
            .env("HOME", self.path("home"))
            .env("TMPDIR", self.path("tmp"))
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.demo(args).output().unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn demo_bakes_and_boots_every_pi_and_writes_only_its_data_dir() {
    let s = Scratch::new();
    // No --data-dir: the default ./demo-data.
    let out = s.run(&["--pis", "3", "--exit-after-boot", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("stdout is not one JSON summary ({e}): {}", text(&out));
    });
    let data = std::fs::canonicalize(s.path("cwd/demo-data")).unwrap();
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(summary["dataDir"], data.display().to_string());
    assert_eq!(summary["model"], "pi4");
    let pis = summary["pis"].as_array().unwrap();
    assert_eq!(pis.len(), 3, "{summary:#}");
    let disks = format!("nfsroot=127.0.0.1:{}/disks/", data.display());
    let mut serials = Vec::new();
    for pi in pis {
        assert_eq!(pi["state"], "baked", "{pi:#}");
        assert_eq!(pi["baked"], true, "{pi:#}");
        assert_eq!(pi["booted"], true, "{pi:#}");
        assert_eq!(pi["bakeform"], "sample", "{pi:#}");
        assert_eq!(pi["address"], "127.0.0.1", "{pi:#}");
        assert!(pi["error"].is_null(), "{pi:#}");
        // Pi 4: start4.elf, config.txt, fixup4.dat, the dtb, the overlay, cmdline.txt, kernel.
        assert!(pi["files"].as_u64().unwrap() >= 7, "{pi:#}");
        assert!(pi["requests"].as_u64().unwrap() > pi["files"].as_u64().unwrap());
        assert!(pi["bytes"].as_u64().unwrap() > 700_000, "{pi:#}");
        assert!(pi["bootMs"].as_u64().is_some(), "{pi:#}");
        let cmdline = pi["cmdline"].as_str().unwrap();
        assert!(cmdline.contains(&disks), "{cmdline}");
        assert!(cmdline.contains("root=/dev/nfs"), "{cmdline}");
        serials.push(pi["serial"].as_str().unwrap().to_owned());
    }
    serials.dedup();
    assert_eq!(serials.len(), 3);

    // Each Pi's root is exported to the address it booted from, in the data dir's exports.
    let exports = std::fs::read_to_string(data.join("exports")).unwrap();
    assert_eq!(
        exports.lines().filter(|l| l.contains("127.0.0.1(")).count(),
        3,
        "{exports}"
    );
    // Nothing outside the data dir; the sample image is gone once uploaded.
    assert_eq!(s.names("cwd"), ["demo-data"]);
    assert!(s.names("home").is_empty(), "{:?}", s.names("home"));
    assert!(s.names("tmp").is_empty(), "{:?}", s.names("tmp"));
    assert!(data.join(".bakery-demo").is_file());
    assert!(!data.join("sample.img").exists());
}

#[test]
fn demo_refuses_a_foreign_dir_and_reuses_its_own_while_serving_until_stopped() {
    let s = Scratch::new();
    let data = s.path("cwd/data");
    let data_arg = data.display().to_string();

    // A directory that is not a demo's is left alone.
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("precious.txt"), "mine").unwrap();
    let out = s.run(&["--exit-after-boot", "--data-dir", &data_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was not made by a demo"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(data.join("precious.txt")).unwrap(),
        "mine"
    );
    std::fs::remove_dir_all(&data).unwrap();

    // A first demo (Pi 3s: bootcode.bin from the TFTP root first) with three Pis.
    let out = s.run(&[
        "--pis",
        "3",
        "--model",
        "pi3",
        "--exit-after-boot",
        "--data-dir",
        &data_arg,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("dec0000"))
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    for row in &rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cells[1..5],
            ["baked", "sample", "127.0.0.1", "booted"],
            "{row}"
        );
    }
    assert!(stdout.contains("3 of 3 pis booted"), "{stdout}");

    // A second demo in the same dir wipes it and serves until SIGTERM.
    let mut child = s
        .demo(&["--pis", "2", "--data-dir", &data_arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let url = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let url = line
                    .trim()
                    .strip_prefix("curl -s ")
                    .and_then(|u| u.strip_suffix("/pis"))
                    .map(str::to_owned);
                lines.push(line);
                if let Some(url) = url {
                    break url;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("no poke hints in {lines:#?}\n{}", text(&out));
            }
        }
    };
    let pis: PiMap = reqwest::blocking::get(format!("{url}/pis"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(pis.len(), 2, "the previous demo's Pis are gone: {pis:?}");
    assert!(
        pis.values().all(|p| p.state == Some(PiState::Baked)),
        "{pis:?}"
    );
    let cmdline = reqwest::blocking::get(format!("{url}/files/dec00001/cmdline.txt"))
        .unwrap()
        .text()
        .unwrap();
    assert!(cmdline.contains("nfsroot=127.0.0.1:"), "{cmdline}");

    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{lines:#?}\n{}", text(&out));
    assert_eq!(s.names("cwd"), ["data"]);
    assert!(s.names("home").is_empty() && s.names("tmp").is_empty());
    assert_no_stray(&data);
}

/// The data dir holds only what bakery and the demo put there.
fn assert_no_stray(data: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        assert!(
            [
                ".bakery-demo",
                "bakeforms",
                "disks",
                "pool",
                "snapshots",
                "tmp",
                "trash",
                "exports"
            ]
            .contains(&name.as_str())
                || name.starts_with("bakery.db"),
            "unexpected {name} in the data dir: {names:?}"
        );
    }
}

#[test]
fn demo_boots_pi5s() {
    let s = Scratch::new();
    let data = s.path("pi5-data");
    let out = s.run(&[
        "--pis",
        "2",
        "--model",
        "pi5",
        "--exit-after-boot",
        "--output",
        "json",
        "--data-dir",
        &data.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(summary["model"], "pi5");
    let pis = summary["pis"].as_array().unwrap();
    assert_eq!(pis.len(), 2, "{summary:#}");
    let kernel = std::fs::metadata(data.join("bakeforms/sample/boot/kernel_2712.img"))
        .unwrap()
        .len();
    for pi in pis {
        assert_eq!(pi["booted"], true, "{pi:#}");
        // config.txt, the 2712 dtb, the overlay, cmdline.txt, kernel_2712.img; no start4.elf.
        assert!(pi["files"].as_u64().unwrap() >= 5, "{pi:#}");
        assert!(pi["bytes"].as_u64().unwrap() > kernel, "{pi:#}");
        assert!(
            pi["cmdline"].as_str().unwrap().contains("root=/dev/nfs"),
            "{pi:#}"
        );
    }
    // Both roots are exported to the address the Pis booted from.
    let exports = std::fs::read_to_string(data.join("exports")).unwrap();
    assert_eq!(
        exports.lines().filter(|l| l.contains("127.0.0.1(")).count(),
        2
    );
}
