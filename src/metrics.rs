//! Every Prometheus metric qscale exports, registered in one place.
//!
//! The names and labels are a user contract (dashboards and alerts depend on
//! them; see docs/metrics.md), so they live here and nowhere else. Each
//! per-scaler series carries the `scaler` label; when a scaler is removed by
//! a reload its series are removed too, so dashboards do not show ghosts.
//! A measurement a source could not make is *removed* from its gauge rather
//! than set to zero: an absent series is honest, a zero is a lie that alerts
//! and autoscalers downstream would act on.
//!
//! Counters are the opposite: every counter series a scaler can produce from
//! a bounded label set (each error label of its source and target kind, each
//! scale direction) is created at 0 when the scaler starts
//! ([`Metrics::init_scaler`]). A counter that appears only at its first
//! increment is invisible to `increase(...[5m]) > 0` and `rate()` (they need
//! two samples), so the first error would go unseen. The label sets come from
//! [`SourceError::METRIC_LABELS`], [`TargetError::METRIC_LABELS`] and
//! [`ScaleDirection::ALL`].

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::contract::{Sample, SourceError, TargetError};

/// The `direction` label of `qscale_scale_operations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDirection {
    Up,
    Down,
}

impl ScaleDirection {
    pub const ALL: [ScaleDirection; 2] = [ScaleDirection::Up, ScaleDirection::Down];

    /// The direction of a change from `from` to `to` replicas.
    pub fn of(from: u32, to: u32) -> ScaleDirection {
        if to > from {
            ScaleDirection::Up
        } else {
            ScaleDirection::Down
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ScaleDirection::Up => "up",
            ScaleDirection::Down => "down",
        }
    }
}

/// Histogram buckets for poll phases: most calls take milliseconds, a slow
/// cloud API seconds, a timeout tens of seconds.
const PHASE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    pub queue_messages: IntGaugeVec,
    /// Per queue of a scaler with several (`sources`).
    pub queue_backlog: IntGaugeVec,
    pub queue_needed: IntGaugeVec,
    pub oldest_age: GaugeVec,
    pub oldest_age_estimated: GaugeVec,
    pub arrival_rate: GaugeVec,
    pub dead_letter: IntGaugeVec,
    pub dead_letter_rate: GaugeVec,
    pub replicas: IntGaugeVec,
    pub scale_operations: IntCounterVec,
    pub source_errors: IntCounterVec,
    pub target_errors: IntCounterVec,
    pub poll_duration: HistogramVec,
    pub last_success: GaugeVec,
    pub fallback_active: IntGaugeVec,
    pub paused: IntGaugeVec,
    pub leader: IntGauge,
    pub build_info: IntGaugeVec,
    pub config_reload_failures: IntCounter,
}

