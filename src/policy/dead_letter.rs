//! Dead letters: how fast messages reach the dead-letter queue, and the rule
//! that stops scaling up when they do so too fast.
//!
//! Messages that fail on every attempt (poison messages, a broken
//! dependency, a bug) stay in the queue while they are retried, so the
//! backlog and the age of the oldest message grow, and every signal asks for
//! more workers, which only fail faster. What tells these failures from a
//! capacity shortage is the dead-letter queue: when a large part of what
//! arrives ends up there, the work is failing, not waiting. This module
//! measures that part and, when `policy.dead_letter.max_fraction` is set,
//! holds the count at current instead of scaling up (docs/policy.md, "Dead
//! letters"). It never lowers the count: the backlog is still there.
//!
//! The rate is the growth of the dead-letter depth over a sliding window
//! (net, clipped at zero), not a sum of each poll's rises: approximate
//! counts (SQS) move up and down by a message or two on their own, and a net
//! figure cancels that noise. A queue that someone redrove or purged reads
//! as zero until the window has slid past the drop. Time is passed in, as
//! everywhere in the policy.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Reason, Step, num};

/// How far back the dead-letter arrival rate looks. Long enough to see a
/// message that fails after a few receives of a 30 s visibility timeout,
/// short enough that the rule lets go about two minutes after the failures
/// stop.
pub(crate) const WINDOW: Duration = Duration::from_secs(120);
/// Samples closer together than this add nothing (a conflict re-decides on
/// the same sample).
const MIN_DT: Duration = Duration::from_millis(500);

/// Dead-letter depths seen within the window, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeadLetterRate {
    points: VecDeque<(Instant, u64)>,
}

impl DeadLetterRate {
    /// Fold in the dead-letter depth seen at `now` (`None`: not measured
    /// this poll) and return the rate in messages per second, `None` while
    /// fewer than two depths at least 0.5 s apart lie within the window.
    pub fn observe(&mut self, now: Instant, depth: Option<u64>) -> Option<f64> {
        if let Some(d) = depth {
            match self.points.back() {
                Some(&(at, _)) if now.saturating_duration_since(at) < MIN_DT => {}
                _ => self.points.push_back((now, d)),
            }
        }
        // Keep the newest point at or before the window's start as its base,
        // so a full window spans all of it.
        while self.points.len() >= 2
            && self
                .points
                .get(1)
                .is_some_and(|&(at, _)| now.saturating_duration_since(at) >= WINDOW)
        {
            self.points.pop_front();
        }
        if let Some(&(at, _)) = self.points.front()
            && self.points.len() == 1
            && now.saturating_duration_since(at) >= WINDOW
        {
            // Nothing measured for a whole window: the rate is unknown.
            self.points.clear();
        }
        self.rate()
    }

    /// The rate over the window as it stands.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, d0), &(t1, d1)) = (self.points.front()?, self.points.back()?);
        let span = t1.saturating_duration_since(t0);
        if span < MIN_DT {
            return None;
        }
        Some(d1.saturating_sub(d0) as f64 / span.as_secs_f64())
    }
}

