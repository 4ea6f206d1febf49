//! The baseline: the Kubernetes HPA algorithm as KEDA drives it for a queue.
//!
//! `qscale simulate --compare hpa` runs the same trace through this, so a
//! user sees what qscale buys over the common setup: a KEDA ScaledObject
//! with a queue-length trigger and KEDA's and the HPA's defaults.
//!
//! It is written from the published algorithm (the Kubernetes HPA docs and
//! KEDA's docs), on purpose *not* on top of qscale's own policy code, so the
//! comparison is honest: a bug or a bias in qscale's policy cannot leak into
//! the baseline. What it does, every step in order:
//!
//! - **KEDA polling** (every `polling_interval`, default 30 s): read the
//!   queue length (visible + in-flight, KEDA's SQS scaler default), which is
//!   the value the HPA sees until the next poll; with `min_replicas = 0`,
//!   activate (0 -> 1) when the length exceeds the activation target (0),
//!   and go back to 0 after `cooldown_period` (300 s) without activity.
//! - **HPA sync** (every `sync_period`, default 15 s), only while the
//!   target has replicas: with an `AverageValue` target of
//!   `target_average_value` messages per replica, the usage ratio is
//!   `metric / (target · status.replicas)`; outside the tolerance (0.1) the
//!   proposal is `ceil(metric / target)`, else `status.replicas`.
//! - **Stabilization**: up to the lowest proposal within the up-window (0 s),
//!   down to the highest within the down-window (300 s).
//! - **Rate limits** (`behavior` policies): the replica count at the start of
//!   each policy's period is the current count minus what was added (plus
//!   what was removed) within it; up allows `max(+100 %, +4 pods)` per 15 s,
//!   down `-100 %` per 15 s; then the min/max bounds.

use std::collections::VecDeque;

use crate::world::model::Observation;

/// A `behavior` scaling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpaPolicy {
    Pods { value: u32, period: u64 },
    Percent { value: u32, period: u64 },
}

impl HpaPolicy {
    fn period(&self) -> u64 {
        match *self {
            HpaPolicy::Pods { period, .. } | HpaPolicy::Percent { period, .. } => period,
        }
    }
}

/// `selectPolicy` of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpaSelect {
    Max,
    Min,
    Disabled,
}

/// One direction's `behavior`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpaRules {
    pub stabilization_seconds: u64,
    pub select: HpaSelect,
    pub policies: Vec<HpaPolicy>,
}

/// Settings of the baseline; [`HpaParams::keda_defaults`] gives the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaParams {
    /// `AverageValue` target: messages per replica.
    pub target_average_value: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub tolerance: f64,
    /// HPA `--horizontal-pod-autoscaler-sync-period`, seconds.
    pub sync_period: u64,
    /// KEDA `pollingInterval`, seconds: how often the metric is refreshed.
    pub polling_interval: u64,
    /// KEDA `cooldownPeriod`, seconds (only for scale to zero).
    pub cooldown_period: u64,
    /// KEDA `activationQueueLength`.
    pub activation_target: f64,
    pub scale_up: HpaRules,
    pub scale_down: HpaRules,
}

impl HpaParams {
    /// KEDA's and the HPA's defaults for a queue-length trigger.
    pub fn keda_defaults(target_average_value: f64, min_replicas: u32, max_replicas: u32) -> Self {
        HpaParams {
            target_average_value,
            min_replicas,
            max_replicas,
            tolerance: 0.1,
            sync_period: 15,
            polling_interval: 30,
            cooldown_period: 300,
            activation_target: 0.0,
            scale_up: HpaRules {
                stabilization_seconds: 0,
                select: HpaSelect::Max,
                policies: vec![
                    HpaPolicy::Percent {
                        value: 100,
                        period: 15,
                    },
                    HpaPolicy::Pods {
                        value: 4,
                        period: 15,
                    },
                ],
            },
            scale_down: HpaRules {
                stabilization_seconds: 300,
                select: HpaSelect::Max,
                policies: vec![HpaPolicy::Percent {
                    value: 100,
                    period: 15,
                }],
            },
        }
    }
}

/// The baseline autoscaler's state.
#[derive(Debug, Clone)]
pub struct Hpa {
    p: HpaParams,
    /// The last value KEDA read.
    metric: Option<f64>,
    /// Proposals before stabilization, with their time.
    recommendations: VecDeque<(u64, u32)>,
    /// Replica changes made, with their time (positive up, negative down).
    events: VecDeque<(u64, i64)>,
    /// Last time KEDA saw activity (for scale to zero).
    last_active: Option<u64>,
}

