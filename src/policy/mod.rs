//! The scaling policy: pure decision code, no I/O, time passed in.
//!
//! [`decide`] runs the steps of docs/policy.md in order and
//! records a human-readable [`Reason`] for every step that changed the
//! number:
//!
//! 1. signals (backlog, throughput, age), largest wins;
//! 2. tolerance, and the dead-letter hold (failures are not capacity);
//! 3. activation and activity-based scale to zero;
//! 4. stabilization windows;
//! 5. rate limits;
//! 6. bounds;
//! 7. fallback after repeated failed or stale samples;
//! 8. pause.
//!
//! [`decide_many`] is the same decision for a pool of workers that drains
//! several queues: step 1 runs per queue (each with its own settings and
//! estimates, and its share of the pool), the queues' needs are added (or
//! the largest taken), and steps 2 to 8 run once on that number. With one
//! queue it is exactly [`decide`].
//!
//! Missing data is never read as zero: a failed sample holds the current
//! count, and a sample that lacks an input some configured signal needs can
//! raise the count but never lower it. The same function drives the daemon,
//! `qscale once` and the simulator, so what the simulator shows is what the
//! daemon does.

/// A reason's [`Message`] from a format string and the values it reads,
/// formatted when something reads it. The closure takes the values by move,
/// so each must be owned (copy a field out of a borrowed struct first).
macro_rules! msg {
    ($($arg:tt)*) => {
        $crate::policy::Message::lazy(move |f: &mut ::std::fmt::Formatter<'_>| {
            write!(f, $($arg)*)
        })
    };
}

mod behavior;
mod config;
mod dead_letter;
mod estimate;
mod queue_settings;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use config::DeadLetterConfig;
pub use config::{
    Behavior, BehaviorConfig, Combine, Fallback, FallbackAction, FallbackConfig, LimitAmount,
    MAX_REPLICAS_LIMIT, Policy, PolicyConfig, RateLimit, RateLimitConfig, SelectPolicy, Throughput,
    ThroughputConfig, default_scale_down_cooldown, default_scale_down_stabilization,
};
pub use queue_settings::{SettingWarning, queue_setting_warnings};

use crate::contract::{Replicas, Sample};
use behavior::History;
use estimate::{Estimates, Estimator, Observation};

/// The policy step a [`Reason`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Signal,
    /// Several queues' needs added up (or the largest taken).
    Combine,
    MissingData,
    Tolerance,
    DeadLetter,
    Activation,
    Stabilization,
    RateLimit,
    Bounds,
    Fallback,
    Pause,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Step::Signal => "signal",
            Step::Combine => "combine",
            Step::MissingData => "missing data",
            Step::Tolerance => "tolerance",
            Step::DeadLetter => "dead letters",
            Step::Activation => "activation",
            Step::Stabilization => "stabilization",
            Step::RateLimit => "rate limit",
            Step::Bounds => "bounds",
            Step::Fallback => "fallback",
            Step::Pause => "pause",
        };
        f.write_str(s)
    }
}

/// Why the number is what it is: one step's contribution, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub step: Step,
    pub message: Message,
}

/// A reason's text, kept as the numbers it names and formatted only when
/// read (/status, a log line, a change in the timeline). Every poll records
/// a handful of reasons and almost none are ever read: formatting them at
/// once was a quarter of the daemon's instructions per poll. Cloning shares
/// the captured values; two messages are equal when they read the same.
#[derive(Clone)]
pub struct Message(Text);

type Render = dyn Fn(&mut fmt::Formatter<'_>) -> fmt::Result + Send + Sync;

#[derive(Clone)]
enum Text {
    Fixed(&'static str),
    Lazy(Arc<Render>),
}

impl Message {
    /// A message written by `render` when read (see the `msg!` macro).
    pub fn lazy(
        render: impl Fn(&mut fmt::Formatter<'_>) -> fmt::Result + Send + Sync + 'static,
    ) -> Message {
        Message(Text::Lazy(Arc::new(render)))
    }
}

impl From<&'static str> for Message {
    fn from(s: &'static str) -> Message {
        Message(Text::Fixed(s))
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Text::Fixed(s) => f.write_str(s),
            Text::Lazy(render) => render(f),
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

impl Message {
    /// Whether the message reads `text`, compared as it is written out.
    pub fn reads(&self, text: &str) -> bool {
        let mut rest = Rest(text);
        fmt::write(&mut rest, format_args!("{self}")).is_ok() && rest.0.is_empty()
    }
}

/// What is left of a text being matched against a message's pieces.
struct Rest<'a>(&'a str);

impl fmt::Write for Rest<'_> {
    fn write_str(&mut self, piece: &str) -> fmt::Result {
        self.0 = self.0.strip_prefix(piece).ok_or(fmt::Error)?;
        Ok(())
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.reads(&other.to_string())
    }
}

impl Eq for Message {}

impl PartialEq<&str> for Message {
    fn eq(&self, other: &&str) -> bool {
        self.reads(other)
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.message)
    }
}

/// What one signal proposed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposal {
    /// `backlog`, `throughput` or `age`.
    pub signal: &'static str,
    /// The replica count it asks for; `None` when it could not say.
    pub replicas: Option<u32>,
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The replica count to ask for.
    pub replicas: u32,
    /// The target's count when the decision was made.
    pub current: u32,
    /// Every step that shaped the number, in order.
    pub reasons: Vec<Reason>,
    /// Each configured signal's proposal (one queue; with several, each
    /// queue's are in `queues`).
    pub proposals: Vec<Proposal>,
    /// With several queues, what each one asked for, in config order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueDecision>,
    /// Messages counted as backlog, when measured (several queues: the
    /// total of those measured).
    pub backlog: Option<u64>,
    /// Age of the oldest waiting message the age signal used: measured, or
    /// estimated from the sample history when the source cannot measure it
    /// (several queues: the oldest among them).
    #[serde(rename = "oldest_age_seconds", serialize_with = "opt_secs")]
    pub oldest_age: Option<Duration>,
    /// `oldest_age` is an estimate, not the source's measurement.
    pub oldest_age_estimated: bool,
    /// The arrival rate used (measured or estimated), messages/s (several
    /// queues: the total of those known).
    pub arrival_rate: Option<f64>,
    /// The seconds per message used (configured or learned); with several
    /// queues, see each queue's.
    pub seconds_per_message: Option<f64>,
    /// `seconds_per_message` was learned, not configured.
    pub seconds_per_message_learned: bool,
    /// Messages per second arriving in the dead-letter queue, from the
    /// growth of its depth; `None` while unknown (several queues: the total
    /// of those known).
    pub dead_letter_rate: Option<f64>,
    /// The fallback is in force.
    pub fallback_active: bool,
    /// The policy is paused: `replicas` equals `current`.
    pub paused: bool,
    /// What the decision would be without the pause.
    pub unpaused_replicas: u32,
}

