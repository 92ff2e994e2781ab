//! Turns SIGTERM and SIGINT into a cancellation token.
//!
//! The only module that installs signal handlers. Everything long-lived takes the
//! [`CancellationToken`] and stops when it is cancelled; `app::run` then drains with a
//! deadline and flushes the store.

use tokio_util::sync::CancellationToken;

/// Cancels the returned token on the first SIGTERM or SIGINT. The drain that follows has
/// its own deadline, so a second signal is not needed to make the process exit.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down: no new envelopes, draining in-flight work"
        );
        cancel.cancel();
    });
    Ok(token)
}
