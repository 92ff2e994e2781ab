//! Socket Mode benchmark: the real `bitbucket-slack` binary against the in-process fake
//! Slack of `tests/support/fake_slack.rs`, over real loopback HTTP and WebSocket.
//!
//! Run it with:
//!
//! ```text
//! cargo bench --bench socket_mode
//! ```
//!
//! It measures, for one daemon started with `bitbucket-slack run` and configured only
//! through `BITBUCKET_SLACK__*` environment variables (one socket, storage in a temp dir,
//! log level warn, output to `daemon.log` in that temp dir):
//!
//! * time from spawn until the fake accepted the Socket Mode WebSocket, and until
//!   `GET /readyz` answers 200 (polled every 1 ms);
//! * idle RSS (`VmRSS`, `VmHWM` from `/proc/<pid>/status`) after 1 s at rest;
//! * three load shapes of slash-command envelopes (`/bitbucket help`, acked with the
//!   help text in the ack's payload): one in flight at a time, paced at 200/s, and a
//!   flood with 64 in flight; for each, acks/s and the p50, p99 and max ack latency;
//! * peak RSS (`VmHWM`) after the load, then SIGTERM: exit code and time to exit.
//!
//! Ack latency is measured from the fake's side: from just before the envelope is handed
//! to the fake's socket task until the fake returned the parsed ack. It therefore
//! includes the fake's own hops (a channel to its connection task, the write, the read,
//! a channel back and a JSON parse), not only the daemon's work. A sender task and a
//! receiver task share the `FakeSocket` (its `send_json` and `next_ack` take `&self`);
//! acks are matched to envelopes by `envelope_id`.
//!
//! The binary is `env!("CARGO_BIN_EXE_bitbucket-slack")`: Cargo sets it for benches as
//! for integration tests and builds the binary first, with the same profile as the
//! bench (`bench`, which inherits `release`, under `cargo bench`).
//!
//! The only assertion: every envelope got exactly one ack. Everything else is reported.
//!
//! The daemon gets `BITBUCKET_SLACK__SLACK__BOT_TOKEN=xoxb-bench`, so the fake's
//! workspace (T0FAKE, the team of every envelope) is installed and `/bitbucket help` is
//! answered with the help. With `-- --no-bot-token` it is not, and the daemon answers
//! that the app is not installed in the workspace. Both replies are ephemeral and go
//! into the ack; the report counts them by text.
//!
//! With `SOCKET_MODE_BENCH_CSV=FILE` set, every envelope's send time (microseconds since
//! the daemon was spawned) and ack latency are also written to FILE as CSV.
//!
//! Without the `--bench` argument (that is, under `cargo test --all-targets`, which
//! runs benches once as tests, with a debug binary) it runs in smoke mode: 200
//! envelopes per shape, same checks, numbers not meaningful.

#[allow(dead_code)]
#[path = "../tests/support/fake_slack.rs"]
mod fake_slack;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_slack::{FakeSlack, FakeSocket};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};

/// The daemon under test.
const BINARY: &str = env!("CARGO_BIN_EXE_bitbucket-slack");

/// The three load shapes, in the order they run.
const SHAPES: [ShapeSpec; 3] = [
    ShapeSpec {
        name: "roundtrip",
        title: "round trip (1 in flight)",
        window: Some(1),
        per_second: None,
    },
    ShapeSpec {
        name: "paced",
        title: "paced 200/s",
        window: None,
        per_second: Some(200),
    },
    ShapeSpec {
        name: "flood",
        title: "flood (64 in flight)",
        window: Some(64),
        per_second: None,
    },
];

/// How long we wait for the daemon to get ready, and to exit after SIGTERM.
const STARTUP_LIMIT: Duration = Duration::from_secs(20);
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// How long the receiver waits for the next ack before it calls the rest lost.
/// Shorter than the fake's own 10 s limit, so a lost ack is reported, not a panic.
const ACK_LIMIT: Duration = Duration::from_secs(5);

