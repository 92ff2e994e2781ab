//! Linking Bitbucket accounts and who may see what: the browser flow end to end through
//! the daemon (confirmation page, browser-bound cookie, one Slack user per Bitbucket
//! account), the private-repository policy and allowed workspaces against a fake
//! Bitbucket, and the accounts service on its own for refresh rotation and revocation.
//! Manual clock; no sleeps.

mod support;

use std::sync::Arc;

use bitbucket_slack::app::access::AccessControl;
use bitbucket_slack::app::accounts::{Accounts, LoginError};
use bitbucket_slack::bitbucket::Target;
use bitbucket_slack::bitbucket::accounts::{AccountError, UserOAuthClient};
use bitbucket_slack::clock::{Clock, ManualClock};
use bitbucket_slack::config::{PrivateRepositories, Secret};
use bitbucket_slack::notify::access::Coverage;
use bitbucket_slack::oauth_state::{BITBUCKET_LOGIN, StateClaims};
use bitbucket_slack::slack::web::SlackWeb;
use bitbucket_slack::store::Store;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use support::blocks::section_text;
use support::daemon::{Page, browse, browse_with_cookie};
use support::fake_bitbucket::{FakeAccount, FakeBitbucket};
use support::fake_slack::FakeSlack;
use support::harness::{
    Harness, HarnessBuilder, PUBLIC_URL as PUBLIC, TEAM, install_configured_bot,
};

const KEY: &str = "bb-consumer-key";
const SECRET: &str = "bb-consumer-secret-never-logged";

fn ada() -> FakeAccount {
    let mut account = FakeAccount::new("{ada-uuid}", "Ada Lovelace", "ada");
    account.readable.insert("acme/engine".into());
    account
}

fn grace() -> FakeAccount {
    FakeAccount::new("{grace-uuid}", "Grace Hopper", "grace")
}

struct Daemon(Harness);

impl std::ops::Deref for Daemon {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

/// Where Bitbucket's consent page sends the browser back, and the cookie the browser
/// got on the confirmation page.
struct Callback {
    url: String,
    cookie: Option<String>,
}

impl Callback {
    /// The browser that confirmed opens the callback.
    async fn open(&self) -> Page {
        browse_with_cookie(&self.url, self.cookie.as_deref()).await
    }
}

async fn daemon() -> Daemon {
    daemon_with(Harness::builder()).await
}

/// A fake Bitbucket holding acme/site (public), acme/engine and acme/secret-plans
/// (private).
async fn bitbucket() -> FakeBitbucket {
    let bitbucket = FakeBitbucket::start().await;
    bitbucket.add_repository("acme/site");
    bitbucket.add_private_repository("acme/engine");
    bitbucket.add_private_repository("acme/secret-plans");
    bitbucket
}

/// `builder` with a Bitbucket credential and account linking, both against one fake
/// [`bitbucket`].
async fn daemon_with(builder: HarnessBuilder) -> Daemon {
    // Every scope granted: an outdated install would refuse new logins (the upgrade gate).
    let harness = builder
        .installed_bot("xoxb-accounts-bot")
        .bitbucket(bitbucket().await)
        .bitbucket_logins(KEY, SECRET)
        // Quiet repositories: the poller's own requests stay out of the way.
        .set("bitbucket.poll_interval_secs", "3600")
        .start()
        .await;
    Daemon(harness)
}

impl Daemon {
    async fn command(&self, user: &str, text: &str) -> Value {
        self.command_in(user, "C1", text).await
    }

    async fn command_in(&self, user: &str, channel: &str, text: &str) -> Value {
        self.0.command(TEAM, channel, user, text).await
    }

    /// The URL of `/bitbucket login`'s Connect button.
    async fn login_button(&self, user: &str) -> String {
        let payload = self.command(user, "login").await;
        let button = payload["blocks"][1]["elements"][0]["url"]
            .as_str()
            .unwrap_or_else(|| panic!("a Connect button: {payload}"))
            .to_string();
        assert!(
            button.starts_with(&format!("{PUBLIC}/bitbucket/login?state=")),
            "{button}"
        );
        button
    }

