//! Dead letters and queue settings on SQS, against moto's server.
//!
//! moto implements redrive policies for real: a message received more than
//! `maxReceiveCount` times is moved to the dead-letter queue on the next
//! receive, so the poison-message test makes messages fail the way workers
//! do (received, never deleted, visible again at once) and watches them
//! land in the DLQ that qscale discovered from the queue's `RedrivePolicy`.
//! The decisions are made by the real `decide` on those real samples, with
//! policy time passed in (10 s between two polls). The settings test runs
//! the real binary: `qscale check --online` and `qscale run` with /status.
//!
//! Each test uses its own queues; the one that reads CloudWatch keeps to
//! its own moto region, because GetMetricData scans every metric of a
//! region and the rest of the suite stores many.

#[path = "support/moto.rs"]
mod moto;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::types::QueueAttributeName as A;
use qscale::contract::{QueueSource, Replicas, Sample};
use qscale::policy::{Policy, PolicyConfig, PolicyState, decide};
use qscale::sources::SourceSpec;
use qscale::sources::sqs::{SqsSource, SqsSourceConfig};

const TIMEOUT: Duration = Duration::from_secs(10);
/// A region no other test writes CloudWatch metrics to.
const REGION: &str = "ca-central-1";

async fn sqs_in(url: &str, region: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&moto::sdk_config_in(url, region).await)
}

/// Create a dead-letter queue and a queue that redrives to it after
/// `max_receive_count` receives; returns (queue URL, DLQ URL, DLQ name).
async fn queue_with_dlq(
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
    max_receive_count: u32,
    visibility_timeout: Option<u32>,
) -> (String, String, String) {
    let dlq_name = moto::unique(&format!("{prefix}-dlq"));
    let dlq = moto::create_queue(sqs, &dlq_name).await;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(A::QueueArn)
        .send()
        .await
        .expect("DLQ attributes")
        .attributes()
        .and_then(|a| a.get(&A::QueueArn).cloned())
        .expect("DLQ ARN");
    let mut create = sqs
        .create_queue()
        .queue_name(moto::unique(prefix))
        .attributes(
            A::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receive_count}"}}"#),
        );
    if let Some(v) = visibility_timeout {
        create = create.attributes(A::VisibilityTimeout, v.to_string());
    }
    let queue = create
        .send()
        .await
        .expect("create queue with a redrive policy")
        .queue_url()
        .expect("queue URL")
        .to_string();
    (queue, dlq, dlq_name)
}

/// Workers that fail: receive every visible message without deleting it,
/// visible again at once, until `n` messages have reached the DLQ.
async fn fail_until_dead_lettered(sqs: &aws_sdk_sqs::Client, queue: &str, dlq: &str, n: u64) {
    for _ in 0..200 {
        let _ = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive");
        if depth(sqs, dlq).await >= n {
            return;
        }
    }
    panic!(
        "moto moved fewer than {n} messages to the dead-letter queue: {}",
        depth(sqs, dlq).await
    );
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .send()
        .await
        .expect("attributes")
        .attributes()
        .and_then(|a| a.get(&A::ApproximateNumberOfMessages).cloned())
        .and_then(|v| v.parse().ok())
        .expect("a count")
}

async fn sample(src: &SqsSource) -> Sample {
    src.sample().await.unwrap_or_else(|e| panic!("sample: {e}"))
}

fn reasons(d: &qscale::policy::Decision) -> Vec<String> {
    d.reasons.iter().map(|r| r.to_string()).collect()
}

