//! Server push: the RFC 8288 Link parser (`link`), RFC 3986 target resolution (`target`), what
//! may be pushed or hinted (`policy`), which responses a cache may keep (`cache`), and the cache
//! digest cookie's format (`digest`). Pure: no I/O. Promising and sending pushed responses is
//! HTTP/2 machinery and lives in `front::h2::push`.

pub mod cache;
pub mod digest;
pub mod link;
pub mod policy;
pub mod target;
