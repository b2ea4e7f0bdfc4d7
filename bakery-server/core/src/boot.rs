//! Boot-file resolution, shared by HTTP `GET /files/...` and the TFTP server: which bytes a Pi
//! gets for a path, registering unknown Pis and powering off the ones that may not boot.

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bakery_client::{PiState, RootKind};
use thiserror::Error;

use crate::domain::cmdline::{self, CmdlineInput};
use crate::domain::names::{NameError, Serial, boot_path_components};
use crate::service::{Bakery, ServiceError};

/// The file every Pi's kernel command line comes from.
pub const CMDLINE: &str = "cmdline.txt";
/// The Pi 3 boot ROM probes this and expects "file not found".
pub const BOOTSIG: &str = "bootsig.bin";
/// The one file served at the TFTP root: the Pi 3 boot ROM's second stage, which boots
/// nothing by itself and asks for everything else under `<serial>/`.
///
/// Nothing else is served at the root. A Pi 4/5 bootloader (and a Pi 3's `bootcode.bin`)
/// whose first file is not found under `<serial>/` clears the prefix and retries at the
/// root (Raspberry Pi bootloader configuration, `TFTP_PREFIX`): if the root had
/// `start*.elf`, a kernel or a `cmdline.txt`, a Pi in the fridge, or one bakery never saw,
/// would boot a bakeform's stock files.
pub const BOOTCODE: &str = "bootcode.bin";

/// What a boot path resolves to, ready to send: TFTP and HTTP serve it as it is.
#[derive(Debug)]
pub enum BootFile {
    /// Rendered content (the Pi's `cmdline.txt`).
    Bytes(Vec<u8>),
    /// A file on disk, opened once its real path was checked to lie inside the boot directory.
    File {
        /// The open file, to be read from its start.
        file: File,
        /// Its length in bytes, as the open file has it.
        len: u64,
    },
}

