//! The Slack Web API, through slack-morphism: the calls the daemon makes and their errors.
//!
//! Owns the HTTP client (one, shared by every workspace), the base URL from
//! `slack.api_url`, and turning slack-morphism's errors into [`SlackError`]. Must never
//! put a token into an error, a log line or a panic: tokens travel only in the
//! `Authorization` header that slack-morphism builds.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use url::Url;

use crate::config::Secret;
use crate::message::Message;
use crate::metrics::Metrics;

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
    /// No answer within `slack.request_timeout_secs`: the call may or may not have
    /// taken effect (a post may have landed).
    #[error("Slack did not answer {method} in time")]
    Timeout { method: &'static str },
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
                retry_after: limit.retry_after.map(|wait| wait.min(RETRY_AFTER_MAX)),
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

/// Who a bot token belongs to, from `auth.test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    pub team_id: String,
    pub team_name: String,
    pub enterprise_id: Option<String>,
    pub bot_user_id: String,
    pub bot_id: Option<String>,
    /// From the `x-oauth-scopes` header; `None` when Slack did not send it.
    pub scopes: Option<Vec<String>>,
}

/// What `oauth.v2.access` granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthGrant {
    pub bot_token: Secret<String>,
    pub scopes: Vec<String>,
    pub bot_user_id: String,
    pub app_id: Option<String>,
    /// The workspace; `None` for an organization-wide (Enterprise Grid) install.
    pub team_id: Option<String>,
    pub team_name: Option<String>,
    pub enterprise_id: Option<String>,
    pub enterprise_name: Option<String>,
    pub installer_user_id: Option<String>,
}

/// Whether the bot can post into a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAccess {
    Postable,
    /// Private, and the bot was not invited (Slack hides such channels from it).
    PrivateNotMember,
    Archived,
    DirectMessage,
    /// The install lacks the scopes to tell.
    Unknown,
}

/// How a raw call authenticates.
enum RawAuth<'a> {
    Bearer(&'a Secret<String>),
    Basic {
        user: &'a str,
        password: &'a Secret<String>,
    },
}

type RawClient = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The longest any `Retry-After` from Slack is obeyed; a larger (or absurd) one is cut to
/// this, so a single header can never stop deliveries or sockets for longer.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(15 * 60);

/// `Retry-After` seconds, at most [`RETRY_AFTER_MAX`]; garbage, negative and fractional
/// values count as absent.
pub fn parse_retry_after(text: &str) -> Option<Duration> {
    text.trim()
        .parse::<u64>()
        .ok()
        .map(|seconds| Duration::from_secs(seconds).min(RETRY_AFTER_MAX))
}

/// Every Web API call's bound when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The TCP connector: a connect timeout within the call's bound, and https or http.
fn connector(timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
    http.set_nodelay(true);
    http
}

/// The Web API client. Cheap to clone.
#[derive(Clone)]
pub struct SlackWeb {
    client: Arc<SlackHyperClient>,
    /// For the few calls whose answer slack-morphism does not fully model (response
    /// headers of auth.test, enterprise fields of oauth.v2.access).
    raw: RawClient,
    api_base: String,
    metrics: Metrics,
    /// The bound on every call, connect to last byte.
    timeout: Duration,
}

impl std::fmt::Debug for SlackWeb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackWeb")
    }
}

impl SlackWeb {
    /// A client for the Web API at `api_url` (http or https; tests use a fake on loopback),
    /// with the default 30-second bound on every call.
    pub fn new(api_url: &Url) -> Result<Self, SlackError> {
        Self::with_timeout(api_url, DEFAULT_TIMEOUT)
    }

    /// [`SlackWeb::new`] with `timeout` as the bound on every call (`slack.request_timeout_secs`).
    pub fn with_timeout(api_url: &Url, timeout: Duration) -> Result<Self, SlackError> {
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
            .wrap_connector(connector(timeout));
        let base = api_url.as_str().trim_end_matches('/');
        let raw = HyperClient::builder(TokioExecutor::new()).build(https.clone());
        let connector = SlackClientHyperConnector::with_connector(https).with_slack_api_url(base);
        Ok(Self {
            client: Arc::new(SlackClient::new(connector)),
            raw,
            api_base: base.to_string(),
            metrics: Metrics::default(),
            timeout,
        })
    }

