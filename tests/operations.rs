//! The operator's CLI against a running daemon (over the admin socket) and a stopped one
//! (the store directly): status, installations, backup, restore, doctor.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};
use support::daemon::{Daemon, run_to_end, write_config};
use support::fake_slack::{FakeSlack, FakeSocket};
use support::harness::{Settings, TEAM, envelope, slash_command};

const APP_TOKEN: &str = "xapp-1-A0FAKE-ops-app-secret";
const BOT_TOKEN: &str = "xoxb-0000-ops-bot-secret";

fn config_text(fake: &FakeSlack, storage: &Path) -> String {
    Settings::base(fake, storage)
        .set("slack.app_token", APP_TOKEN)
        .set("slack.bot_token", BOT_TOKEN)
        .toml()
}

async fn cli(config: &str, args: &[&str]) -> (i32, String, String) {
    let mut full = args.to_vec();
    full.extend(["--config", config]);
    run_to_end(&full, &[]).await
}

async fn started(config: &str, fake: &FakeSlack) -> (Daemon, FakeSocket) {
    let mut daemon = Daemon::spawn(&["run", "--config", config], &[]);
    let socket = fake.accept().await;
    daemon
        .wait_for_log("ready: a Slack socket is connected")
        .await;
    (daemon, socket)
}

async fn stop(mut daemon: Daemon) {
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().await, 0);
}

fn help_command(envelope_id: &str, fake: &FakeSlack) -> Value {
    envelope(
        envelope_id,
        "slash_commands",
        true,
        slash_command(TEAM, "C1", "U1", "help", fake),
    )
}

#[tokio::test]
async fn status_and_installations_from_the_running_daemon_and_from_the_store() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("data");
    let config = write_config(dir.path(), &config_text(&fake, &storage));
    let (daemon, _socket) = started(&config, &fake).await;

    let mode = std::fs::metadata(storage.join("admin.sock"))
        .expect("admin socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let (code, stdout, stderr) = cli(&config, &["status", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["source"], "daemon");
    assert_eq!(report["installations"], 1);
    assert_eq!(report["sockets"][0]["state"], "connected");

    let (code, stdout, _) = cli(&config, &["installations"]).await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("TEAM"), "{stdout}");
    assert!(
        stdout.contains("T0FAKE") && stdout.contains("bot_token"),
        "{stdout}"
    );
    assert!(!stdout.contains("ops-bot-secret"));

    // The configured token lacks scopes and no dates are set: the update is available.
    let mut daemon = daemon;
    daemon
        .wait_for_log("permission-upgrade phase changed")
        .await;
    let (code, stdout, stderr) = cli(&config, &["upgrade-status"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("TEAM"), "{stdout}");
    assert!(
        stdout.contains("T0FAKE") && stdout.contains("available") && stdout.contains("links:read"),
        "{stdout}"
    );
    stop(daemon).await;
    let (code, stdout, stderr) = cli(&config, &["upgrade-status", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("the daemon is not running"), "{stderr}");
    let rows: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(rows[0]["phase"], "available", "{rows}");
    assert_eq!(rows[0]["notifications_held"], false);
    assert!(
        rows[0]["next_reminder_at"].is_null(),
        "no admins known: {rows}"
    );

    let (code, stdout, stderr) = cli(&config, &["status", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("the daemon is not running"), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["source"], "store");
    assert_eq!(report["installations"], 1);
    let (code, stdout, _) = cli(&config, &["installations", "--json"]).await;
    assert_eq!(code, 0);
    let rows: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(rows[0]["team_id"], "T0FAKE");
    assert_eq!(rows[0]["state"], "active");
}

#[tokio::test]
async fn the_admin_socket_refuses_another_user() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("data");
    let config = write_config(dir.path(), &config_text(&fake, &storage));
    let (daemon, _socket) = started(&config, &fake).await;
    // The test runs as root; `nobody` is another user. Skip only if setpriv is missing.
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("setpriv not available; cannot switch users here");
        stop(daemon).await;
        return;
    }
    let socket = storage.join("admin.sock");
    let output = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(support::daemon::binary())
        .arg("status")
        .env_clear()
        .env("BITBUCKET_SLACK__SLACK__APP_TOKEN", APP_TOKEN)
        .env("BITBUCKET_SLACK__STORAGE__PATH", &storage)
        .env("BITBUCKET_SLACK__ADMIN__SOCKET", &socket)
        .output()
        .await
        .expect("run as nobody");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("permission denied") || stderr.contains("Permission denied"),
        "{stderr}"
    );
    stop(daemon).await;
}

