//! Imports an SD-card image without mounting it: boot partition files into `dest/boot/`,
//! the ext4 root file system into `dest/root/`, with full metadata.
//!
//! # What is preserved
//! Root tree: file types (regular, directory, symlink, hardlink — recreated as hardlinks —,
//! character and block devices with major/minor, fifos, sockets), permission bits incl.
//! setuid/setgid/sticky, uid/gid, atime and mtime with nanoseconds, sparse-file holes, and
//! extended attributes (`user.*`, `trusted.*`, `security.*`, POSIX ACLs).
//! Boot tree (FAT): every file and directory with its name (long names), size and
//! modification time (FAT stores local time without a zone; it is taken as UTC). Modes are
//! 0644 for files and 0755 for directories, owned by the importing user.
//!
//! # What is not preserved
//! ctime and creation time (the kernel sets them), inode flags (`chattr`: immutable,
//! append-only …), file capabilities on a host whose kernel refuses `security.capability`
//! (they are xattrs, so they are kept where the host allows), `ea_inode` xattr values (such
//! images are rejected with an error naming the inode). Inline data (small files,
//! directories and symlinks kept inside their inodes) is read and written like any data.
//!
//! # Not running as root
//! Owners cannot be set: every entry belongs to the importing user and the summary says how
//! many entries had another owner. Device nodes cannot be created: they are skipped, and the
//! summary lists them. `trusted.*` and `security.*` xattrs the kernel refuses are listed as
//! warnings too. As root all of these are preserved exactly and any failure is an error.
//!
//! On any error `dest` is removed entirely before the error is returned.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::ImageError;
use crate::ext4raw::{self, Inode, Kind, RawFs};
use crate::host;
use crate::region::Region;
use crate::table::{self, Part};

/// Which part of the import a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportPhase {
    /// Copying the boot partition's files.
    Boot,
    /// Reading the root file system's directory tree (totals not known yet).
    Scan,
    /// Writing the root tree.
    Root,
    /// Setting directory metadata; the import is about to finish.
    Finish,
}

/// A progress report: bytes and files done of the current phase's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    /// The current phase.
    pub phase: ImportPhase,
    /// Entries written so far in this phase.
    pub files_done: u64,
    /// Entries to write in this phase (0 while unknown).
    pub files_total: u64,
    /// File content bytes written so far in this phase.
    pub bytes_done: u64,
    /// File content bytes to write in this phase (0 while unknown).
    pub bytes_total: u64,
}

/// What an import produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// File system of the boot partition: `FAT12`, `FAT16`, `FAT32` or `ext4`.
    pub boot_fs: String,
    /// Regular files in `boot/`.
    pub boot_files: u64,
    /// Bytes of the files in `boot/`.
    pub boot_bytes: u64,
    /// Regular files in `root/` (first links only).
    pub files: u64,
    /// Directories in `root/` (not counting `root/` itself).
    pub dirs: u64,
    /// Symbolic links in `root/`.
    pub symlinks: u64,
    /// Additional hard links in `root/` (a file with 3 names counts 1 file + 2 hardlinks).
    pub hardlinks: u64,
    /// Character and block devices created in `root/`.
    pub devices: u64,
    /// Fifos and sockets in `root/`.
    pub fifos: u64,
    /// Extended attributes set in `root/`.
    pub xattrs: u64,
    /// Bytes of regular file contents in `root/` (apparent sizes).
    pub bytes: u64,
    /// Things that could not be preserved, one line per kind with a count and examples: only
    /// when not running as root (owners, device nodes, privileged xattrs) or when the
    /// destination file system refuses xattrs.
    pub warnings: Vec<String>,
}

/// Imports the image at `image` into the new directory `dest` (`dest/boot/`, `dest/root/`).
///
/// `dest` must not exist; its parent must. Partition 1 is the boot partition (FAT or ext4),
/// partition 2 the ext4 root. On error `dest` is removed and the error names what is wrong
/// with the image ("no partition table", "partition 2 is not ext4", "image truncated" …).
pub fn import_image(
    image: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<ImportSummary, ImageError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(ImageError::DestinationExists {
            path: dest.to_owned(),
        });
    }
    let created = std::cell::Cell::new(false);
    // The readers (ours, mbrman, fatfs, ext4-view) parse untrusted bytes: a panic in any of
    // them is a corrupt image, never a crashed caller.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        import_into(image, dest, progress, &created)
    }));
    let result = outcome.unwrap_or_else(|_| {
        Err(ImageError::Corrupt {
            path: image.to_owned(),
            reason: "a file system reader crashed on its data".into(),
        })
    });
    if result.is_err() && created.get() {
        if let Err(e) = crate::clone::remove_tree(dest) {
            tracing::warn!(dest = %dest.display(), error = %e, "could not remove a failed import");
        }
    }
    result
}