impl Decision {
    /// Whether acting on this decision changes the target.
    pub fn changes(&self) -> bool {
        self.replicas != self.current
    }
}

/// What a scaler remembers between decisions: stabilization windows,
/// recent scale events, failure count, activity, and learned rates.
/// It survives config reloads that do not change the scaler.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    history: History,
    /// Each queue's estimates, by queue name (`""` for a scaler with one
    /// queue), so they survive reloads as the windows do. A list, not a
    /// map: a scaler has one queue or a few, and a `BTreeMap`'s first node
    /// has room for eleven (2.8 KB per scaler for its one queue).
    queues: Vec<(String, QueueState)>,
    consecutive_failures: u32,
    last_active: Option<Instant>,
    /// Since when a step down has been waiting for the stabilized count to
    /// settle (`None` while not waiting).
    settling_since: Option<Instant>,
    /// The target's count at the last decision, held while the target
    /// cannot be read.
    last_current: Option<u32>,
}

/// What is learned about one queue: its arrival rate, seconds per message
/// and age history, and its dead-letter rate.
#[derive(Debug, Clone, Default)]
struct QueueState {
    estimator: Estimator,
    dead_letters: dead_letter::DeadLetterRate,
}

impl PolicyState {
    pub fn new() -> PolicyState {
        PolicyState::default()
    }

    /// Record that the target was changed from `from` to `to` at `at`, for
    /// the rate limits. Call after a successful write.
    pub fn record_scale(&mut self, from: u32, to: u32, at: Instant) {
        self.history.record_event(at, from, to);
    }

    /// Record a poll that could not decide because the target could not be
    /// read: the count of the last decision then stands in the down-window
    /// like a held count, so the first decision after the target returns
    /// cannot scale down on a single sample.
    pub fn record_blind_poll(&mut self, now: Instant) {
        if let Some(n) = self.last_current {
            self.history.hold(now, n);
        }
    }

    /// Consecutive failed or stale samples so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

/// Round a replica proposal up, forgiving float noise (`2.0000000001` is 2),
/// and saturating instead of overflowing.
fn ceil_replicas(x: f64) -> u32 {
    if !x.is_finite() {
        return if x > 0.0 { u32::MAX } else { 0 };
    }
    let c = (x - 1e-9).ceil();
    if c <= 0.0 {
        0
    } else if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

/// A duration in reasons: whole seconds (at least 1 s unless zero), as
/// humantime writes them. A value to format, not a `String`: a poll writes
/// a dozen of these into its reasons, and a string each was a tenth of a
/// poll's instructions in allocations and copies.
fn secs(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(if d.is_zero() {
        0
    } else {
        1
    })))
}

/// A number in reasons: an integer as such, else one decimal from 10 up
/// and two below. Formatted where it is written (see [`secs`]).
fn num(x: f64) -> Num {
    Num(x)
}

struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0;
        if (x - x.round()).abs() < 1e-9 {
            write!(f, "{}", x.round() as i64)
        } else if x.abs() >= 10.0 {
            write!(f, "{x:.1}")
        } else {
            write!(f, "{x:.2}")
        }
    }
}

struct Inputs {
    backlog: Option<u64>,
    oldest_age: Option<Duration>,
    /// `oldest_age` is qscale's estimate from the sample history, not the
    /// source's measurement.
    age_estimated: bool,
    /// The estimate is only a lower bound (the backlog predates the
    /// history): it may raise the count, never lower it.
    age_at_least: bool,
    /// Visible + in-flight (what "activity" means for scale to zero).
    activity: Option<u64>,
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// What the sample says, in the terms the signals use.
fn inputs(policy: &Policy, s: &Sample) -> Inputs {
    let backlog = s.visible.and_then(|v| {
        let mut b = v;
        if policy.count_in_flight {
            b = b.checked_add(s.in_flight?)?;
        }
        if policy.count_delayed {
            b = b.checked_add(s.delayed?)?;
        }
        Some(b)
    });
    // With nothing visible, the oldest waiting message has age zero even when
    // the age metric itself is missing or stale.
    let oldest_age = match (s.oldest_age, s.visible) {
        (Some(a), _) => Some(a),
        (None, Some(0)) => Some(Duration::ZERO),
        _ => None,
    };
    let activity = s.visible.map(|v| {
        v.saturating_add(s.in_flight.unwrap_or(0))
            .saturating_add(s.delayed.unwrap_or(0))
    });
    Inputs {
        backlog,
        oldest_age,
        age_estimated: false,
        age_at_least: false,
        activity,
    }
}

/// Decide the replica count for one poll of a scaler with one queue.
///
/// `sample` is `None` when the poll failed. `current` is the target's state
/// now. Pure: the same inputs and state give the same decision. The
/// one-queue case of [`decide_many`].
pub fn decide(
    policy: &Policy,
    state: &mut PolicyState,
    sample: Option<&Sample>,
    current: Replicas,
    now: Instant,
) -> Decision {
    decide_many(
        policy,
        state,
        &[QueueSample {
            name: "",
            policy,
            sample,
        }],
        Combine::Sum,
        current,
        now,
    )
}

/// One queue's input to [`decide_many`].
#[derive(Debug, Clone, Copy)]
pub struct QueueSample<'a> {
    /// The queue's name, for reasons and its own estimator state; empty for
    /// a scaler with one queue.
    pub name: &'a str,
    /// What this queue's signals read: the scaler's policy with the queue's
    /// own settings (age objective, messages per replica, seconds per
    /// message) and its source's capabilities in place. Steps 2 to 8 read
    /// the scaler's policy.
    pub policy: &'a Policy,
    /// `None` when this queue's sample failed.
    pub sample: Option<&'a Sample>,
}

