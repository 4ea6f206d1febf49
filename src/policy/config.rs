//! The `policy` table of a scaler and its compiled, validated form.
//!
//! [`PolicyConfig`] is what users write; [`Policy`] is what [`super::decide`]
//! reads: defaults resolved (the HPA's behavior defaults for each direction),
//! source capabilities folded in (whether in-flight and delayed messages count
//! as backlog), durations and percentages in the shapes the arithmetic wants.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::contract::Capabilities;
use crate::validate::Problems;

/// How to turn what the source sees into a replica count.
///
/// At least one signal is required: `messages_per_replica` (backlog),
/// `throughput` (Little's law) or `max_message_age` (age). When several are
/// set, the largest proposal wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Fewest replicas. `0` allows scale to zero (see `activation_backlog` and
    /// `scale_to_zero_after`).
    #[serde(default = "default_min_replicas")]
    pub min_replicas: u32,

    /// Most replicas; replicas above this never start.
    pub max_replicas: u32,

    /// At most this many workers can be busy at once, e.g. the number of
    /// message groups of a FIFO queue (each group is worked one message at a
    /// time) or what a downstream service allows. Proposals above it are
    /// capped with a reason instead of starting workers that would only
    /// wait. At least `min_replicas`.
    #[serde(default)]
    pub max_parallelism: Option<u32>,

    /// Backlog signal: one replica per this many waiting messages
    /// (`ceil(backlog / messages_per_replica)`).
    #[serde(default)]
    pub messages_per_replica: Option<f64>,

    /// Throughput signal (Little's law): enough workers to keep up with the
    /// arrival rate and clear the backlog within `drain_within`.
    #[serde(default)]
    pub throughput: Option<ThroughputConfig>,

    /// With `max_message_age` set and no `throughput` section, run the
    /// throughput signal anyway, with `seconds_per_message` learned from the
    /// drain: it sizes for the arrival rate instead of waiting for the backlog
    /// to grow. Until it has learned, it neither raises nor holds the count.
    /// `false` sizes on backlog and age alone.
    #[serde(default = "crate::validate::default_true")]
    pub learn_throughput: bool,

    /// With `max_message_age` set and the seconds per message known (given or
    /// learned), the backlog signal asks for no more workers than drain the
    /// backlog in a third of the time its oldest message has left before
    /// the objective (plus keeping up with arrivals): a burst far from the
    /// objective is worked off by fewer, busier workers instead of
    /// `backlog / messages_per_replica` of them. `false` makes
    /// `messages_per_replica` a hard target, as KEDA's queue length is.
    #[serde(default = "crate::validate::default_true")]
    pub spend_age_budget: bool,

    /// Age signal and the objective for message age, e.g. `"2m"`: when the
    /// oldest message is older, propose at least
    /// `ceil(current * age / max_message_age)` and never less than current + 1.
    /// Works with every source: where the source cannot measure the age (or
    /// its figure is stale), qscale estimates it from the queue's history.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub max_message_age: Option<Duration>,

    /// Keep the current count when the proposal is within this fraction of it
    /// (default 0.2 = 20 %; the HPA uses 0.1). May be 0.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,

    /// With `min_replicas = 0`: wake from zero only when the backlog exceeds
    /// this many messages.
    #[serde(default)]
    pub activation_backlog: u64,

    /// With `min_replicas = 0`: go to zero only after the queue (backlog and
    /// in-flight) has been empty this long, e.g. `"5m"`.
    #[serde(default = "default_scale_to_zero_after", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub scale_to_zero_after: Duration,

    /// Scale-up behavior (defaults: no stabilization, no cooldown; at most
    /// max(+100 %, +4 pods) per 15 s, as the HPA).
    #[serde(default)]
    pub scale_up: BehaviorConfig,

    /// Scale-down behavior (defaults: 30 s stabilization, a 1 min cooldown
    /// after any change; at most -100 % per 15 s. The HPA waits 5 min and
    /// has no cooldown).
    #[serde(default)]
    pub scale_down: BehaviorConfig,

    /// What to do when samples keep failing or are stale.
    #[serde(default)]
    pub fallback: FallbackConfig,

    /// Hold scale-up while messages move to the dead-letter queue too fast:
    /// then the work fails, and more workers would only fail faster. Off
    /// unless set (a dead-letter queue can also fill for capacity reasons,
    /// e.g. RabbitMQ's expired messages).
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,

    /// Sample and report, never actuate.
    #[serde(default)]
    pub paused: bool,
}

