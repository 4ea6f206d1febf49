//! Amazon ECS target: a service's `desiredCount`.
//!
//! Reads use `DescribeServices` (desired, running and pending counts) and
//! writes use `UpdateService` with only `desiredCount` set, so qscale never
//! touches the task definition or deployment settings. The SDK config comes
//! from [`crate::clients::aws::AwsConfigs`] (shared credential chain, ring-only TLS,
//! bounded timeouts and standard retries, throttling included).
//!
//! ECS has no optimistic concurrency on `desiredCount`, so unlike the
//! Kubernetes target a write here is last-writer-wins.
//!
//! `DescribeServices` does not fail for a missing service: it answers 200
//! with a `failures` entry (`reason: MISSING`), which is also what a service
//! that lives in another cluster looks like. That is mapped to `not_found`,
//! as is a deleted (`INACTIVE`) service.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::clients::Clients;
use crate::clients::aws::AwsEndpoint;
use crate::clients::aws::validate_endpoint;
use crate::clients::error_text::chain;
use crate::contract::{Replicas, ScaleTarget, TargetError};
use crate::targets::TargetSpec;
use crate::validate::Problems;

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

#[async_trait]
impl TargetSpec for EcsTargetConfig {
    fn kind(&self) -> &'static str {
        "ecs"
    }

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        if self.cluster.trim().is_empty() {
            p.push(format!("{path}.cluster"), "must not be empty");
        }
        if self.service.trim().is_empty() {
            p.push(format!("{path}.service"), "must not be empty");
        }
        validate_endpoint(
            p,
            path,
            self.region.as_deref(),
            self.endpoint_url.as_deref(),
        );
    }

    fn describe(&self) -> String {
        let mut d = format!("ecs service {}/{}", self.cluster, self.service);
        if self.dry_run {
            d.push_str(" (dry run)");
        }
        d
    }

    async fn build(
        &self,
        clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn ScaleTarget>, TargetError> {
        Ok(Arc::new(EcsTarget::build(self, clients, timeout).await?))
    }
}

/// What one `DescribeServices` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcsServiceState {
    /// `desiredCount`.
    pub desired: u32,
    /// `runningCount`: tasks in the RUNNING state.
    pub running: u32,
    /// `pendingCount`: tasks placed but not yet running.
    pub pending: u32,
}

/// An ECS service resized through its `desiredCount`.
pub struct EcsTarget {
    client: aws_sdk_ecs::Client,
    cluster: String,
    service: String,
    timeout: Duration,
}

impl EcsTarget {
    /// The target for `cfg`, with the SDK config shared through `shared`.
    /// Every read or write gives up after `timeout`, retries included.
    pub async fn build(
        cfg: &EcsTargetConfig,
        shared: &Clients,
        timeout: Duration,
    ) -> Result<EcsTarget, TargetError> {
        Self::check(cfg, timeout)?;
        let endpoint = AwsEndpoint {
            region: cfg.region.clone(),
            endpoint_url: cfg.endpoint_url.clone(),
        };
        let sdk = shared.aws.get(&endpoint, timeout).await;
        EcsTarget::new(cfg, &sdk, timeout)
    }

    /// The target for `cfg` using `sdk` as given (tests, or a caller with
    /// its own credentials).
    pub fn new(
        cfg: &EcsTargetConfig,
        sdk: &SdkConfig,
        timeout: Duration,
    ) -> Result<EcsTarget, TargetError> {
        Self::check(cfg, timeout)?;
        if sdk.region().is_none() {
            return Err(TargetError::Invalid(format!(
                "no AWS region for {}: set target.region or AWS_REGION",
                cfg.describe()
            )));
        }
        Ok(EcsTarget {
            client: aws_sdk_ecs::Client::new(sdk),
            cluster: cfg.cluster.clone(),
            service: cfg.service.clone(),
            timeout,
        })
    }

    fn check(cfg: &EcsTargetConfig, timeout: Duration) -> Result<(), TargetError> {
        let mut p = Problems::default();
        cfg.validate("target", &mut p);
        if timeout.is_zero() {
            p.push("actuate_timeout", "must be greater than 0");
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(TargetError::Invalid(p.0.join("; ")))
        }
    }

