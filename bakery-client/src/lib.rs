//! Typed client of bakery's HTTP API v1, wire-compatible with the original Go client.
//!
//! The [`types`] module holds the JSON shapes of the API and [`names`] the rules for the names
//! in its paths (both shared with the server, so the two cannot drift); the HTTP client itself
//! is behind the default `http` feature: the async
//! [`Client`] (reqwest with rustls) and its synchronous twin [`blocking::Client`]. The `cli`
//! feature (default) adds the `bakery` operator command line (module `cli`).
//!
//! ```no_run
//! # #[cfg(feature = "http")]
//! # async fn example() -> Result<(), bakery_client::Error> {
//! use std::time::Duration;
//! use bakery_client::{ClientBuilder, CreateDiskRequest};
//!
//! let client = ClientBuilder::new("http://10.0.0.2:8080/api/v1")
//!     .token("s3cret")
//!     .build()?;
//! let form = client
//!     .upload_bakeform("raspios", "raspios.img".as_ref(), None)
//!     .await?;
//! let pi = client.bake_from(&form.name).await?;
//! let pi = client.wait_baked(&pi.id, Duration::from_secs(300)).await?;
//! let disk = client
//!     .create_disk(&CreateDiskRequest { size: 1024, ephemeral: false })
//!     .await?;
//! client.attach_disk(&pi.id, &disk.id).await?;
//! client.upload_pi_file(&pi.id, "settings.json", b"{}".to_vec()).await?;
//! match client.pi("00000000").await {
//!     Err(e) if e.is_not_found() => println!("no such pi"),
//!     other => println!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

#[macro_use]
mod named;
pub mod names;
pub mod types;

pub use named::UnknownName;

pub use types::*;

#[cfg(feature = "http")]
pub mod blocking;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
mod error;
#[cfg(feature = "http")]
mod sse;

#[cfg(feature = "http")]
pub use client::{
    Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, DEFAULT_UPLOAD_TIMEOUT,
    Progress, ProgressFn,
};
#[cfg(feature = "http")]
pub use error::Error;
#[cfg(feature = "http")]
pub use sse::{EventIter, EventStream};
