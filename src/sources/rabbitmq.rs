//! RabbitMQ source: AMQP for live depth, the management API for the rest.
//!
//! A passive `queue.declare` over AMQP answers at once with the number of
//! *ready* messages and the consumer count; it never creates or changes the
//! queue. AMQP has no way to ask for *unacknowledged* messages (the gap KEDA
//! users hit: a backlog-only scaler shrinks while workers still hold
//! messages), so when `management_url` is set the management HTTP API adds
//! unacknowledged messages (in-flight), the publish rate (arrival rate) and
//! `head_message_timestamp` (age of the oldest ready message, when producers
//! set the AMQP `timestamp` property). Without it the sample carries a note
//! saying in-flight is unknown, and the capabilities say so, which turns
//! off the policy features that need it at validation time.
//!
//! The management API also names the queue's dead-letter exchange: the
//! `x-dead-letter-exchange` argument, else the `dead-letter-exchange` of
//! its effective policy (an argument overrules a policy, as in RabbitMQ).
//! The queues bound to that exchange (the bindings API; with a dead-letter
//! routing key, those bound with that key) are the dead-letter queues, and
//! their message count is the sample's dead-letter depth. The bindings are
//! looked up again at most once a minute. A configured `dead_letter_queue`
//! replaces the discovery.
//!
//! The AMQP connection and its channel are kept across polls. A poll that
//! finds them closed (the broker restarted, an operator closed the
//! connection, a 404 closed the channel) opens new ones; a poll that fails
//! drops them, so the next poll reconnects. Credentials come from an
//! environment variable or a file, and every URL shown in an error or in
//! `Debug` output is redacted.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::clients::Clients;
use crate::clients::http::{self as http_client, HttpClient};
use crate::clients::secret::{Credentials, Secret, UsernameRule, redact_url};
use crate::contract::{Capabilities, QueueSource, Sample, SourceError};
use crate::sources::SourceSpec;
use crate::validate::{Problems, default_true, http_url, no_password_in_url};

/// The note a sample carries when only AMQP is configured.
pub const AMQP_ONLY_NOTE: &str = "AMQP alone cannot see unacknowledged messages, so in-flight is \
     unknown (a known KEDA gap); set management_url to measure in-flight, arrival rate and age";

/// `source.kind = "rabbitmq"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqSourceConfig {
    /// AMQP URI of the broker, without a password:
    /// `amqp://qscale@rabbitmq.default.svc:5672/%2f`, or `amqps://...:5671`
    /// for TLS (verified against the system's CA certificates). The path is
    /// the URL-encoded vhost (`%2f` is `/`). Without a user, `guest` is used.
    pub url: String,

    /// Name of the queue to watch. It is never created or changed.
    pub queue: String,

    /// Virtual host, e.g. `/` or `orders`; overrides the vhost in `url`.
    #[serde(default)]
    pub vhost: Option<String>,

    /// User name; overrides the user in `url`.
    #[serde(default)]
    pub username: Option<String>,

    /// Environment variable holding the password, e.g. `RABBITMQ_PASSWORD`.
    #[serde(default)]
    pub password_env: Option<String>,

    /// File holding the password (a mounted Secret), e.g.
    /// `/var/run/secrets/rabbitmq/password`. A final newline is ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,

    /// Base URL of the management HTTP API, e.g. `http://rabbitmq:15672`.
    /// Adds unacknowledged messages (in-flight), the publish rate and the
    /// age of the oldest message; uses the same user and password. Its
    /// statistics refresh about every 5 seconds.
    #[serde(default)]
    pub management_url: Option<String>,

    /// Count unacknowledged (in-flight) messages as backlog. Needs
    /// `management_url`.
    #[serde(default = "default_true")]
    pub count_in_flight: bool,

    /// A queue (same vhost) whose message count is exported as
    /// `qscale_dead_letter_messages` and whose growth is the dead-letter
    /// arrival rate; never a backlog. Default: the queues bound to the
    /// queue's dead-letter exchange. Needs `management_url`.
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
}

impl RabbitmqSourceConfig {
    /// The credential fields, for their shared rules and reading.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials {
            username: self.username.as_deref(),
            password_env: self.password_env.as_deref(),
            password_file: self.password_file.as_ref(),
        }
    }

    /// The vhost in force: `vhost`, else the URL's, else `/`.
    pub fn effective_vhost(&self) -> String {
        if let Some(v) = &self.vhost {
            return v.clone();
        }
        AMQPUri::from_str(&self.url)
            .map(|u| u.vhost)
            .unwrap_or_else(|_| "/".to_string())
    }
}

