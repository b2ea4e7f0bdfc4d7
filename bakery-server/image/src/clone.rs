//! Clones a golden root tree into a new tree with the fastest strategy the file system offers:
//! a btrfs subvolume snapshot, per-file reflinks (FICLONE: XFS, btrfs, bcachefs …), or a
//! parallel copy (copy_file_range on all cores, holes kept) on plain ext4.
//!
//! The clone is identical in content and metadata: file types, permission bits incl.
//! setuid/setgid/sticky, owners, atime/mtime with nanoseconds, symlink targets, hardlinks
//! (as hardlinks within the clone), device numbers, fifos, sockets and extended attributes.
//! Not preserved: ctime and birth time (the kernel sets them), inode flags (`chattr`).
//! Owners are set when running as root; otherwise an entry owned by someone else is an error
//! (an unprivileged user's golden trees are all their own). On any error `dst` is removed.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::at::{self, Meta};
use crate::error::ImageError;
use crate::host;

/// How a tree is cloned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloneStrategy {
    /// One btrfs subvolume snapshot (constant time). Falls back to reflinks when the source
    /// is not a subvolume.
    Snapshot,
    /// Walk the tree and reflink every file's data (FICLONE): metadata work only.
    Reflink,
    /// Walk the tree and copy every file's data in parallel with copy_file_range.
    Copy,
}

impl fmt::Display for CloneStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloneStrategy::Snapshot => "btrfs-snapshot",
            CloneStrategy::Reflink => "reflink",
            CloneStrategy::Copy => "copy",
        })
    }
}

/// What a clone did. A btrfs snapshot walks nothing and reports zero counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloneStats {
    /// The strategy actually used (a snapshot of a non-subvolume falls back to reflink,
    /// a reflink refused by the file system to copy).
    pub strategy: CloneStrategy,
    /// Regular files (first links).
    pub files: u64,
    /// Directories below the root.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Additional hard links.
    pub hardlinks: u64,
    /// Device nodes, fifos and sockets.
    pub specials: u64,
    /// Bytes of regular file contents.
    pub bytes: u64,
}

impl CloneStats {
    /// Nothing counted yet, by `strategy`.
    fn zero(strategy: CloneStrategy) -> CloneStats {
        CloneStats {
            strategy,
            files: 0,
            dirs: 0,
            symlinks: 0,
            hardlinks: 0,
            specials: 0,
            bytes: 0,
        }
    }
}

const BTRFS_SUPER_MAGIC: libc::c_long = 0x9123_683E;
/// `_IOW(0x94, 9, int)`
const FICLONE: libc::c_ulong = 0x4004_9409;
/// `_IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)` (4096 bytes)
const BTRFS_IOC_SNAP_CREATE_V2: libc::c_ulong = 0x5000_9417;
/// Inode number of every btrfs subvolume's root directory.
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;

/// Picks the fastest strategy for trees under `dir`: btrfs → snapshot; a file system that
/// accepts FICLONE (tested with two scratch files in `dir`) → reflink; else copy.
pub fn detect_strategy(dir: &Path) -> CloneStrategy {
    if fs_type(dir) == Some(BTRFS_SUPER_MAGIC) {
        return CloneStrategy::Snapshot;
    }
    if reflink_works(dir) {
        CloneStrategy::Reflink
    } else {
        CloneStrategy::Copy
    }
}

fn fs_type(dir: &Path) -> Option<libc::c_long> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and a zeroed statfs out-parameter.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)]
    (rc == 0).then_some(st.f_type as libc::c_long)
}

fn reflink_works(dir: &Path) -> bool {
    let a = dir.join(format!(".bakery-reflink-probe-{}-a", std::process::id()));
    let b = dir.join(format!(".bakery-reflink-probe-{}-b", std::process::id()));
    let ok = (|| -> io::Result<bool> {
        fs::write(&a, [0x42u8; 4096])?;
        let src = File::open(&a)?;
        let dst = OpenOptions::new().write(true).create_new(true).open(&b)?;
        Ok(ficlone(&src, &dst).is_ok())
    })()
    .unwrap_or(false);
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    ok
}

