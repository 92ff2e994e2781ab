//! Link previews end to end against both fakes: `link_shared` → Bitbucket reads →
//! `chat.unfurl`. A private pull request is previewed for a linked reader and not for an
//! unlinked sharer (who is offered to connect once a day), and a stale link gets the
//! offer to connect again; public repositories and
//! commits through the daemon's credential; garbage links cost nothing; nothing before
//! the permission upgrade and previews at once after it; a link shared twice within a
//! minute is read once. Also the cards of every kind, as insta snapshots. The daemon runs
//! on its manual clock; waits are for calls and metrics, nothing sleeps.

mod support;

use jiff::Timestamp;
use serde_json::{Value, json};
use support::daemon::browse;
use support::fake_bitbucket::{Endpoint, FakeAccount, FakeBitbucket, TOKEN, uuid_of};
use support::fake_slack::FakeWorkspace;
use support::harness::{Harness, HarnessBuilder, TEAM};

use bitbucket_slack::bitbucket::links::LineRange;
use bitbucket_slack::bitbucket::preview::{
    BranchPreview, BuildSummary, CommitPreview, FilePreview, IssuePreview, PipelinePreview, Place,
    Preview, PullRequestPreview, RepositoryPreview,
};
use bitbucket_slack::notify::unfurl::card;

const KEY: &str = "bb-consumer-key";
const SECRET: &str = "bb-consumer-secret-never-logged";
const BOT: &str = "xoxb-previews-bot";
const PUBLIC: &str = "acme/api";
const PRIVATE: &str = "acme/secret";
const PRIVATE_PR: &str = "https://bitbucket.org/acme/secret/pull-requests/1";
const PUBLIC_REPO: &str = "https://bitbucket.org/acme/api";

fn grace() -> FakeAccount {
    FakeAccount::new(&uuid_of("grace"), "Grace Hopper", "grace")
}

/// acme/api (public) and acme/secret (private, readable by grace) whose pull request #1
/// has two reviewers, one approval and a passing build on its head.
async fn bitbucket() -> FakeBitbucket {
    let bitbucket = FakeBitbucket::start().await;
    bitbucket.add_repository(PUBLIC);
    bitbucket.add_private_repository(PRIVATE);
    let head = bitbucket.push(PRIVATE, "feature/retries", &["Retry with backoff"]);
    bitbucket.open_pull_request_with_reviewers(
        PRIVATE,
        "feature/retries",
        "Add <retries> & backoff",
        "ada",
        &["grace", "linus"],
    );
    bitbucket.approve(PRIVATE, 1, "grace");
    bitbucket.set_commit_status(PRIVATE, &head, "ci", "SUCCESSFUL");
    bitbucket.set_readable(&uuid_of("grace"), &[PRIVATE]);
    bitbucket
}

async fn daemon_with(builder: HarnessBuilder) -> Harness {
    builder
        .bitbucket(bitbucket().await)
        .bitbucket_logins(KEY, SECRET)
        .set("bitbucket.poll_interval_secs", "3600")
        .start()
        .await
}

async fn daemon() -> Harness {
    daemon_with(Harness::builder().installed_bot(BOT)).await
}

