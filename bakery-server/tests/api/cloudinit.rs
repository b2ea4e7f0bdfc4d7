//! cloud-init NoCloud data per Pi over the real server: set through the API while the Pi is
//! in the oven, served at `/cloud-init/<file>` only to the address the Pi network-booted
//! from, gone after the unbake; `{{nocloud_url}}` in the cmdline template.

use reqwest::StatusCode;

use crate::common::*;

/// The server root (`http://127.0.0.1:<port>`), without `/api/v1`.
fn root(server: &Server) -> String {
    server.base.trim_end_matches("/api/v1").to_owned()
}

/// `GET /cloud-init/<file>` as the Pi at `addr` asks for it (X-Forwarded-For from loopback,
/// as a reverse proxy sends it; the peer address otherwise).
fn fetch(server: &Server, file: &str, addr: Option<&str>) -> (StatusCode, String) {
    let mut req = server
        .client
        .get(format!("{}/cloud-init/{file}", root(server)));
    if let Some(a) = addr {
        req = req.header("X-Forwarded-For", a);
    }
    let resp = req.send().unwrap();
    (resp.status(), resp.text().unwrap())
}

fn put(server: &Server, path: &str, body: Vec<u8>) -> StatusCode {
    server
        .client
        .put(server.url(path))
        .body(body)
        .send()
        .unwrap()
        .status()
}

