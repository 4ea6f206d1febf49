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
pub mod http_client;
pub mod nats;
pub mod postgres;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod secret;
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
    /// A RabbitMQ queue (AMQP passive declare; the management API adds
    /// in-flight, arrival rate and age).
    Rabbitmq(rabbitmq::RabbitmqSourceConfig),
    /// A Redis list (`LLEN`) or stream consumer group (`XINFO GROUPS`).
    Redis(redis::RedisSourceConfig),
    /// A NATS JetStream durable consumer.
    Nats(nats::NatsSourceConfig),
    /// A read-only SQL query over a database-backed job queue.
    Postgres(postgres::PostgresSourceConfig),
    /// Instant PromQL queries.
    Prometheus(prometheus::PrometheusSourceConfig),
}

impl SourceConfig {
    /// The config tag, also the `source` metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Sqs(_) => "sqs",
            SourceConfig::Demo(_) => "demo",
            SourceConfig::Rabbitmq(_) => "rabbitmq",
            SourceConfig::Redis(_) => "redis",
            SourceConfig::Nats(_) => "nats",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Prometheus(_) => "prometheus",
        }
    }

    /// What this source can measure as configured.
    pub fn capabilities(&self) -> Capabilities {
        match self {
            SourceConfig::Sqs(c) => c.capabilities(),
            SourceConfig::Demo(c) => c.capabilities(),
            SourceConfig::Rabbitmq(c) => c.capabilities(),
            SourceConfig::Redis(c) => c.capabilities(),
            SourceConfig::Nats(c) => c.capabilities(),
            SourceConfig::Postgres(c) => c.capabilities(),
            SourceConfig::Prometheus(c) => c.capabilities(),
        }
    }

    /// Add every problem of this table to `p`, under `path`.
    pub fn validate(&self, path: &str, p: &mut Problems) {
        match self {
            SourceConfig::Sqs(c) => c.validate(path, p),
            SourceConfig::Demo(c) => c.validate(path, p),
            SourceConfig::Rabbitmq(c) => c.validate(path, p),
            SourceConfig::Redis(c) => c.validate(path, p),
            SourceConfig::Nats(c) => c.validate(path, p),
            SourceConfig::Postgres(c) => c.validate(path, p),
            SourceConfig::Prometheus(c) => c.validate(path, p),
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
            // Broker sources connect on their first poll, so a broker that is
            // down at start-up is an ordinary failed sample, retried each poll.
            SourceConfig::Rabbitmq(c) => {
                Ok(Arc::new(rabbitmq::RabbitmqSource::new(c.clone(), timeout)))
            }
            SourceConfig::Redis(c) => Ok(Arc::new(redis::RedisSource::new(c.clone(), timeout))),
            SourceConfig::Nats(c) => Ok(Arc::new(nats::NatsSource::new(c.clone(), timeout))),
            SourceConfig::Postgres(c) => {
                Ok(Arc::new(postgres::PostgresSource::new(c.clone(), timeout)))
            }
            SourceConfig::Prometheus(c) => Ok(Arc::new(prometheus::PrometheusSource::new(
                c.clone(),
                timeout,
            ))),
        }
    }

    /// A one-line description for `qscale check`.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Sqs(c) => c.describe(),
            SourceConfig::Demo(c) => c.describe(),
            SourceConfig::Rabbitmq(c) => c.describe(),
            SourceConfig::Redis(c) => c.describe(),
            SourceConfig::Nats(c) => c.describe(),
            SourceConfig::Postgres(c) => c.describe(),
            SourceConfig::Prometheus(c) => c.describe(),
        }
    }
}

/// A message count from a number a query returned (PostgreSQL, PromQL):
/// finite and not negative, fractions rounded up (scaling on a little too
/// much beats scaling on too little). `what` names the value in errors.
pub fn count_from_f64(v: f64, what: &str) -> Result<u64, SourceError> {
    if !v.is_finite() {
        return Err(SourceError::InvalidResponse(format!(
            "{what} is {v}, not a finite number"
        )));
    }
    if v < 0.0 {
        return Err(SourceError::InvalidResponse(format!(
            "{what} is negative ({v})"
        )));
    }
    let c = v.ceil();
    if c >= u64::MAX as f64 {
        return Err(SourceError::InvalidResponse(format!(
            "{what} is too large ({v})"
        )));
    }
    Ok(c as u64)
}

/// A non-negative, finite number of seconds or a rate; `what` names it.
pub fn non_negative(v: f64, what: &str) -> Result<f64, SourceError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(SourceError::InvalidResponse(format!(
            "{what} is {v}; expected a finite number >= 0"
        )))
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
    fn every_error_label_is_in_metric_labels_and_nothing_else_is() {
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
    fn count_from_f64_table() {
        let cases: [(f64, Result<u64, &str>); 8] = [
            (0.0, Ok(0)),
            (7.0, Ok(7)),
            (2.2, Ok(3)),
            (-0.0, Ok(0)),
            (-1.0, Err("negative")),
            (f64::NAN, Err("not a finite number")),
            (f64::INFINITY, Err("not a finite number")),
            (1e30, Err("too large")),
        ];
        for (v, want) in cases {
            match (count_from_f64(v, "visible"), want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{v}"),
                (Err(e), Err(w)) => {
                    assert_eq!(e.metric_label(), "invalid_response");
                    assert!(e.to_string().contains(w), "{v}: {e}");
                    assert!(e.to_string().contains("visible"), "{e}");
                }
                (g, w) => panic!("{v}: got {g:?}, want {w:?}"),
            }
        }
        assert!(non_negative(1.5, "rate").is_ok());
        assert!(non_negative(-1.0, "rate").is_err());
        assert!(non_negative(f64::NAN, "rate").is_err());
    }
}
