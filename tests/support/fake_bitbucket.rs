//! One in-process fake of Bitbucket Cloud (REST API 2.0 and the OAuth 2.0 consumer
//! endpoints) for the tests and benchmarks. It owns the fake world and its HTTP server;
//! it never sleeps except for a deliberately slow answer, and never leaves 127.0.0.1.
//!
//! A real HTTP/1.1 server (axum) on `127.0.0.1:0` that serves JSON in the shapes of
//! Bitbucket Cloud's 2.0 REST API (its endpoints and payload objects) for every endpoint
//! the daemon uses: the workspace sweep, repository, pull requests (list, detail, the
//! repository-wide activity feed), branches, commits between two heads, pipelines, issues
//! and issue comments and changes, `GET /2.0/user`, and the OAuth consumer's `authorize`
//! and `access_token` endpoints (client credentials for the daemon; authorization code and
//! rotating refresh tokens for people). Collections are paginated with `pagelen` and an
//! opaque `next` link.
//!
//! Faithful where the daemon could be fooled: every 2.0 answer goes through `fields=` as
//! Bitbucket applies it (`fake_bitbucket/fields.rs`; the pull-request collection hides
//! `reviewers` and `participants` unless asked), accounts are served as users, teams or
//! app users and deleted ones as `null`, pull requests carry 12-digit commit hashes (hash
//! lookups accept a prefix), feed updates never carry `closed_by`, and a BBQL `q=` with a
//! quoted datetime is refused with 400 as Bitbucket refuses it.
//!
//! One repository model: each repository is public or private. The daemon's credential
//! ([`TOKEN`], anything given to [`FakeBitbucket::accept`], and client-credentials tokens)
//! reads every repository; a person's token reads the public ones and those their
//! account may read ([`FakeAccount::readable`], [`FakeBitbucket::set_readable`]).
//!
//! A scriptable timeline changes the fake world (push, open a pull request, approve,
//! comment, run a pipeline, merge, ...; see `fake_bitbucket/timeline.rs`), every request
//! is recorded with its (tokio) time and counted per [`Endpoint`], and answers can be
//! replaced: a status (429 with or without `Retry-After`, 500, 404), a slow answer, or a
//! hold until the test releases it. Waits are event driven with [`WAIT`].

#[path = "fake_bitbucket/actions.rs"]
mod actions;
#[path = "fake_bitbucket/ci.rs"]
mod ci;
#[path = "fake_bitbucket/fields.rs"]
pub mod fields;
#[path = "fake_bitbucket/oauth.rs"]
mod oauth;
#[path = "fake_bitbucket/payloads.rs"]
mod payloads;
#[path = "fake_bitbucket/previews.rs"]
mod previews;
#[path = "fake_bitbucket/timeline.rs"]
mod timeline;

/// Not every crate that includes this file looks at merges.
#[allow(unused_imports)]
pub use actions::FakeMerge;
pub use oauth::FakeAccount;
/// Not every crate that includes this file names a user by uuid.
#[allow(unused_imports)]
pub use payloads::uuid_of;
use payloads::{
    AccountState, PULL_REQUESTS_HIDDEN, branches, commits, error, issue_changes, issue_comments,
    issues, page, pipelines, present_accounts, pull_request_detail, pull_requests, q_time,
    repo_json,
};
/// Not every crate that includes this file reads the feed's request-changes key.
#[allow(unused_imports)]
pub use payloads::{CHANGES_REQUEST_KEY, SHORT_HASH_LEN};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How long a wait for the poller may take (in tokio time: simulated under paused time).
pub const WAIT: Duration = Duration::from_secs(4 * 3600);

/// The access token the fake accepts by default.
pub const TOKEN: &str = "test-access-token";

