//! Builds small, realistic Raspberry Pi SD-card images without root, mounts or mtools.
//!
//! The image is laid out like Raspberry Pi OS: an MBR (disk signature `738a4d67`, so the stock
//! `root=PARTUUID=738a4d67-02` points at the root) with partition 1 = FAT (type `0x0c`,
//! written with the pure-Rust `fatfs` crate) starting at sector 8192 and partition 2 = ext4
//! (type `0x83`, made by `mkfs.ext4 -d` from a staged tree in a temporary file, then copied
//! into place). Owners and device nodes, which an unprivileged user cannot stage, are set
//! afterwards with `debugfs` (also from e2fsprogs). Timestamps, UUIDs and contents are fixed,
//! so the same spec gives the same tree every time.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use fatfs::{Date, DateTime, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};

use crate::error::ImageError;
use crate::region::Region;

/// The stock Raspberry Pi OS kernel command line (root on the SD card's partition 2).
pub const STOCK_CMDLINE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=738a4d67-02 rootfstype=ext4 fsck.repair=yes rootwait";

/// The first bakery's templated command line (Go template fields filled in per Pi).
pub const LEGACY_CMDLINE: &str = "console=serial0,115200 console=tty1 root=/dev/nfs nfsroot={{.NfsServer}}:{{.NfsRoot}},vers=3 rw ip=dhcp rootwait elevator=deadline";

/// Modification time (seconds since the epoch, UTC) of every entry of a sample root
/// (2024-11-19 12:00:00 UTC, a Raspberry Pi OS release day).
pub const SAMPLE_MTIME: i64 = 1_732_017_600;

/// MBR disk signature of sample images (matches [`STOCK_CMDLINE`]'s PARTUUID).
pub const SAMPLE_DISK_SIGNATURE: u32 = 0x738a_4d67;

/// First sector of the boot partition (4 MiB, as Raspberry Pi OS).
const BOOT_START_SECTOR: u32 = 8192;
const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;

/// What one entry of a sample root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleKind {
    /// A directory.
    Dir,
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A symbolic link pointing at this target (stored verbatim).
    Symlink(String),
    /// A hard link to another regular file of the spec (path relative to the root).
    Hardlink(String),
    /// A named pipe.
    Fifo,
    /// A character device node.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device node.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

/// One non-trivial entry of a sample root: any type, mode (incl. setuid/setgid/sticky), owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleNode {
    /// Path relative to the root file system (`usr/bin/passwd`), no `..`, no leading `/`.
    pub path: String,
    /// What it is.
    pub kind: SampleKind,
    /// Permission bits incl. setuid/setgid/sticky (`0o4755`); ignored for symlinks and hardlinks.
    pub mode: u32,
    /// Owner user id (ignored for hardlinks: they share the target's inode).
    pub uid: u32,
    /// Owner group id (ignored for hardlinks).
    pub gid: u32,
}

impl SampleNode {
    fn new(path: &str, kind: SampleKind, mode: u32, uid: u32, gid: u32) -> Self {
        SampleNode {
            path: path.to_owned(),
            kind,
            mode,
            uid,
            gid,
        }
    }
}

/// The contents of a sample image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSpec {
    /// Files of the FAT boot partition: (path with `/` separators, contents). Parent
    /// directories are created as needed.
    pub boot_files: Vec<(String, Vec<u8>)>,
    /// Plain files of the ext4 root: (path, contents), mode 0644, owned by root.
    pub root_files: Vec<(String, Vec<u8>)>,
    /// Every other root entry: directories, symlinks, hardlinks, fifos, device nodes and
    /// files with a special mode or owner. Written after `root_files`.
    pub root_nodes: Vec<SampleNode>,
}

