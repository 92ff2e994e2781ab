//! An in-process fake of Bitbucket Cloud's REST API 2.0 for the poller's tests.
//!
//! A real HTTP/1.1 server (axum) on `127.0.0.1:0` that serves JSON in the shapes of
//! Bitbucket Cloud's 2.0 REST API (its endpoints and payload objects) for every endpoint
//! the poller uses: the workspace sweep, repository, pull requests (list, detail, the
//! repository-wide activity feed), branches, commits between two heads, pipelines, issues
//! and issue comments, plus the OAuth client-credentials token endpoint. Collections are
//! paginated with `pagelen` and an opaque `next` link.
//!
//! A scriptable timeline changes the fake world (push, open a pull request, approve,
//! comment, run a pipeline, merge, ...), every request is recorded with its (tokio) time
//! and counted per [`Endpoint`], and answers can be replaced: a status (429 with or
//! without `Retry-After`, 500, 404), a slow answer, or a hold until the test releases it.
//! Nothing sleeps except a deliberately slow answer; waits are event driven with [`WAIT`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
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
    Token,
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
    /// Public unless a test says otherwise ([`FakeBitbucket::set_private`]).
    private: bool,
}

struct World {
    repos: BTreeMap<String, FakeRepo>,
    last_time: Timestamp,
    next_hash: u64,
    requests: Vec<Recorded>,
    injections: Vec<Injection>,
    accepted: BTreeSet<String>,
    oauth: Option<(String, String, u64)>,
    tokens_issued: u64,
    rate_limit_header: Option<u32>,
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

fn user(name: &str) -> Value {
    json!({
        "type": "user",
        "display_name": name,
        "uuid": uuid_of(name),
        "account_id": format!("5b10a2844c20165700ede{name}"),
        "nickname": name,
        "links": {"html": {"href": format!("https://bitbucket.org/%7B{name}%7D/")}}
    })
}

/// The `{uuid}` the fake gives a user name.
pub fn uuid_of(name: &str) -> String {
    format!("{{{name}-0000-4000-8000-000000000000}}")
}

fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

fn html(path: String) -> Value {
    json!({"html": {"href": format!("https://bitbucket.org/{path}")}, "self": {"href": format!("https://api.bitbucket.org/2.0/repositories/{path}")}})
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
        format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
    }

    /// A clock that reads the fake's time (its epoch plus tokio time), for the poller.
    pub fn clock(&self) -> FakeClock {
        FakeClock {
            inner: self.inner.clone(),
        }
    }

    /// Access tokens issued by the token endpoint so far.
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

    // -- the timeline --------------------------------------------------------

