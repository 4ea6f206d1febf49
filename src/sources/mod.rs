//! Queue sources: where qscale sees how much work waits.
//!
//! Every source turns one poll of its broker into a [`Sample`]: a set of
//! optional measurements, because no broker measures everything (SQS knows
//! in-flight counts but needs CloudWatch for message age; plain AMQP cannot
//! see unacknowledged messages). A missing measurement stays `None` and the
//! policy treats it as unknown, never as zero, so missing data can never
//! scale workers down.
//!
//! Sources are a closed, serde-tagged enum ([`SourceConfig`]) with one file
//! per variant holding its config, its client and its table tests, so adding
//! a source is a file, a variant and a test table.
//!
//! Shared by the AWS sources: [`aws_error`] maps SDK errors to the bounded
//! [`SourceError`] labels, and [`cloudwatch`] batches CloudWatch reads of
//! all SQS scalers of a region into one call per poll.

pub mod aws_error;
pub mod cloudwatch;
pub mod demo;
pub mod sqs;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::shared::Shared;

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
    /// Messages in the dead-letter queue (exported, never a scaling signal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<u64>,
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

/// A queue that can be sampled.
#[async_trait]
pub trait QueueSource: Send + Sync {
    /// Equal to the source's config tag; used as the `source` metric label.
    fn kind(&self) -> &'static str;
    /// Take one sample. Implementations bound their own network calls.
    async fn sample(&self) -> Result<Sample, SourceError>;
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

/// The `source` table of a scaler; `kind` picks the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Amazon SQS (depth from GetQueueAttributes; age and arrival rate from
    /// CloudWatch).
    Sqs(sqs::SqsSourceConfig),
    /// A simulated queue in real time, filled by an arrival pattern and
    /// drained by a `demo` target with the same `queue` (no cloud needed).
    Demo(demo::DemoSourceConfig),
}

impl SourceConfig {
    /// The config tag, also the `source` metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Sqs(_) => "sqs",
            SourceConfig::Demo(_) => "demo",
        }
    }

    /// What this source can measure as configured.
    pub fn capabilities(&self) -> Capabilities {
        match self {
            SourceConfig::Sqs(c) => c.capabilities(),
            SourceConfig::Demo(c) => c.capabilities(),
        }
    }

    /// Add every problem of this table to `p`, under `path`.
    pub fn validate(&self, path: &str, p: &mut Problems) {
        match self {
            SourceConfig::Sqs(c) => c.validate(path, p),
            SourceConfig::Demo(c) => c.validate(path, p),
        }
    }

    /// Build the source's client. Cheap checks (config, region) fail here;
    /// anything that needs the peer (does the queue exist?) is checked per
    /// sample, so a queue that is missing at startup is a per-poll error
    /// that heals by itself, not a failed start. `timeout` bounds each
    /// sample.
    pub async fn build(
        &self,
        shared: &Shared,
        timeout: Duration,
    ) -> Result<Arc<dyn QueueSource>, SourceError> {
        match self {
            SourceConfig::Sqs(c) => Ok(Arc::new(sqs::SqsSource::build(c, shared, timeout).await?)),
            SourceConfig::Demo(c) => Ok(Arc::new(c.build(&shared.demo)?)),
        }
    }

    /// A one-line description for `qscale check`.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Sqs(c) => c.describe(),
            SourceConfig::Demo(c) => c.describe(),
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