/// Which endpoint a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Sweep,
    Repository,
    PullRequests,
    Feed,
    PullRequest,
    Branches,
    Commits,
    Pipelines,
    Issues,
    IssueComments,
    /// `GET …/commit/{hash}/statuses` (see `fake_bitbucket/ci.rs`).
    CommitStatuses,
    Tags,
    Deployments,
    Environments,
    /// `…/issues/{id}/changes`: the edits of an issue.
    IssueChanges,
    /// `POST /site/oauth2/access_token`, every grant.
    Token,
    /// `GET /site/oauth2/authorize`: the consent page a person's browser is sent to.
    Authorize,
    /// `GET /2.0/user`.
    User,
    /// A person's writes (`fake_bitbucket/actions.rs`): `POST`/`DELETE …/approve`.
    Approve,
    Unapprove,
    RequestChanges,
    /// `POST …/pullrequests/{id}/comments`.
    Comment,
    Merge,
    Decline,
    /// `GET …/pipelines/{uuid}`.
    Pipeline,
    /// `POST …/pipelines/`: a pipeline started.
    PipelineRun,
    /// Link previews' single-object reads (`fake_bitbucket/previews.rs`): `GET
    /// …/commit/{hash}`, `…/refs/branches/{name}`, `…/issues/{id}`, `…/pipelines/{n}` and
    /// `…/src/{commit}/{path}`.
    CommitDetail,
    BranchDetail,
    IssueDetail,
    PipelineByNumber,
    Source,
    Unknown,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub endpoint: Endpoint,
    /// `workspace/slug` when the path names a repository.
    pub repository: Option<String>,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    /// The `grant_type` of a token request.
    pub grant: Option<String>,
    pub status: u16,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A replacement answer.
#[derive(Debug, Clone)]
pub enum Answer {
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    Slow(Duration),
    /// Waits until [`FakeBitbucket::release`] (then answers normally).
    Hold,
}

#[derive(Debug, Clone)]
struct Injection {
    endpoint: Endpoint,
    repository: Option<String>,
    remaining: usize,
    answer: Answer,
}

#[derive(Debug, Clone)]
struct FakeCommit {
    hash: String,
    parents: Vec<String>,
    message: String,
    author: String,
    date: Timestamp,
}

#[derive(Debug, Clone)]
struct FakePullRequest {
    id: u64,
    title: String,
    /// OPEN, DRAFT, QUEUED, MERGED, DECLINED or SUPERSEDED.
    state: String,
    draft: bool,
    source: String,
    destination: String,
    /// The source branch's head (full hash; served short).
    head: String,
    author: String,
    /// User names, in the order they were asked to review.
    reviewers: Vec<String>,
    /// User name → what they did on the pull request.
    participants: BTreeMap<String, FakeParticipant>,
    /// Who merged, declined or superseded it (pull request objects only, never the feed).
    closed_by: Option<String>,
    reason: String,
    created_on: Timestamp,
    updated_on: Timestamp,
}

/// One `participants` entry of a pull request.
#[derive(Debug, Clone)]
struct FakeParticipant {
    /// REVIEWER or PARTICIPANT.
    role: &'static str,
    approved: bool,
    /// `approved`, `changes_requested` or none.
    state: Option<&'static str>,
    participated_on: Option<Timestamp>,
}

/// A pipeline's `state`, as the API description has it.
#[derive(Debug, Clone)]
enum PipelineState {
    Pending,
    /// `stage`: RUNNING, PAUSED or HALTED.
    InProgress {
        stage: String,
    },
    /// `result`: SUCCESSFUL, FAILED, ERROR, STOPPED or EXPIRED.
    Completed {
        result: String,
    },
}

/// What a pipeline runs on.
#[derive(Debug, Clone)]
enum PipelineTarget {
    Branch(String),
    PullRequest {
        id: u64,
        source: String,
        destination: String,
    },
}

#[derive(Debug, Clone)]
struct FakePipeline {
    uuid: String,
    build_number: u64,
    target: PipelineTarget,
    commit: String,
    state: PipelineState,
    created_on: Timestamp,
    completed_on: Option<Timestamp>,
}

