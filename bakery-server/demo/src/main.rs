//! The `bakery-demo` executable: the whole product on simulated Pis (see the library), with the
//! server's flags for its data dir and listeners; maps its error to an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use bakery_demo::DemoArgs;
use bakery_server::ServeArgs;
use clap::Parser;

/// Run the whole product on loopback with simulated Pis: build a sample bakeform, upload it,
/// bake and network-boot N Pis, print what happened, keep serving until Ctrl-C. Uses
/// `--data-dir` (default ./demo-data), `--listen` and `--tftp-listen` (default 127.0.0.1:0);
/// ignores the other serve flags.
#[derive(Debug, Parser)]
#[command(name = "bakery-demo", version)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws progress on the terminal: warnings only, unless BAKERY_LOG says otherwise
    // (its API is open on loopback: no need to warn about a missing token file).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BAKERY_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,bakery_server::http::auth=error")
            }),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    bakery_server::app::raise_open_file_limit_logged();
    match bakery_demo::run(cli.demo, &cli.serve, bakery_server::app::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("bakery-demo: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
