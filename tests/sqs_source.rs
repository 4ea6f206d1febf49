//! The SQS source against a real SQS/CloudWatch protocol peer (moto's server).
//!
//! Each test makes its own queues and metrics (unique names; moto is shared
//! by parallel tests and never reset). Fault tests use tiny local servers:
//! a port nobody listens on, one that accepts and never answers, and one
//! that answers HTML or garbage.
//!
//! Not covered: wrong credentials. moto accepts any key, so only real AWS
//! can answer `InvalidClientTokenId`/`SignatureDoesNotMatch`; their mapping
//! to `access_denied` is table-tested in `sources::aws_error`. Missing
//! credentials are covered here, because the SDK detects them locally.

#[path = "support/moto.rs"]
mod moto;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use qscale::clients::Clients;
use qscale::clients::aws::AwsConfigs;
use qscale::contract::{QueueSource, Sample, SourceError};
use qscale::sources::SourceConfig;
use qscale::sources::sqs::{SqsSource, SqsSourceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const TIMEOUT: Duration = Duration::from_secs(10);
const AGE: &str = "ApproximateAgeOfOldestMessage";
const SENT: &str = "NumberOfMessagesSent";

async fn source(cfg: &SqsSourceConfig, shared: &Clients, timeout: Duration) -> SqsSource {
    SqsSource::build(cfg, shared, timeout)
        .await
        .unwrap_or_else(|e| panic!("build source: {e}"))
}

async fn sample(s: &SqsSource) -> Sample {
    s.sample().await.unwrap_or_else(|e| panic!("sample: {e}"))
}

fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}

#[tokio::test]
async fn the_source_reports_visible_in_flight_and_delayed_exactly_as_moto_holds_them() {
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let queue = moto::create_queue(&sqs, &moto::unique("depth")).await;
    moto::send(&sqs, &queue, 6, 0).await;
    moto::send(&sqs, &queue, 3, 900).await;
    moto::receive(&sqs, &queue, 2).await;

    let cfg = SqsSourceConfig {
        cloudwatch: false,
        ..moto::config(&url, &queue)
    };
    let s = sample(&source(&cfg, &moto::shared(), TIMEOUT).await).await;
    assert_eq!(
        (s.visible, s.in_flight, s.delayed),
        (Some(4), Some(2), Some(3)),
        "{s:?}"
    );
    assert_eq!(s.oldest_age, None, "no CloudWatch, no age");
    assert_eq!(s.arrival_rate, None);
    assert_eq!(s.dead_letter, None);
    assert!(s.notes.is_empty(), "{:?}", s.notes);
}

#[tokio::test]
async fn a_fifo_queue_is_sampled_exactly_with_message_groups_in_flight() {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let name = format!("{}.fifo", moto::unique("fifo"));
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(A::FifoQueue, "true")
        .attributes(A::ContentBasedDeduplication, "true")
        .send()
        .await
        .expect("create FIFO queue")
        .queue_url()
        .expect("queue url")
        .to_string();
    // Seven messages in three message groups.
    for i in 0..7 {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(format!("job {i}"))
            .message_group_id(format!("tenant-{}", i % 3))
            .send()
            .await
            .expect("send");
    }
    // Two workers each hold one message (of two different groups: a group
    // with a message in flight is locked).
    for _ in 0..2 {
        let got = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(1)
            .visibility_timeout(300)
            .send()
            .await
            .expect("receive");
        assert_eq!(got.messages().len(), 1, "{got:?}");
    }

    let cfg = SqsSourceConfig {
        cloudwatch: false,
        ..moto::config(&url, &queue)
    };
    let mut problems = qscale::validate::Problems::default();
    qscale::sources::SourceSpec::validate(&cfg, "source", &mut problems);
    assert!(
        problems.is_empty(),
        "a .fifo queue URL is valid: {problems}"
    );
    let s = sample(&source(&cfg, &moto::shared(), TIMEOUT).await).await;
    assert_eq!(
        (s.visible, s.in_flight, s.delayed),
        (Some(5), Some(2), Some(0)),
        "{s:?}"
    );
}

