//! Clients and state shared by all scalers of one process.
//!
//! Sources and targets are built from their config with a reference to this
//! struct, so that expensive or rate-limited things exist once per process:
//! AWS SDK configs (credential chains), batched CloudWatch readers, the
//! Kubernetes client, the simulated world of the demo source and target.
//! It is cheap to clone (everything inside is reference-counted).

use crate::aws::AwsConfigs;
use crate::simulate::DemoWorld;
use crate::sources::cloudwatch::CloudWatchReaders;
use crate::targets::kubernetes::KubeClients;

/// Process-wide clients; clone freely.
#[derive(Clone, Default)]
pub struct Shared {
    /// Loaded AWS SDK configs, one per region and endpoint.
    pub aws: AwsConfigs,
    /// Batched CloudWatch readers, one per region and endpoint, so all SQS
    /// scalers of a region share one GetMetricData call per poll.
    pub cloudwatch: CloudWatchReaders,
    /// Kubernetes clients, one per kubeconfig context.
    pub kube: KubeClients,
    /// Simulated queues of the `demo` source and target, by queue name.
    pub demo: DemoWorld,
}

impl Shared {
    pub fn new() -> Shared {
        Shared::default()
    }
}
