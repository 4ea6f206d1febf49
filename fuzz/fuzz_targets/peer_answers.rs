//! Fuzz target: every parser of what a peer answers, multiplexed on the
//! input's first byte so that one build and one run cover them all. The rest
//! of the input is the answer, as text where the peer sends text, so corpus
//! files read as `r{"name":"jobs",...}`:
//!
//! | byte | peer answer                                                    |
//! |------|----------------------------------------------------------------|
//! | `s`  | SQS `GetQueueAttributes`: `Name=value` lines                   |
//! | `c`  | CloudWatch `GetMetricData`: `id secs:value ...` lines          |
//! | `r`  | RabbitMQ management `GET /api/queues/...` JSON                 |
//! | `b`  | RabbitMQ management bindings JSON (dead-letter queues)         |
//! | `p`  | Prometheus `/api/v1/query`: optional `NNN ` status, then body  |
//! | `h`  | Prometheus `/api/v1/query_range` (history), same layout        |
//! | `n`  | NATS JetStream `CONSUMER.INFO` JSON                            |
//! | `x`  | Redis RESP reply to `XINFO GROUPS` / `XRANGE`                  |
//! | `g`  | PostgreSQL `numeric` in binary wire format, then as a sample   |
//! | `k`  | Kubernetes API server: Scale, HPA/ScaledObject lists, Status   |
//! | `u`  | a URL to redact before it is logged                            |
//!
//! Any other first byte picks one of these by its value modulo the count,
//! so no input is wasted. Beyond "never panics", every refusal must carry a
//! bounded metric label and a message.

#![no_main]

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::QueueAttributeName;
use libfuzzer_sys::fuzz_target;
use qscale::clients::cloudwatch::{QueueMetrics, Series, merge_series, plan_calls};
use qscale::clients::http::HttpResponse;
use qscale::clients::secret;
use qscale::contract::SourceError;
use qscale::sources::{nats, postgres, prometheus, rabbitmq, redis as redis_source, sqs};
use qscale::targets::kubernetes;

const KINDS: &[u8] = b"scrbphnxgku";

/// A fixed instant, so a crash reproduces whatever the clock says.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn bounded(e: &SourceError) {
    assert!(
        SourceError::METRIC_LABELS.contains(&e.metric_label()),
        "{}",
        e.metric_label()
    );
    assert!(
        !e.to_string().trim().is_empty(),
        "an error without a message"
    );
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// `NNN rest` -> (NNN, rest); anything else is a 200 with the whole body.
fn http(body: &[u8]) -> HttpResponse {
    let (status, rest) = match body {
        [a, b, c, b' ', rest @ ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            let n = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
            (n, rest)
        }
        _ => (200, body),
    };
    HttpResponse {
        status,
        content_type: Some("application/json".into()),
        body: bytes::Bytes::copy_from_slice(rest),
    }
}

fn sqs_attributes(body: &[u8]) {
    let mut attrs = HashMap::new();
    for line in text(body).lines() {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        attrs.insert(QueueAttributeName::from(k), v.to_string());
    }
    let _ = sqs::parse_depth(Some(&attrs));
    let _ = sqs::parse_settings(Some(&attrs));
    if let Some(p) = attrs.get(&QueueAttributeName::RedrivePolicy) {
        let _ = sqs::parse_redrive_policy(p);
    }
}

/// Series as the SDK hands them over: its timestamps are seconds that may
/// not fit a `SystemTime`, converted the way the client converts them.
fn cloudwatch(body: &[u8]) {
    let queues: Vec<String> = (0..4).map(|i| format!("q{i}")).collect();
    let plan: Vec<_> = plan_calls(&queues).into_iter().flatten().collect();
    let mut series = Vec::new();
    for line in text(body).lines() {
        let mut words = line.split_whitespace();
        let id = words.next().unwrap_or("").to_string();
        let mut timestamps = Vec::new();
        let mut values = Vec::new();
        for w in words {
            let (t, v) = w.split_once(':').unwrap_or((w, ""));
            if let Ok(t) = t.parse::<i64>() {
                let dt = aws_smithy_types::DateTime::from_secs(t);
                timestamps.push(SystemTime::try_from(dt).ok());
            }
            if let Ok(v) = v.parse::<f64>() {
                values.push(v);
            }
        }
        series.push(Series {
            id,
            timestamps,
            values,
        });
    }
    let mut into: HashMap<String, QueueMetrics> = HashMap::new();
    merge_series(&plan, &series, &mut into);
    for m in into.values() {
        for staleness in [Duration::ZERO, Duration::from_secs(900)] {
            let (_, rate, _) = sqs::cloudwatch_signals(m, now(), staleness);
            if let Some(r) = rate {
                assert!(r.is_finite() && r >= 0.0, "rate {r}");
            }
        }
    }
}