fn import_into(
    image: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(ImportProgress),
    created: &std::cell::Cell<bool>,
) -> Result<ImportSummary, ImageError> {
    let file = File::open(image).map_err(|e| ImageError::io("open image", image, e))?;
    let len = file
        .metadata()
        .map_err(|e| ImageError::io("stat image", image, e))?
        .len();
    let parts = table::partitions(&file, image, len)?;
    let (boot, root) = match (parts.first(), parts.get(1)) {
        (Some(boot), Some(root)) => (*boot, *root),
        (first, _) => {
            return Err(ImageError::MissingPartition {
                index: 2,
                path: image.to_owned(),
                reason: format!(
                    "the table lists {} partition(s); an image needs boot and root",
                    usize::from(first.is_some())
                ),
            });
        }
    };
    // Check both file systems before writing anything.
    let boot_kind = probe_boot(&file, &boot)?;
    let root_fs = open_ext4(&file, &root).map_err(|reason| ImageError::RootNotExt4 {
        index: root.index,
        reason,
    })?;

    fs::create_dir(dest).map_err(|e| ImageError::io("create", dest, e))?;
    created.set(true);
    let mut summary = ImportSummary::default();
    let mut warnings = Warnings::default();
    let boot_dir = dest.join("boot");
    match boot_kind {
        BootKind::Fat => {
            summary.boot_fs = import_fat(&file, &boot, &boot_dir, &mut summary, progress)?;
        }
        BootKind::Ext4 => {
            let fs = open_ext4(&file, &boot).map_err(|reason| ImageError::BootNotFatOrExt4 {
                index: boot.index,
                reason,
            })?;
            let mut boot_summary = ImportSummary::default();
            let mut boot_warnings = Warnings::default();
            extract_ext4(
                &fs,
                &boot_dir,
                ImportPhase::Boot,
                &mut boot_summary,
                &mut boot_warnings,
                progress,
            )?;
            summary.boot_fs = "ext4".into();
            summary.boot_files = boot_summary.files;
            summary.boot_bytes = boot_summary.bytes;
        }
    }
    extract_ext4(
        &root_fs,
        &dest.join("root"),
        ImportPhase::Root,
        &mut summary,
        &mut warnings,
        progress,
    )?;
    summary.warnings = warnings.lines();
    tracing::debug!(image = %image.display(), dest = %dest.display(), files = summary.files, bytes = summary.bytes, "imported image");
    Ok(summary)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BootKind {
    Fat,
    Ext4,
}

fn probe_boot(file: &File, part: &Part) -> Result<BootKind, ImageError> {
    let fat = fatfs::FileSystem::new(
        ReadOnly(part.region(file)),
        fatfs::FsOptions::new().update_accessed_date(false),
    );
    match fat {
        Ok(fs) => {
            // Reading the root directory's first entry catches a boot sector with no FAT behind it.
            let root = fs.root_dir();
            let first = root.iter().next();
            if let Some(Err(e)) = first {
                return Err(ImageError::BootNotFatOrExt4 {
                    index: part.index,
                    reason: format!("FAT root directory unreadable: {e}"),
                });
            }
            Ok(BootKind::Fat)
        }
        Err(fat_err) => match open_ext4(file, part) {
            Ok(_) => Ok(BootKind::Ext4),
            Err(ext_err) => Err(ImageError::BootNotFatOrExt4 {
                index: part.index,
                reason: format!("FAT: {fat_err}; ext4: {ext_err}"),
            }),
        },
    }
}

/// A partition reader for ext4-view, which wants an owned `'static` reader.
struct Ext4Reader {
    file: File,
    start: u64,
    len: u64,
}

impl ext4_view::Ext4Read for Ext4Reader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Region::new(&self.file, self.start, self.len)
            .read_exact_at(start_byte, dst)
            .map_err(|e| Box::new(e).into())
    }
}

