//! The NBD adapter: the nbd-server config bakery writes at start-up, the per-address links
//! and the authfile it rewrites from the database after each change (see `domain::nbd` for
//! why one static export), and the ext4 root images made with mkfs.ext4.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use crate::domain::nbd::{self, NbdRoot};
use crate::fsutil;

/// A failure to publish the NBD roots or to make a root image.
#[derive(Debug, Error)]
pub enum NbdError {
    /// A file of nbd-server's could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The root tree could not be measured or the image file made.
    #[error("cannot make the nbd root image {path}: {source}")]
    Image {
        /// The image being made.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// mkfs.ext4 could not be started.
    #[error("cannot run {command:?} (--mkfs-ext4-cmd; Debian package e2fsprogs): {source}")]
    Spawn {
        /// The command.
        command: String,
        /// What the OS said.
        source: io::Error,
    },
    /// mkfs.ext4 failed.
    #[error("{command:?} failed ({status}): {output}")]
    Mkfs {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
}

/// Where nbd-server's files are: its config (given by the operator), and under
/// `<data>/nbd/` the links (`roots/<address>`) and the authfile (`allow`).
#[derive(Debug, Clone)]
pub struct NbdServer {
    config: PathBuf,
    links: PathBuf,
    authfile: PathBuf,
    port: u16,
}

impl NbdServer {
    /// nbd-server's files for a data dir, with its config at `config`, listening on `port`.
    pub fn new(config: PathBuf, data_dir: &Path, port: u16) -> NbdServer {
        let dir = data_dir.join("nbd");
        NbdServer {
            config,
            links: dir.join("roots"),
            authfile: dir.join("allow"),
            port,
        }
    }

    /// The port Pis connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of per-address links.
    pub fn links_dir(&self) -> &Path {
        &self.links
    }

    /// Writes the config (atomically) and makes sure the authfile exists (empty: nobody), so
    /// nbd-server can be started once bakery is.
    pub fn write_config(&self) -> Result<(), NbdError> {
        let write = |path: &Path, bytes: &[u8]| {
            fsutil::write_atomic(path, bytes).map_err(|source| NbdError::Write {
                path: path.to_owned(),
                source,
            })
        };
        std::fs::create_dir_all(&self.links).map_err(|source| NbdError::Write {
            path: self.links.clone(),
            source,
        })?;
        if std::fs::symlink_metadata(&self.authfile).is_err() {
            write(
                &self.authfile,
                nbd::render_authfile(&BTreeMap::new()).as_bytes(),
            )?;
        }
        let text = nbd::render_config(self.port, &self.links, &self.authfile);
        write(&self.config, text.as_bytes())
    }

    /// Serves exactly `roots`: the authfile lists their addresses, `roots/<address>` links to
    /// each one's image, and every other link is removed. The authfile is written first, so
    /// an address losing its root is refused before its link goes.
    pub fn publish(&self, roots: &[NbdRoot]) -> Result<(), NbdError> {
        let wanted = nbd::links(roots);
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| NbdError::Write { path, source }
        };
        fsutil::write_atomic(&self.authfile, nbd::render_authfile(&wanted).as_bytes())
            .map_err(failed(&self.authfile))?;
        std::fs::create_dir_all(&self.links).map_err(failed(&self.links))?;
        for entry in std::fs::read_dir(&self.links).map_err(failed(&self.links))? {
            let entry = entry.map_err(failed(&self.links))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = wanted
                .get(&name)
                .is_some_and(|image| std::fs::read_link(entry.path()).ok().as_ref() == Some(image));
            if !keep {
                std::fs::remove_file(entry.path()).map_err(failed(&entry.path()))?;
            }
        }
        for (address, image) in &wanted {
            let link = self.links.join(address);
            if std::fs::symlink_metadata(&link).is_ok() {
                continue;
            }
            let tmp = self
                .links
                .join(format!(".{address}.tmp-{}", uuid::Uuid::new_v4()));
            std::os::unix::fs::symlink(image, &tmp).map_err(failed(&tmp))?;
            if let Err(e) = std::fs::rename(&tmp, &link) {
                let _ = std::fs::remove_file(&tmp);
                return Err(failed(&link)(e));
            }
        }
        Ok(())
    }
}

/// Bytes the tree at `root` takes, counted as whole 4 KiB blocks per file plus one block per
/// directory entry (what an ext4 of 4 KiB blocks needs for it, before its own metadata).
fn tree_bytes(root: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            total += 4096;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && meta.nlink() >= 1 {
                total += meta.size().div_ceil(4096) * 4096;
            }
        }
    }
    Ok(total)
}

/// The size of a root image for a tree of `bytes`: 1.3 times the tree plus 1 GiB for the
/// Pi to write into, in whole MiB. The image is sparse: room not written costs nothing.
pub fn image_size(bytes: u64) -> u64 {
    (bytes.saturating_mul(13) / 10 + (1 << 30)).div_ceil(1 << 20) << 20
}

