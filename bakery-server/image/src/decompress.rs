//! Receiving an uploaded image: raw, `.img.gz`, `.img.xz` or a `.zip` holding one `.img`
//! (as Raspberry Pi OS ships them), decoded while it streams in and written to a file,
//! never held whole in memory. Runs of zeros become holes, so a mostly empty image stays
//! small on disk.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::ImageError;

/// How an uploaded image is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Packing {
    /// The image itself.
    Raw,
    /// gzip (`.img.gz`).
    Gzip,
    /// xz (`.img.xz`).
    Xz,
    /// A zip archive with one `.img` file in it.
    Zip,
}

impl Packing {
    /// The packing the first bytes of a body show (gzip, xz and zip by their magic bytes;
    /// anything else is taken as a raw image).
    pub fn sniff(head: &[u8]) -> Packing {
        if head.starts_with(&[0x1f, 0x8b]) {
            Packing::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Packing::Xz
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Packing::Zip
        } else {
            Packing::Raw
        }
    }

    /// The packing a `Content-Type` names, if it names a compressed one.
    pub fn from_content_type(content_type: &str) -> Option<Packing> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/gzip" | "application/x-gzip" => Some(Packing::Gzip),
            "application/x-xz" | "application/xz" => Some(Packing::Xz),
            "application/zip" | "application/x-zip-compressed" => Some(Packing::Zip),
            _ => None,
        }
    }

    /// Its name in messages: `raw`, `gzip`, `xz`, `zip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Packing::Raw => "raw",
            Packing::Gzip => "gzip",
            Packing::Xz => "xz",
            Packing::Zip => "zip",
        }
    }
}

/// What [`receive_image`] read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// How the body was packed.
    pub packing: Packing,
    /// Bytes read from the body.
    pub body_bytes: u64,
    /// Bytes of the image written (its length, holes included).
    pub image_bytes: u64,
    /// The name of the image inside a zip archive.
    pub entry: Option<String>,
}

/// The memory an xz stream may ask for (`xz -9` needs 65 MiB to decode).
const XZ_MEMORY_LIMIT: u64 = 512 << 20;
/// Read and write unit; zero runs of [`HOLE_BLOCK`] inside it become holes.
const CHUNK: usize = 1 << 20;
/// Size of the blocks checked for zeros.
const HOLE_BLOCK: usize = 64 << 10;

/// Reads an image from `body` into the new file `dest`, decoding it when it is packed:
/// as `declared` says (from a content type) or else as its magic bytes show. At most
/// `limit` bytes are read from the body and at most `limit` bytes of image are written.
/// On error `dest` is removed and the error says what went wrong: the upload broke off or
/// was too large ([`ImageError::UploadBroken`], [`ImageError::UploadTooLarge`]), the archive
/// is corrupt ([`ImageError::Archive`]), or writing failed ([`ImageError::Io`]).
pub fn receive_image(
    body: &mut dyn Read,
    dest: &Path,
    limit: u64,
    declared: Option<Packing>,
) -> Result<Received, ImageError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| ImageError::io("create image", dest, e))?;
    let mut source = Source {
        inner: body,
        read: 0,
        limit,
        failure: None,
    };
    let mut sink = Sink {
        file,
        path: dest,
        written: 0,
        limit,
    };
    let result = receive(&mut source, &mut sink, declared);
    let result = result.and_then(|(packing, entry)| {
        sink.finish()?;
        Ok(Received {
            packing,
            body_bytes: source.read,
            image_bytes: sink.written,
            entry,
        })
    });
    if result.is_err() {
        drop(sink);
        let _ = std::fs::remove_file(dest);
    }
    result
}

