//! Benchmark of image import and per-Pi root clones against `cp -a` and `rsync -xa`.
//!
//! ```text
//! cargo run --release -p bakery-image --example bench -- [--source DIR]... [--runs N] [--cycles N] [--work DIR]
//! ```
//!
//! Default source: `/usr/include` (a quick run, ~9k entries). The issue's realistic size
//! (≥ 30k files, ≥ 1 GiB):
//! `--source /usr/share --source /usr/lib/x86_64-linux-gnu --runs 3`.
//!
//! What it does: copies the sources into a staged root tree (`cp -a`), builds a real SD-card
//! image from it (sfdisk, mkfs.vfat + mcopy for a boot partition, `mkfs.ext4 -d` for the
//! root), then prints the medians of:
//! - import: `import_image` vs `cp -a` and `rsync -xa` of the staged tree. Loop mounts are
//!   not available here, so the baseline is copying the already-mounted-equivalent staged
//!   tree, which flatters the baselines (no mount, no kpartx, no ext4 driver reads).
//! - bake: `clone_tree` with the strategy detected for the work dir vs `cp -a` and
//!   `rsync -xa` of the golden tree.
//! - bake/unbake cycles: clone, then unbake by renaming the tree into a trash dir that a
//!   background thread reclaims; the bake times of successive cycles should stay flat.
//!
//! Caches are warm for every contender (each runs once unmeasured first); `sync` runs
//! before each measurement so the previous run's writeback is not billed to the next;
//! outputs are kept until the end (see `measure`), so the work dir needs about
//! (2 × runs + 2) × 3 copies of the tree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bakery_image::{CloneStrategy, clone_tree, detect_strategy, import_image, remove_tree};

struct Args {
    sources: Vec<PathBuf>,
    runs: usize,
    cycles: usize,
    work: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        sources: Vec::new(),
        runs: 3,
        cycles: 5,
        work: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--source" => a.sources.push(PathBuf::from(val())),
            "--runs" => a.runs = val().parse().expect("--runs N"),
            "--cycles" => a.cycles = val().parse().expect("--cycles N"),
            "--work" => a.work = Some(PathBuf::from(val())),
            other => panic!("unknown argument {other}; see the header of examples/bench.rs"),
        }
    }
    if a.sources.is_empty() {
        a.sources.push(PathBuf::from("/usr/include"));
    }
    a
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sync() {
    sh(&mut Command::new("sync"));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `f` once unmeasured, then `runs` times measured, each into a fresh output path
/// under `scratch`. Nothing is deleted until the whole benchmark ends: on ext4 without a
/// journal the inode allocator skips inodes freed in the last 60 s (`recently_deleted()` in
/// the kernel), so creating files right after a large removal is several times slower, and
/// one contender's cleanup would be billed to the next.
fn measure(runs: usize, scratch: &Path, mut f: impl FnMut(&Path)) -> Duration {
    let mut times = Vec::new();
    std::fs::create_dir_all(scratch).expect("scratch dir");
    for i in 0..=runs {
        let out = scratch.join(format!("run-{i}"));
        sync();
        let t = Instant::now();
        f(&out);
        let d = t.elapsed();
        if i > 0 {
            times.push(d);
        }
    }
    median(times)
}

fn count(dir: &Path) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            n += 1;
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                bytes += md.len();
            }
        }
    }
    (n, bytes)
}

fn build_image(img: &Path, stage: &Path, bytes: u64, entries: u64) {
    let boot_mib = 64u64;
    let root_mib = (bytes + entries * 4096) * 13 / 10 / (1 << 20) + 256;
    let boot_start = 8192u64;
    let root_start = boot_start + boot_mib * 2048;
    let f = std::fs::File::create(img).unwrap();
    f.set_len((root_start + root_mib * 2048) * 512).unwrap();
    drop(f);
    let script = format!(
        "label: dos\nstart={boot_start}, size={}, type=c\nstart={root_start}, type=83\n",
        boot_mib * 2048
    );
    let sfdisk = std::process::Stdio::piped();
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(img)
        .stdin(sfdisk)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let boot_img = img.with_extension("boot");
    let f = std::fs::File::create(&boot_img).unwrap();
    f.set_len(boot_mib << 20).unwrap();
    drop(f);
    sh(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "BOOTFS"])
        .arg(&boot_img));
    let boot_files = img.with_extension("bootfiles");
    std::fs::create_dir_all(&boot_files).unwrap();
    for (name, data) in bakery_image::SampleSpec::default().boot_files {
        if !name.contains('/') {
            std::fs::write(boot_files.join(name), data).unwrap();
        }
    }
    let files: Vec<PathBuf> = std::fs::read_dir(&boot_files)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sh(Command::new("mcopy")
        .arg("-i")
        .arg(&boot_img)
        .args(&files)
        .arg("::/"));
    std::fs::remove_dir_all(&boot_files).unwrap();
    sh(Command::new("dd")
        .arg(format!("if={}", boot_img.display()))
        .arg(format!("of={}", img.display()))
        .args([
            "bs=1M",
            "conv=notrunc,sparse",
            "status=none",
            "oflag=seek_bytes",
        ])
        .arg(format!("seek={}", boot_start * 512)));
    std::fs::remove_file(&boot_img).unwrap();
    sh(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-E",
            &format!("offset={}", root_start * 512),
            "-d",
        ])
        .arg(stage)
        .arg(img)
        .arg(format!("{root_mib}M")));
}

