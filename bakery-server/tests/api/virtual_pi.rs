//! Virtual arm64 Pis that boot Linux from bakery, end to end: DHCP from the site's dnsmasq,
//! the boot files over bakery's TFTP server, the root over NFS from nfs-ganesha or over NBD
//! from nbd-server, userspace on the Pi's own root.
//!
//! Each test makes a network namespace with a bridge (bakery, dnsmasq and ganesha or
//! nbd-server on 10.77.0.1) and one tap per guest. Its thread enters the namespace, so every process it
//! starts, and its HTTP client, live there. Each guest is QEMU's `virt` arm64 board running
//! U-Boot (Debian `u-boot-qemu`), which stands in for the Pi firmware: driven over the serial
//! console, it does DHCP, then fetches over TFTP what a Pi 4 fetches (`<serial>/start4.elf`,
//! `config.txt`, `cmdline.txt`, the kernel and the initramfs `config.txt` names) and boots
//! the kernel with exactly the rendered `cmdline.txt` as its command line. The Pi's "serial"
//! is the test's; the Pi registers the normal way, by asking under an unknown serial.
//!
//! The bakeform is an SD image built here: its FAT boot partition holds Debian's arm64 kernel
//! (`linux-image-arm64`) as `kernel8.img` and one initramfs for both root kinds
//! (busybox-static:arm64, Debian's arm64 `nbd-client` with the shared libraries it needs and
//! the dynamic loader, and the kernel's virtio-net, NFS, NBD and ext4 modules) that does DHCP
//! as `ip=dhcp` asks and mounts `nfsroot=`, or (after asking for it from an address that is
//! no Pi's, which nbd-server must refuse) connects `/dev/nbd0` to `nbdroot=` and mounts it,
//! read-write; its ext4 root is a busybox userland whose `/sbin/init` writes a marker into
//! the root, says so on the console, tries the export it is told belongs to another Pi (NFS),
//! remounts the root read-only (an NBD root's ext4 is left clean) and powers off. The Debian
//! packages are downloaded by `ci/test` into `target/virtual-pi-debs` (or
//! `BAKERY_VIRTUAL_PI_DEBS`).
//!
//! Without root, QEMU, U-Boot, ganesha (NFS), nbd-server and debugfs (NBD), dnsmasq or the
//! packages a test says why and passes, unless `CI` is set: there a missing tool is a failure.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bakery_client::{Bakeform, BakeformState, PiInfo, PiState, RootKind};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;
use crate::nbd::{NbdServer, cat_in};
use crate::nfs::{GANESHA, Ganesha, terminate, which};

/// One virtual Pi site at a time: the namespace's name is the process's, and two sites of
/// emulated guests at once would share the CPUs (and skew the boot times the tests print).
static VIRTUAL_PIS: Mutex<()> = Mutex::new(());

/// The bridge's address: bakery's TFTP and NFS address, the site's DHCP server.
const HOST: &str = "10.77.0.1";
/// Ports ganesha serves NFS and MOUNT on; the guests' initramfs mounts with them (no
/// portmapper is reachable inside the namespace, as initramfs-tools' `NFSOPTS` would set).
const NFS_PORT: u16 = 2049;
const MNT_PORT: u16 = 20048;
/// Where U-Boot loads `cmdline.txt` (above the kernel and the initramfs).
const CMDLINE_ADDR: &str = "0x4a000000";
const U_BOOT: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// Port nbd-server listens on in the namespace.
const NBD_PORT: u16 = 10809;
/// The kernel modules the initramfs loads (with what they depend on): the guest's NIC, the
/// NFS client, the NBD client and ext4, which Debian builds as modules. `crc32c_generic`
/// comes before ext4 and jbd2, which ask the crypto API for crc32c (no modprobe here to load
/// it on demand).
const MODULES: [&str; 6] = [
    "virtio_mmio",
    "virtio_net",
    "nfsv3",
    "nbd",
    "crc32c_generic",
    "ext4",
];
/// The Debian arm64 packages (file name prefixes): the kernel, busybox, and `nbd-client` with
/// the packages of the shared libraries it loads (`ci/test` downloads the same list).
const DEBS: [&str; 15] = [
    "linux-image-",
    "busybox-static_",
    "nbd-client_",
    "libc6_",
    "libgnutls30_",
    "libnl-3-200_",
    "libnl-genl-3-200_",
    "libgmp10_",
    "libhogweed6_",
    "libnettle8_",
    "libidn2-0_",
    "libunistring2_",
    "libp11-kit0_",
    "libtasn1-6_",
    "libffi8_",
];
/// The marker each guest's init writes into its root.
const MARKER: &str = "bakery-virtual-pi-booted";
/// An address on the guests' segment that is no Pi's (outside the DHCP range, reserved for
/// nobody): an NBD guest's initramfs first asks for its root from it.
const STRANGER: &str = "10.77.0.99";
/// Where the test tells a guest which export is another Pi's.
const OTHER_EXPORT: &str = "etc/bakery-virtual-pi/other-export";

/// The directory of the Debian arm64 packages.
fn debs_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BAKERY_VIRTUAL_PI_DEBS") {
        return dir.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("virtual-pi-debs")
}

/// The one `.deb` in `dir` whose name starts with `prefix` and ends in `_arm64.deb`.
fn find_deb(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with("_arm64.deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Why a test of Pis with `kind` roots cannot run here, if it cannot.
fn missing(kind: RootKind) -> Option<String> {
    match kind {
        RootKind::Nfs => {
            if let Some(reason) = crate::nfs::missing() {
                return Some(reason);
            }
        }
        RootKind::Nbd => {
            for tool in ["nbd-server", "debugfs", "e2fsck"] {
                if which(tool).is_none() {
                    return Some(format!(
                        "{tool} not found (apt-get install nbd-server e2fsprogs)"
                    ));
                }
            }
            // SAFETY: geteuid(2) has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Some("not root: network namespaces and tap devices need root".into());
            }
        }
    }
    for tool in ["qemu-system-aarch64", "dnsmasq", "ip", "dpkg-deb", "gzip"] {
        if which(tool).is_none() {
            return Some(format!(
                "{tool} not found (apt-get install qemu-system-arm dnsmasq-base iproute2 gzip)"
            ));
        }
    }
    if !Path::new(U_BOOT).is_file() {
        return Some(format!("{U_BOOT} not found (apt-get install u-boot-qemu)"));
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun missing: no tap devices".into());
    }
    let dir = debs_dir();
    for prefix in DEBS {
        if find_deb(&dir, prefix).is_none() {
            return Some(format!(
                "no {prefix}*_arm64.deb in {} (ci/test downloads linux-image-arm64's kernel, busybox-static:arm64, nbd-client:arm64 and its libraries there)",
                dir.display()
            ));
        }
    }
    None
}

/// Debian's arm64 kernel image (an uncompressed `Image`, as `vmlinuz`), busybox, the
/// [`MODULES`] with what they depend on (dependencies first) and nbd-client with its shared
/// libraries, read from the packages once per test process ([`Arm64::get`]) and shared by the
/// tests.
struct Arm64 {
    kernel: Vec<u8>,
    busybox: Vec<u8>,
    modules: Vec<(String, Vec<u8>)>,
    nbd_client: Vec<(String, Vec<u8>)>,
}

static ARM64: OnceLock<Arm64> = OnceLock::new();

/// What is unpacked of the kernel package (tar patterns): the kernel and the module
/// directories the closure of [`MODULES`] lives in. The whole package is 350 MB in 4,000
/// files, 10 s to unpack and seconds more to delete; this is 73 MB in under 300.
const KERNEL_PARTS: [&str; 10] = [
    "./boot/vmlinuz-*",
    "./lib/modules/*/kernel/drivers/virtio",
    "./lib/modules/*/kernel/drivers/net/virtio_net.ko",
    "./lib/modules/*/kernel/drivers/net/net_failover.ko",
    "./lib/modules/*/kernel/drivers/block",
    "./lib/modules/*/kernel/net/core",
    "./lib/modules/*/kernel/net/sunrpc",
    "./lib/modules/*/kernel/fs",
    "./lib/modules/*/kernel/crypto",
    "./lib/modules/*/kernel/lib",
];

impl Arm64 {
    fn get() -> &'static Arm64 {
        ARM64.get_or_init(Arm64::unpack)
    }

    fn unpack() -> Arm64 {
        let dir = tempfile::Builder::new()
            .prefix("bakery-arm64-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        let debs = debs_dir();
        for prefix in DEBS {
            let deb = find_deb(&debs, prefix).unwrap();
            if prefix == "linux-image-" {
                unpack_parts(&deb, root, &KERNEL_PARTS);
            } else {
                run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root));
            }
        }
        let modules = only_entry(&root.join("lib/modules"), "").join("kernel");
        Arm64 {
            kernel: std::fs::read(only_entry(&root.join("boot"), "vmlinuz-")).unwrap(),
            busybox: std::fs::read(root.join("bin/busybox")).unwrap(),
            modules: module_order(&modules, &MODULES),
            nbd_client: nbd_client(root),
        }
    }
}

