//! Demo target: simulated workers that drain a demo queue
//! (`config/demo.toml`).
//!
//! The workers live in the queue of the process-wide
//! [`crate::world::DemoWorld`] that a `source.kind = "demo"` with the same
//! `queue` name fills. Each takes one message at a time and spends
//! `seconds_per_message` on it; a new replica takes work only after
//! `startup_delay`, as a real pod would, so the demo shows why scaling late
//! costs message age.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::clients::Clients;
use crate::contract::{Replicas, ScaleTarget, TargetError};
use crate::targets::TargetSpec;
use crate::validate::Problems;
use crate::world::demo::{default_queue, validate_queue_name};
use crate::world::model::WorkerParams;
use crate::world::{DemoQueue, DemoWorld};

/// Longest start-up delay accepted (a typo guard).
const MAX_STARTUP_DELAY: Duration = Duration::from_secs(3600);

/// `target.kind = "demo"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoTargetConfig {
    /// Name of the simulated queue these workers drain (the demo source's
    /// `queue`). Default `demo`.
    #[serde(default = "default_queue")]
    pub queue: String,

    /// Seconds one worker spends on one message, e.g. `0.5`.
    #[serde(default = "default_seconds_per_message")]
    pub seconds_per_message: f64,

    /// Each message takes `seconds_per_message x (1 +/- jitter)`, uniformly
    /// at random; `0` (default) for none, at most `1`.
    #[serde(default)]
    pub jitter: f64,

    /// Time from asking for a replica to it taking work, e.g. `"10s"`.
    #[serde(default = "default_startup_delay", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub startup_delay: Duration,

    /// Workers running when qscale starts.
    #[serde(default = "default_initial_replicas")]
    pub initial_replicas: u32,

    /// Decide and report, never write.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_seconds_per_message() -> f64 {
    1.0
}
fn default_startup_delay() -> Duration {
    Duration::from_secs(10)
}
fn default_initial_replicas() -> u32 {
    1
}

impl DemoTargetConfig {
    /// How these workers behave, in the model's terms.
    pub fn worker_params(&self) -> WorkerParams {
        WorkerParams {
            seconds_per_message: self.seconds_per_message,
            jitter: self.jitter,
            startup_delay: self.startup_delay.as_secs_f64(),
            ..WorkerParams::default()
        }
    }

    /// The target, on the queue of `world` named by `queue`.
    pub fn build_on(&self, world: &DemoWorld) -> DemoTarget {
        let queue = world.queue(&self.queue);
        queue.attach_workers(self.worker_params(), self.initial_replicas);
        DemoTarget { queue }
    }
}

#[async_trait]
impl TargetSpec for DemoTargetConfig {
    fn kind(&self) -> &'static str {
        "demo"
    }

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        validate_queue_name(p, &format!("{path}.queue"), &self.queue);
        if !(self.seconds_per_message.is_finite() && self.seconds_per_message > 0.0) {
            p.push(
                format!("{path}.seconds_per_message"),
                "must be a number > 0",
            );
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            p.push(format!("{path}.jitter"), "must be >= 0 and <= 1");
        }
        if self.startup_delay > MAX_STARTUP_DELAY {
            p.push(format!("{path}.startup_delay"), "must be at most 1h");
        }
    }

    fn describe(&self) -> String {
        let mut d = format!(
            "demo workers on {} ({} s/msg, start-up {})",
            self.queue,
            self.seconds_per_message,
            humantime::format_duration(self.startup_delay)
        );
        if self.dry_run {
            d.push_str(" (dry run)");
        }
        d
    }

    async fn build(
        &self,
        clients: &Clients,
        _timeout: Duration,
    ) -> Result<Arc<dyn ScaleTarget>, TargetError> {
        Ok(Arc::new(self.build_on(&clients.demo)))
    }
}

/// The workers of one demo queue.
pub struct DemoTarget {
    queue: Arc<DemoQueue>,
}

#[async_trait]
impl ScaleTarget for DemoTarget {
    fn kind(&self) -> &'static str {
        "demo"
    }

    async fn current(&self) -> Result<Replicas, TargetError> {
        let o = self.queue.snapshot().observation;
        Ok(Replicas::new(o.desired, Some(o.ready)))
    }

    async fn set_replicas(&self, n: u32) -> Result<(), TargetError> {
        self.queue.set_replicas(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DemoTargetConfig {
        DemoTargetConfig {
            queue: "demo".into(),
            seconds_per_message: 0.5,
            jitter: 0.0,
            startup_delay: Duration::from_secs(10),
            initial_replicas: 1,
            dry_run: false,
        }
    }

    #[test]
    fn validation_table() {
        let cases = [
            (cfg(), None),
            (
                DemoTargetConfig {
                    queue: "".into(),
                    ..cfg()
                },
                Some("s.queue: must be 1-64"),
            ),
            (
                DemoTargetConfig {
                    seconds_per_message: 0.0,
                    ..cfg()
                },
                Some("s.seconds_per_message: must be a number > 0"),
            ),
            (
                DemoTargetConfig {
                    seconds_per_message: f64::NAN,
                    ..cfg()
                },
                Some("s.seconds_per_message"),
            ),
            (
                DemoTargetConfig {
                    jitter: 1.5,
                    ..cfg()
                },
                Some("s.jitter: must be >= 0 and <= 1"),
            ),
            (
                DemoTargetConfig {
                    startup_delay: Duration::from_secs(7200),
                    ..cfg()
                },
                Some("s.startup_delay: must be at most 1h"),
            ),
        ];
        crate::validate::assert_validation_table(&cases, |c, path, p| c.validate(path, p));
    }

    #[tokio::test]
    async fn the_demo_target_reports_desired_and_ready_and_resizes_the_queue_workers() {
        let world = DemoWorld::new();
        let t0 = tokio::time::Instant::now();
        let q = world.queue_at("demo", t0);
        let t = cfg().build_on(&world);
        assert_eq!(t.current().await.unwrap(), Replicas::new(1, Some(1)));
        t.set_replicas(4).await.unwrap();
        let now = t.current().await.unwrap();
        assert_eq!(now.desired, 4);
        // The three new workers need the 10 s start-up delay.
        let later = q.snapshot_at(tokio::time::Instant::now() + Duration::from_secs(11));
        assert_eq!(later.observation.ready, 4);
        assert_eq!(t.kind(), "demo");
    }
}
