//! The `bakery` operator command line: argument grammar, the commands on the blocking client,
//! table/JSON output, and the one mapping of errors to exit codes.
//!
//! Exit codes (a script can rely on them): 0 ok (also when the reader of stdout went away),
//! 1 any other failure, 2 usage (bad arguments — a serial, bakeform name or id breaking the
//! API's rules among them, refused before any request —, a URL not ending in /api/v1, a
//! request the server refuses as bad), 3 not found, 4 the server cannot be reached (or did not answer in time),
//! 5 refused (401/403: bad token, or the operation is not allowed in the current state),
//! 6 conflict (409).

pub mod args;
pub mod events;
mod progress;
pub mod table;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use serde::Serialize;

use crate::blocking::Client;
use crate::types::{BakeRequest, CreateDiskRequest, Labels, PiMap};
use crate::{ClientBuilder, Error};
use args::{BakeformCommand, Cli, Command, DiskCommand, Output, PiCommand, SnapshotCommand};

/// Exit code: any other failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad usage (clap's own code for argument errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the Pi, disk or bakeform does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: the server cannot be reached or did not answer in time.
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code: the server refused (401 bad token, 403 not allowed).
pub const EXIT_REFUSED: u8 = 5;
/// Exit code: the server reported a conflict (409).
pub const EXIT_CONFLICT: u8 = 6;

/// Why a `bakery` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A call to the server failed; `subject` names what it was about (`pi 1a2b3c4d`).
    #[error("{subject}: {source}")]
    Api {
        /// What the call was about.
        subject: String,
        /// The client's error.
        #[source]
        source: Box<Error>,
    },
    /// `pi bake --wait` reached its deadline with the Pi still preparing.
    #[error("pi {pi} was not baked within {seconds} s (it may still be preparing)")]
    NotBakedInTime {
        /// The Pi being baked.
        pi: String,
        /// The wait in seconds.
        seconds: u64,
    },
    /// The thing the command is about does not exist (checked by the CLI, where the API's
    /// answer would not say so, e.g. deleting an unknown disk succeeds).
    #[error("{subject} not found")]
    NotFound {
        /// What was looked for (`disk <id>`).
        subject: String,
    },
    /// `--url` does not name the API.
    #[error("bakery url {url:?} must end in /api/v1 (e.g. http://127.0.0.1:8080/api/v1)")]
    UrlNotApi {
        /// The URL given.
        url: String,
    },
    /// Writing the result to stdout failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// An input file named on the command line cannot be read.
    #[error("cannot read {path}: {reason}")]
    Input {
        /// The path given (`-` for stdin).
        path: String,
        /// Why.
        reason: String,
    },
}

/// Runs `bakery` with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`bakery pi list | head -1`): nothing more to say to anyone.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            let (code, message) = exit_status(&error);
            eprintln!("bakery: {message}");
            ExitCode::from(code)
        }
    }
}

