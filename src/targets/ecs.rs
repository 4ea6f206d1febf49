//! Amazon ECS target: a service's `desiredCount`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Problems, http_url};
use crate::sources::sqs::valid_region;

/// `target.kind = "ecs"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EcsTargetConfig {
    /// Cluster name or ARN.
    pub cluster: String,

    /// Service name or ARN.
    pub service: String,

    /// AWS region (default: from the standard AWS chain).
    #[serde(default)]
    pub region: Option<String>,

    /// Custom ECS endpoint (VPC endpoint, LocalStack, moto).
    #[serde(default)]
    pub endpoint_url: Option<String>,

    /// Decide and report, never write.
    #[serde(default)]
    pub dry_run: bool,
}

impl EcsTargetConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if self.cluster.trim().is_empty() {
            p.push(format!("{path}.cluster"), "must not be empty");
        }
        if self.service.trim().is_empty() {
            p.push(format!("{path}.service"), "must not be empty");
        }
        if let Some(region) = &self.region
            && !valid_region(region)
        {
            p.push(
                format!("{path}.region"),
                format!("{region:?} is not an AWS region name like us-east-1"),
            );
        }
        if let Some(url) = &self.endpoint_url {
            http_url(p, &format!("{path}.endpoint_url"), url);
        }
    }

    pub fn describe(&self) -> String {
        let mut d = format!("ecs service {}/{}", self.cluster, self.service);
        if self.dry_run {
            d.push_str(" (dry run)");
        }
        d
    }
}
