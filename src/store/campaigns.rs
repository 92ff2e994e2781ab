//! Permission-upgrade campaigns: each installation's [`CampaignState`] (as JSON, keyed by
//! team id) and the set of workspaces whose channel notifications are held.
//!
//! Owns persisting the campaign and the hold: [`hold`] adds the workspace to the held
//! set, which `store::deliveries` reads when it queues a delivery (parked at once while
//! held) and just before a post (a delivery queued before the hold is parked then);
//! [`release_with_digests`] replaces a workspace's held deliveries with one digest per
//! channel, puts any other held ones back into their queues and lifts the hold in a
//! single transaction, so a crash leaves either the held notifications or the digests,
//! never both and never neither. Every write is flushed before it returns. Never decides
//! *when* to hold or release: that is `upgrade::campaign`, executed by
//! `app::upgrade_driver`.
//!
//! [`hold`]: CampaignStore::hold
//! [`release_with_digests`]: CampaignStore::release_with_digests

use jiff::Timestamp;

use super::deliveries::{DeliveryStore, NewDelivery, ParkReason, PendingDelivery};
use super::{StoreError, WriteGate};
use crate::upgrade::campaign::CampaignState;

#[derive(Clone)]
pub struct CampaignStore {
    db: super::kv::Db,
    campaigns: super::kv::Tree,
    held: super::kv::Tree,
    outbox: super::kv::Tree,
    parked: super::kv::Tree,
    deliveries: DeliveryStore,
    gate: WriteGate,
}

