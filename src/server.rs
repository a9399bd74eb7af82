//! The running proxy: binds every listener (so start-up errors surface before anything is
//! served), swaps config and certificates on reload, and drains on shutdown: optionally keep
//! accepting for `shutdown_delay` with `/healthz` at 503, then stop accepting, GOAWAY / close
//! idle keep-alives, wait up to `shutdown_timeout` for in-flight streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::app::App;
use crate::config::Config;
use crate::listener::tls::{self, CertStore, TlsError};
use crate::listener::{self, Shared, Tracker};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("server.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin.listen: cannot listen on {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What a successful reload could not apply.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The settings that changed but keep their running values until a restart, as the config
    /// file names them (`server.listen`, `admin.listen`, `[admin]`, `[server.tls]`).
    pub needs_restart: Vec<&'static str>,
}

/// Where TLS material comes from: files named in the config, or given directly (demo, tests).
pub enum TlsSource {
    FromConfig,
    Certificate(rustls::sign::CertifiedKey),
}

pub struct Server {
    local_addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    certs: Option<Arc<CertStore>>,
    connections: Arc<Tracker>,
    draining: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds and starts serving. Must run inside a Tokio runtime.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        Self::start_with(config, TlsSource::FromConfig).await
    }

    pub async fn start_with(config: Config, tls_source: TlsSource) -> Result<Server, StartError> {
        let config = Arc::new(config);
        let metrics = Metrics::new();
        let certs = match (&config.server.tls, tls_source) {
            (_, TlsSource::Certificate(key)) => Some(Arc::new(CertStore::new(key))),
            (Some(paths), TlsSource::FromConfig) => Some(Arc::new(CertStore::new(
                tls::load_certified_key(&paths.cert, &paths.key)?,
            ))),
            (None, TlsSource::FromConfig) => None,
        };
        let tls = certs.clone().map(tls::server_config).transpose()?;
        let mut listeners = Vec::new();
        for addr in &config.server.listen {
            let l = listener::bind(*addr).map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
            listeners.push(l);
        }
        let admin = match &config.admin {
            Some(admin) => {
                Some(
                    listener::bind(admin.listen).map_err(|source| StartError::AdminBind {
                        addr: admin.listen,
                        source,
                    })?,
                )
            }
            None => None,
        };
        let local_addrs = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            app: RwLock::new(Arc::new(App::new(config.clone(), metrics.clone()))),
            tls,
        });
        let connections = Arc::new(Tracker::new(config.server.max_connections));
        let draining = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(tokio::spawn(listener::accept_loop(
                l,
                shared.clone(),
                connections.clone(),
                shutdown_rx.clone(),
            )));
        }
        if let Some(l) = admin {
            tasks.push(tokio::spawn(crate::admin::serve(
                l,
                metrics.clone(),
                draining.clone(),
            )));
        }
        Ok(Server {
            local_addrs,
            admin_addr,
            shared,
            certs,
            connections,
            draining,
            shutdown,
            tasks,
        })
    }

    /// The bound addresses, in `server.listen` order (the real port when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The learned-hints store new connections use (`None` with `learn.enabled = false`): tests
    /// inject a clock into it and read its accounted bytes.
    pub fn learn_store(&self) -> Option<std::sync::Arc<crate::learn::LearnStore>> {
        self.shared.app().learn.clone()
    }

    /// Moves the clock of the cache digest cookie forward (tests: an asset's max-age passes
    /// without sleeping).
    pub fn advance_digest_clock(&self, by: std::time::Duration) {
        self.shared.app().push_freshness.clock.advance(by);
    }

    /// Applies a new configuration to new connections and swaps the certificate for new
    /// handshakes. Listen addresses are bound once, and TLS is on or off for the life of the
    /// process: changes to those are kept for the next start and returned, so that the caller
    /// names them in a warning. On error nothing changes. Counted in
    /// `linkpush_config_reloads_total{result}`.
    pub fn reload(&self, config: Config) -> Result<Reloaded, ReloadError> {
        let result = self.apply(config);
        self.record_reload(result.is_ok());
        result
    }

    /// Counts a reload in `linkpush_config_reloads_total{result}`; `main` calls it with `false`
    /// when the new file does not even load.
    pub fn record_reload(&self, applied: bool) {
        self.shared.app().metrics.config_reload(applied);
    }

    fn apply(&self, config: Config) -> Result<Reloaded, ReloadError> {
        let current = self.shared.app();
        let mut needs_restart = Vec::new();
        if config.server.listen != current.config.server.listen {
            needs_restart.push("server.listen");
        }
        if config.admin != current.config.admin {
            needs_restart.push(match (&config.admin, &current.config.admin) {
                (Some(_), Some(_)) => "admin.listen",
                _ => "[admin]",
            });
        }
        if config.server.tls.is_some() != self.certs.is_some() {
            needs_restart.push("[server.tls]");
        }
        if let (Some(store), Some(paths)) = (&self.certs, &config.server.tls) {
            // Load first: a bad certificate or a key that does not match it leaves the old pair
            // (and the old config) in place.
            store.replace(tls::load_certified_key(&paths.cert, &paths.key)?);
        }
        let app = Arc::new(current.reloaded(Arc::new(config)));
        *self.shared.app.write().unwrap_or_else(|p| p.into_inner()) = app;
        Ok(Reloaded { needs_restart })
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<Config> {
        self.shared.app().config.clone()
    }

    /// SIGTERM: `/healthz` answers 503 at once while new connections are still accepted and
    /// served for `server.shutdown_delay` (or until `cut_short` resolves, e.g. a second signal),
    /// so that load balancers and Kubernetes endpoints stop sending new connections here before
    /// the listeners close; then [`Server::shutdown`]. Returns what `shutdown` returns.
    pub async fn shutdown_after_delay(self, cut_short: impl Future<Output = ()>) -> bool {
        let delay = self.shared.app().config.server.shutdown_delay;
        if !delay.is_zero() {
            self.draining.store(true, Ordering::Release);
            info!(
                delay = %crate::config::format_duration(delay),
                "draining announced (/healthz answers 503); still accepting connections"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cut_short => info!("shutdown delay cut short"),
            }
        }
        self.shutdown().await
    }

    /// Stops accepting, asks every connection to finish (HTTP/2 GOAWAY, HTTP/1.1 close after
    /// the current response), and waits up to `server.shutdown_timeout`. Returns whether every
    /// connection finished in time.
    pub async fn shutdown(self) -> bool {
        self.draining.store(true, Ordering::Release);
        let _ = self.shutdown.send(true);
        // At `shutdown_timeout` each HTTP/2 connection resets the streams still running and
        // gets CLOSE_GRACE to write those RST_STREAMs before the process exits.
        let timeout =
            self.shared.app().config.server.shutdown_timeout + crate::front::h2::CLOSE_GRACE;
        let drained = tokio::time::timeout(timeout, self.connections.drained())
            .await
            .is_ok();
        if !drained {
            warn!(
                open = self.connections.count(),
                "shutdown timeout reached; closing remaining connections"
            );
        }
        for task in self.tasks {
            task.abort();
        }
        drained
    }
}
