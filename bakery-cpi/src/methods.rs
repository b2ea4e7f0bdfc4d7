//! Every CPI method (API v1 and v2) in terms of the [`Bakery`] operations.
//!
//! VM cid = Pi serial; stemcell cid = bakeform name (`<name>-<version>`); disk cid = disk id.

use std::time::Duration;

use serde_json::{Map, Value, json};

use bakery_client::{
    BakeRequest, CreateDiskRequest, ErrorKind, Labels, Metadata, PiInfo, PiModel, PiState,
    PiStatus, RootKind, StaticNetwork,
};

use crate::agent::{self, AgentSettings, NewSettings};
use crate::backend::{BackendError, Bakery};
use crate::config::Config;
use crate::error::CpiError;
use crate::log::Log;
use crate::request::{Args, Request, kind};

/// The stemcell formats bakery accepts: raw SD-card images.
pub const STEMCELL_FORMATS: [&str; 2] = ["piimg", "raw"];

/// The highest CPI API version this CPI speaks.
pub const API_VERSION: u64 = 2;

/// Cores of the largest Raspberry Pi.
const MAX_CPU: i64 = 4;

/// RAM of the largest Raspberry Pi (MiB).
const MAX_RAM_MIB: i64 = 16 * 1024;

/// How long the undo of a failed create_vm waits for a bake still under way.
const UNDO_WAIT: Duration = Duration::from_secs(120);

/// The methods that talk to bakery (all others are answered by [`call_local`]).
const BAKERY_METHODS: [&str; 18] = [
    "create_stemcell",
    "delete_stemcell",
    "create_vm",
    "delete_vm",
    "has_vm",
    "reboot_vm",
    "set_vm_metadata",
    "create_disk",
    "delete_disk",
    "has_disk",
    "attach_disk",
    "detach_disk",
    "get_disks",
    "resize_disk",
    "update_disk",
    "set_disk_metadata",
    "snapshot_disk",
    "delete_snapshot",
];

/// Whether the method needs a bakery connection (and so a configured `url`).
pub fn needs_bakery(method: &str) -> bool {
    BAKERY_METHODS.contains(&method)
}

/// Answer a request that needs no bakery connection (see [`needs_bakery`]).
pub fn call_local(request: &Request) -> Result<Value, CpiError> {
    let args = request.args();
    let not_implemented = |reason| CpiError::NotImplemented {
        method: request.method.clone(),
        reason,
    };
    match request.method.as_str() {
        "info" => Ok(json!({"api_version": API_VERSION, "stemcell_formats": STEMCELL_FORMATS})),
        "calculate_vm_cloud_properties" => calculate_vm_cloud_properties(args),
        "create_network" | "delete_network" => Err(not_implemented(
            "a pi has one wired nic on the site's network; bakery manages no networks",
        )),
        "current_vm_id" => Err(not_implemented(
            "a pi cannot tell its own vm cid through the cpi (cpi api v1 only)",
        )),
        "configure_networks" => Err(not_implemented(
            "networks are configured when the pi is baked (cpi api v1 only, removed in v2)",
        )),
        other => Err(CpiError::UnknownMethod(other.to_string())),
    }
}

fn calculate_vm_cloud_properties(args: Args<'_>) -> Result<Value, CpiError> {
    let desired = args.object(0, "desired_instance_size")?;
    args.at_most(1)?;
    let field = |key: &'static str| -> Result<i64, CpiError> {
        match desired.get(key) {
            Some(Value::Number(n)) => n.as_i64().filter(|v| *v >= 0).ok_or_else(|| {
                args.invalid(
                    0,
                    "desired_instance_size",
                    format!("{key} must be a non-negative integer, got {n}"),
                )
            }),
            Some(other) => Err(args.invalid(
                0,
                "desired_instance_size",
                format!("{key} must be an integer, got {}", kind(other)),
            )),
            None => Err(args.invalid(0, "desired_instance_size", format!("{key} is missing"))),
        }
    };
    let cpu = field("cpu")?;
    let ram = field("ram")?;
    let ephemeral = field("ephemeral_disk_size")?;
    if cpu > MAX_CPU {
        return Err(CpiError::Cloud(format!(
            "no raspberry pi has {cpu} cpus: the largest has {MAX_CPU}"
        )));
    }
    if ram > MAX_RAM_MIB {
        return Err(CpiError::Cloud(format!(
            "no raspberry pi has {ram} MiB of ram: the largest has {MAX_RAM_MIB} MiB"
        )));
    }
    Ok(json!({ "ephemeral_disk": ephemeral }))
}

/// The methods that talk to bakery, for one request.
pub struct Cpi<'a> {
    bakery: &'a dyn Bakery,
    config: &'a Config,
    api_version: u64,
    log: &'a mut Log,
}

