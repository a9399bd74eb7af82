//! Headless Chromium driven over the Chrome DevTools Protocol on `--remote-debugging-pipe`: no
//! driver, no WebSocket. Chromium reads commands from its fd 3 and writes replies and events to
//! its fd 4, one JSON message per NUL-terminated chunk.
//!
//! The child is started through `sh -c 'exec chromium … 3<&0 4>&1 </dev/null >/dev/null'`, so our
//! stdin/stdout pipes become its fds 3 and 4 without any unsafe `pre_exec`. A reader thread turns
//! fd 4 into messages on a channel, so every wait has a deadline. [`Chromium`] kills the browser
//! and removes its profile on drop, on every path (panics included).
//!
//! Used by tests/chromium.rs and benches/chromium.rs (through `#[path]`).

// Each user takes only part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The Chromium binary: `$CHROMIUM`, else `chromium` (Debian's package) on the PATH.
pub fn chromium_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    })
}

pub struct Chromium {
    child: Child,
    commands: ChildStdin,
    messages: Receiver<Value>,
    /// Events that arrived while waiting for something else.
    events: VecDeque<Value>,
    next_id: u64,
    profile: PathBuf,
    stderr_log: PathBuf,
}

impl Chromium {
    /// Starts headless Chromium with a fresh profile. `extra` flags are appended (for example
    /// `--ignore-certificate-errors-spki-list=…`).
    pub fn launch(binary: &Path, extra: &[String]) -> Result<Chromium, String> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let unique = format!(
            "linkpush-chromium-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let profile = std::env::temp_dir().join(&unique);
        let stderr_log = std::env::temp_dir().join(format!("{unique}.log"));
        std::fs::create_dir_all(&profile).map_err(|e| format!("profile dir: {e}"))?;
        let mut args: Vec<String> = [
            "--headless",
            // Root in a container has no user namespace for the sandbox.
            "--no-sandbox",
            "--disable-gpu",
            // HTTP/2 over TCP only: QUIC would bypass the h2 path under test.
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--mute-audio",
            "--remote-debugging-pipe",
        ]
        .map(str::to_owned)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra.iter().cloned());
        let stderr = std::fs::File::create(&stderr_log).map_err(|e| format!("log: {e}"))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 </dev/null >/dev/null")
            .arg(binary)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let (Some(commands), Some(out)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no pipes to chromium".into());
        };
        let (tx, messages) = channel();
        std::thread::Builder::new()
            .name("cdp-read".into())
            .spawn(move || {
                let mut out = BufReader::new(out);
                loop {
                    let mut chunk = Vec::new();
                    match out.read_until(0, &mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if chunk.last() == Some(&0) {
                                chunk.pop();
                            }
                            if let Ok(v) = serde_json::from_slice::<Value>(&chunk)
                                && tx.send(v).is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            })
            .map_err(|e| format!("reader thread: {e}"))?;
        Ok(Chromium {
            child,
            commands,
            messages,
            events: VecDeque::new(),
            next_id: 1,
            profile,
            stderr_log,
        })
    }

    /// Chromium's own log (stderr), for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Sends one command (to a page when `session` is set) and waits for its reply.
    pub fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .and_then(|()| self.commands.flush())
            .map_err(|e| format!("{method}: writing to chromium: {e}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let message = self.next_message(deadline, method)?;
            if message.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = message.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(message.get("result").cloned().unwrap_or(Value::Null));
            }
            if message.get("method").is_some() {
                self.events.push_back(message);
            }
        }
    }

    /// Waits for an event named `method` (from `session` when set), consuming it and the
    /// events before it.
    pub fn wait_event(
        &mut self,
        session: Option<&str>,
        method: &str,
        timeout: Duration,
    ) -> Result<Value, String> {
        let matches = |m: &Value| {
            m.get("method").and_then(Value::as_str) == Some(method)
                && session.is_none_or(|s| m.get("sessionId").and_then(Value::as_str) == Some(s))
        };
        while let Some(event) = self.events.pop_front() {
            if matches(&event) {
                return Ok(event);
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let message = self.next_message(deadline, method)?;
            if matches(&message) {
                return Ok(message);
            }
        }
    }

    fn next_message(&mut self, deadline: Instant, waiting_for: &str) -> Result<Value, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.messages.recv_timeout(left) {
            Ok(m) => Ok(m),
            Err(RecvTimeoutError::Timeout) => Err(format!("timed out waiting for {waiting_for}")),
            Err(RecvTimeoutError::Disconnected) => Err(format!(
                "chromium exited while waiting for {waiting_for}:\n{}",
                self.log_tail()
            )),
        }
    }

