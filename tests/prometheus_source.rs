//! The Prometheus source against a real Prometheus server: Debian's 2.42,
//! started by scripts/prometheus.sh on 127.0.0.1 with HTTP basic auth
//! (tests/fixtures/prometheus/web.yml) and a one-second scrape interval.
//!
//! The server scrapes a small exporter this test serves on a loopback port
//! and announces through file service discovery (a JSON file in
//! `QSCALE_TEST_PROMETHEUS_TARGETS_DIR`); the target carries a `run` label
//! unique to this test process, so runs sharing the server never read each
//! other's series. Tests set values in the exporter and wait until
//! Prometheus has scraped them. Covered against the real server: vector and
//! scalar results filling every sample field, a value that changes, empty
//! results (error, or 0 with `empty_as_zero`), several series, NaN and
//! negative values, string and range-vector results, a PromQL syntax error,
//! right, wrong and missing credentials, a wrong base URL, and a refused
//! port.
//!
//! A tiny in-test HTTP server remains only for answers a real server will
//! not give on demand: a 200 that is not Prometheus JSON (a login page in
//! front of it), a 503 "too many queries", a server that hangs, and a bearer
//! token (Prometheus itself checks only basic auth; bearer tokens are checked
//! by the gateways of Thanos, Mimir and friends).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use qscale::contract::{QueueSource, Sample, SourceError};
use qscale::sources::prometheus::{PrometheusSource, PrometheusSourceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The user and password of tests/fixtures/prometheus/web.yml.
const USER: &str = "qscale-test";
const PASSWORD: &str = "qscale-test-secret";

/// How long a test waits for Prometheus to discover the exporter and scrape
/// a value: discovery batches updates for up to 5 s, then one scrape a second.
const SCRAPE_WAIT: Duration = Duration::from_secs(60);

fn prometheus_url() -> String {
    common::env_or("QSCALE_TEST_PROMETHEUS_URL", "http://127.0.0.1:19390")
}

fn targets_dir() -> PathBuf {
    PathBuf::from(common::env_or(
        "QSCALE_TEST_PROMETHEUS_TARGETS_DIR",
        "/tmp/qscale-prometheus/targets",
    ))
}

/// The exporter Prometheus scrapes: one per test process, on its own thread
/// (each `#[tokio::test]` has a runtime that ends with the test).
struct Exporter {
    /// The `run` label Prometheus adds to every series of this process.
    run: String,
    /// Series text (`name{labels}`) -> value, served as the text format.
    series: Mutex<BTreeMap<String, String>>,
}

impl Exporter {
    fn set(&self, series: &str, value: &str) {
        self.series
            .lock()
            .unwrap()
            .insert(series.to_string(), value.to_string());
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (series, value) in self.series.lock().unwrap().iter() {
            out.push_str(&format!("{series} {value}\n"));
        }
        out
    }

    /// `name{run="<this run>",labels}`: a selector for one of our series.
    fn sel(&self, name: &str, labels: &str) -> String {
        let sep = if labels.is_empty() { "" } else { "," };
        format!("{name}{{run=\"{}\"{sep}{labels}}}", self.run)
    }
}

/// Start the exporter once and announce it to Prometheus.
fn exporter() -> &'static Exporter {
    static EXPORTER: OnceLock<Arc<Exporter>> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let dir = targets_dir();
        assert!(
            dir.is_dir(),
            "{} does not exist: start the test Prometheus with `bash scripts/prometheus.sh` \
             (or set QSCALE_TEST_PROMETHEUS_TARGETS_DIR to its targets/ directory)",
            dir.display()
        );
        remove_stale_targets(&dir);
        let listener = StdListener::bind("127.0.0.1:0").expect("bind the exporter");
        let port = listener.local_addr().expect("addr").port();
        let exp = Arc::new(Exporter {
            run: common::unique("prom"),
            series: Mutex::new(BTreeMap::from([
                ("testq_ready{queue=\"jobs\"}".into(), "7".into()),
                ("testq_ready{queue=\"other\"}".into(), "2".into()),
                ("testq_ready{queue=\"negative\"}".into(), "-4".into()),
                ("testq_ready{queue=\"nan\"}".into(), "NaN".into()),
                ("testq_unacked{queue=\"jobs\"}".into(), "3".into()),
                ("testq_oldest_seconds{queue=\"jobs\"}".into(), "12.5".into()),
                (
                    "testq_arrivals_per_second{queue=\"jobs\"}".into(),
                    "2.25".into(),
                ),
            ])),
        });
        let served = exp.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut sock) = conn else { continue };
                let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = served.render();
                let _ = write!(
                    sock,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        // Write then rename, so Prometheus never reads half a file.
        let file = dir.join(format!("qscale-test-{}.json", std::process::id()));
        let tmp = file.with_extension("tmp");
        let sd = serde_json::json!([{
            "targets": [format!("127.0.0.1:{port}")],
            "labels": {"run": exp.run},
        }]);
        std::fs::write(&tmp, sd.to_string()).expect("write the file_sd target");
        std::fs::rename(&tmp, &file).expect("publish the file_sd target");
        exp
    })
}

