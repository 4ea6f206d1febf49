//! Prometheus source: anything already in Prometheus, through an instant
//! PromQL query.
//!
//! Many queues already export their depth to Prometheus (Kafka lag
//! exporters, Celery/Sidekiq exporters, RabbitMQ's own plugin, application
//! metrics). `query` must return one number (a one-element instant vector
//! or a scalar), the visible count; optional `in_flight_query`,
//! `oldest_age_query` and `arrival_rate_query` fill the other fields. All
//! queries of one poll run concurrently against `GET /api/v1/query`
//! (Prometheus, Thanos, Mimir, VictoriaMetrics all serve it).
//!
//! A query that returns nothing is an error by default, not zero: an absent
//! series usually means a broken exporter, and reading it as an empty queue
//! would scale workers down. `empty_as_zero = true` opts in for queries whose
//! series legitimately disappear when the queue is empty. Several series,
//! strings, range vectors, NaN and negative counts are `invalid_response`
//! with a hint (aggregate with `sum()`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::clients::Clients;
use crate::clients::http::{self as http_client, HttpClient, HttpResponse};
use crate::clients::secret::{self, Credentials, UsernameRule, redact_url};
use crate::contract::{Capabilities, QueueSource, Sample, SourceError};
use crate::sources::SourceSpec;
use crate::sources::{age_from_secs, count_from_f64, non_negative};
use crate::validate::{Problems, default_true, http_url, no_password_in_url};

/// `source.kind = "prometheus"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSourceConfig {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus:9090`
    /// (`/api/v1/query` is appended). For Thanos or Mimir, include the
    /// path prefix, e.g. `http://mimir/prometheus`.
    pub url: String,

    /// PromQL returning one number: the waiting (visible) messages, e.g.
    /// `sum(rabbitmq_queue_messages_ready{queue="jobs"})`.
    pub query: String,

    /// PromQL returning the in-flight (received, unacknowledged) messages.
    #[serde(default)]
    pub in_flight_query: Option<String>,

    /// PromQL returning the age of the oldest waiting message, in seconds.
    #[serde(default)]
    pub oldest_age_query: Option<String>,

    /// PromQL returning the arrival rate in messages per second, e.g.
    /// `sum(rate(jobs_enqueued_total[1m]))`.
    #[serde(default)]
    pub arrival_rate_query: Option<String>,

    /// Read an empty result as 0 instead of an error. Leave off unless the
    /// series disappears when the queue is empty: a missing series more
    /// often means a broken exporter.
    #[serde(default)]
    pub empty_as_zero: bool,

    /// Environment variable holding a bearer token
    /// (`Authorization: Bearer ...`), e.g. `PROMETHEUS_TOKEN`.
    #[serde(default)]
    pub token_env: Option<String>,

    /// File holding a bearer token, e.g. a projected service-account token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,

    /// User for HTTP basic authentication (with `password_env` or
    /// `password_file`).
    #[serde(default)]
    pub username: Option<String>,

    /// Environment variable holding the basic-auth password.
    #[serde(default)]
    pub password_env: Option<String>,

    /// File holding the basic-auth password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,

    /// Tenant for multi-tenant backends (Mimir, Cortex), sent as
    /// `X-Scope-OrgID`.
    #[serde(default)]
    pub tenant: Option<String>,

    /// Count the in-flight query's value as backlog.
    #[serde(default = "default_true")]
    pub count_in_flight: bool,
}

impl PrometheusSourceConfig {
    /// The credential fields, for their shared rules and reading.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials {
            username: self.username.as_deref(),
            password_env: self.password_env.as_deref(),
            password_file: self.password_file.as_ref(),
        }
    }

    /// The instant-query URL for `query`.
    pub fn query_url(&self, query: &str) -> String {
        let q: String = percent_encoding::utf8_percent_encode(query, QUERY_VALUE).to_string();
        format!("{}/api/v1/query?query={q}", self.url.trim_end_matches('/'))
    }

    /// The range-query URL for `query` evaluated every `step_seconds` from
    /// `start` to `end` (Unix seconds, both inclusive, as Prometheus reads
    /// them).
    pub fn query_range_url(&self, query: &str, start: u64, end: u64, step_seconds: u64) -> String {
        let q: String = percent_encoding::utf8_percent_encode(query, QUERY_VALUE).to_string();
        format!(
            "{}/api/v1/query_range?query={q}&start={start}&end={end}&step={step_seconds}",
            self.url.trim_end_matches('/')
        )
    }

    /// The headers every request carries: the bearer token or basic
    /// authentication (secrets read now, so a rotated one is picked up)
    /// and the tenant.
    pub fn request_headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, SourceError> {
        let mut h = Vec::new();
        if let Some(token) =
            secret::resolve_from_process(self.token_env.as_deref(), self.token_file.as_ref())?
        {
            h.push((
                AUTHORIZATION,
                http_client::bearer_auth(token.expose().trim())?,
            ));
        }
        if let (Some(user), Some(pw)) = (&self.username, self.credentials().password()?) {
            h.push((AUTHORIZATION, http_client::basic_auth(user, pw.expose())?));
        }
        if let Some(t) = &self.tenant {
            let v = HeaderValue::from_str(t)
                .map_err(|_| SourceError::Config("tenant contains invalid characters".into()))?;
            h.push((HeaderName::from_static("x-scope-orgid"), v));
        }
        Ok(h)
    }
}

