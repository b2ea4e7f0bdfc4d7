//! The files the BOSH agent on a Pi reads: `settings.json` (agent settings) and `disks.json`.
//!
//! Both are stored through `POST /oven/{pi}/upload/{file}` as `/piConfig/<file>` on the Pi's
//! NFS root; `PI-CONTRACT.md` describes what the stemcell does with them. Pure functions: no I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use bakery_client::{Disk, PiInfo};

use crate::config::Blobstore;

/// The agent settings file name under `/piConfig`.
pub const SETTINGS_FILE: &str = "settings.json";

/// The disk list file name under `/piConfig`.
pub const DISKS_FILE: &str = "disks.json";

/// Where the stemcell links every attached disk's block device, by disk id.
pub const DEVICE_DIR: &str = "/dev/disk/bakery";

/// The system disk of a Pi: its root is NFS, there is no local system disk.
pub const SYSTEM_DISK: &str = "/dev/nfs";

/// The stable device path of a disk on the Pi: `/dev/disk/bakery/<disk id>`.
///
/// It depends on the disk id only, so it stays valid across detach, re-attach and reboot
/// whatever loop device the disk ends up on.
pub fn device_path(disk_id: &str) -> String {
    format!("{DEVICE_DIR}/{disk_id}")
}

/// The disk hint attach_disk returns and `disks.persistent` holds: `{"path": <device path>}`.
pub fn disk_hint(disk_id: &str) -> Value {
    json!({ "path": device_path(disk_id) })
}

/// `vm` of the agent settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmName {
    /// The VM cid (Pi serial).
    pub name: String,
    /// The VM cid again (newer agents read `id`).
    #[serde(default)]
    pub id: String,
}

/// `disks` of the agent settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskSettings {
    /// The system disk ([`SYSTEM_DISK`]).
    pub system: String,
    /// The ephemeral disk's device path, if the VM has one.
    #[serde(default)]
    pub ephemeral: Option<String>,
    /// Persistent disks: disk cid → hint.
    #[serde(default)]
    pub persistent: Map<String, Value>,
}

/// The agent settings (`settings.json`), in the format of the BOSH agent's `File` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// The agent id the director chose.
    pub agent_id: String,
    /// The VM's name and id.
    pub vm: VmName,
    /// The networks, as the director asked for them, marked preconfigured.
    pub networks: Map<String, Value>,
    /// The disks.
    pub disks: DiskSettings,
    /// The director's `env` for the VM.
    #[serde(default)]
    pub env: Map<String, Value>,
    /// The message bus URL.
    pub mbus: String,
    /// The blobstore, if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobstore: Option<Blobstore>,
    /// NTP servers.
    #[serde(default)]
    pub ntp: Vec<String>,
    /// Any other key a newer CPI or operator put there, kept as it is.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// What [`AgentSettings::new`] needs.
#[derive(Debug, Clone)]
pub struct NewSettings<'a> {
    /// The agent id.
    pub agent_id: &'a str,
    /// The VM cid (Pi serial).
    pub vm_cid: &'a str,
    /// The director's networks.
    pub networks: &'a Map<String, Value>,
    /// The director's env.
    pub env: &'a Map<String, Value>,
    /// The ephemeral disk id, if any.
    pub ephemeral_disk: Option<&'a str>,
    /// The mbus URL.
    pub mbus: &'a str,
    /// The blobstore.
    pub blobstore: Option<&'a Blobstore>,
    /// NTP servers.
    pub ntp: &'a [String],
}

impl AgentSettings {
    /// The settings of a freshly created VM (no persistent disks yet).
    pub fn new(new: NewSettings<'_>) -> AgentSettings {
        AgentSettings {
            agent_id: new.agent_id.to_string(),
            vm: VmName {
                name: new.vm_cid.to_string(),
                id: new.vm_cid.to_string(),
            },
            networks: preconfigured(new.networks),
            disks: DiskSettings {
                system: SYSTEM_DISK.to_string(),
                ephemeral: new.ephemeral_disk.map(device_path),
                persistent: Map::new(),
            },
            env: new.env.clone(),
            mbus: new.mbus.to_string(),
            blobstore: new.blobstore.cloned(),
            ntp: new.ntp.to_vec(),
            other: Map::new(),
        }
    }

    /// Parse settings read back from a Pi.
    pub fn from_slice(bytes: &[u8]) -> Result<AgentSettings, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The bytes to upload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Record a persistent disk; returns its hint.
    pub fn attach_persistent(&mut self, disk_id: &str) -> Value {
        let hint = disk_hint(disk_id);
        self.disks
            .persistent
            .insert(disk_id.to_string(), hint.clone());
        hint
    }

    /// Forget a persistent disk (no-op when it is not there).
    pub fn detach_persistent(&mut self, disk_id: &str) {
        self.disks.persistent.remove(disk_id);
    }
}

/// The networks with `preconfigured: true`: the kernel has brought the one NIC up (DHCP or
/// `ip=`) before the NFS root was mounted; the agent must not reconfigure it under its own root.
fn preconfigured(networks: &Map<String, Value>) -> Map<String, Value> {
    networks
        .iter()
        .map(|(name, network)| {
            let mut network = network.clone();
            if let Value::Object(fields) = &mut network {
                fields.insert("preconfigured".into(), Value::Bool(true));
            }
            (name.clone(), network)
        })
        .collect()
}