/// The one place that turns a failure into an exit code and the message naming its cause.
pub fn exit_status(error: &CliError) -> (u8, String) {
    let (subject, source) = match error {
        CliError::Api { subject, source } => (subject, source.as_ref()),
        CliError::Output(_) | CliError::NotBakedInTime { .. } => {
            return (EXIT_FAILURE, error.to_string());
        }
        CliError::NotFound { .. } => return (EXIT_NOT_FOUND, error.to_string()),
        CliError::UrlNotApi { .. } | CliError::Input { .. } => {
            return (EXIT_USAGE, error.to_string());
        }
    };
    match source {
        Error::Status {
            status, message, ..
        } => {
            let said = |fallback: String| {
                let generic = message.is_empty()
                    || reqwest::StatusCode::from_u16(*status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .is_some_and(|reason| reason.eq_ignore_ascii_case(message));
                if generic { fallback } else { message.clone() }
            };
            match status {
                400 => (EXIT_USAGE, said(format!("{subject}: bad request"))),
                404 => (EXIT_NOT_FOUND, said(format!("{subject} not found"))),
                401 => (
                    EXIT_REFUSED,
                    format!(
                        "token refused by the server ({}); set --token or BAKERY_TOKEN",
                        said("unauthorized".into())
                    ),
                ),
                403 => (
                    EXIT_REFUSED,
                    format!("refused: {}", said(format!("{subject}: forbidden"))),
                ),
                409 => (
                    EXIT_CONFLICT,
                    format!("conflict: {}", said(format!("{subject} is in use"))),
                ),
                _ => (
                    EXIT_FAILURE,
                    format!("{subject}: server answered {status}: {message}"),
                ),
            }
        }
        Error::Connect { url, source } => (
            EXIT_UNREACHABLE,
            format!(
                "cannot reach the bakery server at {}: {}",
                origin(url),
                root_cause(source)
            ),
        ),
        Error::Timeout { url } => (
            EXIT_UNREACHABLE,
            format!(
                "{subject}: the bakery server at {} did not answer in time",
                origin(url)
            ),
        ),
        Error::InvalidUrl { .. } | Error::InvalidName { .. } | Error::InvalidCaCert { .. } => {
            (EXIT_USAGE, source.to_string())
        }
        _ => (EXIT_FAILURE, format!("{subject}: {source}")),
    }
}

/// `scheme://host:port` of a URL, for messages.
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => parsed.origin().ascii_serialization(),
        Err(_) => url.to_owned(),
    }
}

/// The innermost error of a chain (e.g. "Connection refused (os error 111)").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions { shell } = cli.command {
        let mut command = Cli::command();
        let mut stdout = std::io::stdout().lock();
        clap_complete::generate(shell, &mut command, "bakery", &mut stdout);
        stdout.flush()?;
        return Ok(());
    }
    if !cli.url.trim_end_matches('/').ends_with("/api/v1") {
        return Err(CliError::UrlNotApi { url: cli.url });
    }
    let mut builder = ClientBuilder::new(cli.url.clone());
    if let Some(token) = cli.token.as_ref().filter(|t| !t.is_empty()) {
        builder = builder.token(token.clone());
    }
    if let Some(path) = &cli.ca_cert {
        let pem = std::fs::read(path).map_err(|e| Error::InvalidCaCert {
            reason: format!("cannot read {}: {e}", path.display()),
        });
        builder = builder.ca_cert(api("ca certificate", pem)?);
    }
    let client = api("bakery url", Client::from_builder(builder))?;
    let out = Printer { format: cli.output };
    match cli.command {
        Command::Pi(command) => pi(&client, &out, command),
        Command::Bakeform(command) => bakeform(&client, &out, command),
        Command::Disk(command) => disk(&client, &out, command),
        Command::Snapshot(command) => snapshot(&client, &out, command),
        Command::Events(args) => events::run(&client, cli.output, &args),
        Command::Completions { .. } => Ok(()),
    }
}

fn api<T>(subject: impl Into<String>, result: Result<T, Error>) -> Result<T, CliError> {
    result.map_err(|source| CliError::Api {
        subject: subject.into(),
        source: Box::new(source),
    })
}

