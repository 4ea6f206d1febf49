//! Fault suite against real peers: the SQS endpoint goes away and comes back
//! (no scale-down while blind, fallback after N failures, recovery, error
//! metrics); the target is deleted and recreated; the wall clock jumps.
//! Kubernetes API faults (409, 429, 500, hangs, drops) are in
//! tests/kubernetes_target.rs through the fault proxy; reload races and
//! shutdown during a write are in tests/control_loop.rs.

#[path = "support/kube.rs"]
mod kube_support;
#[path = "support/moto.rs"]
mod moto;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use qscale::config::Config;
use qscale::contract::{Capabilities, Replicas, Sample};
use qscale::control_loop::{Runtime, Scaler};
use qscale::policy::{Policy, PolicyState, decide};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};

/// A TCP forwarder to moto that can be switched off: while off it accepts
/// and drops connections at once, as a dead endpoint behind a load balancer
/// would.
struct Switch {
    port: u16,
    on: Arc<AtomicBool>,
}

async fn switch_to(upstream: String) -> Switch {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let on = Arc::new(AtomicBool::new(true));
    let flag = on.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !flag.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut out) = TcpStream::connect(upstream).await {
                    let _ = copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    Switch { port, on }
}

fn config(endpoint: &str, queue_url: &str, ns: &str, deploy: &str) -> Config {
    let text = format!(
        r#"
[defaults]
sample_timeout = "3s"
actuate_timeout = "5s"
[[scaler]]
name = "f"
[scaler.source]
kind = "sqs"
queue_url = "{queue_url}"
endpoint_url = "{endpoint}"
region = "us-east-1"
cloudwatch = false
[scaler.target]
kind = "kubernetes"
namespace = "{ns}"
name = "{deploy}"
[scaler.policy]
min_replicas = 1
max_replicas = 20
messages_per_replica = 20
tolerance = 0
[scaler.policy.scale_down]
stabilization = "0s"
cooldown = "0s"
[scaler.policy.fallback]
after_failures = 3
action = "hold"
"#
    );
    Config::from_str_with_env(&text, std::path::Path::new("f.toml"), Vec::new()).expect("valid")
}

