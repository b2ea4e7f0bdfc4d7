//! Unit tests of the CPI methods against an in-memory bakery with failure injection.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use bakery_client::{
    BakeRequest, Bakeform, CreateDiskRequest, Disk, ErrorKind, Metadata, PiInfo, PiState, PiStatus,
    Snapshot,
};
use serde_json::{Value, json};

use super::Cpi;
use crate::backend::{BackendError, BackendResult, Bakery};
use crate::config::{AgentOptions, Config};
use crate::error::CpiError;
use crate::log::Log;
use crate::request::Request;

#[derive(Default)]
struct State {
    bakeforms: BTreeSet<String>,
    pis: BTreeMap<String, PiInfo>,
    disks: BTreeMap<String, Disk>,
    snapshots: BTreeMap<String, Snapshot>,
    files: BTreeMap<(String, String), Vec<u8>>,
    fail: BTreeMap<&'static str, (ErrorKind, &'static str)>,
    bake_requests: Vec<BakeRequest>,
    calls: Vec<String>,
    next: u32,
    exists_says_no: bool,
}

/// An in-memory bakery following the API's statuses.
#[derive(Default)]
struct Fake {
    state: RefCell<State>,
}

fn pi_info(id: &str) -> PiInfo {
    PiInfo {
        id: id.into(),
        status: PiStatus::NotInUse,
        disks: vec![],
        source_bakeform: None,
        state: Some(PiState::Fridge),
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
    }
}

fn set_state(pi: &mut PiInfo, state: PiState) {
    pi.state = Some(state);
    pi.status = state.status();
}

fn refused(kind: ErrorKind, message: &str) -> BackendError {
    BackendError::refused(kind, message)
}

impl Fake {
    fn with_pis(pis: &[&str]) -> Fake {
        let fake = Fake::default();
        {
            let mut s = fake.state.borrow_mut();
            s.bakeforms.insert("stemcell-1".into());
            for pi in pis {
                s.pis.insert(pi.to_string(), pi_info(pi));
            }
        }
        fake
    }

    fn fail(&self, operation: &'static str, kind: ErrorKind, message: &'static str) {
        self.state
            .borrow_mut()
            .fail
            .insert(operation, (kind, message));
    }

    fn enter(&self, operation: &'static str) -> BackendResult<std::cell::RefMut<'_, State>> {
        let mut s = self.state.borrow_mut();
        s.calls.push(operation.to_string());
        if let Some((kind, message)) = s.fail.get(operation) {
            return Err(refused(*kind, message));
        }
        Ok(s)
    }

    fn baked(&self) -> Vec<String> {
        let s = self.state.borrow();
        s.pis
            .values()
            .filter(|p| p.state != Some(PiState::Fridge))
            .map(|p| p.id.clone())
            .collect()
    }

    fn file(&self, pi: &str, name: &str) -> Value {
        let s = self.state.borrow();
        let bytes = s
            .files
            .get(&(pi.to_string(), name.to_string()))
            .expect("file written");
        serde_json::from_slice(bytes).expect("file is json")
    }
}

impl Bakery for Fake {
    fn upload_bakeform(&self, name: &str, _image: &Path) -> BackendResult<Bakeform> {
        let mut s = self.enter("upload_bakeform")?;
        if !s.bakeforms.insert(name.to_string()) {
            return Err(refused(ErrorKind::BakeformExists, "bakeform exists"));
        }
        Ok(Bakeform {
            name: name.into(),
            location: format!("/data/bakeforms/{name}"),
            state: None,
            error: None,
        })
    }

    fn bakeform_exists(&self, name: &str) -> BackendResult<bool> {
        let s = self.enter("bakeform_exists")?;
        Ok(s.bakeforms.contains(name) && !s.exists_says_no)
    }

    fn delete_bakeform(&self, name: &str) -> BackendResult<()> {
        let mut s = self.enter("delete_bakeform")?;
        if !s.bakeforms.remove(name) {
            return Err(refused(ErrorKind::BakeformNotFound, "no such bakeform"));
        }
        Ok(())
    }

