//! `qscale history`: a trace of the arrivals a real queue saw, read from
//! CloudWatch or Prometheus, for `qscale simulate`.
//!
//! The simulator answers "what would this policy do to my queue?" only as
//! well as its trace resembles the queue, and the best trace is the queue's
//! own past. This command reads it where it already is:
//!
//! - [`cloudwatch`]: an SQS queue's `NumberOfMessagesSent` (sum per
//!   minute), optionally its `ApproximateNumberOfMessagesVisible` at the
//!   start as a start backlog;
//! - [`prometheus`]: a PromQL arrival rate through `/api/v1/query_range`,
//!   one value per step;
//! - a scaler of a config file: its own source (an `sqs` source's queue in
//!   CloudWatch, a `prometheus` source's `arrival_rate_query`).
//!
//! Each gives one value per bin (a minute, a step); [`spread`] turns the
//! bins into whole arrivals per second, the [`Trace`] the simulator
//! replays, and [`History::to_csv`] writes it as the `t_seconds,arrivals`
//! file `qscale simulate --trace` reads. Bins without data are never read
//! as "no arrivals" silently: leading and trailing ones (a queue younger
//! than the range, CloudWatch's few minutes of lag) are trimmed with a
//! warning, and gaps inside the data are an error unless `--fill-gaps zero`
//! asks to read them as no arrivals (again with a warning naming them).
//!
//! It is a command (layer 5): it uses the process-wide clients and the
//! sources' own config types, so it reads with the same endpoints,
//! credentials and error mapping as the daemon.

pub mod cloudwatch;
pub mod inline;
pub mod prometheus;
pub mod spread;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};

use crate::clients::aws::AwsConfigs;
use crate::config::{Config, ConfigError};
use crate::contract::SourceError;
use crate::sources::SourceConfig;
use crate::sources::prometheus::PrometheusSourceConfig;
use crate::sources::sqs::SqsSourceConfig;
use crate::world::trace::{MAX_TRACE_SECONDS, Trace};
use spread::{Coverage, Gap};

/// Why a history could not be imported. One line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The range flags do not describe a usable range.
    #[error("bad range: {0}")]
    Range(String),
    /// Bins without data inside the range, and no `--fill-gaps`.
    #[error(
        "{what} has {count} gap(s) without data, {missing} in all, the first from {first} \
         to {first_end}; give --fill-gaps zero to read gaps as no arrivals"
    )]
    Gaps {
        what: String,
        count: usize,
        missing: String,
        first: String,
        first_end: String,
    },
    /// CloudWatch has nothing and SQS says the queue does not exist.
    #[error("queue {queue} does not exist ({detail}) and CloudWatch has no data for it")]
    NoSuchQueue { queue: String, detail: String },
    /// The source answered, but with no data in the range.
    #[error("{what} has no data from {from} to {to}{hint}")]
    Empty {
        what: String,
        from: String,
        to: String,
        hint: &'static str,
    },
    /// Prometheus refused the PromQL.
    #[error("Prometheus rejected the query {query:?}: {message}")]
    PromQl { query: String, message: String },
    /// The peer failed: unreachable, timed out, denied, or answered
    /// something that is not its API.
    #[error("{0}")]
    Source(#[from] SourceError),
    /// The flags or the scaler's source do not say what to read.
    #[error("{0}")]
    Usage(String),
    /// The config file of `qscale history scaler` is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The trace could not be written.
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

impl HistoryError {
    /// A bounded label for the error's kind (the same set of words as the
    /// sources' labels where the peer failed).
    pub fn metric_label(&self) -> &'static str {
        match self {
            HistoryError::Range(_) => "range",
            HistoryError::Gaps { .. } => "gaps",
            HistoryError::NoSuchQueue { .. } => "not_found",
            HistoryError::Empty { .. } => "empty",
            HistoryError::PromQl { .. } => "promql",
            HistoryError::Source(e) => e.metric_label(),
            HistoryError::Usage(_) => "usage",
            HistoryError::Config(_) => "config",
            HistoryError::Write { .. } => "write",
        }
    }
}

/// A range of wall-clock time, whole bins: `start` inclusive, `end`
/// exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: SystemTime,
    pub end: SystemTime,
}

