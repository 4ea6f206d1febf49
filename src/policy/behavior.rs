//! Stabilization windows and rate limits, with the HPA's published semantics.
//!
//! Kept apart from the signals because these steps are about *history*
//! (recent recommendations, recent scale events), and because matching the
//! HPA here exactly is what lets users carry their `behavior` settings over.
//!
//! - Stabilization: scaling up uses the *lowest* recommendation within the
//!   up-window, scaling down the *highest* within the down-window; the current
//!   count is then moved only as far as both allow.
//! - Rate limits: for each limit, the replicas at the start of its period are
//!   the current count minus what was added (plus what was removed) within the
//!   period; the limit allows `start + pods` or `ceil(start * (1 + percent))`
//!   up, `start - pods` or `floor(start * (1 - percent))` down; `select`
//!   picks the most permissive (`max`), the least (`min`), or none
//!   (`disabled`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::config::{Behavior, LimitAmount, SelectPolicy};

/// True when `at` lies strictly inside the window of length `window` ending
/// at `now` (the HPA's `timestamp.After(now - window)`), without ever
/// subtracting from an `Instant` (which could underflow).
pub(crate) fn within(at: Instant, now: Instant, window: Duration) -> bool {
    now.saturating_duration_since(at) < window
}

/// A replica change qscale made, remembered for rate limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScaleEvent {
    pub at: Instant,
    /// Positive for scale-up, negative for scale-down.
    pub delta: i64,
}

/// History the behavior steps need.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    recommendations: VecDeque<(Instant, u32)>,
    events: VecDeque<ScaleEvent>,
    /// The count found at the first decision: for one down-window after
    /// qscale starts it acts as a recommendation, so a restart of qscale
    /// never scales down before a full window of evidence (the HPA, with an
    /// empty history after a restart, would).
    seed: Option<(Instant, u32)>,
    /// The count qscale held at its latest blind poll (no sample, or no
    /// target to read). Like the seed, it acts as a down-window
    /// recommendation, so the first samples after an outage can raise the
    /// count but lower it only once a full window of them agrees: a queue
    /// that comes back empty (a recreated queue, a lost region) is one
    /// sample, not evidence.
    held: Option<(Instant, u32)>,
}

impl History {
    /// Forget entries older than `memory`.
    pub fn prune(&mut self, now: Instant, memory: Duration) {
        while self
            .recommendations
            .front()
            .is_some_and(|(at, _)| !within(*at, now, memory))
        {
            self.recommendations.pop_front();
        }
        while self
            .events
            .front()
            .is_some_and(|e| !within(e.at, now, memory))
        {
            self.events.pop_front();
        }
    }

    pub fn record_event(&mut self, at: Instant, from: u32, to: u32) {
        if from != to {
            self.events.push_back(ScaleEvent {
                at,
                delta: i64::from(to) - i64::from(from),
            });
        }
    }

    /// Remember that qscale was blind at `now` and held `current`.
    pub fn hold(&mut self, now: Instant, current: u32) {
        self.held = Some((now, current));
    }

    /// Stabilize `desired` against the windows and record it.
    pub fn stabilize(
        &mut self,
        desired: u32,
        current: u32,
        now: Instant,
        up: &Behavior,
        down: &Behavior,
    ) -> u32 {
        let mut up_rec = desired;
        let mut down_rec = desired;
        let (seeded_at, seeded) = *self.seed.get_or_insert((now, current));
        if within(seeded_at, now, down.stabilization) {
            down_rec = down_rec.max(seeded);
        }
        if let Some((held_at, held)) = self.held
            && within(held_at, now, down.stabilization)
        {
            down_rec = down_rec.max(held);
        }
        for &(at, rec) in &self.recommendations {
            if within(at, now, up.stabilization) {
                up_rec = up_rec.min(rec);
            }
            if within(at, now, down.stabilization) {
                down_rec = down_rec.max(rec);
            }
        }
        // A run of equal recommendations is kept as its newest one: a value
        // counts in a window while any of its run is inside, which is while
        // the newest is, so the windows' minimum and maximum are the same,
        // and a steady queue polled every second keeps one entry, not a
        // window's worth.
        match self.recommendations.back_mut() {
            Some(last) if last.1 == desired => last.0 = now,
            _ => self.recommendations.push_back((now, desired)),
        }
        current.max(up_rec).min(down_rec)
    }

    /// Replicas added and removed within `period` before `now`.
    fn changes_within(&self, now: Instant, period: Duration) -> (i64, i64) {
        self.events
            .iter()
            .filter(|e| within(e.at, now, period))
            .fold((0, 0), |(added, removed), e| {
                if e.delta > 0 {
                    (added + e.delta, removed)
                } else {
                    (added, removed - e.delta)
                }
            })
    }

