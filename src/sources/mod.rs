//! Queue sources: where qscale sees how much work waits.
//!
//! Every source turns one poll of its broker into a [`Sample`](crate::contract::Sample): a set of
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
//! What several sources share (the AWS error mapping, the batched
//! CloudWatch reader, secrets, the HTTP client) lives below them, in
//! [`crate::clients`].

pub mod demo;
pub mod nats;
pub mod postgres;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod sqs;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::clients::Clients;
use crate::contract::{Capabilities, QueueSource, SourceError};
use crate::validate::Problems;

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
    /// The variant's own config table, behind the one trait every source
    /// implements. This is the only `match` over the variants: adding a
    /// source is a file, a variant and its arm here.
    pub fn spec(&self) -> &dyn SourceSpec {
        match self {
            SourceConfig::Sqs(c) => c,
            SourceConfig::Demo(c) => c,
            SourceConfig::Rabbitmq(c) => c,
            SourceConfig::Redis(c) => c,
            SourceConfig::Nats(c) => c,
            SourceConfig::Postgres(c) => c,
            SourceConfig::Prometheus(c) => c,
        }
    }

    /// The config tag, also the `source` metric label.
    pub fn kind(&self) -> &'static str {
        self.spec().kind()
    }

    /// What this source can measure as configured.
    pub fn capabilities(&self) -> Capabilities {
        self.spec().capabilities()
    }

    /// Add every problem of this table to `p`, under `path`.
    pub fn validate(&self, path: &str, p: &mut Problems) {
        self.spec().validate(path, p)
    }

    /// Build the source's client (see [`SourceSpec::build`]).
    pub async fn build(
        &self,
        clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn QueueSource>, SourceError> {
        self.spec().build(clients, timeout).await
    }

    /// A one-line description for `qscale check`.
    pub fn describe(&self) -> String {
        self.spec().describe()
    }

    /// The kind and the queue's identity (see [`SourceSpec::identity`]).
    pub fn identity(&self) -> (&'static str, String) {
        (self.kind(), self.spec().identity())
    }
}

/// What every source's config table provides. Each source file implements
/// it beside its serde type, so the source's parsing, validation and
/// client are read in one place.
#[async_trait]
pub trait SourceSpec: Send + Sync {
    /// The config tag (`kind = "..."`), also the `source` metric label.
    fn kind(&self) -> &'static str;

    /// What this source can measure as configured.
    fn capabilities(&self) -> Capabilities;

    /// Add every problem of this table to `p`, under `path`.
    fn validate(&self, path: &str, p: &mut Problems);

    /// A one-line description for `qscale check`.
    fn describe(&self) -> String;

    /// What tells this queue from another of the same kind: two entries of
    /// one scaler's `sources` with the same kind and identity watch the same
    /// queue, and would count its work twice. Compared as given (no peer is
    /// asked), so one queue written two ways is not caught.
    fn identity(&self) -> String;

    /// Build the source's client. Cheap checks (config, region) fail here;
    /// anything that needs the peer (does the queue exist?) is checked per
    /// sample, so a queue that is missing at startup is a per-poll error
    /// that heals by itself, not a failed start. `timeout` bounds each
    /// sample.
    async fn build(
        &self,
        clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn QueueSource>, SourceError>;
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

/// An age a peer gave in seconds (a PostgreSQL column, a PromQL value):
/// finite, not negative and within what a `Duration` holds (about 584
/// billion years); `what` names it in errors. `Duration::from_secs_f64`
/// would panic past that, and the peer's answer must not take qscale down.
pub fn age_from_secs(v: f64, what: &str) -> Result<Duration, SourceError> {
    let v = non_negative(v, what)?;
    Duration::try_from_secs_f64(v).map_err(|_| {
        SourceError::InvalidResponse(format!("{what} is {v} seconds, too large for an age"))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_too_large_for_a_duration_is_refused_not_a_panic() {
        assert_eq!(
            age_from_secs(90.5, "age").unwrap(),
            Duration::from_millis(90_500)
        );
        assert_eq!(age_from_secs(0.0, "age").unwrap(), Duration::ZERO);
        for bad in [1e300, f64::MAX, f64::INFINITY, f64::NAN, -1.0] {
            let e = age_from_secs(bad, "oldest_age_query").unwrap_err();
            assert_eq!(e.metric_label(), "invalid_response", "{bad}");
            assert!(e.to_string().contains("oldest_age_query"), "{e}");
        }
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
