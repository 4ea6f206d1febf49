//! End to end: one worker pool, several queues (`[[scaler.sources]]`).
//!
//! Against moto's SQS and the real kube-apiserver, `qscale run` sizes a
//! Deployment for the sum of two queues' needs (each with its own
//! `messages_per_replica`), and /status shows each queue's proposal; a
//! second scaler (`combine = "max"`) with one unreachable queue (a queue URL
//! that does not exist) holds its Deployment from scaling down, while its
//! other queue still drives it up. Against the real RabbitMQ, `qscale once`
//! decides the sum of a queue with a dead-letter exchange and a plain one,
//! and `qscale check --online` reports each queue, the discovered
//! dead-letter queue included.
//!
//! Every queue, namespace and Deployment has a unique name: moto and the
//! brokers are shared with other tests.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/kube.rs"]
mod kube_support;
#[path = "support/moto.rs"]
mod moto;

mod common;

use std::process::Command;
use std::time::Duration;

use daemon::{Daemon, free_port, sample_value, wait_until};
use kube_support::Kube;

/// A `[[scaler.sources]]` entry for an SQS queue on moto.
fn sqs_entry(name: &str, moto: &str, queue_url: &str, messages_per_replica: u32) -> String {
    format!(
        r#"
[[scaler.sources]]
name = "{name}"
kind = "sqs"
queue_url = "{queue_url}"
endpoint_url = "{moto}"
region = "us-east-1"
cloudwatch = false
messages_per_replica = {messages_per_replica}
"#
    )
}

