//! Arrival-rate and service-time estimates from successive samples.
//!
//! The throughput signal needs the arrival rate λ and the seconds one worker
//! spends per message `s`. Some sources measure λ (CloudWatch, RabbitMQ's
//! publish rate); every source measures depth, so λ is also estimated from
//! depth deltas: arrivals = Δdepth + departures, where departures follow
//! from Little's law applied to the workers (completions per second =
//! in-flight / s), or from `ready / s` while every worker is busy.
//!
//! `s` is learned the other way round when the source measures λ:
//! departures = λ - Δdepth/Δt, and s = busy workers / departures. When it
//! does not (SQS without CloudWatch, AMQP without the management API, Redis
//! lists), `s` is learned from drains: while messages wait, busy workers
//! take at least as many messages as the visible count drops, so
//! s <= busy·Δt / (visible drop). That bound is tight when few messages
//! arrive during the drain (after a burst) and loose otherwise, so the
//! estimate follows lower bounds quickly; a higher bound moves it (slowly)
//! only when the drain was slower even counting the arrivals the current
//! estimates expect during it. Under a steady load every drain has
//! arrivals in it, and following the raw bounds up crept `s` to several
//! times the truth, which made the throughput signal overreact to every
//! wobble of the depth.
//!
//! Both rates are smoothed with an exponential moving average whose weight
//! depends on the time between samples, so the estimate means the same
//! thing at a 1 s and a 30 s poll interval.
//!
//! **The age of the oldest waiting message**, for sources that cannot
//! measure it (or whose measurement is stale), comes from the same
//! bookkeeping: the estimator keeps the cumulative number of arrivals at
//! each sample. Workers take the oldest message first, so the `visible`
//! messages waiting now are the last `visible` to arrive, and the oldest of
//! them arrived when the cumulative count was `visible` below today's. Two
//! facts bound it: it cannot be older than the last sample that saw the
//! queue empty, and while nothing is known yet it is unknown, never zero.

use std::collections::VecDeque;
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
/// A fall of the visible count smaller than this says too little about the
/// drain rate (approximate counts move by a few messages on their own), so
/// a slow drain is read over several polls.
const MIN_DRAIN: u64 = 3;
/// A drain that suggests a shorter service time is followed this fast...
const DRAIN_DOWN_TAU: Duration = Duration::from_secs(30);
/// ...and one that suggests a longer one this slowly (it may just be a
/// drain with arrivals in it).
const DRAIN_UP_TAU: Duration = Duration::from_secs(600);
/// Arrival history points kept for the age estimate; older ones are thinned
/// out (every other one dropped) so a long backlog stays covered. The
/// newest half stays at poll resolution, and further back the spacing
/// grows with the age, so an interpolated age is off by at most about a
/// sixtieth of itself.
const AGE_POINTS: usize = 128;

/// One point of the arrival history: 8 bytes, since every scaler keeps up
/// to [`AGE_POINTS`] of them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Arrived {
    /// Milliseconds since the history's `base`.
    at_ms: u32,
    /// Arrivals since `base`. An `f32` is exact to 16.7 million messages;
    /// past that its rounding moves an age by about 6e-8 of the history's
    /// span (under a second over months), because more arrivals in the
    /// same span mean a higher rate.
    total: f32,
}

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
    /// Workers that are up (ready, else desired); in a pool that drains
    /// several queues, this queue's share of them.
    pub workers: f64,
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
    /// Estimated age of the oldest visible message; `None` while unknown.
    pub oldest_age: Option<Duration>,
    /// `oldest_age` is only a lower bound: the waiting messages arrived
    /// before the history starts and the queue was never seen empty.
    pub oldest_age_at_least: bool,
}

