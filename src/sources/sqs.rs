//! Amazon SQS source: its config table, validation and client.
//!
//! Depth (visible, in-flight, delayed) comes from one `GetQueueAttributes`
//! call per poll. Age of the oldest message and arrival rate come from
//! CloudWatch (`AWS/SQS`), because reading them by receiving messages would
//! change receive counts and can push messages to a dead-letter queue.
//! CloudWatch reads go through the process-wide batched reader
//! ([`crate::clients::cloudwatch`]), so many SQS scalers in one region cost
//! one GetMetricData call per poll. CloudWatch data lags and comes per
//! minute: the newest datapoint is used, and one older than `max_staleness`
//! counts as missing (never as zero), with a note saying so.
//!
//! The same `GetQueueAttributes` call reads the queue's settings: its
//! `VisibilityTimeout` and `RedrivePolicy` (the dead-letter queue's ARN and
//! `maxReceiveCount`), which the daemon checks against the processing time.
//! When no `dead_letter_queue_url` is configured, the dead-letter queue is
//! discovered from the redrive policy: the ARN names the queue and its
//! account, `GetQueueUrl` resolves it once (again only when the policy
//! names another queue), and its depth is read after the main call.
//!
//! Only the depth call can fail a sample. The dead-letter depth and the
//! CloudWatch signals are extras: when they fail, the sample still carries
//! the depth, the extra stays unknown, and a note says why.
//!
//! Credentials and region come from the standard AWS chain through
//! [`crate::clients::aws::AwsConfigs`]. moto, the integration-test peer, does not
//! check credentials, so a wrong key is only caught by real AWS (as
//! `access_denied`); missing credentials are caught locally.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tokio::time::{Instant, timeout_at};

use crate::clients::Clients;
use crate::clients::aws::{AwsEndpoint, validate_endpoint};
use crate::clients::aws_error::{classify, source_error};
use crate::clients::cloudwatch::{
    Datapoint, PERIOD, QueueMetrics, Registration, SqsMetric, WINDOW,
};
use crate::contract::{Capabilities, QueueSource, Sample, SourceError};
use crate::sources::SourceSpec;
use crate::validate::{Problems, default_true, http_url, positive_duration};

/// `source.kind = "sqs"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqsSourceConfig {
    /// Full queue URL, e.g.
    /// `https://sqs.us-east-1.amazonaws.com/123456789012/thumbnails`.
    /// Give either this or `queue_name`.
    #[serde(default)]
    pub queue_url: Option<String>,

    /// Queue name, resolved to a URL with `GetQueueUrl` (with `account_id`
    /// when the queue belongs to another account).
    #[serde(default)]
    pub queue_name: Option<String>,

    /// The 12-digit AWS account that owns `queue_name` (default: the caller's).
    #[serde(default)]
    pub account_id: Option<String>,

    /// AWS region, e.g. `us-east-1`. Default: taken from the queue URL, else
    /// from the standard AWS chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,

    /// Custom endpoint for SQS and CloudWatch (VPC endpoint, LocalStack, moto),
    /// e.g. `http://127.0.0.1:5000`.
    #[serde(default)]
    pub endpoint_url: Option<String>,

    /// Count in-flight messages (received, not yet deleted) as backlog.
    #[serde(default = "default_true")]
    pub count_in_flight: bool,

    /// Count delayed messages (not yet visible) as backlog.
    #[serde(default)]
    pub count_delayed: bool,

    /// Read the age of the oldest message and the arrival rate from CloudWatch
    /// (`AWS/SQS`). Needed by the age signal; costs one shared GetMetricData
    /// call per poll and region.
    #[serde(default = "default_true")]
    pub cloudwatch: bool,

    /// CloudWatch data older than this counts as missing (never as zero),
    /// e.g. `"5m"`. SQS metrics arrive at 1-minute resolution and lag.
    #[serde(default = "default_max_staleness", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_staleness: Duration,

    /// A dead-letter queue whose depth is exported as
    /// `qscale_dead_letter_messages` and whose growth is the dead-letter
    /// arrival rate; never a backlog. Default: discovered from the queue's
    /// `RedrivePolicy`.
    #[serde(default)]
    pub dead_letter_queue_url: Option<String>,
}

fn default_max_staleness() -> Duration {
    Duration::from_secs(300)
}

