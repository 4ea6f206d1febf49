//! CloudWatch batching against moto: how many GetMetricData calls the
//! shared reader makes for many queues (at most 500 queries per call).
//!
//! Its own test binary on purpose: cargo runs test binaries one after
//! another, and a 500-query GetMetricData is the heaviest call the suite
//! makes of moto; next to the other SQS tests, on a loaded machine, it took
//! over a minute.

#[path = "support/moto.rs"]
mod moto;

use std::time::{Duration, SystemTime};

const AGE: &str = "ApproximateAgeOfOldestMessage";

fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}

#[tokio::test]
async fn six_hundred_queries_take_two_calls_and_six_hundred_queues_take_three() {
    // Two queries per queue (age and messages sent), at most 500 per call.
    let url = moto::require().await;
    // moto answers GetMetricData by scanning every metric stored in the
    // region, so this test keeps to a region of its own: in the default one
    // the whole suite's metrics made a 500-query call take over a minute.
    let sdk = moto::sdk_config_in(&url, "ap-southeast-2").await;
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);
    // The call count, not the speed, is under test here.
    let timeout = Duration::from_secs(60);
    for (queues, calls) in [(300usize, 2u64), (600, 3)] {
        let shared = moto::shared();
        let reader = shared.cloudwatch.reader(&sdk, timeout);
        let prefix = moto::unique(&format!("many{queues}"));
        let names: Vec<String> = (0..queues).map(|i| format!("{prefix}-{i}")).collect();
        let registrations: Vec<_> = names.iter().map(|n| reader.register(n)).collect();
        assert_eq!(reader.registered(), queues);
        // The last queue's queries land in the last call.
        let last = &names[queues - 1];
        moto::put_sqs_metric(&cw, last, AGE, ago(30), 77.0).await;

        let m = reader
            .latest(last)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(m.oldest_age.map(|d| d.value), Some(77.0));
        let first = reader
            .latest(&names[0])
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(first.oldest_age, None);
        assert_eq!(reader.calls(), calls, "{queues} queues");
        drop(registrations);
        assert_eq!(reader.registered(), 0, "dropping registrations unregisters");
    }
}
