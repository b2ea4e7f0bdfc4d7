//! Imports real images built with sfdisk, mkfs.vfat, mcopy and mkfs.ext4 -d and compares the
//! extracted trees with the staged ones; feeds bad images and checks errors leave nothing.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bakery_image::sample::{SampleKind, SampleSpec, build_sample_image};
use bakery_image::{ImageError, ImportPhase, ImportProgress, import_image};
use common::{Layout, assert_same_tree, build_image, build_image_with, stage_full_tree};

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn stage_boot(dir: &Path) {
    fs::create_dir_all(dir.join("overlays")).unwrap();
    fs::write(dir.join("config.txt"), b"arm_64bit=1\n").unwrap();
    fs::write(
        dir.join("cmdline.txt"),
        b"console=serial0,115200 root=PARTUUID=738a4d67-02 rootwait\n",
    )
    .unwrap();
    fs::write(dir.join("kernel8.img"), vec![0x5a; 700_000]).unwrap();
    fs::write(dir.join("overlays/vc4-kms-v3d.dtbo"), b"dtbo").unwrap();
    fs::write(dir.join("a long file name with spaces.txt"), b"lfn").unwrap();
    common::set_times(&dir.join("config.txt"), 1_700_000_000, 0);
}

#[test]
fn tool_built_image_imports_identically() {
    if !is_root() {
        eprintln!("skipped: staging owners and device nodes needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (boot, root) = (dir.path().join("boot-stage"), dir.path().join("root-stage"));
    stage_boot(&boot);
    stage_full_tree(&root);
    let img = dir.path().join("pi.img");
    build_image(&img, &boot, &root, 64, true);

    let dest = dir.path().join("imported");
    let mut reports: Vec<ImportProgress> = Vec::new();
    let summary = import_image(&img, &dest, &mut |p| reports.push(p)).unwrap();

    assert_eq!(summary.boot_fs, "FAT32");
    assert_eq!(summary.boot_files, 5);
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    assert_eq!(summary.hardlinks, 3, "{summary:?}");
    assert_eq!(summary.devices, 3);
    assert_eq!(summary.fifos, 1);
    assert_eq!(summary.symlinks, 3);
    assert!(summary.xattrs >= 5, "{summary:?}");
    assert_same_tree(&root, &dest.join("root"), true);

    for rel in [
        "config.txt",
        "cmdline.txt",
        "kernel8.img",
        "overlays/vc4-kms-v3d.dtbo",
        "a long file name with spaces.txt",
    ] {
        assert_eq!(
            fs::read(boot.join(rel)).unwrap(),
            fs::read(dest.join("boot").join(rel)).unwrap(),
            "{rel}"
        );
    }
    let boot_mtime = fs::metadata(dest.join("boot/config.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    // mtools stores the local time of the stage; the test machine runs in UTC.
    assert_eq!(boot_mtime.mtime(), 1_700_000_000);

    // The sparse file stays sparse.
    let sparse = fs::metadata(dest.join("root/var/sparse")).unwrap();
    assert_eq!(sparse.len(), 3 << 20);
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse file was filled: {} blocks",
        sparse.blocks()
    );

    // Progress: phases in order, root totals reached.
    let last_root = reports
        .iter()
        .rfind(|p| p.phase == ImportPhase::Root)
        .unwrap();
    assert_eq!(last_root.files_done, last_root.files_total);
    assert_eq!(last_root.bytes_done, last_root.bytes_total);
    assert_eq!(last_root.bytes_total, summary.bytes);
    assert!(reports.iter().any(|p| p.phase == ImportPhase::Boot));
    assert_eq!(reports.last().unwrap().phase, ImportPhase::Finish);
}

#[test]
fn fat16_boot_partition_imports() {
    let dir = tempfile::tempdir().unwrap();
    let (boot, root) = (dir.path().join("boot-stage"), dir.path().join("root-stage"));
    stage_boot(&boot);
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), b"pi\n").unwrap();
    let img = dir.path().join("pi.img");
    build_image(&img, &boot, &root, 16, false);
    let dest = dir.path().join("imported");
    let summary = import_image(&img, &dest, &mut |_| {}).unwrap();
    assert_eq!(summary.boot_fs, "FAT16");
    assert_eq!(fs::read(dest.join("root/etc/hostname")).unwrap(), b"pi\n");
    assert_eq!(
        fs::read(dest.join("boot/overlays/vc4-kms-v3d.dtbo")).unwrap(),
        b"dtbo"
    );
}

#[test]
fn sample_image_imports_and_boot_files_equal_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("sample.img");
    let spec = SampleSpec::default();
    build_sample_image(&img, &spec).unwrap();
    let dest = dir.path().join("bakeform");
    let summary = import_image(&img, &dest, &mut |_| {}).unwrap();
    for (name, data) in &spec.boot_files {
        assert_eq!(
            &fs::read(dest.join("boot").join(name)).unwrap(),
            data,
            "{name}"
        );
    }
    for (name, data) in &spec.root_files {
        assert_eq!(
            &fs::read(dest.join("root").join(name)).unwrap(),
            data,
            "{name}"
        );
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for node in &spec.root_nodes {
        let p = dest.join("root").join(&node.path);
        let device = matches!(
            node.kind,
            SampleKind::CharDevice { .. } | SampleKind::BlockDevice { .. }
        );
        if device && !is_root() {
            // Documented policy: skipped and listed in the warnings.
            assert!(!p.exists());
            let line = summary
                .warnings
                .iter()
                .find(|w| w.starts_with("device nodes skipped"))
                .unwrap();
            assert!(line.contains(&format!("/{}", node.path)), "{line}");
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", node.path));
        match &node.kind {
            SampleKind::Dir => assert!(md.is_dir()),
            SampleKind::File(data) => assert_eq!(&fs::read(&p).unwrap(), data),
            SampleKind::Symlink(t) => assert_eq!(fs::read_link(&p).unwrap(), Path::new(t)),
            SampleKind::Hardlink(t) => {
                let other = fs::metadata(dest.join("root").join(t)).unwrap();
                assert_eq!(
                    md.ino(),
                    other.ino(),
                    "{} is not a hardlink of {t}",
                    node.path
                );
            }
            SampleKind::Fifo => assert!(md.file_type().is_fifo()),
            SampleKind::CharDevice { major, minor } | SampleKind::BlockDevice { major, minor } => {
                assert_eq!(
                    (libc::major(md.rdev()), libc::minor(md.rdev())),
                    (*major, *minor),
                    "{}",
                    node.path
                );
            }
        }
        if !matches!(node.kind, SampleKind::Symlink(_) | SampleKind::Hardlink(_)) {
            assert_eq!(md.mode() & 0o7777, node.mode, "{}", node.path);
            if is_root() {
                assert_eq!((md.uid(), md.gid()), (node.uid, node.gid), "{}", node.path);
            }
        }
        assert_eq!(
            md.mtime(),
            bakery_image::sample::SAMPLE_MTIME,
            "{}",
            node.path
        );
    }
    assert_eq!(summary.devices, if is_root() { 3 } else { 0 });
    assert_eq!(summary.hardlinks, 1);
    if !is_root() {
        assert!(
            summary
                .warnings
                .iter()
                .any(|w| w.starts_with("owners not preserved")),
            "{:?}",
            summary.warnings
        );
    }
}

fn assert_rejected(img: &Path, expect: &str) -> ImageError {
    let dest = img.with_extension("dest");
    let err = import_image(img, &dest, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains(expect),
        "expected {expect:?} in {err}"
    );
    assert!(!dest.exists(), "{} left behind after {err}", dest.display());
    err
}

#[test]
fn bad_images_are_rejected_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let empty = d.join("empty.img");
    fs::write(&empty, b"").unwrap();
    assert!(matches!(
        assert_rejected(&empty, "is empty"),
        ImageError::EmptyImage { .. }
    ));

    let random = d.join("random.img");
    fs::write(
        &random,
        bakery_image::sample::pseudo_random("noise", 3 << 20),
    )
    .unwrap();
    assert_rejected(&random, "no partition table");

    let tiny = d.join("tiny.img");
    fs::write(&tiny, b"short").unwrap();
    assert_rejected(&tiny, "no partition table");

    // An MBR with the signature but no partitions.
    let bare = d.join("bare.img");
    let f = fs::File::create(&bare).unwrap();
    f.set_len(4 << 20).unwrap();
    f.write_all_at(&[0x55, 0xAA], 510).unwrap();
    assert_rejected(&bare, "lists no partitions");

    // A used entry starting at sector 0, over the table itself (mbrman panicked on this).
    let at_zero = d.join("at-zero.img");
    let f = fs::File::create(&at_zero).unwrap();
    f.set_len(4 << 20).unwrap();
    let mut entry = [0u8; 16];
    entry[4] = 0x0c;
    entry[12..16].copy_from_slice(&2048u32.to_le_bytes());
    f.write_all_at(&entry, 446).unwrap();
    f.write_all_at(&[0x55, 0xAA], 510).unwrap();
    assert_rejected(&at_zero, "partition 1 starts at sector 0");

    // A good image whose partition 2 holds no ext4, and one whose boot holds garbage.
    let good = d.join("good.img");
    build_sample_image(&good, &SampleSpec::default()).unwrap();
    let (boot_start, root_start) = starts(&good);
    let no_ext4 = d.join("no-ext4.img");
    fs::copy(&good, &no_ext4).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&no_ext4).unwrap();
    f.write_all_at(&[0u8; 4096], root_start).unwrap();
    assert!(matches!(
        assert_rejected(&no_ext4, "partition 2 is not ext4"),
        ImageError::RootNotExt4 { index: 2, .. }
    ));

    let no_fat = d.join("no-fat.img");
    fs::copy(&good, &no_fat).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&no_fat).unwrap();
    f.write_all_at(&[0u8; 4096], boot_start).unwrap();
    assert_rejected(&no_fat, "partition 1 is not FAT or ext4");

    // Truncated: cut the root partition short.
    let cut = d.join("cut.img");
    fs::copy(&good, &cut).unwrap();
    let full = fs::metadata(&cut).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(full - (1 << 20))
        .unwrap();
    let err = assert_rejected(&cut, "image truncated: partition 2 ends at byte");
    assert!(
        err.to_string()
            .contains(&format!("but the file has {}", full - (1 << 20))),
        "{err}"
    );

    // A sparse 2 TB file with only the header of the good image.
    let huge = d.join("huge.img");
    let mut header = vec![0u8; 1 << 20];
    fs::File::open(&good)
        .unwrap()
        .read_exact_at(&mut header, 0)
        .unwrap();
    let f = fs::File::create(&huge).unwrap();
    f.write_all_at(&header, 0).unwrap();
    f.set_len(2 << 40).unwrap();
    let started = std::time::Instant::now();
    assert_rejected(&huge, "partition 1 is not FAT or ext4");
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );

    // A 2 TB sparse file with nothing at all.
    let nothing = d.join("nothing.img");
    fs::File::create(&nothing)
        .unwrap()
        .set_len(2 << 40)
        .unwrap();
    assert_rejected(&nothing, "no partition table");

    // A destination that exists is refused and left alone.
    let existing = d.join("existing");
    fs::create_dir(&existing).unwrap();
    fs::write(existing.join("keep"), b"k").unwrap();
    let err = import_image(&good, &existing, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImageError::DestinationExists { .. }), "{err}");
    assert!(existing.join("keep").exists());

    // Corruption inside the root tree (found only while extracting) also leaves nothing.
    let corrupt = d.join("corrupt.img");
    fs::copy(&good, &corrupt).unwrap();
    corrupt_root_directory(&corrupt, root_start);
    let dest = corrupt.with_extension("dest");
    let err = import_image(&corrupt, &dest, &mut |_| {}).unwrap_err();
    assert!(!dest.exists(), "left behind after {err}");
}

