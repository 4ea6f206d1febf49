//! A small HTTP GET client for sources that read an HTTP API (Prometheus,
//! the RabbitMQ management API).
//!
//! It is hyper with rustls on the *ring* provider and the system's root
//! certificates: the crates are already in the build for kube and the AWS
//! SDK, so this adds no compile time and keeps one TLS provider in the
//! process (see `aws.rs` for why that matters). Every request is bounded by
//! a timeout and a body-size limit, and failures map to the bounded
//! [`SourceError`] labels with the URL redacted.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::clients::secret::redact_url;
use crate::contract::SourceError;

/// Largest response body read; an API answer for one queue or one instant
/// query is a few KiB, so anything bigger is a mistake (a wrong URL serving
/// a page, a query returning thousands of series).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One HTTP response, body read in full.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as text for error messages: at most 200 characters, one line.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let one_line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        one_line.trim().to_string()
    }
}

/// A reusable HTTP(S) client; cheap to clone (connections are pooled).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    pub fn new() -> HttpClient {
        let provider = rustls::crypto::ring::default_provider();
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        // A container without CA certificates can still reach plain http://
        // endpoints; https ones then fail at the handshake with a clear
        // "unknown issuer" instead of the whole source failing to build.
        let builder = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(b) => b,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder_with_provider(provider.into())
                    .with_safe_default_protocol_versions()
                    .map(|b| {
                        b.with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    })
                    .unwrap_or_else(|_| {
                        rustls::ClientConfig::builder()
                            .with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    }),
            ),
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        HttpClient { client }
    }

    /// GET `url` with extra `headers`, giving up after `timeout`.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Result<HttpResponse, SourceError> {
        let shown = redact_url(url);
        let mut req = hyper::Request::get(url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| SourceError::Config(format!("bad URL {shown}: {e}")))?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| {
                // The innermost cause says "Connection refused" or the TLS
                // problem; hyper's own text is only "client error (Connect)".
                let mut cause: &dyn std::error::Error = &e;
                while let Some(next) = cause.source() {
                    cause = next;
                }
                SourceError::Unavailable(format!("GET {shown}: {cause}"))
            })?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    SourceError::InvalidResponse(format!("GET {shown}: reading the body: {e}"))
                })?
                .to_bytes();
            Ok(HttpResponse {
                status,
                content_type,
                body,
            })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout(timeout)),
        }
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

/// `Authorization: Basic ...` for a user and password.
pub fn basic_auth(user: &str, password: &str) -> Result<HeaderValue, SourceError> {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {token}"))
        .map_err(|_| SourceError::Config("credentials contain invalid characters".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// `Authorization: Bearer ...` for a token.
pub fn bearer_auth(token: &str) -> Result<HeaderValue, SourceError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| SourceError::Config("the bearer token contains invalid characters".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Map a non-2xx status to the bounded error labels, with `what` naming
/// the thing asked for ("queue q in vhost /").
pub fn status_error(resp: &HttpResponse, what: &str) -> SourceError {
    let detail = format!("{what}: HTTP {} {}", resp.status, resp.snippet());
    match resp.status {
        401 | 403 => SourceError::AccessDenied(detail),
        404 => SourceError::NotFound(detail),
        429 => SourceError::Throttled(detail),
        500..=599 => SourceError::Unavailable(detail),
        _ => SourceError::InvalidResponse(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            content_type: None,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn status_error_table() {
        let cases = [
            (401, "access_denied"),
            (403, "access_denied"),
            (404, "not_found"),
            (429, "throttled"),
            (503, "unavailable"),
            (400, "invalid_response"),
            (302, "invalid_response"),
        ];
        for (status, label) in cases {
            assert_eq!(
                status_error(&resp(status, "x"), "q").metric_label(),
                label,
                "{status}"
            );
        }
    }

    #[test]
    fn the_snippet_is_one_short_line() {
        let long = format!("line1\nline2\t{}", "x".repeat(500));
        let s = resp(500, &long).snippet();
        assert!(!s.contains('\n'));
        assert!(s.chars().count() <= 200);
        assert!(s.starts_with("line1 line2"));
    }

    #[test]
    fn auth_headers_are_marked_sensitive_so_hyper_never_logs_them() {
        assert!(basic_auth("guest", "guest").unwrap().is_sensitive());
        assert_eq!(
            basic_auth("guest", "guest").unwrap().to_str().unwrap(),
            "Basic Z3Vlc3Q6Z3Vlc3Q="
        );
        assert!(bearer_auth("t").unwrap().is_sensitive());
        assert!(bearer_auth("bad\ntoken").is_err());
    }
}
