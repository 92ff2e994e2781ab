//! An in-process fake of Slack for integration tests and benchmarks.
//!
//! It speaks the real wire protocols on `127.0.0.1` (ephemeral ports):
//!
//! * an HTTP/1.1 server (axum) for the Slack Web API (`/api/{method}`) and for
//!   `response_url` posts (`/response/{id}`);
//! * a WebSocket server (tokio-tungstenite) for Socket Mode (`/link/?ticket=..`).
//!
//! `apps.connections.open` hands out single-use WebSocket URLs exactly like
//! Slack does: a ticket that was never issued, or was already used, is refused
//! with HTTP 401 during the WebSocket handshake.
//!
//! Nothing in here sleeps: every wait is event driven and bounded by
//! [`WAIT`], after which it panics with a message naming what it awaited.
//! Two opt-in modes run on timers, as Slack does: [`FakeSlack::redeliver_unacked`]
//! (envelopes not acked in time are sent again with `retry_attempt` / `retry_reason`)
//! and [`FakeSocket::go_half_open`] (a socket that stays connected but goes silent).
//! Neither is on unless a test asks for it.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::http::StatusCode as WsStatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How long any wait in the fake may take before it panics.
pub const WAIT: Duration = Duration::from_secs(10);

/// The Socket Mode `app_id` the fake reports.
pub const APP_ID: &str = "A0FAKE";

/// Largest WebSocket message / frame the fake accepts from the daemon.
const MAX_WS_MESSAGE: usize = 64 << 20;
const MAX_WS_FRAME: usize = 16 << 20;

// ---------------------------------------------------------------------------
// FakeSlack
// ---------------------------------------------------------------------------

/// A running fake Slack: Web API over HTTP plus Socket Mode over WebSocket.
///
/// Cheap to share by reference: every method takes `&self`. Dropping it stops
/// the listeners and drops every open WebSocket connection (the daemon sees EOF).
pub struct FakeSlack {
    inner: Arc<Inner>,
    /// Receives every successfully handshaken WebSocket connection, in order.
    accept_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<FakeSocket>>,
}

impl fmt::Debug for FakeSlack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeSlack")
            .field("http_port", &self.inner.http_port)
            .field("ws_port", &self.inner.ws_port)
            .finish_non_exhaustive()
    }
}

/// State shared between the handle and the server tasks.
struct Inner {
    http_port: u16,
    ws_port: u16,
    state: Mutex<SharedState>,
    /// Bumped (to the number of recorded calls) after every HTTP request is recorded.
    calls_changed: watch::Sender<usize>,
    /// Where new WebSocket connections are announced.
    accept_tx: mpsc::UnboundedSender<FakeSocket>,
    /// Abort handles of every task the fake spawned, aborted on drop.
    tasks: Mutex<Vec<AbortHandle>>,
    /// Source of unique message timestamps for `chat.postMessage`.
    next_ts: AtomicU64,
}

struct SharedState {
    auto_hello: bool,
    connections_open_error: Option<String>,
    calls: Vec<RecordedCall>,
    next_ticket: u64,
    /// Tickets handed out by `apps.connections.open` and not used yet.
    open_tickets: HashSet<String>,
    sockets_opened: usize,
    /// Bot tokens the fake knows, and their workspaces (auth.test answers from here).
    workspaces: std::collections::HashMap<String, FakeWorkspace>,
    /// Bot tokens Slack has revoked: auth.test answers `token_revoked`.
    revoked: HashSet<String>,
    /// What the next visit to the consent screen decides.
    next_approval: Option<OAuthApproval>,
    /// Codes issued by the consent screen and not yet exchanged.
    codes: std::collections::HashMap<String, OAuthApproval>,
    next_code: u64,
    oauth_client: Option<(String, String)>,
    /// chat.postMessage into these channels fails with the given error.
    failing_channels: std::collections::HashMap<String, String>,
    /// The next this-many chat.postMessage calls answer 429.
    rate_limited_posts: u32,
    retry_after_secs: u64,
    /// conversations.info answers: channel -> (is_private, is_member).
    channels: std::collections::HashMap<String, (bool, bool)>,
    /// users.list answers: team id -> (user id, is_admin).
    members: std::collections::HashMap<String, Vec<(String, bool)>>,
    /// users.info answers: user id -> display name.
    user_names: std::collections::HashMap<String, String>,
    /// IANA time zones users.info gives, by user id.
    user_time_zones: std::collections::HashMap<String, String>,
    /// The next this-many chat.postMessage calls are received and never answered.
    hung_posts: u32,
    /// Opt-in redelivery of unacked envelopes; `None` (the default) tracks nothing.
    redelivery: Option<Redelivery>,
    /// Every envelope written to a socket while redelivery is on, by envelope id.
    envelopes: std::collections::HashMap<String, EnvelopeTrack>,
    /// Envelope ids in the order they were first written.
    envelope_order: Vec<String>,
    /// Acks for an envelope the fake never wrote on that socket.
    stray_acks: u32,
    /// Open sockets a redelivery may go to (only kept while redelivery is on), oldest first.
    live_sockets: Vec<LiveSocket>,
}

/// How the fake redelivers envelopes nobody acked, like Slack's Events API retries:
/// retry `n` (1, 2, ...) is written once attempt `n - 1` went unacked for `schedule[n - 1]`.
#[derive(Debug, Clone)]
struct Redelivery {
    schedule: Vec<Duration>,
}

/// One envelope the fake wrote, and each attempt to deliver it.
struct EnvelopeTrack {
    envelope: Value,
    attempts: Vec<EnvelopeAttempt>,
    /// A redelivery was queued: no other before this moment.
    queued_until: Option<tokio::time::Instant>,
}

/// One delivery attempt of an envelope: where and when it was written, and the acks
/// that came back on that socket after it (until the next attempt on the same socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeAttempt {
    /// The ticket of the socket it was written to.
    pub ticket: String,
    /// 0 for the first delivery, then 1, 2, ... as in the `retry_attempt` field.
    pub retry_attempt: u32,
    pub sent_at: tokio::time::Instant,
    /// Whether the socket was half-open (the frame was swallowed, never written).
    pub swallowed: bool,
    pub acks: u32,
    /// When the first ack for this attempt arrived.
    pub first_ack_at: Option<tokio::time::Instant>,
}

/// What the fake knows about one envelope: its id and every attempt to deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeRecord {
    pub envelope_id: String,
    pub attempts: Vec<EnvelopeAttempt>,
}

