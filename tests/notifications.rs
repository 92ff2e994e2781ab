//! End to end with both fakes: a channel subscribes through the slash command, the fake
//! Bitbucket opens, approves and merges a pull request, and the fake Slack gets exactly
//! the messages a person expects: the parent, a thread reply, a broadcast and an update.
//! Waits are for requests and calls; nothing sleeps.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::blocks::section_text;
use support::fake_bitbucket::{Endpoint, FakeBitbucket};
use support::harness::{Harness, TEAM};

struct Daemon(Harness);

async fn daemon(repos: &[&str]) -> Daemon {
    let _ = tracing_subscriber::fmt().with_env_filter("debug,hyper=info,sled=info,reqwest=info,h2=info,tungstenite=info,tokio_tungstenite=info").with_test_writer().try_init();
    let bitbucket = FakeBitbucket::start().await;
    for repo in repos {
        bitbucket.add_repository(repo);
    }
    // A current install: subscribing channels needs every channel-notification scope.
    let harness = Harness::builder()
        .installed_bot("xoxb-notify-bot")
        .bitbucket(bitbucket)
        .set("bitbucket.poll_interval_secs", "1")
        .system_clock()
        .start()
        .await;
    Daemon(harness)
}

impl std::ops::Deref for Daemon {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

impl Daemon {
    async fn command(&self, channel: &str, text: &str) -> String {
        let payload = self.0.command(TEAM, channel, "U1", text).await;
        if !payload.is_null() {
            return section_text(&payload);
        }
        // Over the reply budget: the reply went to response_url.
        let calls = self.slack.wait_for_calls("/response/r", 1).await;
        calls.last().expect("a reply").json().to_string()
    }