/// One entry of `disks.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskEntry {
    /// The disk id (its cid).
    pub id: String,
    /// The exported directory on the NFS server; it holds `disk.img`.
    pub location: String,
    /// The NFS server address.
    pub nfs_address: String,
    /// The size in MiB.
    pub size: i64,
    /// True for the VM's ephemeral disk.
    pub ephemeral: bool,
    /// Where the stemcell must link its block device ([`device_path`]).
    pub path: String,
}

impl DiskEntry {
    fn from_disk(disk: &Disk) -> DiskEntry {
        DiskEntry {
            id: disk.id.clone(),
            location: disk.location.clone(),
            nfs_address: disk.nfs_address.clone(),
            size: disk.size,
            ephemeral: disk.ephemeral,
            path: device_path(&disk.id),
        }
    }
}

/// The non-root disks of a Pi, in attach order (`PiInfo.disks` without `disks[0]`).
pub fn non_root_disks(pi: &PiInfo) -> &[Disk] {
    pi.disks.get(1..).unwrap_or_default()
}

/// The `disks.json` of a Pi: its non-root disks in attach order.
pub fn disks_json(pi: &PiInfo) -> Vec<u8> {
    let entries: Vec<DiskEntry> = non_root_disks(pi)
        .iter()
        .map(DiskEntry::from_disk)
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&entries).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakery_client::{Metadata, PiStatus};

    fn disk(id: &str, size: i64, ephemeral: bool) -> Disk {
        Disk {
            id: id.into(),
            location: format!("/data/disks/{id}"),
            size,
            nfs_address: "10.0.0.2".into(),
            attached_to: Some("1a2b3c4d".into()),
            ephemeral,
            metadata: Metadata::new(),
        }
    }

    #[test]
    fn settings_have_the_agent_format() {
        let networks =
            json!({"default": {"type": "manual", "ip": "10.0.0.21", "netmask": "255.255.255.0"}});
        let Value::Object(networks) = networks else {
            unreachable!()
        };
        let blobstore = Blobstore {
            provider: "dav".into(),
            options: Map::new(),
        };
        let mut settings = AgentSettings::new(NewSettings {
            agent_id: "agent-1",
            vm_cid: "1a2b3c4d",
            networks: &networks,
            env: &Map::new(),
            ephemeral_disk: Some("eph-1"),
            mbus: "nats://n",
            blobstore: Some(&blobstore),
            ntp: &["pool.ntp.org".to_string()],
        });
        let hint = settings.attach_persistent("p-1");
        assert_eq!(hint, json!({"path": "/dev/disk/bakery/p-1"}));
        let value: Value = serde_json::from_slice(&settings.to_bytes()).expect("json");
        assert_eq!(
            value,
            json!({
                "agent_id": "agent-1",
                "vm": {"name": "1a2b3c4d", "id": "1a2b3c4d"},
                "networks": {"default": {"type": "manual", "ip": "10.0.0.21", "netmask": "255.255.255.0", "preconfigured": true}},
                "disks": {"system": "/dev/nfs", "ephemeral": "/dev/disk/bakery/eph-1",
                          "persistent": {"p-1": {"path": "/dev/disk/bakery/p-1"}}},
                "env": {},
                "mbus": "nats://n",
                "blobstore": {"provider": "dav", "options": {}},
                "ntp": ["pool.ntp.org"]
            })
        );
        let mut back = AgentSettings::from_slice(&settings.to_bytes()).expect("parses back");
        assert_eq!(back, settings);
        back.detach_persistent("p-1");
        back.detach_persistent("never-attached");
        assert!(back.disks.persistent.is_empty());
    }

    #[test]
    fn unknown_keys_survive_a_rewrite() {
        let bytes = br#"{"agent_id":"a","vm":{"name":"v"},"networks":{},"disks":{"system":"/dev/nfs","ephemeral":null,"persistent":{}},"mbus":"m","trusted_certs":"CERT"}"#;
        let settings = AgentSettings::from_slice(bytes).expect("parses");
        let value: Value = serde_json::from_slice(&settings.to_bytes()).expect("json");
        assert_eq!(value["trusted_certs"], json!("CERT"));
    }

    #[test]
    fn disks_json_lists_non_root_disks_in_attach_order() {
        let pi = PiInfo {
            id: "1a2b3c4d".into(),
            status: PiStatus::InUse,
            disks: vec![
                disk("root", 0, true),
                disk("eph", 1024, true),
                disk("p", 2048, false),
            ],
            source_bakeform: None,
            state: None,
            address: None,
            network: None,
            root_kind: None,
            metadata: Metadata::new(),
            last_error: None,
            last_boot: None,
            model: None,
            labels: Default::default(),
            first_seen: None,
            last_seen: None,
            power_state: None,
            power_state_at: None,
        };
        let value: Value = serde_json::from_slice(&disks_json(&pi)).expect("json");
        assert_eq!(
            value,
            json!([
                {"id": "eph", "location": "/data/disks/eph", "nfsAddress": "10.0.0.2", "size": 1024, "ephemeral": true, "path": "/dev/disk/bakery/eph"},
                {"id": "p", "location": "/data/disks/p", "nfsAddress": "10.0.0.2", "size": 2048, "ephemeral": false, "path": "/dev/disk/bakery/p"}
            ])
        );
        let empty = PiInfo {
            disks: vec![],
            ..pi
        };
        assert_eq!(disks_json(&empty), b"[]\n");
    }
}