fn default_min_replicas() -> u32 {
    1
}
/// The scale-down cooldown when `scale_down.cooldown` is not set (`qscale
/// tune` starts its search from it).
pub fn default_scale_down_cooldown() -> Duration {
    Duration::from_secs(60)
}
/// The scale-down stabilization when `scale_down.stabilization` is not set.
pub fn default_scale_down_stabilization() -> Duration {
    Duration::from_secs(30)
}
fn default_tolerance() -> f64 {
    0.2
}
fn default_scale_to_zero_after() -> Duration {
    Duration::from_secs(300)
}

/// The throughput signal's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThroughputConfig {
    /// Seconds one worker spends on one message. When absent, qscale learns it
    /// from the observed drain (with the measured arrival rate, or from how fast
    /// the visible count drops while messages wait).
    #[serde(default)]
    pub seconds_per_message: Option<f64>,

    /// Clear today's backlog within this time, e.g. `"1m"`. Default:
    /// `max_message_age`, else 60 s.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub drain_within: Option<Duration>,

    /// Fraction of each worker's time planned to be busy, in (0, 1]. Below 1
    /// leaves headroom for bursts (`0.8` plans 25 % more workers).
    #[serde(default = "default_target_utilization")]
    pub target_utilization: f64,
}

fn default_target_utilization() -> f64 {
    1.0
}

impl Default for ThroughputConfig {
    fn default() -> Self {
        ThroughputConfig {
            seconds_per_message: None,
            drain_within: None,
            target_utilization: default_target_utilization(),
        }
    }
}

/// The dead-letter rule's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// When messages arrive in the dead-letter queue faster than this
    /// fraction of the queue's arrival rate, in (0, 1], do not scale up for
    /// the backlog (the count is held, never lowered because of it), e.g.
    /// `0.1` = 10 %.
    pub max_fraction: f64,
}

/// How the needs of a scaler's queues (`sources`) add up to one count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The workers drain every queue at once: size for the sum of the
    /// queues' needs.
    #[default]
    Sum,
    /// The workers drain the queues one after the other: size for the
    /// largest need.
    Max,
}

impl Combine {
    /// The config value, for reasons and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Combine::Sum => "sum",
            Combine::Max => "max",
        }
    }
}

/// Behavior of one direction, with the HPA's semantics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BehaviorConfig {
    /// Look back this long: scaling up uses the lowest proposal in the window,
    /// scaling down the highest, e.g. `"5m"`. At most 1 h.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub stabilization: Option<Duration>,

    /// Which rate limit wins when several are listed: `max` (the one allowing
    /// the most change, default), `min` (the least), or `disabled` (never
    /// scale in this direction).
    #[serde(default)]
    pub select: Option<SelectPolicy>,

    /// Rate limits, each `{ pods = N, period = "15s" }` or
    /// `{ percent = N, period = "15s" }`.
    #[serde(default)]
    pub policies: Option<Vec<RateLimitConfig>>,

    /// After any change qscale made to the replica count, do not move in this
    /// direction for this long, e.g. `"1m"`: the workers just added or
    /// removed get time to show their effect on the queue before the next
    /// step. At most 30 min.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub cooldown: Option<Duration>,
}

/// Which rate limit applies when several are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// One rate limit: change by at most `pods` or `percent` per `period`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// At most this many pods per period.
    #[serde(default)]
    pub pods: Option<u32>,
    /// At most this percentage of the replicas at the start of the period.
    #[serde(default)]
    pub percent: Option<u32>,
    /// The sliding window the limit applies to, e.g. `"15s"` (at most 30 min).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub period: Duration,
}