/// An open socket, as the redelivery task sees it.
struct LiveSocket {
    ticket: String,
    outgoing: mpsc::UnboundedSender<Outgoing>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.state
            .lock()
            .expect("fake slack state mutex poisoned (a previous panic while holding it)")
    }

    fn track(&self, handle: AbortHandle) {
        let mut tasks = self
            .tasks
            .lock()
            .expect("fake slack task list mutex poisoned");
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        if let Ok(tasks) = self.inner.tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

impl FakeSlack {
    /// Binds the HTTP and WebSocket listeners on `127.0.0.1:0` and spawns the
    /// server tasks on the current tokio runtime.
    pub async fn start() -> FakeSlack {
        let http_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake slack: bind HTTP listener on 127.0.0.1:0");
        let ws_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake slack: bind WebSocket listener on 127.0.0.1:0");
        let http_port = http_listener
            .local_addr()
            .expect("fake slack: HTTP listener local_addr")
            .port();
        let ws_port = ws_listener
            .local_addr()
            .expect("fake slack: WebSocket listener local_addr")
            .port();

        let (accept_tx, accept_rx) = mpsc::unbounded_channel();
        let (calls_changed, _) = watch::channel(0usize);
        let inner = Arc::new(Inner {
            http_port,
            ws_port,
            state: Mutex::new(SharedState {
                auto_hello: true,
                connections_open_error: None,
                calls: Vec::new(),
                next_ticket: 1,
                open_tickets: HashSet::new(),
                sockets_opened: 0,
                workspaces: std::collections::HashMap::new(),
                revoked: HashSet::new(),
                next_approval: None,
                codes: std::collections::HashMap::new(),
                next_code: 1,
                oauth_client: None,
                failing_channels: std::collections::HashMap::new(),
                rate_limited_posts: 0,
                retry_after_secs: 1,
                channels: std::collections::HashMap::new(),
                members: std::collections::HashMap::new(),
                user_names: std::collections::HashMap::new(),
                user_time_zones: std::collections::HashMap::new(),
                hung_posts: 0,
                redelivery: None,
                envelopes: std::collections::HashMap::new(),
                envelope_order: Vec::new(),
                stray_acks: 0,
                live_sockets: Vec::new(),
            }),
            calls_changed,
            accept_tx,
            tasks: Mutex::new(Vec::new()),
            next_ts: AtomicU64::new(1),
        });

        let app = Router::new()
            .fallback(handle_http)
            .layer(DefaultBodyLimit::disable())
            .with_state(inner.clone());
        let http_task = tokio::spawn(async move {
            axum::serve(http_listener, app)
                .await
                .expect("fake slack: HTTP server failed");
        });
        inner.track(http_task.abort_handle());

        let ws_inner = inner.clone();
        let ws_task = tokio::spawn(async move {
            loop {
                let (stream, _) = ws_listener
                    .accept()
                    .await
                    .expect("fake slack: accept on WebSocket listener failed");
                // Like the daemon's side: without this, Nagle and delayed ACKs add 40 ms
                // stalls after each ping (seen in the benchmark).
                let _ = stream.set_nodelay(true);
                let conn_inner = ws_inner.clone();
                let conn = tokio::spawn(serve_ws_connection(conn_inner, stream));
                ws_inner.track(conn.abort_handle());
            }
        });
        inner.track(ws_task.abort_handle());

        FakeSlack {
            inner,
            accept_rx: tokio::sync::Mutex::new(accept_rx),
        }
    }

    /// Base URL of the fake Web API, with trailing slash:
    /// `http://127.0.0.1:{port}/api/`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/", self.inner.http_port)
    }

    /// A `response_url` served by the fake: `http://127.0.0.1:{port}/response/{id}`.
    /// Posts to it are recorded and answered with plain `ok`.
    pub fn response_url(&self, id: &str) -> String {
        format!("http://127.0.0.1:{}/response/{id}", self.inner.http_port)
    }

    /// Whether to send a `hello` frame right after each WebSocket handshake
    /// (default `true`). Applies to connections handshaken afterwards.
    pub fn set_auto_hello(&self, on: bool) {
        self.inner.lock().auto_hello = on;
    }

    /// When `Some(e)`, `apps.connections.open` (with a valid app token) answers
    /// `200 {"ok":false,"error":e}` instead of issuing a URL. `None` restores
    /// normal behaviour.
    pub fn set_connections_open_error(&self, error: Option<&str>) {
        self.inner.lock().connections_open_error = error.map(str::to_owned);
    }

    /// Every HTTP request received so far, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.inner.lock().calls.clone()
    }

    /// The `chat.postMessage` bodies posted to `channel` so far, in order.
    pub fn posts_to(&self, channel: &str) -> Vec<Value> {
        self.calls_to("chat.postMessage")
            .iter()
            .map(|call| call.json())
            .filter(|post| post["channel"] == channel)
            .collect()
    }

    /// The HTTP requests whose path ends with `path_suffix`, in arrival order,
    /// e.g. `"apps.connections.open"` or `"/response/abc"`.
    pub fn calls_to(&self, path_suffix: &str) -> Vec<RecordedCall> {
        self.inner
            .lock()
            .calls
            .iter()
            .filter(|c| c.path.ends_with(path_suffix))
            .cloned()
            .collect()
    }

    /// Waits until at least `count` requests whose path ends with `path_suffix`
    /// were received, then returns all of them. Panics after [`WAIT`].
    pub async fn wait_for_calls(&self, path_suffix: &str, count: usize) -> Vec<RecordedCall> {
        self.wait_for_calls_within(path_suffix, count, WAIT).await
    }

    /// [`Self::wait_for_calls`] with its own deadline, for waits on a poller's schedule.
    pub async fn wait_for_calls_within(
        &self,
        path_suffix: &str,
        count: usize,
        deadline: Duration,
    ) -> Vec<RecordedCall> {
        let mut changed = self.inner.calls_changed.subscribe();
        let waited = tokio::time::timeout(deadline, async {
            loop {
                let calls = self.calls_to(path_suffix);
                if calls.len() >= count {
                    return calls;
                }
                changed
                    .changed()
                    .await
                    .expect("fake slack: call notifier dropped while waiting for calls");
            }
        })
        .await;
        match waited {
            Ok(calls) => calls,
            Err(_) => {
                let got = self.calls_to(path_suffix).len();
                let all: Vec<String> = self
                    .calls()
                    .iter()
                    .map(|c| format!("{} {}", c.method, c.path))
                    .collect();
                panic!(
                    "fake slack: timed out after {deadline:?} waiting for {count} HTTP call(s) to a path \
                     ending with {path_suffix:?}; got {got}. All calls so far: {all:?}"
                )
            }
        }
    }

    /// The next WebSocket connection the daemon opened (successful handshakes
    /// only, in order of connection). Panics after [`WAIT`].
    pub async fn accept(&self) -> FakeSocket {
        let mut rx = self.accept_rx.lock().await;
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(socket)) => socket,
            Ok(None) => {
                panic!("fake slack: WebSocket accept queue closed while waiting for a connection")
            }
            Err(_) => panic!(
                "fake slack: timed out after {WAIT:?} waiting for the daemon to open a Socket Mode \
                 WebSocket connection (sockets opened so far: {}, apps.connections.open calls: {})",
                self.sockets_opened(),
                self.calls_to("apps.connections.open").len()
            ),
        }
    }

    /// How many WebSocket connections completed the handshake so far.
    pub fn sockets_opened(&self) -> usize {
        self.inner.lock().sockets_opened
    }
}

