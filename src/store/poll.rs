//! The store as the poller's storage: [`PollStore`] (defined by `bitbucket::poller`, which
//! never imports `store`) implemented over the watched repositories, their cursors and
//! the activity outbox.
//!
//! Owns only the mapping to [`RepositoryStore`](super::RepositoryStore),
//! [`ActivityStore`](super::ActivityStore) and (for a repository's [`PollWants`], decided
//! by `notify::subscription::poll_wants`) the subscriptions, which keep every guarantee (one transaction
//! per poll, flushed before it returns). Must never add behaviour of its own.

use std::future::Future;

use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Store, StoreError};
use crate::bitbucket::{Activity, PollCommit, PollStore, PollWants};
use crate::notify::subscription::poll_wants;

impl PollStore for Store {
    type Error = StoreError;

    fn watched_names(&self) -> Result<Vec<String>, StoreError> {
        self.repositories.names()
    }

    fn cursor<C: DeserializeOwned>(&self, repository: &str) -> Result<Option<C>, StoreError> {
        self.repositories.cursor(repository)
    }

    fn wants(&self, repository: &str) -> Result<PollWants, StoreError> {
        Ok(poll_wants(&self.subscriptions.list_all()?, repository))
    }

    fn commit_poll<C: Serialize + Sync>(
        &self,
        repository: &str,
        cursor: &C,
        activities: &[Activity],
    ) -> impl Future<Output = Result<PollCommit, StoreError>> + Send {
        self.activities.commit_poll(repository, cursor, activities)
    }

    fn prune_ids(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        self.activities.prune_ids(cutoff)
    }

    fn mark_broken(
        &self,
        repository: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.repositories.mark_broken(repository, reason, now)
    }

    fn clear_broken(&self, repository: &str) -> Result<bool, StoreError> {
        self.repositories.clear_broken(repository)
    }
}