impl Hpa {
    pub fn new(p: HpaParams) -> Hpa {
        Hpa {
            p,
            metric: None,
            recommendations: VecDeque::new(),
            events: VecDeque::new(),
            last_active: None,
        }
    }

    pub fn params(&self) -> &HpaParams {
        &self.p
    }

    /// Called every simulated second; returns a new replica count when the
    /// baseline changes it.
    pub fn tick(&mut self, t: u64, o: &Observation) -> Option<u32> {
        let current = o.desired;
        let mut result = None;
        if t.is_multiple_of(self.p.polling_interval.max(1)) {
            let metric = (o.visible + o.in_flight) as f64;
            self.metric = Some(metric);
            if self.p.min_replicas == 0 {
                let active = metric > self.p.activation_target;
                if active || self.last_active.is_none() {
                    self.last_active = Some(t);
                }
                if active && current == 0 {
                    result = Some(1);
                } else if !active
                    && current > 0
                    && self
                        .last_active
                        .is_some_and(|a| t >= a + self.p.cooldown_period)
                {
                    result = Some(0);
                }
            }
        }
        if result.is_none() && current > 0 && t.is_multiple_of(self.p.sync_period.max(1)) {
            let desired = self.reconcile(t, current, o.pods);
            if desired != current {
                result = Some(desired);
            }
        }
        if let Some(n) = result {
            self.events
                .push_back((t, i64::from(n) - i64::from(current)));
        }
        result
    }

