//! The Bitbucket Cloud REST client: authentication, budgeted requests, retries,
//! pagination and typed errors.
//!
//! Owns the HTTP client (reqwest on rustls with ring), the three credentials (access
//! token as Bearer; API token with the account email as Basic; an OAuth consumer's
//! client-credentials token, refreshed before it expires and once more on a 401), the
//! `fields=` of every call, following the opaque `next` link (only to the API's own
//! origin), and turning answers into [`BitbucketError`]. Every request, retries included,
//! first takes a slot from the credential's [`BudgetGate`].
//!
//! Must never put a secret into a log line, an error or a URL: credentials travel only in
//! the `Authorization` header, and errors carry the request path, never the query.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use url::Url;

use super::name::push_segments;

use super::credential::BitbucketCredential;
use crate::secret::Secret;

use super::budget::BudgetGate;
use super::model::{
    Branch, Commit, CommitStatus, Deployment, DeploymentEnvironment, FeedEntry, Issue,
    IssueComment, Page, Pipeline, PullRequestDetail, PullRequestSummary, RepositoryInfo, Tag,
    TokenResponse,
};

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a 5xx or a timeout before giving up on this poll.
const SERVER_RETRIES: u32 = 2;
/// An OAuth token is renewed this long before it expires.
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(300);

/// Page sizes: 50 where larger pages are refused (pull requests and their activity).
const FEED_PAGELEN: &str = "50";
const BRANCH_PAGELEN: &str = "100";
/// The pages a single poll follows at most, per list.
pub const MAX_PAGES: usize = 20;

const FIELDS_REPOSITORY: &str = "full_name,has_issues,updated_on";
const FIELDS_SWEEP: &str = "next,values.full_name,values.updated_on";
const FIELDS_PULL_REQUESTS: &str = "next,values.id,values.title,values.state,values.draft,\
values.author.display_name,values.author.uuid,values.source.branch.name,\
values.source.commit.hash,values.destination.branch.name";
const FIELDS_FEED: &str = "next,values.pull_request.id,values.pull_request.title,\
values.pull_request.links.html.href,values.update.state,values.update.title,\
values.update.reason,values.update.date,values.update.author.display_name,\
values.update.author.uuid,values.update.closed_by.display_name,values.update.closed_by.uuid,\
values.update.source.branch.name,values.update.source.commit.hash,\
values.update.destination.branch.name,values.approval.date,values.approval.user.display_name,\
values.approval.user.uuid,values.changes_request.date,values.changes_request.user.display_name,\
values.changes_request.user.uuid,values.changes_requested.date,\
values.changes_requested.user.display_name,values.changes_requested.user.uuid,values.comment.id,values.comment.content.raw,\
values.comment.user.display_name,values.comment.user.uuid,values.comment.created_on,\
values.comment.deleted,values.comment.pending,values.comment.inline.path,\
values.comment.inline.to,values.comment.inline.from,values.comment.links.html.href,\
values.comment.parent.id";
const FIELDS_PULL_REQUEST: &str = "id,title,state,links.html.href,reviewers.display_name,\
reviewers.uuid,participants.user.display_name,participants.user.uuid,participants.role,\
participants.approved";
const FIELDS_BRANCHES: &str = "next,values.name,values.target.hash,values.target.date,\
values.target.message,values.target.author.raw,values.target.author.user.display_name,\
values.target.author.user.uuid,values.target.links.html.href";
const FIELDS_COMMITS: &str = "next,values.hash,values.date,values.message,values.author.raw,\
values.author.user.display_name,values.author.user.uuid,values.links.html.href";
const FIELDS_PIPELINES: &str = "values.uuid,values.build_number,values.state.name,\
values.state.stage.name,values.state.result.name,values.target.ref_name,values.target.ref_type,\
values.target.source,values.target.pullrequest.id,values.target.commit.hash,\
values.creator.display_name,values.creator.uuid,values.created_on,values.completed_on";
const FIELDS_ISSUES: &str = "next,values.id,values.title,values.state,values.kind,\
values.priority,values.reporter.display_name,values.reporter.uuid,values.created_on,\
values.updated_on,values.links.html.href";
const FIELDS_ISSUE_COMMENTS: &str = "values.id,values.content.raw,values.user.display_name,\
values.user.uuid,values.created_on,values.links.html.href";
const FIELDS_COMMIT_STATUSES: &str = "values.key,values.name,values.state,values.url,\
values.refname,values.commit.hash,values.created_on,values.updated_on";
const FIELDS_TAGS: &str = "next,values.name,values.date,values.tagger.raw,\
values.tagger.user.display_name,values.tagger.user.uuid,values.links.html.href,\
values.target.hash,values.target.date,values.target.author.raw,\
values.target.author.user.display_name,values.target.author.user.uuid,\
values.target.links.html.href";
const FIELDS_DEPLOYMENTS: &str = "values.uuid,values.state.name,values.state.status.name,\
values.state.url,values.state.deployer.display_name,values.state.deployer.uuid,\
values.state.start_date,values.state.completion_date,values.environment.uuid,\
values.release.name,values.release.url,values.release.commit.hash";
const FIELDS_ENVIRONMENTS: &str = "values.uuid,values.name";
/// Tag pages one heads poll reads at most (100 tags each, newest first): beyond, only
/// tags on recent commits are seen and none counts as deleted.
pub const MAX_TAG_PAGES: usize = 3;
/// Statuses read per watched head (one page).
const STATUS_PAGELEN: &str = "50";
/// Deployments read per read (one page, newest started first).
const DEPLOYMENT_PAGELEN: &str = "20";

