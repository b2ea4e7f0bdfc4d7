//! Boot-storm benchmark: N simulated Pis booting at once from bakery-tftp (with per-Pi
//! `cmdline.txt` rendering) and from tftpd-hpa serving the same files, plus windowsize
//! against lock-step throughput.
//!
//! Run: `cargo run --release -p pi-sim --example boot-storm -- [--counts 1,10,100]
//! [--model pi4] [--kernel-mib 8] [--runs 3]` (needs `in.tftpd` from tftpd-hpa; run as root,
//! tftpd-hpa chroots into the served directory).

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
}

const SERIAL_BASE: u32 = 0x3000_0000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
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

    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let bakery = socket.local_addr()?;
    let provider = Arc::new(BootDirProvider::new(&boot_dir, "192.0.2.1"));
    tokio::spawn(serve(
        socket,
        provider,
        ServerConfig::default(),
        std::future::pending(),
    ));
    let tftpd = TftpdHpa::start(&tftp_root)?;

    println!(
        "boot storm: {} Pis, kernel {} MiB, median of {} runs of the median total boot time",
        args.model.name(),
        args.kernel_mib,
        args.runs
    );
    println!(
        "{:>5} {:>14} {:>14} {:>8} {:>16} {:>16}",
        "pis", "bakery s", "tftpd-hpa s", "ratio", "bakery wall s", "tftpd wall s"
    );
    for &count in &args.counts {
        let mut bakery_runs = Vec::new();
        let mut hpa_runs = Vec::new();
        for _ in 0..args.runs {
            // Alternate the order so neither server always runs on a warmer machine.
            hpa_runs.push(storm(tftpd.addr(), count, args.model, &boot_dir).await?);
            bakery_runs.push(storm(bakery, count, args.model, &boot_dir).await?);
        }
        let b = median(bakery_runs.iter().map(|r| r.0).collect());
        let h = median(hpa_runs.iter().map(|r| r.0).collect());
        println!(
            "{:>5} {:>14.3} {:>14.3} {:>8.2} {:>16.3} {:>16.3}",
            count,
            b.as_secs_f64(),
            h.as_secs_f64(),
            b.as_secs_f64() / h.as_secs_f64(),
            median(bakery_runs.iter().map(|r| r.1).collect()).as_secs_f64(),
            median(hpa_runs.iter().map(|r| r.1).collect()).as_secs_f64(),
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
