//! A blocking facade over the async [`crate::Client`], for callers without an async runtime
//! (the `bakery` CLI, a CPI run once per director call).
//!
//! Each client owns a private current-thread tokio runtime; do not call it from inside an
//! async runtime (tokio refuses to block there) — use [`crate::Client`] instead.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{ClientBuilder, ProgressFn};
use crate::error::Error;
use crate::types::{
    BakeRequest, Bakeform, BakeformMap, CreateDiskRequest, Disk, DiskList, Labels, Metadata,
    PiInfo, PiMap, Snapshot, SnapshotList,
};

/// A blocking client of one bakery server: the methods of [`crate::Client`], synchronous.
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Client {
    /// A client with default settings for `base_url` (see [`ClientBuilder::new`]).
    pub fn new(base_url: &str) -> Result<Client, Error> {
        Client::from_async(crate::Client::new(base_url)?)
    }

    /// A blocking client from a configured builder.
    pub fn from_builder(builder: ClientBuilder) -> Result<Client, Error> {
        Client::from_async(builder.build()?)
    }

    /// Wraps an async client, starting the private runtime.
    pub fn from_async(inner: crate::Client) -> Result<Client, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime { source })?;
        Ok(Client {
            inner,
            runtime: Arc::new(runtime),
        })
    }

    /// The async client underneath.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        self.inner.base_url()
    }

    /// Bakes a Pi (`POST /fridge`, 202); see [`crate::Client::bake`].
    pub fn bake(&self, request: &BakeRequest) -> Result<PiInfo, Error> {
        self.runtime.block_on(self.inner.bake(request))
    }

    /// Bakes a Pi from a bakeform with the server's defaults; see [`crate::Client::bake_from`].
    pub fn bake_from(&self, bakeform: &str) -> Result<PiInfo, Error> {
        self.runtime.block_on(self.inner.bake_from(bakeform))
    }

    /// Unbakes a Pi (`DELETE /oven/{pi}`); see [`crate::Client::unbake`].
    pub fn unbake(&self, pi: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.unbake(pi))
    }

    /// A Pi in the oven (`GET /oven/{pi}`); see [`crate::Client::pi`].
    pub fn pi(&self, pi: &str) -> Result<PiInfo, Error> {
        self.runtime.block_on(self.inner.pi(pi))
    }

    /// Any known Pi (`GET /pis/{pi}`); see [`crate::Client::any_pi`].
    pub fn any_pi(&self, pi: &str) -> Result<PiInfo, Error> {
        self.runtime.block_on(self.inner.any_pi(pi))
    }

    /// Whether a Pi is baked; see [`crate::Client::is_baked`].
    pub fn is_baked(&self, pi: &str) -> Result<bool, Error> {
        self.runtime.block_on(self.inner.is_baked(pi))
    }

    /// Waits until a Pi is baked (long-poll); see [`crate::Client::wait_baked`].
    pub fn wait_baked(&self, pi: &str, timeout: Duration) -> Result<PiInfo, Error> {
        self.runtime.block_on(self.inner.wait_baked(pi, timeout))
    }

    /// Power-cycles a Pi; see [`crate::Client::power_cycle`].
    pub fn power_cycle(&self, pi: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.power_cycle(pi))
    }

    /// Re-clones a Pi's root from its bakeform; see [`crate::Client::reset`].
    pub fn reset(&self, pi: &str) -> Result<PiInfo, Error> {
        self.runtime.block_on(self.inner.reset(pi))
    }

    /// The Pis in the fridge; see [`crate::Client::fridge`].
    pub fn fridge(&self) -> Result<PiMap, Error> {
        self.runtime.block_on(self.inner.fridge())
    }

    /// The Pis in the oven; see [`crate::Client::oven`].
    pub fn oven(&self) -> Result<PiMap, Error> {
        self.runtime.block_on(self.inner.oven())
    }

    /// Every known Pi; see [`crate::Client::pis`].
    pub fn pis(&self) -> Result<PiMap, Error> {
        self.runtime.block_on(self.inner.pis())
    }

    /// Replaces a Pi's labels; see [`crate::Client::set_pi_labels`].
    pub fn set_pi_labels(&self, pi: &str, labels: &Labels) -> Result<PiInfo, Error> {
        self.runtime.block_on(self.inner.set_pi_labels(pi, labels))
    }

    /// Asks the Pi's power state now; see [`crate::Client::refresh_power_state`].
    pub fn refresh_power_state(&self, pi: &str) -> Result<PiInfo, Error> {
        self.runtime.block_on(self.inner.refresh_power_state(pi))
    }

    /// Replaces a Pi's metadata; see [`crate::Client::set_pi_metadata`].
    pub fn set_pi_metadata(&self, pi: &str, metadata: &Metadata) -> Result<PiInfo, Error> {
        self.runtime
            .block_on(self.inner.set_pi_metadata(pi, metadata))
    }

    /// Stores a file in a Pi's `piConfig/`; see [`crate::Client::upload_pi_file`].
    pub fn upload_pi_file(&self, pi: &str, filename: &str, bytes: Vec<u8>) -> Result<(), Error> {
        self.runtime
            .block_on(self.inner.upload_pi_file(pi, filename, bytes))
    }

    /// Sets a cloud-init file of a Pi; see [`crate::Client::set_cloud_init`].
    pub fn set_cloud_init(&self, pi: &str, file: &str, data: Vec<u8>) -> Result<(), Error> {
        self.runtime
            .block_on(self.inner.set_cloud_init(pi, file, data))
    }

    /// What a Pi is served for a cloud-init file; see [`crate::Client::cloud_init`].
    pub fn cloud_init(&self, pi: &str, file: &str) -> Result<Vec<u8>, Error> {
        self.runtime.block_on(self.inner.cloud_init(pi, file))
    }

    /// Removes a cloud-init file of a Pi; see [`crate::Client::delete_cloud_init`].
    pub fn delete_cloud_init(&self, pi: &str, file: &str) -> Result<(), Error> {
        self.runtime
            .block_on(self.inner.delete_cloud_init(pi, file))
    }

    /// Reads a file of a Pi's `piConfig/` back; see [`crate::Client::download_pi_file`].
    pub fn download_pi_file(&self, pi: &str, filename: &str) -> Result<Vec<u8>, Error> {
        self.runtime
            .block_on(self.inner.download_pi_file(pi, filename))
    }

    /// Creates a disk (201); see [`crate::Client::create_disk`].
    pub fn create_disk(&self, request: &CreateDiskRequest) -> Result<Disk, Error> {
        self.runtime.block_on(self.inner.create_disk(request))
    }

    /// A disk; see [`crate::Client::disk`].
    pub fn disk(&self, id: &str) -> Result<Disk, Error> {
        self.runtime.block_on(self.inner.disk(id))
    }

    /// Whether a disk exists; see [`crate::Client::disk_exists`].
    pub fn disk_exists(&self, id: &str) -> Result<bool, Error> {
        self.runtime.block_on(self.inner.disk_exists(id))
    }

    /// Every disk; see [`crate::Client::disks`].
    pub fn disks(&self) -> Result<DiskList, Error> {
        self.runtime.block_on(self.inner.disks())
    }

    /// Deletes a disk; see [`crate::Client::delete_disk`].
    pub fn delete_disk(&self, id: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.delete_disk(id))
    }

    /// Attaches a disk to a Pi; see [`crate::Client::attach_disk`].
    pub fn attach_disk(&self, pi: &str, disk: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.attach_disk(pi, disk))
    }

    /// Detaches a disk from a Pi; see [`crate::Client::detach_disk`].
    pub fn detach_disk(&self, pi: &str, disk: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.detach_disk(pi, disk))
    }

    /// Grows a detached disk; see [`crate::Client::resize_disk`].
    pub fn resize_disk(&self, id: &str, size_mib: i64) -> Result<Disk, Error> {
        self.runtime.block_on(self.inner.resize_disk(id, size_mib))
    }

    /// Takes a snapshot of a data disk; see [`crate::Client::snapshot_disk`].
    pub fn snapshot_disk(&self, id: &str, metadata: &Metadata) -> Result<Snapshot, Error> {
        self.runtime
            .block_on(self.inner.snapshot_disk(id, metadata))
    }

    /// A disk's snapshots; see [`crate::Client::disk_snapshots`].
    pub fn disk_snapshots(&self, id: &str) -> Result<SnapshotList, Error> {
        self.runtime.block_on(self.inner.disk_snapshots(id))
    }

    /// One snapshot; see [`crate::Client::snapshot`].
    pub fn snapshot(&self, id: &str) -> Result<Snapshot, Error> {
        self.runtime.block_on(self.inner.snapshot(id))
    }

    /// Deletes a snapshot; see [`crate::Client::delete_snapshot`].
    pub fn delete_snapshot(&self, id: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.delete_snapshot(id))
    }

    /// Restores a disk from a snapshot; see [`crate::Client::restore_disk`].
    pub fn restore_disk(&self, id: &str, snapshot: &str) -> Result<Disk, Error> {
        self.runtime.block_on(self.inner.restore_disk(id, snapshot))
    }

    /// Replaces a disk's metadata; see [`crate::Client::set_disk_metadata`].
    pub fn set_disk_metadata(&self, id: &str, metadata: &Metadata) -> Result<Disk, Error> {
        self.runtime
            .block_on(self.inner.set_disk_metadata(id, metadata))
    }

    /// Uploads an image file as a bakeform, streamed; see [`crate::Client::upload_bakeform`].
    pub fn upload_bakeform(
        &self,
        name: &str,
        image: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<Bakeform, Error> {
        self.runtime
            .block_on(self.inner.upload_bakeform(name, image, progress))
    }

    /// Deletes a bakeform; see [`crate::Client::delete_bakeform`].
    pub fn delete_bakeform(&self, name: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.delete_bakeform(name))
    }

    /// Every bakeform; see [`crate::Client::bakeforms`].
    pub fn bakeforms(&self) -> Result<BakeformMap, Error> {
        self.runtime.block_on(self.inner.bakeforms())
    }

    /// One bakeform with its import state; see [`crate::Client::bakeform`].
    pub fn bakeform(&self, name: &str) -> Result<Bakeform, Error> {
        self.runtime.block_on(self.inner.bakeform(name))
    }
    /// Events after `since`; see [`crate::Client::events`].
    pub fn events(&self, since: i64, limit: Option<u32>) -> Result<crate::EventList, Error> {
        self.runtime.block_on(self.inner.events(since, limit))
    }

    /// A Pi's boot timeline; see [`crate::Client::boots`].
    pub fn boots(&self, pi: &str) -> Result<crate::BootList, Error> {
        self.runtime.block_on(self.inner.boots(pi))
    }

    /// Follows live events, one blocking call per event; see
    /// [`crate::Client::follow_events`].
    pub fn follow_events(&self, since: Option<i64>) -> Result<crate::EventIter, Error> {
        let stream = self.runtime.block_on(self.inner.follow_events(since))?;
        Ok(crate::EventIter::new(stream, self.runtime.clone()))
    }
}
