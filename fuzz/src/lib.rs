//! The checks of bakery's fuzz targets, shared by the libFuzzer binaries (`fuzz_targets/`,
//! run with cargo-fuzz on nightly) and the bounded stable tests (`tests/bounded.rs`).
//!
//! Each target takes arbitrary bytes, must never panic, and checks a property of what it
//! gets back (not only "no crash").

use std::io::Write;

use bakery_client::StaticNetwork;
use bakery_core::domain::cmdline::{CmdlineInput, render};

/// TFTP packets (`bakery_tftp::packet::parse`): never panics; a parsed request keeps its
/// options within their RFC ranges; parsing is deterministic.
pub fn tftp_packet(data: &[u8]) {
    use bakery_tftp::packet::{Packet, parse};
    let first = parse(data);
    let again = parse(data);
    assert_eq!(format!("{first:?}"), format!("{again:?}"));
    if let Ok(Packet::Rrq(request) | Packet::Wrq(request)) = &first {
        let o = &request.options;
        if let Some(b) = o.blksize {
            assert!((8..=65464).contains(&b), "blksize {b} out of range");
        }
        if let Some(t) = o.timeout {
            assert!((1..=255).contains(&t), "timeout {t} out of range");
        }
        if let Some(w) = o.windowsize {
            assert!(w >= 1, "windowsize 0");
        }
        assert!(!request.filename.is_empty());
    }
}

/// CPI requests: `Request::parse` never panics, and `bakery_cpi::run` answers every input
/// with exactly one JSON object holding `result`, `error` and `log` (the bakery it would
/// call is 127.0.0.1:9, where nothing listens).
pub fn cpi_request(data: &[u8]) {
    let parsed = bakery_cpi::request::Request::parse(data);
    let config = bakery_cpi::Config {
        url: Some("http://127.0.0.1:9/api/v1".into()),
        bake_timeout_seconds: Some(1),
        ..bakery_cpi::Config::default()
    };
    // A request can name its own url in its context: keep the harness on loopback port 9.
    if data.windows(3).any(|w| w.eq_ignore_ascii_case(b"url")) {
        return;
    }
    let mut out = Vec::new();
    bakery_cpi::run(&mut &data[..], &mut out, Some(config)).expect("writing to a Vec");
    let reply: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "cpi reply is not json ({e}): {:?}",
            String::from_utf8_lossy(&out)
        )
    });
    let object = reply.as_object().expect("cpi reply is an object");
    for key in ["result", "error", "log"] {
        assert!(object.contains_key(key), "cpi reply lacks {key}: {reply}");
    }
    if parsed.is_err() {
        assert!(
            !object["error"].is_null(),
            "unparsable request answered without error"
        );
    }
}

/// Image import (`bakery_image::import_image`): the input written to a file and imported
/// into a fresh directory; never panics, and writes nothing outside the destination.
pub fn image(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("input.img");
    let mut file = std::fs::File::create(&path).expect("image file");
    file.write_all(data).expect("image written");
    drop(file);
    image_file(&path, dir.path());
}

/// [`image`] for an image already in a file inside `dir`.
pub fn image_file(path: &std::path::Path, dir: &std::path::Path) {
    let dest = dir.join("imported");
    let _ = bakery_image::import_image(path, &dest, &mut |_| {});
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir listed")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let image_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    names.retain(|n| Some(n) != image_name.as_ref() && n != "imported");
    assert!(
        names.is_empty(),
        "import wrote outside its destination: {names:?}"
    );
    let _ = std::fs::remove_dir_all(&dest);
}

/// cmdline.txt rendering: the fields cut from the input at 0xff bytes (bakeform cmdline,
/// operator template, hostname, ip); the result is one line ending in `\n`, and without a
/// template it always carries bakery's NFS root.
pub fn cmdline(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\u{fffd}');
    let bakeform = fields.next().unwrap_or_default();
    let template = fields.next();
    let hostname = fields.next();
    let ip = fields.next();
    let network = ip.map(|ip| StaticNetwork {
        ip: ip.to_owned(),
        netmask: "255.255.255.0".into(),
        gateway: None,
        dns: vec![],
        hostname: hostname.map(str::to_owned),
    });
    let input = CmdlineInput {
        bakeform_cmdline: bakeform,
        operator_template: template.filter(|t| !t.is_empty()),
        nfs_server: "10.0.0.2",
        nfs_root: "/var/lib/bakery/disks/0f0e0d0c",
        network: network.as_ref(),
        serial: "1a2b3c4d",
        nocloud_url: "http://10.0.0.2:8080/cloud-init/",
        nbd_root: None,
    };
    let line = render(&input);
    assert!(line.ends_with('\n'), "{line:?}");
    assert_eq!(
        line.matches(['\n', '\r']).count(),
        1,
        "cmdline.txt must be one line: {line:?}"
    );
    if input.operator_template.is_none() && !bakeform.contains(".Nfs") {
        assert!(
            line.contains("nfsroot=10.0.0.2:/var/lib/bakery/disks/0f0e0d0c,vers=3,tcp"),
            "{line:?}"
        );
    }
}

/// A small deterministic generator of fuzz inputs for the bounded stable runs.
#[derive(Debug, Clone)]
pub struct Gen(u64);

impl Gen {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Gen {
        Gen(seed | 1)
    }

    /// The next 64 random bits (xorshift64*).
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// `seed` mutated: bytes flipped, inserted, removed, duplicated, or spliced with
    /// `dictionary` words (what makes random bytes reach past the first checks).
    pub fn mutate(&mut self, seed: &[u8], dictionary: &[&[u8]]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(6) {
                0 if !out.is_empty() => {
                    let i = self.below(out.len());
                    out[i] ^= 1 << self.below(8);
                }
                1 => out.insert(at, self.next_u64() as u8),
                2 if !out.is_empty() => {
                    let end = (at + self.below(8)).min(out.len());
                    out.drain(at.min(end)..end);
                }
                3 if !dictionary.is_empty() => {
                    let word = dictionary[self.below(dictionary.len())];
                    out.splice(at..at, word.iter().copied());
                }
                4 if !out.is_empty() => {
                    let i = self.below(out.len());
                    out[i] = [0, 0xff, b'\n', b' ', b'=', b'{', b'}'][self.below(7)];
                }
                _ => {
                    let len = self.below(16);
                    let bytes: Vec<u8> = (0..len).map(|_| self.next_u64() as u8).collect();
                    out.splice(at..at, bytes);
                }
            }
        }
        out
    }
}
