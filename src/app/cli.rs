//! The operator's CLI subcommands (`status`, `installations`, `backup`, `restore`,
//! `doctor`): each asks the running daemon over the admin socket, or, when it is not
//! running, opens the store directly, and says which it did.
//!
//! Owns talking to the admin socket, the direct-store fallback and the printed output
//! (tables for people, `--json` for scripts). A backup reaches its path only once it is
//! on disk and verified (`store::backup::BackupFile`), whether the daemon streamed it or
//! it came from the store directly. Exit codes: 0 success, 1 failure (a
//! refused restore, a failed doctor check), 78 a configuration problem (main.rs).

use std::io::{BufReader, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::admin::{
    AdminRequest, AdminResponse, DeliveryRow, InstallationRow, OutboxView, StatusReport,
    SubscriptionRow, delivery_rows, installation_rows, retry_deliveries, status_report,
    subscription_rows,
};
use crate::clock::Clock;
use crate::config::Config;
use crate::slack::web::SlackWeb;
use crate::store::{Store, StoreError, backup};
use crate::upgrade;

/// How the CLI reached the daemon's state.
enum Channel {
    Daemon(UnixStream),
    Store(Box<Store>),
}

async fn reach(config: &Config) -> anyhow::Result<Channel> {
    let path = &config.admin.socket;
    match UnixStream::connect(path).await {
        Ok(stream) => Ok(Channel::Daemon(stream)),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot use the admin socket {}: permission denied (run as the service user or root)",
            path.display()
        ),
        Err(_) => match Store::open_with_key(
            &config.storage.path,
            config.storage.encryption_key_file.as_deref(),
        ) {
            Ok(store) => {
                eprintln!(
                    "(the daemon is not running: reading the store at {} directly)",
                    store.path().display()
                );
                Ok(Channel::Store(Box::new(store)))
            }
            Err(StoreError::Locked { path: store_path }) => bail!(
                "the store at {} is in use, but the admin socket {} does not answer: is admin.socket the same for the daemon and this command?",
                store_path.display(),
                path.display()
            ),
            Err(error) => Err(error.into()),
        },
    }
}

/// Sends `request` and reads the one-line answer; what follows it (a backup) stays in
/// the returned reader.
async fn send(
    mut stream: UnixStream,
    request: &AdminRequest,
) -> anyhow::Result<(AdminResponse, tokio::io::BufReader<UnixStream>)> {
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).await?;
    let response: AdminResponse = serde_json::from_str(first.trim())
        .with_context(|| "the daemon's admin answer was not understood")?;
    if let AdminResponse::Error { message } = &response {
        bail!("the daemon refused: {message}");
    }
    Ok((response, reader))
}

async fn ask(stream: UnixStream, request: &AdminRequest) -> anyhow::Result<AdminResponse> {
    Ok(send(stream, request).await?.0)
}

fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints `value` as JSON with `--json`, else as `render` makes it for people; exit 0.
fn print_as<T: Serialize + ?Sized>(
    value: &T,
    json: bool,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<u8> {
    if json {
        print_json(value)?;
    } else {
        print!("{}", render(value));
    }
    Ok(0)
}

/// `bitbucket-slack status`.
pub async fn status(config: &Config, json: bool) -> anyhow::Result<u8> {
    let report = match reach(config).await? {
        Channel::Daemon(stream) => match ask(stream, &AdminRequest::Status).await? {
            AdminResponse::Status(report) => *report,
            other => bail!("unexpected answer from the daemon: {other:?}"),
        },
        Channel::Store(store) => status_report(&store, "store", None, Vec::new())?,
    };
    print_as(&report, json, render_status)
}

fn render_status(report: &StatusReport) -> String {
    let mut out = String::new();
    let running = if report.source == "daemon" {
        "running"
    } else {
        "not running"
    };
    out.push_str(&format!(
        "daemon:        {running} (version {})\n",
        report.version
    ));
    if let Some(started) = report.started_at {
        out.push_str(&format!("started:       {started}\n"));
    }
    out.push_str(&format!("store:         {}\n", report.store_path.display()));
    out.push_str(&format!(
        "installations: {} ({} active)\n",
        report.installations, report.active_installations
    ));
    let budget = match (
        report.bitbucket_requests_last_hour,
        report.bitbucket_budget_per_hour,
    ) {
        (Some(used), Some(budget)) => format!("{used} of {budget} requests in the last hour"),
        _ => "budget not known (daemon not running, or no Bitbucket credential)".into(),
    };
    out.push_str(&format!(
        "poller:        {} repositories watched, {budget}, {} activities waiting\n",
        report.watched_repositories, report.activity_backlog
    ));
    if !report.broken_repositories.is_empty() {
        out.push_str(&format!(
            "broken:        {}\n",
            report.broken_repositories.join(", ")
        ));
    }
    out.push_str(&format!(
        "outbox:        {} waiting, {} dead letters, {} uncertain, {} parked\n",
        report.outbox_depth, report.dead_letters, report.uncertain, report.parked
    ));
    if report.sockets.is_empty() {
        out.push_str("sockets:       none (the daemon is not running)\n");
    }
    if !report.components.is_empty() {
        let parts: Vec<String> = report
            .components
            .iter()
            .map(|(name, status)| {
                let state = serde_json::to_value(status.state)
                    .ok()
                    .and_then(|value| value.as_str().map(str::to_string))
                    .unwrap_or_default();
                if status.restarts > 0 {
                    format!("{name} {state} ({} restarts)", status.restarts)
                } else {
                    format!("{name} {state}")
                }
            })
            .collect();
        out.push_str(&format!("components:    {}\n", parts.join(", ")));
    }
    for (slot, socket) in report.sockets.iter().enumerate() {
        let state = serde_json::to_value(&socket.state).unwrap_or_default();
        let name = state["state"].as_str().unwrap_or("?").to_string();
        let detail = match (&state["since"], &state["reason"]) {
            (serde_json::Value::String(since), _) => format!(" since {since}"),
            (_, serde_json::Value::String(reason)) => format!(": {reason}"),
            _ => String::new(),
        };
        let last = socket
            .last_envelope_at
            .map(|at| at.to_string())
            .unwrap_or_else(|| "never".into());
        out.push_str(&format!(
            "socket {slot}:      {name}{detail}; last envelope {last}; reconnects {}\n",
            socket.reconnects
        ));
    }
    out
}

/// `bitbucket-slack installations`.
pub async fn installations(config: &Config, json: bool) -> anyhow::Result<u8> {
    let rows = match reach(config).await? {
        Channel::Daemon(stream) => match ask(stream, &AdminRequest::Installations).await? {
            AdminResponse::Installations { installations } => installations,
            other => bail!("unexpected answer from the daemon: {other:?}"),
        },
        Channel::Store(store) => installation_rows(&store)?,
    };
    print_as(rows.as_slice(), json, render_installations)
}

/// `bitbucket-slack upgrade-status`: each installation's permission-upgrade phase,
/// missing scopes, last and next reminder.
pub async fn upgrade_status(
    config: &Config,
    clock: Arc<dyn Clock>,
    json: bool,
) -> anyhow::Result<u8> {
    let rows = match reach(config).await? {
        Channel::Daemon(stream) => match ask(stream, &AdminRequest::UpgradeStatus).await? {
            AdminResponse::UpgradeStatus { campaigns } => campaigns,
            other => bail!("unexpected answer from the daemon: {other:?}"),
        },
        Channel::Store(store) => {
            super::upgrade_driver::upgrade_rows(&store, &config.upgrade.schedule, clock.now())?
        }
    };
    print_as(rows.as_slice(), json, render_upgrade_status)
}

/// A list of scopes in one table cell, `-` when there are none.
fn scopes_cell(scopes: &[String]) -> String {
    if scopes.is_empty() {
        "-".into()
    } else {
        scopes.join(",")
    }
}

fn render_upgrade_status(rows: &[super::upgrade_driver::UpgradeRow]) -> String {
    if rows.is_empty() {
        return "no installations yet\n".into();
    }
    let when = |at: Option<jiff::Timestamp>| at.map_or_else(|| "-".into(), |at| at.to_string());
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.team_id.clone(),
                row.team_name.clone(),
                row.phase.clone(),
                scopes_cell(&row.missing_scopes),
                when(row.last_reminder_at),
                when(row.next_reminder_at),
                if row.notifications_held { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    render_table(
        &["TEAM", "NAME", "PHASE", "MISSING", "LAST", "NEXT", "HELD"],
        &table,
    )
}

fn render_installations(rows: &[InstallationRow]) -> String {
    if rows.is_empty() {
        return "no installations yet\n".into();
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.team_id.clone(),
                row.team_name.clone(),
                row.state.clone(),
                row.permissions.clone(),
                scopes_cell(&row.missing_scopes),
                row.source.clone(),
                row.updated_at.to_string(),
            ]
        })
        .collect();
    render_table(
        &[
            "TEAM",
            "NAME",
            "STATE",
            "PERMISSIONS",
            "MISSING",
            "SOURCE",
            "UPDATED",
        ],
        &table,
    )
}