fn receive(
    source: &mut Source<'_>,
    sink: &mut Sink<'_>,
    declared: Option<Packing>,
) -> Result<(Packing, Option<String>), ImageError> {
    let mut head = Vec::with_capacity(8);
    while head.len() < 6 {
        let mut byte = [0u8; 8];
        let want = 6 - head.len();
        let n = read_retrying(source, &mut byte[..want])
            .map_err(|e| source.failure_or(e, Packing::Raw))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&byte[..n]);
    }
    let packing = declared.unwrap_or_else(|| Packing::sniff(&head));
    let mut input = BufReader::with_capacity(CHUNK, io::Cursor::new(head).chain(&mut *source));
    let entry = match packing {
        Packing::Raw => {
            pump(&mut input, sink).map_err(|e| e.into_error(packing))?;
            None
        }
        Packing::Gzip => {
            let mut decoder = flate2::bufread::MultiGzDecoder::new(input);
            pump(&mut decoder, sink).map_err(|e| e.into_error(packing))?;
            None
        }
        Packing::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMORY_LIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|e| ImageError::Archive {
                format: "xz",
                reason: e.to_string(),
            })?;
            let mut decoder = liblzma::bufread::XzDecoder::new_stream(input, stream);
            pump(&mut decoder, sink).map_err(|e| e.into_error(packing))?;
            None
        }
        Packing::Zip => Some(unzip(&mut input, sink)?),
    };
    Ok((packing, entry))
}

/// Writes the one `.img` file of a zip archive read as a stream.
fn unzip<R: Read>(input: &mut R, sink: &mut Sink<'_>) -> Result<String, ImageError> {
    let zip_err = |reason: String| ImageError::Archive {
        format: "zip",
        reason,
    };
    let mut found: Option<String> = None;
    loop {
        let entry = match zip::read::read_zipfile_from_stream(input) {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(zip::result::ZipError::Io(e)) => {
                return Err(PumpError::Read(e).into_error(Packing::Zip));
            }
            Err(e) => return Err(zip_err(e.to_string())),
        };
        let mut entry = entry;
        let name = entry.name().to_owned();
        if entry.is_dir() || !name.to_ascii_lowercase().ends_with(".img") {
            continue;
        }
        if let Some(first) = &found {
            return Err(zip_err(format!(
                "it holds more than one .img file ({first} and {name})"
            )));
        }
        pump(&mut entry, sink).map_err(|e| e.into_error(Packing::Zip))?;
        found = Some(name);
    }
    // The central directory follows: read it, so the whole body is accounted for.
    io::copy(input, &mut io::sink()).map_err(|e| PumpError::Read(e).into_error(Packing::Zip))?;
    found.ok_or_else(|| zip_err("it holds no .img file".into()))
}

fn read_retrying(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Why moving bytes from a decoder to the file stopped.
enum PumpError {
    /// Reading (the body or the decoder) failed.
    Read(io::Error),
    /// Writing failed.
    Write(ImageError),
}

impl PumpError {
    fn into_error(self, packing: Packing) -> ImageError {
        match self {
            PumpError::Write(e) => e,
            PumpError::Read(e) => match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<BodyFailure>())
            {
                Some(failure) => failure.to_error(),
                None if packing == Packing::Raw => ImageError::UploadBroken {
                    reason: e.to_string(),
                },
                None => ImageError::Archive {
                    format: packing.as_str(),
                    reason: e.to_string(),
                },
            },
        }
    }
}

/// Copies everything `reader` gives into `sink`.
fn pump(reader: &mut dyn Read, sink: &mut Sink<'_>) -> Result<(), PumpError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match read_retrying(reader, &mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => return Err(PumpError::Read(e)),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        sink.write(&buf[..filled]).map_err(PumpError::Write)?;
        if filled < buf.len() {
            return Ok(());
        }
    }
}

/// A failure of the body itself (not of the decoder), carried through the decoders inside
/// an `io::Error`.
#[derive(Debug, Clone)]
enum BodyFailure {
    /// More than the limit arrived.
    TooLarge(u64),
    /// Reading the body failed.
    Broken(String),
}

impl BodyFailure {
    fn to_error(&self) -> ImageError {
        match self {
            BodyFailure::TooLarge(limit) => ImageError::UploadTooLarge { limit: *limit },
            BodyFailure::Broken(reason) => ImageError::UploadBroken {
                reason: reason.clone(),
            },
        }
    }
}

