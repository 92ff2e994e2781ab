//! Our Socket Mode client on tokio-tungstenite: N sockets, ack first, concurrent handlers.
//!
//! Owns the sockets' whole life, in parts: [`SocketMode::run`] keeps the configured
//! number of slots; each slot ([`slot`]) gets a fresh URL from `apps.connections.open`
//! every time, connects and reconnects with [`Backoff`]; each connected session
//! ([`session`]) reads frames, handles hello and `disconnect` (the replacement is opened
//! before the old socket closes), pings and watches for silence; [`envelopes`] dedups
//! Slack's retries, acks and runs the handlers; [`next_step`] decides, purely, what a
//! session and a slot do next; [`health`] is what `/readyz` and `status` report.
//!
//! Must never: wait for a handler before reading the next frame (handlers run on their
//! own tasks, so a slow one never delays another envelope's ack); let a bad frame or a
//! panicking handler end a socket; retry a refused app token forever (that is
//! [`SocketModeError::AppTokenRefused`], and the process exits); log a token or a socket
//! URL (the URL carries a ticket); leave a socket open or state spoiled when `run`
//! returns, unwinds or is dropped (a supervisor may call it again).

mod envelopes;
mod health;
mod next_step;
mod session;
mod slot;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info_span};

use crate::clock::Clock;
use crate::config::{Secret, ShutdownConfig, SlackConfig};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::store::DedupStore;

use super::envelope::{EventCallback, Interaction, SlashCommand};
use super::web::SlackWeb;

pub use self::health::{SlotHealth, SocketHealth, SocketState};
pub use self::slot::Backoff;

/// What the rest of the daemon does with envelopes. Every method runs on its own task.
pub trait EnvelopeHandler: Send + Sync + 'static {
    /// Answers a slash command. A reply ready within the budget goes into the ack;
    /// a later one is posted to the command's `response_url`.
    fn slash_command(&self, command: SlashCommand) -> impl Future<Output = Message> + Send;
    /// Handles an Events API callback, after it was acked.
    fn event(&self, event: EventCallback) -> impl Future<Output = ()> + Send;
    /// Handles a click, shortcut or submission, after it was acked.
    fn interaction(&self, interaction: Interaction) -> impl Future<Output = ()> + Send;
}

/// Timings and sizes of the Socket Mode client.
#[derive(Debug, Clone)]
pub struct SocketModeSettings {
    pub connections: usize,
    pub reply_budget: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How long a socket being replaced waits for its in-flight acks before closing.
    pub retire_grace: Duration,
    /// How long, at shutdown, sockets wait for in-flight handlers' acks.
    pub drain_timeout: Duration,
    pub connect_timeout: Duration,
}

impl SocketModeSettings {
    /// What a session's pure timers need.
    fn session_limits(&self) -> next_step::SessionLimits {
        next_step::SessionLimits {
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            retire_grace: self.retire_grace,
            drain_timeout: self.drain_timeout,
        }
    }

    pub fn from_config(slack: &SlackConfig, shutdown: &ShutdownConfig) -> Self {
        Self {
            connections: slack.socket_connections,
            reply_budget: slack.reply_budget,
            ping_interval: slack.ping_interval,
            idle_timeout: slack.socket_idle_timeout,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            retire_grace: Duration::from_secs(5),
            drain_timeout: shutdown.drain_timeout,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The app token was refused: retrying cannot help, the operator must fix the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketModeError {
    #[error(
        "Slack refused the app token with `{code}`: check slack.app_token (an xapp- token \
         with the connections:write scope, from the app's Basic Information page)"
    )]
    AppTokenRefused { code: String },
}

/// The Socket Mode client.
pub struct SocketMode<H> {
    web: SlackWeb,
    app_token: Secret<String>,
    settings: SocketModeSettings,
    handler: Arc<H>,
    dedup: DedupStore,
    clock: Arc<dyn Clock>,
    health: SocketHealth,
    tracker: TaskTracker,
    metrics: Metrics,
}

impl<H> std::fmt::Debug for SocketMode<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketMode")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Everything a [`SocketMode`] needs.
pub struct SocketModeParts<H> {
    pub web: SlackWeb,
    pub app_token: Secret<String>,
    pub settings: SocketModeSettings,
    pub handler: Arc<H>,
    pub dedup: DedupStore,
    pub clock: Arc<dyn Clock>,
    pub health: SocketHealth,
    /// Handler tasks are spawned here, so shutdown can wait for them.
    pub tracker: TaskTracker,
    pub metrics: Metrics,
}

impl<H: EnvelopeHandler> SocketMode<H> {
    pub fn new(parts: SocketModeParts<H>) -> Arc<Self> {
        Arc::new(Self {
            web: parts.web,
            app_token: parts.app_token,
            settings: parts.settings,
            handler: parts.handler,
            dedup: parts.dedup,
            clock: parts.clock,
            health: parts.health,
            tracker: parts.tracker,
            metrics: parts.metrics,
        })
    }

    /// Keeps the configured number of sockets open until `shutdown`, then drains them.
    /// Returns early only when the app token is refused.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), SocketModeError> {
        let stop = shutdown.child_token();
        // However this call ends (returns, unwinds or is dropped), its sockets close, so
        // a later call starts from a clean slate.
        let _stop_sockets_on_exit = stop.clone().drop_guard();
        let mut slots = tokio::task::JoinSet::new();
        for slot in 0..self.settings.connections {
            let this = self.clone();
            let stop = stop.clone();
            slots.spawn(
                async move { this.run_slot(slot, stop).await }
                    .instrument(info_span!("socket", slot)),
            );
        }
        let mut outcome = Ok(());
        while let Some(joined) = slots.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(fatal)) => {
                    stop.cancel();
                    outcome = Err(fatal);
                }
                Err(join_error) => {
                    error!(error = %join_error, "a socket task failed; the others go on");
                }
            }
        }
        outcome
    }
}
