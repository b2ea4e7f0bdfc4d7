//! The boot path of the real binary: `--tftp-listen 127.0.0.1:0` starts the built-in TFTP
//! server (its address logged as `tftp listening on ...`); unknown Pis asking for files are
//! registered, a baked Pi boots (pi-sim, every byte checked), curl's `tftp://` and tftp-hpa
//! fetch its files byte for byte, and a Pi that is not baked gets nothing.

use std::path::Path;
use std::process::Command;

use bakery_client::PiState;
use bakery_tftp::{FetchOptions, fetch};
use pi_sim::{BootOptions, Model};

use crate::common::*;

fn tool(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

#[test]
fn the_binary_serves_the_boot_path_over_tftp_to_real_clients() {
    let env = Env::new();
    let server =
        Server::start_replacing(&env, &["--tftp-listen"], &["--tftp-listen", "127.0.0.1:0"]);
    let tftp = server.tftp_addr();
    let resp = server.upload_sample(OS);
    assert_eq!(
        resp.status(),
        reqwest::StatusCode::CREATED,
        "{:?}",
        resp.text()
    );
    let boot_dir = env.data().join("bakeforms").join(OS).join("boot");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Two unknown Pis ask for their first file over TFTP: not found, both now in the fridge.
    let opts = FetchOptions {
        tsize: true,
        blksize: Some(1468),
        ..FetchOptions::default()
    };
    for serial in ["5e5e0001", "5e5e0002"] {
        let err = runtime
            .block_on(fetch(tftp, &format!("{serial}/start4.elf"), &opts))
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
        let pi: bakery_client::PiInfo = server.get(&format!("/pis/{serial}")).json().unwrap();
        assert_eq!(pi.state, Some(PiState::Fridge));
        assert_eq!(pi.address.as_deref(), Some("127.0.0.1"));
    }
    let baked = server.bake_ready(true).id;
    let other = if baked == "5e5e0001" {
        "5e5e0002"
    } else {
        "5e5e0001"
    };

    // The baked Pi boots (Pi 4 sequence, probes and size queries included), every byte checked.
    let report = runtime
        .block_on(pi_sim::boot(
            tftp,
            &baked,
            Model::Pi4,
            &boot_dir,
            &BootOptions::default(),
        ))
        .unwrap();
    assert!(
        report.files.iter().filter(|f| f.found).count() >= 7,
        "{report:?}"
    );
    assert!(
        report.cmdline.contains("nfsroot=10.0.0.2:"),
        "{}",
        report.cmdline
    );
    // The Pi that is not baked gets nothing.
    let err = runtime
        .block_on(pi_sim::boot(
            tftp,
            other,
            Model::Pi4,
            &boot_dir,
            &BootOptions::default(),
        ))
        .unwrap_err();
    assert!(matches!(err, pi_sim::SimError::Missing { .. }), "{err}");

    let want = std::fs::read(boot_dir.join("start4.elf")).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    match tool("curl") {
        None => {
            eprintln!("SKIPPED curl tftp:// checks: curl is not installed (apt-get install curl)")
        }
        Some(curl) => {
            for blksize in [None, Some("1468")] {
                let file = out_dir.path().join("curl-start4.elf");
                let mut cmd = Command::new(&curl);
                cmd.arg("-sS").arg("-o").arg(&file);
                if let Some(b) = blksize {
                    cmd.args(["--tftp-blksize", b]);
                }
                let out = cmd
                    .arg(format!("tftp://{tftp}/{baked}/start4.elf"))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "curl: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    std::fs::read(&file).unwrap() == want,
                    "curl got other bytes"
                );
            }
            let out = Command::new(&curl)
                .arg("-sS")
                .arg("-o")
                .arg(out_dir.path().join("nothing"))
                .arg(format!("tftp://{tftp}/{other}/start4.elf"))
                .output()
                .unwrap();
            // curl's exit code 68 is TFTP "file not found".
            assert_eq!(
                out.status.code(),
                Some(68),
                "curl on another pi's file: {out:?}"
            );
        }
    }
    match tool("tftp") {
        None => {
            eprintln!("SKIPPED tftp-hpa checks: tftp is not installed (apt-get install tftp-hpa)")
        }
        Some(tftp_hpa) => {
            let get = |path: &str, local: &str| {
                Command::new(&tftp_hpa)
                    .current_dir(out_dir.path())
                    .arg(tftp.ip().to_string())
                    .arg(tftp.port().to_string())
                    .args(["-m", "binary", "-c", "get", path, local])
                    .output()
                    .unwrap()
            };
            let out = get(&format!("{baked}/start4.elf"), "hpa-start4.elf");
            assert!(out.status.success(), "tftp-hpa: {out:?}");
            assert!(
                std::fs::read(out_dir.path().join("hpa-start4.elf")).unwrap() == want,
                "tftp-hpa got other bytes"
            );
            let out = get(&format!("{other}/start4.elf"), "hpa-other.elf");
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // tftp-hpa exits 0 even on a TFTP error; it prints the error and writes nothing.
            assert!(said.to_lowercase().contains("not found"), "{said}");
            let got = std::fs::read(out_dir.path().join("hpa-other.elf")).unwrap_or_default();
            assert!(got.is_empty(), "tftp-hpa fetched another pi's file");
        }
    }
}