fn ficlone(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: both fds are open; FICLONE takes the source fd as its argument.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    host::check(rc)
}

/// The directory `path` is in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Clones the tree `src` into the new path `dst` (which must not exist) with `strategy`.
///
/// On success `dst` is a complete, identical copy; on error it is removed. The caller is
/// expected to pass a temporary name and rename it into place.
pub fn clone_tree(
    src: &Path,
    dst: &Path,
    strategy: CloneStrategy,
) -> Result<CloneStats, ImageError> {
    if fs::symlink_metadata(dst).is_ok() {
        return Err(ImageError::DestinationExists {
            path: dst.to_owned(),
        });
    }
    let md = fs::symlink_metadata(src).map_err(|e| ImageError::io("stat", src, e))?;
    if !md.is_dir() {
        return Err(ImageError::io(
            "clone",
            src,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    if strategy == CloneStrategy::Snapshot && md.ino() == BTRFS_FIRST_FREE_OBJECTID {
        match snapshot(src, dst) {
            Ok(()) => return Ok(CloneStats::zero(strategy)),
            Err(e) => {
                tracing::warn!(src = %src.display(), error = %e, "btrfs snapshot failed, cloning with reflinks")
            }
        }
    }
    let reflink = strategy != CloneStrategy::Copy;
    let started = std::time::Instant::now();
    let result = walk_clone(src, dst, reflink);
    if let Ok(s) = &result {
        tracing::debug!(
            src = %src.display(), dst = %dst.display(), strategy = %s.strategy, files = s.files,
            bytes = s.bytes, elapsed_ms = started.elapsed().as_millis() as u64, "cloned tree"
        );
    }
    if result.is_err() {
        if let Err(e) = remove_tree(dst) {
            tracing::warn!(dst = %dst.display(), error = %e, "could not remove a failed clone");
        }
    }
    result
}

/// `_IOW(0x94, 14, struct btrfs_ioctl_vol_args)` (4096 bytes)
const BTRFS_IOC_SUBVOL_CREATE: libc::c_ulong = 0x5000_940E;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// Creates `path` as an empty directory; on btrfs as a subvolume, so that
/// [`CloneStrategy::Snapshot`] can later snapshot it. Falls back to a plain directory when
/// the subvolume cannot be made.
pub(crate) fn create_snapshot_root(path: &Path, mode: u32) -> io::Result<()> {
    let parent = parent_dir(path);
    if fs_type(parent) == Some(BTRFS_SUPER_MAGIC) {
        match vol_ioctl(path, BTRFS_IOC_SUBVOL_CREATE) {
            Ok(()) => return host::chmod(path, mode),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not create a btrfs subvolume, using a directory")
            }
        }
    }
    fs::DirBuilder::new().mode(mode).create(path)
}

/// Runs a btrfs ioctl that takes `struct btrfs_ioctl_vol_args` naming `path` on `path`'s
/// parent directory (create or destroy a subvolume).
fn vol_ioctl(path: &Path, request: libc::c_ulong) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no name"))?
        .as_bytes();
    if name.len() >= 4088 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    let dir = File::open(parent_dir(path))?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    args.name[..name.len()].copy_from_slice(name);
    // SAFETY: the parent dir fd is open and args is a properly laid out, live struct.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), request as _, &mut args) };
    host::check(rc)
}

/// `_IOW(0x94, 15, struct btrfs_ioctl_vol_args)` (4096 bytes)
const BTRFS_IOC_SNAP_DESTROY: libc::c_ulong = 0x5000_940F;

/// Deletes `path` at once if it is a btrfs subvolume (a snapshot root or a golden root made
/// by [`create_snapshot_root`]): the kernel drops it in one call and frees its blocks in the
/// background, instead of an unlink per file. `Ok(false)` when `path` is no subvolume; an
/// error when the kernel refuses (not root and no `user_subvol_rm_allowed`, nested
/// subvolumes): the caller then removes it file by file.
fn destroy_subvolume(path: &Path) -> io::Result<bool> {
    let md = fs::symlink_metadata(path)?;
    if !md.is_dir() || md.ino() != BTRFS_FIRST_FREE_OBJECTID {
        return Ok(false);
    }
    if fs_type(parent_dir(path)) != Some(BTRFS_SUPER_MAGIC) {
        return Ok(false);
    }
    vol_ioctl(path, BTRFS_IOC_SNAP_DESTROY).map(|()| true)
}

/// Removes a tree completely: a btrfs subvolume (a snapshot clone, a golden root) in one call
/// when the kernel allows it, else file by file ([`host::remove_tree`]). Missing trees are fine.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    if matches!(destroy_subvolume(path), Ok(true)) {
        return Ok(());
    }
    host::remove_tree(path)
}

