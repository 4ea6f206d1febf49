//! The contract between the layers: what a source measures, what a target
//! holds, and the two traits every source and target implements.
//!
//! The pure policy reads a [`Sample`] and a [`Replicas`]; the control loop
//! drives a [`QueueSource`] and a [`ScaleTarget`] and counts their
//! [`SourceError`] and [`TargetError`] by a bounded label. Keeping these
//! types here, below both the policy and the adapters, means the policy
//! never depends on a client library and a source never depends on a
//! target. This module imports nothing from the rest of the crate.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Serialize;

/// What one poll saw. Every field is optional except `at`: a source fills
/// what it can measure, and a missing signal never causes a scale-down.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Wall-clock time the sample was taken (for display only; the policy
    /// uses monotonic time).
    #[serde(with = "unix_seconds")]
    pub at: SystemTime,
    /// Messages ready to be received.
    pub visible: Option<u64>,
    /// Messages received but not yet acknowledged or deleted.
    pub in_flight: Option<u64>,
    /// Messages not yet visible (delayed delivery).
    pub delayed: Option<u64>,
    /// Age of the oldest waiting message.
    #[serde(rename = "oldest_age_seconds", with = "opt_seconds")]
    pub oldest_age: Option<Duration>,
    /// Messages per second entering the queue.
    pub arrival_rate: Option<f64>,
    /// Consumers the broker sees.
    pub consumers: Option<u32>,
    /// Messages in the dead-letter queue, configured or discovered from the
    /// queue's own settings. Exported, and its growth is the dead-letter
    /// arrival rate; never a backlog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<u64>,
    /// The dead-letter queue(s) `dead_letter` counts, by name, and whether
    /// they were configured or discovered (e.g. "jobs-dlq (discovered from
    /// RedrivePolicy)").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue: Option<String>,
    /// How long a received message stays invisible to other consumers (SQS
    /// `VisibilityTimeout`): a message worked on longer is delivered again.
    #[serde(
        rename = "visibility_timeout_seconds",
        with = "opt_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub visibility_timeout: Option<Duration>,
    /// Receives after which the broker moves a message to the dead-letter
    /// queue (SQS `maxReceiveCount` of the `RedrivePolicy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_receive_count: Option<u32>,
    /// Caveats about what this source cannot see, shown in /status
    /// (e.g. "AMQP alone cannot see unacknowledged messages").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Sample {
    /// An empty sample taken now: every measurement unknown.
    pub fn empty(at: SystemTime) -> Sample {
        Sample {
            at,
            visible: None,
            in_flight: None,
            delayed: None,
            oldest_age: None,
            arrival_rate: None,
            consumers: None,
            dead_letter: None,
            dead_letter_queue: None,
            visibility_timeout: None,
            max_receive_count: None,
            notes: Vec::new(),
        }
    }
}

/// Which measurements a source can provide at all with its configuration;
/// used by validation (an age signal needs a source that can measure age).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub oldest_age: bool,
    pub arrival_rate: bool,
    pub in_flight: bool,
    pub delayed: bool,
    /// Count in-flight messages as backlog (the source's `count_in_flight`).
    pub count_in_flight: bool,
    /// Count delayed messages as backlog (the source's `count_delayed`).
    pub count_delayed: bool,
}

impl Capabilities {
    /// Nothing measurable: what a scaler without a source can see.
    pub fn none() -> Capabilities {
        Capabilities {
            oldest_age: false,
            arrival_rate: false,
            in_flight: false,
            delayed: false,
            count_in_flight: false,
            count_delayed: false,
        }
    }
}

/// A queue that can be sampled.
#[async_trait]
pub trait QueueSource: Send + Sync {
    /// Equal to the source's config tag; used as the `source` metric label.
    fn kind(&self) -> &'static str;
    /// Take one sample. Implementations bound their own network calls.
    async fn sample(&self) -> Result<Sample, SourceError>;
    /// Whether the ages and rates of this source's samples are measured on
    /// the daemon's clock (the simulated demo world) rather than the wall
    /// clock. Under `--time-scale` the daemon converts wall-clock ones to
    /// its virtual time and leaves these as they are.
    fn on_daemon_clock(&self) -> bool {
        false
    }
}

/// Why a sample failed. The text is one line that says what to fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SourceError {
    #[error("throttled by the queue's API: {0}")]
    Throttled(String),
    #[error("access denied: {0}; check the credentials and their permissions")]
    AccessDenied(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("timed out after {0:?}: the endpoint did not answer in time")]
    Timeout(Duration),
    #[error("endpoint unavailable: {0}")]
    Unavailable(String),
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    #[error("misconfigured: {0}")]
    Config(String),
}

impl SourceError {
    /// Every value [`SourceError::metric_label`] returns: the `error` label
    /// set of `qscale_source_errors_total`, whose series start at 0 when a
    /// scaler starts (so `increase(...) > 0` sees the first error). A test
    /// checks that every variant's label is here.
    pub const METRIC_LABELS: &'static [&'static str] = &[
        "throttled",
        "access_denied",
        "not_found",
        "timeout",
        "unavailable",
        "invalid_response",
        "config",
    ];

    /// The bounded `error` label of `qscale_source_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SourceError::Throttled(_) => "throttled",
            SourceError::AccessDenied(_) => "access_denied",
            SourceError::NotFound(_) => "not_found",
            SourceError::Timeout(_) => "timeout",
            SourceError::Unavailable(_) => "unavailable",
            SourceError::InvalidResponse(_) => "invalid_response",
            SourceError::Config(_) => "config",
        }
    }
}

