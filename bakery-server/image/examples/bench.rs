//! Benchmark of image import and per-Pi root clones against `cp -a` and `rsync -xa`.
//!
//! ```text
//! cargo run --release -p bakery-image --example bench -- [--source DIR]... [--runs N] [--cycles N] [--fs FS]... [--work DIR]
//! ```
//!
//! Default source: `/usr/include` (a quick run, ~9k entries). The issue's realistic size
//! (≥ 30k files, ≥ 1 GiB):
//! `--source /usr/share --source /usr/lib/x86_64-linux-gnu --runs 3`.
//!
//! `--fs` picks the filesystems to run on: `here` (the work dir as it is), or `ext4`,
//! `btrfs`, `xfs`: a fresh sparse image file under the work dir, formatted and mounted from a
//! direct-I/O loop device (no second copy in the host's page cache, like a real disk) for
//! the run (needs root, losetup, and mkfs.btrfs / mkfs.xfs from btrfs-progs / xfsprogs).
//! Default: every one of the three this machine can make, else `here`. `here` keeps every
//! output until the end (see `measure`): it needs about (runs + 1) × 7 copies of the tree
//! free.
//!
//! What it does: copies the sources into a staged root tree (`cp -a`), builds a real SD-card
//! image from it (sfdisk, mkfs.vfat + mcopy for a boot partition, `mkfs.ext4 -d` for the
//! root), then on each filesystem prints the medians of:
//! - import: `import_image` of the image (copied onto that filesystem, as an upload lands in
//!   `<data>/tmp`) vs what the first bakery did: loop-mount the root partition read-only,
//!   `cp -a` (or `rsync -xa`) it out, unmount — mount and unmount included in the time.
//! - bake: `clone_tree` with the strategy detected for that filesystem (and the weaker ones
//!   it could fall back to) vs `cp -a` and `rsync -xa` of the golden tree. GNU cp 9 reflinks
//!   by default where it can, so on btrfs/XFS `cp -a` is itself a reflink copy.
//! - bake/unbake cycles: clone, then unbake by renaming the tree into a trash dir that a
//!   background thread reclaims; the bake times of successive cycles should stay flat.
//!
//! Caches are warm for every contender (each runs once unmeasured first); `sync` runs
//! before each measurement so the previous run's writeback is not billed to the next.
//! Last, a summary repeats every ratio, one line per filesystem and contender.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bakery_image::{CloneStrategy, clone_tree, detect_strategy, import_image, remove_tree};

#[path = "../tests/common/sdcard.rs"]
mod sdcard;
use sdcard::{build_image_from_tree, count_tree, run_ok};

