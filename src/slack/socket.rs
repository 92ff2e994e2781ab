//! Our Socket Mode client on tokio-tungstenite: N sockets, ack first, concurrent handlers.
//!
//! Owns the sockets' whole life: `apps.connections.open` (a fresh URL every time), the
//! WebSocket, hello, acks, dedup of Slack's retries, ping/pong and the silence watchdog,
//! `disconnect` handling (the replacement is opened before the old socket closes),
//! reconnect backoff with jitter, and the health that `/readyz` reports.
//!
//! Must never: wait for a handler before reading the next frame (handlers run on their
//! own tasks, so a slow one never delays another envelope's ack); let a bad frame or a
//! panicking handler end a socket; retry a refused app token forever (that is
//! [`SocketModeError::AppTokenRefused`], and the process exits); log a token or a socket
//! URL (the URL carries a ticket).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jiff::Timestamp;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::clock::Clock;
use crate::config::{Secret, ShutdownConfig, SlackConfig};
use crate::message::Message;
use crate::metrics::{KindLabel, Metrics, ReasonLabel, TypeLabel};
use crate::store::{DedupKind, DedupStore};

use super::convert;
use super::envelope::{
    DisconnectReason, Envelope, EnvelopeKind, EventCallback, Inbound, Interaction, SlashCommand,
    parse_frame,
};
use super::web::SlackWeb;

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

/// The state of one socket slot, as `/readyz` and `status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SocketState {
    Connecting,
    Connected { since: Timestamp },
    Retrying { reason: String, retry_in_ms: u64 },
    LinkDisabled,
    Failed { reason: String },
    Stopped,
}

/// One slot's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotHealth {
    #[serde(flatten)]
    pub state: SocketState,
    pub last_envelope_at: Option<Timestamp>,
    pub reconnects: u64,
}

/// Shared, cheap-to-clone view of every socket slot.
#[derive(Debug, Clone)]
pub struct SocketHealth {
    slots: Arc<Mutex<Vec<SlotHealth>>>,
    connected: watch::Sender<usize>,
}

impl SocketHealth {
    pub fn new(slots: usize) -> Self {
        let initial = SlotHealth {
            state: SocketState::Connecting,
            last_envelope_at: None,
            reconnects: 0,
        };
        Self {
            slots: Arc::new(Mutex::new(vec![initial; slots])),
            connected: watch::Sender::new(0),
        }
    }

    fn update(&self, slot: usize, change: impl FnOnce(&mut SlotHealth)) {
        let mut slots = self.slots.lock().expect("health lock is never poisoned");
        if let Some(health) = slots.get_mut(slot) {
            change(health);
        }
        let connected = slots
            .iter()
            .filter(|health| matches!(health.state, SocketState::Connected { .. }))
            .count();
        self.connected.send_replace(connected);
    }

    fn set_state(&self, slot: usize, state: SocketState) {
        self.update(slot, |health| {
            if matches!(state, SocketState::Connected { .. }) && health.last_envelope_at.is_some() {
                health.reconnects += 1;
            }
            health.state = state;
        });
    }

    pub fn snapshot(&self) -> Vec<SlotHealth> {
        self.slots
            .lock()
            .expect("health lock is never poisoned")
            .clone()
    }

    /// How many sockets have had `hello` and are still open.
    pub fn connected_count(&self) -> usize {
        *self.connected.borrow()
    }

    /// Follows [`Self::connected_count`] as it changes.
    pub fn watch_connected(&self) -> watch::Receiver<usize> {
        self.connected.subscribe()
    }
}

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

/// What a session tells its slot.
#[derive(Debug)]
enum SessionEvent {
    Hello,
    Disconnect(DisconnectReason),
    Ended(String),
}

