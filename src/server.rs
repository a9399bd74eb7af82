//! The running proxy: binds every listener (so start-up errors surface before anything is
//! served), swaps config and certificates on reload, and drains on shutdown: stop accepting,
//! GOAWAY / close idle keep-alives, wait up to `shutdown_timeout` for in-flight streams.

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
        let connections = Arc::new(Tracker::default());
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
        // The exporter holds histogram samples until upkeep drains them: without this, memory
        // would grow with every request when nothing scrapes /metrics.
        let upkeep = metrics.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::metrics::UPKEEP_INTERVAL);
            loop {
                every.tick().await;
                upkeep.upkeep();
            }
        }));
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

    /// Applies a new configuration to new connections and swaps the certificate for new
    /// handshakes. Listen addresses are bound once: a change to them needs a restart.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let current = self.shared.app();
        if config.server.listen != current.config.server.listen
            || config.admin != current.config.admin
        {
            warn!("reload: listen addresses changed; they take effect after a restart");
        }
        if config.server.tls.is_some() != self.certs.is_some() {
            warn!("reload: enabling or disabling TLS takes effect after a restart");
        }
        if let (Some(store), Some(paths)) = (&self.certs, &config.server.tls) {
            // Load first: a bad certificate leaves the old one (and the old config) in place.
            store.replace(tls::load_certified_key(&paths.cert, &paths.key)?);
        }
        let app = Arc::new(current.reloaded(Arc::new(config)));
        *self.shared.app.write().unwrap_or_else(|p| p.into_inner()) = app;
        info!("configuration reloaded");
        Ok(())
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
