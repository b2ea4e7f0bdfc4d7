//! The real server with its data dir on a loop-mounted btrfs and XFS: it logs the clone
//! strategy it chose, a baked Pi's root is identical to the golden root (on btrfs a snapshot
//! subvolume, on XFS sharing extents), a reset re-clones it keeping piConfig, unbaking and
//! reclaiming the trash leaves no root (no subvolume) behind, and a second bake works.
//! Skipped with a printed reason where this machine cannot loop-mount.

#[allow(dead_code)]
#[path = "../../image/tests/common/loopfs.rs"]
mod loopfs;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bakery_client::PiInfo;
use reqwest::StatusCode;

use crate::common::{Env, OS, Server, entries, eventually, tree};
use loopfs::{FsKind, LoopFs, btrfs_subvolumes, shared_bytes};

/// Inode number of every btrfs subvolume's root directory.
const SUBVOLUME_INO: u64 = 256;

/// Type, mode, owner, size, mtime (ns), link target and contents of every entry under `dir`,
/// `piConfig` (made per Pi) left out.
fn fingerprint(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|p| !p.starts_with("piConfig"))
        .map(|p| {
            let path = dir.join(&p);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let target = std::fs::read_link(&path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let content = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            format!(
                "{p} {:o} {}:{} {} {}.{} {:x} {target} {content:?}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                if meta.is_dir() { 0 } else { meta.size() },
                meta.mtime(),
                meta.mtime_nsec(),
                meta.rdev(),
            )
        })
        .collect()
}

fn root_of(pi: &PiInfo) -> PathBuf {
    PathBuf::from(&pi.disks[0].location)
}

/// A server whose data dir is on a loop-mounted `kind`, with the sample bakeform and one Pi.
/// Fields drop in order: the server stops before its file system is unmounted.
struct OnLoop {
    server: Server,
    _env: Env,
    kind: FsKind,
    strategy: &'static str,
    data: PathBuf,
    golden: PathBuf,
    lfs: LoopFs,
}

impl OnLoop {
    /// Starts, checks the logged strategy and uploads the sample; `None` when skipped.
    fn start(kind: FsKind, strategy: &'static str) -> Option<OnLoop> {
        // Sparse, so only what is written takes space; large enough for the server's default
        // free-space reserve.
        let lfs = LoopFs::mount(kind, 4096)?;
        let data = lfs.path().join("data");
        let env = Env::new();
        let server = Server::start_replacing(
            &env,
            &["--data-dir"],
            &["--data-dir", data.to_str().unwrap()],
        );
        assert!(
            eventually(Duration::from_secs(10), || server.log_contains(&format!(
                "clone strategy chosen strategy={strategy}"
            ))),
            "no clone strategy {strategy} logged: {:?}",
            server.log.lock().unwrap()
        );
        let resp = server.upload_sample(OS);
        assert_eq!(resp.status(), StatusCode::CREATED, "{:?}", resp.text());
        server.add_pis(1);
        let golden = data.join("bakeforms").join(OS).join("root");
        Some(OnLoop {
            server,
            _env: env,
            kind,
            strategy,
            data,
            golden,
            lfs,
        })
    }

    fn log(&self) -> Vec<String> {
        self.server.log.lock().unwrap().clone()
    }

    /// The root is identical to the golden root and made by the strategy.
    fn assert_cloned(&self, root: &Path) {
        assert!(root.starts_with(&self.data), "{}", root.display());
        assert_eq!(fingerprint(root), fingerprint(&self.golden));
        let cloned: Vec<String> = self
            .log()
            .into_iter()
            .filter(|l| l.contains("root cloned"))
            .collect();
        assert!(
            !cloned.is_empty()
                && cloned
                    .iter()
                    .all(|l| l.contains(&format!("strategy={}", self.strategy))),
            "{cloned:?}"
        );
        assert!(!self.server.log_contains("snapshot failed"));
        match self.kind {
            FsKind::Btrfs => {
                assert_eq!(self.golden.metadata().unwrap().ino(), SUBVOLUME_INO);
                assert_eq!(root.metadata().unwrap().ino(), SUBVOLUME_INO);
            }
            FsKind::Xfs => {
                let busybox = Path::new("bin/busybox");
                let size = self.golden.join(busybox).metadata().unwrap().len();
                assert!(
                    shared_bytes(&root.join(busybox)) >= size,
                    "the Pi's busybox is not a reflink of the golden one"
                );
            }
        }
    }