/// Byte offsets of partitions 1 and 2 from the MBR.
fn starts(img: &Path) -> (u64, u64) {
    let mut mbr = [0u8; 512];
    fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut mbr, 0)
        .unwrap();
    let lba = |i: usize| {
        u64::from(u32::from_le_bytes(
            mbr[446 + 16 * i + 8..446 + 16 * i + 12].try_into().unwrap(),
        ))
    };
    (lba(0) * 512, lba(1) * 512)
}

/// Overwrites the root directory's first data block with garbage (found via debugfs).
fn corrupt_root_directory(img: &Path, root_start: u64) {
    let part = img.with_extension("part");
    let mut data = vec![0u8; 64 << 20];
    let f = fs::File::open(img).unwrap();
    let n = f.read_at(&mut data, root_start).unwrap();
    data.truncate(n);
    fs::write(&part, &data).unwrap();
    let out = common::run(
        std::process::Command::new("debugfs")
            .arg("-R")
            .arg("blocks /etc")
            .arg(&part),
    );
    let block: u64 = out.split_whitespace().next().unwrap().parse().unwrap();
    fs::remove_file(&part).unwrap();
    let garbage = bakery_image::sample::pseudo_random("dir", 4096);
    fs::OpenOptions::new()
        .write(true)
        .open(img)
        .unwrap()
        .write_all_at(&garbage, root_start + block * 4096)
        .unwrap();
}

