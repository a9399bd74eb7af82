//! Server push: the RFC 8288 Link parser (`link`), RFC 3986 target resolution (`target`), what
//! may be pushed or hinted (`policy`), and promising and sending pushed responses (`send`);
//! the cache digest cookie's format (`digest`).

pub mod digest;
pub mod link;
pub mod policy;
pub mod target;
