//! Wiring: [`build`] makes every part of the daemon from its section of the [`Config`]
//! (store, Slack and Bitbucket clients, services, listeners); [`Parts::launch`] runs each
//! long-lived part as a named component under the [`Supervisor`] and owns the one
//! shutdown order.
//!
//! Shutdown order: the `sockets` component stops taking envelopes (it is stopped by the
//! daemon's shutdown token itself), envelope handlers in flight finish within
//! `shutdown.drain_timeout_secs`, then every other component is cancelled and joined
//! within the same deadline, then the store is flushed. Must never do a component's work
//! itself: each component's loop lives in its own module.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::accounts::Accounts;
use super::background::{
    discover_workspaces, housekeeping, install_configured_token, notify_systemd, recheck_scopes,
};
use super::dispatch::{DispatchContext, Dispatcher};
use super::installations::Installer;
use super::supervisor::{ComponentState, Components, RestartPolicy, Supervisor};
use super::{
    Running, access, admin, http_backend, poller, reminders, router, subscriptions, upgrade_driver,
};
use crate::clock::Clock;
use crate::config::Config;
use crate::http::{self, HttpState, SlackOAuth};
use crate::metrics::Metrics;
use crate::slack::socket::{
    SocketHealth, SocketMode, SocketModeError, SocketModeParts, SocketModeSettings,
};
use crate::slack::web::SlackWeb;
use crate::store::{KeySource, Store};

/// Everything the daemon is made of before anything runs.
pub(super) struct Parts {
    config: Config,
    clock: Arc<dyn Clock>,
    store: Store,
    metrics: Metrics,
    web: SlackWeb,
    installer: Installer,
    accounts: Accounts,
    /// Whether the configured bot token (if any) was read at startup.
    configured_token_ok: bool,
    socket_settings: SocketModeSettings,
    health: SocketHealth,
    http_listener: TcpListener,
    http_address: std::net::SocketAddr,
    admin_listener: UnixListener,
}

/// Opens the store, builds the clients and services, checks a configured bot token and
/// binds both listeners. An error here is a startup error that says what to fix.
pub(super) async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Parts> {
    // Opening may wait (blocking) for a lock a moment ago's handle still holds, and runs
    // migrations: off the async workers.
    let store = {
        let storage = config.storage.clone();
        tokio::task::spawn_blocking(move || super::open_store(&storage))
            .await
            .context("the task opening the store failed")??
    };
    info!(engine = store.engine(), location = %store.path().display(), "store open");
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
    let accounts = Accounts {
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
        // Boxed: a Slack call's future is large in debug builds, and `build` is awaited
        // on the caller's stack.
        Some(token) => Box::pin(install_configured_token(&installer, token)).await?,
        None => true,
    };
    let socket_settings = SocketModeSettings::from_config(&config.slack, &config.shutdown);
    let health = SocketHealth::new(socket_settings.connections);
    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.http.listen))?;
    let http_address = http_listener.local_addr()?;
    info!(address = %http_address, "HTTP server listening (/healthz, /readyz, /slack/install)");
    let admin_listener = admin::bind(&config.admin.socket).with_context(|| {
        format!(
            "cannot create the admin socket admin.socket = {}",
            config.admin.socket.display()
        )
    })?;
    if config.slack.oauth.is_some() && config.bitbucket.workspaces.is_empty() {
        warn!(
            "bitbucket.workspaces is empty: any Slack workspace that installs the app can subscribe to any Bitbucket workspace the credential reads; list the allowed ones there (and slack.allowed_teams) to narrow it"
        );
    }
    Ok(Parts {
        config,
        clock,
        store,
        metrics,
        web,
        installer,
        accounts,
        configured_token_ok,
        socket_settings,
        health,
        http_listener,
        http_address,
        admin_listener,
    })
}

