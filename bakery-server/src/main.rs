//! The `bakery-server` executable: parse the command line, set up logs, run the library, map
//! its error to an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use bakery_server::ServeArgs;
use bakery_server::demo::{DemoArgs, DemoError};
use bakery_server::dnsmasq::{DnsmasqArgs, ProxyDhcp};
use bakery_server::{App, AppError, Cli, Command};
use clap::Parser;

/// The exit code of each failure (the one place they are chosen).
fn exit_code(error: &AppError) -> u8 {
    match error {
        AppError::Config(_) | AppError::Template { .. } => 2,
        AppError::Bind { .. } => 3,
        AppError::DataDir { .. } | AppError::Store(_) | AppError::Repair(_) => 4,
        AppError::Serve(_) | AppError::Tftp(_) => 1,
    }
}

/// The exit code of each demo failure.
fn demo_exit_code(error: &DemoError) -> u8 {
    match error {
        DemoError::App(e) => exit_code(e),
        DemoError::NotADemoDir { .. } | DemoError::Flag { .. } => 2,
        DemoError::DataDir { .. } => 4,
        DemoError::Sample(_)
        | DemoError::Api { .. }
        | DemoError::Appear { .. }
        | DemoError::PisFailed { .. }
        | DemoError::Output(_) => 1,
    }
}

/// `demo`: runs it and maps its error.
async fn demo(args: DemoArgs, serve: &ServeArgs) -> ExitCode {
    match bakery_server::demo::run(args, serve, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("bakery-server demo: {e}");
            ExitCode::from(demo_exit_code(&e))
        }
    }
}

/// `print-dnsmasq-config`: prints the snippet (exit 2 when the flags do not make one).
fn print_dnsmasq(args: &DnsmasqArgs, serve: &ServeArgs) -> ExitCode {
    let tftp_listen = serve.tftp_listen.as_deref().and_then(|t| t.parse().ok());
    match ProxyDhcp::from_args(args, tftp_listen) {
        Ok(dhcp) => {
            print!("{}", dhcp.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bakery-server print-dnsmasq-config: {e}");
            ExitCode::from(2)
        }
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
        // Handled in `main` before the serve configuration is resolved.
        Some(Command::Demo(_) | Command::PrintDnsmasqConfig(_)) => Ok(()),
        Some(Command::CheckConfig) => {
            println!("{config:#?}");
            Ok(())
        }
        None => {
            let app = App::new(config).await?;
            let tftp = match app.config().tftp_listen {
                Some(addr) => Some(App::bind_tftp(addr).await?),
                None => None,
            };
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
            if let Some(socket) = &tftp {
                match socket.local_addr() {
                    Ok(tftp_bound) => tracing::info!("tftp listening on {tftp_bound}"),
                    Err(e) => tracing::warn!(error = %e, "tftp socket has no local address"),
                }
            }
            app.serve_all(listener, tftp, shutdown_signal()).await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws progress on the terminal: warnings only, unless BAKERY_LOG says otherwise
    let default_log = match cli.command {
        // (The demo's API is open on loopback: no need to warn about a missing token file.)
        Some(Command::Demo(_)) => "warn,bakery_server::http::auth=error",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BAKERY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    bakery_server::app::raise_open_file_limit_logged();
    match &cli.command {
        Some(Command::Demo(args)) => return demo(args.clone(), &cli.serve).await,
        Some(Command::PrintDnsmasqConfig(args)) => return print_dnsmasq(args, &cli.serve),
        _ => {}
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("bakery-server: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
