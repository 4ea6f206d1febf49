//! Redis source: a list used as a queue, or a stream read by a consumer
//! group.
//!
//! - `list` mode: `LLEN key` is the number of waiting jobs (Sidekiq-,
//!   RQ- and Celery-style queues). With the reliable-queue pattern
//!   (`LMOVE`/`BRPOPLPUSH` into a processing list), `in_flight_list` names
//!   that list and its length is the in-flight count. Redis deletes an empty
//!   list, so a missing key is an empty queue, not an error.
//! - `stream` mode: `XINFO GROUPS key` gives, for the configured group,
//!   `lag` (entries not yet delivered to the group: visible) and `pending`
//!   (delivered, not yet `XACK`ed: in-flight). The age of the oldest waiting
//!   entry comes from the ID of the first entry after the group's
//!   last-delivered ID (stream IDs start with a millisecond timestamp), read
//!   with one `XRANGE ... COUNT 1`. `lag` needs Redis 7; older servers (or a
//!   stream trimmed so that lag is unknown) leave visible unknown with a note.
//!
//! The connection is kept across polls and dropped after an I/O error, so
//! the next poll reconnects. The password comes from an environment
//! variable or a file, never from the URL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{IntoConnectionInfo, Value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::clients::Clients;
use crate::clients::secret::{Credentials, UsernameRule, redact_url};
use crate::contract::{Capabilities, QueueSource, Sample, SourceError};
use crate::sources::SourceSpec;
use crate::validate::{Problems, default_true, no_password_in_url};

/// How the key is used as a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// A list: depth is `LLEN key`.
    #[default]
    List,
    /// A stream with a consumer group: depth is the group's `lag`,
    /// in-flight its `pending` count.
    Stream,
}

/// `source.kind = "redis"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSourceConfig {
    /// Redis URL without a password: `redis://redis.default.svc:6379/0`, or
    /// `rediss://...` for TLS (verified against the system's CA
    /// certificates). The path is the database number.
    pub url: String,

    /// `list` (default) or `stream`.
    #[serde(default)]
    pub mode: RedisMode,

    /// The list or stream key, e.g. `queue:emails`.
    pub key: String,

    /// Stream mode: the consumer group whose lag and pending count are
    /// measured. Required with `mode = "stream"`.
    #[serde(default)]
    pub group: Option<String>,

    /// List mode: the processing list of the reliable-queue pattern, whose
    /// length is the in-flight count, e.g. `queue:emails:processing`.
    #[serde(default)]
    pub in_flight_list: Option<String>,

    /// ACL user name (Redis 6+); without it, the password authenticates the
    /// `default` user.
    #[serde(default)]
    pub username: Option<String>,

    /// Environment variable holding the password, e.g. `REDIS_PASSWORD`.
    #[serde(default)]
    pub password_env: Option<String>,

    /// File holding the password (a mounted Secret). A final newline is
    /// ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,

    /// Count in-flight entries (stream `pending`, or `in_flight_list`) as
    /// backlog.
    #[serde(default = "default_true")]
    pub count_in_flight: bool,
}

impl RedisSourceConfig {
    /// The credential fields, for their shared rules and reading.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials {
            username: self.username.as_deref(),
            password_env: self.password_env.as_deref(),
            password_file: self.password_file.as_ref(),
        }
    }

    fn measures_in_flight(&self) -> bool {
        match self.mode {
            RedisMode::Stream => true,
            RedisMode::List => self.in_flight_list.is_some(),
        }
    }
}

