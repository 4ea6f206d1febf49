//! End to end: `qscale once --output json` against each real broker.
//!
//! Each test prepares a queue with N messages, k of them taken and not
//! acknowledged, writes a config whose source points at it, runs the real
//! binary, and checks the sample it prints. The target is a Kubernetes
//! Deployment in a kubeconfig context that does not exist, so `once` prints
//! the sample, reports a clear target error and exits 1, as it must when a
//! target cannot be read.
//!
//! Environment: the same variables as the per-broker tests
//! (QSCALE_TEST_AMQP_URL, QSCALE_TEST_REDIS_URL, QSCALE_TEST_NATS_URL,
//! QSCALE_TEST_POSTGRES).

mod common;

use std::time::Duration;

use common::{env_or, require_reachable, unique};
use futures_util::StreamExt;

const N: u64 = 10;
const K: u64 = 3;

const TARGET: &str = r#"
[scaler.target]
kind = "kubernetes"
namespace = "default"
name = "worker"
context = "qscale-no-such-context"

[scaler.policy]
min_replicas = 0
max_replicas = 10
messages_per_replica = 5
"#;

/// Run `qscale once --output json` on a config whose source table is
/// `source`; return the exit code and the one report it printed.
async fn once(name: &str, source: &str, env: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("qscale.toml");
    std::fs::write(
        &path,
        format!("[[scaler]]\nname = \"{name}\"\n\n[scaler.source]\n{source}\n{TARGET}"),
    )
    .expect("write config");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_qscale"));
    cmd.args(["once", "--output", "json"])
        .arg(&path)
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("qscale once finishes within 60s")
        .expect("run qscale");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one JSON line per scaler:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON object");
    (out.status.code().unwrap_or(-1), report)
}

/// The sample is there with N-k visible (and k in flight when the source
/// measures it), and the only error is the target's.
fn check(code: i32, r: &serde_json::Value, name: &str, in_flight: Option<u64>) {
    assert_eq!(r["name"], name, "{r}");
    let s = &r["sample"];
    assert_eq!(s["visible"], N - K, "{r}");
    match in_flight {
        Some(k) => assert_eq!(s["in_flight"], k, "{r}"),
        None => assert!(s["in_flight"].is_null(), "{r}"),
    }
    for field in ["delayed", "oldest_age_seconds", "arrival_rate", "consumers"] {
        assert!(s.get(field).is_some(), "sample.{field} is printed: {r}");
    }
    for field in ["current_replicas", "desired_replicas", "reasons"] {
        assert!(r.get(field).is_some(), "{field} is printed: {r}");
    }
    let err = r["error"].as_str().unwrap_or_default();
    assert!(err.starts_with("target: "), "only the target fails: {r}");
    assert!(!err.contains("source:"), "{r}");
    assert_eq!(code, 1, "once exits 1 when the target cannot be read");
}

#[tokio::test]
async fn once_prints_the_rabbitmq_sample() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
    let host = env_or("QSCALE_TEST_AMQP_URL", "amqp://127.0.0.1:5672")
        .trim_start_matches("amqp://")
        .trim_end_matches('/')
        .to_string();
    require_reachable("RabbitMQ", &host, "QSCALE_TEST_AMQP_URL");
    let conn = lapin::Connection::connect(
        &format!("amqp://guest:guest@{host}/%2f"),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let q = unique("qscale-once");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        Default::default(),
    )
    .await
    .expect("declare");
    for _ in 0..N {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"job",
            Default::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    }
    for _ in 0..K {
        let m = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .expect("get");
        assert!(m.is_some());
    }
    let source = format!(
        "kind = \"rabbitmq\"\nurl = \"amqp://guest@{host}\"\nqueue = \"{q}\"\npassword_env = \"QSCALE_TEST_RABBITMQ_PASSWORD\"\n"
    );
    let (code, r) = once(
        "rabbit",
        &source,
        &[("QSCALE_TEST_RABBITMQ_PASSWORD", "guest")],
    )
    .await;
    // AMQP only: in-flight is unknown and the report says why.
    check(code, &r, "rabbit", None);
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("AMQP alone cannot see unacknowledged messages"),
        "{r}"
    );
    let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
}