/// What to do after repeated failed or stale samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Consecutive failed or stale samples before the fallback acts.
    #[serde(default = "default_after_failures")]
    pub after_failures: u32,

    /// `hold` (keep the current count, default), `replicas` (set `replicas`),
    /// or `current_if_higher` (the larger of current and `replicas`).
    #[serde(default)]
    pub action: FallbackAction,

    /// Replica count for `replicas` and `current_if_higher`.
    #[serde(default)]
    pub replicas: Option<u32>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            after_failures: default_after_failures(),
            action: FallbackAction::Hold,
            replicas: None,
        }
    }
}

fn default_after_failures() -> u32 {
    3
}

/// The fallback action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackAction {
    #[default]
    Hold,
    Replicas,
    CurrentIfHigher,
}

const MAX_STABILIZATION: Duration = Duration::from_secs(3600);
const MAX_PERIOD: Duration = Duration::from_secs(1800);
/// Kubernetes stores replicas as int32.
pub const MAX_REPLICAS_LIMIT: u32 = i32::MAX as u32;

impl PolicyConfig {
    /// Add every problem to `p`. Every signal works with every source (an
    /// age or a service time the source cannot measure is estimated), so no
    /// rule here depends on the source.
    pub fn validate(&self, path: &str, p: &mut Problems) {
        self.validate_checking(path, p, true);
    }

    /// Whether any signal is set.
    pub fn has_signal(&self) -> bool {
        self.messages_per_replica.is_some()
            || self.throughput.is_some()
            || self.max_message_age.is_some()
    }

    /// Every rule but "at least one signal": a scaler with several queues
    /// checks that per queue, since each may set its own.
    pub fn validate_without_signals(&self, path: &str, p: &mut Problems) {
        self.validate_checking(path, p, false);
    }

    fn validate_checking(&self, path: &str, p: &mut Problems, signals: bool) {
        if self.max_replicas == 0 {
            p.push(format!("{path}.max_replicas"), "must be >= 1");
        }
        if self.max_replicas > MAX_REPLICAS_LIMIT {
            p.push(
                format!("{path}.max_replicas"),
                format!("must be <= {MAX_REPLICAS_LIMIT}"),
            );
        }
        if let Some(n) = self.max_parallelism
            && (n == 0 || n < self.min_replicas)
        {
            p.push(
                format!("{path}.max_parallelism"),
                format!("must be >= 1 and >= min_replicas ({})", self.min_replicas),
            );
        }
        if self.max_replicas < self.min_replicas {
            p.push(
                format!("{path}.max_replicas"),
                format!("must be >= min_replicas ({})", self.min_replicas),
            );
        }
        if signals && !self.has_signal() {
            p.push(
                path,
                "set at least one signal: messages_per_replica, throughput or max_message_age",
            );
        }
        if let Some(m) = self.messages_per_replica
            && !(m.is_finite() && m > 0.0)
        {
            p.push(
                format!("{path}.messages_per_replica"),
                "must be a number > 0",
            );
        }
        if self.max_message_age.is_some_and(|age| age.is_zero()) {
            p.push(format!("{path}.max_message_age"), "must be greater than 0");
        }
        if let Some(t) = &self.throughput {
            let tp = format!("{path}.throughput");
            match t.seconds_per_message {
                Some(s) if !(s.is_finite() && s > 0.0) => {
                    p.push(format!("{tp}.seconds_per_message"), "must be a number > 0")
                }
                _ => {}
            }
            if t.drain_within.is_some_and(|d| d.is_zero()) {
                p.push(format!("{tp}.drain_within"), "must be greater than 0");
            }
            if !(t.target_utilization > 0.0 && t.target_utilization <= 1.0) {
                p.push(
                    format!("{tp}.target_utilization"),
                    "must be greater than 0 and at most 1",
                );
            }
        }
        if let Some(d) = &self.dead_letter
            && !(d.max_fraction > 0.0 && d.max_fraction <= 1.0)
        {
            p.push(
                format!("{path}.dead_letter.max_fraction"),
                "must be greater than 0 and at most 1",
            );
        }
        if !(self.tolerance.is_finite() && (0.0..1.0).contains(&self.tolerance)) {
            p.push(format!("{path}.tolerance"), "must be >= 0 and < 1");
        }
        if self.min_replicas == 0 && self.scale_to_zero_after.is_zero() {
            p.push(
                format!("{path}.scale_to_zero_after"),
                "must be greater than 0 (e.g. \"5m\")",
            );
        }
        self.scale_up.validate(&format!("{path}.scale_up"), p);
        self.scale_down.validate(&format!("{path}.scale_down"), p);

        let fp = format!("{path}.fallback");
        let f = &self.fallback;
        if f.after_failures == 0 {
            p.push(format!("{fp}.after_failures"), "must be >= 1");
        }
        match (f.action, f.replicas) {
            (FallbackAction::Hold, Some(_)) => p.push(
                format!("{fp}.replicas"),
                "only used with action = \"replicas\" or \"current_if_higher\"",
            ),
            (FallbackAction::Replicas | FallbackAction::CurrentIfHigher, None) => {
                p.push(format!("{fp}.replicas"), "required with this action")
            }
            (_, Some(n)) if n < self.min_replicas || n > self.max_replicas => p.push(
                format!("{fp}.replicas"),
                format!(
                    "must be within min_replicas..max_replicas ({}..{})",
                    self.min_replicas, self.max_replicas
                ),
            ),
            _ => {}
        }
    }
}