    fn bake(&self, request: &BakeRequest) -> BackendResult<PiInfo> {
        let mut s = self.enter("bake")?;
        s.bake_requests.push(request.clone());
        if !s.bakeforms.contains(&request.bakeform_name) {
            return Err(refused(ErrorKind::UnknownBakeform, "unknown bakeform"));
        }
        let id = s.next;
        s.next += 1;
        let Some(pi) = s
            .pis
            .values_mut()
            .find(|p| p.state == Some(PiState::Fridge))
        else {
            return Err(refused(ErrorKind::NoFreePi, "no available Pi found"));
        };
        set_state(pi, PiState::Preparing);
        pi.disks = vec![Disk {
            id: format!("root-{id}"),
            location: format!("/data/disks/root-{id}"),
            size: 0,
            nfs_address: "10.0.0.2".into(),
            attached_to: Some(pi.id.clone()),
            ephemeral: true,
            metadata: Metadata::new(),
        }];
        pi.network = request.network.clone();
        Ok(pi.clone())
    }

    fn wait_baked(&self, pi: &str, _timeout: Duration) -> BackendResult<PiInfo> {
        let failing = self.state.borrow().fail.contains_key("wait_baked");
        let mut s = self.state.borrow_mut();
        s.calls.push("wait_baked".into());
        let info = s
            .pis
            .get_mut(pi)
            .ok_or_else(|| refused(ErrorKind::PiNotFound, "unknown pi"))?;
        if failing {
            set_state(info, PiState::Fridge);
            info.disks.clear();
            return Err(refused(ErrorKind::BakeFailed, "bake failed: clone failed"));
        }
        if info.state == Some(PiState::Preparing) {
            set_state(info, PiState::Baked);
        }
        Ok(info.clone())
    }

    fn unbake(&self, pi: &str) -> BackendResult<()> {
        let mut s = self.enter("unbake")?;
        let info = s
            .pis
            .get_mut(pi)
            .ok_or_else(|| refused(ErrorKind::PiNotFound, "unknown pi"))?;
        if info.state != Some(PiState::Baked) {
            return Err(refused(ErrorKind::NotBaked, "pi is not baked"));
        }
        set_state(info, PiState::Fridge);
        let disks = std::mem::take(&mut info.disks);
        info.metadata.clear();
        for disk in disks {
            if disk.ephemeral {
                s.disks.remove(&disk.id);
            } else if let Some(kept) = s.disks.get_mut(&disk.id) {
                kept.attached_to = None;
            }
        }
        s.files.retain(|(owner, _), _| owner != pi);
        Ok(())
    }

    fn pi(&self, pi: &str) -> BackendResult<PiInfo> {
        let s = self.enter("pi")?;
        s.pis
            .get(pi)
            .cloned()
            .ok_or_else(|| refused(ErrorKind::PiNotFound, "unknown pi"))
    }

    fn power_cycle(&self, pi: &str) -> BackendResult<()> {
        let s = self.enter("power_cycle")?;
        match s.pis.get(pi) {
            Some(info) if info.state == Some(PiState::Baked) => Ok(()),
            _ => Err(refused(ErrorKind::PiNotInOven, "pi not in the oven")),
        }
    }

    fn set_pi_metadata(&self, pi: &str, metadata: &Metadata) -> BackendResult<PiInfo> {
        let mut s = self.enter("set_pi_metadata")?;
        let info = s
            .pis
            .get_mut(pi)
            .ok_or_else(|| refused(ErrorKind::PiNotFound, "unknown pi"))?;
        info.metadata = metadata.clone();
        Ok(info.clone())
    }

    fn upload_pi_file(&self, pi: &str, filename: &str, bytes: Vec<u8>) -> BackendResult<()> {
        let op = if filename == "settings.json" {
            "upload_settings"
        } else {
            "upload_disks"
        };
        let mut s = self.enter(op)?;
        if !s.pis.contains_key(pi) {
            return Err(refused(ErrorKind::PiNotFound, "unknown pi"));
        }
        s.files
            .insert((pi.to_string(), filename.to_string()), bytes);
        Ok(())
    }