#[tokio::test]
async fn backup_while_running_then_restore_into_an_empty_directory_resumes() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("data");
    let config = write_config(dir.path(), &config_text(&fake, &storage));
    let (daemon, socket) = started(&config, &fake).await;
    socket
        .send_json(&help_command("env-before-backup", &fake))
        .await;
    assert!(
        socket.next_ack().await.get("payload").is_some(),
        "handled the first time"
    );

    let backup = dir.path().join("backup.jsonl");
    let (code, stdout, stderr) = cli(&config, &["backup", backup.to_str().expect("utf-8")]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("backup written"), "{stdout}");
    let text = std::fs::read_to_string(&backup).expect("backup file");
    assert!(
        text.starts_with("{\"format\":\"bitbucket-slack-backup\",\"version\":1"),
        "{text}"
    );
    assert!(!text.contains("ops-bot-secret"), "tokens stay encrypted");
    assert_eq!(mode(&backup), 0o600, "a backup is private");
    assert_eq!(
        files_in(dir.path()),
        ["backup.jsonl", "bitbucket-slack.toml", "data"],
        "no partial file left"
    );

    // Refused while the daemon runs.
    let (code, _, stderr) = cli(&config, &["restore", backup.to_str().expect("utf-8")]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("stop it first"), "{stderr}");
    stop(daemon).await;

    // Refused into the existing, non-empty store.
    let (code, _, stderr) = cli(&config, &["restore", backup.to_str().expect("utf-8")]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("already holds data"), "{stderr}");

    // Into a new directory, with the old store's key.
    let moved = dir.path().join("restored");
    std::fs::create_dir(&moved).expect("mkdir");
    std::fs::copy(storage.join("secret.key"), moved.join("secret.key")).expect("copy key");
    let config2 = write_config(dir.path(), &config_text(&fake, &moved));
    let (code, stdout, stderr) = cli(&config2, &["restore", backup.to_str().expect("utf-8")]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");

    let (daemon, socket) = started(&config2, &fake).await;
    // The restored dedup record: the same envelope again is acked but not handled again.
    socket
        .send_json(&help_command("env-before-backup", &fake))
        .await;
    assert_eq!(
        socket.next_ack().await,
        json!({"envelope_id": "env-before-backup"})
    );
    socket
        .send_json(&help_command("env-after-restore", &fake))
        .await;
    assert!(socket.next_ack().await.get("payload").is_some());
    let (code, stdout, _) = cli(&config2, &["installations", "--json"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("T0FAKE"), "{stdout}");
    stop(daemon).await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// The names in `dir`, sorted, hidden ones included.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// A stand-in for the daemon's admin socket: each connection's request is read, then
/// answered with the next of `streams` (after the `backup` answer line) and closed.
fn fake_backup_daemon(socket: &Path, streams: Vec<Vec<u8>>) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let listener = tokio::net::UnixListener::bind(socket).expect("bind the fake admin socket");
    tokio::spawn(async move {
        for stream in streams {
            let (connection, _) = listener.accept().await.expect("accept");
            let (read, mut write) = connection.into_split();
            let mut request = String::new();
            tokio::io::BufReader::new(read)
                .read_line(&mut request)
                .await
                .expect("request");
            assert_eq!(request.trim(), r#"{"command":"backup"}"#);
            write
                .write_all(b"{\"kind\":\"backup\"}\n")
                .await
                .expect("answer");
            write.write_all(&stream).await.expect("stream");
            write.shutdown().await.expect("close");
        }
    })
}

#[tokio::test]
async fn a_backup_stream_cut_short_by_the_daemon_is_refused_and_leaves_no_file() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("data");
    let config = write_config(dir.path(), &config_text(&fake, &storage));
    // A real backup, taken from the stopped store.
    let good = dir.path().join("good.jsonl");
    let (code, _, stderr) = cli(&config, &["backup", good.to_str().expect("utf-8")]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("the daemon is not running"), "{stderr}");
    assert_eq!(mode(&good), 0o600);
    let bytes = std::fs::read(&good).expect("backup");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let trailer_at = text.trim_end().rfind('\n').expect("lines") + 1;
    let without_trailer = bytes[..trailer_at].to_vec();
    let mid_line = bytes[..bytes.len() - 10].to_vec();
    let damaged = text
        .replacen("\"version\":1", "\"version\":0", 1)
        .into_bytes();

    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("backup.jsonl");
    let target_arg = target.to_str().expect("utf-8");
    let daemon = fake_backup_daemon(
        &storage.join("admin.sock"),
        vec![without_trailer, mid_line, damaged, bytes.clone()],
    );
    for (what, expected) in [
        ("without its trailer", "truncated"),
        ("cut in a line", "incomplete or damaged"),
        ("with a changed byte", "checksum does not match"),
    ] {
        let (code, stdout, stderr) = cli(&config, &["backup", target_arg]).await;
        assert_eq!(code, 1, "{what}: {stdout}{stderr}");
        assert!(
            stderr.contains("the backup streamed by the daemon does not verify")
                && stderr.contains(expected)
                && stderr.contains("nothing was written"),
            "{what}: {stderr}"
        );
        assert!(
            !stderr.contains("not running"),
            "asked the daemon: {stderr}"
        );
        assert!(
            files_in(out.path()).is_empty(),
            "{what}: nothing left behind"
        );
    }
    let (code, stdout, stderr) = cli(&config, &["backup", target_arg]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("backup written"), "{stdout}");
    assert_eq!(std::fs::read(&target).expect("backup"), bytes);
    assert_eq!(mode(&target), 0o600);
    assert_eq!(files_in(out.path()), ["backup.jsonl"]);
    daemon
        .await
        .expect("the fake daemon answered every request");
}

#[tokio::test]
async fn restore_into_a_storage_path_that_is_a_symlink() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("old");
    let config = write_config(dir.path(), &config_text(&fake, &storage));
    let (daemon, _socket) = started(&config, &fake).await;
    stop(daemon).await;
    let backup = dir.path().join("backup.jsonl");
    let (code, _, stderr) = cli(&config, &["backup", backup.to_str().expect("utf-8")]).await;
    assert_eq!(code, 0, "{stderr}");

    // systemd's DynamicUser layout: the state directory is a link into private/.
    let real = dir.path().join("private").join("data");
    std::fs::create_dir_all(&real).expect("mkdir");
    let link = dir.path().join("data");
    std::os::unix::fs::symlink("private/data", &link).expect("symlink");
    std::fs::copy(storage.join("secret.key"), link.join("secret.key")).expect("copy key");
    let config = write_config(dir.path(), &config_text(&fake, &link));
    let (code, stdout, stderr) = cli(&config, &["restore", backup.to_str().expect("utf-8")]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink(),
        "storage.path is still the link"
    );
    assert_eq!(files_in(&dir.path().join("private")), ["data"]);

    let (code, stdout, stderr) = cli(&config, &["installations", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let rows: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(rows[0]["team_id"], "T0FAKE", "{rows}");
    assert_eq!(rows[0]["state"], "active", "{rows}");
}

#[tokio::test]
async fn doctor_reports_each_check_and_fails_on_a_refused_token() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("data");
    let config = write_config(dir.path(), &config_text(&fake, &storage));
    let (code, stdout, stderr) = cli(&config, &["doctor"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    for name in [
        "config",
        "store",
        "encryption key",
        "slack app",
        "slack bot",
    ] {
        assert!(
            stdout.contains(&format!("[ok  ] {name}")),
            "{name}: {stdout}"
        );
    }
    fake.set_connections_open_error(Some("invalid_auth"));
    let (code, stdout, _) = cli(&config, &["doctor"]).await;
    assert_eq!(code, 1);
    assert!(stdout.contains("[FAIL] slack app"), "{stdout}");
    assert!(stdout.contains("check slack.app_token"), "{stdout}");
    assert!(!stdout.contains("ops-app-secret"));
}

#[tokio::test]
async fn subscriptions_and_outbox_listings_from_the_running_daemon() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("data");
    let config = write_config(dir.path(), &config_text(&fake, &storage));
    let (daemon, _socket) = started(&config, &fake).await;
    let (code, stdout, stderr) =
        cli(&config, &["subscriptions", "--json", "--team", "T0FAKE"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "[]");
    assert!(
        !stderr.contains("not running"),
        "answered by the daemon: {stderr}"
    );
    let (code, stdout, _) = cli(&config, &["outbox", "--dead", "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "[]");
    let (code, stdout, _) = cli(&config, &["outbox"]).await;
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "the outbox is empty");
    let (code, _, stderr) = cli(&config, &["outbox", "retry", "42"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no dead letter or uncertain message has the id 42"),
        "{stderr}"
    );
    let (code, stdout, _) = cli(&config, &["outbox", "--uncertain"]).await;
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "no uncertain messages");
    let (code, stdout, _) = cli(&config, &["status"]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("outbox:        0 waiting, 0 dead letters"),
        "{stdout}"
    );
    stop(daemon).await;
}

/// `migrate --to postgres`, then `--to sled` into an empty directory: every entry and the
/// tokens (sealed with the same key) come through, and a target holding data is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_the_store_to_postgres_and_back() {
    use bitbucket_slack::store::Store;
    let Some(server) = support::postgres::Postgres::start() else {
        return;
    };
    let database = server.create_database();
    let url = server.url(&database);
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = dir.path().join("data");
    // A daemon run installs the configured bot token into a sled store.
    let config = write_config(
        dir.path(),
        &Settings::base(&fake, &storage)
            .set("slack.app_token", APP_TOKEN)
            .set("slack.bot_token", BOT_TOKEN)
            .set("storage.postgres.url", url.as_str())
            .toml(),
    );
    let (daemon, _socket) = started(&config, &fake).await;
    stop(daemon).await;

    let (code, stdout, stderr) = cli(&config, &["migrate", "--to", "postgres"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("installations"), "{stdout}");
    assert!(stdout.contains("counts match"), "{stdout}");
    assert!(
        stdout.contains("set storage.backend = \"postgres\""),
        "{stdout}"
    );
    let (code, _, stderr) = cli(&config, &["migrate", "--to", "postgres"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("already holds data"), "{stderr}");

    // Back into an empty directory, with the first store's key.
    let back = dir.path().join("back");
    let back_dir = dir.path().join("back-config");
    std::fs::create_dir_all(&back_dir).expect("a config directory");
    let key = storage.join("secret.key");
    let back_config = write_config(
        &back_dir,
        &Settings::base(&fake, &back)
            .set("slack.app_token", APP_TOKEN)
            .set("storage.postgres.url", url.as_str())
            .set("storage.encryption_key_file", key.display().to_string())
            .toml(),
    );
    let (code, stdout, stderr) = cli(&back_config, &["migrate", "--to", "sled"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("counts match"), "{stdout}");
    let store = Store::open_with_key(&back, Some(&key)).expect("the copy opens");
    let installation = store
        .installations
        .get(TEAM)
        .expect("read")
        .expect("the installation came back");
    assert_eq!(
        installation
            .bot_token
            .as_ref()
            .map(|token| token.expose().as_str()),
        Some(BOT_TOKEN)
    );
}