// ---------------------------------------------------------------------------
// Redelivery of unacked envelopes (opt-in)
// ---------------------------------------------------------------------------

/// How often the redelivery task looks for envelopes that are due again.
const REDELIVERY_TICK: Duration = Duration::from_millis(100);

impl FakeSlack {
    /// From now on, like Slack: an envelope (any frame with an `envelope_id` written to a
    /// socket) that no socket acked is written again to the newest open socket (opened
    /// after this call) with `"retry_attempt": n` and `"retry_reason": "timeout"`: retry
    /// `n` once attempt `n - 1` went unacked for `schedule[n - 1]`, so at most
    /// `schedule.len()` retries. Slack does this for `events_api` envelopes (3 s ack
    /// deadline, then about 1 and 5 minutes); the fake does it for every envelope type, on
    /// whatever (shorter) schedule the test gives. Every attempt and the acks that came
    /// back are kept for [`FakeSlack::envelope_log`].
    pub fn redeliver_unacked(&self, schedule: &[Duration]) {
        self.inner.lock().redelivery = Some(Redelivery {
            schedule: schedule.to_vec(),
        });
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(REDELIVERY_TICK);
            loop {
                tick.tick().await;
                redeliver_due(&inner);
            }
        });
        self.inner.track(task.abort_handle());
    }

    /// Every envelope written while redelivery was on, in the order first written.
    pub fn envelope_log(&self) -> Vec<EnvelopeRecord> {
        let state = self.inner.lock();
        state
            .envelope_order
            .iter()
            .filter_map(|id| {
                state.envelopes.get(id).map(|track| EnvelopeRecord {
                    envelope_id: id.clone(),
                    attempts: track.attempts.clone(),
                })
            })
            .collect()
    }

    /// Acks (while redelivery was on) for an envelope never written on that socket.
    pub fn stray_acks(&self) -> u32 {
        self.inner.lock().stray_acks
    }
}

/// Queues a redelivery of every envelope that is due: no attempt acked, the last one
/// older than its place in the schedule, and an open socket to write it to.
fn redeliver_due(inner: &Inner) {
    let now = tokio::time::Instant::now();
    let mut state = inner.lock();
    let Some(Redelivery { schedule }) = state.redelivery.clone() else {
        return;
    };
    let SharedState {
        envelopes,
        envelope_order,
        live_sockets,
        ..
    } = &mut *state;
    live_sockets.retain(|socket| !socket.outgoing.is_closed());
    let Some(newest) = live_sockets.last() else {
        return;
    };
    for id in envelope_order.iter() {
        let Some(track) = envelopes.get_mut(id) else {
            continue;
        };
        let Some(last) = track.attempts.last() else {
            continue;
        };
        let Some(&after) = schedule.get(track.attempts.len() - 1) else {
            continue;
        };
        let acked = track.attempts.iter().any(|attempt| attempt.acks > 0);
        let due = last.sent_at + after <= now && track.queued_until.is_none_or(|t| t <= now);
        if acked || !due {
            continue;
        }
        let mut envelope = track.envelope.clone();
        envelope["retry_attempt"] = json!(track.attempts.len());
        envelope["retry_reason"] = json!("timeout");
        let (done, _written) = oneshot::channel();
        let queued = newest.outgoing.send(Outgoing::Frame {
            message: Message::text(envelope.to_string()),
            done,
        });
        if queued.is_ok() {
            track.queued_until = Some(now + after);
        }
    }
}

/// Records that `text` (an envelope, if it has an `envelope_id` and a `type`) was
/// written (or swallowed) on socket `ticket`. Only while redelivery is on.
fn record_written(inner: &Inner, ticket: &str, text: &str, swallowed: bool) {
    let mut state = inner.lock();
    if state.redelivery.is_none() {
        return;
    }
    let Ok(envelope) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let (Some(id), Some(_)) = (envelope["envelope_id"].as_str(), envelope["type"].as_str()) else {
        return;
    };
    let id = id.to_owned();
    let retry_attempt = envelope["retry_attempt"].as_u64().unwrap_or(0) as u32;
    let attempt = EnvelopeAttempt {
        ticket: ticket.to_owned(),
        retry_attempt,
        sent_at: tokio::time::Instant::now(),
        swallowed,
        acks: 0,
        first_ack_at: None,
    };
    let state = &mut *state;
    match state.envelopes.get_mut(&id) {
        Some(track) => {
            track.attempts.push(attempt);
            track.queued_until = None;
        }
        None => {
            let mut first = envelope.clone();
            if let Some(fields) = first.as_object_mut() {
                fields.remove("retry_attempt");
                fields.remove("retry_reason");
            }
            state.envelope_order.push(id.clone());
            state.envelopes.insert(
                id,
                EnvelopeTrack {
                    envelope: first,
                    attempts: vec![attempt],
                    queued_until: None,
                },
            );
        }
    }
}

/// Records an ack (a text frame with an `envelope_id`) from the daemon on socket
/// `ticket`: it answers the latest attempt written on that socket. Only while
/// redelivery is on.
fn record_ack(inner: &Inner, ticket: &str, text: &str) {
    let mut state = inner.lock();
    if state.redelivery.is_none() {
        return;
    }
    let Ok(ack) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(id) = ack["envelope_id"].as_str() else {
        return;
    };
    let attempt = state.envelopes.get_mut(id).and_then(|track| {
        track
            .attempts
            .iter_mut()
            .rev()
            .find(|attempt| attempt.ticket == ticket)
    });
    match attempt {
        Some(attempt) => {
            attempt.acks += 1;
            attempt
                .first_ack_at
                .get_or_insert_with(tokio::time::Instant::now);
        }
        None => state.stray_acks += 1,
    }
}

// ---------------------------------------------------------------------------
// HTTP side
// ---------------------------------------------------------------------------

/// One HTTP request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path, e.g. `/api/chat.postMessage`.
    pub path: String,
    /// Raw query string (without `?`), if any.
    pub query: Option<String>,
    /// The `Authorization` header, if present.
    pub authorization: Option<String>,
    /// The `Content-Type` header, if present.
    pub content_type: Option<String>,
    /// The body as text (lossy UTF-8), JSON or form-urlencoded alike.
    pub body: String,
}

impl RecordedCall {
    /// The body as JSON. A form-urlencoded body (by `Content-Type`) becomes a
    /// JSON object of string fields (the last value wins for repeated keys).
    /// An empty body yields `Value::Null`. Panics if the body is neither.
    pub fn json(&self) -> Value {
        self.try_json().unwrap_or_else(|e| {
            panic!(
                "fake slack: body of {} {} (content-type {:?}) is neither JSON nor form-urlencoded: {e}; body: {}",
                self.method, self.path, self.content_type, self.body
            )
        })
    }

