//! Chaos benchmark: the real `bitbucket-slack` binary against both in-process fakes
//! (`tests/support/fake_slack.rs`, `tests/support/fake_bitbucket.rs`), over loopback,
//! killed with SIGKILL and restarted on the same store again and again while it works,
//! with Slack socket faults in between.
//!
//! Run it with (a debug build is enough and avoids the 6-minute LTO release build):
//!
//! ```text
//! cargo bench --profile dev --bench chaos
//! CHAOS_SEED=7 CHAOS_KILLS=20 cargo bench --profile dev --bench chaos
//! ```
//!
//! What it does, seeded by `CHAOS_SEED` (default [`DEFAULT_SEED`]):
//!
//! 1. Setup: the fake Slack with one workspace (every scope), redelivering envelopes not
//!    acked on [`REDELIVERY_SCHEDULE`] (with `retry_attempt` / `retry_reason`, as Slack
//!    does for events); the fake Bitbucket with [`REPOS`]
//!    public repositories; channel `Cnn` subscribes to repository `nn` through a
//!    `/bitbucket subscribe` envelope (default features: pull requests and pushes to the
//!    main branch). A warm-up pull request and push per repository are awaited in its
//!    channel (proves every repository has its baseline, so later activity is news).
//! 2. Load: every `CHAOS_ACTIVITY_MS` (default 100 ms) one activity carrying a unique
//!    marker `CHAOS-nnnnnn`, round robin over the repositories, a round of pull requests
//!    (marker in the title) then a round of pushes to `main` (one commit, marker in its
//!    message), so each channel gets one every 2 s, under the daemon's one message a
//!    second per channel; every 50 ms a `/bitbucket help` envelope with a unique
//!    `envelope_id` on the newest open socket (none while the daemon has none).
//! 3. Chaos: `CHAOS_KILLS` cycles (default [`DEFAULT_KILLS`]). Each waits 0.5 to 3 s, then
//!    with probability 1/2 injects one socket fault, once the daemon has an open socket
//!    again: the server closes the newest open socket (a drop); a `disconnect` frame with reason `refresh_requested`, or `warning`; a
//!    half-open newest socket (connected, but nothing read or written, so no pong: the
//!    daemon's ping watchdog must notice; the bench waits up to the watchdog bound for the
//!    new socket, and the fake drops the connection [`HALF_OPEN_SLACK_SIDE`] after it); or a refresh storm ([`STORM_ROUNDS`] `refresh_requested` frames on every
//!    open socket, [`STORM_GAP`] apart). Then it waits 0.3 to 1.5 s, SIGKILLs the daemon
//!    and starts it again on the same store. The daemon runs with
//!    `slack.ping_interval_secs` = `CHAOS_PING_SECS` (default 2) and
//!    `slack.socket_idle_timeout_secs` = `CHAOS_IDLE_SECS` (default 5), so a half-open
//!    socket is replaced within about 7 s rather than 40 s (the shipped 10 / 30).
//! 4. Drain: the load stops, the daemon runs until every expected (marker, channel) was
//!    posted, only uncertain ones are missing, or [`DRAIN_LIMIT`] passed, then gets
//!    SIGTERM. `bitbucket-slack outbox --uncertain --json` (on the store, daemon
//!    stopped) lists the uncertain deliveries; their activity ids name the pull request
//!    (`{repo}:pr:{id}:..`) or the pushed range (`{repo}:push:{branch}:{from}..{to}`,
//!    which covers every marker pushed after `from` up to `to`).
//!
//! Report: activities created, deliveries expected and posted, LOST (expected, never
//! posted, not uncertain), missing-but-uncertain, DOUBLED (posted more than once; each
//! listed, with whether it is uncertain), envelopes as the fake Slack saw them (acked on
//! the first attempt, redelivered, acked on more than one attempt, never acked; attempts
//! acked 0 / 1 / 2+ times), and the reconnect time per fault kind (from the restart or
//! the fault to the next socket the fake accepted, which gets `hello` at once).
//!
//! Exit code 1 when anything was lost, a doubled message is not uncertain, or one
//! delivery attempt of an envelope was acked more than once.
//!
//! Without the `--bench` argument (under `cargo test --all-targets`) it prints that it is
//! skipped and exits 0: it takes minutes.

#[allow(dead_code)]
#[path = "../tests/support/fake_bitbucket.rs"]
mod fake_bitbucket;
#[allow(dead_code)]
#[path = "../tests/support/fake_slack.rs"]
mod fake_slack;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitbucket_slack::upgrade::required_scopes;
use fake_bitbucket::{FakeBitbucket, TOKEN};
use fake_slack::{EnvelopeRecord, FakeSlack, FakeSocket, FakeWorkspace, Frame};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The daemon under test.
const BINARY: &str = env!("CARGO_BIN_EXE_bitbucket-slack");