struct Args {
    sources: Vec<PathBuf>,
    filesystems: Vec<String>,
    runs: usize,
    cycles: usize,
    work: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        sources: Vec::new(),
        filesystems: Vec::new(),
        runs: 3,
        cycles: 5,
        work: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--source" => a.sources.push(PathBuf::from(val())),
            "--fs" => a.filesystems.push(val()),
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

fn sync() {
    run_ok(&mut Command::new("sync"));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `f` once unmeasured, then `runs` times measured, each into a fresh output path
/// under `scratch`. With `keep`, nothing is deleted until the whole benchmark ends: on ext4
/// without a journal (this machine's root) the inode allocator skips inodes freed in the
/// last 60 s (`recently_deleted()` in the kernel), so creating files right after a large
/// removal is several times slower, and one contender's cleanup would be billed to the next.
/// Without `keep` (the fresh filesystems on loop devices, journaled or not ext4) each
/// output is removed and the removal synced before the next run starts.
fn measure(runs: usize, scratch: &Path, keep: bool, mut f: impl FnMut(&Path)) -> Duration {
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
        if !keep {
            remove_tree(&out).expect("remove a benchmark output");
        }
    }
    median(times)
}

/// A filesystem the benchmark runs on: the work dir itself, or a fresh loop-mounted one.
struct Target {
    name: String,
    dir: PathBuf,
    /// Outputs are removed after each measured run (false on journal-less ext4: see `measure`).
    remove_outputs: bool,
    /// Mount point and loop device, undone on drop.
    mount: Option<(PathBuf, PathBuf)>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some((mnt, dev)) = &self.mount {
            let _ = Command::new("umount").arg(mnt).status();
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Makes a sparse image file of `size` bytes under `w`, formats it as `fs` and loop-mounts it.
fn loop_target(w: &Path, fs: &str, size: u64) -> Result<Target, String> {
    let img = w.join(format!("fs-{fs}.img"));
    let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
    f.set_len(size).map_err(|e| e.to_string())?;
    drop(f);
    let mkfs = match fs {
        "ext4" => Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img)
            .output(),
        "btrfs" => Command::new("mkfs.btrfs")
            .args(["-q", "-f"])
            .arg(&img)
            .output(),
        "xfs" => Command::new("mkfs.xfs")
            .args(["-q", "-f", "-m", "reflink=1"])
            .arg(&img)
            .output(),
        other => return Err(format!("unknown filesystem {other}")),
    }
    .map_err(|e| format!("mkfs.{fs}: {e}"))?;
    if !mkfs.status.success() {
        return Err(format!(
            "mkfs.{fs}: {}",
            String::from_utf8_lossy(&mkfs.stderr).trim()
        ));
    }
    let mnt = w.join(format!("mnt-{fs}"));
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    // Direct I/O on the loop device: its writes go to the image file without passing through
    // the host's page cache a second time, as a real disk's would (DMA, no extra copy), so
    // the loop device's own CPU work does not compete with the contenders.
    let out = Command::new("losetup")
        .args(["--direct-io=on", "--find", "--show"])
        .arg(&img)
        .output()
        .map_err(|e| format!("losetup: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let out = Command::new("mount")
        .arg(&dev)
        .arg(&mnt)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if !out.status.success() {
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        return Err(format!(
            "mount {}: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Target {
        name: format!("{fs} (fresh, on a direct-I/O loop device)"),
        dir: mnt.clone(),
        remove_outputs: true,
        mount: Some((mnt, dev)),
    })
}

/// Copies the root partition out of the image the way the first bakery did: loop-mount it
/// read-only, copy with `tool`, unmount. Mount and unmount are part of the measured time.
fn mount_and_copy(img: &Path, offset: u64, mnt: &Path, out: &Path, rsync: bool) {
    std::fs::create_dir_all(mnt).unwrap();
    run_ok(
        Command::new("mount")
            .arg("-o")
            .arg(format!("loop,ro,offset={offset}"))
            .arg(img)
            .arg(mnt),
    );
    if rsync {
        run_ok(
            Command::new("rsync")
                .arg("-xa")
                .arg(format!("{}/", mnt.display()))
                .arg(out),
        );
    } else {
        run_ok(Command::new("cp").arg("-a").arg(mnt).arg(out));
    }
    run_ok(Command::new("umount").arg(mnt));
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
        run_ok(Command::new("cp").arg("-a").arg(s).arg(stage.join(name)));
    }
    let (entries, bytes) = count_tree(&stage);
    println!(
        "staged {entries} entries, {:.2} GiB from {:?} in {:.1?}",
        bytes as f64 / (1u64 << 30) as f64,
        args.sources,
        t.elapsed()
    );
    let img = w.join("pi.img");
    let t = Instant::now();
    let root_offset = build_image_from_tree(&img, &stage, (entries, bytes));
    println!(
        "built image {} ({:.2} GiB) in {:.1?}",
        img.display(),
        std::fs::metadata(&img).unwrap().len() as f64 / (1u64 << 30) as f64,
        t.elapsed()
    );
    std::fs::remove_dir_all(&stage).unwrap();
    let can_mount = is_root();
    let mut filesystems = args.filesystems.clone();
    if filesystems.is_empty() {
        for fs in ["ext4", "btrfs", "xfs"] {
            if can_mount && have(&format!("mkfs.{fs}")) {
                filesystems.push(fs.to_owned());
            }
        }
        if filesystems.is_empty() {
            filesystems.push("here".to_owned());
        }
    }
    let mut summary = Vec::new();
    for fs in &filesystems {
        let target = if fs == "here" {
            Target {
                name: format!("the work dir {}", w.display()),
                dir: w.join("here"),
                remove_outputs: false,
                mount: None,
            }
        } else {
            // Room for the image, the golden tree and a few clones (sparse: only used blocks
            // take space on the host).
            let size = (std::fs::metadata(&img).unwrap().len() + bytes * 8).max(8 << 30);
            match loop_target(w, fs, size) {
                Ok(t) => t,
                Err(e) => {
                    println!("\n#### {fs}: skipped ({e})");
                    continue;
                }
            }
        };
        std::fs::create_dir_all(&target.dir).unwrap();
        println!("\n#### {}", target.name);
        summary.extend(run_on(&args, &target, &img, root_offset, can_mount));
    }
    println!("\n#### summary (median time, ratio to the baseline)");
    for line in summary {
        println!("  {line}");
    }
}

/// Runs the import, bake and cycle measurements on one filesystem; returns summary lines.
fn run_on(
    args: &Args,
    target: &Target,
    img_src: &Path,
    offset: u64,
    can_mount: bool,
) -> Vec<String> {
    let w = &target.dir;
    let keep = !target.remove_outputs;
    let runs = args.runs;
    let mut lines = Vec::new();
    // The image sits on the filesystem it is imported into, as an upload does in <data>/tmp.
    let img = w.join("pi.img");
    run_ok(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(img_src)
            .arg(&img),
    );
    println!("== import ({runs} runs, median)");
    let import = measure(runs, &w.join("out-import"), keep, |o| {
        import_image(&img, o, &mut |_| {}).expect("import");
    });
    let mut baselines = Vec::new();
    if can_mount {
        let mnt = w.join("mnt-image");
        baselines.push((
            "mount + cp -a",
            measure(runs, &w.join("out-import-cp"), keep, |o| {
                mount_and_copy(&img, offset, &mnt, o, false)
            }),
        ));
        baselines.push((
            "mount + rsync -xa",
            measure(runs, &w.join("out-import-rsync"), keep, |o| {
                mount_and_copy(&img, offset, &mnt, o, true)
            }),
        ));
    } else {
        println!("  (not root: no loop mount, so no mount + copy baseline)");
    }
    lines.push(report(&target.name, "import_image", import, &baselines));

    let golden = w.join("bakeform");
    let summary = import_image(&img, &golden, &mut |_| {}).expect("import");
    let src = golden.join("root");
    let detected = detect_strategy(w);
    println!(
        "== bake: clone of the golden root ({} files, {} dirs), detected strategy: {detected}",
        summary.files, summary.dirs
    );
    let mut strategies = vec![detected];
    if detected == CloneStrategy::Snapshot {
        strategies.push(CloneStrategy::Reflink);
    }
    if detected != CloneStrategy::Copy {
        strategies.push(CloneStrategy::Copy);
    }
    let cp = measure(runs, &w.join("out-clone-cp"), keep, |o| {
        run_ok(Command::new("cp").arg("-a").arg(&src).arg(o))
    });
    let rsync = measure(runs, &w.join("out-clone-rsync"), keep, |o| {
        run_ok(
            Command::new("rsync")
                .arg("-xa")
                .arg(format!("{}/", src.display()))
                .arg(o),
        )
    });
    for s in strategies {
        let d = measure(runs, &w.join(format!("out-clone-{s}")), keep, |o| {
            clone_tree(&src, o, s).expect("clone");
        });
        lines.push(report(
            &target.name,
            &format!("clone_tree {s}"),
            d,
            &[("cp -a", cp), ("rsync -xa", rsync)],
        ));
    }

    for deferred in [false, true] {
        cycles(w, &src, detected, args.cycles, deferred);
    }
    lines
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

fn report(fs: &str, what: &str, d: Duration, baselines: &[(&str, Duration)]) -> String {
    let mut line = format!("{what:<26} {d:>8.2?}");
    for (name, b) in baselines {
        line.push_str(&format!(
            "  | {name} {b:>8.2?} (ratio {:.3})",
            d.as_secs_f64() / b.as_secs_f64()
        ));
    }
    println!("  {line}");
    format!("{fs}: {line}")
}
