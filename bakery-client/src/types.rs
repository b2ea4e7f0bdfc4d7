//! The wire types of bakery's HTTP API v1: every JSON body either side sends.
//!
//! Field names are the compatibility contract with the original Go client and server
//! (`../shared/specs/api-v1.md`); fields bakery adds beside the contract are optional on
//! input (so replies of the original server still parse) and omitted on output when empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The three status numbers of the contract.
///
/// The server's finer lifecycle ([`PiState`]) maps onto them: `fridge` → 1, `baked` → 2,
/// `preparing` and `unbaking` → 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum PiStatus {
    /// `1`, NOTINUSE: in the fridge, free to bake.
    NotInUse,
    /// `2`, INUSE: baked, its root exported, powered on.
    InUse,
    /// `3`, PREPARING: being baked (or unbaked).
    Preparing,
}

impl PiStatus {
    /// The number the contract uses for this status.
    pub fn code(self) -> u8 {
        match self {
            PiStatus::NotInUse => 1,
            PiStatus::InUse => 2,
            PiStatus::Preparing => 3,
        }
    }
}

/// On the wire a status is the number 1, 2 or 3.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for PiStatus {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some([1, 2, 3]))
            .description(Some("1 not in use (fridge), 2 in use (baked), 3 preparing"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for PiStatus {}

impl From<PiStatus> for u8 {
    fn from(status: PiStatus) -> u8 {
        status.code()
    }
}

impl TryFrom<u8> for PiStatus {
    type Error = String;

    fn try_from(code: u8) -> Result<Self, Self::Error> {
        match code {
            1 => Ok(PiStatus::NotInUse),
            2 => Ok(PiStatus::InUse),
            3 => Ok(PiStatus::Preparing),
            other => Err(format!("unknown pi status {other}, expected 1, 2 or 3")),
        }
    }
}

named_enum! {
    /// The server's lifecycle state of a Pi (an addition to the contract, field `state`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum PiState ("pi state") {
        /// Known, not in use.
        Fridge = "fridge",
        /// Its root filesystem is being cloned and exported.
        Preparing = "preparing",
        /// Ready: root exported, powered on.
        Baked = "baked",
        /// Being powered off and torn down, on its way back to the fridge.
        Unbaking = "unbaking",
    }
}

named_enum! {
    /// How a baked Pi's root file system reaches it (an addition: `rootKind`).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum RootKind ("root kind") {
        /// A directory tree exported over NFS (the default, as the first server).
        #[default]
        Nfs = "nfs",
        /// An ext4 image file served by `nbd-server` (k3s and containerd need a block-device
        /// root: overlayfs does not work on NFS).
        Nbd = "nbd",
    }
}

impl PiState {
    /// The contract status number this state is reported as.
    pub fn status(self) -> PiStatus {
        match self {
            PiState::Fridge => PiStatus::NotInUse,
            PiState::Baked => PiStatus::InUse,
            PiState::Preparing | PiState::Unbaking => PiStatus::Preparing,
        }
    }
}

named_enum! {
    /// The board a Pi is, as its network boot tells (an addition to the contract, field `model`):
    /// which first-stage files and kernel it asks for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum PiModel ("pi model") {
        /// A Pi 3 (or 2 B v1.2): `bootcode.bin`, then `start.elf`.
        Pi3 = "pi3",
        /// A Pi 4, 400 or CM4: `start4.elf` first.
        Pi4 = "pi4",
        /// A Pi 5 or CM5: no `start*.elf`; `kernel_2712.img` and `bcm2712-*.dtb`.
        Pi5 = "pi5",
    }
}

named_enum! {
    /// A Pi's power as bakery last knew it (an addition to the contract, field `powerState`): from
    /// a power switch bakery made or the PPI's answer to a `status` request.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum PowerState ("power state") {
        /// Switched on.
        On = "on",
        /// Switched off.
        Off = "off",
        /// The PPI cannot tell (or does not know the `status` action).
        Unknown = "unknown",
    }
}

