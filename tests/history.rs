//! `qscale history` against real peers: moto's CloudWatch and SQS, and a
//! real Prometheus server (Debian's 2.42, started by scripts/prometheus.sh).
//!
//! moto computes no SQS metrics itself, so the CloudWatch tests write a
//! week of per-minute `NumberOfMessagesSent` datapoints with PutMetricData
//! and check that the import gives back exactly what was written, minute by
//! minute. Each test writes into its own queue name and its own week (far
//! in the past, picked from the clock), because moto is never reset and its
//! GetMetricData scans every datapoint of the window. moto answers a whole
//! week in one page (it never sends `NextToken` for GetMetricData), so the
//! paging loop runs here only to its first page; the import's windows of a
//! day per call are exercised.
//!
//! The Prometheus test backfills a counter over an hour with
//! `promtool tsdb create-blocks-from openmetrics` into the server's data
//! directory; the server picks new blocks up by itself (it reloads its
//! blocks about once a minute), so the test waits for the series to
//! answer. The data ends minutes before now and spans one hour: the test
//! server keeps 2 h of data (`--storage.tsdb.retention.time=2h`), and a
//! backfilled 2 h block that ends more than that before now is deleted as
//! soon as it is loaded (three hours lost their first block that way).

mod common;
#[path = "support/moto.rs"]
mod moto;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use aws_smithy_types::DateTime;
use qscale::clients::aws::AwsConfigs;
use qscale::history::{
    CloudWatchArgs, CommonArgs, FillGaps, HistoryArgs, HistoryError, HistorySource, Plan,
    PrometheusArgs, import,
};
use qscale::world::trace::Trace;

const TIMEOUT: Duration = Duration::from_secs(30);
const MINUTE: u64 = 60;
const WEEK_MINUTES: u64 = 7 * 1440;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(at(secs)).to_string()
}

/// The start of a week in the past that no other run uses: 2000-01-03 plus
/// a number of weeks taken from the clock.
fn unique_week() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    946_857_600 + (nanos % 1_200) as u64 * 7 * 86_400 + (std::process::id() as u64 % 97) * 3600
}

fn common(from: u64, to: u64) -> CommonArgs {
    CommonArgs {
        last: None,
        from: Some(rfc3339(from)),
        to: Some(rfc3339(to)),
        fill_gaps: None,
        output: None,
        resolution: None,
        timeout: TIMEOUT,
    }
}

fn cloudwatch_args(moto: &str, queue: &str, region: &str, common: CommonArgs) -> CloudWatchArgs {
    CloudWatchArgs {
        queue: queue.to_string(),
        account_id: None,
        region: Some(region.to_string()),
        endpoint_url: Some(moto.to_string()),
        start_backlog: false,
        common,
    }
}

fn cloudwatch_plan(moto: &str, queue: &str, region: &str, start_backlog: bool) -> Plan {
    let args = HistoryArgs {
        source: HistorySource::Cloudwatch(CloudWatchArgs {
            start_backlog,
            ..cloudwatch_args(moto, queue, region, common(0, 1))
        }),
    };
    qscale::history::plan(&args).expect("plan").0
}

fn aws() -> AwsConfigs {
    AwsConfigs::with_credentials(moto::credentials())
}

/// Write `values` (one per minute from `start`, `None` for none) as `metric`
/// of `queue`, 1,000 datapoints per call (CloudWatch's limit).
async fn put_minutes(
    cw: &aws_sdk_cloudwatch::Client,
    queue: &str,
    metric: &str,
    start: u64,
    values: &[Option<f64>],
) {
    let data: Vec<MetricDatum> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            Some(
                MetricDatum::builder()
                    .metric_name(metric)
                    .dimensions(Dimension::builder().name("QueueName").value(queue).build())
                    .timestamp(DateTime::from(at(start + i as u64 * MINUTE)))
                    .value((*v)?)
                    .build(),
            )
        })
        .collect();
    for chunk in data.chunks(1000) {
        cw.put_metric_data()
            .namespace("AWS/SQS")
            .set_metric_data(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {metric} for {queue}: {e:?}"));
    }
}

/// Sum of each minute of a trace.
fn per_minute(t: &Trace) -> Vec<u64> {
    t.per_second
        .chunks(MINUTE as usize)
        .map(|c| c.iter().sum())
        .collect()
}

