//! The configuration file: its serde types, loading, and validation.
//!
//! A user tunes qscale through one file (TOML or YAML, chosen by the file's
//! extension) with one `[[scaler]]` table per queue/target pair (or per
//! worker pool and the queues it drains, `[[scaler.sources]]`). The file is
//! read with the `config` crate so that any field can be overridden from the
//! environment with a `QSCALE__` prefix and `__` as the path separator
//! (`QSCALE__SERVER__LISTEN=127.0.0.1:9100`).
//!
//! Loading is two-phase on purpose: serde catches shape errors (unknown
//! fields, wrong types, unparsable durations) and stops at the first one, as
//! serde must; [`Config::validate`] then checks ranges and cross-field rules
//! and collects *every* problem, each named by its field path
//! (`scaler[1].policy.max_replicas: must be >= min_replicas (3)`), so a user
//! fixes a broken file in one round.
//!
//! The `///` comments on the fields below are the user reference: they are
//! what `qscale schema` prints and what docs/configuration.md mirrors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::{Combine, PolicyConfig};
use crate::sources::SourceConfig;
use crate::targets::TargetConfig;
use crate::validate::{Problems, positive_duration};

/// Prefix of environment variables that override file values.
pub const ENV_PREFIX: &str = "QSCALE";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP server that serves /metrics, /healthz, /readyz, /status, each scaler's history and chart, and the HTML page at /.
    #[serde(default)]
    pub server: ServerConfig,

    /// Values every scaler inherits unless it sets its own.
    #[serde(default)]
    pub defaults: DefaultsConfig,

    /// Leader election among several qscale replicas (Kubernetes Leases).
    #[serde(default)]
    pub leader_election: LeaderElectionConfig,

    /// One entry per queue/target pair. In TOML, write `[[scaler]]` tables.
    #[serde(default, rename = "scaler")]
    pub scalers: Vec<ScalerConfig>,
}

/// Settings of the built-in HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on. Use `127.0.0.1:9090` to keep metrics
    /// and /status reachable only from the same host or pod (sidecar use).
    #[serde(default = "default_listen")]
    #[schemars(with = "String")]
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9090))
}

/// Defaults inherited by every scaler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultsConfig {
    /// How often each scaler samples its queue and decides, e.g. `"15s"`
    /// (default 5 s: one SQS GetQueueAttributes call per poll, about
    /// 518,000 a month per queue; CloudWatch is read at most once a minute
    /// whatever the poll).
    /// Each poll is jittered by up to 10 % so many scalers do not hit an API
    /// at the same instant.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll_interval: Duration,

    /// Longest time one sample (all calls to the queue's API) may take before
    /// it counts as failed, e.g. `"10s"`.
    #[serde(default = "default_sample_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub sample_timeout: Duration,

    /// Longest time reading or writing the target's replica count may take,
    /// retries included, e.g. `"10s"`.
    #[serde(default = "default_actuate_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub actuate_timeout: Duration,
}

impl Default for DefaultsConfig {
    fn default() -> Self {
        DefaultsConfig {
            poll_interval: default_poll_interval(),
            sample_timeout: default_sample_timeout(),
            actuate_timeout: default_actuate_timeout(),
        }
    }
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_sample_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_actuate_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Leader election: with several qscale replicas, only the holder of a
/// Kubernetes Lease changes replica counts; the others keep sampling so a
/// takeover acts at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// Turn leader election on. Off by default: a single replica actuates.
    #[serde(default)]
    pub enabled: bool,

    /// Name of the Lease object (with `shards > 1`, `<lease_name>-<index>`).
    #[serde(default = "default_lease_name")]
    pub lease_name: String,

    /// Namespace of the Lease. Default: `$POD_NAMESPACE`, else `default`.
    #[serde(default)]
    pub namespace: Option<String>,

    /// How long a Lease is valid without renewal, e.g. `"15s"`.
    #[serde(default = "default_lease_duration", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub lease_duration: Duration,

    /// The holder gives up (stops actuating) if it could not renew within
    /// this time, so it stops before the Lease can expire for others.
    #[serde(default = "default_renew_deadline", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub renew_deadline: Duration,

    /// How often to try to acquire or renew, e.g. `"2s"`.
    #[serde(default = "default_retry_period", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_period: Duration,