named_enum! {
    /// One of cloud-init's NoCloud files a Pi fetches from `<nocloud url><file>` (an
    /// addition: `/oven/{piId}/cloud-init/{file}`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum CloudInitFile ("cloud-init file") {
        /// `meta-data`: instance id, hostname.
        MetaData = "meta-data",
        /// `user-data`: the operator's cloud-config or script.
        UserData = "user-data",
        /// `vendor-data`: the site's defaults, merged under user-data.
        VendorData = "vendor-data",
        /// `network-config`: a network configuration (version 1 or 2).
        NetworkConfig = "network-config",
    }
}

/// Operator labels of a Pi (`rack=a`, `poe=port-7`): set with `PUT /pis/{id}/labels`, matched
/// by a bake's `labels` constraint.
pub type Labels = BTreeMap<String, String>;

/// A static network configuration for a Pi, rendered into its `cmdline.txt` as the kernel's
/// `ip=<ip>::<gateway>:<netmask>:<hostname>:eth0:off` parameter (an addition to the contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaticNetwork {
    /// The Pi's address, e.g. `10.0.0.21`.
    pub ip: String,
    /// The netmask, e.g. `255.255.255.0`.
    pub netmask: String,
    /// The default gateway, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers, if any (at most two are used by the kernel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// The host name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// A Pi as the API reports it (`PiInfo` of the contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PiInfo {
    /// The serial number: the name of the directory the Pi asks for over TFTP.
    pub id: String,
    /// The contract status number.
    pub status: PiStatus,
    /// The Pi's disks in attach order; `disks[0]` is the root disk. Omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// The bakeform the Pi was baked from. Omitted when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bakeform: Option<Bakeform>,
    /// Addition: the finer lifecycle state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PiState>,
    /// Addition: the address the Pi was last seen at on the boot path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Addition: the static network configuration rendered into its `cmdline.txt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<StaticNetwork>,
    /// Addition: how its root reaches it (`nfs` or `nbd`) while it is in the oven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_kind: Option<RootKind>,
    /// Addition: metadata set by the caller (the CPI stores the director's VM metadata).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Addition: why the last bake failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Addition: a summary of the Pi's most recent boot on the boot path, if it booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_boot: Option<BootSummary>,
    /// Addition: the board, as its network boot told (unknown until it asked for a file
    /// only one model asks for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PiModel>,
    /// Addition: the operator's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Addition: when bakery first heard of the Pi (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<i64>,
    /// Addition: when the Pi last asked for a boot file (unix milliseconds, to the minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
    /// Addition: the power state bakery last knew of (omitted when it never knew: no PPI
    /// call for the Pi since the server started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<PowerState>,
    /// Addition: when `powerState` was learnt (unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state_at: Option<i64>,
}

/// A disk: a directory exported over NFS (`Disk` of the contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// The disk's UUID.
    pub id: String,
    /// The server path of the exported directory.
    pub location: String,
    /// The size in MiB (the root disk reports 0).
    pub size: i64,
    /// The address Pis mount it from.
    pub nfs_address: String,
    /// Addition: the Pi it is attached to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_to: Option<String>,
    /// Addition: destroyed with the Pi on unbake (a Pi's root and ephemeral disks).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ephemeral: bool,
    /// Addition: metadata set by the caller.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// An uploaded SD-card image (`Bakeform` of the contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Bakeform {
    /// The bakeform's name.
    pub name: String,
    /// The server path of the imported bakeform.
    pub location: String,
    /// Addition: the import state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BakeformState>,
    /// Addition: why the import failed, when `state` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

named_enum! {
    /// The import state of a bakeform (an addition to the contract).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum BakeformState ("bakeform state") {
        /// The upload is stored and being imported.
        Importing = "importing",
        /// Imported: Pis can be baked from it.
        Ready = "ready",
        /// The import failed; `error` says why.
        Failed = "failed",
    }
}

