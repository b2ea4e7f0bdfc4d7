//! The boot path over HTTP (`GET /files/...`): registration, power-off of Pis not in use,
//! files of baked Pis, the rendered cmdline.txt, root-level files, escapes refused.

use std::time::Duration;

use bakery_client::PiInfo;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

#[test]
fn baked_pis_get_their_files_and_cmdline() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 2);
    let boot = env.data().join("bakeforms").join(OS).join("boot");
    // Not baked: 404 and powered off.
    env.clear_ppi_calls();
    let resp = server.boot_request("00000001", "start.elf", None);
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(eventually(Duration::from_secs(5), || {
        env.ppi_calls()
            .iter()
            .any(|c| c.contains(r#""piId":"00000001","action":"poweroff""#))
    }));

    let pi = server.bake_ready(true);
    for file in [
        "start.elf",
        "kernel8.img",
        "overlays/vc4-kms-v3d.dtbo",
        "config.txt",
    ] {
        let resp = server.boot_request(&pi.id, file, None);
        assert_eq!(resp.status(), StatusCode::OK, "{file}");
        assert_eq!(
            resp.bytes().unwrap().to_vec(),
            std::fs::read(boot.join(file)).unwrap(),
            "{file}"
        );
    }
    assert_eq!(
        server.boot_request(&pi.id, "nope.bin", None).status(),
        StatusCode::NOT_FOUND
    );

    let cmdline = server
        .boot_request(&pi.id, "cmdline.txt", None)
        .text()
        .unwrap();
    let root = &pi.disks[0].location;
    assert!(
        cmdline.ends_with(&format!(
            " root=/dev/nfs nfsroot=10.0.0.2:{root},vers=3,tcp rw ip=dhcp rootwait\n"
        )),
        "{cmdline}"
    );
    assert!(
        cmdline.starts_with("console=serial0,115200 console=tty1 "),
        "{cmdline}"
    );
    assert!(
        !cmdline.contains("PARTUUID") && !cmdline.contains("init="),
        "{cmdline}"
    );

    // A bakeform made for the first bakery: its template is filled.
    std::fs::write(
        boot.join("cmdline.txt"),
        "dwc_otg.lpm_enable=0 root=/dev/nfs nfsroot={{.NfsServer}}:{{.NfsRoot}},vers=3 rw ip=dhcp\n",
    )
    .unwrap();
    let cmdline = server
        .boot_request(&pi.id, "cmdline.txt", None)
        .text()
        .unwrap();
    assert_eq!(
        cmdline,
        format!("dwc_otg.lpm_enable=0 root=/dev/nfs nfsroot=10.0.0.2:{root},vers=3 rw ip=dhcp\n")
    );

    // Static network from the bake request.
    let resp = server.post_json(
        "/fridge",
        &json!({"bakeformName": OS, "network": {"ip": "10.0.0.31", "netmask": "255.255.255.0", "gateway": "10.0.0.1", "hostname": "pi31"}}),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let second: PiInfo = resp.json().unwrap();
    assert_eq!(server.wait_baked(&second.id).status(), StatusCode::OK);
    let cmdline = server
        .boot_request(&second.id, "cmdline.txt", None)
        .text()
        .unwrap();
    assert!(
        cmdline.contains(" ip=10.0.0.31::10.0.0.1:255.255.255.0:pi31:eth0:off"),
        "{cmdline}"
    );
}

#[test]
fn root_level_files_and_bootsig() {
    let env = Env::new();
    let server = Server::start(&env);
    assert_eq!(
        server.get("/files/bootcode.bin").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    let resp = server.get("/files/bootcode.bin");
    assert_eq!(resp.status(), StatusCode::OK);
    let expected = std::fs::read(
        env.data()
            .join("bakeforms")
            .join(OS)
            .join("boot/bootcode.bin"),
    )
    .unwrap();
    assert_eq!(resp.bytes().unwrap().to_vec(), expected);
    assert_eq!(
        server.get("/files/bootsig.bin").status(),
        StatusCode::NOT_FOUND
    );
    drop(server);

    // --boot-root-dir wins.
    let dir = env.path("firmware");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bootcode.bin"), b"operator firmware").unwrap();
    let server = Server::start_with(&env, &["--boot-root-dir", &dir.display().to_string()]);
    assert_eq!(
        server.get("/files/bootcode.bin").text().unwrap(),
        "operator firmware"
    );
}

#[test]
fn operator_cmdline_template_overrides() {
    let env = Env::new();
    let template = env.path("cmdline.tmpl");
    std::fs::write(
        &template,
        "console=tty1 nfsroot={{nfs_server}}:{{nfs_root}} ip={{ip}} bakery.serial={{serial}}\n",
    )
    .unwrap();
    let server = Server::start_with(
        &env,
        &["--cmdline-template", &template.display().to_string()],
    );
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    server.add_pis(1);
    let pi = server.bake_ready(true);
    let cmdline = server
        .boot_request(&pi.id, "cmdline.txt", None)
        .text()
        .unwrap();
    assert_eq!(
        cmdline,
        format!(
            "console=tty1 nfsroot=10.0.0.2:{} ip=dhcp bakery.serial=00000001\n",
            pi.disks[0].location
        )
    );
}

#[test]
fn symlinks_out_of_the_boot_dir_are_refused() {
    let env = Env::new();
    let (server, _) = ready_server(&env, 1);
    let pi = server.bake_ready(true);
    let boot = env.data().join("bakeforms").join(OS).join("boot");
    let secret = env.path("secret.txt");
    std::fs::write(&secret, "do not serve").unwrap();
    std::os::unix::fs::symlink(&secret, boot.join("evil.txt")).unwrap();
    std::os::unix::fs::symlink("start.elf", boot.join("alias.elf")).unwrap();
    assert_eq!(
        server.boot_request(&pi.id, "evil.txt", None).status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.boot_request(&pi.id, "alias.elf", None).status(),
        StatusCode::OK
    );
    assert_eq!(
        server.boot_request(&pi.id, "overlays", None).status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn x_forwarded_for_is_read_with_or_without_the_forwarders_port() {
    // hooktftp's current head sends `ip:port`, 1.1.1 nothing; other forwarders a bare address.
    let env = Env::new();
    let server = Server::start(&env);
    for (serial, header, want) in [
        ("00000041", "10.0.0.41", "10.0.0.41"),
        ("00000042", "10.0.0.42:49152", "10.0.0.42"),
        ("00000043", "[fd00::43]:49152, 127.0.0.1", "fd00::43"),
    ] {
        let resp = server.boot_request(serial, "start4.elf", Some(header));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let pi: PiInfo = server.get(&format!("/pis/{serial}")).json().unwrap();
        assert_eq!(pi.address.as_deref(), Some(want), "{header}");
    }
    // Without the header the loopback forwarder's own address is no Pi's.
    server.boot_request("00000044", "start4.elf", None);
    let pi: PiInfo = server.get("/pis/00000044").json().unwrap();
    assert_eq!(pi.address, None);
}
