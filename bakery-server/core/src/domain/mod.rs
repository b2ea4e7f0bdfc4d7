//! Bakery's domain rules, free of I/O: names, the Pi lifecycle, cmdline.txt, exports, disks,
//! cloud-init files, hardware inventory and bake constraints.

pub mod cloudinit;
pub mod cmdline;
pub mod disks;
pub mod exports;
pub mod hardware;
pub mod lifecycle;
pub mod names;
pub mod nbd;
pub mod network;

pub use lifecycle::{Event, TransitionError, transition};
pub use names::NameError;