#[repr(C)]
struct SnapArgs {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

fn snapshot(src: &Path, dst: &Path) -> io::Result<()> {
    let parent = parent_dir(dst);
    let name = dst
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "destination has no name"))?;
    let name = name.as_bytes();
    if name.len() >= 4040 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "destination name too long",
        ));
    }
    let src_dir = File::open(src)?;
    let parent_dir = File::open(parent)?;
    let mut args = SnapArgs {
        fd: i64::from(src_dir.as_raw_fd()),
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: [0; 4040],
    };
    args.name[..name.len()].copy_from_slice(name);
    // SAFETY: the parent dir fd is open and args is a properly laid out, live struct.
    let rc = unsafe {
        libc::ioctl(
            parent_dir.as_raw_fd(),
            BTRFS_IOC_SNAP_CREATE_V2 as _,
            &mut args,
        )
    };
    host::check(rc)
}

/// What every worker of one clone shares.
struct Ctx<'a> {
    src: &'a Path,
    dst: &'a Path,
    reflink: bool,
    as_root: bool,
    me: (u32, u32),
    /// The umask new files are created under, when known (see [`at::umask`]).
    umask: Option<u32>,
    reflink_refused: AtomicBool,
    /// Set by the first failing worker; the others stop at their next directory.
    failed: AtomicBool,
    first_error: Mutex<Option<ImageError>>,
    /// Every directory below the root with its depth, for the final metadata pass.
    dirs: Mutex<Vec<(PathBuf, usize)>>,
    /// Entries with more than one link, cloned in a sequential pass at the end.
    linked: Mutex<Vec<(PathBuf, Meta)>>,
    /// files, symlinks, specials, bytes
    counters: [AtomicU64; 4],
    started: Instant,
    /// Milliseconds since `started` of the last progress log line.
    last_report_ms: AtomicU64,
}

impl Ctx<'_> {
    fn fail(&self, e: ImageError) {
        self.failed.store(true, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(e);
        }
    }

    fn count(&self, kind: usize, bytes: u64) {
        let done = self.counters[kind].fetch_add(1, Ordering::Relaxed) + 1;
        if kind == 0 {
            self.counters[3].fetch_add(bytes, Ordering::Relaxed);
        }
        // Progress: a line every PROGRESS_EVERY of a long clone, checked every 1024 files.
        if kind == 0 && done % 1024 == 0 {
            let now = self.started.elapsed().as_millis() as u64;
            let last = self.last_report_ms.load(Ordering::Relaxed);
            if now >= last + PROGRESS_EVERY.as_millis() as u64
                && self
                    .last_report_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::info!(
                    dst = %self.dst.display(), files = done,
                    bytes = self.counters[3].load(Ordering::Relaxed), elapsed_ms = now,
                    "cloning"
                );
            }
        }
    }
}

/// How often a long clone logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