#[derive(Debug, Clone)]
struct FakeIssue {
    id: u64,
    title: String,
    state: String,
    reporter: String,
    created_on: Timestamp,
    updated_on: Timestamp,
    comments: Vec<FakeIssueComment>,
    changes: Vec<FakeIssueChange>,
}

/// An issue comment; `raw: None` is the empty comment Bitbucket adds for an edit.
#[derive(Debug, Clone)]
struct FakeIssueComment {
    id: u64,
    raw: Option<String>,
    user: String,
    created_on: Timestamp,
}

/// One edit of an issue (its state), as `…/issues/{id}/changes` serves it.
#[derive(Debug, Clone)]
struct FakeIssueChange {
    id: u64,
    user: String,
    old_state: String,
    new_state: String,
    created_on: Timestamp,
}

#[derive(Debug, Clone, Default)]
struct FakeRepo {
    updated_on: Option<Timestamp>,
    has_issues: bool,
    branches: BTreeMap<String, String>,
    commits: HashMap<String, FakeCommit>,
    pull_requests: BTreeMap<u64, FakePullRequest>,
    /// Feed entries in the order they happened (served newest first).
    feed: Vec<(Timestamp, Value)>,
    pipelines: Vec<FakePipeline>,
    issues: BTreeMap<u64, FakeIssue>,
    next_id: u64,
    /// Public unless a test says otherwise ([`FakeBitbucket::set_private`]): then only the
    /// daemon's credential and the people who may read it see it.
    private: bool,
    /// Commit statuses, tags, deployments and environments.
    ci: ci::CiState,
    /// File path → contents, the same at every revision (`fake_bitbucket/previews.rs`).
    files: BTreeMap<String, Vec<u8>>,
    /// `GET …/pipelines/{n}` takes only uuids (see `previews.rs`).
    pipelines_only_by_uuid: bool,
}

struct World {
    repos: BTreeMap<String, FakeRepo>,
    last_time: Timestamp,
    next_hash: u64,
    requests: Vec<Recorded>,
    injections: Vec<Injection>,
    accepted: BTreeSet<String>,
    /// The OAuth consumer: key, secret, and how long its access tokens live (seconds).
    oauth: Option<(String, String, u64)>,
    tokens_issued: u64,
    rate_limit_header: Option<u32>,
    people: oauth::People,
    /// Account uuid → what became of it (a team, an app user, deleted).
    accounts: HashMap<String, AccountState>,
    /// Whether pull request activity moves the repository's `updated_on` in the
    /// workspace listing (as recorded responses show); off unless a test turns it on.
    pull_requests_move_updated_on: bool,
    actions: actions::ActionRules,
}

struct Inner {
    port: u16,
    started: Instant,
    epoch: Timestamp,
    world: Mutex<World>,
    requests_changed: watch::Sender<usize>,
    release: watch::Sender<u64>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .expect("fake bitbucket state mutex poisoned (an earlier panic)")
    }
}

/// A running fake Bitbucket. Dropping it stops the server.
pub struct FakeBitbucket {
    inner: Arc<Inner>,
    task: AbortHandle,
}

impl Drop for FakeBitbucket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fake's time as a [`Clock`]: moves with tokio time, so paused tests stay in step.
/// Never behind the newest event the timeline created.
#[derive(Clone)]
pub struct FakeClock {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeClock")
    }
}

impl bitbucket_slack::clock::Clock for FakeClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.inner.started.elapsed()).expect("elapsed fits");
        (self.inner.epoch + elapsed).max(self.inner.lock().last_time)
    }
}