/// Running state of the estimator.
#[derive(Debug, Clone, Default)]
pub(crate) struct Estimator {
    prev: Option<Point>,
    arrival: Option<f64>,
    /// Learned from a measured arrival rate.
    service: Option<f64>,
    /// Learned from drains (an upper bound), when arrivals are not measured.
    drain_service: Option<f64>,
    /// The drain being watched.
    drain_run: Option<DrainRun>,
    /// Cumulative arrivals at each sample, relative to `base`.
    arrived: VecDeque<Arrived>,
    /// Arrivals since `base`, unrounded: the points round it, the sum
    /// must not (a fraction of a message a poll would vanish into an
    /// `f32` of millions).
    total: f64,
    /// The time the history's points count from; moved forward to its
    /// oldest point when the queue is seen empty or the offsets would
    /// outgrow 32 bits (49 days).
    base: Option<Instant>,
    /// Arrivals the rebasing took off `total` so far: with it, the tests
    /// compare ages against one running count.
    #[cfg(test)]
    rebased: f64,
    /// The last sample that saw no visible message.
    last_empty: Option<Instant>,
    /// Estimated arrivals that came out negative, to be netted against the
    /// next positive ones (see `update`).
    arrival_debt: f64,
}

/// A run of samples with messages waiting, watched to learn `s`.
#[derive(Debug, Clone, Copy)]
struct DrainRun {
    /// Busy worker-seconds since the run started.
    worked: f64,
    /// The visible count it started from.
    start: u64,
    /// Messages the current arrival estimate says came in during the run.
    arrived: f64,
}