    /// Opens the Connect button's page in a browser, clicks Continue and lets Bitbucket
    /// answer with `outcome`: the callback the browser is sent back to.
    async fn login_callback(&self, user: &str, outcome: Result<FakeAccount, &str>) -> Callback {
        let button = self.login_button(user).await;
        let confirm = browse(&self.local(&button)).await;
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        assert!(
            confirm
                .body
                .contains("You are connecting your Bitbucket account to"),
            "{}",
            confirm.body
        );
        let set_cookie = confirm
            .set_cookie
            .clone()
            .expect("a cookie binds the browser");
        assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
        assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
        assert!(set_cookie.contains("Max-Age=600"), "{set_cookie}");
        let consent = continue_link(&confirm.body);
        assert!(
            consent.starts_with(&self.bitbucket().oauth_url()),
            "{consent}"
        );
        assert!(consent.contains(&format!("client_id={KEY}")), "{consent}");
        self.bitbucket().next_login(outcome);
        let back = browse(&consent).await;
        assert_eq!(back.status, 302);
        Callback {
            url: self.local(&back.location.expect("back to the daemon")),
            cookie: confirm.cookie(),
        }
    }

    /// Links `user` to `account` through the whole browser flow.
    async fn link(&self, user: &str, account: FakeAccount) {
        let page = self.login_callback(user, Ok(account)).await.open().await;
        assert_eq!(page.status, 200, "{}", page.body);
    }

    fn store(&self) -> Store {
        self.running.store().clone()
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

/// The href of the confirmation page's Continue link, unescaped.
fn continue_link(body: &str) -> String {
    let start = body.find("<a href=\"").expect("a Continue link") + "<a href=\"".len();
    let end = start + body[start..].find('"').expect("end of href");
    body[start..end].replace("&amp;", "&")
}

#[tokio::test]
async fn login_whoami_logout_end_to_end() {
    let daemon = daemon().await;
    daemon.slack.set_user_name("U1", "ana");
    assert!(
        section_text(&daemon.command("U1", "whoami").await)
            .contains("no Bitbucket account connected")
    );

    let button = daemon.login_button("U1").await;
    let confirm = browse(&daemon.local(&button)).await;
    assert!(
        confirm
            .body
            .contains("connecting your Bitbucket account to <strong>@ana</strong> in <strong>Fake Team</strong>"),
        "{}",
        confirm.body
    );

    let callback = daemon.login_callback("U1", Ok(ada())).await;
    let page = callback.open().await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Ada Lovelace"), "{}", page.body);
    assert!(
        page.set_cookie
            .as_deref()
            .is_some_and(|c| c.contains("Max-Age=0")),
        "the binding is cleared: {:?}",
        page.set_cookie
    );

    let dms = daemon.slack.wait_for_calls("chat.postMessage", 1).await;
    let dm = dms[0].json();
    assert_eq!(dm["channel"], "U1");
    let text = dm.to_string();
    assert!(
        text.contains("You're connected to Bitbucket as *Ada Lovelace* (`ada`)"),
        "{dm}"
    );
    assert!(text.contains("Not you? Run `/bitbucket logout`"), "{dm}");
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
    assert_eq!(callback.open().await.status, 200);
    let replay = callback.open().await;
    assert_eq!(replay.status, 400);
    assert!(replay.body.contains("already used"), "{}", replay.body);
    assert!(section_text(&daemon.command("U1", "logout").await).contains("disconnected"));

    let tampered = browse(&format!("{}/bitbucket/login?state=abc.def", daemon.http)).await;
    assert_eq!(tampered.status, 400);
    assert!(tampered.body.contains("not valid"), "{}", tampered.body);

    let late = daemon.login_callback("U1", Ok(ada())).await;
    daemon.clock.advance(SignedDuration::from_mins(11));
    let page = late.open().await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("expired"), "{}", page.body);

    let denied = daemon.login_callback("U1", Err("access_denied")).await;
    let page = denied.open().await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("You cancelled"), "{}", page.body);

