//! The container image (issue 10), built and run with podman.
//!
//! No registry is reachable, so the static binary is built here, as the Dockerfile's build stage
//! builds it, and `podman build --build-context build=DIR` puts it where the final stage's
//! `COPY --from=build` looks: only the `FROM scratch` stage is built, and nothing is pulled. The
//! image then runs as it would in a restricted pod (its own numeric user, read-only root file
//! system, no capabilities), certificates mounted where its config names them, and the test
//! reaches it only through its published ports: `/healthz` on the admin port, a page with pushes
//! on the proxy port, then SIGTERM and exit status 0.
//!
//! The upstream is the scripted test upstream, on the host. Bound to 0.0.0.0, it is reached from
//! podman's default bridge network as `host.containers.internal`, the name podman writes into
//! the container's /etc/hosts; so this also shows the static binary resolving a host name with
//! no NSS libraries in the image (a compose file's `http://app:8080` needs that). `--network
//! host` would reach 127.0.0.1 directly, but publishes nothing, and the image's fixed ports
//! would collide between concurrent runs.
//!
//! Where podman cannot run, the test prints `SKIP: …` straight to stderr (past the test
//! harness's output capture) and returns; scripts/test.sh counts those lines in its summary.

mod support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use linkpush::config::Config;
use support::{client::*, proxy::admin_get, upstream::*};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// What this sandbox's podman needs on `run` (issue 10): the runc runtime, and ulimits within
/// what the sandbox allows.
const RUN_FLAGS: &[&str] = &[
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];
/// One podman command (build, run, inspect, stop); generous, the machine is shared.
const PODMAN_TIMEOUT: Duration = Duration::from_secs(180);
/// The static build when nothing is cached: about 1.5 min on two loaded cores.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long the container may take to answer `/healthz` once started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The image holds one stripped static binary (about 9 MB) and a config file. Debug info
/// (37 MB) would blow this.
const MAX_IMAGE_BYTES: u64 = 20_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_serves_pushes_through_its_published_ports_and_stops_on_sigterm() {
    let started = Instant::now();
    if let Some(why) = podman_unavailable().await {
        skip(&why);
        return;
    }
    let image = ImageConfig::load();
    let binary = build_static_binary().await;
    let sections = elf_sections(&std::fs::read(&binary).expect("read the binary"));
    assert!(
        !sections.iter().any(|s| s.starts_with(".debug")),
        "debug info: {sections:?}"
    );
    assert!(
        !sections.iter().any(|s| s == ".interp"),
        "dynamically linked: {sections:?}"
    );
    let mut cleanup = Cleanup::default();
    let tag = build_image(&binary, &mut cleanup).await;
    let inspect = |format: &'static str| image_inspect(&tag, format);
    assert_eq!(inspect("{{.Config.User}}").await, "10001:10001");
    assert_eq!(
        inspect("{{json .Config.Healthcheck.Test}}").await,
        r#"["CMD","/linkpush","healthcheck"]"#
    );
    assert_eq!(
        inspect("{{index .Labels \"org.opencontainers.image.title\"}}").await,
        "linkpush"
    );
    let size: u64 = inspect("{{.Size}}").await.parse().expect("image size");
    assert!(size < MAX_IMAGE_BYTES, "image of {size} bytes");

    let up = Upstream::new()
        .route(
            "/",
            Reply::html("<p>page</p>")
                .link("</app.css>; rel=preload; as=style")
                .link("</app.js>; rel=preload; as=script"),
        )
        .route("/app.css", Reply::ok("body{}"))
        .route("/app.js", Reply::ok("go()"))
        .start_on("0.0.0.0:0")
        .await;
    let certs = Scratch::new("certs");
    write_self_signed(&certs.path);
    let name = run_container(&tag, &image, &certs.path, up.addr().port(), &mut cleanup).await;
    let admin = published(&name, image.admin_port).await;
    let proxy = published(&name, image.proxy_port).await;

    wait_healthy(&name, admin).await;
    let healthz = admin_get(admin, "/healthz").await;
    let user = ok(&podman(&["top", &name, "user"]).await, "podman top");
    let healthcheck = podman(&["healthcheck", "run", &name]).await;
    let tls = H2Options {
        tls: true,
        ..H2Options::default()
    };
    let mut client = h2_connect(proxy, &tls).await;
    let page = h2_get(&mut client, "/", &[]).await;
    drop(client);
    let kill = podman(&["kill", "--signal", "TERM", &name]).await;
    ok(&kill, "podman kill");
    let exit = ok(&podman(&["wait", &name]).await, "podman wait");
    let logs = podman(&["logs", &name]).await;
    let logs = String::from_utf8_lossy(&logs.stderr).into_owned();

    assert_eq!(healthz, (200, "ok\n".to_owned()));
    assert_eq!(user.lines().last(), Some("10001"), "{user}");
    assert!(
        healthcheck.status.success(),
        "podman healthcheck run: {}",
        text(&healthcheck)
    );
    assert_eq!(page.status, StatusCode::OK, "{page:?}\n{logs}");
    assert_eq!(page.body, "<p>page</p>");
    assert_eq!(page.pushed_paths(), ["/app.css", "/app.js"], "{page:?}");
    for (path, body) in [("/app.css", "body{}"), ("/app.js", "go()")] {
        let push = page.push(path);
        assert!(push.completed(), "{push:?}");
        assert_eq!(push.body, body);
    }
    assert_eq!(exit, "0", "exit status after SIGTERM:\n{logs}");
    eprintln!(
        "container: image {:.1} MB, built and run in {:.0?}",
        size as f64 / 1e6,
        started.elapsed()
    );
}

