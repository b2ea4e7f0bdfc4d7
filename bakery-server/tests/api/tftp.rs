//! The boot path over TFTP, in process: `App::boot_files()` served by `bakery-tftp` answers
//! what `GET /files/...` answers, and learns each Pi's real address.

use std::sync::Arc;
use std::time::Duration;

use bakery_client::{PiInfo, PiState};
use bakery_server::{App, Config};
use bakery_tftp::{ClientError, FetchOptions, ServerConfig, fetch};

use crate::common::*;

/// `GET url`, its JSON answer decoded.
async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: String) -> T {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[test]
fn tftp_serves_baked_pis_and_registers_unknown_ones() {
    let env = Env::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = Config::new(env.data(), "10.0.0.2".into());
        config.settings.exports_file = env.path("bakery.exports");
        config.settings.exportfs_cmd = format!("{} -ra", env.path("exportfs.sh").display());
        config.settings.ppi = Some(env.path("ppi.sh"));
        config.settings.ppi_config = Some(env.path("ppi.json"));
        config.settings.ppi_timeout = Duration::from_secs(2);
        let app = App::new(config).await.unwrap();
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tftp = udp.local_addr().unwrap();
        tokio::spawn(bakery_tftp::serve(
            udp,
            Arc::new(app.boot_files()),
            ServerConfig::default(),
            std::future::pending(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/v1", listener.local_addr().unwrap());
        tokio::spawn(app.clone().serve(listener, std::future::pending()));
        let http = reqwest::Client::new();

        let opts = FetchOptions {
            tsize: true,
            blksize: Some(1468),
            ..FetchOptions::default()
        };
        // An unknown Pi: file not found (error 1), registered with its address, powered off.
        let err = fetch(tftp, "1a2b3c4d/start.elf", &opts).await.unwrap_err();
        assert!(matches!(err, ClientError::Remote { .. }), "{err}");
        assert!(
            err.to_string().contains("error 1")
                || err.to_string().to_lowercase().contains("not found"),
            "{err}"
        );
        let pi: PiInfo = get_json(&http, format!("{base}/pis/1a2b3c4d")).await;
        assert_eq!(pi.state, Some(PiState::Fridge));
        // start.elf is asked for by a Pi 3 only: the inventory records the model.
        assert_eq!(pi.model, Some(bakery_client::PiModel::Pi3));
        assert!(
            pi.last_seen.is_some() && pi.first_seen <= pi.last_seen,
            "{pi:?}"
        );
        assert_eq!(pi.address.as_deref(), Some("127.0.0.1"));

        let image = tokio::fs::read(sample_image()).await.unwrap();
        let resp = http
            .post(format!("{base}/bakeforms/{OS}"))
            .body(image)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
        let resp = http
            .post(format!("{base}/fridge"))
            .json(&serde_json::json!({"bakeformName": OS}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
        let pi: PiInfo =
            get_json(&http, format!("{base}/oven/1a2b3c4d?wait=baked&timeout=30")).await;
        assert_eq!(pi.status.code(), 2);

        let boot = env.data().join("bakeforms").join(OS).join("boot");
        let kernel = fetch(tftp, "1a2b3c4d/kernel8.img", &opts).await.unwrap();
        assert_eq!(
            kernel.data,
            std::fs::read(boot.join("kernel8.img")).unwrap()
        );
        assert_eq!(kernel.tsize, Some(kernel.data.len() as u64));
        let cmdline = fetch(tftp, "1a2b3c4d/cmdline.txt", &opts).await.unwrap();
        let text = String::from_utf8(cmdline.data).unwrap();
        assert!(
            text.contains(&format!(
                "nfsroot=10.0.0.2:{},vers=3,tcp",
                pi.disks[0].location
            )),
            "{text}"
        );
        let bootcode = fetch(tftp, "bootcode.bin", &opts).await.unwrap();
        assert_eq!(
            bootcode.data,
            std::fs::read(boot.join("bootcode.bin")).unwrap()
        );
        assert!(fetch(tftp, "bootsig.bin", &opts).await.is_err());
        for evil in [
            "1a2b3c4d/../../bakery.db",
            "../bakery.db",
            "/etc/passwd",
            "1a2b3c4d/a\\b",
        ] {
            let err = fetch(tftp, evil, &opts).await.unwrap_err();
            assert!(matches!(err, ClientError::Remote { .. }), "{evil}: {err}");
        }
        // The Pi's root is exported to the address TFTP saw.
        assert!(
            env.exports()
                .contains(&format!("{} 127.0.0.1(", pi.disks[0].location))
        );

        // A Pi that takes the last block and closes its port before its ACK arrives: the
        // boot record and the metrics say "unconfirmed" (sent, final ack lost), not gaveUp.
        let pi_socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rrq = bakery_tftp::packet::Packet::Rrq(bakery_tftp::packet::Request {
            filename: "1a2b3c4d/cmdline.txt".into(),
            mode: bakery_tftp::Mode::Octet,
            options: bakery_tftp::RequestOptions::default(),
        })
        .to_bytes();
        pi_socket.send_to(&rrq, tftp).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), pi_socket.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                bakery_tftp::packet::parse(&buf[..n]),
                Ok(bakery_tftp::packet::Packet::Data { block: 1, data }) if data.len() < 512
            ),
            "one short DATA block"
        );
        drop(pi_socket);
        let mut last = None;
        for _ in 0..100 {
            let boots: bakery_client::BootList =
                get_json(&http, format!("{base}/pis/1a2b3c4d/boots")).await;
            last = boots
                .boots
                .iter()
                .flat_map(|b| b.requests.iter())
                .max_by_key(|r| r.time)
                .cloned();
            if last
                .as_ref()
                .is_some_and(|r| r.outcome == bakery_client::BootOutcome::Unconfirmed)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let last = last.expect("a boot request");
        assert_eq!(
            (last.file.as_str(), last.outcome, last.via.as_str()),
            (
                "1a2b3c4d/cmdline.txt",
                bakery_client::BootOutcome::Unconfirmed,
                "tftp"
            )
        );
        let metrics = http
            .get(base.replace("/api/v1", "/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("bakery_tftp_transfers_total{outcome=\"unconfirmed\"} 1"),
            "{metrics}"
        );
        assert!(metrics.contains("bakery_tftp_errors_total 0"), "{metrics}");
    });
}
