//! Reads Raspberry Pi SD-card images without mounting them and clones root trees fast.
//!
//! - [`sample`]: builds small realistic images without root (for demos and tests).

mod error;
mod region;
pub mod sample;

pub use error::ImageError;
pub use sample::{SampleSpec, build_sample_image};