/// What one queue of a scaler with several asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueDecision {
    pub name: String,
    /// The queue was sampled this poll.
    pub sampled: bool,
    /// What this queue needs: its largest signal's proposal, `None` when no
    /// signal could say.
    pub replicas: Option<u32>,
    /// The replicas counted as working on this queue (its share of the
    /// pool, for the age signal and learning the seconds per message).
    pub share: f64,
    /// Each of its signals' proposals.
    pub proposals: Vec<Proposal>,
    pub backlog: Option<u64>,
    #[serde(rename = "oldest_age_seconds", serialize_with = "opt_secs")]
    pub oldest_age: Option<Duration>,
    pub oldest_age_estimated: bool,
    pub arrival_rate: Option<f64>,
    pub seconds_per_message: Option<f64>,
    pub seconds_per_message_learned: bool,
    pub dead_letter_rate: Option<f64>,
}

/// What step 1 found for one queue.
struct QueueOutcome {
    /// `None`: the queue's sample failed.
    inp: Option<Inputs>,
    est: Estimates,
    dead_letter_rate: Option<f64>,
    signals: Signals,
    proposals: Vec<Proposal>,
    reasons: Vec<Reason>,
    share: f64,
}

impl QueueOutcome {
    /// The largest proposal a signal with data made (the fallback never
    /// goes below what measured signals ask for).
    fn measured(&self) -> Option<u32> {
        self.proposals.iter().filter_map(|p| p.replicas).max()
    }
}

/// How the pool's replicas split over its queues, for the signals that read
/// the current count: by the messages each has in flight (the workers busy
/// on it), else by backlog, else evenly. Fractions that add up to 1, and the
/// basis in words.
fn split(queues: &[QueueSample]) -> (Vec<f64>, &'static str) {
    let n = queues.len();
    if n == 1 {
        return (vec![1.0], "all");
    }
    let by = |f: &dyn Fn(&QueueSample) -> Option<u64>| -> Option<Vec<f64>> {
        let counts: Option<Vec<u64>> = queues.iter().map(f).collect();
        let counts = counts?;
        let total: u64 = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
        (total > 0).then(|| counts.iter().map(|&c| c as f64 / total as f64).collect())
    };
    if let Some(f) = by(&|q| q.sample.and_then(|s| s.in_flight)) {
        return (f, "split by messages in flight");
    }
    if let Some(f) = by(&|q| q.sample.and_then(|s| inputs(q.policy, s).backlog)) {
        return (f, "split by backlog");
    }
    (vec![1.0 / n as f64; n], "split evenly")
}