    /// Like [`RecordedCall::json`], but reports a malformed body as `Err`.
    fn try_json(&self) -> Result<Value, serde_json::Error> {
        let is_form = self.content_type.as_deref().is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        if is_form {
            return Ok(Value::Object(
                parse_form(&self.body)
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ));
        }
        if self.body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.body)
    }

    /// The bearer token of the `Authorization` header, if any.
    fn bearer(&self) -> Option<&str> {
        self.authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim)
    }
}

/// Parses `application/x-www-form-urlencoded` text into (key, value) pairs.
fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// Decodes one form-urlencoded component (`+` is a space, `%XX` a byte).
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The single HTTP handler: records the request, then answers by path.
async fn handle_http(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = RecordedCall {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        authorization: header_string(&headers, header::AUTHORIZATION),
        content_type: header_string(&headers, header::CONTENT_TYPE),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    {
        let mut state = inner.lock();
        state.calls.push(call.clone());
        let n = state.calls.len();
        inner.calls_changed.send_replace(n);
    }

    let path = call.path.as_str();
    if path == "/api/chat.postMessage" {
        let hang = {
            let mut state = inner.lock();
            let hang = state.hung_posts > 0;
            state.hung_posts = state.hung_posts.saturating_sub(1);
            hang
        };
        if hang {
            // Received (it may count as posted), never answered: the caller times out.
            std::future::pending::<()>().await;
        }
    }
    if let Some(api_method) = path.strip_prefix("/api/") {
        return match api_method {
            "apps.connections.open" => apps_connections_open(&inner, &call, &method),
            "auth.test" => auth_test(&inner, &call, &method),
            "oauth.v2.access" => oauth_v2_access(&inner, &call),
            "chat.update" => chat_update(&call),
            "conversations.info" => conversations_info(&inner, &call),
            "chat.postMessage" => chat_post_message(&inner, &call, &method),
            "chat.postEphemeral" => {
                slack_json(json!({"ok": true, "message_ts": "1700000000.999999"}))
            }
            "views.publish" => views_publish(&call),
            "chat.unfurl" => chat_unfurl(&inner, &call),
            "views.open" => {
                slack_json(json!({"ok": true, "view": {"id": "V0FAKEVIEW", "type": "modal"}}))
            }
            "users.list" => users_list(&inner, &call),
            "users.info" => users_info(&inner, &call),
            "auth.revoke" => {
                let token = call.bearer().unwrap_or_default().to_string();
                inner.lock().revoked.insert(token);
                slack_json(json!({"ok": true, "revoked": true}))
            }
            _ => slack_json(json!({"ok": false, "error": "unknown_method"})),
        };
    }
    if path == "/oauth/v2/authorize" {
        return oauth_authorize(&inner, &call);
    }
    if path.starts_with("/response/") {
        if method != Method::POST {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        return (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            "ok",
        )
            .into_response();
    }
    (StatusCode::NOT_FOUND, "fake slack: no such route").into_response()
}

/// A 200 response with a JSON body, like every Slack Web API answer.
fn slack_json(value: Value) -> Response {
    axum::Json(value).into_response()
}

fn apps_connections_open(inner: &Inner, call: &RecordedCall, method: &Method) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if !call.bearer().is_some_and(|t| t.starts_with("xapp-")) {
        return slack_json(json!({"ok": false, "error": "not_authed"}));
    }
    let mut state = inner.lock();
    if let Some(error) = state.connections_open_error.clone() {
        return slack_json(json!({"ok": false, "error": error}));
    }
    let ticket = state.next_ticket.to_string();
    state.next_ticket += 1;
    state.open_tickets.insert(ticket.clone());
    drop(state);
    let url = format!(
        "ws://127.0.0.1:{}/link/?ticket={ticket}&app_id={APP_ID}",
        inner.ws_port
    );
    slack_json(json!({"ok": true, "url": url}))
}

fn auth_test(inner: &Inner, call: &RecordedCall, method: &Method) -> Response {
    if method != Method::POST && method != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if !call.bearer().is_some_and(|t| t.starts_with("xoxb-")) {
        return slack_json(json!({"ok": false, "error": "invalid_auth"}));
    }
    let token = call.bearer().unwrap_or_default().to_string();
    let state = inner.lock();
    if state.revoked.contains(&token) {
        return slack_json(json!({"ok": false, "error": "token_revoked"}));
    }
    if let Some(workspace) = state.workspaces.get(&token) {
        let mut response = slack_json(json!({
            "ok": true,
            "url": format!("https://{}.slack.com/", workspace.team_id.to_lowercase()),
            "team": workspace.team_name,
            "user": "bitbucket",
            "team_id": workspace.team_id,
            "user_id": workspace.bot_user_id,
            "bot_id": workspace.bot_id,
            "enterprise_id": workspace.enterprise_id,
            "is_enterprise_install": false
        }));
        response.headers_mut().insert(
            "x-oauth-scopes",
            HeaderValue::from_str(&workspace.scopes).expect("scopes are a valid header value"),
        );
        return response;
    }
    drop(state);
    let mut response = slack_json(json!({
        "ok": true,
        "url": "https://fake.slack.com/",
        "team": "Fake Team",
        "user": "bitbucket",
        "team_id": "T0FAKE",
        "user_id": "U0BOT",
        "bot_id": "B0BOT",
        "is_enterprise_install": false
    }));
    response.headers_mut().insert(
        "x-oauth-scopes",
        HeaderValue::from_static("commands,chat:write"),
    );
    response
}

fn chat_post_message(inner: &Inner, call: &RecordedCall, method: &Method) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    // A body that does not parse is treated as having no arguments.
    let args = call.try_json().unwrap_or(Value::Null);
    let Some(channel) = args
        .get("channel")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return slack_json(json!({"ok": false, "error": "channel_not_found"}));
    };
    {
        let mut state = inner.lock();
        if state.rate_limited_posts > 0 {
            state.rate_limited_posts -= 1;
            let retry_after = state.retry_after_secs.to_string();
            drop(state);
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&retry_after).expect("a number"),
            );
            return response;
        }
        if let Some(error) = state.failing_channels.get(&channel) {
            return slack_json(json!({"ok": false, "error": error}));
        }
    }
    // Unique, increasing, fixed-width: 1700000000.000100, 1700000000.000200, ...
    let n = inner.next_ts.fetch_add(1, Ordering::Relaxed);
    let micros = 1_700_000_000_000_000u64 + n * 100;
    let ts = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);

    let mut message = json!({
        "type": "message",
        "user": "U0BOT",
        "bot_id": "B0BOT",
        "app_id": APP_ID,
        "team": "T0FAKE",
        "ts": ts,
        "text": args.get("text").cloned().unwrap_or(Value::String(String::new())),
    });
    for key in ["blocks", "attachments", "thread_ts", "metadata"] {
        if let Some(v) = args.get(key) {
            // Form bodies carry structured args as JSON text.
            let v = match v {
                Value::String(s) if key != "thread_ts" => {
                    serde_json::from_str(s).unwrap_or_else(|_| v.clone())
                }
                _ => v.clone(),
            };
            message[key] = v;
        }
    }
    // Like Slack, a message to a user id lands in the DM channel, whose id is answered.
    let channel = dm_channel_of(&channel).unwrap_or(channel);
    slack_json(json!({"ok": true, "channel": channel, "ts": ts, "message": message}))
}