    /// The fake's clock: its epoch plus tokio time since start, strictly increasing.
    fn now(&self, world: &mut World) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.inner.started.elapsed()).expect("elapsed fits");
        let candidate = self.inner.epoch + elapsed;
        let next = candidate.max(world.last_time + SignedDuration::from_micros(1));
        world.last_time = next;
        next
    }

    fn with_repo<T>(
        &self,
        repo: &str,
        f: impl FnOnce(&mut FakeRepo, Timestamp, &mut u64) -> T,
    ) -> T {
        let mut world = self.inner.lock();
        let now = self.now(&mut world);
        let World {
            repos, next_hash, ..
        } = &mut *world;
        let entry = repos
            .get_mut(repo)
            .unwrap_or_else(|| panic!("fake bitbucket: no repository {repo}"));
        f(entry, now, next_hash)
    }

    /// Creates `repo` (`workspace/slug`) with a `main` branch of one commit.
    pub fn add_repository(&self, repo: &str) {
        {
            let mut world = self.inner.lock();
            world.repos.insert(
                repo.to_string(),
                FakeRepo {
                    has_issues: true,
                    next_id: 1,
                    ..FakeRepo::default()
                },
            );
        }
        self.push(repo, "main", &["Initial commit"]);
    }

    /// Makes a repository private (only readers may bring it into a channel).
    pub fn set_private(&self, repo: &str, private: bool) {
        self.with_repo(repo, |r, _, _| r.private = private);
    }

    /// Commits `messages` on `branch` (created from `main` if new); returns the new head.
    pub fn push(&self, repo: &str, branch: &str, messages: &[&str]) -> String {
        self.with_repo(repo, |r, now, next_hash| {
            let mut head = r
                .branches
                .get(branch)
                .or_else(|| r.branches.get("main"))
                .cloned();
            for message in messages {
                let hash = format!("{:040x}", next_hash.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                *next_hash += 1;
                r.commits.insert(
                    hash.clone(),
                    FakeCommit {
                        hash: hash.clone(),
                        parents: head.iter().cloned().collect(),
                        message: message.to_string(),
                        author: "Ada Lovelace <ada@example.com>".into(),
                        date: now,
                    },
                );
                head = Some(hash);
            }
            let head = head.expect("a push has at least one commit");
            r.branches.insert(branch.to_string(), head.clone());
            r.updated_on = Some(now);
            head
        })
    }

    pub fn delete_branch(&self, repo: &str, branch: &str) {
        self.with_repo(repo, |r, now, _| {
            r.branches.remove(branch);
            r.updated_on = Some(now);
        });
    }

    /// Opens a pull request from `source` to `main`; returns its id.
    pub fn open_pull_request(&self, repo: &str, source: &str, title: &str, author: &str) -> u64 {
        self.with_repo(repo, |r, now, _| {
            let id = r.next_id;
            r.next_id += 1;
            let pr = FakePullRequest {
                id,
                title: title.into(),
                state: "OPEN".into(),
                source: source.into(),
                destination: "main".into(),
                head: r.branches.get(source).cloned().unwrap_or_default(),
                author: author.into(),
                participants: BTreeMap::new(),
                updated_on: now,
            };
            let entry = update_entry(repo, &pr, now, None);
            r.pull_requests.insert(id, pr);
            r.feed.push((now, entry));
            id
        })
    }

    /// Pushes to a pull request's source branch (the feed gets an update entry).
    pub fn push_to_pull_request(&self, repo: &str, id: u64, message: &str) -> String {
        let source = self.with_repo(repo, |r, _, _| r.pull_requests[&id].source.clone());
        let head = self.push(repo, &source, &[message]);
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.head = head.clone();
            pr.updated_on = now;
            let entry = update_entry(repo, pr, now, None);
            r.feed.push((now, entry));
        });
        head
    }

    pub fn approve(&self, repo: &str, id: u64, who: &str) {
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.participants.insert(who.into(), (true, Some("approved".into())));
            pr.updated_on = now;
            let entry = json!({
                "approval": {"date": time(now), "user": user(who), "pullrequest": condensed(repo, pr)},
                "pull_request": condensed(repo, pr)
            });
            r.feed.push((now, entry));
        });
    }

    /// Withdraws an approval: Bitbucket drops the approval entry from the feed.
    pub fn unapprove(&self, repo: &str, id: u64, who: &str) {
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.participants.insert(who.into(), (false, None));
            pr.updated_on = now;
            let uuid = uuid_of(who);
            r.feed.retain(|(_, entry)| {
                !(entry["approval"]["user"]["uuid"] == uuid.as_str()
                    && entry["pull_request"]["id"] == id)
            });
        });
    }

    pub fn request_changes(&self, repo: &str, id: u64, who: &str) {
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.participants
                .insert(who.into(), (false, Some("changes_requested".into())));
            pr.updated_on = now;
            let entry = json!({
                "changes_request": {"date": time(now), "user": user(who), "pullrequest": condensed(repo, pr)},
                "pull_request": condensed(repo, pr)
            });
            r.feed.push((now, entry));
        });
    }

    /// Comments on a pull request (inline when `inline` names a file and line).
    pub fn comment(
        &self,
        repo: &str,
        id: u64,
        who: &str,
        text: &str,
        inline: Option<(&str, u64)>,
    ) -> u64 {
        self.with_repo(repo, |r, now, _| {
            let comment_id = 1000 + r.next_id;
            r.next_id += 1;
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.updated_on = now;
            let mut comment = json!({
                "type": "pullrequest_comment",
                "id": comment_id,
                "content": {"raw": text, "markup": "markdown", "html": format!("<p>{text}</p>"), "type": "rendered"},
                "user": user(who),
                "created_on": time(now),
                "updated_on": time(now),
                "deleted": false,
                "pending": false,
                "links": {"html": {"href": format!("https://bitbucket.org/{repo}/pull-requests/{id}/_/diff#comment-{comment_id}")}},
                "pullrequest": condensed(repo, pr)
            });
            if let Some((path, line)) = inline {
                comment["inline"] = json!({"path": path, "from": null, "to": line});
            }
            r.feed.push((now, json!({"comment": comment, "pull_request": condensed(repo, pr)})));
            comment_id
        })
    }

    /// Merges a pull request: a merge commit on `main`, the feed's MERGED update.
    pub fn merge(&self, repo: &str, id: u64, who: &str) {
        let title = self.with_repo(repo, |r, _, _| r.pull_requests[&id].title.clone());
        self.push(repo, "main", &[&format!("Merged in feature ({title})")]);
        self.close(repo, id, who, "MERGED", "");
    }

    pub fn decline(&self, repo: &str, id: u64, who: &str, reason: &str) {
        self.close(repo, id, who, "DECLINED", reason);
    }

    fn close(&self, repo: &str, id: u64, who: &str, state: &str, reason: &str) {
        self.with_repo(repo, |r, now, _| {
            let pr = r.pull_requests.get_mut(&id).expect("pull request");
            pr.state = state.into();
            pr.updated_on = now;
            let entry = update_entry(repo, pr, now, Some((who, reason)));
            r.feed.push((now, entry));
        });
    }

    /// Starts a pipeline on `branch`'s head; returns its uuid.
    pub fn start_pipeline(&self, repo: &str, branch: &str) -> String {
        self.with_repo(repo, |r, now, _| {
            let build_number = r.pipelines.len() as u64 + 1;
            let uuid = format!("{{pipeline-{build_number}-0000-4000-8000-000000000000}}");
            r.pipelines.push(FakePipeline {
                uuid: uuid.clone(),
                build_number,
                branch: branch.into(),
                commit: r.branches.get(branch).cloned().unwrap_or_default(),
                state: "IN_PROGRESS".into(),
                result: None,
                created_on: now,
                completed_on: None,
            });
            uuid
        })
    }

    /// Completes a pipeline with `result`: SUCCESSFUL, FAILED or STOPPED.
    pub fn finish_pipeline(&self, repo: &str, uuid: &str, result: &str) {
        self.with_repo(repo, |r, now, _| {
            let pipeline = r
                .pipelines
                .iter_mut()
                .find(|p| p.uuid == uuid)
                .expect("pipeline");
            pipeline.state = "COMPLETED".into();
            pipeline.result = Some(result.into());
            pipeline.completed_on = Some(now);
        });
    }

    pub fn create_issue(&self, repo: &str, title: &str, reporter: &str) -> u64 {
        self.with_repo(repo, |r, now, _| {
            let id = r.issues.len() as u64 + 1;
            r.issues.insert(
                id,
                FakeIssue {
                    id,
                    title: title.into(),
                    state: "new".into(),
                    reporter: reporter.into(),
                    created_on: now,
                    updated_on: now,
                    comments: Vec::new(),
                },
            );
            id
        })
    }

    pub fn update_issue(&self, repo: &str, id: u64, state: &str) {
        self.with_repo(repo, |r, now, _| {
            let issue = r.issues.get_mut(&id).expect("issue");
            issue.state = state.into();
            issue.updated_on = now;
        });
    }

    pub fn comment_issue(&self, repo: &str, id: u64, who: &str, text: &str) {
        self.with_repo(repo, |r, now, _| {
            let comment_id = 5000 + r.next_id;
            r.next_id += 1;
            let issue = r.issues.get_mut(&id).expect("issue");
            issue
                .comments
                .push((comment_id, text.into(), who.into(), now));
            issue.updated_on = now;
        });
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

fn condensed(repo: &str, pr: &FakePullRequest) -> Value {
    json!({
        "type": "pullrequest",
        "id": pr.id,
        "title": pr.title,
        "links": html(format!("{repo}/pull-requests/{}", pr.id))
    })
}

fn endpoint_json(repo: &str, branch: &str, hash: &str) -> Value {
    json!({
        "branch": {"name": branch},
        "commit": {"type": "commit", "hash": hash},
        "repository": {"type": "repository", "full_name": repo}
    })
}

fn update_entry(
    repo: &str,
    pr: &FakePullRequest,
    now: Timestamp,
    closed: Option<(&str, &str)>,
) -> Value {
    let mut update = json!({
        "state": pr.state,
        "title": pr.title,
        "description": "",
        "reason": closed.map(|(_, reason)| reason).unwrap_or(""),
        "source": endpoint_json(repo, &pr.source, &pr.head),
        "destination": endpoint_json(repo, &pr.destination, ""),
        "author": user(&pr.author),
        "date": time(now)
    });
    if let Some((who, _)) = closed {
        update["closed_by"] = user(who);
    }
    json!({"update": update, "pull_request": condensed(repo, pr)})
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

fn classify(method: &Method, path: &str) -> (Endpoint, Option<String>, Vec<String>) {
    if method == Method::POST && path == "/site/oauth2/access_token" {
        return (Endpoint::Token, None, Vec::new());
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
    let index = record(&inner, endpoint, &repository, &uri, &query, &authorization);
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
fn record(
    inner: &Inner,
    endpoint: Endpoint,
    repository: &Option<String>,
    uri: &Uri,
    query: &[(String, String)],
    authorization: &Option<String>,
) -> usize {
    let mut world = inner.lock();
    world.requests.push(Recorded {
        at: Instant::now(),
        endpoint,
        repository: repository.clone(),
        path: uri.path().to_string(),
        query: query.to_vec(),
        authorization: authorization.clone(),
        status: 0,
    });
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
    if endpoint == Endpoint::Token {
        return token(inner, authorization, body);
    }
    let mut world = inner.lock();
    let rate_limit = world.rate_limit_header;
    if !authorization.is_some_and(|a| world.accepted.contains(a)) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"type": "error", "error": {"message": "Access token expired."}}),
            None,
        );
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
    let Some(repo) = world.repos.get_mut(repo_name) else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"type": "error", "error": {"message": format!("Repository {repo_name} not found")}}),
            rate_limit,
        );
    };
    let values = match endpoint {
        Endpoint::Repository => {
            return json_response(StatusCode::OK, repo_json(repo_name, repo), rate_limit);
        }
        Endpoint::PullRequests => pull_requests(repo_name, repo, query),
        Endpoint::Feed => repo.feed.iter().rev().map(|(_, e)| e.clone()).collect(),
        Endpoint::PullRequest => {
            let id: u64 = parts[3].parse().unwrap_or(0);
            return match repo.pull_requests.get(&id) {
                Some(pr) => json_response(
                    StatusCode::OK,
                    pull_request_detail(repo_name, pr),
                    rate_limit,
                ),
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

fn token(inner: &Inner, authorization: Option<&str>, body: &[u8]) -> Response {
    let mut world = inner.lock();
    let Some((key, secret, expires_in)) = world.oauth.clone() else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client"}),
            None,
        );
    };
    let expected = format!("Basic {}", base64(format!("{key}:{secret}").as_bytes()));
    if authorization != Some(expected.as_str()) || body != b"grant_type=client_credentials" {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client"}),
            None,
        );
    }
    world.tokens_issued += 1;
    let token = format!("oauth-{}", world.tokens_issued);
    world.accepted.insert(format!("Bearer {token}"));
    json_response(
        StatusCode::OK,
        json!({"access_token": token, "scopes": "repository pullrequest pipeline issue", "expires_in": expires_in, "refresh_token": "r", "token_type": "bearer"}),
        None,
    )
}