    fn bake(&self) -> PiInfo {
        let pi = self.server.bake_ready(false);
        self.assert_cloned(&root_of(&pi));
        pi
    }

    /// Waits until the trash is empty; on btrfs the subvolumes are the golden root's and
    /// `pis` more.
    fn assert_reclaimed(&self, pis: usize) {
        let trash = self.data.join("trash");
        assert!(
            eventually(Duration::from_secs(20), || entries(&trash).is_empty()),
            "trash not reclaimed: {:?}",
            entries(&trash)
        );
        if self.kind == FsKind::Btrfs {
            let subvolumes = btrfs_subvolumes(self.lfs.path());
            assert_eq!(subvolumes.len(), 1 + pis, "{subvolumes:?}");
            assert_eq!(subvolumes[0], format!("data/bakeforms/{OS}/root"));
        }
    }

    /// A reset re-clones the root, keeping piConfig.
    fn reset(&self, pi: &PiInfo) {
        let root = root_of(pi);
        std::fs::write(root.join("etc/hostname"), "pi-one\n").unwrap();
        std::fs::write(root.join("piConfig/marker"), "kept").unwrap();
        let resp = self
            .server
            .client
            .post(self.server.url(&format!("/oven/{}/reset", pi.id)))
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{:?}", resp.text());
        let resp = self.server.wait_baked(&pi.id);
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{:?} {:#?}",
            resp.text(),
            self.log()
        );
        self.assert_cloned(&root);
        assert_eq!(
            std::fs::read_to_string(root.join("piConfig/marker")).unwrap(),
            "kept"
        );
        self.assert_reclaimed(1);
    }

    /// Unbake: the root goes to the trash at once and is reclaimed in the background.
    fn unbake(&self, pi: &PiInfo) {
        let root = root_of(pi);
        std::fs::write(root.join("etc/hostname"), "pi-one\n").unwrap();
        let resp = self.server.delete(&format!("/oven/{}", pi.id));
        assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.text());
        assert!(
            eventually(Duration::from_secs(20), || !root.exists()),
            "root {} left",
            root.display()
        );
        self.assert_reclaimed(0);
        assert_eq!(
            std::fs::read_to_string(self.golden.join("etc/hostname")).unwrap(),
            "raspberrypi\n"
        );
    }

    /// Stops the server and unmounts, checking no loop device is left.
    fn finish(mut self) {
        self.server.stop();
        assert!(
            self.lfs.unmount(),
            "loop device left: {:?}",
            self.lfs.loop_devices()
        );
    }
}

#[test]
fn btrfs_data_dir_bakes_by_snapshot_and_unbakes_without_leftover_subvolumes() {
    let Some(s) = OnLoop::start(FsKind::Btrfs, "btrfs-snapshot") else {
        return;
    };
    let pi = s.bake();
    s.assert_reclaimed(1);
    s.unbake(&pi);
    let again = s.bake();
    s.assert_reclaimed(1);
    s.unbake(&again);
    s.finish();
}

/// A reset keeps `piConfig` from the old root in the new one; on btrfs those are two
/// subvolumes, and rename(2) across subvolumes is EXDEV, so the server clones it instead.
#[test]
fn btrfs_reset_keeps_pi_config() {
    let Some(s) = OnLoop::start(FsKind::Btrfs, "btrfs-snapshot") else {
        return;
    };
    let pi = s.bake();
    s.reset(&pi);
    s.unbake(&pi);
    s.finish();
}

#[test]
fn xfs_data_dir_bakes_resets_and_unbakes_by_reflink() {
    let Some(s) = OnLoop::start(FsKind::Xfs, "reflink") else {
        return;
    };
    let pi = s.bake();
    s.reset(&pi);
    s.unbake(&pi);
    let again = s.bake();
    s.unbake(&again);
    s.finish();
}
