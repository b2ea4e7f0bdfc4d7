//! Bakery server library: inventory, bakes, disks, exports, power, HTTP API and boot path.
//!
//! Layers: [`http`] (axum, thin handlers) → [`service`] (orchestration) → [`domain`] (pure
//! rules) and [`db`] (SQLite); OS-facing adapters behind small traits: [`ppi::Power`],
//! [`exports::Exporter`], and [`imaging`] for `bakery-image`.

pub mod app;
pub mod boot;
pub mod config;
pub mod db;
pub mod domain;
pub mod exports;
pub mod fsutil;
pub mod http;
pub mod imaging;
pub mod ppi;
pub mod service;

pub use app::{App, AppError};
pub use boot::{BootError, BootFile, BootFiles};
pub use config::{Cli, Command, Config, ConfigError, ServeArgs};
pub use service::{Bakery, ServiceError};
