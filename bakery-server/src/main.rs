//! The `bakery-server` executable: parse the command line, set up logs, run the library, map
//! its error to an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use bakery_server::ServeArgs;
use bakery_server::dnsmasq::{DnsmasqArgs, ProxyDhcp};
use bakery_server::{App, AppError, Cli, Command};
use clap::Parser;

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

async fn run(cli: Cli) -> Result<(), AppError> {
    let config = cli.serve.resolve()?;
    match cli.command {
        // Handled in `main` before the serve configuration is resolved.
        Some(Command::PrintDnsmasqConfig(_)) => Ok(()),
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
            app.serve_all(listener, tftp, bakery_server::app::shutdown_signal())
                .await
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
    bakery_server::app::raise_open_file_limit_logged();
    if let Some(Command::PrintDnsmasqConfig(args)) = &cli.command {
        return print_dnsmasq(args, &cli.serve);
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("bakery-server: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
