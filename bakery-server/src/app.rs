//! Assembling and running a bakery server: open the inventory, repair it, serve the API.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::http::auth::Auth;
use crate::http::tls::CertStore;

use crate::config::{Config, ConfigError};
use bakery_core::boot::BootFiles;
use bakery_core::db::{DbError, Store};
use bakery_core::exports::{Exporter, GaneshaExporter, GaneshaReload, KernelExporter};
use bakery_core::imaging;
use bakery_core::ppi::{NoPower, Power, ProcessPpi};
use bakery_core::service::{Bakery, Parts, RepairReport, ServiceError};
use bakery_core::settings::NfsBackend;

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum AppError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be prepared.
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The cmdline template could not be read.
    #[error("cannot read cmdline template {path}: {source}")]
    Template {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] DbError),
    /// Start-up repair failed.
    #[error("start-up repair failed: {0}")]
    Repair(#[from] ServiceError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("http server failed: {0}")]
    Serve(std::io::Error),
    /// The built-in TFTP server's socket failed.
    #[error("tftp server failed: {0}")]
    Tftp(std::io::Error),
}

impl AppError {
    /// The exit code of the failure (the one place they are chosen): 2 a bad configuration,
    /// 3 a port that cannot be bound, 4 an unusable data dir or database, 1 the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) | AppError::Template { .. } => 2,
            AppError::Bind { .. } => 3,
            AppError::DataDir { .. } | AppError::Store(_) | AppError::Repair(_) => 4,
            AppError::Serve(_) | AppError::Tftp(_) => 1,
        }
    }
}

/// What SIGHUP reloads: the token file and the TLS certificate, when configured.
#[derive(Debug, Clone, Default)]
pub struct Reloadable {
    /// The API's tokens.
    pub auth: Option<Auth>,
    /// The HTTPS certificate and key.
    pub certs: Option<Arc<CertStore>>,
}

impl Reloadable {
    /// Reloads each file; a file that fails keeps the old contents in force (and is logged).
    /// Returns how many reloads succeeded.
    pub fn reload(&self) -> usize {
        if self.auth.is_none() && self.certs.is_none() {
            tracing::info!("SIGHUP: no token file or tls certificate to reload");
            return 0;
        }
        let tokens = self.auth.as_ref().is_some_and(|auth| auth.reload().is_ok());
        let certs = self
            .certs
            .as_ref()
            .is_some_and(|certs| certs.reload().is_ok());
        usize::from(tokens) + usize::from(certs)
    }

    /// Reloads on every message of `hups`, in the background, until its sender is gone (for
    /// [`sighups`], the life of the process).
    pub fn reload_on(self, mut hups: mpsc::Receiver<()>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while hups.recv().await.is_some() {
                self.reload();
            }
        })
    }
}

/// The process's SIGHUPs as messages (watching SIGHUP also keeps it from ending the process,
/// its default); `None` (an error logged) when the handler cannot be installed.
pub fn sighups() -> Option<mpsc::Receiver<()>> {
    let (tx, rx) = mpsc::channel(1);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // A reload already queued covers this signal too.
                    let _ = tx.try_send(());
                }
            });
            Some(rx)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: tokens and certificates are not reloaded");
            None
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (logging `shutting down`): the shutdown of a served bakery.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
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
    tracing::info!("shutting down");
}

/// A ready bakery: inventory open and repaired.
#[derive(Debug, Clone)]
pub struct App {
    bakery: Arc<Bakery>,
    config: Arc<Config>,
}

impl App {
    /// Opens the data dir and inventory, chooses the power and exports backends, and repairs
    /// what a previous run left in flight.
    pub async fn new(config: Config) -> Result<App, AppError> {
        App::build(config, None).await
    }

    /// [`App::new`] with `power` switching Pis instead of the configured PPI (the demo's
    /// simulated Pis).
    pub async fn with_power(config: Config, power: Arc<dyn Power>) -> Result<App, AppError> {
        App::build(config, Some(power)).await
    }

