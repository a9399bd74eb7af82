//! linkpush: a reverse proxy that turns the backend's `Link: <…>; rel=preload` headers into
//! HTTP/2 server pushes (clients that accept push) and 103 Early Hints (clients that don't),
//! and learns each route's links to act on them while the backend is still thinking.
//!
//! The request path, in module order: `listener` (accept, TLS/ALPN, preface sniffing) →
//! `front::h2` / `front::h1` → `upstream` (pooled HTTP/1.1 client, header rules) → `push`
//! (Link parsing, policy, promises) and `learn` → `body` (the one HTTP/2 send loop).
//! See docs/ARCHITECTURE.md.

pub mod admin;
pub mod app;
pub mod clock;
pub mod config;
pub mod demo;
pub mod error;
pub mod front;
pub mod headers;
pub mod healthcheck;
pub mod learn;
pub mod listener;
pub mod log_writer;
pub mod metrics;
pub mod push;
pub mod server;
pub mod upstream;

pub use config::Config;
pub use server::{Server, TlsSource};
