//! Arrival-rate and service-time estimates from successive samples.
//!
//! The throughput signal needs the arrival rate λ and the seconds one worker
//! spends per message `s`. Some sources measure λ (CloudWatch, RabbitMQ's
//! publish rate); every source measures depth, so λ is also estimated from
//! depth deltas: arrivals = Δdepth + departures, where departures follow
//! from Little's law applied to the workers (completions per second =
//! in-flight / s), or from `ready / s` while every worker is busy.
//!
//! `s` is learned the other way round, and only when the source measures λ:
//! departures = λ - Δdepth/Δt, and s = busy workers / departures.
//!
//! Both are smoothed with an exponential moving average whose weight depends
//! on the time between samples, so the estimate means the same thing at a
//! 1 s and a 30 s poll interval.

use std::time::{Duration, Instant};

/// Time constant of the arrival-rate average.
const ARRIVAL_TAU: Duration = Duration::from_secs(30);
/// Time constant of the learned service time (slower: it is a property of the
/// workers, not of the load).
const SERVICE_TAU: Duration = Duration::from_secs(120);
/// Samples closer together than this are too noisy to difference.
const MIN_DT: Duration = Duration::from_millis(500);
/// Samples further apart than this describe another regime; start over.
const MAX_DT: Duration = Duration::from_secs(3600);
/// Below this many completions per second a service-time estimate is noise.
const MIN_DEPARTURES: f64 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    at: Instant,
    depth: u64,
    visible: u64,
    in_flight: Option<u64>,
}

/// What one sample contributes to the estimates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Observation {
    /// Visible + in-flight + delayed, as far as measured.
    pub depth: u64,
    pub visible: u64,
    pub in_flight: Option<u64>,
    /// The source's own arrival rate, if it measures one.
    pub arrival_rate: Option<f64>,
    /// Workers that are up (ready, else desired).
    pub workers: u32,
}

/// The estimates after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Estimates {
    pub arrival_rate: Option<f64>,
    /// True when `arrival_rate` is qscale's estimate, not the source's figure.
    pub arrival_estimated: bool,
    pub seconds_per_message: Option<f64>,
    /// True when `seconds_per_message` was learned, not configured.
    pub service_learned: bool,
}

/// Running state of the estimator.
#[derive(Debug, Clone, Default)]
pub(crate) struct Estimator {
    prev: Option<Point>,
    arrival: Option<f64>,
    service: Option<f64>,
}

fn ewma(prev: Option<f64>, x: f64, dt: Duration, tau: Duration) -> f64 {
    match prev {
        None => x,
        Some(p) => {
            let alpha = 1.0 - (-dt.as_secs_f64() / tau.as_secs_f64()).exp();
            p + alpha * (x - p)
        }
    }
}

impl Estimator {
    /// Fold in one observation at `now`. `configured` is the configured
    /// seconds per message; when present nothing is learned.
    pub fn observe(&mut self, now: Instant, o: &Observation, configured: Option<f64>) -> Estimates {
        let point = Point {
            at: now,
            depth: o.depth,
            visible: o.visible,
            in_flight: o.in_flight,
        };
        if let Some(prev) = self.prev {
            let dt = now.saturating_duration_since(prev.at);
            if dt > MAX_DT {
                self.arrival = None;
            } else if dt >= MIN_DT {
                self.update(prev, point, dt, o, configured);
            } else {
                // Too close to difference: keep the older point as the base.
                return self.estimates(o, configured);
            }
        }
        self.prev = Some(point);
        self.estimates(o, configured)
    }

