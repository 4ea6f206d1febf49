//! Table tests for each policy step and property tests over random inputs.

use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::contract::{Capabilities, Sample};

const CAPS: Capabilities = Capabilities {
    oldest_age: true,
    arrival_rate: true,
    in_flight: true,
    delayed: true,
    count_in_flight: true,
    count_delayed: false,
};

fn base_config() -> PolicyConfig {
    PolicyConfig {
        min_replicas: 1,
        max_replicas: 100,
        max_parallelism: None,
        messages_per_replica: Some(20.0),
        throughput: None,
        learn_throughput: false,
        spend_age_budget: false,
        max_message_age: None,
        tolerance: 0.1,
        activation_backlog: 0,
        scale_to_zero_after: Duration::from_secs(300),
        scale_up: BehaviorConfig::default(),
        scale_down: BehaviorConfig::default(),
        fallback: FallbackConfig::default(),
        dead_letter: None,
        paused: false,
    }
}

fn policy(f: impl FnOnce(&mut PolicyConfig)) -> Policy {
    let mut c = base_config();
    f(&mut c);
    let mut p = crate::validate::Problems::default();
    c.validate("policy", &mut p);
    assert!(p.is_empty(), "test policy invalid: {p}");
    Policy::new(&c, &CAPS)
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

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn steps(d: &Decision) -> Vec<Step> {
    d.reasons.iter().map(|r| r.step).collect()
}

// ---- 1. signals -----------------------------------------------------------

#[test]
fn backlog_signal_divides_backlog_by_messages_per_replica() {
    let p = policy(|_| {});
    let t0 = Instant::now();
    // (visible, in_flight, current, expected)
    let table = [
        (0, 0, 1, 1),
        (100, 0, 5, 5),
        (100, 40, 5, 7),
        (940, 0, 47, 47),
    ];
    for (v, f, c, want) in table {
        let mut st = PolicyState::new();
        let d = decide(&p, &mut st, Some(&sample(v, f)), cur(c), t0);
        assert_eq!(
            d.replicas, want,
            "visible {v} in_flight {f} current {c}: {:?}",
            d.reasons
        );
    }
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(940, 0)), cur(47), t0);
    assert_eq!(
        d.reasons[0].to_string(),
        "signal: backlog 940 / 20 per replica -> 47"
    );
}

#[test]
fn in_flight_and_delayed_count_only_when_configured() {
    let caps = Capabilities {
        count_in_flight: false,
        count_delayed: true,
        ..CAPS
    };
    let p = Policy::new(&base_config(), &caps);
    let mut st = PolicyState::new();
    let smp = Sample {
        delayed: Some(40),
        ..sample(40, 1000)
    };
    let d = decide(&p, &mut st, Some(&smp), cur(4), Instant::now());
    assert_eq!(d.backlog, Some(80));
    assert_eq!(d.replicas, 4);
}

#[test]
fn throughput_signal_applies_littles_law_with_a_configured_service_time() {
    // λ = 10 msg/s, s = 2 s -> 20 workers to keep up; backlog 600 x 2 s / 60 s -> +20.
    let p = policy(|c| {
        c.messages_per_replica = None;
        c.throughput = Some(ThroughputConfig {
            seconds_per_message: Some(2.0),
            drain_within: Some(s(60)),
            target_utilization: 1.0,
        });
    });
    let mut st = PolicyState::new();
    let smp = Sample {
        arrival_rate: Some(10.0),
        ..sample(600, 0)
    };
    let d = decide(&p, &mut st, Some(&smp), cur(10), Instant::now());
    assert_eq!(d.proposals[0].replicas, Some(40));
    // Scale-up is limited to max(+100 %, +4) per 15 s from 10.
    assert_eq!(d.replicas, 20);
    assert_eq!(steps(&d), vec![Step::Signal, Step::RateLimit]);
}

#[test]
fn throughput_without_learned_service_time_holds_instead_of_scaling_down() {
    let p = policy(|c| {
        c.messages_per_replica = None;
        c.throughput = Some(ThroughputConfig {
            seconds_per_message: None,
            drain_within: None,
            target_utilization: 1.0,
        });
    });
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(8), Instant::now());
    assert_eq!(d.replicas, 8);
    assert_eq!(
        st.consecutive_failures(),
        0,
        "not knowing yet is not a failure"
    );
}

#[test]
fn age_signal_scales_by_the_ratio_of_age_to_objective() {
    let p = policy(|c| {
        c.messages_per_replica = None;
        c.max_message_age = Some(s(60));
        c.scale_up.policies = Some(vec![RateLimitConfig {
            pods: None,
            percent: Some(1000),
            period: s(15),
        }]);
    });
    // (age, current, ready, expected)
    let table = [
        (30, 4, Some(4), 4), // within objective: no proposal above current... held by down-stabilization
        (120, 4, Some(4), 8), // 4 x 2
        (61, 4, Some(4), 5), // 4 x 1.02 -> 5, never less than current + 1
        (120, 0, Some(0), 1), // from zero: current + 1
        (300, 4, Some(2), 4), // replicas still starting: wait for them
    ];
    for (age, c, ready, want) in table {
        let mut st = PolicyState::new();
        let smp = Sample {
            oldest_age: Some(s(age)),
            ..sample(10, 0)
        };
        let d = decide(
            &p,
            &mut st,
            Some(&smp),
            Replicas::new(c, ready),
            Instant::now(),
        );
        assert_eq!(
            d.replicas,
            want.max(1),
            "age {age} current {c} ready {ready:?}: {:?}",
            d.reasons
        );
    }
}

#[test]
fn largest_signal_wins() {
    let p = policy(|c| {
        c.max_message_age = Some(s(60));
    });
    let mut st = PolicyState::new();
    let smp = Sample {
        oldest_age: Some(s(180)),
        ..sample(100, 0)
    };
    // backlog: 5; age: 4 x 3 = 12 -> age wins; rate limit allows up to 8.
    let d = decide(&p, &mut st, Some(&smp), cur(4), Instant::now());
    assert_eq!(
        d.proposals.iter().map(|p| p.replicas).collect::<Vec<_>>(),
        vec![Some(5), Some(12)]
    );
    assert!(
        d.reasons
            .iter()
            .any(|r| r.message == "largest proposal: age -> 12"),
        "{:?}",
        d.reasons
    );
    assert_eq!(d.replicas, 8);
}

// ---- 2. tolerance -----------------------------------------------------------