#[test]
fn each_baked_pi_reads_only_its_own_cloud_init_data_until_it_is_unbaked() {
    let env = Env::new();
    let template = env.path("cmdline.template");
    std::fs::write(
        &template,
        "console=serial0,115200 root=/dev/nfs nfsroot={{nfs_server}}:{{nfs_root}},vers=3 rw ip={{ip}} ds=nocloud;s={{nocloud_url}}\n",
    )
    .unwrap();
    let server = Server::start_with(&env, &["--cmdline-template", template.to_str().unwrap()]);
    assert_eq!(server.upload_sample(OS).status(), StatusCode::CREATED);
    let pis = server.add_pis(3);
    let (a, b) = (server.bake_ready(false), server.bake_ready(false));
    let fridge = pis
        .iter()
        .find(|p| **p != a.id && **p != b.id)
        .unwrap()
        .clone();
    // The Pis network-boot from their addresses (the boot path records them).
    for (pi, addr) in [(&a.id, "10.0.0.21"), (&b.id, "10.0.0.22")] {
        assert_eq!(
            server.boot_request(pi, "start4.elf", Some(addr)).status(),
            StatusCode::OK
        );
    }

    // The rendered command line points cloud-init at this server.
    let port = root(&server).rsplit(':').next().unwrap().to_owned();
    let cmdline = server
        .boot_request(&a.id, "cmdline.txt", Some("10.0.0.21"))
        .text()
        .unwrap();
    assert!(
        cmdline.contains(&format!("ds=nocloud;s=http://10.0.0.2:{port}/cloud-init/")),
        "{cmdline}"
    );

    // Set a's user-data; b keeps the defaults.
    let user_data =
        b"#cloud-config\nhostname: rack-a-1\nssh_authorized_keys:\n  - ssh-ed25519 AAAA test\n";
    assert_eq!(
        put(
            &server,
            &format!("/oven/{}/cloud-init/user-data", a.id),
            user_data.to_vec()
        ),
        StatusCode::OK
    );
    assert_eq!(
        fetch(&server, "user-data", Some("10.0.0.21")),
        (
            StatusCode::OK,
            String::from_utf8(user_data.to_vec()).unwrap()
        )
    );
    let api = server.get(&format!("/oven/{}/cloud-init/user-data", a.id));
    assert_eq!(api.status(), StatusCode::OK);
    assert_eq!(api.bytes().unwrap().as_ref(), user_data);
    assert_eq!(
        fetch(&server, "user-data", Some("10.0.0.22")),
        (StatusCode::OK, String::new()),
        "b gets an empty user-data, not a's"
    );
    let (status, meta) = fetch(&server, "meta-data", Some("10.0.0.22"));
    assert_eq!(status, StatusCode::OK);
    assert!(
        meta.contains(&format!("instance-id: bakery-{}-{}", b.id, b.disks[0].id))
            && meta.contains(&format!("local-hostname: pi-{}", b.id)),
        "{meta}"
    );
    assert_eq!(
        fetch(&server, "network-config", Some("10.0.0.21")).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .get(&format!("/oven/{}/cloud-init/network-config", a.id))
            .status(),
        StatusCode::NOT_FOUND
    );

    // Nobody else reads it: another address, the fridge Pi's, the test's own loopback.
    let (status, body) = fetch(&server, "user-data", Some("10.0.0.99"));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("no baked pi booted from that address"),
        "{body}"
    );
    assert_eq!(fetch(&server, "user-data", None).0, StatusCode::NOT_FOUND);
    assert_eq!(
        server
            .boot_request(&fridge, "start4.elf", Some("10.0.0.23"))
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fetch(&server, "user-data", Some("10.0.0.23")).0,
        StatusCode::NOT_FOUND
    );

    // Bad requests say what was wrong; nothing is set for a Pi out of the oven.
    assert_eq!(
        fetch(&server, "../user-data", Some("10.0.0.21")).0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = fetch(&server, "userdata", Some("10.0.0.21"));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("invalid cloud-init file \\\"userdata\\\""),
        "{body}"
    );
    assert_eq!(
        put(
            &server,
            &format!("/oven/{}/cloud-init/userdata", a.id),
            b"x".to_vec()
        ),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server
            .get(&format!("/oven/{}/cloud-init/userdata", a.id))
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server
            .delete(&format!("/oven/{}/cloud-init/userdata", a.id))
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(
            &server,
            &format!("/oven/{fridge}/cloud-init/user-data"),
            b"x".to_vec()
        ),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server
            .delete(&format!("/oven/{fridge}/cloud-init/user-data"))
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server
            .get(&format!("/oven/{fridge}/cloud-init/user-data"))
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put(
            &server,
            "/oven/0badc0de/cloud-init/user-data",
            b"x".to_vec()
        ),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .delete("/oven/0badc0de/cloud-init/user-data")
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put(
            &server,
            &format!("/oven/{}/cloud-init/user-data", a.id),
            vec![b'#'; 256 * 1024 + 1]
        ),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        fetch(&server, "user-data", Some("10.0.0.21")).1.as_bytes(),
        user_data,
        "a refused write changes nothing"
    );

    // A reset re-clones the root and keeps the Pi's cloud-init files.
    assert_eq!(server.reset(&a.id).status(), StatusCode::ACCEPTED);
    assert_eq!(server.wait_baked(&a.id).status(), StatusCode::OK);
    assert_eq!(
        fetch(&server, "user-data", Some("10.0.0.21")).1.as_bytes(),
        user_data,
        "kept across a reset"
    );

    // Removed: the default again. Unbaked: gone, and nothing is served at that address.
    assert_eq!(
        put(
            &server,
            &format!("/oven/{}/cloud-init/vendor-data", a.id),
            b"#cloud-config\n".to_vec()
        ),
        StatusCode::OK
    );
    assert_eq!(
        server
            .delete(&format!("/oven/{}/cloud-init/vendor-data", a.id))
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        fetch(&server, "vendor-data", Some("10.0.0.21")),
        (StatusCode::OK, String::new())
    );
    assert_eq!(
        server.delete(&format!("/oven/{}", a.id)).status(),
        StatusCode::OK
    );
    assert!(eventually(std::time::Duration::from_secs(10), || {
        fetch(&server, "user-data", Some("10.0.0.21")).0 == StatusCode::NOT_FOUND
    }));
    let again = server.bake_ready(false);
    if again.id == a.id {
        let (status, body) = fetch(&server, "user-data", Some("10.0.0.21"));
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, ""),
            "a new bake starts empty"
        );
    }
}
