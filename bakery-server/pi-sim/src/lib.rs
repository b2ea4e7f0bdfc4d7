//! Simulated Raspberry Pis that network-boot over TFTP against a bakery server.
//!
//! [`boot`] sends the request sequence of one Pi model, probes included, with the options
//! that model sends (`tsize`, `blksize` 1024 for the Pi 3 boot ROM, 1468 for the Pi 4
//! EEPROM), and checks every fetched byte against a bakeform boot directory: a file there
//! must be served byte for byte, a file missing there must be "file not found", and
//! `cmdline.txt` (rendered per Pi by bakery) must be non-empty and name an NFS root.
//! [`boot_many`] boots N Pis at once. [`testbed`] has a stand-in bakery for tests and the
//! boot-storm benchmark.
//!
//! The bin: `pi-sim --server 127.0.0.1:69 --count 10 --model pi4 --boot-dir <bakeform boot
//! dir> [--serial-base 10000000]` prints a summary and exits 1 if any Pi failed.
//!
//! The boot-storm benchmark (not part of `cargo test`): `cargo run --release -p pi-sim
//! --example boot-storm` boots 1, 10 and 100 Pis against bakery-tftp and tftpd-hpa.

pub mod testbed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bakery_tftp::{ClientError, FetchOptions, fetch, query_size};

/// A Raspberry Pi model, by the way it network-boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Model {
    /// Pi 3B/3B+ (and 2B v1.2): boot ROM fetches `bootcode.bin` from the TFTP root first.
    Pi3,
    /// Pi 4: EEPROM bootloader, starts with `<serial>/start4.elf`.
    Pi4,
    /// Pi 5: EEPROM bootloader with the firmware inside it, starts with `<serial>/config.txt`
    /// (no `start4.elf`), probes `pieeprom.sig`, loads `bcm2712-rpi-5-b.dtb` and
    /// `kernel_2712.img`.
    Pi5,
}

impl Model {
    /// The model's name on the command line: `pi3`, `pi4` or `pi5`.
    pub fn name(self) -> &'static str {
        match self {
            Model::Pi3 => "pi3",
            Model::Pi4 => "pi4",
            Model::Pi5 => "pi5",
        }
    }

    /// The first file this model asks for under its serial directory; when it is not found
    /// there, the firmware clears the prefix and asks for it at the TFTP root.
    pub fn first_file(self) -> &'static str {
        match self {
            Model::Pi3 => "start.elf",
            Model::Pi4 => "start4.elf",
            Model::Pi5 => "config.txt",
        }
    }

    /// The block size this model asks for.
    pub fn blksize(self) -> u16 {
        match self {
            Model::Pi3 => 1024,
            Model::Pi4 | Model::Pi5 => 1468,
        }
    }
}

impl std::str::FromStr for Model {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pi3" => Ok(Model::Pi3),
            "pi4" => Ok(Model::Pi4),
            "pi5" => Ok(Model::Pi5),
            other => Err(SimError::UnknownModel {
                name: other.to_owned(),
            }),
        }
    }
}

/// Errors of a simulated boot.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A model name other than `pi3`, `pi4` or `pi5`.
    #[error("unknown pi model {name:?} (expected pi3, pi4 or pi5)")]
    UnknownModel {
        /// The name given.
        name: String,
    },
    /// A serial that is not 8 lowercase hex digits.
    #[error("serial {serial:?} is not 8 lowercase hex digits")]
    BadSerial {
        /// The serial given.
        serial: String,
    },
    /// A TFTP fetch failed (other than "file not found").
    #[error("pi {serial}: fetching {path}: {source}")]
    Tftp {
        /// The Pi.
        serial: String,
        /// The TFTP path.
        path: String,
        /// The client's error.
        source: ClientError,
    },
    /// The server said "file not found" for a file the boot directory has, or that the Pi
    /// cannot boot without. For the model's first file this means: not found under
    /// `<serial>/` and not at the TFTP root either (the firmware's prefix fallback); `path`
    /// is then the `<serial>/` one.
    #[error("pi {serial}: {path} not found on the server")]
    Missing {
        /// The Pi.
        serial: String,
        /// The TFTP path.
        path: String,
    },
    /// The server sent a file the boot directory does not have.
    #[error(
        "pi {serial}: server sent {path} ({bytes} bytes) but the boot directory has no such file"
    )]
    Unexpected {
        /// The Pi.
        serial: String,
        /// The TFTP path.
        path: String,
        /// Bytes received.
        bytes: u64,
    },
    /// The bytes differ from the boot directory's.
    #[error(
        "pi {serial}: {path} differs from the boot directory: got {got} bytes, expected {expected}, first difference at byte {at}"
    )]
    Mismatch {
        /// The Pi.
        serial: String,
        /// The TFTP path.
        path: String,
        /// Bytes received.
        got: u64,
        /// Bytes in the boot directory.
        expected: u64,
        /// Offset of the first differing byte.
        at: u64,
    },
    /// `cmdline.txt` is empty or names no NFS root.
    #[error("pi {serial}: cmdline.txt names no nfs root: {text:?}")]
    Cmdline {
        /// The Pi.
        serial: String,
        /// The text received.
        text: String,
    },
    /// Reading the boot directory failed.
    #[error("reading expected file {path}: {source}")]
    Expected {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A simulated Pi's task died.
    #[error("simulated pi {serial} crashed: {reason}")]
    Crashed {
        /// The Pi.
        serial: String,
        /// The panic or cancellation.
        reason: String,
    },
}