fn walk_clone(src: &Path, dst: &Path, reflink: bool) -> Result<CloneStats, ImageError> {
    let ctx = Ctx {
        src,
        dst,
        reflink,
        as_root: host::is_root(),
        // SAFETY: geteuid/getegid have no preconditions and cannot fail.
        me: unsafe { (libc::geteuid(), libc::getegid()) },
        umask: at::umask(),
        reflink_refused: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        first_error: Mutex::new(None),
        dirs: Mutex::new(Vec::new()),
        linked: Mutex::new(Vec::new()),
        counters: [(); 4].map(|_| AtomicU64::new(0)),
        started: Instant::now(),
        last_report_ms: AtomicU64::new(0),
    };
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dst)
        .map_err(|e| ImageError::io("create", dst, e))?;
    // 1. Every directory is one task: it creates its subdirectories (spawning their tasks)
    //    and clones its other entries, all through directory fds.
    rayon::scope(|s| clone_dir(s, &ctx, PathBuf::new(), 0));
    if let Some(e) = ctx.first_error.lock().map_err(|_| poisoned(src))?.take() {
        return Err(e);
    }
    let mut stats = CloneStats::zero(if reflink {
        CloneStrategy::Reflink
    } else {
        CloneStrategy::Copy
    });
    // 2. Hardlinked entries: the first name of each inode is cloned, the others linked to it.
    let mut linked = std::mem::take(&mut *ctx.linked.lock().map_err(|_| poisoned(src))?);
    linked.sort_by(|a, b| a.0.cmp(&b.0));
    let mut first: HashMap<(u64, u64), &Path> = HashMap::new();
    for (rel, md) in &linked {
        let to = dst.join(rel);
        if let Some(target) = first.get(&(md.dev, md.ino)) {
            let target = dst.join(target);
            fs::hard_link(&target, &to).map_err(|e| ImageError::io("hardlink", &to, e))?;
            stats.hardlinks += 1;
            continue;
        }
        let (parent, name) = split(rel);
        let (sdir, ddir) = open_pair(&ctx, parent)?;
        let cname = at::c_name(name).map_err(|e| ImageError::io("clone", src.join(rel), e))?;
        let kind = clone_entry(&ctx, &sdir, &ddir, rel, &cname, md)?;
        ctx.count(kind, md.size);
        first.insert((md.dev, md.ino), rel);
    }
    // 3. Directory metadata, deepest level first, each level in parallel.
    let mut dirs = std::mem::take(&mut *ctx.dirs.lock().map_err(|_| poisoned(src))?);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.1));
    for level in dirs.chunk_by(|a, b| a.1 == b.1) {
        level.par_iter().try_for_each(|d| dir_meta(&ctx, &d.0))?;
    }
    dir_meta(&ctx, Path::new(""))?;
    stats.dirs = dirs.len() as u64;
    stats.files = ctx.counters[0].load(Ordering::Relaxed);
    stats.symlinks = ctx.counters[1].load(Ordering::Relaxed);
    stats.specials = ctx.counters[2].load(Ordering::Relaxed);
    stats.bytes = ctx.counters[3].load(Ordering::Relaxed);
    if ctx.reflink_refused.load(Ordering::Relaxed) {
        stats.strategy = CloneStrategy::Copy;
    }
    Ok(stats)
}

/// `rel`'s parent (possibly empty) and final name.
fn split(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().unwrap_or(OsStr::new("")),
    )
}

fn clone_dir<'s>(scope: &rayon::Scope<'s>, ctx: &'s Ctx<'s>, rel: PathBuf, depth: usize) {
    if ctx.failed.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = clone_dir_entries(scope, ctx, &rel, depth) {
        ctx.fail(e);
    }
}

/// An entry waiting to be cloned: its path in the tree, its name, its metadata (`None` for
/// a regular file, stat'ed when it is opened).
type Pending = (PathBuf, CString, Option<Meta>);