impl Range {
    /// The range the flags ask for, `now` being the current time: `--last
    /// D` ends now, `--from` without `--to` too. Both ends are rounded down
    /// to whole `bin`s since the Unix epoch (CloudWatch's minutes,
    /// Prometheus' steps), so bins line up with the source's own.
    pub fn from_flags(
        last: Option<Duration>,
        from: Option<&str>,
        to: Option<&str>,
        bin: Duration,
        now: SystemTime,
    ) -> Result<Range, HistoryError> {
        let bad = |m: String| HistoryError::Range(m);
        let parse = |flag: &str, v: &str| {
            humantime::parse_rfc3339_weak(v.trim()).map_err(|e| {
                bad(format!(
                    "{flag} {v:?} is not an RFC 3339 time like 2026-01-01T00:00:00Z ({e})"
                ))
            })
        };
        let (start, end) = match (last, from, to) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(bad("give --last, or --from (and --to), not both".into()));
            }
            (Some(d), None, None) => {
                if d.is_zero() {
                    return Err(bad("--last must be longer than 0".into()));
                }
                (now.checked_sub(d).unwrap_or(UNIX_EPOCH), now)
            }
            (None, Some(f), t) => {
                let start = parse("--from", f)?;
                let end = match t {
                    Some(t) => parse("--to", t)?,
                    None => now,
                };
                (start, end)
            }
            (None, None, Some(_)) => return Err(bad("--to needs --from".into())),
            (None, None, None) => {
                return Err(bad(
                    "say which time to read: --last 7d, or --from 2026-01-01T00:00:00Z [--to ...]"
                        .into(),
                ));
            }
        };
        if start > now {
            return Err(bad(format!(
                "--from {} is in the future",
                humantime::format_rfc3339_seconds(start)
            )));
        }
        let (start, end) = (floor_to(start, bin), floor_to(end, bin));
        if end <= start {
            return Err(bad(format!(
                "it ends ({}) before it starts ({}), or spans less than one {} bin",
                humantime::format_rfc3339_seconds(end),
                humantime::format_rfc3339_seconds(start),
                humantime::format_duration(bin)
            )));
        }
        let len = end.duration_since(start).unwrap_or_default();
        if len.as_secs() > MAX_TRACE_SECONDS {
            return Err(bad(format!(
                "{} is longer than the 31 days the simulator replays",
                humantime::format_duration(len)
            )));
        }
        Ok(Range { start, end })
    }

    /// Number of whole `bin`s in the range.
    pub fn bins(&self, bin: Duration) -> usize {
        let len = self.end.duration_since(self.start).unwrap_or_default();
        (len.as_secs() / bin.as_secs().max(1)) as usize
    }
}

/// `t` rounded down to a whole `bin` since the Unix epoch.
fn floor_to(t: SystemTime, bin: Duration) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let b = bin.as_secs().max(1);
    UNIX_EPOCH + Duration::from_secs(secs / b * b)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// What to do with bins that have no data between the first and the last
/// that have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FillGaps {
    /// Read them as no arrivals (with a warning naming them).
    Zero,
}

/// One value per bin of a range, as a source answered; `None` where it had
/// no data.
#[derive(Debug, Clone, PartialEq)]
pub struct Bins {
    /// What was read, for messages: `CloudWatch NumberOfMessagesSent of
    /// queue jobs`.
    pub what: String,
    pub range: Range,
    /// Width of one bin.
    pub bin: Duration,
    /// Messages arrived in each bin.
    pub messages: Vec<Option<f64>>,
    /// Messages waiting at the start of each bin, when asked for.
    pub backlog: Option<Vec<Option<f64>>>,
    /// Calls made to the source.
    pub calls: u64,
}

/// An imported history: the trace and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Whole arrivals per second from `start`, start backlog included.
    pub trace: Trace,
    /// Wall-clock time of `t_seconds = 0`.
    pub start: SystemTime,
    /// Width of the source's bins.
    pub bin: Duration,
    /// Messages waiting at `start`, added to the arrivals of second 0.
    pub start_backlog: Option<u64>,
    /// What was read.
    pub what: String,
    /// Trimmed ends and filled gaps, one line each.
    pub warnings: Vec<String>,
    /// Calls made to the source.
    pub calls: u64,
}