/// Creating a metric fails only for an invalid name or a duplicate
/// registration, both programming errors caught by the tests of this module.
fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    if let Err(e) = r.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let fgauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let m = Metrics {
            queue_messages: gauge_vec(
                "qscale_queue_messages",
                "Messages in the queue at the last sample, by state.",
                &["scaler", "state"],
            ),
            queue_backlog: gauge_vec(
                "qscale_queue_backlog_messages",
                "Backlog of one queue of a scaler that drains several, at the last decision.",
                &["scaler", "queue"],
            ),
            queue_needed: gauge_vec(
                "qscale_queue_needed_replicas",
                "Replicas one queue of a scaler that drains several asked for at the last decision (its largest signal).",
                &["scaler", "queue"],
            ),
            oldest_age: fgauge_vec(
                "qscale_queue_oldest_message_age_seconds",
                "Age of the oldest waiting message at the last sample.",
                &["scaler"],
            ),
            oldest_age_estimated: fgauge_vec(
                "qscale_queue_oldest_message_age_estimated_seconds",
                "Age of the oldest waiting message as qscale estimated it from the queue's history, when the source did not measure it.",
                &["scaler"],
            ),
            arrival_rate: fgauge_vec(
                "qscale_queue_arrival_rate",
                "Messages per second entering the queue (measured or estimated).",
                &["scaler"],
            ),
            dead_letter: gauge_vec(
                "qscale_dead_letter_messages",
                "Messages in the dead-letter queue, configured or discovered (never a backlog).",
                &["scaler"],
            ),
            dead_letter_rate: fgauge_vec(
                "qscale_dead_letter_arrival_rate",
                "Messages per second arriving in the dead-letter queue (its net growth over the last 2 minutes).",
                &["scaler"],
            ),
            replicas: gauge_vec(
                "qscale_replicas",
                "Replicas of the target: current (asked for), ready, and desired (qscale's decision).",
                &["scaler", "kind"],
            ),
            scale_operations: counter_vec(
                "qscale_scale_operations_total",
                "Replica changes qscale made.",
                &["scaler", "direction"],
            ),
            source_errors: counter_vec(
                "qscale_source_errors_total",
                "Failed samples, by source kind and bounded error label.",
                &["scaler", "source", "error"],
            ),
            target_errors: counter_vec(
                "qscale_target_errors_total",
                "Failed target reads or writes, by target kind and bounded error label.",
                &["scaler", "target", "error"],
            ),
            poll_duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "qscale_poll_duration_seconds",
                        "Time spent in each phase of a poll.",
                    )
                    .buckets(PHASE_BUCKETS.to_vec()),
                    &["scaler", "phase"],
                )
                .expect("valid metric"),
            ),
            last_success: fgauge_vec(
                "qscale_last_successful_poll_timestamp_seconds",
                "Unix time of the last poll whose sample and target read succeeded.",
                &["scaler"],
            ),
            fallback_active: gauge_vec(
                "qscale_fallback_active",
                "1 while the fallback is in force after repeated failed or stale samples.",
                &["scaler"],
            ),
            paused: gauge_vec(
                "qscale_paused",
                "1 while the scaler is paused (config or qscale.io/paused annotation).",
                &["scaler"],
            ),
            leader: reg(
                &r,
                IntGauge::new("qscale_leader", "1 while this process may actuate.")
                    .expect("valid metric"),
            ),
            build_info: gauge_vec(
                "qscale_build_info",
                "Always 1; the version label.",
                &["version"],
            ),
            config_reload_failures: reg(
                &r,
                IntCounter::new(
                    "qscale_config_reload_failures_total",
                    "Config reloads rejected because the new file was invalid.",
                )
                .expect("valid metric"),
            ),
            registry: r,
        };
        m.build_info.with_label_values(&[crate::VERSION]).set(1);
        m
    }

    /// Record what a sample saw; unmeasured values are removed, not zeroed.
    pub fn record_sample(&self, scaler: &str, s: &Sample) {
        for (state, v) in [
            ("visible", s.visible),
            ("in_flight", s.in_flight),
            ("delayed", s.delayed),
        ] {
            set_or_remove_int(&self.queue_messages, &[scaler, state], v);
        }
        set_or_remove_f64(
            &self.oldest_age,
            &[scaler],
            s.oldest_age.map(|d| d.as_secs_f64()),
        );
        set_or_remove_int(&self.dead_letter, &[scaler], s.dead_letter);
    }

    /// Create at 0 the counter series a scaler can produce: every error
    /// label of its source and target kind and both scale directions, and
    /// the last-success timestamp at 0 ("never", so a scaler that never
    /// succeeds is stale to the alert, not absent). Existing series keep
    /// their values, so calling this again (a restart on reload) is harmless.
    pub fn init_scaler(&self, scaler: &str, source_kind: &str, target_kind: &str) {
        for d in ScaleDirection::ALL {
            self.scale_operations
                .with_label_values(&[scaler, d.label()]);
        }
        self.init_source_kind(scaler, source_kind);
        for e in TargetError::METRIC_LABELS {
            self.target_errors
                .with_label_values(&[scaler, target_kind, e]);
        }
        self.last_success.with_label_values(&[scaler]);
    }

    /// Create at 0 a scaler's error series of one more source kind (a
    /// scaler whose queues are of several kinds).
    pub fn init_source_kind(&self, scaler: &str, source_kind: &str) {
        for e in SourceError::METRIC_LABELS {
            self.source_errors
                .with_label_values(&[scaler, source_kind, e]);
        }
    }

    /// Remove a scaler's error series of a source kind it no longer has
    /// (a reload changed `source.kind`).
    pub fn remove_source_kind(&self, scaler: &str, source_kind: &str) {
        for e in SourceError::METRIC_LABELS {
            let _ = self
                .source_errors
                .remove_label_values(&[scaler, source_kind, e]);
        }
    }

    /// Remove a scaler's error series of a target kind it no longer has.
    pub fn remove_target_kind(&self, scaler: &str, target_kind: &str) {
        for e in TargetError::METRIC_LABELS {
            let _ = self
                .target_errors
                .remove_label_values(&[scaler, target_kind, e]);
        }
    }

    /// Record what one queue of a scaler with several had and asked for;
    /// unknown values are removed, not zeroed.
    pub fn record_queue(
        &self,
        scaler: &str,
        queue: &str,
        backlog: Option<u64>,
        needed: Option<u32>,
    ) {
        set_or_remove_int(&self.queue_backlog, &[scaler, queue], backlog);
        set_or_remove_int(&self.queue_needed, &[scaler, queue], needed.map(u64::from));
    }

    /// Remove a scaler's per-queue series of every queue not in `keep` (a
    /// reload renamed or dropped a queue; `&[]` removes them all).
    pub fn remove_queues(&self, scaler: &str, keep: &[&str]) {
        for vec in [&self.queue_backlog, &self.queue_needed] {
            let name = vec.desc()[0].fq_name.clone();
            let families = self.registry.gather();
            for fam in families.iter().filter(|f| f.name() == name) {
                for m in fam.get_metric() {
                    let get = |k: &str| {
                        m.get_label()
                            .iter()
                            .find(|l| l.name() == k)
                            .map(|l| l.value().to_string())
                    };
                    if get("scaler").as_deref() == Some(scaler)
                        && let Some(q) = get("queue")
                        && !keep.contains(&q.as_str())
                    {
                        let _ = vec.remove_label_values(&[scaler, &q]);
                    }
                }
            }
        }
    }

    /// Forget every series of a scaler (after it was removed by a reload).
    pub fn remove_scaler(&self, scaler: &str) {
        self.remove_queues(scaler, &[]);
        for state in ["visible", "in_flight", "delayed"] {
            let _ = self.queue_messages.remove_label_values(&[scaler, state]);
        }
        let _ = self.oldest_age.remove_label_values(&[scaler]);
        let _ = self.oldest_age_estimated.remove_label_values(&[scaler]);
        let _ = self.arrival_rate.remove_label_values(&[scaler]);
        let _ = self.dead_letter.remove_label_values(&[scaler]);
        let _ = self.dead_letter_rate.remove_label_values(&[scaler]);
        for kind in ["current", "ready", "desired"] {
            let _ = self.replicas.remove_label_values(&[scaler, kind]);
        }
        for d in ScaleDirection::ALL {
            let _ = self
                .scale_operations
                .remove_label_values(&[scaler, d.label()]);
        }
        for phase in ["sample", "decide", "actuate"] {
            let _ = self.poll_duration.remove_label_values(&[scaler, phase]);
        }
        let _ = self.last_success.remove_label_values(&[scaler]);
        let _ = self.fallback_active.remove_label_values(&[scaler]);
        let _ = self.paused.remove_label_values(&[scaler]);
        // Error counters carry extra labels; remove every combination.
        for (vec, label) in [
            (&self.source_errors, "source"),
            (&self.target_errors, "target"),
        ] {
            let families = self.registry.gather();
            let name = vec.desc()[0].fq_name.clone();
            for fam in families.iter().filter(|f| f.name() == name) {
                for m in fam.get_metric() {
                    let labels: Vec<(&str, &str)> = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name(), l.value()))
                        .collect();
                    let get = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
                    if get("scaler") == Some(scaler)
                        && let (Some(kind), Some(err)) = (get(label), get("error"))
                    {
                        let _ = vec.remove_label_values(&[scaler, kind, err]);
                    }
                }
            }
        }
    }

    /// The text exposition format for /metrics.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn set_or_remove_int(g: &IntGaugeVec, labels: &[&str], v: Option<u64>) {
    match v {
        Some(v) => g
            .with_label_values(labels)
            .set(i64::try_from(v).unwrap_or(i64::MAX)),
        None => {
            let _ = g.remove_label_values(labels);
        }
    }
}

