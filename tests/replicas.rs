//! Two real daemon processes on one PostgreSQL store, with the fake Slack and the fake
//! Bitbucket: they split the repositories and channels between them by leases, every
//! activity reaches its channel once, an envelope Slack retries on the other replica is
//! handled once, and when the replica holding the most leases is killed with SIGKILL the
//! other takes its work over within the lease time-to-live, losing nothing.
//!
//! Skipped (loudly) without PostgreSQL's server binaries; `.ci/run` installs them.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use bitbucket_slack::bitbucket::Target;
use bitbucket_slack::notify::subscription::{Features, Filters, Subscription};
use bitbucket_slack::store::{Backend, Store};
use bitbucket_slack::upgrade::required_scopes;
use support::daemon::{Daemon, write_config};
use support::fake_bitbucket::{FakeBitbucket, TOKEN};
use support::fake_slack::{FakeSlack, FakeWorkspace};
use support::harness::{APP_TOKEN, Settings, TEAM, envelope};
use support::postgres::Postgres;

const BOT: &str = "xoxb-replicas-bot";
const REPOSITORIES: usize = 12;
/// Short, so the takeover is seen quickly; production's default is 30 s.
const LEASE_TTL_SECS: u64 = 3;

fn repository(n: usize) -> String {
    format!("acme/r{n:02}")
}

fn channel(n: usize) -> String {
    format!("C{n:02}")
}

/// Waits for `done` (checked every 50 ms) at most `within`.
async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn replica_config(
    dir: &std::path::Path,
    name: &str,
    slack: &FakeSlack,
    bitbucket: &FakeBitbucket,
    url: &str,
    key: &std::path::Path,
) -> String {
    let data = dir.join(name);
    let config_dir = dir.join(format!("{name}-config"));
    std::fs::create_dir_all(&config_dir).expect("a config directory");
    write_config(
        &config_dir,
        &Settings::base(slack, &data)
            .set("slack.app_token", APP_TOKEN)
            .set("slack.bot_token", BOT)
            .set("bitbucket.api_url", bitbucket.api_url())
            .set("bitbucket.oauth_url", bitbucket.oauth_url())
            .set("bitbucket.token", TOKEN)
            .set("bitbucket.poll_interval_secs", "1")
            .set("bitbucket.rate_limit_per_hour", "100000")
            .set("storage.backend", "postgres")
            .set("storage.postgres.url", url)
            .set(
                "storage.postgres.lease_ttl_secs",
                LEASE_TTL_SECS.to_string(),
            )
            .set("storage.encryption_key_file", key.display().to_string())
            .toml(),
    )
}

