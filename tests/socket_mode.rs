//! The Socket Mode client against the fake Slack on 127.0.0.1: real HTTP for
//! apps.connections.open and response_url, real WebSocket frames for envelopes and acks.
//! Every wait is for an event (an ack, a call, a connection), bounded by the fake's
//! deadline; nothing sleeps.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitbucket_slack::clock::SystemClock;
use bitbucket_slack::commands::{self, Command};
use bitbucket_slack::config::Secret;
use bitbucket_slack::message::Message;
use bitbucket_slack::slack::envelope::{EventCallback, Interaction, SlashCommand};
use bitbucket_slack::slack::socket::{
    EnvelopeHandler, SocketHealth, SocketMode, SocketModeError, SocketModeParts, SocketModeSettings,
};
use bitbucket_slack::slack::web::SlackWeb;
use bitbucket_slack::store::Store;
use serde_json::{Value, json};
use support::blocks::section_text;
use support::fake_slack::{FakeSlack, Frame};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The real command parser, plus a record of what reached it and a gate for "slow".
#[derive(Default)]
struct RecordingHandler {
    handled: Mutex<Vec<String>>,
    release_slow: Notify,
}

impl RecordingHandler {
    fn handled(&self) -> Vec<String> {
        self.handled.lock().expect("lock").clone()
    }

    fn record(&self, what: String) {
        self.handled.lock().expect("lock").push(what);
    }
}

impl EnvelopeHandler for RecordingHandler {
    async fn slash_command(&self, command: SlashCommand) -> Message {
        self.record(format!("command:{}", command.text));
        if command.text == "slow" {
            self.release_slow.notified().await;
            return Message::text("slow reply");
        }
        match commands::parse(&command.text) {
            Ok(Command::Help) => commands::help(),
            Ok(other) => Message::text(format!("{other:?}")),
            Err(error) => commands::error_reply(&error),
        }
    }

    async fn event(&self, event: EventCallback) {
        self.record(format!(
            "event:{}:{}",
            event.event.type_name(),
            event.event_id.unwrap_or_default()
        ));
    }

    async fn interaction(&self, interaction: Interaction) {
        self.record(format!("interaction:{}", interaction.kind.type_name()));
    }
}

struct Harness {
    fake: FakeSlack,
    handler: Arc<RecordingHandler>,
    health: SocketHealth,
    shutdown: CancellationToken,
    run: JoinHandle<Result<(), SocketModeError>>,
    _dir: tempfile::TempDir,
}

fn settings(connections: usize) -> SocketModeSettings {
    SocketModeSettings {
        connections,
        reply_budget: Duration::from_millis(1500),
        ping_interval: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        retire_grace: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
    }
}

async fn start(settings: SocketModeSettings) -> Harness {
    let fake = FakeSlack::start().await;
    start_with(fake, settings, tempfile::tempdir().expect("tempdir")).await
}

async fn start_with(
    fake: FakeSlack,
    settings: SocketModeSettings,
    dir: tempfile::TempDir,
) -> Harness {
    let store = Store::open(dir.path()).expect("store");
    let handler = Arc::new(RecordingHandler::default());
    let health = SocketHealth::new(settings.connections);
    let api_url = url::Url::parse(&fake.api_url()).expect("url");
    let socket_mode = SocketMode::new(SocketModeParts {
        web: SlackWeb::new(&api_url).expect("client"),
        app_token: Secret::new("xapp-1-A0FAKE-test-app-token".into()),
        settings,
        handler: handler.clone(),
        dedup: store.dedup.clone(),
        clock: Arc::new(SystemClock),
        health: health.clone(),
        tracker: TaskTracker::new(),
        metrics: bitbucket_slack::metrics::Metrics::default(),
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(socket_mode.run(shutdown.clone()));
    Harness {
        fake,
        handler,
        health,
        shutdown,
        run,
        _dir: dir,
    }
}

impl Harness {
    async fn stop(self) -> Result<(), SocketModeError> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.run)
            .await
            .expect("socket mode stops after shutdown")
            .expect("socket mode task")
    }
}

