//! NATS JetStream source: one durable consumer's backlog.
//!
//! One request to the JetStream API (`$JS.API.CONSUMER.INFO.<stream>.<consumer>`)
//! per poll answers with the consumer's `num_pending` (messages in the
//! stream not yet delivered to it: visible) and `num_ack_pending`
//! (delivered, not yet acknowledged: in-flight). The reply is parsed here
//! rather than through async-nats' typed consumer API so that the parsing,
//! including JetStream's error replies, is tested on the real JSON shapes
//! without a server.
//!
//! The NATS client is kept across polls; it reconnects by itself after the
//! server closes the connection, and a poll made while it is disconnected
//! fails as `unavailable` (or times out) instead of hanging. A failed first
//! connection is retried on the next poll. The password comes from an
//! environment variable or a file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::clients::Clients;
use crate::clients::secret::{Credentials, UsernameRule, redact_url};
use crate::contract::{Capabilities, QueueSource, Sample, SourceError};
use crate::sources::SourceSpec;
use crate::validate::{Problems, default_true, no_password_in_url};

/// `source.kind = "nats"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// NATS server URL without credentials: `nats://nats.default.svc:4222`,
    /// or `tls://...` to require TLS (verified against the system's CA
    /// certificates). Several servers may be given separated by commas.
    pub url: String,

    /// JetStream stream name, e.g. `ORDERS`.
    pub stream: String,

    /// Durable consumer name on that stream, e.g. `order-workers`.
    pub consumer: String,

    /// JetStream domain (leaf-node setups); the API prefix becomes
    /// `$JS.<domain>.API`.
    #[serde(default)]
    pub domain: Option<String>,

    /// User name for user/password authentication.
    #[serde(default)]
    pub username: Option<String>,

    /// Environment variable holding the password, e.g. `NATS_PASSWORD`.
    #[serde(default)]
    pub password_env: Option<String>,

    /// File holding the password (a mounted Secret). A final newline is
    /// ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,

    /// Count delivered, unacknowledged messages (`num_ack_pending`) as
    /// backlog.
    #[serde(default = "default_true")]
    pub count_in_flight: bool,
}

/// Stream and consumer names are subject tokens in the JetStream API.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

impl NatsSourceConfig {
    /// The credential fields, for their shared rules and reading.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials {
            username: self.username.as_deref(),
            password_env: self.password_env.as_deref(),
            password_file: self.password_file.as_ref(),
        }
    }

    /// The JetStream API subject that answers consumer info.
    pub fn info_subject(&self) -> String {
        let prefix = match &self.domain {
            Some(d) => format!("$JS.{d}.API"),
            None => "$JS.API".to_string(),
        };
        format!("{prefix}.CONSUMER.INFO.{}.{}", self.stream, self.consumer)
    }
}

#[async_trait]
impl SourceSpec for NatsSourceConfig {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            oldest_age: false,
            arrival_rate: false,
            in_flight: true,
            delayed: false,
            count_in_flight: self.count_in_flight,
            count_delayed: false,
        }
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        for url in self.url.split(',').map(str::trim) {
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s));
            if !scheme_ok {
                p.push(
                    format!("{path}.url"),
                    format!(
                        "{:?} is not a nats://, tls://, ws:// or wss:// URL",
                        redact_url(url)
                    ),
                );
            } else {
                no_password_in_url(p, &format!("{path}.url"), url);
            }
        }
        for (field, v) in [("stream", &self.stream), ("consumer", &self.consumer)] {
            if v.is_empty() {
                p.push(format!("{path}.{field}"), "must not be empty");
            } else if !valid_name(v) {
                p.push(
                    format!("{path}.{field}"),
                    format!("{v:?} must not contain spaces, '.', '*', '>', '/' or '\\'"),
                );
            }
        }
        if let Some(d) = &self.domain
            && !valid_name(d)
        {
            p.push(
                format!("{path}.domain"),
                "must be a non-empty name without spaces, '.', '*' or '>'",
            );
        }
        self.credentials()
            .validate(path, UsernameRule::RequiredWithPassword, p);
    }

    fn describe(&self) -> String {
        format!(
            "nats jetstream consumer {} on stream {} at {}",
            self.consumer,
            self.stream,
            redact_url(&self.url)
        )
    }

    fn identity(&self) -> String {
        format!(
            "{} {} {} {}",
            self.url,
            self.domain.as_deref().unwrap_or_default(),
            self.stream,
            self.consumer
        )
    }

    async fn build(
        &self,
        _clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn QueueSource>, SourceError> {
        Ok(Arc::new(NatsSource::new(self.clone(), timeout)))
    }
}

