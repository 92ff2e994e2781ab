//! Scale benchmark: the real `bitbucket-slack` binary on a large store, on each engine,
//! against both in-process fakes over loopback.
//!
//! ```text
//! cargo bench --bench scale                 # release build (LTO: several minutes to build)
//! cargo bench --profile dev --bench scale   # debug build, quicker to build, slower to run
//! ```
//!
//! The store: [`WORKSPACES`] installed workspaces, [`REPOSITORIES`] watched repositories
//! (each on the fake Bitbucket), [`SUBSCRIPTIONS`] channel subscriptions (five channels
//! per repository, spread over the workspaces), and, for the loaded runs,
//! [`DELIVERIES`] queued messages (twenty per channel). For sled, then PostgreSQL (when its
//! server binaries are installed; the bench starts its own server like the tests):
//!
//! 1. idle: the store without queued messages; after [`WARM_UP`], CPU time over
//!    [`IDLE_WINDOW`] (user + system, from `/proc/<pid>/stat`), scaled to an hour, and
//!    `VmRSS`/`VmHWM`. The poller keeps spending its request budget on the 1,000
//!    repositories meanwhile: that is the steady state.
//! 2. loaded: a fresh store with the 100,000 messages; start time (spawn to the log line
//!    `ready`), then over [`LOAD_WINDOW`] the messages Slack received per second and the CPU
//!    time per message, and `VmRSS`/`VmHWM` at the end.
//! 3. PostgreSQL only: two replicas on one loaded database, messages per second over the
//!    same window; then the replica holding more channel leases is killed with SIGKILL and
//!    the time until the other holds every channel lease is measured (the lease TTL is
//!    the default 30 s).
//!
//! Without the `--bench` argument (under `cargo test --all-targets`) it prints that it is
//! skipped and exits 0: it takes minutes.

#[allow(dead_code)]
#[path = "../tests/support/fake_bitbucket.rs"]
mod fake_bitbucket;
#[allow(dead_code)]
#[path = "../tests/support/fake_slack.rs"]
mod fake_slack;
#[allow(dead_code)]
#[path = "../tests/support/postgres.rs"]
mod postgres;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bitbucket_slack::bitbucket::Target;
use bitbucket_slack::message::Message;
use bitbucket_slack::notify::Notification;
use bitbucket_slack::notify::subscription::{Features, Filters, Subscription};
use bitbucket_slack::secret::Secret;
use bitbucket_slack::store::{
    Backend, InstallSource, Installation, InstallationState, NewDelivery, Store,
};
use bitbucket_slack::upgrade::required_scopes;
use fake_bitbucket::{FakeBitbucket, TOKEN};
use fake_slack::{FakeSlack, FakeWorkspace};
use postgres::Postgres;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const BINARY: &str = env!("CARGO_BIN_EXE_bitbucket-slack");
const APP_TOKEN: &str = "xapp-1-A0SCALE-app-token";
const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

const WORKSPACES: usize = 100;
const REPOSITORIES: usize = 1_000;
const CHANNELS_PER_REPOSITORY: usize = 5;
const SUBSCRIPTIONS: usize = REPOSITORIES * CHANNELS_PER_REPOSITORY;
const DELIVERIES_PER_CHANNEL: usize = 20;
const DELIVERIES: usize = SUBSCRIPTIONS * DELIVERIES_PER_CHANNEL;

const WARM_UP: Duration = Duration::from_secs(15);
const IDLE_WINDOW: Duration = Duration::from_secs(60);
const LOAD_WINDOW: Duration = Duration::from_secs(30);
const READY_LIMIT: Duration = Duration::from_secs(300);
const FAILOVER_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("scale benchmark skipped: run it with `cargo bench --bench scale`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    runtime.block_on(run());
}

fn team(n: usize) -> String {
    format!("T{n:03}")
}

fn bot_token(n: usize) -> String {
    format!("xoxb-scale-{n:03}")
}

fn repository(n: usize) -> String {
    format!("scale/r{n:04}")
}

/// Subscription `n`'s workspace and channel.
fn channel(n: usize) -> (String, String) {
    (team(n % WORKSPACES), format!("C{n:05}"))
}

