//! The Slack Web API, through slack-morphism: the calls the daemon makes and their errors.
//!
//! Owns the HTTP client (one, shared by every workspace), the base URL from
//! `slack.api_url`, and turning slack-morphism's errors into [`SlackError`]. Must never
//! put a token into an error, a log line or a panic: tokens travel only in the
//! `Authorization` header that slack-morphism builds.

use std::sync::Arc;
use std::time::Duration;

use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use url::Url;

use crate::commands::Reply;
use crate::config::Secret;

use super::convert;

/// What went wrong calling Slack, without the response body (it can echo request data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    #[error("Slack answered {method} with error `{code}`")]
    Api { method: &'static str, code: String },
    #[error("Slack rate-limited {method} (retry after {retry_after:?})")]
    RateLimited {
        method: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("Slack answered {method} with HTTP {status}")]
    Http { method: &'static str, status: u16 },
    #[error("could not reach Slack for {method}: {cause}")]
    Transport { method: &'static str, cause: String },
    #[error("Slack gave {method} an unusable answer: {cause}")]
    Protocol { method: &'static str, cause: String },
}

/// Error codes that mean a token is dead: retrying cannot help, a person must act.
const FATAL_AUTH_CODES: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "user_removed_from_team",
    "team_disabled",
];

impl SlackError {
    /// True when the token was refused for good (revoked, invalid, ...).
    pub fn is_fatal_auth(&self) -> bool {
        matches!(self, SlackError::Api { code, .. } if FATAL_AUTH_CODES.contains(&code.as_str()))
    }

    fn from_client(method: &'static str, error: SlackClientError) -> Self {
        match error {
            SlackClientError::ApiError(api) => SlackError::Api {
                method,
                code: api.code,
            },
            SlackClientError::RateLimitError(limit) => SlackError::RateLimited {
                method,
                retry_after: limit.retry_after,
            },
            SlackClientError::HttpError(http) => SlackError::Http {
                method,
                status: http.status_code.as_u16(),
            },
            SlackClientError::ProtocolError(protocol) => SlackError::Protocol {
                method,
                cause: protocol.json_error.to_string(),
            },
            other => SlackError::Transport {
                method,
                cause: other.to_string(),
            },
        }
    }
}

/// The Web API client. Cheap to clone.
#[derive(Clone)]
pub struct SlackWeb {
    client: Arc<SlackHyperClient>,
}

impl std::fmt::Debug for SlackWeb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackWeb")
    }
}

impl SlackWeb {
    /// A client for the Web API at `api_url` (http or https; tests use a fake on loopback).
    pub fn new(api_url: &Url) -> Result<Self, SlackError> {
        // rustls needs one process-wide crypto provider; ring is the only one we link.
        // Installing it twice is harmless (the second attempt reports an error we ignore).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|error| SlackError::Transport {
                method: "(client setup)",
                cause: format!("no CA certificates found (install ca-certificates): {error}"),
            })?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let base = api_url.as_str().trim_end_matches('/');
        let connector = SlackClientHyperConnector::with_connector(https).with_slack_api_url(base);
        Ok(Self {
            client: Arc::new(SlackClient::new(connector)),
        })
    }

    /// `apps.connections.open`: a fresh, single-use WebSocket URL.
    pub async fn open_socket_url(&self, app_token: &Secret<String>) -> Result<Url, SlackError> {
        let token = SlackApiToken::new(app_token.expose().clone().into())
            .with_token_type(SlackApiTokenType::App);
        let response = self
            .client
            .open_session(&token)
            .apps_connections_open(&SlackApiAppsConnectionOpenRequest::new())
            .await
            .map_err(|error| SlackError::from_client("apps.connections.open", error))?;
        Ok(response.url.0)
    }

    /// Posts `reply` to a slash command's `response_url` (only the user sees it).
    pub async fn respond(&self, response_url: &str, reply: &Reply) -> Result<(), SlackError> {
        let method = "response_url";
        let url = Url::parse(response_url).map_err(|error| SlackError::Protocol {
            method,
            cause: format!("response_url is not a URL: {error}"),
        })?;
        let request = SlackApiPostWebhookMessageRequest::new(convert::message_content(reply));
        self.client
            .respond_to_event(&SlackResponseUrl(url), &request)
            .await
            .map_err(|error| SlackError::from_client(method, error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_codes_are_fatal_and_others_are_not() {
        let api = |code: &str| SlackError::Api {
            method: "apps.connections.open",
            code: code.into(),
        };
        assert!(api("invalid_auth").is_fatal_auth());
        assert!(api("token_revoked").is_fatal_auth());
        assert!(!api("internal_error").is_fatal_auth());
        assert!(
            !SlackError::Http {
                method: "x",
                status: 500
            }
            .is_fatal_auth()
        );
    }
}