/// Left-aligned columns, two spaces apart.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            widths[column] = widths[column].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(column, cell)| format!("{cell:<width$}", width = widths[column]))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// `bitbucket-slack subscriptions [--team T] [--channel C]`.
pub async fn subscriptions(
    config: &Config,
    team: Option<String>,
    channel: Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let rows = match reach(config).await? {
        Channel::Daemon(stream) => {
            match ask(stream, &AdminRequest::Subscriptions { team, channel }).await? {
                AdminResponse::Subscriptions { subscriptions } => subscriptions,
                other => bail!("unexpected answer from the daemon: {other:?}"),
            }
        }
        Channel::Store(store) => subscription_rows(&store, team.as_deref(), channel.as_deref())?,
    };
    print_as(rows.as_slice(), json, render_subscriptions)
}

fn render_subscriptions(rows: &[SubscriptionRow]) -> String {
    if rows.is_empty() {
        return "no subscriptions\n".into();
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.team_id.clone(),
                row.channel_id.clone(),
                row.target.clone(),
                row.features.join(" "),
                if row.filters.is_empty() {
                    "-".into()
                } else {
                    row.filters.join(" ")
                },
                row.paused
                    .clone()
                    .map(|reason| format!("paused: {reason}"))
                    .unwrap_or_else(|| "active".into()),
            ]
        })
        .collect();
    render_table(
        &["TEAM", "CHANNEL", "TARGET", "FEATURES", "FILTERS", "STATE"],
        &table,
    )
}

/// `bitbucket-slack outbox [--dead | --uncertain | --parked]`.
pub async fn outbox(
    config: &Config,
    dead: bool,
    uncertain: bool,
    parked: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let view = OutboxView::from_flags(dead, uncertain, parked);
    let request = AdminRequest::Outbox {
        dead,
        uncertain,
        parked,
    };
    let rows = match reach(config).await? {
        Channel::Daemon(stream) => match ask(stream, &request).await? {
            AdminResponse::Outbox { deliveries } => deliveries,
            other => bail!("unexpected answer from the daemon: {other:?}"),
        },
        Channel::Store(store) => delivery_rows(&store, view)?,
    };
    print_as(&rows, json, |rows| render_deliveries(rows, view))
}

