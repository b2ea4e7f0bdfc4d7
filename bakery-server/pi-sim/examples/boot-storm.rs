//! Boot-storm benchmark: N simulated Pis booting at once from bakery-tftp (with per-Pi
//! `cmdline.txt` rendering) and from tftpd-hpa serving the same files, plus windowsize
//! against lock-step throughput.
//!
//! Run: `cargo run --release -p pi-sim --example boot-storm -- [--counts 1,10,100]
//! [--model pi4] [--kernel-mib 8] [--runs 3]` (needs `in.tftpd` from tftpd-hpa; run as root,
//! tftpd-hpa chroots into the served directory).
//!
//! Both servers run in their own processes on loopback; the simulated Pis run in this one.
//! Columns: median total boot time of one Pi (median over runs), its ratio bakery/tftpd-hpa,
//! wall time of the whole storm, and CPU seconds the bakery server process used per storm.
//! `BOOT_STORM_WORKERS=<n>` sets the bakery process's tokio worker threads (default: one
//! per core), `BOOT_STORM_RUNTIME=current` runs it on a single-threaded runtime.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bakery_tftp::{FetchOptions, ServerConfig, fetch, serve};
use clap::Parser;
use pi_sim::testbed::{BootDirProvider, TftpdHpa, tftpd_hpa_layout, write_sample_boot_dir};
use pi_sim::{BootOptions, Model, boot_many};
use tokio::net::UdpSocket;

/// Boot-storm benchmark: bakery-tftp against tftpd-hpa.
#[derive(Debug, Parser)]
struct Args {
    /// Numbers of Pis booting at once.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 10, 100])]
    counts: Vec<usize>,
    /// The model: pi3 or pi4.
    #[arg(long, default_value = "pi4")]
    model: Model,
    /// Size of kernel8.img in MiB (firmware is 3/8 of it).
    #[arg(long, default_value_t = 8)]
    kernel_mib: usize,
    /// Runs per count; the reported figure is the median over runs of the median boot.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Serve this boot directory with bakery-tftp on a loopback port, print the address on
    /// stdout and run until stdin closes (the benchmark runs itself this way, so that both
    /// servers run in their own processes, apart from the simulated Pis).
    #[arg(long, hide = true)]
    serve: Option<std::path::PathBuf>,
}

/// Serves `boot_dir` until stdin closes.
async fn serve_only(boot_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    println!("{}", socket.local_addr()?);
    let provider = Arc::new(BootDirProvider::new(boot_dir, "192.0.2.1"));
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = closed.send(());
    });
    let stdin_closed = async {
        let _ = stdin_closed.await;
    };
    serve(socket, provider, ServerConfig::default(), stdin_closed).await?;
    Ok(())
}

/// The benchmark run as a child process serving with bakery-tftp.
struct BakeryProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl BakeryProcess {
    fn start(boot_dir: &Path) -> Result<BakeryProcess, Box<dyn std::error::Error>> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("--serve")
            .arg(boot_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or("no stdout of the server process")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line.trim().parse()?;
        Ok(BakeryProcess { child, addr })
    }
}

impl Drop for BakeryProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

const SERIAL_BASE: u32 = 0x3000_0000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(boot_dir) = &args.serve {
        let runtime = match std::env::var("BOOT_STORM_RUNTIME").as_deref() {
            Ok("current") => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            _ => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                if let Some(workers) = std::env::var("BOOT_STORM_WORKERS")
                    .ok()
                    .and_then(|w| w.parse().ok())
                {
                    builder.worker_threads(workers);
                }
                builder.enable_all().build()?
            }
        };
        return runtime.block_on(serve_only(boot_dir));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

/// CPU seconds (user + system) of process `pid`, from /proc/<pid>/stat in clock ticks of
/// 1/100 s. (tftpd-hpa's per-transfer children are not reaped with their times, so only
/// bakery's CPU is measured.)
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some((_, after_comm)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    // Fields after the command name start at field 3 (state); utime is field 14.
    let fields: Vec<f64> = after_comm
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    fields.iter().skip(11).take(2).sum::<f64>() / 100.0
}

