//! Channel subscriptions and per-channel settings.
//!
//! Owns their stored shape and keys (`team:channel:target`), so one workspace's channels
//! never see another's. Every write is flushed before it returns: a subscription the user
//! was told about survives a crash. Pausing keeps the subscription: it never silently
//! vanishes.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{StoreError, WriteGate};
use crate::bitbucket::Target;
use crate::notify::subscription::{Pause, PauseKind, Subscription};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ChannelSettings {
    threading_off: bool,
}

#[derive(Clone)]
pub struct SubscriptionStore {
    subscriptions: super::kv::Tree,
    settings: super::kv::Tree,
    gate: WriteGate,
}

fn channel_prefix(team_id: &str, channel_id: &str) -> String {
    format!("{team_id}:{channel_id}:")
}

fn key(team_id: &str, channel_id: &str, target: &Target) -> String {
    let kind = match target {
        Target::Repository(_) => "repository",
        Target::Workspace(_) => "workspace",
    };
    format!(
        "{}{kind}:{}",
        channel_prefix(team_id, channel_id),
        target.as_str()
    )
}

fn decode(bytes: &[u8]) -> Result<Subscription, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt(format!("subscription record: {error}")))
}

impl SubscriptionStore {
    pub(super) fn new(
        subscriptions: super::kv::Tree,
        settings: super::kv::Tree,
        gate: WriteGate,
    ) -> Self {
        Self {
            subscriptions,
            settings,
            gate,
        }
    }

