//! Test helpers: stage a tree with every file type, build real images with the standard
//! tools (sfdisk, mkfs.vfat, mcopy, mkfs.ext4 -d), and compare trees entry by entry.
#![allow(dead_code)]

pub mod loopfs;
pub mod sdcard;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn mknod(p: &Path, kind: libc::mode_t, perm: u32, major: u32, minor: u32) {
    let rc = unsafe { libc::mknod(c(p).as_ptr(), kind | perm, libc::makedev(major, minor)) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    let rc = unsafe { libc::lchown(c(p).as_ptr(), uid, gid) };
    assert_eq!(
        rc,
        0,
        "lchown {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn set_times(p: &Path, sec: i64, nsec: i64) {
    let ts = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c(p).as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

pub fn setxattr(p: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).unwrap();
    let rc = unsafe {
        libc::lsetxattr(
            c(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {} {name}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = unsafe { libc::llistxattr(c(p).as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        let m =
            unsafe { libc::lgetxattr(c(p).as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(m >= 0);
        v.truncate(m as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), v);
    }
    out
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A POSIX ACL in the kernel's xattr format: user::rw-, user:1000:r--, group::r--, mask::r--, other::---.
pub fn sample_acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Stages a root tree with every file type and tricky metadata under `root` (must be run as root).
pub fn stage_full_tree(root: &Path) {
    let w = |rel: &str, data: &[u8], mode: u32, uid: u32, gid: u32| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        lchown(&p, uid, gid);
        chmod(&p, mode);
    };
    fs::create_dir_all(root).unwrap();
    w("etc/hostname", b"raspberrypi\n", 0o644, 0, 0);
    w("empty", b"", 0o600, 0, 0);
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    w("usr/lib/big.bin", &big, 0o644, 0, 0);
    w("usr/bin/sudo", b"\x7fELF sudo", 0o4755, 0, 0);
    w("usr/bin/wall", b"\x7fELF wall", 0o2755, 0, 5);
    w("usr/bin/both", b"\x7fELF both", 0o6711, 0, 0);
    w("home/pi/notes.txt", b"hello pi\n", 0o640, 1000, 1000);
    w("home/pi/odd owner", b"x", 0o600, 123_456, 654_321);
    // Hardlinks: three names across directories, and a pair.
    w("usr/bin/perl5.36", b"perl binary", 0o755, 0, 0);
    fs::hard_link(root.join("usr/bin/perl5.36"), root.join("usr/bin/perl")).unwrap();
    fs::create_dir_all(root.join("opt/alt")).unwrap();
    fs::hard_link(root.join("usr/bin/perl5.36"), root.join("opt/alt/perl")).unwrap();
    w("var/a", b"pair", 0o644, 7, 7);
    fs::hard_link(root.join("var/a"), root.join("var/b")).unwrap();
    // Sparse file: 1 MiB hole, 4 KiB data, trailing hole.
    {
        let p = root.join("var/sparse");
        let f = fs::File::create(&p).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xAB; 4096], 1 << 20).unwrap();
        f.set_len(3 << 20).unwrap();
    }
    // Symlinks: fast (< 60 bytes) and slow (long target), dangling, absolute.
    symlink("perl5.36", root.join("usr/bin/perl-link")).unwrap();
    let long_target = format!("/{}/target", "very-long-directory-name".repeat(6));
    symlink(&long_target, root.join("usr/long-link")).unwrap();
    symlink("/does/not/exist", root.join("dangling")).unwrap();
    lchown(&root.join("dangling"), 1000, 1000);
    // Special files.
    fs::create_dir_all(root.join("dev")).unwrap();
    mknod(&root.join("dev/null"), libc::S_IFCHR, 0o666, 1, 3);
    mknod(&root.join("dev/mmcblk0p2"), libc::S_IFBLK, 0o660, 179, 2);
    mknod(&root.join("dev/big"), libc::S_IFCHR, 0o600, 259, 300_000);
    lchown(&root.join("dev/mmcblk0p2"), 0, 6);
    mknod(&root.join("run-initctl"), libc::S_IFIFO, 0o600, 0, 0);
    // Directories: sticky, odd modes, deep nesting, long names, many entries (htree).
    fs::create_dir_all(root.join("tmp")).unwrap();
    chmod(&root.join("tmp"), 0o1777);
    fs::create_dir_all(root.join("var/spool/cron/crontabs")).unwrap();
    lchown(&root.join("var/spool/cron/crontabs"), 0, 102);
    chmod(&root.join("var/spool/cron/crontabs"), 0o1730);
    let long = "n".repeat(255);
    w(
        &format!("deep/{long}/a/b/c/d/e/f/g/h/i/j/leaf"),
        b"leaf",
        0o444,
        0,
        0,
    );
    w("names/with space and ünïcödé ✓", b"u", 0o644, 0, 0);
    for i in 0..400 {
        w(
            &format!("many/file-{i:04}"),
            format!("{i}").as_bytes(),
            0o644,
            0,
            0,
        );
    }
    // Extended attributes: user, trusted, security, POSIX ACL.
    let x = root.join("home/pi/notes.txt");
    setxattr(&x, "user.comment", b"a note");
    setxattr(&x, "trusted.overlay", b"y");
    setxattr(
        &x,
        "security.capability",
        &[
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    setxattr(
        &root.join("var/spool/cron/crontabs"),
        "user.dir",
        b"dir attr",
    );
    setxattr(
        &root.join("home/pi/odd owner"),
        "system.posix_acl_access",
        &sample_acl(),
    );
    // Read-only dir with content (extraction must still be able to fill it).
    w("ro/inside", b"in", 0o644, 0, 0);
    chmod(&root.join("ro"), 0o555);
    // Times with nanoseconds, including before 1970 and after 2038; directories last.
    set_times(&root.join("etc/hostname"), 1_700_000_000, 123_456_789);
    set_times(&root.join("empty"), -86_400, 0);
    set_times(&root.join("usr/lib/big.bin"), 4_102_444_800, 5);
    set_times(&root.join("dangling"), 1_600_000_000, 0);
    for d in ["tmp", "ro", "dev", "usr/bin", "usr", "etc"] {
        set_times(&root.join(d), 1_650_000_000, 42);
    }
    set_times(root, 1_650_000_000, 0);
}

/// Builds an image like the tools do it: sfdisk on a file, mkfs.vfat + mcopy for the boot
/// partition (from `boot_dir`), mkfs.ext4 -d for the root (from `root_dir`).
pub fn build_image(
    img: &Path,
    boot_dir: &Path,
    root_dir: &Path,
    root_mib: u64,
    fat32: bool,
) -> (u64, u64) {
    build_image_with(
        img,
        boot_dir,
        root_dir,
        &Layout {
            root_mib,
            fat32,
            ..Layout::default()
        },
    )
}

/// How [`build_image_with`] lays out an image.
pub struct Layout<'a> {
    /// Size of the root partition in MiB.
    pub root_mib: u64,
    /// FAT32 (else FAT16) boot partition.
    pub fat32: bool,
    /// Partition table written by sfdisk: MBR (`dos`) or `gpt` (which keeps 1 MiB at the end
    /// for the backup GPT).
    pub gpt: bool,
    /// Options for mkfs.ext4 of the root (before `-d`).
    pub mkfs_root: &'a [&'a str],
}

impl Default for Layout<'_> {
    fn default() -> Self {
        Layout {
            root_mib: 64,
            fat32: true,
            gpt: false,
            mkfs_root: &["-I", "256"],
        }
    }
}

/// [`build_image`] with a partition table label and mkfs.ext4 options of choice.
/// Returns the byte offsets of the boot and root partitions.
pub fn build_image_with(
    img: &Path,
    boot_dir: &Path,
    root_dir: &Path,
    layout: &Layout<'_>,
) -> (u64, u64) {
    let Layout {
        root_mib,
        fat32,
        gpt,
        mkfs_root,
    } = *layout;
    let boot_mib = 64u64;
    let boot_start = 8192u64;
    let root_start = boot_start + boot_mib * 2048;
    let total = (root_start + root_mib * 2048 + if gpt { 2048 } else { 0 }) * 512;
    let f = fs::File::create(img).unwrap();
    f.set_len(total).unwrap();
    drop(f);
    let script = if gpt {
        format!(
            "label: gpt\nstart={boot_start}, size={}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=boot\nstart={root_start}, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n",
            boot_mib * 2048,
            root_mib * 2048
        )
    } else {
        format!(
            "label: dos\nstart={boot_start}, size={}, type=c\nstart={root_start}, type=83\n",
            boot_mib * 2048
        )
    };
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());

    let boot_img = img.with_extension("boot");
    let f = fs::File::create(&boot_img).unwrap();
    f.set_len(boot_mib << 20).unwrap();
    drop(f);
    let mut mkfs = Command::new("mkfs.vfat");
    if fat32 {
        mkfs.args(["-F", "32"]);
    }
    run(mkfs.args(["-n", "BOOTFS"]).arg(&boot_img));
    let entries: Vec<PathBuf> = fs::read_dir(boot_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut mcopy = Command::new("mcopy");
    mcopy
        .args(["-s", "-m", "-i"])
        .arg(&boot_img)
        .args(&entries)
        .arg("::/");
    run(&mut mcopy);

    let root_img = img.with_extension("root");
    let f = fs::File::create(&root_img).unwrap();
    f.set_len(root_mib << 20).unwrap();
    drop(f);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .args(mkfs_root)
        .arg("-d")
        .arg(root_dir)
        .arg(&root_img));
    fix_times(root_dir, &root_img);

    for (part, start) in [(&boot_img, boot_start), (&root_img, root_start)] {
        sdcard::dd_at(part, img, start);
        fs::remove_file(part).unwrap();
    }
    (boot_start * 512, root_start * 512)
}

/// mkfs.ext4 1.47.0 -d drops nanoseconds and the epoch bits of times past 2038: set the
/// `*_extra` fields with debugfs so the image carries exactly the staged times.
fn fix_times(root_dir: &Path, root_img: &Path) {
    let mut script = String::new();
    let mut stack = vec![root_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            let rel = p
                .strip_prefix(root_dir)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            for (field, sec, nsec) in [
                ("mtime", md.mtime(), md.mtime_nsec()),
                ("atime", md.atime(), md.atime_nsec()),
            ] {
                let epoch = ((sec - i64::from(sec as i32)) >> 32) & 3;
                if nsec != 0 || epoch != 0 {
                    script.push_str(&format!(
                        "sif \"/{rel}\" {field}_extra {}\n",
                        (nsec << 2) | epoch
                    ));
                }
            }
        }
    }
    // mkfs.ext4 gives the root directory its own creation time: copy the staged one.
    let md = fs::symlink_metadata(root_dir).unwrap();
    for (field, sec, nsec) in [
        ("mtime", md.mtime(), md.mtime_nsec()),
        ("atime", md.atime(), md.atime_nsec()),
    ] {
        let epoch = ((sec - i64::from(sec as i32)) >> 32) & 3;
        script.push_str(&format!(
            "sif / {field} @{sec}\nsif / {field}_extra {}\n",
            (nsec << 2) | epoch
        ));
    }
    let script_file = root_img.with_extension("times");
    fs::write(&script_file, script).unwrap();
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script_file)
        .arg(root_img)
        .output()
        .unwrap();
    let errors: Vec<_> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .map(str::to_owned)
        .collect();
    assert!(
        out.status.success() && errors.is_empty(),
        "debugfs: {errors:?}"
    );
    fs::remove_file(&script_file).unwrap();
}

/// Everything compared about one entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Facts {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content: Option<Vec<u8>>,
    pub target: Option<PathBuf>,
    pub mtime: (i64, i64),
    pub rdev: Option<(u32, u32)>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Walks `root` and returns facts per relative path plus the hardlink groups.
pub fn survey(
    root: &Path,
    with_owner: bool,
) -> (BTreeMap<PathBuf, Facts>, BTreeSet<BTreeSet<PathBuf>>) {
    let mut facts = BTreeMap::new();
    let mut by_inode: BTreeMap<(u64, u64), BTreeSet<PathBuf>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new("lost+found") {
                continue;
            }
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                "dir"
            } else if ft.is_file() {
                "file"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            if md.nlink() > 1 && !ft.is_dir() {
                by_inode
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .insert(rel.clone());
            }
            let rdev = (kind == "char" || kind == "block")
                .then(|| (libc::major(md.rdev()), libc::minor(md.rdev())));
            facts.insert(
                rel,
                Facts {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: if with_owner { md.uid() } else { 0 },
                    gid: if with_owner { md.gid() } else { 0 },
                    size: if kind == "dir" { 0 } else { md.len() },
                    content: (kind == "file").then(|| fs::read(&p).unwrap()),
                    target: (kind == "symlink").then(|| fs::read_link(&p).unwrap()),
                    mtime: (md.mtime(), md.mtime_nsec()),
                    rdev,
                    xattrs: xattrs(&p),
                },
            );
        }
    }
    (facts, by_inode.into_values().collect())
}

