//! The HTTP server's accept loop and connections: at most `http.max_connections` open at
//! once, each closed when it idles (`http.idle_timeout_secs`) or sends its request head too
//! slowly (`http.header_read_timeout_secs`), request bodies capped at [`MAX_BODY_BYTES`],
//! and a graceful stop within the drain deadline.
//!
//! Owns sockets, slots and deadlines only; what a request gets is the router's business.
//! Must never let a client hold a file descriptor without bound, crash or stop the accept
//! loop, or log more than one warning a minute about refused connections.

use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use http_body_util::Limited;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, warn};

use crate::config::{HttpConfig, ShutdownConfig};
use crate::metrics::{Metrics, ReasonLabel};

/// The largest request body any route accepts. Every route is a GET; a larger declared
/// body is refused with 413 before routing, a larger streamed one fails when read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// hyper's read buffer per connection, and so the largest request head.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// At most one warning per this long about refused connections or failing accepts.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The pause after a failed accept (such as too many open files), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The server's limits.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// `http.max_connections`.
    pub max_connections: usize,
    /// `http.idle_timeout_secs`: no request in progress for this long closes a connection.
    pub idle_timeout: Duration,
    /// `http.header_read_timeout_secs`: from a request's first byte to its complete head.
    pub header_read_timeout: Duration,
    /// `shutdown.drain_timeout_secs`: how long requests in progress may finish at a stop.
    pub drain_timeout: Duration,
}