fn pi(client: &Client, out: &Printer, command: PiCommand) -> Result<(), CliError> {
    match command {
        PiCommand::List => {
            let pis = api("pis", all_pis(client))?;
            out.print(&pis, || table::pis(&pis))
        }
        PiCommand::Show { id } => {
            let info = api(format!("pi {id}"), client.any_pi(&id))?;
            out.print(&info, || table::pi_detail(&info))
        }
        PiCommand::Bake(bake) => {
            let subject = format!("bake from bakeform {}", bake.bakeform);
            let request = BakeRequest {
                bakeform_name: bake.bakeform.clone(),
                network: None,
                power_on: None,
                root_kind: bake.root_kind.as_deref().and_then(|kind| kind.parse().ok()),
                model: bake.model.as_deref().and_then(|m| m.parse().ok()),
                labels: bake.labels.iter().cloned().collect(),
            };
            let mut info = api(&subject, client.bake(&request))?;
            if bake.wait {
                let timeout = Duration::from_secs(bake.wait_timeout);
                info = match client.wait_baked(&info.id, timeout) {
                    Err(Error::Timeout { .. }) => {
                        return Err(CliError::NotBakedInTime {
                            pi: info.id,
                            seconds: bake.wait_timeout,
                        });
                    }
                    result => api(format!("pi {}", info.id), result)?,
                };
            }
            out.print(&info, || table::pi_line(&info))
        }
        PiCommand::Unbake { id } => {
            api(format!("pi {id}"), client.unbake(&id))?;
            out.done(&format!("unbaking pi {id}"))
        }
        PiCommand::Label { id, labels } => {
            let labels: Labels = labels.into_iter().collect();
            let info = api(
                format!("labels of pi {id}"),
                client.set_pi_labels(&id, &labels),
            )?;
            out.print(&info, || table::pi_detail(&info))
        }
        PiCommand::PowerCycle { id } => {
            api(format!("pi {id}"), client.power_cycle(&id))?;
            out.done(&format!("power-cycled pi {id}"))
        }
        PiCommand::PowerStatus { id } => {
            let info = api(format!("pi {id}"), client.refresh_power_state(&id))?;
            out.print(&info, || table::power_line(&info))
        }
        PiCommand::CloudInit {
            id,
            file,
            set,
            delete,
        } => {
            let what = format!("cloud-init {file} of pi {id}");
            if delete {
                api(what, client.delete_cloud_init(&id, file.as_str()))?;
                return out.done(&format!("removed cloud-init {file} of pi {id}"));
            }
            let Some(path) = set else {
                let data = api(what, client.cloud_init(&id, file.as_str()))?;
                let mut stdout = std::io::stdout().lock();
                std::io::Write::write_all(&mut stdout, &data)?;
                return Ok(std::io::Write::flush(&mut stdout)?);
            };
            let unreadable = |e: std::io::Error| CliError::Input {
                path: path.display().to_string(),
                reason: e.to_string(),
            };
            let data = if path.as_os_str() == "-" {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut data).map_err(unreadable)?;
                data
            } else {
                std::fs::read(&path).map_err(unreadable)?
            };
            api(what, client.set_cloud_init(&id, file.as_str(), data))?;
            out.done(&format!("set cloud-init {file} of pi {id}"))
        }
        PiCommand::Boots { id, all } => {
            let mut list = api(format!("pi {id}"), client.boots(&id))?;
            if !all {
                list.boots.truncate(1);
            }
            out.print(&list, || events::boots_table(&list))
        }
    }
}

/// Every known Pi: `GET /pis`, or the fridge and the oven together on a server without it
/// (the first, Go, server).
fn all_pis(client: &Client) -> Result<PiMap, Error> {
    match client.pis() {
        Err(e) if e.is_not_found() => {
            let mut pis = client.fridge()?;
            pis.extend(client.oven()?);
            Ok(pis)
        }
        other => other,
    }
}

fn bakeform(client: &Client, out: &Printer, command: BakeformCommand) -> Result<(), CliError> {
    match command {
        BakeformCommand::List => {
            let forms = api("bakeforms", client.bakeforms())?;
            out.print(&forms, || table::bakeforms(&forms))
        }
        BakeformCommand::Upload { name, file } => {
            let form = upload(client, &name, &file)?;
            out.print(&form, || table::bakeform_line(&form))
        }
        BakeformCommand::Delete { name } => {
            api(format!("bakeform {name}"), client.delete_bakeform(&name))?;
            out.done(&format!("deleted bakeform {name}"))
        }
    }
}

