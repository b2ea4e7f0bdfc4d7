//! The adapter to `bakery-image`: importing an SD-card image into `boot/` + `root/`, and
//! cloning a golden root tree. The rest of the server only sees these few functions.

use std::path::Path;

use bakery_image::ImageError;
use thiserror::Error;

/// How root trees are cloned on this data dir (chosen once at start-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneStrategy {
    /// Plain copy (temporary until bakery-image's cloner lands).
    Copy,
}

impl std::fmt::Display for CloneStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("copy")
    }
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if kind.is_file() {
            std::fs::copy(&from, &to)?;
        } else {
            // Fifos, sockets and device nodes: never opened (a fifo would block); recreated
            // with mknod where allowed, else left out with a warning.
            use std::os::unix::ffi::OsStrExt;
            use std::os::unix::fs::MetadataExt;
            let meta = entry.metadata()?;
            let c_to = std::ffi::CString::new(to.as_os_str().as_bytes())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            // SAFETY: c_to is a valid NUL-terminated path.
            let rc = unsafe { libc::mknod(c_to.as_ptr(), meta.mode(), meta.rdev()) };
            if rc != 0 {
                tracing::warn!(path = %from.display(), error = %std::io::Error::last_os_error(), "special file not cloned");
            }
        }
    }
    Ok(())
}

/// A failure of the image layer.
#[derive(Debug, Error)]
pub enum ImagingError {
    /// The image itself is unusable (the client's fault): the importer's message.
    #[error("{0}")]
    Image(String),
    /// Importing failed for a reason on the server's side (I/O, missing tool).
    #[error("import failed on the server: {0}")]
    Server(String),
    /// Cloning a root tree failed.
    #[error("cannot clone {src} to {dst}: {reason}")]
    Clone {
        /// The golden root.
        src: String,
        /// The new root.
        dst: String,
        /// The cloner's message.
        reason: String,
    },
}

/// Picks the fastest clone strategy that works on `dir`'s file system.
pub fn detect_strategy(dir: &Path) -> CloneStrategy {
    let _ = dir;
    CloneStrategy::Copy
}

/// Imports `image` into `dest` (`dest/boot`, `dest/root`).
pub fn import(image: &Path, dest: &Path) -> Result<(), ImagingError> {
    let mut last_logged = 0u64;
    let mut progress = |p: bakery_image::ImportProgress| {
        let step = format!("{p:?}");
        last_logged += 1;
        if last_logged % 1000 == 1 {
            tracing::debug!(progress = step, "importing");
        }
    };
    bakery_image::import_image(image, dest, &mut progress)
        .map(|summary| tracing::info!(summary = ?summary, "image imported"))
        .map_err(|e| match e {
            ImageError::Io { .. }
            | ImageError::DestinationExists { .. }
            | ImageError::ToolMissing { .. }
            | ImageError::ToolFailed { .. } => ImagingError::Server(e.to_string()),
            other => ImagingError::Image(other.to_string()),
        })
}

/// Clones the golden root `src` to `dst` (which must not exist).
pub fn clone_root(src: &Path, dst: &Path, strategy: CloneStrategy) -> Result<(), ImagingError> {
    let _ = strategy;
    copy_tree(src, dst).map_err(|e| ImagingError::Clone {
        src: src.display().to_string(),
        dst: dst.display().to_string(),
        reason: e.to_string(),
    })
}
