//! The App Home tab end to end against both fakes: what a linked person, an unlinked one
//! and an admin see (JSON snapshots of the published view), its buttons (a notification
//! toggle, Disconnect, an admin's Unsubscribe and the same click forged by someone who is
//! not an admin), the Bitbucket reads it costs (a person's own token, only repositories
//! it reads, cached for a minute), Block Kit's limits with many subscriptions, and the
//! tab before and right after the workspace's permission upgrade.
//! Waits are for requests and calls, on the daemon's manual clock; nothing sleeps.

mod support;

use jiff::SignedDuration;
use serde_json::{Value, json};
use support::blocks::section_text;
use support::fake_bitbucket::{Endpoint, FakeAccount, FakeBitbucket, uuid_of};
use support::fake_slack::FakeWorkspace;
use support::harness::{Harness, HarnessBuilder, TEAM};

use bitbucket_slack::bitbucket::Target;
use bitbucket_slack::notify::subscription::{Features, Filters, Subscription};
use bitbucket_slack::store::Store;

const KEY: &str = "bb-consumer-key";
const SECRET: &str = "bb-consumer-secret-never-logged";
const REPO: &str = "acme/api";
const HIDDEN: &str = "acme/vault";
const BOT: &str = "xoxb-home-bot";
const ADMIN: &str = "U0ADMIN";

fn grace() -> FakeAccount {
    FakeAccount::new(&uuid_of("grace"), "Grace Hopper", "grace")
}

/// acme/api with a pull request waiting for Grace's review (#1, by Ada) and one of
/// Grace's own (#2, approved by Ada, its build failed); acme/vault with one waiting for
/// her too, which she will not be able to read.
async fn bitbucket() -> FakeBitbucket {
    let bitbucket = FakeBitbucket::start().await;
    bitbucket.add_repository(REPO);
    bitbucket.push(REPO, "feature/retries", &["Retry with backoff"]);
    bitbucket.open_pull_request_with_reviewers(
        REPO,
        "feature/retries",
        "Add retries <fast> & safe",
        "ada",
        &["grace"],
    );
    let head = bitbucket.push(REPO, "feature/parser", &["Faster parser"]);
    bitbucket.open_pull_request_with_reviewers(
        REPO,
        "feature/parser",
        "Speed up the parser",
        "grace",
        &["ada", "alan"],
    );
    bitbucket.approve(REPO, 2, "ada");
    bitbucket.set_commit_status(REPO, &head, "ci", "FAILED");
    bitbucket.add_repository(HIDDEN);
    bitbucket.push(HIDDEN, "feature/keys", &["Rotate keys"]);
    bitbucket.open_pull_request_with_reviewers(
        HIDDEN,
        "feature/keys",
        "Rotate the vault keys",
        "ada",
        &["grace"],
    );
    bitbucket
}

async fn daemon_with(builder: HarnessBuilder) -> Harness {
    builder
        .bitbucket(bitbucket().await)
        .bitbucket_logins(KEY, SECRET)
        .set("bitbucket.poll_interval_secs", "3600")
        .set("upgrade.admins", ADMIN)
        .start()
        .await
}

async fn daemon() -> Harness {
    daemon_with(Harness::builder().installed_bot(BOT)).await
}

/// C1 follows acme/api and acme/vault; then acme/vault becomes private (Grace cannot
/// read it).
async fn subscribe_both(daemon: &Harness) {
    for repo in [REPO, HIDDEN] {
        let answer = section_text(
            &daemon
                .command(TEAM, "C1", ADMIN, &format!("subscribe {repo}"))
                .await,
        );
        assert!(answer.contains("Subscribed"), "{answer}");
    }
    daemon.bitbucket().set_private(HIDDEN, true);
}

/// `user` opens the app's Home tab; returns the view published for them (the
/// `count`-th publish in all).
async fn open_home(daemon: &Harness, user: &str, count: usize) -> Value {
    daemon
        .envelope(
            "events_api",
            false,
            json!({
                "team_id": TEAM,
                "api_app_id": "A0FAKE",
                "type": "event_callback",
                "event_id": format!("Ev-home-{user}-{count}"),
                "event_time": 1_800_000_000,
                "event": {
                    "type": "app_home_opened", "user": user, "channel": format!("D{user}"),
                    "tab": "home", "event_ts": "1800000000.000100"
                }
            }),
        )
        .await;
    published(daemon, user, count).await
}

