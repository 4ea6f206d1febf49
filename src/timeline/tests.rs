//! The timeline's bounds and downsampling, on made-up polls.

use super::*;

/// A Unix time on a minute boundary, so buckets start at known seconds.
const T0: f64 = 1_700_000_040.0;

fn poll(at: f64) -> Poll {
    Poll {
        at,
        visible: Some(10),
        in_flight: Some(2),
        backlog: Some(12),
        oldest_age: Some(5.0),
        oldest_age_estimated: false,
        arrival_rate: Some(1.5),
        desired: Some(2),
        current: Some(2),
        ready: Some(2),
        signal: Some(Signal::Backlog),
        error: false,
        action: None,
        reason: String::new(),
    }
}

/// The poll of second `i` of a day: backlog climbs 0..59 within every
/// minute, age spikes to 300 s once per minute (second 17), desired
/// replicas step with the minute, ready is unknown in minutes divisible by 7.
fn day_poll(i: u64) -> Poll {
    let minute = i / 60;
    let s = i % 60;
    Poll {
        backlog: Some(s),
        oldest_age: Some(if s == 17 { 300.0 } else { 5.0 }),
        desired: Some(1 + (minute % 3) as u32),
        current: Some(1 + (minute % 3) as u32),
        ready: (!minute.is_multiple_of(7)).then_some(1),
        ..poll(T0 + i as f64)
    }
}

#[test]
fn a_day_of_one_second_polls_stays_within_the_point_and_byte_bounds() {
    let mut t = Timeline::new();
    // A new timeline holds nothing beyond itself; it grows as it fills.
    assert_eq!(t.heap_bytes(), std::mem::size_of::<Timeline>());
    let mut after_an_hour = 0;
    for i in 0..86_400u64 {
        t.push(&day_poll(i));
        assert!(t.full_points() <= FULL_POINTS);
        assert!(t.bucket_count() <= BUCKETS);
        // Never past the bound, at any poll.
        assert!(t.heap_bytes() <= Timeline::max_bytes(), "poll {i}");
        if i == 3600 {
            after_an_hour = t.heap_bytes();
        }
    }
    assert_eq!(t.full_points(), FULL_POINTS);
    assert_eq!(t.bucket_count(), BUCKETS);
    // Full within the first hour; a plateau after that, not a leak.
    assert_eq!(t.heap_bytes(), after_an_hour);
    eprintln!(
        "timeline: {} bytes after a day of 1 s polls, {} at most",
        t.heap_bytes(),
        Timeline::max_bytes()
    );
    assert!(
        Timeline::max_bytes() <= 8 * 1024,
        "a timeline may hold {} bytes",
        Timeline::max_bytes()
    );
    assert_eq!(std::mem::size_of::<Point>(), 40);
    assert_eq!(std::mem::size_of::<Bucket>(), 72);
}

#[test]
fn downsampled_buckets_keep_the_minimum_maximum_and_last_of_each_minute() {
    let mut t = Timeline::new();
    let n = 86_400u64;
    for i in 0..n {
        t.push(&day_poll(i));
    }
    let h = t.view("a");
    // The newest FULL_POINTS polls, one by one and exact.
    assert_eq!(h.points.len(), FULL_POINTS);
    for (k, p) in h.points.iter().enumerate() {
        let i = n - FULL_POINTS as u64 + k as u64;
        let want = day_poll(i);
        assert_eq!(p.at, want.at);
        assert_eq!(p.backlog, want.backlog);
        assert_eq!(p.oldest_age_seconds, want.oldest_age);
        assert_eq!(p.desired, want.desired);
        assert_eq!(p.ready, want.ready);
    }
    // Before them, whole minutes, contiguous, ending where the points begin.
    let first_point = h.points[0].at;
    assert_eq!(h.buckets.len(), BUCKETS);
    let last = h.buckets.last().expect("buckets");
    assert_eq!(last.start + BUCKET, first_point);
    for w in h.buckets.windows(2) {
        assert_eq!(w[1].start - w[0].start, BUCKET);
    }
    for b in &h.buckets {
        let minute = ((b.start - T0) / 60.0) as u64;
        assert_eq!(b.polls, 60, "minute {minute}");
        assert_eq!(b.backlog.min, Some(0));
        assert_eq!(b.backlog.max, Some(59));
        assert_eq!(b.backlog.last, Some(59));
        // The one-second age spike survives downsampling.
        assert_eq!(b.oldest_age_seconds.max, Some(300.0));
        assert_eq!(b.oldest_age_seconds.min, Some(5.0));
        assert_eq!(b.oldest_age_seconds.last, Some(5.0));
        let d = 1 + minute % 3;
        assert_eq!(b.desired.min, Some(d));
        assert_eq!(b.desired.max, Some(d));
        assert_eq!(b.current, Some(d));
        // A minute with no known ready count stays unknown, not zero.
        let ready = (!minute.is_multiple_of(7)).then_some(1);
        assert_eq!(b.ready.min, ready, "minute {minute}");
        assert_eq!(b.ready.max, ready);
    }
}