/// A directory's entries are cloned in chunks of at most this many files or bytes, each
/// chunk a task of its own: one large directory (`/usr/lib/<triplet>`) must not keep one
/// core busy while the others have nothing left to do.
const CHUNK_FILES: usize = 128;
/// See [`CHUNK_FILES`].
const CHUNK_BYTES: u64 = 8 << 20;

fn clone_dir_entries<'s>(
    scope: &rayon::Scope<'s>,
    ctx: &'s Ctx<'s>,
    rel: &Path,
    depth: usize,
) -> Result<(), ImageError> {
    let src_path = ctx.src.join(rel);
    let (sdir, ddir) = open_pair(ctx, rel)?;
    let mut pending: Vec<Pending> = Vec::new();
    for e in fs::read_dir(&src_path).map_err(|e| ImageError::io("list", &src_path, e))? {
        let e = e.map_err(|e| ImageError::io("list", &src_path, e))?;
        let name = e.file_name();
        let child = rel.join(&name);
        let err = |op: &'static str| {
            let p = ctx.src.join(&child);
            move |e: io::Error| ImageError::io(op, p, e)
        };
        let cname = at::c_name(&name).map_err(err("clone"))?;
        // The entry's type from the directory itself (d_type): a directory needs no stat
        // here (its metadata comes last), a regular file is stat'ed through its open fd when
        // cloned, which saves a lookup per file.
        let kind = e.file_type().map_err(err("stat"))?;
        if kind.is_file() {
            pending.push((child, cname, None));
            continue;
        }
        let md = if kind.is_dir() {
            None
        } else {
            Some(at::stat_at(&sdir, &cname).map_err(err("stat"))?)
        };
        match md {
            None => {
                at::mkdir_at(&ddir, &cname, 0o700)
                    .map_err(|e| ImageError::io("create", ctx.dst.join(&child), e))?;
                ctx.dirs
                    .lock()
                    .map_err(|_| poisoned(&src_path))?
                    .push((child.clone(), depth + 1));
                scope.spawn(move |s| clone_dir(s, ctx, child, depth + 1));
            }
            Some(md) if md.nlink > 1 => ctx
                .linked
                .lock()
                .map_err(|_| poisoned(&src_path))?
                .push((child, md)),
            Some(md) => pending.push((child, cname, Some(md))),
        }
    }
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let mut rest = pending.into_iter().peekable();
    while let Some(entry) = rest.next() {
        bytes += entry.2.map_or(0, |md| md.size);
        chunk.push(entry);
        if rest.peek().is_some() && (chunk.len() >= CHUNK_FILES || bytes >= CHUNK_BYTES) {
            let batch = std::mem::take(&mut chunk);
            let rel = rel.to_owned();
            // The task opens the directories itself: descriptors are held only while a
            // task runs (at most three per worker), however many chunks are queued.
            scope.spawn(move |_| {
                let result = open_pair(ctx, &rel)
                    .and_then(|(sdir, ddir)| clone_chunk(ctx, &sdir, &ddir, batch));
                if let Err(e) = result {
                    ctx.fail(e);
                }
            });
            bytes = 0;
        }
    }
    clone_chunk(ctx, &sdir, &ddir, chunk)
}

/// The directory `rel` opened in the source and in the clone.
fn open_pair(ctx: &Ctx<'_>, rel: &Path) -> Result<(File, File), ImageError> {
    let (src, dst) = (ctx.src.join(rel), ctx.dst.join(rel));
    let sdir = at::open_dir(&src).map_err(|e| ImageError::io("open", &src, e))?;
    let ddir = at::open_dir(&dst).map_err(|e| ImageError::io("open", &dst, e))?;
    Ok((sdir, ddir))
}

