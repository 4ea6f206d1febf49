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

use crate::clients::Clients;
use crate::contract::{ScaleTarget, TargetError};
use crate::validate::Problems;

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
    /// The variant's own config table, behind the one trait every target
    /// implements. This is the only `match` over the variants: adding a
    /// target is a file, a variant and its arm here.
    pub fn spec(&self) -> &dyn TargetSpec {
        match self {
            TargetConfig::Kubernetes(c) => c,
            TargetConfig::Ecs(c) => c,
            TargetConfig::Demo(c) => c,
        }
    }

    /// The config tag, also the `target` metric label.
    pub fn kind(&self) -> &'static str {
        self.spec().kind()
    }

    /// Decide and report, never write.
    pub fn dry_run(&self) -> bool {
        self.spec().dry_run()
    }

    /// Add every problem of this table to `p`, under `path`.
    pub fn validate(&self, path: &str, p: &mut Problems) {
        self.spec().validate(path, p)
    }

    /// Build the target (see [`TargetSpec::build`]).
    pub async fn build(
        &self,
        clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn ScaleTarget>, TargetError> {
        self.spec().build(clients, timeout).await
    }

    /// A one-line description for `qscale check`.
    pub fn describe(&self) -> String {
        self.spec().describe()
    }
}

/// What every target's config table provides, implemented beside its serde
/// type in the target's own file.
#[async_trait]
pub trait TargetSpec: Send + Sync {
    /// The config tag (`kind = "..."`), also the `target` metric label.
    fn kind(&self) -> &'static str;

    /// Decide and report, never write.
    fn dry_run(&self) -> bool;

    /// Add every problem of this table to `p`, under `path`.
    fn validate(&self, path: &str, p: &mut Problems);

    /// A one-line description for `qscale check`.
    fn describe(&self) -> String;

    /// Build the target: load or reuse its client from `clients`. Every
    /// read or write of the built target gives up after `timeout`, retries
    /// included. `dry_run` is not applied here: the caller decides whether
    /// to call `set_replicas`.
    async fn build(
        &self,
        clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn ScaleTarget>, TargetError>;
}