impl Default for SampleSpec {
    /// A realistic small Raspberry Pi OS image: firmware, two kernels, device trees, an
    /// overlay and a stock `cmdline.txt`; a root with every file type and special mode.
    fn default() -> Self {
        let boot_files = vec![
            blob("bootcode.bin", 52 * 1024),
            blob("start.elf", 256 * 1024),
            blob("start4.elf", 256 * 1024),
            blob("fixup.dat", 7 * 1024),
            blob("fixup4.dat", 5 * 1024),
            text("config.txt", CONFIG_TXT),
            text("cmdline.txt", &format!("{STOCK_CMDLINE}\n")),
            blob("kernel7.img", 320 * 1024),
            blob("kernel8.img", 448 * 1024),
            blob("bcm2710-rpi-3-b.dtb", 30 * 1024),
            blob("bcm2711-rpi-4-b.dtb", 52 * 1024),
            blob("bcm2712-rpi-5-b.dtb", 76 * 1024),
            blob("kernel_2712.img", 512 * 1024),
            blob("overlays/vc4-kms-v3d.dtbo", 3 * 1024),
        ];
        let root_files = vec![
            text("etc/hostname", "raspberrypi\n"),
            text("etc/fstab", FSTAB),
            text("etc/passwd", PASSWD),
            text("etc/group", GROUP),
            text("etc/os-release", OS_RELEASE),
            blob("lib/modules/6.6.51+rpt-rpi-v8/modules.dep", 20 * 1024),
        ];
        use SampleKind::*;
        let root_nodes = vec![
            SampleNode::new(
                "bin/busybox",
                File(pseudo_random("bin/busybox", 96 * 1024)),
                0o755,
                0,
                0,
            ),
            SampleNode::new("bin/sh", Symlink("busybox".into()), 0o777, 0, 0),
            SampleNode::new("bin/ls", Symlink("/bin/busybox".into()), 0o777, 0, 0),
            SampleNode::new(
                "usr/bin/passwd",
                File(pseudo_random("usr/bin/passwd", 16 * 1024)),
                0o4755,
                0,
                0,
            ),
            SampleNode::new(
                "usr/bin/crontab",
                File(pseudo_random("usr/bin/crontab", 8 * 1024)),
                0o2755,
                0,
                102,
            ),
            SampleNode::new(
                "usr/bin/perl5.36.0",
                File(pseudo_random("usr/bin/perl", 24 * 1024)),
                0o755,
                0,
                0,
            ),
            SampleNode::new(
                "usr/bin/perl",
                Hardlink("usr/bin/perl5.36.0".into()),
                0,
                0,
                0,
            ),
            SampleNode::new("tmp", Dir, 0o1777, 0, 0),
            SampleNode::new("var/spool/cron/crontabs", Dir, 0o1730, 0, 102),
            SampleNode::new("run/initctl", Fifo, 0o600, 0, 0),
            SampleNode::new("dev/null", CharDevice { major: 1, minor: 3 }, 0o666, 0, 0),
            SampleNode::new(
                "dev/console",
                CharDevice { major: 5, minor: 1 },
                0o600,
                0,
                5,
            ),
            SampleNode::new(
                "dev/mmcblk0p2",
                BlockDevice {
                    major: 179,
                    minor: 2,
                },
                0o660,
                0,
                6,
            ),
            SampleNode::new("home/pi", Dir, 0o750, 1000, 1000),
            SampleNode::new(
                "home/pi/.bashrc",
                File(b"# ~/.bashrc\nexport PS1='\\u@\\h:\\w\\$ '\n".to_vec()),
                0o644,
                1000,
                1000,
            ),
            SampleNode::new(
                "home/pi/a directory with a rather long name that exceeds the usual/x",
                File(b"nested\n".to_vec()),
                0o600,
                1000,
                1000,
            ),
        ];
        SampleSpec {
            boot_files,
            root_files,
            root_nodes,
        }
    }
}

impl SampleSpec {
    /// The default spec with the first bakery's templated `cmdline.txt`
    /// (`{{.NfsServer}}` / `{{.NfsRoot}}`), as old bakeforms carry it.
    pub fn legacy_template() -> SampleSpec {
        let mut spec = SampleSpec::default();
        for (name, data) in &mut spec.boot_files {
            if name == "cmdline.txt" {
                *data = format!("{LEGACY_CMDLINE}\n").into_bytes();
            }
        }
        spec
    }
}