/// Clones `entries`, all of the directory open as `sdir` in the source and `ddir` in the clone.
fn clone_chunk(
    ctx: &Ctx<'_>,
    sdir: &File,
    ddir: &File,
    entries: Vec<Pending>,
) -> Result<(), ImageError> {
    for (child, cname, md) in entries {
        if ctx.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (kind, size) = match md {
            Some(md) => (clone_entry(ctx, sdir, ddir, &child, &cname, &md)?, md.size),
            None => {
                let src = at::open_at(sdir, &cname)
                    .map_err(|e| ImageError::io("open", ctx.src.join(&child), e))?;
                let md = at::stat_fd(&src)
                    .map_err(|e| ImageError::io("stat", ctx.src.join(&child), e))?;
                if md.nlink > 1 {
                    // Hardlinks are cloned in the sequential pass at the end.
                    ctx.linked
                        .lock()
                        .map_err(|_| poisoned(&child))?
                        .push((child, md));
                    continue;
                }
                (
                    clone_tree_file(ctx, &src, ddir, &child, &cname, &md)?,
                    md.size,
                )
            }
        };
        ctx.count(kind, size);
    }
    Ok(())
}

fn poisoned(p: &Path) -> ImageError {
    ImageError::io("clone", p, io::Error::other("a worker thread panicked"))
}

/// The owner to give a new entry: `None` when it already has it (created by us and ours).
fn owner(ctx: &Ctx<'_>, md: &Meta, path: &Path) -> Result<Option<(u32, u32)>, ImageError> {
    let want = (md.uid, md.gid);
    if want == ctx.me {
        return Ok(None);
    }
    if ctx.as_root {
        return Ok(Some(want));
    }
    // An unprivileged user may still give a file one of their own groups.
    if want.0 == ctx.me.0 {
        return Ok(Some(want));
    }
    Err(ImageError::io(
        "clone owner of",
        path,
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("owned by uid {} and not running as root", want.0),
        ),
    ))
}

fn copy_xattrs_path(from: &Path, to: &Path) -> Result<(), ImageError> {
    for (name, value) in
        host::lgetxattrs(from).map_err(|e| ImageError::io("read xattrs of", from, e))?
    {
        host::lsetxattr(to, &name, &value).map_err(|e| ImageError::io("set xattr on", to, e))?;
    }
    Ok(())
}

/// Clones one non-directory entry `name` of `sdir` (at `rel` in the tree) into `ddir`.
/// Returns 0 for a file, 1 for a symlink, 2 for a special.
///
/// New entries are created owned by this process (their parent directories are still
/// 0700 without setgid or default ACLs: their metadata comes last), so owner and mode are
/// only set when they differ from what creation gave them.
fn clone_entry(
    ctx: &Ctx<'_>,
    sdir: &File,
    ddir: &File,
    rel: &Path,
    name: &CStr,
    md: &Meta,
) -> Result<usize, ImageError> {
    let from = || ctx.src.join(rel);
    if md.kind() == libc::S_IFREG {
        let src = at::open_at(sdir, name).map_err(|e| ImageError::io("open", from(), e))?;
        return clone_tree_file(ctx, &src, ddir, rel, name, md);
    }
    let to = || ctx.dst.join(rel);
    let own = owner(ctx, md, rel)?;
    let perm = md.perm();
    match md.kind() {
        libc::S_IFLNK => {
            let target = at::readlink_at(sdir, name, md.size)
                .map_err(|e| ImageError::io("read link", from(), e))?;
            at::symlink_at(&target, ddir, name).map_err(|e| ImageError::io("symlink", to(), e))?;
            if let Some((uid, gid)) = own {
                at::chown_at(ddir, name, uid, gid)
                    .map_err(|e| ImageError::io("set owner of", to(), e))?;
            }
            copy_xattrs_path(&from(), &to())?;
            at::utimens_at(ddir, name, md.atime, md.mtime)
                .map_err(|e| ImageError::io("set times of", to(), e))?;
            Ok(1)
        }
        kind => {
            at::mknod_at(ddir, name, kind | (perm & 0o777), md.rdev)
                .map_err(|e| ImageError::io("mknod", to(), e))?;
            if let Some((uid, gid)) = own {
                at::chown_at(ddir, name, uid, gid)
                    .map_err(|e| ImageError::io("set owner of", to(), e))?;
            }
            copy_xattrs_path(&from(), &to())?;
            at::chmod_at(ddir, name, perm).map_err(|e| ImageError::io("chmod", to(), e))?;
            at::utimens_at(ddir, name, md.atime, md.mtime)
                .map_err(|e| ImageError::io("set times of", to(), e))?;
            Ok(2)
        }
    }
}