impl Parts {
    /// Runs every component under one supervisor and returns the running daemon. The
    /// returned [`Running`]'s main task waits for `shutdown` (or a component that keeps
    /// failing) and then stops everything in the order the module header gives.
    pub(super) fn launch(self, shutdown: CancellationToken) -> anyhow::Result<Running> {
        let Parts {
            config,
            clock,
            store,
            metrics,
            web,
            installer,
            accounts,
            configured_token_ok,
            socket_settings,
            health,
            http_listener,
            http_address,
            admin_listener,
        } = self;
        let background = CancellationToken::new();
        let failed = CancellationToken::new();
        let mut supervisor = Supervisor::new(
            background.clone(),
            failed.clone(),
            metrics.clone(),
            RestartPolicy::default(),
        );
        let components = supervisor.components();

        spawn_http(
            &mut supervisor,
            &config,
            HttpState {
                sockets: health.clone(),
                store: store.clone(),
                clock: clock.clone(),
                backend: Arc::new(http_backend::HttpBackend {
                    installer: installer.clone(),
                    accounts: accounts.clone(),
                    components: components.clone(),
                }),
                slack_oauth: slack_oauth(&config),
                metrics: metrics.clone(),
            },
            http_listener,
            http_address,
        );
        {
            let health = health.clone();
            supervisor.spawn("systemd", move |stop| notify_systemd(health.clone(), stop));
        }
        // With several replicas on one database, leases say who does what; alone (sled),
        // this replica does everything.
        let leases = spawn_leases(
            &mut supervisor,
            &store,
            &clock,
            &metrics,
            config.storage.lease_ttl,
        );
        {
            let (store, clock, config) = (store.clone(), clock.clone(), config.clone());
            spawn_leader_only(&mut supervisor, "housekeeping", &leases, move |stop| {
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
        // Rung by the poller after each commit that appended activities; the router listens.
        let activities_committed = Arc::new(tokio::sync::Notify::new());
        let bitbucket = poller::spawn(
            &config.bitbucket,
            store.clone(),
            leases.clone(),
            clock.clone(),
            metrics.clone(),
            activities_committed.clone(),
            &mut supervisor,
        )?;
        // Link previews read with the same credential, through their own budget share.
        let previews_client = bitbucket.clone();
        spawn_admin(
            &mut supervisor,
            &config,
            admin::AdminState {
                store: store.clone(),
                lease_ttl: config.storage.lease_ttl,
                sockets: health.clone(),
                clock: clock.clone(),
                started_at: clock.now(),
                bitbucket: bitbucket.clone(),
                upgrade_schedule: config.upgrade.schedule.clone(),
                components: components.clone(),
                metrics: metrics.clone(),
            },
            admin_listener,
        );
        // The review reminders read open pull requests with the daemon's credential too.
        let reminders_client = bitbucket.clone();
        let lookup =
            bitbucket.map(|client| Arc::new(client) as Arc<dyn crate::bitbucket::RepositoryLookup>);
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
        // Rung on every installation change, so deliveries parked for a workspace that
        // was not installed resume when it is again.
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
            spawn_leader_only(&mut supervisor, "upgrade_driver", &leases, move |stop| {
                campaigns.clone().run(upgrades.clone(), stop)
            });
        }
        {
            let (web, store, clock, metrics, wake, unpark) = (
                web.clone(),
                store.clone(),
                clock.clone(),
                metrics.clone(),
                delivery_wake.clone(),
                unpark.clone(),
            );
            let claims: Arc<dyn crate::slack::delivery::ChannelClaims> = Arc::new(leases.clone());
            supervisor.spawn("delivery", move |stop| {
                crate::slack::delivery::Deliverer {
                    web: web.clone(),
                    store: store.clone(),
                    clock: clock.clone(),
                    settings: crate::slack::delivery::DeliverySettings::default(),
                    metrics: metrics.clone(),
                    wake: wake.clone(),
                    unpark: unpark.clone(),
                    claims: claims.clone(),
                }
                .run(stop)
            });
        }
        {
            let (store, clock, metrics, wake, committed) = (
                store.clone(),
                clock.clone(),
                metrics.clone(),
                delivery_wake.clone(),
                activities_committed.clone(),
            );
            let action_buttons = accounts.client.is_some();
            supervisor.spawn("router", move |stop| {
                router::Router {
                    store: store.clone(),
                    clock: clock.clone(),
                    metrics: metrics.clone(),
                    delivery_wake: wake.clone(),
                    activities_committed: committed.clone(),
                    action_buttons,
                }
                .run(stop)
            });
        }

        // The reminders queue into the same outbox and wake the same delivery loop.
        let reminders = reminders::ReviewReminders::new(
            store.clone(),
            web.clone(),
            clock.clone(),
            reminders_client,
            accounts.clone(),
            config.reminders.grace,
            delivery_wake.clone(),
        );
        {
            let reminders = reminders.clone();
            spawn_leader_only(&mut supervisor, "reminders", &leases, move |stop| {
                reminders.clone().run(stop)
            });
        }
        let reminder_signal = reminders.signal.clone();

        let actions = super::actions::PullRequestActions::new(
            store.clone(),
            web.clone(),
            accounts.clone(),
            clock.clone(),
            config.slack.actions_per_minute,
        );
        let unfurls = super::unfurls::Unfurls::new(
            store.clone(),
            web.clone(),
            accounts.clone(),
            clock.clone(),
            metrics.clone(),
            previews_client.as_ref(),
            config.bitbucket.rate_limit_per_hour,
        );
        let dispatcher = Dispatcher::new(DispatchContext {
            store: store.clone(),
            clock: clock.clone(),
            sockets: health.clone(),
            installer,
            accounts,
            actions,
            subscriptions,
            upgrade: config.upgrade.clone(),
            configured_bot_token: config.slack.bot_token.clone(),
            install_url: install_url(&config),
            campaigns,
            unfurls,
            reminders,
        });
        let handlers = TaskTracker::new();
        let socket_mode = SocketMode::new(SocketModeParts {
            web,
            app_token: config.slack.app_token.clone(),
            settings: socket_settings,
            handler: Arc::new(dispatcher),
            dedup: store.dedup.clone(),
            clock: clock.clone(),
            health,
            tracker: handlers.clone(),
            metrics,
        });
        // The sockets are the intake: they stop on the daemon's own shutdown token, before
        // anything else. A refused app token is kept here and ends the daemon.
        let refused: Arc<Mutex<Option<SocketModeError>>> = Arc::default();
        {
            let (refused, shutdown) = (refused.clone(), shutdown.clone());
            supervisor.spawn_intake("sockets", shutdown.clone(), move |stop| {
                let (socket_mode, refused, shutdown) =
                    (socket_mode.clone(), refused.clone(), shutdown.clone());
                async move {
                    if let Err(error) = socket_mode.run(stop).await {
                        *refused.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(error);
                        shutdown.cancel();
                    }
                }
            });
        }

        let access_control = access.clone();
        let running_store = store.clone();
        let main = tokio::spawn(async move {
            // A component that keeps failing stops the daemon with an error (systemd then
            // restarts the process).
            tokio::select! {
                _ = failed.cancelled() => shutdown.cancel(),
                _ = shutdown.cancelled() => {}
            }
            let drain = config.shutdown.drain_timeout;
            supervisor.join_intake(drain).await;
            // The sockets are closed; let handlers that no longer need them (response_url
            // replies, event work) finish within the drain deadline.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            handlers.close();
            if tokio::time::timeout(drain, handlers.wait()).await.is_err() {
                warn!(
                    still_running = handlers.len(),
                    "drain deadline passed; exiting with handlers still running"
                );
            }
            background.cancel();
            // Every component ends (a message being posted finishes and is recorded)
            // before the store is flushed; one that does not within the deadline is
            // aborted.
            supervisor.join(drain).await;
            if let Err(error) = store.flush().await {
                error!(%error, "could not flush the store at shutdown");
            }
            let refused = refused
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .take();
            if let Some(error) = refused {
                return Err(error.into());
            }
            if failed.is_cancelled() {
                anyhow::bail!(
                    "stopped because a component kept failing: {}",
                    failing(&components).join(", ")
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
            reminders: reminder_signal,
            store: running_store,
        })
    }
}

/// The components that failed too often.
fn failing(components: &Components) -> Vec<String> {
    components
        .snapshot()
        .into_iter()
        .filter(|(_, status)| status.state == ComponentState::Failed)
        .map(|(name, _)| name)
        .collect()
}

/// The Slack install settings, when `slack.client_id` and `client_secret` are set.
fn slack_oauth(config: &Config) -> Option<SlackOAuth> {
    config.slack.oauth.clone().map(|oauth| SlackOAuth {
        config: oauth,
        authorize_url: config.slack.oauth_authorize_url.clone(),
        redirect_uri: http::redirect_uri(&config.http.public_url),
    })
}

/// Where admins install the app, when install through Slack is set up.
fn install_url(config: &Config) -> Option<String> {
    config.slack.oauth.as_ref().map(|_| {
        format!(
            "{}/slack/install",
            config.http.public_url.as_str().trim_end_matches('/')
        )
    })
}

/// On PostgreSQL, the `leases` component and the leases it keeps; on sled, everything.
/// Its own function (as the spawns below), so `launch`'s stack frame stays small.
#[inline(never)]
fn spawn_leases(
    supervisor: &mut Supervisor,
    store: &Store,
    clock: &Arc<dyn Clock>,
    metrics: &Metrics,
    ttl: std::time::Duration,
) -> super::replicas::Leases {
    if !store.coordination.is_shared() {
        return super::replicas::Leases::everything();
    }
    let (held, leases) = super::replicas::Leases::empty();
    let (store, clock, metrics) = (store.clone(), clock.clone(), metrics.clone());
    supervisor.spawn("leases", move |stop| {
        super::replicas::LeaseKeeper {
            store: store.clone(),
            clock: clock.clone(),
            ttl,
            metrics: metrics.clone(),
            held: held.clone(),
        }
        .run(stop)
    });
    leases
}

/// Runs the component `name` only on the replica holding the `leader` lease
/// ([`super::replicas::while_leader`]).
#[inline(never)]
fn spawn_leader_only<F, Fut>(
    supervisor: &mut Supervisor,
    name: &'static str,
    leases: &super::replicas::Leases,
    run: F,
) where
    F: FnMut(tokio_util::sync::CancellationToken) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let leases = leases.clone();
    supervisor.spawn(name, move |stop| {
        super::replicas::while_leader(leases.clone(), stop, run.clone())
    });
}

/// The HTTP server as the component `http`; a restart listens again on the address the
/// first run had.
fn spawn_http(
    supervisor: &mut Supervisor,
    config: &Config,
    state: HttpState,
    listener: TcpListener,
    address: std::net::SocketAddr,
) {
    let settings = http::HttpSettings::from_config(&config.http, &config.shutdown);
    let mut first_listener = Some(listener);
    supervisor.spawn("http", move |stop| {
        let listener = first_listener.take();
        let (state, settings) = (state.clone(), settings);
        async move {
            let listener = match listener {
                Some(listener) => listener,
                None => match TcpListener::bind(address).await {
                    Ok(listener) => listener,
                    Err(error) => {
                        warn!(%error, %address, "cannot listen again");
                        return;
                    }
                },
            };
            if let Err(error) = http::serve(listener, state, settings, stop).await {
                warn!(%error, "HTTP server ended with an error");
            }
        }
    });
}

/// The admin socket as the component `admin`; a restart binds the socket file again.
fn spawn_admin(
    supervisor: &mut Supervisor,
    config: &Config,
    state: admin::AdminState,
    listener: UnixListener,
) {
    let path = config.admin.socket.clone();
    let mut first_listener = Some(listener);
    supervisor.spawn("admin", move |stop| {
        let listener = first_listener.take();
        let (state, path) = (state.clone(), path.clone());
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
