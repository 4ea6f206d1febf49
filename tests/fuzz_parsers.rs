//! Property-driven fuzzing of every parser of peer responses: SQS attributes,
//! CloudWatch results, RabbitMQ management JSON, Prometheus JSON, NATS
//! consumer info, Redis XINFO replies and stream IDs, PostgreSQL numerics,
//! URL redaction. Random and mutated inputs never panic; every rejection
//! is a typed error with a bounded label. Each property runs a bounded
//! number of cases (the proptest-regressions files keep failing seeds).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::QueueAttributeName;
use proptest::prelude::*;
use qscale::clients::cloudwatch::{QueueMetrics, Series, merge_series, plan_calls};
use qscale::clients::http::HttpResponse;
use qscale::clients::secret;
use qscale::contract::SourceError;
use qscale::sources::{nats, postgres, prometheus, rabbitmq, redis as redis_source, sqs};

const LABELS: &[&str] = &[
    "throttled",
    "access_denied",
    "not_found",
    "timeout",
    "unavailable",
    "invalid_response",
    "config",
];

fn bounded(e: &SourceError) {
    assert!(LABELS.contains(&e.metric_label()));
    assert!(!e.to_string().is_empty());
}

/// JSON-ish text: real answers cut and spliced with noise.
fn jsonish(seeds: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds.len(),
        0usize..600,
        "[\\[\\]{}\",:0-9a-zA-Z_.eE+\\- ]{0,24}",
        0usize..30,
    )
        .prop_map(move |(i, at, noise, del)| {
            let mut s: Vec<char> = seeds[i].chars().collect();
            let at = at % (s.len() + 1);
            let end = (at + del).min(s.len());
            s.splice(at..end, noise.chars());
            s.into_iter().collect::<String>().into_bytes()
        })
}

const RABBIT: &[&str] = &[
    r#"{"name":"jobs","messages_ready":12,"messages_unacknowledged":3,"consumers":2,"head_message_timestamp":1700000000,"message_stats":{"publish_details":{"rate":4.5}}}"#,
    r#"{"name":"jobs","messages_ready":0,"messages_unacknowledged":0}"#,
    r#"{"error":"Object Not Found","reason":"Not Found"}"#,
];
const PROM: &[&str] = &[
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"42"]}]}}"#,
    r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"NaN"]}}"#,
    r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
    r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
];
const NATS: &[&str] = &[
    r#"{"type":"io.nats.jetstream.api.v1.consumer_info_response","stream_name":"S","name":"C","num_pending":7,"num_ack_pending":2,"num_waiting":1}"#,
    r#"{"type":"io.nats.jetstream.api.v1.consumer_info_response","error":{"code":404,"err_code":10014,"description":"consumer not found"}}"#,
];

fn redis_value() -> impl Strategy<Value = ::redis::Value> {
    let leaf = prop_oneof![
        Just(::redis::Value::Nil),
        any::<i64>().prop_map(::redis::Value::Int),
        "[a-z0-9\\-]{0,12}".prop_map(|s| ::redis::Value::BulkString(s.into_bytes())),
        "[a-z\\-]{0,10}".prop_map(::redis::Value::SimpleString),
    ];
    leaf.prop_recursive(3, 32, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(::redis::Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..6).prop_map(::redis::Value::Map),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn sqs_attributes_never_panic(
        vals in proptest::collection::vec(proptest::option::of("[0-9\\-a-z. ]{0,24}"), 3),
    ) {
        let names = [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ];
        let mut map = HashMap::new();
        for (n, v) in names.iter().zip(vals) {
            if let Some(v) = v {
                map.insert(n.clone(), v);
            }
        }
        let _ = sqs::parse_depth(Some(&map));
        let _ = sqs::parse_depth(None);
    }

    #[test]
    fn cloudwatch_results_never_panic(
        n_queues in 1usize..30,
        series in proptest::collection::vec(
            ("[a-z0-9_]{0,8}", proptest::collection::vec((proptest::option::of(0u64..4_000_000_000), any::<f64>()), 0..6)),
            0..12,
        ),
        staleness_s in 0u64..4000,
    ) {
        let queues: Vec<String> = (0..n_queues).map(|i| format!("q{i}")).collect();
        let plan = plan_calls(&queues);
        let flat: Vec<_> = plan.into_iter().flatten().collect();
        // Answers with ids from the plan and random ones, random lengths.
        let series: Vec<Series> = series
            .into_iter()
            .enumerate()
            .map(|(i, (id, points))| Series {
                id: if i % 2 == 0 { flat.get(i % flat.len().max(1)).map(|q| q.id.clone()).unwrap_or(id) } else { id },
                timestamps: points.iter().map(|(t, _)| t.map(|s| UNIX_EPOCH + Duration::from_secs(s))).collect(),
                values: points.iter().map(|(_, v)| *v).collect(),
            })
            .collect();
        let mut into: HashMap<String, QueueMetrics> = HashMap::new();
        merge_series(&flat, &series, &mut into);
        for m in into.values() {
            let (age, rate, _notes) = sqs::cloudwatch_signals(m, SystemTime::now(), Duration::from_secs(staleness_s));
            if let Some(r) = rate { prop_assert!(r.is_finite() && r >= 0.0); }
            let _ = age;
        }
    }

    #[test]
    fn rabbitmq_management_json_never_panics(body in jsonish(RABBIT)) {
        match rabbitmq::parse_management_queue(&body) {
            Ok(_) => {}
            Err(e) => bounded(&e),
        }
    }

    #[test]
    fn prometheus_json_never_panics(body in jsonish(PROM), status in prop_oneof![Just(200u16), Just(400), Just(422), Just(503)]) {
        let resp = HttpResponse { status, content_type: Some("application/json".into()), body: body.into() };
        match prometheus::parse_query_response(&resp, "up") {
            // NaN and infinities are valid PromQL values; turning one into
            // a message count is where they are refused.
            Ok(Some(v)) => {
                if let Err(e) = qscale::sources::count_from_f64(v, "value") {
                    bounded(&e);
                }
            }
            Ok(None) => {}
            Err(e) => bounded(&e),
        }
    }

    #[test]
    fn nats_consumer_info_never_panics(body in jsonish(NATS)) {
        match nats::parse_consumer_info(SystemTime::now(), &body, "S", "C") {
            Ok(_) => {}
            Err(e) => bounded(&e),
        }
    }

    #[test]
    fn redis_replies_never_panic(v in redis_value(), id in "[0-9\\-a-z*]{0,24}") {
        match redis_source::parse_xinfo_groups(&v) {
            Ok(_) => {}
            Err(e) => bounded(&e),
        }
        let _ = redis_source::stream_id_millis(&id);
        let _ = redis_source::first_xrange_id(&v);
    }

    #[test]
    fn postgres_numerics_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Some(v) = postgres::decode_numeric(&raw) {
            prop_assert!(!v.is_nan() || raw.len() >= 8);
        }
    }

    #[test]
    fn url_redaction_never_panics_and_hides_passwords(
        user in "[a-z]{0,8}", pw in "[A-Za-z0-9]{6,12}", host in "[a-z0-9.\\-]{1,12}", rest in "[/a-z0-9%?=&:@]{0,16}",
    ) {
        let url = format!("amqp://{user}:{pw}@{host}{rest}");
        let red = secret::redact_url(&url);
        prop_assert!(!red.contains(&format!(":{pw}@")), "{red}");
        let _ = secret::redact_url(&rest);
    }
}
