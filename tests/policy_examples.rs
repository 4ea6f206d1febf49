//! The worked examples of docs/policy.md, run against the real `decide`.
//!
//! Each test is one example of the document: the same configuration, the same
//! samples, and the exact reason strings the document quotes. When the policy
//! changes what it decides or how it explains it, this test fails and the
//! document must change with it.

use std::time::{Duration, Instant, SystemTime};

use qscale::contract::{Capabilities, Replicas, Sample};
use qscale::policy::{
    BehaviorConfig, Combine, DeadLetterConfig, Decision, FallbackAction, FallbackConfig, Policy,
    PolicyConfig, PolicyState, QueueSample, RateLimitConfig, ThroughputConfig, decide, decide_many,
};

/// SQS with CloudWatch: every measurement, in-flight counted as backlog.
const SQS: Capabilities = Capabilities {
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

/// The settings the examples share (docs/policy.md, "In the examples"):
/// the `policy` table's defaults with the HPA's tolerance and down-window,
/// no down cooldown and no implicit learned throughput, `max_replicas = 100`
/// and no signal.
fn defaults() -> PolicyConfig {
    PolicyConfig {
        min_replicas: 1,
        max_replicas: 100,
        max_parallelism: None,
        messages_per_replica: None,
        throughput: None,
        learn_throughput: false,
        spend_age_budget: false,
        max_message_age: None,
        tolerance: 0.1,
        activation_backlog: 0,
        scale_to_zero_after: s(300),
        scale_up: BehaviorConfig::default(),
        scale_down: BehaviorConfig {
            stabilization: Some(s(300)),
            cooldown: Some(Duration::ZERO),
            ..BehaviorConfig::default()
        },
        fallback: FallbackConfig::default(),
        dead_letter: None,
        paused: false,
    }
}

fn policy(f: impl FnOnce(&mut PolicyConfig)) -> Policy {
    let mut c = defaults();
    f(&mut c);
    let mut p = qscale::validate::Problems::default();
    c.validate("policy", &mut p);
    assert!(p.is_empty(), "example policy invalid: {p}");
    Policy::new(&c, &SQS)
}

fn sample(visible: u64, in_flight: u64) -> Sample {
    Sample {
        visible: Some(visible),
        in_flight: Some(in_flight),
        delayed: Some(0),
        ..Sample::empty(SystemTime::UNIX_EPOCH)
    }
}

fn cur(n: u32) -> Replicas {
    Replicas::new(n, Some(n))
}

/// The reasons as `/status`, `qscale once` and the logs print them.
fn reasons(d: &Decision) -> Vec<String> {
    d.reasons.iter().map(ToString::to_string).collect()
}

/// Assert the decision's count and its exact reasons.
#[track_caller]
fn expect(d: &Decision, replicas: u32, want: &[&str]) {
    assert_eq!(reasons(d), want, "reasons");
    assert_eq!(d.replicas, replicas, "replicas; reasons {:?}", reasons(d));
}

// ---- Example 1: backlog ---------------------------------------------------------

#[test]
fn example_backlog() {
    let p = policy(|c| c.messages_per_replica = Some(20.0));
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(900, 40)), cur(40), Instant::now());
    assert_eq!(d.backlog, Some(940));
    expect(&d, 47, &["signal: backlog 940 / 20 per replica -> 47"]);
}

// ---- Example 2: tolerance -------------------------------------------------------

#[test]
fn example_tolerance() {
    let p = policy(|c| c.messages_per_replica = Some(20.0));
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(210, 0)), cur(10), Instant::now());
    expect(
        &d,
        10,
        &[
            "signal: backlog 210 / 20 per replica -> 11",
            "tolerance: 10.5 is within 10% of 10; keeping 10",
        ],
    );
}

// ---- Example 3: throughput with a configured service time --------------------