#[async_trait]
impl SourceSpec for RabbitmqSourceConfig {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn capabilities(&self) -> Capabilities {
        let mgmt = self.management_url.is_some();
        Capabilities {
            oldest_age: mgmt,
            arrival_rate: mgmt,
            in_flight: mgmt,
            delayed: false,
            count_in_flight: self.count_in_flight && mgmt,
            count_delayed: false,
        }
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            p.push(
                format!("{path}.url"),
                format!(
                    "{:?} is not an amqp:// or amqps:// URL",
                    redact_url(&self.url)
                ),
            );
        } else if no_password_in_url(p, &format!("{path}.url"), &self.url)
            && let Err(e) = AMQPUri::from_str(&self.url)
        {
            p.push(format!("{path}.url"), format!("cannot be parsed: {e}"));
        }
        if self.queue.is_empty() {
            p.push(format!("{path}.queue"), "must not be empty");
        } else if self.queue.len() > 255 {
            p.push(format!("{path}.queue"), "must be at most 255 bytes");
        }
        if let Some(v) = &self.vhost
            && v.is_empty()
        {
            p.push(
                format!("{path}.vhost"),
                "must not be empty (the default is \"/\")",
            );
        }
        self.credentials().validate(path, UsernameRule::Optional, p);
        if let Some(m) = &self.management_url {
            http_url(p, &format!("{path}.management_url"), &redact_url(m));
            no_password_in_url(p, &format!("{path}.management_url"), m);
        }
        match &self.dead_letter_queue {
            Some(q) if q.is_empty() || q.len() > 255 => {
                p.push(format!("{path}.dead_letter_queue"), "must be 1-255 bytes")
            }
            Some(_) if self.management_url.is_none() => p.push(
                format!("{path}.dead_letter_queue"),
                "needs management_url (its depth is read there)",
            ),
            _ => {}
        }
    }

    fn describe(&self) -> String {
        let host = AMQPUri::from_str(&self.url)
            .map(|u| format!("{}:{}", u.authority.host, u.authority.port))
            .unwrap_or_else(|_| redact_url(&self.url));
        format!(
            "rabbitmq queue {} on {host} (vhost {}){}",
            self.queue,
            self.effective_vhost(),
            if self.management_url.is_some() {
                " with management API"
            } else {
                ", AMQP only: in-flight unknown"
            }
        )
    }

    fn identity(&self) -> String {
        let host = AMQPUri::from_str(&self.url)
            .map(|u| format!("{}:{}", u.authority.host, u.authority.port))
            .unwrap_or_else(|_| self.url.clone());
        format!("{host} {} {}", self.effective_vhost(), self.queue)
    }

    async fn build(
        &self,
        _clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn QueueSource>, SourceError> {
        // Broker sources connect on their first poll, so a broker that is
        // down at start-up is an ordinary failed sample, retried each poll.
        Ok(Arc::new(RabbitmqSource::new(self.clone(), timeout)))
    }
}

/// What a passive `queue.declare` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmqpCounts {
    pub ready: u32,
    pub consumers: u32,
}

/// The fields of `GET /api/queues/{vhost}/{name}` that qscale uses. Each
/// is optional: a new queue has no `message_stats` until its first
/// publish, and the counters appear only after the first stats emission.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ManagementQueue {
    pub ready: Option<u64>,
    pub unacknowledged: Option<u64>,
    /// Ready plus unacknowledged: a dead-letter queue's depth.
    pub messages: Option<u64>,
    pub consumers: Option<u32>,
    pub publish_rate: Option<f64>,
    /// Unix seconds of the oldest ready message's `timestamp` property.
    pub head_message_timestamp: Option<f64>,
    /// Where the queue dead-letters to, if anywhere.
    pub dead_letter: Option<DeadLetterTarget>,
}

/// A queue's dead-letter exchange and routing key, and where they are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTarget {
    /// The exchange; `""` is the default exchange (routes by queue name).
    pub exchange: String,
    pub routing_key: Option<String>,
    /// `argument` (`x-dead-letter-exchange`) or `policy <name>`.
    pub set_by: String,
}

/// The dead-letter exchange of a queue object: its `x-dead-letter-*`
/// arguments, else its effective policy's `dead-letter-*` keys (RabbitMQ
/// lets an argument overrule a policy).
fn dead_letter_target(v: &serde_json::Value) -> Option<DeadLetterTarget> {
    let text = |p: &str| v.pointer(p).and_then(serde_json::Value::as_str);
    if let Some(x) = text("/arguments/x-dead-letter-exchange") {
        return Some(DeadLetterTarget {
            exchange: x.to_string(),
            routing_key: text("/arguments/x-dead-letter-routing-key").map(str::to_string),
            set_by: "argument x-dead-letter-exchange".into(),
        });
    }
    let x = text("/effective_policy_definition/dead-letter-exchange")?;
    Some(DeadLetterTarget {
        exchange: x.to_string(),
        routing_key: text("/effective_policy_definition/dead-letter-routing-key")
            .map(str::to_string),
        set_by: match text("/policy") {
            Some(name) if !name.is_empty() => format!("policy {name}"),
            _ => "policy".into(),
        },
    })
}