    /// Split scalers into this many shards by a stable hash of their name,
    /// each with its own Lease, so several replicas share a large fleet.
    #[serde(default = "default_shards")]
    pub shards: u32,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            enabled: false,
            lease_name: default_lease_name(),
            namespace: None,
            lease_duration: default_lease_duration(),
            renew_deadline: default_renew_deadline(),
            retry_period: default_retry_period(),
            shards: default_shards(),
        }
    }
}

fn default_lease_name() -> String {
    "qscale".to_string()
}
fn default_lease_duration() -> Duration {
    Duration::from_secs(15)
}
fn default_renew_deadline() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_period() -> Duration {
    Duration::from_secs(2)
}
fn default_shards() -> u32 {
    1
}

/// One queue (or several) and the workers that drain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScalerConfig {
    /// Unique name; the `scaler` label of every metric and the key in /status.
    pub name: String,

    /// Where the work waits: one queue. Give either this or `sources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceConfig>,

    /// Several queues drained by the same workers, e.g. a critical and a
    /// bulk queue: at least two `[[scaler.sources]]` tables, each a source
    /// table with a `name` and optionally its own signal settings. Give
    /// either this or `source`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<QueueConfig>,

    /// With `sources`: `sum` (default) sizes the pool for the sum of the
    /// queues' needs, as workers that take from every queue at once need;
    /// `max` for the largest need, for workers that drain the queues one
    /// after the other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combine: Option<Combine>,

    /// What drains it and gets resized.
    pub target: TargetConfig,

    /// How to turn what the source sees into a replica count.
    pub policy: PolicyConfig,

    /// Overrides `defaults.poll_interval` for this scaler.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub poll_interval: Option<Duration>,
}

/// One queue of a scaler that drains several (`[[scaler.sources]]`): a
/// source table (its `kind` and fields) plus the queue's name and its own
/// signal settings.
// The source's fields are flattened beside `name`. `deny_unknown_fields`
// cannot sit on a struct with a flattened field, but it need not: the
// internally tagged source enum receives every key this struct does not
// take and refuses the unknown ones (`tests/config_files.rs` pins that).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueueConfig {
    /// Short name of this queue, unique within the scaler, shown in reasons
    /// and /status and as the `queue` label of per-queue metrics: lowercase
    /// letters, digits, '-' and '_', at most 32 characters.
    pub name: String,

    /// This queue's own age objective, e.g. `"30s"` for a critical queue
    /// and `"10m"` for a bulk one; overrides `policy.max_message_age`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub max_message_age: Option<Duration>,

    /// This queue's backlog per replica; overrides
    /// `policy.messages_per_replica`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_replica: Option<f64>,

    /// Seconds one worker spends on one message of this queue; overrides
    /// `policy.throughput.seconds_per_message` (and turns the throughput
    /// signal on for this queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_per_message: Option<f64>,

    /// The queue: `kind` and that kind's fields, as in `[scaler.source]`.
    #[serde(flatten)]
    pub source: SourceConfig,
}

/// The longest queue name: it is a metric label value and a column in
/// reasons.
pub const MAX_QUEUE_NAME: usize = 32;

impl QueueConfig {
    /// The scaler's policy with this queue's own settings in place: what
    /// the signals of this queue read.
    pub fn policy(&self, base: &PolicyConfig) -> PolicyConfig {
        let mut p = base.clone();
        if let Some(a) = self.max_message_age {
            p.max_message_age = Some(a);
        }
        if let Some(m) = self.messages_per_replica {
            p.messages_per_replica = Some(m);
        }
        if let Some(s) = self.seconds_per_message {
            let mut t = p.throughput.take().unwrap_or_default();
            t.seconds_per_message = Some(s);
            p.throughput = Some(t);
        }
        p
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        if self.name.is_empty() || self.name.len() > MAX_QUEUE_NAME {
            p.push(
                format!("{path}.name"),
                format!("must be 1 to {MAX_QUEUE_NAME} characters"),
            );
        } else if !self
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
        {
            p.push(
                format!("{path}.name"),
                "use only lowercase letters, digits, '-' and '_'",
            );
        }
        if self.max_message_age.is_some_and(|a| a.is_zero()) {
            p.push(format!("{path}.max_message_age"), "must be greater than 0");
        }
        for (field, v) in [
            ("messages_per_replica", self.messages_per_replica),
            ("seconds_per_message", self.seconds_per_message),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                p.push(format!("{path}.{field}"), "must be a number > 0");
            }
        }
        self.source.validate(path, p);
    }
}