async fn run() {
    let slack = FakeSlack::start().await;
    let scopes = required_scopes().join(",");
    for n in 0..WORKSPACES {
        slack.add_workspace(
            &bot_token(n),
            FakeWorkspace::new(&team(n), "Scale", &scopes),
        );
    }
    let bitbucket = FakeBitbucket::start().await;
    for n in 0..REPOSITORIES {
        bitbucket.add_repository(&repository(n));
    }
    println!(
        "scale: {WORKSPACES} workspaces, {REPOSITORIES} repositories, {SUBSCRIPTIONS} subscriptions, {DELIVERIES} queued messages ({})",
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
    let server = Postgres::start();
    let mut engines = vec![Engine::Sled];
    if server.is_some() {
        engines.push(Engine::Postgres);
    } else {
        println!("PostgreSQL server binaries not installed: the postgres runs are skipped");
    }
    for engine in engines {
        let backend = |server: &Option<Postgres>| match engine {
            Engine::Sled => Backend::Sled,
            Engine::Postgres => Backend::Postgres(
                server
                    .as_ref()
                    .expect("a server for the postgres runs")
                    .settings(),
            ),
        };
        let name = engine.name();

        // 1. Idle.
        let dir = tempfile::tempdir().expect("tempdir");
        let idle_backend = backend(&server);
        let started = Instant::now();
        seed(&idle_backend, dir.path(), false).await;
        println!(
            "{name}: seeded without messages in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let config = write_config(dir.path(), "idle", &slack, &bitbucket, &idle_backend);
        let mut idle = spawn(&config, &dir.path().join("idle.log"));
        let start_time = wait_ready(&dir.path().join("idle.log")).await;
        tokio::time::sleep(WARM_UP).await;
        let pid = idle.id().expect("a pid");
        let before = cpu_seconds(pid);
        tokio::time::sleep(IDLE_WINDOW).await;
        let per_hour = (cpu_seconds(pid) - before) * 3600.0 / IDLE_WINDOW.as_secs_f64();
        let rss = memory(pid);
        println!(
            "{name} idle: started in {:.2} s; CPU {:.1} s per hour; VmRSS {} KiB, VmHWM {} KiB",
            start_time.as_secs_f64(),
            per_hour,
            rss.0,
            rss.1
        );
        stop(&mut idle).await;

        // 2. Loaded.
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded_backend = backend(&server);
        let started = Instant::now();
        seed(&loaded_backend, dir.path(), true).await;
        println!(
            "{name}: seeded with {DELIVERIES} messages in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let posted_before = slack.calls_to("chat.postMessage").len();
        let config = write_config(dir.path(), "a", &slack, &bitbucket, &loaded_backend);
        let log = dir.path().join("a.log");
        let mut daemon = spawn(&config, &log);
        let start_time = wait_ready(&log).await;
        let pid = daemon.id().expect("a pid");
        let (rate, per_message) = delivery_window(&slack, &[pid]).await;
        let rss = memory(pid);
        println!(
            "{name} loaded: started in {:.2} s with {DELIVERIES} queued; {rate:.0} messages/s; CPU {:.2} ms per message; VmRSS {} KiB, VmHWM {} KiB",
            start_time.as_secs_f64(),
            per_message * 1000.0,
            rss.0,
            rss.1
        );
        let _ = posted_before;

        // 3. Two replicas (PostgreSQL).
        if engine == Engine::Postgres {
            let config_b = write_config(dir.path(), "b", &slack, &bitbucket, &loaded_backend);
            let log_b = dir.path().join("b.log");
            let mut second = spawn(&config_b, &log_b);
            wait_ready(&log_b).await;
            let pid_b = second.id().expect("a pid");
            // Let the channel leases spread over both.
            tokio::time::sleep(Duration::from_secs(15)).await;
            let (rate, per_message) = delivery_window(&slack, &[pid, pid_b]).await;
            println!(
                "postgres, two replicas: {rate:.0} messages/s; CPU {:.2} ms per message (both replicas)",
                per_message * 1000.0
            );
            let Backend::Postgres(settings) = &loaded_backend else {
                unreachable!("the postgres run")
            };
            let server = server.as_ref().expect("a server");
            let database = Postgres::database_of(settings);
            let holder_pid = |sql: &str| server.psql(&database, sql);
            let biggest: u32 = holder_pid(
                "SELECT r.pid FROM leases l JOIN replicas r ON r.id = l.holder
                 WHERE l.name LIKE 'channel:%' GROUP BY r.pid ORDER BY count(*) DESC LIMIT 1",
            )
            .parse()
            .expect("a pid");
            let (victim, survivor_pid) = if biggest == pid {
                (&mut daemon, pid_b)
            } else {
                (&mut second, pid)
            };
            let _ = victim.start_kill();
            let _ = victim.wait().await;
            let killed_at = Instant::now();
            let survivor_holds_all = || {
                server.psql(
                    &database,
                    &format!(
                        "SELECT count(*) FROM leases l JOIN replicas r ON r.id = l.holder
                         WHERE l.name LIKE 'channel:%' AND r.pid <> {survivor_pid}"
                    ),
                ) == "0"
            };
            while !survivor_holds_all() {
                assert!(
                    killed_at.elapsed() < FAILOVER_LIMIT,
                    "no failover within {FAILOVER_LIMIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            println!(
                "postgres failover: the survivor held every channel lease {:.1} s after the SIGKILL (lease TTL 30 s)",
                killed_at.elapsed().as_secs_f64()
            );
            if biggest == pid {
                stop(&mut second).await;
            } else {
                stop(&mut daemon).await;
            }
        } else {
            stop(&mut daemon).await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sled,
    Postgres,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Postgres => "postgres",
        }
    }
}

/// Fills a new store: workspaces, watched repositories, subscriptions and (`loaded`) the
/// queued messages.
async fn seed(backend: &Backend, dir: &Path, loaded: bool) {
    std::fs::write(dir.join("storage.key"), format!("{KEY}\n")).expect("key");
    let store = Store::open_backend(backend, &dir.join("data"), Some(&dir.join("storage.key")))
        .expect("open the store");
    // Now, so the queued messages are due at once.
    let at = jiff::Timestamp::now();
    for n in 0..WORKSPACES {
        store
            .installations
            .upsert(Installation {
                team_id: team(n),
                team_name: "Scale".into(),
                enterprise_id: None,
                bot_user_id: "U0BOT".into(),
                bot_id: None,
                app_id: None,
                bot_token: Some(Secret::new(bot_token(n))),
                scopes: required_scopes().iter().map(|s| s.to_string()).collect(),
                installer_user_id: Some("U0ADMIN".into()),
                installed_at: at,
                updated_at: at,
                state: InstallationState::Active,
                source: InstallSource::OAuth,
            })
            .await
            .expect("install");
    }
    for n in 0..REPOSITORIES {
        store
            .repositories
            .watch(&repository(n).parse().expect("a name"))
            .await
            .expect("watch");
        for k in 0..CHANNELS_PER_REPOSITORY {
            let (team_id, channel_id) = channel(n * CHANNELS_PER_REPOSITORY + k);
            store
                .subscriptions
                .put(&Subscription {
                    team_id,
                    channel_id,
                    target: Target::Repository(repository(n)),
                    features: Features::defaults(),
                    filters: Filters::default(),
                    main_branch: Some("main".into()),
                    created_by: "U0ADMIN".into(),
                    created_at: at,
                    paused: None,
                    private: Some(false),
                    coverage: Default::default(),
                })
                .await
                .expect("subscribe");
        }
    }
    if loaded {
        let mut batch = Vec::with_capacity(1000);
        for round in 0..DELIVERIES_PER_CHANNEL {
            for n in 0..SUBSCRIPTIONS {
                let (team_id, channel_id) = channel(n);
                batch.push(NewDelivery {
                    team_id,
                    channel_id,
                    activity_id: format!("scale-{round}-{n}"),
                    notification: Notification {
                        message: Message::text(format!("scale message {round} for {n}")),
                        thread_key: None,
                        parent_update: None,
                    },
                });
                if batch.len() == 1000 {
                    store
                        .deliveries
                        .enqueue(std::mem::take(&mut batch), at)
                        .await
                        .expect("enqueue");
                }
            }
        }
        if !batch.is_empty() {
            store.deliveries.enqueue(batch, at).await.expect("enqueue");
        }
        assert_eq!(store.deliveries.depth(), DELIVERIES);
    }
    store.flush().await.expect("flush");
}

fn write_config(
    dir: &Path,
    name: &str,
    slack: &FakeSlack,
    bitbucket: &FakeBitbucket,
    backend: &Backend,
) -> PathBuf {
    let engine = match backend {
        Backend::Sled => "backend = \"sled\"".to_owned(),
        Backend::Postgres(settings) => format!(
            "backend = \"postgres\"\n[storage.postgres]\nurl = {:?}\n",
            settings.url.expose()
        ),
    };
    let text = format!(
        "[slack]\napp_token = {APP_TOKEN:?}\napi_url = {:?}\nsocket_connections = 1\n\
         [bitbucket]\napi_url = {:?}\noauth_url = {:?}\ntoken = {TOKEN:?}\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[admin]\nsocket = {:?}\n\
         [log]\nlevel = \"warn,bitbucket_slack::app::background=info\"\n\
         [storage]\npath = {:?}\nencryption_key_file = {:?}\n{engine}\n",
        slack.api_url(),
        bitbucket.api_url(),
        bitbucket.oauth_url(),
        dir.join(format!("{name}.sock")).display().to_string(),
        dir.join("data").display().to_string(),
        dir.join("storage.key").display().to_string(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write the config");
    path
}

fn spawn(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("create the log");
    Command::new(BINARY)
        .args(["run", "--config"])
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("clone the log handle")))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the daemon")
}

/// How long the daemon took to log `ready` (from now, called right after the spawn).
async fn wait_ready(log: &Path) -> Duration {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("ready: a Slack socket is connected") {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < READY_LIMIT,
            "the daemon did not get ready: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Messages Slack received per second over [`LOAD_WINDOW`], and the CPU seconds the
/// `pids` spent per message.
async fn delivery_window(slack: &FakeSlack, pids: &[u32]) -> (f64, f64) {
    let posted = slack.calls_to("chat.postMessage").len();
    let cpu: f64 = pids.iter().map(|pid| cpu_seconds(*pid)).sum();
    tokio::time::sleep(LOAD_WINDOW).await;
    let messages = slack.calls_to("chat.postMessage").len() - posted;
    let spent: f64 = pids.iter().map(|pid| cpu_seconds(*pid)).sum::<f64>() - cpu;
    (
        messages as f64 / LOAD_WINDOW.as_secs_f64(),
        spent / (messages.max(1) as f64),
    )
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}

/// User plus system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of the whole line (utime, stime) are 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
