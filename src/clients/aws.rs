//! Shared AWS SDK configuration for every source and target that talks to AWS.
//!
//! Credentials and region come from the standard AWS chain (environment,
//! profile, web identity/IRSA, ECS task role, instance metadata) via
//! aws-config; nothing secret is ever read from qscale's own config file.
//!
//! Two things are decided here once for the whole process:
//! - TLS uses rustls with *ring* only. With default features the AWS SDKs
//!   would pull aws-lc-rs while kube pulls ring, and rustls then cannot pick a
//!   process-wide provider; one provider keeps both working and the build
//!   small.
//! - Every call has an operation timeout (retries included) and an attempt
//!   timeout, so a hung endpoint can never stall a scaler's loop.
//!
//! Loading the credential chain is not free (it may read files or call STS),
//! so configs are cached per (region, endpoint) and shared by all scalers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio::sync::Mutex;

use crate::validate::{Problems, http_url};

/// Where to reach AWS and how long a call may take.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AwsEndpoint {
    /// Explicit region; `None` uses the standard chain.
    pub region: Option<String>,
    /// Custom endpoint (VPC endpoint, LocalStack, moto).
    pub endpoint_url: Option<String>,
}

/// A process-wide cache of loaded SDK configs.
#[derive(Clone, Default)]
pub struct AwsConfigs {
    inner: Arc<Mutex<HashMap<(AwsEndpoint, Duration), SdkConfig>>>,
    credentials: Option<SharedCredentialsProvider>,
}

impl AwsConfigs {
    pub fn new() -> AwsConfigs {
        AwsConfigs::default()
    }

    /// Configs that use `provider` instead of the standard credential chain.
    /// Tests use it to give moto fixed credentials without touching the
    /// process environment (tests run in parallel threads, and changing the
    /// environment under them is unsound), and to exercise the
    /// missing-credentials path.
    pub fn with_credentials(provider: SharedCredentialsProvider) -> AwsConfigs {
        AwsConfigs {
            inner: Arc::default(),
            credentials: Some(provider),
        }
    }

    /// The SDK config for `endpoint`, whose calls give up after `timeout`
    /// (all retries included).
    pub async fn get(&self, endpoint: &AwsEndpoint, timeout: Duration) -> SdkConfig {
        let key = (endpoint.clone(), timeout);
        let mut map = self.inner.lock().await;
        if let Some(c) = map.get(&key) {
            return c.clone();
        }
        let c = load_with(endpoint, timeout, self.credentials.clone()).await;
        map.insert(key, c.clone());
        c
    }
}

/// Load an SDK config with ring-only TLS, bounded timeouts and standard
/// retries.
pub async fn load(endpoint: &AwsEndpoint, timeout: Duration) -> SdkConfig {
    load_with(endpoint, timeout, None).await
}

async fn load_with(
    endpoint: &AwsEndpoint,
    timeout: Duration,
    credentials: Option<SharedCredentialsProvider>,
) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let attempt = (timeout / 2).max(Duration::from_millis(500));
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(attempt.min(Duration::from_secs(3)))
        .operation_attempt_timeout(attempt)
        .operation_timeout(timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
    if let Some(r) = &endpoint.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(url) = &endpoint.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some(c) = credentials {
        loader = loader.credentials_provider(c);
    }
    loader.load().await
}

/// Add the problems of a table's `region` and `endpoint_url` fields (the
/// SQS source and the ECS target have both) to `p`, under `path`.
pub fn validate_endpoint(
    p: &mut Problems,
    path: &str,
    region: Option<&str>,
    endpoint_url: Option<&str>,
) {
    if let Some(region) = region
        && !valid_region(region)
    {
        p.push(
            format!("{path}.region"),
            format!("{region:?} is not an AWS region name like us-east-1"),
        );
    }
    if let Some(url) = endpoint_url {
        http_url(p, &format!("{path}.endpoint_url"), url);
    }
}

/// AWS region names: lowercase letters, digits and dashes, with at least two
/// dashes (`us-east-1`, `us-gov-west-1`, `ap-southeast-4`).
pub fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 30
        && r.split('-').count() >= 3
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && r.chars().last().is_some_and(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_checked_by_shape() {
        for ok in ["us-east-1", "us-gov-west-1", "ap-southeast-4"] {
            assert!(valid_region(ok), "{ok}");
        }
        for bad in ["", "useast1", "US-EAST-1", "us-east", "eu-west-1 "] {
            assert!(!valid_region(bad), "{bad}");
        }
    }
}
