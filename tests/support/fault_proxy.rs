//! A fault-injecting HTTP proxy in front of the real test API server.
//!
//! A real kube-apiserver does not answer 429 with Retry-After, 500, hang or
//! drop a connection on demand, yet those are the failures a scaler meets in
//! production. The proxy accepts plain HTTP from the client under test and
//! forwards each request over HTTPS (verified with the test CA) to the API
//! server, passing the client's `Authorization` header through, unless a
//! scripted fault applies to it. It also keeps a log of what it saw, so a
//! test can count how many writes really reached the server.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What to do to a request instead of (or after) forwarding it.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds, if given) without
    /// forwarding.
    Status(u16, Option<u64>),
    /// Never answer (until the client gives up).
    Hang,
    /// Close the connection without answering, without forwarding.
    Drop,
    /// Forward, let the server apply it, then close the connection without
    /// passing the answer on: the client cannot know it worked.
    DropAfterForward,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub fault: Option<Fault>,
    /// Status the upstream answered, when forwarded.
    pub upstream_status: Option<u16>,
}

struct Rule {
    method: Option<Method>,
    remaining: usize,
    fault: Fault,
}

#[derive(Default)]
struct State {
    rules: Mutex<VecDeque<Rule>>,
    seen: Mutex<Vec<Seen>>,
}

impl State {
    /// The fault for this request, consuming one use of the first rule
    /// that matches.
    fn take_fault(&self, method: &Method) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let i = rules
            .iter()
            .position(|r| r.remaining > 0 && r.method.as_ref().is_none_or(|m| m == method))?;
        let rule = &mut rules[i];
        rule.remaining -= 1;
        let f = rule.fault.clone();
        if rule.remaining == 0 {
            rules.remove(i);
        }
        Some(f)
    }
}

/// A running proxy; it lives until the test process ends.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`: point the client under test here.
    pub url: String,
    state: Arc<State>,
}

impl FaultProxy {
    /// Start a proxy forwarding to the server of `upstream`, a config whose
    /// credentials are ignored (the client's own header is passed through).
    pub async fn start(upstream: &kube::Config) -> FaultProxy {
        let mut cfg = upstream.clone();
        cfg.auth_info = Default::default();
        cfg.default_retry = false;
        let upstream = kube::Client::try_from(cfg).expect("upstream client");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let state = Arc::new(State::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, st.clone(), upstream.clone()));
                    // A service error (our Drop) ends the connection.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FaultProxy { url, state }
    }

    /// The next `n` requests (any method) get `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.push(None, n, fault);
    }

    /// The next `n` requests with `method` get `fault`.
    pub fn fail_next_method(&self, method: Method, n: usize, fault: Fault) {
        self.push(Some(method), n, fault);
    }

    fn push(&self, method: Option<Method>, n: usize, fault: Fault) {
        self.state.rules.lock().unwrap().push_back(Rule {
            method,
            remaining: n,
            fault,
        });
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Writes (PUT/PATCH/POST) the server accepted with a 2xx.
    pub fn applied_writes(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| {
                s.method == Method::PUT || s.method == Method::PATCH || s.method == Method::POST
            })
            .filter(|s| s.upstream_status.is_some_and(|c| (200..300).contains(&c)))
            .count()
    }

    /// Requests with `method` that reached the server at all.
    pub fn forwarded(&self, method: Method) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.upstream_status.is_some())
            .count()
    }

    /// Forget what was seen (after setting the stage).
    pub fn clear_log(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}
impl std::error::Error for Dropped {}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    upstream: kube::Client,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let fault = state.take_fault(&method);
    let record = |upstream_status: Option<u16>| {
        state.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            fault: fault.clone(),
            upstream_status,
        });
    };
    match &fault {
        Some(Fault::Status(code, retry_after)) => {
            record(None);
            let mut resp = Response::builder()
                .status(StatusCode::from_u16(*code).unwrap())
                .header("content-type", "application/json");
            if let Some(s) = retry_after {
                resp = resp.header("retry-after", s.to_string());
            }
            let body = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("injected {code} by the fault proxy"), "code": code
            });
            return Ok(resp.body(Full::new(Bytes::from(body.to_string()))).unwrap());
        }
        Some(Fault::Hang) => {
            record(None);
            tokio::time::sleep(Duration::from_secs(120)).await;
            return Err(Dropped);
        }
        Some(Fault::Drop) => {
            record(None);
            return Err(Dropped);
        }
        Some(Fault::DropAfterForward) | None => {}
    }

    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = Request::builder().method(parts.method).uri(path.as_str());
    for (k, v) in parts.headers.iter() {
        if k != http::header::HOST && k != http::header::CONNECTION {
            out = out.header(k, v);
        }
    }
    let out = out.body(kube::client::Body::from(body.to_vec())).unwrap();
    let resp = match upstream.send(out).await {
        Ok(r) => r,
        Err(_) => {
            record(None);
            return Err(Dropped);
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect_bytes().await.unwrap_or_default();
    record(Some(status.as_u16()));
    if fault == Some(Fault::DropAfterForward) {
        return Err(Dropped);
    }
    let mut r = Response::builder().status(status);
    for (k, v) in headers.iter() {
        if k != http::header::TRANSFER_ENCODING
            && k != http::header::CONNECTION
            && k != http::header::CONTENT_LENGTH
        {
            r = r.header(k, v);
        }
    }
    Ok(r.body(Full::new(bytes)).unwrap())
}