    /// The chat.postMessage calls into `channel`, once there are `count` of them.
    async fn posts_in(&self, channel: &str, count: usize) -> Vec<Value> {
        let mut total = count;
        loop {
            // The poller polls a quiet repository every 16 intervals (16 s here).
            let posts: Vec<Value> = self
                .slack
                .wait_for_calls_within("chat.postMessage", total, Duration::from_secs(90))
                .await
                .iter()
                .map(|call| call.json())
                .filter(|post| post["channel"] == channel)
                .collect();
            if posts.len() >= count {
                return posts;
            }
            total += 1;
        }
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_is_posted_once_then_threaded_then_merged() {
    let daemon = daemon(&["acme/api"]).await;
    let reply = daemon.command("C1", "subscribe acme/api reviews").await;
    assert!(
        reply.contains("Subscribed this channel to `acme/api`"),
        "{reply}"
    );
    assert!(reply.contains("pullrequests commits reviews"), "{reply}");
    let listed = daemon.command("C1", "subscriptions").await;
    assert!(listed.contains("acme/api"), "{listed}");
    // A whole workspace, in another channel: its repositories are found and watched.
    let reply = daemon.command("C2", "subscribe acme").await;
    assert!(
        reply.contains("Subscribed this channel to `acme`"),
        "{reply}"
    );

    // The first poll records a baseline; only what happens after it is news. A second
    // poll starts only once the first is committed.
    daemon.bitbucket().wait_for(Endpoint::Branches, 2).await;
    daemon
        .bitbucket()
        .push("acme/api", "feature/retries", &["Retry with backoff"]);
    let pr = daemon.bitbucket().open_pull_request(
        "acme/api",
        "feature/retries",
        "Add <retries> & backoff",
        "ada",
    );
    let posts = daemon.posts_in("C1", 1).await;
    let parent = &posts[0];
    let text = section_text(parent);
    assert!(
        text.contains(&format!("#{pr} Add &lt;retries&gt; &amp; backoff")),
        "{text}"
    );
    assert!(
        text.contains("https://bitbucket.org/acme/api/pull-requests/"),
        "{text}"
    );
    assert!(parent.get("thread_ts").is_none());
    let workspace_posts = daemon.posts_in("C2", 1).await;
    assert!(
        section_text(&workspace_posts[0]).contains(&format!("#{pr} Add")),
        "{}",
        workspace_posts[0]
    );

    daemon.bitbucket().approve("acme/api", pr, "grace");
    let posts = daemon.posts_in("C1", 2).await;
    assert!(section_text(&posts[1]).contains("approved"), "{}", posts[1]);
    assert!(
        posts[1]["thread_ts"].is_string(),
        "a thread reply: {}",
        posts[1]
    );
    let parent_ts = posts[1]["thread_ts"].as_str().expect("ts").to_string();

    daemon.bitbucket().merge("acme/api", pr, "ada");
    let posts = daemon.posts_in("C1", 3).await;
    assert!(section_text(&posts[2]).contains("merged"), "{}", posts[2]);
    assert_eq!(posts[2]["thread_ts"], parent_ts.as_str());
    assert_eq!(posts[2]["reply_broadcast"], true);
    let updates = daemon
        .slack
        .wait_for_calls_within("chat.update", 1, Duration::from_secs(90))
        .await;
    assert_eq!(updates[0].json()["ts"], parent_ts.as_str());

    assert_eq!(daemon.posts_in("C1", 3).await.len(), 3, "exactly once each");

    let address = daemon.running.http_address.to_string();
    let (status, metrics) = support::daemon::http_get(&address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "bitbucket_slack_bitbucket_requests_total{endpoint=\"branches\",status=\"200\"}"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("acme/api"),
        "no repository names in labels"
    );
    let routed = metrics
        .lines()
        .find(|line| line.starts_with("bitbucket_slack_detection_latency_seconds_count"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(routed >= 3, "{metrics}");
    assert!(
        metrics.contains("bitbucket_slack_deliveries_total{kind=\"delivered\"}"),
        "{metrics}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscribe_input_is_explained_and_nothing_is_stored() {
    let daemon = daemon(&["acme/api"]).await;
    for (text, expected) in [
        ("subscribe", "name a repository"),
        ("subscribe acme/", "Expected `workspace/repository`"),
        ("subscribe ..", "`.` and `..` are not names"),
        ("subscribe acme/api bogus", "`bogus` is not a feature"),
        (
            "subscribe acme/api commits:rel[ease",
            "patterns use only `*` and `?`",
        ),
        ("subscribe acme/missing", "was not found on Bitbucket"),
        (
            "settings threading maybe",
            "say `threading on` or `threading off`",
        ),
    ] {
        let reply = daemon.command("C1", text).await;
        assert!(reply.contains(expected), "{text}: {reply}");
    }
    assert!(
        daemon
            .command("C1", "subscriptions")
            .await
            .contains("no subscriptions")
    );
    daemon.slack.set_channel("C-PRIVATE", true, false);
    let reply = daemon.command("C-PRIVATE", "subscribe acme/api").await;
    assert!(reply.contains("/invite @bitbucket"), "{reply}");
    assert!(
        daemon
            .command("C-PRIVATE", "subscriptions")
            .await
            .contains("no subscriptions")
    );
    let features = daemon.command("C1", "subscriptions features").await;
    assert!(
        features.contains("commits:<pattern>") && features.contains("-author:<name>"),
        "{features}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_then_fixed_external_build_on_main_is_posted_to_a_builds_channel() {
    let daemon = daemon(&["acme/api"]).await;
    let reply = daemon.command("C1", "subscribe acme/api builds").await;
    assert!(reply.contains("pullrequests commits builds"), "{reply}");
    daemon.bitbucket().wait_for(Endpoint::Branches, 2).await;
    let bitbucket = daemon.bitbucket();

    let broken = bitbucket.push("acme/api", "main", &["Break the build"]);
    bitbucket.set_commit_status("acme/api", &broken, "jenkins", "FAILED");
    // The push, then the failed build (the default: failed and fixed on main).
    let posts = daemon.posts_in("C1", 2).await;
    let failed = section_text(&posts[1]);
    assert!(
        failed.contains("failed on `main` in `acme/api`") && failed.contains("jenkins #1"),
        "{failed}"
    );

    let fixed = bitbucket.push("acme/api", "main", &["Fix the build"]);
    bitbucket.set_commit_status("acme/api", &fixed, "jenkins", "SUCCESSFUL");
    let posts = daemon.posts_in("C1", 4).await;
    let text = section_text(&posts[3]);
    assert!(text.contains("is fixed on `main`"), "{text}");
    assert!(
        bitbucket.count(Endpoint::CommitStatuses) >= 2,
        "statuses were read"
    );
    daemon.stop().await;
}