/// Clones the regular file `src` (open, with metadata `md`) as `name` in `ddir`.
///
/// Created with its final mode when the umask keeps it and no chown follows (chown clears
/// setuid/setgid, so those files get their mode afterwards).
fn clone_tree_file(
    ctx: &Ctx<'_>,
    src: &File,
    ddir: &File,
    rel: &Path,
    name: &CStr,
    md: &Meta,
) -> Result<usize, ImageError> {
    let from = || ctx.src.join(rel);
    let to = || ctx.dst.join(rel);
    let own = owner(ctx, md, rel)?;
    let perm = md.perm();
    let direct = own.is_none() && perm & 0o7000 == 0 && ctx.umask.is_some_and(|m| perm & m == 0);
    let out = at::create_at(ddir, name, if direct { perm } else { 0o600 })
        .map_err(|e| ImageError::io("create", to(), e))?;
    copy_data(ctx, src, &out, md).map_err(|e| ImageError::io("copy data into", to(), e))?;
    if let Some((uid, gid)) = own {
        host::fchown(&out, uid, gid).map_err(|e| ImageError::io("set owner of", to(), e))?;
    }
    let xattrs = host::fgetxattrs(src).map_err(|e| ImageError::io("read xattrs of", from(), e))?;
    for (name, value) in &xattrs {
        host::fsetxattr(&out, name, value).map_err(|e| ImageError::io("set xattr on", to(), e))?;
    }
    if !direct || !xattrs.is_empty() {
        host::fchmod(&out, perm).map_err(|e| ImageError::io("chmod", to(), e))?;
    }
    host::futimens(&out, md.atime, md.mtime)
        .map_err(|e| ImageError::io("set times of", to(), e))?;
    Ok(0)
}

/// Copies a file's data: a reflink if allowed and possible, else copy_file_range over the
/// data segments only (holes stay holes).
fn copy_data(ctx: &Ctx<'_>, src: &File, out: &File, md: &Meta) -> io::Result<()> {
    let len = md.size;
    if len == 0 {
        return Ok(());
    }
    if ctx.reflink && !ctx.reflink_refused.load(Ordering::Relaxed) {
        match ficlone(src, out) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY)
                ) =>
            {
                ctx.reflink_refused.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    copy_sparse(src, out, len, md.blocks)
}

/// Copies the `len` bytes of `src` (which has `blocks` 512-byte blocks allocated) into the
/// empty `out`: with copy_file_range over the data segments only, so holes stay holes.
fn copy_sparse(src: &File, out: &File, len: u64, blocks: u64) -> io::Result<()> {
    if blocks * 512 >= len {
        return host::copy_range(src, 0, out, 0, len);
    }
    let mut pos = 0u64;
    while pos < len {
        let Some(data) = seek(src, pos, libc::SEEK_DATA)? else {
            break;
        };
        let hole = seek(src, data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        host::copy_range(src, data, out, data, hole - data)?;
        pos = hole;
    }
    out.set_len(len)
}

/// How [`clone_file`] made its copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCloneKind {
    /// A reflink (FICLONE): the copy shares the source's extents until either is written.
    Reflink,
    /// A copy of the data segments (copy_file_range), holes kept as holes.
    SparseCopy,
}

impl fmt::Display for FileCloneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileCloneKind::Reflink => "reflink",
            FileCloneKind::SparseCopy => "sparse-copy",
        })
    }
}