/// The DM channel id Slack answers for a message posted to user `id` (`U…` or `W…`).
pub fn dm_channel_of(id: &str) -> Option<String> {
    (id.starts_with('U') || id.starts_with('W')).then(|| format!("D{id}"))
}

// ---------------------------------------------------------------------------
// WebSocket side
// ---------------------------------------------------------------------------

/// A frame the daemon sent to the fake over a Socket Mode WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A ping with its payload.
    Ping(Vec<u8>),
    /// A pong with its payload.
    Pong(Vec<u8>),
    /// A Close frame, or the end of the connection.
    Close,
}

/// A request from the test to the task that owns the WebSocket stream.
#[derive(Debug)]
enum Outgoing {
    /// Write this frame.
    Frame {
        message: Message,
        /// Completed once the frame was written and flushed (or failed to be).
        done: oneshot::Sender<()>,
    },
    /// Go half-open: see [`FakeSocket::go_half_open`].
    HalfOpen {
        hold: Duration,
        /// Completed once the socket stopped reading and writing.
        done: oneshot::Sender<()>,
    },
}

/// One Socket Mode WebSocket connection the daemon opened, seen from Slack's side.
#[derive(Debug)]
pub struct FakeSocket {
    ticket: String,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    frames: tokio::sync::Mutex<mpsc::UnboundedReceiver<Frame>>,
    closed: watch::Receiver<bool>,
}

impl FakeSocket {
    /// The `ticket` query value of the URL this socket connected with.
    pub fn ticket(&self) -> String {
        self.ticket.clone()
    }

    /// Sends `message` and waits until it was flushed. If the connection is
    /// already gone the frame is silently lost, as on a real network.
    async fn send(&self, message: Message) {
        let (done, written) = oneshot::channel();
        if self
            .outgoing
            .send(Outgoing::Frame { message, done })
            .is_err()
        {
            return;
        }
        // An Err means the connection task ended before writing: also "lost".
        let _ = tokio::time::timeout(WAIT, written)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "fake slack: timed out after {WAIT:?} writing a frame to socket ticket={}",
                    self.ticket
                )
            });
    }

    /// Sends a raw text frame (may be invalid JSON on purpose).
    pub async fn send_text(&self, text: &str) {
        self.send(Message::text(text)).await;
    }

    /// Sends `value` serialized as a JSON text frame.
    pub async fn send_json(&self, value: &Value) {
        self.send(Message::text(value.to_string())).await;
    }

    /// Sends a binary frame.
    pub async fn send_binary(&self, data: &[u8]) {
        self.send(Message::binary(data.to_vec())).await;
    }

    /// Sends a ping frame with `data` as payload.
    pub async fn send_ping(&self, data: &[u8]) {
        self.send(Message::Ping(data.to_vec().into())).await;
    }

    /// Sends Slack's `hello` frame (what auto-hello sends).
    pub async fn send_hello(&self) {
        self.send(Message::text(hello_frame())).await;
    }

    /// Sends a `disconnect` frame with the given reason
    /// (`warning`, `refresh_requested`, `too_many_websockets`, `link_disabled`, ...).
    pub async fn send_disconnect(&self, reason: &str) {
        let frame =
            json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}});
        self.send(Message::text(frame.to_string())).await;
    }

    /// Starts a server-initiated close (Close frame, code 1000). The daemon's
    /// Close reply shows up as [`Frame::Close`].
    pub async fn send_close(&self) {
        self.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    }

    /// Makes this socket half-open, like a connection whose NAT entry vanished: the TCP
    /// connection stays up, but from now on the fake reads nothing (so no pong answers
    /// the daemon's pings, and its acks and Close are never seen) and writes nothing
    /// (frames sent to it are swallowed; with redelivery on they count as attempts).
    /// After `hold` the fake drops the connection, and the socket reports
    /// [`Frame::Close`] and [`FakeSocket::is_closed`]. Returns once the socket is silent.
    pub async fn go_half_open(&self, hold: Duration) {
        let (done, silent) = oneshot::channel();
        if self
            .outgoing
            .send(Outgoing::HalfOpen { hold, done })
            .is_err()
        {
            return;
        }
        // An Err means the connection task already ended: closed, which is silent too.
        let _ = silent.await;
    }

    /// The next frame the daemon sent. Once the connection is closed this
    /// yields [`Frame::Close`] (repeatedly). Panics after [`WAIT`].
    pub async fn next_frame(&self) -> Frame {
        let mut frames = self.frames.lock().await;
        match tokio::time::timeout(WAIT, frames.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => Frame::Close,
            Err(_) => panic!(
                "fake slack: timed out after {WAIT:?} waiting for the next frame from the daemon on \
                 socket ticket={} (closed: {})",
                self.ticket,
                self.is_closed()
            ),
        }
    }

    /// Runs `pick` over incoming frames until it returns `Some`, all within one
    /// [`WAIT`] deadline.
    async fn next_matching<T>(&self, what: &str, mut pick: impl FnMut(Frame) -> Option<T>) -> T {
        let mut frames = self.frames.lock().await;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let frame = frames.recv().await.unwrap_or(Frame::Close);
                if let Some(found) = pick(frame) {
                    return found;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "fake slack: timed out after {WAIT:?} waiting for {what} from the daemon on socket \
                 ticket={} (closed: {})",
                self.ticket,
                self.is_closed()
            )
        })
    }

    /// The next text frame, parsed as JSON (typically an envelope ack),
    /// skipping Ping/Pong frames. Panics on Binary, Close, invalid JSON or after [`WAIT`].
    pub async fn next_ack(&self) -> Value {
        let ticket = self.ticket.clone();
        self.next_matching("a JSON text frame (ack)", |frame| match frame {
            Frame::Ping(_) | Frame::Pong(_) => None,
            Frame::Text(text) => Some(serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("fake slack: daemon sent a text frame that is not JSON on socket ticket={ticket}: {e}; frame: {text}")
            })),
            other => panic!(
                "fake slack: expected a JSON text frame (ack) from the daemon on socket \
                 ticket={ticket}, got {other:?}"
            ),
        })
        .await
    }

    /// Skips frames until a Pong arrives and returns its payload. Panics if the
    /// connection closes first or after [`WAIT`].
    pub async fn next_pong(&self) -> Vec<u8> {
        let ticket = self.ticket.clone();
        self.next_matching("a Pong frame", |frame| match frame {
            Frame::Pong(data) => Some(data),
            Frame::Close => panic!(
                "fake slack: socket ticket={ticket} closed while waiting for a Pong from the daemon"
            ),
            _ => None,
        })
        .await
    }

    /// Waits until the daemon closed this socket (Close frame or EOF).
    /// Does not consume frames. Panics after [`WAIT`].
    pub async fn wait_closed(&self) {
        let mut closed = self.closed.clone();
        match tokio::time::timeout(WAIT, closed.wait_for(|c| *c)).await {
            // Err: the connection task is gone (fake shut down), i.e. closed too.
            Ok(_) => {}
            Err(_) => panic!(
                "fake slack: timed out after {WAIT:?} waiting for the daemon to close socket ticket={}",
                self.ticket
            ),
        }
    }

    /// Whether the daemon closed this socket (Close frame or EOF) already.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}

