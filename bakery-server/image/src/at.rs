//! Directory-relative (`*at`) system calls for the clone: one path lookup per directory
//! instead of one per entry, and entry metadata as a plain struct.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::host::check;

/// What the clone needs to know of an entry (a `struct stat`, not following symlinks).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard link count.
    pub nlink: u64,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Device number of a device node.
    pub rdev: u64,
    /// Device the entry lives on.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, u32),
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
}

impl Meta {
    /// The file type bits (`S_IFMT`).
    pub fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    /// The permission bits incl. setuid/setgid/sticky.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

impl From<&fs::Metadata> for Meta {
    fn from(md: &fs::Metadata) -> Meta {
        Meta {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            nlink: md.nlink(),
            size: md.len(),
            blocks: md.blocks(),
            rdev: md.rdev(),
            dev: md.dev(),
            ino: md.ino(),
            atime: (md.atime(), md.atime_nsec() as u32),
            mtime: (md.mtime(), md.mtime_nsec() as u32),
        }
    }
}

/// A directory entry's name for the `*at` calls.
pub(crate) fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

fn fd_result(fd: libc::c_int) -> io::Result<File> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call just returned this fd and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens a directory (not through a final symlink) to use as the base of `*at` calls.
pub(crate) fn open_dir(p: &Path) -> io::Result<File> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: valid NUL-terminated path.
    fd_result(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn stat_at(dir: &File, name: &CStr) -> io::Result<Meta> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid dir fd and name; st is a writable stat buffer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    Ok(Meta {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        rdev: st.st_rdev,
        dev: st.st_dev,
        ino: st.st_ino,
        atime: (st.st_atime, st.st_atime_nsec as u32),
        mtime: (st.st_mtime, st.st_mtime_nsec as u32),
    })
}

/// `fstat` of an open file.
pub(crate) fn stat_fd(file: &File) -> io::Result<Meta> {
    file.metadata().map(|md| Meta::from(&md))
}

/// Opens the regular file `name` in `dir` for reading, refusing a symlink.
pub(crate) fn open_at(dir: &File, name: &CStr) -> io::Result<File> {
    // SAFETY: valid dir fd and name.
    fd_result(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// Creates the new regular file `name` in `dir` with `mode` (before the umask), for writing.
pub(crate) fn create_at(dir: &File, name: &CStr, mode: u32) -> io::Result<File> {
    // SAFETY: valid dir fd and name.
    fd_result(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })
}

/// Creates the directory `name` in `dir`.
pub(crate) fn mkdir_at(dir: &File, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid dir fd and name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

/// Creates the symlink `name` in `dir` pointing at `target`.
pub(crate) fn symlink_at(target: &CStr, dir: &File, name: &CStr) -> io::Result<()> {
    // SAFETY: valid strings and dir fd.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// Reads the target of the symlink `name` in `dir` (`size`: its length from stat).
pub(crate) fn readlink_at(dir: &File, name: &CStr, size: u64) -> io::Result<CString> {
    let mut buf = vec![0u8; usize::try_from(size).unwrap_or(4096).max(1) + 1];
    loop {
        // SAFETY: valid dir fd and name; the buffer is live and writable for its length.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return CString::new(buf)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "link target has NUL"));
        }
        // The link changed size under us: retry with more room.
        if buf.len() >= 1 << 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "link target too long",
            ));
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// Creates the special file `name` in `dir`: `mode` holds the type and permission bits.
pub(crate) fn mknod_at(dir: &File, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: valid dir fd and name; mknodat only creates a directory entry.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) })
}

/// Sets the owner of `name` in `dir`, not following a final symlink.
pub(crate) fn chown_at(dir: &File, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid dir fd and name.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Sets the permission bits of `name` in `dir` (not a symlink).
pub(crate) fn chmod_at(dir: &File, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid dir fd and name.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })
}

fn timespec(t: (i64, u32)) -> libc::timespec {
    libc::timespec {
        tv_sec: t.0 as libc::time_t,
        tv_nsec: libc::c_long::from(t.1 as i32),
    }
}

/// Sets access and modification times of `name` in `dir`, not following a final symlink.
pub(crate) fn utimens_at(
    dir: &File,
    name: &CStr,
    atime: (i64, u32),
    mtime: (i64, u32),
) -> io::Result<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: valid dir fd and name and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// The process's umask as `/proc/self/status` shows it (Linux ≥ 4.7); `None` if unknown.
/// Read, not set: `umask(2)` can only read by changing it, which races other threads.
pub(crate) fn umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_is_read_without_changing_it() {
        let before = umask().expect("/proc/self/status has Umask");
        assert!(before <= 0o777);
        assert_eq!(umask(), Some(before));
    }

    #[test]
    fn stat_at_matches_std_metadata() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"hello").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let d = open_dir(dir.path()).unwrap();
        for name in ["f", "l"] {
            let m = stat_at(&d, &c_name(OsStr::new(name)).unwrap()).unwrap();
            let std = fs::symlink_metadata(dir.path().join(name)).unwrap();
            let s = Meta::from(&std);
            assert_eq!(
                (m.mode, m.size, m.ino, m.mtime, m.nlink),
                (s.mode, s.size, s.ino, s.mtime, s.nlink)
            );
        }
        let target = readlink_at(&d, &c_name(OsStr::new("l")).unwrap(), 1).unwrap();
        assert_eq!(target.as_bytes(), b"f");
    }

    #[test]
    fn open_dir_refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("up")).unwrap();
        assert!(open_dir(&dir.path().join("up")).is_err());
    }
}