/// Standard base64 with padding (for the expected Basic credentials).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The timestamp of a BBQL `field>"time"` query.
fn q_time(q: &str) -> Option<Timestamp> {
    let start = q.find('"')? + 1;
    let end = start + q[start..].find('"')?;
    q[start..end].parse().ok()
}

fn page(values: Vec<Value>, query: &[(String, String)], base: &str, parts: &[String]) -> Value {
    let pagelen: usize = query
        .iter()
        .find(|(k, _)| k == "pagelen")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let number: usize = query
        .iter()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let size = values.len();
    let slice: Vec<Value> = values
        .into_iter()
        .skip((number - 1) * pagelen)
        .take(pagelen)
        .collect();
    let mut body = json!({"pagelen": pagelen, "size": size, "page": number, "values": slice});
    if number * pagelen < size {
        let mut next_query: Vec<(String, String)> =
            query.iter().filter(|(k, _)| k != "page").cloned().collect();
        next_query.push(("page".into(), (number + 1).to_string()));
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(next_query)
            .finish();
        body["next"] = json!(format!(
            "{base}/2.0/repositories/{}?{encoded}",
            parts.join("/")
        ));
    }
    body
}

fn repo_json(name: &str, repo: &FakeRepo) -> Value {
    let slug = name.split('/').nth(1).unwrap_or(name);
    json!({
        "type": "repository",
        "full_name": name,
        "name": slug,
        "slug": slug,
        "uuid": format!("{{repo-{slug}}}"),
        "is_private": repo.private,
        "has_issues": repo.has_issues,
        "mainbranch": {"name": "main", "type": "branch"},
        "updated_on": repo.updated_on.map(time),
        "links": html(name.to_string())
    })
}