impl BootFile {
    /// The length in bytes (TFTP's `tsize`).
    pub fn len(&self) -> u64 {
        match self {
            BootFile::Bytes(b) => b.len() as u64,
            BootFile::File { len, .. } => *len,
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a boot file is not served.
#[derive(Debug, Error)]
pub enum BootError {
    /// No such file, or the Pi may not boot now (TFTP error 1, HTTP 404).
    #[error("boot file {0} not found")]
    NotFound(String),
    /// The path is not acceptable (TFTP error 2, HTTP 400).
    #[error(transparent)]
    InvalidPath(#[from] NameError),
    /// The server failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<BootError> for ServiceError {
    fn from(e: BootError) -> ServiceError {
        match e {
            BootError::NotFound(path) => ServiceError::BootFileNotFound(path),
            BootError::InvalidPath(name) => ServiceError::InvalidName(name),
            BootError::Service(s) => s,
        }
    }
}

/// Resolves boot files for Pis. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BootFiles {
    bakery: Arc<Bakery>,
}

impl BootFiles {
    /// Boot files of `bakery`.
    pub fn new(bakery: Arc<Bakery>) -> BootFiles {
        BootFiles { bakery }
    }

    /// Where boot-path requests are reported (timelines, metrics).
    pub fn observer(&self) -> &Arc<crate::observe::Observer> {
        self.bakery.observer()
    }

    /// Resolves a full TFTP-style path: `<serial>/<path>` for a Pi's directory, anything else
    /// at the root level, where only [`BOOTCODE`] is served. This is where a boot path's
    /// serial is checked (parsed into a [`Serial`]), for TFTP and HTTP alike.
    pub async fn open_path(&self, full: &str, peer: Option<IpAddr>) -> Result<BootFile, BootError> {
        let full = full.trim_start_matches('/');
        let pi_dir = full
            .split_once('/')
            .and_then(|(first, rest)| Some((Serial::parse(first).ok()?, rest)));
        match pi_dir {
            Some((serial, rest)) => self.open(Some(&serial), rest, peer).await,
            None => self.open(None, full, peer).await,
        }
    }

    /// Resolves `path` inside the Pi directory `serial_dir` (or the root level when `None`,
    /// where only [`BOOTCODE`] is served, from `--boot-root-dir` or the newest ready
    /// bakeform's boot directory).
    ///
    /// An unknown serial is registered in the fridge and powered off; a Pi that is not baked
    /// is powered off (fridge) or ignored (preparing); both get `NotFound`. A baked Pi gets
    /// files from its bakeform's boot directory and its own rendered `cmdline.txt`.
    pub async fn open(
        &self,
        serial_dir: Option<&Serial>,
        path: &str,
        peer: Option<IpAddr>,
    ) -> Result<BootFile, BootError> {
        let components = boot_path_components(path)?;
        let Some(serial) = serial_dir else {
            return self.open_root_level(path, &components).await;
        };
        let not_found = || BootError::NotFound(format!("{serial}/{path}"));
        // Reads first: a booting Pi asks for dozens of files, writes happen only on news.
        let key = serial.clone();
        let known = self
            .bakery
            .store()
            .call(move |store| store.pi(&key))
            .await
            .map_err(ServiceError::from)?;
        if let Some(addr) = peer
            && let Some(reason) =
                crate::isolation::pinned_refusal(&self.bakery, serial, addr, known.as_ref()).await?
        {
            tracing::warn!(%serial, peer = %addr, reason, "boot request refused (--pin-pi-addresses)");
            return Err(not_found());
        }
        if known.is_none() && self.bakery.register(serial).await?.is_none() {
            // The inventory is full: not registered, not powered off (it is not ours).
            return Err(not_found());
        }
        if let Some(addr) = peer.filter(|a| Some(*a) != known.as_ref().and_then(|p| p.address)) {
            self.bakery.saw_pi_at(serial, addr).await?;
        }
        // The inventory is written only on news: a model not recorded yet, or a last-seen
        // time a minute old (the row read above tells, so most requests write nothing).
        let model = crate::domain::hardware::model_from_request(path);
        let now = crate::observe::unix_ms();
        let news = known.as_ref().is_none_or(|pi| {
            (model.is_some() && pi.model != model)
                || pi
                    .last_seen
                    .is_none_or(|at| crate::domain::hardware::seen_is_stale(at, now))
        });
        if news {
            self.bakery.saw_pi_ask(serial, model, now).await;
        }
        let Some(pi) = known else {
            self.bakery.power_off_stray(serial);
            return Err(not_found());
        };
        match pi.state {
            PiState::Baked => {}
            PiState::Fridge => {
                self.bakery.power_off_stray(serial);
                return Err(not_found());
            }
            PiState::Preparing | PiState::Unbaking => return Err(not_found()),
        }
        let bakeform = pi.bakeform.as_ref().ok_or_else(not_found)?;
        let boot_dir = self.bakery.layout().bakeform(bakeform).join("boot");
        if components.len() == 1 && components[0] == CMDLINE {
            let own = match tokio::fs::read_to_string(boot_dir.join(CMDLINE)).await {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => {
                    return Err(ServiceError::Io {
                        context: format!("cannot read cmdline.txt of bakeform {bakeform}"),
                        source: e,
                    }
                    .into());
                }
            };
            let key = serial.clone();
            let disks = self
                .bakery
                .store()
                .call(move |store| store.disks_of(&key))
                .await
                .map_err(ServiceError::from)?;
            let root = disks.first().ok_or_else(not_found)?;
            let nocloud_url = self.bakery.nocloud_url();
            let nbd_root = match (pi.root_kind, self.bakery.nbd()) {
                (RootKind::Nbd, Some(nbd)) => Some(crate::domain::nbd::nbdroot(
                    &self.bakery.config().nfs_address,
                    nbd.port(),
                )),
                _ => None,
            };
            let line = cmdline::render(&CmdlineInput {
                bakeform_cmdline: &own,
                operator_template: self.bakery.cmdline_template(),
                nfs_server: &self.bakery.config().nfs_address,
                nfs_root: &root.location,
                network: pi.network.as_ref(),
                serial: serial.as_str(),
                nocloud_url: &nocloud_url,
                nbd_root: nbd_root.as_deref(),
            });
            return Ok(BootFile::Bytes(line.into_bytes()));
        }
        resolve_in(&boot_dir, &components)
            .await?
            .ok_or_else(not_found)
    }

    async fn open_root_level(
        &self,
        path: &str,
        components: &[&str],
    ) -> Result<BootFile, BootError> {
        let not_found = || BootError::NotFound(path.to_owned());
        if components != [BOOTCODE].as_slice() {
            if components.len() == 1 && components[0] != BOOTSIG {
                tracing::debug!(
                    path,
                    "root-level boot file refused: only {BOOTCODE} is served at the root"
                );
            }
            return Err(not_found());
        }
        let dir = match &self.bakery.config().boot_root_dir {
            Some(dir) => dir.clone(),
            None => {
                let newest = self
                    .bakery
                    .store()
                    .call(|store| store.newest_ready_bakeform())
                    .await
                    .map_err(ServiceError::from)?;
                match newest {
                    Some(b) => PathBuf::from(b.location).join("boot"),
                    None => return Err(not_found()),
                }
            }
        };
        resolve_in(&dir, components).await?.ok_or_else(not_found)
    }
}

/// `dir/<components>`, opened, if it is a regular file whose real path stays inside `dir`'s
/// real path (a symlink pointing out of the boot directory is refused); `None` when it is not
/// served, an error when it passed those checks but cannot be opened.
async fn resolve_in(dir: &Path, components: &[&str]) -> Result<Option<BootFile>, ServiceError> {
    let mut path = dir.to_owned();
    for c in components {
        path.push(c);
    }
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || open_in(&dir, &path))
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
}

/// [`resolve_in`]'s checks and the one open of the file, off the async runtime. A path that
/// is not there (no such file, a file where a directory should be, a symlink loop) is
/// `None`; any other error (out of file descriptors, an I/O error) is an error, never
/// passed off as a missing file.
fn open_in(dir: &Path, path: &Path) -> Result<Option<BootFile>, ServiceError> {
    let Some(real_dir) = unless_absent(std::fs::canonicalize(dir), dir)? else {
        return Ok(None);
    };
    let Some(real) = unless_absent(std::fs::canonicalize(path), path)? else {
        return Ok(None);
    };
    if !real.starts_with(&real_dir) {
        tracing::warn!(path = %path.display(), "boot file resolves outside its boot directory, refused");
        return Ok(None);
    }
    // Checked before opening too: opening a FIFO or a device could block or have effects.
    if !unless_absent(std::fs::metadata(&real), &real)?.is_some_and(|meta| meta.is_file()) {
        return Ok(None);
    }
    let context = format!("cannot open {}", real.display());
    let file = File::open(&real).map_err(crate::service::io_err(&context))?;
    // The length of the file actually opened, so TFTP's tsize and HTTP's Content-Length
    // always match what is sent.
    let meta = file.metadata().map_err(crate::service::io_err(&context))?;
    Ok(meta.is_file().then(|| BootFile::File {
        file,
        len: meta.len(),
    }))
}

/// `result`'s value, `None` when the error says `path` is not there, else the error naming
/// `path`.
fn unless_absent<T>(result: std::io::Result<T>, path: &Path) -> Result<Option<T>, ServiceError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(crate::service::io_err(format!(
            "cannot resolve {}",
            path.display()
        ))(e)),
    }
}

