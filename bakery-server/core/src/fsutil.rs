//! Small file-system helpers: atomic writes, free space, moving trees to the trash.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same directory, then renames it
/// into place, so readers see the old or the new content, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let (avail, frsize) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Ok(avail.saturating_mul(frsize))
}

/// Bytes the tree at `path` occupies on disk (allocated blocks, each inode counted once so
/// hardlinks are not counted twice, symlinks not followed, other file systems not entered):
/// what a full copy of it needs.
pub fn tree_bytes(path: &Path) -> std::io::Result<u64> {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let top = fs::symlink_metadata(path)?;
    let device = top.dev();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut total: u64 = 0;
    let mut dirs = vec![path.to_owned()];
    let mut count = |meta: &fs::Metadata| {
        if meta.nlink() < 2 || seen.insert(meta.ino()) {
            total = total.saturating_add(meta.blocks().saturating_mul(512));
        }
    };
    count(&top);
    if !top.is_dir() {
        return Ok(total);
    }
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.dev() != device {
                continue;
            }
            count(&meta);
            if meta.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// `bytes` for people: `1.5 GiB`, `812.0 KiB`, `17 bytes` (binary units, one decimal), with
/// the exact count in parentheses when a unit is used.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({bytes} bytes)", UNITS[unit])
}

/// Whether an I/O error is the file system being full (ENOSPC, blocks or inodes).
pub fn is_no_space(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC)
}

/// Moves `path` (file or tree) into `trash` under a fresh name; missing paths are fine.
/// Returns where it went.
pub fn move_to_trash(path: &Path, trash: &Path) -> std::io::Result<Option<PathBuf>> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    fs::create_dir_all(trash)?;
    let dest = trash.join(uuid::Uuid::new_v4().to_string());
    fs::rename(path, &dest)?;
    Ok(Some(dest))
}

/// Removes everything in `dir` (the trash, or the temp dir), logging failures. Trees go
/// through the image layer's remover: a btrfs snapshot root is one subvolume deletion.
pub fn empty_dir(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let result = match entry.file_type() {
            Ok(t) if t.is_dir() => crate::imaging::remove_tree(&path).map_err(|e| e.to_string()),
            _ => fs::remove_file(&path).map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/exports");
        write_atomic(&file, b"one").unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn trash_and_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        let trash = dir.path().join("trash");
        assert!(move_to_trash(&tree, &trash).unwrap().is_some());
        assert!(!tree.exists());
        assert!(move_to_trash(&tree, &trash).unwrap().is_none());
        empty_dir(&trash);
        assert_eq!(fs::read_dir(&trash).unwrap().count(), 0);
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }

    #[test]
    fn tree_bytes_counts_blocks_once_per_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/big"), vec![7u8; 1 << 20]).unwrap();
        fs::hard_link(tree.join("a/b/big"), tree.join("a/link")).unwrap();
        std::os::unix::fs::symlink("/usr", tree.join("usr")).unwrap();
        let bytes = tree_bytes(&tree).unwrap();
        let file = fs::metadata(tree.join("a/b/big")).unwrap().blocks() * 512;
        assert!(file >= 1 << 20, "{file}");
        // The file once (not twice for its hardlink), plus directories; /usr not followed.
        assert!(bytes >= file && bytes < 2 * file, "{bytes} vs {file}");
        assert_eq!(
            tree_bytes(&tree.join("a/b/big")).unwrap(),
            file,
            "a single file"
        );
        assert!(tree_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(17), "17 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB (1073741824 bytes)");
        assert!(human_bytes(u64::MAX).starts_with("16.0 EiB"));
    }

    #[test]
    fn no_space_is_recognised_in_errors() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_no_space(&full));
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(!is_no_space(&denied));
    }
}