/// A repository whose privacy Bitbucket did not state is treated as private.
fn private_unless_said() -> bool {
    true
}

/// What went wrong talking to Bitbucket. `what` is the request path (no query, no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitbucketError {
    #[error("Bitbucket has no {what} (404)")]
    NotFound { what: String },
    #[error("the credential may not read {what} (403)")]
    Forbidden { what: String },
    #[error("Bitbucket refused the credential (401)")]
    Unauthorized,
    #[error("Bitbucket rate-limited the credential; pausing {retry_after:?}")]
    RateLimited { retry_after: Option<Duration> },
    #[error("Bitbucket answered {what} with HTTP {status}")]
    Server { status: u16, what: String },
    #[error("Bitbucket did not answer {what} in time")]
    Timeout { what: String },
    #[error("Bitbucket gave {what} an unusable answer: {cause}")]
    Decode { what: String, cause: String },
    #[error("cannot reach Bitbucket for {what}: {cause}")]
    Transport { what: String, cause: String },
    /// A name that would change the request's path; nothing was sent.
    #[error("{cause}")]
    InvalidPath { cause: String },
    /// A share that never waits (link previews) has no request left this hour; nothing
    /// was sent.
    #[error("the request budget for this kind of read is spent for now")]
    BudgetSpent,
}

impl BitbucketError {
    /// 404 and 403: the repository is gone or out of the credential's reach.
    pub fn is_broken_repository(&self) -> bool {
        matches!(
            self,
            BitbucketError::NotFound { .. } | BitbucketError::Forbidden { .. }
        )
    }

    fn retryable(&self) -> bool {
        matches!(
            self,
            BitbucketError::Server {
                status: 500..=599,
                ..
            } | BitbucketError::Timeout { .. }
                | BitbucketError::Transport { .. }
        )
    }
}

/// Everything the client needs, from `bitbucket.*`.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub api_url: Url,
    pub oauth_url: Url,
    pub credential: BitbucketCredential,
    pub rate_limit_per_hour: u32,
    pub budget_percent: u32,
    pub request_timeout: Duration,
}

/// An OAuth access token and when to renew it.
struct CachedToken {
    token: Secret<String>,
    renew_at: Instant,
}

