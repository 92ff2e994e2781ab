//! The Bitbucket poller against the fake Bitbucket on 127.0.0.1: real HTTP, recorded-shape
//! JSON, a scripted timeline. Every test runs on tokio's paused clock, so hours of polling
//! take milliseconds and every wait is for an event (a request, a committed activity)
//! bounded by a deadline in simulated time. Nothing sleeps in real time.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bitbucket_slack::bitbucket::{
    Activity, ActivityKind, BitbucketClient, ClientSettings, Poller, PollerSettings, Progress,
    RepositoryName,
};
use bitbucket_slack::config::{BitbucketCredential, OAuthConsumerConfig, Secret};
use bitbucket_slack::metrics::{Metrics, SweepCoverage};
use bitbucket_slack::store::Store;
use support::fake_bitbucket::{Answer, Endpoint, FakeBitbucket, TOKEN, WAIT};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

const SECOND: Duration = Duration::from_secs(1);

fn access_token() -> BitbucketCredential {
    BitbucketCredential::AccessToken(Secret::new(TOKEN.into()))
}

struct Options {
    base: Duration,
    limit: u32,
    percent: u32,
    credential: BitbucketCredential,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            base: SECOND,
            limit: 100_000,
            percent: 100,
            credential: access_token(),
        }
    }
}

/// A running poller over a store in a temporary directory.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
    progress: watch::Receiver<Progress>,
    metrics: Metrics,
}

struct Harness {
    fake: FakeBitbucket,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new(repos: &[&str]) -> Harness {
        let fake = FakeBitbucket::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        for repo in repos {
            fake.add_repository(repo);
            watch_repo(&store, repo).await;
        }
        Harness {
            fake,
            store,
            _dir: dir,
        }
    }

    fn start(&self, options: Options) -> Running {
        let client = BitbucketClient::new(ClientSettings {
            api_url: Url::parse(&self.fake.api_url()).expect("url"),
            oauth_url: Url::parse(&self.fake.oauth_url()).expect("url"),
            credential: options.credential,
            rate_limit_per_hour: options.limit,
            budget_percent: options.percent,
            request_timeout: Duration::from_secs(30),
        })
        .expect("client");
        let poller = Poller::new(
            client,
            self.store.clone(),
            Arc::new(self.fake.clock()),
            PollerSettings {
                base_interval: options.base,
                concurrency: 4,
                sync_interval: options.base,
            },
        );
        let metrics = Metrics::default();
        let poller = poller.with_metrics(metrics.clone());
        let progress = poller.progress();
        let stop = CancellationToken::new();
        let task = tokio::spawn(poller.run(stop.clone()));
        Running {
            stop,
            task,
            progress,
            metrics,
        }
    }

    fn outbox(&self) -> Vec<Activity> {
        self.store
            .activities
            .pending(100_000)
            .expect("pending")
            .into_iter()
            .map(|(_, activity)| activity)
            .collect()
    }

    fn count(&self, kind: &str) -> usize {
        self.outbox()
            .iter()
            .filter(|a| a.kind.name() == kind)
            .count()
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for activity in self.outbox() {
            *counts.entry(activity.kind.name().to_string()).or_default() += 1;
        }
        counts
    }

