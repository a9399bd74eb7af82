//! The built binary (SPEC §1, §2, §3): the command line, configuration errors, the
//! environment, signals (SIGTERM/SIGINT drain, SIGHUP reload) and the memory bound of a large
//! transfer.
//!
//! A subprocess cannot report the port it bound for `127.0.0.1:0`, so these tests pick a free
//! port (bind `127.0.0.1:0`, read it, drop it) and wait, bounded, for the proxy to accept there.

mod support;

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use http::StatusCode;
use support::{client::*, proxy::*, upstream::*};

const BIN: &str = env!("CARGO_BIN_EXE_linkpush");
/// How long a proxy may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

// ===== Running the binary =====

/// A command for the binary with none of the test's own `LINKPUSH_*` or `RUST_LOG` variables.
fn linkpush() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("LINKPUSH_")
        {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs the binary to completion (bounded), with extra environment variables and a working
/// directory.
async fn run_with(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Output {
    let mut cmd = linkpush();
    cmd.args(args).envs(env.iter().copied());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    match tokio::time::timeout(PROGRAM_TIMEOUT, cmd.output()).await {
        Ok(out) => out.expect("run linkpush"),
        Err(_) => panic!("linkpush {} did not finish", args.join(" ")),
    }
}

async fn run(args: &[&str]) -> Output {
    run_with(args, &[], None).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// SPEC §1: a start-up error is one clear line on stderr. Returns it.
#[track_caller]
fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "exits non-zero: {out:?}");
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got:\n{err}");
    lines[0].to_owned()
}

/// How many times [`Running::start_with`] picks new ports when one was taken before linkpush
/// bound it.
const PORT_ATTEMPTS: usize = 5;

fn free_port() -> u16 {
    Upstream::free_port().port()
}

/// A temp directory, removed on drop.
struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    fn new(label: &str) -> Self {
        let file = TempFile::new(label);
        let path = file.path.clone();
        drop(file);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn config_text(
    listen: SocketAddr,
    upstream: SocketAddr,
    admin: Option<SocketAddr>,
    extra: &str,
) -> String {
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\nshutdown_timeout = \"30s\"\n\
         [upstream]\nurl = \"http://{upstream}\"\n\
         [log]\nlevel = \"info\"\n"
    );
    if let Some(admin) = admin {
        text.push_str(&format!("[admin]\nlisten = \"{admin}\"\n"));
    }
    text.push_str(extra);
    text
}

/// A config file on a free port in front of a closed upstream port, for runs that must stop
/// before serving.
fn config_in_front_of_nothing(extra: &str) -> TempFile {
    let listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    TempFile::with_contents(
        "config.toml",
        config_text(listen, Upstream::closed_port(), None, extra).as_bytes(),
    )
}

/// The proxy binary, running. Killed when dropped.
struct Running {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    config: TempFile,
    log: TempFile,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Running {
    /// Starts the proxy in front of `upstream` with an admin listener; `extra` is appended to
    /// the config file.
    async fn start(upstream: SocketAddr, extra: &str) -> Running {
        Running::start_with(upstream, extra, &[], |text| text).await
    }

    /// [`Running::start`] with extra environment variables, and `edit` applied to the config
    /// text.
    async fn start_with(
        upstream: SocketAddr,
        extra: &str,
        env: &[(&str, &str)],
        edit: impl Fn(String) -> String,
    ) -> Running {
        // `free_port` lets a port go before linkpush binds it, and a test running beside may
        // take it meanwhile: then linkpush says so and exits, and it is started again on other
        // ports (bounded). Any other early exit fails the test.
        for _ in 0..PORT_ATTEMPTS {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let config = TempFile::with_contents(
                "config.toml",
                edit(config_text(addr, upstream, Some(admin), extra)).as_bytes(),
            );
            let log = TempFile::new("stderr.log");
            let log_file = std::fs::File::create(&log.path).expect("create log file");
            let child = linkpush()
                .args(["--config", config.path_str()])
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("spawn linkpush");
            let mut running = Running::spawned(child, addr, admin, config, log);
            match running.listening().await {
                Ok(()) => return running,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("linkpush exited before listening:\n{log}"),
            }
        }
        panic!("no free ports for linkpush in {PORT_ATTEMPTS} attempts");
    }

    /// A spawned linkpush, serving on `addr` with its admin listener on `admin` once it listens.
    fn spawned(
        child: tokio::process::Child,
        addr: SocketAddr,
        admin: SocketAddr,
        config: TempFile,
        log: TempFile,
    ) -> Running {
        let pid = child.id().expect("pid");
        Running {
            child,
            pid,
            addr,
            admin: Some(admin),
            config,
            log,
        }
    }

    /// [`Running::listening`], failing the test if linkpush exits first.
    async fn wait_listening(&mut self) {
        if let Err(log) = self.listening().await {
            panic!("linkpush exited before listening:\n{log}");
        }
    }

    /// Waits until the proxy (and its admin listener) accept connections: connection attempts
    /// with short pauses, bounded by [`START_TIMEOUT`]. `Err` with its log when it exited first.
    async fn listening(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut targets = vec![self.addr];
        targets.extend(self.admin);
        for target in targets {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(format!("({status})\n{}", self.log()));
                }
                if tokio::net::TcpStream::connect(target).await.is_ok() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "linkpush did not listen on {target} within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log.path).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `text` `n` times; for events the process reports
    /// only in its log.
    async fn wait_log(&self, text: &str, n: usize) {
        bounded(format!("{text:?} ×{n} in the log"), async {
            while self.log().matches(text).count() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// Rewrites the config file with `edit`, sends SIGHUP, and returns the log line that says
    /// "configuration reloaded" (bounded wait).
    async fn reload_with(&self, edit: impl FnOnce(String) -> String) -> String {
        let text = std::fs::read_to_string(&self.config.path).expect("read the config");
        std::fs::write(&self.config.path, edit(text)).expect("write the config");
        self.signal("HUP");
        self.wait_log("configuration reloaded", 1).await;
        let log = self.log();
        log.lines()
            .find(|l| l.contains("configuration reloaded"))
            .expect("the reload line")
            .to_owned()
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid);
    }

    async fn exited(&mut self) -> ExitStatus {
        bounded("linkpush to exit", self.child.wait())
            .await
            .expect("wait for linkpush")
    }

    /// Peak resident set size so far (`VmHWM` in /proc/PID/status), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        kib * 1024
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

// ===== Command line =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_prints_name_and_version() {
    let out = run(&["--version"]).await;

    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "linkpush 0.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_commands() {
    let out = run(&["--help"]).await;

    assert!(out.status.success(), "{out:?}");
    let help = stdout(&out);
    for word in ["check", "demo", "--config"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_effective_configuration_and_binds_nothing() {
    // The listen address is taken: `check` must not try to bind it.
    let taken = StdTcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().unwrap();
    let config = TempFile::with_contents(
        "config.toml",
        format!("[server]\nlisten = \"{listen}\"\n[upstream]\nurl = \"http://127.0.0.1:9000\"\n")
            .as_bytes(),
    );

    let out = run(&["check", "--config", config.path_str()]).await;

    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        format!("listen = \"{listen}\""),
        "max_concurrent_streams = 128".to_owned(),
        "idle_timeout = \"60s\"".to_owned(),
        "shutdown_delay = \"0s\"".to_owned(),
        "url = \"http://127.0.0.1:9000/\"".to_owned(),
        "lru_capacity = 256".to_owned(),
        "max_pushes_per_response = 16".to_owned(),
        "max_asset_bytes = \"2MiB\"".to_owned(),
        "routes = 10000".to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_toml_syntax_error_with_file_line_and_column() {
    let unclosed = TempFile::with_contents("bad.toml", b"[server\nlisten=");
    let doubled = TempFile::with_contents(
        "bad.toml",
        b"[server]\nlisten = \"127.0.0.1:1\"\nmax_concurrent_streams = = 5\n",
    );

    let first = run(&["check", "--config", unclosed.path_str()]).await;
    let second = run(&["check", "--config", doubled.path_str()]).await;

    let line = one_error_line(&first);
    assert!(
        line.contains(&format!("{}:1:", unclosed.path_str())),
        "file and line 1: {line}"
    );
    let line = one_error_line(&second);
    let at = format!("{}:3:", doubled.path_str());
    let column = line
        .split_once(&at)
        .and_then(|(_, rest)| rest.split(':').next())
        .and_then(|c| c.parse::<u32>().ok());
    assert!(column.is_some_and(|c| c > 0), "file:3:COL in {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_an_unknown_key_and_names_it() {
    let config = TempFile::with_contents("typo.toml", b"[server]\nlisen = \"127.0.0.1:1\"\n");

    let out = run(&["check", "--config", config.path_str()]).await;

    let line = one_error_line(&out);
    assert!(line.contains("lisen"), "{line}");
    assert!(line.contains(config.path_str()), "{line}");
}

fn missing_cert_config() -> TempFile {
    let listen = format!("127.0.0.1:{}", free_port());
    TempFile::with_contents(
        "tls.toml",
        format!(
            "[server]\nlisten = \"{listen}\"\n[server.tls]\ncert = \"/nonexistent/cert.pem\"\n\
             key = \"/nonexistent/key.pem\"\n"
        )
        .as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_certificate_is_named_by_check_and_by_run() {
    let config = missing_cert_config();

    let check = run(&["check", "--config", config.path_str()]).await;
    let start = run(&["--config", config.path_str()]).await;

    for out in [&check, &start] {
        let line = one_error_line(out);
        assert!(line.contains("/nonexistent/cert.pem"), "{line}");
    }
}

/// SPEC §1: a start-up error names the file *and the key*, so the operator knows which setting
/// to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_certificate_error_names_the_config_key() {
    let config = missing_cert_config();

    let out = run(&["check", "--config", config.path_str()]).await;

    let line = one_error_line(&out);
    assert!(line.contains("server.tls.cert"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_show_in_check() {
    let config = TempFile::with_contents(
        "config.toml",
        b"[upstream]\nurl = \"http://127.0.0.1:9000\"\n",
    );

    let out = run_with(
        &["check", "--config", config.path_str()],
        &[("LINKPUSH_UPSTREAM_URL", "http://10.9.8.7:1234")],
        None,
    )
    .await;

    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l == "url = \"http://10.9.8.7:1234/\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_environment_variable_is_an_error() {
    let config = TempFile::with_contents("config.toml", b"");

    let out = run_with(
        &["check", "--config", config.path_str()],
        &[("LINKPUSH_UPSTREAM_ULR", "http://10.9.8.7:1234")],
        None,
    )
    .await;

    let line = one_error_line(&out);
    assert!(line.contains("LINKPUSH_UPSTREAM_ULR"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_path_comes_from_linkpush_config_or_the_working_directory() {
    let dir = TempDir::new("cwd");
    let elsewhere =
        TempFile::with_contents("config.toml", b"[server]\nmax_concurrent_streams = 77\n");
    std::fs::write(
        dir.path.join("linkpush.toml"),
        b"[server]\nmax_concurrent_streams = 55\n",
    )
    .expect("write linkpush.toml");
    let empty = TempDir::new("empty");

    let from_env = run_with(
        &["check"],
        &[("LINKPUSH_CONFIG", elsewhere.path_str())],
        Some(&empty.path),
    )
    .await;
    let from_cwd = run_with(&["check"], &[], Some(&dir.path)).await;
    let missing = run_with(&["check"], &[], Some(&empty.path)).await;

    assert!(from_env.status.success(), "{}", stderr(&from_env));
    assert!(stdout(&from_env).contains("max_concurrent_streams = 77"));
    assert!(from_cwd.status.success(), "{}", stderr(&from_cwd));
    assert!(stdout(&from_cwd).contains("max_concurrent_streams = 55"));
    let line = one_error_line(&missing);
    assert!(line.contains("linkpush.toml"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_is_one_line_naming_it() {
    let taken = StdTcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap();
    let config = TempFile::with_contents(
        "config.toml",
        config_text(addr, Upstream::closed_port(), None, "").as_bytes(),
    );

    let out = run(&["--config", config.path_str()]).await;

    let line = one_error_line(&out);
    assert!(line.contains(&addr.to_string()), "{line}");
}

// ===== Signals =====

/// `/healthz`'s first answer other than 200 (bounded): what it says once draining is announced.
async fn healthz_once_draining(admin: SocketAddr) -> u16 {
    bounded("/healthz to stop saying 200", async {
        loop {
            let (status, _) = admin_get(admin, "/healthz").await;
            if status != 200 {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Waits (bounded) until `addr` refuses connections.
async fn listener_closed(addr: SocketAddr) {
    bounded("the listener to stop accepting", async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_in_flight_request_then_exits_0() {
    let gate = Gate::new();
    let size = 300_000;
    let up = Upstream::new()
        .route("/slow", Reply::generated(size).hold(gate.clone()))
        .start()
        .await;
    let mut proxy = Running::start(up.addr(), "").await;
    let admin = proxy.admin.unwrap();
    let addr = proxy.addr;
    let request = tokio::spawn(async move {
        let opts = H2Options {
            enable_push: false,
            ..H2Options::default()
        };
        let mut client = h2_connect(addr, &opts).await;
        let ex = h2_get(&mut client, "/slow", &[]).await;
        (ex, client.frames())
    });
    assert!(up.wait_for_requests("/slow", 1, TIMEOUT).await);
    assert_eq!(admin_get(admin, "/healthz").await.0, 200);

    proxy.signal("TERM");

    assert_eq!(healthz_once_draining(admin).await, 503);
    // The listener closes once the accept loop sees the signal.
    listener_closed(addr).await;
    gate.open();
    let (ex, frames) = bounded("the in-flight request", request)
        .await
        .expect("request task");
    assert_eq!(ex.status, StatusCode::OK);
    assert!(ex.error.is_none(), "{ex:?}");
    assert_eq!(sha256_hex(&ex.body), generated_sha256(size));
    assert!(frames.iter().any(|f| f.kind == "GOAWAY"), "{frames:?}");
    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_pushes_of_in_flight_pages_finish_then_exits_0() {
    let pages = Gate::new();
    let assets = Gate::new();
    let mut up = Upstream::new().fallback(Reply::ok("asset").hold(assets.clone()));
    // Pages are held only until the client has sent all five requests.
    for i in 0..5 {
        up = up.route(
            &format!("/p{i}"),
            Reply::html("<p>page</p>")
                .link(&format!("</p{i}/a.css>; rel=preload; as=style"))
                .link(&format!("</p{i}/b.js>; rel=preload; as=script"))
                .hold(pages.clone()),
        );
    }
    let up = up.start().await;
    let mut proxy = Running::start(up.addr(), "").await;
    let addr = proxy.addr;
    let mut client = h2_connect(addr, &H2Options::default()).await;
    let tap = client.tap();
    let loads = tokio::spawn(async move {
        let paths: Vec<String> = (0..5).map(|i| format!("/p{i}")).collect();
        let pages = h2_get_many(&mut client, &paths).await;
        (pages, client.frames())
    });
    for i in 0..5 {
        assert!(up.wait_for_requests(&format!("/p{i}"), 1, TIMEOUT).await);
    }

    // The pages are answered and their pushes promised; the pushed responses wait for the
    // upstream. Then SIGTERM: no new promises (RFC 9113 §6.8), but the promised streams must
    // still be completed before the connection closes.
    pages.open();
    for i in 0..5 {
        let id = 2 * i + 1;
        tap.wait_for(&format!("page stream {id} to end"), |f| {
            f.stream_id == id && f.end_stream()
        })
        .await;
    }
    assert_eq!(
        tap.frames()
            .iter()
            .filter(|f| f.kind == "PUSH_PROMISE")
            .count(),
        10
    );
    proxy.signal("TERM");
    tap.wait_for("the final GOAWAY", |f| {
        f.kind == "GOAWAY" && f.last_stream_id != Some(0x7fff_ffff)
    })
    .await;
    assets.open();

    let (pages, frames) = bounded("the page loads", loads).await.expect("loads");
    let promised: Vec<u32> = frames.iter().filter_map(|f| f.promised_stream_id).collect();
    assert_eq!(promised.len(), 10, "{frames:?}");
    for id in promised {
        assert!(
            frames.iter().any(|f| f.stream_id == id && f.end_stream()),
            "promised stream {id} left open: {frames:?}"
        );
    }
    for ex in &pages {
        assert!(ex.pushes.iter().all(|p| p.completed()), "{:?}", ex.pushes);
    }
    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_when_idle_exits_0() {
    let up = Upstream::new().start().await;
    let mut proxy = Running::start(up.addr(), "").await;

    proxy.signal("INT");

    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", proxy.log());
}

/// The signal handlers exist before the first connection can succeed: a SIGTERM sent as soon
/// as the listeners accept drains and exits 0. The race is timing-dependent, so it is run 30
/// times: with the handlers installed after binding, a start died of the signal about one time
/// in seven (a start-and-signal loop, 200 starts), and this test failed in each of 3 runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_as_soon_as_the_listeners_accept_exits_0() {
    let up = Upstream::new().start().await;
    for _ in 0..30 {
        let mut proxy = Running::start(up.addr(), "").await;
        proxy.signal("TERM");
        let status = proxy.exited().await;
        assert_eq!(status.code(), Some(0), "{status}:\n{}", proxy.log());
    }
}

fn page_with_preload(css: &str) -> Reply {
    Reply::html("<p>page</p>").link(&format!("<{css}>; rel=preload; as=style"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_new_file_to_new_connections() {
    let up = Upstream::new()
        .route("/", page_with_preload("/app.css"))
        .route("/other", page_with_preload("/other.css"))
        .route("/app.css", Reply::ok("body{}"))
        .route("/other.css", Reply::ok("p{}"))
        .start()
        .await;
    let proxy = Running::start(up.addr(), "[push]\nenabled = true\n").await;
    let mut before = h2_connect(proxy.addr, &H2Options::default()).await;
    let pushed = h2_get(&mut before, "/", &[]).await;
    assert_eq!(pushed.pushed_paths(), ["/app.css"], "{pushed:?}");

    let text = std::fs::read_to_string(&proxy.config.path).unwrap();
    std::fs::write(
        &proxy.config.path,
        text.replace("enabled = true", "enabled = false"),
    )
    .unwrap();
    proxy.signal("HUP");
    proxy.wait_log("configuration reloaded", 1).await;

    let mut after = h2_connect(proxy.addr, &H2Options::default()).await;
    let not_pushed = h2_get(&mut after, "/", &[]).await;
    let old_connection = h2_get(&mut before, "/other", &[]).await;

    assert_eq!(not_pushed.status, StatusCode::OK);
    assert!(not_pushed.pushes.is_empty(), "{not_pushed:?}");
    assert!(
        !after.frames().iter().any(|f| f.kind == "PUSH_PROMISE"),
        "no PUSH_PROMISE on a connection opened after the reload"
    );
    assert_eq!(
        old_connection.pushed_paths(),
        ["/other.css"],
        "a connection keeps the configuration it started with"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_an_invalid_file_keeps_the_running_configuration() {
    let up = Upstream::new()
        .route("/", page_with_preload("/app.css"))
        .route("/app.css", Reply::ok("body{}"))
        .start()
        .await;
    let proxy = Running::start(up.addr(), "[push]\nenabled = true\n").await;

    std::fs::write(&proxy.config.path, b"[server\nthis is = = not toml").unwrap();
    proxy.signal("HUP");
    proxy.wait_log("reload failed", 1).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let ex = h2_get(&mut client, "/", &[]).await;

    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(ex.pushed_paths(), ["/app.css"], "push is still on: {ex:?}");
    assert!(ex.push("/app.css").completed());
    assert!(
        proxy.log().contains(proxy.config.path_str()),
        "the log names the file:\n{}",
        proxy.log()
    );
}

// ===== Kubernetes =====

/// What Kubernetes injects into every pod of a namespace that has a Service named `linkpush`
/// (ClusterIP 10.0.0.5, ports `https` 8443 and `admin` 9901): kubernetes/kubernetes#35189.
const SERVICE_LINKS: &[(&str, &str)] = &[
    ("LINKPUSH_SERVICE_HOST", "10.0.0.5"),
    ("LINKPUSH_SERVICE_PORT", "8443"),
    ("LINKPUSH_SERVICE_PORT_HTTPS", "8443"),
    ("LINKPUSH_SERVICE_PORT_ADMIN", "9901"),
    ("LINKPUSH_PORT", "tcp://10.0.0.5:8443"),
    ("LINKPUSH_PORT_8443_TCP", "tcp://10.0.0.5:8443"),
    ("LINKPUSH_PORT_8443_TCP_PROTO", "tcp"),
    ("LINKPUSH_PORT_8443_TCP_PORT", "8443"),
    ("LINKPUSH_PORT_8443_TCP_ADDR", "10.0.0.5"),
    ("LINKPUSH_PORT_9901_TCP", "tcp://10.0.0.5:9901"),
    ("LINKPUSH_PORT_9901_TCP_PROTO", "tcp"),
    ("LINKPUSH_PORT_9901_TCP_PORT", "9901"),
    ("LINKPUSH_PORT_9901_TCP_ADDR", "10.0.0.5"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_next_to_a_service_named_linkpush_starts_and_serves() {
    let up = Upstream::new().route("/", Reply::ok("hello")).start().await;
    let mut env = SERVICE_LINKS.to_vec();
    env.push(("LINKPUSH_LOG_LEVEL", "linkpush=debug"));

    let proxy = Running::start_with(up.addr(), "", &env, |text| text).await;
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let ex = h2_get(&mut client, "/", &[]).await;

    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(admin_get(proxy.admin.unwrap(), "/healthz").await.0, 200);
    // Each one is skipped and said so at debug level.
    proxy
        .wait_log("environment variable ignored", SERVICE_LINKS.len())
        .await;
    assert!(
        proxy.log().contains("LINKPUSH_PORT_8443_TCP_ADDR"),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_in_a_real_section_is_refused_next_to_service_links() {
    let config = config_in_front_of_nothing("");
    let mut env = SERVICE_LINKS.to_vec();
    env.push(("LINKPUSH_UPSTREAM_URLL", "http://10.1.1.1:8080"));

    let check = run_with(&["check", "--config", config.path_str()], &env, None).await;
    let start = run_with(&["--config", config.path_str()], &env, None).await;

    for out in [&check, &start] {
        let line = one_error_line(out);
        assert!(
            line.contains(
                "LINKPUSH_UPSTREAM_URLL: not a linkpush setting (did you mean LINKPUSH_UPSTREAM_URL?)"
            ),
            "{line}"
        );
    }
}

// ===== Certificates =====

/// A self-signed certificate and its key, as PEM files.
fn cert_and_key() -> (TempFile, TempFile) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a certificate");
    (
        TempFile::with_contents("cert.pem", generated.cert.pem().as_bytes()),
        TempFile::with_contents("key.pem", generated.signing_key.serialize_pem().as_bytes()),
    )
}

fn tls_table(cert: &TempFile, key: &TempFile) -> String {
    format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.path_str(),
        key.path_str()
    )
}

/// The message a certificate and a key that do not belong together get.
fn mismatch_message(cert: &TempFile, key: &TempFile) -> String {
    format!(
        "server.tls: the private key {} does not match the certificate {}",
        key.path_str(),
        cert.path_str()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_match_the_certificate_is_refused_by_check_and_by_run() {
    let (cert, _) = cert_and_key();
    let (_, other_key) = cert_and_key();
    let config = config_in_front_of_nothing(&tls_table(&cert, &other_key));

    let check = run(&["check", "--config", config.path_str()]).await;
    let start = run(&["--config", config.path_str()]).await;

    for out in [&check, &start] {
        let line = one_error_line(out);
        assert!(
            line.contains(&mismatch_message(&cert, &other_key)),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_key_is_named_as_such() {
    let (cert, _) = cert_and_key();
    let key = TempFile::with_contents(
        "key.pem",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let config = config_in_front_of_nothing(&tls_table(&cert, &key));

    let out = run(&["check", "--config", config.path_str()]).await;

    let line = one_error_line(&out);
    assert!(
        line.contains(&format!(
            "{}: server.tls.key: is an encrypted private key; linkpush needs an unencrypted \
             PKCS#8, PKCS#1 or SEC1 key",
            key.path_str()
        )),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_mismatched_key_keeps_the_running_certificate() {
    let up = Upstream::new().route("/", Reply::ok("hello")).start().await;
    let (cert, key) = cert_and_key();
    let (_, other_key) = cert_and_key();
    let proxy = Running::start(up.addr(), &tls_table(&cert, &key)).await;
    assert_eq!(
        tls_alpn(proxy.addr, &[b"h2"]).await.expect("handshake"),
        Some(b"h2".to_vec())
    );

    std::fs::copy(&other_key.path, &key.path).expect("replace the key");
    proxy.signal("HUP");
    proxy.wait_log("reload failed", 1).await;

    assert!(
        proxy.log().contains(&mismatch_message(&cert, &key)),
        "{}",
        proxy.log()
    );
    // The client checks the server's signature: a handshake only succeeds with the old pair.
    let opts = H2Options {
        tls: true,
        ..H2Options::default()
    };
    let mut client = h2_connect(proxy.addr, &opts).await;
    let ex = h2_get(&mut client, "/", &[]).await;
    assert_eq!(ex.status, StatusCode::OK);
    assert!(!proxy.log().contains("configuration reloaded"));
}

// ===== Reload: what applies and what needs a restart =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_names_the_settings_that_need_a_restart() {
    let up = Upstream::new().route("/", Reply::ok("hello")).start().await;
    let proxy = Running::start(up.addr(), "").await;
    let moved: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let moved_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();

    let line = proxy
        .reload_with(|text| {
            text.replace(&proxy.addr.to_string(), &moved.to_string())
                .replace(&proxy.admin.unwrap().to_string(), &moved_admin.to_string())
        })
        .await;

    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(
            "configuration reloaded, except settings that keep their running values until a \
             restart: server.listen, admin.listen"
        ),
        "{line}"
    );
    // They did keep their running values.
    assert_eq!(admin_get(proxy.admin.unwrap(), "/healthz").await.0, 200);
    assert!(tokio::net::TcpStream::connect(moved).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_log_level_and_format() {
    let up = Upstream::new().route("/", Reply::ok("hello")).start().await;
    let quiet = |text: String| text.replace("level = \"info\"", "level = \"warn\"");
    let proxy = Running::start_with(up.addr(), "", &[], quiet).await;
    // Bound before the reload: at warn, the info lines at start are not written.
    assert!(!proxy.log().contains("listening"), "{}", proxy.log());
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    assert_eq!(
        h2_get(&mut client, "/?at-warn", &[]).await.status,
        StatusCode::OK
    );

    let line = proxy
        .reload_with(|text| text.replace("level = \"warn\"", "level = \"info\"\nformat = \"json\""))
        .await;

    assert!(
        line.starts_with('{') && line.contains("\"level\":\"INFO\""),
        "an info line, in JSON: {line}"
    );
    // The access log follows the level: on from the reload, and off before it (lines are
    // written in order, so the first request's would be there by now).
    assert_eq!(
        h2_get(&mut client, "/?at-info", &[]).await.status,
        StatusCode::OK
    );
    proxy.wait_log("\"path\":\"/?at-info\"", 1).await;
    assert!(!proxy.log().contains("at-warn"), "{}", proxy.log());
}

// ===== Shutdown delay =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_shutdown_delay_keeps_accepting_while_healthz_says_503() {
    let up = Upstream::new().route("/", Reply::ok("hello")).start().await;
    let delay = [("LINKPUSH_SERVER_SHUTDOWN_DELAY", "5s")];
    let mut proxy = Running::start_with(up.addr(), "", &delay, |text| text).await;
    let admin = proxy.admin.unwrap();

    proxy.signal("TERM");
    assert_eq!(healthz_once_draining(admin).await, 503);
    // A connection opened during the delay is accepted and served.
    let mut client = h2_connect(proxy.addr, &H2Options::default()).await;
    let ex = h2_get(&mut client, "/", &[]).await;
    assert_eq!(ex.status, StatusCode::OK);
    assert!(
        !proxy.log().contains("stopped"),
        "still running during the delay:\n{}",
        proxy.log()
    );
    drop(client);

    // After the delay, the listener closes and the process exits 0.
    listener_closed(proxy.addr).await;
    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", proxy.log());
    let log = proxy.log();
    assert!(log.contains("draining announced"), "{log}");
    assert!(!log.contains("shutdown delay cut short"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cuts_the_shutdown_delay_short() {
    let up = Upstream::new().start().await;
    let delay = [("LINKPUSH_SERVER_SHUTDOWN_DELAY", "10m")];
    let mut proxy = Running::start_with(up.addr(), "", &delay, |text| text).await;

    proxy.signal("TERM");
    proxy.wait_log("draining announced", 1).await;
    proxy.signal("TERM");

    let status = proxy.exited().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", proxy.log());
    assert!(proxy.log().contains("shutdown delay cut short"));
}

// ===== Demo =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_metrics_on_its_admin_listener_and_stops_on_sigint() {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = TempFile::new("demo.log");
    let out = TempFile::new("demo.out");
    let child = linkpush()
        .args([
            "demo",
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
        ])
        .stdout(std::fs::File::create(&out.path).expect("create stdout file"))
        .stderr(std::fs::File::create(&log.path).expect("create log file"))
        .spawn()
        .expect("spawn linkpush demo");
    let mut demo = Running::spawned(child, listen, admin, TempFile::new("unused.toml"), log);
    demo.wait_listening().await;

    let mut client = h2_connect(
        listen,
        &H2Options {
            tls: true,
            ..H2Options::default()
        },
    )
    .await;
    let ex = h2_get(&mut client, "/", &[]).await;
    assert_eq!(ex.status, StatusCode::OK);
    // The request is counted when its stream is done, a moment after the client saw it.
    let counted = "linkpush_requests_total{protocol=\"h2\",status=\"200\"} 1";
    bounded("the request in /metrics", async {
        loop {
            let (status, metrics) = admin_get(admin, "/metrics").await;
            assert_eq!(status, 200);
            if metrics.lines().any(|l| l == counted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let printed = std::fs::read_to_string(&out.path).unwrap_or_default();
    assert!(
        printed.contains(&format!("curl http://{admin}/metrics")),
        "{printed}"
    );
    drop(client);

    demo.signal("INT");
    let status = demo.exited().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", demo.log());
}

// ===== Memory =====

/// Downloads `url` with curl (`extra` chooses the protocol) to /dev/null; returns the bytes
/// received and how long it took.
async fn download(url: &str, extra: &str) -> (u64, Duration) {
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(150),
        tokio::process::Command::new("curl")
            .args([
                "-sS",
                extra,
                "--max-time",
                "120",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
                url,
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl finished within 150 s")
    .expect("run curl");
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {extra}: {written} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, size) = written.split_once(' ').expect("curl -w output");
    assert_eq!(code, "200");
    (size.parse().expect("size_download"), started.elapsed())
}

const BIG: u64 = 200 * 1024 * 1024;
const RSS_BOUND: u64 = 100 * 1024 * 1024;

async fn big_download_stays_bounded(extra: &str) {
    let up = Upstream::new()
        .route("/big", Reply::generated(BIG))
        .start()
        .await;
    let proxy = Running::start(up.addr(), "").await;

    let (bytes, took) = download(&proxy.url("/big"), extra).await;

    assert_eq!(bytes, BIG);
    let peak = proxy.peak_rss();
    eprintln!(
        "{extra}: 200 MiB in {took:?} ({:.0} MB/s), proxy VmHWM {} KiB",
        BIG as f64 / took.as_secs_f64() / 1e6,
        peak / 1024
    );
    assert!(
        peak < RSS_BOUND,
        "peak RSS {} MiB after a 200 MiB download",
        peak / 1024 / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_h2c_download_keeps_the_proxy_under_100_mib() {
    big_download_stays_bounded("--http2-prior-knowledge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_http1_download_keeps_the_proxy_under_100_mib() {
    big_download_stays_bounded("--http1.1").await;
}

// ===== healthcheck (the container's HEALTHCHECK) =====

/// `linkpush healthcheck` with the running proxy's config file (which names the admin listener).
async fn healthcheck(proxy: &Running) -> Output {
    run(&["healthcheck", "--config", proxy.config.path_str()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_while_serving_and_1_while_draining() {
    let gate = Gate::new();
    let up = Upstream::new()
        .route("/slow", Reply::ok("done").hold(gate.clone()))
        .start()
        .await;
    let mut proxy = Running::start(up.addr(), "").await;
    let url = proxy.url("/slow");
    // An in-flight request keeps the proxy draining (shutdown_timeout = 30s) after SIGTERM.
    let request = tokio::spawn(async move { curl(&["-sS", "--max-time", "60", &url]).await });
    assert!(up.wait_for_requests("/slow", 1, TIMEOUT).await);

    let serving = healthcheck(&proxy).await;
    proxy.signal("TERM");
    let admin = proxy.admin.unwrap();
    bounded("/healthz to say 503", async {
        while admin_get(admin, "/healthz").await.0 != 503 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let draining = healthcheck(&proxy).await;
    gate.open();

    assert_eq!(serving.status.code(), Some(0), "{}", stderr(&serving));
    assert!(stderr(&serving).contains("healthy"), "{}", stderr(&serving));
    let line = one_error_line(&draining);
    assert_eq!(draining.status.code(), Some(1));
    assert!(line.contains("503"), "{line}");
    assert!(line.contains(&admin.to_string()), "{line}");
    let done = bounded("the in-flight request", request).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout), "done");
    assert_eq!(proxy.exited().await.code(), Some(0), "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_1_when_nothing_listens() {
    let addr = format!("127.0.0.1:{}", free_port());

    let out = run(&["healthcheck", "--addr", &addr, "--timeout", "2s"]).await;

    let line = one_error_line(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(line.contains("cannot connect"), "{line}");
    assert!(line.contains(&addr), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_gives_up_on_a_silent_listener_within_its_timeout() {
    // Accepts (the kernel completes the handshake) but never answers.
    let silent = StdTcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().unwrap().to_string();

    let out = run(&["healthcheck", "--addr", &addr, "--timeout", "300ms"]).await;

    let line = one_error_line(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(line.contains("no answer"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_without_an_admin_listener_says_so() {
    let config = TempFile::with_contents("config.toml", b"[server]\nlisten = \"127.0.0.1:1\"\n");

    let out = run(&["healthcheck", "--config", config.path_str()]).await;

    let line = one_error_line(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(line.contains("[admin]"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_queries_a_wildcard_admin_bind_on_loopback() {
    let port = free_port();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let wildcard: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    let config = TempFile::with_contents(
        "config.toml",
        config_text(listen, Upstream::closed_port(), Some(wildcard), "").as_bytes(),
    );
    let mut child = linkpush()
        .args(["--config", config.path_str()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn linkpush");
    let loopback = format!("127.0.0.1:{port}");
    bounded("the wildcard admin listener", async {
        while tokio::net::TcpStream::connect(&loopback).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let out = run(&["healthcheck", "--config", config.path_str()]).await;
    let _ = child.start_kill();

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains(&loopback), "{}", stderr(&out));
}

// ===== h2spec (RFC 9113 / RFC 7541 conformance) =====

/// The h2spec binary: `$H2SPEC` (scripts/test.sh builds it and sets this), else built with
/// `shared/tools/h2spec/build.sh` beside the repository. `None` when neither is available; the
/// caller then prints a SKIP line (scripts/test.sh prints its own, louder one).
fn h2spec_binary() -> Option<std::path::PathBuf> {
    static BIN: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("H2SPEC") {
            return Some(path.into());
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // `../shared` in CI; `../../shared` from a worktree under wt/.
        let build = ["../shared", "../../shared"]
            .iter()
            .map(|dir| root.join(dir).join("tools/h2spec/build.sh"))
            .find(|p| p.exists())?;
        let out = std::process::Command::new("bash")
            .arg(&build)
            .output()
            .ok()?;
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()?
            .trim()
            .to_string();
        let path = std::path::PathBuf::from(path);
        (out.status.success() && path.exists()).then_some(path)
    })
    .clone()
}

/// The only case allowed to fail, on h2c only: it sends an invalid connection preface to the
/// cleartext port, which serves HTTP/1.1 and h2c (prior knowledge) side by side, so the bytes
/// are answered as a malformed HTTP/1.1 request (400, close) instead of an HTTP/2 GOAWAY.
const H2C_BAD_PREFACE_CASE: &str = "Sends invalid connection preface";

/// Runs all of h2spec against the built binary in front of a page with preload links, and
/// asserts every case passes. Returns the summary line.
/// The four h2spec runs take turns. Several of its cases write frames back to back and expect
/// the server to have read them all before it answers (5.1 #9: HEADERS, RST_STREAM, HEADERS;
/// 6.9.1 #3: HEADERS, then two WINDOW_UPDATEs); on a saturated 2-core machine (four runs at
/// once beside the rest of this file) the server sometimes answers in between, and h2spec reads
/// that answer as the failure. Seen twice in ~20 loaded runs, never alone.
static H2SPEC_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn h2spec_run(tls: bool, push: bool) {
    let _turn = H2SPEC_TURN.lock().await;
    let Some(h2spec) = h2spec_binary() else {
        // Straight to stderr, past the harness's capture: scripts/test.sh counts `SKIP:` lines
        // as skipped, not passed.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: h2spec (tls={tls}, push={push}): h2spec is not available (set H2SPEC or provide ../shared/tools/h2spec/build.sh)"
        );
        return;
    };
    // h2spec requests `/`: a page with preload links, so with push on every h2spec request gets
    // PUSH_PROMISEs. The pushed assets' upstream never answers: pushed HEADERS/DATA would be
    // read by h2spec as the answer to its own request (it reads the first HEADERS/DATA on any
    // stream), and a learned push may legitimately precede its page while the page's upstream
    // has not answered (docs/push-lifecycle.md). Pushed responses are checked by tests/push.rs.
    let up = Upstream::new()
        .route(
            "/",
            Reply::html("<!doctype html><title>h2spec</title><p>a page with preloads</p>")
                .link("</h2spec/a.css>; rel=preload; as=style")
                .link("</h2spec/b.js>; rel=preload; as=script"),
        )
        .fallback(Reply::ok("never").hold(Gate::new()))
        .start()
        .await;
    let dir = TempDir::new("h2spec");
    let mut extra = format!("[push]\nenabled = {push}\n");
    if tls {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("generate certificate");
        let (cert_path, key_path) = (dir.path.join("cert.pem"), dir.path.join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
        extra.push_str(&format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert_path.display(),
            key_path.display()
        ));
    }
    let proxy = Running::start(up.addr(), &extra).await;
    let mut cmd = tokio::process::Command::new(&h2spec);
    cmd.args(["-h", "127.0.0.1", "-p", &proxy.addr.port().to_string()]);
    if tls {
        cmd.args(["-t", "-k"]);
    }
    let out = bounded("h2spec", cmd.kill_on_drop(true).output())
        .await
        .expect("run h2spec");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let summary = report
        .lines()
        .rev()
        .find(|l| l.contains(" tests, "))
        .unwrap_or_else(|| panic!("no h2spec summary:\n{report}\n{}", stderr(&out)))
        .trim()
        .to_string();
    let failed: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("× "))
        .collect();
    let allowed = |case: &&str| !tls && case.ends_with(H2C_BAD_PREFACE_CASE);
    let unexpected: Vec<&&str> = failed.iter().filter(|c| !allowed(c)).collect();
    println!("h2spec tls={tls} push={push}: {summary}; failed: {failed:?}");
    assert!(
        summary.starts_with("146 tests,") && unexpected.is_empty(),
        "h2spec tls={tls} push={push}: {summary}, unexpected failures {unexpected:?}\n{report}\n{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_tls_push_on() {
    h2spec_run(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_tls_push_off() {
    h2spec_run(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_h2c_push_on() {
    h2spec_run(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_h2c_push_off() {
    h2spec_run(false, false).await;
}