impl FakeBitbucket {
    /// Binds `127.0.0.1:0` and serves on the current runtime.
    pub async fn start() -> FakeBitbucket {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake bitbucket: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let inner = Arc::new(Inner {
            port,
            started: Instant::now(),
            epoch: "2026-03-02T09:00:00Z".parse().expect("epoch"),
            world: Mutex::new(World {
                repos: BTreeMap::new(),
                last_time: Timestamp::UNIX_EPOCH,
                next_hash: 1,
                requests: Vec::new(),
                injections: Vec::new(),
                accepted: [format!("Bearer {TOKEN}")].into_iter().collect(),
                oauth: None,
                tokens_issued: 0,
                rate_limit_header: None,
                people: oauth::People::default(),
                accounts: HashMap::new(),
                pull_requests_move_updated_on: false,
                actions: Default::default(),
            }),
            requests_changed: watch::channel(0).0,
            release: watch::channel(0).0,
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake bitbucket: server failed");
        });
        FakeBitbucket {
            inner,
            task: task.abort_handle(),
        }
    }

    /// The API base, as `bitbucket.api_url`: `http://127.0.0.1:{port}/2.0/`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/2.0/", self.inner.port)
    }

    /// The OAuth base, as `bitbucket.oauth_url`.
    pub fn oauth_url(&self) -> String {
        format!("http://127.0.0.1:{}/site/oauth2/", self.inner.port)
    }

    /// Accepts an OAuth consumer; its tokens live `expires_in` seconds.
    pub fn accept_oauth_consumer(&self, key: &str, secret: &str, expires_in: u64) {
        self.inner.lock().oauth = Some((key.into(), secret.into(), expires_in));
    }

    /// Also accepts this `Authorization` header (for example Basic credentials).
    pub fn accept(&self, authorization: &str) {
        self.inner.lock().accepted.insert(authorization.to_string());
    }

    /// The `Authorization` header for Basic credentials.
    pub fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    /// A clock that reads the fake's time (its epoch plus tokio time), for the poller.
    pub fn clock(&self) -> FakeClock {
        FakeClock {
            inner: self.inner.clone(),
        }
    }

    /// Client-credentials access tokens issued by the token endpoint so far.
    pub fn tokens_issued(&self) -> u64 {
        self.inner.lock().tokens_issued
    }

    /// Stops accepting every token issued so far (they "expired" early).
    pub fn revoke_issued_tokens(&self) {
        self.inner
            .lock()
            .accepted
            .retain(|auth| !auth.starts_with("Bearer oauth-"));
    }

    /// Makes pull request activity move the repository's `updated_on` in the workspace
    /// listing, as recorded Bitbucket responses show (pushes always move it here).
    pub fn pull_request_activity_moves_updated_on(&self) {
        self.inner.lock().pull_requests_move_updated_on = true;
    }

    /// Sends `X-RateLimit-Limit` with every answer (as for access tokens).
    pub fn send_rate_limit_header(&self, limit: u32) {
        self.inner.lock().rate_limit_header = Some(limit);
    }

    // -- failures ------------------------------------------------------------

    /// Replaces the next `times` answers of `endpoint` (of `repository`, if given).
    pub fn inject(
        &self,
        endpoint: Endpoint,
        repository: Option<&str>,
        times: usize,
        answer: Answer,
    ) {
        self.inner.lock().injections.push(Injection {
            endpoint,
            repository: repository.map(str::to_string),
            remaining: times,
            answer,
        });
    }

    /// Lets every held request answer.
    pub fn release(&self) {
        self.inner.release.send_modify(|n| *n += 1);
    }

    // -- observation ---------------------------------------------------------

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().requests.clone()
    }

    /// Every request's path in the order they arrived, a token request's followed by
    /// `:` and its grant type (`/site/oauth2/access_token:refresh_token`).
    pub fn calls(&self) -> Vec<String> {
        self.inner
            .lock()
            .requests
            .iter()
            .map(|request| match &request.grant {
                Some(grant) => format!("{}:{grant}", request.path),
                None => request.path.clone(),
            })
            .collect()
    }

    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    /// Waits until `count` requests to `endpoint` arrived. Panics after [`WAIT`].
    pub async fn wait_for(&self, endpoint: Endpoint, count: usize) {
        let mut changed = self.inner.requests_changed.subscribe();
        let waited = tokio::time::timeout(WAIT, async {
            while self.count(endpoint) < count {
                changed.changed().await.expect("fake bitbucket alive");
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "fake bitbucket: waited {WAIT:?} for {count} {endpoint:?} requests, got {}",
                self.count(endpoint)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

fn classify(method: &Method, path: &str) -> (Endpoint, Option<String>, Vec<String>) {
    match (method, path) {
        (&Method::POST, "/site/oauth2/access_token") => {
            return (Endpoint::Token, None, Vec::new());
        }
        (&Method::GET, "/site/oauth2/authorize") => return (Endpoint::Authorize, None, Vec::new()),
        (&Method::GET, "/2.0/user") => return (Endpoint::User, None, Vec::new()),
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/2.0/repositories/") else {
        return (Endpoint::Unknown, None, Vec::new());
    };
    let parts: Vec<String> = rest
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let repo = (parts.len() >= 2).then(|| format!("{}/{}", parts[0], parts[1]));
    let tail: Vec<&str> = parts.iter().skip(2).map(String::as_str).collect();
    if let Some(endpoint) = previews::classify(method, &tail) {
        return (endpoint, repo, parts);
    }
    if let Some(endpoint) = actions::classify(method, &tail) {
        return (endpoint, repo, parts);
    }
    let endpoint = match (parts.len(), tail.as_slice()) {
        (1, _) => Endpoint::Sweep,
        (2, []) => Endpoint::Repository,
        (_, ["pullrequests"]) => Endpoint::PullRequests,
        (_, ["pullrequests", "activity"]) => Endpoint::Feed,
        (_, ["pullrequests", _]) => Endpoint::PullRequest,
        (_, ["refs", "branches"]) => Endpoint::Branches,
        (_, ["commits", _]) => Endpoint::Commits,
        (_, ["pipelines"]) => Endpoint::Pipelines,
        (_, ["issues"]) => Endpoint::Issues,
        (_, ["issues", _, "comments"]) => Endpoint::IssueComments,
        (_, ["commit", _, "statuses"]) => Endpoint::CommitStatuses,
        (_, ["refs", "tags"]) => Endpoint::Tags,
        (_, ["deployments"]) => Endpoint::Deployments,
        (_, ["environments"]) => Endpoint::Environments,
        (_, ["issues", _, "changes"]) => Endpoint::IssueChanges,
        _ => Endpoint::Unknown,
    };
    (endpoint, repo, parts)
}

fn json_response(status: StatusCode, body: Value, rate_limit: Option<u32>) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(limit) = rate_limit {
        response.headers_mut().insert(
            "x-ratelimit-limit",
            HeaderValue::from_str(&limit.to_string()).expect("header"),
        );
        response
            .headers_mut()
            .insert("x-ratelimit-nearlimit", HeaderValue::from_static("false"));
    }
    response
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (endpoint, repository, parts) = classify(&method, uri.path());
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let grant = (endpoint == Endpoint::Token).then(|| {
        url::form_urlencoded::parse(&body)
            .find(|(key, _)| key == "grant_type")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    });
    let index = record(
        &inner,
        Recorded {
            at: Instant::now(),
            endpoint,
            repository: repository.clone(),
            path: uri.path().to_string(),
            query: query.clone(),
            authorization: authorization.clone(),
            grant,
            status: 0,
        },
    );
    let injected = take_injection(&inner, endpoint, repository.as_deref());
    let mut status_override = None;
    match injected {
        Some(Answer::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Answer::Hold) => {
            let mut release = inner.release.subscribe();
            let seen = *release.borrow_and_update();
            let _ = release.wait_for(|n| *n > seen).await;
        }
        Some(Answer::Status {
            status,
            retry_after,
        }) => status_override = Some((status, retry_after)),
        None => {}
    }
    let response = match status_override {
        Some((status, retry_after)) => injected_status(status, retry_after),
        None => answer(
            &inner,
            endpoint,
            repository.as_deref(),
            &parts,
            &query,
            authorization.as_deref(),
            &body,
        ),
    };
    inner.lock().requests[index].status = response.status().as_u16();
    response
}

fn injected_status(status: u16, retry_after: Option<u64>) -> Response {
    let mut response = (
        StatusCode::from_u16(status).expect("status"),
        "Rate limit for this resource has been exceeded",
    )
        .into_response();
    if let Some(secs) = retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).expect("header"),
        );
    }
    response
}

