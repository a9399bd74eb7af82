//! The `linkpush` command: arguments, config, tracing, run. No proxy logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use linkpush::config::{Config, LogConfig, LogFormat};
use linkpush::{Server, TlsSource};
use tracing::{debug, error, info, warn};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: a proxied request allocates and frees a few dozen small
/// blocks (header maps, frames, futures), and glibc's malloc and free were ~12% of the
/// instructions per request (callgrind, `benches/instructions.sh`). The price is memory held
/// per thread: an idle TLS HTTP/2 connection 12.3-13.1 KiB instead of 11.8, and the peak of the
/// never-reading clients in tests/fairness.rs 27-32 MB instead of 19-21 (docs/BENCHMARKS.md).
/// The wrapper crate is patched (vendor/mimalloc/PATCHES.md): it used mimalloc's aligned
/// functions for every allocation, whose slow path over-allocates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "linkpush",
    version,
    about = "Turns preload Link headers into HTTP/2 push and 103 Early Hints"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "LINKPUSH_CONFIG",
        default_value = "linkpush.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Load and validate the configuration, print the effective configuration, and exit.
    Check,
    /// Run a built-in demo site behind linkpush over TLS with a self-signed certificate.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Where the admin listener serves /metrics and /healthz.
        #[arg(long, default_value = "127.0.0.1:9901", conflicts_with = "no_admin")]
        admin: SocketAddr,
        /// No admin listener.
        #[arg(long)]
        no_admin: bool,
    },
    /// Ask the admin listener's /healthz whether linkpush is serving: exit 0 on 200, 1 otherwise
    /// (for a container HEALTHCHECK).
    Healthcheck {
        /// The admin address to query; default: `[admin] listen` from the configuration (a
        /// 0.0.0.0 or [::] bind is queried on loopback).
        #[arg(long)]
        addr: Option<SocketAddr>,
        /// How long the whole probe may take ("2s", "500ms").
        #[arg(long, default_value = "2s", value_parser = linkpush::config::parse_duration)]
        timeout: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check) => check(&cli.config),
        Some(Command::Demo {
            listen,
            admin,
            no_admin,
        }) => demo(listen, (!no_admin).then_some(admin)),
        Some(Command::Healthcheck { addr, timeout }) => healthcheck(&cli.config, addr, timeout),
        None => run(&cli.config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One clear line: every cause in the chain, outermost first.
            let chain: Vec<String> = err.chain().map(|c| c.to_string()).collect();
            let mut line = String::new();
            for part in chain {
                if !line.contains(&part) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&part);
                }
            }
            eprintln!("linkpush: {line}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if let Some(tls) = &config.server.tls {
        linkpush::listener::tls::load_certified_key(&tls.cert, &tls.key)?;
    }
    print!("{}", config.render());
    Ok(())
}