/// Asserts two surveys are equal, naming the first differing entry.
pub fn assert_same_tree(a: &Path, b: &Path, with_owner: bool) {
    let (fa, ha) = survey(a, with_owner);
    let (fb, hb) = survey(b, with_owner);
    let (ra, rb) = (
        fs::symlink_metadata(a).unwrap(),
        fs::symlink_metadata(b).unwrap(),
    );
    let root = |m: &fs::Metadata| {
        (
            m.mode(),
            with_owner.then(|| (m.uid(), m.gid())),
            m.mtime(),
            m.mtime_nsec(),
        )
    };
    assert_eq!(root(&ra), root(&rb), "the roots' own metadata differ");
    assert_eq!(xattrs(a), xattrs(b), "the roots' xattrs differ");
    let names_a: Vec<_> = fa.keys().collect();
    let names_b: Vec<_> = fb.keys().collect();
    assert_eq!(names_a, names_b, "entry names differ");
    for (k, va) in &fa {
        let vb = &fb[k];
        assert!(
            va == vb,
            "{} differs:\n  {}: {:?}\n  {}: {:?}",
            k.display(),
            a.display(),
            short(va),
            b.display(),
            short(vb)
        );
    }
    assert_eq!(ha, hb, "hardlink groups differ");
}

fn short(f: &Facts) -> String {
    format!(
        "{} mode {:o} owner {}:{} size {} mtime {:?} target {:?} rdev {:?} xattrs {:?} content-len {:?}",
        f.kind,
        f.mode,
        f.uid,
        f.gid,
        f.size,
        f.mtime,
        f.target,
        f.rdev,
        f.xattrs.keys().collect::<Vec<_>>(),
        f.content.as_ref().map(Vec::len)
    )
}

/// Runs one debugfs request against the ext4 file system at byte `offset` of `img`
/// (`-w` when `write`) and returns its output.
pub fn debugfs_at(img: &Path, offset: u64, request: &str, write: bool) -> String {
    let mut cmd = Command::new("debugfs");
    if write {
        cmd.arg("-w");
    }
    cmd.arg("-R")
        .arg(request)
        .arg(format!("{}?offset={offset}", img.display()));
    run(&mut cmd)
}
