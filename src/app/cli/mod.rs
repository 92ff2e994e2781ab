//! The operator's CLI subcommands (`status`, `installations`, `upgrade-status`,
//! `subscriptions`, `outbox`, `backup`, `restore`, `doctor`): each takes the arguments
//! `main.rs` parsed, asks the running daemon over the admin socket or, when it is not
//! running, opens the store directly ([`client`]), and prints a table for people
//! ([`table`]) or `--json` for scripts.
//!
//! Owns what each command asks for and how its answer looks. A backup reaches its path
//! only once it is on disk and verified (`store::backup::BackupFile`), whether the daemon
//! streamed it or it came from the store directly. Exit codes: 0 success, 1 failure (a
//! refused restore, a failed doctor check), 78 a configuration problem (main.rs). Must
//! never speak the admin protocol itself (that is [`client`]), lay out a table by hand
//! (that is [`table`]), restore while the daemon runs, or print a token.

mod client;
mod doctor;
mod table;

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

use self::client::{Channel, ask, reach, send};
use self::table::Row;
use super::admin::{
    AdminRequest, AdminResponse, DeliveryRow, InstallationRow, OutboxView, StatusReport,
    SubscriptionRow, delivery_rows, installation_rows, retry_deliveries, status_report,
    subscription_rows,
};
use super::upgrade_driver::UpgradeRow;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::backup;

pub use self::doctor::doctor;

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
        Channel::Store(store) => status_report(
            &store,
            "store",
            None,
            Vec::new(),
            crate::clock::Clock::now(&crate::clock::SystemClock),
            config.storage.lease_ttl,
        )?,
    };
    print_as(&report, json, render_status)
}