/// The REST client of one credential. Cheap to clone.
#[derive(Clone)]
pub struct BitbucketClient {
    http: reqwest::Client,
    api: Url,
    token_url: Url,
    credential: BitbucketCredential,
    oauth_token: Arc<tokio::sync::Mutex<Option<CachedToken>>>,
    budget: Arc<BudgetGate>,
    /// Whether a request waits for a budget slot (polling) or is refused at once with
    /// [`BitbucketError::BudgetSpent`] and never retried (previews, which must answer
    /// within seconds or not at all).
    waits_for_budget: bool,
    timeout: Duration,
    metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for BitbucketClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitbucketClient")
            .field("api", &self.api.as_str())
            .finish_non_exhaustive()
    }
}

/// Where a request goes, and how it is named in errors and logs.
struct Target {
    url: Url,
    what: String,
}

impl BitbucketClient {
    pub fn new(settings: ClientSettings) -> Result<Self, BitbucketError> {
        // rustls needs one process-wide crypto provider; ring is the only one we link.
        // The poller may start before the Slack client installs it; a second install fails
        // harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("bitbucket-slack/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| BitbucketError::Transport {
                what: "(client setup)".into(),
                cause: error.without_url().to_string(),
            })?;
        let mut api = settings.api_url;
        if !api.path().ends_with('/') {
            api.set_path(&format!("{}/", api.path()));
        }
        let mut oauth = settings.oauth_url;
        if !oauth.path().ends_with('/') {
            oauth.set_path(&format!("{}/", oauth.path()));
        }
        let token_url = oauth
            .join("access_token")
            .map_err(|error| BitbucketError::Transport {
                what: "(client setup)".into(),
                cause: format!("bad bitbucket.oauth_url: {error}"),
            })?;
        Ok(Self {
            http,
            api,
            token_url,
            credential: settings.credential,
            oauth_token: Arc::new(tokio::sync::Mutex::new(None)),
            budget: Arc::new(BudgetGate::new(
                settings.rate_limit_per_hour,
                settings.budget_percent,
            )),
            waits_for_budget: true,
            timeout: settings.request_timeout,
            metrics: crate::metrics::Metrics::default(),
        })
    }

    /// The same credential for link previews: every request takes a slot from `budget`
    /// (their own small share, never the poller's) without waiting, is never retried,
    /// and is bounded by `timeout` (at most the client's own).
    pub fn for_previews(&self, budget: Arc<BudgetGate>, timeout: Duration) -> Self {
        Self {
            budget,
            waits_for_budget: false,
            timeout: timeout.min(self.timeout),
            ..self.clone()
        }
    }

    /// Records requests into `metrics` (the daemon's registry) instead of a private one.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The credential's budget (for logs and metrics).
    /// Names this client's credential without revealing it: the first 16 hex digits of a
    /// SHA-256 of what identifies it (the token, or the OAuth consumer's key). Replicas
    /// with the same credential get the same fingerprint, so they share its budget.
    pub fn credential_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        match &self.credential {
            BitbucketCredential::AccessToken(token) => {
                hasher.update(b"access:");
                hasher.update(token.expose().as_bytes());
            }
            BitbucketCredential::ApiToken { email, token } => {
                hasher.update(b"api:");
                hasher.update(email.as_bytes());
                hasher.update(b":");
                hasher.update(token.expose().as_bytes());
            }
            BitbucketCredential::OAuthConsumer(consumer) => {
                hasher.update(b"oauth:");
                hasher.update(consumer.key.as_bytes());
            }
        }
        hasher
            .finalize()
            .iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    pub fn budget(&self) -> &BudgetGate {
        &self.budget
    }

    /// The request for `segments` under the API base. A segment that would leave that
    /// path (`..`, `.`, an empty part) is refused before anything is sent.
    fn target(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Target, BitbucketError> {
        let mut url = self.api.clone();
        push_segments(&mut url, segments).map_err(|error| BitbucketError::InvalidPath {
            cause: error.to_string(),
        })?;
        let what = url.path().to_string();
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(Target { url, what })
    }

    // -- endpoints -----------------------------------------------------------

    /// Every repository of `workspace` (full name and privacy), up to `max_pages` pages
    /// of 100.
    pub async fn workspace_repositories(
        &self,
        workspace: &str,
        max_pages: usize,
    ) -> Result<Vec<super::WorkspaceRepository>, BitbucketError> {
        #[derive(serde::Deserialize)]
        struct Named {
            full_name: String,
            #[serde(default = "private_unless_said")]
            is_private: bool,
        }
        let first = self.target(
            &["repositories", workspace],
            &[
                ("fields", "values.full_name,values.is_private,next"),
                ("pagelen", "100"),
            ],
        )?;
        let (repositories, _) = self.pages::<Named>(first, max_pages, |_| false).await?;
        Ok(repositories
            .into_iter()
            .map(|named| super::WorkspaceRepository {
                full_name: named.full_name.to_lowercase(),
                is_private: named.is_private,
            })
            .collect())
    }

    /// GETs `segments` (under the API base) with `query`, through the budget and retries.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, BitbucketError> {
        self.get(&self.target(segments, query)?).await
    }

    pub(crate) async fn repository(&self, repo: &str) -> Result<RepositoryInfo, BitbucketError> {
        let target = self.target(&["repositories", repo], &[("fields", FIELDS_REPOSITORY)])?;
        self.get(&target).await
    }

    /// The most recently changed repositories of `workspace`; with `since`, only those
    /// updated after it (the sweep), otherwise the first page (its baseline).
    pub(crate) async fn sweep(
        &self,
        workspace: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<RepositoryInfo>, BitbucketError> {
        let q = since.map(|since| format!("updated_on>{}", bbql_time(since)));
        let mut query = vec![
            ("sort", "-updated_on"),
            ("pagelen", BRANCH_PAGELEN),
            ("fields", FIELDS_SWEEP),
        ];
        if let Some(q) = &q {
            query.push(("q", q));
        }
        let target = self.target(&["repositories", workspace], &query)?;
        let max_pages = if since.is_some() { MAX_PAGES } else { 1 };
        Ok(self.pages(target, max_pages, |_| false).await?.0)
    }

    /// The newest pull requests of any state (the first page), for the baseline.
    pub(crate) async fn recent_pull_requests(
        &self,
        repo: &str,
    ) -> Result<Vec<PullRequestSummary>, BitbucketError> {
        let target = self.target(
            &["repositories", repo, "pullrequests"],
            &[
                ("state", "OPEN"),
                ("state", "DRAFT"),
                ("state", "QUEUED"),
                ("state", "MERGED"),
                ("state", "DECLINED"),
                ("state", "SUPERSEDED"),
                ("sort", "-id"),
                ("pagelen", FEED_PAGELEN),
                ("fields", FIELDS_PULL_REQUESTS),
            ],
        )?;
        Ok(self.pages(target, 1, |_| false).await?.0)
    }

    /// The repository's pull request activity, newest first, page by page until `enough`
    /// says a page reached what was already seen.
    pub(crate) async fn feed(
        &self,
        repo: &str,
        max_pages: usize,
        enough: impl FnMut(&[FeedEntry]) -> bool,
    ) -> Result<(Vec<FeedEntry>, bool), BitbucketError> {
        let target = self.target(
            &["repositories", repo, "pullrequests/activity"],
            &[("pagelen", FEED_PAGELEN), ("fields", FIELDS_FEED)],
        )?;
        self.pages(target, max_pages, enough).await
    }

    pub(crate) async fn pull_request(
        &self,
        repo: &str,
        id: u64,
    ) -> Result<PullRequestDetail, BitbucketError> {
        let target = self.target(
            &["repositories", repo, "pullrequests", &id.to_string()],
            &[("fields", FIELDS_PULL_REQUEST)],
        )?;
        self.get(&target).await
    }

    /// The open pull requests of `repo` with their reviewers and approvals, the newest
    /// updated first (at most [`OPEN_MAX_PAGES`](super::open_pulls::OPEN_MAX_PAGES) pages),
    /// read with the daemon's credential through its budget.
    pub async fn open_pull_requests(
        &self,
        repo: &str,
    ) -> Result<Vec<super::open_pulls::OpenPullRequest>, BitbucketError> {
        use super::open_pulls::{FIELDS_OPEN, OPEN_MAX_PAGES, OPEN_PAGELEN, WirePullRequest};
        let target = self.target(
            &["repositories", repo, "pullrequests"],
            &[
                ("state", "OPEN"),
                ("sort", "-updated_on"),
                ("pagelen", OPEN_PAGELEN),
                ("fields", FIELDS_OPEN),
            ],
        )?;
        let (pages, _) = self
            .pages::<WirePullRequest>(target, OPEN_MAX_PAGES, |_| false)
            .await?;
        Ok(pages
            .into_iter()
            .filter_map(|pr| pr.into_open(repo))
            .collect())
    }

    /// Every branch with its head; `true` when the list is complete.
    pub(crate) async fn branches(&self, repo: &str) -> Result<(Vec<Branch>, bool), BitbucketError> {
        let target = self.target(
            &["repositories", repo, "refs/branches"],
            &[
                ("pagelen", BRANCH_PAGELEN),
                ("sort", "-target.date"),
                ("fields", FIELDS_BRANCHES),
            ],
        )?;
        self.pages(target, MAX_PAGES, |_| false).await
    }

    /// Commits reachable from `head` but not from `exclude`, newest first: one page of
    /// `pagelen`, and whether there are more.
    pub(crate) async fn commits_between(
        &self,
        repo: &str,
        head: &str,
        exclude: &str,
        pagelen: usize,
    ) -> Result<(Vec<Commit>, bool), BitbucketError> {
        let pagelen = pagelen.to_string();
        let target = self.target(
            &["repositories", repo, "commits", head],
            &[
                ("exclude", exclude),
                ("pagelen", &pagelen),
                ("fields", FIELDS_COMMITS),
            ],
        )?;
        let page: Page<Commit> = self.get(&target).await?;
        Ok((page.values, page.next.is_some()))
    }

    /// The newest pipelines, newest first (one page).
    pub(crate) async fn pipelines(&self, repo: &str) -> Result<Vec<Pipeline>, BitbucketError> {
        let target = self.target(
            &["repositories", repo, "pipelines"],
            &[
                ("sort", "-created_on"),
                ("pagelen", "10"),
                ("fields", FIELDS_PIPELINES),
            ],
        )?;
        let page: Page<Pipeline> = self.get(&target).await?;
        Ok(page.values)
    }

    /// Issues updated after `since`, newest first.
    pub(crate) async fn issues(
        &self,
        repo: &str,
        since: Timestamp,
    ) -> Result<Vec<Issue>, BitbucketError> {
        let q = format!("updated_on>{}", bbql_time(since));
        let target = self.target(
            &["repositories", repo, "issues"],
            &[
                ("q", &q),
                ("sort", "-updated_on"),
                ("pagelen", FEED_PAGELEN),
                ("fields", FIELDS_ISSUES),
            ],
        )?;
        Ok(self.pages(target, MAX_PAGES, |_| false).await?.0)
    }

    /// Comments of issue `id` created after `since`, newest first (one page).
    pub(crate) async fn issue_comments(
        &self,
        repo: &str,
        id: u64,
        since: Timestamp,
    ) -> Result<Vec<IssueComment>, BitbucketError> {
        let q = format!("created_on>{}", bbql_time(since));
        let target = self.target(
            &["repositories", repo, "issues", &id.to_string(), "comments"],
            &[
                ("q", &q),
                ("sort", "-created_on"),
                ("pagelen", FEED_PAGELEN),
                ("fields", FIELDS_ISSUE_COMMENTS),
            ],
        )?;
        let page: Page<IssueComment> = self.get(&target).await?;
        Ok(page.values)
    }

    /// The build statuses reported on commit `hash` (one page).
    pub(crate) async fn commit_statuses(
        &self,
        repo: &str,
        hash: &str,
    ) -> Result<Vec<CommitStatus>, BitbucketError> {
        let target = self.target(
            &["repositories", repo, "commit", hash, "statuses"],
            &[
                ("pagelen", STATUS_PAGELEN),
                ("fields", FIELDS_COMMIT_STATUSES),
            ],
        )?;
        let page: Page<CommitStatus> = self.get(&target).await?;
        Ok(page.values)
    }

    /// The tags, newest target first, up to [`MAX_TAG_PAGES`]; `true` when the list is
    /// complete.
    pub(crate) async fn tags(&self, repo: &str) -> Result<(Vec<Tag>, bool), BitbucketError> {
        let target = self.target(
            &["repositories", repo, "refs/tags"],
            &[
                ("pagelen", BRANCH_PAGELEN),
                ("sort", "-target.date"),
                ("fields", FIELDS_TAGS),
            ],
        )?;
        self.pages(target, MAX_TAG_PAGES, |_| false).await
    }

    /// The newest deployments (one page, most recently started first).
    pub(crate) async fn deployments(&self, repo: &str) -> Result<Vec<Deployment>, BitbucketError> {
        let target = self.target(
            &["repositories", repo, "deployments"],
            &[
                ("sort", "-state.started_on"),
                ("pagelen", DEPLOYMENT_PAGELEN),
                ("fields", FIELDS_DEPLOYMENTS),
            ],
        )?;
        let page: Page<Deployment> = self.get(&target).await?;
        Ok(page.values)
    }

    /// The repository's deployment environments with their names (one page of 100).
    pub(crate) async fn environments(
        &self,
        repo: &str,
    ) -> Result<Vec<DeploymentEnvironment>, BitbucketError> {
        let target = self.target(
            &["repositories", repo, "environments"],
            &[("pagelen", "100"), ("fields", FIELDS_ENVIRONMENTS)],
        )?;
        let page: Page<DeploymentEnvironment> = self.get(&target).await?;
        Ok(page.values)
    }

    // -- plumbing ------------------------------------------------------------

    /// Follows `next` links from `first`, at most `max_pages`, stopping after a page for
    /// which `enough` is true. Returns the items and whether the list was read to its end.
    async fn pages<T: DeserializeOwned>(
        &self,
        first: Target,
        max_pages: usize,
        mut enough: impl FnMut(&[T]) -> bool,
    ) -> Result<(Vec<T>, bool), BitbucketError> {
        let mut items = Vec::new();
        let mut target = first;
        for _ in 0..max_pages.max(1) {
            let page: Page<T> = self.get(&target).await?;
            let stop = enough(&page.values);
            items.extend(page.values);
            let Some(next) = page.next else {
                return Ok((items, true));
            };
            if stop {
                return Ok((items, false));
            }
            target = self.next_target(&next, &target.what)?;
        }
        Ok((items, false))
    }

    /// The opaque `next` link, refused if it leaves the API's origin (credentials go only
    /// there).
    fn next_target(&self, next: &str, what: &str) -> Result<Target, BitbucketError> {
        let url = Url::parse(next).map_err(|error| BitbucketError::Decode {
            what: what.to_string(),
            cause: format!("`next` is not a URL: {error}"),
        })?;
        if url.origin() != self.api.origin() {
            return Err(BitbucketError::Decode {
                what: what.to_string(),
                cause: "`next` points outside the API".into(),
            });
        }
        Ok(Target {
            what: url.path().to_string(),
            url,
        })
    }

    /// One GET, budgeted, retried on 5xx and timeouts, decoded as `T`.
    async fn get<T: DeserializeOwned>(&self, target: &Target) -> Result<T, BitbucketError> {
        let body = self.get_body(target).await?;
        serde_json::from_slice(&body).map_err(|error| BitbucketError::Decode {
            what: target.what.clone(),
            cause: error.to_string(),
        })
    }

    /// GETs `segments` (under the API base) with `query`: the answer's bytes as they
    /// came (a file's raw contents), through the budget and retries.
    pub(crate) async fn get_bytes(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Vec<u8>, BitbucketError> {
        self.get_body(&self.target(segments, query)?).await
    }

    /// One GET, budgeted, retried on 5xx and timeouts (unless the client is a preview
    /// share's): the answer's body.
    async fn get_body(&self, target: &Target) -> Result<Vec<u8>, BitbucketError> {
        let mut attempt = 0;
        let mut renewed = false;
        let retries = if self.waits_for_budget {
            SERVER_RETRIES
        } else {
            0
        };
        loop {
            if self.waits_for_budget {
                self.budget.acquire().await;
            } else if !self.budget.try_acquire() {
                return Err(BitbucketError::BudgetSpent);
            }
            let result = self.send_once(target).await;
            match result {
                Err(BitbucketError::Unauthorized) if self.is_oauth() && !renewed => {
                    renewed = true;
                    *self.oauth_token.lock().await = None;
                }
                Err(error) if error.retryable() && attempt < retries => {
                    attempt += 1;
                    let delay = retry_delay(attempt);
                    debug!(what = %target.what, %error, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
                Ok(body) => return Ok(body),
            }
        }
    }

    fn is_oauth(&self) -> bool {
        matches!(self.credential, BitbucketCredential::OAuthConsumer(_))
    }

    async fn send_once(&self, target: &Target) -> Result<Vec<u8>, BitbucketError> {
        let what = || target.what.clone();
        let request = self
            .http
            .get(target.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout);
        let request = self.authorize(request).await?;
        let response = request
            .send()
            .await
            .map_err(|error| transport_error(error, what()))?;
        let status = response.status();
        self.metrics
            .bitbucket_request(endpoint_label(&target.what), status.as_u16());
        self.observe_rate_headers(response.headers());
        if status == StatusCode::TOO_MANY_REQUESTS {
            let asked = retry_after(response.headers());
            let pause = self.budget.rate_limited(asked);
            warn!(what = %target.what, ?pause, "Bitbucket rate limit hit; pausing every request");
            return Err(BitbucketError::RateLimited {
                retry_after: Some(pause),
            });
        }
        self.budget.succeeded();
        match status {
            s if s.is_success() => response
                .bytes()
                .await
                .map(|body| body.to_vec())
                .map_err(|error| transport_error(error, what())),
            StatusCode::UNAUTHORIZED => Err(BitbucketError::Unauthorized),
            StatusCode::FORBIDDEN => Err(BitbucketError::Forbidden { what: what() }),
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                Err(BitbucketError::NotFound { what: what() })
            }
            other => Err(BitbucketError::Server {
                status: other.as_u16(),
                what: what(),
            }),
        }
    }

    fn observe_rate_headers(&self, headers: &HeaderMap) {
        self.metrics
            .bitbucket_budget_used
            .set(self.budget.used_in_last_hour() as i64);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let limit = header("x-ratelimit-limit").and_then(|v| v.trim().parse::<u32>().ok());
        let near = header("x-ratelimit-nearlimit").map(|v| v.trim().eq_ignore_ascii_case("true"));
        if limit.is_some() || near.is_some() {
            self.budget.observe(limit, near);
        }
    }

    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, BitbucketError> {
        Ok(match &self.credential {
            BitbucketCredential::AccessToken(token) => request.bearer_auth(token.expose()),
            BitbucketCredential::ApiToken { email, token } => {
                request.basic_auth(email, Some(token.expose()))
            }
            BitbucketCredential::OAuthConsumer(consumer) => {
                let token = self
                    .oauth_access_token(&consumer.key, &consumer.secret)
                    .await?;
                request.bearer_auth(token.expose())
            }
        })
    }

    /// The consumer's access token, fetched with the client-credentials grant when there
    /// is none or it is about to expire.
    async fn oauth_access_token(
        &self,
        key: &str,
        secret: &Secret<String>,
    ) -> Result<Secret<String>, BitbucketError> {
        let mut cached = self.oauth_token.lock().await;
        if let Some(current) = cached.as_ref().filter(|c| c.renew_at > Instant::now()) {
            return Ok(current.token.clone());
        }
        let what = || self.token_url.path().to_string();
        let response = self
            .http
            .post(self.token_url.clone())
            .basic_auth(key, Some(secret.expose()))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body("grant_type=client_credentials")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|error| transport_error(error, what()))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST {
            return Err(BitbucketError::Unauthorized);
        }
        if !status.is_success() {
            return Err(BitbucketError::Server {
                status: status.as_u16(),
                what: what(),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| transport_error(error, what()))?;
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|error| BitbucketError::Decode {
                what: what(),
                cause: error.to_string(),
            })?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600));
        let renew_in = lifetime
            .saturating_sub(TOKEN_RENEW_MARGIN)
            .max(lifetime / 2);
        info!(
            renew_in_secs = renew_in.as_secs(),
            "Bitbucket OAuth token obtained"
        );
        let token = Secret::new(token.access_token);
        *cached = Some(CachedToken {
            token: token.clone(),
            renew_at: Instant::now() + renew_in,
        });
        Ok(token)
    }
}

