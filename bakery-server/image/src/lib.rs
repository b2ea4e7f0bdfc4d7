//! Reads Raspberry Pi SD-card images without mounting them and clones root trees fast.
//!
//! - [`sample`]: builds small realistic images without root (for demos and tests).
//! - [`import_image`]: extracts an image's boot partition and ext4 root into a directory,
//!   with every file type and all metadata, without mounting and without root.
//! - [`clone_tree`] / [`detect_strategy`]: per-Pi copies of a golden root tree by btrfs
//!   snapshot, reflinks or a parallel copy.
//! - [`clone_file`]: one file (a disk image) by reflink, else a sparse copy.
//! - [`receive_image`]: writes an upload to a file, decoding `.img.gz`, `.img.xz` and `.zip`
//!   (one `.img` inside) while it streams in, within a size limit.
//! - [`remove_tree`]: removes a tree even where read-only directories would stop `rm -rf`
//!   for an unprivileged user.
//!
//! No HTTP, no database, no knowledge of Pis: callers give paths and get [`ImageError`]s
//! whose messages can be shown as they are.
//!
//! # How an image is read
//! The partition table with `mbrman` (MBR, logical partitions) or a small GPT reader
//! (protective MBR; header and entry-array CRC32s verified, falling back to the backup GPT).
//! Partition 1 is the boot partition: FAT via `fatfs` (read-only), or ext4. Partition 2 is
//! the ext4 root: `ext4-view` validates it (superblock, checksums, features, journal) and a
//! small raw reader in this crate walks it, because ext4-view 1.0 exposes no inode numbers
//! (hardlinks), link counts, device numbers or xattrs and re-resolves every path. File
//! systems ext4-view refuses for a feature it lacks (`meta_bg`, `inline_data`) are read by
//! the raw reader alone. File data goes from the image to the new files with
//! `copy_file_range` (holes stay holes), in parallel; inline data (small files, directories
//! and symlinks kept inside their inodes) is written from the inode's bytes.
//!
//! # Metadata
//! Preserved in the root tree (import and clone): file types (regular, directory, symlink,
//! hardlinks as hardlinks, character/block devices with major/minor, fifos, sockets),
//! permission bits incl. setuid/setgid/sticky, uid/gid, atime and mtime with nanoseconds,
//! sparse holes, extended attributes (`user.`, `trusted.`, `security.` incl. file
//! capabilities, POSIX ACLs). Boot files from FAT: names, contents, directories, mtimes
//! (FAT's local time read as UTC); modes 0644/0755.
//!
//! Not preserved: ctime and birth time (set by the kernel), inode flags (`chattr +i` …),
//! FAT attributes (hidden/system/archive). Rejected with an error naming the inode: xattr
//! values in separate inodes (`ea_inode`), encryption, casefolding, file systems whose
//! journal needs recovery.
//!
//! # Without root
//! Import: owners are not set (everything belongs to the caller; counted in
//! [`ImportSummary::warnings`]), device nodes are skipped (listed in the warnings),
//! privileged xattrs the kernel refuses are listed too. Clone: an entry owned by another
//! user is an error. As root both preserve everything exactly or fail.

mod at;
mod clone;
mod decompress;
mod error;
mod ext4raw;
mod host;
mod import;
mod region;
pub mod sample;
mod table;

use std::path::Path;

pub use clone::{
    CloneStats, CloneStrategy, FileClone, FileCloneKind, clone_file, clone_tree, detect_strategy,
};
pub use decompress::{Packing, Received, receive_image};
pub use error::ImageError;
pub use import::{ImportPhase, ImportProgress, ImportSummary, import_image};
pub use sample::{SampleSpec, build_sample_image};

/// Removes the tree at `path` completely (a missing path is fine): a btrfs subvolume in one
/// call where the kernel allows it, else file by file, making read-only directories
/// writable first where needed.
pub fn remove_tree(path: &Path) -> Result<(), ImageError> {
    clone::remove_tree(path).map_err(|e| ImageError::io("remove", path, e))
}