/// The `errorType` and `error` of a Prometheus API answer that reports an
/// error (`"status": "error"`), `None` for any other answer.
pub fn api_error(v: &serde_json::Value) -> Option<(String, String)> {
    if v.get("status").and_then(serde_json::Value::as_str) != Some("error") {
        return None;
    }
    let field = |name: &str, default: &str| {
        v.get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    Some((field("errorType", "unknown"), field("error", "no message")))
}

#[async_trait]
impl SourceSpec for PrometheusSourceConfig {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            oldest_age: self.oldest_age_query.is_some(),
            arrival_rate: self.arrival_rate_query.is_some(),
            in_flight: self.in_flight_query.is_some(),
            delayed: false,
            count_in_flight: self.count_in_flight && self.in_flight_query.is_some(),
            count_delayed: false,
        }
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        http_url(p, &format!("{path}.url"), &redact_url(&self.url));
        no_password_in_url(p, &format!("{path}.url"), &self.url);
        if self.url.contains("/api/v1") {
            p.push(
                format!("{path}.url"),
                "give the base URL; /api/v1/query is appended",
            );
        }
        if self.query.trim().is_empty() {
            p.push(format!("{path}.query"), "must not be empty");
        }
        for (field, q) in [
            ("in_flight_query", &self.in_flight_query),
            ("oldest_age_query", &self.oldest_age_query),
            ("arrival_rate_query", &self.arrival_rate_query),
        ] {
            if let Some(q) = q
                && q.trim().is_empty()
            {
                p.push(format!("{path}.{field}"), "must not be empty when given");
            }
        }
        secret::validate_pair(
            p,
            path,
            "token",
            self.token_env.as_deref(),
            self.token_file.as_ref(),
        );
        let creds = self.credentials();
        creds.validate(path, UsernameRule::WithPasswordOnly, p);
        let has_pw = creds.has_password();
        if has_pw && (self.token_env.is_some() || self.token_file.is_some()) {
            p.push(
                format!("{path}.token_env"),
                "use a bearer token or basic authentication, not both",
            );
        }
    }

    fn describe(&self) -> String {
        format!(
            "prometheus query {:?} at {}",
            self.query,
            redact_url(&self.url)
        )
    }

    fn identity(&self) -> String {
        format!("{} {}", self.url, self.query)
    }

    async fn build(
        &self,
        _clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn QueueSource>, SourceError> {
        Ok(Arc::new(PrometheusSource::new(self.clone(), timeout)))
    }
}

