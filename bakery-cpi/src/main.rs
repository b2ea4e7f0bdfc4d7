//! The `bakery-cpi` executable: reads one request on stdin, writes one response on stdout.
//!
//! `bakery-cpi [--config <path>]`; the exit code is 0 whenever a response was written (the
//! director ignores it), 1 when stdout could not be written.

use std::path::PathBuf;
use std::process::ExitCode;

use bakery_cpi::CpiError;
use clap::Parser;

/// BOSH CPI for bakery: one JSON request on stdin, one JSON response on stdout.
#[derive(Debug, Parser)]
#[command(name = "bakery-cpi", version)]
struct Cli {
    /// The CPI config file (JSON) the CPI job renders; request context keys override it.
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let written = match Cli::try_parse() {
        Ok(Cli { config: Some(path) }) => {
            bakery_cpi::run_with_config_file(&mut stdin, &mut stdout, &path)
        }
        Ok(Cli { config: None }) => bakery_cpi::run(&mut stdin, &mut stdout, None),
        Err(e) if !e.use_stderr() => e.print(),
        Err(e) => bakery_cpi::fail(&mut stdout, CpiError::Usage(e.to_string())),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bakery-cpi: cannot write the response: {e}");
            ExitCode::FAILURE
        }
    }
}
