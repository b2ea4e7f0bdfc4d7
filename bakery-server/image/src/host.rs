//! Thin wrappers over the Linux calls that recreate files with exact metadata on the host:
//! positioned in-kernel copies, owners, modes, nanosecond times, xattrs, device nodes.

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

/// Whether this process may set any owner and create device nodes.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// A libc return code as a result: 0 is success, anything else the OS error it set.
pub(crate) fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies `len` bytes from `src` at `src_off` to `dst` at `dst_off`, in the kernel where the
/// file systems allow it (copy_file_range), else through a buffer.
pub(crate) fn copy_range(
    src: &File,
    mut src_off: u64,
    dst: &File,
    mut dst_off: u64,
    mut len: u64,
) -> io::Result<()> {
    let mut kernel = true;
    let mut buf = Vec::new();
    while len > 0 {
        if kernel {
            let mut a =
                i64::try_from(src_off).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let mut b =
                i64::try_from(dst_off).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let chunk = usize::try_from(len.min(1 << 30)).unwrap_or(1 << 30);
            // SAFETY: both fds are open for the duration of the call; the offsets are valid
            // pointers to local variables.
            let n = unsafe {
                libc::copy_file_range(src.as_raw_fd(), &mut a, dst.as_raw_fd(), &mut b, chunk, 0)
            };
            if n > 0 {
                let n = n as u64;
                src_off += n;
                dst_off += n;
                len -= n;
                continue;
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source ended before the copy did",
                ));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                    kernel = false
                }
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
            continue;
        }
        if buf.is_empty() {
            buf = vec![0u8; 1 << 20];
        }
        let n = usize::try_from(len.min(buf.len() as u64)).unwrap_or(buf.len());
        src.read_exact_at(&mut buf[..n], src_off)?;
        dst.write_all_at(&buf[..n], dst_off)?;
        src_off += n as u64;
        dst_off += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Sets the owner of an open file. Do this before xattrs and mode: chown clears setuid,
/// setgid and file capabilities.
pub(crate) fn fchown(f: &File, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid open fd.
    check(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) })
}

/// Sets the permission bits (incl. setuid/setgid/sticky) of an open file.
pub(crate) fn fchmod(f: &File, mode: u32) -> io::Result<()> {
    f.set_permissions(fs::Permissions::from_mode(mode))
}

/// Sets the owner of `p` without following a final symlink.
pub(crate) fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::lchown(c.as_ptr(), uid, gid) })
}

/// Sets the permission bits (incl. setuid/setgid/sticky) of `p`.
pub(crate) fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

fn timespec(t: (i64, u32)) -> libc::timespec {
    libc::timespec {
        tv_sec: t.0 as libc::time_t,
        tv_nsec: libc::c_long::from(t.1 as i32),
    }
}

/// Sets access and modification times (seconds, nanoseconds) of an open file.
pub(crate) fn futimens(f: &File, atime: (i64, u32), mtime: (i64, u32)) -> io::Result<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: valid fd and a two-element timespec array.
    check(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) })
}

/// Sets access and modification times of `p`, not following a final symlink.
pub(crate) fn lutimens(p: &Path, atime: (i64, u32), mtime: (i64, u32)) -> io::Result<()> {
    let c = cstr(p)?;
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: valid path and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Creates a special file: `kind` is `libc::S_IFCHR`, `S_IFBLK`, `S_IFIFO` or `S_IFSOCK`.
pub(crate) fn mknod(
    p: &Path,
    kind: libc::mode_t,
    perm: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let c = cstr(p)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: valid path; mknod only creates a directory entry.
    check(unsafe { libc::mknod(c.as_ptr(), kind | (perm & 0o777), dev) })
}

/// An extended attribute's name for libc; a name with a NUL byte is invalid input.
fn xattr_name(name: &[u8]) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))
}

/// Sets one extended attribute of `p` without following a final symlink.
pub(crate) fn lsetxattr(p: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cstr(p)?;
    let n = xattr_name(name)?;
    // SAFETY: valid path and name; value pointer and length describe a live slice.
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Sets one extended attribute of an open file.
pub(crate) fn fsetxattr(f: &File, name: &[u8], value: &[u8]) -> io::Result<()> {
    let n = xattr_name(name)?;
    // SAFETY: valid fd and name; value pointer and length describe a live slice.
    check(unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Lists and reads every extended attribute of `p` (not following a final symlink).
pub(crate) fn lgetxattrs(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cstr(p)?;
    read_xattrs(
        // SAFETY: valid path; buffer pointer and length describe a live, writable slice.
        |buf| unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: valid path and name; the buffer describes a live, writable slice.
        |name, buf| unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        },
    )
}

/// Lists and reads every extended attribute of an open file.
pub(crate) fn fgetxattrs(f: &File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let fd = f.as_raw_fd();
    read_xattrs(
        // SAFETY: valid fd; buffer pointer and length describe a live, writable slice.
        |buf| unsafe { libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: valid fd and name; the buffer describes a live, writable slice.
        |name, buf| unsafe {
            libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        },
    )
}

fn read_xattrs(
    list: impl Fn(&mut [u8]) -> isize,
    get: impl Fn(&CString, &mut [u8]) -> isize,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        let n = list(&mut names);
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if names.len() < 1 << 20 => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let cn = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let mut val = vec![0u8; 256];
        loop {
            let m = get(&cn, &mut val);
            if m >= 0 {
                val.truncate(m as usize);
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) && val.len() < 1 << 20 {
                val.resize(val.len() * 4, 0);
                continue;
            }
            return Err(e);
        }
        out.push((name.to_vec(), val));
    }
    Ok(out)
}

/// Removes a tree completely, file by file, first granting the owner write access to
/// directories that were made read-only (a non-root user cannot otherwise empty them). Missing
/// trees are fine. (`clone::remove_tree` deletes a btrfs subvolume in one call first.)
pub(crate) fn remove_tree(p: &Path) -> io::Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(p);
            match fs::remove_dir_all(p) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
    }
}

fn make_writable(p: &Path) {
    let Ok(md) = fs::symlink_metadata(p) else {
        return;
    };
    if !md.is_dir() {
        return;
    }
    let _ = chmod(p, 0o700);
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}

/// A name from an image that is safe to use as one host path component.
pub(crate) fn safe_name(name: &[u8]) -> Option<&OsStr> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        None
    } else {
        Some(OsStr::from_bytes(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn copy_range_copies_exact_window() {
        let mut a = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&data).unwrap();
        let b = tempfile::tempfile().unwrap();
        copy_range(&a, 1000, &b, 5, 200_000).unwrap();
        let mut out = vec![0u8; 200_005];
        b.read_exact_at(&mut out, 0).unwrap();
        assert_eq!(&out[5..], &data[1000..201_000]);
        assert_eq!(&out[..5], &[0u8; 5]);
        assert!(copy_range(&a, 299_000, &b, 0, 5000).is_err());
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(safe_name(bad).is_none(), "{bad:?}");
        }
        assert!(safe_name(b"..hidden").is_some());
    }

    #[test]
    fn remove_tree_handles_read_only_dirs() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::write(t.join("a/b/f"), b"x").unwrap();
        chmod(&t.join("a/b"), 0o500).unwrap();
        chmod(&t.join("a"), 0o500).unwrap();
        remove_tree(&t).unwrap();
        assert!(!t.exists());
        remove_tree(&t).unwrap();
    }
}
