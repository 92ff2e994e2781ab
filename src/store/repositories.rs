//! The watched Bitbucket repositories and each one's poll cursor.
//!
//! Owns two trees: `bitbucket_repositories` (full name → [`WatchedRepository`], JSON) and
//! `bitbucket_cursors` (full name → the poller's cursor, JSON, opaque here). What is
//! polled is exactly this list. Unwatching removes the cursor in the same transaction,
//! so watching again starts from a fresh baseline. Cursors are only ever advanced by
//! [`super::ActivityStore::commit_poll`], together with the activities they account for.
//! Must never interpret a cursor: its shape belongs to `bitbucket/diff/`.

use super::kv::Transactional;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bitbucket::RepositoryName;

use super::{StoreError, WriteGate};

/// A watched repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedRepository {
    pub name: String,
    /// Set while the repository answers 404 or 403, from the first such answer.
    pub broken: Option<Broken>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broken {
    pub since: Timestamp,
    pub reason: String,
}

#[derive(Clone)]
pub struct RepositoryStore {
    watched: super::kv::Tree,
    cursors: super::kv::Tree,
    gate: WriteGate,
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

pub(super) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|error| StoreError::Io(format!("cannot encode {what}: {error}")))
}

impl RepositoryStore {
    pub(super) fn new(watched: super::kv::Tree, cursors: super::kv::Tree, gate: WriteGate) -> Self {
        Self {
            watched,
            cursors,
            gate,
        }
    }

    /// Starts watching `name`. True if it was not watched yet. Durable on return.
    pub async fn watch(&self, name: &RepositoryName) -> Result<bool, StoreError> {
        let record = encode(
            "watched repository",
            &WatchedRepository {
                name: name.to_string(),
                broken: None,
            },
        )?;
        let inserted = {
            let _writing = self.gate.writing()?;
            self.watched
                .compare_and_swap(name.as_str(), None as Option<&[u8]>, Some(record))?
                .is_ok()
        };
        super::activities::flush(&self.watched).await?;
        Ok(inserted)
    }

    /// Stops watching `name` and forgets its cursor. True if it was watched. Durable on
    /// return.
    pub async fn unwatch(&self, name: &RepositoryName) -> Result<bool, StoreError> {
        let key = name.as_str().as_bytes();
        let removed = {
            let _writing = self.gate.writing()?;
            (&self.watched, &self.cursors)
                .transaction(|(watched, cursors)| {
                    cursors.remove(key)?;
                    Ok(watched.remove(key)?.is_some())
                })
                .map_err(super::activities::transaction_error)?
        };
        super::activities::flush(&self.watched).await?;
        Ok(removed)
    }

    /// Every watched repository, by name.
    pub fn list(&self) -> Result<Vec<WatchedRepository>, StoreError> {
        self.watched
            .iter()
            .values()
            .map(|value| decode("watched repository", &value?))
            .collect()
    }

    /// The names of the watched repositories.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.list()?.into_iter().map(|repo| repo.name).collect())
    }

    pub fn get(&self, name: &str) -> Result<Option<WatchedRepository>, StoreError> {
        self.watched
            .get(name)?
            .map(|value| decode("watched repository", &value))
            .transpose()
    }

    /// Records that `name` answers 404/403. True the first time (report it then), false
    /// while it stays broken or when it is not watched.
    pub fn mark_broken(
        &self,
        name: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.set_broken(name, |record| {
            if record.broken.is_some() {
                return false;
            }
            record.broken = Some(Broken {
                since: now,
                reason: reason.to_string(),
            });
            true
        })
    }

    /// Clears the broken mark. True if `name` was broken (report the recovery then).
    pub fn clear_broken(&self, name: &str) -> Result<bool, StoreError> {
        self.set_broken(name, |record| record.broken.take().is_some())
    }

    fn set_broken(
        &self,
        name: &str,
        change: impl Fn(&mut WatchedRepository) -> bool,
    ) -> Result<bool, StoreError> {
        loop {
            let Some(current) = self.watched.get(name)? else {
                return Ok(false);
            };
            let mut record: WatchedRepository = decode("watched repository", &current)?;
            if !change(&mut record) {
                return Ok(false);
            }
            let next = encode("watched repository", &record)?;
            let _writing = self.gate.writing()?;
            if self
                .watched
                .compare_and_swap(name, Some(current), Some(next))?
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    /// The cursor last committed for `name`; `None` before its baseline.
    pub fn cursor<C: DeserializeOwned>(&self, name: &str) -> Result<Option<C>, StoreError> {
        self.cursors
            .get(name)?
            .map(|value| decode("repository cursor", &value))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    use super::*;

    fn name(text: &str) -> RepositoryName {
        text.parse().expect("valid name")
    }

    #[tokio::test]
    async fn watch_list_unwatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let repos = &store.repositories;
        assert!(repos.watch(&name("acme/api")).await.expect("watch"));
        assert!(!repos.watch(&name("acme/api")).await.expect("watch again"));
        assert!(repos.watch(&name("acme/web")).await.expect("watch"));
        assert_eq!(repos.names().expect("names"), vec!["acme/api", "acme/web"]);
        assert!(repos.unwatch(&name("acme/api")).await.expect("unwatch"));
        assert!(
            !repos
                .unwatch(&name("acme/api"))
                .await
                .expect("unwatch again")
        );
        assert_eq!(repos.names().expect("names"), vec!["acme/web"]);
    }

    #[tokio::test]
    async fn broken_is_reported_once_and_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let repos = &store.repositories;
        repos.watch(&name("acme/gone")).await.expect("watch");
        let now = Timestamp::from_second(1_700_000_000).expect("valid");
        assert!(repos.mark_broken("acme/gone", "404", now).expect("mark"));
        assert!(
            !repos
                .mark_broken("acme/gone", "404", now)
                .expect("mark again")
        );
        assert!(
            repos
                .get("acme/gone")
                .expect("get")
                .expect("watched")
                .broken
                .is_some()
        );
        assert!(repos.clear_broken("acme/gone").expect("clear"));
        assert!(!repos.clear_broken("acme/gone").expect("clear again"));
        assert!(
            !repos
                .mark_broken("acme/unknown", "404", now)
                .expect("unwatched")
        );
    }
}