/// The `count`-th view published (for `user`).
async fn published(daemon: &Harness, user: &str, count: usize) -> Value {
    let calls = daemon.slack.wait_for_calls("views.publish", count).await;
    let call = calls[count - 1].json();
    assert_eq!(call["user_id"], user, "{call}");
    serde_json::from_str(call["view"].as_str().expect("a view")).expect("view JSON")
}

/// `user` clicks the Home tab's button `action_id` (with `value`).
async fn click_home(daemon: &Harness, user: &str, action_id: &str, value: Option<&str>) {
    let mut action = json!({
        "action_id": action_id, "block_id": "b1",
        "text": {"type": "plain_text", "text": "button"},
        "type": "button", "action_ts": "1800000001.000200"
    });
    if let Some(value) = value {
        action["value"] = json!(value);
    }
    daemon
        .click(json!({
            "type": "block_actions",
            "user": {"id": user, "username": "someone", "team_id": TEAM},
            "api_app_id": "A0FAKE",
            "container": {"type": "view", "view_id": "V0FAKEHOME"},
            "trigger_id": "111.222.home",
            "team": {"id": TEAM, "domain": "acme"},
            "view": {
                "id": "V0FAKEHOME", "team_id": TEAM, "type": "home", "blocks": [],
                "private_metadata": "", "callback_id": "", "state": {"values": {}},
                "hash": "1800000000.home", "app_id": "A0FAKE", "bot_id": "B0FAKE"
            },
            "actions": [action]
        }))
        .await;
}

fn text_of(view: &Value) -> String {
    view.to_string()
}

fn action_ids(view: &Value) -> Vec<String> {
    view["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .flat_map(|block| {
            let mut elements = block["elements"].as_array().cloned().unwrap_or_default();
            elements.push(block["accessory"].clone());
            elements
        })
        .filter_map(|element| element["action_id"].as_str().map(str::to_string))
        .collect()
}

/// The view with its signed, expiring login URL replaced by a placeholder.
fn without_login_url(mut view: Value) -> Value {
    for block in view["blocks"].as_array_mut().expect("blocks") {
        if let Some(url) = block
            .get_mut("accessory")
            .and_then(|accessory| accessory.get_mut("url"))
        {
            assert!(
                url.as_str()
                    .is_some_and(|u| u.contains("/bitbucket/login?state=")),
                "{url}"
            );
            *url = json!("[signed login url]");
        }
    }
    view
}

#[tokio::test]
async fn a_linked_person_sees_their_reviews_their_pull_requests_and_their_settings() {
    let daemon = daemon().await;
    subscribe_both(&daemon).await;
    daemon.link("U1", grace()).await;
    let view = open_home(&daemon, "U1", 1).await;
    insta::assert_json_snapshot!("home_linked_person", view);
    let text = text_of(&view);
    assert!(
        text.contains("#1 Add retries &lt;fast&gt; &amp; safe"),
        "{text}"
    );
    assert!(text.contains("approvals 1 of 2"), "{text}");
    assert!(text.contains("build failed"), "{text}");
    // The private repository her token cannot read is left out without a word.
    assert!(!text.contains("vault"), "{text}");
    // Read with her own token, never the daemon's.
    let reads: Vec<_> = daemon
        .bitbucket()
        .requests()
        .into_iter()
        .filter(|r| {
            matches!(
                r.endpoint,
                Endpoint::PullRequests | Endpoint::CommitStatuses
            ) && r
                .authorization
                .as_deref()
                .is_some_and(|a| a.starts_with("Bearer bb-access-"))
        })
        .collect();
    assert_eq!(reads.len(), 3, "{reads:?}");

    // Opened again within the minute: nothing is read again.
    let before = daemon.bitbucket().count(Endpoint::PullRequests);
    open_home(&daemon, "U1", 2).await;
    assert_eq!(daemon.bitbucket().count(Endpoint::PullRequests), before);
    // A minute later it is read afresh.
    daemon.clock.advance(SignedDuration::from_secs(61));
    open_home(&daemon, "U1", 3).await;
    assert_eq!(daemon.bitbucket().count(Endpoint::PullRequests), before + 2);
    daemon.stop().await;
}