impl<'a> Cpi<'a> {
    /// A CPI for one call.
    pub fn new(
        bakery: &'a dyn Bakery,
        config: &'a Config,
        api_version: u64,
        log: &'a mut Log,
    ) -> Cpi<'a> {
        Cpi {
            bakery,
            config,
            api_version,
            log,
        }
    }

    /// Answer the request.
    pub fn call(&mut self, request: &Request) -> Result<Value, CpiError> {
        let args = request.args();
        match request.method.as_str() {
            "create_stemcell" => self.create_stemcell(args),
            "delete_stemcell" => self.delete_stemcell(args),
            "create_vm" => self.create_vm(args),
            "delete_vm" => self.delete_vm(args),
            "has_vm" => self.has_vm(args),
            "reboot_vm" => self.reboot_vm(args),
            "set_vm_metadata" => self.set_vm_metadata(args),
            "create_disk" => self.create_disk(args),
            "delete_disk" => self.delete_disk(args),
            "has_disk" => self.has_disk(args),
            "attach_disk" => self.attach_disk(args),
            "detach_disk" => self.detach_disk(args),
            "get_disks" => self.get_disks(args),
            "resize_disk" => self.resize_disk(args),
            "update_disk" => self.update_disk(args),
            "set_disk_metadata" => self.set_disk_metadata(args),
            "snapshot_disk" => self.snapshot_disk(args),
            "delete_snapshot" => self.delete_snapshot(args),
            _ => call_local(request),
        }
    }

    // ---- stemcells ----

    fn create_stemcell(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let image_path = args.string(0, "image_path")?;
        let properties = args.object(1, "cloud_properties")?;
        args.at_most(2)?;
        let text = |key: &'static str| -> Result<String, CpiError> {
            match properties.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(other) => Err(args.invalid(
                    1,
                    "cloud_properties",
                    format!("{key} must be a string, got {}", kind(other)),
                )),
                None => Err(args.invalid(1, "cloud_properties", format!("{key} is missing"))),
            }
        };
        let name = format!("{}-{}", text("name")?, text("version")?);
        let path = std::path::Path::new(image_path);
        if !path.is_file() {
            return Err(CpiError::Cloud(format!(
                "stemcell image {image_path} is not a readable file"
            )));
        }
        // Replace an existing bakeform (bosh --fix re-uploads): delete it first rather than
        // streaming the whole image only to be told 403.
        let exists = self
            .bakery
            .bakeform_exists(&name)
            .map_err(|e| CpiError::bakery(format!("reading bakeform {name}"), e))?;
        if exists {
            self.replace_bakeform(&name)?;
        }
        self.log
            .line(format_args!("uploading {image_path} as bakeform {name}"));
        let upload_error =
            |e| CpiError::bakery(format!("uploading {image_path} as bakeform {name}"), e);
        match self.bakery.upload_bakeform(&name, path) {
            Ok(_) => {}
            Err(e) if e.is(ErrorKind::BakeformExists) => {
                self.replace_bakeform(&name)?;
                self.bakery
                    .upload_bakeform(&name, path)
                    .map_err(upload_error)?;
            }
            Err(e) => return Err(upload_error(e)),
        }
        Ok(Value::String(name))
    }

    /// Delete a bakeform a new upload replaces.
    fn replace_bakeform(&mut self, name: &str) -> Result<(), CpiError> {
        self.log
            .line(format_args!("bakeform {name} exists; replacing it"));
        match self.bakery.delete_bakeform(name) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) if e.is(ErrorKind::BakeformInUse) => Err(CpiError::Cloud(format!(
                "cannot replace bakeform {name}: pis baked from it are in use ({e})"
            ))),
            Err(e) => Err(CpiError::bakery(format!("deleting bakeform {name}"), e)),
        }
    }

    fn delete_stemcell(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let name = args.string(0, "stemcell_cid")?;
        args.at_most(1)?;
        match self.bakery.delete_bakeform(name) {
            Ok(()) => Ok(Value::Null),
            Err(e) if e.is_not_found() => {
                self.log.line(format_args!(
                    "bakeform {name} does not exist; nothing to delete"
                ));
                Ok(Value::Null)
            }
            Err(e) if e.is(ErrorKind::BakeformInUse) => Err(CpiError::Cloud(format!(
                "cannot delete stemcell {name}: pis baked from it are in use ({e})"
            ))),
            Err(e) => Err(CpiError::bakery(format!("deleting bakeform {name}"), e)),
        }
    }

    // ---- vms ----

    fn create_vm(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let agent_id = args.string(0, "agent_id")?;
        let stemcell = args.string(1, "stemcell_cid")?;
        let cloud_properties = args.object(2, "cloud_properties")?;
        let networks = args.object(3, "networks")?;
        args.optional_strings(4, "disk_cids")?;
        let env = args.optional_object(5, "environment")?;
        args.at_most(6)?;
        let ephemeral_mib = ephemeral_disk_mib(args, cloud_properties, self.config)?;
        let root_kind = root_kind(args, cloud_properties)?;
        let (model, labels) = pi_constraints(args, cloud_properties)?;
        let network = static_network(args, networks)?;
        let mbus = self.config.mbus()?.to_string();

        let mut undo = Undo::default();
        let plan = VmPlan {
            agent_id,
            stemcell,
            networks,
            env: &env,
            ephemeral_mib,
            network,
            root_kind,
            model,
            labels,
            mbus: &mbus,
        };
        match self.create_vm_steps(&plan, &mut undo) {
            Ok(vm_cid) => {
                if self.api_version >= 2 {
                    Ok(json!([vm_cid, networks]))
                } else {
                    Ok(Value::String(vm_cid))
                }
            }
            Err(failure) => {
                self.log.line(format_args!(
                    "create_vm failed: {}; undoing",
                    failure.reason
                ));
                let leftovers = undo.run(self.bakery, self.log);
                let mut reason = failure.reason;
                if !leftovers.is_empty() {
                    reason = format!("{reason}; undo incomplete: {}", leftovers.join("; "));
                }
                Err(CpiError::VmCreationFailed {
                    stemcell_cid: stemcell.to_string(),
                    reason,
                    ok_to_retry: failure.ok_to_retry,
                })
            }
        }
    }

    fn create_vm_steps(
        &mut self,
        plan: &VmPlan<'_>,
        undo: &mut Undo,
    ) -> Result<String, StepFailure> {
        let bakery = self.bakery;
        let request = BakeRequest {
            bakeform_name: plan.stemcell.to_string(),
            network: plan.network.clone(),
            power_on: Some(false),
            root_kind: plan.root_kind,
            model: plan.model,
            labels: plan.labels.clone(),
        };
        let pi = bakery.bake(&request).map_err(|e| match e {
            _ if e.is(ErrorKind::NoFreePi) => {
                StepFailure::retry(format!("no free pi in the fridge ({e})"))
            }
            _ if e.is(ErrorKind::UnknownBakeform) || e.is(ErrorKind::BakeformNotReady) => {
                StepFailure::fatal(format!("stemcell {} cannot be baked ({e})", plan.stemcell))
            }
            _ if e.is_unreachable() => StepFailure::retry(format!("baking a pi: {e}")),
            _ => StepFailure::fatal(format!("baking a pi: {e}")),
        })?;
        let vm_cid = pi.id.clone();
        undo.pi = Some(vm_cid.clone());
        self.log.line(format_args!(
            "baking pi {vm_cid} from bakeform {}",
            plan.stemcell
        ));

        let timeout = self.config.bake_timeout();
        bakery.wait_baked(&vm_cid, timeout).map_err(|e| match e {
            _ if e.is(ErrorKind::BakeFailed) => {
                StepFailure::fatal(format!("bake of pi {vm_cid} failed ({e})"))
            }
            _ if e.is_unreachable() => StepFailure::fatal(format!(
                "pi {vm_cid} was not baked within {} s ({e})",
                timeout.as_secs()
            )),
            _ => StepFailure::fatal(format!("waiting for pi {vm_cid} to be baked: {e}")),
        })?;
        self.log.line(format_args!("pi {vm_cid} is baked"));

        let mut ephemeral_id = None;
        if plan.ephemeral_mib > 0 {
            let disk = bakery
                .create_disk(&CreateDiskRequest {
                    size: plan.ephemeral_mib,
                    ephemeral: true,
                })
                .map_err(|e| {
                    StepFailure::fatal(format!(
                        "creating an ephemeral disk of {} MiB: {e}",
                        plan.ephemeral_mib
                    ))
                })?;
            undo.disk = Some(disk.id.clone());
            bakery.attach_disk(&vm_cid, &disk.id).map_err(|e| {
                StepFailure::fatal(format!(
                    "attaching ephemeral disk {} to pi {vm_cid}: {e}",
                    disk.id
                ))
            })?;
            undo.attached = true;
            self.log.line(format_args!(
                "attached ephemeral disk {} ({} MiB) to pi {vm_cid}",
                disk.id, plan.ephemeral_mib
            ));
            ephemeral_id = Some(disk.id);
        }

        let settings = AgentSettings::new(NewSettings {
            agent_id: plan.agent_id,
            vm_cid: &vm_cid,
            networks: plan.networks,
            env: plan.env,
            ephemeral_disk: ephemeral_id.as_deref(),
            mbus: plan.mbus,
            blobstore: self.config.agent.blobstore.as_ref(),
            ntp: &self.config.agent.ntp,
        });
        bakery
            .upload_pi_file(&vm_cid, agent::SETTINGS_FILE, settings.to_bytes())
            .map_err(|e| {
                StepFailure::fatal(format!("writing agent settings onto pi {vm_cid}: {e}"))
            })?;
        let info = bakery
            .pi(&vm_cid)
            .map_err(|e| StepFailure::fatal(format!("reading pi {vm_cid}: {e}")))?;
        bakery
            .upload_pi_file(&vm_cid, agent::DISKS_FILE, agent::disks_json(&info))
            .map_err(|e| {
                StepFailure::fatal(format!("writing the disk list onto pi {vm_cid}: {e}"))
            })?;
        bakery
            .power_cycle(&vm_cid)
            .map_err(|e| StepFailure::fatal(format!("powering pi {vm_cid} on: {e}")))?;
        self.log.line(format_args!("pi {vm_cid} powered on"));
        Ok(vm_cid)
    }

    fn delete_vm(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let vm_cid = args.string(0, "vm_cid")?;
        args.at_most(1)?;
        let pi = match self.bakery.pi(vm_cid) {
            Ok(pi) => pi,
            Err(e) if e.is_not_found() => {
                self.log
                    .line(format_args!("pi {vm_cid} is unknown; nothing to delete"));
                return Ok(Value::Null);
            }
            Err(e) => return Err(CpiError::bakery(format!("reading pi {vm_cid}"), e)),
        };
        if matches!(state(&pi), PiState::Fridge | PiState::Unbaking) {
            self.log.line(format_args!(
                "pi {vm_cid} is {}; nothing to delete",
                state(&pi).as_str()
            ));
            return Ok(Value::Null);
        }
        ensure_unbaked(self.bakery, vm_cid, self.config.bake_timeout())
            .map_err(|e| CpiError::bakery(format!("unbaking pi {vm_cid}"), e))?;
        self.log.line(format_args!("unbaked pi {vm_cid}"));
        Ok(Value::Null)
    }

    fn has_vm(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let vm_cid = args.string(0, "vm_cid")?;
        args.at_most(1)?;
        match self.bakery.pi(vm_cid) {
            Ok(pi) => Ok(Value::Bool(matches!(
                state(&pi),
                PiState::Baked | PiState::Preparing
            ))),
            Err(e) if e.is_not_found() => Ok(Value::Bool(false)),
            Err(e) => Err(CpiError::bakery(format!("reading pi {vm_cid}"), e)),
        }
    }

    fn reboot_vm(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let vm_cid = args.string(0, "vm_cid")?;
        args.at_most(1)?;
        self.baked_pi(vm_cid)?;
        self.bakery
            .power_cycle(vm_cid)
            .map_err(|e| CpiError::bakery(format!("power-cycling pi {vm_cid}"), e))?;
        Ok(Value::Null)
    }

    fn set_vm_metadata(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let vm_cid = args.string(0, "vm_cid")?;
        let metadata = metadata(args.object(1, "metadata")?);
        args.at_most(2)?;
        self.baked_pi(vm_cid)?;
        self.bakery
            .set_pi_metadata(vm_cid, &metadata)
            .map_err(|e| self.vm_error(vm_cid, "setting metadata of", e))?;
        Ok(Value::Null)
    }

    // ---- disks ----

    fn create_disk(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let size = args.integer(0, "size")?;
        args.optional_object(1, "cloud_properties")?;
        args.optional_string(2, "vm_locality")?;
        args.at_most(3)?;
        if size <= 0 {
            return Err(args.invalid(0, "size", format!("must be greater than 0, got {size}")));
        }
        let disk = self
            .bakery
            .create_disk(&CreateDiskRequest {
                size,
                ephemeral: false,
            })
            .map_err(|e| disk_space_error(size, e))?;
        self.log
            .line(format_args!("created disk {} of {size} MiB", disk.id));
        Ok(Value::String(disk.id))
    }

    fn delete_disk(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let disk_cid = args.string(0, "disk_cid")?;
        args.at_most(1)?;
        match self.bakery.delete_disk(disk_cid) {
            Ok(()) => Ok(Value::Null),
            Err(e) if e.is_not_found() => Ok(Value::Null),
            Err(e) if e.is(ErrorKind::DiskAttached) => Err(CpiError::Cloud(format!(
                "cannot delete disk {disk_cid}: it is attached to a pi; detach it first ({e})"
            ))),
            Err(e) => Err(CpiError::bakery(format!("deleting disk {disk_cid}"), e)),
        }
    }

    fn has_disk(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let disk_cid = args.string(0, "disk_cid")?;
        args.at_most(1)?;
        match self.bakery.disk(disk_cid) {
            Ok(_) => Ok(Value::Bool(true)),
            Err(e) if e.is_not_found() => Ok(Value::Bool(false)),
            Err(e) => Err(CpiError::bakery(format!("reading disk {disk_cid}"), e)),
        }
    }

    fn attach_disk(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let vm_cid = args.string(0, "vm_cid")?;
        let disk_cid = args.string(1, "disk_cid")?;
        args.at_most(2)?;
        self.baked_pi(vm_cid)?;
        let disk = self.disk(disk_cid)?;
        match disk.attached_to.as_deref() {
            Some(pi) if pi == vm_cid => {
                self.log.line(format_args!(
                    "disk {disk_cid} is already attached to pi {vm_cid}"
                ));
            }
            Some(other) => {
                return Err(CpiError::Cloud(format!(
                    "disk {disk_cid} is attached to pi {other}, not {vm_cid}"
                )));
            }
            None => {
                self.bakery.attach_disk(vm_cid, disk_cid).map_err(|e| {
                    CpiError::bakery(format!("attaching disk {disk_cid} to pi {vm_cid}"), e)
                })?;
                self.log
                    .line(format_args!("attached disk {disk_cid} to pi {vm_cid}"));
            }
        }
        let mut hint = Value::Null;
        let written = self.rewrite_agent_files(vm_cid, |settings| {
            hint = settings.attach_persistent(disk_cid);
        });
        if let Err(error) = written {
            if disk.attached_to.is_none() {
                if let Err(undo) = self.bakery.detach_disk(vm_cid, disk_cid) {
                    self.log.line(format_args!(
                        "could not detach disk {disk_cid} again after a failed attach: {undo}"
                    ));
                }
            }
            return Err(error);
        }
        if self.api_version >= 2 {
            Ok(hint)
        } else {
            Ok(Value::Null)
        }
    }

    fn detach_disk(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let vm_cid = args.string(0, "vm_cid")?;
        let disk_cid = args.string(1, "disk_cid")?;
        args.at_most(2)?;
        self.baked_pi(vm_cid)?;
        let disk = self.disk(disk_cid)?;
        let attached_here = disk.attached_to.as_deref() == Some(vm_cid);
        if attached_here {
            self.bakery.detach_disk(vm_cid, disk_cid).map_err(|e| {
                CpiError::bakery(format!("detaching disk {disk_cid} from pi {vm_cid}"), e)
            })?;
            self.log
                .line(format_args!("detached disk {disk_cid} from pi {vm_cid}"));
        }
        self.rewrite_agent_files(vm_cid, |settings| settings.detach_persistent(disk_cid))?;
        if attached_here {
            Ok(Value::Null)
        } else {
            Err(CpiError::DiskNotAttached {
                vm_cid: vm_cid.to_string(),
                disk_cid: disk_cid.to_string(),
            })
        }
    }

    fn get_disks(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let vm_cid = args.string(0, "vm_cid")?;
        args.at_most(1)?;
        let pi = self.baked_pi(vm_cid)?;
        let ids: Vec<Value> = agent::non_root_disks(&pi)
            .iter()
            .filter(|disk| !disk.ephemeral)
            .map(|disk| Value::String(disk.id.clone()))
            .collect();
        Ok(Value::Array(ids))
    }

    fn resize_disk(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let disk_cid = args.string(0, "disk_cid")?;
        let new_size = args.integer(1, "new_size")?;
        args.at_most(2)?;
        self.grow_disk(disk_cid, new_size)
    }

    /// `update_disk(disk_cid, new_size, cloud_properties)`: bakery disks have no cloud
    /// properties (create_disk ignores them too), so an update is a grow in place and the
    /// answer is the same disk cid. Shrinking is `Bosh::Clouds::NotSupported`: the director
    /// (`DiskManager#update_disk_cpi`, which rescues NotImplemented and NotSupported) then
    /// creates a new disk, migrates the data and orphans the old one.
    fn update_disk(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let disk_cid = args.string(0, "disk_cid")?;
        let new_size = args.integer(1, "new_size")?;
        args.optional_object(2, "cloud_properties")?;
        args.at_most(3)?;
        self.grow_disk(disk_cid, new_size)?;
        Ok(Value::String(disk_cid.to_owned()))
    }

    /// Grows a detached disk to `new_size` MiB (the same size is a no-op; smaller is
    /// `NotSupported`).
    fn grow_disk(&mut self, disk_cid: &str, new_size: i64) -> Result<Value, CpiError> {
        let disk = self.disk(disk_cid)?;
        if new_size < disk.size {
            return Err(CpiError::NotSupported(format!(
                "cannot shrink disk {disk_cid} from {} MiB to {new_size} MiB",
                disk.size
            )));
        }
        if new_size == disk.size {
            self.log
                .line(format_args!("disk {disk_cid} already has {new_size} MiB"));
            return Ok(Value::Null);
        }
        match self.bakery.resize_disk(disk_cid, new_size) {
            Ok(_) => Ok(Value::Null),
            Err(e) if e.is_not_found() => Err(CpiError::DiskNotFound {
                disk_cid: disk_cid.to_string(),
            }),
            Err(e) if e.is(ErrorKind::DiskAttached) => Err(CpiError::Cloud(format!(
                "cannot resize disk {disk_cid}: it is attached; detach it first ({e})"
            ))),
            Err(e) => Err(disk_space_error(new_size, e)),
        }
    }

    fn set_disk_metadata(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let disk_cid = args.string(0, "disk_cid")?;
        let metadata = metadata(args.object(1, "metadata")?);
        args.at_most(2)?;
        match self.bakery.set_disk_metadata(disk_cid, &metadata) {
            Ok(_) => Ok(Value::Null),
            Err(e) if e.is_not_found() => Err(CpiError::DiskNotFound {
                disk_cid: disk_cid.to_string(),
            }),
            Err(e) => Err(CpiError::bakery(
                format!("setting metadata of disk {disk_cid}"),
                e,
            )),
        }
    }

    /// A snapshot of a persistent disk (attached ones too: crash-consistent); the snapshot
    /// cid is bakery's snapshot id.
    fn snapshot_disk(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let disk_cid = args.string(0, "disk_cid")?;
        let metadata = metadata(args.object(1, "metadata")?);
        args.at_most(2)?;
        match self.bakery.snapshot_disk(disk_cid, &metadata) {
            Ok(snapshot) => {
                self.log
                    .line(format!("snapshot {} of disk {disk_cid} taken", snapshot.id));
                Ok(Value::String(snapshot.id))
            }
            Err(e) if e.is_not_found() => Err(CpiError::DiskNotFound {
                disk_cid: disk_cid.to_string(),
            }),
            Err(e) if e.is(ErrorKind::InsufficientStorage) => Err(CpiError::Cloud(format!(
                "not enough space for a snapshot of disk {disk_cid} ({e})"
            ))),
            Err(e) => Err(CpiError::bakery(
                format!("taking a snapshot of disk {disk_cid}"),
                e,
            )),
        }
    }

    /// Deletes a snapshot; an unknown one is fine (the director retries deletes).
    fn delete_snapshot(&mut self, args: Args<'_>) -> Result<Value, CpiError> {
        let snapshot_cid = args.string(0, "snapshot_cid")?;
        args.at_most(1)?;
        match self.bakery.delete_snapshot(snapshot_cid) {
            Ok(()) => Ok(Value::Null),
            Err(e) if e.is_not_found() => Ok(Value::Null),
            Err(e) => Err(CpiError::bakery(
                format!("deleting snapshot {snapshot_cid}"),
                e,
            )),
        }
    }

    // ---- helpers ----

    /// The Pi behind a VM cid, which must be baked.
    fn baked_pi(&self, vm_cid: &str) -> Result<PiInfo, CpiError> {
        match self.bakery.pi(vm_cid) {
            Ok(pi) if state(&pi) == PiState::Baked => Ok(pi),
            Ok(pi) => Err(CpiError::VmNotFound {
                vm_cid: vm_cid.to_string(),
                reason: format!("pi is {}, not baked", state(&pi).as_str()),
            }),
            Err(e) if e.is_not_found() => Err(CpiError::VmNotFound {
                vm_cid: vm_cid.to_string(),
                reason: "no such pi".into(),
            }),
            Err(e) => Err(CpiError::bakery(format!("reading pi {vm_cid}"), e)),
        }
    }

    fn vm_error(&self, vm_cid: &str, action: &str, e: BackendError) -> CpiError {
        if e.is_not_found() {
            CpiError::VmNotFound {
                vm_cid: vm_cid.to_string(),
                reason: e.to_string(),
            }
        } else {
            CpiError::bakery(format!("{action} pi {vm_cid}"), e)
        }
    }

    fn disk(&self, disk_cid: &str) -> Result<bakery_client::Disk, CpiError> {
        self.bakery.disk(disk_cid).map_err(|e| {
            if e.is_not_found() {
                CpiError::DiskNotFound {
                    disk_cid: disk_cid.to_string(),
                }
            } else {
                CpiError::bakery(format!("reading disk {disk_cid}"), e)
            }
        })
    }

    /// Read the Pi's settings.json, change it, write it back, and rewrite disks.json.
    fn rewrite_agent_files(
        &mut self,
        vm_cid: &str,
        change: impl FnOnce(&mut AgentSettings),
    ) -> Result<(), CpiError> {
        let bytes = self
            .bakery
            .download_pi_file(vm_cid, agent::SETTINGS_FILE)
            .map_err(|e| {
                if e.is_not_found() {
                    CpiError::Cloud(format!(
                        "pi {vm_cid} has no {}: it was not created by this cpi",
                        agent::SETTINGS_FILE
                    ))
                } else {
                    CpiError::bakery(format!("reading the agent settings of pi {vm_cid}"), e)
                }
            })?;
        let mut settings = AgentSettings::from_slice(&bytes).map_err(|e| {
            CpiError::Cloud(format!(
                "the agent settings on pi {vm_cid} are not valid: {e}"
            ))
        })?;
        change(&mut settings);
        self.bakery
            .upload_pi_file(vm_cid, agent::SETTINGS_FILE, settings.to_bytes())
            .map_err(|e| {
                CpiError::bakery(format!("writing the agent settings of pi {vm_cid}"), e)
            })?;
        let pi = self
            .bakery
            .pi(vm_cid)
            .map_err(|e| CpiError::bakery(format!("reading pi {vm_cid}"), e))?;
        self.bakery
            .upload_pi_file(vm_cid, agent::DISKS_FILE, agent::disks_json(&pi))
            .map_err(|e| CpiError::bakery(format!("writing the disk list of pi {vm_cid}"), e))?;
        Ok(())
    }
}