#[test]
fn proposals_within_tolerance_keep_the_current_count() {
    let t0 = Instant::now();
    // (backlog, current, tolerance, expected)
    let table = [
        (210, 10, 0.1, 10), // 10.5 is within 10 % of 10
        (230, 10, 0.1, 12), // 11.5 is not
        (210, 10, 0.0, 11), // tolerance 0 reacts to any change
        (190, 10, 0.1, 10), // 9.5 within 10 %, no scale-down either
    ];
    for (b, c, tol, want) in table {
        let p = policy(|cfg| {
            cfg.tolerance = tol;
            cfg.scale_down.stabilization = Some(Duration::ZERO);
        });
        let mut st = PolicyState::new();
        let d = decide(&p, &mut st, Some(&sample(b, 0)), cur(c), t0);
        assert_eq!(
            d.replicas, want,
            "backlog {b} current {c} tolerance {tol}: {:?}",
            d.reasons
        );
    }
}

// ---- 3. activation and scale to zero -----------------------------------------

#[test]
fn wakes_from_zero_only_above_the_activation_backlog() {
    let p = policy(|c| {
        c.min_replicas = 0;
        c.activation_backlog = 5;
    });
    let t0 = Instant::now();
    for (b, want) in [(0, 0), (5, 0), (6, 1), (100, 4)] {
        let mut st = PolicyState::new();
        let d = decide(&p, &mut st, Some(&sample(b, 0)), cur(0), t0);
        assert_eq!(d.replicas, want, "backlog {b}: {:?}", d.reasons);
    }
}

#[test]
fn scales_to_zero_only_after_the_queue_was_idle_long_enough() {
    let p = policy(|c| {
        c.min_replicas = 0;
        c.scale_to_zero_after = s(120);
        c.scale_down.stabilization = Some(Duration::ZERO);
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    // Busy at t0, then empty.
    decide(&p, &mut st, Some(&sample(10, 5)), cur(1), t0);
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(1), t0 + s(60));
    assert_eq!(d.replicas, 1, "{:?}", d.reasons);
    assert!(d.reasons.iter().any(|r| r.step == Step::Activation));
    // In-flight work counts as activity: the idle clock restarts.
    let d = decide(&p, &mut st, Some(&sample(0, 1)), cur(1), t0 + s(110));
    assert_eq!(d.replicas, 1);
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(1), t0 + s(200));
    assert_eq!(d.replicas, 1);
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(1), t0 + s(231));
    assert_eq!(d.replicas, 0, "{:?}", d.reasons);
}

