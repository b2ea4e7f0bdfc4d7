//! Reads Raspberry Pi SD-card images without mounting them and clones root trees fast.
//!
//! - [`sample`]: builds small realistic images without root (for demos and tests).
//! - [`import_image`]: extracts an image's boot partition and ext4 root into a directory,
//!   with every file type and all metadata, without mounting and without root.

mod error;
mod ext4raw;
mod host;
mod import;
mod region;
pub mod sample;
mod table;

pub use error::ImageError;
pub use import::{ImportPhase, ImportProgress, ImportSummary, import_image};
pub use sample::{SampleSpec, build_sample_image};
