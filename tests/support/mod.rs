//! Test support shared by the end-to-end tests: a scripted HTTP/1.1 upstream that can misbehave on
//! purpose (`upstream`), and the clients that talk to the proxy (`client`): the h2 crate for
//! frame-level assertions, and `nghttp`/`curl` as independent HTTP/2 implementations.
//!
//! Every wait in here is bounded; a helper that runs out of time panics with what it was waiting
//! for, so a hung proxy fails a test instead of hanging CI.
//!
//! `tests/support_selftest.rs` checks these helpers against themselves before proxy tests rely on
//! them.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod client;
pub mod proxy;
pub mod raw;
pub mod raw_h2;
pub mod upstream;
pub mod ws;
