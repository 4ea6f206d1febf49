//! Batched CloudWatch reads of SQS metrics, shared by every SQS source.
//!
//! SQS itself cannot say how old its oldest message is or how fast messages
//! arrive; CloudWatch's `AWS/SQS` namespace can (`ApproximateAgeOfOldestMessage`,
//! `NumberOfMessagesSent`), at 1-minute resolution and with some lag.
//! GetMetricData is billed per metric and throttled per account, and KEDA
//! makes one call per scaler; qscale instead keeps one [`CloudWatchReader`]
//! per (region, endpoint) in [`CloudWatchReaders`] (held by
//! [`crate::clients::Clients`]). Sources [`register`](CloudWatchReader::register)
//! their queue names when they are built; a sample asks its
//! [`Registration`] for the newest datapoints of its queue, and the reader
//! answers from a snapshot that it refreshes at most once per `refresh`
//! interval. One refresh fetches *all* registered queues in
//! `ceil(2·queues / 500)` calls (two queries per queue, 500 queries per call
//! is CloudWatch's limit), following `NextToken`. Callers that arrive while a
//! refresh is in flight wait for that same refresh (single flight); the
//! refresh runs in its own task, so a caller that gives up at its own
//! deadline does not cancel it for the others.
//!
//! `qscale history` reads the same metrics over days instead of minutes
//! ([`metric_range`]): one queue, a window of a day per call, every page.
//!
//! The planning of queries and the reading of results are pure functions
//! ([`plan_calls`], [`merge_series`]) tested with tables; only
//! [`CloudWatchReader`] touches the network.
//!
//! The crate `aws-sdk-cloudwatch` is pinned to `=1.99.0` in Cargo.toml: it is
//! the last release that speaks the AWS query protocol. Releases 1.100 and
//! later speak Smithy RPC v2 CBOR, which moto 5.2.5 (our test peer) answers
//! with an HTML 404; real CloudWatch accepts both. Lift the pin together with
//! a moto that serves CBOR.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_smithy_types::DateTime;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clients::aws_error::{classify, source_error};
use crate::contract::SourceError;

/// CloudWatch's limit of queries in one GetMetricData call.
pub const MAX_QUERIES_PER_CALL: usize = 500;
/// SQS publishes its metrics at 1-minute resolution.
pub const PERIOD: Duration = Duration::from_secs(60);
/// How far back a refresh looks: long enough to find the newest datapoint of
/// a lagging metric, short enough to keep responses small.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Default shortest time between two refreshes of one reader. CloudWatch SQS
/// data changes once a minute, so refreshing more often buys nothing.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10);
/// A peer that keeps sending `NextToken` must not keep us looping.
const MAX_PAGES: usize = 50;

const NAMESPACE: &str = "AWS/SQS";

/// The SQS metrics qscale reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqsMetric {
    /// `ApproximateAgeOfOldestMessage`, statistic Maximum, in seconds.
    AgeOfOldestMessage,
    /// `NumberOfMessagesSent`, statistic Sum per period.
    MessagesSent,
}

impl SqsMetric {
    pub const ALL: [SqsMetric; 2] = [SqsMetric::AgeOfOldestMessage, SqsMetric::MessagesSent];

    /// The CloudWatch metric name.
    pub fn name(self) -> &'static str {
        match self {
            SqsMetric::AgeOfOldestMessage => "ApproximateAgeOfOldestMessage",
            SqsMetric::MessagesSent => "NumberOfMessagesSent",
        }
    }

    fn stat(self) -> &'static str {
        match self {
            SqsMetric::AgeOfOldestMessage => "Maximum",
            SqsMetric::MessagesSent => "Sum",
        }
    }

    /// Query ids must start with a lowercase letter; the letter also tells
    /// the metric when reading an id back.
    fn id_letter(self) -> char {
        match self {
            SqsMetric::AgeOfOldestMessage => 'a',
            SqsMetric::MessagesSent => 's',
        }
    }
}