    /// Runs a slack-morphism call within the timeout.
    async fn bounded<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = Result<T, SlackClientError>>,
    ) -> Result<T, SlackError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|error| SlackError::from_client(method, error)),
            Err(_) => Err(SlackError::Timeout { method }),
        }
    }

    /// Records calls into `metrics` (the daemon's registry) instead of a private one.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts a call by its outcome and passes the result through.
    fn count<T>(
        &self,
        method: &'static str,
        result: Result<T, SlackError>,
    ) -> Result<T, SlackError> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(SlackError::Api { .. }) => "error",
            Err(SlackError::RateLimited { .. }) => "rate_limited",
            Err(SlackError::Http { .. } | SlackError::Protocol { .. }) => "bad_answer",
            Err(SlackError::Transport { .. }) => "unreachable",
            Err(SlackError::Timeout { .. }) => "timeout",
        };
        self.metrics.slack_call(method, outcome);
        result
    }

    /// POSTs a form to `{api}/{method}` and returns the response headers and JSON, or the
    /// typed error (`ok: false`, HTTP status, 429).
    async fn raw_call(
        &self,
        method: &'static str,
        auth: RawAuth<'_>,
        form: &[(&str, &str)],
    ) -> Result<(hyper::HeaderMap, Value), SlackError> {
        let result =
            match tokio::time::timeout(self.timeout, self.raw_call_uncounted(method, auth, form))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(SlackError::Timeout { method }),
            };
        self.count(method, result)
    }

    async fn raw_call_uncounted(
        &self,
        method: &'static str,
        auth: RawAuth<'_>,
        form: &[(&str, &str)],
    ) -> Result<(hyper::HeaderMap, Value), SlackError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let authorization = match auth {
            RawAuth::Bearer(token) => format!("Bearer {}", token.expose()),
            RawAuth::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.expose()))
            ),
        };
        let request = hyper::Request::post(format!("{}/{method}", self.api_base))
            .header(hyper::header::AUTHORIZATION, authorization)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| SlackError::Protocol {
                method,
                cause: error.to_string(),
            })?;
        let response = self
            .raw
            .request(request)
            .await
            .map_err(|error| SlackError::Transport {
                method,
                cause: error.to_string(),
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        if status == hyper::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = headers
                .get(hyper::header::RETRY_AFTER)
                .and_then(|value| parse_retry_after(value.to_str().ok()?));
            return Err(SlackError::RateLimited {
                method,
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(SlackError::Http {
                method,
                status: status.as_u16(),
            });
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| SlackError::Transport {
                method,
                cause: error.to_string(),
            })?
            .to_bytes();
        let json: Value = serde_json::from_slice(&bytes).map_err(|error| SlackError::Protocol {
            method,
            cause: error.to_string(),
        })?;
        if json["ok"].as_bool() != Some(true) {
            return Err(SlackError::Api {
                method,
                code: json["error"]
                    .as_str()
                    .unwrap_or("unknown_error")
                    .to_string(),
            });
        }
        Ok((headers, json))
    }

    /// `auth.test` with a bot token: whose token it is, and the scopes it was granted.
    pub async fn auth_test(&self, bot_token: &Secret<String>) -> Result<TokenIdentity, SlackError> {
        let method = "auth.test";
        let (headers, json) = self
            .raw_call(method, RawAuth::Bearer(bot_token), &[])
            .await?;
        let text = |key: &str| json[key].as_str().map(str::to_string);
        let missing = |field: &str| SlackError::Protocol {
            method,
            cause: format!("no `{field}` in the answer"),
        };
        Ok(TokenIdentity {
            team_id: text("team_id").ok_or_else(|| missing("team_id"))?,
            team_name: text("team").unwrap_or_default(),
            enterprise_id: text("enterprise_id").filter(|id| !id.is_empty()),
            bot_user_id: text("user_id").ok_or_else(|| missing("user_id"))?,
            bot_id: text("bot_id"),
            scopes: headers
                .get("x-oauth-scopes")
                .and_then(|value| value.to_str().ok())
                .map(crate::upgrade::parse_scope_list),
        })
    }

    /// `auth.revoke`: gives a token back (an install that is refused must not leave a
    /// live token behind).
    pub async fn auth_revoke(&self, token: &Secret<String>) -> Result<(), SlackError> {
        self.raw_call("auth.revoke", RawAuth::Bearer(token), &[])
            .await
            .map(|_| ())
    }

    /// `users.info`: the person's `user` object.
    async fn user_info(&self, bot_token: &Secret<String>, user: &str) -> Result<Value, SlackError> {
        let (_, mut json) = self
            .raw_call("users.info", RawAuth::Bearer(bot_token), &[("user", user)])
            .await?;
        Ok(json["user"].take())
    }

    /// `users.info`: a person's display name (for pages that name them), if Slack says.
    pub async fn user_name(
        &self,
        bot_token: &Secret<String>,
        user: &str,
    ) -> Result<Option<String>, SlackError> {
        let person = self.user_info(bot_token, user).await?;
        let profile = &person["profile"];
        Ok([
            profile["display_name"].as_str(),
            profile["real_name"].as_str(),
            person["name"].as_str(),
        ]
        .into_iter()
        .flatten()
        .find(|name| !name.trim().is_empty())
        .map(str::to_string))
    }

    /// `conversations.info`: whether the bot can post in `channel`.
    pub async fn channel_access(
        &self,
        bot_token: &Secret<String>,
        channel: &str,
    ) -> Result<ChannelAccess, SlackError> {
        let method = "conversations.info";
        match self
            .raw_call(method, RawAuth::Bearer(bot_token), &[("channel", channel)])
            .await
        {
            Ok((_, json)) => {
                let info = &json["channel"];
                let is_private = info["is_private"].as_bool().unwrap_or(false);
                let is_member = info["is_member"].as_bool().unwrap_or(false);
                Ok(if info["is_archived"].as_bool().unwrap_or(false) {
                    ChannelAccess::Archived
                } else if is_private && !is_member {
                    ChannelAccess::PrivateNotMember
                } else if info["is_im"].as_bool().unwrap_or(false)
                    || info["is_mpim"].as_bool().unwrap_or(false)
                {
                    ChannelAccess::DirectMessage
                } else {
                    ChannelAccess::Postable
                })
            }
            // A private channel the bot is not in looks like no channel at all.
            Err(SlackError::Api { code, .. }) if code == "channel_not_found" => {
                Ok(ChannelAccess::PrivateNotMember)
            }
            Err(SlackError::Api { code, .. }) if code == "missing_scope" => {
                Ok(ChannelAccess::Unknown)
            }
            Err(error) => Err(error),
        }
    }

    /// `oauth.v2.access`: exchanges an OAuth code for the workspace's bot token.
    pub async fn oauth_v2_access(
        &self,
        client_id: &str,
        client_secret: &Secret<String>,
        code: &str,
        redirect_uri: &str,
    ) -> Result<OAuthGrant, SlackError> {
        let method = "oauth.v2.access";
        let auth = RawAuth::Basic {
            user: client_id,
            password: client_secret,
        };
        let form = [("code", code), ("redirect_uri", redirect_uri)];
        let (_, json) = self.raw_call(method, auth, &form).await?;
        let text = |value: &Value| value.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let bot_token = text(&json["access_token"]).ok_or_else(|| SlackError::Protocol {
            method,
            cause: "no bot access_token in the answer (was the bot scope requested?)".into(),
        })?;
        Ok(OAuthGrant {
            bot_token: Secret::new(bot_token),
            scopes: crate::upgrade::parse_scope_list(json["scope"].as_str().unwrap_or("")),
            bot_user_id: text(&json["bot_user_id"]).unwrap_or_default(),
            app_id: text(&json["app_id"]),
            team_id: text(&json["team"]["id"]),
            team_name: text(&json["team"]["name"]),
            enterprise_id: text(&json["enterprise"]["id"]),
            enterprise_name: text(&json["enterprise"]["name"]),
            installer_user_id: text(&json["authed_user"]["id"]),
        })
    }

    /// `apps.connections.open`: a fresh, single-use WebSocket URL.
    pub async fn open_socket_url(&self, app_token: &Secret<String>) -> Result<Url, SlackError> {
        let token = SlackApiToken::new(app_token.expose().clone().into())
            .with_token_type(SlackApiTokenType::App);
        let response = self
            .bounded(
                "apps.connections.open",
                self.client
                    .open_session(&token)
                    .apps_connections_open(&SlackApiAppsConnectionOpenRequest::new()),
            )
            .await;
        Ok(self.count("apps.connections.open", response)?.url.0)
    }

    /// `chat.postMessage` with a workspace's bot token; `channel` may be a user id (a DM).
    /// Returns the message's `ts`.
    pub async fn post_message(
        &self,
        bot_token: &Secret<String>,
        channel: &str,
        reply: &Message,
    ) -> Result<String, SlackError> {
        self.post_in_thread(bot_token, channel, reply, None, false)
            .await
    }

    /// `chat.postMessage` to a user id (a DM): returns where Slack put it (the DM's
    /// channel id and the message's `ts`), so it can be edited later.
    pub async fn post_direct_message(
        &self,
        bot_token: &Secret<String>,
        user_id: &str,
        reply: &Message,
    ) -> Result<(String, String), SlackError> {
        let request = SlackApiChatPostMessageRequest::new(
            user_id.to_string().into(),
            convert::message_content(reply),
        );
        let response = self.send_post_message(bot_token, &request).await?;
        Ok((response.channel.0, response.ts.0))
    }

    /// `chat.postMessage`, counted.
    async fn send_post_message(
        &self,
        bot_token: &Secret<String>,
        request: &SlackApiChatPostMessageRequest,
    ) -> Result<SlackApiChatPostMessageResponse, SlackError> {
        let method = "chat.postMessage";
        let result = self
            .bounded(
                method,
                self.client
                    .open_session(&bot(bot_token))
                    .chat_post_message(request),
            )
            .await;
        self.count(method, result)
    }

    /// `chat.postEphemeral`: `reply` in `channel`, visible only to `user_id`.
    pub async fn post_ephemeral(
        &self,
        bot_token: &Secret<String>,
        channel: &str,
        user_id: &str,
        reply: &Message,
    ) -> Result<(), SlackError> {
        let method = "chat.postEphemeral";
        let token = bot(bot_token);
        let request = SlackApiChatPostEphemeralRequest::new(
            channel.to_string().into(),
            user_id.to_string().into(),
            convert::message_content(reply),
        );
        let result = self
            .bounded(
                method,
                self.client
                    .open_session(&token)
                    .chat_post_ephemeral(&request),
            )
            .await;
        self.count(method, result).map(|_| ())
    }

    /// The workspace's admins and owners (users.list `is_admin` / `is_owner`, people
    /// only, not deactivated), following the cursor. Needs `users:read`.
    pub async fn workspace_admins(
        &self,
        bot_token: &Secret<String>,
    ) -> Result<Vec<String>, SlackError> {
        let method = "users.list";
        let mut admins = Vec::new();
        let mut cursor = String::new();
        for _page in 0..100 {
            let mut form = vec![("limit", "200")];
            if !cursor.is_empty() {
                form.push(("cursor", cursor.as_str()));
            }
            let (_, json) = self
                .raw_call(method, RawAuth::Bearer(bot_token), &form)
                .await?;
            for member in json["members"].as_array().into_iter().flatten() {
                let flag = |key: &str| member[key].as_bool().unwrap_or(false);
                if (flag("is_admin") || flag("is_owner")) && !flag("deleted") && !flag("is_bot") {
                    if let Some(id) = member["id"].as_str() {
                        admins.push(id.to_string());
                    }
                }
            }
            cursor = json["response_metadata"]["next_cursor"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if cursor.is_empty() {
                break;
            }
        }
        Ok(admins)
    }

    /// `chat.postMessage`, as a reply in the thread of `thread_ts` when given, also shown
    /// in the channel when `broadcast`.
    pub async fn post_in_thread(
        &self,
        bot_token: &Secret<String>,
        channel: &str,
        reply: &Message,
        thread_ts: Option<&str>,
        broadcast: bool,
    ) -> Result<String, SlackError> {
        let mut request = SlackApiChatPostMessageRequest::new(
            channel.to_string().into(),
            convert::message_content(reply),
        );
        if let Some(thread_ts) = thread_ts {
            request = request.with_thread_ts(thread_ts.to_string().into());
            if broadcast {
                request = request.with_reply_broadcast(true);
            }
        }
        Ok(self.send_post_message(bot_token, &request).await?.ts.0)
    }

    /// `chat.update`: replaces the message `ts` in `channel`.
    pub async fn update_message(
        &self,
        bot_token: &Secret<String>,
        channel: &str,
        ts: &str,
        reply: &Message,
    ) -> Result<(), SlackError> {
        let method = "chat.update";
        let token = bot(bot_token);
        let request = SlackApiChatUpdateRequest::new(
            channel.to_string().into(),
            convert::message_content(reply),
            ts.to_string().into(),
        );
        let result = self
            .bounded(
                method,
                self.client.open_session(&token).chat_update(&request),
            )
            .await;
        self.count(method, result).map(|_| ())
    }

    /// `views.open`: shows `view` (a modal's JSON, see `slack::views`) to whoever made
    /// the interaction `trigger_id` came with (valid about three seconds).
    pub async fn open_view(
        &self,
        bot_token: &Secret<String>,
        trigger_id: &str,
        view: &Value,
    ) -> Result<(), SlackError> {
        let view = view.to_string();
        self.raw_call(
            "views.open",
            RawAuth::Bearer(bot_token),
            &[("trigger_id", trigger_id), ("view", view.as_str())],
        )
        .await
        .map(drop)
    }

    /// `views.publish`: shows `view` (a home tab's JSON) as `user`'s Home tab.
    pub async fn publish_home(
        &self,
        bot_token: &Secret<String>,
        user: &str,
        view: &Value,
    ) -> Result<(), SlackError> {
        let view = view.to_string();
        self.raw_call(
            "views.publish",
            RawAuth::Bearer(bot_token),
            &[("user_id", user), ("view", view.as_str())],
        )
        .await
        .map(drop)
    }

    /// `chat.unfurl`: the previews (`unfurls`, URL to attachment-or-blocks JSON) of the
    /// links of one `link_shared` event, named by its `unfurl_id` and `source` when the
    /// event had them, else by the message's channel and ts.
    pub async fn unfurl(
        &self,
        bot_token: &Secret<String>,
        at: &UnfurlTarget<'_>,
        unfurls: &Value,
    ) -> Result<(), SlackError> {
        let unfurls = unfurls.to_string();
        let mut form = vec![("unfurls", unfurls.as_str())];
        match at {
            UnfurlTarget::Event { unfurl_id, source } => {
                form.push(("unfurl_id", unfurl_id));
                form.push(("source", source));
            }
            UnfurlTarget::Message { channel, ts } => {
                form.push(("channel", channel));
                form.push(("ts", ts));
            }
        }
        self.raw_call("chat.unfurl", RawAuth::Bearer(bot_token), &form)
            .await
            .map(drop)
    }

    /// `users.info`: a person's IANA time zone (`tz`, like `Europe/Paris`), if Slack says.
    pub async fn user_time_zone(
        &self,
        bot_token: &Secret<String>,
        user: &str,
    ) -> Result<Option<String>, SlackError> {
        Ok(self.user_info(bot_token, user).await?["tz"]
            .as_str()
            .filter(|tz| !tz.trim().is_empty())
            .map(str::to_string))
    }

    /// Posts `reply` to a slash command's `response_url` (only the user sees it).
    pub async fn respond(&self, response_url: &str, reply: &Message) -> Result<(), SlackError> {
        let method = "response_url";
        let url = Url::parse(response_url).map_err(|error| SlackError::Protocol {
            method,
            cause: format!("response_url is not a URL: {error}"),
        })?;
        let request = SlackApiPostWebhookMessageRequest::new(convert::message_content(reply));
        let result = self
            .bounded(
                method,
                self.client
                    .respond_to_event(&SlackResponseUrl(url), &request),
            )
            .await;
        self.count(method, result).map(|_| ())
    }
}

/// Which shared message a `chat.unfurl` call previews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnfurlTarget<'a> {
    /// The `unfurl_id` and `source` a `link_shared` event carried (Slack's preferred form;
    /// also covers links in the message composer).
    Event { unfurl_id: &'a str, source: &'a str },
    /// The message's channel and ts (events without an `unfurl_id`).
    Message { channel: &'a str, ts: &'a str },
}

/// The Web API token of a bot token.
fn bot(bot_token: &Secret<String>) -> SlackApiToken {
    SlackApiToken::new(bot_token.expose().clone().into()).with_token_type(SlackApiTokenType::Bot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_clamped_and_garbage_is_ignored() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("900000"), Some(RETRY_AFTER_MAX));
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(RETRY_AFTER_MAX)
        );
        for garbage in ["", "-1", "0.5", "later", "1e9", "184467440737095516150"] {
            assert_eq!(parse_retry_after(garbage), None, "{garbage:?}");
        }
    }

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