/// One queue of a scaler as the daemon runs it: the single `source`, or
/// one entry of `sources` with its own policy settings applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue<'a> {
    /// The entry's `name`; empty for the single `source`.
    pub name: &'a str,
    pub source: &'a SourceConfig,
    /// The policy this queue's signals read.
    pub policy: PolicyConfig,
}

impl ScalerConfig {
    /// The poll interval in force for this scaler.
    pub fn poll_interval(&self, defaults: &DefaultsConfig) -> Duration {
        self.poll_interval.unwrap_or(defaults.poll_interval)
    }

    /// Every queue this scaler watches, in the file's order: one for
    /// `source`, one per `sources` entry. Empty only for a config that
    /// failed validation.
    pub fn queues(&self) -> Vec<Queue<'_>> {
        match &self.source {
            Some(s) => vec![Queue {
                name: "",
                source: s,
                policy: self.policy.clone(),
            }],
            None => self
                .sources
                .iter()
                .map(|q| Queue {
                    name: &q.name,
                    source: &q.source,
                    policy: q.policy(&self.policy),
                })
                .collect(),
        }
    }

    /// Whether this scaler watches several queues (`sources`).
    pub fn is_multi_queue(&self) -> bool {
        self.source.is_none() && !self.sources.is_empty()
    }

    /// The source of queue `i`, in the order of [`ScalerConfig::queues`],
    /// without building that list.
    pub fn queue_source(&self, i: usize) -> Option<&SourceConfig> {
        match &self.source {
            Some(s) => (i == 0).then_some(s),
            None => self.sources.get(i).map(|q| &q.source),
        }
    }

    /// How the queues' needs combine (`sum` unless set).
    pub fn combine(&self) -> Combine {
        self.combine.unwrap_or_default()
    }

    /// The source kind for the `source` label of the scaler's status: the
    /// kind of its queue, or of all its queues when they share one, else
    /// `mixed`.
    pub fn source_kind(&self) -> &'static str {
        let mut kinds = self.queues().into_iter().map(|q| q.source.kind());
        match kinds.next() {
            None => "none",
            Some(first) if kinds.all(|k| k == first) => first,
            Some(_) => "mixed",
        }
    }

    /// A one-line description of what this scaler watches.
    pub fn describe_sources(&self) -> String {
        match &self.source {
            Some(s) => s.describe(),
            None => {
                let list: Vec<String> = self
                    .sources
                    .iter()
                    .map(|q| format!("{}: {}", q.name, q.source.describe()))
                    .collect();
                format!("{} of [{}]", self.combine().name(), list.join("; "))
            }
        }
    }

    /// The `source`/`sources`/`combine` rules of one scaler, at `at`.
    fn validate_sources(&self, at: &str, p: &mut Problems) {
        match (&self.source, self.sources.is_empty()) {
            (Some(s), true) => {
                s.validate(&format!("{at}.source"), p);
                if self.combine.is_some() {
                    p.push(
                        format!("{at}.combine"),
                        "only used with [[scaler.sources]] (several queues)",
                    );
                }
                self.policy.validate(&format!("{at}.policy"), p);
                return;
            }
            (Some(_), false) => {
                p.push(
                    at,
                    "give either source (one queue) or sources (several), not both",
                );
                return;
            }
            (None, true) => {
                p.push(
                    format!("{at}.source"),
                    "missing field (required): give source (one queue) or [[scaler.sources]] (several)",
                );
                return;
            }
            (None, false) => {}
        }
        if self.sources.len() < 2 {
            p.push(
                format!("{at}.sources"),
                "list at least two queues; for one queue use [scaler.source]",
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut queues: HashMap<(&'static str, String), usize> = HashMap::new();
        for (j, q) in self.sources.iter().enumerate() {
            let qp = format!("{at}.sources[{j}]");
            q.validate(&qp, p);
            if let Some(first) = names.insert(q.name.as_str(), j) {
                p.push(
                    format!("{qp}.name"),
                    format!("duplicate queue name {:?} (also sources[{first}])", q.name),
                );
            }
            if let Some(first) = queues.insert(q.source.identity(), j) {
                p.push(
                    &qp,
                    format!(
                        "the same queue as sources[{first}] ({}); its work would count twice",
                        q.source.describe()
                    ),
                );
            }
            if !q.policy(&self.policy).has_signal() {
                p.push(
                    &qp,
                    "no signal for this queue: set messages_per_replica, seconds_per_message or max_message_age here or in policy",
                );
            }
        }
        self.policy
            .validate_without_signals(&format!("{at}.policy"), p);
    }
}

/// Why a configuration could not be used. Each variant's text is one line a
/// user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The path does not exist or cannot be read.
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    /// The extension is neither TOML nor YAML.
    #[error("config file {path}: unknown format; use a .toml, .yaml or .yml extension")]
    UnknownFormat { path: PathBuf },
    /// The file has no content at all.
    #[error("config file {path} is empty; add at least one [[scaler]] table")]
    Empty { path: PathBuf },
    /// Syntax or shape error reported by the parser or serde.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error(
        "config file {path} is larger than the {} MiB limit; split the scalers over several qscale instances",
        MAX_CONFIG_BYTES >> 20
    )]
    TooLarge { path: PathBuf },
    /// A YAML alias (`*name`): refused, since nested aliases can expand a
    /// few lines into gigabytes.
    #[error(
        "config file {path}, line {line}: YAML aliases (*name) are not accepted, since a few nested ones can expand to gigabytes; write the value out"
    )]
    YamlAlias { path: PathBuf, line: usize },
    /// The file parsed but broke one or more rules; every problem is listed.
    #[error("{}", .0)]
    Invalid(Problems),
}