    /// Waits until `done` holds, re-checking after every finished poll.
    async fn until(&self, running: &mut Running, what: &str, done: impl Fn(&Harness) -> bool) {
        let waited = tokio::time::timeout(WAIT, async {
            while !done(self) {
                running
                    .progress
                    .changed()
                    .await
                    .expect("the poller stopped while a test waited for it");
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "waited {WAIT:?} (simulated) for {what}; outbox: {:?}",
                self.counts()
            );
        }
    }

    /// Waits until the outbox holds at least `n` activities of `kind`.
    async fn until_kind(&self, running: &mut Running, kind: &str, n: usize) {
        self.until(running, &format!("{n} × {kind}"), |h| h.count(kind) >= n)
            .await;
    }

    /// Lets the poller finish `n` more polls (and see that nothing new appears).
    async fn polls(&self, running: &mut Running, n: u64) {
        let target = running.progress.borrow().polls + n;
        let mut progress = running.progress.clone();
        tokio::time::timeout(WAIT, progress.wait_for(|p| p.polls >= target))
            .await
            .expect("the poller keeps polling")
            .expect("the poller is running");
    }

    fn has_cursor(&self, repo: &str) -> bool {
        self.store
            .repositories
            .cursor::<serde_json::Value>(repo)
            .expect("cursor")
            .is_some()
    }
}

async fn watch_repo(store: &Store, repo: &str) {
    let name: RepositoryName = repo.parse().expect("repository name");
    store.repositories.watch(&name).await.expect("watch");
}

async fn stop(running: Running) {
    running.stop.cancel();
    running.task.await.expect("the poller ends cleanly");
}

fn assert_unique_ids(activities: &[Activity]) {
    let mut ids: Vec<&str> = activities.iter().map(|a| a.id.as_str()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "an activity id appears twice");
}

#[tokio::test(start_paused = true)]
async fn the_first_poll_records_a_baseline_and_emits_nothing_from_history() {
    let h = Harness::new(&[]).await;
    let fake = &h.fake;
    fake.add_repository("acme/api");
    fake.push("acme/api", "feature/old", &["Old work"]);
    let pr = fake.open_pull_request("acme/api", "feature/old", "Old change", "ada");
    fake.approve("acme/api", pr, "bob");
    fake.comment("acme/api", pr, "bob", "An old remark", None);
    let pipeline = fake.start_pipeline("acme/api", "main");
    fake.finish_pipeline("acme/api", &pipeline, "FAILED");
    let issue = fake.create_issue("acme/api", "Old bug", "carol");
    fake.comment_issue("acme/api", issue, "ada", "Old note");
    watch_repo(&h.store, "acme/api").await;

    let mut running = h.start(Options::default());
    h.until(&mut running, "the baseline", |h| h.has_cursor("acme/api"))
        .await;
    h.polls(&mut running, 40).await;
    assert!(
        h.outbox().is_empty(),
        "history was reported: {:?}",
        h.counts()
    );

    fake.comment("acme/api", pr, "ada", "A new remark", None);
    h.until_kind(&mut running, "pull_request_commented", 1)
        .await;
    h.polls(&mut running, 20).await;
    let outbox = h.outbox();
    assert_eq!(outbox.len(), 1, "{:?}", h.counts());
    let ActivityKind::PullRequestCommented {
        comment,
        pull_request,
    } = &outbox[0].kind
    else {
        panic!("{outbox:?}");
    };
    assert_eq!(comment.excerpt, "A new remark");
    assert_eq!(pull_request.title, "Old change");
    assert_eq!(outbox[0].repository, "acme/api");
    stop(running).await;
}

#[tokio::test(start_paused = true)]
async fn each_activity_kind_is_detected_exactly_once() {
    let h = Harness::new(&["acme/api"]).await;
    let fake = &h.fake;
    let repo = "acme/api";
    let mut running = h.start(Options::default());
    h.until(&mut running, "the baseline", |h| h.has_cursor(repo))
        .await;

    fake.push(repo, "feature/login", &["Add login form", "Validate input"]);
    h.until_kind(&mut running, "branch_created", 1).await;
    let pr = fake.open_pull_request(repo, "feature/login", "Add login", "ada");
    h.until_kind(&mut running, "pull_request_created", 1).await;
    fake.push_to_pull_request(repo, pr, "Fix typo");
    h.until_kind(&mut running, "pull_request_updated", 1).await;
    h.until_kind(&mut running, "push", 1).await;

    for (n, result, kind) in [
        (1, "FAILED", "pipeline_failed"),
        (2, "SUCCESSFUL", "pipeline_fixed"),
        (3, "STOPPED", "pipeline_stopped"),
        (4, "SUCCESSFUL", "pipeline_succeeded"),
    ] {
        let uuid = fake.start_pipeline(repo, "feature/login");
        h.until_kind(&mut running, "pipeline_started", n).await;
        fake.finish_pipeline(repo, &uuid, result);
        h.until_kind(&mut running, kind, 1).await;
    }

    fake.approve(repo, pr, "bob");
    h.until_kind(&mut running, "pull_request_approved", 1).await;
    fake.unapprove(repo, pr, "bob");
    h.until_kind(&mut running, "pull_request_unapproved", 1)
        .await;
    fake.request_changes(repo, pr, "carol");
    h.until_kind(&mut running, "pull_request_changes_requested", 1)
        .await;
    fake.comment(
        repo,
        pr,
        "carol",
        "Please rename this",
        Some(("src/login.rs", 42)),
    );
    h.until_kind(&mut running, "pull_request_commented", 1)
        .await;
    fake.merge(repo, pr, "ada");
    h.until_kind(&mut running, "pull_request_merged", 1).await;
    h.until_kind(&mut running, "push", 2).await;

    fake.push(repo, "feature/spike", &["Try something"]);
    let spike = fake.open_pull_request(repo, "feature/spike", "Spike", "bob");
    h.until_kind(&mut running, "pull_request_created", 2).await;
    fake.decline(repo, spike, "ada", "Not now");
    h.until_kind(&mut running, "pull_request_declined", 1).await;
    fake.delete_branch(repo, "feature/spike");
    h.until_kind(&mut running, "branch_deleted", 1).await;

    let issue = fake.create_issue(repo, "Login fails on Safari", "carol");
    h.until_kind(&mut running, "issue_created", 1).await;
    fake.update_issue(repo, issue, "open");
    h.until_kind(&mut running, "issue_updated", 1).await;
    fake.comment_issue(repo, issue, "ada", "Cannot reproduce");
    h.until_kind(&mut running, "issue_commented", 1).await;

    // Hours more of polling find nothing new.
    h.polls(&mut running, 300).await;
    let expected: BTreeMap<String, usize> = [
        ("branch_created", 2),
        ("branch_deleted", 1),
        ("issue_commented", 1),
        ("issue_created", 1),
        ("issue_updated", 1),
        ("pipeline_failed", 1),
        ("pipeline_fixed", 1),
        ("pipeline_started", 4),
        ("pipeline_stopped", 1),
        ("pipeline_succeeded", 1),
        ("pull_request_approved", 1),
        ("pull_request_changes_requested", 1),
        ("pull_request_commented", 1),
        ("pull_request_created", 2),
        ("pull_request_declined", 1),
        ("pull_request_merged", 1),
        ("pull_request_unapproved", 1),
        ("pull_request_updated", 1),
        ("push", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(h.counts(), expected);
    let outbox = h.outbox();
    assert_unique_ids(&outbox);
    check_details(&outbox);

    // Every request named its fields and carried the credential.
    for request in fake.requests() {
        assert!(
            request.param("fields").is_some(),
            "no fields= on {}",
            request.path
        );
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
    stop(running).await;
}

/// What a notification needs is in the activities.
fn check_details(outbox: &[Activity]) {
    for activity in outbox {
        match &activity.kind {
            ActivityKind::PullRequestCommented { comment, .. } => {
                assert_eq!(comment.inline_path.as_deref(), Some("src/login.rs"));
                assert_eq!(comment.inline_line, Some(42));
                assert_eq!(
                    activity.actor.as_ref().map(|a| a.display_name.as_str()),
                    Some("carol")
                );
            }
            ActivityKind::PullRequestCreated { pull_request } if pull_request.id == 1 => {
                assert_eq!(pull_request.title, "Add login");
                assert_eq!(pull_request.source_branch.as_deref(), Some("feature/login"));
                assert_eq!(pull_request.destination_branch.as_deref(), Some("main"));
                assert!(
                    pull_request
                        .link
                        .as_deref()
                        .is_some_and(|l| l.ends_with("/pull-requests/1"))
                );
            }
            ActivityKind::Push {
                branch,
                commits,
                truncated,
                ..
            } if branch == "feature/login" => {
                let summaries: Vec<&str> = commits.iter().map(|c| c.summary.as_str()).collect();
                assert_eq!(summaries, vec!["Fix typo"]);
                assert!(!truncated);
            }
            ActivityKind::PipelineFixed { pipeline } => {
                assert_eq!(pipeline.branch.as_deref(), Some("feature/login"));
                assert_eq!(pipeline.build_number, 2);
                assert!(pipeline.duration_secs.is_some());
            }
            ActivityKind::PullRequestDeclined { reason, .. } => {
                assert_eq!(reason.as_deref(), Some("Not now"));
            }
            ActivityKind::PullRequestUnapproved { pull_request } => {
                assert_eq!(
                    pull_request
                        .author
                        .as_ref()
                        .map(|a| a.display_name.as_str()),
                    Some("ada")
                );
            }
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_poller_dropped_mid_poll_and_restarted_gives_no_duplicate_and_no_gap() {
    let h = Harness::new(&["acme/api"]).await;
    let fake = &h.fake;
    let repo = "acme/api";
    fake.push(repo, "feature/a", &["Start"]);
    let pr = fake.open_pull_request(repo, "feature/a", "Feature A", "ada");
    let mut first = h.start(Options::default());
    h.until(&mut first, "the baseline", |h| h.has_cursor(repo))
        .await;
    h.polls(&mut first, 5).await;

    // One poll will read the feed (a new comment), then the branches (a push), then hang
    // listing the pushed commits: the poller is dropped right there.
    fake.inject(Endpoint::Commits, Some(repo), 1, Answer::Hold);
    fake.comment(repo, pr, "bob", "First", None);
    fake.push_to_pull_request(repo, pr, "More work");
    let commits_before = fake.count(Endpoint::Commits);
    fake.wait_for(Endpoint::Commits, commits_before + 1).await;
    first.task.abort();
    let _ = first.task.await;
    assert!(
        h.outbox().is_empty(),
        "nothing is committed mid-poll: {:?}",
        h.counts()
    );
    fake.release();

    // While no poller runs, more happens.
    fake.comment(repo, pr, "carol", "Second", None);
    fake.approve(repo, pr, "carol");

    let mut second = h.start(Options::default());
    h.until(&mut second, "everything once", |h| {
        h.count("pull_request_commented") >= 2
            && h.count("push") >= 1
            && h.count("pull_request_updated") >= 1
            && h.count("pull_request_approved") >= 1
    })
    .await;
    h.polls(&mut second, 100).await;
    let outbox = h.outbox();
    assert_unique_ids(&outbox);
    let expected: BTreeMap<String, usize> = [
        ("pull_request_approved", 1),
        ("pull_request_commented", 2),
        ("pull_request_updated", 1),
        ("push", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(h.counts(), expected);
    stop(second).await;
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_pauses_every_request_with_exponential_backoff_and_retry_after() {
    let h = Harness::new(&["acme/api"]).await;
    let fake = &h.fake;
    let mut running = h.start(Options::default());
    h.until(&mut running, "the baseline", |h| h.has_cursor("acme/api"))
        .await;
    let after_baseline = fake.requests().len();
    fake.inject(
        Endpoint::Feed,
        None,
        3,
        Answer::Status {
            status: 429,
            retry_after: None,
        },
    );
    let feeds = fake.count(Endpoint::Feed);
    fake.wait_for(Endpoint::Feed, feeds + 4).await;
    let requests = fake.requests()[after_baseline..].to_vec();
    let limited: Vec<usize> = (0..requests.len())
        .filter(|i| requests[*i].status == 429)
        .collect();
    assert_eq!(limited.len(), 3);
    for (n, index) in limited.iter().enumerate() {
        let pause = requests[index + 1].at - requests[*index].at;
        let expected = Duration::from_secs(60 << n);
        assert!(
            pause >= expected && pause <= expected.mul_f64(1.25) + SECOND,
            "pause {n} was {pause:?}, expected {expected:?} to 125 %"
        );
    }

    fake.inject(
        Endpoint::Feed,
        None,
        1,
        Answer::Status {
            status: 429,
            retry_after: Some(7),
        },
    );
    let feeds = fake.count(Endpoint::Feed);
    fake.wait_for(Endpoint::Feed, feeds + 2).await;
    let requests = fake.requests();
    let index = requests
        .iter()
        .rposition(|r| r.status == 429)
        .expect("the injected 429");
    let pause = requests[index + 1].at - requests[index].at;
    assert!(pause >= 7 * SECOND && pause < 8 * SECOND, "{pause:?}");
    stop(running).await;
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_never_exceeded_in_any_rolling_hour() {
    let repos: Vec<String> = (0..24).map(|i| format!("ws{}/repo-{i}", i % 2)).collect();
    let names: Vec<&str> = repos.iter().map(String::as_str).collect();
    let h = Harness::new(&names).await;
    let start = Instant::now();
    let running = h.start(Options {
        base: Duration::from_secs(60),
        limit: 100,
        percent: 80,
        ..Options::default()
    });
    // Three simulated hours with a push somewhere every ten minutes.
    for round in 0..18 {
        tokio::time::sleep(Duration::from_secs(600)).await;
        h.fake.push(&repos[round % repos.len()], "main", &["Work"]);
    }
    stop(running).await;
    let times: Vec<Instant> = h
        .fake
        .requests()
        .iter()
        .filter(|r| r.endpoint != Endpoint::Token)
        .map(|r| r.at)
        .collect();
    for (i, first) in times.iter().enumerate() {
        let in_hour = times[i..]
            .iter()
            .take_while(|t| **t < *first + Duration::from_secs(3600))
            .count();
        assert!(
            in_hour <= 80,
            "{in_hour} requests in the hour from request {i}"
        );
    }
    // And the budget is used, not wasted: nearly 80 an hour over three hours.
    assert!(times.len() >= 220, "only {} requests", times.len());
    assert!(*times.last().expect("requests") >= start + Duration::from_secs(3 * 3600 - 600));
}

#[tokio::test(start_paused = true)]
async fn the_feed_is_read_across_pages_and_stops_at_what_was_seen() {
    let h = Harness::new(&["acme/api"]).await;
    let fake = &h.fake;
    let repo = "acme/api";
    fake.push(repo, "feature/a", &["Start"]);
    let pr = fake.open_pull_request(repo, "feature/a", "Feature A", "ada");
    for i in 0..100 {
        fake.comment(repo, pr, "bob", &format!("history {i}"), None);
    }
    // The history is older than the look-back window behind the newest entry.
    tokio::time::sleep(Duration::from_secs(1800)).await;
    fake.comment(repo, pr, "bob", "recent", None);
    let mut running = h.start(Options::default());
    h.until(&mut running, "the baseline", |h| h.has_cursor(repo))
        .await;
    h.polls(&mut running, 5).await;
    let before = fake.requests().len();
    for i in 0..120 {
        fake.comment(repo, pr, "carol", &format!("new {i}"), None);
    }
    h.until_kind(&mut running, "pull_request_commented", 120)
        .await;
    h.polls(&mut running, 20).await;
    assert_eq!(h.count("pull_request_commented"), 120);
    assert_unique_ids(&h.outbox());
    let pages: Vec<String> = fake.requests()[before..]
        .iter()
        .filter(|r| r.endpoint == Endpoint::Feed)
        .map(|r| r.param("page").unwrap_or("1").to_string())
        .collect();
    // The burst is read across three pages, once; later polls stop at the first page,
    // whose entries were all processed.
    assert_eq!(pages[..3], ["1", "2", "3"], "{pages:?}");
    assert!(pages[3..].iter().all(|p| p == "1"), "{pages:?}");
    stop(running).await;
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_one_broken_repository_never_stalls_the_others() {
    let h = Harness::new(&["acme/flaky", "acme/good"]).await;
    let fake = &h.fake;
    watch_repo(&h.store, "acme/gone").await;
    let mut running = h.start(Options::default());
    h.until(&mut running, "the baselines", |h| {
        h.has_cursor("acme/flaky") && h.has_cursor("acme/good")
    })
    .await;
    let broken = h
        .store
        .repositories
        .get("acme/gone")
        .expect("get")
        .expect("watched")
        .broken
        .expect("marked broken");

    fake.inject(
        Endpoint::Branches,
        Some("acme/flaky"),
        6,
        Answer::Status {
            status: 500,
            retry_after: None,
        },
    );
    fake.push("acme/flaky", "main", &["Flaky work"]);
    fake.push("acme/good", "main", &["Good work"]);
    h.until(&mut running, "both pushes", |h| h.count("push") >= 2)
        .await;
    h.polls(&mut running, 200).await;
    assert_eq!(h.count("push"), 2);

    // The broken repository was marked once and is retried rarely, not every poll.
    let still = h
        .store
        .repositories
        .get("acme/gone")
        .expect("get")
        .expect("watched")
        .broken
        .expect("still broken");
    assert_eq!(still.since, broken.since);
    let gone = fake
        .requests()
        .iter()
        .filter(|r| r.repository.as_deref() == Some("acme/gone"))
        .count();
    let good = fake
        .requests()
        .iter()
        .filter(|r| r.repository.as_deref() == Some("acme/good"))
        .count();
    assert!(gone * 10 < good, "gone {gone} vs good {good}");

    // It comes back: the mark is cleared and its baseline taken.
    fake.add_repository("acme/gone");
    // The mark is cleared once the poll that took the baseline has finished.
    h.until(&mut running, "the recovery", |h| {
        h.has_cursor("acme/gone")
            && h.store
                .repositories
                .get("acme/gone")
                .expect("get")
                .expect("watched")
                .broken
                .is_none()
    })
    .await;
    stop(running).await;
}

#[tokio::test(start_paused = true)]
async fn an_oauth_consumer_token_is_renewed_before_expiry_and_after_a_401() {
    let h = Harness::new(&["acme/api"]).await;
    let fake = &h.fake;
    fake.accept_oauth_consumer("consumer-key", "consumer-secret", 600);
    let mut running = h.start(Options {
        base: Duration::from_secs(60),
        credential: BitbucketCredential::OAuthConsumer(OAuthConsumerConfig {
            key: "consumer-key".into(),
            secret: Secret::new("consumer-secret".into()),
        }),
        ..Options::default()
    });
    h.until(&mut running, "the baseline", |h| h.has_cursor("acme/api"))
        .await;
    assert_eq!(fake.tokens_issued(), 1);
    tokio::time::sleep(Duration::from_secs(1000)).await;
    assert!(fake.tokens_issued() >= 2, "{}", fake.tokens_issued());

    fake.revoke_issued_tokens();
    let issued = fake.tokens_issued();
    fake.push("acme/api", "main", &["After revocation"]);
    h.until_kind(&mut running, "push", 1).await;
    assert!(fake.tokens_issued() > issued);
    let api: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint != Endpoint::Token)
        .collect();
    assert!(api.iter().all(|r| {
        r.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer oauth-"))
    }));
    stop(running).await;
}

#[tokio::test(start_paused = true)]
async fn an_api_token_is_sent_with_basic_auth() {
    let h = Harness::new(&["acme/api"]).await;
    h.fake
        .accept(&FakeBitbucket::basic("bot@example.com", "api-token"));
    let mut running = h.start(Options {
        credential: BitbucketCredential::ApiToken {
            email: "bot@example.com".into(),
            token: Secret::new("api-token".into()),
        },
        ..Options::default()
    });
    h.until(&mut running, "the baseline", |h| h.has_cursor("acme/api"))
        .await;
    stop(running).await;
}

#[tokio::test(start_paused = true)]
async fn the_workspace_sweep_finds_a_push_in_a_quiet_repository_within_two_intervals() {
    let h = Harness::new(&["acme/api", "acme/web", "acme/docs"]).await;
    let fake = &h.fake;
    let base = Duration::from_secs(60);
    let mut running = h.start(Options {
        base,
        ..Options::default()
    });
    h.until(&mut running, "the baselines", |h| {
        ["acme/api", "acme/web", "acme/docs"]
            .iter()
            .all(|r| h.has_cursor(r))
    })
    .await;
    for (n, repo) in ["acme/web", "acme/docs", "acme/api"].iter().enumerate() {
        // Quiet for an hour: routine polls slow to a quarter hour.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let pushed_at = Instant::now();
        fake.push(repo, "main", &["Quiet work"]);
        h.until_kind(&mut running, "push", n + 1).await;
        let latency = pushed_at.elapsed();
        assert!(
            latency <= 2 * base + SECOND,
            "push {n} found after {latency:?}"
        );
    }
    assert!(fake.count(Endpoint::Sweep) > 100);
    stop(running).await;
}

/// Requests to `endpoint` for `repo` so far.
fn requests_for(fake: &FakeBitbucket, endpoint: Endpoint, repo: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.endpoint == endpoint && r.repository.as_deref() == Some(repo))
        .count()
}

#[tokio::test(start_paused = true)]
async fn pushes_to_a_pull_requests_branch_do_not_prove_that_the_sweep_reports_pushes() {
    let h = Harness::new(&["acme/api", "acme/web"]).await;
    let fake = &h.fake;
    let base = Duration::from_secs(60);
    let mut running = h.start(Options {
        base,
        ..Options::default()
    });
    h.until(&mut running, "the baselines", |h| {
        h.has_cursor("acme/api") && h.has_cursor("acme/web")
    })
    .await;
    tokio::time::sleep(10 * base).await;
    fake.push("acme/api", "feature", &["Start the feature"]);
    let id = fake.open_pull_request("acme/api", "feature", "Feature", "Ada");
    h.until_kind(&mut running, "pull_request_created", 1).await;
    for n in 0..3 {
        tokio::time::sleep(10 * base).await;
        fake.push_to_pull_request("acme/api", id, &format!("Review fix {n}"));
        h.until_kind(&mut running, "push", n + 1).await;
    }
    // Each push moved `updated_on` and was flagged by the sweep, but each also moved the
    // pull request: the quiet repository's branches are still polled with its feed
    // (every 16 minutes), not at the sweep-trusted rate.
    let before = requests_for(fake, Endpoint::Branches, "acme/web");
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let polled = requests_for(fake, Endpoint::Branches, "acme/web") - before;
    assert!(
        polled >= 6,
        "acme/web's branches were read {polled} times in two hours"
    );
    stop(running).await;
}

/// The sweep's coverage row of `workspace` and `kind`, as `status` shows it.
fn coverage(running: &Running, workspace: &str, kind: &str) -> SweepCoverage {
    running
        .metrics
        .sweep_coverage_rows()
        .into_iter()
        .find(|row| row.workspace == workspace && row.kind == kind)
        .unwrap_or_else(|| panic!("no sweep coverage for {workspace} {kind}"))
}

/// Three repositories of `acme`, baselined, with a pull request open on `acme/api`.
async fn acme_with_a_pull_request(h: &Harness, running: &mut Running, base: Duration) -> u64 {
    h.until(running, "the baselines", |h| {
        ["acme/api", "acme/web", "acme/docs"]
            .iter()
            .all(|r| h.has_cursor(r))
    })
    .await;
    tokio::time::sleep(10 * base).await;
    h.fake.push("acme/api", "feature", &["Start the feature"]);
    let id = h
        .fake
        .open_pull_request("acme/api", "feature", "Feature", "Ada");
    h.until_kind(running, "pull_request_created", 1).await;
    id
}

#[tokio::test(start_paused = true)]
async fn where_the_sweep_flags_pull_request_activity_first_it_decides_and_quiet_feeds_slow_to_hourly()
 {
    let h = Harness::new(&["acme/api", "acme/web", "acme/docs"]).await;
    let fake = &h.fake;
    fake.pull_request_activity_moves_updated_on();
    let base = Duration::from_secs(60);
    let mut running = h.start(Options {
        base,
        ..Options::default()
    });
    let id = acme_with_a_pull_request(&h, &mut running, base).await;
    for n in 0..12 {
        tokio::time::sleep(10 * base).await;
        let commented_at = Instant::now();
        fake.comment("acme/api", id, "Bob", &format!("Looks good {n}"), None);
        h.until_kind(&mut running, "pull_request_commented", n + 1)
            .await;
        let latency = commented_at.elapsed();
        assert!(
            latency <= 2 * base + SECOND,
            "comment {n} found after {latency:?}"
        );
    }
    let pull_requests = coverage(&running, "acme", "pull_requests");
    assert_eq!(pull_requests.mode, "sweep", "{pull_requests:?}");
    assert_eq!(pull_requests.covered, pull_requests.decided);
    assert!(
        running
            .metrics
            .render()
            .contains("bitbucket_slack_sweep_decides{workspace=\"acme\",kind=\"pull_requests\"} 1")
    );
    // The quiet repository's feed is now the hourly safety net, not every 16 minutes.
    let before = requests_for(fake, Endpoint::Feed, "acme/web");
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let polled = requests_for(fake, Endpoint::Feed, "acme/web") - before;
    assert!(
        (2..=4).contains(&polled),
        "acme/web's feed was read {polled} times in three hours"
    );
    // And a comment is still found through the sweep.
    let commented_at = Instant::now();
    fake.comment("acme/api", id, "Bob", "One more thing", None);
    h.until_kind(&mut running, "pull_request_commented", 13)
        .await;
    assert!(commented_at.elapsed() <= 2 * base + SECOND);
    stop(running).await;
}

#[tokio::test(start_paused = true)]
async fn where_the_sweep_misses_pull_request_activity_it_falls_back_to_polling_each_repository() {
    // The fake's default: pull request activity does not move `updated_on`.
    let h = Harness::new(&["acme/api", "acme/web", "acme/docs"]).await;
    let fake = &h.fake;
    let base = Duration::from_secs(60);
    let mut running = h.start(Options {
        base,
        ..Options::default()
    });
    let id = acme_with_a_pull_request(&h, &mut running, base).await;
    for n in 0..12 {
        tokio::time::sleep(10 * base).await;
        fake.comment("acme/api", id, "Bob", &format!("Looks good {n}"), None);
        h.until_kind(&mut running, "pull_request_commented", n + 1)
            .await;
    }
    // Let the last samples' verdicts in.
    tokio::time::sleep(3 * base).await;
    let pull_requests = coverage(&running, "acme", "pull_requests");
    assert_eq!(pull_requests.mode, "fallback", "{pull_requests:?}");
    assert!(pull_requests.decided >= 10, "{pull_requests:?}");
    assert!(pull_requests.covered * 100 < 95 * pull_requests.decided);
    let text = running.metrics.render();
    assert!(
        text.contains("bitbucket_slack_sweep_decides{workspace=\"acme\",kind=\"pull_requests\"} 0"),
        "{text}"
    );
    // The quiet repository's feed keeps its adaptive cadence (every 16 minutes).
    let before = requests_for(fake, Endpoint::Feed, "acme/web");
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let polled = requests_for(fake, Endpoint::Feed, "acme/web") - before;
    assert!(
        polled >= 6,
        "acme/web's feed was read {polled} times in two hours"
    );
    stop(running).await;
}
