//! The HTTP server's limits against slow and greedy clients: the connection cap, the idle
//! and header-read deadlines, the body limit and the drain at shutdown. `http::serve` runs
//! in-process on 127.0.0.1:0 with a minimal `HttpState`; clients speak raw HTTP/1.1 over
//! TCP so each can stall exactly where it wants. Deadline tests run on tokio's paused clock
//! (nothing waits in real time); every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bitbucket_slack::app::accounts::Accounts;
use bitbucket_slack::app::http_backend::HttpBackend;
use bitbucket_slack::app::installations::Installer;
use bitbucket_slack::app::upgrade_driver::UpgradeSignal;
use bitbucket_slack::clock::{Clock, ManualClock};
use bitbucket_slack::http::{self, HttpSettings, HttpState};
use bitbucket_slack::metrics::Metrics;
use bitbucket_slack::slack::socket::SocketHealth;
use bitbucket_slack::slack::web::SlackWeb;
use bitbucket_slack::store::Store;
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

/// The bound on every wait, so no test can hang.
const WAIT: Duration = Duration::from_secs(120);

struct Server {
    address: SocketAddr,
    metrics: Metrics,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

fn settings(max_connections: usize) -> HttpSettings {
    HttpSettings {
        max_connections,
        idle_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(5),
    }
}

async fn start(settings: HttpSettings) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("data")).expect("the store opens");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(
        Timestamp::from_second(1_800_000_000).expect("a valid time"),
    ));
    // Nothing here calls Slack; the address only has to parse.
    let web = SlackWeb::new(&Url::parse("http://127.0.0.1:9/api/").expect("a valid URL"))
        .expect("a Slack client");
    let metrics = Metrics::default();
    let state = HttpState {
        sockets: SocketHealth::new(1),
        store: store.clone(),
        clock: clock.clone(),
        backend: Arc::new(HttpBackend {
            components: Default::default(),
            installer: Installer {
                web: web.clone(),
                store: store.clone(),
                clock: clock.clone(),
                changed: Arc::new(tokio::sync::Notify::new()),
                upgrades: UpgradeSignal::default(),
                allowed_teams: Vec::new(),
            },
            accounts: Accounts {
                store,
                web,
                client: None,
                clock,
                public_url: Url::parse("http://localhost:8080/").expect("a valid URL"),
                link_changes: Arc::new(tokio::sync::Notify::new()),
            },
        }),
        slack_oauth: None,
        metrics: metrics.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(http::serve(listener, state, settings, shutdown.clone()));
    Server {
        address,
        metrics,
        shutdown,
        task,
        _dir: dir,
    }
}

async fn connect(address: SocketAddr) -> TcpStream {
    TcpStream::connect(address).await.expect("connect")
}

/// Everything the server sends until it closes the connection.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
                // A close with our bytes unread arrives as a reset: closed all the same.
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(error) => panic!("reading from the server: {error}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never closed the connection");
    String::from_utf8_lossy(&received).into_owned()
}

/// One request on its own connection, which the request asks the server to close.
async fn get(address: SocketAddr, path: &str) -> String {
    let mut stream = connect(address).await;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send the request");
    read_until_closed(&mut stream).await
}

/// Reads exactly one response to a `GET /healthz` on a connection that stays open.
async fn healthz_keep_alive(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("send the request");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(&received).ends_with("{\"status\":\"ok\"}") {
            let n = stream.read(&mut buffer).await.expect("read the response");
            assert!(n > 0, "closed before the response ended: {received:?}");
            received.extend_from_slice(&buffer[..n]);
        }
    })
    .await
    .expect("the response arrives");
    String::from_utf8_lossy(&received).into_owned()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