async fn poll(s: &mut Scaler) {
    let p = s.prepare().await;
    s.finish(p).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blind_scaler_holds_falls_back_and_recovers_when_the_endpoint_returns() {
    let moto_url = moto::require().await;
    let sqs = moto::sqs(&moto_url).await;
    let k = kube_support::Kube::admin().await;
    let ns = k.namespace("fault").await;
    k.create_deployment(&ns, "w", 1).await;
    let queue_url = moto::create_queue(&sqs, &moto::unique("fault")).await;
    let upstream = moto_url.trim_start_matches("http://").to_string();
    let sw = switch_to(upstream).await;
    let endpoint = format!("http://127.0.0.1:{}", sw.port);
    // Address the queue through the switch too.
    let path = queue_url
        .split_once("://")
        .and_then(|(_, r)| r.split_once('/'))
        .map(|(_, p)| p)
        .expect("path");
    let cfg = config(&endpoint, &format!("{endpoint}/{path}"), &ns, "w");

    let shared = moto::shared();
    shared.kube.insert(None, k.client.clone()).await;
    let rt = Runtime::new(shared, false);
    let mut s = Scaler::new(
        cfg.scalers[0].clone(),
        cfg.defaults.clone(),
        Default::default(),
        rt.clone(),
    );

    moto::send(&sqs, &queue_url, 100, 0).await;
    poll(&mut s).await;
    assert_eq!(k.deployment_replicas(&ns, "w").await, 5);

    // The endpoint dies while the queue drains: qscale cannot see it.
    sw.on.store(false, Ordering::SeqCst);
    sqs.purge_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .expect("purge");
    for i in 1..=4 {
        poll(&mut s).await;
        assert_eq!(
            k.deployment_replicas(&ns, "w").await,
            5,
            "poll {i}: no scale-down while blind"
        );
        let st = rt.status.get("f").expect("status");
        assert_eq!(st.fallback_active, i >= 3, "poll {i}");
        assert_eq!(st.last_error.as_ref().map(|e| e.phase), Some("sample"));
    }
    let text = rt.metrics.render();
    assert!(
        text.contains("qscale_fallback_active{scaler=\"f\"} 1"),
        "{text}"
    );
    let errors: u64 = text
        .lines()
        .filter(|l| l.starts_with("qscale_source_errors_total{") && l.contains("scaler=\"f\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(errors, 4, "{text}");
    // The ready probe explains the fallback rather than failing.
    assert!(rt.status.readiness(Instant::now()).is_ok());

    // It comes back: the empty queue is seen and replicas fall.
    sw.on.store(true, Ordering::SeqCst);
    poll(&mut s).await;
    let st = rt.status.get("f").expect("status");
    assert!(!st.fallback_active);
    assert!(st.last_error.is_none());
    assert_eq!(k.deployment_replicas(&ns, "w").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_target_is_not_found_and_a_recreated_one_is_scaled_again() {
    let moto_url = moto::require().await;
    let sqs = moto::sqs(&moto_url).await;
    let k = kube_support::Kube::admin().await;
    let ns = k.namespace("recreate").await;
    k.create_deployment(&ns, "w", 1).await;
    let queue_url = moto::create_queue(&sqs, &moto::unique("recreate")).await;
    let cfg = config(&moto_url, &queue_url, &ns, "w");
    let shared = moto::shared();
    shared.kube.insert(None, k.client.clone()).await;
    let rt = Runtime::new(shared, false);
    let mut s = Scaler::new(
        cfg.scalers[0].clone(),
        cfg.defaults.clone(),
        Default::default(),
        rt.clone(),
    );
    moto::send(&sqs, &queue_url, 60, 0).await;
    poll(&mut s).await;
    assert_eq!(k.deployment_replicas(&ns, "w").await, 3);

    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(k.client.clone(), &ns);
    api.delete("w", &Default::default()).await.expect("delete");
    poll(&mut s).await;
    let st = rt.status.get("f").expect("status");
    let err = st.last_error.expect("an error");
    assert_eq!(
        (err.phase, err.label),
        ("target", "not_found"),
        "{}",
        err.message
    );

    k.create_deployment(&ns, "w", 1).await;
    poll(&mut s).await;
    assert_eq!(
        k.deployment_replicas(&ns, "w").await,
        3,
        "the recreated Deployment is scaled again"
    );
}

#[test]
fn the_wall_clock_in_a_sample_never_changes_a_decision() {
    // The policy runs on monotonic time; a sample's wall-clock stamp (which
    // jumps with NTP or a VM pause) is for display only.
    let text = r#"
[[scaler]]
name = "c"
source = { kind = "sqs", queue_name = "q" }
target = { kind = "kubernetes", name = "w" }
[scaler.policy]
max_replicas = 50
messages_per_replica = 10
max_message_age = "1m"
[scaler.policy.throughput]
"#;
    let cfg =
        Config::from_str_with_env(text, std::path::Path::new("c.toml"), Vec::new()).expect("valid");
    let caps: Capabilities = cfg.scalers[0]
        .source
        .as_ref()
        .expect("one source")
        .capabilities();
    let policy = Policy::new(&cfg.scalers[0].policy, &caps);
    let t0 = Instant::now();
    let run = |wall: &dyn Fn(u64) -> SystemTime| {
        let mut st = PolicyState::new();
        let mut out = Vec::new();
        let mut cur = 2;
        for i in 0..40u64 {
            let s = Sample {
                visible: Some(50 + 10 * (i % 7)),
                in_flight: Some(5),
                delayed: Some(0),
                oldest_age: Some(Duration::from_secs(20 + i)),
                arrival_rate: Some(3.0),
                ..Sample::empty(wall(i))
            };
            let now = t0 + Duration::from_secs(15 * i);
            let d = decide(
                &policy,
                &mut st,
                Some(&s),
                Replicas::new(cur, Some(cur)),
                now,
            );
            st.record_scale(cur, d.replicas, now);
            cur = d.replicas;
            out.push(d.replicas);
        }
        out
    };
    let steady = run(&|i| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + 15 * i));
    let backwards =
        run(&|i| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 - 3600 * i));
    let jumpy = run(&|i| {
        if i % 2 == 0 {
            SystemTime::UNIX_EPOCH
        } else {
            SystemTime::now() + Duration::from_secs(86_400 * 365)
        }
    });
    assert_eq!(steady, backwards);
    assert_eq!(steady, jumpy);
}