fn message_im(envelope_id: &str, event_id: &str) -> Value {
    envelope(
        envelope_id,
        "events_api",
        false,
        json!({
            "team_id": TEAM, "api_app_id": "A0BITBUCKET", "type": "event_callback",
            "event_id": event_id, "event_time": 1_800_000_000,
            "event": {
                "type": "message", "channel_type": "im", "channel": "D0ADA",
                "user": "UADA", "text": "hello?", "ts": "1.1", "event_ts": "1.1",
            }
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_the_work_and_a_killed_one_loses_nothing() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let settings = server.settings();
    let database = Postgres::database_of(&settings);
    let slack = FakeSlack::start().await;
    slack.add_workspace(
        BOT,
        FakeWorkspace::new(TEAM, "Fake Team", &required_scopes().join(",")),
    );
    let bitbucket = FakeBitbucket::start().await;
    for n in 0..REPOSITORIES {
        bitbucket.add_repository(&repository(n));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("storage.key");
    std::fs::write(&key, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n").expect("key");

    // Every repository watched, each followed by its own channel, before the replicas
    // start (written through the shared store, as any replica's CLI could).
    {
        let store =
            Store::open_backend(&Backend::Postgres(settings.clone()), dir.path(), Some(&key))
                .expect("the shared store");
        for n in 0..REPOSITORIES {
            let name = repository(n).parse().expect("a name");
            store.repositories.watch(&name).await.expect("watch");
            store
                .subscriptions
                .put(&Subscription {
                    team_id: TEAM.into(),
                    channel_id: channel(n),
                    target: Target::Repository(repository(n)),
                    features: Features::defaults(),
                    filters: Filters::default(),
                    main_branch: Some("main".into()),
                    created_by: "UADA".into(),
                    created_at: jiff::Timestamp::UNIX_EPOCH,
                    paused: None,
                    private: Some(false),
                    coverage: Default::default(),
                })
                .await
                .expect("subscribe");
        }
    }
    let url = settings.url.expose().clone();
    let config_a = replica_config(dir.path(), "a", &slack, &bitbucket, &url, &key);
    let config_b = replica_config(dir.path(), "b", &slack, &bitbucket, &url, &key);
    let mut a = Daemon::spawn(&["run", "--config", &config_a], &[]);
    let socket_a = slack.accept().await;
    a.wait_for_log("ready: a Slack socket is connected").await;
    let mut b = Daemon::spawn(&["run", "--config", &config_b], &[]);
    let socket_b = slack.accept().await;
    b.wait_for_log("ready: a Slack socket is connected").await;

    // Both hold some of the repositories once the leases settle.
    let holders = || {
        server.psql(
            &database,
            "SELECT count(DISTINCT holder) FROM leases WHERE name LIKE 'repo:%'",
        )
    };
    wait_until(
        "both replicas to hold repositories",
        Duration::from_secs(30),
        || holders() == "2",
    )
    .await;
    let store = Store::open_backend(&Backend::Postgres(settings.clone()), dir.path(), Some(&key))
        .expect("the shared store");
    let baselined = |store: &Store| {
        (0..REPOSITORIES).all(|n| {
            store
                .repositories
                .cursor::<Value>(&repository(n))
                .ok()
                .flatten()
                .is_some()
        })
    };
    wait_until(
        "every repository's baseline",
        Duration::from_secs(30),
        || baselined(&store),
    )
    .await;

    // An envelope Slack retries on the other replica's socket is handled once.
    socket_a.send_json(&message_im("env-1", "Ev1")).await;
    socket_a.next_ack().await;
    socket_b.send_json(&message_im("env-2", "Ev1")).await;
    socket_b.next_ack().await;

    // Round one: a push to every repository reaches its channel once.
    for n in 0..REPOSITORIES {
        bitbucket.push(&repository(n), "main", &[&format!("first change of r{n}")]);
    }
    let delivered = |slack: &FakeSlack| {
        (0..REPOSITORIES)
            .filter(|n| !slack.posts_to(&channel(*n)).is_empty())
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered(&slack) < REPOSITORIES {
        assert!(
            Instant::now() < deadline,
            "round one reached {} of {REPOSITORIES} channels; outbox {}, activities {}\nA: {:#?}\nB: {:#?}",
            delivered(&slack),
            store.deliveries.depth(),
            store.activities.len(),
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(slack.posts_to("D0ADA").len(), 1, "the DM is answered once");

    // Round two, and the replica holding the most leases is killed mid-load.
    let biggest: u32 = server
        .psql(
            &database,
            "SELECT r.pid FROM leases l JOIN replicas r ON r.id = l.holder
             GROUP BY r.pid ORDER BY count(*) DESC LIMIT 1",
        )
        .parse()
        .expect("a pid");
    for n in 0..REPOSITORIES {
        bitbucket.push(&repository(n), "main", &[&format!("second change of r{n}")]);
    }
    let (mut killed, mut survivor, survivor_config) = if a.pid() == biggest {
        (a, b, config_b.clone())
    } else {
        (b, a, config_a.clone())
    };
    killed.signal("KILL");
    killed.wait_exit().await;
    let killed_at = Instant::now();
    wait_until(
        "round two in every channel (or recorded as uncertain)",
        Duration::from_secs(60),
        || {
            let uncertain = store.deliveries.uncertain().unwrap_or_default();
            (0..REPOSITORIES).all(|n| {
                slack.posts_to(&channel(n)).len() >= 2
                    || uncertain
                        .iter()
                        .any(|delivery| delivery.channel_id == channel(n))
            })
        },
    )
    .await;
    let took = killed_at.elapsed();
    assert!(
        took <= Duration::from_secs(LEASE_TTL_SECS + 5 + 10),
        "the survivor took over in {took:?}"
    );
    for n in 0..REPOSITORIES {
        let posts = slack.posts_to(&channel(n));
        assert!(
            posts.len() <= 2,
            "channel {} got {} posts: nothing is doubled",
            channel(n),
            posts.len()
        );
    }
    assert_eq!(
        server.psql(
            &database,
            "SELECT count(DISTINCT holder) FROM leases WHERE name LIKE 'repo:%'"
        ),
        "1",
        "the survivor holds every repository"
    );
    assert_eq!(store.activities.pending(10).expect("pending").len(), 0);

    // Its metrics say what it holds and that it took leases over.
    let address = survivor.http_address().await;
    let (status, metrics) = support::daemon::http_get(&address, "/metrics").await;
    assert_eq!(status, 200);
    let value = |series: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
    };
    assert_eq!(
        value("bitbucket_slack_leases_held{kind=\"repo\"}"),
        REPOSITORIES as f64
    );
    assert_eq!(value("bitbucket_slack_leases_held{kind=\"leader\"}"), 1.0);
    assert!(
        value("bitbucket_slack_lease_takeovers_total") >= 1.0,
        "{metrics}"
    );

    // `status` on the surviving replica lists both replicas and what each holds.
    let (code, stdout, stderr) =
        support::daemon::run_to_end(&["status", "--json", "--config", &survivor_config], &[]).await;
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["engine"], "postgres");
    let replicas = report["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    assert_eq!(
        replicas
            .iter()
            .filter(|replica| replica["alive"] == true)
            .count(),
        1,
        "{replicas:?}"
    );
    survivor.signal("TERM");
    assert_eq!(survivor.wait_exit().await, 0);
}

/// The Slack install begun on one replica (its `state`) completes on the other: the
/// nonce and the signing key live in the shared store, so a load balancer may send the
/// callback anywhere. The state is still single-use across replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_install_begun_on_one_replica_completes_on_the_other() {
    use std::sync::Arc;
    use support::daemon::browse;
    use support::fake_slack::OAuthApproval;
    use support::harness::Harness;

    let Some(server) = Postgres::start() else {
        return;
    };
    let database = server.create_database();
    let url = server.url(&database);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("storage.key");
    std::fs::write(&key, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n").expect("key");
    let slack = Arc::new(FakeSlack::start().await);
    let replica = || {
        Harness::builder()
            .slack(slack.clone())
            .slack_oauth()
            .set("storage.backend", "postgres")
            .set("storage.postgres.url", url.as_str())
            .set("storage.encryption_key_file", key.display().to_string())
    };
    let a = replica().start().await;
    let b = replica().start().await;

    let install = browse(&format!("{}/slack/install", a.http)).await;
    assert_eq!(install.status, 302, "{}", install.body);
    let authorize = install.location.expect("a redirect to Slack");
    slack.approve_next(OAuthApproval {
        workspace: FakeWorkspace::new("T0NEW", "New Team", &required_scopes().join(",")),
        bot_token: "xoxb-installed-on-b".into(),
        installer_user_id: "U0ADMIN".into(),
        error: None,
    });
    let consent = browse(&authorize).await;
    let callback = consent.location.expect("Slack redirects back");
    // The browser's callback reaches replica B.
    let on_b = browse(&b.local(&callback)).await;
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    let store = Store::open_backend(
        &Backend::Postgres(server.settings_for(&database)),
        dir.path(),
        Some(&key),
    )
    .expect("the shared store");
    let installed = store
        .installations
        .get("T0NEW")
        .expect("read")
        .expect("installed through replica B");
    assert!(installed.is_active());
    // The same state again, now on A: used once, refused.
    let again = browse(&a.local(&callback)).await;
    assert_ne!(again.status, 200, "a state is single-use across replicas");
    a.stop().await;
    b.stop().await;
}
