//! The queue's own settings checked against the work: warnings, not
//! decisions.
//!
//! A queue can be set up so that healthy work misbehaves whatever the
//! replica count: an SQS message worked on longer than the queue's
//! visibility timeout becomes visible again and a second worker takes it;
//! if that happens more often than the redrive policy's `maxReceiveCount`,
//! a message that would have succeeded lands in the dead-letter queue.
//! Scaling cannot fix either, so qscale says what to change instead: in
//! /status, once in the logs, and in `qscale check --online`. The check is
//! pure (the daemon passes the learned or configured seconds per message,
//! `check --online` the configured one), so it lives beside the policy.

use std::time::Duration;

use super::num;

/// One problem with the queue's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingWarning {
    /// What is wrong, stable across polls (for logging a warning once):
    /// `visibility_timeout` or `max_receive_count`.
    pub kind: &'static str,
    /// One line that says what happens and what to change.
    pub message: String,
}

/// What the queue's settings do to messages that take `seconds_per_message`
/// (`learned`: qscale's estimate rather than the configured figure). Empty
/// when the settings or the processing time are unknown.
pub fn queue_setting_warnings(
    visibility_timeout: Option<Duration>,
    max_receive_count: Option<u32>,
    seconds_per_message: Option<f64>,
    learned: bool,
) -> Vec<SettingWarning> {
    let (Some(timeout), Some(s)) = (visibility_timeout, seconds_per_message) else {
        return Vec::new();
    };
    let v = timeout.as_secs_f64();
    if !(s.is_finite() && s > v) {
        return Vec::new();
    }
    let source = if learned {
        "learned seconds_per_message"
    } else {
        "seconds_per_message"
    };
    // Raising the timeout to twice the processing time leaves room for slow
    // messages around the average.
    let suggest = secs(2.0 * s);
    let mut out = vec![SettingWarning {
        kind: "visibility_timeout",
        message: format!(
            "the queue's visibility timeout {} is shorter than the {} s a message takes \
             ({source}): messages still being worked become visible again and are delivered \
             twice; raise the queue's VisibilityTimeout to at least {suggest}, or extend it \
             from the worker (ChangeMessageVisibility)",
            secs(v),
            num(s),
        ),
    }];
    if let Some(max) = max_receive_count
        && v > 0.0
    {
        // Received at 0, V, 2V, ... until the first worker finishes at s.
        let receives = (s / v).ceil();
        if receives > f64::from(max) {
            out.push(SettingWarning {
                kind: "max_receive_count",
                message: format!(
                    "a healthy message that takes {} s is received {} times before its first \
                     worker finishes, more than maxReceiveCount {max}: it is moved to the \
                     dead-letter queue although it would succeed; raise the queue's \
                     VisibilityTimeout to at least {suggest}",
                    num(s),
                    num(receives),
                ),
            });
        }
    }
    out
}

/// A duration as users write it (`45s`, `1m 30s`), whole seconds rounded up.
fn secs(x: f64) -> String {
    let whole = if x.is_finite() && x > 0.0 {
        x.ceil() as u64
    } else {
        0
    };
    humantime::format_duration(Duration::from_secs(whole)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn settings_table() {
        // (visibility timeout, maxReceiveCount, s, kinds warned)
        type Case = (
            Option<Duration>,
            Option<u32>,
            Option<f64>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (d(30), Some(5), Some(10.0), vec![]),
            // Exactly the timeout is fine.
            (d(30), Some(5), Some(30.0), vec![]),
            (d(30), Some(5), Some(45.0), vec!["visibility_timeout"]),
            (
                d(30),
                Some(1),
                Some(45.0),
                vec!["visibility_timeout", "max_receive_count"],
            ),
            (d(30), None, Some(400.0), vec!["visibility_timeout"]),
            (d(0), Some(3), Some(1.0), vec!["visibility_timeout"]),
            (None, Some(3), Some(400.0), vec![]),
            (d(30), Some(3), None, vec![]),
            (d(30), Some(3), Some(f64::NAN), vec![]),
        ];
        for (v, max, s, want) in cases {
            let got: Vec<&str> = queue_setting_warnings(v, max, s, false)
                .iter()
                .map(|w| w.kind)
                .collect();
            assert_eq!(got, want, "{v:?} {max:?} {s:?}");
        }
    }

    #[test]
    fn each_warning_is_one_line_that_says_what_to_change() {
        let w = queue_setting_warnings(d(30), Some(2), Some(100.0), true);
        assert_eq!(
            w[0].message,
            "the queue's visibility timeout 30s is shorter than the 100 s a message takes \
             (learned seconds_per_message): messages still being worked become visible again \
             and are delivered twice; raise the queue's VisibilityTimeout to at least 3m 20s, \
             or extend it from the worker (ChangeMessageVisibility)"
        );
        assert_eq!(
            w[1].message,
            "a healthy message that takes 100 s is received 4 times before its first worker \
             finishes, more than maxReceiveCount 2: it is moved to the dead-letter queue \
             although it would succeed; raise the queue's VisibilityTimeout to at least 3m 20s"
        );
        assert!(w.iter().all(|w| !w.message.contains('\n')));
    }
}