const DEFAULT_SEED: u64 = 20_261_130;
const DEFAULT_KILLS: usize = 50;
const CHANNELS: usize = 20;
/// One repository per channel: channel `Cnn` hears repository `nn`.
const REPOS: usize = CHANNELS;
const COMMAND_EVERY: Duration = Duration::from_millis(50);
const DEFAULT_ACTIVITY_MS: u64 = 100;
const DEFAULT_PING_SECS: u64 = 2;
const DEFAULT_IDLE_SECS: u64 = 5;
/// The fake Slack redelivers an envelope nobody acked: the first retry 3 s after the
/// first attempt (Slack's ack deadline), the next 10 s and 30 s after the one before
/// (Slack: about 1 and 5 minutes), so up to 4 deliveries.
const REDELIVERY_SCHEDULE: [Duration; 3] = [
    Duration::from_secs(3),
    Duration::from_secs(10),
    Duration::from_secs(30),
];
/// A refresh storm: this many `refresh_requested` rounds on every open socket.
const STORM_ROUNDS: usize = 5;
const STORM_GAP: Duration = Duration::from_millis(100);
/// A half-open socket's TCP connection is dropped by the fake (Slack's side noticing too)
/// this long after the daemon's watchdog bound.
const HALF_OPEN_SLACK_SIDE: Duration = Duration::from_secs(3);
/// How long a fault waits for an open socket (after a restart).
const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// How long the drain may take after the load stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(90);
/// How long setup (subscriptions, baselines) may take.
const SETUP_LIMIT: Duration = Duration::from_secs(90);

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("chaos benchmark skipped: run it with `cargo bench --bench chaos`");
        return;
    }
    let settings = Settings {
        seed: env_number("CHAOS_SEED", DEFAULT_SEED),
        kills: env_number("CHAOS_KILLS", DEFAULT_KILLS as u64) as usize,
        activity_every: Duration::from_millis(env_number("CHAOS_ACTIVITY_MS", DEFAULT_ACTIVITY_MS)),
        ping_secs: env_number("CHAOS_PING_SECS", DEFAULT_PING_SECS),
        idle_secs: env_number("CHAOS_IDLE_SECS", DEFAULT_IDLE_SECS),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let ok = runtime.block_on(run(settings));
    std::process::exit(if ok { 0 } else { 1 });
}

struct Settings {
    seed: u64,
    kills: usize,
    activity_every: Duration,
    ping_secs: u64,
    idle_secs: u64,
}

impl Settings {
    /// The longest a half-open socket can go unnoticed: silence is checked at each ping.
    fn watchdog_bound(&self) -> Duration {
        Duration::from_secs(self.idle_secs + self.ping_secs)
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {value:?}")),
        Err(_) => default,
    }
}

fn repo_name(index: usize) -> String {
    format!("chaos/r{index:02}")
}

fn channel_name(index: usize) -> String {
    format!("C{index:02}")
}

/// What the fake Slack's sockets saw: accepts (time) and the setup replies.
#[derive(Default)]
struct Wire {
    accepts: Vec<Instant>,
    /// The first ack's payload per envelope id, for the setup envelopes.
    replies: HashMap<String, Value>,
    /// Every socket accepted, oldest first (a refresh storm goes to the open ones).
    sockets: Vec<Arc<FakeSocket>>,
}

impl Wire {
    /// The newest socket, open or not.
    fn current(&self) -> Option<Arc<FakeSocket>> {
        self.sockets.last().cloned()
    }

    /// The newest socket the daemon has not closed (commands and single-socket faults go
    /// there; like Slack, which sends nothing to a closed socket). A half-open socket
    /// counts as open: Slack cannot tell.
    fn newest_open(&self) -> Option<Arc<FakeSocket>> {
        self.open().last().cloned()
    }

    /// Every socket the daemon has not closed, oldest first.
    fn open(&self) -> Vec<Arc<FakeSocket>> {
        self.sockets
            .iter()
            .filter(|socket| !socket.is_closed())
            .cloned()
            .collect()
    }
}

type Shared = Arc<Mutex<Wire>>;

fn lock(wire: &Shared) -> std::sync::MutexGuard<'_, Wire> {
    wire.lock().expect("wire lock")
}

