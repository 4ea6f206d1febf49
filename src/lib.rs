//! qscale: a queue-depth autoscaler daemon.
//!
//! A control loop samples how much work waits in a queue (depth, in-flight,
//! delayed, age of the oldest message, arrival rate), runs a scaling policy,
//! and resizes the workers that drain it (a Kubernetes object with a `/scale`
//! subresource, or an ECS service). It exports Prometheus metrics and
//! explains every decision.
//!
//! Module map (see DESIGN.md for the data flow):
//! - [`config`]: the configuration file, loading with environment overrides,
//!   and validation that names every problem by its field path;
//! - [`policy`]: the pure decision function and its state;
//! - [`sources`]: queue sources and the [`sources::Sample`] they produce;
//! - [`targets`]: scale targets and their [`targets::Replicas`];
//! - [`control_loop`]: one task per scaler and the daemon that supervises
//!   them (reload, shutdown);
//! - [`metrics`]: every Prometheus metric, registered in one place;
//! - [`http`]: /metrics, /healthz, /readyz, /status;
//! - [`status`]: what each scaler last saw and decided;
//! - [`aws`] and [`shared`]: clients shared by all scalers of a process;
//! - [`simulate`]: the queue-and-workers model that replays a trace
//!   through the real policy (`qscale simulate`), the HPA baseline it is
//!   compared with, and the demo world behind the `demo` source and target;
//! - [`cli`]: the command-line interface that `main.rs` calls.

pub mod cli;
pub mod clients;
pub mod config;
pub mod contract;
pub mod control_loop;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod run;
pub mod simulate;
pub mod sources;
pub mod status;
pub mod targets;
pub mod validate;
pub mod world;

/// The crate version, as `qscale --version` and `qscale_build_info` show it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