/// One value of a metric, with the start of the period it describes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Datapoint {
    pub at: SystemTime,
    pub value: f64,
}

/// The newest datapoint of each metric of one queue; `None` when CloudWatch
/// had none in the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueMetrics {
    /// Seconds (statistic Maximum).
    pub oldest_age: Option<Datapoint>,
    /// Messages sent per [`PERIOD`] (statistic Sum).
    pub sent: Option<Datapoint>,
}

impl QueueMetrics {
    pub fn get(&self, metric: SqsMetric) -> Option<Datapoint> {
        match metric {
            SqsMetric::AgeOfOldestMessage => self.oldest_age,
            SqsMetric::MessagesSent => self.sent,
        }
    }

    fn slot(&mut self, metric: SqsMetric) -> &mut Option<Datapoint> {
        match metric {
            SqsMetric::AgeOfOldestMessage => &mut self.oldest_age,
            SqsMetric::MessagesSent => &mut self.sent,
        }
    }
}

/// One planned query, before it becomes an SDK type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedQuery {
    pub id: String,
    pub queue: String,
    pub metric: SqsMetric,
}

/// Split the queries for `queues` into calls of at most
/// [`MAX_QUERIES_PER_CALL`] queries. Ids are unique within a call.
pub fn plan_calls(queues: &[String]) -> Vec<Vec<PlannedQuery>> {
    let all: Vec<PlannedQuery> = queues
        .iter()
        .enumerate()
        .flat_map(|(i, q)| {
            SqsMetric::ALL.into_iter().map(move |m| PlannedQuery {
                id: format!("{}{i}", m.id_letter()),
                queue: q.clone(),
                metric: m,
            })
        })
        .collect();
    all.chunks(MAX_QUERIES_PER_CALL)
        .map(<[PlannedQuery]>::to_vec)
        .collect()
}

/// One result series of a GetMetricData answer, in plain types.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub id: String,
    /// `None` where the peer sent a timestamp that is not a valid time.
    pub timestamps: Vec<Option<SystemTime>>,
    pub values: Vec<f64>,
}

/// Fold `series` (answers to the queries `plan`, possibly over several
/// pages) into `into`, keeping for each queue and metric the datapoint with
/// the newest timestamp. CloudWatch's order is not relied on, and anything a
/// peer could get wrong (unknown ids, length mismatches, invalid times,
/// non-finite values) drops that datapoint or series instead of failing the
/// whole answer.
pub fn merge_series(
    plan: &[PlannedQuery],
    series: &[Series],
    into: &mut HashMap<String, QueueMetrics>,
) {
    let by_id: HashMap<&str, &PlannedQuery> = plan.iter().map(|q| (q.id.as_str(), q)).collect();
    for s in series {
        let Some(q) = by_id.get(s.id.as_str()) else {
            continue;
        };
        if s.timestamps.len() != s.values.len() {
            continue;
        }
        let newest = s
            .timestamps
            .iter()
            .zip(&s.values)
            .filter_map(|(t, v)| {
                Some(Datapoint {
                    at: (*t)?,
                    value: *v,
                })
            })
            .filter(|d| d.value.is_finite())
            .max_by_key(|d| d.at);
        let entry = into.entry(q.queue.clone()).or_default();
        let slot = entry.slot(q.metric);
        if let Some(d) = newest
            && slot.is_none_or(|old| d.at > old.at)
        {
            *slot = Some(d);
        }
    }
}

/// The query window ending after `now`: whole minutes, so that periods line
/// up with CloudWatch's own minute boundaries and the current, still-filling
/// minute is included.
pub fn window(now: SystemTime) -> (SystemTime, SystemTime) {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let period = PERIOD.as_secs();
    let end = UNIX_EPOCH + Duration::from_secs((secs / period + 1) * period);
    (end - WINDOW, end)
}

/// What one refresh produced, shared by every caller that waited for it.
type Outcome = Result<Arc<HashMap<String, QueueMetrics>>, SourceError>;

