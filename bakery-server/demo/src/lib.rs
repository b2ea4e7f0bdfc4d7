//! `bakery-demo`: the whole product in one command, with no Pi, no root and nothing
//! written outside one data directory.
//!
//! It builds a small sample bakeform image, starts a bakery on loopback (SQLite and exports in
//! the data dir, no exportfs, the built-in TFTP server, simulated Pis as the PPI: see [`sim`]),
//! uploads the image through the HTTP API with the real client, lets N simulated Pis appear on
//! the boot path (each asks for its first boot file, is registered in the fridge and powered
//! off), bakes them through the API (waiting with the long-poll), and lets each boot over TFTP
//! when bakery powers it on, every file checked against the bakeform. Then it prints a table
//! (or JSON) and keeps serving until Ctrl-C, or exits with `--exit-after-boot`.
//!
//! The data dir (`--data-dir`, default `./demo-data`) must be new, empty, or a previous demo's
//! (it holds [`MARKER`]): a previous demo's is wiped and reused; anything else is refused.

pub mod show;
pub mod sim;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bakery_client::{Client, PiInfo};
use clap::Args;
use pi_sim::Model;
use thiserror::Error;

use bakery_server::app::{App, AppError};
use bakery_server::config::{Config, ServeArgs};
use show::{DemoOutput, PiRow, Show, Summary};
use sim::{BootRecord, SimPower};

/// The file marking a data dir as a demo's (so a later demo may wipe it).
pub const MARKER: &str = ".bakery-demo";
/// The data dir when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "demo-data";
/// The name of the sample bakeform.
pub const BAKEFORM: &str = "sample";
/// Serial of the first simulated Pi; the others follow.
pub const SERIAL_BASE: u32 = 0xdec0_0001;
/// Longest wait for the bakes, and for the boots.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The flags of `demo` (it also reads the global `--data-dir`, `--listen` and `--tftp-listen`,
/// with loopback defaults; other serve flags are ignored).
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many simulated Pis to bake and boot.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub pis: u16,
    /// Exit (0 when every Pi baked and booted) instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit_after_boot: bool,
    /// The simulated Pi model: pi3 (bootcode.bin from the TFTP root first), pi4 (start4.elf first) or pi5 (config.txt first, kernel_2712.img).
    #[arg(long, default_value = "pi4")]
    pub model: Model,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = DemoOutput::Table)]
    pub output: DemoOutput,
}

impl DemoError {
    /// The exit code of the failure (the one place they are chosen): the server's for its own
    /// failures, 2 a bad flag or data dir, 4 a data dir that cannot be prepared, 1 the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            DemoError::App(e) => e.exit_code(),
            DemoError::NotADemoDir { .. } | DemoError::Flag { .. } => 2,
            DemoError::DataDir { .. } => 4,
            DemoError::Sample(_)
            | DemoError::Api { .. }
            | DemoError::Appear { .. }
            | DemoError::PisFailed { .. }
            | DemoError::Output(_) => 1,
        }
    }
}

/// Why the demo could not run or did not succeed.
#[derive(Debug, Error)]
pub enum DemoError {
    /// The data dir holds something that is not a previous demo's.
    #[error(
        "data dir {path} is not empty and was not made by a demo (it has no {MARKER} file): give another --data-dir, or remove it yourself"
    )]
    NotADemoDir {
        /// The directory.
        path: PathBuf,
    },
    /// The data dir could not be made, wiped or marked.
    #[error("cannot prepare demo data dir {path}: {source}")]
    DataDir {
        /// The path concerned.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A flag value the demo cannot use.
    #[error("invalid {flag} {value:?} for the demo: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The sample image could not be built.
    #[error(
        "cannot build the sample bakeform image (needs mkfs.ext4 and debugfs from e2fsprogs): {0}"
    )]
    Sample(String),
    /// The server could not start or failed.
    #[error(transparent)]
    App(Box<AppError>),
    /// A call through the API failed.
    #[error("{what}: {source}")]
    Api {
        /// What the demo was doing.
        what: String,
        /// The client's error.
        source: Box<bakery_client::Error>,
    },
    /// A simulated Pi did not show up in the fridge after asking for its first boot file.
    #[error("simulated pi {serial} did not appear in the fridge: {reason}")]
    Appear {
        /// The Pi.
        serial: String,
        /// What happened instead.
        reason: String,
    },
    /// Some Pis were not baked or did not boot.
    #[error("{failed} of {total} simulated pis failed to bake or boot: {first}")]
    PisFailed {
        /// How many failed.
        failed: usize,
        /// How many there were.
        total: usize,
        /// The first failure.
        first: String,
    },
    /// The summary could not be written.
    #[error("cannot write the summary: {0}")]
    Output(std::io::Error),
}