impl DrainRun {
    fn from(visible: u64) -> DrainRun {
        DrainRun {
            worked: 0.0,
            start: visible,
            arrived: 0.0,
        }
    }
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
        match self.prev {
            Some(prev) => {
                let dt = now.saturating_duration_since(prev.at);
                if dt > MAX_DT {
                    self.arrival = None;
                    self.restart_history(now);
                } else if dt >= MIN_DT {
                    let arrived = self.update(prev, point, dt, o, configured);
                    self.total += arrived;
                    self.record_arrivals(now);
                } else {
                    // Too close to difference: keep the older point as the base.
                    return self.estimates(now, o, configured);
                }
            }
            None => self.restart_history(now),
        }
        if o.visible == 0 {
            self.last_empty = Some(now);
            self.forget_before_empty(now);
        }
        self.prev = Some(point);
        self.estimates(now, o, configured)
    }

    fn restart_history(&mut self, now: Instant) {
        self.arrived.clear();
        self.base = Some(now);
        self.total = 0.0;
        self.arrived.push_back(Arrived {
            at_ms: 0,
            total: 0.0,
        });
    }

    /// Milliseconds from `base` to `at`, if they fit the 32 bits a point
    /// keeps.
    fn offset(&self, at: Instant) -> Option<u32> {
        let b = self.base?;
        u32::try_from(at.saturating_duration_since(b).as_millis()).ok()
    }

    /// A stored time as an `Instant`.
    fn instant(&self, p: Arrived, now: Instant) -> Instant {
        self.base.unwrap_or(now) + Duration::from_millis(u64::from(p.at_ms))
    }

    /// A stored cumulative count.
    fn total_at(p: Arrived) -> f64 {
        f64::from(p.total)
    }

    /// Count the points from the oldest one: it becomes time 0 and count 0.
    /// Ages only ever compare points with each other, so nothing changes
    /// but the size of the numbers.
    fn rebase(&mut self) {
        let Some(first) = self.arrived.front().copied() else {
            return;
        };
        let (shift_ms, shift_total) = (first.at_ms, first.total);
        if shift_ms == 0 && shift_total == 0.0 {
            return;
        }
        self.base = self
            .base
            .map(|b| b + Duration::from_millis(u64::from(shift_ms)));
        self.total -= f64::from(shift_total);
        #[cfg(test)]
        {
            self.rebased += f64::from(shift_total);
        }
        for p in self.arrived.iter_mut() {
            p.at_ms -= shift_ms;
            p.total -= shift_total;
        }
    }

    fn record_arrivals(&mut self, now: Instant) {
        let at_ms = match self.offset(now) {
            Some(ms) => ms,
            None => {
                // 49 days without the queue seen empty: count from the
                // oldest point, and drop points until the span fits.
                self.rebase();
                loop {
                    if let Some(ms) = self.offset(now) {
                        break ms;
                    }
                    if self.arrived.len() <= 1 {
                        self.restart_history(now);
                        return;
                    }
                    self.arrived.pop_front();
                    self.rebase();
                }
            }
        };
        // The history grows as it fills, by doubling, but never past one
        // point more than it keeps (a plain push would double 128 to 256).
        if self.arrived.len() == self.arrived.capacity() {
            let want = (self.arrived.len() * 2).clamp(4, AGE_POINTS + 1);
            self.arrived.reserve_exact(want - self.arrived.len());
        }
        self.arrived.push_back(Arrived {
            at_ms,
            total: self.total as f32,
        });
        if self.arrived.len() > AGE_POINTS {
            // Thin the older half: drop every other point. Cumulative counts
            // stay exact at the points kept; only the resolution coarsens.
            let half = self.arrived.len() / 2;
            let mut i = 0;
            self.arrived.retain(|_| {
                let keep = i >= half || i % 2 == 0;
                i += 1;
                keep
            });
        }
    }

    /// Drop the points the age estimate can no longer use once the queue
    /// was seen empty at `empty`: an age is capped by the time since then,
    /// so of the points at or before it only the newest one counts (an age
    /// interpolated between it and the next may still fall after `empty`).
    /// A queue that empties now and then keeps a short history instead of
    /// [`AGE_POINTS`]; the capacity follows it down, with slack so a queue
    /// that fills and empties does not reallocate every poll. What is left
    /// is counted from its oldest point, so the numbers stay small.
    fn forget_before_empty(&mut self, empty: Instant) {
        let cut = self.offset(empty).unwrap_or(u32::MAX);
        while self.arrived.len() >= 2 && self.arrived[1].at_ms <= cut {
            self.arrived.pop_front();
        }
        self.rebase();
        if self.arrived.capacity() > 16 && self.arrived.len() < self.arrived.capacity() / 4 {
            self.arrived.shrink_to(self.arrived.len() * 2);
        }
    }

    /// The age of the oldest of the `visible` messages, if anything can be
    /// said: the time since the cumulative arrivals were `visible` below
    /// today's, capped by the time since the queue was last seen empty.
    /// The second value says the age is only a lower bound.
    fn oldest_age(&self, now: Instant, visible: u64) -> Option<(Duration, bool)> {
        if visible == 0 {
            return Some((Duration::ZERO, false));
        }
        let bound = self.last_empty.map(|t| now.saturating_duration_since(t));
        let total = Self::total_at(*self.arrived.back()?);
        let target = total - visible as f64;
        let mut newer: Option<(Instant, f64)> = None;
        let mut found = None;
        for &p in self.arrived.iter().rev() {
            let (at, cum) = (self.instant(p, now), Self::total_at(p));
            if cum <= target {
                let t = match newer {
                    Some((nt, nc)) if nc > cum => {
                        let frac = ((target - cum) / (nc - cum)).clamp(0.0, 1.0);
                        at + nt.saturating_duration_since(at).mul_f64(frac)
                    }
                    _ => at,
                };
                found = Some(now.saturating_duration_since(t));
                break;
            }
            newer = Some((at, cum));
        }
        match (found, bound) {
            (Some(a), Some(b)) => Some((a.min(b), false)),
            (Some(a), None) => Some((a, false)),
            // The waiting messages arrived before the history starts: the
            // queue has not been seen empty since, so that is the bound.
            (None, Some(b)) => Some((b, false)),
            // Older than the whole history, for all we know.
            (None, None) => {
                let first = self.instant(*self.arrived.front()?, now);
                (self.arrived.len() >= 2).then(|| (now.saturating_duration_since(first), true))
            }
        }
    }

    /// Update the rates from one interval; returns the messages estimated
    /// to have arrived in it.
    fn update(
        &mut self,
        prev: Point,
        cur: Point,
        dt: Duration,
        o: &Observation,
        configured: Option<f64>,
    ) -> f64 {
        let secs = dt.as_secs_f64();
        let growth = (cur.depth as f64 - prev.depth as f64) / secs;
        let saturated = prev.visible > 0 && cur.visible > 0;
        let busy = match (prev.in_flight, cur.in_flight) {
            (Some(a), Some(b)) => Some((a + b) as f64 / 2.0),
            _ if saturated => Some(o.workers),
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

        if configured.is_none() && o.arrival_rate.is_none() {
            self.watch_drain(prev, cur, saturated, busy, dt);
        }

        // Messages in: the measured rate, else growth plus what the busy
        // workers completed; never less than the visible count grew.
        let visible_growth = cur.visible.saturating_sub(prev.visible) as f64;
        match o.arrival_rate {
            Some(lambda) => (lambda * secs).max(visible_growth),
            None => {
                let s = configured.or(self.service).or(self.drain_service);
                let departures = match (s, busy) {
                    (Some(s), Some(busy)) => busy / s,
                    _ => 0.0,
                };
                let raw = growth + departures;
                self.arrival = Some(ewma(self.arrival, raw.max(0.0), dt, ARRIVAL_TAU));
                // Noise makes `raw` negative in some intervals of a drain and
                // positive in others; clipping each at zero would count the
                // positive half as arrivals. A negative interval is carried
                // over and paid off by the next positive ones instead.
                let mut arrived = raw * secs - self.arrival_debt;
                self.arrival_debt = if arrived < 0.0 {
                    (-arrived).min(cur.depth as f64)
                } else {
                    0.0
                };
                arrived = arrived.max(0.0);
                arrived.max(visible_growth)
            }
        }
    }

    /// Learn `s` from a run of samples with messages waiting: over the run
    /// the busy workers took at least as many messages as the visible count
    /// fell, so s <= busy worker-seconds / fall. The run is read out once it
    /// fell by `MIN_DRAIN` messages (a slow drain spans several polls), and
    /// starts over at a higher count when the queue grows instead.
    fn watch_drain(
        &mut self,
        prev: Point,
        cur: Point,
        saturated: bool,
        busy: Option<f64>,
        dt: Duration,
    ) {
        let Some(busy) = busy.filter(|_| saturated) else {
            self.drain_run = None;
            return;
        };
        let mut run = self.drain_run.unwrap_or(DrainRun::from(prev.visible));
        run.worked += busy * dt.as_secs_f64();
        run.arrived += self.arrival.unwrap_or(0.0) * dt.as_secs_f64();
        if cur.visible > run.start {
            self.drain_run = Some(DrainRun::from(cur.visible));
        } else if run.start - cur.visible >= self.min_drain(run.start) && run.worked > 0.0 {
            let fell = (run.start - cur.visible) as f64;
            let bound = (run.worked / fell).clamp(0.001, 3600.0);
            self.drain_service = match self.drain_service {
                None => Some(bound),
                // A faster drain than `s` allows: `s` is too long.
                Some(d) if bound < d => Some(ewma(Some(d), bound, dt, DRAIN_DOWN_TAU)),
                // A slower one says something only if it is slower even
                // with the arrivals the current estimates expect during
                // it: at a steady load the bound is loose by exactly those
                // arrivals, and following it crept `s` up to four times
                // the truth in the simulator.
                Some(d) => {
                    let s = (run.worked / (fell + run.arrived)).clamp(0.001, 3600.0);
                    Some(if s > d {
                        ewma(Some(d), s, dt, DRAIN_UP_TAU)
                    } else {
                        d
                    })
                }
            };
            self.drain_run = Some(DrainRun::from(cur.visible));
        } else {
            self.drain_run = Some(run);
        }
    }

    /// How far a drain must fall before it is read out. The first reading
    /// becomes the estimate as it is, so it waits for a tenth of the
    /// backlog: a fall of 3 of 1,300 messages, while nearly as many
    /// arrived as 40 busy workers took, read as 133 s per message where
    /// the truth was 2, and nothing after that flash crowd brought it down.
    fn min_drain(&self, start: u64) -> u64 {
        match self.drain_service {
            None => MIN_DRAIN.max(start / 10),
            Some(_) => MIN_DRAIN,
        }
    }

    fn estimates(&self, now: Instant, o: &Observation, configured: Option<f64>) -> Estimates {
        let learned = self.service.or(self.drain_service);
        let age = self.oldest_age(now, o.visible);
        Estimates {
            arrival_rate: o.arrival_rate.or(self.arrival),
            arrival_estimated: o.arrival_rate.is_none() && self.arrival.is_some(),
            seconds_per_message: configured.or(learned),
            service_learned: configured.is_none() && learned.is_some(),
            oldest_age: age.map(|(a, _)| a),
            oldest_age_at_least: age.is_some_and(|(_, at_least)| at_least),
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
            workers: f64::from(workers),
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

    #[test]
    fn service_time_is_learned_from_a_drain_when_arrivals_are_not_measured() {
        // 10 busy workers drain 50 visible messages in 10 s with nothing
        // arriving: 5 msg/s, so 2 s per message.
        let t0 = Instant::now();
        let mut e = Estimator::default();
        e.observe(t0, &obs(110, 100, Some(10), None, 10), None);
        let est = e.observe(
            t0 + Duration::from_secs(10),
            &obs(60, 50, Some(10), None, 10),
            None,
        );
        let s = est.seconds_per_message.unwrap();
        assert!((s - 2.0).abs() < 1e-9, "{s}");
        assert!(est.service_learned);
        // A drain with arrivals in it suggests a longer time; it is followed
        // only slowly.
        let est = e.observe(
            t0 + Duration::from_secs(20),
            &obs(50, 40, Some(10), None, 10),
            None,
        );
        let s = est.seconds_per_message.unwrap();
        assert!(s > 2.0 && s < 2.5, "{s}");
    }

    #[test]
    fn a_steady_load_does_not_creep_the_learned_service_time_up() {
        // 30 workers at 2 s per message: first a burst of 600 drained with
        // nothing arriving (s = 2 is learned), then an hour of 15 msg/s,
        // exactly what the workers take, arriving unevenly: 100, 100, 50,
        // 50 per 5 s. Short backlogs form and drain while messages keep
        // arriving, so every drain looks three times too slow (a bound of
        // 6 s); the arrivals the estimates expect explain it, so `s` stays.
        let t0 = Instant::now();
        let step = Duration::from_secs(5);
        let mut e = Estimator::default();
        let mut t = t0;
        let mut visible = 600u64;
        loop {
            e.observe(t, &obs(visible + 30, visible, Some(30), None, 30), None);
            if visible == 0 {
                break;
            }
            visible = visible.saturating_sub(75);
            t += step;
        }
        let learned = e
            .estimates(t, &obs(30, 0, Some(30), None, 30), None)
            .seconds_per_message
            .unwrap();
        assert!((learned - 2.0).abs() < 0.2, "{learned}");
        for i in 0..720 {
            t += step;
            let arrived = if i % 4 < 2 { 100 } else { 50 };
            visible = (visible + arrived).saturating_sub(75);
            e.observe(t, &obs(visible + 30, visible, Some(30), None, 30), None);
        }
        let est = e.estimates(t, &obs(visible + 30, visible, Some(30), None, 30), None);
        let s = est.seconds_per_message.unwrap();
        assert!(s < 2.5, "crept up to {s}");
        let lambda = est.arrival_rate.unwrap();
        assert!((lambda - 15.0).abs() < 3.0, "{lambda}");
    }

    #[test]
    fn the_first_reading_waits_for_a_tenth_of_the_backlog_to_drain() {
        // 40 busy workers, 1,326 waiting: 3 fewer after 10 s (nearly as
        // many arrived as were taken) would read as 133 s per message; the
        // first reading waits until 133 have drained.
        let t0 = Instant::now();
        let mut e = Estimator::default();
        e.observe(t0, &obs(1366, 1326, Some(40), None, 40), None);
        let est = e.observe(
            t0 + Duration::from_secs(10),
            &obs(1363, 1323, Some(40), None, 40),
            None,
        );
        assert_eq!(est.seconds_per_message, None);
        let est = e.observe(
            t0 + Duration::from_secs(40),
            &obs(1140, 1100, Some(40), None, 40),
            None,
        );
        // 40 workers x 40 s over 226 messages: 7 s, an upper bound far
        // closer than 133.
        let s = est.seconds_per_message.unwrap();
        assert!((s - 1600.0 / 226.0).abs() < 1e-6, "{s}");
    }

    #[test]
    fn small_drops_teach_nothing() {
        let t0 = Instant::now();
        let mut e = Estimator::default();
        e.observe(t0, &obs(12, 10, Some(2), None, 2), None);
        let est = e.observe(
            t0 + Duration::from_secs(10),
            &obs(10, 8, Some(2), None, 2),
            None,
        );
        assert_eq!(est.seconds_per_message, None);
    }

    #[test]
    fn age_is_the_time_since_the_visible_messages_started_arriving() {
        // Empty at 0; 30 messages arrive by 10 s, 30 more by 20 s; no worker
        // takes any. At 40 s the oldest of the 60 arrived right after 0 s.
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut e = Estimator::default();
        e.observe(at(0), &obs(0, 0, Some(0), None, 0), Some(1.0));
        e.observe(at(10), &obs(30, 30, Some(0), None, 0), Some(1.0));
        e.observe(at(20), &obs(60, 60, Some(0), None, 0), Some(1.0));
        let est = e.observe(at(40), &obs(60, 60, Some(0), None, 0), Some(1.0));
        assert_eq!(est.oldest_age, Some(Duration::from_secs(40)));
        assert!(!est.oldest_age_at_least);
        // 30 workers taking 5 s a message take the first 30 (in flight from
        // about 40 s, done by 50 s): the oldest visible one is now the first
        // of the second batch, which arrived from 10 s on. Counting the
        // completions from in-flight averages blurs this a little.
        e.observe(at(45), &obs(60, 30, Some(30), None, 30), Some(5.0));
        let est = e.observe(at(50), &obs(30, 30, Some(0), None, 30), Some(5.0));
        let age = est.oldest_age.unwrap().as_secs_f64();
        assert!((30.0..=40.0).contains(&age), "{age}");
    }

    #[test]
    fn age_is_capped_by_the_last_time_the_queue_was_seen_empty() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut e = Estimator::default();
        e.observe(at(0), &obs(5, 5, Some(0), None, 1), Some(1.0));
        e.observe(at(10), &obs(0, 0, Some(0), None, 1), Some(1.0));
        let est = e.observe(at(20), &obs(3, 3, Some(0), None, 1), Some(1.0));
        let age = est.oldest_age.unwrap();
        assert!(age <= Duration::from_secs(10), "{age:?}");
        assert!(!est.oldest_age_at_least);
    }

    #[test]
    fn a_backlog_older_than_the_history_is_only_a_lower_bound() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut e = Estimator::default();
        let first = e.observe(at(0), &obs(500, 500, Some(0), None, 0), Some(1.0));
        assert_eq!(
            first.oldest_age, None,
            "nothing is known on the first sample"
        );
        let est = e.observe(at(30), &obs(500, 500, Some(0), None, 0), Some(1.0));
        assert_eq!(est.oldest_age, Some(Duration::from_secs(30)));
        assert!(est.oldest_age_at_least);
    }

    #[test]
    fn an_empty_queue_has_age_zero_and_the_history_stays_bounded() {
        let t0 = Instant::now();
        let mut e = Estimator::default();
        for i in 0..10_000u64 {
            let v = 1 + i % 7;
            let est = e.observe(
                t0 + Duration::from_secs(i),
                &obs(v, v, Some(0), None, 0),
                Some(1.0),
            );
            assert_eq!(est.oldest_age.is_some(), i > 0, "{i}");
        }
        assert!(e.arrived.len() <= AGE_POINTS, "{}", e.arrived.len());
        assert!(
            e.arrived.capacity() <= AGE_POINTS + 1,
            "{}",
            e.arrived.capacity()
        );
        let est = e.observe(
            t0 + Duration::from_secs(10_001),
            &obs(0, 0, Some(0), None, 0),
            Some(1.0),
        );
        assert_eq!(est.oldest_age, Some(Duration::ZERO));
    }

    #[test]
    fn a_queue_seen_empty_keeps_only_the_history_after_it_and_the_same_ages() {
        // Two estimators on the same samples: one whose history is cut at
        // every empty poll, one that never saw the empty polls' cut (its
        // history rebuilt from the same points without forgetting).
        let t0 = Instant::now();
        let mut e = Estimator::default();
        let mut full: Vec<(Instant, f64)> = Vec::new();
        let mut visible = 0u64;
        for i in 0..600u64 {
            // Bursts of 40 every 100 s, drained at 2 a second.
            if i % 100 == 10 {
                visible += 40;
            }
            visible = visible.saturating_sub(2);
            let now = t0 + Duration::from_secs(i);
            let est = e.observe(
                now,
                &obs(visible, visible, Some(0), Some(0.4), 0),
                Some(0.5),
            );
            let total = Estimator::total_at(*e.arrived.back().expect("a point")) + e.rebased;
            full.push((now, total));
            // The reference: the same search over every point ever made.
            let want = if visible == 0 {
                Some(Duration::ZERO)
            } else {
                let target = total - visible as f64;
                let bound = e.last_empty.map(|t| now.saturating_duration_since(t));
                let mut newer: Option<(Instant, f64)> = None;
                let mut found = None;
                for &(at, cum) in full.iter().rev() {
                    if cum <= target {
                        let t = match newer {
                            Some((nt, nc)) if nc > cum => {
                                let frac = ((target - cum) / (nc - cum)).clamp(0.0, 1.0);
                                at + nt.saturating_duration_since(at).mul_f64(frac)
                            }
                            _ => at,
                        };
                        found = Some(now.saturating_duration_since(t));
                        break;
                    }
                    newer = Some((at, cum));
                }
                match (found, bound) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            assert_eq!(est.oldest_age, want, "second {i}");
        }
        // The last burst drained at second 530 and the queue stayed empty:
        // the point of the last empty poll is all that is left.
        assert_eq!(e.arrived.len(), 1);
        assert!(e.arrived.capacity() <= 16, "{}", e.arrived.capacity());
    }

    #[test]
    fn an_arrival_history_point_takes_eight_bytes() {
        assert_eq!(std::mem::size_of::<Arrived>(), 8);
    }

    #[test]
    fn a_queue_never_seen_empty_for_months_still_gets_its_age_right() {
        // 1,000 messages a second for 120 days (10 billion, far past an
        // f32's exact range) with a standing backlog of 5,000, sampled
        // every 30 s: the oldest waited 5 s all along, and the history
        // passed its 49-day offset range twice on the way.
        let t0 = Instant::now();
        let mut e = Estimator::default();
        let rate = 1000.0;
        let mut last = None;
        for i in 0..(120 * 86_400 / 30) {
            let now = t0 + Duration::from_secs(i * 30);
            let est = e.observe(now, &obs(5000, 5000, Some(0), Some(rate), 0), Some(0.01));
            last = est.oldest_age;
            if i > 10 {
                let age = est.oldest_age.expect("an age").as_secs_f64();
                assert!((age - 5.0).abs() < 0.5, "day {}: {age}", i * 30 / 86_400);
            }
        }
        assert!(last.is_some());
        assert!(e.arrived.len() <= AGE_POINTS);
    }
}