/// What [`clone_file`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileClone {
    /// Reflinked or copied.
    pub kind: FileCloneKind,
    /// The file's length in bytes.
    pub len: u64,
    /// Bytes allocated to the source (its data, not its holes) when it was cloned.
    pub allocated: u64,
}

/// Clones the regular file `src` as the new file `dst` (which must not exist): a reflink
/// where the file system takes one (btrfs, XFS), else a copy of its data segments with its
/// holes kept. `src` is opened without following a symlink, and must be a regular file;
/// `dst` gets `src`'s permission bits and is synced to disk before this returns. On error
/// `dst` is removed.
pub fn clone_file(src: &Path, dst: &Path) -> Result<FileClone, ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(src)
        .map_err(|e| ImageError::io("open", src, e))?;
    let md = input
        .metadata()
        .map_err(|e| ImageError::io("stat", src, e))?;
    if !md.is_file() {
        return Err(ImageError::io(
            "clone",
            src,
            io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(md.mode() & 0o777)
        .open(dst)
        .map_err(|e| ImageError::io("create", dst, e))?;
    let len = md.len();
    let made = (|| -> io::Result<FileCloneKind> {
        let kind = if len == 0 {
            FileCloneKind::SparseCopy
        } else {
            match ficlone(&input, &out) {
                Ok(()) => FileCloneKind::Reflink,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY)
                    ) =>
                {
                    copy_sparse(&input, &out, len, md.blocks())?;
                    FileCloneKind::SparseCopy
                }
                Err(e) => return Err(e),
            }
        };
        out.sync_all()?;
        Ok(kind)
    })();
    match made {
        Ok(kind) => Ok(FileClone {
            kind,
            len,
            allocated: md.blocks().saturating_mul(512),
        }),
        Err(e) => {
            drop(out);
            let _ = fs::remove_file(dst);
            Err(ImageError::io("clone into", dst, e))
        }
    }
}

fn seek(f: &File, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off = i64::try_from(from).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid fd; lseek has no memory effects.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(e)
    }
}

fn dir_meta(ctx: &Ctx<'_>, rel: &Path) -> Result<(), ImageError> {
    let from = ctx.src.join(rel);
    let to = ctx.dst.join(rel);
    let md = fs::symlink_metadata(&from).map_err(|e| ImageError::io("stat", &from, e))?;
    let md = Meta::from(&md);
    if let Some((uid, gid)) = owner(ctx, &md, &from)? {
        host::lchown(&to, uid, gid).map_err(|e| ImageError::io("set owner of", &to, e))?;
    }
    copy_xattrs_path(&from, &to)?;
    host::chmod(&to, md.perm()).map_err(|e| ImageError::io("chmod", &to, e))?;
    host::lutimens(&to, md.atime, md.mtime).map_err(|e| ImageError::io("set times of", &to, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_display_as_logged() {
        assert_eq!(CloneStrategy::Snapshot.to_string(), "btrfs-snapshot");
        assert_eq!(CloneStrategy::Reflink.to_string(), "reflink");
        assert_eq!(CloneStrategy::Copy.to_string(), "copy");
    }

    #[test]
    fn clone_file_keeps_data_and_holes_and_refuses_symlinks() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("disk.img");
        let f = File::create_new(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        f.sync_all().unwrap();
        let dst = dir.path().join("copy.img");
        let made = clone_file(&src, &dst).unwrap();
        assert_eq!(made.len, 64 << 20);
        assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
        let blocks = fs::metadata(&dst).unwrap().blocks() * 512;
        assert!(blocks < 1 << 20, "{blocks} bytes allocated: holes not kept");
        let err = clone_file(&src, &dst).unwrap_err().to_string();
        assert!(err.contains("create"), "{err}");
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&src, &link).unwrap();
        let err = clone_file(&link, &dir.path().join("x.img"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("open"), "{err}");
        assert!(!dir.path().join("x.img").exists());
        let err = clone_file(dir.path(), &dir.path().join("y.img"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn snapshot_args_match_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<SnapArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
    }
}