#[test]
fn example_throughput_configured() {
    let p = policy(|c| {
        c.throughput = Some(ThroughputConfig {
            seconds_per_message: Some(2.0),
            drain_within: Some(s(60)),
            target_utilization: 1.0,
        })
    });
    let mut st = PolicyState::new();
    let smp = Sample {
        arrival_rate: Some(10.0),
        ..sample(600, 0)
    };
    let d = decide(&p, &mut st, Some(&smp), cur(10), Instant::now());
    expect(
        &d,
        20,
        &[
            "signal: arrivals 10 msg/s x 2 s/msg + backlog 600 x 2 s / 1m -> 40",
            "rate limit: scale-up limited to max(+100% per 15s, +4 pods per 15s) -> 20",
        ],
    );
}

// ---- Example 4: throughput with a learned service time ------------------------

#[test]
fn example_throughput_learned() {
    let p = policy(|c| {
        c.throughput = Some(ThroughputConfig {
            seconds_per_message: None,
            drain_within: Some(s(60)),
            target_utilization: 0.8,
        })
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    // CloudWatch says 10 msg/s arrive; 4 workers are busy (4 in flight).
    let first = Sample {
        arrival_rate: Some(10.0),
        ..sample(96, 4)
    };
    let d = decide(&p, &mut st, Some(&first), cur(4), t0);
    expect(
        &d,
        4,
        &["signal: throughput unknown: no seconds per message (not yet learned)"],
    );
    // Ten seconds later the queue grew by 20: 2 msg/s more arrive than
    // depart, so 8 msg/s depart from 4 busy workers: 0.5 s per message.
    let second = Sample {
        arrival_rate: Some(10.0),
        ..sample(116, 4)
    };
    let d = decide(&p, &mut st, Some(&second), cur(4), t0 + s(10));
    assert_eq!(d.seconds_per_message, Some(0.5));
    expect(
        &d,
        8,
        &[
            "signal: arrivals 10 msg/s x 0.50 s/msg (learned) / utilization 0.80 + backlog 120 x 0.50 s / 1m -> 8",
        ],
    );
}

// ---- Example 5: estimated arrival rate -------------------------------------------

#[test]
fn example_arrival_rate_estimated() {
    // No arrival rate from the source (e.g. cloudwatch = false): estimated
    // from the growth of the queue plus what the workers complete.
    let p = policy(|c| {
        c.throughput = Some(ThroughputConfig {
            seconds_per_message: Some(0.5),
            drain_within: Some(s(60)),
            target_utilization: 1.0,
        })
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(96, 4)), cur(4), t0);
    expect(&d, 4, &["signal: throughput unknown: no arrival rate"]);
    let d = decide(&p, &mut st, Some(&sample(116, 4)), cur(4), t0 + s(10));
    assert_eq!(d.arrival_rate, Some(10.0));
    expect(
        &d,
        6,
        &["signal: estimated arrivals 10 msg/s x 0.50 s/msg + backlog 120 x 0.50 s / 1m -> 6"],
    );
}

// ---- Example 6: age, and several signals ---------------------------------------

#[test]
fn example_age_and_largest_proposal() {
    let p = policy(|c| {
        c.messages_per_replica = Some(20.0);
        c.max_message_age = Some(s(60));
    });
    let mut st = PolicyState::new();
    let smp = Sample {
        oldest_age: Some(s(180)),
        ..sample(100, 0)
    };
    let d = decide(&p, &mut st, Some(&smp), cur(4), Instant::now());
    expect(
        &d,
        8,
        &[
            "signal: backlog 100 / 20 per replica -> 5",
            "signal: oldest message 3m over objective 1m: 4 x 3 -> 12",
            "signal: largest proposal: age -> 12",
            "rate limit: scale-up limited to max(+100% per 15s, +4 pods per 15s) -> 8",
        ],
    );
}

#[test]
fn example_age_waits_for_starting_replicas() {
    let p = policy(|c| c.max_message_age = Some(s(60)));
    let mut st = PolicyState::new();
    let smp = Sample {
        oldest_age: Some(s(300)),
        ..sample(10, 0)
    };
    // 8 asked for, 5 ready: the 3 starting ones will drain the queue.
    let d = decide(
        &p,
        &mut st,
        Some(&smp),
        Replicas::new(8, Some(5)),
        Instant::now(),
    );
    expect(
        &d,
        8,
        &["signal: oldest message 5m over objective 1m; waiting for 3 starting replicas -> 8"],
    );
}

#[test]
fn example_nothing_visible_means_age_zero() {
    let p = policy(|c| {
        c.messages_per_replica = Some(20.0);
        c.max_message_age = Some(s(60));
    });
    let mut st = PolicyState::new();
    // CloudWatch has no age figure yet, but the queue is empty.
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(3), Instant::now());
    expect(
        &d,
        3,
        &[
            "signal: backlog 0 / 20 per replica -> 0",
            "signal: oldest message 0s within objective 1m",
            "signal: largest proposal: backlog -> 0",
            "stabilization: 0 stabilized by the highest recommendation in the last 5m (down) -> 3",
        ],
    );
}

// ---- Example 7: missing data -------------------------------------------------------

#[test]
fn example_missing_age_never_lowers() {
    let p = policy(|c| {
        c.messages_per_replica = Some(20.0);
        c.max_message_age = Some(s(60));
        c.scale_down.stabilization = Some(Duration::ZERO);
    });
    let mut st = PolicyState::new();
    let t0 = Instant::now();
    // Messages wait, the source has no age figure (or an older one than
    // max_staleness) and qscale has no history yet to estimate it from:
    // the backlog alone may not scale down.
    let d = decide(&p, &mut st, Some(&sample(40, 0)), cur(10), t0);
    expect(
        &d,
        10,
        &[
            "signal: backlog 40 / 20 per replica -> 2",
            "signal: oldest message age not measured and not yet estimated",
            "signal: largest proposal: backlog -> 2",
            "missing data: a signal has no data; not scaling down below 10",
        ],
    );
    assert_eq!(st.consecutive_failures(), 1);
    // Fifteen seconds later the age is estimated from the history: at
    // least 15 s, since the queue was never seen empty. A lower bound may
    // raise the count but never lower it; the backlog scales up.
    let d = decide(&p, &mut st, Some(&sample(400, 0)), cur(10), t0 + s(15));
    expect(
        &d,
        20,
        &[
            "signal: backlog 400 / 20 per replica -> 20",
            "signal: oldest message 15s or more (estimated) within objective 1m",
            "signal: largest proposal: backlog -> 20",
        ],
    );
    assert_eq!(st.consecutive_failures(), 0);
}

// ---- Example 8: activation and scale to zero ---------------------------------------

#[test]
fn example_activation() {
    let p = policy(|c| {
        c.min_replicas = 0;
        c.messages_per_replica = Some(20.0);
        c.activation_backlog = 5;
    });
    let t0 = Instant::now();
    let d = decide(&p, &mut PolicyState::new(), Some(&sample(5, 0)), cur(0), t0);
    expect(
        &d,
        0,
        &[
            "signal: backlog 5 / 20 per replica -> 1",
            "activation: backlog 5 <= activation_backlog 5; staying at 0",
        ],
    );
    let d = decide(&p, &mut PolicyState::new(), Some(&sample(6, 0)), cur(0), t0);
    expect(
        &d,
        1,
        &[
            "signal: backlog 6 / 20 per replica -> 1",
            "activation: backlog 6 > activation_backlog 5; waking -> 1",
        ],
    );
    let d = decide(
        &p,
        &mut PolicyState::new(),
        Some(&sample(200, 0)),
        cur(0),
        t0,
    );
    expect(
        &d,
        4,
        &[
            "signal: backlog 200 / 20 per replica -> 10",
            "activation: backlog 200 > activation_backlog 5; waking -> 10",
            "rate limit: scale-up limited to max(+100% per 15s, +4 pods per 15s) -> 4",
        ],
    );
}

#[test]
fn example_scale_to_zero() {
    let p = policy(|c| {
        c.min_replicas = 0;
        c.messages_per_replica = Some(20.0);
        c.scale_to_zero_after = s(120);
        c.scale_down.stabilization = Some(Duration::ZERO);
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    // Last message finished at t0.
    decide(&p, &mut st, Some(&sample(0, 1)), cur(1), t0);
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(1), t0 + s(60));
    expect(
        &d,
        1,
        &[
            "signal: backlog 0 / 20 per replica -> 0",
            "activation: idle for 1m of 2m; keeping 1 until then",
        ],
    );
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(1), t0 + s(120));
    expect(
        &d,
        0,
        &[
            "signal: backlog 0 / 20 per replica -> 0",
            "activation: idle for 2m; scaling to zero",
        ],
    );
}

#[test]
fn example_scale_to_zero_does_not_wait_for_the_down_window_again() {
    // With the default 5 min down-stabilization, going to zero still happens
    // after `scale_to_zero_after` of inactivity: that is its own window.
    let p = policy(|c| {
        c.min_replicas = 0;
        c.messages_per_replica = Some(20.0);
        c.scale_to_zero_after = s(120);
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let mut first_zero = None;
    for t in (0..=420).step_by(15) {
        let smp = if t == 0 { sample(0, 1) } else { sample(0, 0) };
        let d = decide(&p, &mut st, Some(&smp), cur(1), t0 + s(t));
        if d.replicas == 0 && first_zero.is_none() {
            first_zero = Some(t);
            expect(
                &d,
                0,
                &[
                    "signal: backlog 0 / 20 per replica -> 0",
                    "activation: idle for 2m; scaling to zero",
                ],
            );
        }
    }
    assert_eq!(first_zero, Some(120));
}

// ---- Example 9: stabilization and the start-up seed ------------------------------

#[test]
fn example_down_stabilization() {
    let p = policy(|c| {
        c.messages_per_replica = Some(20.0);
        c.scale_down.stabilization = Some(s(60));
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(200, 0)), cur(10), t0);
    expect(&d, 10, &["signal: backlog 200 / 20 per replica -> 10"]);
    let d = decide(&p, &mut st, Some(&sample(20, 0)), cur(10), t0 + s(30));
    expect(
        &d,
        10,
        &[
            "signal: backlog 20 / 20 per replica -> 1",
            "stabilization: 1 stabilized by the highest recommendation in the last 1m (down) -> 10",
        ],
    );
    let d = decide(&p, &mut st, Some(&sample(20, 0)), cur(10), t0 + s(60));
    expect(&d, 1, &["signal: backlog 20 / 20 per replica -> 1"]);
}

#[test]
fn example_start_up_seed() {
    // qscale (re)starts and finds 10 replicas on a nearly empty queue.
    let p = policy(|c| c.messages_per_replica = Some(20.0));
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(20, 0)), cur(10), t0);
    expect(
        &d,
        10,
        &[
            "signal: backlog 20 / 20 per replica -> 1",
            "stabilization: 1 stabilized by the highest recommendation in the last 5m (down) -> 10",
        ],
    );
    // Polls every 15 s keep recommending 1; one full window after start-up
    // the seed has expired.
    let mut at = None;
    for t in (15..=300).step_by(15) {
        let d = decide(&p, &mut st, Some(&sample(20, 0)), cur(10), t0 + s(t));
        if d.replicas < 10 {
            at = Some(t);
            expect(&d, 1, &["signal: backlog 20 / 20 per replica -> 1"]);
            break;
        }
    }
    assert_eq!(at, Some(300));
}

#[test]
fn example_up_stabilization() {
    let p = policy(|c| {
        c.messages_per_replica = Some(20.0);
        c.scale_up.stabilization = Some(s(60));
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    decide(&p, &mut st, Some(&sample(40, 0)), cur(2), t0);
    let d = decide(&p, &mut st, Some(&sample(160, 0)), cur(2), t0 + s(30));
    expect(
        &d,
        2,
        &[
            "signal: backlog 160 / 20 per replica -> 8",
            "stabilization: 8 stabilized by the lowest recommendation in the last 1m (up) -> 2",
        ],
    );
    let d = decide(&p, &mut st, Some(&sample(180, 0)), cur(2), t0 + s(60));
    expect(
        &d,
        6,
        &[
            "signal: backlog 180 / 20 per replica -> 9",
            "stabilization: 9 stabilized by the lowest recommendation in the last 1m (up) -> 8",
            "rate limit: scale-up limited to max(+100% per 15s, +4 pods per 15s) -> 6",
        ],
    );
}

// ---- Example 10: rate limits ---------------------------------------------------------

#[test]
fn example_scale_down_rate_limit() {
    let p = policy(|c| {
        c.messages_per_replica = Some(20.0);
        c.scale_down.stabilization = Some(Duration::ZERO);
        c.scale_down.policies = Some(vec![RateLimitConfig {
            pods: Some(2),
            percent: None,
            period: s(60),
        }]);
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(10), t0);
    expect(
        &d,
        8,
        &[
            "signal: backlog 0 / 20 per replica -> 0",
            "rate limit: scale-down limited to -2 pods per 1m -> 8",
        ],
    );
    st.record_scale(10, 8, t0);
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(8), t0 + s(30));
    expect(
        &d,
        8,
        &[
            "signal: backlog 0 / 20 per replica -> 0",
            "rate limit: scale-down limited to -2 pods per 1m -> 8",
        ],
    );
}

#[test]
fn example_default_scale_up_doubles_or_adds_four() {
    let p = policy(|c| c.messages_per_replica = Some(1.0));
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let mut c = 1;
    let mut seen = vec![];
    for i in 0..5 {
        let now = t0 + s(15 * i);
        let d = decide(&p, &mut st, Some(&sample(2000, 0)), cur(c), now);
        st.record_scale(c, d.replicas, now);
        c = d.replicas;
        seen.push(c);
    }
    assert_eq!(seen, vec![5, 10, 20, 40, 80]);
}

// ---- Example 11: bounds ----------------------------------------------------------------

#[test]
fn example_bounds() {
    let p = policy(|c| {
        c.min_replicas = 2;
        c.max_replicas = 6;
        c.messages_per_replica = Some(20.0);
    });
    let d = decide(
        &p,
        &mut PolicyState::new(),
        Some(&sample(2000, 0)),
        cur(3),
        Instant::now(),
    );
    expect(
        &d,
        6,
        &[
            "signal: backlog 2000 / 20 per replica -> 100",
            "rate limit: scale-up limited to max(+100% per 15s, +4 pods per 15s) -> 7",
            "bounds: 7 clamped to max_replicas 6 -> 6",
        ],
    );
}

/// Section 6's FIFO case: 8 message groups, so `max_parallelism = 8`.
#[test]
fn example_max_parallelism_caps_a_fifo_pool() {
    let p = policy(|c| {
        c.messages_per_replica = Some(10.0);
        c.max_parallelism = Some(8);
    });
    let d = decide(
        &p,
        &mut PolicyState::new(),
        Some(&sample(120, 6)),
        cur(6),
        Instant::now(),
    );
    expect(
        &d,
        8,
        &[
            "signal: backlog 126 / 10 per replica -> 13",
            "rate limit: scale-up limited to max(+100% per 15s, +4 pods per 15s) -> 12",
            "bounds: 12 clamped to max_parallelism 8 (no more workers can be busy at once) -> 8",
        ],
    );
}

// ---- Example 12: fallback ---------------------------------------------------------------

#[test]
fn example_fallback_after_failed_samples() {
    let p = policy(|c| {
        c.messages_per_replica = Some(20.0);
        c.fallback = FallbackConfig {
            after_failures: 3,
            action: FallbackAction::CurrentIfHigher,
            replicas: Some(9),
        };
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    for t in 0..2 {
        let d = decide(&p, &mut st, None, cur(7), t0 + s(15 * t));
        expect(&d, 7, &["missing data: no sample; holding at 7"]);
    }
    let d = decide(&p, &mut st, None, cur(7), t0 + s(30));
    assert!(d.fallback_active);
    expect(
        &d,
        9,
        &[
            "missing data: no sample; holding at 7",
            "fallback: 3 failed or stale samples in a row; current_if_higher 9 -> 9",
        ],
    );
}

#[test]
fn example_fallback_actions() {
    // (action, replicas, current) -> after 3 failed samples
    let table = [
        (FallbackAction::Hold, None, 7, 7, "hold -> 7"),
        (FallbackAction::Replicas, Some(5), 7, 5, "replicas 5 -> 5"),
        (
            FallbackAction::CurrentIfHigher,
            Some(5),
            7,
            7,
            "current_if_higher 5 -> 7",
        ),
    ];
    for (action, n, c, want, text) in table {
        let p = policy(|cfg| {
            cfg.messages_per_replica = Some(20.0);
            cfg.fallback = FallbackConfig {
                after_failures: 3,
                action,
                replicas: n,
            };
        });
        let t0 = Instant::now();
        let mut st = PolicyState::new();
        let mut d = None;
        for t in 0..3 {
            d = Some(decide(&p, &mut st, None, cur(c), t0 + s(15 * t)));
        }
        let d = d.unwrap();
        expect(
            &d,
            want,
            &[
                &format!("missing data: no sample; holding at {c}"),
                &format!("fallback: 3 failed or stale samples in a row; {text}"),
            ],
        );
    }
}

// ---- Example 13: pause ---------------------------------------------------------------

#[test]
fn example_pause() {
    let p = policy(|c| {
        c.messages_per_replica = Some(20.0);
        c.paused = true;
    });
    let d = decide(
        &p,
        &mut PolicyState::new(),
        Some(&sample(400, 0)),
        cur(3),
        Instant::now(),
    );
    assert_eq!(d.unpaused_replicas, 7);
    expect(
        &d,
        3,
        &[
            "signal: backlog 400 / 20 per replica -> 20",
            "rate limit: scale-up limited to max(+100% per 15s, +4 pods per 15s) -> 7",
            "pause: paused; would scale to 7, keeping 3",
        ],
    );
}

// ---- Example 14: the age signal alone ---------------------------------------------------

#[test]
fn example_age_alone_drifts_to_min_replicas() {
    // The age signal says "enough" (0) while the age is within its objective,
    // whatever the backlog: alone, it lets the count fall to min_replicas.
    let p = policy(|c| c.max_message_age = Some(s(60)));
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let smp = Sample {
        oldest_age: Some(s(20)),
        ..sample(500, 10)
    };
    let d = decide(&p, &mut st, Some(&smp), cur(10), t0);
    expect(
        &d,
        10,
        &[
            "signal: oldest message 20s within objective 1m",
            "stabilization: 0 stabilized by the highest recommendation in the last 5m (down) -> 10",
        ],
    );
    let d = decide(&p, &mut st, Some(&smp), cur(10), t0 + s(300));
    expect(
        &d,
        1,
        &[
            "signal: oldest message 20s within objective 1m",
            "bounds: 0 clamped to min_replicas 1 -> 1",
        ],
    );
}

// ---- Example 15: fallback `replicas` on stale samples -----------------------------------

#[test]
fn example_fallback_replicas_is_the_same_for_failed_and_stale_samples() {
    let p = policy(|c| {
        c.messages_per_replica = Some(20.0);
        c.max_message_age = Some(s(60));
        c.fallback = FallbackConfig {
            after_failures: 2,
            action: FallbackAction::Replicas,
            replicas: Some(3),
        };
    });
    let t0 = Instant::now();
    // Failed samples: exactly `replicas`, even below the current count.
    let mut st = PolicyState::new();
    decide(&p, &mut st, None, cur(10), t0);
    let d = decide(&p, &mut st, None, cur(10), t0 + s(15));
    expect(
        &d,
        3,
        &[
            "missing data: no sample; holding at 10",
            "fallback: 2 failed or stale samples in a row; replicas 3 -> 3",
        ],
    );
    // Stale samples (20 visible, but the in-flight count that the backlog
    // includes is missing): the same `replicas`.
    let no_in_flight = |visible| Sample {
        in_flight: None,
        ..sample(visible, 0)
    };
    let mut st = PolicyState::new();
    decide(&p, &mut st, Some(&no_in_flight(20)), cur(10), t0);
    let d = decide(&p, &mut st, Some(&no_in_flight(20)), cur(10), t0 + s(15));
    expect(
        &d,
        3,
        &[
            "signal: backlog not measured",
            "signal: oldest message 15s or more (estimated) within objective 1m",
            "signal: largest proposal: age -> 0",
            "missing data: a signal has no data; not scaling down below 10",
            "fallback: 2 failed or stale samples in a row; replicas 3 -> 3",
        ],
    );
    // ...unless the signals that still have data ask for more: the
    // measured age is 3 minutes over a 1-minute objective.
    let old = |visible| Sample {
        oldest_age: Some(s(180)),
        ..no_in_flight(visible)
    };
    let mut st = PolicyState::new();
    decide(&p, &mut st, Some(&old(200)), cur(10), t0);
    let d = decide(&p, &mut st, Some(&old(200)), cur(10), t0 + s(15));
    assert_eq!(d.replicas, 30);
    assert_eq!(
        d.reasons.last().map(|r| r.to_string()).as_deref(),
        Some(
            "fallback: 2 failed or stale samples in a row; replicas 3 (measured signals ask for 30) -> 30"
        )
    );
}

// ---- Example 15: dead letters ---------------------------------------------------

#[test]
fn example_dead_letters_hold_scale_up() {
    let p = policy(|c| {
        c.messages_per_replica = Some(10.0);
        c.max_message_age = Some(s(120));
        c.dead_letter = Some(DeadLetterConfig { max_fraction: 0.1 });
    });
    let mut st = PolicyState::new();
    let t0 = Instant::now();
    let poll = |visible, in_flight, age, dead_letter| Sample {
        oldest_age: Some(s(age)),
        arrival_rate: Some(6.0),
        dead_letter: Some(dead_letter),
        ..sample(visible, in_flight)
    };
    let d = decide(&p, &mut st, Some(&poll(50, 0, 30, 40)), cur(5), t0);
    expect(
        &d,
        5,
        &[
            "signal: backlog 50 / 10 per replica -> 5",
            "signal: oldest message 30s within objective 2m",
            "signal: largest proposal: backlog -> 5",
        ],
    );
    // 30 s later: 63 more messages in the dead-letter queue (2.1 msg/s)
    // while 6 msg/s arrive, and the failing ones pile up in the queue.
    let d = decide(
        &p,
        &mut st,
        Some(&poll(120, 5, 180, 103)),
        cur(5),
        t0 + s(30),
    );
    assert_eq!(d.dead_letter_rate, Some(2.1));
    expect(
        &d,
        5,
        &[
            "signal: backlog 125 / 10 per replica -> 13",
            "signal: oldest message 3m over objective 2m: 5 x 1.50 -> 8",
            "signal: largest proposal: backlog -> 13",
            "dead letters: dead-lettering 2.10 msg/s = 35% of arrivals 6 msg/s > max_fraction 10%: \
             failures, not capacity; not scaling up, keeping 5 (would be 13)",
        ],
    );
    // The failures stop (the fix is deployed); two minutes on, nothing new
    // has reached the dead-letter queue and the backlog is capacity again.
    let d = decide(
        &p,
        &mut st,
        Some(&poll(120, 5, 180, 103)),
        cur(5),
        t0 + s(150),
    );
    assert_eq!(d.dead_letter_rate, Some(0.0));
    expect(
        &d,
        10,
        &[
            "signal: backlog 125 / 10 per replica -> 13",
            "signal: oldest message 3m over objective 2m: 5 x 1.50 -> 8",
            "signal: largest proposal: backlog -> 13",
            "rate limit: scale-up limited to max(+100% per 15s, +4 pods per 15s) -> 10",
        ],
    );
}

// ---- Example 16: several queues --------------------------------------------------

#[test]
fn example_several_queues() {
    // The pool's policy (steps 2 to 8) and each queue's own signals.
    let pool = policy(|c| c.messages_per_replica = Some(10.0));
    let critical = policy(|c| {
        c.messages_per_replica = Some(5.0);
        c.max_message_age = Some(s(30));
    });
    let bulk = policy(|c| {
        c.messages_per_replica = Some(50.0);
        c.max_message_age = Some(s(600));
    });
    let poll = |visible, in_flight, age| Sample {
        oldest_age: Some(s(age)),
        ..sample(visible, in_flight)
    };
    let run = |st: &mut PolicyState,
               rows: Vec<(&'static str, Option<&Sample>)>,
               combine: Combine,
               current: u32,
               at: u64| {
        let inputs: Vec<QueueSample> = rows
            .iter()
            .map(|(name, sample)| QueueSample {
                name,
                policy: if *name == "critical" {
                    &critical
                } else {
                    &bulk
                },
                sample: *sample,
            })
            .collect();
        decide_many(
            &pool,
            st,
            &inputs,
            combine,
            cur(current),
            Instant::now() + s(at),
        )
    };
    let (c1, b1) = (poll(10, 4, 45), poll(298, 2, 240));
    let mut st = PolicyState::new();
    let d = run(
        &mut st,
        vec![("critical", Some(&c1)), ("bulk", Some(&b1))],
        Combine::Sum,
        6,
        0,
    );
    expect(
        &d,
        12,
        &[
            "signal: critical: backlog 14 / 5 per replica -> 3",
            "signal: critical: oldest message 45s over objective 30s: \
             4 (of 6 replicas, split by messages in flight) x 1.50 -> 6",
            "signal: critical: largest proposal: age -> 6",
            "signal: bulk: backlog 300 / 50 per replica -> 6",
            "signal: bulk: oldest message 4m within objective 10m",
            "signal: bulk: largest proposal: backlog -> 6",
            "combine: sum of 2 queues: critical 6 + bulk 6 -> 12",
        ],
    );
    assert_eq!(d.backlog, Some(314));
    assert_eq!(d.oldest_age, Some(s(240)), "the oldest among the queues");
    // 15 s later the critical queue is drained and the bulk queue cannot be
    // read: it adds nothing, and the pool does not go below current.
    let c2 = poll(0, 3, 0);
    let d = run(
        &mut st,
        vec![("critical", Some(&c2)), ("bulk", None)],
        Combine::Sum,
        12,
        15,
    );
    expect(
        &d,
        12,
        &[
            "signal: critical: backlog 3 / 5 per replica -> 1",
            "signal: critical: oldest message 0s within objective 30s",
            "signal: critical: largest proposal: backlog -> 1",
            "missing data: bulk: no sample; not scaling down below 12",
            "combine: sum of 2 queues: critical 0.60 + bulk (no sample) -> 1",
            "missing data: a signal has no data; not scaling down below 12",
        ],
    );
    // The first poll with `combine = "max"`: workers that take from one
    // queue at a time need only the larger share.
    let d = run(
        &mut PolicyState::new(),
        vec![("critical", Some(&c1)), ("bulk", Some(&b1))],
        Combine::Max,
        6,
        0,
    );
    assert_eq!(d.replicas, 6);
    assert_eq!(
        reasons(&d).last().map(String::as_str),
        Some("combine: largest of 2 queues: critical 6, bulk 6 -> 6")
    );
}