fn timed_out(server: &Server, reason: &str) -> u64 {
    metric(
        &server.metrics.render(),
        &format!("bitbucket_slack_http_connections_timed_out_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0) as u64
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_counted_and_the_server_recovers() {
    let server = start(HttpSettings {
        idle_timeout: Duration::from_secs(600),
        header_read_timeout: Duration::from_secs(600),
        ..settings(8)
    })
    .await;
    // Eight idle clients that never send a byte take every slot.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect(server.address).await);
    }
    // The accept queue is first come, first served: the ninth is taken after all eight.
    let mut extra = connect(server.address).await;
    let answer = read_until_closed(&mut extra).await;
    assert_eq!(answer, "", "the ninth connection is closed unserved");
    assert_eq!(server.metrics.http_connections_refused.get(), 1);
    assert_eq!(server.metrics.http_connections_open.get(), 8);

    // A connection holding a slot is served as usual, and closing it frees the slot.
    let mut first = idle.remove(0);
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let response = read_until_closed(&mut first).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    tokio::time::timeout(WAIT, async {
        while server.metrics.http_connections_open.get() >= 8 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the slot is given back once its connection ends");

    let response = get(server.address, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("{\"status\":\"ok\"}"), "{response}");
    let response = get(server.address, "/metrics").await;
    assert_eq!(
        metric(&response, "bitbucket_slack_http_connections_refused_total"),
        Some(1.0),
        "{response}"
    );
    // The seven idle ones and the one scraping.
    assert_eq!(
        metric(&response, "bitbucket_slack_http_connections_open"),
        Some(8.0),
        "{response}"
    );
    drop(idle);
    server.shutdown.cancel();
    tokio::time::timeout(WAIT, server.task)
        .await
        .expect("the server stops")
        .expect("the server task ends")
        .expect("the server ends without an error");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stalls_in_its_request_head_is_disconnected_after_the_header_timeout() {
    let server = start(settings(8)).await;
    let mut stalled = connect(server.address).await;
    stalled
        .write_all(b"GET /heal")
        .await
        .expect("send half a request line");
    let sent = Instant::now();
    let answer = read_until_closed(&mut stalled).await;
    let waited = sent.elapsed();
    assert_eq!(answer, "", "no response to half a request");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(30),
        "closed after {waited:?}, not after the 1 s header-read timeout"
    );
    assert_eq!(timed_out(&server, "header_read"), 1);
    assert_eq!(timed_out(&server, "idle"), 0);

    // A head that arrives in pieces within the timeout is answered.
    let mut slow = connect(server.address).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("send the request line");
    tokio::time::sleep(Duration::from_millis(700)).await;
    slow.write_all(b"Host: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the headers");
    let response = read_until_closed(&mut slow).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(timed_out(&server, "header_read"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_connection_with_no_request_in_progress_is_closed_after_the_idle_timeout() {
    let server = start(settings(8)).await;
    // Sends nothing at all.
    let mut silent = connect(server.address).await;
    let opened = Instant::now();
    assert_eq!(read_until_closed(&mut silent).await, "");
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "closed after {waited:?}, not after the 30 s idle timeout"
    );
    assert_eq!(timed_out(&server, "idle"), 1);

    // Between keep-alive requests the idle timeout applies, not the header-read one.
    let mut kept = connect(server.address).await;
    let response = healthz_keep_alive(&mut kept).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    tokio::time::sleep(Duration::from_secs(29)).await;
    let response = healthz_keep_alive(&mut kept).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let answered = Instant::now();
    assert_eq!(read_until_closed(&mut kept).await, "");
    let waited = answered.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "closed {waited:?} after its last response"
    );
    assert_eq!(timed_out(&server, "idle"), 2);
    assert_eq!(timed_out(&server, "header_read"), 0);
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_and_the_server_keeps_serving() {
    let server = start(settings(8)).await;
    let mut stream = connect(server.address).await;
    // The head declares 10 MiB; the server answers before any of it is sent.
    stream
        .write_all(b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 10485760\r\n\r\n")
        .await
        .expect("send the head");
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("larger than 65536 bytes"),
        "the page says the limit: {response}"
    );

    // A body within the limit is fine.
    let body = "x".repeat(1000);
    let mut stream = connect(server.address).await;
    stream
        .write_all(
            format!(
                "GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("send the request");
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let response = get(server.address, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_idle_connections_at_once_and_stalled_ones_at_the_drain_deadline() {
    let server = start(HttpSettings {
        header_read_timeout: Duration::from_secs(60),
        ..settings(8)
    })
    .await;
    let mut idle = connect(server.address).await;
    let mut kept = connect(server.address).await;
    let response = healthz_keep_alive(&mut kept).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut stalled = connect(server.address).await;
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .expect("send half a head");
    // Let the server take all three before the stop.
    tokio::time::timeout(WAIT, async {
        while server.metrics.http_connections_open.get() < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the server accepts the three connections");

    let stopped_at = Instant::now();
    server.shutdown.cancel();
    assert_eq!(read_until_closed(&mut idle).await, "");
    assert_eq!(read_until_closed(&mut kept).await, "");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(1),
        "idle connections close at once"
    );
    tokio::time::timeout(WAIT, server.task)
        .await
        .expect("the server stops")
        .expect("the server task ends")
        .expect("the server ends without an error");
    let waited = stopped_at.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "the stalled connection held the stop for {waited:?}, not the 5 s drain"
    );
    assert_eq!(read_until_closed(&mut stalled).await, "");
    assert!(
        TcpStream::connect(server.address).await.is_err(),
        "nothing listens after the stop"
    );
}
