//! The command line: `--help`, the original's environment variables, the TOML file, exit codes.

use std::process::Output;

use crate::common::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    server_command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn help_documents_every_flag() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--data-dir",
        "--db-path",
        "--nfs-address",
        "--ppi ",
        "--ppi-config",
        "--ppi-timeout",
        "--exports-file",
        "--exportfs-cmd",
        "--export-options",
        "--export-to-any",
        "--max-image-size",
        "--boot-root-dir",
        "--cmdline-template",
        "--config",
        "--tftp-listen",
        "check-config",
        "BAKERY_ROOT",
        "NFS_ADDRESS",
        "DB_PATH",
        "PPI_PATH",
        "PPI_CONFIG_PATH",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn the_original_environment_variables_work() {
    let out = run(
        &["check-config"],
        &[
            ("BAKERY_ROOT", "/srv/bakery"),
            ("NFS_ADDRESS", "10.1.2.3"),
            ("DB_PATH", "/srv/db/bakery.sqlite"),
            ("PPI_PATH", "/usr/local/bin/bakery-simpleweb-ppi"),
            ("PPI_CONFIG_PATH", "/etc/bakery/ppi.json"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for value in [
        "/srv/bakery",
        "10.1.2.3",
        "/srv/db/bakery.sqlite",
        "bakery-simpleweb-ppi",
        "/etc/bakery/ppi.json",
        "0.0.0.0:8080",
        "exportfs -ra",
    ] {
        assert!(text.contains(value), "{value} missing from:\n{text}");
    }
}

#[test]
fn config_file_and_flags() {
    let env = Env::new();
    let file = env.path("bakery.toml");
    std::fs::write(
        &file,
        "nfs_address = \"10.0.0.9\"\nlisten = \"127.0.0.1:9999\"\nmax_image_size = \"2G\"\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let out = run(
        &[
            "--config",
            &path,
            "--listen",
            "127.0.0.1:7777",
            "check-config",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("127.0.0.1:7777") && text.contains("10.0.0.9") && text.contains("2147483648"),
        "{text}"
    );

    std::fs::write(&file, "nfs_adress = \"typo\"\n").unwrap();
    let out = run(&["--config", &path, "check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `nfs_adress`"));
}

#[test]
fn exit_codes() {
    let out = run(&["check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing setting nfs-address"));
    let out = run(
        &["--nfs-address", "x", "--listen", "nowhere", "check-config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value \"nowhere\" for listen"));

    // A taken port: exit 3 with the address.
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut args = env.args();
    let i = args.iter().position(|a| a == "--listen").unwrap();
    args[i + 1] = addr.clone();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
}