/// The `hello` frame sent after each handshake.
fn hello_frame() -> String {
    json!({
        "type": "hello",
        "num_connections": 1,
        "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
        "connection_info": {"app_id": APP_ID}
    })
    .to_string()
}

/// The value of `key` in a raw query string (not percent-decoded: tickets are digits).
fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The handshake callback: admits `/link/?ticket=..` with a ticket that was
/// issued by `apps.connections.open` and not used yet (single use, like Slack),
/// answers 401 otherwise (404 for other paths).
struct TicketCheck {
    inner: Arc<Inner>,
    /// Where the admitted ticket is written for the connection task.
    admitted: Arc<Mutex<Option<String>>>,
}

impl TicketCheck {
    fn check(&self, request: &WsRequest) -> Result<String, (WsStatusCode, &'static str)> {
        if !request.uri().path().starts_with("/link") {
            return Err((
                WsStatusCode::NOT_FOUND,
                "fake slack: unknown WebSocket path",
            ));
        }
        let Some(ticket) = request.uri().query().and_then(|q| query_value(q, "ticket")) else {
            return Err((WsStatusCode::UNAUTHORIZED, "fake slack: missing ticket"));
        };
        // Single use: a ticket is consumed by its first successful use.
        if !self.inner.lock().open_tickets.remove(ticket) {
            return Err((
                WsStatusCode::UNAUTHORIZED,
                "fake slack: unknown or already used ticket",
            ));
        }
        Ok(ticket.to_owned())
    }
}

impl Callback for TicketCheck {
    fn on_request(
        self,
        request: &WsRequest,
        response: WsResponse,
    ) -> Result<WsResponse, ErrorResponse> {
        match self.check(request) {
            Ok(ticket) => {
                *self
                    .admitted
                    .lock()
                    .expect("fake slack ticket slot mutex poisoned") = Some(ticket);
                Ok(response)
            }
            Err((status, why)) => {
                let mut rejection = ErrorResponse::new(Some(why.to_owned()));
                *rejection.status_mut() = status;
                Err(rejection)
            }
        }
    }
}

/// Handshakes one TCP connection and, if its ticket is valid, runs it until closed.
async fn serve_ws_connection(inner: Arc<Inner>, stream: TcpStream) {
    let ticket_slot: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let callback = TicketCheck {
        inner: inner.clone(),
        admitted: ticket_slot.clone(),
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_FRAME));
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        // Rejected (401/404) or broken handshake: nothing to hand to the test.
        return;
    };
    let ticket = ticket_slot
        .lock()
        .expect("fake slack ticket slot mutex poisoned")
        .take()
        .expect("fake slack: handshake succeeded without recording a ticket");

    let (outgoing_tx, mut outgoing_rx) = mpsc::unbounded_channel::<Outgoing>();
    let (frames_tx, frames_rx) = mpsc::unbounded_channel::<Frame>();
    let (closed_tx, closed_rx) = watch::channel(false);
    let auto_hello = {
        let mut state = inner.lock();
        state.sockets_opened += 1;
        state.auto_hello
    };
    {
        let mut state = inner.lock();
        if state.redelivery.is_some() {
            state.live_sockets.push(LiveSocket {
                ticket: ticket.clone(),
                outgoing: outgoing_tx.clone(),
            });
        }
    }
    // The receiver lives in FakeSlack; if it is gone the fake is shutting down.
    let _ = inner.accept_tx.send(FakeSocket {
        ticket: ticket.clone(),
        outgoing: outgoing_tx,
        frames: tokio::sync::Mutex::new(frames_rx),
        closed: closed_rx,
    });

    if auto_hello {
        // A failure surfaces as EOF / error on the read side below.
        let _ = ws.send(Message::text(hello_frame())).await;
    }

    let mut outgoing_open = true;
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let frame = match incoming {
                    Some(Ok(Message::Text(text))) => Frame::Text(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(data))) => Frame::Binary(data.to_vec()),
                    Some(Ok(Message::Ping(data))) => Frame::Ping(data.to_vec()),
                    Some(Ok(Message::Pong(data))) => Frame::Pong(data.to_vec()),
                    // A raw frame is never returned by reads; ignore it defensively.
                    Some(Ok(Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) => {
                        // tungstenite queues the Close reply; keep reading to flush it.
                        if !*closed_tx.borrow() {
                            let _ = frames_tx.send(Frame::Close);
                            closed_tx.send_replace(true);
                        }
                        continue;
                    }
                    None | Some(Err(_)) => {
                        if !*closed_tx.borrow() {
                            let _ = frames_tx.send(Frame::Close);
                            closed_tx.send_replace(true);
                        }
                        break;
                    }
                };
                if let Frame::Text(text) = &frame {
                    record_ack(&inner, &ticket, text);
                }
                // The test may have dropped its FakeSocket; keep draining regardless.
                let _ = frames_tx.send(frame);
            }
            outgoing = outgoing_rx.recv(), if outgoing_open => {
                match outgoing {
                    Some(Outgoing::Frame { message, done }) => {
                        if let Message::Text(text) = &message {
                            record_written(&inner, &ticket, text.as_str(), false);
                        }
                        // Write errors mean the peer is gone; the read side reports it.
                        let _ = ws.send(message).await;
                        let _ = done.send(());
                    }
                    Some(Outgoing::HalfOpen { hold, done }) => {
                        let _ = done.send(());
                        stay_half_open(&inner, &ticket, &mut outgoing_rx, hold).await;
                        // Dropping the stream closes the TCP connection.
                        drop(ws);
                        if !*closed_tx.borrow() {
                            let _ = frames_tx.send(Frame::Close);
                            closed_tx.send_replace(true);
                        }
                        break;
                    }
                    None => outgoing_open = false,
                }
            }
        }
    }
    inner
        .lock()
        .live_sockets
        .retain(|socket| socket.ticket != ticket);
}

