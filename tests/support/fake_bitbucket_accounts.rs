//! A fake of Bitbucket Cloud's OAuth 2.0 consumer endpoints and the REST calls that
//! account linking and access checks make (`GET /2.0/user`,
//! `GET /2.0/repositories/{ws}/{repo}`, `GET /2.0/repositories/{ws}`), on 127.0.0.1.
//! Refresh tokens rotate like Bitbucket's: using one retires it.
//!
//! Repositories are public or private. The daemon's own credential (an access token
//! given to [`FakeBitbucketAccounts::accept_daemon_token`]) reads every one; a person's
//! token reads the public ones and those in their account's readable set, which a test
//! can change at any time. Every request path is recorded.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

/// A Bitbucket account a person can log in as.
#[derive(Debug, Clone)]
pub struct FakeAccount {
    pub uuid: String,
    pub account_id: String,
    pub display_name: String,
    pub nickname: String,
    /// Repositories (`workspace/repo`) the account can read.
    pub readable: HashSet<String>,
}

impl FakeAccount {
    pub fn new(uuid: &str, display_name: &str, nickname: &str) -> Self {
        FakeAccount {
            uuid: uuid.into(),
            account_id: format!("557058:{nickname}"),
            display_name: display_name.into(),
            nickname: nickname.into(),
            readable: HashSet::new(),
        }
    }
}

#[derive(Default)]
struct State_ {
    consumer: Option<(String, String)>,
    callback_url: String,
    next_login: Option<Result<FakeAccount, String>>,
    codes: HashMap<String, FakeAccount>,
    access: HashMap<String, FakeAccount>,
    refresh: HashMap<String, FakeAccount>,
    counter: u64,
    calls: Vec<String>,
    /// full name -> is_private
    repositories: std::collections::BTreeMap<String, bool>,
    daemon_token: Option<String>,
    /// account uuid -> what it can read beyond public repositories
    readable: HashMap<String, HashSet<String>>,
}

/// The fake; dropping it stops the server.
pub struct FakeBitbucketAccounts {
    state: Arc<Mutex<State_>>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBitbucketAccounts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBitbucketAccounts {
    pub async fn start(consumer_key: &str, consumer_secret: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake bitbucket");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State_ {
            consumer: Some((consumer_key.into(), consumer_secret.into())),
            ..State_::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake bitbucket server");
        });
        FakeBitbucketAccounts { state, port, task }
    }

    pub fn oauth_url(&self) -> String {
        format!("http://127.0.0.1:{}/site/oauth2/", self.port)
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/2.0/", self.port)
    }

    /// The consumer's callback URL (Bitbucket sends the browser there).
    pub fn set_callback_url(&self, url: &str) {
        self.state.lock().expect("lock").callback_url = url.into();
    }

    /// The next consent: log in as `account`, or refuse with `error` (e.g. access_denied).
    pub fn next_login(&self, outcome: Result<FakeAccount, &str>) {
        self.state.lock().expect("lock").next_login = Some(outcome.map_err(str::to_string));
    }

    /// Revokes every token of the account with this uuid (access and refresh).
    pub fn revoke(&self, uuid: &str) {
        let mut state = self.state.lock().expect("lock");
        state.access.retain(|_, account| account.uuid != uuid);
        state.refresh.retain(|_, account| account.uuid != uuid);
    }

    /// Expires every access token (they must be refreshed).
    pub fn expire_access_tokens(&self) {
        self.state.lock().expect("lock").access.clear();
    }

    /// Adds a repository the daemon's credential can read.
    pub fn add_repository(&self, full_name: &str, private: bool) {
        self.state
            .lock()
            .expect("lock")
            .repositories
            .insert(full_name.into(), private);
    }

    /// The daemon's access token (`bitbucket.token`), which reads every repository.
    pub fn accept_daemon_token(&self, token: &str) {
        self.state.lock().expect("lock").daemon_token = Some(token.into());
    }

    /// What the account with this uuid can read from now on (its tokens stay valid).
    pub fn set_readable(&self, uuid: &str, repositories: &[&str]) {
        self.state.lock().expect("lock").readable.insert(
            uuid.into(),
            repositories.iter().map(|name| name.to_string()).collect(),
        );
    }

    /// The consumer secret the token endpoint accepts from now on.
    pub fn set_consumer_secret(&self, secret: &str) {
        let mut state = self.state.lock().expect("lock");
        if let Some((_, current)) = state.consumer.as_mut() {
            *current = secret.into();
        }
    }

    /// Every request path seen, with the grant type for token calls.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().expect("lock").calls.clone()
    }
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn handle(
    State(state): State<Arc<Mutex<State_>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let mut state = state.lock().expect("lock");
    match path.as_str() {
        "/site/oauth2/authorize" => authorize(&mut state, &uri),
        "/site/oauth2/access_token" => token(&mut state, &headers, &body),
        "/2.0/user" => {
            state.calls.push(path);
            match bearer_account(&state, &headers) {
                Some(account) => axum::Json(json!({
                    "type": "user",
                    "uuid": account.uuid,
                    "account_id": account.account_id,
                    "display_name": account.display_name,
                    "nickname": account.nickname,
                }))
                .into_response(),
                None => unauthorized(),
            }
        }
        other if other.starts_with("/2.0/repositories/") => {
            state.calls.push(path.clone());
            let name = other.trim_start_matches("/2.0/repositories/").to_string();
            let reader = match reader(&state, &headers) {
                Some(reader) => reader,
                None => return unauthorized(),
            };
            let can_read = |full_name: &str, private: Option<bool>| match &reader {
                Reader::Daemon => private.is_some(),
                Reader::Person(readable) => private == Some(false) || readable.contains(full_name),
            };
            if name.contains('/') {
                let private = state.repositories.get(&name).copied();
                if can_read(&name, private) {
                    axum::Json(json!({
                        "type": "repository",
                        "full_name": name,
                        "is_private": private.unwrap_or(true),
                        "mainbranch": {"type": "branch", "name": "main"}
                    }))
                    .into_response()
                } else if private.is_some() || matches!(reader, Reader::Person(_)) {
                    (
                        StatusCode::FORBIDDEN,
                        axum::Json(
                            json!({"type": "error", "error": {"message": "Access denied."}}),
                        ),
                    )
                        .into_response()
                } else {
                    not_found()
                }
            } else {
                let prefix = format!("{name}/");
                let values: Vec<serde_json::Value> = state
                    .repositories
                    .iter()
                    .filter(|(full_name, private)| {
                        full_name.starts_with(&prefix) && can_read(full_name, Some(**private))
                    })
                    .map(|(full_name, private)| {
                        json!({"type": "repository", "full_name": full_name, "is_private": private})
                    })
                    .collect();
                axum::Json(
                    json!({"pagelen": 100, "size": values.len(), "page": 1, "values": values}),
                )
                .into_response()
            }
        }
        other => {
            state.calls.push(other.to_string());
            not_found()
        }
    }
}

