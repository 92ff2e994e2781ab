//! Wiring: builds every component from its part of the [`Config`], runs them as named,
//! supervised tasks, and shuts them down in order.
//!
//! The only place that combines several services. Startup failures come back as errors
//! that say what to fix; once running, a component's transient errors stay inside its
//! own loop. Shutdown: stop taking envelopes, let in-flight handlers finish (with a
//! deadline), flush the store, return.

pub mod access;
pub mod accounts;
pub mod admin;
pub mod cli;
pub mod dispatch;
pub mod installations;
pub mod poller;
pub mod router;
pub mod subscriptions;
pub mod supervisor;
pub mod upgrade_driver;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::clock::Clock;
use crate::config::{Config, Secret};
use crate::http::{self, HttpState, SlackOAuth};
use crate::metrics::Metrics;
use crate::slack::socket::{SocketHealth, SocketMode, SocketModeParts, SocketModeSettings};
use crate::slack::web::SlackWeb;
use crate::store::{KeySource, Store};

use dispatch::{DispatchContext, Dispatcher};
use installations::{InstallError, Installer};

/// How soon a failed scope check of the configured bot token is retried.
const RETRY_SOON: Duration = Duration::from_secs(60);

/// How often expired dedup ids and long-uninstalled workspaces are cleaned up.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(600);

/// Slack refused the configured bot token: the operator must replace it.
#[derive(Debug, thiserror::Error)]
#[error(
    "Slack refused slack.bot_token with `{code}`: reinstall the app and configure its new bot \
     token (xoxb-...), or remove slack.bot_token and install through /slack/install"
)]
pub struct BotTokenRefused {
    pub code: String,
}

/// Runs the daemon until `shutdown` is cancelled (or a token is refused).
pub async fn run(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(config, clock, shutdown).await?.wait().await
}

/// A started daemon: its HTTP address is bound and its tasks are running.
#[derive(Debug)]
pub struct Running {
    /// Where `http.listen` actually bound (useful when the port was 0).
    pub http_address: std::net::SocketAddr,
    main: tokio::task::JoinHandle<anyhow::Result<()>>,
    upgrades: upgrade_driver::UpgradeSignal,
    access: access::AccessControl,
    store: Store,
}

impl Running {
    /// Makes the permission-upgrade driver look at its campaigns' wake times now (after
    /// a test moved its manual clock; the system clock needs no help).
    pub fn wake_upgrades(&self) {
        self.upgrades.wake();
    }

    /// Wakes the permission-upgrade driver and waits until it has acted on everything
    /// due now (what a test needs before saying "nothing else was sent").
    pub async fn settle_upgrades(&self) {
        let ring = self.upgrades.wake();
        self.upgrades.settled(ring).await;
    }

    /// Checks every subscription's access now, as the hourly check does, and returns when
    /// it is done (what a test needs after changing who can read what).
    pub async fn recheck_access(&self) {
        self.access.recheck().await;
    }

    /// The daemon's store (the process holds it open, so a test reads it through here).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits until the daemon has stopped and drained.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.main.await.context("the daemon's main task failed")?
    }
}