fn pull_request_json(repo: &str, pr: &FakePullRequest) -> Value {
    json!({
        "type": "pullrequest",
        "id": pr.id,
        "title": pr.title,
        "state": pr.state,
        "draft": false,
        "author": user(&pr.author),
        "source": endpoint_json(repo, &pr.source, &pr.head),
        "destination": endpoint_json(repo, &pr.destination, ""),
        "comment_count": 0,
        "task_count": 0,
        "updated_on": time(pr.updated_on),
        "links": html(format!("{repo}/pull-requests/{}", pr.id))
    })
}

fn pull_requests(repo: &str, r: &FakeRepo, query: &[(String, String)]) -> Vec<Value> {
    let states: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "state")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut prs: Vec<&FakePullRequest> = r
        .pull_requests
        .values()
        .filter(|pr| {
            if states.is_empty() {
                pr.state == "OPEN"
            } else {
                states.contains(&pr.state.as_str())
            }
        })
        .collect();
    prs.sort_by_key(|pr| std::cmp::Reverse(pr.id));
    prs.into_iter()
        .map(|pr| pull_request_json(repo, pr))
        .collect()
}

fn pull_request_detail(repo: &str, pr: &FakePullRequest) -> Value {
    let mut body = pull_request_json(repo, pr);
    body["participants"] = pr
        .participants
        .iter()
        .map(|(who, (approved, state))| {
            json!({"type": "participant", "user": user(who), "role": "REVIEWER", "approved": approved, "state": state, "participated_on": time(pr.updated_on)})
        })
        .collect();
    body["reviewers"] = json!([]);
    body
}

