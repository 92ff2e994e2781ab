//! One socket slot: keeps one Socket Mode connection alive for as long as the daemon
//! runs. Asks for a fresh URL (`apps.connections.open`, every time), connects, runs a
//! session on its own task, acts on what the session reports (as
//! [`next_step::slot_step`] decides), and reconnects with [`Backoff`].
//!
//! Owns connecting, the backoff with jitter, the sockets being retired while their
//! replacement connects, the slot's health state and the reconnect metric. Must never
//! read frames or write acks (that is the session), retry a refused app token (it ends
//! the slot with [`SocketModeError::AppTokenRefused`]), log the socket URL (it carries a
//! ticket), or leave a session of its own running once it has returned or unwound.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

use super::health::{SocketHealth, SocketState};
use super::next_step::{self, SessionEvent, SlotStep};
use super::{EnvelopeHandler, SocketMode, SocketModeError};
use crate::metrics::ReasonLabel;
use crate::slack::envelope::DisconnectReason;
use crate::slack::web::{self, SlackError};

/// Exponential backoff with jitter: 1 s doubling to 60 s, each delay drawn from its
/// upper half so that many daemons restarting together do not reconnect in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(2u32.saturating_pow(self.attempt))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// What a slot does once its session has said its last word.
enum Next {
    /// Connect again at once (a replacement for a socket Slack is recycling).
    Now,
    /// Wait, then connect again.
    After(String, Duration),
    /// Socket Mode is off in the app's settings: wait long, then try again.
    Disabled(Duration),
}

