//! Review reminders in the store: per channel its schedule and the last slot handled,
//! per person the last slot of their morning digest. One tree, `reminders`, keyed
//! `<team>:channel:<channel>` and `<team>:digest:<slack user>` (JSON values).
//!
//! Owns "exactly one message per slot": [`ReminderStore::commit_channel_slot`] and
//! [`ReminderStore::commit_digest_slot`] record a slot as handled and queue its message
//! in the Slack outbox in one transaction, then flush, so a crash leaves both or neither
//! and a slot already recorded is never queued again. Every other write is flushed before
//! it returns. Lookups never cross workspaces: every key starts with the team id. Never
//! decides what is due or what a reminder says (`notify::reminders`, `app::reminders`).

use super::kv::Transactional;
use super::kv::{ConflictableTransactionError, TransactionError};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::deliveries::{DeliveryStore, NewDelivery};
use super::{StoreError, WriteGate};
use crate::notify::reminders::Schedule;

/// One channel's reminder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelReminder {
    pub team_id: String,
    pub channel_id: String,
    pub schedule: Schedule,
    /// The Slack user who set it.
    pub set_by: String,
    pub set_at: Timestamp,
    /// The last slot handled (sent, or skipped); when it was set, before the first one.
    pub last_slot: Timestamp,
}

/// One person's digest state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DigestRecord {
    last_slot: Timestamp,
}

/// What a slot commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotCommit {
    /// Recorded, with this many messages queued and parked.
    Recorded { queued: usize, parked: usize },
    /// The slot (or a later one) was recorded already: nothing was queued.
    AlreadyHandled,
    /// The channel's reminder was turned off meanwhile: nothing was queued.
    Gone,
}

#[derive(Clone)]
pub struct ReminderStore {
    reminders: super::kv::Tree,
    deliveries: DeliveryStore,
    gate: WriteGate,
}

fn channel_key(team_id: &str, channel_id: &str) -> String {
    format!("{team_id}:channel:{channel_id}")
}

fn digest_key(team_id: &str, user_id: &str) -> String {
    format!("{team_id}:digest:{user_id}")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt(format!("reminder record: {error}")))
}

/// Why a slot transaction stopped without writing.
enum Abort {
    AlreadyHandled,
    Gone,
    Corrupt(String),
}

impl ReminderStore {
    pub(super) fn new(
        reminders: super::kv::Tree,
        deliveries: DeliveryStore,
        gate: WriteGate,
    ) -> Self {
        Self {
            reminders,
            deliveries,
            gate,
        }
    }

    /// The channel's reminder, if it has one.
    pub fn channel(
        &self,
        team_id: &str,
        channel_id: &str,
    ) -> Result<Option<ChannelReminder>, StoreError> {
        self.reminders
            .get(channel_key(team_id, channel_id).as_bytes())?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Every channel reminder of every workspace.
    pub fn channels(&self) -> Result<Vec<ChannelReminder>, StoreError> {
        let mut found = Vec::new();
        for item in self.reminders.iter() {
            let (key, value) = item?;
            if String::from_utf8_lossy(&key).contains(":channel:") {
                found.push(decode(&value)?);
            }
        }
        Ok(found)
    }

    /// Sets (or replaces) a channel's reminder, then flushes. Returns the one it replaced.
    pub async fn set_channel(
        &self,
        reminder: &ChannelReminder,
    ) -> Result<Option<ChannelReminder>, StoreError> {
        let encoded = serde_json::to_vec(reminder).expect("a reminder always serializes");
        let previous = {
            let _writing = self.gate.writing()?;
            self.reminders.insert(
                channel_key(&reminder.team_id, &reminder.channel_id).as_bytes(),
                encoded,
            )?
        };
        self.reminders.flush_async().await?;
        previous.map(|bytes| decode(&bytes)).transpose()
    }

    /// Removes a channel's reminder, then flushes. Returns the one removed.
    pub async fn remove_channel(
        &self,
        team_id: &str,
        channel_id: &str,
    ) -> Result<Option<ChannelReminder>, StoreError> {
        let previous = {
            let _writing = self.gate.writing()?;
            self.reminders
                .remove(channel_key(team_id, channel_id).as_bytes())?
        };
        self.reminders.flush_async().await?;
        previous.map(|bytes| decode(&bytes)).transpose()
    }

    /// The last digest slot handled for the person, if any.
    pub fn digest_last_slot(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .reminders
            .get(digest_key(team_id, user_id).as_bytes())?
            .map(|bytes| decode::<DigestRecord>(&bytes))
            .transpose()?
            .map(|record| record.last_slot))
    }

