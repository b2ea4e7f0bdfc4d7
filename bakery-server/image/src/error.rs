//! The one error type of bakery-image: every way reading, importing or cloning an image fails.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while building, importing or cloning an image.
///
/// Messages name what failed and with which input, so the caller can show them verbatim
/// (for example as the body of a 400 reply to an upload).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A file system operation on a host path failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("open", "create", "write", …).
        action: &'static str,
        /// The host path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The destination of an import or clone already exists.
    #[error("destination {path} already exists")]
    DestinationExists {
        /// The destination path.
        path: PathBuf,
    },
    /// The image file is empty.
    #[error("image {path} is empty (0 bytes)")]
    EmptyImage {
        /// The image path.
        path: PathBuf,
    },
    /// The image has no (valid) MBR or GPT partition table.
    #[error("no partition table in {path}: {reason}")]
    NoPartitionTable {
        /// The image path.
        path: PathBuf,
        /// Why no table was recognised.
        reason: String,
    },
    /// The partition table lacks a partition the import needs.
    #[error("partition {index} is missing in {path}: {reason}")]
    MissingPartition {
        /// 1-based partition number.
        index: usize,
        /// The image path.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A partition extends past the end of the image file.
    #[error("image truncated: partition {index} ends at byte {end} but the file has {len}")]
    Truncated {
        /// 1-based partition number.
        index: usize,
        /// Byte offset where the partition ends.
        end: u64,
        /// Length of the image file in bytes.
        len: u64,
    },
    /// The boot partition holds neither a FAT nor an ext4 file system.
    #[error("partition {index} is not FAT or ext4: {reason}")]
    BootNotFatOrExt4 {
        /// 1-based partition number.
        index: usize,
        /// What the readers said.
        reason: String,
    },
    /// The root partition holds no ext4 file system.
    #[error("partition {index} is not ext4: {reason}")]
    RootNotExt4 {
        /// 1-based partition number.
        index: usize,
        /// What the reader said.
        reason: String,
    },
    /// Reading an entry of a FAT file system inside the image failed.
    #[error("reading {path} in the FAT boot partition: {source}")]
    Fat {
        /// Path inside the partition.
        path: String,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// Reading an entry of an ext4 file system inside the image failed.
    #[error("reading {path} in the ext4 partition: {reason}")]
    Ext4 {
        /// Path inside the partition (or `inode N`).
        path: String,
        /// The reader's error.
        reason: String,
    },
    /// A file system reader failed on the image in a way it does not describe (it panicked).
    #[error("image {path} is corrupt: {reason}")]
    Corrupt {
        /// The image path.
        path: PathBuf,
        /// What is known.
        reason: String,
    },
    /// An uploaded image, or its decoded content, is larger than the limit.
    #[error("image is larger than the limit of {limit} bytes")]
    UploadTooLarge {
        /// The limit in bytes (for the body and for the decoded image alike).
        limit: u64,
    },
    /// Reading the uploaded body failed (the client broke off).
    #[error("the upload broke off: {reason}")]
    UploadBroken {
        /// The reader's error.
        reason: String,
    },
    /// A compressed upload cannot be decoded.
    #[error("corrupt {format} archive: {reason}")]
    Archive {
        /// `gzip`, `xz` or `zip`.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// A name inside the image cannot be used on the host (empty, `.`/`..`, contains `/` or NUL).
    #[error("unsafe file name {name:?} in {parent} inside the image")]
    UnsafeName {
        /// The offending name, lossily decoded.
        name: String,
        /// The directory holding it.
        parent: String,
    },
    /// An external tool the sample builder needs is not installed.
    #[error("{tool} is not installed (it comes with {package}): {source}")]
    ToolMissing {
        /// The program name.
        tool: &'static str,
        /// The package that ships it.
        package: &'static str,
        /// The error from spawning it.
        #[source]
        source: io::Error,
    },
    /// An external tool ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        /// The program name.
        tool: &'static str,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// A sample spec entry is invalid (absolute path, `..`, duplicate, missing hardlink target …).
    #[error("invalid sample entry {path:?}: {reason}")]
    InvalidSpec {
        /// The entry's path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the FAT boot partition of a sample image failed.
    #[error("writing {path} into the sample FAT partition: {source}")]
    FatWrite {
        /// Path inside the partition.
        path: String,
        /// The writer's error.
        #[source]
        source: io::Error,
    },
    /// Writing the MBR of a sample image failed.
    #[error("writing the partition table of {path}: {reason}")]
    MbrWrite {
        /// The image path.
        path: PathBuf,
        /// The writer's error.
        reason: String,
    },
}

impl ImageError {
    /// Shorthand for [`ImageError::Io`].
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