/// Body of `POST /fridge`: bake a Pi.
///
/// Request bodies refuse unknown fields (400 naming the field): a misspelt `poweron` must not
/// bake and power on as if it were absent. The original clients send none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BakeRequest {
    /// The bakeform to bake the Pi from.
    pub bakeform_name: String,
    /// Addition: a static network configuration for the Pi's `cmdline.txt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<StaticNetwork>,
    /// Addition: power the Pi on when the bake is done (default true, as the first server).
    /// The CPI sends `false`, writes the agent settings, then power-cycles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_on: Option<bool>,
    /// Addition: how the Pi's root reaches it, `nfs` (default) or `nbd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_kind: Option<RootKind>,
    /// Addition: bake only a Pi of this model (404 naming it when none is free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PiModel>,
    /// Addition: bake only a Pi carrying all these labels with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

/// Body of `POST /disks`: create a disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateDiskRequest {
    /// The size in MiB (must be > 0).
    pub size: i64,
    /// Addition: an ephemeral disk is destroyed when the Pi it is attached to is unbaked.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ephemeral: bool,
}

/// Body of `POST /oven/{piId}/disks`: attach a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachDiskRequest {
    /// The disk to attach.
    pub disk_id: String,
}

/// Body of `POST /disks/{diskId}/resize` (an addition): grow a detached disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResizeDiskRequest {
    /// The new size in MiB; must not be smaller than the current one.
    pub size: i64,
}

/// Reply of `GET /disks`: `{"disks": {id: Disk}}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskList {
    /// Every disk, by id.
    #[serde(default)]
    pub disks: BTreeMap<String, Disk>,
}

/// A snapshot of a data disk's image (an addition: `POST /disks/{diskId}/snapshots`): a
/// reflink or sparse copy of its `disk.img`, kept by the server next to (not in) the disk's
/// exported directory, restorable into the disk, deleted with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The snapshot's UUID (the BOSH snapshot cid).
    pub id: String,
    /// The disk it was taken of.
    pub disk: String,
    /// The disk's size when it was taken, in MiB (a restore gives the disk this size).
    pub size: i64,
    /// When it was taken, Unix milliseconds.
    pub created_at: i64,
    /// Metadata given when it was taken (the CPI stores the director's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Body of `POST /disks/{diskId}/snapshots` (an addition); the body may be left out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// Metadata to keep with the snapshot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Reply of `GET /disks/{diskId}/snapshots` (an addition): oldest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotList {
    /// The disk's snapshots, oldest first.
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
}

/// Body of `POST /disks/{diskId}/restore` (an addition): replace a detached disk's image
/// with a copy of one of its snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RestoreDiskRequest {
    /// The snapshot to restore (one of this disk's).
    pub snapshot: String,
}

/// Reply of `GET /fridge` and `GET /oven`: `{id: PiInfo}`.
pub type PiMap = BTreeMap<String, PiInfo>;

/// Reply of `GET /bakeforms`: `{name: Bakeform}`.
pub type BakeformMap = BTreeMap<String, Bakeform>;

/// Metadata as `PUT /oven/{piId}/metadata` and `PUT /disks/{diskId}/metadata` take it
/// (additions): a JSON object of string keys.
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// The body of every error reply: `{"error": "..."}` (the contract's shape for 404 on bake),
/// with bakery's machine-readable `code` beside it (an addition the Go client ignores).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong, lowercase, naming the input.
    pub error: String,
    /// What kind of failure it is; absent from the original server's replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorKind>,
}

