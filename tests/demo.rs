//! The demo source and target as the daemon builds them: from
//! config/demo.toml, through `SourceConfig::build` / `TargetConfig::build`
//! with one `Clients`, meeting on the same simulated queue.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use qscale::clients::Clients;
use qscale::config::Config;
use qscale::policy::{Policy, PolicyState, decide};

fn demo_config() -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    Config::load(&path).expect("config/demo.toml is valid")
}

#[tokio::test]
async fn the_demo_config_builds_a_source_and_target_that_share_one_queue() {
    let cfg = demo_config();
    let s = &cfg.scalers[0];
    let shared = Clients::new();
    let timeout = Duration::from_secs(1);
    let source = s
        .source
        .as_ref()
        .expect("one source")
        .build(&shared, timeout)
        .await
        .expect("source");
    let target = s.target.build(&shared, timeout).await.expect("target");
    assert_eq!((source.kind(), target.kind()), ("demo", "demo"));
    assert_eq!(shared.demo.queue_names(), vec!["demo"]);

    let sample = source.sample().await.expect("sample");
    assert!(sample.visible.is_some() && sample.in_flight.is_some());
    assert!(sample.oldest_age.is_some() && sample.arrival_rate.is_some());
    let current = target.current().await.expect("current");
    assert_eq!(current.desired, 1, "initial_replicas");

    // One turn of the control loop with the real policy: the target takes
    // whatever the policy decides.
    let policy = Policy::new(
        &s.policy,
        &s.source.as_ref().expect("one source").capabilities(),
    );
    let mut state = PolicyState::new();
    let d = decide(&policy, &mut state, Some(&sample), current, Instant::now());
    target.set_replicas(d.replicas + 2).await.expect("set");
    assert_eq!(target.current().await.unwrap().desired, d.replicas + 2);
}

#[tokio::test]
async fn rebuilding_on_a_reload_finds_the_same_queue_and_keeps_its_workers() {
    let cfg = demo_config();
    let s = &cfg.scalers[0];
    let shared = Clients::new();
    let t = Duration::from_secs(1);
    let target = s.target.build(&shared, t).await.unwrap();
    target.set_replicas(7).await.unwrap();
    let again = s.target.build(&shared, t).await.unwrap();
    assert_eq!(again.current().await.unwrap().desired, 7);
    let _ = s
        .source
        .as_ref()
        .expect("one source")
        .build(&shared, t)
        .await
        .unwrap();
    assert_eq!(shared.demo.queue_names().len(), 1);
}
