//! Command line and configuration: every serve setting declared once in [`ServeArgs`] (its
//! flag, environment variable, TOML key, default and doc), layered, checked into [`Config`],
//! then its token and TLS files read.
//!
//! Precedence: flag, then environment variable (clap reads both, including the first bakery's
//! variables), then the `--config` file, then the declared default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, Args, Parser, Subcommand};
use serde::Deserialize;
use thiserror::Error;

pub use bakery_core::settings::{
    DEFAULT_MAX_PIS, DEFAULT_MIN_FREE_SPACE, DEFAULT_NBD_PORT, NfsBackend, Settings,
};

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TOML file is not valid.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: Box<toml::de::Error>,
    },
    /// A value is not valid.
    #[error("invalid value {value:?} for {key}: {reason}")]
    Value {
        /// The setting.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API token file is not usable.
    #[error(transparent)]
    TokenFile(#[from] crate::http::auth::TokenFileError),
    /// The TLS certificate or key is not usable.
    #[error(transparent)]
    Tls(#[from] crate::http::tls::TlsError),
    /// A required setting is missing.
    #[error("missing setting {0}: give it as a flag, environment variable or in the config file")]
    Missing(&'static str),
}

/// The `bakery-server` command line.
#[derive(Debug, Parser)]
#[command(
    name = "bakery-server",
    version,
    about = "Bakery: Raspberry Pis as a service"
)]
pub struct Cli {
    /// The serve settings (used when no subcommand is given).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Resolve the configuration, print it and exit (0 if it is valid).
    CheckConfig,
    /// Print a dnsmasq proxy-DHCP configuration snippet sending the subnet's Pis to bakery's
    /// TFTP server.
    PrintDnsmasqConfig(crate::dnsmasq::DnsmasqArgs),
}

/// One layer of settings over another: a value given in the upper layer wins. A switch
/// (`bool`) has no "not given": it is on when any layer turns it on.
trait Layer {
    /// `self` with what it leaves unset taken from `under`.
    fn over(self, under: Self) -> Self;
}

impl<T> Layer for Option<T> {
    fn over(self, under: Self) -> Self {
        self.or(under)
    }
}

impl Layer for bool {
    fn over(self, under: Self) -> Self {
        self || under
    }
}

/// Declares the settings struct once and derives from the same field list its layering
/// ([`Layer`] field by field) and its declared defaults: a field's `= value` is its default
/// written as in the TOML file, the lowest layer (below the file, so unlike a clap
/// `default_value` the file can override it) and shown in `--help` by [`show_default`].
/// A default that is not one value (derived from another setting) is described in the doc.
macro_rules! layered_settings {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_attr:meta])*
                pub $field:ident: $ty:ty $(= $default:literal)?
            ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        pub struct $name {
            $($(#[$field_attr])* pub $field: $ty,)*
        }

        impl $name {
            /// The declared defaults: (TOML key, TOML value).
            const DEFAULTS: &[(&str, &str)] = &[$($((stringify!($field), stringify!($default)),)?)*];
        }

        impl Layer for $name {
            fn over(self, under: $name) -> $name {
                $name {
                    $($field: self.$field.over(under.$field),)*
                }
            }
        }
    };
}

