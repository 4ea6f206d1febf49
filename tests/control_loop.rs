//! The control loop's own logic, with in-process sources and targets that
//! script their answers: actuation in the same poll, dry run, pause, write
//! conflicts, isolation between scalers, reloads that keep policy state.
//! (The same loop against real peers is covered by the end-to-end tests.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use qscale::clients::Clients;
use qscale::config::{Config, DefaultsConfig, ScalerConfig};
use qscale::contract::{QueueSource, Replicas, Sample, ScaleTarget, SourceError, TargetError};
use qscale::control_loop::{Daemon, Runtime, Scaler};
use qscale::policy::PolicyState;

struct ScriptedSource {
    visible: Mutex<u64>,
    fail: Mutex<bool>,
    delay: Duration,
}

#[async_trait]
impl QueueSource for ScriptedSource {
    fn kind(&self) -> &'static str {
        "sqs"
    }
    async fn sample(&self) -> Result<Sample, SourceError> {
        tokio::time::sleep(self.delay).await;
        if *self.fail.lock().unwrap() {
            return Err(SourceError::Unavailable("connection refused".into()));
        }
        Ok(Sample {
            visible: Some(*self.visible.lock().unwrap()),
            in_flight: Some(0),
            delayed: Some(0),
            ..Sample::empty(SystemTime::now())
        })
    }
}

#[derive(Default)]
struct RecordingTarget {
    replicas: Mutex<u32>,
    writes: Mutex<Vec<u32>>,
    /// Errors returned by the next writes, in order.
    write_errors: Mutex<VecDeque<TargetError>>,
    /// Replicas another writer sets just before our next write fails.
    interloper: Mutex<Option<u32>>,
    paused: Mutex<bool>,
    /// How long a write takes.
    write_delay: Mutex<Duration>,
    /// Reads fail (the API server is away).
    fail_reads: Mutex<bool>,
}

#[async_trait]
impl ScaleTarget for RecordingTarget {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }
    async fn current(&self) -> Result<Replicas, TargetError> {
        if *self.fail_reads.lock().unwrap() {
            return Err(TargetError::Unavailable("connection refused".into()));
        }
        let n = *self.replicas.lock().unwrap();
        Ok(Replicas::new(n, Some(n)))
    }
    async fn set_replicas(&self, n: u32) -> Result<(), TargetError> {
        let delay = *self.write_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        if let Some(e) = self.write_errors.lock().unwrap().pop_front() {
            if let Some(other) = self.interloper.lock().unwrap().take() {
                *self.replicas.lock().unwrap() = other;
            }
            return Err(e);
        }
        *self.replicas.lock().unwrap() = n;
        self.writes.lock().unwrap().push(n);
        Ok(())
    }
    async fn paused(&self) -> Result<bool, TargetError> {
        Ok(*self.paused.lock().unwrap())
    }
}

fn scaler_config(name: &str, extra_policy: &str) -> (Config, ScalerConfig) {
    let text = format!(
        r#"
[defaults]
poll_interval = "1s"
[[scaler]]
name = "{name}"
[scaler.source]
kind = "sqs"
queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
cloudwatch = false
[scaler.target]
kind = "kubernetes"
name = "w"
[scaler.policy]
min_replicas = 1
max_replicas = 50
messages_per_replica = 10
tolerance = 0
{extra_policy}
[scaler.policy.scale_down]
stabilization = "0s"
cooldown = "0s"
"#
    );
    let cfg = Config::from_str_with_env(&text, std::path::Path::new("t.toml"), Vec::new())
        .expect("valid test config");
    let s = cfg.scalers[0].clone();
    (cfg, s)
}

fn source(visible: u64) -> Arc<ScriptedSource> {
    Arc::new(ScriptedSource {
        visible: Mutex::new(visible),
        fail: Mutex::new(false),
        delay: Duration::ZERO,
    })
}

fn target(replicas: u32) -> Arc<RecordingTarget> {
    let t = RecordingTarget::default();
    *t.replicas.lock().unwrap() = replicas;
    Arc::new(t)
}