/// How long we listen for stray (duplicate or unknown) acks after the last shape.
const STRAY_WINDOW: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
struct ShapeSpec {
    /// Used in envelope ids: `bench-{name}-{n}`.
    name: &'static str,
    title: &'static str,
    /// At most this many envelopes without their ack; `None`: no limit.
    window: Option<usize>,
    /// Send on a fixed schedule of this many per second; `None`: as fast as allowed.
    per_second: Option<u32>,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs us without it.
    let bench = std::env::args().any(|arg| arg == "--bench");
    // A bot token installs the fake's workspace, so commands get the real help reply;
    // `-- --no-bot-token` measures the "not installed" answer instead.
    let bot_token = !std::env::args().any(|arg| arg == "--no-bot-token");
    let envelopes = if bench { 10_000 } else { 200 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    runtime.block_on(run(bench, bot_token, envelopes));
}

async fn run(bench: bool, bot_token: bool, envelopes: usize) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# socket_mode benchmark");
    println!();
    println!(
        "mode: {}, {envelopes} envelopes per shape, {}, {cpus} CPUs, binary {BINARY}",
        if bench {
            "bench"
        } else {
            "smoke (no --bench argument: numbers are not meaningful)"
        },
        if bot_token {
            "bot token xoxb-bench configured"
        } else {
            "no bot token"
        }
    );

    let fake = Arc::new(FakeSlack::start().await);
    let dir = tempfile::tempdir().expect("create a temp dir");
    let storage = dir.path().join("store");
    let log_path = dir.path().join("daemon.log");
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::fs::File::create(&log_path).expect("create daemon.log");

    let mut command = tokio::process::Command::new(BINARY);
    command
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BITBUCKET_SLACK__SLACK__APP_TOKEN", "xapp-bench")
        .env("BITBUCKET_SLACK__SLACK__API_URL", fake.api_url())
        .env("BITBUCKET_SLACK__SLACK__SOCKET_CONNECTIONS", "1")
        .env("BITBUCKET_SLACK__STORAGE__PATH", &storage)
        .env("BITBUCKET_SLACK__HTTP__LISTEN", http.to_string())
        .env("BITBUCKET_SLACK__LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("clone the log handle")))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    if bot_token {
        // The fake's auth.test accepts any xoxb- token as workspace T0FAKE.
        command.env("BITBUCKET_SLACK__SLACK__BOT_TOKEN", "xoxb-bench");
    }

    // The accept runs alongside the /readyz polling, so both moments are seen.
    let accepting = {
        let fake = fake.clone();
        tokio::spawn(async move {
            let socket = fake.accept().await;
            (Instant::now(), socket)
        })
    };

