//! qscale: a queue-depth autoscaler daemon.
//!
//! A control loop samples how much work waits in a queue (depth, in-flight,
//! delayed, age of the oldest message, arrival rate), runs a scaling policy,
//! and resizes the workers that drain it (a Kubernetes object with a `/scale`
//! subresource, or an ECS service). It exports Prometheus metrics and
//! explains every decision.
//!
//! The crate is built in layers; a module uses only layers below it
//! (docs/architecture.md draws them with the data flow, and
//! `tests/layering.rs` checks every import against them). Bottom up:
//!
//! 0. the shared vocabulary, importing nothing else of the crate:
//!    [`validate`] (`Problems`, the checks several tables share),
//!    [`contract`] (`Sample`, `Replicas`, the source and target traits and
//!    their errors) and [`world`] (the simulated queue and workers, traces,
//!    the demo world);
//! 1. [`clients`] (AWS, CloudWatch, Kubernetes, HTTP, secrets: built once
//!    per process), [`policy`] (the pure decision, time passed in) and
//!    [`chart`] (stacked-panel SVG charts);
//! 2. the adapters: [`sources`] and [`targets`], one file per kind;
//! 3. [`config`] (the file, env overrides, validation), [`metrics`] (every
//!    Prometheus metric), [`status`] (what each scaler saw and decided) and
//!    [`timeline`] (each scaler's bounded recent history and its chart);
//! 4. the daemon: [`control_loop`] (one task per scaler, reload, shutdown),
//!    [`leader`] (Lease election and sharding) and [`http`] (/metrics,
//!    /healthz, /readyz, /status, the timeline's JSON and chart, the HTML
//!    index page);
//! 5. the commands: [`run`] (`qscale run`, `qscale once`), [`simulate`]
//!    (`qscale simulate`: the policy against an HPA baseline on a trace) and
//!    [`cli`], which `main.rs` calls.

pub mod chart;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod contract;
pub mod control_loop;
pub mod history;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod run;
pub mod simulate;
pub mod sources;
pub mod status;
pub mod targets;
pub mod timeline;
pub mod validate;
pub mod world;

/// The crate version, as `qscale --version` and `qscale_build_info` show it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