fn blob(name: &str, len: usize) -> (String, Vec<u8>) {
    (name.to_owned(), pseudo_random(name, len))
}

fn text(name: &str, body: &str) -> (String, Vec<u8>) {
    (name.to_owned(), body.as_bytes().to_vec())
}

/// `len` deterministic pseudo-random bytes seeded by `seed` (splitmix64).
pub fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut state = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

const CONFIG_TXT: &str = "# For more options and information see\n# http://rptl.io/configtxt\n\ndtparam=audio=on\ncamera_auto_detect=1\ndisplay_auto_detect=1\nauto_initramfs=1\ndtoverlay=vc4-kms-v3d\nmax_framebuffers=2\ndisable_fw_kms_setup=1\narm_64bit=1\ndisable_overscan=1\narm_boost=1\n\n[cm4]\notg_mode=1\n\n[all]\nenable_uart=1\n";
const FSTAB: &str = "proc            /proc           proc    defaults          0       0\nPARTUUID=738a4d67-01  /boot/firmware  vfat    defaults          0       2\nPARTUUID=738a4d67-02  /               ext4    defaults,noatime  0       1\n";
const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n";
const GROUP: &str = "root:x:0:\ntty:x:5:\ndisk:x:6:\ncrontab:x:102:\npi:x:1000:\n";
const OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";

/// Fixed FAT timestamps for sample boot partitions (2024-11-19 12:00:00).
#[derive(Debug)]
struct SampleClock;

impl TimeProvider for SampleClock {
    fn get_current_date(&self) -> Date {
        Date {
            year: 2024,
            month: 11,
            day: 19,
        }
    }
    fn get_current_date_time(&self) -> DateTime {
        DateTime {
            date: self.get_current_date(),
            time: Time {
                hour: 12,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static SAMPLE_CLOCK: SampleClock = SampleClock;

/// Removes the temporary paths of a build however it ends.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = fs::remove_dir_all(p);
            } else {
                let _ = fs::remove_file(p);
            }
        }
    }
}

/// Builds a Raspberry Pi OS-like SD-card image at `out` from `spec`.
///
/// Works without root and without mtools/dosfstools/sfdisk: only `mkfs.ext4` and `debugfs`
/// (e2fsprogs) are run. The image is written under a temporary name next to `out` and renamed
/// into place, so `out` is either complete or untouched.
pub fn build_sample_image(out: &Path, spec: &SampleSpec) -> Result<(), ImageError> {
    validate(spec)?;
    let base = out.as_os_str().to_string_lossy().into_owned();
    let stage = PathBuf::from(format!("{base}.stage"));
    let root_fs = PathBuf::from(format!("{base}.root-ext4"));
    let partial = PathBuf::from(format!("{base}.partial"));
    // Leftovers of an interrupted build go first; whatever this build leaves goes at the end.
    drop(Scratch(vec![
        stage.clone(),
        root_fs.clone(),
        partial.clone(),
    ]));
    let scratch = Scratch(vec![stage.clone(), root_fs.clone(), partial.clone()]);

    fs::create_dir(&stage).map_err(|e| ImageError::io("create staging dir", &stage, e))?;
    let fixups = stage_root(&stage, spec)?;
    let staged_bytes = tree_size(&stage)?;
    let root_mib = (staged_bytes * 2 / MIB + 16).max(16);
    make_ext4(&stage, &root_fs, root_mib)?;
    debugfs_fixups(&root_fs, &fixups)?;

    let boot_mib = boot_size_mib(spec);
    let boot_start = u64::from(BOOT_START_SECTOR) * SECTOR;
    let root_start = boot_start + boot_mib * MIB;
    let total = root_start + root_mib * MIB;

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| ImageError::io("create", &partial, e))?;
    file.set_len(total)
        .map_err(|e| ImageError::io("size", &partial, e))?;
    write_mbr(&file, &partial, boot_mib, root_mib)?;
    write_fat(&file, boot_start, boot_mib * MIB, spec)?;
    copy_into(&root_fs, &file, &partial, root_start)?;
    file.sync_all()
        .map_err(|e| ImageError::io("sync", &partial, e))?;
    fs::rename(&partial, out).map_err(|e| ImageError::io("rename into place", out, e))?;
    drop(scratch);
    Ok(())
}

