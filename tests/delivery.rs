//! The Slack outbox drained against the fake Slack: exactly once, threaded, parent
//! updated on merge, paused (and the subscriber told) on a channel Slack refuses, 429s
//! waited out, dead letters after repeated failures, and a restart resumes the queue.
//! Held notifications are parked when queued, cost nothing while held, come back (or as
//! a digest) when released, and a hold that starts after queueing still never posts.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bitbucket_slack::app::installations::Installer;
use bitbucket_slack::bitbucket::Target;
use bitbucket_slack::bitbucket::{Activity, ActivityKind, Actor, PullRequestRef};
use bitbucket_slack::clock::{Clock, ManualClock};
use bitbucket_slack::config::Secret;
use bitbucket_slack::metrics::Metrics;
use bitbucket_slack::notify::subscription::{Features, Filters, Subscription};
use bitbucket_slack::notify::{render, route};
use bitbucket_slack::slack::delivery::{Deliverer, DeliverySettings};
use bitbucket_slack::slack::web::SlackWeb;
use bitbucket_slack::store::{
    InstallSource, Installation, InstallationState, NewDelivery, ParkReason, Store,
};
use jiff::Timestamp;
use support::fake_slack::{FakeSlack, RecordedCall};
use support::harness::install_configured_bot;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

