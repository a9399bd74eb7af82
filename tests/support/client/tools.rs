//! `nghttp` and `curl`, run as external programs with a bounded wait, and their output parsed.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use super::TempFile;
use super::wire::{Frame, parse_nghttp_frames};

/// How long an external program may run. Longer than [`TIMEOUT`], since a program's run includes
/// whole transfers; pass curl's `--max-time` for a tighter bound.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `program` can be run (it answers `--version`). Tests that need an optional tool
/// print `SKIP:` and return when it cannot.
pub fn installed(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Run `program` with `args`, bounded by [`PROGRAM_TIMEOUT`]; the process is killed if the test
/// gives up.
async fn run(program: &str, args: &[&str], install: &str) -> std::process::Output {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(PROGRAM_TIMEOUT, child).await {
        Err(_) => panic!(
            "timed out after {PROGRAM_TIMEOUT:?}: {program} {}",
            args.join(" ")
        ),
        Ok(Ok(output)) => output,
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            panic!("`{program}` is not installed: {install}")
        }
        Ok(Err(e)) => panic!("running {program}: {e}"),
    }
}

pub struct NghttpOutput {
    pub stdout: String,
    pub stderr: String,
    pub status: ExitStatus,
    /// The frames nghttp received, in order, parsed from a `-v` trace in `stdout`.
    pub frames: Vec<Frame>,
}

impl NghttpOutput {
    /// Received frames on one stream.
    pub fn frames_on(&self, stream_id: u32) -> Vec<&Frame> {
        self.frames
            .iter()
            .filter(|f| f.stream_id == stream_id)
            .collect()
    }

    /// Paths promised by received PUSH_PROMISE frames, in order.
    pub fn promised_paths(&self) -> Vec<&str> {
        self.frames
            .iter()
            .filter(|f| f.kind == "PUSH_PROMISE")
            .filter_map(|f| f.header(":path"))
            .collect()
    }
}

/// Run `nghttp` (Debian nghttp2-client). Pass `-nv` to get `frames`: `-n` discards bodies, `-v`
/// prints the trace.
pub async fn nghttp(args: &[&str]) -> NghttpOutput {
    let out = run("nghttp", args, "apt-get install -y nghttp2-client").await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    NghttpOutput {
        frames: parse_nghttp_frames(&stdout),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
    }
}

pub struct CurlOutput {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub status: ExitStatus,
}

impl CurlOutput {
    /// curl's exit code (18: transfer closed with data outstanding; 7: could not connect; 92:
    /// HTTP/2 stream error).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Run `curl` with exactly these arguments.
pub async fn curl(args: &[&str]) -> CurlOutput {
    let out = run("curl", args, "apt-get install -y curl").await;
    CurlOutput {
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
    }
}

/// Which HTTP version curl is told to use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CurlHttp {
    /// `--http1.1`
    Http1,
    /// `--http2-prior-knowledge`: h2c without upgrade, or h2 over TLS.
    H2PriorKnowledge,
    /// `--http2`: ALPN over TLS; on cleartext, curl tries `Upgrade: h2c`.
    H2,
}

/// A response as curl saw it.
#[derive(Debug)]
pub struct CurlResponse {
    /// curl's exit code; 0 on success.
    pub exit_code: i32,
    /// From the status line: `1.1` or `2`. Empty if no response head arrived.
    pub version: String,
    /// 0 if no response head arrived.
    pub status: u16,
    /// Final response fields in order; names as curl printed them (lowercase over HTTP/2).
    pub headers: Vec<(String, String)>,
    /// 1xx responses in order, with their fields.
    pub informational: Vec<(u16, Vec<(String, String)>)>,
    /// The body (empty for `--head`/`-I`).
    pub body: Vec<u8>,
    pub stderr: String,
}

impl CurlResponse {
    /// The first value of a final response header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a final response header (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `curl -sS -k <version> -D - -o <tmp> <extra...> <url>`: status, headers (1xx ones apart) and
/// body. Non-zero exits are returned, not panicked on.
pub async fn curl_fetch(http: CurlHttp, url: &str, extra: &[&str]) -> CurlResponse {
    let body_file = TempFile::new("curl-body");
    let version = match http {
        CurlHttp::Http1 => "--http1.1",
        CurlHttp::H2PriorKnowledge => "--http2-prior-knowledge",
        CurlHttp::H2 => "--http2",
    };
    let mut args = vec!["-sS", "-k", version, "-D", "-", "-o", body_file.path_str()];
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args).await;
    let head_only = extra.iter().any(|a| *a == "-I" || *a == "--head");
    let body = if head_only {
        Vec::new()
    } else {
        std::fs::read(&body_file.path).unwrap_or_default()
    };

    let mut response = CurlResponse {
        exit_code: out.code().unwrap_or(-1),
        version: String::new(),
        status: 0,
        headers: Vec::new(),
        informational: Vec::new(),
        body,
        stderr: out.stderr,
    };
    // `-D -` writes every response head, 1xx ones included, each ending with an empty line.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut current: Option<(u16, Vec<(String, String)>)> = None;
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if let Some(status_line) = line.strip_prefix("HTTP/") {
            let mut parts = status_line.split_whitespace();
            response.version = parts.next().unwrap_or("").to_owned();
            let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if let Some(done) = current.replace((status, Vec::new())) {
                response.informational.push(done);
            }
        } else if let (Some((_, fields)), Some((name, value))) =
            (current.as_mut(), line.split_once(':'))
        {
            fields.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    if let Some((status, fields)) = current {
        response.status = status;
        response.headers = fields;
    }
    response
}
