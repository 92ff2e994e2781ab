//! One in-process fake of Bitbucket Cloud (REST API 2.0 and the OAuth 2.0 consumer
//! endpoints) for the tests and benchmarks. It owns the fake world and its HTTP server;
//! it never sleeps except for a deliberately slow answer, and never leaves 127.0.0.1.
//!
//! A real HTTP/1.1 server (axum) on `127.0.0.1:0` that serves JSON in the shapes of
//! Bitbucket Cloud's 2.0 REST API (its endpoints and payload objects) for every endpoint
//! the daemon uses: the workspace sweep, repository, pull requests (list, detail, the
//! repository-wide activity feed), branches, commits between two heads, pipelines, issues
//! and issue comments, `GET /2.0/user`, and the OAuth consumer's `authorize` and
//! `access_token` endpoints (client credentials for the daemon; authorization code and
//! rotating refresh tokens for people). Collections are paginated with `pagelen` and an
//! opaque `next` link.
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
#[path = "fake_bitbucket/oauth.rs"]
mod oauth;
#[path = "fake_bitbucket/payloads.rs"]
mod payloads;
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
    branches, commits, issue_comments, issues, page, pipelines, pull_request_detail, pull_requests,
    q_time, repo_json,
};

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
use serde_json::{Value, json};
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
    state: String,
    source: String,
    destination: String,
    head: String,
    author: String,
    /// uuid-less user name → (approved, state)
    participants: BTreeMap<String, (bool, Option<String>)>,
    updated_on: Timestamp,
}

#[derive(Debug, Clone)]
struct FakePipeline {
    uuid: String,
    build_number: u64,
    branch: String,
    commit: String,
    state: String,
    result: Option<String>,
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
    comments: Vec<(u64, String, String, Timestamp)>,
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
            json!({"type": "error", "error": {"message": "Access token expired."}}),
            None,
        );
    };
    if endpoint == Endpoint::User {
        return match &reader {
            Reader::Person { account, .. } => {
                json_response(StatusCode::OK, oauth::user_json(account), rate_limit)
            }
            Reader::Daemon => {
                json_response(StatusCode::NOT_FOUND, json!({"type": "error"}), rate_limit)
            }
        };
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let base = format!("http://127.0.0.1:{}", inner.port);
    if endpoint == Endpoint::Sweep {
        let workspace = &parts[0];
        let since = param("q").and_then(q_time);
        let mut repos: Vec<(Timestamp, Value)> = world
            .repos
            .iter()
            .filter(|(name, _)| name.starts_with(&format!("{workspace}/")))
            .filter(|(name, r)| reader.reads(name, r))
            .filter_map(|(name, r)| Some((r.updated_on?, repo_json(name, r))))
            .filter(|(t, _)| since.is_none_or(|s| *t > s))
            .collect();
        repos.sort_by_key(|r| std::cmp::Reverse(r.0));
        let values = repos.into_iter().map(|(_, v)| v).collect();
        return json_response(
            StatusCode::OK,
            page(values, query, &base, parts),
            rate_limit,
        );
    }
    let Some(repo_name) = repository else {
        return json_response(StatusCode::NOT_FOUND, json!({"type": "error"}), rate_limit);
    };
    if matches!(
        endpoint,
        Endpoint::Approve
            | Endpoint::Unapprove
            | Endpoint::RequestChanges
            | Endpoint::Comment
            | Endpoint::Merge
            | Endpoint::Decline
            | Endpoint::Pipeline
            | Endpoint::PipelineRun
    ) {
        match world.repos.get(repo_name) {
            None => {
                return json_response(
                    StatusCode::NOT_FOUND,
                    json!({"type": "error", "error": {"message": "Repository not found"}}),
                    rate_limit,
                );
            }
            Some(r) if !reader.reads(repo_name, r) => {
                return json_response(
                    StatusCode::FORBIDDEN,
                    json!({"type": "error", "error": {"message": "Access denied."}}),
                    rate_limit,
                );
            }
            Some(_) => {}
        }
        return actions::answer(inner, &mut world, endpoint, &reader, repo_name, parts, body);
    }
    let strategies = world.actions.strategies_of(repo_name);
    let Some(repo) = world.repos.get_mut(repo_name) else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"type": "error", "error": {"message": format!("Repository {repo_name} not found")}}),
            rate_limit,
        );
    };
    if !reader.reads(repo_name, repo) {
        return json_response(
            StatusCode::FORBIDDEN,
            json!({"type": "error", "error": {"message": "Access denied."}}),
            rate_limit,
        );
    }
    let values = match endpoint {
        Endpoint::Repository => {
            return json_response(StatusCode::OK, repo_json(repo_name, repo), rate_limit);
        }
        Endpoint::PullRequests => pull_requests(repo_name, repo, query),
        Endpoint::Feed => repo.feed.iter().rev().map(|(_, e)| e.clone()).collect(),
        Endpoint::PullRequest => {
            let id: u64 = parts[3].parse().unwrap_or(0);
            return match repo.pull_requests.get(&id) {
                Some(pr) => {
                    let mut detail = pull_request_detail(repo_name, pr);
                    actions::decorate_detail(strategies.as_deref(), &mut detail);
                    json_response(StatusCode::OK, detail, rate_limit)
                }
                None => json_response(StatusCode::NOT_FOUND, json!({"type": "error"}), rate_limit),
            };
        }
        Endpoint::Branches => branches(repo_name, repo),
        Endpoint::Commits => commits(repo_name, repo, &parts[3], param("exclude")),
        Endpoint::Pipelines => pipelines(repo),
        Endpoint::Issues => issues(repo_name, repo, param("q").and_then(q_time)),
        Endpoint::IssueComments => {
            let id: u64 = parts[3].parse().unwrap_or(0);
            issue_comments(repo_name, repo, id, param("q").and_then(q_time))
        }
        _ => return json_response(StatusCode::NOT_FOUND, json!({"type": "error"}), rate_limit),
    };
    json_response(
        StatusCode::OK,
        page(values, query, &base, parts),
        rate_limit,
    )
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