fn api(what: impl Into<String>) -> impl FnOnce(bakery_client::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Api {
        what,
        source: Box::new(source),
    }
}

impl From<AppError> for DemoError {
    fn from(e: AppError) -> DemoError {
        DemoError::App(Box::new(e))
    }
}

/// Runs the demo; `shutdown` ends serving (Ctrl-C) when not `--exit-after-boot`.
pub async fn run(
    args: DemoArgs,
    serve: &ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DemoError> {
    let listen = demo_addr("--listen", serve.listen.as_deref())?;
    let tftp_listen = demo_addr("--tftp-listen", serve.tftp_listen.as_deref())?;
    let requested = serve
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let show = Show::new(args.output);
    let wipe = requested
        .join(MARKER)
        .is_file()
        .then(|| show.step("removing the previous demo's data"));
    let shown = requested.clone();
    let data_dir = tokio::task::spawn_blocking(move || prepare_data_dir(&requested))
        .await
        .map_err(|e| DemoError::DataDir {
            path: shown,
            source: std::io::Error::other(e.to_string()),
        })??;
    if let Some(step) = wipe {
        step.done("previous demo's data removed");
    }
    show.line(&format!(
        "bakery demo: {} simulated {} Pis, data in {}",
        args.pis,
        args.model.name(),
        data_dir.display()
    ));

    let image = build_image(&show, &data_dir).await?;

    let step = show.step("starting bakery");
    let tftp_socket = App::bind_tftp(tftp_listen).await?;
    let tftp = tftp_socket.local_addr().map_err(|source| AppError::Bind {
        addr: tftp_listen.to_string(),
        source,
    })?;
    let power = SimPower::new(tftp, args.model);
    let app = App::with_power(
        demo_config(&data_dir, listen),
        std::sync::Arc::new(power.clone()),
    )
    .await?;
    power.attach(app.bakery());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let http = listener.local_addr().map_err(|source| AppError::Bind {
        addr: listen.to_string(),
        source,
    })?;
    let url = format!("http://{http}/api/v1");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_all(listener, Some(tftp_socket), async {
        let _ = stopped.await;
    }));
    step.done(&format!(
        "bakery serving the API at {url} and TFTP at {tftp}"
    ));
    let client = Client::new(&url).map_err(api("cannot make an API client"))?;

    let result = demo_steps(&show, &args, &client, &power, tftp, &image).await;
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            let _ = stop.send(());
            let _ = server.await;
            return Err(e);
        }
    };
    let summary = Summary {
        api_url: url.clone(),
        tftp: tftp.to_string(),
        data_dir: data_dir.display().to_string(),
        model: args.model.name().to_owned(),
        ok: rows.iter().all(|r| r.baked && r.booted),
        pis: rows,
    };
    print_summary(args.output, &summary)?;
    let failed: Vec<&PiRow> = summary
        .pis
        .iter()
        .filter(|r| !(r.baked && r.booted))
        .collect();
    let outcome = match failed.first() {
        Some(first) => Err(DemoError::PisFailed {
            failed: failed.len(),
            total: summary.pis.len(),
            first: format!(
                "pi {}: {}",
                first.serial,
                first.error.as_deref().unwrap_or("unknown")
            ),
        }),
        None => Ok(()),
    };
    if args.exit_after_boot || outcome.is_err() {
        let _ = stop.send(());
        let _ = server.await;
        return outcome;
    }
    show.line(&poke_hints(&url, &summary));
    let later_boots = tokio::spawn(show_later_boots(show, power.subscribe()));
    let mut server = server;
    let ended = tokio::select! {
        () = shutdown => {
            let _ = stop.send(());
            (&mut server).await
        }
        ended = &mut server => ended,
    };
    later_boots.abort();
    match ended {
        Ok(result) => Ok(result?),
        Err(e) => Err(AppError::Serve(std::io::Error::other(e.to_string())).into()),
    }
}