/// Tuning of a simulated boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// TFTP retransmission timeout.
    pub timeout: Duration,
    /// TFTP retransmissions before a fetch fails.
    pub retries: u32,
    /// Ask for this block size instead of the model's.
    pub blksize: Option<u16>,
    /// Ask for a window size (a real Pi does not; for benchmarks).
    pub windowsize: Option<u16>,
    /// Ask for each file's size first (a read request with `tsize`, ended with an ERROR as
    /// soon as the OACK arrives), as the Pi firmware does; the Pi 3 boot ROM's requests
    /// for `bootcode.bin` and `bootsig.bin` are single.
    pub size_queries: bool,
}

impl Default for BootOptions {
    /// Timeout 1 s, 5 retries, the model's block size, no window size, size queries.
    fn default() -> Self {
        BootOptions {
            timeout: Duration::from_secs(1),
            retries: 5,
            blksize: None,
            windowsize: None,
            size_queries: true,
        }
    }
}

/// One request of a simulated boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The TFTP path requested.
    pub path: String,
    /// Whether the server sent it (false: "file not found", as expected).
    pub found: bool,
    /// Bytes received.
    pub bytes: u64,
    /// Time for this file (its size query included).
    pub elapsed: Duration,
}

/// A completed, verified simulated boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootReport {
    /// The Pi's serial.
    pub serial: String,
    /// The Pi's model.
    pub model: Model,
    /// Every request, in order.
    pub files: Vec<FileReport>,
    /// The text of `cmdline.txt` as served.
    pub cmdline: String,
    /// Whether the Pi booted from the TFTP root: its first file was not found under
    /// `<serial>/` and the firmware's prefix fallback found it at the root. A bakery must
    /// never let this happen (an unbaked Pi would boot a bakeform's stock files).
    pub from_root: bool,
    /// Time from the first request to the last byte.
    pub total: Duration,
}