layered_settings! {
    /// The serve settings, each a flag, an environment variable and a key of the `--config`
    /// file (the field's name); `None` (or `false`): not given.
    #[derive(Debug, Clone, Default, Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    #[command(mut_args(show_default))]
    pub struct ServeArgs {
        /// TOML file with the same keys as the long flags (with `_` instead of `-`); flags win.
        #[arg(long, env = "BAKERY_CONFIG", global = true)]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// Address of the HTTP API; port 0 picks a free port.
        #[arg(long, env = "BAKERY_LISTEN", global = true)]
        pub listen: Option<String> = "0.0.0.0:8080",
        /// Data directory holding the database, bakeforms, disks, tmp and trash.
        #[arg(long, env = "BAKERY_ROOT", global = true)]
        pub data_dir: Option<PathBuf> = "/var/lib/bakery",
        /// SQLite database file [default: bakery.db in the data dir].
        #[arg(long, env = "DB_PATH", global = true)]
        pub db_path: Option<PathBuf>,
        /// Address Pis mount their NFS disks from (required).
        #[arg(long, env = "NFS_ADDRESS", global = true)]
        pub nfs_address: Option<String>,
        /// Power interface executable (PPI); without it power is not managed.
        #[arg(long, env = "PPI_PATH", global = true)]
        pub ppi: Option<PathBuf>,
        /// Configuration file passed to the PPI as `-c <file>`.
        #[arg(long, env = "PPI_CONFIG_PATH", global = true)]
        pub ppi_config: Option<PathBuf>,
        /// Seconds a PPI call may take before it is killed.
        #[arg(long, env = "BAKERY_PPI_TIMEOUT", global = true)]
        pub ppi_timeout: Option<f64> = 30,
        /// Seconds between power-off and power-on of a power cycle.
        #[arg(long, env = "BAKERY_POWER_CYCLE_PAUSE", global = true)]
        pub power_cycle_pause: Option<f64> = 2,
        /// The exports file bakery owns and rewrites [default: /etc/exports.d/bakery.exports,
        /// /etc/ganesha/bakery.conf with ganesha].
        #[arg(long, env = "BAKERY_EXPORTS_FILE", global = true)]
        pub exports_file: Option<PathBuf>,
        /// Command run after each rewrite, split on whitespace, no shell; "" for none [default:
        /// "exportfs -ra", none with ganesha].
        #[arg(long, env = "BAKERY_EXPORTFS_CMD", global = true)]
        pub exportfs_cmd: Option<String>,
        /// NFS export options.
        #[arg(long, env = "BAKERY_EXPORT_OPTIONS", global = true)]
        pub export_options: Option<String> = "rw,sync,no_subtree_check,no_root_squash",
        /// Export to any host (`*`) instead of only each Pi's own address (insecure).
        #[arg(long, env = "BAKERY_EXPORT_TO_ANY", global = true)]
        pub export_to_any: bool,
        /// Largest bakeform image accepted, with optional K/M/G/T suffix.
        #[arg(long, env = "BAKERY_MAX_IMAGE_SIZE", global = true, value_parser = size_text)]
        pub max_image_size: Option<toml::Value> = "32G",
        /// Complete root clones kept ready per ready bakeform, so a bake only renames one into
        /// place (each costs one golden root of disk; 0 = off) [default: 1, or 0 where roots are
        /// btrfs snapshots, which are instant anyway].
        #[arg(long, env = "BAKERY_WARM_POOL", global = true)]
        pub warm_pool: Option<usize>,
        /// Free space the data dir keeps: the warm pool fills, and bakes and uploads are
        /// accepted, only while they leave at least this much free (K/M/G/T suffix; 0 = no
        /// minimum). The default is an absolute amount rather than a percentage because what
        /// must keep working on a nearly full disk is absolute too (the SQLite journal, exports
        /// rewrites, logs, the trash being emptied), and 5 % of a large disk would strand tens
        /// of GiB.
        #[arg(long, env = "BAKERY_MIN_FREE_SPACE", global = true, value_parser = size_text)]
        pub min_free_space: Option<toml::Value> = "1G",
        /// Directory bootcode.bin (the Pi 3 boot ROM's one root-level file) is served from; no
        /// other root-level file is ever served [default: newest bakeform's boot dir].
        #[arg(long, env = "BAKERY_BOOT_ROOT_DIR", global = true)]
        pub boot_root_dir: Option<PathBuf>,
        /// cmdline.txt template with {{nfs_server}} {{nfs_root}} {{ip}} {{serial}}
        /// {{nocloud_url}}, overriding bakeforms'.
        #[arg(long, env = "BAKERY_CMDLINE_TEMPLATE", global = true)]
        pub cmdline_template: Option<PathBuf>,
        /// URL Pis fetch their cloud-init NoCloud files from, ending in "/cloud-init/"
        /// ({{nocloud_url}} in the cmdline template) [default: http://NFS-ADDRESS:PORT/cloud-init/
        /// with --nfs-address and the port of --listen].
        #[arg(long, env = "BAKERY_CLOUD_INIT_URL", global = true)]
        pub cloud_init_url: Option<String>,
        /// Address of the built-in TFTP server, or "off".
        #[arg(long, env = "BAKERY_TFTP_LISTEN", global = true)]
        pub tftp_listen: Option<String> = "0.0.0.0:69",
        /// NFS server: "kernel" (exports(5) lines + exportfs) or "ganesha" (nfs-ganesha EXPORT
        /// blocks).
        #[arg(long, env = "BAKERY_NFS_BACKEND", global = true)]
        pub nfs_backend: Option<String> = "kernel",
        /// nfs-ganesha's pid file, signalled (SIGHUP) after each rewrite unless --exportfs-cmd
        /// is given [default: /var/run/ganesha/ganesha.pid with ganesha].
        #[arg(long, env = "BAKERY_GANESHA_PID_FILE", global = true)]
        pub ganesha_pid_file: Option<PathBuf>,
        /// First nfs-ganesha Export_Id bakery uses; lower ids stay free for the operator's own
        /// exports.
        #[arg(long, env = "BAKERY_GANESHA_EXPORT_ID_BASE", global = true)]
        pub ganesha_export_id_base: Option<u16> = 1000,
        /// API bearer tokens, one per line (`ro:` prefix: read-only); re-read on SIGHUP
        /// [default: API open].
        #[arg(long, env = "BAKERY_TOKEN_FILE", global = true)]
        pub token_file: Option<PathBuf>,
        /// Require a token on the boot path (/api/v1/files/...) too; HookTFTP cannot send one.
        #[arg(long, env = "BAKERY_BOOT_FILES_REQUIRE_TOKEN", global = true)]
        pub boot_files_require_token: bool,
        /// PEM certificate chain: serve HTTPS (needs --tls-key).
        #[arg(long, env = "BAKERY_TLS_CERT", global = true)]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, env = "BAKERY_TLS_KEY", global = true)]
        pub tls_key: Option<PathBuf>,
        /// Most Pis the inventory holds; unknown serials beyond it are not registered.
        #[arg(long, env = "BAKERY_MAX_PIS", global = true)]
        pub max_pis: Option<u32> = 1024,
        /// One address, one Pi: refuse boot requests for a Pi from another Pi's address or, for
        /// a Pi in the oven, from any address but its own (use with DHCP reservations).
        #[arg(long, env = "BAKERY_PIN_PI_ADDRESSES", global = true)]
        pub pin_pi_addresses: bool,
        /// Seconds an upload's body may send nothing before the upload is failed (408).
        #[arg(long, env = "BAKERY_UPLOAD_IDLE_TIMEOUT", global = true)]
        pub upload_idle_timeout: Option<f64> = 60,
        /// Bakeform uploads running at once; more are refused with 503 and Retry-After.
        #[arg(long, env = "BAKERY_MAX_CONCURRENT_UPLOADS", global = true)]
        pub max_concurrent_uploads: Option<usize> = 4,
        /// nbd-server config file bakery writes (one export serving each nbd Pi its own root
        /// image); bakes with rootKind nbd are refused without it [default: off].
        #[arg(long, env = "BAKERY_NBD_CONFIG", global = true)]
        pub nbd_config: Option<PathBuf>,
        /// Port nbd-server listens on, written into its config and into nbdroot=.
        #[arg(long, env = "BAKERY_NBD_PORT", global = true)]
        pub nbd_port: Option<u16> = 10809,
        /// mkfs.ext4 command that makes a bakeform's root image for nbd roots, split on
        /// whitespace, no shell.
        #[arg(long, env = "BAKERY_MKFS_EXT4_CMD", global = true)]
        pub mkfs_ext4_cmd: Option<String> = "mkfs.ext4",
    }
}