#[tokio::test]
async fn age_and_arrival_rate_come_from_the_newest_cloudwatch_datapoints() {
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let cw = moto::cloudwatch(&url).await;
    let name = moto::unique("cw-fresh");
    let queue = moto::create_queue(&sqs, &name).await;
    moto::put_sqs_metric(&cw, &name, AGE, ago(240), 100.0).await;
    moto::put_sqs_metric(&cw, &name, AGE, ago(20), 42.0).await;
    moto::put_sqs_metric(&cw, &name, SENT, ago(240), 6000.0).await;
    moto::put_sqs_metric(&cw, &name, SENT, ago(20), 120.0).await;

    let s = sample(&source(&moto::config(&url, &queue), &moto::shared(), TIMEOUT).await).await;
    assert_eq!(s.oldest_age, Some(Duration::from_secs(42)), "{s:?}");
    assert_eq!(s.arrival_rate, Some(2.0), "{s:?}");
    assert!(s.notes.is_empty(), "{:?}", s.notes);
}

#[tokio::test]
async fn a_stale_cloudwatch_datapoint_is_reported_as_missing_never_as_zero() {
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let cw = moto::cloudwatch(&url).await;
    let name = moto::unique("cw-stale");
    let queue = moto::create_queue(&sqs, &name).await;
    moto::put_sqs_metric(&cw, &name, AGE, ago(8 * 60), 0.0).await;
    moto::put_sqs_metric(&cw, &name, SENT, ago(30), 60.0).await;

    let s = sample(&source(&moto::config(&url, &queue), &moto::shared(), TIMEOUT).await).await;
    assert_eq!(s.oldest_age, None, "stale age must be missing: {s:?}");
    assert_eq!(s.arrival_rate, Some(1.0), "{s:?}");
    let note = s.notes.join(" | ");
    assert!(
        // The datapoint's minute starts up to a minute before it: 8m or 9m.
        (note.contains("CloudWatch ApproximateAgeOfOldestMessage is 8m")
            || note.contains("CloudWatch ApproximateAgeOfOldestMessage is 9m"))
            && note.contains("old (max_staleness 5m); treating as missing"),
        "{note}"
    );
}

#[tokio::test]
async fn a_queue_without_cloudwatch_data_has_unknown_age_and_rate_with_notes() {
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let queue = moto::create_queue(&sqs, &moto::unique("cw-none")).await;
    moto::send(&sqs, &queue, 1, 0).await;

    let s = sample(&source(&moto::config(&url, &queue), &moto::shared(), TIMEOUT).await).await;
    assert_eq!(s.visible, Some(1));
    assert_eq!((s.oldest_age, s.arrival_rate), (None, None), "{s:?}");
    assert_eq!(s.notes.len(), 2, "{:?}", s.notes);
}

#[tokio::test]
async fn five_sources_in_one_region_share_one_get_metric_data_call() {
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let cw = moto::cloudwatch(&url).await;
    let shared = moto::shared();
    let mut sources = Vec::new();
    for i in 0..5u64 {
        let name = moto::unique(&format!("batch{i}"));
        let queue = moto::create_queue(&sqs, &name).await;
        moto::put_sqs_metric(&cw, &name, AGE, ago(30), 10.0 * (i + 1) as f64).await;
        let cfg = SourceConfig::Sqs(moto::config(&url, &queue));
        let s: Arc<dyn QueueSource> = cfg
            .build(&shared, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("build: {e}"));
        assert_eq!(s.kind(), "sqs");
        sources.push(s);
    }

    for round in 0..2 {
        let mut polls = JoinSet::new();
        for (i, s) in sources.iter().enumerate() {
            let s = s.clone();
            polls.spawn(async move { (i, s.sample().await) });
        }
        while let Some(joined) = polls.join_next().await {
            let (i, result) = joined.expect("poll task");
            let s = result.unwrap_or_else(|e| panic!("sample {i}: {e}"));
            let want = Duration::from_secs(10 * (i as u64 + 1));
            assert_eq!(s.oldest_age, Some(want), "round {round}, source {i}: {s:?}");
        }
        // The second round falls within the refresh interval: served from
        // the same snapshot.
        assert_eq!(shared.cloudwatch.calls(), 1, "after round {round}");
    }
}