named_enum! {
    /// What kind of failure an error reply reports: the `code` of [`ErrorBody`].
    ///
    /// Each kind is answered with one HTTP status ([`ErrorKind::status`]); that table is the
    /// server's only mapping of failures to statuses. The *generic* kinds (one per status the API
    /// uses: [`ErrorKind::InvalidRequest`], [`ErrorKind::NotFound`], ...) are what a reply without a
    /// code — from the original server, or a proxy — is classed as ([`ErrorKind::of_status`]); the
    /// finer ones say which resource or rule it was. A code this version does not know parses as
    /// [`ErrorKind::Unknown`], so newer servers can add kinds.
    #[non_exhaustive]
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum ErrorKind ("error kind") {
        /// 400: the request is malformed or breaks a rule (generic).
        InvalidRequest = "invalid_request",
        /// 400: a name (serial, bakeform, disk or snapshot id, file name) is not valid.
        InvalidName = "invalid_name",
        /// 400: a bake names a bakeform that does not exist.
        UnknownBakeform = "unknown_bakeform",
        /// 400: a bake names a bakeform that is still being imported or failed to.
        BakeformNotReady = "bakeform_not_ready",
        /// 400: an uploaded image is not a usable SD-card image.
        BadImage = "bad_image",
        /// 401: no token, or an unknown one.
        Unauthorized = "unauthorized",
        /// 403: not allowed (generic).
        Forbidden = "forbidden",
        /// 403: the token may not do this (a read-only token asked to change something).
        InsufficientScope = "insufficient_scope",
        /// 403: the Pi is not baked.
        NotBaked = "not_baked",
        /// 403: a bakeform of that name exists.
        BakeformExists = "bakeform_exists",
        /// 403: the operation does not apply to a Pi's root disk.
        RootDisk = "root_disk",
        /// 404: nothing there (generic; also an unknown route).
        NotFound = "not_found",
        /// 404: no such Pi.
        PiNotFound = "pi_not_found",
        /// 404: the Pi is not in the oven.
        PiNotInOven = "pi_not_in_oven",
        /// 404: no Pi in the fridge is free (and matches the constraints).
        NoFreePi = "no_free_pi",
        /// 404: no such bakeform.
        BakeformNotFound = "bakeform_not_found",
        /// 404: no such disk.
        DiskNotFound = "disk_not_found",
        /// 404: the disk is not attached to that Pi.
        DiskNotAttached = "disk_not_attached",
        /// 404: no such snapshot (of that disk).
        SnapshotNotFound = "snapshot_not_found",
        /// 404: no such file (a Pi's file, cloud-init data, a boot file).
        FileNotFound = "file_not_found",
        /// 405: the route does not take that method.
        MethodNotAllowed = "method_not_allowed",
        /// 408: the request stopped sending (an upload stalled).
        RequestTimeout = "request_timeout",
        /// 409: the state of a resource forbids it (generic).
        Conflict = "conflict",
        /// 409: the bake failed.
        BakeFailed = "bake_failed",
        /// 409: the bakeform is in use by a baked Pi.
        BakeformInUse = "bakeform_in_use",
        /// 409: the bakeform is being imported.
        BakeformImporting = "bakeform_importing",
        /// 409: the disk is attached to a Pi.
        DiskAttached = "disk_attached",
        /// 413: the body or image is larger than the limit.
        TooLarge = "too_large",
        /// 500: the server failed (generic).
        Internal = "internal",
        /// 502: the power interface (PPI) failed (the only 502 the API answers).
        PowerFailed = "power_failed",
        /// 503: too busy (too many uploads at once); retry after the `Retry-After` seconds.
        Unavailable = "unavailable",
        /// 507: not enough space on the server's data dir.
        InsufficientStorage = "insufficient_storage",
        /// A code this version does not know, or a status without a generic kind.
        #[serde(other)]
        Unknown = "unknown",
    }
}

impl ErrorKind {
    /// The HTTP status the server answers this kind with (500 for [`ErrorKind::Unknown`]).
    pub fn status(self) -> u16 {
        use ErrorKind as K;
        match self {
            K::InvalidRequest | K::InvalidName | K::UnknownBakeform | K::BakeformNotReady => 400,
            K::BadImage => 400,
            K::Unauthorized => 401,
            K::Forbidden | K::InsufficientScope | K::NotBaked | K::BakeformExists | K::RootDisk => {
                403
            }
            K::NotFound
            | K::PiNotFound
            | K::PiNotInOven
            | K::NoFreePi
            | K::BakeformNotFound
            | K::DiskNotFound
            | K::DiskNotAttached
            | K::SnapshotNotFound
            | K::FileNotFound => 404,
            K::MethodNotAllowed => 405,
            K::RequestTimeout => 408,
            K::Conflict | K::BakeFailed | K::BakeformInUse | K::BakeformImporting => 409,
            K::DiskAttached => 409,
            K::TooLarge => 413,
            K::Internal | K::Unknown => 500,
            K::PowerFailed => 502,
            K::Unavailable => 503,
            K::InsufficientStorage => 507,
        }
    }

