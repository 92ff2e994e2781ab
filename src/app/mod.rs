//! Wiring: builds every component from its part of the [`Config`], runs them as named,
//! supervised tasks, and shuts them down in order.
//!
//! The only place that combines several services. Startup failures come back as errors
//! that say what to fix; once running, a component's transient errors stay inside its
//! own loop. Shutdown: stop taking envelopes, let in-flight handlers finish (with a
//! deadline), flush the store, return.

pub mod dispatch;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::http::{self, HttpState};
use crate::slack::socket::{SocketHealth, SocketMode, SocketModeParts, SocketModeSettings};
use crate::slack::web::SlackWeb;
use crate::store::Store;

use dispatch::Dispatcher;

/// How often expired dedup ids are pruned.
const DEDUP_PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// Runs the daemon until `shutdown` is cancelled (or the app token is refused).
pub async fn run(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = Store::open(&config.storage.path)?;
    info!(path = %store.path().display(), "store open");
    let web = SlackWeb::new(&config.slack.api_url)?;
    let settings = SocketModeSettings::from_config(&config.slack, &config.shutdown);
    let health = SocketHealth::new(settings.connections);
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.http.listen))?;
    info!(address = %listener.local_addr()?, "HTTP server listening (/healthz, /readyz)");

    let background = CancellationToken::new();
    let http_state = HttpState {
        sockets: health.clone(),
        store: store.clone(),
    };
    let http_task = tokio::spawn(
        http::serve(listener, http_state, background.clone()).instrument(info_span!("http")),
    );
    tokio::spawn(
        notify_systemd(health.clone(), background.clone()).instrument(info_span!("systemd")),
    );
    tokio::spawn(
        prune_dedup(
            store.clone(),
            clock.clone(),
            config.storage.dedup_retention,
            background.clone(),
        )
        .instrument(info_span!("dedup_prune")),
    );

    let handlers = TaskTracker::new();
    let socket_mode = SocketMode::new(SocketModeParts {
        web,
        app_token: config.slack.app_token.clone(),
        settings,
        handler: Arc::new(Dispatcher::new()),
        dedup: store.dedup.clone(),
        clock,
        health,
        tracker: handlers.clone(),
    });
    let outcome = socket_mode.run(shutdown.clone()).await;
    if outcome.is_err() {
        shutdown.cancel();
    }
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
    if let Err(error) = store.flush().await {
        error!(%error, "could not flush the store at shutdown");
    }
    match http_task.await {
        Ok(Err(error)) => warn!(%error, "HTTP server ended with an error"),
        Err(error) => warn!(%error, "HTTP server task failed"),
        Ok(Ok(())) => {}
    }
    outcome?;
    info!("stopped cleanly");
    Ok(())
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

async fn prune_dedup(
    store: Store,
    clock: Arc<dyn Clock>,
    retention: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(DEDUP_PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let retention =
            jiff::SignedDuration::try_from(retention).unwrap_or(jiff::SignedDuration::MAX);
        let Ok(cutoff) = clock.now().checked_sub(retention) else {
            continue;
        };
        match store.dedup.prune(cutoff) {
            Ok(0) => {}
            Ok(removed) => info!(removed, "pruned expired dedup ids"),
            Err(error) => warn!(%error, "could not prune dedup ids; will retry"),
        }
    }
}