/// The largest config file qscale reads, on start and on reload: far above
/// any real file (10,000 short scalers take 2.9 MiB), far below what would
/// hurt the daemon.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The line of the first YAML alias in `text`, if any. Walks the parser's
/// events, which report an alias without expanding it, so the walk costs
/// one pass over the text whatever the file holds. A syntax error stops the
/// walk: the real parse reports it with its own message.
fn first_yaml_alias(text: &str) -> Option<usize> {
    let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((yaml_rust2::parser::Event::Alias(_), mark)) => return Some(mark.line()),
            Ok((yaml_rust2::parser::Event::StreamEnd, _)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

impl ConfigError {
    /// A bounded label for `qscale_config_reload_failures_total` and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ConfigError::Unreadable { .. } => "unreadable",
            ConfigError::UnknownFormat { .. } => "unknown_format",
            ConfigError::Empty { .. } => "empty",
            ConfigError::Parse { .. } => "parse",
            ConfigError::TooLarge { .. } => "too_large",
            ConfigError::YamlAlias { .. } => "yaml_alias",
            ConfigError::Invalid(_) => "invalid",
        }
    }

    /// Every problem as its own line, for `qscale check` and reload logs.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(p) => p.0.clone(),
            other => vec![other.to_string()],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Toml,
    Yaml,
}

fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "toml" => Some(Format::Toml),
        "yaml" | "yml" => Some(Format::Yaml),
        _ => None,
    }
}