/// Validates the file system with ext4-view (superblock, checksums, features, journal), then
/// opens it with the raw reader that exposes what ext4-view does not.
fn open_ext4<'f>(file: &'f File, part: &Part) -> Result<RawFs<'f>, String> {
    let own = file
        .try_clone()
        .map_err(|e| format!("cannot reopen the image: {e}"))?;
    match ext4_view::Ext4::load(Box::new(Ext4Reader {
        file: own,
        start: part.start,
        len: part.len,
    })) {
        Ok(_) => {}
        // Features ext4-view 1.0 lacks (meta_bg, inline_data) but the raw reader handles;
        // anything the raw reader cannot read it rejects itself, by name.
        Err(ext4_view::Ext4Error::Incompatible(i)) => {
            tracing::info!(partition = part.index, features = %i, "ext4-view cannot open this file system; using the raw reader alone");
        }
        Err(e) => return Err(e.to_string()),
    }
    RawFs::open(part.region(file)).map_err(|e| e.to_string())
}

/// fatfs wants a writable device; this one refuses writes so an import never alters the image.
struct ReadOnly<'f>(Region<'f>);

impl io::Read for ReadOnly<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl io::Write for ReadOnly<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the image is opened read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Seek for ReadOnly<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

type FatDir<'a, 'f> = fatfs::Dir<'a, ReadOnly<'f>>;

fn import_fat(
    file: &File,
    part: &Part,
    dest: &Path,
    summary: &mut ImportSummary,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<String, ImageError> {
    let fs = fatfs::FileSystem::new(
        ReadOnly(part.region(file)),
        fatfs::FsOptions::new().update_accessed_date(false),
    )
    .map_err(|e| ImageError::BootNotFatOrExt4 {
        index: part.index,
        reason: e.to_string(),
    })?;
    let kind = match fs.fat_type() {
        fatfs::FatType::Fat12 => "FAT12",
        fatfs::FatType::Fat16 => "FAT16",
        fatfs::FatType::Fat32 => "FAT32",
    };
    fs::create_dir(dest).map_err(|e| ImageError::io("create", dest, e))?;
    let mut dir_times = Vec::new();
    let mut p = ImportProgress {
        phase: ImportPhase::Boot,
        files_done: 0,
        files_total: 0,
        bytes_done: 0,
        bytes_total: 0,
    };
    let mut buf = vec![0u8; 1 << 20];
    copy_fat_dir(
        &fs.root_dir(),
        "",
        dest,
        summary,
        &mut dir_times,
        &mut buf,
        &mut p,
        progress,
    )?;
    for (path, mtime) in dir_times.iter().rev() {
        host::lutimens(path, *mtime, *mtime)
            .map_err(|e| ImageError::io("set times of", path, e))?;
    }
    progress(p);
    Ok(kind.to_owned())
}

#[allow(clippy::too_many_arguments)]
fn copy_fat_dir(
    dir: &FatDir<'_, '_>,
    rel: &str,
    dest: &Path,
    summary: &mut ImportSummary,
    dir_times: &mut Vec<(PathBuf, (i64, u32))>,
    buf: &mut [u8],
    p: &mut ImportProgress,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<(), ImageError> {
    let fat_err = |path: &str| {
        let path = path.to_owned();
        move |source| ImageError::Fat { path, source }
    };
    let shown = if rel.is_empty() { "/" } else { rel };
    for entry in dir.iter() {
        let entry = entry.map_err(fat_err(shown))?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let Some(os) = host::safe_name(name.as_bytes()) else {
            return Err(ImageError::UnsafeName {
                name,
                parent: format!("boot:{shown}"),
            });
        };
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let target = dest.join(os);
        let mtime = (fat_time(entry.modified()), 0);
        if entry.is_dir() {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&target)
                .map_err(|e| ImageError::io("create", &target, e))?;
            dir_times.push((target.clone(), mtime));
            copy_fat_dir(
                &entry.to_dir(),
                &child_rel,
                &target,
                summary,
                dir_times,
                buf,
                p,
                progress,
            )?;
        } else {
            let mut src = entry.to_file();
            let out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&target)
                .map_err(|e| ImageError::io("create", &target, e))?;
            let mut written = 0u64;
            loop {
                let n = src.read(buf).map_err(fat_err(&child_rel))?;
                if n == 0 {
                    break;
                }
                std::os::unix::fs::FileExt::write_all_at(&out, &buf[..n], written)
                    .map_err(|e| ImageError::io("write", &target, e))?;
                written += n as u64;
            }
            host::futimens(&out, mtime, mtime)
                .map_err(|e| ImageError::io("set times of", &target, e))?;
            summary.boot_files += 1;
            summary.boot_bytes += written;
            p.files_done += 1;
            p.bytes_done += written;
            if p.files_done % 256 == 0 {
                progress(*p);
            }
        }
    }
    Ok(())
}

