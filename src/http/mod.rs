//! The daemon's small HTTP server: `/healthz`, `/readyz` and the Slack install flow
//! (`/slack/install`, `/slack/oauth/callback`). Slack never calls it; operators' probes
//! and admins' browsers do, so an intranet URL works.
//!
//! Owns routing and response shapes only; sockets, connection limits and timeouts are
//! `server`'s. What the pages need from the rest of the daemon (finishing an install or
//! an account link, the supervised components' health) is the [`Backend`] trait, which
//! `app/` implements: `http` never imports `app`. Must never expose a token, a secret or
//! an admin action.

pub mod bitbucket_login;
pub mod oauth;
pub mod server;

pub use server::HttpSettings;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use url::Url;

use crate::clock::Clock;
use crate::config::SlackOAuthConfig;
use crate::metrics::{Metrics, PhaseLabel, StateLabel};
use crate::oauth_state::{self, StateClaims};
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

/// A future the [`Backend`] returns; boxed so the trait can be a trait object.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a Slack install's callback ended, for its page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallOutcome {
    Installed {
        team_name: String,
        scopes: Vec<String>,
    },
    /// The operator's `slack.allowed_teams` does not include the workspace: nothing was
    /// stored (and the issued token was revoked).
    NotAllowed { message: String },
    /// Slack or the store failed; `message` is for the person (the cause is logged).
    Failed { message: String },
}

/// How a Bitbucket account link's callback ended, for its page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    Linked {
        display_name: String,
    },
    /// The Bitbucket account is linked to someone else already: nothing was changed.
    AlreadyLinked {
        message: String,
    },
    /// Not configured, Bitbucket refused, or the store failed; `message` is for the person.
    Failed {
        message: String,
    },
}

/// What the pages need from the rest of the daemon. `app/` implements it; every method's
/// refusal is already a message for the person in the browser, with the cause logged by
/// the implementation.
pub trait Backend: Send + Sync + 'static {
    /// Whether `slack.allowed_teams` lets this Slack team (or Grid) install.
    fn slack_team_allowed(&self, team: &str) -> bool;
    /// Exchanges an install's code for a token and stores the installation.
    fn complete_slack_install<'a>(
        &'a self,
        oauth: &'a SlackOAuthConfig,
        code: &'a str,
        redirect_uri: &'a str,
        bound_team: Option<&'a str>,
    ) -> BackendFuture<'a, InstallOutcome>;
    /// Bitbucket's consent page for a signed login state, or why linking is not possible.
    fn bitbucket_authorize_url(&self, signed_state: &str) -> Result<Url, String>;
    /// The Slack person's and workspace's names, for the login confirmation page.
    fn login_page_names<'a>(
        &'a self,
        team_id: &'a str,
        user_id: &'a str,
    ) -> BackendFuture<'a, (String, String)>;
    /// Exchanges a login's code for the person's Bitbucket tokens and stores the link.
    fn complete_bitbucket_login<'a>(
        &'a self,
        claims: &'a StateClaims,
        code: &'a str,
    ) -> BackendFuture<'a, LoginOutcome>;
    /// Whether the daemon is reached over https (the login cookie is then `Secure`).
    fn served_over_https(&self) -> bool;
    /// Why supervised components are not healthy (empty when all run).
    fn unhealthy_components(&self) -> Vec<String>;
    /// Each supervised component's state, for `/readyz`'s body.
    fn components_snapshot(&self) -> Value;
}

/// What the routes work with.
#[derive(Clone)]
pub struct HttpState {
    pub sockets: SocketHealth,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub backend: Arc<dyn Backend>,
    /// `None` when slack.client_id / client_secret are not configured.
    pub slack_oauth: Option<SlackOAuth>,
    pub metrics: Metrics,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("slack_oauth", &self.slack_oauth)
            .finish_non_exhaustive()
    }
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
    ) -> Result<StateClaims, oauth_state::StateError> {
        let state = state.ok_or(oauth_state::StateError::Malformed)?;
        let now = self.clock.now();
        let claims = oauth_state::verify(&self.state_key(), purpose, state, now)?;
        let first = self
            .store
            .dedup
            .first_sighting(crate::store::DedupKind::OAuthState, &claims.nonce, now)
            .map_err(|_| oauth_state::StateError::Replayed)?;
        if !first {
            return Err(oauth_state::StateError::Replayed);
        }
        if let Err(error) = self.store.flush().await {
            tracing::warn!(%error, "could not persist a used OAuth state");
            return Err(oauth_state::StateError::Replayed);
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
    reasons.extend(state.backend.unhealthy_components());
    let ready = reasons.is_empty();
    let body = json!({
        "ready": ready,
        "reasons": reasons,
        "sockets_connected": connected,
        "sockets": state.sockets.snapshot(),
        "components": state.backend.components_snapshot(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}
