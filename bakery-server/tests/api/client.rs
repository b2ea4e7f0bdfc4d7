//! The typed Rust client (`bakery-client`) against the real server: the CPI's create_vm /
//! delete_vm sequence, so the two crates cannot drift apart unnoticed.

use std::time::Duration;

use bakery_client::{BakeRequest, Client, CreateDiskRequest, Metadata, PiStatus, StaticNetwork};

use crate::common::*;

#[test]
fn cpi_sequence_through_the_typed_client() {
    let env = Env::new();
    let server = Server::start(&env);
    server.add_pis(2);
    let base = server.base.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::new(&base).unwrap();
        let bakeform = client
            .upload_bakeform(OS, sample_image(), None)
            .await
            .unwrap();
        assert_eq!(bakeform.name, OS);
        let err = client
            .upload_bakeform(OS, sample_image(), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");

        let pi = client
            .bake(&BakeRequest {
                bakeform_name: OS.into(),
                network: Some(StaticNetwork {
                    ip: "10.0.0.40".into(),
                    netmask: "255.255.255.0".into(),
                    gateway: None,
                    dns: vec![],
                    hostname: None,
                }),
                power_on: Some(false),
                root_kind: None,
                model: None,
                labels: Default::default(),
            })
            .await
            .unwrap();
        let pi = client
            .wait_baked(&pi.id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(pi.status, PiStatus::InUse);
        assert!(client.is_baked(&pi.id).await.unwrap());

        let ephemeral = client
            .create_disk(&CreateDiskRequest {
                size: 16,
                ephemeral: true,
            })
            .await
            .unwrap();
        let persistent = client
            .create_disk(&CreateDiskRequest {
                size: 32,
                ephemeral: false,
            })
            .await
            .unwrap();
        client.attach_disk(&pi.id, &ephemeral.id).await.unwrap();
        client.attach_disk(&pi.id, &persistent.id).await.unwrap();
        client
            .upload_pi_file(&pi.id, "settings.json", b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(
            client
                .download_pi_file(&pi.id, "settings.json")
                .await
                .unwrap(),
            b"{}"
        );
        client.power_cycle(&pi.id).await.unwrap();
        let mut metadata = Metadata::new();
        metadata.insert("director".into(), "bosh-lite".into());
        let tagged = client.set_pi_metadata(&pi.id, &metadata).await.unwrap();
        assert_eq!(tagged.disks.len(), 3);
        assert_eq!(tagged.network.unwrap().ip, "10.0.0.40");

        client.unbake(&pi.id).await.unwrap();
        assert!(!client.is_baked(&pi.id).await.unwrap());
        assert!(!client.disk_exists(&ephemeral.id).await.unwrap());
        assert!(client.disk_exists(&persistent.id).await.unwrap());
        client.delete_disk(&persistent.id).await.unwrap();
        client.delete_disk(&persistent.id).await.unwrap();
        client.delete_bakeform(OS).await.unwrap();
        assert!(client.bakeforms().await.unwrap().is_empty());
    });
}