impl History {
    /// One line: what was read, how long from when, how many messages
    /// (and of them the start backlog), in how many calls.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} from {}, {} messages{}, {} call(s)",
            self.what,
            humantime::format_duration(Duration::from_secs(self.trace.len_seconds())),
            rfc3339(self.start),
            self.trace.total(),
            self.start_backlog
                .map(|b| format!(" ({b} of them the start backlog)"))
                .unwrap_or_default(),
            self.calls
        )
    }

    /// Trim, check the gaps and spread `bins` into a history.
    pub fn from_bins(bins: Bins, fill: Option<FillGaps>) -> Result<History, HistoryError> {
        let Bins {
            what,
            range,
            bin,
            messages,
            backlog,
            calls,
        } = bins;
        let at = |i: usize| range.start + bin * i as u32;
        let Some(cov) = Coverage::of(&messages) else {
            return Err(HistoryError::Empty {
                what,
                from: rfc3339(range.start),
                to: rfc3339(range.end),
                hint: "",
            });
        };
        let span = |from: usize, len: usize| {
            format!(
                "{} to {} ({})",
                rfc3339(at(from)),
                rfc3339(at(from + len)),
                humantime::format_duration(bin * len as u32)
            )
        };
        let mut warnings = Vec::new();
        if cov.first > 0 {
            warnings.push(format!(
                "{what}: no data from {}; the trace starts at {}",
                span(0, cov.first),
                rfc3339(at(cov.first))
            ));
        }
        if cov.end < messages.len() {
            warnings.push(format!(
                "{what}: no data from {}; the trace ends at {}",
                span(cov.end, messages.len() - cov.end),
                rfc3339(at(cov.end))
            ));
        }
        if let Some(&Gap { first, len }) = cov.gaps.first() {
            match fill {
                None => {
                    return Err(HistoryError::Gaps {
                        what,
                        count: cov.gaps.len(),
                        missing: humantime::format_duration(bin * cov.missing() as u32).to_string(),
                        first: rfc3339(at(first)),
                        first_end: rfc3339(at(first + len)),
                    });
                }
                Some(FillGaps::Zero) => {
                    let shown: Vec<String> = cov
                        .gaps
                        .iter()
                        .take(5)
                        .map(|g| span(g.first, g.len))
                        .collect();
                    warnings.push(format!(
                        "{what}: {} gap(s) read as no arrivals: {}{}",
                        cov.gaps.len(),
                        shown.join(", "),
                        if cov.gaps.len() > 5 { ", ..." } else { "" }
                    ));
                }
            }
        }
        let kept: Vec<f64> = messages[cov.first..cov.end]
            .iter()
            .map(|m| m.unwrap_or(0.0))
            .collect();
        let mut per_second = spread::spread(&kept, bin.as_secs());
        let start_backlog = match backlog {
            None => None,
            Some(b) => match b.get(cov.first).copied().flatten() {
                Some(v) => Some(v.max(0.0).round() as u64),
                None => {
                    warnings.push(format!(
                        "no backlog datapoint at {}; the trace starts with an empty queue",
                        rfc3339(at(cov.first))
                    ));
                    None
                }
            },
        };
        if let (Some(b), Some(first)) = (start_backlog, per_second.first_mut()) {
            *first += b;
        }
        Ok(History {
            trace: Trace {
                per_second,
                label: what.clone(),
            },
            start: at(cov.first),
            bin,
            start_backlog,
            what,
            warnings,
            calls,
        })
    }

    /// The trace as `qscale simulate --trace` reads it: comment lines
    /// saying where it came from, a header, then one row per `resolution`
    /// (the sum of its seconds). With a start backlog the first bin is
    /// written per second, so the backlog stays in second 0 when the file
    /// is read back (a row's messages are spread over the row).
    pub fn to_csv(&self, resolution: Duration) -> String {
        let mut out = format!(
            "# qscale history: {}\n# t_seconds = 0 is {}; {} of data\n",
            self.what,
            rfc3339(self.start),
            humantime::format_duration(Duration::from_secs(self.trace.len_seconds()))
        );
        if let Some(b) = self.start_backlog {
            out.push_str(&format!(
                "# start backlog: {b} messages waiting at t = 0, counted as arrivals in second 0\n"
            ));
        }
        out.push_str("t_seconds,arrivals\n");
        let first = if self.start_backlog.is_some() {
            self.bin.as_secs() as usize
        } else {
            0
        };
        let s = &self.trace.per_second;
        for (t, w) in csv_rows(s.len(), first, resolution.as_secs() as usize) {
            out.push_str(&format!("{t},{}\n", s[t..t + w].iter().sum::<u64>()));
        }
        out
    }
}