/// A half-open socket's last `hold`: nothing is read from the daemon or written to it;
/// frames sent to it are swallowed (and recorded as attempts while redelivery is on).
async fn stay_half_open(
    inner: &Inner,
    ticket: &str,
    outgoing_rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    hold: Duration,
) {
    let until = tokio::time::Instant::now() + hold;
    let mut outgoing_open = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return,
            outgoing = outgoing_rx.recv(), if outgoing_open => match outgoing {
                Some(Outgoing::Frame { message, done }) => {
                    if let Message::Text(text) = &message {
                        record_written(inner, ticket, text.as_str(), true);
                    }
                    let _ = done.send(());
                }
                Some(Outgoing::HalfOpen { done, .. }) => {
                    let _ = done.send(());
                }
                None => outgoing_open = false,
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Workspaces and OAuth
// ---------------------------------------------------------------------------

/// A workspace the fake knows, reachable through one bot token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeWorkspace {
    pub team_id: String,
    pub team_name: String,
    pub enterprise_id: Option<String>,
    pub bot_user_id: String,
    pub bot_id: String,
    /// Comma-separated, as in the `x-oauth-scopes` header.
    pub scopes: String,
}

impl FakeWorkspace {
    pub fn new(team_id: &str, team_name: &str, scopes: &str) -> Self {
        FakeWorkspace {
            team_id: team_id.to_owned(),
            team_name: team_name.to_owned(),
            enterprise_id: None,
            bot_user_id: format!("U{team_id}BOT"),
            bot_id: format!("B{team_id}"),
            scopes: scopes.to_owned(),
        }
    }
}

/// What a person does on Slack's consent screen.
#[derive(Debug, Clone)]
pub struct OAuthApproval {
    pub workspace: FakeWorkspace,
    /// The bot token oauth.v2.access hands out.
    pub bot_token: String,
    pub installer_user_id: String,
    /// `Some("access_denied")` when the person clicks Cancel.
    pub error: Option<String>,
}

impl FakeSlack {
    /// A bot token the fake answers auth.test for, with its workspace and scopes.
    pub fn add_workspace(&self, bot_token: &str, workspace: FakeWorkspace) {
        self.inner
            .lock()
            .workspaces
            .insert(bot_token.to_owned(), workspace);
    }

    /// The next `count` chat.postMessage calls are received but never answered.
    pub fn hang_posts(&self, count: u32) {
        self.inner.lock().hung_posts = count;
    }

    /// The display name users.info gives for `user`.
    pub fn set_user_name(&self, user: &str, name: &str) {
        self.inner
            .lock()
            .user_names
            .insert(user.to_owned(), name.to_owned());
    }

    /// The time zone (`tz`) users.info gives for `user`.
    pub fn set_user_time_zone(&self, user: &str, tz: &str) {
        self.inner
            .lock()
            .user_time_zones
            .insert(user.to_owned(), tz.to_owned());
    }

    /// Makes auth.test answer `token_revoked` for this token from now on.
    pub fn revoke_token(&self, bot_token: &str) {
        self.inner.lock().revoked.insert(bot_token.to_owned());
    }

    /// The OAuth app credentials oauth.v2.access accepts (HTTP Basic).
    pub fn set_oauth_client(&self, client_id: &str, client_secret: &str) {
        self.inner.lock().oauth_client = Some((client_id.to_owned(), client_secret.to_owned()));
    }

    /// The fake consent screen: `http://127.0.0.1:{port}/oauth/v2/authorize`.
    pub fn oauth_authorize_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/oauth/v2/authorize",
            self.inner.http_port
        )
    }

    /// What the next visit to the consent screen does (approve for a workspace, or cancel).
    pub fn approve_next(&self, approval: OAuthApproval) {
        self.inner.lock().next_approval = Some(approval);
    }
}