impl Config {
    /// Read, parse, apply `QSCALE__` environment overrides and validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read;
        let unreadable = |e: std::io::Error| ConfigError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        // Read at most one byte past the limit: a huge file (or an endless
        // one, such as a device) is refused without being read whole.
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
            .map_err(unreadable)?;
        Self::from_str_with_env(&text, path, std::env::vars())
    }

    /// Parse configuration text as if it came from `path` (its extension picks
    /// the format), with the given environment for overrides, and validate it.
    pub fn from_str_with_env(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let format = format_of(path).ok_or_else(|| ConfigError::UnknownFormat {
            path: path.to_path_buf(),
        })?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        if text.trim().is_empty() {
            return Err(ConfigError::Empty {
                path: path.to_path_buf(),
            });
        }
        if format == Format::Yaml
            && let Some(line) = first_yaml_alias(text)
        {
            return Err(ConfigError::YamlAlias {
                path: path.to_path_buf(),
                line,
            });
        }
        let file_format = match format {
            Format::Toml => config::FileFormat::Toml,
            Format::Yaml => config::FileFormat::Yaml,
        };
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let parse_err = |e: config::ConfigError| ConfigError::Parse {
            path: path.to_path_buf(),
            message: tidy_parse_message(&e.to_string()),
        };
        let build = || {
            config::Config::builder()
                .add_source(config::File::from_str(text, file_format))
                .add_source(
                    config::Environment::with_prefix(ENV_PREFIX)
                        .prefix_separator("__")
                        .separator("__")
                        .try_parsing(true)
                        .source(Some(env.clone())),
                )
                .build()
        };
        let layered = build().map_err(parse_err)?;
        let cfg = deserialize_collecting(layered, build).map_err(|e| match e {
            Collected::Problems(p) => ConfigError::Invalid(p),
            Collected::Parse(e) => parse_err(e),
        })?;
        cfg.validate().map_err(ConfigError::Invalid)?;
        Ok(cfg)
    }

    /// Check ranges and cross-field rules; collect every problem.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut p = Problems::default();
        if self.scalers.is_empty() {
            p.push("scaler", "at least one [[scaler]] is required");
        }
        let d = &self.defaults;
        positive_duration(&mut p, "defaults.poll_interval", d.poll_interval);
        positive_duration(&mut p, "defaults.sample_timeout", d.sample_timeout);
        positive_duration(&mut p, "defaults.actuate_timeout", d.actuate_timeout);

        let le = &self.leader_election;
        if le.enabled {
            if le.lease_name.trim().is_empty() {
                p.push("leader_election.lease_name", "must not be empty");
            }
            if le.renew_deadline >= le.lease_duration {
                p.push(
                    "leader_election.renew_deadline",
                    format!(
                        "must be shorter than lease_duration ({})",
                        humantime::format_duration(le.lease_duration)
                    ),
                );
            }
            if le.retry_period.is_zero() || le.retry_period >= le.renew_deadline {
                p.push(
                    "leader_election.retry_period",
                    format!(
                        "must be > 0 and shorter than renew_deadline ({})",
                        humantime::format_duration(le.renew_deadline)
                    ),
                );
            }
            if le.shards == 0 {
                p.push("leader_election.shards", "must be >= 1");
            }
        }

        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, s) in self.scalers.iter().enumerate() {
            let at = format!("scaler[{i}]");
            if s.name.trim().is_empty() {
                p.push(format!("{at}.name"), "must not be empty");
            } else if !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            {
                p.push(
                    format!("{at}.name"),
                    "use only letters, digits, '-', '_', '.' and '/'",
                );
            } else if let Some(first) = seen.insert(s.name.as_str(), i) {
                p.push(
                    format!("{at}.name"),
                    format!("duplicate name {:?} (also scaler[{first}])", s.name),
                );
            }
            if let Some(pi) = s.poll_interval {
                positive_duration(&mut p, &format!("{at}.poll_interval"), pi);
            }
            s.validate_sources(&at, &mut p);
            s.target.validate(&format!("{at}.target"), &mut p);
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }

    /// The scaler with this name, if any.
    pub fn scaler(&self, name: &str) -> Option<&ScalerConfig> {
        self.scalers.iter().find(|s| s.name == name)
    }
}

/// The `config` crate prefixes errors in ways that repeat the path; keep the
/// parser's own words (which carry line and column) on one line.
/// At most this many unknown or mistyped fields are set aside and the file
/// read again; past it the problems found so far are reported.
const MAX_SET_ASIDE: usize = 64;

enum Collected {
    /// The first error could not be tied to one field: report it as is.
    Parse(config::ConfigError),
    /// Every unknown or mistyped field, then every rule the rest breaks.
    Problems(Problems),
}