impl BehaviorConfig {
    fn validate(&self, path: &str, p: &mut Problems) {
        if let Some(s) = self.stabilization
            && s > MAX_STABILIZATION
        {
            p.push(format!("{path}.stabilization"), "must be at most 1h");
        }
        if self.cooldown.is_some_and(|c| c > MAX_PERIOD) {
            p.push(format!("{path}.cooldown"), "must be at most 30m");
        }
        if let Some(policies) = &self.policies {
            if policies.is_empty() && self.select != Some(SelectPolicy::Disabled) {
                p.push(
                    format!("{path}.policies"),
                    "must list at least one limit (or set select = \"disabled\")",
                );
            }
            for (i, rl) in policies.iter().enumerate() {
                let at = format!("{path}.policies[{i}]");
                match (rl.pods, rl.percent) {
                    (Some(0), None) => p.push(format!("{at}.pods"), "must be >= 1"),
                    (None, Some(0)) => p.push(format!("{at}.percent"), "must be >= 1"),
                    (Some(_), None) | (None, Some(_)) => {}
                    _ => p.push(&at, "give exactly one of pods or percent"),
                }
                if rl.period.is_zero() || rl.period > MAX_PERIOD {
                    p.push(
                        format!("{at}.period"),
                        "must be greater than 0 and at most 30m",
                    );
                }
            }
        }
    }
}

/// One direction's behavior, defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    pub stabilization: Duration,
    pub select: SelectPolicy,
    pub limits: Vec<RateLimit>,
    pub cooldown: Duration,
}

/// One rate limit, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub amount: LimitAmount,
    pub period: Duration,
}

/// The amount a rate limit allows per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAmount {
    Pods(u32),
    Percent(u32),
}

/// The fallback, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    pub after_failures: u32,
    pub action: FallbackAction,
    pub replicas: u32,
}

/// The throughput signal, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    pub seconds_per_message: Option<f64>,
    pub drain_within: Duration,
    pub target_utilization: f64,
    /// Not configured: on by default beside an age objective
    /// (`learn_throughput`). Until its inputs are known it stays silent
    /// instead of holding scale-down, since the user did not ask for it.
    pub implicit: bool,
}

/// A validated policy with every default resolved: the input of `decide`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub max_parallelism: Option<u32>,
    pub messages_per_replica: Option<f64>,
    pub throughput: Option<Throughput>,
    pub max_message_age: Option<Duration>,
    /// Cap the backlog signal at what the age objective needs
    /// (`spend_age_budget`).
    pub spend_age_budget: bool,
    /// In-flight messages count as backlog (and the source measures them).
    pub count_in_flight: bool,
    /// Delayed messages count as backlog (and the source measures them).
    pub count_delayed: bool,
    pub tolerance: f64,
    pub activation_backlog: u64,
    pub scale_to_zero_after: Duration,
    pub scale_up: Behavior,
    pub scale_down: Behavior,
    pub fallback: Fallback,
    /// Hold scale-up while the dead-letter arrival rate exceeds this
    /// fraction of the arrival rate (`dead_letter.max_fraction`).
    pub dead_letter_max_fraction: Option<f64>,
    pub paused: bool,
}

