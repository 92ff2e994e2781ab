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

use crate::bitbucket::budget::SharedBudget;
use crate::bitbucket::{Activity, BitbucketClient, PollCommit, PollStore, PollWants, Poller};
use crate::clock::Clock;
use crate::config::BitbucketConfig;
use crate::store::{Store, StoreError};

use super::replicas::Leases;

/// The store as this replica's poller sees it: only the watched repositories whose lease
/// it holds (all of them, alone on sled).
#[derive(Clone)]
struct LeasedPolls {
    store: Store,
    leases: Leases,
}

impl PollStore for LeasedPolls {
    type Error = StoreError;

    fn watched_names(&self) -> Result<Vec<String>, StoreError> {
        let mut names = self.store.watched_names()?;
        names.retain(|name| self.leases.holds_repository(name));
        Ok(names)
    }

    fn cursor<C: serde::de::DeserializeOwned>(
        &self,
        repository: &str,
    ) -> Result<Option<C>, StoreError> {
        self.store.cursor(repository)
    }

    fn wants(&self, repository: &str) -> Result<PollWants, StoreError> {
        self.store.wants(repository)
    }

    fn commit_poll<C: serde::Serialize + Sync>(
        &self,
        repository: &str,
        cursor: &C,
        activities: &[Activity],
    ) -> impl std::future::Future<Output = Result<PollCommit, StoreError>> + Send {
        // A poll that outlived this replica's lease (released to another replica, which
        // polls it now) is dropped: committing it could put back an older cursor.
        let held = self.leases.holds_repository(repository);
        let commit = self.store.commit_poll(repository, cursor, activities);
        async move {
            if held {
                commit.await
            } else {
                Ok(PollCommit::Unwatched)
            }
        }
    }

    fn prune_ids(&self, cutoff: jiff::Timestamp) -> Result<usize, StoreError> {
        self.store.prune_ids(cutoff)
    }

    fn mark_broken(
        &self,
        repository: &str,
        reason: &str,
        now: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        self.store.mark_broken(repository, reason, now)
    }

    fn clear_broken(&self, repository: &str) -> Result<bool, StoreError> {
        self.store.clear_broken(repository)
    }
}

/// `client`'s budget (its credential's, under `share`: the poller's or the previews')
/// counted in the shared store, across every replica.
pub(super) fn shared_budget(
    store: &Store,
    clock: &Arc<dyn Clock>,
    client: &BitbucketClient,
    share: &str,
) -> Arc<dyn SharedBudget> {
    Arc::new(StoreBudget {
        store: store.clone(),
        clock: clock.clone(),
        credential: format!("{share}:{}", client.credential_fingerprint()),
    })
}

/// A credential's budget counted in the shared store, across every replica.
struct StoreBudget {
    store: Store,
    clock: Arc<dyn Clock>,
    /// The credential, by a hash of its secret (never the secret).
    credential: String,
}

impl std::fmt::Debug for StoreBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBudget")
            .field("credential", &self.credential)
            .finish()
    }
}

impl SharedBudget for StoreBudget {
    fn spend(&self, per_hour: u64) -> bool {
        match self
            .store
            .coordination
            .spend(&self.credential, per_hour, self.clock.now())
        {
            Ok(granted) => granted,
            Err(error) => {
                tracing::warn!(%error, "cannot count a Bitbucket request in the shared budget; waiting");
                false
            }
        }
    }
}

/// Runs the poller as the supervised component `poller` (a restart starts a fresh poller
/// on the same client and store), or returns `None` (after one info line) without a
/// credential. Returns the client, so other users of the same credential (subscription
/// checks) share its request budget. `activities_committed` is rung after each commit that
/// appended activities.
pub fn spawn(
    config: &BitbucketConfig,
    store: Store,
    leases: Leases,
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
    if store.coordination.is_shared() {
        client
            .budget()
            .share(shared_budget(&store, &clock, &client, "bitbucket"));
    }
    let settings = config.poller_settings();
    let polling = client.clone();
    let polls = LeasedPolls { store, leases };
    supervisor.spawn("poller", move |stop| {
        Poller::new(
            polling.clone(),
            polls.clone(),
            clock.clone(),
            settings.clone(),
        )
        .ring_on_commit(activities_committed.clone())
        .with_metrics(metrics.clone())
        .run(stop)
    });
    Ok(Some(client))
}
