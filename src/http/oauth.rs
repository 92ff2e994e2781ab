//! The Slack install flow in the browser: `/slack/install` redirects to Slack's consent
//! screen with a signed `state`; `/slack/oauth/callback` checks the state, and hands the
//! code to the installer, and shows a small page saying what happened.
//!
//! Owns request parsing, the state check and the pages. Every refusal (bad, expired or
//! replayed state, denied consent, a Slack error) is a clear page that changes nothing.
//! Never shows a token or a Slack error body.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use tracing::{info, warn};

use super::{HttpState, InstallOutcome};
use crate::oauth_state::{self, SLACK_INSTALL};
use crate::upgrade::{self, PermissionLevel};

/// Path of the callback, under `http.public_url`.
pub const CALLBACK_PATH: &str = "slack/oauth/callback";

#[derive(Debug, Deserialize)]
pub struct InstallQuery {
    /// Binds the flow to one workspace (used by "Update permissions").
    team: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /slack/install`: redirect to Slack's consent screen.
pub async fn install(State(http): State<HttpState>, Query(query): Query<InstallQuery>) -> Response {
    let Some(oauth) = &http.slack_oauth else {
        return page(
            StatusCode::NOT_FOUND,
            "Install through Slack is not set up",
            &paragraph(
                "The operator has not configured slack.client_id and slack.client_secret. \
                 Ask them to, or install the app from its settings page on api.slack.com.",
            ),
        );
    };
    if let Some(team) = &query.team {
        if !http.backend.slack_team_allowed(team) {
            return page(
                StatusCode::FORBIDDEN,
                "Installation not allowed",
                &paragraph(
                    "This bitbucket-slack is not open to that workspace: its operator allows only some workspaces (slack.allowed_teams). Nothing was stored.",
                ),
            );
        }
    }
    let location = authorize_location(&http, oauth, query.team);
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// The full URL of Slack's consent screen for a new state.
pub fn authorize_location(
    http: &HttpState,
    oauth: &super::SlackOAuth,
    team: Option<String>,
) -> String {
    let signed = oauth_state::issue(
        &http.state_key(),
        SLACK_INSTALL,
        oauth_state::random_nonce(),
        team.clone(),
        None,
        http.clock.now(),
    );
    let mut url = oauth.authorize_url.clone();
    url.query_pairs_mut()
        .append_pair("client_id", &oauth.config.client_id)
        .append_pair("scope", &upgrade::required_scopes().join(","))
        .append_pair("redirect_uri", &oauth.redirect_uri)
        .append_pair("state", &signed);
    if let Some(team) = team {
        url.query_pairs_mut().append_pair("team", &team);
    }
    url.to_string()
}

/// `GET /slack/oauth/callback`: finish the install.
pub async fn callback(
    State(http): State<HttpState>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(oauth) = &http.slack_oauth else {
        return page(
            StatusCode::NOT_FOUND,
            "Install through Slack is not set up",
            &paragraph("Nothing was changed."),
        );
    };
    let claims = match http
        .consume_state(SLACK_INSTALL, query.state.as_deref())
        .await
    {
        Ok(claims) => claims,
        Err(error) => {
            warn!(%error, "install callback refused");
            return page(
                StatusCode::BAD_REQUEST,
                "Installation not completed",
                &paragraph(error.message()),
            );
        }
    };
    if let Some(error) = query.error {
        info!(%error, "install was not approved in Slack");
        let body = if error == "access_denied" {
            "You cancelled the installation in Slack. Nothing was changed.".to_string()
        } else {
            format!("Slack reported `{error}`. Nothing was changed.")
        };
        return page(StatusCode::OK, "Installation cancelled", &paragraph(&body));
    }
    let Some(code) = query.code.filter(|code| !code.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Installation not completed",
            &paragraph("Slack sent no approval code. Start again."),
        );
    };
    match http
        .backend
        .complete_slack_install(
            &oauth.config,
            &code,
            &oauth.redirect_uri,
            claims.team_id.as_deref(),
        )
        .await
    {
        InstallOutcome::Installed { team_name, scopes } => {
            let level = upgrade::permission_level(&scopes);
            page(
                StatusCode::OK,
                "Bitbucket is installed",
                &installed_body(&team_name, &scopes, &level),
            )
        }
        InstallOutcome::NotAllowed { message } => page(
            StatusCode::FORBIDDEN,
            "Installation not allowed",
            &paragraph(&message),
        ),
        InstallOutcome::Failed { message } => page(
            StatusCode::BAD_GATEWAY,
            "Installation not completed",
            &paragraph(&message),
        ),
    }
}

fn installed_body(team_name: &str, scopes: &[String], level: &PermissionLevel) -> String {
    let mut body = format!(
        "<p>The app is installed in <strong>{}</strong>. Type <code>/bitbucket help</code> in any channel to start.</p>\
         <p>Permissions granted: {}.</p>",
        escape(team_name),
        escape(&scopes.join(", "))
    );
    match level {
        PermissionLevel::Current => {
            body.push_str("<p>It has every permission this version needs.</p>")
        }
        other => body.push_str(&format!(
            "<p>Still missing: {}. Some features stay off until an admin approves them.</p>",
            escape(&other.missing().join(", "))
        )),
    }
    body
}

/// A small HTML page. `body_html` is HTML: build it with [`paragraph`] or escape it.
pub(super) fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:40em;margin:4em auto;line-height:1.5}}</style></head>\
         <body><h1>{title}</h1>{body_html}</body></html>",
        title = escape(title),
    );
    (status, Html(html)).into_response()
}

/// One paragraph of plain text.
pub(super) fn paragraph(text: &str) -> String {
    format!("<p>{}</p>", escape(text))
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