fn check_rel(path: &str) -> Result<(), ImageError> {
    let bad = |reason: &str| {
        Err(ImageError::InvalidSpec {
            path: path.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if path.is_empty() || path.starts_with('/') {
        return bad("must be a non-empty relative path");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("must not contain empty, `.` or `..` components");
    }
    if path.contains('\0') {
        return bad("must not contain NUL");
    }
    Ok(())
}

fn validate(spec: &SampleSpec) -> Result<(), ImageError> {
    let mut seen = HashSet::new();
    for (p, _) in &spec.boot_files {
        check_rel(p)?;
        if !seen.insert(format!("boot/{p}")) {
            return Err(ImageError::InvalidSpec {
                path: p.clone(),
                reason: "listed twice".into(),
            });
        }
    }
    let mut files: HashSet<&str> = HashSet::new();
    for (p, _) in &spec.root_files {
        check_rel(p)?;
        files.insert(p);
        if !seen.insert(format!("root/{p}")) {
            return Err(ImageError::InvalidSpec {
                path: p.clone(),
                reason: "listed twice".into(),
            });
        }
    }
    for n in &spec.root_nodes {
        check_rel(&n.path)?;
        if !seen.insert(format!("root/{}", n.path)) {
            return Err(ImageError::InvalidSpec {
                path: n.path.clone(),
                reason: "listed twice".into(),
            });
        }
        match &n.kind {
            SampleKind::File(_) => {
                files.insert(&n.path);
            }
            SampleKind::Hardlink(t) if !files.contains(t.as_str()) => {
                return Err(ImageError::InvalidSpec {
                    path: n.path.clone(),
                    reason: format!("hardlink target {t} is not a file listed before it"),
                });
            }
            SampleKind::Symlink(t) if t.is_empty() || t.contains('\0') => {
                return Err(ImageError::InvalidSpec {
                    path: n.path.clone(),
                    reason: "empty or NUL symlink target".into(),
                });
            }
            _ => {}
        }
        if n.mode > 0o7777 {
            return Err(ImageError::InvalidSpec {
                path: n.path.clone(),
                reason: format!("mode {:o} has type bits", n.mode),
            });
        }
    }
    Ok(())
}

/// Things `mkfs.ext4 -d` cannot take from an unprivileged staging tree: applied with debugfs.
#[derive(Debug, Default)]
struct Fixups {
    /// (path, uid, gid) for every inode that is not a hardlink.
    owners: Vec<(String, u32, u32)>,
    /// Device nodes to create: (path, 'c' or 'b', major, minor, mode, uid, gid).
    devices: Vec<(String, char, u32, u32, u32, u32, u32)>,
    /// Directories, to re-set mtimes after devices were added into them.
    dirs: Vec<String>,
}

/// The directories above the `/`-separated relative path `rel`, outermost first
/// (`a/b/c` → `a`, `a/b`).
fn parent_dirs(rel: &str) -> Vec<String> {
    let mut acc = String::new();
    let comps: Vec<&str> = rel.split('/').collect();
    let mut out = Vec::with_capacity(comps.len() - 1);
    for c in &comps[..comps.len() - 1] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(c);
        out.push(acc.clone());
    }
    out
}

fn stage_root(stage: &Path, spec: &SampleSpec) -> Result<Fixups, ImageError> {
    let mut fx = Fixups::default();
    let mut dirs: HashSet<String> = HashSet::new();
    let mut ensure_parents = |rel: &str, fx: &mut Fixups| -> Result<(), ImageError> {
        for acc in parent_dirs(rel) {
            if dirs.insert(acc.clone()) {
                let p = stage.join(&acc);
                if !p.is_dir() {
                    fs::create_dir(&p).map_err(|e| ImageError::io("create", &p, e))?;
                    set_mode(&p, 0o755)?;
                    fx.owners.push((acc.clone(), 0, 0));
                    fx.dirs.push(acc.clone());
                }
            }
        }
        Ok(())
    };
    for (rel, data) in &spec.root_files {
        ensure_parents(rel, &mut fx)?;
        let p = stage.join(rel);
        fs::write(&p, data).map_err(|e| ImageError::io("write", &p, e))?;
        set_mode(&p, 0o644)?;
        fx.owners.push((rel.clone(), 0, 0));
    }
    for n in &spec.root_nodes {
        ensure_parents(&n.path, &mut fx)?;
        let p = stage.join(&n.path);
        match &n.kind {
            SampleKind::Dir => {
                if !p.is_dir() {
                    fs::create_dir(&p).map_err(|e| ImageError::io("create", &p, e))?;
                }
                set_mode(&p, n.mode)?;
                fx.dirs.push(n.path.clone());
            }
            SampleKind::File(data) => {
                fs::write(&p, data).map_err(|e| ImageError::io("write", &p, e))?;
                set_mode(&p, n.mode)?;
            }
            SampleKind::Symlink(target) => {
                symlink(target, &p).map_err(|e| ImageError::io("symlink", &p, e))?;
            }
            SampleKind::Hardlink(target) => {
                let t = stage.join(target);
                fs::hard_link(&t, &p).map_err(|e| ImageError::io("hardlink", &p, e))?;
                continue;
            }
            SampleKind::Fifo => {
                mkfifo(&p, n.mode)?;
            }
            SampleKind::CharDevice { major, minor } => {
                fx.devices
                    .push((n.path.clone(), 'c', *major, *minor, n.mode, n.uid, n.gid));
                continue;
            }
            SampleKind::BlockDevice { major, minor } => {
                fx.devices
                    .push((n.path.clone(), 'b', *major, *minor, n.mode, n.uid, n.gid));
                continue;
            }
        }
        // Re-listing a directory made as a parent replaces its default owner.
        fx.owners.retain(|(p, _, _)| p != &n.path);
        fx.owners.push((n.path.clone(), n.uid, n.gid));
    }
    set_mtimes(stage)?;
    Ok(fx)
}

fn set_mode(p: &Path, mode: u32) -> Result<(), ImageError> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| ImageError::io("chmod", p, e))
}