    fn download_pi_file(&self, pi: &str, filename: &str) -> BackendResult<Vec<u8>> {
        let s = self.enter("download_pi_file")?;
        s.files
            .get(&(pi.to_string(), filename.to_string()))
            .cloned()
            .ok_or_else(|| refused(ErrorKind::FileNotFound, "no such file"))
    }

    fn create_disk(&self, request: &CreateDiskRequest) -> BackendResult<Disk> {
        let mut s = self.enter("create_disk")?;
        let id = format!("disk-{}", s.next);
        s.next += 1;
        let disk = Disk {
            id: id.clone(),
            location: format!("/data/disks/{id}"),
            size: request.size,
            nfs_address: "10.0.0.2".into(),
            attached_to: None,
            ephemeral: request.ephemeral,
            metadata: Metadata::new(),
        };
        s.disks.insert(id, disk.clone());
        Ok(disk)
    }

    fn disk(&self, id: &str) -> BackendResult<Disk> {
        let s = self.enter("disk")?;
        s.disks
            .get(id)
            .cloned()
            .ok_or_else(|| refused(ErrorKind::DiskNotFound, "unknown disk"))
    }

    fn delete_disk(&self, id: &str) -> BackendResult<()> {
        let mut s = self.enter("delete_disk")?;
        match s.disks.get(id) {
            Some(disk) if disk.attached_to.is_some() => {
                Err(refused(ErrorKind::DiskAttached, "disk is attached"))
            }
            _ => {
                s.disks.remove(id);
                Ok(())
            }
        }
    }

    fn attach_disk(&self, pi: &str, disk: &str) -> BackendResult<()> {
        let mut s = self.enter("attach_disk")?;
        let mut found = s
            .disks
            .get(disk)
            .cloned()
            .ok_or_else(|| refused(ErrorKind::DiskNotFound, "unknown disk"))?;
        found.attached_to = Some(pi.to_string());
        let info = s
            .pis
            .get_mut(pi)
            .ok_or_else(|| refused(ErrorKind::PiNotFound, "unknown pi"))?;
        info.disks.push(found.clone());
        s.disks.insert(disk.to_string(), found);
        Ok(())
    }

    fn detach_disk(&self, pi: &str, disk: &str) -> BackendResult<()> {
        let mut s = self.enter("detach_disk")?;
        let info = s
            .pis
            .get_mut(pi)
            .ok_or_else(|| refused(ErrorKind::PiNotFound, "unknown pi"))?;
        info.disks.retain(|d| d.id != disk);
        let found = s
            .disks
            .get_mut(disk)
            .ok_or_else(|| refused(ErrorKind::DiskNotFound, "unknown disk"))?;
        found.attached_to = None;
        Ok(())
    }

    fn resize_disk(&self, id: &str, size_mib: i64) -> BackendResult<Disk> {
        let mut s = self.enter("resize_disk")?;
        let disk = s
            .disks
            .get_mut(id)
            .ok_or_else(|| refused(ErrorKind::DiskNotFound, "unknown disk"))?;
        if disk.attached_to.is_some() {
            return Err(refused(ErrorKind::DiskAttached, "disk is attached"));
        }
        disk.size = size_mib;
        Ok(disk.clone())
    }

    fn set_disk_metadata(&self, id: &str, metadata: &Metadata) -> BackendResult<Disk> {
        let mut s = self.enter("set_disk_metadata")?;
        let disk = s
            .disks
            .get_mut(id)
            .ok_or_else(|| refused(ErrorKind::DiskNotFound, "unknown disk"))?;
        disk.metadata = metadata.clone();
        Ok(disk.clone())
    }

    fn snapshot_disk(&self, id: &str, metadata: &Metadata) -> BackendResult<Snapshot> {
        let mut s = self.enter("snapshot_disk")?;
        let size = s
            .disks
            .get(id)
            .ok_or_else(|| refused(ErrorKind::DiskNotFound, "unknown disk"))?
            .size;
        let snapshot = Snapshot {
            id: format!("snap-{}", s.next),
            disk: id.to_owned(),
            size,
            created_at: 0,
            metadata: metadata.clone(),
        };
        s.next += 1;
        s.snapshots.insert(snapshot.id.clone(), snapshot.clone());
        Ok(snapshot)
    }

