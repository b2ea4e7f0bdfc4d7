//! Free space (`--min-free-space`) against the real binary: a minimum beyond the disk stops
//! the warm pool and refuses bakes and uploads (507, naming free, needed and minimum); on a
//! small loop-mounted ext4 the pool fills up to the minimum, gives its oldest root back when
//! free space falls below it, a bake from the pool still works and a clone is refused; when
//! the file system fills up anyway (inodes), a bake and an import fail with "no space left on
//! the data dir" and leave nothing behind. The loop-mount tests need root and loop devices;
//! without them they are skipped with a printed reason.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bakery_client::{BakeRequest, ErrorBody};
use reqwest::StatusCode;

use crate::common::{Env, OS, Server, entries, eventually, sample_image};
use crate::pool::metric;

/// A small ext4 file system in an image file, loop-mounted; unmounted on drop, even when
/// the test panics.
struct LoopMount {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl LoopMount {
    /// `size_mib` MiB with `mkfs_args` added to `mkfs.ext4`; `None` (reason printed) when
    /// this machine cannot loop-mount.
    fn new(size_mib: u64, mkfs_args: &[&str]) -> Option<LoopMount> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: loop-mounting an ext4 image needs root");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("bakery-space-")
            .tempdir()
            .unwrap();
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size_mib << 20)
            .unwrap();
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .args(mkfs_args)
            .arg(&image)
            .output();
        match mkfs {
            Ok(out) if out.status.success() => {}
            other => {
                println!("skipped: mkfs.ext4 failed: {other:?}");
                return None;
            }
        }
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .output();
        match mount {
            Ok(out) if out.status.success() => Some(LoopMount { _dir: dir, mnt }),
            other => {
                println!("skipped: cannot loop-mount an ext4 image here: {other:?}");
                None
            }
        }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// Bytes free on the file system of `path` (as bakery computes them).
fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut stat) }, 0);
    stat.f_bavail * stat.f_frsize
}

/// Allocated bytes of the tree at `dir`, each inode once.
fn tree_bytes(dir: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut todo = vec![dir.to_owned()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if seen.insert(meta.ino()) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    total
}

/// Takes `bytes` of real space on the file system of `path` (a preallocated file).
fn ballast(path: &Path, bytes: u64) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::create(path).unwrap();
    // SAFETY: a valid open file descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, bytes as libc::off_t) };
    assert_eq!(rc, 0, "posix_fallocate of {bytes} bytes");
}

fn bake_request() -> serde_json::Value {
    serde_json::to_value(BakeRequest {
        bakeform_name: OS.into(),
        network: None,
        power_on: Some(false),
        root_kind: None,
        model: None,
        labels: Default::default(),
    })
    .unwrap()
}

fn upload(server: &Server, name: &str) -> reqwest::blocking::Response {
    server
        .client
        .post(server.url(&format!("/bakeforms/{name}")))
        .header("Content-Type", bakery_client::RAW_IMAGE_CONTENT_TYPE)
        .body(std::fs::read(sample_image()).unwrap())
        .send()
        .unwrap()
}

/// The error of a refused request, after checking its status.
fn refusal(resp: reqwest::blocking::Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status);
    resp.json::<ErrorBody>().unwrap().error
}

/// Asserts that a refusal names free, needed and minimum space and the data dir (by its
/// path, except to an upload, which is told no server path).
fn names_the_numbers(error: &str, data: &Path) {
    let path = data.display().to_string();
    if error.starts_with("upload of bakeform ") {
        assert!(!error.contains(&path), "{error}");
    }
    for word in [
        "not enough free space on the data dir",
        if error.starts_with("upload of bakeform ") {
            "not enough free space on the data dir for "
        } else {
            &path
        },
        " free, ",
        " needed, ",
        "must stay free (--min-free-space)",
    ] {
        assert!(error.contains(word), "{word:?} missing in {error}");
    }
}