/// The `(t_seconds, width)` rows of a CSV of `len` seconds: one per second
/// for the first `per_second` seconds, then `resolution` wide. A reader
/// takes each row's width from the next row and the last row's from the
/// one before it, so where the last width would be read wrong (a short
/// last row, a single wide one) the end is written per second.
fn csv_rows(len: usize, per_second: usize, resolution: usize) -> Vec<(usize, usize)> {
    let resolution = resolution.max(1);
    let mut rows = Vec::new();
    let mut t = 0;
    while t < len {
        let w = if t < per_second {
            1
        } else {
            resolution.min(len - t)
        };
        rows.push((t, w));
        t += w;
    }
    let n = rows.len();
    let misread = match n {
        0 => false,
        1 => rows[0].1 != 1,
        _ => rows[n - 1].1 != rows[n - 2].1,
    };
    if misread {
        let mut tail = rows.split_off(n - 1);
        if tail[0].1 == 1 && n >= 2 {
            tail.insert(0, rows.remove(n - 2));
        }
        for (t, w) in tail {
            rows.extend((t..t + w).map(|s| (s, 1)));
        }
    }
    rows
}

/// `qscale history`: write a trace CSV of what a queue saw.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub source: HistorySource,
}

/// Where the history comes from.
#[derive(Debug, Clone, Subcommand)]
pub enum HistorySource {
    /// An SQS queue's NumberOfMessagesSent in CloudWatch, per minute.
    Cloudwatch(CloudWatchArgs),
    /// A PromQL arrival rate (messages per second) through query_range.
    Prometheus(PrometheusArgs),
    /// A scaler's own source: an sqs source's queue in CloudWatch, or a
    /// prometheus source's arrival_rate_query.
    Scaler(ScalerArgs),
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 60s, 7d, 12h)"))
}

/// The flags every history source takes: the range and the output.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Read the last D, e.g. `7d`, up to now.
    #[arg(long, value_parser = parse_duration)]
    pub last: Option<Duration>,

    /// Start of the range, RFC 3339, e.g. `2026-01-01T00:00:00Z`.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,

    /// End of the range, RFC 3339 (default: now).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,

    /// Read bins without data between the first and the last with data as
    /// no arrivals, with a warning, instead of refusing the range.
    #[arg(long, value_enum)]
    pub fill_gaps: Option<FillGaps>,

    /// Write the trace to this file (default: standard output).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Row width of the CSV, e.g. `1s` for one row per second (default:
    /// the source's bin, a minute or the step).
    #[arg(long, value_parser = parse_duration)]
    pub resolution: Option<Duration>,

    /// How long one call to the source may take.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
}

/// `qscale history cloudwatch`.
#[derive(Debug, Clone, Args)]
pub struct CloudWatchArgs {
    /// The queue, by URL (`https://sqs.us-east-1.amazonaws.com/123456789012/jobs`)
    /// or by name.
    #[arg(long)]
    pub queue: String,

    /// The 12-digit account that owns a queue given by name (default: the
    /// caller's); used only to check that the queue exists.
    #[arg(long)]
    pub account_id: Option<String>,

    /// AWS region (default: from the queue URL, else the AWS chain).
    #[arg(long)]
    pub region: Option<String>,

    /// Custom endpoint for SQS and CloudWatch (VPC endpoint, moto).
    #[arg(long)]
    pub endpoint_url: Option<String>,

