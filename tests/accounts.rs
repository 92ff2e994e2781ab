//! Linking Bitbucket accounts: the browser flow end to end through the daemon, and the
//! accounts service against the fake Bitbucket for refresh rotation, revocation and the
//! private-repository check. Manual clock; no sleeps.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use bitbucket_slack::app;
use bitbucket_slack::app::accounts::{Accounts, BITBUCKET_LOGIN, LoginError};
use bitbucket_slack::bitbucket::accounts::{AccountError, UserOAuthClient};
use bitbucket_slack::clock::{Clock, ManualClock};
use bitbucket_slack::config::{Config, Secret};
use bitbucket_slack::http::state::StateClaims;
use bitbucket_slack::slack::web::SlackWeb;
use bitbucket_slack::store::Store;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use support::blocks::section_text;
use support::daemon::browse;
use support::fake_bitbucket_accounts::{FakeAccount, FakeBitbucketAccounts};
use support::fake_slack::{FakeSlack, FakeSocket};
use tokio_util::sync::CancellationToken;

const KEY: &str = "bb-consumer-key";
const SECRET: &str = "bb-consumer-secret-never-logged";
const PUBLIC: &str = "http://bitbucket-slack.intranet.example";

fn ada() -> FakeAccount {
    let mut account = FakeAccount::new("{ada-uuid}", "Ada Lovelace", "ada");
    account.readable.insert("acme/engine".into());
    account
}

struct Daemon {
    slack: FakeSlack,
    bitbucket: FakeBitbucketAccounts,
    clock: ManualClock,
    http: String,
    socket: FakeSocket,
    shutdown: CancellationToken,
    running: app::Running,
    next_id: std::sync::atomic::AtomicU64,
    _dir: tempfile::TempDir,
}