/// Accepts every socket the daemon opens, and reads each one's acks.
fn spawn_acceptor(fake: Arc<FakeSlack>, wire: Shared, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            // Shorter than the fake's own 10 s limit, after which it panics.
            let Ok(socket) = tokio::time::timeout(Duration::from_secs(2), fake.accept()).await
            else {
                continue;
            };
            let socket = Arc::new(socket);
            {
                let mut wire = lock(&wire);
                wire.accepts.push(Instant::now());
                wire.sockets.push(socket.clone());
            }
            let wire = wire.clone();
            tokio::spawn(async move {
                loop {
                    let frame =
                        match tokio::time::timeout(Duration::from_secs(2), socket.next_frame())
                            .await
                        {
                            Ok(frame) => frame,
                            Err(_) if socket.is_closed() => break,
                            Err(_) => continue,
                        };
                    match frame {
                        Frame::Text(text) => {
                            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                                continue;
                            };
                            let Some(id) = value["envelope_id"].as_str() else {
                                continue;
                            };
                            lock(&wire)
                                .replies
                                .entry(id.to_string())
                                .or_insert_with(|| value["payload"].clone());
                        }
                        Frame::Close => break,
                        _ => {}
                    }
                }
            });
        }
    });
}

fn slash_command(fake: &FakeSlack, id: &str, channel: &str, text: &str) -> Value {
    json!({
        "envelope_id": id, "type": "slash_commands", "accepts_response_payload": true,
        "payload": {
            "team_id": "T0FAKE", "channel_id": channel, "user_id": "U1",
            "command": "/bitbucket", "text": text,
            "response_url": fake.response_url("chaos"), "trigger_id": "t"
        }
    })
}

struct Env {
    vars: Vec<(String, String)>,
    log: std::path::PathBuf,
}

fn spawn_daemon(env: &Env) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&env.log)
        .expect("open daemon.log");
    let mut command = Command::new(BINARY);
    command
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("clone the log handle")))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    for (key, value) in &env.vars {
        command.env(key, value);
    }
    command.spawn().expect("spawn the daemon")
}

/// Every marker `CHAOS-nnnnnn` in `text`.
fn markers(text: &str) -> Vec<u64> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("CHAOS-") {
        rest = &rest[at + "CHAOS-".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            found.push(n);
        }
    }
    found
}

/// (marker, channel) -> times posted, from the fake's chat.postMessage calls.
fn posted(fake: &FakeSlack) -> HashMap<(u64, String), u32> {
    let mut counts = HashMap::new();
    for call in fake.calls_to("chat.postMessage") {
        let post = call.json();
        let channel = post["channel"].as_str().unwrap_or_default().to_string();
        // One post names one pull request or one push (which may list several
        // commits, each with its own marker); count each marker once per post.
        let set: BTreeSet<u64> = markers(&post.to_string()).into_iter().collect();
        for marker in set {
            *counts.entry((marker, channel.clone())).or_default() += 1;
        }
    }
    counts
}

/// What one activity of the load was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Made {
    /// A pull request, by id.
    PullRequest(u64),
    /// A push of one commit to `main`; its head is in [`Ledger::pushes`].
    Push,
}

/// A created activity: which repository, what, its marker.
#[derive(Clone)]
struct Created {
    repo: usize,
    made: Made,
    marker: u64,
}

/// Everything the load created, and how to map an activity id back to markers.
#[derive(Default)]
struct Ledger {
    created: Vec<Created>,
    /// Repository -> (head, marker) of each push to `main`, in order.
    pushes: HashMap<String, Vec<(String, u64)>>,
}

impl Ledger {
    fn add(&mut self, repo: usize, made: Made, marker: u64, head: Option<String>) {
        self.created.push(Created { repo, made, marker });
        if let Some(head) = head {
            self.pushes
                .entry(repo_name(repo))
                .or_default()
                .push((head, marker));
        }
    }

    fn clear(&mut self) {
        self.created.clear();
        self.pushes.clear();
    }

    /// The markers an activity id names: `{repo}:pr:{id}:...` one pull request;
    /// `{repo}:push:{branch}:{from}..{to}` every push after `from` up to `to` (from the
    /// first when `from` was pushed before the load).
    fn markers_of(&self, activity: &str) -> Vec<u64> {
        if let Some((repo, rest)) = activity.split_once(":pr:") {
            let pr = rest.split(':').next().and_then(|id| id.parse::<u64>().ok());
            return self
                .created
                .iter()
                .filter(|c| repo_name(c.repo) == repo && Some(c.made) == pr.map(Made::PullRequest))
                .map(|c| c.marker)
                .collect();
        }
        let Some((repo, rest)) = activity.split_once(":push:") else {
            return Vec::new();
        };
        let Some((from, to)) = rest
            .rsplit_once(':')
            .and_then(|(_, range)| range.split_once(".."))
        else {
            return Vec::new();
        };
        let Some(pushes) = self.pushes.get(repo) else {
            return Vec::new();
        };
        let Some(last) = pushes.iter().position(|(head, _)| head == to) else {
            return Vec::new();
        };
        let first = pushes
            .iter()
            .position(|(head, _)| head == from)
            .map_or(0, |index| index + 1);
        if first > last {
            return Vec::new();
        }
        pushes[first..=last]
            .iter()
            .map(|(_, marker)| *marker)
            .collect()
    }
}

