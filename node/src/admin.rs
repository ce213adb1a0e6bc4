//! The admin HTTP endpoints: `/metrics` for Prometheus, `/healthz` for liveness
//! (the process serves), `/readyz` for readiness (the node takes traffic; false while
//! it drains).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::{
    Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get,
};

use crate::metrics::Metrics;

#[derive(Debug, Clone)]
struct AdminState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

pub fn router(metrics: Metrics, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(AdminState { metrics, ready })
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readiness(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}
