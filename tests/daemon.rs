//! The real binary, spawned as a new user would run it: `check`, and `run` with a config
//! file against the fake Slack, through readiness, a slash command and SIGTERM.

mod support;

use serde_json::Value;
use support::daemon::{Daemon, http_get, run_to_end, write_config};
use support::fake_slack::FakeSlack;
use support::harness::{Settings, TEAM, envelope, slash_command};

const APP_TOKEN: &str = "xapp-1-A0FAKE-1234-daemon-test-secret";
const BOT_TOKEN: &str = "xoxb-0000-daemon-bot-secret";
const CLIENT_SECRET: &str = "slack-client-secret-daemon-test";
const USER_OAUTH_SECRET: &str = "bitbucket-consumer-secret-daemon-test";
const ENCRYPTION_KEY: &str = "c2VjcmV0LWtleS0zMi1ieXRlcy1sb25nLWV4YWN0bHk=";

#[tokio::test]
async fn check_accepts_env_only_configuration() {
    let (code, stdout, stderr) = run_to_end(
        &["check"],
        &[("BITBUCKET_SLACK__SLACK__APP_TOKEN", APP_TOKEN)],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "configuration OK");
}

#[tokio::test]
async fn check_reports_every_problem_on_its_own_line_and_exits_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "[slack]\nsocket_connections = 0\napi_url = \"not a url\"\n[http]\nlisten = \"everywhere\"\n[storage]\nmystery = 1\n",
    );
    let (code, _stdout, stderr) = run_to_end(&["check", "--config", &config], &[]).await;
    assert_eq!(code, 78);
    let lines: Vec<&str> = stderr.lines().collect();
    let keys: Vec<&str> = lines
        .iter()
        .map(|line| line.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        vec![
            "slack.app_token",
            "slack.api_url",
            "slack.socket_connections",
            "http.listen",
            "storage.mystery"
        ],
        "{stderr}"
    );
}

#[tokio::test]
async fn check_takes_the_config_path_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!("[slack]\napp_token = \"{APP_TOKEN}\"\n"),
    );
    let (code, stdout, stderr) =
        run_to_end(&["check"], &[("BITBUCKET_SLACK_CONFIG", config.as_str())]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "configuration OK");
}

fn config_for(fake: &FakeSlack, storage: &std::path::Path) -> String {
    let key_file = storage.with_extension("key");
    std::fs::write(&key_file, ENCRYPTION_KEY).expect("write the key file");
    Settings::base(fake, storage)
        .set("slack.app_token", APP_TOKEN)
        .set("slack.bot_token", BOT_TOKEN)
        .set("slack.client_id", "4242.4242")
        .set("slack.client_secret", CLIENT_SECRET)
        .set("bitbucket.user_oauth.key", "consumer-key")
        .set("bitbucket.user_oauth.secret", USER_OAUTH_SECRET)
        .set(
            "storage.encryption_key_file",
            key_file.display().to_string(),
        )
        .set("log.level", "trace")
        .toml()
}

#[tokio::test]
async fn runs_from_a_config_file_answers_help_is_ready_and_drains_on_sigterm() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &config_for(&fake, &dir.path().join("data")));
    let mut daemon = Daemon::spawn(&["run", "--config", &config], &[]);
    let address = daemon.http_address().await;
    let socket = fake.accept().await;
    daemon
        .wait_for_log("ready: a Slack socket is connected")
        .await;

    let (status, body) = http_get(&address, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["ready"], true);
    assert_eq!(body["sockets_connected"], 1);
    // Every supervised component is named, and running.
    for component in [
        "access",
        "admin",
        "delivery",
        "housekeeping",
        "http",
        "router",
        "sockets",
        "systemd",
        "upgrade_driver",
        "workspace_discovery",
    ] {
        assert_eq!(
            body["components"][component]["state"], "running",
            "{component}: {body}"
        );
    }
    let (status, _) = http_get(&address, "/healthz").await;
    assert_eq!(status, 200);

    socket
        .send_json(&envelope(
            "e-1",
            "slash_commands",
            true,
            slash_command(TEAM, "C111", "U111", "help", &fake),
        ))
        .await;
    let ack = socket.next_ack().await;
    assert_eq!(ack["envelope_id"], "e-1");
    assert!(
        ack["payload"].to_string().contains("/bitbucket help"),
        "{ack}"
    );

    let (status, metrics) = http_get(&address, "/metrics").await;
    assert_eq!(status, 200);
    let samples = parse_prometheus(&metrics);
    assert_eq!(
        samples["bitbucket_slack_envelopes_total{type=\"slash_commands\"}"],
        1.0
    );
    assert_eq!(samples["bitbucket_slack_ack_latency_seconds_count"], 1.0);
    assert_eq!(samples["bitbucket_slack_sockets_connected"], 1.0);
    assert_eq!(
        samples["bitbucket_slack_installations{state=\"active\"}"],
        1.0
    );
    assert!(
        samples["bitbucket_slack_slack_api_calls_total{method=\"apps.connections.open\",outcome=\"ok\"}"]
            >= 1.0
    );
    assert!(!metrics.contains("secret"), "{metrics}");

    daemon.signal("TERM");
    socket.wait_closed().await;
    assert_eq!(daemon.wait_exit().await, 0);
    let log = daemon.log().join("\n");
    assert!(log.contains("stopped cleanly"), "{log}");
    assert!(
        !log.contains(APP_TOKEN),
        "the app token leaked into the log:\n{log}"
    );
    assert!(
        !log.contains("daemon-test-secret"),
        "part of the token leaked:\n{log}"
    );
}

