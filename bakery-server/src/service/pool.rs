//! The warm pool: complete pre-cloned roots per ready bakeform under `<data>/pool/<bakeform>/`,
//! so a bake renames one into place instead of cloning on its critical path.
//!
//! Nothing is in the database: the pool is the file system under the ready bakeforms. Entries
//! are cloned into `tmp/` and renamed into `pool/` only when complete, so every entry is a
//! whole root; one background filler clones one root at a time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bakery_client::BakeformState;
use tokio::sync::{Mutex, Notify};

use super::{Bakery, ServiceError, io_err};
use crate::imaging;

/// The pool's wake-up and the lock that orders filling against a bakeform's deletion.
#[derive(Debug, Default)]
pub(crate) struct WarmPool {
    wake: Notify,
    fill: Mutex<()>,
}

impl Bakery {
    /// `<data>/pool`.
    fn pool_dir(&self) -> PathBuf {
        self.layout.data.join("pool")
    }

    /// `<data>/pool/<bakeform>` (name validated by the caller or read from the inventory).
    fn pool_of(&self, bakeform: &str) -> PathBuf {
        self.pool_dir().join(bakeform)
    }

    /// Asks the filler to top up the pool (after an import, a take, at start-up).
    pub(crate) fn wake_pool(&self) {
        if self.config.warm_pool > 0 {
            self.pool.wake.notify_one();
        }
    }

    /// Starts the background task that keeps `--warm-pool` complete roots per ready bakeform;
    /// does nothing when the pool is off.
    pub fn spawn_pool_filler(self: &Arc<Self>) {
        let target = self.config.warm_pool;
        if target == 0 {
            return;
        }
        tracing::info!(per_bakeform = target, "warm pool on");
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.fill_pool(target).await {
                    tracing::error!(error = %e, "warm pool fill failed");
                }
                this.pool.wake.notified().await;
            }
        });
    }

    /// Clones one root at a time until every ready bakeform has `target` entries.
    async fn fill_pool(&self, target: usize) -> Result<(), ServiceError> {
        loop {
            let ready: Vec<String> = self
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
                return Ok(());
            };
            self.fill_one(&bakeform).await?;
        }
    }

    /// Clones `bakeform`'s golden root into `tmp/` and renames it into its pool if the
    /// bakeform is still ready.
    async fn fill_one(&self, bakeform: &str) -> Result<(), ServiceError> {
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
            return Err(e);
        }
        let _guard = self.pool.fill.lock().await;
        let key = bakeform.to_owned();
        let still_ready = self
            .db(move |s| s.bakeform(&key))
            .await?
            .is_some_and(|b| b.state == BakeformState::Ready);
        if !still_ready {
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
        tracing::info!(bakeform, entry = id, elapsed = ?started.elapsed(), "warm pool filled");
        Ok(())
    }

    /// Moves a pooled root of `bakeform` to `dest` (same file system); `false` when none was
    /// ready (or the pool is off), and the caller clones as without a pool.
    pub(crate) async fn take_pooled(&self, bakeform: &str, dest: &Path) -> bool {
        if self.config.warm_pool == 0 {
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
                tracing::info!(bakeform, entry, "warm pool root taken");
                true
            }
            _ => false,
        }
    }

    /// Removes `bakeform`'s pool through the trash (after its deletion).
    pub(crate) async fn drop_pool(&self, bakeform: &str) {
        let _guard = self.pool.fill.lock().await;
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