struct Outbox {
    slack: FakeSlack,
    store: Store,
    clock: ManualClock,
    wake: Arc<Notify>,
    unpark: Arc<Notify>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

fn pull_request() -> PullRequestRef {
    PullRequestRef {
        id: 7,
        title: "Add retries".into(),
        link: Some("https://bitbucket.org/acme/api/pull-requests/7".into()),
        author: Some(Actor {
            display_name: "Ada Lovelace".into(),
            uuid: Some("{ada}".into()),
        }),
        source_branch: Some("feature/retries".into()),
        destination_branch: Some("main".into()),
        reviewers: Vec::new(),
    }
}

/// Pull request #7's `created`, `approved` or `merged` activity.
fn pull_request_activity(name: &str) -> Activity {
    let pull_request = pull_request();
    let kind = match name {
        "created" => ActivityKind::PullRequestCreated { pull_request },
        "approved" => ActivityKind::PullRequestApproved { pull_request },
        "merged" => ActivityKind::PullRequestMerged { pull_request },
        other => panic!("no pull request activity named {other}"),
    };
    activity(name, kind)
}

fn activity(name: &str, kind: ActivityKind) -> Activity {
    Activity {
        id: format!("acme/api:pr:7:{name}"),
        repository: "acme/api".into(),
        occurred_at: Timestamp::from_second(1_800_000_000).expect("valid"),
        actor: Some(Actor {
            display_name: "Grace Hopper".into(),
            uuid: Some("{grace}".into()),
        }),
        link: None,
        kind,
    }
}

fn subscription(channel: &str, words: Features) -> Subscription {
    Subscription {
        team_id: "T0FAKE".into(),
        channel_id: channel.into(),
        target: Target::Repository("acme/api".into()),
        features: words,
        filters: Filters::default(),
        main_branch: Some("main".into()),
        created_by: "U0SUBSCRIBER".into(),
        created_at: Timestamp::UNIX_EPOCH,
        paused: None,
        private: Some(false),
        coverage: Default::default(),
    }
}

fn all_pr_features() -> Features {
    let mut features = Features::defaults();
    features.reviews = true;
    features.comments = true;
    features
}

/// One plain, unthreaded message for `channel` of T0FAKE.
fn text_delivery(channel: &str, text: &str) -> NewDelivery {
    let mut notification = render(&pull_request_activity("created"), &|_| None);
    notification.message = bitbucket_slack::message::Message::text(text);
    notification.thread_key = None;
    notification.parent_update = None;
    NewDelivery {
        team_id: "T0FAKE".into(),
        channel_id: channel.into(),
        activity_id: format!("text:{channel}:{text}"),
        notification,
    }
}

/// Installs T0FAKE straight into a store the deliverer has not opened yet (as the daemon
/// found it at its last run), so what is queued there is queued, not parked.
async fn installed_before(store: &Store) {
    let at = Timestamp::from_second(1_700_000_000).expect("valid");
    store
        .installations
        .upsert(Installation {
            team_id: "T0FAKE".into(),
            team_name: "Fake Team".into(),
            enterprise_id: None,
            bot_user_id: "U0BOT".into(),
            bot_id: None,
            app_id: None,
            bot_token: Some(Secret::new("xoxb-delivery-bot".into())),
            scopes: Vec::new(),
            installer_user_id: None,
            installed_at: at,
            updated_at: at,
            state: InstallationState::Active,
            source: InstallSource::ConfiguredToken,
        })
        .await
        .expect("install T0FAKE");
}

/// Releases T0FAKE's hold as the permission upgrade does: its held messages replaced by
/// one digest per channel listing them, or (without digests) put back in their queues.
async fn release(store: &Store, now: Timestamp, digest: bool) -> usize {
    let held = store.campaigns.held_deliveries("T0FAKE").expect("held");
    let mut by_channel: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for delivery in &held {
        by_channel
            .entry(delivery.channel_id.clone())
            .or_default()
            .push(delivery.notification.message.text.clone());
    }
    let (replaced, digests): (Vec<u64>, Vec<NewDelivery>) = if digest {
        (
            held.iter().map(|delivery| delivery.id).collect(),
            by_channel
                .into_iter()
                .map(|(channel, texts)| {
                    text_delivery(&channel, &format!("digest: {}", texts.join(" + ")))
                })
                .collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    store
        .campaigns
        .release_with_digests("T0FAKE", &replaced, digests, now)
        .await
        .expect("release")
}

async fn start_on(slack: FakeSlack, dir: tempfile::TempDir) -> Outbox {
    start_with_timeout(slack, dir, Duration::from_secs(30)).await
}

/// A deliverer whose Slack calls give up after `timeout`.
async fn start_with_timeout(slack: FakeSlack, dir: tempfile::TempDir, timeout: Duration) -> Outbox {
    let store = Store::open(dir.path()).expect("store");
    let clock = ManualClock::new(Timestamp::from_second(1_800_000_000).expect("valid"));
    let web = SlackWeb::with_timeout(&url::Url::parse(&slack.api_url()).expect("url"), timeout)
        .expect("web");
    install_configured_bot(&web, &store, &clock, "xoxb-delivery-bot").await;
    let wake = Arc::new(Notify::new());
    let unpark = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let deliverer = Deliverer {
        web,
        store: store.clone(),
        clock: Arc::new(clock.clone()),
        settings: DeliverySettings {
            max_attempts: 2,
            channel_interval: Duration::from_millis(20),
            channel_burst: 3,
            idle_wait: Duration::from_millis(50),
        },
        metrics: Metrics::default(),
        wake: wake.clone(),
        unpark: unpark.clone(),
        claims: Arc::new(bitbucket_slack::slack::delivery::AllChannels),
    };
    let task = tokio::spawn(deliverer.run(stop.clone()));
    Outbox {
        slack,
        store,
        clock,
        wake,
        unpark,
        stop,
        task,
        dir,
    }
}

async fn start() -> Outbox {
    start_on(
        FakeSlack::start().await,
        tempfile::tempdir().expect("tempdir"),
    )
    .await
}

impl Outbox {
    /// Routes `activity` like the router does and enqueues what it decides.
    async fn enqueue(&self, activity: &Activity, subscriptions: &[Subscription]) {
        let notification = render(activity, &|_| None);
        let deliveries = route(activity, subscriptions)
            .into_iter()
            .map(|(team_id, channel_id)| NewDelivery {
                team_id,
                channel_id,
                activity_id: activity.id.clone(),
                notification: notification.clone(),
            })
            .collect();
        self.store
            .deliveries
            .enqueue(deliveries, self.clock.now())
            .await
            .expect("enqueue");
        self.wake.notify_one();
    }

    /// Enqueues one plain message for `channel`.
    async fn enqueue_text(&self, channel: &str, text: &str) {
        self.store
            .deliveries
            .enqueue(vec![text_delivery(channel, text)], self.clock.now())
            .await
            .expect("enqueue");
        self.wake.notify_one();
    }

    async fn posts(&self, count: usize) -> Vec<RecordedCall> {
        self.slack.wait_for_calls("chat.postMessage", count).await
    }

    /// Waits (without sleeping: the deliverer runs between checks) until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&Store) -> bool) {
        for _ in 0..1_000_000 {
            if done(&self.store) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("gave up waiting until {what}");
    }

    async fn rescheduled(&self, reason: &str) {
        self.until("the delivery is rescheduled", |store| {
            let pending = store.deliveries.pending().expect("read the outbox");
            pending
                .iter()
                .any(|d| d.last_error.as_deref() == Some(reason))
        })
        .await;
    }

    /// Stops the deliverer; it finishes (and records) a post in progress first, so the
    /// store is settled when this returns.
    async fn stop(self) -> Stopped {
        self.stop.cancel();
        self.task.await.expect("deliverer");
        Stopped {
            slack: self.slack,
            store: self.store,
            dir: self.dir,
        }
    }
}

struct Stopped {
    slack: FakeSlack,
    store: Store,
    dir: tempfile::TempDir,
}

#[tokio::test]
async fn a_pull_request_threads_and_merge_updates_the_parent() {
    let outbox = start().await;
    let subs = vec![subscription("C1", all_pr_features())];
    outbox
        .enqueue(&pull_request_activity("created"), &subs)
        .await;
    let parent = outbox.posts(1).await[0].json();
    assert_eq!(parent["channel"], "C1");
    assert!(
        parent["text"]
            .as_str()
            .unwrap_or("")
            .contains("#7 Add retries"),
        "{parent}"
    );
    assert!(parent.get("thread_ts").is_none());
    let parent = |store: &Store| {
        store
            .deliveries
            .thread_parent("T0FAKE", "C1", "pr:acme/api:7")
            .expect("read")
    };
    outbox
        .until("the parent is recorded", |store| parent(store).is_some())
        .await;
    let parent_ts = parent(&outbox.store).expect("recorded");

    outbox
        .enqueue(&pull_request_activity("approved"), &subs)
        .await;
    let reply = outbox.posts(2).await[1].json();
    assert_eq!(reply["thread_ts"], parent_ts.as_str());
    assert!(reply.get("reply_broadcast").is_none_or(|b| b == false));

    outbox
        .enqueue(&pull_request_activity("merged"), &subs)
        .await;
    let merged = outbox.posts(3).await[2].json();
    assert_eq!(merged["thread_ts"], parent_ts.as_str());
    assert_eq!(merged["reply_broadcast"], true);
    let updates = outbox.slack.wait_for_calls("chat.update", 1).await;
    let update = updates[0].json();
    assert_eq!(update["ts"], parent_ts.as_str());
    assert!(update.to_string().contains("*merged*"), "{update}");
    let stopped = outbox.stop().await;
    assert_eq!(stopped.store.deliveries.depth(), 0);
    assert_eq!(
        stopped.slack.calls_to("chat.postMessage").len(),
        3,
        "each exactly once"
    );
}

#[tokio::test]
async fn threading_off_posts_everything_in_the_channel() {
    let outbox = start().await;
    outbox
        .store
        .subscriptions
        .set_threading("T0FAKE", "C1", false)
        .await
        .expect("set");
    let subs = vec![subscription("C1", all_pr_features())];
    outbox
        .enqueue(&pull_request_activity("created"), &subs)
        .await;
    outbox
        .enqueue(&pull_request_activity("approved"), &subs)
        .await;
    let posts = outbox.posts(2).await;
    assert!(
        posts
            .iter()
            .all(|post| post.json().get("thread_ts").is_none())
    );
    outbox.stop().await;
}

#[tokio::test]
async fn a_refused_channel_pauses_its_subscriptions_and_tells_the_subscriber_once() {
    let outbox = start().await;
    outbox.slack.fail_channel("C-GONE", "channel_not_found");
    let subscription = subscription("C-GONE", Features::defaults());
    outbox
        .store
        .subscriptions
        .put(&subscription)
        .await
        .expect("subscribe");
    let subs = vec![subscription];
    outbox
        .enqueue(&pull_request_activity("created"), &subs)
        .await;
    let posts = outbox.posts(2).await;
    let dm = posts[1].json();
    assert_eq!(dm["channel"], "U0SUBSCRIBER");
    assert!(dm.to_string().contains("is paused"), "{dm}");
    let stopped = outbox.stop().await;
    let stored = stopped
        .store
        .subscriptions
        .list_channel("T0FAKE", "C-GONE")
        .expect("list");
    assert_eq!(
        stored[0].paused.as_ref().map(|p| p.reason.as_str()),
        Some("channel_not_found")
    );
    let dead = stopped.store.deliveries.dead_letters().expect("dead");
    assert_eq!(dead.len(), 1, "never silently dropped");
    assert_eq!(dead[0].last_error.as_deref(), Some("channel_not_found"));
    assert_eq!(
        stopped.slack.calls_to("chat.postMessage").len(),
        2,
        "the DM went once"
    );
}

#[tokio::test]
async fn a_429_is_waited_out_and_the_message_still_goes_once() {
    let outbox = start().await;
    outbox.slack.rate_limit_posts(1, 1);
    let subs = vec![subscription("C1", Features::defaults())];
    outbox
        .enqueue(&pull_request_activity("created"), &subs)
        .await;
    outbox.posts(1).await;
    outbox.rescheduled("rate limited").await;
    // Retry-After: 1 s. The manual clock passes it; the channel's own pause is real time.
    outbox.clock.advance(jiff::SignedDuration::from_secs(2));
    outbox.wake.notify_one();
    let posts = outbox.posts(2).await;
    assert_eq!(posts.len(), 2, "one 429, then the post");
    let stopped = outbox.stop().await;
    assert_eq!(stopped.store.deliveries.depth(), 0);
    assert!(
        stopped
            .store
            .deliveries
            .dead_letters()
            .expect("dead")
            .is_empty()
    );
}

#[tokio::test]
async fn a_restart_resumes_the_queue_with_nothing_twice() {
    let outbox = start().await;
    // The workspace is uninstalled for now: deliveries wait in the outbox.
    outbox
        .store
        .installations
        .mark_uninstalled("T0FAKE", outbox.clock.now())
        .await
        .expect("uninstall");
    let subs = vec![subscription("C1", all_pr_features())];
    outbox
        .enqueue(&pull_request_activity("created"), &subs)
        .await;
    outbox
        .enqueue(&pull_request_activity("approved"), &subs)
        .await;
    let stopped = outbox.stop().await;
    assert!(stopped.slack.calls_to("chat.postMessage").is_empty());
    let parked = stopped.store.deliveries.parked().expect("parked");
    assert_eq!(
        stopped.store.deliveries.depth() + parked.len(),
        2,
        "queued, or parked while the workspace is not installed"
    );
    drop(stopped.store);

    // Reinstalled, restarted on the same store: both delivered, once each.
    let outbox = start_on(stopped.slack, stopped.dir).await;
    outbox.clock.advance(jiff::SignedDuration::from_mins(2));
    outbox.wake.notify_one();
    let posts = outbox.posts(2).await;
    assert!(posts[1].json().get("thread_ts").is_some());
    let stopped = outbox.stop().await;
    assert_eq!(stopped.store.deliveries.depth(), 0);
    assert_eq!(
        stopped.slack.calls_to("chat.postMessage").len(),
        2,
        "nothing twice"
    );
}

#[tokio::test]
async fn one_channels_backlog_never_delays_another_channels_next_message() {
    // The backlog is in the outbox before the deliverer starts, the quiet channel's one
    // message last of all.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("store");
        installed_before(&store).await;
        let mut backlog: Vec<NewDelivery> = (0..40)
            .map(|n| text_delivery("C-BUSY", &format!("busy {n}")))
            .collect();
        backlog.push(text_delivery("C-QUIET", "quiet 0"));
        store
            .deliveries
            .enqueue(
                backlog,
                Timestamp::from_second(1_800_000_000).expect("valid"),
            )
            .await
            .expect("enqueue");
    }
    let outbox = start_on(FakeSlack::start().await, dir).await;
    let posts = outbox.posts(4).await;
    let channels: Vec<String> = posts
        .iter()
        .map(|post| post.json()["channel"].as_str().unwrap_or("").to_string())
        .collect();
    let quiet = channels.iter().position(|channel| channel == "C-QUIET");
    assert!(
        quiet.is_some_and(|index| index <= 2),
        "the quiet channel waited behind the busy one: {channels:?}"
    );
    // The busy channel keeps its order.
    let busy: Vec<String> = outbox
        .posts(41)
        .await
        .iter()
        .map(|post| post.json())
        .filter(|json| json["channel"] == "C-BUSY")
        .map(|json| json["text"].as_str().unwrap_or("").to_string())
        .collect();
    let expected: Vec<String> = (0..40).map(|n| format!("busy {n}")).collect();
    assert_eq!(busy, expected);
    let stopped = outbox.stop().await;
    assert_eq!(stopped.store.deliveries.depth(), 0);
}

#[tokio::test]
async fn a_post_slack_never_answers_is_uncertain_and_not_posted_again() {
    let slack = FakeSlack::start().await;
    slack.hang_posts(1);
    let outbox = start_with_timeout(
        slack,
        tempfile::tempdir().expect("tempdir"),
        Duration::from_millis(300),
    )
    .await;
    outbox.enqueue_text("C1", "maybe posted").await;
    outbox
        .until("the post is uncertain", |store| {
            store.deliveries.uncertain().expect("read").len() == 1
        })
        .await;
    outbox.enqueue_text("C1", "next").await;
    let posts = outbox.posts(2).await;
    assert_eq!(posts[1].json()["text"], "next");
    let stopped = outbox.stop().await;
    let uncertain = stopped.store.deliveries.uncertain().expect("read");
    assert_eq!(uncertain.len(), 1);
    assert!(
        uncertain[0]
            .uncertain
            .as_deref()
            .is_some_and(|why| why.contains("did not answer chat.postMessage in time")),
        "{uncertain:?}"
    );
    assert_eq!(
        stopped.slack.calls_to("chat.postMessage").len(),
        2,
        "the uncertain one was not posted again"
    );
    assert_eq!(stopped.store.deliveries.depth(), 0);
}

#[tokio::test]
async fn a_message_left_in_flight_by_a_crash_is_uncertain_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("store");
        installed_before(&store).await;
        let ids = store
            .deliveries
            .enqueue(
                vec![NewDelivery {
                    team_id: "T0FAKE".into(),
                    channel_id: "C1".into(),
                    activity_id: "a".into(),
                    notification: render(&pull_request_activity("created"), &|_| None),
                }],
                Timestamp::from_second(1_800_000_000).expect("valid"),
            )
            .await
            .expect("enqueue");
        let delivery = store.deliveries.get(ids[0]).expect("read").expect("queued");
        // The process dies during the post: the marker is on disk, the outcome is not.
        store
            .deliveries
            .mark_in_flight(
                &delivery,
                Timestamp::from_second(1_800_000_001).expect("valid"),
            )
            .await
            .expect("mark");
    }
    let outbox = start_on(FakeSlack::start().await, dir).await;
    outbox
        .until("the message is uncertain", |store| {
            store.deliveries.uncertain().expect("read").len() == 1
        })
        .await;
    assert!(outbox.slack.calls_to("chat.postMessage").is_empty());
    // The operator checked the channel and retries it: posted once.
    let retried = outbox
        .store
        .deliveries
        .retry_uncertain(None, outbox.clock.now())
        .await
        .expect("retry");
    assert_eq!(retried, 1);
    outbox.wake.notify_one();
    outbox.posts(1).await;
    let stopped = outbox.stop().await;
    assert_eq!(stopped.slack.calls_to("chat.postMessage").len(), 1);
    assert!(
        stopped
            .store
            .deliveries
            .uncertain()
            .expect("read")
            .is_empty()
    );
}