impl Policy {
    /// Resolve defaults. Call on a config that passed validation.
    pub fn new(c: &PolicyConfig, caps: &Capabilities) -> Policy {
        let limits = |ls: &Option<Vec<RateLimitConfig>>, default: Vec<RateLimit>| match ls {
            None => default,
            Some(ls) => ls
                .iter()
                .map(|l| RateLimit {
                    amount: match (l.pods, l.percent) {
                        (Some(n), _) => LimitAmount::Pods(n),
                        (None, Some(n)) => LimitAmount::Percent(n),
                        (None, None) => LimitAmount::Percent(100),
                    },
                    period: l.period,
                })
                .collect(),
        };
        let fifteen = Duration::from_secs(15);
        Policy {
            min_replicas: c.min_replicas,
            max_replicas: c.max_replicas.min(MAX_REPLICAS_LIMIT),
            max_parallelism: c.max_parallelism,
            messages_per_replica: c.messages_per_replica,
            throughput: match (&c.throughput, c.max_message_age) {
                (Some(t), _) => Some(Throughput {
                    seconds_per_message: t.seconds_per_message,
                    drain_within: t
                        .drain_within
                        .or(c.max_message_age)
                        .unwrap_or(Duration::from_secs(60)),
                    target_utilization: t.target_utilization,
                    implicit: false,
                }),
                (None, Some(age)) if c.learn_throughput => Some(Throughput {
                    seconds_per_message: None,
                    drain_within: age,
                    target_utilization: default_target_utilization(),
                    implicit: true,
                }),
                (None, _) => None,
            },
            max_message_age: c.max_message_age,
            spend_age_budget: c.spend_age_budget,
            count_in_flight: caps.count_in_flight && caps.in_flight,
            count_delayed: caps.count_delayed && caps.delayed,
            tolerance: c.tolerance,
            activation_backlog: c.activation_backlog,
            scale_to_zero_after: c.scale_to_zero_after,
            scale_up: Behavior {
                stabilization: c.scale_up.stabilization.unwrap_or(Duration::ZERO),
                select: c.scale_up.select.unwrap_or(SelectPolicy::Max),
                limits: limits(
                    &c.scale_up.policies,
                    vec![
                        RateLimit {
                            amount: LimitAmount::Percent(100),
                            period: fifteen,
                        },
                        RateLimit {
                            amount: LimitAmount::Pods(4),
                            period: fifteen,
                        },
                    ],
                ),
                cooldown: c.scale_up.cooldown.unwrap_or(Duration::ZERO),
            },
            scale_down: Behavior {
                stabilization: c
                    .scale_down
                    .stabilization
                    .unwrap_or(default_scale_down_stabilization()),
                select: c.scale_down.select.unwrap_or(SelectPolicy::Max),
                limits: limits(
                    &c.scale_down.policies,
                    vec![RateLimit {
                        amount: LimitAmount::Percent(100),
                        period: fifteen,
                    }],
                ),
                cooldown: c
                    .scale_down
                    .cooldown
                    .unwrap_or(default_scale_down_cooldown()),
            },
            fallback: Fallback {
                after_failures: c.fallback.after_failures.max(1),
                action: c.fallback.action,
                replicas: c.fallback.replicas.unwrap_or(c.min_replicas),
            },
            dead_letter_max_fraction: c.dead_letter.as_ref().map(|d| d.max_fraction),
            paused: c.paused,
        }
    }

    /// The longest window any step looks back over; state older than this
    /// can be forgotten.
    pub fn memory(&self) -> Duration {
        let periods = self
            .scale_up
            .limits
            .iter()
            .chain(&self.scale_down.limits)
            .map(|l| l.period);
        periods
            .chain([
                self.scale_up.stabilization,
                self.scale_down.stabilization,
                self.scale_up.cooldown,
                self.scale_down.cooldown,
            ])
            .max()
            .unwrap_or(Duration::ZERO)
    }
}