/// The queues a dead-lettered message of `source` reaches through
/// `GET /api/exchanges/{vhost}/{exchange}/bindings/source`: those bound
/// with the dead-letter routing key when one is set and any queue is bound
/// with it, else every queue bound to the exchange (without a key a message
/// keeps its own routing key, which qscale cannot know). Never `source`
/// itself; sorted and without repeats.
pub fn dead_letter_queues(
    body: &[u8],
    routing_key: Option<&str>,
    source: &str,
) -> Result<Vec<String>, SourceError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        SourceError::InvalidResponse(format!("management API bindings: not JSON: {e}"))
    })?;
    let list = v.as_array().ok_or_else(|| {
        SourceError::InvalidResponse("management API bindings: expected a JSON array".into())
    })?;
    let bound: Vec<(&str, &str)> = list
        .iter()
        .filter(|b| b.get("destination_type").and_then(|t| t.as_str()) == Some("queue"))
        .filter_map(|b| {
            let q = b.get("destination")?.as_str()?;
            let key = b.get("routing_key").and_then(|k| k.as_str()).unwrap_or("");
            (q != source).then_some((q, key))
        })
        .collect();
    let keyed: Vec<&str> = match routing_key {
        Some(k) => bound
            .iter()
            .filter(|(_, rk)| *rk == k)
            .map(|(q, _)| *q)
            .collect(),
        None => Vec::new(),
    };
    let mut queues: Vec<String> = if keyed.is_empty() {
        bound.iter().map(|(q, _)| q.to_string()).collect()
    } else {
        keyed.into_iter().map(str::to_string).collect()
    };
    queues.sort();
    queues.dedup();
    Ok(queues)
}

/// How long the dead-letter exchange's bindings are trusted before they are
/// read again.
const BINDINGS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Parse the management API's queue object. Numbers of the wrong type or
/// sign are treated as absent, never as zero.
pub fn parse_management_queue(body: &[u8]) -> Result<ManagementQueue, SourceError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        SourceError::InvalidResponse(format!("management API: not a JSON object: {e}"))
    })?;
    if !v.is_object() {
        return Err(SourceError::InvalidResponse(
            "management API: expected a JSON object for the queue".into(),
        ));
    }
    let u64_at = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    let rate = v
        .pointer("/message_stats/publish_details/rate")
        .and_then(serde_json::Value::as_f64)
        .filter(|r| r.is_finite() && *r >= 0.0);
    let head = v
        .get("head_message_timestamp")
        .and_then(serde_json::Value::as_f64)
        .filter(|t| t.is_finite() && *t > 0.0);
    Ok(ManagementQueue {
        ready: u64_at("messages_ready"),
        unacknowledged: u64_at("messages_unacknowledged"),
        messages: u64_at("messages"),
        consumers: u64_at("consumers").and_then(|c| u32::try_from(c).ok()),
        publish_rate: rate,
        head_message_timestamp: head,
        dead_letter: dead_letter_target(&v),
    })
}

/// Combine what AMQP and (optionally) the management API saw into one
/// sample taken at `at`.
pub fn build_sample(at: SystemTime, amqp: AmqpCounts, mgmt: Option<&ManagementQueue>) -> Sample {
    let mut s = Sample::empty(at);
    // AMQP's ready count is live; the management API's lags by up to its
    // stats interval, so AMQP wins for what both can see.
    s.visible = Some(u64::from(amqp.ready));
    s.consumers = Some(amqp.consumers);
    match mgmt {
        None => s.notes.push(AMQP_ONLY_NOTE.to_string()),
        Some(m) => {
            s.in_flight = m.unacknowledged;
            s.arrival_rate = m.publish_rate;
            s.oldest_age = match m.head_message_timestamp {
                Some(ts) => {
                    let now = at
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    // A producer's clock ahead of ours must not give a
                    // negative age.
                    Some(Duration::from_secs_f64((now - ts).max(0.0)))
                }
                None if amqp.ready == 0 => Some(Duration::ZERO),
                None => {
                    s.notes.push(
                        "the oldest message has no timestamp property, so its age is unknown"
                            .to_string(),
                    );
                    None
                }
            };
            if m.unacknowledged.is_none() {
                s.notes.push(
                    "the management API has no statistics for this queue yet; in-flight unknown"
                        .to_string(),
                );
            }
        }
    }
    s
}