#[test]
fn a_bucket_with_some_unknown_values_ranges_over_the_known_ones_only() {
    let mut t = Timeline::new();
    let polls = [
        Poll {
            backlog: None,
            oldest_age: None,
            error: true,
            ..poll(T0)
        },
        Poll {
            backlog: Some(40),
            ..poll(T0 + 1.0)
        },
        Poll {
            backlog: Some(7),
            oldest_age_estimated: true,
            ..poll(T0 + 2.0)
        },
        Poll {
            backlog: None,
            ..poll(T0 + 3.0)
        },
    ];
    for p in &polls {
        t.push(p);
    }
    // Eleven minutes later the four polls are one bucket.
    t.push(&poll(T0 + 660.0));
    let h = t.view("a");
    assert_eq!(h.buckets.len(), 1);
    let b = &h.buckets[0];
    assert_eq!(b.polls, 4);
    assert_eq!(b.start, T0);
    assert_eq!(b.backlog.min, Some(7));
    assert_eq!(b.backlog.max, Some(40));
    assert_eq!(
        b.backlog.last,
        Some(7),
        "an unknown value does not erase the last known"
    );
    assert!(b.error);
    assert!(b.oldest_age_estimated);
    assert_eq!(h.points.len(), 1);

    let mut t = Timeline::new();
    t.push(&Poll {
        at: T0,
        ..Poll::default()
    });
    let json = serde_json::to_value(t.view("a")).expect("json");
    let p = &json["points"][0];
    for field in [
        "visible",
        "backlog",
        "oldest_age_seconds",
        "desired",
        "ready",
        "signal",
    ] {
        assert!(p[field].is_null(), "{field} unknown is null, not zero: {p}");
    }
}

#[test]
fn a_change_is_recorded_once_with_its_reason_and_whether_it_was_written() {
    let mut t = Timeline::new();
    // A dry run: the policy asks for 3 on every poll, nothing is written.
    for i in 0..5 {
        t.push(&Poll {
            desired: Some(3),
            current: Some(1),
            reason: "signal: backlog 60 / 20 per replica -> 3".into(),
            ..poll(T0 + f64::from(i))
        });
    }
    // Then written.
    t.push(&Poll {
        desired: Some(4),
        current: Some(1),
        action: Some(Action { from: 1, to: 4 }),
        reason: "signal: backlog 80 / 20 per replica -> 4".into(),
        ..poll(T0 + 5.0)
    });
    // Then steady: nothing to record.
    t.push(&Poll {
        desired: Some(4),
        current: Some(4),
        ..poll(T0 + 6.0)
    });
    let h = t.view("a");
    assert_eq!(h.events.len(), 2, "{:?}", h.events);
    assert_eq!(
        (h.events[0].from, h.events[0].to, h.events[0].acted),
        (1, 3, false)
    );
    assert_eq!(
        h.events[0].reason,
        "signal: backlog 60 / 20 per replica -> 3"
    );
    assert_eq!(
        (h.events[1].from, h.events[1].to, h.events[1].acted),
        (1, 4, true)
    );
    assert!(h.points[5].acted && !h.points[4].acted);

    // Only the newest EVENTS are kept, and a long reason is cut.
    let long = "é".repeat(REASON_BYTES);
    for i in 0..(EVENTS as u32 + 5) {
        t.push(&Poll {
            desired: Some(10 + i),
            current: Some(4),
            action: Some(Action {
                from: 4,
                to: 10 + i,
            }),
            reason: long.clone(),
            ..poll(T0 + 10.0 + f64::from(i))
        });
    }
    let h = t.view("a");
    assert_eq!(h.events.len(), EVENTS);
    assert_eq!(h.events.last().map(|e| e.to), Some(10 + EVENTS as u32 + 4));
    let r = &h.events[0].reason;
    assert!(r.ends_with('…'));
    assert!(r.len() <= REASON_BYTES + '…'.len_utf8());
    assert!(t.heap_bytes() <= Timeline::max_bytes());
}

#[test]
fn a_clock_set_back_keeps_the_history_ordered_and_bounded() {
    let mut t = Timeline::new();
    for i in 0..2000u64 {
        // Every 500 polls the wall clock jumps back ten minutes.
        let at = T0 + i as f64 - 600.0 * (i / 500) as f64;
        t.push(&poll(at));
    }
    let h = t.view("a");
    assert!(h.points.len() <= FULL_POINTS);
    assert!(h.buckets.len() <= BUCKETS);
    for w in h.buckets.windows(2) {
        assert!(w[0].start < w[1].start, "buckets in order");
    }
    let polls: u32 = h.buckets.iter().map(|b| b.polls).sum();
    assert_eq!(
        polls as usize + h.points.len(),
        2000,
        "no poll lost or counted twice"
    );
}

#[test]
fn poll_times_stay_exact_to_the_millisecond_however_long_the_timeline_runs() {
    // Points store their time as an f32 offset; a day of polls at odd
    // fractions of a second crosses many re-bases.
    let mut t = Timeline::new();
    for i in 0..86_400u64 {
        t.push(&poll(T0 + i as f64 * 1.001 + 0.123));
    }
    let h = t.view("x");
    assert_eq!(h.points.len(), FULL_POINTS);
    for (k, p) in h.points.iter().enumerate() {
        let i = (86_400 - FULL_POINTS + k) as f64;
        let want = ((T0 + i * 1.001 + 0.123) * 1000.0).round() / 1000.0;
        assert!((p.at - want).abs() < 0.0015, "{} vs {want}", p.at);
    }
    // A clock set back by a year still keeps the newest poll's time.
    t.push(&poll(T0 - 365.0 * 86_400.0));
    let last = t.view("x").points.last().map(|p| p.at);
    assert_eq!(last, Some(T0 - 365.0 * 86_400.0));
}
