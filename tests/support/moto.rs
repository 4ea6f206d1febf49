//! Helpers for tests that run the real AWS SDK clients against moto's server.
//!
//! The project's test script starts moto on port 5000 and exports
//! `QSCALE_TEST_MOTO_URL`; a developer can start one by hand
//! (`moto_server -H 127.0.0.1 -p 5000`). Tests fail, never skip, when it is
//! unreachable: a silently skipped peer test reads as a pass.
//!
//! Tests run in parallel against one shared moto, so nothing here resets
//! moto's state: every test makes its own uniquely named queues and metrics.
//! Credentials are fixed test values given through
//! [`AwsConfigs::with_credentials`] rather than the environment, which
//! parallel test threads must not mutate. moto does not check credentials.
//!
//! Include with `#[path = "support/moto.rs"] mod moto;`.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use aws_smithy_types::DateTime;
use qscale::clients::Clients;
use qscale::clients::aws::{AwsConfigs, AwsEndpoint};
use qscale::sources::sqs::SqsSourceConfig;

pub const DEFAULT_URL: &str = "http://127.0.0.1:5000";
pub const REGION: &str = "us-east-1";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";
/// Generous budget for setup calls; the tests of timeouts set their own.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// moto's URL, from `QSCALE_TEST_MOTO_URL` or the default.
pub fn url() -> String {
    std::env::var("QSCALE_TEST_MOTO_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// moto's URL, after checking that something listens there.
pub async fn require() -> String {
    let url = url();
    let host_port = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    let connect = tokio::net::TcpStream::connect(host_port.clone());
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(_)) => url,
        Ok(Err(e)) => panic!(
            "moto server is not reachable at {url} ({e}); start one with \
             `moto_server -H 127.0.0.1 -p 5000` or set QSCALE_TEST_MOTO_URL"
        ),
        Err(_) => panic!("moto server at {url} did not accept a connection within 3s"),
    }
}

/// Fixed credentials that moto accepts (it checks none).
pub fn credentials() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        "testing",
        "testing",
        None,
        None,
        "qscale-tests",
    ))
}

/// Fresh process-wide state with test credentials, so CloudWatch call
/// counters start at zero for each test.
pub fn shared() -> Clients {
    Clients {
        aws: AwsConfigs::with_credentials(credentials()),
        ..Clients::default()
    }
}

pub async fn sdk_config(url: &str) -> aws_config::SdkConfig {
    sdk_config_in(url, REGION).await
}

/// An SDK config for another region: moto keeps each region's state apart,
/// so a test whose calls scan every stored metric (GetMetricData) does not
/// pay for what the other tests of the suite stored in the default region.
pub async fn sdk_config_in(url: &str, region: &str) -> aws_config::SdkConfig {
    let endpoint = AwsEndpoint {
        region: Some(region.to_string()),
        endpoint_url: Some(url.to_string()),
    };
    AwsConfigs::with_credentials(credentials())
        .get(&endpoint, SETUP_TIMEOUT)
        .await
}

/// An SQS client for arranging test state.
pub async fn sqs(url: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config(url).await)
}

/// A CloudWatch client for arranging test state.
pub async fn cloudwatch(url: &str) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&sdk_config(url).await)
}

/// A queue name no other test or earlier run uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// Create a queue and return its URL.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
        .queue_url()
        .unwrap_or_else(|| panic!("create queue {name}: no URL"))
        .to_string()
}

/// Send `n` messages, each delayed by `delay_seconds` (0 for none).
pub async fn send(sqs: &aws_sdk_sqs::Client, queue_url: &str, n: usize, delay_seconds: i32) {
    for i in 0..n {
        sqs.send_message()
            .queue_url(queue_url)
            .message_body(format!("message {i}"))
            .delay_seconds(delay_seconds)
            .send()
            .await
            .unwrap_or_else(|e| panic!("send to {queue_url}: {e:?}"));
    }
}

/// Receive exactly `n` messages and keep them in flight for 15 minutes.
pub async fn receive(sqs: &aws_sdk_sqs::Client, queue_url: &str, n: usize) {
    let mut got = 0;
    for _ in 0..50 {
        if got == n {
            return;
        }
        let answer = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages((n - got) as i32)
            .visibility_timeout(900)
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive from {queue_url}: {e:?}"));
        got += answer.messages().len();
    }
    assert_eq!(got, n, "could not receive {n} messages from {queue_url}");
}

/// An SQS source config for `queue_url` on moto.
pub fn config(moto: &str, queue_url: &str) -> SqsSourceConfig {
    SqsSourceConfig {
        queue_url: Some(queue_url.to_string()),
        queue_name: None,
        account_id: None,
        region: Some(REGION.to_string()),
        endpoint_url: Some(moto.to_string()),
        count_in_flight: true,
        count_delayed: false,
        cloudwatch: true,
        max_staleness: Duration::from_secs(300),
        dead_letter_queue_url: None,
    }
}

/// Put one `AWS/SQS` datapoint for `queue` (moto computes none itself).
pub async fn put_sqs_metric(
    cw: &aws_sdk_cloudwatch::Client,
    queue: &str,
    metric: &str,
    at: SystemTime,
    value: f64,
) {
    cw.put_metric_data()
        .namespace("AWS/SQS")
        .metric_data(
            MetricDatum::builder()
                .metric_name(metric)
                .dimensions(Dimension::builder().name("QueueName").value(queue).build())
                .timestamp(DateTime::from(at))
                .value(value)
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {metric} for {queue}: {e:?}"));
}

/// A moto server of the test's own, on a port of its own, that the test may
/// kill and start again (the shared one on `QSCALE_TEST_MOTO_URL` serves
/// every other test and must stay up). moto keeps its state in memory, so a
/// restarted server has no queues: the test creates them again.
///
/// The binary is `moto_server` from `PATH` (installed by `scripts/peers.sh`),
/// or `QSCALE_TEST_MOTO_SERVER`.
pub struct MotoProcess {
    pub port: u16,
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
}

impl MotoProcess {
    /// Start on `port` and wait until it answers; its output goes to `log`.
    pub async fn start(port: u16, log: &std::path::Path) -> MotoProcess {
        let mut m = MotoProcess {
            port,
            child: None,
            log: log.to_path_buf(),
        };
        m.restart().await;
        m
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kill it (SIGKILL: no goodbye to open connections) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it (again) on the same port and wait until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let bin =
            std::env::var("QSCALE_TEST_MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_string());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open moto's log");
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("moto log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin} ({e}); install it with `scripts/peers.sh start` \
                     (moto[server]=={}) or set QSCALE_TEST_MOTO_SERVER",
                    "5.2.5"
                )
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let addr = format!("127.0.0.1:{}", self.port);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "{bin} exited with {st}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{bin} did not listen on {addr} within 30s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for MotoProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send `n` messages in batches of ten (one call per ten messages), so a
/// test can fill a queue in one step.
pub async fn send_batch(sqs: &aws_sdk_sqs::Client, queue_url: &str, n: usize) {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(10);
        let entries: Vec<SendMessageBatchRequestEntry> = (0..k)
            .map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(format!("message {}", sent + i))
                    .build()
                    .expect("a batch entry")
            })
            .collect();
        let out = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap_or_else(|e| panic!("send a batch to {queue_url}: {e:?}"));
        assert!(
            out.failed().is_empty(),
            "moto refused part of a batch: {:?}",
            out.failed()
        );
        sent += k;
    }
}
