//! One conformance suite for both store engines: every case runs once on sled and once on
//! a real PostgreSQL server the test starts itself (`support::postgres`; skipped loudly
//! when none is installed). The transactional operations run with concurrent callers on a
//! multi-threaded runtime, and each case reopens the store to see what survived.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;

use bitbucket_slack::bitbucket::Target;
use bitbucket_slack::bitbucket::activity::{Activity, ActivityKind};
use bitbucket_slack::message::Message;
use bitbucket_slack::notify::Notification;
use bitbucket_slack::notify::reminders::{Days, Schedule};
use bitbucket_slack::notify::subscription::{Features, Filters, Subscription};
use bitbucket_slack::secret::Secret;
use bitbucket_slack::store::{
    Backend, BeginPost, ChannelReminder, DedupKind, InstallSource, Installation, InstallationState,
    NewDelivery, Queued, SlotCommit, Store, StoreError, UserLink,
};
use support::postgres::Postgres;

/// A store's engine and where it lives, so a case can reopen it.
struct Engine {
    backend: Backend,
    dir: tempfile::TempDir,
    server: Option<Postgres>,
}

impl Engine {
    fn sled() -> Engine {
        Engine {
            backend: Backend::Sled,
            dir: tempfile::tempdir().expect("tempdir"),
            server: None,
        }
    }

    fn postgres() -> Option<Engine> {
        let server = Postgres::start()?;
        Some(Engine {
            backend: Backend::Postgres(server.settings()),
            dir: tempfile::tempdir().expect("tempdir"),
            server: Some(server),
        })
    }

    fn open(&self) -> Store {
        Store::open_backend(&self.backend, self.dir.path(), None).expect("the store opens")
    }

    /// Whether `needle` appears anywhere in what the engine keeps (files or rows).
    fn raw_contains(&self, needle: &str) -> bool {
        match &self.server {
            Some(server) => {
                let Backend::Postgres(settings) = &self.backend else {
                    unreachable!("a server goes with the postgres backend")
                };
                let database = Postgres::database_of(settings);
                let count = server.psql(
                    &database,
                    &format!(
                        "SELECT count(*) FROM kv WHERE position(convert_to('{needle}', 'UTF8') in value) > 0 \
                         OR position(convert_to('{needle}', 'UTF8') in key) > 0"
                    ),
                );
                count != "0"
            }
            None => walk_files(self.dir.path()).iter().any(|bytes| {
                bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
            }),
        }
    }
}

fn walk_files(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(walk_files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            all.push(bytes);
        }
    }
    all
}

/// Runs each case once per engine, each on a four-thread runtime.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Engine::sled()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(engine) = super::Engine::postgres() else { return };
                    super::$case(engine).await;
                }
            )*
        }
    };
}

conformance!(
    installations_keep_tokens_sealed,
    user_links_keep_their_index,
    subscriptions_list_by_channel_and_team,
    a_dedup_claim_is_won_once_by_concurrent_callers,
    concurrent_poll_commits_append_each_activity_once,
    an_activity_is_routed_once_by_concurrent_routers,
    the_delivery_lifecycle_survives_a_reopen,
    concurrent_completions_each_take_their_delivery,
    a_reminder_slot_is_taken_once_by_concurrent_callers,
    an_unfurl_offer_is_made_once_a_day,
    a_failed_write_changes_nothing,
    ids_keep_growing_across_a_reopen,
    a_workspace_purge_leaves_others_alone,
);

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).expect("valid")
}

fn installation(team: &str, token: &str) -> Installation {
    Installation {
        team_id: team.into(),
        team_name: format!("Team {team}"),
        enterprise_id: None,
        bot_user_id: "U0BOT".into(),
        bot_id: None,
        app_id: None,
        bot_token: Some(Secret::new(token.into())),
        scopes: vec!["commands".into(), "chat:write".into()],
        installer_user_id: Some("U0ADMIN".into()),
        installed_at: at(0),
        updated_at: at(0),
        state: InstallationState::Active,
        source: InstallSource::OAuth,
    }
}