    /// The generic kind of a status: what a reply without a code is classed as
    /// ([`ErrorKind::Unknown`] for a status the API does not use).
    pub fn of_status(status: u16) -> ErrorKind {
        match status {
            400 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            405 => ErrorKind::MethodNotAllowed,
            408 => ErrorKind::RequestTimeout,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::TooLarge,
            502 => ErrorKind::PowerFailed,
            503 => ErrorKind::Unavailable,
            507 => ErrorKind::InsufficientStorage,
            500..=599 => ErrorKind::Internal,
            _ => ErrorKind::Unknown,
        }
    }

    /// Whether a reply of this kind reports `wanted`: it is `wanted`, or it is the generic kind
    /// of `wanted`'s status, which is all a server without codes (the first bakery) says.
    pub fn reports(self, wanted: ErrorKind) -> bool {
        self == wanted || self == ErrorKind::of_status(wanted.status())
    }
}

/// The content type the contract names for image uploads.
pub const RAW_IMAGE_CONTENT_TYPE: &str = "application/x-raw-disk-image";

fn is_false(value: &bool) -> bool {
    !*value
}

/// A summary of one boot of a Pi (an addition: `PiInfo.lastBoot`). Times are Unix
/// milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BootSummary {
    /// When the boot's first request arrived.
    pub started: i64,
    /// When its latest request ended.
    pub finished: i64,
    /// Files sent completely (unconfirmed ones included: sent, final ack lost).
    pub files: u32,
    /// Bytes of the files sent.
    pub bytes: u64,
    /// Requests that failed: not found, refused, aborted mid-transfer, given up or failed
    /// (size probes not counted).
    pub failed: u32,
    /// Milliseconds from the first request to the end of the last file sent.
    pub time_to_last_file_ms: i64,
}

named_enum! {
    /// How one boot-path request ended (an addition: boot timelines).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum BootOutcome ("boot outcome") {
        /// The whole file was sent.
        Sent = "sent",
        /// No such file, or the Pi may not boot now.
        NotFound = "notFound",
        /// The path was refused (outside the boot directory, not a valid path).
        Refused = "refused",
        /// A size probe: the Pi read the size and ended the transfer, as Pi firmware does
        /// before each real fetch (kept only when no fetch of the file followed).
        Probe = "probe",
        /// The client ended the transfer part way.
        Aborted = "aborted",
        /// The client vanished mid-transfer.
        GaveUp = "gaveUp",
        /// Sent, final ack lost: the last block went out but its acknowledgement never came
        /// (TFTP). The Pi most likely has the whole file; `bytes` counts what it acknowledged.
        Unconfirmed = "unconfirmed",
        /// The server could not read or send the file.
        Failed = "failed",
    }
}

/// One boot-path request of a Pi, over TFTP or HTTP `/files` (an addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BootRequest {
    /// When the request ended, Unix milliseconds.
    pub time: i64,
    /// The path asked for, as the Pi sent it (`<serial>/start4.elf`, `bootcode.bin`).
    pub file: String,
    /// Bytes delivered.
    pub bytes: u64,
    /// How it ended.
    pub outcome: BootOutcome,
    /// `tftp` or `http`.
    pub via: String,
    /// How long the transfer took, in milliseconds.
    pub elapsed_ms: u64,
    /// Whether a size probe of the same file came just before (folded into this entry).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub size_probed: bool,
}