#[tokio::test]
async fn poison_messages_land_in_the_discovered_dlq_and_hold_scale_up_with_the_reason() {
    let url = moto::require().await;
    let sqs = sqs_in(&url, REGION).await;
    let cw = aws_sdk_cloudwatch::Client::new(&moto::sdk_config_in(&url, REGION).await);
    let (queue, dlq, dlq_name) = queue_with_dlq(&sqs, "poison", 2, None).await;
    let cfg = SqsSourceConfig {
        region: Some(REGION.into()),
        ..moto::config(&url, &queue)
    };
    let src = SqsSource::build(&cfg, &moto::shared(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("build: {e}"));
    let policy_cfg: PolicyConfig = toml::from_str(
        "max_replicas = 50\nmessages_per_replica = 1\ntolerance = 0\n\
         [dead_letter]\nmax_fraction = 0.1\n",
    )
    .expect("policy");
    let policy = Policy::new(&policy_cfg, &cfg.capabilities());
    let mut state = PolicyState::new();
    let t0 = Instant::now();

    // 20 messages wait; nothing has failed yet.
    moto::send(&sqs, &queue, 20, 0).await;
    let name = queue.rsplit('/').next().expect("queue name").to_string();
    // 2 msg/s arrive, as CloudWatch reports it.
    moto::put_sqs_metric(&cw, &name, "NumberOfMessagesSent", SystemTime::now(), 120.0).await;
    let first = sample(&src).await;
    assert_eq!(
        first.dead_letter_queue.as_deref(),
        Some(format!("{dlq_name} (discovered from RedrivePolicy)").as_str()),
        "{first:?}"
    );
    assert_eq!(first.max_receive_count, Some(2));
    assert_eq!(first.visibility_timeout, Some(Duration::from_secs(30)));
    assert_eq!((first.visible, first.dead_letter), (Some(20), Some(0)));
    let d = decide(
        &policy,
        &mut state,
        Some(&first),
        Replicas::new(2, Some(2)),
        t0,
    );
    assert_eq!(d.dead_letter_rate, None, "one depth is no rate");
    assert!(d.replicas > 2, "{:?}", reasons(&d));

    // Workers fail on all of them: received, never deleted, until moto
    // moves them to the DLQ. 10 s of policy time later the DLQ holds them.
    fail_until_dead_lettered(&sqs, &queue, &dlq, 20).await;
    moto::send(&sqs, &queue, 20, 0).await;
    let second = sample(&src).await;
    assert_eq!(
        (second.visible, second.dead_letter),
        (Some(20), Some(20)),
        "{second:?}"
    );
    let t1 = t0 + Duration::from_secs(10);
    let d = decide(
        &policy,
        &mut state,
        Some(&second),
        Replicas::new(2, Some(2)),
        t1,
    );
    assert_eq!(d.dead_letter_rate, Some(2.0));
    assert_eq!(d.replicas, 2, "held at current: {:?}", reasons(&d));
    assert_eq!(
        reasons(&d),
        vec![
            "signal: backlog 20 / 1 per replica -> 20".to_string(),
            "dead letters: dead-lettering 2 msg/s = 100% of arrivals 2 msg/s > max_fraction \
             10%: failures, not capacity; not scaling up, keeping 2 (would be 20)"
                .to_string(),
        ]
    );

    // Two quiet minutes later nothing has been dead-lettered within the
    // window: the backlog is capacity again, and qscale scales up.
    let mut d = d;
    for i in 1..=13 {
        let s = sample(&src).await;
        let now = t1 + Duration::from_secs(10 * i);
        d = decide(
            &policy,
            &mut state,
            Some(&s),
            Replicas::new(2, Some(2)),
            now,
        );
    }
    assert_eq!(d.dead_letter_rate, Some(0.0));
    assert!(d.replicas > 2, "{:?}", reasons(&d));
    assert!(
        !reasons(&d).iter().any(|r| r.starts_with("dead letters")),
        "{:?}",
        reasons(&d)
    );
}

#[tokio::test]
async fn a_configured_dlq_wins_over_discovery_and_a_queue_without_one_reports_none() {
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let (queue, _dlq, _) = queue_with_dlq(&sqs, "configured", 3, Some(45)).await;
    let other = moto::create_queue(&sqs, &moto::unique("other-dlq")).await;
    moto::send(&sqs, &other, 3, 0).await;
    let cfg = SqsSourceConfig {
        cloudwatch: false,
        dead_letter_queue_url: Some(other.clone()),
        ..moto::config(&url, &queue)
    };
    let src = SqsSource::build(&cfg, &moto::shared(), TIMEOUT)
        .await
        .expect("build");
    let s = sample(&src).await;
    assert_eq!(s.dead_letter, Some(3), "{s:?}");
    let other_name = other.rsplit('/').next().expect("name");
    assert_eq!(
        s.dead_letter_queue.as_deref(),
        Some(format!("{other_name} (configured)").as_str())
    );
    assert_eq!(
        s.max_receive_count,
        Some(3),
        "read even when the DLQ is configured"
    );
    assert_eq!(s.visibility_timeout, Some(Duration::from_secs(45)));

    let plain = moto::create_queue(&sqs, &moto::unique("plain")).await;
    let cfg = SqsSourceConfig {
        cloudwatch: false,
        ..moto::config(&url, &plain)
    };
    let src = SqsSource::build(&cfg, &moto::shared(), TIMEOUT)
        .await
        .expect("build");
    let s = sample(&src).await;
    assert_eq!(
        (
            s.dead_letter,
            s.dead_letter_queue.as_deref(),
            s.max_receive_count
        ),
        (None, None, None)
    );
    assert!(s.notes.is_empty(), "{:?}", s.notes);
}

// ---- settings, through the real binary ----------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn qscale(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qscale"));
    c.args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", moto::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1");
    c
}