    // ---- 1. time to ready -------------------------------------------------------
    let spawned = Instant::now();
    let mut child = command.spawn().expect("spawn the daemon");
    let pid = child.id().expect("the daemon's pid");
    let mut http_up: Option<Instant> = None;
    let ready_at = loop {
        match http_status(http, "/readyz").await {
            Some(200) => break Instant::now(),
            Some(_) => {
                http_up.get_or_insert_with(Instant::now);
            }
            None => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the daemon exited ({status}) before /readyz answered 200; its log:\n{}",
                read_log(&log_path)
            );
        }
        assert!(
            spawned.elapsed() < STARTUP_LIMIT,
            "/readyz did not answer 200 within {STARTUP_LIMIT:?}; the daemon's log:\n{}",
            read_log(&log_path)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (accepted_at, socket) = accepting.await.expect("the fake accepted a socket");
    let socket = Arc::new(socket);
    let startup = Startup {
        http_up: http_up.map(|at| at - spawned),
        accepted: accepted_at - spawned,
        ready: ready_at - spawned,
    };
    println!(
        "ready: socket accepted after {}, /readyz 200 after {}",
        ms(startup.accepted),
        ms(startup.ready)
    );

    // ---- 2. idle memory ---------------------------------------------------------
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = memory(pid);
    println!(
        "idle after 1 s: VmRSS {}, VmHWM {}",
        mib(idle.rss_kib),
        mib(idle.hwm_kib)
    );

    // ---- 3. load ----------------------------------------------------------------
    let ledger = Arc::new(Ledger::new(envelopes));
    let response_url = fake.response_url("bench");
    let mut reports = Vec::new();
    for (index, spec) in SHAPES.iter().enumerate() {
        let report = run_shape(
            socket.clone(),
            ledger.clone(),
            index,
            *spec,
            envelopes,
            &response_url,
        )
        .await;
        println!("{}", report.line());
        let complete = report.latencies.len() == envelopes;
        reports.push(report);
        if !complete {
            println!("stopping the load: {} lost acks", spec.name);
            break;
        }
    }
    // Acks that arrive after their shape finished are duplicates (or unknown ids).
    let strays = drain_strays(&socket, &ledger).await;

    if let Ok(path) = std::env::var("SOCKET_MODE_BENCH_CSV") {
        match ledger.write_csv(&path, spawned) {
            Ok(()) => println!("per-envelope send times and latencies written to {path}"),
            Err(error) => println!("could not write {path}: {error}"),
        }
    }

    // ---- 4. peak memory ---------------------------------------------------------
    let loaded = memory(pid);
    println!(
        "after the load: VmRSS {}, VmHWM {}",
        mib(loaded.rss_kib),
        mib(loaded.hwm_kib)
    );

    // ---- 5. SIGTERM -------------------------------------------------------------
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(kill.success(), "kill -TERM {pid} failed: {kill}");
    let exit = match tokio::time::timeout(EXIT_LIMIT, child.wait()).await {
        Ok(Ok(status)) => Exit {
            code: status.code(),
            after: Some(signalled.elapsed()),
            socket_closed: socket.is_closed(),
        },
        Ok(Err(error)) => panic!("waiting for the daemon failed: {error}"),
        Err(_) => Exit {
            code: None,
            after: None,
            socket_closed: socket.is_closed(),
        },
    };
    println!(
        "SIGTERM: exit code {}, after {}",
        exit.code_text(),
        exit.after.map_or_else(|| "(did not exit)".into(), ms)
    );

    let daemon_log = read_log(&log_path);
    println!();
    println!("ack payloads by payload.text (the help reply's is \"bitbucket-slack commands\"):");
    for (text, count) in ledger.reply_texts.lock().expect("reply_texts lock").iter() {
        println!("    {count} x {:?}", shorten(text));
    }
    println!();
    print_tables(&startup, &idle, &loaded, &reports, &exit, envelopes);
    println!();
    println!("Command: `cargo bench --bench socket_mode`");
    println!();
    if daemon_log.trim().is_empty() {
        println!("daemon log (level warn): empty");
    } else {
        println!("daemon log (level warn), first 40 lines:");
        for line in daemon_log.lines().take(40) {
            println!("    {line}");
        }
    }

    // ---- the one assertion: every envelope, exactly one ack ---------------------
    let problems = ledger.problems(&strays);
    if !problems.is_empty() {
        println!();
        println!("ACK PROBLEMS ({}):", problems.len());
        for problem in problems.iter().take(20) {
            println!("    {problem}");
        }
    }
    // Shut the fake down only now: the daemon's Close got its answer during shutdown.
    drop(socket);
    drop(fake);
    assert!(
        problems.is_empty(),
        "{} envelope(s) did not get exactly one ack; first: {:?}",
        problems.len(),
        problems.first()
    );
}

// ---------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------

/// Who sent what when, and how many acks each envelope got.
struct Ledger {
    envelopes: usize,
    /// `[shape][n]`: when envelope n of the shape was handed to the fake.
    sent_at: Vec<Mutex<Vec<Option<Instant>>>>,
    /// `[shape][n]`: the latency of envelope n's first ack.
    latency: Vec<Mutex<Vec<Option<Duration>>>>,
    /// `[shape][n]`: how many acks envelope n of the shape got.
    acks: Vec<Vec<AtomicU32>>,
    /// Acks whose payload is not an ephemeral reply.
    bad_payloads: AtomicUsize,
    /// How many acks carried each `payload.text` (the help reply's is
    /// "bitbucket-slack commands").
    reply_texts: Mutex<BTreeMap<String, usize>>,
    /// Acks that do not name an envelope we sent (the frame, shortened).
    unknown: Mutex<Vec<String>>,
}

/// What one ack was.
enum AckKind {
    /// The first ack of envelope `n` of shape `shape`, `latency` after it was sent.
    First { shape: usize, latency: Duration },
    /// Another ack of an envelope already acked.
    Repeat,
    /// An ack for no envelope we sent.
    Unknown,
}

impl Ledger {
    fn new(envelopes: usize) -> Self {
        Self {
            envelopes,
            sent_at: SHAPES
                .iter()
                .map(|_| Mutex::new(vec![None; envelopes]))
                .collect(),
            latency: SHAPES
                .iter()
                .map(|_| Mutex::new(vec![None; envelopes]))
                .collect(),
            acks: SHAPES
                .iter()
                .map(|_| (0..envelopes).map(|_| AtomicU32::new(0)).collect())
                .collect(),
            bad_payloads: AtomicUsize::new(0),
            reply_texts: Mutex::new(BTreeMap::new()),
            unknown: Mutex::new(Vec::new()),
        }
    }