#[async_trait]
impl SourceSpec for RedisSourceConfig {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            oldest_age: self.mode == RedisMode::Stream,
            arrival_rate: false,
            in_flight: self.measures_in_flight(),
            delayed: false,
            count_in_flight: self.count_in_flight && self.measures_in_flight(),
            count_delayed: false,
        }
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            p.push(
                format!("{path}.url"),
                format!(
                    "{:?} is not a redis:// or rediss:// URL",
                    redact_url(&self.url)
                ),
            );
        } else if no_password_in_url(p, &format!("{path}.url"), &self.url)
            && self.url.as_str().into_connection_info().is_err()
        {
            p.push(format!("{path}.url"), "cannot be parsed as a Redis URL");
        }
        if self.key.is_empty() {
            p.push(format!("{path}.key"), "must not be empty");
        }
        match self.mode {
            RedisMode::Stream => {
                match &self.group {
                    None => p.push(format!("{path}.group"), "required with mode = \"stream\""),
                    Some(g) if g.is_empty() => p.push(format!("{path}.group"), "must not be empty"),
                    Some(_) => {}
                }
                if self.in_flight_list.is_some() {
                    p.push(
                        format!("{path}.in_flight_list"),
                        "only for mode = \"list\"; a stream's in-flight count is its group's pending count",
                    );
                }
            }
            RedisMode::List => {
                if self.group.is_some() {
                    p.push(format!("{path}.group"), "only for mode = \"stream\"");
                }
                if let Some(l) = &self.in_flight_list {
                    if l.is_empty() {
                        p.push(format!("{path}.in_flight_list"), "must not be empty");
                    } else if *l == self.key {
                        p.push(
                            format!("{path}.in_flight_list"),
                            "must differ from key (it is the processing list)",
                        );
                    }
                }
            }
        }
        self.credentials().validate(path, UsernameRule::Optional, p);
    }

    fn describe(&self) -> String {
        let host = self
            .url
            .split_once("://")
            .map(|(_, r)| r.split(['/', '?']).next().unwrap_or(r).to_string())
            .unwrap_or_default();
        match self.mode {
            RedisMode::List => format!(
                "redis list {} on {host}{}",
                self.key,
                match &self.in_flight_list {
                    Some(l) => format!(" (in-flight list {l})"),
                    None => String::new(),
                }
            ),
            RedisMode::Stream => format!(
                "redis stream {} group {} on {host}",
                self.key,
                self.group.as_deref().unwrap_or("?")
            ),
        }
    }

    fn identity(&self) -> String {
        // Two groups of one stream are two queues; a list has no group.
        format!(
            "{} {} {}",
            self.url.trim_end_matches('/'),
            self.key,
            self.group.as_deref().unwrap_or_default()
        )
    }

    async fn build(
        &self,
        _clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn QueueSource>, SourceError> {
        Ok(Arc::new(RedisSource::new(self.clone(), timeout)))
    }
}

