//! End to end: moto's SQS + the real kube-apiserver + `qscale run` as a real
//! child process. Messages arrive -> the Deployment's replicas rise to the
//! computed number; the queue drains -> they fall after the (short)
//! stabilization window; /metrics and /status agree and explain; reloads
//! apply or are rejected; a scaler whose endpoint is down does not stop the
//! others; SIGTERM exits 0 quickly.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/kube.rs"]
mod kube_support;
#[path = "support/moto.rs"]
mod moto;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon::{Daemon, free_port, get, wait_until};
use kube_support::Kube;

fn scaler_toml(
    name: &str,
    moto: &str,
    queue_url: &str,
    ns: &str,
    deploy: &str,
    max: u32,
) -> String {
    format!(
        r#"
[[scaler]]
name = "{name}"
poll_interval = "1s"
[scaler.source]
kind = "sqs"
queue_url = "{queue_url}"
endpoint_url = "{moto}"
region = "us-east-1"
cloudwatch = false
[scaler.target]
kind = "kubernetes"
namespace = "{ns}"
name = "{deploy}"
[scaler.policy]
min_replicas = 1
max_replicas = {max}
messages_per_replica = 20
tolerance = 0
[scaler.policy.scale_up]
policies = [{{ percent = 1000, period = "1s" }}]
[scaler.policy.scale_down]
stabilization = "3s"
cooldown = "0s"
policies = [{{ percent = 100, period = "1s" }}]
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn backlog_scales_a_real_deployment_up_and_down_and_the_daemon_explains_it() {
    let moto_url = moto::require().await;
    let sqs = moto::sqs(&moto_url).await;
    let k = Kube::admin().await;
    let ns = k.namespace("e2e").await;
    let deploy = "worker";
    k.create_deployment(&ns, deploy, 1).await;
    let queue_url = moto::create_queue(&sqs, &moto::unique("e2e")).await;

    // A second scaler whose SQS endpoint is down must not hold up the first.
    let dead_port = free_port();
    k.create_deployment(&ns, "other", 2).await;
    let dead = scaler_toml(
        "blind",
        &format!("http://127.0.0.1:{dead_port}"),
        &format!("http://127.0.0.1:{dead_port}/123456789012/nothing"),
        &ns,
        "other",
        5,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("qscale.toml");
    let port = free_port();
    let header = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[defaults]\nsample_timeout = \"2s\"\nactuate_timeout = \"5s\"\n"
    );
    let good = scaler_toml("e2e", &moto_url, &queue_url, &ns, deploy, 20);
    std::fs::write(&cfg_path, format!("{header}{good}{dead}")).expect("write config");

    let mut daemon = Daemon::start(
        &cfg_path,
        &kube_support::admin_kubeconfig_path(),
        format!("127.0.0.1:{port}").parse().expect("addr"),
    );

    // 200 messages -> ceil(200 / 20) = 10 replicas.
    let sent = Instant::now();
    moto::send(&sqs, &queue_url, 200, 0).await;
    let took = k
        .wait_replicas(&ns, deploy, 10, Duration::from_secs(20))
        .await;
    eprintln!(
        "200 messages sent in {:?}; replicas reached 10 {:?} later",
        sent.elapsed() - took,
        took
    );

    let text = daemon.metrics();
    for want in [
        "qscale_queue_messages{scaler=\"e2e\",state=\"visible\"} 200",
        "qscale_replicas{kind=\"desired\",scaler=\"e2e\"} 10",
        "qscale_scale_operations_total{direction=\"up\",scaler=\"e2e\"} ",
        "qscale_source_errors_total{error=\"unavailable\",scaler=\"blind\",source=\"sqs\"} ",
    ] {
        // Counter series exist at 0 from the start: wait for a count.
        wait_until(Duration::from_secs(10), want, || {
            daemon
                .metrics()
                .lines()
                .any(|l| l.starts_with(want) && !l.ends_with(" 0"))
        });
    }
    assert!(text.contains("qscale_build_info{version="), "{text}");
    // SQS without CloudWatch measures no age: qscale's estimate is exported
    // under its own name, and the measured series stays absent.
    assert!(
        text.contains("qscale_queue_oldest_message_age_estimated_seconds{scaler=\"e2e\"} "),
        "{text}"
    );
    assert!(
        !text.contains("qscale_queue_oldest_message_age_seconds{scaler=\"e2e\"}"),
        "{text}"
    );
    let st = daemon.scaler("e2e");
    assert_eq!(st["desired"], 10, "{st}");
    assert_eq!(st["last_action"]["to"], 10, "{st}");
    wait_until(Duration::from_secs(5), "the decision explained", || {
        daemon.scaler("e2e")["reasons"]
            .to_string()
            .contains("backlog 200 / 20 per replica -> 10")
    });
    let blind = daemon.scaler("blind");
    // Refused at once, or (the SDK retrying on a loaded machine) out of
    // sample_timeout: either way the scaler is blind and says so.
    let label = blind["last_error"]["label"].as_str().unwrap_or_default();
    assert!(["unavailable", "timeout"].contains(&label), "{blind}");
    assert_eq!(
        k.deployment_replicas(&ns, "other").await,
        2,
        "a blind scaler never scales down"
    );
    // /readyz names the blind scaler until its fallback explains it.
    let (code, body) = get(daemon.addr, "/readyz").expect("/readyz");
    assert!(
        code == 503 && body.contains("blind") || code == 200,
        "{code} {body}"
    );

    // Drain the queue: replicas fall back to 1 after the 3 s window.
    sqs.purge_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .expect("purge");
    let drained = Instant::now();
    k.wait_replicas(&ns, deploy, 1, Duration::from_secs(20))
        .await;
    assert!(
        drained.elapsed() >= Duration::from_secs(2),
        "scale-down must wait for the stabilization window"
    );
    let st = daemon.scaler("e2e");
    assert_eq!(st["desired"], 1, "{st}");
    wait_until(Duration::from_secs(5), "down counted", || {
        daemon
            .metrics()
            .contains("qscale_scale_operations_total{direction=\"down\",scaler=\"e2e\"} 1")
    });

    let (code, took) = daemon.terminate();
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_a_valid_config_and_rejects_an_invalid_one() {
    let moto_url = moto::require().await;
    let sqs = moto::sqs(&moto_url).await;
    let k = Kube::admin().await;
    let ns = k.namespace("reload").await;
    k.create_deployment(&ns, "w", 1).await;
    let queue_url = moto::create_queue(&sqs, &moto::unique("reload")).await;
    moto::send(&sqs, &queue_url, 100, 0).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("qscale.toml");
    let port = free_port();
    let header = format!("[server]\nlisten = \"127.0.0.1:{port}\"\n");
    std::fs::write(
        &cfg_path,
        format!(
            "{header}{}",
            scaler_toml("r", &moto_url, &queue_url, &ns, "w", 3)
        ),
    )
    .expect("write");
    let mut daemon = Daemon::start(
        &cfg_path,
        &kube_support::admin_kubeconfig_path(),
        format!("127.0.0.1:{port}").parse().expect("addr"),
    );
    // 100 messages want 5, but max_replicas is 3.
    k.wait_replicas(&ns, "w", 3, Duration::from_secs(20)).await;

    // An invalid file is rejected and counted; scaling goes on unchanged.
    std::fs::write(
        &cfg_path,
        format!("{header}[[scaler]]\nname = \"r\"\nbogus = 1\n"),
    )
    .expect("write");
    daemon.signal("HUP");
    wait_until(Duration::from_secs(10), "reload failure counted", || {
        daemon
            .metrics()
            .contains("qscale_config_reload_failures_total 1")
    });
    assert_eq!(daemon.scaler("r")["desired"], 3);

    // A valid file raises max_replicas: the change is picked up without a
    // signal (the file is watched) and the scaler scales further.
    std::fs::write(
        &cfg_path,
        format!(
            "{header}{}",
            scaler_toml("r", &moto_url, &queue_url, &ns, "w", 10)
        ),
    )
    .expect("write");
    k.wait_replicas(&ns, "w", 5, Duration::from_secs(20)).await;

    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn a_port_in_use_is_a_clear_error_at_start() {
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("q.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{}",
            scaler_toml(
                "p",
                "http://127.0.0.1:1",
                "http://127.0.0.1:1/123456789012/q",
                "default",
                "w",
                3
            )
        ),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(["run", "--config", cfg.to_str().expect("utf-8")])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("server.listen"), "{err}");
}

#[test]
fn an_unreadable_config_is_a_clear_error_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(["run", "--config", "/nonexistent/qscale.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read config file /nonexistent/qscale.toml"),
        "{err}"
    );
}