/// What create_vm needs, checked before anything is baked.
struct VmPlan<'p> {
    agent_id: &'p str,
    stemcell: &'p str,
    networks: &'p Map<String, Value>,
    env: &'p Map<String, Value>,
    ephemeral_mib: i64,
    network: Option<StaticNetwork>,
    root_kind: Option<RootKind>,
    model: Option<PiModel>,
    labels: Labels,
    mbus: &'p str,
}

/// Why a create_vm step failed.
struct StepFailure {
    reason: String,
    ok_to_retry: bool,
}

impl StepFailure {
    fn retry(reason: String) -> StepFailure {
        StepFailure {
            reason,
            ok_to_retry: true,
        }
    }

    fn fatal(reason: String) -> StepFailure {
        StepFailure {
            reason,
            ok_to_retry: false,
        }
    }
}

/// What a half-done create_vm has to undo.
#[derive(Debug, Default)]
struct Undo {
    pi: Option<String>,
    disk: Option<String>,
    attached: bool,
}

impl Undo {
    /// Undo everything recorded; returns what could not be undone.
    fn run(&self, bakery: &dyn Bakery, log: &mut Log) -> Vec<String> {
        let mut leftovers = Vec::new();
        let mut disk_deleted = true;
        if let (Some(pi), Some(disk), true) = (&self.pi, &self.disk, self.attached) {
            if let Err(e) = bakery.detach_disk(pi, disk) {
                log.line(format_args!(
                    "undo: detaching disk {disk} from pi {pi}: {e}"
                ));
            }
        }
        if let Some(disk) = &self.disk {
            if let Err(e) = bakery.delete_disk(disk) {
                log.line(format_args!(
                    "undo: deleting disk {disk}: {e} (retrying after unbake)"
                ));
                disk_deleted = false;
            }
        }
        if let Some(pi) = &self.pi {
            match ensure_unbaked(bakery, pi, UNDO_WAIT) {
                Ok(()) => log.line(format_args!("undo: pi {pi} is back in the fridge")),
                Err(e) => leftovers.push(format!("pi {pi} is still baked ({e})")),
            }
        }
        if let (Some(disk), false) = (&self.disk, disk_deleted) {
            if let Err(e) = bakery.delete_disk(disk) {
                leftovers.push(format!("disk {disk} still exists ({e})"));
            }
        }
        leftovers
    }
}