fn link(team: &str, user: &str, uuid: &str) -> UserLink {
    UserLink {
        team_id: team.into(),
        slack_user_id: user.into(),
        bitbucket_uuid: uuid.into(),
        account_id: None,
        display_name: format!("Person {user}"),
        nickname: None,
        access_token: Secret::new(format!("bb-access-{user}")),
        refresh_token: Secret::new(format!("bb-refresh-{user}")),
        access_expires_at: at(3600),
        linked_at: at(0),
        stale: false,
        stale_notified: false,
        scopes: None,
        reconnect_asked: false,
    }
}

fn subscription(team: &str, channel: &str, repo: &str) -> Subscription {
    Subscription {
        team_id: team.into(),
        channel_id: channel.into(),
        target: Target::Repository(repo.parse().expect("a repository name")),
        features: Features::defaults(),
        filters: Filters::default(),
        main_branch: Some("main".into()),
        created_by: "U0ADMIN".into(),
        created_at: at(0),
        paused: None,
        private: Some(false),
        coverage: Default::default(),
    }
}

fn push(repo: &str, n: u32) -> Activity {
    Activity {
        id: format!("{repo}:push:main:{n}"),
        repository: repo.into(),
        occurred_at: at(i64::from(n)),
        actor: None,
        link: None,
        kind: ActivityKind::Push {
            branch: "main".into(),
            previous_head: format!("{:040}", n),
            head: format!("{:040}", n + 1),
            commits: Vec::new(),
            truncated: false,
        },
    }
}

async fn install_t1(store: &Store) {
    store
        .installations
        .upsert(installation("T1", "xoxb-t1"))
        .await
        .expect("install");
}

async fn watch(store: &Store, repo: &str) {
    store
        .repositories
        .watch(&repo.parse().expect("name"))
        .await
        .expect("watch");
}

fn delivery(team: &str, channel: &str, text: &str) -> NewDelivery {
    NewDelivery {
        team_id: team.into(),
        channel_id: channel.into(),
        activity_id: format!("activity-{text}"),
        notification: Notification {
            message: Message::text(text),
            thread_key: Some(format!("thread-{channel}")),
            parent_update: None,
        },
    }
}

async fn installations_keep_tokens_sealed(engine: Engine) {
    let store = engine.open();
    store
        .installations
        .upsert(installation("T1", "xoxb-conformance-secret"))
        .await
        .expect("upsert");
    store
        .installations
        .upsert(installation("T2", "xoxb-other"))
        .await
        .expect("upsert");
    assert_eq!(
        store.installations.active_team_ids().expect("list"),
        BTreeSet::from(["T1".to_owned(), "T2".to_owned()])
    );
    store
        .installations
        .revoke_tokens("T2", at(5))
        .await
        .expect("revoke");
    drop(store);
    let store = engine.open();
    let loaded = store
        .installations
        .get("T1")
        .expect("get")
        .expect("present");
    assert_eq!(
        loaded
            .bot_token
            .as_ref()
            .map(|token| token.expose().as_str()),
        Some("xoxb-conformance-secret")
    );
    assert!(
        !store
            .installations
            .get("T2")
            .expect("get")
            .expect("kept")
            .is_active()
    );
    assert_eq!(store.installations.list().expect("list").len(), 2);
    drop(store);
    assert!(
        !engine.raw_contains("xoxb-conformance-secret"),
        "tokens are sealed at rest"
    );
}

