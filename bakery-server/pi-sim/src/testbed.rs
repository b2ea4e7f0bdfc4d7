//! A stand-in bakery for tests and the boot-storm benchmark: a TFTP [`FileProvider`] over
//! one bakeform boot directory that renders `cmdline.txt` per Pi, a sample boot directory,
//! and the `<serial>/` layout tftpd-hpa needs to serve the same files.

use std::io;
use std::path::{Component, Path};

use bakery_tftp::{FileProvider, FileSource, ReadRequest, Refusal};

use crate::valid_serial;

/// Serves one boot directory to every Pi: `<serial>/<path>` and root files from it, and
/// `<serial>/cmdline.txt` rendered with that Pi's NFS root, as bakery does.
#[derive(Debug, Clone)]
pub struct BootDirProvider {
    root: std::path::PathBuf,
    nfs_server: String,
}

impl BootDirProvider {
    /// A provider for the boot directory `root`, naming `nfs_server` in `cmdline.txt`.
    pub fn new(root: &Path, nfs_server: &str) -> BootDirProvider {
        BootDirProvider {
            root: root.to_owned(),
            nfs_server: nfs_server.to_owned(),
        }
    }

    /// The `cmdline.txt` of the Pi `serial`.
    pub fn cmdline(&self, serial: &str) -> String {
        format!(
            "console=serial0,115200 console=tty1 root=/dev/nfs nfsroot={}:/var/lib/bakery/pis/{serial},vers=3 rw ip=dhcp rootwait\n",
            self.nfs_server
        )
    }
}

impl FileProvider for BootDirProvider {
    async fn open(&self, request: &ReadRequest) -> Result<FileSource, Refusal> {
        let name = request.filename.trim_start_matches('/');
        let (serial, relative) = match name.split_once('/') {
            Some((serial, rest)) if valid_serial(serial) => (Some(serial), rest),
            _ => (None, name),
        };
        let path = Path::new(relative);
        if relative.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(Refusal::AccessViolation("outside the boot files".into()));
        }
        if let (Some(serial), "cmdline.txt") = (serial, relative) {
            return Ok(FileSource::Bytes(self.cmdline(serial).into()));
        }
        let file = std::fs::File::open(self.root.join(path)).map_err(|_| Refusal::NotFound)?;
        let metadata = file.metadata().map_err(|_| Refusal::NotFound)?;
        if !metadata.is_file() {
            return Err(Refusal::NotFound);
        }
        Ok(FileSource::File {
            file,
            len: metadata.len(),
        })
    }
}

/// Deterministic pseudo-random bytes, so a misplaced block is noticed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a sample bakeform boot directory for Pi 3, Pi 4 and Pi 5 into `dir`: firmware of
/// 3/8 of `kernel_len`, a `kernel8.img` and a `kernel_2712.img` of `kernel_len` bytes, device trees, an overlay,
/// a `config.txt` naming them and a `cmdline.txt` with an NFS root.
pub fn write_sample_boot_dir(dir: &Path, kernel_len: usize) -> io::Result<()> {
    let firmware = kernel_len * 3 / 8;
    std::fs::create_dir_all(dir.join("overlays"))?;
    let files: [(&str, Vec<u8>); 14] = [
        ("bootcode.bin", noise(52_456, 1)),
        ("start.elf", noise(firmware, 2)),
        ("fixup.dat", noise(7_315, 3)),
        ("start4.elf", noise(firmware * 3 / 4, 4)),
        ("fixup4.dat", noise(5_446, 5)),
        ("bcm2710-rpi-3-b.dtb", noise(31_790, 6)),
        ("bcm2711-rpi-4-b.dtb", noise(52_593, 7)),
        ("overlays/vc4-kms-v3d.dtbo", noise(3_233, 8)),
        ("kernel8.img", noise(kernel_len, 9)),
        ("bcm2712-rpi-5-b.dtb", noise(76_539, 10)),
        ("kernel_2712.img", noise(kernel_len, 11)),
        (
            "config.txt",
            b"# bakery sample bakeform\narm_64bit=1\ndtoverlay=vc4-kms-v3d\nenable_uart=1\n".to_vec(),
        ),
        (
            "cmdline.txt",
            b"console=serial0,115200 root=/dev/nfs nfsroot={{.NfsServer}}:{{.NfsRoot}},vers=3 rw ip=dhcp rootwait\n".to_vec(),
        ),
        ("issue.txt", b"bakery sample boot files\n".to_vec()),
    ];
    for (name, data) in files {
        std::fs::write(dir.join(name), data)?;
    }
    Ok(())
}

/// Lays out `tftp_root` for tftpd-hpa (`in.tftpd -s tftp_root`): the boot directory's
/// files at the root and, for each serial, a relative symlink `<serial>` to them.
pub fn tftpd_hpa_layout(
    boot_dir: &Path,
    tftp_root: &Path,
    serials: impl IntoIterator<Item = String>,
) -> io::Result<()> {
    std::fs::create_dir_all(tftp_root)?;
    let boot = tftp_root.join("boot");
    copy_dir(boot_dir, &boot)?;
    for entry in std::fs::read_dir(boot_dir)? {
        let name = entry?.file_name();
        std::os::unix::fs::symlink(Path::new("boot").join(&name), tftp_root.join(&name))?;
    }
    for serial in serials {
        std::os::unix::fs::symlink("boot", tftp_root.join(serial))?;
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// A tftpd-hpa (`in.tftpd`) running in the foreground on a loopback port, stopped on drop.
#[derive(Debug)]
pub struct TftpdHpa {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl TftpdHpa {
    /// Starts `in.tftpd -L -s <root> -a 127.0.0.1:<free port>` (as root, so `-u root`)
    /// and waits until it answers.
    pub fn start(root: &Path) -> io::Result<TftpdHpa> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let child = std::process::Command::new("in.tftpd")
            .args(["-L", "-u", "root", "-s"])
            .arg(root)
            .arg("-a")
            .arg(addr.to_string())
            .stdin(std::process::Stdio::null())
            .spawn()?;
        let server = TftpdHpa { child, addr };
        // Wait for the listener: a request for a missing file gets an answer once it is up.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0")?;
        probe.set_read_timeout(Some(std::time::Duration::from_millis(50)))?;
        let rrq = b"\0\x01no-such-file\0octet\0";
        let mut buf = [0u8; 600];
        for _ in 0..100 {
            probe.send_to(rrq, addr)?;
            if probe.recv_from(&mut buf).is_ok() {
                return Ok(server);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("in.tftpd on {addr} did not answer"),
        ))
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for TftpdHpa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
