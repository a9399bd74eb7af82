//! The time of a turn: what a connection's task reads of the clock, read once per poll of the
//! task rather than at every use.
//!
//! A request reads the time about ten times on its way through (when it started, the upstream
//! exchange's start and end, the pool's idle stamps, the learned store's TTL, the access log's
//! duration and timestamp), and each read is a `clock_gettime` (callgrind: ~40 instructions,
//! ~11 reads per request on `/small.txt`). Within one poll of a connection's task those reads
//! are microseconds apart, so the task reads the clock once per poll ([`turns`]) and every use
//! in the poll takes that reading, as nginx does (`ngx_time_update` once per event-loop
//! iteration, `$request_time` from the cached time) and as h2o does (`h2o_now`, the loop's
//! time). A reading is taken lazily, at the first use in the poll, so a poll that needs none
//! reads nothing.
//!
//! What this costs in accuracy: a duration is measured between the polls that started and
//! ended it, so it can miss the work done in the same poll before the first read (the poll's
//! own CPU time, microseconds). Timers and deadlines do not use it: they keep tokio's clock.
//! Outside a turn (a task that is not a connection's, a test) [`now`] reads the clock.
//!
//! Durations the proxy logs and counts are measured between [`Stamp`]s, not `Instant`s: an
//! `Instant` subtracted from another is std's `Timespec` arithmetic, with its normalisation and
//! checks (callgrind: ~55 instructions, three or four per request), where stamps subtract as
//! integers. A turn converts its reading to a stamp once, at the first [`stamp`].

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

/// A turn's readings, each taken at its first use in the turn.
#[derive(Clone, Copy, Default)]
struct Readings {
    now: Option<Instant>,
    /// `now` as a stamp.
    stamp: Option<Stamp>,
    /// The wall clock, as the time since the Unix epoch.
    unix: Option<Duration>,
}

/// A monotonic time: nanoseconds since the process first asked for one (a `u64` of them lasts
/// 584 years). Taken with [`stamp`]; [`since`] measures from one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

impl Stamp {
    fn of(t: Instant) -> Stamp {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        Stamp(u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX))
    }
}

thread_local! {
    /// `None` outside a turn: every use reads the clock.
    static TURN: Cell<Option<Readings>> = const { Cell::new(None) };
}

/// The turn's reading of one clock (`field` of its readings), taken with `read` at its first
/// use; outside a turn, `read` every time.
fn reading<T: Copy>(field: fn(&mut Readings) -> &mut Option<T>, read: fn() -> T) -> T {
    TURN.with(|turn| {
        let Some(mut readings) = turn.get() else {
            return read();
        };
        let slot = field(&mut readings);
        if let Some(value) = *slot {
            return value;
        }
        let value = read();
        *slot = Some(value);
        turn.set(Some(readings));
        value
    })
}

/// The monotonic time: the turn's, or the clock's outside a turn.
pub fn now() -> Instant {
    reading(|r| &mut r.now, Instant::now)
}

/// The wall-clock time as the time since the Unix epoch (zero for a clock set before it): the
/// turn's, or the clock's outside a turn. Kept as a duration, converted once per turn (a
/// `SystemTime` to duration is the same ~55-instruction arithmetic as `Instant`'s).
pub fn unix_time() -> Duration {
    reading(|r| &mut r.unix, read_unix_time)
}

fn read_unix_time() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// [`now`] as a stamp: the turn's reading, converted once per turn.
pub fn stamp() -> Stamp {
    reading(|r| &mut r.stamp, || Stamp::of(now()))
}

/// The time since `earlier` (zero when `earlier` is later, as `Instant::elapsed` would have it).
pub fn since(earlier: Stamp) -> Duration {
    Duration::from_nanos(stamp().0.saturating_sub(earlier.0))
}

/// `future`, each poll of which is a turn.
pub fn turns<F: Future>(future: F) -> Turns<F> {
    Turns { future }
}

