//! A byte range of an image file (one partition) seen as its own seekable device.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// A window `[start, start + len)` of a file, read and written with positioned I/O.
///
/// Reads stop at the end of the window; writes past it fail, so a file system driver
/// working on a partition can never touch its neighbours.
#[derive(Debug)]
pub(crate) struct Region<'f> {
    file: &'f File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'f> Region<'f> {
    /// A window of `len` bytes of `file` starting at byte `start`.
    pub(crate) fn new(file: &'f File, start: u64, len: u64) -> Self {
        Region {
            file,
            start,
            len,
            pos: 0,
        }
    }

    /// The underlying file.
    pub(crate) fn file(&self) -> &'f File {
        self.file
    }

    /// Byte offset of the window in the file.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Length of the window in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Reads exactly `dst.len()` bytes at `offset` inside the window.
    pub(crate) fn read_exact_at(&self, offset: u64, dst: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(dst.len() as u64);
        if end.is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at offset {offset} passes the partition end ({} bytes)",
                    dst.len(),
                    self.len
                ),
            ));
        }
        self.file.read_exact_at(dst, self.start + offset)
    }
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Region<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the partition end",
            ));
        }
        let put = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Region<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the partition start",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_confines_reads_and_writes() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[0u8; 100]).unwrap();
        let mut r = Region::new(&f, 10, 20);
        r.seek(SeekFrom::Start(15)).unwrap();
        assert_eq!(r.write(&[7u8; 10]).unwrap(), 5);
        assert!(r.write(&[7u8; 1]).is_err());
        let mut all = Vec::new();
        r.seek(SeekFrom::Start(0)).unwrap();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 20);
        assert_eq!(&all[15..], &[7u8; 5]);
        let mut raw = [0u8; 100];
        f.read_exact_at(&mut raw, 0).unwrap();
        assert_eq!(raw[25..30], [7u8; 5]);
        assert_eq!(raw[30], 0);
        let mut b = [0u8; 4];
        assert!(r.read_exact_at(18, &mut b).is_err());
        assert!(r.seek(SeekFrom::Current(-100)).is_err());
    }
}