fn commit_json(repo: &str, commit: &FakeCommit) -> Value {
    json!({
        "type": "commit",
        "hash": commit.hash,
        "date": time(commit.date),
        "message": format!("{}\n", commit.message),
        "author": {"type": "author", "raw": commit.author, "user": user("ada")},
        "parents": commit.parents.iter().map(|p| json!({"hash": p, "type": "commit"})).collect::<Vec<_>>(),
        "links": html(format!("{repo}/commits/{}", commit.hash))
    })
}

fn branches(repo: &str, r: &FakeRepo) -> Vec<Value> {
    let mut list: Vec<(Timestamp, Value)> = r
        .branches
        .iter()
        .map(|(name, hash)| {
            let commit = &r.commits[hash];
            (
                commit.date,
                json!({"type": "branch", "name": name, "target": commit_json(repo, commit), "links": html(format!("{repo}/branch/{name}"))}),
            )
        })
        .collect();
    list.sort_by_key(|b| std::cmp::Reverse(b.0));
    list.into_iter().map(|(_, v)| v).collect()
}

fn ancestors(r: &FakeRepo, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(hash) = stack.pop() {
        if let Some(commit) = r.commits.get(&hash) {
            if seen.insert(hash) {
                stack.extend(commit.parents.iter().cloned());
            }
        }
    }
    seen
}