    fn delete_snapshot(&self, id: &str) -> BackendResult<()> {
        let mut s = self.enter("delete_snapshot")?;
        s.snapshots
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| refused(ErrorKind::SnapshotNotFound, "unknown snapshot"))
    }
}

fn config() -> Config {
    Config {
        url: Some("http://127.0.0.1:1/api/v1".into()),
        agent: AgentOptions {
            mbus: Some("nats://nats:pw@10.0.0.3:4222".into()),
            blobstore: None,
            ntp: vec!["pool.ntp.org".into()],
        },
        default_ephemeral_disk_mib: Some(1024),
        ..Config::default()
    }
}

fn call(fake: &Fake, api_version: u64, method: &str, arguments: Value) -> Result<Value, CpiError> {
    let request = Request::parse(
        json!({"method": method, "arguments": arguments, "api_version": api_version})
            .to_string()
            .as_bytes(),
    )
    .expect("request parses");
    let config = config();
    let mut log = Log::new(false);
    Cpi::new(fake, &config, api_version, &mut log).call(&request)
}

fn manual() -> Value {
    json!({"default": {"type": "manual", "ip": "10.0.0.21", "netmask": "255.255.255.0",
                       "gateway": "10.0.0.1", "dns": ["10.0.0.1"], "default": ["dns", "gateway"],
                       "cloud_properties": {}}})
}

fn create_vm_args(networks: Value) -> Value {
    json!(["agent-1", "stemcell-1", {}, networks, [], {"bosh": {"group": "g"}}])
}

#[test]
fn create_vm_v2_bakes_writes_settings_and_powers_on() {
    let fake = Fake::with_pis(&["1a2b3c4d"]);
    let result = call(&fake, 2, "create_vm", create_vm_args(manual())).expect("created");
    assert_eq!(result, json!(["1a2b3c4d", manual()]));

    let s = fake.state.borrow();
    let request = &s.bake_requests[0];
    assert_eq!(request.power_on, Some(false));
    let network = request.network.as_ref().expect("static network");
    assert_eq!(network.ip, "10.0.0.21");
    assert_eq!(network.netmask, "255.255.255.0");
    assert_eq!(network.gateway.as_deref(), Some("10.0.0.1"));
    assert_eq!(network.dns, vec!["10.0.0.1".to_string()]);
    assert_eq!(s.calls.last().map(String::as_str), Some("power_cycle"));
    let ephemeral: Vec<&Disk> = s.disks.values().collect();
    assert_eq!(ephemeral.len(), 1);
    assert!(ephemeral[0].ephemeral);
    assert_eq!(ephemeral[0].size, 1024);
    let eph_id = ephemeral[0].id.clone();
    drop(s);

    let settings = fake.file("1a2b3c4d", "settings.json");
    assert_eq!(settings["agent_id"], json!("agent-1"));
    assert_eq!(
        settings["vm"],
        json!({"name": "1a2b3c4d", "id": "1a2b3c4d"})
    );
    assert_eq!(settings["mbus"], json!("nats://nats:pw@10.0.0.3:4222"));
    assert_eq!(settings["ntp"], json!(["pool.ntp.org"]));
    assert_eq!(settings["env"], json!({"bosh": {"group": "g"}}));
    assert_eq!(
        settings["networks"]["default"]["preconfigured"],
        json!(true)
    );
    assert_eq!(
        settings["disks"],
        json!({"system": "/dev/nfs", "ephemeral": format!("/dev/disk/bakery/{eph_id}"), "persistent": {}})
    );
    let disks = fake.file("1a2b3c4d", "disks.json");
    assert_eq!(disks.as_array().map(Vec::len), Some(1));
    assert_eq!(disks[0]["id"], json!(eph_id));
    assert_eq!(disks[0]["nfsAddress"], json!("10.0.0.2"));
}