/// One consumer group of `XINFO GROUPS`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupInfo {
    pub name: String,
    pub consumers: Option<u64>,
    pub pending: Option<u64>,
    /// `None` on Redis < 7, or when Redis cannot compute it (after
    /// deletions or trimming past the group's position).
    pub lag: Option<u64>,
    pub last_delivered_id: Option<String>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn count(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// The field/value pairs of one group entry: a flat RESP2 array or a
/// RESP3 map.
fn pairs(v: &Value) -> Option<Vec<(&Value, &Value)>> {
    match v {
        Value::Array(flat) if flat.len() % 2 == 0 => {
            Some(flat.chunks(2).map(|c| (&c[0], &c[1])).collect())
        }
        Value::Map(m) => Some(m.iter().map(|(k, v)| (k, v)).collect()),
        _ => None,
    }
}

/// Parse the reply of `XINFO GROUPS key`.
pub fn parse_xinfo_groups(v: &Value) -> Result<Vec<GroupInfo>, SourceError> {
    let bad = |what: &str| SourceError::InvalidResponse(format!("XINFO GROUPS: {what}"));
    let Value::Array(groups) = v else {
        return Err(bad("expected an array of groups"));
    };
    groups
        .iter()
        .map(|g| {
            let mut info = GroupInfo::default();
            for (k, val) in pairs(g).ok_or_else(|| bad("a group is not a field/value list"))? {
                match text(k).as_deref() {
                    Some("name") => info.name = text(val).unwrap_or_default(),
                    Some("consumers") => info.consumers = count(val),
                    Some("pending") => info.pending = count(val),
                    Some("lag") => info.lag = count(val),
                    Some("last-delivered-id") => info.last_delivered_id = text(val),
                    _ => {}
                }
            }
            Ok(info)
        })
        .collect()
}

/// The millisecond timestamp of a stream entry ID (`1700000000000-0`).
pub fn stream_id_millis(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    seq.parse::<u64>().ok()?;
    ms.parse().ok()
}

/// The ID of the first entry of an `XRANGE` reply, if any.
pub fn first_xrange_id(v: &Value) -> Option<String> {
    match v {
        Value::Array(entries) => match entries.first()? {
            Value::Array(entry) => text(entry.first()?),
            _ => None,
        },
        _ => None,
    }
}

/// Build a stream-mode sample for `group` from the `XINFO GROUPS` reply
/// and the ID of the first undelivered entry (if one was read).
pub fn stream_sample(
    at: SystemTime,
    groups: &[GroupInfo],
    group: &str,
    key: &str,
    first_undelivered: Option<&str>,
) -> Result<Sample, SourceError> {
    let g = groups.iter().find(|g| g.name == group).ok_or_else(|| {
        SourceError::NotFound(format!(
            "consumer group {group:?} on stream {key:?} (groups: {})",
            groups
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let mut s = Sample::empty(at);
    s.visible = g.lag;
    s.in_flight = g.pending;
    s.consumers = g.consumers.and_then(|c| u32::try_from(c).ok());
    if g.lag.is_none() {
        s.notes.push(
            "Redis reports no lag for this group (Redis < 7, or entries were deleted or \
             trimmed), so the number of waiting entries is unknown"
                .to_string(),
        );
    }
    s.oldest_age = match (g.lag, first_undelivered.and_then(stream_id_millis)) {
        (Some(0), _) => Some(Duration::ZERO),
        (_, Some(ms)) => {
            let now_ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let age = now_ms.saturating_sub(u128::from(ms));
            Some(Duration::from_millis(
                u64::try_from(age).unwrap_or(u64::MAX),
            ))
        }
        (_, None) => None,
    };
    Ok(s)
}

/// Classify a Redis error from its parts (server code, text, and what the
/// client library knows about it) into the bounded labels.
pub fn classify(code: Option<&str>, message: &str, io: bool, timed_out: bool) -> &'static str {
    let lower = message.to_ascii_lowercase();
    match code {
        Some("WRONGPASS" | "NOAUTH" | "NOPERM") => "access_denied",
        Some("WRONGTYPE") => "invalid_response",
        _ if lower.contains("no such key") => "not_found",
        _ if lower.contains("authentication") || lower.contains("invalid password") => {
            "access_denied"
        }
        _ if timed_out => "timeout",
        _ if io => "unavailable",
        Some("LOADING" | "MASTERDOWN" | "BUSY" | "TRYAGAIN") => "unavailable",
        _ => "invalid_response",
    }
}

/// Map a Redis error, naming `what` was asked for.
pub fn map_redis_error(e: &redis::RedisError, what: &str, timeout: Duration) -> SourceError {
    let message = format!("{what}: {e}");
    let auth = matches!(e.kind(), redis::ErrorKind::AuthenticationFailed);
    let label = if auth {
        "access_denied"
    } else {
        classify(
            e.code(),
            &e.to_string(),
            e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped(),
            e.is_timeout(),
        )
    };
    match label {
        "access_denied" => SourceError::AccessDenied(message),
        "not_found" => SourceError::NotFound(message),
        "timeout" => SourceError::Timeout(timeout),
        "unavailable" => SourceError::Unavailable(message),
        _ => SourceError::InvalidResponse(message),
    }
}

/// The connection name qscale sets for `key` (CLIENT SETNAME allows no
/// spaces).
pub fn client_name(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    format!("qscale:{safe}")
}

/// The live Redis source.
pub struct RedisSource {
    cfg: RedisSourceConfig,
    timeout: Duration,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSource")
            .field("url", &redact_url(&self.cfg.url))
            .field("mode", &self.cfg.mode)
            .field("key", &self.cfg.key)
            .finish()
    }
}

impl RedisSource {
    pub fn new(cfg: RedisSourceConfig, timeout: Duration) -> RedisSource {
        RedisSource {
            cfg,
            timeout,
            conn: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, SourceError> {
        let shown = redact_url(&self.cfg.url);
        let info = self.cfg.url.as_str().into_connection_info().map_err(|e| {
            SourceError::Config(format!("url {shown}: {}", e.detail().unwrap_or("invalid")))
        })?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &self.cfg.username {
            settings = settings.set_username(u);
        }
        if let Some(pw) = self.cfg.credentials().password()? {
            settings = settings.set_password(pw.expose());
        }
        let info = info.set_redis_settings(settings);
        let client = redis::Client::open(info)
            .map_err(|e| map_redis_error(&e, &format!("connecting to {shown}"), self.timeout))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| map_redis_error(&e, &format!("connecting to {shown}"), self.timeout))?;
        // A name makes qscale's connection findable in CLIENT LIST. Some
        // managed services forbid CLIENT; that must not stop sampling.
        let _: Result<Value, _> = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(client_name(&self.cfg.key))
            .query_async(&mut conn)
            .await;
        Ok(conn)
    }

    async fn query(
        &self,
        conn: &mut MultiplexedConnection,
        at: SystemTime,
    ) -> Result<Sample, QueryError> {
        match self.cfg.mode {
            RedisMode::List => {
                let mut pipe = redis::pipe();
                pipe.cmd("LLEN").arg(&self.cfg.key);
                if let Some(l) = &self.cfg.in_flight_list {
                    pipe.cmd("LLEN").arg(l);
                }
                let lens: Vec<u64> = pipe.query_async(conn).await?;
                let mut s = Sample::empty(at);
                s.visible = lens.first().copied();
                s.in_flight = lens.get(1).copied();
                Ok(s)
            }
            RedisMode::Stream => {
                let reply: Value = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&self.cfg.key)
                    .query_async(conn)
                    .await?;
                let group = self.cfg.group.as_deref().unwrap_or_default();
                let groups = parse_xinfo_groups(&reply).map_err(QueryError::Own)?;
                let last = groups
                    .iter()
                    .find(|g| g.name == group)
                    .and_then(|g| g.last_delivered_id.clone());
                let first = match last {
                    Some(last) => {
                        let v: Value = redis::cmd("XRANGE")
                            .arg(&self.cfg.key)
                            .arg(format!("({last}"))
                            .arg("+")
                            .arg("COUNT")
                            .arg(1)
                            .query_async(conn)
                            .await?;
                        first_xrange_id(&v)
                    }
                    None => None,
                };
                stream_sample(at, &groups, group, &self.cfg.key, first.as_deref())
                    .map_err(QueryError::Own)
            }
        }
    }
}

/// Why one poll's commands failed: the broker said no, or its answer made
/// no sense to us (which must not drop a healthy connection).
enum QueryError {
    Redis(redis::RedisError),
    Own(SourceError),
}

impl From<redis::RedisError> for QueryError {
    fn from(e: redis::RedisError) -> Self {
        QueryError::Redis(e)
    }
}

#[async_trait]
impl QueueSource for RedisSource {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn sample(&self) -> Result<Sample, SourceError> {
        let at = SystemTime::now();
        let mut slot = self.conn.lock().await;
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let what = format!("key {:?}", self.cfg.key);
        match tokio::time::timeout(self.timeout, self.query(&mut conn, at)).await {
            Err(_) => Err(SourceError::Timeout(self.timeout)),
            Ok(Ok(s)) => {
                *slot = Some(conn);
                Ok(s)
            }
            Ok(Err(QueryError::Own(e))) => {
                *slot = Some(conn);
                Err(e)
            }
            Ok(Err(QueryError::Redis(e))) => {
                // Keep the connection for server-side answers (wrong type,
                // missing key); drop it for anything that smells of I/O.
                if !(e.is_io_error() || e.is_connection_dropped() || e.is_timeout())
                    && e.code().is_some()
                {
                    *slot = Some(conn);
                }
                Err(map_redis_error(&e, &what, self.timeout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: RedisMode) -> RedisSourceConfig {
        RedisSourceConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            mode,
            key: "jobs".into(),
            group: (mode == RedisMode::Stream).then(|| "workers".to_string()),
            in_flight_list: None,
            username: None,
            password_env: None,
            password_file: None,
            count_in_flight: true,
        }
    }

    #[test]
    fn validation_table() {
        use RedisMode::*;
        let cases: Vec<(RedisSourceConfig, Option<&str>)> = vec![
            (cfg(List), None),
            (cfg(Stream), None),
            (
                RedisSourceConfig {
                    url: "rediss://cache.example:6380/2".into(),
                    in_flight_list: Some("jobs:processing".into()),
                    password_env: Some("REDIS_PASSWORD".into()),
                    ..cfg(List)
                },
                None,
            ),
            (
                RedisSourceConfig {
                    url: "http://x".into(),
                    ..cfg(List)
                },
                Some("s.url: \"http://x\" is not a redis:// or rediss:// URL"),
            ),
            (
                RedisSourceConfig {
                    url: "redis://:hunter2@x:6379".into(),
                    ..cfg(List)
                },
                Some("s.url: must not contain a password"),
            ),
            (
                RedisSourceConfig {
                    key: String::new(),
                    ..cfg(List)
                },
                Some("s.key: must not be empty"),
            ),
            (
                RedisSourceConfig {
                    group: None,
                    ..cfg(Stream)
                },
                Some("s.group: required with mode = \"stream\""),
            ),
            (
                RedisSourceConfig {
                    in_flight_list: Some("p".into()),
                    ..cfg(Stream)
                },
                Some("s.in_flight_list: only for mode = \"list\""),
            ),
            (
                RedisSourceConfig {
                    group: Some("g".into()),
                    ..cfg(List)
                },
                Some("s.group: only for mode = \"stream\""),
            ),
            (
                RedisSourceConfig {
                    in_flight_list: Some("jobs".into()),
                    ..cfg(List)
                },
                Some("s.in_flight_list: must differ from key"),
            ),
        ];
        crate::validate::assert_validation_table(&cases, |c, path, p| c.validate(path, p));
    }

    #[test]
    fn capabilities_table() {
        use RedisMode::*;
        let list = cfg(List).capabilities();
        assert!(!list.in_flight && !list.oldest_age && !list.count_in_flight);
        let reliable = RedisSourceConfig {
            in_flight_list: Some("p".into()),
            ..cfg(List)
        }
        .capabilities();
        assert!(reliable.in_flight && reliable.count_in_flight);
        let stream = cfg(Stream).capabilities();
        assert!(stream.in_flight && stream.oldest_age && !stream.arrival_rate);
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn group_resp2(name: &str, pending: i64, lag: Value) -> Value {
        Value::Array(vec![
            bulk("name"),
            bulk(name),
            bulk("consumers"),
            Value::Int(2),
            bulk("pending"),
            Value::Int(pending),
            bulk("last-delivered-id"),
            bulk("1700000000000-3"),
            bulk("entries-read"),
            Value::Int(5),
            bulk("lag"),
            lag,
        ])
    }

    #[test]
    fn xinfo_groups_parsing_table() {
        let resp3 = Value::Array(vec![Value::Map(vec![
            (Value::SimpleString("name".into()), bulk("w")),
            (Value::SimpleString("pending".into()), Value::Int(4)),
            (Value::SimpleString("lag".into()), Value::Int(6)),
        ])]);
        type Groups = Vec<(String, Option<u64>, Option<u64>)>;
        let cases: Vec<(Value, Result<Groups, &str>)> = vec![
            (Value::Array(vec![]), Ok(vec![])),
            (
                Value::Array(vec![group_resp2("w", 3, Value::Int(7))]),
                Ok(vec![("w".into(), Some(3), Some(7))]),
            ),
            (
                Value::Array(vec![group_resp2("w", 3, Value::Nil)]),
                Ok(vec![("w".into(), Some(3), None)]),
            ),
            (resp3, Ok(vec![("w".into(), Some(4), Some(6))])),
            (
                Value::Array(vec![group_resp2("w", -1, bulk("many"))]),
                Ok(vec![("w".into(), None, None)]),
            ),
            (Value::Int(3), Err("expected an array")),
            (
                Value::Array(vec![Value::Array(vec![bulk("name")])]),
                Err("not a field/value list"),
            ),
        ];
        for (v, want) in cases {
            let got = parse_xinfo_groups(&v).map(|gs| {
                gs.into_iter()
                    .map(|g| (g.name, g.pending, g.lag))
                    .collect::<Vec<_>>()
            });
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e}"),
                (g, w) => panic!("{v:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn stream_sample_table() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_010_000);
        let g = |lag: Option<u64>| GroupInfo {
            name: "w".into(),
            consumers: Some(2),
            pending: Some(3),
            lag,
            last_delivered_id: Some("1700000000000-3".into()),
        };
        // (lag, first undelivered id, visible, age seconds, notes)
        let cases = [
            (Some(7), Some("1700000000000-4"), Some(7), Some(10.0), 0),
            (Some(0), None, Some(0), Some(0.0), 0),
            (None, Some("1700000005000-0"), None, Some(5.0), 1),
            (Some(7), Some("1800000000000-0"), Some(7), Some(0.0), 0),
            (Some(7), Some("garbage"), Some(7), None, 0),
        ];
        for (lag, first, visible, age, notes) in cases {
            let s = stream_sample(at, &[g(lag)], "w", "jobs", first).unwrap();
            assert_eq!(s.visible, visible);
            assert_eq!(s.in_flight, Some(3));
            assert_eq!(s.consumers, Some(2));
            assert_eq!(s.oldest_age.map(|d| d.as_secs_f64()), age, "{first:?}");
            assert_eq!(s.notes.len(), notes);
        }
        let missing = stream_sample(at, &[g(Some(1))], "other", "jobs", None).unwrap_err();
        assert_eq!(missing.metric_label(), "not_found");
        assert!(
            missing
                .to_string()
                .contains("\"other\" on stream \"jobs\" (groups: w)")
        );
    }

    #[test]
    fn stream_ids_and_xrange_replies_parse() {
        assert_eq!(
            stream_id_millis("1700000000000-12"),
            Some(1_700_000_000_000)
        );
        assert_eq!(stream_id_millis("1700000000000"), None);
        assert_eq!(stream_id_millis("x-1"), None);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("1700000000000-0"),
            Value::Array(vec![bulk("f"), bulk("v")]),
        ])]);
        assert_eq!(first_xrange_id(&reply).as_deref(), Some("1700000000000-0"));
        assert_eq!(first_xrange_id(&Value::Array(vec![])), None);
        assert_eq!(first_xrange_id(&Value::Nil), None);
    }

    #[test]
    fn error_classification_table() {
        let cases = [
            (
                Some("WRONGPASS"),
                "invalid username-password pair",
                false,
                false,
                "access_denied",
            ),
            (
                Some("NOAUTH"),
                "Authentication required.",
                false,
                false,
                "access_denied",
            ),
            (
                Some("WRONGTYPE"),
                "Operation against a key",
                false,
                false,
                "invalid_response",
            ),
            (Some("ERR"), "ERR no such key", false, false, "not_found"),
            (None, "Connection refused", true, false, "unavailable"),
            (None, "timed out", true, true, "timeout"),
            (
                Some("LOADING"),
                "loading the dataset",
                false,
                false,
                "unavailable",
            ),
            (
                Some("ERR"),
                "unknown command",
                false,
                false,
                "invalid_response",
            ),
        ];
        for (code, msg, io, timeout, want) in cases {
            assert_eq!(classify(code, msg, io, timeout), want, "{code:?} {msg}");
        }
    }
}