    /// The highest count scale-up may reach now (never below `current`).
    pub fn scale_up_limit(&self, current: u32, now: Instant, b: &Behavior) -> u32 {
        let cur = i64::from(current);
        let mut result: Option<i64> = None;
        if b.select != SelectPolicy::Disabled {
            for l in &b.limits {
                let (added, removed) = self.changes_within(now, l.period);
                let start = (cur - added + removed).max(0);
                let proposed = match l.amount {
                    LimitAmount::Pods(n) => start + i64::from(n),
                    LimitAmount::Percent(p) => {
                        (start as f64 * (1.0 + f64::from(p) / 100.0)).ceil() as i64
                    }
                };
                result = Some(match (result, b.select) {
                    (None, _) => proposed,
                    (Some(r), SelectPolicy::Min) => r.min(proposed),
                    (Some(r), _) => r.max(proposed),
                });
            }
        }
        let limit = result.unwrap_or(cur).max(cur);
        u32::try_from(limit).unwrap_or(u32::MAX)
    }

    /// The lowest count scale-down may reach now (never above `current`).
    pub fn scale_down_limit(&self, current: u32, now: Instant, b: &Behavior) -> u32 {
        let cur = i64::from(current);
        let mut result: Option<i64> = None;
        if b.select != SelectPolicy::Disabled {
            for l in &b.limits {
                let (added, removed) = self.changes_within(now, l.period);
                let start = (cur + removed - added).max(0);
                let proposed = match l.amount {
                    LimitAmount::Pods(n) => start - i64::from(n),
                    LimitAmount::Percent(p) => {
                        (start as f64 * (1.0 - f64::from(p) / 100.0)).trunc() as i64
                    }
                };
                // For scale-down, the most permissive limit is the lowest.
                result = Some(match (result, b.select) {
                    (None, _) => proposed,
                    (Some(r), SelectPolicy::Min) => r.max(proposed),
                    (Some(r), _) => r.min(proposed),
                });
            }
        }
        let limit = result.unwrap_or(cur).clamp(0, cur);
        u32::try_from(limit).unwrap_or(0)
    }

    /// The down-window's highest recommendation as it will stand at `later`
    /// if every recommendation from now on is no higher than `latest`:
    /// where the stabilized count is heading while old highs leave the
    /// window. `None` without a window.
    pub fn down_recommendation_at(
        &self,
        later: Instant,
        latest: u32,
        down: &Behavior,
    ) -> Option<u32> {
        if down.stabilization.is_zero() {
            return None;
        }
        let seeded = self
            .seed
            .into_iter()
            .chain(self.held)
            .filter(|(at, _)| within(*at, later, down.stabilization))
            .map(|(_, n)| n)
            .max();
        let kept = self
            .recommendations
            .iter()
            .filter(|(at, _)| within(*at, later, down.stabilization))
            .map(|(_, n)| *n);
        Some(kept.chain(seeded).fold(latest, u32::max))
    }

    /// How long before `now` qscale last changed the count, if it did within
    /// the remembered history.
    pub fn since_last_event(&self, now: Instant) -> Option<Duration> {
        self.events
            .back()
            .map(|e| now.saturating_duration_since(e.at))
    }

    /// The recommendation recorded last (this poll's, after `stabilize`).
    pub fn latest_recommendation(&self) -> Option<u32> {
        self.recommendations.back().map(|(_, n)| *n)
    }