fn cpath(p: &Path) -> Result<CString, ImageError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        ImageError::io(
            "use",
            p,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"),
        )
    })
}

fn mkfifo(p: &Path, mode: u32) -> Result<(), ImageError> {
    let c = cpath(p)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    if rc != 0 {
        return Err(ImageError::io("mkfifo", p, io::Error::last_os_error()));
    }
    set_mode(p, mode)
}

/// Sets every staged entry's atime and mtime to [`SAMPLE_MTIME`] (children before parents).
fn set_mtimes(dir: &Path) -> Result<(), ImageError> {
    let entries = fs::read_dir(dir).map_err(|e| ImageError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("list", dir, e))?;
        let p = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| ImageError::io("stat", &p, e))?;
        if ft.is_dir() {
            set_mtimes(&p)?;
        }
        set_time(&p)?;
    }
    set_time(dir)
}

fn set_time(p: &Path) -> Result<(), ImageError> {
    let c = cpath(p)?;
    let ts = libc::timespec {
        tv_sec: SAMPLE_MTIME as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(ImageError::io(
            "set times of",
            p,
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn tree_size(dir: &Path) -> Result<u64, ImageError> {
    let mut total = 0;
    for entry in fs::read_dir(dir).map_err(|e| ImageError::io("list", dir, e))? {
        let entry = entry.map_err(|e| ImageError::io("list", dir, e))?;
        let md = entry
            .metadata()
            .map_err(|e| ImageError::io("stat", entry.path(), e))?;
        total += 4096 + md.len().div_ceil(4096) * 4096;
        if md.is_dir() {
            total += tree_size(&entry.path())?;
        }
    }
    Ok(total)
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<(), ImageError> {
    let out = cmd.output().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            ImageError::ToolMissing {
                tool,
                package: "e2fsprogs",
                source,
            }
        } else {
            ImageError::io("run", tool, source)
        }
    })?;
    if !out.status.success() {
        return Err(ImageError::ToolFailed {
            tool,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Finds an e2fsprogs program on PATH or in the sbin directories (not on a user's PATH on
/// some distributions).
fn e2fs_tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn make_ext4(stage: &Path, fs_file: &Path, mib: u64) -> Result<(), ImageError> {
    let f = File::create(fs_file).map_err(|e| ImageError::io("create", fs_file, e))?;
    f.set_len(mib * MIB)
        .map_err(|e| ImageError::io("size", fs_file, e))?;
    drop(f);
    run(
        "mkfs.ext4",
        Command::new(e2fs_tool("mkfs.ext4"))
            .env("E2FSPROGS_FAKE_TIME", SAMPLE_MTIME.to_string())
            .args([
                "-q",
                "-F",
                "-b",
                "4096",
                "-L",
                "rootfs",
                "-U",
                "93a0c2b4-5b4e-4f6b-9b35-1d6c0d5e2f01",
            ])
            .args([
                "-E",
                "hash_seed=1b7cbd0c-7c3a-4f0e-8f3e-6a5c7d0e9b11,root_owner=0:0",
            ])
            .arg("-d")
            .arg(stage)
            .arg(fs_file),
    )
}

fn debugfs_fixups(fs_file: &Path, fx: &Fixups) -> Result<(), ImageError> {
    let q = |p: &str| format!("\"/{}\"", p.replace('\\', "\\\\").replace('"', "\\\""));
    let mut script = String::new();
    for (path, kind, major, minor, mode, uid, gid) in &fx.devices {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("/{d}"), n),
            None => ("/".to_owned(), path.as_str()),
        };
        script.push_str(&format!(
            "cd \"{dir}\"\nmknod \"{name}\" {kind} {major} {minor}\ncd /\n"
        ));
        let type_bits = if *kind == 'c' { 0o020000 } else { 0o060000 };
        script.push_str(&format!("sif {} mode 0{:o}\n", q(path), type_bits | mode));
        script.push_str(&format!(
            "sif {} uid {uid}\nsif {} gid {gid}\n",
            q(path),
            q(path)
        ));
        for field in ["mtime", "atime", "ctime"] {
            script.push_str(&format!("sif {} {field} @{SAMPLE_MTIME}\n", q(path)));
        }
    }
    for (path, uid, gid) in &fx.owners {
        let p = q(path);
        // mkfs.ext4 -d copies the staged ctime (the build's wall clock): pin it too.
        script.push_str(&format!(
            "sif {p} uid {uid}\nsif {p} gid {gid}\nsif {p} ctime @{SAMPLE_MTIME}\n"
        ));
    }
    script.push_str(&format!("sif / ctime @{SAMPLE_MTIME}\n"));
    for dir in fx
        .dirs
        .iter()
        .map(|d| q(d))
        .chain(std::iter::once("/".to_owned()))
    {
        script.push_str(&format!(
            "sif {dir} mtime @{SAMPLE_MTIME}\nsif {dir} atime @{SAMPLE_MTIME}\n"
        ));
    }
    let script_path = PathBuf::from(format!("{}.debugfs", fs_file.display()));
    let _cleanup = Scratch(vec![script_path.clone()]);
    fs::write(&script_path, script).map_err(|e| ImageError::io("write", &script_path, e))?;
    let mut cmd = Command::new(e2fs_tool("debugfs"));
    cmd.env("E2FSPROGS_FAKE_TIME", SAMPLE_MTIME.to_string())
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(fs_file);
    let out = cmd.output().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            ImageError::ToolMissing {
                tool: "debugfs",
                package: "e2fsprogs",
                source,
            }
        } else {
            ImageError::io("run", "debugfs", source)
        }
    })?;
    // debugfs exits 0 even when a command fails; it reports those on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !out.status.success() || !errors.is_empty() {
        return Err(ImageError::ToolFailed {
            tool: "debugfs",
            status: out.status.to_string(),
            stderr: errors.join("; "),
        });
    }
    Ok(())
}

fn boot_size_mib(spec: &SampleSpec) -> u64 {
    let bytes: u64 = spec
        .boot_files
        .iter()
        .map(|(_, d)| d.len() as u64 + 4096)
        .sum();
    // FAT16 with fatfs' default cluster size needs at least ~16 MiB; keep 2x headroom.
    (bytes * 2 / MIB + 1).max(32)
}

fn write_mbr(file: &File, path: &Path, boot_mib: u64, root_mib: u64) -> Result<(), ImageError> {
    let err = |e: mbrman::Error| ImageError::MbrWrite {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut region = Region::new(
        file,
        0,
        file.metadata()
            .map_err(|e| ImageError::io("stat", path, e))?
            .len(),
    );
    let mut mbr = mbrman::MBR::new_from(&mut region, 512, SAMPLE_DISK_SIGNATURE.to_le_bytes())
        .map_err(err)?;
    let sectors = |mib: u64| u32::try_from(mib * MIB / SECTOR).unwrap_or(u32::MAX);
    mbr[1] = mbrman::MBRPartitionEntry {
        boot: mbrman::BOOT_INACTIVE,
        first_chs: mbrman::CHS::empty(),
        sys: 0x0c,
        last_chs: mbrman::CHS::empty(),
        starting_lba: BOOT_START_SECTOR,
        sectors: sectors(boot_mib),
    };
    mbr[2] = mbrman::MBRPartitionEntry {
        boot: mbrman::BOOT_INACTIVE,
        first_chs: mbrman::CHS::empty(),
        sys: 0x83,
        last_chs: mbrman::CHS::empty(),
        starting_lba: BOOT_START_SECTOR + sectors(boot_mib),
        sectors: sectors(root_mib),
    };
    mbr.write_into(&mut region).map_err(err)
}

fn write_fat(file: &File, start: u64, len: u64, spec: &SampleSpec) -> Result<(), ImageError> {
    let fat_err = |path: &str| {
        let path = path.to_owned();
        move |source| ImageError::FatWrite { path, source }
    };
    fatfs::format_volume(
        Region::new(file, start, len),
        FormatVolumeOptions::new()
            .volume_id(SAMPLE_DISK_SIGNATURE)
            .volume_label(*b"bootfs     "),
    )
    .map_err(fat_err("/"))?;
    let options = FsOptions::new()
        .time_provider(&SAMPLE_CLOCK)
        .update_accessed_date(false);
    let fs = FileSystem::new(Region::new(file, start, len), options).map_err(fat_err("/"))?;
    {
        let root = fs.root_dir();
        for (rel, data) in &spec.boot_files {
            for acc in parent_dirs(rel) {
                root.create_dir(&acc).map_err(fat_err(&acc))?;
            }
            let mut f = root.create_file(rel).map_err(fat_err(rel))?;
            f.truncate().map_err(fat_err(rel))?;
            f.write_all(data).map_err(fat_err(rel))?;
            f.flush().map_err(fat_err(rel))?;
        }
    }
    fs.unmount().map_err(fat_err("/"))
}

fn copy_into(src: &Path, dst: &File, dst_path: &Path, offset: u64) -> Result<(), ImageError> {
    let mut from = File::open(src).map_err(|e| ImageError::io("open", src, e))?;
    let len = from
        .metadata()
        .map_err(|e| ImageError::io("stat", src, e))?
        .len();
    let mut to = Region::new(dst, offset, len);
    io::copy(&mut from, &mut to)
        .map_err(|e| ImageError::io("copy root file system into", dst_path, e))?;
    Ok(())
}