/// Set a float gauge, or remove the series when the value is unknown.
pub fn set_or_remove_f64(g: &GaugeVec, labels: &[&str], v: Option<f64>) {
    match v {
        Some(v) if v.is_finite() => g.with_label_values(labels).set(v),
        _ => {
            let _ = g.remove_label_values(labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn every_documented_metric_name_is_exported() {
        let m = Metrics::new();
        let s = Sample {
            visible: Some(3),
            in_flight: Some(1),
            delayed: Some(0),
            oldest_age: Some(Duration::from_secs(7)),
            ..Sample::empty(SystemTime::now())
        };
        m.record_sample("a", &s);
        m.arrival_rate.with_label_values(&["a"]).set(1.5);
        m.replicas.with_label_values(&["a", "current"]).set(2);
        m.scale_operations.with_label_values(&["a", "up"]).inc();
        m.source_errors
            .with_label_values(&["a", "sqs", "timeout"])
            .inc();
        m.target_errors
            .with_label_values(&["a", "kubernetes", "conflict"])
            .inc();
        m.poll_duration
            .with_label_values(&["a", "sample"])
            .observe(0.01);
        m.last_success.with_label_values(&["a"]).set(1.0);
        m.fallback_active.with_label_values(&["a"]).set(0);
        m.paused.with_label_values(&["a"]).set(0);
        m.dead_letter.with_label_values(&["a"]).set(0);
        m.dead_letter_rate.with_label_values(&["a"]).set(0.25);
        m.leader.set(1);
        m.config_reload_failures.inc();
        let text = m.render();
        for name in [
            "qscale_queue_messages{scaler=\"a\",state=\"visible\"} 3",
            "qscale_queue_oldest_message_age_seconds{scaler=\"a\"} 7",
            "qscale_queue_arrival_rate{scaler=\"a\"} 1.5",
            "qscale_replicas{kind=\"current\",scaler=\"a\"} 2",
            "qscale_scale_operations_total{direction=\"up\",scaler=\"a\"} 1",
            "qscale_source_errors_total{error=\"timeout\",scaler=\"a\",source=\"sqs\"} 1",
            "qscale_target_errors_total{error=\"conflict\",scaler=\"a\",target=\"kubernetes\"} 1",
            "qscale_poll_duration_seconds_bucket",
            "qscale_last_successful_poll_timestamp_seconds{scaler=\"a\"} 1",
            "qscale_fallback_active{scaler=\"a\"} 0",
            "qscale_paused{scaler=\"a\"} 0",
            "qscale_dead_letter_messages{scaler=\"a\"} 0",
            "qscale_dead_letter_arrival_rate{scaler=\"a\"} 0.25",
            "qscale_leader 1",
            "qscale_config_reload_failures_total 1",
            "qscale_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn an_unmeasured_value_is_removed_not_zeroed() {
        let m = Metrics::new();
        let mut s = Sample {
            visible: Some(3),
            oldest_age: Some(Duration::from_secs(7)),
            ..Sample::empty(SystemTime::now())
        };
        m.record_sample("a", &s);
        s.oldest_age = None;
        m.record_sample("a", &s);
        let text = m.render();
        assert!(
            !text.contains("qscale_queue_oldest_message_age_seconds{"),
            "{text}"
        );
        assert!(!text.contains("state=\"in_flight\""), "{text}");
    }

    #[test]
    fn a_started_scaler_has_every_bounded_counter_series_at_zero() {
        let m = Metrics::new();
        m.init_scaler("a", "sqs", "kubernetes");
        let text = m.render();
        for e in SourceError::METRIC_LABELS {
            let line = format!(
                "qscale_source_errors_total{{error=\"{e}\",scaler=\"a\",source=\"sqs\"}} 0\n"
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        for e in TargetError::METRIC_LABELS {
            let line = format!(
                "qscale_target_errors_total{{error=\"{e}\",scaler=\"a\",target=\"kubernetes\"}} 0\n"
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        for d in ["up", "down"] {
            let line =
                format!("qscale_scale_operations_total{{direction=\"{d}\",scaler=\"a\"}} 0\n");
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        assert!(text.contains("qscale_last_successful_poll_timestamp_seconds{scaler=\"a\"} 0\n"));
        // Starting again (a restart on reload) keeps what was counted.
        m.source_errors
            .with_label_values(&["a", "sqs", "timeout"])
            .inc();
        m.last_success.with_label_values(&["a"]).set(5.0);
        m.init_scaler("a", "sqs", "kubernetes");
        let text = m.render();
        assert!(text.contains(
            "qscale_source_errors_total{error=\"timeout\",scaler=\"a\",source=\"sqs\"} 1\n"
        ));
        assert!(text.contains("qscale_last_successful_poll_timestamp_seconds{scaler=\"a\"} 5\n"));
    }

    #[test]
    fn a_changed_kind_drops_the_old_kinds_series_only() {
        let m = Metrics::new();
        m.init_scaler("a", "sqs", "kubernetes");
        m.init_scaler("b", "sqs", "kubernetes");
        m.remove_source_kind("a", "sqs");
        m.remove_target_kind("a", "kubernetes");
        m.init_scaler("a", "redis", "ecs");
        let text = m.render();
        assert!(!text.contains("scaler=\"a\",source=\"sqs\""), "{text}");
        assert!(
            !text.contains("scaler=\"a\",target=\"kubernetes\""),
            "{text}"
        );
        assert!(text.contains("scaler=\"a\",source=\"redis\""), "{text}");
        assert!(text.contains("scaler=\"a\",target=\"ecs\""), "{text}");
        assert!(text.contains("scaler=\"b\",source=\"sqs\""), "{text}");
    }

    #[test]
    fn scale_directions_label_every_change() {
        assert_eq!(ScaleDirection::of(1, 3).label(), "up");
        assert_eq!(ScaleDirection::of(3, 1).label(), "down");
        let labels: Vec<&str> = ScaleDirection::ALL.iter().map(|d| d.label()).collect();
        assert_eq!(labels, ["up", "down"]);
    }

    #[test]
    fn removing_a_scaler_removes_all_its_series() {
        let m = Metrics::new();
        m.record_sample(
            "gone",
            &Sample {
                visible: Some(1),
                ..Sample::empty(SystemTime::now())
            },
        );
        m.source_errors
            .with_label_values(&["gone", "sqs", "timeout"])
            .inc();
        m.init_scaler("gone", "sqs", "kubernetes");
        m.init_scaler("kept", "sqs", "kubernetes");
        m.dead_letter_rate.with_label_values(&["gone"]).set(1.0);
        m.replicas.with_label_values(&["kept", "current"]).set(1);
        m.remove_scaler("gone");
        let text = m.render();
        assert!(!text.contains("scaler=\"gone\""), "{text}");
        assert!(text.contains("scaler=\"kept\""), "{text}");
    }

    #[test]
    fn per_queue_series_follow_the_configured_queues_and_go_with_the_scaler() {
        let m = Metrics::new();
        m.record_queue("pool", "critical", Some(40), Some(4));
        m.record_queue("pool", "bulk", Some(300), Some(6));
        m.record_queue("other", "bulk", Some(1), Some(1));
        let text = m.render();
        assert!(
            text.contains("qscale_queue_backlog_messages{queue=\"critical\",scaler=\"pool\"} 40\n"),
            "{text}"
        );
        assert!(
            text.contains("qscale_queue_needed_replicas{queue=\"bulk\",scaler=\"pool\"} 6\n"),
            "{text}"
        );
        // Unknown is absent, never zero.
        m.record_queue("pool", "bulk", None, None);
        assert!(!m.render().contains("queue=\"bulk\",scaler=\"pool\""));
        // A reload that drops a queue drops its series, and only its own.
        m.remove_queues("pool", &["bulk"]);
        let text = m.render();
        assert!(!text.contains("queue=\"critical\""), "{text}");
        assert!(text.contains("queue=\"bulk\",scaler=\"other\""), "{text}");
        m.remove_scaler("other");
        assert!(!m.render().contains("qscale_queue_backlog_messages{"));
    }
}