    #[cfg(test)]
    pub fn recommendation_count(&self) -> usize {
        self.recommendations.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::RateLimit;
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn behavior(stab: u64, select: SelectPolicy, limits: &[(LimitAmount, u64)]) -> Behavior {
        Behavior {
            stabilization: secs(stab),
            select,
            limits: limits
                .iter()
                .map(|&(amount, p)| RateLimit {
                    amount,
                    period: secs(p),
                })
                .collect(),
            cooldown: Duration::ZERO,
        }
    }

    #[test]
    fn down_stabilization_keeps_the_highest_recommendation_in_the_window() {
        let t0 = Instant::now();
        let up = behavior(0, SelectPolicy::Max, &[]);
        let down = behavior(300, SelectPolicy::Max, &[]);
        let mut h = History::default();
        // Recommendations 10, 4, 6 at t=0, 100, 200; current 10.
        assert_eq!(h.stabilize(10, 10, t0, &up, &down), 10);
        assert_eq!(h.stabilize(4, 10, t0 + secs(100), &up, &down), 10);
        assert_eq!(h.stabilize(6, 10, t0 + secs(200), &up, &down), 10);
        // At t=301 the 10 has left the window: the highest left is 6.
        assert_eq!(h.stabilize(5, 10, t0 + secs(301), &up, &down), 6);
    }

    #[test]
    fn up_stabilization_keeps_the_lowest_recommendation_in_the_window() {
        let t0 = Instant::now();
        let up = behavior(60, SelectPolicy::Max, &[]);
        let down = behavior(0, SelectPolicy::Max, &[]);
        let mut h = History::default();
        assert_eq!(h.stabilize(2, 2, t0, &up, &down), 2);
        assert_eq!(h.stabilize(8, 2, t0 + secs(30), &up, &down), 2);
        assert_eq!(h.stabilize(9, 2, t0 + secs(61), &up, &down), 8);
    }

    #[test]
    fn scale_up_limit_follows_the_hpa_defaults() {
        let now = Instant::now();
        let b = behavior(
            0,
            SelectPolicy::Max,
            &[(LimitAmount::Percent(100), 15), (LimitAmount::Pods(4), 15)],
        );
        let h = History::default();
        let table = [(0, 4), (1, 5), (3, 7), (4, 8), (5, 10), (40, 80)];
        for (cur, want) in table {
            assert_eq!(h.scale_up_limit(cur, now, &b), want, "current {cur}");
        }
    }

    #[test]
    fn select_min_picks_the_least_permissive_limit() {
        let now = Instant::now();
        let b = behavior(
            0,
            SelectPolicy::Min,
            &[(LimitAmount::Percent(100), 15), (LimitAmount::Pods(4), 15)],
        );
        let h = History::default();
        assert_eq!(h.scale_up_limit(10, now, &b), 14);
        assert_eq!(h.scale_up_limit(2, now, &b), 4);
    }

    #[test]
    fn disabled_direction_never_moves() {
        let now = Instant::now();
        let b = behavior(0, SelectPolicy::Disabled, &[(LimitAmount::Pods(4), 15)]);
        let h = History::default();
        assert_eq!(h.scale_up_limit(3, now, &b), 3);
        assert_eq!(h.scale_down_limit(3, now, &b), 3);
    }

    #[test]
    fn changes_within_the_period_count_against_the_limit() {
        let t0 = Instant::now();
        let b = behavior(0, SelectPolicy::Max, &[(LimitAmount::Pods(4), 60)]);
        let mut h = History::default();
        h.record_event(t0, 2, 6);
        // 30 s later, 4 pods were already added in the 60 s period: start = 2.
        assert_eq!(h.scale_up_limit(6, t0 + secs(30), &b), 6);
        // After the period the full allowance is back.
        assert_eq!(h.scale_up_limit(6, t0 + secs(60), &b), 10);
    }

    #[test]
    fn scale_down_percent_truncates_like_the_hpa() {
        let now = Instant::now();
        let b = behavior(0, SelectPolicy::Max, &[(LimitAmount::Percent(50), 15)]);
        let h = History::default();
        assert_eq!(h.scale_down_limit(5, now, &b), 2);
        let b = behavior(
            0,
            SelectPolicy::Max,
            &[(LimitAmount::Percent(10), 60), (LimitAmount::Pods(3), 60)],
        );
        // Max select for scale-down: the larger change, i.e. the lower limit.
        assert_eq!(h.scale_down_limit(20, now, &b), 17);
        let b = Behavior {
            select: SelectPolicy::Min,
            ..b
        };
        assert_eq!(h.scale_down_limit(20, now, &b), 18);
    }

    #[test]
    fn pruning_forgets_only_what_is_older_than_the_memory() {
        let t0 = Instant::now();
        let up = behavior(0, SelectPolicy::Max, &[]);
        let down = behavior(10, SelectPolicy::Max, &[]);
        let mut h = History::default();
        for i in 0..20 {
            h.stabilize(1 + i as u32, 1, t0 + secs(i), &up, &down);
        }
        h.prune(t0 + secs(20), secs(10));
        assert_eq!(h.recommendation_count(), 9);
    }

    #[test]
    fn a_run_of_equal_recommendations_is_kept_once_and_stabilizes_alike() {
        // Against the windows over every recommendation as made.
        let t0 = Instant::now();
        let up = behavior(3, SelectPolicy::Max, &[]);
        let down = behavior(10, SelectPolicy::Max, &[]);
        let recs = [
            5, 5, 5, 9, 9, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 7, 7, 1, 1, 1,
        ];
        let mut h = History::default();
        let mut all: Vec<(Instant, u32)> = Vec::new();
        for (i, &r) in recs.iter().enumerate() {
            let now = t0 + secs(i as u64);
            let current = 4;
            let up_rec = all
                .iter()
                .filter(|(at, _)| within(*at, now, up.stabilization))
                .fold(r, |m, (_, x)| m.min(*x));
            // The count at the first decision seeds the down-window.
            let seed = if within(t0, now, down.stabilization) {
                current
            } else {
                0
            };
            let down_rec = all
                .iter()
                .filter(|(at, _)| within(*at, now, down.stabilization))
                .fold(r.max(seed), |m, (_, x)| m.max(*x));
            let want = current.max(up_rec).min(down_rec);
            assert_eq!(h.stabilize(r, current, now, &up, &down), want, "poll {i}");
            all.push((now, r));
        }
        // Runs: 5 5 5 | 9 9 | 2 x 12 | 7 7 | 1 1 1.
        assert_eq!(h.recommendation_count(), 5);
    }
}