/// Appends a setting's declared default to its help, where clap shows a `default_value`.
fn show_default(arg: Arg) -> Arg {
    let Some((_, value)) = ServeArgs::DEFAULTS
        .iter()
        .find(|(key, _)| arg.get_id().as_str() == *key)
    else {
        return arg;
    };
    let shown = |help: Option<&clap::builder::StyledStr>| {
        let help = help.map(ToString::to_string).unwrap_or_default();
        format!("{help} [default: {}]", value.trim_matches('"'))
    };
    let help = shown(arg.get_help());
    let long_help = arg.get_long_help().map(|h| shown(Some(h)));
    let arg = arg.help(help);
    match long_help {
        Some(h) => arg.long_help(h),
        None => arg,
    }
}

/// A size flag or environment variable as given: a string, checked by [`size`] once merged.
fn size_text(text: &str) -> Result<toml::Value, std::convert::Infallible> {
    Ok(toml::Value::String(text.to_owned()))
}

/// The resolved configuration of a server: the shell's own settings (listeners, tokens, TLS)
/// and the core's [`Settings`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// The TFTP server's address; `None` when off.
    pub tftp_listen: Option<SocketAddr>,
    /// The API token file; `None`: the API is open.
    pub token_file: Option<PathBuf>,
    /// Whether the boot path needs a token too.
    pub boot_files_require_token: bool,
    /// The HTTPS certificate chain and key (PEM); `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// What the core is configured with.
    pub settings: Settings,
}

/// The PEM files HTTPS is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// Where the ganesha backend's exports file goes unless `--exports-file` says otherwise.
pub const DEFAULT_GANESHA_EXPORTS_FILE: &str = "/etc/ganesha/bakery.conf";

/// Where nfs-ganesha writes its pid unless `--ganesha-pid-file` says otherwise.
pub const DEFAULT_GANESHA_PID_FILE: &str = "/var/run/ganesha/ganesha.pid";

/// Where the kernel backend's exports file goes unless `--exports-file` says otherwise.
const DEFAULT_KERNEL_EXPORTS_FILE: &str = "/etc/exports.d/bakery.exports";

/// What the kernel backend runs after a rewrite unless `--exportfs-cmd` says otherwise.
const DEFAULT_EXPORTFS_CMD: &str = "exportfs -ra";