impl SqsSourceConfig {
    /// The queue name, from `queue_name` or the last path segment of the URL.
    pub fn queue_name(&self) -> Option<String> {
        if let Some(n) = &self.queue_name {
            return Some(n.clone());
        }
        let url = self.queue_url.as_deref()?;
        let name = url.trim_end_matches('/').rsplit('/').next()?;
        (!name.is_empty()).then(|| name.to_string())
    }

    /// The region named by a standard SQS URL host
    /// (`sqs.<region>.amazonaws.com`), if the URL is one.
    pub fn region_from_url(&self) -> Option<String> {
        let url = self.queue_url.as_deref()?;
        let host = url.split("://").nth(1)?.split('/').next()?;
        let mut parts = host.split('.');
        match (parts.next(), parts.next()) {
            (Some("sqs"), Some(region)) if host.ends_with(".amazonaws.com") => {
                Some(region.to_string())
            }
            _ => None,
        }
    }
}

#[async_trait]
impl SourceSpec for SqsSourceConfig {
    fn kind(&self) -> &'static str {
        "sqs"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            oldest_age: self.cloudwatch,
            arrival_rate: self.cloudwatch,
            in_flight: true,
            delayed: true,
            count_in_flight: self.count_in_flight,
            count_delayed: self.count_delayed,
        }
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        match (&self.queue_url, &self.queue_name) {
            (None, None) => p.push(format!("{path}.queue_url"), "give queue_url or queue_name"),
            (Some(_), Some(_)) => p.push(
                format!("{path}.queue_name"),
                "give queue_url or queue_name, not both",
            ),
            (Some(url), None) => {
                http_url(p, &format!("{path}.queue_url"), url);
                if url.trim_end_matches('/').matches('/').count() < 4 {
                    p.push(
                        format!("{path}.queue_url"),
                        "must look like https://sqs.<region>.amazonaws.com/<account>/<queue>",
                    );
                }
            }
            (None, Some(name)) => {
                let ok = !name.is_empty()
                    && name.len() <= 80
                    && name
                        .trim_end_matches(".fifo")
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !ok {
                    p.push(
                        format!("{path}.queue_name"),
                        "must be 1-80 letters, digits, '-' or '_' (optionally ending in .fifo)",
                    );
                }
            }
        }
        if let Some(acct) = &self.account_id
            && (acct.len() != 12 || !acct.chars().all(|c| c.is_ascii_digit()))
        {
            p.push(format!("{path}.account_id"), "must be 12 digits");
        }
        validate_endpoint(
            p,
            path,
            self.region.as_deref(),
            self.endpoint_url.as_deref(),
        );
        if let Some(url) = &self.dead_letter_queue_url {
            http_url(p, &format!("{path}.dead_letter_queue_url"), url);
        }
        positive_duration(p, &format!("{path}.max_staleness"), self.max_staleness);
    }

    fn describe(&self) -> String {
        let q = self
            .queue_name()
            .unwrap_or_else(|| "<unnamed queue>".to_string());
        let mut d = format!("sqs queue {q}");
        if !self.cloudwatch {
            d.push_str(" (no CloudWatch)");
        }
        d
    }

    fn identity(&self) -> String {
        match &self.queue_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!(
                "{} in account {} region {} at {}",
                self.queue_name.as_deref().unwrap_or_default(),
                self.account_id.as_deref().unwrap_or("(own)"),
                self.region.as_deref().unwrap_or("(default)"),
                self.endpoint_url.as_deref().unwrap_or("(AWS)")
            ),
        }
    }

    async fn build(
        &self,
        clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn QueueSource>, SourceError> {
        Ok(Arc::new(SqsSource::build(self, clients, timeout).await?))
    }
}

/// The depth attributes, all a dead-letter queue is asked for.
const DEPTH_ATTRIBUTES: [QueueAttributeName; 3] = [
    QueueAttributeName::ApproximateNumberOfMessages,
    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    QueueAttributeName::ApproximateNumberOfMessagesDelayed,
];

/// What the watched queue is asked for on every poll: its depth and the
/// settings checked against the work.
const QUEUE_ATTRIBUTES: [QueueAttributeName; 5] = [
    QueueAttributeName::ApproximateNumberOfMessages,
    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    QueueAttributeName::VisibilityTimeout,
    QueueAttributeName::RedrivePolicy,
];

/// A queue's `RedrivePolicy`: where failed messages go, and after how
/// many receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedrivePolicy {
    pub dead_letter_target_arn: String,
    pub max_receive_count: u32,
}