    async fn build(mut config: Config, power: Option<Arc<dyn Power>>) -> Result<App, AppError> {
        let data_err = |path: &std::path::Path| {
            let path = path.to_owned();
            move |source| AppError::DataDir { path, source }
        };
        bakery_core::service::Layout::new(&config.settings.data_dir)
            .create()
            .map_err(data_err(&config.settings.data_dir))?;
        // Locations are reported to clients and written to the exports file: make them absolute.
        config.settings.data_dir = std::fs::canonicalize(&config.settings.data_dir)
            .map_err(data_err(&config.settings.data_dir))?;
        let layout = bakery_core::service::Layout::new(&config.settings.data_dir);
        let cmdline_template = match &config.settings.cmdline_template {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| AppError::Template {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let store = Store::open(&config.settings.db_path)?;
        let power: Arc<dyn Power> = match (power, &config.settings.ppi) {
            (Some(power), _) => power,
            (None, Some(ppi)) => {
                tracing::info!(ppi = %ppi.display(), "power managed by ppi");
                Arc::new(ProcessPpi::new(
                    ppi.clone(),
                    config.settings.ppi_config.clone(),
                    config.settings.ppi_timeout,
                ))
            }
            (None, None) => {
                tracing::warn!("no --ppi configured: power is not managed");
                Arc::new(NoPower)
            }
        };
        let exporter: Arc<dyn Exporter> = match config.settings.nfs_backend {
            NfsBackend::Kernel => Arc::new(KernelExporter::new(
                config.settings.exports_file.clone(),
                &config.settings.exportfs_cmd,
            )),
            NfsBackend::Ganesha => {
                let reload = match &config.settings.ganesha_pid_file {
                    Some(pid_file) => GaneshaReload::Signal(pid_file.clone()),
                    None => GaneshaReload::command(&config.settings.exportfs_cmd),
                };
                tracing::info!(exports_file = %config.settings.exports_file.display(), ?reload, "nfs exports for nfs-ganesha");
                Arc::new(GaneshaExporter::new(
                    config.settings.exports_file.clone(),
                    reload,
                    config.settings.ganesha_export_id_base,
                ))
            }
        };
        let clone_strategy = imaging::detect_strategy(&layout.tmp);
        tracing::info!(strategy = %clone_strategy, data_dir = %config.settings.data_dir.display(), "clone strategy chosen");
        let bakery = Bakery::new(Parts {
            config: config.core_settings(),
            store,
            power,
            exporter,
            clone_strategy,
            cmdline_template,
        });
        bakery.spawn_reclaimer();
        bakery.start_nbd().await?;
        let report: RepairReport = bakery.repair().await?;
        tracing::info!(?report, "start-up repair done");
        bakery.spawn_pool_filler();
        Ok(App {
            bakery,
            config: Arc::new(config),
        })
    }

    /// The service.
    pub fn bakery(&self) -> &Arc<Bakery> {
        &self.bakery
    }

    /// Boot-file resolution for the TFTP server.
    pub fn boot_files(&self) -> crate::tftp::TftpBootFiles {
        crate::tftp::TftpBootFiles(BootFiles::new(self.bakery.clone()))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves the API on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        if let Ok(addr) = listener.local_addr() {
            self.bakery.set_api_port(addr.port());
        }
        let config = self.config();
        let auth = Auth::from_file(
            config.token_file.as_deref(),
            config.boot_files_require_token,
        )
        .map_err(ConfigError::from)?;
        let (certs, tls) = match &config.tls {
            Some(files) => {
                let certs = CertStore::load(&files.cert, &files.key).map_err(ConfigError::from)?;
                let tls = certs.server_config().map_err(ConfigError::from)?;
                (Some(certs), Some(tls))
            }
            None => (None, None),
        };
        if let Some(hups) = sighups() {
            Reloadable {
                auth: auth.clone(),
                certs,
            }
            .reload_on(hups);
        }
        let shutdown = self.bakery.observer().close_on(shutdown);
        crate::http::serve(listener, self.bakery.clone(), auth, tls, shutdown)
            .await
            .map_err(AppError::Serve)
    }

    /// Binds the built-in TFTP server's socket at `addr`.
    pub async fn bind_tftp(addr: SocketAddr) -> Result<UdpSocket, AppError> {
        UdpSocket::bind(addr)
            .await
            .map_err(|source| AppError::Bind {
                addr: format!("udp {addr}"),
                source,
            })
    }

    /// Serves the boot path over TFTP on `socket` until `shutdown` completes.
    pub async fn serve_tftp(
        &self,
        socket: UdpSocket,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AppError> {
        bakery_tftp::serve(
            socket,
            Arc::new(self.boot_files()),
            bakery_tftp::ServerConfig::default(),
            shutdown,
        )
        .await
        .map_err(AppError::Tftp)
    }

    /// Serves the API on `listener` and, when given, TFTP on `tftp`, until `shutdown`
    /// completes (or either server fails).
    pub async fn serve_all(
        self,
        listener: TcpListener,
        tftp: Option<UdpSocket>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let Some(socket) = tftp else {
            return self.serve(listener, shutdown).await;
        };
        let tftp_app = self.clone();
        tokio::select! {
            result = self.serve(listener, shutdown) => result,
            result = tftp_app.serve_tftp(socket, std::future::pending()) => result,
        }
    }

    /// [`App::new`] then [`App::serve`].
    pub async fn start(
        config: Config,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        App::new(config).await?.serve(listener, shutdown).await
    }
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit, as Go's runtime
/// and many servers do at start-up: TFTP sessions, NFS reloads, HTTP connections and clones
/// together can outgrow the usual soft limit of 1024. Returns the soft limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: `raised` is a valid rlimit; only the soft limit changes, within the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(raised.rlim_cur)
}

/// [`raise_open_file_limit`], logged: the new limit at debug, a failure as a warning (the
/// server runs on with the limit it has).
pub fn raise_open_file_limit_logged() {
    match raise_open_file_limit() {
        Ok(limit) => tracing::debug!(limit, "open-file soft limit (RLIMIT_NOFILE)"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file soft limit (RLIMIT_NOFILE)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "BAKERY_TEST_RLIMIT_CHILD";

    #[tokio::test]
    async fn each_hangup_reloads_the_token_file_and_a_bad_one_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "first-token-0123456789\n").unwrap();
        let auth = Auth::load(&file, crate::http::auth::FilesPolicy::Open).unwrap();
        let (hup, hups) = mpsc::channel(1);
        let task = Reloadable {
            auth: Some(auth.clone()),
            certs: None,
        }
        .reload_on(hups);
        std::fs::write(
            &file,
            "second-token-0123456789\nro:third-token-0123456789\n",
        )
        .unwrap();
        assert_eq!(auth.token_count(), 1, "no reload before a hangup");
        hup.send(()).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while auth.token_count() != 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the hangup did not reload"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        std::fs::write(&file, "not a token line\n").unwrap();
        hup.send(()).await.unwrap();
        drop(hup);
        task.await.unwrap();
        assert_eq!(auth.token_count(), 2, "a bad file keeps the old tokens");
    }

    #[test]
    fn nothing_to_reload_is_no_reload() {
        assert_eq!(Reloadable::default().reload(), 0);
    }

    fn nofile() -> libc::rlimit {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        limit
    }

    /// Lowers the soft limit and raises it again, in a child process of this test binary so
    /// the tests running beside it keep their limit.
    #[test]
    fn the_open_file_soft_limit_is_raised_to_the_hard_limit() {
        if std::env::var_os(CHILD).is_some() {
            let before = nofile();
            let low = libc::rlimit {
                rlim_cur: 64.min(before.rlim_max),
                rlim_max: before.rlim_max,
            };
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
            assert_eq!(nofile().rlim_cur, low.rlim_cur);
            let raised = raise_open_file_limit().unwrap();
            let after = nofile();
            assert_eq!(after.rlim_cur, before.rlim_max);
            assert_eq!(after.rlim_max, before.rlim_max);
            assert_eq!(raised, after.rlim_cur);
            // Already at the hard limit: nothing to do, same answer.
            assert_eq!(raise_open_file_limit().unwrap(), raised);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "app::tests::the_open_file_soft_limit_is_raised_to_the_hard_limit",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
    }
}
