//! The policy's age estimate against the truth, on a real SQS protocol peer
//! (moto's server).
//!
//! It is its own test binary on purpose: cargo runs test binaries one after
//! another, so no other test loads moto while this one compares ages at
//! one-second resolution (the 600-query CloudWatch test in sqs_source.rs
//! slows moto down enough to skew the timing).

#[path = "support/moto.rs"]
mod moto;

use std::sync::Arc;
use std::time::{Duration, Instant};

use qscale::contract::QueueSource;
use qscale::sources::SourceConfig;
use qscale::sources::sqs::{SqsSource, SqsSourceConfig};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The policy's estimate of the oldest message's age, for an SQS queue read
/// without CloudWatch, against the truth: the send times of the messages
/// still waiting in moto. A producer sends two bursts; one worker receives
/// messages one at a time (oldest first), holds each 0.5 s and deletes it;
/// the scaler samples every second. The estimate learns the service time
/// from the drain. At least half the samples must be within 0.5 s or one
/// message of the truth, and at most one more than 1.5 s (or 25 %) and 3
/// messages (or a quarter of the backlog) off.
#[tokio::test(flavor = "multi_thread")]
async fn the_estimated_age_follows_the_real_send_times_of_moto_messages() {
    use qscale::contract::Replicas;
    use qscale::policy::{Policy, PolicyConfig, PolicyState, decide};
    use std::sync::Mutex;

    let url = moto::require().await;
    let sqs = moto::sqs(&url).await;
    let queue = moto::create_queue(&sqs, &moto::unique("age-estimate")).await;
    let cfg = SqsSourceConfig {
        cloudwatch: false,
        ..moto::config(&url, &queue)
    };
    let src = SqsSource::build(&cfg, &moto::shared(), TIMEOUT)
        .await
        .expect("build source");
    let policy_cfg: PolicyConfig =
        toml::from_str("max_replicas = 10\nmax_message_age = \"60s\"").expect("policy");
    let policy = Policy::new(&policy_cfg, &SourceConfig::Sqs(cfg.clone()).capabilities());
    let mut state = PolicyState::new();

    // Send times by message index; indexes still waiting (not received).
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let taken: Arc<Mutex<usize>> = Arc::default();
    let start = Instant::now();
    let producer = {
        let (sqs, queue, sent) = (sqs.clone(), queue.clone(), sent.clone());
        tokio::spawn(async move {
            for (at, n) in [(1.0, 20), (8.0, 20)] {
                tokio::time::sleep_until((start + Duration::from_secs_f64(at)).into()).await;
                for _ in 0..n {
                    let i = sent.lock().unwrap().len();
                    sent.lock().unwrap().push(Instant::now());
                    sqs.send_message()
                        .queue_url(&queue)
                        .message_body(i.to_string())
                        .send()
                        .await
                        .expect("send");
                }
            }
        })
    };
    let worker = {
        let (sqs, queue, taken) = (sqs.clone(), queue.clone(), taken.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            while start.elapsed() < Duration::from_secs(22) {
                let got = sqs
                    .receive_message()
                    .queue_url(&queue)
                    .max_number_of_messages(1)
                    .visibility_timeout(30)
                    .send()
                    .await
                    .expect("receive");
                let Some(m) = got.messages().first() else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let i: usize = m.body().unwrap_or("0").parse().expect("index body");
                {
                    let mut t = taken.lock().unwrap();
                    *t = (*t).max(i + 1);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                sqs.delete_message()
                    .queue_url(&queue)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
        })
    };

    // Each sample is judged in seconds and by position, and passes on
    // either: the age error, and which message the estimate points at (the
    // first one sent after now - age) against the oldest one really
    // waiting. Within a burst (messages sent milliseconds apart) a tenth of
    // a second is several messages; between bursts one message is several
    // seconds. SQS counts are approximate, and the worker may take a
    // message between the sample and the look.
    let mut judged: Vec<(bool, bool, String)> = Vec::new();
    for tick in 0..20u64 {
        tokio::time::sleep_until((start + Duration::from_secs(tick)).into()).await;
        let now = Instant::now();
        let s = src.sample().await.expect("sample");
        let d = decide(
            &policy,
            &mut state,
            Some(&s),
            Replicas::new(1, Some(1)),
            now,
        );
        let sent = sent.lock().unwrap().clone();
        let next = *taken.lock().unwrap();
        if let (Some(est), Some(v)) = (d.oldest_age, s.visible)
            && v > 0
            && tick >= 3
            && next < sent.len()
        {
            assert!(d.oldest_age_estimated, "{d:?}");
            let born = now.checked_sub(est).unwrap_or(start);
            let pointed = sent.iter().filter(|t| **t < born).count();
            let off = pointed.abs_diff(next);
            let real = now.saturating_duration_since(sent[next]);
            let secs = (est.as_secs_f64() - real.as_secs_f64()).abs();
            let close = secs <= 0.5 || off <= 1;
            let fair =
                secs <= 1.5_f64.max(0.25 * real.as_secs_f64()) || off <= 3.max(v as usize / 4);
            judged.push((
                close,
                fair,
                format!(
                    "t={tick}s: estimated {est:?}, real {real:?}, {v} visible, {off} messages off"
                ),
            ));
        }
    }
    producer.await.expect("producer");
    worker.abort();
    assert!(
        judged.len() >= 8,
        "only {} samples had messages waiting",
        judged.len()
    );
    let report: Vec<&str> = judged.iter().map(|(_, _, w)| w.as_str()).collect();
    // One sample may miss: a burst that lands between the sample and the
    // look, on a loaded machine, moves the truth by many messages at once.
    let far: Vec<&str> = judged
        .iter()
        .filter(|(_, fair, _)| !fair)
        .map(|(_, _, w)| w.as_str())
        .collect();
    assert!(
        far.len() <= 1,
        "far off (over 1.5 s or 25 %, and over 3 messages or a quarter of the backlog): \
         {far:#?}\nall: {report:#?}"
    );
    let close = judged.iter().filter(|(close, _, _)| *close).count();
    assert!(
        close * 2 >= judged.len(),
        "fewer than half the samples within 0.5 s or one message: {report:#?}"
    );
}