fn slash(envelope_id: &str, text: &str, response_id: &str, fake: &FakeSlack) -> Value {
    json!({
        "envelope_id": envelope_id,
        "type": "slash_commands",
        "accepts_response_payload": true,
        "payload": {
            "token": "verification-token",
            "team_id": "T111",
            "team_domain": "acme",
            "channel_id": "C111",
            "channel_name": "random",
            "user_id": "U111",
            "user_name": "ada",
            "command": "/bitbucket",
            "text": text,
            "api_app_id": "A0FAKE",
            "response_url": fake.response_url(response_id),
            "trigger_id": "111.222.xxx"
        }
    })
}

fn event(envelope_id: &str, event_id: &str, retry_attempt: u32) -> Value {
    json!({
        "envelope_id": envelope_id,
        "type": "events_api",
        "accepts_response_payload": false,
        "retry_attempt": retry_attempt,
        "retry_reason": if retry_attempt > 0 { "timeout" } else { "" },
        "payload": {
            "token": "verification-token",
            "team_id": "T111",
            "api_app_id": "A0FAKE",
            "event": {"type": "app_home_opened", "user": "U111", "channel": "D111", "tab": "messages"},
            "type": "event_callback",
            "event_id": event_id,
            "event_time": 1_700_000_000
        }
    })
}

