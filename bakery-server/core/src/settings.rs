//! The core's settings: what the service, the boot path and the adapters are configured with,
//! however the shell read them (flags, environment, TOML file).

use std::path::PathBuf;
use std::time::Duration;

use crate::domain::exports::{DEFAULT_EXPORT_OPTIONS, DEFAULT_GANESHA_EXPORT_ID_BASE};
use crate::imaging::CloneStrategy;

/// The default of `--min-free-space`: 1 GiB.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 1 << 30;

/// The default of `--max-pis`.
pub const DEFAULT_MAX_PIS: u32 = 1024;

/// The IANA port of NBD, nbd-server's default.
pub const DEFAULT_NBD_PORT: u16 = 10809;

/// The NFS server bakery writes exports for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NfsBackend {
    /// The kernel NFS server: `exports(5)` lines, then `--exportfs-cmd`.
    Kernel,
    /// nfs-ganesha: `EXPORT` blocks for the operator's `ganesha.conf` to `%include`, then a
    /// reload (SIGHUP to `--ganesha-pid-file`, or `--exportfs-cmd` when given).
    Ganesha,
}

/// The settings of the core (every field documented by the server's flag of the same name).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The SQLite file.
    pub db_path: PathBuf,
    /// The address Pis mount NFS from.
    pub nfs_address: String,
    /// The PPI executable, if power is managed.
    pub ppi: Option<PathBuf>,
    /// The PPI's configuration file.
    pub ppi_config: Option<PathBuf>,
    /// Limit per PPI call.
    pub ppi_timeout: Duration,
    /// Pause between off and on in a power cycle.
    pub power_cycle_pause: Duration,
    /// The exports file bakery owns.
    pub exports_file: PathBuf,
    /// The command run after rewriting the exports file.
    pub exportfs_cmd: String,
    /// NFS export options.
    pub export_options: String,
    /// Export to `*` instead of each Pi's address.
    pub export_to_any: bool,
    /// Which NFS server the exports are written for.
    pub nfs_backend: NfsBackend,
    /// With the ganesha backend: the pid file signalled to reload; `None`: `exportfs_cmd` is run.
    pub ganesha_pid_file: Option<PathBuf>,
    /// The first nfs-ganesha `Export_Id` bakery uses.
    pub ganesha_export_id_base: u16,
    /// Largest bakeform image accepted, in bytes.
    pub max_image_size: u64,
    /// Complete root clones kept ready per ready bakeform (0: no warm pool); `None`: the
    /// default for the data dir's clone strategy (see [`Settings::warm_pool_for`]).
    pub warm_pool: Option<usize>,
    /// Bytes the data dir keeps free: the pool, bakes and uploads stop short of it (0: none).
    pub min_free_space: u64,
    /// Where bootcode.bin, the one root-level boot file, comes from, if set.
    pub boot_root_dir: Option<PathBuf>,
    /// The operator's cmdline.txt template file, if set.
    pub cmdline_template: Option<PathBuf>,
    /// The URL Pis fetch cloud-init files from, if set (else derived, see
    /// [`Settings::nocloud_url`]).
    pub cloud_init_url: Option<String>,
    /// The port the HTTP API is configured on (the derived cloud-init URL's port until the
    /// listener's real one is known).
    pub api_port: u16,
    /// Whether the HTTP API is served over TLS (the derived cloud-init URL's scheme).
    pub api_tls: bool,
    /// Most Pis the inventory holds.
    pub max_pis: u32,
    /// Whether the boot path pins Pis to their addresses.
    pub pin_pi_addresses: bool,
    /// Longest an upload's body may send nothing.
    pub upload_idle_timeout: Duration,
    /// Bakeform uploads running at once.
    pub max_concurrent_uploads: usize,
    /// The nbd-server config file bakery writes; `None`: nbd roots are off.
    pub nbd_config: Option<PathBuf>,
    /// The port nbd-server listens on.
    pub nbd_port: u16,
    /// The mkfs.ext4 command (program and arguments) for nbd root images.
    pub mkfs_ext4_cmd: String,
}

impl Settings {
    /// Settings with defaults for a data dir and NFS address (handy in tests).
    pub fn new(data_dir: PathBuf, nfs_address: String) -> Settings {
        Settings {
            db_path: data_dir.join("bakery.db"),
            data_dir,
            nfs_address,
            ppi: None,
            ppi_config: None,
            ppi_timeout: Duration::from_secs(30),
            power_cycle_pause: Duration::from_secs(2),
            exports_file: PathBuf::from("/etc/exports.d/bakery.exports"),
            exportfs_cmd: "exportfs -ra".to_owned(),
            export_options: DEFAULT_EXPORT_OPTIONS.to_owned(),
            export_to_any: false,
            nfs_backend: NfsBackend::Kernel,
            ganesha_pid_file: None,
            ganesha_export_id_base: DEFAULT_GANESHA_EXPORT_ID_BASE,
            max_image_size: 32 << 30,
            warm_pool: None,
            min_free_space: DEFAULT_MIN_FREE_SPACE,
            boot_root_dir: None,
            cmdline_template: None,
            cloud_init_url: None,
            api_port: 8080,
            api_tls: false,
            max_pis: DEFAULT_MAX_PIS,
            pin_pi_addresses: false,
            upload_idle_timeout: Duration::from_secs(60),
            max_concurrent_uploads: 4,
            nbd_config: None,
            nbd_port: DEFAULT_NBD_PORT,
            mkfs_ext4_cmd: "mkfs.ext4".to_owned(),
        }
    }

    /// The URL Pis fetch their cloud-init NoCloud files from (`{{nocloud_url}}`): the
    /// configured one, else `http://<nfs-address>:<port>/cloud-init/` with the port the API
    /// really listens on (`port`, which differs from `api_port` when that asked for port 0).
    pub fn nocloud_url(&self, port: u16) -> String {
        match &self.cloud_init_url {
            Some(url) => url.clone(),
            None => {
                let host = match self.nfs_address.parse::<std::net::Ipv6Addr>() {
                    Ok(v6) => format!("[{v6}]"),
                    Err(_) => self.nfs_address.clone(),
                };
                let scheme = if self.api_tls { "https" } else { "http" };
                format!("{scheme}://{host}:{port}/cloud-init/")
            }
        }
    }

    /// The warm pool size to use with `strategy`: the configured one, else 1 — a bake is then
    /// a rename instead of a clone — except with btrfs snapshots, which take milliseconds
    /// anyway, where a pool would only spend disk.
    pub fn warm_pool_for(&self, strategy: CloneStrategy) -> usize {
        self.warm_pool.unwrap_or(match strategy {
            CloneStrategy::Snapshot => 0,
            _ => 1,
        })
    }
}
