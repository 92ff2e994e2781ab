//! The daemon's small HTTP server: `/healthz` and `/readyz` (the OAuth redirects join
//! it later). Slack never calls it; operators' probes and admins' browsers do.
//!
//! Owns routing and response shapes only. Must never expose a token, a secret or an
//! admin action.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::slack::socket::SocketHealth;
use crate::store::Store;

/// What the probes look at.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub sockets: SocketHealth,
    pub store: Store,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    let (status, body) = readiness(&state);
    (status, Json(body))
}

/// Ready when at least one socket has had `hello` and the store answers.
pub fn readiness(state: &HttpState) -> (StatusCode, Value) {
    let mut reasons = Vec::new();
    let connected = state.sockets.connected_count();
    if connected == 0 {
        reasons.push("no Slack socket has received hello yet".to_string());
    }
    if let Err(error) = state.store.check() {
        reasons.push(format!("the store does not answer: {error}"));
    }
    let ready = reasons.is_empty();
    let body = json!({
        "ready": ready,
        "reasons": reasons,
        "sockets_connected": connected,
        "sockets": state.sockets.snapshot(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}
