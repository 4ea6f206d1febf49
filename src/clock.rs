//! The daemon's clock, which `qscale run --time-scale N` makes run N times
//! faster than the wall clock (benchmarks and demos only).
//!
//! The policy is pure and takes `now` as an argument, so every duration it
//! applies (stabilization windows, rate-limit periods, `scale_to_zero_after`,
//! the time constants of the learned rates, the age objective) follows
//! whatever clock the caller reads. A benchmark that replays a 30-minute
//! trace in 3 minutes needs all of them, and the poll interval, to run ten
//! times faster at once; scaling each setting by hand would miss the
//! defaults and the constants. So the daemon reads time and sleeps for
//! policy purposes only through this type, and a scale of 1 is the plain
//! wall clock.
//!
//! What stays on the wall clock: network timeouts to peers (a peer does not
//! answer faster because our clock is fast), metric durations, log
//! throttling, and leader-election leases (their timestamps are compared
//! across processes that do not share our clock).
//!
//! Time is tokio's, so a paused tokio runtime drives a scaled clock too.

use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

/// The largest accepted scale: beyond it a poll's network round trips take
/// longer than the virtual seconds they stand for.
pub const MAX_TIME_SCALE: f64 = 1000.0;

/// Why a `--time-scale` value was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeScaleError {
    #[error("time scale must be a number (e.g. 10), got {0:?}")]
    NotANumber(String),
    #[error("time scale must be greater than 0 and at most {MAX_TIME_SCALE}, got {0}")]
    OutOfRange(f64),
}

/// How many virtual seconds pass per real second: positive, finite, at most
/// [`MAX_TIME_SCALE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeScale(f64);

impl TimeScale {
    /// The wall clock.
    pub const REAL: TimeScale = TimeScale(1.0);

    pub fn new(n: f64) -> Result<TimeScale, TimeScaleError> {
        // NaN fails every comparison, so it is out of this range too.
        if !(n.is_finite() && n > 0.0 && n <= MAX_TIME_SCALE) {
            return Err(TimeScaleError::OutOfRange(n));
        }
        Ok(TimeScale(n))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl Default for TimeScale {
    fn default() -> TimeScale {
        TimeScale::REAL
    }
}

impl FromStr for TimeScale {
    type Err = TimeScaleError;

    fn from_str(s: &str) -> Result<TimeScale, TimeScaleError> {
        let n: f64 = s
            .trim()
            .parse()
            .map_err(|_| TimeScaleError::NotANumber(s.to_string()))?;
        TimeScale::new(n)
    }
}

impl std::fmt::Display for TimeScale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A clock that starts at the real time it was made and then runs `scale`
/// times faster. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    scale: f64,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::real()
    }
}

impl Clock {
    /// The wall clock (tokio's).
    pub fn real() -> Clock {
        Clock::scaled(TimeScale::REAL)
    }

    /// A clock running `scale` times faster than the wall clock from now on.
    pub fn scaled(scale: TimeScale) -> Clock {
        Clock {
            start: Instant::now(),
            scale: scale.get(),
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    pub fn is_real(&self) -> bool {
        self.scale == 1.0
    }

    /// The virtual now: the start plus the real time elapsed since, times
    /// the scale.
    pub fn now(&self) -> Instant {
        let real = Instant::now();
        if self.is_real() {
            return real;
        }
        let elapsed = self.to_virtual(real.saturating_duration_since(self.start));
        // Only a clock left running for centuries overflows; the real time
        // is then the least wrong answer and never panics.
        self.start.checked_add(elapsed).unwrap_or(real)
    }

    /// The real time a virtual duration takes.
    pub fn to_real(&self, virtual_d: Duration) -> Duration {
        Duration::try_from_secs_f64(virtual_d.as_secs_f64() / self.scale).unwrap_or(Duration::MAX)
    }

    /// The virtual time a real duration stands for.
    pub fn to_virtual(&self, real_d: Duration) -> Duration {
        Duration::try_from_secs_f64(real_d.as_secs_f64() * self.scale).unwrap_or(Duration::MAX)
    }

    /// Sleep for a virtual duration.
    pub async fn sleep(&self, virtual_d: Duration) {
        tokio::time::sleep(self.to_real(virtual_d)).await
    }

    /// Sleep until a virtual instant (at once if it has passed).
    pub async fn sleep_until(&self, at: Instant) {
        self.sleep(at.saturating_duration_since(self.now())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_scale_is_a_positive_finite_number_up_to_the_maximum() {
        assert_eq!("10".parse::<TimeScale>().unwrap().get(), 10.0);
        assert_eq!(" 0.5 ".parse::<TimeScale>().unwrap().get(), 0.5);
        assert_eq!("1000".parse::<TimeScale>().unwrap().get(), 1000.0);
        for bad in ["0", "-1", "NaN", "inf", "-inf", "1001", "1e400"] {
            let e = bad.parse::<TimeScale>().unwrap_err();
            assert!(matches!(e, TimeScaleError::OutOfRange(_)), "{bad}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = "ten".parse::<TimeScale>().unwrap_err();
        assert_eq!(e, TimeScaleError::NotANumber("ten".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_scaled_clock_runs_n_times_faster_and_sleeps_n_times_shorter() {
        let clock = Clock::scaled(TimeScale::new(10.0).unwrap());
        let real0 = Instant::now();
        let v0 = clock.now();
        clock.sleep(Duration::from_secs(30)).await;
        assert_eq!(real0.elapsed(), Duration::from_secs(3));
        assert_eq!(clock.now() - v0, Duration::from_secs(30));
        let target = clock.now() + Duration::from_secs(60);
        clock.sleep_until(target).await;
        assert_eq!(real0.elapsed(), Duration::from_secs(9));
        // A passed instant does not sleep.
        clock.sleep_until(v0).await;
        assert_eq!(real0.elapsed(), Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn the_real_clock_is_tokios_clock() {
        let clock = Clock::real();
        let t = Instant::now();
        assert_eq!(clock.now(), t);
        clock.sleep(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), t + Duration::from_secs(5));
    }

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let slow = Clock::scaled(TimeScale::new(1e-300).unwrap());
        assert_eq!(slow.to_real(Duration::from_secs(1)), Duration::MAX);
        let fast = Clock::scaled(TimeScale::new(1000.0).unwrap());
        assert_eq!(fast.to_virtual(Duration::MAX), Duration::MAX);
    }
}