fn transport_error(error: reqwest::Error, what: String) -> BitbucketError {
    if error.is_timeout() {
        BitbucketError::Timeout { what }
    } else {
        BitbucketError::Transport {
            what,
            cause: error.without_url().to_string(),
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Bitbucket), at most
/// [`super::budget::RETRY_AFTER_MAX`]. Garbage, negative and fractional values count as
/// absent (the exponential backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?)
}

fn parse_retry_after(text: &str) -> Option<Duration> {
    text.trim()
        .parse::<u64>()
        .ok()
        .map(|seconds| Duration::from_secs(seconds).min(super::budget::RETRY_AFTER_MAX))
}

/// 1 s, then 2 s, ... with up to half again of jitter.
fn retry_delay(attempt: u32) -> Duration {
    let base = Duration::from_secs(1) * 2u32.saturating_pow(attempt.saturating_sub(1));
    base.mul_f64(1.0 + rand::rng().random_range(0.0..0.5))
}

/// A BBQL datetime literal: RFC 3339 in UTC, unquoted (BBQL reads a quoted one as a
/// string, which a datetime field refuses).
fn bbql_time(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// A bounded metric label for a request path (`/2.0/repositories/acme/api/refs/branches`
/// becomes `branches`): never a repository name.
fn endpoint_label(path: &str) -> &'static str {
    let parts: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|part| !part.is_empty())
        .collect();
    let tail: Vec<&str> = parts.iter().skip(4).copied().collect();
    match (parts.len(), tail.as_slice()) {
        (_, _) if parts.get(1) != Some(&"repositories") => "other",
        (3, _) => "workspace_repositories",
        (4, []) => "repository",
        (_, ["pullrequests"]) => "pull_requests",
        (_, ["pullrequests", "activity"]) => "pull_request_activity",
        (_, ["pullrequests", ..]) => "pull_request",
        (_, ["refs", "branches", ..]) => "branches",
        (_, ["refs", "tags", ..]) => "tags",
        (_, ["commit", _, "statuses", ..]) => "commit_statuses",
        (_, ["deployments", ..]) => "deployments",
        (_, ["environments", ..]) => "environments",
        (_, ["commits", ..]) => "commits",
        (_, ["pipelines", ..]) => "pipelines",
        (_, ["issues", _, "comments"]) => "issue_comments",
        (_, ["issues", ..]) => "issues",
        (_, ["commit", ..]) => "commit",
        (_, ["src", ..]) => "src",
        _ => "other",
    }
}

#[cfg(test)]
mod endpoint_label_tests {
    use super::endpoint_label;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            endpoint_label("/2.0/repositories/acme/api/refs/branches"),
            "branches"
        );
        assert_eq!(
            endpoint_label("/2.0/repositories/acme/api/pullrequests/activity"),
            "pull_request_activity"
        );
        assert_eq!(
            endpoint_label("/2.0/repositories/acme"),
            "workspace_repositories"
        );
        assert_eq!(endpoint_label("/2.0/repositories/acme/api"), "repository");
        assert_eq!(
            endpoint_label("/2.0/repositories/acme/api/commit/abc/statuses"),
            "commit_statuses"
        );
        assert_eq!(
            endpoint_label("/2.0/repositories/acme/api/refs/tags"),
            "tags"
        );
        assert_eq!(
            endpoint_label("/2.0/repositories/acme/api/deployments/"),
            "deployments"
        );
        assert_eq!(
            endpoint_label("/2.0/repositories/acme/api/environments/"),
            "environments"
        );
        assert_eq!(endpoint_label("/2.0/user"), "other");
    }
}

#[cfg(test)]
mod tests;
