//! The adapter to `bakery-image`: receiving an upload (decoding `.img.gz`/`.img.xz`/`.zip`),
//! importing an SD-card image into `boot/` + `root/`, and cloning a golden root tree. The
//! rest of the server only sees these few functions.

use std::io::Read;
use std::path::Path;

use bakery_image::ImageError;
use thiserror::Error;

/// How root trees are cloned on this data dir (chosen once at start-up).
pub type CloneStrategy = bakery_image::CloneStrategy;

/// A failure of the image layer.
#[derive(Debug, Error)]
pub enum ImagingError {
    /// The image itself is unusable (the client's fault): the importer's message.
    #[error("{0}")]
    Image(String),
    /// The upload (or the image decoded from it) is larger than the limit.
    #[error("image is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The upload broke off.
    #[error("{0}")]
    Upload(String),
    /// Importing failed for a reason on the server's side (I/O, missing tool).
    #[error("import failed on the server: {0}")]
    Server(String),
    /// The data dir's file system filled up (ENOSPC) while importing or cloning.
    #[error("{0}")]
    NoSpace(String),
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

/// Whether the image layer failed because the file system is full (ENOSPC anywhere in the
/// error's source chain).
fn is_no_space(e: &ImageError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::ENOSPC) {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Removes a tree (a Pi's old root in the trash, a failed import): a btrfs subvolume in one
/// call, anything else file by file.
pub fn remove_tree(path: &Path) -> Result<(), ImageError> {
    bakery_image::remove_tree(path)
}

/// Picks the fastest clone strategy that works on `dir`'s file system.
pub fn detect_strategy(dir: &Path) -> CloneStrategy {
    bakery_image::detect_strategy(dir)
}

/// How an upload is packed (raw, gzip, xz, zip).
pub type Packing = bakery_image::Packing;

/// What receiving an upload read and wrote.
pub type Received = bakery_image::Received;

/// The packing a request's `Content-Type` names, when it names a compressed one.
pub fn packing_of_content_type(content_type: &str) -> Option<Packing> {
    Packing::from_content_type(content_type)
}

/// Writes the uploaded `body` to the new file `dest` as a raw image, decoding it on the way
/// when it is packed (`declared`, or else its magic bytes), at most `limit` bytes in and out.
/// `dest` is removed on failure.
pub fn receive(
    body: &mut dyn Read,
    dest: &Path,
    limit: u64,
    declared: Option<Packing>,
) -> Result<bakery_image::Received, ImagingError> {
    bakery_image::receive_image(body, dest, limit, declared).map_err(|e| match e {
        ImageError::UploadTooLarge { limit } => ImagingError::TooLarge { limit },
        ImageError::UploadBroken { reason } => ImagingError::Upload(reason),
        ImageError::Archive { .. } => ImagingError::Image(e.to_string()),
        other => ImagingError::Server(other.to_string()),
    })
}

/// Imports `image` into `dest` (`dest/boot`, `dest/root`).
pub fn import(image: &Path, dest: &Path) -> Result<(), ImagingError> {
    let mut phase = None;
    let mut progress = |p: bakery_image::ImportProgress| {
        if phase != Some(p.phase) {
            phase = Some(p.phase);
            tracing::info!(image = %image.display(), phase = ?p.phase, files = p.files_total, bytes = p.bytes_total, "import phase");
        }
    };
    // The readers of partition tables and file systems parse the uploader's bytes: should one
    // of them (or a library under it) panic on a crafted image, that is a bad image, not a
    // failed server task.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        bakery_image::import_image(image, dest, &mut progress)
    }));
    let result = outcome.map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown");
        tracing::error!(image = %image.display(), why, "image reader panicked");
        ImagingError::Image(format!(
            "the image could not be read (reader failed: {why})"
        ))
    })?;
    result
        .map(|summary| tracing::info!(summary = ?summary, "image imported"))
        .map_err(|e| match e {
            e if is_no_space(&e) => ImagingError::NoSpace(e.to_string()),
            ImageError::Io { .. }
            | ImageError::DestinationExists { .. }
            | ImageError::ToolMissing { .. }
            | ImageError::ToolFailed { .. } => ImagingError::Server(e.to_string()),
            other => ImagingError::Image(other.to_string()),
        })
}

/// Clones the golden root `src` to `dst` (which must not exist); returns the strategy
/// actually used (a snapshot of a non-subvolume falls back to reflinks, refused reflinks to
/// a copy).
pub fn clone_root(
    src: &Path,
    dst: &Path,
    strategy: CloneStrategy,
) -> Result<CloneStrategy, ImagingError> {
    bakery_image::clone_tree(src, dst, strategy)
        .map(|stats| {
            tracing::debug!(?stats, "root cloned");
            stats.strategy
        })
        .map_err(|e| {
            let clone = ImagingError::Clone {
                src: src.display().to_string(),
                dst: dst.display().to_string(),
                reason: e.to_string(),
            };
            if is_no_space(&e) {
                ImagingError::NoSpace(clone.to_string())
            } else {
                clone
            }
        })
}

/// What cloning a disk image made (reflink or sparse copy, its length, its allocation).
pub type FileClone = bakery_image::FileClone;

/// Clones the disk image `src` into the new file `dst`: a reflink where the file system
/// takes one, else a sparse copy (holes kept); `dst` is removed on failure.
pub fn clone_disk_image(src: &Path, dst: &Path) -> Result<FileClone, ImagingError> {
    bakery_image::clone_file(src, dst).map_err(|e| {
        let clone = ImagingError::Clone {
            src: src.display().to_string(),
            dst: dst.display().to_string(),
            reason: e.to_string(),
        };
        if is_no_space(&e) {
            ImagingError::NoSpace(clone.to_string())
        } else {
            clone
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_system_is_found_in_the_error_chain() {
        let io = |code| ImageError::Io {
            action: "create",
            path: "/data/tmp/x".into(),
            source: std::io::Error::from_raw_os_error(code),
        };
        assert!(is_no_space(&io(libc::ENOSPC)));
        assert!(!is_no_space(&io(libc::EACCES)));
        let dir = tempfile::tempdir().unwrap();
        let err = clone_root(
            &dir.path().join("missing"),
            &dir.path().join("c"),
            CloneStrategy::Copy,
        )
        .unwrap_err();
        assert!(matches!(err, ImagingError::Clone { .. }), "{err:?}");
    }
}