#[test]
fn print_dnsmasq_config_prints_a_proxy_dhcp_snippet_dnsmasq_accepts() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bakery-server"))
            .env_remove("BAKERY_TFTP_LISTEN")
            .env_remove("BAKERY_CONFIG")
            .arg("print-dnsmasq-config")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--subnet", "10.0.0.7/24", "--tftp-server", "10.0.0.2"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "port=0",
        "dhcp-range=10.0.0.0,proxy,255.255.255.0",
        "pxe-service=0,\"Raspberry Pi Boot\",bootcode,10.0.0.2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
    // The TFTP address can come from a specific --tftp-listen.
    let out = run(&["--subnet", "10.0.0.0/24", "--tftp-listen", "10.0.0.3:69"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("bootcode,10.0.0.3"));
    // Without one: exit 2 and a message naming the flag.
    let out = run(&["--subnet", "10.0.0.0/24"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tftp-server"));
    let out = run(&["--subnet", "fd00::/64", "--tftp-server", "10.0.0.2"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let Some(dnsmasq) = ["/usr/sbin/dnsmasq", "/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        eprintln!("SKIPPED dnsmasq --test of the printed snippet: dnsmasq is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bakery.conf");
    std::fs::write(&conf, &text).unwrap();
    let out = Command::new(dnsmasq)
        .arg("--test")
        .arg("-C")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "dnsmasq --test: {out:?}");
}

/// Every file under `dir`, as `/`-separated paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn unbaked_pis_get_nothing_bootable_even_through_the_firmware_prefix_fallback() {
    let env = Env::new();
    let firmware = env.path("firmware");
    std::fs::create_dir_all(&firmware).unwrap();
    let server =
        Server::start_replacing(&env, &["--tftp-listen"], &["--tftp-listen", "127.0.0.1:0"]);
    let tftp = server.tftp_addr();
    assert_eq!(
        server.upload_sample(OS).status(),
        reqwest::StatusCode::CREATED
    );
    let boot_dir = env.data().join("bakeforms").join(OS).join("boot");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = BootOptions::default();
    let boot = |serial: &str, model: Model| {
        runtime.block_on(pi_sim::boot(tftp, serial, model, &boot_dir, &opts))
    };
    let expect_nothing = |serial: &str, model: Model, what: &str| match boot(serial, model) {
        Err(pi_sim::SimError::Missing { path, .. }) => {
            assert_eq!(path, format!("{serial}/{}", model.first_file()), "{what}")
        }
        other => {
            panic!("{what}: an unbaked {model:?} was not stopped at its first file: {other:?}")
        }
    };

    // Unknown Pis (a Pi 4 and a Pi 3) fall back to the TFTP root and find nothing there.
    expect_nothing("f0000001", Model::Pi4, "unknown pi 4");
    expect_nothing("f0000002", Model::Pi3, "unknown pi 3");
    for serial in ["f0000001", "f0000002"] {
        let pi: bakery_client::PiInfo = server.get(&format!("/pis/{serial}")).json().unwrap();
        assert_eq!(pi.state, Some(PiState::Fridge), "{serial}");
    }
    // Now in the fridge: still nothing, on every boot.
    expect_nothing("f0000001", Model::Pi4, "pi 4 in the fridge");
    expect_nothing("f0000002", Model::Pi3, "pi 3 in the fridge");

    // At the root, of every file the bakeform's boot tree holds only bootcode.bin is served,
    // over TFTP and over HTTP.
    let fetch_opts = FetchOptions::default();
    let tree = files_under(&boot_dir);
    assert!(tree.len() > 10, "{tree:?}");
    for name in tree
        .iter()
        .map(String::as_str)
        .chain(["cmdline.txt", "bootsig.bin"])
    {
        let over_tftp = runtime.block_on(fetch(tftp, name, &fetch_opts));
        let over_http = server.get(&format!("/files/{name}")).status();
        if name == "bootcode.bin" {
            let want = std::fs::read(boot_dir.join(name)).unwrap();
            assert_eq!(over_tftp.unwrap().data, want);
            assert_eq!(over_http, reqwest::StatusCode::OK);
        } else {
            let err = over_tftp.expect_err(name);
            assert!(err.is_not_found(), "{name}: {err}");
            assert!(
                over_http == reqwest::StatusCode::NOT_FOUND
                    || over_http == reqwest::StatusCode::BAD_REQUEST,
                "{name}: {over_http}"
            );
        }
    }

    // A baked Pi boots fully under its serial; the Pi 3 gets bootcode.bin from the root.
    let baked = server.bake_ready(true).id;
    let model = if baked == "f0000001" {
        Model::Pi4
    } else {
        Model::Pi3
    };
    let report = boot(&baked, model).unwrap();
    assert!(!report.from_root, "{report:?}");
    assert!(
        report.cmdline.contains("nfsroot=10.0.0.2:"),
        "{}",
        report.cmdline
    );
    drop(server);

    // --boot-root-dir only says where bootcode.bin comes from: a start4.elf, a kernel or a
    // cmdline.txt put there is never served.
    for name in [
        "bootcode.bin",
        "start4.elf",
        "kernel8.img",
        "cmdline.txt",
        "config.txt",
    ] {
        std::fs::write(firmware.join(name), format!("operator {name}")).unwrap();
    }
    let server = Server::start_replacing(
        &env,
        &["--tftp-listen"],
        &[
            "--tftp-listen",
            "127.0.0.1:0",
            "--boot-root-dir",
            &firmware.display().to_string(),
        ],
    );
    let tftp = server.tftp_addr();
    let got = runtime
        .block_on(fetch(tftp, "bootcode.bin", &fetch_opts))
        .unwrap();
    assert_eq!(got.data, b"operator bootcode.bin");
    for name in ["start4.elf", "kernel8.img", "cmdline.txt", "config.txt"] {
        let err = runtime
            .block_on(fetch(tftp, name, &fetch_opts))
            .expect_err(name);
        assert!(err.is_not_found(), "{name}: {err}");
        assert_eq!(
            server.get(&format!("/files/{name}")).status(),
            reqwest::StatusCode::NOT_FOUND,
            "{name}"
        );
    }
}