#[tokio::test]
async fn once_prints_the_redis_stream_sample() {
    let url = env_or("QSCALE_TEST_REDIS_URL", "redis://127.0.0.1:6379");
    require_reachable(
        "Redis",
        url.trim_start_matches("redis://").trim_end_matches('/'),
        "QSCALE_TEST_REDIS_URL",
    );
    let mut c = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = unique("qscale-once");
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", &key, "g", "$", "MKSTREAM"][..])
        .query_async(&mut c)
        .await
        .expect("group");
    for i in 0..N {
        let _: String = redis::cmd("XADD")
            .arg(&[key.as_str(), "*", "n", &i.to_string()][..])
            .query_async(&mut c)
            .await
            .expect("xadd");
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(
            &[
                "GROUP",
                "g",
                "c",
                "COUNT",
                &K.to_string(),
                "STREAMS",
                &key,
                ">",
            ][..],
        )
        .query_async(&mut c)
        .await
        .expect("read");
    let source = format!(
        "kind = \"redis\"\nurl = \"{url}\"\nmode = \"stream\"\nkey = \"{key}\"\ngroup = \"g\"\n"
    );
    let (code, r) = once("redis", &source, &[]).await;
    check(code, &r, "redis", Some(K));
    let _: u64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("del");
}

#[tokio::test]
async fn once_prints_the_nats_sample() {
    use async_nats::jetstream::{self, consumer::pull, stream};
    let url = env_or("QSCALE_TEST_NATS_URL", "nats://127.0.0.1:4222");
    require_reachable(
        "NATS",
        url.trim_start_matches("nats://"),
        "QSCALE_TEST_NATS_URL",
    );
    let js = jetstream::new(async_nats::connect(url.as_str()).await.expect("connect"));
    let name = unique("QSCALE_ONCE").replace('-', "_");
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.jobs")],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("stream");
    for _ in 0..N {
        js.publish(format!("{name}.jobs"), "job".into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let consumer = js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("workers".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(300),
                ..Default::default()
            },
            name.as_str(),
        )
        .await
        .expect("consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(K as usize)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    while let Some(m) = batch.next().await {
        m.expect("message");
    }
    let source =
        format!("kind = \"nats\"\nurl = \"{url}\"\nstream = \"{name}\"\nconsumer = \"workers\"\n");
    let (code, r) = once("nats", &source, &[]).await;
    check(code, &r, "nats", Some(K));
    let _ = js.delete_stream(&name).await;
}

#[tokio::test]
async fn once_prints_the_postgres_sample() {
    let conninfo = env_or(
        "QSCALE_TEST_POSTGRES",
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
    );
    require_reachable("PostgreSQL", "127.0.0.1:5432", "QSCALE_TEST_POSTGRES");
    let (db, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let t = unique("once_jobs").replace('-', "_");
    db.batch_execute(&format!(
        "CREATE TABLE {t} (id bigserial PRIMARY KEY, state text NOT NULL DEFAULT 'available');
         INSERT INTO {t} (state) SELECT 'available' FROM generate_series(1, {N});
         UPDATE {t} SET state = 'running' WHERE id <= {K};"
    ))
    .await
    .expect("table");
    let source = format!(
        "kind = \"postgres\"\nconnection = \"{conninfo}\"\nquery = \"SELECT count(*) FILTER (WHERE state = 'available') AS visible, count(*) FILTER (WHERE state = 'running') AS in_flight FROM {t}\"\n"
    );
    let (code, r) = once("pg", &source, &[]).await;
    check(code, &r, "pg", Some(K));
    let _ = db.batch_execute(&format!("DROP TABLE {t}")).await;
}
