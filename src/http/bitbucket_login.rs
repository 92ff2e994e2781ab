//! Linking a Bitbucket account in the browser: `/bitbucket/login` checks the signed state
//! from the Slack button and sends the browser to Bitbucket's consent page;
//! `/bitbucket/oauth/callback` uses the state up and hands the code to the accounts
//! service, then says which account was linked.
//!
//! Every refusal (bad, expired or replayed state, denied consent, a Bitbucket error) is
//! a clear page that changes nothing. Never shows a token.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::{info, warn};

use super::HttpState;
use super::oauth::{escape, page, paragraph};
use super::state;
use crate::app::accounts::BITBUCKET_LOGIN;

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    state: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

const TITLE_FAILED: &str = "Bitbucket account not connected";

/// `GET /bitbucket/login?state=...`: on to Bitbucket's consent page.
pub async fn login(State(http): State<HttpState>, Query(query): Query<LoginQuery>) -> Response {
    let Some(signed) = query.state else {
        return page(
            StatusCode::BAD_REQUEST,
            TITLE_FAILED,
            &paragraph(state::StateError::Malformed.message()),
        );
    };
    if let Err(error) = state::verify(
        &http.state_key(),
        BITBUCKET_LOGIN,
        &signed,
        http.clock.now(),
    ) {
        return page(
            StatusCode::BAD_REQUEST,
            TITLE_FAILED,
            &paragraph(error.message()),
        );
    }
    match http.accounts.authorize_url(&signed) {
        Ok(url) => (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response(),
        Err(error) => page(
            StatusCode::NOT_FOUND,
            TITLE_FAILED,
            &paragraph(&error.user_message()),
        ),
    }
}

/// `GET /bitbucket/oauth/callback`: link the account.
pub async fn callback(
    State(http): State<HttpState>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let claims = match http
        .consume_state(BITBUCKET_LOGIN, query.state.as_deref())
        .await
    {
        Ok(claims) => claims,
        Err(error) => {
            warn!(%error, "Bitbucket login callback refused");
            return page(
                StatusCode::BAD_REQUEST,
                TITLE_FAILED,
                &paragraph(error.message()),
            );
        }
    };
    if let Some(error) = query.error {
        info!(%error, "Bitbucket consent not given");
        let text = if error == "access_denied" {
            "You cancelled on Bitbucket's page. Nothing was changed.".to_string()
        } else {
            format!("Bitbucket reported `{error}`. Nothing was changed.")
        };
        return page(
            StatusCode::OK,
            "Bitbucket account not connected",
            &paragraph(&text),
        );
    }
    let Some(code) = query.code.filter(|code| !code.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            TITLE_FAILED,
            &paragraph("Bitbucket sent no approval code. Run /bitbucket login again."),
        );
    };
    match http.accounts.complete_login(&claims, &code).await {
        Ok(link) => page(
            StatusCode::OK,
            "Bitbucket account connected",
            &format!(
                "<p>Your Slack account is now connected to the Bitbucket account <strong>{}</strong>. You can close this page.</p>",
                escape(&link.display_name)
            ),
        ),
        Err(error) => {
            warn!(%error, "Bitbucket login failed");
            page(
                StatusCode::BAD_GATEWAY,
                TITLE_FAILED,
                &paragraph(&error.user_message()),
            )
        }
    }
}