#[tokio::test]
async fn an_unlinked_person_is_told_what_the_app_does_and_gets_the_connect_button() {
    let daemon = daemon().await;
    let view = open_home(&daemon, "U2", 1).await;
    assert_eq!(action_ids(&view), ["bitbucket_login"]);
    insta::assert_json_snapshot!("home_unlinked_person", without_login_url(view));
    assert_eq!(daemon.bitbucket().count(Endpoint::PullRequests), 0);
    // The messages tab is not the home tab's business.
    daemon
        .envelope(
            "events_api",
            false,
            json!({
                "team_id": TEAM, "type": "event_callback", "event_id": "Ev-messages",
                "event": {"type": "app_home_opened", "user": "U2", "channel": "DU2", "tab": "messages"}
            }),
        )
        .await;
    open_home(&daemon, "U2", 2).await;
    daemon.stop().await;
}

#[tokio::test]
async fn an_admin_also_sees_the_permissions_and_every_subscription_and_can_unsubscribe() {
    let daemon = daemon().await;
    subscribe_both(&daemon).await;
    let view = open_home(&daemon, ADMIN, 1).await;
    insta::assert_json_snapshot!("home_admin", without_login_url(view.clone()));
    let ids = action_ids(&view);
    assert!(
        !ids.contains(&"upgrade_update_permissions".to_string()),
        "the permissions are current: nothing to update: {ids:?}"
    );
    assert_eq!(
        ids.iter().filter(|id| *id == "home_unsubscribe").count(),
        2,
        "{ids:?}"
    );
    // Someone else sees none of it, and a forged Unsubscribe changes nothing.
    let other = open_home(&daemon, "U1", 2).await;
    assert!(!action_ids(&other).contains(&"home_unsubscribe".to_string()));
    click_home(&daemon, "U1", "home_unsubscribe", Some("C1 acme/api")).await;
    let listed = section_text(&daemon.command(TEAM, "C1", "U1", "subscriptions").await);
    assert!(listed.contains("`acme/api`"), "{listed}");
    assert_eq!(daemon.slack.calls_to("views.publish").len(), 2);

    // The admin's click unsubscribes C1 from acme/api, and the tab shows it at once.
    click_home(&daemon, ADMIN, "home_unsubscribe", Some("C1 acme/api")).await;
    let after = published(&daemon, ADMIN, 3).await;
    let listed = section_text(&daemon.command(TEAM, "C1", "U1", "subscriptions").await);
    assert!(!listed.contains("`acme/api`"), "{listed}");
    assert!(listed.contains("`acme/vault`"), "{listed}");
    assert_eq!(
        action_ids(&after)
            .iter()
            .filter(|id| *id == "home_unsubscribe")
            .count(),
        1
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_toggle_is_stored_and_the_tab_published_again() {
    let daemon = daemon().await;
    daemon.link("U1", grace()).await;
    let view = open_home(&daemon, "U1", 1).await;
    assert!(text_of(&view).contains("`comments` *off*"));
    click_home(&daemon, "U1", "home_toggle_kind", Some("comments")).await;
    let view = published(&daemon, "U1", 2).await;
    assert!(text_of(&view).contains("`comments` *on*"), "{view}");
    let settings = section_text(&daemon.command(TEAM, "C1", "U1", "notify").await);
    assert!(settings.contains("`comments` *on*"), "{settings}");
    // A kind nobody knows changes nothing and publishes nothing.
    click_home(&daemon, "U1", "home_toggle_kind", Some("gossip")).await;
    click_home(&daemon, "U1", "home_toggle_kind", Some("comments")).await;
    let view = published(&daemon, "U1", 3).await;
    assert!(text_of(&view).contains("`comments` *off*"), "{view}");
    daemon.stop().await;
}

#[tokio::test]
async fn disconnect_from_the_tab_unlinks_and_shows_the_connect_button() {
    let daemon = daemon().await;
    daemon.link("U1", grace()).await;
    let view = open_home(&daemon, "U1", 1).await;
    assert!(action_ids(&view).contains(&"home_disconnect".to_string()));
    click_home(&daemon, "U1", "home_disconnect", None).await;
    let view = published(&daemon, "U1", 2).await;
    assert!(
        action_ids(&view).contains(&"bitbucket_login".to_string()),
        "{view}"
    );
    let whoami = section_text(&daemon.command(TEAM, "C1", "U1", "whoami").await);
    assert!(
        whoami.contains("no Bitbucket account connected"),
        "{whoami}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn many_subscriptions_are_cut_with_and_n_more_within_100_blocks() {
    let daemon = daemon().await;
    // A linked admin's own part takes about 25 blocks: 90 subscriptions cannot all fit.
    // They are written into the stopped daemon's store (90 subscribe commands would
    // cost 90 lookups and flushes for nothing this test is about).
    daemon.link(ADMIN, grace()).await;
    let builder = daemon.stop().await;
    {
        let store = Store::open(&builder.data()).expect("the stopped daemon's store opens");
        for channel in 0..90 {
            store
                .subscriptions
                .put(&Subscription {
                    team_id: TEAM.into(),
                    channel_id: format!("C{channel:03}"),
                    target: Target::Repository(REPO.into()),
                    features: Features::defaults(),
                    filters: Filters::default(),
                    main_branch: Some("main".into()),
                    created_by: ADMIN.into(),
                    created_at: jiff::Timestamp::UNIX_EPOCH,
                    paused: None,
                    private: Some(false),
                    coverage: Default::default(),
                })
                .await
                .expect("subscribe");
        }
    }
    let daemon = builder.start().await;
    let view = open_home(&daemon, ADMIN, 1).await;
    let blocks = view["blocks"].as_array().expect("blocks");
    assert!(blocks.len() <= 100, "{}", blocks.len());
    let shown = action_ids(&view)
        .iter()
        .filter(|id| *id == "home_unsubscribe")
        .count();
    let text = text_of(&view);
    assert!(
        text.contains(&format!("and {} more", 90 - shown)),
        "{shown}: {text}"
    );
    assert!(text.contains("/bitbucket subscriptions"), "{text}");
    daemon.stop().await;
}

#[tokio::test]
async fn before_the_upgrade_the_tab_waits_on_an_admin_and_after_it_shows_the_dashboard() {
    let outdated =
        "commands,chat:write,chat:write.public,channels:read,groups:read,users:read,team:read";
    let daemon = daemon_with(
        Harness::builder()
            .bot_token(BOT)
            .workspace(BOT, FakeWorkspace::new(TEAM, "Fake Team", outdated)),
    )
    .await;
    let for_admin = open_home(&daemon, ADMIN, 1).await;
    insta::assert_json_snapshot!("home_waiting_on_an_admin", for_admin);
    assert_eq!(action_ids(&for_admin), ["upgrade_update_permissions"]);
    let for_others = open_home(&daemon, "U1", 2).await;
    assert!(action_ids(&for_others).is_empty(), "{for_others}");
    let text = text_of(&for_others);
    assert!(text.contains("<@U0ADMIN>"), "{text}");
    assert!(text.contains("home tab"), "{text}");
    assert!(text.contains("im:history"), "{text}");
    // A click from a tab published before the upgrade changes nothing.
    click_home(&daemon, "U1", "home_toggle_kind", Some("comments")).await;

    // The admin updates the permissions: the next open shows the dashboard, no restart.
    let current = bitbucket_slack::upgrade::required_scopes().join(",");
    daemon
        .slack
        .add_workspace(BOT, FakeWorkspace::new(TEAM, "Fake Team", &current));
    let after = open_home(&daemon, "U1", 3).await;
    assert_eq!(action_ids(&after), ["bitbucket_login"], "{after}");
    daemon.stop().await;
}