async fn user_links_keep_their_index(engine: Engine) {
    let store = engine.open();
    store
        .user_links
        .put(&link("T1", "U1", "{aaa}"))
        .await
        .expect("put");
    store
        .user_links
        .put(&link("T1", "U2", "{bbb}"))
        .await
        .expect("put");
    store
        .user_links
        .put(&link("T2", "U1", "{aaa}"))
        .await
        .expect("put");
    assert_eq!(
        store
            .user_links
            .slack_user_for("T1", "{bbb}")
            .expect("index"),
        Some("U2".to_owned())
    );
    // Relinking to another account moves the index entry.
    store
        .user_links
        .put(&link("T1", "U2", "{ccc}"))
        .await
        .expect("put");
    assert_eq!(
        store
            .user_links
            .slack_user_for("T1", "{bbb}")
            .expect("index"),
        None
    );
    assert!(store.user_links.remove("T1", "U1").await.expect("remove"));
    assert!(
        !store
            .user_links
            .remove("T1", "U1")
            .await
            .expect("remove twice")
    );
    drop(store);
    let store = engine.open();
    assert_eq!(
        store
            .user_links
            .slack_user_for("T1", "{aaa}")
            .expect("index"),
        None
    );
    assert_eq!(
        store
            .user_links
            .slack_user_for("T2", "{aaa}")
            .expect("index"),
        Some("U1".to_owned())
    );
    let kept = store
        .user_links
        .get("T1", "U2")
        .expect("get")
        .expect("linked");
    assert_eq!(kept.bitbucket_uuid, "{ccc}");
    assert_eq!(kept.refresh_token.expose(), "bb-refresh-U2");
    drop(store);
    assert!(
        !engine.raw_contains("bb-refresh-U2"),
        "tokens are sealed at rest"
    );
}

async fn subscriptions_list_by_channel_and_team(engine: Engine) {
    let store = engine.open();
    for (team, channel, repo) in [
        ("T1", "C1", "acme/api"),
        ("T1", "C1", "acme/web"),
        ("T1", "C2", "acme/api"),
        ("T2", "C1", "acme/api"),
    ] {
        store
            .subscriptions
            .put(&subscription(team, channel, repo))
            .await
            .expect("put");
    }
    assert_eq!(
        store
            .subscriptions
            .list_channel("T1", "C1")
            .expect("list")
            .len(),
        2
    );
    assert_eq!(store.subscriptions.count_for_team("T1"), 3);
    assert_eq!(store.subscriptions.list_all().expect("all").len(), 4);
    let api: Target = Target::Repository("acme/api".parse().expect("name"));
    assert!(
        store
            .subscriptions
            .remove("T1", "C1", &api)
            .await
            .expect("remove")
    );
    drop(store);
    let store = engine.open();
    let left: Vec<String> = store
        .subscriptions
        .list_channel("T1", "C1")
        .expect("list")
        .into_iter()
        .map(|subscription| subscription.target.as_str().to_owned())
        .collect();
    assert_eq!(left, ["acme/web"]);
    assert_eq!(store.subscriptions.count_for_team("T2"), 1);
}

async fn a_dedup_claim_is_won_once_by_concurrent_callers(engine: Engine) {
    let store = engine.open();
    for round in 0..5 {
        let id = format!("Ev{round}");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let id = id.clone();
                tokio::task::spawn_blocking(move || {
                    store
                        .dedup
                        .first_sighting(DedupKind::Envelope, &id, at(1))
                        .expect("claim")
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            won += usize::from(task.await.expect("task"));
        }
        assert_eq!(won, 1, "exactly one caller sees envelope {id} first");
    }
    assert_eq!(store.dedup.prune(at(2)).expect("prune"), 5);
}

async fn concurrent_poll_commits_append_each_activity_once(engine: Engine) {
    let store = engine.open();
    let repo = "acme/api";
    watch(&store, repo).await;
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for poller in 0..6u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Overlapping windows: pollers see activities poller..poller+10.
            let activities: Vec<Activity> = (poller..poller + 10).map(|n| push(repo, n)).collect();
            store
                .activities
                .commit_poll(repo, &format!("cursor-{poller}"), &activities)
                .await
                .expect("commit")
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let pending = store.activities.pending(1000).expect("pending");
    let ids: BTreeSet<String> = pending
        .iter()
        .map(|(_, activity)| activity.id.clone())
        .collect();
    assert_eq!(pending.len(), 15, "each of the 15 distinct activities once");
    assert_eq!(ids.len(), 15);
    let sequences: Vec<u64> = pending.iter().map(|(seq, _)| *seq).collect();
    let mut sorted = sequences.clone();
    sorted.sort_unstable();
    assert_eq!(sequences, sorted, "pending is in sequence order");
}

async fn an_activity_is_routed_once_by_concurrent_routers(engine: Engine) {
    let store = engine.open();
    let repo = "acme/api";
    watch(&store, repo).await;
    store
        .activities
        .commit_poll(repo, &"c", &[push(repo, 1)])
        .await
        .expect("commit");
    install_t1(&store).await;
    let (seq, _) = store.activities.pending(1).expect("pending")[0].clone();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .commit_routing(
                    seq,
                    vec![delivery("T1", "C1", "one"), delivery("T1", "C2", "two")],
                    &[],
                    at(10),
                )
                .await
                .expect("route")
        }));
    }
    let mut total = Queued::default();
    for task in tasks {
        let queued = task.await.expect("task");
        total.queued += queued.queued;
        total.parked += queued.parked;
    }
    assert_eq!(total.queued, 2, "one router queued both deliveries");
    assert_eq!(store.deliveries.depth(), 2);
    assert!(store.activities.pending(10).expect("pending").is_empty());
}