/// FAT's local date and time, read as UTC, in seconds since the epoch.
fn fat_time(t: fatfs::DateTime) -> i64 {
    let (y, m, d) = (
        i64::from(t.date.year),
        i64::from(t.date.month),
        i64::from(t.date.day),
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400
        + i64::from(t.time.hour) * 3600
        + i64::from(t.time.min) * 60
        + i64::from(t.time.sec)
}

/// One entry of the root tree, in creation order (parents before children).
struct Entry {
    rel: PathBuf,
    inode: Inode,
    kind: Kind,
    /// For a hardlink: index of the entry it links to.
    link_to: Option<usize>,
}

/// Aggregated warnings: one line per kind of thing not preserved, with a few examples.
#[derive(Default)]
struct Warnings(BTreeMap<String, (u64, Vec<String>)>);

impl Warnings {
    fn add(&mut self, what: impl Into<String>, example: impl Into<String>) {
        let slot = self.0.entry(what.into()).or_default();
        slot.0 += 1;
        if slot.1.len() < 5 {
            slot.1.push(example.into());
        }
    }

    fn lines(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(what, (n, ex))| {
                let more = if *n > ex.len() as u64 {
                    format!(", … ({} more)", *n - ex.len() as u64)
                } else {
                    String::new()
                };
                format!("{what}: {n} ({}{more})", ex.join(", "))
            })
            .collect()
    }
}

fn ext4_err(fs_path: &Path, e: ext4raw::RawError) -> ImageError {
    ImageError::Ext4 {
        path: format!("/{}", fs_path.display()),
        reason: e.0,
    }
}