    fn mark_sent(&self, shape: usize, n: usize, at: Instant) {
        self.sent_at[shape].lock().expect("sent_at lock")[n] = Some(at);
    }

    /// `bench-{shape}-{n}` back to indices.
    fn parse_id(&self, id: &str) -> Option<(usize, usize)> {
        let rest = id.strip_prefix("bench-")?;
        let (name, n) = rest.rsplit_once('-')?;
        let shape = SHAPES.iter().position(|spec| spec.name == name)?;
        let n: usize = n.parse().ok()?;
        (n < self.envelopes).then_some((shape, n))
    }

    /// Books one ack received at `at`.
    fn record(&self, ack: &Value, at: Instant) -> AckKind {
        let Some((shape, n)) = ack["envelope_id"].as_str().and_then(|id| self.parse_id(id)) else {
            self.unknown
                .lock()
                .expect("unknown lock")
                .push(shorten(&ack.to_string()));
            return AckKind::Unknown;
        };
        let payload = &ack["payload"];
        if payload["response_type"] != "ephemeral" {
            self.bad_payloads.fetch_add(1, Ordering::Relaxed);
        }
        let text = payload["text"].as_str().unwrap_or("(no payload.text)");
        let mut texts = self.reply_texts.lock().expect("reply_texts lock");
        match texts.get_mut(text) {
            Some(count) => *count += 1,
            None => {
                texts.insert(text.to_owned(), 1);
            }
        }
        drop(texts);
        if self.acks[shape][n].fetch_add(1, Ordering::Relaxed) > 0 {
            return AckKind::Repeat;
        }
        let sent = self.sent_at[shape].lock().expect("sent_at lock")[n];
        match sent {
            Some(sent) => {
                let latency = at - sent;
                self.latency[shape].lock().expect("latency lock")[n] = Some(latency);
                AckKind::First { shape, latency }
            }
            // An ack before we sent it: impossible unless ids are mixed up.
            None => {
                self.unknown
                    .lock()
                    .expect("unknown lock")
                    .push(format!("acked before it was sent: {}", ack["envelope_id"]));
                AckKind::Unknown
            }
        }
    }

    /// Writes `shape,n,sent_us,latency_us` per envelope, `sent_us` counted from `origin`.
    fn write_csv(&self, path: &str, origin: Instant) -> std::io::Result<()> {
        let mut csv = String::from("shape,n,sent_us,latency_us\n");
        for (shape, spec) in SHAPES.iter().enumerate() {
            let sent = self.sent_at[shape].lock().expect("sent_at lock");
            let latency = self.latency[shape].lock().expect("latency lock");
            for (n, (sent, latency)) in sent.iter().zip(latency.iter()).enumerate() {
                let Some(sent) = sent else { continue };
                let latency = latency.map_or(String::new(), |l| l.as_micros().to_string());
                let _ = writeln!(
                    csv,
                    "{},{n},{},{latency}",
                    spec.name,
                    (*sent - origin).as_micros()
                );
            }
        }
        std::fs::write(path, csv)
    }