enum ConnectError {
    Fatal(String),
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// However a slot ends, its sessions stop with it; one that unwinds or is aborted before
/// returning is shown as stopped, not as still connected.
struct SlotExit {
    stop: CancellationToken,
    health: SocketHealth,
    slot: usize,
    returned: bool,
}

impl Drop for SlotExit {
    fn drop(&mut self) {
        self.stop.cancel();
        if !self.returned {
            self.health.set_state(self.slot, SocketState::Stopped);
        }
    }
}

type Socket = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl<H: EnvelopeHandler> SocketMode<H> {
    /// Keeps slot `slot` connected until `stop`; returns early only when the app token
    /// is refused.
    pub(super) async fn run_slot(
        self: Arc<Self>,
        slot: usize,
        stop: CancellationToken,
    ) -> Result<(), SocketModeError> {
        let stop = stop.child_token();
        let mut exit = SlotExit {
            stop: stop.clone(),
            health: self.health.clone(),
            slot,
            returned: false,
        };
        let mut backoff = Backoff::new(self.settings.backoff_initial, self.settings.backoff_max);
        let mut sessions: Vec<JoinHandle<()>> = Vec::new();
        let mut retiring: Vec<CancellationToken> = Vec::new();
        let mut result = Ok(());
        while !stop.is_cancelled() {
            sessions.retain(|session| !session.is_finished());
            if retiring.is_empty() {
                // While a retiring socket still serves, the slot stays connected.
                self.health.set_state(slot, SocketState::Connecting);
            }
            let connected = tokio::select! {
                _ = stop.cancelled() => break,
                connected = self.connect() => connected,
            };
            let ws = match connected {
                Ok(ws) => ws,
                Err(ConnectError::Fatal(code)) => {
                    error!(code = %code, "Slack refused the app token; not retrying");
                    self.health.set_state(
                        slot,
                        SocketState::Failed {
                            reason: code.clone(),
                        },
                    );
                    result = Err(SocketModeError::AppTokenRefused { code });
                    break;
                }
                Err(ConnectError::Retry {
                    reason,
                    retry_after,
                }) => {
                    let delay = backoff
                        .next_delay()
                        .max(retry_after.unwrap_or_default())
                        .min(web::RETRY_AFTER_MAX);
                    warn!(%reason, retry_in_ms = delay.as_millis() as u64, "cannot open a Slack socket; will retry");
                    self.retry_after(slot, &stop, reason, delay).await;
                    continue;
                }
            };
            let (events_tx, mut events_rx) = mpsc::channel(4);
            let close = CancellationToken::new();
            let this = self.clone();
            let (session_close, session_stop) = (close.clone(), stop.clone());
            sessions.push(tokio::spawn(
                async move {
                    let reason = this
                        .session_loop(slot, ws, &events_tx, session_close, session_stop)
                        .await;
                    // The slot may have moved on to a replacement; then nobody listens.
                    let _ = events_tx.send(SessionEvent::Ended(reason)).await;
                }
                .in_current_span(),
            ));
            let next = loop {
                let event = events_rx.recv().await;
                let step = next_step::slot_step(event.as_ref());
                match event {
                    Some(SessionEvent::Hello) => info!("socket connected"),
                    Some(SessionEvent::Disconnect(ref reason)) => {
                        info!(reason = reason.as_str(), "Slack asked for a new socket");
                        self.count_reconnect(&format!("disconnect_{}", disconnect_label(reason)));
                    }
                    Some(SessionEvent::Ended(ref reason)) => {
                        info!(%reason, "socket ended");
                        self.count_reconnect(ended_label(reason));
                    }
                    None => {}
                }
                match step {
                    SlotStep::Connected => {
                        self.health.set_state(
                            slot,
                            SocketState::Connected {
                                since: self.clock.now(),
                            },
                        );
                        backoff.reset();
                        for old in retiring.drain(..) {
                            old.cancel();
                        }
                    }
                    SlotStep::CloseAndPause => {
                        warn!(
                            "Socket Mode is disabled in the Slack app's settings; retrying slowly"
                        );
                        close.cancel();
                        break Next::Disabled(self.settings.backoff_max);
                    }
                    SlotStep::CloseAndRetry => {
                        close.cancel();
                        break Next::After(
                            DisconnectReason::TooManyWebsockets.as_str().to_string(),
                            backoff.next_delay(),
                        );
                    }
                    SlotStep::OpenReplacement => {
                        // Open the replacement first; this one closes on its hello.
                        retiring.push(close.clone());
                        break Next::Now;
                    }
                    SlotStep::Reconnect => {
                        let reason = match event {
                            Some(SessionEvent::Ended(reason)) => reason,
                            _ => "socket task ended".into(),
                        };
                        break Next::After(reason, backoff.next_delay());
                    }
                }
            };
            if stop.is_cancelled() {
                break;
            }
            match next {
                Next::Now => {}
                Next::After(reason, delay) => self.retry_after(slot, &stop, reason, delay).await,
                Next::Disabled(delay) => {
                    self.health.set_state(slot, SocketState::LinkDisabled);
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        for old in retiring.drain(..) {
            old.cancel();
        }
        for session in sessions {
            let _ = session.await;
        }
        if result.is_ok() {
            self.health.set_state(slot, SocketState::Stopped);
        }
        exit.returned = true;
        result
    }

    fn count_reconnect(&self, reason: &str) {
        self.metrics
            .socket_reconnects
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    async fn retry_after(
        &self,
        slot: usize,
        stop: &CancellationToken,
        reason: String,
        delay: Duration,
    ) {
        self.health.set_state(
            slot,
            SocketState::Retrying {
                reason,
                retry_in_ms: delay.as_millis() as u64,
            },
        );
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }

    async fn connect(&self) -> Result<Socket, ConnectError> {
        let url = self
            .web
            .open_socket_url(&self.app_token)
            .await
            .map_err(|error| {
                if error.is_fatal_auth() {
                    match error {
                        SlackError::Api { code, .. } => ConnectError::Fatal(code),
                        other => ConnectError::Fatal(other.to_string()),
                    }
                } else {
                    let retry_after = match &error {
                        SlackError::RateLimited { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    ConnectError::Retry {
                        reason: error.to_string(),
                        retry_after,
                    }
                }
            })?;
        let config = WebSocketConfig::default();
        let connecting =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Ok(Ok((ws, _response))) => Ok(ws),
            Ok(Err(error)) => Err(ConnectError::Retry {
                reason: format!("WebSocket handshake failed: {error}"),
                retry_after: None,
            }),
            Err(_) => Err(ConnectError::Retry {
                reason: "WebSocket handshake timed out".into(),
                retry_after: None,
            }),
        }
    }
}

/// A bounded label for a disconnect reason (Slack may invent new ones).
fn disconnect_label(reason: &DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::Warning => "warning",
        DisconnectReason::RefreshRequested => "refresh_requested",
        DisconnectReason::TooManyWebsockets => "too_many_websockets",
        DisconnectReason::LinkDisabled => "link_disabled",
        DisconnectReason::Other(_) => "other",
    }
}

/// A bounded label for why a session ended on its own.
fn ended_label(reason: &str) -> &'static str {
    if reason.starts_with("silent") {
        "silent"
    } else if reason.starts_with("closed by Slack") {
        "closed_by_slack"
    } else if reason.starts_with("connection lost") {
        "connection_lost"
    } else {
        "error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        for ceiling in ceilings {
            let ceiling = Duration::from_secs(ceiling);
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }
}