/// One workspace's sweep coverage of one kind, and who decides when that kind is polled.
fn sweep_coverage_line(row: &crate::metrics::SweepCoverage) -> String {
    let coverage = match row.ratio() {
        Some(ratio) => format!(
            "{:.0} % flagged first ({} of the last {})",
            ratio * 100.0,
            row.covered,
            row.decided
        ),
        None => "no sample yet".into(),
    };
    let who = match row.mode.as_str() {
        "sweep" => "the sweep decides",
        "fallback" => "polled per repository: coverage below 95 %",
        _ => "polled per repository while measuring",
    };
    format!("{} {}: {coverage}; {who}", row.workspace, row.kind)
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
    let engine = if report.engine.is_empty() {
        String::new()
    } else {
        format!(" ({})", report.engine)
    };
    out.push_str(&format!(
        "store:         {}{engine}\n",
        report.store_path.display()
    ));
    for replica in &report.replicas {
        let leases: Vec<String> = replica
            .leases
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect();
        out.push_str(&format!(
            "replica:       {} ({}, pid {}) {}, seen {}, holds {}\n",
            replica.id,
            replica.host,
            replica.pid,
            if replica.alive { "alive" } else { "gone" },
            replica.seen_at,
            if leases.is_empty() {
                "nothing".to_owned()
            } else {
                leases.join(", ")
            }
        ));
    }
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
    for row in &report.sweep_coverage {
        out.push_str(&format!("sweep:         {}\n", sweep_coverage_line(row)));
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
    print_as(rows.as_slice(), json, |rows| {
        table::render(rows, "no installations yet\n")
    })
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
    print_as(rows.as_slice(), json, |rows| {
        table::render(rows, "no installations yet\n")
    })
}

/// A list of scopes in one table cell, `-` when there are none.
fn scopes_cell(scopes: &[String]) -> String {
    if scopes.is_empty() {
        "-".into()
    } else {
        scopes.join(",")
    }
}

/// A time in one table cell, `-` when there is none.
fn when_cell(at: Option<jiff::Timestamp>) -> String {
    at.map_or_else(|| "-".into(), |at| at.to_string())
}

impl Row<7> for UpgradeRow {
    const HEADERS: [&'static str; 7] = ["TEAM", "NAME", "PHASE", "MISSING", "LAST", "NEXT", "HELD"];
    fn cells(&self) -> [String; 7] {
        [
            self.team_id.clone(),
            self.team_name.clone(),
            self.phase.clone(),
            scopes_cell(&self.missing_scopes),
            when_cell(self.last_reminder_at),
            when_cell(self.next_reminder_at),
            if self.notifications_held { "yes" } else { "no" }.into(),
        ]
    }
}

impl Row<7> for InstallationRow {
    const HEADERS: [&'static str; 7] = [
        "TEAM",
        "NAME",
        "STATE",
        "PERMISSIONS",
        "MISSING",
        "SOURCE",
        "UPDATED",
    ];
    fn cells(&self) -> [String; 7] {
        [
            self.team_id.clone(),
            self.team_name.clone(),
            self.state.clone(),
            self.permissions.clone(),
            scopes_cell(&self.missing_scopes),
            self.source.clone(),
            self.updated_at.to_string(),
        ]
    }
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
    print_as(rows.as_slice(), json, |rows| {
        table::render(rows, "no subscriptions\n")
    })
}

impl Row<6> for SubscriptionRow {
    const HEADERS: [&'static str; 6] =
        ["TEAM", "CHANNEL", "TARGET", "FEATURES", "FILTERS", "STATE"];
    fn cells(&self) -> [String; 6] {
        [
            self.team_id.clone(),
            self.channel_id.clone(),
            self.target.clone(),
            self.features.join(" "),
            if self.filters.is_empty() {
                "-".into()
            } else {
                self.filters.join(" ")
            },
            self.paused
                .clone()
                .map(|reason| format!("paused: {reason}"))
                .unwrap_or_else(|| "active".into()),
        ]
    }
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
    print_as(&rows, json, |rows| table::render(rows, view.empty_text()))
}

impl Row<6> for DeliveryRow {
    const HEADERS: [&'static str; 6] = [
        "ID",
        "TEAM",
        "CHANNEL",
        "ACTIVITY",
        "ATTEMPTS",
        "LAST ERROR",
    ];
    fn cells(&self) -> [String; 6] {
        [
            self.id.to_string(),
            self.team_id.clone(),
            self.channel_id.clone(),
            self.activity_id.clone(),
            self.attempts.to_string(),
            self.last_error.clone().unwrap_or_else(|| "-".into()),
        ]
    }
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
            client::copy_stream(&mut stream, &mut out)
                .await
                .with_context(|| {
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

/// `bitbucket-slack restore FILE`: only with the daemon stopped, only into an empty store.
pub async fn restore(config: &Config, file: &Path) -> anyhow::Result<u8> {
    if client::daemon_answers(config).await {
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

/// `bitbucket-slack migrate --to postgres|sled`: copies the store into the other engine
/// (which must be empty), with every tree's count checked. Only with every daemon stopped.
pub async fn migrate(config: &Config, to: &str) -> anyhow::Result<u8> {
    use crate::store::{Backend, Store};
    let Some(postgres) = config.storage.postgres.clone() else {
        bail!(
            "storage.postgres.url is not set: say which PostgreSQL database to migrate to or from"
        );
    };
    if client::daemon_answers(config).await {
        bail!("the daemon is running: stop every replica first, then migrate");
    }
    let key = config.storage.encryption_key_file.as_deref();
    let path = config.storage.path.clone();
    let (source, target) = match to {
        "postgres" => (Backend::Sled, Backend::Postgres(postgres)),
        "sled" => (Backend::Postgres(postgres), Backend::Sled),
        other => bail!("--to {other}: say postgres or sled"),
    };
    let key = key.map(Path::to_path_buf);
    let report = tokio::task::spawn_blocking(move || {
        let source_store = Store::open_backend(&source, &path, key.as_deref())
            .context("cannot open the store to copy from")?;
        if source_store.is_empty()? {
            bail!(
                "the {} store at {} is empty: nothing to migrate",
                source_store.engine(),
                source_store.path().display()
            );
        }
        let target_store = Store::open_backend(&target, &path, key.as_deref())
            .context("cannot open the store to copy into")?;
        let report = source_store
            .copy_into(&target_store)
            .map_err(|error| anyhow!("migration failed: {error}"))?;
        Ok::<_, anyhow::Error>((
            report,
            source_store.path().display().to_string(),
            target_store.path().display().to_string(),
        ))
    })
    .await
    .context("the migration task failed")??;
    let (report, from, into) = report;
    for (tree, entries) in &report.trees {
        println!("{tree:<28} {entries:>9} entries, counts match");
    }
    println!(
        "copied {} entries from {from} into {into}; set storage.backend = \"{to}\" and start the daemon",
        report.entries()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_how_well_the_sweep_covers_each_kind_and_who_decides() {
        let row = |kind: &str, decided, covered, mode: &str| crate::metrics::SweepCoverage {
            workspace: "acme".into(),
            kind: kind.into(),
            decided,
            covered,
            pending: 0,
            mode: mode.into(),
        };
        assert_eq!(
            sweep_coverage_line(&row("pull_requests", 100, 99, "sweep")),
            "acme pull_requests: 99 % flagged first (99 of the last 100); the sweep decides"
        );
        assert_eq!(
            sweep_coverage_line(&row("pushes", 20, 2, "fallback")),
            "acme pushes: 10 % flagged first (2 of the last 20); polled per repository: \
             coverage below 95 %"
        );
        assert_eq!(
            sweep_coverage_line(&row("pushes", 0, 0, "measuring")),
            "acme pushes: no sample yet; polled per repository while measuring"
        );
    }

    /// Today's output of every listing, byte for byte.
    mod listings {
        use super::*;
        use jiff::Timestamp;

        fn at(seconds: i64) -> Timestamp {
            Timestamp::from_second(seconds).expect("timestamp")
        }

        #[test]
        fn installations() {
            let rows = vec![
                InstallationRow {
                    team_id: "T1".into(),
                    team_name: "Acme Ünïcode".into(),
                    enterprise_id: None,
                    state: "active".into(),
                    permissions: "full".into(),
                    missing_scopes: Vec::new(),
                    source: "oauth".into(),
                    installer_user_id: None,
                    installed_at: at(0),
                    updated_at: at(1_700_000_000),
                },
                InstallationRow {
                    team_id: "T22222".into(),
                    team_name: "B".into(),
                    enterprise_id: None,
                    state: "uninstalled".into(),
                    permissions: "basic".into(),
                    missing_scopes: vec!["users:read".into(), "im:write".into()],
                    source: "bot_token".into(),
                    installer_user_id: None,
                    installed_at: at(0),
                    updated_at: at(1_700_000_001),
                },
            ];
            assert_eq!(
                table::render(&rows, "no installations yet\n"),
                "TEAM    NAME          STATE        PERMISSIONS  MISSING              SOURCE     UPDATED\nT1      Acme Ünïcode  active       full         -                    oauth      2023-11-14T22:13:20Z\nT22222  B             uninstalled  basic        users:read,im:write  bot_token  2023-11-14T22:13:21Z\n"
            );
            assert_eq!(
                table::render::<7, InstallationRow>(&[], "no installations yet\n"),
                "no installations yet\n"
            );
        }

        #[test]
        fn upgrade_status() {
            let rows = vec![
                UpgradeRow {
                    team_id: "T1".into(),
                    team_name: "Acme".into(),
                    phase: "announced".into(),
                    missing_scopes: vec!["users:read".into()],
                    admins: Vec::new(),
                    last_reminder_at: Some(at(1_700_000_000)),
                    next_reminder_at: None,
                    notifications_held: false,
                },
                UpgradeRow {
                    team_id: "T2".into(),
                    team_name: "Beta".into(),
                    phase: "held".into(),
                    missing_scopes: Vec::new(),
                    admins: Vec::new(),
                    last_reminder_at: None,
                    next_reminder_at: Some(at(1_700_086_400)),
                    notifications_held: true,
                },
            ];
            assert_eq!(
                table::render(&rows, "no installations yet\n"),
                "TEAM  NAME  PHASE      MISSING     LAST                  NEXT                  HELD\nT1    Acme  announced  users:read  2023-11-14T22:13:20Z  -                     no\nT2    Beta  held       -           -                     2023-11-15T22:13:20Z  yes\n"
            );
        }

        #[test]
        fn subscriptions() {
            let rows = vec![
                SubscriptionRow {
                    team_id: "T1".into(),
                    channel_id: "C1".into(),
                    target: "acme/widgets".into(),
                    features: vec!["pullrequests".into(), "pipelines".into()],
                    filters: Vec::new(),
                    paused: None,
                    created_by: "U1".into(),
                },
                SubscriptionRow {
                    team_id: "T1".into(),
                    channel_id: "C2222".into(),
                    target: "acme".into(),
                    features: vec!["commits".into()],
                    filters: vec!["branch:main".into(), "+label:x".into()],
                    paused: Some("no access".into()),
                    created_by: "U1".into(),
                },
            ];
            assert_eq!(
                table::render(&rows, "no subscriptions\n"),
                "TEAM  CHANNEL  TARGET        FEATURES                FILTERS               STATE\nT1    C1       acme/widgets  pullrequests pipelines  -                     active\nT1    C2222    acme          commits                 branch:main +label:x  paused: no access\n"
            );
        }

        #[test]
        fn deliveries() {
            let rows = vec![
                DeliveryRow {
                    id: 7,
                    team_id: "T1".into(),
                    channel_id: "C1".into(),
                    activity_id: "pr:acme/widgets:1:opened".into(),
                    attempts: 3,
                    not_before: at(0),
                    last_error: Some("channel_not_found".into()),
                },
                DeliveryRow {
                    id: 12345,
                    team_id: "T2".into(),
                    channel_id: "C2".into(),
                    activity_id: "x".into(),
                    attempts: 0,
                    not_before: at(0),
                    last_error: None,
                },
            ];
            let view = OutboxView::from_flags(true, false, false);
            assert_eq!(
                table::render(&rows, view.empty_text()),
                "ID     TEAM  CHANNEL  ACTIVITY                  ATTEMPTS  LAST ERROR\n7      T1    C1       pr:acme/widgets:1:opened  3         channel_not_found\n12345  T2    C2       x                         0         -\n"
            );
            assert_eq!(
                table::render::<6, DeliveryRow>(&[], view.empty_text()),
                "no dead letters\n"
            );
        }
    }
}