/// Unpacks into `dir` only the members of the package `deb` that match `patterns`.
fn unpack_parts(deb: &Path, dir: &Path, patterns: &[&str]) {
    let mut data = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .expect("dpkg-deb starts");
    let tar = Command::new(which("tar").expect("tar on the PATH"))
        .args(["-x", "--wildcards", "-C"])
        .arg(dir)
        .args(patterns)
        .stdin(Stdio::from(data.stdout.take().unwrap()))
        .output()
        .unwrap();
    let status = data.wait().unwrap();
    assert!(
        status.success() && tar.status.success(),
        "unpacking {}: dpkg-deb {status}, tar {tar:?}",
        deb.display()
    );
}

/// `sbin/nbd-client` under `root` and, as `lib/<name>`, every shared library it loads (what
/// its `DT_NEEDED` names and theirs, the dynamic loader `ld-linux-aarch64.so.1` among them).
fn nbd_client(root: &Path) -> Vec<(String, Vec<u8>)> {
    let binary = std::fs::read(root.join("sbin/nbd-client")).unwrap();
    let dirs = [
        root.join("lib/aarch64-linux-gnu"),
        root.join("usr/lib/aarch64-linux-gnu"),
    ];
    let mut queue = needed(&binary);
    let mut files = vec![("sbin/nbd-client".to_owned(), binary)];
    while let Some(lib) = queue.pop() {
        let name = format!("lib/{lib}");
        if files.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let path = dirs
            .iter()
            .map(|d| d.join(&lib))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{lib}, which nbd-client loads, is in no package"));
        // The packages' links (libfoo.so.N -> libfoo.so.N.M) are relative: read follows them.
        let data = std::fs::read(path).unwrap();
        queue.extend(needed(&data));
        files.push((name, data));
    }
    files
}

/// The `DT_NEEDED` names of a 64-bit little-endian ELF file: the entries of its dynamic
/// segment, their strings read from `DT_STRTAB` (an address, mapped through the loadable
/// segment that holds it).
fn needed(elf: &[u8]) -> Vec<String> {
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "not a 64-bit little-endian ELF file"
    );
    let u64_at = |at: usize| {
        usize::try_from(u64::from_le_bytes(elf[at..at + 8].try_into().unwrap())).unwrap()
    };
    let u16_at = |at: usize| usize::from(u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()));
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    // (p_type, p_offset, p_vaddr, p_filesz) of each program header.
    let segments: Vec<(u32, usize, usize, usize)> = (0..phnum)
        .map(|i| {
            let h = phoff + i * phentsize;
            let kind = u32::from_le_bytes(elf[h..h + 4].try_into().unwrap());
            (kind, u64_at(h + 8), u64_at(h + 16), u64_at(h + 32))
        })
        .collect();
    const PT_LOAD: u32 = 1;
    const PT_DYNAMIC: u32 = 2;
    const DT_NEEDED: usize = 1;
    const DT_STRTAB: usize = 5;
    let Some(&(_, dynamic, _, size)) = segments.iter().find(|s| s.0 == PT_DYNAMIC) else {
        return Vec::new();
    };
    let entries: Vec<(usize, usize)> = (0..size / 16)
        .map(|i| (u64_at(dynamic + i * 16), u64_at(dynamic + i * 16 + 8)))
        .take_while(|e| e.0 != 0)
        .collect();
    let strtab = entries
        .iter()
        .find(|e| e.0 == DT_STRTAB)
        .map(|e| e.1)
        .expect("a dynamic segment without DT_STRTAB");
    let strtab = segments
        .iter()
        .find(|s| s.0 == PT_LOAD && (s.2..s.2 + s.3).contains(&strtab))
        .map(|s| strtab - s.2 + s.1)
        .expect("DT_STRTAB in no loadable segment");
    entries
        .iter()
        .filter(|e| e.0 == DT_NEEDED)
        .map(|e| {
            let rest = &elf[strtab + e.1..];
            let end = rest.iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&rest[..end]).into_owned()
        })
        .collect()
}

fn only_entry(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("nothing named {prefix}* in {}", dir.display()))
}

/// Every `.ko` under `dir` by module name (`-` read as `_`, as the kernel does).
fn module_index(dir: &Path) -> std::collections::BTreeMap<String, PathBuf> {
    let mut index = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && let Some(stem) = name.strip_suffix(".ko")
            {
                index.insert(stem.replace('-', "_"), path);
            }
        }
    }
    index
}

