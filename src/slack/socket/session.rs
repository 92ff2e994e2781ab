//! One connected Socket Mode session: reads frames until the socket ends, is retired
//! (its replacement said hello) or the daemon stops; tells its slot about `hello` and
//! `disconnect`; writes the acks its envelopes' handlers send back; pings and watches
//! for silence as [`SessionTimers`] decides; and drains its in-flight acks before it
//! closes.
//!
//! Owns the WebSocket's two halves and the ack channel. Must never wait for a handler
//! before reading the next frame (envelopes go to [`super::envelopes`], which spawns),
//! let a bad frame end the socket, decide about time itself (it executes
//! [`SessionTimers::next_step`]), or open or replace a socket (that is the slot's).

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::next_step::{Drain, SessionEvent, SessionStep, SessionTimers};
use super::{EnvelopeHandler, SocketMode};
use crate::slack::envelope::{Inbound, parse_frame};

/// Frames waiting to be written: acks from handler tasks, with when their envelope was
/// read (for the ack latency metric). When every sender is gone and the session is
/// draining, the socket can close.
pub(super) type AckSender = mpsc::UnboundedSender<(String, Instant)>;

impl<H: EnvelopeHandler> SocketMode<H> {
    /// Reads frames until the socket ends, is told to close, or the daemon stops.
    /// Returns why it ended.
    pub(super) async fn session_loop<S>(
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
        let mut timers =
            SessionTimers::new(self.settings.session_limits(), Instant::now().into_std());
        let wake = tokio::time::sleep_until(Instant::from_std(timers.wake_at()));
        tokio::pin!(wake);
        loop {
            let draining = timers.is_draining();
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
                    timers.drain(Drain::Retire, Instant::now().into_std());
                    ack_tx = None;
                    wake.as_mut().reset(Instant::from_std(timers.wake_at()));
                }
                _ = stop.cancelled(), if !draining => {
                    timers.drain(Drain::Shutdown, Instant::now().into_std());
                    ack_tx = None;
                    wake.as_mut().reset(Instant::from_std(timers.wake_at()));
                }
                frame = stream.next(), if !draining => {
                    timers.heard(Instant::now().into_std());
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
                () = &mut wake => match timers.next_step(Instant::now().into_std()) {
                    SessionStep::WaitUntil(at) => wake.as_mut().reset(Instant::from_std(at)),
                    SessionStep::SendPing => {
                        if let Err(error) = sink.send(WsMessage::Ping(Default::default())).await {
                            return format!("ping failed: {error}");
                        }
                        timers.ping_sent();
                        wake.as_mut().reset(Instant::from_std(timers.wake_at()));
                    }
                    SessionStep::Dead { silent_for } => {
                        warn!(silent_ms = silent_for.as_millis() as u64, "socket silent too long; replacing it");
                        return "silent too long".into();
                    }
                    SessionStep::Close => {
                        warn!("closing a socket with acks still pending: the drain deadline passed");
                        let _ = sink.send(WsMessage::Close(None)).await;
                        return "drain deadline passed".into();
                    }
                },
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
            Ok(Inbound::Envelope(envelope)) => self.accept_envelope(slot, *envelope, acks),
            Err(error) => warn!(%error, bytes = text.len(), "skipping a malformed frame"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::Timestamp;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Secret;
    use crate::message::Message;
    use crate::metrics::Metrics;
    use crate::slack::envelope::{EventCallback, Interaction, SlashCommand};
    use crate::slack::socket::{SocketHealth, SocketModeParts, SocketModeSettings};
    use crate::slack::web::SlackWeb;
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
}