/// Whether an error of resolving a path says it is not there: no such entry, a file where a
/// directory is needed, a symlink loop or a name too long.
fn is_absent(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::NotFound
        || matches!(
            error.raw_os_error(),
            Some(libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_inside_the_directory_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        std::fs::create_dir(&boot).unwrap();
        std::fs::write(boot.join("start4.elf"), b"firmware").unwrap();
        std::fs::write(dir.path().join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink("../outside", boot.join("escape")).unwrap();
        std::os::unix::fs::symlink("loop", boot.join("loop")).unwrap();
        let opened = |name: &str| open_in(&boot, &boot.join(name)).unwrap();
        match opened("start4.elf") {
            Some(BootFile::File { len, .. }) => assert_eq!(len, 8),
            other => panic!("start4.elf not opened: {other:?}"),
        }
        for absent in ["missing", "start4.elf/below", "escape", "loop", "."] {
            assert!(opened(absent).is_none(), "{absent} was served");
        }
        assert!(
            open_in(&dir.path().join("no-boot"), &boot.join("start4.elf"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_failure_to_resolve_is_an_error_not_a_missing_file() {
        let path = Path::new("/srv/bakery/bakeforms/os/boot/fixup4.dat");
        for absent in [libc::ENOENT, libc::ENOTDIR, libc::ELOOP, libc::ENAMETOOLONG] {
            let result: std::io::Result<()> = Err(std::io::Error::from_raw_os_error(absent));
            assert!(unless_absent(result, path).unwrap().is_none(), "{absent}");
        }
        for fault in [libc::EMFILE, libc::EIO, libc::ENOMEM] {
            let result: std::io::Result<()> = Err(std::io::Error::from_raw_os_error(fault));
            let err = unless_absent(result, path).unwrap_err();
            assert!(err.to_string().contains("fixup4.dat"), "{err}");
        }
    }
}