/// A module's `depends=` from its `.modinfo` section (NUL-separated `key=value` strings).
fn depends(ko: &[u8]) -> Vec<String> {
    let needle = b"depends=";
    let at = ko
        .windows(needle.len())
        .enumerate()
        .find(|(i, w)| *w == needle && (*i == 0 || ko[i - 1] == 0))
        .map(|(i, _)| i + needle.len());
    let Some(start) = at else { return Vec::new() };
    let end = ko[start..]
        .iter()
        .position(|&b| b == 0)
        .map_or(ko.len(), |n| start + n);
    String::from_utf8_lossy(&ko[start..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

/// `wanted` and what they depend on, dependencies first, with their files.
fn module_order(dir: &Path, wanted: &[&str]) -> Vec<(String, Vec<u8>)> {
    fn visit(
        name: &str,
        index: &std::collections::BTreeMap<String, PathBuf>,
        out: &mut Vec<(String, Vec<u8>)>,
    ) {
        if out.iter().any(|(n, _)| n == name) {
            return;
        }
        let path = index
            .get(name)
            .unwrap_or_else(|| panic!("kernel module {name} not in the package"));
        let ko = std::fs::read(path).unwrap();
        for dep in depends(&ko) {
            visit(&dep, index, out);
        }
        out.push((name.to_owned(), ko));
    }
    let index = module_index(dir);
    let mut out = Vec::new();
    for name in wanted {
        visit(name, &index, &mut out);
    }
    out
}

/// One entry of a `newc` cpio archive.
enum Node {
    Dir,
    File(Vec<u8>, u32),
}

/// A `newc` cpio archive (the initramfs format) of `nodes`, parents before children.
fn newc(nodes: &[(&str, Node)]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    fn header(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, size: usize) {
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(size).unwrap(),
            0,
            0,
            0,
            0,
            u32::try_from(name.len() + 1).unwrap(),
            0,
        ];
        out.extend_from_slice(b"070701");
        for field in fields {
            out.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(out);
    }
    let mut out = Vec::new();
    for (ino, (name, node)) in (1u32..).zip(nodes) {
        let (mode, data): (u32, &[u8]) = match node {
            Node::Dir => (0o040_755, &[]),
            Node::File(data, perm) => (0o100_000 | perm, data),
        };
        header(&mut out, ino, name, mode, data.len());
        out.extend_from_slice(data);
        pad(&mut out);
    }
    header(&mut out, 0, "TRAILER!!!", 0, 0);
    out
}

/// The guests' mount options beside what `nfsroot=` says.
fn site_nfs_options(server: &str) -> String {
    format!("nolock,port={NFS_PORT},mountport={MNT_PORT},mountproto=tcp,addr={server}")
}

/// The initramfs's `/init`: modules, DHCP as `ip=dhcp` asks, then the root: over NBD when
/// the command line has `nbdroot=` (as `<server>:<port>/<export>`; asked for first from
/// [`STRANGER`], which nbd-server must refuse, then `/dev/nbd0` connected by nbd-client over
/// netlink from the Pi's own address, so the kernel keeps the connection after `switch_root`), else
/// over NFS from `nfsroot=` (as `<server>:<path>[,<options>]`); then the root's own
/// `/sbin/init`. A step that fails says which and powers off, so the test sees it at once.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "initramfs: $*"; poweroff -f; }
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || fail "insmod $m failed"; done
nfsroot=; nbdroot=; ipconf=
for p in $(cat /proc/cmdline); do
  case "$p" in
    nfsroot=*) nfsroot="${p#nfsroot=}" ;;
    nbdroot=*) nbdroot="${p#nbdroot=}" ;;
    ip=*) ipconf="${p#ip=}" ;;
  esac
done
[ -n "$nfsroot$nbdroot" ] || fail "no nfsroot= or nbdroot= on the command line"
[ "$ipconf" = dhcp ] || fail "ip=$ipconf: this initramfs does ip=dhcp only"
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -q -n -t 20 -T 1 -s /udhcpc.script >/dev/null || fail "no dhcp lease"
if [ -n "$nbdroot" ]; then
  server="${nbdroot%%:*}"
  rest="${nbdroot#*:}"
  port="${rest%%/*}"
  name="${rest#*/}"
  # First from STRANGER, an address that is no Pi's (a host route makes it the source):
  # nbd-server must refuse it.
  ip addr add STRANGER/32 dev eth0
  ip route add "$server/32" dev eth0 src STRANGER
  if said=$(nbd-client "$server" "$port" /dev/nbd1 -N "$name" 2>&1); then
    nbd-client -d /dev/nbd1 >/dev/null 2>&1
    echo "initramfs: export $name SERVED to STRANGER"
  else
    echo "initramfs: export $name refused to STRANGER:" $said
  fi
  ip route del "$server/32" dev eth0
  ip addr del STRANGER/32 dev eth0
  echo "initramfs: connecting /dev/nbd0 to export $name on $server port $port"
  nbd-client "$server" "$port" /dev/nbd0 -N "$name" || fail "nbd-client cannot connect to $nbdroot"
  mount -t ext4 -o rw /dev/nbd0 /root || fail "cannot mount /dev/nbd0"
else
  export_="${nfsroot%%,*}"
  case "$nfsroot" in *,*) opts="${nfsroot#*,}" ;; *) opts= ;; esac
  server="${export_%%:*}"
  echo "initramfs: mounting $export_ ($opts)"
  mount -t nfs -o "SITE_OPTIONS${opts:+,$opts}" "$export_" /root || fail "cannot mount $export_"
fi
exec switch_root /root /sbin/init
"#;

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}"
    ;;
esac
exit 0
"#;

/// The root's `/sbin/init`: the marker (this guest's address and root: the NFS export or
/// `/dev/nbd0`), a console line the test waits for, the other Pi's export tried when the test
/// named one (and, to show the options work, its own again), the root remounted read-only
/// (its ext4 clean on an NBD root), power off.
const ROOT_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin 2>/dev/null
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
addr=$(ip -4 -o addr show eth0 | awk '{print $4}')
root=$(awk '$2 == "/" && $3 != "rootfs" {print $1}' /proc/mounts | tail -n 1)
up=$(cut -d' ' -f1 /proc/uptime)
echo "address=$addr root=$root uptime=$up" > /MARKER
sync
echo "bakery-virtual-pi: userspace on $root as $addr after ${up}s"
if [ -f /OTHER ]; then
  other=$(cat /OTHER)
  mkdir -p /mnt/other
  if mount -t nfs -o "SITE_OPTIONS,vers=3,tcp" "$other" /mnt/other 2>/dev/null; then
    echo "bakery-virtual-pi: other export $other MOUNTED"
  else
    echo "bakery-virtual-pi: other export $other refused"
  fi
  mkdir -p /mnt/self
  if mount -t nfs -o "SITE_OPTIONS,vers=3,tcp" "$root" /mnt/self; then
    echo "bakery-virtual-pi: own export $root mounted again"
    umount /mnt/self
  else
    echo "bakery-virtual-pi: own export $root failed to mount"
  fi
fi
if mount -o remount,ro /; then
  echo "bakery-virtual-pi: root remounted read-only"
else
  echo "bakery-virtual-pi: root not remounted read-only"
fi
echo "bakery-virtual-pi: powering off"
poweroff -f
"#;

/// The initramfs both root kinds boot with, a gzip-compressed `newc` archive.
fn initramfs(arm: &Arm64) -> Vec<u8> {
    let modules = &arm.modules;
    let order: String = modules.iter().map(|(n, _)| format!("{n}\n")).collect();
    let init = INIT
        .replace("SITE_OPTIONS", &site_nfs_options("$server"))
        .replace("STRANGER", STRANGER);
    let mut nodes: Vec<(String, Node)> = [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "root",
        "lib",
        "lib/modules",
    ]
    .into_iter()
    .map(|d| (d.to_owned(), Node::Dir))
    .collect();
    nodes.push(("bin/busybox".into(), Node::File(arm.busybox.clone(), 0o755)));
    nodes.push(("init".into(), Node::File(init.into_bytes(), 0o755)));
    nodes.push((
        "udhcpc.script".into(),
        Node::File(UDHCPC_SCRIPT.as_bytes().to_vec(), 0o755),
    ));
    nodes.push((
        "lib/modules/order".into(),
        Node::File(order.into_bytes(), 0o644),
    ));
    for (name, ko) in modules {
        nodes.push((
            format!("lib/modules/{name}.ko"),
            Node::File(ko.clone(), 0o644),
        ));
    }
    for (name, data) in &arm.nbd_client {
        nodes.push((name.clone(), Node::File(data.clone(), 0o755)));
    }
    let refs: Vec<(&str, Node)> = nodes
        .into_iter()
        .map(|(n, node)| (Box::leak(n.into_boxed_str()) as &str, node))
        .collect();
    gzip(&newc(&refs))
}