impl CampaignStore {
    pub(super) fn new(
        db: super::kv::Db,
        campaigns: super::kv::Tree,
        held: super::kv::Tree,
        outbox: super::kv::Tree,
        deliveries: DeliveryStore,
        gate: WriteGate,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            parked: db.open_tree("parked_deliveries")?,
            db,
            campaigns,
            held,
            outbox,
            deliveries,
            gate,
        })
    }

    pub fn get(&self, team_id: &str) -> Result<Option<CampaignState>, StoreError> {
        self.campaigns
            .get(team_id.as_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Every stored campaign, by team id.
    pub fn list(&self) -> Result<Vec<(String, CampaignState)>, StoreError> {
        self.campaigns
            .iter()
            .map(|item| {
                let (key, value) = item?;
                Ok((String::from_utf8_lossy(&key).into_owned(), decode(&value)?))
            })
            .collect()
    }

    /// Saves the campaign (before its effects are executed, so nothing is sent twice).
    pub async fn put(&self, team_id: &str, state: &CampaignState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).expect("a campaign state always serializes");
        {
            let _writing = self.gate.writing()?;
            self.campaigns.insert(team_id.as_bytes(), bytes)?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Whether the workspace's channel notifications are held (kept in the outbox).
    pub fn is_held(&self, team_id: &str) -> Result<bool, StoreError> {
        self.held.contains_key(team_id.as_bytes())
    }

    /// Starts holding the workspace's channel notifications: from now on they are queued
    /// parked, and a queued one is parked instead of posted.
    pub async fn hold(&self, team_id: &str) -> Result<(), StoreError> {
        {
            let _writing = self.gate.writing()?;
            self.held.insert(team_id.as_bytes(), &[])?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// The held deliveries of a workspace (parked while held, and any still queued),
    /// oldest first.
    pub fn held_deliveries(&self, team_id: &str) -> Result<Vec<PendingDelivery>, StoreError> {
        let mut held = self.deliveries.pending()?;
        held.extend(
            self.deliveries
                .parked()?
                .into_iter()
                .filter(|delivery| delivery.parked == Some(ParkReason::Held)),
        );
        held.retain(|delivery| delivery.team_id == team_id && delivery.in_flight.is_none());
        held.sort_by_key(|delivery| delivery.id);
        Ok(held)
    }

    /// Lifts the hold: removes the `replaced` deliveries, puts the workspace's other held
    /// (parked) deliveries back into their queues, and enqueues `digests` (due at `now`;
    /// parked only if the workspace is not installed), in one transaction. Returns how
    /// many digests were enqueued.
    pub async fn release_with_digests(
        &self,
        team_id: &str,
        replaced: &[u64],
        digests: Vec<NewDelivery>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        use super::kv::Transactional;
        let mut prepared = self.deliveries.prepare(digests, now)?;
        for digest in &mut prepared {
            // The hold is lifted in the same transaction.
            if digest.parked == Some(ParkReason::Held) {
                digest.parked = None;
            }
        }
        let resumed: Vec<PendingDelivery> = self
            .deliveries
            .parked()?
            .into_iter()
            .filter(|delivery| {
                delivery.team_id == team_id
                    && delivery.parked == Some(ParkReason::Held)
                    && !replaced.contains(&delivery.id)
            })
            .map(|mut delivery| {
                delivery.parked = None;
                delivery.not_before = now;
                delivery
            })
            .collect();
        let queued: Vec<PendingDelivery> = replaced
            .iter()
            .map(|id| self.deliveries.get(*id))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        {
            let _writing = self.gate.writing()?;
            (&self.outbox, &self.held, &self.parked)
                .transaction(|(outbox, held, parked)| {
                    for delivery in &queued {
                        DeliveryStore::remove_in(outbox, delivery)?;
                    }
                    for id in replaced {
                        parked.remove(id.to_be_bytes())?;
                    }
                    for delivery in &resumed {
                        if parked.remove(delivery.id.to_be_bytes())?.is_some() {
                            DeliveryStore::queue_in(outbox, delivery)?;
                        }
                    }
                    for delivery in &prepared {
                        DeliveryStore::insert_in(outbox, parked, delivery)?;
                    }
                    held.remove(team_id.as_bytes())?;
                    Ok(())
                })
                .map_err(|error: super::kv::TransactionError<()>| {
                    StoreError::Io(format!("release transaction: {error:?}"))
                })?;
        }
        self.db.flush_async().await?;
        self.deliveries.note_enqueued(&prepared);
        self.deliveries.note_enqueued(&resumed);
        Ok(prepared.len())
    }
}

fn decode(bytes: &[u8]) -> Result<CampaignState, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt(format!("campaign record: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::notify::Notification;
    use crate::upgrade::campaign::InstallMode;

    fn delivery(team: &str, channel: &str, text: &str) -> NewDelivery {
        NewDelivery {
            team_id: team.into(),
            channel_id: channel.into(),
            activity_id: format!("a-{text}"),
            notification: Notification {
                message: Message::text(text),
                thread_key: None,
                parent_update: None,
            },
        }
    }

    #[tokio::test]
    async fn states_round_trip_and_release_swaps_held_for_digests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path()).expect("open");
        let now = Timestamp::from_second(1_800_000_000).expect("valid");
        let state = CampaignState::new(InstallMode::OAuth);
        store.campaigns.put("T1", &state).await.expect("put");
        for team in ["T1", "T2"] {
            store
                .installations
                .upsert(crate::store::installations::tests::sample(team, "xoxb-1"))
                .await
                .expect("install");
        }
        assert_eq!(store.campaigns.get("T1").expect("get"), Some(state));
        assert_eq!(store.campaigns.list().expect("list").len(), 1);

        store.campaigns.hold("T1").await.expect("hold");
        assert!(store.campaigns.is_held("T1").expect("read"));
        assert!(!store.campaigns.is_held("T2").expect("read"));
        store
            .deliveries
            .enqueue(
                vec![
                    delivery("T1", "C1", "one"),
                    delivery("T1", "C1", "two"),
                    delivery("T2", "C9", "other"),
                ],
                now,
            )
            .await
            .expect("enqueue");
        let held = store.campaigns.held_deliveries("T1").expect("held");
        assert_eq!(held.len(), 2);
        let ids: Vec<u64> = held.iter().map(|d| d.id).collect();
        let enqueued = store
            .campaigns
            .release_with_digests("T1", &ids, vec![delivery("T1", "C1", "digest")], now)
            .await
            .expect("release");
        assert_eq!(enqueued, 1);
        assert!(!store.campaigns.is_held("T1").expect("read"));
        let texts: Vec<String> = store
            .deliveries
            .pending()
            .expect("pending")
            .into_iter()
            .map(|d| d.notification.message.text)
            .collect();
        assert_eq!(texts.len(), 2);
        assert!(texts.contains(&"digest".to_string()));
        assert!(texts.contains(&"other".to_string()));
    }
}
