//! The chaos run: the real `qscale run` binary scales a Deployment on a real
//! kube-apiserver from an SQS queue in moto while the test breaks what it
//! depends on, one thing at a time, and checks that it never writes a wrong
//! number, recovers by itself and says honestly how it is doing.
//!
//! The faults, in order (docs/testing.md has the timeline):
//! 1. moto is killed for 30 s (the test's own moto: the shared one serves
//!    other tests). moto keeps queues in memory, so the restarted one has
//!    none until the test creates the queue again, as after a lost region.
//! 2. The kube-apiserver the daemon talks to is killed and started again
//!    (the test's own instance on the shared etcd; see
//!    `kube_support::OwnApiServer`), while the queue changes.
//! 3. The config file is replaced by a broken one and the daemon gets
//!    SIGHUP; then by a good one that changes the scaler, and SIGHUP again.
//!
//! What must hold: no replica change at all while the daemon is blind (the
//! queue gone, or the target unreadable); the right count within two polls
//! (plus slack for a loaded machine) once the peer is back; every write the
//! daemon says it made (its log, its counters, /status) is exactly one change
//! of the Deployment seen from outside (its `metadata.generation` and a
//! 100 ms watch of `spec.replicas`); the broken reload refused while the old
//! scaler keeps scaling; /readyz as docs/metrics.md promises at every probe.
//!
//! Loopback only, bounded (about two minutes), and it stops everything it
//! started.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/kube.rs"]
mod kube_support;
#[path = "support/moto.rs"]
mod moto;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::Value;

use daemon::{Daemon, free_port, get, sample_value};
use kube_support::{Kube, OwnApiServer};
use moto::MotoProcess;

const SCALER: &str = "chaos";
const POLL: Duration = Duration::from_secs(1);
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
const ACTUATE_TIMEOUT: Duration = Duration::from_secs(3);
const MESSAGES_PER_REPLICA: usize = 10;
const MOTO_DOWN: Duration = Duration::from_secs(30);
const APISERVER_DOWN: Duration = Duration::from_secs(10);
/// The scale-down stabilization window of the test's policy.
const STABILIZATION: Duration = Duration::from_secs(3);
/// Added to every "within two polls": a poll that started just before the
/// peer came back can still run into its timeout, and two cores shared with
/// the rest of the suite add seconds of their own.
const SLACK: Duration = Duration::from_secs(8);

fn config(listen: SocketAddr, moto_url: &str, queue_url: &str, ns: &str, max: u32) -> String {
    format!(
        r#"[server]
listen = "{listen}"
[defaults]
sample_timeout = "{sample}s"
actuate_timeout = "{actuate}s"

[[scaler]]
name = "{SCALER}"
poll_interval = "{poll}s"
[scaler.source]
kind = "sqs"
queue_url = "{queue_url}"
endpoint_url = "{moto_url}"
region = "us-east-1"
cloudwatch = false
[scaler.target]
kind = "kubernetes"
namespace = "{ns}"
name = "worker"
[scaler.policy]
min_replicas = 1
max_replicas = {max}
messages_per_replica = {MESSAGES_PER_REPLICA}
tolerance = 0
[scaler.policy.scale_up]
policies = [{{ percent = 1000, period = "1s" }}]
[scaler.policy.scale_down]
stabilization = "{stab}s"
cooldown = "0s"
policies = [{{ percent = 100, period = "1s" }}]
"#,
        sample = SAMPLE_TIMEOUT.as_secs(),
        actuate = ACTUATE_TIMEOUT.as_secs(),
        poll = POLL.as_secs(),
        stab = STABILIZATION.as_secs(),
    )
}

/// Replace the config file the way a ConfigMap update does (a rename), so
/// the daemon's file watcher never reads half a file.
fn replace_config(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// One state of the Deployment as the shared apiserver shows it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    replicas: i32,
    generation: i64,
}