impl std::fmt::Display for BodyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_error().fmt(f)
    }
}

impl std::error::Error for BodyFailure {}

/// The body, counted and limited.
struct Source<'a> {
    inner: &'a mut dyn Read,
    read: u64,
    limit: u64,
    failure: Option<BodyFailure>,
}

impl Source<'_> {
    fn failure_or(&self, e: io::Error, packing: Packing) -> ImageError {
        match &self.failure {
            Some(failure) => failure.to_error(),
            None => PumpError::Read(e).into_error(packing),
        }
    }
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(failure) = &self.failure {
            return Err(io::Error::other(failure.clone()));
        }
        let failure = match self.inner.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                if self.read <= self.limit {
                    return Ok(n);
                }
                BodyFailure::TooLarge(self.limit)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => BodyFailure::Broken(e.to_string()),
        };
        self.failure = Some(failure.clone());
        Err(io::Error::other(failure))
    }
}

/// The image file: written at explicit offsets, zero blocks skipped (left as holes).
struct Sink<'a> {
    file: File,
    path: &'a Path,
    written: u64,
    limit: u64,
}

impl Sink<'_> {
    fn write(&mut self, data: &[u8]) -> Result<(), ImageError> {
        let end = self.written + data.len() as u64;
        if end > self.limit {
            return Err(ImageError::UploadTooLarge { limit: self.limit });
        }
        let mut offset = self.written;
        for block in data.chunks(HOLE_BLOCK) {
            if block.iter().any(|&b| b != 0) {
                self.file
                    .write_all_at(block, offset)
                    .map_err(|e| ImageError::io("write image", self.path, e))?;
            }
            offset += block.len() as u64;
        }
        self.written = end;
        Ok(())
    }

    /// Sets the length (a trailing hole is not written).
    fn finish(&mut self) -> Result<(), ImageError> {
        self.file
            .set_len(self.written)
            .map_err(|e| ImageError::io("set length of image", self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive_bytes(
        body: &[u8],
        limit: u64,
        declared: Option<Packing>,
    ) -> (tempfile::TempDir, Result<Received, ImageError>) {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = body;
        let result = receive_image(&mut reader, &dir.path().join("img"), limit, declared);
        (dir, result)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        use std::io::Write;
        let mut zipped = io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut zipped);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in files {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
        zipped.into_inner()
    }

    fn sample_data() -> Vec<u8> {
        let mut data = vec![0u8; 3 * CHUNK + 12345];
        for (i, b) in data.iter_mut().enumerate().skip(CHUNK).take(70_000) {
            *b = (i % 251) as u8;
        }
        data[3 * CHUNK + 100] = 7;
        data
    }

    #[test]
    fn magic_bytes_and_content_types_name_the_packing() {
        assert_eq!(Packing::sniff(&[0x1f, 0x8b, 8, 0]), Packing::Gzip);
        assert_eq!(Packing::sniff(b"\xfd7zXZ\x00"), Packing::Xz);
        assert_eq!(Packing::sniff(b"PK\x03\x04"), Packing::Zip);
        assert_eq!(Packing::sniff(&[0; 6]), Packing::Raw);
        assert_eq!(Packing::sniff(&[]), Packing::Raw);
        assert_eq!(
            Packing::from_content_type("Application/X-XZ; charset=binary"),
            Some(Packing::Xz)
        );
        assert_eq!(
            Packing::from_content_type("application/gzip"),
            Some(Packing::Gzip)
        );
        assert_eq!(
            Packing::from_content_type("application/zip"),
            Some(Packing::Zip)
        );
        assert_eq!(
            Packing::from_content_type("application/x-raw-disk-image"),
            None
        );
    }

    #[test]
    fn raw_and_gzip_bodies_give_the_same_sparse_file() {
        let data = sample_data();
        for (body, packing) in [(data.clone(), Packing::Raw), (gzip(&data), Packing::Gzip)] {
            let (dir, got) = receive_bytes(&body, 1 << 30, None);
            let got = got.unwrap();
            assert_eq!(got.packing, packing);
            assert_eq!(got.body_bytes, body.len() as u64);
            assert_eq!(got.image_bytes, data.len() as u64);
            let path = dir.path().join("img");
            assert_eq!(std::fs::read(&path).unwrap(), data);
            use std::os::unix::fs::MetadataExt;
            let blocks = std::fs::metadata(&path).unwrap().blocks() * 512;
            assert!(
                blocks < 1 << 20,
                "zeros are holes: {blocks} bytes allocated"
            );
        }
    }

    #[test]
    fn xz_and_zip_bodies_are_decoded() {
        let data = sample_data();
        let mut xz = Vec::new();
        let mut enc = liblzma::read::XzEncoder::new(&data[..], 1);
        enc.read_to_end(&mut xz).unwrap();
        let (dir, got) = receive_bytes(&xz, 1 << 30, None);
        assert_eq!(got.unwrap().packing, Packing::Xz);
        assert_eq!(std::fs::read(dir.path().join("img")).unwrap(), data);

        let zipped = zip_of(&[("README.txt", b"not the image"), ("raspios.img", &data)]);
        let (dir, got) = receive_bytes(&zipped, 1 << 30, None);
        let got = got.unwrap();
        assert_eq!(got.packing, Packing::Zip);
        assert_eq!(got.entry.as_deref(), Some("raspios.img"));
        assert_eq!(got.body_bytes, zipped.len() as u64);
        assert_eq!(std::fs::read(dir.path().join("img")).unwrap(), data);
    }

    #[test]
    fn corrupt_truncated_and_oversized_bodies_are_named_and_leave_nothing() {
        let data = sample_data();
        let gz = gzip(&data);
        let cases: Vec<(Vec<u8>, u64, &str)> = vec![
            (gz[..gz.len() / 2].to_vec(), 1 << 30, "corrupt gzip archive"),
            (
                [&[0x1f, 0x8b][..], &[0xff; 100][..]].concat(),
                1 << 30,
                "corrupt gzip archive",
            ),
            (
                b"\xfd7zXZ\x00garbage".to_vec(),
                1 << 30,
                "corrupt xz archive",
            ),
            (
                b"PK\x03\x04garbage".to_vec(),
                1 << 30,
                "corrupt zip archive",
            ),
            (
                zip_of(&[("README.txt", b"no image")]),
                1 << 30,
                "holds no .img file",
            ),
            (
                zip_of(&[("a.img", b"one"), ("b.img", b"two")]),
                1 << 30,
                "more than one .img file (a.img and b.img)",
            ),
            (gz.clone(), 2 * CHUNK as u64, "larger than the limit"),
            (data.clone(), 2 * CHUNK as u64, "larger than the limit"),
            (gz.clone(), 1000, "larger than the limit"),
        ];
        for (body, limit, want) in cases {
            let (dir, got) = receive_bytes(&body, limit, None);
            let err = got.unwrap_err().to_string();
            assert!(err.contains(want), "{err} should say {want}");
            assert!(
                std::fs::read_dir(dir.path()).unwrap().next().is_none(),
                "nothing left for {want}"
            );
        }
        let (_dir, got) = receive_bytes(&data, 1 << 30, Some(Packing::Gzip));
        assert!(
            got.unwrap_err()
                .to_string()
                .contains("corrupt gzip archive")
        );
    }

    #[test]
    fn a_broken_body_is_an_upload_error() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("connection reset"));
                }
                self.0 -= 1;
                buf[0] = 0x1f;
                Ok(1)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let err =
            receive_image(&mut Broken(3), &dir.path().join("img"), 1 << 20, None).unwrap_err();
        assert!(matches!(err, ImageError::UploadBroken { .. }), "{err}");
        assert!(err.to_string().contains("connection reset"));
    }
}
