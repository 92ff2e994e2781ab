//! End to end: personal notifications by DM. The first test writes activities, links
//! and a subscription into the store of a stopped daemon (as a poll would append them)
//! and starts it again: the reviewer added is told once and nobody else, settings and
//! mutes given through `/bitbucket notify` are honoured, own actions are not sent back,
//! and a restart sends nothing twice. The second drives the fake Bitbucket on an install
//! that lacks `im:write`: no DM and no `notify` until the permissions are updated, then
//! DMs at once, with no restart. Waits are for calls; nothing sleeps.

mod support;

use std::path::Path;
use std::time::Duration;

use bitbucket_slack::bitbucket::{Activity, ActivityKind, Actor, PullRequestRef, Target};
use bitbucket_slack::config::Secret;
use bitbucket_slack::notify::subscription::{Features, Filters, Subscription};
use bitbucket_slack::store::{Store, UserLink};
use bitbucket_slack::upgrade::required_scopes;
use jiff::Timestamp;
use serde_json::Value;
use support::blocks::{message_text, section_text};
use support::fake_bitbucket::{Endpoint, FakeBitbucket, uuid_of};
use support::fake_slack::{FakeSlack, FakeWorkspace};
use support::harness::{Harness, HarnessBuilder, TEAM};

const REPO: &str = "acme/api";

/// Opens the store of a stopped daemon (whose last tasks may still be letting go).
async fn open_store(data: &Path) -> Store {
    for _ in 0..1000 {
        match Store::open(data) {
            Ok(store) => return store,
            Err(_) => tokio::task::yield_now().await,
        }
    }
    Store::open(data).expect("the stopped daemon's store opens")
}

fn link(user: &str, uuid: &str, nickname: &str) -> UserLink {
    UserLink {
        team_id: TEAM.into(),
        slack_user_id: user.into(),
        bitbucket_uuid: uuid.into(),
        account_id: None,
        display_name: nickname.into(),
        nickname: Some(nickname.into()),
        access_token: Secret::new(format!("bb-access-{user}")),
        refresh_token: Secret::new(format!("bb-refresh-{user}")),
        access_expires_at: Timestamp::from_second(4_000_000_000).expect("valid"),
        linked_at: Timestamp::UNIX_EPOCH,
        stale: false,
        stale_notified: false,
        scopes: None,
        reconnect_asked: false,
    }
}

fn subscription(channel: &str) -> Subscription {
    Subscription {
        team_id: TEAM.into(),
        channel_id: channel.into(),
        target: Target::Repository(REPO.into()),
        features: Features::defaults(),
        filters: Filters::default(),
        main_branch: Some("main".into()),
        created_by: "UADA".into(),
        created_at: Timestamp::UNIX_EPOCH,
        paused: None,
        private: Some(false),
        coverage: Default::default(),
    }
}

fn person(name: &str) -> Actor {
    Actor {
        display_name: name.into(),
        uuid: Some(format!("{{{name}}}")),
    }
}

fn pull_request(id: u64, author: &str, reviewers: &[&str]) -> PullRequestRef {
    PullRequestRef {
        id,
        title: format!("Change {id}"),
        link: Some(format!("https://bitbucket.org/{REPO}/pull-requests/{id}")),
        author: Some(person(author)),
        source_branch: Some(format!("feature/{id}")),
        destination_branch: Some("main".into()),
        reviewers: reviewers.iter().map(|r| format!("{{{r}}}")).collect(),
    }
}

fn activity(id: &str, actor: &str, kind: ActivityKind) -> Activity {
    Activity {
        id: format!("{REPO}:{id}"),
        repository: REPO.into(),
        occurred_at: Timestamp::from_second(1_800_000_000).expect("valid"),
        actor: Some(person(actor)),
        link: None,
        kind,
    }
}

fn review_requested(pr: u64, by: &str, reviewer: &str) -> Activity {
    activity(
        &format!("pr:{pr}:review_requested:{reviewer}"),
        by,
        ActivityKind::PullRequestReviewRequested {
            pull_request: pull_request(pr, "ada", &[]),
            reviewer: person(reviewer),
        },
    )
}

fn approved(pr: u64, author: &str, by: &str) -> Activity {
    activity(
        &format!("pr:{pr}:approved:{by}"),
        by,
        ActivityKind::PullRequestApproved {
            pull_request: pull_request(pr, author, &[]),
        },
    )
}

/// Appends `activities` to the stopped daemon's outbox, as a poll would.
async fn append(builder: &HarnessBuilder, round: u32, activities: &[Activity]) {
    let store = open_store(&builder.data()).await;
    store
        .activities
        .commit_poll(REPO, &round, activities)
        .await
        .expect("append");
}