/// Makes the ext4 image `dest` from the tree `tree`: a sparse file of [`image_size`] at
/// `tmp`, filled by `mkfs` (program and arguments) with `-d <tree>`, renamed to `dest`.
/// mkfs.ext4 copies owners, modes, links and device nodes as they are in the tree.
fn build_image(mkfs: &[String], tree: &Path, tmp: &Path, dest: &Path) -> Result<(), NbdError> {
    let image_err = |path: &Path| {
        let path = path.to_owned();
        move |source| NbdError::Image { path, source }
    };
    let size = image_size(tree_bytes(tree).map_err(image_err(dest))?);
    let result = (|| {
        let file = std::fs::File::create_new(tmp).map_err(image_err(tmp))?;
        file.set_len(size).map_err(image_err(tmp))?;
        drop(file);
        let (program, args) = mkfs.split_first().ok_or_else(|| NbdError::Spawn {
            command: String::new(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let line = mkfs.join(" ");
        let output = Command::new(program)
            .args(args)
            .args(["-q", "-F", "-L", "bakery-root", "-d"])
            .arg(tree)
            .arg(tmp)
            .output()
            .map_err(|source| NbdError::Spawn {
                command: line.clone(),
                source,
            })?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            return Err(NbdError::Mkfs {
                command: format!("{line} -d {} {}", tree.display(), tmp.display()),
                status: output.status.to_string(),
                output: text.trim().to_owned(),
            });
        }
        std::fs::rename(tmp, dest).map_err(image_err(dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

/// Makes the bakeform image `dest` from `tree` (see `build_image`) unless it is there, once
/// even when several bakes ask at the same time: each holds an exclusive `flock` on
/// `<dest>.lock` while it looks and builds, so the others wait and find the image made.
/// Returns whether this call made it.
pub fn ensure_image(
    mkfs: &[String],
    tree: &Path,
    tmp: &Path,
    dest: &Path,
) -> Result<bool, NbdError> {
    use std::os::fd::AsRawFd;
    let lock_path = PathBuf::from(format!("{}.lock", dest.display()));
    let locked = |source| NbdError::Image {
        path: lock_path.clone(),
        source,
    };
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(locked)?;
    // SAFETY: flock(2) on a descriptor this function owns; the lock goes with it when `lock`
    // is dropped at the end of this call.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(locked(io::Error::last_os_error()));
    }
    if std::fs::symlink_metadata(dest).is_ok() {
        return Ok(false);
    }
    build_image(mkfs, tree, tmp, dest)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_get_headroom_in_whole_mib() {
        assert_eq!(image_size(0), 1 << 30);
        assert_eq!(image_size(100 << 20), (130 << 20) + (1 << 30));
        assert_eq!(image_size(1) % (1 << 20), 0);
    }

    #[test]
    fn publish_links_each_address_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let server = NbdServer::new(dir.path().join("config"), dir.path(), 10809);
        server.write_config().unwrap();
        let allow = dir.path().join("nbd/allow");
        assert!(
            std::fs::read_to_string(&allow)
                .unwrap()
                .lines()
                .all(|l| l.starts_with('#')),
            "nobody may connect before a root is published"
        );
        let root = |serial: &str, address: &str| NbdRoot {
            serial: serial.into(),
            root_dir: dir.path().join(serial),
            address: Some(address.parse().unwrap()),
        };
        server
            .publish(&[root("1a2b3c4d", "10.0.0.21"), root("2b3c4d5e", "10.0.0.22")])
            .unwrap();
        let links = server.links_dir();
        assert_eq!(
            std::fs::read_link(links.join("10.0.0.21")).unwrap(),
            dir.path().join("1a2b3c4d/root.ext4")
        );
        server.publish(&[root("2b3c4d5e", "10.0.0.22")]).unwrap();
        assert!(std::fs::symlink_metadata(links.join("10.0.0.21")).is_err());
        assert!(links.join("10.0.0.22").symlink_metadata().is_ok());
        let text = std::fs::read_to_string(&allow).unwrap();
        assert!(text.contains("10.0.0.22\n") && !text.contains("10.0.0.21"));
    }

    #[test]
    fn a_missing_mkfs_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        let err = build_image(
            &["/nonexistent/mkfs.ext4".to_owned()],
            &dir.path().join("tree"),
            &dir.path().join("tmp.ext4"),
            &dir.path().join("root.ext4"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/mkfs.ext4"), "{err}");
        assert!(!dir.path().join("tmp.ext4").exists());
        assert!(!dir.path().join("root.ext4").exists());
    }

    #[test]
    fn bakes_at_once_make_the_image_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        let runs = dir.path().join("runs");
        // A real process standing in for mkfs.ext4: it counts its runs and takes long enough
        // for the bakes to overlap (the image file itself is made sparse before it runs).
        let mkfs = [
            "sh".to_owned(),
            "-c".to_owned(),
            format!("echo run >> {}; sleep 0.3", runs.display()),
            "mkfs".to_owned(),
        ];
        let dest = dir.path().join("root.ext4");
        let made: Vec<bool> = std::thread::scope(|scope| {
            let bakes: Vec<_> = (0..4)
                .map(|i| {
                    let (mkfs, tree, dest) = (&mkfs, dir.path().join("tree"), &dest);
                    let tmp = dir.path().join(format!("tmp-{i}.ext4"));
                    scope.spawn(move || ensure_image(mkfs, &tree, &tmp, dest).unwrap())
                })
                .collect();
            bakes.into_iter().map(|b| b.join().unwrap()).collect()
        });
        assert_eq!(made.iter().filter(|m| **m).count(), 1, "{made:?}");
        assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
        assert!(std::fs::metadata(&dest).unwrap().len() >= 1 << 30);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("tmp-"))
            .collect();
        assert!(left.is_empty(), "temporary images left: {left:?}");
    }
}
