//! Reads Raspberry Pi SD-card images without mounting them and clones root trees fast.
//!
//! - [`sample`]: builds small realistic images without root (for demos and tests).
//! - [`import_image`]: extracts an image's boot partition and ext4 root into a directory,
//!   with every file type and all metadata, without mounting and without root.
//! - [`clone_tree`] / [`detect_strategy`]: per-Pi copies of a golden root tree by btrfs
//!   snapshot, reflinks or a parallel copy.
//! - [`remove_tree`]: removes a tree even where read-only directories would stop `rm -rf`
//!   for an unprivileged user.

mod clone;
mod error;
mod ext4raw;
mod host;
mod import;
mod region;
pub mod sample;
mod table;

use std::path::Path;

pub use clone::{CloneStats, CloneStrategy, clone_tree, detect_strategy};
pub use error::ImageError;
pub use import::{ImportPhase, ImportProgress, ImportSummary, import_image};
pub use sample::{SampleSpec, build_sample_image};

/// Removes the tree at `path` completely (a missing path is fine), making read-only
/// directories writable first where needed.
pub fn remove_tree(path: &Path) -> Result<(), ImageError> {
    host::remove_tree(path).map_err(|e| ImageError::io("remove", path, e))
}