/// Map a lapin error to the bounded labels; `what` names the queue.
pub fn map_amqp_error(e: &lapin::Error, what: &str) -> SourceError {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let text = format!("{what}: {} {}", amqp.get_id(), amqp.get_message());
            match amqp.get_id() {
                403 => SourceError::AccessDenied(text),
                // 530 NOT_ALLOWED: the vhost does not exist or the user may
                // not use it; RabbitMQ does not say which.
                530 => SourceError::AccessDenied(text),
                404 => SourceError::NotFound(text),
                320 => SourceError::Unavailable(format!("broker closed the connection: {text}")),
                _ => SourceError::Unavailable(text),
            }
        }
        ErrorKind::AuthProviderError(m) => SourceError::AccessDenied(format!("{what}: {m}")),
        ErrorKind::ParsingError(_) | ErrorKind::SerialisationError(_) => {
            SourceError::InvalidResponse(format!("{what}: {e}"))
        }
        ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidChannel(_) => {
            SourceError::Unavailable(format!("{what}: connection closed ({e}); reconnecting"))
        }
        _ => SourceError::Unavailable(format!("{what}: {e}")),
    }
}

/// A live AMQP connection with the channel used for passive declares.
struct Link {
    conn: Connection,
    channel: Channel,
}

impl Link {
    fn usable(&self) -> bool {
        self.conn.status().connected() && self.channel.status().connected()
    }
}

/// The live RabbitMQ source.
pub struct RabbitmqSource {
    cfg: RabbitmqSourceConfig,
    timeout: Duration,
    link: Mutex<Option<Link>>,
    http: HttpClient,
    /// The dead-letter queues last found for an exchange and routing key,
    /// and when.
    bindings: Mutex<Option<(DeadLetterTarget, Instant, Vec<String>)>>,
}

impl std::fmt::Debug for RabbitmqSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitmqSource")
            .field("url", &redact_url(&self.cfg.url))
            .field("queue", &self.cfg.queue)
            .field("vhost", &self.cfg.effective_vhost())
            .field(
                "management_url",
                &self.cfg.management_url.as_deref().map(redact_url),
            )
            .finish()
    }
}

impl RabbitmqSource {
    /// A source that connects on its first poll; calls give up after
    /// `timeout`.
    pub fn new(cfg: RabbitmqSourceConfig, timeout: Duration) -> RabbitmqSource {
        RabbitmqSource {
            cfg,
            timeout,
            link: Mutex::new(None),
            http: HttpClient::new(),
            bindings: Mutex::new(None),
        }
    }

    fn what(&self) -> String {
        format!(
            "queue {:?} in vhost {:?}",
            self.cfg.queue,
            self.cfg.effective_vhost()
        )
    }

    /// The URI with the configured user, vhost and (fresh) password.
    fn uri(&self) -> Result<(AMQPUri, Option<Secret>), SourceError> {
        let mut uri = AMQPUri::from_str(&self.cfg.url)
            .map_err(|e| SourceError::Config(format!("url {}: {e}", redact_url(&self.cfg.url))))?;
        if let Some(u) = &self.cfg.username {
            uri.authority.userinfo.username = u.clone();
        }
        uri.vhost = self.cfg.effective_vhost();
        let pw = self.cfg.credentials().password()?;
        if let Some(pw) = &pw {
            uri.authority.userinfo.password = pw.expose().to_string();
        }
        Ok((uri, pw))
    }

    async fn connect(&self) -> Result<Link, SourceError> {
        let (uri, _) = self.uri()?;
        let shown = format!(
            "{}://{}@{}:{}",
            match uri.scheme {
                AMQPScheme::AMQPS => "amqps",
                AMQPScheme::AMQP => "amqp",
            },
            uri.authority.userinfo.username,
            uri.authority.host,
            uri.authority.port
        );
        let props = ConnectionProperties::default()
            .with_connection_name(format!("qscale {}", self.cfg.queue).into());
        let conn = Connection::connect_uri(uri, props)
            .await
            .map_err(|e| map_amqp_error(&e, &format!("connecting to {shown}")))?;
        match conn.create_channel().await {
            Ok(channel) => Ok(Link { conn, channel }),
            Err(e) => {
                close_quietly(conn);
                Err(map_amqp_error(&e, &format!("opening a channel on {shown}")))
            }
        }
    }

