//! Bounded, stable runs of every fuzz target: the checked-in seeds (`seeds/<target>/`), then
//! seeded random mutations of them. `BAKERY_FUZZ_ITERS` scales the count (default 3000 per
//! target, a tenth of it for image imports), `BAKERY_FUZZ_SEED` replays a run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bakery_fuzz::Gen;

fn iterations(default: usize) -> usize {
    std::env::var("BAKERY_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(default, |n| n * default / 3000)
        .max(1)
}

fn seed() -> u64 {
    std::env::var("BAKERY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Runs `check` on every seed, then on `n` mutations; a panic names the seed to replay with
/// and the input (hex, first 256 bytes).
fn run(target: &str, n: usize, dictionary: &[&[u8]], check: impl Fn(&[u8])) {
    let seed = seed();
    let corpus = seeds(target);
    let mut generator = Gen::new(seed);
    let started = Instant::now();
    let try_one = |input: &[u8]| {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(input)));
        if let Err(panic) = outcome {
            let hex: String = input.iter().take(256).map(|b| format!("{b:02x}")).collect();
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{target}: BAKERY_FUZZ_SEED={seed} input {hex}: {why}");
        }
    };
    for input in &corpus {
        try_one(input);
    }
    for _ in 0..n {
        let base = &corpus[generator.below(corpus.len())];
        let input = if generator.below(10) == 0 {
            let len = generator.below(64);
            (0..len).map(|_| generator.next_u64() as u8).collect()
        } else {
            generator.mutate(base, dictionary)
        };
        try_one(&input);
    }
    println!(
        "{target}: {} seeds + {n} mutations in {:?} (BAKERY_FUZZ_SEED={seed})",
        corpus.len(),
        started.elapsed()
    );
}

#[test]
fn tftp_packet() {
    run(
        "tftp_packet",
        iterations(20_000),
        &[
            b"blksize\0",
            b"tsize\0",
            b"timeout\0",
            b"windowsize\0",
            b"octet\0",
            b"netascii\0",
            b"65464\0",
            b"65465\0",
            b"0\0",
            b"99999999999999999999\0",
        ],
        bakery_fuzz::tftp_packet,
    );
}

#[test]
fn cpi_request() {
    run(
        "cpi_request",
        iterations(3000),
        &[
            b"\"method\"",
            b"\"arguments\"",
            b"\"context\"",
            b"null",
            b"[]",
            b"{}",
            b"-1",
            b"1e999",
            b"\"api_version\":",
            b"\"create_vm\"",
        ],
        bakery_fuzz::cpi_request,
    );
}

#[test]
fn cmdline() {
    run(
        "cmdline",
        iterations(20_000),
        &[
            b"{{.NfsServer}}",
            b"{{ .NfsRoot }}",
            b"{{nfs_root}}",
            b"{{ip}}",
            b"{{serial}}",
            b"ip=",
            b"root=",
            b"\n",
            b"\r",
            b"\xff",
        ],
        bakery_fuzz::cmdline,
    );
}

#[test]
fn image_random_bytes_and_crafted_tables() {
    run(
        "image",
        iterations(300),
        &[
            b"\x55\xaa",
            b"\x0c",
            b"\x83",
            b"\xef\x53",
            b"FAT32   ",
            b"\0\0\0\0",
        ],
        bakery_fuzz::image,
    );
}

/// A real (small) image made by the sample builder, corrupted at random places of its
/// partition tables, FAT and ext4 metadata, then imported: errors are fine, panics and
/// writes outside the destination are not. Skips loudly when mkfs tools are missing.
#[test]
fn image_corrupted_real_images() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.img");
    let spec = bakery_image::SampleSpec {
        boot_files: vec![
            ("start4.elf".into(), vec![7; 3000]),
            (
                "cmdline.txt".into(),
                b"console=tty1 root=/dev/mmcblk0p2\n".to_vec(),
            ),
            ("overlays/a.dtbo".into(), vec![1; 100]),
        ],
        root_files: vec![
            ("etc/hostname".into(), b"raspberrypi\n".to_vec()),
            ("usr/lib/big".into(), vec![3; 70_000]),
        ],
        root_nodes: vec![],
    };
    if let Err(e) = bakery_image::build_sample_image(&path, &spec) {
        println!("SKIPPED image_corrupted_real_images: cannot build a sample image: {e}");
        return;
    }
    let pristine = std::fs::read(&path).unwrap();
    // Where the metadata is: the MBR, and the first MiB of each partition.
    let mut regions = vec![(0usize, 512usize)];
    for i in 0..4 {
        let e = 446 + 16 * i;
        let start = u32::from_le_bytes(pristine[e + 8..e + 12].try_into().unwrap()) as usize * 512;
        let count = u32::from_le_bytes(pristine[e + 12..e + 16].try_into().unwrap()) as usize * 512;
        if count > 0 && start < pristine.len() {
            regions.push((start, (start + count.min(1 << 20)).min(pristine.len())));
        }
    }
    let seed = seed();
    let mut generator = Gen::new(seed);
    let n = iterations(200);
    let started = Instant::now();
    let mut image = pristine.clone();
    for round in 0..n {
        let mut changed = Vec::new();
        for _ in 0..1 + generator.below(8) {
            let (a, b) = regions[generator.below(regions.len())];
            let at = a + generator.below(b - a);
            changed.push((at, image[at]));
            image[at] = match generator.below(4) {
                0 => 0,
                1 => 0xff,
                _ => generator.next_u64() as u8,
            };
        }
        std::fs::write(&path, &image).unwrap();
        let outcome = std::panic::catch_unwind(|| bakery_fuzz::image_file(&path, dir.path()));
        if outcome.is_err() {
            panic!("image round {round}: BAKERY_FUZZ_SEED={seed}, bytes changed {changed:?}");
        }
        for (at, old) in changed {
            image[at] = old;
        }
    }
    println!(
        "image: {n} corrupted real images in {:?} (BAKERY_FUZZ_SEED={seed})",
        started.elapsed()
    );
}