async fn the_delivery_lifecycle_survives_a_reopen(engine: Engine) {
    let store = engine.open();
    install_t1(&store).await;
    let ids = store
        .deliveries
        .enqueue(
            vec![
                delivery("T1", "C1", "first"),
                delivery("T1", "C1", "second"),
            ],
            at(1),
        )
        .await
        .expect("enqueue");
    assert_eq!(ids.len(), 2);
    let head = store
        .deliveries
        .head("T1", "C1")
        .expect("head")
        .expect("queued");
    assert_eq!(head.id, ids[0], "a channel's queue is in order");
    let BeginPost::Post(marked) = store
        .deliveries
        .begin_post(&head, at(2))
        .await
        .expect("begin")
    else {
        panic!("the first delivery is posted");
    };
    drop(store);
    // A restart after begin_post: the delivery was in flight, so it is uncertain.
    let store = engine.open();
    assert_eq!(
        store.deliveries.recover_in_flight().await.expect("recover"),
        1
    );
    assert_eq!(store.deliveries.uncertain().expect("uncertain").len(), 1);
    let head = store
        .deliveries
        .head("T1", "C1")
        .expect("head")
        .expect("queued");
    assert_eq!(head.id, ids[1]);
    let BeginPost::Post(second) = store
        .deliveries
        .begin_post(&head, at(3))
        .await
        .expect("begin")
    else {
        panic!("the second delivery is posted");
    };
    store
        .deliveries
        .complete(&second, Some(("thread-C1", "1700000000.000100")))
        .await
        .expect("complete");
    assert_eq!(
        store
            .deliveries
            .thread_parent("T1", "C1", "thread-C1")
            .expect("thread"),
        Some("1700000000.000100".to_owned())
    );
    assert_eq!(store.deliveries.depth(), 0);
    assert_eq!(marked.id, ids[0]);
    assert_eq!(
        store
            .deliveries
            .retry_uncertain(None, at(4))
            .await
            .expect("retry"),
        1
    );
    assert_eq!(
        store.deliveries.depth(),
        1,
        "the uncertain one is queued again on request"
    );
}