    assert!(
        section_text(&daemon.command("U1", "whoami").await)
            .contains("no Bitbucket account connected")
    );
    let exchanges = daemon
        .bitbucket()
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

#[tokio::test]
async fn a_callback_in_a_browser_that_did_not_confirm_is_refused_and_stores_nothing() {
    let daemon = daemon().await;
    // User A starts a login and sends the link to B; B consents on Bitbucket, and the
    // callback arrives in a browser without A's confirmation cookie.
    let callback = daemon.login_callback("U1", Ok(grace())).await;
    for cookie in [None, Some("bitbucket_slack_login=forged"), Some("other=1")] {
        let page = browse_with_cookie(&callback.url, cookie).await;
        assert_eq!(page.status, 403, "{cookie:?}: {}", page.body);
        assert!(
            page.body.contains("did not start this connection"),
            "{}",
            page.body
        );
    }
    // A cookie from another flow of the same person does not fit either.
    let other = daemon.login_callback("U1", Ok(grace())).await;
    let crossed = browse_with_cookie(&callback.url, other.cookie.as_deref()).await;
    assert_eq!(crossed.status, 403, "{}", crossed.body);
    assert!(
        section_text(&daemon.command("U1", "whoami").await)
            .contains("no Bitbucket account connected"),
        "nothing stored"
    );
    assert!(
        !daemon
            .bitbucket()
            .calls()
            .iter()
            .any(|call| call.ends_with(":authorization_code")),
        "no code was exchanged"
    );
    // The person's own browser can still finish: the refusals did not use the state up.
    assert_eq!(callback.open().await.status, 200);
    daemon.stop().await;
}

#[tokio::test]
async fn a_bitbucket_account_linked_to_another_slack_user_is_refused() {
    let daemon = daemon().await;
    daemon.link("U1", ada()).await;
    let page = daemon.login_callback("U2", Ok(ada())).await.open().await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(
        page.body
            .contains("already connected to another Slack user in this workspace"),
        "{}",
        page.body
    );
    assert!(page.body.contains("/bitbucket logout"), "{}", page.body);
    assert!(
        section_text(&daemon.command("U2", "whoami").await).contains("no Bitbucket account"),
        "nothing stored for U2"
    );
    let store = daemon.store();
    assert_eq!(
        store
            .user_links
            .slack_user_for("T0FAKE", "{ada-uuid}")
            .expect("read")
            .as_deref(),
        Some("U1"),
        "the mention index still points at U1"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_refused_oauth_consumer_is_named_as_the_operators_problem() {
    let daemon = daemon().await;
    daemon
        .bitbucket()
        .set_consumer_secret("rotated-on-bitbucket");
    let page = daemon.login_callback("U1", Ok(ada())).await.open().await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.body.contains("configuration problem"), "{}", page.body);
    assert!(
        page.body.contains("bitbucket.user_oauth.secret"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("expired"), "{}", page.body);
    assert!(!page.body.contains(SECRET), "{}", page.body);
    daemon.stop().await;
}

// -- who may see what -----------------------------------------------------------------

#[tokio::test]
async fn an_unlinked_person_cannot_bring_a_private_repository_into_a_channel() {
    let daemon = daemon().await;
    let answer = daemon.command("U1", "subscribe acme/secret-plans").await;
    let text = section_text(&answer);
    assert!(text.contains("`acme/secret-plans` is private"), "{text}");
    assert!(
        text.contains("connect your own Bitbucket account first"),
        "{text}"
    );
    assert!(text.contains("Nothing was changed"), "{text}");
    assert!(
        answer.to_string().contains("/bitbucket/login?state="),
        "the answer carries the login button: {answer}"
    );
    assert!(
        section_text(&daemon.command("U1", "subscriptions").await).contains("no subscriptions")
    );
    // A public repository needs no link.
    let public = section_text(&daemon.command("U1", "subscribe acme/site").await);
    assert!(public.contains("Subscribed"), "{public}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_linked_person_who_cannot_read_it_is_refused_and_a_reader_is_accepted() {
    let daemon = daemon().await;
    daemon.link("U1", ada()).await;
    let refused = section_text(&daemon.command("U1", "subscribe acme/secret-plans").await);
    assert!(
        refused.contains("your Bitbucket account cannot read it"),
        "{refused}"
    );
    let accepted = section_text(&daemon.command("U1", "subscribe acme/engine").await);
    assert!(
        accepted.contains("Subscribed this channel to `acme/engine`"),
        "{accepted}"
    );
    let store = daemon.store();
    let stored = store
        .subscriptions
        .get("T0FAKE", "C1", &Target::Repository("acme/engine".into()))
        .expect("read")
        .expect("stored");
    assert_eq!(stored.private, Some(true));
    assert!(stored.paused.is_none());
    assert!(
        store
            .subscriptions
            .get(
                "T0FAKE",
                "C1",
                &Target::Repository("acme/secret-plans".into())
            )
            .expect("read")
            .is_none()
    );
    daemon.stop().await;
}

#[tokio::test]
async fn losing_access_pauses_and_tells_once_and_regaining_it_resumes() {
    let daemon = daemon().await;
    daemon.link("U1", ada()).await;
    let accepted = section_text(&daemon.command("U1", "subscribe acme/engine").await);
    assert!(accepted.contains("Subscribed"), "{accepted}");
    let dms_before = daemon.slack.calls_to("chat.postMessage").len();

    daemon.bitbucket().set_readable("{ada-uuid}", &[]);
    // The hourly check asks Bitbucket again (answers are reused for half an hour).
    daemon.clock.advance(SignedDuration::from_hours(1));
    // Two passes at once (the hourly one and a link change, say) tell the change once.
    tokio::join!(
        daemon.running.recheck_access(),
        daemon.running.recheck_access()
    );
    let listing = section_text(&daemon.command("U1", "subscriptions").await);
    assert!(listing.contains("*paused*"), "{listing}");
    assert!(listing.contains("cannot read it"), "{listing}");
    let dms = daemon.slack.calls_to("chat.postMessage");
    assert_eq!(dms.len(), dms_before + 1, "told once");
    let dm = dms.last().expect("a DM");
    assert!(dm.body.contains("acme/engine"), "{}", dm.body);
    assert!(dm.body.contains("paused"), "{}", dm.body);
    assert!(dm.json()["channel"] == "U1", "{}", dm.body);

    daemon.running.recheck_access().await;
    assert_eq!(
        daemon.slack.calls_to("chat.postMessage").len(),
        dms_before + 1,
        "not told twice"
    );

    daemon
        .bitbucket()
        .set_readable("{ada-uuid}", &["acme/engine"]);
    daemon.clock.advance(SignedDuration::from_hours(1));
    daemon.running.recheck_access().await;
    let listing = section_text(&daemon.command("U1", "subscriptions").await);
    assert!(!listing.contains("paused"), "resumed by itself: {listing}");
    let resumed = daemon.slack.calls_to("chat.postMessage");
    assert!(
        resumed.last().expect("a DM").body.contains("resumed"),
        "{}",
        resumed.last().expect("a DM").body
    );

    // Logging out (the old way around the check) pauses it too.
    assert!(section_text(&daemon.command("U1", "logout").await).contains("disconnected"));
    daemon.running.recheck_access().await;
    let listing = section_text(&daemon.command("U1", "subscriptions").await);
    assert!(listing.contains("*paused*"), "{listing}");
    assert!(
        listing.contains("has no Bitbucket account linked"),
        "{listing}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_workspace_subscription_leaves_out_private_repositories_the_subscriber_cannot_read() {
    let daemon = daemon().await;
    daemon.link("U1", ada()).await;
    let answer = section_text(&daemon.command("U1", "subscribe acme").await);
    assert!(
        answer.contains("Subscribed this channel to `acme`"),
        "{answer}"
    );
    assert!(answer.contains("1 private repository left out"), "{answer}");
    let listing = section_text(&daemon.command("U1", "subscriptions").await);
    assert!(
        listing.contains("1 private repository left out"),
        "{listing}"
    );
    assert!(listing.contains("cannot read it"), "{listing}");
    assert!(
        !listing.contains("secret-plans"),
        "names stay private: {listing}"
    );
    let store = daemon.store();
    let stored = store
        .subscriptions
        .get("T0FAKE", "C1", &Target::Workspace("acme".into()))
        .expect("read")
        .expect("stored");
    let Coverage::Only { repositories, .. } = &stored.coverage else {
        panic!(
            "a workspace under the linked policy covers a list: {:?}",
            stored.coverage
        );
    };
    let covered: Vec<&str> = repositories.iter().map(String::as_str).collect();
    assert_eq!(covered, ["acme/engine", "acme/site"]);

    // Someone without a link gets the public ones only, and the login button.
    let unlinked = daemon.command_in("U2", "C2", "subscribe acme").await;
    let text = section_text(&unlinked);
    assert!(text.contains("2 private repositories left out"), "{text}");
    assert!(
        unlinked.to_string().contains("/bitbucket/login?state="),
        "{unlinked}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn deny_refuses_every_private_repository() {
    let daemon = daemon_with(Harness::builder().private_repositories("deny")).await;
    daemon.link("U1", ada()).await;
    let refused = section_text(&daemon.command("U1", "subscribe acme/engine").await);
    assert!(
        refused.contains("private repositories cannot be subscribed here"),
        "{refused}"
    );
    let workspace = section_text(&daemon.command("U1", "subscribe acme").await);
    assert!(
        workspace.contains("2 private repositories left out"),
        "{workspace}"
    );
    let status = section_text(&daemon.command("U1", "status").await);
    assert!(
        status.contains("private repositories cannot be subscribed"),
        "{status}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn credential_lets_the_daemons_credential_decide_and_status_says_so() {
    let daemon = daemon_with(Harness::builder().private_repositories("credential")).await;
    let accepted = section_text(&daemon.command("U1", "subscribe acme/secret-plans").await);
    assert!(accepted.contains("Subscribed"), "{accepted}");
    let status = section_text(&daemon.command("U1", "status").await);
    assert!(
        status.contains("the daemon's Bitbucket credential decides"),
        "{status}"
    );
    assert!(
        status.contains("private_repositories = \"credential\""),
        "{status}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_workspace_outside_the_allowed_ones_is_refused_before_any_request() {
    let daemon =
        daemon_with(Harness::builder().set("bitbucket.workspaces", "acme, acme-labs")).await;
    let before = daemon.bitbucket().calls().len();
    for target in ["globex/api", "globex"] {
        let refused = section_text(&daemon.command("U1", &format!("subscribe {target}")).await);
        assert!(
            refused.contains("not in a Bitbucket workspace this daemon may use"),
            "{refused}"
        );
        assert!(refused.contains("`acme`, `acme-labs`"), "{refused}");
    }
    assert_eq!(
        daemon.bitbucket().calls().len(),
        before,
        "no request was made"
    );
    let allowed = section_text(&daemon.command("U1", "subscribe acme/site").await);
    assert!(allowed.contains("Subscribed"), "{allowed}");
    daemon.stop().await;
}

#[tokio::test]
async fn bad_targets_are_refused_with_the_expected_form_and_no_request() {
    let daemon = daemon().await;
    let before = daemon.bitbucket().calls().len();
    let long = format!("acme/{}", "a".repeat(63));
    let bad: Vec<String> = [
        "..",
        ".",
        "...",
        "acme/..",
        "acme/.",
        "../api",
        "../../user",
        "acme/../globex",
        "acme//api",
        "acme/",
        "/api",
        "/",
        "acme/api/pullrequests",
        "acme/api/",
        "%2e%2e",
        "acme/%2e%2e",
        "acme/%2E",
        "acme%2fapi",
        "acme/api?fields=*",
        "acme/api#x",
        "acme\\api",
        "ac.me/api",
        "acme:api",
        "acme/@api",
        "~acme",
        "acme/ap\u{e9}",
        "acme/\u{ff0e}\u{ff0e}",
        "acme\u{7}/api",
        "acme/api\u{7f}",
        "\u{2024}\u{2024}",
        "acme/<api>",
        "acme/api|x",
    ]
    .iter()
    .map(|target| target.to_string())
    .chain([long])
    .collect();
    assert!(bad.len() >= 30);
    for target in &bad {
        for command in ["subscribe", "unsubscribe"] {
            let answer = section_text(&daemon.command("U1", &format!("{command} {target}")).await);
            assert!(
                answer.contains("Expected `workspace/repository`"),
                "{command} {target:?}: {answer}"
            );
            assert!(!answer.contains("Subscribed"), "{target:?}: {answer}");
        }
    }
    assert_eq!(
        daemon.bitbucket().calls()[before..],
        [] as [String; 0],
        "no bad target reached Bitbucket"
    );
    daemon.stop().await;
}

/// The accounts service on its own store, for token lifetimes.
struct Service {
    accounts: Accounts,
    clock: ManualClock,
    bitbucket: FakeBitbucket,
    slack: FakeSlack,
    store: Store,
    client: UserOAuthClient,
    _dir: tempfile::TempDir,
}

async fn service() -> Service {
    let slack = FakeSlack::start().await;
    let bitbucket = bitbucket().await;
    bitbucket.accept_oauth_consumer(KEY, SECRET, 7200);
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
    install_configured_bot(&web, &store, &clock, "xoxb-service-bot").await;
    let accounts = Accounts {
        store: store.clone(),
        web,
        client: Some(client.clone()),
        clock: Arc::new(clock.clone()),
        public_url: url::Url::parse("http://cb.example/").expect("url"),
        link_changes: Default::default(),
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
    /// Whether the linked-account policy lets U1 subscribe a channel to the private
    /// repository `name`.
    async fn admits(&self, name: &str) -> bool {
        let access = AccessControl::new(
            self.store.clone(),
            self.accounts.clone(),
            None,
            PrivateRepositories::Linked,
            Vec::new(),
            Arc::new(self.clock.clone()),
        );
        access
            .admit("T0FAKE", "U1", &Target::Repository(name.into()), true)
            .await
            .is_ok()
    }

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
    assert!(
        service.admits("acme/engine").await,
        "the stored token still works"
    );
}

#[tokio::test]
async fn the_private_repository_check_uses_the_persons_own_access() {
    let service = service().await;
    assert!(
        !service.admits("acme/engine").await,
        "no link: refused, never allowed"
    );
    service.link(ada()).await;
    assert!(service.admits("acme/engine").await);
    assert!(!service.admits("acme/secret-plans").await);
    let requests = service.bitbucket.calls();
    assert!(
        requests.contains(&"/2.0/repositories/acme/secret-plans".to_string()),
        "asked with the person's token: {requests:?}"
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

#[tokio::test]
async fn a_store_that_cannot_write_makes_the_daemon_unready_and_stores_nothing() {
    let daemon = daemon().await;
    let ready = browse(&format!("{}/readyz", daemon.http)).await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    daemon.running.store().set_write_faults(true);
    let unready = browse(&format!("{}/readyz", daemon.http)).await;
    assert_eq!(unready.status, 503, "{}", unready.body);
    assert!(
        unready.body.contains("the store cannot write"),
        "{}",
        unready.body
    );
    let refused = section_text(&daemon.command("U1", "subscribe acme/site").await);
    assert!(refused.contains("could not be saved"), "{refused}");
    assert!(!refused.contains("Subscribed"), "{refused}");
    let metrics = browse(&format!("{}/metrics", daemon.http)).await;
    assert!(
        metrics
            .body
            .contains("bitbucket_slack_store_write_failures_total 1"),
        "{}",
        metrics.body
    );

    daemon.running.store().set_write_faults(false);
    let ready = browse(&format!("{}/readyz", daemon.http)).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        section_text(&daemon.command("U1", "subscriptions").await).contains("no subscriptions"),
        "nothing was stored while writes failed"
    );
    let accepted = section_text(&daemon.command("U1", "subscribe acme/site").await);
    assert!(accepted.contains("Subscribed"), "{accepted}");
    daemon.stop().await;
}