fn rabbitmq_queue(body: &[u8]) {
    match rabbitmq::parse_management_queue(body) {
        Ok(q) => {
            let amqp = rabbitmq::AmqpCounts {
                ready: 3,
                consumers: 1,
            };
            let _ = rabbitmq::build_sample(now(), amqp, Some(&q));
        }
        Err(e) => bounded(&e),
    }
}

fn rabbitmq_bindings(body: &[u8]) {
    for key in [None, Some("dlq")] {
        if let Err(e) = rabbitmq::dead_letter_queues(body, key, "jobs") {
            bounded(&e);
        }
    }
}

fn prometheus_query(body: &[u8]) {
    match prometheus::parse_query_response(&http(body), "up") {
        Ok(Some(v)) => {
            // NaN and infinities are valid PromQL values; turning one into
            // a message count is where they are refused.
            // The same value may be a count, an age or a rate.
            if let Err(e) = qscale::sources::count_from_f64(v, "value") {
                bounded(&e);
            }
            if let Err(e) = qscale::sources::age_from_secs(v, "oldest_age_query") {
                bounded(&e);
            }
        }
        Ok(None) => {}
        Err(e) => bounded(&e),
    }
}

fn prometheus_range(body: &[u8]) {
    if let Err(e) = qscale::history::prometheus::parse_range_response(&http(body), "rate(x[1m])") {
        assert!(!e.metric_label().is_empty());
        assert!(
            !e.to_string().trim().is_empty(),
            "an error without a message"
        );
    }
}

fn nats_consumer(body: &[u8]) {
    if let Err(e) = nats::parse_consumer_info(now(), body, "S", "C") {
        bounded(&e);
    }
}

fn redis_reply(body: &[u8]) {
    let Ok(v) = redis::parse_redis_value(body) else {
        return;
    };
    let first = redis_source::first_xrange_id(&v);
    if let Some(id) = &first {
        let _ = redis_source::stream_id_millis(id);
    }
    match redis_source::parse_xinfo_groups(&v) {
        Ok(groups) => {
            let name = groups.first().map(|g| g.name.clone()).unwrap_or_default();
            if let Err(e) =
                redis_source::stream_sample(now(), &groups, &name, "k", first.as_deref())
            {
                bounded(&e);
            }
        }
        Err(e) => bounded(&e),
    }
}

/// The decoded number goes on into the sample, under every column name a
/// query may return, as the source does with a real row.
fn postgres_numeric(body: &[u8]) {
    let Some(v) = postgres::decode_numeric(body) else {
        return;
    };
    for name in [
        "count",
        "visible",
        "in_flight",
        "delayed",
        "oldest_age_seconds",
        "arrival_rate",
        "consumers",
    ] {
        let cell = postgres::Cell {
            name: name.into(),
            type_name: "numeric".into(),
            value: Some(v),
        };
        if let Err(e) = postgres::sample_from_cells(now(), 1, &[cell]) {
            bounded(&e);
        }
    }
}

fn url(body: &[u8]) {
    let _ = secret::redact_url(&text(body));
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let kind = if KINDS.contains(&kind) {
        kind
    } else {
        KINDS[usize::from(kind) % KINDS.len()]
    };
    match kind {
        b's' => sqs_attributes(body),
        b'c' => cloudwatch(body),
        b'r' => rabbitmq_queue(body),
        b'b' => rabbitmq_bindings(body),
        b'p' => prometheus_query(body),
        b'h' => prometheus_range(body),
        b'n' => nats_consumer(body),
        b'x' => redis_reply(body),
        b'g' => postgres_numeric(body),
        b'k' => kubernetes::parse_api_answers_for_fuzzing(body),
        _ => url(body),
    }
});