    pub fn get(
        &self,
        team_id: &str,
        channel_id: &str,
        target: &Target,
    ) -> Result<Option<Subscription>, StoreError> {
        self.subscriptions
            .get(key(team_id, channel_id, target).as_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    pub async fn put(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(subscription).expect("a subscription always serializes");
        {
            let _writing = self.gate.writing()?;
            self.subscriptions.insert(
                key(
                    &subscription.team_id,
                    &subscription.channel_id,
                    &subscription.target,
                )
                .as_bytes(),
                bytes,
            )?;
        }
        self.subscriptions.flush_async().await?;
        Ok(())
    }

    /// Stores `updated` only if the stored subscription is still `expected` (compare and
    /// swap). False when it changed or was removed meanwhile: the caller's view is stale
    /// and nothing was written. Durable when it returns true.
    pub async fn replace(
        &self,
        expected: &Subscription,
        updated: &Subscription,
    ) -> Result<bool, StoreError> {
        let key = key(&expected.team_id, &expected.channel_id, &expected.target);
        let bytes = serde_json::to_vec(updated).expect("a subscription always serializes");
        loop {
            let swapped = {
                let _writing = self.gate.writing()?;
                let Some(current) = self.subscriptions.get(key.as_bytes())? else {
                    return Ok(false);
                };
                if decode(&current)? != *expected {
                    return Ok(false);
                }
                self.subscriptions
                    .compare_and_swap(key.as_bytes(), Some(current), Some(bytes.clone()))?
                    .is_ok()
            };
            if swapped {
                self.subscriptions.flush_async().await?;
                return Ok(true);
            }
        }
    }

    pub async fn remove(
        &self,
        team_id: &str,
        channel_id: &str,
        target: &Target,
    ) -> Result<bool, StoreError> {
        let removed = {
            let _writing = self.gate.writing()?;
            self.subscriptions
                .remove(key(team_id, channel_id, target).as_bytes())?
        };
        self.subscriptions.flush_async().await?;
        Ok(removed.is_some())
    }

    pub fn list_channel(
        &self,
        team_id: &str,
        channel_id: &str,
    ) -> Result<Vec<Subscription>, StoreError> {
        self.subscriptions
            .scan_prefix(channel_prefix(team_id, channel_id).as_bytes())
            .values()
            .map(|bytes| decode(&bytes?))
            .collect()
    }

    /// Every subscription of every workspace (the router filters by team itself).
    pub fn list_all(&self) -> Result<Vec<Subscription>, StoreError> {
        self.subscriptions
            .iter()
            .values()
            .map(|bytes| decode(&bytes?))
            .collect()
    }

    pub fn count_for_team(&self, team_id: &str) -> usize {
        self.subscriptions
            .scan_prefix(format!("{team_id}:").as_bytes())
            .count()
    }

    /// Pauses every subscription of a channel Slack refuses to post in. Returns those that
    /// were active until now (their creators are to be told).
    pub async fn pause_channel(
        &self,
        team_id: &str,
        channel_id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Vec<Subscription>, StoreError> {
        let mut newly_paused = Vec::new();
        for mut subscription in self.list_channel(team_id, channel_id)? {
            if subscription.paused.is_some() {
                continue;
            }
            subscription.paused = Some(Pause {
                reason: reason.to_string(),
                since: now,
                notified: true,
                kind: PauseKind::Channel,
            });
            self.put(&subscription).await?;
            newly_paused.push(subscription);
        }
        Ok(newly_paused)
    }

    /// Whether pull request activity is threaded in this channel (on unless turned off).
    pub fn threading(&self, team_id: &str, channel_id: &str) -> Result<bool, StoreError> {
        let settings: ChannelSettings = match self
            .settings
            .get(format!("{team_id}:{channel_id}").as_bytes())?
        {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| StoreError::Corrupt(format!("channel settings: {error}")))?,
            None => ChannelSettings::default(),
        };
        Ok(!settings.threading_off)
    }

    pub async fn set_threading(
        &self,
        team_id: &str,
        channel_id: &str,
        on: bool,
    ) -> Result<(), StoreError> {
        let settings = ChannelSettings { threading_off: !on };
        {
            let _writing = self.gate.writing()?;
            self.settings.insert(
                format!("{team_id}:{channel_id}").as_bytes(),
                serde_json::to_vec(&settings).expect("settings serialize"),
            )?;
        }
        self.settings.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::subscription::{Features, Filters};
    use crate::store::Store;

    fn subscription(team: &str, channel: &str, repo: &str) -> Subscription {
        Subscription {
            team_id: team.into(),
            channel_id: channel.into(),
            target: Target::Repository(repo.into()),
            features: Features::defaults(),
            filters: Filters::default(),
            main_branch: Some("main".into()),
            created_by: "U1".into(),
            created_at: Timestamp::UNIX_EPOCH,
            paused: None,
            private: None,
            coverage: Default::default(),
        }
    }

    #[tokio::test]
    async fn subscriptions_per_channel_pause_and_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let subscriptions = &store.subscriptions;
        subscriptions
            .put(&subscription("T1", "C1", "acme/api"))
            .await
            .expect("put");
        subscriptions
            .put(&subscription("T1", "C1", "acme/web"))
            .await
            .expect("put");
        subscriptions
            .put(&subscription("T2", "C1", "acme/api"))
            .await
            .expect("put");
        assert_eq!(
            subscriptions.list_channel("T1", "C1").expect("list").len(),
            2
        );
        assert_eq!(
            subscriptions.list_channel("T2", "C1").expect("list").len(),
            1
        );
        let paused = subscriptions
            .pause_channel("T1", "C1", "channel_not_found", Timestamp::UNIX_EPOCH)
            .await
            .expect("pause");
        assert_eq!(paused.len(), 2);
        assert!(
            subscriptions
                .pause_channel("T1", "C1", "channel_not_found", Timestamp::UNIX_EPOCH)
                .await
                .expect("pause again")
                .is_empty()
        );
        assert!(
            subscriptions.list_channel("T2", "C1").expect("list")[0]
                .paused
                .is_none()
        );
        assert!(subscriptions.threading("T1", "C1").expect("default"));
        subscriptions
            .set_threading("T1", "C1", false)
            .await
            .expect("set");
        assert!(!subscriptions.threading("T1", "C1").expect("off"));
        assert!(
            subscriptions
                .remove("T1", "C1", &Target::Repository("acme/api".into()))
                .await
                .expect("remove")
        );
        assert_eq!(subscriptions.count_for_team("T1"), 1);
        assert_eq!(subscriptions.count_for_team("T2"), 1);
    }

    #[tokio::test]
    async fn replace_writes_only_over_what_the_caller_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let subscriptions = &store.subscriptions;
        let read = subscription("T1", "C1", "acme/api");
        subscriptions.put(&read).await.expect("put");
        let mut first = read.clone();
        first.private = Some(true);
        let mut second = read.clone();
        second.private = Some(false);
        assert!(subscriptions.replace(&read, &first).await.expect("swap"));
        // A second writer that read the same old value loses: nothing is written.
        assert!(!subscriptions.replace(&read, &second).await.expect("stale"));
        let stored = subscriptions
            .get("T1", "C1", &read.target)
            .expect("get")
            .expect("stored");
        assert_eq!(stored.private, Some(true));
        // Removed meanwhile: a replace does not bring it back.
        subscriptions
            .remove("T1", "C1", &read.target)
            .await
            .expect("remove");
        assert!(!subscriptions.replace(&first, &second).await.expect("gone"));
        assert!(
            subscriptions
                .get("T1", "C1", &read.target)
                .expect("get")
                .is_none()
        );
    }
}