/// Decide the replica count for one poll of a scaler whose workers drain
/// several queues (docs/policy.md, "Several queues").
///
/// Step 1 runs per queue, with the queue's own policy and estimator state;
/// each queue's need is its largest proposal. `combine` adds the needs
/// (`sum`: the workers take from every queue) or takes the largest
/// (`max`), and steps 2 to 8 run once on that number with `policy`. A queue
/// whose sample failed adds nothing and keeps the count from going down;
/// all of them failing is a failed poll. With one queue this is exactly
/// [`decide`].
pub fn decide_many(
    policy: &Policy,
    state: &mut PolicyState,
    queues: &[QueueSample],
    combine: Combine,
    current: Replicas,
    now: Instant,
) -> Decision {
    state.history.prune(now, policy.memory());
    if state.last_active.is_none() {
        // The idle clock for scale to zero starts when qscale first looks.
        state.last_active = Some(now);
    }
    // Queues no longer configured take their estimates with them.
    state
        .queues
        .retain(|(name, _)| queues.iter().any(|q| q.name == name));
    let cur = current.desired;
    state.last_current = Some(cur);
    let multi = queues.len() > 1;
    let mut reasons = Vec::new();
    let mut proposals = Vec::new();
    let mut details = Vec::new();
    let mut measured = None;
    let mut pool = Pool::default();

    let unbounded = if queues.iter().all(|q| q.sample.is_none()) {
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        state.history.hold(now, cur);
        let message = if multi {
            let n = queues.len();
            msg!("no sample from any of the {n} queues; holding at {cur}")
        } else {
            msg!("no sample; holding at {cur}")
        };
        reasons.push(Reason {
            step: Step::MissingData,
            message,
        });
        if multi {
            let (fractions, _) = split(queues);
            for (q, f) in queues.iter().zip(fractions) {
                details.push(QueueDecision {
                    name: q.name.to_string(),
                    sampled: false,
                    replicas: None,
                    share: f * f64::from(cur),
                    proposals: Vec::new(),
                    backlog: None,
                    oldest_age: None,
                    oldest_age_estimated: false,
                    arrival_rate: None,
                    seconds_per_message: None,
                    seconds_per_message_learned: false,
                    dead_letter_rate: None,
                });
            }
        }
        cur
    } else {
        let (fractions, basis) = split(queues);
        let outcomes: Vec<QueueOutcome> = queues
            .iter()
            .zip(&fractions)
            .map(|(q, &f)| {
                // One queue's name is "": the key costs no allocation.
                let i = match state.queues.iter().position(|(n, _)| n == q.name) {
                    Some(i) => i,
                    None => {
                        state.queues.reserve_exact(1);
                        state
                            .queues
                            .push((q.name.to_string(), QueueState::default()));
                        state.queues.len() - 1
                    }
                };
                let qs = &mut state.queues[i].1;
                let note = multi.then(|| msg!("of {cur} replicas, {basis}"));
                queue_step1(q, qs, f, note, current, now)
            })
            .collect();
        if outcomes.iter().filter_map(|o| o.inp.as_ref()).any(|i| {
            i.activity.is_some_and(|a| a > 0) || i.oldest_age.is_some_and(|a| !a.is_zero())
        }) {
            state.last_active = Some(now);
        }
        let step1 = combined(queues, &outcomes, combine, &mut reasons);
        pool = Pool::of(&outcomes, multi);
        measured = combine_counts(combine, outcomes.iter().map(QueueOutcome::measured));
        for (q, o) in queues.iter().zip(outcomes) {
            if multi {
                let sampled = o.inp.is_some();
                details.push(QueueDecision {
                    name: q.name.to_string(),
                    sampled,
                    replicas: o.signals.best.map(|(r, _)| ceil_replicas(r)),
                    share: o.share,
                    proposals: o.proposals,
                    backlog: o.inp.as_ref().and_then(|i| i.backlog),
                    oldest_age: o.inp.as_ref().and_then(|i| i.oldest_age),
                    oldest_age_estimated: o.inp.as_ref().is_some_and(|i| i.age_estimated),
                    arrival_rate: o.est.arrival_rate,
                    seconds_per_message: o.est.seconds_per_message,
                    seconds_per_message_learned: o.est.service_learned,
                    dead_letter_rate: o.dead_letter_rate,
                });
            } else {
                proposals = o.proposals;
            }
        }
        settle(policy, state, &step1, &pool, current, now, &mut reasons)
    };

    // 6. Bounds (and the parallelism cap, a bound the work itself sets).
    let cap = policy
        .max_parallelism
        .map_or(policy.max_replicas, |n| n.min(policy.max_replicas));
    let mut replicas = unbounded.clamp(policy.min_replicas.min(cap), cap);
    if replicas != unbounded {
        let (max, min) = (policy.max_replicas, policy.min_replicas);
        let which = if unbounded > cap && cap < max {
            msg!("max_parallelism {cap} (no more workers can be busy at once)")
        } else if unbounded > cap {
            msg!("max_replicas {max}")
        } else {
            msg!("min_replicas {min}")
        };
        reasons.push(Reason {
            step: Step::Bounds,
            message: msg!("{unbounded} clamped to {which} -> {replicas}"),
        });
    }

    // 7. Fallback.
    let fallback_active = state.consecutive_failures >= policy.fallback.after_failures;
    if fallback_active {
        let n = state.consecutive_failures;
        let fb = policy.fallback;
        // What the signals that still have data ask for: the fallback never
        // overrides a measured need for more workers.
        let target = match fb.action {
            FallbackAction::Hold => replicas.max(cur.min(policy.max_replicas)),
            // Exactly `replicas`, for failed and stale samples alike (it may
            // scale down: that is what the user asked for), unless measured
            // signals ask for more.
            FallbackAction::Replicas => fb.replicas.max(measured.unwrap_or(0)),
            FallbackAction::CurrentIfHigher => replicas.max(cur).max(fb.replicas),
        }
        .clamp(policy.min_replicas, policy.max_replicas);
        let fr = fb.replicas;
        let action = match (fb.action, measured) {
            (FallbackAction::Hold, _) => Message::from("hold"),
            (FallbackAction::Replicas, Some(m)) if m > fr => {
                msg!("replicas {fr} (measured signals ask for {m})")
            }
            (FallbackAction::Replicas, _) => msg!("replicas {fr}"),
            (FallbackAction::CurrentIfHigher, _) => msg!("current_if_higher {fr}"),
        };
        reasons.push(Reason {
            step: Step::Fallback,
            message: msg!("{n} failed or stale samples in a row; {action} -> {target}"),
        });
        replicas = target;
    }

    // 8. Pause.
    let unpaused = replicas;
    if policy.paused && replicas != cur {
        reasons.push(Reason {
            step: Step::Pause,
            message: msg!("paused; would scale to {replicas}, keeping {cur}"),
        });
        replicas = cur;
    }

    Decision {
        replicas,
        current: cur,
        reasons,
        proposals,
        queues: details,
        backlog: pool.backlog,
        oldest_age: pool.oldest_age,
        oldest_age_estimated: pool.age_estimated,
        arrival_rate: pool.arrival_rate,
        seconds_per_message: pool.seconds_per_message,
        seconds_per_message_learned: pool.seconds_per_message_learned,
        dead_letter_rate: pool.dead_letter_rate,
        fallback_active,
        paused: policy.paused,
        unpaused_replicas: unpaused,
    }
}

/// How far ahead a step down looks to see whether the stabilized count is
/// still falling (three polls at the default 5 s).
const SETTLE_LOOKAHEAD: Duration = Duration::from_secs(15);

/// Little's law, as the throughput signal and the age budget both use it:
/// the workers that keep up with `lambda` messages/s of `s` seconds each at
/// `utilization`, plus those that clear `backlog` in `drain` seconds.
fn workers_needed(lambda: f64, s: f64, utilization: f64, backlog: u64, drain: f64) -> f64 {
    lambda * s / utilization + backlog as f64 * s / drain
}

/// Floor of the drain time the age budget plans for, as a fraction of the
/// objective: near the objective the budget asks for many workers, but a
/// finite number (the age signal takes over past the objective).
const MIN_BUDGET_FRACTION: f64 = 0.05;

/// What the age objective needs for a backlog: the workers that keep up with
/// arrivals and drain the backlog in a third of the time its oldest message
/// has left. A third, because new workers take a while to start (30 s is
/// common) and the service time is only an estimate; the margin is what
/// keeps the oldest message inside the objective while far fewer workers
/// than `backlog / messages_per_replica` do the work (in the simulator, half
/// the time left let a batch drop overrun a 2 min objective by 10 s).
struct AgeBudget {
    replicas: f64,
    backlog: u64,
    seconds_per_message: f64,
    learned: bool,
    drain: Duration,
    oldest: Duration,
    objective: Duration,
}

