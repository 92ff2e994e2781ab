//! Linking a Bitbucket account in the browser: `/bitbucket/login` checks the signed state
//! from the Slack button, shows whom the account will be connected to (the Slack user and
//! workspace) and binds the flow to this browser with a short-lived cookie; Continue goes
//! to Bitbucket's consent page. `/bitbucket/oauth/callback` refuses a browser without
//! that cookie, uses the state up, hands the code to the accounts service, and says
//! which account was linked.
//!
//! Every refusal (bad, expired or replayed state, denied consent, a Bitbucket error) is
//! a clear page that changes nothing. Never shows a token.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use tracing::{info, warn};

use super::oauth::{escape, page, paragraph};
use super::{HttpState, LoginOutcome};
use crate::oauth_state::{self, BITBUCKET_LOGIN};

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

/// The cookie that binds a login state to the browser that opened the confirmation page.
pub const LOGIN_COOKIE: &str = "bitbucket_slack_login";

/// The cookie's value for a state: an HMAC of its nonce, so it cannot be made without the
/// daemon's key and belongs to one flow.
fn browser_binding(key: &[u8; 32], nonce: &str) -> String {
    oauth_state::bind(key, "browser", nonce)
}

/// The `Set-Cookie` value: short-lived, HttpOnly, SameSite=Lax (sent on Bitbucket's
/// redirect back, never on a cross-site request), Secure behind https.
fn set_cookie(http: &HttpState, value: &str, max_age: i64) -> String {
    let secure = if http.backend.served_over_https() {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{LOGIN_COOKIE}={value}; Max-Age={max_age}; Path=/bitbucket; HttpOnly; SameSite=Lax{secure}"
    )
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn refused(status: StatusCode, text: &str) -> Response {
    page(status, TITLE_FAILED, &paragraph(text))
}

/// `GET /bitbucket/login?state=...`: a page naming the Slack user and workspace the
/// account will be connected to, with Continue to Bitbucket's consent page. Sets the
/// cookie that the callback checks.
pub async fn login(State(http): State<HttpState>, Query(query): Query<LoginQuery>) -> Response {
    let Some(signed) = query.state else {
        return refused(
            StatusCode::BAD_REQUEST,
            oauth_state::StateError::Malformed.message(),
        );
    };
    let claims = match oauth_state::verify(
        &http.state_key(),
        BITBUCKET_LOGIN,
        &signed,
        http.clock.now(),
    ) {
        Ok(claims) => claims,
        Err(error) => return refused(StatusCode::BAD_REQUEST, error.message()),
    };
    let consent = match http.backend.bitbucket_authorize_url(&signed) {
        Ok(url) => url,
        Err(message) => return refused(StatusCode::NOT_FOUND, &message),
    };
    let (Some(team_id), Some(user_id)) = (&claims.team_id, &claims.user_id) else {
        return refused(
            StatusCode::BAD_REQUEST,
            oauth_state::StateError::Malformed.message(),
        );
    };
    let (person, workspace) = http.backend.login_page_names(team_id, user_id).await;
    let body = format!(
        "<p>You are connecting your Bitbucket account to <strong>@{person}</strong> in <strong>{workspace}</strong>.</p>\
         <p>Continue only if you are @{person} and you started this from Slack yourself. If someone sent you this link, close this page: continuing would give them your Bitbucket access.</p>\
         <p><a href=\"{consent}\" style=\"display:inline-block;padding:.6em 1.2em;background:#0052cc;color:#fff;border-radius:4px;text-decoration:none\">Continue to Bitbucket</a></p>",
        person = escape(&person),
        workspace = escape(&workspace),
        consent = escape(consent.as_str()),
    );
    let cookie = set_cookie(
        &http,
        &browser_binding(&http.state_key(), &claims.nonce),
        oauth_state::STATE_LIFETIME.as_secs(),
    );
    let mut response = page(StatusCode::OK, "Connect your Bitbucket account", &body);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /bitbucket/oauth/callback`: link the account, if this browser is the one that
/// confirmed on the login page.
pub async fn callback(
    State(http): State<HttpState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let mut response = finish(&http, &headers, query).await;
    // The binding is single-use, like the state.
    if let Ok(value) = HeaderValue::from_str(&set_cookie(&http, "", 0)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn finish(http: &HttpState, headers: &HeaderMap, query: CallbackQuery) -> Response {
    // The browser check comes before the state is used up, so a forged callback cannot
    // burn the person's own flow.
    let claims = match oauth_state::verify(
        &http.state_key(),
        BITBUCKET_LOGIN,
        query.state.as_deref().unwrap_or(""),
        http.clock.now(),
    ) {
        Ok(claims) => claims,
        Err(error) => {
            warn!(%error, "Bitbucket login callback refused");
            return refused(StatusCode::BAD_REQUEST, error.message());
        }
    };
    let expected = browser_binding(&http.state_key(), &claims.nonce);
    let bound = cookie_value(headers, LOGIN_COOKIE)
        .is_some_and(|value| oauth_state::constant_time_eq(value.as_bytes(), expected.as_bytes()));
    if !bound {
        warn!(
            "Bitbucket login callback from a browser that did not confirm on the login page; refused"
        );
        return refused(
            StatusCode::FORBIDDEN,
            "This browser did not start this connection. For your safety nothing was changed: open the link from /bitbucket login in Slack yourself, in this browser, and continue from there.",
        );
    }
    let claims = match http
        .consume_state(BITBUCKET_LOGIN, query.state.as_deref())
        .await
    {
        Ok(claims) => claims,
        Err(error) => {
            warn!(%error, "Bitbucket login callback refused");
            return refused(StatusCode::BAD_REQUEST, error.message());
        }
    };
    if let Some(error) = query.error {
        info!(%error, "Bitbucket consent not given");
        let text = if error == "access_denied" {
            "You cancelled on Bitbucket's page. Nothing was changed.".to_string()
        } else {
            format!("Bitbucket reported `{error}`. Nothing was changed.")
        };
        return page(StatusCode::OK, TITLE_FAILED, &paragraph(&text));
    }
    let Some(code) = query.code.filter(|code| !code.is_empty()) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "Bitbucket sent no approval code. Run /bitbucket login again.",
        );
    };
    match http.backend.complete_bitbucket_login(&claims, &code).await {
        LoginOutcome::Linked { display_name } => page(
            StatusCode::OK,
            "Bitbucket account connected",
            &format!(
                "<p>Your Slack account is now connected to the Bitbucket account <strong>{}</strong>. You can close this page.</p>",
                escape(&display_name)
            ),
        ),
        LoginOutcome::AlreadyLinked { message } => refused(StatusCode::CONFLICT, &message),
        LoginOutcome::Failed { message } => refused(StatusCode::BAD_GATEWAY, &message),
    }
}