/// Stages a root tree whose small entries mkfs.ext4 -O inline_data keeps inside their
/// inodes: files of 0 to 150 bytes (two with xattrs, `trusted.` only as root; one setuid,
/// one hardlinked), small
/// directories, a directory too big to be inline, short and 100-byte symlinks.
fn stage_inline_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/small")).unwrap();
    fs::create_dir_all(root.join("etc/empty")).unwrap();
    fs::create_dir_all(root.join("usr/share/many")).unwrap();
    for n in [0usize, 1, 59, 60, 61, 150] {
        let data = bakery_image::sample::pseudo_random(&format!("tiny{n}"), n);
        fs::write(root.join(format!("etc/tiny{n}")), data).unwrap();
    }
    fs::write(root.join("etc/small/a"), b"a\n").unwrap();
    fs::write(root.join("etc/small/b"), b"").unwrap();
    for i in 0..200 {
        fs::write(
            root.join(format!("usr/share/many/entry-{i:03}")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    common::setxattr(
        &root.join("etc/tiny59"),
        "user.note",
        b"inline and annotated",
    );
    if is_root() {
        common::setxattr(&root.join("etc/tiny1"), "trusted.k", b"v");
    }
    fs::set_permissions(
        root.join("etc/tiny60"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("etc/tiny61"), root.join("etc/small/tiny61-link")).unwrap();
    std::os::unix::fs::symlink("tiny1", root.join("etc/short-link")).unwrap();
    std::os::unix::fs::symlink(
        format!("/usr/share/many/{}", "x".repeat(84)),
        root.join("etc/link-100"),
    )
    .unwrap();
    for p in [
        "etc/small",
        "etc/empty",
        "usr/share/many",
        "usr/share",
        "usr",
        "etc",
    ] {
        common::set_times(&root.join(p), 1_700_000_000, 7);
    }
    common::set_times(root, 1_700_000_000, 0);
}

fn build_inline_image(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, u64) {
    let (boot, root) = (dir.join("boot-stage"), dir.join("root-stage"));
    stage_boot(&boot);
    stage_inline_tree(&root);
    let img = dir.join("inline.img");
    let (_, root_start) = build_image_with(
        &img,
        &boot,
        &root,
        &Layout {
            root_mib: 16,
            mkfs_root: &["-I", "512", "-O", "inline_data"],
            ..Layout::default()
        },
    );
    (img, root, root_start)
}

#[test]
fn inline_data_image_imports_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (img, root, root_start) = build_inline_image(dir.path());
    // The image really keeps these entries inline (flag 0x10000000), the big directory not.
    for (path, inline) in [
        ("/etc/tiny0", true),
        ("/etc/tiny59", true),
        ("/etc/tiny61", true),
        ("/etc/tiny150", true),
        ("/etc/small", true),
        ("/etc/link-100", true),
        ("/usr/share/many", false),
    ] {
        let stat = common::debugfs_at(&img, root_start, &format!("stat {path}"), false);
        let flags = stat
            .split("Flags: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap();
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
        assert_eq!(flags & 0x1000_0000 != 0, inline, "{path}: flags {flags:#x}");
    }

    let dest = dir.path().join("imported");
    let summary = import_image(&img, &dest, &mut |_| {}).unwrap();
    // Not as root, mkfs.ext4's own root and lost+found owners cannot be kept.
    assert!(
        summary
            .warnings
            .iter()
            .all(|w| !is_root() && w.starts_with("owners not preserved")),
        "{:?}",
        summary.warnings
    );
    assert_eq!(summary.hardlinks, 1, "{summary:?}");
    assert_eq!(summary.symlinks, 2, "{summary:?}");
    assert_eq!(
        summary.xattrs,
        if is_root() { 2 } else { 1 },
        "system.data must not be copied: {summary:?}"
    );
    assert_same_tree(&root, &dest.join("root"), true);
    assert_eq!(
        common::xattrs(&dest.join("root/etc/tiny59"))
            .keys()
            .collect::<Vec<_>>(),
        vec!["user.note"]
    );
}

#[test]
fn corrupt_inline_size_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _, root_start) = build_inline_image(dir.path());
    common::debugfs_at(&img, root_start, "sif /etc/tiny61 size 500", true);
    let err = assert_rejected(&img, "reading /etc/tiny61 in the ext4 partition: inode ");
    assert!(
        err.to_string()
            .contains("claims 500 bytes of inline data but holds only 61"),
        "{err}"
    );
}