#[tokio::test]
async fn a_week_of_cloudwatch_minutes_imports_exactly_as_written_with_the_start_backlog() {
    let url = moto::require().await;
    let region = "eu-west-3";
    let cw = aws_sdk_cloudwatch::Client::new(&moto::sdk_config_in(&url, region).await);
    let queue = moto::unique("history-week");
    let start = unique_week();
    // Quiet nights, busy days, some minutes of zero: every minute differs.
    let sent: Vec<f64> = (0..WEEK_MINUTES)
        .map(|i| {
            let hour = (i / 60) % 24;
            let busy = if (8..20).contains(&hour) { 40 } else { 3 };
            ((i * 7919) % (busy + 1)) as f64
        })
        .collect();
    let written: Vec<Option<f64>> = sent.iter().copied().map(Some).collect();
    put_minutes(&cw, &queue, "NumberOfMessagesSent", start, &written).await;
    put_minutes(
        &cw,
        &queue,
        "ApproximateNumberOfMessagesVisible",
        start,
        &[Some(250.0), Some(240.0)],
    )
    .await;

    let plan = cloudwatch_plan(&url, &queue, region, true);
    let end = start + WEEK_MINUTES * MINUTE;
    let h = import(&plan, &common(start, end), &aws(), SystemTime::now())
        .await
        .expect("import");
    assert!(h.warnings.is_empty(), "{:?}", h.warnings);
    assert_eq!(h.start, at(start));
    assert_eq!(h.trace.len_seconds(), WEEK_MINUTES * MINUTE);
    assert_eq!(h.start_backlog, Some(250));
    let mut minutes = per_minute(&h.trace);
    assert_eq!(h.trace.per_second[0] - h.trace.per_second[1], 250);
    minutes[0] -= 250;
    let want: Vec<u64> = sent.iter().map(|&v| v as u64).collect();
    assert_eq!(minutes, want, "every minute as written");
    assert_eq!(h.calls, 7, "one GetMetricData call per day of the week");

    // The CSV, through the command's own path, reads back as the same trace.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("week.csv");
    let args = HistoryArgs {
        source: HistorySource::Cloudwatch(CloudWatchArgs {
            start_backlog: true,
            ..cloudwatch_args(
                &url,
                &queue,
                region,
                CommonArgs {
                    output: Some(file.clone()),
                    ..common(start, end)
                },
            )
        }),
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    qscale::history::execute_with(&args, &aws(), SystemTime::now(), &mut out, &mut err)
        .await
        .expect("execute");
    let text = std::fs::read_to_string(&file).expect("csv written");
    assert!(
        text.contains("# start backlog: 250 messages"),
        "{}",
        &text[..300]
    );
    let back = Trace::parse_csv(&text, &file).expect("the simulator reads it");
    assert_eq!(back.per_second, h.trace.per_second);
    let summary = String::from_utf8_lossy(&err);
    assert!(summary.contains("7days from"), "{summary}");
}

#[tokio::test]
async fn a_gap_in_cloudwatch_data_is_refused_naming_it_or_filled_with_zero_when_asked() {
    let url = moto::require().await;
    let region = "eu-north-1";
    let cw = aws_sdk_cloudwatch::Client::new(&moto::sdk_config_in(&url, region).await);
    let queue = moto::unique("history-gap");
    let start = unique_week();
    // Minutes 5-7 and 12 have no datapoint; the last 3 minutes of the
    // range neither (CloudWatch's lag), which is trimmed, not a gap.
    let values: Vec<Option<f64>> = (0..20u64)
        .map(|i| (!matches!(i, 5..=7 | 12)).then_some(10.0))
        .collect();
    put_minutes(&cw, &queue, "NumberOfMessagesSent", start, &values).await;
    let plan = cloudwatch_plan(&url, &queue, region, false);
    let range = common(start, start + 23 * MINUTE);

    let e = import(&plan, &range, &aws(), SystemTime::now())
        .await
        .expect_err("gaps are refused");
    assert_eq!(e.metric_label(), "gaps", "{e}");
    let text = e.to_string();
    assert!(
        text.contains("2 gap(s)") && text.contains("4m in all"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "the first from {} to {}",
            rfc3339(start + 5 * MINUTE),
            rfc3339(start + 8 * MINUTE)
        )),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");

    let filled = CommonArgs {
        fill_gaps: Some(FillGaps::Zero),
        ..range
    };
    let h = import(&plan, &filled, &aws(), SystemTime::now())
        .await
        .expect("filled");
    let want: Vec<u64> = values.iter().map(|v| v.unwrap_or(0.0) as u64).collect();
    assert_eq!(per_minute(&h.trace), want);
    assert!(
        h.warnings
            .iter()
            .any(|w| w.contains("2 gap(s) read as no arrivals")),
        "{:?}",
        h.warnings
    );
    assert!(
        h.warnings.iter().any(|w| w.contains("the trace ends at")),
        "{:?}",
        h.warnings
    );
}

#[tokio::test]
async fn a_queue_that_does_not_exist_and_a_silent_one_get_their_own_errors() {
    let url = moto::require().await;
    let region = moto::REGION;
    let start = unique_week();
    let range = common(start, start + 60 * MINUTE);

    let missing = moto::unique("history-nope");
    for queue in [
        missing.clone(),
        format!("{url}/{}/{missing}", moto::ACCOUNT),
    ] {
        let plan = cloudwatch_plan(&url, &queue, region, false);
        let e = import(&plan, &range, &aws(), SystemTime::now())
            .await
            .expect_err("no such queue");
        assert_eq!(e.metric_label(), "not_found", "{e}");
        assert!(
            e.to_string()
                .contains(&format!("queue {missing} does not exist")),
            "{e}"
        );
    }

    let silent = moto::unique("history-silent");
    moto::create_queue(&moto::sqs(&url).await, &silent).await;
    let plan = cloudwatch_plan(&url, &silent, region, false);
    let e = import(&plan, &range, &aws(), SystemTime::now())
        .await
        .expect_err("no data");
    assert_eq!(e.metric_label(), "empty", "{e}");
    assert!(
        e.to_string().contains(&format!(
            "NumberOfMessagesSent of queue {silent} has no data from {}",
            rfc3339(start)
        )),
        "{e}"
    );
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn an_unreachable_cloudwatch_endpoint_is_one_clear_line() {
    let port = closed_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let plan = cloudwatch_plan(&endpoint, "jobs", moto::REGION, false);
    let start = unique_week();
    let range = CommonArgs {
        timeout: Duration::from_secs(5),
        ..common(start, start + 10 * MINUTE)
    };
    let e = import(&plan, &range, &aws(), SystemTime::now())
        .await
        .expect_err("unreachable");
    assert!(
        matches!(e.metric_label(), "unavailable" | "timeout"),
        "{}: {e}",
        e.metric_label()
    );
    assert!(e.to_string().contains("GetMetricData"), "{e}");
}

/// Run the qscale binary with moto's test credentials: (exit code,
/// stdout, stderr).
fn qscale_with_test_credentials(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run qscale");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_exits_1_with_one_line_for_a_missing_queue_and_a_bad_range() {
    let url = moto::url();
    let missing = moto::unique("history-cli");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "history",
            "cloudwatch",
            "--queue",
            &missing,
            "--region",
            "us-east-1",
            "--endpoint-url",
            &url,
        ];
        args.extend_from_slice(extra);
        let (code, _, err) = qscale_with_test_credentials(&args);
        (code, err)
    };
    let (code, err) = run(&["--last", "1h"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: queue ") && err.contains("does not exist"),
        "{err}"
    );

    let (code, err) = run(&[
        "--from",
        "2026-01-02T00:00:00Z",
        "--to",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("bad range: it ends (2026-01-01T00:00:00Z) before it starts"),
        "{err}"
    );
}

/// `--trace history:...` reads the scaler's own history in place: the same
/// figures as writing the CSV with `qscale history scaler` and replaying
/// it, and `qscale tune` takes it too.
#[tokio::test]
async fn simulate_and_tune_read_a_scalers_history_inline_as_from_the_written_csv() {
    let url = moto::require().await;
    let region = "eu-west-3";
    let cw = aws_sdk_cloudwatch::Client::new(&moto::sdk_config_in(&url, region).await);
    let queue = moto::unique("history-inline");
    let start = unique_week();
    // Three hours: a quiet hour, a busy one with a spike, a quiet one.
    let sent: Vec<Option<f64>> = (0..180u64)
        .map(|i| {
            Some(match i {
                60..=119 if i % 20 == 5 => 900.0,
                60..=119 => 120.0,
                _ => (i % 7) as f64,
            })
        })
        .collect();
    put_minutes(&cw, &queue, "NumberOfMessagesSent", start, &sent).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("q.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[scaler]]
name = "inline"

[scaler.source]
kind = "sqs"
queue_name = "{queue}"
region = "{region}"
endpoint_url = "{url}"

[scaler.target]
kind = "kubernetes"
namespace = "default"
name = "workers"

[scaler.policy]
min_replicas = 1
max_replicas = 60
messages_per_replica = 10
max_message_age = "2m"
"#
        ),
    )
    .expect("write config");
    let (from, to) = (rfc3339(start), rfc3339(start + 180 * MINUTE));
    let run = qscale_with_test_credentials;
    let cfg = config.to_str().expect("utf-8 path");
    let csv = dir.path().join("h.csv");
    let (code, _, err) = run(&[
        "history",
        "scaler",
        "--config",
        cfg,
        "--from",
        &from,
        "--to",
        &to,
        "-o",
        csv.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let simulate = |trace: &str| {
        run(&[
            "simulate",
            "--config",
            cfg,
            "--trace",
            trace,
            "--seconds-per-message",
            "2",
            "--compare",
            "hpa",
            "--output",
            "json",
        ])
    };
    let (code, from_file, err) = simulate(csv.to_str().expect("utf-8 path"));
    assert_eq!(code, Some(0), "{err}");
    let inline_trace = format!("history:from={from},to={to}");
    let (code, inline, err) = simulate(&inline_trace);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(inline, from_file, "the same figures either way");
    assert!(
        err.contains(&format!("NumberOfMessagesSent of queue {queue}")) && err.contains("3h from"),
        "the summary line says what was read: {err}"
    );

    let (code, out, err) = run(&[
        "tune",
        "--config",
        cfg,
        "--trace",
        &inline_trace,
        "--seconds-per-message",
        "2",
        "--budget-seconds",
        "20",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("[scaler.policy]"), "{out}");

    // A range without data is the history's own one-line error, exit 1;
    // a misspelt key names the keys there are.
    let (code, _, err) = simulate(&format!(
        "history:from={},to={}",
        rfc3339(start + 400 * MINUTE),
        rfc3339(start + 460 * MINUTE)
    ));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // The queue was never created in SQS, so the error says so too.
    assert!(
        err.contains("does not exist") && err.contains("CloudWatch has no data"),
        "{err}"
    );
    let (code, _, err) = simulate("history:since=7d");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unknown key \"since\""), "{err}");
}

// ---- Prometheus ----

const PROM_USER: &str = "qscale-test";
const PROM_PASSWORD: &str = "qscale-test-secret";

fn prometheus_url() -> String {
    common::env_or("QSCALE_TEST_PROMETHEUS_URL", "http://127.0.0.1:19390")
}

fn prometheus_data_dir() -> PathBuf {
    if let Ok(d) = std::env::var("QSCALE_TEST_PROMETHEUS_DATA_DIR")
        && !d.is_empty()
    {
        return PathBuf::from(d);
    }
    let targets = common::env_or(
        "QSCALE_TEST_PROMETHEUS_TARGETS_DIR",
        "/tmp/qscale-prometheus/targets",
    );
    PathBuf::from(targets).with_file_name("data")
}

fn prometheus_args(
    query: &str,
    password_file: &std::path::Path,
    common: CommonArgs,
) -> HistoryArgs {
    HistoryArgs {
        source: HistorySource::Prometheus(PrometheusArgs {
            url: prometheus_url(),
            query: query.to_string(),
            step: Duration::from_secs(60),
            token_env: None,
            token_file: None,
            username: Some(PROM_USER.to_string()),
            password_env: None,
            password_file: Some(password_file.to_path_buf()),
            tenant: None,
            common,
        }),
    }
}

async fn prometheus_import(args: &HistoryArgs) -> Result<qscale::history::History, HistoryError> {
    let (plan, common) = qscale::history::plan(args)?;
    import(&plan, common, &AwsConfigs::new(), SystemTime::now()).await
}

#[tokio::test]
async fn a_backfilled_prometheus_counter_imports_as_its_increments_and_errors_are_one_line() {
    let url = prometheus_url();
    let host_port = url.trim_start_matches("http://").to_string();
    common::require_reachable("Prometheus", &host_port, "QSCALE_TEST_PROMETHEUS_URL");
    let dir = tempfile::tempdir().expect("tempdir");
    let password = dir.path().join("password");
    std::fs::write(&password, PROM_PASSWORD).expect("password file");

    // An hour of a counter, sampled every 15 s, ending 5 minutes ago;
    // within each minute it grows evenly, by that minute's count.
    let metric = common::unique("qscale_history_backfill").replace('-', "_") + "_total";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let minutes = 60u64;
    let start = (now / MINUTE) * MINUTE - 5 * MINUTE - minutes * MINUTE;
    let counts: Vec<u64> = (0..minutes).map(|m| (m * 37 + m * m) % 61).collect();
    let mut om =
        format!("# HELP {metric} Backfilled by tests/history.rs.\n# TYPE {metric} counter\n");
    let mut total = 1000.0;
    for (m, &n) in counts.iter().enumerate() {
        for q in 0..4u64 {
            let t = start + m as u64 * MINUTE + q * 15;
            om.push_str(&format!(
                "{metric} {} {t}\n",
                total + n as f64 * q as f64 / 4.0
            ));
        }
        total += n as f64;
    }
    om.push_str(&format!(
        "{metric} {total} {}\n# EOF\n",
        start + minutes * MINUTE
    ));
    let om_file = dir.path().join("backfill.om");
    std::fs::write(&om_file, om).expect("openmetrics file");
    let data_dir = prometheus_data_dir();
    let out = std::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
        .arg(&om_file)
        .arg(&data_dir)
        .output()
        .expect("run promtool (Debian's prometheus package)");
    assert!(
        out.status.success(),
        "promtool into {}: {}",
        data_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    let query = format!("sum(rate({metric}[1m]))");
    let args = prometheus_args(&query, &password, common(start, start + minutes * MINUTE));
    let h = common::poll_until(
        Duration::from_secs(150),
        Duration::from_secs(3),
        "Prometheus loads the backfilled blocks",
        || async {
            match prometheus_import(&args).await {
                Ok(h) if h.trace.len_seconds() == minutes * MINUTE => Ok(h),
                Ok(h) => Err(format!(
                    "{} s so far: {:?}",
                    h.trace.len_seconds(),
                    h.warnings
                )),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    assert!(h.warnings.is_empty(), "{:?}", h.warnings);
    assert_eq!(h.start, at(start));
    let got = per_minute(&h.trace);
    for (m, (&g, &w)) in got.iter().zip(&counts).enumerate() {
        assert!(
            g.abs_diff(w) <= 1,
            "minute {m}: imported {g}, the counter grew {w}"
        );
    }
    let want_total: u64 = counts.iter().sum();
    assert!(
        h.trace.total().abs_diff(want_total) <= 1,
        "{} vs {want_total}",
        h.trace.total()
    );
    assert_eq!(h.calls, 1, "an hour of 1-minute steps fits one query");

    let range = || common(start, start + minutes * MINUTE);
    // A PromQL error shows Prometheus' own message.
    let e = prometheus_import(&prometheus_args("sum(rate(jobs[1m])", &password, range()))
        .await
        .expect_err("syntax error");
    assert_eq!(e.metric_label(), "promql", "{e}");
    assert!(e.to_string().contains("parse error"), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    // A series that never existed is an empty history.
    let absent = format!("sum(rate({metric}_absent[1m]))");
    let e = prometheus_import(&prometheus_args(&absent, &password, range()))
        .await
        .expect_err("empty");
    assert_eq!(e.metric_label(), "empty", "{e}");
    // Several series must be aggregated.
    let two = format!(
        "rate({metric}[1m]) or label_replace(rate({metric}[1m]), \"x\", \"y\", \"\", \"\")"
    );
    let e = prometheus_import(&prometheus_args(&two, &password, range()))
        .await
        .expect_err("two series");
    assert!(
        e.to_string().contains("returned 2 series; aggregate"),
        "{e}"
    );
    // A wrong password, and a port nobody listens on.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password").expect("file");
    let e = prometheus_import(&prometheus_args(&query, &wrong, range()))
        .await
        .expect_err("denied");
    assert_eq!(e.metric_label(), "access_denied", "{e}");
    let mut refused = prometheus_args(&query, &password, range());
    if let HistorySource::Prometheus(p) = &mut refused.source {
        p.url = format!("http://127.0.0.1:{}", closed_port());
    }
    let e = prometheus_import(&refused).await.expect_err("refused");
    assert_eq!(e.metric_label(), "unavailable", "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
}
