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

/// Drafts, reviewers, halted and pull-request pipelines against the faithful fake: a
/// draft is "draft opened" then "ready for review"; reviewers asked at opening and added
/// later are asked once each; a halted pipeline is not started twice, nor hot; a
/// pull-request pipeline fails then is fixed on its source branch.
#[tokio::test(start_paused = true)]
async fn drafts_reviewers_and_halted_or_pull_request_pipelines() {
    let h = Harness::new(&["acme/api"]).await;
    let fake = &h.fake;
    let repo = "acme/api";
    // Open before the daemon watched: its reviewer is history.
    fake.push(repo, "feature/old", &["Old"]);
    let old = fake.open_pull_request_with_reviewers(repo, "feature/old", "Old", "ada", &["bob"]);
    let mut running = h.start(Options::default());
    h.until(&mut running, "the baseline", |h| h.has_cursor(repo))
        .await;

    fake.push(repo, "feature/parser", &["Parser"]);
    let draft = fake.open_draft_pull_request(repo, "feature/parser", "New parser", "ada");
    h.until_kind(&mut running, "pull_request_draft_created", 1)
        .await;
    fake.mark_ready(repo, draft, "ada");
    h.until_kind(&mut running, "pull_request_ready_for_review", 1)
        .await;
    fake.push(repo, "feature/login", &["Login"]);
    let pr = fake.open_pull_request_with_reviewers(repo, "feature/login", "Login", "ada", &["bob"]);
    h.until_kind(&mut running, "pull_request_review_requested", 1)
        .await;
    fake.add_reviewer(repo, pr, "carol", "ada");
    h.until_kind(&mut running, "pull_request_review_requested", 2)
        .await;
    fake.add_reviewer(repo, old, "carol", "bob");
    h.until_kind(&mut running, "pull_request_review_requested", 3)
        .await;

    // Pipelines run after pushes (a push makes the pipeline lane hot).
    fake.push(repo, "main", &["Release"]);
    let halted = fake.start_pipeline(repo, "main");
    h.until_kind(&mut running, "pipeline_started", 1).await;
    fake.pause_pipeline(repo, &halted, true);
    h.polls(&mut running, 20).await;
    fake.resume_pipeline(repo, &halted);
    h.polls(&mut running, 20).await;
    fake.finish_pipeline(repo, &halted, "EXPIRED");
    h.until_kind(&mut running, "pipeline_failed", 1).await;
    fake.push_to_pull_request(repo, pr, "Validate input");
    let failing = fake.start_pull_request_pipeline(repo, pr);
    h.until_kind(&mut running, "pipeline_started", 2).await;
    fake.finish_pipeline(repo, &failing, "FAILED");
    h.until_kind(&mut running, "pipeline_failed", 2).await;
    fake.push_to_pull_request(repo, pr, "Fix validation");
    let fixing = fake.start_pull_request_pipeline(repo, pr);
    h.until_kind(&mut running, "pipeline_started", 3).await;
    fake.finish_pipeline(repo, &fixing, "SUCCESSFUL");
    h.until_kind(&mut running, "pipeline_fixed", 1).await;

    h.polls(&mut running, 300).await;
    let expected: BTreeMap<String, usize> = [
        ("branch_created", 2),
        ("pipeline_failed", 2),
        ("pipeline_fixed", 1),
        ("pipeline_started", 3),
        ("pull_request_created", 1),
        ("pull_request_draft_created", 1),
        ("pull_request_ready_for_review", 1),
        ("pull_request_review_requested", 3),
        ("pull_request_updated", 2),
        // Every moved branch is a push; subscriptions choose which to post.
        ("push", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(h.counts(), expected);
    let outbox = h.outbox();
    assert_unique_ids(&outbox);
    let asked: Vec<(u64, String, Option<String>)> = outbox
        .iter()
        .filter_map(|a| match &a.kind {
            ActivityKind::PullRequestReviewRequested {
                pull_request,
                reviewer,
            } => Some((
                pull_request.id,
                reviewer.display_name.clone(),
                a.actor.as_ref().map(|a| a.display_name.clone()),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        asked,
        vec![
            (pr, "bob".to_string(), Some("ada".to_string())),
            (pr, "carol".to_string(), Some("ada".to_string())),
            (old, "carol".to_string(), Some("bob".to_string())),
        ]
    );
    for activity in &outbox {
        if let ActivityKind::PipelineFixed { pipeline } = &activity.kind {
            assert_eq!(pipeline.branch.as_deref(), Some("feature/login"));
            assert_eq!(pipeline.pull_request, Some(pr));
        }
    }
    stop(running).await;
}

/// The feed's MERGED and DECLINED update entries name who merged or declined as their
/// `author` (they never carry `closed_by`): the activity's actor is that person, not the
/// pull request's author.
#[tokio::test(start_paused = true)]
async fn a_merge_and_a_decline_name_who_merged_and_who_declined() {
    let h = Harness::new(&["acme/api"]).await;
    let fake = &h.fake;
    let repo = "acme/api";
    let mut running = h.start(Options::default());
    h.until(&mut running, "the baseline", |h| h.has_cursor(repo))
        .await;
    fake.push(repo, "feature/a", &["Work"]);
    let merged = fake.open_pull_request(repo, "feature/a", "Merge me", "ada");
    fake.push(repo, "feature/b", &["Other work"]);
    let declined = fake.open_pull_request(repo, "feature/b", "Decline me", "ada");
    h.until_kind(&mut running, "pull_request_created", 2).await;
    fake.merge(repo, merged, "bob");
    fake.decline(repo, declined, "carol", "Not now");
    h.until_kind(&mut running, "pull_request_merged", 1).await;
    h.until_kind(&mut running, "pull_request_declined", 1).await;
    let actor_of = |kind: &str| {
        h.outbox()
            .into_iter()
            .find(|a| a.kind.name() == kind)
            .and_then(|a| a.actor)
            .map(|actor| actor.display_name)
    };
    assert_eq!(actor_of("pull_request_merged").as_deref(), Some("bob"));
    assert_eq!(actor_of("pull_request_declined").as_deref(), Some("carol"));
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

/// A channel's subscription to `repo` with `words` (features and filters) on top of the
/// defaults, stored the way `/bitbucket subscribe` stores it.
async fn subscribe(store: &Store, repo: &str, words: &[&str]) {
    use bitbucket_slack::notify::subscription::{
        Features, Filters, SubscribeWord, Subscription, parse_word,
    };
    let mut features = Features::defaults();
    for word in words {
        match parse_word(word).expect("a feature word") {
            SubscribeWord::Feature(feature) => features.set(&feature, true),
            other => panic!("not a feature: {other:?}"),
        }
    }
    let subscription = Subscription {
        team_id: "T1".into(),
        channel_id: format!("C-{repo}"),
        target: bitbucket_slack::bitbucket::Target::Repository(repo.into()),
        features,
        filters: Filters::default(),
        main_branch: Some("main".into()),
        created_by: "U1".into(),
        created_at: jiff::Timestamp::UNIX_EPOCH,
        paused: None,
        private: Some(false),
        coverage: Default::default(),
    };
    store
        .subscriptions
        .put(&subscription)
        .await
        .expect("subscribe");
}

#[tokio::test(start_paused = true)]
async fn builds_tags_and_deployments_are_polled_only_for_repositories_that_want_them() {
    let h = Harness::new(&["acme/api", "acme/quiet"]).await;
    let fake = &h.fake;
    let repo = "acme/api";
    subscribe(&h.store, repo, &["builds", "tags", "deployments"]).await;
    subscribe(&h.store, "acme/quiet", &["pipelines:all"]).await;
    let production = fake.add_environment(repo, "Production");
    // History: a tag, a failed build and a deployment from before the daemon watched.
    fake.create_tag(repo, "v0.9", "main", "ada");
    let old_head = fake.push(repo, "main", &["Old work"]);
    fake.set_commit_status(repo, &old_head, "jenkins", "FAILED");
    let old = fake.start_deployment(repo, &production, "ada");
    fake.finish_deployment(repo, &old, "FAILED");
    let mut running = h.start(Options::default());
    h.until(&mut running, "the baselines", |h| {
        h.has_cursor(repo) && h.has_cursor("acme/quiet")
    })
    .await;
    // The first read of the tags records them (history).
    h.until(&mut running, "the first tag read", |h| {
        let cursor = h.store.repositories.cursor::<serde_json::Value>(repo);
        cursor
            .expect("cursor")
            .is_some_and(|c| !c["tags"].is_null())
    })
    .await;

    // A failed external build on main, then the next head fixes it.
    let head = fake.push(repo, "main", &["Break the build"]);
    fake.set_commit_status(repo, &head, "jenkins", "INPROGRESS");
    h.until_kind(&mut running, "build_started", 1).await;
    fake.set_commit_status(repo, &head, "jenkins", "FAILED");
    h.until_kind(&mut running, "build_failed", 1).await;
    let head = fake.push(repo, "main", &["Fix the build"]);
    fake.set_commit_status(repo, &head, "jenkins", "SUCCESSFUL");
    h.until_kind(&mut running, "build_fixed", 1).await;

    // A pull request's new head fails: the build names the pull request.
    fake.push(repo, "feature/login", &["Add login"]);
    let pr = fake.open_pull_request(repo, "feature/login", "Add login", "ada");
    h.until_kind(&mut running, "pull_request_created", 1).await;
    h.until_kind(&mut running, "branch_created", 1).await;
    let pr_head = fake.push_to_pull_request(repo, pr, "Login form");
    fake.set_commit_status(repo, &pr_head, "jenkins", "FAILED");
    h.until_kind(&mut running, "build_failed", 2).await;

    // Tags created and deleted.
    fake.create_tag(repo, "v1.0", "main", "grace");
    h.until_kind(&mut running, "tag_created", 1).await;
    fake.delete_tag(repo, "v0.9");
    h.until_kind(&mut running, "tag_deleted", 1).await;

    // Deployments run inside pipelines: started, then succeeded; another one fails.
    let pipeline = fake.start_pipeline(repo, "main");
    let deployment = fake.start_deployment(repo, &production, "grace");
    h.until_kind(&mut running, "deployment_started", 1).await;
    fake.finish_deployment(repo, &deployment, "SUCCESSFUL");
    fake.finish_pipeline(repo, &pipeline, "SUCCESSFUL");
    h.until_kind(&mut running, "deployment_succeeded", 1).await;
    let pipeline = fake.start_pipeline(repo, "main");
    let deployment = fake.start_deployment(repo, &production, "grace");
    h.until_kind(&mut running, "deployment_started", 2).await;
    fake.finish_deployment(repo, &deployment, "FAILED");
    fake.finish_pipeline(repo, &pipeline, "FAILED");
    h.until_kind(&mut running, "deployment_failed", 1).await;

    // The quiet repository has pushes and a tag, but nobody wants its tags or builds.
    fake.push("acme/quiet", "main", &["Quiet work"]);
    fake.create_tag("acme/quiet", "v1", "main", "ada");
    h.until(&mut running, "the quiet push", |h| {
        h.outbox().iter().any(|a| a.repository == "acme/quiet")
    })
    .await;

    // Hours more of polling find nothing new.
    h.polls(&mut running, 300).await;
    let expected: BTreeMap<String, usize> = [
        ("branch_created", 1),
        ("build_failed", 2),
        ("build_fixed", 1),
        ("build_started", 1),
        ("deployment_failed", 1),
        ("deployment_started", 2),
        ("deployment_succeeded", 1),
        ("pipeline_failed", 1),
        ("pipeline_started", 2),
        ("pipeline_succeeded", 1),
        ("pull_request_created", 1),
        ("pull_request_updated", 1),
        ("push", 4),
        ("tag_created", 1),
        ("tag_deleted", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(h.counts(), expected);
    let outbox = h.outbox();
    assert_unique_ids(&outbox);
    for activity in &outbox {
        match &activity.kind {
            ActivityKind::BuildFailed { build } if build.pull_request.is_some() => {
                let pull_request = build.pull_request.as_ref().expect("a pull request");
                assert_eq!(pull_request.id, pr);
                assert_eq!(pull_request.title, "Add login");
                assert_eq!(build.commit, pr_head);
                assert_eq!(build.branch.as_deref(), Some("feature/login"));
            }
            ActivityKind::BuildFixed { build } => {
                assert_eq!(build.branch.as_deref(), Some("main"));
                assert_eq!(build.key, "jenkins");
                assert!(build.url.is_some());
            }
            ActivityKind::DeploymentStarted { deployment } => {
                assert_eq!(deployment.environment, "Production");
                assert_eq!(
                    activity.actor.as_ref().map(|a| a.display_name.as_str()),
                    Some("grace")
                );
            }
            ActivityKind::TagCreated { tag, .. } => assert_eq!(tag, "v1.0"),
            _ => {}
        }
    }
    let requests = fake.requests();
    let extra = [
        Endpoint::CommitStatuses,
        Endpoint::Tags,
        Endpoint::Deployments,
        Endpoint::Environments,
    ];
    let quiet: Vec<&str> = requests
        .iter()
        .filter(|r| r.repository.as_deref() == Some("acme/quiet"))
        .filter(|r| extra.contains(&r.endpoint))
        .map(|r| r.path.as_str())
        .collect();
    assert!(quiet.is_empty(), "requests nobody wanted: {quiet:?}");
    assert_eq!(
        fake.count(Endpoint::Environments),
        1,
        "names are remembered"
    );
    for request in requests.iter().filter(|r| extra.contains(&r.endpoint)) {
        assert!(
            request.param("fields").is_some(),
            "no fields= on {}",
            request.path
        );
    }
    stop(running).await;
}

/// The fake's `fields=` (tests/support/fake_bitbucket/fields.rs), rule by rule. Pure; run
/// once, in this binary only.
mod fake_fields {
    use super::support::fake_bitbucket::fields::apply;
    use serde_json::{Value, json};

    fn page() -> Value {
        json!({
            "pagelen": 10, "size": 2, "page": 1, "next": "http://next",
            "values": [
                {"id": 1, "title": "One", "user": {"display_name": "Ada", "uuid": "{a}", "links": {"html": {"href": "h"}, "self": {"href": "s"}}}, "reviewers": [{"display_name": "Bob"}]},
                {"id": 2, "title": "Two", "user": null, "reviewers": []}
            ]
        })
    }

    #[test]
    fn no_parameter_serves_the_default_representation() {
        assert_eq!(apply(page(), None, &[]), page());
    }

    #[test]
    fn a_whitelist_keeps_only_what_it_names_at_every_depth_through_arrays() {
        let got = apply(page(), Some("values.id,values.user.display_name"), &[]);
        assert_eq!(
            got,
            json!({"values": [
                {"id": 1, "user": {"display_name": "Ada"}},
                {"id": 2, "user": null}
            ]})
        );
    }

    #[test]
    fn next_page_pagelen_and_size_are_ordinary_keys() {
        let got = apply(page(), Some("next,values.id"), &[]);
        assert_eq!(
            got,
            json!({"next": "http://next", "values": [{"id": 1}, {"id": 2}]})
        );
    }

    #[test]
    fn a_star_keeps_every_key_of_its_level_with_its_whole_sub_tree() {
        let got = apply(page(), Some("values.user.*"), &[]);
        assert_eq!(
            got["values"][0],
            json!({"user": page()["values"][0]["user"]})
        );
        let got = apply(page(), Some("values.*"), &[]);
        assert_eq!(got, json!({"values": page()["values"]}));
    }

    #[test]
    fn a_minus_removes_a_path_from_the_default_representation() {
        let got = apply(page(), Some("-values.user.links,-size"), &[]);
        let mut want = page();
        want.as_object_mut().expect("object").remove("size");
        want["values"][0]["user"]
            .as_object_mut()
            .expect("user")
            .remove("links");
        assert_eq!(got, want);
        // `-links.*` empties the object and keeps it, as in the API description.
        let got = apply(page(), Some("-values.user.links.*"), &[]);
        assert_eq!(got["values"][0]["user"]["links"], json!({}));
    }

    #[test]
    fn a_minus_applies_within_a_whitelist() {
        let got = apply(page(), Some("values.user,-values.user.links"), &[]);
        assert_eq!(
            got["values"][0],
            json!({"user": {"display_name": "Ada", "uuid": "{a}"}})
        );
    }

    #[test]
    fn the_last_entry_covering_a_key_decides() {
        let got = apply(page(), Some("-*,+pagelen"), &[]);
        assert_eq!(got, json!({"pagelen": 10}));
    }

    #[test]
    fn a_plus_is_a_no_op_on_default_fields_and_brings_in_hidden_ones() {
        let hidden = ["values.reviewers"];
        let mut without_reviewers = page();
        for value in without_reviewers["values"].as_array_mut().expect("values") {
            value.as_object_mut().expect("value").remove("reviewers");
        }
        assert_eq!(apply(page(), None, &hidden), without_reviewers);
        assert_eq!(
            apply(page(), Some("+values.title"), &hidden),
            without_reviewers
        );
        assert_eq!(apply(page(), Some("+values.reviewers"), &hidden), page());
        // A whitelist brings a hidden field in only by naming it, not through an ancestor.
        let got = apply(page(), Some("values"), &hidden);
        assert_eq!(got, json!({"values": without_reviewers["values"]}));
        let got = apply(
            page(),
            Some("values.id,values.reviewers.display_name"),
            &hidden,
        );
        assert_eq!(
            got,
            json!({"values": [
                {"id": 1, "reviewers": [{"display_name": "Bob"}]},
                {"id": 2, "reviewers": []}
            ]})
        );
    }

    #[test]
    fn unknown_paths_are_ignored_without_an_error() {
        assert_eq!(
            apply(page(), Some("+values.nothing,-nowhere.at.all"), &[]),
            page()
        );
        assert_eq!(
            apply(page(), Some("values.id,values.nothing.deeper"), &[]),
            json!({"values": [{"id": 1}, {"id": 2}]})
        );
        assert_eq!(apply(page(), Some("nothing"), &[]), json!({}));
    }
}

/// The fake serves what Bitbucket Cloud serves (the API description's shapes), over HTTP.
mod fake_shapes {
    use super::support::fake_bitbucket::{CHANGES_REQUEST_KEY, FakeBitbucket, TOKEN};
    use serde_json::{Value, json};

    async fn get(fake: &FakeBitbucket, path_and_query: &str) -> (u16, Value) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("{}{path_and_query}", fake.api_url());
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("fake bitbucket answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    async fn ok(fake: &FakeBitbucket, path_and_query: &str) -> Value {
        let (status, body) = get(fake, path_and_query).await;
        assert_eq!(status, 200, "{path_and_query}: {body}");
        body
    }

    /// The newest feed entry of `acme/api`.
    async fn newest_entry(fake: &FakeBitbucket) -> Value {
        ok(fake, "repositories/acme/api/pullrequests/activity").await["values"][0].clone()
    }

    async fn fake_with_pull_request() -> (FakeBitbucket, u64) {
        let fake = FakeBitbucket::start().await;
        fake.add_repository("acme/api");
        fake.push("acme/api", "feature/a", &["Work"]);
        let pr = fake.open_pull_request("acme/api", "feature/a", "Change", "ada");
        (fake, pr)
    }

    #[tokio::test]
    async fn accounts_have_their_kind_and_deleted_ones_are_null() {
        let (fake, pr) = fake_with_pull_request().await;
        fake.comment("acme/api", pr, "bob", "Hi", None);
        fake.approve("acme/api", pr, "ci-bot");
        let entry = newest_entry(&fake).await;
        let user = &entry["approval"]["user"];
        assert_eq!(user["type"], "user");
        for key in ["display_name", "uuid", "account_id", "nickname", "links"] {
            assert!(user.get(key).is_some(), "{key} missing from {user}");
        }
        fake.set_account_kind("ci-bot", "app_user");
        let user = newest_entry(&fake).await["approval"]["user"].clone();
        assert_eq!(user["type"], "app_user");
        assert!(user.get("nickname").is_none() && user.get("account_id").is_some());
        fake.set_account_kind("ci-bot", "team");
        let user = newest_entry(&fake).await["approval"]["user"].clone();
        assert_eq!(user["type"], "team");
        assert!(user.get("nickname").is_none() && user.get("account_id").is_none());

        fake.delete_account("bob");
        let feed = ok(&fake, "repositories/acme/api/pullrequests/activity").await;
        assert_eq!(feed["values"][1]["comment"]["user"], Value::Null);
        let detail = ok(&fake, &format!("repositories/acme/api/pullrequests/{pr}")).await;
        let bob = &detail["participants"][0];
        assert_eq!(
            (&bob["user"], &bob["role"]),
            (&Value::Null, &json!("PARTICIPANT"))
        );
    }

    #[tokio::test]
    async fn pull_requests_carry_short_hashes_and_commits_full_ones() {
        let (fake, pr) = fake_with_pull_request().await;
        let head = fake.push_to_pull_request("acme/api", pr, "More");
        let short = &head[..12];
        let list = ok(&fake, "repositories/acme/api/pullrequests").await;
        let detail = ok(&fake, &format!("repositories/acme/api/pullrequests/{pr}")).await;
        let entry = newest_entry(&fake).await;
        for source in [
            &list["values"][0]["source"],
            &detail["source"],
            &entry["update"]["source"],
        ] {
            assert_eq!(source["commit"]["hash"], short);
        }
        for destination in [&detail["destination"], &entry["update"]["destination"]] {
            assert_eq!(
                destination["commit"]["hash"].as_str().map(str::len),
                Some(12)
            );
        }
        let branches = ok(&fake, "repositories/acme/api/refs/branches").await;
        assert_eq!(branches["values"][0]["target"]["hash"], head.as_str());
        // A hash lookup accepts a prefix.
        let commits = ok(&fake, &format!("repositories/acme/api/commits/{short}")).await;
        assert_eq!(commits["values"][0]["hash"], head.as_str());
    }

    #[tokio::test]
    async fn merges_and_declines_name_their_actor_as_the_update_author_never_closed_by() {
        let (fake, pr) = fake_with_pull_request().await;
        fake.merge("acme/api", pr, "bob");
        let update = newest_entry(&fake).await["update"].clone();
        assert_eq!(update["state"], "MERGED");
        assert_eq!(update["author"]["display_name"], "bob");
        assert!(update.get("closed_by").is_none(), "{update}");
        let detail = ok(&fake, &format!("repositories/acme/api/pullrequests/{pr}")).await;
        assert_eq!(detail["closed_by"]["display_name"], "bob");
        assert_eq!(detail["author"]["display_name"], "ada");

        fake.push("acme/api", "feature/b", &["Other"]);
        let other = fake.open_pull_request("acme/api", "feature/b", "Other", "ada");
        fake.decline("acme/api", other, "carol", "No");
        let update = newest_entry(&fake).await["update"].clone();
        assert_eq!(
            (
                &update["state"],
                &update["author"]["display_name"],
                &update["reason"]
            ),
            (&json!("DECLINED"), &json!("carol"), &json!("No"))
        );
        assert!(update.get("closed_by").is_none());
        let list = ok(&fake, "repositories/acme/api/pullrequests?state=DECLINED").await;
        assert_eq!(list["values"][0]["closed_by"]["display_name"], "carol");
    }

    #[tokio::test]
    async fn drafts_become_ready_and_pull_requests_queue_and_supersede() {
        let fake = FakeBitbucket::start().await;
        fake.add_repository("acme/api");
        fake.push("acme/api", "feature/a", &["Work"]);
        let pr = fake.open_draft_pull_request("acme/api", "feature/a", "Draft", "ada");
        let draft = newest_entry(&fake).await["update"].clone();
        assert_eq!(draft["state"], "DRAFT");
        let detail = ok(&fake, &format!("repositories/acme/api/pullrequests/{pr}")).await;
        assert_eq!(
            (&detail["state"], &detail["draft"]),
            (&json!("DRAFT"), &json!(true))
        );
        fake.mark_ready("acme/api", pr, "ada");
        let ready = newest_entry(&fake).await["update"].clone();
        assert_eq!(ready["state"], "OPEN");
        assert_eq!(ready["source"]["commit"], draft["source"]["commit"]);
        let detail = ok(&fake, &format!("repositories/acme/api/pullrequests/{pr}")).await;
        assert_eq!(
            (&detail["state"], &detail["draft"]),
            (&json!("OPEN"), &json!(false))
        );
        fake.queue_pull_request("acme/api", pr);
        assert_eq!(newest_entry(&fake).await["update"]["state"], "QUEUED");
        fake.supersede("acme/api", pr, "bob");
        assert_eq!(newest_entry(&fake).await["update"]["state"], "SUPERSEDED");
    }

    #[tokio::test]
    async fn reviewers_are_on_the_detail_and_hidden_on_the_collection_unless_asked() {
        let fake = FakeBitbucket::start().await;
        fake.add_repository("acme/api");
        fake.push("acme/api", "feature/a", &["Work"]);
        let pr = fake.open_pull_request_with_reviewers(
            "acme/api",
            "feature/a",
            "Change",
            "ada",
            &["bob"],
        );
        fake.add_reviewer("acme/api", pr, "carol", "ada");
        let entry = newest_entry(&fake).await;
        let update = &entry["update"];
        assert_eq!(
            (&update["state"], &update["author"]["display_name"]),
            (&json!("OPEN"), &json!("ada"))
        );
        assert!(update.get("reviewers").is_none(), "{update}");
        fake.request_changes("acme/api", pr, "bob");
        assert!(newest_entry(&fake).await.get(CHANGES_REQUEST_KEY).is_some());

        let detail = ok(&fake, &format!("repositories/acme/api/pullrequests/{pr}")).await;
        let reviewers: Vec<&Value> = detail["reviewers"]
            .as_array()
            .expect("reviewers")
            .iter()
            .map(|r| &r["display_name"])
            .collect();
        assert_eq!(reviewers, [&json!("bob"), &json!("carol")]);
        let bob = &detail["participants"][0];
        assert_eq!(bob["role"], "REVIEWER");
        assert_eq!(bob["state"], "changes_requested");
        assert_eq!(bob["approved"], false);
        assert!(bob["participated_on"].is_string());
        assert_eq!(detail["participants"][1]["participated_on"], Value::Null);

        let list = ok(&fake, "repositories/acme/api/pullrequests").await;
        assert!(list["values"][0].get("reviewers").is_none());
        assert!(list["values"][0].get("participants").is_none());
        let list = ok(
            &fake,
            "repositories/acme/api/pullrequests?fields=%2Bvalues.reviewers",
        )
        .await;
        assert_eq!(
            list["values"][0]["reviewers"].as_array().map(Vec::len),
            Some(2)
        );
        assert!(list["values"][0].get("participants").is_none());
        let list = ok(
            &fake,
            "repositories/acme/api/pullrequests?fields=values.id,values.participants.role",
        )
        .await;
        assert_eq!(
            list["values"][0],
            json!({"id": pr, "participants": [{"role": "REVIEWER"}, {"role": "REVIEWER"}]})
        );
    }

    #[tokio::test]
    async fn pipelines_have_states_stages_results_and_targets_as_described() {
        let (fake, pr) = fake_with_pull_request().await;
        let pending = fake.pending_pipeline("acme/api", "main");
        let branch = fake.start_pipeline("acme/api", "main");
        let pull = fake.start_pull_request_pipeline("acme/api", pr);
        let state_of = |list: &Value, uuid: &str| {
            list["values"]
                .as_array()
                .expect("values")
                .iter()
                .find(|p| p["uuid"] == uuid)
                .expect("pipeline")
                .clone()
        };
        let list = ok(&fake, "repositories/acme/api/pipelines").await;
        assert_eq!(
            state_of(&list, &pending)["state"],
            json!({"name": "PENDING", "type": "pipeline_state_pending"})
        );
        let running = state_of(&list, &branch);
        assert_eq!(running["state"]["name"], "IN_PROGRESS");
        assert_eq!(running["state"]["stage"]["name"], "RUNNING");
        assert_eq!(running["target"]["type"], "pipeline_ref_target");
        assert_eq!(running["target"]["ref_type"], "branch");
        assert_eq!(running["target"]["ref_name"], "main");
        assert_eq!(
            running["target"]["commit"]["hash"].as_str().map(str::len),
            Some(40)
        );
        let target = state_of(&list, &pull)["target"].clone();
        assert_eq!(target["type"], "pipeline_pullrequest_target");
        assert_eq!(
            (&target["source"], &target["destination"]),
            (&json!("feature/a"), &json!("main"))
        );
        assert_eq!(target["pullrequest"]["id"], pr);
        assert!(target.get("ref_name").is_none());

        fake.pause_pipeline("acme/api", &branch, false);
        fake.pause_pipeline("acme/api", &pull, true);
        let list = ok(&fake, "repositories/acme/api/pipelines").await;
        assert_eq!(state_of(&list, &branch)["state"]["stage"]["name"], "PAUSED");
        assert_eq!(state_of(&list, &pull)["state"]["stage"]["name"], "HALTED");
        assert_eq!(state_of(&list, &pull)["state"]["name"], "IN_PROGRESS");
        fake.resume_pipeline("acme/api", &branch);
        fake.finish_pipeline("acme/api", &pull, "EXPIRED");
        let list = ok(&fake, "repositories/acme/api/pipelines").await;
        assert_eq!(
            state_of(&list, &branch)["state"]["stage"]["name"],
            "RUNNING"
        );
        let expired = state_of(&list, &pull);
        assert_eq!(expired["state"]["name"], "COMPLETED");
        assert_eq!(expired["state"]["result"]["name"], "EXPIRED");
        assert!(expired["completed_on"].is_string());
    }

    #[tokio::test]
    async fn an_issue_edit_adds_a_change_and_a_comment_without_text() {
        let fake = FakeBitbucket::start().await;
        fake.add_repository("acme/api");
        let issue = fake.create_issue("acme/api", "Bug", "carol");
        fake.comment_issue("acme/api", issue, "ada", "Seen it");
        fake.update_issue("acme/api", issue, "open");
        let comments = ok(
            &fake,
            &format!("repositories/acme/api/issues/{issue}/comments"),
        )
        .await;
        let edit = &comments["values"][0]["content"];
        assert_eq!(
            (&edit["raw"], &edit["markup"], &edit["html"]),
            (&Value::Null, &json!("markdown"), &json!(""))
        );
        assert_eq!(comments["values"][1]["content"]["raw"], "Seen it");
        let changes = ok(
            &fake,
            &format!("repositories/acme/api/issues/{issue}/changes"),
        )
        .await;
        assert_eq!(
            changes["values"][0]["changes"]["state"],
            json!({"old": "new", "new": "open"})
        );
    }

    #[tokio::test]
    async fn bbql_datetimes_are_unquoted_and_a_quoted_one_is_refused() {
        let fake = FakeBitbucket::start().await;
        fake.add_repository("acme/api");
        fake.create_issue("acme/api", "Bug", "carol");
        for q in [
            "updated_on%3E2026-01-01T00:00:00%2B00:00",
            "updated_on%3E2026-01-01T00:00:00.250000%2B00:00",
        ] {
            let issues = ok(&fake, &format!("repositories/acme/api/issues?q={q}")).await;
            assert_eq!(issues["values"].as_array().map(Vec::len), Some(1), "{q}");
            let later = q.replace("2026", "2027");
            let issues = ok(&fake, &format!("repositories/acme/api/issues?q={later}")).await;
            assert_eq!(
                issues["values"].as_array().map(Vec::len),
                Some(0),
                "{later}"
            );
        }
        let (status, body) = get(
            &fake,
            "repositories/acme?q=updated_on%3E%222026-01-01T00:00:00%2B00:00%22",
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["type"], "error");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
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
