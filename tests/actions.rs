//! Actions from Slack with the person's own Bitbucket account, end to end against both
//! fakes: buttons and modals (approve, merge with a strategy, a blocked merge, rerun),
//! the slash equivalents, who may act (unlinked, stale, unpermitted, an old link asked
//! to reconnect), the workspace's permission upgrade, and the poller's later activity
//! for an approval done from a channel message not posted a second time.
//! Waits are for requests and calls; nothing sleeps.

mod support;

use std::time::Duration;

use jiff::SignedDuration;
use serde_json::{Value, json};
use support::blocks::section_text;
use support::fake_bitbucket::{FakeAccount, FakeBitbucket, uuid_of};
use support::fake_slack::{FakeWorkspace, RecordedCall};
use support::harness::{Harness, HarnessBuilder, TEAM, block_actions};

const KEY: &str = "bb-consumer-key";
const SECRET: &str = "bb-consumer-secret-never-logged";
const REPO: &str = "acme/api";
const BOT: &str = "xoxb-actions-bot";

/// Grace, whose account the fake names by her nickname (so feed entries match her uuid).
fn grace() -> FakeAccount {
    FakeAccount::new(&uuid_of("grace"), "Grace Hopper", "grace")
}

fn ada() -> FakeAccount {
    FakeAccount::new(&uuid_of("ada"), "Ada Lovelace", "ada")
}

/// A fake Bitbucket with acme/api and one open pull request (#1, by ada).
async fn bitbucket() -> FakeBitbucket {
    let bitbucket = FakeBitbucket::start().await;
    bitbucket.add_repository(REPO);
    bitbucket.push(REPO, "feature/retries", &["Retry with backoff"]);
    bitbucket.open_pull_request(REPO, "feature/retries", "Add retries", "ada");
    bitbucket
}

async fn daemon_with(builder: HarnessBuilder, bitbucket: FakeBitbucket) -> Harness {
    builder
        .bitbucket(bitbucket)
        .bitbucket_logins(KEY, SECRET)
        .set("bitbucket.poll_interval_secs", "3600")
        .start()
        .await
}

/// A daemon that really polls acme/api (empty at first) every second, on the system clock.
async fn polling_daemon() -> Harness {
    let bitbucket = FakeBitbucket::start().await;
    bitbucket.add_repository(REPO);
    Harness::builder()
        .installed_bot(BOT)
        .bitbucket(bitbucket)
        .bitbucket_logins(KEY, SECRET)
        .set("bitbucket.poll_interval_secs", "1")
        .system_clock()
        .start()
        .await
}

async fn daemon() -> Harness {
    daemon_with(Harness::builder().installed_bot(BOT), bitbucket().await).await
}

const MESSAGE: &str = "*Ada* opened pull request #1 Add retries in `acme/api`";

/// `user` clicks `action_id` on the pull request's message in C1.
async fn click(daemon: &Harness, user: &str, action_id: &str, value: &str) {
    daemon
        .click(block_actions(
            TEAM,
            "C1",
            "1700000000.000100",
            &[MESSAGE],
            user,
            action_id,
            value,
        ))
        .await;
}

/// The ephemeral answers to `user`, once there are `count` of them in all.
async fn ephemerals(daemon: &Harness, count: usize) -> Vec<Value> {
    daemon
        .slack
        .wait_for_calls("chat.postEphemeral", count)
        .await
        .iter()
        .map(RecordedCall::json)
        .collect()
}

fn last_text(calls: &[Value]) -> String {
    let last = calls.last().expect("an answer");
    format!(
        "{} {}",
        last["text"].as_str().unwrap_or(""),
        section_text(last)
    )
}