fn scaler(
    cfg: ScalerConfig,
    rt: &Runtime,
    src: Arc<ScriptedSource>,
    tgt: Arc<RecordingTarget>,
) -> Scaler {
    Scaler::new(
        cfg,
        DefaultsConfig::default(),
        Default::default(),
        rt.clone(),
    )
    .with_clients(src, tgt)
}

#[tokio::test]
async fn new_backlog_is_written_in_the_same_poll() {
    let rt = Runtime::new(Clients::new(), false);
    let (_, cfg) = scaler_config("a", "");
    let tgt = target(1);
    let mut s = scaler(cfg, &rt, source(40), tgt.clone());
    let p = s.prepare().await;
    s.finish(p).await;
    assert_eq!(*tgt.writes.lock().unwrap(), vec![4]);
    let st = rt.status.get("a").unwrap();
    assert_eq!(st.desired, Some(4));
    assert_eq!(
        st.last_action.as_ref().map(|a| (a.from, a.to)),
        Some((1, 4))
    );
    let text = rt.metrics.render();
    assert!(
        text.contains("qscale_scale_operations_total{direction=\"up\",scaler=\"a\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("qscale_replicas{kind=\"desired\",scaler=\"a\"} 4"),
        "{text}"
    );
}

#[tokio::test]
async fn dry_run_and_pause_decide_but_never_write() {
    for (dry, config_pause, annotation) in [
        (true, false, false),
        (false, true, false),
        (false, false, true),
    ] {
        let rt = Runtime::new(Clients::new(), dry);
        let extra = if config_pause { "paused = true" } else { "" };
        let (_, cfg) = scaler_config("a", extra);
        let tgt = target(1);
        *tgt.paused.lock().unwrap() = annotation;
        let mut s = scaler(cfg, &rt, source(40), tgt.clone());
        let p = s.prepare().await;
        s.finish(p).await;
        assert!(
            tgt.writes.lock().unwrap().is_empty(),
            "dry {dry} pause {config_pause} annotation {annotation}"
        );
        let st = rt.status.get("a").unwrap();
        assert_eq!(st.paused, config_pause || annotation);
        if annotation {
            assert_eq!(st.paused_by, Some("annotation"));
            assert!(
                rt.metrics
                    .render()
                    .contains("qscale_paused{scaler=\"a\"} 1")
            );
        }
    }
}

#[tokio::test]
async fn a_write_conflict_rereads_and_redecides_instead_of_overwriting() {
    let rt = Runtime::new(Clients::new(), false);
    let (_, cfg) = scaler_config("a", "");
    let tgt = target(1);
    tgt.write_errors
        .lock()
        .unwrap()
        .push_back(TargetError::Conflict("the object has been modified".into()));
    // Someone else scaled to 9 between our read and our write.
    *tgt.interloper.lock().unwrap() = Some(9);
    let mut s = scaler(cfg, &rt, source(40), tgt.clone());
    let p = s.prepare().await;
    s.finish(p).await;
    // Re-decided from 9 with the same sample (40 messages -> 4), the scale
    // down is held by nothing (0 s stabilization) but rate-limited to 100 %.
    let writes = tgt.writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0], 4);
    let text = rt.metrics.render();
    assert!(text.contains("error=\"conflict\""), "{text}");
}

#[tokio::test]
async fn a_failed_write_is_counted_and_explained() {
    let rt = Runtime::new(Clients::new(), false);
    let (_, cfg) = scaler_config("a", "");
    let tgt = target(1);
    tgt.write_errors
        .lock()
        .unwrap()
        .push_back(TargetError::Forbidden(
            "cannot update deployments/scale".into(),
        ));
    let mut s = scaler(cfg, &rt, source(40), tgt.clone());
    let p = s.prepare().await;
    s.finish(p).await;
    let st = rt.status.get("a").unwrap();
    let err = st.last_error.expect("error recorded");
    assert_eq!((err.phase, err.label), ("actuate", "forbidden"));
    assert!(rt.metrics.render().contains("error=\"forbidden\""));
}

