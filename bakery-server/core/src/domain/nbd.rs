//! NBD roots, free of I/O: the nbd-server config bakery writes, which Pi address gets which
//! root image, and the `nbdroot=` value of a Pi's `cmdline.txt`.
//!
//! nbd-server serves one export, [`EXPORT_NAME`], whose file name holds the connecting
//! client's address (`exportname = <links>/%s`, nbd-server's `ipliteral` virtualization): a Pi
//! at `10.0.0.21` opens `<links>/10.0.0.21`, a symbolic link bakery points at that Pi's
//! `root.ext4`. One static export rather than a section per Pi, because nbd-server 3.24 aborts
//! ("corrupted size vs. prev_size") when a SIGHUP reload adds a section, and a reload never
//! removes one; this way nothing is reloaded: links and the authfile are read per connection.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The one export name Pis ask nbd-server for.
pub const EXPORT_NAME: &str = "bakery";
/// The root image's file name inside an nbd Pi's root disk directory.
pub const ROOT_IMAGE: &str = "root.ext4";
/// The cached root image of a bakeform, next to its `boot/` and `root/`.
pub const BAKEFORM_IMAGE: &str = "root.ext4";

/// A Pi in the oven whose root is an NBD image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdRoot {
    /// The Pi.
    pub serial: String,
    /// Its root disk directory (which holds [`ROOT_IMAGE`]).
    pub root_dir: PathBuf,
    /// The address it was seen at; nothing is served before it is known.
    pub address: Option<IpAddr>,
}

/// The file name nbd-server makes of a client's address (`%s` under `ipliteral`): IPv4 in
/// dotted quads (an IPv4-mapped IPv6 address as its IPv4 address), IPv6 compressed.
pub fn address_name(address: IpAddr) -> String {
    address.to_canonical().to_string()
}

/// Which address gets which image: one entry per Pi with a known address; when two Pis claim
/// one address (a serial reused, a stale lease) neither is served, as neither can be told
/// from the other.
pub fn links(roots: &[NbdRoot]) -> BTreeMap<String, PathBuf> {
    let mut by_address: BTreeMap<String, Vec<&NbdRoot>> = BTreeMap::new();
    for root in roots {
        if let Some(address) = root.address {
            by_address
                .entry(address_name(address))
                .or_default()
                .push(root);
        }
    }
    by_address
        .into_iter()
        .filter(|(_, pis)| pis.len() == 1)
        .map(|(name, pis)| (name, pis[0].root_dir.join(ROOT_IMAGE)))
        .collect()
}

/// The authfile: one line per address that has an image, nothing else (an empty file lets
/// nobody in; nbd-server lets everyone in only when the file is missing, which bakery never
/// leaves it).
pub fn render_authfile(links: &BTreeMap<String, PathBuf>) -> String {
    let mut out = String::from("# Written by bakery: addresses of the Pis with an nbd root.\n");
    for address in links.keys() {
        out.push_str(address);
        out.push('\n');
    }
    out
}

/// The nbd-server config: the `[generic]` section (port, no export listing) and the one
/// export, whose file is `<links_dir>/<client address>`.
pub fn render_config(port: u16, links_dir: &Path, authfile: &Path) -> String {
    format!(
        "# Written by bakery at start-up; do not edit (see README, NBD roots).\n\
         [generic]\n    port = {port}\n    allowlist = false\n\
         [{EXPORT_NAME}]\n    exportname = {}/%s\n    virtstyle = ipliteral\n    authfile = {}\n    flush = true\n    fua = true\n",
        links_dir.display(),
        authfile.display()
    )
}

/// The value of `nbdroot=` for initramfs-tools' nbd script (`<server>:<port>/<export>`, or
/// `[<v6>]:<port>/<export>`); with `root=/dev/nbd0` the script connects `/dev/nbd0` to it.
pub fn nbdroot(server: &str, port: u16) -> String {
    if server.contains(':') && !server.starts_with('[') {
        format!("[{server}]:{port}/{EXPORT_NAME}")
    } else {
        format!("{server}:{port}/{EXPORT_NAME}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(serial: &str, address: Option<&str>) -> NbdRoot {
        NbdRoot {
            serial: serial.into(),
            root_dir: PathBuf::from(format!("/d/disks/{serial}")),
            address: address.map(|a| a.parse().unwrap()),
        }
    }

    #[test]
    fn each_known_address_gets_its_own_image() {
        let links = links(&[
            root("1a2b3c4d", Some("10.0.0.21")),
            root("2b3c4d5e", None),
            root("3c4d5e6f", Some("::ffff:10.0.0.22")),
        ]);
        assert_eq!(links.len(), 2);
        assert_eq!(
            links["10.0.0.21"],
            PathBuf::from("/d/disks/1a2b3c4d/root.ext4")
        );
        assert_eq!(
            links["10.0.0.22"],
            PathBuf::from("/d/disks/3c4d5e6f/root.ext4")
        );
        assert_eq!(
            render_authfile(&links)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            ["10.0.0.21", "10.0.0.22"]
        );
    }

    #[test]
    fn an_address_two_pis_claim_serves_neither() {
        let links = links(&[
            root("1a2b3c4d", Some("10.0.0.21")),
            root("2b3c4d5e", Some("10.0.0.21")),
        ]);
        assert!(links.is_empty());
        assert!(render_authfile(&links).lines().all(|l| l.starts_with('#')));
    }

    #[test]
    fn the_config_has_one_virtualized_export() {
        let config = render_config(10809, Path::new("/d/nbd/roots"), Path::new("/d/nbd/allow"));
        assert!(config.contains("[generic]\n    port = 10809\n"));
        assert!(config.contains("[bakery]\n    exportname = /d/nbd/roots/%s\n"));
        assert!(config.contains("authfile = /d/nbd/allow\n"));
        assert_eq!(config.matches('[').count(), 2);
    }

    #[test]
    fn nbdroot_brackets_ipv6_servers() {
        assert_eq!(nbdroot("10.0.0.2", 10809), "10.0.0.2:10809/bakery");
        assert_eq!(nbdroot("fd00::2", 10900), "[fd00::2]:10900/bakery");
    }
}