impl BootReport {
    /// Bytes received in all requests.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// Whether `serial` is 8 lowercase hex digits.
pub fn valid_serial(serial: &str) -> bool {
    serial.len() == 8
        && serial
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Boots one simulated Pi against the TFTP server at `server`, checking every byte against
/// the bakeform boot directory `expected`.
pub async fn boot(
    server: SocketAddr,
    serial: &str,
    model: Model,
    expected: &Path,
    opts: &BootOptions,
) -> Result<BootReport, SimError> {
    let expected = Expected::new(expected);
    boot_with(server, serial, model, &expected, opts).await
}

/// Boots `count` simulated Pis at once, with serials `serial_base`, `serial_base + 1`, ...
/// (as 8 hex digits); one result per Pi, in serial order.
pub async fn boot_many(
    server: SocketAddr,
    count: usize,
    serial_base: u32,
    model: Model,
    expected: &Path,
    opts: &BootOptions,
) -> Vec<Result<BootReport, SimError>> {
    let expected = Arc::new(Expected::new(expected));
    let serials: Vec<String> = (0..count)
        .map(|i| format!("{:08x}", serial_base.wrapping_add(i as u32)))
        .collect();
    let tasks: Vec<_> = serials
        .iter()
        .map(|serial| {
            let expected = Arc::clone(&expected);
            let serial = serial.clone();
            let opts = opts.clone();
            tokio::spawn(async move { boot_with(server, &serial, model, &expected, &opts).await })
        })
        .collect();
    let mut results = Vec::with_capacity(count);
    for (task, serial) in tasks.into_iter().zip(serials) {
        results.push(task.await.unwrap_or_else(|error| {
            Err(SimError::Crashed {
                serial,
                reason: error.to_string(),
            })
        }));
    }
    results
}

/// What the Pi does with one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The Pi cannot boot without it.
    Required,
    /// Served if and only if the boot directory has it.
    Probe,
    /// Rendered per Pi; checked for an NFS root.
    Cmdline,
    /// The overlays config.txt names (`dtoverlay=`).
    Overlays,
    /// The kernel config.txt names (`kernel=`, `arm_64bit=`) or the model's default.
    Kernel,
}

/// The requests of one model's boot, in order; names starting with `/` are at the TFTP
/// root, the others under `<serial>/`. After the order tftpd-hpa logs for real Pis.
fn sequence(model: Model) -> &'static [(&'static str, Step)] {
    match model {
        Model::Pi3 => &[
            ("/bootcode.bin", Step::Required),
            ("/bootsig.bin", Step::Probe),
            ("start.elf", Step::Required),
            ("autoboot.txt", Step::Probe),
            ("config.txt", Step::Required),
            ("recovery.elf", Step::Probe),
            ("fixup.dat", Step::Required),
            ("dt-blob.bin", Step::Probe),
            ("bootcfg.txt", Step::Probe),
            ("bcm2710-rpi-3-b.dtb", Step::Required),
            ("overlays/overlay_map.dtb", Step::Probe),
            ("", Step::Overlays),
            ("cmdline.txt", Step::Cmdline),
            ("", Step::Kernel),
        ],
        Model::Pi4 => &[
            ("start4.elf", Step::Required),
            ("config.txt", Step::Required),
            ("pieeprom.sig", Step::Probe),
            ("recover4.elf", Step::Probe),
            ("fixup4.dat", Step::Required),
            ("bcm2711-rpi-4-b.dtb", Step::Required),
            ("overlays/overlay_map.dtb", Step::Probe),
            ("", Step::Overlays),
            ("cmdline.txt", Step::Cmdline),
            ("", Step::Kernel),
        ],
        // The Pi 5 EEPROM carries the firmware: config.txt is its first file.
        Model::Pi5 => &[
            ("config.txt", Step::Required),
            ("pieeprom.sig", Step::Probe),
            ("bcm2712-rpi-5-b.dtb", Step::Required),
            ("overlays/overlay_map.dtb", Step::Probe),
            ("", Step::Overlays),
            ("cmdline.txt", Step::Cmdline),
            ("", Step::Kernel),
        ],
    }
}

async fn boot_with(
    server: SocketAddr,
    serial: &str,
    model: Model,
    expected: &Expected,
    opts: &BootOptions,
) -> Result<BootReport, SimError> {
    if !valid_serial(serial) {
        return Err(SimError::BadSerial {
            serial: serial.to_owned(),
        });
    }
    let pi = Pi {
        server,
        serial,
        expected,
        size_queries: opts.size_queries,
        fetch: FetchOptions {
            blksize: Some(opts.blksize.unwrap_or(model.blksize())),
            tsize: true,
            windowsize: opts.windowsize,
            timeout: opts.timeout,
            retries: opts.retries,
            ..FetchOptions::default()
        },
    };
    let started = Instant::now();
    let mut files = Vec::new();
    let mut cmdline = String::new();
    // Set once the firmware cleared its `<serial>/` prefix: every later request goes to the
    // TFTP root, as on a real Pi whose first file was not found under its serial.
    let mut prefix_cleared = false;
    let at = |name: &str, cleared: bool| match cleared {
        true => format!("/{}", name.trim_start_matches('/')),
        false => name.to_owned(),
    };
    for &(name, step) in sequence(model) {
        if matches!(step, Step::Overlays | Step::Kernel) {
            let config = expected.get("config.txt")?.unwrap_or_default();
            let (overlays, kernel) =
                from_config(model, &String::from_utf8_lossy(&config), expected)?;
            if step == Step::Kernel {
                let kernel = at(&kernel, prefix_cleared);
                files.push(pi.request(&kernel, Step::Required).await?.0);
            } else {
                for overlay in overlays {
                    let overlay = at(&overlay, prefix_cleared);
                    files.push(pi.request(&overlay, Step::Probe).await?.0);
                }
            }
            continue;
        }
        if name == model.first_file() && !prefix_cleared {
            // The firmware's prefix fallback (Raspberry Pi bootloader, TFTP_PREFIX): when the
            // first file is not under `<serial>/`, it asks the TFTP root and, if that answers,
            // boots everything from there.
            let tried = Instant::now();
            match pi.request(name, step).await {
                Err(SimError::Missing { serial, path }) => {
                    files.push(FileReport {
                        path: path.clone(),
                        found: false,
                        bytes: 0,
                        elapsed: tried.elapsed(),
                    });
                    match pi.request(&at(name, true), step).await {
                        Ok((report, _)) => {
                            prefix_cleared = true;
                            files.push(report);
                            continue;
                        }
                        Err(SimError::Missing { .. }) => {
                            return Err(SimError::Missing { serial, path });
                        }
                        Err(other) => return Err(other),
                    }
                }
                Ok((report, _)) => {
                    files.push(report);
                    continue;
                }
                Err(other) => return Err(other),
            }
        }
        let (report, data) = pi.request(&at(name, prefix_cleared), step).await?;
        if step == Step::Cmdline {
            cmdline = String::from_utf8_lossy(&data).into_owned();
        }
        files.push(report);
    }
    Ok(BootReport {
        serial: serial.to_owned(),
        model,
        files,
        cmdline,
        from_root: prefix_cleared,
        total: started.elapsed(),
    })
}