impl RedrivePolicy {
    /// The dead-letter queue's account and name, from its ARN
    /// (`arn:aws:sqs:<region>:<account>:<name>`).
    pub fn queue(&self) -> Option<(&str, &str)> {
        let mut parts = self.dead_letter_target_arn.splitn(6, ':');
        let (arn, _partition, service) = (parts.next()?, parts.next()?, parts.next()?);
        let (_region, account, name) = (parts.next()?, parts.next()?, parts.next()?);
        (arn == "arn" && service == "sqs" && !account.is_empty() && !name.is_empty())
            .then_some((account, name))
    }
}

/// Parse the `RedrivePolicy` attribute, a JSON object whose
/// `maxReceiveCount` SQS sends as a string and moto as a number.
pub fn parse_redrive_policy(text: &str) -> Result<RedrivePolicy, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        format!(
            "RedrivePolicy {:?} is not JSON",
            crate::clients::error_text::one_line(text)
        )
    })?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(serde_json::Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or("RedrivePolicy has no deadLetterTargetArn")?;
    let count = match v.get("maxReceiveCount") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .and_then(|n| u32::try_from(n).ok())
    .filter(|n| *n > 0)
    .ok_or("RedrivePolicy has no maxReceiveCount of 1 or more")?;
    Ok(RedrivePolicy {
        dead_letter_target_arn: arn.to_string(),
        max_receive_count: count,
    })
}

/// The queue's settings as `GetQueueAttributes` reports them; what cannot
/// be read is `None` with a note.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSettings {
    pub visibility_timeout: Option<Duration>,
    pub redrive: Option<RedrivePolicy>,
    pub notes: Vec<String>,
}

/// Read the settings attributes. A queue without a redrive policy has no
/// `RedrivePolicy` attribute (or an empty one); that is not a problem.
pub fn parse_settings(attrs: Option<&HashMap<QueueAttributeName, String>>) -> QueueSettings {
    let mut out = QueueSettings::default();
    let get = |n: &QueueAttributeName| attrs.and_then(|a| a.get(n)).map(|v| v.trim());
    if let Some(v) = get(&QueueAttributeName::VisibilityTimeout) {
        match v.parse::<u64>() {
            Ok(secs) => out.visibility_timeout = Some(Duration::from_secs(secs)),
            Err(_) => out.notes.push(format!(
                "VisibilityTimeout {:?} is not a number of seconds; not checked against the work",
                crate::clients::error_text::one_line(v)
            )),
        }
    }
    match get(&QueueAttributeName::RedrivePolicy) {
        None | Some("") | Some("{}") => {}
        Some(text) => match parse_redrive_policy(text) {
            Ok(r) => out.redrive = Some(r),
            Err(e) => out
                .notes
                .push(format!("{e}; the dead-letter queue is not discovered")),
        },
    }
    out
}

/// A queue's message counts as `GetQueueAttributes` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub visible: Option<u64>,
    pub in_flight: Option<u64>,
    pub delayed: Option<u64>,
}

impl Depth {
    /// All messages held, for the dead-letter gauge.
    fn total(&self) -> Option<u64> {
        let parts = [self.visible, self.in_flight, self.delayed];
        if parts.iter().all(Option::is_none) {
            return None;
        }
        Some(
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b)),
        )
    }
}

/// Read the depth attributes. A missing attribute stays unknown; a value
/// that is not a count, or an answer with none of them, is an invalid
/// response (SQS always sends all three).
pub fn parse_depth(attrs: Option<&HashMap<QueueAttributeName, String>>) -> Result<Depth, String> {
    let get = |name: &QueueAttributeName| -> Result<Option<u64>, String> {
        match attrs.and_then(|a| a.get(name)) {
            None => Ok(None),
            Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                format!(
                    "attribute {} is {:?}, not a message count",
                    name.as_str(),
                    crate::clients::error_text::one_line(v)
                )
            }),
        }
    };
    let d = Depth {
        visible: get(&QueueAttributeName::ApproximateNumberOfMessages)?,
        in_flight: get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        delayed: get(&QueueAttributeName::ApproximateNumberOfMessagesDelayed)?,
    };
    if d == Depth::default() {
        return Err("the answer had none of the ApproximateNumberOfMessages* attributes".into());
    }
    Ok(d)
}