/// While serving: a line for each boot that ends (after a power cycle, a new bake...).
async fn show_later_boots(
    show: Show,
    mut boots: tokio::sync::watch::Receiver<std::collections::BTreeMap<String, BootRecord>>,
) {
    let mut last = boots
        .borrow_and_update()
        .values()
        .map(|r| r.number)
        .max()
        .unwrap_or(0);
    while boots.changed().await.is_ok() {
        let new: Vec<(String, BootRecord)> = boots
            .borrow_and_update()
            .iter()
            .filter(|(_, r)| r.number > last)
            .map(|(s, r)| (s.clone(), r.clone()))
            .collect();
        for (serial, record) in new {
            last = last.max(record.number);
            show.line(&boot_line(&serial, &record));
        }
    }
}

/// The loopback default of a listen flag, or its value; the demo needs both servers.
fn demo_addr(flag: &'static str, value: Option<&str>) -> Result<SocketAddr, DemoError> {
    let value = value.unwrap_or("127.0.0.1:0");
    if value.eq_ignore_ascii_case("off") {
        return Err(DemoError::Flag {
            flag,
            value: value.to_owned(),
            reason: "the demo needs it on",
        });
    }
    value.parse().map_err(|_| DemoError::Flag {
        flag,
        value: value.to_owned(),
        reason: "expected ip:port, e.g. 127.0.0.1:0",
    })
}

/// Makes `path` ready for a demo: created if missing, used if empty, wiped if a previous
/// demo's, refused otherwise. Returns its absolute path.
pub fn prepare_data_dir(path: &Path) -> Result<PathBuf, DemoError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DemoError::DataDir { path, source }
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path).map_err(io(path))?;
        }
        Err(e) => return Err(io(path)(e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(DemoError::NotADemoDir {
                path: path.to_owned(),
            });
        }
        Ok(_) => {
            let mut entries = std::fs::read_dir(path).map_err(io(path))?.peekable();
            if entries.peek().is_some() {
                if !path.join(MARKER).is_file() {
                    return Err(DemoError::NotADemoDir {
                        path: path.to_owned(),
                    });
                }
                for entry in entries {
                    let entry = entry.map_err(io(path))?;
                    let p = entry.path();
                    let removed = match entry.file_type() {
                        Ok(t) if t.is_dir() => remove_tree(&p),
                        _ => std::fs::remove_file(&p),
                    };
                    removed.map_err(io(&p))?;
                }
            }
        }
    }
    let marker = path.join(MARKER);
    std::fs::write(
        &marker,
        "made by `bakery-demo`; a later demo wipes this directory\n",
    )
    .map_err(io(&marker))?;
    std::fs::canonicalize(path).map_err(io(path))
}

/// Removes a tree; directories without write permission for their owner (a root tree's
/// `proc/` is 0555) are opened up first, as an unprivileged owner may.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            open_up(path);
            std::fs::remove_dir_all(path)
        }
        other => other,
    }
}

fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&entry.path());
        }
    }
}

/// The embedded configuration: everything in the data dir, loopback, no exportfs.
fn demo_config(data_dir: &Path, listen: SocketAddr) -> Config {
    let mut config = Config::new(data_dir.to_owned(), "127.0.0.1".to_owned());
    config.listen = listen;
    config.settings.exports_file = data_dir.join("exports");
    config.settings.exportfs_cmd = String::new();
    config.settings.power_cycle_pause = Duration::from_millis(500);
    config.settings.ppi_timeout = Duration::from_secs(5);
    config
}

async fn build_image(show: &Show, data_dir: &Path) -> Result<PathBuf, DemoError> {
    let step = show.step("building the sample bakeform image (mkfs.ext4, debugfs)");
    let image = data_dir.join("sample.img");
    let out = image.clone();
    let started = Instant::now();
    let built = tokio::task::spawn_blocking(move || {
        bakery_image::build_sample_image(&out, &bakery_image::SampleSpec::default())
    })
    .await
    .map_err(|e| DemoError::Sample(e.to_string()))?;
    if let Err(e) = built {
        step.fail("the sample image could not be built");
        return Err(DemoError::Sample(e.to_string()));
    }
    let size = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
    step.done(&format!(
        "sample image built: {} in {} ms",
        indicatif::HumanBytes(size),
        started.elapsed().as_millis()
    ));
    Ok(image)
}

