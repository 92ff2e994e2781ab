//! Chaos benchmark: the real `bitbucket-slack` binary against both in-process fakes
//! (`tests/support/fake_slack.rs`, `tests/support/fake_bitbucket.rs`), over loopback,
//! killed with SIGKILL and restarted on the same store again and again while it works.
//!
//! Run it with (a debug build is enough and avoids the 6-minute LTO release build):
//!
//! ```text
//! cargo bench --profile dev --bench chaos
//! CHAOS_SEED=7 CHAOS_KILLS=20 cargo bench --bench chaos
//! ```
//!
//! What it does, seeded by `CHAOS_SEED` (default [`DEFAULT_SEED`]):
//!
//! 1. Setup: the fake Slack with one workspace (every scope), the fake Bitbucket with
//!    [`REPOS`] public repositories; channels C00..C19 subscribe through
//!    `/bitbucket subscribe` envelopes, channel `Cnn` to repository `nn % REPOS`. One pull
//!    request per repository is opened and awaited in its channels (proves every
//!    repository has its baseline, so later pull requests are news).
//! 2. Load: every `CHAOS_ACTIVITY_MS` (default 200 ms) a new pull request with a unique
//!    marker `CHAOS-nnnnnn` in its title, round robin over the repositories; every 50 ms a
//!    `/bitbucket help` envelope with a unique `envelope_id` on the newest socket.
//! 3. Chaos: `CHAOS_KILLS` cycles (default [`DEFAULT_KILLS`]). Each waits 0.5 to 3 s, then
//!    with probability 1/2 injects one socket fault into the newest socket (the server
//!    closes it; a `disconnect` frame with reason `refresh_requested`; one with reason
//!    `warning`), waits 0.3 to 1.5 s, then SIGKILLs the daemon and starts it again on the
//!    same store.
//! 4. Drain: the load stops, the daemon runs until every expected (marker, channel) was
//!    posted or [`DRAIN_LIMIT`] passed, then gets SIGTERM. `bitbucket-slack outbox
//!    --uncertain --json` (on the store, daemon stopped) lists the uncertain deliveries.
//!
//! Report: pull requests created, deliveries expected and posted, LOST (expected, never
//! posted, not uncertain), missing-but-uncertain, DOUBLED (posted more than once; each
//! listed, with whether it is uncertain), acks per envelope (0 / 1 / 2+), and the
//! reconnect time after each kill and each fault (from the restart or the fault to the
//! next socket the fake accepted, which gets `hello` at once).
//!
//! Exit code 1 when anything was lost or a doubled message is not uncertain.
//!
//! The delivery worker posts at most one message a second per channel (Slack's own
//! limit), so the pull request pace must stay below that per channel: with 10
//! repositories and 20 channels, one pull request every 200 ms is 0.5 a second a channel.
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
use fake_slack::{FakeSlack, FakeSocket, FakeWorkspace, Frame};
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
const REPOS: usize = 10;
const COMMAND_EVERY: Duration = Duration::from_millis(50);
const DEFAULT_ACTIVITY_MS: u64 = 200;
/// How long the drain may take after the load stops.
const DRAIN_LIMIT: Duration = Duration::from_secs(90);
/// How long setup (subscriptions, baselines) may take.
const SETUP_LIMIT: Duration = Duration::from_secs(90);

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("chaos benchmark skipped: run it with `cargo bench --bench chaos`");
        return;
    }
    let seed = env_number("CHAOS_SEED", DEFAULT_SEED);
    let kills = env_number("CHAOS_KILLS", DEFAULT_KILLS as u64) as usize;
    let activity_every =
        Duration::from_millis(env_number("CHAOS_ACTIVITY_MS", DEFAULT_ACTIVITY_MS));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let ok = runtime.block_on(run(seed, kills, activity_every));
    std::process::exit(if ok { 0 } else { 1 });
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

/// What the fake Slack's sockets saw: accepts (time) and acks per envelope id.
#[derive(Default)]
struct Wire {
    accepts: Vec<Instant>,
    acks: HashMap<String, u32>,
    /// The first ack's payload, for the setup envelopes.
    replies: HashMap<String, Value>,
    /// The newest socket (commands and faults go there).
    current: Option<Arc<FakeSocket>>,
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
                wire.current = Some(socket.clone());
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
                            let mut wire = lock(&wire);
                            *wire.acks.entry(id.to_string()).or_default() += 1;
                            wire.replies
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
        // One post names one pull request; count each marker once per post.
        let set: BTreeSet<u64> = markers(&post.to_string()).into_iter().collect();
        for marker in set {
            *counts.entry((marker, channel.clone())).or_default() += 1;
        }
    }
    counts
}