impl Config {
    /// A configuration with defaults for a data dir and NFS address (handy in tests).
    pub fn new(data_dir: PathBuf, nfs_address: String) -> Config {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            tftp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 69))),
            token_file: None,
            boot_files_require_token: false,
            tls: None,
            settings: Settings::new(data_dir, nfs_address),
        }
    }

    /// The core's settings with what they take from the shell's (the API's port and scheme,
    /// for the derived cloud-init URL).
    pub fn core_settings(&self) -> Settings {
        Settings {
            api_port: self.listen.port(),
            api_tls: self.tls.is_some(),
            ..self.settings.clone()
        }
    }

    /// Reads the token file and the TLS certificate and key, so a bad one stops the server
    /// before it listens (and `check-config` reports it); the server loads them again when it
    /// starts serving, and on SIGHUP.
    pub fn load_files(&self) -> Result<(), ConfigError> {
        if let Some(path) = &self.token_file {
            crate::http::auth::TokenSet::load(path)?;
        }
        if let Some(tls) = &self.tls {
            crate::http::tls::server_config(&tls.cert, &tls.key)?;
        }
        Ok(())
    }
}

fn bad(key: &'static str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key,
        value: value.into(),
        reason: reason.into(),
    }
}

/// Parses a size such as `1048576`, `512M`, `8G` (binary units).
pub fn parse_size(value: &str) -> Result<u64, ConfigError> {
    match parse_size_of("max-image-size", value)? {
        0 => Err(bad(
            "max-image-size",
            value,
            "must be positive and fit in 64 bits",
        )),
        n => Ok(n),
    }
}

/// Parses a size setting `key` such as `0`, `512M`, `8G` (binary units); 0 is allowed.
fn parse_size_of(key: &'static str, value: &str) -> Result<u64, ConfigError> {
    let v = value.trim();
    let (digits, shift) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad(key, value, "unknown unit, use K, M, G or T")),
            };
            (&v[..i], shift)
        }
        _ => (v, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| bad(key, value, "expected a number with optional K/M/G/T"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| bad(key, value, "must fit in 64 bits"))
}

/// A size setting: a string with an optional unit (named by its flag `key`, as flags,
/// environment variables and the file give it), or bytes as a TOML integer (only the file
/// gives those: named by its `file_key`).
fn size(
    key: &'static str,
    file_key: &'static str,
    value: Option<toml::Value>,
) -> Result<u64, ConfigError> {
    match given(key, value)? {
        toml::Value::String(s) => parse_size_of(key, &s),
        toml::Value::Integer(n) => {
            u64::try_from(n).map_err(|_| bad(file_key, n.to_string(), "must not be negative"))
        }
        other => Err(bad(file_key, other.to_string(), "expected a size")),
    }
}

/// A setting in seconds.
fn seconds(key: &'static str, secs: Option<f64>) -> Result<Duration, ConfigError> {
    let secs = given(key, secs)?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| bad(key, secs.to_string(), "expected seconds >= 0"))
}

fn parse_listen(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let reason = "expected ip:port, e.g. 0.0.0.0:8080 or [::1]:8080";
    value.parse().map_err(|_| bad(key, value, reason))
}

/// The setting `key`'s value; `None` only for a setting without a declared default that no
/// layer gave.
fn given<T>(key: &'static str, value: Option<T>) -> Result<T, ConfigError> {
    value.ok_or(ConfigError::Missing(key))
}

/// The setting `key`'s value if `ok` says it is valid, else the error naming `key` and
/// `reason` (or [`ConfigError::Missing`], see [`given`]).
fn valid<T: ToString>(
    key: &'static str,
    value: Option<T>,
    ok: impl FnOnce(&T) -> bool,
    reason: &str,
) -> Result<T, ConfigError> {
    match given(key, value)? {
        v if ok(&v) => Ok(v),
        v => Err(bad(key, v.to_string(), reason)),
    }
}

/// A path setting; empty (what a template renders for "unset") means unset.
fn set(path: Option<PathBuf>) -> Option<PathBuf> {
    path.filter(|p| !p.as_os_str().is_empty())
}

fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