    async fn amqp_counts(&self) -> Result<AmqpCounts, SourceError> {
        let mut slot = self.link.lock().await;
        // Taken out while in use: if this poll is cancelled by the loop's
        // timeout, the half-used link is dropped and the next poll starts
        // clean.
        let link = match slot.take() {
            Some(l) if l.usable() => l,
            Some(stale) => {
                close_quietly(stale.conn);
                self.connect().await?
            }
            None => self.connect().await?,
        };
        let declared = link
            .channel
            .queue_declare(
                self.cfg.queue.as_str().into(),
                lapin::options::QueueDeclareOptions::default().passive(),
                lapin::types::FieldTable::default(),
            )
            .await;
        match declared {
            Ok(q) => {
                *slot = Some(link);
                Ok(AmqpCounts {
                    ready: q.message_count(),
                    consumers: q.consumer_count(),
                })
            }
            Err(e) => {
                // A 404 closes only the channel, but a fresh link is simpler
                // than telling the cases apart, and errors are rare.
                close_quietly(link.conn);
                Err(map_amqp_error(&e, &self.what()))
            }
        }
    }

    /// `GET {base}/api/{kind}/{vhost}/{name}{suffix}` with the source's
    /// credentials; `what` names the object in errors.
    async fn management_get(
        &self,
        base: &str,
        kind: &str,
        name: &str,
        suffix: &str,
        what: &str,
    ) -> Result<Vec<u8>, SourceError> {
        let (uri, _) = self.uri()?;
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let url = format!(
            "{}/api/{kind}/{}/{}{suffix}",
            base.trim_end_matches('/'),
            enc(&uri.vhost),
            enc(name)
        );
        let auth = http_client::basic_auth(
            &uri.authority.userinfo.username,
            &uri.authority.userinfo.password,
        )?;
        let resp = self
            .http
            .get(&url, &[(hyper::header::AUTHORIZATION, auth)], self.timeout)
            .await?;
        if resp.status != 200 {
            return Err(http_client::status_error(
                &resp,
                &format!("management API, {what}"),
            ));
        }
        Ok(resp.body.to_vec())
    }

    async fn management(&self, base: &str) -> Result<ManagementQueue, SourceError> {
        let body = self
            .management_get(base, "queues", &self.cfg.queue, "", &self.what())
            .await?;
        parse_management_queue(&body)
    }

    /// The dead-letter queues of `target`: by queue name for the default
    /// exchange, else from the exchange's bindings (cached for a minute).
    async fn dead_letter_names(
        &self,
        base: &str,
        target: &DeadLetterTarget,
    ) -> Result<Vec<String>, SourceError> {
        if target.exchange.is_empty() {
            // The default exchange delivers to the queue named by the key.
            return Ok(target
                .routing_key
                .iter()
                .filter(|k| !k.is_empty() && **k != self.cfg.queue)
                .cloned()
                .collect());
        }
        let mut cache = self.bindings.lock().await;
        if let Some((t, at, queues)) = cache.as_ref()
            && t == target
            && at.elapsed() < BINDINGS_TTL
        {
            return Ok(queues.clone());
        }
        let what = format!("bindings of dead-letter exchange {:?}", target.exchange);
        let body = self
            .management_get(
                base,
                "exchanges",
                &target.exchange,
                "/bindings/source",
                &what,
            )
            .await?;
        let queues = dead_letter_queues(&body, target.routing_key.as_deref(), &self.cfg.queue)?;
        *cache = Some((target.clone(), Instant::now(), queues.clone()));
        Ok(queues)
    }

    /// Fill the sample's dead-letter depth: the configured queue, else the
    /// ones the queue's dead-letter exchange leads to. A failure is a note.
    async fn dead_letter(&self, base: &str, mgmt: &ManagementQueue, s: &mut Sample) {
        let (names, how) = match (&self.cfg.dead_letter_queue, &mgmt.dead_letter) {
            (Some(q), _) => (Ok(vec![q.clone()]), "configured".to_string()),
            (None, Some(t)) => (
                self.dead_letter_names(base, t).await,
                format!(
                    "discovered from {} {:?}",
                    t.set_by,
                    if t.exchange.is_empty() {
                        "(default exchange)"
                    } else {
                        t.exchange.as_str()
                    }
                ),
            ),
            (None, None) => return,
        };
        let names = match names {
            Ok(n) if n.is_empty() => {
                s.notes.push(format!(
                    "dead-letter queue unknown: no queue is bound to the dead-letter exchange                      ({how}), so dead-lettered messages are dropped"
                ));
                return;
            }
            Ok(n) => n,
            Err(e) => {
                s.notes.push(format!("dead-letter queue unknown: {e}"));
                return;
            }
        };
        s.dead_letter_queue = Some(format!("{} ({how})", names.join(", ")));
        let mut total = 0u64;
        for q in &names {
            let what = format!("dead-letter queue {q:?}");
            let depth = self
                .management_get(base, "queues", q, "", &what)
                .await
                .and_then(|b| parse_management_queue(&b));
            match depth.map(|m| m.messages.or(m.ready)) {
                Ok(Some(n)) => total = total.saturating_add(n),
                Ok(None) => {
                    s.notes.push(format!(
                        "dead-letter queue depth unknown: the management API has no count for {q:?} yet"
                    ));
                    return;
                }
                Err(e) => {
                    s.notes
                        .push(format!("dead-letter queue depth unknown: {e}"));
                    return;
                }
            }
        }
        s.dead_letter = Some(total);
    }
}