/// Parse a JetStream `CONSUMER.INFO` reply into a sample taken at `at`.
pub fn parse_consumer_info(
    at: SystemTime,
    body: &[u8],
    stream: &str,
    consumer: &str,
) -> Result<Sample, SourceError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        SourceError::InvalidResponse(format!("JetStream consumer info is not JSON: {e}"))
    })?;
    if let Some(err) = v.get("error") {
        let code = err.get("code").and_then(serde_json::Value::as_u64);
        let err_code = err.get("err_code").and_then(serde_json::Value::as_u64);
        let desc = err
            .get("description")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("no description");
        let what = format!("consumer {consumer:?} on stream {stream:?}: {desc}");
        return Err(match (code, err_code) {
            // 10014 consumer not found, 10059 stream not found.
            (Some(404), _) | (_, Some(10014 | 10059)) => SourceError::NotFound(what),
            (Some(401 | 403), _) => SourceError::AccessDenied(what),
            (Some(503), _) => SourceError::Unavailable(what),
            _ => SourceError::InvalidResponse(what),
        });
    }
    let field = |k: &str| {
        v.get(k).and_then(serde_json::Value::as_u64).ok_or_else(|| {
            SourceError::InvalidResponse(format!(
                "JetStream consumer info for {consumer:?} has no numeric {k}"
            ))
        })
    };
    let mut s = Sample::empty(at);
    s.visible = Some(field("num_pending")?);
    s.in_flight = Some(field("num_ack_pending")?);
    Ok(s)
}

/// The live NATS JetStream source.
pub struct NatsSource {
    cfg: NatsSourceConfig,
    timeout: Duration,
    client: Mutex<Option<async_nats::Client>>,
}

impl std::fmt::Debug for NatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSource")
            .field("url", &redact_url(&self.cfg.url))
            .field("stream", &self.cfg.stream)
            .field("consumer", &self.cfg.consumer)
            .finish()
    }
}

impl NatsSource {
    pub fn new(cfg: NatsSourceConfig, timeout: Duration) -> NatsSource {
        NatsSource {
            cfg,
            timeout,
            client: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<async_nats::Client, SourceError> {
        let shown = redact_url(&self.cfg.url);
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("qscale {}/{}", self.cfg.stream, self.cfg.consumer))
            .connection_timeout(self.timeout)
            .request_timeout(Some(self.timeout));
        if self.cfg.url.starts_with("tls://") {
            opts = opts.require_tls(true);
        }
        let pw = self.cfg.credentials().password()?;
        if let Some(user) = &self.cfg.username {
            let pw = pw.map(|p| p.expose().to_string()).unwrap_or_default();
            opts = opts.user_and_password(user.clone(), pw);
        }
        let servers: Vec<&str> = self.cfg.url.split(',').map(str::trim).collect();
        let servers: Vec<async_nats::ServerAddr> = servers
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| SourceError::Config(format!("url {shown}: {e}")))?;
        opts.connect(servers).await.map_err(|e| {
            use async_nats::ConnectErrorKind as K;
            let text = format!("connecting to {shown}: {e}");
            match e.kind() {
                K::Authentication | K::AuthorizationViolation => SourceError::AccessDenied(text),
                K::TimedOut => SourceError::Timeout(self.timeout),
                K::ServerParse => SourceError::Config(text),
                _ => SourceError::Unavailable(text),
            }
        })
    }
}

