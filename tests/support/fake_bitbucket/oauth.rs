//! The fake Bitbucket's OAuth 2.0 consumer and the people who log in through it: the
//! consent page (`/site/oauth2/authorize`), the token endpoint for every grant the daemon
//! uses (client credentials; authorization code; refresh tokens, which rotate like
//! Bitbucket's: using one retires it) and `GET /2.0/user`. It owns people's logins and
//! tokens; which repositories a token reads is decided with the rest of the world in
//! `fake_bitbucket.rs`.

use std::collections::{HashMap, HashSet};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{FakeBitbucket, Inner, json_response};

/// A Bitbucket account a person can log in as.
#[derive(Debug, Clone)]
pub struct FakeAccount {
    pub uuid: String,
    pub account_id: String,
    pub display_name: String,
    pub nickname: String,
    /// Private repositories (`workspace/repo`) the account can read.
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

/// People's logins: the next consent, the codes it gave out, and the tokens issued.
#[derive(Default)]
pub(super) struct People {
    callback_url: String,
    next_login: Option<Result<FakeAccount, String>>,
    codes: HashMap<String, FakeAccount>,
    access: HashMap<String, FakeAccount>,
    refresh: HashMap<String, FakeAccount>,
    issued: u64,
    /// account uuid -> what it reads from now on, in place of [`FakeAccount::readable`].
    readable: HashMap<String, HashSet<String>>,
    /// The `scopes` the next person tokens are granted with, when a test changed them
    /// (`Some(None)`: the answer names no scopes, like a link made long ago).
    granted_scopes: Option<Option<String>>,
}

/// The scopes a person's token is granted unless a test says otherwise: what the
/// daemon's actions need.
pub const PERSON_SCOPES: &str = "account repository pullrequest:write pipeline:write";

impl People {
    /// The account an access token belongs to, and the private repositories it reads.
    pub(super) fn person(&self, token: &str) -> Option<(FakeAccount, HashSet<String>)> {
        let account = self.access.get(token)?;
        let readable = self
            .readable
            .get(&account.uuid)
            .cloned()
            .unwrap_or_else(|| account.readable.clone());
        Some((account.clone(), readable))
    }
}

impl FakeBitbucket {
    /// The consumer's callback URL (Bitbucket sends the browser there).
    pub fn set_callback_url(&self, url: &str) {
        self.inner.lock().people.callback_url = url.into();
    }

    /// The next consent: log in as `account`, or refuse with `error` (e.g. access_denied).
    pub fn next_login(&self, outcome: Result<FakeAccount, &str>) {
        self.inner.lock().people.next_login = Some(outcome.map_err(str::to_string));
    }

    /// Revokes every token of the account with this uuid (access and refresh).
    pub fn revoke(&self, uuid: &str) {
        let mut world = self.inner.lock();
        world
            .people
            .access
            .retain(|_, account| account.uuid != uuid);
        world
            .people
            .refresh
            .retain(|_, account| account.uuid != uuid);
    }

    /// Expires every person's access token (they must be refreshed).
    pub fn expire_access_tokens(&self) {
        self.inner.lock().people.access.clear();
    }

    /// What the account with this uuid can read from now on (its tokens stay valid).
    pub fn set_readable(&self, uuid: &str, repositories: &[&str]) {
        self.inner.lock().people.readable.insert(
            uuid.into(),
            repositories.iter().map(|name| name.to_string()).collect(),
        );
    }

    /// The scopes people's tokens are granted from now on (`None`: the answer names no
    /// scopes at all).
    pub fn grant_scopes(&self, scopes: Option<&str>) {
        self.inner.lock().people.granted_scopes = Some(scopes.map(str::to_string));
    }

    /// The consumer secret the token endpoint accepts from now on.
    pub fn set_consumer_secret(&self, secret: &str) {
        if let Some((_, current, _)) = self.inner.lock().oauth.as_mut() {
            *current = secret.into();
        }
    }
}

/// `GET /2.0/user` for a person's token.
pub(super) fn user_json(account: &FakeAccount) -> Value {
    json!({
        "type": "user",
        "uuid": account.uuid,
        "account_id": account.account_id,
        "display_name": account.display_name,
        "nickname": account.nickname,
        "links": {"html": {"href": format!("https://bitbucket.org/{}/", account.uuid)}}
    })
}

/// The consent page: sends the browser back to the callback with a code or an error.
pub(super) fn authorize(inner: &Inner, query: &[(String, String)]) -> Response {
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let mut world = inner.lock();
    let client_ok = world
        .oauth
        .as_ref()
        .is_some_and(|(key, _, _)| param("client_id") == Some(key.as_str()));
    if !client_ok || param("response_type") != Some("code") {
        return (
            StatusCode::BAD_REQUEST,
            "fake bitbucket: bad authorize request",
        )
            .into_response();
    }
    let people = &mut world.people;
    let mut location = url::Url::parse(&people.callback_url).expect("callback URL set");
    match people
        .next_login
        .take()
        .unwrap_or(Err("access_denied".into()))
    {
        Ok(account) => {
            people.issued += 1;
            let code = format!("bb-code-{}", people.issued);
            people.codes.insert(code.clone(), account);
            location.query_pairs_mut().append_pair("code", &code);
        }
        Err(error) => {
            location.query_pairs_mut().append_pair("error", &error);
        }
    }
    if let Some(value) = param("state") {
        location.query_pairs_mut().append_pair("state", value);
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

/// `POST /site/oauth2/access_token`: the consumer's Basic credentials, then the grant.
pub(super) fn token(inner: &Inner, authorization: Option<&str>, body: &[u8]) -> Response {
    let invalid_client = || {
        json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client"}),
            None,
        )
    };
    let mut world = inner.lock();
    let Some((key, secret, expires_in)) = world.oauth.clone() else {
        return invalid_client();
    };
    if authorization != Some(FakeBitbucket::basic(&key, &secret).as_str()) {
        return invalid_client();
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    if grant == "client_credentials" {
        if body != b"grant_type=client_credentials" {
            return invalid_client();
        }
        world.tokens_issued += 1;
        let token = format!("oauth-{}", world.tokens_issued);
        world.accepted.insert(format!("Bearer {token}"));
        return json_response(
            StatusCode::OK,
            json!({"access_token": token, "scopes": "repository pullrequest pipeline issue", "expires_in": expires_in, "refresh_token": "r", "token_type": "bearer"}),
            None,
        );
    }
    let people = &mut world.people;
    let account = match grant {
        "authorization_code" => form.get("code").and_then(|code| people.codes.remove(code)),
        // Rotation: a refresh token works once.
        "refresh_token" => form
            .get("refresh_token")
            .and_then(|token| people.refresh.remove(token)),
        _ => None,
    };
    let Some(account) = account else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "Invalid or expired grant"}),
            None,
        );
    };
    people.issued += 1;
    let access = format!("bb-access-{}", people.issued);
    let refresh = format!("bb-refresh-{}", people.issued);
    people.access.insert(access.clone(), account.clone());
    people.refresh.insert(refresh.clone(), account);
    let mut answer = json!({
        "access_token": access,
        "expires_in": expires_in,
        "refresh_token": refresh,
        "token_type": "bearer"
    });
    match people.granted_scopes.clone() {
        None => answer["scopes"] = json!(PERSON_SCOPES),
        Some(Some(scopes)) => answer["scopes"] = json!(scopes),
        Some(None) => {}
    }
    json_response(StatusCode::OK, answer, None)
}