/// Deserialize the layered config; when that fails on one field (unknown,
/// or a value of the wrong type or form), note the problem with its path,
/// set the field aside and read the rest again, so that one `qscale check`
/// lists every problem, the rules the remaining fields break included.
/// `deny_unknown_fields` stays strict: a set-aside field is still an error.
///
/// `rebuild` makes `layered` again for the error path: cloning it up front
/// for a config that is nearly always valid doubled the memory the parse
/// needs (tens of MB for 10 000 scalers, resident long after).
fn deserialize_collecting(
    layered: config::Config,
    rebuild: impl Fn() -> Result<config::Config, config::ConfigError>,
) -> Result<Config, Collected> {
    let mut err = match layered.try_deserialize::<Config>() {
        Ok(cfg) => return Ok(cfg),
        Err(e) => e,
    };
    let Ok(mut tree) = rebuild().and_then(|l| l.try_deserialize::<serde_json::Value>()) else {
        return Err(Collected::Parse(err));
    };
    let mut problems = Problems::default();
    let mut set_aside: Vec<String> = Vec::new();
    for _ in 0..MAX_SET_ASIDE {
        let missing = match &err {
            config::ConfigError::NotFound(key) => Some(tidy_key(key)),
            e => field_error(e).and_then(|(key, message)| {
                message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.split('`').next())
                    .map(|field| join_key(&key, field))
            }),
        };
        if let Some(full) = missing {
            // A required field: either set aside here (its own problem is
            // already listed) or truly absent; nothing more can be read.
            if !set_aside.contains(&full) {
                problems.push(full, "missing field (required)");
            }
            return Err(Collected::Problems(problems));
        }
        let Some((key, message)) = field_error(&err) else {
            break;
        };
        let (path, what) = match message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            Some(field) => (join_key(&key, field), message.clone()),
            None => (key.clone(), message.clone()),
        };
        if path.is_empty() || !remove_key(&mut tree, &path) {
            break;
        }
        problems.push(&path, what);
        set_aside.push(path);
        match config::Config::builder()
            .add_source(config::File::from_str(
                &tree.to_string(),
                config::FileFormat::Json,
            ))
            .build()
            .and_then(|c| c.try_deserialize::<Config>())
        {
            Ok(cfg) => {
                if let Err(more) = cfg.validate() {
                    // A rule about the table that held a set-aside field
                    // ("set at least one signal") may only be its echo.
                    problems.0.extend(more.0.into_iter().filter(|line| {
                        !set_aside.iter().any(|gone| {
                            line.split_once(": ")
                                .is_some_and(|(at, _)| gone.starts_with(&format!("{at}.")))
                        })
                    }));
                }
                return Err(Collected::Problems(problems));
            }
            Err(e) => err = e,
        }
    }
    if problems.is_empty() {
        Err(Collected::Parse(err))
    } else {
        problems.push("(file)", tidy_parse_message(&err.to_string()));
        Err(Collected::Problems(problems))
    }
}

/// The key path and serde message of an error about one field.
fn field_error(e: &config::ConfigError) -> Option<(String, String)> {
    match e {
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => match error.as_ref() {
            config::ConfigError::Message(m) => Some((tidy_key(key), m.clone())),
            inner => field_error(inner),
        },
        // Unknown fields of the top-level table carry no key.
        config::ConfigError::Message(m) => Some((String::new(), m.clone())),
        config::ConfigError::Type {
            key: Some(key),
            unexpected,
            expected,
            ..
        } => Some((
            tidy_key(key),
            format!("invalid type: {unexpected}, expected {expected}"),
        )),
        _ => None,
    }
}

/// `scaler[0]policy` (the config crate's form) as `scaler[0].policy`.
fn tidy_key(key: &str) -> String {
    tidy_parse_message(key)
}

fn join_key(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// Remove the value at `scaler[0].policy.x` from the tree; false when the
/// path leads nowhere.
fn remove_key(tree: &mut serde_json::Value, path: &str) -> bool {
    let mut steps: Vec<Result<&str, usize>> = Vec::new();
    for part in path.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            steps.push(Ok(name));
        }
        for idx in rest.split('[') {
            if let Some(Ok(i)) = idx.strip_suffix(']').map(str::parse::<usize>) {
                steps.push(Err(i));
            }
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut node = tree;
    for step in parents {
        let next = match (step, node) {
            (Ok(name), serde_json::Value::Object(m)) => m.get_mut(*name),
            (Err(i), serde_json::Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match (last, node) {
        (Ok(name), serde_json::Value::Object(m)) => m.remove(*name).is_some(),
        // An array element cannot go without shifting the others' paths:
        // replace it by null, which fails again; stop there.
        _ => false,
    }
}

fn tidy_parse_message(msg: &str) -> String {
    // Drop the source-snippet lines of TOML errors (`  |`, `3 | text`): the
    // line and column are already in the first line.
    let is_snippet = |l: &str| {
        let t = l.trim_start();
        t.starts_with('|')
            || t.split_once(" |")
                .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
    };
    let joined = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_snippet(l))
        .collect::<Vec<_>>()
        .join(": ");
    // The config crate writes `scaler[0]policy.x`; users write `scaler[0].policy.x`.
    let mut out = String::with_capacity(joined.len());
    let mut prev = ' ';
    for c in joined.chars() {
        if prev == ']' && c.is_ascii_alphabetic() {
            out.push('.');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// The JSON Schema of the configuration file, for editor completion.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or(serde_json::Value::Null)
}