/// Upload, appear, bake, boot: one row per simulated Pi.
async fn demo_steps(
    show: &Show,
    args: &DemoArgs,
    client: &Client,
    power: &SimPower,
    tftp: SocketAddr,
    image: &Path,
) -> Result<Vec<PiRow>, DemoError> {
    let size = std::fs::metadata(image)
        .map(|m| m.len())
        .map_err(|source| DemoError::DataDir {
            path: image.to_owned(),
            source,
        })?;
    let step = show.counted(
        &format!("uploading bakeform {BAKEFORM} through the API"),
        size,
        true,
    );
    let progress = step_progress(&step);
    let started = Instant::now();
    let bakeform = client
        .upload_bakeform(BAKEFORM, image, Some(progress))
        .await
        .map_err(api(format!("cannot upload bakeform {BAKEFORM}")))?;
    step.done(&format!(
        "bakeform {} imported in {} ms ({})",
        bakeform.name,
        started.elapsed().as_millis(),
        bakeform.location
    ));
    // The image was only needed for the upload.
    let _ = std::fs::remove_file(image);

    let count = u32::from(args.pis);
    let serials: Vec<String> = (0..count)
        .map(|i| format!("{:08x}", SERIAL_BASE.wrapping_add(i)))
        .collect();
    let step = show.counted(
        "simulated pis appear on the boot path",
        u64::from(count),
        false,
    );
    let boot_dir = PathBuf::from(&bakeform.location).join("boot");
    for serial in &serials {
        appear(client, tftp, serial, args.model, &boot_dir).await?;
        step.tick(&format!(
            "{serial} asked for {serial}/{}: file not found, now in the fridge",
            args.model.first_file()
        ));
    }
    step.done(&format!("{count} pis in the fridge"));

    let step = show.counted(&format!("baking {count} pis"), u64::from(count), false);
    let mut baking = Vec::new();
    for _ in 0..count {
        let pi = client
            .bake_from(BAKEFORM)
            .await
            .map_err(api(format!("cannot bake a pi from {BAKEFORM}")))?;
        baking.push(pi.id);
    }
    let waits = baking.iter().map(|id| async move {
        let result = client.wait_baked(id, STEP_TIMEOUT).await;
        (id.clone(), result)
    });
    let mut waits: futures_util::stream::FuturesUnordered<_> = waits.collect();
    let mut bake_errors = std::collections::HashMap::new();
    while let Some((id, result)) = futures_util::StreamExt::next(&mut waits).await {
        match result {
            Ok(_) => step.tick(&format!("{id} baked: root cloned, exported, powered on")),
            Err(e) => {
                step.tick(&format!("{id} NOT baked: {e}"));
                bake_errors.insert(id, e.to_string());
            }
        }
    }
    drop(waits);
    let baked = count as usize - bake_errors.len();
    step.done(&format!("{baked} of {count} pis baked"));

    let boot_serials: Vec<String> = baking
        .iter()
        .filter(|id| !bake_errors.contains_key(*id))
        .cloned()
        .collect();
    let step = show.counted(
        &format!("pis booting over TFTP ({})", args.model.name()),
        boot_serials.len() as u64,
        false,
    );
    let boots = power
        .wait_booted(&boot_serials, STEP_TIMEOUT, |serial, record| {
            step.tick(&boot_line(serial, record));
        })
        .await;
    let booted = boots.values().filter(|r| r.outcome.is_ok()).count();
    step.done(&format!(
        "{booted} of {} pis booted, every file checked against the bakeform",
        boot_serials.len()
    ));

    let mut rows = Vec::new();
    for serial in &serials {
        let pi = client
            .any_pi(serial)
            .await
            .map_err(api(format!("cannot read pi {serial}")))?;
        let error = bake_errors.get(serial).cloned();
        rows.push(row(&pi, error, boots.get(serial)));
    }
    Ok(rows)
}

fn step_progress(step: &show::Step) -> bakery_client::ProgressFn {
    let step = step.clone();
    Box::new(move |p: bakery_client::Progress| step.set(p.sent))
}