impl ServeArgs {
    /// Resolves the configuration: these flags and environment variables over the `--config`
    /// file over the declared defaults, checked into a [`Config`], then its token and TLS
    /// files read ([`Config::load_files`]).
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let config = self
            .clone()
            .over(file)
            .over(ServeArgs::defaults())
            .check()?;
        config.load_files()?;
        Ok(config)
    }

    /// The declared defaults as a layer.
    fn defaults() -> ServeArgs {
        let toml: String = ServeArgs::DEFAULTS
            .iter()
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect();
        toml::from_str(&toml).expect("the declared defaults are valid TOML")
    }

    /// Checks the merged settings and turns them into a [`Config`] (no file is read).
    fn check(self) -> Result<Config, ConfigError> {
        let nfs_address = valid(
            "nfs-address",
            Some(given("nfs-address (NFS_ADDRESS)", self.nfs_address)?),
            |a| !a.trim().is_empty() && !a.contains(char::is_whitespace),
            "expected a host name or address",
        )?;
        let data_dir = given("data-dir", self.data_dir)?;
        let listen = parse_listen("listen", &given("listen", self.listen)?)?;
        let tftp_listen = match given("tftp-listen", self.tftp_listen)? {
            t if t.eq_ignore_ascii_case("off") => None,
            t => Some(parse_listen("tftp-listen", &t)?),
        };
        let tls = match (set(self.tls_cert), set(self.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(cert), None) => return Err(bad("tls-cert", shown(&cert), "needs --tls-key too")),
            (None, Some(key)) => return Err(bad("tls-key", shown(&key), "needs --tls-cert too")),
        };
        let nfs_backend = match given("nfs-backend", self.nfs_backend)? {
            b if b.eq_ignore_ascii_case("kernel") => NfsBackend::Kernel,
            b if b.eq_ignore_ascii_case("ganesha") => NfsBackend::Ganesha,
            b => return Err(bad("nfs-backend", b, "expected kernel or ganesha")),
        };
        // The exports file and how the NFS server is told of a rewrite default by backend.
        let (exports_file, exportfs_cmd, ganesha_pid_file) =
            match (nfs_backend, set(self.ganesha_pid_file), self.exportfs_cmd) {
                (NfsBackend::Kernel, Some(p), _) => {
                    let reason = "only used with --nfs-backend ganesha";
                    return Err(bad("ganesha-pid-file", shown(&p), reason));
                }
                (NfsBackend::Ganesha, Some(p), Some(_)) => {
                    let reason = "give either it (reload by SIGHUP) or --exportfs-cmd, not both";
                    return Err(bad("ganesha-pid-file", shown(&p), reason));
                }
                (NfsBackend::Kernel, None, cmd) => (
                    DEFAULT_KERNEL_EXPORTS_FILE,
                    cmd.unwrap_or_else(|| DEFAULT_EXPORTFS_CMD.to_owned()),
                    None,
                ),
                (NfsBackend::Ganesha, None, Some(cmd)) => (DEFAULT_GANESHA_EXPORTS_FILE, cmd, None),
                (NfsBackend::Ganesha, pid, None) => (
                    DEFAULT_GANESHA_EXPORTS_FILE,
                    String::new(),
                    Some(pid.unwrap_or_else(|| DEFAULT_GANESHA_PID_FILE.into())),
                ),
            };
        let cloud_init_url = (self.cloud_init_url)
            .map(|url| {
                let http = |u: &String| u.starts_with("http://") || u.starts_with("https://");
                let url = valid(
                    "cloud-init-url",
                    Some(url),
                    http,
                    "expected an http:// or https:// url",
                )?;
                let one_word = |u: &String| !u.contains(char::is_whitespace);
                let reason = "a url in cmdline.txt cannot hold whitespace";
                valid("cloud-init-url", Some(url), one_word, reason)
            })
            .transpose()?;
        let settings = Settings {
            db_path: self.db_path.unwrap_or_else(|| data_dir.join("bakery.db")),
            data_dir,
            nfs_address,
            ppi: set(self.ppi),
            ppi_config: set(self.ppi_config),
            ppi_timeout: seconds("ppi-timeout", self.ppi_timeout)?,
            power_cycle_pause: seconds("power-cycle-pause", self.power_cycle_pause)?,
            exports_file: self.exports_file.unwrap_or_else(|| exports_file.into()),
            exportfs_cmd,
            export_options: valid(
                "export-options",
                self.export_options,
                |o| !o.is_empty() && !o.contains(|c: char| c.is_whitespace() || "()".contains(c)),
                "expected comma-separated options",
            )?,
            export_to_any: self.export_to_any,
            nfs_backend,
            ganesha_pid_file,
            ganesha_export_id_base: valid(
                "ganesha-export-id-base",
                self.ganesha_export_id_base,
                |&b| b > 0,
                "must be at least 1 (export id 0 is ganesha's NFSv4 root)",
            )?,
            max_image_size: match given("max-image-size", self.max_image_size)? {
                toml::Value::String(s) => parse_size(&s)?,
                toml::Value::Integer(n) => u64::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad("max_image_size", n.to_string(), "must be positive"))?,
                other => size("max-image-size", "max_image_size", Some(other))?,
            },
            warm_pool: self.warm_pool,
            min_free_space: size("min-free-space", "min_free_space", self.min_free_space)?,
            boot_root_dir: set(self.boot_root_dir),
            cmdline_template: set(self.cmdline_template),
            cloud_init_url,
            api_port: listen.port(),
            api_tls: tls.is_some(),
            max_pis: valid("max-pis", self.max_pis, |&n| n > 0, "must be at least 1")?,
            pin_pi_addresses: self.pin_pi_addresses,
            upload_idle_timeout: seconds(
                "upload-idle-timeout",
                Some(valid(
                    "upload-idle-timeout",
                    self.upload_idle_timeout,
                    |&t| t != 0.0,
                    "must be positive",
                )?),
            )?,
            max_concurrent_uploads: valid(
                "max-concurrent-uploads",
                self.max_concurrent_uploads,
                |&n| n > 0,
                "must be at least 1",
            )?,
            nbd_config: set(self.nbd_config),
            nbd_port: valid(
                "nbd-port",
                self.nbd_port,
                |&p| p > 0,
                "must be a port from 1 to 65535",
            )?,
            mkfs_ext4_cmd: valid(
                "mkfs-ext4-cmd",
                self.mkfs_ext4_cmd,
                |c| c.split_whitespace().next().is_some(),
                "must name a program",
            )?,
        };
        Ok(Config {
            listen,
            tftp_listen,
            token_file: set(self.token_file),
            boot_files_require_token: self.boot_files_require_token,
            tls,
            settings,
        })
    }
}