/// Starts the daemon: opens the store, installs a configured bot token, binds the HTTP
/// server, and spawns everything else. Errors here are startup errors that say what to
/// fix; after this returns, [`Running::wait`] reports how it ended.
pub async fn start(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    // Opening may wait (blocking) for a lock a moment ago's handle still holds, and runs
    // migrations: off the async workers.
    let store = {
        let (path, key_file) = (
            config.storage.path.clone(),
            config.storage.encryption_key_file.clone(),
        );
        tokio::task::spawn_blocking(move || Store::open_with_key(&path, key_file.as_deref()))
            .await
            .context("the task opening the store failed")??
    };
    info!(path = %store.path().display(), "store open");
    match store.key_source() {
        KeySource::Generated(path) => info!(
            path = %path.display(),
            "generated the token encryption key; back it up with the store"
        ),
        KeySource::Existing(path) | KeySource::Configured(path) => {
            info!(path = %path.display(), "token encryption key loaded")
        }
    }
    let metrics = Metrics::default();
    let web = SlackWeb::with_timeout(&config.slack.api_url, config.slack.request_timeout)?
        .with_metrics(metrics.clone());
    let installer = Installer {
        web: web.clone(),
        store: store.clone(),
        clock: clock.clone(),
        changed: Arc::new(tokio::sync::Notify::new()),
        upgrades: upgrade_driver::UpgradeSignal::default(),
        allowed_teams: config.slack.allowed_teams.clone(),
    };
    let accounts = accounts::Accounts {
        store: store.clone(),
        web: web.clone(),
        client: match &config.bitbucket.user_oauth {
            Some(consumer) => Some(crate::bitbucket::accounts::UserOAuthClient::with_timeout(
                config.bitbucket.oauth_url.clone(),
                config.bitbucket.api_url.clone(),
                consumer.key.clone(),
                consumer.secret.clone(),
                config.bitbucket.request_timeout,
            )?),
            None => None,
        },
        clock: clock.clone(),
        public_url: config.http.public_url.clone(),
        link_changes: Arc::new(tokio::sync::Notify::new()),
    };
    let configured_token_ok = match &config.slack.bot_token {
        Some(token) => install_configured_token(&installer, token).await?,
        None => true,
    };
    let settings = SocketModeSettings::from_config(&config.slack, &config.shutdown);
    let health = SocketHealth::new(settings.connections);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.http.listen))?;
    let http_address = listener.local_addr()?;
    info!(address = %http_address, "HTTP server listening (/healthz, /readyz, /slack/install)");

    let admin_listener = admin::bind(&config.admin.socket).with_context(|| {
        format!(
            "cannot create the admin socket admin.socket = {}",
            config.admin.socket.display()
        )
    })?;
    let background = CancellationToken::new();

    let slack_oauth = config.slack.oauth.clone().map(|oauth| SlackOAuth {
        config: oauth,
        authorize_url: config.slack.oauth_authorize_url.clone(),
        redirect_uri: http::redirect_uri(&config.http.public_url),
    });
    let install_url = slack_oauth.as_ref().map(|_| {
        format!(
            "{}/slack/install",
            config.http.public_url.as_str().trim_end_matches('/')
        )
    });
    let http_state = HttpState {
        sockets: health.clone(),
        store: store.clone(),
        clock: clock.clone(),
        installer: installer.clone(),
        accounts: accounts.clone(),
        slack_oauth,
        metrics: metrics.clone(),
        components: Default::default(),
    };
    let failed = CancellationToken::new();
    let mut supervisor = supervisor::Supervisor::new(
        background.clone(),
        failed.clone(),
        metrics.clone(),
        supervisor::RestartPolicy::default(),
    );
    let components = supervisor.components();
    let http_state = HttpState {
        components: components.clone(),
        ..http_state
    };
    let http_settings = http::HttpSettings::from_config(&config.http, &config.shutdown);
    let mut first_listener = Some(listener);
    supervisor.spawn("http", move |stop| {
        let listener = first_listener.take();
        let (state, settings) = (http_state.clone(), http_settings);
        async move {
            // A restart listens again on the address the first run had.
            let listener = match listener {
                Some(listener) => listener,
                None => match tokio::net::TcpListener::bind(http_address).await {
                    Ok(listener) => listener,
                    Err(error) => {
                        warn!(%error, address = %http_address, "cannot listen again");
                        return;
                    }
                },
            };
            if let Err(error) = http::serve(listener, state, settings, stop).await {
                warn!(%error, "HTTP server ended with an error");
            }
        }
    });
    tokio::spawn(
        notify_systemd(health.clone(), background.clone()).instrument(info_span!("systemd")),
    );
    {
        let (store, clock, config) = (store.clone(), clock.clone(), config.clone());
        supervisor.spawn("housekeeping", move |stop| {
            housekeeping(store.clone(), clock.clone(), config.clone(), stop)
        });
    }
    if let Some(token) = config.slack.bot_token.clone() {
        let installer = installer.clone();
        let interval = config.slack.scope_recheck_interval;
        supervisor.spawn("scope_recheck", move |stop| {
            recheck_scopes(
                installer.clone(),
                token.clone(),
                interval,
                configured_token_ok,
                stop,
            )
        });
    }
    let bitbucket = poller::spawn(
        &config.bitbucket,
        store.clone(),
        clock.clone(),
        metrics.clone(),
        &mut supervisor,
    )?;
    {
        let admin_state = admin::AdminState {
            store: store.clone(),
            sockets: health.clone(),
            clock: clock.clone(),
            started_at: clock.now(),
            bitbucket: bitbucket.clone(),
            upgrade_schedule: config.upgrade.schedule.clone(),
            components: components.clone(),
        };
        let path = config.admin.socket.clone();
        let mut first_listener = Some(admin_listener);
        supervisor.spawn("admin", move |stop| {
            let listener = first_listener.take();
            let (state, path) = (admin_state.clone(), path.clone());
            async move {
                let listener = match listener {
                    Some(listener) => listener,
                    None => match admin::bind(&path) {
                        Ok(listener) => listener,
                        Err(error) => {
                            warn!(%error, path = %path.display(), "cannot listen on the admin socket again");
                            return;
                        }
                    },
                };
                admin::serve(listener, path, state, stop).await
            }
        });
    }
    if config.slack.oauth.is_some() && config.bitbucket.workspaces.is_empty() {
        warn!(
            "bitbucket.workspaces is empty: any Slack workspace that installs the app can subscribe to any Bitbucket workspace the credential reads; list the allowed ones there (and slack.allowed_teams) to narrow it"
        );
    }
    let lookup = bitbucket
        .clone()
        .map(|client| Arc::new(client) as Arc<dyn crate::bitbucket::RepositoryLookup>);
    let access = access::AccessControl::new(
        store.clone(),
        accounts.clone(),
        lookup.clone(),
        config.bitbucket.private_repositories,
        config.bitbucket.workspaces.clone(),
        clock.clone(),
    );
    let subscriptions = subscriptions::Subscriptions {
        store: store.clone(),
        web: web.clone(),
        clock: clock.clone(),
        accounts: accounts.clone(),
        lookup,
        access: access.clone(),
    };
    let access_control = access.clone();
    let running_store = store.clone();
    {
        let (access, link_changes, subscriptions) = (
            access.clone(),
            accounts.link_changes.clone(),
            subscriptions.clone(),
        );
        supervisor.spawn("access", move |stop| {
            access
                .clone()
                .run(link_changes.clone(), subscriptions.clone(), stop)
        });
    }
    // Rung on every installation change, so deliveries parked for a workspace that was
    // not installed resume when it is again.
    let unpark = Arc::new(tokio::sync::Notify::new());
    {
        let (subscriptions, changed, unpark) = (
            subscriptions.clone(),
            installer.changed.clone(),
            unpark.clone(),
        );
        supervisor.spawn("workspace_discovery", move |stop| {
            discover_workspaces(subscriptions.clone(), changed.clone(), unpark.clone(), stop)
        });
    }
    let delivery_wake = Arc::new(tokio::sync::Notify::new());
    let campaigns = upgrade_driver::Campaigns::new(
        store.clone(),
        web.clone(),
        clock.clone(),
        config.upgrade.clone(),
        &config.http.public_url,
        delivery_wake.clone(),
    );
    let upgrades = installer.upgrades.clone();
    {
        let (campaigns, upgrades) = (campaigns.clone(), upgrades.clone());
        supervisor.spawn("upgrade_driver", move |stop| {
            campaigns.clone().run(upgrades.clone(), stop)
        });
    }
    let dispatcher = Dispatcher::new(DispatchContext {
        store: store.clone(),
        clock: clock.clone(),
        sockets: health.clone(),
        installer,
        accounts,
        subscriptions,
        upgrade: config.upgrade.clone(),
        configured_bot_token: config.slack.bot_token.clone(),
        install_url,
        campaigns,
    });
    {
        let (web, store, clock, metrics, wake, unpark) = (
            web.clone(),
            store.clone(),
            clock.clone(),
            metrics.clone(),
            delivery_wake.clone(),
            unpark.clone(),
        );
        supervisor.spawn("delivery", move |stop| {
            crate::slack::delivery::Deliverer {
                web: web.clone(),
                store: store.clone(),
                clock: clock.clone(),
                settings: crate::slack::delivery::DeliverySettings::default(),
                metrics: metrics.clone(),
                wake: wake.clone(),
                unpark: unpark.clone(),
            }
            .run(stop)
        });
    }
    {
        let (store, clock, metrics, wake) = (
            store.clone(),
            clock.clone(),
            metrics.clone(),
            delivery_wake.clone(),
        );
        supervisor.spawn("router", move |stop| {
            router::Router {
                store: store.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                delivery_wake: wake.clone(),
            }
            .run(stop)
        });
    }

    let handlers = TaskTracker::new();
    let socket_mode = SocketMode::new(SocketModeParts {
        web,
        app_token: config.slack.app_token.clone(),
        settings,
        handler: Arc::new(dispatcher),
        dedup: store.dedup.clone(),
        clock,
        health,
        tracker: handlers.clone(),
        metrics,
    });
    let main = tokio::spawn(async move {
        // A component that keeps failing stops the daemon with an error (systemd then
        // restarts the process).
        let watch_failures = {
            let (failed, shutdown) = (failed.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = failed.cancelled() => shutdown.cancel(),
                    _ = shutdown.cancelled() => {}
                }
            })
        };
        let outcome = socket_mode.run(shutdown.clone()).await;
        if outcome.is_err() {
            shutdown.cancel();
        }
        watch_failures.abort();
        // The sockets are closed; let handlers that no longer need them (response_url
        // replies, event work) finish within the drain deadline.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        handlers.close();
        if tokio::time::timeout(config.shutdown.drain_timeout, handlers.wait())
            .await
            .is_err()
        {
            warn!(
                still_running = handlers.len(),
                "drain deadline passed; exiting with handlers still running"
            );
        }
        background.cancel();
        // Every component ends (a message being posted finishes and is recorded) before
        // the store is flushed; one that does not within the deadline is aborted.
        supervisor.join(config.shutdown.drain_timeout).await;
        if let Err(error) = store.flush().await {
            error!(%error, "could not flush the store at shutdown");
        }
        outcome?;
        if failed.is_cancelled() {
            let failing: Vec<String> = components
                .snapshot()
                .into_iter()
                .filter(|(_, status)| status.state == supervisor::ComponentState::Failed)
                .map(|(name, _)| name)
                .collect();
            anyhow::bail!(
                "stopped because a component kept failing: {}",
                failing.join(", ")
            );
        }
        info!("stopped cleanly");
        Ok(())
    });
    Ok(Running {
        http_address,
        main,
        upgrades,
        access: access_control,
        store: running_store,
    })
}

/// Tells systemd READY once the first socket has had hello, and pings its watchdog.
/// Without systemd (`NOTIFY_SOCKET` unset) every call is a no-op.
async fn notify_systemd(health: SocketHealth, stop: CancellationToken) {
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
async fn install_configured_token(
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
async fn recheck_scopes(
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

async fn discover_workspaces(
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
async fn housekeeping(
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