async fn concurrent_completions_each_take_their_delivery(engine: Engine) {
    let store = engine.open();
    install_t1(&store).await;
    let deliveries: Vec<NewDelivery> = (0..40)
        .map(|n| delivery("T1", &format!("C{}", n % 8), &format!("m{n}")))
        .collect();
    store
        .deliveries
        .enqueue(deliveries, at(1))
        .await
        .expect("enqueue");
    let pending = store.deliveries.pending().expect("pending");
    assert_eq!(pending.len(), 40);
    let mut tasks = Vec::new();
    for chunk in pending.chunks(5) {
        let store = store.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for delivery in chunk {
                let parent = format!("17000000{:02}.000100", delivery.id % 100);
                let thread = format!("thread-{}", delivery.channel_id);
                store
                    .deliveries
                    .complete(&delivery, Some((thread.as_str(), parent.as_str())))
                    .await
                    .expect("complete");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(store.deliveries.depth(), 0);
    assert!(
        store
            .deliveries
            .queued_channels()
            .expect("channels")
            .is_empty()
    );
    for channel in 0..8 {
        let channel = format!("C{channel}");
        assert!(
            store
                .deliveries
                .thread_parent("T1", &channel, &format!("thread-{channel}"))
                .expect("thread")
                .is_some()
        );
    }
}

async fn a_reminder_slot_is_taken_once_by_concurrent_callers(engine: Engine) {
    let store = engine.open();
    install_t1(&store).await;
    store
        .reminders
        .set_channel(&ChannelReminder {
            team_id: "T1".into(),
            channel_id: "C1".into(),
            schedule: Schedule {
                hour: 9,
                minute: 0,
                days: Days::Weekdays,
                zone: "UTC".into(),
            },
            set_by: "U1".into(),
            set_at: at(0),
            last_slot: at(0),
        })
        .await
        .expect("set");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .reminders
                .commit_channel_slot(
                    "T1",
                    "C1",
                    at(100),
                    vec![delivery("T1", "C1", "remind")],
                    at(100),
                )
                .await
                .expect("commit slot")
        }));
    }
    let mut recorded = 0;
    for task in tasks {
        match task.await.expect("task") {
            SlotCommit::Recorded { queued, .. } => {
                recorded += 1;
                assert_eq!(queued, 1);
            }
            SlotCommit::AlreadyHandled => {}
            SlotCommit::Gone => panic!("the reminder is set"),
        }
    }
    assert_eq!(recorded, 1, "one message per slot");
    assert_eq!(store.deliveries.depth(), 1);
    assert_eq!(
        store
            .reminders
            .channel("T1", "C1")
            .expect("get")
            .expect("set")
            .last_slot,
        at(100)
    );
}

async fn an_unfurl_offer_is_made_once_a_day(engine: Engine) {
    let store = engine.open();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .unfurl_offers
                .take_offer("T1", "U1", at(0))
                .await
                .expect("offer")
        }));
    }
    let mut offered = 0;
    for task in tasks {
        offered += usize::from(task.await.expect("task"));
    }
    assert_eq!(offered, 1);
    assert!(
        !store
            .unfurl_offers
            .take_offer("T1", "U1", at(3600))
            .await
            .expect("offer")
    );
    assert!(
        store
            .unfurl_offers
            .take_offer("T1", "U1", at(90_000))
            .await
            .expect("offer")
    );
}

async fn a_failed_write_changes_nothing(engine: Engine) {
    let store = engine.open();
    let repo = "acme/api";
    watch(&store, repo).await;
    store
        .activities
        .commit_poll(repo, &"c1", &[push(repo, 1)])
        .await
        .expect("commit");
    let (seq, _) = store.activities.pending(1).expect("pending")[0].clone();
    store.set_write_faults(true);
    assert!(
        store
            .commit_routing(seq, vec![delivery("T1", "C1", "x")], &[], at(2))
            .await
            .is_err()
    );
    assert!(
        store
            .activities
            .commit_poll(repo, &"c2", &[push(repo, 2)])
            .await
            .is_err()
    );
    store.set_write_faults(false);
    drop(store);
    let store = engine.open();
    assert_eq!(store.activities.pending(10).expect("pending").len(), 1);
    assert_eq!(store.deliveries.depth(), 0);
    assert_eq!(
        store.repositories.cursor::<String>(repo).expect("cursor"),
        Some("c1".to_owned())
    );
}