fn upload(client: &Client, name: &str, file: &Path) -> Result<crate::types::Bakeform, CliError> {
    let bar = progress::UploadBar::for_stderr(name);
    let result = client.upload_bakeform(name, file, bar.as_ref().map(|b| b.callback()));
    if let Some(bar) = bar {
        bar.finish(result.is_ok());
    }
    api(format!("bakeform {name}"), result)
}

fn disk(client: &Client, out: &Printer, command: DiskCommand) -> Result<(), CliError> {
    match command {
        DiskCommand::List => {
            let disks = api("disks", client.disks())?;
            out.print(&disks, || table::disks(&disks))
        }
        DiskCommand::Create { size, ephemeral } => {
            let request = CreateDiskRequest { size, ephemeral };
            let created = api(format!("disk of {size} MiB"), client.create_disk(&request))?;
            out.print(&created, || table::disk_line(&created))
        }
        DiskCommand::Attach { pi, disk } => {
            api(
                format!("pi {pi} or disk {disk}"),
                client.attach_disk(&pi, &disk),
            )?;
            out.done(&format!("attached disk {disk} to pi {pi}"))
        }
        DiskCommand::Detach { pi, disk } => {
            api(
                format!("pi {pi} or disk {disk}"),
                client.detach_disk(&pi, &disk),
            )?;
            out.done(&format!("detached disk {disk} from pi {pi}"))
        }
        DiskCommand::Delete { disk } => {
            // The API answers 200 for an unknown disk (idempotent, as the first server).
            if !api(format!("disk {disk}"), client.disk_exists(&disk))? {
                return Err(CliError::NotFound {
                    subject: format!("disk {disk}"),
                });
            }
            api(format!("disk {disk}"), client.delete_disk(&disk))?;
            out.done(&format!("deleted disk {disk}"))
        }
        DiskCommand::Snapshot { disk, meta } => {
            let metadata = meta
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            let taken = api(
                format!("disk {disk}"),
                client.snapshot_disk(&disk, &metadata),
            )?;
            out.print(&taken, || table::snapshot_line(&taken))
        }
        DiskCommand::Snapshots { disk } => {
            let list = api(format!("disk {disk}"), client.disk_snapshots(&disk))?;
            out.print(&list, || table::snapshots(&list))
        }
        DiskCommand::Restore { disk, snapshot } => {
            let restored = api(
                format!("disk {disk} or snapshot {snapshot}"),
                client.restore_disk(&disk, &snapshot),
            )?;
            out.print(&restored, || table::disk_line(&restored))
        }
    }
}

fn snapshot(client: &Client, out: &Printer, command: SnapshotCommand) -> Result<(), CliError> {
    match command {
        SnapshotCommand::Show { snapshot } => {
            let found = api(format!("snapshot {snapshot}"), client.snapshot(&snapshot))?;
            out.print(&found, || table::snapshot_line(&found))
        }
        SnapshotCommand::Delete { snapshot } => {
            api(
                format!("snapshot {snapshot}"),
                client.delete_snapshot(&snapshot),
            )?;
            out.done(&format!("deleted snapshot {snapshot}"))
        }
    }
}

/// Prints results in the chosen format.
struct Printer {
    format: Output,
}

impl Printer {
    /// A result: the wire JSON, or the table view.
    fn print<T: Serialize>(
        &self,
        value: &T,
        table: impl FnOnce() -> String,
    ) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        match self.format {
            Output::Json => {
                serde_json::to_writer_pretty(&mut stdout, value).map_err(std::io::Error::from)?;
                writeln!(stdout)?;
            }
            Output::Table => stdout.write_all(table().as_bytes())?,
        }
        stdout.flush()?;
        Ok(())
    }

    /// An operation without a reply body: a confirmation line for people, nothing for JSON.
    fn done(&self, message: &str) -> Result<(), CliError> {
        if self.format == Output::Table {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{message}")?;
            stdout.flush()?;
        }
        Ok(())
    }
}