#[tokio::test]
async fn readyz_is_503_with_reasons_until_a_socket_says_hello() {
    let fake = FakeSlack::start().await;
    fake.set_auto_hello(false);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &config_for(&fake, &dir.path().join("data")));
    let mut daemon = Daemon::spawn(&["run", "--config", &config], &[]);
    let address = daemon.http_address().await;
    let socket = fake.accept().await;
    let (status, body) = http_get(&address, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["ready"], false);
    assert!(
        body["reasons"][0].as_str().unwrap_or("").contains("hello"),
        "{body}"
    );
    socket.send_hello().await;
    daemon
        .wait_for_log("ready: a Slack socket is connected")
        .await;
    let (status, _) = http_get(&address, "/readyz").await;
    assert_eq!(status, 200);
    daemon.signal("INT");
    assert_eq!(daemon.wait_exit().await, 0);
}

#[tokio::test]
async fn a_refused_app_token_exits_78_with_a_clear_message() {
    let fake = FakeSlack::start().await;
    fake.set_connections_open_error(Some("invalid_auth"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &config_for(&fake, &dir.path().join("data")));
    let mut daemon = Daemon::spawn(&["run", "--config", &config], &[]);
    assert_eq!(daemon.wait_exit().await, 78);
    let log = daemon.log().join("\n");
    assert!(
        log.contains("Slack refused the app token with `invalid_auth`"),
        "{log}"
    );
    assert!(log.contains("check slack.app_token"), "{log}");
    assert!(!log.contains("daemon-test-secret"), "{log}");
    assert_eq!(
        fake.calls_to("apps.connections.open").len(),
        1,
        "never retried"
    );
}

#[tokio::test]
async fn a_store_in_use_is_a_clear_startup_error_naming_the_path() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("data");
    let _held = bitbucket_slack::store::Store::open(&storage).expect("hold the store");
    let config = write_config(dir.path(), &config_for(&fake, &storage));
    let mut daemon = Daemon::spawn(&["run", "--config", &config], &[]);
    assert_eq!(daemon.wait_exit().await, 1);
    let log = daemon.log().join("\n");
    assert!(
        log.contains(&format!("the store at {} is in use", storage.display())),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn an_invalid_config_stops_run_with_78_before_connecting() {
    let fake = FakeSlack::start().await;
    let (code, _stdout, stderr) = run_to_end(
        &["run"],
        &[
            ("BITBUCKET_SLACK__SLACK__APP_TOKEN", APP_TOKEN),
            ("BITBUCKET_SLACK__SLACK__API_URL", &fake.api_url()),
            ("BITBUCKET_SLACK__SLACK__SOCKET_CONNECTIONS", "eleven"),
        ],
    )
    .await;
    assert_eq!(code, 78);
    assert!(stderr.contains("slack.socket_connections"), "{stderr}");
    assert!(fake.calls().is_empty());
}

/// Parses the Prometheus/OpenMetrics text format strictly enough to catch a broken
/// exposition: every line is a comment, `# EOF`, or `name{labels} value`.
fn parse_prometheus(text: &str) -> std::collections::HashMap<String, f64> {
    let mut samples = std::collections::HashMap::new();
    assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT ")
                    || line == "# EOF",
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        samples.insert(series.to_string(), value);
    }
    samples
}
