//! Simulated Pis booting against bakery-tftp with the stand-in provider and against a real
//! tftpd-hpa; wrong bytes, extra files and bad cmdlines are caught.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bakery_tftp::{FileProvider, FileSource, ReadRequest, Refusal, ServerConfig, serve};
use pi_sim::testbed::{BootDirProvider, TftpdHpa, tftpd_hpa_layout, write_sample_boot_dir};
use pi_sim::{BootOptions, Model, SimError, boot, boot_many};
use tokio::net::UdpSocket;

async fn start<P: FileProvider>(provider: P) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(serve(
        socket,
        Arc::new(provider),
        ServerConfig::default(),
        std::future::pending(),
    ));
    addr
}

fn sample() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_sample_boot_dir(dir.path(), 1_000_000).expect("sample boot dir");
    dir
}

#[tokio::test]
async fn pi3_and_pi4_boot_with_every_byte_checked() {
    let dir = sample();
    let server = start(BootDirProvider::new(dir.path(), "10.0.0.1")).await;

    let report = boot(
        server,
        "0a1b2c3d",
        Model::Pi3,
        dir.path(),
        &BootOptions::default(),
    )
    .await
    .expect("pi3 boots");
    let paths: Vec<&str> = report.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bootcode.bin",
            "bootsig.bin",
            "0a1b2c3d/start.elf",
            "0a1b2c3d/autoboot.txt",
            "0a1b2c3d/config.txt",
            "0a1b2c3d/recovery.elf",
            "0a1b2c3d/fixup.dat",
            "0a1b2c3d/dt-blob.bin",
            "0a1b2c3d/bootcfg.txt",
            "0a1b2c3d/bcm2710-rpi-3-b.dtb",
            "0a1b2c3d/overlays/overlay_map.dtb",
            "0a1b2c3d/overlays/vc4-kms-v3d.dtbo",
            "0a1b2c3d/cmdline.txt",
            "0a1b2c3d/kernel8.img",
        ]
    );
    let found: Vec<bool> = report.files.iter().map(|f| f.found).collect();
    assert_eq!(
        found,
        [
            true, false, true, false, true, false, true, false, false, true, false, true, true,
            true
        ]
    );
    assert!(
        report
            .cmdline
            .contains("nfsroot=10.0.0.1:/var/lib/bakery/pis/0a1b2c3d,vers=3"),
        "{}",
        report.cmdline
    );
    let kernel = std::fs::metadata(dir.path().join("kernel8.img"))
        .expect("kernel")
        .len();
    assert_eq!(report.files[13].bytes, kernel);

    let report = boot(
        server,
        "deadbeef",
        Model::Pi4,
        dir.path(),
        &BootOptions::default(),
    )
    .await
    .expect("pi4 boots");
    assert_eq!(report.files[0].path, "deadbeef/start4.elf");
    assert_eq!(
        report.files.last().map(|f| f.path.as_str()),
        Some("deadbeef/kernel8.img")
    );
    assert!(report.cmdline.contains("/deadbeef,"));
}

#[tokio::test]
async fn a_pi5_starts_at_config_txt_and_loads_the_2712_kernel() {
    let dir = sample();
    let server = start(BootDirProvider::new(dir.path(), "10.0.0.1")).await;
    let report = boot(
        server,
        "5a5a5a5a",
        Model::Pi5,
        dir.path(),
        &BootOptions::default(),
    )
    .await
    .expect("pi5 boots");
    let paths: Vec<&str> = report.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "5a5a5a5a/config.txt",
            "5a5a5a5a/pieeprom.sig",
            "5a5a5a5a/bcm2712-rpi-5-b.dtb",
            "5a5a5a5a/overlays/overlay_map.dtb",
            "5a5a5a5a/overlays/vc4-kms-v3d.dtbo",
            "5a5a5a5a/cmdline.txt",
            "5a5a5a5a/kernel_2712.img",
        ]
    );
    let found: Vec<bool> = report.files.iter().map(|f| f.found).collect();
    assert_eq!(found, [true, false, true, false, true, true, true]);
    assert!(!paths.iter().any(|p| p.ends_with("start4.elf")));
    assert!(
        report.cmdline.contains("nfsroot=10.0.0.1:"),
        "{}",
        report.cmdline
    );
}