    /// Records `slot` as the channel's last slot handled and queues `deliveries` (its
    /// reminder, or nothing) in the same transaction, then flushes. Nothing is written
    /// when the slot was recorded already or the reminder is gone.
    pub async fn commit_channel_slot(
        &self,
        team_id: &str,
        channel_id: &str,
        slot: Timestamp,
        deliveries: Vec<NewDelivery>,
        now: Timestamp,
    ) -> Result<SlotCommit, StoreError> {
        let key = channel_key(team_id, channel_id);
        self.commit_slot(key, deliveries, now, |stored| {
            let Some(bytes) = stored else {
                return Err(Abort::Gone);
            };
            let mut reminder: ChannelReminder =
                decode(&bytes).map_err(|error| Abort::Corrupt(error.to_string()))?;
            if reminder.last_slot >= slot {
                return Err(Abort::AlreadyHandled);
            }
            reminder.last_slot = slot;
            Ok(serde_json::to_vec(&reminder).expect("a reminder always serializes"))
        })
        .await
    }

    /// Records `slot` as the person's last digest slot and queues `deliveries` (their
    /// digest, or nothing) in the same transaction, then flushes.
    pub async fn commit_digest_slot(
        &self,
        team_id: &str,
        user_id: &str,
        slot: Timestamp,
        deliveries: Vec<NewDelivery>,
        now: Timestamp,
    ) -> Result<SlotCommit, StoreError> {
        let key = digest_key(team_id, user_id);
        self.commit_slot(key, deliveries, now, |stored| {
            if let Some(bytes) = stored {
                let record: DigestRecord =
                    decode(&bytes).map_err(|error| Abort::Corrupt(error.to_string()))?;
                if record.last_slot >= slot {
                    return Err(Abort::AlreadyHandled);
                }
            }
            Ok(serde_json::to_vec(&DigestRecord { last_slot: slot })
                .expect("a digest record always serializes"))
        })
        .await
    }