/// Make sure a Pi is not baked: unbake it, waiting first for a bake still under way.
/// A Pi that is unknown, in the fridge or being unbaked is fine.
fn ensure_unbaked(bakery: &dyn Bakery, pi: &str, wait: Duration) -> Result<(), BackendError> {
    let mut info = match bakery.pi(pi) {
        Err(e) if e.is_not_found() => return Ok(()),
        other => other?,
    };
    if state(&info) == PiState::Preparing {
        // Whatever the wait says (baked, bake failed, timeout), look again.
        let _ = bakery.wait_baked(pi, wait);
        info = match bakery.pi(pi) {
            Err(e) if e.is_not_found() => return Ok(()),
            other => other?,
        };
    }
    match state(&info) {
        PiState::Fridge | PiState::Unbaking => Ok(()),
        PiState::Preparing => Err(BackendError::Other(format!(
            "pi {pi} is still being baked after {} s",
            wait.as_secs()
        ))),
        PiState::Baked => unbake(bakery, pi),
    }
}

/// Unbake; a Pi that turns out not to be baked (any more) is fine.
fn unbake(bakery: &dyn Bakery, pi: &str) -> Result<(), BackendError> {
    match bakery.unbake(pi) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() || e.is(ErrorKind::NotBaked) => match bakery.pi(pi) {
            Err(again) if again.is_not_found() => Ok(()),
            Ok(info) if matches!(state(&info), PiState::Fridge | PiState::Unbaking) => Ok(()),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The lifecycle state of a Pi (from `state`, or from the contract `status` of old servers).
fn state(pi: &PiInfo) -> PiState {
    pi.state.unwrap_or(match pi.status {
        PiStatus::NotInUse => PiState::Fridge,
        PiStatus::InUse => PiState::Baked,
        PiStatus::Preparing => PiState::Preparing,
    })
}

fn metadata(object: &Map<String, Value>) -> Metadata {
    object.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn disk_space_error(size_mib: i64, e: BackendError) -> CpiError {
    match e {
        _ if e.is(ErrorKind::InsufficientStorage) => CpiError::NoDiskSpace {
            size_mib,
            message: e.to_string(),
        },
        _ => CpiError::bakery(format!("creating a disk of {size_mib} MiB"), e),
    }
}

/// The ephemeral disk size of a VM: cloud property `ephemeral_disk` as MiB or `{"size": MiB}`,
/// else the configured default; 0 means none.
fn ephemeral_disk_mib(
    args: Args<'_>,
    cloud_properties: &Map<String, Value>,
    config: &Config,
) -> Result<i64, CpiError> {
    let value = match cloud_properties.get("ephemeral_disk") {
        None | Some(Value::Null) => return Ok(config.default_ephemeral_disk_mib()?),
        Some(Value::Object(object)) => object.get("size").unwrap_or(&Value::Null),
        Some(value) => value,
    };
    match value.as_i64() {
        Some(size) if size >= 0 => Ok(size),
        _ => Err(args.invalid(
            2,
            "cloud_properties",
            format!(
                "ephemeral_disk must be a size in MiB (>= 0) or {{\"size\": MiB}}, got {value}"
            ),
        )),
    }
}

/// How the VM's root reaches it: cloud property `root_kind`, `nfs` or `nbd`; absent: the
/// server's default (nfs).
fn root_kind(
    args: Args<'_>,
    cloud_properties: &Map<String, Value>,
) -> Result<Option<RootKind>, CpiError> {
    match cloud_properties.get("root_kind") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_str()
            .and_then(|kind| kind.parse::<RootKind>().ok())
            .map(Some)
            .ok_or_else(|| {
                args.invalid(
                    2,
                    "cloud_properties",
                    format!("root_kind must be \"nfs\" or \"nbd\", got {value}"),
                )
            }),
    }
}

/// Which Pi the VM may get: cloud properties `model` (`pi3`, `pi4`, `pi5`) and `labels` (a
/// map of label to value; numbers and booleans are taken as their text), passed to the bake
/// as its constraints.
fn pi_constraints(
    args: Args<'_>,
    cloud_properties: &Map<String, Value>,
) -> Result<(Option<PiModel>, Labels), CpiError> {
    let invalid = |message: String| args.invalid(2, "cloud_properties", message);
    let model = match cloud_properties.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(
            name.parse::<PiModel>()
                .map_err(|e| invalid(e.to_string()))?,
        ),
        Some(other) => {
            return Err(invalid(format!(
                "model must be \"pi3\", \"pi4\" or \"pi5\", got {other}"
            )));
        }
    };
    let mut labels = Labels::new();
    match cloud_properties.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(invalid(format!(
                            "labels.{key} must be a string, number or boolean, got {other}"
                        )));
                    }
                };
                labels.insert(key.clone(), text);
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "labels must be a map of label to value, got {other}"
            )));
        }
    }
    Ok((model, labels))
}

