//! The daemon's small HTTP server: `/healthz`, `/readyz` and the Slack install flow
//! (`/slack/install`, `/slack/oauth/callback`). Slack never calls it; operators' probes
//! and admins' browsers do, so an intranet URL works.
//!
//! Owns routing and response shapes only; sockets, connection limits and timeouts are
//! `server`'s. Must never expose a token, a secret or an admin action.

pub mod bitbucket_login;
pub mod oauth;
pub mod server;
pub mod state;

pub use server::HttpSettings;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use url::Url;

use crate::app::accounts::Accounts;
use crate::app::installations::Installer;
use crate::clock::Clock;
use crate::config::SlackOAuthConfig;
use crate::metrics::{Metrics, PhaseLabel, StateLabel};
use crate::slack::socket::SocketHealth;
use crate::store::Store;

/// The OAuth install settings the routes need.
#[derive(Debug, Clone)]
pub struct SlackOAuth {
    pub config: SlackOAuthConfig,
    pub authorize_url: Url,
    /// `{http.public_url}slack/oauth/callback`, sent to Slack and checked by it.
    pub redirect_uri: String,
}

/// What the routes work with.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub sockets: SocketHealth,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub installer: Installer,
    pub accounts: Accounts,
    /// `None` when slack.client_id / client_secret are not configured.
    pub slack_oauth: Option<SlackOAuth>,
    pub metrics: Metrics,
    /// The supervised components' states, for `/readyz`.
    pub components: crate::app::supervisor::Components,
}

impl HttpState {
    /// The key that signs OAuth states.
    fn state_key(&self) -> [u8; 32] {
        self.store.oauth_state_key()
    }

    /// Verifies a state for `purpose` and uses up its nonce: each state works once, and
    /// the nonce is on disk before the flow goes on, so a crash cannot make it reusable.
    pub(crate) async fn consume_state(
        &self,
        purpose: &str,
        state: Option<&str>,
    ) -> Result<state::StateClaims, state::StateError> {
        let state = state.ok_or(state::StateError::Malformed)?;
        let now = self.clock.now();
        let claims = state::verify(&self.state_key(), purpose, state, now)?;
        let first = self
            .store
            .dedup
            .first_sighting(crate::store::DedupKind::OAuthState, &claims.nonce, now)
            .map_err(|_| state::StateError::Replayed)?;
        if !first {
            return Err(state::StateError::Replayed);
        }
        if let Err(error) = self.store.flush().await {
            tracing::warn!(%error, "could not persist a used OAuth state");
            return Err(state::StateError::Replayed);
        }
        Ok(claims)
    }
}

/// The callback URL under `public_url`.
pub fn redirect_uri(public_url: &Url) -> String {
    let base = public_url.as_str().trim_end_matches('/');
    format!("{base}/{}", oauth::CALLBACK_PATH)
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/slack/install", get(oauth::install))
        .route("/slack/oauth/callback", get(oauth::callback))
        .route("/bitbucket/login", get(bitbucket_login::login))
        .route("/bitbucket/oauth/callback", get(bitbucket_login::callback))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, within `settings`' limits (see [`server`]); then
/// lets requests in progress finish within the drain deadline.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    settings: HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let metrics = state.metrics.clone();
    server::run(listener, router(state), settings, metrics, shutdown).await;
    Ok(())
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /metrics`: Prometheus text; gauges read from their sources at scrape time.
async fn metrics(State(state): State<HttpState>) -> impl axum::response::IntoResponse {
    state
        .metrics
        .sockets_connected
        .set(state.sockets.connected_count() as i64);
    state
        .metrics
        .outbox_depth
        .set(state.store.deliveries.depth() as i64);
    if let Ok(dead) = state.store.deliveries.dead_letters() {
        state.metrics.dead_letters.set(dead.len() as i64);
    }
    if let Ok(installations) = state.store.installations.list() {
        for name in ["active", "tokens_revoked", "uninstalled"] {
            let count = installations
                .iter()
                .filter(|installation| installation.state.as_str() == name)
                .count();
            state
                .metrics
                .installations
                .get_or_create(&StateLabel { state: name.into() })
                .set(count as i64);
        }
    }
    if let Ok(campaigns) = state.store.campaigns.list() {
        use crate::upgrade::campaign::Phase;
        for phase in [
            Phase::NotNeeded,
            Phase::Announced,
            Phase::Available,
            Phase::Overdue,
            Phase::Upgraded,
        ] {
            let count = campaigns.iter().filter(|(_, c)| c.phase == phase).count();
            state
                .metrics
                .campaign_phase
                .get_or_create(&PhaseLabel {
                    phase: phase.name().into(),
                })
                .set(count as i64);
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    let written = state.store.check_write().await;
    if written.is_err() {
        state.metrics.store_write_failures.inc();
    }
    let (status, body) = readiness(&state, written.err());
    (status, Json(body))
}

/// Ready when at least one socket has had `hello`, the store answers and writes
/// (`write_failure` is what [`Store::check_write`] found), and every component runs.
pub fn readiness(
    state: &HttpState,
    write_failure: Option<crate::store::StoreError>,
) -> (StatusCode, Value) {
    let mut reasons = Vec::new();
    let connected = state.sockets.connected_count();
    if connected == 0 {
        reasons.push("no Slack socket has received hello yet".to_string());
    }
    if let Err(error) = state.store.check() {
        reasons.push(format!("the store does not answer: {error}"));
    }
    if let Some(error) = write_failure {
        reasons.push(format!(
            "the store cannot write ({error}): free disk space or check the disk"
        ));
    }
    reasons.extend(state.components.unhealthy());
    let ready = reasons.is_empty();
    let body = json!({
        "ready": ready,
        "reasons": reasons,
        "sockets_connected": connected,
        "sockets": state.sockets.snapshot(),
        "components": state.components.snapshot(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}