    /// Every envelope without exactly one ack, every unknown ack and every bad payload.
    fn problems(&self, strays: &[String]) -> Vec<String> {
        let mut problems = Vec::new();
        for (shape, counts) in self.acks.iter().enumerate() {
            let sent = self.sent_at[shape].lock().expect("sent_at lock");
            for (n, count) in counts.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if sent[n].is_some() && count != 1 {
                    problems.push(format!("bench-{}-{n}: {count} acks", SHAPES[shape].name));
                }
            }
        }
        for unknown in self.unknown.lock().expect("unknown lock").iter() {
            problems.push(format!("ack for no envelope we sent: {unknown}"));
        }
        for stray in strays {
            problems.push(format!("late ack: {stray}"));
        }
        problems
    }
}

/// What one load shape measured.
struct ShapeReport {
    spec: ShapeSpec,
    sent: usize,
    /// First-ack latencies, in arrival order.
    latencies: Vec<Duration>,
    /// From the first send to the last ack.
    elapsed: Duration,
    /// Time the sender spent inside `send_json` (the fake's write path).
    send_busy: Duration,
    /// For the paced shape: how far the latest send fell behind its schedule.
    max_send_lag: Duration,
    bad_payloads: usize,
    /// Set when the receiver stopped early (socket closed, or the fake panicked).
    receiver_failure: Option<String>,
}

impl ShapeReport {
    fn acks_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn percentile(&self, percent: usize) -> Duration {
        percentile(&self.latencies, percent)
    }

    fn max(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    fn line(&self) -> String {
        let mut line = format!(
            "{}: {} sent, {} acked in {:.3} s = {:.0} acks/s; latency p50 {} p99 {} max {}; \
             sender busy in send_json {:.0}%",
            self.spec.title,
            self.sent,
            self.latencies.len(),
            self.elapsed.as_secs_f64(),
            self.acks_per_second(),
            ms(self.percentile(50)),
            ms(self.percentile(99)),
            ms(self.max()),
            100.0 * self.send_busy.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9),
        );
        if self.spec.per_second.is_some() {
            let _ = write!(
                line,
                "; max send lag behind schedule {}",
                ms(self.max_send_lag)
            );
        }
        if self.bad_payloads > 0 {
            let _ = write!(
                line,
                "; {} acks without an ephemeral payload",
                self.bad_payloads
            );
        }
        if let Some(failure) = &self.receiver_failure {
            let _ = write!(line, "; RECEIVER STOPPED: {failure}");
        }
        line
    }
}

