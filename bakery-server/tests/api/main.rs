//! Integration tests of `bakery-server`: the real binary on a loopback port, real HTTP, a real
//! SQLite file, real PPI and exportfs scripts, real sample images.

mod bakeforms;
mod browser;
mod boot;
mod cli;
mod client;
mod common;
mod crash;
mod demo;
mod netboot;
mod disks;
mod load;
mod nfs;
mod pis;
mod ppi;
mod recovery;
mod security;
mod tftp;
mod traversal;
mod visibility;