/// Characters escaped in a query-string value: everything but unreserved.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Parse an `/api/v1/query` response into its one value. `None` means an
/// empty result (no series).
pub fn parse_query_response(resp: &HttpResponse, query: &str) -> Result<Option<f64>, SourceError> {
    let v: serde_json::Value = match serde_json::from_slice(&resp.body) {
        Ok(v) => v,
        Err(_) => {
            // Not JSON: a proxy's login page, a wrong path, a plain-text
            // error. The status says more than the body then.
            if !(200..300).contains(&resp.status) {
                return Err(http_client::status_error(resp, &format!("query {query:?}")));
            }
            return Err(SourceError::InvalidResponse(format!(
                "query {query:?}: the answer is not Prometheus JSON ({}): {}",
                resp.content_type.as_deref().unwrap_or("no content type"),
                resp.snippet()
            )));
        }
    };
    let status = v.get("status").and_then(serde_json::Value::as_str);
    if status == Some("error") || !(200..300).contains(&resp.status) {
        let (kind, msg) = api_error(&v).unwrap_or_else(|| ("unknown".into(), "no message".into()));
        let text = format!("query {query:?}: Prometheus answered {kind}: {msg}");
        return Err(match (resp.status, kind.as_str()) {
            (401 | 403, _) => SourceError::AccessDenied(text),
            (_, "timeout") => SourceError::Unavailable(text),
            (_, "unavailable" | "internal" | "canceled") => SourceError::Unavailable(text),
            (500..=599, _) => SourceError::Unavailable(text),
            _ => SourceError::InvalidResponse(text),
        });
    }
    if status != Some("success") {
        return Err(SourceError::InvalidResponse(format!(
            "query {query:?}: the answer has no \"status\": \"success\""
        )));
    }
    let data = v.get("data");
    let rtype = data
        .and_then(|d| d.get("resultType"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("missing");
    let result = data.and_then(|d| d.get("result"));
    let sample_value = |pair: Option<&serde_json::Value>| -> Result<f64, SourceError> {
        let s = pair
            .and_then(|p| p.get(1))
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| {
                SourceError::InvalidResponse(format!(
                    "query {query:?}: a {rtype} result without a [time, \"value\"] pair"
                ))
            })?;
        s.parse::<f64>().map_err(|_| {
            SourceError::InvalidResponse(format!("query {query:?}: value {s:?} is not a number"))
        })
    };
    match rtype {
        "scalar" => sample_value(result).map(Some),
        "vector" => {
            let series = result
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| {
                    SourceError::InvalidResponse(format!(
                        "query {query:?}: vector without a result list"
                    ))
                })?;
            match series.len() {
                0 => Ok(None),
                1 => sample_value(series[0].get("value")).map(Some),
                n => Err(SourceError::InvalidResponse(format!(
                    "query {query:?} returned {n} series; aggregate them to one, e.g. sum(...)"
                ))),
            }
        }
        "matrix" => Err(SourceError::InvalidResponse(format!(
            "query {query:?} returned a range vector; use an instant vector (drop the [range] or wrap it in a function)"
        ))),
        "string" => Err(SourceError::InvalidResponse(format!(
            "query {query:?} returned a string, not a number"
        ))),
        other => Err(SourceError::InvalidResponse(format!(
            "query {query:?}: unknown result type {other:?}"
        ))),
    }
}

/// The live Prometheus source.
pub struct PrometheusSource {
    cfg: PrometheusSourceConfig,
    timeout: Duration,
    http: HttpClient,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("url", &redact_url(&self.cfg.url))
            .field("query", &self.cfg.query)
            .finish()
    }
}

impl PrometheusSource {
    pub fn new(cfg: PrometheusSourceConfig, timeout: Duration) -> PrometheusSource {
        PrometheusSource {
            cfg,
            timeout,
            http: HttpClient::new(),
        }
    }