/// Sends `envelopes` slash commands shaped by `spec` and collects their acks.
async fn run_shape(
    socket: Arc<FakeSocket>,
    ledger: Arc<Ledger>,
    shape: usize,
    spec: ShapeSpec,
    envelopes: usize,
    response_url: &str,
) -> ShapeReport {
    let window = spec.window.map(|w| Arc::new(Semaphore::new(w)));
    let bad_before = ledger.bad_payloads.load(Ordering::Relaxed);
    let started = Instant::now();

    let receiver = {
        let socket = socket.clone();
        let ledger = ledger.clone();
        let window = window.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(envelopes);
            let mut last_ack = None;
            let mut failure = None;
            while latencies.len() < envelopes {
                let Ok(ack) = tokio::time::timeout(ACK_LIMIT, socket.next_ack()).await else {
                    failure = Some(format!(
                        "no ack for {ACK_LIMIT:?} ({} of {envelopes} acked)",
                        latencies.len()
                    ));
                    break;
                };
                let at = Instant::now();
                let AckKind::First {
                    shape: acked,
                    latency,
                } = ledger.record(&ack, at)
                else {
                    continue;
                };
                if acked != shape {
                    continue;
                }
                latencies.push(latency);
                last_ack = Some(at);
                if let Some(window) = &window {
                    window.add_permits(1);
                }
            }
            (latencies, last_ack, failure)
        })
    };

    let sender = {
        let socket = socket.clone();
        let ledger = ledger.clone();
        let response_url = response_url.to_owned();
        tokio::spawn(async move {
            let mut schedule = spec.per_second.map(|rate| {
                let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
                ticks
            });
            let mut send_busy = Duration::ZERO;
            let mut max_send_lag = Duration::ZERO;
            let mut sent = 0;
            for n in 0..envelopes {
                let envelope = slash_command(spec.name, n, &response_url);
                if let Some(ticks) = schedule.as_mut() {
                    let due = ticks.tick().await;
                    max_send_lag = max_send_lag.max(due.elapsed());
                }
                if let Some(window) = &window {
                    window.acquire().await.expect("window semaphore").forget();
                }
                let at = Instant::now();
                ledger.mark_sent(shape, n, at);
                socket.send_json(&envelope).await;
                send_busy += at.elapsed();
                sent += 1;
            }
            (sent, send_busy, max_send_lag)
        })
    };

    let (latencies, last_ack, failure) = match receiver.await {
        Ok(received) => received,
        Err(error) => (
            Vec::new(),
            None,
            Some(format!("receiver task failed: {error}")),
        ),
    };
    // A receiver that gave up leaves the sender waiting for window permits.
    if failure.is_some() {
        sender.abort();
    }
    let (sent, send_busy, max_send_lag) = match sender.await {
        Ok(done) => done,
        Err(_) => {
            let sent = ledger.sent_at[shape]
                .lock()
                .expect("sent_at lock")
                .iter()
                .filter(|at| at.is_some())
                .count();
            (sent, Duration::ZERO, Duration::ZERO)
        }
    };
    ShapeReport {
        spec,
        sent,
        elapsed: last_ack.unwrap_or_else(Instant::now) - started,
        latencies,
        send_busy,
        max_send_lag,
        bad_payloads: ledger.bad_payloads.load(Ordering::Relaxed) - bad_before,
        receiver_failure: failure,
    }
}

/// Reads acks until none came for [`STRAY_WINDOW`]; returns what each was.
async fn drain_strays(socket: &FakeSocket, ledger: &Ledger) -> Vec<String> {
    let mut strays = Vec::new();
    if socket.is_closed() {
        return strays;
    }
    while let Ok(ack) = tokio::time::timeout(STRAY_WINDOW, socket.next_ack()).await {
        match ledger.record(&ack, Instant::now()) {
            // Counted in the ledger; `problems` names the envelope.
            AckKind::Repeat | AckKind::Unknown => {}
            AckKind::First { .. } => strays.push(shorten(&ack.to_string())),
        }
    }
    strays
}

/// A `/bitbucket help` slash-command envelope, shaped like Slack's (see
/// tests/fixtures/slack-socket-mode/slash_commands_help.json).
fn slash_command(shape: &str, n: usize, response_url: &str) -> Value {
    json!({
        "envelope_id": format!("bench-{shape}-{n}"),
        "type": "slash_commands",
        "accepts_response_payload": true,
        "payload": {
            "token": "verification-token",
            // The team of the fake's auth.test, in case a bot token is ever configured.
            "team_id": "T0FAKE",
            "team_domain": "bench",
            "channel_id": "C0BENCH",
            "channel_name": "bench",
            "user_id": "U0BENCH",
            "user_name": "bench",
            "command": "/bitbucket",
            "text": "help",
            "api_app_id": fake_slack::APP_ID,
            "response_url": response_url,
            "trigger_id": format!("{n}.bench.trigger"),
        }
    })
}

// ---------------------------------------------------------------------------
// The process
// ---------------------------------------------------------------------------