#[test]
fn a_minimum_beyond_the_disk_stops_the_pool_and_refuses_bakes_and_uploads() {
    let env = Env::new();
    let mut server = Server::start(&env);
    assert_eq!(upload(&server, OS).status(), StatusCode::CREATED);
    server.add_pis(2);
    let baked = server.bake_ready(false);
    server.stop();

    server = Server::start_with(&env, &["--warm-pool", "1", "--min-free-space", "100000T"]);
    let warned = eventually(Duration::from_secs(20), || {
        server.log_contains("warm pool stopped filling")
    });
    assert!(warned, "{:?}", server.log.lock().unwrap());
    let line = server
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("warm pool stopped filling"))
        .cloned()
        .unwrap();
    for field in [
        "WARN",
        "free_bytes=",
        "needed_bytes=",
        "min_free_bytes=109951162777600000",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    assert_eq!(metric(&server, "bakery_pool_short_of_space"), Some(1.0));
    assert!(metric(&server, "bakery_data_free_bytes").unwrap() > 0.0);
    // A few more rounds of the filler (it looks every 2 s): still empty, still one warning.
    std::thread::sleep(Duration::from_millis(4500));
    assert!(entries(&env.data().join("pool").join(OS)).is_empty());
    let warnings = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("warm pool stopped filling"))
        .count();
    assert_eq!(warnings, 1, "warned once");

    let error = refusal(
        server.post_json("/fridge", &bake_request()),
        StatusCode::INSUFFICIENT_STORAGE,
    );
    names_the_numbers(&error, &env.data());
    println!("bake: {error}");
    assert!(
        error.contains("a root cloned from bakeform raspios"),
        "{error}"
    );
    assert!(
        error.contains("97.7 PiB (109951162777600000 bytes) must stay free"),
        "{error}"
    );
    let fridge: serde_json::Value = server.get("/fridge").json().unwrap();
    assert_eq!(
        fridge.as_object().unwrap().len(),
        1,
        "the pi stays in the fridge"
    );

    // A reset needs a new root too: refused the same way, the Pi stays baked on its old root.
    let error = refusal(server.reset(&baked.id), StatusCode::INSUFFICIENT_STORAGE);
    names_the_numbers(&error, &env.data());
    let still: bakery_client::PiInfo = server.get(&format!("/pis/{}", baked.id)).json().unwrap();
    assert_eq!(still.state, Some(bakery_client::PiState::Baked));
    assert_eq!(still.disks[0].id, baked.disks[0].id);

    let error = refusal(upload(&server, "other"), StatusCode::INSUFFICIENT_STORAGE);
    names_the_numbers(&error, &env.data());
    assert!(error.contains("the image of bakeform other"), "{error}");
    assert_eq!(
        server.get("/bakeforms/other").status(),
        StatusCode::NOT_FOUND
    );
    assert!(entries(&env.data().join("tmp")).is_empty());
    // The contract's 403 for a name that exists comes first.
    assert_eq!(upload(&server, OS).status(), StatusCode::FORBIDDEN);
}

/// Base flags for a server whose data dir is on `mnt` (its database stays off it).
fn on_mount(env: &Env, mnt: &Path, extra: &[&str]) -> Server {
    let data = mnt.join("data").display().to_string();
    let db = env.path("bakery.db").display().to_string();
    let mut flags = vec!["--data-dir", data.as_str(), "--db-path", db.as_str()];
    flags.extend_from_slice(extra);
    Server::start_replacing(env, &["--data-dir"], &flags)
}

