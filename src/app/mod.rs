//! The application layer: the only place that combines several services. This file is
//! the daemon's front door ([`start`], [`run`], [`Running`]) and how its end maps to an
//! exit code ([`exit_code`]); `wiring` builds the parts and launches them as supervised
//! components, the other modules are the services and loops themselves.
//!
//! Startup failures come back as errors that say what to fix; once running, a
//! component's transient errors stay inside its own loop. Must never hold Bitbucket JSON
//! or Slack wire types: those stay in `bitbucket/` and `slack/`.

pub mod access;
pub mod accounts;
pub mod actions;
pub mod admin;
mod background;
pub mod cli;
pub mod dispatch;
pub mod home;
pub mod http_backend;
pub mod installations;
pub mod personal;
pub mod poller;
pub mod reminders;
pub mod replicas;
pub mod router;
pub mod subscriptions;
pub mod supervisor;
pub mod unfurls;
pub mod upgrade_driver;
mod wiring;

use std::sync::Arc;

/// Opens the store `storage` names: its engine, directory and key. Blocks (opening may
/// wait for a lock and runs migrations).
pub fn open_store(
    storage: &crate::config::StorageConfig,
) -> Result<crate::store::Store, crate::store::StoreError> {
    crate::store::Store::open_backend(
        &storage.backend,
        &storage.path,
        storage.encryption_key_file.as_deref(),
    )
}

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::slack::socket::SocketModeError;
use crate::store::{Store, StoreError};

/// The process's exit code after a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// The process's exit code when the configuration must be fixed first (EX_CONFIG): systemd's
/// `RestartPreventExitStatus=78` then stops restarting a daemon that cannot work.
pub const EXIT_CONFIG: u8 = 78;

/// Slack refused the configured bot token: the operator must replace it.
#[derive(Debug, thiserror::Error)]
#[error(
    "Slack refused slack.bot_token with `{code}`: reinstall the app and configure its new bot \
     token (xoxb-...), or remove slack.bot_token and install through /slack/install"
)]
pub struct BotTokenRefused {
    pub code: String,
}

/// How the process should exit after the daemon ended with `error`: [`EXIT_CONFIG`] for
/// what only the operator can fix (a refused app or bot token, a store that cannot be
/// opened, is newer than this version or has the wrong key), else [`EXIT_FAILURE`].
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let is_config = error.downcast_ref::<SocketModeError>().is_some()
        || error.downcast_ref::<BotTokenRefused>().is_some()
        || matches!(
            error.downcast_ref::<StoreError>(),
            Some(
                StoreError::Open { .. }
                    | StoreError::NewerSchema { .. }
                    | StoreError::WrongKey { .. }
                    | StoreError::KeyFile { .. }
            )
        );
    if is_config { EXIT_CONFIG } else { EXIT_FAILURE }
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
    reminders: reminders::ReminderSignal,
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

    /// Wakes the review reminders and waits until they have handled everything due now
    /// (what a test needs after moving its manual clock).
    pub async fn settle_reminders(&self) {
        let ring = self.reminders.wake();
        self.reminders.settled(ring).await;
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

/// Starts the daemon: builds every part ([`wiring::build`]: the store, the clients, a
/// configured bot token's check, both listeners) and launches them under the supervisor.
/// Errors here are startup errors that say what to fix; after this returns,
/// [`Running::wait`] reports how it ended.
pub async fn start(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    // Boxed: building holds every part at once, a large future that would otherwise sit
    // on the caller's stack (a test's, in debug builds, is only 2 MiB).
    Box::pin(wiring::build(config, clock))
        .await?
        .launch(shutdown)
}