fn main() {
    let args = parse_args();
    let work = match &args.work {
        Some(w) => tempfile::tempdir_in(w).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let w = work.path();
    let stage = w.join("stage");
    std::fs::create_dir(&stage).unwrap();
    let t = Instant::now();
    for s in &args.sources {
        let name = s.to_string_lossy().trim_matches('/').replace('/', "_");
        sh(Command::new("cp").arg("-a").arg(s).arg(stage.join(name)));
    }
    let (entries, bytes) = count(&stage);
    println!(
        "staged {entries} entries, {:.2} GiB from {:?} in {:.1?}",
        bytes as f64 / (1u64 << 30) as f64,
        args.sources,
        t.elapsed()
    );
    let img = w.join("pi.img");
    let t = Instant::now();
    build_image(&img, &stage, bytes, entries);
    println!(
        "built image {} ({:.2} GiB) in {:.1?}",
        img.display(),
        std::fs::metadata(&img).unwrap().len() as f64 / (1u64 << 30) as f64,
        t.elapsed()
    );

    let runs = args.runs;
    println!(
        "\n== import ({runs} runs, median; baselines copy the staged tree: no loop mounts here)"
    );
    let import = measure(runs, &w.join("out-import"), |o| {
        import_image(&img, o, &mut |_| {}).expect("import");
    });
    let cp = measure(runs, &w.join("out-import-cp"), |o| {
        sh(Command::new("cp").arg("-a").arg(&stage).arg(o))
    });
    let rsync = measure(runs, &w.join("out-import-rsync"), |o| {
        sh(Command::new("rsync")
            .arg("-xa")
            .arg(format!("{}/", stage.display()))
            .arg(o))
    });
    report(
        "import_image",
        import,
        &[("cp -a", cp), ("rsync -xa", rsync)],
    );

    let golden = w.join("bakeform");
    let summary = import_image(&img, &golden, &mut |_| {}).expect("import");
    let src = golden.join("root");
    let detected = detect_strategy(w);
    println!(
        "\n== bake: clone of the golden root ({} files, {} dirs), detected strategy: {detected}",
        summary.files, summary.dirs
    );
    let mut strategies = vec![detected];
    if detected != CloneStrategy::Copy {
        strategies.push(CloneStrategy::Copy);
    }
    let cp = measure(runs, &w.join("out-clone-cp"), |o| {
        sh(Command::new("cp").arg("-a").arg(&src).arg(o))
    });
    let rsync = measure(runs, &w.join("out-clone-rsync"), |o| {
        sh(Command::new("rsync")
            .arg("-xa")
            .arg(format!("{}/", src.display()))
            .arg(o))
    });
    for s in strategies {
        let d = measure(runs, &w.join(format!("out-clone-{s}")), |o| {
            clone_tree(&src, o, s).expect("clone");
        });
        report(
            &format!("clone_tree {s}"),
            d,
            &[("cp -a", cp), ("rsync -xa", rsync)],
        );
    }

    for deferred in [false, true] {
        cycles(w, &src, detected, args.cycles, deferred);
    }
}

/// Bake/unbake cycles: clone, then unbake by renaming into a trash dir. The trash is
/// reclaimed by a background thread either at once or only after the last cycle.
fn cycles(w: &Path, src: &Path, strategy: CloneStrategy, n: usize, deferred: bool) {
    let how = if deferred {
        "after the last cycle"
    } else {
        "at once, in the background"
    };
    println!("\n== bake/unbake cycles ({strategy}; unbake = rename into trash, reclaimed {how})");
    let trash = w.join(format!("trash-{deferred}"));
    std::fs::create_dir(&trash).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    let reaper = std::thread::spawn(move || {
        let mut later = Vec::new();
        for p in rx {
            if deferred {
                later.push(p);
            } else {
                remove_tree(&p).expect("reclaim");
            }
        }
        for p in later {
            remove_tree(&p).expect("reclaim");
        }
    });
    let mut bakes = Vec::new();
    for i in 0..n {
        let pi = w.join(format!("pi-{i}"));
        sync();
        let t = Instant::now();
        clone_tree(src, &pi, strategy).expect("clone");
        let bake = t.elapsed();
        let t = Instant::now();
        let gone = trash.join(format!("pi-{i}"));
        std::fs::rename(&pi, &gone).unwrap();
        tx.send(gone).unwrap();
        let unbake = t.elapsed();
        println!("  cycle {i}: bake {bake:.2?}, unbake {unbake:.2?}");
        bakes.push(bake);
    }
    drop(tx);
    let t = Instant::now();
    reaper.join().unwrap();
    println!(
        "  reclaim finished {:.2?} after the last unbake",
        t.elapsed()
    );
    if let (Some(first), Some(max)) = (bakes.first(), bakes.iter().max()) {
        println!(
            "  bake time spread: first {first:.2?}, slowest {max:.2?} ({:.2}x)",
            max.as_secs_f64() / first.as_secs_f64()
        );
    }
}

fn report(what: &str, d: Duration, baselines: &[(&str, Duration)]) {
    print!("  {what:<26} {:>8.2?}", d);
    for (name, b) in baselines {
        print!(
            "  | {name} {:>8.2?} (ratio {:.2})",
            b,
            d.as_secs_f64() / b.as_secs_f64()
        );
    }
    println!();
}