/// One refresh: the queues it covers and, once done, its outcome.
struct Generation {
    started: Instant,
    queues: HashSet<String>,
    result: watch::Receiver<Option<Outcome>>,
}

struct ReaderInner {
    client: aws_sdk_cloudwatch::Client,
    timeout: Duration,
    refresh: Duration,
    calls: AtomicU64,
    /// Registered queue names with their number of registrations.
    registered: Mutex<BTreeMap<String, usize>>,
    current: Mutex<Option<Arc<Generation>>>,
}

/// Lock a std mutex whose data stays consistent even if a holder panicked
/// (every critical section here is a single map or option update).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads SQS metrics of all registered queues of one region and endpoint.
/// Cheap to clone.
#[derive(Clone)]
pub struct CloudWatchReader {
    inner: Arc<ReaderInner>,
}

impl CloudWatchReader {
    /// A reader whose calls use `sdk` (region, endpoint, credentials) and
    /// give up after `timeout`; it refreshes at most once per `refresh`.
    pub fn new(sdk: &SdkConfig, timeout: Duration, refresh: Duration) -> CloudWatchReader {
        CloudWatchReader {
            inner: Arc::new(ReaderInner {
                client: aws_sdk_cloudwatch::Client::new(sdk),
                timeout,
                refresh,
                calls: AtomicU64::new(0),
                registered: Mutex::new(BTreeMap::new()),
                current: Mutex::new(None),
            }),
        }
    }

    /// Include `queue` in every refresh until the returned registration is
    /// dropped (so a reloaded config does not keep querying old queues).
    pub fn register(&self, queue: &str) -> Registration {
        *lock(&self.inner.registered)
            .entry(queue.to_string())
            .or_insert(0) += 1;
        Registration {
            reader: self.clone(),
            queue: queue.to_string(),
        }
    }

    /// Number of distinct registered queues.
    pub fn registered(&self) -> usize {
        lock(&self.inner.registered).len()
    }

    /// GetMetricData calls made so far (each page counts).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// The newest datapoints of `queue`, from a snapshot at most `refresh`
    /// old. A queue CloudWatch knows nothing about gets empty metrics, not
    /// an error.
    pub async fn latest(&self, queue: &str) -> Result<QueueMetrics, SourceError> {
        let generation = self.generation_for(queue);
        let mut rx = generation.result.clone();
        let outcome = rx.wait_for(Option::is_some).await.map_err(|_| {
            SourceError::Unavailable("the CloudWatch refresh ended without a result".into())
        })?;
        match &*outcome {
            Some(Ok(map)) => Ok(map.get(queue).cloned().unwrap_or_default()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(SourceError::Unavailable(
                "the CloudWatch refresh ended without a result".into(),
            )),
        }
    }

    /// The current refresh if it is recent enough and covers `queue`, else a
    /// new one (started in its own task) covering every registered queue.
    fn generation_for(&self, queue: &str) -> Arc<Generation> {
        let mut current = lock(&self.inner.current);
        if let Some(g) = current.as_ref()
            && g.started.elapsed() < self.inner.refresh
            && g.queues.contains(queue)
        {
            return g.clone();
        }
        let mut queues: HashSet<String> = lock(&self.inner.registered).keys().cloned().collect();
        queues.insert(queue.to_string());
        let mut names: Vec<String> = queues.iter().cloned().collect();
        names.sort();
        let (tx, rx) = watch::channel(None);
        let g = Arc::new(Generation {
            started: Instant::now(),
            queues,
            result: rx,
        });
        *current = Some(g.clone());
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout(inner.timeout, fetch(&inner, names)).await {
                Ok(o) => o,
                Err(_) => Err(SourceError::Timeout(inner.timeout)),
            };
            // Nobody waiting any more is fine: the result is still cached
            // in the generation for later callers.
            tx.send_replace(Some(outcome));
        });
        g
    }
}