/// A path as an error shows it.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("2M").unwrap(), 2 << 20);
        assert_eq!(parse_size("8g").unwrap(), 8 << 30);
        assert!(parse_size("0").is_err());
        assert!(parse_size("8X").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn flags_override_the_file_and_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bakery.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/bakery\"\nnfs_address = \"10.0.0.2\"\nlisten = \"127.0.0.1:9000\"\nmax_image_size = \"1G\"\nwarm_pool = 2\nmin_free_space = \"2G\"\ntftp_listen = \"off\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:9001".into()),
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(config.settings.data_dir, PathBuf::from("/srv/bakery"));
        assert_eq!(
            config.settings.db_path,
            PathBuf::from("/srv/bakery/bakery.db")
        );
        assert_eq!(config.settings.max_image_size, 1 << 30);
        assert_eq!(config.settings.warm_pool, Some(2));
        assert_eq!(
            config
                .settings
                .warm_pool_for(bakery_core::imaging::CloneStrategy::Snapshot),
            2
        );
        assert_eq!(config.settings.min_free_space, 2 << 30);
        assert_eq!(config.tftp_listen, None);
        assert_eq!(config.settings.exportfs_cmd, "exportfs -ra");

        std::fs::write(&file, "nfs_adress = \"typo\"\n").unwrap();
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn security_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bakery.toml");
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "ro:a-read-only-token-for-tests\n").unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
        std::fs::write(
            &file,
            format!(
                "nfs_address = \"10.0.0.2\"\ntoken_file = {tokens:?}\ntls_cert = {c:?}\ntls_key = {k:?}\nmax_pis = 10\nboot_files_require_token = true\n"
            ),
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.token_file, Some(tokens.clone()));
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                cert: c.clone(),
                key: k.clone()
            })
        );
        assert_eq!(config.settings.max_pis, 10);
        assert!(config.boot_files_require_token);
        // An empty key (what a template renders for "unset") means unset.
        std::fs::write(
            &file,
            "nfs_address = \"10.0.0.2\"\ntls_cert = \"\"\ntls_key = \"\"\ntoken_file = \"\"\n",
        )
        .unwrap();
        let config = args.resolve().unwrap();
        assert_eq!((config.tls, config.token_file), (None, None));
        assert_eq!(config.settings.max_pis, DEFAULT_MAX_PIS);
        std::fs::write(&file, "nfs_address = \"10.0.0.2\"\ntls_cert = \"/c.pem\"\n").unwrap();
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("needs --tls-key"), "{err}");
        // Unusable files are reported when the configuration is resolved.
        std::fs::write(
            &file,
            format!("nfs_address = \"10.0.0.2\"\ntls_cert = {k:?}\ntls_key = {k:?}\n"),
        )
        .unwrap();
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("cannot read certificate chain"), "{err}");
        std::fs::write(
            &file,
            format!("nfs_address = \"10.0.0.2\"\ntls_cert = {c:?}\ntls_key = {c:?}\n"),
        )
        .unwrap();
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("cannot read private key"), "{err}");
        std::fs::write(&tokens, "# none\n").unwrap();
        std::fs::write(
            &file,
            format!("nfs_address = \"10.0.0.2\"\ntoken_file = {tokens:?}\n"),
        )
        .unwrap();
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("holds no token"), "{err}");
        std::fs::write(&file, "nfs_address = \"10.0.0.2\"\nmax_pis = 0\n").unwrap();
        assert!(args.resolve().is_err());
    }

    #[test]
    fn nfs_backends() {
        let base = ServeArgs {
            nfs_address: Some("10.0.0.2".into()),
            ..ServeArgs::default()
        };
        let kernel = base.resolve().unwrap();
        assert_eq!(kernel.settings.nfs_backend, NfsBackend::Kernel);
        assert_eq!(kernel.settings.ganesha_pid_file, None);
        let ganesha = ServeArgs {
            nfs_backend: Some("ganesha".into()),
            ..base.clone()
        };
        let config = ganesha.resolve().unwrap();
        assert_eq!(config.settings.nfs_backend, NfsBackend::Ganesha);
        assert_eq!(
            config.settings.exports_file,
            PathBuf::from(DEFAULT_GANESHA_EXPORTS_FILE)
        );
        assert_eq!(
            config.settings.ganesha_pid_file,
            Some(PathBuf::from(DEFAULT_GANESHA_PID_FILE))
        );
        assert_eq!(config.settings.exportfs_cmd, "");
        assert_eq!(config.settings.ganesha_export_id_base, 1000);
        // An explicit command replaces the signal.
        let command = ServeArgs {
            exportfs_cmd: Some("/usr/local/bin/ganesha-reload".into()),
            ganesha_export_id_base: Some(5000),
            ..ganesha.clone()
        }
        .resolve()
        .unwrap();
        assert_eq!(command.settings.ganesha_pid_file, None);
        assert_eq!(
            command.settings.exportfs_cmd,
            "/usr/local/bin/ganesha-reload"
        );
        assert_eq!(command.settings.ganesha_export_id_base, 5000);
        for bad in [
            ServeArgs {
                nfs_backend: Some("knfsd".into()),
                ..base.clone()
            },
            ServeArgs {
                ganesha_pid_file: Some("/run/g.pid".into()),
                ..base.clone()
            },
            ServeArgs {
                ganesha_pid_file: Some("/run/g.pid".into()),
                exportfs_cmd: Some("true".into()),
                ..ganesha.clone()
            },
            ServeArgs {
                ganesha_export_id_base: Some(0),
                ..ganesha.clone()
            },
        ] {
            assert!(bad.resolve().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_warm_pool_defaults_to_one_root_except_on_btrfs_snapshots() {
        use bakery_core::imaging::CloneStrategy;
        let mut config = Config::new(PathBuf::from("/srv/bakery"), "10.0.0.2".into());
        assert_eq!(config.settings.warm_pool, None);
        assert_eq!(config.settings.warm_pool_for(CloneStrategy::Copy), 1);
        assert_eq!(config.settings.warm_pool_for(CloneStrategy::Reflink), 1);
        assert_eq!(config.settings.warm_pool_for(CloneStrategy::Snapshot), 0);
        config.settings.warm_pool = Some(0);
        assert_eq!(config.settings.warm_pool_for(CloneStrategy::Copy), 0);
    }

    #[test]
    fn min_free_space_from_flag_file_or_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bakery.toml");
        let base = ServeArgs {
            nfs_address: Some("10.0.0.2".into()),
            ..ServeArgs::default()
        };
        assert_eq!(
            base.resolve().unwrap().settings.min_free_space,
            DEFAULT_MIN_FREE_SPACE
        );
        let flag = |v: &str| ServeArgs {
            min_free_space: Some(v.into()),
            ..base.clone()
        };
        assert_eq!(flag("0").resolve().unwrap().settings.min_free_space, 0);
        assert_eq!(
            flag("512M").resolve().unwrap().settings.min_free_space,
            512 << 20
        );
        assert_eq!(
            flag("100000T").resolve().unwrap().settings.min_free_space,
            100_000 << 40
        );
        let err = flag("5%").resolve().unwrap_err().to_string();
        assert!(err.contains("min-free-space"), "{err}");
        assert!(flag("99999999T").resolve().is_err());
        let from_file = ServeArgs {
            config: Some(file.clone()),
            ..base.clone()
        };
        std::fs::write(&file, "min_free_space = 4096\n").unwrap();
        assert_eq!(from_file.resolve().unwrap().settings.min_free_space, 4096);
        std::fs::write(&file, "min_free_space = \"3G\"\n").unwrap();
        assert_eq!(
            from_file.resolve().unwrap().settings.min_free_space,
            3 << 30
        );
        std::fs::write(&file, "min_free_space = -1\n").unwrap();
        let err = from_file.resolve().unwrap_err().to_string();
        assert!(err.contains("min_free_space"), "{err}");
        std::fs::write(&file, "min_free_space = true\n").unwrap();
        assert!(from_file.resolve().is_err());
        // The flag wins over the file.
        let both = ServeArgs {
            min_free_space: Some("1M".into()),
            ..from_file
        };
        assert_eq!(both.resolve().unwrap().settings.min_free_space, 1 << 20);
    }

    #[test]
    fn upload_knobs_from_flag_file_or_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bakery.toml");
        let base = ServeArgs {
            nfs_address: Some("10.0.0.2".into()),
            ..ServeArgs::default()
        };
        let config = base.resolve().unwrap();
        assert_eq!(config.settings.upload_idle_timeout, Duration::from_secs(60));
        assert_eq!(config.settings.max_concurrent_uploads, 4);
        let flags = ServeArgs {
            upload_idle_timeout: Some(2.5),
            max_concurrent_uploads: Some(1),
            ..base.clone()
        };
        let config = flags.resolve().unwrap();
        assert_eq!(
            config.settings.upload_idle_timeout,
            Duration::from_millis(2500)
        );
        assert_eq!(config.settings.max_concurrent_uploads, 1);
        std::fs::write(
            &file,
            "upload_idle_timeout = 7.0\nmax_concurrent_uploads = 9\n",
        )
        .unwrap();
        let from_file = ServeArgs {
            config: Some(file.clone()),
            ..base.clone()
        };
        let config = from_file.resolve().unwrap();
        assert_eq!(config.settings.upload_idle_timeout, Duration::from_secs(7));
        assert_eq!(config.settings.max_concurrent_uploads, 9);
        for bad in [
            ServeArgs {
                upload_idle_timeout: Some(0.0),
                ..base.clone()
            },
            ServeArgs {
                max_concurrent_uploads: Some(0),
                ..base.clone()
            },
        ] {
            let err = bad.resolve().unwrap_err().to_string();
            assert!(err.contains("upload"), "{err}");
        }
    }

    #[test]
    fn every_setting_is_in_the_readme_table_with_its_env_and_default() {
        let readme = include_str!("../../README.md");
        let (_, section) = readme.split_once("### Configuration reference").unwrap();
        let rows: Vec<Vec<&str>> = section
            .lines()
            .take_while(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with("| `--"))
            .map(|l| l.split('|').map(str::trim).collect())
            .collect();
        let command = ServeArgs::augment_args(clap::Command::new("bakery-server"));
        let settings: Vec<&Arg> = command.get_arguments().collect();
        assert_eq!(
            settings.len(),
            34,
            "a setting more or less: update this count"
        );
        for arg in settings {
            let flag = format!("`--{}`", arg.get_long().unwrap());
            let row = rows
                .iter()
                .find(|cells| cells[1].split(", ").any(|f| f == flag))
                .unwrap_or_else(|| panic!("README's configuration table lacks {flag}"));
            let env = arg.get_env().unwrap().to_str().unwrap();
            assert!(
                row[2].contains(&format!("`{env}`")),
                "{flag}: {env} not in {row:?}"
            );
            assert!(arg.get_help().is_some(), "{flag} has no doc");
            if let Some((_, value)) = ServeArgs::DEFAULTS
                .iter()
                .find(|(key, _)| arg.get_id().as_str() == *key)
            {
                let value = value.trim_matches('"');
                assert!(
                    row[3].contains(value),
                    "{flag}: default {value} not in {row:?}"
                );
            }
        }
    }

    #[test]
    fn the_declared_defaults_are_those_of_config_new() {
        let args = ServeArgs {
            data_dir: Some("/srv/bakery".into()),
            nfs_address: Some("10.0.0.2".into()),
            ..ServeArgs::default()
        };
        let defaults = Config::new("/srv/bakery".into(), "10.0.0.2".into());
        assert_eq!(args.resolve().unwrap(), defaults);
    }

    #[test]
    fn the_bosh_release_writes_known_keys() {
        let template = include_str!("../../bosh-release/jobs/bakery/templates/bakery.toml.erb");
        let keys: Vec<&str> = template
            .split("['")
            .skip(1)
            .filter_map(|rest| rest.split_once('\'').map(|(key, _)| key))
            .collect();
        assert!(keys.len() > 30, "{keys:?}");
        for key in keys {
            if let Err(e) = toml::from_str::<ServeArgs>(&format!("{key} = []")) {
                assert!(!e.to_string().contains("unknown field"), "{key}: {e}");
            }
        }
    }

    #[test]
    fn switches_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bakery.toml");
        std::fs::write(
            &file,
            "nfs_address = \"10.0.0.2\"\nexport_to_any = true\npin_pi_addresses = true\nppi_timeout = 5\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            boot_files_require_token: true,
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert!(config.settings.export_to_any && config.settings.pin_pi_addresses);
        assert!(config.boot_files_require_token);
        assert_eq!(config.settings.ppi_timeout, Duration::from_secs(5));
    }

    #[test]
    fn nfs_address_is_required() {
        let err = ServeArgs::default().resolve().unwrap_err();
        assert!(matches!(err, ConfigError::Missing(_)), "{err}");
    }
}
