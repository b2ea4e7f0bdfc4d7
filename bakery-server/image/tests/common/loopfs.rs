//! Test helper: a real btrfs, XFS or (journaled) ext4 on a loop-mounted sparse image file, unmounted again when
//! dropped (also while a failing test unwinds), and FIEMAP to see which extents files share.
//!
//! Skips (returns `None`, printing why) when this machine cannot loop-mount: not root, no loop
//! devices. A missing `mkfs.btrfs` / `mkfs.xfs` skips too, except under `CI` (ci/test
//! installs btrfs-progs and xfsprogs, so there it is a broken setup and fails).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which file system to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// btrfs (subvolume snapshots, reflinks).
    Btrfs,
    /// XFS with `reflink=1`.
    Xfs,
    /// ext4 as `mkfs.ext4` makes it by default: journaled, no reflinks (the plain-copy case).
    Ext4,
}

impl FsKind {
    fn mkfs(self) -> &'static str {
        match self {
            FsKind::Btrfs => "mkfs.btrfs",
            FsKind::Xfs => "mkfs.xfs",
            FsKind::Ext4 => "mkfs.ext4",
        }
    }

    fn mkfs_args(self) -> &'static [&'static str] {
        match self {
            FsKind::Btrfs => &["-q", "-f"],
            FsKind::Xfs => &["-q", "-f", "-m", "reflink=1"],
            FsKind::Ext4 => &["-q", "-F"],
        }
    }
}

/// A mounted loop file system. The mount point is [`LoopFs::path`]; everything (mount, loop
/// device, image file) goes away on drop.
pub struct LoopFs {
    kind: FsKind,
    image: PathBuf,
    mnt: PathBuf,
    mounted: bool,
    // Dropped after `drop` has unmounted: holds the image file and the mount point.
    _dir: tempfile::TempDir,
}

/// `tool` from PATH or the sbin directories a non-login PATH may lack.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Prints why a test is skipped; under `CI` a missing tool is a failure instead.
fn missing_tool(tool: &str) -> Option<LoopFs> {
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is missing but CI is set: ci/test installs btrfs-progs and xfsprogs"
    );
    eprintln!("skipped: {tool} is not installed (apt-get install btrfs-progs xfsprogs)");
    None
}

impl LoopFs {
    /// Makes a sparse `mib` MiB image, formats it as `kind` and loop-mounts it, or returns
    /// `None` after printing why this machine cannot (see the module docs).
    pub fn mount(kind: FsKind, mib: u64) -> Option<LoopFs> {
        let Some(mkfs) = find_tool(kind.mkfs()) else {
            return missing_tool(kind.mkfs());
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: loop-mounting {kind:?} needs root");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("bakery-loopfs-")
            .tempdir()
            .unwrap();
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        File::create(&image).unwrap().set_len(mib << 20).unwrap();
        let out = Command::new(&mkfs)
            .args(kind.mkfs_args())
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {}: {}",
            mkfs.display(),
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "skipped: cannot loop-mount {kind:?} here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(LoopFs {
            kind,
            image,
            mnt,
            mounted: true,
            _dir: dir,
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The file system made.
    pub fn kind(&self) -> FsKind {
        self.kind
    }

    /// Loop devices still backed by the image file (`losetup -j`).
    pub fn loop_devices(&self) -> Vec<String> {
        Command::new("losetup")
            .arg("-j")
            .arg(&self.image)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| l.split(':').next())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Unmounts now (also done on drop); returns whether the file system is gone and no loop
    /// device is left behind.
    pub fn unmount(&mut self) -> bool {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.mnt)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Still busy (a test's open file while unwinding): detach it lazily.
                eprintln!("loopfs: umount {} failed, lazy unmount", self.mnt.display());
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
            self.mounted = false;
        }
        // `mount -o loop` sets autoclear, so umount frees the device; make sure.
        for dev in self.loop_devices() {
            eprintln!("loopfs: detaching {dev} left behind by umount");
            let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        }
        self.loop_devices().is_empty()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// One extent of a file as FIEMAP reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset in the file.
    pub logical: u64,
    /// Offset on the device.
    pub physical: u64,
    /// Length in bytes.
    pub length: u64,
    /// `FIEMAP_EXTENT_*` flags.
    pub flags: u32,
}

impl Extent {
    /// Whether another file (or snapshot) shares this extent's blocks.
    pub fn shared(&self) -> bool {
        self.flags & FIEMAP_EXTENT_SHARED != 0
    }
}

/// `_IOWR('f', 11, struct fiemap)`
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_SHARED: u32 = 0x2000;
const MAX_EXTENTS: usize = 512;

#[repr(C)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
    fm_extents: [FiemapExtent; MAX_EXTENTS],
}

/// The extents of the file at `path` (data flushed first), at most 512.
pub fn extents(path: &Path) -> Vec<Extent> {
    let f = File::open(path).unwrap();
    // SAFETY: Fiemap is plain old data; all zeroes is a valid value.
    let mut map: Box<Fiemap> = Box::new(unsafe { std::mem::zeroed() });
    map.fm_length = u64::MAX;
    map.fm_flags = FIEMAP_FLAG_SYNC;
    map.fm_extent_count = MAX_EXTENTS as u32;
    // SAFETY: valid fd; the struct has room for fm_extent_count extents.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP as _, &mut *map) };
    assert_eq!(
        rc,
        0,
        "FIEMAP {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    map.fm_extents[..map.fm_mapped_extents as usize]
        .iter()
        .map(|e| Extent {
            logical: e.fe_logical,
            physical: e.fe_physical,
            length: e.fe_length,
            flags: e.fe_flags,
        })
        .collect()
}

/// Bytes of `path` in extents flagged shared.
pub fn shared_bytes(path: &Path) -> u64 {
    extents(path)
        .iter()
        .filter(|e| e.shared())
        .map(|e| e.length)
        .sum()
}

/// The subvolume paths `btrfs subvolume list` shows under the mount point `mnt`.
pub fn btrfs_subvolumes(mnt: &Path) -> Vec<String> {
    let btrfs = find_tool("btrfs").expect("btrfs (btrfs-progs) is installed");
    let out = Command::new(btrfs)
        .args(["subvolume", "list"])
        .arg(mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "btrfs subvolume list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(" path ").nth(1))
        .map(str::to_owned)
        .collect()
}