/// What the CloudWatch metrics say now: the oldest message's age and the
/// arrival rate, each `None` when missing, stale or invalid, plus a note for
/// each one that is.
pub fn cloudwatch_signals(
    m: &QueueMetrics,
    now: SystemTime,
    max_staleness: Duration,
) -> (Option<Duration>, Option<f64>, Vec<String>) {
    let mut notes = Vec::new();
    let age = fresh(
        SqsMetric::AgeOfOldestMessage,
        m,
        now,
        max_staleness,
        &mut notes,
    )
    .and_then(|secs| match Duration::try_from_secs_f64(secs) {
        Ok(d) => Some(d),
        Err(_) => {
            notes.push(format!(
                "CloudWatch {} is {secs}, not an age; treating as missing",
                SqsMetric::AgeOfOldestMessage.name()
            ));
            None
        }
    });
    let rate = fresh(SqsMetric::MessagesSent, m, now, max_staleness, &mut notes).and_then(|sum| {
        if sum < 0.0 {
            notes.push(format!(
                "CloudWatch {} is {sum}, not a count; treating as missing",
                SqsMetric::MessagesSent.name()
            ));
            return None;
        }
        Some(sum / PERIOD.as_secs_f64())
    });
    (age, rate, notes)
}

/// The value of `metric` if its newest datapoint is within `max_staleness`.
fn fresh(
    metric: SqsMetric,
    m: &QueueMetrics,
    now: SystemTime,
    max_staleness: Duration,
    notes: &mut Vec<String>,
) -> Option<f64> {
    let Some(Datapoint { at, value }) = m.get(metric) else {
        notes.push(format!(
            "CloudWatch has no {} datapoint in the last {}; treating as missing",
            metric.name(),
            human(WINDOW)
        ));
        return None;
    };
    // A datapoint from the future (clock skew) is as fresh as can be.
    let age = now.duration_since(at).unwrap_or(Duration::ZERO);
    if age > max_staleness {
        notes.push(format!(
            "CloudWatch {} is {} old (max_staleness {}); treating as missing",
            metric.name(),
            human(age),
            human(max_staleness)
        ));
        return None;
    }
    Some(value)
}

/// A duration in whole seconds, as users write them (`7m 30s`).
fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// A live SQS queue. Cheap to sample concurrently: the SDK client is
/// reference-counted and the queue URL is resolved once.
pub struct SqsSource {
    client: aws_sdk_sqs::Client,
    /// Resolved on the first successful sample when configured by name.
    url: OnceCell<String>,
    name: String,
    account_id: Option<String>,
    dead_letter_url: Option<String>,
    /// The discovered dead-letter queue: the ARN it was resolved from and
    /// its URL, so `GetQueueUrl` runs once per redrive target.
    discovered: Mutex<Option<(String, String)>>,
    cloudwatch: Option<Registration>,
    max_staleness: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for SqsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSource")
            .field("queue", &self.name)
            .field("url", &self.url.get())
            .field("cloudwatch", &self.cloudwatch.is_some())
            .finish()
    }
}

impl SqsSource {
    /// Build a source for `cfg`. Fails only on what can be known without
    /// calling SQS: an invalid config or no region anywhere. Each sample
    /// takes at most `timeout`.
    pub async fn build(
        cfg: &SqsSourceConfig,
        shared: &Clients,
        timeout: Duration,
    ) -> Result<SqsSource, SourceError> {
        let mut problems = Problems::default();
        cfg.validate("source", &mut problems);
        if !problems.is_empty() {
            return Err(SourceError::Config(problems.0.join("; ")));
        }
        let name = cfg
            .queue_name()
            .ok_or_else(|| SourceError::Config("source: the queue has no name".into()))?;
        let endpoint = AwsEndpoint {
            region: cfg.region.clone().or_else(|| cfg.region_from_url()),
            endpoint_url: cfg.endpoint_url.clone(),
        };
        let sdk = shared.aws.get(&endpoint, timeout).await;
        if sdk.region().is_none() {
            return Err(SourceError::Config(format!(
                "no AWS region for queue {name}: set source.region, use a regional queue URL \
                 (https://sqs.<region>.amazonaws.com/...), or set AWS_REGION"
            )));
        }
        let cloudwatch = cfg
            .cloudwatch
            .then(|| shared.cloudwatch.reader(&sdk, timeout).register(&name));
        Ok(SqsSource {
            client: aws_sdk_sqs::Client::new(&sdk),
            url: OnceCell::new_with(cfg.queue_url.clone()),
            name,
            account_id: cfg.account_id.clone(),
            dead_letter_url: cfg.dead_letter_queue_url.clone(),
            discovered: Mutex::new(None),
            cloudwatch,
            max_staleness: cfg.max_staleness,
            timeout,
        })
    }