fn query_pairs(query: Option<&str>) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// `GET /oauth/v2/authorize`: the person decides at once, as set by `approve_next`, and
/// the browser is redirected to `redirect_uri` with a code (or an error) and the state.
fn oauth_authorize(inner: &Inner, call: &RecordedCall) -> Response {
    let query = query_pairs(call.query.as_deref());
    let Some(redirect_uri) = query.get("redirect_uri") else {
        return (StatusCode::BAD_REQUEST, "fake slack: no redirect_uri").into_response();
    };
    let state_param = query.get("state").cloned().unwrap_or_default();
    let mut state = inner.lock();
    let Some(approval) = state.next_approval.take() else {
        return (StatusCode::BAD_REQUEST, "fake slack: no approval scripted").into_response();
    };
    let mut location = url::Url::parse(redirect_uri).expect("redirect_uri is a URL");
    if let Some(error) = &approval.error {
        location
            .query_pairs_mut()
            .append_pair("error", error)
            .append_pair("state", &state_param);
    } else {
        let code = format!("code-{}", state.next_code);
        state.next_code += 1;
        state.codes.insert(code.clone(), approval);
        location
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &state_param);
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

/// `oauth.v2.access`: checks the client credentials, exchanges a code once.
fn oauth_v2_access(inner: &Inner, call: &RecordedCall) -> Response {
    let mut state = inner.lock();
    let expected = state.oauth_client.clone();
    let basic = call
        .authorization
        .as_deref()
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let credentials_ok = match (&expected, &basic) {
        (Some((id, secret)), Some(given)) => given == &format!("{id}:{secret}"),
        _ => false,
    };
    if !credentials_ok {
        return slack_json(json!({"ok": false, "error": "invalid_client_id"}));
    }
    let form = query_pairs(Some(call.body.as_str()));
    let Some(approval) = form.get("code").and_then(|code| state.codes.remove(code)) else {
        return slack_json(json!({"ok": false, "error": "invalid_code"}));
    };
    let workspace = approval.workspace.clone();
    state
        .workspaces
        .insert(approval.bot_token.clone(), workspace.clone());
    state.revoked.remove(&approval.bot_token);
    slack_json(json!({
        "ok": true,
        "access_token": approval.bot_token,
        "token_type": "bot",
        "scope": workspace.scopes,
        "bot_user_id": workspace.bot_user_id,
        "app_id": APP_ID,
        "team": {"id": workspace.team_id, "name": workspace.team_name},
        "enterprise": workspace.enterprise_id.as_ref().map(|id| json!({"id": id, "name": "Fake Org"})),
        "is_enterprise_install": false,
        "authed_user": {"id": approval.installer_user_id}
    }))
}

// ---------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------

impl FakeSlack {
    /// chat.postMessage into `channel` answers `{"ok":false,"error":error}` from now on.
    pub fn fail_channel(&self, channel: &str, error: &str) {
        self.inner
            .lock()
            .failing_channels
            .insert(channel.to_owned(), error.to_owned());
    }

    /// The next `count` chat.postMessage calls answer 429 with `Retry-After: retry_after_secs`.
    pub fn rate_limit_posts(&self, count: u32, retry_after_secs: u64) {
        let mut state = self.inner.lock();
        state.rate_limited_posts = count;
        state.retry_after_secs = retry_after_secs;
    }

    /// What conversations.info says about `channel` (default: public, the bot a member).
    pub fn set_channel(&self, channel: &str, is_private: bool, is_member: bool) {
        self.inner
            .lock()
            .channels
            .insert(channel.to_owned(), (is_private, is_member));
    }
}

impl FakeSlack {
    /// The people users.list returns for workspace `team_id`: (user id, is_admin).
    pub fn set_members(&self, team_id: &str, members: &[(&str, bool)]) {
        self.inner.lock().members.insert(
            team_id.to_owned(),
            members
                .iter()
                .map(|(id, admin)| ((*id).to_owned(), *admin))
                .collect(),
        );
    }
}

/// `users.info`: one member's name and time zone.
fn users_info(inner: &Inner, call: &RecordedCall) -> Response {
    let state = inner.lock();
    let workspace = match workspace_with_scope(&state, call, "users:read") {
        Ok(workspace) => workspace,
        Err(code) => return slack_json(json!({"ok": false, "error": code})),
    };
    let user = form_field(call, "user").unwrap_or_default();
    let tz = state.user_time_zones.get(&user).cloned();
    match state.user_names.get(&user) {
        Some(name) => slack_json(json!({"ok": true, "user": {
            "id": user, "team_id": workspace.team_id, "name": name.to_lowercase(),
            "tz": tz.unwrap_or_else(|| "America/Los_Angeles".to_string()),
            "profile": {"display_name": name, "real_name": name}
        }})),
        // Slack knows every member: one without a name set answers with its id.
        None if tz.is_some() => slack_json(json!({"ok": true, "user": {
            "id": user, "team_id": workspace.team_id, "name": user.to_lowercase(),
            "tz": tz, "profile": {"display_name": "", "real_name": ""}
        }})),
        None => slack_json(json!({"ok": false, "error": "user_not_found"})),
    }
}

/// `users.list`: the members of the token's workspace, in one page.
fn users_list(inner: &Inner, call: &RecordedCall) -> Response {
    let state = inner.lock();
    let workspace = match workspace_with_scope(&state, call, "users:read") {
        Ok(workspace) => workspace,
        Err(code) => return slack_json(json!({"ok": false, "error": code})),
    };
    let members: Vec<Value> = state
        .members
        .get(&workspace.team_id)
        .into_iter()
        .flatten()
        .map(|(id, admin)| json!({"id": id, "is_admin": admin, "is_owner": false, "deleted": false, "is_bot": false}))
        .collect();
    slack_json(json!({"ok": true, "members": members, "response_metadata": {"next_cursor": ""}}))
}

/// The workspace of the call's bot token, if its scopes include `scope`; else Slack's
/// error code (`invalid_auth` for an unknown token, `missing_scope`).
fn workspace_with_scope<'a>(
    state: &'a SharedState,
    call: &RecordedCall,
    scope: &str,
) -> Result<&'a FakeWorkspace, &'static str> {
    let token = call.bearer().unwrap_or_default();
    let Some(workspace) = state.workspaces.get(token) else {
        return Err("invalid_auth");
    };
    if !workspace
        .scopes
        .split(',')
        .any(|granted| granted.trim() == scope)
    {
        return Err("missing_scope");
    }
    Ok(workspace)
}

/// The form field `key` of a form-encoded call (or its JSON field).
fn form_field(call: &RecordedCall, key: &str) -> Option<String> {
    if let Some(value) = call
        .try_json()
        .ok()
        .and_then(|json| json.get(key).and_then(Value::as_str).map(str::to_string))
    {
        return Some(value);
    }
    url::form_urlencoded::parse(call.body.as_bytes())
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.into_owned())
}

/// `views.publish`: a user id and a home view whose JSON parses, like Slack checks.
fn views_publish(call: &RecordedCall) -> Response {
    let user = form_field(call, "user_id").unwrap_or_default();
    let view = form_field(call, "view").and_then(|view| serde_json::from_str::<Value>(&view).ok());
    match view {
        _ if user.is_empty() => slack_json(json!({"ok": false, "error": "invalid_arguments"})),
        Some(view) if view["type"] == "home" => {
            let blocks = view["blocks"].as_array().map_or(0, Vec::len);
            if blocks > 100 {
                return slack_json(json!({"ok": false, "error": "invalid_blocks"}));
            }
            slack_json(json!({"ok": true, "view": {"id": "V0FAKEHOME", "type": "home"}}))
        }
        _ => slack_json(json!({"ok": false, "error": "invalid_arguments"})),
    }
}

/// `chat.unfurl`: needs `links:write`, an `unfurls` JSON object and either
/// `unfurl_id`+`source` or `channel`+`ts`.
fn chat_unfurl(inner: &Inner, call: &RecordedCall) -> Response {
    if let Err(code) = workspace_with_scope(&inner.lock(), call, "links:write") {
        return slack_json(json!({"ok": false, "error": code}));
    }
    let unfurls = form_field(call, "unfurls")
        .and_then(|unfurls| serde_json::from_str::<Value>(&unfurls).ok())
        .filter(Value::is_object);
    let named = (form_field(call, "unfurl_id").is_some() && form_field(call, "source").is_some())
        || (form_field(call, "channel").is_some() && form_field(call, "ts").is_some());
    match unfurls {
        Some(_) if named => slack_json(json!({"ok": true})),
        Some(_) => slack_json(json!({"ok": false, "error": "invalid_arguments"})),
        None => slack_json(json!({"ok": false, "error": "invalid_unfurls_format"})),
    }
}

fn chat_update(call: &RecordedCall) -> Response {
    let args = call.try_json().unwrap_or(Value::Null);
    match (args.get("channel"), args.get("ts")) {
        // A message is edited in its channel: a user id is not one.
        (Some(channel), Some(_))
            if channel
                .as_str()
                .is_some_and(|id| dm_channel_of(id).is_some()) =>
        {
            slack_json(json!({"ok": false, "error": "channel_not_found"}))
        }
        (Some(channel), Some(ts)) => slack_json(json!({"ok": true, "channel": channel, "ts": ts})),
        _ => slack_json(json!({"ok": false, "error": "message_not_found"})),
    }
}

fn conversations_info(inner: &Inner, call: &RecordedCall) -> Response {
    let args = call.try_json().unwrap_or(Value::Null);
    let channel = args
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let (is_private, is_member) = inner
        .lock()
        .channels
        .get(&channel)
        .copied()
        .unwrap_or((false, true));
    if is_private && !is_member {
        return slack_json(json!({"ok": false, "error": "channel_not_found"}));
    }
    slack_json(json!({"ok": true, "channel": {
        "id": channel, "is_channel": !is_private, "is_group": is_private, "is_private": is_private,
        "is_member": is_member, "is_archived": false, "is_im": false, "is_mpim": false
    }}))
}