    /// Also read ApproximateNumberOfMessagesVisible at the start and add it
    /// to the arrivals of second 0.
    #[arg(long)]
    pub start_backlog: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// `qscale history prometheus`.
#[derive(Debug, Clone, Args)]
pub struct PrometheusArgs {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus:9090`.
    #[arg(long)]
    pub url: String,

    /// PromQL giving the arrival rate in messages per second, e.g.
    /// `sum(rate(jobs_enqueued_total[1m]))`; match its range to --step.
    #[arg(long)]
    pub query: String,

    /// Evaluate the rate every STEP; each value counts for the STEP before
    /// it.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub step: Duration,

    /// Environment variable holding a bearer token.
    #[arg(long)]
    pub token_env: Option<String>,

    /// File holding a bearer token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,

    /// User for HTTP basic authentication.
    #[arg(long)]
    pub username: Option<String>,

    /// Environment variable holding the basic-auth password.
    #[arg(long)]
    pub password_env: Option<String>,

    /// File holding the basic-auth password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,

    /// Tenant for Mimir or Cortex (`X-Scope-OrgID`).
    #[arg(long)]
    pub tenant: Option<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// `qscale history scaler`.
#[derive(Debug, Clone, Args)]
pub struct ScalerArgs {
    /// Config file holding the scaler.
    #[arg(long)]
    pub config: PathBuf,

    /// The scaler (default: the only one in the file).
    #[arg(long)]
    pub scaler: Option<String>,

    /// For an sqs source: also read the start backlog (see `cloudwatch`).
    #[arg(long)]
    pub start_backlog: bool,

    /// For a prometheus source: the step of the rate.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub step: Duration,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// What to read, resolved from any of the three forms.
#[derive(Debug, Clone)]
pub enum Plan {
    CloudWatch {
        sqs: SqsSourceConfig,
        start_backlog: bool,
    },
    Prometheus {
        prometheus: PrometheusSourceConfig,
        step: Duration,
    },
}

impl Plan {
    /// The source's bin width.
    pub fn bin(&self) -> Duration {
        match self {
            Plan::CloudWatch { .. } => crate::clients::cloudwatch::PERIOD,
            Plan::Prometheus { step, .. } => *step,
        }
    }

    /// What a scaler's source can give as history.
    pub fn for_source(
        source: &SourceConfig,
        start_backlog: bool,
        step: Duration,
    ) -> Result<Plan, HistoryError> {
        match source {
            SourceConfig::Sqs(s) => Ok(Plan::CloudWatch {
                sqs: s.clone(),
                start_backlog,
            }),
            SourceConfig::Prometheus(p) => match &p.arrival_rate_query {
                Some(q) => Ok(Plan::Prometheus {
                    prometheus: PrometheusSourceConfig {
                        query: q.clone(),
                        ..p.clone()
                    },
                    step,
                }),
                None => Err(HistoryError::Usage(
                    "the scaler's prometheus source has no arrival_rate_query to read the \
                     history from; use `qscale history prometheus --query ...`"
                        .into(),
                )),
            },
            other => Err(HistoryError::Usage(format!(
                "history can be read from an sqs or prometheus source, not {}; export \
                 a trace CSV of the queue's arrivals instead",
                crate::sources::SourceSpec::kind(other.spec())
            ))),
        }
    }

    /// Check the plan before any call.
    fn validate(&self) -> Result<(), HistoryError> {
        let mut p = crate::validate::Problems::default();
        match self {
            Plan::CloudWatch { sqs, .. } => {
                crate::sources::SourceSpec::validate(sqs, "queue", &mut p)
            }
            Plan::Prometheus { prometheus, step } => {
                crate::sources::SourceSpec::validate(prometheus, "prometheus", &mut p);
                if step.as_secs() == 0 || step.subsec_nanos() != 0 {
                    p.push("--step", "must be a whole number of seconds, at least 1s");
                }
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(HistoryError::Usage(p.0.join("; ")))
        }
    }

    /// Read the bins of `range` from the source.
    pub async fn read(
        &self,
        range: Range,
        aws: &AwsConfigs,
        timeout: Duration,
    ) -> Result<Bins, HistoryError> {
        self.validate()?;
        match self {
            Plan::CloudWatch { sqs, start_backlog } => {
                cloudwatch::read(sqs, range, *start_backlog, aws, timeout).await
            }
            Plan::Prometheus { prometheus, step } => {
                prometheus::read(prometheus, range, *step, timeout).await
            }
        }
    }
}

/// The plan of a `qscale history` command line, and its common flags.
pub fn plan(args: &HistoryArgs) -> Result<(Plan, &CommonArgs), HistoryError> {
    match &args.source {
        HistorySource::Cloudwatch(c) => {
            let by_url = c.queue.contains("://");
            let sqs = SqsSourceConfig {
                queue_url: by_url.then(|| c.queue.clone()),
                queue_name: (!by_url).then(|| c.queue.clone()),
                account_id: c.account_id.clone(),
                region: c.region.clone(),
                endpoint_url: c.endpoint_url.clone(),
                count_in_flight: true,
                count_delayed: false,
                cloudwatch: true,
                max_staleness: Duration::from_secs(300),
                dead_letter_queue_url: None,
            };
            Ok((
                Plan::CloudWatch {
                    sqs,
                    start_backlog: c.start_backlog,
                },
                &c.common,
            ))
        }
        HistorySource::Prometheus(p) => {
            let prometheus = PrometheusSourceConfig {
                url: p.url.clone(),
                query: p.query.clone(),
                in_flight_query: None,
                oldest_age_query: None,
                arrival_rate_query: None,
                empty_as_zero: false,
                token_env: p.token_env.clone(),
                token_file: p.token_file.clone(),
                username: p.username.clone(),
                password_env: p.password_env.clone(),
                password_file: p.password_file.clone(),
                tenant: p.tenant.clone(),
                count_in_flight: false,
            };
            Ok((
                Plan::Prometheus {
                    prometheus,
                    step: p.step,
                },
                &p.common,
            ))
        }
        HistorySource::Scaler(s) => {
            let cfg = Config::load(&s.config)?;
            let scaler = pick_scaler(&cfg, s.scaler.as_deref(), &s.config)?;
            let Some(source) = &scaler.source else {
                return Err(HistoryError::Usage(format!(
                    "scaler {:?} drains several queues (sources); read each queue's history \
                     on its own with `qscale history sqs` or `qscale history prometheus`",
                    scaler.name
                )));
            };
            Ok((
                Plan::for_source(source, s.start_backlog, s.step)?,
                &s.common,
            ))
        }
    }
}

/// The scaler named `name`, or the only one of the file.
pub fn pick_scaler<'a>(
    cfg: &'a Config,
    name: Option<&str>,
    path: &std::path::Path,
) -> Result<&'a crate::config::ScalerConfig, HistoryError> {
    let names = || {
        cfg.scalers
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => cfg.scaler(n).ok_or_else(|| {
            HistoryError::Usage(format!(
                "{}: no scaler named {n:?}; the file has {}",
                path.display(),
                names()
            ))
        }),
        None if cfg.scalers.len() == 1 => Ok(&cfg.scalers[0]),
        None => Err(HistoryError::Usage(format!(
            "{} has several scalers ({}); pick one with --scaler",
            path.display(),
            names()
        ))),
    }
}

/// Read a history: the range from the flags (at `now`), the bins from the
/// source, then trim, gap check and spread.
pub async fn import(
    plan: &Plan,
    common: &CommonArgs,
    aws: &AwsConfigs,
    now: SystemTime,
) -> Result<History, HistoryError> {
    let range = Range::from_flags(
        common.last,
        common.from.as_deref(),
        common.to.as_deref(),
        plan.bin(),
        now,
    )?;
    let bins = plan.read(range, aws, common.timeout).await?;
    History::from_bins(bins, common.fill_gaps)
}

/// Run `qscale history`: import, write the CSV to `--output` or `out`, and
/// put the warnings and a summary line on `err`.
pub async fn execute(
    args: &HistoryArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<History, HistoryError> {
    execute_with(args, &AwsConfigs::new(), SystemTime::now(), out, err).await
}

/// Read a history for `simulate`/`tune --trace history:...`: as
/// [`execute`], but the trace stays in memory; the warnings and a summary
/// line go to `err`.
pub async fn read(args: &HistoryArgs, err: &mut dyn Write) -> Result<History, HistoryError> {
    let (h, _) = import_warned(args, &AwsConfigs::new(), SystemTime::now(), err).await?;
    let _ = writeln!(err, "{}", h.summary());
    Ok(h)
}

/// Plan and import what `args` ask for, with each warning on `err`.
async fn import_warned<'a>(
    args: &'a HistoryArgs,
    aws: &AwsConfigs,
    now: SystemTime,
    err: &mut dyn Write,
) -> Result<(History, &'a CommonArgs), HistoryError> {
    let (plan, common) = plan(args)?;
    let h = import(&plan, common, aws, now).await?;
    for w in &h.warnings {
        let _ = writeln!(err, "warning: {w}");
    }
    Ok((h, common))
}

/// [`execute`] with the AWS configs (credentials) and the current time
/// given, for tests.
pub async fn execute_with(
    args: &HistoryArgs,
    aws: &AwsConfigs,
    now: SystemTime,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<History, HistoryError> {
    let (h, common) = import_warned(args, aws, now, err).await?;
    let csv = h.to_csv(common.resolution.unwrap_or(h.bin));
    let dest = match &common.output {
        Some(path) => {
            std::fs::write(path, &csv).map_err(|e| HistoryError::Write {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            path.display().to_string()
        }
        None => {
            out.write_all(csv.as_bytes())
                .map_err(|e| HistoryError::Write {
                    path: PathBuf::from("<stdout>"),
                    reason: e.to_string(),
                })?;
            "standard output".to_string()
        }
    };
    let _ = writeln!(err, "{}; written to {dest}", h.summary());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const MIN: Duration = Duration::from_secs(60);
    const NOW: u64 = 1_767_225_600 + 3_600 * 5 + 42; // 2026-01-01T05:00:42Z

    #[test]
    fn range_flags_table() {
        type Want = Result<(u64, u64), &'static str>;
        let d = |s: &str| Some(humantime::parse_duration(s).unwrap());
        type Case = (
            Option<Duration>,
            Option<&'static str>,
            Option<&'static str>,
            Want,
        );
        let cases: Vec<Case> = vec![
            (d("1h"), None, None, Ok((NOW - 42 - 3600, NOW - 42))),
            (
                None,
                Some("2026-01-01T00:00:30Z"),
                Some("2026-01-01T02:00:00Z"),
                Ok((1_767_225_600, 1_767_225_600 + 7200)),
            ),
            (
                None,
                Some("2026-01-01T04:00:00Z"),
                None,
                Ok((1_767_225_600 + 4 * 3600, NOW - 42)),
            ),
            (d("1h"), Some("2026-01-01T00:00:00Z"), None, Err("not both")),
            (
                None,
                None,
                Some("2026-01-01T00:00:00Z"),
                Err("--to needs --from"),
            ),
            (None, None, None, Err("say which time to read")),
            (None, Some("yesterday"), None, Err("not an RFC 3339 time")),
            (
                None,
                Some("2026-01-01T03:00:00Z"),
                Some("2026-01-01T02:00:00Z"),
                Err("before it starts"),
            ),
            (
                None,
                Some("2026-01-01T03:00:00Z"),
                Some("2026-01-01T03:00:59Z"),
                Err("less than one 1m bin"),
            ),
            (
                None,
                Some("2026-02-01T00:00:00Z"),
                None,
                Err("in the future"),
            ),
            (d("32days"), None, None, Err("longer than the 31 days")),
            (d("0s"), None, None, Err("longer than 0")),
        ];
        for (last, from, to, want) in cases {
            let got = Range::from_flags(last, from, to, MIN, at(NOW));
            let label = format!("{last:?} {from:?} {to:?}");
            match (got, want) {
                (Ok(r), Ok((s, e))) => assert_eq!(
                    r,
                    Range {
                        start: at(s),
                        end: at(e)
                    },
                    "{label}"
                ),
                (Err(e), Err(text)) => {
                    assert_eq!(e.metric_label(), "range", "{label}");
                    assert!(e.to_string().contains(text), "{label}: want {text:?}: {e}");
                }
                (g, w) => panic!("{label}: got {g:?}, want {w:?}"),
            }
        }
    }

    fn bins(messages: Vec<Option<f64>>, backlog: Option<Vec<Option<f64>>>) -> Bins {
        let n = messages.len() as u64;
        Bins {
            what: "test series".into(),
            range: Range {
                start: at(6000),
                end: at(6000 + 60 * n),
            },
            bin: MIN,
            messages,
            backlog,
            calls: 1,
        }
    }

    #[test]
    fn leading_and_trailing_minutes_without_data_are_trimmed_with_a_warning() {
        let h = History::from_bins(bins(vec![None, Some(60.0), Some(0.0), None], None), None)
            .expect("imports");
        assert_eq!(h.start, at(6060));
        assert_eq!(h.trace.len_seconds(), 120);
        assert_eq!(h.trace.total(), 60);
        assert_eq!(h.warnings.len(), 2, "{:?}", h.warnings);
        assert!(
            h.warnings[0].contains("the trace starts at"),
            "{:?}",
            h.warnings
        );
        assert!(
            h.warnings[1].contains("the trace ends at"),
            "{:?}",
            h.warnings
        );
    }

    #[test]
    fn a_gap_inside_the_data_is_refused_naming_where_it_is() {
        let e = History::from_bins(
            bins(
                vec![Some(1.0), None, None, Some(2.0), None, Some(1.0)],
                None,
            ),
            None,
        )
        .expect_err("gaps");
        assert_eq!(e.metric_label(), "gaps");
        let text = e.to_string();
        assert!(
            text.contains("2 gap(s)") && text.contains("3m in all"),
            "{text}"
        );
        assert!(
            text.contains("from 1970-01-01T01:41:00Z to 1970-01-01T01:43:00Z"),
            "{text}"
        );
        assert!(text.contains("--fill-gaps zero"), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn fill_gaps_zero_reads_gaps_as_no_arrivals_and_says_so() {
        let h = History::from_bins(
            bins(vec![Some(60.0), None, Some(120.0)], None),
            Some(FillGaps::Zero),
        )
        .expect("imports");
        assert_eq!(h.trace.per_second.len(), 180);
        assert!(h.trace.per_second[60..120].iter().all(|&c| c == 0));
        assert_eq!(h.trace.total(), 180);
        assert!(
            h.warnings
                .iter()
                .any(|w| w.contains("1 gap(s) read as no arrivals"))
        );
    }

    #[test]
    fn no_data_at_all_is_an_empty_history_error() {
        let e = History::from_bins(bins(vec![None, None], None), Some(FillGaps::Zero))
            .expect_err("empty");
        assert_eq!(e.metric_label(), "empty");
        assert!(
            e.to_string().contains("test series has no data from"),
            "{e}"
        );
    }

    #[test]
    fn the_start_backlog_arrives_in_second_0_and_stays_there_in_the_csv() {
        let h = History::from_bins(
            bins(
                vec![None, Some(120.0), Some(60.0)],
                Some(vec![Some(9.0), Some(500.0), Some(7.0)]),
            ),
            None,
        )
        .expect("imports");
        assert_eq!(h.start_backlog, Some(500));
        assert_eq!(h.trace.per_second[0], 502);
        assert_eq!(h.trace.total(), 680);
        let csv = h.to_csv(MIN);
        assert!(csv.contains("# start backlog: 500 messages"), "{csv}");
        let back = Trace::parse_csv(&csv, std::path::Path::new("h.csv")).expect("reads back");
        assert_eq!(back.per_second, h.trace.per_second);
    }

    #[test]
    fn csv_rows_are_always_read_back_with_their_own_widths() {
        // Each row's width as a reader infers it: up to the next row, the
        // last as wide as the one before it (a single row: 1 s).
        let inferred = |rows: &[(usize, usize)]| -> Vec<usize> {
            let mut w: Vec<usize> = rows.windows(2).map(|p| p[1].0 - p[0].0).collect();
            w.push(if rows.len() > 1 { w[w.len() - 1] } else { 1 });
            w
        };
        for len in [1, 2, 59, 60, 61, 120, 121, 179, 180, 600] {
            for per_second in [0, 60] {
                for res in [1, 60, 420] {
                    let rows = csv_rows(len, per_second, res);
                    let label = format!("len {len}, per_second {per_second}, res {res}");
                    assert_eq!(rows.iter().map(|r| r.1).sum::<usize>(), len, "{label}");
                    let widths: Vec<usize> = rows.iter().map(|r| r.1).collect();
                    assert_eq!(inferred(&rows), widths, "{label}: {rows:?}");
                }
            }
        }
        assert_eq!(csv_rows(180, 0, 60), vec![(0, 60), (60, 60), (120, 60)]);
    }

    #[test]
    fn the_csv_has_one_row_per_minute_that_reads_back_as_the_same_seconds() {
        let h = History::from_bins(bins(vec![Some(7.0), Some(0.0), Some(61.0)], None), None)
            .expect("imports");
        let csv = h.to_csv(MIN);
        let rows: Vec<&str> = csv.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(rows, vec!["t_seconds,arrivals", "0,7", "60,0", "120,61"]);
        let back = Trace::parse_csv(&csv, std::path::Path::new("h.csv")).expect("reads back");
        assert_eq!(back.per_second, h.trace.per_second);
        let per_second = h.to_csv(Duration::from_secs(1));
        assert_eq!(
            per_second.lines().filter(|l| !l.starts_with('#')).count(),
            181
        );
    }
}
