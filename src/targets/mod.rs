//! Scale targets: what qscale resizes.
//!
//! A target reports its current replica count (what it was asked for, and
//! how many are ready) and accepts a new one. Targets are a closed,
//! serde-tagged enum ([`TargetConfig`]) with one file per variant.

pub mod demo;
pub mod ecs;
pub mod kubernetes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::shared::Shared;

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

/// The `target` table of a scaler; `kind` picks the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetConfig {
    /// A Kubernetes object with a `/scale` subresource (Deployment,
    /// StatefulSet, Argo Rollout, ...).
    Kubernetes(kubernetes::KubernetesTargetConfig),
    /// An Amazon ECS service.
    Ecs(ecs::EcsTargetConfig),
    /// Simulated workers that drain the `demo` source's queue with the same
    /// `queue` name (no cloud needed).
    Demo(demo::DemoTargetConfig),
}

impl TargetConfig {
    /// The config tag, also the `target` metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Kubernetes(_) => "kubernetes",
            TargetConfig::Ecs(_) => "ecs",
            TargetConfig::Demo(_) => "demo",
        }
    }

    /// Decide and report, never write.
    pub fn dry_run(&self) -> bool {
        match self {
            TargetConfig::Kubernetes(c) => c.dry_run,
            TargetConfig::Ecs(c) => c.dry_run,
            TargetConfig::Demo(c) => c.dry_run,
        }
    }

    pub fn validate(&self, path: &str, p: &mut Problems) {
        match self {
            TargetConfig::Kubernetes(c) => c.validate(path, p),
            TargetConfig::Ecs(c) => c.validate(path, p),
            TargetConfig::Demo(c) => c.validate(path, p),
        }
    }

    /// Build the target: load or reuse its client from `shared`. Every read
    /// or write of the built target gives up after `timeout`, retries
    /// included. `dry_run` is not applied here: the caller decides whether
    /// to call `set_replicas`.
    pub async fn build(
        &self,
        shared: &Shared,
        timeout: Duration,
    ) -> Result<Arc<dyn ScaleTarget>, TargetError> {
        Ok(match self {
            TargetConfig::Kubernetes(c) => {
                Arc::new(kubernetes::KubernetesTarget::build(c, shared, timeout).await?)
            }
            TargetConfig::Ecs(c) => Arc::new(ecs::EcsTarget::build(c, shared, timeout).await?),
            TargetConfig::Demo(c) => Arc::new(c.build(&shared.demo)),
        })
    }

    /// A one-line description for `qscale check`.
    pub fn describe(&self) -> String {
        match self {
            TargetConfig::Kubernetes(c) => c.describe(),
            TargetConfig::Ecs(c) => c.describe(),
            TargetConfig::Demo(c) => c.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_label_is_in_metric_labels_and_nothing_else_is() {
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
