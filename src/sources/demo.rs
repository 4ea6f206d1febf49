//! Demo source: a simulated queue in real time, for running qscale with no
//! cloud account (`config/demo.toml`).
//!
//! Messages arrive by a pattern (the simulator's syntax, e.g.
//! `burst:base=2,size=300,at=30s,every=2m`) into a queue of the process-wide
//! [`crate::world::DemoWorld`], where a demo target with the same `queue`
//! name drains it. The source measures everything a real broker could:
//! visible, in-flight, delayed (always 0), the age of the oldest message and
//! the arrival rate (messages counted between two samples), so every policy
//! signal can be tried.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::clients::Clients;
use crate::contract::{Capabilities, QueueSource, Sample, SourceError};
use crate::sources::SourceSpec;
use crate::validate::{Problems, default_true};
use crate::world::DemoQueue;
use crate::world::demo::{default_queue, validate_queue_name};
use crate::world::trace::Pattern;

/// `source.kind = "demo"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoSourceConfig {
    /// Name of the simulated queue. A `target.kind = "demo"` with the same
    /// `queue` drains it. Default `demo`.
    #[serde(default = "default_queue")]
    pub queue: String,

    /// How messages arrive, in the simulator's pattern syntax, e.g.
    /// `"burst:base=2,size=300,at=30s,every=2m"` or
    /// `"diurnal:min=1,max=30,period=10m,noise=poisson,seed=7"`
    /// (see docs/simulate.md).
    pub pattern: String,

    /// Count in-flight messages (received, not yet deleted) as backlog.
    #[serde(default = "default_true")]
    pub count_in_flight: bool,
}

impl DemoSourceConfig {
    /// The source, on the queue of `world` named by `queue`.
    pub fn build_on(&self, world: &crate::world::DemoWorld) -> Result<DemoSource, SourceError> {
        let pattern = Pattern::parse(&self.pattern)
            .map_err(|e| SourceError::Config(format!("pattern: {e}")))?;
        let queue = world.queue(&self.queue);
        queue.attach_arrivals(&pattern);
        Ok(DemoSource {
            queue,
            last: Mutex::new(None),
        })
    }
}

#[async_trait]
impl SourceSpec for DemoSourceConfig {
    fn kind(&self) -> &'static str {
        "demo"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            oldest_age: true,
            arrival_rate: true,
            in_flight: true,
            delayed: true,
            count_in_flight: self.count_in_flight,
            count_delayed: false,
        }
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        validate_queue_name(p, &format!("{path}.queue"), &self.queue);
        if let Err(e) = Pattern::parse(&self.pattern) {
            p.push(format!("{path}.pattern"), e);
        }
    }

    fn describe(&self) -> String {
        format!("demo queue {} ({})", self.queue, self.pattern.trim())
    }

    fn identity(&self) -> String {
        self.queue.clone()
    }

    async fn build(
        &self,
        clients: &Clients,
        _timeout: Duration,
    ) -> Result<Arc<dyn QueueSource>, SourceError> {
        Ok(Arc::new(self.build_on(&clients.demo)?))
    }
}

/// What the previous sample saw, for the arrival rate.
#[derive(Debug, Clone, Copy)]
struct Last {
    at: u64,
    arrived: u64,
    rate: f64,
}

/// A sampler of one demo queue.
pub struct DemoSource {
    queue: Arc<DemoQueue>,
    last: Mutex<Option<Last>>,
}

#[async_trait]
impl QueueSource for DemoSource {
    fn kind(&self) -> &'static str {
        "demo"
    }

    async fn sample(&self) -> Result<Sample, SourceError> {
        Ok(self.sample_at(self.queue.now()))
    }

    fn on_daemon_clock(&self) -> bool {
        true
    }
}

impl DemoSource {
    /// The sample at `now` (the trait's `sample` passes the clock's now).
    pub fn sample_at(&self, now: tokio::time::Instant) -> Sample {
        let snap = self.queue.snapshot_at(now);
        let o = snap.observation;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let rate = match *last {
            // Messages counted between two samples, as a broker's counter.
            Some(l) if o.now > l.at => {
                (snap.arrived_total - l.arrived) as f64 / (o.now - l.at) as f64
            }
            Some(l) => l.rate,
            // First look: the average since the queue started.
            None => snap.arrived_total as f64 / (o.now + 1) as f64,
        };
        *last = Some(Last {
            at: o.now,
            arrived: snap.arrived_total,
            rate,
        });
        let mut s = Sample::empty(std::time::SystemTime::now());
        s.visible = Some(o.visible);
        s.in_flight = Some(o.in_flight);
        s.delayed = Some(0);
        s.oldest_age = Some(std::time::Duration::from_secs_f64(o.oldest_age));
        s.arrival_rate = Some(rate);
        s.consumers = Some(o.ready);
        s
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::world::DemoWorld;

    fn cfg(queue: &str, pattern: &str) -> DemoSourceConfig {
        DemoSourceConfig {
            queue: queue.into(),
            pattern: pattern.into(),
            count_in_flight: true,
        }
    }

    #[test]
    fn validation_table() {
        let cases = [
            (cfg("demo", "constant:rate=3"), None),
            (cfg("jobs-1.a_b", "burst:size=5,at=1m"), None),
            (cfg("", "constant:rate=3"), Some("s.queue: must be 1-64")),
            (cfg("a b", "constant:rate=3"), Some("s.queue: must be 1-64")),
            (
                cfg("demo", "constant"),
                Some("s.pattern: pattern \"constant\": missing `rate=`"),
            ),
            (
                cfg("demo", "wave:max=3"),
                Some("s.pattern: pattern \"wave:max=3\": unknown pattern `wave`"),
            ),
        ];
        crate::validate::assert_validation_table(&cases, |c, path, p| c.validate(path, p));
    }

    #[test]
    fn the_demo_source_measures_everything_the_policy_can_use() {
        let c = cfg("demo", "constant:rate=1").capabilities();
        assert!(c.oldest_age && c.arrival_rate && c.in_flight && c.delayed);
    }

    #[tokio::test]
    async fn samples_report_depth_age_and_the_arrival_rate_between_samples() {
        let world = DemoWorld::new();
        let t0 = tokio::time::Instant::now();
        // Start the queue's clock at t0 so the test controls time.
        let q = world.queue_at("q", t0);
        let src = cfg("q", "step:from=2,to=6,at=10s")
            .build_on(&world)
            .unwrap();
        let first = src.sample_at(t0);
        assert_eq!(first.visible, Some(2));
        assert_eq!(first.arrival_rate, Some(2.0));
        let s = src.sample_at(t0 + Duration::from_secs(10));
        // Seconds 1..=10 brought 9 x 2 + 6 = 24 messages.
        assert_eq!(s.arrival_rate, Some(2.4));
        assert_eq!(s.visible, Some(26));
        assert_eq!(s.in_flight, Some(0));
        assert_eq!(s.oldest_age, Some(Duration::from_secs(10)));
        assert_eq!(
            q.snapshot_at(t0 + Duration::from_secs(10)).arrived_total,
            26
        );
        // Through the trait, at the real clock: still a full sample.
        let s = src.sample().await.unwrap();
        assert!(s.visible.is_some() && s.arrival_rate.is_some());
        assert_eq!(src.kind(), "demo");
    }
}