fn render_deliveries(rows: &[DeliveryRow], view: OutboxView) -> String {
    if rows.is_empty() {
        return view.empty_text().into();
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.id.to_string(),
                row.team_id.clone(),
                row.channel_id.clone(),
                row.activity_id.clone(),
                row.attempts.to_string(),
                row.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render_table(
        &[
            "ID",
            "TEAM",
            "CHANNEL",
            "ACTIVITY",
            "ATTEMPTS",
            "LAST ERROR",
        ],
        &table,
    )
}

/// `bitbucket-slack outbox retry ID|--all-dead|--all-uncertain`.
pub async fn outbox_retry(
    config: &Config,
    clock: Arc<dyn Clock>,
    id: Option<u64>,
    uncertain: bool,
) -> anyhow::Result<u8> {
    let count = match reach(config).await? {
        Channel::Daemon(stream) => {
            match ask(stream, &AdminRequest::OutboxRetry { id, uncertain }).await? {
                AdminResponse::Retried { count } => count,
                other => bail!("unexpected answer from the daemon: {other:?}"),
            }
        }
        Channel::Store(store) => retry_deliveries(&store, id, uncertain, clock.now()).await?,
    };
    let what = if uncertain {
        "uncertain message"
    } else {
        "dead letter"
    };
    if count == 0 {
        match id {
            Some(id) => bail!(
                "no dead letter or uncertain message has the id {id} (see `bitbucket-slack outbox --dead` and `--uncertain`)"
            ),
            None => println!("no {what}s to retry"),
        }
    } else if id.is_some() {
        println!(
            "message {} moved back into the outbox",
            id.unwrap_or_default()
        );
    } else {
        println!("{count} {what}(s) moved back into the outbox");
    }
    Ok(0)
}

/// `bitbucket-slack backup FILE`: a consistent snapshot, from the daemon if it runs. The
/// file is private (0600) from its first byte and appears at FILE only once it verified
/// on disk: a stream cut short (or damaged) is an error and leaves nothing there.
pub async fn backup(config: &Config, clock: Arc<dyn Clock>, file: &Path) -> anyhow::Result<u8> {
    let channel = reach(config).await?;
    let mut out = backup::BackupFile::create(file)?;
    let from_daemon = match channel {
        Channel::Daemon(stream) => {
            let (response, mut stream) = send(stream, &AdminRequest::Backup).await?;
            if response != AdminResponse::Backup {
                bail!("unexpected answer from the daemon: {response:?}");
            }
            copy_stream(&mut stream, &mut out).await.with_context(|| {
                format!(
                    "the daemon's backup stream broke off; nothing was written to {}",
                    file.display()
                )
            })?;
            true
        }
        Channel::Store(store) => {
            store.write_backup(&mut out, clock.now())?;
            false
        }
    };
    let summary = out.commit().map_err(|error| match error {
        backup::BackupFileError::Invalid { .. } if from_daemon => {
            anyhow!("the backup streamed by the daemon does not verify: {error}")
        }
        other => other.into(),
    })?;
    println!(
        "backup written to {} ({} entries; tokens stay encrypted)",
        file.display(),
        summary.entries
    );
    Ok(0)
}

/// Copies what the daemon streams into the backup file, until the daemon closes.
async fn copy_stream(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    out: &mut backup::BackupFile,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        out.write_all(&buffer[..read])?;
    }
}

/// `bitbucket-slack restore FILE`: only with the daemon stopped, only into an empty store.
pub async fn restore(config: &Config, file: &Path) -> anyhow::Result<u8> {
    if UnixStream::connect(&config.admin.socket).await.is_ok() {
        bail!(
            "the daemon is running: stop it first (systemctl stop bitbucket-slack), then restore"
        );
    }
    let input = BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
    );
    let summary = backup::restore(
        &config.storage.path,
        config.storage.encryption_key_file.as_deref(),
        input,
    )
    .map_err(|error| anyhow!("restore refused, nothing was changed: {error}"))?;
    println!(
        "restored {} entries from the backup of {} into {}",
        summary.entries,
        summary.created_at,
        config.storage.path.display()
    );
    Ok(0)
}

/// One doctor line.
struct Check {
    ok: bool,
    name: &'static str,
    detail: String,
}