impl fmt::Display for AgeBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let learned = if self.learned { " (learned)" } else { "" };
        write!(
            f,
            "the age objective needs {}: arrivals plus {} x {} s/msg{learned} drained in {}, \
             a third of the time the oldest message ({}) has left of {} -> {}",
            ceil_replicas(self.replicas),
            self.backlog,
            num(self.seconds_per_message),
            secs(self.drain),
            secs(self.oldest),
            secs(self.objective),
            ceil_replicas(self.replicas)
        )
    }
}

/// The age budget for `backlog`, when everything it needs is known: an age
/// objective, the oldest message's age (not just a lower bound), the
/// arrival rate and the seconds per message. `None` leaves the backlog
/// signal as configured.
fn age_budget(policy: &Policy, inp: &Inputs, est: &Estimates, backlog: u64) -> Option<AgeBudget> {
    if !policy.spend_age_budget || inp.age_at_least {
        return None;
    }
    let objective = policy.max_message_age?;
    let oldest = inp.oldest_age?;
    let s = est.seconds_per_message?;
    let lambda = est.arrival_rate?;
    if !(s.is_finite() && s > 0.0 && lambda.is_finite() && lambda >= 0.0) {
        return None;
    }
    let utilization = policy.throughput.map_or(1.0, |t| t.target_utilization);
    let left = objective.saturating_sub(oldest).as_secs_f64() / 3.0;
    let drain = left.max(objective.as_secs_f64() * MIN_BUDGET_FRACTION);
    let replicas = workers_needed(lambda, s, utilization, backlog, drain);
    Some(AgeBudget {
        replicas,
        backlog,
        seconds_per_message: s,
        learned: est.service_learned,
        drain: Duration::from_secs_f64(drain),
        oldest,
        objective,
    })
}

/// A queue's share of the pool's replicas, for the signals that read the
/// current count.
struct Share {
    replicas: f64,
    /// How the share was found (`None` with one queue: it is the whole
    /// pool).
    note: Option<Message>,
}

impl Share {
    /// `6` with one queue, `2.5 (of 6 replicas, split by ...)` with several.
    fn describe(&self) -> Message {
        let r = self.replicas;
        match self.note.clone() {
            None => msg!("{}", num(r)),
            Some(n) => msg!("{} ({n})", num(r)),
        }
    }
}

