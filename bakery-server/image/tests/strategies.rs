//! The clone strategies on the file systems they are for: a real btrfs (subvolume snapshots,
//! the reflink fallback) and a real XFS (reflinks), each loop-mounted from a sparse image file.
//! Skipped with a printed reason where this machine cannot loop-mount (see `common::loopfs`).

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use bakery_image::{
    CloneStats, CloneStrategy, SampleSpec, build_sample_image, clone_tree, detect_strategy,
    import_image, remove_tree,
};
use common::loopfs::{FsKind, LoopFs, btrfs_subvolumes, extents, shared_bytes};
use common::{assert_same_tree, stage_full_tree};

/// Inode number of every btrfs subvolume's root directory.
const SUBVOLUME_INO: u64 = 256;

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

/// A sample image with one extra 8 MiB file (for extent checks), imported into `dir/bakeform`;
/// the image itself is built in `image_dir`. Returns the golden root.
fn import_sample(image_dir: &Path, dir: &Path) -> std::path::PathBuf {
    let img = image_dir.join("sample.img");
    let mut spec = SampleSpec::default();
    spec.root_files.push((
        "usr/lib/big.bin".into(),
        bakery_image::sample::pseudo_random("big", 8 << 20),
    ));
    build_sample_image(&img, &spec).unwrap();
    let bakeform = dir.join("bakeform");
    import_image(&img, &bakeform, &mut |_| {}).unwrap();
    bakeform.join("root")
}