fn healthcheck(
    path: &std::path::Path,
    addr: Option<SocketAddr>,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use linkpush::healthcheck::{HealthcheckError, probe};
    let listen = match addr {
        Some(addr) => addr,
        None => {
            Config::load(path)?
                .admin
                .ok_or(HealthcheckError::NoAdmin)?
                .listen
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answered = runtime.block_on(probe(listen, timeout))?;
    eprintln!("linkpush: healthy (http://{answered}/healthz answered 200)");
    Ok(())
}

/// `[log]` applied to the running process. The level goes through a reload layer; the format is
/// two formatting layers of which only the selected one writes events. Both see every span, so
/// a span opened before a format change still has the fields the other format needs (the JSON
/// formatter panics on a span it never saw).
struct Logging {
    set_filter: Box<dyn Fn(EnvFilter) -> Result<(), tracing_subscriber::reload::Error>>,
    json: Arc<AtomicBool>,
    /// RUST_LOG was set at start: it wins over `log.level`, on reload too.
    from_env: bool,
    level: String,
}

/// Both layers write through the writer thread of `linkpush::log_writer`: never blocking a
/// request on stderr, dropping (and counting) lines rather. Keep the guard until exit: dropping
/// it writes what is queued.
fn init_tracing(config: &Config) -> (Logging, linkpush::log_writer::WorkerGuard) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::prelude::*;
    // RUST_LOG, when set, wins over log.level.
    let from_env = EnvFilter::try_from_default_env().ok();
    let filter = from_env
        .clone()
        .or_else(|| EnvFilter::try_new(&config.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let json = Arc::new(AtomicBool::new(config.log.format == LogFormat::Json));
    let writes = |want_json: bool| {
        let json = json.clone();
        filter_fn(move |meta| meta.is_span() || json.load(Ordering::Relaxed) == want_json)
    };
    let (writer, guard) =
        linkpush::log_writer::non_blocking(std::io::stderr(), linkpush::log_writer::QUEUE_BYTES);
    // Access lines skip tracing's formatting (its field visitors cost more than the rest of a
    // request's logging): `front::access_log` writes them here, in the same layouts.
    linkpush::log_writer::set_access_sink(writer.clone(), json.clone());
    let text_layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer.clone())
        .with_filter(writes(false));
    // One flat object per line: the event's fields beside `timestamp`, `level`, `target` (not
    // nested under `fields`), which is what log pipelines index.
    let json_layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_writer(writer)
        .with_filter(writes(true));
    let _ = tracing_subscriber::registry()
        .with(text_layer)
        .with(json_layer)
        .with(filter)
        .try_init();
    refresh_access_log();
    let logging = Logging {
        set_filter: Box::new(move |filter| handle.reload(filter)),
        json,
        from_env: from_env.is_some(),
        level: config.log.level.clone(),
    };
    (logging, guard)
}

impl Logging {
    /// Applies a reloaded `[log]`; returns the setting it could not apply, if any.
    fn apply(&mut self, log: &LogConfig) -> Option<&'static str> {
        self.json
            .store(log.format == LogFormat::Json, Ordering::Relaxed);
        if log.level == self.level {
            return None;
        }
        self.level = log.level.clone();
        if self.from_env {
            return Some("log.level (RUST_LOG is set and wins)");
        }
        // Validated when the config was loaded; a failure here leaves the old level.
        match EnvFilter::try_new(&log.level).map(|filter| (self.set_filter)(filter)) {
            Ok(Ok(())) => {
                refresh_access_log();
                None
            }
            _ => Some("log.level"),
        }
    }
}

/// The access log follows the level just set (see `log_writer::AccessSink::enabled`).
fn refresh_access_log() {
    if let Some(sink) = linkpush::log_writer::access_sink() {
        sink.set_enabled(linkpush::front::AccessLog::wanted());
    }
}

/// Kubernetes service links (`LINKPUSH_PORT=tcp://…`) and other `LINKPUSH_*` variables outside
/// the config sections are not settings; they are skipped, and said so here.
fn log_ignored_env() {
    let names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    for var in Config::ignored_env_vars(names.iter().map(String::as_str)) {
        debug!(%var, "environment variable ignored: not a linkpush setting (outside every config section, or a Kubernetes service link)");
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let (logging, _log_guard) = init_tracing(&config);
    log_ignored_env();
    runtime()?.block_on(async {
        let signals = Signals::install()?;
        let server = Server::start(config).await?;
        for addr in server.local_addrs() {
            info!(%addr, "listening");
        }
        if let Some(addr) = server.admin_addr() {
            info!(%addr, "admin listening");
        }
        serve_until_signal(server, signals, Some((path.to_path_buf(), logging))).await
    })
}

fn demo(listen: SocketAddr, admin: Option<SocketAddr>) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let backend = linkpush::demo::start_backend().await.context("demo backend")?;
        let config = linkpush::demo::config(listen, backend, admin)?;
        let _logging = init_tracing(&config);
        let signals = Signals::install()?;
        let (key, _pem) = linkpush::listener::tls::self_signed()?;
        let server = Server::start_with(config, TlsSource::Certificate(key)).await?;
        let addr = server.local_addrs()[0];
        println!("linkpush demo: https://{addr}/  (self-signed certificate; demo backend on http://{backend})");
        println!("see the pushes:      nghttp -nv https://{addr}/   (nghttp: Debian/Ubuntu package nghttp2-client)");
        println!("see the early hints: curl -k -v --http2 -H 'Sec-Fetch-Mode: navigate' https://{addr}/ -o /dev/null   (run it twice: the second gets learned hints)");
        if let Some(admin) = server.admin_addr() {
            println!("see the metrics:     curl http://{admin}/metrics");
        }
        println!("press Ctrl-C to stop");
        serve_until_signal(server, signals, None).await
    })
}

/// The handlers of the signals linkpush answers.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installed before the listeners are bound: once a connection can succeed, a supervisor's
    /// SIGTERM must start a drain, not meet the default action and kill the process (a test
    /// that signalled as soon as it could connect lost that race on a loaded CI machine).
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?,
        })
    }
}

/// Waits for SIGTERM (after `server.shutdown_delay`, drain and exit), SIGINT (drain and exit)
/// and SIGHUP (reload the config file, when there is one).
async fn serve_until_signal(
    server: Server,
    signals: Signals,
    mut reloadable: Option<(PathBuf, Logging)>,
) -> anyhow::Result<()> {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let delayed = loop {
        tokio::select! {
            _ = term.recv() => break true,
            _ = int.recv() => break false,
            _ = hup.recv() => {
                if let Some((path, logging)) = &mut reloadable {
                    reload(&server, path, logging);
                }
            }
        }
    };
    info!("shutting down");
    let drained = if delayed {
        // A second SIGTERM, or a Ctrl-C, does not wait out the delay.
        let again = async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        server.shutdown_after_delay(again).await
    } else {
        server.shutdown().await
    };
    info!(drained, "stopped");
    Ok(())
}

/// SIGHUP: a file that fails to load or validate, or a certificate that fails to load or does
/// not match its key, is logged and the running configuration stays. Settings that need a
/// restart are named in the warning that replaces "configuration reloaded".
fn reload(server: &Server, path: &std::path::Path, logging: &mut Logging) {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            server.record_reload(false);
            error!(error = %err, "reload failed; keeping the running configuration");
            return;
        }
    };
    let log = config.log.clone();
    let mut needs_restart = match server.reload(config) {
        Ok(reloaded) => reloaded.needs_restart,
        Err(err) => {
            error!(error = %err, "reload failed; keeping the running configuration");
            return;
        }
    };
    // After the server took the config, so that a refused reload changes nothing, and before
    // the line below, so that it is written at the new level and in the new format.
    needs_restart.extend(logging.apply(&log));
    if needs_restart.is_empty() {
        info!("configuration reloaded");
    } else {
        let needs_restart = needs_restart.join(", ");
        warn!(
            %needs_restart,
            "configuration reloaded, except settings that keep their running values until a restart: {needs_restart}"
        );
    }
}