/// Builds the image with `binary` standing in for the build stage; returns its tag.
async fn build_image(binary: &Path, cleanup: &mut Cleanup) -> String {
    let tag = format!("localhost/linkpush-test-{}:latest", std::process::id());
    let context = Scratch::new("build-context");
    std::fs::copy(binary, context.path.join("linkpush")).expect("stage the binary");
    let build_context = format!("build={}", context.path.display());
    cleanup.image = Some(tag.clone());
    let build = podman(&[
        "build",
        // The OCI image format has no HEALTHCHECK field.
        "--format",
        "docker",
        // Nothing may come from a registry: the final stage is FROM scratch.
        "--pull=never",
        // One image, no intermediate ones to clean up.
        "--layers=false",
        "--build-context",
        &build_context,
        "-t",
        &tag,
        ROOT,
    ])
    .await;
    ok(&build, "podman build");
    tag
}

async fn image_inspect(tag: &str, format: &str) -> String {
    let out = podman(&["image", "inspect", "--format", format, tag]).await;
    ok(&out, "podman image inspect")
}

/// Starts the image as Kubernetes' "restricted" standard runs it (deploy/kubernetes.yaml):
/// read-only root file system, no capabilities, no privilege escalation; certificates mounted
/// where the image's config names them, both ports published on 127.0.0.1, the upstream on the
/// host. Returns the container's name.
async fn run_container(
    tag: &str,
    image: &ImageConfig,
    certs: &Path,
    upstream_port: u16,
    cleanup: &mut Cleanup,
) -> String {
    let name = format!("linkpush-test-{}", std::process::id());
    let upstream = format!("LINKPUSH_UPSTREAM_URL=http://host.containers.internal:{upstream_port}");
    let mount = format!("{}:{}:ro", certs.display(), image.cert_dir.display());
    let publish_proxy = format!("127.0.0.1::{}", image.proxy_port);
    let publish_admin = format!("127.0.0.1::{}", image.admin_port);
    let mut run = vec!["run", "--detach", "--name", &name];
    run.extend(RUN_FLAGS);
    run.extend([
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        &mount,
        "--env",
        &upstream,
        "--publish",
        &publish_proxy,
        "--publish",
        &publish_admin,
        tag,
    ]);
    cleanup.container = Some(name.clone());
    ok(&podman(&run).await, "podman run");
    name
}

// ===== podman =====

/// Why podman cannot run here, or `None` when it can.
async fn podman_unavailable() -> Option<String> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Some("the static build needs a *-linux-gnu host".to_owned());
    }
    const INSTALL: &str = "bash scripts/test.sh installs podman and runc with apt-get when root";
    for (program, arg) in [("runc", "--version"), ("podman", "info")] {
        let out = tokio::process::Command::new(program)
            .arg(arg)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(PODMAN_TIMEOUT, out).await {
            Err(_) => return Some(format!("`{program} {arg}` did not answer")),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(format!("{program} is not installed ({INSTALL})"));
            }
            Ok(Err(e)) => return Some(format!("cannot run {program}: {e}")),
            Ok(Ok(out)) if !out.status.success() => {
                return Some(format!("`{program} {arg}` fails: {}", text(&out).trim()));
            }
            Ok(Ok(_)) => {}
        }
    }
    None
}

/// Says loudly that the test did not run. Written to the process's stderr, not through
/// `eprintln!`, which the test harness swallows for a test that returns normally.
fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: tests/container.rs: {why}");
}