#[test]
fn on_a_small_file_system_the_pool_stops_at_the_minimum_and_gives_back_its_oldest_root() {
    let Some(mount) = LoopMount::new(256, &[]) else {
        return;
    };
    let env = Env::new();
    let data = mount.mnt.join("data");
    let pool = data.join("pool").join(OS);
    let mut server = on_mount(&env, &mount.mnt, &["--min-free-space", "0"]);
    assert_eq!(upload(&server, OS).status(), StatusCode::CREATED);
    server.add_pis(2);
    server.stop();

    let golden = tree_bytes(&data.join("bakeforms").join(OS).join("root"));
    let free = free_bytes(&mount.mnt);
    // Room for two roots, not three.
    let minimum = free - 2 * golden - golden / 2;
    println!("free {free}, golden root {golden}, minimum {minimum}");
    let min_flag = minimum.to_string();
    server = on_mount(
        &env,
        &mount.mnt,
        &["--warm-pool", "10", "--min-free-space", &min_flag],
    );
    let stopped = eventually(Duration::from_secs(60), || {
        server.log_contains("warm pool stopped filling")
    });
    assert!(stopped, "{:?}", server.log.lock().unwrap());
    let filled = entries(&pool);
    assert_eq!(filled.len(), 2, "{filled:?}");
    assert!(free_bytes(&mount.mnt) >= minimum);
    assert_eq!(metric(&server, "bakery_pool_short_of_space"), Some(1.0));

    // Something else takes space: below the minimum by half a root, the oldest root goes.
    let placed = |name: &String| {
        let m = std::fs::symlink_metadata(pool.join(name)).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    let newest = filled.iter().max_by_key(|n| placed(n)).unwrap().clone();
    let now = free_bytes(&mount.mnt);
    ballast(&mount.mnt.join("ballast"), now - minimum + golden / 2);
    let given_back = eventually(Duration::from_secs(20), || entries(&pool).len() == 1);
    assert!(given_back, "{:?}", entries(&pool));
    assert_eq!(
        entries(&pool),
        vec![newest.clone()],
        "the oldest went first"
    );
    assert!(server.log_contains("pooled root given back"));
    let reclaimed = eventually(Duration::from_secs(20), || {
        entries(&data.join("trash")).is_empty()
    });
    assert!(reclaimed);
    // Back above the minimum, but not by a whole root: no refill, nothing more given back.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(entries(&pool), vec![newest]);

    // A bake from the pool needs no new space; the next one would clone and is refused.
    let resp = server.post_json("/fridge", &bake_request());
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let pi: bakery_client::PiInfo = resp.json().unwrap();
    assert_eq!(server.wait_baked(&pi.id).status(), StatusCode::OK);
    assert!(server.log_contains("warm pool root taken"));
    let error = refusal(
        server.post_json("/fridge", &bake_request()),
        StatusCode::INSUFFICIENT_STORAGE,
    );
    names_the_numbers(&error, &data);
    let error = refusal(upload(&server, "second"), StatusCode::INSUFFICIENT_STORAGE);
    names_the_numbers(&error, &data);
    assert_eq!(
        server.get("/bakeforms/second").status(),
        StatusCode::NOT_FOUND
    );

    // Space comes back: the pool fills again.
    std::fs::remove_file(mount.mnt.join("ballast")).unwrap();
    let refilled = eventually(Duration::from_secs(60), || !entries(&pool).is_empty());
    assert!(refilled);
    assert!(server.log_contains("warm pool filling again"));
    server.stop();
}

/// Creates empty files under `dir` until the file system has no inode left; returns them.
fn use_up_inodes(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut made = Vec::new();
    for i in 0.. {
        let path = dir.join(i.to_string());
        match std::fs::File::create(&path) {
            Ok(_) => made.push(path),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return made;
            }
        }
    }
    made
}

#[test]
fn when_the_file_system_fills_up_anyway_bake_and_import_fail_cleanly() {
    let Some(mount) = LoopMount::new(256, &["-N", "512"]) else {
        return;
    };
    let env = Env::new();
    let data = mount.mnt.join("data");
    let server = on_mount(&env, &mount.mnt, &["--min-free-space", "0"]);
    assert_eq!(upload(&server, OS).status(), StatusCode::CREATED);
    server.add_pis(1);

    // Bytes are plenty, inodes are not: leave three.
    let mut inodes = use_up_inodes(&mount.mnt.join("ballast"));
    for path in inodes.drain(..3) {
        std::fs::remove_file(path).unwrap();
    }

    let resp = server.post_json("/fridge", &bake_request());
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let pi: bakery_client::PiInfo = resp.json().unwrap();
    let error = refusal(server.wait_baked(&pi.id), StatusCode::CONFLICT);
    println!("bake: {error}");
    assert!(error.contains("no space left on the data dir"), "{error}");
    assert!(error.contains(&data.display().to_string()), "{error}");
    let clean = eventually(Duration::from_secs(20), || {
        entries(&data.join("tmp")).is_empty()
            && entries(&data.join("disks")).is_empty()
            && entries(&data.join("trash")).is_empty()
    });
    assert!(
        clean,
        "tmp {:?}, disks {:?}",
        entries(&data.join("tmp")),
        entries(&data.join("disks"))
    );

    let error = refusal(upload(&server, "second"), StatusCode::INSUFFICIENT_STORAGE);
    println!("upload: {error}");
    assert!(error.contains("no space left on the data dir"), "{error}");
    assert!(error.contains("importing bakeform second"), "{error}");
    let clean = eventually(Duration::from_secs(20), || {
        entries(&data.join("tmp")).is_empty() && entries(&data.join("trash")).is_empty()
    });
    assert!(clean, "tmp {:?}", entries(&data.join("tmp")));
    assert_eq!(entries(&data.join("bakeforms")), vec![OS.to_owned()]);
    let second: bakery_client::Bakeform = server.get("/bakeforms/second").json().unwrap();
    assert_eq!(second.state, Some(bakery_client::BakeformState::Failed));
    assert!(
        second
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no space left on the data dir")),
        "{second:?}"
    );
}