/// Who is asking.
enum Reader {
    Daemon,
    /// A person: the repositories their account can read beyond public ones.
    Person(HashSet<String>),
}

fn reader(state: &State_, headers: &HeaderMap) -> Option<Reader> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    if state.daemon_token.as_deref() == Some(token) {
        return Some(Reader::Daemon);
    }
    let account = state.access.get(token)?;
    Some(Reader::Person(
        state
            .readable
            .get(&account.uuid)
            .cloned()
            .unwrap_or_else(|| account.readable.clone()),
    ))
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"type": "error", "error": {"message": "fake bitbucket: no such route"}})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"type": "error", "error": {"message": "Access token expired."}})),
    )
        .into_response()
}

fn bearer_account(state: &State_, headers: &HeaderMap) -> Option<FakeAccount> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    state.access.get(token).cloned()
}

fn authorize(state: &mut State_, uri: &Uri) -> Response {
    let query = query_map(uri);
    state.calls.push("/site/oauth2/authorize".into());
    let client_ok = state
        .consumer
        .as_ref()
        .is_some_and(|(key, _)| query.get("client_id") == Some(key));
    if !client_ok || query.get("response_type").map(String::as_str) != Some("code") {
        return (
            StatusCode::BAD_REQUEST,
            "fake bitbucket: bad authorize request",
        )
            .into_response();
    }
    let mut location = url::Url::parse(&state.callback_url).expect("callback URL set");
    let outcome = state
        .next_login
        .take()
        .unwrap_or(Err("access_denied".into()));
    match outcome {
        Ok(account) => {
            state.counter += 1;
            let code = format!("bb-code-{}", state.counter);
            state.codes.insert(code.clone(), account);
            location.query_pairs_mut().append_pair("code", &code);
        }
        Err(error) => {
            location.query_pairs_mut().append_pair("error", &error);
        }
    }
    if let Some(value) = query.get("state") {
        location.query_pairs_mut().append_pair("state", value);
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

fn token(state: &mut State_, headers: &HeaderMap, body: &[u8]) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    state
        .calls
        .push(format!("/site/oauth2/access_token:{grant}"));
    let expected = state.consumer.clone().map(|(key, secret)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
        )
    });
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != expected.as_deref()
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let account = match grant.as_str() {
        "authorization_code" => form.get("code").and_then(|code| state.codes.remove(code)),
        // Rotation: a refresh token works once.
        "refresh_token" => form
            .get("refresh_token")
            .and_then(|token| state.refresh.remove(token)),
        _ => None,
    };
    let Some(account) = account else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"error": "invalid_grant", "error_description": "Invalid or expired grant"}),
            ),
        )
            .into_response();
    };
    state.counter += 1;
    let access = format!("bb-access-{}", state.counter);
    let refresh = format!("bb-refresh-{}", state.counter);
    state.access.insert(access.clone(), account.clone());
    state.refresh.insert(refresh.clone(), account);
    axum::Json(json!({
        "access_token": access,
        "scopes": "account repository",
        "expires_in": 7200,
        "refresh_token": refresh,
        "token_type": "bearer"
    }))
    .into_response()
}