/// The overlays and the kernel config.txt makes the firmware load.
fn from_config(
    model: Model,
    config: &str,
    expected: &Expected,
) -> Result<(Vec<String>, String), SimError> {
    let mut kernel = None;
    let mut arm_64bit = false;
    let mut overlays = Vec::new();
    for line in config.lines() {
        let line = line.trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "kernel" => kernel = Some(value.trim().to_owned()),
            "arm_64bit" => arm_64bit = value.trim() == "1",
            "dtoverlay" => {
                let name = value.split(',').next().unwrap_or_default().trim();
                if !name.is_empty() {
                    overlays.push(format!("overlays/{name}.dtbo"));
                }
            }
            _ => {}
        }
    }
    let kernel = match kernel {
        Some(kernel) => kernel,
        // A Pi 5 takes the 2712 kernel, and kernel8.img where the boot files have none.
        None if model == Model::Pi5 && expected.get("kernel_2712.img")?.is_some() => {
            "kernel_2712.img".to_owned()
        }
        None if model == Model::Pi5 => "kernel8.img".to_owned(),
        None if model == Model::Pi4 || arm_64bit => "kernel8.img".to_owned(),
        None if expected.get("kernel7.img")?.is_some() => "kernel7.img".to_owned(),
        None => "kernel8.img".to_owned(),
    };
    Ok((overlays, kernel))
}

struct Pi<'a> {
    server: SocketAddr,
    serial: &'a str,
    expected: &'a Expected,
    size_queries: bool,
    fetch: FetchOptions,
}

impl Pi<'_> {
    /// Requests `name` (under the serial directory unless it starts with `/`) and checks it.
    async fn request(&self, name: &str, step: Step) -> Result<(FileReport, Vec<u8>), SimError> {
        let (path, relative) = match name.strip_prefix('/') {
            Some(root) => (root.to_owned(), root),
            None => (format!("{}/{name}", self.serial), name),
        };
        let started = Instant::now();
        let query_first = self.size_queries && !name.starts_with('/');
        let result = match query_first {
            true => match query_size(self.server, &path, &self.fetch).await {
                Ok(_) => fetch(self.server, &path, &self.fetch).await,
                Err(error) => Err(error),
            },
            false => fetch(self.server, &path, &self.fetch).await,
        };
        let elapsed = started.elapsed();
        let want = match step {
            Step::Cmdline => None,
            _ => self.expected.get(relative)?,
        };
        let data = match result {
            Ok(fetched) => fetched.data,
            Err(error) if error.is_not_found() => {
                if want.is_some() || matches!(step, Step::Required | Step::Cmdline) {
                    return Err(SimError::Missing {
                        serial: self.serial.to_owned(),
                        path,
                    });
                }
                let report = FileReport {
                    path,
                    found: false,
                    bytes: 0,
                    elapsed,
                };
                return Ok((report, Vec::new()));
            }
            Err(source) => {
                return Err(SimError::Tftp {
                    serial: self.serial.to_owned(),
                    path,
                    source,
                });
            }
        };
        match (step, want) {
            (Step::Cmdline, _) => {
                let text = String::from_utf8_lossy(&data);
                if text.trim().is_empty()
                    || !(text.contains("nfsroot=") || text.contains("root=/dev/nfs"))
                {
                    return Err(SimError::Cmdline {
                        serial: self.serial.to_owned(),
                        text: text.into_owned(),
                    });
                }
            }
            (_, None) => {
                return Err(SimError::Unexpected {
                    serial: self.serial.to_owned(),
                    path,
                    bytes: data.len() as u64,
                });
            }
            (_, Some(want)) => {
                if data != *want {
                    let at = data
                        .iter()
                        .zip(want.iter())
                        .position(|(a, b)| a != b)
                        .unwrap_or(data.len().min(want.len()));
                    return Err(SimError::Mismatch {
                        serial: self.serial.to_owned(),
                        path,
                        got: data.len() as u64,
                        expected: want.len() as u64,
                        at: at as u64,
                    });
                }
            }
        }
        let report = FileReport {
            path,
            found: true,
            bytes: data.len() as u64,
            elapsed,
        };
        Ok((report, data))
    }
}