async fn daemon() -> Daemon {
    let slack = FakeSlack::start().await;
    let bitbucket = FakeBitbucketAccounts::start(KEY, SECRET).await;
    bitbucket.set_callback_url(&format!("{PUBLIC}/bitbucket/oauth/callback"));
    // Every scope granted: an outdated install would refuse new logins (the upgrade gate).
    slack.add_workspace(
        "xoxb-accounts-bot",
        support::fake_slack::FakeWorkspace::new(
            "T0FAKE",
            "Fake Team",
            &bitbucket_slack::upgrade::required_scopes().join(","),
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let env: HashMap<String, String> = [
        ("SLACK__APP_TOKEN", "xapp-1-accounts".to_string()),
        ("SLACK__BOT_TOKEN", "xoxb-accounts-bot".into()),
        ("SLACK__API_URL", slack.api_url()),
        ("SLACK__SOCKET_CONNECTIONS", "1".into()),
        ("BITBUCKET__API_URL", bitbucket.api_url()),
        ("BITBUCKET__OAUTH_URL", bitbucket.oauth_url()),
        ("BITBUCKET__USER_OAUTH__KEY", KEY.into()),
        ("BITBUCKET__USER_OAUTH__SECRET", SECRET.into()),
        (
            "STORAGE__PATH",
            dir.path().join("data").display().to_string(),
        ),
        ("HTTP__LISTEN", "127.0.0.1:0".into()),
        ("HTTP__PUBLIC_URL", format!("{PUBLIC}/")),
    ]
    .into_iter()
    .map(|(key, value)| (format!("BITBUCKET_SLACK__{key}"), value))
    .collect();
    let config = Config::load(None, &env).expect("valid config");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("valid"));
    let shutdown = CancellationToken::new();
    let running = app::start(config, Arc::new(clock.clone()), shutdown.clone())
        .await
        .expect("starts");
    let http = format!("http://{}", running.http_address);
    let socket = slack.accept().await;
    Daemon {
        slack,
        bitbucket,
        clock,
        http,
        socket,
        shutdown,
        running,
        next_id: std::sync::atomic::AtomicU64::new(0),
        _dir: dir,
    }
}

impl Daemon {
    async fn command(&self, user: &str, text: &str) -> Value {
        let id = format!(
            "env-{user}-{text}-{}",
            self.next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.socket
            .send_json(&json!({
                "envelope_id": id, "type": "slash_commands", "accepts_response_payload": true,
                "payload": {
                    "team_id": "T0FAKE", "channel_id": "C1", "user_id": user,
                    "command": "/bitbucket", "text": text,
                    "response_url": self.slack.response_url("r"), "trigger_id": "t"
                }
            }))
            .await;
        let ack = self.socket.next_ack().await;
        assert_eq!(ack["envelope_id"], id.as_str());
        ack["payload"].clone()
    }

    fn local(&self, url: &str) -> String {
        url.replace(PUBLIC, &self.http)
    }

    /// Clicks the button of `/bitbucket login` and follows the redirects to the callback.
    async fn login_callback(&self, user: &str, outcome: Result<FakeAccount, &str>) -> String {
        let payload = self.command(user, "login").await;
        let button = payload["blocks"][1]["elements"][0]["url"]
            .as_str()
            .unwrap_or_else(|| panic!("a Connect button: {payload}"))
            .to_string();
        assert!(
            button.starts_with(&format!("{PUBLIC}/bitbucket/login?state=")),
            "{button}"
        );
        let to_bitbucket = browse(&self.local(&button)).await;
        assert_eq!(to_bitbucket.status, 302, "{}", to_bitbucket.body);
        let consent = to_bitbucket.location.expect("to Bitbucket");
        assert!(
            consent.starts_with(&self.bitbucket.oauth_url()),
            "{consent}"
        );
        assert!(consent.contains(&format!("client_id={KEY}")), "{consent}");
        self.bitbucket.next_login(outcome);
        let back = browse(&consent).await;
        assert_eq!(back.status, 302);
        self.local(&back.location.expect("back to the daemon"))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await.expect("clean stop");
    }
}

#[tokio::test]
async fn login_whoami_logout_end_to_end() {
    let daemon = daemon().await;
    assert!(
        section_text(&daemon.command("U1", "whoami").await)
            .contains("no Bitbucket account connected")
    );

    let callback = daemon.login_callback("U1", Ok(ada())).await;
    let page = browse(&callback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Ada Lovelace"), "{}", page.body);

    let dms = daemon.slack.wait_for_calls("chat.postMessage", 1).await;
    let dm = dms[0].json();
    assert_eq!(dm["channel"], "U1");
    assert!(
        dm.to_string()
            .contains("You're connected to Bitbucket as *Ada Lovelace*"),
        "{dm}"
    );
    assert_eq!(
        dms[0].authorization.as_deref(),
        Some("Bearer xoxb-accounts-bot")
    );

    let whoami = section_text(&daemon.command("U1", "whoami").await);
    assert!(whoami.contains("*Ada Lovelace* (`ada`)"), "{whoami}");
    assert!(section_text(&daemon.command("U1", "login").await).contains("already connected"));
    assert!(
        section_text(&daemon.command("U2", "whoami").await).contains("no Bitbucket account"),
        "per user"
    );

    assert!(section_text(&daemon.command("U1", "logout").await).contains("disconnected"));
    assert!(
        section_text(&daemon.command("U1", "whoami").await)
            .contains("no Bitbucket account connected")
    );
    assert!(
        section_text(&daemon.command("U1", "logout").await)
            .contains("no Bitbucket account connected")
    );
    daemon.stop().await;
}

#[tokio::test]
async fn bad_expired_replayed_state_and_denied_consent_change_nothing() {
    let daemon = daemon().await;
    let callback = daemon.login_callback("U1", Ok(ada())).await;
    assert_eq!(browse(&callback).await.status, 200);
    let replay = browse(&callback).await;
    assert_eq!(replay.status, 400);
    assert!(replay.body.contains("already used"), "{}", replay.body);
    assert!(section_text(&daemon.command("U1", "logout").await).contains("disconnected"));

    let tampered = browse(&format!("{}/bitbucket/login?state=abc.def", daemon.http)).await;
    assert_eq!(tampered.status, 400);
    assert!(tampered.body.contains("not valid"), "{}", tampered.body);

    let late = daemon.login_callback("U1", Ok(ada())).await;
    daemon.clock.advance(SignedDuration::from_mins(11));
    let page = browse(&late).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("expired"), "{}", page.body);

    let denied = daemon.login_callback("U1", Err("access_denied")).await;
    let page = browse(&denied).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("You cancelled"), "{}", page.body);

    assert!(
        section_text(&daemon.command("U1", "whoami").await)
            .contains("no Bitbucket account connected")
    );
    let exchanges = daemon
        .bitbucket
        .calls()
        .iter()
        .filter(|call| call.ends_with(":authorization_code"))
        .count();
    assert_eq!(
        exchanges, 1,
        "only the first, good callback exchanged a code"
    );
    daemon.stop().await;
}

/// The accounts service on its own store, for token lifetimes.
struct Service {
    accounts: Accounts,
    clock: ManualClock,
    bitbucket: FakeBitbucketAccounts,
    slack: FakeSlack,
    store: Store,
    client: UserOAuthClient,
    _dir: tempfile::TempDir,
}

async fn service() -> Service {
    let slack = FakeSlack::start().await;
    let bitbucket = FakeBitbucketAccounts::start(KEY, SECRET).await;
    bitbucket.set_callback_url("http://cb.example/bitbucket/oauth/callback");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("valid"));
    let web = SlackWeb::new(&url::Url::parse(&slack.api_url()).expect("url")).expect("web");
    let client = UserOAuthClient::new(
        url::Url::parse(&bitbucket.oauth_url()).expect("url"),
        url::Url::parse(&bitbucket.api_url()).expect("url"),
        KEY.into(),
        Secret::new(SECRET.into()),
    )
    .expect("client");
    let installer = app::installations::Installer {
        web: web.clone(),
        store: store.clone(),
        clock: Arc::new(clock.clone()),
        changed: Default::default(),
        upgrades: Default::default(),
    };
    installer
        .install_configured_token(&Secret::new("xoxb-service-bot".into()))
        .await
        .expect("install T0FAKE");
    let accounts = Accounts {
        store: store.clone(),
        web,
        client: Some(client.clone()),
        clock: Arc::new(clock.clone()),
        public_url: url::Url::parse("http://cb.example/").expect("url"),
    };
    Service {
        accounts,
        clock,
        bitbucket,
        slack,
        store,
        client,
        _dir: dir,
    }
}

