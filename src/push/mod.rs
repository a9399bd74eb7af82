//! Server push: the RFC 8288 Link parser (`link`), RFC 3986 target resolution (`target`), what
//! may be pushed or hinted (`policy`), which responses a cache may keep (`cache`), and promising and sending pushed responses (`send`).

pub mod cache;
pub mod link;
pub mod policy;
pub mod target;