    fn update(
        &mut self,
        prev: Point,
        cur: Point,
        dt: Duration,
        o: &Observation,
        configured: Option<f64>,
    ) {
        let secs = dt.as_secs_f64();
        let growth = (cur.depth as f64 - prev.depth as f64) / secs;
        let saturated = prev.visible > 0 && cur.visible > 0;
        let busy = match (prev.in_flight, cur.in_flight) {
            (Some(a), Some(b)) => Some((a + b) as f64 / 2.0),
            _ if saturated => Some(f64::from(o.workers)),
            _ => None,
        };

        if configured.is_none()
            && let (Some(lambda), Some(busy)) = (o.arrival_rate, busy)
        {
            let departures = lambda - growth;
            if departures > MIN_DEPARTURES && busy > 0.0 {
                let s = (busy / departures).clamp(0.001, 3600.0);
                self.service = Some(ewma(self.service, s, dt, SERVICE_TAU));
            }
        }

        if o.arrival_rate.is_none() {
            let s = configured.or(self.service);
            let departures = match (s, busy) {
                (Some(s), Some(busy)) => busy / s,
                _ => 0.0,
            };
            let lambda = (growth + departures).max(0.0);
            self.arrival = Some(ewma(self.arrival, lambda, dt, ARRIVAL_TAU));
        }
    }

    fn estimates(&self, o: &Observation, configured: Option<f64>) -> Estimates {
        Estimates {
            arrival_rate: o.arrival_rate.or(self.arrival),
            arrival_estimated: o.arrival_rate.is_none() && self.arrival.is_some(),
            seconds_per_message: configured.or(self.service),
            service_learned: configured.is_none() && self.service.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(
        depth: u64,
        visible: u64,
        in_flight: Option<u64>,
        arrival: Option<f64>,
        workers: u32,
    ) -> Observation {
        Observation {
            depth,
            visible,
            in_flight,
            arrival_rate: arrival,
            workers,
        }
    }

    #[test]
    fn arrival_rate_is_estimated_from_growth_plus_completions() {
        // 4 workers at 0.5 s/msg complete 8 msg/s while saturated; depth grows
        // by 2 msg/s, so 10 msg/s arrive.
        let t0 = Instant::now();
        let mut e = Estimator::default();
        e.observe(t0, &obs(100, 96, Some(4), None, 4), Some(0.5));
        let est = e.observe(
            t0 + Duration::from_secs(10),
            &obs(120, 116, Some(4), None, 4),
            Some(0.5),
        );
        let lambda = est.arrival_rate.unwrap();
        assert!((lambda - 10.0).abs() < 1e-9, "{lambda}");
        assert!(est.arrival_estimated);
    }

    #[test]
    fn service_time_is_learned_when_the_source_measures_arrivals() {
        // 10 msg/s arrive, depth grows by 2 msg/s: 8 msg/s depart with 4 busy
        // workers -> 0.5 s per message.
        let t0 = Instant::now();
        let mut e = Estimator::default();
        e.observe(t0, &obs(100, 96, Some(4), Some(10.0), 4), None);
        let est = e.observe(
            t0 + Duration::from_secs(10),
            &obs(120, 116, Some(4), Some(10.0), 4),
            None,
        );
        let s = est.seconds_per_message.unwrap();
        assert!((s - 0.5).abs() < 1e-9, "{s}");
        assert!(est.service_learned);
        assert!(!est.arrival_estimated);
    }

    #[test]
    fn nothing_is_learned_without_departures() {
        let t0 = Instant::now();
        let mut e = Estimator::default();
        e.observe(t0, &obs(0, 0, Some(0), Some(0.0), 2), None);
        let est = e.observe(
            t0 + Duration::from_secs(10),
            &obs(0, 0, Some(0), Some(0.0), 2),
            None,
        );
        assert_eq!(est.seconds_per_message, None);
    }

    #[test]
    fn samples_too_close_together_are_not_differenced() {
        let t0 = Instant::now();
        let mut e = Estimator::default();
        e.observe(t0, &obs(0, 0, None, None, 1), Some(1.0));
        let est = e.observe(
            t0 + Duration::from_millis(100),
            &obs(1000, 1000, None, None, 1),
            Some(1.0),
        );
        assert_eq!(est.arrival_rate, None);
    }
}