/// A simulated Pi runs its boot sequence once while unknown: its first file is "not found",
/// and bakery registers it in the fridge.
async fn appear(
    client: &Client,
    tftp: SocketAddr,
    serial: &str,
    model: Model,
    boot_dir: &Path,
) -> Result<(), DemoError> {
    let first = format!("{serial}/{}", model.first_file());
    let opts = pi_sim::BootOptions::default();
    match pi_sim::boot(tftp, serial, model, boot_dir, &opts).await {
        Err(pi_sim::SimError::Missing { path, .. }) if path == first => {}
        Ok(_) => {
            return Err(DemoError::Appear {
                serial: serial.to_owned(),
                reason: "bakery served it a whole boot before it was baked".into(),
            });
        }
        Err(e) => {
            return Err(DemoError::Appear {
                serial: serial.to_owned(),
                reason: e.to_string(),
            });
        }
    }
    let pi = client
        .any_pi(serial)
        .await
        .map_err(api(format!("cannot read pi {serial}")))?;
    match pi.state {
        Some(bakery_client::PiState::Fridge) => Ok(()),
        other => Err(DemoError::Appear {
            serial: serial.to_owned(),
            reason: format!("it is in state {other:?}"),
        }),
    }
}

fn boot_line(serial: &str, record: &BootRecord) -> String {
    match &record.outcome {
        Ok(report) => format!(
            "{serial} booted: {} files, {} in {} ms (attempt {})",
            report.files.iter().filter(|f| f.found).count(),
            indicatif::HumanBytes(report.bytes()),
            report.total.as_millis(),
            record.attempts
        ),
        Err(reason) => format!("{serial} FAILED to boot: {reason}"),
    }
}

fn row(pi: &PiInfo, bake_error: Option<String>, boot: Option<&BootRecord>) -> PiRow {
    let state = pi
        .state
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|| format!("status {}", pi.status.code()));
    let baked = bake_error.is_none() && pi.state == Some(bakery_client::PiState::Baked);
    let mut row = PiRow {
        serial: pi.id.clone(),
        state,
        bakeform: pi.source_bakeform.as_ref().map(|b| b.name.clone()),
        address: pi.address.clone(),
        baked,
        booted: false,
        boot_ms: None,
        files: 0,
        requests: 0,
        bytes: 0,
        cmdline: None,
        error: bake_error.or_else(|| pi.last_error.clone()),
    };
    match boot.map(|b| &b.outcome) {
        Some(Ok(report)) => {
            row.booted = true;
            row.boot_ms = Some(report.total.as_millis() as u64);
            row.files = report.files.iter().filter(|f| f.found).count() as u64;
            row.requests = report.files.len() as u64;
            row.bytes = report.bytes();
            row.cmdline = Some(report.cmdline.trim_end().to_owned());
        }
        Some(Err(reason)) => row.error = Some(reason.clone()),
        None if baked => row.error = Some("no boot finished in time".into()),
        None => {}
    }
    row
}

fn print_summary(output: DemoOutput, summary: &Summary) -> Result<(), DemoError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match output {
        DemoOutput::Json => {
            serde_json::to_writer_pretty(&mut out, summary)
                .map_err(|e| DemoError::Output(e.into()))?;
            writeln!(out).map_err(DemoError::Output)?;
        }
        DemoOutput::Table => {
            writeln!(out).map_err(DemoError::Output)?;
            write!(out, "{}", show::table(&summary.pis)).map_err(DemoError::Output)?;
            for row in &summary.pis {
                if let Some(error) = &row.error {
                    writeln!(out, "  {}: {error}", row.serial).map_err(DemoError::Output)?;
                }
            }
            let served = summary
                .pis
                .iter()
                .find_map(|r| Some((&r.serial, r.cmdline.as_deref()?)));
            if let Some((serial, cmdline)) = served {
                writeln!(out, "\ncmdline.txt as served to {serial}:\n  {cmdline}")
                    .map_err(DemoError::Output)?;
            }
        }
    }
    out.flush().map_err(DemoError::Output)
}