/// The files of a boot directory, read once and shared by every simulated Pi.
struct Expected {
    root: PathBuf,
    files: Mutex<HashMap<String, Option<Arc<Vec<u8>>>>>,
}

impl Expected {
    fn new(root: &Path) -> Expected {
        Expected {
            root: root.to_owned(),
            files: Mutex::new(HashMap::new()),
        }
    }

    /// The bytes of `relative`, `None` if the boot directory has no such file.
    fn get(&self, relative: &str) -> Result<Option<Arc<Vec<u8>>>, SimError> {
        if let Some(cached) = self
            .files
            .lock()
            .ok()
            .and_then(|f| f.get(relative).cloned())
        {
            return Ok(cached);
        }
        let path = self.root.join(relative);
        let loaded = match std::fs::read(&path) {
            Ok(bytes) => Some(Arc::new(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(SimError::Expected { path, source }),
        };
        if let Ok(mut files) = self.files.lock() {
            files.insert(relative.to_owned(), loaded.clone());
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_8_lowercase_hex_digits() {
        assert!(valid_serial("0123abcd"));
        assert!(!valid_serial("0123ABCD"));
        assert!(!valid_serial("0123abc"));
        assert!(!valid_serial("0123abcde"));
        assert!(!valid_serial("../../xx"));
    }

    #[test]
    fn config_names_the_kernel_and_overlays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let expected = Expected::new(dir.path());
        let names = |model, config: &str| from_config(model, config, &expected).expect("config");
        assert_eq!(names(Model::Pi4, ""), (vec![], "kernel8.img".to_owned()));
        assert_eq!(names(Model::Pi5, "").1, "kernel8.img");
        std::fs::write(dir.path().join("kernel_2712.img"), b"k").expect("write");
        let with_2712 = Expected::new(dir.path());
        assert_eq!(
            from_config(Model::Pi5, "", &with_2712).expect("config").1,
            "kernel_2712.img"
        );
        assert_eq!(
            from_config(Model::Pi5, "kernel=kernel8.img\n", &with_2712)
                .expect("config")
                .1,
            "kernel8.img"
        );
        assert_eq!(names(Model::Pi3, "arm_64bit=1\n").1, "kernel8.img");
        assert_eq!(
            names(Model::Pi3, "dtoverlay=vc4-kms-v3d,cma-128\nkernel=zImage\n"),
            (
                vec!["overlays/vc4-kms-v3d.dtbo".to_owned()],
                "zImage".to_owned()
            )
        );
        std::fs::write(dir.path().join("kernel7.img"), b"k").expect("write");
        let expected = Expected::new(dir.path());
        assert_eq!(
            from_config(Model::Pi3, "", &expected).expect("config").1,
            "kernel7.img"
        );
    }

    #[test]
    fn models_parse_by_name() {
        assert_eq!("pi3".parse::<Model>().ok(), Some(Model::Pi3));
        assert_eq!("pi4".parse::<Model>().ok(), Some(Model::Pi4));
        assert_eq!("pi5".parse::<Model>().ok(), Some(Model::Pi5));
        assert!("pi6".parse::<Model>().is_err());
    }
}