/// `data` gzip-compressed (by `gzip`; the kernel unpacks a gzip initramfs, and the shared
/// libraries nbd-client needs halve over TFTP).
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(which("gzip").unwrap())
        .arg("-6")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip starts");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

/// The boot partition a Pi 4 boots from: placeholder firmware, the arm64 kernel as
/// `kernel8.img`, the initramfs, `config.txt` naming both, a `cmdline.txt` for the board's
/// PL011 console.
fn boot_files(arm: &Arm64) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "start4.elf".to_owned(),
            b"placeholder: U-Boot stands in for the firmware\n".to_vec(),
        ),
        ("fixup4.dat".to_owned(), b"placeholder\n".to_vec()),
        (
            "config.txt".to_owned(),
            b"arm_64bit=1\nkernel=kernel8.img\ninitramfs initramfs8 followkernel\nenable_uart=1\n"
                .to_vec(),
        ),
        (
            "cmdline.txt".to_owned(),
            b"console=ttyAMA0,115200 root=/dev/mmcblk0p2 rootfstype=ext4 rootwait panic=-1 quiet\n"
                .to_vec(),
        ),
        ("kernel8.img".to_owned(), arm.kernel.clone()),
        ("initramfs8".to_owned(), initramfs(arm)),
    ]
}

/// Writes `data` at `name` under `root` with `mode`, making its parent directories.
fn put(root: &Path, name: &str, data: &[u8], mode: u32) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The bakeform's SD image: [`boot_files`] and the root `make_root` fills in (given the
/// staging directory).
fn bakeform_image_with(arm: &Arm64, out: &Path, make_root: impl FnOnce(&Path)) {
    let stage = out.with_extension("root");
    std::fs::create_dir_all(&stage).unwrap();
    make_root(&stage);
    let counts = count_tree(&stage);
    build_image_with_boot(out, &boot_files(arm), &stage, counts);
    std::fs::remove_dir_all(&stage).unwrap();
}

/// The default test's bakeform: the busybox root.
fn bakeform_image(arm: &Arm64, out: &Path) {
    bakeform_image_with(arm, out, |stage| {
        for dir in ["bin", "sbin", "proc", "sys", "dev", "tmp", "mnt", "etc"] {
            std::fs::create_dir_all(stage.join(dir)).unwrap();
        }
        put(stage, "bin/busybox", &arm.busybox, 0o755);
        let init = ROOT_INIT
            .replace("SITE_OPTIONS", &site_nfs_options(HOST))
            .replace("/MARKER", &format!("/{MARKER}"))
            .replace("/OTHER", &format!("/{OTHER_EXPORT}"));
        put(stage, "sbin/init", init.as_bytes(), 0o755);
        put(stage, "etc/hostname", b"virtual-pi\n", 0o644);
    });
}

/// Runs `ip` with `args` in the calling thread's namespace, failing on an error.
fn ip(args: &[&str]) {
    run_ok(Command::new(which("ip").unwrap()).args(args));
}

/// A network namespace with the bridge on [`HOST`], removed on drop.
struct Segment {
    name: String,
}