/// The chat.postMessage calls to Slack users (DMs), once there are at least `count`.
async fn dms(slack: &FakeSlack, count: usize) -> Vec<Value> {
    let mut total = count;
    loop {
        let found: Vec<Value> = slack
            .wait_for_calls_within("chat.postMessage", total, Duration::from_secs(60))
            .await
            .iter()
            .map(|call| call.json())
            .filter(|post| post["channel"].as_str().is_some_and(|c| c.starts_with('U')))
            .collect();
        if found.len() >= count {
            return found;
        }
        total += 1;
    }
}

/// The DMs to `user`, once there are at least `count`.
async fn dms_to(slack: &FakeSlack, user: &str, count: usize) -> Vec<Value> {
    let mut total = count;
    loop {
        let found: Vec<Value> = dms(slack, total)
            .await
            .into_iter()
            .filter(|dm| dm["channel"] == user)
            .collect();
        if found.len() >= count {
            return found;
        }
        total += 1;
    }
}

fn recipients(dms: &[Value]) -> Vec<String> {
    dms.iter()
        .filter_map(|dm| dm["channel"].as_str().map(str::to_string))
        .collect()
}

async fn reply(harness: &Harness, user: &str, text: &str) -> String {
    let payload = harness.command(TEAM, "C1", user, text).await;
    assert!(!payload.is_null(), "{text}: answered in the ack");
    message_text(&payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_added_is_told_once_and_settings_mutes_own_actions_and_restarts_are_honoured() {
    let harness = Harness::builder()
        .installed_bot("xoxb-dm-bot")
        .bitbucket_logins("dm-consumer", "dm-consumer-secret")
        .system_clock()
        .start()
        .await;
    let slack = harness.slack.clone();
    let builder = harness.stop().await;
    {
        let store = open_store(&builder.data()).await;
        store
            .repositories
            .watch(&REPO.parse().expect("name"))
            .await
            .expect("watch");
        store
            .subscriptions
            .put(&subscription("C1"))
            .await
            .expect("subscribe");
        for (user, name) in [
            ("UADA", "ada"),
            ("UBOB", "bob"),
            ("UCY", "cy"),
            ("UDEE", "dee"),
        ] {
            store
                .user_links
                .put(&link(user, &format!("{{{name}}}"), name))
                .await
                .expect("link");
        }
    }
    // Cy adds Bob as a reviewer of Ada's pull request; Dee adds herself to another.
    append(
        &builder,
        1,
        &[
            review_requested(7, "cy", "bob"),
            review_requested(8, "dee", "dee"),
        ],
    )
    .await;
    let harness = builder.start().await;
    let first = dms(&slack, 1).await;
    assert_eq!(recipients(&first), vec!["UBOB"]);
    let text = message_text(&first[0]);
    assert!(
        text.contains("You were asked to review a pull request"),
        "{text}"
    );
    assert!(text.contains("#7 Change 7"), "{text}");
    assert!(
        first[0].get("thread_ts").is_none(),
        "a DM is never threaded"
    );

    // Settings: Ada mutes for two hours, Bob turns reviews off, Cy turns comments on.
    let settings = reply(&harness, "UBOB", "notify").await;
    assert!(settings.contains("`reviews` *on*"), "{settings}");
    assert!(settings.contains("`comments` *off*"), "{settings}");
    assert!(settings.contains("Not muted"), "{settings}");
    let muted = reply(&harness, "UADA", "notify mute 2h").await;
    assert!(muted.contains("muted until"), "{muted}");
    let off = reply(&harness, "UBOB", "notify off reviews").await;
    assert!(off.contains("`reviews` are now *off*"), "{off}");
    let bad = reply(&harness, "UBOB", "notify mute forever").await;
    assert!(bad.contains("`forever` is not a duration"), "{bad}");
    let unlinked = harness.command(TEAM, "C1", "UNOBODY", "notify").await;
    assert!(
        unlinked.to_string().contains("connect it first"),
        "{unlinked}"
    );

    // The restart: the first DM is not sent again. Ada is muted and Bob no longer wants
    // reviews; Dee's approval of Cy's pull request is the last, so once Cy has it, every
    // earlier activity was routed.
    let builder = harness.stop().await;
    append(
        &builder,
        2,
        &[
            approved(7, "ada", "bob"),
            review_requested(9, "ada", "bob"),
            approved(10, "cy", "dee"),
        ],
    )
    .await;
    let harness = builder.start().await;
    let second = dms(&slack, 2).await;
    assert_eq!(recipients(&second), vec!["UBOB", "UCY"]);
    let builder = harness.stop().await;
    let store = open_store(&builder.data()).await;
    assert!(store.activities.is_empty(), "every activity was routed");
    let waiting: Vec<String> = store
        .deliveries
        .pending()
        .expect("outbox")
        .into_iter()
        .chain(store.deliveries.parked().expect("parked"))
        .map(|delivery| delivery.channel_id)
        .filter(|channel| channel.starts_with('U'))
        .collect();
    assert!(
        waiting.is_empty(),
        "no DM queued for the muted or unwilling: {waiting:?}"
    );
    assert_eq!(
        store.personal_settings.get(TEAM, "UCY").expect("settings"),
        Default::default(),
        "nobody else's settings changed"
    );
}

/// Every scope but `im:write`: direct messages are not allowed yet.
fn without_im_write() -> String {
    required_scopes()
        .into_iter()
        .filter(|scope| *scope != "im:write")
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_start_the_moment_the_workspace_upgrades() {
    let bitbucket = FakeBitbucket::start().await;
    bitbucket.add_repository(REPO);
    let token = "xoxb-old-bot";
    let builder = Harness::builder()
        .bot_token(token)
        .workspace(
            token,
            FakeWorkspace::new(TEAM, "Fake Team", &without_im_write()),
        )
        .bitbucket(bitbucket)
        .set("bitbucket.poll_interval_secs", "1")
        .system_clock();
    let harness = builder.start().await;
    let builder = harness.stop().await;
    {
        let store = open_store(&builder.data()).await;
        store
            .user_links
            .put(&link("UADA", &uuid_of("ada"), "ada"))
            .await
            .expect("link");
    }
    let harness = builder.start().await;
    let slack = harness.slack.clone();

    // Before the upgrade: `notify` is not in the help and is refused naming what is missing.
    let help = reply(&harness, "UADA", "help").await;
    assert!(!help.contains("/bitbucket notify"), "{help}");
    let refused = reply(&harness, "UADA", "notify").await;
    assert!(refused.contains("direct messages"), "{refused}");
    assert!(refused.contains("`im:write`"), "{refused}");
    assert!(refused.contains("/bitbucket upgrade"), "{refused}");
    let subscribed = reply(&harness, "UADA", "subscribe acme/api reviews").await;
    assert!(
        subscribed.contains("Subscribed this channel"),
        "{subscribed}"
    );

    harness.bitbucket().wait_for(Endpoint::Branches, 2).await;
    harness.bitbucket().push(REPO, "feature/a", &["A change"]);
    let pr = harness
        .bitbucket()
        .open_pull_request(REPO, "feature/a", "Add a", "ada");
    harness.bitbucket().approve(REPO, pr, "grace");
    let channel_posts = |count: usize| {
        let slack = slack.clone();
        async move {
            let mut total = count;
            loop {
                let posts: Vec<Value> = slack
                    .wait_for_calls_within("chat.postMessage", total, Duration::from_secs(90))
                    .await
                    .iter()
                    .map(|call| call.json())
                    .filter(|post| post["channel"] == "C1")
                    .collect();
                if posts.len() >= count {
                    return posts;
                }
                total += 1;
            }
        }
    };
    let posts = channel_posts(2).await;
    assert!(section_text(&posts[1]).contains("approved"), "{}", posts[1]);
    // (The campaign may DM admins; Ada is not one.)
    assert!(
        !recipients(&dms(&slack, 0).await).contains(&"UADA".to_string()),
        "no DM before the permissions allow them"
    );

    // The admin updates the permissions; the next status check sees them, no restart.
    slack.add_workspace(
        token,
        FakeWorkspace::new(TEAM, "Fake Team", &required_scopes().join(",")),
    );
    let status = reply(&harness, "UADA", "status").await;
    assert!(!status.contains("im:write"), "{status}");
    let help = reply(&harness, "UADA", "help").await;
    assert!(help.contains("/bitbucket notify"), "{help}");
    let settings = reply(&harness, "UADA", "notify").await;
    assert!(settings.contains("`my-reviews` *on*"), "{settings}");

    harness.bitbucket().request_changes(REPO, pr, "grace");
    let sent = dms_to(&slack, "UADA", 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let text = message_text(&sent[0]);
    assert!(
        text.contains("Changes were requested on your pull request"),
        "{text}"
    );
    assert!(text.contains("Add a"), "{text}");
    harness.stop().await;
}