/// The dead-letter rule: with `max_fraction` set, a dead-letter arrival
/// rate above that fraction of the arrival rate keeps a proposal above
/// `current` at `current`, with a reason. A proposal at or below current
/// passes unchanged (the rule never scales down), and so does everything
/// while either rate is unknown.
pub(crate) fn hold(
    max_fraction: Option<f64>,
    dead_letter_rate: Option<f64>,
    arrival_rate: Option<f64>,
    current: u32,
    desired: u32,
    reasons: &mut Vec<Reason>,
) -> u32 {
    let (Some(max), Some(dl), Some(arrivals)) = (max_fraction, dead_letter_rate, arrival_rate)
    else {
        return desired;
    };
    if desired <= current || dl <= 0.0 {
        return desired;
    }
    // Nothing arriving while messages still reach the dead-letter queue:
    // everything that is worked on fails.
    let fraction = if arrivals > 0.0 {
        dl / arrivals
    } else {
        f64::INFINITY
    };
    if fraction <= max {
        return desired;
    }
    let share = if fraction.is_finite() {
        format!("{}%", num(fraction * 100.0))
    } else {
        "all".to_string()
    };
    reasons.push(Reason {
        step: Step::DeadLetter,
        message: msg!(
            "dead-lettering {} msg/s = {share} of arrivals {} msg/s > max_fraction {}%: \
             failures, not capacity; not scaling up, keeping {current} (would be {desired})",
            num(dl),
            num(arrivals),
            num(max * 100.0),
        ),
    });
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn the_rate_is_the_net_growth_over_the_window() {
        let t0 = Instant::now();
        let mut r = DeadLetterRate::default();
        assert_eq!(r.observe(at(t0, 0), Some(10)), None, "one depth is no rate");
        assert_eq!(r.observe(at(t0, 10), Some(30)), Some(2.0));
        // Noise of an approximate count: down one, up one, cancels out.
        assert_eq!(r.observe(at(t0, 20), Some(29)), Some(19.0 / 20.0));
        assert_eq!(r.observe(at(t0, 40), Some(30)), Some(0.5));
    }

    #[test]
    fn the_window_slides_so_past_failures_stop_counting() {
        let t0 = Instant::now();
        let mut r = DeadLetterRate::default();
        r.observe(at(t0, 0), Some(0));
        r.observe(at(t0, 10), Some(100));
        for s in (20..=300).step_by(10) {
            r.observe(at(t0, s), Some(100));
        }
        assert_eq!(r.rate(), Some(0.0), "no growth in the last two minutes");
    }

    #[test]
    fn a_drained_dead_letter_queue_reads_as_zero_never_negative() {
        let t0 = Instant::now();
        let mut r = DeadLetterRate::default();
        r.observe(at(t0, 0), Some(500));
        assert_eq!(r.observe(at(t0, 10), Some(0)), Some(0.0));
    }

    #[test]
    fn an_unmeasured_depth_keeps_the_window_until_it_has_all_expired() {
        let t0 = Instant::now();
        let mut r = DeadLetterRate::default();
        r.observe(at(t0, 0), Some(0));
        r.observe(at(t0, 10), Some(20));
        assert_eq!(r.observe(at(t0, 20), None), Some(2.0));
        assert_eq!(r.observe(at(t0, 200), None), None);
        assert_eq!(r.observe(at(t0, 210), Some(20)), None, "starts over");
    }

    #[test]
    fn samples_too_close_together_are_not_differenced() {
        let t0 = Instant::now();
        let mut r = DeadLetterRate::default();
        r.observe(t0, Some(0));
        assert_eq!(r.observe(t0 + Duration::from_millis(100), Some(50)), None);
    }

    #[test]
    fn the_window_stays_bounded() {
        let t0 = Instant::now();
        let mut r = DeadLetterRate::default();
        for i in 0..10_000u64 {
            r.observe(t0 + Duration::from_secs(i), Some(i));
        }
        assert!(r.points.len() <= 122, "{}", r.points.len());
        assert_eq!(r.rate(), Some(1.0));
    }

    #[test]
    fn hold_table() {
        // (max_fraction, dead-letter rate, arrivals, current, desired, result, reason contains)
        type Case = (
            Option<f64>,
            Option<f64>,
            Option<f64>,
            u32,
            u32,
            u32,
            Option<&'static str>,
        );
        let cases: [Case; 9] = [
            (
                Some(0.1),
                Some(2.1),
                Some(6.0),
                5,
                12,
                5,
                Some(
                    "dead-lettering 2.10 msg/s = 35% of arrivals 6 msg/s > max_fraction 10%: \
                     failures, not capacity; not scaling up, keeping 5 (would be 12)",
                ),
            ),
            (Some(0.1), Some(0.5), Some(6.0), 5, 12, 12, None),
            (Some(0.1), Some(0.6), Some(6.0), 5, 12, 12, None),
            (Some(0.1), Some(2.0), Some(6.0), 5, 3, 3, None),
            (Some(0.1), Some(2.0), Some(6.0), 5, 5, 5, None),
            (None, Some(2.0), Some(6.0), 5, 12, 12, None),
            (Some(0.1), None, Some(6.0), 5, 12, 12, None),
            (Some(0.1), Some(2.0), None, 5, 12, 12, None),
            (
                Some(1.0),
                Some(0.2),
                Some(0.0),
                2,
                4,
                2,
                Some("dead-lettering 0.20 msg/s = all of arrivals 0 msg/s > max_fraction 100%"),
            ),
        ];
        for (max, dl, arrivals, cur, desired, want, reason) in cases {
            let mut reasons = Vec::new();
            let got = hold(max, dl, arrivals, cur, desired, &mut reasons);
            assert_eq!(got, want, "{max:?} {dl:?} {arrivals:?} {cur} {desired}");
            match reason {
                None => assert!(reasons.is_empty(), "{reasons:?}"),
                Some(text) => {
                    assert_eq!(reasons.len(), 1);
                    assert_eq!(reasons[0].step, Step::DeadLetter);
                    assert!(
                        reasons[0].message.to_string().contains(text),
                        "{}",
                        reasons[0].message
                    );
                }
            }
        }
    }
}