    async fn value(
        &self,
        query: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Option<f64>, SourceError> {
        let resp = self
            .http
            .get(&self.cfg.query_url(query), headers, self.timeout)
            .await?;
        let v = parse_query_response(&resp, query)?;
        match v {
            Some(v) => Ok(Some(v)),
            None if self.cfg.empty_as_zero => Ok(Some(0.0)),
            None => Err(SourceError::InvalidResponse(format!(
                "query {query:?} returned no series (set empty_as_zero = true if that means an empty queue)"
            ))),
        }
    }

    async fn optional(
        &self,
        query: Option<&String>,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Option<f64>, SourceError> {
        match query {
            Some(q) => self.value(q, headers).await,
            None => Ok(None),
        }
    }
}

#[async_trait]
impl QueueSource for PrometheusSource {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    async fn sample(&self) -> Result<Sample, SourceError> {
        let at = SystemTime::now();
        let h = self.cfg.request_headers()?;
        let (visible, in_flight, age, rate) = tokio::try_join!(
            self.value(&self.cfg.query, &h),
            self.optional(self.cfg.in_flight_query.as_ref(), &h),
            self.optional(self.cfg.oldest_age_query.as_ref(), &h),
            self.optional(self.cfg.arrival_rate_query.as_ref(), &h),
        )?;
        let mut s = Sample::empty(at);
        s.visible = visible.map(|v| count_from_f64(v, "query")).transpose()?;
        s.in_flight = in_flight
            .map(|v| count_from_f64(v, "in_flight_query"))
            .transpose()?;
        s.oldest_age = age
            .map(|v| age_from_secs(v, "oldest_age_query"))
            .transpose()?;
        s.arrival_rate = rate
            .map(|v| non_negative(v, "arrival_rate_query"))
            .transpose()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PrometheusSourceConfig {
        PrometheusSourceConfig {
            url: "http://127.0.0.1:9090".into(),
            query: "sum(queue_depth)".into(),
            in_flight_query: None,
            oldest_age_query: None,
            arrival_rate_query: None,
            empty_as_zero: false,
            token_env: None,
            token_file: None,
            username: None,
            password_env: None,
            password_file: None,
            tenant: None,
            count_in_flight: true,
        }
    }

    #[test]
    fn validation_table() {
        let cases: Vec<(PrometheusSourceConfig, Option<&str>)> = vec![
            (cfg(), None),
            (
                PrometheusSourceConfig {
                    username: Some("u".into()),
                    password_env: Some("PROM_PASSWORD".into()),
                    in_flight_query: Some("sum(x)".into()),
                    ..cfg()
                },
                None,
            ),
            (
                PrometheusSourceConfig {
                    url: "prometheus:9090".into(),
                    ..cfg()
                },
                Some("s.url: \"prometheus:9090\" is not an http"),
            ),
            (
                PrometheusSourceConfig {
                    url: "http://p:9090/api/v1/query".into(),
                    ..cfg()
                },
                Some("s.url: give the base URL"),
            ),
            (
                PrometheusSourceConfig {
                    url: "http://u:hunter2@p:9090".into(),
                    ..cfg()
                },
                Some("s.url: must not contain a password"),
            ),
            (
                PrometheusSourceConfig {
                    query: " ".into(),
                    ..cfg()
                },
                Some("s.query: must not be empty"),
            ),
            (
                PrometheusSourceConfig {
                    oldest_age_query: Some(String::new()),
                    ..cfg()
                },
                Some("s.oldest_age_query: must not be empty when given"),
            ),
            (
                PrometheusSourceConfig {
                    username: Some("u".into()),
                    ..cfg()
                },
                Some("s.username: basic authentication needs"),
            ),
            (
                PrometheusSourceConfig {
                    username: Some("u".into()),
                    password_env: Some("P".into()),
                    token_env: Some("T".into()),
                    ..cfg()
                },
                Some("s.token_env: use a bearer token or basic"),
            ),
        ];
        crate::validate::assert_validation_table(&cases, |c, path, p| c.validate(path, p));
    }

    #[test]
    fn the_query_is_percent_encoded_into_the_url() {
        let c = PrometheusSourceConfig {
            url: "http://p:9090/".into(),
            ..cfg()
        };
        assert_eq!(
            c.query_url("sum(q{name=\"a b\"}) + 1"),
            "http://p:9090/api/v1/query?query=sum%28q%7Bname%3D%22a%20b%22%7D%29%20%2B%201"
        );
    }

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            content_type: Some("application/json".into()),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn query_response_parsing_table() {
        let vector1 = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"queue":"jobs"},"value":[1700000000.123,"42"]}]}}"#;
        let vector0 = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        let vector2 = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"2.5"]}}"#;
        let nan = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        let text_value =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"many"]}}"#;
        let string = r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let bad_data =
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
        let unavailable = r#"{"status":"error","errorType":"unavailable","error":"overloaded"}"#;
        type Want = Result<Option<f64>, (&'static str, &'static str)>;
        let cases: Vec<(HttpResponse, Want)> = vec![
            (resp(200, vector1), Ok(Some(42.0))),
            (resp(200, vector0), Ok(None)),
            (resp(200, scalar), Ok(Some(2.5))),
            (
                resp(200, vector2),
                Err(("invalid_response", "returned 2 series; aggregate")),
            ),
            (
                resp(200, string),
                Err(("invalid_response", "returned a string")),
            ),
            (resp(200, matrix), Err(("invalid_response", "range vector"))),
            (
                resp(200, text_value),
                Err(("invalid_response", "\"many\" is not a number")),
            ),
            (
                resp(400, bad_data),
                Err(("invalid_response", "bad_data: parse error at char 5")),
            ),
            (resp(503, unavailable), Err(("unavailable", "overloaded"))),
            (
                resp(200, "queue_depth 42\n"),
                Err(("invalid_response", "not Prometheus JSON")),
            ),
            (
                resp(401, "Unauthorized"),
                Err(("access_denied", "HTTP 401")),
            ),
            (
                resp(404, "404 page not found"),
                Err(("not_found", "HTTP 404")),
            ),
            (
                resp(200, r#"{"data":{}}"#),
                Err(("invalid_response", "no \"status\"")),
            ),
        ];
        for (r, want) in cases {
            let got = parse_query_response(&r, "q");
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{}", r.snippet()),
                (Err(e), Err((label, text))) => {
                    assert_eq!(e.metric_label(), label, "{e}");
                    assert!(e.to_string().contains(text), "want {text:?}: {e}");
                }
                (g, w) => panic!("{}: got {g:?}, want {w:?}", r.snippet()),
            }
        }
        // NaN parses as a number here; the sample refuses it as a count.
        let v = parse_query_response(&resp(200, nan), "q").unwrap().unwrap();
        assert!(count_from_f64(v, "query").is_err());
    }
}