async fn podman(args: &[&str]) -> Output {
    let out = tokio::process::Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(PODMAN_TIMEOUT, out).await {
        Ok(out) => out.expect("run podman"),
        Err(_) => panic!("podman {} took over {PODMAN_TIMEOUT:?}", args.join(" ")),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the command succeeded; its stdout, trimmed.
#[track_caller]
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        text(out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The host address a container port is published on (`podman port`).
async fn published(name: &str, port: u16) -> SocketAddr {
    let out = ok(
        &podman(&["port", name, &format!("{port}/tcp")]).await,
        "podman port",
    );
    out.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("podman port {name} {port}: {out:?}"))
}

/// Waits until `/healthz` answers 200 on the published admin port, failing at once with the
/// container's log if it exits first. Bounded by [`START_TIMEOUT`].
async fn wait_healthy(name: &str, admin: SocketAddr) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if linkpush::healthcheck::probe(admin, Duration::from_secs(2))
            .await
            .is_ok()
        {
            return;
        }
        let state = ok(
            &podman(&["inspect", "--format", "{{.State.Status}}", name]).await,
            "podman inspect",
        );
        if state != "running" || Instant::now() > deadline {
            let logs = podman(&["logs", name]).await;
            panic!(
                "the container ({state}) did not answer /healthz on {admin}:\n{}",
                text(&logs)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes what the test made, also when it fails: the container, then the image. Bounded.
#[derive(Default)]
struct Cleanup {
    container: Option<String>,
    image: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(name) = self.container.take() {
            run_bounded(&["rm", "--force", "--time", "0", &name]);
        }
        if let Some(tag) = self.image.take() {
            run_bounded(&["rmi", "--force", &tag]);
        }
    }
}

/// `podman args` from a destructor (no runtime to await on): waits up to [`PODMAN_TIMEOUT`],
/// polling for the exit, then kills it.
fn run_bounded(args: &[&str]) {
    let Ok(mut child) = std::process::Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return;
    };
    let deadline = Instant::now() + PODMAN_TIMEOUT;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
}

// ===== the image's inputs =====

/// What the test takes from `config/container.toml`, the image's configuration, validated as
/// linkpush would.
struct ImageConfig {
    proxy_port: u16,
    admin_port: u16,
    /// Where the certificate and key are mounted.
    cert_dir: PathBuf,
}

impl ImageConfig {
    fn load() -> ImageConfig {
        let path = Path::new(ROOT).join("config/container.toml");
        let text = std::fs::read_to_string(&path).expect("read config/container.toml");
        let config =
            Config::from_toml_str(&text, &path, &|_| None).expect("the image's config is valid");
        let admin = config.admin.as_ref().expect("[admin] in the image");
        let tls = config
            .server
            .tls
            .as_ref()
            .expect("[server.tls] in the image");
        let cert_dir = tls.cert.parent().expect("cert directory");
        assert_eq!(
            tls.key.parent(),
            Some(cert_dir),
            "cert and key in one mount"
        );
        ImageConfig {
            proxy_port: config.server.listen[0].port(),
            admin_port: admin.listen.port(),
            cert_dir: cert_dir.to_path_buf(),
        }
    }
}

/// Builds the binary as the Dockerfile's build stage does (static, the `container` profile), in
/// its own target directory so it never waits for the suite's build lock; cargo reuses it when
/// nothing changed. Without LTO and with 16 codegen units it takes about 1.5 min on two busy
/// cores; the Dockerfile keeps the release profile's thin LTO.
async fn build_static_binary() -> PathBuf {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let target_dir = Path::new(ROOT).join("target/container");
    let build = tokio::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "--profile",
            "container",
            "--target",
            &triple,
        ])
        .args(["--bin", "linkpush"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_CONTAINER_LTO", "off")
        .env("CARGO_PROFILE_CONTAINER_CODEGEN_UNITS", "16")
        .current_dir(ROOT)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(BUILD_TIMEOUT, build).await {
        Ok(out) => out.expect("run cargo"),
        Err(_) => panic!("the static build took over {BUILD_TIMEOUT:?}"),
    };
    assert!(out.status.success(), "static build:\n{}", text(&out));
    target_dir.join(triple).join("container/linkpush")
}

/// A self-signed certificate for localhost as `tls.crt` and `tls.key`, readable by the image's
/// user (the key is 0644 only because it is a throwaway).
fn write_self_signed(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    for (file, pem) in [
        ("tls.crt", generated.cert.pem()),
        ("tls.key", generated.signing_key.serialize_pem()),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, pem).expect("write PEM");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
}

/// A temporary directory (world-readable: the container's user reads mounts), removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(label: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let path = TempFile::new(label).path.clone();
        std::fs::create_dir_all(&path).expect("create temp dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Section names of a 64-bit little-endian ELF file: enough to see debug info (`.debug_*`)
/// and a request for a dynamic loader (`.interp`) without binutils.
fn elf_sections(elf: &[u8]) -> Vec<String> {
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "a 64-bit little-endian ELF file"
    );
    let int = |at: usize, len: usize| -> usize {
        let bytes = &elf[at..at + len];
        bytes
            .iter()
            .rev()
            .fold(0, |n, &b| (n << 8) | usize::from(b))
    };
    let (table, entry, count, names) = (int(0x28, 8), int(0x3a, 2), int(0x3c, 2), int(0x3e, 2));
    let header = |i: usize| table + i * entry;
    let strings = int(header(names) + 0x18, 8);
    (0..count)
        .map(|i| {
            let start = strings + int(header(i), 4);
            let len = elf[start..].iter().position(|&b| b == 0).unwrap_or(0);
            String::from_utf8_lossy(&elf[start..start + len]).into_owned()
        })
        .collect()
}

#[test]
fn elf_sections_reads_the_test_binary_itself() {
    let me = std::fs::read(std::env::current_exe().expect("current_exe")).expect("read");
    let sections = elf_sections(&me);
    assert!(sections.iter().any(|s| s == ".text"), "{sections:?}");
    assert!(
        sections.iter().any(|s| s == ".interp"),
        "a dynamic test binary: {sections:?}"
    );
}
