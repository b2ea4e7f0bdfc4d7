//! Imports GPT images written by sfdisk (`label: gpt`) and checks the GPT CRC32s: a damaged
//! primary GPT falls back to the backup one, damage to both is rejected naming the CRC.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, symlink};
use std::path::{Path, PathBuf};

use bakery_image::{ImageError, import_image};
use common::{Layout, assert_same_tree, build_image_with};

const SECTOR: u64 = 512;

/// A GPT image (boot FAT32, root ext4) built by the real tools from small staged trees.
struct Gpt {
    _dir: tempfile::TempDir,
    img: PathBuf,
    root_stage: PathBuf,
}

fn build() -> Gpt {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot-stage");
    let root = dir.path().join("root-stage");
    fs::create_dir_all(&boot).unwrap();
    fs::write(boot.join("config.txt"), b"arm_64bit=1\n").unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), b"pi\n").unwrap();
    fs::write(root.join("etc/big"), vec![7u8; 300_000]).unwrap();
    symlink("hostname", root.join("etc/name")).unwrap();
    let img = dir.path().join("gpt.img");
    build_image_with(
        &img,
        &boot,
        &root,
        &Layout {
            root_mib: 16,
            gpt: true,
            ..Layout::default()
        },
    );
    Gpt {
        img,
        root_stage: root,
        _dir: dir,
    }
}

fn read_at(img: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

fn u32_at(img: &Path, offset: u64) -> u32 {
    u32::from_le_bytes(read_at(img, offset, 4).try_into().unwrap())
}

fn u64_at(img: &Path, offset: u64) -> u64 {
    u64::from_le_bytes(read_at(img, offset, 8).try_into().unwrap())
}

/// Inverts the byte at `offset`.
fn flip(img: &Path, offset: u64) {
    let b = read_at(img, offset, 1)[0];
    fs::OpenOptions::new()
        .write(true)
        .open(img)
        .unwrap()
        .write_all_at(&[!b], offset)
        .unwrap();
}

/// Byte offsets of the primary and backup GPT headers and of their entry arrays.
fn headers(img: &Path) -> [(u64, u64); 2] {
    let backup = fs::metadata(img).unwrap().len() - SECTOR;
    [SECTOR, backup].map(|h| {
        assert_eq!(read_at(img, h, 8), b"EFI PART", "no GPT header at byte {h}");
        (h, u64_at(img, h + 72) * SECTOR)
    })
}

fn import_ok(g: &Gpt, name: &str) {
    let dest = g.img.with_extension(name);
    let summary = import_image(&g.img, &dest, &mut |_| {}).unwrap();
    assert_eq!(summary.boot_fs, "FAT32");
    assert_eq!(summary.boot_files, 1);
    assert_same_tree(&g.root_stage, &dest.join("root"), true);
    fs::remove_dir_all(&dest).unwrap();
}

fn import_err(g: &Gpt) -> String {
    let dest = g.img.with_extension("dest");
    let err = import_image(&g.img, &dest, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImageError::NoPartitionTable { .. }), "{err}");
    assert!(!dest.exists(), "left behind after {err}");
    err.to_string()
}

#[test]
fn sfdisk_gpt_image_imports() {
    let g = build();
    // sfdisk wrote both GPTs and they verify (else the test image proves nothing).
    let [(primary, _), (backup, _)] = headers(&g.img);
    assert_eq!(
        u64_at(&g.img, primary + 32),
        backup / SECTOR,
        "AlternateLBA"
    );
    import_ok(&g, "plain");
}

#[test]
fn damaged_primary_gpt_falls_back_to_the_backup() {
    let g = build();
    let [(primary, primary_entries), _] = headers(&g.img);
    // Disk GUID in the primary header: header CRC32 no longer matches.
    flip(&g.img, primary + 56);
    import_ok(&g, "header");
    flip(&g.img, primary + 56);
    // Name of partition 1 in the primary entry array: the entry array CRC32 fails.
    flip(&g.img, primary_entries + 56);
    import_ok(&g, "entries");
    // The whole primary GPT gone.
    fs::OpenOptions::new()
        .write(true)
        .open(&g.img)
        .unwrap()
        .write_all_at(&[0u8; 512 * 33], primary)
        .unwrap();
    import_ok(&g, "zeroed");
}

#[test]
fn both_headers_damaged_is_an_error_naming_the_header_crc() {
    let g = build();
    let [(primary, _), (backup, _)] = headers(&g.img);
    let stored = [u32_at(&g.img, primary + 16), u32_at(&g.img, backup + 16)];
    flip(&g.img, primary + 56);
    flip(&g.img, backup + 56);
    let msg = import_err(&g);
    for (which, (header, stored)) in ["primary GPT (sector 1)", "backup GPT (sector"]
        .iter()
        .zip([primary, backup].iter().zip(stored))
    {
        let mut bytes = read_at(&g.img, *header, 92);
        bytes[16..20].fill(0);
        let found = crc32fast::hash(&bytes);
        assert_ne!(found, stored);
        let expect =
            format!("GPT header CRC32 mismatch: expected {stored:#010x}, found {found:#010x}");
        assert!(msg.contains(which), "{which} missing in {msg}");
        assert!(msg.contains(&expect), "{expect:?} missing in {msg}");
    }
}

#[test]
fn both_entry_arrays_damaged_is_an_error_naming_the_entry_crc() {
    let g = build();
    let [(primary, primary_entries), (backup, backup_entries)] = headers(&g.img);
    assert_ne!(primary_entries, backup_entries);
    flip(&g.img, primary_entries + 56);
    flip(&g.img, backup_entries + 56);
    let msg = import_err(&g);
    for header in [primary, backup] {
        let stored = u32_at(&g.img, header + 88);
        let count = u32_at(&g.img, header + 80) as usize;
        let size = u32_at(&g.img, header + 84) as usize;
        let entries = u64_at(&g.img, header + 72) * SECTOR;
        let found = crc32fast::hash(&read_at(&g.img, entries, count * size));
        let expect = format!(
            "GPT partition entry array CRC32 mismatch: expected {stored:#010x}, found {found:#010x}"
        );
        assert!(msg.contains(&expect), "{expect:?} missing in {msg}");
    }
}

#[test]
fn damaged_primary_without_backup_names_both() {
    let g = build();
    let [(primary, _), (backup, _)] = headers(&g.img);
    flip(&g.img, primary + 56);
    // Cut the image before the backup header: the last sector now holds no GPT.
    fs::OpenOptions::new()
        .write(true)
        .open(&g.img)
        .unwrap()
        .set_len(backup)
        .unwrap();
    let msg = import_err(&g);
    assert!(msg.contains("GPT header CRC32 mismatch"), "{msg}");
    assert!(msg.contains("no GPT header signature (EFI PART)"), "{msg}");
}
