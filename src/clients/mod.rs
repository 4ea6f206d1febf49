//! Clients shared by all scalers of one process.
//!
//! Sources and targets are built from their config with a reference to
//! [`Clients`], so that expensive or rate-limited things exist once per
//! process: AWS SDK configs (credential chains), batched CloudWatch
//! readers, Kubernetes clients, the simulated world of the demo source and
//! target. This folder also holds what every client needs alike: secrets
//! that never reach a log ([`secret`]), a bounded HTTP GET client
//! ([`http`]), the mapping of AWS SDK errors to bounded labels
//! ([`aws_error`]) and one-line error text ([`error_text`]).
//!
//! It sits below the sources and targets and above the contract
//! ([`crate::contract`]), the validation vocabulary ([`crate::validate`])
//! and the simulated world ([`crate::world`]); it never imports an adapter,
//! the policy or the daemon.

pub mod aws;
pub mod aws_error;
pub mod cloudwatch;
pub mod error_text;
pub mod http;
pub mod kube;
pub mod secret;

use crate::clock::Clock;
use crate::world::DemoWorld;
use aws::AwsConfigs;
use cloudwatch::CloudWatchReaders;
use kube::KubeClients;

/// Process-wide clients; cheap to clone (everything inside is
/// reference-counted).
#[derive(Clone, Default)]
pub struct Clients {
    /// Loaded AWS SDK configs, one per region and endpoint.
    pub aws: AwsConfigs,
    /// Batched CloudWatch readers, one per region and endpoint, so all SQS
    /// scalers of a region share one GetMetricData call per poll.
    pub cloudwatch: CloudWatchReaders,
    /// Kubernetes clients, one per kubeconfig context.
    pub kube: KubeClients,
    /// Simulated queues of the `demo` source and target, by queue name.
    pub demo: DemoWorld,
    /// The daemon's clock: the wall clock unless `--time-scale` is set.
    pub clock: Clock,
}

impl Clients {
    pub fn new() -> Clients {
        Clients::default()
    }

    /// Clients for a daemon whose clock is `clock` (`--time-scale`): the
    /// demo world runs on it, and the control loop reads it from here.
    pub fn with_clock(clock: Clock) -> Clients {
        Clients {
            demo: DemoWorld::with_clock(clock),
            clock,
            ..Clients::default()
        }
    }
}
