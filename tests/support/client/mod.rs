//! Clients that talk to the proxy.
//!
//! - The h2 crate, for frame-level assertions: [`h2_connect`], [`h2_get`], [`h2_request`] return
//!   everything one request produced (103s, push promises and the pushed responses, the final
//!   response) plus the order of the frames on the wire, read by a tap under h2.
//! - `nghttp` and `curl`, independent HTTP/2 implementations, so that a bug shared with our own
//!   HTTP/2 library cannot hide: [`nghttp`] parses `nghttp -nv` traces into [`Frame`]s, and
//!   [`curl_fetch`] returns status, headers and body.
//!
//! Every wait is bounded ([`TIMEOUT`] without progress, [`PROGRAM_TIMEOUT`] for a program run) and
//! panics with what it was waiting for.
//! The runners are async (tokio::process), because a blocking wait would starve a proxy or
//! upstream running on the same runtime.
//!
//! Layout: `h2` opens the connection, `request` drives one request on it and `exchange` holds what
//! it produced; `wire` turns received bytes (or an nghttp trace) into [`Frame`]s; `tls` is the
//! client side of the handshake; `tools` runs `nghttp` and `curl`.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod exchange;
mod h2;
mod head;
mod request;
mod tls;
mod tools;
mod wire;

// The API of the module. Each test binary uses only part of it, like `dead_code` in support/mod.rs.
#[allow(unused_imports)]
pub use self::exchange::{Event, Exchange, Pushed};
#[allow(unused_imports)]
pub use self::h2::{H2Client, H2Options, h2_connect};
#[allow(unused_imports)]
pub use self::request::{h2_get, h2_get_many, h2_request, h2_request_refusing, h2_try_request};
#[allow(unused_imports)]
pub use self::tls::{tls_alpn, tls_handshake};
#[allow(unused_imports)]
pub use self::tools::{
    CurlHttp, CurlOutput, CurlResponse, NghttpOutput, PROGRAM_TIMEOUT, curl, curl_fetch, installed,
    nghttp,
};
#[allow(unused_imports)]
pub use self::wire::{Frame, WireTap, parse_nghttp_frames};

/// How long any helper waits without progress before it panics.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Await `fut`, panicking with `what` if it takes longer than [`TIMEOUT`].
pub async fn bounded<F: Future>(what: impl fmt::Display, fut: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {TIMEOUT:?}: {what}"),
    }
}

/// A file under the temp dir, removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    /// A fresh, not yet created, path.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("linkpush-test-{}-{n}-{label}", std::process::id()));
        TempFile { path }
    }

    pub fn with_contents(label: &str, contents: &[u8]) -> Self {
        let file = TempFile::new(label);
        std::fs::write(&file.path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", file.path.display()));
        file
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