/// Reads the whole directory tree of `fs` (breadth of one directory at a time, depth first).
fn scan(fs: &RawFs<'_>) -> Result<(Inode, Vec<Entry>), ImageError> {
    let root = fs
        .inode(ext4raw::ROOT_INO)
        .map_err(|e| ext4_err(Path::new(""), e))?;
    if root.kind().map_err(|e| ext4_err(Path::new(""), e))? != Kind::Dir {
        return Err(ImageError::Ext4 {
            path: "/".into(),
            reason: "the root inode is not a directory".into(),
        });
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut first_link: HashMap<u32, usize> = HashMap::new();
    let mut seen_dirs: HashSet<u32> = HashSet::from([ext4raw::ROOT_INO]);
    let mut stack: Vec<(PathBuf, Inode)> = vec![(PathBuf::new(), root.clone())];
    while let Some((rel, dir)) = stack.pop() {
        let mut children = fs.read_dir(&dir).map_err(|e| ext4_err(&rel, e))?;
        children.sort_by(|a, b| a.name.cmp(&b.name));
        let mut subdirs = Vec::new();
        for child in children {
            let Some(name) = host::safe_name(&child.name) else {
                return Err(ImageError::UnsafeName {
                    name: String::from_utf8_lossy(&child.name).into_owned(),
                    parent: format!("/{}", rel.display()),
                });
            };
            let child_rel = rel.join(name);
            let inode = fs.inode(child.ino).map_err(|e| ext4_err(&child_rel, e))?;
            let kind = inode.kind().map_err(|e| ext4_err(&child_rel, e))?;
            if kind == Kind::Dir {
                if !seen_dirs.insert(child.ino) {
                    return Err(ext4_err(
                        &child_rel,
                        ext4raw::RawError(format!("directory inode {} is linked twice", child.ino)),
                    ));
                }
                subdirs.push((child_rel.clone(), inode.clone()));
                entries.push(Entry {
                    rel: child_rel,
                    inode,
                    kind,
                    link_to: None,
                });
                continue;
            }
            let link_to = if inode.links > 1 {
                first_link.get(&child.ino).copied()
            } else {
                None
            };
            if link_to.is_none() && inode.links > 1 {
                first_link.insert(child.ino, entries.len());
            }
            entries.push(Entry {
                rel: child_rel,
                inode,
                kind,
                link_to,
            });
        }
        // Depth first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok((root, entries))
}

/// Owner to set, or None when not root (then owners are reported as warnings).
fn owner_of(inode: &Inode, as_root: bool) -> Option<(u32, u32)> {
    as_root.then_some((inode.uid, inode.gid))
}

fn t(time: ext4raw::Time) -> (i64, u32) {
    (time.sec, time.nsec)
}

fn extract_ext4(
    fs: &RawFs<'_>,
    dest: &Path,
    phase: ImportPhase,
    summary: &mut ImportSummary,
    warnings: &mut Warnings,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<(), ImageError> {
    progress(ImportProgress {
        phase: ImportPhase::Scan,
        files_done: 0,
        files_total: 0,
        bytes_done: 0,
        bytes_total: 0,
    });
    let (root, entries) = scan(fs)?;
    let as_root = host::is_root();
    let me = (
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        unsafe { libc::getuid() },
        unsafe { libc::getgid() },
    );
    let files_total = entries.len() as u64;
    let bytes_total: u64 = entries
        .iter()
        .filter(|e| e.kind == Kind::File && e.link_to.is_none())
        .map(|e| e.inode.size)
        .sum();
    let mut p = ImportProgress {
        phase,
        files_done: 0,
        files_total,
        bytes_done: 0,
        bytes_total,
    };
    progress(p);

    crate::clone::create_snapshot_root(dest, 0o700)
        .map_err(|e| ImageError::io("create", dest, e))?;
    let path_of = |e: &Entry| dest.join(&e.rel);

    // 1. Directories, writable for now: one depth level at a time, each level in parallel.
    let mut dirs: Vec<&Entry> = entries.iter().filter(|e| e.kind == Kind::Dir).collect();
    dirs.sort_by_key(|e| e.rel.components().count());
    for level in dirs.chunk_by(|a, b| a.rel.components().count() == b.rel.components().count()) {
        level.par_iter().try_for_each(|e| {
            let path = path_of(e);
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(|err| ImageError::io("create", &path, err))
        })?;
    }
    summary.dirs += dirs.len() as u64;
    p.files_done += dirs.len() as u64;

    // 2. Regular files, in parallel batches of about 64 MiB or 2000 files.
    let files: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.kind == Kind::File && e.link_to.is_none())
        .collect();
    let mut batch_start = 0;
    while batch_start < files.len() {
        let mut end = batch_start;
        let mut bytes = 0u64;
        while end < files.len() && end - batch_start < 2000 && bytes < 64 << 20 {
            bytes += files[end].inode.size;
            end += 1;
        }
        let results: Vec<Result<FileOutcome, ImageError>> = files[batch_start..end]
            .par_iter()
            .map(|e| write_file(fs, e, &path_of(e), as_root))
            .collect();
        for r in results {
            let (xattrs, warns) = r?;
            summary.xattrs += xattrs;
            for (w, ex) in warns {
                warnings.add(w, ex);
            }
        }
        summary.files += (end - batch_start) as u64;
        summary.bytes += bytes;
        p.files_done += (end - batch_start) as u64;
        p.bytes_done += bytes;
        progress(p);
        batch_start = end;
    }

    // 3. Everything else: symlinks, special files, then hardlinks (their targets exist now).
    let mut skipped_devices: HashSet<usize> = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let path = path_of(e);
        let shown = format!("/{}", e.rel.display());
        if let Some(first) = e.link_to {
            if skipped_devices.contains(&first) {
                warnings.add("device node hardlinks skipped (not root)", shown);
                continue;
            }
            fs::hard_link(path_of(&entries[first]), &path)
                .map_err(|err| ImageError::io("hardlink", &path, err))?;
            summary.hardlinks += 1;
            continue;
        }
        let perm = e.inode.perm();
        match e.kind {
            Kind::Dir | Kind::File => continue,
            Kind::Symlink => {
                let target = fs
                    .symlink_target(&e.inode)
                    .map_err(|err| ext4_err(&e.rel, err))?;
                symlink(OsString::from_vec(target), &path)
                    .map_err(|err| ImageError::io("symlink", &path, err))?;
                summary.symlinks += 1;
            }
            Kind::Fifo | Kind::Socket => {
                let k = if e.kind == Kind::Fifo {
                    libc::S_IFIFO
                } else {
                    libc::S_IFSOCK
                };
                host::mknod(&path, k, perm, 0, 0)
                    .map_err(|err| ImageError::io("mknod", &path, err))?;
                summary.fifos += 1;
            }
            Kind::CharDev | Kind::BlockDev => {
                let k = if e.kind == Kind::CharDev {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                let (major, minor) = e.inode.rdev();
                match host::mknod(&path, k, perm, major, minor) {
                    Ok(()) => summary.devices += 1,
                    Err(err) if !as_root && err.raw_os_error() == Some(libc::EPERM) => {
                        warnings.add(
                            "device nodes skipped (not root)",
                            format!("{shown} ({major}:{minor})"),
                        );
                        skipped_devices.insert(i);
                        continue;
                    }
                    Err(err) => return Err(ImageError::io("mknod", &path, err)),
                }
            }
        }
        set_path_meta(fs, e, &path, as_root, summary, warnings)?;
        p.files_done += 1;
    }
    p.files_done = files_total;
    progress(p);

    // 4. Directory metadata, deepest first, so writing into them is finished.
    progress(ImportProgress {
        phase: ImportPhase::Finish,
        ..p
    });
    for e in entries.iter().filter(|e| e.kind == Kind::Dir).rev() {
        set_path_meta(fs, e, &path_of(e), as_root, summary, warnings)?;
    }
    let root_entry = Entry {
        rel: PathBuf::new(),
        inode: root,
        kind: Kind::Dir,
        link_to: None,
    };
    set_path_meta(fs, &root_entry, dest, as_root, summary, warnings)?;

    if !as_root {
        let foreign = entries
            .iter()
            .chain(std::iter::once(&root_entry))
            .filter(|e| e.link_to.is_none() && (e.inode.uid, e.inode.gid) != me)
            .count();
        if foreign > 0 {
            warnings.add(
                format!(
                    "owners not preserved (not root; everything belongs to uid {} gid {})",
                    me.0, me.1
                ),
                format!("{foreign} entries"),
            );
        }
    }
    Ok(())
}

/// Whether an xattr failure is a policy matter (warn) rather than an import failure.
fn xattr_refused(err: &io::Error, as_root: bool) -> bool {
    match err.raw_os_error() {
        Some(libc::ENOTSUP) => true,
        Some(libc::EPERM | libc::EACCES) => !as_root,
        _ => false,
    }
}

/// Files up to this size are copied through a buffer rather than by `copy_file_range`: on
/// btrfs and XFS that call shares extents (a reflink), which for a small file costs more
/// metadata work than writing its few blocks (measured by the upload benchmark,
/// `strategies::upload_to_ready_per_filesystem`), and a small file gains little from sharing.
const SMALL_FILE: u64 = 64 << 10;

/// What writing one file produced: xattrs set and (warning, example) pairs.
type FileOutcome = (u64, Vec<(String, String)>);

/// Creates one regular file with its data, owner, xattrs, mode and times.
/// Returns the number of xattrs set and (warning, example) pairs.
fn write_file(
    fs: &RawFs<'_>,
    e: &Entry,
    path: &Path,
    as_root: bool,
) -> Result<FileOutcome, ImageError> {
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| ImageError::io("create", path, err))?;
    let bs = fs.block_size();
    let part = fs.part();
    let mut written_to = 0;
    let runs = if e.inode.has_inline_data() {
        written_to = write_inline(fs, e, &out, path)?;
        Vec::new()
    } else {
        fs.runs(&e.inode).map_err(|err| ext4_err(&e.rel, err))?
    };
    let small = e.inode.size <= SMALL_FILE;
    for run in runs {
        let start = run.logical * bs;
        let end = ((run.logical + run.len) * bs).min(e.inode.size);
        if start >= end {
            continue;
        }
        written_to = end;
        if small {
            let mut data = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
            part.read_exact_at(run.physical * bs, &mut data)
                .map_err(|err| ImageError::io("read data of", path, err))?;
            std::os::unix::fs::FileExt::write_all_at(&out, &data, start)
                .map_err(|err| ImageError::io("write", path, err))?;
            continue;
        }
        host::copy_range(
            part.file(),
            part.start() + run.physical * bs,
            &out,
            start,
            end - start,
        )
        .map_err(|err| ImageError::io("copy data into", path, err))?;
    }
    // A trailing hole (or an empty file with a size) still needs the length set.
    if written_to < e.inode.size {
        out.set_len(e.inode.size)
            .map_err(|err| ImageError::io("set length of", path, err))?;
    }
    if let Some((uid, gid)) = owner_of(&e.inode, as_root) {
        host::fchown(&out, uid, gid).map_err(|err| ImageError::io("set owner of", path, err))?;
    }
    let mut warns = Vec::new();
    let mut count = 0;
    for x in fs.xattrs(&e.inode).map_err(|err| ext4_err(&e.rel, err))? {
        match host::fsetxattr(&out, &x.name, &x.value) {
            Ok(()) => count += 1,
            Err(err) if xattr_refused(&err, as_root) => warns.push((
                format!("xattrs not set ({err})"),
                format!("/{} {}", e.rel.display(), String::from_utf8_lossy(&x.name)),
            )),
            Err(err) => return Err(ImageError::io("set xattr on", path, err)),
        }
    }
    host::fchmod(&out, e.inode.perm()).map_err(|err| ImageError::io("chmod", path, err))?;
    host::futimens(&out, t(e.inode.atime), t(e.inode.mtime))
        .map_err(|err| ImageError::io("set times of", path, err))?;
    Ok((count, warns))
}

/// Writes the data of a file that keeps it inline (in the inode, not in blocks: there is
/// nothing to copy_file_range from) and returns its length.
fn write_inline(fs: &RawFs<'_>, e: &Entry, out: &File, path: &Path) -> Result<u64, ImageError> {
    let data = fs
        .inline_data(&e.inode)
        .map_err(|err| ext4_err(&e.rel, err))?;
    std::os::unix::fs::FileExt::write_all_at(out, &data, 0)
        .map_err(|err| ImageError::io("write", path, err))?;
    Ok(data.len() as u64)
}

/// Sets owner, xattrs, mode and times of a non-regular entry by path (no symlink following).
fn set_path_meta(
    fs: &RawFs<'_>,
    e: &Entry,
    path: &Path,
    as_root: bool,
    summary: &mut ImportSummary,
    warnings: &mut Warnings,
) -> Result<(), ImageError> {
    if let Some((uid, gid)) = owner_of(&e.inode, as_root) {
        host::lchown(path, uid, gid).map_err(|err| ImageError::io("set owner of", path, err))?;
    }
    for x in fs.xattrs(&e.inode).map_err(|err| ext4_err(&e.rel, err))? {
        match host::lsetxattr(path, &x.name, &x.value) {
            Ok(()) => summary.xattrs += 1,
            Err(err)
                if xattr_refused(&err, as_root)
                    || (e.kind == Kind::Symlink && x.name.starts_with(b"user.")) =>
            {
                warnings.add(
                    format!("xattrs not set ({err})"),
                    format!("/{} {}", e.rel.display(), String::from_utf8_lossy(&x.name)),
                );
            }
            Err(err) => return Err(ImageError::io("set xattr on", path, err)),
        }
    }
    if e.kind != Kind::Symlink {
        host::chmod(path, e.inode.perm()).map_err(|err| ImageError::io("chmod", path, err))?;
    }
    host::lutimens(path, t(e.inode.atime), t(e.inode.mtime))
        .map_err(|err| ImageError::io("set times of", path, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_times_convert_to_unix_seconds() {
        let dt = fatfs::DateTime {
            date: fatfs::Date {
                year: 2024,
                month: 11,
                day: 19,
            },
            time: fatfs::Time {
                hour: 12,
                min: 0,
                sec: 0,
                millis: 0,
            },
        };
        assert_eq!(fat_time(dt), 1_732_017_600);
        let dt = fatfs::DateTime {
            date: fatfs::Date {
                year: 1980,
                month: 1,
                day: 1,
            },
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 2,
                millis: 0,
            },
        };
        assert_eq!(fat_time(dt), 315_532_802);
    }

    #[test]
    fn warnings_aggregate_with_examples() {
        let mut w = Warnings::default();
        for i in 0..7 {
            w.add("device nodes skipped", format!("/dev/d{i}"));
        }
        let lines = w.lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("device nodes skipped: 7 (/dev/d0"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("… (2 more))"), "{}", lines[0]);
    }
}