impl Service {
    /// Links U1 as `account` the way the callback does.
    async fn link(&self, account: FakeAccount) {
        self.bitbucket.next_login(Ok(account));
        let consent = browse(self.client.authorize_url("s").as_str()).await;
        let location = url::Url::parse(&consent.location.expect("redirect")).expect("url");
        let code = location
            .query_pairs()
            .find(|(key, _)| key == "code")
            .map(|(_, value)| value.into_owned())
            .expect("a code");
        let claims = StateClaims {
            purpose: BITBUCKET_LOGIN.into(),
            nonce: "n".into(),
            expires_at: i64::MAX,
            team_id: Some("T0FAKE".into()),
            user_id: Some("U1".into()),
        };
        self.accounts
            .complete_login(&claims, &code)
            .await
            .expect("linked");
    }
}

#[tokio::test]
async fn refresh_rotates_and_the_old_refresh_token_is_dead() {
    let service = service().await;
    service.link(ada()).await;
    let first = service
        .store
        .user_links
        .get("T0FAKE", "U1")
        .expect("get")
        .expect("linked");
    let token = service
        .accounts
        .access_token("T0FAKE", "U1")
        .await
        .expect("token")
        .expect("linked");
    assert_eq!(token, first.access_token, "fresh tokens are not refreshed");

    service.clock.advance(SignedDuration::from_hours(2));
    service.bitbucket.expire_access_tokens();
    let refreshed = service
        .accounts
        .access_token("T0FAKE", "U1")
        .await
        .expect("token")
        .expect("linked");
    assert_ne!(refreshed, first.access_token);
    let stored = service
        .store
        .user_links
        .get("T0FAKE", "U1")
        .expect("get")
        .expect("linked");
    assert_eq!(stored.access_token, refreshed);
    assert_ne!(
        stored.refresh_token, first.refresh_token,
        "the new refresh token was stored"
    );

    let old = service
        .client
        .refresh(&first.refresh_token, service.clock.now())
        .await;
    assert!(
        matches!(old, Err(AccountError::Rejected { ref code }) if code == "invalid_grant"),
        "{old:?}"
    );

    // And the stored one keeps working for the next refresh.
    service.clock.advance(SignedDuration::from_hours(2));
    service.bitbucket.expire_access_tokens();
    assert!(
        service
            .accounts
            .access_token("T0FAKE", "U1")
            .await
            .expect("token")
            .is_some()
    );
    assert_eq!(
        service
            .accounts
            .user_can_read("T0FAKE", "U1", "acme/engine")
            .await
            .expect("check"),
        Some(true)
    );
}

#[tokio::test]
async fn the_private_repository_check_uses_the_users_own_access() {
    let service = service().await;
    assert_eq!(
        service
            .accounts
            .user_can_read("T0FAKE", "U1", "acme/engine")
            .await
            .expect("check"),
        None,
        "no link: cannot verify"
    );
    service.link(ada()).await;
    assert_eq!(
        service
            .accounts
            .user_can_read("T0FAKE", "U1", "acme/engine")
            .await
            .expect("check"),
        Some(true)
    );
    assert_eq!(
        service
            .accounts
            .user_can_read("T0FAKE", "U1", "acme/secret-plans")
            .await
            .expect("check"),
        Some(false)
    );
}

#[tokio::test]
async fn a_revoked_token_marks_the_link_stale_and_tells_the_user_once() {
    let service = service().await;
    service.link(ada()).await;
    let dms_after_link = service.slack.calls_to("chat.postMessage").len();
    service.bitbucket.revoke("{ada-uuid}");
    service.clock.advance(SignedDuration::from_hours(3));
    for _ in 0..2 {
        let result = service.accounts.access_token("T0FAKE", "U1").await;
        assert!(matches!(result, Err(LoginError::Stale)), "{result:?}");
    }
    let dms = service.slack.calls_to("chat.postMessage");
    assert_eq!(dms.len(), dms_after_link + 1, "told once");
    assert!(dms.last().expect("dm").body.contains("/bitbucket login"));
    let whoami = service.accounts.whoami("T0FAKE", "U1");
    assert!(whoami.text.contains("no longer accepts"), "{}", whoami.text);
    let login = service.accounts.login_reply("T0FAKE", "U1");
    assert_eq!(login.buttons.len(), 1, "a stale link may log in again");
}
