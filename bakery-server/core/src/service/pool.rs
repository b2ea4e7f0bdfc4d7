//! The warm pool: complete pre-cloned roots per ready bakeform under `<data>/pool/<bakeform>/`,
//! so a bake renames one into place instead of cloning on its critical path.
//!
//! Nothing is in the database: the pool is the file system under the ready bakeforms. Entries
//! are cloned into `tmp/` and renamed into `pool/` only when complete, so every entry is a
//! whole root; one background filler clones one root at a time.
//!
//! Free space (`--min-free-space`) is checked here too, for the pool, bakes and uploads: the
//! filler clones only while a golden root's size leaves the minimum free, gives pooled roots
//! back (oldest first) when free space falls below it, and a bake or upload that would take
//! the data dir below it is refused up front.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bakery_client::BakeformState;
use tokio::sync::{Mutex, Notify};

use super::{Bakery, ServiceError, io_err};
use crate::domain::names::BakeformName;
use crate::fsutil;
use crate::imaging::{self, ImagingError};

/// How often free space is looked at when nothing wakes the pool.
const SPACE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The pool's wake-up, the lock that orders filling against a bakeform's deletion, the
/// measured sizes of golden roots and whether the filler is stopped for lack of space.
#[derive(Debug, Default)]
pub(crate) struct WarmPool {
    wake: Notify,
    fill: Mutex<()>,
    golden_bytes: std::sync::Mutex<HashMap<String, u64>>,
    short_of_space: AtomicBool,
}

/// Whether `needed` more bytes leave at least `minimum` of `free`.
fn leaves_minimum(free: u64, needed: u64, minimum: u64) -> bool {
    free.checked_sub(needed).is_some_and(|left| left >= minimum)
}

/// The oldest entries of `entries` (path, bakeform, placed at, bytes) whose bytes add up to
/// at least `deficit`, oldest first.
fn oldest_covering(
    mut entries: Vec<(PathBuf, String, SystemTime, u64)>,
    deficit: u64,
) -> Vec<(PathBuf, String, SystemTime, u64)> {
    entries.sort_by_key(|e| e.2);
    let mut freed: u64 = 0;
    entries
        .into_iter()
        .take_while(|e| {
            let more = freed < deficit;
            freed = freed.saturating_add(e.3);
            more
        })
        .collect()
}

impl Bakery {
    /// `<data>/pool`.
    fn pool_dir(&self) -> PathBuf {
        self.layout.data.join("pool")
    }

    /// `<data>/pool/<bakeform>`.
    fn pool_of(&self, bakeform: &BakeformName) -> PathBuf {
        self.pool_dir().join(bakeform.as_str())
    }

    /// Asks the filler to top up the pool (after an import, a take, at start-up).
    pub(crate) fn wake_pool(&self) {
        if self.warm_pool > 0 {
            self.pool.wake.notify_one();
        }
    }