#[tokio::test]
async fn dead_letter_queue_depth_is_exported_and_its_failure_only_adds_a_note() {
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let queue = moto::create_queue(&sqs, &moto::unique("main")).await;
    let dlq = moto::create_queue(&sqs, &moto::unique("dlq")).await;
    moto::send(&sqs, &queue, 2, 0).await;
    moto::send(&sqs, &dlq, 4, 0).await;
    let shared = moto::shared();

    let cfg = SqsSourceConfig {
        cloudwatch: false,
        dead_letter_queue_url: Some(dlq.clone()),
        ..moto::config(&url, &queue)
    };
    let s = sample(&source(&cfg, &shared, TIMEOUT).await).await;
    assert_eq!((s.visible, s.dead_letter), (Some(2), Some(4)), "{s:?}");

    let missing = format!("{}-gone", dlq);
    let cfg = SqsSourceConfig {
        dead_letter_queue_url: Some(missing),
        ..cfg
    };
    let s = sample(&source(&cfg, &shared, TIMEOUT).await).await;
    assert_eq!((s.visible, s.dead_letter), (Some(2), None), "{s:?}");
    let note = s.notes.join(" | ");
    assert!(
        note.contains("dead-letter queue depth unknown") && note.contains("does not exist"),
        "{note}"
    );
}

#[tokio::test]
async fn a_queue_name_is_resolved_lazily_so_a_queue_created_later_is_found() {
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let name = moto::unique("byname");
    let cfg = SqsSourceConfig {
        queue_url: None,
        queue_name: Some(name.clone()),
        account_id: Some(moto::ACCOUNT.to_string()),
        cloudwatch: false,
        ..moto::config(&url, "unused")
    };
    let src = source(&cfg, &moto::shared(), TIMEOUT).await;

    let e = src
        .sample()
        .await
        .expect_err("the queue does not exist yet");
    assert_eq!(e.metric_label(), "not_found", "{e}");
    assert!(e.to_string().contains(&name), "{e}");

    let queue = moto::create_queue(&sqs, &name).await;
    moto::send(&sqs, &queue, 3, 0).await;
    let s = sample(&src).await;
    assert_eq!(s.visible, Some(3), "{s:?}");
}

#[tokio::test]
async fn a_deleted_queue_gives_not_found() {
    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let queue = moto::create_queue(&sqs, &moto::unique("deleted")).await;
    let src = source(&moto::config(&url, &queue), &moto::shared(), TIMEOUT).await;
    sample(&src).await;

    sqs.delete_queue()
        .queue_url(&queue)
        .send()
        .await
        .expect("delete queue");
    let e = src.sample().await.expect_err("the queue is gone");
    assert_eq!(e.metric_label(), "not_found", "{e}");
    assert!(matches!(e, SourceError::NotFound(_)));
}

/// A config for a queue at `endpoint` (a fault server, not moto).
fn at_endpoint(endpoint: &str) -> SqsSourceConfig {
    moto::config(endpoint, &format!("{endpoint}/{}/faulty", moto::ACCOUNT))
}

/// Sample a source of `cfg` and return the error and how long it took.
async fn failing_sample(
    cfg: &SqsSourceConfig,
    shared: &Clients,
    timeout: Duration,
) -> (SourceError, Duration) {
    let src = source(cfg, shared, timeout).await;
    let started = Instant::now();
    let result = src.sample().await;
    let took = started.elapsed();
    match result {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "not one line: {e}");
            (e, took)
        }
    }
}