/// Frames waiting to be written: acks from handler tasks, with when their envelope was
/// read (for the ack latency metric). When every sender is gone and the session is
/// draining, the socket can close.
type AckSender = mpsc::UnboundedSender<(String, Instant)>;

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

    async fn run_slot(
        self: Arc<Self>,
        slot: usize,
        stop: CancellationToken,
    ) -> Result<(), SocketModeError> {
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
                        .min(super::web::RETRY_AFTER_MAX);
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
                match events_rx.recv().await {
                    Some(SessionEvent::Hello) => {
                        info!("socket connected");
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
                    Some(SessionEvent::Disconnect(reason)) => {
                        info!(reason = reason.as_str(), "Slack asked for a new socket");
                        self.count_reconnect(&format!("disconnect_{}", disconnect_label(&reason)));
                        match reason {
                            DisconnectReason::LinkDisabled => {
                                warn!(
                                    "Socket Mode is disabled in the Slack app's settings; retrying slowly"
                                );
                                close.cancel();
                                break Next::Disabled(self.settings.backoff_max);
                            }
                            DisconnectReason::TooManyWebsockets => {
                                close.cancel();
                                break Next::After(
                                    reason.as_str().to_string(),
                                    backoff.next_delay(),
                                );
                            }
                            _ => {
                                // Open the replacement first; this one closes on its hello.
                                retiring.push(close.clone());
                                break Next::Now;
                            }
                        }
                    }
                    Some(SessionEvent::Ended(reason)) => {
                        info!(%reason, "socket ended");
                        self.count_reconnect(ended_label(&reason));
                        break Next::After(reason, backoff.next_delay());
                    }
                    None => break Next::After("socket task ended".into(), backoff.next_delay()),
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

    async fn connect(
        &self,
    ) -> Result<
        WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        ConnectError,
    > {
        let url = self
            .web
            .open_socket_url(&self.app_token)
            .await
            .map_err(|error| {
                if error.is_fatal_auth() {
                    match error {
                        super::web::SlackError::Api { code, .. } => ConnectError::Fatal(code),
                        other => ConnectError::Fatal(other.to_string()),
                    }
                } else {
                    let retry_after = match &error {
                        super::web::SlackError::RateLimited { retry_after, .. } => *retry_after,
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

    /// Reads frames until the socket ends, is told to close, or the daemon stops.
    /// Returns why it ended.
    async fn session_loop<S>(
        self: &Arc<Self>,
        slot: usize,
        ws: WebSocketStream<S>,
        events: &mpsc::Sender<SessionEvent>,
        close: CancellationToken,
        stop: CancellationToken,
    ) -> String
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(String, Instant)>();
        let mut ack_tx = Some(ack_tx);
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.settings.ping_interval,
            self.settings.ping_interval,
        );
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let draining = drain_deadline.is_some();
            tokio::select! {
                biased;
                ack = ack_rx.recv() => match ack {
                    Some((frame, received)) => {
                        // Counted as the ack is written, so whoever sees the ack also
                        // sees it counted.
                        self.metrics.ack_latency.observe(received.elapsed().as_secs_f64());
                        if let Err(error) = sink.send(WsMessage::text(frame)).await {
                            return format!("write failed: {error}");
                        }
                    }
                    None => {
                        let _ = sink.send(WsMessage::Close(None)).await;
                        let _ = sink.close().await;
                        return "closed by us".into();
                    }
                },
                _ = close.cancelled(), if !draining => {
                    drain_deadline = Some(Instant::now() + self.settings.retire_grace);
                    ack_tx = None;
                }
                _ = stop.cancelled(), if !draining => {
                    drain_deadline = Some(Instant::now() + self.settings.drain_timeout);
                    ack_tx = None;
                }
                _ = sleep_until_opt(drain_deadline), if draining => {
                    warn!("closing a socket with acks still pending: the drain deadline passed");
                    let _ = sink.send(WsMessage::Close(None)).await;
                    return "drain deadline passed".into();
                }
                frame = stream.next(), if !draining => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(WsMessage::Text(text))) => {
                            let Some(acks) = ack_tx.as_ref() else { continue };
                            self.on_text(slot, text.as_str(), acks, events).await;
                        }
                        Some(Ok(WsMessage::Binary(data))) => {
                            warn!(bytes = data.len(), "skipping a binary frame: Socket Mode sends text");
                        }
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                        Some(Ok(WsMessage::Close(frame))) => {
                            return format!("closed by Slack ({})", frame.map(|f| f.code.to_string()).unwrap_or_else(|| "no code".into()));
                        }
                        Some(Err(error)) => return format!("read failed: {error}"),
                        None => return "connection lost".into(),
                    }
                }
                _ = ping.tick(), if !draining => {
                    if last_heard.elapsed() > self.settings.idle_timeout {
                        warn!(silent_ms = last_heard.elapsed().as_millis() as u64, "socket silent too long; replacing it");
                        return "silent too long".into();
                    }
                    if let Err(error) = sink.send(WsMessage::Ping(Default::default())).await {
                        return format!("ping failed: {error}");
                    }
                }
            }
        }
    }

    async fn on_text(
        self: &Arc<Self>,
        slot: usize,
        text: &str,
        acks: &AckSender,
        events: &mpsc::Sender<SessionEvent>,
    ) {
        match parse_frame(text) {
            Ok(Inbound::Hello {
                num_connections, ..
            }) => {
                debug!(?num_connections, "hello");
                let _ = events.send(SessionEvent::Hello).await;
            }
            Ok(Inbound::Disconnect { reason }) => {
                let _ = events.send(SessionEvent::Disconnect(reason)).await;
            }
            Ok(Inbound::Envelope(envelope)) => self.accept_envelope(slot, envelope, acks),
            Err(error) => warn!(%error, bytes = text.len(), "skipping a malformed frame"),
        }
    }

    /// Acks (or starts the work that acks) one envelope. Never awaits a handler.
    fn accept_envelope(self: &Arc<Self>, slot: usize, envelope: Envelope, acks: &AckSender) {
        let received = Instant::now();
        let now = self.clock.now();
        self.metrics
            .envelopes
            .get_or_create(&TypeLabel {
                r#type: envelope.kind.type_name().to_string(),
            })
            .inc();
        self.health
            .update(slot, |health| health.last_envelope_at = Some(now));
        let span = info_span!(
            "envelope",
            envelope_id = %envelope.envelope_id,
            envelope_type = envelope.kind.type_name(),
            team = envelope.kind.team_id().unwrap_or("-"),
            retry = envelope.retry_attempt,
        );
        let _entered = span.enter();
        if !self.first_sighting(&envelope, now) {
            info!("duplicate envelope acked and dropped");
            self.metrics.duplicate_envelopes.inc();
            let _ = acks.send((bare_ack(&envelope.envelope_id), received));
            return;
        }
        match envelope.kind {
            EnvelopeKind::SlashCommand(command) => {
                let this = self.clone();
                let acks = acks.clone();
                self.tracker.spawn(
                    this.answer_slash_command(
                        envelope.envelope_id,
                        envelope.accepts_response_payload,
                        command,
                        (acks, received),
                    )
                    .in_current_span(),
                );
            }
            EnvelopeKind::Event(event) => {
                let _ = acks.send((bare_ack(&envelope.envelope_id), received));
                let handler = self.handler.clone();
                self.tracker
                    .spawn(async move { handler.event(event).await }.in_current_span());
            }
            EnvelopeKind::Interaction(interaction) => {
                let _ = acks.send((bare_ack(&envelope.envelope_id), received));
                let handler = self.handler.clone();
                self.tracker
                    .spawn(async move { handler.interaction(interaction).await }.in_current_span());
            }
            EnvelopeKind::Unparsed { reason, .. } => {
                let _ = acks.send((bare_ack(&envelope.envelope_id), received));
                warn!(%reason, "acked an envelope we cannot handle");
            }
        }
    }

    /// True unless this envelope (or, for events, this event) was seen before. A store
    /// failure counts as new: handling twice beats losing an envelope.
    fn first_sighting(&self, envelope: &Envelope, now: Timestamp) -> bool {
        let check = |kind, id: &str| {
            self.dedup
                .first_sighting(kind, id, now)
                .unwrap_or_else(|error| {
                    error!(%error, "dedup store failed; handling the envelope anyway");
                    true
                })
        };
        let new_envelope = check(DedupKind::Envelope, &envelope.envelope_id);
        let new_event = match &envelope.kind {
            EnvelopeKind::Event(EventCallback {
                event_id: Some(event_id),
                ..
            }) => check(DedupKind::Event, event_id),
            _ => true,
        };
        new_envelope && new_event
    }

    async fn answer_slash_command(
        self: Arc<Self>,
        envelope_id: String,
        accepts_payload: bool,
        command: SlashCommand,
        (acks, received): (AckSender, Instant),
    ) {
        let response_url = command.response_url.clone();
        let handler = self.handler.clone();
        let mut work =
            tokio::spawn(async move { handler.slash_command(command).await }.in_current_span());
        let reply = match tokio::time::timeout(self.settings.reply_budget, &mut work).await {
            Ok(Ok(reply)) if accepts_payload => {
                let _ = acks.send((payload_ack(&envelope_id, &reply), received));
                return;
            }
            Ok(finished) => {
                let _ = acks.send((bare_ack(&envelope_id), received));
                finished
            }
            Err(_over_budget) => {
                let _ = acks.send((bare_ack(&envelope_id), received));
                drop(acks);
                debug!("slash command over budget: acked empty, replying via response_url");
                work.await
            }
        };
        let reply = reply.unwrap_or_else(|join_error| {
            error!(error = %join_error, "slash command handler failed");
            self.count_handler_error("slash_command");
            Message::text(
                "Sorry, something went wrong handling that command. The error was logged.",
            )
        });
        if let Err(error) = self.web.respond(&response_url, &reply).await {
            warn!(%error, "could not post the reply to response_url");
            self.count_handler_error("response_url");
        }
    }

    fn count_handler_error(&self, kind: &str) {
        self.metrics
            .handler_errors
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
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

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn bare_ack(envelope_id: &str) -> String {
    json!({ "envelope_id": envelope_id }).to_string()
}

fn payload_ack(envelope_id: &str, reply: &Message) -> String {
    json!({ "envelope_id": envelope_id, "payload": convert::ack_payload(reply) }).to_string()
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::clock::ManualClock;
    use crate::slack::envelope::{EventCallback, Interaction, SlashCommand};
    use crate::store::Store;

    struct EchoHandler;

    impl EnvelopeHandler for EchoHandler {
        async fn slash_command(&self, command: SlashCommand) -> Message {
            Message::text(command.text)
        }
        async fn event(&self, _event: EventCallback) {}
        async fn interaction(&self, _interaction: Interaction) {}
    }

    fn socket_mode(store: &Store) -> Arc<SocketMode<EchoHandler>> {
        let settings = SocketModeSettings {
            connections: 1,
            reply_budget: Duration::from_millis(1500),
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            retire_grace: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        };
        SocketMode::new(SocketModeParts {
            web: SlackWeb::new(&url::Url::parse("http://127.0.0.1:9/api/").expect("url"))
                .expect("client"),
            app_token: Secret::new("xapp-test".into()),
            settings,
            handler: Arc::new(EchoHandler),
            dedup: store.dedup.clone(),
            clock: Arc::new(ManualClock::new(Timestamp::UNIX_EPOCH)),
            health: SocketHealth::new(1),
            tracker: TaskTracker::new(),
            metrics: Metrics::default(),
        })
    }

    /// A socket pair in memory: the daemon's end and Slack's end.
    async fn socket_pair() -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        (
            WebSocketStream::from_raw_socket(ours, Role::Client, None).await,
            WebSocketStream::from_raw_socket(theirs, Role::Server, None).await,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_socket_ends_after_the_idle_timeout_and_pings_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let this = socket_mode(&store);
        let (ours, mut slack) = socket_pair().await;
        let (events, _events_rx) = mpsc::channel(4);
        let started = Instant::now();
        let session = tokio::spawn(async move {
            this.session_loop(
                0,
                ours,
                &events,
                CancellationToken::new(),
                CancellationToken::new(),
            )
            .await
        });
        // Slack's end reads our pings but never answers anything.
        let first = slack.next().await.expect("a frame").expect("readable");
        assert!(matches!(first, WsMessage::Ping(_)), "{first:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        let reason = session.await.expect("session task");
        assert_eq!(reason, "silent too long");
        let silent_for = started.elapsed();
        assert!(
            silent_for > Duration::from_secs(30) && silent_for <= Duration::from_secs(40),
            "{silent_for:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_answers_pings_stays_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let this = socket_mode(&store);
        let (ours, mut slack) = socket_pair().await;
        let (events, _events_rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let session_stop = stop.clone();
        let session = tokio::spawn(async move {
            this.session_loop(0, ours, &events, CancellationToken::new(), session_stop)
                .await
        });
        // Reading lets tungstenite answer each ping with a pong: two minutes of pings.
        for _ in 0..12 {
            let frame = slack.next().await.expect("a frame").expect("readable");
            assert!(matches!(frame, WsMessage::Ping(_)), "{frame:?}");
        }
        assert!(!session.is_finished());
        stop.cancel();
        assert_eq!(session.await.expect("session task"), "closed by us");
    }

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

    #[test]
    fn acks_are_slack_shaped() {
        assert_eq!(bare_ack("e1"), r#"{"envelope_id":"e1"}"#);
        let ack: serde_json::Value =
            serde_json::from_str(&payload_ack("e2", &Message::text("hi"))).expect("json");
        assert_eq!(ack["envelope_id"], "e2");
        assert_eq!(ack["payload"]["response_type"], "ephemeral");
        assert_eq!(ack["payload"]["text"], "hi");
    }

    #[test]
    fn health_counts_connected_slots() {
        let health = SocketHealth::new(2);
        assert_eq!(health.connected_count(), 0);
        health.set_state(
            1,
            SocketState::Connected {
                since: Timestamp::UNIX_EPOCH,
            },
        );
        assert_eq!(health.connected_count(), 1);
        health.set_state(1, SocketState::Stopped);
        assert_eq!(health.connected_count(), 0);
    }
}
