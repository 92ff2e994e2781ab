//! The daemon's small background components: systemd notification, the configured bot
//! token's scope re-check, workspace discovery and housekeeping; and the startup check of
//! a configured bot token.
//!
//! Each loop runs until its stop token is cancelled and keeps its errors inside (logged,
//! retried on the next tick); none returns early, because the supervisor would count
//! that as a failure. Must never block: every wait is a tokio sleep or a notification.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::installations::{InstallError, Installer};
use super::{BotTokenRefused, subscriptions};
use crate::clock::Clock;
use crate::config::{Config, Secret};
use crate::slack::socket::SocketHealth;
use crate::store::Store;

/// How soon a failed scope check of the configured bot token is retried.
const RETRY_SOON: Duration = Duration::from_secs(60);

/// How often expired dedup ids and long-uninstalled workspaces are cleaned up.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);

/// Tells systemd READY once the first socket has had hello, and pings its watchdog.
/// Without systemd (`NOTIFY_SOCKET` unset) every call is a no-op.
pub(super) async fn notify_systemd(health: SocketHealth, stop: CancellationToken) {
    let mut connected = health.watch_connected();
    let ready = async {
        while *connected.borrow_and_update() == 0 {
            if connected.changed().await.is_err() {
                return;
            }
        }
        info!("ready: a Slack socket is connected");
        if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            warn!(%error, "could not notify systemd");
        }
    };
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = ready => {}
    }
    let Some(interval) = sd_notify::watchdog_enabled() else {
        // Nothing more to do, but a supervised component runs until it is stopped.
        stop.cancelled().await;
        return;
    };
    let mut ticks = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
    }
}

/// Startup in single-workspace mode. A refused token is fatal (the operator must fix
/// it); Slack being unreachable is not: the periodic re-check will install it later.
pub(super) async fn install_configured_token(
    installer: &Installer,
    token: &Secret<String>,
) -> anyhow::Result<bool> {
    match installer.install_configured_token(token).await {
        Ok(_) => Ok(true),
        Err(InstallError::Slack(error)) if error.is_fatal_auth() => {
            let code = match error {
                crate::slack::web::SlackError::Api { code, .. } => code,
                other => other.to_string(),
            };
            Err(BotTokenRefused { code }.into())
        }
        Err(error) => {
            warn!(%error, "could not read the configured bot token's workspace yet; will retry");
            Ok(false)
        }
    }
}

/// Re-reads the configured token's scopes every `interval`; after a failure (Slack down
/// at startup, say) it tries again within a minute, so the workspace is not left
/// uninstalled for an hour.
pub(super) async fn recheck_scopes(
    installer: Installer,
    token: Secret<String>,
    interval: Duration,
    mut last_ok: bool,
    stop: CancellationToken,
) {
    loop {
        let wait = if last_ok {
            interval
        } else {
            interval.min(RETRY_SOON)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        last_ok = match installer.install_configured_token(&token).await {
            Ok(_) => true,
            Err(error) => {
                warn!(%error, "re-checking the configured bot token's scopes failed; will retry");
                false
            }
        };
    }
}

/// How often the watch list is reconciled with the subscriptions (new repositories of
/// workspaces subscribed whole; workspaces uninstalled or reinstalled).
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(600);

pub(super) async fn discover_workspaces(
    subscriptions: subscriptions::Subscriptions,
    installations_changed: Arc<tokio::sync::Notify>,
    unpark: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(DISCOVERY_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
            _ = installations_changed.notified() => unpark.notify_one(),
        }
        subscriptions.reconcile_watchlist().await;
    }
}

/// Prunes expired dedup ids and purges workspaces uninstalled longer than the retention.
pub(super) async fn housekeeping(
    store: Store,
    clock: Arc<dyn Clock>,
    config: Config,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = clock.now();
        if let Some(cutoff) = before(now, config.storage.dedup_retention) {
            match store.dedup.prune(cutoff) {
                Ok(0) => {}
                Ok(removed) => info!(removed, "pruned expired dedup ids"),
                Err(error) => warn!(%error, "could not prune dedup ids; will retry"),
            }
        }
        if let Some(cutoff) = before(now, config.storage.uninstalled_retention) {
            match store.purge_uninstalled_before(cutoff).await {
                Ok(purged) => {
                    for team in purged {
                        info!(team = %team.team_id, records = team.records, "purged a workspace uninstalled longer than the retention period, with every record it had");
                    }
                }
                Err(error) => warn!(%error, "could not purge uninstalled workspaces; will retry"),
            }
        }
    }
}

fn before(now: jiff::Timestamp, age: Duration) -> Option<jiff::Timestamp> {
    let age = jiff::SignedDuration::try_from(age).ok()?;
    now.checked_sub(age).ok()
}
