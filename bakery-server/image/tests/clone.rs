//! Clones real trees (every file type, owners, xattrs, hardlinks, holes) with the strategy
//! detected here and checks the clone is identical; failures leave nothing behind.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use bakery_image::{CloneStrategy, ImageError, clone_tree, detect_strategy, import_image, sample};
use common::{assert_same_tree, stage_full_tree};

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn detected_strategy_clones_an_identical_tree() {
    if !is_root() {
        eprintln!("skipped: staging owners and device nodes needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("golden");
    stage_full_tree(&src);
    let strategy = detect_strategy(dir.path());
    let probes: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("probe"))
        .collect();
    assert!(probes.is_empty(), "detect_strategy left {probes:?}");
    let dst = dir.path().join("pi-1");
    let stats = clone_tree(&src, &dst, strategy).unwrap();
    assert_same_tree(&src, &dst, true);
    let (a, b) = (
        fs::symlink_metadata(&src).unwrap(),
        fs::symlink_metadata(&dst).unwrap(),
    );
    assert_eq!(
        (a.mode(), a.uid(), a.gid(), a.mtime(), a.mtime_nsec()),
        (b.mode(), b.uid(), b.gid(), b.mtime(), b.mtime_nsec())
    );
    assert_eq!(stats.hardlinks, 3);
    assert_eq!(stats.symlinks, 3);
    assert_eq!(stats.specials, 4);
    // The sparse file keeps its holes.
    let sparse = fs::metadata(dst.join("var/sparse")).unwrap();
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "{} blocks",
        sparse.blocks()
    );
    // Hardlinks stay inside the clone.
    assert_ne!(
        fs::metadata(dst.join("var/a")).unwrap().ino(),
        fs::metadata(src.join("var/a")).unwrap().ino()
    );
}

#[test]
fn copy_strategy_clones_an_imported_sample_as_any_user() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("s.img");
    sample::build_sample_image(&img, &sample::SampleSpec::default()).unwrap();
    let golden = dir.path().join("bakeform");
    import_image(&img, &golden, &mut |_| {}).unwrap();
    let dst = dir.path().join("clone");
    let stats = clone_tree(&golden.join("root"), &dst, CloneStrategy::Copy).unwrap();
    assert_eq!(stats.strategy, CloneStrategy::Copy);
    assert_same_tree(&golden.join("root"), &dst, true);
    assert!(stats.files > 5 && stats.bytes > 100_000, "{stats:?}");
}

#[test]
fn failed_clone_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("golden");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/f"), b"data").unwrap();
    let dst = dir.path().join("clone");

    // Missing source.
    let err = clone_tree(&dir.path().join("missing"), &dst, CloneStrategy::Copy).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!dst.exists());

    // Existing destination is refused and kept.
    fs::create_dir(&dst).unwrap();
    let err = clone_tree(&src, &dst, CloneStrategy::Copy).unwrap_err();
    assert!(matches!(err, ImageError::DestinationExists { .. }), "{err}");
    assert!(dst.exists());
    fs::remove_dir(&dst).unwrap();

    // A failure midway: the destination sits so deep that a directory with a long name
    // passes PATH_MAX while the entries before it were already cloned (entries are created
    // relative to their directory's fd, but each directory is opened by its path).
    fs::write(src.join("a/first"), b"cloned before the failure").unwrap();
    let long = src.join("a").join("n".repeat(250));
    fs::create_dir(&long).unwrap();
    fs::write(long.join("f"), b"too deep for the destination").unwrap();
    let mut deep = dir.path().to_path_buf();
    while deep.as_os_str().len() < 3950 {
        deep.push("p".repeat(200));
    }
    fs::create_dir_all(&deep).unwrap();
    let deep_dst = deep.join("clone");
    let err = clone_tree(&src, &deep_dst, CloneStrategy::Copy).unwrap_err();
    assert!(err.to_string().contains("nnnn"), "{err}");
    assert!(!deep_dst.exists(), "clone left behind after {err}");

    // Unreadable source file (only meaningful when not root: root reads everything).
    if !is_root() {
        let unreadable = src.join("a/secret");
        fs::write(&unreadable, b"s").unwrap();
        fs::set_permissions(
            &unreadable,
            std::os::unix::fs::PermissionsExt::from_mode(0o000),
        )
        .unwrap();
        let err = clone_tree(&src, &dst, CloneStrategy::Copy).unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
        assert!(!dst.exists(), "clone left behind after {err}");
    }
}

#[test]
fn remove_tree_removes_clones_with_read_only_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("g");
    fs::create_dir_all(src.join("ro/sub")).unwrap();
    fs::write(src.join("ro/sub/f"), b"x").unwrap();
    fs::set_permissions(
        src.join("ro"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    let dst = dir.path().join("c");
    clone_tree(&src, &dst, CloneStrategy::Copy).unwrap();
    bakery_image::remove_tree(&dst).unwrap();
    assert!(!dst.exists());
}

#[test]
fn modes_the_umask_would_change_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("g");
    fs::create_dir(&src).unwrap();
    let modes = [0o666, 0o777, 0o4755, 0o2711, 0o1777, 0o000, 0o644, 0o400];
    for m in modes {
        let p = src.join(format!("f{m:o}"));
        fs::write(&p, b"x").unwrap();
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap();
    }
    let dst = dir.path().join("c");
    clone_tree(&src, &dst, CloneStrategy::Copy).unwrap();
    for m in modes {
        let got = fs::symlink_metadata(dst.join(format!("f{m:o}")))
            .unwrap()
            .mode();
        assert_eq!(got & 0o7777, m, "mode of f{m:o}");
    }
}