    /// The queue URL, resolving the name with `GetQueueUrl` the first time.
    /// A failure is not cached, so a queue created later is found.
    async fn queue_url(&self) -> Result<&str, SourceError> {
        self.url
            .get_or_try_init(|| async {
                let what = format!("SQS GetQueueUrl for queue {}", self.name);
                let answer = self
                    .client
                    .get_queue_url()
                    .queue_name(&self.name)
                    .set_queue_owner_aws_account_id(self.account_id.clone())
                    .send()
                    .await
                    .map_err(|e| source_error(&what, classify(&e), self.timeout))?;
                match answer.queue_url() {
                    Some(u) if !u.is_empty() => Ok(u.to_string()),
                    _ => Err(SourceError::InvalidResponse(format!(
                        "{what}: the answer had no QueueUrl"
                    ))),
                }
            })
            .await
            .map(String::as_str)
    }

    /// The depth of a queue, and its settings when `settings` asks for them.
    async fn depth(
        &self,
        url: &str,
        settings: bool,
    ) -> Result<(Depth, QueueSettings), SourceError> {
        let what = format!("SQS GetQueueAttributes for {url}");
        let names = if settings {
            QUEUE_ATTRIBUTES.to_vec()
        } else {
            DEPTH_ATTRIBUTES.to_vec()
        };
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names))
            .send()
            .await
            .map_err(|e| source_error(&what, classify(&e), self.timeout))?;
        let depth = parse_depth(answer.attributes())
            .map_err(|e| SourceError::InvalidResponse(format!("{what}: {e}")))?;
        let found = if settings {
            parse_settings(answer.attributes())
        } else {
            QueueSettings::default()
        };
        Ok((depth, found))
    }

    /// The URL of the dead-letter queue a redrive policy names, resolved
    /// with `GetQueueUrl` the first time (and again when the policy changes
    /// to another queue).
    async fn discovered_url(&self, redrive: &RedrivePolicy) -> Result<String, SourceError> {
        let arn = &redrive.dead_letter_target_arn;
        if let Ok(known) = self.discovered.lock()
            && let Some((a, url)) = known.as_ref()
            && a == arn
        {
            return Ok(url.clone());
        }
        let (account, name) = redrive.queue().ok_or_else(|| {
            SourceError::InvalidResponse(format!(
                "RedrivePolicy deadLetterTargetArn {arn:?} is not an SQS queue ARN"
            ))
        })?;
        let what = format!("SQS GetQueueUrl for dead-letter queue {name}");
        let answer = self
            .client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| source_error(&what, classify(&e), self.timeout))?;
        let url = match answer.queue_url() {
            Some(u) if !u.is_empty() => u.to_string(),
            _ => {
                return Err(SourceError::InvalidResponse(format!(
                    "{what}: the answer had no QueueUrl"
                )));
            }
        };
        if let Ok(mut known) = self.discovered.lock() {
            *known = Some((arn.clone(), url.clone()));
        }
        Ok(url)
    }

    /// The depth of the dead-letter queue the redrive policy names.
    async fn discovered_depth(&self, redrive: &RedrivePolicy) -> Result<Depth, SourceError> {
        let url = self.discovered_url(redrive).await?;
        Ok(self.depth(&url, false).await?.0)
    }
}

/// A dead-letter queue's name and how qscale knows it, for /status.
fn dead_letter_label(url_or_arn: &str, how: &str) -> String {
    let name = url_or_arn
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(url_or_arn);
    format!("{name} ({how})")
}