/// The replica state of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Replicas {
    /// What the target is asked to run (`spec.replicas`, ECS `desiredCount`).
    pub desired: u32,
    /// How many are ready/running, when the target reports it.
    pub ready: Option<u32>,
}

impl Replicas {
    pub fn new(desired: u32, ready: Option<u32>) -> Replicas {
        Replicas { desired, ready }
    }
}

/// Something whose replica count qscale can read and set.
#[async_trait]
pub trait ScaleTarget: Send + Sync {
    /// Equal to the target's config tag; the `target` metric label.
    fn kind(&self) -> &'static str;
    /// Read the current replica state.
    async fn current(&self) -> Result<Replicas, TargetError>;
    /// Ask for `n` replicas.
    async fn set_replicas(&self, n: u32) -> Result<(), TargetError>;
    /// Whether the target itself asks qscale to pause (for Kubernetes, the
    /// `qscale.io/paused: "true"` annotation). Targets without such a
    /// switch are never paused by it.
    async fn paused(&self) -> Result<bool, TargetError> {
        Ok(false)
    }
    /// Other autoscalers that also resize this target (for Kubernetes, HPAs
    /// and KEDA ScaledObjects), one warning line each. Two controllers
    /// fighting over one replica count is the most common production
    /// mistake, so the daemon logs these loudly at start.
    async fn conflicts(&self) -> Result<Vec<String>, TargetError> {
        Ok(vec![])
    }
}

/// Why reading or writing a target failed. One line that says what to fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TargetError {
    #[error("conflict: {0}")]
    Conflict(String),
    /// The message names the missing permission and how to grant it.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("throttled by the API: {0}")]
    Throttled(String),
    #[error(
        "timed out after {0:?}, retries included: check that the API answers, or raise \
         defaults.actuate_timeout"
    )]
    Timeout(Duration),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

impl TargetError {
    /// Every value [`TargetError::metric_label`] returns: the `error` label
    /// set of `qscale_target_errors_total`, whose series start at 0 when a
    /// scaler starts. A test checks that every variant's label is here.
    pub const METRIC_LABELS: &'static [&'static str] = &[
        "conflict",
        "forbidden",
        "not_found",
        "throttled",
        "timeout",
        "unavailable",
        "invalid",
    ];

    /// The bounded `error` label of `qscale_target_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TargetError::Conflict(_) => "conflict",
            TargetError::Forbidden(_) => "forbidden",
            TargetError::NotFound(_) => "not_found",
            TargetError::Throttled(_) => "throttled",
            TargetError::Timeout(_) => "timeout",
            TargetError::Unavailable(_) => "unavailable",
            TargetError::Invalid(_) => "invalid",
        }
    }
}

/// Serialize `SystemTime` as fractional Unix seconds.
mod unix_seconds {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        s.serialize_f64(secs)
    }
}

/// Serialize `Option<Duration>` as fractional seconds or null.
mod opt_seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_error_label_is_in_metric_labels_and_nothing_else_is() {
        let all = [
            SourceError::Throttled(String::new()),
            SourceError::AccessDenied(String::new()),
            SourceError::NotFound(String::new()),
            SourceError::Timeout(Duration::ZERO),
            SourceError::Unavailable(String::new()),
            SourceError::InvalidResponse(String::new()),
            SourceError::Config(String::new()),
        ];
        let mut labels = std::collections::BTreeSet::new();
        for e in &all {
            // A new variant stops this match from compiling: add it to `all`
            // above and its label to METRIC_LABELS.
            match e {
                SourceError::Throttled(_)
                | SourceError::AccessDenied(_)
                | SourceError::NotFound(_)
                | SourceError::Timeout(_)
                | SourceError::Unavailable(_)
                | SourceError::InvalidResponse(_)
                | SourceError::Config(_) => {}
            }
            assert!(
                SourceError::METRIC_LABELS.contains(&e.metric_label()),
                "{e:?}"
            );
            labels.insert(e.metric_label());
        }
        assert_eq!(labels.len(), SourceError::METRIC_LABELS.len());
    }

    #[test]
    fn every_target_error_label_is_in_metric_labels_and_nothing_else_is() {
        let all = [
            TargetError::Conflict(String::new()),
            TargetError::Forbidden(String::new()),
            TargetError::NotFound(String::new()),
            TargetError::Throttled(String::new()),
            TargetError::Timeout(Duration::ZERO),
            TargetError::Unavailable(String::new()),
            TargetError::Invalid(String::new()),
        ];
        let mut labels = std::collections::BTreeSet::new();
        for e in &all {
            // A new variant stops this match from compiling: add it to `all`
            // above and its label to METRIC_LABELS.
            match e {
                TargetError::Conflict(_)
                | TargetError::Forbidden(_)
                | TargetError::NotFound(_)
                | TargetError::Throttled(_)
                | TargetError::Timeout(_)
                | TargetError::Unavailable(_)
                | TargetError::Invalid(_) => {}
            }
            assert!(
                TargetError::METRIC_LABELS.contains(&e.metric_label()),
                "{e:?}"
            );
            labels.insert(e.metric_label());
        }
        assert_eq!(labels.len(), TargetError::METRIC_LABELS.len());
    }
}