fn take_injection(inner: &Inner, endpoint: Endpoint, repository: Option<&str>) -> Option<Answer> {
    let mut world = inner.lock();
    let found = world.injections.iter_mut().find(|i| {
        i.remaining > 0
            && i.endpoint == endpoint
            && i.repository
                .as_deref()
                .is_none_or(|r| Some(r) == repository)
    })?;
    found.remaining -= 1;
    Some(found.answer.clone())
}

/// Records a request on arrival (status 0 until answered); returns its index.
fn record(inner: &Inner, request: Recorded) -> usize {
    let mut world = inner.lock();
    world.requests.push(request);
    let n = world.requests.len();
    drop(world);
    inner.requests_changed.send_replace(n);
    n - 1
}

fn answer(
    inner: &Inner,
    endpoint: Endpoint,
    repository: Option<&str>,
    parts: &[String],
    query: &[(String, String)],
    authorization: Option<&str>,
    body: &[u8],
) -> Response {
    match endpoint {
        Endpoint::Token => return oauth::token(inner, authorization, body),
        Endpoint::Authorize => return oauth::authorize(inner, query),
        _ => {}
    }
    let mut world = inner.lock();
    let rate_limit = world.rate_limit_header;
    let Some(reader) = reader(&world, authorization) else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            error("Access token expired."),
            None,
        );
    };
    if endpoint == Endpoint::Source {
        return previews::source(&world, &reader, repository, parts);
    }
    if actions::is_write(endpoint) {
        let Some(repo_name) = repository else {
            return json_response(
                StatusCode::NOT_FOUND,
                error("Resource not found"),
                rate_limit,
            );
        };
        match world.repos.get(repo_name) {
            None => {
                return json_response(
                    StatusCode::NOT_FOUND,
                    error("Repository not found"),
                    rate_limit,
                );
            }
            Some(r) if !reader.reads(repo_name, r) => {
                return json_response(StatusCode::FORBIDDEN, error("Access denied."), rate_limit);
            }
            Some(_) => {}
        }
        return actions::answer(inner, &mut world, endpoint, &reader, repo_name, parts, body);
    }
    let (status, mut body, hidden) = api_answer(
        inner, &mut world, &reader, endpoint, repository, parts, query,
    );
    if !status.is_success() {
        return json_response(status, body, rate_limit);
    }
    present_accounts(&mut body, &world.accounts);
    let fields = query
        .iter()
        .find(|(k, _)| k == "fields")
        .map(|(_, v)| v.as_str());
    json_response(status, fields::apply(body, fields, hidden), rate_limit)
}

