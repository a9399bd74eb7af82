//! A few empty I/O buffers kept per thread (PATCHES.md 8).
//!
//! The codec gives its read and write buffers back whenever it has nothing
//! buffered, so that an idle connection holds neither. A busy connection
//! empties them on almost every poll; allocating 8 or 16 KiB again each time
//! measurably costs instructions, so the buffers go to a small per-thread list
//! and the next connection polled on that thread takes them from there. A
//! thread polls one connection at a time, so a handful is enough.

use bytes::BytesMut;
use std::cell::RefCell;
use std::thread::LocalKey;

/// Buffers kept per thread and per kind, at most.
const KEEP: usize = 4;

pub(crate) type Pool = LocalKey<RefCell<Vec<BytesMut>>>;

thread_local! {
    /// Write buffers (`FramedWrite`).
    pub(crate) static WRITE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    /// Read buffers (`FramedRead`).
    pub(crate) static READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `capacity` bytes.
pub(crate) fn take(pool: &'static Pool, capacity: usize) -> BytesMut {
    pool.try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten()
        .filter(|buf| buf.capacity() >= capacity)
        .unwrap_or_else(|| BytesMut::with_capacity(capacity))
}

/// Takes back a buffer with nothing in it; it is freed if the pool is full,
/// too small to be of use (`capacity`), or the thread is exiting.
pub(crate) fn give(pool: &'static Pool, buf: BytesMut, capacity: usize) {
    if !buf.is_empty() || buf.capacity() < capacity {
        return;
    }
    let _ = pool.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEEP {
            p.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_the_pool_is_bounded() {
        let first = take(&WRITE, 1024);
        let addr = first.as_ptr();
        give(&WRITE, first, 1024);
        let again = take(&WRITE, 1024);
        assert_eq!(again.as_ptr(), addr, "the buffer given back is taken again");

        for _ in 0..KEEP + 3 {
            give(&WRITE, BytesMut::with_capacity(1024), 1024);
        }
        assert_eq!(WRITE.with(|p| p.borrow().len()), KEEP);

        let mut full = BytesMut::with_capacity(1024);
        full.extend_from_slice(b"x");
        READ.with(|p| p.borrow_mut().clear());
        give(&READ, full, 1024);
        give(&READ, BytesMut::with_capacity(16), 1024);
        assert_eq!(
            READ.with(|p| p.borrow().len()),
            0,
            "non-empty or small: not kept"
        );
    }
}