#[tokio::test]
async fn a_stopped_endpoint_gives_unavailable_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let timeout = Duration::from_secs(6);

    let (e, took) = failing_sample(
        &at_endpoint(&format!("http://{addr}")),
        &moto::shared(),
        timeout,
    )
    .await;
    assert_eq!(e.metric_label(), "unavailable", "{e}");
    assert!(
        took <= timeout + Duration::from_millis(500),
        "took {took:?}"
    );
}

#[tokio::test]
async fn an_endpoint_that_accepts_but_never_answers_gives_timeout_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let timeout = Duration::from_secs(2);

    let (e, took) = failing_sample(
        &at_endpoint(&format!("http://{addr}")),
        &moto::shared(),
        timeout,
    )
    .await;
    assert_eq!(e, SourceError::Timeout(timeout));
    assert!(
        took <= timeout + Duration::from_millis(500),
        "took {took:?}"
    );
}

/// An HTTP answer with `status` and `body` and a correct Content-Length.
fn http(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Serve `response` to every request, after reading the request.
async fn serve(response: Vec<u8>) -> String {
    let response = Arc::new(response);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then as much body as Content-Length says.
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = sock.write_all(&response).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_endpoint_that_answers_html_or_garbage_gives_a_clear_error_and_no_panic() {
    let json = "application/x-amz-json-1.0";
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "HTML page with 200",
            http("200 OK", "text/html", b"<html><b>hello</b></html>"),
            &["invalid_response"],
        ),
        (
            "HTML 404, as moto answers a protocol it does not speak",
            http("404 Not Found", "text/html", b"<h1>404 Not Found</h1>"),
            &["invalid_response"],
        ),
        (
            "JSON whose counts are not numbers",
            http(
                "200 OK",
                json,
                br#"{"Attributes":{"ApproximateNumberOfMessages":"many"}}"#,
            ),
            &["invalid_response"],
        ),
        (
            "JSON without the attributes",
            http("200 OK", json, b"{}"),
            &["invalid_response"],
        ),
        (
            "JSON of the wrong shape",
            http("200 OK", json, br#"{"Attributes":[1,2,3]}"#),
            &["invalid_response"],
        ),
        (
            "binary garbage with a 500",
            http("500 Internal Server Error", json, b"\x00\xff\x13garb"),
            &["invalid_response", "unavailable"],
        ),
        (
            "a body shorter than its Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\nConnection: close\r\n\r\n{".to_vec(),
            &["invalid_response", "unavailable"],
        ),
        (
            "not HTTP at all",
            b"\x00\x01\x02 this is not http \xff\r\n\r\n".to_vec(),
            &["invalid_response", "unavailable"],
        ),
    ];
    for (name, response, labels) in cases {
        let endpoint = serve(response).await;
        let cfg = SqsSourceConfig {
            cloudwatch: false,
            ..at_endpoint(&endpoint)
        };
        let (e, _) = failing_sample(&cfg, &moto::shared(), TIMEOUT).await;
        assert!(labels.contains(&e.metric_label()), "{name}: {e}");
        eprintln!("{name}: {e}");
    }
}

/// A credentials provider that never has credentials, as on a machine with
/// no environment keys, profile or role.
#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "no credentials in the test environment",
        )))
    }
}

#[tokio::test]
async fn missing_credentials_give_access_denied_that_says_to_check_credentials() {
    let url = moto::require().await;
    let shared = Clients {
        aws: AwsConfigs::with_credentials(SharedCredentialsProvider::new(NoCredentials)),
        ..Clients::default()
    };
    let cfg = moto::config(&url, &format!("{url}/{}/nocreds", moto::ACCOUNT));
    let (e, _) = failing_sample(&cfg, &shared, TIMEOUT).await;
    assert_eq!(e.metric_label(), "access_denied", "{e}");
    assert!(e.to_string().contains("check the credentials"), "{e}");
}