struct Startup {
    /// When `/readyz` first answered at all (503 before the socket), if it did before 200.
    http_up: Option<Duration>,
    accepted: Duration,
    ready: Duration,
}

struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

struct Exit {
    code: Option<i32>,
    /// `None`: it did not exit within [`EXIT_LIMIT`].
    after: Option<Duration>,
    socket_closed: bool,
}

impl Exit {
    fn code_text(&self) -> String {
        match (self.after, self.code) {
            (None, _) => "(still running)".into(),
            (Some(_), Some(code)) => code.to_string(),
            (Some(_), None) => "(killed by a signal)".into(),
        }
    }
}

/// A port that was free a moment ago: bind 127.0.0.1:0 and let it go.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// The status code of `GET path`, or `None` when nothing answers (yet).
async fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let head = String::from_utf8_lossy(&response[..response.len().min(32)]).into_owned();
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("read /proc/{pid}/status: {error}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

fn read_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| format!("(cannot read the log: {error})"))
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn print_tables(
    startup: &Startup,
    idle: &Memory,
    loaded: &Memory,
    reports: &[ShapeReport],
    exit: &Exit,
    envelopes: usize,
) {
    let verdict = |ok: bool| if ok { "yes" } else { "**no**" };
    println!("| Measure | Result | Target | Met |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| HTTP server up (`/readyz` answers 503) | {} | | |",
        startup
            .http_up
            .map_or_else(|| "(its first answer was 200)".into(), ms)
    );
    println!(
        "| Socket Mode socket accepted by Slack | {} | | |",
        ms(startup.accepted)
    );
    println!(
        "| Ready (`/readyz` 200) | {} | < 100 ms | {} |",
        ms(startup.ready),
        verdict(startup.ready < Duration::from_millis(100))
    );
    println!(
        "| Idle RSS (1 s after ready) | {} (VmHWM {}) | < 15 MB | {} |",
        mib(idle.rss_kib),
        mib(idle.hwm_kib),
        verdict(idle.rss_kib * 1024 < 15_000_000)
    );
    for report in reports {
        match report.spec.name {
            "roundtrip" => println!(
                "| Round trip, ack latency p99 | {} | < 1 ms | {} |",
                ms(report.percentile(99)),
                verdict(report.percentile(99) < Duration::from_millis(1))
            ),
            "paced" => println!(
                "| Paced 200/s, ack latency p50 | {} | < 1 ms | {} |",
                ms(report.percentile(50)),
                verdict(report.percentile(50) < Duration::from_millis(1))
            ),
            "flood" => println!(
                "| Flood (64 in flight), acks/s | {:.0} | ≥ 10,000 | {} |",
                report.acks_per_second(),
                verdict(report.acks_per_second() >= 10_000.0)
            ),
            _ => {}
        }
    }
    println!(
        "| Peak RSS (VmHWM) after the load | {} | | |",
        mib(loaded.hwm_kib)
    );
    println!(
        "| SIGTERM: exit code, time to exit | {}, {} | 0 | {} |",
        exit.code_text(),
        exit.after.map_or_else(|| "-".into(), ms),
        verdict(exit.code == Some(0))
    );
    println!();
    println!("| Shape ({envelopes} envelopes) | Acked | Acks/s | p50 | p99 | Max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for report in reports {
        println!(
            "| {} | {} | {:.0} | {} | {} | {} |",
            report.spec.title,
            report.latencies.len(),
            report.acks_per_second(),
            ms(report.percentile(50)),
            ms(report.percentile(99)),
            ms(report.max()),
        );
    }
    if !exit.socket_closed {
        println!();
        println!("note: the fake never saw the daemon close its socket");
    }
}

/// Nearest-rank percentile.
fn percentile(samples: &[Duration], percent: usize) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

/// KiB as both MiB and (decimal) MB, since targets are quoted in MB.
fn mib(kib: u64) -> String {
    format!(
        "{:.1} MiB = {:.1} MB",
        kib as f64 / 1024.0,
        kib as f64 * 1024.0 / 1e6
    )
}

fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
}