#[tokio::test]
async fn messages_of_an_uninstalled_workspace_are_parked_until_it_is_installed_again() {
    let outbox = start().await;
    outbox
        .store
        .installations
        .mark_uninstalled("T0FAKE", outbox.clock.now())
        .await
        .expect("uninstall");
    outbox.enqueue_text("C1", "while away").await;
    outbox
        .until("the message is parked", |store| {
            store.deliveries.parked().expect("read").len() == 1
        })
        .await;
    assert_eq!(
        outbox.store.deliveries.depth(),
        0,
        "not retried while parked"
    );
    assert!(outbox.slack.calls_to("chat.postMessage").is_empty());
    Installer {
        web: SlackWeb::new(&url::Url::parse(&outbox.slack.api_url()).expect("url")).expect("web"),
        store: outbox.store.clone(),
        clock: Arc::new(outbox.clock.clone()),
        changed: Default::default(),
        upgrades: Default::default(),
        allowed_teams: Vec::new(),
    }
    .install_configured_token(&Secret::new("xoxb-delivery-bot".into()))
    .await
    .expect("reinstall");
    outbox.unpark.notify_one();
    let posts = outbox.posts(1).await;
    assert_eq!(posts[0].json()["text"], "while away");
    let stopped = outbox.stop().await;
    assert!(stopped.store.deliveries.parked().expect("read").is_empty());
    assert_eq!(stopped.slack.calls_to("chat.postMessage").len(), 1);
}

