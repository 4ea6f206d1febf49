//! Cost of one policy decision for a scaler with every signal on.
//!
//! Issue requirement: a policy decision costs under 10 µs for a scaler with
//! all signals on. The scaler here has backlog (in-flight counted), throughput
//! with a *learned* service time and a measured arrival rate, the age signal,
//! non-default scale-up and scale-down policies and a fallback. Its
//! `PolicyState` is warmed up by five minutes of 1 s polls of a small queue
//! model, so the down-stabilization window holds 300 recommendations and the
//! rate-limit periods hold real scale events.
//!
//! Each measured iteration is exactly one `decide` call on a fresh copy of the
//! warmed state (`iter_batched_ref`: cloning the state is setup, not timed),
//! so every iteration sees the same 300-entry history.
//!
//! - `decide/all_signals/burst`: the load has just tripled; the decision scales
//!   up and is shaped by stabilization and the rate limits (the longest path).
//! - `decide/all_signals/steady`: constant load for ten minutes; the decision
//!   keeps the current count.
//!
//! Run: `cargo bench --bench policy -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use qscale::contract::{Capabilities, Replicas, Sample};
use qscale::policy::{
    BehaviorConfig, FallbackAction, FallbackConfig, Policy, PolicyConfig, PolicyState,
    RateLimitConfig, SelectPolicy, ThroughputConfig, decide,
};

/// What SQS with CloudWatch measures: everything, in-flight counted.
const CAPS: Capabilities = Capabilities {
    oldest_age: true,
    arrival_rate: true,
    in_flight: true,
    delayed: true,
    count_in_flight: true,
    count_delayed: false,
};

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn all_signals() -> Policy {
    let c = PolicyConfig {
        min_replicas: 2,
        max_replicas: 200,
        max_parallelism: None,
        messages_per_replica: Some(20.0),
        throughput: Some(ThroughputConfig {
            // Learned from the observed drain.
            seconds_per_message: None,
            drain_within: Some(s(120)),
            target_utilization: 0.8,
        }),
        learn_throughput: true,
        spend_age_budget: true,
        max_message_age: Some(s(120)),
        tolerance: 0.1,
        activation_backlog: 0,
        scale_to_zero_after: s(300),
        scale_up: BehaviorConfig {
            stabilization: Some(s(30)),
            select: Some(SelectPolicy::Max),
            policies: Some(vec![
                RateLimitConfig {
                    pods: Some(8),
                    percent: None,
                    period: s(30),
                },
                RateLimitConfig {
                    pods: None,
                    percent: Some(100),
                    period: s(60),
                },
            ]),
            cooldown: None,
        },
        scale_down: BehaviorConfig {
            stabilization: Some(s(300)),
            select: Some(SelectPolicy::Min),
            policies: Some(vec![
                RateLimitConfig {
                    pods: None,
                    percent: Some(20),
                    period: s(60),
                },
                RateLimitConfig {
                    pods: Some(5),
                    percent: None,
                    period: s(60),
                },
            ]),
            cooldown: Some(s(60)),
        },
        fallback: FallbackConfig {
            after_failures: 4,
            action: FallbackAction::CurrentIfHigher,
            replicas: Some(5),
        },
        dead_letter: None,
        paused: false,
    };
    let mut problems = qscale::validate::Problems::default();
    c.validate("policy", &mut problems);
    assert!(problems.is_empty(), "bench policy invalid: {problems}");
    Policy::new(&c, &CAPS)
}

/// A tiny queue: `workers` each take `SERVICE` seconds per message.
struct Queue {
    depth: f64,
    oldest: f64,
}

const SERVICE: f64 = 0.5;

impl Queue {
    /// Advance one second with `lambda` arrivals per second; return the sample.
    fn tick(&mut self, lambda: f64, workers: u32) -> Sample {
        let capacity = f64::from(workers) / SERVICE;
        let served = (self.depth + lambda).min(capacity);
        self.depth = (self.depth + lambda - served).max(0.0);
        let in_flight = self.depth.min(f64::from(workers)).round() as u64;
        let visible = (self.depth.round() as u64).saturating_sub(in_flight);
        self.oldest = if visible == 0 { 0.0 } else { self.oldest + 1.0 };
        Sample {
            visible: Some(visible),
            in_flight: Some(in_flight),
            delayed: Some(0),
            oldest_age: Some(Duration::from_secs_f64(self.oldest)),
            arrival_rate: Some(lambda),
            consumers: Some(workers),
            ..Sample::empty(SystemTime::UNIX_EPOCH)
        }
    }
}

/// Run the daemon's loop for `secs` polls at 1 s; `load(t)` is the arrival
/// rate. Returns the warmed state, the next sample, the current count and
/// the time of the next poll.
fn warm(
    policy: &Policy,
    secs: u64,
    load: impl Fn(u64) -> f64,
) -> (PolicyState, Sample, u32, Instant) {
    let t0 = Instant::now();
    let mut state = PolicyState::new();
    let mut queue = Queue {
        depth: 0.0,
        oldest: 0.0,
    };
    let mut current = 10u32;
    for t in 0..secs {
        let now = t0 + s(t);
        let sample = queue.tick(load(t), current);
        let d = decide(
            policy,
            &mut state,
            Some(&sample),
            Replicas::new(current, Some(current)),
            now,
        );
        if d.replicas != current {
            state.record_scale(current, d.replicas, now);
            current = d.replicas;
        }
    }
    let next = queue.tick(load(secs), current);
    (state, next, current, t0 + s(secs))
}

fn bench(c: &mut Criterion) {
    let policy = all_signals();
    let cases = [
        // 20 msg/s for four minutes, then 60 msg/s: a burst in progress.
        (
            "burst",
            warm(&policy, 300, |t| if t < 240 { 20.0 } else { 60.0 }),
        ),
        // 30 msg/s for ten minutes.
        ("steady", warm(&policy, 600, |_| 30.0)),
    ];
    let mut group = c.benchmark_group("decide/all_signals");
    for (name, (state, sample, current, now)) in cases {
        let replicas = Replicas::new(current, Some(current));
        // Show once what the measured call decides, so the figure can be
        // read against the path it exercises.
        let d = decide(&policy, &mut state.clone(), Some(&sample), replicas, now);
        eprintln!("{name}: current {current} -> {}", d.replicas);
        for r in &d.reasons {
            eprintln!("  {r}");
        }
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || state.clone(),
                |st| {
                    decide(
                        black_box(&policy),
                        st,
                        Some(black_box(&sample)),
                        black_box(replicas),
                        black_box(now),
                    )
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