    /// Starts the background task that watches free space (the `bakery_data_free_bytes`
    /// gauge; pooled roots given back below `--min-free-space`) and keeps `--warm-pool`
    /// complete roots per ready bakeform when the pool is on.
    pub fn spawn_pool_filler(self: &Arc<Self>) {
        let target = self.warm_pool;
        if target > 0 {
            tracing::info!(
                per_bakeform = target,
                min_free_bytes = self.config.min_free_space,
                "warm pool on"
            );
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.give_back_pool().await {
                    tracing::error!(error = %e, "warm pool give-back failed");
                }
                if target > 0 {
                    if let Err(e) = this.fill_pool(target).await {
                        tracing::error!(error = %e, "warm pool fill failed");
                    }
                }
                let _ = tokio::time::timeout(SPACE_CHECK_INTERVAL, this.pool.wake.notified()).await;
            }
        });
    }

    /// Bytes free on the data dir (also set as the `bakery_data_free_bytes` gauge).
    pub(crate) async fn free_space(&self) -> Result<u64, ServiceError> {
        let dir = self.layout.data.clone();
        let free = self
            .blocking(move || {
                fsutil::free_bytes(&dir).map_err(io_err(format!(
                    "cannot read the free space of the data dir {}",
                    dir.display()
                )))
            })
            .await?;
        self.observer
            .metrics()
            .data_free_bytes
            .set(i64::try_from(free).unwrap_or(i64::MAX));
        Ok(free)
    }

    /// Refuses making `what`, which needs `needed` bytes, when that would leave less than
    /// `--min-free-space` free on the data dir.
    pub(crate) async fn ensure_free_space(
        &self,
        what: impl Into<String>,
        needed: u64,
    ) -> Result<(), ServiceError> {
        let free = self.free_space().await?;
        let minimum = self.config.min_free_space;
        if leaves_minimum(free, needed, minimum) {
            return Ok(());
        }
        Err(ServiceError::BelowMinFreeSpace {
            what: what.into(),
            free,
            needed,
            minimum,
            dir: self.layout.data.clone(),
        })
    }

    /// The bytes a full copy of `bakeform`'s golden root takes, measured once and cached
    /// (what a clone needs with this data dir's strategy is [`Bakery::clone_bytes`]).
    pub(crate) async fn golden_bytes(&self, bakeform: &BakeformName) -> Result<u64, ServiceError> {
        let cached = self
            .pool
            .golden_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(bakeform.as_str())
            .copied();
        if let Some(bytes) = cached {
            return Ok(bytes);
        }
        let golden = self.layout.bakeform(bakeform).join("root");
        let started = std::time::Instant::now();
        let bytes = self
            .blocking(move || {
                fsutil::tree_bytes(&golden)
                    .map_err(io_err(format!("cannot measure {}", golden.display())))
            })
            .await?;
        tracing::info!(%bakeform, bytes, elapsed = ?started.elapsed(), "golden root measured");
        self.pool
            .golden_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bakeform.to_string(), bytes);
        Ok(bytes)
    }

    /// Whether `bakeform` is known and ready.
    async fn bakeform_ready(&self, bakeform: &BakeformName) -> Result<bool, ServiceError> {
        let key = bakeform.clone();
        Ok(self
            .db(move |s| s.bakeform(&key))
            .await?
            .is_some_and(|b| b.state == BakeformState::Ready))
    }

    /// Refuses a bake from `bakeform` up front when cloning its root would take the data dir
    /// below `--min-free-space`; a bake that will take a pooled root needs no new space, and a
    /// bakeform that is not ready is left to the bake's own refusal.
    pub(crate) async fn ensure_bake_space(
        &self,
        bakeform: &BakeformName,
    ) -> Result<(), ServiceError> {
        if self.warm_pool > 0 && !pool_entries(&self.pool_of(bakeform)).is_empty() {
            return Ok(());
        }
        if !self.bakeform_ready(bakeform).await? {
            return Ok(());
        }
        let needed = self.clone_bytes(bakeform).await?;
        self.ensure_free_space(format!("a root cloned from bakeform {bakeform}"), needed)
            .await
    }

    /// The new bytes a clone of `bakeform`'s root takes with this data dir's strategy: the
    /// golden root's size for a copy, nothing for a btrfs snapshot or reflinks, which share
    /// the data (their metadata is what `--min-free-space` is there for).
    async fn clone_bytes(&self, bakeform: &BakeformName) -> Result<u64, ServiceError> {
        match self.clone_strategy {
            imaging::CloneStrategy::Copy => self.golden_bytes(bakeform).await,
            imaging::CloneStrategy::Snapshot | imaging::CloneStrategy::Reflink => Ok(0),
        }
    }

    /// `error` as [`ServiceError::NoSpaceLeft`] when the data dir filled up (ENOSPC) while
    /// `what` was being made; other errors unchanged.
    pub(crate) fn no_space(&self, what: impl Into<String>, error: ServiceError) -> ServiceError {
        let full = match &error {
            ServiceError::Io { source, .. } => fsutil::is_no_space(source),
            ServiceError::Imaging(ImagingError::NoSpace(_)) => true,
            _ => false,
        };
        if !full {
            return error;
        }
        ServiceError::NoSpaceLeft {
            what: what.into(),
            dir: self.layout.data.clone(),
            reason: error.to_string(),
        }
    }

    /// Below `--min-free-space`: moves pooled roots to the trash, oldest first, until their
    /// sizes cover the shortfall (nothing while the trash still holds space on its way back).
    /// Also sets the `bakery_pool_roots` gauge.
    async fn give_back_pool(&self) -> Result<(), ServiceError> {
        let _guard = self.pool.fill.lock().await;
        let mut entries = Vec::new();
        if let Ok(pools) = std::fs::read_dir(self.pool_dir()) {
            for pool in pools.flatten() {
                let bakeform = pool.file_name().to_string_lossy().into_owned();
                for entry in pool_entries(&pool.path()) {
                    entries.push((entry, bakeform.clone()));
                }
            }
        }
        let metrics = self.observer.metrics();
        metrics
            .pool_roots
            .set(i64::try_from(entries.len()).unwrap_or(i64::MAX));
        let free = self.free_space().await?;
        let minimum = self.config.min_free_space;
        if free >= minimum || entries.is_empty() || !is_empty_dir(&self.layout.trash) {
            return Ok(());
        }
        let mut sized = Vec::new();
        for (entry, bakeform) in entries {
            // A directory whose name is no bakeform's has no golden root to measure.
            let bytes = match BakeformName::parse(&bakeform) {
                Ok(name) => self.golden_bytes(&name).await.unwrap_or(0),
                Err(_) => 0,
            };
            sized.push((entry.clone(), bakeform, placed_at(&entry), bytes));
        }
        for (entry, bakeform, _, bytes) in oldest_covering(sized, minimum - free) {
            tracing::warn!(
                bakeform,
                entry = %entry.display(),
                free_bytes = free,
                min_free_bytes = minimum,
                entry_bytes = bytes,
                "free space below the minimum: pooled root given back"
            );
            self.trash(&entry);
            metrics.pool_roots.dec();
        }
        Ok(())
    }

    /// Clones one root at a time until every ready bakeform has `target` entries, or until
    /// the next clone would take the data dir below `--min-free-space`.
    async fn fill_pool(&self, target: usize) -> Result<(), ServiceError> {
        loop {
            let ready: Vec<BakeformName> = self
                .db(|s| s.bakeforms())
                .await?
                .into_iter()
                .filter(|b| b.state == BakeformState::Ready)
                .map(|b| b.name)
                .collect();
            let short = ready
                .into_iter()
                .find(|name| pool_entries(&self.pool_of(name)).len() < target);
            let Some(bakeform) = short else {
                if self.pool.short_of_space.swap(false, Ordering::Relaxed) {
                    self.observer.metrics().pool_short_of_space.set(0);
                }
                return Ok(());
            };
            let needed = self.clone_bytes(&bakeform).await?;
            let free = self.free_space().await?;
            let minimum = self.config.min_free_space;
            let metrics = self.observer.metrics();
            if !leaves_minimum(free, needed, minimum) {
                if !self.pool.short_of_space.swap(true, Ordering::Relaxed) {
                    metrics.pool_short_of_space.set(1);
                    tracing::warn!(
                        %bakeform,
                        free_bytes = free,
                        needed_bytes = needed,
                        min_free_bytes = minimum,
                        "warm pool stopped filling: free {}, a root needs {}, {} must stay free (--min-free-space)",
                        fsutil::human_bytes(free),
                        fsutil::human_bytes(needed),
                        fsutil::human_bytes(minimum),
                    );
                }
                return Ok(());
            }
            if self.pool.short_of_space.swap(false, Ordering::Relaxed) {
                metrics.pool_short_of_space.set(0);
                tracing::info!(
                    %bakeform,
                    free_bytes = free,
                    "warm pool filling again: enough free space"
                );
            }
            self.fill_one(&bakeform).await?;
        }
    }

    /// Clones `bakeform`'s golden root into `tmp/` and renames it into its pool if the
    /// bakeform is still ready.
    async fn fill_one(&self, bakeform: &BakeformName) -> Result<(), ServiceError> {
        let id = uuid::Uuid::new_v4().to_string();
        let tmp = self.layout.tmp.join(format!("pool-{id}"));
        let golden = self.layout.bakeform(bakeform).join("root");
        let strategy = self.clone_strategy;
        let clone_dst = tmp.clone();
        let started = std::time::Instant::now();
        let cloned = self
            .blocking(move || {
                imaging::clone_root(&golden, &clone_dst, strategy)?;
                Ok(())
            })
            .await;
        if let Err(e) = cloned {
            self.trash(&tmp);
            return Err(self.no_space(format!("cloning a pooled root of {bakeform}"), e));
        }
        let _guard = self.pool.fill.lock().await;
        if !self.bakeform_ready(bakeform).await? {
            self.trash(&tmp);
            return Ok(());
        }
        let dir = self.pool_of(bakeform);
        let entry = dir.join(&id);
        let placed = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::rename(&tmp, &entry))
            .map_err(io_err(format!(
                "cannot move pooled root {} to {}",
                tmp.display(),
                entry.display()
            )));
        if let Err(e) = placed {
            self.trash(&tmp);
            return Err(e);
        }
        tracing::info!(%bakeform, entry = id, elapsed = ?started.elapsed(), "warm pool filled");
        Ok(())
    }

    /// Moves a pooled root of `bakeform` to `dest` (same file system); `false` when none was
    /// ready (or the pool is off), and the caller clones as without a pool.
    pub(crate) async fn take_pooled(&self, bakeform: &BakeformName, dest: &Path) -> bool {
        if self.warm_pool == 0 {
            return false;
        }
        let dir = self.pool_of(bakeform);
        let to = dest.to_owned();
        let taken = self
            .blocking(move || {
                Ok(pool_entries(&dir)
                    .into_iter()
                    .find(|entry| std::fs::rename(entry, &to).is_ok()))
            })
            .await;
        self.wake_pool();
        match taken {
            Ok(Some(entry)) => {
                let entry = entry.file_name().map(|n| n.to_string_lossy().into_owned());
                tracing::info!(%bakeform, entry, "warm pool root taken");
                true
            }
            _ => false,
        }
    }

    /// Removes `bakeform`'s pool through the trash (after its deletion) and forgets its size.
    pub(crate) async fn drop_pool(&self, bakeform: &BakeformName) {
        let _guard = self.pool.fill.lock().await;
        self.pool
            .golden_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(bakeform.as_str());
        self.trash(&self.pool_of(bakeform));
    }

    /// Start-up: trashes the pools of bakeforms that are gone or not ready (entries are
    /// complete by construction, so the others are kept); returns how many were trashed.
    pub(crate) fn repair_pool(&self, ready: &HashSet<String>) -> usize {
        let Ok(entries) = std::fs::read_dir(self.pool_dir()) else {
            return 0;
        };
        let mut count = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir || !ready.contains(&name) {
                tracing::warn!(path = %entry.path().display(), "warm pool of a bakeform that is not ready moved to trash");
                self.trash(&entry.path());
                count += 1;
            }
        }
        count
    }
}