    /// Read desired, running and pending counts.
    pub async fn state(&self) -> Result<EcsServiceState, TargetError> {
        let call = self
            .client
            .describe_services()
            .cluster(&self.cluster)
            .services(&self.service)
            .send();
        let out = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => return Err(TargetError::Timeout(self.timeout)),
            Ok(r) => r.map_err(|e| self.error("DescribeServices", e))?,
        };
        if let Some(f) = out.failures().first()
            && out.services().is_empty()
        {
            let reason = f.reason().unwrap_or("unknown reason");
            return Err(if reason.eq_ignore_ascii_case("MISSING") {
                TargetError::NotFound(format!(
                    "ECS service {:?} is not in cluster {:?} (MISSING): check target.cluster and \
                     target.service; a service belongs to exactly one cluster",
                    self.service, self.cluster
                ))
            } else {
                TargetError::Unavailable(format!(
                    "DescribeServices failed for {}: {reason} {}",
                    self.describe(),
                    f.detail().unwrap_or("")
                ))
            });
        }
        let svc = out
            .services()
            .iter()
            .find(|s| {
                s.service_name() == Some(self.service.as_str())
                    || s.service_arn() == Some(self.service.as_str())
            })
            .or_else(|| out.services().first())
            .ok_or_else(|| {
                TargetError::Unavailable(format!(
                    "DescribeServices answered neither the service nor a failure for {}",
                    self.describe()
                ))
            })?;
        if svc.status() == Some("INACTIVE") {
            return Err(TargetError::NotFound(format!(
                "ECS service {} is INACTIVE (deleted): recreate it or point target.service at \
                 the live service",
                self.describe()
            )));
        }
        let count = |what: &str, n: i32| {
            u32::try_from(n).map_err(|_| {
                TargetError::Unavailable(format!("ECS reported {what} {n} for {}", self.describe()))
            })
        };
        Ok(EcsServiceState {
            desired: count("desiredCount", svc.desired_count())?,
            running: count("runningCount", svc.running_count())?,
            pending: count("pendingCount", svc.pending_count())?,
        })
    }

    async fn write(&self, n: u32) -> Result<(), TargetError> {
        let desired = i32::try_from(n).map_err(|_| {
            TargetError::Invalid(format!(
                "{n} tasks for {} is beyond the int32 range ECS accepts; lower \
                 policy.max_replicas",
                self.describe()
            ))
        })?;
        let call = self
            .client
            .update_service()
            .cluster(&self.cluster)
            .service(&self.service)
            .desired_count(desired)
            .send();
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(TargetError::Timeout(self.timeout)),
            Ok(r) => r.map(|_| ()).map_err(|e| self.error("UpdateService", e)),
        }
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.cluster, self.service)
    }

    /// Map an SDK error to the bounded label set, with a fix-it message.
    fn error<E, R>(&self, op: &str, err: SdkError<E, R>) -> TargetError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let svc = self.describe();
        match &err {
            SdkError::TimeoutError(_) => return TargetError::Timeout(self.timeout),
            SdkError::DispatchFailure(d) if d.is_timeout() => {
                return TargetError::Timeout(self.timeout);
            }
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                return TargetError::Unavailable(format!(
                    "cannot reach ECS for {op} on {svc}: {}; check the endpoint and network",
                    chain(&err)
                ));
            }
            SdkError::ConstructionFailure(_) => {
                return TargetError::Invalid(format!(
                    "cannot build the {op} request for {svc}: {}; check credentials and region",
                    chain(&err)
                ));
            }
            _ => {}
        }
        let code = err.code().unwrap_or("");
        let msg = err.message().unwrap_or("").to_string();
        match code {
            "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded" => TargetError::Throttled(format!(
                "ECS throttled {op} on {svc} ({code}): lengthen poll_interval or request a \
                 higher ECS API rate"
            )),
            "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => {
                TargetError::Forbidden(format!(
                    "qscale's IAM identity cannot call ecs:{op} on {svc}: grant \
                     ecs:DescribeServices and ecs:UpdateService on the service ARN ({msg})"
                ))
            }
            "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "ExpiredToken" => TargetError::Forbidden(format!(
                "AWS rejected qscale's credentials for {op} ({code}): fix or refresh the \
                 credentials qscale runs with ({msg})"
            )),
            "ClusterNotFoundException" => TargetError::NotFound(format!(
                "ECS cluster {:?} does not exist in this account and region: check \
                 target.cluster and target.region",
                self.cluster
            )),
            "ServiceNotFoundException" | "ServiceNotActiveException" => {
                TargetError::NotFound(format!(
                    "ECS service {:?} is not an active service of cluster {:?} ({code}): check \
                     target.cluster and target.service",
                    self.service, self.cluster
                ))
            }
            "InvalidParameterException" | "ClientException" => {
                TargetError::Invalid(format!("ECS refused {op} on {svc} ({code}): {msg}"))
            }
            _ => TargetError::Unavailable(format!(
                "ECS {op} on {svc} failed ({}): {}",
                if code.is_empty() {
                    "no error code"
                } else {
                    code
                },
                if msg.is_empty() { chain(&err) } else { msg }
            )),
        }
    }
}

#[async_trait]
impl ScaleTarget for EcsTarget {
    fn kind(&self) -> &'static str {
        "ecs"
    }

    async fn current(&self) -> Result<Replicas, TargetError> {
        let s = self.state().await?;
        Ok(Replicas::new(s.desired, Some(s.running)))
    }

    async fn set_replicas(&self, n: u32) -> Result<(), TargetError> {
        self.write(n).await
    }
}