#[tokio::test]
async fn many_pis_boot_at_once() {
    let dir = sample();
    let server = start(BootDirProvider::new(dir.path(), "10.0.0.1")).await;
    let results = boot_many(
        server,
        8,
        0x1000_0000,
        Model::Pi4,
        dir.path(),
        &BootOptions::default(),
    )
    .await;
    assert_eq!(results.len(), 8);
    for (i, result) in results.iter().enumerate() {
        let report = result.as_ref().expect("boots");
        assert_eq!(report.serial, format!("{:08x}", 0x1000_0000 + i));
        assert!(report.cmdline.contains(&report.serial));
    }
}

/// Knows no Pi: every `<serial>/...` request is "not found", root-level files are served
/// (what a server that serves a bakeform at the TFTP root does to an unbaked Pi), unless
/// `root_too` is false.
struct NoPiDirs {
    inner: BootDirProvider,
    root_too: bool,
}

impl FileProvider for NoPiDirs {
    async fn open(&self, request: &ReadRequest) -> Result<FileSource, Refusal> {
        let name = request.filename.trim_start_matches('/');
        let under_serial = name
            .split_once('/')
            .is_some_and(|(first, _)| pi_sim::valid_serial(first));
        if under_serial || (!self.root_too && name != "bootcode.bin") {
            return Err(Refusal::NotFound);
        }
        self.inner.open(request).await
    }
}

#[tokio::test]
async fn the_firmware_prefix_fallback_boots_from_the_root_when_the_serial_dir_is_missing() {
    let dir = sample();
    let provider = |root_too| NoPiDirs {
        inner: BootDirProvider::new(dir.path(), "10.0.0.1"),
        root_too,
    };
    let server = start(provider(true)).await;
    // The Pi clears its prefix after `<serial>/start*.elf` and boots everything from the
    // root, the sample's stock cmdline.txt included; the sim says so.
    let opts = BootOptions::default();
    for model in [Model::Pi3, Model::Pi4, Model::Pi5] {
        let report = boot(server, "0000000a", model, dir.path(), &opts)
            .await
            .expect("boots from the root");
        assert!(report.from_root, "{report:?}");
        let first = format!("0000000a/{}", model.first_file());
        let at = report.files.iter().position(|f| f.path == first).unwrap();
        assert!(!report.files[at].found);
        assert_eq!(report.files[at + 1].path, model.first_file());
        assert!(report.files[at + 1].found);
        assert!(
            report.files[at + 1..]
                .iter()
                .all(|f| !f.path.starts_with("0000000a/")),
            "{report:?}"
        );
    }

    // With nothing bootable at the root, both models stop at their first file.
    let server = start(provider(false)).await;
    for model in [Model::Pi3, Model::Pi4, Model::Pi5] {
        match boot(server, "0000000a", model, dir.path(), &opts).await {
            Err(SimError::Missing { path, .. }) => {
                assert_eq!(path, format!("0000000a/{}", model.first_file()))
            }
            other => panic!("{model:?}: {other:?}"),
        }
    }
}

/// Serves the boot directory but flips one byte of the kernel.
struct Corrupting(BootDirProvider);

impl FileProvider for Corrupting {
    async fn open(&self, request: &ReadRequest) -> Result<FileSource, Refusal> {
        let source = self.0.open(request).await?;
        match source {
            FileSource::File { file, len } if request.filename.ends_with("kernel8.img") => {
                use std::io::Read;
                let mut bytes = Vec::new();
                (&file)
                    .read_to_end(&mut bytes)
                    .map_err(|_| Refusal::NotFound)?;
                if let Some(b) = bytes.get_mut(70_000) {
                    *b ^= 1;
                }
                assert_eq!(bytes.len() as u64, len);
                Ok(FileSource::Bytes(bytes.into()))
            }
            other => Ok(other),
        }
    }
}

