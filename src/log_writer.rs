//! The log writer (issue 9): a request's worker thread formats its line (tracing-subscriber's
//! fmt layer, one `write` per line) and appends it to a shared buffer; one thread writes the
//! buffer to stderr in batches. A worker never waits on stderr: one unbuffered `write(2)` per
//! request cost 8–15 µs, and a stalled stderr would stall every request. When the buffer holds
//! `limit` bytes nobody has written yet, new lines are dropped and counted in
//! `linkpush_log_lines_dropped_total`.
//!
//! Why not tracing-appender's non-blocking writer (used until the default-configuration
//! benchmark): it sends each line through a channel, allocating it, and wakes the writer
//! thread for nearly every line, because the writer drains the queue faster than lines come.
//! With the proxy on one core, that is a futex wake and two context switches per request,
//! +10 µs of CPU per request in `benches/compare.sh`'s default round. Here the writer thread
//! is woken once per batch: when the first line lands in an empty buffer it waits up to
//! [`FLUSH_INTERVAL`] for more (or less, when [`HIGH_WATER`] bytes are waiting), then writes
//! them all in one `write(2)`. Lines reach stderr at most [`FLUSH_INTERVAL`] late.
//!
//! Keep the [`WorkerGuard`] until exit: dropping it writes what is buffered (waiting up to
//! [`SHUTDOWN_WAIT`] for a stalled stderr), so a clean shutdown loses no line.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many bytes of formatted lines may wait for the writer thread before new lines are
/// dropped: about 16,000 access lines, a few seconds of a stalled terminal at full load.
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// The longest a line waits in the buffer before the writer thread takes it.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// A batch this large is written at once, without waiting for the interval.
pub const HIGH_WATER: usize = 64 * 1024;
/// How long dropping the guard waits for the last batch to be written.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// The `MakeWriter` given to tracing-subscriber's layers: cheap to clone, never blocks on the
/// output.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Dropping it writes what is buffered and stops the writer thread.
pub struct WorkerGuard {
    shared: Arc<Shared>,
    done: std::sync::mpsc::Receiver<()>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread: first line into an empty buffer, high water, shutdown.
    wake: Condvar,
    dropped: AtomicU64,
    limit: usize,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    closing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the buffer inconsistent (appends are
        // whole `extend_from_slice`s), so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, line: &[u8]) {
        let mut state = self.lock();
        let before = state.buf.len();
        if before + line.len() > self.limit {
            drop(state);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.buf.extend_from_slice(line);
        let after = state.buf.len();
        drop(state);
        // Only the transitions wake the writer: not one wake per line.
        if before == 0 || (before < HIGH_WATER && after >= HIGH_WATER) {
            self.wake.notify_one();
        }
    }
}

/// A writer in front of `out` (buffered by batches, written on its own thread), its drops
/// reported by every `Metrics`.
pub fn non_blocking<W: Write + Send + 'static>(out: W, limit: usize) -> (LogWriter, WorkerGuard) {
    let (writer, guard) = spawn(out, limit);
    let shared = writer.shared.clone();
    crate::metrics::set_log_lines_dropped(move || shared.dropped.load(Ordering::Relaxed));
    (writer, guard)
}

/// As [`non_blocking`], without registering the process-wide drop counter (tests).
fn spawn<W: Write + Send + 'static>(mut out: W, limit: usize) -> (LogWriter, WorkerGuard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
        limit,
    });
    let (done_tx, done) = std::sync::mpsc::channel();
    let thread_shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("linkpush-log".into())
        .spawn(move || {
            write_batches(&thread_shared, &mut out);
            let _ = done_tx.send(());
        });
    if let Err(err) = spawned {
        // No thread: lines are buffered up to the limit, then dropped and counted. Logging
        // must not stop the proxy.
        eprintln!("linkpush: cannot start the log writer thread: {err}");
    }
    (
        LogWriter {
            shared: shared.clone(),
        },
        WorkerGuard { shared, done },
    )
}