/// Opens a pull request or pushes one commit to `main`, each with a new marker.
fn create(
    bitbucket: &FakeBitbucket,
    ledger: &Mutex<Ledger>,
    next_marker: &AtomicU64,
    repo: usize,
    push: bool,
) {
    let marker = next_marker.fetch_add(1, Ordering::Relaxed);
    let name = repo_name(repo);
    let (made, head) = if push {
        let message = format!("Chaos push CHAOS-{marker:06}");
        let head = bitbucket.push(&name, "main", &[message.as_str()]);
        (Made::Push, Some(head))
    } else {
        let title = format!("Chaos change CHAOS-{marker:06}");
        let pr = bitbucket.open_pull_request(&name, &format!("feature/{marker}"), &title, "ada");
        (Made::PullRequest(pr), None)
    };
    ledger
        .lock()
        .expect("ledger lock")
        .add(repo, made, marker, head);
}

fn expected(created: &[Created]) -> Vec<(u64, String)> {
    let mut all = Vec::new();
    for c in created {
        for channel in (0..CHANNELS).filter(|ch| ch % REPOS == c.repo) {
            all.push((c.marker, channel_name(channel)));
        }
    }
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Kill,
    ServerClose,
    HalfOpen,
    Refresh,
    RefreshStorm,
    Warning,
}

impl Event {
    const FAULTS: [Event; 5] = [
        Event::ServerClose,
        Event::Refresh,
        Event::Warning,
        Event::HalfOpen,
        Event::RefreshStorm,
    ];

    fn name(self) -> &'static str {
        match self {
            Event::Kill => "SIGKILL + restart",
            Event::ServerClose => "server drops the socket",
            Event::HalfOpen => "half-open socket (no pongs)",
            Event::Refresh => "disconnect refresh_requested",
            Event::RefreshStorm => "refresh storm",
            Event::Warning => "disconnect warning",
        }
    }
}