/// Keeps a queue in its reader's refreshes; dropping it unregisters.
pub struct Registration {
    reader: CloudWatchReader,
    queue: String,
}

impl Registration {
    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub fn reader(&self) -> &CloudWatchReader {
        &self.reader
    }

    /// The newest datapoints of this queue.
    pub async fn latest(&self) -> Result<QueueMetrics, SourceError> {
        self.reader.latest(&self.queue).await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = lock(&self.reader.inner.registered);
        if let Some(n) = reg.get_mut(&self.queue) {
            *n -= 1;
            if *n == 0 {
                reg.remove(&self.queue);
            }
        }
    }
}

/// Fetch all `queues` in as few calls as CloudWatch allows, the calls
/// running concurrently.
async fn fetch(inner: &Arc<ReaderInner>, queues: Vec<String>) -> Outcome {
    let (start, end) = window(SystemTime::now());
    let mut calls = JoinSet::new();
    for plan in plan_calls(&queues) {
        let inner = inner.clone();
        calls.spawn(async move {
            let series = fetch_call(&inner, &plan, start, end).await?;
            Ok::<_, SourceError>((plan, series))
        });
    }
    let mut out = HashMap::new();
    while let Some(joined) = calls.join_next().await {
        let (plan, series) = joined.map_err(|e| {
            SourceError::Unavailable(format!("a CloudWatch call task failed: {e}"))
        })??;
        merge_series(&plan, &series, &mut out);
    }
    Ok(Arc::new(out))
}

/// One GetMetricData call for `plan`, following `NextToken`.
async fn fetch_call(
    inner: &ReaderInner,
    plan: &[PlannedQuery],
    start: SystemTime,
    end: SystemTime,
) -> Result<Vec<Series>, SourceError> {
    let queries: Vec<MetricDataQuery> = plan.iter().map(sdk_query).collect();
    get_metric_data(
        &inner.client,
        &queries,
        (start, end),
        ScanBy::TimestampDescending,
        inner.timeout,
        &inner.calls,
    )
    .await
}

/// GetMetricData for `queries` over `range`, every page of it (following
/// `NextToken`, at most [`MAX_PAGES`]); each page adds one to `calls`.
async fn get_metric_data(
    client: &aws_sdk_cloudwatch::Client,
    queries: &[MetricDataQuery],
    (start, end): (SystemTime, SystemTime),
    scan_by: ScanBy,
    timeout: Duration,
    calls: &AtomicU64,
) -> Result<Vec<Series>, SourceError> {
    let mut series = Vec::new();
    let mut token: Option<String> = None;
    for _page in 0..MAX_PAGES {
        calls.fetch_add(1, Ordering::Relaxed);
        let answer = client
            .get_metric_data()
            .set_metric_data_queries(Some(queries.to_vec()))
            .start_time(DateTime::from(start))
            .end_time(DateTime::from(end))
            .scan_by(scan_by.clone())
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| source_error("CloudWatch GetMetricData", classify(&e), timeout))?;
        series.extend(answer.metric_data_results().iter().map(|r| {
            Series {
                id: r.id().unwrap_or_default().to_string(),
                timestamps: r
                    .timestamps()
                    .iter()
                    .map(|t| SystemTime::try_from(*t).ok())
                    .collect(),
                values: r.values().to_vec(),
            }
        }));
        match answer.next_token() {
            Some(t) if !t.is_empty() && token.as_deref() != Some(t) => token = Some(t.to_string()),
            Some(t) if !t.is_empty() => {
                return Err(SourceError::InvalidResponse(
                    "CloudWatch GetMetricData repeated the same NextToken".into(),
                ));
            }
            _ => return Ok(series),
        }
    }
    Err(SourceError::InvalidResponse(format!(
        "CloudWatch GetMetricData still had more pages after {MAX_PAGES}"
    )))
}

fn sdk_query(q: &PlannedQuery) -> MetricDataQuery {
    queue_query(&q.id, &q.queue, q.metric.name(), q.metric.stat())
}