/// Forget the targets of test processes that have exited (a test process
/// cannot clean up after itself: statics are never dropped).
fn remove_stale_targets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("qscale-test-")
            .and_then(|r| r.strip_suffix(".json"));
        if let Some(pid) = pid
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Config for the real server, authenticated with the fixture's password
/// (read from a file: tests run in parallel threads, so no env vars).
struct Real {
    dir: tempfile::TempDir,
}

impl Real {
    fn new() -> Real {
        let url = prometheus_url();
        let host_port = url.trim_start_matches("http://").trim_end_matches('/');
        let reachable = std::net::ToSocketAddrs::to_socket_addrs(host_port)
            .map(|mut a| {
                a.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
            })
            .unwrap_or(false);
        assert!(
            reachable,
            "the test Prometheus is not reachable at {url} (set QSCALE_TEST_PROMETHEUS_URL to \
             change it); start it with `bash scripts/prometheus.sh`"
        );
        let r = Real {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::write(r.dir.path().join("right"), PASSWORD).unwrap();
        std::fs::write(r.dir.path().join("wrong"), "not-the-password").unwrap();
        r
    }

    fn cfg(&self, query: &str) -> PrometheusSourceConfig {
        PrometheusSourceConfig {
            username: Some(USER.into()),
            password_file: Some(self.dir.path().join("right")),
            ..cfg(&prometheus_url(), query)
        }
    }

    fn wrong_password(&self, query: &str) -> PrometheusSourceConfig {
        PrometheusSourceConfig {
            password_file: Some(self.dir.path().join("wrong")),
            ..self.cfg(query)
        }
    }
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
    PrometheusSource::new(c, Duration::from_secs(5))
}

/// Sample until `done` accepts the sample, i.e. until Prometheus has
/// discovered the exporter and scraped the values the test set.
async fn sample_until(
    c: PrometheusSourceConfig,
    what: &str,
    done: impl Fn(&Sample) -> bool,
) -> Sample {
    let src = source(c);
    common::poll_until(SCRAPE_WAIT, Duration::from_millis(250), what, || async {
        match src.sample().await {
            Ok(s) if done(&s) => Ok(s),
            Ok(s) => Err(format!("{s:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// Wait until Prometheus has scraped this run's fixed series.
async fn scraped(real: &Real) {
    let exp = exporter();
    let q = format!("sum({})", exp.sel("testq_ready", "queue=\"jobs\""));
    sample_until(
        real.cfg(&q),
        "Prometheus scrapes the test's exporter",
        |s| s.visible == Some(7),
    )
    .await;
}

async fn sample_err(c: PrometheusSourceConfig) -> SourceError {
    let q = c.query.clone();
    source(c).sample().await.expect_err(&q)
}

#[tokio::test]
async fn every_query_fills_its_sample_field_from_vector_and_scalar_results() {
    let real = Real::new();
    let exp = exporter();
    scraped(&real).await;
    let c = PrometheusSourceConfig {
        in_flight_query: Some(format!(
            "scalar(sum({}))",
            exp.sel("testq_unacked", "queue=\"jobs\"")
        )),
        oldest_age_query: Some(format!(
            "max({})",
            exp.sel("testq_oldest_seconds", "queue=\"jobs\"")
        )),
        arrival_rate_query: Some(format!(
            "sum({})",
            exp.sel("testq_arrivals_per_second", "queue=\"jobs\"")
        )),
        ..real.cfg(&format!(
            "sum({})",
            exp.sel("testq_ready", "queue=\"jobs\"")
        ))
    };
    let s = source(c).sample().await.expect("sample");
    assert_eq!(s.visible, Some(7));
    assert_eq!(s.in_flight, Some(3), "a scalar result");
    assert_eq!(s.oldest_age, Some(Duration::from_secs_f64(12.5)));
    assert_eq!(s.arrival_rate, Some(2.25));
}

#[tokio::test]
async fn a_value_the_exporter_changes_is_read_after_the_next_scrape() {
    let real = Real::new();
    let exp = exporter();
    let series = "testq_ready{queue=\"changing\"}";
    let q = format!("sum({})", exp.sel("testq_ready", "queue=\"changing\""));
    exp.set(series, "5");
    sample_until(real.cfg(&q), "the first value", |s| s.visible == Some(5)).await;
    exp.set(series, "1250");
    sample_until(real.cfg(&q), "the changed value", |s| {
        s.visible == Some(1250)
    })
    .await;
}

#[tokio::test]
async fn an_empty_result_is_an_error_unless_empty_as_zero() {
    let real = Real::new();
    let exp = exporter();
    scraped(&real).await;
    let q = format!("sum({})", exp.sel("testq_ready", "queue=\"absent\""));
    let e = sample_err(real.cfg(&q)).await;
    assert_eq!(e.metric_label(), "invalid_response", "{e}");
    assert!(e.to_string().contains("returned no series"), "{e}");
    assert!(e.to_string().contains("empty_as_zero"), "{e}");
    let s = source(PrometheusSourceConfig {
        empty_as_zero: true,
        ..real.cfg(&q)
    })
    .sample()
    .await
    .expect("empty as zero");
    assert_eq!(s.visible, Some(0));
}

#[tokio::test]
async fn answers_that_are_not_one_count_get_clear_labels() {
    let real = Real::new();
    let exp = exporter();
    scraped(&real).await;
    let cases = [
        (
            exp.sel("testq_ready", ""),
            "invalid_response",
            "series; aggregate them to one",
        ),
        (
            format!("sum({})", exp.sel("testq_ready", "queue=\"nan\"")),
            "invalid_response",
            "not a finite number",
        ),
        (
            format!("sum({})", exp.sel("testq_ready", "queue=\"negative\"")),
            "invalid_response",
            "negative",
        ),
        (
            "\"seven\"".to_string(),
            "invalid_response",
            "returned a string",
        ),
        (
            format!("{}[1m]", exp.sel("testq_ready", "queue=\"jobs\"")),
            "invalid_response",
            "range vector",
        ),
    ];
    for (query, label, text) in cases {
        let e = sample_err(real.cfg(&query)).await;
        assert_eq!(e.metric_label(), label, "{query}: {e}");
        assert!(
            e.to_string().contains(text),
            "{query}: want {text:?} in {e}"
        );
    }
}

#[tokio::test]
async fn a_promql_syntax_error_is_reported_with_prometheus_own_words() {
    let real = Real::new();
    let e = sample_err(real.cfg("rate(testq_ready[")).await;
    assert_eq!(e.metric_label(), "invalid_response", "{e}");
    let text = e.to_string();
    assert!(text.contains("bad_data"), "{text}");
    assert!(text.contains("parse error"), "{text}");
    assert!(
        text.contains("rate(testq_ready["),
        "names the query: {text}"
    );
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_access_denied() {
    let real = Real::new();
    let q = "vector(1)";
    let s = source(real.cfg(q))
        .sample()
        .await
        .expect("the right password");
    assert_eq!(s.visible, Some(1));

    let e = sample_err(real.wrong_password(q)).await;
    assert_eq!(e.metric_label(), "access_denied", "{e}");
    assert!(e.to_string().contains("HTTP 401"), "{e}");
    assert!(e.to_string().contains("check the credentials"), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");

    let e = sample_err(cfg(&prometheus_url(), q)).await;
    assert_eq!(e.metric_label(), "access_denied", "no credentials: {e}");
}

#[tokio::test]
async fn a_wrong_base_url_is_not_found() {
    let real = Real::new();
    let c = PrometheusSourceConfig {
        url: format!("{}/prefix", prometheus_url()),
        ..real.cfg("vector(1)")
    };
    let e = sample_err(c).await;
    assert_eq!(e.metric_label(), "not_found", "{e}");
    assert!(e.to_string().contains("HTTP 404"), "{e}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // A port that was free a moment ago: nothing listens, the kernel refuses.
    let port = StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let real = Real::new();
    let c = PrometheusSourceConfig {
        url: format!("http://127.0.0.1:{port}"),
        ..real.cfg("vector(1)")
    };
    let e = sample_err(c).await;
    assert_eq!(e.metric_label(), "unavailable", "{e}");
    assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
}

// ---- Answers a real server does not give on demand: an in-test server. ----

/// One canned answer: status, content type, body; `None` body hangs.
#[derive(Clone)]
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Option<String>,
}

/// What the server saw: the Authorization header of each request.
type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// Serve `answers` (keyed by the decoded PromQL) on 127.0.0.1.
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
                seen.lock().unwrap().push(auth);
                let query = target
                    .split_once("?query=")
                    .map(|(_, q)| {
                        percent_encoding::percent_decode_str(q)
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .unwrap_or_default();
                let Some(answer) = answers.get(query.as_str()).cloned() else {
                    return;
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

#[tokio::test]
async fn a_page_that_is_not_prometheus_json_and_an_overloaded_server_get_clear_labels() {
    let (url, _) = serve(HashMap::from([
        (
            "text",
            Answer {
                status: 200,
                content_type: "text/html",
                body: Some("<html>Sign in</html>".into()),
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
    let e = sample_err(cfg(&url, "text")).await;
    assert_eq!(e.metric_label(), "invalid_response", "{e}");
    assert!(e.to_string().contains("not Prometheus JSON"), "{e}");
    let e = sample_err(cfg(&url, "overloaded")).await;
    assert_eq!(e.metric_label(), "unavailable", "{e}");
    assert!(e.to_string().contains("too many queries"), "{e}");
}

#[tokio::test]
async fn the_bearer_token_comes_from_its_file_and_never_shows_in_debug_output() {
    let scalar1 = Answer {
        status: 200,
        content_type: "application/json",
        body: Some(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"1"]}}"#
                .into(),
        ),
    };
    let (url, seen) = serve(HashMap::from([("up", scalar1)])).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-3318\n").unwrap();
    let src = source(PrometheusSourceConfig {
        token_file: Some(token),
        ..cfg(&url, "up")
    });
    assert_eq!(src.sample().await.expect("sample").visible, Some(1));
    assert_eq!(seen.lock().unwrap()[0].as_deref(), Some("Bearer tok-3318"));
    assert!(!format!("{src:?}").contains("tok-3318"));
}

#[tokio::test]
async fn a_server_that_hangs_times_out() {
    let (url, _) = serve(HashMap::from([(
        "slow",
        Answer {
            status: 200,
            content_type: "application/json",
            body: None,
        },
    )]))
    .await;
    let e = PrometheusSource::new(cfg(&url, "slow"), Duration::from_secs(1))
        .sample()
        .await
        .expect_err("hang");
    assert_eq!(e.metric_label(), "timeout", "{e}");
}
