//! One HTTP/2 connection from the h2 crate: cleartext with prior knowledge, or TLS with ALPN
//! `h2`, read through the wire tap so that tests can see the frames in order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::client::SendRequest;
use http::Uri;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::bounded;
use super::tls::tls_handshake;
use super::wire::{Frame, Tap, WireLog, WireTap};

#[derive(Clone, Debug)]
pub struct H2Options {
    /// SETTINGS_ENABLE_PUSH.
    pub enable_push: bool,
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise: how many pushed streams may be open.
    pub max_concurrent_streams: Option<u32>,
    /// TLS with ALPN `h2`; otherwise cleartext h2c with prior knowledge.
    pub tls: bool,
    /// `:authority` of every request, and the TLS server name (without the port).
    pub authority: String,
    /// SETTINGS_INITIAL_WINDOW_SIZE we advertise (h2's default 65535 when `None`).
    pub initial_window_size: Option<u32>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE we advertise (none, that is unlimited, when `None`).
    pub max_header_list_size: Option<u32>,
}

impl Default for H2Options {
    fn default() -> Self {
        H2Options {
            enable_push: true,
            max_concurrent_streams: None,
            tls: false,
            authority: "localhost".to_owned(),
            initial_window_size: None,
            max_header_list_size: None,
        }
    }
}

impl H2Options {
    /// A client that refuses push (SETTINGS_ENABLE_PUSH = 0), as browsers do today.
    pub fn no_push() -> Self {
        H2Options {
            enable_push: false,
            ..H2Options::default()
        }
    }
}

/// One HTTP/2 connection. Dropping it closes the TCP connection.
pub struct H2Client {
    /// `None` only inside [`H2Client::closed`].
    send: Option<SendRequest<Bytes>>,
    scheme: &'static str,
    authority: String,
    pub(super) wire: Arc<Mutex<WireLog>>,
    conn: Option<JoinHandle<Result<(), h2::Error>>>,
}

impl Drop for H2Client {
    fn drop(&mut self) {
        if let Some(conn) = &self.conn {
            conn.abort();
        }
    }
}

impl H2Client {
    /// The h2 handle, for tests that drive streams themselves.
    pub fn sender(&mut self) -> &mut SendRequest<Bytes> {
        self.send.as_mut().expect("connection handle")
    }

    /// Every frame the server sent so far, in wire order (header blocks not decoded).
    pub fn frames(&self) -> Vec<Frame> {
        self.wire.lock().unwrap().frames.clone()
    }

    /// A handle on the frames received, usable while a request borrows the client.
    pub fn tap(&self) -> WireTap {
        WireTap(self.wire.clone())
    }

    /// The value of a setting in the server's first SETTINGS frame.
    pub fn server_setting(&self, id: u16) -> Option<u32> {
        let wire = self.wire.lock().unwrap();
        let settings = wire
            .frames
            .iter()
            .find(|f| f.kind == "SETTINGS" && f.flags & 0x1 == 0)?;
        settings
            .settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// Wait for the connection to end (after the server's GOAWAY, or an error) and return how it
    /// ended. Drops our request handle first, so our side does not keep it open.
    pub async fn closed(mut self) -> Result<(), h2::Error> {
        let conn = self.conn.take().expect("connection task");
        // Without our handle, h2 knows no more requests can come from this side.
        self.send = None;
        match bounded("the HTTP/2 connection to close", conn).await {
            Ok(result) => result,
            Err(join) => panic!("h2 connection task failed: {join}"),
        }
    }

    pub(super) fn complete_uri(&self, uri: &Uri) -> Uri {
        if uri.scheme().is_some() {
            return uri.clone();
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        format!("{}://{}{}", self.scheme, self.authority, path)
            .parse()
            .expect("request URI")
    }
}

/// Open an HTTP/2 connection to `addr`: cleartext prior knowledge, or TLS asserting ALPN `h2`.
pub async fn h2_connect(addr: SocketAddr, opts: &H2Options) -> H2Client {
    let tcp = bounded(format!("TCP connect to {addr}"), TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("TCP connect to {addr}: {e}"));
    tcp.set_nodelay(true).expect("TCP_NODELAY");

    let mut builder = h2::client::Builder::new();
    builder.enable_push(opts.enable_push);
    if let Some(max) = opts.max_concurrent_streams {
        builder.max_concurrent_streams(max);
    }
    if let Some(window) = opts.initial_window_size {
        builder.initial_window_size(window);
    }
    if let Some(max) = opts.max_header_list_size {
        builder.max_header_list_size(max);
    }
    let wire = Arc::new(Mutex::new(WireLog::default()));

    let (send, conn) = if opts.tls {
        let tls = bounded(
            format!("TLS handshake with {addr}"),
            tls_handshake(tcp, &opts.authority, &[b"h2"]),
        )
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(
            alpn.as_deref(),
            Some(&b"h2"[..]),
            "ALPN negotiated with {addr} is not h2"
        );
        let io = Tap {
            io: tls,
            wire: wire.clone(),
        };
        let (send, conn) = bounded("HTTP/2 handshake", builder.handshake(io))
            .await
            .expect("HTTP/2 handshake");
        (send, tokio::spawn(conn))
    } else {
        let io = Tap {
            io: tcp,
            wire: wire.clone(),
        };
        let (send, conn) = bounded("HTTP/2 handshake", builder.handshake(io))
            .await
            .expect("HTTP/2 handshake");
        (send, tokio::spawn(conn))
    };
    H2Client {
        send: Some(send),
        scheme: if opts.tls { "https" } else { "http" },
        authority: opts.authority.clone(),
        wire,
        conn: Some(conn),
    }
}