/// A per-minute query of one `AWS/SQS` metric of one queue.
fn queue_query(id: &str, queue: &str, metric_name: &str, stat: &str) -> MetricDataQuery {
    let metric = Metric::builder()
        .namespace(NAMESPACE)
        .metric_name(metric_name)
        .dimensions(Dimension::builder().name("QueueName").value(queue).build())
        .build();
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(metric)
                .period(PERIOD.as_secs() as i32)
                .stat(stat)
                .build(),
        )
        .return_data(true)
        .build()
}

/// One `AWS/SQS` metric of a queue, asked over a range of time: what the
/// history import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeMetric {
    /// The CloudWatch metric name, e.g. `NumberOfMessagesSent`.
    pub name: &'static str,
    /// The statistic per minute, e.g. `Sum`.
    pub stat: &'static str,
}

/// The longest window one history call asks for. CloudWatch answers at
/// most 100,800 datapoints per call (and pages past that), and moto
/// compares every period with every stored datapoint of the window, so a
/// day per call keeps both cheap: 1,440 datapoints per metric.
pub const RANGE_CALL_WINDOW: Duration = Duration::from_secs(86_400);

/// Every per-minute datapoint of `metrics` for `queue` from `start`
/// (inclusive) to `end` (exclusive), both whole minutes: one list per
/// metric, in the order asked, oldest first, one datapoint per minute at
/// most. The range is read in windows of [`RANGE_CALL_WINDOW`], each
/// following `NextToken`; every call is bounded by `timeout`. Datapoints a
/// peer got wrong (invalid times, non-finite values, outside the range) are
/// dropped, never fatal. Returns the datapoints and the number of calls made.
pub async fn metric_range(
    sdk: &SdkConfig,
    queue: &str,
    metrics: &[RangeMetric],
    (start, end): (SystemTime, SystemTime),
    timeout: Duration,
) -> Result<(Vec<Vec<Datapoint>>, u64), SourceError> {
    let client = aws_sdk_cloudwatch::Client::new(sdk);
    let queries: Vec<MetricDataQuery> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| queue_query(&format!("m{i}"), queue, m.name, m.stat))
        .collect();
    let calls = AtomicU64::new(0);
    let mut found: Vec<BTreeMap<SystemTime, f64>> = vec![BTreeMap::new(); metrics.len()];
    let mut from = start;
    while from < end {
        let to = (from + RANGE_CALL_WINDOW).min(end);
        let series = get_metric_data(
            &client,
            &queries,
            (from, to),
            ScanBy::TimestampAscending,
            timeout,
            &calls,
        )
        .await?;
        merge_range(&series, (start, end), &mut found);
        from = to;
    }
    let points = found
        .into_iter()
        .map(|m| {
            m.into_iter()
                .map(|(at, value)| Datapoint { at, value })
                .collect()
        })
        .collect();
    Ok((points, calls.load(Ordering::Relaxed)))
}

/// Fold the series of a range call (ids `m<i>`) into `found[i]`, keyed by
/// time, keeping only valid datapoints inside `range`.
pub fn merge_range(
    series: &[Series],
    (start, end): (SystemTime, SystemTime),
    found: &mut [BTreeMap<SystemTime, f64>],
) {
    for s in series {
        let Some(slot) =
            s.id.strip_prefix('m')
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| found.get_mut(i))
        else {
            continue;
        };
        if s.timestamps.len() != s.values.len() {
            continue;
        }
        for (t, v) in s.timestamps.iter().zip(&s.values) {
            if let Some(t) = *t
                && v.is_finite()
                && t >= start
                && t < end
            {
                slot.insert(t, *v);
            }
        }
    }
}

/// A reader's identity: region and custom endpoint.
type ReaderKey = (String, Option<String>);

/// Readers by (region, endpoint), shared by all scalers of a process.
#[derive(Clone)]
pub struct CloudWatchReaders {
    readers: Arc<Mutex<HashMap<ReaderKey, CloudWatchReader>>>,
    refresh: Duration,
}

