//! Bitbucket OAuth 2.0 for people (the authorization-code grant): the consent URL, the
//! code exchange, refreshing (refresh tokens rotate on use), `GET /user`, and "can this
//! person read that repository?".
//!
//! Owns the wire format of those calls. Never logs or returns a token except inside a
//! [`Secret`]; errors carry Bitbucket's error code, never a response body.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use url::Url;

use super::name::{RepositoryName, push_segments};
use crate::secret::Secret;

mod actions;
pub use actions::{ActionError, MergeRequest, PipelineRerun, PullRequestAddress, PullRequestFacts};

/// A person's tokens, as Bitbucket issued them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTokens {
    pub access_token: Secret<String>,
    pub refresh_token: Secret<String>,
    pub expires_at: Timestamp,
    /// The scopes Bitbucket granted (its `scopes` answer, space separated); `None` when
    /// it did not say.
    pub scopes: Option<Vec<String>>,
}

/// A Bitbucket account, from `GET /user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitbucketAccount {
    pub uuid: String,
    pub account_id: Option<String>,
    pub display_name: String,
    pub nickname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The grant was refused (`invalid_grant`: a used, revoked or expired code or
    /// refresh token). The person must log in again.
    #[error("Bitbucket refused the grant (`{code}`)")]
    Rejected { code: String },
    /// Bitbucket refused the daemon's own OAuth consumer (`invalid_client`: a wrong key
    /// or secret, or a consumer that was deleted). The operator must fix the config.
    #[error("Bitbucket refused the OAuth consumer (`{code}`)")]
    ConsumerRejected { code: String },
    #[error("Bitbucket refused the access token (HTTP 401)")]
    Unauthorized,
    #[error("Bitbucket answered HTTP {status}")]
    Http { status: u16 },
    #[error("could not reach Bitbucket: {0}")]
    Transport(String),
    #[error("Bitbucket's answer was not understood: {0}")]
    Decode(String),
    /// A name that would change the request's path; nothing was sent.
    #[error("{0}")]
    InvalidPath(String),
}

impl From<super::name::InvalidRepositoryName> for AccountError {
    fn from(error: super::name::InvalidRepositoryName) -> Self {
        AccountError::InvalidPath(error.to_string())
    }
}

/// The OAuth consumer that people log in through (`bitbucket.user_oauth.*`).
#[derive(Debug, Clone)]
pub struct UserOAuthClient {
    http: reqwest::Client,
    oauth_url: Url,
    api_url: Url,
    key: String,
    secret: Secret<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: String,
    #[serde(default = "one_hour")]
    expires_in: i64,
    #[serde(default)]
    scopes: Option<String>,
}

fn one_hour() -> i64 {
    3600
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: Option<String>,
}

#[derive(Deserialize)]
struct UserAnswer {
    uuid: String,
    account_id: Option<String>,
    display_name: Option<String>,
    nickname: Option<String>,
}

