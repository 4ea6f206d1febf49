//! The Prometheus source against a tiny HTTP server in the test that
//! answers `/api/v1/query` with the real JSON shapes of the Prometheus HTTP
//! API (vector, scalar, error, empty) and with the things a wrong endpoint
//! serves instead (plain text, 401, a hang).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qscale::contract::QueueSource;
use qscale::sources::prometheus::{PrometheusSource, PrometheusSourceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One canned answer: status, content type, body; `None` body hangs.
#[derive(Clone)]
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Option<String>,
}

fn json(body: &str) -> Answer {
    Answer {
        status: 200,
        content_type: "application/json",
        body: Some(body.to_string()),
    }
}

fn vector(values: &[&str]) -> Answer {
    let series: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!(r#"{{"metric":{{"queue":"q{i}"}},"value":[1700000000.5,"{v}"]}}"#))
        .collect();
    json(&format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        series.join(",")
    ))
}

fn scalar(v: &str) -> Answer {
    json(&format!(
        r#"{{"status":"success","data":{{"resultType":"scalar","result":[1700000000.5,"{v}"]}}}}"#
    ))
}

/// What the server saw: the decoded `query` parameter and the
/// Authorization header of each request.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Serve `answers` (keyed by the decoded PromQL) on 127.0.0.1; unknown
/// queries get a Prometheus `bad_data` error.
async fn serve(answers: HashMap<&'static str, Answer>) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let answers = answers.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("authorization: ")
                            .or(l.strip_prefix("Authorization: "))
                    })
                    .map(str::to_string);
                let query = target
                    .split_once("?query=")
                    .map(|(_, q)| {
                        percent_encoding::percent_decode_str(q)
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .unwrap_or_default();
                seen.lock().unwrap().push((query.clone(), auth));
                let answer = if !target.starts_with("/api/v1/query?") {
                    Answer {
                        status: 404,
                        content_type: "text/plain",
                        body: Some("404 page not found".into()),
                    }
                } else {
                    answers.get(query.as_str()).cloned().unwrap_or(Answer {
                        status: 400,
                        content_type: "application/json",
                        body: Some(
                            serde_json::json!({
                                "status": "error",
                                "errorType": "bad_data",
                                "error": format!("1:1: parse error: unknown query {query:?}"),
                            })
                            .to_string(),
                        ),
                    })
                };
                let Some(body) = answer.body else {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                };
                let resp = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    answer.status,
                    answer.content_type,
                    body.len(),
                    body
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn cfg(url: &str, query: &str) -> PrometheusSourceConfig {
    PrometheusSourceConfig {
        url: url.to_string(),
        query: query.to_string(),
        in_flight_query: None,
        oldest_age_query: None,
        arrival_rate_query: None,
        empty_as_zero: false,
        token_env: None,
        token_file: None,
        username: None,
        password_env: None,
        password_file: None,
        tenant: None,
        count_in_flight: true,
    }
}

fn source(c: PrometheusSourceConfig) -> PrometheusSource {
    PrometheusSource::new(c, Duration::from_secs(2))
}

#[tokio::test]
async fn every_query_fills_its_sample_field_from_vector_and_scalar_results() {
    let (url, seen) = serve(HashMap::from([
        ("sum(queue_ready{queue=\"jobs\"})", vector(&["7"])),
        ("sum(queue_unacked{queue=\"jobs\"})", scalar("3")),
        ("max(queue_oldest_seconds)", vector(&["12.5"])),
        ("sum(rate(enqueued_total[1m]))", scalar("2.25")),
    ]))
    .await;
    let s = source(PrometheusSourceConfig {
        in_flight_query: Some("sum(queue_unacked{queue=\"jobs\"})".into()),
        oldest_age_query: Some("max(queue_oldest_seconds)".into()),
        arrival_rate_query: Some("sum(rate(enqueued_total[1m]))".into()),
        ..cfg(&url, "sum(queue_ready{queue=\"jobs\"})")
    })
    .sample()
    .await
    .expect("sample");
    assert_eq!(s.visible, Some(7));
    assert_eq!(s.in_flight, Some(3));
    assert_eq!(s.oldest_age, Some(Duration::from_secs_f64(12.5)));
    assert_eq!(s.arrival_rate, Some(2.25));
    let queries: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(q, _)| q.clone())
        .collect();
    assert_eq!(queries.len(), 4, "{queries:?}");
    assert!(queries.contains(&"sum(queue_ready{queue=\"jobs\"})".to_string()));
}

#[tokio::test]
async fn bad_answers_get_clear_labels() {
    let (url, _) = serve(HashMap::from([
        ("two", vector(&["1", "2"])),
        ("empty", vector(&[])),
        ("nan", scalar("NaN")),
        ("negative", vector(&["-4"])),
        (
            "text",
            Answer {
                status: 200,
                content_type: "text/plain",
                body: Some("queue_ready 7\n".into()),
            },
        ),
        (
            "string",
            json(r#"{"status":"success","data":{"resultType":"string","result":[1,"seven"]}}"#),
        ),
        (
            "denied",
            Answer {
                status: 401,
                content_type: "text/plain",
                body: Some("Unauthorized".into()),
            },
        ),
        (
            "overloaded",
            Answer {
                status: 503,
                content_type: "application/json",
                body: Some(
                    r#"{"status":"error","errorType":"unavailable","error":"too many queries"}"#
                        .into(),
                ),
            },
        ),
    ]))
    .await;
    let cases = [
        ("two", "invalid_response", "returned 2 series"),
        ("empty", "invalid_response", "returned no series"),
        ("nan", "invalid_response", "not a finite number"),
        ("negative", "invalid_response", "negative"),
        ("text", "invalid_response", "not Prometheus JSON"),
        ("string", "invalid_response", "returned a string"),
        ("denied", "access_denied", "HTTP 401"),
        ("overloaded", "unavailable", "too many queries"),
        ("rate(x[", "invalid_response", "bad_data: 1:1: parse error"),
    ];
    for (query, label, text) in cases {
        let e = source(cfg(&url, query)).sample().await.expect_err(query);
        assert_eq!(e.metric_label(), label, "{query}: {e}");
        assert!(
            e.to_string().contains(text),
            "{query}: want {text:?} in {e}"
        );
    }
    let s = source(PrometheusSourceConfig {
        empty_as_zero: true,
        ..cfg(&url, "empty")
    })
    .sample()
    .await
    .expect("empty as zero");
    assert_eq!(s.visible, Some(0));
}

#[tokio::test]
async fn a_wrong_base_url_is_not_found() {
    let (url, _) = serve(HashMap::new()).await;
    let e = source(cfg(&format!("{url}/prefix"), "up"))
        .sample()
        .await
        .expect_err("wrong path");
    assert_eq!(e.metric_label(), "not_found", "{e}");
}

#[tokio::test]
async fn the_bearer_token_comes_from_its_file_and_never_shows_in_debug_output() {
    let (url, seen) = serve(HashMap::from([("up", scalar("1"))])).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-3318\n").unwrap();
    let src = source(PrometheusSourceConfig {
        token_file: Some(token),
        ..cfg(&url, "up")
    });
    assert_eq!(src.sample().await.expect("sample").visible, Some(1));
    assert_eq!(
        seen.lock().unwrap()[0].1.as_deref(),
        Some("Bearer tok-3318")
    );
    assert!(!format!("{src:?}").contains("tok-3318"));
}

#[tokio::test]
async fn a_refused_port_is_unavailable_and_a_hang_times_out() {
    let e = source(cfg("http://127.0.0.1:1", "up"))
        .sample()
        .await
        .expect_err("refused");
    assert_eq!(e.metric_label(), "unavailable", "{e}");
    assert!(e.to_string().to_lowercase().contains("refused"), "{e}");

    let (url, _) = serve(HashMap::from([(
        "slow",
        Answer {
            status: 200,
            content_type: "application/json",
            body: None,
        },
    )]))
    .await;
    let e = source(cfg(&url, "slow")).sample().await.expect_err("hang");
    assert_eq!(e.metric_label(), "timeout", "{e}");
}