impl HttpSettings {
    pub fn from_config(http: &HttpConfig, shutdown: &ShutdownConfig) -> Self {
        HttpSettings {
            max_connections: http.max_connections,
            idle_timeout: http.idle_timeout,
            header_read_timeout: http.header_read_timeout,
            drain_timeout: shutdown.drain_timeout,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting, lets
/// requests in progress finish within the drain deadline and closes what is left.
pub async fn run(
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let connections = TaskTracker::new();
    let abort = CancellationToken::new();
    let mut refusals = Throttle::default();
    let mut accept_failures = Throttle::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            // The client gave up before we took it: nothing to wait for.
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue;
            }
            Err(error) => {
                if let Some(suppressed) = accept_failures.allow(Instant::now()) {
                    warn!(
                        %error,
                        failures_not_logged = suppressed,
                        "cannot accept an HTTP connection; trying again"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.http_connections_refused.inc();
            if let Some(suppressed) = refusals.allow(Instant::now()) {
                warn!(
                    max_connections = settings.max_connections,
                    refusals_not_logged = suppressed,
                    "http.max_connections connections are open: closing new ones until one ends"
                );
            }
            drop(stream);
            continue;
        };
        let slot = Slot::take(permit, metrics.http_connections_open.clone());
        let _ = stream.set_nodelay(true);
        connections.spawn(
            connection(
                stream,
                slot,
                app.clone(),
                settings,
                metrics.clone(),
                shutdown.clone(),
                abort.clone(),
            )
            .in_current_span(),
        );
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(settings.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        warn!(
            still_open = connections.len(),
            "HTTP drain deadline passed; closing the connections still open"
        );
        abort.cancel();
        connections.wait().await;
    }
}

/// One connection, from accept to close.
async fn connection(
    stream: TcpStream,
    _slot: Slot,
    app: Router,
    settings: HttpSettings,
    metrics: Metrics,
    shutdown: CancellationToken,
    abort: CancellationToken,
) {
    let watch = Arc::new(Watch::new(Instant::now()));
    let io = TokioIo::new(Watched {
        inner: stream,
        watch: watch.clone(),
    });
    let service = {
        let watch = watch.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = InFlight::start(watch.clone());
            let app = app.clone();
            async move {
                let response = if declared_too_large(&request) {
                    too_large()
                } else {
                    let request = request.map(|body| Body::new(Limited::new(body, MAX_BODY_BYTES)));
                    match TowerToHyperService::new(app).call(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                };
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    inner: body,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let mut builder = http1::Builder::new();
    // Our own deadlines (below) tell an idle connection from a slow request head; hyper's
    // header timer would run through both.
    builder
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut stopping = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(error) = ended {
                    debug!(%error, "HTTP connection ended with an error");
                }
                return;
            }
            reason = watch.expired(&settings) => {
                metrics
                    .http_connections_timed_out
                    .get_or_create(&ReasonLabel { reason: reason.into() })
                    .inc();
                debug!(reason, "closing a slow HTTP connection");
                return;
            }
            _ = shutdown.cancelled(), if !stopping => {
                // Closes it now when idle, or after the response in progress.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = abort.cancelled() => return,
        }
    }
}

fn declared_too_large<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
}

/// 413, and the connection closes after it rather than reading the body.
fn too_large() -> Response<Body> {
    let mut response = (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The request body is larger than {MAX_BODY_BYTES} bytes.\n"),
    )
        .into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A connection's place among `http.max_connections`, counted in the open gauge.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Slot {
    fn take(permit: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        Slot {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Lets one warning through per [`WARN_INTERVAL`] and counts the ones it held back.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(held back since the last one)` when this one may be logged.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < WARN_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Where a connection stands, for its deadlines.
struct Watch {
    state: Mutex<WatchState>,
    changed: Notify,
}

struct WatchState {
    /// Requests handed to the router whose response body is not yet sent.
    in_flight: usize,
    /// With none in flight: whether bytes of the next request have arrived.
    head_started: bool,
    /// When the connection opened, the last response ended, or the next head started.
    since: Instant,
}

impl Watch {
    fn new(now: Instant) -> Self {
        Watch {
            state: Mutex::new(WatchState {
                in_flight: 0,
                head_started: false,
                since: now,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived from the client.
    fn bytes_read(&self) {
        let mut state = self.state();
        if state.in_flight == 0 && !state.head_started {
            state.head_started = true;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_waiters();
        }
    }

    fn request_started(&self) {
        self.state().in_flight += 1;
        self.changed.notify_waiters();
    }

    fn request_ended(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.head_started = false;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_waiters();
        }
    }

    /// The deadline in force and its reason; none while a request is in progress.
    fn deadline(&self, settings: &HttpSettings) -> Option<(Instant, &'static str)> {
        let state = self.state();
        if state.in_flight > 0 {
            None
        } else if state.head_started {
            Some((state.since + settings.header_read_timeout, "header_read"))
        } else {
            Some((state.since + settings.idle_timeout, "idle"))
        }
    }

    /// Resolves with the reason once a deadline passes.
    async fn expired(&self, settings: &HttpSettings) -> &'static str {
        loop {
            // Created before reading the state, so no change in between is missed.
            let changed = self.changed.notified();
            match self.deadline(settings) {
                Some((at, reason)) if at <= Instant::now() => return reason,
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Marks a request in progress from its head until its response body is sent or dropped.
struct InFlight(Arc<Watch>);

impl InFlight {
    fn start(watch: Arc<Watch>) -> Self {
        watch.request_started();
        InFlight(watch)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that ends its request's [`InFlight`] when hyper is done with it.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = <Body as hyper::body::Body>::Data;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, telling the [`Watch`] when the client's bytes arrive.
struct Watched {
    inner: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_lets_one_warning_a_minute_through_and_counts_the_rest() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(throttle.allow(start), Some(0));
        assert_eq!(throttle.allow(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(59)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(60)), Some(2));
        assert_eq!(throttle.allow(start + Duration::from_secs(61)), None);
    }

    #[test]
    fn a_declared_body_over_the_limit_is_too_large() {
        let request = |length: &str| {
            Request::builder()
                .header(CONTENT_LENGTH, length)
                .body(())
                .expect("a valid request")
        };
        assert!(!declared_too_large(&request("65536")));
        assert!(declared_too_large(&request("65537")));
        assert!(!declared_too_large(&Request::new(())));
    }
}
