//! The activity outbox: activities found by the poller, in order, until delivered.
//!
//! Owns two trees: `activity_outbox` (sequence number, big-endian → [`Activity`] as JSON) and
//! `activity_ids` (activity id → its sequence number and time, so an id is appended once
//! ever, within the retention of [`ActivityStore::prune_ids`]). [`ActivityStore::commit_poll`]
//! appends a poll's activities *and* advances that repository's cursor in one sled
//! transaction, then flushes: a crash before the flush loses both (the poll is redone),
//! never one without the other, which is what makes detection exactly once.
//!
//! For the delivery side: [`ActivityStore::pending`] reads the oldest activities first,
//! [`ActivityStore::mark_done`] removes one once delivered. Must never append an activity
//! outside `commit_poll`, or reorder the outbox.

use super::kv::Transactional;
use super::kv::{ConflictableTransactionError, TransactionError};
use jiff::Timestamp;
use serde::Serialize;

use crate::bitbucket::{Activity, PollCommit};

use super::repositories::{decode, encode};
use super::{StoreError, WriteGate};

#[derive(Clone)]
pub struct ActivityStore {
    watched: super::kv::Tree,
    cursors: super::kv::Tree,
    outbox: super::kv::Tree,
    ids: super::kv::Tree,
    gate: WriteGate,
}

/// Makes every write so far durable. On a blocking thread rather than `flush_async`, so
/// that tokio's paused test clock does not race ahead while the disk works.
pub(super) async fn flush(tree: &super::kv::Tree) -> Result<(), StoreError> {
    let tree = tree.clone();
    tokio::task::spawn_blocking(move || tree.flush())
        .await
        .map_err(|error| StoreError::Io(format!("flush task failed: {error}")))??;
    Ok(())
}

pub(super) fn transaction_error(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => error,
    }
}

fn id_record(seq: u64, occurred_at: Timestamp) -> [u8; 16] {
    let mut record = [0u8; 16];
    record[..8].copy_from_slice(&seq.to_be_bytes());
    record[8..].copy_from_slice(&occurred_at.as_second().to_be_bytes());
    record
}

fn id_record_time(record: &[u8]) -> i64 {
    record
        .get(8..16)
        .and_then(|bytes| bytes.try_into().ok())
        .map(i64::from_be_bytes)
        .unwrap_or(i64::MAX)
}

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("an outbox key is not 8 bytes".into()))
}

impl ActivityStore {
    pub(super) fn new(
        watched: super::kv::Tree,
        cursors: super::kv::Tree,
        outbox: super::kv::Tree,
        ids: super::kv::Tree,
        gate: WriteGate,
    ) -> Self {
        Self {
            watched,
            cursors,
            outbox,
            ids,
            gate,
        }
    }

    /// In one transaction: appends those of `activities` whose id was never appended,
    /// and stores `cursor` as `repo`'s cursor. Durable when it returns.
    pub async fn commit_poll<C: Serialize>(
        &self,
        repo: &str,
        cursor: &C,
        activities: &[Activity],
    ) -> Result<PollCommit, StoreError> {
        let cursor = encode("repository cursor", cursor)?;
        let encoded: Vec<(&Activity, Vec<u8>)> = activities
            .iter()
            .map(|activity| Ok((activity, encode("activity", activity)?)))
            .collect::<Result<_, StoreError>>()?;
        let writing = self.gate.writing()?;
        let outcome = (&self.watched, &self.cursors, &self.outbox, &self.ids)
            .transaction(|(watched, cursors, outbox, ids)| {
                if watched.get(repo)?.is_none() {
                    return Ok(PollCommit::Unwatched);
                }
                let mut appended = 0;
                for (activity, json) in &encoded {
                    if ids.get(activity.id.as_bytes())?.is_some() {
                        continue;
                    }
                    let seq = outbox.generate_id()?;
                    outbox.insert(seq.to_be_bytes(), json.as_slice())?;
                    ids.insert(
                        activity.id.as_bytes(),
                        &id_record(seq, activity.occurred_at),
                    )?;
                    appended += 1;
                }
                cursors.insert(repo, cursor.as_slice())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(PollCommit::Committed {
                    appended,
                })
            })
            .map_err(transaction_error)?;
        drop(writing);
        if outcome != PollCommit::Unwatched {
            flush(&self.outbox).await?;
        }
        Ok(outcome)
    }