impl Segment {
    /// Makes the namespace and moves the calling thread into it, with the bridge up and a
    /// tap per name in `taps` attached to it.
    fn enter(taps: &[&str]) -> Segment {
        let name = format!("bakery-vpi-{}", std::process::id());
        ip(&["netns", "add", &name]);
        let segment = Segment { name };
        let file = std::fs::File::open(format!("/run/netns/{}", segment.name)).unwrap();
        // SAFETY: setns(2) on a namespace fd we opened; it changes only this thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", "br0", "type", "bridge"]);
        ip(&["addr", "add", &format!("{HOST}/24"), "dev", "br0"]);
        ip(&["link", "set", "br0", "up"]);
        for tap in taps {
            ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
            ip(&["link", "set", tap, "master", "br0"]);
            ip(&["link", "set", tap, "up"]);
        }
        segment
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process killed on drop.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

/// The site's DHCP server: dnsmasq with the snippet `print-dnsmasq-config` renders, its proxy
/// range replaced by a real one (here dnsmasq is the site's server too), and a fixed address
/// per guest MAC as a site reserves them for its Pis.
fn site_dhcp(dir: &Path, guests: &[(&str, &str)]) -> Guarded {
    let out = server_command()
        .args([
            "print-dnsmasq-config",
            "--subnet",
            "10.77.0.0/24",
            "--tftp-server",
            HOST,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "print-dnsmasq-config failed");
    let snippet = String::from_utf8(out.stdout).unwrap();
    assert!(
        snippet.contains("dhcp-range=10.77.0.0,proxy,255.255.255.0"),
        "{snippet}"
    );
    let mut conf: String = snippet
        .lines()
        .map(|l| {
            if l.starts_with("dhcp-range=") {
                "dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h".to_owned()
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    for (mac, addr) in guests {
        conf.push_str(&format!("dhcp-host={mac},{addr}\n"));
    }
    conf.push_str(&format!(
        "interface=br0\nbind-interfaces\ndhcp-leasefile={}\npid-file={}\n",
        dir.join("leases").display(),
        dir.join("dnsmasq.pid").display()
    ));
    let path = dir.join("dnsmasq.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(which("dnsmasq").unwrap())
        .arg("--keep-in-foreground")
        .arg("--user=root")
        .arg(format!("--conf-file={}", path.display()))
        .arg(format!(
            "--log-facility={}",
            dir.join("dnsmasq.log").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq starts");
    Guarded(child)
}

/// One virtual Pi: QEMU's arm64 `virt` board with U-Boot, its serial console on pipes.
struct Guest {
    name: String,
    child: Child,
    stdin: ChildStdin,
    console: Arc<Mutex<Vec<u8>>>,
    commands: usize,
}

impl Guest {
    /// Powers the board on: QEMU starts and U-Boot's autoboot is interrupted.
    fn power_on(name: &str, tap: &str, mac: &str) -> Guest {
        let mut child = Command::new(which("qemu-system-aarch64").unwrap())
            .args(["-M", "virt", "-cpu", "cortex-a57", "-m", "512", "-smp", "1"])
            .args(["-bios", U_BOOT, "-display", "none", "-monitor", "none"])
            .args(["-serial", "stdio", "-no-reboot"])
            .arg("-netdev")
            .arg(format!("tap,id=net0,ifname={tap},script=no,downscript=no"))
            .arg("-device")
            // virtio over MMIO: U-Boot 2023.01 reads no MAC from a virtio-net-pci device
            // (it answers DHCP as 52:52:52:52:52:52, the same for every guest).
            .arg(format!("virtio-net-device,netdev=net0,mac={mac}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-aarch64 starts");
        let console = Arc::new(Mutex::new(Vec::new()));
        for mut stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = console.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        let mut guest = Guest {
            name: name.to_owned(),
            child,
            stdin,
            console,
            commands: 0,
        };
        guest.expect("Hit any key to stop autoboot", Duration::from_secs(60));
        guest.type_text("x");
        guest.expect("=> ", Duration::from_secs(10));
        guest
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.console.lock().unwrap()).into_owned()
    }

    /// Waits until the console shows `needle`; panics with the console otherwise.
    fn expect(&self, needle: &str, timeout: Duration) -> String {
        if eventually(timeout, || self.text().contains(needle)) {
            return self.text();
        }
        panic!(
            "{}: no {needle:?} on the console within {timeout:?}:\n{}",
            self.name,
            self.tail()
        );
    }

    fn tail(&self) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("####")).collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn type_text(&mut self, text: &str) {
        self.stdin.write_all(text.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Runs one U-Boot command line; its output and whether it succeeded.
    fn run(&mut self, command: &str, timeout: Duration) -> (String, bool) {
        self.commands += 1;
        let tag = format!("@@{}=", self.commands);
        let before = self.text().len();
        self.type_text(&format!("{command}; echo {tag}$?\n"));
        let mut rc = None;
        let done = eventually(timeout, || {
            let text = self.text();
            rc = text[before..].match_indices(&tag).find_map(|(at, _)| {
                let rest = &text[before + at + tag.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                (!digits.is_empty() && rest[digits.len()..].starts_with(['\r', '\n']))
                    .then(|| digits.parse::<u32>().unwrap())
            });
            rc.is_some()
        });
        assert!(
            done,
            "{}: {command:?} did not finish within {timeout:?}:\n{}",
            self.name,
            self.tail()
        );
        (self.text()[before..].to_owned(), rc == Some(0))
    }

    /// The firmware's part, played by U-Boot: DHCP, then over TFTP from the server DHCP
    /// named what a Pi 4 fetches from its serial's directory, the command line set to
    /// `cmdline.txt` exactly, and the kernel booted. `Err` with U-Boot's output when a step
    /// fails (the Pi stays in U-Boot, as a Pi's firmware stays in its retry loop).
    fn netboot(&mut self, serial: &str) -> Result<(Duration, String), String> {
        let long = Duration::from_secs(120);
        let fetched = Instant::now();
        let (out, ok) = self.run("setenv autoload no; dhcp", long);
        if !ok {
            return Err(out);
        }
        let (out, _) = self.run("echo server=${serverip}", long);
        assert!(
            out.contains(&format!("server={HOST}")),
            "{}: dhcp named no tftp server {HOST}:\n{out}",
            self.name
        );
        for (file, at) in [
            ("start4.elf", "${loadaddr}"),
            ("config.txt", "${loadaddr}"),
            ("cmdline.txt", CMDLINE_ADDR),
        ] {
            let (out, ok) = self.run(&format!("tftpboot {at} {serial}/{file}"), long);
            if !ok {
                return Err(out);
            }
        }
        // cmdline.txt is one line; NUL-terminated it becomes bootargs unchanged.
        let (out, ok) = self.run(
            &format!(
                "setexpr cmdend {CMDLINE_ADDR} + ${{filesize}}; mw.b ${{cmdend}} 0 1; setexpr.s bootargs *{CMDLINE_ADDR}"
            ),
            long,
        );
        assert!(ok, "{}: setting bootargs failed:\n{out}", self.name);
        for (file, at) in [
            ("kernel8.img", "${kernel_addr_r}"),
            ("initramfs8", "${ramdisk_addr_r}"),
        ] {
            let (out, ok) = self.run(&format!("tftpboot {at} {serial}/{file}"), long);
            if !ok {
                return Err(out);
            }
        }
        let took = fetched.elapsed();
        let bootargs = self.bootargs();
        self.type_text("booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}\n");
        Ok((took, bootargs))
    }

    /// The kernel command line U-Boot set.
    fn bootargs(&mut self) -> String {
        let (out, _) = self.run("printenv bootargs", Duration::from_secs(10));
        out.lines()
            .find_map(|l| l.trim().strip_prefix("bootargs="))
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits for QEMU to exit (the guest powered off).
    fn wait_off(&mut self, timeout: Duration) {
        let off = eventually(timeout, || matches!(self.child.try_wait(), Ok(Some(_))));
        assert!(off, "{}: did not power off:\n{}", self.name, self.tail());
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line of a guest's console `text` that contains `needle`, trimmed ("" if none).
fn console_line(text: &str, needle: &str) -> String {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Skips (loudly) when the virtual Pis with `kind` roots cannot run; fails instead under CI.
fn or_skip(test: &str, kind: RootKind) -> bool {
    match missing(kind) {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: cannot run the virtual Pis under CI: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: cannot run the virtual Pis here: {reason}");
            false
        }
    }
}

fn upload(server: &Server, name: &str, image: &Path) -> Bakeform {
    let resp = server.post_bytes(&format!("/bakeforms/{name}"), std::fs::read(image).unwrap());
    assert_eq!(resp.status(), StatusCode::CREATED, "{:?}", resp.text());
    let mut bakeform = None;
    let ready = eventually(Duration::from_secs(120), || {
        let b: Bakeform = server.get(&format!("/bakeforms/{name}")).json().unwrap();
        let done = b.state != Some(BakeformState::Importing);
        bakeform = Some(b);
        done
    });
    let bakeform = bakeform.unwrap();
    assert!(
        ready && bakeform.state == Some(BakeformState::Ready),
        "{bakeform:?}"
    );
    bakeform
}

fn pi(server: &Server, serial: &str) -> PiInfo {
    let resp = server.get(&format!("/oven/{serial}"));
    assert_eq!(resp.status(), StatusCode::OK, "{serial}");
    resp.json().unwrap()
}

/// The guests: name, tap, MAC, the address the site reserves for it, serial.
const GUESTS: [(&str, &str, &str, &str, &str); 2] = [
    (
        "pi-a",
        "tap-a",
        "52:54:00:77:00:0a",
        "10.77.0.10",
        "7a000001",
    ),
    (
        "pi-b",
        "tap-b",
        "52:54:00:77:00:0b",
        "10.77.0.11",
        "7b000002",
    ),
];

#[test]
fn virtual_pis_boot_linux_from_bakery_each_on_its_own_nfs_root() {
    let test = "virtual_pis_boot_linux_from_bakery_each_on_its_own_nfs_root";
    if !or_skip(test, RootKind::Nfs) {
        return;
    }
    let _site = VIRTUAL_PIS.lock().unwrap_or_else(|e| e.into_inner());
    let _one = GANESHA.lock().unwrap_or_else(|e| e.into_inner());
    // The namespace is the thread's: run the whole test on a thread of its own.
    std::thread::spawn(scenario).join().unwrap();
}

/// The site: the namespace (entered by the calling thread), the DHCP server, bakery and the
/// root server (ganesha for NFS roots, nbd-server reading the config bakery writes for NBD
/// roots) on the bridge, the bakeform `image` uploaded as `virtual-pi`. Fields drop in order:
/// bakery first, the namespace last.
struct Site {
    server: Server,
    _nbd: Option<NbdServer<'static>>,
    _dhcp: Guarded,
    _ganesha: Option<Ganesha>,
    _segment: Segment,
}

impl Site {
    fn start(
        env: &Env,
        image: &Path,
        guests: &[(&str, &str, &str, &str, &str)],
        kind: RootKind,
    ) -> Site {
        let taps: Vec<&str> = guests.iter().map(|g| g.1).collect();
        let segment = Segment::enter(&taps);
        let ganesha = (kind == RootKind::Nfs).then(|| Ganesha::start_here(NFS_PORT, MNT_PORT));
        let reservations: Vec<(&str, &str)> = guests.iter().map(|g| (g.2, g.3)).collect();
        let dhcp = site_dhcp(env.dir.path(), &reservations);
        let nbd_config = env.path("nbd-server.conf");
        let (mut flags, drop) = match &ganesha {
            Some(ganesha) => (ganesha.bakery_flags(), vec!["--exportfs-cmd"]),
            // The NBD site has no NFS server: the base flags' exportfs stand-in stays.
            None => (
                vec![
                    "--nfs-address".into(),
                    String::new(),
                    "--nbd-config".into(),
                    nbd_config.display().to_string(),
                    "--nbd-port".into(),
                    NBD_PORT.to_string(),
                ],
                Vec::new(),
            ),
        };
        let at = flags.iter().position(|f| f == "--nfs-address").unwrap();
        flags[at + 1] = HOST.into();
        flags.extend(["--tftp-listen".into(), format!("{HOST}:69")]);
        let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
        let server = Server::start_custom(env, &drop, &extra);
        // bakery writes nbd-server's config at start-up; nbd-server reads it once.
        let nbd = ganesha
            .is_none()
            .then(|| NbdServer::start(None, &nbd_config, env.path("nbd-server.pid"), NBD_PORT));
        upload(&server, "virtual-pi", image);
        Site {
            server,
            _nbd: nbd,
            _dhcp: dhcp,
            _ganesha: ganesha,
            _segment: segment,
        }
    }
}

fn scenario() {
    let arm = Arm64::get();
    let env = Env::new();
    let image = env.path("virtual-pi.img");
    let built = Instant::now();
    bakeform_image(arm, &image);
    eprintln!("virtual pi: bakeform image built in {:?}", built.elapsed());
    let site = Site::start(&env, &image, &GUESTS, RootKind::Nfs);
    let server = &site.server;

    // Power on: each asks under its unknown serial, is registered, gets nothing, waits in
    // U-Boot (its firmware's retry loop).
    let mut guests: Vec<Guest> = GUESTS
        .iter()
        .map(|(name, tap, mac, _, _)| Guest::power_on(name, tap, mac))
        .collect();
    for (guest, (_, _, _, addr, serial)) in guests.iter_mut().zip(GUESTS) {
        let refused = guest
            .netboot(serial)
            .expect_err("an unknown Pi gets no boot files");
        assert!(
            refused.contains(&format!("our IP address is {addr}")),
            "{refused}\ndnsmasq: {}",
            std::fs::read_to_string(env.path("dnsmasq.log")).unwrap_or_default()
        );
        assert!(
            refused.contains("TFTP error: 'file not found'"),
            "{refused}"
        );
        let info = pi(server, serial);
        assert_eq!(
            info.state,
            Some(PiState::Fridge),
            "{serial} is in the fridge"
        );
        assert_eq!(
            info.address.as_deref(),
            Some(addr),
            "{serial}'s address as bakery saw it"
        );
    }

    // Bake both; tell each which export is the other's.
    let mut roots = Vec::new();
    for _ in GUESTS {
        let resp = server.post_json(
            "/fridge",
            &json!({"bakeformName": "virtual-pi", "powerOn": false}),
        );
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    for (_, _, _, _, serial) in GUESTS {
        assert_eq!(server.wait_baked(serial).status(), StatusCode::OK);
        let info = pi(server, serial);
        roots.push(info.disks.first().expect("a root disk").clone());
    }
    let export = |i: usize| format!("{}:{}", roots[i].nfs_address, roots[i].location);
    for (i, root) in roots.iter().enumerate() {
        let file = Path::new(&root.location).join(OTHER_EXPORT);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, format!("{}\n", export(1 - i))).unwrap();
    }

    // Power both on again (the firmware's retry): both boot at once.
    let mut boots = Vec::new();
    for (guest, (_, _, _, _, serial)) in guests.iter_mut().zip(GUESTS) {
        let started = Instant::now();
        let (fetch, bootargs) = guest
            .netboot(serial)
            .unwrap_or_else(|out| panic!("{serial}: the baked Pi's boot failed:\n{out}"));
        boots.push((started, fetch, bootargs, None::<Duration>));
    }
    let up = eventually(Duration::from_secs(300), || {
        for (guest, boot) in guests.iter().zip(boots.iter_mut()) {
            if boot.3.is_none() && guest.text().contains("bakery-virtual-pi: userspace on") {
                boot.3 = Some(boot.0.elapsed());
            }
        }
        boots.iter().all(|b| b.3.is_some())
    });
    assert!(
        up,
        "not every virtual Pi reached userspace:\n{}",
        guests
            .iter()
            .map(Guest::tail)
            .collect::<Vec<_>>()
            .join("\n----\n")
    );
    for (i, (guest, (name, _, _, addr, serial))) in guests.iter_mut().zip(GUESTS).enumerate() {
        let text = guest.expect("bakery-virtual-pi: powering off", Duration::from_secs(120));
        guest.wait_off(Duration::from_secs(30));
        let line = |needle: &str| console_line(&text, needle);
        // Userspace on its own root, from the address bakery exported it to.
        let userspace = line("bakery-virtual-pi: userspace on");
        assert!(
            userspace.contains(&format!("userspace on {} as {addr}/24", export(i))),
            "{name}: {userspace}"
        );
        let marker = std::fs::read_to_string(Path::new(&roots[i].location).join(MARKER))
            .unwrap_or_else(|e| panic!("{name}: no marker in its root on the host: {e}"));
        assert!(marker.contains(&format!("address={addr}/24")), "{marker}");
        assert!(marker.contains(&format!("root={}", export(i))), "{marker}");
        // The other Pi's export is refused to it; its own mounts again with the same options.
        assert_eq!(
            line("bakery-virtual-pi: other export"),
            format!("bakery-virtual-pi: other export {} refused", export(1 - i)),
            "{name}"
        );
        assert_eq!(
            line("bakery-virtual-pi: own export"),
            format!("bakery-virtual-pi: own export {} mounted again", export(i)),
            "{name}"
        );
        // What bakery saw: a baked Pi whose last boot fetched every file.
        let info = pi(server, serial);
        assert_eq!(info.state, Some(PiState::Baked));
        let last = info.last_boot.expect("a boot timeline");
        assert!(last.files >= 5 && last.failed == 0, "{name}: {last:?}");
        let (_, fetch, _, total) = &boots[i];
        print_boot_times(name, serial, "nfs", *fetch, &userspace, total.unwrap());
    }
    // The kernel ran with exactly the cmdline.txt bakery renders for the Pi.
    for (i, (_, _, _, addr, serial)) in GUESTS.into_iter().enumerate() {
        let rendered = server
            .boot_request(serial, "cmdline.txt", Some(addr))
            .text()
            .unwrap();
        assert_eq!(
            boots[i].2,
            rendered.trim_end(),
            "{serial}: bootargs are cmdline.txt"
        );
        assert!(
            rendered.contains(&format!("nfsroot={},vers=3,tcp", export(i))),
            "{rendered}"
        );
    }

    // Unbake the first and power it on again: the boot stops at its first file.
    let (_, _, _, _, serial) = GUESTS[0];
    assert_eq!(
        server.delete(&format!("/oven/{serial}")).status(),
        StatusCode::OK
    );
    assert!(eventually(Duration::from_secs(30), || {
        pi(server, serial).state == Some(PiState::Fridge)
    }));
    let (name, tap, mac, _, _) = GUESTS[0];
    let mut again = Guest::power_on(name, tap, mac);
    let refused = again
        .netboot(serial)
        .expect_err("an unbaked Pi gets no boot files");
    assert!(
        refused.contains("TFTP error: 'file not found'"),
        "{refused}"
    );
    assert!(!again.text().contains("Starting kernel"));
    drop(again);
    drop(guests);
}

/// Prints a guest's boot times: U-Boot's DHCP and TFTP of the boot files (`fetch`), the
/// kernel's uptime when the root's init ran (from its `userspace` console line), power-on
/// (the DHCP) to that line (`total`).
fn print_boot_times(
    name: &str,
    serial: &str,
    kind: &str,
    fetch: Duration,
    userspace: &str,
    total: Duration,
) {
    let kernel_uptime = userspace
        .rsplit("after ")
        .next()
        .and_then(|s| s.trim_end_matches('s').parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name}: no uptime in {userspace:?}"));
    eprintln!(
        "virtual pi {name} ({serial}): dhcp and boot files over tftp (U-Boot) {:.1} s, kernel to userspace on its {kind} root {kernel_uptime:.2} s, power-on (dhcp) to userspace {:.1} s",
        fetch.as_secs_f64(),
        total.as_secs_f64()
    );
}

#[test]
fn a_virtual_pi_boots_linux_from_bakery_on_its_own_nbd_root() {
    let test = "a_virtual_pi_boots_linux_from_bakery_on_its_own_nbd_root";
    if !or_skip(test, RootKind::Nbd) {
        return;
    }
    let _site = VIRTUAL_PIS.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(nbd_scenario).join().unwrap();
}

/// One virtual Pi baked with an NBD root boots the busybox root from its own `root.ext4`
/// (nbd-server picks the image by the Pi's address; from an address that is no Pi's it is
/// refused), writes the marker into it and leaves the ext4 clean; the bakeform's image stays
/// without it. Unbaked, the Pi's address leaves nbd-server's authfile and its image goes.
fn nbd_scenario() {
    let arm = Arm64::get();
    let env = Env::new();
    let image = env.path("virtual-pi.img");
    bakeform_image(arm, &image);
    let guests = &GUESTS[..1];
    let site = Site::start(&env, &image, guests, RootKind::Nbd);
    let server = &site.server;
    let (name, tap, mac, addr, serial) = guests[0];
    let mut guest = Guest::power_on(name, tap, mac);
    let refused = guest
        .netboot(serial)
        .expect_err("an unknown Pi gets no boot files");
    assert!(
        refused.contains(&format!("our IP address is {addr}")),
        "{refused}"
    );
    assert!(
        refused.contains("TFTP error: 'file not found'"),
        "{refused}"
    );
    assert_eq!(pi(server, serial).state, Some(PiState::Fridge));
    let resp = server.post_json(
        "/fridge",
        &json!({"bakeformName": "virtual-pi", "powerOn": false, "rootKind": "nbd"}),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{:?}", resp.text());
    assert_eq!(server.wait_baked(serial).status(), StatusCode::OK);
    let info = pi(server, serial);
    assert_eq!(info.root_kind, Some(RootKind::Nbd), "{info:?}");
    let root_image = Path::new(&info.disks[0].location).join("root.ext4");
    let bakeform_image = env.data().join("bakeforms/virtual-pi/root.ext4");
    assert!(root_image.is_file(), "{}", root_image.display());
    assert!(bakeform_image.is_file(), "{}", bakeform_image.display());
    // nbd-server lets in the Pi's address only.
    let allow = env.data().join("nbd/allow");
    let allowed = || -> Vec<String> {
        std::fs::read_to_string(&allow)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(allowed(), [addr]);

    let started = Instant::now();
    let (fetch, bootargs) = guest
        .netboot(serial)
        .unwrap_or_else(|out| panic!("{serial}: the baked Pi's boot failed:\n{out}"));
    guest.expect("bakery-virtual-pi: userspace on", Duration::from_secs(120));
    let total = started.elapsed();
    let text = guest.expect("bakery-virtual-pi: powering off", Duration::from_secs(60));
    guest.wait_off(Duration::from_secs(30));
    let line = |needle: &str| console_line(&text, needle);
    let nbdroot = format!("{HOST}:{NBD_PORT}/bakery");
    // From an address that is no Pi's the export is refused by nbd-server's policy; from its
    // own the Pi connects right after.
    let stranger = line("initramfs: export bakery");
    assert!(
        stranger.starts_with(&format!("initramfs: export bakery refused to {STRANGER}:"))
            && stranger.contains("Connection not allowed by server policy"),
        "{stranger}"
    );
    let connecting =
        format!("initramfs: connecting /dev/nbd0 to export bakery on {HOST} port {NBD_PORT}");
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} on the console:\n{}", guest.tail()))
    };
    assert!(at(&stranger) < at(&connecting), "{}", guest.tail());
    let userspace = line("bakery-virtual-pi: userspace on");
    assert!(
        userspace.contains(&format!("userspace on /dev/nbd0 as {addr}/24")),
        "{userspace}"
    );
    assert_eq!(
        line("bakery-virtual-pi: root"),
        "bakery-virtual-pi: root remounted read-only"
    );
    // What bakery saw: a baked Pi whose last boot fetched every file (read before the
    // cmdline.txt fetched below starts a boot of its own).
    let last = pi(server, serial).last_boot.expect("a boot timeline");
    assert!(last.files >= 5 && last.failed == 0, "{last:?}");
    // The kernel ran with exactly the cmdline.txt bakery renders: an NBD root.
    let rendered = server
        .boot_request(serial, "cmdline.txt", Some(addr))
        .text()
        .unwrap();
    assert_eq!(bootargs, rendered.trim_end(), "bootargs are cmdline.txt");
    assert!(
        rendered.contains(&format!("root=/dev/nbd0 nbdroot={nbdroot}")),
        "{rendered}"
    );
    assert!(!rendered.contains("nfsroot="), "{rendered}");

    // The marker is in this Pi's image, clean after the read-only remount, and not in the
    // bakeform's.
    let marker = cat_in(&root_image, &format!("/{MARKER}"))
        .unwrap_or_else(|| panic!("no marker in {}", root_image.display()));
    let marker = String::from_utf8(marker).unwrap();
    assert!(marker.contains(&format!("address={addr}/24")), "{marker}");
    assert!(marker.contains("root=/dev/nbd0"), "{marker}");
    let fsck = Command::new(which("e2fsck").unwrap())
        .arg("-fn")
        .arg(&root_image)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "e2fsck of the Pi's image: {fsck:?}");
    assert_eq!(
        cat_in(&bakeform_image, &format!("/{MARKER}")),
        None,
        "the Pi wrote into the bakeform's image"
    );
    print_boot_times(name, serial, "nbd", fetch, &userspace, total);

    // Unbaked: nbd-server lets nobody in any more, and the Pi's image is gone.
    assert_eq!(
        server.delete(&format!("/oven/{serial}")).status(),
        StatusCode::OK
    );
    assert!(eventually(Duration::from_secs(30), || {
        pi(server, serial).state == Some(PiState::Fridge)
    }));
    assert_eq!(allowed(), Vec::<String>::new());
    assert!(
        eventually(Duration::from_secs(10), || !root_image.exists()),
        "{} outlived the unbake",
        root_image.display()
    );
}

/// The fuller guest's report, a oneshot unit ordered after `multi-user.target`: the marker,
/// a console line the test waits for, power off.
const FULL_REPORT: &str = r#"#!/bin/sh
root=$(awk '$2 == "/" && $3 ~ /^nfs/ {print $1}' /proc/mounts | tail -n 1)
addr=$(ip -4 -o addr show eth0 | awk '{print $4}')
state=$(systemctl is-active multi-user.target)
up=$(cut -d' ' -f1 /proc/uptime)
echo "address=$addr root=$root uptime=$up target=$state" > /MARKER
sync
echo "bakery-virtual-pi: systemd reached multi-user.target ($state) on $root as $addr after ${up}s" > /dev/console
systemctl poweroff --no-block
"#;

const FULL_UNIT: &str = "[Unit]
Description=bakery virtual Pi: report multi-user and power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/bakery-virtual-pi-report

[Install]
WantedBy=multi-user.target
";

/// A Debian bookworm arm64 root with systemd (mmdebstrap's tarball): `BAKERY_VIRTUAL_PI_ROOTFS`,
/// else made once into the packages directory (mmdebstrap runs the arm64 maintainer scripts
/// through qemu-user-static and binfmt_misc).
fn debian_root() -> PathBuf {
    if let Some(path) = std::env::var_os("BAKERY_VIRTUAL_PI_ROOTFS") {
        return path.into();
    }
    let tarball = debs_dir().join("debian-bookworm-arm64-systemd.tar");
    if tarball.is_file() {
        return tarball;
    }
    let partial = tarball.with_extension("partial.tar");
    let started = Instant::now();
    run_ok(
        Command::new(which("mmdebstrap").expect(
            "mmdebstrap not found (apt-get install mmdebstrap qemu-user-static binfmt-support)",
        ))
        .args([
            "--arch=arm64",
            "--variant=minbase",
            "--include=systemd,systemd-sysv,udev,iproute2",
            "bookworm",
        ])
        .arg(&partial),
    );
    std::fs::rename(&partial, &tarball).unwrap();
    eprintln!(
        "virtual pi: debian arm64 root made with mmdebstrap in {:.0?}",
        started.elapsed()
    );
    tarball
}

/// The fuller variant: one virtual Pi boots a Debian bookworm arm64 root (mmdebstrap,
/// minbase + systemd) over NFS until systemd reaches `multi-user.target`, as the default
/// test's busybox root does, and reports it. Not in the default run (it downloads about
/// 100 MB and boots for about a minute); run it with
///
/// ```text
/// cargo test -p bakery-server --test api virtual_pi::a_debian -- --ignored --nocapture
/// ```
///
/// It needs what the default test needs and, unless `BAKERY_VIRTUAL_PI_ROOTFS` names an
/// mmdebstrap tarball, `mmdebstrap`, `qemu-user-static` and binfmt_misc.
#[test]
#[ignore = "fuller variant: a Debian arm64 root with systemd, booted to multi-user (about a minute, downloads)"]
fn a_debian_arm64_root_with_systemd_boots_to_multi_user_over_nfs() {
    if !or_skip(
        "a_debian_arm64_root_with_systemd_boots_to_multi_user_over_nfs",
        RootKind::Nfs,
    ) {
        return;
    }
    let _site = VIRTUAL_PIS.lock().unwrap_or_else(|e| e.into_inner());
    let _one = GANESHA.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(full_scenario).join().unwrap();
}

fn full_scenario() {
    let arm = Arm64::get();
    let tarball = debian_root();
    let env = Env::new();
    let image = env.path("virtual-pi-debian.img");
    let built = Instant::now();
    bakeform_image_with(arm, &image, |stage| {
        run_ok(
            Command::new("tar")
                .args(["--numeric-owner", "-xpf"])
                .arg(&tarball)
                .arg("-C")
                .arg(stage),
        );
        let report = FULL_REPORT.replace("/MARKER", &format!("/{MARKER}"));
        put(
            stage,
            "usr/local/sbin/bakery-virtual-pi-report",
            report.as_bytes(),
            0o755,
        );
        put(
            stage,
            "etc/systemd/system/bakery-virtual-pi.service",
            FULL_UNIT.as_bytes(),
            0o644,
        );
        let wants = stage.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/etc/systemd/system/bakery-virtual-pi.service",
            wants.join("bakery-virtual-pi.service"),
        )
        .unwrap();
        put(stage, "etc/hostname", b"virtual-pi\n", 0o644);
    });
    eprintln!(
        "virtual pi: debian bakeform image built in {:.1?}",
        built.elapsed()
    );
    let guests = &GUESTS[..1];
    let site = Site::start(&env, &image, guests, RootKind::Nfs);
    let server = &site.server;
    let (name, tap, mac, addr, serial) = guests[0];
    let mut guest = Guest::power_on(name, tap, mac);
    guest
        .netboot(serial)
        .expect_err("an unknown Pi gets no boot files");
    let resp = server.post_json(
        "/fridge",
        &json!({"bakeformName": "virtual-pi", "powerOn": false}),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(server.wait_baked(serial).status(), StatusCode::OK);
    let root = pi(server, serial).disks[0].clone();
    let export = format!("{}:{}", root.nfs_address, root.location);
    let started = Instant::now();
    let (fetch, _) = guest
        .netboot(serial)
        .unwrap_or_else(|out| panic!("{serial}: the baked Pi's boot failed:\n{out}"));
    let text = guest.expect(
        "bakery-virtual-pi: systemd reached multi-user.target",
        Duration::from_secs(600),
    );
    let total = started.elapsed();
    let line = text
        .lines()
        .find(|l| l.contains("bakery-virtual-pi: systemd reached"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        line.contains(&format!("(active) on {export} as {addr}/24")),
        "{line}"
    );
    guest.wait_off(Duration::from_secs(120));
    let marker = std::fs::read_to_string(Path::new(&root.location).join(MARKER))
        .unwrap_or_else(|e| panic!("no marker in the Pi's root on the host: {e}"));
    assert!(marker.contains("target=active"), "{marker}");
    assert!(marker.contains(&format!("root={export}")), "{marker}");
    eprintln!(
        "virtual pi {name} ({serial}), debian + systemd: dhcp and boot files {:.1} s, {line}; power-on (dhcp) to multi-user {:.1} s",
        fetch.as_secs_f64(),
        total.as_secs_f64()
    );
}
