//! The HTTP endpoints: /metrics, /healthz, /readyz, /status, each scaler's
//! history and chart, and an HTML index page.
//!
//! - `/metrics`: Prometheus text format (see docs/metrics.md).
//! - `/healthz`: the process is alive and serving.
//! - `/readyz`: every scaler completed a poll within three poll intervals,
//!   or is in its fallback (a state /status explains) and could still read
//!   its target; 503 lists the rest.
//! - `/status`: JSON per scaler: last sample, current and desired replicas,
//!   the reasons of the last decision, last error, fallback and pause state.
//!   It never contains credentials: sources and targets keep those to
//!   themselves and only a sample's numbers and notes are shown.
//! - `/status/<scaler>/history`: JSON, the scaler's recent history (see
//!   [`crate::timeline`]); `/chart/<scaler>.svg` draws it.
//! - `/`: an HTML page listing every scaler with its last decision and
//!   chart ([`page`]).
//!
//! Scaler names may contain `/`, so the per-scaler paths are matched as a
//! whole rather than segment by segment. An unknown scaler is a 404 with a
//! JSON body `{"error": "..."}`.
//!
//! Bind `server.listen = "127.0.0.1:9090"` to keep all of this local.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::status::{ScalerStatus, StatusBoard};
use crate::timeline;

pub mod page;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "cannot listen on {addr}: {reason}; choose another address with server.listen or QSCALE__SERVER__LISTEN"
    )]
    Bind { addr: SocketAddr, reason: String },
}

impl HttpError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            HttpError::Bind { .. } => "bind",
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    status: Arc<StatusBoard>,
}

#[derive(Serialize)]
struct StatusBody {
    version: &'static str,
    leader: bool,
    scalers: Vec<ScalerStatus>,
}

/// The router, for serving and for tests.
pub fn router(metrics: Arc<Metrics>, status: Arc<StatusBoard>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(index))
        .route("/status", get(status_all))
        .route("/status/{*path}", get(status_path))
        .route("/chart/{*file}", get(chart))
        .with_state(AppState { metrics, status })
}

/// Bind `addr` now (so a port in use is reported at start-up), then serve
/// until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    status: Arc<StatusBoard>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| HttpError::Bind {
            addr,
            reason: e.to_string(),
        })?;
    let local = listener.local_addr().unwrap_or(addr);
    let app = router(metrics, status);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok((local, handle))
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.status.readiness(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(problems) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
            .into_response(),
    }
}

async fn status_all(State(s): State<AppState>) -> Response {
    let body = StatusBody {
        version: crate::VERSION,
        leader: s.metrics.leader.get() == 1,
        scalers: s.status.all(),
    };
    axum::Json(body).into_response()
}

fn not_found(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({ "error": format!("no scaler named {name:?}") })),
    )
        .into_response()
}

/// `/status/<scaler>` or `/status/<scaler>/history`; a scaler named
/// `x/history` wins over the history of `x`.
async fn status_path(State(s): State<AppState>, Path(path): Path<String>) -> Response {
    if let Some(st) = s.status.get(&path) {
        return axum::Json(st).into_response();
    }
    if let Some(name) = path.strip_suffix("/history") {
        return match s.status.history(name) {
            Some(h) => axum::Json(h).into_response(),
            None => not_found(name),
        };
    }
    not_found(&path)
}

async fn chart(State(s): State<AppState>, Path(file): Path<String>) -> Response {
    let name = file.strip_suffix(".svg").unwrap_or(&file);
    let Some(history) = s.status.history(name) else {
        return not_found(name);
    };
    match timeline::chart::render_svg(&history) {
        Ok(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            svg,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(scaler = name, error = %e, "chart");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

async fn index(State(s): State<AppState>) -> Response {
    let html = page::index(crate::VERSION, s.metrics.leader.get() == 1, &s.status.all());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}