    /// One HPA sync for a target with `current` desired and `pods` existing.
    fn reconcile(&mut self, t: u64, current: u32, pods: u32) -> u32 {
        let hpa_min = self.p.min_replicas.max(1);
        if current > self.p.max_replicas {
            return self.p.max_replicas;
        }
        if current < hpa_min {
            return hpa_min;
        }
        let Some(metric) = self.metric else {
            return current;
        };
        let target = self.p.target_average_value;
        let status = pods.max(1);
        let ratio = metric / (target * f64::from(status));
        let proposal = if (1.0 - ratio).abs() > self.p.tolerance {
            let c = (metric / target).ceil();
            if c >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                c as u32
            }
        } else {
            status
        };
        let stabilized = self.stabilize(t, current, proposal);
        self.limit(t, current, stabilized, hpa_min)
    }

    fn stabilize(&mut self, t: u64, current: u32, proposal: u32) -> u32 {
        let up_window = self.p.scale_up.stabilization_seconds;
        let down_window = self.p.scale_down.stabilization_seconds;
        // "After the cutoff": strictly within the window.
        let inside = |at: u64, window: u64| at + window > t;
        let mut up = proposal;
        let mut down = proposal;
        for &(at, rec) in &self.recommendations {
            if inside(at, up_window) {
                up = up.min(rec);
            }
            if inside(at, down_window) {
                down = down.max(rec);
            }
        }
        let keep = up_window.max(down_window);
        while self
            .recommendations
            .front()
            .is_some_and(|&(at, _)| !inside(at, keep))
        {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back((t, proposal));
        current.max(up).min(down)
    }

    /// Replicas added and removed within `period` before `t`.
    fn changes(&self, t: u64, period: u64) -> (i64, i64) {
        self.events.iter().filter(|&&(at, _)| at + period > t).fold(
            (0, 0),
            |(up, down), &(_, d)| {
                if d > 0 {
                    (up + d, down)
                } else {
                    (up, down - d)
                }
            },
        )
    }

    fn limit(&mut self, t: u64, current: u32, desired: u32, hpa_min: u32) -> u32 {
        let longest = self
            .p
            .scale_up
            .policies
            .iter()
            .chain(&self.p.scale_down.policies)
            .map(HpaPolicy::period)
            .max()
            .unwrap_or(0);
        while self
            .events
            .front()
            .is_some_and(|&(at, _)| at + longest <= t)
        {
            self.events.pop_front();
        }
        let cur = i64::from(current);
        let desired = i64::from(desired);
        let out = if desired > cur {
            let rules = &self.p.scale_up;
            let limit = match rules.select {
                HpaSelect::Disabled => cur,
                select => {
                    let mut best: Option<i64> = None;
                    for pol in &rules.policies {
                        let (added, removed) = self.changes(t, pol.period());
                        let start = cur - added + removed;
                        let proposed = match *pol {
                            HpaPolicy::Pods { value, .. } => start + i64::from(value),
                            HpaPolicy::Percent { value, .. } => {
                                (start as f64 * (1.0 + f64::from(value) / 100.0)).ceil() as i64
                            }
                        };
                        best = Some(match (best, select) {
                            (None, _) => proposed,
                            (Some(b), HpaSelect::Min) => b.min(proposed),
                            (Some(b), _) => b.max(proposed),
                        });
                    }
                    best.unwrap_or(cur).max(cur)
                }
            };
            desired.min(limit).min(i64::from(self.p.max_replicas))
        } else if desired < cur {
            let rules = &self.p.scale_down;
            let limit = match rules.select {
                HpaSelect::Disabled => cur,
                select => {
                    let mut best: Option<i64> = None;
                    for pol in &rules.policies {
                        let (added, removed) = self.changes(t, pol.period());
                        let start = cur - added + removed;
                        let proposed = match *pol {
                            HpaPolicy::Pods { value, .. } => start - i64::from(value),
                            HpaPolicy::Percent { value, .. } => {
                                (start as f64 * (1.0 - f64::from(value) / 100.0)) as i64
                            }
                        };
                        best = Some(match (best, select) {
                            (None, _) => proposed,
                            (Some(b), HpaSelect::Min) => b.max(proposed),
                            (Some(b), _) => b.min(proposed),
                        });
                    }
                    best.unwrap_or(cur).min(cur)
                }
            };
            desired.max(limit).max(i64::from(hpa_min))
        } else {
            desired
        };
        u32::try_from(out.max(0)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(backlog: u64, desired: u32) -> Observation {
        Observation {
            now: 0,
            visible: backlog,
            in_flight: 0,
            oldest_age: 0.0,
            desired,
            pods: desired,
            ready: desired,
            billed: desired,
        }
    }

    fn hpa(min: u32, max: u32) -> Hpa {
        Hpa::new(HpaParams::keda_defaults(10.0, min, max))
    }

    #[test]
    fn average_value_target_proposes_ceil_of_metric_over_target() {
        let mut h = hpa(1, 100);
        // 35 messages / 10 per replica -> 4, within the +4 pods allowance.
        assert_eq!(h.tick(0, &obs(35, 1)), Some(4));
    }

    #[test]
    fn usage_within_the_tolerance_keeps_the_current_count() {
        let mut h = hpa(1, 100);
        // 105 / (10 x 10) = 1.05: within 10 %.
        assert_eq!(h.tick(0, &obs(105, 10)), None);
        // 115 / 100 = 1.15: outside -> ceil(11.5) = 12.
        let mut h = hpa(1, 100);
        assert_eq!(h.tick(0, &obs(115, 10)), Some(12));
    }

    #[test]
    fn scale_up_is_limited_to_the_larger_of_double_and_four_pods_per_15s() {
        let mut h = hpa(1, 1000);
        assert_eq!(h.tick(0, &obs(10_000, 1)), Some(5), "1 + 4 pods");
        // 15 s later the period has passed: 5 -> 10 (100 %).
        assert_eq!(h.tick(15, &obs(10_000, 5)), Some(10));
        assert_eq!(h.tick(30, &obs(10_000, 10)), Some(20));
    }

    #[test]
    fn the_metric_refreshes_only_every_keda_polling_interval() {
        let mut h = hpa(1, 1000);
        assert_eq!(h.tick(0, &obs(20, 1)), Some(2));
        // At 15 s the backlog is 400 but KEDA still reports 20: no change.
        assert_eq!(h.tick(15, &obs(400, 2)), None);
        // At 30 s KEDA reads 400 -> 40, limited to 2 x 2 = 4... or 2 + 4 = 6.
        assert_eq!(h.tick(30, &obs(400, 2)), Some(6));
    }

    #[test]
    fn scale_down_waits_for_the_five_minute_stabilization_window() {
        let mut h = hpa(1, 100);
        assert_eq!(h.tick(0, &obs(40, 4)), None);
        for t in (15..315).step_by(15) {
            assert_eq!(h.tick(t, &obs(0, 4)), None, "t={t}");
        }
        // At 15 s KEDA still reported 40 (it polls every 30 s), so the last
        // proposal of 4 was made at 15 s and leaves the window at 315 s.
        assert_eq!(h.tick(315, &obs(0, 4)), Some(1));
    }

    #[test]
    fn keda_activates_from_zero_and_returns_to_zero_after_the_cooldown() {
        let mut h = hpa(0, 10);
        assert_eq!(h.tick(0, &obs(0, 0)), None);
        assert_eq!(h.tick(30, &obs(3, 0)), Some(1));
        assert_eq!(h.tick(60, &obs(0, 1)), None);
        // Last activity at 30 s; inactive for the 300 s cooldown.
        assert_eq!(h.tick(330, &obs(0, 1)), Some(0));
    }

    #[test]
    fn bounds_apply_after_the_rate_limits() {
        let mut h = hpa(2, 6);
        assert_eq!(h.tick(0, &obs(1000, 2)), Some(6));
    }
}
