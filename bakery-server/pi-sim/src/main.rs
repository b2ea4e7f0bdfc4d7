//! `pi-sim`: boot N simulated Raspberry Pis against a TFTP server and print a summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use pi_sim::{BootOptions, Model, boot_many};

/// Simulated Raspberry Pis network-booting over TFTP, every byte checked against a
/// bakeform boot directory.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The TFTP server, e.g. 127.0.0.1:69.
    #[arg(long)]
    server: SocketAddr,
    /// How many Pis boot at once.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// The model: pi3 or pi4.
    #[arg(long, default_value = "pi4")]
    model: Model,
    /// The bakeform boot directory the served files must match.
    #[arg(long)]
    boot_dir: PathBuf,
    /// The first serial, 8 hex digits; the others count up from it.
    #[arg(long, default_value = "10000000", value_parser = parse_serial)]
    serial_base: u32,
    /// TFTP retransmission timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Ask for this block size instead of the model's.
    #[arg(long)]
    blksize: Option<u16>,
    /// Ask for this window size (real Pis do not).
    #[arg(long)]
    windowsize: Option<u16>,
}

fn parse_serial(s: &str) -> Result<u32, String> {
    if !pi_sim::valid_serial(s) {
        return Err(format!("{s:?} is not 8 lowercase hex digits"));
    }
    u32::from_str_radix(s, 16).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let opts = BootOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        blksize: args.blksize,
        windowsize: args.windowsize,
        ..BootOptions::default()
    };
    let started = Instant::now();
    let results = boot_many(
        args.server,
        args.count,
        args.serial_base,
        args.model,
        &args.boot_dir,
        &opts,
    )
    .await;
    let wall = started.elapsed();
    let mut totals = Vec::new();
    let mut bytes = 0;
    let mut failed = 0;
    for result in &results {
        match result {
            Ok(report) => {
                totals.push(report.total);
                bytes += report.bytes();
            }
            Err(error) => {
                failed += 1;
                eprintln!("pi-sim: {error}");
            }
        }
    }
    totals.sort();
    println!(
        "pi-sim: {} {} against {}: {} booted, {} failed in {:.3} s",
        args.count,
        args.model.name(),
        args.server,
        totals.len(),
        failed,
        wall.as_secs_f64()
    );
    if let (Some(min), Some(max)) = (totals.first(), totals.last()) {
        let median = totals[totals.len() / 2];
        println!(
            "boot time: median {:.3} s, min {:.3} s, max {:.3} s; {:.1} MiB received, {:.1} MiB/s",
            median.as_secs_f64(),
            min.as_secs_f64(),
            max.as_secs_f64(),
            bytes as f64 / 1048576.0,
            bytes as f64 / 1048576.0 / wall.as_secs_f64().max(1e-9)
        );
    }
    if let Some(Ok(report)) = results.first() {
        println!(
            "first pi {}: cmdline.txt: {}",
            report.serial,
            report.cmdline.trim()
        );
        for file in &report.files {
            println!(
                "  {:<40} {:>10} {:>9.1} ms",
                file.path,
                if file.found {
                    file.bytes.to_string()
                } else {
                    "not found".into()
                },
                file.elapsed.as_secs_f64() * 1000.0
            );
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