    /// The one slot transaction: `update` turns the stored record into the new one (or
    /// says why nothing is written); the deliveries go in with it.
    async fn commit_slot(
        &self,
        key: String,
        deliveries: Vec<NewDelivery>,
        now: Timestamp,
        update: impl Fn(Option<super::kv::IVec>) -> Result<Vec<u8>, Abort>,
    ) -> Result<SlotCommit, StoreError> {
        let prepared = self.deliveries.prepare(deliveries, now)?;
        let result = {
            let _writing = self.gate.writing()?;
            (
                &self.reminders,
                self.deliveries.outbox_tree(),
                self.deliveries.parked_tree(),
            )
                .transaction(|(reminders, outbox, parked)| {
                    let record = update(reminders.get(key.as_bytes())?)
                        .map_err(ConflictableTransactionError::Abort)?;
                    reminders.insert(key.as_bytes(), record)?;
                    for delivery in &prepared {
                        DeliveryStore::insert_in(outbox, parked, delivery).map_err(|error| {
                            match error {
                                ConflictableTransactionError::Abort(()) => {
                                    ConflictableTransactionError::Abort(Abort::Corrupt(
                                        "a delivery could not be queued".into(),
                                    ))
                                }
                                ConflictableTransactionError::Conflict => {
                                    ConflictableTransactionError::Conflict
                                }
                                ConflictableTransactionError::Storage(error) => {
                                    ConflictableTransactionError::Storage(error)
                                }
                            }
                        })?;
                    }
                    Ok(())
                })
        };
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(Abort::AlreadyHandled)) => {
                return Ok(SlotCommit::AlreadyHandled);
            }
            Err(TransactionError::Abort(Abort::Gone)) => return Ok(SlotCommit::Gone),
            Err(TransactionError::Abort(Abort::Corrupt(error))) => {
                return Err(StoreError::Corrupt(error));
            }
            Err(TransactionError::Storage(error)) => return Err(error),
        }
        self.deliveries.db().flush_async().await?;
        self.deliveries.note_enqueued(&prepared);
        Ok(SlotCommit::Recorded {
            queued: prepared.iter().filter(|d| d.parked.is_none()).count(),
            parked: prepared.iter().filter(|d| d.parked.is_some()).count(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::notify::Notification;
    use crate::notify::reminders::Days;
    use crate::store::Store;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn reminder() -> ChannelReminder {
        ChannelReminder {
            team_id: "T1".into(),
            channel_id: "C1".into(),
            schedule: Schedule {
                hour: 9,
                minute: 0,
                days: Days::Weekdays,
                zone: "UTC".into(),
            },
            set_by: "U1".into(),
            set_at: at("2026-03-09T08:00:00Z"),
            last_slot: at("2026-03-09T08:00:00Z"),
        }
    }

    fn delivery(channel: &str) -> NewDelivery {
        NewDelivery {
            team_id: "T1".into(),
            channel_id: channel.into(),
            activity_id: "reminder".into(),
            notification: Notification {
                message: Message::text("2 pull requests are waiting for review"),
                thread_key: None,
                parent_update: None,
            },
        }
    }

    #[tokio::test]
    async fn a_slot_is_recorded_with_its_message_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slot = at("2026-03-09T09:00:00Z");
        {
            let store = Store::open(dir.path()).expect("open");
            let reminders = &store.reminders;
            assert_eq!(reminders.set_channel(&reminder()).await.expect("set"), None);
            assert_eq!(
                reminders
                    .commit_channel_slot("T1", "C1", slot, vec![delivery("C1")], slot)
                    .await
                    .expect("commit"),
                SlotCommit::Recorded {
                    queued: 0,
                    parked: 1
                },
                "T1 is not installed: parked, but recorded all the same"
            );
        }
        let store = Store::open(dir.path()).expect("reopen");
        let reminders = &store.reminders;
        assert_eq!(
            reminders
                .commit_channel_slot("T1", "C1", slot, vec![delivery("C1")], slot)
                .await
                .expect("commit again"),
            SlotCommit::AlreadyHandled
        );
        assert_eq!(store.deliveries.parked().expect("parked").len(), 1);
        assert_eq!(
            reminders
                .channel("T1", "C1")
                .expect("read")
                .map(|r| r.last_slot),
            Some(slot)
        );
        assert_eq!(reminders.channels().expect("list").len(), 1);
        assert!(
            reminders
                .remove_channel("T1", "C1")
                .await
                .expect("off")
                .is_some()
        );
        assert_eq!(
            reminders
                .commit_channel_slot("T1", "C1", at("2026-03-10T09:00:00Z"), vec![], slot)
                .await
                .expect("commit"),
            SlotCommit::Gone
        );
    }

    #[tokio::test]
    async fn a_digest_slot_is_per_person_per_workspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let reminders = &store.reminders;
        let slot = at("2026-03-09T09:00:00Z");
        assert_eq!(reminders.digest_last_slot("T1", "U1").expect("read"), None);
        assert!(matches!(
            reminders
                .commit_digest_slot("T1", "U1", slot, vec![], slot)
                .await
                .expect("commit"),
            SlotCommit::Recorded { .. }
        ));
        assert_eq!(
            reminders
                .commit_digest_slot("T1", "U1", slot, vec![], slot)
                .await
                .expect("commit"),
            SlotCommit::AlreadyHandled
        );
        assert_eq!(
            reminders.digest_last_slot("T1", "U1").expect("read"),
            Some(slot)
        );
        assert_eq!(reminders.digest_last_slot("T2", "U1").expect("read"), None);
        assert!(reminders.channels().expect("list").is_empty());
    }
}