pin_project_lite::pin_project! {
    /// See [`turns`].
    pub struct Turns<F> {
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Turns<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Restored on the way out, unwinding included: a turn never outlives its poll, and a
        // turn inside another (nested `turns`) gives the outer one back its reading.
        struct Restore(Option<Readings>);
        impl Drop for Restore {
            fn drop(&mut self) {
                TURN.with(|turn| turn.set(self.0));
            }
        }
        let outer = TURN.with(|turn| turn.replace(Some(Readings::default())));
        let _restore = Restore(outer);
        self.project().future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (a bounded spin, not a sleep) until `read` has moved past `t`.
    fn past<T: PartialOrd>(t: T, read: impl Fn() -> T) {
        for _ in 0..100_000_000u64 {
            if read() > t {
                return;
            }
            std::hint::spin_loop();
        }
        panic!("the clock did not move");
    }

    fn clock_past(t: Instant) {
        past(t, Instant::now);
    }

    fn unix_past(t: Duration) {
        past(t, read_unix_time);
    }

    /// Polls `f` once as a turn, on this thread.
    fn one_turn<T>(f: impl FnOnce() -> T) -> T {
        let mut f = Some(f);
        let mut fut = std::pin::pin!(turns(std::future::poll_fn(move |_| {
            Poll::Ready((f.take().unwrap())())
        })));
        match fut
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            Poll::Ready(t) => t,
            Poll::Pending => unreachable!(),
        }
    }

    #[test]
    fn a_turn_reads_each_clock_once() {
        let (first, later, elapsed, unix, unix_later) = one_turn(|| {
            let first = now();
            let first_stamp = stamp();
            clock_past(first);
            let unix = unix_time();
            unix_past(unix);
            (first, now(), since(first_stamp), unix, unix_time())
        });
        assert_eq!(first, later);
        assert_eq!(elapsed, Duration::ZERO);
        assert_eq!(unix, unix_later);
    }

    #[test]
    fn a_stamp_is_the_turns_reading_and_durations_between_stamps_are_the_clocks() {
        let (reading, stamped, again) = one_turn(|| {
            let reading = now();
            let stamped = stamp();
            clock_past(reading);
            (reading, stamped, stamp())
        });
        assert_eq!(stamped, again, "one stamp per turn");
        assert_eq!(stamped, Stamp::of(reading), "the turn's own reading");
        // Outside a turn: a duration measured between stamps lies within the one measured
        // between Instants around it.
        let before = Instant::now();
        let start = stamp();
        clock_past(Instant::now() + Duration::from_millis(2));
        let measured = since(start);
        let outer = before.elapsed();
        assert!(measured >= Duration::from_millis(2), "{measured:?}");
        assert!(measured <= outer, "{measured:?} > {outer:?}");
        assert!(
            since(Stamp(u64::MAX)).is_zero(),
            "a later stamp: zero, not a panic"
        );
    }

    #[test]
    fn outside_a_turn_every_use_reads_the_clock() {
        let first = now();
        clock_past(first);
        assert!(now() > first);
        let unix = unix_time();
        unix_past(unix);
        assert!(unix_time() > unix);
        // And after a turn: the turn's reading does not stay behind.
        let in_turn = one_turn(now);
        clock_past(in_turn);
        assert!(now() > in_turn);
    }

    #[test]
    fn each_turn_reads_anew_and_a_nested_turn_gives_the_outer_its_reading_back() {
        let (outer, inner, after) = one_turn(|| {
            let outer = now();
            clock_past(outer);
            let inner = one_turn(now);
            (outer, inner, now())
        });
        assert!(inner > outer);
        assert_eq!(after, outer);
        let next = one_turn(now);
        assert!(next > outer);
    }

    #[test]
    fn a_panicking_poll_ends_its_turn() {
        let result = std::panic::catch_unwind(|| one_turn(|| -> Instant { panic!("in a turn") }));
        assert!(result.is_err());
        let first = now();
        clock_past(first);
        assert!(now() > first);
    }
}