/// `user` shares a message in C1 with `urls`.
async fn share(daemon: &Harness, user: &str, urls: &[&str]) {
    let n = next_id();
    let links: Vec<Value> = urls
        .iter()
        .map(|url| json!({"domain": "bitbucket.org", "url": url}))
        .collect();
    daemon
        .envelope(
            "events_api",
            false,
            json!({
                "team_id": TEAM, "api_app_id": "A0FAKE", "type": "event_callback",
                "event_id": format!("EvPreview{n}"), "event_time": 1_800_000_000,
                "event": {
                    "type": "link_shared", "channel": "C1", "is_bot_user_member": true,
                    "user": user, "message_ts": format!("1800000000.{n:06}"),
                    "unfurl_id": format!("C1.1800000000.{n:06}.unfurl"),
                    "source": "conversations_history", "links": links,
                    "event_ts": format!("1800000000.{n:06}")
                }
            }),
        )
        .await;
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The `unfurls` of every `chat.unfurl` call, once there are `count` of them.
async fn unfurls(daemon: &Harness, count: usize) -> Vec<Value> {
    daemon
        .slack
        .wait_for_calls("chat.unfurl", count)
        .await
        .iter()
        .map(|call| {
            let form = call.json();
            serde_json::from_str(form["unfurls"].as_str().expect("unfurls JSON"))
                .expect("unfurls parse")
        })
        .collect()
}

/// Waits until `/metrics` counts `n` previews of `kind` (sent, refused, skipped).
async fn wait_for_previews(daemon: &Harness, kind: &str, n: u64) {
    let line = format!("bitbucket_slack_previews_total{{kind=\"{kind}\"}} {n}");
    for _ in 0..2000 {
        let metrics = browse(&format!("{}/metrics", daemon.http)).await;
        if metrics.body.lines().any(|l| l == line) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("no `{line}` in /metrics");
}

fn texts(card: &Value) -> String {
    card.to_string()
}

#[tokio::test]
async fn a_private_pull_request_is_previewed_for_a_linked_reader_only() {
    let daemon = daemon().await;
    daemon.link("U1", grace()).await;

    share(&daemon, "U1", &[PRIVATE_PR]).await;
    let sent = unfurls(&daemon, 1).await;
    let card = texts(&sent[0][PRIVATE_PR]);
    assert!(
        card.contains("#1 Add &lt;retries&gt; &amp; backoff"),
        "{card}"
    );
    assert!(card.contains("Approvals: 1 of 2 reviewers"), "{card}");
    assert!(
        card.contains("Build: :white_check_mark: 1 passed"),
        "{card}"
    );
    assert!(card.contains("`feature/retries` → `main`"), "{card}");
    // Read with grace's own token, never the daemon's credential.
    let pull_request_reads: Vec<_> = daemon
        .bitbucket()
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::PullRequest)
        .collect();
    assert_eq!(pull_request_reads.len(), 1);
    assert_ne!(
        pull_request_reads[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // U2 has no linked account: nothing of the private link, one offer to connect.
    share(&daemon, "U2", &[PRIVATE_PR, PUBLIC_REPO]).await;
    let offers = daemon.slack.wait_for_calls("chat.postEphemeral", 1).await;
    let offer = offers[0].json();
    assert_eq!(offer["user"], "U2");
    assert!(
        offer.to_string().contains("Connect Bitbucket account"),
        "{offer}"
    );
    let sent = unfurls(&daemon, 2).await;
    assert!(sent[1].get(PRIVATE_PR).is_none(), "{}", sent[1]);
    assert!(sent[1].get(PUBLIC_REPO).is_some(), "{}", sent[1]);

    // The same day again: still no private preview, and no second offer.
    share(&daemon, "U2", &[PRIVATE_PR, PUBLIC_REPO]).await;
    let sent = unfurls(&daemon, 3).await;
    assert!(sent[2].get(PRIVATE_PR).is_none(), "{}", sent[2]);
    assert_eq!(daemon.slack.calls_to("chat.postEphemeral").len(), 1);
    wait_for_previews(&daemon, "refused", 2).await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_stale_link_gets_the_offer_to_connect_again_once_a_day() {
    let daemon = daemon().await;
    daemon.link("U1", grace()).await;
    daemon.bitbucket().revoke(&uuid_of("grace"));

    share(&daemon, "U1", &[PRIVATE_PR, PUBLIC_REPO]).await;
    let offers = daemon.slack.wait_for_calls("chat.postEphemeral", 1).await;
    let offer = offers[0].json().to_string();
    assert!(offer.contains("no longer accepts"), "{offer}");
    assert!(offer.contains("Connect Bitbucket account"), "{offer}");
    let sent = unfurls(&daemon, 1).await;
    assert!(sent[0].get(PRIVATE_PR).is_none(), "{}", sent[0]);

    share(&daemon, "U1", &[PRIVATE_PR, PUBLIC_REPO]).await;
    let sent = unfurls(&daemon, 2).await;
    assert!(sent[1].get(PRIVATE_PR).is_none(), "{}", sent[1]);
    assert_eq!(daemon.slack.calls_to("chat.postEphemeral").len(), 1);
    daemon.stop().await;
}

#[tokio::test]
async fn public_repository_and_commit_links_are_previewed_with_the_daemon_credential() {
    let daemon = daemon().await;
    let hash = daemon
        .bitbucket()
        .push(PUBLIC, "main", &["Speed up the cache\n\nDetails."]);
    daemon
        .bitbucket()
        .set_commit_status(PUBLIC, &hash, "ci", "FAILED");
    let commit = format!("https://bitbucket.org/acme/api/commits/{}", &hash[..12]);

    share(&daemon, "U9", &[PUBLIC_REPO, &commit]).await;
    let sent = unfurls(&daemon, 1).await;
    let repository = texts(&sent[0][PUBLIC_REPO]);
    assert!(repository.contains("Public"), "{repository}");
    assert!(repository.contains("main branch `main`"), "{repository}");
    let commit_card = texts(&sent[0][commit.as_str()]);
    assert!(commit_card.contains("Speed up the cache"), "{commit_card}");
    assert!(!commit_card.contains("Details."), "{commit_card}");
    assert!(
        commit_card.contains("Build: :x: 1 of 1 failed"),
        "{commit_card}"
    );
    let daemon_token = format!("Bearer {TOKEN}");
    for request in daemon.bitbucket().requests() {
        assert_eq!(
            request.authorization.as_deref(),
            Some(daemon_token.as_str())
        );
    }
    assert_eq!(daemon.slack.calls_to("chat.postEphemeral").len(), 0);
    daemon.stop().await;
}

#[tokio::test]
async fn garbage_and_unknown_links_cost_nothing_and_are_not_unfurled() {
    let daemon = daemon().await;
    share(
        &daemon,
        "U1",
        &[
            "https://bitbucket.org/acme/api/wiki/Home",
            "https://bitbucket.org/acme/api/../secret/pull-requests/1",
            "https://bitbucket.org/acme/api/src/main/%2e%2e/x",
            "https://bitbucket.org.evil.example/acme/api",
            "not a url at all",
        ],
    )
    .await;
    let before = daemon.bitbucket().requests().len();
    share(&daemon, "U1", &[PUBLIC_REPO, "https://bitbucket.org/acme"]).await;
    let sent = unfurls(&daemon, 1).await;
    assert_eq!(
        sent[0]
            .as_object()
            .expect("unfurls")
            .keys()
            .collect::<Vec<_>>(),
        [PUBLIC_REPO]
    );
    assert_eq!(before, 0, "a garbage link made a Bitbucket request");
    assert_eq!(
        daemon.bitbucket().requests().len(),
        1,
        "one repository read"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn nothing_before_the_permission_upgrade_and_previews_right_after_it() {
    let outdated =
        "commands,chat:write,chat:write.public,channels:read,groups:read,users:read,team:read";
    let builder = Harness::builder()
        .bot_token(BOT)
        .workspace(BOT, FakeWorkspace::new(TEAM, "Fake Team", outdated));
    let daemon = daemon_with(builder).await;
    share(&daemon, "U1", &[PUBLIC_REPO]).await;
    wait_for_previews(&daemon, "skipped", 1).await;
    assert!(daemon.bitbucket().requests().is_empty());
    assert!(daemon.slack.calls_to("chat.unfurl").is_empty());

    // The admin updates the permissions; `status` re-reads the configured token's scopes.
    let current = bitbucket_slack::upgrade::required_scopes().join(",");
    daemon
        .slack
        .add_workspace(BOT, FakeWorkspace::new(TEAM, "Fake Team", &current));
    daemon.command(TEAM, "C1", "U1", "status").await;
    share(&daemon, "U1", &[PUBLIC_REPO]).await;
    let sent = unfurls(&daemon, 1).await;
    assert!(sent[0].get(PUBLIC_REPO).is_some(), "{}", sent[0]);
    daemon.stop().await;
}

#[tokio::test]
async fn a_link_shared_twice_within_a_minute_is_read_once() {
    let daemon = daemon().await;
    let head = daemon.bitbucket().push(PUBLIC, "main", &["Tune"]);
    let commit = format!("https://bitbucket.org/acme/api/commits/{head}");
    share(&daemon, "U1", &[&commit]).await;
    unfurls(&daemon, 1).await;
    share(&daemon, "U2", &[&commit]).await;
    let sent = unfurls(&daemon, 2).await;
    assert_eq!(sent[0], sent[1]);
    assert_eq!(daemon.bitbucket().count(Endpoint::CommitDetail), 1);
    assert_eq!(daemon.bitbucket().count(Endpoint::Repository), 1);

    // A minute later it is read again.
    daemon.clock.advance(jiff::SignedDuration::from_secs(61));
    share(&daemon, "U1", &[&commit]).await;
    unfurls(&daemon, 3).await;
    assert_eq!(daemon.bitbucket().count(Endpoint::CommitDetail), 2);
    daemon.stop().await;
}

#[tokio::test]
async fn branch_issue_pipeline_and_file_links_are_previewed() {
    let daemon = daemon().await;
    let bitbucket = daemon.bitbucket();
    bitbucket.push(PUBLIC, "feature/search", &["Add search"]);
    bitbucket.create_issue(PUBLIC, "Crash on start", "linus");
    bitbucket.start_pipeline(PUBLIC, "main");
    let file: String = (1..=30).map(|n| format!("line {n}\n")).collect();
    bitbucket.add_file(PUBLIC, "src/lib.rs", file.as_bytes());
    let branch = "https://bitbucket.org/acme/api/branch/feature/search";
    let issue = "https://bitbucket.org/acme/api/issues/1/crash-on-start";
    let pipeline = "https://bitbucket.org/acme/api/pipelines/results/1";
    let source = "https://bitbucket.org/acme/api/src/main/src/lib.rs#lines-3:4";
    share(&daemon, "U1", &[branch, issue, pipeline, source]).await;
    let sent = unfurls(&daemon, 1).await;
    assert!(
        texts(&sent[0][branch]).contains("Add search"),
        "{}",
        sent[0]
    );
    assert!(
        texts(&sent[0][issue]).contains("#1 Crash on start"),
        "{}",
        sent[0]
    );
    assert!(texts(&sent[0][pipeline]).contains("Running"), "{}", sent[0]);
    let file_card = texts(&sent[0][source]);
    assert!(file_card.contains("line 3\\nline 4"), "{file_card}");
    assert!(!file_card.contains("line 5"), "{file_card}");
    daemon.stop().await;
}

/// Should Bitbucket take only a pipeline's uuid where the link has its build number, the
/// preview finds the number in the newest pipelines instead.
#[tokio::test]
async fn a_pipeline_link_is_found_in_the_list_when_numbers_are_refused() {
    let daemon = daemon().await;
    let bitbucket = daemon.bitbucket();
    bitbucket.start_pipeline(PUBLIC, "main");
    bitbucket.start_pipeline(PUBLIC, "feature/x");
    bitbucket.refuse_pipeline_numbers(PUBLIC);
    let pipeline = "https://bitbucket.org/acme/api/pipelines/results/2";
    share(&daemon, "U1", &[pipeline]).await;
    let sent = unfurls(&daemon, 1).await;
    let card = texts(&sent[0][pipeline]);
    assert!(card.contains("Running"), "{card}");
    assert!(card.contains("feature/x"), "{card}");
    assert_eq!(bitbucket.count(Endpoint::PipelineByNumber), 1);
    daemon.stop().await;
}

// -- the cards ---------------------------------------------------------------------

fn at(text: &str) -> Timestamp {
    text.parse().expect("a timestamp")
}

fn place(url: &str) -> Place {
    Place {
        repository: "acme/api".into(),
        url: url.into(),
    }
}

#[test]
fn cards_of_every_kind() {
    let now = at("2026-03-02T12:00:00Z");
    let cards = [
        (
            "card_pull_request",
            Preview::PullRequest(PullRequestPreview {
                place: place("https://bitbucket.org/acme/api/pull-requests/42"),
                id: 42,
                title: "Retry webhooks with <backoff> & jitter".into(),
                state: "OPEN".into(),
                draft: false,
                author: Some("Ada Lovelace".into()),
                source_branch: Some("feature/retries".into()),
                destination_branch: Some("main".into()),
                approvals: 1,
                reviewers: 2,
                approved_by: vec!["Grace Hopper".into()],
                build: Some(BuildSummary {
                    successful: 2,
                    in_progress: 1,
                    ..BuildSummary::default()
                }),
                updated_on: Some(at("2026-03-02T09:00:00Z")),
            }),
        ),
        (
            "card_commit",
            Preview::Commit(CommitPreview {
                place: place("https://bitbucket.org/acme/api/commits/0123456789ab"),
                hash: "0123456789abcdef0123456789abcdef01234567".into(),
                summary: "Speed up the cache".into(),
                author: Some("Linus".into()),
                date: Some(at("2026-03-01T12:00:00Z")),
                build: Some(BuildSummary {
                    failed: 1,
                    successful: 1,
                    ..BuildSummary::default()
                }),
            }),
        ),
        (
            "card_branch",
            Preview::Branch(BranchPreview {
                place: place("https://bitbucket.org/acme/api/branch/feature/search"),
                name: "feature/search".into(),
                head: Some("0123456789abcdef".into()),
                head_summary: Some("Add search".into()),
                head_author: Some("Ada Lovelace".into()),
                head_date: Some(at("2026-03-02T11:55:00Z")),
            }),
        ),
        (
            "card_repository",
            Preview::Repository(RepositoryPreview {
                place: place("https://bitbucket.org/acme/api"),
                description: Some("The public API & its <docs>".into()),
                language: Some("rust".into()),
                is_private: true,
                main_branch: Some("main".into()),
                updated_on: Some(at("2026-02-20T12:00:00Z")),
            }),
        ),
        (
            "card_issue",
            Preview::Issue(IssuePreview {
                place: place("https://bitbucket.org/acme/api/issues/7"),
                id: 7,
                title: "Crash on start".into(),
                state: "open".into(),
                kind: Some("bug".into()),
                priority: Some("major".into()),
                assignee: None,
                reporter: Some("Linus".into()),
                updated_on: Some(at("2026-03-02T11:59:30Z")),
            }),
        ),
        (
            "card_pipeline",
            Preview::Pipeline(PipelinePreview {
                place: place("https://bitbucket.org/acme/api/pipelines/results/12"),
                build_number: 12,
                state: "COMPLETED".into(),
                detail: Some("FAILED".into()),
                branch: Some("feature/retries".into()),
                pull_request: Some(42),
                creator: Some("Ada Lovelace".into()),
                created_on: Some(at("2026-03-02T10:00:00Z")),
                duration_secs: Some(754),
            }),
        ),
        (
            "card_file",
            Preview::File(FilePreview {
                place: place("https://bitbucket.org/acme/api/src/main/src/lib.rs#lines-3:4"),
                revision: "main".into(),
                path: "src/lib.rs".into(),
                lines: Some(LineRange { start: 3, end: 4 }),
                snippet: Some("fn main() {\n    println!(\"<hi> & ```\");".into()),
            }),
        ),
    ];
    for (name, preview) in cards {
        insta::assert_json_snapshot!(name, card(&preview, now));
    }
}
