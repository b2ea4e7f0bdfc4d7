//! A clone of a tree with many large directories stays within a small open-file limit: each
//! task opens its directories itself, so descriptors are bounded by the worker count, not by
//! the number of queued chunks. Its own test binary, because the limit is per process.

use std::fs;

use bakery_image::{CloneStrategy, clone_tree};

#[test]
fn clone_stays_within_a_small_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("golden");
    // 40 directories of 300 files: three chunks each, 120 chunks queued at once at most.
    for d in 0..40 {
        let sub = src.join(format!("d{d}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..300 {
            fs::write(sub.join(format!("f{f}")), [d as u8; 16]).unwrap();
        }
    }
    let workers = std::thread::available_parallelism().map_or(4, |n| n.get()) as u64;
    let limit = 24 + workers * 4;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-parameter.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let low = libc::rlimit {
        rlim_cur: limit.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: valid rlimit; only the soft limit is lowered.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let dst = dir.path().join("clone");
    let result = clone_tree(&src, &dst, CloneStrategy::Copy);
    // SAFETY: restores the limit read above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    let stats = result.unwrap_or_else(|e| panic!("clone under {limit} open files: {e}"));
    assert_eq!(stats.files, 12_000);
    assert_eq!(
        fs::read(dst.join("d39/f299")).unwrap(),
        [39u8; 16],
        "content of the last file"
    );
}