#[test]
fn create_vm_v1_returns_the_cid_and_dynamic_networks_use_dhcp() {
    let fake = Fake::with_pis(&["1a2b3c4d"]);
    let args = json!(["agent-1", "stemcell-1", {"ephemeral_disk": 0}, {"d": {"type": "dynamic"}}, null, null]);
    let result = call(&fake, 1, "create_vm", args).expect("created");
    assert_eq!(result, json!("1a2b3c4d"));
    let s = fake.state.borrow();
    assert_eq!(s.bake_requests[0].network, None);
    assert!(
        s.disks.is_empty(),
        "ephemeral_disk 0 means no ephemeral disk"
    );
    drop(s);
    assert_eq!(
        fake.file("1a2b3c4d", "settings.json")["disks"]["ephemeral"],
        Value::Null
    );
}

#[test]
fn create_vm_passes_the_root_kind_through() {
    let fake = Fake::with_pis(&["1a2b3c4d"]);
    let args = json!(["agent-1", "stemcell-1", {"ephemeral_disk": 0, "root_kind": "nbd"}, {"d": {"type": "dynamic"}}, null, null]);
    call(&fake, 1, "create_vm", args).expect("created");
    assert_eq!(
        fake.state.borrow().bake_requests[0].root_kind,
        Some(bakery_client::RootKind::Nbd)
    );
    let fake = Fake::with_pis(&["1a2b3c4d"]);
    let args = json!(["agent-1", "stemcell-1", {"root_kind": "iscsi"}, {"d": {"type": "dynamic"}}, null, null]);
    let err = call(&fake, 1, "create_vm", args).expect_err("refused");
    assert!(format!("{err:?}").contains("iscsi"), "{err:?}");
    assert!(fake.state.borrow().bake_requests.is_empty());
}

#[test]
fn create_vm_passes_model_and_labels_as_constraints() {
    let fake = Fake::with_pis(&["1a2b3c4d"]);
    let args = json!(["agent-1", "stemcell-1", {"model": "pi4", "labels": {"rack": "a", "poe": true, "slot": 7}}, {"d": {"type": "dynamic"}}, null, null]);
    call(&fake, 1, "create_vm", args).expect("created");
    let request = fake.state.borrow().bake_requests[0].clone();
    assert_eq!(request.model, Some(bakery_client::PiModel::Pi4));
    let labels: Vec<(&str, &str)> = request
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels, [("poe", "true"), ("rack", "a"), ("slot", "7")]);
    for (bad, names) in [
        (json!({"model": "pi6"}), "pi6"),
        (json!({"model": 4}), "model"),
        (json!({"labels": ["rack"]}), "labels"),
        (json!({"labels": {"rack": {"row": 1}}}), "labels.rack"),
    ] {
        let fake = Fake::with_pis(&["1a2b3c4d"]);
        let args = json!(["agent-1", "stemcell-1", bad, {"d": {"type": "dynamic"}}, null, null]);
        let err = call(&fake, 1, "create_vm", args).expect_err("refused");
        assert!(format!("{err:?}").contains(names), "{names}: {err:?}");
        assert!(fake.state.borrow().bake_requests.is_empty());
    }
}

#[test]
fn create_vm_failures_undo_everything() {
    for (step, kind, retry) in [
        ("bake", ErrorKind::NoFreePi, true),
        ("bake", ErrorKind::NotFound, true),
        ("bake", ErrorKind::UnknownBakeform, false),
        ("bake", ErrorKind::InvalidRequest, false),
        ("wait_baked", ErrorKind::BakeFailed, false),
        ("create_disk", ErrorKind::InsufficientStorage, false),
        ("attach_disk", ErrorKind::Internal, false),
        ("upload_settings", ErrorKind::Internal, false),
        ("upload_disks", ErrorKind::Internal, false),
        ("power_cycle", ErrorKind::Internal, false),
    ] {
        let fake = Fake::with_pis(&["1a2b3c4d"]);
        let persistent = fake
            .create_disk(&CreateDiskRequest {
                size: 10,
                ephemeral: false,
            })
            .expect("disk");
        fake.fail(step, kind, "injected failure");
        let err = call(&fake, 2, "create_vm", create_vm_args(manual())).unwrap_err();
        assert_eq!(
            err.bosh_type(),
            "Bosh::Clouds::VMCreationFailed",
            "{step}: {err}"
        );
        assert_eq!(err.ok_to_retry(), retry, "{step}: {err}");
        assert!(
            !err.to_string().contains("undo incomplete"),
            "{step}: {err}"
        );
        assert!(fake.baked().is_empty(), "{step}: a pi is left baked");
        let s = fake.state.borrow();
        assert_eq!(
            s.disks.keys().collect::<Vec<_>>(),
            vec![&persistent.id],
            "{step}: disks left behind"
        );
        assert_eq!(
            s.bakeforms.iter().collect::<Vec<_>>(),
            vec!["stemcell-1"],
            "{step}: bakeforms changed"
        );
    }
}