#[tokio::test]
async fn a_visibility_timeout_shorter_than_the_work_is_reported_by_check_online_and_in_status() {
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    // 5 s visibility, 2 receives: a message that takes 30 s is received 6
    // times before it is done, and dead-lettered after the second.
    let (queue, _dlq, dlq_name) = queue_with_dlq(&sqs, "slow", 2, Some(5)).await;
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("qscale.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[[scaler]]
name = "inference"
poll_interval = "1s"
[scaler.source]
kind = "sqs"
queue_url = "{queue}"
endpoint_url = "{url}"
region = "us-east-1"
cloudwatch = false
[scaler.target]
kind = "demo"
queue = "inference-{port}"
[scaler.policy]
max_replicas = 5
[scaler.policy.throughput]
seconds_per_message = 30
"#
        ),
    )
    .expect("write config");
    let visibility = "the queue's visibility timeout 5s is shorter than the 30 s a message takes \
                      (seconds_per_message): messages still being worked become visible again \
                      and are delivered twice; raise the queue's VisibilityTimeout to at least 1m, \
                      or extend it from the worker (ChangeMessageVisibility)";
    let receives = "a healthy message that takes 30 s is received 6 times before its first \
                    worker finishes, more than maxReceiveCount 2: it is moved to the dead-letter \
                    queue although it would succeed; raise the queue's VisibilityTimeout to at \
                    least 1m";

    let out = qscale(&["check", "--online", path.to_str().expect("utf-8")])
        .output()
        .expect("run qscale check --online");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "inference: online: visible 0, in flight 0; dead-letter queue {dlq_name} \
             (discovered from RedrivePolicy) holds 0; visibility timeout 5s; maxReceiveCount 2"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("warning: inference: {visibility}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("warning: inference: {receives}\n")),
        "{stdout}"
    );

    let log = dir.path().join("stderr.log");
    let mut child = qscale(&["run", "--config", path.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start qscale run");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut warnings = Vec::new();
    while Instant::now() < deadline {
        if let Some(body) = get(addr, "/status/inference")
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            && let Some(w) = v["warnings"].as_array()
            && w.len() >= 2
        {
            warnings = w
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more polls: the log line must not repeat. Meanwhile the
    // dead-letter depth (0) and its rate (0, once two depths are known)
    // are exported.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = get(addr, "/metrics").unwrap_or_default();
    let status: serde_json::Value =
        serde_json::from_str(&get(addr, "/status/inference").unwrap_or_default())
            .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        warnings.contains(&format!("queue: {visibility}")),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(&format!("queue: {receives}")),
        "{warnings:?}"
    );
    assert!(
        metrics.contains("qscale_dead_letter_messages{scaler=\"inference\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("qscale_dead_letter_arrival_rate{scaler=\"inference\"} 0\n"),
        "{metrics}"
    );
    assert_eq!(status["dead_letter_rate"], 0.0, "{status}");
    assert_eq!(status["sample"]["max_receive_count"], 2, "{status}");
    assert_eq!(
        status["sample"]["visibility_timeout_seconds"], 5.0,
        "{status}"
    );
    let logged = std::fs::read_to_string(&log).expect("read log");
    assert_eq!(
        logged
            .matches("is shorter than the 30 s a message takes")
            .count(),
        1,
        "logged once, not every poll:\n{logged}"
    );
}
