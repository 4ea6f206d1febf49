//! History from CloudWatch: an SQS queue's `NumberOfMessagesSent`, per
//! minute.
//!
//! SQS publishes `NumberOfMessagesSent` (statistic Sum) once a minute per
//! queue, under the dimension `QueueName`, and CloudWatch keeps 1-minute
//! data for 15 days. The queue is given as in a scaler's `sqs` source (URL
//! or name, region, endpoint), and the reads go through the same AWS
//! configuration and GetMetricData code as the daemon's
//! ([`crate::clients::cloudwatch::metric_range`]).
//!
//! The start backlog is `ApproximateNumberOfMessagesVisible` (statistic
//! Maximum) of the first minute with data: what was already waiting when
//! the trace starts.
//!
//! CloudWatch knows nothing about queues, only metrics: a misspelt queue
//! and a silent one both come back empty. So when the range is empty, SQS
//! is asked whether the queue exists, and a queue that does not gets its
//! own error instead of "no data".

use std::time::{Duration, SystemTime};

use crate::clients::aws::{AwsConfigs, AwsEndpoint};
use crate::clients::aws_error::{classify, source_error};
use crate::clients::cloudwatch::{self, PERIOD, RangeMetric};
use crate::contract::SourceError;
use crate::sources::sqs::SqsSourceConfig;

use super::{Bins, HistoryError, Range};

/// Messages sent to the queue per minute.
pub const SENT: RangeMetric = RangeMetric {
    name: "NumberOfMessagesSent",
    stat: "Sum",
};

/// Messages waiting, for the start backlog.
pub const VISIBLE: RangeMetric = RangeMetric {
    name: "ApproximateNumberOfMessagesVisible",
    stat: "Maximum",
};

/// Read `range` of the queue of `sqs` (and its backlog if `start_backlog`).
pub async fn read(
    sqs: &SqsSourceConfig,
    range: Range,
    start_backlog: bool,
    aws: &AwsConfigs,
    timeout: Duration,
) -> Result<Bins, HistoryError> {
    let name = sqs
        .queue_name()
        .ok_or_else(|| HistoryError::Usage("the queue URL names no queue".into()))?;
    let endpoint = AwsEndpoint {
        region: sqs.region.clone().or_else(|| sqs.region_from_url()),
        endpoint_url: sqs.endpoint_url.clone(),
    };
    let sdk = aws.get(&endpoint, timeout).await;
    if sdk.region().is_none() {
        return Err(HistoryError::Usage(format!(
            "no AWS region for queue {name}: give --region, a regional queue URL \
             (https://sqs.<region>.amazonaws.com/...), or set AWS_REGION"
        )));
    }
    let metrics: &[RangeMetric] = if start_backlog {
        &[SENT, VISIBLE]
    } else {
        &[SENT]
    };
    let (points, calls) =
        cloudwatch::metric_range(&sdk, &name, metrics, (range.start, range.end), timeout).await?;
    let n = range.bins(PERIOD);
    let to_bins = |points: &[cloudwatch::Datapoint]| -> Vec<Option<f64>> {
        let mut bins = vec![None; n];
        for p in points {
            if let Some(i) = minute_index(range.start, p.at)
                && let Some(slot) = bins.get_mut(i)
            {
                *slot = Some(p.value);
            }
        }
        bins
    };
    let messages = to_bins(points.first().map(Vec::as_slice).unwrap_or_default());
    if messages.iter().all(Option::is_none) {
        check_queue_exists(sqs, &name, &sdk, timeout).await?;
    }
    Ok(Bins {
        what: format!("CloudWatch NumberOfMessagesSent of queue {name}"),
        range,
        bin: PERIOD,
        messages,
        backlog: start_backlog
            .then(|| to_bins(points.get(1).map(Vec::as_slice).unwrap_or_default())),
        calls,
    })
}

/// The minute of `at` counted from `start`; `None` before `start` or off
/// the minute grid (CloudWatch labels each period with its start).
fn minute_index(start: SystemTime, at: SystemTime) -> Option<usize> {
    let d = at.duration_since(start).ok()?;
    (d.as_secs() % PERIOD.as_secs() == 0 && d.subsec_nanos() == 0)
        .then(|| (d.as_secs() / PERIOD.as_secs()) as usize)
}

/// `Ok` when SQS knows the queue (or cannot say: only "does not exist" is
/// worth reporting over "no data"), else [`HistoryError::NoSuchQueue`].
async fn check_queue_exists(
    sqs: &SqsSourceConfig,
    name: &str,
    sdk: &aws_config::SdkConfig,
    timeout: Duration,
) -> Result<(), HistoryError> {
    let client = aws_sdk_sqs::Client::new(sdk);
    let failure = match &sqs.queue_url {
        Some(url) => client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::CreatedTimestamp)
            .send()
            .await
            .err()
            .map(|e| {
                source_error(
                    &format!("SQS GetQueueAttributes for {url}"),
                    classify(&e),
                    timeout,
                )
            }),
        None => client
            .get_queue_url()
            .queue_name(name)
            .set_queue_owner_aws_account_id(sqs.account_id.clone())
            .send()
            .await
            .err()
            .map(|e| {
                source_error(
                    &format!("SQS GetQueueUrl for {name}"),
                    classify(&e),
                    timeout,
                )
            }),
    };
    match failure {
        Some(SourceError::NotFound(detail)) => Err(HistoryError::NoSuchQueue {
            queue: name.to_string(),
            detail,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn datapoints_land_on_their_minute_and_off_grid_ones_are_dropped() {
        let start = UNIX_EPOCH + Duration::from_secs(6000);
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(minute_index(start, at(6000)), Some(0));
        assert_eq!(minute_index(start, at(6120)), Some(2));
        assert_eq!(minute_index(start, at(6130)), None);
        assert_eq!(minute_index(start, at(5940)), None);
    }
}
