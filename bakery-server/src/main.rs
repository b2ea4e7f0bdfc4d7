//! The `bakery-server` executable: parse the command line, set up logs, run the library, map
//! its error to an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use bakery_server::{App, AppError, Cli, Command};
use clap::Parser;

/// The exit code of each failure (the one place they are chosen).
fn exit_code(error: &AppError) -> u8 {
    match error {
        AppError::Config(_) | AppError::Template { .. } => 2,
        AppError::Bind { .. } => 3,
        AppError::DataDir { .. } | AppError::Store(_) | AppError::Repair(_) => 4,
        AppError::Serve(_) => 1,
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

async fn run(cli: Cli) -> Result<(), AppError> {
    let config = cli.serve.resolve()?;
    match cli.command {
        Some(Command::CheckConfig) => {
            println!("{config:#?}");
            Ok(())
        }
        None => {
            let app = App::new(config).await?;
            let addr = app.config().listen;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind {
                    addr: addr.to_string(),
                    source,
                })?;
            let bound = listener.local_addr().map_err(|source| AppError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            let scheme = if app.config().tls.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!("listening on {scheme}://{bound}");
            app.serve(listener, shutdown_signal()).await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BAKERY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("bakery-server: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
