//! Starts the Bitbucket poller when a credential is configured.
//!
//! Owns the decision "poll or not" and the poller's task: named, in its own span, stopped
//! by the shutdown token. Without a credential the daemon runs without polling and says
//! so once. Must never fail the daemon once started: the poller keeps its errors inside
//! its loop.

use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use crate::bitbucket::{BitbucketClient, ClientSettings, Poller, PollerSettings};
use crate::clock::Clock;
use crate::config::BitbucketConfig;
use crate::store::Store;

/// Spawns the poller task, or returns `None` (after one info line) without a credential.
/// Also returns the client, so other users of the same credential (subscription checks)
/// share its request budget.
pub fn spawn(
    config: &BitbucketConfig,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: crate::metrics::Metrics,
    stop: CancellationToken,
) -> anyhow::Result<Option<(JoinHandle<()>, BitbucketClient)>> {
    let Some(settings) = ClientSettings::from_config(config) else {
        info!(
            "no Bitbucket credential configured (bitbucket.token or bitbucket.oauth.*): \
             not polling Bitbucket"
        );
        return Ok(None);
    };
    let client = BitbucketClient::new(settings)
        .context("cannot set up the Bitbucket client")?
        .with_metrics(metrics);
    let poller = Poller::new(
        client.clone(),
        store,
        clock,
        PollerSettings::from_config(config),
    );
    let task = tokio::spawn(poller.run(stop).instrument(info_span!("bitbucket_poller")));
    Ok(Some((task, client)))
}