/// When a pooled root was placed: its inode change time (the rename into the pool sets it;
/// its mtime is the golden root's), the epoch if unknown.
fn placed_at(entry: &Path) -> SystemTime {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(entry).map_or(SystemTime::UNIX_EPOCH, |m| {
        let secs = u64::try_from(m.ctime()).unwrap_or(0);
        let nanos = u32::try_from(m.ctime_nsec()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    })
}

/// Whether `dir` holds nothing (a missing dir counts as empty).
fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

/// The complete roots in one bakeform's pool directory.
fn pool_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_must_leave_the_minimum() {
        assert!(leaves_minimum(10, 4, 6));
        assert!(!leaves_minimum(10, 5, 6));
        assert!(!leaves_minimum(3, 4, 0));
        assert!(leaves_minimum(3, 3, 0));
        assert!(leaves_minimum(u64::MAX, 0, u64::MAX - 1));
    }

    #[test]
    fn give_back_takes_the_oldest_entries_covering_the_shortfall() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let entry =
            |name: &str, s: u64, bytes: u64| (PathBuf::from(name), "os".to_owned(), at(s), bytes);
        let entries = vec![
            entry("new", 30, 100),
            entry("old", 10, 100),
            entry("mid", 20, 100),
        ];
        let names = |deficit: u64| -> Vec<PathBuf> {
            oldest_covering(entries.clone(), deficit)
                .into_iter()
                .map(|e| e.0)
                .collect()
        };
        assert_eq!(names(0), Vec::<PathBuf>::new());
        assert_eq!(names(1), vec![PathBuf::from("old")]);
        assert_eq!(names(100), vec![PathBuf::from("old")]);
        assert_eq!(names(101), vec![PathBuf::from("old"), PathBuf::from("mid")]);
        assert_eq!(names(10_000).len(), 3);
    }
}