async fn bench(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let work = tempfile::tempdir()?;
    let boot_dir = work.path().join("bakeform-boot");
    write_sample_boot_dir(&boot_dir, args.kernel_mib << 20)?;
    let max = args.counts.iter().copied().max().unwrap_or(1);
    let tftp_root = work.path().join("tftpd-hpa");
    tftpd_hpa_layout(
        &boot_dir,
        &tftp_root,
        (0..max).map(|i| format!("{:08x}", SERIAL_BASE + i as u32)),
    )?;

    let bakery_process = BakeryProcess::start(&boot_dir)?;
    let bakery = bakery_process.addr;
    let tftpd = TftpdHpa::start(&tftp_root)?;

    println!(
        "boot storm: {} Pis, kernel {} MiB, median of {} runs of the median total boot time",
        args.model.name(),
        args.kernel_mib,
        args.runs
    );
    println!(
        "{:>5} {:>10} {:>12} {:>7} {:>12} {:>12} {:>11}",
        "pis", "bakery s", "tftpd-hpa s", "ratio", "bakery wall", "tftpd wall", "bakery cpu"
    );
    for &count in &args.counts {
        let mut bakery_runs = Vec::new();
        let mut hpa_runs = Vec::new();
        let mut bakery_cpu = 0.0;
        for _ in 0..args.runs {
            hpa_runs.push(storm(tftpd.addr(), count, args.model, &boot_dir).await?);
            let before = cpu_seconds(bakery_process.child.id());
            bakery_runs.push(storm(bakery, count, args.model, &boot_dir).await?);
            bakery_cpu += cpu_seconds(bakery_process.child.id()) - before;
        }
        let b = median(bakery_runs.iter().map(|r| r.0).collect());
        let h = median(hpa_runs.iter().map(|r| r.0).collect());
        println!(
            "{:>5} {:>10.3} {:>12.3} {:>7.2} {:>12.3} {:>12.3} {:>11.2}",
            count,
            b.as_secs_f64(),
            h.as_secs_f64(),
            b.as_secs_f64() / h.as_secs_f64(),
            median(bakery_runs.iter().map(|r| r.1).collect()).as_secs_f64(),
            median(hpa_runs.iter().map(|r| r.1).collect()).as_secs_f64(),
            bakery_cpu / args.runs as f64,
        );
    }

    println!("\nthroughput of one kernel8.img fetch from bakery-tftp (median of 5)");
    println!(
        "{:>8} {:>11} {:>10} {:>10}",
        "blksize", "windowsize", "ms", "MiB/s"
    );
    let kernel_len = (args.kernel_mib << 20) as f64 / 1048576.0;
    for (blksize, windowsize) in [
        (1468, 1),
        (1468, 4),
        (1468, 16),
        (1468, 64),
        (8192, 1),
        (8192, 12),
        (65464, 1),
    ] {
        let mut times = Vec::new();
        let mut granted = 0;
        for _ in 0..5 {
            let fetched = fetch(
                bakery,
                "30000000/kernel8.img",
                &FetchOptions {
                    blksize: Some(blksize),
                    windowsize: Some(windowsize),
                    tsize: true,
                    ..FetchOptions::default()
                },
            )
            .await?;
            granted = fetched.windowsize;
            times.push(fetched.elapsed);
        }
        let t = median(times);
        println!(
            "{:>8} {:>11} {:>10.1} {:>10.1}",
            blksize,
            granted,
            t.as_secs_f64() * 1000.0,
            kernel_len / t.as_secs_f64()
        );
    }
    Ok(())
}

/// Boots `count` Pis at once; the median total boot time and the wall time of the storm.
async fn storm(
    server: SocketAddr,
    count: usize,
    model: Model,
    boot_dir: &Path,
) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let results = boot_many(
        server,
        count,
        SERIAL_BASE,
        model,
        boot_dir,
        &BootOptions::default(),
    )
    .await;
    let wall = started.elapsed();
    let mut totals = Vec::with_capacity(count);
    for result in results {
        totals.push(result?.total);
    }
    Ok((median(totals), wall))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}