/// How to poke the running demo: the lines it prints after the boots, the same as the
/// README's "Poke it" block (a unit test compares them).
fn poke_hints(url: &str, summary: &Summary) -> String {
    let serial = summary
        .pis
        .first()
        .map(|r| r.serial.as_str())
        .unwrap_or("dec00001");
    let lines = poke_lines(url, &summary.tftp, serial, &bakery_command());
    let mut text = String::from("\nbakery keeps serving; poke it from another terminal:\n");
    for line in lines {
        text.push_str("  ");
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str(&format!(
        "Ctrl-C stops it; the data stays in {} until the next demo wipes it.",
        summary.data_dir
    ));
    text
}

/// The poke commands for the API at `url` (ending in `/api/v1`), the TFTP server at `tftp`,
/// the Pi `serial`, and the CLI run as `bakery`.
fn poke_lines(url: &str, tftp: &str, serial: &str, bakery: &str) -> Vec<String> {
    let site = url.strip_suffix("/api/v1").unwrap_or(url);
    vec![
        format!("# status page: {site}/"),
        format!("curl -s {url}/pis"),
        format!("curl -s {url}/oven/{serial}"),
        format!("curl -s {url}/files/{serial}/cmdline.txt"),
        format!("curl -s tftp://{tftp}/{serial}/cmdline.txt"),
        format!("curl -s {site}/metrics"),
        format!("export BAKERY_URL={url}"),
        format!("{bakery} pi list"),
        format!("{bakery} pi show {serial}"),
        format!("{bakery} pi power-cycle {serial}"),
        format!("{bakery} pi unbake {serial}"),
        format!("{bakery} pi bake sample"),
    ]
}

/// How to run the `bakery` CLI of this build: the binary beside this one when it was built,
/// else `cargo run` with this build's profile.
fn bakery_command() -> String {
    let exe = std::env::current_exe().ok();
    let dir = exe.as_deref().and_then(Path::parent);
    if let Some(cli) = dir.map(|d| d.join("bakery")).filter(|p| p.is_file()) {
        return cli.display().to_string();
    }
    let release = dir.is_some_and(|d| d.ends_with("release"));
    cargo_run_bakery(release)
}

/// `cargo run` of the CLI, in the release or the debug profile.
fn cargo_run_bakery(release: bool) -> String {
    let profile = if release { " --release" } else { "" };
    format!("cargo run{profile} -p bakery-client --bin bakery --")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_poke_lines_are_the_readmes() {
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("### Poke it")
            .nth(1)
            .and_then(|s| s.split("```sh\n").nth(1))
            .and_then(|s| s.split("```").next())
            .expect("a Poke it block in the README");
        let lines = poke_lines(
            "http://127.0.0.1:<port>/api/v1",
            "127.0.0.1:<tftp-port>",
            "dec00001",
            &cargo_run_bakery(true),
        );
        assert_eq!(block.lines().collect::<Vec<_>>(), lines);
        assert_eq!(
            cargo_run_bakery(false),
            "cargo run -p bakery-client --bin bakery --"
        );
    }

    #[test]
    fn data_dir_is_made_reused_wiped_or_refused() {
        let tmp = tempfile::tempdir().unwrap();
        // Missing: created and marked.
        let dir = tmp.path().join("demo");
        let abs = prepare_data_dir(&dir).unwrap();
        assert!(abs.is_absolute() && abs.join(MARKER).is_file());
        // A previous demo's: wiped, read-only directories included.
        std::fs::create_dir_all(dir.join("disks/x/proc/self")).unwrap();
        std::fs::write(dir.join("bakery.db"), "old").unwrap();
        std::fs::set_permissions(
            dir.join("disks/x/proc"),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        prepare_data_dir(&dir).unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, [MARKER]);
        // Empty: used.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        prepare_data_dir(&empty).unwrap();
        // Someone else's: refused and untouched.
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("thesis.tex"), "precious").unwrap();
        let err = prepare_data_dir(&other).unwrap_err();
        assert!(matches!(err, DemoError::NotADemoDir { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(other.join("thesis.tex")).unwrap(),
            "precious"
        );
        // A file: refused.
        let err = prepare_data_dir(&other.join("thesis.tex")).unwrap_err();
        assert!(matches!(err, DemoError::NotADemoDir { .. }), "{err}");
    }

    #[test]
    fn listen_flags_default_to_loopback_and_must_be_on() {
        assert_eq!(
            demo_addr("--listen", None).unwrap(),
            "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            demo_addr("--listen", Some("127.0.0.1:8080"))
                .unwrap()
                .port(),
            8080
        );
        assert!(matches!(
            demo_addr("--tftp-listen", Some("off")),
            Err(DemoError::Flag { .. })
        ));
        assert!(matches!(
            demo_addr("--listen", Some("nowhere")),
            Err(DemoError::Flag { .. })
        ));
    }
}