impl UserOAuthClient {
    pub fn new(
        oauth_url: Url,
        api_url: Url,
        key: String,
        secret: Secret<String>,
    ) -> Result<Self, AccountError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self::with_timeout(oauth_url, api_url, key, secret, Duration::from_secs(30))
    }

    /// [`UserOAuthClient::new`] with `timeout` bounding every call
    /// (`bitbucket.request_timeout_secs`).
    pub fn with_timeout(
        oauth_url: Url,
        api_url: Url,
        key: String,
        secret: Secret<String>,
        timeout: Duration,
    ) -> Result<Self, AccountError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|error| AccountError::Transport(error.to_string()))?;
        Ok(Self {
            http,
            oauth_url,
            api_url,
            key,
            secret,
        })
    }

    /// `base` with `segments` appended (see [`push_segments`]: nothing can climb out).
    fn endpoint(base: &Url, segments: &[&str]) -> Result<Url, AccountError> {
        let mut url = base.clone();
        push_segments(&mut url, segments)
            .map_err(|error| AccountError::InvalidPath(error.to_string()))?;
        Ok(url)
    }

    /// Where the person's browser goes to consent.
    pub fn authorize_url(&self, state: &str) -> Url {
        let mut url = self.oauth_url.clone();
        // A fixed segment: cannot fail.
        let _ = push_segments(&mut url, &["authorize"]);
        url.query_pairs_mut()
            .append_pair("client_id", &self.key)
            .append_pair("response_type", "code")
            .append_pair("state", state);
        url
    }

    pub async fn exchange_code(
        &self,
        code: &str,
        now: Timestamp,
    ) -> Result<UserTokens, AccountError> {
        self.token_request(&[("grant_type", "authorization_code"), ("code", code)], now)
            .await
    }

    /// Refreshes; the answer carries a new refresh token and the old one stops working.
    pub async fn refresh(
        &self,
        refresh_token: &Secret<String>,
        now: Timestamp,
    ) -> Result<UserTokens, AccountError> {
        self.token_request(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose()),
            ],
            now,
        )
        .await
    }

    async fn token_request(
        &self,
        form: &[(&str, &str)],
        now: Timestamp,
    ) -> Result<UserTokens, AccountError> {
        let response = self
            .http
            .post(Self::endpoint(&self.oauth_url, &["access_token"])?)
            .basic_auth(&self.key, Some(self.secret.expose()))
            .form(form)
            .send()
            .await
            .map_err(|error| AccountError::Transport(without_url(error)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| AccountError::Transport(without_url(error)))?;
        if status.is_client_error() {
            let code = serde_json::from_slice::<ErrorAnswer>(&body)
                .ok()
                .and_then(|answer| answer.error)
                .unwrap_or_else(|| format!("http_{}", status.as_u16()));
            if matches!(code.as_str(), "invalid_client" | "unauthorized_client")
                || status.as_u16() == 401
            {
                return Err(AccountError::ConsumerRejected { code });
            }
            return Err(AccountError::Rejected { code });
        }
        if !status.is_success() {
            return Err(AccountError::Http {
                status: status.as_u16(),
            });
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|error| AccountError::Decode(error.to_string()))?;
        Ok(UserTokens {
            access_token: Secret::new(answer.access_token),
            refresh_token: Secret::new(answer.refresh_token),
            expires_at: now
                .checked_add(SignedDuration::from_secs(answer.expires_in.max(60)))
                .unwrap_or(now),
            scopes: answer.scopes.map(|scopes| {
                scopes
                    .split([' ', ','])
                    .filter(|scope| !scope.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
        })
    }

    /// The account the access token belongs to.
    pub async fn current_user(
        &self,
        access_token: &Secret<String>,
    ) -> Result<BitbucketAccount, AccountError> {
        let mut url = Self::endpoint(&self.api_url, &["user"])?;
        url.query_pairs_mut()
            .append_pair("fields", "uuid,account_id,display_name,nickname");
        let body = self.get(url, access_token).await?;
        let answer: UserAnswer = serde_json::from_slice(&body)
            .map_err(|error| AccountError::Decode(error.to_string()))?;
        Ok(BitbucketAccount {
            display_name: answer
                .display_name
                .or_else(|| answer.nickname.clone())
                .unwrap_or_else(|| answer.uuid.clone()),
            uuid: answer.uuid,
            account_id: answer.account_id,
            nickname: answer.nickname,
        })
    }

    /// Whether the token's owner can read `workspace/repo` (403 and 404 mean no).
    pub async fn can_read_repository(
        &self,
        access_token: &Secret<String>,
        full_name: &str,
    ) -> Result<bool, AccountError> {
        let name: RepositoryName = full_name.parse()?;
        let mut url = Self::endpoint(&self.api_url, &["repositories", name.as_str()])?;
        url.query_pairs_mut().append_pair("fields", "full_name");
        match self.get(url, access_token).await {
            Ok(_) => Ok(true),
            Err(AccountError::Http { status: 403 | 404 }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The repositories of `workspace` the token's owner can read (public ones included),
    /// up to ten pages of 100. Follows `next` only while it stays under the API's URL.
    pub async fn readable_in_workspace(
        &self,
        access_token: &Secret<String>,
        workspace: &str,
    ) -> Result<std::collections::BTreeSet<String>, AccountError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            values: Vec<Named>,
            next: Option<String>,
        }
        #[derive(Deserialize)]
        struct Named {
            full_name: String,
        }
        let workspace: super::name::WorkspaceId = workspace.parse()?;
        let mut url = Self::endpoint(&self.api_url, &["repositories", workspace.as_str()])?;
        url.query_pairs_mut()
            .append_pair("fields", "next,values.full_name")
            .append_pair("pagelen", "100");
        let mut names = std::collections::BTreeSet::new();
        for _ in 0..10 {
            let body = match self.get(url.clone(), access_token).await {
                Ok(body) => body,
                Err(AccountError::Http { status: 403 | 404 }) => return Ok(names),
                Err(error) => return Err(error),
            };
            let page: Page = serde_json::from_slice(&body)
                .map_err(|error| AccountError::Decode(error.to_string()))?;
            names.extend(page.values.into_iter().map(|n| n.full_name.to_lowercase()));
            let Some(next) = page.next else { break };
            url = self.next_page(&next)?;
        }
        Ok(names)
    }

    /// The open pull requests of `full_name` as the token's owner sees them (the newest
    /// updated first, at most [`OPEN_MAX_PAGES`](super::open_pulls::OPEN_MAX_PAGES) pages).
    /// A repository they cannot read answers `Http { status: 403 | 404 }`.
    pub async fn open_pull_requests(
        &self,
        access_token: &Secret<String>,
        full_name: &str,
    ) -> Result<Vec<super::open_pulls::OpenPullRequest>, AccountError> {
        use super::open_pulls::{FIELDS_OPEN, OPEN_MAX_PAGES, OPEN_PAGELEN, OpenPage};
        let name: RepositoryName = full_name.parse()?;
        let mut url = Self::endpoint(
            &self.api_url,
            &["repositories", name.as_str(), "pullrequests"],
        )?;
        url.query_pairs_mut()
            .append_pair("state", "OPEN")
            .append_pair("sort", "-updated_on")
            .append_pair("pagelen", OPEN_PAGELEN)
            .append_pair("fields", FIELDS_OPEN);
        let mut open = Vec::new();
        for _ in 0..OPEN_MAX_PAGES {
            let body = self.get(url.clone(), access_token).await?;
            let page: OpenPage = serde_json::from_slice(&body)
                .map_err(|error| AccountError::Decode(error.to_string()))?;
            open.extend(
                page.values
                    .into_iter()
                    .filter_map(|pr| pr.into_open(name.as_str())),
            );
            let Some(next) = page.next else { break };
            url = self.next_page(&next)?;
        }
        Ok(open)
    }

    /// A page's opaque `next` link, followed only while it stays under the API's URL (the
    /// token goes nowhere else).
    fn next_page(&self, next: &str) -> Result<Url, AccountError> {
        match Url::parse(next) {
            Ok(next)
                if next.origin() == self.api_url.origin()
                    && next.path().starts_with(self.api_url.path()) =>
            {
                Ok(next)
            }
            _ => Err(AccountError::Decode("a next link outside the API".into())),
        }
    }

    /// GETs `segments` under the API with `query` as the token's owner: the answer's
    /// bytes (JSON, or a file's raw contents). Every segment goes through
    /// [`push_segments`]; 401 is [`AccountError::Unauthorized`], other failures
    /// [`AccountError::Http`] with their status.
    pub async fn get_bytes(
        &self,
        access_token: &Secret<String>,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Vec<u8>, AccountError> {
        let mut url = Self::endpoint(&self.api_url, segments)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.get(url, access_token).await
    }

    /// The overall build state of commit `hash` of `full_name` as the token's owner sees
    /// it (one request, the first 100 statuses); `None` when no build reported on it.
    pub async fn commit_build_state(
        &self,
        access_token: &Secret<String>,
        full_name: &str,
        hash: &str,
    ) -> Result<Option<super::open_pulls::BuildState>, AccountError> {
        use super::open_pulls::{BuildState, FIELDS_STATUSES, StatusPage};
        let name: RepositoryName = full_name.parse()?;
        if hash.is_empty() || !hash.chars().all(|ch| ch.is_ascii_hexdigit()) {
            return Err(AccountError::InvalidPath(
                "a commit hash is hexadecimal digits".into(),
            ));
        }
        let mut url = Self::endpoint(
            &self.api_url,
            &["repositories", name.as_str(), "commit", hash, "statuses"],
        )?;
        url.query_pairs_mut()
            .append_pair("pagelen", "100")
            .append_pair("fields", FIELDS_STATUSES);
        let body = self.get(url, access_token).await?;
        let page: StatusPage = serde_json::from_slice(&body)
            .map_err(|error| AccountError::Decode(error.to_string()))?;
        Ok(BuildState::overall(
            page.values.iter().map(|status| status.state.as_str()),
        ))
    }

    async fn get(&self, url: Url, access_token: &Secret<String>) -> Result<Vec<u8>, AccountError> {
        let response = self
            .http
            .get(url)
            .bearer_auth(access_token.expose())
            .send()
            .await
            .map_err(|error| AccountError::Transport(without_url(error)))?;
        match response.status().as_u16() {
            200..=299 => Ok(response
                .bytes()
                .await
                .map_err(|error| AccountError::Transport(without_url(error)))?
                .to_vec()),
            401 => Err(AccountError::Unauthorized),
            status => Err(AccountError::Http { status }),
        }
    }
}

/// reqwest's errors name the URL; ours must not carry query strings (codes, states).
fn without_url(error: reqwest::Error) -> String {
    error.without_url().to_string()
}