#[tokio::test]
async fn opens_a_socket_with_the_app_token_and_becomes_healthy_on_hello() {
    let harness = start(settings(1)).await;
    let _socket = harness.fake.accept().await;
    let calls = harness.fake.calls_to("apps.connections.open");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some("Bearer xapp-1-A0FAKE-test-app-token")
    );
    let mut connected = harness.health.watch_connected();
    tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|n| *n == 1))
        .await
        .expect("connected after hello")
        .expect("health watch");
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn keeps_the_configured_number_of_sockets_open() {
    let harness = start(settings(3)).await;
    for _ in 0..3 {
        harness.fake.accept().await;
    }
    let mut connected = harness.health.watch_connected();
    tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|n| *n == 3))
        .await
        .expect("three sockets connected")
        .expect("health watch");
    assert_eq!(harness.fake.calls_to("apps.connections.open").len(), 3);
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn help_comes_back_in_the_ack_payload() {
    let harness = start(settings(1)).await;
    let socket = harness.fake.accept().await;
    for (id, text) in [("e-help", "help"), ("e-empty", "")] {
        socket
            .send_json(&slash(id, text, "r1", &harness.fake))
            .await;
        let ack = socket.next_ack().await;
        assert_eq!(ack["envelope_id"], id);
        assert_eq!(ack["payload"]["response_type"], "ephemeral");
        let text = section_text(&ack["payload"]);
        assert!(text.contains("/bitbucket help"), "{ack}");
    }
    assert!(harness.fake.calls_to("/response/r1").is_empty());
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_unknown_command_is_named_and_followed_by_help() {
    let harness = start(settings(1)).await;
    let socket = harness.fake.accept().await;
    socket
        .send_json(&slash("e-foo", "foo bar", "r1", &harness.fake))
        .await;
    let ack = socket.next_ack().await;
    let text = section_text(&ack["payload"]);
    assert!(text.starts_with("Unknown command `foo`."), "{text}");
    assert!(text.contains("/bitbucket help"), "{text}");
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_slow_handler_does_not_delay_a_fast_ack_and_replies_via_response_url() {
    let mut settings = settings(1);
    settings.reply_budget = Duration::from_millis(200);
    let harness = start(settings).await;
    let socket = harness.fake.accept().await;
    socket
        .send_json(&slash("e-slow", "slow", "slow", &harness.fake))
        .await;
    socket
        .send_json(&slash("e-fast", "help", "fast", &harness.fake))
        .await;
    let first = socket.next_ack().await;
    assert_eq!(first["envelope_id"], "e-fast", "the fast ack comes first");
    // Over budget: the slow command is acked empty, and answered later via response_url.
    let second = socket.next_ack().await;
    assert_eq!(second, json!({"envelope_id": "e-slow"}));
    harness.handler.release_slow.notify_one();
    let calls = harness.fake.wait_for_calls("/response/slow", 1).await;
    assert!(calls[0].body.contains("slow reply"), "{}", calls[0].body);
    assert!(
        calls[0].authorization.is_none(),
        "response_url needs no token"
    );
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_retried_envelope_and_a_redelivered_event_are_handled_once() {
    let harness = start(settings(1)).await;
    let socket = harness.fake.accept().await;
    socket.send_json(&event("env-1", "Ev1", 0)).await;
    socket.send_json(&event("env-1", "Ev1", 1)).await;
    socket.send_json(&event("env-2", "Ev1", 2)).await;
    socket.send_json(&event("env-3", "Ev2", 0)).await;
    for id in ["env-1", "env-1", "env-2", "env-3"] {
        assert_eq!(socket.next_ack().await, json!({"envelope_id": id}));
    }
    // A slash command as the barrier: handlers run concurrently, so wait until the
    // event handlers have surely run by having everything in one ordered record.
    socket
        .send_json(&slash("e-help", "help", "r", &harness.fake))
        .await;
    socket.next_ack().await;
    let handled = harness.handler.handled();
    let events: Vec<&String> = handled.iter().filter(|h| h.starts_with("event:")).collect();
    assert_eq!(
        events.len(),
        2,
        "Ev1 once and Ev2 once, whatever the order: {handled:?}"
    );
    assert!(handled.contains(&"event:app_home_opened:Ev1".to_string()));
    assert!(handled.contains(&"event:app_home_opened:Ev2".to_string()));
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn dedup_survives_a_restart_on_the_same_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let harness = start_with(FakeSlack::start().await, settings(1), dir).await;
    let socket = harness.fake.accept().await;
    socket.send_json(&event("env-1", "Ev1", 0)).await;
    socket.next_ack().await;
    let dir = harness._dir;
    harness.shutdown.cancel();
    harness.run.await.expect("task").expect("clean stop");
    assert_eq!(dir.path(), path);

    let harness = start_with(FakeSlack::start().await, settings(1), dir).await;
    let socket = harness.fake.accept().await;
    socket.send_json(&event("env-1", "Ev1", 1)).await;
    assert_eq!(socket.next_ack().await, json!({"envelope_id": "env-1"}));
    socket
        .send_json(&slash("barrier", "help", "r", &harness.fake))
        .await;
    socket.next_ack().await;
    assert_eq!(harness.handler.handled(), vec!["command:help".to_string()]);
    harness.stop().await.expect("clean stop");
}

/// Reads every fixture in `tests/fixtures/slack-socket-mode` that is an envelope (has an
/// envelope_id and a type); hello, disconnect and the ack example are left out.
fn fixture_envelopes() -> Vec<(String, Value)> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slack-socket-mode");
    let mut envelopes = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("fixtures at {}: {error}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("fixture");
        let value: Value = serde_json::from_str(&text).expect("fixture is JSON");
        if value.get("envelope_id").is_some() && value.get("type").is_some() {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string();
            envelopes.push((name, value));
        }
    }
    envelopes
}

#[tokio::test]
async fn every_fixture_envelope_is_acked_on_its_socket() {
    let harness = start(settings(1)).await;
    let socket = harness.fake.accept().await;
    let fixtures = fixture_envelopes();
    assert!(
        fixtures.len() >= 14,
        "found {} fixture envelopes",
        fixtures.len()
    );
    let mut acks_by_id: HashMap<String, usize> = HashMap::new();
    for (name, envelope) in &fixtures {
        socket.send_json(envelope).await;
        let ack = socket.next_ack().await;
        assert_eq!(
            ack["envelope_id"], envelope["envelope_id"],
            "ack for {name}"
        );
        *acks_by_id
            .entry(ack["envelope_id"].as_str().expect("id").to_string())
            .or_default() += 1;
        if envelope["type"] == "slash_commands"
            && acks_by_id[ack["envelope_id"].as_str().expect("id")] == 1
        {
            // The fixtures' text is empty, which is a request for help.
            assert!(
                section_text(&ack["payload"]).contains("/bitbucket help"),
                "{name}: {ack}"
            );
        }
    }
    assert!(
        acks_by_id.values().all(|&acks| acks == 1),
        "envelope ids are unique across the fixtures: {acks_by_id:?}"
    );
    // The 66 KB block_actions envelope did not kill the socket.
    assert!(!socket.is_closed());
    assert_eq!(harness.fake.sockets_opened(), 1);
    let handled = harness.handler.handled();
    assert!(
        handled.iter().any(|h| h == "interaction:block_actions"),
        "{handled:?}"
    );
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn malformed_frames_are_skipped_and_the_socket_lives_on() {
    let harness = start(settings(1)).await;
    let socket = harness.fake.accept().await;
    socket.send_text("this is not json").await;
    socket
        .send_text(r#"{"type":"slash_commands","payload":{}}"#)
        .await;
    socket.send_binary(&[0, 159, 146, 150]).await;
    socket
        .send_text(
            r#"{"type":"slash_commands","envelope_id":"e-odd","payload":{"text":"no team"}}"#,
        )
        .await;
    assert_eq!(socket.next_ack().await, json!({"envelope_id": "e-odd"}));
    socket
        .send_json(&slash("e-after", "help", "r", &harness.fake))
        .await;
    assert_eq!(socket.next_ack().await["envelope_id"], "e-after");
    assert_eq!(harness.fake.sockets_opened(), 1);
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn pings_from_slack_are_answered() {
    let harness = start(settings(1)).await;
    let socket = harness.fake.accept().await;
    socket.send_ping(b"are you there").await;
    assert_eq!(socket.next_pong().await, b"are you there".to_vec());
    harness.stop().await.expect("clean stop");
}

/// Drives a refresh: the replacement is opened first, the old socket keeps serving
/// until the replacement's hello, then closes. Nothing is lost or handled twice.
async fn replacement_is_opened_before_the_old_socket_closes(reason: &str) {
    let harness = start(settings(1)).await;
    let old = harness.fake.accept().await;
    harness.fake.set_auto_hello(false);
    old.send_disconnect(reason).await;
    let new = harness.fake.accept().await;
    assert_ne!(new.ticket(), old.ticket(), "a fresh URL for every connect");
    // Before the replacement says hello, the old socket still serves.
    old.send_json(&slash("e-old", "help", "r", &harness.fake))
        .await;
    assert_eq!(old.next_ack().await["envelope_id"], "e-old");
    assert!(!old.is_closed());
    new.send_hello().await;
    old.wait_closed().await;
    new.send_json(&slash("e-new", "help", "r", &harness.fake))
        .await;
    assert_eq!(new.next_ack().await["envelope_id"], "e-new");
    assert_eq!(
        harness.handler.handled(),
        vec!["command:help".to_string(), "command:help".to_string()]
    );
    assert_eq!(harness.fake.sockets_opened(), 2);
    assert_eq!(harness.health.connected_count(), 1);
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn refresh_requested_replaces_the_socket_with_nothing_lost_or_doubled() {
    replacement_is_opened_before_the_old_socket_closes("refresh_requested").await;
}

#[tokio::test]
async fn a_disconnect_warning_replaces_the_socket_the_same_way() {
    replacement_is_opened_before_the_old_socket_closes("warning").await;
}

#[tokio::test]
async fn a_socket_closed_by_slack_is_reopened() {
    let harness = start(settings(1)).await;
    let first = harness.fake.accept().await;
    first.send_close().await;
    let second = harness.fake.accept().await;
    second
        .send_json(&slash("e1", "help", "r", &harness.fake))
        .await;
    assert_eq!(second.next_ack().await["envelope_id"], "e1");
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn link_disabled_reports_unhealthy_and_retries_later() {
    let harness = start(settings(1)).await;
    let first = harness.fake.accept().await;
    let mut connected = harness.health.watch_connected();
    tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|n| *n == 1))
        .await
        .expect("connected")
        .expect("watch");
    first.send_disconnect("link_disabled").await;
    first.wait_closed().await;
    tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|n| *n == 0))
        .await
        .expect("unhealthy after link_disabled")
        .expect("watch");
    // backoff_max is 100 ms in these tests: the slow retry still comes.
    let second = harness.fake.accept().await;
    second
        .send_json(&slash("e1", "help", "r", &harness.fake))
        .await;
    assert_eq!(second.next_ack().await["envelope_id"], "e1");
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_refused_app_token_is_fatal_and_not_retried() {
    let fake = FakeSlack::start().await;
    fake.set_connections_open_error(Some("invalid_auth"));
    let harness = start_with(fake, settings(2), tempfile::tempdir().expect("tempdir")).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), harness.run)
        .await
        .expect("returns without a shutdown")
        .expect("task");
    assert_eq!(
        outcome,
        Err(SocketModeError::AppTokenRefused {
            code: "invalid_auth".into()
        })
    );
    let message = outcome.expect_err("fatal").to_string();
    assert!(message.contains("slack.app_token"), "{message}");
    assert!(!message.contains("test-app-token"), "{message}");
    // Each slot tried once; neither retried.
    assert!(harness.fake.calls_to("apps.connections.open").len() <= 2);
}

#[tokio::test]
async fn a_transient_open_failure_is_retried_with_backoff() {
    let fake = FakeSlack::start().await;
    fake.set_connections_open_error(Some("internal_error"));
    let harness = start_with(fake, settings(1), tempfile::tempdir().expect("tempdir")).await;
    harness
        .fake
        .wait_for_calls("apps.connections.open", 3)
        .await;
    harness.fake.set_connections_open_error(None);
    let socket = harness.fake.accept().await;
    socket
        .send_json(&slash("e1", "help", "r", &harness.fake))
        .await;
    assert_eq!(socket.next_ack().await["envelope_id"], "e1");
    harness.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_lets_in_flight_commands_finish_and_ack_before_closing() {
    let harness = start(settings(1)).await;
    let socket = harness.fake.accept().await;
    socket
        .send_json(&slash("e-slow", "slow", "slow", &harness.fake))
        .await;
    // Wait until the handler is running, then ask the daemon to stop.
    socket
        .send_json(&slash("barrier", "help", "r", &harness.fake))
        .await;
    assert_eq!(socket.next_ack().await["envelope_id"], "barrier");
    harness.shutdown.cancel();
    // New envelopes are no longer taken...
    socket
        .send_json(&slash("e-late", "help", "r", &harness.fake))
        .await;
    // ...but the one in flight finishes and is acked with its reply.
    harness.handler.release_slow.notify_one();
    let ack = socket.next_ack().await;
    assert_eq!(ack["envelope_id"], "e-slow");
    assert_eq!(ack["payload"]["text"], "slow reply");
    match socket.next_frame().await {
        Frame::Close => {}
        other => panic!("expected the socket to close, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), harness.run)
        .await
        .expect("stops")
        .expect("task")
        .expect("clean stop");
    let late_handled = harness
        .handler
        .handled()
        .iter()
        .filter(|h| *h == "command:help")
        .count();
    assert_eq!(late_handled, 1, "only the barrier, not e-late");
}

/// A supervisor may call `run` again after it returned or its task was dropped (as when
/// it panics): the sockets of the dropped call close, and the next call connects again.
#[tokio::test]
async fn run_can_be_called_again_after_it_returned_or_was_dropped() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let health = SocketHealth::new(1);
    let socket_mode = SocketMode::new(SocketModeParts {
        web: SlackWeb::new(&url::Url::parse(&fake.api_url()).expect("url")).expect("client"),
        app_token: Secret::new("xapp-1-A0FAKE-test-app-token".into()),
        settings: settings(1),
        handler: Arc::new(RecordingHandler::default()),
        dedup: store.dedup.clone(),
        clock: Arc::new(SystemClock),
        health: health.clone(),
        tracker: TaskTracker::new(),
        metrics: bitbucket_slack::metrics::Metrics::default(),
    });
    let mut connected = health.watch_connected();
    let connected_within = |connected: &mut tokio::sync::watch::Receiver<usize>, n: usize| {
        let mut connected = connected.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|c| *c == n))
                .await
                .expect("connected count reached")
                .expect("health watch");
        }
    };

    // Dropped while serving: its socket closes.
    let first = tokio::spawn(socket_mode.clone().run(CancellationToken::new()));
    let socket = fake.accept().await;
    connected_within(&mut connected, 1).await;
    first.abort();
    assert!(first.await.expect_err("aborted").is_cancelled());
    assert_eq!(
        health.connected_count(),
        0,
        "a dropped run is not shown as connected"
    );
    socket.wait_closed().await;

    // Called again: connects again, and returns cleanly on shutdown.
    let shutdown = CancellationToken::new();
    let second = tokio::spawn(socket_mode.clone().run(shutdown.clone()));
    let socket = fake.accept().await;
    connected_within(&mut connected, 1).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), second)
        .await
        .expect("stops after shutdown")
        .expect("socket mode task")
        .expect("clean stop");
    socket.wait_closed().await;
    assert_eq!(health.connected_count(), 0);

    // And once more after that clean return.
    let shutdown = CancellationToken::new();
    let third = tokio::spawn(socket_mode.run(shutdown.clone()));
    let _socket = fake.accept().await;
    connected_within(&mut connected, 1).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), third)
        .await
        .expect("stops after shutdown")
        .expect("socket mode task")
        .expect("clean stop");
    assert_eq!(fake.calls_to("apps.connections.open").len(), 3);
}