fn commits(repo: &str, r: &FakeRepo, head: &str, exclude: Option<&str>) -> Vec<Value> {
    let excluded = exclude.map(|e| ancestors(r, e)).unwrap_or_default();
    let mut list = Vec::new();
    let mut at = Some(head.to_string());
    while let Some(hash) = at {
        if excluded.contains(&hash) {
            break;
        }
        let Some(commit) = r.commits.get(&hash) else {
            break;
        };
        list.push(commit_json(repo, commit));
        at = commit.parents.first().cloned();
    }
    list
}

fn pipelines(r: &FakeRepo) -> Vec<Value> {
    let mut list: Vec<&FakePipeline> = r.pipelines.iter().collect();
    list.sort_by_key(|p| std::cmp::Reverse(p.created_on));
    list.into_iter()
        .map(|p| {
            let mut state = json!({"name": p.state, "type": "pipeline_state_in_progress"});
            if let Some(result) = &p.result {
                state = json!({"name": "COMPLETED", "type": "pipeline_state_completed", "result": {"name": result, "type": "pipeline_state_completed_result"}});
            }
            json!({
                "type": "pipeline",
                "uuid": p.uuid,
                "build_number": p.build_number,
                "creator": user("ada"),
                "target": {"type": "pipeline_ref_target", "ref_type": "branch", "ref_name": p.branch, "commit": {"type": "commit", "hash": p.commit}},
                "trigger": {"name": "PUSH", "type": "pipeline_trigger_push"},
                "state": state,
                "created_on": time(p.created_on),
                "completed_on": p.completed_on.map(time),
                "build_seconds_used": 42
            })
        })
        .collect()
}

fn issues(repo: &str, r: &FakeRepo, since: Option<Timestamp>) -> Vec<Value> {
    let mut list: Vec<&FakeIssue> = r
        .issues
        .values()
        .filter(|i| since.is_none_or(|s| i.updated_on > s))
        .collect();
    list.sort_by_key(|i| std::cmp::Reverse(i.updated_on));
    list.into_iter()
        .map(|i| {
            json!({
                "type": "issue", "id": i.id, "title": i.title, "state": i.state, "kind": "bug",
                "priority": "major", "reporter": user(&i.reporter), "assignee": null,
                "created_on": time(i.created_on), "updated_on": time(i.updated_on),
                "links": html(format!("{repo}/issues/{}", i.id))
            })
        })
        .collect()
}

fn issue_comments(repo: &str, r: &FakeRepo, id: u64, since: Option<Timestamp>) -> Vec<Value> {
    let Some(issue) = r.issues.get(&id) else {
        return Vec::new();
    };
    issue
        .comments
        .iter()
        .rev()
        .filter(|(_, _, _, at)| since.is_none_or(|s| *at > s))
        .map(|(cid, text, who, at)| {
            json!({
                "type": "issue_comment", "id": cid, "content": {"raw": text}, "user": user(who),
                "created_on": time(*at), "links": html(format!("{repo}/issues/{id}#comment-{cid}"))
            })
        })
        .collect()
}