#[test]
fn unknown_activity_never_scales_to_zero() {
    let p = policy(|c| {
        c.min_replicas = 0;
        c.messages_per_replica = None;
        c.max_message_age = Some(s(60));
        c.scale_to_zero_after = s(60);
        c.scale_down.stabilization = Some(Duration::ZERO);
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    // Depth unmeasured, but a message 10 s old waits.
    let smp = Sample {
        oldest_age: Some(s(10)),
        ..Sample::empty(SystemTime::UNIX_EPOCH)
    };
    for t in [0, 120, 600] {
        let d = decide(&p, &mut st, Some(&smp), cur(1), t0 + s(t));
        assert_eq!(d.replicas, 1, "t={t}: {:?}", d.reasons);
    }
}

// ---- 4. stabilization ---------------------------------------------------------

#[test]
fn scale_down_waits_for_the_stabilization_window() {
    let p = policy(|c| c.scale_down.stabilization = Some(s(60)));
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    assert_eq!(
        decide(&p, &mut st, Some(&sample(200, 0)), cur(10), t0).replicas,
        10
    );
    for t in [10, 30, 59] {
        let d = decide(&p, &mut st, Some(&sample(20, 0)), cur(10), t0 + s(t));
        assert_eq!(d.replicas, 10, "t={t}");
        assert!(steps(&d).contains(&Step::Stabilization));
    }
    // The 10 recorded at t0 has left the window at t=60.
    assert_eq!(
        decide(&p, &mut st, Some(&sample(20, 0)), cur(10), t0 + s(60)).replicas,
        1
    );
}

#[test]
fn after_an_outage_the_first_samples_scale_up_but_down_only_after_a_full_window() {
    let p = policy(|c| c.scale_down.stabilization = Some(s(60)));
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    assert_eq!(
        decide(&p, &mut st, Some(&sample(200, 0)), cur(10), t0).replicas,
        10
    );
    // Blind for longer than the window: the 10 recorded at t0 has left it.
    for t in 1..=100 {
        decide(&p, &mut st, None, cur(10), t0 + s(t));
    }
    // The queue comes back empty (recreated): one sample is not evidence.
    for t in [101, 130, 159] {
        let d = decide(&p, &mut st, Some(&sample(20, 0)), cur(10), t0 + s(t));
        assert_eq!(d.replicas, 10, "t={t}: {:?}", d.reasons);
        assert!(steps(&d).contains(&Step::Stabilization), "t={t}");
    }
    assert_eq!(
        decide(&p, &mut st, Some(&sample(20, 0)), cur(10), t0 + s(160)).replicas,
        1,
        "a full window of good samples after the last blind poll"
    );

    // A backlog that grew while qscale was blind is answered at once.
    let mut st = PolicyState::new();
    decide(&p, &mut st, Some(&sample(200, 0)), cur(10), t0);
    for t in 1..=100 {
        decide(&p, &mut st, None, cur(10), t0 + s(t));
    }
    let d = decide(&p, &mut st, Some(&sample(400, 0)), cur(10), t0 + s(101));
    assert!(d.replicas > 10, "{:?}", d.reasons);
}

#[test]
fn a_poll_that_cannot_read_the_target_holds_the_last_count_in_the_down_window() {
    let p = policy(|c| c.scale_down.stabilization = Some(s(60)));
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    decide(&p, &mut st, Some(&sample(200, 0)), cur(10), t0);
    for t in 1..=100 {
        st.record_blind_poll(t0 + s(t));
    }
    let d = decide(&p, &mut st, Some(&sample(20, 0)), cur(10), t0 + s(101));
    assert_eq!(d.replicas, 10, "{:?}", d.reasons);
    assert_eq!(
        decide(&p, &mut st, Some(&sample(20, 0)), cur(10), t0 + s(160)).replicas,
        1
    );
}

// ---- 5. rate limits ---------------------------------------------------------------

#[test]
fn default_scale_up_is_max_of_double_or_four_pods_per_15s() {
    let p = policy(|_| {});
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

#[test]
fn custom_scale_down_policy_limits_pods_per_period() {
    let p = policy(|c| {
        c.scale_down.stabilization = Some(Duration::ZERO);
        c.scale_down.cooldown = Some(Duration::ZERO);
        c.scale_down.policies = Some(vec![RateLimitConfig {
            pods: Some(2),
            percent: None,
            period: s(60),
        }]);
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(10), t0);
    assert_eq!(d.replicas, 8);
    assert_eq!(
        d.reasons.last().unwrap().to_string(),
        "rate limit: scale-down limited to -2 pods per 1m -> 8"
    );
    st.record_scale(10, 8, t0);
    // Within the same minute the allowance is spent.
    assert_eq!(
        decide(&p, &mut st, Some(&sample(0, 0)), cur(8), t0 + s(30)).replicas,
        8
    );
    assert_eq!(
        decide(&p, &mut st, Some(&sample(0, 0)), cur(8), t0 + s(60)).replicas,
        6
    );
}

#[test]
fn no_scale_down_within_the_cooldown_after_a_change() {
    let p = policy(|c| {
        c.scale_down.stabilization = Some(Duration::ZERO);
        c.scale_down.cooldown = Some(s(120));
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    // Backlog 200 / 20 asks for 10: up from 4 is not held by a down cooldown.
    let up = decide(&p, &mut st, Some(&sample(200, 0)), cur(4), t0);
    assert_eq!(up.replicas, 8, "{:?}", up.reasons);
    st.record_scale(4, 8, t0);
    // The queue empties at once: the workers just added are kept for 2 min.
    let held = decide(&p, &mut st, Some(&sample(0, 0)), cur(8), t0 + s(60));
    assert_eq!(held.replicas, 8);
    assert_eq!(
        held.reasons.last().unwrap().to_string(),
        "rate limit: last change 1m ago, within the down cooldown 2m; keeping 8 (would be 0)"
    );
    let after = decide(&p, &mut st, Some(&sample(0, 0)), cur(8), t0 + s(120));
    assert_eq!(after.replicas, 1, "{:?}", after.reasons);
}

#[test]
fn a_step_down_waits_for_a_falling_recommendation_to_settle() {
    // After a burst the down-window's highest recommendation falls as the
    // old highs leave it. With a cooldown, stepping down at once would leave
    // the count on the first stair for the whole cooldown.
    let p = policy(|c| {
        c.scale_down.stabilization = Some(s(90));
        c.scale_down.cooldown = Some(s(120));
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    // Proposals 100, 80, 60, 40, 20, then 10 for good, 5 s apart.
    let visible = |t: u64| match t {
        0 => 2000,
        5 => 1600,
        10 => 1200,
        15 => 800,
        20 => 400,
        _ => 200,
    };
    let mut changes = Vec::new();
    let mut count = 100;
    for t in (0..=150).step_by(5) {
        let d = decide(
            &p,
            &mut st,
            Some(&sample(visible(t), 0)),
            cur(count),
            t0 + s(t),
        );
        if (90..110).contains(&t) {
            assert!(
                d.reasons
                    .iter()
                    .any(|r| r.message.to_string().starts_with("still falling")),
                "t={t}: {:?}",
                d.reasons
            );
        }
        if d.replicas != count {
            st.record_scale(count, d.replicas, t0 + s(t));
            changes.push((t, count, d.replicas));
            count = d.replicas;
        }
    }
    // One step, once the window's highs have left it: not 80 first and
    // then 2 min later the rest.
    assert_eq!(changes, vec![(110, 100, 10)]);
}

#[test]
fn a_step_down_waits_for_a_settling_count_at_most_one_down_window() {
    // A load that keeps falling by 10 % every poll: the down-window's high
    // will always be falling fast, and a step down must still come.
    let p = policy(|c| {
        c.tolerance = 0.0;
        c.scale_down.stabilization = Some(s(30));
        c.scale_down.cooldown = Some(s(60));
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let mut count = 100;
    let mut first_wait = None;
    let mut first_step = None;
    for k in 0..60u64 {
        let t = 5 * k;
        let visible = (2000.0 * 0.9f64.powi(k as i32)).round() as u64;
        let d = decide(
            &p,
            &mut st,
            Some(&sample(visible, 0)),
            cur(count),
            t0 + s(t),
        );
        if first_wait.is_none()
            && d.reasons
                .iter()
                .any(|r| r.message.to_string().starts_with("still falling"))
        {
            first_wait = Some(t);
        }
        if d.replicas != count {
            st.record_scale(count, d.replicas, t0 + s(t));
            count = d.replicas;
            first_step.get_or_insert(t);
        }
    }
    let (wait, step) = (
        first_wait.expect("it waited"),
        first_step.expect("it stepped"),
    );
    assert!(
        step <= wait + 30,
        "waited from {wait} s, stepped at {step} s"
    );
}

#[test]
fn the_age_budget_caps_the_backlog_signal_far_from_the_objective() {
    let budget = |on: bool| {
        policy(move |c| {
            c.messages_per_replica = Some(10.0);
            c.max_message_age = Some(s(120));
            c.spend_age_budget = on;
            c.throughput = Some(ThroughputConfig {
                seconds_per_message: Some(2.0),
                drain_within: None,
                target_utilization: 1.0,
            });
        })
    };
    let at = |age: u64| Sample {
        oldest_age: Some(s(age)),
        arrival_rate: Some(5.0),
        ..sample(1200, 0)
    };
    let p = budget(true);
    // Oldest 30 s of 2 min: 5 msg/s x 2 s + 1200 x 2 s drained in 30 s
    // (a third of the 90 s left) = 90, not 1200 / 10 = 120.
    let d = decide(
        &p,
        &mut PolicyState::new(),
        Some(&at(30)),
        cur(50),
        Instant::now(),
    );
    assert_eq!(d.proposals[0].replicas, Some(90), "{:?}", d.reasons);
    assert_eq!(
        d.reasons[0].message,
        "backlog 1200 / 10 per replica -> 120; the age objective needs 90: arrivals plus \
         1200 x 2 s/msg drained in 30s, a third of the time the oldest message (30s) has \
         left of 2m -> 90"
    );
    assert_eq!(d.replicas, 90);
    // Near the objective the budget asks for more than the backlog signal,
    // which then stands as configured.
    let d = decide(
        &p,
        &mut PolicyState::new(),
        Some(&at(90)),
        cur(50),
        Instant::now(),
    );
    assert_eq!(d.proposals[0].replicas, Some(120), "{:?}", d.reasons);
    // Off, messages_per_replica is a hard target.
    let d = decide(
        &budget(false),
        &mut PolicyState::new(),
        Some(&at(30)),
        cur(50),
        Instant::now(),
    );
    assert_eq!(d.proposals[0].replicas, Some(120), "{:?}", d.reasons);
    // Without an age to spend (not measured, not estimated), no cap.
    let blind = Sample {
        oldest_age: None,
        ..at(30)
    };
    let d = decide(
        &p,
        &mut PolicyState::new(),
        Some(&blind),
        cur(50),
        Instant::now(),
    );
    assert_eq!(d.proposals[0].replicas, Some(120), "{:?}", d.reasons);
}

#[test]
fn an_up_cooldown_spaces_scale_ups() {
    let p = policy(|c| c.scale_up.cooldown = Some(s(30)));
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    assert_eq!(
        decide(&p, &mut st, Some(&sample(100, 0)), cur(2), t0).replicas,
        5
    );
    st.record_scale(2, 5, t0);
    assert_eq!(
        decide(&p, &mut st, Some(&sample(200, 0)), cur(5), t0 + s(20)).replicas,
        5
    );
    assert_eq!(
        decide(&p, &mut st, Some(&sample(200, 0)), cur(5), t0 + s(30)).replicas,
        10
    );
}

#[test]
fn an_age_objective_brings_a_learned_throughput_signal_that_is_silent_until_learned() {
    let p = policy(|c| {
        c.max_message_age = Some(s(120));
        c.learn_throughput = true;
        c.scale_down.stabilization = Some(Duration::ZERO);
        c.scale_down.cooldown = Some(Duration::ZERO);
    });
    let t = p.throughput.expect("implicit throughput");
    assert!(t.implicit);
    assert_eq!(t.drain_within, s(120));
    assert_eq!(t.seconds_per_message, None);
    // Nothing learned yet: the signal neither raises nor holds the count.
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(6), t0);
    assert_eq!(d.replicas, 1, "{:?}", d.reasons);
    assert!(
        d.reasons
            .iter()
            .any(|r| r.message.to_string().contains("throughput not yet learned")),
        "{:?}",
        d.reasons
    );
    // Configured explicitly, the same unknown holds scale-down.
    let explicit = policy(|c| {
        c.max_message_age = Some(s(120));
        c.throughput = Some(ThroughputConfig {
            seconds_per_message: None,
            drain_within: None,
            target_utilization: 1.0,
        });
        c.scale_down.stabilization = Some(Duration::ZERO);
    });
    let mut st = PolicyState::new();
    let d = decide(&explicit, &mut st, Some(&sample(0, 0)), cur(6), t0);
    assert_eq!(d.replicas, 6, "{:?}", d.reasons);
    // And `learn_throughput = false` turns it off.
    let off = policy(|c| {
        c.max_message_age = Some(s(120));
        c.learn_throughput = false;
    });
    assert_eq!(off.throughput, None);
}

// ---- 6. bounds ------------------------------------------------------------------

#[test]
fn max_parallelism_caps_the_count_and_says_why() {
    // (backlog, current, max_parallelism, expected, reason)
    let cases: &[(u64, u32, Option<u32>, u32, &str)] = &[
        (
            2_000,
            6,
            Some(8),
            8,
            "bounds: 12 clamped to max_parallelism 8 (no more workers can be busy at once) -> 8",
        ),
        (
            2_000,
            6,
            Some(500),
            12,
            "rate limit: scale-up limited to max(+100% per 15s, +4 pods per 15s) -> 12",
        ),
        (
            2_000,
            6,
            None,
            12,
            "rate limit: scale-up limited to max(+100% per 15s, +4 pods per 15s) -> 12",
        ),
        // Already above the cap (the cap was lowered): brought down to it.
        (
            2_000,
            20,
            Some(8),
            8,
            "bounds: 40 clamped to max_parallelism 8 (no more workers can be busy at once) -> 8",
        ),
    ];
    for &(backlog, current, cap, want, reason) in cases {
        let p = policy(|c| {
            c.max_parallelism = cap;
            c.max_replicas = 60;
        });
        let mut st = PolicyState::new();
        let d = decide(
            &p,
            &mut st,
            Some(&sample(backlog, 0)),
            cur(current),
            Instant::now(),
        );
        assert_eq!(d.replicas, want, "{cap:?}: {:?}", d.reasons);
        assert_eq!(d.reasons.last().unwrap().to_string(), reason, "{cap:?}");
    }
}

#[test]
fn max_parallelism_below_min_replicas_or_zero_is_refused_with_its_path() {
    for (min, cap) in [(1, 0), (3, 2)] {
        let mut c = base_config();
        c.min_replicas = min;
        c.max_parallelism = Some(cap);
        let mut p = crate::validate::Problems::default();
        c.validate("scaler[0].policy", &mut p);
        assert_eq!(
            p.0,
            vec![format!(
                "scaler[0].policy.max_parallelism: must be >= 1 and >= min_replicas ({min})"
            )]
        );
    }
}

#[test]
fn result_is_clamped_to_the_bounds() {
    let p = policy(|c| {
        c.min_replicas = 2;
        c.max_replicas = 6;
        c.scale_up.policies = Some(vec![RateLimitConfig {
            pods: Some(100),
            percent: None,
            period: s(15),
        }]);
    });
    let mut st = PolicyState::new();
    let d = decide(
        &p,
        &mut st,
        Some(&sample(10_000, 0)),
        cur(3),
        Instant::now(),
    );
    assert_eq!(d.replicas, 6);
    assert_eq!(
        d.reasons.last().unwrap().to_string(),
        "bounds: 103 clamped to max_replicas 6 -> 6"
    );
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(0, 0)), cur(0), Instant::now());
    assert_eq!(d.replicas, 2);
}

// ---- 7. fallback ------------------------------------------------------------------

#[test]
fn failed_samples_hold_then_fall_back() {
    let t0 = Instant::now();
    // (action, replicas, current, expected after 3 failures)
    let table = [
        (FallbackAction::Hold, None, 7, 7),
        (FallbackAction::Replicas, Some(5), 7, 5),
        (FallbackAction::Replicas, Some(9), 7, 9),
        (FallbackAction::CurrentIfHigher, Some(5), 7, 7),
        (FallbackAction::CurrentIfHigher, Some(9), 7, 9),
    ];
    for (action, n, c, want) in table {
        let p = policy(|cfg| {
            cfg.fallback = FallbackConfig {
                after_failures: 3,
                action,
                replicas: n,
            }
        });
        let mut st = PolicyState::new();
        for i in 0..2 {
            let d = decide(&p, &mut st, None, cur(c), t0 + s(i));
            assert_eq!(d.replicas, c, "before the fallback a failure holds");
            assert!(!d.fallback_active);
        }
        let d = decide(&p, &mut st, None, cur(c), t0 + s(2));
        assert!(d.fallback_active);
        assert_eq!(d.replicas, want, "{action:?} {n:?}: {:?}", d.reasons);
        // A good sample ends the fallback.
        let d = decide(&p, &mut st, Some(&sample(140, 0)), cur(c), t0 + s(3));
        assert!(!d.fallback_active);
        assert_eq!(st.consecutive_failures(), 0);
    }
}

#[test]
fn an_unknown_age_counts_toward_fallback_but_backlog_can_still_scale_up() {
    let p = policy(|c| {
        c.max_message_age = Some(s(60));
        c.fallback.after_failures = 2;
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    // The first sample: no history to estimate the age from.
    let d = decide(&p, &mut st, Some(&sample(400, 0)), cur(10), t0);
    assert_eq!(d.replicas, 20);
    assert_eq!(d.oldest_age, None);
    assert_eq!(st.consecutive_failures(), 1);
    // The next one has history: the age is estimated (at least 15 s), so the
    // sample is not stale, and a lower bound never scales down.
    let d = decide(&p, &mut st, Some(&sample(400, 0)), cur(20), t0 + s(15));
    assert_eq!(st.consecutive_failures(), 0);
    assert!(d.oldest_age_estimated);
    assert_eq!(d.oldest_age, Some(s(15)));
    assert_eq!(d.replicas, 20, "{:?}", d.reasons);
    // Without the visible count neither backlog nor age is known: stale,
    // and after two such samples the fallback holds; never lower.
    let blind = Sample {
        visible: None,
        ..sample(5, 0)
    };
    decide(&p, &mut st, Some(&blind), cur(20), t0 + s(30));
    let d = decide(&p, &mut st, Some(&blind), cur(20), t0 + s(400));
    assert!(d.fallback_active);
    assert_eq!(
        d.replicas, 20,
        "missing data never scales down: {:?}",
        d.reasons
    );
}

#[test]
fn an_estimated_age_over_the_objective_scales_up() {
    let p = policy(|c| {
        c.messages_per_replica = None;
        c.max_message_age = Some(s(60));
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    // Empty, then 50 messages arrive and nobody takes them for 2 minutes.
    decide(&p, &mut st, Some(&sample(0, 0)), cur(4), t0);
    decide(&p, &mut st, Some(&sample(50, 0)), cur(4), t0 + s(15));
    let d = decide(&p, &mut st, Some(&sample(50, 0)), cur(4), t0 + s(135));
    assert!(d.oldest_age_estimated);
    let age = d.oldest_age.expect("estimated");
    assert!(age >= s(120) && age <= s(135), "{age:?}");
    assert!(d.replicas > 4, "{:?}", d.reasons);
    assert!(
        d.reasons[0]
            .message
            .to_string()
            .contains("(estimated) over objective"),
        "{:?}",
        d.reasons
    );
}

// ---- 8. pause -----------------------------------------------------------------------

#[test]
fn a_paused_policy_reports_but_keeps_the_current_count() {
    let p = policy(|c| c.paused = true);
    let mut st = PolicyState::new();
    let d = decide(&p, &mut st, Some(&sample(400, 0)), cur(3), Instant::now());
    assert_eq!(d.replicas, 3);
    assert_eq!(d.unpaused_replicas, 7);
    assert!(d.paused);
    assert_eq!(
        d.reasons.last().unwrap().to_string(),
        "pause: paused; would scale to 7, keeping 3"
    );
}

// ---- properties ---------------------------------------------------------------------

fn arb_sample() -> impl Strategy<Value = Option<Sample>> {
    prop_oneof![
        1 => Just(None),
        6 => (
            proptest::option::weighted(0.9, 0u64..100_000),
            proptest::option::weighted(0.8, 0u64..10_000),
            proptest::option::weighted(0.7, 0u64..120_000),
            proptest::option::weighted(0.5, 0.0f64..500.0),
        )
            .prop_map(|(v, f, age_ms, rate)| Some(Sample {
                visible: v,
                in_flight: f,
                delayed: Some(0),
                oldest_age: age_ms.map(Duration::from_millis),
                arrival_rate: rate,
                ..Sample::empty(SystemTime::UNIX_EPOCH)
            })),
    ]
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        0u32..5,
        1u32..60,
        proptest::option::of(1.0f64..100.0),
        proptest::option::of(0.05f64..5.0),
        proptest::option::of(1u64..300),
        0.0f64..0.3,
        0u64..120,
        any::<bool>(),
    )
        .prop_map(
            |(min, span, mpr, spm, age, tol, down_stab, fallback_higher)| {
                let mut c = base_config();
                c.min_replicas = min;
                c.max_replicas = min + span;
                c.messages_per_replica = mpr.or(if spm.is_none() && age.is_none() {
                    Some(10.0)
                } else {
                    None
                });
                c.throughput = spm.map(|s| ThroughputConfig {
                    seconds_per_message: Some(s),
                    drain_within: None,
                    target_utilization: 1.0,
                });
                c.max_message_age = age.map(Duration::from_secs);
                c.tolerance = tol;
                c.scale_down.stabilization = Some(Duration::from_secs(down_stab));
                if fallback_higher {
                    c.fallback = FallbackConfig {
                        after_failures: 2,
                        action: FallbackAction::CurrentIfHigher,
                        replicas: Some(min + span / 2),
                    };
                }
                Policy::new(&c, &CAPS)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn result_always_lies_within_the_bounds(
        p in arb_policy(),
        samples in proptest::collection::vec(arb_sample(), 1..40),
        start in 0u32..200,
        step_ms in 100u64..60_000,
    ) {
        let t0 = Instant::now();
        let mut st = PolicyState::new();
        let mut c = start;
        for (i, smp) in samples.iter().enumerate() {
            let now = t0 + Duration::from_millis(step_ms * i as u64);
            let d = decide(&p, &mut st, smp.as_ref(), cur(c), now);
            prop_assert!(d.replicas >= p.min_replicas && d.replicas <= p.max_replicas,
                "{} outside [{}, {}]: {:?}", d.replicas, p.min_replicas, p.max_replicas, d.reasons);
            st.record_scale(c, d.replicas, now);
            c = d.replicas;
        }
    }

    #[test]
    fn a_missing_or_failed_sample_never_lowers_replicas(
        p in arb_policy(),
        history in proptest::collection::vec(arb_sample(), 0..20),
        current in 0u32..80,
    ) {
        let t0 = Instant::now();
        let mut st = PolicyState::new();
        for (i, smp) in history.iter().enumerate() {
            decide(&p, &mut st, smp.as_ref(), cur(current), t0 + Duration::from_secs(i as u64));
        }
        let now = t0 + Duration::from_secs(history.len() as u64 + 1);
        let d = decide(&p, &mut st, None, cur(current), now);
        let floor = current.clamp(p.min_replicas, p.max_replicas);
        prop_assert!(d.replicas >= floor, "{} < {}: {:?}", d.replicas, floor, d.reasons);
    }

    #[test]
    fn a_sample_missing_a_needed_input_never_lowers_replicas(
        p in arb_policy(),
        visible in 0u64..10_000,
        current in 1u32..80,
    ) {
        // Age unmeasured while messages wait; in-flight unmeasured too.
        let smp = Sample {
            visible: Some(visible.max(1)),
            ..Sample::empty(SystemTime::UNIX_EPOCH)
        };
        let needs_missing = p.max_message_age.is_some() || p.count_in_flight;
        let mut st = PolicyState::new();
        let d = decide(&p, &mut st, Some(&smp), cur(current), Instant::now());
        if needs_missing {
            let floor = current.clamp(p.min_replicas, p.max_replicas);
            prop_assert!(d.replicas >= floor, "{} < {}: {:?}", d.replicas, floor, d.reasons);
        }
    }

    #[test]
    fn constant_load_converges_and_stays(
        mpr in 1.0f64..50.0,
        backlog in 0u64..5_000,
        start in 1u32..60,
        tol in 0.0f64..0.2,
    ) {
        let p = policy(|c| {
            c.max_replicas = 500;
            c.messages_per_replica = Some(mpr);
            c.tolerance = tol;
            c.scale_down.stabilization = Some(Duration::from_secs(30));
        });
        let t0 = Instant::now();
        let mut st = PolicyState::new();
        let mut c = start;
        let mut changes_after_settling = 0;
        for i in 0..1_000u64 {
            let now = t0 + Duration::from_secs(15 * i);
            let d = decide(&p, &mut st, Some(&sample(backlog, 0)), cur(c), now);
            if d.replicas != c {
                st.record_scale(c, d.replicas, now);
                if i > 100 { changes_after_settling += 1; }
            }
            c = d.replicas;
        }
        prop_assert_eq!(changes_after_settling, 0, "oscillates at {}", c);
    }

    #[test]
    fn the_shipped_defaults_converge_under_constant_load(
        mpr in 1.0f64..50.0,
        lambda in 0.5f64..40.0,
        visible in 0u64..2_000,
        service in 0.1f64..5.0,
        start in 1u32..60,
        poll in 1u64..30,
    ) {
        // Only what a new user writes; every other knob at its default,
        // the learned throughput signal included. The queue is in a steady
        // state: constant arrivals and backlog, lambda x service messages
        // in flight (Little's law), the oldest message inside the objective.
        let c: PolicyConfig = toml::from_str(&format!(
            "max_replicas = 500\nmessages_per_replica = {mpr}\nmax_message_age = \"2m\""
        ))
        .unwrap();
        let p = Policy::new(&c, &CAPS);
        prop_assert!(p.throughput.is_some_and(|t| t.implicit));
        let t0 = Instant::now();
        let mut st = PolicyState::new();
        let mut c = start;
        let mut changes_after_settling = 0;
        for i in 0..1_000u64 {
            let now = t0 + Duration::from_secs(poll * i);
            let s = Sample {
                oldest_age: Some(Duration::from_secs(30)),
                arrival_rate: Some(lambda),
                ..sample(visible, (lambda * service).round() as u64)
            };
            let d = decide(&p, &mut st, Some(&s), cur(c), now);
            if d.replicas != c {
                st.record_scale(c, d.replicas, now);
                if i > 500 { changes_after_settling += 1; }
            }
            c = d.replicas;
        }
        prop_assert_eq!(changes_after_settling, 0, "oscillates at {}", c);
    }

    #[test]
    fn scale_up_never_exceeds_the_rate_limit(
        pods in 1u32..10,
        period_s in 5u64..120,
        backlogs in proptest::collection::vec(0u64..50_000, 1..60),
        step_s in 1u64..30,
    ) {
        let p = policy(|c| {
            c.max_replicas = 10_000;
            c.messages_per_replica = Some(1.0);
            c.scale_up.policies = Some(vec![RateLimitConfig { pods: Some(pods), percent: None, period: Duration::from_secs(period_s) }]);
        });
        let t0 = Instant::now();
        let mut st = PolicyState::new();
        let mut c = 1u32;
        let mut events: Vec<(u64, u32)> = vec![];
        for (i, b) in backlogs.iter().enumerate() {
            let t = step_s * i as u64;
            let now = t0 + Duration::from_secs(t);
            let d = decide(&p, &mut st, Some(&sample(*b, 0)), cur(c), now);
            if d.replicas > c {
                events.push((t, d.replicas - c));
            }
            st.record_scale(c, d.replicas, now);
            c = d.replicas;
            // Pods added within any trailing period never exceed the limit.
            let added: u32 = events.iter().filter(|(at, _)| t - at < period_s).map(|(_, n)| n).sum();
            prop_assert!(added <= pods, "added {} within {}s, limit {}", added, period_s, pods);
        }
    }

    #[test]
    fn stabilization_picks_the_window_extremes_like_the_hpa(
        recs in proptest::collection::vec(0u64..1_000, 1..40),
        up_s in 0u64..60,
        down_s in 0u64..120,
        current in 1u32..100,
    ) {
        let p = policy(|c| {
            c.max_replicas = 1_000;
            c.min_replicas = 0;
            c.messages_per_replica = Some(1.0);
            c.tolerance = 0.0;
            c.scale_up.stabilization = Some(Duration::from_secs(up_s));
            c.scale_down.stabilization = Some(Duration::from_secs(down_s));
            c.scale_up.select = Some(SelectPolicy::Max);
            c.scale_up.policies = Some(vec![RateLimitConfig { pods: Some(10_000), percent: None, period: Duration::from_secs(1) }]);
            c.scale_down.policies = Some(vec![RateLimitConfig { pods: Some(10_000), percent: None, period: Duration::from_secs(1) }]);
        });
        let t0 = Instant::now();
        let mut st = PolicyState::new();
        let n = recs.len();
        for (i, b) in recs.iter().enumerate() {
            // Keep the queue non-empty so scale to zero is not involved.
            let now = t0 + Duration::from_secs(i as u64);
            let d = decide(&p, &mut st, Some(&sample((*b).max(1), 0)), cur(current), now);
            if i == n - 1 {
                let in_window = |w: u64| recs.iter().enumerate()
                    .filter(move |(j, _)| (i - j) < w as usize || *j == i)
                    .map(|(_, r)| (*r).max(1) as u32);
                let up = in_window(up_s).min().unwrap();
                let mut down = in_window(down_s).max().unwrap();
                // qscale's one deviation from the HPA: the count found at
                // start-up counts as a recommendation for one down-window.
                if (i as u64) < down_s {
                    down = down.max(current);
                }
                let want = current.max(up).min(down);
                prop_assert_eq!(d.replicas, want, "{:?}", d.reasons);
            }
        }
    }
}

// ---- several queues --------------------------------------------------------

/// Queue inputs for `decide_many` from (name, policy, sample) rows.
fn queue_inputs<'a>(rows: &'a [(&'a str, &'a Policy, Option<Sample>)]) -> Vec<QueueSample<'a>> {
    rows.iter()
        .map(|(name, policy, sample)| QueueSample {
            name,
            policy,
            sample: sample.as_ref(),
        })
        .collect()
}

fn messages(r: &[Reason]) -> Vec<String> {
    r.iter().map(|r| r.to_string()).collect()
}

#[test]
fn two_queues_are_sized_for_the_sum_of_their_needs() {
    let p = policy(|c| c.messages_per_replica = Some(10.0));
    let rows = [
        ("critical", &p, Some(sample(40, 0))),
        ("bulk", &p, Some(sample(30, 0))),
    ];
    let mut st = PolicyState::new();
    let d = decide_many(
        &p,
        &mut st,
        &queue_inputs(&rows),
        Combine::Sum,
        cur(5),
        Instant::now(),
    );
    assert_eq!(d.replicas, 7, "{:?}", d.reasons);
    assert_eq!(
        messages(&d.reasons),
        [
            "signal: critical: backlog 40 / 10 per replica -> 4",
            "signal: bulk: backlog 30 / 10 per replica -> 3",
            "combine: sum of 2 queues: critical 4 + bulk 3 -> 7",
        ]
    );
    let needs: Vec<(&str, Option<u32>, Option<u64>)> = d
        .queues
        .iter()
        .map(|q| (q.name.as_str(), q.replicas, q.backlog))
        .collect();
    assert_eq!(
        needs,
        [("critical", Some(4), Some(40)), ("bulk", Some(3), Some(30))]
    );
    assert_eq!(d.backlog, Some(70), "the pool's backlog is the total");
    assert!(d.proposals.is_empty(), "each queue's are in `queues`");
}

#[test]
fn max_takes_the_largest_need_for_a_pool_that_drains_the_queues_in_turn() {
    let p = policy(|c| c.messages_per_replica = Some(10.0));
    let rows = [
        ("critical", &p, Some(sample(40, 0))),
        ("bulk", &p, Some(sample(30, 0))),
    ];
    let d = decide_many(
        &p,
        &mut PolicyState::new(),
        &queue_inputs(&rows),
        Combine::Max,
        cur(2),
        Instant::now(),
    );
    assert_eq!(d.replicas, 4, "{:?}", d.reasons);
    assert_eq!(
        d.reasons.last().map(|r| r.to_string()).as_deref(),
        Some("combine: largest of 2 queues: critical 4, bulk 3 -> 4")
    );
}

#[test]
fn each_queue_is_held_to_its_own_age_objective() {
    // The same 1 min old message is late for the critical queue (30 s) and
    // on time for the bulk one (10 m): only the critical queue asks for
    // more, from its share of the pool (3 of 4 replicas are busy on it).
    let age_only = |objective: u64| {
        policy(move |c| {
            c.messages_per_replica = None;
            c.max_message_age = Some(s(objective));
        })
    };
    let (critical, bulk) = (age_only(30), age_only(600));
    let aged = |in_flight: u64| Sample {
        oldest_age: Some(s(60)),
        ..sample(10, in_flight)
    };
    let rows = [
        ("critical", &critical, Some(aged(3))),
        ("bulk", &bulk, Some(aged(1))),
    ];
    let d = decide_many(
        &bulk,
        &mut PolicyState::new(),
        &queue_inputs(&rows),
        Combine::Sum,
        cur(4),
        Instant::now(),
    );
    assert_eq!(d.replicas, 6, "{:?}", d.reasons);
    assert_eq!(
        messages(&d.reasons)[..2],
        [
            "signal: critical: oldest message 1m over objective 30s: 3 (of 4 replicas, split by messages in flight) x 2 -> 6",
            "signal: bulk: oldest message 1m within objective 10m",
        ]
    );
    let shares: Vec<f64> = d.queues.iter().map(|q| q.share).collect();
    assert_eq!(shares, [3.0, 1.0]);
    // With the bulk queue's objective for both, nothing is late.
    let rows = [
        ("critical", &bulk, Some(aged(3))),
        ("bulk", &bulk, Some(aged(1))),
    ];
    let d = decide_many(
        &bulk,
        &mut PolicyState::new(),
        &queue_inputs(&rows),
        Combine::Sum,
        cur(4),
        Instant::now(),
    );
    assert!(d.replicas <= 4, "{:?}", d.reasons);
}

#[test]
fn the_pool_splits_by_in_flight_then_backlog_then_evenly() {
    let p = policy(|_| {});
    let unknown_in_flight = |visible| Sample {
        in_flight: None,
        ..sample(visible, 0)
    };
    // (queue a, queue b, the fractions, the basis)
    type Case = (Option<Sample>, Option<Sample>, [f64; 2], &'static str);
    let cases: [Case; 4] = [
        (
            Some(sample(0, 3)),
            Some(sample(0, 1)),
            [0.75, 0.25],
            "split by messages in flight",
        ),
        (
            Some(sample(30, 0)),
            Some(sample(10, 0)),
            [0.75, 0.25],
            "split by backlog",
        ),
        (
            Some(unknown_in_flight(0)),
            Some(unknown_in_flight(0)),
            [0.5, 0.5],
            "split evenly",
        ),
        (None, Some(sample(10, 4)), [0.5, 0.5], "split evenly"),
    ];
    for (a, b, want, basis) in cases {
        let rows = [("a", &p, a), ("b", &p, b)];
        let (fractions, how) = split(&queue_inputs(&rows));
        assert_eq!((fractions.as_slice(), how), (want.as_slice(), basis));
    }
}

#[test]
fn a_failing_queue_never_lets_the_pool_shrink_but_the_others_still_grow_it() {
    let p = policy(|c| {
        c.messages_per_replica = Some(10.0);
        c.scale_up.policies = Some(vec![RateLimitConfig {
            pods: Some(100),
            percent: None,
            period: s(15),
        }]);
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    // The bulk queue needs 20; the critical queue cannot be read.
    let rows = [("critical", &p, None), ("bulk", &p, Some(sample(200, 0)))];
    let d = decide_many(&p, &mut st, &queue_inputs(&rows), Combine::Sum, cur(10), t0);
    assert_eq!(d.replicas, 20, "{:?}", d.reasons);
    assert_eq!(
        messages(&d.reasons)[..3],
        [
            "missing data: critical: no sample; not scaling down below 10",
            "signal: bulk: backlog 200 / 10 per replica -> 20",
            "combine: sum of 2 queues: critical (no sample) + bulk 20 -> 20",
        ]
    );
    assert!(!d.queues[0].sampled && d.queues[1].sampled);
    // Bulk drains; for ten minutes the pool stays at 20 while critical is
    // unreadable (its workers may be what keeps it in check).
    let mut c = 20;
    for i in 1..=40u64 {
        let now = t0 + s(15 * i);
        let rows = [("critical", &p, None), ("bulk", &p, Some(sample(0, 0)))];
        let d = decide_many(&p, &mut st, &queue_inputs(&rows), Combine::Sum, cur(c), now);
        assert!(d.replicas >= 20, "poll {i}: {:?}", d.reasons);
        st.record_scale(c, d.replicas, now);
        c = d.replicas;
    }
    // Critical answers again (empty too): now the pool may shrink.
    let mut lowest = c;
    for i in 41..=80u64 {
        let now = t0 + s(15 * i);
        let rows = [
            ("critical", &p, Some(sample(0, 0))),
            ("bulk", &p, Some(sample(0, 0))),
        ];
        let d = decide_many(&p, &mut st, &queue_inputs(&rows), Combine::Sum, cur(c), now);
        st.record_scale(c, d.replicas, now);
        c = d.replicas;
        lowest = lowest.min(c);
    }
    assert_eq!(lowest, p.min_replicas);
}

#[test]
fn every_queue_failing_is_a_failed_poll_and_leads_to_the_fallback() {
    let p = policy(|c| c.fallback.after_failures = 2);
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let rows = [("critical", &p, None), ("bulk", &p, None)];
    let d = decide_many(&p, &mut st, &queue_inputs(&rows), Combine::Sum, cur(5), t0);
    assert_eq!(d.replicas, 5);
    assert_eq!(
        messages(&d.reasons),
        ["missing data: no sample from any of the 2 queues; holding at 5"]
    );
    assert_eq!(st.consecutive_failures(), 1);
    let d = decide_many(
        &p,
        &mut st,
        &queue_inputs(&rows),
        Combine::Sum,
        cur(5),
        t0 + s(5),
    );
    assert!(d.fallback_active, "{:?}", d.reasons);
    assert_eq!(d.queues.len(), 2, "each queue is still listed");
}

#[test]
fn two_queues_under_constant_load_settle_without_oscillating() {
    // Learned throughput, age and backlog signals on both queues, each with
    // its own objective; the load is steady, so after the first changes the
    // count stays put.
    let critical = policy(|c| {
        c.messages_per_replica = Some(5.0);
        c.max_message_age = Some(s(30));
        c.learn_throughput = true;
        c.spend_age_budget = true;
    });
    let bulk = policy(|c| {
        c.messages_per_replica = Some(50.0);
        c.max_message_age = Some(s(600));
        c.learn_throughput = true;
        c.spend_age_budget = true;
    });
    let t0 = Instant::now();
    let mut st = PolicyState::new();
    let mut c = 4u32;
    let mut changes = Vec::new();
    for i in 0..240u64 {
        let now = t0 + s(5 * i);
        let rows = [
            (
                "critical",
                &critical,
                Some(Sample {
                    oldest_age: Some(s(8)),
                    arrival_rate: Some(4.0),
                    ..sample(20, 6)
                }),
            ),
            (
                "bulk",
                &bulk,
                Some(Sample {
                    oldest_age: Some(s(120)),
                    arrival_rate: Some(10.0),
                    ..sample(400, 12)
                }),
            ),
        ];
        let d = decide_many(
            &critical,
            &mut st,
            &queue_inputs(&rows),
            Combine::Sum,
            cur(c),
            now,
        );
        if d.replicas != c {
            changes.push((i, c, d.replicas));
        }
        st.record_scale(c, d.replicas, now);
        c = d.replicas;
    }
    let late: Vec<_> = changes.iter().filter(|(i, _, _)| *i > 24).collect();
    assert!(
        late.is_empty(),
        "changes after the first 2 min: {changes:?}"
    );
}

fn arb_queue_count() -> impl Strategy<Value = usize> {
    2usize..5
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn with_many_queues_the_result_always_lies_within_the_bounds(
        p in arb_policy(),
        per_queue in proptest::collection::vec(arb_policy(), 4),
        n in arb_queue_count(),
        polls in proptest::collection::vec(proptest::collection::vec(arb_sample(), 4), 1..30),
        max in any::<bool>(),
        start in 0u32..200,
    ) {
        let combine = if max { Combine::Max } else { Combine::Sum };
        let names = ["a", "b", "c", "d"];
        let t0 = Instant::now();
        let mut st = PolicyState::new();
        let mut c = start;
        for (i, samples) in polls.iter().enumerate() {
            let now = t0 + Duration::from_secs(5 * i as u64);
            let queues: Vec<QueueSample> = (0..n)
                .map(|q| QueueSample { name: names[q], policy: &per_queue[q], sample: samples[q].as_ref() })
                .collect();
            let d = decide_many(&p, &mut st, &queues, combine, cur(c), now);
            prop_assert!(d.replicas >= p.min_replicas && d.replicas <= p.max_replicas,
                "{} outside [{}, {}]: {:?}", d.replicas, p.min_replicas, p.max_replicas, d.reasons);
            prop_assert_eq!(d.queues.len(), n);
            st.record_scale(c, d.replicas, now);
            c = d.replicas;
        }
    }

    #[test]
    fn a_failed_queue_never_lowers_the_pool(
        p in arb_policy(),
        other in arb_sample(),
        current in 0u32..80,
    ) {
        let rows = [("down", &p, None), ("up", &p, other)];
        let d = decide_many(&p, &mut PolicyState::new(), &queue_inputs(&rows), Combine::Sum, cur(current), Instant::now());
        prop_assert!(d.replicas >= current.min(p.max_replicas), "{:?}", d.reasons);
    }

    #[test]
    fn one_queue_by_any_name_decides_exactly_as_decide(
        p in arb_policy(),
        samples in proptest::collection::vec(arb_sample(), 1..30),
        start in 0u32..100,
    ) {
        let t0 = Instant::now();
        let (mut a, mut b) = (PolicyState::new(), PolicyState::new());
        let mut c = start;
        for (i, smp) in samples.iter().enumerate() {
            let now = t0 + Duration::from_secs(5 * i as u64);
            let one = decide(&p, &mut a, smp.as_ref(), cur(c), now);
            let many = decide_many(
                &p,
                &mut b,
                &[QueueSample { name: "jobs", policy: &p, sample: smp.as_ref() }],
                Combine::Max,
                cur(c),
                now,
            );
            prop_assert_eq!(&one, &many);
            a.record_scale(c, one.replicas, now);
            b.record_scale(c, many.replicas, now);
            c = one.replicas;
        }
    }
}

#[test]
fn a_reason_reads_the_values_it_was_made_with_however_often_it_is_read() {
    let mut n = 3;
    let m = msg!("{n} of {}", secs(Duration::from_millis(1500)));
    n += 1;
    assert_eq!(n, 4);
    assert_eq!(m.to_string(), "3 of 1s");
    assert_eq!(m.to_string(), "3 of 1s");
    assert_eq!(m, "3 of 1s");
    assert!(!m.reads("3 of 1"));
    assert!(!m.reads("3 of 1s and more"));
    assert_eq!(m.clone(), Message::from("3 of 1s"));
    assert_eq!(format!("{m:?}"), "\"3 of 1s\"");
    let r = Reason {
        step: Step::Bounds,
        message: m,
    };
    assert_eq!(
        serde_json::to_string(&r).ok().as_deref(),
        Some(r#"{"step":"bounds","message":"3 of 1s"}"#)
    );
    assert_eq!(r.to_string(), "bounds: 3 of 1s");
}