/// The static network of a VM: the `manual` network's address for the kernel's `ip=`, or
/// none for a `dynamic` one. A Pi has exactly one wired NIC.
fn static_network(
    args: Args<'_>,
    networks: &Map<String, Value>,
) -> Result<Option<StaticNetwork>, CpiError> {
    let mut chosen: Option<(&str, Option<StaticNetwork>)> = None;
    for (name, network) in networks {
        let Value::Object(fields) = network else {
            return Err(args.invalid(
                3,
                "networks",
                format!("network {name} must be an object, got {}", kind(network)),
            ));
        };
        let text = |key: &str| -> Result<Option<String>, CpiError> {
            match fields.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(args.invalid(
                    3,
                    "networks",
                    format!(
                        "{key} of network {name} must be a string, got {}",
                        kind(other)
                    ),
                )),
            }
        };
        let kind_of = text("type")?.unwrap_or_else(|| "manual".into());
        let configured = match kind_of.as_str() {
            "dynamic" => None,
            "manual" => {
                let required = |key: &str| -> Result<String, CpiError> {
                    text(key)?.filter(|s| !s.is_empty()).ok_or_else(|| {
                        args.invalid(3, "networks", format!("manual network {name} has no {key}"))
                    })
                };
                let dns = match fields.get("dns") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    Some(other) => {
                        return Err(args.invalid(
                            3,
                            "networks",
                            format!(
                                "dns of network {name} must be an array, got {}",
                                kind(other)
                            ),
                        ));
                    }
                };
                Some(StaticNetwork {
                    ip: required("ip")?,
                    netmask: required("netmask")?,
                    gateway: text("gateway")?.filter(|s| !s.is_empty()),
                    dns,
                    hostname: None,
                })
            }
            "vip" => {
                return Err(CpiError::NotSupported(format!(
                    "network {name} is a vip network: a pi has no floating addresses"
                )));
            }
            other => {
                return Err(CpiError::NotSupported(format!(
                    "network {name} has type {other:?}: a pi supports manual and dynamic networks"
                )));
            }
        };
        if let Some((first, _)) = chosen {
            return Err(CpiError::NotSupported(format!(
                "networks {first} and {name}: a pi has one wired nic, so a vm takes one network"
            )));
        }
        chosen = Some((name, configured));
    }
    Ok(chosen.and_then(|(_, network)| network))
}

#[cfg(test)]
#[path = "methods_tests.rs"]
mod tests;