/// The writer thread: waits for a first line, lets a batch gather, writes it, until closing.
fn write_batches(shared: &Shared, out: &mut impl Write) {
    let mut spare = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.buf.is_empty() && !state.closing {
            state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        let gather_until = Instant::now() + FLUSH_INTERVAL;
        while !state.closing && state.buf.len() < HIGH_WATER {
            let now = Instant::now();
            if now >= gather_until {
                break;
            }
            state = shared
                .wake
                .wait_timeout(state, gather_until - now)
                .map_or_else(|p| p.into_inner().0, |(s, _)| s);
        }
        std::mem::swap(&mut state.buf, &mut spare);
        let closing = state.closing;
        drop(state);
        // A failed write (stderr closed) loses this batch; there is nowhere to report it.
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        spare.clear();
        // Keep a normal batch's capacity, not a burst's.
        spare.shrink_to(HIGH_WATER * 2);
        if closing && shared.lock().buf.is_empty() {
            return;
        }
    }
}

/// Where the binary's access lines go: the log writer, bypassing tracing's formatting (see
/// `front::access_log`), in the format `log.format` names (reloadable).
pub struct AccessSink {
    writer: LogWriter,
    json: Arc<std::sync::atomic::AtomicBool>,
    /// Whether `log.level` wants access lines, set by main whenever the level is (at start and
    /// on reload): asking tracing's filters on every request cost ~290 instructions
    /// (callgrind), because the format layers' filters make every callsite's interest
    /// "sometimes". Span-scoped directives for `linkpush::access` therefore do not apply.
    enabled: std::sync::atomic::AtomicBool,
}

static ACCESS_SINK: std::sync::OnceLock<AccessSink> = std::sync::OnceLock::new();

/// Sends access lines to `writer` from now on; `json` follows `log.format`. Set once, by main.
pub fn set_access_sink(writer: LogWriter, json: Arc<std::sync::atomic::AtomicBool>) {
    let _ = ACCESS_SINK.set(AccessSink {
        writer,
        json,
        enabled: std::sync::atomic::AtomicBool::new(true),
    });
}

/// The sink, when the binary set one.
pub fn access_sink() -> Option<&'static AccessSink> {
    ACCESS_SINK.get()
}

impl AccessSink {
    pub fn json(&self) -> bool {
        self.json.load(Ordering::Relaxed)
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// One whole line, never blocking (dropped and counted when the buffer is full).
    pub fn write(&self, line: &[u8]) {
        self.writer.shared.append(line);
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let _ = self.done.recv_timeout(SHUTDOWN_WAIT);
    }
}

impl Write for &LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink that blocks every write until the test lets it go, like a stderr nobody reads.
    struct Stalled {
        release: mpsc::Receiver<()>,
        written: Sink,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.release.recv();
            self.written.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_drops_and_counts_lines_instead_of_blocking() {
        let (release, gate) = mpsc::channel();
        let written = Sink::default();
        // Room for ten 8-byte lines beyond the batch the writer thread may hold.
        let (writer, guard) = spawn(
            Stalled {
                release: gate,
                written: written.clone(),
            },
            80,
        );
        for i in 0..100 {
            (&writer)
                .write_all(format!("line {i:02}\n").as_bytes())
                .expect("a lossy write never fails");
        }
        // Not a timing assertion: a blocking writer would never get here while the sink is
        // stalled (every write waits for `release`).
        let dropped = writer.shared.dropped.load(Ordering::Relaxed) as usize;
        assert!((80..=90).contains(&dropped), "dropped {dropped}");
        for _ in 0..200 {
            let _ = release.send(());
        }
        drop(guard);
        let kept = written.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let kept = String::from_utf8_lossy(&kept);
        assert_eq!(
            kept.lines().count() + dropped,
            100,
            "every line is either written or counted: {kept}"
        );
        assert!(kept.lines().all(|l| l.len() == 7 && l.starts_with("line ")));
    }

    #[test]
    fn a_clean_shutdown_writes_every_line_whole_and_in_order() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), QUEUE_BYTES);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        (&writer)
                            .write_all(
                                format!("thread {t} line {i:04} {}\n", "x".repeat(40)).as_bytes(),
                            )
                            .expect("never fails");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        drop(guard);
        let out = sink.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let out = String::from_utf8(out).expect("whole lines");
        assert_eq!(out.lines().count(), 8_000);
        for t in 0..4 {
            let prefix = format!("thread {t} line ");
            let mine: Vec<&str> = out.lines().filter(|l| l.starts_with(&prefix)).collect();
            assert_eq!(mine.len(), 2_000);
            for (i, line) in mine.iter().enumerate() {
                assert_eq!(line, &format!("{prefix}{i:04} {}", "x".repeat(40)));
            }
        }
        assert_eq!(writer.shared.dropped.load(Ordering::Relaxed), 0);
    }
}
