//! A Raspberry-Pi-like SD-card image made the way an operator makes one, with the standard
//! tools: `sfdisk` writes the MBR, `mkfs.vfat` + `mcopy` the boot partition, `mkfs.ext4 -d`
//! the root from a staged tree. Shared through `#[path]` by the image tests, the API tests and
//! the `bench` example (an example cannot import test modules, and the library builds its
//! samples without these tools).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `cmd`, failing with its stderr when it does not succeed.
pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Entries and bytes of regular files under `dir` (symlinks not followed).
pub fn count_tree(dir: &Path) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            n += 1;
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                bytes += meta.len();
            }
        }
    }
    (n, bytes)
}

/// Writes the partition image `part` into `img` at sector `start`, in place and sparse.
pub fn dd_at(part: &Path, img: &Path, start: u64) {
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", part.display()))
            .arg(format!("of={}", img.display()))
            .args([
                "bs=1M",
                "conv=notrunc,sparse",
                "status=none",
                "oflag=seek_bytes",
            ])
            .arg(format!("seek={}", start * 512)),
    );
}

/// Builds an SD-card image at `img` whose root partition holds the tree `stage`, of
/// `(entries, bytes)` as [`count_tree`] counts it: a 64 MiB FAT32 boot partition with the
/// sample's top-level boot files, then the root, `mkfs.ext4 -d` in place (sized 1.3 × its
/// data plus a block per entry, plus 256 MiB). Returns the root partition's byte offset.
pub fn build_image_from_tree(img: &Path, stage: &Path, counts: (u64, u64)) -> u64 {
    let boot: Vec<(String, Vec<u8>)> = bakery_image::SampleSpec::default()
        .boot_files
        .into_iter()
        .filter(|(name, _)| !name.contains('/'))
        .collect();
    build_image_with_boot(img, &boot, stage, counts)
}

/// [`build_image_from_tree`] with the boot partition holding `boot` (top-level files only).
pub fn build_image_with_boot(
    img: &Path,
    boot: &[(String, Vec<u8>)],
    stage: &Path,
    (entries, bytes): (u64, u64),
) -> u64 {
    let boot_mib = 64u64;
    let root_mib = (bytes + entries * 4096) * 13 / 10 / (1 << 20) + 256;
    let boot_start = 8192u64;
    let root_start = boot_start + boot_mib * 2048;
    std::fs::File::create(img)
        .unwrap()
        .set_len((root_start + root_mib * 2048) * 512)
        .unwrap();
    let script = format!(
        "label: dos\nstart={boot_start}, size={}, type=c\nstart={root_start}, type=83\n",
        boot_mib * 2048
    );
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sfdisk (fdisk) is installed");
    std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk {}", img.display());

    let boot_img = img.with_extension("boot");
    std::fs::File::create(&boot_img)
        .unwrap()
        .set_len(boot_mib << 20)
        .unwrap();
    run_ok(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "BOOTFS"])
            .arg(&boot_img),
    );
    let boot_files = img.with_extension("bootfiles");
    std::fs::create_dir_all(&boot_files).unwrap();
    for (name, data) in boot {
        std::fs::write(boot_files.join(name), data).unwrap();
    }
    let files: Vec<PathBuf> = std::fs::read_dir(&boot_files)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    run_ok(
        Command::new("mcopy")
            .arg("-i")
            .arg(&boot_img)
            .args(&files)
            .arg("::/"),
    );
    std::fs::remove_dir_all(&boot_files).unwrap();
    dd_at(&boot_img, img, boot_start);
    std::fs::remove_file(&boot_img).unwrap();
    run_ok(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-E",
                &format!("offset={}", root_start * 512),
                "-d",
            ])
            .arg(stage)
            .arg(img)
            .arg(format!("{root_mib}M")),
    );
    root_start * 512
}