/// A created pull request: which repository, its id, its marker.
#[derive(Clone)]
struct Created {
    repo: usize,
    pr: u64,
    marker: u64,
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
    Refresh,
    Warning,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Kill => "SIGKILL + restart",
            Event::ServerClose => "server closes the socket",
            Event::Refresh => "disconnect refresh_requested",
            Event::Warning => "disconnect warning",
        }
    }
}

async fn run(seed: u64, kills: usize, activity_every: Duration) -> bool {
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# chaos benchmark");
    println!(
        "seed {seed}, {kills} SIGKILL cycles, a pull request every {} ms, a command every {} ms, \
         {CHANNELS} channels, {REPOS} repositories, {cpus} CPUs, binary {BINARY}",
        activity_every.as_millis(),
        COMMAND_EVERY.as_millis()
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let slack = Arc::new(FakeSlack::start().await);
    slack.add_workspace(
        "xoxb-chaos",
        FakeWorkspace::new("T0FAKE", "Fake Team", &required_scopes().join(",")),
    );
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
    while lock(&wire).current.is_none() {
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
        let socket = lock(&wire).current.clone().expect("a socket");
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
    let created = Arc::new(Mutex::new(Vec::<Created>::new()));
    let next_marker = Arc::new(AtomicU64::new(0));
    let open = |repo: usize| {
        let marker = next_marker.fetch_add(1, Ordering::Relaxed);
        let title = format!("Chaos change CHAOS-{marker:06}");
        let name = repo_name(repo);
        let pr = bitbucket.open_pull_request(&name, &format!("feature/{marker}"), &title, "ada");
        created
            .lock()
            .expect("created lock")
            .push(Created { repo, pr, marker });
    };
    // Baselines: a pull request in each repository, seen in each of its channels. Until
    // a repository has one, a new pull request there is part of its baseline, not news.
    let mut warm = false;
    while !warm && Instant::now() < setup_deadline {
        for repo in 0..REPOS {
            open(repo);
        }
        let until = (Instant::now() + Duration::from_secs(20)).min(setup_deadline);
        while Instant::now() < until {
            let counts = posted(&slack);
            let seen: BTreeSet<&String> = counts.keys().map(|(_, channel)| channel).collect();
            if seen.len() == CHANNELS {
                warm = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(warm, "not every channel got a post during setup");
    // Only what is created from now on counts.
    let baseline_markers = next_marker.load(Ordering::Relaxed);
    created.lock().expect("created lock").clear();
    println!(
        "setup done after {:.1} s ({} warm-up pull requests)",
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
                let Some(socket) = lock(&wire).current.clone() else {
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
        let (stop, bitbucket, created, next_marker) = (
            load_stop.clone(),
            bitbucket.clone(),
            created.clone(),
            next_marker.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(activity_every);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let repo = n % REPOS;
                n += 1;
                let marker = next_marker.fetch_add(1, Ordering::Relaxed);
                let title = format!("Chaos change CHAOS-{marker:06}");
                let pr = bitbucket.open_pull_request(
                    &repo_name(repo),
                    &format!("feature/{marker}"),
                    &title,
                    "ada",
                );
                created
                    .lock()
                    .expect("created lock")
                    .push(Created { repo, pr, marker });
            }
        })
    };

    // ---- 3. chaos -----------------------------------------------------------------
    let mut events: Vec<(Event, Instant)> = Vec::new();
    for cycle in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
        if rng.random_bool(0.5) {
            let fault = match rng.random_range(0..3) {
                0 => Event::ServerClose,
                1 => Event::Refresh,
                _ => Event::Warning,
            };
            let current = lock(&wire).current.clone();
            if let Some(socket) = current {
                let at = Instant::now();
                match fault {
                    Event::ServerClose => socket.send_close().await,
                    Event::Refresh => socket.send_disconnect("refresh_requested").await,
                    _ => socket.send_disconnect("warning").await,
                }
                events.push((fault, at));
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
    let created: Vec<Created> = created.lock().expect("created lock").clone();
    let wanted = expected(&created);
    let by_pr: HashMap<(String, u64), u64> = created
        .iter()
        .map(|c| ((repo_name(c.repo), c.pr), c.marker))
        .collect();
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
                let (keys, _) = uncertain_keys(&rows, &by_pr);
                if missing.iter().all(|key| keys.contains(*key)) {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained = load_stopped.elapsed();
    // Stray acks for the last envelopes.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    let (uncertain_keys, uncertain_other) = uncertain_keys(&uncertain, &by_pr);

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
    let wire = lock(&wire);
    let sent = commands_sent.lock().expect("sent lock").clone();
    let mut acks = [0usize; 3];
    let mut unacked_on_closed = 0;
    for (id, closed) in &sent {
        let n = wire.acks.get(id).copied().unwrap_or(0) as usize;
        acks[n.min(2)] += 1;
        if n == 0 && *closed {
            unacked_on_closed += 1;
        }
    }
    let mut reconnects: BTreeMap<Event, Vec<Duration>> = BTreeMap::new();
    let mut no_reconnect = 0;
    for (index, (event, at)) in events.iter().enumerate() {
        // A fault's reconnect counts only if it came before the next event (the kill).
        let until = events.get(index + 1).map(|(_, next)| *next);
        let next_socket = wire
            .accepts
            .iter()
            .find(|accepted| *accepted >= at && until.is_none_or(|until| **accepted < until));
        match next_socket {
            Some(accepted) => reconnects.entry(*event).or_default().push(*accepted - *at),
            None => no_reconnect += 1,
        }
    }

    println!();
    println!("| Measure | Value |");
    println!("|---|---|");
    println!("| Seed | {seed} |");
    println!("| SIGKILL + restart cycles | {kills} |");
    for event in [Event::ServerClose, Event::Refresh, Event::Warning] {
        let n = events.iter().filter(|(e, _)| *e == event).count();
        println!("| Socket faults: {} | {n} |", event.name());
    }
    println!(
        "| Pull requests created (after setup) | {} |",
        created.len()
    );
    println!(
        "| Deliveries expected (pull request x channel) | {} |",
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
    println!("| DOUBLED | {} |", doubled.len());
    println!(
        "| Drain after the load stopped | {:.1} s |",
        drained.as_secs_f64()
    );
    println!("| `/bitbucket help` envelopes sent | {} |", sent.len());
    println!(
        "| Acks per envelope: 0 / 1 / 2+ | {} / {} / {} |",
        acks[0], acks[1], acks[2]
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
    println!("| Unacked envelopes sent to a socket already seen closed | {unacked_on_closed} |");
    println!("| Events with no new socket before the next event | {no_reconnect} |");
    println!("| SIGTERM exit code at the end | {:?} |", exit.code());
    println!("| Whole run | {:.1} s |", started.elapsed().as_secs_f64());
    for ((marker, channel), n, is_uncertain) in &doubled {
        println!(
            "doubled: CHAOS-{marker:06} in {channel}, posted {n} times, uncertain: {is_uncertain}"
        );
    }
    for (marker, channel) in lost.iter().take(20) {
        println!("lost: CHAOS-{marker:06} in {channel}");
    }
    let bad_doubles = doubled.iter().filter(|(_, _, u)| !u).count();
    let ok = lost.is_empty() && bad_doubles == 0;
    if !ok {
        println!(
            "FAILED: {} lost, {bad_doubles} doubled and not uncertain; daemon log tail:\n{}",
            lost.len(),
            tail(&read_log(&env.log), 40)
        );
    }
    ok
}

/// (marker, channel) of each uncertain delivery, through the activity id
/// `{repo}:pr:{id}:...`, and how many rows are not from this load.
fn uncertain_keys(
    rows: &[Value],
    by_pr: &HashMap<(String, u64), u64>,
) -> (BTreeSet<(u64, String)>, usize) {
    let mut keys = BTreeSet::new();
    let mut other = 0;
    for row in rows {
        let activity = row["activity_id"].as_str().unwrap_or_default();
        let channel = row["channel_id"].as_str().unwrap_or_default().to_string();
        let parsed = activity.split_once(":pr:").and_then(|(repo, rest)| {
            let pr = rest.split(':').next()?.parse::<u64>().ok()?;
            by_pr.get(&(repo.to_string(), pr)).copied()
        });
        match parsed {
            Some(marker) => {
                keys.insert((marker, channel));
            }
            None => other += 1,
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