/// Watches the Deployment through the shared apiserver (which stays up)
/// every 100 ms and keeps every change of `spec.replicas` or generation.
fn watch_deployment(k: &Kube, ns: &str, stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let api: Api<Deployment> = Api::namespaced(k.client.clone(), ns);
    let out = seen.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(d) = api.get("worker").await {
                let s = Seen {
                    at: Instant::now(),
                    replicas: d.spec.replicas.unwrap_or(0),
                    generation: d.metadata.generation.unwrap_or(0),
                };
                let mut v = out.lock().unwrap();
                let changed = v
                    .last()
                    .is_none_or(|l| (l.replicas, l.generation) != (s.replicas, s.generation));
                if changed {
                    v.push(s);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    seen
}

/// One look at /readyz, with what /status said right after.
#[derive(Debug, Clone)]
struct Probe {
    at: Instant,
    code: u16,
    body: String,
    fallback: bool,
    error_phase: Option<String>,
}

/// Probes /readyz and /status every 250 ms on a thread of its own.
fn probe_readiness(addr: SocketAddr, stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<Probe>>> {
    let probes = Arc::new(Mutex::new(Vec::new()));
    let out = probes.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            if let Some((code, body)) = get(addr, "/readyz") {
                let st: Value = get(addr, "/status")
                    .and_then(|(_, b)| serde_json::from_str(&b).ok())
                    .unwrap_or(Value::Null);
                let me = st["scalers"]
                    .as_array()
                    .and_then(|a| a.iter().find(|s| s["name"] == SCALER).cloned())
                    .unwrap_or(Value::Null);
                out.lock().unwrap().push(Probe {
                    at,
                    code,
                    body,
                    fallback: me["fallback_active"] == true,
                    error_phase: me["last_error"]["phase"].as_str().map(str::to_string),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    probes
}

fn probes_between(p: &[Probe], from: Instant, to: Instant) -> Vec<Probe> {
    p.iter()
        .filter(|x| x.at >= from && x.at < to)
        .cloned()
        .collect()
}

fn changes_between(s: &[Seen], from: Instant, to: Instant) -> Vec<Seen> {
    s.iter()
        .filter(|x| x.at >= from && x.at < to)
        .copied()
        .collect()
}

fn replicas_now(s: &Mutex<Vec<Seen>>) -> i32 {
    s.lock().unwrap().last().map(|l| l.replicas).unwrap_or(-1)
}

/// Wait until the watched Deployment has `want` replicas; returns how long
/// that took from `since`.
async fn wait_replicas(
    s: &Mutex<Vec<Seen>>,
    want: i32,
    since: Instant,
    limit: Duration,
) -> Duration {
    loop {
        if replicas_now(s) == want {
            let at = s.lock().unwrap().last().map(|l| l.at).unwrap_or(since);
            return at.saturating_duration_since(since);
        }
        assert!(
            since.elapsed() < limit,
            "replicas stayed {} for {:?}, wanted {want}",
            replicas_now(s),
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until /readyz says 200 and /status shows no fallback; returns how
/// long that took from `since`.
fn wait_ready(d: &Daemon, since: Instant, limit: Duration) -> Duration {
    loop {
        let ready = get(d.addr, "/readyz").is_some_and(|(c, _)| c == 200);
        if ready && d.scaler(SCALER)["fallback_active"] == false {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "/readyz not ready {:?} after the peer came back: {:?}",
            since.elapsed(),
            get(d.addr, "/readyz")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scale_operations(d: &Daemon, direction: &str) -> f64 {
    let m = d.metrics();
    sample_value(
        &m,
        &format!("qscale_scale_operations_total{{direction=\"{direction}\",scaler=\"{SCALER}\"}}"),
    )
    .unwrap_or_else(|| panic!("no {direction} series in /metrics:\n{m}"))
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_queue_a_restarted_apiserver_and_a_broken_reload_cause_no_wrong_write() {
    let test_start = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let k = Kube::admin().await;
    let mut moto = MotoProcess::start(free_port(), &dir.path().join("moto.log")).await;
    let mut api = OwnApiServer::start(free_port(), dir.path()).await;
    eprintln!(
        "chaos: own moto and apiserver up after {:?}",
        test_start.elapsed()
    );

    let sqs = moto::sqs(&moto.url()).await;
    let queue_name = moto::unique("chaos");
    let queue_url = moto::create_queue(&sqs, &queue_name).await;
    let ns = k.namespace("chaos").await;
    k.create_deployment(&ns, "worker", 1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = watch_deployment(&k, &ns, stop.clone());
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let cfg_path = dir.path().join("qscale.toml");
    let moto_url = moto.url();
    let good = |max| config(listen, &moto_url, &queue_url, &ns, max);
    replace_config(&cfg_path, &good(20));
    let kubeconfig = api.kubeconfig.to_str().expect("utf-8").to_string();
    let mut d = Daemon::start_logging_to(
        &cfg_path,
        &kubeconfig,
        listen,
        &dir.path().join("qscale.log"),
    );
    let probes = probe_readiness(listen, stop.clone());
    let first_generation = {
        Api::<Deployment>::namespaced(k.client.clone(), &ns)
            .get("worker")
            .await
            .expect("get deployment")
            .metadata
            .generation
            .unwrap_or(0)
    };

    // Steady state: 50 messages -> 5 replicas, ready.
    let t = Instant::now();
    moto::send_batch(&sqs, &queue_url, 50).await;
    let took = wait_replicas(&seen, 5, t, Duration::from_secs(20)).await;
    eprintln!("chaos: 50 messages -> 5 replicas in {took:?}");
    wait_ready(&d, Instant::now(), Duration::from_secs(10));

    // 1. moto dies for 30 s.
    let steady_from = Instant::now();
    tokio::time::sleep(3 * POLL).await;
    let steady_probes = probes_between(&probes.lock().unwrap(), steady_from, Instant::now());
    moto.kill();
    let moto_killed = Instant::now();
    eprintln!("chaos: moto killed at {:?}", test_start.elapsed());
    tokio::time::sleep(MOTO_DOWN).await;
    moto.restart().await;
    let moto_back = Instant::now();
    // The restarted moto has forgotten the queue: the same name gives the
    // same URL, now with 150 messages -> 15 replicas.
    assert_eq!(moto::create_queue(&sqs, &queue_name).await, queue_url);
    moto::send_batch(&sqs, &queue_url, 150).await;
    let queue_back = Instant::now();
    eprintln!(
        "chaos: moto back after {:?} down; queue refilled in {:?}",
        moto_back - moto_killed,
        queue_back - moto_back
    );
    let recovered = wait_replicas(&seen, 15, queue_back, 2 * POLL + SLACK).await;
    let ready_again = wait_ready(&d, queue_back, 2 * POLL + SLACK);
    eprintln!(
        "chaos: after moto came back: 15 replicas {recovered:?} and /readyz 200 {ready_again:?} after the queue was refilled"
    );
    let moto_phase_errors = sample_value(
        &d.metrics(),
        &format!(
            "qscale_source_errors_total{{error=\"unavailable\",scaler=\"{SCALER}\",source=\"sqs\"}}"
        ),
    )
    .unwrap_or(0.0)
        + sample_value(
            &d.metrics(),
            &format!(
                "qscale_source_errors_total{{error=\"timeout\",scaler=\"{SCALER}\",source=\"sqs\"}}"
            ),
        )
        .unwrap_or(0.0);

    // 2. The apiserver restarts; meanwhile the queue drops to 60 -> 6.
    let api_killed = Instant::now();
    api.kill();
    eprintln!("chaos: apiserver killed at {:?}", test_start.elapsed());
    sqs.purge_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .expect("purge");
    moto::send_batch(&sqs, &queue_url, 60).await;
    tokio::time::sleep(APISERVER_DOWN.saturating_sub(api_killed.elapsed())).await;
    let api_restart = Instant::now();
    api.restart().await;
    let api_back = Instant::now();
    eprintln!(
        "chaos: apiserver down {:?}, ready again {:?} after its start",
        api_restart - api_killed,
        api_back - api_restart
    );
    // Measured from the restart: the daemon may well get through before
    // the test's own /readyz probe of the apiserver does.
    let recovered_api = wait_replicas(
        &seen,
        6,
        api_restart,
        (api_back - api_restart) + 2 * POLL + STABILIZATION + SLACK,
    )
    .await;
    let ready_api = wait_ready(&d, api_restart, (api_back - api_restart) + 2 * POLL + SLACK);
    eprintln!(
        "chaos: after the apiserver was started again: 6 replicas {recovered_api:?}, /readyz 200 {ready_api:?}"
    );

    // 3. A broken config and SIGHUP: refused, the old scaler keeps going.
    let failures_before =
        sample_value(&d.metrics(), "qscale_config_reload_failures_total").unwrap_or(-1.0);
    assert_eq!(failures_before, 0.0, "no reload has failed yet");
    let broken = good(20)
        .replace("min_replicas = 1", "min_replicas = 30\nbogus = 1")
        .replace("[scaler.target]", "[scaler.target]\nwhatever = true");
    let broken_at = Instant::now();
    replace_config(&cfg_path, &broken);
    d.signal("HUP");
    daemon::wait_until(Duration::from_secs(10), "the broken reload counted", || {
        sample_value(&d.metrics(), "qscale_config_reload_failures_total").unwrap_or(0.0) >= 1.0
    });
    let t = Instant::now();
    moto::send_batch(&sqs, &queue_url, 40).await;
    let kept_scaling = wait_replicas(&seen, 10, t, 2 * POLL + SLACK).await;
    eprintln!(
        "chaos: with the broken file in place, 100 messages -> 10 replicas in {kept_scaling:?}"
    );

    // ... and a good one that lowers max_replicas to 8: applied.
    let good_at = Instant::now();
    replace_config(&cfg_path, &good(8));
    d.signal("HUP");
    let applied = wait_replicas(&seen, 8, good_at, 2 * POLL + SLACK).await;
    let ready_reload = wait_ready(&d, good_at, 2 * POLL + SLACK);
    eprintln!("chaos: good reload -> 8 replicas in {applied:?}, /readyz 200 {ready_reload:?}");
    let failures =
        sample_value(&d.metrics(), "qscale_config_reload_failures_total").unwrap_or(-1.0);

    // Let the watchers see the end state, then stop everything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ups = scale_operations(&d, "up");
    let downs = scale_operations(&d, "down");
    let last_action = d.scaler(SCALER)["last_action"].clone();
    let (code, _) = d.terminate();
    stop.store(true, Ordering::Relaxed);
    let end = Instant::now();
    let events = d.log_events();
    let seen = seen.lock().unwrap().clone();
    let all_probes = probes.lock().unwrap().clone();
    drop(api);
    drop(moto);

    // ---- What must hold. ----
    assert_eq!(code, Some(0), "SIGTERM exits 0");

    // No change at all while blind.
    let blind_moto = changes_between(&seen, moto_killed, moto_back);
    assert!(
        blind_moto.is_empty(),
        "a write while moto was down: {blind_moto:?}"
    );
    // While the queue fills again, a partial count must not scale down.
    let after_moto = changes_between(&seen, moto_back, api_killed);
    assert!(
        !after_moto.is_empty() && after_moto.windows(2).all(|w| w[1].replicas > w[0].replicas),
        "only scale-ups after moto came back: {after_moto:?}"
    );
    assert!(after_moto[0].replicas > 5, "{after_moto:?}");
    let blind_api = changes_between(&seen, api_killed, api_restart);
    assert!(
        blind_api.is_empty(),
        "a write while the apiserver was away: {blind_api:?}"
    );
    assert!(
        moto_phase_errors >= 3.0,
        "the dead queue was counted: {moto_phase_errors}"
    );

    // Every write the daemon made is one change of the Deployment, and
    // every change is one of its writes.
    let writes: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["scaler"] == SCALER)
        .filter(|e| e["message"] == "scaled up" || e["message"] == "scaled down")
        .filter_map(|e| Some((as_u64(&e["from"])?, as_u64(&e["to"])?)))
        .collect();
    let observed: Vec<(u64, u64)> = seen
        .windows(2)
        .filter(|w| w[0].replicas != w[1].replicas)
        .map(|w| (w[0].replicas as u64, w[1].replicas as u64))
        .collect();
    eprintln!("chaos: writes logged {writes:?}; changes observed {observed:?}");
    for e in events
        .iter()
        .filter(|e| e["message"] == "scaled up" || e["message"] == "scaled down")
    {
        eprintln!("chaos:   {} -> {}: {}", e["from"], e["to"], e["reasons"]);
    }
    assert_eq!(
        writes, observed,
        "the log's writes against the Deployment's changes"
    );
    let generation = seen.last().map(|s| s.generation).unwrap_or(0);
    assert_eq!(
        (generation - first_generation) as usize,
        writes.len(),
        "one generation per write: {seen:?}"
    );
    let logged_ups = writes.iter().filter(|(f, t)| t > f).count() as f64;
    assert_eq!((ups, downs), (logged_ups, writes.len() as f64 - logged_ups));
    assert_eq!(last_action["to"], 8, "{last_action}");
    assert_eq!(last_action["from"], 10, "{last_action}");

    // The broken reload: refused, counted, logged; the good one applied.
    assert!(
        (1.0..=2.0).contains(&failures),
        "one refused reload (two if the file watcher saw the file before the signal): {failures}"
    );
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("config reload rejected"))
        })
        .collect();
    assert!(!rejected.is_empty(), "no rejection logged: {events:?}");
    let text: String = rejected.iter().map(|e| e["message"].to_string()).collect();
    for want in ["bogus", "whatever", "min_replicas"] {
        assert!(text.contains(want), "the rejection names {want}: {text}");
    }
    let reloaded = events
        .iter()
        .any(|e| e["message"] == "config reloaded" && e["restarted"].to_string().contains(SCALER));
    assert!(reloaded, "the good reload restarted the scaler: {events:?}");

    // /readyz: ready in steady state; while moto is down, either not ready
    // and naming the scaler, or ready because the fallback holds (which
    // /status shows); not ready while the apiserver is away; ready while the
    // broken file is in place.
    assert!(!steady_probes.is_empty());
    for p in &steady_probes {
        assert_eq!(p.code, 200, "steady state: {p:?}");
    }
    let grace = 3 * POLL + SAMPLE_TIMEOUT + Duration::from_secs(1);
    let moto_probes = probes_between(&all_probes, moto_killed + grace, moto_back);
    assert!(moto_probes.len() > 20, "{moto_probes:?}");
    for p in &moto_probes {
        let honest = (p.code == 503 && p.body.contains(&format!("{SCALER}:")))
            || (p.code == 200 && p.fallback);
        assert!(honest, "/readyz while moto is down: {p:?}");
        assert_eq!(p.error_phase.as_deref(), Some("sample"), "{p:?}");
    }
    eprintln!(
        "chaos: /readyz while moto was down: {} probes, {} answered 503, {} answered 200 in fallback",
        moto_probes.len(),
        moto_probes.iter().filter(|p| p.code == 503).count(),
        moto_probes.iter().filter(|p| p.code == 200).count()
    );
    assert!(
        moto_probes.iter().any(|p| p.fallback),
        "the fallback took over"
    );
    let api_grace = 3 * POLL + ACTUATE_TIMEOUT + Duration::from_secs(1);
    let api_probes = probes_between(&all_probes, api_killed + api_grace, api_restart);
    assert!(!api_probes.is_empty());
    for p in &api_probes {
        assert!(
            p.code == 503 && p.body.contains(&format!("{SCALER}:")) && !p.fallback,
            "/readyz while the apiserver is away: {p:?}"
        );
        assert_eq!(p.error_phase.as_deref(), Some("target"), "{p:?}");
    }
    eprintln!(
        "chaos: /readyz while the apiserver was away: {} probes, all 503; reload failures counted: {failures}",
        api_probes.len()
    );
    for p in probes_between(&all_probes, broken_at, good_at) {
        assert_eq!(p.code, 200, "a refused reload changes nothing: {p:?}");
    }

    let total = end - test_start;
    eprintln!("chaos: whole run {total:?}");
    assert!(
        total < Duration::from_secs(180),
        "the chaos run took {total:?}"
    );
}
