//! Bakery's core: the inventory, bakes, disks, bakeforms, the boot path, power, NFS exports and
//! NBD roots, and what operators observe — everything the server does, without HTTP or a
//! command line (those are the `bakery-server` shell's).
//!
//! Layers: [`service`] (the operations, and the boot path's [`BootFiles`]) → [`domain`] (pure
//! rules: names, lifecycle, cmdline.txt, exports, disks, hardware) and [`db`] (SQLite, the one
//! source of truth); OS-facing adapters behind small traits: [`ppi::Power`],
//! [`exports::Exporter`], [`nbd`], and [`imaging`] for `bakery-image`; observation through the
//! one [`observe::Observer`] ([`events`], [`timeline`], [`metrics`]). The core is configured
//! by [`Settings`], which the shell fills from its flags and files.

pub mod boot;
pub mod db;
pub mod domain;
pub mod events;
pub mod exports;
pub mod fsutil;
pub mod imaging;
pub mod isolation;
pub mod metrics;
pub mod nbd;
pub mod observe;
pub mod ppi;
pub mod service;
pub mod settings;
pub mod timeline;

pub use boot::{BootError, BootFile, BootFiles};
pub use service::{Bakery, ServiceError};
pub use settings::Settings;