    /// Up to `limit` undelivered activities, oldest first, with their sequence numbers.
    pub fn pending(&self, limit: usize) -> Result<Vec<(u64, Activity)>, StoreError> {
        self.outbox
            .iter()
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((seq_of(&key)?, decode("outbox activity", &value)?))
            })
            .collect()
    }

    /// Removes a delivered activity from the outbox (its id stays known). Reaches disk
    /// with the periodic flush; after a crash it may be pending again.
    pub fn mark_done(&self, seq: u64) -> Result<(), StoreError> {
        let _writing = self.gate.writing()?;
        self.outbox.remove(seq.to_be_bytes())?;
        Ok(())
    }

    /// The outbox tree, for the routing transaction in [`super::Store::commit_routing`].
    pub(super) fn outbox_tree(&self) -> &super::kv::Tree {
        &self.outbox
    }

    /// Activities waiting for delivery.
    pub fn len(&self) -> usize {
        self.outbox.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty()
    }

    /// Whether an activity with this id was ever appended (within the id retention).
    pub fn was_appended(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.ids.get(id)?.is_some())
    }

    /// Forgets ids of activities that happened before `cutoff` (they can no longer be
    /// seen again by the poller); returns how many.
    pub fn prune_ids(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.ids.iter() {
            let (key, value) = entry?;
            if id_record_time(&value) < cutoff.as_second() {
                let _writing = self.gate.writing()?;
                self.ids.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use crate::bitbucket::{ActivityKind, RepositoryName};
    use crate::store::Store;

    use super::*;

    fn branch_created(id: &str, second: i64) -> Activity {
        Activity {
            id: id.into(),
            repository: "acme/api".into(),
            occurred_at: Timestamp::from_second(second).expect("valid"),
            actor: None,
            link: None,
            kind: ActivityKind::BranchCreated {
                branch: "main".into(),
                head: "abc".into(),
            },
        }
    }

    #[tokio::test]
    async fn a_poll_appends_new_ids_once_with_its_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let repo: RepositoryName = "acme/api".parse().expect("name");
        store.repositories.watch(&repo).await.expect("watch");
        let first = vec![branch_created("a", 10), branch_created("b", 20)];
        let outcome = store
            .activities
            .commit_poll("acme/api", &1u32, &first)
            .await
            .expect("commit");
        assert_eq!(outcome, PollCommit::Committed { appended: 2 });
        let again = vec![branch_created("b", 20), branch_created("c", 30)];
        let outcome = store
            .activities
            .commit_poll("acme/api", &2u32, &again)
            .await
            .expect("commit");
        assert_eq!(outcome, PollCommit::Committed { appended: 1 });
        assert_eq!(
            store
                .repositories
                .cursor::<u32>("acme/api")
                .expect("cursor"),
            Some(2)
        );
        let pending = store.activities.pending(10).expect("pending");
        let ids: Vec<&str> = pending.iter().map(|(_, a)| a.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b", "c"]);
        store.activities.mark_done(pending[0].0).expect("done");
        assert_eq!(store.activities.len(), 2);
        assert!(store.activities.was_appended("a").expect("known"));
        let cutoff = Timestamp::from_second(25).expect("valid");
        assert_eq!(store.activities.prune_ids(cutoff).expect("prune"), 2);
    }

    #[tokio::test]
    async fn an_unwatched_repository_commits_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let outcome = store
            .activities
            .commit_poll("acme/api", &1u32, &[branch_created("a", 1)])
            .await
            .expect("commit");
        assert_eq!(outcome, PollCommit::Unwatched);
        assert!(store.activities.is_empty());
        assert_eq!(
            store
                .repositories
                .cursor::<u32>("acme/api")
                .expect("cursor"),
            None
        );
    }

    #[tokio::test]
    async fn the_outbox_survives_a_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            let repo: RepositoryName = "acme/api".parse().expect("name");
            store.repositories.watch(&repo).await.expect("watch");
            store
                .activities
                .commit_poll("acme/api", &1u32, &[branch_created("a", 1)])
                .await
                .expect("commit");
        }
        let store = Store::open(dir.path()).expect("reopen");
        store
            .activities
            .commit_poll(
                "acme/api",
                &2u32,
                &[branch_created("a", 1), branch_created("z", 2)],
            )
            .await
            .expect("commit");
        let ids: Vec<String> = store
            .activities
            .pending(10)
            .expect("pending")
            .into_iter()
            .map(|(_, a)| a.id)
            .collect();
        assert_eq!(ids, vec!["a", "z"]);
    }
}