    /// A new tab, attached in flat mode: returns the session id its commands go to.
    pub fn new_page(&mut self, timeout: Duration) -> Result<String, String> {
        let target = self.call(
            None,
            "Target.createTarget",
            json!({ "url": "about:blank" }),
            timeout,
        )?;
        let target_id = target["targetId"].as_str().ok_or("no targetId")?.to_owned();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
            timeout,
        )?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or("no sessionId")?
            .to_owned();
        self.call(Some(&session), "Page.enable", json!({}), timeout)?;
        Ok(session)
    }

    /// Navigates the page and waits for its load event.
    pub fn load(&mut self, session: &str, url: &str, timeout: Duration) -> Result<(), String> {
        self.events.clear();
        let nav = self.call(
            Some(session),
            "Page.navigate",
            json!({ "url": url }),
            timeout,
        )?;
        if let Some(err) = nav.get("errorText").and_then(Value::as_str) {
            return Err(format!("navigating to {url}: {err}"));
        }
        self.wait_event(Some(session), "Page.loadEventFired", timeout)?;
        Ok(())
    }

    /// Evaluates `expression` in the page and returns its value (JSON-serialisable results).
    pub fn evaluate(
        &mut self,
        session: &str,
        expression: &str,
        timeout: Duration,
    ) -> Result<Value, String> {
        let result = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            timeout,
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("evaluating {expression}: {exception}"));
        }
        Ok(result["result"]["value"].clone())
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}

/// A certificate for 127.0.0.1 and the base64 SHA-256 of its SubjectPublicKeyInfo, the form
/// `--ignore-certificate-errors-spki-list` takes (Chromium then trusts it like a real one and
/// reuses cached responses, which `--ignore-certificate-errors` would not).
pub fn certificate() -> (rustls::sign::CertifiedKey, String) {
    use base64::Engine as _;
    use rcgen::PublicKeyData as _;
    use sha2::Digest as _;
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    let spki = generated.signing_key.subject_public_key_info();
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&spki));
    let key = linkpush::listener::tls::certified_key_from_pem(
        generated.cert.pem().as_bytes(),
        generated.signing_key.serialize_pem().as_bytes(),
        Path::new("<test>"),
        Path::new("<test>"),
    )
    .expect("key");
    (key, hash)
}

/// The timings of one page load, from Navigation and Resource Timing (milliseconds since the
/// navigation started).
#[derive(Debug, Clone)]
pub struct LoadTimings {
    /// When the final response's headers arrived (`finalResponseHeadersStart` where Chromium
    /// has it: its `responseStart` may be the 103's).
    pub final_response_start: f64,
    pub load_event_end: f64,
    pub dom_content_loaded: f64,
    pub resources: Vec<ResourceTiming>,
    /// The whole PerformanceNavigationTiming entry, for failure messages.
    pub navigation: Value,
}

#[derive(Debug, Clone)]
pub struct ResourceTiming {
    pub name: String,
    pub initiator_type: String,
    pub start_time: f64,
    pub response_start: f64,
    pub response_end: f64,
}

/// Resolves, once the load event's handlers have returned (`loadEventEnd` set), to the page's
/// Navigation and Resource Timing entries.
pub const TIMINGS_JS: &str = "new Promise(resolve => { const done = () => { \
    const n = performance.getEntriesByType('navigation')[0]; \
    if (!n || n.loadEventEnd <= 0) { setTimeout(done, 5); return; } \
    resolve({ navigation: n.toJSON(), finalResponseStart: n.finalResponseHeadersStart || n.responseStart, \
    loadEventEnd: n.loadEventEnd, domContentLoaded: n.domContentLoadedEventEnd, \
    resources: performance.getEntriesByType('resource').map(r => ({ name: r.name, \
    initiatorType: r.initiatorType, startTime: r.startTime, responseStart: r.responseStart, \
    responseEnd: r.responseEnd })) }); }; done(); })";

impl LoadTimings {
    pub fn from_json(v: &Value) -> Result<LoadTimings, String> {
        let num = |v: &Value, k: &str| v[k].as_f64().ok_or_else(|| format!("no {k} in {v}"));
        let resources = v["resources"]
            .as_array()
            .ok_or_else(|| format!("no resources in {v}"))?
            .iter()
            .map(|r| {
                Ok(ResourceTiming {
                    name: r["name"].as_str().unwrap_or_default().to_owned(),
                    initiator_type: r["initiatorType"].as_str().unwrap_or_default().to_owned(),
                    start_time: num(r, "startTime")?,
                    response_start: num(r, "responseStart")?,
                    response_end: num(r, "responseEnd")?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(LoadTimings {
            final_response_start: num(v, "finalResponseStart")?,
            load_event_end: num(v, "loadEventEnd")?,
            dom_content_loaded: num(v, "domContentLoaded")?,
            resources,
            navigation: v["navigation"].clone(),
        })
    }

    /// Loads `url` in the page and reads its timings.
    pub fn measure(
        browser: &mut Chromium,
        session: &str,
        url: &str,
        timeout: Duration,
    ) -> Result<LoadTimings, String> {
        browser.load(session, url, timeout)?;
        LoadTimings::from_json(&browser.evaluate(session, TIMINGS_JS, timeout)?)
    }
}
