//! Reaction benchmark (ignored by default; run with
//! `scripts/bench.sh reaction`): time from the first message sent to the
//! scale write seen on the real API server, at poll_interval 1 s, median of
//! 20 trials. It prints figures; it asserts only that every trial reacted.
//!
//! Each trial starts from a Deployment at 0 replicas and an empty queue;
//! one message wakes it (activation from zero). The Deployment is read every
//! 10 ms, so figures carry up to 10 ms of observation error.

#[path = "support/kube.rs"]
mod kube_support;
#[path = "support/moto.rs"]
mod moto;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench.sh reaction"]
async fn first_message_to_scale_write_median_of_20() {
    let moto_url = moto::require().await;
    let sqs = moto::sqs(&moto_url).await;
    let k = kube_support::Kube::admin().await;
    let ns = k.namespace("reaction").await;
    k.create_deployment(&ns, "w", 0).await;
    let queue_url = moto::create_queue(&sqs, &moto::unique("reaction")).await;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("q.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[[scaler]]
name = "reaction"
poll_interval = "1s"
[scaler.source]
kind = "sqs"
queue_url = "{queue_url}"
endpoint_url = "{moto_url}"
region = "us-east-1"
cloudwatch = false
[scaler.target]
kind = "kubernetes"
namespace = "{ns}"
name = "w"
[scaler.policy]
min_replicas = 0
max_replicas = 5
messages_per_replica = 1
scale_to_zero_after = "1s"
[scaler.policy.scale_down]
stabilization = "0s"
cooldown = "0s"
"#
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(["run", "--config", cfg.to_str().expect("utf-8")])
        .env("KUBECONFIG", kube_support::admin_kubeconfig_path())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("qscale run");
    // Stop the daemon however the benchmark ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(child);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut trials = Vec::new();
    for _ in 0..20 {
        // Start each trial at a random phase of the poll cycle.
        tokio::time::sleep(Duration::from_millis(u64::from(
            rand::random::<u16>() % 1000,
        )))
        .await;
        let t0 = Instant::now();
        moto::send(&sqs, &queue_url, 1, 0).await;
        loop {
            if k.deployment_replicas(&ns, "w").await >= 1 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no reaction within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trials.push(t0.elapsed());
        // Drain by receiving and deleting (moto, like SQS, allows one
        // PurgeQueue a minute).
        loop {
            let got = sqs
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            if got.messages().is_empty() {
                break;
            }
            for m in got.messages() {
                if let Some(h) = m.receipt_handle() {
                    sqs.delete_message()
                        .queue_url(&queue_url)
                        .receipt_handle(h)
                        .send()
                        .await
                        .expect("delete");
                }
            }
        }
        let t = Instant::now();
        while k.deployment_replicas(&ns, "w").await != 0 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "did not return to zero"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(child);
    trials.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "reaction (first message -> scale write seen on the API server), poll_interval 1 s, 20 trials: \
         median {:.0} ms, min {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(trials[10]),
        ms(trials[0]),
        ms(trials[18]),
        ms(trials[19])
    );
}
