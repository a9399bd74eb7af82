//! The log writer (issue 9): a request's worker thread formats its line and hands it to a
//! bounded queue; one thread writes the queue to stderr through a buffer, one `write(2)` per
//! batch. A worker never waits on stderr (one unbuffered `write(2)` per request cost 8–15 µs,
//! and a stalled stderr would have stalled every request): when the queue is full, the line is
//! dropped and counted in `linkpush_log_lines_dropped_total`.
//!
//! This is tracing-appender's non-blocking writer in lossy mode (`try_send` on a bounded
//! crossbeam channel; its worker writes every queued line, then flushes when the queue is
//! empty). Keep the [`WorkerGuard`] until exit: dropping it waits (up to 1 s) for the queue to be
//! written, so a clean shutdown loses no line.

use std::io::Write;

pub use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};

/// How many formatted lines may wait for the writer thread before new ones are dropped: about
/// 4 MiB of access lines, a few seconds of a stalled terminal at full load.
pub const QUEUE_LINES: usize = 16 * 1024;

/// A non-blocking writer in front of `out` (buffered), its drops reported by every `Metrics`.
pub fn non_blocking<W: Write + Send + 'static>(
    out: W,
    queue_lines: usize,
) -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(queue_lines)
        .thread_name("linkpush-log")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, out));
    let dropped = writer.error_counter();
    crate::metrics::set_log_lines_dropped(move || dropped.dropped_lines() as u64);
    (writer, guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// A sink that blocks every write until the test lets it go, like a stderr nobody reads.
    struct Stalled {
        release: mpsc::Receiver<()>,
        written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.release.recv();
            self.written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Pins the tracing-appender behaviour this module relies on (the builder as `non_blocking`
    /// uses it, without the buffer, which would only delay the stall, and without registering
    /// the process-wide drop counter other tests read).
    #[test]
    fn a_stalled_sink_drops_and_counts_lines_instead_of_blocking() {
        let (release, gate) = mpsc::channel();
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        // Unbuffered here: each line reaches the sink, which blocks until released.
        let (mut writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(4)
            .finish(Stalled {
                release: gate,
                written: written.clone(),
            });
        let counter = writer.error_counter();
        let started = Instant::now();
        for i in 0..100 {
            writer
                .write_all(format!("line {i}\n").as_bytes())
                .expect("a lossy write never fails");
        }
        // Not a timing assertion on speed: a blocking writer would never get here at all
        // while the sink is stalled. The bound only turns a hang into a failure.
        assert!(started.elapsed() < Duration::from_secs(10));
        let dropped = counter.dropped_lines();
        // At most the queue (4) and the line the worker holds were kept.
        assert!((95..100).contains(&dropped), "dropped {dropped}");
        for _ in 0..200 {
            let _ = release.send(());
        }
        drop(guard);
        let kept = written.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(
            String::from_utf8_lossy(&kept).lines().count() + dropped,
            100,
            "every line is either written or counted"
        );
    }
}