/// Close a connection in the background, bounded, ignoring errors: it is
/// being abandoned either way.
fn close_quietly(conn: Connection) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            conn.close(200, "qscale reconnecting".into()),
        )
        .await;
    });
}

#[async_trait]
impl QueueSource for RabbitmqSource {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn sample(&self) -> Result<Sample, SourceError> {
        let at = SystemTime::now();
        let started = Instant::now();
        let amqp = tokio::time::timeout(self.timeout, self.amqp_counts())
            .await
            .map_err(|_| SourceError::Timeout(self.timeout))??;
        let Some(base) = &self.cfg.management_url else {
            return Ok(build_sample(at, amqp, None));
        };
        let mgmt = self.management(base).await?;
        let mut s = build_sample(at, amqp, Some(&mgmt));
        // What is left of the sample's time, less a margin so the control
        // loop's own bound (the same timeout) does not fire first: a slow
        // dead-letter lookup costs the extra, never the sample.
        let deadline = started + self.timeout.mul_f64(0.9);
        if tokio::time::timeout_at(deadline, self.dead_letter(base, &mgmt, &mut s))
            .await
            .is_err()
        {
            s.notes.push(format!(
                "dead-letter queue depth unknown: no answer within {:?}",
                self.timeout
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RabbitmqSourceConfig {
        RabbitmqSourceConfig {
            url: "amqp://guest@127.0.0.1:5672/%2f".into(),
            queue: "jobs".into(),
            vhost: None,
            username: None,
            password_env: Some("RABBITMQ_PASSWORD".into()),
            password_file: None,
            management_url: Some("http://127.0.0.1:15672".into()),
            count_in_flight: true,
            dead_letter_queue: None,
        }
    }

    #[test]
    fn validation_table() {
        let cases: Vec<(RabbitmqSourceConfig, Option<&str>)> = vec![
            (cfg(), None),
            (
                RabbitmqSourceConfig {
                    url: "amqps://u@broker:5671/orders".into(),
                    management_url: None,
                    ..cfg()
                },
                None,
            ),
            (
                RabbitmqSourceConfig {
                    url: "http://broker".into(),
                    ..cfg()
                },
                Some("s.url: \"http://broker\" is not an amqp:// or amqps:// URL"),
            ),
            (
                RabbitmqSourceConfig {
                    url: "amqp://guest:hunter2@broker".into(),
                    ..cfg()
                },
                Some("s.url: must not contain a password"),
            ),
            (
                RabbitmqSourceConfig {
                    queue: String::new(),
                    ..cfg()
                },
                Some("s.queue: must not be empty"),
            ),
            (
                RabbitmqSourceConfig {
                    queue: "q".repeat(256),
                    ..cfg()
                },
                Some("s.queue: must be at most 255 bytes"),
            ),
            (
                RabbitmqSourceConfig {
                    vhost: Some(String::new()),
                    ..cfg()
                },
                Some("s.vhost: must not be empty"),
            ),
            (
                RabbitmqSourceConfig {
                    password_file: Some("/pw".into()),
                    ..cfg()
                },
                Some("s.password_file: give password_env or password_file, not both"),
            ),
            (
                RabbitmqSourceConfig {
                    management_url: Some("rabbit:15672".into()),
                    ..cfg()
                },
                Some("s.management_url: \"rabbit:15672\" is not an http"),
            ),
            (
                RabbitmqSourceConfig {
                    management_url: Some("http://u:hunter2@rabbit:15672".into()),
                    ..cfg()
                },
                Some("s.management_url: must not contain a password"),
            ),
            (
                RabbitmqSourceConfig {
                    dead_letter_queue: Some("jobs-dlq".into()),
                    ..cfg()
                },
                None,
            ),
            (
                RabbitmqSourceConfig {
                    dead_letter_queue: Some(String::new()),
                    ..cfg()
                },
                Some("s.dead_letter_queue: must be 1-255 bytes"),
            ),
            (
                RabbitmqSourceConfig {
                    dead_letter_queue: Some("jobs-dlq".into()),
                    management_url: None,
                    ..cfg()
                },
                Some("s.dead_letter_queue: needs management_url"),
            ),
        ];
        crate::validate::assert_validation_table(&cases, |c, path, p| c.validate(path, p));
    }

    #[test]
    fn capabilities_follow_the_management_url() {
        let with = cfg().capabilities();
        assert!(with.in_flight && with.oldest_age && with.arrival_rate && with.count_in_flight);
        let without = RabbitmqSourceConfig {
            management_url: None,
            ..cfg()
        }
        .capabilities();
        assert!(!without.in_flight && !without.oldest_age && !without.arrival_rate);
        assert!(!without.count_in_flight);
    }

    #[test]
    fn the_vhost_comes_from_the_field_then_the_url_then_slash() {
        assert_eq!(cfg().effective_vhost(), "/");
        let from_url = RabbitmqSourceConfig {
            url: "amqp://h/orders".into(),
            ..cfg()
        };
        assert_eq!(from_url.effective_vhost(), "orders");
        let field = RabbitmqSourceConfig {
            vhost: Some("billing".into()),
            ..from_url
        };
        assert_eq!(field.effective_vhost(), "billing");
        assert_eq!(
            field.describe(),
            "rabbitmq queue jobs on h:5672 (vhost billing) with management API"
        );
    }

    #[test]
    fn management_queue_parsing_table() {
        let full = br#"{"name":"jobs","vhost":"/","consumers":2,"messages":10,
            "messages_ready":7,"messages_unacknowledged":3,
            "message_stats":{"publish":10,"publish_details":{"rate":2.5}},
            "head_message_timestamp":1700000000}"#;
        let fresh = br#"{"name":"jobs","vhost":"/","consumers":0}"#;
        let odd = br#"{"messages_ready":-1,"messages_unacknowledged":"3",
            "message_stats":{"publish_details":{"rate":-4}},"head_message_timestamp":null}"#;
        let cases: Vec<(&[u8], Result<ManagementQueue, &str>)> = vec![
            (
                full,
                Ok(ManagementQueue {
                    ready: Some(7),
                    unacknowledged: Some(3),
                    messages: Some(10),
                    consumers: Some(2),
                    publish_rate: Some(2.5),
                    head_message_timestamp: Some(1_700_000_000.0),
                    dead_letter: None,
                }),
            ),
            (
                fresh,
                Ok(ManagementQueue {
                    consumers: Some(0),
                    ..Default::default()
                }),
            ),
            (odd, Ok(ManagementQueue::default())),
            (b"[1,2]", Err("expected a JSON object")),
            (b"<html>login</html>", Err("not a JSON object")),
            (b"", Err("not a JSON object")),
        ];
        for (body, want) in cases {
            let got = parse_management_queue(body);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (Err(e), Err(w)) => {
                    assert_eq!(e.metric_label(), "invalid_response");
                    assert!(e.to_string().contains(w), "{e}");
                }
                (g, w) => panic!("{}: got {g:?}, want {w:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn the_dead_letter_exchange_comes_from_the_argument_else_the_policy() {
        let parse = |body: &str| parse_management_queue(body.as_bytes()).unwrap().dead_letter;
        let both = r#"{"arguments":{"x-dead-letter-exchange":"dlx","x-dead-letter-routing-key":"failed"},
            "policy":"p","effective_policy_definition":{"dead-letter-exchange":"other"}}"#;
        assert_eq!(
            parse(both),
            Some(DeadLetterTarget {
                exchange: "dlx".into(),
                routing_key: Some("failed".into()),
                set_by: "argument x-dead-letter-exchange".into(),
            })
        );
        let policy = r#"{"arguments":{},"policy":"dlx-all",
            "effective_policy_definition":{"dead-letter-exchange":"dlx"}}"#;
        assert_eq!(
            parse(policy),
            Some(DeadLetterTarget {
                exchange: "dlx".into(),
                routing_key: None,
                set_by: "policy dlx-all".into(),
            })
        );
        assert_eq!(parse(r#"{"arguments":{"x-message-ttl":5}}"#), None);
        assert_eq!(parse(r#"{"effective_policy_definition":[]}"#), None);
    }

    #[test]
    fn dead_letter_queues_are_the_queues_bound_to_the_exchange() {
        let body = br##"[
            {"source":"dlx","destination":"jobs-dlq","destination_type":"queue","routing_key":"failed"},
            {"source":"dlx","destination":"audit","destination_type":"queue","routing_key":"#"},
            {"source":"dlx","destination":"jobs","destination_type":"queue","routing_key":"failed"},
            {"source":"dlx","destination":"other-x","destination_type":"exchange","routing_key":"failed"},
            {"source":"dlx","destination":"jobs-dlq","destination_type":"queue","routing_key":"again"}
        ]"##;
        let cases: [(Option<&str>, Vec<&str>); 3] = [
            (Some("failed"), vec!["jobs-dlq"]),
            (Some("nobody-binds-this"), vec!["audit", "jobs-dlq"]),
            (None, vec!["audit", "jobs-dlq"]),
        ];
        for (key, want) in cases {
            assert_eq!(
                dead_letter_queues(body, key, "jobs").unwrap(),
                want,
                "routing key {key:?}"
            );
        }
        assert!(dead_letter_queues(b"[]", None, "jobs").unwrap().is_empty());
        let e = dead_letter_queues(b"{}", None, "jobs").unwrap_err();
        assert_eq!(e.metric_label(), "invalid_response");
    }

    #[test]
    fn amqp_only_samples_say_in_flight_is_unknown() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = build_sample(
            at,
            AmqpCounts {
                ready: 7,
                consumers: 1,
            },
            None,
        );
        assert_eq!(s.visible, Some(7));
        assert_eq!(s.consumers, Some(1));
        assert_eq!(s.in_flight, None);
        assert_eq!(s.oldest_age, None);
        assert_eq!(s.notes, vec![AMQP_ONLY_NOTE.to_string()]);
    }

    #[test]
    fn sample_arithmetic_table() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let m = |unacked: Option<u64>, head: Option<f64>| ManagementQueue {
            ready: Some(99),
            unacknowledged: unacked,
            consumers: Some(5),
            publish_rate: Some(1.5),
            head_message_timestamp: head,
            ..ManagementQueue::default()
        };
        // (ready, mgmt, in_flight, oldest age seconds, has a note)
        let cases = [
            (
                7,
                m(Some(3), Some(1_700_000_000.0)),
                Some(3),
                Some(100.0),
                false,
            ),
            (
                7,
                m(Some(3), Some(1_700_000_200.0)),
                Some(3),
                Some(0.0),
                false,
            ),
            (0, m(Some(3), None), Some(3), Some(0.0), false),
            (7, m(Some(3), None), Some(3), None, true),
            (7, m(None, Some(1_700_000_000.0)), None, Some(100.0), true),
        ];
        for (ready, mgmt, in_flight, age, note) in cases {
            let s = build_sample(
                at,
                AmqpCounts {
                    ready,
                    consumers: 2,
                },
                Some(&mgmt),
            );
            assert_eq!(s.visible, Some(u64::from(ready)), "AMQP's live count wins");
            assert_eq!(s.consumers, Some(2));
            assert_eq!(s.in_flight, in_flight);
            assert_eq!(s.arrival_rate, Some(1.5));
            assert_eq!(s.oldest_age.map(|d| d.as_secs_f64()), age);
            assert_eq!(!s.notes.is_empty(), note, "{:?}", s.notes);
        }
    }

    #[test]
    fn amqp_error_mapping_table() {
        use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPHardError, AMQPSoftError};
        let proto = |kind: AMQPErrorKind| -> lapin::Error {
            ErrorKind::ProtocolError(AMQPError::new(kind, "text".into())).into()
        };
        let cases: Vec<(lapin::Error, &str)> = vec![
            (
                proto(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)),
                "not_found",
            ),
            (
                proto(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)),
                "access_denied",
            ),
            (
                proto(AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)),
                "access_denied",
            ),
            (
                proto(AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)),
                "unavailable",
            ),
            (
                ErrorKind::IOError(std::sync::Arc::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )))
                .into(),
                "unavailable",
            ),
            (ErrorKind::MissingHeartbeatError.into(), "unavailable"),
            (
                ErrorKind::AuthProviderError("bad".into()).into(),
                "access_denied",
            ),
        ];
        for (e, label) in cases {
            let got = map_amqp_error(&e, "queue \"q\"");
            assert_eq!(got.metric_label(), label, "{e:?} -> {got}");
            assert!(got.to_string().contains("queue \"q\""), "{got}");
        }
    }

    #[test]
    fn debug_output_of_the_source_never_shows_a_password() {
        let src = RabbitmqSource {
            cfg: RabbitmqSourceConfig {
                url: "amqp://u:hunter2@h/%2f".into(),
                management_url: Some("http://u:hunter2@h:15672".into()),
                ..cfg()
            },
            timeout: Duration::from_secs(1),
            link: Mutex::new(None),
            http: HttpClient::new(),
            bindings: Mutex::new(None),
        };
        let shown = format!("{src:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u:***@h"), "{shown}");
    }
}