#[test]
fn create_vm_reports_what_it_could_not_undo() {
    let fake = Fake::with_pis(&["1a2b3c4d"]);
    fake.fail("power_cycle", ErrorKind::Internal, "relay board gone");
    fake.fail("unbake", ErrorKind::Internal, "server broken");
    let err = call(&fake, 2, "create_vm", create_vm_args(manual())).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("relay board gone"), "{message}");
    assert!(
        message.contains("undo incomplete: pi 1a2b3c4d is still baked"),
        "{message}"
    );
}

#[test]
fn create_vm_rejects_networks_a_pi_cannot_have_before_baking() {
    let fake = Fake::with_pis(&["1a2b3c4d"]);
    let two = json!({"a": {"type": "dynamic"}, "b": {"type": "dynamic"}});
    let vip = json!({"a": {"type": "vip", "ip": "1.2.3.4"}});
    let no_mask = json!({"a": {"type": "manual", "ip": "10.0.0.5"}});
    for (networks, bosh_type) in [
        (two, "Bosh::Clouds::NotSupported"),
        (vip, "Bosh::Clouds::NotSupported"),
        (no_mask, "InvalidCall"),
    ] {
        let err = call(&fake, 2, "create_vm", create_vm_args(networks)).unwrap_err();
        assert_eq!(err.bosh_type(), bosh_type, "{err}");
    }
    assert!(fake.state.borrow().bake_requests.is_empty());
}