/// One boot of a Pi: its requests in order (an addition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Boot {
    /// The summary.
    #[serde(flatten)]
    pub summary: BootSummary,
    /// Every request, oldest first.
    pub requests: Vec<BootRequest>,
}

/// The reply of `GET /oven/{piId}/boots` and `GET /pis/{piId}/boots`: the latest boots,
/// newest first (an addition).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BootList {
    /// The boots, newest first.
    pub boots: Vec<Boot>,
}

/// One state change the server recorded (an addition: `GET /events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Increases by at least one with every event; resume after it with `?since=<id>`.
    pub id: i64,
    /// When, Unix milliseconds.
    pub time: i64,
    /// What happened: `registered`, `bakeStarted`, `bakeFinished`, `bakeFailed`,
    /// `unbakeStarted`, `unbaked`, `reset`, `powerOn`, `powerOff`, `diskCreated`,
    /// `diskDeleted`, `diskAttached`, `diskDetached`, `snapshotCreated`, `snapshotDeleted`,
    /// `diskRestored`, `bakeformImporting`,
    /// `bakeformImported`, `bakeformFailed`, `bakeformDeleted`.
    pub kind: String,
    /// The Pi concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pi: Option<String>,
    /// The bakeform concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bakeform: Option<String>,
    /// The disk concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Details, e.g. why a bake failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The reply of `GET /events` (an addition).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    /// Events after `since`, oldest first.
    pub events: Vec<Event>,
    /// The id of the newest event the server has (0 when none): pass it as `since` to
    /// see only what happens next.
    pub last_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_written_as_their_codes_and_unknown_codes_parse() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), kind);
        }
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":"x","code":"a_code_from_the_future"}"#).unwrap();
        assert_eq!(body.code, Some(ErrorKind::Unknown));
        let old: ErrorBody = serde_json::from_str(r#"{"error":"no available Pi found"}"#).unwrap();
        assert_eq!(old.code, None);
        let written = serde_json::to_string(&ErrorBody {
            error: "x".into(),
            code: None,
        })
        .unwrap();
        assert_eq!(written, r#"{"error":"x"}"#);
    }

    #[test]
    fn every_kind_has_a_status_whose_generic_kind_answers_it() {
        for kind in ErrorKind::ALL {
            let generic = ErrorKind::of_status(kind.status());
            assert_eq!(generic.status(), kind.status(), "{kind}");
        }
        assert_eq!(ErrorKind::of_status(404), ErrorKind::NotFound);
        assert_eq!(ErrorKind::of_status(418), ErrorKind::Unknown);
        assert_eq!(ErrorKind::of_status(504), ErrorKind::Internal);
        assert!(ErrorKind::NoFreePi.reports(ErrorKind::NoFreePi));
        assert!(ErrorKind::NotFound.reports(ErrorKind::NoFreePi));
        assert!(!ErrorKind::PiNotFound.reports(ErrorKind::NoFreePi));
        assert!(!ErrorKind::Conflict.reports(ErrorKind::NoFreePi));
    }

    #[test]
    fn pi_info_matches_the_contract_shape() {
        let json = r#"{"id":"1a2b3c4d","status":2,"disks":[{"id":"d1","location":"/srv/d1","size":0,"nfsAddress":"10.0.0.2"}],"sourceBakeform":{"name":"raspbian","location":"/srv/raspbian.img"}}"#;
        let pi: PiInfo = serde_json::from_str(json).expect("contract json parses");
        assert_eq!(pi.status, PiStatus::InUse);
        assert_eq!(pi.disks[0].nfs_address, "10.0.0.2");
        assert_eq!(serde_json::to_string(&pi).expect("serializes"), json);
    }

    #[test]
    fn empty_fields_are_omitted() {
        let pi = PiInfo {
            id: "1a2b3c4d".into(),
            status: PiStatus::NotInUse,
            disks: vec![],
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
        assert_eq!(
            serde_json::to_string(&pi).expect("serializes"),
            r#"{"id":"1a2b3c4d","status":1}"#
        );
    }

    #[test]
    fn power_state_is_a_lowercase_word_beside_its_time() {
        let pi: PiInfo = serde_json::from_str(
            r#"{"id":"1a2b3c4d","status":2,"powerState":"off","powerStateAt":1700000000000}"#,
        )
        .expect("parses");
        assert_eq!(pi.power_state, Some(PowerState::Off));
        assert_eq!(pi.power_state_at, Some(1_700_000_000_000));
        for state in [PowerState::On, PowerState::Off, PowerState::Unknown] {
            assert_eq!(state.as_str().parse::<PowerState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).expect("serializes"),
                format!("\"{state}\"")
            );
        }
        assert!("1".parse::<PowerState>().is_err());
    }

    #[test]
    fn unknown_status_is_rejected() {
        let err = serde_json::from_str::<PiInfo>(r#"{"id":"x","status":7}"#).unwrap_err();
        assert!(err.to_string().contains("unknown pi status 7"), "{err}");
    }

    #[test]
    fn states_map_to_contract_status() {
        assert_eq!(PiState::Fridge.status().code(), 1);
        assert_eq!(PiState::Baked.status().code(), 2);
        assert_eq!(PiState::Preparing.status().code(), 3);
        assert_eq!(PiState::Unbaking.status().code(), 3);
    }

    #[test]
    fn pi_state_names_round_trip_and_match_serde() {
        for state in PiState::ALL {
            assert_eq!(state.as_str().parse::<PiState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).expect("serializes"),
                format!("\"{state}\"")
            );
        }
        let err = "oven".parse::<PiState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown pi state \"oven\": expected fridge, preparing, baked or unbaking"
        );
    }

    #[test]
    fn bakeform_state_names_round_trip_and_match_serde() {
        for state in BakeformState::ALL {
            assert_eq!(state.as_str().parse::<BakeformState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).expect("serializes"),
                format!("\"{state}\"")
            );
        }
        let err = "Ready".parse::<BakeformState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown bakeform state \"Ready\": expected importing, ready or failed"
        );
    }

    /// Each variant of `E` is written by serde as its `as_str` name, read back from it by
    /// serde and `FromStr`, and an unknown name is refused naming what it was meant to be.
    fn names_agree<E>(all: &[E], what: &str)
    where
        E: Copy + PartialEq + std::fmt::Debug + std::fmt::Display + Serialize,
        E: for<'de> Deserialize<'de> + std::str::FromStr<Err = crate::UnknownName>,
    {
        assert!(!all.is_empty());
        for &value in all {
            let name = value.to_string();
            assert_eq!(
                serde_json::to_value(value).unwrap(),
                serde_json::json!(name)
            );
            assert_eq!(
                serde_json::from_value::<E>(serde_json::json!(name)).unwrap(),
                value
            );
            assert_eq!(name.parse::<E>(), Ok(value));
        }
        let err = "no such name".parse::<E>().unwrap_err();
        assert_eq!(err.what, what);
        assert!(
            err.to_string()
                .starts_with(&format!("unknown {what} \"no such name\": expected "))
        );
    }

    #[test]
    fn every_named_enum_has_one_name_per_variant_on_the_wire_and_in_text() {
        names_agree(&PiState::ALL, "pi state");
        names_agree(&RootKind::ALL, "root kind");
        names_agree(&PiModel::ALL, "pi model");
        names_agree(&PowerState::ALL, "power state");
        names_agree(&BakeformState::ALL, "bakeform state");
        names_agree(&ErrorKind::ALL, "error kind");
        names_agree(&BootOutcome::ALL, "boot outcome");
        names_agree(&CloudInitFile::ALL, "cloud-init file");
        assert_eq!(BootOutcome::GaveUp.as_str(), "gaveUp");
        assert_eq!(ErrorKind::PiNotInOven.as_str(), "pi_not_in_oven");
        assert_eq!(ErrorKind::ALL.len(), 33);
    }
}