#[tokio::test]
async fn a_message_queued_while_held_is_parked_at_once_and_costs_nothing_until_released() {
    let outbox = start().await;
    outbox.store.campaigns.hold("T0FAKE").await.expect("hold");
    outbox.enqueue_text("C1", "held one").await;
    outbox.enqueue_text("C1", "held two").await;
    outbox.enqueue_text("C2", "held three").await;
    // Parked by the enqueue itself: never in a channel's queue, so the delivery loop
    // never reads, paces or attempts them.
    let parked = outbox.store.deliveries.parked().expect("read");
    assert_eq!(parked.len(), 3);
    assert!(
        parked.iter().all(|d| d.parked == Some(ParkReason::Held)
            && d.attempts == 0
            && d.last_error.is_none()
            && d.in_flight.is_none()),
        "{parked:#?}"
    );
    assert_eq!(outbox.store.deliveries.depth(), 0);
    assert!(
        outbox
            .store
            .deliveries
            .queued_channels()
            .expect("read")
            .is_empty()
    );
    // Rung to resume parked messages: still held, so nothing moves and nothing posts.
    outbox.unpark.notify_one();
    outbox.wake.notify_one();
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(outbox.store.deliveries.parked().expect("read"), parked);
    assert!(outbox.slack.calls_to("chat.postMessage").is_empty());

    // Released: one digest per channel, listing the held messages in order; they are
    // never posted themselves.
    assert_eq!(release(&outbox.store, outbox.clock.now(), true).await, 2);
    outbox.wake.notify_one();
    let posts = outbox.posts(2).await;
    let mut texts: Vec<(String, String)> = posts
        .iter()
        .map(|post| {
            let json = post.json();
            (
                json["channel"].as_str().unwrap_or("").to_string(),
                json["text"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            ("C1".to_string(), "digest: held one + held two".to_string()),
            ("C2".into(), "digest: held three".into())
        ]
    );
    let stopped = outbox.stop().await;
    assert!(stopped.store.deliveries.parked().expect("read").is_empty());
    assert_eq!(stopped.store.deliveries.depth(), 0);
    assert_eq!(stopped.slack.calls_to("chat.postMessage").len(), 2);
}

#[tokio::test]
async fn held_messages_released_without_a_digest_are_delivered_in_order() {
    let outbox = start().await;
    outbox.store.campaigns.hold("T0FAKE").await.expect("hold");
    for text in ["first", "second", "third"] {
        outbox.enqueue_text("C1", text).await;
    }
    assert_eq!(outbox.store.deliveries.parked().expect("read").len(), 3);
    assert_eq!(release(&outbox.store, outbox.clock.now(), false).await, 0);
    assert!(
        !outbox.store.campaigns.is_held("T0FAKE").expect("read"),
        "the hold is lifted"
    );
    assert!(
        outbox.store.deliveries.parked().expect("read").is_empty(),
        "back in their queue with the release"
    );
    outbox.wake.notify_one();
    let texts: Vec<String> = outbox
        .posts(3)
        .await
        .iter()
        .map(|post| post.json()["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(texts, ["first", "second", "third"]);
    let stopped = outbox.stop().await;
    assert_eq!(stopped.store.deliveries.depth(), 0);
    assert_eq!(stopped.slack.calls_to("chat.postMessage").len(), 3);
}

#[tokio::test]
async fn a_hold_that_starts_after_queueing_parks_the_message_instead_of_posting_it() {
    // Queued while the workspace could take it; the hold starts before the delivery loop
    // reaches it.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("store");
        installed_before(&store).await;
        store
            .deliveries
            .enqueue(
                vec![text_delivery("C1", "queued before the hold")],
                Timestamp::from_second(1_800_000_000).expect("valid"),
            )
            .await
            .expect("enqueue");
        assert_eq!(store.deliveries.depth(), 1, "queued, not parked");
        store.campaigns.hold("T0FAKE").await.expect("hold");
    }
    let outbox = start_on(FakeSlack::start().await, dir).await;
    outbox
        .until("the message is parked", |store| {
            store.deliveries.parked().expect("read").len() == 1
        })
        .await;
    let parked = outbox.store.deliveries.parked().expect("read");
    assert_eq!(parked[0].parked, Some(ParkReason::Held));
    assert_eq!(parked[0].attempts, 0);
    assert!(parked[0].in_flight.is_none());
    assert_eq!(outbox.store.deliveries.depth(), 0);
    assert!(outbox.slack.calls_to("chat.postMessage").is_empty());

    // Released with its digest: the digest is posted, the held message never.
    assert_eq!(release(&outbox.store, outbox.clock.now(), true).await, 1);
    outbox.wake.notify_one();
    let posts = outbox.posts(1).await;
    assert_eq!(posts[0].json()["text"], "digest: queued before the hold");
    let stopped = outbox.stop().await;
    assert_eq!(stopped.slack.calls_to("chat.postMessage").len(), 1);
    assert!(stopped.store.deliveries.parked().expect("read").is_empty());
    assert_eq!(stopped.store.deliveries.depth(), 0);
}
