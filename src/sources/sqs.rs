//! Amazon SQS source: its config table and validation.
//!
//! Depth (visible, in-flight, delayed) comes from one `GetQueueAttributes`
//! call per poll. Age of the oldest message and arrival rate come from
//! CloudWatch (`AWS/SQS`), because reading them by receiving messages would
//! change receive counts and can push messages to a dead-letter queue.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Problems, http_url, positive_duration};
use crate::sources::Capabilities;

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
    /// `qscale_dead_letter_messages`; never a scaling signal.
    #[serde(default)]
    pub dead_letter_queue_url: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_max_staleness() -> Duration {
    Duration::from_secs(300)
}

impl SqsSourceConfig {
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            oldest_age: self.cloudwatch,
            arrival_rate: self.cloudwatch,
            in_flight: true,
            delayed: true,
            count_in_flight: self.count_in_flight,
            count_delayed: self.count_delayed,
        }
    }

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

    pub fn validate(&self, path: &str, p: &mut Problems) {
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
        if let Some(region) = &self.region
            && !valid_region(region)
        {
            p.push(
                format!("{path}.region"),
                format!("{region:?} is not an AWS region name like us-east-1"),
            );
        }
        if let Some(url) = &self.endpoint_url {
            http_url(p, &format!("{path}.endpoint_url"), url);
        }
        if let Some(url) = &self.dead_letter_queue_url {
            http_url(p, &format!("{path}.dead_letter_queue_url"), url);
        }
        positive_duration(p, &format!("{path}.max_staleness"), self.max_staleness);
    }

    pub fn describe(&self) -> String {
        let q = self
            .queue_name()
            .unwrap_or_else(|| "<unnamed queue>".to_string());
        let mut d = format!("sqs queue {q}");
        if !self.cloudwatch {
            d.push_str(" (no CloudWatch)");
        }
        d
    }
}

/// AWS region names: lowercase letters, digits and dashes, with at least two
/// dashes (`us-east-1`, `us-gov-west-1`, `ap-southeast-4`).
pub(crate) fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 30
        && r.split('-').count() >= 3
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && r.chars().last().is_some_and(|c| c.is_ascii_digit())
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
        for (c, want) in cases {
            let mut p = Problems::default();
            c.validate("s", &mut p);
            match want {
                None => assert!(p.is_empty(), "{c:?} gave {p}"),
                Some(w) => assert!(p.to_string().contains(w), "{c:?}: want {w:?}, got {p}"),
            }
        }
    }

    #[test]
    fn region_names_are_checked_by_shape() {
        for ok in ["us-east-1", "us-gov-west-1", "ap-southeast-4"] {
            assert!(valid_region(ok), "{ok}");
        }
        for bad in ["", "useast1", "US-EAST-1", "us-east", "eu-west-1 "] {
            assert!(!valid_region(bad), "{bad}");
        }
    }
}