async fn ids_keep_growing_across_a_reopen(engine: Engine) {
    let store = engine.open();
    install_t1(&store).await;
    let first = store
        .deliveries
        .enqueue(vec![delivery("T1", "C1", "a")], at(1))
        .await
        .expect("enqueue");
    drop(store);
    let store = engine.open();
    let second = store
        .deliveries
        .enqueue(vec![delivery("T1", "C1", "b")], at(2))
        .await
        .expect("enqueue");
    assert!(second[0] > first[0], "{second:?} after {first:?}");
    let order: Vec<u64> = store
        .deliveries
        .pending()
        .expect("pending")
        .iter()
        .map(|delivery| delivery.id)
        .collect();
    assert_eq!(order, [first[0], second[0]]);
}

async fn a_workspace_purge_leaves_others_alone(engine: Engine) {
    let store = engine.open();
    for team in ["T1", "T2"] {
        store
            .installations
            .upsert(installation(team, &format!("xoxb-{team}")))
            .await
            .expect("install");
        store
            .user_links
            .put(&link(team, "U1", "{aaa}"))
            .await
            .expect("link");
        store
            .subscriptions
            .put(&subscription(team, "C1", "acme/api"))
            .await
            .expect("subscribe");
        store
            .deliveries
            .enqueue(vec![delivery(team, "C1", team)], at(1))
            .await
            .expect("enqueue");
    }
    store
        .installations
        .mark_uninstalled("T1", at(2))
        .await
        .expect("uninstall");
    let purged = store.purge_team("T1").await.expect("purge");
    assert!(purged >= 4, "the workspace's records are removed: {purged}");
    drop(store);
    let store = engine.open();
    assert!(store.installations.get("T1").expect("get").is_none());
    assert!(store.user_links.get("T1", "U1").expect("get").is_none());
    assert_eq!(store.subscriptions.count_for_team("T1"), 0);
    assert!(store.installations.get("T2").expect("get").is_some());
    assert!(store.user_links.get("T2", "U1").expect("get").is_some());
    assert_eq!(store.subscriptions.count_for_team("T2"), 1);
    assert_eq!(store.deliveries.depth(), 1);
}