#[test]
fn btrfs_imports_into_a_subvolume_and_bakes_by_snapshot() {
    let Some(lfs) = LoopFs::mount(FsKind::Btrfs, 512) else {
        return;
    };
    let mnt = lfs.path();
    assert_eq!(detect_strategy(mnt), CloneStrategy::Snapshot);

    let golden = import_sample(mnt, mnt);
    assert_eq!(
        ino(&golden),
        SUBVOLUME_INO,
        "the golden root is no subvolume"
    );
    assert_eq!(btrfs_subvolumes(mnt), vec!["bakeform/root".to_owned()]);

    let pi = mnt.join("pi-1");
    let started = Instant::now();
    let stats = clone_tree(&golden, &pi, CloneStrategy::Snapshot).unwrap();
    let took = started.elapsed();
    assert_eq!(
        stats,
        CloneStats {
            strategy: CloneStrategy::Snapshot,
            files: 0,
            dirs: 0,
            symlinks: 0,
            hardlinks: 0,
            specials: 0,
            bytes: 0,
        },
        "a snapshot walks nothing"
    );
    assert!(took < Duration::from_secs(2), "snapshot took {took:?}");
    assert_eq!(ino(&pi), SUBVOLUME_INO, "the clone is no snapshot");
    assert_same_tree(&golden, &pi, true);
    // The snapshot shares every data extent with the golden root.
    let big = Path::new("usr/lib/big.bin");
    assert_eq!(extents(&golden.join(big)), extents(&pi.join(big)));
    assert!(shared_bytes(&pi.join(big)) >= 8 << 20);

    // Writes into the clone stay in the clone.
    fs::write(pi.join("etc/hostname"), "pi-1\n").unwrap();
    fs::write(pi.join("new-file"), "only in pi-1").unwrap();
    fs::remove_file(pi.join("etc/fstab")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(pi.join(big))
        .unwrap()
        .write_all_at(&[0u8; 4096], 0)
        .unwrap();
    assert_eq!(
        fs::read_to_string(golden.join("etc/hostname")).unwrap(),
        "raspberrypi\n"
    );
    assert!(!golden.join("new-file").exists());
    assert!(golden.join("etc/fstab").is_file());
    assert_eq!(
        fs::read(golden.join(big)).unwrap(),
        bakery_image::sample::pseudo_random("big", 8 << 20)
    );
    let second = mnt.join("pi-2");
    clone_tree(&golden, &second, CloneStrategy::Snapshot).unwrap();
    assert_same_tree(&golden, &second, true);

    // Unbake as the server does it: rename into the trash, then remove the tree.
    fs::create_dir(mnt.join("trash")).unwrap();
    let trashed = mnt.join("trash/pi-1");
    fs::rename(&pi, &trashed).unwrap();
    assert_eq!(ino(&trashed), SUBVOLUME_INO);
    remove_tree(&trashed).unwrap();
    assert!(!trashed.exists());
    remove_tree(&second).unwrap();
    assert_eq!(btrfs_subvolumes(mnt), vec!["bakeform/root".to_owned()]);
}

#[test]
fn btrfs_snapshot_of_a_plain_directory_falls_back_to_reflinks() {
    let Some(lfs) = LoopFs::mount(FsKind::Btrfs, 512) else {
        return;
    };
    let mnt = lfs.path();
    let golden = mnt.join("golden");
    stage_full_tree(&golden);
    assert_ne!(ino(&golden), SUBVOLUME_INO);
    let pi = mnt.join("pi-1");
    let stats = clone_tree(&golden, &pi, CloneStrategy::Snapshot).unwrap();
    assert_eq!(stats.strategy, CloneStrategy::Reflink);
    assert!(stats.files > 400 && stats.bytes > 3_000_000, "{stats:?}");
    assert_eq!((stats.hardlinks, stats.symlinks, stats.specials), (3, 3, 4));
    assert_ne!(ino(&pi), SUBVOLUME_INO);
    assert_same_tree(&golden, &pi, true);
    assert_reflinked(&golden, &pi);
    assert!(btrfs_subvolumes(mnt).is_empty());
}

#[test]
fn xfs_clones_by_reflink_sharing_extents_with_copy_on_write() {
    let Some(lfs) = LoopFs::mount(FsKind::Xfs, 512) else {
        return;
    };
    let mnt = lfs.path();
    assert_eq!(detect_strategy(mnt), CloneStrategy::Reflink);
    // XFS keeps device numbers in 32 bits (minor < 2^18): the staged `dev/big` (minor
    // 300 000) cannot exist there, mknod says EINVAL. Stage elsewhere without it, copy in.
    let staged = tempfile::tempdir().unwrap();
    stage_full_tree(&staged.path().join("t"));
    fs::remove_file(staged.path().join("t/dev/big")).unwrap();
    let golden = mnt.join("golden");
    let copied = clone_tree(&staged.path().join("t"), &golden, CloneStrategy::Copy).unwrap();
    assert_eq!(copied.strategy, CloneStrategy::Copy);
    // Not compared with the staged tree: XFS lists a POSIX ACL twice to root, as
    // `system.posix_acl_access` and as its own `trusted.SGI_ACL_FILE`.

    let pi = mnt.join("pi-1");
    let stats = clone_tree(&golden, &pi, CloneStrategy::Reflink).unwrap();
    assert_eq!(stats.strategy, CloneStrategy::Reflink);
    assert_eq!((stats.hardlinks, stats.symlinks, stats.specials), (3, 3, 3));
    assert_same_tree(&golden, &pi, true);
    assert_reflinked(&golden, &pi);
    remove_tree(&pi).unwrap();
    assert!(!pi.exists());
}

/// The clone's data shares the source's extents; writing into it copies on write, leaving
/// the source as it was; holes stay holes.
fn assert_reflinked(golden: &Path, pi: &Path) {
    let big = Path::new("usr/lib/big.bin");
    let (src, dst) = (extents(&golden.join(big)), extents(&pi.join(big)));
    assert!(!src.is_empty());
    assert_eq!(
        src.iter()
            .map(|e| (e.logical, e.physical))
            .collect::<Vec<_>>(),
        dst.iter()
            .map(|e| (e.logical, e.physical))
            .collect::<Vec<_>>(),
        "the clone's extents are not the source's"
    );
    assert!(dst.iter().all(|e| e.shared()), "{dst:?}");
    let len = fs::metadata(golden.join(big)).unwrap().len();
    assert_eq!(shared_bytes(&pi.join(big)), len.next_multiple_of(4096));

    let before = fs::read(golden.join(big)).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(pi.join(big))
        .unwrap()
        .write_all_at(&[0xEE; 4096], 0)
        .unwrap();
    assert_eq!(fs::read(golden.join(big)).unwrap(), before);
    let mut after = before.clone();
    after[..4096].fill(0xEE);
    assert_eq!(fs::read(pi.join(big)).unwrap(), after);
    let moved = extents(&pi.join(big));
    assert_ne!(moved[0].physical, src[0].physical, "no copy on write");
    assert!(
        moved.iter().any(|e| e.shared()),
        "the untouched rest should still be shared: {moved:?}"
    );

    // The sparse file: 3 MiB long, one 4 KiB block of data at 1 MiB.
    let sparse = pi.join("var/sparse");
    let md = fs::metadata(&sparse).unwrap();
    assert_eq!(md.len(), 3 << 20);
    assert!(md.blocks() * 512 < 1 << 20, "{} blocks", md.blocks());
    let data = extents(&sparse);
    assert!(
        data.iter()
            .all(|e| e.logical >= 1 << 20 && e.logical + e.length <= (1 << 20) + (1 << 16)),
        "data outside the written block: {data:?}"
    );
}

/// The import copies file data with copy_file_range; on btrfs and XFS the kernel clones
/// block-aligned ranges between files of one file system instead of copying them. An image
/// with a 4 KiB-block ext4 (Raspberry Pi OS, the sample) lying on the same file system as the
/// golden tree thus shares all its file data with the golden tree; from elsewhere, nothing.
#[test]
fn import_reflinks_file_data_from_an_image_on_the_same_file_system() {
    for kind in [FsKind::Btrfs, FsKind::Xfs] {
        let Some(lfs) = LoopFs::mount(kind, 512) else {
            continue;
        };
        let mnt = lfs.path();
        let golden = import_sample(mnt, mnt);
        let same = shared_bytes(&golden.join("usr/lib/big.bin"));
        let elsewhere = tempfile::tempdir().unwrap();
        let other = mnt.join("other");
        fs::create_dir(&other).unwrap();
        let apart = shared_bytes(&import_sample(elsewhere.path(), &other).join("usr/lib/big.bin"));
        eprintln!(
            "{kind:?}: 8 MiB file imported: {same} bytes shared with an image on the same fs, {apart} with one elsewhere"
        );
        assert_eq!((same, apart), (8 << 20, 0), "{kind:?}");
    }
}