#[tokio::test]
async fn a_wrong_byte_is_caught() {
    let dir = sample();
    let server = start(Corrupting(BootDirProvider::new(dir.path(), "10.0.0.1"))).await;
    let error = boot(
        server,
        "00000001",
        Model::Pi4,
        dir.path(),
        &BootOptions::default(),
    )
    .await
    .expect_err("corrupt kernel");
    match error {
        SimError::Mismatch { path, at, .. } => {
            assert_eq!(path, "00000001/kernel8.img");
            assert_eq!(at, 70_000);
        }
        other => panic!("not a mismatch: {other}"),
    }
}

#[tokio::test]
async fn a_file_the_bakeform_lacks_and_a_bad_cmdline_are_caught() {
    let served = sample();
    std::fs::write(served.path().join("autoboot.txt"), b"[all]\n").expect("write");
    let expected = sample();
    let server = start(BootDirProvider::new(served.path(), "10.0.0.1")).await;
    let error = boot(
        server,
        "00000002",
        Model::Pi3,
        expected.path(),
        &BootOptions::default(),
    )
    .await
    .expect_err("extra file");
    assert!(
        matches!(&error, SimError::Unexpected { path, .. } if path == "00000002/autoboot.txt"),
        "{error}"
    );

    // Served raw by a plain TFTP server, a cmdline without an NFS root fails the check.
    let root = tempfile::tempdir().expect("temp dir");
    let boot_dir = sample();
    std::fs::write(
        boot_dir.path().join("cmdline.txt"),
        b"root=/dev/mmcblk0p2 rootwait\n",
    )
    .expect("write");
    tftpd_hpa_layout(
        boot_dir.path(),
        &root.path().join("tftp"),
        ["00000003".to_owned()],
    )
    .expect("layout");
    let tftpd = TftpdHpa::start(&root.path().join("tftp")).expect("in.tftpd");
    let error = boot(
        tftpd.addr(),
        "00000003",
        Model::Pi4,
        boot_dir.path(),
        &BootOptions::default(),
    )
    .await
    .expect_err("bad cmdline");
    assert!(matches!(error, SimError::Cmdline { .. }), "{error}");
}

#[tokio::test]
async fn pis_boot_from_tftpd_hpa_too() {
    let boot_dir = sample();
    let root = tempfile::tempdir().expect("temp dir");
    let tftp_root = root.path().join("tftp");
    let serials: Vec<String> = (0..3).map(|i| format!("{:08x}", 0x2000_0000 + i)).collect();
    tftpd_hpa_layout(boot_dir.path(), &tftp_root, serials.clone()).expect("layout");
    let tftpd = TftpdHpa::start(&tftp_root).expect("in.tftpd");
    let opts = BootOptions {
        timeout: Duration::from_secs(1),
        ..BootOptions::default()
    };
    for result in boot_many(
        tftpd.addr(),
        3,
        0x2000_0000,
        Model::Pi3,
        boot_dir.path(),
        &opts,
    )
    .await
    {
        let report = result.expect("boots from tftpd-hpa");
        assert!(report.cmdline.contains("nfsroot="));
    }
    assert!(Path::new(&tftp_root.join(&serials[0]).join("kernel8.img")).exists());
}

#[tokio::test]
async fn the_bin_boots_pis_and_prints_a_summary() {
    let dir = sample();
    let server = start(BootDirProvider::new(dir.path(), "10.0.0.1")).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pi-sim"))
        .args([
            "--server",
            &server.to_string(),
            "--count",
            "3",
            "--model",
            "pi3",
        ])
        .arg("--boot-dir")
        .arg(dir.path())
        .args(["--serial-base", "0000abcd"])
        .output()
        .await
        .expect("pi-sim ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("3 booted, 0 failed"), "{stdout}");
    assert!(stdout.contains("0000abcd/kernel8.img"), "{stdout}");

    // Against the wrong boot directory every Pi fails, and the exit code says so.
    let other = tempfile::tempdir().expect("temp dir");
    write_sample_boot_dir(other.path(), 999_999).expect("other boot dir");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pi-sim"))
        .args([
            "--server",
            &server.to_string(),
            "--count",
            "2",
            "--model",
            "pi4",
        ])
        .arg("--boot-dir")
        .arg(other.path())
        .output()
        .await
        .expect("pi-sim ran");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("differs from the boot directory"));
}
