//! Starts the Bitbucket poller when a credential is configured.
//!
//! Owns the decision "poll or not" and the poller's task: named, in its own span, stopped
//! by the shutdown token, ringing the router's bell after each commit that appended
//! activities. Without a credential the daemon runs without polling and says
//! so once. Must never fail the daemon once started: the poller keeps its errors inside
//! its loop.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Notify;
use tracing::info;

use super::supervisor::Supervisor;

use crate::bitbucket::{BitbucketClient, Poller};
use crate::clock::Clock;
use crate::config::BitbucketConfig;
use crate::store::Store;

/// Runs the poller as the supervised component `poller` (a restart starts a fresh poller
/// on the same client and store), or returns `None` (after one info line) without a
/// credential. Returns the client, so other users of the same credential (subscription
/// checks) share its request budget. `activities_committed` is rung after each commit that
/// appended activities.
pub fn spawn(
    config: &BitbucketConfig,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: crate::metrics::Metrics,
    activities_committed: Arc<Notify>,
    supervisor: &mut Supervisor,
) -> anyhow::Result<Option<BitbucketClient>> {
    let Some(settings) = config.client_settings() else {
        info!(
            "no Bitbucket credential configured (bitbucket.token or bitbucket.oauth.*): \
             not polling Bitbucket"
        );
        return Ok(None);
    };
    let client = BitbucketClient::new(settings)
        .context("cannot set up the Bitbucket client")?
        .with_metrics(metrics.clone());
    let settings = config.poller_settings();
    let polling = client.clone();
    supervisor.spawn("poller", move |stop| {
        Poller::new(
            polling.clone(),
            store.clone(),
            clock.clone(),
            settings.clone(),
        )
        .ring_on_commit(activities_committed.clone())
        .with_metrics(metrics.clone())
        .run(stop)
    });
    Ok(Some(client))
}
