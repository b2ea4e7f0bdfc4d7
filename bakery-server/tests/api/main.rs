//! Integration tests of `bakery-server`: the real binary on a loopback port, real HTTP, a real
//! SQLite file, real PPI and exportfs scripts, real sample images.

mod bakeforms;
mod boot;
mod browser;
mod cli;
mod client;
mod cloudinit;
mod common;
mod compressed;
mod crash;
mod disks;
mod eventlog;
mod hardware;
mod load;
mod nbd;
mod netboot;
mod nfs;
mod openapi;
mod pis;
mod pool;
mod ppi;
mod recovery;
mod security;
mod snapshots;
mod space;
mod strategies;
mod tftp;
mod traversal;
mod uploads;
mod virtual_pi;
mod visibility;