#[test]
fn an_unreachable_database_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = bitbucket_slack::store::PgSettings {
        url: Secret::new(format!(
            "host={} port=5999 user=alice password=hunter2-secret dbname=nothing",
            dir.path().display()
        )),
        pool_size: 2,
        connect_timeout: std::time::Duration::from_secs(2),
        statement_timeout: std::time::Duration::from_secs(5),
    };
    let error = Store::open_backend(&Backend::Postgres(settings), dir.path(), None)
        .expect_err("nothing listens there");
    let message = error.to_string();
    assert!(matches!(error, StoreError::Unreachable { .. }), "{message}");
    assert!(message.contains("postgres://alice@"), "{message}");
    assert!(message.contains("storage.postgres.url"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn a_database_of_a_newer_schema_is_refused() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let settings = server.settings();
    let dir = tempfile::tempdir().expect("tempdir");
    drop(
        Store::open_backend(&Backend::Postgres(settings.clone()), dir.path(), None).expect("open"),
    );
    let database = Postgres::database_of(&settings);
    server.psql(
        &database,
        "INSERT INTO bitbucket_slack_schema (version) VALUES (99)",
    );
    let error = Store::open_backend(&Backend::Postgres(settings), dir.path(), None)
        .expect_err("newer schema");
    assert!(
        matches!(error, StoreError::NewerDatabaseSchema { found: 99, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("every replica"), "{error}");
}

#[test]
fn a_wrong_key_is_refused_on_postgres_too() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let settings = server.settings();
    let first = tempfile::tempdir().expect("tempdir");
    drop(
        Store::open_backend(&Backend::Postgres(settings.clone()), first.path(), None)
            .expect("open"),
    );
    let second = tempfile::tempdir().expect("another key directory");
    let error = Store::open_backend(&Backend::Postgres(settings), second.path(), None)
        .expect_err("another generated key");
    assert!(matches!(error, StoreError::WrongKey { .. }), "{error}");
}

/// Two replicas' stores on one PostgreSQL database.
fn two_replicas(server: &Postgres) -> (Store, Store, tempfile::TempDir) {
    let settings = server.settings();
    let keys = tempfile::tempdir().expect("tempdir");
    let first = Store::open_backend(&Backend::Postgres(settings.clone()), keys.path(), None)
        .expect("first replica");
    let second = Store::open_backend(&Backend::Postgres(settings), keys.path(), None)
        .expect("second replica");
    (first, second, keys)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn leases_are_held_by_one_replica_until_they_expire_then_taken_over() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let (a, b, _keys) = two_replicas(&server);
    let (a, b) = (&a.coordination, &b.coordination);
    assert_ne!(a.replica_id(), b.replica_id());
    let ttl = std::time::Duration::from_secs(30);
    let work = names(&["repo:acme/api", "repo:acme/web", "leader"]);

    let claimed = a.claim(&work, at(0), ttl).expect("claim");
    assert_eq!(claimed.held.len(), 3);
    assert_eq!(claimed.takeovers, 0);
    assert!(
        b.claim(&work, at(10), ttl).expect("claim").held.is_empty(),
        "held by a"
    );
    assert_eq!(a.claim(&work, at(20), ttl).expect("renew").held.len(), 3);
    assert!(
        b.claim(&work, at(49), ttl).expect("claim").held.is_empty(),
        "renewed at 20: held until 50"
    );
    // a stops renewing (killed): after its TTL b takes everything over.
    let taken = b.claim(&work, at(51), ttl).expect("take over");
    assert_eq!(taken.held.len(), 3);
    assert_eq!(taken.takeovers, 3);
    assert!(a.claim(&work, at(52), ttl).expect("claim").held.is_empty());
    // A release hands a lease over at once.
    b.release(&names(&["repo:acme/api"])).expect("release");
    let claimed = a.claim(&work, at(53), ttl).expect("claim");
    assert_eq!(claimed.held, BTreeSet::from(["repo:acme/api".to_owned()]));
    assert_eq!(claimed.takeovers, 0, "released, not taken over");

    a.heartbeat(at(53)).expect("heartbeat");
    b.heartbeat(at(53)).expect("heartbeat");
    let replicas = a.replicas(at(60), ttl).expect("replicas");
    assert_eq!(replicas.len(), 2);
    let of = |id: &str| {
        replicas
            .iter()
            .find(|replica| replica.id == id)
            .expect("listed")
            .clone()
    };
    assert_eq!(of(a.replica_id()).leases.get("repo"), Some(&1));
    assert_eq!(of(b.replica_id()).leases.get("leader"), Some(&1));
    assert!(of(a.replica_id()).alive);
    assert_eq!(a.live_replicas(at(60), ttl).expect("live"), 2);
    assert_eq!(
        a.live_replicas(at(53 + 31), ttl).expect("live"),
        1,
        "no heartbeat within the TTL: not alive (this one still counts)"
    );
}

#[test]
fn concurrent_claims_never_give_one_lease_to_two_replicas() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let (a, b, _keys) = two_replicas(&server);
    let work: Vec<String> = (0..200).map(|n| format!("channel:T1:C{n}")).collect();
    let ttl = std::time::Duration::from_secs(30);
    let (held_a, held_b) = std::thread::scope(|scope| {
        let first = scope.spawn(|| a.coordination.claim(&work, at(0), ttl).expect("claim"));
        let second = scope.spawn(|| b.coordination.claim(&work, at(0), ttl).expect("claim"));
        (
            first.join().expect("thread").held,
            second.join().expect("thread").held,
        )
    });
    assert!(held_a.is_disjoint(&held_b), "no lease is held twice");
    assert_eq!(held_a.len() + held_b.len(), 200, "every lease is held");
}

#[test]
fn the_request_budget_is_shared_and_never_exceeded_in_any_rolling_hour() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let (a, b, _keys) = two_replicas(&server);
    let per_hour = 120;
    // Three simulated hours, a minute at a time: both replicas try 5 requests a minute
    // (600 an hour together, five times the budget).
    let mut granted_at: Vec<i64> = Vec::new();
    for minute in 0..180i64 {
        for attempt in 0..5 {
            for replica in [&a, &b] {
                let now = at(minute * 60 + attempt);
                if replica
                    .coordination
                    .spend("token:acme", per_hour, now)
                    .expect("spend")
                {
                    granted_at.push(minute);
                }
            }
        }
    }
    for end in 0..180i64 {
        let in_window = granted_at
            .iter()
            .filter(|&&minute| minute > end - 60 && minute <= end)
            .count();
        assert!(
            in_window <= per_hour as usize,
            "{in_window} requests in the hour ending at minute {end}"
        );
    }
    assert_eq!(
        granted_at.len(),
        3 * per_hour as usize,
        "the whole budget is used"
    );
    assert_eq!(
        a.coordination
            .spent("token:acme", at(179 * 60))
            .expect("spent"),
        per_hour
    );
    assert!(
        b.coordination
            .spend("token:other", per_hour, at(179 * 60))
            .expect("spend"),
        "each credential has its own budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_sled_to_postgres_and_back_loses_nothing() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sled_store = Store::open_backend(&Backend::Sled, dir.path(), None).expect("sled");
    sled_store
        .installations
        .upsert(installation("T1", "xoxb-migrated-secret"))
        .await
        .expect("install");
    sled_store
        .user_links
        .put(&link("T1", "U1", "{aaa}"))
        .await
        .expect("link");
    sled_store
        .subscriptions
        .put(&subscription("T1", "C1", "acme/api"))
        .await
        .expect("subscribe");
    let queued = sled_store
        .deliveries
        .enqueue(vec![delivery("T1", "C1", "queued")], at(1))
        .await
        .expect("enqueue");
    sled_store
        .dedup
        .first_sighting(DedupKind::Envelope, "Ev1", at(1))
        .expect("dedup");

    let postgres =
        Store::open_backend(&Backend::Postgres(server.settings()), dir.path(), None).expect("pg");
    let there = sled_store.copy_into(&postgres).expect("copy into postgres");
    assert!(there.entries() >= 6, "{there:?}");
    let again = sled_store
        .copy_into(&postgres)
        .expect_err("the target is not empty");
    assert!(again.to_string().contains("already holds data"), "{again}");
    assert_eq!(
        postgres
            .installations
            .get("T1")
            .expect("get")
            .expect("copied")
            .bot_token
            .map(|token| token.expose().clone()),
        Some("xoxb-migrated-secret".to_owned()),
        "tokens open with the same key"
    );
    let later = postgres
        .deliveries
        .enqueue(vec![delivery("T1", "C1", "after")], at(2))
        .await
        .expect("enqueue on postgres");
    assert!(later[0] > queued[0], "ids continue after the source's");
    drop(sled_store);

    let back_dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        dir.path().join("secret.key"),
        back_dir.path().join("secret.key"),
    )
    .expect("the same key");
    let back = Store::open_backend(&Backend::Sled, back_dir.path(), None).expect("sled again");
    let report = postgres.copy_into(&back).expect("copy back into sled");
    assert_eq!(report.trees, {
        let mut expected = there.trees.clone();
        *expected.get_mut("deliveries").expect("deliveries copied") += 2;
        expected
    });
    assert_eq!(back.deliveries.depth(), 2);
    assert_eq!(
        back.user_links
            .get("T1", "U1")
            .expect("get")
            .expect("copied")
            .bitbucket_uuid,
        "{aaa}"
    );
    assert!(
        !back
            .dedup
            .first_sighting(DedupKind::Envelope, "Ev1", at(3))
            .expect("dedup")
    );
    let newest = back
        .deliveries
        .enqueue(vec![delivery("T1", "C1", "newest")], at(3))
        .await
        .expect("enqueue on sled");
    assert!(newest[0] > later[0], "ids continue after postgres's");
}