/// `bitbucket-slack doctor`: one line per check, with what to do when it fails.
pub async fn doctor(config: &Config) -> anyhow::Result<u8> {
    let mut checks = vec![Check {
        ok: true,
        name: "config",
        detail: "valid".into(),
    }];
    checks.extend(check_store(config).await);
    checks.extend(check_slack(config).await);
    checks.push(check_bitbucket(config).await);
    let mut failed = 0;
    for check in &checks {
        let mark = if check.ok { "ok  " } else { "FAIL" };
        failed += usize::from(!check.ok);
        println!("[{mark}] {:<14} {}", check.name, check.detail);
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

async fn check_store(config: &Config) -> Vec<Check> {
    if UnixStream::connect(&config.admin.socket).await.is_ok() {
        return vec![Check {
            ok: true,
            name: "store",
            detail: "in use by the running daemon (its admin socket answers)".into(),
        }];
    }
    match Store::open_with_key(
        &config.storage.path,
        config.storage.encryption_key_file.as_deref(),
    ) {
        Ok(store) => vec![
            Check {
                ok: true,
                name: "store",
                detail: format!("{} opens (schema current)", store.path().display()),
            },
            Check {
                ok: true,
                name: "encryption key",
                detail: format!(
                    "{} opens this store's tokens",
                    store.cipher().key_path().display()
                ),
            },
        ],
        Err(error @ (StoreError::WrongKey { .. } | StoreError::KeyFile { .. })) => vec![Check {
            ok: false,
            name: "encryption key",
            detail: error.to_string(),
        }],
        Err(error) => vec![Check {
            ok: false,
            name: "store",
            detail: format!("{error} (check storage.path and its permissions)"),
        }],
    }
}

async fn check_bitbucket(config: &Config) -> Check {
    use crate::bitbucket::{BitbucketClient, ClientSettings, LookupError};
    let name = "bitbucket";
    let Some(settings) = ClientSettings::from_config(&config.bitbucket) else {
        return Check {
            ok: true,
            name,
            detail: "no credential configured: the daemon will not poll (set bitbucket.token or [bitbucket.oauth])".into(),
        };
    };
    let client = match BitbucketClient::new(settings) {
        Ok(client) => client,
        Err(error) => {
            return Check {
                ok: false,
                name,
                detail: error.to_string(),
            };
        }
    };
    // A repository the daemon watches exercises the credential for real (the store can
    // only be read while the daemon is stopped).
    let watched = Store::open_with_key(
        &config.storage.path,
        config.storage.encryption_key_file.as_deref(),
    )
    .ok()
    .and_then(|store| store.repositories.names().ok())
    .and_then(|names| names.into_iter().next());
    let Some(repository) = watched else {
        return Check {
            ok: true,
            name,
            detail: format!(
                "credential configured; not exercised (no watched repository readable here); budget {} requests an hour",
                client.budget().allowance()
            ),
        };
    };
    match client
        .lookup_target(&crate::bitbucket::Target::Repository(repository.clone()))
        .await
    {
        Ok(_) => Check {
            ok: true,
            name,
            detail: format!(
                "the credential reads {repository}; budget {} requests an hour, {} used by this check",
                client.budget().allowance(),
                client.budget().used_in_last_hour()
            ),
        },
        Err(LookupError::Forbidden | LookupError::NotFound) => Check {
            ok: false,
            name,
            detail: format!(
                "the credential cannot read {repository}: give it read access, or unsubscribe from it"
            ),
        },
        Err(LookupError::Invalid(reason)) => Check {
            ok: false,
            name,
            detail: format!("{reason}: not a repository name; unsubscribe from it"),
        },
        Err(LookupError::Unavailable(reason)) => Check {
            ok: false,
            name,
            detail: format!(
                "{reason}: check bitbucket.token / [bitbucket.oauth] and that {} is reachable",
                config.bitbucket.api_url
            ),
        },
    }
}

async fn check_slack(config: &Config) -> Vec<Check> {
    let web = match SlackWeb::with_timeout(&config.slack.api_url, config.slack.request_timeout) {
        Ok(web) => web,
        Err(error) => {
            return vec![Check {
                ok: false,
                name: "slack",
                detail: error.to_string(),
            }];
        }
    };
    let mut checks = vec![match web.open_socket_url(&config.slack.app_token).await {
        Ok(_) => Check {
            ok: true,
            name: "slack app",
            detail: "apps.connections.open accepts slack.app_token".into(),
        },
        Err(error) => Check {
            ok: false,
            name: "slack app",
            detail: format!(
                "{error}: check slack.app_token (an xapp- token with connections:write) and that {} is reachable",
                config.slack.api_url
            ),
        },
    }];
    if let Some(token) = &config.slack.bot_token {
        checks.push(match web.auth_test(token).await {
            Ok(identity) => {
                let level = upgrade::permission_level(&identity.scopes.unwrap_or_default());
                Check {
                    ok: true,
                    name: "slack bot",
                    detail: format!(
                        "slack.bot_token works for {} ({}); permissions {}{}",
                        identity.team_name,
                        identity.team_id,
                        level.name(),
                        if level.missing().is_empty() {
                            String::new()
                        } else {
                            format!(
                                ", missing {}: reinstall the app to grant them",
                                level.missing().join(",")
                            )
                        }
                    ),
                }
            }
            Err(error) => Check {
                ok: false,
                name: "slack bot",
                detail: format!("{error}: reinstall the app and configure its new xoxb- token"),
            },
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let table = render_table(
            &["A", "LONG HEADER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(
            table,
            "A          LONG HEADER\nwide cell  x\ny          z\n"
        );
    }
}