#[tokio::test]
async fn a_failing_source_holds_replicas_and_is_reported() {
    let rt = Runtime::new(Clients::new(), false);
    let (_, cfg) = scaler_config("a", "");
    let src = source(0);
    *src.fail.lock().unwrap() = true;
    let tgt = target(7);
    let mut s = scaler(cfg, &rt, src, tgt.clone());
    for _ in 0..5 {
        let p = s.prepare().await;
        s.finish(p).await;
    }
    assert!(tgt.writes.lock().unwrap().is_empty());
    let st = rt.status.get("a").unwrap();
    assert!(st.fallback_active, "fallback after 3 failures");
    assert_eq!(st.last_error.unwrap().label, "unavailable");
    assert!(rt.metrics.render().contains(
        "qscale_source_errors_total{error=\"unavailable\",scaler=\"a\",source=\"sqs\"} 5"
    ));
}

#[tokio::test]
async fn a_fallback_is_ready_only_while_it_can_read_its_target() {
    let rt = Runtime::new(Clients::new(), false);
    let (_, cfg) = scaler_config("a", "");
    let src = source(0);
    *src.fail.lock().unwrap() = true;
    let tgt = target(7);
    let mut s = scaler(cfg, &rt, src, tgt.clone());
    for _ in 0..3 {
        let p = s.prepare().await;
        s.finish(p).await;
    }
    let later = std::time::Instant::now() + Duration::from_secs(60);
    assert!(
        rt.status.readiness(later).is_ok(),
        "holding in its fallback"
    );

    // Now the target is away too: the fallback can do nothing.
    *tgt.fail_reads.lock().unwrap() = true;
    let p = s.prepare().await;
    s.finish(p).await;
    let problems = rt.status.readiness(later).unwrap_err();
    assert!(
        problems[0].starts_with("a: no successful poll yet"),
        "{problems:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_scaler_never_delays_another() {
    let rt = Runtime::new(Clients::new(), false);
    let (cfg, _) = scaler_config("fast", "");
    let mut daemon = Daemon::start(
        rt.clone(),
        Config {
            scalers: vec![],
            ..cfg.clone()
        },
    );
    let fast_t = target(1);
    let slow_src = Arc::new(ScriptedSource {
        visible: Mutex::new(500),
        fail: Mutex::new(false),
        delay: Duration::from_secs(3600),
    });
    let fast = scaler(cfg.scalers[0].clone(), &rt, source(40), fast_t.clone());
    let (_, slow_cfg) = scaler_config("slow", "");
    let slow = scaler(slow_cfg.clone(), &rt, slow_src, target(1));
    daemon.spawn(fast, (cfg.scalers[0].clone(), cfg.defaults.clone()));
    daemon.spawn(slow, (slow_cfg, cfg.defaults.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        fast_t.writes.lock().unwrap().first(),
        Some(&4),
        "the fast scaler acted while the slow one hangs"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let slow_status = rt.status.get("slow").unwrap();
    assert_eq!(
        slow_status.last_error.map(|e| e.label),
        Some("timeout"),
        "the sample timeout bounds the slow source"
    );
    daemon.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn reload_keeps_unchanged_scalers_and_their_state() {
    let rt = Runtime::new(Clients::new(), true);
    let (cfg, _) = scaler_config("a", "");
    let (cfg_b, _) = scaler_config("b", "");
    let mut both = cfg.clone();
    both.scalers.push(cfg_b.scalers[0].clone());
    let mut daemon = Daemon::start(rt.clone(), both.clone());
    assert_eq!(rt.status.all().len(), 2);

    // Same config: nothing restarts.
    let s = daemon.apply(both.clone());
    assert_eq!((s.unchanged, s.started.len(), s.restarted.len()), (2, 0, 0));

    // Change b's policy, drop a, add c.
    let (cfg_c, _) = scaler_config("c", "");
    let mut next = both.clone();
    next.scalers.remove(0);
    next.scalers[0].policy.max_replicas = 10;
    next.scalers.push(cfg_c.scalers[0].clone());
    let s = daemon.apply(next);
    assert_eq!(s.stopped, vec!["a".to_string()]);
    assert_eq!(s.restarted, vec!["b".to_string()]);
    assert_eq!(s.started, vec!["c".to_string()]);
    let names: Vec<String> = rt.status.all().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["b".to_string(), "c".to_string()]);
    daemon.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn counters_start_at_zero_for_the_kinds_a_scaler_has_and_leave_with_it() {
    let rt = Runtime::new(Clients::new(), true);
    let demo = Config::from_str_with_env(
        r#"
[[scaler]]
name = "x"
[scaler.source]
kind = "demo"
queue = "kinds"
pattern = "constant:rate=1"
[scaler.target]
kind = "demo"
queue = "kinds"
seconds_per_message = 1.0
[scaler.policy]
max_replicas = 5
messages_per_replica = 10
"#,
        std::path::Path::new("k.toml"),
        Vec::new(),
    )
    .expect("valid");
    let zero = |kind: &str, source_or_target: &str, label: &str| {
        let name = if source_or_target == "source" {
            "qscale_source_errors_total"
        } else {
            "qscale_target_errors_total"
        };
        format!("{name}{{error=\"{label}\",scaler=\"x\",{source_or_target}=\"{kind}\"}} 0")
    };
    let mut daemon = Daemon::start(rt.clone(), demo.clone());
    let text = rt.metrics.render();
    for l in SourceError::METRIC_LABELS {
        assert!(text.contains(&zero("demo", "source", l)), "{l}: {text}");
    }
    for l in TargetError::METRIC_LABELS {
        assert!(text.contains(&zero("demo", "target", l)), "{l}: {text}");
    }
    for d in ["up", "down"] {
        let series = format!("qscale_scale_operations_total{{direction=\"{d}\",scaler=\"x\"}} 0");
        assert!(text.contains(&series), "{text}");
    }

    // Another source and target kind: the demo series go, the new ones come.
    let (sqs, _) = scaler_config("x", "");
    let s = daemon.apply(sqs);
    assert_eq!(s.restarted, vec!["x".to_string()]);
    let text = rt.metrics.render();
    assert!(!text.contains("source=\"demo\""), "{text}");
    assert!(!text.contains("target=\"demo\""), "{text}");
    for l in SourceError::METRIC_LABELS {
        let series = format!("error=\"{l}\",scaler=\"x\",source=\"sqs\"}}");
        assert!(text.contains(&series), "{l}: {text}");
    }
    for l in TargetError::METRIC_LABELS {
        let series = format!("error=\"{l}\",scaler=\"x\",target=\"kubernetes\"}}");
        assert!(text.contains(&series), "{l}: {text}");
    }

    // Removed by a reload: nothing of it stays.
    daemon.apply(Config {
        scalers: Vec::new(),
        ..demo
    });
    let text = rt.metrics.render();
    assert!(!text.contains("scaler=\"x\""), "{text}");
    daemon.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn policy_state_is_shared_by_the_scaler_that_replaces_another() {
    // The daemon hands the same PolicyState to a restarted scaler; check the
    // state object itself carries the history (a scale-down stays held).
    let rt = Runtime::new(Clients::new(), false);
    let (_, mut cfg) = scaler_config("a", "");
    cfg.policy.scale_down.stabilization = Some(Duration::from_secs(600));
    let state: Arc<tokio::sync::Mutex<PolicyState>> = Default::default();
    let tgt = target(1);
    let src = source(100);
    let mut s1 = Scaler::new(
        cfg.clone(),
        DefaultsConfig::default(),
        state.clone(),
        rt.clone(),
    )
    .with_clients(src.clone(), tgt.clone());
    let p = s1.prepare().await;
    s1.finish(p).await;
    assert_eq!(*tgt.replicas.lock().unwrap(), 5);
    *src.visible.lock().unwrap() = 0;
    let mut s2 = Scaler::new(cfg, DefaultsConfig::default(), state, rt.clone())
        .with_clients(src, tgt.clone());
    let p = s2.prepare().await;
    s2.finish(p).await;
    assert_eq!(
        *tgt.replicas.lock().unwrap(),
        5,
        "the down-window remembered by the shared state holds"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_write_in_progress_finish() {
    let rt = Runtime::new(Clients::new(), false);
    let (cfg, _) = scaler_config("a", "");
    let tgt = target(1);
    *tgt.write_delay.lock().unwrap() = Duration::from_secs(2);
    let mut daemon = Daemon::start(
        rt.clone(),
        Config {
            scalers: vec![],
            ..cfg.clone()
        },
    );
    let s = scaler(cfg.scalers[0].clone(), &rt, source(40), tgt.clone());
    daemon.spawn(s, (cfg.scalers[0].clone(), cfg.defaults.clone()));
    // The first poll starts within a second; its write takes two.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        tgt.writes.lock().unwrap().is_empty(),
        "the write is still in progress"
    );
    let t = tokio::time::Instant::now();
    daemon.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        *tgt.writes.lock().unwrap(),
        vec![4],
        "the in-flight write completed"
    );
    assert!(
        t.elapsed() <= Duration::from_secs(2),
        "shutdown waited only for the write"
    );
}

#[tokio::test(start_paused = true)]
async fn a_storm_of_reloads_during_polls_loses_no_scaler_and_no_state() {
    let rt = Runtime::new(Clients::new(), false);
    let text = |max: u32| {
        format!(
            r#"
[defaults]
poll_interval = "1s"
[[scaler]]
name = "demo"
[scaler.source]
kind = "demo"
queue = "storm"
pattern = "constant:rate=40"
[scaler.target]
kind = "demo"
queue = "storm"
seconds_per_message = 1.0
startup_delay = "0s"
initial_replicas = 1
[scaler.policy]
min_replicas = 1
max_replicas = {max}
messages_per_replica = 10
[[scaler]]
name = "steady"
[scaler.source]
kind = "demo"
queue = "steady"
pattern = "constant:rate=1"
[scaler.target]
kind = "demo"
queue = "steady"
seconds_per_message = 1.0
[scaler.policy]
max_replicas = 5
messages_per_replica = 10
"#
        )
    };
    let parse = |t: String| {
        Config::from_str_with_env(&t, std::path::Path::new("s.toml"), Vec::new()).expect("valid")
    };
    let mut daemon = Daemon::start(rt.clone(), parse(text(30)));
    for i in 0..60u32 {
        // Reload every 150 ms: polls are in flight during many of them.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let s = daemon.apply(parse(text(31 + i % 2)));
        assert_eq!(s.restarted, vec!["demo".to_string()]);
        assert_eq!(s.unchanged, 1, "the unchanged scaler is never restarted");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names: Vec<String> = rt.status.all().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["demo".to_string(), "steady".to_string()]);
    let demo = rt.status.get("demo").expect("status");
    assert!(
        demo.last_success.is_some(),
        "the restarted scaler still polls"
    );
    assert!(
        demo.current.map(|c| c.desired).unwrap_or(0) > 1,
        "and still scales: {:?}",
        demo.reasons
    );
    daemon.shutdown(Duration::from_secs(1)).await;
}

/// A scaler whose workers drain two queues (both SQS, on made-up URLs: the
/// sources are injected).
fn two_queue_config() -> ScalerConfig {
    let text = r#"
[[scaler]]
name = "pool"
[[scaler.sources]]
name = "critical"
kind = "sqs"
queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/critical"
cloudwatch = false
[[scaler.sources]]
name = "bulk"
kind = "sqs"
queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/bulk"
cloudwatch = false
messages_per_replica = 50
[scaler.target]
kind = "kubernetes"
name = "w"
[scaler.policy]
max_replicas = 50
messages_per_replica = 10
tolerance = 0
"#;
    Config::from_str_with_env(text, std::path::Path::new("t.toml"), Vec::new())
        .expect("valid test config")
        .scalers[0]
        .clone()
}

#[tokio::test]
async fn the_queues_of_a_scaler_are_sampled_at_once_and_a_hanging_one_fails_alone() {
    let rt = Runtime::new(Clients::new(), false);
    let defaults = DefaultsConfig {
        sample_timeout: Duration::from_secs(1),
        ..DefaultsConfig::default()
    };
    let slow = |visible: u64, delay_ms: u64| -> Arc<dyn QueueSource> {
        Arc::new(ScriptedSource {
            visible: Mutex::new(visible),
            fail: Mutex::new(false),
            delay: Duration::from_millis(delay_ms),
        })
    };
    // Both take 0.7 s: one after the other would be 1.4 s.
    let tgt = target(2);
    let mut s = Scaler::new(
        two_queue_config(),
        defaults.clone(),
        Default::default(),
        rt.clone(),
    )
    .with_queue_clients(vec![slow(40, 700), slow(100, 700)], tgt.clone());
    let t = std::time::Instant::now();
    let p = s.prepare().await;
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1_200),
        "sampled one after the other: {took:?}"
    );
    s.finish(p).await;
    // critical 40 / 10 = 4, bulk 100 / 50 = 2: the pool needs 6.
    assert_eq!(*tgt.writes.lock().unwrap(), vec![6]);
    let st = rt.status.get("pool").unwrap();
    assert_eq!(st.queues.len(), 2);
    let needs: Vec<Option<u32>> = st
        .queues
        .iter()
        .map(|q| q.decision.as_ref().and_then(|d| d.replicas))
        .collect();
    assert_eq!(needs, [Some(4), Some(2)]);

    // The bulk queue hangs past the sample timeout: the poll still ends
    // within the timeout, decides on critical alone, never lowers the count
    // and names the hanging queue.
    let tgt = target(6);
    let mut s = Scaler::new(two_queue_config(), defaults, Default::default(), rt.clone())
        .with_queue_clients(vec![slow(80, 0), slow(100, 3_600_000)], tgt.clone());
    let t = std::time::Instant::now();
    let p = s.prepare().await;
    assert!(
        t.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        t.elapsed()
    );
    s.finish(p).await;
    assert_eq!(
        *tgt.writes.lock().unwrap(),
        vec![8],
        "critical alone: 80 / 10"
    );
    let st = rt.status.get("pool").unwrap();
    assert!(st.queues[0].error.is_none());
    assert_eq!(
        st.queues[1].error.as_ref().map(|e| e.label),
        Some("timeout")
    );
    let err = st.last_error.expect("the scaler shows the queue's error");
    assert!(
        err.message.starts_with("queue bulk: timed out"),
        "{}",
        err.message
    );
    assert!(
        st.reasons.iter().any(
            |r| r.to_string() == "combine: sum of 2 queues: critical 8 + bulk (no sample) -> 8"
        ),
        "{:?}",
        st.reasons
    );
    let metrics = rt.metrics.render();
    assert!(
        metrics.contains(
            "qscale_source_errors_total{error=\"timeout\",scaler=\"pool\",source=\"sqs\"} 1\n"
        ),
        "{metrics}"
    );
}

/// A pool draining two demo queues `first` and `second`, on the in-process
/// demo world.
fn demo_pool(first: &str, second: &str) -> Config {
    let text = format!(
        r#"
[defaults]
poll_interval = "200ms"
[[scaler]]
name = "pool"
[[scaler.sources]]
name = "{first}"
kind = "demo"
queue = "{first}"
pattern = "constant:rate=20"
[[scaler.sources]]
name = "{second}"
kind = "demo"
queue = "{second}"
pattern = "constant:rate=20"
[scaler.target]
kind = "demo"
queue = "{first}"
seconds_per_message = 1
[scaler.policy]
max_replicas = 10
messages_per_replica = 10
"#
    );
    Config::from_str_with_env(&text, std::path::Path::new("t.toml"), Vec::new())
        .expect("valid test config")
}

#[tokio::test]
async fn a_reload_that_renames_a_queue_drops_the_old_queues_series_only() {
    let rt = Runtime::new(Clients::new(), false);
    let mut daemon = Daemon::start(rt.clone(), demo_pool("critical", "bulk"));
    let series =
        |queue: &str| format!("qscale_queue_needed_replicas{{queue=\"{queue}\",scaler=\"pool\"}}");
    async fn until(rt: &Runtime, f: impl Fn(&str) -> bool) -> bool {
        for _ in 0..50 {
            if f(&rt.metrics.render()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
    assert!(
        until(&rt, |m| m.contains(&series("critical"))
            && m.contains(&series("bulk")))
        .await
    );
    let summary = daemon.apply(demo_pool("critical", "batch"));
    assert_eq!(summary.restarted, vec!["pool".to_string()]);
    assert!(until(&rt, |m| m.contains(&series("batch"))).await);
    let text = rt.metrics.render();
    assert!(!text.contains(&series("bulk")), "{text}");
    assert!(text.contains(&series("critical")), "{text}");
    daemon.shutdown(Duration::from_secs(1)).await;
}