impl Default for CloudWatchReaders {
    fn default() -> Self {
        CloudWatchReaders::with_refresh(DEFAULT_REFRESH)
    }
}

impl CloudWatchReaders {
    /// Readers that refresh at most once per `refresh`; pass the shortest
    /// poll interval of the scalers (CloudWatch data is per minute anyway).
    pub fn with_refresh(refresh: Duration) -> CloudWatchReaders {
        CloudWatchReaders {
            readers: Arc::default(),
            refresh,
        }
    }

    /// The reader for `sdk`'s region and endpoint, created on first use.
    /// The first caller's `timeout` bounds that reader's refreshes; each
    /// caller still bounds its own wait.
    pub fn reader(&self, sdk: &SdkConfig, timeout: Duration) -> CloudWatchReader {
        let key = (
            sdk.region().map(|r| r.to_string()).unwrap_or_default(),
            sdk.endpoint_url().map(str::to_string),
        );
        lock(&self.readers)
            .entry(key)
            .or_insert_with(|| CloudWatchReader::new(sdk, timeout, self.refresh))
            .clone()
    }

    /// GetMetricData calls made by all readers.
    pub fn calls(&self) -> u64 {
        lock(&self.readers)
            .values()
            .map(CloudWatchReader::calls)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("q{i}")).collect()
    }

    #[test]
    fn queries_are_split_into_calls_of_at_most_500() {
        // Two queries per queue (age and messages sent).
        for (queues, calls) in [
            (0, 0),
            (1, 1),
            (250, 1),
            (251, 2),
            (300, 2),
            (500, 2),
            (600, 3),
        ] {
            let plan = plan_calls(&names(queues));
            assert_eq!(plan.len(), calls, "{queues} queues");
            assert!(plan.iter().all(|c| c.len() <= MAX_QUERIES_PER_CALL));
            assert_eq!(plan.iter().map(Vec::len).sum::<usize>(), 2 * queues);
        }
    }

    #[test]
    fn query_ids_are_unique_and_start_with_a_lowercase_letter() {
        let plan = plan_calls(&names(600));
        let mut seen = HashSet::new();
        for q in plan.iter().flatten() {
            assert!(
                q.id.starts_with(|c: char| c.is_ascii_lowercase()),
                "{}",
                q.id
            );
            assert!(q.id.chars().all(|c| c.is_ascii_alphanumeric()), "{}", q.id);
            assert!(seen.insert(q.id.clone()), "duplicate id {}", q.id);
        }
    }

    fn t(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn series(id: &str, points: &[(Option<SystemTime>, f64)]) -> Series {
        Series {
            id: id.into(),
            timestamps: points.iter().map(|p| p.0).collect(),
            values: points.iter().map(|p| p.1).collect(),
        }
    }

    fn dp(secs: u64, value: f64) -> Option<Datapoint> {
        Some(Datapoint {
            at: UNIX_EPOCH + Duration::from_secs(secs),
            value,
        })
    }

    #[test]
    fn the_newest_datapoint_wins_whatever_the_order_or_page() {
        let plan = plan_calls(&["jobs".to_string(), "mail".to_string()]).remove(0);
        type Case = (&'static str, Vec<Series>, QueueMetrics);
        let cases: Vec<Case> = vec![
            (
                "descending order",
                vec![series("a0", &[(t(180), 7.0), (t(120), 5.0)])],
                QueueMetrics {
                    oldest_age: dp(180, 7.0),
                    sent: None,
                },
            ),
            (
                "ascending order",
                vec![series("a0", &[(t(120), 5.0), (t(180), 7.0)])],
                QueueMetrics {
                    oldest_age: dp(180, 7.0),
                    sent: None,
                },
            ),
            (
                "newer datapoint on a later page",
                vec![
                    series("s0", &[(t(60), 1.0)]),
                    series("s0", &[(t(240), 9.0)]),
                ],
                QueueMetrics {
                    oldest_age: None,
                    sent: dp(240, 9.0),
                },
            ),
            (
                "older datapoint on a later page",
                vec![
                    series("s0", &[(t(240), 9.0)]),
                    series("s0", &[(t(60), 1.0)]),
                ],
                QueueMetrics {
                    oldest_age: None,
                    sent: dp(240, 9.0),
                },
            ),
            (
                "a zero is a value, not missing",
                vec![series("s0", &[(t(60), 0.0)])],
                QueueMetrics {
                    oldest_age: None,
                    sent: dp(60, 0.0),
                },
            ),
            (
                "no datapoints",
                vec![series("a0", &[])],
                QueueMetrics::default(),
            ),
            (
                "unknown ids are ignored",
                vec![series("zz9", &[(t(60), 1.0)])],
                QueueMetrics::default(),
            ),
            (
                "mismatched lengths drop the series",
                vec![Series {
                    id: "a0".into(),
                    timestamps: vec![t(60)],
                    values: vec![1.0, 2.0],
                }],
                QueueMetrics::default(),
            ),
            (
                "invalid timestamps and values are skipped",
                vec![series(
                    "a0",
                    &[(None, 50.0), (t(300), f64::NAN), (t(60), 3.0)],
                )],
                QueueMetrics {
                    oldest_age: dp(60, 3.0),
                    sent: None,
                },
            ),
        ];
        for (name, input, want) in cases {
            let mut out = HashMap::new();
            merge_series(&plan, &input, &mut out);
            let got = out.get("jobs").cloned().unwrap_or_default();
            assert_eq!(got, want, "{name}");
            assert!(
                out.get("mail")
                    .is_none_or(|m| *m == QueueMetrics::default()),
                "{name}"
            );
        }
    }

    #[test]
    fn results_land_on_the_queue_their_id_was_planned_for() {
        let plan = plan_calls(&names(3)).remove(0);
        let mut out = HashMap::new();
        merge_series(
            &plan,
            &[
                series("a2", &[(t(60), 12.0)]),
                series("s1", &[(t(60), 30.0)]),
            ],
            &mut out,
        );
        assert_eq!(out["q2"].oldest_age, dp(60, 12.0));
        assert_eq!(out["q1"].sent, dp(60, 30.0));
        assert!(!out.contains_key("q0"));
    }

    #[test]
    fn range_results_are_kept_per_metric_inside_the_range_and_bad_points_dropped() {
        let mut found = vec![BTreeMap::new(), BTreeMap::new()];
        merge_range(
            &[
                series("m0", &[(t(60), 1.0), (t(120), 2.0), (t(600), 9.0)]),
                series("m1", &[(None, 4.0), (t(60), f64::NAN), (t(180), 5.0)]),
                series("m0", &[(t(120), 2.0), (t(0), 7.0)]),
                series("m7", &[(t(60), 1.0)]),
                series("zz", &[(t(60), 1.0)]),
            ],
            (
                UNIX_EPOCH + Duration::from_secs(60),
                UNIX_EPOCH + Duration::from_secs(600),
            ),
            &mut found,
        );
        let secs = |m: &BTreeMap<SystemTime, f64>| -> Vec<(u64, f64)> {
            m.iter()
                .map(|(t, v)| (t.duration_since(UNIX_EPOCH).unwrap().as_secs(), *v))
                .collect()
        };
        // 600 is the exclusive end, 0 before the start; the repeated 120
        // (the same minute on two pages) is kept once.
        assert_eq!(secs(&found[0]), vec![(60, 1.0), (120, 2.0)]);
        assert_eq!(secs(&found[1]), vec![(180, 5.0)]);
    }

    #[test]
    fn the_window_is_whole_minutes_and_covers_the_current_minute() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_030);
        let (start, end) = window(now);
        assert_eq!(end, UNIX_EPOCH + Duration::from_secs(1_000_000_080));
        assert_eq!(end.duration_since(start).ok(), Some(WINDOW));
        assert!(end > now);
    }
}