fn buttons(call: &Value) -> Vec<String> {
    let blocks: Value = match &call["blocks"] {
        Value::String(encoded) => serde_json::from_str(encoded).unwrap_or(Value::Null),
        other => other.clone(),
    };
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|block| block["elements"].as_array().cloned().unwrap_or_default())
        .filter_map(|element| element["action_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn approve_from_a_channel_message_is_the_persons_approval_and_the_message_shows_it() {
    let daemon = daemon().await;
    daemon.link("U1", grace()).await;
    click(&daemon, "U1", "bitbucket_pr_approve", "acme/api#1").await;
    let answers = ephemerals(&daemon, 1).await;
    assert_eq!(answers[0]["channel"], "C1");
    assert_eq!(answers[0]["user"], "U1");
    assert!(
        last_text(&answers).contains("You approved `acme/api` #1"),
        "{answers:?}"
    );
    // In the fake Bitbucket, as Grace, by her token.
    assert!(daemon.bitbucket().approved_by(REPO, 1, "grace"));
    let approval = daemon
        .bitbucket()
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/pullrequests/1/approve"))
        .expect("an approve request");
    assert!(
        approval
            .authorization
            .as_deref()
            .is_some_and(|auth| auth.starts_with("Bearer bb-access-")),
        "{approval:?}"
    );
    // The message now says so, and offers to withdraw it.
    let updates = daemon.slack.wait_for_calls("chat.update", 1).await;
    let update = updates[0].json();
    assert_eq!(update["channel"], "C1");
    assert_eq!(update["ts"], "1700000000.000100");
    let text = section_text(&update);
    assert!(text.contains(MESSAGE), "{text}");
    assert!(text.contains("<@U1> approved"), "{text}");
    assert!(
        buttons(&update).contains(&"bitbucket_pr_unapprove".to_string()),
        "{update}"
    );
    // The slash equivalent works the same; only the reference is needed.
    daemon.bitbucket().push(REPO, "feature/more", &["More"]);
    let answer = daemon
        .command(
            TEAM,
            "C1",
            "U1",
            "approve https://bitbucket.org/acme/api/pull-requests/1",
        )
        .await;
    assert!(
        section_text(&answer).contains("You approved `acme/api` #1"),
        "{answer}"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn merge_goes_through_the_modal_with_a_strategy_and_a_blocked_merge_gives_the_reason() {
    let bitbucket = bitbucket().await;
    bitbucket.allow_merge_strategies(REPO, &["squash", "merge_commit"]);
    bitbucket.push(REPO, "feature/two", &["Two"]);
    bitbucket.open_pull_request(REPO, "feature/two", "Second", "ada");
    bitbucket.block_merge(
        REPO,
        2,
        400,
        "You can't merge until you resolve all merge checks: 1 failed build.",
    );
    let daemon = daemon_with(Harness::builder().installed_bot(BOT), bitbucket).await;
    daemon.link("U1", grace()).await;

    // The slash command asks for confirmation first: a button that opens the dialog.
    let answer = daemon.command(TEAM, "C1", "U1", "merge acme/api#1").await;
    assert!(
        section_text(&answer).contains("Merge `acme/api` #1?"),
        "{answer}"
    );
    assert_eq!(buttons(&answer), vec!["bitbucket_pr_merge".to_string()]);
    assert!(daemon.bitbucket().merges().is_empty(), "nothing merged yet");

    click(&daemon, "U1", "bitbucket_pr_merge", "acme/api#1").await;
    let views = daemon.slack.wait_for_calls("views.open", 1).await;
    let opened = views[0].json();
    assert_eq!(opened["trigger_id"], "111.222.trigger");
    let view: Value = serde_json::from_str(opened["view"].as_str().expect("a view")).expect("json");
    assert_eq!(view["callback_id"], "bitbucket_pr_merge_view");
    let options: Vec<&str> = view["blocks"][1]["element"]["options"]
        .as_array()
        .expect("strategies")
        .iter()
        .filter_map(|o| o["value"].as_str())
        .collect();
    assert_eq!(options, vec!["squash", "merge_commit"], "{view}");
    let metadata = view["private_metadata"]
        .as_str()
        .expect("metadata")
        .to_string();
    daemon
        .submit_view(
            TEAM,
            "U1",
            "bitbucket_pr_merge_view",
            &metadata,
            json!({
                "strategy": {"strategy": {"type": "static_select", "selected_option": {"value": "merge_commit", "text": {"type": "plain_text", "text": "Merge commit"}}}},
                "close_source_branch": {"close_source_branch": {"type": "checkboxes", "selected_options": [{"value": "close"}]}},
                "message": {"message": {"type": "plain_text_input", "value": null}}
            }),
        )
        .await;
    let answers = ephemerals(&daemon, 1).await;
    assert!(
        last_text(&answers).contains("You merged `acme/api` #1"),
        "{answers:?}"
    );
    let merges = daemon.bitbucket().merges();
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0].id, 1);
    assert_eq!(merges[0].by_uuid, uuid_of("grace"));
    assert_eq!(merges[0].strategy.as_deref(), Some("merge_commit"));
    assert!(merges[0].close_source_branch);
    let updates = daemon.slack.wait_for_calls("chat.update", 1).await;
    let text = section_text(&updates[0].json());
    assert!(text.contains("*merged* by <@U1>"), "{text}");

    // A merge a failing check blocks is refused with Bitbucket's reason.
    let value = "acme/api#2";
    click(&daemon, "U1", "bitbucket_pr_merge", value).await;
    let views = daemon.slack.wait_for_calls("views.open", 2).await;
    let view: Value =
        serde_json::from_str(views[1].json()["view"].as_str().expect("a view")).expect("json");
    daemon
        .submit_view(
            TEAM,
            "U1",
            "bitbucket_pr_merge_view",
            view["private_metadata"].as_str().expect("metadata"),
            json!({}),
        )
        .await;
    let answers = ephemerals(&daemon, 2).await;
    let text = last_text(&answers);
    assert!(text.contains("Bitbucket refused"), "{text}");
    assert!(text.contains("1 failed build"), "{text}");
    assert_eq!(daemon.bitbucket().merges().len(), 1, "not merged");
    daemon.stop().await;
}

#[tokio::test]
async fn rerun_starts_a_pipeline_for_the_same_target() {
    let bitbucket = bitbucket().await;
    let failed = bitbucket.start_pipeline(REPO, "main");
    bitbucket.finish_pipeline(REPO, &failed, "FAILED");
    let daemon = daemon_with(Harness::builder().installed_bot(BOT), bitbucket).await;
    daemon.link("U1", grace()).await;
    let value = format!("{REPO} pipeline {failed}");
    daemon
        .click(block_actions(
            TEAM,
            "C1",
            "1700000000.000200",
            &[":red_circle: Pipeline #1 failed on `main` in `acme/api`"],
            "U1",
            "bitbucket_pipeline_rerun",
            &value,
        ))
        .await;
    let answers = ephemerals(&daemon, 1).await;
    assert!(
        last_text(&answers).contains("running again as #2"),
        "{answers:?}"
    );
    let runs = daemon.bitbucket().pipeline_runs(REPO);
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (&runs[1].2, &runs[1].3),
        (&runs[0].2, &runs[0].3),
        "same target"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn unlinked_stale_and_unpermitted_clickers_are_told_what_to_do() {
    let daemon = daemon().await;
    // Unlinked: the login button, nothing sent to Bitbucket.
    click(&daemon, "U9", "bitbucket_pr_approve", "acme/api#1").await;
    let answers = ephemerals(&daemon, 1).await;
    assert!(
        last_text(&answers).contains("connect your Bitbucket account first"),
        "{answers:?}"
    );
    assert!(buttons(&answers[0]).contains(&"bitbucket_login".to_string()));
    assert!(!daemon.bitbucket().approved_by(REPO, 1, "ada"));

    // Unpermitted: Bitbucket's reason.
    daemon.link("U2", ada()).await;
    daemon.bitbucket().forbid_writes(&uuid_of("ada"), REPO);
    click(&daemon, "U2", "bitbucket_pr_approve", "acme/api#1").await;
    let answers = ephemerals(&daemon, 2).await;
    let text = last_text(&answers);
    assert!(text.contains("did not let you"), "{text}");
    assert!(text.contains("You do not have write access"), "{text}");

    // Stale: the refresh is refused, so the re-login prompt.
    daemon.link("U1", grace()).await;
    daemon.bitbucket().revoke(&uuid_of("grace"));
    daemon.clock.advance(SignedDuration::from_hours(3));
    click(&daemon, "U1", "bitbucket_pr_approve", "acme/api#1").await;
    let answers = ephemerals(&daemon, 3).await;
    let text = last_text(&answers);
    assert!(text.contains("Your Bitbucket link has expired"), "{text}");
    assert!(buttons(&answers[2]).contains(&"bitbucket_login".to_string()));
    assert!(!daemon.bitbucket().approved_by(REPO, 1, "grace"));
    daemon.stop().await;
}

#[tokio::test]
async fn a_link_made_before_scopes_were_recorded_is_asked_to_reconnect_once() {
    let daemon = daemon().await;
    daemon.bitbucket().grant_scopes(None);
    daemon.link("U1", grace()).await;
    click(&daemon, "U1", "bitbucket_pr_approve", "acme/api#1").await;
    let answers = ephemerals(&daemon, 1).await;
    let text = last_text(&answers);
    assert!(text.contains("Reconnect your Bitbucket account"), "{text}");
    assert!(text.contains("pullrequest:write"), "{text}");
    assert!(buttons(&answers[0]).contains(&"bitbucket_login".to_string()));
    assert!(!daemon.bitbucket().approved_by(REPO, 1, "grace"));
    // Asked once: the next click acts.
    click(&daemon, "U1", "bitbucket_pr_approve", "acme/api#1").await;
    let answers = ephemerals(&daemon, 2).await;
    assert!(last_text(&answers).contains("You approved"), "{answers:?}");
    assert!(daemon.bitbucket().approved_by(REPO, 1, "grace"));

    // A link whose recorded scopes lack them is asked every time: it cannot act.
    daemon.bitbucket().grant_scopes(Some("account repository"));
    daemon.link("U2", ada()).await;
    for round in 1..=2 {
        click(&daemon, "U2", "bitbucket_pr_approve", "acme/api#1").await;
        let answers = ephemerals(&daemon, 2 + round).await;
        assert!(last_text(&answers).contains("Reconnect"), "{answers:?}");
    }
    assert!(!daemon.bitbucket().approved_by(REPO, 1, "ada"));
    daemon.stop().await;
}

#[tokio::test]
async fn actions_are_off_before_the_permission_upgrade_and_on_after_it_without_a_restart() {
    let outdated =
        "commands,chat:write,chat:write.public,channels:read,groups:read,users:read,team:read";
    let builder = Harness::builder()
        .bot_token(BOT)
        .workspace(BOT, FakeWorkspace::new(TEAM, "Fake Team", outdated))
        .set("upgrade.admins", "U0ADMIN");
    let daemon = daemon_with(builder, bitbucket().await).await;
    let help = section_text(&daemon.command(TEAM, "C1", "U1", "help").await);
    assert!(!help.contains("/bitbucket approve"), "{help}");
    let refused = section_text(&daemon.command(TEAM, "C1", "U1", "approve acme/api#1").await);
    assert!(refused.contains("pull request actions"), "{refused}");
    assert!(refused.contains("im:write"), "{refused}");
    assert!(refused.contains("<@U0ADMIN>"), "{refused}");
    click(&daemon, "U1", "bitbucket_pr_approve", "acme/api#1").await;
    let answers = ephemerals(&daemon, 1).await;
    assert!(
        last_text(&answers).contains("an admin") || last_text(&answers).contains("admin"),
        "{answers:?}"
    );

    // The admin updates the permissions; `status` re-reads the configured token.
    let current = bitbucket_slack::upgrade::required_scopes().join(",");
    daemon
        .slack
        .add_workspace(BOT, FakeWorkspace::new(TEAM, "Fake Team", &current));
    daemon.command(TEAM, "C1", "U1", "status").await;
    let help = section_text(&daemon.command(TEAM, "C1", "U1", "help").await);
    assert!(help.contains("/bitbucket approve"), "{help}");
    daemon.link("U1", grace()).await;
    let answer = section_text(&daemon.command(TEAM, "C1", "U1", "approve acme/api#1").await);
    assert!(answer.contains("You approved"), "{answer}");
    assert!(daemon.bitbucket().approved_by(REPO, 1, "grace"));
    daemon.stop().await;
}

/// The poller's later approval is not posted again in the channel whose message showed
/// it; the real poller and router, on the system clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pollers_later_approval_is_not_posted_a_second_time() {
    let daemon = polling_daemon().await;
    daemon.link("U1", grace()).await;
    let reply = section_text(
        &daemon
            .command(TEAM, "C1", "U1", "subscribe acme/api reviews")
            .await,
    );
    assert!(reply.contains("Subscribed"), "{reply}");
    daemon
        .bitbucket()
        .wait_for(support::fake_bitbucket::Endpoint::Branches, 2)
        .await;
    daemon.bitbucket().push(REPO, "feature/retries", &["Retry"]);
    daemon
        .bitbucket()
        .open_pull_request(REPO, "feature/retries", "Add retries", "ada");
    let posts = posts_in(&daemon, "C1", 1).await;
    let opened = &posts[0];
    assert!(
        buttons(opened).contains(&"bitbucket_pr_approve".to_string()),
        "the message offers actions: {opened}"
    );
    let ts = "1700000000.000100";
    daemon
        .click(block_actions(
            TEAM,
            "C1",
            ts,
            &[&section_text(opened)],
            "U1",
            "bitbucket_pr_approve",
            "acme/api#1",
        ))
        .await;
    daemon.slack.wait_for_calls("chat.update", 1).await;
    // Someone else approves on Bitbucket afterwards: that one is posted, Grace's is not.
    daemon.bitbucket().approve(REPO, 1, "ada");
    let posts = posts_in(&daemon, "C1", 2).await;
    let texts: Vec<String> = posts.iter().map(section_text).collect();
    assert!(texts[1].contains("*ada* approved"), "{texts:?}");
    assert!(
        !texts
            .iter()
            .any(|text| text.contains("Grace") || text.contains("<@U1> approved")),
        "{texts:?}"
    );
    daemon.stop().await;
}

/// The chat.postMessage calls into `channel`, once there are `count` of them.
async fn posts_in(daemon: &Harness, channel: &str, count: usize) -> Vec<Value> {
    let mut total = count;
    loop {
        let posts: Vec<Value> = daemon
            .slack
            .wait_for_calls_within("chat.postMessage", total, Duration::from_secs(90))
            .await
            .iter()
            .map(RecordedCall::json)
            .filter(|post| post["channel"] == channel)
            .collect();
        if posts.len() >= count {
            return posts;
        }
        total += 1;
    }
}

/// Personal notifications end to end against the fake Bitbucket: Ada adds Grace as a
/// reviewer on Bitbucket; Grace (linked) gets one DM, Ada (who added her) none; Bob's
/// approval then DMs Ada (her pull request's review), and Grace still has one.
#[tokio::test]
async fn a_reviewer_added_on_bitbucket_is_told_by_dm_once_and_nobody_else() {
    let daemon = polling_daemon().await;
    daemon.link("U1", grace()).await;
    daemon.link("U2", ada()).await;
    let reply = section_text(&daemon.command(TEAM, "C1", "U1", "subscribe acme/api").await);
    assert!(reply.contains("Subscribed"), "{reply}");
    daemon
        .bitbucket()
        .wait_for(support::fake_bitbucket::Endpoint::Branches, 2)
        .await;
    daemon.bitbucket().push(REPO, "feature/retries", &["Retry"]);
    daemon
        .bitbucket()
        .open_pull_request(REPO, "feature/retries", "Add retries", "ada");
    posts_in(&daemon, "C1", 1).await;
    // Each was told of their link by DM when they linked: one post each so far.
    daemon.bitbucket().add_reviewer(REPO, 1, "grace", "ada");
    let dms = posts_in(&daemon, "U1", 2).await;
    let text = section_text(&dms[1]);
    assert!(text.contains("review"), "{text}");
    daemon.bitbucket().approve(REPO, 1, "bob");
    let to_ada = posts_in(&daemon, "U2", 2).await;
    assert!(section_text(&to_ada[1]).contains("approved"), "{to_ada:?}");
    let all: Vec<Value> = daemon
        .slack
        .calls_to("chat.postMessage")
        .iter()
        .map(RecordedCall::json)
        .collect();
    let to = |channel: &str| all.iter().filter(|p| p["channel"] == channel).count();
    assert_eq!(to("U1"), 2, "Grace is told once (after her link's DM)");
    assert_eq!(
        to("U2"),
        2,
        "Ada is not told of her own change, only of the approval (after her link's DM)"
    );
    daemon.stop().await;
}