/// A 2.0 API answer in full (before `fields=` and what became of accounts), with the paths
/// the endpoint hides by default.
fn api_answer(
    inner: &Inner,
    world: &mut World,
    reader: &Reader,
    endpoint: Endpoint,
    repository: Option<&str>,
    parts: &[String],
    query: &[(String, String)],
) -> (StatusCode, Value, &'static [&'static str]) {
    let ok = |body: Value| (StatusCode::OK, body, &[] as &'static [&'static str]);
    let not_found = |message: &str| (StatusCode::NOT_FOUND, error(message), &[] as &[&str]);
    if endpoint == Endpoint::User {
        return match reader {
            Reader::Person { account, .. } => ok(oauth::user_json(account)),
            Reader::Daemon => not_found("No user for this credential"),
        };
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let since = match param("q").map(q_time).transpose() {
        Ok(since) => since.flatten(),
        Err(message) => return (StatusCode::BAD_REQUEST, error(&message), &[]),
    };
    let base = format!("http://127.0.0.1:{}", inner.port);
    if endpoint == Endpoint::Sweep {
        let workspace = &parts[0];
        let mut repos: Vec<(Timestamp, Value)> = world
            .repos
            .iter()
            .filter(|(name, _)| name.starts_with(&format!("{workspace}/")))
            .filter(|(name, r)| reader.reads(name, r))
            .filter_map(|(name, r)| {
                let pull_requests = r
                    .pull_requests
                    .values()
                    .map(|pr| pr.updated_on)
                    .filter(|_| world.pull_requests_move_updated_on);
                let updated_on = r.updated_on.into_iter().chain(pull_requests).max()?;
                let mut json = repo_json(name, r);
                json["updated_on"] = serde_json::json!(payloads::time(updated_on));
                Some((updated_on, json))
            })
            .filter(|(t, _)| since.is_none_or(|s| *t > s))
            .collect();
        repos.sort_by_key(|r| std::cmp::Reverse(r.0));
        let values = repos.into_iter().map(|(_, v)| v).collect();
        return ok(page(values, query, &base, parts));
    }
    let Some(repo_name) = repository else {
        return not_found("Resource not found");
    };
    let strategies = world.actions.strategies_of(repo_name);
    let Some(repo) = world.repos.get_mut(repo_name) else {
        return not_found(&format!("Repository {repo_name} not found"));
    };
    if !reader.reads(repo_name, repo) {
        return (StatusCode::FORBIDDEN, error("Access denied."), &[]);
    }
    if let Some(found) = previews::values(endpoint, repo_name, repo, parts) {
        return match found {
            Ok(body) => ok(body),
            Err(message) => not_found(message),
        };
    }
    let id: u64 = parts.get(3).and_then(|p| p.parse().ok()).unwrap_or(0);
    let values = match endpoint {
        Endpoint::Repository => return ok(repo_json(repo_name, repo)),
        Endpoint::PullRequests => {
            let values = pull_requests(repo_name, repo, query);
            return (
                StatusCode::OK,
                page(values, query, &base, parts),
                PULL_REQUESTS_HIDDEN,
            );
        }
        Endpoint::Feed => repo.feed.iter().rev().map(|(_, e)| e.clone()).collect(),
        Endpoint::PullRequest => {
            return match repo.pull_requests.get(&id) {
                Some(pr) => {
                    let mut detail = pull_request_detail(repo_name, repo, pr);
                    actions::decorate_detail(strategies.as_deref(), &mut detail);
                    ok(detail)
                }
                None => not_found(&format!("No pull request {id}")),
            };
        }
        Endpoint::Branches => branches(repo_name, repo),
        Endpoint::Commits => commits(repo_name, repo, &parts[3], param("exclude")),
        Endpoint::Pipelines => pipelines(repo),
        Endpoint::Issues => issues(repo_name, repo, since),
        Endpoint::IssueComments => issue_comments(repo_name, repo, id, since),
        Endpoint::IssueChanges => issue_changes(repo_name, repo, id),
        _ => match ci::values(endpoint, repo_name, repo, parts) {
            Some(values) => values,
            None => return not_found("Resource not found"),
        },
    };
    ok(page(values, query, &base, parts))
}

/// Whom a request's `Authorization` header speaks for.
enum Reader {
    /// The daemon's credential: reads every repository.
    Daemon,
    /// A person's token: reads public repositories and those in `readable`.
    Person {
        account: FakeAccount,
        readable: HashSet<String>,
    },
}

impl Reader {
    fn reads(&self, name: &str, repo: &FakeRepo) -> bool {
        match self {
            Reader::Daemon => true,
            Reader::Person { readable, .. } => !repo.private || readable.contains(name),
        }
    }
}

fn reader(world: &World, authorization: Option<&str>) -> Option<Reader> {
    let authorization = authorization?;
    if world.accepted.contains(authorization) {
        return Some(Reader::Daemon);
    }
    let (account, readable) = world
        .people
        .person(authorization.strip_prefix("Bearer ")?)?;
    Some(Reader::Person { account, readable })
}