/// What one queue's signals found.
#[derive(Debug, Clone, Copy, Default)]
struct Signals {
    /// Raw (unrounded) proposal of the winning signal, for the tolerance
    /// test, and its name.
    best: Option<(f64, &'static str)>,
    /// A configured signal lacked a measured input: counts as a stale sample.
    stale: bool,
    /// Some signal could not say anything: do not scale down on what is left.
    floor_at_current: bool,
}

/// What step 1 found for the whole pool.
struct Step1 {
    /// The combined raw need; `None` when no signal could say.
    raw: Option<f64>,
    stale: bool,
    floor_at_current: bool,
}

/// The pool-wide figures the later steps and the decision read: one
/// queue's own, or for several the total backlog and activity, the oldest
/// age among the queues and the summed rates.
#[derive(Debug, Clone, Default)]
struct Pool {
    backlog: Option<u64>,
    /// `None` (unknown: never idle) unless every queue measured it.
    activity: Option<u64>,
    oldest_age: Option<Duration>,
    age_estimated: bool,
    arrival_rate: Option<f64>,
    seconds_per_message: Option<f64>,
    seconds_per_message_learned: bool,
    dead_letter_rate: Option<f64>,
}

/// The sum of the known values; `None` when none is known.
fn sum_known(xs: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    xs.flatten().reduce(|a, b| a + b)
}

impl Pool {
    fn of(outcomes: &[QueueOutcome], multi: bool) -> Pool {
        if !multi {
            let Some(o) = outcomes.first() else {
                return Pool::default();
            };
            let inp = o.inp.as_ref();
            return Pool {
                backlog: inp.and_then(|i| i.backlog),
                activity: inp.and_then(|i| i.activity),
                oldest_age: inp.and_then(|i| i.oldest_age),
                age_estimated: inp.is_some_and(|i| i.age_estimated),
                arrival_rate: o.est.arrival_rate,
                seconds_per_message: o.est.seconds_per_message,
                seconds_per_message_learned: o.est.service_learned,
                dead_letter_rate: o.dead_letter_rate,
            };
        }
        let inputs = || outcomes.iter().map(|o| o.inp.as_ref());
        let backlog = inputs()
            .filter_map(|i| i?.backlog)
            .reduce(|a, b| a.saturating_add(b));
        let activity = inputs()
            .map(|i| i.and_then(|i| i.activity))
            .try_fold(0u64, |a, x| x.map(|x| a.saturating_add(x)));
        let oldest = inputs()
            .filter_map(|i| i.and_then(|i| i.oldest_age.map(|a| (a, i.age_estimated))))
            .max_by_key(|(a, _)| *a);
        Pool {
            backlog,
            activity,
            oldest_age: oldest.map(|(a, _)| a),
            age_estimated: oldest.is_some_and(|(_, e)| e),
            arrival_rate: sum_known(outcomes.iter().map(|o| o.est.arrival_rate)),
            seconds_per_message: None,
            seconds_per_message_learned: false,
            dead_letter_rate: sum_known(outcomes.iter().map(|o| o.dead_letter_rate)),
        }
    }
}

/// Sum (or the largest of) the counts that are known; `None` when none is.
fn combine_counts(combine: Combine, xs: impl Iterator<Item = Option<u32>>) -> Option<u32> {
    xs.flatten().reduce(|a, b| match combine {
        Combine::Sum => a.saturating_add(b),
        Combine::Max => a.max(b),
    })
}

/// Step 1 for one queue: its estimates and its signals' proposals.
fn queue_step1(
    q: &QueueSample,
    qs: &mut QueueState,
    fraction: f64,
    note: Option<Message>,
    current: Replicas,
    now: Instant,
) -> QueueOutcome {
    let cur = current.desired;
    let share = Share {
        replicas: fraction * f64::from(cur),
        note,
    };
    let Some(s) = q.sample else {
        return QueueOutcome {
            inp: None,
            est: Estimates::default(),
            dead_letter_rate: None,
            signals: Signals {
                best: None,
                stale: true,
                floor_at_current: true,
            },
            proposals: Vec::new(),
            reasons: vec![Reason {
                step: Step::MissingData,
                message: msg!("no sample; not scaling down below {cur}"),
            }],
            share: share.replicas,
        };
    };
    let policy = q.policy;
    let dead_letter_rate = qs.dead_letters.observe(now, s.dead_letter);
    let mut inp = inputs(policy, s);
    let mut est = Estimates::default();
    if let Some(visible) = s.visible {
        let depth = inp.activity.unwrap_or(visible);
        est = qs.estimator.observe(
            now,
            &Observation {
                depth,
                visible,
                in_flight: s.in_flight,
                arrival_rate: s.arrival_rate,
                workers: fraction * f64::from(current.ready.unwrap_or(cur)),
            },
            policy.throughput.and_then(|t| t.seconds_per_message),
        );
        // A fresh measured age wins; the estimate fills the gap.
        if inp.oldest_age.is_none() && est.oldest_age.is_some() {
            inp.oldest_age = est.oldest_age;
            inp.age_estimated = true;
            inp.age_at_least = est.oldest_age_at_least;
        }
    }
    let mut reasons = Vec::new();
    let mut proposals = Vec::new();
    let signals = signals(
        policy,
        &inp,
        &est,
        &share,
        current,
        &mut reasons,
        &mut proposals,
    );
    QueueOutcome {
        inp: Some(inp),
        est,
        dead_letter_rate,
        signals,
        proposals,
        reasons,
        share: share.replicas,
    }
}

/// Step 1's reasons and the pool's need: one queue's own, or each queue's
/// reasons under its name and the queues' needs combined.
fn combined(
    queues: &[QueueSample],
    outcomes: &[QueueOutcome],
    combine: Combine,
    reasons: &mut Vec<Reason>,
) -> Step1 {
    let multi = queues.len() > 1;
    for (q, o) in queues.iter().zip(outcomes) {
        reasons.extend(o.reasons.iter().map(|r| Reason {
            step: r.step,
            message: if multi {
                let (name, m) = (q.name.to_string(), r.message.clone());
                msg!("{name}: {m}")
            } else {
                r.message.clone()
            },
        }));
    }
    let stale = outcomes.iter().any(|o| o.signals.stale);
    let floor_at_current = outcomes.iter().any(|o| o.signals.floor_at_current);
    let raw = outcomes
        .iter()
        .filter_map(|o| o.signals.best.map(|(r, _)| r))
        .reduce(|a, b| match combine {
            Combine::Sum => a + b,
            Combine::Max => a.max(b),
        });
    if multi && let Some(raw) = raw {
        let terms: Vec<String> = queues
            .iter()
            .zip(outcomes)
            .map(|(q, o)| match (o.signals.best, &o.inp) {
                (Some((r, _)), _) => format!("{} {}", q.name, num(r)),
                (None, None) => format!("{} (no sample)", q.name),
                (None, Some(_)) => format!("{} (no proposal)", q.name),
            })
            .collect();
        let (what, sep) = match combine {
            Combine::Sum => ("sum", " + "),
            Combine::Max => ("largest", ", "),
        };
        // Several queues are the rare case: their terms are written now.
        let terms = terms.join(sep);
        let n = queues.len();
        let total = ceil_replicas(raw);
        reasons.push(Reason {
            step: Step::Combine,
            message: msg!("{what} of {n} queues: {terms} -> {total}"),
        });
    }
    Step1 {
        raw,
        stale,
        floor_at_current,
    }
}

/// Step 1 for one queue: each configured signal's proposal.
fn signals(
    policy: &Policy,
    inp: &Inputs,
    est: &Estimates,
    share: &Share,
    current: Replicas,
    reasons: &mut Vec<Reason>,
    proposals: &mut Vec<Proposal>,
) -> Signals {
    let cur = current.desired;
    // Raw (unrounded) proposal of the winning signal, for the tolerance test.
    let mut best: Option<(f64, &'static str)> = None;
    // A configured signal lacked a measured input: counts as a stale sample.
    let mut stale = false;
    // Some signal could not say anything: do not scale down on what is left.
    let mut floor_at_current = false;

    let mut propose =
        |signal: &'static str, raw: Option<f64>, message: Message, reasons: &mut Vec<Reason>| {
            proposals.push(Proposal {
                signal,
                replicas: raw.map(ceil_replicas),
            });
            reasons.push(Reason {
                step: Step::Signal,
                message,
            });
            if let Some(r) = raw
                && best.is_none_or(|(b, _)| r > b)
            {
                best = Some((r, signal));
            }
        };

    // 1. Signals.
    if let Some(mpr) = policy.messages_per_replica {
        match inp.backlog {
            Some(b) => {
                let raw = b as f64 / mpr;
                let asked = msg!(
                    "backlog {b} / {} per replica -> {}",
                    num(mpr),
                    ceil_replicas(raw)
                );
                match age_budget(policy, inp, est, b) {
                    Some(budget) if ceil_replicas(budget.replicas) < ceil_replicas(raw) => {
                        propose(
                            "backlog",
                            Some(budget.replicas),
                            msg!("{asked}; {budget}"),
                            reasons,
                        );
                    }
                    _ => propose("backlog", Some(raw), asked, reasons),
                }
            }
            None => {
                stale = true;
                floor_at_current = true;
                propose(
                    "backlog",
                    None,
                    Message::from("backlog not measured"),
                    reasons,
                );
            }
        }
    }
    if let Some(tp) = policy.throughput {
        match (est.arrival_rate, est.seconds_per_message, inp.backlog) {
            (Some(lambda), Some(s), Some(b)) => {
                let raw = workers_needed(
                    lambda,
                    s,
                    tp.target_utilization,
                    b,
                    tp.drain_within.as_secs_f64().max(0.001),
                );
                let lam = if est.arrival_estimated {
                    "estimated "
                } else {
                    ""
                };
                let learned = if est.service_learned {
                    " (learned)"
                } else {
                    ""
                };
                let u = tp.target_utilization;
                let util = if u < 1.0 {
                    msg!(" / utilization {}", num(u))
                } else {
                    Message::from("")
                };
                let drain_within = tp.drain_within;
                propose(
                    "throughput",
                    Some(raw),
                    msg!(
                        "{lam}arrivals {} msg/s x {} s/msg{learned}{util} + backlog {b} x {} s / {} -> {}",
                        num(lambda),
                        num(s),
                        num(s),
                        secs(drain_within),
                        ceil_replicas(raw)
                    ),
                    reasons,
                );
            }
            (_, _, Some(_)) if tp.implicit => {
                // Not asked for by the user: silent until it has learned.
                propose(
                    "throughput",
                    None,
                    Message::from(
                        "throughput not yet learned (on by default beside max_message_age)",
                    ),
                    reasons,
                );
            }
            (lambda, s, b) => {
                // Not knowing yet is not a failed sample, but it is no reason
                // to scale down either.
                floor_at_current = true;
                if b.is_none() {
                    stale = true;
                }
                let missing = [
                    (lambda.is_none(), "arrival rate"),
                    (s.is_none(), "seconds per message (not yet learned)"),
                    (b.is_none(), "backlog"),
                ]
                .iter()
                .filter(|(m, _)| *m)
                .map(|(_, what)| *what)
                .collect::<Vec<_>>()
                .join(", ");
                propose(
                    "throughput",
                    None,
                    msg!("throughput unknown: no {missing}"),
                    reasons,
                );
            }
        }
    }
    if let Some(max_age) = policy.max_message_age {
        let est = match (inp.age_estimated, inp.age_at_least) {
            (true, true) => " or more (estimated)",
            (true, false) => " (estimated)",
            _ => "",
        };
        match inp.oldest_age {
            None => {
                stale = true;
                floor_at_current = true;
                propose(
                    "age",
                    None,
                    Message::from("oldest message age not measured and not yet estimated"),
                    reasons,
                );
            }
            Some(age) if age <= max_age => {
                if inp.age_at_least {
                    floor_at_current = true;
                }
                propose(
                    "age",
                    Some(0.0),
                    msg!(
                        "oldest message {}{est} within objective {}",
                        secs(age),
                        secs(max_age)
                    ),
                    reasons,
                );
            }
            Some(age) => match current.ready {
                Some(ready) if ready < cur => propose(
                    "age",
                    Some(share.replicas),
                    {
                        let (starting, share) = (cur - ready, share.describe());
                        msg!(
                            "oldest message {}{est} over objective {}; waiting for {starting} starting replicas -> {share}",
                            secs(age),
                            secs(max_age),
                        )
                    },
                    reasons,
                ),
                _ => {
                    let ratio = age.as_secs_f64() / max_age.as_secs_f64();
                    let raw = (share.replicas * ratio).max(share.replicas + 1.0);
                    propose(
                        "age",
                        Some(raw),
                        {
                            let share = share.describe();
                            msg!(
                                "oldest message {}{est} over objective {}: {share} x {} -> {}",
                                secs(age),
                                secs(max_age),
                                num(ratio),
                                ceil_replicas(raw)
                            )
                        },
                        reasons,
                    );
                }
            },
        }
    }

    if let Some((raw, winner)) = best
        && proposals.len() > 1
    {
        reasons.push(Reason {
            step: Step::Signal,
            message: msg!("largest proposal: {winner} -> {}", ceil_replicas(raw)),
        });
    }
    Signals {
        best,
        stale,
        floor_at_current,
    }
}

/// Steps 2 to 5, once for the pool, on step 1's combined need.
fn settle(
    policy: &Policy,
    state: &mut PolicyState,
    step1: &Step1,
    pool: &Pool,
    current: Replicas,
    now: Instant,
    reasons: &mut Vec<Reason>,
) -> u32 {
    let cur = current.desired;
    if step1.stale {
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
    } else {
        state.consecutive_failures = 0;
    }
    let floor_at_current = step1.floor_at_current;
    let mut desired = step1.raw.map_or(cur, ceil_replicas);

    // 2. Tolerance (on the unrounded ratio, as the HPA compares usage ratios).
    if let Some(raw) = step1.raw
        && cur > 0
        && desired != cur
    {
        let ratio = raw / f64::from(cur);
        let tolerance = policy.tolerance;
        if (ratio - 1.0).abs() <= tolerance {
            reasons.push(Reason {
                step: Step::Tolerance,
                message: msg!(
                    "{} is within {}% of {cur}; keeping {cur}",
                    num(raw),
                    num(tolerance * 100.0)
                ),
            });
            desired = cur;
        }
    }

    // 2b. Dead letters: failing work is not a reason to add workers.
    desired = dead_letter::hold(
        policy.dead_letter_max_fraction,
        pool.dead_letter_rate,
        pool.arrival_rate,
        cur,
        desired,
        reasons,
    );

    if floor_at_current && desired < cur {
        reasons.push(Reason {
            step: Step::MissingData,
            message: msg!("a signal has no data; not scaling down below {cur}"),
        });
        desired = cur;
    }

    // 3. Activation and scale to zero.
    let mut to_zero = false;
    if policy.min_replicas == 0 {
        // Unknown activity is not idleness: never go to zero on it.
        let busy =
            pool.activity.is_none_or(|a| a > 0) || pool.oldest_age.is_some_and(|a| !a.is_zero());
        if cur == 0 {
            let b = pool.backlog.unwrap_or(0);
            let activation = policy.activation_backlog;
            if b > activation {
                if desired == 0 {
                    desired = 1;
                }
                reasons.push(Reason {
                    step: Step::Activation,
                    message: msg!(
                        "backlog {b} > activation_backlog {activation}; waking -> {desired}"
                    ),
                });
            } else if desired > 0 {
                reasons.push(Reason {
                    step: Step::Activation,
                    message: msg!("backlog {b} <= activation_backlog {activation}; staying at 0"),
                });
                desired = 0;
            }
        } else if desired == 0 {
            let idle = state
                .last_active
                .map(|t| now.saturating_duration_since(t))
                .unwrap_or_default();
            let after = policy.scale_to_zero_after;
            if busy || idle < after {
                reasons.push(Reason {
                    step: Step::Activation,
                    message: msg!(
                        "idle for {} of {}; keeping 1 until then",
                        secs(idle),
                        secs(after)
                    ),
                });
                desired = 1;
            } else {
                reasons.push(Reason {
                    step: Step::Activation,
                    message: msg!("idle for {}; scaling to zero", secs(idle)),
                });
                to_zero = true;
            }
        }
    }

    // 4. Stabilization. Going to zero is already stabilized by its own
    // activity-based window (`scale_to_zero_after`), as KEDA's cooldown is
    // not the HPA's: the recommendation is recorded but does not wait for
    // the down-window once more.
    let before = desired;
    let stabilized =
        state
            .history
            .stabilize(desired, cur, now, &policy.scale_up, &policy.scale_down);
    if !to_zero {
        desired = stabilized;
    }
    if desired != before {
        let (dir, window) = if before > desired {
            ("up", policy.scale_up.stabilization)
        } else {
            ("down", policy.scale_down.stabilization)
        };
        let pick = if dir == "up" { "lowest" } else { "highest" };
        reasons.push(Reason {
            step: Step::Stabilization,
            message: msg!(
                "{before} stabilized by the {pick} recommendation in the last {} ({dir}) -> {desired}",
                secs(window)
            ),
        });
    }

    // A step down is a commitment for the down cooldown, so while the
    // stabilized count is still falling fast (old highs leaving the window
    // after a burst), wait for it to settle and take one step instead of a
    // staircase held a cooldown at each stair.
    // It waits at most one down-window (a load that keeps falling fast is
    // followed anyway), and a fall counts as fast only beyond twice the
    // tolerance and never below 20 %, so a tolerance of 0 cannot hold a
    // slow decline forever.
    let mut settling = false;
    if desired < cur && !policy.scale_down.cooldown.is_zero() {
        let latest = state.history.latest_recommendation().unwrap_or(desired);
        let fast = (2.0 * policy.tolerance).max(0.2);
        let waited = state
            .settling_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if let Some(ahead) =
            state
                .history
                .down_recommendation_at(now + SETTLE_LOOKAHEAD, latest, &policy.scale_down)
            && f64::from(ahead) < f64::from(desired) * (1.0 - fast)
            && waited < policy.scale_down.stabilization
        {
            settling = true;
            reasons.push(Reason {
                step: Step::Stabilization,
                message: msg!(
                    "still falling: {} from now the down-window's highest recommendation will be {ahead}; \
                     keeping {cur} until it settles (one step down, not a staircase of cooldowns)",
                    secs(SETTLE_LOOKAHEAD)
                ),
            });
            desired = cur;
        }
    }
    state.settling_since = if settling {
        state.settling_since.or(Some(now))
    } else {
        None
    };

    // 5. Cooldowns and rate limits.
    let cooldown = match desired.cmp(&cur) {
        std::cmp::Ordering::Greater => policy.scale_up.cooldown,
        std::cmp::Ordering::Less => policy.scale_down.cooldown,
        std::cmp::Ordering::Equal => Duration::ZERO,
    };
    if let Some(since) = state.history.since_last_event(now)
        && since < cooldown
    {
        let dir = if desired > cur { "up" } else { "down" };
        reasons.push(Reason {
            step: Step::RateLimit,
            message: msg!(
                "last change {} ago, within the {dir} cooldown {}; keeping {cur} (would be {desired})",
                secs(since),
                secs(cooldown)
            ),
        });
        desired = cur;
    }
    if desired > cur {
        let limit = state.history.scale_up_limit(cur, now, &policy.scale_up);
        if desired > limit {
            let limits = describe_limits(&policy.scale_up, "+");
            reasons.push(Reason {
                step: Step::RateLimit,
                message: msg!("scale-up limited to {limits} -> {limit}"),
            });
            desired = limit;
        }
    } else if desired < cur {
        let limit = state.history.scale_down_limit(cur, now, &policy.scale_down);
        if desired < limit {
            let limits = describe_limits(&policy.scale_down, "-");
            reasons.push(Reason {
                step: Step::RateLimit,
                message: msg!("scale-down limited to {limits} -> {limit}"),
            });
            desired = limit;
        }
    }
    desired
}

/// A direction's rate limits in words, e.g. `+4 pods per 15s` or
/// `max(+100% per 15s, +4 pods per 15s)`.
fn describe_limits(b: &Behavior, sign: &'static str) -> Message {
    if b.select == SelectPolicy::Disabled {
        return Message::from("nothing (disabled)");
    }
    let limits = Limits {
        select: b.select,
        limits: b.limits.clone(),
        sign,
    };
    msg!("{limits}")
}

struct Limits {
    select: SelectPolicy,
    limits: Vec<RateLimit>,
    sign: &'static str,
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let several = self.limits.len() > 1;
        if several {
            f.write_str(if self.select == SelectPolicy::Min {
                "min("
            } else {
                "max("
            })?;
        }
        for (i, l) in self.limits.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let sign = self.sign;
            match l.amount {
                LimitAmount::Pods(n) => write!(f, "{sign}{n} pods")?,
                LimitAmount::Percent(p) => write!(f, "{sign}{p}%")?,
            }
            write!(f, " per {}", secs(l.period))?;
        }
        if several {
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
