//! The `linkpush` command: arguments, config, tracing, run. No proxy logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use linkpush::config::{Config, LogFormat};
use linkpush::{Server, TlsSource};
use tracing::{error, info};

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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check) => check(&cli.config),
        Some(Command::Demo { listen }) => demo(listen),
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

/// Logs go to stderr through the writer thread of `linkpush::log_writer`: never blocking a
/// request on stderr, dropping (and counting) lines rather. Keep the guard until exit: dropping
/// it writes what is queued.
fn init_tracing(config: &Config) -> linkpush::log_writer::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG, when set, wins over log.level.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let (writer, guard) =
        linkpush::log_writer::non_blocking(std::io::stderr(), linkpush::log_writer::QUEUE_LINES);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = match config.log.format {
        // One flat object per line: the event's fields beside `timestamp`, `level`, `target`
        // (not nested under `fields`), which is what log pipelines index.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let _log = init_tracing(&config);
    runtime()?.block_on(async {
        let server = Server::start(config).await?;
        for addr in server.local_addrs() {
            info!(%addr, "listening");
        }
        if let Some(addr) = server.admin_addr() {
            info!(%addr, "admin listening");
        }
        serve_until_signal(server, Some(path.to_path_buf())).await
    })
}

fn demo(listen: SocketAddr) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let backend = linkpush::demo::start_backend().await.context("demo backend")?;
        let config = linkpush::demo::config(listen, backend)?;
        let _log = init_tracing(&config);
        let (key, _pem) = linkpush::listener::tls::self_signed()?;
        let server = Server::start_with(config, TlsSource::Certificate(key)).await?;
        let addr = server.local_addrs()[0];
        println!("linkpush demo: https://{addr}/  (self-signed certificate; demo backend on http://{backend})");
        println!("see the pushes:      nghttp -nv https://{addr}/");
        println!("see the early hints: curl -k -v --http2 https://{addr}/ -o /dev/null   (run it twice: the second gets learned hints)");
        println!("press Ctrl-C to stop");
        serve_until_signal(server, None).await
    })
}

/// Waits for SIGTERM/SIGINT (drain and exit) and SIGHUP (reload the config file).
async fn serve_until_signal(server: Server, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let Some(path) = &config_path else { continue };
                match Config::load(path) {
                    Ok(config) => {
                        if let Err(err) = server.reload(config) {
                            error!(error = %err, "reload failed; keeping the running configuration");
                        }
                    }
                    Err(err) => {
                        server.record_reload(false);
                        error!(error = %err, "reload failed; keeping the running configuration");
                    }
                }
            }
        }
    }
    info!("shutting down");
    let drained = server.shutdown().await;
    info!(drained, "stopped");
    Ok(())
}