/// Injects one socket fault into the open sockets, once there is one (waiting up to
/// [`SOCKET_WAIT`] after a restart); returns when it was injected.
async fn inject(fault: Event, wire: &Shared, settings: &Settings) -> Option<Instant> {
    let until = Instant::now() + SOCKET_WAIT;
    let socket = loop {
        if let Some(socket) = lock(wire).newest_open() {
            break socket;
        }
        if Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let at = Instant::now();
    match fault {
        Event::ServerClose => socket.send_close().await,
        Event::Refresh => socket.send_disconnect("refresh_requested").await,
        Event::Warning => socket.send_disconnect("warning").await,
        Event::HalfOpen => {
            let accepted = lock(wire).accepts.len();
            socket
                .go_half_open(settings.watchdog_bound() + HALF_OPEN_SLACK_SIDE)
                .await;
            // Let the watchdog find it before the next kill hides it.
            let until = Instant::now() + settings.watchdog_bound() + Duration::from_secs(3);
            while lock(wire).accepts.len() == accepted && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Event::RefreshStorm => {
            for round in 0..STORM_ROUNDS {
                if round > 0 {
                    tokio::time::sleep(STORM_GAP).await;
                }
                let open = lock(wire).open();
                for socket in open {
                    socket.send_disconnect("refresh_requested").await;
                }
            }
        }
        Event::Kill => unreachable!("a kill is not a socket fault"),
    }
    Some(at)
}

/// Envelope figures from the fake Slack's log of attempts and acks.
#[derive(Default)]
struct AckFigures {
    envelopes: usize,
    acked_first_attempt: usize,
    redelivered: usize,
    redelivered_then_acked: usize,
    never_acked: usize,
    acked_on_two_attempts: Vec<String>,
    /// Attempts written (not swallowed by a half-open socket) acked 0 / 1 / 2+ times.
    attempts_acked: [usize; 3],
    swallowed_attempts: usize,
    /// For envelopes acked on more than one attempt: how late the first ack came.
    late_first_acks: Vec<Duration>,
}

fn ack_figures(log: &[EnvelopeRecord]) -> AckFigures {
    let mut figures = AckFigures::default();
    for record in log {
        figures.envelopes += 1;
        let acked: Vec<_> = record.attempts.iter().filter(|a| a.acks > 0).collect();
        if record.attempts.first().is_some_and(|a| a.acks > 0) {
            figures.acked_first_attempt += 1;
        }
        if record.attempts.len() > 1 {
            figures.redelivered += 1;
            if !acked.is_empty() {
                figures.redelivered_then_acked += 1;
            }
        }
        if acked.is_empty() {
            figures.never_acked += 1;
        }
        if acked.len() > 1 {
            figures
                .acked_on_two_attempts
                .push(record.envelope_id.clone());
            if let Some(first) = acked.first()
                && let Some(at) = first.first_ack_at
            {
                figures.late_first_acks.push(at - first.sent_at);
            }
        }
        for attempt in &record.attempts {
            if attempt.swallowed {
                figures.swallowed_attempts += 1;
            } else {
                figures.attempts_acked[(attempt.acks as usize).min(2)] += 1;
            }
        }
    }
    figures
}

async fn run(settings: Settings) -> bool {
    let Settings {
        seed,
        kills,
        activity_every,
        ..
    } = settings;
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# chaos benchmark");
    println!(
        "seed {seed}, {kills} SIGKILL cycles, an activity (pull request or push) every {} ms, \
         a command every {} ms, {CHANNELS} channels, {REPOS} repositories, ping every {} s, \
         silent socket replaced after {} s, redelivery after {:?}, \
         {cpus} CPUs, binary {BINARY}",
        activity_every.as_millis(),
        COMMAND_EVERY.as_millis(),
        settings.ping_secs,
        settings.idle_secs,
        REDELIVERY_SCHEDULE,
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let slack = Arc::new(FakeSlack::start().await);
    slack.add_workspace(
        "xoxb-chaos",
        FakeWorkspace::new("T0FAKE", "Fake Team", &required_scopes().join(",")),
    );
    slack.redeliver_unacked(&REDELIVERY_SCHEDULE);
    let bitbucket = Arc::new(FakeBitbucket::start().await);
    for repo in 0..REPOS {
        bitbucket.add_repository(&repo_name(repo));
    }
    let dir = tempfile::tempdir().expect("create a temp dir");
    let vars: Vec<(String, String)> = [
        ("SLACK__APP_TOKEN", "xapp-1-chaos".to_string()),
        ("SLACK__BOT_TOKEN", "xoxb-chaos".into()),
        ("SLACK__API_URL", slack.api_url()),
        ("SLACK__SOCKET_CONNECTIONS", "1".into()),
        ("SLACK__PING_INTERVAL_SECS", settings.ping_secs.to_string()),
        (
            "SLACK__SOCKET_IDLE_TIMEOUT_SECS",
            settings.idle_secs.to_string(),
        ),
        ("BITBUCKET__API_URL", bitbucket.api_url()),
        ("BITBUCKET__OAUTH_URL", bitbucket.oauth_url()),
        ("BITBUCKET__TOKEN", TOKEN.into()),
        ("BITBUCKET__POLL_INTERVAL_SECS", "1".into()),
        ("BITBUCKET__RATE_LIMIT_PER_HOUR", "100000".into()),
        (
            "STORAGE__PATH",
            dir.path().join("store").display().to_string(),
        ),
        ("HTTP__LISTEN", "127.0.0.1:0".into()),
        ("LOG__LEVEL", "warn".into()),
    ]
    .into_iter()
    .map(|(key, value)| (format!("BITBUCKET_SLACK__{key}"), value))
    .collect();
    let env = Env {
        vars,
        log: dir.path().join("daemon.log"),
    };

    let wire: Shared = Arc::default();
    let stop_accepting = Arc::new(AtomicBool::new(false));
    spawn_acceptor(slack.clone(), wire.clone(), stop_accepting.clone());
    let mut child = spawn_daemon(&env);

    // ---- 1. setup -----------------------------------------------------------------
    let setup_deadline = Instant::now() + SETUP_LIMIT;
    while lock(&wire).current().is_none() {
        assert!(
            Instant::now() < setup_deadline,
            "no socket: {}",
            read_log(&env.log)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for channel in 0..CHANNELS {
        let id = format!("setup-{channel:02}");
        let text = format!("subscribe {}", repo_name(channel % REPOS));
        let socket = lock(&wire).current().expect("a socket");
        socket
            .send_json(&slash_command(&slack, &id, &channel_name(channel), &text))
            .await;
        let reply = loop {
            if let Some(reply) = lock(&wire).replies.get(&id).cloned() {
                break reply;
            }
            assert!(Instant::now() < setup_deadline, "no ack for {id}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(
            reply.to_string().contains("Subscribed this channel"),
            "{id}: {reply}"
        );
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let next_marker = Arc::new(AtomicU64::new(0));
    // Baselines: a pull request and a push in each repository, seen in its channel.
    // Until a repository has its baseline, new activity there is part of it, not news.
    let mut warm = false;
    while !warm && Instant::now() < setup_deadline {
        for repo in 0..REPOS {
            create(&bitbucket, &ledger, &next_marker, repo, false);
            create(&bitbucket, &ledger, &next_marker, repo, true);
        }
        let until = (Instant::now() + Duration::from_secs(20)).min(setup_deadline);
        while Instant::now() < until {
            let counts = posted(&slack);
            let heard = {
                let ledger = ledger.lock().expect("ledger lock");
                let mut heard = BTreeSet::new();
                for c in &ledger.created {
                    for key in expected(std::slice::from_ref(c)) {
                        if counts.contains_key(&key) {
                            heard.insert((key.1, c.made == Made::Push));
                        }
                    }
                }
                heard
            };
            if heard.len() == 2 * CHANNELS {
                warm = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        warm,
        "not every channel got a pull request and a push during setup"
    );
    // Only what is created from now on counts.
    let baseline_markers = next_marker.load(Ordering::Relaxed);
    ledger.lock().expect("ledger lock").clear();
    println!(
        "setup done after {:.1} s ({} warm-up activities)",
        started.elapsed().as_secs_f64(),
        baseline_markers
    );

    // ---- 2. load ------------------------------------------------------------------
    let load_stop = Arc::new(AtomicBool::new(false));
    // Envelope id, and whether the fake already saw its socket closed when it was sent.
    let commands_sent = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let command_task = {
        let (stop, wire, slack, sent) = (
            load_stop.clone(),
            wire.clone(),
            slack.clone(),
            commands_sent.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(COMMAND_EVERY);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let Some(socket) = lock(&wire).newest_open() else {
                    continue;
                };
                let id = format!("help-{n:06}");
                n += 1;
                sent.lock()
                    .expect("sent lock")
                    .push((id.clone(), socket.is_closed()));
                socket
                    .send_json(&slash_command(&slack, &id, "C00", "help"))
                    .await;
            }
        })
    };
    let activity_task = {
        let (stop, bitbucket, ledger, next_marker) = (
            load_stop.clone(),
            bitbucket.clone(),
            ledger.clone(),
            next_marker.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(activity_every);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                // A round of pull requests, then a round of pushes.
                let (repo, push) = (n % REPOS, (n / REPOS) % 2 == 1);
                n += 1;
                create(&bitbucket, &ledger, &next_marker, repo, push);
            }
        })
    };

    // ---- 3. chaos -----------------------------------------------------------------
    let mut events: Vec<(Event, Instant)> = Vec::new();
    for cycle in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
        if rng.random_bool(0.5) {
            let fault = Event::FAULTS[rng.random_range(0..Event::FAULTS.len())];
            match inject(fault, &wire, &settings).await {
                Some(at) => events.push((fault, at)),
                None => println!("no open socket for a {} fault", fault.name()),
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        }
        // SIGKILL (tokio's start_kill sends SIGKILL on Unix), then the same store again.
        child.start_kill().expect("SIGKILL the daemon");
        let _ = child.wait().await;
        let at = Instant::now();
        child = spawn_daemon(&env);
        events.push((Event::Kill, at));
        if (cycle + 1) % 10 == 0 {
            println!(
                "{} kills after {:.1} s",
                cycle + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }

    // ---- 4. drain -----------------------------------------------------------------
    load_stop.store(true, Ordering::Relaxed);
    let _ = command_task.await;
    let _ = activity_task.await;
    let load_stopped = Instant::now();
    let wanted = expected(&ledger.lock().expect("ledger lock").created);
    let mut asked = Instant::now();
    loop {
        let counts = posted(&slack);
        let missing: Vec<&(u64, String)> = wanted
            .iter()
            .filter(|key| !counts.contains_key(*key))
            .collect();
        if missing.is_empty() || load_stopped.elapsed() > DRAIN_LIMIT {
            break;
        }
        // An uncertain delivery is never posted by itself: done once only those are left
        // (asked of the running daemon through its admin socket, every 2 s).
        if asked.elapsed() > Duration::from_secs(2) {
            asked = Instant::now();
            if let Some(rows) = uncertain_rows(&env).await {
                let (keys, _) = uncertain_keys(&rows, &ledger.lock().expect("ledger lock"));
                if missing.iter().all(|key| keys.contains(*key)) {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained = load_stopped.elapsed();
    // Stray acks for the last envelopes, and their redeliveries: until no envelope
    // awaits one (or the whole schedule passed).
    let settle_until = Instant::now() + REDELIVERY_SCHEDULE.iter().sum::<Duration>();
    tokio::time::sleep(Duration::from_millis(500)).await;
    while Instant::now() < settle_until
        && slack.envelope_log().iter().any(|record| {
            record.attempts.iter().all(|attempt| attempt.acks == 0)
                && record.attempts.len() <= REDELIVERY_SCHEDULE.len()
        })
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pid = child.id().expect("the daemon runs");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(term.success(), "kill -TERM failed");
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the daemon exits after SIGTERM")
        .expect("wait for the daemon");
    stop_accepting.store(true, Ordering::Relaxed);

    let uncertain = uncertain_rows(&env)
        .await
        .expect("outbox --uncertain --json on the stopped daemon's store");
    let ledger = ledger.lock().expect("ledger lock");
    let (uncertain_keys, uncertain_other) = uncertain_keys(&uncertain, &ledger);

    // ---- 5. report ----------------------------------------------------------------
    let counts = posted(&slack);
    let mut delivered = 0;
    let mut lost = Vec::new();
    let mut missing_uncertain = 0;
    let mut uncertain_posted_once = 0;
    let mut doubled = Vec::new();
    for key in &wanted {
        match counts.get(key).copied().unwrap_or(0) {
            0 if uncertain_keys.contains(key) => missing_uncertain += 1,
            0 => lost.push(key.clone()),
            1 => {
                delivered += 1;
                if uncertain_keys.contains(key) {
                    uncertain_posted_once += 1;
                }
            }
            n => {
                delivered += 1;
                doubled.push((key.clone(), n, uncertain_keys.contains(key)));
            }
        }
    }
    let kind_of: HashMap<u64, Made> = ledger.created.iter().map(|c| (c.marker, c.made)).collect();
    let pull_requests = ledger
        .created
        .iter()
        .filter(|c| matches!(c.made, Made::PullRequest(_)))
        .count();
    let pushes = ledger.created.len() - pull_requests;
    let wire = lock(&wire);
    let sent = commands_sent.lock().expect("sent lock").clone();
    let sent_to_closed = sent.iter().filter(|(_, closed)| *closed).count();
    let log = slack.envelope_log();
    let written: BTreeSet<&str> = log.iter().map(|r| r.envelope_id.as_str()).collect();
    let never_written = sent
        .iter()
        .filter(|(id, _)| !written.contains(id.as_str()))
        .count();
    let acks = ack_figures(&log);
    let mut reconnects: BTreeMap<Event, Vec<Duration>> = BTreeMap::new();
    let mut no_reconnect: BTreeMap<Event, usize> = BTreeMap::new();
    for (index, (event, at)) in events.iter().enumerate() {
        // A fault's reconnect counts only if it came before the next event (the kill).
        let until = events.get(index + 1).map(|(_, next)| *next);
        let next_socket = wire
            .accepts
            .iter()
            .find(|accepted| *accepted >= at && until.is_none_or(|until| **accepted < until));
        match next_socket {
            Some(accepted) => reconnects.entry(*event).or_default().push(*accepted - *at),
            None => *no_reconnect.entry(*event).or_default() += 1,
        }
    }

    println!();
    println!("| Measure | Value |");
    println!("|---|---|");
    println!("| Seed | {seed} |");
    println!("| SIGKILL + restart cycles | {kills} |");
    for event in Event::FAULTS {
        let n = events.iter().filter(|(e, _)| *e == event).count();
        println!("| Socket faults: {} | {n} |", event.name());
    }
    println!(
        "| Activities created after setup: pull requests / pushes | {pull_requests} / {pushes} |"
    );
    println!(
        "| Deliveries expected (activity x channel) | {} |",
        wanted.len()
    );
    println!("| Delivered (distinct marker per channel posted) | {delivered} |");
    println!("| LOST (never posted, not uncertain) | {} |", lost.len());
    println!("| Missing but uncertain | {missing_uncertain} |");
    println!(
        "| Uncertain deliveries listed | {} ({} not from this load) |",
        uncertain.len(),
        uncertain_other
    );
    println!("| Uncertain and posted exactly once | {uncertain_posted_once} |");
    println!(
        "| DOUBLED (of them uncertain) | {} ({}) |",
        doubled.len(),
        doubled.iter().filter(|(_, _, u)| *u).count()
    );
    println!(
        "| Drain after the load stopped | {:.1} s |",
        drained.as_secs_f64()
    );
    println!(
        "| `/bitbucket help` envelopes sent / to a socket already closed (never written) | {} / {} ({never_written}) |",
        sent.len(),
        sent_to_closed
    );
    println!(
        "| Envelopes written (setup + help) / acked on the first attempt | {} / {} |",
        acks.envelopes, acks.acked_first_attempt
    );
    println!(
        "| Envelopes redelivered / then acked | {} / {} |",
        acks.redelivered, acks.redelivered_then_acked
    );
    println!(
        "| Envelopes never acked after {} attempts | {} |",
        REDELIVERY_SCHEDULE.len() + 1,
        acks.never_acked
    );
    println!(
        "| Envelopes acked on more than one attempt | {} |",
        acks.acked_on_two_attempts.len()
    );
    println!(
        "| Delivery attempts acked 0 / 1 / 2+ times (+ swallowed by a half-open socket) | {} / {} / {} (+ {}) |",
        acks.attempts_acked[0],
        acks.attempts_acked[1],
        acks.attempts_acked[2],
        acks.swallowed_attempts
    );
    println!(
        "| Acks for an attempt not written on that socket | {} |",
        slack.stray_acks()
    );
    for (event, times) in &mut reconnects {
        times.sort();
        println!(
            "| Reconnect after {} (n={}): p50 / p99 / max | {} / {} / {} |",
            event.name(),
            times.len(),
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.99)),
            ms(*times.last().unwrap_or(&Duration::ZERO))
        );
    }
    for (event, n) in &no_reconnect {
        println!(
            "| No new socket before the next event after {} | {n} |",
            event.name()
        );
    }
    println!(
        "| Half-open watchdog bound (idle timeout + ping interval) | {} s |",
        settings.watchdog_bound().as_secs()
    );
    println!("| SIGTERM exit code at the end | {:?} |", exit.code());
    println!("| Whole run | {:.1} s |", started.elapsed().as_secs_f64());
    for ((marker, channel), n, is_uncertain) in &doubled {
        let kind = match kind_of.get(marker) {
            Some(Made::Push) => "push",
            _ => "pull request",
        };
        println!(
            "doubled: CHAOS-{marker:06} ({kind}) in {channel}, posted {n} times, uncertain: {is_uncertain}"
        );
    }
    for (id, late) in acks
        .acked_on_two_attempts
        .iter()
        .zip(acks.late_first_acks.iter())
    {
        println!(
            "acked on two attempts: {id}, first ack {} after the first attempt",
            ms(*late)
        );
    }
    for record in log
        .iter()
        .filter(|record| record.attempts.iter().all(|attempt| attempt.acks == 0))
        .take(10)
    {
        let first = record.attempts.first().map(|attempt| attempt.sent_at);
        let attempts: Vec<String> = record
            .attempts
            .iter()
            .map(|attempt| {
                format!(
                    "#{} socket {} at +{} {}",
                    attempt.retry_attempt,
                    attempt.ticket,
                    ms(first.map_or(Duration::ZERO, |first| attempt.sent_at - first)),
                    if attempt.swallowed {
                        "swallowed (half-open)"
                    } else {
                        "written, no ack"
                    }
                )
            })
            .collect();
        println!(
            "never acked: {}: {}",
            record.envelope_id,
            attempts.join("; ")
        );
    }
    for (marker, channel) in lost.iter().take(20) {
        println!("lost: CHAOS-{marker:06} in {channel}");
    }
    let bad_doubles = doubled.iter().filter(|(_, _, u)| !u).count();
    let ok = lost.is_empty() && bad_doubles == 0 && acks.attempts_acked[2] == 0;
    if !ok {
        println!(
            "FAILED: {} lost, {bad_doubles} doubled and not uncertain, {} attempts acked twice; \
             daemon log tail:\n{}",
            lost.len(),
            acks.attempts_acked[2],
            tail(&read_log(&env.log), 40)
        );
    }
    ok
}

/// (marker, channel) of each uncertain delivery, through its activity id, and how many
/// rows are not from this load.
fn uncertain_keys(rows: &[Value], ledger: &Ledger) -> (BTreeSet<(u64, String)>, usize) {
    let mut keys = BTreeSet::new();
    let mut other = 0;
    for row in rows {
        let activity = row["activity_id"].as_str().unwrap_or_default();
        let channel = row["channel_id"].as_str().unwrap_or_default().to_string();
        let markers = ledger.markers_of(activity);
        if markers.is_empty() {
            other += 1;
        }
        for marker in markers {
            keys.insert((marker, channel.clone()));
        }
    }
    (keys, other)
}

/// `bitbucket-slack outbox --uncertain --json`: asks the running daemon, or reads the
/// store when it is stopped. `None` when that fails.
async fn uncertain_rows(env: &Env) -> Option<Vec<Value>> {
    let mut command = Command::new(BINARY);
    command
        .args(["outbox", "--uncertain", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in &env.vars {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(10), command.output())
        .await
        .ok()?
        .ok()?;
    if !output.status.success() {
        println!(
            "outbox --uncertain failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    serde_json::from_slice::<Value>(&output.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