#[async_trait]
impl QueueSource for NatsSource {
    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn sample(&self) -> Result<Sample, SourceError> {
        let at = SystemTime::now();
        let client = {
            let mut slot = self.client.lock().await;
            match slot.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = self.connect().await?;
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        if client.connection_state() != async_nats::connection::State::Connected {
            // The client reconnects in the background; asking now would
            // only wait out the timeout.
            return Err(SourceError::Unavailable(format!(
                "not connected to {} (reconnecting)",
                redact_url(&self.cfg.url)
            )));
        }
        let subject = self.cfg.info_subject();
        let reply = tokio::time::timeout(self.timeout, client.request(subject, "".into()))
            .await
            .map_err(|_| SourceError::Timeout(self.timeout))?
            .map_err(|e| {
                use async_nats::RequestErrorKind as K;
                match e.kind() {
                    K::NoResponders => SourceError::Unavailable(format!(
                        "no JetStream API answers at {} (is JetStream enabled, and the domain right?)",
                        redact_url(&self.cfg.url)
                    )),
                    K::TimedOut => SourceError::Timeout(self.timeout),
                    _ => SourceError::Unavailable(format!("JetStream request: {e}")),
                }
            })?;
        parse_consumer_info(at, &reply.payload, &self.cfg.stream, &self.cfg.consumer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NatsSourceConfig {
        NatsSourceConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream: "ORDERS".into(),
            consumer: "workers".into(),
            domain: None,
            username: None,
            password_env: None,
            password_file: None,
            count_in_flight: true,
        }
    }

    #[test]
    fn validation_table() {
        let cases: Vec<(NatsSourceConfig, Option<&str>)> = vec![
            (cfg(), None),
            (
                NatsSourceConfig {
                    url: "tls://a:4222, tls://b:4222".into(),
                    username: Some("qscale".into()),
                    password_env: Some("NATS_PASSWORD".into()),
                    domain: Some("hub".into()),
                    ..cfg()
                },
                None,
            ),
            (
                NatsSourceConfig {
                    url: "http://x".into(),
                    ..cfg()
                },
                Some("s.url: \"http://x\" is not a nats://"),
            ),
            (
                NatsSourceConfig {
                    url: "nats://u:hunter2@x".into(),
                    ..cfg()
                },
                Some("s.url: must not contain a password"),
            ),
            (
                NatsSourceConfig {
                    stream: String::new(),
                    ..cfg()
                },
                Some("s.stream: must not be empty"),
            ),
            (
                NatsSourceConfig {
                    consumer: "a.b".into(),
                    ..cfg()
                },
                Some("s.consumer: \"a.b\" must not contain"),
            ),
            (
                NatsSourceConfig {
                    password_env: Some("NATS_PASSWORD".into()),
                    ..cfg()
                },
                Some("s.username: required when a password is given"),
            ),
            (
                NatsSourceConfig {
                    domain: Some("a b".into()),
                    ..cfg()
                },
                Some("s.domain: must be a non-empty name"),
            ),
        ];
        crate::validate::assert_validation_table(&cases, |c, path, p| c.validate(path, p));
    }

    #[test]
    fn the_api_subject_honours_the_domain() {
        assert_eq!(cfg().info_subject(), "$JS.API.CONSUMER.INFO.ORDERS.workers");
        let d = NatsSourceConfig {
            domain: Some("hub".into()),
            ..cfg()
        };
        assert_eq!(d.info_subject(), "$JS.hub.API.CONSUMER.INFO.ORDERS.workers");
    }

    #[test]
    fn consumer_info_parsing_table() {
        let ok = br#"{"type":"io.nats.jetstream.api.v1.consumer_info_response",
            "stream_name":"ORDERS","name":"workers","created":"2024-01-01T00:00:00Z",
            "config":{"durable_name":"workers","ack_policy":"explicit"},
            "delivered":{"consumer_seq":3,"stream_seq":3},
            "ack_floor":{"consumer_seq":0,"stream_seq":0},
            "num_ack_pending":3,"num_redelivered":0,"num_waiting":0,"num_pending":7}"#;
        let no_consumer = br#"{"type":"io.nats.jetstream.api.v1.consumer_info_response",
            "error":{"code":404,"err_code":10014,"description":"consumer not found"}}"#;
        let no_stream =
            br#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#;
        let denied = br#"{"error":{"code":403,"description":"permissions violation"}}"#;
        let odd = br#"{"error":{"code":500,"description":"boom"}}"#;
        let partial = br#"{"num_pending":7,"num_ack_pending":-1}"#;
        type Want = Result<(u64, u64), (&'static str, &'static str)>;
        let cases: Vec<(&[u8], Want)> = vec![
            (ok, Ok((7, 3))),
            (no_consumer, Err(("not_found", "consumer not found"))),
            (no_stream, Err(("not_found", "stream not found"))),
            (denied, Err(("access_denied", "permissions violation"))),
            (odd, Err(("invalid_response", "boom"))),
            (
                partial,
                Err(("invalid_response", "no numeric num_ack_pending")),
            ),
            (b"+OK", Err(("invalid_response", "not JSON"))),
            (b"", Err(("invalid_response", "not JSON"))),
        ];
        for (body, want) in cases {
            let got = parse_consumer_info(SystemTime::now(), body, "ORDERS", "workers");
            match (got, want) {
                (Ok(s), Ok((v, f))) => {
                    assert_eq!(s.visible, Some(v));
                    assert_eq!(s.in_flight, Some(f));
                }
                (Err(e), Err((label, text))) => {
                    assert_eq!(e.metric_label(), label, "{e}");
                    assert!(e.to_string().contains(text), "{e}");
                }
                (g, w) => panic!("{}: got {g:?}, want {w:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}