#[test]
fn disks_attach_detach_and_get_disks_keep_the_settings_in_step() {
    let fake = Fake::with_pis(&["1a2b3c4d", "5e6f7a8b"]);
    let vm = call(&fake, 2, "create_vm", create_vm_args(manual())).expect("vm")[0].clone();
    let other = call(&fake, 2, "create_vm", create_vm_args(json!({}))).expect("vm")[0].clone();
    let disk = call(&fake, 2, "create_disk", json!([2048, {}, vm])).expect("disk");
    let other_disk = call(&fake, 2, "create_disk", json!([10, {}, null])).expect("disk");
    call(&fake, 2, "attach_disk", json!([other, other_disk])).expect("attached elsewhere");

    let hint = call(&fake, 2, "attach_disk", json!([vm, disk])).expect("attached");
    let path = format!("/dev/disk/bakery/{}", disk.as_str().expect("cid"));
    assert_eq!(hint, json!({ "path": path }));
    let settings = fake.file("1a2b3c4d", "settings.json");
    assert_eq!(
        settings["disks"]["persistent"],
        json!({ disk.as_str().expect("cid"): {"path": path} })
    );
    assert_eq!(
        fake.file("1a2b3c4d", "disks.json").as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        call(&fake, 2, "get_disks", json!([vm])).expect("disks"),
        json!([disk])
    );
    assert_eq!(
        call(&fake, 1, "attach_disk", json!([vm, disk])).expect("again, v1"),
        Value::Null
    );

    call(&fake, 2, "detach_disk", json!([vm, disk])).expect("detached");
    assert_eq!(
        fake.file("1a2b3c4d", "settings.json")["disks"]["persistent"],
        json!({})
    );
    assert_eq!(
        call(&fake, 2, "get_disks", json!([vm])).expect("disks"),
        json!([])
    );
    let err = call(&fake, 2, "detach_disk", json!([vm, disk])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::DiskNotAttached");

    let err = call(&fake, 2, "attach_disk", json!([vm, "nope"])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::DiskNotFound");
    let err = call(&fake, 2, "attach_disk", json!(["00000000", disk])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::VMNotFound");
    let err = call(&fake, 2, "get_disks", json!(["00000000"])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::VMNotFound");
}

#[test]
fn delete_vm_and_delete_disk_are_idempotent() {
    let fake = Fake::with_pis(&["1a2b3c4d"]);
    let vm = call(&fake, 2, "create_vm", create_vm_args(manual())).expect("vm")[0].clone();
    let disk = call(&fake, 2, "create_disk", json!([100, {}, null])).expect("disk");
    call(&fake, 2, "attach_disk", json!([vm, disk])).expect("attached");
    assert_eq!(
        call(&fake, 2, "has_vm", json!([vm])).expect("has"),
        json!(true)
    );

    call(&fake, 2, "delete_vm", json!([vm])).expect("deleted");
    call(&fake, 2, "delete_vm", json!([vm])).expect("deleted again");
    call(&fake, 2, "delete_vm", json!(["ffffffff"])).expect("unknown is fine");
    assert_eq!(
        call(&fake, 2, "has_vm", json!([vm])).expect("has"),
        json!(false)
    );
    assert_eq!(
        call(&fake, 2, "has_vm", json!(["ffffffff"])).expect("has"),
        json!(false)
    );
    assert!(fake.baked().is_empty());
    assert_eq!(
        call(&fake, 2, "has_disk", json!([disk])).expect("kept"),
        json!(true)
    );

    call(&fake, 2, "delete_disk", json!([disk])).expect("deleted");
    call(&fake, 2, "delete_disk", json!([disk])).expect("deleted again");
    assert_eq!(
        call(&fake, 2, "has_disk", json!([disk])).expect("has"),
        json!(false)
    );
}

#[test]
fn stemcells_are_replaced_and_deleted_idempotently() {
    let fake = Fake::with_pis(&[]);
    let image = tempfile::NamedTempFile::new().expect("temp image");
    let path = image.path().to_str().expect("utf-8 path");
    let props = json!({"name": "bosh-pi", "version": "1.5"});
    let cid = call(&fake, 2, "create_stemcell", json!([path, props])).expect("created");
    assert_eq!(cid, json!("bosh-pi-1.5"));
    let again = call(&fake, 2, "create_stemcell", json!([path, props])).expect("replaced");
    assert_eq!(again, cid);
    let calls = fake.state.borrow().calls.clone();
    assert_eq!(
        calls,
        vec![
            "bakeform_exists",
            "upload_bakeform",
            "bakeform_exists",
            "delete_bakeform",
            "upload_bakeform"
        ]
    );
    // a bakeform that appears between the check and the upload (403) is replaced as well
    fake.state.borrow_mut().calls.clear();
    fake.state.borrow_mut().exists_says_no = true;
    let again = call(&fake, 2, "create_stemcell", json!([path, props])).expect("replaced");
    assert_eq!(again, cid);
    let calls = fake.state.borrow().calls.clone();
    assert_eq!(
        calls,
        vec![
            "bakeform_exists",
            "upload_bakeform",
            "delete_bakeform",
            "upload_bakeform"
        ]
    );
    call(&fake, 2, "delete_stemcell", json!([cid])).expect("deleted");
    call(&fake, 2, "delete_stemcell", json!([cid])).expect("deleted again");
    let err = call(
        &fake,
        2,
        "create_stemcell",
        json!(["/no/such/image", props]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/no/such/image"), "{err}");
    let err = call(&fake, 2, "create_stemcell", json!([path, {"name": "x"}])).unwrap_err();
    assert_eq!(err.bosh_type(), "InvalidCall");
}

#[test]
fn resize_and_metadata() {
    let fake = Fake::with_pis(&["1a2b3c4d"]);
    let disk = call(&fake, 2, "create_disk", json!([100, {}, null])).expect("disk");
    call(&fake, 2, "resize_disk", json!([disk, 200])).expect("grown");
    call(&fake, 2, "resize_disk", json!([disk, 200])).expect("same size");
    let err = call(&fake, 2, "resize_disk", json!([disk, 50])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::NotSupported");
    let err = call(&fake, 2, "resize_disk", json!(["nope", 50])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::DiskNotFound");
    call(
        &fake,
        2,
        "set_disk_metadata",
        json!([disk, {"director": "d"}]),
    )
    .expect("set");
    let s = fake.state.borrow();
    let stored = &s.disks[disk.as_str().expect("cid")];
    assert_eq!(stored.size, 200);
    assert_eq!(stored.metadata.get("director"), Some(&json!("d")));
    drop(s);

    let vm = call(&fake, 2, "create_vm", create_vm_args(manual())).expect("vm")[0].clone();
    call(&fake, 2, "set_vm_metadata", json!([vm, {"name": "web/0"}])).expect("set");
    assert_eq!(
        fake.state.borrow().pis["1a2b3c4d"].metadata.get("name"),
        Some(&json!("web/0"))
    );
    let err = call(&fake, 2, "set_vm_metadata", json!(["ffffffff", {}])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::VMNotFound");
    let err = call(&fake, 2, "create_disk", json!([0, {}, null])).unwrap_err();
    assert_eq!(err.bosh_type(), "InvalidCall");
    fake.fail(
        "create_disk",
        ErrorKind::InsufficientStorage,
        "no space left",
    );
    let err = call(&fake, 2, "create_disk", json!([10, {}, null])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::NoDiskSpace");
}

#[test]
fn snapshots_are_taken_with_metadata_and_deleted_idempotently() {
    let fake = Fake::with_pis(&["1a2b3c4d"]);
    let disk = call(&fake, 2, "create_disk", json!([100, {}, null])).expect("disk");
    let meta = json!({"deployment": "db", "job": "pg", "index": 0, "director_name": "d"});
    let cid = call(&fake, 2, "snapshot_disk", json!([disk, meta])).expect("snapshot");
    let cid = cid.as_str().expect("snapshot cid is a string").to_owned();
    {
        let s = fake.state.borrow();
        let stored = &s.snapshots[&cid];
        assert_eq!(stored.disk, disk.as_str().expect("cid"));
        assert_eq!(stored.metadata.get("index"), Some(&json!(0)));
        assert_eq!(stored.metadata.get("job"), Some(&json!("pg")));
    }
    let err = call(&fake, 2, "snapshot_disk", json!(["nope", {}])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::DiskNotFound");
    let err = call(&fake, 2, "snapshot_disk", json!([disk, "x"])).unwrap_err();
    assert_eq!(err.bosh_type(), "InvalidCall");
    fake.fail(
        "snapshot_disk",
        ErrorKind::InsufficientStorage,
        "not enough space",
    );
    let err = call(&fake, 2, "snapshot_disk", json!([disk, {}])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::CloudError");
    assert!(err.to_string().contains("not enough space"), "{err}");

    assert_eq!(
        call(&fake, 2, "delete_snapshot", json!([cid])).expect("deleted"),
        Value::Null
    );
    assert!(fake.state.borrow().snapshots.is_empty());
    call(&fake, 2, "delete_snapshot", json!([cid])).expect("deleted again");
    fake.fail(
        "delete_snapshot",
        ErrorKind::Internal,
        "database query failed",
    );
    let err = call(&fake, 2, "delete_snapshot", json!([cid])).unwrap_err();
    assert_eq!(err.bosh_type(), "Bosh::Clouds::CloudError");
    assert!(err.to_string().contains(&cid), "{err}");
}

#[test]
fn every_bakery_method_is_dispatched_and_checks_its_arguments() {
    let fake = Fake::with_pis(&[]);
    for method in super::BAKERY_METHODS {
        let err = call(&fake, 2, method, json!([])).unwrap_err();
        assert_eq!(err.bosh_type(), "InvalidCall", "{method}: {err}");
        assert!(err.to_string().contains("is missing"), "{method}: {err}");
    }
    assert!(
        fake.state.borrow().calls.is_empty(),
        "nothing called bakery"
    );
}
