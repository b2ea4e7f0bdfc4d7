//! The command line grammar of `bakery` (clap derive). Serials, bakeform names, disk and
//! snapshot ids are checked here by the API's own rules (`crate::names`), so a bad one is a
//! usage error (exit 2) naming the rule, before any request.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::names;
use crate::types::{CloudInitFile, PiModel, RootKind};

/// The default base URL: a bakery server on this machine.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/api/v1";

/// The heading of the options every subcommand accepts.
const GLOBAL: &str = "Global options (any position)";

/// The exit codes, shown under `bakery --help`.
const EXIT_CODES: &str = "Exit codes: 0 ok, 1 other failure, 2 usage, 3 not found, \
4 server unreachable, 5 refused (401/403), 6 conflict (409).";

/// Operate a bakery: bake and unbake Pis, upload bakeforms, manage disks, follow events.
///
/// Talks to a bakery server's HTTP API (--url, ending in /api/v1). The options below are
/// accepted before or after any subcommand.
#[derive(Debug, Parser)]
#[command(name = "bakery", version, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    /// Base URL of the bakery API, ending in /api/v1.
    #[arg(long, env = "BAKERY_URL", default_value = DEFAULT_URL, global = true, help_heading = GLOBAL)]
    pub url: String,

    /// Bearer token sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "BAKERY_TOKEN", hide_env_values = true, global = true, help_heading = GLOBAL)]
    pub token: Option<String>,

    /// PEM file of a CA to trust for an https URL (e.g. bakery's self-signed certificate).
    #[arg(long, env = "BAKERY_CA_CERT", global = true, help_heading = GLOBAL)]
    pub ca_cert: Option<std::path::PathBuf>,

    /// Output format: aligned plain text, or the API's JSON.
    #[arg(long, short, value_enum, env = "BAKERY_OUTPUT", default_value_t = Output::Table, global = true, help_heading = GLOBAL)]
    pub output: Output,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned plain text for people.
    Table,
    /// The wire JSON for scripts.
    Json,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pis: list, show, bake, unbake, power-cycle, boots.
    #[command(subcommand)]
    Pi(PiCommand),
    /// Bakeforms (SD-card images): list, upload, delete.
    #[command(subcommand)]
    Bakeform(BakeformCommand),
    /// Disks: list, create, attach, detach, delete, snapshot, restore.
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Disk snapshots: show, delete.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// The server's event log (state changes); --follow keeps printing new events.
    Events(EventsArgs),
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// `bakery pi ...`
#[derive(Debug, Subcommand)]
pub enum PiCommand {
    /// List every known Pi (fridge and oven).
    List,
    /// Show one Pi: its state, bakeform, address, last boot and disks.
    Show {
        /// The Pi's serial number, e.g. 1a2b3c4d.
        #[arg(value_parser = names::serial)]
        id: String,
    },
    /// Bake a free Pi from a bakeform.
    Bake(BakeArgs),
    /// Unbake a Pi: power it off, destroy its root and ephemeral disks, back to the fridge.
    Unbake {
        /// The Pi's serial number.
        #[arg(value_parser = names::serial)]
        id: String,
    },
    /// Power a baked Pi off and on again.
    PowerCycle {
        /// The Pi's serial number.
        #[arg(value_parser = names::serial)]
        id: String,
    },
    /// Ask the Pi's power interface now whether the Pi is on or off (unknown when it cannot
    /// tell).
    PowerStatus {
        /// The Pi's serial number.
        #[arg(value_parser = names::serial)]
        id: String,
    },
    /// Show, set or remove a cloud-init NoCloud file of a Pi in the oven (served to the Pi at
    /// `<server>/cloud-init/<file>`; deleted when the Pi is unbaked).
    CloudInit {
        /// The Pi's serial number.
        #[arg(value_parser = names::serial)]
        id: String,
        /// meta-data, user-data, vendor-data or network-config.
        file: CloudInitFile,
        /// Set the file from this path ("-" reads stdin); without it the file is printed.
        #[arg(long, value_name = "PATH", conflicts_with = "delete")]
        set: Option<PathBuf>,
        /// Remove the file: the default is served again.
        #[arg(long)]
        delete: bool,
    },
    /// Replace a Pi's labels (matched by `pi bake --label`); no pairs removes them all.
    Label {
        /// The Pi's serial number.
        #[arg(value_parser = names::serial)]
        id: String,
        /// The labels, as key=value (keys: A-Z a-z 0-9 . _ / -; values: A-Z a-z 0-9 . _ : -).
        #[arg(value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Show a Pi's boot timeline: every file of its latest boot and how it ended.
    Boots {
        /// The Pi's serial number.
        #[arg(value_parser = names::serial)]
        id: String,
        /// Every kept boot (up to 10), not only the latest.
        #[arg(long)]
        all: bool,
    },
}

/// `bakery pi bake ...`
#[derive(Debug, Args)]
pub struct BakeArgs {
    /// The bakeform to bake from.
    #[arg(value_parser = names::bakeform_name)]
    pub bakeform: String,
    /// How the Pi's root reaches it: nfs (a tree over NFS) or nbd (an ext4 image over NBD,
    /// needs a server started with --nbd-config) [default: the server's, nfs].
    #[arg(long, value_parser = RootKind::ALL.map(RootKind::as_str))]
    pub root_kind: Option<String>,
    /// Bake only a Pi of this model (pi3, pi4 or pi5), as the boot path recorded it.
    #[arg(long, value_parser = PiModel::ALL.map(PiModel::as_str))]
    pub model: Option<String>,
    /// Bake only a Pi carrying this label (KEY=VALUE); repeat for several, all must match.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Wait until the Pi is baked (or its bake failed).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 600, requires = "wait")]
    pub wait_timeout: u64,
}

/// `bakery bakeform ...`
#[derive(Debug, Subcommand)]
pub enum BakeformCommand {
    /// List the bakeforms.
    List,
    /// Upload an SD-card image file as a new bakeform.
    Upload {
        /// The bakeform's name.
        #[arg(value_parser = names::bakeform_name)]
        name: String,
        /// The SD-card image (MBR or GPT, FAT boot partition, ext4 root): raw (.img) or
        /// compressed as gzip (.img.gz), xz (.img.xz) or zip (.zip, one image inside),
        /// recognised by its first bytes.
        file: PathBuf,
    },
    /// Delete a bakeform.
    Delete {
        /// The bakeform's name.
        #[arg(value_parser = names::bakeform_name)]
        name: String,
    },
}

/// `bakery disk ...`
#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// List every disk.
    List,
    /// Create a disk.
    Create {
        /// The size in MiB.
        #[arg(long)]
        size: i64,
        /// Destroy the disk when the Pi it is attached to is unbaked.
        #[arg(long)]
        ephemeral: bool,
    },
    /// Attach a disk to a baked Pi.
    Attach {
        /// The Pi's serial number.
        #[arg(value_parser = names::serial)]
        pi: String,
        /// The disk's id.
        #[arg(value_parser = names::disk_id)]
        disk: String,
    },
    /// Detach a disk from a Pi.
    Detach {
        /// The Pi's serial number.
        #[arg(value_parser = names::serial)]
        pi: String,
        /// The disk's id.
        #[arg(value_parser = names::disk_id)]
        disk: String,
    },
    /// Delete a disk (an unknown disk: "not found", exit 3); its snapshots go with it.
    Delete {
        /// The disk's id.
        #[arg(value_parser = names::disk_id)]
        disk: String,
    },
    /// Take a snapshot of a data disk (of an attached one: crash-consistent).
    Snapshot {
        /// The disk's id.
        #[arg(value_parser = names::disk_id)]
        disk: String,
        /// Metadata to keep with the snapshot, `KEY=VALUE` (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
        meta: Vec<(String, String)>,
    },
    /// List a disk's snapshots, oldest first.
    Snapshots {
        /// The disk's id.
        #[arg(value_parser = names::disk_id)]
        disk: String,
    },
    /// Replace a detached disk's image with a copy of one of its snapshots.
    Restore {
        /// The disk's id.
        #[arg(value_parser = names::disk_id)]
        disk: String,
        /// The snapshot's id.
        #[arg(value_parser = names::snapshot_id)]
        snapshot: String,
    },
}

/// `bakery snapshot ...`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Show one snapshot.
    Show {
        /// The snapshot's id.
        #[arg(value_parser = names::snapshot_id)]
        snapshot: String,
    },
    /// Delete a snapshot (an unknown one: "not found", exit 3).
    Delete {
        /// The snapshot's id.
        #[arg(value_parser = names::snapshot_id)]
        snapshot: String,
    },
}

/// Parses `KEY=VALUE`.
fn key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {arg:?}")),
    }
}

/// `bakery events ...`
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print the events after this id (default: the last --last events).
    #[arg(long)]
    pub since: Option<i64>,
    /// Without --since, how many of the latest events to print first.
    #[arg(long, default_value_t = 20)]
    pub last: u32,
    /// Keep following: print each new event as it happens, until interrupted.
    #[arg(long, short)]
    pub follow: bool,
}

/// A `KEY=VALUE` label argument (the server checks the characters).
fn parse_label(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {arg:?}")),
    }
}