/// The target and a policy that moves at once (no rate limit in the way,
/// a 3 s down-window), so the test sees the decided number.
fn target_and_policy(ns: &str, deploy: &str) -> String {
    format!(
        r#"
[scaler.target]
kind = "kubernetes"
namespace = "{ns}"
name = "{deploy}"
[scaler.policy]
min_replicas = 1
max_replicas = 30
messages_per_replica = 10
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
async fn a_pool_that_drains_two_sqs_queues_is_sized_for_the_sum_of_their_needs() {
    let moto_url = moto::require().await;
    let sqs = moto::sqs(&moto_url).await;
    let k = Kube::admin().await;
    let ns = k.namespace("multiq").await;
    k.create_deployment(&ns, "pool", 1).await;
    k.create_deployment(&ns, "held", 8).await;
    let critical = moto::create_queue(&sqs, &moto::unique("mq-critical")).await;
    let bulk = moto::create_queue(&sqs, &moto::unique("mq-bulk")).await;
    let live = moto::create_queue(&sqs, &moto::unique("mq-live")).await;
    // A queue URL on the same endpoint that names no queue.
    let gone = format!(
        "{}/{}/{}",
        moto_url.trim_end_matches('/'),
        moto::ACCOUNT,
        moto::unique("mq-never-created")
    );

    let port = free_port();
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[defaults]\nsample_timeout = \"2s\"\nactuate_timeout = \"5s\"\n"
    );
    text.push_str("\n[[scaler]]\nname = \"pool\"\npoll_interval = \"1s\"\n");
    text.push_str(&sqs_entry("critical", &moto_url, &critical, 5));
    text.push_str(&sqs_entry("bulk", &moto_url, &bulk, 50));
    text.push_str(&target_and_policy(&ns, "pool"));
    text.push_str("\n[[scaler]]\nname = \"held\"\npoll_interval = \"1s\"\ncombine = \"max\"\n");
    text.push_str(&sqs_entry("live", &moto_url, &live, 10));
    text.push_str(&sqs_entry("gone", &moto_url, &gone, 10));
    text.push_str(&target_and_policy(&ns, "held"));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("qscale.toml");
    std::fs::write(&cfg_path, &text).expect("write config");
    let (code, out, err) = {
        let o = Command::new(env!("CARGO_BIN_EXE_qscale"))
            .args(["check", cfg_path.to_str().expect("utf-8")])
            .output()
            .expect("qscale check");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("pool: sum of [critical: sqs queue"), "{out}");

    let daemon = Daemon::start(
        &cfg_path,
        &kube_support::admin_kubeconfig_path(),
        format!("127.0.0.1:{port}").parse().expect("addr"),
    );

    // critical: 30 / 5 per replica = 6; bulk: 200 / 50 = 4; together 10
    // (each queue alone would be 6 or 4).
    moto::send_batch(&sqs, &critical, 30).await;
    moto::send_batch(&sqs, &bulk, 200).await;
    k.wait_replicas(&ns, "pool", 10, Duration::from_secs(20))
        .await;
    // The count can reach 10 while the last bulk messages are still being
    // sent (6 + 3.2 rounds up to 10 too): wait for a poll that saw them all.
    wait_until(
        Duration::from_secs(10),
        "a poll that saw every message",
        || daemon.scaler("pool")["queues"][1]["sample"]["visible"] == 200,
    );
    let st = daemon.scaler("pool");
    assert_eq!(st["desired"], 10, "{st}");
    let queues = st["queues"].as_array().expect("/status lists each queue");
    let seen: Vec<(String, serde_json::Value, serde_json::Value)> = queues
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap_or_default().to_string(),
                q["decision"]["replicas"].clone(),
                q["sample"]["visible"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("critical".to_string(), 6.into(), 30.into()),
            ("bulk".to_string(), 4.into(), 200.into()),
        ],
        "{st}"
    );
    let reasons = st["reasons"].to_string();
    for want in [
        "critical: backlog 30 / 5 per replica -> 6",
        "bulk: backlog 200 / 50 per replica -> 4",
        "sum of 2 queues: critical 6 + bulk 4 -> 10",
    ] {
        assert!(reasons.contains(want), "want {want:?} in {reasons}");
    }
    assert_eq!(st["source"], "sqs", "{st}");
    let metrics = daemon.metrics();
    assert_eq!(
        sample_value(
            &metrics,
            "qscale_queue_messages{scaler=\"pool\",state=\"visible\"}"
        ),
        Some(230.0),
        "the pool's backlog is the total"
    );
    for (queue, needed, backlog) in [("critical", 6.0, 30.0), ("bulk", 4.0, 200.0)] {
        let labels = format!("{{queue=\"{queue}\",scaler=\"pool\"}}");
        assert_eq!(
            sample_value(&metrics, &format!("qscale_queue_needed_replicas{labels}")),
            Some(needed),
            "{metrics}"
        );
        assert_eq!(
            sample_value(&metrics, &format!("qscale_queue_backlog_messages{labels}")),
            Some(backlog),
            "{metrics}"
        );
    }

    // The other scaler: `gone` fails every poll, `live` is empty. Without
    // the failure the Deployment would go from 8 to 1 after the 3 s
    // down-window; with it, it stays.
    wait_until(Duration::from_secs(10), "the missing queue's error", || {
        daemon.scaler("held")["queues"][1]["error"]["label"] == "not_found"
    });
    let st = daemon.scaler("held");
    assert!(st["queues"][0]["error"].is_null(), "{st}");
    assert!(
        st["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("queue gone: not found")),
        "{st}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(k.deployment_replicas(&ns, "held").await, 8);
    let reasons = daemon.scaler("held")["reasons"].to_string();
    assert!(
        reasons.contains("gone: no sample; not scaling down below 8"),
        "{reasons}"
    );
    let metrics = daemon.metrics();
    assert!(
        sample_value(
            &metrics,
            "qscale_source_errors_total{error=\"not_found\",scaler=\"held\",source=\"sqs\"}"
        )
        .is_some_and(|n| n > 0.0),
        "{metrics}"
    );
    // ...while the queue that answers still drives it up: 120 / 10 = 12.
    moto::send_batch(&sqs, &live, 120).await;
    k.wait_replicas(&ns, "held", 12, Duration::from_secs(20))
        .await;
    // Once every message is counted (111 already round up to 12):
    wait_until(Duration::from_secs(10), "the decision on all 120", || {
        daemon.scaler("held")["reasons"]
            .to_string()
            .contains("largest of 2 queues: live 12, gone (no sample) -> 12")
    });
}

mod rabbitmq {
    use super::common::{env_or, require_reachable, unique};
    use super::kube_support::{self, Kube};
    use lapin::options::{
        BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
    use std::time::{Duration, Instant};

    fn host_port(url: &str) -> String {
        url.split("://")
            .nth(1)
            .and_then(|r| r.split(['/', '?']).next())
            .map(|h| h.rsplit('@').next().unwrap_or(h).to_string())
            .unwrap_or_default()
    }

    async fn declare(ch: &Channel, queue: &str, args: FieldTable) {
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                auto_delete: false,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
    }

    async fn publish(ch: &Channel, queue: &str, n: u32) {
        for i in 0..n {
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("job {i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("publish confirm");
        }
    }

    async fn delete(ch: &Channel, queue: &str) {
        let _ = ch.queue_delete(queue.into(), Default::default()).await;
    }

    fn run(args: &[&str], kubeconfig: &str) -> (Option<i32>, String, String) {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_qscale"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RABBITMQ_PASSWORD", "guest")
            .output()
            .expect("run qscale");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn once_decides_the_sum_of_a_rabbitmq_queue_with_a_dead_letter_exchange_and_a_plain_one()
    {
        let amqp = env_or("QSCALE_TEST_AMQP_URL", "amqp://127.0.0.1:5672");
        let mgmt = env_or(
            "QSCALE_TEST_RABBITMQ_MANAGEMENT_URL",
            "http://127.0.0.1:15672",
        );
        require_reachable("RabbitMQ (AMQP)", &host_port(&amqp), "QSCALE_TEST_AMQP_URL");
        require_reachable(
            "RabbitMQ management API",
            &host_port(&mgmt),
            "QSCALE_TEST_RABBITMQ_MANAGEMENT_URL",
        );
        let conn = Connection::connect(
            &format!("amqp://guest:guest@{}/%2f", host_port(&amqp)),
            ConnectionProperties::default(),
        )
        .await
        .expect("connect to RabbitMQ");
        let ch = conn.create_channel().await.expect("channel");
        // critical dead-letters into its own exchange and queue; bulk has
        // no dead-letter exchange.
        let dlx = unique("mq-dlx");
        let dlq = unique("mq-dlq");
        ch.exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare the dead-letter exchange");
        declare(&ch, &dlq, FieldTable::default()).await;
        ch.queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the dead-letter queue");
        let critical = unique("mq-critical");
        let bulk = unique("mq-bulk");
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(dlx.as_str())),
        );
        declare(&ch, &critical, args).await;
        declare(&ch, &bulk, FieldTable::default()).await;
        publish(&ch, &critical, 12).await;
        publish(&ch, &bulk, 50).await;

        let k = Kube::admin().await;
        let ns = k.namespace("multiq-amqp").await;
        k.create_deployment(&ns, "inference", 2).await;
        let source = |name: &str, queue: &str, per_replica: u32| {
            format!(
                "\n[[scaler.sources]]\nname = \"{name}\"\nkind = \"rabbitmq\"\nurl = \"amqp://guest@{}/%2f\"\n\
                 password_env = \"RABBITMQ_PASSWORD\"\nqueue = \"{queue}\"\nmanagement_url = \"{mgmt}\"\n\
                 messages_per_replica = {per_replica}\n",
                host_port(&amqp)
            )
        };
        let text = format!(
            "[[scaler]]\nname = \"inference\"\n{}{}\n[scaler.target]\nkind = \"kubernetes\"\n\
             namespace = \"{ns}\"\nname = \"inference\"\n[scaler.policy]\nmax_replicas = 20\n\
             messages_per_replica = 10\n[scaler.policy.scale_up]\n\
             policies = [{{ percent = 1000, period = \"1s\" }}]\n",
            source("critical", &critical, 3),
            source("bulk", &bulk, 10),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qscale.toml");
        std::fs::write(&path, text).expect("write config");
        let path = path.to_str().expect("utf-8").to_string();
        let kubeconfig = kube_support::admin_kubeconfig_path();

        // critical: 12 / 3 = 4; bulk: 50 / 10 = 5; the pool needs 9. The
        // management API's figures refresh every few seconds: ask again
        // until both queues are counted.
        let t = Instant::now();
        let report = loop {
            let (code, out, err) = run(&["once", "--output", "json", &path], &kubeconfig);
            assert!(!err.contains("panicked"), "{err}");
            let r: serde_json::Value = out
                .lines()
                .next()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_else(|| panic!("one JSON report:\n{out}\n{err}"));
            if r["desired_replicas"] == 9 {
                assert_eq!(code, Some(0), "{r}");
                break r;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "never 9: {r}\n{err}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        assert_eq!(report["current_replicas"], 2, "{report}");
        let queues: Vec<(serde_json::Value, serde_json::Value, serde_json::Value)> =
            report["queues"]
                .as_array()
                .expect("each queue is reported")
                .iter()
                .map(|q| {
                    (
                        q["name"].clone(),
                        q["replicas"].clone(),
                        q["sample"]["visible"].clone(),
                    )
                })
                .collect();
        assert_eq!(
            queues,
            [
                ("critical".into(), 4.into(), 12.into()),
                ("bulk".into(), 5.into(), 50.into()),
            ],
            "{report}"
        );
        assert!(
            report["reasons"]
                .to_string()
                .contains("combine: sum of 2 queues: critical 4 + bulk 5 -> 9"),
            "{report}"
        );

        // The online check reports each queue on its own line, the dead-letter
        // queue discovered from critical's exchange included.
        let (code, out, err) = run(&["check", "--online", &path], &kubeconfig);
        assert_eq!(code, Some(0), "{out}{err}");
        let critical_line = out
            .lines()
            .find(|l| l.contains("inference queue critical"))
            .unwrap_or_else(|| panic!("a line for the critical queue:\n{out}"));
        assert!(critical_line.contains(&dlq), "{critical_line}");
        assert!(
            out.lines()
                .any(|l| l.contains("inference queue bulk") && l.contains("no dead-letter queue")),
            "{out}"
        );
        for q in [&critical, &bulk, &dlq] {
            delete(&ch, q).await;
        }
    }
}