#[async_trait]
impl QueueSource for SqsSource {
    fn kind(&self) -> &'static str {
        "sqs"
    }

    async fn sample(&self) -> Result<Sample, SourceError> {
        let at = SystemTime::now();
        let deadline = Instant::now() + self.timeout;
        let main = async { self.depth(self.queue_url().await?, true).await };
        let dead_letter = async {
            match &self.dead_letter_url {
                Some(u) => Some(self.depth(u, false).await.map(|(d, _)| d)),
                None => None,
            }
        };
        let cloudwatch = async {
            match &self.cloudwatch {
                Some(r) => Some(r.latest().await),
                None => None,
            }
        };
        let (main, dead_letter, cloudwatch) = tokio::join!(
            timeout_at(deadline, main),
            timeout_at(deadline, dead_letter),
            timeout_at(deadline, cloudwatch)
        );
        let (depth, settings) = main.map_err(|_| SourceError::Timeout(self.timeout))??;

        let mut sample = Sample::empty(at);
        sample.visible = depth.visible;
        sample.in_flight = depth.in_flight;
        sample.delayed = depth.delayed;
        sample.visibility_timeout = settings.visibility_timeout;
        sample.max_receive_count = settings.redrive.as_ref().map(|r| r.max_receive_count);
        sample.notes.extend(settings.notes);
        // Discovery runs after the main call: the redrive policy names the
        // queue. What is left of the sample's deadline bounds it.
        let dead_letter = match (&self.dead_letter_url, &settings.redrive) {
            (Some(u), _) => {
                sample.dead_letter_queue = Some(dead_letter_label(u, "configured"));
                dead_letter
            }
            (None, Some(r)) => {
                sample.dead_letter_queue = Some(dead_letter_label(
                    &r.dead_letter_target_arn,
                    "discovered from RedrivePolicy",
                ));
                timeout_at(deadline, async { Some(self.discovered_depth(r).await) }).await
            }
            (None, None) => Ok(None),
        };
        match dead_letter {
            Ok(None) => {}
            Ok(Some(Ok(d))) => sample.dead_letter = d.total(),
            Ok(Some(Err(e))) => sample
                .notes
                .push(format!("dead-letter queue depth unknown: {e}")),
            Err(_) => sample.notes.push(format!(
                "dead-letter queue depth unknown: no answer within {}",
                human(self.timeout)
            )),
        }
        match cloudwatch {
            Ok(None) => {}
            Ok(Some(Ok(m))) => {
                let (age, rate, notes) = cloudwatch_signals(&m, SystemTime::now(), self.max_staleness);
                sample.oldest_age = age;
                sample.arrival_rate = rate;
                sample.notes.extend(notes);
            }
            Ok(Some(Err(e))) => sample.notes.push(format!(
                "CloudWatch unreadable, oldest_age and arrival_rate treated as missing: {e}"
            )),
            Err(_) => sample.notes.push(format!(
                "CloudWatch did not answer within {}; oldest_age and arrival_rate treated as missing",
                human(self.timeout)
            )),
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: Option<&str>, name: Option<&str>) -> SqsSourceConfig {
        SqsSourceConfig {
            queue_url: url.map(str::to_string),
            queue_name: name.map(str::to_string),
            account_id: None,
            region: None,
            endpoint_url: None,
            count_in_flight: true,
            count_delayed: false,
            cloudwatch: true,
            max_staleness: Duration::from_secs(300),
            dead_letter_queue_url: None,
        }
    }

    #[test]
    fn queue_name_and_region_come_from_a_standard_url() {
        let c = cfg(
            Some("https://sqs.eu-west-2.amazonaws.com/123456789012/jobs"),
            None,
        );
        assert_eq!(c.queue_name().as_deref(), Some("jobs"));
        assert_eq!(c.region_from_url().as_deref(), Some("eu-west-2"));
    }

    #[test]
    fn a_custom_endpoint_url_names_no_region() {
        let c = cfg(Some("http://127.0.0.1:5000/123456789012/jobs"), None);
        assert_eq!(c.queue_name().as_deref(), Some("jobs"));
        assert_eq!(c.region_from_url(), None);
    }

    #[test]
    fn validation_table() {
        let cases: Vec<(SqsSourceConfig, Option<&str>)> = vec![
            (
                cfg(Some("https://sqs.us-east-1.amazonaws.com/1/q"), None),
                None,
            ),
            (cfg(None, Some("jobs.fifo")), None),
            (cfg(None, None), Some("give queue_url or queue_name")),
            (
                cfg(Some("https://sqs.us-east-1.amazonaws.com/1/q"), Some("q")),
                Some("not both"),
            ),
            (cfg(Some("sqs/jobs"), None), Some("not an http")),
            (cfg(None, Some("bad name!")), Some("must be 1-80")),
            (
                SqsSourceConfig {
                    region: Some("mars".into()),
                    ..cfg(None, Some("q"))
                },
                Some("not an AWS region"),
            ),
            (
                SqsSourceConfig {
                    account_id: Some("12".into()),
                    ..cfg(None, Some("q"))
                },
                Some("12 digits"),
            ),
            (
                SqsSourceConfig {
                    max_staleness: Duration::ZERO,
                    ..cfg(None, Some("q"))
                },
                Some("max_staleness: must be greater than 0"),
            ),
        ];
        crate::validate::assert_validation_table(&cases, |c, path, p| c.validate(path, p));
    }

    fn attrs(pairs: &[(QueueAttributeName, &str)]) -> HashMap<QueueAttributeName, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }

    #[test]
    fn depth_attributes_are_read_strictly() {
        use QueueAttributeName as A;
        let all = attrs(&[
            (A::ApproximateNumberOfMessages, "5"),
            (A::ApproximateNumberOfMessagesNotVisible, "2"),
            (A::ApproximateNumberOfMessagesDelayed, "0"),
        ]);
        let one = attrs(&[(A::ApproximateNumberOfMessages, " 7 ")]);
        let bad = attrs(&[(A::ApproximateNumberOfMessages, "<html>")]);
        let negative = attrs(&[(A::ApproximateNumberOfMessages, "-1")]);
        type Case<'a> = (Option<&'a HashMap<A, String>>, Result<Depth, &'static str>);
        let cases: Vec<Case> = vec![
            (
                Some(&all),
                Ok(Depth {
                    visible: Some(5),
                    in_flight: Some(2),
                    delayed: Some(0),
                }),
            ),
            (
                Some(&one),
                Ok(Depth {
                    visible: Some(7),
                    ..Depth::default()
                }),
            ),
            (Some(&bad), Err("not a message count")),
            (Some(&negative), Err("not a message count")),
            (None, Err("none of the")),
        ];
        for (input, want) in cases {
            match (parse_depth(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got:?} lacks {want:?}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn redrive_policy_parsing_table() {
        let arn = "arn:aws:sqs:us-east-1:123456789012:jobs-dlq";
        type Want<'a> = Result<(u32, (&'a str, &'a str)), &'a str>;
        let cases: Vec<(&str, Want)> = vec![
            (
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:jobs-dlq","maxReceiveCount":"5"}"#,
                Ok((5, ("123456789012", "jobs-dlq"))),
            ),
            (
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:jobs-dlq","maxReceiveCount":3}"#,
                Ok((3, ("123456789012", "jobs-dlq"))),
            ),
            (r#"{"maxReceiveCount":3}"#, Err("no deadLetterTargetArn")),
            (
                r#"{"deadLetterTargetArn":"x","maxReceiveCount":"0"}"#,
                Err("no maxReceiveCount of 1 or more"),
            ),
            (
                r#"{"deadLetterTargetArn":"x","maxReceiveCount":"lots"}"#,
                Err("no maxReceiveCount"),
            ),
            ("<html>", Err("is not JSON")),
        ];
        for (text, want) in cases {
            match (parse_redrive_policy(text), want) {
                (Ok(got), Ok((count, queue))) => {
                    assert_eq!(got.dead_letter_target_arn, arn);
                    assert_eq!(got.max_receive_count, count);
                    assert_eq!(got.queue(), Some(queue));
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{e:?} lacks {w:?}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        let not_sqs = RedrivePolicy {
            dead_letter_target_arn: "arn:aws:sns:us-east-1:123456789012:topic".into(),
            max_receive_count: 1,
        };
        assert_eq!(not_sqs.queue(), None);
    }

    #[test]
    fn queue_settings_are_read_and_a_bad_one_is_a_note_not_an_error() {
        use QueueAttributeName as A;
        let good = attrs(&[
            (A::VisibilityTimeout, "30"),
            (
                A::RedrivePolicy,
                r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:111122223333:dlq","maxReceiveCount":"4"}"#,
            ),
        ]);
        let s = parse_settings(Some(&good));
        assert_eq!(s.visibility_timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.redrive.as_ref().map(|r| r.max_receive_count), Some(4));
        assert!(s.notes.is_empty(), "{:?}", s.notes);

        let none = attrs(&[(A::VisibilityTimeout, "0"), (A::RedrivePolicy, "")]);
        let s = parse_settings(Some(&none));
        assert_eq!(s.visibility_timeout, Some(Duration::ZERO));
        assert_eq!(s.redrive, None);
        assert!(s.notes.is_empty(), "{:?}", s.notes);

        let bad = attrs(&[(A::VisibilityTimeout, "soon"), (A::RedrivePolicy, "{")]);
        let s = parse_settings(Some(&bad));
        assert_eq!((s.visibility_timeout, s.redrive), (None, None));
        assert_eq!(s.notes.len(), 2, "{:?}", s.notes);
        assert!(s.notes[1].contains("dead-letter queue is not discovered"));
        assert_eq!(parse_settings(None), QueueSettings::default());
    }

    #[test]
    fn a_dead_letter_queue_is_shown_by_name_and_how_it_was_found() {
        assert_eq!(
            dead_letter_label("arn:aws:sqs:us-east-1:123456789012:jobs-dlq", "discovered"),
            "jobs-dlq (discovered)"
        );
        assert_eq!(
            dead_letter_label(
                "https://sqs.us-east-1.amazonaws.com/1/jobs-dlq",
                "configured"
            ),
            "jobs-dlq (configured)"
        );
    }

    #[test]
    fn dead_letter_total_counts_every_message_held() {
        let d = Depth {
            visible: Some(3),
            in_flight: Some(1),
            delayed: None,
        };
        assert_eq!(d.total(), Some(4));
        assert_eq!(Depth::default().total(), None);
    }

    #[test]
    fn cloudwatch_data_older_than_max_staleness_is_missing_never_zero() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let ago = |s: u64| now - Duration::from_secs(s);
        let point = |s: u64, value: f64| Some(Datapoint { at: ago(s), value });
        let five_min = Duration::from_secs(300);
        type Case = (
            &'static str,
            QueueMetrics,
            Option<Duration>,
            Option<f64>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "fresh data is used; the sum per minute becomes a rate per second",
                QueueMetrics {
                    oldest_age: point(60, 42.0),
                    sent: point(60, 120.0),
                },
                Some(Duration::from_secs(42)),
                Some(2.0),
                vec![],
            ),
            (
                "zeros are values",
                QueueMetrics {
                    oldest_age: point(0, 0.0),
                    sent: point(0, 0.0),
                },
                Some(Duration::ZERO),
                Some(0.0),
                vec![],
            ),
            (
                "stale data is missing, with a note naming its age",
                QueueMetrics {
                    oldest_age: point(420, 900.0),
                    sent: point(60, 6.0),
                },
                None,
                Some(0.1),
                vec![
                    "CloudWatch ApproximateAgeOfOldestMessage is 7m old (max_staleness 5m); treating as missing",
                ],
            ),
            (
                "exactly max_staleness old is still fresh",
                QueueMetrics {
                    oldest_age: point(300, 1.0),
                    sent: point(300, 60.0),
                },
                Some(Duration::from_secs(1)),
                Some(1.0),
                vec![],
            ),
            (
                "no datapoints at all",
                QueueMetrics::default(),
                None,
                None,
                vec![
                    "CloudWatch has no ApproximateAgeOfOldestMessage datapoint in the last 15m",
                    "CloudWatch has no NumberOfMessagesSent datapoint in the last 15m",
                ],
            ),
            (
                "a datapoint from the future (clock skew) counts as fresh",
                QueueMetrics {
                    oldest_age: Some(Datapoint {
                        at: now + Duration::from_secs(30),
                        value: 5.0,
                    }),
                    sent: None,
                },
                Some(Duration::from_secs(5)),
                None,
                vec!["no NumberOfMessagesSent"],
            ),
            (
                "impossible values are missing",
                QueueMetrics {
                    oldest_age: point(0, -3.0),
                    sent: point(0, -1.0),
                },
                None,
                None,
                vec!["is -3, not an age", "is -1, not a count"],
            ),
        ];
        for (name, m, want_age, want_rate, want_notes) in cases {
            let (age, rate, notes) = cloudwatch_signals(&m, now, five_min);
            assert_eq!(age, want_age, "{name}");
            assert_eq!(rate, want_rate, "{name}");
            assert_eq!(notes.len(), want_notes.len(), "{name}: {notes:?}");
            for (n, w) in notes.iter().zip(&want_notes) {
                assert!(n.contains(w), "{name}: {n:?} lacks {w:?}");
            }
        }
    }

    #[tokio::test]
    async fn building_a_source_from_a_malformed_config_is_a_config_error_not_a_panic() {
        let shared = Clients::new();
        let cases = [
            cfg(Some("sqs/jobs"), None),
            cfg(None, None),
            SqsSourceConfig {
                region: Some("mars".into()),
                ..cfg(None, Some("q"))
            },
        ];
        for c in cases {
            let e = SqsSource::build(&c, &shared, Duration::from_secs(1))
                .await
                .expect_err("a malformed config must not build");
            assert_eq!(e.metric_label(), "config", "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
